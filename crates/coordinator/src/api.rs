//! The REST API's handlers: REST API v1, server-sent events, health and metrics. Each parses its
//! input and asks the engine; nothing else. Which path and method reach a handler, and who may
//! call it, is the route table's (`routes`), which checks the caller before the handler runs and
//! hands it over as `Extension<Caller>`.

use crate::auth::{Access, Caller, Refusal, TokenKind};
use crate::engine::Engine;
use crate::error::{ApiError, Kind};
use crate::store::Probe;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pxs_protocol::api::{self, List, SessionState, TitleId};
use pxs_protocol::node::{NodeId, SessionId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Callers and bodies

/// The token of a request: `Authorization: Bearer`, or `?token=` where `query_ok` (event
/// streams: EventSource cannot set headers). A malformed header is an error, never anonymous.
fn presented_token(
    headers: &HeaderMap,
    query: Option<&str>,
    query_ok: bool,
) -> Result<Option<String>, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ApiError::unauthorized())?;
        let t = crate::auth::bearer(v)
            .filter(|t| t.len() <= 256)
            .ok_or_else(ApiError::unauthorized)?;
        return Ok(Some(t.to_owned()));
    }
    if query_ok && let Some(q) = query {
        for (k, t) in form_urlencoded::parse(q.as_bytes()) {
            if k == "token" && !t.is_empty() && t.len() <= 256 {
                return Ok(Some(t.into_owned()));
            }
        }
    }
    Ok(None)
}

/// What a request says of its caller: the token it presents (`?token=` too where `query_ok`)
/// and the address it comes from (behind a trusted proxy, the client it forwards for).
pub(crate) fn credentials(
    engine: &Engine,
    req: &Request,
    query_ok: bool,
) -> Result<(Option<String>, IpAddr), ApiError> {
    let token = presented_token(req.headers(), req.uri().query(), query_ok)?;
    Ok((token, client_of(engine, req.headers(), req.extensions()).ip))
}

/// Who a request comes from: its peer, or, when the peer is one of `trusted_proxies`, the
/// client and scheme it forwards (`pxs_net::forwarded`).
fn client_of(
    engine: &Engine,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> pxs_net::Client {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    engine.config.trusted_proxies.client(peer.ip(), headers)
}

/// The caller with these credentials, checked against `access` (the route's, from the route
/// table).
pub(crate) async fn who(
    engine: &Engine,
    token: Option<&str>,
    ip: IpAddr,
    access: Access,
) -> Result<Caller, ApiError> {
    let caller = engine.caller(token, ip).await?;
    match access.admits(&caller) {
        Ok(()) => Ok(caller),
        Err(Refusal::Unauthorized) => Err(ApiError::unauthorized()),
        Err(Refusal::Forbidden) => Err(ApiError::forbidden()),
    }
}

/// A JSON body: `application/json`, at most `max_body_bytes`, every field checked; errors name
/// the field.
async fn body<T: DeserializeOwned>(engine: &Engine, req: Request) -> Result<T, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::new(
            Kind::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ));
    }
    let limit = engine.config.max_body_bytes;
    // The body arrives within the same bound as the head: a client trickling it must not hold a
    // connection slot for ever.
    let wait = engine.config.http.header_read_timeout;
    let bytes: Bytes = tokio::time::timeout(wait, axum::body::to_bytes(req.into_body(), limit))
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "the body did not arrive within {wait:?} (limits.header_read_timeout)"
            ))
        })?
        .map_err(|_| {
            ApiError::new(
                Kind::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            )
        })?;
    // Syntax first (depth-limited by serde_json), then the shape: a wrongly typed field is then
    // reported with its name, never as invalid JSON.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        let detail = e.to_string();
        return Err(ApiError::bad_request(if detail.starts_with("trailing") {
            format!("the body has data after the JSON value ({detail})")
        } else {
            format!("the body is not valid JSON: {detail}")
        }));
    }
    // Every body is an object: serde would also fill a struct from an array of its fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad_request(format!("{}", e.inner()))
        } else {
            ApiError::bad_request(format!("{path}: {}", e.inner()))
        }
    })?;
    Ok(value)
}

fn title_id(s: &str) -> Result<TitleId, ApiError> {
    TitleId::parse(s).map_err(|_| ApiError::not_found(format!("no title `{}`", clip(s))))
}

pub(crate) fn session_id(s: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(s).map_err(|_| ApiError::not_found(crate::engine::NO_SESSION))
}

fn node_id(s: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(s).map_err(|_| ApiError::not_found(format!("no node `{}`", clip(s))))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
pub(crate) type E = State<Arc<Engine>>;

// ---------------------------------------------------------------------------------------------
// Handlers

/// Healthy when the database answers a read and takes a write now. A database that is merely
/// busy (every connection taken within `database_wait`) is overload, not a fault: still healthy.
pub(crate) async fn healthz(State(engine): E) -> Response {
    if sqlx::query("SELECT 1")
        .execute(engine.store.reader())
        .await
        .is_err()
    {
        return ApiError::new(Kind::Unavailable, "the database is not available").into_response();
    }
    match engine.store.probe_write(engine.now()).await {
        Probe::Wrote | Probe::Busy => (StatusCode::OK, "ok\n").into_response(),
        Probe::Failed(e) => {
            tracing::error!(error = %e, "healthz: the database does not take writes");
            ApiError::new(
                Kind::Unavailable,
                "the database does not take writes (see the coordinator's log)",
            )
            .into_response()
        }
    }
}

/// Sessions by state (every state) and nodes by state (every state), read now.
async fn counts(engine: &Engine) -> ApiResult<(Vec<(String, i64)>, Vec<(String, i64)>)> {
    let mut c = engine.store.reader().acquire().await?;
    let mut by_state = crate::store::count_by_state(&mut c).await?;
    drop(c);
    for s in SessionState::ALL {
        if !by_state.iter().any(|(n, _)| n == s.as_str()) {
            by_state.push((s.as_str().to_owned(), 0));
        }
    }
    by_state.sort();
    let mut node_states: Vec<(String, i64)> = ["online", "draining", "drained", "offline"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for n in engine.nodes().await? {
        let name = match n.state {
            api::NodeState::Online => "online",
            api::NodeState::Draining => "draining",
            api::NodeState::Drained => "drained",
            api::NodeState::Offline => "offline",
        };
        if let Some(e) = node_states.iter_mut().find(|(s, _)| s == name) {
            e.1 += 1;
        }
    }
    Ok((by_state, node_states))
}

fn queued_of(by_state: &[(String, i64)]) -> i64 {
    by_state
        .iter()
        .find(|(n, _)| n == "queued")
        .map_or(0, |(_, v)| *v)
}

pub(crate) async fn metrics(
    State(engine): E,
    listener: Option<axum::Extension<Arc<pxs_net::Stats>>>,
) -> ApiResult<Response> {
    let (by_state, node_states) = counts(&engine).await?;
    let queued = queued_of(&by_state);
    let mut out = String::new();
    crate::metrics::render_gauge(
        &mut out,
        "pxs_sessions",
        "Sessions by state.",
        "state",
        &by_state,
    );
    crate::metrics::render_gauge(
        &mut out,
        "pxs_nodes",
        "Nodes by state.",
        "state",
        &node_states,
    );
    out.push_str(&format!(
        "# HELP pxs_queue_length Requests waiting for a slot.\n# TYPE pxs_queue_length gauge\npxs_queue_length {queued}\n\
         # HELP pxs_node_links Node links held by this coordinator.\n# TYPE pxs_node_links gauge\npxs_node_links {}\n\
         # HELP pxs_database_commit_failures_total Write transactions whose commit failed (nothing of them was stored).\n# TYPE pxs_database_commit_failures_total counter\npxs_database_commit_failures_total {}\n",
        engine.link_count(),
        engine.store.write_health().failures()
    ));
    engine.metrics.render_histograms(&mut out);
    if let Some(axum::Extension(stats)) = listener {
        pxs_net::render_stats(&mut out, &[stats.as_ref()]);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The numbers of `/metrics` as JSON, for the admin console's charts.
pub(crate) async fn metrics_json(State(engine): E) -> ApiResult<Json<api::Metrics>> {
    let (by_state, node_states) = counts(&engine).await?;
    Ok(Json(api::Metrics {
        at: crate::rules::rfc3339(engine.now()),
        queue_length: queued_of(&by_state),
        sessions: by_state.into_iter().collect(),
        nodes: node_states.into_iter().collect(),
        node_links: u64::try_from(engine.link_count()).unwrap_or(u64::MAX),
        session_start_seconds: engine.metrics.start.summary(),
        placement_seconds: engine.metrics.placement.summary(),
    }))
}

pub(crate) async fn list_titles(
    State(engine): E,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<List<api::Title>>> {
    Ok(Json(List {
        items: engine.titles(&caller).await?,
    }))
}

pub(crate) async fn get_title(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Title>> {
    Ok(Json(engine.title(&caller, &title_id(&id)?).await?))
}

pub(crate) async fn create_title(State(engine): E, req: Request) -> ApiResult<Response> {
    let new: api::NewTitle = body(&engine, req).await?;
    let t = engine.create_title(new).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

pub(crate) async fn patch_title(
    State(engine): E,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<api::Title>> {
    let id = title_id(&id)?;
    let patch: api::TitlePatch = body(&engine, req).await?;
    Ok(Json(engine.update_title(&id, patch).await?))
}

pub(crate) async fn approve_title(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Title>> {
    Ok(Json(engine.approve_title(&title_id(&id)?).await?))
}

pub(crate) async fn delete_title(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.delete_title(&title_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_nodes(State(engine): E) -> ApiResult<Json<List<api::Node>>> {
    Ok(Json(List {
        items: engine.nodes().await?,
    }))
}

pub(crate) async fn get_node(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Node>> {
    Ok(Json(engine.node(&node_id(&id)?).await?))
}

pub(crate) async fn drain_node(
    State(engine): E,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<api::Node>> {
    let id = node_id(&id)?;
    // The body is optional: none (or an empty one) drains without a deadline.
    // (A Content-Type alone, as `curl -H 'Content-Type: ...'` without `-d` sends, is no body.)
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let drain: api::NodeDrain = if has_body {
        body(&engine, req).await?
    } else {
        api::NodeDrain::default()
    };
    Ok(Json(engine.set_drain(&id, Some(&drain)).await?))
}

pub(crate) async fn resume_node(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Node>> {
    Ok(Json(engine.set_drain(&node_id(&id)?, None).await?))
}

pub(crate) async fn create_node_token(State(engine): E, req: Request) -> ApiResult<Response> {
    let new: api::NewNodeToken = body(&engine, req).await?;
    let t = engine.create_node_token(&new.name, new.node).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

pub(crate) async fn create_api_token(State(engine): E, req: Request) -> ApiResult<Response> {
    let new: api::NewApiToken = body(&engine, req).await?;
    let t = engine.create_api_token(&new.name, new.role).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

pub(crate) async fn list_api_tokens(State(engine): E) -> ApiResult<Json<List<api::TokenInfo>>> {
    Ok(Json(List {
        items: engine.tokens(TokenKind::Api).await?,
    }))
}

pub(crate) async fn list_node_tokens(State(engine): E) -> ApiResult<Json<List<api::TokenInfo>>> {
    Ok(Json(List {
        items: engine.tokens(TokenKind::Node).await?,
    }))
}

pub(crate) async fn revoke_api_token(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.revoke_token(TokenKind::Api, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn revoke_node_token(
    State(engine): E,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.revoke_token(TokenKind::Node, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn create_session(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> ApiResult<Response> {
    let new: api::NewSession = body(&engine, req).await?;
    let s = engine.create_session(&caller, &new).await?;
    let location = format!("/api/v1/sessions/{}", s.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(s)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    state: Option<String>,
    title_id: Option<String>,
    node_id: Option<String>,
    end_reason: Option<String>,
    limit: Option<String>,
}

/// The filters of `GET /api/v1/sessions?state=&title_id=&node_id=&end_reason=&limit=`, checked:
/// a value that cannot match anything is 400 naming the parameter.
fn session_query(uri: &axum::http::Uri) -> ApiResult<crate::engine::SessionQuery> {
    let q: Query<SessionQuery> = Query::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let mut out = crate::engine::SessionQuery::default();
    if let Some(s) = &q.state {
        out.state = Some(SessionState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state: `{}` is not one of scheduled, queued, starting, ready, ended, failed",
                clip(s)
            ))
        })?);
    }
    if let Some(t) = &q.title_id {
        out.title =
            Some(TitleId::parse(t).map_err(|e| ApiError::bad_request(format!("title_id: {e}")))?);
    }
    if let Some(n) = &q.node_id {
        out.node =
            Some(NodeId::parse(n).map_err(|e| ApiError::bad_request(format!("node_id: {e}")))?);
    }
    if let Some(r) = &q.end_reason {
        out.end_reason = Some(api::EndReason::parse(r).ok_or_else(|| {
            ApiError::bad_request(format!(
                "end_reason: `{}` is not an end reason (see the Session schema)",
                clip(r)
            ))
        })?);
    }
    if let Some(l) = &q.limit {
        out.limit = l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit: a whole number from 1 to 1000"))?;
    }
    Ok(out)
}

pub(crate) async fn list_sessions(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> ApiResult<Json<List<api::Session>>> {
    let q = session_query(req.uri())?;
    Ok(Json(List {
        items: engine.sessions(&caller, &q).await?,
    }))
}

/// The display name of `?name=` in `query`, checked (`rules::display_name`); other parameters
/// are left to whoever reads them (`?token=` on the event stream).
pub(crate) fn name_param(query: Option<&str>) -> ApiResult<Option<String>> {
    let Some(q) = query else {
        return Ok(None);
    };
    let mut names = form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == "name");
    let Some((_, first)) = names.next() else {
        return Ok(None);
    };
    if names.next().is_some() {
        return Err(ApiError::bad_request("name: give it once"));
    }
    crate::rules::display_name(&first).map(Some)
}

pub(crate) async fn get_session(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<api::Session>> {
    let id = session_id(&id)?;
    let name = name_param(query.as_deref())?;
    Ok(Json(engine.session(&caller, &id, name.as_deref()).await?))
}

pub(crate) async fn delete_session(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let s = engine.delete_session(&caller, &session_id(&id)?).await?;
    let status = if s.state.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(s)).into_response())
}

/// Where browsers reach this coordinator's pages: the configured `public_url`, else
/// `<scheme>://<Host>` of the request (a plain `host[:port]`, else 400), the scheme `https`
/// when a trusted proxy says the client used it (`X-Forwarded-Proto`), else `http`.
fn public_base(engine: &Engine, req: &Request) -> ApiResult<String> {
    if let Some(u) = &engine.config.public_url {
        return Ok(u.clone());
    }
    let scheme = match client_of(engine, req.headers(), req.extensions()).https {
        Some(true) => "https",
        Some(false) | None => "http",
    };
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .map(|h| format!("{scheme}://{h}"))
        .ok_or_else(|| {
            ApiError::bad_request(
                "the Host header is missing or not a host name with an optional port; \
                 send one, or set public_url in the coordinator's configuration",
            )
        })
}

/// `host[:port]`: a DNS name, an IPv4 address or a bracketed IPv6 address, and digits after
/// the colon. Nothing that could change the meaning of a URL made from it (`@`, `/`, `#`, ...).
fn valid_host(h: &str) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            (host, Some(port))
        }
        _ => (h, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    port_ok && host_ok
}

pub(crate) async fn create_link(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let id = session_id(&id)?;
    // Who asks comes before what they send.
    engine.check_link_owner(&caller, &id).await?;
    let base = public_base(&engine, &req)?;
    let new: api::NewLink = body(&engine, req).await?;
    let link = engine.create_link(&caller, &id, &new, &base).await?;
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

pub(crate) async fn list_links(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<List<api::Link>>> {
    let id = session_id(&id)?;
    Ok(Json(List {
        items: engine.links(&caller, &id).await?,
    }))
}

pub(crate) async fn revoke_link(
    State(engine): E,
    Extension(caller): Extension<Caller>,
    Path((id, link_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = session_id(&id)?;
    engine.revoke_link(&caller, &id, &link_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_make_safe_urls() {
        for ok in [
            "localhost",
            "127.0.0.1:8080",
            "pxs.example.org",
            "[::1]:8080",
            "[2001:db8::1]",
            "a-b.c:1",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            ":8080",
            "a:",
            "a:b",
            "a:123456",
            "user@evil.example",
            "evil.example/x",
            "evil.example#",
            "a b",
            "::1",
            "[::1",
            "[nothost]:80",
            "exa\u{e9}mple.org",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert!(!valid_host(&"a".repeat(256)));
    }

    #[test]
    fn names_come_from_the_query_once_and_checked() {
        assert_eq!(name_param(None).unwrap(), None);
        assert_eq!(name_param(Some("token=x")).unwrap(), None);
        assert_eq!(
            name_param(Some("token=x&name=%20Ada%20"))
                .unwrap()
                .as_deref(),
            Some("Ada")
        );
        assert_eq!(
            name_param(Some("name=A+B")).unwrap().as_deref(),
            Some("A B")
        );
        for bad in [
            "name=",
            "name=%07",
            "name=a&name=b",
            &format!("name={}", "x".repeat(41)),
        ] {
            assert!(name_param(Some(bad)).is_err(), "{bad}");
        }
    }
}
