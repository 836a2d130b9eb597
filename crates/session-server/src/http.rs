//! The node's one HTTP port: players of every session connect to `/sessions/<id>/ws` and are
//! routed to that session's signalling, after their player token is checked ([`admit`]). Also
//! each session's loopback streamer listener.

use crate::config::Config;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pxs_net::TrustedProxies;
use pxs_protocol::node::{SessionId, Token, UnixMillis};
use pxs_protocol::player_token::{self, Claims, TokenError};
use pxs_webrtc_session::Signalling;
use pxs_webrtc_session::router::{PlayerIdentity, Role};
use pxs_webrtc_session::server::{first_subprotocol, presented_token, token_matches};
use pxs_webrtc_session::users::Role as UserRole;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Where a session's players go. Written only by the server loop (when a session starts and
/// ends); read by the HTTP handlers.
#[derive(Clone)]
pub struct Route {
    pub signalling: Signalling,
    /// The session's player-token signing key (`StartOptions::player_token`). `None`: nobody
    /// may join.
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

    /// Every session's id and signalling, for `/metrics`.
    fn signallings(&self) -> Vec<(SessionId, Signalling)> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, r)| (id.clone(), r.signalling.clone()))
            .collect()
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
    draining: Arc<AtomicBool>,
    proxies: TrustedProxies,
}

/// The node's HTTP application. `draining`: whether the node takes no new sessions (set by the
/// server loop), shown by `/healthz`. `proxies` (`node.trusted_proxies`): peers whose
/// `X-Forwarded-For` names the player.
pub fn node_app(
    routes: Routes,
    node: String,
    draining: Arc<AtomicBool>,
    proxies: TrustedProxies,
) -> axum::Router {
    axum::Router::new()
        .route("/sessions/{id}/ws", get(player_ws))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(NodeState {
            routes,
            node,
            draining,
            proxies,
        })
}

async fn healthz(State(s): State<NodeState>) -> Response {
    axum::Json(serde_json::json!({
        "node": s.node,
        "sessions": s.routes.len(),
        "draining": s.draining.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// `GET /metrics`: the node's sessions, and each running session's signalling counters
/// (a streamer that stopped reading, players paused, messages dropped: see webrtc-session's
/// `metrics`) labelled with its session id, in Prometheus' text format. Public, as the
/// coordinator's: counts only, no names, tokens or addresses.
async fn metrics(State(s): State<NodeState>) -> Response {
    let sessions = s.routes.signallings();
    let mut per_session = Vec::with_capacity(sessions.len());
    for (id, signalling) in sessions {
        // A session that shut down in between has nothing more to say.
        if let Some(stats) = signalling.stats().await {
            per_session.push((id, stats.render_prometheus()));
        }
    }
    let mut out = format!(
        "# HELP pxs_node_sessions Sessions on this node now (starting, ready or ending).
         # TYPE pxs_node_sessions gauge
pxs_node_sessions {}
         # HELP pxs_node_draining Whether the node takes no new sessions (1) or does (0).
         # TYPE pxs_node_draining gauge
pxs_node_draining {}
",
        s.routes.len(),
        u8::from(s.draining.load(Ordering::Relaxed)),
    );
    out.push_str(&labelled(&per_session));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Several sessions' Prometheus text as one: each metric's HELP and TYPE once, then its samples
/// from every session with a `session` label added (a counter then only ever grows, for as
/// long as its session runs).
fn labelled(per_session: &[(SessionId, String)]) -> String {
    // Metric name → (HELP and TYPE lines, samples), in the order first seen.
    let mut order: Vec<String> = Vec::new();
    let mut metrics: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for (id, text) in per_session {
        for line in text.lines() {
            let (name, is_header) = match line.strip_prefix("# ") {
                Some(rest) => (rest.split_whitespace().nth(1).unwrap_or_default(), true),
                None => (line.split(['{', ' ']).next().unwrap_or_default(), false),
            };
            if name.is_empty() {
                continue;
            }
            let entry = metrics.entry(name.to_owned()).or_insert_with(|| {
                order.push(name.to_owned());
                (Vec::new(), Vec::new())
            });
            if is_header {
                if !entry.0.iter().any(|h| h == line) {
                    entry.0.push(line.to_owned());
                }
            } else {
                // Session ids are letters, digits and `_`: nothing to escape.
                let rest = &line[name.len()..];
                let sample = match rest.strip_prefix('{') {
                    Some(labels) => format!("{name}{{session=\"{id}\",{labels}"),
                    None => format!("{name}{{session=\"{id}\"}}{rest}"),
                };
                entry.1.push(sample);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((headers, samples)) = metrics.remove(&name) {
            for l in headers.iter().chain(samples.iter()) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
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
    let presented = presented_token(req.headers(), req.uri().query());
    let admission = match admit(
        route.token.as_ref(),
        presented.as_deref(),
        &id,
        now_millis(),
    ) {
        Ok(a) => a,
        Err(refusal) => {
            warn!(session = %id, reason = refusal.kind(), "player refused");
            return (StatusCode::UNAUTHORIZED, "missing or invalid token").into_response();
        }
    };
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
    match &admission {
        Admission::Key => debug!(session = %id, "player connecting with the session key"),
        Admission::Signed(c) => debug!(session = %id, role = ?c.role, "player connecting"),
    }
    // Behind a trusted proxy (NGINX), the player is the one it forwards for.
    let player = s.proxies.client(peer.ip(), &parts.headers).ip;
    route
        .signalling
        .upgrade_player(upgrade, protocol, Some(player), identity(&admission))
}

/// Who a player is among the session's users: the role and name its token says; the holder of
/// the session key itself (an operator's tool) is an owner.
pub fn identity(admission: &Admission) -> PlayerIdentity {
    match admission {
        Admission::Key => PlayerIdentity {
            name: None,
            role: UserRole::Owner,
            link: None,
        },
        Admission::Signed(c) => PlayerIdentity {
            name: c.name.clone(),
            role: match c.role {
                player_token::Role::Owner => UserRole::Owner,
                player_token::Role::Controller => UserRole::Controller,
                player_token::Role::Viewer => UserRole::Viewer,
            },
            link: c.link.clone(),
        },
    }
}

/// How a player was let in.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    /// With the session's key itself. Kept on purpose: operators and tools that hold the key
    /// (and tests written before signed tokens) join with it. It never expires and carries no
    /// role, so the key must never be handed to a browser; the coordinator gives users signed
    /// tokens instead.
    Key,
    /// With a token signed with the session's key, for this session, not expired.
    Signed(Claims),
}

/// Why a player was refused. Only its kind is logged, never the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session was started without a key (or an empty one): nobody may join.
    NoKey,
    /// No `Authorization: Bearer` and no `?token=`.
    Missing,
    /// Neither the key nor a valid signed token.
    Token(TokenError),
}

impl Refusal {
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::Missing => "missing",
            Refusal::Token(e) => e.kind(),
        }
    }
}

/// The one admission rule for a player of session `session` at `now`: the presented token is a
/// player token signed with the session's `key` (see [`player_token`]), or the key itself
/// (compared in constant time). Both roles are admitted; the role is not yet enforced here (a
/// viewer's input is not dropped yet).
pub fn admit(
    key: Option<&Token>,
    presented: Option<&str>,
    session: &SessionId,
    now: UnixMillis,
) -> Result<Admission, Refusal> {
    // An empty key would sign and match empty strings: treat it as no key.
    let key = key.filter(|k| !k.0.is_empty()).ok_or(Refusal::NoKey)?;
    let presented = presented.ok_or(Refusal::Missing)?;
    if bool::from(presented.as_bytes().ct_eq(key.0.as_bytes())) {
        return Ok(Admission::Key);
    }
    player_token::verify(player_token::key_from_secret(key), presented, session, now)
        .map(Admission::Signed)
        .map_err(Refusal::Token)
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> UnixMillis {
    // A clock before 1970 admits no expiring token anyway: count it as the epoch.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// How the node's listeners serve (`[limits]`): errors in the project's JSON shape,
/// `{"error": {"code", "message"}}`.
pub fn serve(listener: &'static str, config: &Config) -> pxs_net::Serve {
    pxs_net::Serve::new(listener, config.http.clone(), pxs_net::coded_error_body)
}

/// What a session's streamer listener needs.
#[derive(Clone)]
pub struct StreamerSide {
    pub session: SessionId,
    pub signalling: Signalling,
    /// The session's streamer credential ([`crate::supervisor::Spawn::streamer_credential`]).
    pub credential: Token,
}

/// Serves a session's streamer listener until `stop` turns true: every WebSocket on any path that
/// presents the session's credential (`?token=` or `Authorization: Bearer`, as webrtc-session's
/// `streamer_token`) is a streamer connection of the session's signalling; anything else is
/// refused with 401 and a log line.
pub fn serve_streamer(
    serve: pxs_net::Serve,
    listener: TcpListener,
    side: StreamerSide,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new().fallback(streamer_ws).with_state(side);
    tokio::spawn(async move {
        let served = serve
            .run(listener, app, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            warn!(%e, "streamer listener failed");
        }
    });
}

async fn streamer_ws(
    State(side): State<StreamerSide>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if !token_matches(req.headers(), req.uri().query(), &side.credential) {
        // An application of another session (an orphan of a crashed run that redials the port
        // its session had) or another process that never saw this session's launch: never this
        // session's streamer. (A local user who can read the application's command line in /proc
        // can read the credential too.)
        warn!(session = %side.session, %peer, "streamer refused: missing or wrong streamer credential");
        return (StatusCode::UNAUTHORIZED, "missing or invalid token").into_response();
    }
    let protocol = first_subprotocol(req.headers());
    let (mut parts, _body) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => side
            .signalling
            .upgrade(u, protocol, Role::Streamer, Some(peer.ip())),
        Err(rejection) => rejection.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sessions_counters_are_labelled_and_each_metric_is_declared_once() {
        let a = SessionId::parse("ses_a").unwrap();
        let b = SessionId::parse("ses_b").unwrap();
        let text = "# HELP m_total Things.\n# TYPE m_total counter\nm_total 3\n\
                    # HELP g A gauge.\n# TYPE g gauge\ng{kind=\"x\"} 1\n";
        let out = labelled(&[(a, text.to_owned()), (b, text.replace(" 3", " 5"))]);
        assert_eq!(
            out,
            "# HELP m_total Things.\n# TYPE m_total counter\nm_total{session=\"ses_a\"} 3\n\
             m_total{session=\"ses_b\"} 5\n# HELP g A gauge.\n# TYPE g gauge\n\
             g{session=\"ses_a\",kind=\"x\"} 1\ng{session=\"ses_b\",kind=\"x\"} 1\n"
        );
        assert_eq!(labelled(&[]), "");
    }
    use pxs_protocol::player_token::{Role, sign};

    const NOW: UnixMillis = 1_764_039_000_000;

    fn sid(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn claims(session: &str, exp: UnixMillis) -> Claims {
        Claims {
            session_id: sid(session),
            role: Role::Viewer,
            exp,
            name: None,
            link: None,
        }
    }

    #[test]
    fn a_signed_token_or_the_key_admits_and_nothing_else() {
        let key = Token("k3y".into());
        let s = sid("ses_a");
        let good = sign(b"k3y", &claims("ses_a", NOW + 1));
        assert_eq!(
            admit(Some(&key), Some(&good), &s, NOW),
            Ok(Admission::Signed(claims("ses_a", NOW + 1)))
        );
        assert_eq!(admit(Some(&key), Some("k3y"), &s, NOW), Ok(Admission::Key));
        let refused = |t: &str| admit(Some(&key), Some(t), &s, NOW).unwrap_err().kind();
        assert_eq!(refused(&sign(b"k3y", &claims("ses_a", NOW))), "expired");
        assert_eq!(
            refused(&sign(b"k3y", &claims("ses_b", NOW + 1))),
            "wrong_session"
        );
        assert_eq!(
            refused(&sign(b"other", &claims("ses_a", NOW + 1))),
            "bad_signature"
        );
        assert_eq!(refused("k3"), "malformed");
        assert_eq!(refused(""), "malformed");
        assert_eq!(admit(Some(&key), None, &s, NOW), Err(Refusal::Missing));
        assert_eq!(admit(None, Some(&good), &s, NOW), Err(Refusal::NoKey));
        let empty = Token(String::new());
        assert_eq!(admit(Some(&empty), Some(""), &s, NOW), Err(Refusal::NoKey));
    }
}
