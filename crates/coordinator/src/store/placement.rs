//! The snapshot placement reads: every node and every held slot, each in one JSON statement,
//! or both (with what a new session's admission also needs) in one statement.

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
    let text: Option<String> = sqlx::query_scalar(by_backend(c, sqlite, postgres))
        .fetch_one(&mut *c)
        .await?;
    parse_json_rows(text, what)
}

/// `sqlite` or `postgres`, whichever `c` speaks.
fn by_backend<'a>(c: &AnyConnection, sqlite: &'a str, postgres: &'a str) -> &'a str {
    if c.backend_name().eq_ignore_ascii_case("postgresql") {
        postgres
    } else {
        sqlite
    }
}

/// The nodes and held slots of a statement that read both as JSON texts.
fn nodes_and_held(
    nodes: Option<String>,
    held: Option<String>,
) -> Result<(Vec<PlacementNode>, Vec<HeldSlot>)> {
    Ok((
        nodes_of(parse_json_rows(nodes, "nodes")?)?,
        held_of(parse_json_rows(held, "sessions")?)?,
    ))
}

fn parse_json_rows<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &'static str,
) -> Result<Vec<T>> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(what)),
    }
}

const NODES_SQLITE: &str = "SELECT json_group_array(json_array(id, online, admin_drain, \
    node_drain, max_sessions, max_sessions_per_gpu, json_array_length(gpus), \
    json(applications))) FROM nodes";
/// As [`sql::HELD_SLOTS_POSTGRES`], the JSON is written by concatenation: the id is checked to
/// be `[A-Za-z0-9_.-]`, the numbers are integers and `applications` is the JSON array the
/// coordinator stored (0.75 → 0.5 ms for 100 nodes).
const NODES_POSTGRES: &str = "SELECT '[' || string_agg('[\"' || id || '\",' || online || ',' \
    || admin_drain || ',' || node_drain || ',' || max_sessions || ',' || max_sessions_per_gpu \
    || ',' || json_array_length(gpus::json) || ',' || applications || ']', ',') || ']' FROM nodes";

/// What a new session's admission reads under the placement lock, in one statement (one round
/// trip while the lock is held): every node and held slot as [`placement_nodes`] and
/// [`held_slots`] read them, the requests queued for the title, and whether the title still
/// exists (it was read before the lock; deleting a title takes the lock and needs it without
/// live sessions).
#[derive(Clone, Debug)]
pub struct AdmissionSnapshot {
    pub nodes: Vec<PlacementNode>,
    pub held: Vec<HeldSlot>,
    pub queued: i64,
    pub title_exists: bool,
}

/// Reads the [`AdmissionSnapshot`] for a new session of `title`.
pub async fn admission_snapshot(
    c: &mut AnyConnection,
    title: &pxs_protocol::api::TitleId,
) -> Result<AdmissionSnapshot> {
    static SQLITE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| snapshot_sql(NODES_SQLITE, sql::HELD_SLOTS_SQLITE));
    static POSTGRES: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| snapshot_sql(NODES_POSTGRES, sql::HELD_SLOTS_POSTGRES));
    let sql = by_backend(c, &SQLITE, &POSTGRES);
    let (nodes, held, queued, titles): (Option<String>, Option<String>, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(title.as_str())
            .fetch_one(&mut *c)
            .await?;
    let (nodes, held) = nodes_and_held(nodes, held)?;
    Ok(AdmissionSnapshot {
        nodes,
        held,
        queued,
        title_exists: titles > 0,
    })
}

/// How many of a placement's best nodes it tries to lock without waiting
/// ([`lock_placement_node`]).
pub const CANDIDATES: usize = 8;

/// PostgreSQL, in a transaction that holds the placement lock shared: takes the placement lock
/// of the first of `candidates` (the nodes a placement would take, best first, at most
/// [`CANDIDATES`]) that no other placement holds now, so that placements arriving together
/// spread over the nodes instead of queueing on the best one; if all are held, waits for the
/// first. Returns the node whose lock it holds until the transaction ends.
///
/// A node's placement lock is an advisory lock keyed on its id (in the two-key space, apart
/// from the placement lock), not its row: a node's events and heartbeats lock its row for as
/// long as their own transaction, and a placement need not wait for them (they never take a
/// slot). Two ids whose hashes collide share a lock, which costs a wait, never a slot.
pub async fn lock_placement_node(c: &mut AnyConnection, candidates: &[NodeId]) -> Result<NodeId> {
    // The candidates in order; the filter on the sorted list stops at the first lock taken, so
    // no other is taken. `OFFSET 0` keeps the planner from pushing the filter below the sort
    // (it would try every candidate's lock, and hold each one it got).
    static FIRST_FREE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (1..=CANDIDATES)
            .map(|n| {
                let values: Vec<String> = (1..=n).map(|i| format!("({i}, ${i}::text)")).collect();
                format!(
                    "SELECT id FROM (SELECT n, id FROM (VALUES {}) AS c(n, id) ORDER BY n OFFSET 0) AS o \
                     WHERE pg_try_advisory_xact_lock({NODE_LOCK}, hashtext(id)) LIMIT 1",
                    values.join(", ")
                )
            })
            .collect()
    });
    static WAIT_FOR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT pg_advisory_xact_lock({NODE_LOCK}, hashtext($1))")
    });
    let Some(first) = candidates.first() else {
        return Err(StoreError::Corrupt("no candidate node"));
    };
    let candidates = &candidates[..candidates.len().min(CANDIDATES)];
    let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(
        FIRST_FREE[candidates.len() - 1].as_str(),
    ));
    for id in candidates {
        q = q.bind(id.as_str());
    }
    let free: Option<String> = q.fetch_optional(&mut *c).await?;
    match free {
        Some(id) => NodeId::parse(&id).map_err(|_| StoreError::Corrupt("id")),
        None => {
            sqlx::query(sqlx::AssertSqlSafe(WAIT_FOR.as_str()))
                .bind(first.as_str())
                .execute(&mut *c)
                .await?;
            Ok(first.clone())
        }
    }
}

/// The first key of the placement locks of single nodes ([`lock_placement_node`]).
const NODE_LOCK: i32 = 0x7078_7303;

/// What a placement reads again after it locked its node ([`lock_placement_node`]), when every
/// placement committed on that node before is visible.
#[derive(Clone, Debug)]
pub struct NodeRecheck {
    /// The node as placement reads it (`None` if it is gone).
    pub node: Option<PlacementNode>,
    pub held: Vec<HeldSlot>,
    /// The requests queued for the title.
    pub queued: i64,
    pub title_exists: bool,
}

/// PostgreSQL: reads the [`NodeRecheck`] of `node` for a session of `title`, in one statement.
pub async fn node_slots(
    c: &mut AnyConnection,
    node: &NodeId,
    title: &pxs_protocol::api::TitleId,
) -> Result<NodeRecheck> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT ({NODES_POSTGRES} WHERE id = $1) AS nodes, ({held}) AS held, \
             ({queued}) AS queued, (SELECT COUNT(*) FROM titles WHERE id = $2) AS titles",
            held = sql::HELD_ON_NODE_POSTGRES,
            queued = sql::QUEUE_LENGTH.replace("$1", "$2"),
        )
    });
    let (nodes, held, queued, titles): (Option<String>, Option<String>, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
            .bind(node.as_str())
            .bind(title.as_str())
            .fetch_one(&mut *c)
            .await?;
    let (mut nodes, held) = nodes_and_held(nodes, held)?;
    Ok(NodeRecheck {
        node: nodes.pop(),
        held,
        queued,
        title_exists: titles > 0,
    })
}

/// Every node and every held slot, as [`placement_nodes`] and [`held_slots`] read them, in one
/// statement (one snapshot, one round trip).
pub async fn placement_snapshot(
    c: &mut AnyConnection,
) -> Result<(Vec<PlacementNode>, Vec<HeldSlot>)> {
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT ({NODES_SQLITE}) AS nodes, ({}) AS held",
            sql::HELD_SLOTS_SQLITE
        )
    });
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT ({NODES_POSTGRES}) AS nodes, ({}) AS held",
            sql::HELD_SLOTS_POSTGRES
        )
    });
    let sql = by_backend(c, &SQLITE, &POSTGRES);
    let (nodes, held): (Option<String>, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *c)
        .await?;
    nodes_and_held(nodes, held)
}

/// The one statement of [`admission_snapshot`], from the statements that read its parts.
fn snapshot_sql(nodes: &str, held: &str) -> String {
    format!(
        "SELECT ({nodes}) AS nodes, ({held}) AS held, ({queued}) AS queued, \
         (SELECT COUNT(*) FROM titles WHERE id = $1) AS titles",
        queued = sql::QUEUE_LENGTH,
    )
}

/// The slots held on nodes, for placement: node, state and interval only.
pub async fn held_slots(c: &mut AnyConnection) -> Result<Vec<HeldSlot>> {
    held_of(
        json_rows(
            c,
            sql::HELD_SLOTS_SQLITE,
            sql::HELD_SLOTS_POSTGRES,
            "sessions",
        )
        .await?,
    )
}

type RawSlot = (String, String, String, Option<Millis>, Option<Millis>);

fn held_of(rows: Vec<RawSlot>) -> Result<Vec<HeldSlot>> {
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
    nodes_of(json_rows(c, NODES_SQLITE, NODES_POSTGRES, "nodes").await?)
}

type RawNode = (String, i64, i64, i64, i64, i64, i64, Vec<ApplicationId>);

fn nodes_of(rows: Vec<RawNode>) -> Result<Vec<PlacementNode>> {
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
