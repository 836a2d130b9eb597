//! The tokio shell around the [`Router`]: one task owns the router and drives it; each WebSocket
//! connection is one task that parses what it reads and writes what it is sent.
//!
//! ```text
//!  connection task ──Event (parsed message)──▶ router task ──Outbound (bounded queue)──▶ connection task
//! ```
//!
//! A connection whose queue is full (a client that does not read) is dropped, not buffered: its
//! queue sender is discarded, which ends its task, and the router treats it as gone.

use crate::router::{
    ConnId, Output, PlayerIdentity, Role, Router, RouterConfig, SessionEvent, close_code,
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use pxs_protocol::signalling::{ClientMessage, MessageError, ServerMessage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

/// Per-connection limits of the shell.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message_size: usize,
    /// Messages queued to one connection before it is dropped as a slow reader.
    pub send_queue: usize,
    /// A single write that takes longer than this drops the connection.
    pub write_timeout: Duration,
    /// A peer from which no frame (a message, or the pong to our ping) has arrived for this long
    /// is closed with 1001: a vanished client must not hold its socket. The server pings every
    /// third of it, so a live peer (browsers and UE answer pings) is never silent that long.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024,
            send_queue: 1024,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What the router hands a connection. Boxed so that the queue's slots stay small: tokio
/// allocates a block of them per idle connection.
enum Outbound {
    Msg(Box<ServerMessage>),
    Close(Box<(Option<u16>, String)>),
}

type Inspect = Box<dyn FnOnce(&Router) + Send>;

enum Event {
    Connect {
        conn: ConnId,
        role: Role,
        remote: Option<IpAddr>,
        /// A user of a shared session (players only).
        identity: Option<PlayerIdentity>,
        queue: mpsc::Sender<Outbound>,
    },
    Message {
        conn: ConnId,
        msg: ClientMessage,
    },
    Invalid {
        conn: ConnId,
        error: MessageError,
    },
    TooBig {
        conn: ConnId,
        limit: usize,
    },
    Disconnect {
        conn: ConnId,
    },
    Inspect(Inspect),
    /// See [`Signalling::revoke_link`].
    RevokeLink(String),
    /// See [`Signalling::announce`].
    Announce(ServerMessage),
    Shutdown,
}

/// A running signalling session: the router task and the way in for connections. Cheap to clone.
#[derive(Clone)]
pub struct Signalling {
    events: mpsc::Sender<Event>,
    next_conn: Arc<AtomicU64>,
    limits: Arc<Limits>,
    started: Instant,
}

impl Signalling {
    /// Starts the router task on the current tokio runtime.
    pub fn spawn(config: RouterConfig, limits: Limits) -> Signalling {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run_router(Router::new(config), rx, None));
        Signalling {
            events: tx,
            next_conn: Arc::new(AtomicU64::new(0)),
            limits: Arc::new(limits),
            started: Instant::now(),
        }
    }

    /// Like [`Signalling::spawn`], and also reports what happens in the session (streamer
    /// identified, players joining, leaving, active) on the returned channel, in order. A
    /// player's `activity` is reported at most once per `activity_interval`. The channel closes
    /// when the router task ends.
    pub fn spawn_observed(
        config: RouterConfig,
        limits: Limits,
        activity_interval: Duration,
    ) -> (Signalling, mpsc::UnboundedReceiver<SessionEvent>) {
        let (tx, rx) = mpsc::channel(4096);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut router = Router::new(config);
        router.enable_events(activity_interval);
        tokio::spawn(run_router(router, rx, Some(events_tx)));
        let signalling = Signalling {
            events: tx,
            next_conn: Arc::new(AtomicU64::new(0)),
            limits: Arc::new(limits),
            started: Instant::now(),
        };
        (signalling, events_rx)
    }

    /// Completes a WebSocket upgrade into a connection of this session, with the same limits and
    /// buffer sizes as the standalone server, echoing `protocol` (the first subprotocol the
    /// client offered, see [`crate::server::first_subprotocol`]). For embedders that route
    /// requests themselves and have already checked the caller.
    pub fn upgrade(
        &self,
        upgrade: WebSocketUpgrade,
        protocol: Option<String>,
        role: Role,
        remote: Option<IpAddr>,
    ) -> Response {
        self.upgrade_as(upgrade, protocol, role, remote, None)
    }

    /// As [`Signalling::upgrade`] for a player who is a user of a shared session, with the
    /// identity its token gave (see [`Router::connect_player`]).
    pub fn upgrade_player(
        &self,
        upgrade: WebSocketUpgrade,
        protocol: Option<String>,
        remote: Option<IpAddr>,
        identity: PlayerIdentity,
    ) -> Response {
        self.upgrade_as(upgrade, protocol, Role::Player, remote, Some(identity))
    }

    fn upgrade_as(
        &self,
        upgrade: WebSocketUpgrade,
        protocol: Option<String>,
        role: Role,
        remote: Option<IpAddr>,
        identity: Option<PlayerIdentity>,
    ) -> Response {
        let upgrade = match protocol {
            Some(p) => upgrade.protocols([p]),
            None => upgrade,
        };
        let signalling = self.clone();
        upgrade
            .max_message_size(self.limits.max_message_size)
            .max_frame_size(self.limits.max_message_size)
            .read_buffer_size(match role {
                Role::Player => 1024,
                Role::Streamer | Role::Sfu => 8192,
            })
            .write_buffer_size(16 * 1024)
            .on_upgrade(move |ws| async move {
                signalling.run(ws, role, remote, identity).await;
            })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs `f` on the router inside its task and returns the result; `None` if the session has
    /// shut down.
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Router) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Inspect = Box::new(move |r| {
            let _ = tx.send(f(r));
        });
        self.events.send(Event::Inspect(job)).await.ok()?;
        rx.await.ok()
    }

    /// A share link was revoked: its users are closed and it cannot join again (see
    /// [`Router::revoke_link`]). Queued in order with everything else; `false` if the session
    /// has shut down or its queue is full.
    pub fn revoke_link(&self, link: String) -> bool {
        self.events.try_send(Event::RevokeLink(link)).is_ok()
    }

    /// Sends `msg` to every user of a shared session (see [`Router::announce`]). Queued in order
    /// with everything else; `false` if the session has shut down or its queue is full.
    pub fn announce(&self, msg: ServerMessage) -> bool {
        self.events.try_send(Event::Announce(msg)).is_ok()
    }

    /// Closes every connection (1001, "going away") and stops the router task.
    pub async fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown).await;
    }

    /// Serves one upgraded WebSocket until it closes.
    pub async fn run_connection(&self, ws: WebSocket, role: Role, remote: Option<IpAddr>) {
        self.run(ws, role, remote, None).await
    }

    async fn run(
        &self,
        ws: WebSocket,
        role: Role,
        remote: Option<IpAddr>,
        identity: Option<PlayerIdentity>,
    ) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let span = info_span!("conn", conn = conn.0, ?role);
        self.connection(ws, conn, role, remote, identity)
            .instrument(span)
            .await
    }

    async fn connection(
        &self,
        mut ws: WebSocket,
        conn: ConnId,
        role: Role,
        remote: Option<IpAddr>,
        identity: Option<PlayerIdentity>,
    ) {
        let (queue, mut outbound) = mpsc::channel(self.limits.send_queue);
        let connect = Event::Connect {
            conn,
            role,
            remote,
            identity,
            queue,
        };
        if self.events.send(connect).await.is_err() {
            return;
        }
        debug!("connected");
        let write_timeout = self.limits.write_timeout;
        let idle_timeout = self.limits.idle_timeout;
        let mut pings = tokio::time::interval(idle_timeout / 3);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pings.reset();
        let mut last_heard = Instant::now();
        let mut tell_router = true;
        loop {
            tokio::select! {
                _ = pings.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        debug!(?idle_timeout, "peer silent (no answer to pings): closing");
                        let frame = CloseFrame {
                            code: axum::extract::ws::close_code::AWAY,
                            reason: "no answer to pings".into(),
                        };
                        Box::pin(close_gracefully(&mut ws, Some(frame), write_timeout)).await;
                        break;
                    }
                    if !write(&mut ws, Message::Ping(Default::default()), write_timeout).await {
                        break;
                    }
                }
                out = outbound.recv() => match out {
                    Some(Outbound::Msg(msg)) => {
                        match Box::pin(write_burst(&mut ws, msg, &mut outbound, write_timeout)).await {
                            Burst::Written => {}
                            Burst::Failed => break,
                            Burst::ThenClose(frame) => {
                                Box::pin(close_gracefully(&mut ws, frame, write_timeout)).await;
                                tell_router = false;
                                break;
                            }
                        }
                    }
                    Some(Outbound::Close(close)) => {
                        let (code, reason) = *close;
                        let frame = code.map(|code| CloseFrame { code, reason: reason.into() });
                        Box::pin(close_gracefully(&mut ws, frame, write_timeout)).await;
                        tell_router = false;
                        break;
                    }
                    // The router dropped us: slow reader, or shutdown.
                    None => {
                        tell_router = false;
                        break;
                    }
                },
                incoming = ws.recv() => {
                    last_heard = Instant::now();
                    let event = match incoming {
                        Some(Ok(Message::Text(text))) => parse(conn, text.as_str()),
                        Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                            Ok(text) => parse(conn, text),
                            Err(_) => Event::Invalid {
                                conn,
                                error: MessageError::InvalidJson("binary frame that is not UTF-8 text".into()),
                            },
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite queued the reply to the peer's close; send it.
                            let _ = tokio::time::timeout(write_timeout, ws.flush()).await;
                            break;
                        }
                        None => break,
                        Some(Err(err)) if is_too_big(&err) => {
                            let reason = format!("message larger than {} bytes", self.limits.max_message_size);
                            let frame = CloseFrame { code: close_code::TOO_BIG, reason: reason.into() };
                            Box::pin(close_gracefully(&mut ws, Some(frame), write_timeout)).await;
                            let limit = self.limits.max_message_size;
                            let _ = self.events.send(Event::TooBig { conn, limit }).await;
                            tell_router = false;
                            break;
                        }
                        Some(Err(err)) => {
                            debug!(%err, "read failed");
                            break;
                        }
                    };
                    if self.events.send(event).await.is_err() {
                        tell_router = false;
                        break;
                    }
                }
            }
        }
        if tell_router {
            let _ = self.events.send(Event::Disconnect { conn }).await;
        }
        debug!("disconnected");
    }
}

fn parse(conn: ConnId, text: &str) -> Event {
    match ClientMessage::from_json(text) {
        Ok(msg) => Event::Message { conn, msg },
        Err(error) => Event::Invalid { conn, error },
    }
}

enum Burst {
    Written,
    Failed,
    /// The router closed the connection after the messages written.
    ThenClose(Option<CloseFrame>),
}

/// Writes `first` and whatever else is already queued, then flushes once: a burst costs one
/// system call instead of one per message.
async fn write_burst(
    ws: &mut WebSocket,
    first: Box<ServerMessage>,
    outbound: &mut mpsc::Receiver<Outbound>,
    limit: Duration,
) -> Burst {
    let mut next = Some(first);
    let mut then = Burst::Written;
    while let Some(msg) = next.take() {
        let text = Utf8Bytes::from(msg.to_json());
        if !matches!(
            tokio::time::timeout(limit, ws.feed(Message::Text(text))).await,
            Ok(Ok(()))
        ) {
            return Burst::Failed;
        }
        match outbound.try_recv() {
            Ok(Outbound::Msg(m)) => next = Some(m),
            Ok(Outbound::Close(close)) => {
                let (code, reason) = *close;
                then = Burst::ThenClose(code.map(|code| CloseFrame {
                    code,
                    reason: reason.into(),
                }));
            }
            Err(_) => {}
        }
    }
    if !matches!(tokio::time::timeout(limit, ws.flush()).await, Ok(Ok(()))) {
        return Burst::Failed;
    }
    then
}

async fn write(ws: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, ws.send(msg)).await, Ok(Ok(())))
}

/// How long a closing connection waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Sends a close frame, then reads (and discards) until the peer replies or the linger time is
/// up. Dropping the socket at once could reset the connection before the peer reads the close
/// frame, if it was still sending: it would see a reset instead of our code and reason.
async fn close_gracefully(ws: &mut WebSocket, frame: Option<CloseFrame>, write_timeout: Duration) {
    if !write(ws, Message::Close(frame), write_timeout).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = ws.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn is_too_big(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn run_router(
    mut router: Router,
    mut events: mpsc::Receiver<Event>,
    observer: Option<mpsc::UnboundedSender<SessionEvent>>,
) {
    let mut queues: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    let mut batch = Vec::with_capacity(256);
    loop {
        let deadline = router.poll_timeout();
        let closed = tokio::select! {
            // recv_many returns 0 only once every sender is gone: nobody is left to serve.
            n = events.recv_many(&mut batch, 256) => n == 0,
            _ = sleep_until(deadline) => false,
        };
        if closed {
            break;
        }
        let now = Instant::now();
        router.handle_timeout(now);
        for event in batch.drain(..) {
            match event {
                Event::Connect {
                    conn,
                    role,
                    remote,
                    identity,
                    queue,
                } => {
                    queues.insert(conn, queue);
                    match identity {
                        Some(id) if role == Role::Player => {
                            router.connect_player(now, conn, remote, id)
                        }
                        _ => router.connect(now, conn, role, remote),
                    }
                }
                Event::Message { conn, msg } => router.message(now, conn, msg),
                Event::Invalid { conn, error } => router.invalid(conn, &error),
                Event::TooBig { conn, limit } => {
                    queues.remove(&conn);
                    router.too_big(conn, limit);
                }
                Event::Disconnect { conn } => {
                    queues.remove(&conn);
                    router.disconnect(conn);
                }
                Event::Inspect(f) => f(&router),
                Event::RevokeLink(link) => router.revoke_link(&link),
                Event::Announce(msg) => router.announce(&msg),
                Event::Shutdown => {
                    for (_, q) in queues.drain() {
                        let _ = q.try_send(Outbound::Close(Box::new((
                            Some(1001),
                            "server shutting down".into(),
                        ))));
                    }
                    return;
                }
            }
            deliver(&mut router, &mut queues);
        }
        if let Some(observer) = &observer {
            while let Some(e) = router.poll_event() {
                // The observer having gone away is not the router's concern.
                let _ = observer.send(e);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Hands the router's outputs to the connections. A full queue means the client is not reading:
/// it is dropped, and the router told.
fn deliver(router: &mut Router, queues: &mut HashMap<ConnId, mpsc::Sender<Outbound>>) {
    while let Some(out) = router.poll_output() {
        match out {
            Output::Send { to, msg } => {
                let Some(q) = queues.get(&to) else { continue };
                match q.try_send(Outbound::Msg(Box::new(msg))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(
                            conn = to.0,
                            "send queue full (client not reading), dropping connection"
                        );
                        queues.remove(&to);
                        router.disconnect(to);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        queues.remove(&to);
                        router.disconnect(to);
                    }
                }
            }
            Output::Close { conn, code, reason } => {
                if let Some(q) = queues.remove(&conn) {
                    let _ = q.try_send(Outbound::Close(Box::new((code, reason))));
                }
            }
        }
    }
}
