//! The web pages, built from `web/app` and embedded in the binary (see `build.rs`): the catalog
//! at `/`, the player page at `/play/{session id}`, the booking page at `/book/{session id}`,
//! "My sessions" at `/my`, the admin console at `/admin`, the API
//! reference at `/admin/api`, their files under `/assets/`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static WEB: Dir<'static> = include_dir!("$OUT_DIR/web");

/// The catalog.
pub(crate) async fn index() -> Response {
    file("index.html")
}

/// The player page; the page reads the session id from its address.
pub(crate) async fn play(_: Path<String>) -> Response {
    file("play.html")
}

/// The booking page of a scheduled session; the page reads the session id from its address.
pub(crate) async fn book(_: Path<String>) -> Response {
    file("book.html")
}

/// "My sessions": the sessions of this browser's user (the page reads them with the keys and
/// token the browser holds).
pub(crate) async fn my_sessions() -> Response {
    file("my.html")
}

/// The admin console. The page itself is public (it holds nothing); it asks for an admin token
/// and every call it makes is checked by the API.
pub(crate) async fn admin() -> Response {
    file("admin.html")
}

/// The API reference: `/api/v1/openapi.json` as a page.
pub(crate) async fn api_reference() -> Response {
    file("api.html")
}

/// The pages' files.
pub(crate) async fn asset(Path(p): Path<String>) -> Response {
    file(&format!("assets/{p}"))
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
