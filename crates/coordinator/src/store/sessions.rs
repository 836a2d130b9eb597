//! Sessions and the queue: writing a session, reading one or a list (with its queue position),
//! the sets of sessions the engine's timers act on, and the counts.

use super::{
    NO_BINDS, Result, StoreError, fetch_all, fetch_one, fetch_optional, n_col, opt_parse_col,
    parse_col, sql,
};
use crate::auth::{EndedBy, Owner};
use crate::model::{Desired, Observed, SessionRow, SessionSettings};
use crate::placement::Millis;
use pxs_protocol::api::{EndReason, SessionState, TitleId};
use pxs_protocol::node::{ApplicationId, NodeId, SessionId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

fn session_from_row(row: &AnyRow) -> Result<SessionRow> {
    let settings: String = row.try_get("settings")?;
    Ok(SessionRow {
        id: parse_col(row, "id", |s| SessionId::parse(s).ok())?,
        title_id: parse_col(row, "title_id", |s| TitleId::parse(s).ok())?,
        application_id: parse_col(row, "application_id", |s| ApplicationId::parse(s).ok())?,
        node_id: opt_parse_col(row, "node_id", |s| NodeId::parse(s).ok())?,
        state: parse_col(row, "state", SessionState::parse)?,
        desired: Desired::parse(&row.try_get::<String, _>("desired")?),
        observed: Observed::parse(&row.try_get::<String, _>("observed")?),
        queue_seq: row.try_get("queue_seq")?,
        created_at: row.try_get("created_at")?,
        start_at: row.try_get("start_at")?,
        duration: row.try_get("duration")?,
        slot_start: row.try_get("slot_start")?,
        slot_end: row.try_get("slot_end")?,
        dispatched_at: row.try_get("dispatched_at")?,
        stop_sent_at: row.try_get("stop_sent_at")?,
        ready_at: row.try_get("ready_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: opt_parse_col(row, "end_reason", EndReason::parse)?,
        stop_reason: opt_parse_col(row, "stop_reason", EndReason::parse)?,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|v| i32::try_from(v).map_err(|_| StoreError::Corrupt("exit_code")))
            .transpose()?,
        detail: row.try_get("detail")?,
        player_url: row.try_get("player_url")?,
        player_key: row.try_get("player_key")?,
        owner: parse_col(row, "owner", Owner::parse)?,
        ended_by: opt_parse_col(row, "ended_by", EndedBy::parse)?,
        settings: serde_json::from_str::<SessionSettings>(&settings)
            .map_err(|_| StoreError::Corrupt("settings"))?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Writes a session: inserts it, or stores every field that changes after creation. One bind
/// list for both, so a new column cannot be forgotten in one of them.
async fn write_session(c: &mut AnyConnection, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, title_id, application_id, node_id, state, desired, observed, \
         queue_seq, created_at, start_at, duration, slot_start, slot_end, dispatched_at, \
         stop_sent_at, ready_at, ended_at, end_reason, stop_reason, exit_code, detail, \
         player_url, player_key, owner, settings, updated_at, ended_by) VALUES ($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26, $27) ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, \
         state = excluded.state, desired = excluded.desired, observed = excluded.observed, \
         queue_seq = excluded.queue_seq, slot_start = excluded.slot_start, \
         slot_end = excluded.slot_end, dispatched_at = excluded.dispatched_at, \
         stop_sent_at = excluded.stop_sent_at, ready_at = excluded.ready_at, \
         ended_at = excluded.ended_at, end_reason = excluded.end_reason, \
         stop_reason = excluded.stop_reason, exit_code = excluded.exit_code, \
         detail = excluded.detail, player_url = excluded.player_url, \
         player_key = CASE WHEN excluded.state IN ('ended', 'failed') THEN '' \
           ELSE sessions.player_key END, \
         updated_at = excluded.updated_at, ended_by = excluded.ended_by",
    )
    .bind(s.id.as_str())
    .bind(s.title_id.as_str())
    .bind(s.application_id.as_str())
    .bind(s.node_id.as_ref().map(|n| n.as_str().to_owned()))
    .bind(s.state.as_str())
    .bind(s.desired.as_str())
    .bind(s.observed.as_str())
    .bind(s.queue_seq)
    .bind(s.created_at)
    .bind(s.start_at)
    .bind(s.duration)
    .bind(s.slot_start)
    .bind(s.slot_end)
    .bind(s.dispatched_at)
    .bind(s.stop_sent_at)
    .bind(s.ready_at)
    .bind(s.ended_at)
    .bind(s.end_reason.map(EndReason::as_str))
    .bind(s.stop_reason.map(EndReason::as_str))
    .bind(s.exit_code.map(i64::from))
    .bind(s.detail.as_deref())
    .bind(s.player_url.as_deref())
    .bind(&s.player_key)
    .bind(s.owner.to_string())
    .bind(serde_json::to_string(&s.settings).unwrap_or_else(|_| "{}".into()))
    .bind(s.updated_at)
    .bind(s.ended_by.map(EndedBy::as_str))
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn insert_session(c: &mut AnyConnection, s: &SessionRow) -> Result<()> {
    write_session(c, s).await
}

/// Stores every field that changes after creation (the row exists: it was loaded).
pub async fn update_session(c: &mut AnyConnection, s: &SessionRow) -> Result<()> {
    write_session(c, s).await
}

/// A session and, when it is queued, its place in its title's queue (1 = next), read in one
/// statement and so from one snapshot of the database: a queue that moves while a list is read
/// never shows a position twice or a position 0.
pub async fn get_session_with_position(
    c: &mut AnyConnection,
    id: &SessionId,
) -> Result<Option<(SessionRow, Option<i64>)>> {
    fetch_optional(
        c,
        sql::SESSION_WITH_POSITION,
        [id.as_str()],
        session_with_position,
    )
    .await
}

fn session_with_position(row: &AnyRow) -> Result<(SessionRow, Option<i64>)> {
    Ok((session_from_row(row)?, row.try_get("queue_position")?))
}

/// A session, its row locked until the transaction ends (PostgreSQL; SQLite's one writer
/// connection has every write transaction alone): for a change made under the placement lock
/// held shared, where another transaction may change the same session at the same time.
pub async fn get_session_for_update(
    c: &mut AnyConnection,
    id: &SessionId,
) -> Result<Option<SessionRow>> {
    let sql = if is_postgres(c) {
        "SELECT * FROM sessions WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM sessions WHERE id = $1"
    };
    fetch_optional(c, sql, [id.as_str()], session_from_row).await
}

/// The sessions starting or ready on `node`, their rows locked as [`get_session_for_update`]
/// locks one.
pub async fn active_on_node_for_update(
    c: &mut AnyConnection,
    node: &NodeId,
) -> Result<Vec<SessionRow>> {
    let sql = if is_postgres(c) {
        sql::ACTIVE_ON_NODE_FOR_UPDATE
    } else {
        sql::ACTIVE_ON_NODE
    };
    fetch_all(c, sql, [node.as_str()], session_from_row).await
}

fn is_postgres(c: &AnyConnection) -> bool {
    c.backend_name().eq_ignore_ascii_case("postgresql")
}

pub async fn get_session(c: &mut AnyConnection, id: &SessionId) -> Result<Option<SessionRow>> {
    fetch_optional(
        c,
        "SELECT * FROM sessions WHERE id = $1",
        [id.as_str()],
        session_from_row,
    )
    .await
}

/// Starting or ready sessions placed on `node`.
pub async fn active_on_node(c: &mut AnyConnection, node: &NodeId) -> Result<Vec<SessionRow>> {
    fetch_all(c, sql::ACTIVE_ON_NODE, [node.as_str()], session_from_row).await
}

/// Scheduled sessions due to start at `due` (their `start_at` minus the lead time has come).
pub async fn scheduled_due(c: &mut AnyConnection, due: Millis) -> Result<Vec<SessionRow>> {
    fetch_all(c, sql::SCHEDULED_DUE, [due], session_from_row).await
}

/// Starting or ready sessions a timer must act on: their node is gone or offline since before
/// `lost_before`, or their window ended by `now` while they are still wanted.
pub async fn sessions_to_end(
    c: &mut AnyConnection,
    lost_before: Millis,
    now: Millis,
) -> Result<Vec<SessionRow>> {
    fetch_all(
        c,
        sql::SESSIONS_TO_END,
        [lost_before, now],
        session_from_row,
    )
    .await
}

/// The titles that have a queue.
pub async fn queued_titles(c: &mut AnyConnection) -> Result<Vec<TitleId>> {
    fetch_all(c, sql::QUEUED_TITLES, NO_BINDS, |r| {
        parse_col(r, "title_id", |s| TitleId::parse(s).ok())
    })
    .await
}

/// A title's queue, head first.
pub async fn queue_of(c: &mut AnyConnection, title: &TitleId) -> Result<Vec<SessionRow>> {
    fetch_all(c, sql::QUEUE_OF, [title.as_str()], session_from_row).await
}

pub async fn queue_length(c: &mut AnyConnection, title: &TitleId) -> Result<i64> {
    fetch_one(c, sql::QUEUE_LENGTH, [title.as_str()], n_col).await
}

pub async fn next_queue_seq(c: &mut AnyConnection) -> Result<i64> {
    fetch_one(c, sql::NEXT_QUEUE_SEQ, NO_BINDS, n_col).await
}

/// Sessions whose node must be told something: a start not sent yet, or a stop not sent yet.
pub async fn undelivered(c: &mut AnyConnection) -> Result<Vec<SessionRow>> {
    fetch_all(c, sql::UNDELIVERED, NO_BINDS, session_from_row).await
}

pub struct SessionFilter<'a> {
    pub state: Option<SessionState>,
    pub title: Option<&'a TitleId>,
    pub node: Option<&'a NodeId>,
    pub end_reason: Option<EndReason>,
    pub owner: Option<&'a Owner>,
    pub limit: i64,
}

/// Sessions as [`get_session_with_position`] reads one, newest first.
pub async fn list_sessions(
    c: &mut AnyConnection,
    f: &SessionFilter<'_>,
) -> Result<Vec<(SessionRow, Option<i64>)>> {
    // Only the shape of the WHERE clause varies; every value is bound.
    let mut sql = String::from(sql::SESSIONS_WITH_POSITION);
    let mut binds: Vec<String> = Vec::new();
    let mut add = |col: &str, value: String| {
        binds.push(value);
        sql.push_str(&format!(" AND {col} = ${}", binds.len()));
    };
    if let Some(s) = f.state {
        add("s.state", s.as_str().to_owned());
    }
    if let Some(t) = f.title {
        add("s.title_id", t.as_str().to_owned());
    }
    if let Some(n) = f.node {
        add("s.node_id", n.as_str().to_owned());
    }
    if let Some(r) = f.end_reason {
        add("s.end_reason", r.as_str().to_owned());
    }
    if let Some(o) = f.owner {
        add("s.owner", o.to_string());
    }
    sql.push_str(&format!(
        " ORDER BY s.created_at DESC, s.id LIMIT {}",
        f.limit.clamp(1, 1000)
    ));
    fetch_all(c, sqlx::AssertSqlSafe(sql), binds, session_with_position).await
}

pub async fn count_by_state(c: &mut AnyConnection) -> Result<Vec<(String, i64)>> {
    fetch_all(
        c,
        "SELECT state, COUNT(*) AS n FROM sessions GROUP BY state",
        NO_BINDS,
        |r| Ok((r.try_get("state")?, r.try_get("n")?)),
    )
    .await
}

/// Sessions of `owner` that are not over.
pub async fn count_live_of_owner(c: &mut AnyConnection, owner: &Owner) -> Result<i64> {
    fetch_one(c, sql::LIVE_OF_OWNER, [owner.to_string()], n_col).await
}

pub async fn count_sessions_of_title(c: &mut AnyConnection, title: &TitleId) -> Result<i64> {
    fetch_one(c, sql::LIVE_OF_TITLE, [title.as_str()], n_col).await
}

/// The sessions (booked, starting, ready) each anonymous owner holds, by stored owner
/// (`anon:<address key>`).
pub async fn holding_of_anonymous(
    c: &mut AnyConnection,
) -> Result<std::collections::HashMap<String, i64>> {
    Ok(fetch_all(c, sql::HOLDING_OF_ANONYMOUS, NO_BINDS, |r| {
        Ok((r.try_get::<String, _>("owner")?, n_col(r)?))
    })
    .await?
    .into_iter()
    .collect())
}

/// The sessions (booked, starting, ready) `owner` holds.
pub async fn holding_of_owner(c: &mut AnyConnection, owner: &Owner) -> Result<i64> {
    fetch_one(c, sql::HOLDING_OF_OWNER, [owner.to_string()], n_col).await
}

/// PostgreSQL: locks `owner` until the transaction ends, so that two placements of one
/// anonymous address that run side by side (`Store::begin_admission`) count its sessions one
/// after the other. (The two-key advisory locks are a key space apart from the placement lock.)
pub async fn lock_owner(c: &mut AnyConnection, owner: &Owner) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(super::OWNER_LOCK)
        .bind(owner.to_string())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The requests `owner` has waiting in queues.
pub async fn waiting_of_owner(c: &mut AnyConnection, owner: &Owner) -> Result<i64> {
    fetch_one(c, sql::WAITING_OF_OWNER, [owner.to_string()], n_col).await
}

/// How long (ms) the latest sessions of `title` that ran lasted, newest first (at most 20).
pub async fn recent_lengths(c: &mut AnyConnection, title: &TitleId) -> Result<Vec<Millis>> {
    fetch_all(c, sql::RECENT_LENGTHS, [title.as_str()], n_col).await
}
