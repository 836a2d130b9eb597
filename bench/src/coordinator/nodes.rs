//! Simulated nodes: the session server's end of the node link, scripted. Each one says `hello`
//! (one application, `--node-capacity` slots), answers `start_session` at once with the events
//! `starting` then `ready`, answers `stop_session` with `ended {reason: stopped}`, and sends a
//! heartbeat listing its sessions every few seconds. No process is launched: what is measured
//! is the coordinator.
//!
//! [`Tracker`] joins what the API client saw (a `POST /api/v1/sessions` sent) with what a node
//! saw (its `start_session` arrived), by session id.

use crate::report::{Latency, latency_histogram};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use pxs_protocol::node::{
    ApplicationId, ApplicationInfo, Capacity, CoordinatorToNode, EndReason, Ended, Heartbeat,
    Hello, NodeId, NodeToCoordinator, ObservedState, SequencedEvent, SessionEvent,
    SessionEventKind, SessionId, SessionStatus,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A poisoned lock only means another task panicked while holding it; the data is still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens a node link to `addr` (`ws://addr/api/v1/nodes/link`) with the node token, says
/// `hello` as `name` and waits for `welcome`. Returns the socket and the coordinator's `acked`.
pub async fn open_link(
    addr: SocketAddr,
    token: &str,
    hello: Hello,
    read_buffer: usize,
) -> anyhow::Result<(Ws, u64)> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Events and acks are small: send them at once (Nagle would add the peer's delayed ACK).
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}/api/v1/nodes/link").into_client_request()?;
    req.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(Some(1 << 20));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(tcp), Some(config))
            .await
            .context("node link handshake failed")?;
    ws.send(Message::text(NodeToCoordinator::Hello(hello).to_json()))
        .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match CoordinatorToNode::from_json(&t) {
                Ok(CoordinatorToNode::Welcome { acked }) => return Ok((ws, acked)),
                Ok(other) => bail!("expected welcome, got {other:?}"),
                Err(e) => bail!("invalid message from the coordinator: {e}"),
            },
            Some(Ok(Message::Close(c))) => bail!("the coordinator closed the link: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("node link: {e}"),
            None => bail!("the coordinator closed the link before welcome"),
        }
    }
}

/// A `hello` for node `name` with one application and `max_sessions` slots.
pub fn hello(name: &str, application: &ApplicationId, max_sessions: u32) -> anyhow::Result<Hello> {
    Ok(Hello {
        node: NodeId::parse(name)?,
        version: "pxs-bench".into(),
        public_url: "http://127.0.0.1:9".into(),
        upstream_url: None,
        capacity: Capacity {
            max_sessions,
            max_sessions_per_gpu: 0,
        },
        applications: vec![ApplicationInfo {
            id: application.clone(),
            name: application.to_string(),
            res_x: 1280,
            res_y: 720,
            max_players: 0,
            description: String::new(),
            image_url: None,
            visibility: None,
            idle_timeout: None,
            empty_timeout: None,
        }],
        gpus: Vec::new(),
        sessions: Vec::new(),
        draining: false,
    })
}

pub fn heartbeat(sessions: Vec<SessionStatus>, free_slots: u32) -> Message {
    Message::text(
        NodeToCoordinator::Heartbeat(Heartbeat {
            at: unix_ms(),
            sessions,
            free_slots,
            gpus: Vec::new(),
            draining: false,
        })
        .to_json(),
    )
}

/// When a session's `POST` left the client, when its `start_session` reached a node, and when
/// that node sent `ready`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Marks {
    pub posted: Option<Instant>,
    pub started: Option<Instant>,
    pub ready_sent: Option<Instant>,
}

/// Joins the client's and the nodes' view of each session; records POST sent → start at node.
pub struct Tracker {
    marks: Mutex<HashMap<SessionId, Marks>>,
    post_to_start: Mutex<Histogram<u64>>,
}

impl Tracker {
    pub fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            marks: Mutex::new(HashMap::new()),
            post_to_start: Mutex::new(latency_histogram()),
        })
    }

    fn update(&self, id: &SessionId, f: impl FnOnce(&mut Marks)) {
        let mut marks = lock(&self.marks);
        let m = marks.entry(id.clone()).or_default();
        let had_both = m.posted.is_some() && m.started.is_some();
        f(m);
        if !had_both && let (Some(p), Some(s)) = (m.posted, m.started) {
            let ns = s.saturating_duration_since(p).as_nanos() as u64;
            let _ = lock(&self.post_to_start).record(ns.max(1));
        }
    }

    pub fn posted(&self, id: &SessionId, at: Instant) {
        self.update(id, |m| m.posted = Some(at));
    }

    fn started(&self, id: &SessionId, at: Instant) {
        self.update(id, |m| m.started = Some(at));
    }

    fn ready_sent(&self, id: &SessionId, at: Instant) {
        self.update(id, |m| m.ready_sent = Some(at));
    }

    pub fn marks(&self, id: &SessionId) -> Marks {
        lock(&self.marks).get(id).copied().unwrap_or_default()
    }

    /// POST sent → `start_session` at the node, since the last reset.
    pub fn post_to_start(&self) -> Latency {
        Latency::of(&lock(&self.post_to_start))
    }

    pub fn reset(&self) {
        lock(&self.marks).clear();
        lock(&self.post_to_start).reset();
    }
}

/// What the simulated nodes did, all together.
#[derive(Default)]
pub struct NodeStats {
    pub starts: AtomicU64,
    pub stops: AtomicU64,
    pub unknown_stops: AtomicU64,
    pub heartbeats: AtomicU64,
    pub links_lost: AtomicU64,
    pub live: AtomicU64,
}

pub struct SimNodes {
    stop: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    pub stats: Arc<NodeStats>,
}

impl SimNodes {
    /// Links `count` nodes (`bench-node-000`...) to the coordinator at `addr` and returns once
    /// every one has its `welcome`.
    pub async fn start(
        addr: SocketAddr,
        count: usize,
        application: &ApplicationId,
        max_sessions: u32,
        heartbeat_every: Duration,
        tracker: Arc<Tracker>,
    ) -> anyhow::Result<SimNodes> {
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(NodeStats::default());
        let (linked_tx, mut linked_rx) = mpsc::channel::<anyhow::Result<()>>(count.max(1));
        let mut tasks = JoinSet::new();
        for i in 0..count {
            let h = hello(&format!("bench-node-{i:03}"), application, max_sessions)?;
            let node = Node {
                application: application.clone(),
                max_sessions,
                heartbeat_every,
                stats: stats.clone(),
                tracker: tracker.clone(),
                stop: stop_rx.clone(),
            };
            let linked = linked_tx.clone();
            tasks.spawn(async move {
                let (ws, acked) = match open_link(addr, super::server::NODE_TOKEN, h, 8192).await {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = format!("{e:#}");
                        let _ = linked.send(Err(e)).await;
                        bail!(msg);
                    }
                };
                let _ = linked.send(Ok(())).await;
                node.run(ws, acked).await
            });
        }
        for _ in 0..count {
            match tokio::time::timeout(Duration::from_secs(60), linked_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => return Err(e.context("a simulated node could not link")),
                Ok(None) | Err(_) => bail!("the simulated nodes did not all link within 60 s"),
            }
        }
        Ok(SimNodes { stop, tasks, stats })
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

struct Node {
    application: ApplicationId,
    max_sessions: u32,
    heartbeat_every: Duration,
    stats: Arc<NodeStats>,
    tracker: Arc<Tracker>,
    stop: watch::Receiver<bool>,
}

impl Node {
    async fn run(mut self, mut ws: Ws, acked: u64) -> anyhow::Result<()> {
        let mut seq = acked;
        let mut sessions: HashMap<SessionId, u64> = HashMap::new();
        ws.send(heartbeat(Vec::new(), self.max_sessions)).await?;
        let mut beat = tokio::time::interval_at(
            tokio::time::Instant::now() + self.heartbeat_every,
            self.heartbeat_every,
        );
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = beat.tick() => {
                    let list = sessions
                        .iter()
                        .map(|(id, started)| SessionStatus {
                            session_id: id.clone(),
                            application_id: self.application.clone(),
                            state: ObservedState::Ready,
                            players: 0,
                            gpu: None,
                            started_at: *started,
                        })
                        .collect();
                    let free = self.max_sessions.saturating_sub(sessions.len() as u32);
                    ws.send(heartbeat(list, free)).await?;
                    self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                _ = self.stop.changed() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    self.stats.links_lost.fetch_add(1, Ordering::Relaxed);
                    bail!("the coordinator closed a node link");
                }
                Some(Ok(_)) => continue,
            };
            match CoordinatorToNode::from_json(&text)? {
                CoordinatorToNode::StartSession { session_id, .. } => {
                    self.tracker.started(&session_id, Instant::now());
                    self.stats.starts.fetch_add(1, Ordering::Relaxed);
                    self.stats.live.fetch_add(1, Ordering::Relaxed);
                    let now = unix_ms();
                    sessions.insert(session_id.clone(), now);
                    seq += 1;
                    let starting = event(
                        seq,
                        &session_id,
                        SessionEventKind::Starting {
                            application_id: self.application.clone(),
                            pid: 1,
                            gpu: None,
                        },
                    );
                    seq += 1;
                    let ready = event(
                        seq,
                        &session_id,
                        SessionEventKind::Ready {
                            player_url: format!("ws://127.0.0.1:9/sessions/{session_id}/ws"),
                        },
                    );
                    ws.feed(starting).await?;
                    self.tracker.ready_sent(&session_id, Instant::now());
                    ws.send(ready).await?;
                }
                CoordinatorToNode::StopSession { session_id } => {
                    if sessions.remove(&session_id).is_none() {
                        // Already ended here (a stop repeated after a heartbeat): nothing to do.
                        self.stats.unknown_stops.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.stats.stops.fetch_add(1, Ordering::Relaxed);
                    self.stats.live.fetch_sub(1, Ordering::Relaxed);
                    seq += 1;
                    ws.send(event(
                        seq,
                        &session_id,
                        SessionEventKind::Ended(Ended {
                            reason: EndReason::Stopped,
                            failed: false,
                            exit_code: None,
                            signal: None,
                            detail: None,
                        }),
                    ))
                    .await?;
                }
                CoordinatorToNode::Welcome { .. }
                | CoordinatorToNode::Ack { .. }
                | CoordinatorToNode::Drain
                | CoordinatorToNode::DrainGracefully { .. }
                | CoordinatorToNode::Resume
                | CoordinatorToNode::RevokeLink { .. } => {}
            }
        }
    }
}

fn event(seq: u64, id: &SessionId, kind: SessionEventKind) -> Message {
    Message::text(
        NodeToCoordinator::Event(SequencedEvent {
            seq,
            event: SessionEvent {
                session_id: id.clone(),
                at: unix_ms(),
                kind,
            },
        })
        .to_json(),
    )
}
