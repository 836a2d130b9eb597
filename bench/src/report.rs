//! Results of a run and how they are printed: one line per phase as it ends, then Markdown
//! tables (relay results side by side, and the goals next to Epic's numbers and ours).

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Latency percentiles, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `p50 85 µs, p90 210 µs, p99 640 µs, max 3.1 ms`
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            fmt_ns(self.p50),
            fmt_ns(self.p90),
            fmt_ns(self.p99),
            fmt_ns(self.p999),
            fmt_ns(self.max)
        )
    }
}

/// A histogram of nanosecond latencies from 1 ns to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5): creation cannot fail.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// `850 ns`, `85.2 µs`, `1.23 ms`, `2.10 s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => sig3(ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => sig3(ns as f64 / 1e6, "ms"),
        _ => sig3(ns as f64 / 1e9, "s"),
    }
}

fn sig3(v: f64, unit: &str) -> String {
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// `12,345`
pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Debug)]
pub struct SetupResult {
    pub players: usize,
    pub concurrency: usize,
    pub elapsed: Duration,
    /// Time from the TCP connect to `config` received, per player.
    pub connect: Latency,
}

impl SetupResult {
    pub fn per_second(&self) -> f64 {
        self.players as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct MemoryResult {
    pub players: usize,
    pub before_kib: u64,
    pub after_kib: u64,
}

impl MemoryResult {
    pub fn per_player_kib(&self) -> f64 {
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.players.max(1) as f64
    }
}

#[derive(Clone, Debug)]
pub struct RelayResult {
    pub target_rate: u64,
    pub duration: Duration,
    /// Messages the schedule handed to the clients' sockets.
    pub sent: u64,
    /// Timed messages that reached their receiver.
    pub received: u64,
    /// Messages per second that got through: received ÷ the time from the start of the phase to
    /// the last arrival (at least the phase's duration).
    pub accepted_rate: f64,
    /// From the intended send time (the schedule's): what a client of the server sees.
    pub latency: Latency,
    /// From when the sending client actually wrote the frame: without the benchmark client's own
    /// queueing before the write.
    pub latency_from_write: Latency,
    pub to_players: Latency,
    pub to_streamers: Latency,
    /// CPU time of the relay (the server process, or the forwarder's threads) over `wall`.
    pub relay_cpu: Duration,
    /// CPU time of the benchmark's own clients over `wall`.
    pub client_cpu: Duration,
    /// CPU time of everything else on the machine over `wall` (should be about zero).
    pub other_cpu: Duration,
    pub wall: Duration,
    /// Client connections that ended during the phase (closed by the relay, or failed writes).
    pub dropped_connections: u64,
}

impl RelayResult {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    pub fn cpu_us_per_message(&self) -> f64 {
        self.relay_cpu.as_secs_f64() * 1e6 / self.received.max(1) as f64
    }

    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.relay_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn client_cpu_percent(&self) -> f64 {
        100.0 * self.client_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn other_cpu_percent(&self) -> f64 {
        100.0 * self.other_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// The whole schedule got through, at its rate.
    pub fn full_rate_accepted(&self) -> bool {
        self.lost() == 0 && self.accepted_rate >= 0.99 * self.target_rate as f64
    }

    pub fn line(&self) -> String {
        format!(
            "{} msg/s for {:.0} s: sent {}, received {} ({}/s accepted), lost {}, dropped connections {}\n    \
             latency {}\n    from the actual write: {}\n    to players: {}\n    to streamers: {}\n    \
             relay CPU {:.2} s = {:.1} µs/msg, {:.0}% of one core; benchmark clients {:.0}% of one core; \
             other processes {:.0}% of one core{}",
            thousands(self.target_rate as f64),
            self.duration.as_secs_f64(),
            self.sent,
            self.received,
            thousands(self.accepted_rate),
            self.lost(),
            self.dropped_connections,
            self.latency.line(),
            self.latency_from_write.line(),
            self.to_players.line(),
            self.to_streamers.line(),
            self.relay_cpu.as_secs_f64(),
            self.cpu_us_per_message(),
            self.cpu_percent(),
            self.client_cpu_percent(),
            self.other_cpu_percent(),
            if self.other_cpu_percent() > 10.0 {
                " (something else was running: the numbers are disturbed)"
            } else {
                ""
            },
        )
    }
}

/// Everything one relay (pxs or the baseline) gave.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub label: String,
    pub streamers: usize,
    pub players: usize,
    pub setup: SetupResult,
    pub memory: Option<MemoryResult>,
    pub relays: Vec<RelayResult>,
}

/// The relay phases of every run, side by side, as a Markdown table.
pub fn relay_table(runs: &[&RunResult]) -> String {
    let mut rates: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.relays.iter().map(|x| x.target_rate))
        .collect();
    rates.sort_unstable();
    rates.dedup();
    let mut t = String::from(
        "| target msg/s | relay | accepted msg/s | lost | p50 | p90 | p99 | max | relay CPU µs/msg | relay CPU % of a core | client CPU % |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for rate in rates {
        for run in runs {
            for r in run.relays.iter().filter(|r| r.target_rate == rate) {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.0} |",
                    thousands(rate as f64),
                    run.label,
                    thousands(r.accepted_rate),
                    r.lost(),
                    fmt_ns(r.latency.p50),
                    fmt_ns(r.latency.p90),
                    fmt_ns(r.latency.p99),
                    fmt_ns(r.latency.max),
                    r.cpu_us_per_message(),
                    r.cpu_percent(),
                    r.client_cpu_percent(),
                );
            }
        }
    }
    t
}

/// The rate the goals are stated at.
pub const GOAL_RATE: u64 = 20_000;
/// The player count the goals are stated at.
pub const GOAL_PLAYERS: usize = 5_000;

/// The goals of the issue, Epic's reference server, and the measured values, as a Markdown table.
/// Relay goals are read at [`GOAL_RATE`] when it was measured, else at the highest rate run.
pub fn goals_table(pxs: Option<&RunResult>, baseline: Option<&RunResult>) -> String {
    let at_goal = |run: Option<&RunResult>| -> Option<RelayResult> {
        let run = run?;
        run.relays
            .iter()
            .find(|r| r.target_rate == GOAL_RATE)
            .or_else(|| run.relays.iter().max_by_key(|r| r.target_rate))
            .cloned()
    };
    let (p, b) = (at_goal(pxs), at_goal(baseline));
    let rate_note = p
        .as_ref()
        .or(b.as_ref())
        .map(|r| r.target_rate)
        .unwrap_or(GOAL_RATE);
    let players = pxs.or(baseline).map(|r| r.players).unwrap_or(0);
    let mut t = format!(
        "Relay rows measured at {} msg/s with {} players (the goals are stated at {} msg/s and {} players).\n\n\
         | metric | goal | Epic's reference server | pxs | met? | in-process baseline |\n\
         |---|---|---|---:|---|---:|\n",
        thousands(rate_note as f64),
        thousands(players as f64),
        thousands(GOAL_RATE as f64),
        thousands(GOAL_PLAYERS as f64),
    );
    let relay = |r: &Option<RelayResult>, f: &dyn Fn(&RelayResult) -> String| {
        r.as_ref().map(f).unwrap_or_else(|| "–".into())
    };
    let met = |ok: Option<bool>| match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    };
    let accepted = |r: &RelayResult| {
        format!(
            "{}/s, lost {}",
            thousands(r.accepted_rate),
            thousands(r.lost() as f64)
        )
    };
    let _ = writeln!(
        t,
        "| accepted rate | the full {} msg/s | saturates one core at ~10,000–15,000 msg/s | {} | {} | {} |",
        thousands(rate_note as f64),
        relay(&p, &accepted),
        met(p.as_ref().map(RelayResult::full_rate_accepted)),
        relay(&b, &accepted),
    );
    let p99 = |r: &RelayResult| fmt_ns(r.latency.p99);
    let _ = writeln!(
        t,
        "| one-way latency p99 | < 1 ms | 40–240 ms at 5,000 msg/s | {} | {} | {} |",
        relay(&p, &p99),
        met(p
            .as_ref()
            .map(|r| r.latency.count > 0 && r.latency.p99 < 1_000_000)),
        relay(&b, &p99),
    );
    let cpu = |r: &RelayResult| format!("{:.1} µs", r.cpu_us_per_message());
    let _ = writeln!(
        t,
        "| server CPU per message | ≤ 10 µs | 130–200 µs | {} | {} | {} |",
        relay(&p, &cpu),
        met(p.as_ref().map(|r| r.cpu_us_per_message() <= 10.0)),
        relay(&b, &cpu),
    );
    let setups = |r: Option<&RunResult>| {
        r.map(|r| format!("{}/s", thousands(r.setup.per_second())))
            .unwrap_or_else(|| "–".into())
    };
    let _ = writeln!(
        t,
        "| player setups per second | ≥ 10,000 | 900–1,900 | {} | {} | {} |",
        setups(pxs),
        met(pxs.map(|r| r.setup.per_second() >= 10_000.0)),
        setups(baseline),
    );
    let mem = |r: Option<&RunResult>| {
        r.and_then(|r| r.memory)
            .map(|m| format!("{:.1} KiB", m.per_player_kib()))
            .unwrap_or_else(|| "n/a".into())
    };
    let _ = writeln!(
        t,
        "| server memory per idle player | ≤ 3 KiB | 19–39 KiB | {} | {} | {} |",
        mem(pxs),
        met(pxs
            .and_then(|r| r.memory)
            .map(|m| m.per_player_kib() <= 3.0)),
        mem(baseline),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_units_are_reported() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        let near = |v: u64, want: u64| (v as f64 / want as f64 - 1.0).abs() < 0.002;
        assert!(near(l.p50, 500_000), "{l:?}");
        assert!(near(l.p99, 990_000), "{l:?}");
        assert!(near(l.max, 1_000_000), "{l:?}");
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(85_200), "85.2 µs");
        assert_eq!(fmt_ns(1_234_000), "1.23 ms");
        assert_eq!(fmt_ns(2_100_000_000), "2.10 s");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(Latency::of(&latency_histogram()).line(), "no samples");
    }

    #[test]
    fn goals_are_judged_at_the_goal_rate() {
        let relay = |rate: u64, received: u64, p99: u64, cpu_ms: u64| RelayResult {
            target_rate: rate,
            duration: Duration::from_secs(1),
            sent: rate,
            received,
            accepted_rate: received as f64,
            latency: Latency {
                count: received,
                p99,
                ..Latency::default()
            },
            latency_from_write: Latency::default(),
            to_players: Latency::default(),
            to_streamers: Latency::default(),
            relay_cpu: Duration::from_millis(cpu_ms),
            client_cpu: Duration::ZERO,
            other_cpu: Duration::ZERO,
            wall: Duration::from_secs(1),
            dropped_connections: 0,
        };
        let run = RunResult {
            label: "pxs".into(),
            streamers: 2,
            players: 200,
            setup: SetupResult {
                players: 200,
                concurrency: 8,
                elapsed: Duration::from_millis(10),
                connect: Latency::default(),
            },
            memory: Some(MemoryResult {
                players: 200,
                before_kib: 1000,
                after_kib: 2000,
            }),
            // 20,000/s all through at 500 µs p99 and 10 µs/msg; 40,000/s not.
            relays: vec![
                relay(40_000, 30_000, 5_000_000, 900),
                relay(20_000, 20_000, 500_000, 200),
            ],
        };
        let t = goals_table(Some(&run), None);
        assert!(t.starts_with("Relay rows measured at 20,000 msg/s with 200 players"));
        let row = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {name}")))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        assert!(row("accepted rate").contains("| yes |"), "{t}");
        assert!(row("one-way latency p99").contains("| yes |"), "{t}");
        assert!(
            row("server CPU per message").contains("10.0 µs | yes"),
            "{t}"
        );
        assert!(
            row("player setups per second").contains("20,000/s | yes"),
            "{t}"
        );
        assert!(
            row("server memory per idle player").contains("5.0 KiB | **no**"),
            "{t}"
        );
        let rows = relay_table(&[&run]);
        assert_eq!(rows.lines().count(), 4);
    }
}
