//! The node's one HTTP port: players of every session connect to `/sessions/<id>/ws` and are
//! routed to that session's signalling, after its player token is checked. Also each session's
//! loopback streamer listener.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pxs_protocol::node::{SessionId, Token};
use pxs_webrtc_session::Signalling;
use pxs_webrtc_session::router::Role;
use pxs_webrtc_session::server::{first_subprotocol, token_matches};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Where a session's players go. Written only by the server loop (when a session starts and
/// ends); read by the HTTP handlers.
#[derive(Clone)]
pub struct Route {
    pub signalling: Signalling,
    /// `None`: nobody may join.
    pub token: Option<Token>,
}

/// The routing table: session id → route.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<SessionId, Route>>>);

impl Routes {
    pub fn insert(&self, id: SessionId, route: Route) {
        // A poisoned lock only means a handler panicked while reading; the map is intact.
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, route);
    }

    pub fn remove(&self, id: &SessionId) -> Option<Route> {
        self.0.write().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    fn get(&self, id: &SessionId) -> Option<Route> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone)]
struct NodeState {
    routes: Routes,
    node: String,
}

/// The node's HTTP application.
pub fn node_app(routes: Routes, node: String) -> axum::Router {
    axum::Router::new()
        .route("/sessions/{id}/ws", get(player_ws))
        .route("/healthz", get(healthz))
        .with_state(NodeState { routes, node })
}

async fn healthz(State(s): State<NodeState>) -> Response {
    axum::Json(serde_json::json!({"node": s.node, "sessions": s.routes.len()})).into_response()
}

async fn player_ws(
    State(s): State<NodeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let Ok(id) = SessionId::parse(&id) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    let Some(route) = s.routes.get(&id) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    let allowed = route
        .token
        .as_ref()
        .is_some_and(|t| token_matches(req.headers(), req.uri().query(), t));
    if !allowed {
        warn!(session = %id, "player refused: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "missing or invalid token").into_response();
    }
    let protocol = first_subprotocol(req.headers());
    if !req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return (StatusCode::UPGRADE_REQUIRED, "WebSocket only").into_response();
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    debug!(session = %id, "player connecting");
    route
        .signalling
        .upgrade(upgrade, protocol, Role::Player, Some(peer.ip()))
}

/// Binds `127.0.0.1:<port>` for a session's streamer (with `SO_REUSEADDR`, so a port whose old
/// connections linger in TIME_WAIT is usable at once).
pub fn bind_streamer_port(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(64)
}

/// Serves a session's streamer listener until `stop` turns true: every WebSocket on any path is
/// a streamer connection of `signalling`.
pub fn serve_streamer(
    listener: TcpListener,
    signalling: Signalling,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .fallback(streamer_ws)
        .with_state(signalling);
    tokio::spawn(async move {
        // Signalling is many small frames: send each at once (no Nagle delay).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        if let Err(e) = served {
            warn!(%e, "streamer listener failed");
        }
    });
}

async fn streamer_ws(
    State(signalling): State<Signalling>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let protocol = first_subprotocol(req.headers());
    let (mut parts, _body) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => signalling.upgrade(u, protocol, Role::Streamer, Some(peer.ip())),
        Err(rejection) => rejection.into_response(),
    }
}
