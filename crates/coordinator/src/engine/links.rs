//! Share links: a session's owner makes, lists and revokes them; a revocation is stored, then
//! told to the session's node, and told again after each of its hellos.

use super::*;

/// The API's view of a stored share link.
fn link_view(k: &store::KeyRow) -> Result<api::Link, ApiError> {
    Ok(api::Link {
        id: k.id.clone(),
        role: link_role(k.role)?,
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
    })
}

fn link_role(r: player_token::Role) -> Result<api::LinkRole, ApiError> {
    match r {
        player_token::Role::Controller => Ok(api::LinkRole::Controller),
        player_token::Role::Viewer => Ok(api::LinkRole::Viewer),
        // The store reads links with `role <> 'owner'`.
        player_token::Role::Owner => Err(ApiError::from(store::StoreError::Corrupt(
            "session_keys.role",
        ))),
    }
}

impl Engine {
    /// Whether `caller` may manage the links of session `id` (its owner, or an admin): asked
    /// before a request's body is read, so a caller without the right gets 403 or 404 whatever
    /// the body holds.
    pub async fn check_link_owner(&self, caller: &Caller, id: &SessionId) -> Result<(), ApiError> {
        let mut c = self.store.reader().acquire().await?;
        let s = store::get_session(&mut c, id)
            .await?
            .ok_or_else(|| no_session(id))?;
        caller
            .check(SessionAction::ManageLinks, &s.id, &s.owner)
            .map_err(|r| refused(id, r))?;
        Ok(())
    }

    /// `POST /api/v1/sessions/{id}/links`: a new share link, stored (hashed) before it is
    /// shown. `base_url` is where browsers reach this coordinator's pages.
    pub async fn create_link(
        &self,
        caller: &Caller,
        id: &SessionId,
        req: &api::NewLink,
        base_url: &str,
    ) -> Result<api::CreatedLink, ApiError> {
        let now = self.now();
        let lifetime = rules::link_lifetime(req.expires_in)?;
        let role = match req.role {
            api::LinkRole::Controller => player_token::Role::Controller,
            api::LinkRole::Viewer => player_token::Role::Viewer,
        };
        // The placement lock orders this with the session's end and with other links of it,
        // so a link is never made for an ended session, nor one over the limit.
        let mut tx = self.store.begin_placement().await?;
        let s = store::get_session(&mut tx, id)
            .await?
            .ok_or_else(|| no_session(id))?;
        caller
            .check(SessionAction::ManageLinks, &s.id, &s.owner)
            .map_err(|r| refused(id, r))?;
        if s.state.is_final() {
            return Err(ApiError::conflict("the session has ended"));
        }
        rules::link_quota(store::count_open_links(&mut tx, id).await?)?;
        let secret = auth::new_token(auth::KEY_PREFIX);
        let key = store::KeyRow {
            id: auth::new_id(auth::LINK_ID_PREFIX),
            session_id: s.id.clone(),
            role,
            created_at: now,
            expires_at: Some(now.saturating_add(rules::seconds(lifetime))),
            revoked_at: None,
        };
        store::insert_key(&mut tx, &key, &auth::hash_token(&secret)).await?;
        tx.commit().await?;
        info!(session = %s.id, link = %key.id, role = auth::role_name(role), "share link made");
        let as_holder = SessionKey {
            id: key.id.clone(),
            session_id: key.session_id.clone(),
            role,
            expires_at: key.expires_at,
        };
        let join_url = self
            .view_as(&s, None, role, Some(&as_holder), None)
            .join_url;
        Ok(api::CreatedLink {
            id: key.id,
            role: req.role,
            created_at: rfc3339(now),
            expires_at: key.expires_at.map(rfc3339),
            url: format!("{base_url}/play/{}#key={secret}", s.id),
            join_url,
        })
    }

    /// `GET /api/v1/sessions/{id}/links`: its share links (never their secrets, never the owner
    /// key), newest first.
    pub async fn links(&self, caller: &Caller, id: &SessionId) -> Result<Vec<api::Link>, ApiError> {
        let mut c = self.store.reader().acquire().await?;
        let s = store::get_session(&mut c, id)
            .await?
            .ok_or_else(|| no_session(id))?;
        caller
            .check(SessionAction::ManageLinks, &s.id, &s.owner)
            .map_err(|r| refused(id, r))?;
        store::list_links(&mut c, id)
            .await?
            .iter()
            .map(link_view)
            .collect()
    }

    /// `DELETE /api/v1/sessions/{id}/links/{link_id}`: the link stops opening the session (its
    /// revocation is stored first), and the node hosting the session closes the players who
    /// joined with it. Revoking a revoked link again is fine.
    pub async fn revoke_link(
        &self,
        caller: &Caller,
        id: &SessionId,
        link_id: &str,
    ) -> Result<(), ApiError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let s = store::get_session(&mut tx, id)
            .await?
            .ok_or_else(|| no_session(id))?;
        caller
            .check(SessionAction::ManageLinks, &s.id, &s.owner)
            .map_err(|r| refused(id, r))?;
        let link = store::get_link(&mut tx, id, link_id)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no link `{}` in this session",
                    truncate(link_id, 64)
                ))
            })?;
        store::revoke_key(&mut tx, &link.id, now).await?;
        tx.commit().await?;
        info!(session = %s.id, link = %link.id, "share link revoked");
        if matches!(s.state, SessionState::Starting | SessionState::Ready)
            && let Some(node) = &s.node_id
        {
            // Not linked here, or its queue full: it is told again after its next hello.
            self.send(
                node,
                CoordinatorToNode::RevokeLink {
                    session_id: s.id.clone(),
                    link_id: link.id,
                },
            );
        }
        Ok(())
    }

    /// Tells a node that just said hello every revoked share link of the sessions it runs (it
    /// may have restarted, or missed a revocation while its link was down).
    pub async fn tell_revoked_links(&self, node: &NodeId) -> Result<(), ApiError> {
        let revoked = {
            let mut c = self.store.reader().acquire().await?;
            store::revoked_links_on_node(&mut c, node).await?
        };
        for (session_id, link_id) in revoked {
            self.send(
                node,
                CoordinatorToNode::RevokeLink {
                    session_id,
                    link_id,
                },
            );
        }
        Ok(())
    }
}
