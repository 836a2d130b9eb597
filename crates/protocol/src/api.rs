//! The coordinator's REST API v1: request and response bodies, shared by the coordinator, its
//! tests, the benchmark and (as JSON) the web pages. See `docs/coordinator.md` for the endpoints.
//!
//! Times are RFC 3339 strings in UTC (`2026-11-25T10:00:00Z`), durations whole seconds.
//! Errors are `{"error": {"code": "...", "message": "..."}}` ([`ErrorBody`]).
//!
//! Fields are never renamed or reused; new ones are optional.

use crate::node::{ApplicationId, NodeId, SessionId};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::node::IdError;

crate::node::id_type!(
    /// A title, named by an admin (`demo`) or minted (`ttl_` and random characters). Same rules
    /// as the other ids: `[A-Za-z0-9_.-]`, at most 64 characters; no prefix is required, as an
    /// admin names titles freely.
    TitleId,
    "title",
    None
);

/// Who may see and start a title.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Listed to everyone; anonymous users may start it (within the anonymous limits).
    Public,
    /// Listed to and started by signed-in users (user or admin token) only.
    #[default]
    Private,
}

/// A title's name: 1 to this many characters (not bytes), no control characters.
pub const MAX_TITLE_NAME: usize = 200;
/// A title's description: at most this many characters; newlines and tabs allowed.
pub const MAX_TITLE_DESCRIPTION: usize = 4000;
/// A title's `image_url`: at most this many characters.
pub const MAX_IMAGE_URL: usize = 2000;

/// Who keeps a title's catalog data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TitleSource {
    /// Made with `POST /api/v1/titles`, or changed by an admin since: nodes never change it.
    #[default]
    Admin,
    /// Made by the coordinator from an application a node advertises (the title's id is the
    /// application's), and kept in step with what nodes advertise until an admin changes it.
    Node,
}

fn yes() -> bool {
    true
}

/// `GET /api/v1/titles[/{id}]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Title {
    pub id: TitleId,
    pub name: String,
    pub description: String,
    pub image_url: Option<String>,
    /// What nodes advertise (`[[applications]] id` in a session server's config).
    pub application_id: ApplicationId,
    pub visibility: Visibility,
    /// Players per session; 0 = unlimited.
    pub max_players: u32,
    /// End a session when every player has been inactive this long (seconds; 0 = never).
    pub idle_timeout: u64,
    /// End a session when nobody has been connected this long (seconds; 0 = never).
    pub empty_timeout: u64,
    /// Longest session (seconds; 0 = unlimited). Also the default `duration` of a session.
    pub max_duration: u64,
    pub availability: Availability,
    /// Who keeps its catalog data: `admin`, or `node` (made from a node's application).
    #[serde(default)]
    pub source: TitleSource,
    /// False while a title made from a node's application waits for an admin's
    /// `POST /api/v1/titles/{id}/approve` (coordinator `[titles] approve_new`): until then only
    /// admins see it.
    #[serde(default = "yes")]
    pub approved: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A title's capacity right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// Launches (`POST /api/v1/sessions` with the title alone) that would start now, one after
    /// another, rather than queue: slots free for the title's `max_duration` (or without end)
    /// from now, past every reservation, summed over the online nodes that have the
    /// application; 0 while others wait for a slot of the title.
    pub free_slots: u32,
    /// Online, not draining nodes that have the application.
    pub nodes: u32,
    /// Requests waiting in this title's queue.
    pub queued: u32,
}

/// `POST /api/v1/titles` (admin). Missing optional fields take the defaults shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTitle {
    /// Minted when absent.
    #[serde(default)]
    pub id: Option<TitleId>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub image_url: Option<String>,
    pub application_id: ApplicationId,
    /// Default `private`.
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub max_players: u32,
    /// Default 600 s.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// Default 120 s.
    #[serde(default)]
    pub empty_timeout: Option<u64>,
    /// Default 0 (unlimited).
    #[serde(default)]
    pub max_duration: u64,
}

/// `PATCH /api/v1/titles/{id}` (admin): the fields present are changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitlePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `null` is not distinguished from absent: send `""` to clear.
    pub image_url: Option<String>,
    pub application_id: Option<ApplicationId>,
    pub visibility: Option<Visibility>,
    pub max_players: Option<u32>,
    pub idle_timeout: Option<u64>,
    pub empty_timeout: Option<u64>,
    pub max_duration: Option<u64>,
}

/// A node's state as the coordinator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Online,
    Offline,
    /// Online, but takes no new sessions (an admin drained it, or it drains itself); sessions
    /// still run on it.
    Draining,
    /// Draining, and no session runs on it any more: it may be stopped.
    Drained,
}

/// `POST /api/v1/nodes/{id}/drain` (admin). The body may be left out: no deadline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDrain {
    /// When the sessions still running on the node are stopped (end reason `drained`): seconds
    /// from now (0: at once), or an RFC 3339 time. Absent: they run until they end by
    /// themselves. Draining again replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DrainDeadline>,
}

/// See [`NodeDrain::deadline`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DrainDeadline {
    /// Seconds from now.
    In(u64),
    /// An RFC 3339 time, like `2026-11-25T18:00:00Z` (checked by the coordinator).
    At(String),
}

impl<'de> Deserialize<'de> for DrainDeadline {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DrainDeadline;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("seconds from now (a whole number, 0 or more) or an RFC 3339 time")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DrainDeadline, E> {
                Ok(DrainDeadline::In(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DrainDeadline, E> {
                Ok(DrainDeadline::At(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `GET /api/v1/nodes[/{id}]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub state: NodeState,
    pub version: String,
    pub public_url: String,
    /// Where a reverse proxy reaches the node's HTTP port (`pxs nginx-config` reads it), as
    /// the node said in its last `hello`; null when it did not say.
    #[serde(default)]
    pub upstream_url: Option<String>,
    pub max_sessions: u32,
    pub max_sessions_per_gpu: u32,
    /// Sessions placed on the node now (starting or ready).
    pub sessions: u32,
    /// Slots reserved by scheduled sessions that have not started.
    pub reserved: u32,
    pub free_slots: u32,
    pub applications: Vec<ApplicationId>,
    pub gpus: Vec<crate::node::GpuInfo>,
    pub last_heartbeat: Option<String>,
    /// An admin's drain with a deadline: when the sessions still running are stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<String>,
}

/// `POST /api/v1/node-tokens` (admin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNodeToken {
    /// A label for the operator (which machine it is for).
    pub name: String,
    /// The one node that may link with it (its `hello` names this node). Without it, the token
    /// admits any node name: a fleet token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::node::NodeId>,
}

/// The answer to `POST /api/v1/node-tokens` and `POST /api/v1/tokens`: the only time the
/// token is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Node tokens bound to one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::node::NodeId>,
}

/// `GET /api/v1/tokens` and `GET /api/v1/node-tokens` (admin): tokens without their secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// API tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Node tokens bound to one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::node::NodeId>,
    pub created_at: String,
}

/// The role of an API token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

/// `POST /api/v1/tokens` (admin): a new API token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
}

/// A session's state, as users see it.
///
/// ```text
///  POST ─┬─ start_at ──▶ scheduled ──(lead time before start_at)──┐
///        ├─ no free slot ──▶ queued ──(a slot frees)──────────────┤
///        └─ a free slot ──────────────────────────────────────────┴─▶ starting ──▶ ready
///  scheduled / queued ──DELETE──▶ ended (cancelled)
///  starting / ready ──▶ ended  (stopped, idle, empty, max_duration, exited, node_lost, ...)
///  starting ──▶ failed         (crashed, start_timeout, spawn_failed, rejected, ...)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Scheduled,
    Queued,
    Starting,
    Ready,
    Ended,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 6] = [
        SessionState::Scheduled,
        SessionState::Queued,
        SessionState::Starting,
        SessionState::Ready,
        SessionState::Ended,
        SessionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Scheduled => "scheduled",
            SessionState::Queued => "queued",
            SessionState::Starting => "starting",
            SessionState::Ready => "ready",
            SessionState::Ended => "ended",
            SessionState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        SessionState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Ended or failed: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, SessionState::Ended | SessionState::Failed)
    }
}

/// Why a session ended: the coordinator's own reasons, and the node's ([`node::EndReason`],
/// which keep their names). A stop the coordinator asked for is reported with the coordinator's
/// reason (`stopped` by its user, `window_end`), not the node's.
///
/// [`node::EndReason`]: crate::node::EndReason
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Deleted while scheduled or queued, or before its node heard of it.
    Cancelled,
    /// Its booked window is over: the coordinator stopped it.
    WindowEnd,
    /// A scheduled session whose window passed before it could start.
    WindowMissed,
    /// Its node went away (no heartbeat past the grace, or it restarted without the session).
    NodeLost,
    /// A scheduled session whose node is gone found no other node.
    NoCapacity,
    // The node's reasons, with the node protocol's names.
    Stopped,
    Exited,
    Crashed,
    StartTimeout,
    SpawnFailed,
    Rejected,
    Idle,
    Empty,
    MaxDuration,
    Drained,
    NodeShutdown,
    NodeRestart,
}

impl EndReason {
    pub const ALL: [EndReason; 17] = [
        EndReason::Cancelled,
        EndReason::WindowEnd,
        EndReason::WindowMissed,
        EndReason::NodeLost,
        EndReason::NoCapacity,
        EndReason::Stopped,
        EndReason::Exited,
        EndReason::Crashed,
        EndReason::StartTimeout,
        EndReason::SpawnFailed,
        EndReason::Rejected,
        EndReason::Idle,
        EndReason::Empty,
        EndReason::MaxDuration,
        EndReason::Drained,
        EndReason::NodeShutdown,
        EndReason::NodeRestart,
    ];

    /// The name on the wire and in the database (the serde name; a test keeps them equal).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Cancelled => "cancelled",
            EndReason::WindowEnd => "window_end",
            EndReason::WindowMissed => "window_missed",
            EndReason::NodeLost => "node_lost",
            EndReason::NoCapacity => "no_capacity",
            EndReason::Stopped => "stopped",
            EndReason::Exited => "exited",
            EndReason::Crashed => "crashed",
            EndReason::StartTimeout => "start_timeout",
            EndReason::SpawnFailed => "spawn_failed",
            EndReason::Rejected => "rejected",
            EndReason::Idle => "idle",
            EndReason::Empty => "empty",
            EndReason::MaxDuration => "max_duration",
            EndReason::Drained => "drained",
            EndReason::NodeShutdown => "node_shutdown",
            EndReason::NodeRestart => "node_restart",
        }
    }

    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl From<crate::node::EndReason> for EndReason {
    fn from(r: crate::node::EndReason) -> EndReason {
        use crate::node::EndReason as N;
        match r {
            N::Stopped => EndReason::Stopped,
            N::Exited => EndReason::Exited,
            N::Crashed => EndReason::Crashed,
            N::StartTimeout => EndReason::StartTimeout,
            N::SpawnFailed => EndReason::SpawnFailed,
            N::Rejected => EndReason::Rejected,
            N::Idle => EndReason::Idle,
            N::Empty => EndReason::Empty,
            N::MaxDuration => EndReason::MaxDuration,
            N::Drained => EndReason::Drained,
            N::NodeShutdown => EndReason::NodeShutdown,
            N::NodeRestart => EndReason::NodeRestart,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /api/v1/sessions[/{id}]`, and the data of its server-sent events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub title_id: TitleId,
    pub node_id: Option<NodeId>,
    pub state: SessionState,
    /// 1 for the head of the title's queue; only while `queued`.
    pub queue_position: Option<u32>,
    pub created_at: String,
    /// When a scheduled session starts (its window opens).
    pub start_at: Option<String>,
    /// Seconds the session may run (its window); `None`: until it ends by itself.
    pub duration: Option<u64>,
    pub ready_at: Option<String>,
    pub ended_at: Option<String>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    pub exit_code: Option<i32>,
    /// Only while `ready`: the signalling WebSocket URL with a signed, expiring player token,
    /// made for the caller (its role, its share link, its name).
    pub join_url: Option<String>,
    /// The caller's role in this session: `owner` (its creator's token or owner key, and
    /// admins), `controller` or `viewer` (a share link's key).
    #[serde(default)]
    pub role: Option<String>,
    /// Who ended it through the API: `owner` or `admin`; `None` when it ended by itself.
    #[serde(default)]
    pub ended_by: Option<String>,
    /// Only in the answer to an anonymous `POST /api/v1/sessions`: the session's owner key
    /// (`pxs_key_…`), shown this once. Without it the session cannot be reached again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_key: Option<String>,
    /// Only in an admin's list: who created it, the id of its creator's token (as
    /// `GET /api/v1/tokens` lists it), or `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only in an admin's list, and only when known: the players connected now, as its node
    /// said in its last heartbeat to the coordinator that answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub players: Option<u32>,
    /// Only while `queued`, and only when it can be guessed: about how many seconds until it
    /// starts, from the slots its title runs on, the windows of the sessions holding them and how
    /// long the title's recent sessions lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_s: Option<u64>,
    /// Only while `queued`: what it waits for, `slot` (a free slot of its title) or
    /// `address_limit` (an anonymous client address runs `address_limit` sessions already: it
    /// starts after one of them ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<String>,
    /// With `queue_reason: address_limit`: the sessions an anonymous address may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_limit: Option<u32>,
}

/// A histogram of seconds, summed up: how many were observed and their sum (both only grow, so
/// two readings give the mean of what happened in between).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondsSummary {
    pub count: u64,
    pub sum: f64,
}

/// `GET /api/v1/metrics`: the coordinator's own numbers as JSON (what `/metrics` says to
/// Prometheus), for the admin console's charts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// When it was read.
    pub at: String,
    /// Sessions by state (every state, 0 included).
    pub sessions: std::collections::BTreeMap<String, i64>,
    /// Nodes by state (`online`, `draining`, `drained`, `offline`).
    pub nodes: std::collections::BTreeMap<String, i64>,
    /// Requests waiting for a slot.
    pub queue_length: i64,
    /// Node links held by the coordinator that answers.
    pub node_links: u64,
    /// From `start_session` sent to ready, on the coordinator that answers, since it started.
    pub session_start_seconds: SecondsSummary,
    /// The placement transaction of new sessions, on the coordinator that answers.
    pub placement_seconds: SecondsSummary,
}

/// The role a share link gives: never `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRole {
    /// May control: gets control by asking when nobody has it.
    Controller,
    /// Watches and chats.
    Viewer,
}

impl LinkRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRole::Controller => "controller",
            LinkRole::Viewer => "viewer",
        }
    }
}

/// `POST /api/v1/sessions/{id}/links` (the session's owner): a new share link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub role: LinkRole,
    /// Seconds until the link stops working: 60 to 2,592,000 (30 days); default 86,400.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// `GET /api/v1/sessions/{id}/links`: a share link without its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub role: LinkRole,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The answer to `POST /api/v1/sessions/{id}/links`: the only time its secret is shown (in
/// `url`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedLink {
    pub id: String,
    pub role: LinkRole,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// The player page with the link's key: `<public_url>/play/<session id>#key=<key>`.
    pub url: String,
    /// The signalling URL with a player token of the link's role, while the session is ready.
    pub join_url: Option<String>,
}

/// `POST /api/v1/sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    pub title_id: TitleId,
    /// RFC 3339; absent: now (or queued).
    #[serde(default)]
    pub start_at: Option<String>,
    /// Seconds; default: the title's `max_duration` (required for scheduled sessions when the
    /// title has no `max_duration`).
    #[serde(default)]
    pub duration: Option<u64>,
}

/// `GET /api/v1/titles`, `/nodes`, `/sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// Every error the API returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, for programs: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `payload_too_large`, `uri_too_long`,
    /// `unsupported_media_type`, `upgrade_required`, `too_many_requests`, `headers_too_large`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `GET /api/v1/events` (admin) and the session stream carry these, as SSE `event:` names.
pub mod event_names {
    pub const SESSION: &str = "session";
    pub const NODE: &str = "node";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_ids_follow_the_id_rules() {
        assert!(TitleId::parse("demo").is_ok());
        assert!(TitleId::parse("").is_err());
        assert!(TitleId::parse("a/b").is_err());
        assert!(serde_json::from_str::<TitleId>("\"../x\"").is_err());
    }

    #[test]
    fn new_session_rejects_unknown_fields() {
        let ok: NewSession = serde_json::from_str(r#"{"title_id":"demo","duration":60}"#).unwrap();
        assert_eq!(ok.duration, Some(60));
        assert!(serde_json::from_str::<NewSession>(r#"{"title_id":"demo","x":1}"#).is_err());
        assert!(
            serde_json::from_str::<NewSession>(r#"{"title_id":"demo","duration":-1}"#).is_err()
        );
    }

    #[test]
    fn end_reasons_round_trip_their_names_and_keep_the_nodes() {
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        let names: std::collections::HashSet<_> =
            EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), EndReason::ALL.len());
        use crate::node::EndReason as N;
        for n in [
            N::Stopped,
            N::Exited,
            N::Crashed,
            N::StartTimeout,
            N::SpawnFailed,
            N::Rejected,
            N::Idle,
            N::Empty,
            N::MaxDuration,
            N::Drained,
            N::NodeShutdown,
            N::NodeRestart,
        ] {
            assert_eq!(
                serde_json::to_value(n).unwrap(),
                EndReason::from(n).as_str(),
                "the node's name is kept"
            );
        }
    }

    /// The web pages' words for each end reason (`reason.<name>` in `web/app/i18n.ts`, in
    /// English and in Russian) cover every reason.
    #[test]
    fn the_web_pages_have_words_for_every_end_reason() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/app/i18n.ts");
        let words = std::fs::read_to_string(path).unwrap();
        for r in EndReason::ALL {
            let key = format!("\n    'reason.{}': ", r.as_str());
            assert_eq!(
                words.matches(&key).count(),
                2,
                "web/app/i18n.ts has words for `{}` in both languages",
                r.as_str()
            );
        }
    }

    #[test]
    fn states_round_trip_their_names() {
        for s in SessionState::ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
