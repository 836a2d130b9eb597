//! Tokens: API tokens (with their role) and node tokens; only their SHA-256 is stored.

use super::{
    NO_BINDS, Result, fetch_all, fetch_one, fetch_optional, n_col, opt_parse_col, parse_col,
};
use crate::auth::TokenKind;
use crate::placement::Millis;
use pxs_protocol::api::Role;
use pxs_protocol::node::NodeId;
use sqlx::{AnyConnection, Row};

pub async fn insert_api_token(
    c: &mut AnyConnection,
    id: &str,
    hash: &str,
    role: Role,
    name: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, hash, role, name, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(id)
    .bind(hash)
    .bind(role_name(role))
    .bind(name)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::User => "user",
    }
}

/// The role [`role_name`] stored.
fn role_of(s: &str) -> Option<Role> {
    match s {
        "admin" => Some(Role::Admin),
        "user" => Some(Role::User),
        _ => None,
    }
}

pub async fn find_api_token(c: &mut AnyConnection, hash: &str) -> Result<Option<(String, Role)>> {
    fetch_optional(
        c,
        "SELECT id, role FROM api_tokens WHERE hash = $1",
        [hash],
        |row| {
            let role = parse_col(row, "role", role_of)?;
            Ok((row.try_get("id")?, role))
        },
    )
    .await
}

pub async fn count_api_tokens(c: &mut AnyConnection, role: Role) -> Result<i64> {
    fetch_one(
        c,
        "SELECT COUNT(*) AS n FROM api_tokens WHERE role = $1",
        [role_name(role)],
        n_col,
    )
    .await
}

pub async fn insert_node_token(
    c: &mut AnyConnection,
    id: &str,
    hash: &str,
    name: &str,
    node: Option<&NodeId>,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO node_tokens (id, hash, name, created_at, node_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(id)
    .bind(hash)
    .bind(name)
    .bind(now)
    .bind(node.map(NodeId::as_str))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The id of the node token with this hash, and the node it is bound to, if any.
pub async fn find_node_token(
    c: &mut AnyConnection,
    hash: &str,
) -> Result<Option<(String, Option<NodeId>)>> {
    fetch_optional(
        c,
        "SELECT id, node_id FROM node_tokens WHERE hash = $1",
        [hash],
        |r| {
            Ok((
                r.try_get("id")?,
                opt_parse_col(r, "node_id", |s| NodeId::parse(s).ok())?,
            ))
        },
    )
    .await
}

/// A token as listed: id, name, role (API tokens), bound node (node tokens), created.
pub type TokenRow = (String, String, Option<Role>, Option<NodeId>, Millis);

/// Every token of `kind`, oldest first.
pub async fn list_tokens(c: &mut AnyConnection, kind: TokenKind) -> Result<Vec<TokenRow>> {
    let sql = if kind == TokenKind::Node {
        "SELECT id, name, NULL AS role, node_id, created_at FROM node_tokens \
         ORDER BY created_at, id"
    } else {
        "SELECT id, name, role, NULL AS node_id, created_at FROM api_tokens \
         ORDER BY created_at, id"
    };
    fetch_all(c, sql, NO_BINDS, |r| {
        let role = opt_parse_col(r, "role", role_of)?;
        Ok((
            r.try_get("id")?,
            r.try_get("name")?,
            role,
            opt_parse_col(r, "node_id", |s| NodeId::parse(s).ok())?,
            r.try_get("created_at")?,
        ))
    })
    .await
}

/// False when there is no such token.
pub async fn delete_token(c: &mut AnyConnection, kind: TokenKind, id: &str) -> Result<bool> {
    let sql = if kind == TokenKind::Node {
        "DELETE FROM node_tokens WHERE id = $1"
    } else {
        "DELETE FROM api_tokens WHERE id = $1"
    };
    Ok(sqlx::query(sql)
        .bind(id)
        .execute(&mut *c)
        .await?
        .rows_affected()
        == 1)
}
