//! How every pxs HTTP and WebSocket listener serves: the coordinator's port, the session
//! server's node port and streamer listeners, and the standalone signalling server's streamer,
//! player, SFU and HTTPS ports all go through [`Serve::run`], so they share one set of rules:
//!
//! - a connection must send a complete request head within `header_read_timeout` of opening
//!   (or, on a kept-alive connection, of the first byte of its next request), and a kept-alive
//!   connection with no request is closed after `idle_timeout` ([`conn`]);
//! - at most `max_connections` are open per listener; beyond it a new connection is closed at
//!   once (with a best-effort `503` in the server's JSON error shape), logged and counted, so a
//!   flood never exhausts the process's file descriptors;
//! - every error answer is JSON in the server's shape ([`errors`]), also the ones hyper makes
//!   itself (`400`, `414`, `431`), which would otherwise have an empty body.
//!
//! Behind a reverse proxy, [`forwarded`] tells who the client of a request is (the operator's
//! `trusted_proxies`).
//!
//! Upgraded WebSockets keep the connection's slot until they close; their own silence rules live
//! with the WebSocket code (the signalling server pings, the coordinator's node hub times out
//! silent links).
//!
//! A crate of its own because the coordinator (which must not depend on the signalling server)
//! and the session server (which embeds it) both need it, and `pxs-protocol` is kept free of
//! I/O dependencies (the streamer imports only it).

pub mod conn;
pub mod errors;
pub mod forwarded;

pub use errors::{ErrorShape, coded_error_body, error_code, json_error};
pub use forwarded::{Client, TrustedProxies};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

/// The limits of one listener. See `docs/` of each server for the keys that set them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request head (request line and headers) must arrive within this long: of the
    /// connection opening for the first request, of its first byte for later ones. A TLS
    /// handshake counts as part of the first head.
    pub header_read_timeout: Duration,
    /// A kept-alive connection that starts no new request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once on this listener (upgraded WebSockets included).
    pub max_connections: usize,
    /// Longest request target (path and query), in bytes; longer is answered `414`.
    pub max_uri_bytes: usize,
    /// Largest request head (request line and headers), in bytes; larger is answered `431`.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// hyper refuses request targets longer than this itself.
const HYPER_MAX_URI: usize = u16::MAX as usize - 1;
/// hyper's smallest read buffer; a smaller head limit would be moot.
const MIN_HEADER_BYTES: usize = 1024;

impl Limits {
    /// Checks the values; an error names the key as `<prefix><key>` (e.g. `limits.idle_timeout`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        if self.header_read_timeout.is_zero() || self.header_read_timeout > hour {
            return Err(format!(
                "{prefix}header_read_timeout: between 1ms and 1 hour"
            ));
        }
        if self.idle_timeout < self.header_read_timeout || self.idle_timeout > 24 * hour {
            return Err(format!(
                "{prefix}idle_timeout: at least header_read_timeout ({:?}) and at most 24 hours",
                self.header_read_timeout
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!("{prefix}max_connections: between 1 and 1000000"));
        }
        if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(format!(
                "{prefix}max_header_bytes: between {MIN_HEADER_BYTES} and 1048576"
            ));
        }
        if !(64..=HYPER_MAX_URI).contains(&self.max_uri_bytes)
            || self.max_uri_bytes >= self.max_header_bytes
        {
            return Err(format!(
                "{prefix}max_uri_bytes: between 64 and {HYPER_MAX_URI}, and less than max_header_bytes"
            ));
        }
        Ok(())
    }
}

/// What a listener counts (rendered for Prometheus by [`render_stats`]).
pub struct Stats {
    listener: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    accepted: AtomicU64,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_closed: AtomicU64,
    /// When a refusal was last logged, and how many were not logged since.
    refusal_log: Mutex<(Option<Instant>, u64)>,
}

/// At most one "connection refused" log line per listener this often (a flood would otherwise
/// write one per connection).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Stats {
    fn new(listener: &'static str, max: usize) -> Stats {
        Stats {
            listener,
            slots: Arc::new(Semaphore::new(max)),
            max,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            refusal_log: Mutex::new((None, 0)),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Connections closed at once because `max_connections` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because a request head (or TLS handshake) took too long.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }

    /// Kept-alive connections closed after `idle_timeout` without a request.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }

    fn note_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means a logging thread panicked; the pair is still usable.
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if log
            .0
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_EVERY)
        {
            log.1 += 1;
            return;
        }
        warn!(
            listener = self.listener,
            max_connections = self.max,
            refused_since_last_report = log.1 + 1,
            "connection refused: max_connections are open"
        );
        *log = (Some(now), 0);
    }

    /// Appends this listener's series in the Prometheus text format (without HELP/TYPE lines;
    /// see [`render_stats`]).
    fn render_series(&self, out: &mut String, name: &str, value: u64) {
        let _ = writeln!(out, "{name}{{listener=\"{}\"}} {value}", self.listener);
    }
}

/// The Prometheus text of the listeners' counters.
pub fn render_stats(out: &mut String, listeners: &[&Stats]) {
    type Get = fn(&Stats) -> u64;
    let series: [(&str, &str, &str, Get); 5] = [
        (
            "pxs_http_connections",
            "gauge",
            "Connections open on the listener.",
            |s| s.open() as u64,
        ),
        (
            "pxs_http_connections_accepted_total",
            "counter",
            "Connections accepted.",
            |s| s.accepted.load(Ordering::Relaxed),
        ),
        (
            "pxs_http_connections_refused_total",
            "counter",
            "Connections closed at once because max_connections were open.",
            Stats::refused,
        ),
        (
            "pxs_http_header_timeouts_total",
            "counter",
            "Connections closed because a request head took longer than header_read_timeout.",
            Stats::header_timeouts,
        ),
        (
            "pxs_http_idle_closed_total",
            "counter",
            "Kept-alive connections closed after idle_timeout without a request.",
            Stats::idle_closed,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in listeners {
            s.render_series(out, name, get(s));
        }
    }
}

/// One listener's way of serving; see the crate docs.
pub struct Serve {
    inner: Arc<Shared>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

struct Shared {
    limits: Limits,
    shape: ErrorShape,
    stats: Arc<Stats>,
}

/// After a failed `accept` (e.g. out of file descriptors), wait this long before the next: the
/// error repeats at once otherwise.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Serve {
    /// `listener` names the listener in logs and metrics (`api`, `player`, ...); `shape` writes
    /// the server's JSON error body.
    pub fn new(listener: &'static str, limits: Limits, shape: ErrorShape) -> Serve {
        let stats = Arc::new(Stats::new(listener, limits.max_connections));
        Serve {
            inner: Arc::new(Shared {
                limits,
                shape,
                stats,
            }),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves HTTPS with `config`. Only HTTP/1.1 is offered (ALPN), so the same head and idle
    /// rules hold as on plain ports.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: &tokio_rustls::rustls::ServerConfig) -> Serve {
        let mut config = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        self
    }

    /// The listener's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// Serves `app` on `listener` until `shutdown` completes, then closes idle connections, lets
    /// requests in progress finish and returns when every HTTP connection is closed (upgraded
    /// WebSockets are the application's to close). Handlers see the peer as
    /// `ConnectInfo<SocketAddr>`.
    pub async fn run(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let app = app.layer(axum::middleware::map_response_with_state(
            self.inner.shape,
            errors::json_errors,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (open_tx, open_rx) = watch::channel(());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(listener = self.inner.stats.listener, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let stats = &self.inner.stats;
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let Ok(slot) = stats.slots.clone().try_acquire_owned() else {
                self.refuse(stream);
                continue;
            };
            // Signalling and API answers are small messages: send each at once.
            let _ = stream.set_nodelay(true);
            let conn = Connection {
                shared: self.inner.clone(),
                app: app.clone(),
                peer,
                slot,
                stop: stop_rx.clone(),
                _open: open_rx.clone(),
            };
            #[cfg(feature = "tls")]
            if let Some(tls) = self.tls.clone() {
                tokio::spawn(conn.serve_tls(stream, tls));
                continue;
            }
            tokio::spawn(conn.serve(stream));
        }
        drop(listener);
        let _ = stop_tx.send(true);
        drop(open_rx);
        open_tx.closed().await;
        Ok(())
    }

    /// Closes a connection over the cap at once, after a best-effort `503` (plain HTTP only: a
    /// TLS client could not read it).
    fn refuse(&self, stream: TcpStream) {
        self.inner.stats.note_refusal();
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return;
        }
        let answer = errors::canned(
            self.inner.shape,
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again later",
        );
        let _ = stream.try_write(&answer);
    }
}

/// One accepted connection.
struct Connection {
    shared: Arc<Shared>,
    app: Router,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
    /// Dropped when the connection's HTTP part ends: `run` waits for all of them.
    _open: watch::Receiver<()>,
}

impl Connection {
    #[cfg(feature = "tls")]
    async fn serve_tls(self, stream: TcpStream, tls: tokio_rustls::TlsAcceptor) {
        let limit = self.shared.limits.header_read_timeout;
        match tokio::time::timeout(limit, tls.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
            Err(_) => {
                self.shared
                    .stats
                    .header_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                debug!("TLS handshake took longer than header_read_timeout: closed");
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            shared,
            app,
            peer,
            slot,
            mut stop,
            _open,
        } = self;
        let limits = &shared.limits;
        let state = Arc::new(conn::State::new(limits, shared.stats.clone()));
        let io = conn::Io::new(io, state.clone(), slot, shared.shape, limits);
        let max_uri = limits.max_uri_bytes;
        let shape = shared.shape;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            async move {
                if errors::target_len(req.uri()) > max_uri {
                    return Ok::<_, Infallible>(errors::response(
                        shape,
                        axum::http::StatusCode::URI_TOO_LONG,
                        &format!("the request target is longer than {max_uri} bytes"),
                    ));
                }
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(conn::HeadTimer::new(state))
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes);
        let served = http
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(served);
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let result = tokio::select! {
            r = served.as_mut() => r,
            () = stopping => {
                served.as_mut().graceful_shutdown();
                served.await
            }
        };
        if let Err(e) = result {
            debug!(error = %e, "connection ended");
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (Unix; elsewhere `None`) and
/// returns the new soft limit. Called once at start by `pxs`.
pub fn raise_open_file_limit() -> std::io::Result<Option<u64>> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX).map(Some)
    }
    #[cfg(not(unix))]
    {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        Limits::default().validate("limits.").unwrap();
        let bad = |l: Limits| l.validate("limits.").unwrap_err();
        let d = Limits::default;
        assert!(
            bad(Limits {
                header_read_timeout: Duration::ZERO,
                ..d()
            })
            .starts_with("limits.header_read_timeout")
        );
        assert!(
            bad(Limits {
                idle_timeout: Duration::from_secs(1),
                ..d()
            })
            .starts_with("limits.idle_timeout")
        );
        assert!(
            bad(Limits {
                max_connections: 0,
                ..d()
            })
            .starts_with("limits.max_connections")
        );
        assert!(
            bad(Limits {
                max_header_bytes: 100,
                ..d()
            })
            .starts_with("limits.max_header_bytes")
        );
        assert!(
            bad(Limits {
                max_uri_bytes: 40_000,
                ..d()
            })
            .starts_with("limits.max_uri_bytes")
        );
    }

    #[test]
    fn stats_render_per_listener() {
        let a = Stats::new("api", 5);
        a.note_refusal();
        let mut out = String::new();
        render_stats(&mut out, &[&a]);
        assert!(out.contains("pxs_http_connections{listener=\"api\"} 0\n"));
        assert!(out.contains("pxs_http_connections_refused_total{listener=\"api\"} 1\n"));
        assert!(out.contains("# TYPE pxs_http_idle_closed_total counter\n"));
    }
}
