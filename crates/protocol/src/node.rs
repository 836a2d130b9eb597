//! The node link: the one WebSocket a session server (a "node") keeps open to the coordinator.
//!
//! The node dials `GET /api/v1/nodes/link` with `Authorization: Bearer <node token>`; one JSON
//! object per text frame, one enum per direction, each tagged by `type`:
//! - [`NodeToCoordinator`]: `hello`, `heartbeat`, `event`, `applications`;
//! - [`CoordinatorToNode`]: `welcome`, `ack`, `start_session`, `stop_session`, `drain`,
//!   `drain_gracefully`, `resume`.
//!
//! ```text
//!  node                                   coordinator
//!   │── hello {node, version, capacity, applications, gpus, sessions} ──▶│
//!   │◀─────────────────────── welcome {acked: 41} ──────────────────────│  (highest seq it has)
//!   │── event {seq: 42, ...}  event {seq: 43, ...}  (unacked replayed) ─▶│
//!   │◀─────────────────────────── ack {seq: 43} ────────────────────────│  (cumulative)
//!   │── heartbeat {sessions (observed state), gpus} every few seconds ──▶│
//!   │◀──── start_session {session_id, application_id, options} ─────────│
//!   │── event {seq: 44, session_id, kind: starting} ... ready ... ended ─▶│
//! ```
//!
//! **Delivery.** Session events carry a sequence number that the node assigns once and keeps
//! (also across its own restarts: it is persisted with the unacknowledged events). The node
//! keeps every event until the coordinator acknowledges it and resends the unacknowledged ones,
//! in order, after each `welcome`. The coordinator processes an event only if its `seq` is above
//! the highest it has processed, and acknowledges cumulatively. So nothing is lost while the link
//! is down, and nothing is applied twice when an `ack` was lost.
//!
//! Variants and fields are never renamed or reused: add new ones (with `#[serde(default)]`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest id we accept. Ids appear in URL paths and file names, so they are short and made
/// of `[A-Za-z0-9_.-]` only (see [`IdError`]).
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("an id may contain only letters, digits, `_`, `-` and `.` (not starting with `.`)")]
    BadChar,
    #[error("a {kind} id starts with `{prefix}`")]
    Prefix {
        kind: &'static str,
        prefix: &'static str,
    },
}

pub(crate) fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if s.starts_with('.')
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks the characters and length (and the prefix, for ids we mint).
            pub fn parse(s: &str) -> Result<Self, IdError> {
                $crate::node::check_id(s)?;
                let prefix: Option<&'static str> = $prefix;
                if let Some(p) = prefix {
                    if !s.starts_with(p) || s.len() == p.len() {
                        return Err(IdError::Prefix { kind: $kind, prefix: p });
                    }
                }
                Ok($name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

pub(crate) use id_type;

id_type!(
    /// A session, minted by the coordinator: `ses_` and random letters and digits.
    SessionId,
    "session",
    Some("ses_")
);
id_type!(
    /// A node, named by its operator (`[node] name`).
    NodeId,
    "node",
    None
);
id_type!(
    /// An application declared on a node (`[[applications]] id`), chosen by its operator.
    ApplicationId,
    "application",
    None
);

impl SessionId {
    /// A new id from 16 random bytes: `ses_` and 26 base-32 characters (lower case).
    pub fn from_random(bytes: [u8; 16]) -> SessionId {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let mut n = u128::from_be_bytes(bytes);
        let mut s = String::with_capacity(30);
        s.push_str("ses_");
        for _ in 0..26 {
            s.push(ALPHABET[(n & 31) as usize] as char);
            n >>= 5;
        }
        SessionId(s)
    }
}

/// A player token on the node link.
pub use crate::secret::Secret as Token;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = u64;

/// What a node sends to the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeToCoordinator {
    /// First message on every connection.
    Hello(Hello),
    /// Every few seconds: the sessions as the node observes them, and its GPUs.
    Heartbeat(Heartbeat),
    /// A session event, numbered; kept and resent until acknowledged.
    Event(SequencedEvent),
    /// The applications changed (after a reload); replaces the list sent in `hello`.
    Applications { applications: Vec<ApplicationInfo> },
}

/// What the coordinator sends to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorToNode {
    /// The answer to `hello`: the highest event `seq` the coordinator has processed from this
    /// node (0: none). The node then resends every later event, in order.
    Welcome { acked: u64 },
    /// Every event up to and including `seq` is processed.
    Ack { seq: u64 },
    /// Start a session of a declared application. Answered by events: `starting`, then `ready`
    /// or `ended` (with `reason: rejected` if it cannot start at all).
    StartSession {
        session_id: SessionId,
        application_id: ApplicationId,
        #[serde(default)]
        options: StartOptions,
    },
    /// End a session (graceful stop, then the process tree is killed after the grace period).
    StopSession { session_id: SessionId },
    /// Stop every session at once and refuse new ones; the node stays connected. (Kept as it
    /// was; the coordinator sends `drain_gracefully`.)
    Drain,
    /// Take no new sessions; let the running ones end by themselves, and stop (reason `drained`)
    /// those still running `stop_after_ms` from now (absent: none is stopped; 0: at once).
    /// Relative, so the two clocks need not agree; sent again with the time left after every
    /// `hello`. A node that does not know it ignores it.
    DrainGracefully {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_after_ms: Option<u64>,
    },
    /// Undo `drain_gracefully` (and `drain`): take new sessions again. A drain the node's
    /// operator asked for (`pxs session-server drain`) stays until the operator resumes.
    Resume,
    /// A share link of a session was revoked: close the players who joined with it (their
    /// player tokens carry `link`) and refuse it from now on. Sent again after every `hello`
    /// for the links of sessions still on the node. A node that does not know it ignores it.
    RevokeLink {
        session_id: SessionId,
        link_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub node: NodeId,
    /// The node's software version.
    pub version: String,
    /// Where browsers reach this node: players join `<public_url>/sessions/<id>/ws`.
    pub public_url: String,
    /// Where a reverse proxy in front of the node (NGINX, `pxs nginx-config`) reaches its HTTP
    /// port, e.g. `http://10.0.0.11:8081`; absent when the node does not know (it listens on
    /// every address and was not told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_url: Option<String>,
    pub capacity: Capacity,
    pub applications: Vec<ApplicationInfo>,
    pub gpus: Vec<GpuInfo>,
    /// The sessions running now (after a reconnect: the ones started before).
    pub sessions: Vec<SessionStatus>,
    /// The node is draining: it takes no new sessions.
    #[serde(default)]
    pub draining: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Sessions the node runs at most.
    pub max_sessions: u32,
    /// Sessions per GPU at most (0 when there is no GPU or no limit).
    #[serde(default)]
    pub max_sessions_per_gpu: u32,
}

/// An application as the node advertises it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationInfo {
    pub id: ApplicationId,
    pub name: String,
    pub res_x: u32,
    pub res_y: u32,
    /// Players per session; 0 = unlimited.
    pub max_players: u32,
    /// For the catalog: what the application is (the title's description when the coordinator
    /// makes a title of it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// For the catalog: a picture of it (http(s) URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// For the catalog: who may see the title the coordinator makes of it (absent: public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<crate::api::Visibility>,
    /// The application's idle timeout in whole seconds (0: never), for the title the
    /// coordinator makes of it (the title's limits replace the application's in each start).
    /// Absent: the coordinator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// The application's empty timeout in whole seconds (0: never); as `idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_timeout: Option<u64>,
}

/// A GPU found on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<u64>,
}

/// A GPU's use, in heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUse {
    pub index: u32,
    /// Sessions assigned to this GPU.
    pub sessions: u32,
    /// From the driver, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub at: UnixMillis,
    pub sessions: Vec<SessionStatus>,
    /// Sessions this node can still start.
    pub free_slots: u32,
    pub gpus: Vec<GpuUse>,
    #[serde(default)]
    pub draining: bool,
}

/// The observed state of a session, as the node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedState {
    /// The application is launched; its streamer has not identified yet.
    Starting,
    /// The streamer is connected and identified: players can join.
    Ready,
    /// The node is stopping it (graceful stop sent, waiting for the process tree to end).
    Stopping,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: SessionId,
    pub application_id: ApplicationId,
    pub state: ObservedState,
    /// Players connected to the session's signalling now.
    pub players: u32,
    /// The GPU the session runs on, if the node has GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    pub started_at: UnixMillis,
}

/// An event with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: SessionEvent,
}

/// Something that happened to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub session_id: SessionId,
    pub at: UnixMillis,
    #[serde(flatten)]
    pub kind: SessionEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEventKind {
    /// The application process is running (`pid` as the node's OS sees it).
    Starting {
        application_id: ApplicationId,
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu: Option<u32>,
    },
    /// The streamer identified: players can join at `player_url`.
    Ready { player_url: String },
    /// The session is over and its process tree gone. Exactly one per session.
    Ended(Ended),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub reason: EndReason,
    /// True when the session never became ready or the application failed: `crashed`, a
    /// non-zero exit, `start_timeout`, `spawn_failed`, `rejected`, `node_restart` before ready.
    pub failed: bool,
    /// The application's exit code, if it exited by itself with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the application (Unix), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// A human-readable detail (why a start was rejected, a spawn error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `stop_session` from the coordinator.
    Stopped,
    /// The application exited by itself (see `exit_code`).
    Exited,
    /// The application was killed by a signal it did not get from us (see `signal`).
    Crashed,
    /// The streamer did not identify within the application's `start_timeout`.
    StartTimeout,
    /// The application could not be launched (see `detail`).
    SpawnFailed,
    /// Refused before launching: unknown application, node full or draining, duplicate id.
    Rejected,
    /// Every connected player was inactive for `idle_timeout`.
    Idle,
    /// No player was connected for `empty_timeout`.
    Empty,
    /// The session ran for `max_duration`.
    MaxDuration,
    /// Stopped by a drain: `drain`, or the deadline of `drain_gracefully` or of the operator's
    /// `pxs session-server drain`.
    Drained,
    /// The session server is shutting down.
    NodeShutdown,
    /// The session server restarted after dying; it found and killed the session's processes.
    NodeRestart,
}

/// Per-session options given by the coordinator. Every field is optional: one left out keeps
/// what the node's application config says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartOptions {
    /// The session's signing key for player tokens (see [`crate::player_token`]): players present
    /// a token signed with it (`?token=` or `Authorization: Bearer`) to join. Players may also
    /// present the key itself (it never expires and carries no role, so it is not for users).
    /// `None`: nobody may join.
    pub player_token: Option<Token>,
    /// Override the application's resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res_x: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res_y: Option<u32>,
    /// Override the application's players per session; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    /// Override the application's idle timeout (every connected player inactive this long ends
    /// the session), in seconds; 0 = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Override the application's empty timeout (nobody connected this long ends the session),
    /// in seconds; 0 = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_timeout: Option<u64>,
    /// The session's longest run, in seconds from the start command; 0 = no limit from the
    /// coordinator. The application's own `max_duration` on the node still caps it: the
    /// shorter of the two applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u64>,
    /// The STUN and TURN servers of the session's players and application (the coordinator's
    /// `[ice]`). A node with its own `[ice]` uses that instead. Carries the TURN secret: never
    /// logged, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice: Option<Box<crate::ice::IceSettings>>,
}

impl NodeToCoordinator {
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no custom
        // Serialize impl returns an error.
        serde_json::to_string(self).expect("NodeToCoordinator serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl CoordinatorToNode {
    pub fn to_json(&self) -> String {
        // See NodeToCoordinator::to_json.
        serde_json::to_string(self).expect("CoordinatorToNode serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sid(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    #[test]
    fn ids_are_checked_at_the_edge() {
        assert!(SessionId::parse("ses_abc").is_ok());
        assert_eq!(
            SessionId::parse("abc"),
            Err(IdError::Prefix {
                kind: "session",
                prefix: "ses_"
            })
        );
        assert_eq!(
            SessionId::parse("ses_"),
            Err(IdError::Prefix {
                kind: "session",
                prefix: "ses_"
            })
        );
        assert_eq!(SessionId::parse("ses_../x"), Err(IdError::BadChar));
        assert_eq!(ApplicationId::parse(""), Err(IdError::Empty));
        assert_eq!(ApplicationId::parse(".hidden"), Err(IdError::BadChar));
        assert_eq!(ApplicationId::parse(&"a".repeat(65)), Err(IdError::TooLong));
        assert!(ApplicationId::parse("demo-app_2.1").is_ok());
        let bad = r#"{"type":"stop_session","session_id":"ses_a/b"}"#;
        assert!(CoordinatorToNode::from_json(bad).is_err());
    }

    #[test]
    fn minted_session_ids_are_valid_and_distinct() {
        let a = SessionId::from_random([1; 16]);
        let b = SessionId::from_random([2; 16]);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 30);
        assert_eq!(SessionId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn tokens_are_redacted() {
        let o = StartOptions {
            player_token: Some(Token("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    fn round_trip_c(msg: CoordinatorToNode, expected: Value) {
        let v: Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v, expected);
        assert_eq!(CoordinatorToNode::from_json(&v.to_string()).unwrap(), msg);
    }

    fn round_trip_n(msg: NodeToCoordinator, expected: Value) {
        let v: Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v, expected);
        assert_eq!(NodeToCoordinator::from_json(&v.to_string()).unwrap(), msg);
    }

    #[test]
    fn coordinator_messages_have_stable_shapes() {
        round_trip_c(
            CoordinatorToNode::Welcome { acked: 41 },
            json!({"type":"welcome","acked":41}),
        );
        round_trip_c(
            CoordinatorToNode::Ack { seq: 43 },
            json!({"type":"ack","seq":43}),
        );
        round_trip_c(
            CoordinatorToNode::StartSession {
                session_id: sid("ses_1"),
                application_id: ApplicationId::parse("demo").unwrap(),
                options: StartOptions {
                    player_token: Some(Token("t".into())),
                    res_x: Some(640),
                    res_y: None,
                    ..Default::default()
                },
            },
            json!({"type":"start_session","session_id":"ses_1","application_id":"demo",
                   "options":{"player_token":"t","res_x":640}}),
        );
        round_trip_c(
            CoordinatorToNode::StartSession {
                session_id: sid("ses_1"),
                application_id: ApplicationId::parse("demo").unwrap(),
                options: StartOptions {
                    player_token: Some(Token("t".into())),
                    res_x: None,
                    res_y: None,
                    max_players: Some(0),
                    idle_timeout: Some(5),
                    empty_timeout: Some(0),
                    max_duration: Some(7200),
                    ice: None,
                },
            },
            json!({"type":"start_session","session_id":"ses_1","application_id":"demo",
                   "options":{"player_token":"t","max_players":0,"idle_timeout":5,
                              "empty_timeout":0,"max_duration":7200}}),
        );
        round_trip_c(
            CoordinatorToNode::StartSession {
                session_id: sid("ses_1"),
                application_id: ApplicationId::parse("demo").unwrap(),
                options: StartOptions {
                    ice: Some(Box::new(crate::ice::IceSettings {
                        urls: vec!["turn:t.example:3478".into()],
                        turn_secret: Some(Token("a-secret-of-twenty-chars".into())),
                        turn_ttl: Some(600),
                        ..Default::default()
                    })),
                    ..StartOptions::default()
                },
            },
            json!({"type":"start_session","session_id":"ses_1","application_id":"demo",
                   "options":{"player_token":null,"ice":{"urls":["turn:t.example:3478"],
                              "turn_secret":"a-secret-of-twenty-chars","turn_ttl":600}}}),
        );
        round_trip_c(
            CoordinatorToNode::StopSession {
                session_id: sid("ses_1"),
            },
            json!({"type":"stop_session","session_id":"ses_1"}),
        );
        round_trip_c(CoordinatorToNode::Drain, json!({"type":"drain"}));
        round_trip_c(
            CoordinatorToNode::DrainGracefully {
                stop_after_ms: Some(90_000),
            },
            json!({"type":"drain_gracefully","stop_after_ms":90_000}),
        );
        round_trip_c(
            CoordinatorToNode::DrainGracefully {
                stop_after_ms: None,
            },
            json!({"type":"drain_gracefully"}),
        );
        round_trip_c(CoordinatorToNode::Resume, json!({"type":"resume"}));
        round_trip_c(
            CoordinatorToNode::RevokeLink {
                session_id: SessionId::parse("ses_x").unwrap(),
                link_id: "lnk_1".into(),
            },
            json!({"type":"revoke_link","session_id":"ses_x","link_id":"lnk_1"}),
        );
        // Options may be left out.
        let m = CoordinatorToNode::from_json(
            r#"{"type":"start_session","session_id":"ses_2","application_id":"demo"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, CoordinatorToNode::StartSession { options, .. } if options == StartOptions::default())
        );
        // So may each limit, as an older coordinator sends them: they stay `None`, not 0.
        let m = CoordinatorToNode::from_json(
            r#"{"type":"start_session","session_id":"ses_2","application_id":"demo",
                "options":{"player_token":"t","res_x":640,"res_y":360}}"#,
        )
        .unwrap();
        let CoordinatorToNode::StartSession { options, .. } = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (
                options.max_players,
                options.idle_timeout,
                options.empty_timeout,
                options.max_duration
            ),
            (None, None, None, None)
        );
        assert_eq!((options.res_x, options.res_y), (Some(640), Some(360)));
    }

    #[test]
    fn node_messages_have_stable_shapes() {
        round_trip_n(
            NodeToCoordinator::Event(SequencedEvent {
                seq: 7,
                event: SessionEvent {
                    session_id: sid("ses_1"),
                    at: 1_764_039_000_123,
                    kind: SessionEventKind::Ended(Ended {
                        reason: EndReason::Crashed,
                        failed: true,
                        exit_code: None,
                        signal: Some(6),
                        detail: None,
                    }),
                },
            }),
            json!({"type":"event","seq":7,"session_id":"ses_1","at":1_764_039_000_123_u64,
                   "kind":"ended","reason":"crashed","failed":true,"signal":6}),
        );
        round_trip_n(
            NodeToCoordinator::Event(SequencedEvent {
                seq: 8,
                event: SessionEvent {
                    session_id: sid("ses_1"),
                    at: 5,
                    kind: SessionEventKind::Ready {
                        player_url: "http://n/sessions/ses_1/ws".into(),
                    },
                },
            }),
            json!({"type":"event","seq":8,"session_id":"ses_1","at":5,"kind":"ready",
                   "player_url":"http://n/sessions/ses_1/ws"}),
        );
        round_trip_n(
            NodeToCoordinator::Heartbeat(Heartbeat {
                at: 1,
                sessions: vec![SessionStatus {
                    session_id: sid("ses_1"),
                    application_id: ApplicationId::parse("demo").unwrap(),
                    state: ObservedState::Ready,
                    players: 2,
                    gpu: Some(0),
                    started_at: 0,
                }],
                free_slots: 3,
                gpus: vec![GpuUse {
                    index: 0,
                    sessions: 1,
                    utilization_percent: Some(40),
                    memory_used_mb: None,
                }],
                draining: false,
            }),
            json!({"type":"heartbeat","at":1,"free_slots":3,"draining":false,
                   "sessions":[{"session_id":"ses_1","application_id":"demo","state":"ready",
                                "players":2,"gpu":0,"started_at":0}],
                   "gpus":[{"index":0,"sessions":1,"utilization_percent":40}]}),
        );
    }
}
