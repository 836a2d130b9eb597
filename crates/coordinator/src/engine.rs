//! The coordinator's shell around the pure rules of `placement` and `model`: it loads records,
//! calls a rule, stores the result in the same transaction, and then tells nodes and watchers.
//!
//! Every transaction that changes sessions holds the placement lock (`Store::begin_placement`),
//! so capacity is never promised twice and no update is lost, also with several coordinators on
//! one PostgreSQL. A node's events hold it shared (`Store::begin_node_events`): they change only
//! that node's sessions and never take a slot, so different nodes' events may overlap. Messages
//! to nodes leave only after the commit, from the durable record (the session row says what was
//! sent: an outbox), so a crash between the two resends rather than forgets; the node ignores a
//! repeated `start_session`.

use crate::auth::{self, Caller, TokenKind};
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

    // -----------------------------------------------------------------------------------------
    // Tokens

    /// Makes sure the configured tokens are accepted, and that an admin token exists: when
    /// none does, mints one and returns it (to be shown once).
    pub async fn bootstrap_tokens(&self) -> Result<Option<String>, ApiError> {
        let now = self.now();
        let mut c = self.store.pool().acquire().await?;
        if let Some(t) = &self.config.admin_token {
            store::insert_api_token(
                &mut c,
                "tok_config_admin",
                &auth::hash_token(&t.0),
                api::Role::Admin,
                "admin_token from the configuration",
                now,
            )
            .await?;
        }
        if let Some(t) = &self.config.node_token {
            store::insert_node_token(
                &mut c,
                "ntk_config",
                &auth::hash_token(&t.0),
                "node_token from the configuration",
                None,
                now,
            )
            .await?;
        }
        if store::count_api_tokens(&mut c, api::Role::Admin).await? > 0 {
            return Ok(None);
        }
        let token = auth::new_token("pxs_adm_");
        store::insert_api_token(
            &mut c,
            &auth::new_id("tok_"),
            &auth::hash_token(&token),
            api::Role::Admin,
            "first admin token",
            now,
        )
        .await?;
        Ok(Some(token))
    }

    /// The caller of a request presenting `token` (None: anonymous from `ip`).
    pub async fn caller(
        &self,
        token: Option<&str>,
        ip: std::net::IpAddr,
    ) -> Result<Caller, ApiError> {
        let Some(token) = token else {
            return Ok(Caller::Anonymous {
                address_key: auth::address_key(ip),
            });
        };
        let hash = auth::hash_token(token);
        let now = self.now();
        if let Ok(cache) = self.token_cache.lock()
            && let Some((id, role, at)) = cache.get(&hash)
            && now - at < 60_000
        {
            return Ok(Caller::Token {
                id: id.clone(),
                role: *role,
            });
        }
        let mut c = self.store.reader().acquire().await?;
        match store::find_api_token(&mut c, &hash).await? {
            Some((id, role)) => {
                if let Ok(mut cache) = self.token_cache.lock() {
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(hash, (id.clone(), role, now));
                }
                Ok(Caller::Token { id, role })
            }
            None => Err(ApiError::unauthorized()),
        }
    }

    pub async fn create_api_token(
        &self,
        name: &str,
        role: api::Role,
    ) -> Result<api::CreatedToken, ApiError> {
        check_label(name)?;
        let token = match role {
            api::Role::Admin => auth::new_token("pxs_adm_"),
            api::Role::User => auth::new_token("pxs_usr_"),
        };
        let id = auth::new_id("tok_");
        let mut c = self.store.pool().acquire().await?;
        store::insert_api_token(
            &mut c,
            &id,
            &auth::hash_token(&token),
            role,
            name,
            self.now(),
        )
        .await?;
        Ok(api::CreatedToken {
            id,
            name: name.to_owned(),
            token,
            role: Some(role),
            node: None,
        })
    }

    /// A new node token; with `node`, only that node may link with it.
    pub async fn create_node_token(
        &self,
        name: &str,
        node: Option<NodeId>,
    ) -> Result<api::CreatedToken, ApiError> {
        check_label(name)?;
        let token = auth::new_token("pxs_node_");
        let id = auth::new_id("ntk_");
        let mut c = self.store.pool().acquire().await?;
        let hash = auth::hash_token(&token);
        store::insert_node_token(&mut c, &id, &hash, name, node.as_ref(), self.now()).await?;
        Ok(api::CreatedToken {
            id,
            name: name.to_owned(),
            token,
            role: None,
            node,
        })
    }

    pub async fn tokens(&self, kind: TokenKind) -> Result<Vec<api::TokenInfo>, ApiError> {
        let mut c = self.store.reader().acquire().await?;
        Ok(store::list_tokens(&mut c, kind)
            .await?
            .into_iter()
            .map(|(id, name, role, node, at)| api::TokenInfo {
                id,
                name,
                role,
                node,
                created_at: rfc3339(at),
            })
            .collect())
    }

    /// Revokes a token: it stops working at once (also cached ones). The last admin token
    /// cannot be revoked, so the coordinator always has an administrator.
    pub async fn revoke_token(&self, kind: TokenKind, id: &str) -> Result<(), ApiError> {
        let mut tx = self.store.begin().await?;
        let known = store::list_tokens(&mut tx, kind).await?;
        let Some((_, _, role, ..)) = known.iter().find(|(t, ..)| t == id) else {
            return Err(ApiError::not_found(format!(
                "no token `{}`",
                truncate(id, 64)
            )));
        };
        let admins = known
            .iter()
            .filter(|(_, _, r, ..)| *r == Some(api::Role::Admin))
            .count();
        if *role == Some(api::Role::Admin) && admins <= 1 {
            return Err(ApiError::conflict(
                "this is the last admin token; make another before revoking it",
            ));
        }
        store::delete_token(&mut tx, kind, id).await?;
        tx.commit().await?;
        if let Ok(mut cache) = self.token_cache.lock() {
            cache.clear();
        }
        info!(token = %id, ?kind, "token revoked");
        // The token is gone either way; the timer closes its links if this fails.
        if kind == TokenKind::Node
            && let Err(e) = self.close_revoked_links().await
        {
            warn!(error = ?e, "closing a revoked token's links failed; the timer will retry");
        }
        Ok(())
    }

    /// The id of node token `token`, if it is one, and the node it is bound to.
    pub async fn node_token(
        &self,
        token: &str,
    ) -> Result<Option<(String, Option<NodeId>)>, ApiError> {
        let mut c = self.store.reader().acquire().await?;
        Ok(store::find_node_token(&mut c, &auth::hash_token(token)).await?)
    }

    /// Closes this coordinator's node links whose token is no longer valid (revoked here or
    /// through another coordinator). Run by the timer and at once by a revocation here.
    async fn close_revoked_links(&self) -> Result<(), ApiError> {
        if self.link_count() == 0 {
            return Ok(());
        }
        let valid: std::collections::HashSet<String> = {
            let mut c = self.store.reader().acquire().await?;
            store::list_tokens(&mut c, TokenKind::Node)
                .await?
                .into_iter()
                .map(|(id, ..)| id)
                .collect()
        };
        if let Ok(links) = self.links.lock() {
            for (node, link) in links.iter() {
                if !valid.contains(&link.token) {
                    warn!(node = %node, token = %link.token, "node token revoked; closing its link");
                    link.closer.close(1008, "node token revoked");
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Views

    /// What placement sees now (optionally without one session, when re-placing it).
    async fn snapshot(
        c: &mut AnyConnection,
        now: Millis,
        without: Option<&SessionId>,
    ) -> Result<Vec<NodeSlots>, ApiError> {
        let nodes = store::placement_nodes(c).await?;
        let held = store::held_slots(c).await?;
        let mut busy: HashMap<&NodeId, Vec<Interval>> = HashMap::new();
        for (node, id, state, start, end) in &held {
            if Some(id) != without {
                busy.entry(node)
                    .or_default()
                    .push(model::busy_interval(*state, *start, *end, now));
            }
        }
        Ok(nodes
            .into_iter()
            .map(|n| NodeSlots {
                busy: busy.remove(&n.id).unwrap_or_default(),
                id: n.id,
                available: n.available,
                capacity: n.capacity,
                applications: n.applications,
            })
            .collect())
    }

    pub async fn title_view(
        &self,
        c: &mut AnyConnection,
        t: &TitleRow,
        slots: &[NodeSlots],
        now: Millis,
    ) -> Result<api::Title, ApiError> {
        let want = Interval::new(now, Some(now + 1));
        let with_app = slots
            .iter()
            .filter(|n| n.available && n.applications.contains(&t.application_id));
        let availability = api::Availability {
            free_slots: with_app
                .clone()
                .map(|n| placement::free_slots(n, &want))
                .sum(),
            nodes: u32::try_from(with_app.count()).unwrap_or(u32::MAX),
            queued: u32::try_from(store::queue_length(c, &t.id).await?).unwrap_or(u32::MAX),
        };
        Ok(api::Title {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            image_url: t.image_url.clone(),
            application_id: t.application_id.clone(),
            visibility: t.visibility,
            max_players: t.max_players,
            idle_timeout: t.idle_timeout,
            empty_timeout: t.empty_timeout,
            max_duration: t.max_duration,
            availability,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        })
    }

    /// The titles `caller` may see, with their availability.
    pub async fn titles(&self, caller: &Caller) -> Result<Vec<api::Title>, ApiError> {
        let now = self.now();
        let mut c = self.store.reader().acquire().await?;
        let slots = Self::snapshot(&mut c, now, None).await?;
        let mut out = Vec::new();
        for t in store::list_titles(&mut c).await? {
            if caller.may_use(t.visibility) {
                out.push(self.title_view(&mut c, &t, &slots, now).await?);
            }
        }
        Ok(out)
    }

    pub async fn title(&self, caller: &Caller, id: &TitleId) -> Result<api::Title, ApiError> {
        let now = self.now();
        let mut c = self.store.reader().acquire().await?;
        let t = store::get_title(&mut c, id)
            .await?
            .filter(|t| caller.may_use(t.visibility))
            .ok_or_else(|| no_title(id))?;
        let slots = Self::snapshot(&mut c, now, None).await?;
        self.title_view(&mut c, &t, &slots, now).await
    }

    /// The session as the API shows it, inside the transaction that wrote it.
    pub async fn session_view(
        &self,
        c: &mut AnyConnection,
        s: &SessionRow,
    ) -> Result<api::Session, ApiError> {
        let position = match s.state {
            SessionState::Queued => store::get_session_with_position(c, &s.id)
                .await?
                .and_then(|(_, p)| p),
            _ => None,
        };
        Ok(self.view(s, position))
    }

    /// The session as the API shows it, with the queue position read in the same statement.
    fn view(&self, s: &SessionRow, position: Option<i64>) -> api::Session {
        let queue_position = position.map(|p| u32::try_from(p).unwrap_or(u32::MAX));
        let join_url = match (s.state, &s.player_url) {
            (SessionState::Ready, Some(url)) => Some(self.join_url(s, url)),
            _ => None,
        };
        api::Session {
            id: s.id.clone(),
            title_id: s.title_id.clone(),
            node_id: s.node_id.clone(),
            state: s.state,
            queue_position,
            created_at: rfc3339(s.created_at),
            start_at: s.start_at.map(rfc3339),
            duration: s.duration.and_then(|d| u64::try_from(d).ok()),
            ready_at: s.ready_at.map(rfc3339),
            ended_at: s.ended_at.map(rfc3339),
            end_reason: s.end_reason,
            exit_code: s.exit_code,
            join_url,
        }
    }

    /// The key that signs the player tokens of `s`: derived from the session secret, or for a
    /// session created before keys were derived, the one stored with it until it ends.
    fn session_key(&self, s: &SessionRow) -> String {
        if s.player_key.is_empty() {
            self.keys.key(&s.id)
        } else {
            s.player_key.clone()
        }
    }

    /// The start message of `s`, with its key.
    fn start_of(&self, s: &SessionRow) -> CoordinatorToNode {
        start_message(s, self.session_key(s))
    }

    /// The player URL with a fresh controller token, valid for `join_token_ttl`.
    fn join_url(&self, s: &SessionRow, player_url: &str) -> String {
        let ttl = i64::try_from(self.config.join_token_ttl.as_millis()).unwrap_or(i64::MAX);
        let claims = player_token::Claims {
            session_id: s.id.clone(),
            role: player_token::Role::Controller,
            exp: u64::try_from(self.now().saturating_add(ttl)).unwrap_or(0),
            name: None,
        };
        let token = player_token::sign(self.session_key(s).as_bytes(), &claims);
        let sep = if player_url.contains('?') { '&' } else { '?' };
        format!("{player_url}{sep}token={token}")
    }

    pub async fn session(&self, caller: &Caller, id: &SessionId) -> Result<api::Session, ApiError> {
        let mut c = self.store.reader().acquire().await?;
        let (s, position) = store::get_session_with_position(&mut c, id)
            .await?
            .filter(|(s, _)| caller.may_access(&s.owner))
            .ok_or_else(|| no_session(id))?;
        Ok(self.view(&s, position))
    }

    pub async fn sessions(
        &self,
        caller: &Caller,
        state: Option<SessionState>,
        title: Option<&TitleId>,
    ) -> Result<Vec<api::Session>, ApiError> {
        let owner = match caller {
            Caller::Anonymous { .. } => return Err(ApiError::unauthorized()),
            Caller::Token {
                role: api::Role::Admin,
                ..
            } => None,
            Caller::Token { .. } => Some(caller.owner()),
        };
        let mut c = self.store.reader().acquire().await?;
        let rows = store::list_sessions(
            &mut c,
            &store::SessionFilter {
                state,
                title,
                owner: owner.as_ref(),
                limit: 500,
            },
        )
        .await?;
        Ok(rows.iter().map(|(r, p)| self.view(r, *p)).collect())
    }

    pub async fn nodes(&self) -> Result<Vec<api::Node>, ApiError> {
        let now = self.now();
        let mut c = self.store.reader().acquire().await?;
        let slots = Self::snapshot(&mut c, now, None).await?;
        let held = store::held_slots(&mut c).await?;
        Ok(store::list_nodes(&mut c)
            .await?
            .iter()
            .map(|n| node_view(n, &slots, &held, now))
            .collect())
    }

    pub async fn node(&self, id: &NodeId) -> Result<api::Node, ApiError> {
        self.nodes()
            .await?
            .into_iter()
            .find(|n| &n.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no node `{id}`")))
    }

    // -----------------------------------------------------------------------------------------
    // Sessions

    /// `POST /api/v1/sessions`: places the session now, queues it, or reserves its window.
    pub async fn create_session(
        &self,
        caller: &Caller,
        req: &NewSession,
    ) -> Result<api::Session, ApiError> {
        let started = std::time::Instant::now();
        let now = self.now();
        let wanted = rules::check_new_session(req, now)?;
        if let Caller::Anonymous { .. } = caller
            && !self.config.allow_anonymous
        {
            return Err(ApiError::unauthorized());
        }

        let mut tx = self.store.begin_placement().await?;
        let title = store::get_title(&mut tx, &req.title_id)
            .await?
            .filter(|t| caller.may_use(t.visibility))
            .ok_or_else(|| no_title(&req.title_id))?;
        if let Caller::Anonymous { .. } = caller {
            let live = store::count_live_of_owner(&mut tx, &caller.owner()).await?;
            rules::anonymous_quota(live, self.config.anonymous_sessions_per_address)?;
        }
        let duration = rules::duration(&wanted, &title)?;
        let id = SessionId::from_random(auth::random_bytes::<16>());
        let mut row = SessionRow::new(id, &title, caller.owner(), wanted.start_at, duration, now);
        let slots = Self::snapshot(&mut tx, now, None).await?;
        let queued = if wanted.start_at.is_none() {
            store::queue_length(&mut tx, &title.id).await?
        } else {
            0
        };
        match rules::admit(&slots, &title, wanted.start_at, duration, queued, now)? {
            Admission::Scheduled { node, window } => row.schedule(node, window),
            Admission::Start { node, window } => row.start_on(node, window, now),
            Admission::Queue => row.queue_seq = Some(store::next_queue_seq(&mut tx).await?),
        }
        // Held here: recorded as sent in this transaction, sent right after the commit (if the
        // link drops in between, the reconcile after its reconnect sends it again).
        let send_now = row.state == SessionState::Starting
            && row.node_id.as_ref().is_some_and(|n| self.has_link(n));
        if send_now {
            row.dispatched_at = Some(now);
        }
        store::insert_session(&mut tx, &row).await?;
        let view = self.session_view(&mut tx, &row).await?;
        tx.commit().await?;
        self.metrics
            .placement
            .observe(started.elapsed().as_secs_f64());
        info!(session = %row.id, title = %row.title_id, state = row.state.as_str(),
              node = ?row.node_id, "session created");
        if send_now && let Some(node) = &row.node_id {
            self.send(node, self.start_of(&row));
        }
        self.publish(Change::Session(row.id.clone()));
        Ok(view)
    }

    /// `DELETE /api/v1/sessions/{id}`: cancels a scheduled or queued session, stops a running
    /// one (its node confirms with an event). Returns the session and whether it is over.
    pub async fn delete_session(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<api::Session, ApiError> {
        let now = self.now();
        let mut tx = self.store.begin_placement().await?;
        let mut row = store::get_session(&mut tx, id)
            .await?
            .filter(|s| caller.may_access(&s.owner))
            .ok_or_else(|| no_session(id))?;
        let mut freed = false;
        match row.state {
            SessionState::Scheduled | SessionState::Queued => {
                freed = true;
                row.finish(now, SessionState::Ended, EndReason::Cancelled);
            }
            SessionState::Starting | SessionState::Ready => {
                if row.dispatched_at.is_none() {
                    // The node never heard of it: nothing to stop there.
                    freed = true;
                    row.finish(now, SessionState::Ended, EndReason::Cancelled);
                } else {
                    row.request_stop(now, EndReason::Stopped);
                }
            }
            SessionState::Ended | SessionState::Failed => {}
        }
        let stop_now = row.desired == Desired::Stop
            && row.stop_sent_at.is_none()
            && !row.state.is_final()
            && row.node_id.as_ref().is_some_and(|n| self.has_link(n));
        if stop_now {
            row.stop_sent_at = Some(now);
        }
        store::update_session(&mut tx, &row).await?;
        let view = self.session_view(&mut tx, &row).await?;
        tx.commit().await?;
        if stop_now && let Some(node) = &row.node_id {
            self.send(
                node,
                CoordinatorToNode::StopSession {
                    session_id: row.id.clone(),
                },
            );
        }
        self.publish(Change::Session(row.id.clone()));
        if freed {
            self.promote_queue().await;
        }
        Ok(view)
    }

    // -----------------------------------------------------------------------------------------
    // Titles

    pub async fn create_title(&self, new: api::NewTitle) -> Result<api::Title, ApiError> {
        let now = self.now();
        let t = TitleRow {
            id: match new.id {
                Some(id) => id,
                None => TitleId::parse(&auth::new_id("ttl_"))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            },
            name: new.name,
            description: new.description,
            image_url: new.image_url.filter(|u| !u.is_empty()),
            application_id: new.application_id,
            visibility: new.visibility,
            max_players: new.max_players,
            idle_timeout: new.idle_timeout.unwrap_or(600),
            empty_timeout: new.empty_timeout.unwrap_or(120),
            max_duration: new.max_duration,
            created_at: now,
            updated_at: now,
        };
        check_title(&t)?;
        let mut c = self.store.pool().acquire().await?;
        if !store::insert_title(&mut c, &t).await? {
            return Err(ApiError::conflict(format!("title `{}` exists", t.id)));
        }
        drop(c);
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), &t.id).await
    }

    pub async fn update_title(
        &self,
        id: &TitleId,
        patch: api::TitlePatch,
    ) -> Result<api::Title, ApiError> {
        let mut c = self.store.pool().acquire().await?;
        let mut t = store::get_title(&mut c, id)
            .await?
            .ok_or_else(|| no_title(id))?;
        if let Some(v) = patch.name {
            t.name = v;
        }
        if let Some(v) = patch.description {
            t.description = v;
        }
        if let Some(v) = patch.image_url {
            t.image_url = Some(v).filter(|u| !u.is_empty());
        }
        if let Some(v) = patch.application_id {
            t.application_id = v;
        }
        if let Some(v) = patch.visibility {
            t.visibility = v;
        }
        if let Some(v) = patch.max_players {
            t.max_players = v;
        }
        if let Some(v) = patch.idle_timeout {
            t.idle_timeout = v;
        }
        if let Some(v) = patch.empty_timeout {
            t.empty_timeout = v;
        }
        if let Some(v) = patch.max_duration {
            t.max_duration = v;
        }
        t.updated_at = self.now();
        check_title(&t)?;
        store::update_title(&mut c, &t).await?;
        drop(c);
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), id).await
    }

    pub async fn delete_title(&self, id: &TitleId) -> Result<(), ApiError> {
        let mut tx = self.store.begin_placement().await?;
        if store::get_title(&mut tx, id).await?.is_none() {
            return Err(no_title(id));
        }
        let live = store::count_sessions_of_title(&mut tx, id).await?;
        if live > 0 {
            return Err(ApiError::conflict(format!(
                "title `{id}` has {live} sessions that are not over; end them first"
            )));
        }
        store::delete_title(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Nodes

    /// `POST /api/v1/nodes/{id}/drain` (`Some`) and `…/resume` (`None`): recorded (it outlives
    /// restarts of the coordinator and the node), then told to the node if it is linked here;
    /// a node that links later is told after its hello ([`Engine::tell_drain`]).
    pub async fn set_drain(
        &self,
        id: &NodeId,
        drain: Option<&api::NodeDrain>,
    ) -> Result<api::Node, ApiError> {
        let now = self.now();
        let drain = match drain {
            None => None,
            Some(d) => Some(drain_deadline(d.deadline.as_ref(), now)?),
        };
        let mut tx = self.store.begin_placement().await?;
        if !store::set_admin_drain(&mut tx, id, drain).await? {
            return Err(ApiError::not_found(format!("no node `{id}`")));
        }
        tx.commit().await?;
        info!(node = %id, drain = drain.is_some(), deadline = ?drain.flatten().map(rfc3339),
              "node drain changed by an admin");
        if self.send(id, drain_message(drain, now))
            && drain.is_some()
            && let Ok(mut resent) = self.drain_resent.lock()
        {
            // The timer resends it only if the node still does not report it a TTL from now.
            resent.insert(id.clone(), now);
        }
        self.publish(Change::Node(id.clone()));
        if drain.is_none() {
            self.promote_queue().await;
        }
        self.node(id).await
    }

    /// Tells a node that just said hello what its admin drain is: `drain_gracefully` with the
    /// time left, or `resume` when it reports draining but no admin drains it (a resume it
    /// missed while its link was down; its operator's own drain stays).
    pub async fn tell_drain(&self, node: &NodeId, reports_draining: bool) -> Result<(), ApiError> {
        let drain = {
            let mut c = self.store.reader().acquire().await?;
            store::admin_drain(&mut c, node).await?
        };
        if drain.is_some() || reports_draining {
            self.send(node, drain_message(drain, self.now()));
        }
        Ok(())
    }

    /// An admin drains these nodes but their heartbeats say they do not drain: the message was
    /// lost (a full link queue) or went out before their link came to this coordinator. Sent
    /// again to those whose link is here, at most once per heartbeat TTL each.
    fn resend_drains(&self, nodes: &[(NodeId, Option<Millis>)], now: Millis) {
        let Ok(mut resent) = self.drain_resent.lock() else {
            return;
        };
        resent.retain(|n, _| nodes.iter().any(|(m, _)| m == n));
        let every = ms(self.config.heartbeat_ttl);
        for (node, deadline) in nodes {
            if !self.has_link(node) || resent.get(node).is_some_and(|t| now - t < every) {
                continue;
            }
            info!(node = %node, "the node does not report the admin's drain; sending it again");
            if self.send(node, drain_message(Some(*deadline), now)) {
                resent.insert(node.clone(), now);
            }
        }
    }

    /// A node said `hello` on a new link: records it and registers the link. Returns the link
    /// id, the link's start time and the `welcome`.
    pub async fn node_hello(
        &self,
        hello: &Hello,
        tx_link: mpsc::Sender<CoordinatorToNode>,
        closer: Arc<LinkCloser>,
        token: String,
    ) -> Result<(u64, Millis, u64), ApiError> {
        let now = self.now();
        let row = NodeRow {
            id: hello.node.clone(),
            version: model::node_text(&hello.version, 64),
            public_url: model::node_text(&hello.public_url, 512),
            max_sessions: hello.capacity.max_sessions,
            max_sessions_per_gpu: hello.capacity.max_sessions_per_gpu,
            applications: hello.applications.iter().map(|a| a.id.clone()).collect(),
            gpus: hello.gpus.clone(),
            online: true,
            admin_drain: false,
            drain_deadline: None,
            node_drain: hello.draining,
            link_owner: Some(self.instance.clone()),
            link_since: Some(now),
            last_seen: now,
            offline_since: None,
            acked_seq: 0,
        };
        let mut tx = self.store.begin_placement().await?;
        store::upsert_node_hello(&mut tx, &row).await?;
        let acked = store::acked_seq(&mut tx, &row.id).await?;
        tx.commit().await?;
        let link_id = self.next_link.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut links) = self.links.lock() {
            // A newer link replaces an older one, which is closed.
            let old = links.insert(
                row.id.clone(),
                Link {
                    id: link_id,
                    tx: tx_link,
                    closer,
                    token,
                },
            );
            if let Some(old) = old {
                old.closer
                    .close(1000, "replaced by a newer link from the same node");
            }
        }
        info!(node = %row.id, version = %row.version, max_sessions = row.max_sessions,
              applications = row.applications.len(), "node online");
        self.publish(Change::Node(row.id.clone()));
        Ok((link_id, now, u64::try_from(acked).unwrap_or(0)))
    }

    /// The link `link_id` of `node` closed.
    pub async fn link_closed(&self, node: &NodeId, link_id: u64, since: Millis) {
        let ours = self
            .links
            .lock()
            .map(|mut links| {
                if links.get(node).is_some_and(|l| l.id == link_id) {
                    links.remove(node);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(node);
        }
        if !ours || self.store.pool().is_closed() {
            // Replaced by a newer link, or we are shutting down: the node's row stays as the
            // newer link (or the next start, or the heartbeat TTL) leaves it.
            return;
        }
        let now = self.now();
        let res = async {
            let mut c = self.store.pool().acquire().await?;
            store::link_closed(&mut c, node, &self.instance, since, now).await
        }
        .await;
        match res {
            Ok(true) => info!(node = %node, "node offline (link closed)"),
            Ok(false) => {}
            Err(e) => warn!(node = %node, error = %e, "could not record a closed link"),
        }
        self.publish(Change::Node(node.clone()));
    }

    /// Applies events of `node` in one transaction (those arriving together: a node's replay
    /// after a reconnect, `starting` and `ready` sent back to back), each once by `seq`.
    ///
    /// A node numbers its events one after another from the `acked` of its welcome, so an event
    /// is either a repeat (`seq <= acked`, ignored) or the next one (`acked + 1`). One that skips
    /// ahead is refused with the events behind it: a node whose numbering is out of step (a lost
    /// data dir, a coordinator restored from a backup, a hostile peer) must not move `acked`
    /// where its real events would be ignored as repeats. The link is then closed and the node
    /// renumbers from the `acked` of its next welcome.
    pub async fn node_events(
        &self,
        node: &NodeId,
        evs: &[SequencedEvent],
    ) -> Result<EventsApplied, ApiError> {
        let now = self.now();
        let (mut tx, acked) = self.store.begin_node_events(node).await?;
        let mut acked = u64::try_from(acked).unwrap_or(0);
        let first_acked = acked;
        // After the commit: stops to send, sessions changed (with what to log), a slot freed.
        let mut stops = Vec::new();
        let mut changed: Vec<SessionRow> = Vec::new();
        let mut freed = false;
        let mut refused = None;
        for ev in evs {
            if ev.seq <= acked {
                continue;
            }
            if ev.seq != acked + 1 {
                warn!(node = %node, seq = ev.seq, acked,
                      "node event numbered out of step; refused with those behind it");
                refused = Some(ev.seq);
                break;
            }
            let id = &ev.event.session_id;
            let mut row = store::get_session(&mut tx, id).await?;
            let was = row.as_ref().map(|r| r.state);
            let outcome = model::apply_event(row.as_mut(), node, &ev.event.kind, now);
            match (&outcome, row) {
                (EventOutcome::Changed, Some(r)) => {
                    store::update_session(&mut tx, &r).await?;
                    freed |= r.state.is_final();
                    if r.state == SessionState::Ready && was != Some(SessionState::Ready) {
                        let from = r.dispatched_at.unwrap_or(r.created_at);
                        self.metrics
                            .start
                            .observe(((now - from).max(0) as f64) / 1000.0);
                    }
                    changed.retain(|c| c.id != r.id);
                    changed.push(r);
                }
                (EventOutcome::StopOnNode, _)
                    if !matches!(ev.event.kind, SessionEventKind::Ended(_)) =>
                {
                    stops.push(id.clone());
                }
                _ => {}
            }
            acked = ev.seq;
        }
        if acked == first_acked {
            tx.rollback().await;
            return Ok(EventsApplied { acked, refused });
        }
        store::set_acked(&mut tx, node, i64::try_from(acked).unwrap_or(i64::MAX)).await?;
        tx.commit().await?;
        for session_id in stops {
            self.send(node, CoordinatorToNode::StopSession { session_id });
        }
        for r in &changed {
            info!(session = %r.id, state = r.state.as_str(), reason = ?r.end_reason,
                  "session changed by its node");
            self.publish(Change::Session(r.id.clone()));
        }
        if freed {
            // The node may have become drained.
            self.publish(Change::Node(node.clone()));
            self.promote_queue().await;
        }
        Ok(EventsApplied { acked, refused })
    }

    /// A heartbeat from `node` on the link that came up at `link_since`; `first` after hello
    /// (then the node's report is complete: every replayed event came before it).
    pub async fn node_heartbeat(
        &self,
        node: &NodeId,
        hb: &Heartbeat,
        link_since: Millis,
        first: bool,
    ) -> Result<(), ApiError> {
        let now = self.now();
        if !first && hb.sessions.is_empty() {
            // The common case of an idle node: nothing to reconcile; the timer records it.
            if let Ok(mut seen) = self.seen.lock() {
                seen.insert(node.clone(), (now, hb.draining));
                return Ok(());
            }
        }
        let mut tx = self.store.begin_placement().await?;
        store::node_seen(&mut tx, node, now, hb.draining).await?;
        let ours = store::active_on_node(&mut tx, node).await?;
        let theirs: Vec<SessionId> = hb.sessions.iter().map(|s| s.session_id.clone()).collect();
        // Sessions the node runs that we hold as over or unknown are not in `ours`: load them so
        // reconcile sees them as unwanted.
        let r = model::reconcile(&ours, &theirs, link_since, first);
        let mut changed = Vec::new();
        for id in &r.start {
            if let Some(mut s) = ours.iter().find(|s| &s.id == id).cloned() {
                s.dispatched_at = None;
                store::update_session(&mut tx, &s).await?;
            }
        }
        for id in &r.lost {
            if let Some(mut s) = ours.iter().find(|s| &s.id == id).cloned() {
                s.finish(now, SessionState::Ended, EndReason::NodeLost);
                store::update_session(&mut tx, &s).await?;
                changed.push(s.id.clone());
            }
        }
        tx.commit().await?;
        for id in r.stop {
            self.send(node, CoordinatorToNode::StopSession { session_id: id });
        }
        for id in &changed {
            warn!(session = %id, node = %node, "session lost: its node no longer has it");
            self.publish(Change::Session(id.clone()));
        }
        if !r.start.is_empty() {
            self.dispatch().await;
        }
        if !changed.is_empty() {
            self.promote_queue().await;
        }
        Ok(())
    }

    pub async fn node_applications(
        &self,
        node: &NodeId,
        apps: &[pxs_protocol::node::ApplicationInfo],
    ) -> Result<(), ApiError> {
        let ids: Vec<_> = apps.iter().map(|a| a.id.clone()).collect();
        let mut tx = self.store.begin_placement().await?;
        store::set_node_applications(&mut tx, node, &ids).await?;
        tx.commit().await?;
        self.publish(Change::Node(node.clone()));
        self.promote_queue().await;
        Ok(())
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

    /// Sends what the records say is still to send to nodes linked here.
    pub async fn dispatch(&self) {
        if let Err(e) = self.try_dispatch().await {
            warn!(error = ?e, "dispatch failed; will retry");
        }
    }

    async fn try_dispatch(&self) -> Result<(), ApiError> {
        if self.link_count() == 0 {
            return Ok(());
        }
        // Most calls find nothing to send: look without the lock first.
        {
            let mut c = self.store.reader().acquire().await?;
            if store::undelivered(&mut c).await?.is_empty() {
                return Ok(());
            }
        }
        let now = self.now();
        let mut tx = self.store.begin_placement().await?;
        for mut s in store::undelivered(&mut tx).await? {
            let Some(node) = s.node_id.clone() else {
                continue;
            };
            if !self.has_link(&node) {
                continue;
            }
            let msg = if s.desired == Desired::Run {
                s.dispatched_at = Some(now);
                self.start_of(&s)
            } else {
                s.stop_sent_at = Some(now);
                CoordinatorToNode::StopSession {
                    session_id: s.id.clone(),
                }
            };
            if self.send(&node, msg) {
                store::update_session(&mut tx, &s).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Starts queue heads where slots are free, in each title's order.
    pub async fn promote_queue(&self) {
        match self.try_promote_queue().await {
            Ok(started) if started => self.dispatch().await,
            Ok(_) => {}
            Err(e) => warn!(error = ?e, "queue promotion failed; will retry"),
        }
    }

    async fn try_promote_queue(&self) -> Result<bool, ApiError> {
        // Most calls find no queue: look without the lock first.
        {
            let mut c = self.store.reader().acquire().await?;
            if store::queued_titles(&mut c).await?.is_empty() {
                return Ok(false);
            }
        }
        let now = self.now();
        let mut tx = self.store.begin_placement().await?;
        let titles = store::queued_titles(&mut tx).await?;
        if titles.is_empty() {
            return Ok(false);
        }
        let mut slots = Self::snapshot(&mut tx, now, None).await?;
        let mut queues = Vec::with_capacity(titles.len());
        for title in &titles {
            queues.push(store::queue_of(&mut tx, title).await?);
        }
        let promoted = rules::promote(&queues, &mut slots, now);
        for p in &promoted {
            let Some(mut s) = queues.iter().flatten().find(|s| s.id == p.session).cloned() else {
                continue;
            };
            s.start_on(p.node.clone(), p.window, now);
            store::update_session(&mut tx, &s).await?;
            info!(session = %s.id, node = %p.node, "queued session placed");
        }
        let started = !promoted.is_empty();
        // Every session behind a promoted one moved up its queue: watchers see new positions.
        let touched: Vec<SessionId> = queues
            .iter()
            .filter(|q| q.iter().any(|s| promoted.iter().any(|p| p.session == s.id)))
            .flatten()
            .map(|s| s.id.clone())
            .collect();
        tx.commit().await?;
        for id in touched {
            self.publish(Change::Session(id));
        }
        Ok(started)
    }

    /// The timers: heartbeat TTL, lost nodes, scheduled starts, window ends, the queue, and
    /// anything still to send. Run every `tick` and when kicked.
    pub async fn tick(&self) {
        if let Err(e) = self.try_tick().await {
            warn!(error = ?e, "timer pass failed; will retry");
        }
        if let Err(e) = self.close_revoked_links().await {
            warn!(error = ?e, "checking node tokens failed; will retry");
        }
        self.promote_queue().await;
        self.dispatch().await;
    }

    async fn try_tick(&self) -> Result<(), ApiError> {
        let now = self.now();
        let ttl = ms(self.config.heartbeat_ttl);
        let grace = ms(self.config.node_lost_grace);
        let lead = ms(self.config.schedule_lead);
        let seen: Vec<(NodeId, (Millis, bool))> = self
            .seen
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        let mut tx = self.store.begin_placement().await?;
        for (node, (at, draining)) in &seen {
            store::node_seen(&mut tx, node, *at, *draining).await?;
        }
        let expired = store::expire_nodes(&mut tx, now - ttl, now).await?;
        let unheard_drains = store::drains_not_reported(&mut tx).await?;
        let to_end = store::sessions_to_end(&mut tx, now - grace, now).await?;
        let due = store::scheduled_due(&mut tx, now + lead).await?;
        let nodes: HashMap<NodeId, NodeRow> = if to_end.is_empty() && due.is_empty() {
            HashMap::new()
        } else {
            store::list_nodes(&mut tx)
                .await?
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect()
        };
        let mut changed = Vec::new();
        let mut freed = false;
        for mut s in to_end {
            let node = s.node_id.as_ref().and_then(|n| nodes.get(n));
            match rules::running(&s, node, now, grace) {
                Running::Lost => {
                    s.finish(now, rules::ending(EndReason::NodeLost), EndReason::NodeLost);
                    freed = true;
                }
                Running::StopForWindowEnd => s.request_stop(now, EndReason::WindowEnd),
                Running::Keep => continue,
            }
            store::update_session(&mut tx, &s).await?;
            changed.push(s.id.clone());
        }
        for mut s in due {
            let Some(start_at) = s.start_at else { continue };
            let available = s
                .node_id
                .as_ref()
                .and_then(|n| nodes.get(n))
                .is_some_and(NodeRow::available);
            let node = match rules::due(&s, available, now) {
                Due::Missed => {
                    s.finish(
                        now,
                        rules::ending(EndReason::WindowMissed),
                        EndReason::WindowMissed,
                    );
                    freed = true;
                    None
                }
                Due::Start => s.node_id.clone(),
                Due::Replace(want) => {
                    let slots = Self::snapshot(&mut tx, now, Some(&s.id)).await?;
                    let node = placement::place(&slots, &s.application_id, &want).cloned();
                    if node.is_none() {
                        s.finish(
                            now,
                            rules::ending(EndReason::NoCapacity),
                            EndReason::NoCapacity,
                        );
                    }
                    node
                }
            };
            if let Some(node) = node {
                let window = Interval::new(start_at.min(now), s.slot_end);
                s.start_on(node, window, now);
            }
            store::update_session(&mut tx, &s).await?;
            changed.push(s.id.clone());
        }
        tx.commit().await?;
        self.resend_drains(&unheard_drains, now);
        for n in expired {
            warn!(node = %n, "node offline (no heartbeat)");
            self.publish(Change::Node(n));
        }
        for id in changed {
            self.publish(Change::Session(id));
        }
        if freed {
            self.kick();
        }
        Ok(())
    }
}

type HeldSlot = (
    NodeId,
    SessionId,
    SessionState,
    Option<Millis>,
    Option<Millis>,
);

/// What a node is told of its admin drain (`Some(deadline)`) or of its end (`None`).
fn drain_message(drain: Option<Option<Millis>>, now: Millis) -> CoordinatorToNode {
    match drain {
        None => CoordinatorToNode::Resume,
        Some(deadline) => CoordinatorToNode::DrainGracefully {
            stop_after_ms: deadline.map(|d| u64::try_from(d.saturating_sub(now)).unwrap_or(0)),
        },
    }
}

fn node_view(n: &NodeRow, slots: &[NodeSlots], held: &[HeldSlot], now: Millis) -> api::Node {
    let mine = held.iter().filter(|h| h.0 == n.id);
    let sessions = mine
        .clone()
        .filter(|h| h.2 != SessionState::Scheduled)
        .count();
    let reserved = mine.filter(|h| h.2 == SessionState::Scheduled).count();
    let free = slots.iter().find(|s| s.id == n.id).map_or(0, |s| {
        placement::free_slots(s, &Interval::new(now, Some(now + 1)))
    });
    api::Node {
        id: n.id.clone(),
        state: n.api_state(sessions),
        version: n.version.clone(),
        public_url: n.public_url.clone(),
        max_sessions: n.max_sessions,
        max_sessions_per_gpu: n.max_sessions_per_gpu,
        sessions: u32::try_from(sessions).unwrap_or(u32::MAX),
        reserved: u32::try_from(reserved).unwrap_or(u32::MAX),
        free_slots: free,
        applications: n.applications.clone(),
        gpus: n.gpus.clone(),
        last_heartbeat: Some(rfc3339(n.last_seen)),
        drain_deadline: n.drain_deadline.filter(|_| n.admin_drain).map(rfc3339),
    }
}

/// The `start_session` for a placed session: its key and the title's limits go with it.
fn start_message(s: &SessionRow, key: String) -> CoordinatorToNode {
    CoordinatorToNode::StartSession {
        session_id: s.id.clone(),
        application_id: s.application_id.clone(),
        options: StartOptions {
            player_token: Some(Token(key)),
            res_x: None,
            res_y: None,
            max_players: Some(s.settings.max_players),
            idle_timeout: Some(s.settings.idle_timeout),
            empty_timeout: Some(s.settings.empty_timeout),
            // The coordinator ends the window itself; the node's cap is a backstop.
            max_duration: s.duration.and_then(|d| u64::try_from(d).ok()),
        },
    }
}

fn no_title(id: &TitleId) -> ApiError {
    ApiError::not_found(format!("no title `{id}`"))
}

fn no_session(id: &SessionId) -> ApiError {
    ApiError::not_found(format!("no session `{id}`"))
}
