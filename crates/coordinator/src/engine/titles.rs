//! Titles: create, change, approve, delete; and the titles made from the applications nodes
//! advertise.

use super::*;
use pxs_protocol::api::TitleSource;
use pxs_protocol::node::ApplicationInfo;
use std::collections::HashSet;

/// Titles made from one node message at most; a node advertising more new applications gets the
/// rest at its next `hello` or `applications` (a hostile node cannot fill the catalog at once).
pub const MAX_NEW_TITLES_PER_MESSAGE: usize = 100;

impl Engine {
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
            idle_timeout: new.idle_timeout.unwrap_or(rules::DEFAULT_IDLE_TIMEOUT),
            empty_timeout: new.empty_timeout.unwrap_or(rules::DEFAULT_EMPTY_TIMEOUT),
            max_duration: new.max_duration,
            source: TitleSource::Admin,
            approved: true,
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
        // Changed by an admin: the nodes' applications no longer change it.
        t.source = TitleSource::Admin;
        check_title(&t)?;
        store::update_title(&mut c, &t).await?;
        drop(c);
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), id).await
    }

    /// `POST /api/v1/titles/{id}/approve`: a title made from a node's application while
    /// `[titles] approve_new` is on is shown to everyone its visibility allows. Approving an
    /// approved title changes nothing.
    pub async fn approve_title(&self, id: &TitleId) -> Result<api::Title, ApiError> {
        let mut c = self.store.pool().acquire().await?;
        if !store::approve_title(&mut c, id, self.now()).await? {
            return Err(no_title(id));
        }
        drop(c);
        info!(title = %id, "title approved by an admin");
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), id).await
    }

    /// Deletes a title without live sessions. Its application is remembered as dismissed: the
    /// coordinator does not make a title of it again when nodes advertise it.
    pub async fn delete_title(&self, id: &TitleId) -> Result<(), ApiError> {
        let mut tx = self.store.begin_placement().await?;
        let Some(t) = store::get_title(&mut tx, id).await? else {
            return Err(no_title(id));
        };
        let live = store::count_sessions_of_title(&mut tx, id).await?;
        if live > 0 {
            return Err(ApiError::conflict(format!(
                "title `{id}` has {live} sessions that are not over; end them first"
            )));
        }
        store::delete_title(&mut tx, id).await?;
        store::dismiss_application(&mut tx, &t.application_id, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the catalog in step with the applications `node` advertises (in its `hello`, or in
    /// `applications` after a reload), inside the transaction that records them:
    ///
    /// - an application that has no title (none with its id, none of its application) and that
    ///   no admin dismissed (by deleting its title) gets one: id and catalog data the
    ///   application's, source `node`, approved unless `[titles] approve_new`;
    /// - a title made that way (source `node`) follows the application's catalog data when it
    ///   changes (the last node to say wins, should two nodes disagree);
    /// - a title an admin made or changed (source `admin`) is never touched, and nothing is
    ///   removed: a title whose application no node has any more stays, without availability.
    ///
    /// Hostile data is cut or dropped with a warning (`rules::title_of_application`), never
    /// refused with the message. Returns the titles made or changed.
    pub(super) async fn titles_of_applications(
        &self,
        c: &mut AnyConnection,
        node: &NodeId,
        apps: &[ApplicationInfo],
        now: Millis,
    ) -> Result<Vec<TitleId>, ApiError> {
        let approved = !self.config.approve_new_titles;
        let mut seen = HashSet::new();
        let mut changed = Vec::new();
        let mut made = 0;
        for app in apps {
            if !seen.insert(&app.id) {
                continue; // a repeated id: the first one counts, as for placement
            }
            let Some((wanted, notes)) = rules::title_of_application(app, approved, now) else {
                continue;
            };
            let existing = store::titles_of_application(c, &app.id).await?;
            let ours = existing
                .iter()
                .find(|t| t.id == wanted.id && t.source == TitleSource::Node);
            let write = match ours {
                Some(current) => rules::refreshed_title(current, &wanted, now),
                None if existing.is_empty() && !store::is_dismissed(c, &app.id).await? => {
                    Some(wanted)
                }
                None => None,
            };
            let Some(t) = write else { continue };
            for note in &notes {
                warn!(node = %node, application = %app.id, "node's application data: {note}");
            }
            if let Err(e) = check_title(&t) {
                warn!(node = %node, application = %app.id, error = ?e,
                      "no title made of the node's application");
                continue;
            }
            if ours.is_some() {
                if store::refresh_node_title(c, &t).await? {
                    info!(title = %t.id, node = %node, "title follows its node's application");
                    changed.push(t.id);
                }
            } else if made >= MAX_NEW_TITLES_PER_MESSAGE {
                warn!(node = %node, application = %app.id,
                      "over {MAX_NEW_TITLES_PER_MESSAGE} new applications in one message; \
                       its title is made at the node's next hello or reload");
            } else if store::insert_title(c, &t).await? {
                made += 1;
                info!(title = %t.id, node = %node, approved = t.approved,
                      "title made from a node's application");
                changed.push(t.id);
            }
        }
        Ok(changed)
    }
}
