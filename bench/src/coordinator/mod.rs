//! `pxs-bench coordinator`: the coordinator (`pxs_coordinator`, in this process on a runtime of
//! its own; SQLite in a fresh temporary directory, or a new PostgreSQL database with
//! `--postgres`) under API load, with simulated nodes; then
//! `pxs up` for the time from `POST /api/v1/sessions` to `ready` with a real session server and
//! streamer. Phases, each optional (`--phases`):
//!
//! - `idle`: a coordinator of its own (`[timing] heartbeat_ttl = "60s"`) and `--idle-links`
//!   node links from a child process, each heartbeating every `--idle-heartbeat` seconds: time
//!   to link them all, the coordinator's memory per link, its CPU while they idle, and the API's
//!   latency with them (against the same probe with no link, before);
//! - `ready`: with `--nodes` simulated nodes, one session at a time: POST → `ready` on the
//!   session's event stream, split into POST → `start_session` at the node and the node's
//!   `ready` → seen by the client;
//! - `saturation`: `--creators` closed-loop clients create sessions for
//!   `--saturation-duration`: sessions created per second; then the surplus is deleted the
//!   same way;
//! - `load`: `--live` sessions, then an open-loop mix (`--mix`) at `--rate` requests per second
//!   for `--duration`, DELETEs keeping the live sessions about constant: latency per endpoint;
//! - `real`: `pxs up` as a child; `--real-samples` sessions of `demo` one after another.

pub mod api;
pub mod links;
pub mod load;
pub mod nodes;
pub mod real;
pub mod server;

use crate::procfs;
use crate::report::{Latency, fmt_ns, thousands};
use anyhow::{Context, bail};
use api::Api;
use load::{ClosedResult, LoadResult, Mix, Op, Target};
use nodes::{SimNodes, Tracker};
use pxs_protocol::api::SessionState;
use pxs_protocol::node::ApplicationId;
use serde_json::{Value, json};
use server::{ADMIN_TOKEN, InProcess, NODE_TOKEN};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The title (and the application the simulated nodes advertise).
const TITLE: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Idle,
    Ready,
    Saturation,
    Load,
    Real,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// Phases to run, in this order whatever the order given.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "idle,ready,saturation,load,real"
    )]
    pub phases: Vec<Phase>,
    /// Simulated nodes for the ready, saturation and load phases [default: 100; 10 with --quick].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Sessions each simulated node takes (so that capacity never limits).
    #[arg(long, default_value_t = 1000)]
    pub node_capacity: u32,
    /// Seconds between a simulated node's heartbeats.
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat: f64,
    /// Requests per second of the load phase, in total; a comma-separated list runs one load
    /// phase per rate, on the same coordinator [default: 1000; 200 with --quick].
    #[arg(long, value_delimiter = ',')]
    pub rate: Option<Vec<u64>>,
    /// Seconds of the load phase [default: 20; 3 with --quick].
    #[arg(long)]
    pub duration: Option<f64>,
    /// The load phase's requests, as weights: post (POST /sessions), delete (DELETE the oldest
    /// live session), get (GET /sessions/{id} of a live one), titles (GET /titles), healthz.
    #[arg(long, default_value = "post=4,delete=4,get=6,titles=4,healthz=2",
          value_parser = Mix::parse)]
    pub mix: Mix,
    /// Requests in flight at most (HTTP/1.1 keep-alive connections) in the open-loop phases.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Live sessions at the start of the load phase [default: 500; 50 with --quick].
    #[arg(long)]
    pub live: Option<usize>,
    /// Run the coordinator on PostgreSQL instead of SQLite: a URL of a server whose role may
    /// create databases (each coordinator of the run gets a new one, `pxs_bench_*`).
    #[arg(long, env = "PXS_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// Ended sessions written into the database before the API phases, as a coordinator that
    /// has served that many has them.
    #[arg(long, default_value_t = 0)]
    pub history: u64,
    /// Closed-loop clients of the saturation phase (and of the set-up of the load phase).
    #[arg(long, default_value_t = 8)]
    pub creators: usize,
    /// Seconds of the saturation phase [default: 5; 2 with --quick].
    #[arg(long)]
    pub saturation_duration: Option<f64>,
    /// Sessions timed one at a time in the ready phase [default: 200; 20 with --quick].
    #[arg(long)]
    pub ready_samples: Option<usize>,
    /// Node links of the idle phase [default: 10000; 500 with --quick].
    #[arg(long)]
    pub idle_links: Option<usize>,
    /// Seconds between an idle link's heartbeats (the idle coordinator's TTL is 60 s).
    #[arg(long, default_value_t = 20.0)]
    pub idle_heartbeat: f64,
    /// Seconds the idle phase's CPU is read over, with every link up [default: 40; 5 with --quick].
    #[arg(long)]
    pub idle_seconds: Option<f64>,
    /// The idle phase's API probe, before and with the links (weights as --mix).
    #[arg(long, default_value = "titles=2,post=1,get=1,healthz=1", value_parser = Mix::parse)]
    pub probe_mix: Mix,
    /// Requests per second of the idle phase's probe.
    #[arg(long, default_value_t = 100)]
    pub probe_rate: u64,
    /// Seconds of each probe [default: 10; 2 with --quick].
    #[arg(long)]
    pub probe_seconds: Option<f64>,
    /// Sessions of `pxs up`'s demo title timed one after another [default: 20; 3 with --quick].
    #[arg(long)]
    pub real_samples: Option<usize>,
    /// The pxs binary for the real phase [default: `pxs` beside this program, else
    /// target/release/pxs].
    #[arg(long, env = "PXS_BIN")]
    pub pxs: Option<PathBuf>,
    /// A smoke run: every phase, small (explicit options still win).
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The options with --quick and the defaults applied.
#[derive(Clone, Debug)]
pub struct Plan {
    pub nodes: usize,
    pub rates: Vec<u64>,
    pub duration: Duration,
    pub live: usize,
    pub saturation: Duration,
    pub ready_samples: usize,
    pub idle_links: usize,
    pub idle_heartbeat: Duration,
    pub idle_seconds: Duration,
    pub probe_seconds: Duration,
    pub real_samples: usize,
    pub heartbeat: Duration,
}

fn secs(v: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} must be a number of seconds"))
}

impl CoordinatorArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let q = self.quick;
        let pick =
            |v: Option<f64>, full: f64, quick: f64| v.unwrap_or(if q { quick } else { full });
        let plan = Plan {
            nodes: self.nodes.unwrap_or(if q { 10 } else { 100 }),
            rates: self
                .rate
                .clone()
                .unwrap_or_else(|| vec![if q { 200 } else { 1000 }]),
            duration: secs(pick(self.duration, 20.0, 3.0), "duration")?,
            live: self.live.unwrap_or(if q { 50 } else { 500 }),
            saturation: secs(
                pick(self.saturation_duration, 5.0, 2.0),
                "saturation-duration",
            )?,
            ready_samples: self.ready_samples.unwrap_or(if q { 20 } else { 200 }),
            idle_links: self.idle_links.unwrap_or(if q { 500 } else { 10_000 }),
            idle_heartbeat: secs(self.idle_heartbeat, "idle-heartbeat")?,
            idle_seconds: secs(pick(self.idle_seconds, 40.0, 5.0), "idle-seconds")?,
            probe_seconds: secs(pick(self.probe_seconds, 10.0, 2.0), "probe-seconds")?,
            real_samples: self.real_samples.unwrap_or(if q { 3 } else { 20 }),
            heartbeat: secs(self.heartbeat, "heartbeat")?,
        };
        if plan.nodes == 0 || plan.rates.is_empty() || plan.rates.contains(&0) {
            bail!("--nodes and --rate must be at least 1");
        }
        if plan.idle_heartbeat >= Duration::from_secs(60) || plan.idle_heartbeat.is_zero() {
            bail!("--idle-heartbeat must be between 0 and the idle coordinator's TTL of 60 s");
        }
        Ok(plan)
    }

    fn has(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }
}

/// `1.2 3.4 5.6` from `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn lat_json(l: &Latency) -> Value {
    let f = |ns: u64| ns as f64 / 1e6;
    json!({
        "n": l.count, "p50_ms": f(l.p50), "p90_ms": f(l.p90), "p99_ms": f(l.p99),
        "p999_ms": f(l.p999), "max_ms": f(l.max),
    })
}

/// CPU used over a window: the coordinator's threads, this whole process, and the machine.
struct Cpu {
    coordinator: Duration,
    process: Duration,
    machine: Duration,
    at: Instant,
}

impl Cpu {
    fn now() -> anyhow::Result<Cpu> {
        Ok(Cpu {
            coordinator: InProcess::cpu()?,
            process: procfs::process_cpu(std::process::id())?,
            machine: procfs::machine_busy()?,
            at: Instant::now(),
        })
    }

    /// Percent of one core since `self`: (coordinator, benchmark clients, everything else).
    fn since(&self) -> anyhow::Result<CpuUse> {
        let now = Cpu::now()?;
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let coord = now.coordinator.saturating_sub(self.coordinator);
        let process = now.process.saturating_sub(self.process);
        let machine = now.machine.saturating_sub(self.machine);
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall;
        Ok(CpuUse {
            coordinator: pct(coord),
            coordinator_time: coord,
            clients: pct(process.saturating_sub(coord)),
            other: pct(machine.saturating_sub(process)),
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct CpuUse {
    coordinator: f64,
    coordinator_time: Duration,
    clients: f64,
    other: f64,
}

impl CpuUse {
    fn line(&self) -> String {
        format!(
            "CPU: coordinator {:.0}% of one core, benchmark clients {:.0}%, other processes {:.0}%{}",
            self.coordinator,
            self.clients,
            self.other,
            if self.other > 10.0 {
                " (something else was running: the numbers are disturbed)"
            } else {
                ""
            }
        )
    }

    fn json(&self) -> Value {
        json!({
            "coordinator_percent": self.coordinator,
            "clients_percent": self.clients,
            "other_percent": self.other,
        })
    }
}

struct IdleResult {
    links: usize,
    linked: links::Linked,
    linked_wall: Duration,
    held: usize,
    rss_before_kib: u64,
    rss_linked_kib: u64,
    rss_after_kib: u64,
    client_rss_kib: u64,
    idle_cpu_no_links: CpuUse,
    idle_cpu: CpuUse,
    idle_window: Duration,
    heartbeats_in_window: u64,
    lost: u64,
    probe_before: LoadResult,
    probe_with: LoadResult,
    /// One request at a time, per kind: before the links, and with them.
    serial_before: Vec<(Op, Latency)>,
    serial_with: Vec<(Op, Latency)>,
}

impl IdleResult {
    fn per_link_kib(&self) -> f64 {
        self.rss_linked_kib.saturating_sub(self.rss_before_kib) as f64 / self.held.max(1) as f64
    }
}

struct ReadyResult {
    post: Latency,
    post_to_start: Latency,
    ready_sent_to_seen: Latency,
    post_to_ready: Latency,
}

struct SaturationResult {
    created: ClosedResult,
    cpu: CpuUse,
    deleted: ClosedResult,
}

struct LoadPhase {
    result: LoadResult,
    cpu: CpuUse,
    live_before: usize,
    live_after: usize,
    post_to_start: Latency,
    node_live_after: u64,
}

#[derive(Default)]
struct Results {
    idle: Option<IdleResult>,
    ready: Option<ReadyResult>,
    saturation: Option<SaturationResult>,
    /// One request at a time, per kind, with `--live` sessions (before the load phases).
    serial_live: Vec<(Op, Latency)>,
    load: Vec<LoadPhase>,
    real: Option<real::RealResult>,
}

/// Raises the open-file limit to `want` if it is lower, raising the hard limit too when this
/// process may (root).
fn raise_nofile(want: u64) {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    let hard = hard.max(want);
    match rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard) {
        Ok(()) => eprintln!("open-file limit raised to {want}"),
        Err(e) => eprintln!("cannot raise the open-file limit to {want} (stays {soft}): {e}"),
    }
}

pub async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    raise_nofile(if args.has(Phase::Idle) {
        plan.idle_links as u64 + 8192
    } else {
        8192
    });
    let dir = std::env::temp_dir().join(format!("pxs-bench-coordinator-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    println!(
        "pxs-bench coordinator: phases {:?}; {} cores; load average {}",
        args.phases,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let mut results = Results::default();
    let outcome = async {
        if args.has(Phase::Idle) {
            results.idle = Some(idle_phase(&args, &plan, &dir.join("idle")).await?);
        }
        if args.has(Phase::Ready) || args.has(Phase::Saturation) || args.has(Phase::Load) {
            api_phases(&args, &plan, &dir.join("api"), &mut results).await?;
        }
        if args.has(Phase::Real) {
            let pxs = real::pxs_path(args.pxs.as_ref());
            if !pxs.is_file() {
                bail!(
                    "{} not found: build it (cargo build --release -p pxs), or pass --pxs",
                    pxs.display()
                );
            }
            println!(
                "[real] pxs up ({}), {} sessions of demo one after another; load average {}",
                pxs.display(),
                plan.real_samples,
                loadavg()
            );
            let r = real::run(&pxs.canonicalize()?, &dir.join("real"), plan.real_samples).await?;
            println!(
                "[real] POST → ready {}\n       POST alone {}\n       ready_at − created_at as recorded {}\n       DELETE → ended {}\n       from pxs up's /metrics, means: placement {}, start_session sent → ready {}",
                r.post_to_ready.line(),
                r.post.line(),
                r.recorded.line(),
                r.delete_to_ended.line(),
                r.placement_mean.map_or("–".into(), |d| fmt_ns(d.as_nanos() as u64)),
                r.node_start_mean.map_or("–".into(), |d| fmt_ns(d.as_nanos() as u64)),
            );
            results.real = Some(r);
        }
        anyhow::Ok(())
    }
    .await;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("files of the run kept in {}", dir.display());
    }
    println!("\n{}", summary(&args, &plan, &results));
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&to_json(&args, &plan, &results))?,
        )?;
    }
    outcome
}

fn target(api: &Api, tracker: &Arc<Tracker>) -> Target {
    Target {
        api: api.clone(),
        title: TITLE.into(),
        live: Arc::new(load::Live::default()),
        tracker: tracker.clone(),
    }
}

async fn idle_phase(args: &CoordinatorArgs, plan: &Plan, dir: &Path) -> anyhow::Result<IdleResult> {
    println!(
        "[idle] {} node links, a heartbeat every {:?} each; load average {}",
        plan.idle_links,
        plan.idle_heartbeat,
        loadavg()
    );
    let coordinator = InProcess::start(
        dir,
        "[timing]\nheartbeat_ttl = \"60s\"\n",
        args.postgres.as_deref(),
    )
    .await?;
    let api = Api::new(&coordinator.base_url(), ADMIN_TOKEN, args.connections)?;
    api.ensure_title(TITLE, TITLE).await?;
    let tracker = Tracker::new();
    let t = target(&api, &tracker);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c0 = Cpu::now()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu_no_links = c0.since()?;
    let probe_before =
        load::open_loop(&t, &args.probe_mix, args.probe_rate, plan.probe_seconds, 8).await;
    let serial_before = serial(&t).await;
    println!(
        "[idle] no links: coordinator {:.1}% of one core idle; probe {} req/s: {}\n  one at a time: {}",
        idle_cpu_no_links.coordinator,
        args.probe_rate,
        probe_line(&probe_before),
        serial_line(&serial_before)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = std::process::id();
    let rss_before_kib = procfs::rss_kib(pid)?;
    let started = Instant::now();
    let (mut child, linked) = links::LinksChild::start(
        coordinator.addr(),
        NODE_TOKEN,
        plan.idle_links,
        plan.idle_heartbeat,
        64,
        Duration::from_secs(600),
    )
    .await?;
    let linked_wall = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while coordinator.link_count() < linked.ok as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = coordinator.link_count();
    let rss_linked_kib = procfs::rss_kib(pid)?;
    println!(
        "[idle] linked {} (failed {}) in {:.0} ms ({}/s); the coordinator holds {held}; RSS {} → {} KiB = {:.1} KiB per link",
        linked.ok,
        linked.failed,
        linked.elapsed_ms,
        thousands(linked.ok as f64 / (linked.elapsed_ms / 1e3).max(1e-9)),
        rss_before_kib,
        rss_linked_kib,
        rss_linked_kib.saturating_sub(rss_before_kib) as f64 / held.max(1) as f64
    );
    let s0 = child.status().await?;
    let c0 = Cpu::now()?;
    tokio::time::sleep(plan.idle_seconds).await;
    let idle_cpu = c0.since()?;
    let s1 = child.status().await?;
    let heartbeats_in_window = s1.heartbeats.saturating_sub(s0.heartbeats);
    println!(
        "[idle] {:?} with the links idle: {} heartbeats ({:.0}/s); {}; {:.0} µs of coordinator CPU per heartbeat",
        plan.idle_seconds,
        heartbeats_in_window,
        heartbeats_in_window as f64 / plan.idle_seconds.as_secs_f64(),
        idle_cpu.line(),
        idle_cpu.coordinator_time.as_secs_f64() * 1e6 / heartbeats_in_window.max(1) as f64
    );
    let serial_with = serial(&t).await;
    println!(
        "[idle] with {held} links, one at a time: {}",
        serial_line(&serial_with)
    );
    let probe_with =
        load::open_loop(&t, &args.probe_mix, args.probe_rate, plan.probe_seconds, 8).await;
    println!(
        "[idle] with {held} links: probe {} req/s: {}",
        args.probe_rate,
        probe_line(&probe_with)
    );
    let rss_after_kib = procfs::rss_kib(pid)?;
    let end = child.status().await?;
    let client_rss_kib = procfs::rss_kib(child.pid).unwrap_or(0);
    child.stop().await;
    coordinator.stop().await;
    Ok(IdleResult {
        links: plan.idle_links,
        linked,
        linked_wall,
        held,
        rss_before_kib,
        rss_linked_kib,
        rss_after_kib,
        client_rss_kib,
        idle_cpu_no_links,
        idle_cpu,
        idle_window: plan.idle_seconds,
        heartbeats_in_window,
        lost: end.lost,
        probe_before,
        probe_with,
        serial_before,
        serial_with,
    })
}

/// Requests timed one at a time: 20 of each kind.
async fn serial(t: &Target) -> Vec<(Op, Latency)> {
    let mut out = Vec::new();
    for op in [Op::Health, Op::GetSession, Op::Titles, Op::Create] {
        out.push((op, load::one_at_a_time(t, op, 20).await.latency));
    }
    out
}

fn serial_line(v: &[(Op, Latency)]) -> String {
    v.iter()
        .map(|(op, l)| {
            if l.count == 0 {
                return format!("\n    {}: skipped (no live session)", op.label());
            }
            format!(
                "\n    {}: p50 {}, max {}",
                op.label(),
                fmt_ns(l.p50),
                fmt_ns(l.max)
            )
        })
        .collect()
}

fn probe_line(r: &LoadResult) -> String {
    let mut s = String::new();
    for (op, st) in &r.per_op {
        let l = Latency::of(&st.from_intended);
        let _ = write!(
            s,
            "\n    {}: p50 {}, p99 {}, max {}, errors {}",
            op.label(),
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.max),
            st.errors_text()
        );
    }
    s
}

async fn api_phases(
    args: &CoordinatorArgs,
    plan: &Plan,
    dir: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    let coordinator = InProcess::start(dir, "", args.postgres.as_deref()).await?;
    let api = Api::new(&coordinator.base_url(), ADMIN_TOKEN, args.connections)?;
    api.ensure_title(TITLE, TITLE).await?;
    if args.history > 0 {
        let started = Instant::now();
        coordinator
            .add_history(TITLE, plan.nodes, args.history)
            .await?;
        println!(
            "[api] {} ended sessions written in {:.0} ms",
            args.history,
            ms(started.elapsed())
        );
    }
    let tracker = Tracker::new();
    let app = ApplicationId::parse(TITLE)?;
    let started = Instant::now();
    let nodes = SimNodes::start(
        coordinator.addr(),
        plan.nodes,
        &app,
        args.node_capacity,
        plan.heartbeat,
        tracker.clone(),
    )
    .await?;
    api.wait_for_nodes(TITLE, plan.nodes as u32, Duration::from_secs(30))
        .await?;
    println!(
        "[api] coordinator on {}, {} simulated nodes online in {:.0} ms",
        coordinator.addr(),
        plan.nodes,
        ms(started.elapsed())
    );
    let t = target(&api, &tracker);
    let outcome = async {
        if args.has(Phase::Ready) {
            results.ready = Some(ready_phase(&t, plan).await?);
        }
        if args.has(Phase::Saturation) {
            results.saturation = Some(saturation_phase(args, plan, &t).await?);
        }
        if args.has(Phase::Load) {
            top_up(args, plan, &t).await?;
            results.serial_live = serial(&t).await;
            println!(
                "[load] one at a time with {} live sessions: {}",
                t.live.len(),
                serial_line(&results.serial_live)
            );
            for &rate in &plan.rates {
                results
                    .load
                    .push(load_phase(args, plan, rate, &t, &nodes).await?);
            }
        }
        anyhow::Ok(())
    }
    .await;
    let lost = nodes
        .stats
        .links_lost
        .load(std::sync::atomic::Ordering::Relaxed);
    nodes.stop().await;
    coordinator.stop().await;
    if lost > 0 {
        println!("[api] warning: {lost} simulated node links were closed by the coordinator");
    }
    outcome
}

async fn ready_phase(t: &Target, plan: &Plan) -> anyhow::Result<ReadyResult> {
    println!(
        "[ready] {} sessions one at a time, POST → ready on the event stream; load average {}",
        plan.ready_samples,
        loadavg()
    );
    t.tracker.reset();
    let h = crate::report::latency_histogram;
    let (mut post, mut seen, mut to_ready) = (h(), h(), h());
    let ns = |d: Duration| (d.as_nanos() as u64).max(1);
    for _ in 0..plan.ready_samples {
        let t0 = Instant::now();
        let r = t.api.create_session(&t.title).await?;
        let t1 = Instant::now();
        if r.status != 201 {
            bail!(
                "POST /api/v1/sessions: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let s: pxs_protocol::api::Session = r.json()?;
        t.tracker.posted(&s.id, t0);
        let (_, at) = t
            .api
            .wait_session(
                &s.id,
                |v| v.state == SessionState::Ready,
                Duration::from_secs(10),
            )
            .await?;
        let _ = post.record(ns(t1 - t0));
        let _ = to_ready.record(ns(at - t0));
        if let Some(sent) = t.tracker.marks(&s.id).ready_sent {
            let _ = seen.record(ns(at.saturating_duration_since(sent)));
        }
        let d = t.api.delete_session(&s.id).await?;
        if !d.ok() {
            bail!("DELETE {}: {}", s.id, d.status);
        }
    }
    let r = ReadyResult {
        post: Latency::of(&post),
        post_to_start: t.tracker.post_to_start(),
        ready_sent_to_seen: Latency::of(&seen),
        post_to_ready: Latency::of(&to_ready),
    };
    println!(
        "[ready] POST → ready {}\n        POST alone {}\n        POST sent → start_session at the node {}\n        node sends ready → the client sees it {}",
        r.post_to_ready.line(),
        r.post.line(),
        r.post_to_start.line(),
        r.ready_sent_to_seen.line()
    );
    Ok(r)
}

async fn saturation_phase(
    args: &CoordinatorArgs,
    plan: &Plan,
    t: &Target,
) -> anyhow::Result<SaturationResult> {
    println!(
        "[saturation] {} clients create sessions for {:?}; load average {}",
        args.creators,
        plan.saturation,
        loadavg()
    );
    let c0 = Cpu::now()?;
    let created = load::create_closed(t, args.creators, plan.saturation, u64::MAX).await;
    let cpu = c0.since()?;
    println!(
        "[saturation] created {} in {:.2} s = {}/s, errors {}; POST {}\n             {}",
        created.done,
        created.elapsed.as_secs_f64(),
        thousands(created.per_second()),
        created.error_count(),
        created.latency.line(),
        cpu.line()
    );
    let deleted = load::delete_down_to(t, args.creators, 0).await;
    println!(
        "[saturation] deleted {} in {:.2} s = {}/s, errors {}; DELETE {}",
        deleted.done,
        deleted.elapsed.as_secs_f64(),
        thousands(deleted.per_second()),
        deleted.error_count(),
        deleted.latency.line()
    );
    Ok(SaturationResult {
        created,
        cpu,
        deleted,
    })
}

/// Creates sessions until `--live` are live.
async fn top_up(args: &CoordinatorArgs, plan: &Plan, t: &Target) -> anyhow::Result<()> {
    let have = t.live.len();
    if have < plan.live {
        let r = load::create_closed(
            t,
            args.creators,
            Duration::from_secs(600),
            (plan.live - have) as u64,
        )
        .await;
        if r.error_count() > 0 {
            bail!("could not create the live sessions: {:?}", r.errors);
        }
    }
    // Let their starts and readies settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn load_phase(
    args: &CoordinatorArgs,
    plan: &Plan,
    rate: u64,
    t: &Target,
    nodes: &SimNodes,
) -> anyhow::Result<LoadPhase> {
    top_up(args, plan, t).await?;
    let live_before = t.live.len();
    println!(
        "[load] {} req/s for {:?}, mix {}, {} live sessions, at most {} in flight; load average {}",
        rate,
        plan.duration,
        args.mix.describe(),
        live_before,
        args.connections,
        loadavg()
    );
    t.tracker.reset();
    let c0 = Cpu::now()?;
    let result = load::open_loop(t, &args.mix, rate, plan.duration, args.connections).await;
    let cpu = c0.since()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let phase = LoadPhase {
        cpu,
        live_before,
        live_after: t.live.len(),
        post_to_start: t.tracker.post_to_start(),
        node_live_after: nodes.stats.live.load(std::sync::atomic::Ordering::Relaxed),
        result,
    };
    println!(
        "[load] answered {}/s; errors {}; live sessions {} → {} (the nodes run {})\n{}\n       POST sent → start_session at the node: {}\n       {}",
        thousands(phase.result.answered_rate),
        phase.result.errors(),
        phase.live_before,
        phase.live_after,
        phase.node_live_after,
        load_table(&phase.result),
        phase.post_to_start.line(),
        phase.cpu.line()
    );
    Ok(phase)
}

fn load_table(r: &LoadResult) -> String {
    let mut t = String::from(
        "| request | req/s | ok | errors | skipped | p50 | p90 | p99 | p99.9 | max | p99 from the actual send |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (op, s) in &r.per_op {
        let l = Latency::of(&s.from_intended);
        let sent = Latency::of(&s.from_sent);
        let n = s.ok + s.error_count() + s.skipped;
        let _ = writeln!(
            t,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            op.label(),
            thousands(n as f64 / r.duration.as_secs_f64()),
            s.ok,
            s.errors_text(),
            s.skipped,
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max),
            fmt_ns(sent.p99),
        );
    }
    t
}

const GOAL_P99_NS: u64 = 10_000_000;
const GOAL_PG_POST_P99_NS: u64 = 20_000_000;
const GOAL_LINKS: usize = 10_000;

fn summary(args: &CoordinatorArgs, plan: &Plan, r: &Results) -> String {
    let mut t = String::from("## Goals\n\n| goal | measured | met? |\n|---|---|---|\n");
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    // The goal is SQLite's; PostgreSQL runs are measured against the same bar.
    let db = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let goal_phase = r
        .load
        .iter()
        .find(|l| l.result.rate == 1000)
        .or_else(|| r.load.iter().max_by_key(|l| l.result.rate));
    if let Some(l) = goal_phase {
        let at = format!(
            "{} req/s, {} nodes",
            thousands(l.result.rate as f64),
            plan.nodes
        );
        for (op, name) in [
            (Op::GetSession, "GET /api/v1/sessions/{id}"),
            (Op::Titles, "GET /api/v1/titles"),
            (Op::Create, "POST /api/v1/sessions"),
        ] {
            let lat = l.result.latency(op);
            if lat.count == 0 {
                continue;
            }
            let errs = l.result.per_op.get(&op).map_or(0, |s| s.error_count());
            let _ = writeln!(
                t,
                "| `{name}` p99 < 10 ms at 1,000 req/s on {db} | {} at {at} ({} errors) | {} |",
                fmt_ns(lat.p99),
                errs,
                met(lat.p99 < GOAL_P99_NS && errs == 0 && l.result.rate >= 1000)
            );
        }
        if args.postgres.is_some() {
            // Issue 15's bar for PostgreSQL: keep up with the whole mix, POST p99 ≤ 20 ms.
            let post = l.result.latency(Op::Create);
            let errs: u64 = l.result.per_op.values().map(|s| s.error_count()).sum();
            let kept_up = l.result.answered_rate >= 0.99 * l.result.rate as f64;
            let _ = writeln!(
                t,
                "| every request answered, `POST` p99 ≤ 20 ms at 1,000 req/s on PostgreSQL | {} req/s answered of {} ({} errors), `POST` p99 {} | {} |",
                thousands(l.result.answered_rate),
                thousands(l.result.rate as f64),
                errs,
                fmt_ns(post.p99),
                met(kept_up
                    && errs == 0
                    && post.p99 <= GOAL_PG_POST_P99_NS
                    && l.result.rate >= 1000)
            );
        }
    }
    if let Some(i) = &r.idle {
        let _ = writeln!(
            t,
            "| 10,000 idle node links on one coordinator | {} held ({} failed, {} lost), {:.1} KiB each, {:.1}% of one core idle | {} |",
            thousands(i.held as f64),
            i.linked.failed,
            i.lost,
            i.per_link_kib(),
            i.idle_cpu.coordinator,
            met(i.held >= GOAL_LINKS && i.lost == 0)
        );
    }
    if let Some(s) = &r.saturation {
        let _ = writeln!(
            t,
            "| sessions created per second (saturation, {} clients) | {}/s, POST p99 {} | – |",
            s.created.workers,
            thousands(s.created.per_second()),
            fmt_ns(s.created.latency.p99)
        );
    }
    if let Some(x) = &r.ready {
        let _ = writeln!(
            t,
            "| POST → ready, simulated nodes | p50 {}, p99 {} | – |",
            fmt_ns(x.post_to_ready.p50),
            fmt_ns(x.post_to_ready.p99)
        );
    }
    if let Some(x) = &r.real {
        let _ = writeln!(
            t,
            "| POST → ready, pxs up (real session server and streamer) | p50 {}, p99 {} (n = {}) | – |",
            fmt_ns(x.post_to_ready.p50),
            fmt_ns(x.post_to_ready.p99),
            x.samples
        );
    }
    if !r.load.is_empty() {
        let _ = write!(
            t,
            "\n## Load phases ({} nodes, {} live sessions, mix {})\n\n\
             | target req/s | answered req/s | POST p99 | GET session p99 | GET titles p99 | DELETE p99 | healthz p99 | POST sent → start at node p99 | coordinator CPU % of a core | other processes % |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            plan.nodes,
            plan.live,
            args.mix.describe()
        );
        for l in &r.load {
            let p = |op| fmt_ns(l.result.latency(op).p99);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
                thousands(l.result.rate as f64),
                thousands(l.result.answered_rate),
                p(Op::Create),
                p(Op::GetSession),
                p(Op::Titles),
                p(Op::Delete),
                p(Op::Health),
                fmt_ns(l.post_to_start.p99),
                l.cpu.coordinator,
                l.cpu.other
            );
        }
        for l in &r.load {
            let _ = write!(
                t,
                "\n### {} req/s\n\n{}",
                thousands(l.result.rate as f64),
                load_table(&l.result)
            );
        }
    }
    t
}

fn to_json(args: &CoordinatorArgs, plan: &Plan, r: &Results) -> Value {
    let ops = |l: &LoadResult| -> Value {
        l.per_op
            .iter()
            .map(|(op, s)| {
                (
                    op.key().to_owned(),
                    json!({
                        "ok": s.ok, "errors": s.error_count(), "skipped": s.skipped,
                        "latency": lat_json(&Latency::of(&s.from_intended)),
                        "latency_from_sent": lat_json(&Latency::of(&s.from_sent)),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let serials = |v: &[(Op, Latency)]| -> Value {
        v.iter()
            .map(|(op, l)| (op.key().to_owned(), lat_json(l)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "benchmark": "coordinator",
        "nodes": plan.nodes,
        "mix": args.mix.describe(),
        "idle": r.idle.as_ref().map(|i| json!({
            "links": i.links, "linked": i.linked.ok, "failed": i.linked.failed, "held": i.held,
            "lost": i.lost, "link_ms": i.linked.elapsed_ms, "link_wall_ms": ms(i.linked_wall),
            "rss_before_kib": i.rss_before_kib, "rss_linked_kib": i.rss_linked_kib,
            "rss_after_kib": i.rss_after_kib, "per_link_kib": i.per_link_kib(),
            "client_rss_kib": i.client_rss_kib,
            "cpu_no_links": i.idle_cpu_no_links.json(), "cpu_idle": i.idle_cpu.json(),
            "idle_window_s": i.idle_window.as_secs_f64(),
            "heartbeats_in_window": i.heartbeats_in_window,
            "probe_before": ops(&i.probe_before), "probe_with_links": ops(&i.probe_with),
            "one_at_a_time_before": serials(&i.serial_before),
            "one_at_a_time_with_links": serials(&i.serial_with),
        })),
        "ready": r.ready.as_ref().map(|x| json!({
            "post": lat_json(&x.post), "post_to_start": lat_json(&x.post_to_start),
            "ready_sent_to_seen": lat_json(&x.ready_sent_to_seen),
            "post_to_ready": lat_json(&x.post_to_ready),
        })),
        "saturation": r.saturation.as_ref().map(|s| json!({
            "workers": s.created.workers, "created": s.created.done,
            "created_per_s": s.created.per_second(), "errors": s.created.error_count(),
            "post": lat_json(&s.created.latency), "cpu": s.cpu.json(),
            "deleted_per_s": s.deleted.per_second(), "delete": lat_json(&s.deleted.latency),
        })),
        "one_at_a_time_with_live_sessions": serials(&r.serial_live),
        "load": r.load.iter().map(|l| json!({
            "rate": l.result.rate, "duration_s": l.result.duration.as_secs_f64(),
            "answered_per_s": l.result.answered_rate, "live_before": l.live_before,
            "live_after": l.live_after, "ops": ops(&l.result),
            "post_to_start": lat_json(&l.post_to_start), "cpu": l.cpu.json(),
        })).collect::<Vec<_>>(),
        "real": r.real.as_ref().map(|x| json!({
            "samples": x.samples, "post_to_ready": lat_json(&x.post_to_ready),
            "post": lat_json(&x.post), "recorded": lat_json(&x.recorded),
            "delete_to_ended": lat_json(&x.delete_to_ended),
            "placement_mean_ms": x.placement_mean.map(ms),
            "node_start_mean_ms": x.node_start_mean.map(ms),
        })),
    })
}
