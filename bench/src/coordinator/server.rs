//! The coordinator under test, in this process but on a tokio runtime of its own (two worker
//! threads named [`THREAD_NAME`], as many as a `pxs coordinator` gets on this machine), so that
//! its CPU time can be read apart from the benchmark's clients. SQLite runs on sqlx's own worker
//! thread (`sqlx-sqlite-worker-N`), counted with it.

use crate::procfs;
use anyhow::Context;
use pxs_coordinator::{Config, Coordinator, Engine, Options, SystemClock};
use pxs_protocol::secret::Secret;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Name prefix of the coordinator's runtime threads.
pub const THREAD_NAME: &str = "pxs-coord";
/// Name prefix of sqlx's SQLite worker threads (`/proc` shows the first 15 bytes).
const SQLITE_THREAD: &str = "sqlx-sqlite";

/// The admin token the benchmark configures (an API caller with every right).
pub const ADMIN_TOKEN: &str = "pxs_adm_bench_0123456789abcdef";
/// The node token the simulated nodes present.
pub const NODE_TOKEN: &str = "pxs_node_bench_0123456789abcdef";
const SESSION_SECRET: &str = "pxs_session_secret_bench_0123456789abcdef";

pub struct InProcess {
    runtime: Option<tokio::runtime::Runtime>,
    coordinator: Option<Coordinator>,
    addr: SocketAddr,
    /// With --postgres: the server's URL and the database made for this coordinator, dropped
    /// at [`InProcess::stop`].
    postgres: Option<(String, String)>,
}

impl InProcess {
    /// A coordinator on 127.0.0.1 (a port the kernel picks) with a new SQLite file in `dir`, or
    /// a new database on the PostgreSQL server of `postgres` (see [`fresh_postgres`]), the
    /// benchmark's tokens and `toml` as its configuration file.
    pub async fn start(
        dir: &Path,
        toml: &str,
        postgres: Option<&str>,
    ) -> anyhow::Result<InProcess> {
        std::fs::create_dir_all(dir)?;
        let (database_url, made) = match postgres {
            Some(server) => {
                let (url, name) = fresh_postgres(server).await?;
                (Secret(url), Some((server.to_owned(), name)))
            }
            None => (
                pxs_coordinator::config::sqlite_url_in(dir, "coordinator.db"),
                None,
            ),
        };
        let opts = Options {
            config: None,
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(database_url),
            admin_token: Some(Secret(ADMIN_TOKEN.into())),
            node_token: Some(Secret(NODE_TOKEN.into())),
            session_secret: Some(Secret(SESSION_SECRET.into())),
            ..Options::default()
        };
        let config = Config::from_toml(toml, &opts).context("the coordinator's configuration")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("cannot start the coordinator's runtime")?;
        // The listener must be made on the runtime whose reactor drives it.
        let coordinator = runtime
            .spawn(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                Coordinator::start_with(config, listener, Arc::new(SystemClock)).await
            })
            .await
            .context("the coordinator's start task failed")??;
        let addr = coordinator.addr();
        Ok(InProcess {
            runtime: Some(runtime),
            coordinator: Some(coordinator),
            addr,
            postgres: made,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn link_url(&self) -> String {
        format!("ws://{}/api/v1/nodes/link", self.addr)
    }

    /// Writes `n` ended sessions of `title` straight into the database, as a coordinator that has
    /// run for a while has them (ended sessions are kept). One statement, about a second per
    /// 100,000 rows.
    pub async fn add_history(&self, title: &str, nodes: usize, n: u64) -> anyhow::Result<()> {
        let (Some(rt), Some(engine)) = (&self.runtime, self.engine()) else {
            anyhow::bail!("the coordinator has stopped");
        };
        let pool = engine.store.pool().clone();
        let title = title.to_owned();
        let nodes = i64::try_from(nodes.max(1))?;
        let n = i64::try_from(n)?;
        let postgres = engine.store.backend() == pxs_coordinator::store::Backend::Postgres;
        let sql = if postgres {
            "INSERT INTO sessions (id, title_id, application_id, node_id, state, desired, \
               observed, created_at, slot_start, slot_end, ready_at, ended_at, end_reason, \
               player_key, owner, settings, updated_at) \
             SELECT 'ses_history' || lpad(i::text, 15, '0'), $2, $2, \
               'bench-node-' || lpad((i % $3)::text, 3, '0'), 'ended', 'stop', 'gone', i, i, \
               NULL, i, i + 1, 'stopped', 'key', 'tok:bench-history', '{}', i + 1 \
             FROM generate_series(1::bigint, $1) AS i"
        } else {
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < $1) \
             INSERT INTO sessions (id, title_id, application_id, node_id, state, desired, \
               observed, created_at, slot_start, slot_end, ready_at, ended_at, end_reason, \
               player_key, owner, settings, updated_at) \
             SELECT printf('ses_history%015d', i), $2, $2, \
               printf('bench-node-%03d', i % $3), 'ended', 'stop', 'gone', i, i, NULL, i, \
               i + 1, 'stopped', 'key', 'tok:bench-history', '{}', i + 1 FROM k"
        };
        rt.spawn(async move {
            sqlx::query(sql)
                .bind(n)
                .bind(title)
                .bind(nodes)
                .execute(&pool)
                .await
        })
        .await
        .context("the history task failed")?
        .context("cannot write the history")?;
        Ok(())
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.coordinator.as_ref().map(|c| &c.engine)
    }

    /// Node links held now.
    pub fn link_count(&self) -> usize {
        self.engine().map_or(0, |e| e.link_count())
    }

    /// CPU time of the coordinator's threads (its runtime and SQLite's worker) so far.
    pub fn cpu() -> anyhow::Result<Duration> {
        let pid = std::process::id();
        Ok(procfs::threads_cpu(pid, THREAD_NAME)? + procfs::threads_cpu(pid, SQLITE_THREAD)?)
    }

    /// Stops serving, closes the database and the runtime.
    pub async fn stop(mut self) {
        if let (Some(rt), Some(c)) = (&self.runtime, self.coordinator.take()) {
            let _ = tokio::time::timeout(Duration::from_secs(10), rt.spawn(c.shutdown())).await;
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        if let Some((server, name)) = self.postgres.take()
            && let Err(e) = drop_postgres(&server, &name).await
        {
            eprintln!("could not drop the database {name}: {e:#}");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Not blocking: a drop may run on a worker thread of the benchmark's runtime.
            rt.shutdown_background();
        }
    }
}

/// Makes a new, empty database on the PostgreSQL server that `server` (a URL whose role may
/// create databases) names; returns its URL and its name (`pxs_bench_*`).
pub async fn fresh_postgres(server: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(server)
        .await
        .context("cannot connect to --postgres")?;
    let name = format!(
        "pxs_bench_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .with_context(|| format!("cannot create the database {name}"))?;
    let base = server.split('?').next().unwrap_or(server);
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Ok((format!("{base}/{name}"), name))
}

/// Drops a database that [`fresh_postgres`] made (and whatever still holds it open).
async fn drop_postgres(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await?;
    Ok(())
}
