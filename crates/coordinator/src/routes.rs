//! Every path the coordinator serves, in one table. The router is built from it, each route's
//! access rule is enforced from it before its handler runs, and the OpenAPI document
//! (`GET /api/v1/openapi.json`) and the role tests read it. A route that is not in [`ROUTES`] is
//! not served.

use crate::api::{self, credentials, who};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::{hub, openapi, sse, web};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use std::sync::Arc;

pub use crate::auth::Access;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    /// The lower-case name, as OpenAPI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Patch => MethodFilter::PATCH,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// What a route answers with, for the OpenAPI document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// JSON (or SSE, or a WebSocket) under `/api/v1`, `/healthz`, `/metrics`.
    Api,
    /// A web page or one of its files.
    Page,
}

type Handler = fn(MethodFilter) -> MethodRouter<Arc<Engine>>;

/// One served path and method.
pub struct Route {
    pub method: Method,
    /// The path in the router's syntax: `{id}` a segment, `{*path}` the rest.
    pub path: &'static str,
    pub access: Access,
    /// The token may come as `?token=` (event streams: a browser's EventSource cannot set
    /// headers).
    pub token_in_query: bool,
    pub kind: Kind,
    pub summary: &'static str,
    handler: Handler,
}

const fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        access,
        token_in_query: false,
        kind: Kind::Api,
        summary,
        handler,
    }
}

const fn stream(route: Route) -> Route {
    Route {
        token_in_query: true,
        ..route
    }
}

const fn page(path: &'static str, summary: &'static str, handler: Handler) -> Route {
    Route {
        kind: Kind::Page,
        ..route(Method::Get, path, Access::Public, summary, handler)
    }
}

use Access::{Admin, Anyone, Public, User};
use Method::{Delete, Get, Patch, Post};

/// Every route the coordinator serves.
pub static ROUTES: &[Route] = &[
    route(
        Get,
        "/healthz",
        Public,
        "Liveness and database check",
        |m| on(m, api::healthz),
    ),
    route(Get, "/metrics", Public, "Prometheus metrics", |m| {
        on(m, api::metrics)
    }),
    route(
        Get,
        "/api/v1/metrics",
        Admin,
        "The coordinator's numbers as JSON: sessions and nodes by state, the queue, start latency",
        |m| on(m, api::metrics_json),
    ),
    route(
        Get,
        "/api/v1/openapi.json",
        Public,
        "This document (OpenAPI 3.1)",
        |m| on(m, openapi_document),
    ),
    route(
        Get,
        "/api/v1/titles",
        Anyone,
        "List titles with their availability",
        |m| on(m, api::list_titles),
    ),
    route(Post, "/api/v1/titles", Admin, "Create a title", |m| {
        on(m, api::create_title)
    }),
    route(Get, "/api/v1/titles/{id}", Anyone, "One title", |m| {
        on(m, api::get_title)
    }),
    route(Patch, "/api/v1/titles/{id}", Admin, "Change a title", |m| {
        on(m, api::patch_title)
    }),
    route(
        Delete,
        "/api/v1/titles/{id}",
        Admin,
        "Delete a title without live sessions (nodes' applications do not make it again)",
        |m| on(m, api::delete_title),
    ),
    route(
        Post,
        "/api/v1/titles/{id}/approve",
        Admin,
        "Approve a title made from a node's application: show it to users",
        |m| on(m, api::approve_title),
    ),
    route(Get, "/api/v1/nodes", User, "List nodes", |m| {
        on(m, api::list_nodes)
    }),
    route(Get, "/api/v1/nodes/{id}", User, "One node", |m| {
        on(m, api::get_node)
    }),
    route(
        Post,
        "/api/v1/nodes/{id}/drain",
        Admin,
        "Drain a node: no new sessions; running ones end by themselves or at the deadline",
        |m| on(m, api::drain_node),
    ),
    route(
        Post,
        "/api/v1/nodes/{id}/resume",
        Admin,
        "Undo a drain: place sessions on the node again",
        |m| on(m, api::resume_node),
    ),
    route(
        Get,
        "/api/v1/nodes/link",
        Public,
        "The node link (WebSocket; node token)",
        |m| on(m, hub::link),
    ),
    route(
        Get,
        "/api/v1/node-tokens",
        Admin,
        "List node tokens (never their secrets)",
        |m| on(m, api::list_node_tokens),
    ),
    route(
        Post,
        "/api/v1/node-tokens",
        Admin,
        "Mint a node token (shown once)",
        |m| on(m, api::create_node_token),
    ),
    route(
        Delete,
        "/api/v1/node-tokens/{id}",
        Admin,
        "Revoke a node token",
        |m| on(m, api::revoke_node_token),
    ),
    route(
        Get,
        "/api/v1/tokens",
        Admin,
        "List API tokens (never their secrets)",
        |m| on(m, api::list_api_tokens),
    ),
    route(
        Post,
        "/api/v1/tokens",
        Admin,
        "Mint an API token (shown once)",
        |m| on(m, api::create_api_token),
    ),
    route(
        Delete,
        "/api/v1/tokens/{id}",
        Admin,
        "Revoke an API token",
        |m| on(m, api::revoke_api_token),
    ),
    route(
        Get,
        "/api/v1/sessions",
        User,
        "List sessions (admins: all; users: their own)",
        |m| on(m, api::list_sessions),
    ),
    route(
        Post,
        "/api/v1/sessions",
        Anyone,
        "Start a session now, queue it, or schedule it",
        |m| on(m, api::create_session),
    ),
    route(Get, "/api/v1/sessions/{id}", Anyone, "One session", |m| {
        on(m, api::get_session)
    }),
    route(
        Delete,
        "/api/v1/sessions/{id}",
        Anyone,
        "End, or cancel, a session",
        |m| on(m, api::delete_session),
    ),
    stream(route(
        Get,
        "/api/v1/sessions/{id}/events",
        Anyone,
        "The session's changes (SSE)",
        |m| on(m, sse::session_events),
    )),
    route(
        Get,
        "/api/v1/sessions/{id}/links",
        Anyone,
        "The session's share links, newest first (its owner; never their secrets)",
        |m| on(m, api::list_links),
    ),
    route(
        Post,
        "/api/v1/sessions/{id}/links",
        Anyone,
        "Make a share link of the session (its owner; the key is shown once)",
        |m| on(m, api::create_link),
    ),
    route(
        Delete,
        "/api/v1/sessions/{id}/links/{link_id}",
        Anyone,
        "Revoke a share link (its owner); players who joined with it are closed",
        |m| on(m, api::revoke_link),
    ),
    stream(route(
        Get,
        "/api/v1/events",
        Admin,
        "Every change (SSE)",
        |m| on(m, sse::all_events),
    )),
    page("/", "The catalog page", |m| on(m, web::index)),
    page("/play/{id}", "The player page of a session", |m| {
        on(m, web::play)
    }),
    page(
        "/book/{id}",
        "The booking page of a scheduled session: a countdown to its start",
        |m| on(m, web::book),
    ),
    page(
        "/my",
        "My sessions: running, waiting, booked and recent, of this browser's user",
        |m| on(m, web::my_sessions),
    ),
    page(
        "/admin",
        "The admin console (it asks for an admin token; the API checks every call)",
        |m| on(m, web::admin),
    ),
    page(
        "/admin/api",
        "The API reference: this document as a page",
        |m| on(m, web::api_reference),
    ),
    page(
        "/assets/{*path}",
        "The pages' scripts, styles and images",
        |m| on(m, web::asset),
    ),
];

/// The router: every route of [`ROUTES`], each behind its access check; anything else is a
/// JSON 404 (405 for a known path with another method).
pub fn router(engine: Arc<Engine>) -> Router {
    let mut router = Router::new();
    for r in ROUTES {
        let mut handler = (r.handler)(r.method.filter());
        if r.access != Access::Public {
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                (engine.clone(), r),
                authorize,
            ));
        }
        router = router.route(r.path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Every error leaves as `{"error": {...}}`, also the ones axum makes itself (a path that
        // is not UTF-8, a method an endpoint lacks, a refused WebSocket upgrade), keeping their
        // status and headers (`Allow` on 405).
        .layer(axum::middleware::map_response(|r: Response| {
            pxs_net::json_error(r, pxs_net::coded_error_body)
        }))
        .with_state(engine)
}

/// The OpenAPI document of [`ROUTES`], made once.
async fn openapi_document() -> axum::Json<&'static serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(|| {
        openapi::document(ROUTES.iter().map(|r| openapi::Operation {
            method: r.method.as_str(),
            path: r.path,
            access: r.access,
            page: r.kind == Kind::Page,
            summary: r.summary,
        }))
    }))
}

/// Checks the caller against the route's access and hands it to the handler.
async fn authorize(
    State((engine, route)): State<(Arc<Engine>, &'static Route)>,
    mut req: Request,
    next: Next,
) -> Response {
    let (token, ip) = match credentials(&engine, &req, route.token_in_query) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match who(&engine, token.as_deref(), ip, route.access).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn each_path_and_method_once() {
        let mut seen = HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method.as_str(),
                r.path
            );
        }
    }

    #[test]
    fn only_event_streams_take_the_token_from_the_query() {
        for r in ROUTES {
            assert_eq!(
                r.token_in_query,
                r.path.ends_with("/events"),
                "{} {}",
                r.method.as_str(),
                r.path
            );
        }
    }
}
