//! Error answers as JSON in the server's shape: the ones handlers and axum make without a JSON
//! body ([`json_error`]), the listener's own (`414` for a long target, `503` over the connection
//! cap), and hyper's (`400`, `414`, `431`, which it writes with an empty body; see
//! [`hyper_error_answer`]).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use pxs_protocol::api::{ErrorBody, ErrorDetail};

/// Writes a server's JSON error body for a status and a message.
pub type ErrorShape = fn(StatusCode, &str) -> String;

/// The `code` of the project's error shape for a status (`docs/coordinator.md` lists them).
pub fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// The project's error shape, `{"error": {"code", "message"}}`, with [`error_code`].
pub fn coded_error_body(status: StatusCode, message: &str) -> String {
    let body = ErrorBody {
        error: ErrorDetail {
            code: error_code(status).to_owned(),
            message: message.to_owned(),
        },
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// An error answer with a JSON body.
pub fn response(shape: ErrorShape, status: StatusCode, message: &str) -> Response {
    let mut r = Response::new(Body::from(shape(status, message)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A whole HTTP/1.1 error answer that closes the connection, as bytes to write on a socket.
pub(crate) fn canned(shape: ErrorShape, status: StatusCode, message: &str) -> Vec<u8> {
    let body = shape(status, message);
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// The length of a request target as the client sent it (origin form: path and query).
pub(crate) fn target_len(uri: &Uri) -> usize {
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

/// The largest error body [`json_error`] reads to use as the message.
const MAX_MESSAGE: usize = 4096;

/// Leaves a response alone unless it is an error (4xx, 5xx) without a JSON body; such a one gets
/// a JSON body in `shape` with the same status and headers (`Allow` on 405 stays). Its text
/// becomes the message for client errors; a server error's text is never shown.
pub async fn json_error(resp: Response, shape: ErrorShape) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            "this endpoint does not take that method (see Allow)".to_owned()
        }
        s if s.is_server_error() && s != StatusCode::SERVICE_UNAVAILABLE => {
            "internal error".to_owned()
        }
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(shape(status, &message)))
}

/// [`json_error`] as a layer (`map_response_with_state`).
pub(crate) async fn json_errors(State(shape): State<ErrorShape>, resp: Response) -> Response {
    json_error(resp, shape).await
}

/// The status of an answer hyper wrote itself for a request it could not parse, if `buf` is
/// one: `HTTP/1.1 400|414|431`, only `content-length: 0`, `date` and `connection` headers, the whole head and
/// nothing after it. Answers of ours never look like this (every error of ours has a JSON body).
pub(crate) fn hyper_error_answer(buf: &[u8]) -> Option<StatusCode> {
    if buf.len() > 512 || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(&buf[..buf.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        "400 " => StatusCode::BAD_REQUEST,
        "414 " => StatusCode::URI_TOO_LONG,
        "431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let mut empty = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower == "content-length: 0" {
            empty = true;
        } else if !(lower.starts_with("date: ") || lower.starts_with("connection: ")) {
            return None;
        }
    }
    empty.then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_answers_are_recognised() {
        let ours = |s: &str| hyper_error_answer(s.as_bytes());
        assert_eq!(
            ours(
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Dec 2025 10:00:00 GMT\r\n\r\n"
            ),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(
            ours("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n"),
            Some(StatusCode::URI_TOO_LONG)
        );
        assert_eq!(
            ours("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        // A body follows, another header, another status, a partial head: not hyper's.
        assert_eq!(
            ours("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}"),
            None
        );
        assert_eq!(
            ours(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n"
            ),
            None
        );
        assert_eq!(
            ours("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(ours("HTTP/1.1 431 Request Header"), None);
    }

    #[test]
    fn the_coded_shape_names_the_status() {
        let body: serde_json::Value = serde_json::from_str(&coded_error_body(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "big",
        ))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "headers_too_large", "message": "big"}})
        );
    }

    #[tokio::test]
    async fn plain_errors_become_json_and_keep_their_headers() {
        let mut plain = Response::new(Body::from("no such session"));
        *plain.status_mut() = StatusCode::NOT_FOUND;
        plain
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        let r = json_error(plain, coded_error_body).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::ALLOW], "GET");
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"not_found","message":"no such session"}}"#
        );
        let ok = Response::new(Body::from("fine"));
        let r = json_error(ok, coded_error_body).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}
