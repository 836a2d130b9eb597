//! The tokio shell around the [`Router`]: one task owns the router and drives it; each WebSocket
//! connection is one task that parses what it reads and writes what it is sent.
//!
//! ```text
//!  connection task ──Event (parsed message)──▶ router task ──Outbound (bounded queue)──▶ connection task
//! ```
//!
//! A player whose queue is full (a client that does not read) is dropped, not buffered: its
//! queue sender is discarded, which ends its task, and the router treats it as gone. A streamer
//! (or an SFU) whose queue is full is not dropped for it: its messages are held in order by the
//! [`Backlog`] and the players (and SFUs) whose messages are held stop being read (an
//! `Outbound::Pause` through their own queue) until it has taken them (see
//! [`crate::backpressure`]); it is closed only as gone (no byte taken for the write timeout, or the
//! backlog's total limit reached).
//!
//! A close (the router's, the backlog's, or the connection's own) always has a defined end: its
//! frame is queued after what is queued for the connection even if the queue is full (what is
//! queued for a stalled streamer is discarded first), and the connection task learns of it at
//! once, even in the middle of a write to a peer that takes nothing. From then on it has the
//! write timeout ([`Limits::write_timeout`], not a streamer's longer one) to get the close frame
//! out; past it the connection is dropped without one, with a rate-limited warning and
//! `pxs_signalling_closes_undelivered_total`.

use crate::backpressure::{Action, Backlog, BacklogLimits};
use crate::metrics::{LogGate, Stats};
use crate::queue::{self, TryRecvError, TrySendError};
use crate::router::{
    ConnId, Output, Payload, PlayerIdentity, Role, Router, RouterConfig, SessionEvent, close_code,
};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use pxs_protocol::signalling::{ClientMessage, MessageError, ServerMessage};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

/// Per-connection limits of the shell.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket message acted on, in bytes. A player's larger message (and frame) closes
    /// it with 1009; a streamer's (or an SFU's) is read, logged and dropped, up to
    /// [`Limits::streamer_max_message_size`].
    pub max_message_size: usize,
    /// Largest WebSocket message (and frame) a streamer or an SFU may send without being closed
    /// (1009): a larger one cannot be skipped without reading it whole.
    pub streamer_max_message_size: usize,
    /// Messages queued to one connection. A player whose queue is full is dropped as a slow
    /// reader; a streamer's (or an SFU's) messages are then held ([`Limits::backlog`]).
    pub send_queue: usize,
    /// What may be held for a streamer whose queue is full (see [`crate::backpressure`]).
    pub backlog: BacklogLimits,
    /// A single write to a player that takes longer than this drops the connection. A streamer
    /// (or an SFU) gets [`Limits::idle_timeout`] if that is longer: one that takes no byte for as
    /// long would be closed as silent anyway, and a short stall must not end its session. A
    /// connection being closed, whatever its role, gets this long from the close's decision to
    /// take its close frame (and what was queued before it); past it, it is dropped without one,
    /// with a warning and `pxs_signalling_closes_undelivered_total`.
    pub write_timeout: Duration,
    /// A peer from which no frame (a message, or the pong to our ping) has arrived for this long
    /// is closed with 1001: a vanished client must not hold its socket. The server pings every
    /// third of it, so a live peer (browsers and UE answer pings) is never silent that long.
    /// A player paused for its streamer is not read, so not held to it while paused. A streamer
    /// (or an SFU) draining a backlog answers late (our pings wait behind it): a write to it that
    /// had to wait and completed counts as hearing from it.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 64 * 1024,
            streamer_max_message_size: 1024 * 1024,
            send_queue: 1024,
            backlog: BacklogLimits::default(),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The largest message (and frame) a connection of `role` may send before it is closed.
    pub fn frame_limit(&self, role: Role) -> usize {
        match role {
            Role::Player => self.max_message_size,
            Role::Streamer | Role::Sfu => self.streamer_max_message_size.max(self.max_message_size),
        }
    }

    /// How long one write to a connection of `role` may take.
    pub fn write_timeout(&self, role: Role) -> Duration {
        match role {
            Role::Player => self.write_timeout,
            Role::Streamer | Role::Sfu => self.write_timeout.max(self.idle_timeout),
        }
    }
}

/// What the router hands a connection. Boxed so that the queue's slots stay small: tokio
/// allocates a block of them per idle connection.
enum Outbound {
    Msg(Box<Payload>),
    Close(Box<(Option<u16>, String)>),
    /// Stop (`true`) or start again (`false`) reading the peer: a player feeding a stalled
    /// streamer.
    Pause(bool),
}

type Inspect = Box<dyn FnOnce(&Router) + Send>;

enum Event {
    Connect {
        conn: ConnId,
        role: Role,
        remote: Option<IpAddr>,
        /// A user of a shared session (players only).
        identity: Option<PlayerIdentity>,
        queue: queue::Sender<Outbound>,
    },
    Message {
        conn: ConnId,
        msg: ClientMessage,
        /// The frame's text, for a message the router may relay as it came.
        text: Option<Utf8Bytes>,
    },
    Invalid {
        conn: ConnId,
        error: MessageError,
    },
    TooBig {
        conn: ConnId,
        limit: usize,
    },
    /// A message over `max_message_size` read whole (a streamer's; see [`Router::oversized`]).
    Oversized {
        conn: ConnId,
        size: usize,
        limit: usize,
    },
    Disconnect {
        conn: ConnId,
    },
    /// A write to this streamer (or SFU) took the whole write timeout: it is being closed.
    WriteTimedOut {
        conn: ConnId,
    },
    /// A close frame (`code`; `None`: without a status) could not be written to this connection
    /// within the write timeout: it was dropped without one.
    CloseUndelivered {
        conn: ConnId,
        role: Role,
        code: Option<u16>,
    },
    Inspect(Inspect),
    Stats(oneshot::Sender<Stats>),
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
        tokio::spawn(run_router(Router::new(config), rx, None, limits.backlog));
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
        tokio::spawn(run_router(router, rx, Some(events_tx), limits.backlog));
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
        let frame_limit = self.limits.frame_limit(role);
        upgrade
            .max_message_size(frame_limit)
            .max_frame_size(frame_limit)
            .read_buffer_size(match role {
                Role::Player => 1024,
                Role::Streamer | Role::Sfu => 8192,
            })
            .write_buffer_size(16 * 1024)
            .on_upgrade(move |ws| {
                signalling.spawn_connection(ws, role, remote, identity, ());
                std::future::ready(())
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

    /// The session's counters (see [`Stats`]); `None` if the session has shut down.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Stats(tx)).await.ok()?;
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
        let conn = self.next_conn();
        let span = info_span!("conn", conn = conn.0, ?role);
        connection(self.clone(), ws, conn, role, remote, None, ())
            .instrument(span)
            .await
    }

    /// Serves one upgraded WebSocket in a task of its own, holding `guard` (a per-address slot,
    /// say) until it closes. The task's future is the connection's alone: the upgrade's task,
    /// which spawns it, ends at once, so an idle connection does not also keep that one's state
    /// (about 1.8 KB).
    pub fn spawn_connection<G: Send + 'static>(
        &self,
        ws: WebSocket,
        role: Role,
        remote: Option<IpAddr>,
        identity: Option<PlayerIdentity>,
        guard: G,
    ) {
        let conn = self.next_conn();
        let span = info_span!("conn", conn = conn.0, ?role);
        let task = connection(self.clone(), ws, conn, role, remote, identity, guard);
        tokio::spawn(task.instrument(span));
    }

    fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Hands `event` to the router task; `false` if it is gone. When its queue has room (the
    /// usual case) this neither waits nor allocates; else the wait is boxed. Either way the event
    /// is not part of the awaiting future, which keeps every connection task's state small.
    fn tell(&self, event: Event) -> impl Future<Output = bool> + Send + '_ {
        let sent = match self.events.try_send(event) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Full(event)) => Err(Box::pin(self.events.send(event))),
        };
        async move {
            match sent {
                Ok(sent) => sent,
                Err(waiting) => waiting.await.is_ok(),
            }
        }
    }

    /// What to tell the router task about a write begun at `started` that failed. If the router
    /// had asked this connection to close, its close frame is lost with it. Else one to a
    /// streamer (or an SFU) that took the whole write timeout means it took no byte for that
    /// long: the router task counts and reports it.
    fn failed_write(
        &self,
        conn: ConnId,
        role: Role,
        started: Instant,
        outbound: &mut queue::Receiver<Outbound>,
    ) -> Option<Event> {
        if outbound.closing_since().is_some() {
            // The close is the last thing queued: its code, for the report.
            let code = loop {
                match outbound.try_recv() {
                    Ok(Outbound::Close(close)) => break close.0,
                    Ok(_) => {}
                    Err(_) => break None,
                }
            };
            return Some(Event::CloseUndelivered { conn, role, code });
        }
        (role != Role::Player && started.elapsed() >= self.limits.write_timeout(role))
            .then_some(Event::WriteTimedOut { conn })
    }
}

/// One connection's task: registers it with the router, then reads what the peer sends and
/// writes what the router queues for it until either side closes. Its state is what every idle
/// player costs: the rare paths (a burst of writes, a close, an event that must wait for the
/// router task) are boxed while they run.
async fn connection<G>(
    sig: Signalling,
    mut ws: WebSocket,
    conn: ConnId,
    role: Role,
    remote: Option<IpAddr>,
    identity: Option<PlayerIdentity>,
    guard: G,
) {
    let _guard = guard;
    let (queue, mut outbound) = queue::channel(sig.limits.send_queue);
    let connect = Event::Connect {
        conn,
        role,
        remote,
        identity,
        queue,
    };
    if !sig.tell(connect).await {
        return;
    }
    debug!("connected");
    let write_timeout = sig.limits.write_timeout(role);
    // A connection being closed gets the base write timeout, whatever its role.
    let close_timeout = sig.limits.write_timeout;
    let idle_timeout = sig.limits.idle_timeout;
    let max_message_size = sig.limits.max_message_size;
    let ping_every = idle_timeout / 3;
    let mut ping = pin!(tokio::time::sleep(ping_every));
    let mut last_heard = Instant::now();
    let mut tell_router = true;
    // A player feeding a stalled streamer is not read (see `crate::backpressure`).
    let mut paused = false;
    loop {
        tokio::select! {
            () = &mut ping => {
                ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
                // A paused peer is not read, so its pongs are not seen: it is not silent.
                if !paused && last_heard.elapsed() >= idle_timeout {
                    debug!(?idle_timeout, "peer silent (no answer to pings): closing");
                    let frame = CloseFrame {
                        code: axum::extract::ws::close_code::AWAY,
                        reason: "no answer to pings".into(),
                    };
                    let code = Some(frame.code);
                    let closed = close_gracefully(&mut ws, Some(frame), &outbound, close_timeout);
                    if !Box::pin(closed).await {
                        sig.tell(Event::CloseUndelivered { conn, role, code }).await;
                    }
                    break;
                }
                let started = Instant::now();
                let ping = write(&mut ws, Message::Ping(Default::default()), write_timeout, &outbound, close_timeout);
                if !Box::pin(ping).await {
                    if let Some(event) = sig.failed_write(conn, role, started, &mut outbound) {
                        sig.tell(event).await;
                    }
                    break;
                }
            }
            out = outbound.recv() => match out {
                Some(Outbound::Msg(msg)) => {
                    let was_paused = paused;
                    let started = Instant::now();
                    let burst = write_burst(&mut ws, msg, &mut outbound, &mut paused, write_timeout, close_timeout);
                    let burst = Box::pin(burst).await;
                    if was_paused && !paused {
                        last_heard = Instant::now();
                    }
                    match burst {
                        // A streamer slowly draining a backlog answers our pings late (they
                        // wait behind it): a write that had to wait for it and completed
                        // shows that it is taking bytes.
                        Burst::Written
                            if role != Role::Player && started.elapsed() >= WRITE_WAITED =>
                        {
                            last_heard = Instant::now();
                        }
                        Burst::Written => {}
                        Burst::Failed => {
                            if let Some(event) = sig.failed_write(conn, role, started, &mut outbound) {
                                sig.tell(event).await;
                            }
                            if outbound.closing_since().is_some() {
                                tell_router = false;
                            }
                            break;
                        }
                        Burst::ThenClose(frame) => {
                            let code = frame.as_ref().map(|f| f.code);
                            let closed = close_gracefully(&mut ws, frame, &outbound, close_timeout);
                            if !Box::pin(closed).await {
                                sig.tell(Event::CloseUndelivered { conn, role, code }).await;
                            }
                            tell_router = false;
                            break;
                        }
                    }
                }
                Some(Outbound::Pause(p)) => {
                    if paused && !p {
                        last_heard = Instant::now();
                    }
                    paused = p;
                }
                Some(Outbound::Close(close)) => {
                    let (code, reason) = *close;
                    let frame = code.map(|code| CloseFrame { code, reason: reason.into() });
                    let closed = close_gracefully(&mut ws, frame, &outbound, close_timeout);
                    if !Box::pin(closed).await {
                        sig.tell(Event::CloseUndelivered { conn, role, code }).await;
                    }
                    tell_router = false;
                    break;
                }
                // The router dropped us: slow reader, or shutdown.
                None => {
                    tell_router = false;
                    break;
                }
            },
            incoming = ws.recv(), if !paused => {
                last_heard = Instant::now();
                let event = match incoming {
                    Some(Ok(Message::Text(text))) if text.len() > max_message_size => {
                        Event::Oversized { conn, size: text.len(), limit: max_message_size }
                    }
                    Some(Ok(Message::Binary(bytes))) if bytes.len() > max_message_size => {
                        Event::Oversized { conn, size: bytes.len(), limit: max_message_size }
                    }
                    Some(Ok(Message::Text(text))) => parse(conn, text),
                    Some(Ok(Message::Binary(bytes))) => match Utf8Bytes::try_from(bytes) {
                        Ok(text) => parse(conn, text),
                        Err(_) => Event::Invalid {
                            conn,
                            error: MessageError::InvalidJson("binary frame that is not UTF-8 text".into()),
                        },
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queued the reply to the peer's close; send it.
                        let _ = Box::pin(tokio::time::timeout(write_timeout, ws.flush())).await;
                        break;
                    }
                    None => break,
                    Some(Err(err)) if is_too_big(&err) => {
                        let limit = sig.limits.frame_limit(role);
                        let reason = format!("message larger than {limit} bytes");
                        let frame = CloseFrame { code: close_code::TOO_BIG, reason: reason.into() };
                        let closed = close_gracefully(&mut ws, Some(frame), &outbound, close_timeout);
                        if !Box::pin(closed).await {
                            let code = Some(close_code::TOO_BIG);
                            sig.tell(Event::CloseUndelivered { conn, role, code }).await;
                        }
                        sig.tell(Event::TooBig { conn, limit }).await;
                        tell_router = false;
                        break;
                    }
                    Some(Err(err)) => {
                        debug!(%err, "read failed");
                        break;
                    }
                };
                if !sig.tell(event).await {
                    tell_router = false;
                    break;
                }
            }
        }
    }
    if tell_router {
        sig.tell(Event::Disconnect { conn }).await;
    }
    debug!("disconnected");
}

/// Parses a frame. The text of a message the router may relay (an offer, an answer, an ICE
/// candidate) goes along: it is sent on as it came, without serializing the message again.
fn parse(conn: ConnId, text: Utf8Bytes) -> Event {
    match ClientMessage::from_json(text.as_str()) {
        Ok(msg) => {
            let relayed = matches!(
                msg,
                ClientMessage::Offer(_) | ClientMessage::Answer(_) | ClientMessage::IceCandidate(_)
            );
            Event::Message {
                conn,
                msg,
                text: relayed.then_some(text),
            }
        }
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
/// system call instead of one per message. A pause met on the way is applied to `paused`.
async fn write_burst(
    ws: &mut WebSocket,
    first: Box<Payload>,
    outbound: &mut queue::Receiver<Outbound>,
    paused: &mut bool,
    limit: Duration,
    close_timeout: Duration,
) -> Burst {
    let mut next = Some(first);
    let mut then = Burst::Written;
    while let Some(msg) = next.take() {
        let text = (*msg).into_text();
        let fed = within(ws.feed(Message::Text(text)), limit, outbound, close_timeout).await;
        if !matches!(fed, Some(Ok(()))) {
            return Burst::Failed;
        }
        loop {
            match outbound.try_recv() {
                Ok(Outbound::Msg(m)) => next = Some(m),
                Ok(Outbound::Pause(p)) => {
                    *paused = p;
                    continue;
                }
                Ok(Outbound::Close(close)) => {
                    let (code, reason) = *close;
                    then = Burst::ThenClose(code.map(|code| CloseFrame {
                        code,
                        reason: reason.into(),
                    }));
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            break;
        }
    }
    let flushed = within(ws.flush(), limit, outbound, close_timeout).await;
    if !matches!(flushed, Some(Ok(()))) {
        return Burst::Failed;
    }
    then
}

/// Writes and flushes `msg` within `limit` (and the close's bound, see [`within`]).
async fn write(
    ws: &mut WebSocket,
    msg: Message,
    limit: Duration,
    outbound: &queue::Receiver<Outbound>,
    close_timeout: Duration,
) -> bool {
    matches!(
        within(ws.send(msg), limit, outbound, close_timeout).await,
        Some(Ok(()))
    )
}

/// Runs `io` (a write) for at most `limit`, and not past `close_timeout` after the router asked
/// this connection to close: the router may ask while the write waits for a peer that takes
/// nothing, and the close must not wait behind it for longer (a streamer's `limit` is its idle
/// timeout). `None`: out of time.
async fn within<F: Future>(
    io: F,
    limit: Duration,
    outbound: &queue::Receiver<Outbound>,
    close_timeout: Duration,
) -> Option<F::Output> {
    let mut io = pin!(io);
    let mut deadline = tokio::time::Instant::now() + limit;
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    let mut closing = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = io.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !closing && let Poll::Ready(since) = outbound.poll_closing(cx) {
            closing = true;
            let by = tokio::time::Instant::from_std(since + close_timeout);
            if by < deadline {
                deadline = by;
                timer.as_mut().reset(by);
            }
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A write to a streamer (or an SFU) that took this long waited for it to take bytes: when it
/// completes, the peer is alive even if its answer to our ping is still queued behind them.
const WRITE_WAITED: Duration = Duration::from_millis(50);

/// How long a closing connection waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Sends a close frame, then reads (and discards) until the peer replies or the linger time is
/// up. Dropping the socket at once could reset the connection before the peer reads the close
/// frame, if it was still sending: it would see a reset instead of our code and reason.
/// `false`: the close frame could not be written within `limit` (and the close's bound, see
/// [`within`]); the connection is dropped without it.
async fn close_gracefully(
    ws: &mut WebSocket,
    frame: Option<CloseFrame>,
    outbound: &queue::Receiver<Outbound>,
    limit: Duration,
) -> bool {
    if !write(ws, Message::Close(frame), limit, outbound, limit).await {
        return false;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = ws.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    true
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

/// One connection as the router task knows it.
struct Peer {
    queue: queue::Sender<Outbound>,
    role: Role,
}

/// Resolves when a stalled streamer's queue has room for one more message (`Err`: the
/// connection is gone).
type Room = queue::Room<Outbound>;

/// The router task's state besides the router: the connections' queues, the messages held for
/// stalled streamers and the wake-ups that say when those have room.
struct Shell {
    peers: HashMap<ConnId, Peer>,
    backlog: Backlog,
    rooms: HashMap<ConnId, Room>,
    /// Pause (`true`) or resume for an SFU whose own queue was full, sent first when it has room.
    pauses: HashMap<ConnId, bool>,
    /// When each paused connection was paused (its rate limit is credited for the time).
    paused_at: HashMap<ConnId, Instant>,
    slow_players_closed: u64,
    slow_log: LogGate,
    /// Streamers closed on a write timeout, as reported by their connection tasks.
    write_timeouts: u64,
    write_timeout_log: LogGate,
    /// Close frames that could not be written, as reported by the connection tasks.
    closes_undelivered: u64,
    close_undelivered_log: LogGate,
}

enum Wake {
    Events(usize),
    Timer,
    /// A stalled streamer's queue has room (`false`: the connection is gone).
    Room(ConnId, bool),
}

/// The first stalled streamer with room in its queue.
async fn any_room(rooms: &mut HashMap<ConnId, Room>) -> (ConnId, bool) {
    std::future::poll_fn(|cx| {
        for (conn, room) in rooms.iter_mut() {
            if let Poll::Ready(r) = Pin::new(room).poll(cx) {
                return Poll::Ready((*conn, r.is_ok()));
            }
        }
        Poll::Pending
    })
    .await
}

async fn run_router(
    mut router: Router,
    mut events: mpsc::Receiver<Event>,
    observer: Option<mpsc::UnboundedSender<SessionEvent>>,
    limits: BacklogLimits,
) {
    let mut shell = Shell {
        peers: HashMap::new(),
        backlog: Backlog::new(limits),
        rooms: HashMap::new(),
        pauses: HashMap::new(),
        paused_at: HashMap::new(),
        slow_players_closed: 0,
        slow_log: LogGate::default(),
        write_timeouts: 0,
        write_timeout_log: LogGate::default(),
        closes_undelivered: 0,
        close_undelivered_log: LogGate::default(),
    };
    let mut batch = Vec::with_capacity(256);
    loop {
        let deadline = router.poll_timeout();
        let wake = tokio::select! {
            n = events.recv_many(&mut batch, 256) => Wake::Events(n),
            _ = sleep_until(deadline) => Wake::Timer,
            (conn, open) = any_room(&mut shell.rooms), if !shell.rooms.is_empty() => {
                Wake::Room(conn, open)
            }
        };
        let now = Instant::now();
        match wake {
            // recv_many returns 0 only once every sender is gone: nobody is left to serve.
            Wake::Events(0) => break,
            Wake::Events(_) => {}
            Wake::Timer => {}
            Wake::Room(conn, open) => {
                shell.rooms.remove(&conn);
                shell.room(&mut router, now, conn, open);
            }
        }
        router.handle_timeout(now);
        deliver(&mut router, &mut shell, now, None);
        for event in batch.drain(..) {
            let mut origin = None;
            match event {
                Event::Connect {
                    conn,
                    role,
                    remote,
                    identity,
                    queue,
                } => {
                    shell.peers.insert(conn, Peer { queue, role });
                    match identity {
                        Some(id) if role == Role::Player => {
                            router.connect_player(now, conn, remote, id)
                        }
                        _ => router.connect(now, conn, role, remote),
                    }
                }
                Event::Message { conn, msg, text } => {
                    origin = Some(conn);
                    match text {
                        Some(text) => router.message_text(now, conn, msg, text),
                        None => router.message(now, conn, msg),
                    }
                }
                Event::Invalid { conn, error } => router.invalid(conn, &error),
                Event::TooBig { conn, limit } => {
                    shell.forget(conn);
                    router.too_big(conn, limit);
                }
                Event::Oversized { conn, size, limit } => router.oversized(conn, size, limit),
                Event::Disconnect { conn } => {
                    shell.forget(conn);
                    router.disconnect(conn);
                }
                Event::WriteTimedOut { conn } => {
                    shell.write_timeouts += 1;
                    if let Some(suppressed) = shell.write_timeout_log.admit(now) {
                        warn!(
                            conn = conn.0,
                            suppressed,
                            "streamer closed: a write to it took the whole write timeout (it reads nothing)"
                        );
                    }
                }
                Event::CloseUndelivered { conn, role, code } => {
                    shell.closes_undelivered += 1;
                    if let Some(suppressed) = shell.close_undelivered_log.admit(now) {
                        warn!(
                            conn = conn.0,
                            ?role,
                            code,
                            suppressed,
                            "close frame not delivered: the peer took no bytes within the write timeout; connection dropped without it"
                        );
                    }
                }
                Event::Inspect(f) => f(&router),
                Event::Stats(tx) => {
                    let r = router.stats();
                    let _ = tx.send(Stats {
                        backlog: shell.backlog.stats(),
                        slow_players_closed: shell.slow_players_closed,
                        streamers_write_timeout: shell.write_timeouts,
                        closes_undelivered: shell.closes_undelivered,
                        streamer_invalid_dropped: r.streamer_invalid_dropped,
                        streamer_oversized_dropped: r.streamer_oversized_dropped,
                    });
                }
                Event::RevokeLink(link) => router.revoke_link(&link),
                Event::Announce(msg) => router.announce(&msg),
                Event::Shutdown => {
                    for (conn, p) in shell.peers.drain() {
                        let close = (Some(1001), "server shutting down".into());
                        let stalled = shell.backlog.is_stalled(conn);
                        p.queue
                            .close(Outbound::Close(Box::new(close)), now, stalled);
                    }
                    return;
                }
            }
            deliver(&mut router, &mut shell, now, origin);
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

/// Hands the router's outputs to the connections. `origin`: the connection whose message the
/// router was handling, if any. A player whose queue is full is not reading: it is dropped, and
/// the router told. A streamer's (or an SFU's) message that does not fit is held, and the player
/// that sent it paused (see [`Backlog`]).
fn deliver(router: &mut Router, shell: &mut Shell, now: Instant, origin: Option<ConnId>) {
    loop {
        while let Some(out) = router.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    let Some(role) = shell.peers.get(&to).map(|p| p.role) else {
                        continue;
                    };
                    let msg = Box::new(msg);
                    if role == Role::Player {
                        shell.send_player(router, now, to, Outbound::Msg(msg));
                    } else {
                        shell.send_streamer(router, now, to, msg, origin);
                    }
                }
                Output::Close { conn, code, reason } => {
                    shell.close(now, conn, code, reason);
                }
            }
        }
        // What the backlog asks may make the router speak again (a player closed).
        let mut acted = false;
        while let Some(action) = shell.backlog.poll_action() {
            acted = true;
            match action {
                Action::Pause(p) => shell.pause(router, now, p, true),
                Action::Resume(p) => shell.pause(router, now, p, false),
                Action::Close(p) => {
                    let reason = "the application is busy; try again".into();
                    shell.close(now, p, Some(close_code::TRY_AGAIN_LATER), reason);
                    router.disconnect(p);
                }
                Action::CloseStreamer(s) => {
                    let reason = "not reading: too many messages held for it".into();
                    shell.close(now, s, Some(axum::extract::ws::close_code::AWAY), reason);
                    router.disconnect(s);
                }
            }
        }
        if !acted {
            return;
        }
    }
}

impl Shell {
    /// Closes a connection: its close goes out after what is queued for it, even if its queue is
    /// full, and its task is told at once (a write waiting for a peer that takes nothing is
    /// bounded from now; see [`Limits::write_timeout`]). What is queued for a stalled streamer
    /// is discarded first, as what was held for it: it takes nothing, and its close should not
    /// wait behind it.
    fn close(&mut self, now: Instant, conn: ConnId, code: Option<u16>, reason: String) {
        let stalled = self.backlog.is_stalled(conn);
        if let Some(p) = self.forget(conn) {
            let discarded = p
                .queue
                .close(Outbound::Close(Box::new((code, reason))), now, stalled);
            self.backlog.discarded(discarded);
        }
    }

    /// Forgets a connection: its queue (returned), and what the backlog held for it or paused on
    /// its account.
    fn forget(&mut self, conn: ConnId) -> Option<Peer> {
        self.rooms.remove(&conn);
        self.pauses.remove(&conn);
        self.paused_at.remove(&conn);
        self.backlog.forget(conn);
        self.peers.remove(&conn)
    }

    /// Stops (`true`) or starts again reading a player or an SFU feeding a stalled streamer. An
    /// SFU is never dropped for a full queue: the latest word waits for room there.
    fn pause(&mut self, router: &mut Router, now: Instant, conn: ConnId, paused: bool) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if paused {
            self.paused_at.entry(conn).or_insert(now);
        } else if let Some(at) = self.paused_at.remove(&conn) {
            router.resumed(conn, now.saturating_duration_since(at));
        }
        if peer.role == Role::Player {
            return self.send_player(router, now, conn, Outbound::Pause(paused));
        }
        if let Some(p) = self.pauses.get_mut(&conn) {
            *p = paused;
            return;
        }
        match peer.queue.try_send(Outbound::Pause(paused)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.pauses.insert(conn, paused);
                self.rooms.entry(conn).or_insert_with(|| peer.queue.room(1));
            }
            Err(TrySendError::Closed(_)) => {
                self.forget(conn);
                router.disconnect(conn);
            }
        }
    }

    /// Queues `out` to a player; one that does not read (its queue is full) is dropped.
    fn send_player(&mut self, router: &mut Router, now: Instant, to: ConnId, out: Outbound) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        match peer.queue.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.slow_players_closed += 1;
                if let Some(suppressed) = self.slow_log.admit(now) {
                    warn!(
                        conn = to.0,
                        suppressed, "send queue full (player not reading), dropping connection"
                    );
                }
                self.forget(to);
                router.disconnect(to);
            }
            Err(TrySendError::Closed(_)) => {
                self.forget(to);
                router.disconnect(to);
            }
        }
    }

    /// Queues `msg` to a streamer or an SFU, or holds it there while it is stalled. `origin`:
    /// the connection whose message the router was handling. A player's message is held on its
    /// account (the player is paused); the router's own, an SFU's or the streamer's own (a
    /// pong) are held without pausing anyone.
    fn send_streamer(
        &mut self,
        router: &mut Router,
        now: Instant,
        to: ConnId,
        msg: Box<Payload>,
        origin: Option<ConnId>,
    ) {
        let from = origin.filter(|o| self.peers.get(o).is_some_and(|p| p.role == Role::Player));
        let sfu = origin.filter(|o| self.peers.get(o).is_some_and(|p| p.role == Role::Sfu));
        if self.backlog.is_stalled(to) {
            self.backlog.hold(now, to, msg, from);
            if let Some(sfu) = sfu {
                self.backlog.pause_for(to, sfu);
            }
            return;
        }
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        match peer.queue.try_send(Outbound::Msg(msg)) {
            Ok(()) => {}
            Err(TrySendError::Full(Outbound::Msg(msg))) => {
                self.rooms.insert(to, peer.queue.room(1));
                self.backlog.hold(now, to, msg, from);
                if let Some(sfu) = sfu {
                    self.backlog.pause_for(to, sfu);
                }
            }
            Err(_) => {
                self.forget(to);
                router.disconnect(to);
            }
        }
    }

    /// A stalled streamer's queue has room (`open`; `false`: the connection is gone): its held
    /// messages go out in order, as many as fit. With nothing left held and half its queue free,
    /// the stall ends and its players are read again.
    fn room(&mut self, router: &mut Router, now: Instant, conn: ConnId, open: bool) {
        let gone = |shell: &mut Shell, router: &mut Router| {
            shell.forget(conn);
            router.disconnect(conn);
            deliver(router, shell, now, None);
        };
        let Some(peer) = self.peers.get(&conn).filter(|_| open) else {
            return gone(self, router);
        };
        // An SFU's own pause or resume that did not fit goes first.
        if let Some(p) = self.pauses.remove(&conn) {
            match peer.queue.try_send(Outbound::Pause(p)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.pauses.insert(conn, p);
                    self.rooms.insert(conn, peer.queue.room(1));
                    return;
                }
                Err(TrySendError::Closed(_)) => return gone(self, router),
            }
        }
        while let Some(msg) = self.backlog.pop(conn) {
            match peer.queue.try_send(Outbound::Msg(msg)) {
                Ok(()) => {}
                Err(TrySendError::Full(Outbound::Msg(msg))) => {
                    self.backlog.unpop(conn, msg);
                    break;
                }
                Err(_) => return gone(self, router),
            }
        }
        // The stall ends once nothing is held and half the queue is free: until then, the next
        // wake-up is for room for one held message, or for that half.
        let half = peer.queue.capacity().div_ceil(2);
        let free = peer.queue.capacity().saturating_sub(peer.queue.len());
        if self.backlog.held(conn) > 0 {
            self.rooms.insert(conn, peer.queue.room(1));
        } else if free >= half {
            self.backlog.resume(now, conn);
            deliver(router, self, now, None);
        } else {
            self.rooms.insert(conn, peer.queue.room(half));
        }
    }
}
