//! Storage: SQLite (one embedded file, the default) or PostgreSQL (production, several
//! coordinators), through sqlx's `Any` driver with one set of queries.
//!
//! Every query here is plain SQL that both databases run the same way (`$1` parameters,
//! integers for times and flags, TEXT for ids and JSON). The only differences are kept in
//! [`Backend`]: the schema migrations (one folder per database) and how a transaction that
//! changes capacity is serialised: PostgreSQL takes a transaction-scoped advisory lock, which
//! also serialises several coordinators sharing one database; SQLite has one writer, and the
//! pool holds a single connection so a transaction is never interleaved with another.
//!
//! Functions take a connection (`&mut AnyConnection`, a transaction derefs to one) so the
//! engine composes them inside one transaction.

use crate::auth::{Owner, TokenKind};
use crate::model::{Desired, NodeRow, Observed, SessionRow, SessionSettings, TitleRow};
use crate::placement::Millis;
use pxs_protocol::api::{EndReason, Role, SessionState, TitleId, Visibility};
use pxs_protocol::node::{ApplicationId, NodeId, SessionId};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(sqlx::Error),
    /// No connection (or, on PostgreSQL, the placement lock) within the configured wait.
    #[error("database busy: nothing free within the wait")]
    Busy,
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database holds an invalid value in {0}")]
    Corrupt(&'static str),
    #[error("unsupported database URL (use sqlite://<file> or postgres://...): {0}")]
    BadUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        // PostgreSQL's lock_not_available: the placement lock was not free within lock_timeout.
        let lock_timeout = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "55P03");
        if matches!(e, sqlx::Error::PoolTimedOut) || lock_timeout {
            StoreError::Busy
        } else {
            StoreError::Db(e)
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write transaction on one connection of the pool, begun and ended with plain SQL.
///
/// sqlx's own `Transaction` keeps a nesting depth beside the connection and, when a `COMMIT` or a
/// `ROLLBACK` fails, trusts that depth over the database: after a failed commit on a full disk
/// the single SQLite writer could be handed out again still inside its old transaction, and every
/// later "transaction" became a savepoint in it that no reader ever saw (issue 9, case 1). Here a
/// connection whose transaction did not end cleanly is never reused: it is closed, which ends its
/// transaction on both databases, and the pool opens a fresh one.
pub struct Tx {
    conn: Option<PoolConnection<Any>>,
    /// Counts a failed `COMMIT`.
    health: WriteHealth,
}

impl Tx {
    async fn begin(pool: &AnyPool, health: WriteHealth) -> Result<Tx> {
        let mut conn = pool.acquire().await?;
        if let Err(e) = sqlx::query("BEGIN").execute(&mut *conn).await {
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(Tx {
            conn: Some(conn),
            health,
        })
    }

    /// Makes the transaction durable. Only after this returns `Ok` may a write be acknowledged.
    pub async fn commit(mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Corrupt("transaction already ended"));
        };
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Whether the database rolled back or is still inside the transaction depends
                // on the error: the connection is not reused either way.
                conn.close_on_drop();
                let e = StoreError::from(e);
                self.health.failed();
                tracing::error!(error = %e, "database commit failed; the write was not stored");
                Err(e)
            }
        }
    }

    /// Ends the transaction without storing anything (dropping it does the same).
    pub async fn rollback(mut self) {
        if let Some(conn) = self.conn.take() {
            rollback_or_close(conn).await;
        }
    }
}

/// `ROLLBACK`, then the connection goes back to the pool; if the rollback fails, it is closed.
async fn rollback_or_close(mut conn: PoolConnection<Any>) {
    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        tracing::warn!(error = %e, "database rollback failed; closing the connection");
        conn.close_on_drop();
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // An early return or an error: roll back before the connection serves anyone else. The
        // pool counts the connection as taken until then.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(rollback_or_close(conn));
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        // Invariant: `conn` is only taken by `commit` and `rollback`, which consume the Tx.
        #[allow(clippy::expect_used)]
        self.conn
            .as_deref()
            .expect("a live transaction has its connection")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        // Invariant: as in `deref`.
        #[allow(clippy::expect_used)]
        self.conn
            .as_deref_mut()
            .expect("a live transaction has its connection")
    }
}

/// Commits that failed (`pxs_database_commit_failures_total`); `/healthz` probes with a write.
#[derive(Clone, Debug, Default)]
pub struct WriteHealth(Arc<AtomicU64>);

impl WriteHealth {
    fn failed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Commits that failed since the start.
    pub fn failures(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The advisory lock id that serialises capacity changes on PostgreSQL ("pxs" + 1).
const PLACEMENT_LOCK: i64 = 0x7078_7301;

#[derive(Clone, Debug)]
pub struct Store {
    /// Writes (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Reads that need no transaction. On SQLite a separate pool: in WAL mode readers do not
    /// wait for the one writer, so a GET never queues behind placements and node events.
    reader: AnyPool,
    backend: Backend,
    /// [`crate::Config::database_wait`], in milliseconds: the PostgreSQL lock timeout.
    wait_ms: u64,
    health: WriteHealth,
}

impl Store {
    /// Opens (and for SQLite creates) the database and brings its schema up to date. A caller
    /// waits at most `wait` for a connection (and on PostgreSQL for the placement lock), then
    /// gets [`StoreError::Busy`].
    pub async fn connect(url: &str, wait: Duration) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite://") {
            let url = if rest.contains('?') {
                url.to_owned()
            } else {
                format!("sqlite://{rest}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("sqlite:") {
            (Backend::Sqlite, url.to_owned())
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::BadUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            Backend::Sqlite => {
                sqlite_pool(1, wait)
                    .min_connections(1)
                    .connect_with(options.clone())
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(wait)
                    .connect_with(options.clone())
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let reader = match backend {
            Backend::Sqlite => sqlite_pool(4, wait).connect_with(options).await?,
            Backend::Postgres => pool.clone(),
        };
        Ok(Store {
            pool,
            reader,
            backend,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            health: WriteHealth::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub async fn begin(&self) -> Result<Tx> {
        Tx::begin(&self.pool, self.health.clone()).await
    }

    /// Failed commits so far.
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// A write that proves the database takes writes now (`/healthz`).
    pub async fn probe_write(&self, now: Millis) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE health SET checked_at = $1 WHERE id = 1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// A transaction that may change who holds which slot: serialised with every other one,
    /// also across coordinators.
    pub async fn begin_placement(&self) -> Result<Tx> {
        self.begin_locked("SELECT pg_advisory_xact_lock($1)").await
    }

    /// A transaction that applies `node`'s events, and the last event applied before it.
    ///
    /// Events change only their own node's sessions, and never so that one takes a slot (see
    /// `model::apply_event`): on PostgreSQL they hold the placement lock shared, so that the
    /// events of different nodes are applied side by side while every `begin_placement`
    /// transaction still excludes them all. The node's row is locked, so two transactions of one
    /// node (an old link's and its replacement's) are applied one after the other.
    pub async fn begin_node_events(&self, node: &NodeId) -> Result<(Tx, i64)> {
        let mut tx = self
            .begin_locked("SELECT pg_advisory_xact_lock_shared($1)")
            .await?;
        let sql = match self.backend {
            Backend::Postgres => "SELECT acked_seq FROM nodes WHERE id = $1 FOR UPDATE",
            // One writer connection: every write transaction is alone.
            Backend::Sqlite => "SELECT acked_seq FROM nodes WHERE id = $1",
        };
        let acked: Option<i64> = sqlx::query_scalar(sql)
            .bind(node.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        Ok((tx, acked.unwrap_or(0)))
    }

    /// A transaction holding the placement lock as `lock_sql` takes it (PostgreSQL; SQLite's
    /// one writer connection serialises every write transaction anyway).
    async fn begin_locked(&self, lock_sql: &'static str) -> Result<Tx> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // Waiting for the lock is bounded like waiting for a connection.
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", self.wait_ms))
                .execute(&mut *tx)
                .await?;
            sqlx::query(lock_sql)
                .bind(PLACEMENT_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// A SQLite pool of `n` connections in WAL mode; a caller waits at most `wait` for one.
fn sqlite_pool(n: u32, wait: Duration) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(n)
        .acquire_timeout(wait)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    // A commit is on disk before it is acknowledged (NORMAL would lose the last
                    // commits of a power cut in WAL mode).
                    "PRAGMA synchronous = FULL",
                    "PRAGMA busy_timeout = 5000",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn u32_col(row: &AnyRow, col: &'static str) -> Result<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(col))
}

fn u64_col(row: &AnyRow, col: &'static str) -> Result<u64> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(col))
}

fn parse_col<T>(row: &AnyRow, col: &'static str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
    let v: String = row.try_get(col)?;
    f(&v).ok_or(StoreError::Corrupt(col))
}

fn opt_parse_col<T>(
    row: &AnyRow,
    col: &'static str,
    f: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    let v: Option<String> = row.try_get(col)?;
    v.map(|v| f(&v).ok_or(StoreError::Corrupt(col))).transpose()
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

// ---------------------------------------------------------------------------------------------
// Titles

fn title_from_row(row: &AnyRow) -> Result<TitleRow> {
    Ok(TitleRow {
        id: parse_col(row, "id", |s| TitleId::parse(s).ok())?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        image_url: row.try_get("image_url")?,
        application_id: parse_col(row, "application_id", |s| ApplicationId::parse(s).ok())?,
        visibility: parse_col(row, "visibility", |s| match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        })?,
        max_players: u32_col(row, "max_players")?,
        idle_timeout: u64_col(row, "idle_timeout")?,
        empty_timeout: u64_col(row, "empty_timeout")?,
        max_duration: u64_col(row, "max_duration")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub fn visibility_name(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

pub async fn list_titles(c: &mut AnyConnection) -> Result<Vec<TitleRow>> {
    sqlx::query("SELECT * FROM titles ORDER BY name, id")
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(title_from_row)
        .collect()
}

pub async fn get_title(c: &mut AnyConnection, id: &TitleId) -> Result<Option<TitleRow>> {
    sqlx::query("SELECT * FROM titles WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(title_from_row)
        .transpose()
}

/// False if a title with that id exists.
pub async fn insert_title(c: &mut AnyConnection, t: &TitleRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO titles (id, name, description, image_url, application_id, visibility, \
         max_players, idle_timeout, empty_timeout, max_duration, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
    )
    .bind(t.id.as_str())
    .bind(&t.name)
    .bind(&t.description)
    .bind(t.image_url.as_deref())
    .bind(t.application_id.as_str())
    .bind(visibility_name(t.visibility))
    .bind(i64::from(t.max_players))
    .bind(clamp_i64(t.idle_timeout))
    .bind(clamp_i64(t.empty_timeout))
    .bind(clamp_i64(t.max_duration))
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn update_title(c: &mut AnyConnection, t: &TitleRow) -> Result<()> {
    sqlx::query(
        "UPDATE titles SET name = $2, description = $3, image_url = $4, application_id = $5, \
         visibility = $6, max_players = $7, idle_timeout = $8, empty_timeout = $9, \
         max_duration = $10, updated_at = $11 WHERE id = $1",
    )
    .bind(t.id.as_str())
    .bind(&t.name)
    .bind(&t.description)
    .bind(t.image_url.as_deref())
    .bind(t.application_id.as_str())
    .bind(visibility_name(t.visibility))
    .bind(i64::from(t.max_players))
    .bind(clamp_i64(t.idle_timeout))
    .bind(clamp_i64(t.empty_timeout))
    .bind(clamp_i64(t.max_duration))
    .bind(t.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn delete_title(c: &mut AnyConnection, id: &TitleId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM titles WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Tokens (only their SHA-256 is stored)

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

pub async fn find_api_token(c: &mut AnyConnection, hash: &str) -> Result<Option<(String, Role)>> {
    let Some(row) = sqlx::query("SELECT id, role FROM api_tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    let role = parse_col(&row, "role", |s| match s {
        "admin" => Some(Role::Admin),
        "user" => Some(Role::User),
        _ => None,
    })?;
    Ok(Some((row.try_get("id")?, role)))
}

pub async fn count_api_tokens(c: &mut AnyConnection, role: Role) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE role = $1")
            .bind(role_name(role))
            .fetch_one(&mut *c)
            .await?
            .try_get("n")?,
    )
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
    sqlx::query("SELECT id, node_id FROM node_tokens WHERE hash = $1")
        .bind(hash)
        .fetch_optional(&mut *c)
        .await?
        .map(|r| {
            Ok((
                r.try_get("id")?,
                opt_parse_col(&r, "node_id", |s| NodeId::parse(s).ok())?,
            ))
        })
        .transpose()
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
    let rows = sqlx::query(sql).fetch_all(&mut *c).await?;
    rows.iter()
        .map(|r| {
            let role = opt_parse_col(r, "role", |s| match s {
                "admin" => Some(Role::Admin),
                "user" => Some(Role::User),
                _ => None,
            })?;
            Ok((
                r.try_get("id")?,
                r.try_get("name")?,
                role,
                opt_parse_col(r, "node_id", |s| NodeId::parse(s).ok())?,
                r.try_get("created_at")?,
            ))
        })
        .collect()
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

// ---------------------------------------------------------------------------------------------
// Nodes

fn node_from_row(row: &AnyRow) -> Result<NodeRow> {
    let apps: String = row.try_get("applications")?;
    let gpus: String = row.try_get("gpus")?;
    Ok(NodeRow {
        id: parse_col(row, "id", |s| NodeId::parse(s).ok())?,
        version: row.try_get("version")?,
        public_url: row.try_get("public_url")?,
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
    sqlx::query("SELECT * FROM nodes ORDER BY id")
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(node_from_row)
        .collect()
}

pub async fn get_node(c: &mut AnyConnection, id: &NodeId) -> Result<Option<NodeRow>> {
    sqlx::query("SELECT * FROM nodes WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(node_from_row)
        .transpose()
}

/// Records a node's `hello`: creates it, or updates what it reports, keeping what the
/// coordinator decided (admin drain) and knows (acknowledged events).
pub async fn upsert_node_hello(c: &mut AnyConnection, n: &NodeRow) -> Result<()> {
    let apps = serde_json::to_string(&n.applications).unwrap_or_else(|_| "[]".into());
    let gpus = serde_json::to_string(&n.gpus).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO nodes (id, version, public_url, max_sessions, max_sessions_per_gpu, \
         applications, gpus, online, admin_drain, node_drain, link_owner, link_since, last_seen, \
         offline_since, acked_seq, first_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $9, $10, $11, NULL, 0, $11) \
         ON CONFLICT (id) DO UPDATE SET version = $2, public_url = $3, max_sessions = $4, \
         max_sessions_per_gpu = $5, applications = $6, gpus = $7, online = 1, node_drain = $8, \
         link_owner = $9, link_since = $10, last_seen = $11, offline_since = NULL",
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
    let rows = sqlx::query(
        "UPDATE nodes SET online = 0, offline_since = $2, link_owner = NULL \
         WHERE online = 1 AND last_seen < $1 RETURNING id",
    )
    .bind(stale)
    .bind(now)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| parse_col(r, "id", |s| NodeId::parse(s).ok()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sessions

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
         player_url, player_key, owner, settings, updated_at) VALUES ($1, $2, $3, $4, $5, $6, \
         $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, \
         $25, $26) ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, \
         state = excluded.state, desired = excluded.desired, observed = excluded.observed, \
         queue_seq = excluded.queue_seq, slot_start = excluded.slot_start, \
         slot_end = excluded.slot_end, dispatched_at = excluded.dispatched_at, \
         stop_sent_at = excluded.stop_sent_at, ready_at = excluded.ready_at, \
         ended_at = excluded.ended_at, end_reason = excluded.end_reason, \
         stop_reason = excluded.stop_reason, exit_code = excluded.exit_code, \
         detail = excluded.detail, player_url = excluded.player_url, \
         player_key = CASE WHEN excluded.state IN ('ended', 'failed') THEN '' \
           ELSE sessions.player_key END, \
         updated_at = excluded.updated_at",
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
    sqlx::query(sql::SESSION_WITH_POSITION)
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(session_with_position)
        .transpose()
}

fn session_with_position(row: &AnyRow) -> Result<(SessionRow, Option<i64>)> {
    Ok((session_from_row(row)?, row.try_get("queue_position")?))
}

pub async fn get_session(c: &mut AnyConnection, id: &SessionId) -> Result<Option<SessionRow>> {
    sqlx::query("SELECT * FROM sessions WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
}

async fn sessions_where(
    c: &mut AnyConnection,
    sql: &'static str,
    binds: &[&str],
) -> Result<Vec<SessionRow>> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_all(&mut *c)
        .await?
        .iter()
        .map(session_from_row)
        .collect()
}

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

/// Starting or ready sessions placed on `node`.
pub async fn active_on_node(c: &mut AnyConnection, node: &NodeId) -> Result<Vec<SessionRow>> {
    sessions_where(c, sql::ACTIVE_ON_NODE, &[node.as_str()]).await
}

/// Scheduled sessions due to start at `due` (their `start_at` minus the lead time has come).
pub async fn scheduled_due(c: &mut AnyConnection, due: Millis) -> Result<Vec<SessionRow>> {
    let rows = sqlx::query(sql::SCHEDULED_DUE)
        .bind(due)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(session_from_row).collect()
}

/// Starting or ready sessions a timer must act on: their node is gone or offline since before
/// `lost_before`, or their window ended by `now` while they are still wanted.
pub async fn sessions_to_end(
    c: &mut AnyConnection,
    lost_before: Millis,
    now: Millis,
) -> Result<Vec<SessionRow>> {
    let rows = sqlx::query(sql::SESSIONS_TO_END)
        .bind(lost_before)
        .bind(now)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(session_from_row).collect()
}

/// The titles that have a queue.
pub async fn queued_titles(c: &mut AnyConnection) -> Result<Vec<TitleId>> {
    let rows = sqlx::query(sql::QUEUED_TITLES).fetch_all(&mut *c).await?;
    rows.iter()
        .map(|r| parse_col(r, "title_id", |s| TitleId::parse(s).ok()))
        .collect()
}

/// A title's queue, head first.
pub async fn queue_of(c: &mut AnyConnection, title: &TitleId) -> Result<Vec<SessionRow>> {
    sessions_where(c, sql::QUEUE_OF, &[title.as_str()]).await
}

pub async fn queue_length(c: &mut AnyConnection, title: &TitleId) -> Result<i64> {
    Ok(sqlx::query(sql::QUEUE_LENGTH)
        .bind(title.as_str())
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?)
}

pub async fn next_queue_seq(c: &mut AnyConnection) -> Result<i64> {
    Ok(sqlx::query(sql::NEXT_QUEUE_SEQ)
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?)
}

/// Sessions whose node must be told something: a start not sent yet, or a stop not sent yet.
pub async fn undelivered(c: &mut AnyConnection) -> Result<Vec<SessionRow>> {
    sessions_where(c, sql::UNDELIVERED, &[]).await
}

pub struct SessionFilter<'a> {
    pub state: Option<SessionState>,
    pub title: Option<&'a TitleId>,
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
    if let Some(o) = f.owner {
        add("s.owner", o.to_string());
    }
    sql.push_str(&format!(
        " ORDER BY s.created_at DESC, s.id LIMIT {}",
        f.limit.clamp(1, 1000)
    ));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(&mut *c).await?;
    rows.iter().map(session_with_position).collect()
}

pub async fn count_by_state(c: &mut AnyConnection) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
        .fetch_all(&mut *c)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
        .collect()
}

/// Sessions of `owner` that are not over.
pub async fn count_live_of_owner(c: &mut AnyConnection, owner: &Owner) -> Result<i64> {
    Ok(sqlx::query(sql::LIVE_OF_OWNER)
        .bind(owner.to_string())
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?)
}

pub async fn count_sessions_of_title(c: &mut AnyConnection, title: &TitleId) -> Result<i64> {
    Ok(sqlx::query(sql::LIVE_OF_TITLE)
        .bind(title.as_str())
        .fetch_one(&mut *c)
        .await?
        .try_get("n")?)
}

/// The statements that read live sessions. Ended sessions are kept for ever, so each of these
/// must seek past them through an index that has the state in it (migration 0003); the store
/// test `live_session_queries_seek_past_the_history` checks SQLite's plan of every one in
/// [`sql::LIVE_SESSION_QUERIES`] (PostgreSQL plans by its statistics).
pub mod sql {
    pub const HELD_SLOTS_SQLITE: &str = "SELECT json_group_array(json_array(node_id, id, state, \
        slot_start, slot_end)) FROM sessions \
        WHERE node_id IS NOT NULL AND state IN ('scheduled', 'starting', 'ready')";
    pub const HELD_SLOTS_POSTGRES: &str = "SELECT json_agg(json_build_array(node_id, id, state, \
        slot_start, slot_end))::text FROM sessions \
        WHERE node_id IS NOT NULL AND state IN ('scheduled', 'starting', 'ready')";
    pub const ACTIVE_ON_NODE: &str =
        "SELECT * FROM sessions WHERE node_id = $1 AND state IN ('starting', 'ready')";
    pub const SCHEDULED_DUE: &str =
        "SELECT * FROM sessions WHERE state = 'scheduled' AND start_at <= $1 ORDER BY start_at, id";
    pub const SESSIONS_TO_END: &str = "SELECT s.* FROM sessions s \
        LEFT JOIN nodes n ON n.id = s.node_id \
        WHERE s.state IN ('starting', 'ready') AND (n.id IS NULL \
          OR (n.online = 0 AND n.offline_since <= $1) \
          OR (s.desired = 'run' AND s.slot_end IS NOT NULL AND s.slot_end <= $2)) \
        ORDER BY s.created_at";
    pub const QUEUED_TITLES: &str =
        "SELECT DISTINCT title_id FROM sessions WHERE state = 'queued' ORDER BY title_id";
    pub const QUEUE_OF: &str =
        "SELECT * FROM sessions WHERE state = 'queued' AND title_id = $1 ORDER BY queue_seq";
    pub const QUEUE_LENGTH: &str =
        "SELECT COUNT(*) AS n FROM sessions WHERE state = 'queued' AND title_id = $1";
    /// The one rule for a queue position: the column `queue_position` of a session `s` (1 =
    /// next; NULL unless it is queued), counted in the statement that reads `s`, so from the same
    /// snapshot.
    macro_rules! position_column {
        () => {
            "CASE WHEN s.state = 'queued' THEN (SELECT COUNT(*) FROM sessions q \
             WHERE q.state = 'queued' AND q.title_id = s.title_id AND q.queue_seq <= s.queue_seq) \
             END AS queue_position"
        };
    }
    /// One session with its queue position.
    pub const SESSION_WITH_POSITION: &str = concat!(
        "SELECT s.*, ",
        position_column!(),
        " FROM sessions s WHERE s.id = $1"
    );
    /// Sessions with their queue positions; `list_sessions` adds the filters.
    pub const SESSIONS_WITH_POSITION: &str = concat!(
        "SELECT s.*, ",
        position_column!(),
        " FROM sessions s WHERE 1 = 1"
    );
    /// The positions of a title's queue (for the plan test: the count seeks the queue's index).
    pub const QUEUE_POSITIONS: &str = concat!(
        "SELECT ",
        position_column!(),
        " FROM sessions s WHERE s.state = 'queued' AND s.title_id = $1"
    );
    /// `queue_seq` is set only while a session is queued.
    pub const NEXT_QUEUE_SEQ: &str =
        "SELECT COALESCE(MAX(queue_seq), 0) + 1 AS n FROM sessions WHERE state = 'queued'";
    pub const UNDELIVERED: &str = "SELECT * FROM sessions WHERE state IN ('starting', 'ready') \
        AND ((desired = 'run' AND dispatched_at IS NULL) \
          OR (desired = 'stop' AND stop_sent_at IS NULL)) \
        ORDER BY created_at";
    pub const LIVE_OF_OWNER: &str = "SELECT COUNT(*) AS n FROM sessions WHERE owner = $1 \
        AND state IN ('scheduled', 'queued', 'starting', 'ready')";
    pub const LIVE_OF_TITLE: &str = "SELECT COUNT(*) AS n FROM sessions WHERE title_id = $1 \
        AND state IN ('scheduled', 'queued', 'starting', 'ready')";

    /// Every statement above, by name.
    pub const LIVE_SESSION_QUERIES: &[(&str, &str)] = &[
        ("held_slots", HELD_SLOTS_SQLITE),
        ("active_on_node", ACTIVE_ON_NODE),
        ("scheduled_due", SCHEDULED_DUE),
        ("sessions_to_end", SESSIONS_TO_END),
        ("queued_titles", QUEUED_TITLES),
        ("queue_of", QUEUE_OF),
        ("queue_length", QUEUE_LENGTH),
        ("queue_positions", QUEUE_POSITIONS),
        ("next_queue_seq", NEXT_QUEUE_SEQ),
        ("undelivered", UNDELIVERED),
        ("live_of_owner", LIVE_OF_OWNER),
        ("live_of_title", LIVE_OF_TITLE),
    ];
}
