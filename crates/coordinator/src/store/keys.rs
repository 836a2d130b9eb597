//! Session keys: each anonymous session's owner key and its share links. Only the SHA-256 of a
//! key's secret is stored; revoking a key keeps its row (with `revoked_at`), so a node can be
//! told again after it links.

use super::{Result, fetch_all, fetch_one, fetch_optional, n_col, parse_col, sql};
use crate::auth::{parse_role, role_name};
use crate::placement::Millis;
use pxs_protocol::node::{NodeId, SessionId};
use pxs_protocol::player_token;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

/// A session key as stored, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// `own_…` or `lnk_…`.
    pub id: String,
    pub session_id: SessionId,
    pub role: player_token::Role,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

fn key_from_row(row: &AnyRow) -> Result<KeyRow> {
    Ok(KeyRow {
        id: row.try_get("id")?,
        session_id: parse_col(row, "session_id", |s| SessionId::parse(s).ok())?,
        role: parse_col(row, "role", parse_role)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Stores key `k` whose secret hashes to `secret_hash`.
pub async fn insert_key(c: &mut AnyConnection, k: &KeyRow, secret_hash: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_keys (id, session_id, role, secret_hash, created_at, expires_at, \
         revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.id)
    .bind(k.session_id.as_str())
    .bind(role_name(k.role))
    .bind(secret_hash)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The key whose secret hashes to `secret_hash` (revoked and expired ones too: the caller says
/// which it is).
pub async fn find_key(c: &mut AnyConnection, secret_hash: &str) -> Result<Option<KeyRow>> {
    fetch_optional(
        c,
        "SELECT * FROM session_keys WHERE secret_hash = $1",
        [secret_hash],
        key_from_row,
    )
    .await
}

/// The key `id`, whatever its session.
pub async fn get_key(c: &mut AnyConnection, id: &str) -> Result<Option<KeyRow>> {
    fetch_optional(
        c,
        "SELECT * FROM session_keys WHERE id = $1",
        [id],
        key_from_row,
    )
    .await
}

/// The share links of `session` (never its owner key), newest first.
pub async fn list_links(c: &mut AnyConnection, session: &SessionId) -> Result<Vec<KeyRow>> {
    fetch_all(
        c,
        "SELECT * FROM session_keys WHERE session_id = $1 AND role <> 'owner' \
         ORDER BY created_at DESC, id DESC",
        [session.as_str()],
        key_from_row,
    )
    .await
}

/// The share link `id` of `session` (an owner key is no link).
pub async fn get_link(
    c: &mut AnyConnection,
    session: &SessionId,
    id: &str,
) -> Result<Option<KeyRow>> {
    fetch_optional(
        c,
        "SELECT * FROM session_keys WHERE session_id = $1 AND id = $2 AND role <> 'owner'",
        [session.as_str(), id],
        key_from_row,
    )
    .await
}

/// Share links of `session` not revoked (expired ones included).
pub async fn count_open_links(c: &mut AnyConnection, session: &SessionId) -> Result<i64> {
    fetch_one(
        c,
        "SELECT COUNT(*) AS n FROM session_keys WHERE session_id = $1 AND role <> 'owner' \
         AND revoked_at IS NULL",
        [session.as_str()],
        n_col,
    )
    .await
}

/// Marks key `id` revoked at `now`; a key revoked before keeps its first time.
pub async fn revoke_key(c: &mut AnyConnection, id: &str, now: Millis) -> Result<()> {
    sqlx::query("UPDATE session_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The revoked share links of the sessions starting or running on `node`: (session, link).
pub async fn revoked_links_on_node(
    c: &mut AnyConnection,
    node: &NodeId,
) -> Result<Vec<(SessionId, String)>> {
    fetch_all(c, sql::REVOKED_LINKS_ON_NODE, [node.as_str()], |r| {
        Ok((
            parse_col(r, "session_id", |s| SessionId::parse(s).ok())?,
            r.try_get("id")?,
        ))
    })
    .await
}
