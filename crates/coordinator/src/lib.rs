//! The pxs coordinator (`pxs coordinator`): where users and operators meet the system. It knows
//! the titles, the nodes (session servers) and their capacity, and every session; it places
//! sessions, keeps the queue, starts scheduled sessions, and tells nodes what to run over their
//! node links. See `docs/coordinator.md`.
//!
//! - [`rules`], [`placement`] and [`model`]: the pure rules (what a request may ask, admission,
//!   queue promotion, the timer's outcomes; which node; how a session's state moves; reconciling
//!   a node's report with the records).
//! - [`engine`]: the shell around them: transactions, the node links, the timers.
//! - [`store`]: SQLite or PostgreSQL through sqlx.
//! - [`routes`]: every served path in one table, the router built from it, each route's access
//!   enforced from it; [`openapi`] describes it.
//! - [`api`], [`sse`], [`hub`], [`web`]: the handlers (REST API v1, its event streams, the node
//!   hub, the pages).
//! - [`auth`]: tokens, roles and permissions. [`config`]: the one `Config`.

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod fresh;
pub mod hub;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod placement;
pub mod routes;
pub mod rules;
pub mod sse;
pub mod store;
pub mod web;

pub use config::{Config, Options};
pub use engine::{Clock, Engine, ManualClock, SystemClock};

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

/// A running coordinator.
pub struct Coordinator {
    pub engine: Arc<Engine>,
    addr: SocketAddr,
    /// The first admin token, when this start minted it (shown once).
    pub new_admin_token: Option<String>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    timers: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// Opens the database, binds `config.listen` and serves.
    pub async fn start(config: Config) -> anyhow::Result<Coordinator> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        Coordinator::start_with(config, listener, Arc::new(SystemClock)).await
    }

    /// Serves on `listener` with `clock` (tests pass port 0 and a manual clock).
    pub async fn start_with(
        config: Config,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Coordinator> {
        Coordinator::start_embedded(config, listener, clock, axum::Router::new()).await
    }

    /// As [`Coordinator::start_with`], also serving `extra` on the same port: routes outside
    /// the API for a program that embeds the coordinator (`pxs up` serves its session server's
    /// player endpoints under `/node/<name>/`, so one port carries everything). `extra`'s paths
    /// must not overlap the coordinator's.
    pub async fn start_embedded(
        config: Config,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
        extra: axum::Router,
    ) -> anyhow::Result<Coordinator> {
        let store = store::Store::connect(&config.database_url.0, config.database_wait)
            .await
            .with_context(|| {
                format!(
                    "database_url: cannot open {}",
                    store::redact_url(&config.database_url.0)
                )
            })?;
        let keys = keys::SessionKeys::load(&config)?;
        let engine = Engine::new(store, config, keys, clock);
        let new_admin_token = engine
            .bootstrap_tokens()
            .await
            .map_err(|e| anyhow::anyhow!("cannot prepare the tokens: {}", e.message))?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let serve =
            pxs_net::Serve::new("api", engine.config.http.clone(), pxs_net::coded_error_body);
        let app = routes::router(engine.clone())
            .merge(extra)
            .layer(axum::Extension(serve.stats()));
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(serve.run(listener, app, async move {
            let _ = server_stop.wait_for(|s| *s).await;
        }));
        let timers = tokio::spawn(timer_loop(engine.clone(), stop_rx));
        info!(%addr, backend = ?engine.store.backend(), "coordinator listening");
        Ok(Coordinator {
            engine,
            addr,
            new_admin_token,
            stop,
            server,
            timers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open event streams and node links are cut) and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.timers.abort();
        // Long-lived streams would hold a graceful shutdown open: give it a moment, then cut.
        let mut server = self.server;
        if tokio::time::timeout(std::time::Duration::from_secs(3), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        self.engine.store.close().await;
        Ok(())
    }
}

async fn timer_loop(engine: Arc<Engine>, mut stop: watch::Receiver<bool>) {
    loop {
        engine.tick().await;
        tokio::select! {
            _ = tokio::time::sleep(engine.config.tick) => {}
            _ = engine.kicked() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
