//! The coordinator's shell around the pure rules of `placement` and `model`: it loads records,
//! calls a rule, stores the result in the same transaction, and then tells nodes and watchers.
//!
//! Every transaction that changes sessions holds the placement lock, so capacity is never
//! promised twice and no update is lost, also with several coordinators on one PostgreSQL. The
//! ones that need the whole picture to stand still (the queue's promotion, a timer's start, a
//! node's hello, a placement that will queue) hold it exclusive (`Store::begin_placement`). The
//! others hold it shared and lock the rows they change: a placement that starts now or books a
//! window (`Store::begin_admission`: the chosen node's placement lock, then its slots counted again), a
//! node's events and heartbeats (`Store::begin_node_events`: the node's row, then each session's
//! row) and a DELETE (`Store::begin_session_change`: the session's row), so they overlap each
//! other while no exclusive one overlaps any of them. Messages to nodes leave only after the
//! commit, from the durable record (the session row says what was sent: an outbox), so a crash
//! between the two resends rather than forgets; the node ignores a repeated `start_session`.
//!
//! One file per job: `tokens`, `views`, `sessions` (admission, ending, the outbox, the queue),
//! `links` (share links), `titles`, `nodes` (drains, node links, events, heartbeats), `timers`.

use crate::auth::{self, Caller, SessionAction, SessionKey, SessionRefusal, TokenKind};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{self, Desired, EventOutcome, NodeRow, SessionRow, TitleRow};
use crate::placement::{self, Interval, Millis, NodeSlots};
use crate::rules::{
    self, Admission, Due, Running, check_label, check_title, drain_deadline, ms, truncate,
};
pub use crate::rules::{parse_rfc3339, rfc3339};
use crate::store::{self, Store};
use pxs_protocol::api::{self, EndReason, NewSession, SessionState, TitleId};
use pxs_protocol::node::{
    CoordinatorToNode, Heartbeat, Hello, NodeId, SequencedEvent, SessionEventKind, SessionId,
    StartOptions, Token,
};
use pxs_protocol::player_token;
use sqlx::AnyConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{info, warn};

mod links;
mod nodes;
mod sessions;
mod timers;
mod titles;
mod tokens;
mod views;
pub use views::SessionQuery;

/// The clock, so tests can move time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock moved by hand (tests).
#[derive(Default)]
pub struct ManualClock(pub std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(at: Millis) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(at))
    }

    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Something watchers may want to look at again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Session(SessionId),
    Node(NodeId),
}

/// A node link held by this coordinator.
struct Link {
    id: u64,
    tx: mpsc::Sender<CoordinatorToNode>,
    /// Ends the link (a newer one from the same node replaced it, its token was revoked).
    closer: Arc<LinkCloser>,
    /// The id of the node token it came in with.
    token: String,
}

/// What [`Engine::node_events`] did with a batch of a node's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsApplied {
    /// The highest `seq` now applied (or seen before): acknowledge it.
    pub acked: u64,
    /// The `seq` of an event that skipped ahead of `acked + 1`; it and the batch behind it were
    /// not applied.
    pub refused: Option<u64>,
}

/// Ends a node link from outside its task, with the reason its close frame gives the node.
#[derive(Default)]
pub struct LinkCloser {
    notify: Notify,
    reason: Mutex<Option<(u16, &'static str)>>,
}

impl LinkCloser {
    /// Asks the link to close with a WebSocket close `code` and `reason`; the first one given
    /// is the one the node reads.
    pub fn close(&self, code: u16, reason: &'static str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert((code, reason));
        }
        self.notify.notify_one();
    }

    /// Waits for [`LinkCloser::close`] and returns its code and reason.
    pub async fn closed(&self) -> (u16, &'static str) {
        self.notify.notified().await;
        self.reason
            .lock()
            .ok()
            .and_then(|r| *r)
            .unwrap_or((1000, "closed by the coordinator"))
    }
}

pub struct Engine {
    pub store: Store,
    pub config: Config,
    /// Derives each session's signing key; none is stored.
    keys: crate::keys::SessionKeys,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Names this coordinator as the holder of a node link.
    pub instance: String,
    links: Mutex<HashMap<NodeId, Link>>,
    next_link: AtomicU64,
    changes: broadcast::Sender<Change>,
    kick: Notify,
    token_cache: Mutex<HashMap<String, (String, api::Role, Millis)>>,
    /// Heartbeats of idle nodes not yet written: (when, draining). The timer writes them in one
    /// transaction, so 10,000 idle nodes cost one write per tick, not one per heartbeat.
    seen: Mutex<HashMap<NodeId, (Millis, bool)>>,
    /// When an admin's drain was last resent to a node that still reports not draining.
    drain_resent: Mutex<HashMap<NodeId, Millis>>,
    /// The players each session of a node linked here had at its last heartbeat (for admins'
    /// lists; a session on a node linked to another coordinator is not known here).
    players: Mutex<HashMap<NodeId, Vec<(SessionId, u32)>>>,
    /// PostgreSQL: the picture of every node and slot that placements rank candidate nodes by,
    /// and when it was read (`sessions::RANKING_TTL`).
    ranking: Mutex<Option<(std::time::Instant, Arc<Vec<NodeSlots>>)>>,
    /// The catalog's picture of every node and slot, shared by requests that arrive together
    /// (`views::catalog_snapshot`).
    catalog: crate::fresh::Fresh<Arc<Vec<NodeSlots>>>,
}

impl Engine {
    pub fn new(
        store: Store,
        config: Config,
        keys: crate::keys::SessionKeys,
        clock: Arc<dyn Clock>,
    ) -> Arc<Engine> {
        let (changes, _) = broadcast::channel(4096);
        Arc::new(Engine {
            store,
            config,
            keys,
            clock,
            metrics: Metrics::default(),
            instance: auth::new_id("crd_"),
            links: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            changes,
            kick: Notify::new(),
            token_cache: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            drain_resent: Mutex::new(HashMap::new()),
            players: Mutex::new(HashMap::new()),
            ranking: Mutex::new(None),
            catalog: crate::fresh::Fresh::default(),
        })
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn publish(&self, c: Change) {
        let _ = self.changes.send(c);
    }

    /// Wakes the timer loop now (something it handles may have changed).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    pub async fn kicked(&self) {
        self.kick.notified().await;
    }

    pub fn link_count(&self) -> usize {
        self.links.lock().map(|l| l.len()).unwrap_or(0)
    }

    fn send(&self, node: &NodeId, msg: CoordinatorToNode) -> bool {
        let tx = self
            .links
            .lock()
            .ok()
            .and_then(|l| l.get(node).map(|l| l.tx.clone()));
        match tx {
            Some(tx) => tx.try_send(msg).is_ok(),
            None => false,
        }
    }

    fn has_link(&self, node: &NodeId) -> bool {
        self.links.lock().is_ok_and(|l| l.contains_key(node))
    }
}

fn no_title(id: &TitleId) -> ApiError {
    ApiError::not_found(format!("no title `{id}`"))
}

/// The answer for a session the caller may not see, or that does not exist (the same, so that
/// nothing leaks): plain words for a person, without the id they already have.
pub(crate) const NO_SESSION: &str = "There is no session here, or it is not yours to open: \
    ask its owner for an invitation link.";

fn no_session(_id: &SessionId) -> ApiError {
    ApiError::not_found(NO_SESSION)
}

/// The answer to a caller refused something on session `id`: as if it did not exist when the
/// session is not theirs to see, else 403 with what to do.
fn refused(id: &SessionId, r: SessionRefusal) -> ApiError {
    match r {
        SessionRefusal::Hidden => no_session(id),
        SessionRefusal::NotOwner(message) => ApiError::new(crate::error::Kind::Forbidden, message),
    }
}
