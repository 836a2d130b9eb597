//! The web pages, built from `web/app` and embedded in the binary (see `build.rs`): the catalog
//! at `/`, the player page at `/play/{session id}`, their files under `/assets/`.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};
use std::sync::Arc;

static WEB: Dir<'static> = include_dir!("$OUT_DIR/web");

pub fn router() -> Router<Arc<crate::engine::Engine>> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/play/{id}",
            get(|_: Path<String>| async { file("play.html") }),
        )
        .route(
            "/assets/{*path}",
            get(|Path(p): Path<String>| async move { file(&format!("assets/{p}")) }),
        )
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map") | Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn file(path: &str) -> Response {
    // include_dir paths never contain `..`; a request for one simply finds nothing.
    match WEB.get_file(path) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            f.contents(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
