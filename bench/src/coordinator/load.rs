//! API load: an open-loop mix of requests at a fixed rate, and closed-loop creators at
//! saturation.
//!
//! The open loop is like the signalling relay phase: request `i` is due at `i / rate` seconds
//! after the start, whatever happened to the others, and its latency is counted from that
//! intended time (no coordinated omission) as well as from when it actually left. At most
//! `connections` requests are in flight (the client's connection pool); a request waiting for
//! one still counts its wait.

use super::api::Api;
use super::nodes::{Tracker, lock};
use crate::report::{Latency, latency_histogram};
use hdrhistogram::Histogram;
use pxs_protocol::api;
use pxs_protocol::node::SessionId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One kind of request of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `POST /api/v1/sessions` for the benchmark's title.
    Create,
    /// `DELETE /api/v1/sessions/{id}` of the oldest live session the client created.
    Delete,
    /// `GET /api/v1/sessions/{id}` of a live session, picked by a hash of the sequence number.
    GetSession,
    /// `GET /api/v1/titles`.
    Titles,
    /// `GET /healthz`: HTTP, routing and one `SELECT 1`: the floor of the others.
    Health,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Create,
        Op::Delete,
        Op::GetSession,
        Op::Titles,
        Op::Health,
    ];

    /// The name in `--mix`.
    pub fn key(self) -> &'static str {
        match self {
            Op::Create => "post",
            Op::Delete => "delete",
            Op::GetSession => "get",
            Op::Titles => "titles",
            Op::Health => "healthz",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Op::Create => "POST /api/v1/sessions",
            Op::Delete => "DELETE /api/v1/sessions/{id}",
            Op::GetSession => "GET /api/v1/sessions/{id}",
            Op::Titles => "GET /api/v1/titles",
            Op::Health => "GET /healthz",
        }
    }
}

/// Weights of each [`Op`]; request `i`'s kind is drawn by a fixed hash of `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    /// `post=4,delete=4,get=6,titles=4,healthz=2`; kinds left out have weight 0.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, w) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: use kind=weight"))?;
            let op = Op::ALL
                .into_iter()
                .find(|o| o.key() == k.trim())
                .ok_or_else(|| format!("`{k}`: one of post, delete, get, titles, healthz"))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("`{w}`: a whole number"))?;
            if weights.iter().any(|(o, _)| *o == op) {
                return Err(format!("`{k}` given twice"));
            }
            if w > 0 {
                weights.push((op, w));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix needs at least one kind with a weight above 0".into());
        }
        Ok(Mix { weights, total })
    }

    pub fn op(&self, seq: u64) -> Op {
        let mut x = (splitmix64(0xc0_0d17_a7e5 ^ seq) % u64::from(self.total)) as u32;
        for (op, w) in &self.weights {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        // x < total = the sum of the weights, so the loop returned.
        self.weights[0].0
    }

    pub fn share(&self, op: Op) -> f64 {
        let w = self
            .weights
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, w)| *w);
        f64::from(w) / f64::from(self.total)
    }

    pub fn describe(&self) -> String {
        self.weights
            .iter()
            .map(|(o, w)| format!("{}={w}", o.key()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// SplitMix64's finaliser: a fixed, well-mixing hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sessions the client created and has not deleted, oldest first.
#[derive(Default)]
pub struct Live {
    ids: Mutex<VecDeque<SessionId>>,
}

impl Live {
    pub fn push(&self, id: SessionId) {
        lock(&self.ids).push_back(id);
    }

    pub fn pop_oldest(&self) -> Option<SessionId> {
        lock(&self.ids).pop_front()
    }

    pub fn pick(&self, seq: u64) -> Option<SessionId> {
        let ids = lock(&self.ids);
        if ids.is_empty() {
            return None;
        }
        ids.get((splitmix64(seq) % ids.len() as u64) as usize)
            .cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.ids).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the load talks to.
#[derive(Clone)]
pub struct Target {
    pub api: Api,
    pub title: String,
    pub live: Arc<Live>,
    pub tracker: Arc<Tracker>,
}

/// The outcome of one request: its status (0: no HTTP answer), or skipped (no live session to
/// delete or read).
enum Outcome {
    Status(u16),
    Skipped,
}

impl Target {
    async fn run(&self, op: Op, seq: u64, sent: Instant) -> Outcome {
        let reply = match op {
            Op::Create => {
                let r = self.api.create_session(&self.title).await;
                if let Ok(r) = &r
                    && r.status == 201
                    && let Ok(s) = r.json::<api::Session>()
                {
                    self.tracker.posted(&s.id, sent);
                    self.live.push(s.id);
                }
                r
            }
            Op::Delete => match self.live.pop_oldest() {
                Some(id) => self.api.delete_session(&id).await,
                None => return Outcome::Skipped,
            },
            Op::GetSession => match self.live.pick(seq) {
                Some(id) => self.api.get_session(&id).await,
                None => return Outcome::Skipped,
            },
            Op::Titles => self.api.get("/api/v1/titles").await,
            Op::Health => self.api.get("/healthz").await,
        };
        Outcome::Status(reply.map_or(0, |r| r.status))
    }
}

/// Per-kind counts and latencies.
pub struct OpStats {
    pub ok: u64,
    /// Non-2xx answers by status; 0 for requests that got no answer.
    pub errors: BTreeMap<u16, u64>,
    pub skipped: u64,
    pub from_intended: Histogram<u64>,
    pub from_sent: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            ok: 0,
            errors: BTreeMap::new(),
            skipped: 0,
            from_intended: latency_histogram(),
            from_sent: latency_histogram(),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("{n} no answer")
                } else {
                    format!("{n}× {s}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One open-loop run.
pub struct LoadResult {
    pub rate: u64,
    pub duration: Duration,
    pub mix: String,
    pub per_op: BTreeMap<Op, OpStats>,
    /// Requests answered (any status) per second, from the start to the last answer.
    pub answered_rate: f64,
    pub wall: Duration,
}

impl LoadResult {
    pub fn latency(&self, op: Op) -> Latency {
        self.per_op
            .get(&op)
            .map_or_else(Latency::default, |s| Latency::of(&s.from_intended))
    }

    pub fn latency_from_sent(&self, op: Op) -> Latency {
        self.per_op
            .get(&op)
            .map_or_else(Latency::default, |s| Latency::of(&s.from_sent))
    }

    pub fn errors(&self) -> u64 {
        self.per_op.values().map(OpStats::error_count).sum()
    }
}

/// `rate` requests per second of `mix` for `duration`, at most `connections` in flight.
pub async fn open_loop(
    target: &Target,
    mix: &Mix,
    rate: u64,
    duration: Duration,
    connections: usize,
) -> LoadResult {
    let rate = rate.max(1);
    let count = (duration.as_secs_f64() * rate as f64).round() as u64;
    let stats: Arc<Mutex<BTreeMap<Op, OpStats>>> = Arc::new(Mutex::new(
        Op::ALL
            .into_iter()
            .filter(|o| mix.share(*o) > 0.0)
            .map(|o| (o, OpStats::new()))
            .collect(),
    ));
    let last_answer = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(connections.max(1)));
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    for seq in 0..count {
        let due = start
            + Duration::from_nanos((u128::from(seq) * 1_000_000_000 / u128::from(rate)) as u64);
        tokio::time::sleep_until(due.into()).await;
        let op = mix.op(seq);
        let (target, stats, slots, last) = (
            target.clone(),
            stats.clone(),
            slots.clone(),
            last_answer.clone(),
        );
        tasks.spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let sent = Instant::now();
            let outcome = target.run(op, seq, sent).await;
            let done = Instant::now();
            last.fetch_max(
                done.saturating_duration_since(start).as_nanos() as u64,
                Ordering::Relaxed,
            );
            let mut stats = lock(&stats);
            let Some(s) = stats.get_mut(&op) else { return };
            match outcome {
                Outcome::Skipped => s.skipped += 1,
                Outcome::Status(code) => {
                    if (200..300).contains(&code) {
                        s.ok += 1;
                    } else {
                        *s.errors.entry(code).or_default() += 1;
                    }
                    let ns = |from: Instant| done.saturating_duration_since(from).as_nanos() as u64;
                    let _ = s.from_intended.record(ns(due).max(1));
                    let _ = s.from_sent.record(ns(sent).max(1));
                }
            }
        });
        // Reap finished tasks as we go.
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let wall = Duration::from_nanos(last_answer.load(Ordering::Relaxed)).max(duration);
    let per_op = std::mem::take(&mut *lock(&stats));
    let answered: u64 = per_op.values().map(|s| s.ok + s.error_count()).sum();
    LoadResult {
        rate,
        duration,
        mix: mix.describe(),
        per_op,
        answered_rate: answered as f64 / wall.as_secs_f64().max(1e-9),
        wall,
    }
}

/// A closed-loop run: `workers` clients each sending the next request as soon as the last one
/// is answered.
pub struct ClosedResult {
    pub workers: usize,
    pub done: u64,
    pub errors: BTreeMap<u16, u64>,
    pub elapsed: Duration,
    pub latency: Latency,
}

impl ClosedResult {
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// `POST /api/v1/sessions` as fast as `workers` clients can, for `duration` or until `max`
/// sessions are created.
pub async fn create_closed(
    target: &Target,
    workers: usize,
    duration: Duration,
    max: u64,
) -> ClosedResult {
    closed(target, workers, duration, max, Op::Create).await
}

/// `n` requests of `op`, one after the other: the service time without queueing.
pub async fn one_at_a_time(target: &Target, op: Op, n: u64) -> ClosedResult {
    closed(target, 1, Duration::from_secs(120), n, op).await
}

/// Deletes the oldest live sessions until `keep` remain, `workers` at a time.
pub async fn delete_down_to(target: &Target, workers: usize, keep: usize) -> ClosedResult {
    let n = target.live.len().saturating_sub(keep) as u64;
    closed(target, workers, Duration::from_secs(600), n, Op::Delete).await
}

async fn closed(
    target: &Target,
    workers: usize,
    duration: Duration,
    max: u64,
    op: Op,
) -> ClosedResult {
    let start = Instant::now();
    let deadline = start + duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new((
        latency_histogram(),
        BTreeMap::<u16, u64>::new(),
        0u64,
    )));
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (target, claimed, shared) = (target.clone(), claimed.clone(), shared.clone());
        tasks.spawn(async move {
            let mut seq = 0;
            while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < max {
                seq += 1;
                let sent = Instant::now();
                let outcome = target.run(op, seq, sent).await;
                let ns = sent.elapsed().as_nanos() as u64;
                let mut s = lock(&shared);
                match outcome {
                    Outcome::Skipped => return,
                    Outcome::Status(c) if (200..300).contains(&c) => {
                        s.2 += 1;
                        let _ = s.0.record(ns.max(1));
                    }
                    Outcome::Status(c) => *s.1.entry(c).or_default() += 1,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let s = lock(&shared);
    ClosedResult {
        workers,
        done: s.2,
        errors: s.1.clone(),
        elapsed,
        latency: Latency::of(&s.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_drawn_in_its_proportions() {
        let mix = Mix::parse("post=4,delete=4,get=6,titles=4,healthz=2").expect("valid");
        let n = 20_000u64;
        let mut counts = BTreeMap::new();
        for i in 0..n {
            *counts.entry(mix.op(i)).or_insert(0u64) += 1;
        }
        for op in Op::ALL {
            let got = counts[&op] as f64 / n as f64;
            assert!((got - mix.share(op)).abs() < 0.01, "{op:?}: {got}");
        }
        assert_eq!(mix.describe(), "post=4,delete=4,get=6,titles=4,healthz=2");
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        assert!(Mix::parse("post=0").is_err());
        assert!(Mix::parse("put=1").unwrap_err().contains("put"));
        assert!(Mix::parse("post=1,post=2").unwrap_err().contains("twice"));
        assert!(Mix::parse("post").unwrap_err().contains("kind=weight"));
        let only = Mix::parse("titles=1").expect("valid");
        assert!((0..100).all(|i| only.op(i) == Op::Titles));
    }
}
