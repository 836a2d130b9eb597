//! Sessions: creating (admission), ending or cancelling, sending what the records say is still to send (the outbox), and starting queue heads.

use super::*;

/// Placements tried with the placement lock shared before one with it exclusive (PostgreSQL).
const SHARED_TRIES: u32 = 3;

/// How old the picture of every node and slot may be that a first try ranks nodes by
/// (PostgreSQL; see `Engine::admit`). Reading it is the dearest statement of a placement; an
/// old one costs at worst a retry, never a slot promised twice.
const RANKING_TTL: std::time::Duration = std::time::Duration::from_millis(250);

/// What `Engine::admit` decided.
enum Decision {
    Admit(Admission),
    /// The node filled meanwhile: try again with the lock shared, on a new picture.
    Again,
    /// Only the lock exclusive can decide (the session would queue, or others wait).
    Exclusive,
}

impl Engine {
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

        // The title is read before the placement lock (an edit of a title does not take it
        // either); that it still exists is checked under the lock, in the snapshot.
        let title = {
            let mut c = self.store.reader().acquire().await?;
            store::get_title(&mut c, &req.title_id).await?
        }
        .filter(|t| caller.may_use(t.visibility, t.approved))
        .ok_or_else(|| no_title(&req.title_id))?;
        let duration = rules::duration(&wanted, &title)?;
        // On PostgreSQL a session that starts now or books a window on a node is placed with the
        // lock shared, beside other placements (`admit`); a decision to queue, or a node that
        // filled meanwhile more than `SHARED_TRIES` times, is taken again with it exclusive.
        let mut shared_tries = if self.store.admits_beside_others() {
            SHARED_TRIES
        } else {
            0
        };
        let (mut tx, mut row) = loop {
            let shared = shared_tries > 0;
            let fresh = shared_tries < SHARED_TRIES;
            let mut tx = if shared {
                self.store.begin_admission().await?
            } else {
                self.store.begin_placement().await?
            };
            let decision = self
                .admit(
                    &mut tx, caller, &title, &wanted, duration, now, shared, fresh,
                )
                .await?;
            let admission = match decision {
                Decision::Admit(a) => a,
                Decision::Again | Decision::Exclusive => {
                    tx.rollback().await;
                    self.metrics.placement_retries.inc();
                    shared_tries = match decision {
                        Decision::Again => shared_tries - 1,
                        _ => 0,
                    };
                    continue;
                }
            };
            let id = SessionId::from_random(auth::random_bytes::<16>());
            let mut row =
                SessionRow::new(id, &title, caller.owner(), wanted.start_at, duration, now);
            match admission {
                Admission::Scheduled { node, window } => row.schedule(node, window),
                Admission::Start { node, window } => row.start_on(node, window, now),
                Admission::Queue => row.queue_seq = Some(store::next_queue_seq(&mut tx).await?),
            }
            break (tx, row);
        };
        // Held here: recorded as sent in this transaction, sent right after the commit (if the
        // link drops in between, the reconcile after its reconnect sends it again).
        let send_now = row.state == SessionState::Starting
            && row.node_id.as_ref().is_some_and(|n| self.has_link(n));
        if send_now {
            row.dispatched_at = Some(now);
        }
        store::insert_session(&mut tx, &row).await?;
        // An anonymous creator has no token to come back with: the owner key is its credential,
        // stored (hashed) with the session and shown this once.
        let owner_key = if caller.is_signed_in() {
            None
        } else {
            let secret = auth::new_token(auth::KEY_PREFIX);
            let key = store::KeyRow {
                id: auth::new_id(auth::OWNER_KEY_ID_PREFIX),
                session_id: row.id.clone(),
                role: player_token::Role::Owner,
                created_at: now,
                expires_at: None,
                revoked_at: None,
            };
            store::insert_key(&mut tx, &key, &auth::hash_token(&secret)).await?;
            Some(secret)
        };
        let mut view = self.session_view(&mut tx, &row).await?;
        view.owner_key = owner_key;
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
    /// one (its node confirms with an event), and records who ended it (its owner, or an
    /// admin). Only its owner and admins may; a share link's holder gets 403. Returns the
    /// session.
    pub async fn delete_session(
        &self,
        caller: &Caller,
        id: &SessionId,
    ) -> Result<api::Session, ApiError> {
        let now = self.now();
        // Ending a session never takes a slot: the placement lock shared and the session's row
        // locked (`Store::begin_session_change`); the queue's promotion after it takes the lock
        // exclusive.
        let (mut tx, row) = self.store.begin_session_change(id).await?;
        let mut row = row.ok_or_else(|| no_session(id))?;
        caller
            .check(SessionAction::End, &row.id, &row.owner)
            .map_err(|r| refused(id, r))?;
        if !row.state.is_final() && row.desired == Desired::Run {
            row.ended_by = Some(caller.ended_by(&row.owner));
        }
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

    /// Sends what the records say is still to send to nodes linked here.
    pub async fn dispatch(&self) {
        if let Err(e) = self.try_dispatch().await {
            warn!(error = ?e, "dispatch failed; will retry");
        }
    }

    pub(super) async fn try_dispatch(&self) -> Result<(), ApiError> {
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

    pub(super) async fn try_promote_queue(&self) -> Result<bool, ApiError> {
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
        let mut holding = store::holding_of_anonymous(&mut tx).await?;
        let promoted = rules::promote(
            &queues,
            &mut slots,
            now,
            &mut holding,
            self.config.anonymous_sessions_per_address,
        );
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

    /// Decides where a new session goes, in `tx` (see `create_session`).
    ///
    /// `shared`: `tx` holds the placement lock shared (PostgreSQL), so others place sessions
    /// meanwhile. An anonymous caller's address is locked first (its limit counts what it holds).
    /// The candidate nodes are ranked on a picture of every node and slot that may be up to
    /// [`RANKING_TTL`] old on a first try (`fresh: false`); the chosen node's row is then locked
    /// and its slots, the title and the title's queue are read again, so nothing is promised on
    /// the old picture: a node that filled meanwhile answers [`Decision::Again`] (with a new
    /// picture), and a session that would queue, or overtake a queue, [`Decision::Exclusive`]:
    /// the queue's order and its promotion need the lock exclusive.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        tx: &mut AnyConnection,
        caller: &Caller,
        title: &TitleRow,
        wanted: &rules::Wanted,
        duration: Option<u64>,
        now: Millis,
        shared: bool,
        fresh: bool,
    ) -> Result<Decision, ApiError> {
        let anonymous = !caller.is_signed_in();
        if shared && anonymous {
            store::lock_owner(&mut *tx, &caller.owner()).await?;
        }
        let address = if let Caller::Anonymous { .. } = caller {
            rules::anonymous_admission(
                store::holding_of_owner(&mut *tx, &caller.owner()).await?,
                self.config.anonymous_sessions_per_address,
                wanted.start_at.is_some(),
            )?
        } else {
            rules::AddressCheck::Free
        };
        // At its address's limit, a request for now waits whatever the slots say.
        if shared && address == rules::AddressCheck::Wait {
            return Ok(Decision::Exclusive);
        }
        let cached = if shared && !fresh {
            self.cached_ranking()
        } else {
            None
        };
        let from_cache = cached.is_some();
        let (slots, queued) = match cached {
            // The queue and the title are read after the node's lock, below.
            Some(slots) => (slots, 0),
            None => {
                // Nodes, slots, the title's queue and the title in one statement.
                let snap = store::admission_snapshot(&mut *tx, &title.id).await?;
                if !snap.title_exists {
                    return Err(no_title(&title.id));
                }
                let slots = Arc::new(Self::slots_of(snap.nodes, &snap.held, now, None));
                if shared {
                    self.keep_ranking(&slots);
                }
                let queued = if wanted.start_at.is_none() && snap.queued > 0 {
                    self.waiting_for_slot(&mut *tx, &title.id).await?
                } else {
                    0
                };
                (slots, queued)
            }
        };
        let admission = match address {
            rules::AddressCheck::Wait => Admission::Queue,
            rules::AddressCheck::Free => {
                match rules::admit(&slots, title, wanted.start_at, duration, queued, now) {
                    Ok(a) => a,
                    // A booking is refused only on a picture read now.
                    Err(_) if from_cache => return Ok(Decision::Again),
                    Err(e) => return Err(e),
                }
            }
        };
        let (node, window) = match &admission {
            Admission::Queue if shared => return Ok(Decision::Exclusive),
            Admission::Queue => {
                if anonymous {
                    let waiting = store::waiting_of_owner(&mut *tx, &caller.owner()).await?;
                    rules::anonymous_may_wait(waiting, self.config.anonymous_waiting_per_address)?;
                }
                return Ok(Decision::Admit(admission));
            }
            _ if !shared => return Ok(Decision::Admit(admission)),
            Admission::Scheduled { node, window } | Admission::Start { node, window } => {
                (node, *window)
            }
        };
        // Shared: lock the first free of the best nodes, then count its slots again.
        let mut candidates = placement::ranked(&slots, &title.application_id, &window);
        candidates.truncate(store::CANDIDATES);
        debug_assert_eq!(candidates.first(), Some(&node));
        let candidates: Vec<NodeId> = candidates.into_iter().cloned().collect();
        let locked = store::lock_placement_node(&mut *tx, &candidates).await?;
        let now_there = store::node_slots(&mut *tx, &locked, &title.id).await?;
        if !now_there.title_exists {
            return Err(no_title(&title.id));
        }
        if wanted.start_at.is_none() && now_there.queued > 0 {
            // Others wait for this title: whether this one may still start is the queue's rule,
            // decided with the whole picture.
            return Ok(Decision::Exclusive);
        }
        let fits = Self::slots_of(
            now_there.node.into_iter().collect(),
            &now_there.held,
            now,
            None,
        )
        .first()
        .is_some_and(|n| {
            n.applications.contains(&title.application_id) && placement::free_slots(n, &window) > 0
        });
        if !fits {
            self.forget_ranking();
            return Ok(Decision::Again);
        }
        Ok(Decision::Admit(match admission {
            Admission::Scheduled { .. } => Admission::Scheduled {
                node: locked,
                window,
            },
            _ => Admission::Start {
                node: locked,
                window,
            },
        }))
    }

    /// The picture placements rank nodes by, if it is younger than [`RANKING_TTL`].
    fn cached_ranking(&self) -> Option<Arc<Vec<NodeSlots>>> {
        let kept = self.ranking.lock().ok()?;
        kept.as_ref()
            .filter(|(at, _)| at.elapsed() < RANKING_TTL)
            .map(|(_, slots)| slots.clone())
    }

    fn keep_ranking(&self, slots: &Arc<Vec<NodeSlots>>) {
        if let Ok(mut kept) = self.ranking.lock() {
            *kept = Some((std::time::Instant::now(), slots.clone()));
        }
    }

    fn forget_ranking(&self) {
        if let Ok(mut kept) = self.ranking.lock() {
            *kept = None;
        }
    }

    /// The requests in `title`'s queue that wait for a slot (not for their address's limit):
    /// the ones a new request must not overtake.
    pub(super) async fn waiting_for_slot(
        &self,
        c: &mut AnyConnection,
        title: &TitleId,
    ) -> Result<i64, ApiError> {
        let queue = store::queue_of(c, title).await?;
        self.waiting_in(c, &queue).await
    }

    /// Of the requests in `queue`, those waiting for a slot rather than for their address.
    pub(super) async fn waiting_in(
        &self,
        c: &mut AnyConnection,
        queue: &[SessionRow],
    ) -> Result<i64, ApiError> {
        if queue.is_empty() {
            return Ok(0);
        }
        let holding = store::holding_of_anonymous(c).await?;
        let limit = self.config.anonymous_sessions_per_address;
        let n = queue
            .iter()
            .filter(|s| !rules::held_by_address(s, &holding, limit))
            .count();
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
