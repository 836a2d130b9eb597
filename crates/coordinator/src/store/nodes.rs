//! Nodes: what each node reported (hello, heartbeats), its link and drains, and the last of its
//! events applied.

use super::{NO_BINDS, Result, StoreError, fetch_all, fetch_optional, flag, parse_col, u32_col};
use crate::model::NodeRow;
use crate::placement::Millis;
use pxs_protocol::node::{ApplicationId, NodeId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

fn node_from_row(row: &AnyRow) -> Result<NodeRow> {
    let apps: String = row.try_get("applications")?;
    let gpus: String = row.try_get("gpus")?;
    Ok(NodeRow {
        id: parse_col(row, "id", |s| NodeId::parse(s).ok())?,
        version: row.try_get("version")?,
        public_url: row.try_get("public_url")?,
        upstream_url: row.try_get("upstream_url")?,
        max_sessions: u32_col(row, "max_sessions")?,
        max_sessions_per_gpu: u32_col(row, "max_sessions_per_gpu")?,
        applications: serde_json::from_str(&apps)
            .map_err(|_| StoreError::Corrupt("applications"))?,
        gpus: serde_json::from_str(&gpus).map_err(|_| StoreError::Corrupt("gpus"))?,
        online: row.try_get::<i64, _>("online")? != 0,
        admin_drain: row.try_get::<i64, _>("admin_drain")? != 0,
        drain_deadline: row.try_get("drain_deadline")?,
        node_drain: row.try_get::<i64, _>("node_drain")? != 0,
        link_owner: row.try_get("link_owner")?,
        link_since: row.try_get("link_since")?,
        last_seen: row.try_get("last_seen")?,
        offline_since: row.try_get("offline_since")?,
        acked_seq: row.try_get("acked_seq")?,
    })
}

pub async fn list_nodes(c: &mut AnyConnection) -> Result<Vec<NodeRow>> {
    fetch_all(
        c,
        "SELECT * FROM nodes ORDER BY id",
        NO_BINDS,
        node_from_row,
    )
    .await
}

pub async fn get_node(c: &mut AnyConnection, id: &NodeId) -> Result<Option<NodeRow>> {
    fetch_optional(
        c,
        "SELECT * FROM nodes WHERE id = $1",
        [id.as_str()],
        node_from_row,
    )
    .await
}

/// Records a node's `hello`: creates it, or updates what it reports, keeping what the
/// coordinator decided (admin drain) and knows (acknowledged events).
pub async fn upsert_node_hello(c: &mut AnyConnection, n: &NodeRow) -> Result<()> {
    let apps = serde_json::to_string(&n.applications).unwrap_or_else(|_| "[]".into());
    let gpus = serde_json::to_string(&n.gpus).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO nodes (id, version, public_url, max_sessions, max_sessions_per_gpu, \
         applications, gpus, online, admin_drain, node_drain, link_owner, link_since, last_seen, \
         offline_since, acked_seq, first_seen, upstream_url) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $9, $10, $11, NULL, 0, $11, $12) \
         ON CONFLICT (id) DO UPDATE SET version = $2, public_url = $3, max_sessions = $4, \
         max_sessions_per_gpu = $5, applications = $6, gpus = $7, online = 1, node_drain = $8, \
         link_owner = $9, link_since = $10, last_seen = $11, offline_since = NULL, \
         upstream_url = $12",
    )
    .bind(n.id.as_str())
    .bind(&n.version)
    .bind(&n.public_url)
    .bind(i64::from(n.max_sessions))
    .bind(i64::from(n.max_sessions_per_gpu))
    .bind(apps)
    .bind(gpus)
    .bind(flag(n.node_drain))
    .bind(n.link_owner.as_deref())
    .bind(n.link_since)
    .bind(n.last_seen)
    .bind(n.upstream_url.as_deref())
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn set_node_applications(
    c: &mut AnyConnection,
    id: &NodeId,
    apps: &[ApplicationId],
) -> Result<()> {
    let apps = serde_json::to_string(apps).unwrap_or_else(|_| "[]".into());
    sqlx::query("UPDATE nodes SET applications = $2 WHERE id = $1")
        .bind(id.as_str())
        .bind(apps)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// A heartbeat from the node's current link holder.
pub async fn node_seen(
    c: &mut AnyConnection,
    id: &NodeId,
    now: Millis,
    node_drain: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE nodes SET last_seen = $2, node_drain = $3, online = 1, offline_since = NULL \
         WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(now)
    .bind(flag(node_drain))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// An admin drains the node (`Some`, with the deadline for its sessions, if any) or resumes it
/// (`None`). False when there is no such node.
pub async fn set_admin_drain(
    c: &mut AnyConnection,
    id: &NodeId,
    drain: Option<Option<Millis>>,
) -> Result<bool> {
    let done = sqlx::query("UPDATE nodes SET admin_drain = $2, drain_deadline = $3 WHERE id = $1")
        .bind(id.as_str())
        .bind(flag(drain.is_some()))
        .bind(drain.flatten())
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The admin's drain of `node`, if it is drained: `Some(deadline)`.
pub async fn admin_drain(c: &mut AnyConnection, id: &NodeId) -> Result<Option<Option<Millis>>> {
    let row: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT admin_drain, drain_deadline FROM nodes WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await?;
    Ok(row.and_then(|(on, deadline)| (on != 0).then_some(deadline)))
}

/// Online nodes an admin drains whose last heartbeat said they do not, with the deadline.
pub async fn drains_not_reported(c: &mut AnyConnection) -> Result<Vec<(NodeId, Option<Millis>)>> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT id, drain_deadline FROM nodes \
         WHERE admin_drain = 1 AND node_drain = 0 AND online = 1 ORDER BY id",
    )
    .fetch_all(&mut *c)
    .await?;
    rows.into_iter()
        .map(|(id, d)| {
            Ok((
                NodeId::parse(&id).map_err(|_| StoreError::Corrupt("id"))?,
                d,
            ))
        })
        .collect()
}

/// The last event of `node` that was applied (0 for an unknown node).
pub async fn acked_seq(c: &mut AnyConnection, id: &NodeId) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT acked_seq FROM nodes WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?;
    Ok(v.unwrap_or(0))
}

pub async fn set_acked(c: &mut AnyConnection, id: &NodeId, seq: i64) -> Result<()> {
    sqlx::query("UPDATE nodes SET acked_seq = $2 WHERE id = $1 AND acked_seq < $2")
        .bind(id.as_str())
        .bind(seq)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The link closed: offline now, unless another link (this or another coordinator) took over.
pub async fn link_closed(
    c: &mut AnyConnection,
    id: &NodeId,
    owner: &str,
    since: Millis,
    now: Millis,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE nodes SET online = 0, offline_since = $4, link_owner = NULL \
         WHERE id = $1 AND link_owner = $2 AND link_since = $3",
    )
    .bind(id.as_str())
    .bind(owner)
    .bind(since)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Nodes online but silent since before `stale`: now offline. Returns them.
pub async fn expire_nodes(
    c: &mut AnyConnection,
    stale: Millis,
    now: Millis,
) -> Result<Vec<NodeId>> {
    fetch_all(
        c,
        "UPDATE nodes SET online = 0, offline_since = $2, link_owner = NULL \
         WHERE online = 1 AND last_seen < $1 RETURNING id",
        [stale, now],
        |r| parse_col(r, "id", |s| NodeId::parse(s).ok()),
    )
    .await
}
