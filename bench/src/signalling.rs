//! `pxs-bench signalling`: the signalling server (`pxs webrtc-session`, a child process) and an
//! in-process baseline relay under the same client load, phase by phase.
//!
//! 1. start the relay; the streamers connect and identify;
//! 2. memory: the server's RSS before and after the players connect, subscribe and go idle;
//! 3. setup rate: those players per second, connect to `playerConnected`;
//! 4. relay: an open-loop schedule per `--rate`, latency from each message's intended send time;
//! 5. the same against the baseline, then the results side by side with the goals.

use crate::baseline::{self, Forwarder};
use crate::clients::{self, Registry, Stats, Streamer};
use crate::procfs;
use crate::report::{self, MemoryResult, RelayResult, RunResult, SetupResult};
use crate::schedule::Schedule;
use crate::server::{Addrs, ServerChild};
use crate::wire::Frames;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Clone, Debug, clap::Args)]
pub struct SignallingArgs {
    /// The pxs binary [default: `pxs` beside this program, else target/release/pxs].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Streamers [default: 10; 2 with --quick].
    #[arg(long)]
    pub streamers: Option<usize>,
    /// Players, spread evenly over the streamers [default: 5000; 200 with --quick].
    #[arg(long)]
    pub players: Option<usize>,
    /// Relayed messages per second, in total; a comma-separated list runs one relay phase per
    /// rate over the same connections [default: 20000; 2000 with --quick].
    #[arg(long, value_delimiter = ',')]
    pub rate: Option<Vec<u64>>,
    /// Seconds per relay phase [default: 10; 3 with --quick].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Size of the SDP in each offer, in bytes.
    #[arg(long, default_value_t = 3000)]
    pub sdp_bytes: usize,
    /// Fraction of the relayed messages that are streamer → player offers; the rest are ICE
    /// candidates, half each way.
    #[arg(long, default_value_t = 0.5)]
    pub offer_fraction: f64,
    /// Player setups in flight at once.
    #[arg(long, default_value_t = 100)]
    pub setup_concurrency: usize,
    /// More options for `pxs webrtc-session`, space-separated
    /// (e.g. --extra-server-args="--player_message_rate 0").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    pub extra_server_args: String,
    /// A smoke run: 2 streamers, 200 players, 2000 msg/s for 3 s (explicit options still win).
    #[arg(long)]
    pub quick: bool,
    /// Skip the in-process baseline.
    #[arg(long, conflicts_with = "baseline_only")]
    pub no_baseline: bool,
    /// Run the in-process baseline only.
    #[arg(long)]
    pub baseline_only: bool,
    /// Leave Nagle's algorithm on in the baseline's accepted sockets (as an axum listener does
    /// unless told otherwise), to see what it costs.
    #[arg(long)]
    pub baseline_nagle: bool,
    /// Seconds idle before the memory is read.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Seconds each setup phase (streamers, players, introductions) may take.
    #[arg(long, default_value_t = 120.0)]
    pub phase_timeout: f64,
    /// Seconds to wait, after a relay phase's last send, for messages still in flight.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
}

/// The options with --quick and the defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub streamers: usize,
    pub players: usize,
    pub rates: Vec<u64>,
    pub duration: Duration,
}

impl SignallingArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let (s, p, r, d) = if self.quick {
            (2, 200, 2000, 3.0)
        } else {
            (10, 5000, 20_000, 10.0)
        };
        let plan = Plan {
            streamers: self.streamers.unwrap_or(s),
            players: self.players.unwrap_or(p),
            rates: self.rate.clone().unwrap_or_else(|| vec![r]),
            duration: Duration::try_from_secs_f64(self.duration.unwrap_or(d))
                .context("--duration must be a number of seconds")?,
        };
        if plan.streamers == 0 || plan.players == 0 {
            bail!("--streamers and --players must be at least 1");
        }
        if plan.rates.is_empty() || plan.rates.contains(&0) {
            bail!("--rate must be one or more positive numbers");
        }
        if !(0.0..=1.0).contains(&self.offer_fraction) {
            bail!("--offer-fraction must be between 0 and 1");
        }
        Ok(plan)
    }

    fn server_path(&self) -> PathBuf {
        if let Some(p) = &self.server {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("pxs")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("target/release/pxs"))
    }
}

/// The relay under test.
enum Relay {
    Pxs(ServerChild),
    Baseline(Forwarder),
}

impl Relay {
    fn label(&self) -> &'static str {
        match self {
            Relay::Pxs(_) => "pxs",
            Relay::Baseline(_) => "baseline",
        }
    }

    fn addrs(&self) -> Addrs {
        match self {
            Relay::Pxs(s) => s.addrs(),
            Relay::Baseline(f) => f.addrs(),
        }
    }

    /// CPU time of the relay so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        match self {
            Relay::Pxs(s) => procfs::process_cpu(s.pid()),
            Relay::Baseline(_) => procfs::threads_cpu(std::process::id(), baseline::THREAD_NAME),
        }
    }

    /// Resident memory of the relay; `None` for the baseline, which shares our process.
    fn rss_kib(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Relay::Pxs(s) => procfs::rss_kib(s.pid()).map(Some),
            Relay::Baseline(_) => Ok(None),
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Relay::Pxs(s) = self
            && let Some(status) = s.exited()
        {
            bail!("the server exited during the run: {status}");
        }
        Ok(())
    }

    async fn stop(self) {
        match self {
            Relay::Pxs(s) => {
                let lines = s.log_lines();
                if lines > 0 {
                    println!("[pxs] the server wrote {lines} error lines to stderr");
                }
                s.stop(Duration::from_secs(10)).await;
            }
            Relay::Baseline(f) => {
                // Shutting a runtime down blocks: not on a worker thread.
                let _ = tokio::task::spawn_blocking(move || drop(f)).await;
            }
        }
    }
}

pub async fn run(args: SignallingArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    println!(
        "pxs-bench signalling: {} streamers, {} players, rates {:?} msg/s for {:?} each, offers {:.0}% of {} B SDP; {} cores",
        plan.streamers,
        plan.players,
        plan.rates,
        plan.duration,
        args.offer_fraction * 100.0,
        args.sdp_bytes,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut runs = Vec::new();
    if !args.baseline_only {
        let path = args.server_path();
        let extra: Vec<String> = args
            .extra_server_args
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let timeout = Duration::from_secs_f64(args.phase_timeout);
        let started = Instant::now();
        let server = ServerChild::start(&path, &extra, timeout).await?;
        println!(
            "[pxs] phase 1: {} started (pid {}) in {:.0} ms, streamers on {}, players on {}",
            path.display(),
            server.pid(),
            started.elapsed().as_secs_f64() * 1e3,
            server.addrs().streamer,
            server.addrs().player,
        );
        warn_rate_limit(&args, &plan, &extra);
        runs.push(run_against(Relay::Pxs(server), &args, &plan).await?);
    }
    if !args.no_baseline {
        let fwd = Forwarder::start(!args.baseline_nagle)?;
        println!(
            "[baseline] phase 1: in-process forwarder on {} and {}{}",
            fwd.addrs().streamer,
            fwd.addrs().player,
            if args.baseline_nagle {
                " (Nagle on)"
            } else {
                ""
            },
        );
        runs.push(run_against(Relay::Baseline(fwd), &args, &plan).await?);
    }

    let pxs = runs.iter().find(|r| r.label == "pxs");
    let base = runs.iter().find(|r| r.label == "baseline");
    println!("\n## Relay\n");
    println!("{}", report::relay_table(&runs.iter().collect::<Vec<_>>()));
    println!("## Goals\n");
    println!("{}", report::goals_table(pxs, base));
    for r in &runs {
        println!(
            "{}: {} player setups in {:.3} s = {}/s (concurrency {}; connect to config p50 {}, p99 {})",
            r.label,
            r.setup.players,
            r.setup.elapsed.as_secs_f64(),
            report::thousands(r.setup.per_second()),
            r.setup.concurrency,
            report::fmt_ns(r.setup.connect.p50),
            report::fmt_ns(r.setup.connect.p99),
        );
        if let Some(m) = r.memory {
            println!(
                "{}: RSS {} KiB with {} streamers, {} KiB with {} idle players: {:.2} KiB per idle player",
                r.label,
                m.before_kib,
                r.streamers,
                m.after_kib,
                m.players,
                m.per_player_kib()
            );
        }
    }
    Ok(())
}

fn warn_rate_limit(args: &SignallingArgs, plan: &Plan, extra: &[String]) {
    if extra.iter().any(|a| a.contains("player_message_rate")) {
        return;
    }
    for &rate in &plan.rates {
        let s = Schedule::new(
            rate,
            plan.duration,
            plan.players as u32,
            args.offer_fraction,
        );
        if s.per_player_upstream_rate() > 50.0 {
            println!(
                "[pxs] warning: at {rate} msg/s each player sends {:.0} msg/s on average, near the \
                 server's default limit of 100/s: consider --extra-server-args=\"--player_message_rate 0\"",
                s.per_player_upstream_rate()
            );
        }
    }
}

/// Phases 1–4 against one relay; the relay is stopped at the end, also on error.
async fn run_against(
    mut relay: Relay,
    args: &SignallingArgs,
    plan: &Plan,
) -> anyhow::Result<RunResult> {
    let mut tasks = JoinSet::new();
    let result = phases(&mut relay, &mut tasks, args, plan).await;
    // Stop the relay first, so that dropping thousands of clients at once is not measured.
    relay.stop().await;
    tasks.shutdown().await;
    result
}

async fn phases(
    relay: &mut Relay,
    tasks: &mut JoinSet<()>,
    args: &SignallingArgs,
    plan: &Plan,
) -> anyhow::Result<RunResult> {
    let label = relay.label();
    let addrs = relay.addrs();
    let timeout = Duration::from_secs_f64(args.phase_timeout);
    let stats = Stats::new();
    let frames = Arc::new(Frames::new(args.sdp_bytes));

    // Phase 1: streamers.
    let (pc_tx, mut pc_rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    let mut streamers: Vec<Streamer> = Vec::with_capacity(plan.streamers);
    for i in 0..plan.streamers {
        let s = tokio::time::timeout(
            timeout,
            clients::start_streamer(
                addrs.streamer,
                i,
                stats.clone(),
                frames.clone(),
                pc_tx.clone(),
                tasks,
            ),
        )
        .await
        .with_context(|| format!("streamer {i} did not identify within {timeout:?}"))??;
        streamers.push(s);
    }
    drop(pc_tx);
    println!(
        "[{label}] phase 1: {} streamers identified in {:.1} ms",
        streamers.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    // Phases 2 and 3: players connect and subscribe; memory before and after.
    let before_kib = relay.rss_kib()?;
    let ids: Vec<String> = streamers.iter().map(|s| s.id.clone()).collect();
    let registry: Registry = Arc::new((0..plan.players).map(|_| OnceLock::new()).collect());
    let elapsed = clients::start_players(
        addrs.player,
        plan.players,
        &ids,
        args.setup_concurrency,
        &stats,
        &registry,
        tasks,
        timeout,
    )
    .await
    .context("player setup")?;
    let setup = SetupResult {
        players: plan.players,
        concurrency: args.setup_concurrency,
        elapsed,
        connect: stats.connect_latency(),
    };
    println!(
        "[{label}] phase 3: {} players connected and subscribed in {:.3} s: {} setups/s \
         (concurrency {}; TCP connect to `config` p50 {}, p99 {})",
        plan.players,
        elapsed.as_secs_f64(),
        report::thousands(setup.per_second()),
        args.setup_concurrency,
        report::fmt_ns(setup.connect.p50),
        report::fmt_ns(setup.connect.p99),
    );
    if setup.connect.max >= 900_000_000 {
        println!(
            "[{label}]   some connects took {}: TCP SYN retransmits, the listen backlog overflowed \
             (see `nstat -az TcpExtListenOverflows`)",
            report::fmt_ns(setup.connect.max)
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    relay.check_alive()?;
    let memory = match (before_kib, relay.rss_kib()?) {
        (Some(before_kib), Some(after_kib)) => {
            let m = MemoryResult {
                players: plan.players,
                before_kib,
                after_kib,
            };
            println!(
                "[{label}] phase 2: RSS {before_kib} KiB before the players, {after_kib} KiB with \
                 {} idle players: {:.2} KiB per idle player",
                plan.players,
                m.per_player_kib()
            );
            Some(m)
        }
        _ => None,
    };

    // Who is who: the player table, and each player connection told its row.
    let mut table: Vec<(usize, Arc<str>)> = Vec::with_capacity(plan.players);
    while let Ok((s, pid)) = pc_rx.try_recv() {
        table.push((s, Arc::from(pid)));
    }
    if table.len() != plan.players {
        bail!(
            "{} playerConnected for {} players",
            table.len(),
            plan.players
        );
    }
    clients::introduce_players(&table, &streamers, &stats, timeout)
        .await
        .context("introducing the players")?;
    let table = Arc::new(table);
    let queues = Arc::new(streamers.iter().map(|s| s.cmds.clone()).collect::<Vec<_>>());

    // Phase 4: relay, once per rate.
    let mut relays = Vec::new();
    for &rate in &plan.rates {
        tokio::time::sleep(Duration::from_millis(500)).await;
        relay.check_alive()?;
        let schedule = Schedule::new(
            rate,
            plan.duration,
            plan.players as u32,
            args.offer_fraction,
        );
        let planned = schedule.len();
        let start_ns = stats.now_ns() + 20_000_000;
        stats.begin_phase(start_ns);
        let cpu0 = relay.cpu()?;
        let own0 = procfs::process_cpu(std::process::id())?;
        let machine0 = procfs::machine_busy()?;
        let dispatcher = clients::dispatch(
            schedule,
            start_ns,
            table.clone(),
            queues.clone(),
            registry.clone(),
            stats.clone(),
        );
        let handed = tokio::time::timeout(plan.duration + timeout, dispatcher)
            .await
            .context("the dispatcher did not finish")?
            .context("the dispatcher failed")?;
        let drain = Duration::from_secs_f64(args.drain_timeout);
        let _ = clients::wait_until(drain, || {
            let got = stats.received();
            if got >= handed {
                Ok(())
            } else {
                Err(format!("{got} of {handed} received"))
            }
        })
        .await;
        let end_ns = stats.now_ns();
        let relay_cpu = relay.cpu()?.saturating_sub(cpu0);
        let own = procfs::process_cpu(std::process::id())?.saturating_sub(own0);
        let machine = procfs::machine_busy()?.saturating_sub(machine0);
        let (client_cpu, other_cpu) = match relay {
            Relay::Pxs(_) => (own, machine.saturating_sub(own + relay_cpu)),
            Relay::Baseline(_) => (own.saturating_sub(relay_cpu), machine.saturating_sub(own)),
        };
        let c = stats.phase_counts();
        let active =
            Duration::from_nanos(c.last_arrival_ns.saturating_sub(start_ns)).max(plan.duration);
        let r = RelayResult {
            target_rate: rate,
            duration: plan.duration,
            sent: planned,
            received: c.received,
            accepted_rate: c.received as f64 / active.as_secs_f64(),
            latency: c.latency,
            latency_from_write: c.latency_from_write,
            to_players: c.to_players,
            to_streamers: c.to_streamers,
            relay_cpu,
            client_cpu,
            other_cpu,
            wall: Duration::from_nanos(end_ns.saturating_sub(start_ns)),
            dropped_connections: c.dropped,
        };
        println!("[{label}] phase 4: {}", r.line());
        if handed < planned {
            println!(
                "[{label}]   {} messages had no live client connection to leave from",
                planned - handed
            );
        }
        relays.push(r);
    }
    relay.check_alive()?;
    Ok(RunResult {
        label: label.into(),
        streamers: plan.streamers,
        players: plan.players,
        setup,
        memory,
        relays,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SignallingArgs,
    }

    #[test]
    fn quick_mode_sets_the_small_scenario_and_explicit_options_win() {
        let plan = |argv: &[&str]| {
            let mut full = vec!["pxs-bench"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full)
                .expect("valid arguments")
                .args
                .plan()
                .expect("a valid plan")
        };
        assert_eq!(
            plan(&["--quick"]),
            Plan {
                streamers: 2,
                players: 200,
                rates: vec![2000],
                duration: Duration::from_secs(3),
            }
        );
        let p = plan(&["--quick", "--players", "50", "--rate", "100,200"]);
        assert_eq!((p.players, p.rates), (50, vec![100, 200]));
        let p = plan(&["--extra-server-args=--player_message_rate 0"]);
        assert_eq!((p.streamers, p.players, p.rates), (10, 5000, vec![20_000]));
    }
}
