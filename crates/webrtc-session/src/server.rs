//! The standalone server: the streamer, player and SFU listeners, the player port's HTTP side
//! (static files, the REST API) and the checks made before a WebSocket is accepted (tokens, the
//! per-IP connection cap, the subprotocol echo).

use crate::config::{Config, Secret, StaticFiles};
use crate::router::Role;
use crate::session::Signalling;
use anyhow::Context;
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pxs_protocol::signalling_api::{ErrorBody, Status};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::{info, warn};

/// The addresses a started server listens on.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub streamer: SocketAddr,
    pub player: SocketAddr,
    pub sfu: SocketAddr,
    pub https: Option<SocketAddr>,
}

/// A running standalone server.
pub struct Server {
    addrs: Addrs,
    signalling: Signalling,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

#[derive(Clone)]
struct AppState {
    signalling: Signalling,
    player_token: Option<Arc<Secret>>,
    streamer_token: Option<Arc<Secret>>,
    per_ip: Arc<IpLimiter>,
    statics: Option<Arc<StaticFiles>>,
}

impl Server {
    /// Binds every listener and starts serving. Port 0 picks a free port; see [`Server::addrs`].
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let bind = |port: u16, name: &'static str| {
            let addr = SocketAddr::new(config.bind_address, port);
            listen(addr).with_context(|| format!("{name}: cannot listen on {addr}"))
        };
        let streamer = bind(config.streamer_port, "streamer_port")?;
        let player = bind(config.player_port, "player_port")?;
        let sfu = bind(config.sfu_port, "sfu_port")?;
        let https = match &config.https {
            Some((port, cert, key)) => {
                // Several crypto backends may be linked in; pick one explicitly. An error only
                // means a provider was installed already.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!(
                            "ssl_cert_path/ssl_key_path: cannot load {} and {}",
                            cert.display(),
                            key.display()
                        )
                    })?
                    .get_inner();
                Some((bind(*port, "https_port")?, tls))
            }
            None => None,
        };
        let addrs = Addrs {
            streamer: streamer.local_addr()?,
            player: player.local_addr()?,
            sfu: sfu.local_addr()?,
            https: match &https {
                Some((l, _)) => Some(l.local_addr()?),
                None => None,
            },
        };

        let signalling = Signalling::spawn(config.router.clone(), config.limits.clone());
        let state = AppState {
            signalling: signalling.clone(),
            player_token: config.player_token.clone().map(Arc::new),
            streamer_token: config.streamer_token.clone().map(Arc::new),
            per_ip: Arc::new(IpLimiter::new(config.max_connections_per_ip)),
            statics: config.serve.clone().map(Arc::new),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = JoinSet::new();
        let ws_only = |role: Role| {
            axum::Router::new()
                .fallback(move |state, info, req| ws_only(state, info, req, role))
                .with_state(state.clone())
        };
        let player_app = player_app(state.clone(), config.rest_api);
        let serve = |name: &'static str| pxs_net::Serve::new(name, config.http.clone(), error_body);
        for (name, listener, app) in [
            ("streamer", streamer, ws_only(Role::Streamer)),
            ("sfu", sfu, ws_only(Role::Sfu)),
            ("player", player, player_app.clone()),
        ] {
            let mut stopped = stopped.clone();
            let served = serve(name).run(listener, app, async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            tasks.spawn(async move { served.await.context("HTTP server failed") });
        }
        if let Some((listener, tls)) = https {
            let mut stopped = stopped.clone();
            let served = serve("https")
                .tls(&tls)
                .run(listener, player_app, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
            tasks.spawn(async move { served.await.context("HTTPS server failed") });
        }
        info!(
            streamer = %addrs.streamer,
            player = %addrs.player,
            sfu = %addrs.sfu,
            https = ?addrs.https,
            "signalling server listening"
        );
        Ok(Server {
            addrs,
            signalling,
            stop,
            tasks,
        })
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    pub fn signalling(&self) -> &Signalling {
        &self.signalling
    }

    /// Closes every WebSocket with 1001 and stops the listeners.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.signalling.shutdown().await;
        let _ = self.stop.send(true);
        while let Some(res) = self.tasks.join_next().await {
            res??;
        }
        Ok(())
    }

    /// Serves until `signal` completes, then shuts down. A listener that fails ends the server
    /// with its error.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            _ = signal => {}
            Some(res) = self.tasks.join_next() => {
                res??;
            }
        }
        self.shutdown().await
    }
}

/// Pending connections the kernel queues per listener. Tokio's default (128) overflows when a few
/// hundred players connect at once, e.g. reconnecting after a restart, and each overflow costs the
/// client a one-second SYN retry.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn player_app(state: AppState, rest_api: bool) -> axum::Router {
    let mut app = axum::Router::new();
    if rest_api {
        app = app
            .route("/api/status", get(api_status))
            .route("/api/streamers", get(api_streamers))
            .route("/api/streamers/{id}", get(api_streamer))
            .route("/api/players", get(api_players))
            .route("/api/players/{id}", get(api_player))
            .route("/metrics", get(metrics));
    }
    app.fallback(player_fallback).with_state(state)
}

fn is_ws_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn ws_only(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    role: Role,
) -> Response {
    if !is_ws_upgrade(req.headers()) {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this port accepts WebSocket connections only",
        )
            .into_response();
    }
    accept(state, peer, req, role).await
}

async fn player_fallback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if is_ws_upgrade(req.headers()) {
        return accept(state, peer, req, Role::Player).await;
    }
    match &state.statics {
        Some(statics) => serve_static(statics, req).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve_static(statics: &StaticFiles, mut req: Request) -> Response {
    if req.uri().path() == "/" {
        let home = format!("/{}", statics.homepage.trim_start_matches('/'));
        match home.parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        }
    }
    match tower_http::services::ServeDir::new(&statics.root)
        .oneshot(req)
        .await
    {
        Ok(res) => res.into_response(),
        Err(never) => match never {},
    }
}

/// The checks before a WebSocket is accepted, then the upgrade.
async fn accept(state: AppState, peer: SocketAddr, req: Request, role: Role) -> Response {
    let expected = match role {
        Role::Player => &state.player_token,
        Role::Streamer | Role::Sfu => &state.streamer_token,
    };
    if let Some(expected) = expected
        && !token_matches(req.headers(), req.uri().query(), expected)
    {
        warn!(?role, "WebSocket refused: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "missing or invalid token").into_response();
    }
    let Some(permit) = state.per_ip.acquire(peer.ip()) else {
        warn!(
            ?role,
            "WebSocket refused: too many connections from one address"
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    };
    let protocol = first_subprotocol(req.headers());
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match protocol {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    let limits = state.signalling.limits().clone();
    let signalling = state.signalling.clone();
    // A streamer's (or an SFU's) limit is larger: between the two its message is read and
    // dropped, not a reason to close the application (see `Limits::frame_limit`).
    let frame_limit = limits.frame_limit(role);
    upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        // Small buffers: most connections are idle players, who send little (an answer, a few
        // candidates); streamers send every offer. Writes are batched by the connection task and
        // flushed explicitly, so the write buffer is only a threshold.
        .read_buffer_size(match role {
            Role::Player => 1024,
            Role::Streamer | Role::Sfu => 8192,
        })
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |ws| {
            // The connection's own task holds the address's slot until it closes.
            signalling.spawn_connection(ws, role, Some(peer.ip()), None, permit);
            std::future::ready(())
        })
}

/// Epic's frontend offers subprotocols only when told to; the browser aborts unless the server
/// selects one, so we echo the first.
pub fn first_subprotocol(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// The token a client presents: from `Authorization: Bearer <token>` if there is one, else from
/// `?token=<token>` (percent-decoded). Never log it.
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| query_param(query?, "token"))
}

/// The [`presented_token`] equals `expected`, compared in constant time.
pub fn token_matches(headers: &HeaderMap, query: Option<&str>, expected: &Secret) -> bool {
    presented_token(headers, query)
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.0.as_bytes())))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name).then(|| percent_decode(v))?
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Counts WebSocket connections per client address.
struct IpLimiter {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

struct IpPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    fn new(max: usize) -> Self {
        IpLimiter {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Option<IpPermit>> {
        if self.max == 0 {
            return Some(None);
        }
        // A poisoned lock only means another connection panicked while counting; the counts
        // are still plain integers.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(IpPermit {
            limiter: self.clone(),
            ip,
        }))
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

// ----- REST API (read-only, Epic's shapes) -----

fn api_guard(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let expected = state.streamer_token.as_ref()?;
    (!token_matches(headers, uri.query(), expected)).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(ErrorBody {
                message: "missing or invalid token".into(),
            }),
        )
            .into_response()
    })
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorBody {
            message: "the server is shutting down".into(),
        }),
    )
        .into_response()
}

async fn api_status(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    let uptime = s.signalling.uptime().as_millis() as u64;
    match s
        .signalling
        .inspect(|r| (r.streamer_count(), r.player_count()))
        .await
    {
        Some((streamer_count, player_count)) => Json(Status {
            uptime,
            streamer_count,
            player_count,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .into_response(),
        None => unavailable(),
    }
}

async fn api_streamers(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    match s.signalling.inspect(|r| r.streamers()).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

async fn api_streamer(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    let shown: String = id.chars().take(64).collect();
    match s.signalling.inspect(move |r| r.streamer(&id)).await {
        Some(Some(info)) => Json(info).into_response(),
        Some(None) => not_found(format!("No streamer with id {shown}")),
        None => unavailable(),
    }
}

async fn api_players(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    match s.signalling.inspect(|r| r.players()).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

async fn api_player(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    let shown: String = id.chars().take(64).collect();
    match s.signalling.inspect(move |r| r.player(&id)).await {
        Some(Some(info)) => Json(info).into_response(),
        Some(None) => not_found(format!("No player with id {shown}")),
        None => unavailable(),
    }
}

/// The session's counters in Prometheus' text format (`crate::metrics::Stats`), guarded as the
/// REST API.
async fn metrics(State(s): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(denied) = api_guard(&s, &headers, &uri) {
        return denied;
    }
    match s.signalling.stats().await {
        Some(stats) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            stats.render_prometheus(),
        )
            .into_response(),
        None => unavailable(),
    }
}

/// Epic's error shape, `{"message": ...}`, for every error answer of every listener.
fn error_body(_status: StatusCode, message: &str) -> String {
    serde_json::to_string(&ErrorBody {
        message: message.to_owned(),
    })
    .unwrap_or_default()
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(ErrorBody { message })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(
            query_param("a=1&token=ab%2Bc%3D", "token").as_deref(),
            Some("ab+c=")
        );
        assert_eq!(query_param("token", "token").as_deref(), Some(""));
        assert_eq!(query_param("tok=1", "token"), None);
        assert_eq!(query_param("token=%ZZ", "token"), None);
        assert_eq!(query_param("token=%4", "token"), None);
    }

    #[test]
    fn tokens_match_from_header_or_query() {
        let secret = Secret("s3cret".into());
        let mut h = HeaderMap::new();
        assert!(!token_matches(&h, None, &secret));
        assert!(token_matches(&h, Some("token=s3cret"), &secret));
        assert!(!token_matches(&h, Some("token=s3cre"), &secret));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(token_matches(&h, None, &secret));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(
            !token_matches(&h, Some("token=s3cret"), &secret),
            "the header wins"
        );
    }

    #[test]
    fn the_first_subprotocol_is_echoed() {
        let mut h = HeaderMap::new();
        assert_eq!(first_subprotocol(&h), None);
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "a, b".parse().unwrap());
        assert_eq!(first_subprotocol(&h).as_deref(), Some("a"));
    }

    #[test]
    fn the_ip_limiter_counts_and_releases() {
        let l = Arc::new(IpLimiter::new(2));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.acquire(ip).unwrap();
        let b = l.acquire(ip).unwrap();
        assert!(l.acquire(ip).is_none());
        assert!(l.acquire([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(l.acquire(ip).is_some());
        drop(b);
        let unlimited = Arc::new(IpLimiter::new(0));
        assert!(unlimited.acquire(ip).is_some());
    }
}
