//! Views: what placement sees (the snapshot), and titles, sessions and nodes as the API shows them.

use super::*;

/// What `GET /api/v1/sessions` asks for: every field that is set must match.
#[derive(Clone, Debug)]
pub struct SessionQuery {
    pub state: Option<SessionState>,
    pub title: Option<TitleId>,
    pub node: Option<NodeId>,
    pub end_reason: Option<EndReason>,
    /// At most this many, newest first (1 to 1,000).
    pub limit: i64,
}

impl Default for SessionQuery {
    fn default() -> SessionQuery {
        SessionQuery {
            state: None,
            title: None,
            node: None,
            end_reason: None,
            limit: 500,
        }
    }
}

impl Engine {
    /// What placement sees now (optionally without one session, when re-placing it).
    pub(super) async fn snapshot(
        c: &mut AnyConnection,
        now: Millis,
        without: Option<&SessionId>,
    ) -> Result<Vec<NodeSlots>, ApiError> {
        let (nodes, held) = store::placement_snapshot(c).await?;
        Ok(Self::slots_of(nodes, &held, now, without))
    }

    /// What the catalog's availability is counted on: a picture of every node and slot read
    /// after this call began (so a caller sees its own changes). Calls that arrive while one is
    /// read wait for it to end, and the first of them reads the next one for all of them: under
    /// load the catalog costs one read per read's time rather than one per request.
    pub(super) async fn catalog_snapshot(&self) -> Result<Arc<Vec<NodeSlots>>, ApiError> {
        self.catalog
            .get(|| async {
                let mut c = self.store.reader().acquire().await?;
                Ok(Arc::new(Self::snapshot(&mut c, self.now(), None).await?))
            })
            .await
    }

    /// Every node with the intervals its slots are held over (`without` one session), from the
    /// rows placement reads.
    pub(super) fn slots_of(
        nodes: Vec<store::PlacementNode>,
        held: &[store::HeldSlot],
        now: Millis,
        without: Option<&SessionId>,
    ) -> Vec<NodeSlots> {
        let mut busy: HashMap<&NodeId, Vec<Interval>> = HashMap::new();
        for (node, id, state, start, end) in held {
            if Some(id) != without {
                busy.entry(node)
                    .or_default()
                    .push(model::busy_interval(*state, *start, *end, now));
            }
        }
        nodes
            .into_iter()
            .map(|n| NodeSlots {
                busy: busy.remove(&n.id).unwrap_or_default(),
                id: n.id,
                available: n.available,
                capacity: n.capacity,
                applications: n.applications,
            })
            .collect()
    }

    pub async fn title_view(
        &self,
        c: &mut AnyConnection,
        t: &TitleRow,
        slots: &[NodeSlots],
        now: Millis,
    ) -> Result<api::Title, ApiError> {
        let with_app = slots
            .iter()
            .filter(|n| n.available && n.applications.contains(&t.application_id));
        // What a Launch would get, by admission's own rule (reservations and the queue count).
        let queue = store::queue_of(c, &t.id).await?;
        let waiting = self.waiting_in(c, &queue).await?;
        let availability = api::Availability {
            free_slots: rules::launch_slots(slots, t, waiting, now),
            nodes: u32::try_from(with_app.count()).unwrap_or(u32::MAX),
            queued: u32::try_from(queue.len()).unwrap_or(u32::MAX),
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
            source: t.source,
            approved: t.approved,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        })
    }

    /// The titles `caller` may see, with their availability.
    pub async fn titles(&self, caller: &Caller) -> Result<Vec<api::Title>, ApiError> {
        let now = self.now();
        let slots = self.catalog_snapshot().await?;
        let mut c = self.store.reader().acquire().await?;
        let mut out = Vec::new();
        for t in store::list_titles(&mut c).await? {
            if caller.may_use(t.visibility, t.approved) {
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
            .filter(|t| caller.may_use(t.visibility, t.approved))
            .ok_or_else(|| no_title(id))?;
        drop(c);
        let slots = self.catalog_snapshot().await?;
        let mut c = self.store.reader().acquire().await?;
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

    /// The session as the API shows it to its owner (lists, the admin event stream, the answers
    /// to a create or a delete), with the queue position read in the same statement.
    pub(super) fn view(&self, s: &SessionRow, position: Option<i64>) -> api::Session {
        self.view_as(s, position, player_token::Role::Owner, None, None)
    }

    /// The session as the API shows it to a caller with `role` there, who presented `key` (its
    /// share link's id and expiry go into the join URL) and wants to be called `name`.
    pub(super) fn view_as(
        &self,
        s: &SessionRow,
        position: Option<i64>,
        role: player_token::Role,
        key: Option<&SessionKey>,
        name: Option<&str>,
    ) -> api::Session {
        let queue_position = position.map(|p| u32::try_from(p).unwrap_or(u32::MAX));
        let join_url = match (s.state, &s.player_url) {
            (SessionState::Ready, Some(url)) => Some(self.join_url(s, url, role, key, name)),
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
            role: Some(auth::role_name(role).to_owned()),
            ended_by: s.ended_by.map(|e| e.as_str().to_owned()),
            owner_key: None,
            owner: None,
            players: None,
            estimated_wait_s: None,
            queue_reason: None,
            address_limit: None,
        }
    }

    /// The key that signs the player tokens of `s`: derived from the session secret, or for a
    /// session created before keys were derived, the one stored with it until it ends.
    pub(super) fn session_key(&self, s: &SessionRow) -> String {
        if s.player_key.is_empty() {
            self.keys.key(&s.id)
        } else {
            s.player_key.clone()
        }
    }

    /// The start message of `s`, with its key.
    pub(super) fn start_of(&self, s: &SessionRow) -> CoordinatorToNode {
        let mut msg = start_message(
            s,
            self.session_key(s),
            self.config.ice.clone().map(Box::new),
        );
        // A booking is not ended `empty` because its user is late (`rules::empty_timeout`).
        if let CoordinatorToNode::StartSession { options, .. } = &mut msg {
            let grace = self.config.booking_empty_grace.map(ms);
            options.empty_timeout = Some(rules::empty_timeout(s, grace, self.now()));
        }
        msg
    }

    /// The player URL with a fresh token of `role` (the session's own join URL is its
    /// owner's), valid for `join_token_ttl` and no longer than `key`, carrying `key`'s id when it
    /// is a share link, and `name`.
    pub(super) fn join_url(
        &self,
        s: &SessionRow,
        player_url: &str,
        role: player_token::Role,
        key: Option<&SessionKey>,
        name: Option<&str>,
    ) -> String {
        let ttl = i64::try_from(self.config.join_token_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut exp = self.now().saturating_add(ttl);
        if let Some(until) = key.and_then(|k| k.expires_at) {
            exp = exp.min(until);
        }
        let claims = player_token::Claims {
            session_id: s.id.clone(),
            role,
            exp: u64::try_from(exp).unwrap_or(0),
            name: name.map(str::to_owned),
            link: key
                .filter(|k| k.role != player_token::Role::Owner)
                .map(|k| k.id.clone()),
        };
        let token = player_token::sign(self.session_key(s).as_bytes(), &claims);
        let sep = if player_url.contains('?') { '&' } else { '?' };
        format!("{player_url}{sep}token={token}")
    }

    /// Session `id` as `caller` sees it (404 when it may not), its join URL made for the caller
    /// and `name`.
    pub async fn session(
        &self,
        caller: &Caller,
        id: &SessionId,
        name: Option<&str>,
    ) -> Result<api::Session, ApiError> {
        let mut c = self.store.reader().acquire().await?;
        let (s, position) = store::get_session_with_position(&mut c, id)
            .await?
            .ok_or_else(|| no_session(id))?;
        let role = caller
            .check(SessionAction::See, &s.id, &s.owner)
            .map_err(|r| refused(id, r))?;
        let mut view = self.view_as(&s, position, role, caller.key(), name);
        if s.state == SessionState::Queued {
            self.explain_wait(&mut c, &s, &mut view).await?;
        }
        Ok(view)
    }

    /// What a queued session waits for, and about how long: `queue_reason`, `address_limit`,
    /// `estimated_wait_s` (see `rules::estimated_wait`).
    async fn explain_wait(
        &self,
        c: &mut AnyConnection,
        s: &SessionRow,
        view: &mut api::Session,
    ) -> Result<(), ApiError> {
        let limit = self.config.anonymous_sessions_per_address;
        if let auth::Owner::Anonymous(_) = s.owner
            && store::holding_of_owner(c, &s.owner).await? >= i64::from(limit)
        {
            view.queue_reason = Some("address_limit".to_owned());
            view.address_limit = Some(limit);
            return Ok(());
        }
        view.queue_reason = Some("slot".to_owned());
        let now = self.now();
        let slots = Self::snapshot(c, now, None).await?;
        let typical = rules::typical_length(&store::recent_lengths(c, &s.title_id).await?);
        let position = view.queue_position.unwrap_or(1).max(1);
        let want = rules::window(now, s.duration.and_then(|d| u64::try_from(d).ok()));
        view.estimated_wait_s =
            rules::estimated_wait(position, &slots, &s.application_id, &want, typical, now)
                .map(|ms| u64::try_from(ms).unwrap_or(0).div_ceil(1000));
        Ok(())
    }

    /// The sessions `caller` may list (admins: all; users: their own) that match `filter`,
    /// newest first. Admins' lists say who created each session and, where this coordinator
    /// knows it, how many players it has.
    pub async fn sessions(
        &self,
        caller: &Caller,
        filter: &SessionQuery,
    ) -> Result<Vec<api::Session>, ApiError> {
        let (owner, admin) = match caller {
            Caller::Anonymous { .. } => return Err(ApiError::unauthorized()),
            Caller::Token {
                role: api::Role::Admin,
                ..
            } => (None, true),
            Caller::Token { .. } => (Some(caller.owner()), false),
        };
        let mut c = self.store.reader().acquire().await?;
        let rows = store::list_sessions(
            &mut c,
            &store::SessionFilter {
                state: filter.state,
                title: filter.title.as_ref(),
                node: filter.node.as_ref(),
                end_reason: filter.end_reason,
                owner: owner.as_ref(),
                limit: filter.limit,
            },
        )
        .await?;
        drop(c);
        let players: HashMap<SessionId, u32> = if admin {
            self.players
                .lock()
                .map(|p| p.values().flatten().cloned().collect())
                .unwrap_or_default()
        } else {
            HashMap::new()
        };
        Ok(rows
            .iter()
            .map(|(r, p)| {
                let mut v = self.view(r, *p);
                if admin {
                    v.owner = Some(match &r.owner {
                        auth::Owner::Token(id) => id.clone(),
                        auth::Owner::Anonymous(_) => "anonymous".to_owned(),
                    });
                    if !r.state.is_final() {
                        v.players = players.get(&r.id).copied();
                    }
                }
                v
            })
            .collect())
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
}

pub(super) fn node_view(
    n: &NodeRow,
    slots: &[NodeSlots],
    held: &[store::HeldSlot],
    now: Millis,
) -> api::Node {
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
        upstream_url: n.upstream_url.clone(),
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
pub(super) fn start_message(
    s: &SessionRow,
    key: String,
    ice: Option<Box<pxs_protocol::ice::IceSettings>>,
) -> CoordinatorToNode {
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
            // The platform's STUN and TURN servers (`[ice]`); a node's own win there.
            ice,
        },
    }
}
