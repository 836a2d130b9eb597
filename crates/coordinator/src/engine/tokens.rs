//! Tokens: the configured ones at start, who a request's token names, minting, listing and revoking, and closing the links of revoked node tokens.

use super::*;

impl Engine {
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
                key: None,
            });
        };
        if token.starts_with(auth::KEY_PREFIX) {
            // A session key: its holder is anonymous, with the key's session and role.
            return Ok(Caller::Anonymous {
                address_key: auth::address_key(ip),
                key: Some(self.session_key_of(token).await?),
            });
        }
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

    /// The session key whose secret is `secret`, if it is in force now. Read at every request,
    /// never cached: a revocation stops it at once, also through another coordinator.
    async fn session_key_of(&self, secret: &str) -> Result<SessionKey, ApiError> {
        let row = {
            let mut c = self.store.reader().acquire().await?;
            store::find_key(&mut c, &auth::hash_token(secret)).await?
        };
        let refused =
            |r: auth::KeyRefusal| ApiError::new(crate::error::Kind::Unauthorized, r.message());
        let row = row.ok_or_else(|| refused(auth::KeyRefusal::Withdrawn))?;
        auth::key_in_force(row.revoked_at, row.expires_at, self.now()).map_err(refused)?;
        Ok(SessionKey {
            id: row.id,
            session_id: row.session_id,
            role: row.role,
            expires_at: row.expires_at,
        })
    }

    /// Whether the session key `caller` presented, if any, is still in force (an event stream
    /// asks before each read: a revoked or expired key ends it).
    pub async fn key_still_valid(&self, caller: &Caller) -> Result<bool, ApiError> {
        let Some(key) = caller.key() else {
            return Ok(true);
        };
        let mut c = self.store.reader().acquire().await?;
        Ok(store::get_key(&mut c, &key.id)
            .await?
            .is_some_and(|k| auth::key_in_force(k.revoked_at, k.expires_at, self.now()).is_ok()))
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
        info!(token = %id, node = kind == TokenKind::Node, "token revoked");
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
    pub(super) async fn close_revoked_links(&self) -> Result<(), ApiError> {
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
}
