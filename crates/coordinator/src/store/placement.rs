//! The snapshot placement reads: every node and every held slot, each in one JSON statement.

use super::{Result, StoreError, sql};
use crate::placement::Millis;
use pxs_protocol::api::SessionState;
use pxs_protocol::node::{ApplicationId, NodeId, SessionId};
use sqlx::AnyConnection;

/// A slot held on a node: the node, the session, its state and interval.
pub type HeldSlot = (
    NodeId,
    SessionId,
    SessionState,
    Option<Millis>,
    Option<Millis>,
);

/// Runs `sql`, which aggregates many rows into one JSON array (one row, one TEXT column), and
/// parses the array. Placement reads every node and every slot-holding session; the `Any`
/// driver hands rows over one message and one conversion at a time (about 7 µs a row), so 100
/// nodes and 500 sessions cost 4 ms row by row and a fraction of that as one JSON text.
async fn json_rows<T: serde::de::DeserializeOwned>(
    c: &mut AnyConnection,
    sqlite: &'static str,
    postgres: &'static str,
    what: &'static str,
) -> Result<Vec<T>> {
    let sql = if c.backend_name().eq_ignore_ascii_case("postgresql") {
        postgres
    } else {
        sqlite
    };
    let text: Option<String> = sqlx::query_scalar(sql).fetch_one(&mut *c).await?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(what)),
    }
}

/// The slots held on nodes, for placement: node, state and interval only.
pub async fn held_slots(c: &mut AnyConnection) -> Result<Vec<HeldSlot>> {
    type Raw = (String, String, String, Option<Millis>, Option<Millis>);
    let rows: Vec<Raw> = json_rows(
        c,
        sql::HELD_SLOTS_SQLITE,
        sql::HELD_SLOTS_POSTGRES,
        "sessions",
    )
    .await?;
    rows.into_iter()
        .map(|(node, id, state, start, end)| {
            Ok((
                NodeId::parse(&node).map_err(|_| StoreError::Corrupt("node_id"))?,
                SessionId::parse(&id).map_err(|_| StoreError::Corrupt("id"))?,
                SessionState::parse(&state).ok_or(StoreError::Corrupt("state"))?,
                start,
                end,
            ))
        })
        .collect()
}

/// A node as placement reads it: only the columns that decide where a session goes.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementNode {
    pub id: NodeId,
    pub available: bool,
    pub capacity: u32,
    pub applications: Vec<ApplicationId>,
}

/// Every node, as placement reads it.
pub async fn placement_nodes(c: &mut AnyConnection) -> Result<Vec<PlacementNode>> {
    type Raw = (String, i64, i64, i64, i64, i64, i64, Vec<ApplicationId>);
    let rows: Vec<Raw> = json_rows(
        c,
        "SELECT json_group_array(json_array(id, online, admin_drain, node_drain, max_sessions, \
         max_sessions_per_gpu, json_array_length(gpus), json(applications))) FROM nodes",
        "SELECT json_agg(json_build_array(id, online, admin_drain, node_drain, max_sessions, \
         max_sessions_per_gpu, json_array_length(gpus::json), applications::json))::text \
         FROM nodes",
        "nodes",
    )
    .await?;
    rows.into_iter()
        .map(
            |(id, online, admin_drain, node_drain, max, per_gpu, gpus, applications)| {
                let u32_of = |v: i64, what| u32::try_from(v).map_err(|_| StoreError::Corrupt(what));
                Ok(PlacementNode {
                    id: NodeId::parse(&id).map_err(|_| StoreError::Corrupt("id"))?,
                    available: crate::model::node_available(
                        online != 0,
                        admin_drain != 0,
                        node_drain != 0,
                    ),
                    capacity: crate::placement::capacity(
                        u32_of(max, "max_sessions")?,
                        u32_of(per_gpu, "max_sessions_per_gpu")?,
                        usize::try_from(gpus).map_err(|_| StoreError::Corrupt("gpus"))?,
                    ),
                    applications,
                })
            },
        )
        .collect()
}
