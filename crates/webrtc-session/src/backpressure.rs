//! What becomes of messages for a streamer (or an SFU) that is not reading: a sans-IO core the
//! shell ([`crate::session`]) asks when a streamer's send queue is full.
//!
//! A player that does not read is closed (its queue is bounded, it is one browser). A streamer is
//! the whole session: closing it would close every player with it, so it is not closed for being
//! slow, only as gone (it takes no byte for the write timeout, or the total limit is reached).
//! Instead:
//!
//! ```text
//!  send queue full ──▶ stalled: the message and every later one for it are held here, in order;
//!        │             the players whose messages are held are paused (the shell stops reading
//!        │             their sockets, so TCP slows them down)
//!        │             held ≥ ice limit: players' ICE candidates for it are dropped and counted
//!        │             held ≥ limit:     a player whose message would go past it is closed (1013)
//!        ▼
//!  the queue has room again ──▶ held messages go out in order ──▶ empty, queue half free:
//!                                                                 resumed, players unpaused
//! ```
//!
//! Offers, answers and the router's own messages (`playerConnected`, `playerDisconnected`) are
//! not dropped, with one exception: a `playerDisconnected` of a player whose `playerConnected` is
//! still held takes that and the player's held messages away with it (the streamer never knew of
//! it). The players and SFUs feeding a stalled streamer are paused, so little more than what was
//! already in flight is held on their account, and the hard limit closes a player rather than lose
//! one of its messages; the rest (the router's own, churning players' connections) is bounded by
//! the total limit, past which the streamer is closed as gone.

use crate::metrics::LogGate;
use crate::router::{ConnId, Payload};
use pxs_protocol::signalling::PlayerId;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;
use tracing::{info, warn};

/// How much a stalled streamer may have held for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogLimits {
    /// From this many held messages on, players' ICE candidates for the streamer are dropped.
    pub ice: usize,
    /// At this many held messages, a player whose message would be held is closed instead. The
    /// router's own messages (and an SFU's) are held past it.
    pub max: usize,
    /// At this many held messages in all, the streamer is closed as gone (1001): one that takes
    /// nothing while that much piles up for it is not coming back, and the server's memory is not
    /// its buffer.
    pub total: usize,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits {
            ice: 1024,
            max: 16 * 1024,
            total: 32 * 1024,
        }
    }
}

/// What the shell must do for the backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop reading this player.
    Pause(ConnId),
    /// Read this player again.
    Resume(ConnId),
    /// Close this player (1013): its streamer's backlog is full.
    Close(ConnId),
    /// Close this stalled streamer as gone (1001): its backlog reached the total limit.
    CloseStreamer(ConnId),
}

/// The backlog's counters; see [`crate::metrics::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BacklogStats {
    /// Stalls begun.
    pub stalls: u64,
    /// Streamers stalled now.
    pub stalled: u64,
    /// Messages ever held.
    pub held_total: u64,
    /// Messages held now.
    pub held: u64,
    /// Times a player was paused.
    pub players_paused: u64,
    /// Players' ICE candidates dropped.
    pub ice_dropped: u64,
    /// Players closed at the hard limit.
    pub players_closed: u64,
    /// Stalled streamers closed at the total limit.
    pub streamers_closed: u64,
    /// Held (or queued) messages discarded because their streamer went away (closed, or gone).
    pub held_discarded: u64,
}

#[derive(Debug)]
struct Stall {
    since: Instant,
    queue: VecDeque<Box<Payload>>,
    /// Players paused on this streamer's account.
    paused: BTreeSet<ConnId>,
    held: u64,
    ice_dropped: u64,
}

#[derive(Debug, Default)]
struct Logs {
    stalled: LogGate,
    ice: LogGate,
    closed: LogGate,
    resumed: LogGate,
    gone: LogGate,
    discarded: LogGate,
}

/// The held messages of every stalled streamer of a session.
#[derive(Debug, Default)]
pub struct Backlog {
    limits: BacklogLimits,
    stalls: HashMap<ConnId, Stall>,
    actions: VecDeque<Action>,
    /// Players closed at the hard limit, until forgotten: closed and counted once.
    closed: BTreeSet<ConnId>,
    /// The last time given (for the warning of [`Backlog::forget`], which is given none).
    now: Option<Instant>,
    stats: BacklogStats,
    logs: Logs,
}

impl Backlog {
    pub fn new(limits: BacklogLimits) -> Self {
        Backlog {
            limits,
            ..Default::default()
        }
    }

    /// Messages for `streamer` are being held: every new one must go through [`Backlog::hold`]
    /// too, to keep their order.
    pub fn is_stalled(&self, streamer: ConnId) -> bool {
        self.stalls.contains_key(&streamer)
    }

    /// `msg` for `streamer` could not be queued (its queue is full), or `streamer` is stalled.
    /// `from`: the player whose message the router was handling, if any; it is paused. Only a
    /// relay of that player's own message ([`Held::is_relay`]) may be dropped (a candidate past
    /// the ICE limit) or close it (at the hard limit): what the router itself tells the streamer
    /// meanwhile (`playerConnected`, `playerDisconnected`, of that player or of another one) is
    /// held whatever the count.
    pub fn hold(
        &mut self,
        now: Instant,
        streamer: ConnId,
        msg: Box<Payload>,
        from: Option<ConnId>,
    ) {
        self.now = Some(now);
        let stall = self.stalls.entry(streamer).or_insert_with(|| {
            self.stats.stalls += 1;
            self.stats.stalled += 1;
            if let Some(suppressed) = self.logs.stalled.admit(now) {
                warn!(
                    conn = streamer.0,
                    suppressed,
                    "streamer not reading (send queue full): holding its messages and pausing the players who feed it"
                );
            }
            Stall {
                since: now,
                queue: VecDeque::new(),
                paused: BTreeSet::new(),
                held: 0,
                ice_dropped: 0,
            }
        });
        let held = stall.queue.len();
        // A player already closed at the limit: its own messages go with it, the router's are
        // held on nobody's account.
        if from.is_some_and(|p| self.closed.contains(&p)) && msg.is_relay() {
            return;
        }
        let from = from.filter(|p| !self.closed.contains(p));
        // A player that came and went while the streamer was not reading: the streamer never
        // heard of it, so it hears nothing of it.
        if let Some((pid, false)) = msg.presence()
            && let Some(at) = stall
                .queue
                .iter()
                .rposition(|m| m.presence() == Some((pid, true)))
        {
            let tail = stall.queue.split_off(at);
            let before = tail.len();
            stall
                .queue
                .extend(tail.into_iter().skip(1).filter(|m| !m.concerns(pid)));
            self.stats.held -= (before - (stall.queue.len() - at)) as u64;
            return;
        }
        let from = match from {
            Some(player) if !msg.is_relay() => {
                if stall.paused.insert(player) {
                    self.stats.players_paused += 1;
                    self.actions.push_back(Action::Pause(player));
                }
                None
            }
            from => from,
        };
        if let Some(player) = from {
            if held >= self.limits.max && !msg.is_ice_candidate() {
                self.stats.players_closed += 1;
                if let Some(suppressed) = self.logs.closed.admit(now) {
                    warn!(
                        conn = streamer.0,
                        player = player.0,
                        held,
                        suppressed,
                        "player closed: its message would pass the stalled streamer's backlog limit"
                    );
                }
                stall.paused.remove(&player);
                self.closed.insert(player);
                self.actions.push_back(Action::Close(player));
                return;
            }
            if stall.paused.insert(player) {
                self.stats.players_paused += 1;
                self.actions.push_back(Action::Pause(player));
            }
            if held >= self.limits.ice && msg.is_ice_candidate() {
                self.stats.ice_dropped += 1;
                stall.ice_dropped += 1;
                if let Some(suppressed) = self.logs.ice.admit(now) {
                    warn!(
                        conn = streamer.0,
                        player = player.0,
                        held,
                        suppressed,
                        "ICE candidate for a stalled streamer dropped"
                    );
                }
                return;
            }
        }
        stall.queue.push_back(msg);
        stall.held += 1;
        self.stats.held_total += 1;
        self.stats.held += 1;
        if stall.queue.len() == self.limits.total {
            self.stats.streamers_closed += 1;
            if let Some(suppressed) = self.logs.gone.admit(now) {
                warn!(
                    conn = streamer.0,
                    held = self.limits.total,
                    stalled_ms = now.saturating_duration_since(stall.since).as_millis() as u64,
                    suppressed,
                    "stalled streamer closed as gone: it took nothing while its backlog reached the total limit"
                );
            }
            self.actions.push_back(Action::CloseStreamer(streamer));
        }
    }

    /// `conn` (an SFU) sent what was just held for `streamer`: it is paused like a player, but
    /// its messages are neither dropped nor refused (it carries many players).
    pub fn pause_for(&mut self, streamer: ConnId, conn: ConnId) {
        if let Some(stall) = self.stalls.get_mut(&streamer)
            && stall.paused.insert(conn)
        {
            self.stats.players_paused += 1;
            self.actions.push_back(Action::Pause(conn));
        }
    }

    /// The next held message for `streamer`, to send now there is room.
    pub fn pop(&mut self, streamer: ConnId) -> Option<Box<Payload>> {
        let msg = self.stalls.get_mut(&streamer)?.queue.pop_front()?;
        self.stats.held -= 1;
        Some(msg)
    }

    /// A popped message that did not fit after all: first again.
    pub fn unpop(&mut self, streamer: ConnId, msg: Box<Payload>) {
        if let Some(s) = self.stalls.get_mut(&streamer) {
            s.queue.push_front(msg);
            self.stats.held += 1;
        }
    }

    /// Messages held for `streamer` now.
    pub fn held(&self, streamer: ConnId) -> usize {
        self.stalls.get(&streamer).map_or(0, |s| s.queue.len())
    }

    /// `streamer` has nothing held and room in its queue: the stall ends and its players are
    /// resumed (those not paused for another stalled streamer too). Call only with nothing held.
    pub fn resume(&mut self, now: Instant, streamer: ConnId) {
        let Some(stall) = self.stalls.remove(&streamer) else {
            return;
        };
        debug_assert!(stall.queue.is_empty(), "resumed with messages held");
        self.stats.stalled -= 1;
        self.stats.held -= stall.queue.len() as u64;
        if let Some(suppressed) = self.logs.resumed.admit(now) {
            info!(
                conn = streamer.0,
                stalled_ms = now.saturating_duration_since(stall.since).as_millis() as u64,
                held = stall.held,
                ice_dropped = stall.ice_dropped,
                players = stall.paused.len(),
                suppressed,
                "streamer reading again: held messages delivered, players resumed"
            );
        }
        self.release(stall.paused);
    }

    /// A connection is gone. A stalled streamer's held messages are dropped with it (counted,
    /// with a warning), and its players resumed; a player is forgotten.
    pub fn forget(&mut self, conn: ConnId) {
        if let Some(stall) = self.stalls.remove(&conn) {
            self.stats.stalled -= 1;
            self.stats.held -= stall.queue.len() as u64;
            if !stall.queue.is_empty() {
                self.stats.held_discarded += stall.queue.len() as u64;
                let now = self.now.unwrap_or(stall.since);
                if let Some(suppressed) = self.logs.discarded.admit(now) {
                    warn!(
                        conn = conn.0,
                        discarded = stall.queue.len(),
                        suppressed,
                        "stalled streamer gone: the messages held for it are discarded"
                    );
                }
            }
            self.release(stall.paused);
        }
        for s in self.stalls.values_mut() {
            s.paused.remove(&conn);
        }
        self.closed.remove(&conn);
    }

    fn release(&mut self, paused: BTreeSet<ConnId>) {
        for p in paused {
            if !self.stalls.values().any(|s| s.paused.contains(&p)) {
                self.actions.push_back(Action::Resume(p));
            }
        }
    }

    /// `n` messages already queued for a stalled streamer being closed were discarded with it
    /// (counted as held ones are).
    pub fn discarded(&mut self, n: usize) {
        self.stats.held_discarded += n as u64;
    }

    /// The next thing for the shell to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn stats(&self) -> BacklogStats {
        self.stats
    }
}

/// What the backlog reads of a message it holds.
pub trait Held {
    /// A relay of a peer's own message (an offer, an answer, a candidate, a data channel or layer
    /// message), as opposed to one the router says itself (`playerConnected`,
    /// `playerDisconnected`, `pong`, ...). The router sends a streamer these kinds only to relay
    /// the message it is handling.
    fn is_relay(&self) -> bool;
    /// `playerConnected` (`true`) or `playerDisconnected` (`false`) of a player.
    fn presence(&self) -> Option<(&PlayerId, bool)>;
    /// Whether the message is about player `pid` (its relayed message, its presence).
    fn concerns(&self, pid: &PlayerId) -> bool;
}

impl Held for pxs_protocol::signalling::ServerMessage {
    fn is_relay(&self) -> bool {
        use pxs_protocol::signalling::ServerMessage as M;
        matches!(
            self,
            M::Offer(_)
                | M::Answer(_)
                | M::IceCandidate(_)
                | M::LayerPreference(_)
                | M::DataChannelRequest(_)
                | M::PeerDataChannelsReady(_)
                | M::PeerDataChannels(_)
                | M::StreamerDataChannels(_)
        )
    }

    fn presence(&self) -> Option<(&PlayerId, bool)> {
        use pxs_protocol::signalling::ServerMessage as M;
        match self {
            M::PlayerConnected { player_id, .. } => Some((player_id, true)),
            M::PlayerDisconnected { player_id } => Some((player_id, false)),
            _ => None,
        }
    }

    fn concerns(&self, pid: &PlayerId) -> bool {
        use pxs_protocol::signalling::ServerMessage as M;
        let of = match self {
            M::Offer(m) => m.player_id.as_ref(),
            M::Answer(m) => m.player_id.as_ref(),
            M::IceCandidate(m) => m.player_id.as_ref(),
            M::LayerPreference(m) => m.player_id.as_ref(),
            M::DataChannelRequest(m) | M::PeerDataChannelsReady(m) => m.player_id.as_ref(),
            M::PeerDataChannels(m) => Some(&m.player_id),
            M::StreamerDataChannels(m) => m.sfu_id.as_ref(),
            _ => self.presence().map(|(p, _)| p),
        };
        of == Some(pid)
    }
}

impl Held for Payload {
    fn is_relay(&self) -> bool {
        match self {
            Payload::Msg(m) => m.is_relay(),
            // Only offers, answers and candidates go as text, and only as relays.
            Payload::Text { .. } => true,
        }
    }

    fn presence(&self) -> Option<(&PlayerId, bool)> {
        match self {
            Payload::Msg(m) => m.presence(),
            Payload::Text { .. } => None,
        }
    }

    fn concerns(&self, pid: &PlayerId) -> bool {
        match self {
            Payload::Msg(m) => m.concerns(pid),
            // A player's relayed text starts with the `playerId` the router stamped on it.
            Payload::Text { text, .. } => text
                .as_str()
                .strip_prefix("{\"playerId\":")
                .and_then(|rest| rest.strip_prefix(&serde_json::to_string(pid.as_str()).ok()?))
                .is_some_and(|rest| rest.starts_with(',')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RelayKind;
    use axum::extract::ws::Utf8Bytes;
    use pxs_protocol::signalling::{Offer, PlayerId, ServerMessage};

    fn offer(n: usize) -> Box<Payload> {
        let v = serde_json::json!({"type":"offer","sdp":format!("o{n}"),"playerId":"Player0"});
        Box::new(Payload::Msg(serde_json::from_value(v).unwrap()))
    }

    fn ice() -> Box<Payload> {
        let v = serde_json::json!({"type":"iceCandidate","candidate":{"candidate":"c"},"playerId":"Player0"});
        Box::new(Payload::Msg(serde_json::from_value(v).unwrap()))
    }

    /// An ICE candidate relayed as its sender's text.
    fn ice_text() -> Box<Payload> {
        Box::new(Payload::Text {
            kind: RelayKind::IceCandidate,
            text: Utf8Bytes::from_static(
                r#"{"playerId":"Player0","type":"iceCandidate","candidate":{"candidate":"c"}}"#,
            ),
        })
    }

    fn actions(b: &mut Backlog) -> Vec<Action> {
        std::iter::from_fn(|| b.poll_action()).collect()
    }

    fn sdp(m: &Payload) -> String {
        match m {
            Payload::Msg(ServerMessage::Offer(Offer { sdp, .. })) => sdp.clone(),
            other => panic!("not an offer: {other:?}"),
        }
    }

    const S: ConnId = ConnId(1);
    const P: ConnId = ConnId(2);
    const Q: ConnId = ConnId(3);

    #[test]
    fn held_messages_come_out_in_order_and_their_senders_are_paused_once() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits::default());
        assert!(!b.is_stalled(S));
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, S, offer(1), Some(P));
        b.hold(now, S, offer(2), Some(Q));
        b.hold(now, S, offer(3), None);
        assert!(b.is_stalled(S));
        assert_eq!(actions(&mut b), vec![Action::Pause(P), Action::Pause(Q)]);
        let st = b.stats();
        assert_eq!(
            (st.stalls, st.stalled, st.held, st.held_total),
            (1, 1, 4, 4)
        );
        assert_eq!(st.players_paused, 2);
        let first = b.pop(S).unwrap();
        assert_eq!(sdp(&first), "o0");
        // It did not fit after all: it stays first.
        b.unpop(S, first);
        let out: Vec<String> = std::iter::from_fn(|| b.pop(S)).map(|m| sdp(&m)).collect();
        assert_eq!(out, ["o0", "o1", "o2", "o3"]);
        b.resume(now, S);
        assert!(!b.is_stalled(S));
        assert_eq!(actions(&mut b), vec![Action::Resume(P), Action::Resume(Q)]);
        let st = b.stats();
        assert_eq!((st.stalled, st.held, st.held_total), (0, 0, 4));
    }

    #[test]
    fn past_the_ice_limit_ice_candidates_are_dropped_and_offers_kept() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits {
            ice: 2,
            max: 100,
            ..Default::default()
        });
        b.hold(now, S, ice(), Some(P));
        b.hold(now, S, ice_text(), Some(P));
        b.hold(now, S, ice(), Some(P));
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, S, ice_text(), Some(P));
        assert_eq!(b.held(S), 3);
        assert_eq!(b.stats().ice_dropped, 2);
        assert_eq!(actions(&mut b), vec![Action::Pause(P)]);
        let kinds: Vec<bool> = std::iter::from_fn(|| b.pop(S))
            .map(|m| m.is_ice_candidate())
            .collect();
        assert_eq!(kinds, [true, true, false]);
    }

    #[test]
    fn at_the_hard_limit_a_players_message_closes_the_player_and_the_routers_own_are_kept() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits {
            ice: 1,
            max: 2,
            ..Default::default()
        });
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, S, offer(1), Some(P));
        b.hold(now, S, offer(2), Some(Q));
        assert_eq!(actions(&mut b), vec![Action::Pause(P), Action::Close(Q)]);
        // The router's own (a playerDisconnected for Q) is held past the limit.
        let gone = ServerMessage::PlayerDisconnected {
            player_id: PlayerId("Player1".into()),
        };
        b.hold(now, S, Box::new(Payload::Msg(gone)), None);
        assert_eq!(b.held(S), 3);
        assert_eq!(b.stats().players_closed, 1);
        // An ICE candidate at the limit is dropped, its sender kept.
        b.hold(now, S, ice(), Some(P));
        assert_eq!(actions(&mut b), vec![]);
        assert_eq!(b.stats().ice_dropped, 1);
    }

    /// `m` as the backlog holds it.
    fn held<T: From<ServerMessage>>(m: ServerMessage) -> Box<T> {
        Box::new(T::from(m))
    }

    /// The `type` of each message held for `streamer`, in order, taking them out.
    fn drain(b: &mut Backlog, streamer: ConnId) -> Vec<String> {
        std::iter::from_fn(|| b.pop(streamer))
            .map(|m| {
                let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// A player's `unsubscribe` (or a control change, a kick) makes the router tell the stalled
    /// streamer `playerDisconnected` (of it or of another player) while it handles that player's
    /// message: the router's own, held past the hard limit; the player is paused, not closed.
    #[test]
    fn the_routers_own_messages_on_a_players_account_are_held_past_the_limit() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits {
            ice: 1,
            max: 2,
            ..Default::default()
        });
        b.hold(now, S, offer(0), Some(Q));
        b.hold(now, S, offer(1), Some(Q));
        actions(&mut b);
        let gone = |n: &str| ServerMessage::PlayerDisconnected {
            player_id: PlayerId(n.into()),
        };
        let back = ServerMessage::PlayerConnected {
            player_id: PlayerId("Player3".into()),
            data_channel: true,
            sfu: false,
        };
        b.hold(now, S, Box::new(gone("Player2").into()), Some(P));
        b.hold(now, S, Box::new(gone("Player3").into()), Some(P));
        b.hold(now, S, Box::new(back.into()), Some(P));
        assert_eq!(actions(&mut b), vec![Action::Pause(P)]);
        assert_eq!(b.stats().players_closed, 0);
        assert_eq!(
            drain(&mut b, S),
            [
                "offer",
                "offer",
                "playerDisconnected",
                "playerDisconnected",
                "playerConnected"
            ]
        );
    }

    fn connected(n: usize) -> ServerMessage {
        ServerMessage::PlayerConnected {
            player_id: PlayerId(format!("Player{n}")),
            data_channel: true,
            sfu: false,
        }
    }

    fn disconnected(n: usize) -> ServerMessage {
        ServerMessage::PlayerDisconnected {
            player_id: PlayerId(format!("Player{n}")),
        }
    }

    /// A relay from player `n` (`offer(_)` is Player0's).
    fn offer_of(n: usize) -> ServerMessage {
        let v = serde_json::json!({"type":"offer","sdp":"o","playerId":format!("Player{n}")});
        serde_json::from_value::<ServerMessage>(v).unwrap()
    }

    /// Players that come and go while the streamer does not read leave nothing held: their
    /// `playerConnected`, their messages and their `playerDisconnected` go together. One the
    /// streamer did hear of (its `playerConnected` went out) is told it left.
    #[test]
    fn a_player_that_came_and_went_during_a_stall_leaves_nothing_held() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits::default());
        b.hold(now, S, offer(0), Some(P));
        for _ in 0..1000 {
            b.hold(now, S, held(connected(7)), Some(Q));
            b.hold(now, S, held(offer_of(7)), Some(Q));
            b.hold(now, S, held(offer_of(8)), Some(P));
            b.hold(now, S, held(disconnected(7)), None);
        }
        // Player0 was known to the streamer before the stall.
        b.hold(now, S, held(disconnected(0)), None);
        assert_eq!(b.held(S), 1002);
        assert_eq!(b.stats().held, 1002);
        let out = drain(&mut b, S);
        assert_eq!(out[0], "offer");
        assert_eq!(out[1001], "playerDisconnected");
        assert!(out[1..1001].iter().all(|t| t == "offer"));
        // A player that left and came back while held is told as it happened.
        b.hold(now, S, held(disconnected(3)), None);
        b.hold(now, S, held(connected(3)), None);
        assert_eq!(drain(&mut b, S), ["playerDisconnected", "playerConnected"]);
    }

    /// What piles up on nobody's account (the router's own, churning connections) is bounded:
    /// at the total limit the streamer is closed as gone, once.
    #[test]
    fn at_the_total_limit_the_stalled_streamer_is_closed() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits {
            ice: 1,
            max: 2,
            total: 5,
        });
        for n in 0..7 {
            b.hold(now, S, held(disconnected(n)), None);
        }
        assert_eq!(actions(&mut b), vec![Action::CloseStreamer(S)]);
        assert_eq!(b.stats().streamers_closed, 1);
        b.forget(S);
        assert_eq!(b.stats().held, 0);
        // What it had held is not lost silently.
        assert_eq!(b.stats().held_discarded, 7);
    }

    /// One player message can make two for the streamer (an offer that subscribes it first):
    /// its sender is closed, and counted, once; what the router says after is held.
    #[test]
    fn a_player_closed_at_the_limit_is_closed_once() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits {
            ice: 1,
            max: 2,
            ..Default::default()
        });
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, S, offer(1), Some(P));
        b.hold(now, S, held(connected(3)), Some(Q));
        b.hold(now, S, offer(2), Some(Q));
        b.hold(now, S, offer(3), Some(Q));
        b.hold(now, S, held(disconnected(3)), Some(Q));
        assert_eq!(
            actions(&mut b),
            vec![Action::Pause(P), Action::Pause(Q), Action::Close(Q)]
        );
        assert_eq!(b.stats().players_closed, 1);
        assert_eq!(drain(&mut b, S), ["offer", "offer"]);
        b.forget(Q);
    }

    /// An SFU feeding a stalled streamer is paused like a player, once.
    #[test]
    fn an_sfu_feeding_a_stalled_streamer_is_paused() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits::default());
        b.pause_for(S, Q);
        assert_eq!(actions(&mut b), vec![]);
        b.hold(now, S, offer(0), None);
        b.pause_for(S, Q);
        b.pause_for(S, Q);
        assert_eq!(actions(&mut b), vec![Action::Pause(Q)]);
        b.pop(S).unwrap();
        b.resume(now, S);
        assert_eq!(actions(&mut b), vec![Action::Resume(Q)]);
    }

    #[test]
    fn a_player_paused_for_two_streamers_resumes_when_both_have() {
        let now = Instant::now();
        let t = ConnId(9);
        let mut b = Backlog::new(BacklogLimits::default());
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, t, offer(1), Some(P));
        assert_eq!(actions(&mut b), vec![Action::Pause(P), Action::Pause(P)]);
        b.pop(S).unwrap();
        b.resume(now, S);
        assert_eq!(actions(&mut b), vec![]);
        // A streamer that goes away drops what it had held and frees its players.
        b.forget(t);
        assert_eq!(actions(&mut b), vec![Action::Resume(P)]);
        let st = b.stats();
        assert_eq!(
            (st.stalls, st.stalled, st.held, st.held_total),
            (2, 0, 0, 2)
        );
    }

    #[test]
    fn a_player_that_leaves_is_not_resumed() {
        let now = Instant::now();
        let mut b = Backlog::new(BacklogLimits::default());
        b.hold(now, S, offer(0), Some(P));
        b.hold(now, S, offer(1), Some(Q));
        actions(&mut b);
        b.forget(P);
        while b.pop(S).is_some() {}
        b.resume(now, S);
        assert_eq!(actions(&mut b), vec![Action::Resume(Q)]);
    }
}
