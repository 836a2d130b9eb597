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
//!
//! One file per job: [`Store`] itself (connection, transactions, errors) and the column helpers
//! shared by every query are here; the queries are in `titles`, `tokens`, `nodes`, `sessions`
//! (sessions and the queue), `keys` (owner keys and share links) and `placement` (the snapshot
//! placement reads), and the statements on live sessions in [`sql`]. Every public item is
//! re-exported here, so callers name it `store::…` whatever file holds it.

pub mod backup;
mod keys;
mod nodes;
mod placement;
mod sessions;
pub mod sql;
mod titles;
mod tokens;

pub use keys::{
    KeyRow, count_open_links, find_key, get_key, get_link, insert_key, list_links, revoke_key,
    revoked_links_on_node,
};
pub use nodes::{
    acked_seq, admin_drain, drains_not_reported, expire_nodes, get_node, link_closed, list_nodes,
    node_seen, set_acked, set_admin_drain, set_node_applications, upsert_node_hello,
};
pub use placement::{
    AdmissionSnapshot, CANDIDATES, HeldSlot, NodeRecheck, PlacementNode, admission_snapshot,
    held_slots, lock_placement_node, node_slots, placement_nodes, placement_snapshot,
};
pub use sessions::{
    SessionFilter, active_on_node, active_on_node_for_update, count_by_state, count_live_of_owner,
    count_sessions_of_title, get_session, get_session_for_update, get_session_with_position,
    holding_of_anonymous, holding_of_owner, insert_session, list_sessions, lock_owner,
    next_queue_seq, queue_length, queue_of, queued_titles, recent_lengths, scheduled_due,
    sessions_to_end, undelivered, update_session, waiting_of_owner,
};
pub use titles::{
    approve_title, delete_title, dismiss_application, get_title, insert_title, is_dismissed,
    list_titles, refresh_node_title, source_name, titles_of_application, update_title,
    visibility_name,
};
pub use tokens::{
    TokenRow, count_api_tokens, delete_token, find_api_token, find_node_token, insert_api_token,
    insert_node_token, list_tokens, role_name,
};

use crate::placement::Millis;
use pxs_protocol::node::{NodeId, SessionId};
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Encode, Row, SqlSafeStr, Type};
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
    /// Begins with `begin`: `BEGIN`, or on PostgreSQL `BEGIN` and the statements that take the
    /// placement lock, sent as one message (one round trip; see [`Store::begin_locked`]).
    async fn begin(pool: &AnyPool, health: WriteHealth, begin: Begin<'_>) -> Result<Tx> {
        match Self::begin_once(pool, health.clone(), begin).await {
            // The connection was broken (the pool does not ping before handing one out): the
            // transaction never began, so it is safe to begin it again on a new connection.
            Err(StoreError::Db(e))
                if matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) =>
            {
                tracing::info!(error = %e, "database connection lost; beginning again on another");
                Self::begin_once(pool, health, begin).await
            }
            other => other,
        }
    }

    async fn begin_once(pool: &AnyPool, health: WriteHealth, begin: Begin<'_>) -> Result<Tx> {
        let mut conn = pool.acquire().await?;
        let result = match begin {
            Begin::Plain => sqlx::query("BEGIN").execute(&mut *conn).await,
            Begin::Locked(sql) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *conn)
                    .await
            }
        };
        if let Err(e) = result {
            // A lock not free within the wait left the transaction open and failed: end it and
            // keep the connection (a busy database must not also cost new connections). Anything
            // else may have broken the connection: it is not reused.
            let e = StoreError::from(e);
            if matches!(e, StoreError::Busy) {
                rollback_or_close(conn).await;
            } else {
                conn.close_on_drop();
            }
            return Err(e);
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

/// How [`Tx::begin`] starts a transaction.
#[derive(Clone, Copy)]
enum Begin<'a> {
    Plain,
    /// PostgreSQL: `BEGIN; SET LOCAL lock_timeout …; SELECT pg_advisory_xact_lock…(…)`, one
    /// simple-query message with no parameters (only numbers of ours are in it).
    Locked(&'a str),
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
/// The first key of the advisory locks on one anonymous owner (`lock_owner`).
const OWNER_LOCK: i32 = 0x7078_7302;

#[derive(Clone, Debug)]
pub struct Store {
    /// Writes (and, on PostgreSQL, everything).
    pool: AnyPool,
    /// Reads that need no transaction. On SQLite a separate pool: in WAL mode readers do not
    /// wait for the one writer, so a GET never queues behind placements and node events.
    reader: AnyPool,
    backend: Backend,
    /// On PostgreSQL, what begins a transaction and takes the placement lock exclusive, with
    /// [`crate::Config::database_wait`] as the lock timeout (waiting for the lock is bounded like
    /// waiting for a connection).
    lock_exclusive: String,
    /// The same, shared.
    lock_shared: String,
    health: WriteHealth,
    /// The write probe of `/healthz`: probes asked for together share one write instead of
    /// queueing on the row.
    probe: Arc<crate::fresh::Fresh<Probe>>,
}

/// How a write probe ended ([`Store::probe_write`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The database took the write, durably.
    Wrote,
    /// No connection (or lock) within the wait: the database is loaded, not failing.
    Busy,
    /// The write failed; the error, for the log.
    Failed(String),
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
                    // No ping before each use (a round trip per request, a quarter of the
                    // statements of the benchmark's mix): a connection the server dropped fails
                    // its first statement and is closed, and a transaction's `BEGIN` is then
                    // tried once more on another (`Tx::begin`).
                    .test_before_acquire(false)
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
            lock_exclusive: lock_sql(wait, "pg_advisory_xact_lock"),
            lock_shared: lock_sql(wait, "pg_advisory_xact_lock_shared"),
            health: WriteHealth::default(),
            probe: Arc::default(),
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
        Tx::begin(&self.pool, self.health.clone(), Begin::Plain).await
    }

    /// Failed commits so far.
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// A write that proves the database takes writes now (`/healthz`): one that began after
    /// this call. Calls that arrive while a probe runs wait for it to end, and the first of them
    /// then runs the next one for all of them, so a burst of health checks costs two writes, not
    /// one each on the same row.
    pub async fn probe_write(&self, now: Millis) -> Probe {
        let probe = self.probe.get(|| async {
            Ok::<_, std::convert::Infallible>(match self.write_health_row(now).await {
                Ok(()) => Probe::Wrote,
                Err(StoreError::Busy) => Probe::Busy,
                Err(e) => Probe::Failed(e.to_string()),
            })
        });
        let Ok(probe) = probe.await;
        probe
    }

    async fn write_health_row(&self, now: Millis) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE health SET checked_at = $1 WHERE id = 1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// A transaction that may promise a slot (a placement, the queue's promotion, a timer's
    /// start of a booking, a node's hello) or changes sessions of several nodes: serialised with
    /// every other one that holds the placement lock, exclusive or shared, also across
    /// coordinators.
    pub async fn begin_placement(&self) -> Result<Tx> {
        self.begin_locked(&self.lock_exclusive).await
    }

    /// A transaction that admits a new session (`POST`): on PostgreSQL with the placement lock
    /// *shared*, so that placements run beside each other, DELETEs and node events; a slot it
    /// promises is safe because it takes the chosen node's placement lock and reads that node's slots again
    /// first ([`lock_placement_node`], [`node_slots`]), and every other transaction that may
    /// promise a slot either does the same or holds the lock exclusive. SQLite: its one writer.
    pub async fn begin_admission(&self) -> Result<Tx> {
        self.begin_locked(&self.lock_shared).await
    }

    /// Whether [`Store::begin_admission`] runs beside other placements (PostgreSQL), so that a
    /// placement must lock its node and check it again; with SQLite's one writer it is alone.
    pub fn admits_beside_others(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// A transaction that changes one session, never so that it takes a slot (`DELETE`: a
    /// cancel or a stop frees one or changes nothing), and the session, locked.
    ///
    /// On PostgreSQL it holds the placement lock *shared*: it runs beside node events and other
    /// such changes, while every [`Store::begin_placement`] excludes it; so a placement's snapshot
    /// never sees a slot freed half-way, and freeing a slot never over-commits one. The session's
    /// row is read `FOR UPDATE`, so two changes of one session (two DELETEs, a DELETE and its
    /// node's event, which also reads its sessions `FOR UPDATE`) are applied one after the other
    /// and neither is lost.
    pub async fn begin_session_change(
        &self,
        id: &SessionId,
    ) -> Result<(Tx, Option<crate::model::SessionRow>)> {
        let mut tx = self.begin_locked(&self.lock_shared).await?;
        let row = sessions::get_session_for_update(&mut tx, id).await?;
        Ok((tx, row))
    }

    /// A transaction that applies `node`'s events, and the last event applied before it.
    ///
    /// Events change only their own node's sessions, and never so that one takes a slot (see
    /// `model::apply_event`): on PostgreSQL they hold the placement lock shared, so that the
    /// events of different nodes are applied side by side while every `begin_placement`
    /// transaction still excludes them all. The node's row is locked, so two transactions of one
    /// node (an old link's and its replacement's) are applied one after the other; each session
    /// an event changes is read `FOR UPDATE` (`get_session_for_update`), as a DELETE reads it.
    pub async fn begin_node_events(&self, node: &NodeId) -> Result<(Tx, i64)> {
        let mut tx = self.begin_locked(&self.lock_shared).await?;
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

    /// A transaction holding the placement lock as `lock` takes it: on PostgreSQL `BEGIN`, the
    /// lock timeout and the lock in one round trip; SQLite's one writer connection serialises
    /// every write transaction anyway.
    async fn begin_locked(&self, lock: &str) -> Result<Tx> {
        match self.backend {
            Backend::Postgres => {
                Tx::begin(&self.pool, self.health.clone(), Begin::Locked(lock)).await
            }
            Backend::Sqlite => self.begin().await,
        }
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// `BEGIN`, `lock_timeout` set to `wait` for this transaction, and the placement lock taken by
/// `function`: one message of statements without parameters.
fn lock_sql(wait: Duration, function: &str) -> String {
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    format!("BEGIN; SET LOCAL lock_timeout = '{wait_ms}ms'; SELECT {function}({PLACEMENT_LOCK})")
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

pub fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Fetching: a read of rows is written as its SQL, its binds and the decoder of one row, and run by
// `fetch_all`, `fetch_optional` or `fetch_one` (reads into tuples or JSON use sqlx directly).

/// No values to bind, for a statement without parameters.
const NO_BINDS: [&str; 0] = [];

/// `sql` with `binds` bound in order (`$1`, `$2`, ...).
fn bound<'b, B>(
    sql: impl SqlSafeStr,
    binds: impl IntoIterator<Item = B>,
) -> Query<'static, Any, AnyArguments>
where
    B: Encode<'b, Any> + Type<Any>,
{
    binds.into_iter().fold(sqlx::query(sql), |q, b| q.bind(b))
}

/// Runs `sql` with `binds` and decodes every row it returns with `decode`.
async fn fetch_all<'b, B, T>(
    c: &mut AnyConnection,
    sql: impl SqlSafeStr,
    binds: impl IntoIterator<Item = B>,
    decode: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Vec<T>>
where
    B: Encode<'b, Any> + Type<Any>,
{
    bound(sql, binds)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Runs `sql` with `binds` and decodes the row it returns, if any, with `decode`.
async fn fetch_optional<'b, B, T>(
    c: &mut AnyConnection,
    sql: impl SqlSafeStr,
    binds: impl IntoIterator<Item = B>,
    decode: impl Fn(&AnyRow) -> Result<T>,
) -> Result<Option<T>>
where
    B: Encode<'b, Any> + Type<Any>,
{
    bound(sql, binds)
        .fetch_optional(&mut *c)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Runs `sql` with `binds` and decodes the one row it must return with `decode`.
async fn fetch_one<'b, B, T>(
    c: &mut AnyConnection,
    sql: impl SqlSafeStr,
    binds: impl IntoIterator<Item = B>,
    decode: impl Fn(&AnyRow) -> Result<T>,
) -> Result<T>
where
    B: Encode<'b, Any> + Type<Any>,
{
    decode(&bound(sql, binds).fetch_one(&mut *c).await?)
}

/// The column `n` of a `COUNT(*) AS n` (or other number) row.
fn n_col(row: &AnyRow) -> Result<i64> {
    Ok(row.try_get("n")?)
}
