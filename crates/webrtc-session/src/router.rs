//! The signalling router: a sans-IO core that decides everything about who is connected, who is
//! subscribed to whom and where each message goes.
//!
//! Inputs come in with the current time (`connect`, `message`, `invalid`, `disconnect`,
//! `handle_timeout`); outputs ([`Output::Send`], [`Output::Close`]) are queued for the shell to
//! act on with [`Router::poll_output`], and [`Router::poll_timeout`] says when to call
//! `handle_timeout` next. The router never reads the clock, spawns tasks or touches sockets.
//!
//! Connections have one of three roles, fixed by the port they came in on:
//!
//! ```text
//!   streamer ──endpointId──▶ identified (listed, subscribable)
//!      │                        ▲
//!      └── no endpointId within legacy_timeout ──▶ legacy id `__LEGACY_STREAMER__n`
//!
//!   player ──subscribe(id)──▶ subscribed ──unsubscribe / streamer gone──▶ unsubscribed
//!
//!   SFU = both: a player of one streamer and a streamer to players.
//! ```
//!
//! The behaviour follows Epic's reference server (`docs/webrtc-session.md` lists what is the same
//! and what differs on purpose), with the routing fix of its PR #920: a streamer can address only
//! players subscribed to it.

use crate::metrics::LogGate;
use crate::turn::{self, TurnConfig};
use crate::users::{self, Command as UserCommand, Joining, Users};
use axum::extract::ws::Utf8Bytes;
use pxs_protocol::signalling::{
    Answer, ChatLine, ClientMessage, ControlAction, IceCandidate, MessageError, PROTOCOL_VERSION,
    PlayerId, Relay, ServerMessage, SessionUser,
};
use pxs_protocol::signalling_api::{EndpointType, PlayerInfo, StreamerInfo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A connection, numbered by the shell in the order connections arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Streamer,
    Player,
    Sfu,
}

/// WebSocket close codes we use.
pub mod close_code {
    /// `disconnectPlayer` from the streamer (as Epic's server).
    pub const KICKED: u16 = 1011;
    /// Policy violation: a player's unparsable frames, message flood.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: nothing to talk to yet, the server is full, or the streamer is too far
    /// behind to take a player's message (see [`crate::backpressure`]).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;
/// The longest streamer id we accept.
pub const MAX_STREAMER_ID: usize = 256;

/// A token bucket: `per_second` messages on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Sent as `config.peerConnectionOptions` to every connection (with its own TURN
    /// credentials when [`RouterConfig::turn`] is set).
    pub peer_connection_options: Value,
    /// Players per streamer; 0 means unlimited (`--max_players`).
    pub max_players: usize,
    /// A streamer that has not sent `endpointId` this long after connecting is registered under a
    /// legacy id (Cirrus's behaviour for UE before 5.1). `None`: never.
    pub legacy_timeout: Option<Duration>,
    /// Per-connection message rate limits; `None`: unlimited.
    pub player_rate: Option<RateLimit>,
    pub streamer_rate: Option<RateLimit>,
    /// The one `endpointId` a streamer may identify with (an embedder that launched the streamer
    /// itself knows it: the session server expects the session id). A streamer asking for
    /// another is closed (1008) before it is listed. `None`: any id (the standalone server).
    pub expected_streamer_id: Option<String>,
    /// Shared sessions (pxs): players that connect with an identity
    /// ([`Router::connect_player`]) are users of their streamer's session, with roles, control
    /// and chat ([`users`]). `None`: none of it, as Epic's server.
    pub users: Option<UsersConfig>,
    /// Time-limited TURN credentials (`--turn_secret`): every `config` a connection gets (on
    /// connect, and again before a shared session's renegotiation) carries, in each TURN entry
    /// of `peer_connection_options`, a `username` and `credential` minted for that connection
    /// at that time ([`turn`]): expiring after [`TurnConfig::ttl`] for a player,
    /// [`TurnConfig::streamer_ttl`] for a streamer or an SFU. STUN entries are left as they
    /// are. `None`: `peer_connection_options` go out as configured.
    pub turn: Option<TurnConfig>,
}

/// The users of shared sessions (see [`RouterConfig::users`]).
#[derive(Clone, Debug)]
pub struct UsersConfig {
    pub limits: users::Limits,
    /// The wall clock (ms since the Unix epoch) at an instant, to date chat messages.
    pub epoch: (Instant, u64),
}

/// Who a player is in a shared session, from the token it joined with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayerIdentity {
    pub name: Option<String>,
    pub role: users::Role,
    /// The share link its token came from, if any.
    pub link: Option<String>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            peer_connection_options: Value::Object(Default::default()),
            max_players: 0,
            legacy_timeout: Some(Duration::from_secs(5)),
            player_rate: Some(RateLimit {
                per_second: 100.0,
                burst: 400.0,
            }),
            streamer_rate: None,
            expected_streamer_id: None,
            users: None,
            turn: None,
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        to: ConnId,
        msg: Payload,
    },
    /// Close the connection. `code: None` sends a close frame without a status (the peer sees
    /// 1005), as Epic's server does when a streamer goes away. The router has already forgotten
    /// the connection.
    Close {
        conn: ConnId,
        code: Option<u16>,
        reason: String,
    },
}

/// A message for a connection, as the router hands it to the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A message the router built, or changed on its way.
    Msg(ServerMessage),
    /// A relayed message that goes out as its sender wrote it: the router changed nothing in it,
    /// or only added the sender's `playerId` in front (see [`Router::message_text`]). Nothing
    /// is parsed back or serialized again: the 3 KB of an SDP are not escaped once more.
    Text { kind: RelayKind, text: Utf8Bytes },
}

/// What a [`Payload::Text`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    Offer,
    Answer,
    IceCandidate,
}

impl Payload {
    /// An ICE candidate (the one kind of message a stalled streamer may lose; see
    /// [`crate::backpressure`]).
    pub fn is_ice_candidate(&self) -> bool {
        matches!(
            self,
            Payload::Msg(ServerMessage::IceCandidate(_))
                | Payload::Text {
                    kind: RelayKind::IceCandidate,
                    ..
                }
        )
    }

    /// The frame's text.
    pub fn into_text(self) -> Utf8Bytes {
        match self {
            Payload::Msg(m) => Utf8Bytes::from(m.to_json()),
            Payload::Text { text, .. } => text,
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            Payload::Msg(m) => m.to_json(),
            Payload::Text { text, .. } => text.as_str().to_owned(),
        }
    }
}

impl From<ServerMessage> for Payload {
    fn from(m: ServerMessage) -> Self {
        Payload::Msg(m)
    }
}

/// What happened in the session, for a program that embeds it and watches (the session server
/// decides readiness and idleness from these). Off unless [`Router::enable_events`] was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A streamer (not an SFU) identified, or was given a legacy id.
    StreamerIdentified { streamer_id: String },
    /// An identified streamer's connection is gone.
    StreamerDisconnected { streamer_id: String },
    /// A player's WebSocket was accepted.
    PlayerConnected { player_id: PlayerId },
    /// A player's WebSocket is gone.
    PlayerDisconnected { player_id: PlayerId },
    /// A player sent `activity`; reported at most once per activity interval per player.
    PlayerActivity { player_id: PlayerId },
}

/// The most a paused connection's bucket may hold once it is read again, in bursts. What piles up
/// while it is not read is bounded by its socket buffers, not by the time: a credit for the
/// whole pause would let a player paused for minutes send thousands of messages at once, far past
/// its limit. Four bursts (1,600 messages at the default 100/s and 400) still take in a browser
/// that kept sending at its rate for 12 s.
pub(crate) const PAUSE_CREDIT_BURSTS: f64 = 4.0;

/// A token bucket's state (see [`RateLimit`]).
#[derive(Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            limit,
            tokens: limit.burst,
            at: now,
        }
    }

    /// Tokens for a time the connection was not read (paused): what it sent meanwhile within its
    /// rate may be read at once, past the burst, up to [`PAUSE_CREDIT_BURSTS`] bursts in all.
    pub(crate) fn credit(&mut self, unread: Duration) {
        let cap = self.limit.burst * PAUSE_CREDIT_BURSTS;
        let credited = self.tokens + unread.as_secs_f64() * self.limit.per_second;
        self.tokens = credited.min(cap).max(self.tokens);
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        // Refilled up to the burst; a credit above it (see `credit`) is kept until spent.
        let cap = self.limit.burst.max(self.tokens);
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct StreamerSide {
    /// `None` until identified (or given a legacy id).
    id: Option<String>,
    /// Listed to players.
    streaming: bool,
    subscribers: BTreeSet<ConnId>,
    /// The session's users, when sessions are shared.
    users: Option<Users>,
}

#[derive(Debug)]
struct PlayerSide {
    id: PlayerId,
    subscribed_to: Option<ConnId>,
    /// When this player's activity was last reported as an event.
    activity_reported: Option<Instant>,
    /// Set for the players of shared sessions (boxed: most players have none).
    identity: Option<Box<PlayerIdentity>>,
}

/// One connection. Most are idle players, so what only a streamer (or an SFU) or a shared
/// session's user needs is boxed: the map of connections holds a slot (and its share of empty
/// slots) of this size per player.
#[derive(Debug)]
struct Conn {
    role: Role,
    remote: Option<IpAddr>,
    bucket: Option<Bucket>,
    streamer: Option<Box<StreamerSide>>,
    player: Option<PlayerSide>,
}

/// The routing core of one signalling server.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    conns: HashMap<ConnId, Conn>,
    /// Streamer-side connections in connection order (the "first streamer" is the first here).
    streamers: BTreeSet<ConnId>,
    streamer_ids: HashMap<String, ConnId>,
    player_ids: HashMap<PlayerId, ConnId>,
    /// Streamers waiting for `endpointId`, with the time they get a legacy id.
    pending: BTreeMap<ConnId, Instant>,
    next_player: u64,
    next_legacy_streamer: u64,
    next_legacy_sfu: u64,
    outputs: std::collections::VecDeque<Output>,
    /// Session events for an embedder; `None` while not enabled.
    events: Option<std::collections::VecDeque<SessionEvent>>,
    activity_interval: Duration,
    /// The time of the input being handled (the users' rate limits read it).
    now: Option<Instant>,
    stats: RouterStats,
    logs: RouterLogs,
}

/// What the router counts (see [`crate::metrics::Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Unparsable messages from streamers and SFUs, dropped.
    pub streamer_invalid_dropped: u64,
    /// Messages from streamers and SFUs over the message size limit, dropped.
    pub streamer_oversized_dropped: u64,
}

#[derive(Debug, Default)]
struct RouterLogs {
    streamer_invalid: LogGate,
    streamer_oversized: LogGate,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            conns: HashMap::new(),
            streamers: BTreeSet::new(),
            streamer_ids: HashMap::new(),
            player_ids: HashMap::new(),
            pending: BTreeMap::new(),
            next_player: 0,
            next_legacy_streamer: 0,
            next_legacy_sfu: 0,
            outputs: Default::default(),
            events: None,
            activity_interval: Duration::ZERO,
            now: None,
            stats: RouterStats::default(),
            logs: RouterLogs::default(),
        }
    }

    /// Starts recording [`SessionEvent`]s for [`Router::poll_event`]. A player's `activity`
    /// messages are reported at most once per `activity_interval`.
    pub fn enable_events(&mut self, activity_interval: Duration) {
        self.events.get_or_insert_with(Default::default);
        self.activity_interval = activity_interval;
    }

    /// The next session event, if events are enabled and one happened.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.as_mut()?.pop_front()
    }

    fn event(&mut self, e: SessionEvent) {
        if let Some(q) = &mut self.events {
            q.push_back(e);
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }

    /// A connection was accepted. Streamers and SFUs get `config` then `identify`; players get
    /// `config`.
    pub fn connect(&mut self, now: Instant, conn: ConnId, role: Role, remote: Option<IpAddr>) {
        self.now = Some(now);
        let rate = match role {
            Role::Player => self.config.player_rate,
            Role::Streamer | Role::Sfu => self.config.streamer_rate,
        };
        let mut c = Conn {
            role,
            remote,
            bucket: rate.map(|r| Bucket::new(r, now)),
            streamer: None,
            player: None,
        };
        if matches!(role, Role::Player | Role::Sfu) {
            let id = PlayerId(format!("Player{}", self.next_player));
            self.next_player += 1;
            self.player_ids.insert(id.clone(), conn);
            if role == Role::Player {
                self.event(SessionEvent::PlayerConnected {
                    player_id: id.clone(),
                });
            }
            c.player = Some(PlayerSide {
                id,
                subscribed_to: None,
                activity_reported: None,
                identity: None,
            });
        }
        if matches!(role, Role::Streamer | Role::Sfu) {
            c.streamer = Some(Box::new(StreamerSide {
                id: None,
                streaming: false,
                subscribers: BTreeSet::new(),
                users: (role == Role::Streamer)
                    .then(|| {
                        self.config
                            .users
                            .as_ref()
                            .map(|u| Users::new(u.limits.clone()))
                    })
                    .flatten(),
            }));
            self.streamers.insert(conn);
            if let Some(t) = self.config.legacy_timeout {
                self.pending.insert(conn, now + t);
            }
        }
        self.conns.insert(conn, c);
        let config = self.config_message(now, conn);
        self.send(conn, config);
        if role != Role::Player {
            self.send(conn, ServerMessage::Identify);
        }
    }

    /// A player of a shared session connects: as [`Router::connect`], and it joins its
    /// streamer's users when it subscribes.
    pub fn connect_player(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: Option<IpAddr>,
        identity: PlayerIdentity,
    ) {
        self.connect(now, conn, Role::Player, remote);
        if let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.player.as_mut()) {
            p.identity = Some(Box::new(identity));
        }
    }

    /// The connection is gone (closed by the peer, or broken).
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.pending.remove(&conn);
        if let Some(p) = c.player {
            self.player_ids.remove(&p.id);
            if let Some(s) = p.subscribed_to {
                self.detach(s, conn, &p.id);
            }
            if c.role == Role::Player {
                self.event(SessionEvent::PlayerDisconnected { player_id: p.id });
            }
        }
        if let Some(s) = c.streamer {
            self.streamers.remove(&conn);
            if let Some(id) = &s.id {
                self.streamer_ids.remove(id);
                if c.role == Role::Streamer {
                    self.event(SessionEvent::StreamerDisconnected {
                        streamer_id: id.clone(),
                    });
                }
            }
            for sub in s.subscribers {
                self.drop_subscriber(sub, true);
            }
        }
    }

    /// `conn` is read again after `paused_for` unread (see [`crate::backpressure`]): what it sent
    /// meanwhile within its rate limit is read at once and must not close it, so its bucket is
    /// credited for the time.
    pub fn resumed(&mut self, conn: ConnId, paused_for: Duration) {
        if let Some(b) = self.conns.get_mut(&conn).and_then(|c| c.bucket.as_mut()) {
            b.credit(paused_for);
        }
    }

    /// A share link was revoked: the users who joined with it are closed (1008, saying so), and
    /// it cannot join any streamer of this session again.
    pub fn revoke_link(&mut self, link: &str) {
        let shared: Vec<ConnId> = self
            .streamers
            .iter()
            .copied()
            .filter(|s| self.streamer_side(*s).is_some_and(|s| s.users.is_some()))
            .collect();
        for streamer in shared {
            if let Some(users) = self
                .streamer_side_mut(streamer)
                .and_then(|s| s.users.as_mut())
            {
                users.revoke(link);
            }
            self.flush_users(streamer, None);
        }
    }

    /// Sends `msg` to every user of a shared session (the session's notices: an end is near,
    /// it ended). Nothing without shared sessions.
    pub fn announce(&mut self, msg: &ServerMessage) {
        let users: Vec<ConnId> = self
            .streamers
            .iter()
            .filter_map(|s| self.streamer_side(*s))
            .filter(|s| s.users.is_some())
            .flat_map(|s| s.subscribers.iter().copied())
            .collect();
        for c in users {
            self.send(c, msg.clone());
        }
    }

    /// A frame that is not a message we can act on. A player's unparsable frame closes it
    /// (1008); a streamer's (or an SFU's) is logged (at most once per
    /// [`crate::metrics::LOG_INTERVAL`]), counted and dropped: the application is the whole
    /// session, and Epic's server ignores such a message too.
    pub fn invalid(&mut self, conn: ConnId, error: &MessageError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let role = c.role;
        match error {
            MessageError::UnknownType(kind) => {
                debug!(conn = conn.0, ?role, kind, "unhandled message type dropped");
            }
            _ if role != Role::Player => {
                self.stats.streamer_invalid_dropped += 1;
                if let Some(suppressed) = self.logs.streamer_invalid.admit(self.log_now()) {
                    warn!(conn = conn.0, ?role, %error, suppressed, "invalid message from the application dropped");
                }
            }
            MessageError::InvalidFields { .. } => {
                warn!(conn = conn.0, ?role, %error, "invalid message dropped");
            }
            MessageError::InvalidJson(_)
            | MessageError::NotAnObject
            | MessageError::MissingType => {
                warn!(conn = conn.0, ?role, %error, "closing connection");
                self.close(conn, Some(close_code::POLICY), &format!("{error}"));
            }
        }
    }

    /// A frame over the size limit arrived and could not be read; the connection is closed with
    /// 1009. (For a streamer or an SFU the limit is its own, larger one; see
    /// [`Router::oversized`].)
    pub fn too_big(&mut self, conn: ConnId, limit: usize) {
        if self.conns.contains_key(&conn) {
            warn!(conn = conn.0, limit, "frame over the size limit, closing");
            self.close(
                conn,
                Some(close_code::TOO_BIG),
                &format!("message larger than {limit} bytes"),
            );
        }
    }

    /// A message of `size` bytes, over the message size `limit`, was read whole. A streamer's
    /// (or an SFU's) is logged (at most once per [`crate::metrics::LOG_INTERVAL`]), counted and
    /// dropped; a player's closes it with 1009, as [`Router::too_big`].
    pub fn oversized(&mut self, conn: ConnId, size: usize, limit: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let role = c.role;
        if role == Role::Player {
            self.too_big(conn, limit);
            return;
        }
        self.stats.streamer_oversized_dropped += 1;
        if let Some(suppressed) = self.logs.streamer_oversized.admit(self.log_now()) {
            warn!(
                conn = conn.0,
                ?role,
                size,
                limit,
                suppressed,
                "message from the application over max_message_size dropped"
            );
        }
    }

    /// What the router counts.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// The time a log gate goes by: the last input's (the router reads no clock; every known
    /// connection came with a `connect`, which set it).
    fn log_now(&self) -> Instant {
        self.now.unwrap_or_else(Instant::now)
    }

    /// A parsed message from a connection.
    pub fn message(&mut self, now: Instant, conn: ConnId, msg: ClientMessage) {
        self.handle(now, conn, msg, None)
    }

    /// As [`Router::message`], with the text `msg` was parsed from. An offer, answer or ICE
    /// candidate that the router relays unchanged (a streamer's to its player), or changes only
    /// by adding the sender's `playerId` (a player's to its streamer), then goes out as this
    /// text ([`Payload::Text`]) instead of being serialized again.
    pub fn message_text(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: ClientMessage,
        text: Utf8Bytes,
    ) {
        self.handle(now, conn, msg, Some(text))
    }

    fn handle(&mut self, now: Instant, conn: ConnId, msg: ClientMessage, text: Option<Utf8Bytes>) {
        self.now = Some(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(b) = &mut c.bucket
            && !b.take(now)
        {
            warn!(conn = conn.0, "message rate limit exceeded, closing");
            self.close(
                conn,
                Some(close_code::POLICY),
                "message rate limit exceeded",
            );
            return;
        }
        let role = c.role;
        let kind = msg.kind();
        match (role, msg) {
            (_, ClientMessage::Ping { time }) => self.send(conn, ServerMessage::Pong { time }),

            (Role::Streamer | Role::Sfu, ClientMessage::EndpointId { id, .. }) => {
                self.identify(conn, id)
            }

            (Role::Player | Role::Sfu, ClientMessage::ListStreamers) => self.list(conn, role),
            (Role::Player | Role::Sfu, ClientMessage::Subscribe { streamer_id }) => {
                self.subscribe(conn, &streamer_id);
            }
            (Role::Player | Role::Sfu, ClientMessage::Unsubscribe) => self.unsubscribe(conn),
            (Role::Player, ClientMessage::Activity) => self.activity(now, conn),
            (Role::Player, ClientMessage::Chat { text }) => {
                self.user_command(conn, "chat", UserCommand::Chat(text))
            }
            (Role::Player, ClientMessage::Control { action, player_id }) => {
                let cmd = match (action, player_id) {
                    (ControlAction::Request, _) => UserCommand::Request,
                    (ControlAction::Give, Some(to)) => UserCommand::Give(to),
                    (ControlAction::Give, None) => {
                        self.refuse(conn, "control", "say whom to give control to (playerId)");
                        return;
                    }
                    (ControlAction::Take, _) => UserCommand::Take,
                    (ControlAction::Release, _) => UserCommand::Release,
                    (ControlAction::Reset, _) => UserCommand::Reset,
                };
                self.user_command(conn, "control", cmd)
            }
            (Role::Player, ClientMessage::Kick { player_id }) => {
                self.user_command(conn, "kick", UserCommand::Kick(player_id))
            }

            // A streamer talks to one of its players, as it wrote (`playerId` kept, as Epic's
            // server does).
            (Role::Streamer, ClientMessage::Offer(m)) => {
                let pid = m.player_id.clone();
                let msg = unchanged(ServerMessage::Offer(m), RelayKind::Offer, text);
                self.send_to_player(conn, pid, msg)
            }
            (Role::Streamer, ClientMessage::Answer(m)) => {
                let pid = m.player_id.clone();
                let msg = unchanged(ServerMessage::Answer(m), RelayKind::Answer, text);
                self.send_to_player(conn, pid, msg)
            }
            (Role::Streamer, ClientMessage::IceCandidate(m)) => {
                let pid = m.player_id.clone();
                let msg = unchanged(
                    ServerMessage::IceCandidate(m),
                    RelayKind::IceCandidate,
                    text,
                );
                self.send_to_player(conn, pid, msg)
            }
            (Role::Streamer, ClientMessage::DisconnectPlayer { player_id, reason }) => {
                self.kick(conn, &player_id, reason.as_deref().unwrap_or(""))
            }
            (Role::Streamer, ClientMessage::LayerPreference(m)) => {
                // Re-emitted to the SFUs subscribed to this streamer.
                let sfus: Vec<ConnId> = self
                    .streamer_side(conn)
                    .map(|s| s.subscribers.iter().copied().collect())
                    .unwrap_or_default();
                for sfu in sfus {
                    if self.conns.get(&sfu).is_some_and(|c| c.role == Role::Sfu) {
                        self.send(sfu, ServerMessage::LayerPreference(m.clone()));
                    }
                }
            }

            // A user of a shared session may not offer: the offerer chooses the data channels,
            // and only the streamer may, by the right it was told (`playerConnected`).
            (Role::Player, ClientMessage::Offer(_))
                if self.player_side(conn).is_some_and(|p| p.identity.is_some()) =>
            {
                self.refuse(
                    conn,
                    "offer",
                    "in a shared session the application makes the offer",
                );
            }
            // A player talks to its streamer (auto-subscribing in browser-offer mode).
            (Role::Player, ClientMessage::Offer(mut m)) => {
                if let Some((to, pid)) = self.player_target(conn, true) {
                    let msg = stamped(text, &pid, RelayKind::Offer).unwrap_or_else(|| {
                        m.player_id = Some(pid);
                        Payload::Msg(ServerMessage::Offer(m))
                    });
                    self.send(to, msg);
                }
            }
            (Role::Player, ClientMessage::Answer(mut m)) => {
                if let Some((to, pid)) = self.player_target(conn, true) {
                    let msg = stamped(text, &pid, RelayKind::Answer).unwrap_or_else(|| {
                        m.player_id = Some(pid);
                        Payload::Msg(ServerMessage::Answer(m))
                    });
                    self.send(to, msg);
                }
            }
            (Role::Player, ClientMessage::IceCandidate(mut m)) => {
                if let Some((to, pid)) = self.player_target(conn, true) {
                    let msg = stamped(text, &pid, RelayKind::IceCandidate).unwrap_or_else(|| {
                        m.player_id = Some(pid);
                        Payload::Msg(ServerMessage::IceCandidate(m))
                    });
                    self.send(to, msg);
                }
            }
            (Role::Player, ClientMessage::LayerPreference(mut m)) => {
                if let Some((to, pid)) = self.player_target(conn, false) {
                    m.player_id = Some(pid);
                    self.send(to, ServerMessage::LayerPreference(m));
                }
            }
            (Role::Player, ClientMessage::DataChannelRequest(m)) => {
                if let Some((to, pid)) = self.player_target(conn, false) {
                    self.send(to, ServerMessage::DataChannelRequest(stamp(m, pid)));
                }
            }
            (Role::Player, ClientMessage::PeerDataChannelsReady(m)) => {
                if let Some((to, pid)) = self.player_target(conn, false) {
                    self.send(to, ServerMessage::PeerDataChannelsReady(stamp(m, pid)));
                }
            }

            // The SFU: a streamer towards its players, a player towards its streamer.
            (Role::Sfu, ClientMessage::Offer(mut m)) => {
                let pid = m.player_id.take();
                self.send_to_player(conn, pid, ServerMessage::Offer(m));
            }
            (Role::Sfu, ClientMessage::Answer(m)) => {
                self.sfu_to_streamer(conn, ServerMessage::Answer(m))
            }
            (Role::Sfu, ClientMessage::IceCandidate(mut m)) => {
                if self.subscriber_of(conn, m.player_id.as_ref()).is_some() {
                    let pid = m.player_id.take();
                    self.send_to_player(conn, pid, ServerMessage::IceCandidate(m));
                } else {
                    self.sfu_to_streamer(conn, ServerMessage::IceCandidate(m));
                }
            }
            (Role::Sfu, ClientMessage::PeerDataChannels(m)) => self.send_to_player(
                conn,
                Some(m.player_id.clone()),
                ServerMessage::PeerDataChannels(m),
            ),
            (Role::Sfu, ClientMessage::StreamerDataChannels(m)) => {
                self.sfu_to_streamer(conn, ServerMessage::StreamerDataChannels(m))
            }
            (Role::Sfu, ClientMessage::StartStreaming) => {
                if let Some(s) = self.streamer_side_mut(conn) {
                    s.streaming = true;
                }
            }
            (Role::Sfu, ClientMessage::StopStreaming) => {
                let subs = match self.streamer_side_mut(conn) {
                    Some(s) => {
                        s.streaming = false;
                        std::mem::take(&mut s.subscribers)
                    }
                    None => Default::default(),
                };
                for sub in subs {
                    self.drop_subscriber(sub, false);
                }
            }

            (role, _) => {
                debug!(
                    conn = conn.0,
                    ?role,
                    kind,
                    "message not handled from this role, dropped"
                );
            }
        }
    }

    /// Gives pending streamers whose time is up a legacy id.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        let due: Vec<ConnId> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            self.promote_legacy(conn);
        }
    }

    // ----- snapshots for the REST API -----

    pub fn streamer_count(&self) -> usize {
        self.streamer_ids.len()
    }

    pub fn player_count(&self) -> usize {
        self.player_ids.len()
    }

    /// Identified streamers and SFUs, in connection order.
    pub fn streamers(&self) -> Vec<StreamerInfo> {
        self.streamers
            .iter()
            .filter_map(|c| self.streamer_info(*c))
            .collect()
    }

    pub fn streamer(&self, id: &str) -> Option<StreamerInfo> {
        self.streamer_ids
            .get(id)
            .and_then(|c| self.streamer_info(*c))
    }

    pub fn players(&self) -> Vec<PlayerInfo> {
        let mut conns: Vec<ConnId> = self.player_ids.values().copied().collect();
        conns.sort();
        conns.iter().filter_map(|c| self.player_info(*c)).collect()
    }

    pub fn player(&self, id: &str) -> Option<PlayerInfo> {
        self.player_ids
            .get(&PlayerId(id.to_owned()))
            .and_then(|c| self.player_info(*c))
    }

    fn streamer_info(&self, conn: ConnId) -> Option<StreamerInfo> {
        let c = self.conns.get(&conn)?;
        let s = c.streamer.as_ref()?;
        Some(StreamerInfo {
            streamer_id: s.id.clone()?,
            kind: if c.role == Role::Sfu {
                EndpointType::Sfu
            } else {
                EndpointType::Streamer
            },
            streaming: s.streaming,
            remote_address: c.remote.map(|a| a.to_string()),
            subscribers: s
                .subscribers
                .iter()
                .filter_map(|p| self.player_info(*p))
                .collect(),
        })
    }

    fn player_info(&self, conn: ConnId) -> Option<PlayerInfo> {
        let c = self.conns.get(&conn)?;
        let p = c.player.as_ref()?;
        Some(PlayerInfo {
            player_id: p.id.0.clone(),
            kind: if c.role == Role::Sfu {
                EndpointType::Sfu
            } else {
                EndpointType::Player
            },
            subscribed_to: p.subscribed_to.and_then(|s| self.streamer_id_of(s)),
            remote_address: c.remote.map(|a| a.to_string()),
        })
    }

    // ----- internals -----

    fn send(&mut self, to: ConnId, msg: impl Into<Payload>) {
        self.outputs.push_back(Output::Send {
            to,
            msg: msg.into(),
        });
    }

    /// The `config` message for `conn` at `now`: the peer connection options, with credentials
    /// of this connection in their TURN entries when TURN credentials are issued.
    fn config_message(&self, now: Instant, conn: ConnId) -> ServerMessage {
        let options = &self.config.peer_connection_options;
        let peer_connection_options = match (&self.config.turn, self.conns.get(&conn)) {
            (Some(t), Some(c)) if turn::has_turn_server(options) => {
                // A player's id names it in the TURN server's log as in ours; a streamer has
                // none yet (it identifies after `config`).
                let label = c.player.as_ref().map_or("streamer", |p| p.id.0.as_str());
                let ttl = match c.role {
                    Role::Player => t.ttl,
                    Role::Streamer | Role::Sfu => t.streamer_ttl,
                };
                let expiry = t.unix_seconds(now).saturating_add(ttl.as_secs());
                let cred = turn::credential(&t.secret, expiry, &t.connection_id(label, conn.0));
                debug!(conn = conn.0, username = %cred.username, "TURN credentials issued");
                turn::with_credentials(options, &cred)
            }
            _ => options.clone(),
        };
        ServerMessage::Config {
            peer_connection_options,
            protocol_version: Some(PROTOCOL_VERSION.to_owned()),
        }
    }

    /// Closes a connection and forgets it, with the same consequences as the peer leaving.
    fn close(&mut self, conn: ConnId, code: Option<u16>, reason: &str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: truncate_reason(reason),
        });
        self.disconnect(conn);
    }

    fn streamer_side(&self, conn: ConnId) -> Option<&StreamerSide> {
        self.conns.get(&conn)?.streamer.as_deref()
    }

    fn streamer_side_mut(&mut self, conn: ConnId) -> Option<&mut StreamerSide> {
        self.conns.get_mut(&conn)?.streamer.as_deref_mut()
    }

    fn player_side(&self, conn: ConnId) -> Option<&PlayerSide> {
        self.conns.get(&conn)?.player.as_ref()
    }

    fn streamer_id_of(&self, conn: ConnId) -> Option<String> {
        self.streamer_side(conn)?.id.clone()
    }

    /// The player `pid` if it is subscribed to `streamer`.
    fn subscriber_of(&self, streamer: ConnId, pid: Option<&PlayerId>) -> Option<ConnId> {
        let p = *self.player_ids.get(pid?)?;
        (self.player_side(p)?.subscribed_to == Some(streamer)).then_some(p)
    }

    /// Streamer (or SFU) → one of its players.
    fn send_to_player(&mut self, from: ConnId, pid: Option<PlayerId>, msg: impl Into<Payload>) {
        match self.subscriber_of(from, pid.as_ref()) {
            Some(p) => self.send(p, msg),
            None => debug!(
                conn = from.0,
                player = ?pid,
                "message for a player not subscribed to this streamer, dropped"
            ),
        }
    }

    /// Where a player's message goes, and the id to stamp on it. Browser-offer mode: a player that
    /// sends offer/answer/candidates before subscribing is subscribed to the first streamer.
    fn player_target(&mut self, conn: ConnId, auto_subscribe: bool) -> Option<(ConnId, PlayerId)> {
        let p = self.player_side(conn)?;
        if let Some(s) = p.subscribed_to {
            return Some((s, p.id.clone()));
        }
        if !auto_subscribe {
            debug!(conn = conn.0, "message before subscribe, dropped");
            return None;
        }
        let first = self
            .streamers
            .iter()
            .copied()
            .find(|s| self.conns.get(s).is_some_and(|c| c.role == Role::Streamer));
        let Some(first) = first else {
            self.close(
                conn,
                Some(close_code::TRY_AGAIN_LATER),
                "no streamer is connected",
            );
            return None;
        };
        if self.streamer_id_of(first).is_none() {
            self.promote_legacy(first);
        }
        let id = self.streamer_id_of(first)?;
        if self.subscribe(conn, &id) {
            let p = self.player_side(conn)?;
            Some((first, p.id.clone()))
        } else {
            None
        }
    }

    fn sfu_to_streamer(&mut self, sfu: ConnId, msg: ServerMessage) {
        let Some(p) = self.player_side(sfu) else {
            return;
        };
        let Some(to) = p.subscribed_to else {
            debug!(conn = sfu.0, "SFU message before it subscribed, dropped");
            return;
        };
        let pid = p.id.clone();
        let msg = match msg {
            ServerMessage::Answer(a) => ServerMessage::Answer(Answer {
                player_id: Some(pid),
                ..a
            }),
            ServerMessage::IceCandidate(i) => ServerMessage::IceCandidate(IceCandidate {
                player_id: Some(pid),
                ..i
            }),
            ServerMessage::StreamerDataChannels(mut d) => {
                d.sfu_id = Some(pid);
                ServerMessage::StreamerDataChannels(d)
            }
            other => other,
        };
        self.send(to, msg);
    }

    fn identify(&mut self, conn: ConnId, requested: String) {
        if requested.len() > MAX_STREAMER_ID {
            warn!(
                conn = conn.0,
                len = requested.len(),
                "endpointId longer than {MAX_STREAMER_ID} bytes, dropped"
            );
            return;
        }
        if let Some(expected) = &self.config.expected_streamer_id
            && self
                .conns
                .get(&conn)
                .is_some_and(|c| c.role == Role::Streamer)
            && requested != *expected
        {
            warn!(
                conn = conn.0,
                requested = %truncate_reason(&requested),
                expected = %expected,
                "streamer refused: it identified as another session's streamer"
            );
            self.close(conn, Some(close_code::POLICY), "unexpected streamer id");
            return;
        }
        self.pending.remove(&conn);
        let old = self.streamer_id_of(conn);
        if let Some(old) = &old {
            self.streamer_ids.remove(old);
        }
        let requested = if requested.is_empty() {
            "UnknownStreamer".to_owned()
        } else {
            requested
        };
        let id = unique_id(&requested, self.streamer_ids.keys().map(String::as_str));
        self.streamer_ids.insert(id.clone(), conn);
        let subscribers = match self.streamer_side_mut(conn) {
            Some(s) => {
                s.id = Some(id.clone());
                s.streaming = true;
                s.subscribers.clone()
            }
            None => return,
        };
        info!(conn = conn.0, streamer = %id, "streamer identified");
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.role == Role::Streamer)
        {
            self.event(SessionEvent::StreamerIdentified {
                streamer_id: id.clone(),
            });
        }
        self.send(
            conn,
            ServerMessage::EndpointIdConfirm {
                committed_id: id.clone(),
            },
        );
        if old.is_some_and(|o| o != id) {
            for sub in subscribers {
                self.send(sub, ServerMessage::StreamerIdChanged { new_id: id.clone() });
            }
        }
    }

    fn promote_legacy(&mut self, conn: ConnId) {
        self.pending.remove(&conn);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.streamer.as_ref().is_none_or(|s| s.id.is_some()) {
            return;
        }
        let is_streamer = c.role == Role::Streamer;
        let id = if c.role == Role::Sfu {
            self.next_legacy_sfu += 1;
            format!("__LEGACY_SFU__{}", self.next_legacy_sfu - 1)
        } else {
            self.next_legacy_streamer += 1;
            format!("__LEGACY_STREAMER__{}", self.next_legacy_streamer - 1)
        };
        let id = unique_id(&id, self.streamer_ids.keys().map(String::as_str));
        info!(conn = conn.0, streamer = %id, "streamer never identified, registered under a legacy id");
        self.streamer_ids.insert(id.clone(), conn);
        if let Some(s) = self.streamer_side_mut(conn) {
            s.id = Some(id.clone());
            s.streaming = true;
        }
        if is_streamer {
            self.event(SessionEvent::StreamerIdentified { streamer_id: id });
        }
    }

    /// A player's `activity`: reported (rate-limited per player) when events are enabled.
    fn activity(&mut self, now: Instant, conn: ConnId) {
        if self.events.is_none() {
            return;
        }
        let interval = self.activity_interval;
        let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.player.as_mut()) else {
            return;
        };
        if p.activity_reported
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        p.activity_reported = Some(now);
        let player_id = p.id.clone();
        self.event(SessionEvent::PlayerActivity { player_id });
    }

    fn list(&mut self, conn: ConnId, role: Role) {
        let ids = self
            .streamers
            .iter()
            .filter(|s| **s != conn)
            .filter_map(|s| self.streamer_side(*s))
            .filter(|s| role == Role::Sfu || s.streaming)
            .filter_map(|s| s.id.clone())
            .collect();
        self.send(conn, ServerMessage::StreamerList { ids });
    }

    /// Returns whether the subscription was made.
    fn subscribe(&mut self, conn: ConnId, streamer_id: &str) -> bool {
        let target = self.streamer_ids.get(streamer_id).copied();
        let shown: String = streamer_id.chars().take(MAX_STREAMER_ID).collect();
        let Some(target) = target.filter(|t| *t != conn) else {
            self.send(
                conn,
                ServerMessage::SubscribeFailed {
                    message: format!("Streamer {shown} does not exist."),
                },
            );
            return false;
        };
        // Re-subscribing (to the same or another streamer) leaves the current one first.
        self.unsubscribe(conn);
        let max = self.config.max_players;
        let count = self
            .streamer_side(target)
            .map_or(0, |s| s.subscribers.len());
        if max > 0 && count >= max {
            self.send(
                conn,
                ServerMessage::SubscribeFailed {
                    message: format!("Streamer {shown} is full. Max players = {max}."),
                },
            );
            return false;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let is_sfu = c.role == Role::Sfu;
        let Some(p) = c.player.as_mut() else {
            return false;
        };
        let identity = p.identity.clone();
        let pid = p.id.clone();
        // A user of a shared session joins first: it may be refused, and only the one in
        // control gets the data channel (the input).
        let mut data_channel = true;
        let now = self.users_now();
        if let Some(identity) = identity
            && let Some(users) = self
                .streamer_side_mut(target)
                .and_then(|s| s.users.as_mut())
        {
            let joined = users.join(
                now,
                Joining {
                    player: pid.clone(),
                    name: identity.name,
                    role: identity.role,
                    link: identity.link,
                },
            );
            if let Err(denied) = joined {
                info!(conn = conn.0, player = %pid, reason = %denied, "user refused");
                let code = match denied {
                    users::Denied::Full(_) => close_code::TRY_AGAIN_LATER,
                    _ => close_code::POLICY,
                };
                self.close(conn, Some(code), &denied.to_string());
                return false;
            }
            data_channel = users.may_send_input(&pid);
        }
        if let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.player.as_mut()) {
            p.subscribed_to = Some(target);
        }
        if let Some(s) = self.streamer_side_mut(target) {
            s.subscribers.insert(conn);
        }
        debug!(conn = conn.0, player = %pid, streamer = %shown, data_channel, "subscribed");
        self.send(
            target,
            ServerMessage::PlayerConnected {
                player_id: pid.clone(),
                data_channel,
                sfu: is_sfu,
            },
        );
        self.flush_users(target, Some(&pid));
        true
    }

    /// The time for the users core: the input being handled.
    fn users_now(&self) -> users::Now {
        let mono = self.now.unwrap_or_else(Instant::now);
        let wall_ms = self.config.users.as_ref().map_or(0, |u| {
            let (at, wall) = u.epoch;
            wall.saturating_add(mono.saturating_duration_since(at).as_millis() as u64)
        });
        users::Now { mono, wall_ms }
    }

    /// A shared-session command from a player. A player without an identity (Epic's protocol
    /// alone) sends nothing of the kind: dropped, as an unknown message.
    fn user_command(&mut self, conn: ConnId, kind: &str, cmd: UserCommand) {
        let Some(p) = self.player_side(conn) else {
            return;
        };
        let (Some(streamer), true) = (p.subscribed_to, p.identity.is_some()) else {
            debug!(
                conn = conn.0,
                kind, "not a user of a shared session, dropped"
            );
            return;
        };
        let pid = p.id.clone();
        let now = self.users_now();
        let Some(users) = self
            .streamer_side_mut(streamer)
            .and_then(|s| s.users.as_mut())
        else {
            debug!(conn = conn.0, kind, "the session is not shared, dropped");
            return;
        };
        if let Err(denied) = users.command(now, &pid, cmd) {
            debug!(conn = conn.0, kind, reason = %denied, "refused");
            self.refuse(conn, kind, &denied.to_string());
        }
        self.flush_users(streamer, None);
    }

    fn refuse(&mut self, conn: ConnId, command: &str, message: &str) {
        self.send(
            conn,
            ServerMessage::Refused {
                command: command.to_owned(),
                message: message.to_owned(),
            },
        );
    }

    /// Acts on what the users core of `streamer` asks. `joining` has just been announced to the
    /// streamer with its input right: no renegotiation for it.
    fn flush_users(&mut self, streamer: ConnId, joining: Option<&PlayerId>) {
        let Some(users) = self
            .streamer_side_mut(streamer)
            .and_then(|s| s.users.as_mut())
        else {
            return;
        };
        let outputs: Vec<users::Output> = std::iter::from_fn(|| users.poll_output()).collect();
        let presence = users.presence();
        let holder = users.control().cloned();
        // Read at each broadcast: an earlier output may have closed a user (a kick).
        let everyone = |r: &Router| -> Vec<ConnId> {
            r.streamer_side(streamer)
                .map(|s| s.subscribers.iter().copied().collect())
                .unwrap_or_default()
        };
        for out in outputs {
            match out {
                users::Output::Users(list) => {
                    let users: Vec<SessionUser> = list
                        .into_iter()
                        .map(|u| SessionUser {
                            player_id: u.player,
                            name: u.name,
                            role: u.role.as_str().to_owned(),
                            control: u.control,
                            requested: u.requested,
                        })
                        .collect();
                    for c in everyone(self) {
                        self.send(
                            c,
                            ServerMessage::Users {
                                users: users.clone(),
                            },
                        );
                    }
                }
                users::Output::Chat(line) => {
                    let line = chat_line(line);
                    for c in everyone(self) {
                        self.send(c, ServerMessage::Chat(line.clone()));
                    }
                }
                users::Output::History { to, lines } => {
                    let Some(c) = self.subscriber_of(streamer, Some(&to)) else {
                        continue;
                    };
                    if let Some(me) = presence.iter().find(|u| u.player == to) {
                        self.send(
                            c,
                            ServerMessage::You {
                                player_id: to.clone(),
                                name: me.name.clone(),
                                role: me.role.as_str().to_owned(),
                            },
                        );
                    }
                    self.send(
                        c,
                        ServerMessage::ChatHistory {
                            messages: lines.into_iter().map(chat_line).collect(),
                        },
                    );
                }
                users::Output::Control { from, to } => {
                    // Whose input right changed gets a new peer connection from the streamer,
                    // with the data channel (the input) or without: the streamer is told the
                    // player left and came back.
                    for pid in [from, to].into_iter().flatten() {
                        if Some(&pid) == joining
                            || self.subscriber_of(streamer, Some(&pid)).is_none()
                        {
                            continue;
                        }
                        let right = holder.as_ref() == Some(&pid);
                        info!(player = %pid, input = right, "input right changed: renegotiating");
                        // A fresh `config` first: Epic's frontend starts a new peer connection
                        // on it, so the streamer's next offer is not applied to the old one
                        // (which a browser refuses once the input channel's m-line is gone).
                        if let Some(c) = self.subscriber_of(streamer, Some(&pid)) {
                            let config = self.config_message(self.users_now().mono, c);
                            self.send(c, config);
                        }
                        self.send(
                            streamer,
                            ServerMessage::PlayerDisconnected {
                                player_id: pid.clone(),
                            },
                        );
                        self.send(
                            streamer,
                            ServerMessage::PlayerConnected {
                                player_id: pid,
                                data_channel: right,
                                sfu: false,
                            },
                        );
                    }
                }
                users::Output::Disconnect { player, reason } => {
                    if let Some(c) = self.player_ids.get(&player).copied() {
                        self.close(c, Some(close_code::POLICY), &reason);
                    }
                }
            }
        }
    }

    fn unsubscribe(&mut self, conn: ConnId) {
        let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.player.as_mut()) else {
            return;
        };
        if let Some(s) = p.subscribed_to.take() {
            let pid = p.id.clone();
            self.detach(s, conn, &pid);
        }
    }

    /// Removes a player from its streamer's subscribers and tells the streamer.
    fn detach(&mut self, streamer: ConnId, player: ConnId, pid: &PlayerId) {
        if let Some(s) = self.streamer_side_mut(streamer) {
            s.subscribers.remove(&player);
            if let Some(users) = s.users.as_mut() {
                users.leave(pid);
            }
            self.send(
                streamer,
                ServerMessage::PlayerDisconnected {
                    player_id: pid.clone(),
                },
            );
            self.flush_users(streamer, None);
        }
    }

    /// A subscriber whose streamer went away (or stopped streaming): an SFU is told and stays;
    /// a player is closed, and Epic's frontend reconnects and lists again.
    fn drop_subscriber(&mut self, sub: ConnId, streamer_gone: bool) {
        let Some(c) = self.conns.get_mut(&sub) else {
            return;
        };
        if let Some(p) = c.player.as_mut() {
            p.subscribed_to = None;
        }
        if c.role == Role::Sfu {
            if streamer_gone {
                self.send(sub, ServerMessage::StreamerDisconnected);
            }
        } else {
            self.close(sub, None, "");
        }
    }

    fn kick(&mut self, streamer: ConnId, pid: &PlayerId, reason: &str) {
        match self.subscriber_of(streamer, Some(pid)) {
            Some(p) => {
                info!(conn = streamer.0, player = %pid, "streamer disconnected a player");
                self.close(p, Some(close_code::KICKED), reason);
            }
            None => debug!(
                conn = streamer.0,
                player = %pid,
                "disconnectPlayer for a player not subscribed to this streamer, dropped"
            ),
        }
    }
}

fn chat_line(l: users::ChatLine) -> ChatLine {
    ChatLine {
        id: l.id,
        player_id: l.from,
        name: l.name,
        text: l.text,
        at: l.at_ms,
    }
}

/// A relayed message that goes out unchanged: as its sender's `text` when there is one.
fn unchanged(msg: ServerMessage, kind: RelayKind, text: Option<Utf8Bytes>) -> Payload {
    match text {
        Some(text) => Payload::Text { kind, text },
        None => Payload::Msg(msg),
    }
}

/// A player's relayed message with its `playerId` added: its `text` with `"playerId":"<pid>",`
/// spliced in after the opening brace. `None` (serialize the message instead) when there is no
/// text, or when the text may already name a `playerId` at any depth, even with a null value or
/// spelled with `\u` escapes: a receiver's `JSON.parse` keeps the last of two equal keys, so
/// the one we add would not be the one read.
fn stamped(text: Option<Utf8Bytes>, pid: &PlayerId, kind: RelayKind) -> Option<Payload> {
    let text = text?;
    let s = text.as_str();
    if s.contains("playerId") || s.contains("\\u") {
        return None;
    }
    let body = s.trim_start().strip_prefix('{')?;
    // A relayed message has at least its `type`: something follows the brace.
    let pid = serde_json::to_string(pid.as_str()).expect("a string serializes");
    let mut out = String::with_capacity(s.len() + pid.len() + 13);
    out.push_str("{\"playerId\":");
    out.push_str(&pid);
    out.push(',');
    out.push_str(body);
    Some(Payload::Text {
        kind,
        text: Utf8Bytes::from(out),
    })
}

fn stamp(mut m: Relay, pid: PlayerId) -> Relay {
    m.player_id = Some(pid);
    m
}

/// Epic's de-duplication: if `requested`, or `requested` followed by digits, is taken, the new id
/// is `requested` + (the largest such suffix + 1), an exact match counting as suffix 0. So a second
/// `DefaultStreamer` becomes `DefaultStreamer1`, a third `DefaultStreamer2`. An id nobody holds
/// with a suffix is kept as requested, unless `requested` + digits is held (then it is suffixed
/// too, as Epic's server does). Unlike Epic's, the result is always free.
pub fn unique_id<'a>(requested: &str, existing: impl Iterator<Item = &'a str>) -> String {
    let mut max: Option<u64> = None;
    let mut taken = std::collections::HashSet::new();
    for id in existing {
        taken.insert(id);
        if let Some(rest) = id.strip_prefix(requested)
            && rest.bytes().all(|b| b.is_ascii_digit())
        {
            let n = if rest.is_empty() {
                Some(0)
            } else {
                rest.parse().ok()
            };
            max = max.max(n);
        }
    }
    let Some(max) = max else {
        return requested.to_owned();
    };
    let mut n = max.saturating_add(1);
    loop {
        let candidate = format!("{requested}{n}");
        if !taken.contains(candidate.as_str()) {
            return candidate;
        }
        n = n.wrapping_add(1);
    }
}

/// A close reason fits in a close frame: at most 123 bytes, cut at a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

impl Router {
    /// Panics if the router's indexes disagree with each other. For tests and fuzzing; never
    /// called in production.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        for (id, c) in &self.streamer_ids {
            let s = self
                .streamer_side(*c)
                .expect("streamer id maps to a streamer");
            assert_eq!(s.id.as_deref(), Some(id.as_str()));
        }
        for (id, c) in &self.player_ids {
            assert_eq!(
                &self.player_side(*c).expect("player id maps to a player").id,
                id
            );
        }
        for (conn, c) in &self.conns {
            assert_eq!(c.streamer.is_some(), self.streamers.contains(conn));
            if let Some(s) = &c.streamer {
                if let Some(id) = &s.id {
                    assert_eq!(self.streamer_ids.get(id), Some(conn));
                }
                if self.config.max_players > 0 {
                    assert!(s.subscribers.len() <= self.config.max_players);
                }
                for sub in &s.subscribers {
                    assert_eq!(
                        self.player_side(*sub).and_then(|p| p.subscribed_to),
                        Some(*conn)
                    );
                }
                // The users are exactly the subscribers that came with an identity.
                if let Some(users) = &s.users {
                    let mut listed: Vec<PlayerId> =
                        users.presence().into_iter().map(|u| u.player).collect();
                    listed.sort();
                    let mut subs: Vec<PlayerId> = s
                        .subscribers
                        .iter()
                        .filter_map(|c| self.player_side(*c))
                        .filter(|p| p.identity.is_some())
                        .map(|p| p.id.clone())
                        .collect();
                    subs.sort();
                    assert_eq!(listed, subs, "users and identified subscribers agree");
                }
            }
            if let Some(p) = &c.player
                && let Some(s) = p.subscribed_to
            {
                assert!(
                    self.streamer_side(s)
                        .expect("subscribed to a live streamer")
                        .subscribers
                        .contains(conn)
                );
            }
        }
        assert_eq!(
            self.streamers.len(),
            self.conns.values().filter(|c| c.streamer.is_some()).count()
        );
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
