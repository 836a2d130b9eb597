//! Nodes: drains, a node's hello, its link closing, its events and heartbeats (reconciled against the records), its applications.

use super::*;

impl Engine {
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
    pub(super) fn resend_drains(&self, nodes: &[(NodeId, Option<Millis>)], now: Millis) {
        let Ok(mut resent) = self.drain_resent.lock() else {
            return;
        };
        let every = ms(self.config.heartbeat_ttl);
        // A drain sent within the TTL stays remembered even if this pass's list was read before
        // it (an admin's drain racing the timer), or the next pass would send it again at once.
        resent.retain(|n, t| nodes.iter().any(|(m, _)| m == n) || now - *t < every);
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
            upstream_url: upstream_of(hello),
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
        let titles = self
            .titles_of_applications(&mut tx, &row.id, &hello.applications, now)
            .await?;
        let acked = store::acked_seq(&mut tx, &row.id).await?;
        tx.commit().await?;
        if !titles.is_empty() {
            self.promote_queue().await;
        }
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
        if ours && let Ok(mut players) = self.players.lock() {
            players.remove(node);
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
            let mut row = store::get_session_for_update(&mut tx, id).await?;
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
            info!(session = %r.id, state = r.state.as_str(), reason = ?r.end_reason.map(EndReason::as_str),
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
        if let Ok(mut players) = self.players.lock() {
            players.insert(
                node.clone(),
                hb.sessions
                    .iter()
                    .map(|s| (s.session_id.clone(), s.players))
                    .collect(),
            );
        }
        if !first && hb.sessions.is_empty() {
            // The common case of an idle node: nothing to reconcile; the timer records it.
            if let Ok(mut seen) = self.seen.lock() {
                seen.insert(node.clone(), (now, hb.draining));
                return Ok(());
            }
        }
        // A heartbeat changes only its node's sessions and never so that one takes a slot (it
        // resends a start or ends a lost session): as the node's events, the placement lock
        // shared, the node's row and its sessions' rows locked.
        let (mut tx, _) = self.store.begin_node_events(node).await?;
        store::node_seen(&mut tx, node, now, hb.draining).await?;
        let ours = store::active_on_node_for_update(&mut tx, node).await?;
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
        self.titles_of_applications(&mut tx, node, apps, self.now())
            .await?;
        tx.commit().await?;
        self.publish(Change::Node(node.clone()));
        self.promote_queue().await;
        Ok(())
    }
}

/// What a node is told of its admin drain (`Some(deadline)`) or of its end (`None`).
pub(super) fn drain_message(drain: Option<Option<Millis>>, now: Millis) -> CoordinatorToNode {
    match drain {
        None => CoordinatorToNode::Resume,
        Some(deadline) => CoordinatorToNode::DrainGracefully {
            stop_after_ms: deadline.map(|d| u64::try_from(d.saturating_sub(now)).unwrap_or(0)),
        },
    }
}

/// The hello's `upstream_url` when it is one (`pxs_protocol::upstream`); anything else is
/// logged (why, not the text) and stored as unknown, so nothing a node makes up reaches the
/// API's readers (`pxs nginx-config`) as an upstream.
fn upstream_of(hello: &Hello) -> Option<String> {
    let text = hello.upstream_url.as_deref()?;
    match pxs_protocol::upstream::parse(text) {
        Ok(u) => Some(u.to_string()),
        Err(e) => {
            warn!(node = %hello.node, "the node's upstream_url is not usable ({e}); stored as unknown");
            None
        }
    }
}
