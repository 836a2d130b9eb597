//! The simulated streamers and players, and the open-loop dispatcher that drives them.
//!
//! ```text
//!  dispatcher thread ──cmd──▶ streamer writer ──offer / ice──▶ relay ──▶ player task (records latency)
//!                    └─cmd──▶ player task ──────ice─────────▶ relay ──▶ streamer reader (records latency)
//! ```
//!
//! Streamers have a reader and a writer task each, so that a slow write never stops them reading
//! (the relay would count them as slow readers). Players are one task each: they send little.

use crate::report::{Latency, latency_histogram};
use crate::schedule::{Kind, Schedule};
use crate::wire::{self, Frames};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use pxs_protocol::signalling::ServerMessage;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Most frames a writer hands to its socket before one flush.
const WRITE_BATCH: usize = 64;

/// Counters and histograms shared by every client task.
pub struct Stats {
    epoch: Instant,
    /// Timed frames stamped before this (ns since `epoch`) belong to an earlier phase.
    phase_start: AtomicU64,
    received_by_players: AtomicU64,
    received_by_streamers: AtomicU64,
    last_arrival: AtomicU64,
    dropped: AtomicU64,
    player_connected: AtomicU64,
    last_player_connected: AtomicU64,
    setup_failures: AtomicU64,
    hellos: AtomicU64,
    hists: Mutex<Hists>,
    connect: Mutex<Histogram<u64>>,
}

struct Hists {
    intended: Histogram<u64>,
    from_write: Histogram<u64>,
    to_players: Histogram<u64>,
    to_streamers: Histogram<u64>,
}

/// What a relay phase measured on the client side.
pub struct PhaseCounts {
    pub received: u64,
    pub last_arrival_ns: u64,
    pub dropped: u64,
    pub latency: Latency,
    pub latency_from_write: Latency,
    pub to_players: Latency,
    pub to_streamers: Latency,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            epoch: Instant::now(),
            phase_start: AtomicU64::new(u64::MAX),
            received_by_players: AtomicU64::new(0),
            received_by_streamers: AtomicU64::new(0),
            last_arrival: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            player_connected: AtomicU64::new(0),
            last_player_connected: AtomicU64::new(0),
            setup_failures: AtomicU64::new(0),
            hellos: AtomicU64::new(0),
            hists: Mutex::new(Hists {
                intended: latency_histogram(),
                from_write: latency_histogram(),
                to_players: latency_histogram(),
                to_streamers: latency_histogram(),
            }),
            connect: Mutex::new(latency_histogram()),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn player_connected(&self) -> u64 {
        self.player_connected.load(Ordering::Relaxed)
    }

    pub fn setup_failures(&self) -> u64 {
        self.setup_failures.load(Ordering::Relaxed)
    }

    pub fn hellos(&self) -> u64 {
        self.hellos.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received_by_players.load(Ordering::Relaxed)
            + self.received_by_streamers.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts a relay phase at `start_ns`: clears the counters and histograms.
    pub fn begin_phase(&self, start_ns: u64) {
        let mut h = lock(&self.hists);
        h.intended.reset();
        h.from_write.reset();
        h.to_players.reset();
        h.to_streamers.reset();
        self.received_by_players.store(0, Ordering::Relaxed);
        self.received_by_streamers.store(0, Ordering::Relaxed);
        self.last_arrival.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        self.phase_start.store(start_ns, Ordering::Relaxed);
    }

    pub fn phase_counts(&self) -> PhaseCounts {
        let h = lock(&self.hists);
        PhaseCounts {
            received: self.received(),
            last_arrival_ns: self.last_arrival.load(Ordering::Relaxed),
            dropped: self.dropped(),
            latency: Latency::of(&h.intended),
            latency_from_write: Latency::of(&h.from_write),
            to_players: Latency::of(&h.to_players),
            to_streamers: Latency::of(&h.to_streamers),
        }
    }

    pub fn connect_latency(&self) -> Latency {
        Latency::of(&lock(&self.connect))
    }

    fn record(&self, to_player: bool, at: u64, bt: u64) {
        if bt < self.phase_start.load(Ordering::Relaxed) {
            return; // a straggler from an earlier phase
        }
        let now = self.now_ns();
        {
            let mut h = lock(&self.hists);
            let from_intended = now.saturating_sub(bt).max(1);
            h.intended.saturating_record(from_intended);
            h.from_write
                .saturating_record(now.saturating_sub(at).max(1));
            if to_player {
                h.to_players.saturating_record(from_intended);
            } else {
                h.to_streamers.saturating_record(from_intended);
            }
        }
        if to_player {
            self.received_by_players.fetch_add(1, Ordering::Relaxed);
        } else {
            self.received_by_streamers.fetch_add(1, Ordering::Relaxed);
        }
        self.last_arrival.fetch_max(now, Ordering::Relaxed);
    }
}

/// A poisoned lock only means a client task panicked while recording; the histograms are
/// still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(Some(1 << 20))
}

async fn connect(addr: SocketAddr, read_buffer: usize) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config(read_buffer)))
            .await
            .with_context(|| format!("WebSocket handshake with {addr} failed"))?;
    Ok(ws)
}

/// Reads until a frame whose `type` is `kind`, and returns it.
async fn expect_frame(ws: &mut Ws, kind: &str) -> anyhow::Result<ServerMessage> {
    let needle = format!("\"type\":\"{kind}\"");
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && t.as_str().contains(&needle)
        {
            return ServerMessage::from_json(t.as_str())
                .with_context(|| format!("cannot parse `{kind}`: {}", t.as_str()));
        }
    }
    bail!("the connection closed before `{kind}`")
}

// ----- streamers -----

pub enum StreamerCmd {
    Offer { pid: Arc<str>, bt: u64 },
    Ice { pid: Arc<str>, bt: u64 },
    Hello { pid: Arc<str>, slot: usize },
}

pub struct Streamer {
    pub id: String,
    pub cmds: mpsc::UnboundedSender<StreamerCmd>,
}

/// A streamer connects, answers `identify` with `endpointId`, and gets its committed id. Its
/// reader reports each `playerConnected` as `(streamer index, player id)` on `players`.
pub async fn start_streamer(
    addr: SocketAddr,
    index: usize,
    stats: Arc<Stats>,
    frames: Arc<Frames>,
    players: mpsc::UnboundedSender<(usize, String)>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Streamer> {
    let mut ws = connect(addr, 64 * 1024).await?;
    expect_frame(&mut ws, "identify").await?;
    ws.send(Message::text(Frames::endpoint_id(&format!("S{index}"))))
        .await?;
    let id = match expect_frame(&mut ws, "endpointIdConfirm").await? {
        ServerMessage::EndpointIdConfirm { committed_id } => committed_id,
        other => bail!("expected endpointIdConfirm, got {other:?}"),
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<StreamerCmd>();

    let st = stats.clone();
    tasks.spawn(async move {
        while let Some(msg) = stream.next().await {
            let Ok(Message::Text(t)) = msg else {
                if msg.is_err() || matches!(msg, Ok(Message::Close(_))) {
                    break;
                }
                continue;
            };
            let text = t.as_str();
            if let Some((at, bt)) = wire::stamps(text) {
                st.record(false, at, bt);
            } else if text.contains("\"playerConnected\"")
                && let Ok(ServerMessage::PlayerConnected { player_id, .. }) =
                    ServerMessage::from_json(text)
            {
                let _ = players.send((index, player_id.0));
                st.last_player_connected
                    .fetch_max(st.now_ns(), Ordering::Relaxed);
                st.player_connected.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.dropped.fetch_add(1, Ordering::Relaxed);
    });

    let st = stats;
    tasks.spawn(async move {
        let frame = |cmd: StreamerCmd| -> String {
            let at = st.now_ns();
            match cmd {
                StreamerCmd::Offer { pid, bt } => frames.offer(&pid, at, bt),
                StreamerCmd::Ice { pid, bt } => Frames::ice_to_player(&pid, at, bt),
                StreamerCmd::Hello { pid, slot } => Frames::hello(&pid, slot),
            }
        };
        while let Some(cmd) = rx.recv().await {
            let mut ok = sink.feed(Message::text(frame(cmd))).await.is_ok();
            for _ in 1..WRITE_BATCH {
                let Ok(cmd) = rx.try_recv() else { break };
                ok = ok && sink.feed(Message::text(frame(cmd))).await.is_ok();
            }
            if !(ok && sink.flush().await.is_ok()) {
                st.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    });
    Ok(Streamer { id, cmds: tx })
}

// ----- players -----

pub enum PlayerCmd {
    Ice { bt: u64 },
}

/// Where the dispatcher finds each player's command queue: slot `i` is filled when the player
/// learns (from its `hello`) that it is row `i` of the player table.
pub type Registry = Arc<Vec<OnceLock<mpsc::UnboundedSender<PlayerCmd>>>>;

/// Connects `n` players with at most `concurrency` setups in flight: TCP connect, WebSocket
/// handshake, `config` received, `subscribe` sent. Player `i` subscribes to streamer `i % S`.
/// Returns when every `playerConnected` has reached its streamer, with the elapsed time from the
/// first connect to the last `playerConnected`.
#[allow(clippy::too_many_arguments)]
pub async fn start_players(
    addr: SocketAddr,
    n: usize,
    streamer_ids: &[String],
    concurrency: usize,
    stats: &Arc<Stats>,
    registry: &Registry,
    tasks: &mut JoinSet<()>,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    if streamer_ids.is_empty() {
        bail!("players need at least one streamer");
    }
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let start_ns = stats.now_ns();
    let before = stats.player_connected();
    for i in 0..n {
        let sem = sem.clone();
        let stats = stats.clone();
        let registry = registry.clone();
        let streamer_id = streamer_ids[i % streamer_ids.len()].clone();
        tasks.spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else {
                return;
            };
            let t0 = Instant::now();
            let ws = async {
                let mut ws = connect(addr, 8 * 1024).await?;
                expect_frame(&mut ws, "config").await?;
                let connected = t0.elapsed();
                ws.send(Message::text(Frames::subscribe(&streamer_id)))
                    .await?;
                anyhow::Ok((ws, connected))
            }
            .await;
            drop(permit);
            match ws {
                Ok((ws, connected)) => {
                    lock(&stats.connect).saturating_record(connected.as_nanos() as u64);
                    run_player(ws, stats, registry).await;
                }
                Err(e) => {
                    if stats.setup_failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("player setup failed: {e:#}");
                    }
                }
            }
        });
    }
    let target = before + n as u64;
    wait_until(timeout, || {
        let got = stats.player_connected();
        if got >= target || stats.setup_failures() > 0 {
            Ok(())
        } else {
            Err(format!("{} of {n} playerConnected seen", got - before))
        }
    })
    .await?;
    let failed = stats.setup_failures();
    if failed > 0 {
        bail!("{failed} of {n} player setups failed");
    }
    let end_ns = stats.last_player_connected.load(Ordering::Relaxed);
    Ok(Duration::from_nanos(end_ns.saturating_sub(start_ns)))
}

async fn run_player(mut ws: Ws, stats: Arc<Stats>, registry: Registry) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PlayerCmd>();
    // Our own sender, handed to the registry when the hello arrives. Until then it keeps `rx` open.
    let mut me = Some(tx);
    let mut commands_open = true;
    loop {
        tokio::select! {
            cmd = rx.recv(), if commands_open => {
                let Some(PlayerCmd::Ice { bt }) = cmd else {
                    commands_open = false;
                    continue;
                };
                let mut ok = ws.feed(Message::text(Frames::ice_to_streamer(stats.now_ns(), bt))).await.is_ok();
                for _ in 1..WRITE_BATCH {
                    let Ok(PlayerCmd::Ice { bt }) = rx.try_recv() else { break };
                    ok = ok && ws.feed(Message::text(Frames::ice_to_streamer(stats.now_ns(), bt))).await.is_ok();
                }
                if !(ok && ws.flush().await.is_ok()) {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str();
                    if let Some((at, bt)) = wire::stamps(text) {
                        stats.record(true, at, bt);
                    } else if let Some(slot) = wire::hello_slot(text)
                        && let Some(tx) = me.take()
                        && let Some(cell) = registry.get(slot)
                        && cell.set(tx).is_ok()
                    {
                        stats.hellos.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
    stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Tells every player which slot of the table it is, through its streamer, and waits until all
/// of them have registered their command queue.
pub async fn introduce_players(
    table: &[(usize, Arc<str>)],
    streamers: &[Streamer],
    stats: &Stats,
    timeout: Duration,
) -> anyhow::Result<()> {
    let before = stats.hellos();
    for (slot, (s, pid)) in table.iter().enumerate() {
        streamers[*s]
            .cmds
            .send(StreamerCmd::Hello {
                pid: pid.clone(),
                slot,
            })
            .map_err(|_| anyhow::anyhow!("streamer {} is gone", streamers[*s].id))?;
    }
    let n = table.len() as u64;
    wait_until(timeout, || {
        let got = stats.hellos() - before;
        if got >= n {
            Ok(())
        } else {
            Err(format!("{got} of {n} players reached by their hello"))
        }
    })
    .await
}

/// Runs the schedule from `start_ns` on a thread of its own, sleeping between messages rather
/// than on tokio's millisecond timer, so that messages leave within tens of microseconds of
/// their intended time. Returns how many messages were handed to a live client.
pub fn dispatch(
    schedule: Schedule,
    start_ns: u64,
    table: Arc<Vec<(usize, Arc<str>)>>,
    streamers: Arc<Vec<mpsc::UnboundedSender<StreamerCmd>>>,
    registry: Registry,
    stats: Arc<Stats>,
) -> tokio::task::JoinHandle<u64> {
    tokio::task::spawn_blocking(move || {
        let mut handed = 0u64;
        let mut seq = 0u64;
        let n = schedule.len();
        while seq < n {
            let now = stats.now_ns();
            while seq < n && start_ns + schedule.at_ns(seq) <= now {
                let p = schedule.get(seq);
                let bt = start_ns + p.at_ns;
                let (s, pid) = &table[p.player as usize % table.len()];
                let ok = match p.kind {
                    Kind::Offer => streamers[*s]
                        .send(StreamerCmd::Offer {
                            pid: pid.clone(),
                            bt,
                        })
                        .is_ok(),
                    Kind::IceToPlayer => streamers[*s]
                        .send(StreamerCmd::Ice {
                            pid: pid.clone(),
                            bt,
                        })
                        .is_ok(),
                    Kind::IceToStreamer => registry
                        .get(p.player as usize)
                        .and_then(OnceLock::get)
                        .is_some_and(|q| q.send(PlayerCmd::Ice { bt }).is_ok()),
                };
                handed += u64::from(ok);
                seq += 1;
            }
            if seq < n {
                let next = start_ns + schedule.at_ns(seq);
                let wait = next.saturating_sub(stats.now_ns());
                if wait > 0 {
                    std::thread::sleep(Duration::from_nanos(wait));
                }
            }
        }
        handed
    })
}

/// Polls `check` every 2 ms until it returns `Ok`; after `timeout`, fails with the last reason
/// it gave for not being done yet.
pub async fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let why = match check() {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
