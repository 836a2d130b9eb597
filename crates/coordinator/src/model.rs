//! The coordinator's records and the rules that move a session between states.
//!
//! A session keeps what the coordinator wants of it ([`Desired`]) apart from what its node last
//! reported ([`Observed`]); the user-facing [`SessionState`] is derived by the functions here, the
//! only place that moves it. They are pure: the shell loads a row, calls one, and stores it.

use crate::placement::{Interval, Millis};
use pxs_protocol::api::{self, EndReason, SessionState, TitleId, Visibility};
use pxs_protocol::node::{
    ApplicationId, EndReason as NodeEndReason, Ended, NodeId, SessionEventKind, SessionId,
};
use serde::{Deserialize, Serialize};

/// What the coordinator wants of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    Run,
    Stop,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Run => "run",
            Desired::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Desired {
        if s == "stop" {
            Desired::Stop
        } else {
            Desired::Run
        }
    }
}

/// What the session's node last reported.
///
/// ```text
///  none ──starting event──▶ starting ──ready event──▶ ready ──ended event──▶ gone
///    └────────────────────────────┴──────────────────────┴──(node lost)────▶ gone
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Nothing yet (not placed, or `start_session` not acknowledged by an event).
    None,
    Starting,
    Ready,
    /// Ended (reported, or given up on).
    Gone,
}

impl Observed {
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::None => "none",
            Observed::Starting => "starting",
            Observed::Ready => "ready",
            Observed::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Observed {
        match s {
            "starting" => Observed::Starting,
            "ready" => Observed::Ready,
            "gone" => Observed::Gone,
            _ => Observed::None,
        }
    }
}

/// Limits copied from the title when the session was created, so a later edit of the title
/// does not change a running session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub max_players: u32,
    pub idle_timeout: u64,
    pub empty_timeout: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    pub id: SessionId,
    pub title_id: TitleId,
    pub application_id: ApplicationId,
    pub node_id: Option<NodeId>,
    pub state: SessionState,
    pub desired: Desired,
    pub observed: Observed,
    /// Order in the title's queue (only while queued).
    pub queue_seq: Option<i64>,
    pub created_at: Millis,
    pub start_at: Option<Millis>,
    /// Seconds.
    pub duration: Option<i64>,
    /// The slot the session holds on its node: `[slot_start, slot_end)` (see `placement`).
    pub slot_start: Option<Millis>,
    pub slot_end: Option<Millis>,
    /// When `start_session` went to the node (None: still to send).
    pub dispatched_at: Option<Millis>,
    pub stop_sent_at: Option<Millis>,
    pub ready_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub end_reason: Option<EndReason>,
    /// Why the coordinator stopped it, reported instead of the node's `stopped`.
    pub stop_reason: Option<EndReason>,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
    pub player_url: Option<String>,
    /// The key that signs this session's player tokens; shared with its node only.
    pub player_key: String,
    pub owner: crate::auth::Owner,
    /// Who ended it through the API (`DELETE`), if anyone did.
    pub ended_by: Option<crate::auth::EndedBy>,
    pub settings: SessionSettings,
    pub updated_at: Millis,
}

impl SessionRow {
    /// A new session of `title` by `owner`, created at `now`, lasting `duration` seconds (or
    /// unbounded), with the title's limits; queued and unplaced until [`SessionRow::schedule`]
    /// or [`SessionRow::start_on`].
    pub fn new(
        id: SessionId,
        title: &TitleRow,
        owner: crate::auth::Owner,
        start_at: Option<Millis>,
        duration: Option<u64>,
        now: Millis,
    ) -> SessionRow {
        SessionRow {
            id,
            title_id: title.id.clone(),
            application_id: title.application_id.clone(),
            node_id: None,
            state: SessionState::Queued,
            desired: Desired::Run,
            observed: Observed::None,
            queue_seq: None,
            created_at: now,
            start_at,
            duration: duration.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
            slot_start: None,
            slot_end: None,
            dispatched_at: None,
            stop_sent_at: None,
            ready_at: None,
            ended_at: None,
            end_reason: None,
            stop_reason: None,
            exit_code: None,
            detail: None,
            player_url: None,
            // Derived from the session secret, not stored (`Engine::session_key`).
            player_key: String::new(),
            owner,
            ended_by: None,
            settings: SessionSettings {
                max_players: title.max_players,
                idle_timeout: title.idle_timeout,
                empty_timeout: title.empty_timeout,
            },
            updated_at: now,
        }
    }

    /// Reserves `window` on `node` for later: scheduled.
    pub fn schedule(&mut self, node: NodeId, window: Interval) {
        self.state = SessionState::Scheduled;
        self.node_id = Some(node);
        self.slot_start = Some(window.start);
        self.slot_end = window.end;
    }

    /// Starts it on `node` over `window` (from the queue, or at once): starting, out of the
    /// queue; the dispatcher sends `start_session`.
    pub fn start_on(&mut self, node: NodeId, window: Interval, now: Millis) {
        self.state = SessionState::Starting;
        self.node_id = Some(node);
        self.queue_seq = None;
        self.slot_start = Some(window.start);
        self.slot_end = window.end;
        self.updated_at = now;
    }

    /// Holds a slot on its node now or later (placement counts it).
    pub fn holds_slot(&self) -> bool {
        self.node_id.is_some()
            && matches!(
                self.state,
                SessionState::Scheduled | SessionState::Starting | SessionState::Ready
            )
    }

    /// The interval placement counts for it at `now` (see [`busy_interval`]).
    pub fn busy_interval(&self, now: Millis) -> Interval {
        busy_interval(self.state, self.slot_start, self.slot_end, now)
    }

    /// Ends it here and now (no node involved, or the node is lost).
    pub fn finish(&mut self, now: Millis, state: SessionState, reason: EndReason) {
        self.state = state;
        self.observed = Observed::Gone;
        self.desired = Desired::Stop;
        self.queue_seq = None;
        self.ended_at = Some(now);
        self.end_reason = Some(reason);
        self.updated_at = now;
    }

    /// Asks for a stop (the node is told by the dispatcher). Keeps the first reason.
    pub fn request_stop(&mut self, now: Millis, reason: EndReason) {
        if self.desired == Desired::Run {
            self.desired = Desired::Stop;
            self.stop_reason = Some(reason);
            self.stop_sent_at = None;
            self.updated_at = now;
        }
    }
}

/// Text a node sent, made safe to store and show: control characters (NUL among them, which
/// PostgreSQL refuses) dropped, at most `max` characters.
pub fn node_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The interval placement counts for a session holding a slot: a running session occupies it
/// at least until `now`, even past the end of its window (until its node reports it ended).
pub fn busy_interval(
    state: SessionState,
    slot_start: Option<Millis>,
    slot_end: Option<Millis>,
    now: Millis,
) -> Interval {
    let start = slot_start.unwrap_or(now);
    let end = match state {
        SessionState::Scheduled => slot_end,
        _ => slot_end.map(|e| e.max(now + 1)),
    };
    Interval::new(start, end)
}

/// What to do after a node's event was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The row changed: store it (and tell watchers).
    Changed,
    /// Nothing to change (a repeat, or an event about a session already over).
    Unchanged,
    /// The node runs a session we do not want (unknown, over, or never ours): stop it there.
    StopOnNode,
}

/// Applies a node's event to the session it names. `row` is `None` when the coordinator has
/// no such session.
pub fn apply_event(
    row: Option<&mut SessionRow>,
    node: &NodeId,
    kind: &SessionEventKind,
    now: Millis,
) -> EventOutcome {
    let Some(row) = row else {
        return match kind {
            SessionEventKind::Ended(_) => EventOutcome::Unchanged,
            _ => EventOutcome::StopOnNode,
        };
    };
    if row.node_id.as_ref() != Some(node) {
        // Another node's session: never ours to change from here.
        return match kind {
            SessionEventKind::Ended(_) => EventOutcome::Unchanged,
            _ => EventOutcome::StopOnNode,
        };
    }
    match kind {
        // Only a session the coordinator has started may be starting or ready on its node: not an
        // ended one, nor a reservation before its time (it would take its slot early, outside
        // the window that placement counted).
        SessionEventKind::Starting { .. } | SessionEventKind::Ready { .. }
            if !matches!(row.state, SessionState::Starting | SessionState::Ready) =>
        {
            EventOutcome::StopOnNode
        }
        SessionEventKind::Starting { .. } => {
            if row.observed == Observed::None {
                row.observed = Observed::Starting;
                row.updated_at = now;
                return EventOutcome::Changed;
            }
            EventOutcome::Unchanged
        }
        SessionEventKind::Ready { player_url } => {
            row.observed = Observed::Ready;
            row.state = SessionState::Ready;
            row.player_url = Some(node_text(player_url, 2048));
            row.ready_at.get_or_insert(now);
            row.updated_at = now;
            EventOutcome::Changed
        }
        SessionEventKind::Ended(ended) => {
            if row.state.is_final() {
                return EventOutcome::Unchanged;
            }
            let (state, reason) = ended_state(row, ended);
            row.finish(now, state, reason);
            row.exit_code = ended.exit_code;
            row.detail = ended.detail.as_deref().map(|d| node_text(d, 2000));
            EventOutcome::Changed
        }
    }
}

/// The final state and reason of a session its node reports ended.
fn ended_state(row: &SessionRow, ended: &Ended) -> (SessionState, EndReason) {
    // A stop we asked for is reported with our reason (`stopped` by the user, `window_end`).
    let reason = match (ended.reason, row.stop_reason) {
        (NodeEndReason::Stopped, Some(ours)) => ours,
        (theirs, _) => EndReason::from(theirs),
    };
    let state = if ended.failed {
        SessionState::Failed
    } else {
        SessionState::Ended
    };
    (state, reason)
}

/// What reconciling a node's report against the coordinator's records asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconcile {
    /// Send `start_session` (again) for these: placed here, never acknowledged by the node.
    pub start: Vec<SessionId>,
    /// Send `stop_session` for these: running on the node, not wanted.
    pub stop: Vec<SessionId>,
    /// End these as `node_lost`: the node had them and no longer does, and reported no end.
    pub lost: Vec<SessionId>,
}

/// Compares the sessions the coordinator placed on a node (`ours`, those holding a slot there
/// and started) with the ones the node reports running (`theirs`). `link_since` is when the
/// current link came up: only what was sent before it can have been lost with the old link;
/// `full` is false on ordinary heartbeats, when only the unwanted sessions are looked at (an
/// event may still be on its way for the rest).
pub fn reconcile(
    ours: &[SessionRow],
    theirs: &[SessionId],
    link_since: Millis,
    full: bool,
) -> Reconcile {
    let mut out = Reconcile::default();
    for id in theirs {
        let wanted = ours
            .iter()
            .find(|r| &r.id == id)
            .is_some_and(|r| r.desired == Desired::Run && !r.state.is_final());
        let stop_pending = ours
            .iter()
            .find(|r| &r.id == id)
            .is_some_and(|r| r.desired == Desired::Stop && r.stop_sent_at.is_none());
        if !wanted && !stop_pending {
            out.stop.push(id.clone());
        }
    }
    if full {
        for r in ours {
            if r.state.is_final() || theirs.contains(&r.id) {
                continue;
            }
            if !matches!(r.state, SessionState::Starting | SessionState::Ready) {
                continue;
            }
            let sent_before_link = r.dispatched_at.is_some_and(|t| t < link_since);
            if !sent_before_link {
                continue; // not sent yet, or sent on this link: its events are still to come
            }
            if r.observed == Observed::None && r.desired == Desired::Run {
                out.start.push(r.id.clone());
            } else {
                out.lost.push(r.id.clone());
            }
        }
    }
    out
}

/// A title's record.
#[derive(Clone, Debug, PartialEq)]
pub struct TitleRow {
    pub id: TitleId,
    pub name: String,
    pub description: String,
    pub image_url: Option<String>,
    pub application_id: ApplicationId,
    pub visibility: Visibility,
    pub max_players: u32,
    pub idle_timeout: u64,
    pub empty_timeout: u64,
    pub max_duration: u64,
    /// Who keeps its catalog data: an admin, or the nodes that advertise its application.
    pub source: api::TitleSource,
    /// False while a title made from a node's application waits for an admin's approval: only
    /// admins see it then.
    pub approved: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A node's record.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub id: NodeId,
    pub version: String,
    pub public_url: String,
    /// Where a reverse proxy reaches the node (its hello's `upstream_url`, checked).
    pub upstream_url: Option<String>,
    pub max_sessions: u32,
    pub max_sessions_per_gpu: u32,
    pub applications: Vec<ApplicationId>,
    pub gpus: Vec<pxs_protocol::node::GpuInfo>,
    pub online: bool,
    pub admin_drain: bool,
    /// When the admin's drain stops the node's sessions still running (ms); `None`: never.
    pub drain_deadline: Option<Millis>,
    pub node_drain: bool,
    pub link_owner: Option<String>,
    pub link_since: Option<Millis>,
    pub last_seen: Millis,
    pub offline_since: Option<Millis>,
    pub acked_seq: i64,
}

/// A node takes new sessions when it is online and neither an admin nor the node drains it.
pub fn node_available(online: bool, admin_drain: bool, node_drain: bool) -> bool {
    online && !admin_drain && !node_drain
}

impl NodeRow {
    pub fn available(&self) -> bool {
        node_available(self.online, self.admin_drain, self.node_drain)
    }

    pub fn capacity(&self) -> u32 {
        crate::placement::capacity(
            self.max_sessions,
            self.max_sessions_per_gpu,
            self.gpus.len(),
        )
    }

    /// The state shown for the node, which runs `sessions` (starting or ready) now: a draining
    /// node with none left is drained.
    pub fn api_state(&self, sessions: usize) -> api::NodeState {
        if !self.online {
            api::NodeState::Offline
        } else if !(self.admin_drain || self.node_drain) {
            api::NodeState::Online
        } else if sessions > 0 {
            api::NodeState::Draining
        } else {
            api::NodeState::Drained
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, state: SessionState) -> SessionRow {
        SessionRow {
            id: SessionId::parse(id).unwrap(),
            title_id: TitleId::parse("demo").unwrap(),
            application_id: ApplicationId::parse("demo").unwrap(),
            node_id: Some(NodeId::parse("n1").unwrap()),
            state,
            desired: Desired::Run,
            observed: Observed::None,
            queue_seq: None,
            created_at: 0,
            start_at: None,
            duration: None,
            slot_start: Some(0),
            slot_end: None,
            dispatched_at: Some(10),
            stop_sent_at: None,
            ready_at: None,
            ended_at: None,
            end_reason: None,
            stop_reason: None,
            exit_code: None,
            detail: None,
            player_url: None,
            player_key: "k".into(),
            owner: crate::auth::Owner::Token("x".into()),
            ended_by: None,
            settings: SessionSettings::default(),
            updated_at: 0,
        }
    }

    fn n1() -> NodeId {
        NodeId::parse("n1").unwrap()
    }

    fn ended(reason: NodeEndReason, failed: bool) -> SessionEventKind {
        SessionEventKind::Ended(Ended {
            reason,
            failed,
            exit_code: None,
            signal: None,
            detail: None,
        })
    }

    #[test]
    fn ready_then_ended_moves_the_state_and_keeps_our_stop_reason() {
        let mut r = row("ses_a", SessionState::Starting);
        let ready = SessionEventKind::Ready {
            player_url: "ws://n1/sessions/ses_a/ws".into(),
        };
        assert_eq!(
            apply_event(Some(&mut r), &n1(), &ready, 50),
            EventOutcome::Changed
        );
        assert_eq!((r.state, r.ready_at), (SessionState::Ready, Some(50)));
        r.request_stop(60, EndReason::WindowEnd);
        r.request_stop(61, EndReason::Stopped);
        let e = ended(NodeEndReason::Stopped, false);
        assert_eq!(
            apply_event(Some(&mut r), &n1(), &e, 70),
            EventOutcome::Changed
        );
        assert_eq!(r.state, SessionState::Ended);
        assert_eq!(r.end_reason, Some(EndReason::WindowEnd));
        assert_eq!(
            apply_event(Some(&mut r), &n1(), &e, 80),
            EventOutcome::Unchanged,
            "one end only"
        );
    }

    #[test]
    fn a_failed_start_is_failed_with_the_nodes_reason() {
        let mut r = row("ses_a", SessionState::Starting);
        let e = ended(NodeEndReason::StartTimeout, true);
        apply_event(Some(&mut r), &n1(), &e, 70);
        assert_eq!(r.state, SessionState::Failed);
        assert_eq!(r.end_reason, Some(EndReason::StartTimeout));
    }

    #[test]
    fn sessions_we_do_not_want_are_stopped_on_the_node() {
        let starting = SessionEventKind::Ready {
            player_url: "x".into(),
        };
        assert_eq!(
            apply_event(None, &n1(), &starting, 1),
            EventOutcome::StopOnNode
        );
        let mut over = row("ses_a", SessionState::Ended);
        assert_eq!(
            apply_event(Some(&mut over), &n1(), &starting, 1),
            EventOutcome::StopOnNode
        );
        let mut elsewhere = row("ses_b", SessionState::Starting);
        elsewhere.node_id = Some(NodeId::parse("n2").unwrap());
        assert_eq!(
            apply_event(Some(&mut elsewhere), &n1(), &starting, 1),
            EventOutcome::StopOnNode
        );
        assert_eq!(elsewhere.state, SessionState::Starting, "not changed by n1");
    }

    /// A reservation is started by the coordinator at its time, never by its node: a node that
    /// reports one starting or ready early would make it take its slot before the window that
    /// placement counted, which can promise that slot twice.
    #[test]
    fn a_node_cannot_start_a_reserved_session_early() {
        for kind in [
            SessionEventKind::Starting {
                application_id: ApplicationId::parse("demo").unwrap(),
                pid: 42,
                gpu: None,
            },
            SessionEventKind::Ready {
                player_url: "ws://n1/sessions/ses_a/ws".into(),
            },
        ] {
            let mut r = row("ses_a", SessionState::Scheduled);
            r.start_at = Some(10_000);
            r.slot_start = Some(10_000);
            r.slot_end = Some(20_000);
            r.dispatched_at = None;
            let before = r.clone();
            assert_eq!(
                apply_event(Some(&mut r), &n1(), &kind, 50),
                EventOutcome::StopOnNode,
                "{kind:?}"
            );
            assert_eq!(r, before, "{kind:?}: the reservation is unchanged");
        }
    }

    #[test]
    fn reconcile_after_a_reconnect_restarts_unacknowledged_and_loses_vanished_sessions() {
        let unacked = row("ses_a", SessionState::Starting); // dispatched at 10, no event
        let mut vanished = row("ses_b", SessionState::Ready);
        vanished.observed = Observed::Ready;
        let mut running = row("ses_c", SessionState::Ready);
        running.observed = Observed::Ready;
        let mut fresh = row("ses_d", SessionState::Starting);
        fresh.dispatched_at = Some(200); // sent on the new link
        let mut stopping = row("ses_e", SessionState::Ready);
        stopping.request_stop(5, EndReason::Stopped);
        stopping.stop_sent_at = Some(6);
        let ours = vec![unacked, vanished, running, fresh, stopping];
        let theirs = vec![
            SessionId::parse("ses_c").unwrap(),
            SessionId::parse("ses_e").unwrap(),
            SessionId::parse("ses_x").unwrap(),
        ];
        let r = reconcile(&ours, &theirs, 100, true);
        let ids = |v: &[SessionId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&r.start), ["ses_a"]);
        assert_eq!(ids(&r.lost), ["ses_b"]);
        assert_eq!(ids(&r.stop), ["ses_e", "ses_x"]);
        let light = reconcile(&ours, &theirs, 100, false);
        assert!(light.start.is_empty() && light.lost.is_empty());
        assert_eq!(ids(&light.stop), ["ses_e", "ses_x"]);
    }
}
