//! The timer pass: heartbeat TTL, lost nodes, window ends, scheduled starts, and what is still to promote or send.

use super::*;

impl Engine {
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

    pub(super) async fn try_tick(&self) -> Result<(), ApiError> {
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
