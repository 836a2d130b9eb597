//! Bad input on every endpoint: malformed JSON, wrong content types, oversize and hostile
//! bodies, unknown and mistyped fields, unknown titles, impossible times and durations, odd ids
//! in paths, the wrong role. Each is refused with a 4xx and the API's error body
//! (`{"error": {"code", "message"}}`, a message that says what is wrong), and nothing changes:
//! titles, sessions, nodes and tokens are as before. On SQLite, and on PostgreSQL when
//! configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::SessionState;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default `limits.max_body_bytes`.
const LIMIT: usize = 64 * 1024;

/// A coordinator with titles, a node kept alive by heartbeats, a running and a scheduled
/// session, and a user token.
struct World {
    coord: Coord,
    node: Arc<FakeNode>,
    beat: tokio::task::JoinHandle<()>,
    user: String,
    /// The running session.
    running: pxs_protocol::node::SessionId,
}

impl World {
    async fn new(backend: &Backend, name: &str) -> World {
        let db = fresh_database(backend, name).await;
        let coord = Coord::start(&db, FAST_TIMING).await;
        coord.title("t1", "demo", json!({})).await;
        coord
            .title("short", "demo", json!({"max_duration": 60}))
            .await;
        coord
            .title("secret", "demo", json!({"visibility": "private"}))
            .await;
        // No node has its application.
        coord
            .title("orphan", "nothing", json!({"max_duration": 60}))
            .await;
        // Heartbeats keep the node online for as long as the story takes.
        let (node, beat) = online_fake_node(&coord, "n1", "demo", 4).await;
        let running = coord.create(json!({"title_id": "t1"})).await;
        coord
            .wait_state(&running.id, SessionState::Ready, Duration::from_secs(10))
            .await;
        let at = pxs_coordinator::engine::rfc3339(coord.engine().now() + 3_600_000);
        let scheduled = coord
            .create(json!({"title_id": "short", "start_at": at}))
            .await;
        assert_eq!(scheduled.state, SessionState::Scheduled);
        let (s, v) = coord
            .admin(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": "u", "role": "user"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let user = v["token"].as_str().unwrap().to_owned();
        World {
            coord,
            node,
            beat,
            user,
            running: running.id,
        }
    }

    async fn finish(mut self) {
        self.beat.abort();
        self.coord.stop().await;
        drop(self.node);
    }

    /// Everything a bad request could have changed, as admins see it: titles, sessions (without
    /// their join URLs, fresh at each read), nodes (without their last heartbeat) and how many
    /// tokens and session keys (owner keys, share links) exist.
    async fn snapshot(&self) -> Value {
        let c = &self.coord;
        let (s, titles) = c.admin("GET", "/api/v1/titles", None).await;
        assert_eq!(s, 200, "{titles}");
        let (s, mut sessions) = c.admin("GET", "/api/v1/sessions", None).await;
        assert_eq!(s, 200, "{sessions}");
        for s in sessions["items"].as_array_mut().unwrap() {
            s["join_url"] = Value::Null;
            // What the node's latest heartbeat said, not something a request changes.
            s["players"] = Value::Null;
        }
        let (s, mut nodes) = c.admin("GET", "/api/v1/nodes", None).await;
        assert_eq!(s, 200, "{nodes}");
        for n in nodes["items"].as_array_mut().unwrap() {
            n["last_heartbeat"] = Value::Null;
        }
        let pool = c.engine().store.pool();
        let mut counts = Vec::new();
        for table in ["api_tokens", "node_tokens", "session_keys"] {
            let n: i64 = sqlx::Row::try_get(
                &sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) AS n FROM {table}"
                )))
                .fetch_one(pool)
                .await
                .unwrap(),
                "n",
            )
            .unwrap();
            counts.push(n);
        }
        json!({"titles": titles, "sessions": sessions, "nodes": nodes, "tokens": counts})
    }
}

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    Admin,
    User,
}

/// A bad request and what it must get.
struct Case {
    label: String,
    method: &'static str,
    path: String,
    who: Who,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// The message must contain this (the field, the value, the rule).
    mentions: &'static str,
}

fn case(label: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
    Case {
        label: label.into(),
        method,
        path: path.into(),
        who: Who::Admin,
        content_type: None,
        body: Vec::new(),
        status: 400,
        code: "bad_request",
        mentions: "",
    }
}

impl Case {
    fn json(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = Some("application/json");
        self.body = body.into();
        self
    }
    fn content_type(mut self, ct: Option<&'static str>) -> Case {
        self.content_type = ct;
        self
    }
    fn who(mut self, who: Who) -> Case {
        self.who = who;
        self
    }
    fn want(mut self, status: u16, code: &'static str, mentions: &'static str) -> Case {
        self.status = status;
        self.code = code;
        self.mentions = mentions;
        self
    }
}

/// An answer read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body` exactly as given
/// (no URL normalisation, any bytes), with `Connection: close`, and reads the answer.
async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Raw {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    if !body.is_empty() || head.starts_with("POST") || head.starts_with("PATCH") {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    // The server may answer (and close) before reading everything: that is its right.
    let _ = tcp.write_all(&req).await;
    read_answer(&mut tcp).await
}

async fn read_answer<R: tokio::io::AsyncRead + Unpin>(tcp: &mut R) -> Raw {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s; got {buf:?}");
    parse_answer(&buf)
}

fn parse_answer(buf: &[u8]) -> Raw {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = eol + 2;
            out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
            rest = &rest[(start + size + 2).min(rest.len())..];
        }
        body = out;
    }
    Raw {
        status,
        headers: head,
        body,
    }
}

/// Asserts `v` is the API's error body with `code` and a message mentioning `mentions`.
fn assert_error(label: &str, status: u16, v: &Value, code: &str, mentions: &str) {
    let got_code = v["error"]["code"].as_str();
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert_eq!(
        got_code,
        Some(code),
        "{label}: want {code}, got {status} {v}"
    );
    assert!(
        !message.trim().is_empty(),
        "{label}: no message in {status} {v}"
    );
    assert!(
        message.contains(mentions),
        "{label}: the message does not mention `{mentions}`: {message:?}"
    );
    assert!(
        !message.contains("sqlx") && !message.contains("panicked"),
        "{label}: an internal cause leaked: {message:?}"
    );
}

impl World {
    /// Sends `c` over the wire exactly as written and checks the answer and that nothing
    /// changed.
    async fn check(&self, c: &Case) {
        let before = self.snapshot().await;
        let token = match c.who {
            Who::Anonymous => None,
            Who::Admin => Some(ADMIN.to_owned()),
            Who::User => Some(self.user.clone()),
        };
        let mut head = format!("{} {} HTTP/1.1", c.method, c.path);
        if let Some(t) = token {
            head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
        }
        if let Some(ct) = c.content_type {
            head.push_str(&format!("\r\nContent-Type: {ct}"));
        }
        let started = Instant::now();
        let a = raw(self.coord.addr, &head, &c.body).await;
        let took = started.elapsed();
        let label = format!("{} ({} {})", c.label, c.method, clip(&c.path));
        assert_eq!(
            a.status,
            c.status,
            "{label}: {}\n{}",
            a.headers,
            String::from_utf8_lossy(&a.body)
        );
        assert!(
            a.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{label}: the error is not JSON: {}",
            a.headers
        );
        assert_error(&label, a.status, &a.json(), c.code, c.mentions);
        assert!(took < Duration::from_secs(5), "{label}: took {took:?}");
        let after = self.snapshot().await;
        assert_eq!(before, after, "{label}: changed something");
    }
}

impl World {
    /// Checks every case, then fails listing each case that did not pass.
    async fn check_all(&self, cases: &[Case]) {
        let mut failed = Vec::new();
        for c in cases {
            note_failure(self.check(c), &mut failed).await;
        }
        assert_all_passed(&failed, cases.len());
    }

    /// Sends `method path` (any bytes) as admin and checks the answer is one of `statuses` with
    /// the API's error body (any code), and that nothing changed.
    async fn check_refused(&self, method: &str, path: &str, body: &[u8], statuses: &[u16]) {
        let before = self.snapshot().await;
        let a = raw(
            self.coord.addr,
            &format!(
                "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json"
            ),
            body,
        )
        .await;
        assert!(
            statuses.contains(&a.status),
            "{method} {path}: want one of {statuses:?}, got {}\n{}",
            a.headers,
            String::from_utf8_lossy(&a.body)
        );
        let v = a.json();
        assert!(
            v["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                && v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.trim().is_empty()),
            "{method} {path}: not the API's error body: {}\n{v}",
            a.headers
        );
        assert_eq!(
            before,
            self.snapshot().await,
            "{method} {path} changed something"
        );
    }
}

/// Runs `check`; a failed assertion is noted in `failed` instead of ending the test.
async fn note_failure(check: impl std::future::Future<Output = ()>, failed: &mut Vec<String>) {
    use futures_util::FutureExt;
    if let Err(e) = std::panic::AssertUnwindSafe(check).catch_unwind().await {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        failed.push(why);
    }
}

fn assert_all_passed(failed: &[String], of: usize) {
    assert!(
        failed.is_empty(),
        "{} of {of} cases failed:\n- {}",
        failed.len(),
        failed.join("\n- ")
    );
}

fn clip(s: &str) -> String {
    if s.len() > 80 {
        format!("{}...({} bytes)", &s[..80], s.len())
    } else {
        s.to_owned()
    }
}

/// The JSON-body checks every POST and PATCH endpoint shares: syntax, media type, size, shape.
fn body_cases(method: &'static str, path: &str, valid: &str) -> Vec<Case> {
    let pad = format!(
        "{{\"name\": \"{}\"}}",
        "x".repeat(LIMIT + 1) // one byte over, with the JSON around it
    );
    vec![
        case("malformed JSON", method, path)
            .json("{]")
            .want(400, "bad_request", "JSON"),
        case("truncated JSON", method, path)
            .json(&valid[..valid.len() - 1])
            .want(400, "bad_request", "JSON"),
        case("a trailing comma", method, path)
            .json(format!("{},", valid.trim_end_matches('}')) + "}")
            .want(400, "bad_request", "JSON"),
        case("not JSON at all", method, path)
            .json("name=x")
            .want(400, "bad_request", "JSON"),
        case("an empty body", method, path)
            .json("")
            .want(400, "bad_request", "JSON"),
        case("data after the JSON", method, path)
            .json(format!("{valid} {{}}"))
            .want(400, "bad_request", "after"),
        case("null", method, path)
            .json("null")
            .want(400, "bad_request", ""),
        case("an array", method, path)
            .json("[]")
            .want(400, "bad_request", ""),
        case("a string", method, path)
            .json("\"x\"")
            .want(400, "bad_request", ""),
        case("an unknown field", method, path)
            .json(format!(
                "{},\"colour\":\"red\"}}",
                valid.trim_end_matches('}')
            ))
            .want(400, "bad_request", "colour"),
        case("text/plain", method, path)
            .json(valid)
            .content_type(Some("text/plain"))
            .want(415, "unsupported_media_type", "application/json"),
        case("no Content-Type", method, path)
            .json(valid)
            .content_type(None)
            .want(415, "unsupported_media_type", "application/json"),
        case("a form", method, path)
            .json("name=x")
            .content_type(Some("application/x-www-form-urlencoded"))
            .want(415, "unsupported_media_type", "application/json"),
        case("application/jsonx", method, path)
            .json(valid)
            .content_type(Some("application/jsonx"))
            .want(415, "unsupported_media_type", "application/json"),
        case("a body over 64 KiB", method, path)
            .json(pad)
            .want(413, "payload_too_large", "65536"),
        case("100k nested [", method, path)
            .json("[".repeat(100_000))
            .want(413, "payload_too_large", ""),
        case("60k nested [ (under the limit)", method, path)
            .json("[".repeat(60_000))
            .want(400, "bad_request", ""),
        case("60k nested [ in a field", method, path)
            .json(format!("{{\"name\": {}", "[".repeat(60_000)))
            .want(400, "bad_request", "JSON"),
        case("60k nested {", method, path)
            .json("{\"a\":".repeat(10_000))
            .want(400, "bad_request", ""),
        case("invalid UTF-8 in a string", method, path)
            .json({
                // Into the first string value of the valid body.
                let at = valid.find("\":\"").unwrap() + 3;
                let mut b = valid.as_bytes()[..at].to_vec();
                b.extend_from_slice(b"\xff\xfe");
                b.extend_from_slice(&valid.as_bytes()[at..]);
                b
            })
            .want(400, "bad_request", "unicode"),
        case("invalid UTF-8 outside strings", method, path)
            .json(b"\xff{}".to_vec())
            .want(400, "bad_request", "JSON"),
        case("a lone surrogate escape", method, path)
            .json("{\"name\": \"\\ud800\"}")
            .want(400, "bad_request", ""),
    ]
}

async fn bad_bodies_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-bodies").await;
    let mut cases = Vec::new();
    cases.extend(body_cases(
        "POST",
        "/api/v1/sessions",
        r#"{"title_id":"t1"}"#,
    ));
    cases.extend(body_cases(
        "POST",
        "/api/v1/titles",
        r#"{"id":"t9","name":"t9","application_id":"demo"}"#,
    ));
    cases.extend(body_cases(
        "PATCH",
        "/api/v1/titles/t1",
        r#"{"name":"renamed"}"#,
    ));
    cases.extend(body_cases(
        "POST",
        "/api/v1/tokens",
        r#"{"name":"x","role":"user"}"#,
    ));
    cases.extend(body_cases("POST", "/api/v1/node-tokens", r#"{"name":"x"}"#));
    cases.extend(body_cases(
        "POST",
        &format!("/api/v1/sessions/{}/links", w.running),
        r#"{"role":"viewer"}"#,
    ));
    w.check_all(&cases).await;
    w.finish().await;
}

async fn bad_sessions_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-sessions").await;
    let now = w.coord.engine().now();
    let soon = pxs_coordinator::engine::rfc3339(now + 3_600_000);
    let p = "/api/v1/sessions";
    let s = |label: &str, body: String| case(label, "POST", p).json(body);
    let cases = vec![
        s("duration -5", r#"{"title_id":"t1","duration":-5}"#.into()).want(
            400,
            "bad_request",
            "duration",
        ),
        s(
            "duration \"x\"",
            r#"{"title_id":"t1","duration":"x"}"#.into(),
        )
        .want(400, "bad_request", "duration"),
        s("duration 1.5", r#"{"title_id":"t1","duration":1.5}"#.into()).want(
            400,
            "bad_request",
            "duration",
        ),
        s(
            "duration null is absent",
            r#"{"title_id":"nope","duration":null}"#.into(),
        )
        .want(404, "not_found", "nope"),
        s("duration 0", r#"{"title_id":"t1","duration":0}"#.into()).want(
            400,
            "bad_request",
            "duration",
        ),
        s(
            "duration u64::MAX",
            r#"{"title_id":"t1","duration":18446744073709551615}"#.into(),
        )
        .want(400, "bad_request", "duration"),
        s(
            "duration 2^64",
            r#"{"title_id":"t1","duration":18446744073709551616}"#.into(),
        )
        .want(400, "bad_request", "duration"),
        s(
            "duration 1e400",
            r#"{"title_id":"t1","duration":1e400}"#.into(),
        )
        .want(400, "bad_request", ""),
        s(
            "duration over the title's max_duration",
            r#"{"title_id":"short","duration":61}"#.into(),
        )
        .want(400, "bad_request", "duration"),
        s("an unknown title", r#"{"title_id":"nope"}"#.into()).want(404, "not_found", "nope"),
        s("a title id with a slash", r#"{"title_id":"../x"}"#.into()).want(
            400,
            "bad_request",
            "title_id",
        ),
        s("an empty title id", r#"{"title_id":""}"#.into()).want(400, "bad_request", "title_id"),
        s(
            "a title id of 10000 characters",
            format!(r#"{{"title_id":"{}"}}"#, "a".repeat(10_000)),
        )
        .want(400, "bad_request", "title_id"),
        s("a numeric title id", r#"{"title_id":5}"#.into()).want(400, "bad_request", "title_id"),
        s("no title id", r#"{}"#.into()).want(400, "bad_request", "title_id"),
        s(
            "a duplicate field",
            r#"{"title_id":"t1","title_id":"short"}"#.into(),
        )
        .want(400, "bad_request", "title_id"),
        s(
            "start_at in the past",
            r#"{"title_id":"short","start_at":"2020-01-01T00:00:00Z"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at a minute ago",
            format!(
                r#"{{"title_id":"short","start_at":"{}"}}"#,
                pxs_coordinator::engine::rfc3339(now - 60_000)
            ),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at not RFC 3339",
            r#"{"title_id":"short","start_at":"tomorrow"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at without an offset",
            r#"{"title_id":"short","start_at":"2031-01-01T00:00:00"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at month 13",
            r#"{"title_id":"short","start_at":"2031-13-01T00:00:00Z"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at as a number",
            r#"{"title_id":"short","start_at":1900000000}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at of 10000 characters",
            format!(
                r#"{{"title_id":"short","start_at":"{}"}}"#,
                "9".repeat(10_000)
            ),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at more than a year ahead",
            r#"{"title_id":"short","start_at":"2999-01-01T00:00:00Z"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "start_at year 9999",
            r#"{"title_id":"short","start_at":"9999-12-31T23:59:59Z"}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "scheduled without a duration, the title has no max_duration",
            format!(r#"{{"title_id":"t1","start_at":"{soon}"}}"#),
        )
        .want(400, "bad_request", "duration"),
        s(
            "scheduled over the title's max_duration",
            format!(r#"{{"title_id":"short","start_at":"{soon}","duration":3600}}"#),
        )
        .want(400, "bad_request", "duration"),
        s(
            "scheduled where no node can take it",
            format!(r#"{{"title_id":"orphan","start_at":"{soon}"}}"#),
        )
        .want(409, "conflict", "orphan"),
        s(
            "scheduled in the past and of an unknown title",
            r#"{"title_id":"nope","start_at":"2020-01-01T00:00:00Z","duration":5}"#.into(),
        )
        .want(400, "bad_request", "start_at"),
        s(
            "a private title, anonymously",
            r#"{"title_id":"secret"}"#.into(),
        )
        .who(Who::Anonymous)
        .want(404, "not_found", "secret"),
    ];
    w.check_all(&cases).await;
    // Over the anonymous limit (2 sessions per address) a booking is refused, and none is made
    // (a request for now waits instead: tests/anonymous_limits.rs).
    for _ in 0..2 {
        let (st, v) = w
            .coord
            .call("POST", p, None, Some(json!({"title_id": "t1"})))
            .await;
        assert_eq!(st, 201, "{v}");
        let id: pxs_protocol::node::SessionId = serde_json::from_value(v["id"].clone()).unwrap();
        w.coord
            .wait_state(&id, SessionState::Ready, Duration::from_secs(10))
            .await;
    }
    w.check(
        &case("a third anonymous session, booked", "POST", p)
            .json(format!(
                r#"{{"title_id":"t1","start_at":"{soon}","duration":60}}"#
            ))
            .who(Who::Anonymous)
            .want(429, "too_many_requests", "2"),
    )
    .await;
    w.finish().await;
}

async fn bad_titles_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-titles").await;
    let p = "/api/v1/titles";
    let t = |label: &str, extra: Value| {
        let mut body = json!({"id": "t9", "name": "t9", "application_id": "demo"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        case(label, "POST", p).json(body.to_string())
    };
    let u =
        |label: &str, body: Value| case(label, "PATCH", "/api/v1/titles/t1").json(body.to_string());
    let cases = vec![
        // POST /api/v1/titles
        t("a duplicate id", json!({"id": "t1"})).want(409, "conflict", "t1"),
        t("max_players -1", json!({"max_players": -1})).want(400, "bad_request", "max_players"),
        t(
            "max_players 2^32",
            json!({"max_players": 4_294_967_296_u64}),
        )
        .want(400, "bad_request", "max_players"),
        t("max_players \"x\"", json!({"max_players": "x"})).want(400, "bad_request", "max_players"),
        t("idle_timeout -1", json!({"idle_timeout": -1})).want(400, "bad_request", "idle_timeout"),
        t("empty_timeout 1.5", json!({"empty_timeout": 1.5})).want(
            400,
            "bad_request",
            "empty_timeout",
        ),
        t(
            "max_duration over a year",
            json!({"max_duration": 100_000_000}),
        )
        .want(400, "bad_request", "max_duration"),
        t("idle_timeout u64::MAX", json!({"idle_timeout": u64::MAX})).want(
            400,
            "bad_request",
            "idle_timeout",
        ),
        t("an id with a slash", json!({"id": "a/b"})).want(400, "bad_request", "id"),
        t("an id of 300 characters", json!({"id": "a".repeat(300)})).want(400, "bad_request", "id"),
        t("an empty id", json!({"id": ""})).want(400, "bad_request", "id"),
        t("the id ..", json!({"id": ".."})).want(400, "bad_request", "id"),
        t("no name", json!({"name": null})).want(400, "bad_request", "name"),
        t("an empty name", json!({"name": ""})).want(400, "bad_request", "name"),
        t("a blank name", json!({"name": "   "})).want(400, "bad_request", "name"),
        t("a name of 201 characters", json!({"name": "n".repeat(201)})).want(
            400,
            "bad_request",
            "name",
        ),
        t(
            "a description of 4001 characters",
            json!({"description": "d".repeat(4001)}),
        )
        .want(400, "bad_request", "description"),
        t("no application_id", json!({"application_id": null})).want(
            400,
            "bad_request",
            "application_id",
        ),
        t(
            "an application_id with a space",
            json!({"application_id": "a b"}),
        )
        .want(400, "bad_request", "application_id"),
        t("visibility \"secret\"", json!({"visibility": "secret"})).want(
            400,
            "bad_request",
            "visibility",
        ),
        t(
            "image_url javascript:",
            json!({"image_url": "javascript:alert(1)"}),
        )
        .want(400, "bad_request", "image_url"),
        t(
            "image_url JAVASCRIPT:",
            json!({"image_url": "JAVASCRIPT:alert(1)"}),
        )
        .want(400, "bad_request", "image_url"),
        t(
            "image_url with a leading space",
            json!({"image_url": " javascript:alert(1)"}),
        )
        .want(400, "bad_request", "image_url"),
        t(
            "image_url data:",
            json!({"image_url": "data:text/html,<script>alert(1)</script>"}),
        )
        .want(400, "bad_request", "image_url"),
        t(
            "image_url of 3000 characters",
            json!({"image_url": format!("https://x.example/{}", "a".repeat(3000))}),
        )
        .want(400, "bad_request", "image_url"),
        t("a user token", json!({}))
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        t("no token", json!({}))
            .who(Who::Anonymous)
            .want(401, "unauthorized", "token"),
        case("malformed JSON with a user token", "POST", p)
            .json("{")
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        // PATCH /api/v1/titles/{id}
        u("max_players -1", json!({"max_players": -1})).want(400, "bad_request", "max_players"),
        u("an empty name", json!({"name": ""})).want(400, "bad_request", "name"),
        u(
            "image_url javascript:",
            json!({"image_url": "javascript:alert(1)"}),
        )
        .want(400, "bad_request", "image_url"),
        u(
            "max_duration over a year",
            json!({"max_duration": 100_000_000}),
        )
        .want(400, "bad_request", "max_duration"),
        u(
            "a good field and a bad one",
            json!({"description": "changed", "max_players": -1}),
        )
        .want(400, "bad_request", "max_players"),
        u(
            "a good field and a bad value",
            json!({"description": "changed", "name": ""}),
        )
        .want(400, "bad_request", "name"),
        u("the id", json!({"id": "t2"})).want(400, "bad_request", "id"),
        u(
            "application_id with a slash",
            json!({"application_id": "a/b"}),
        )
        .want(400, "bad_request", "application_id"),
        u("a user token", json!({"name": "x"}))
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        case("an unknown title", "PATCH", "/api/v1/titles/nope")
            .json(r#"{"name":"x"}"#)
            .want(404, "not_found", "nope"),
        // DELETE /api/v1/titles/{id}
        case("a title with live sessions", "DELETE", "/api/v1/titles/t1")
            .want(409, "conflict", "t1"),
        case(
            "a title with a scheduled session",
            "DELETE",
            "/api/v1/titles/short",
        )
        .want(409, "conflict", "short"),
        case("an unknown title", "DELETE", "/api/v1/titles/nope").want(404, "not_found", "nope"),
        case("a user token", "DELETE", "/api/v1/titles/secret")
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        case("no token", "DELETE", "/api/v1/titles/secret")
            .who(Who::Anonymous)
            .want(401, "unauthorized", "token"),
    ];
    w.check_all(&cases).await;
    w.finish().await;
}

async fn bad_tokens_nodes_and_queries_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-misc").await;
    let k = |label: &str, body: &str| case(label, "POST", "/api/v1/tokens").json(body);
    let cases = vec![
        k("role \"root\"", r#"{"name":"x","role":"root"}"#).want(400, "bad_request", "role"),
        k("no role", r#"{"name":"x"}"#).want(400, "bad_request", "role"),
        k("an empty name", r#"{"name":"","role":"user"}"#).want(400, "bad_request", "name"),
        k(
            "a name of 201 characters",
            &format!(r#"{{"name":"{}","role":"user"}}"#, "n".repeat(201)),
        )
        .want(400, "bad_request", "name"),
        k(
            "a user minting an admin token",
            r#"{"name":"x","role":"admin"}"#,
        )
        .who(Who::User)
        .want(403, "forbidden", "admin"),
        k("anonymous", r#"{"name":"x","role":"user"}"#)
            .who(Who::Anonymous)
            .want(401, "unauthorized", "token"),
        case("an empty name", "POST", "/api/v1/node-tokens")
            .json(r#"{"name":" "}"#)
            .want(400, "bad_request", "name"),
        case("no name", "POST", "/api/v1/node-tokens")
            .json("{}")
            .want(400, "bad_request", "name"),
        case("a node name with a space", "POST", "/api/v1/node-tokens")
            .json(r#"{"name":"x","node":"gpu 7"}"#)
            .want(400, "bad_request", "node"),
        case(
            "a node name that is a number",
            "POST",
            "/api/v1/node-tokens",
        )
        .json(r#"{"name":"x","node":7}"#)
        .want(400, "bad_request", "node"),
        case("a user token", "POST", "/api/v1/node-tokens")
            .json(r#"{"name":"x"}"#)
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        // Nodes.
        case("an unknown node", "POST", "/api/v1/nodes/nope/drain").want(404, "not_found", "nope"),
        case("an unknown node", "POST", "/api/v1/nodes/nope/resume").want(404, "not_found", "nope"),
        case("a user token", "POST", "/api/v1/nodes/n1/drain")
            .who(Who::User)
            .want(403, "forbidden", "admin"),
        case(
            "a drain deadline that is no time",
            "POST",
            "/api/v1/nodes/nope/drain",
        )
        .json(r#"{"deadline":"tomorrow"}"#)
        .want(400, "bad_request", "deadline"),
        case(
            "a negative drain deadline",
            "POST",
            "/api/v1/nodes/nope/drain",
        )
        .json(r#"{"deadline":-5}"#)
        .want(400, "bad_request", "deadline"),
        case(
            "a drain deadline in the past",
            "POST",
            "/api/v1/nodes/nope/drain",
        )
        .json(r#"{"deadline":"2001-01-01T00:00:00Z"}"#)
        .want(400, "bad_request", "past"),
        case(
            "a drain deadline too far",
            "POST",
            "/api/v1/nodes/nope/drain",
        )
        .json(r#"{"deadline":99999999999}"#)
        .want(400, "bad_request", "deadline"),
        case("an unknown drain field", "POST", "/api/v1/nodes/nope/drain")
            .json(r#"{"deadlin":5}"#)
            .want(400, "bad_request", "deadlin"),
        case("an unknown node", "GET", "/api/v1/nodes/nope").want(404, "not_found", "nope"),
        // Session queries.
        case("state=bogus", "GET", "/api/v1/sessions?state=bogus").want(
            400,
            "bad_request",
            "state",
        ),
        case("state=", "GET", "/api/v1/sessions?state=").want(400, "bad_request", "state"),
        case("title_id=../x", "GET", "/api/v1/sessions?title_id=../x").want(
            400,
            "bad_request",
            "title_id",
        ),
        case("an unknown parameter", "GET", "/api/v1/sessions?colour=red").want(
            400,
            "bad_request",
            "colour",
        ),
        case(
            "state twice",
            "GET",
            "/api/v1/sessions?state=ready&state=ended",
        )
        .want(400, "bad_request", "state"),
        // Sessions by id.
        case(
            "an unknown session",
            "GET",
            "/api/v1/sessions/ses_0000000000000000",
        )
        .want(404, "not_found", "no session here"),
        case(
            "an unknown session",
            "DELETE",
            "/api/v1/sessions/ses_0000000000000000",
        )
        .want(404, "not_found", "no session here"),
        case(
            "an unknown session",
            "GET",
            "/api/v1/sessions/ses_0000000000000000/events",
        )
        .want(404, "not_found", "no session here"),
        case(
            "a session id without its prefix",
            "GET",
            "/api/v1/sessions/t1",
        )
        // A session is not named to whoever cannot see it: plain words, no id.
        .want(404, "not_found", "no session here"),
        // No such endpoint or method.
        case("no such endpoint", "GET", "/api/v1/nothing").want(404, "not_found", ""),
    ];
    w.check_all(&cases).await;
    w.finish().await;
}

/// A value of the wrong type for a field that takes one of a few names (`visibility`, `role`)
/// is valid JSON: the message names the field, as for every other field.
async fn wrong_types_for_named_values_name_the_field(backend: Backend) {
    let w = World::new(&backend, "bad-enums").await;
    let cases = vec![
        case("visibility 5", "PATCH", "/api/v1/titles/t1")
            .json(r#"{"visibility":5}"#)
            .want(400, "bad_request", "visibility"),
        case("visibility true", "POST", "/api/v1/titles")
            .json(r#"{"id":"t9","name":"t9","application_id":"demo","visibility":true}"#)
            .want(400, "bad_request", "visibility"),
        case("visibility []", "POST", "/api/v1/titles")
            .json(r#"{"id":"t9","name":"t9","application_id":"demo","visibility":[]}"#)
            .want(400, "bad_request", "visibility"),
        case("role 1", "POST", "/api/v1/tokens")
            .json(r#"{"name":"x","role":1}"#)
            .want(400, "bad_request", "role"),
    ];
    w.check_all(&cases).await;
    w.finish().await;
}

/// A NUL character in a text field is bad input on every database (PostgreSQL cannot store
/// it in TEXT): a 400 naming the field, never a database error.
async fn nul_characters_in_text_fields_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-nul").await;
    let t = |label: &str, field: &str| {
        let mut body = json!({"id": "t9", "name": "t9", "application_id": "demo"});
        body[field] = json!(match field {
            "image_url" => "https://x.example/a\u{0}b.png",
            _ => "a\u{0}b",
        });
        case(label, "POST", "/api/v1/titles").json(body.to_string())
    };
    let cases = vec![
        t("NUL in name", "name").want(400, "bad_request", "name"),
        t("NUL in description", "description").want(400, "bad_request", "description"),
        t("NUL in image_url", "image_url").want(400, "bad_request", "image_url"),
        case("NUL in name", "PATCH", "/api/v1/titles/t1")
            .json(r#"{"name":"a\u0000b"}"#)
            .want(400, "bad_request", "name"),
        case("NUL in description", "PATCH", "/api/v1/titles/t1")
            .json(r#"{"description":"a\u0000b"}"#)
            .want(400, "bad_request", "description"),
        case("NUL in a token's name", "POST", "/api/v1/tokens")
            .json(r#"{"name":"a\u0000b","role":"user"}"#)
            .want(400, "bad_request", "name"),
        case("NUL in a node token's name", "POST", "/api/v1/node-tokens")
            .json(r#"{"name":"a\u0000b"}"#)
            .want(400, "bad_request", "name"),
    ];
    w.check_all(&cases).await;
    w.finish().await;
}

/// A method an endpoint does not have: 405 with the API's error body, nothing changed.
async fn wrong_methods_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-methods").await;
    let cases = [
        ("PUT", "/api/v1/titles/t1"),
        ("POST", "/api/v1/titles/t1"),
        ("DELETE", "/api/v1/titles"),
        ("PATCH", "/api/v1/sessions"),
        ("PUT", "/api/v1/sessions/ses_0000000000000000"),
        ("DELETE", "/api/v1/nodes/n1"),
        ("GET", "/api/v1/nodes/n1/drain"),
        ("POST", "/healthz"),
    ];
    let mut failed = Vec::new();
    for (method, path) in cases {
        let check = w.check_refused(method, path, br#"{"name":"x"}"#, &[405]);
        note_failure(check, &mut failed).await;
    }
    assert_all_passed(&failed, cases.len());
    w.finish().await;
}

/// Odd ids in paths: never a 500, never a file, always the API's error body.
async fn odd_paths_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-paths").await;
    // Under limits.max_uri_bytes (8 KiB): longer targets are answered 414 by the listener
    // (tests/listener_limits.rs).
    let long = "a".repeat(4_000);
    let mut cases = vec![
        case("..", "GET", "/api/v1/sessions/../x").want(404, "not_found", ""),
        case("..", "GET", "/api/v1/sessions/..").want(404, "not_found", ""),
        case("..", "DELETE", "/api/v1/sessions/..").want(404, "not_found", ""),
        case("%2e%2e%2f", "GET", "/api/v1/titles/%2e%2e%2fx").want(404, "not_found", ""),
        case("%2F", "GET", "/api/v1/titles/a%2Fb").want(404, "not_found", ""),
        case("%00", "GET", "/api/v1/titles/%00").want(404, "not_found", ""),
        case("%00", "GET", "/api/v1/titles/t1%00").want(404, "not_found", ""),
        case("%00", "DELETE", "/api/v1/titles/%00").want(404, "not_found", ""),
        case("%00", "PATCH", "/api/v1/titles/%00")
            .json(r#"{"name":"x"}"#)
            .want(404, "not_found", ""),
        case("%00", "GET", "/api/v1/nodes/%00").want(404, "not_found", ""),
        case("%00", "POST", "/api/v1/nodes/%00/drain").want(404, "not_found", ""),
        case("%00", "GET", "/api/v1/sessions/%00/events").want(404, "not_found", ""),
        case("SQL", "GET", "/api/v1/sessions/ses_'%20OR%20'1'='1").want(404, "not_found", ""),
        case("SQL", "DELETE", "/api/v1/titles/t1'%20OR%20'1'='1").want(404, "not_found", ""),
        case("unicode", "GET", "/api/v1/titles/%C3%A9t%C3%A9").want(404, "not_found", ""),
        case("4000 characters", "GET", format!("/api/v1/titles/{long}")).want(404, "not_found", ""),
        case(
            "4000 characters",
            "GET",
            format!("/api/v1/sessions/ses_{long}"),
        )
        .want(404, "not_found", ""),
        case(
            "4000 characters",
            "DELETE",
            format!("/api/v1/sessions/ses_{long}"),
        )
        .want(404, "not_found", ""),
        case("4000 characters", "GET", format!("/api/v1/nodes/{long}")).want(404, "not_found", ""),
        case("4000 characters", "PATCH", format!("/api/v1/titles/{long}"))
            .json(r#"{"name":"x"}"#)
            .want(404, "not_found", ""),
    ];
    for c in &mut cases {
        c.label = format!("a path with {}", c.label);
    }
    w.check_all(&cases).await;
    w.finish().await;
}

/// Percent-encodings that are not UTF-8 are refused with the API's error body.
async fn non_utf8_path_ids_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-paths-utf8").await;
    let cases = [
        ("GET", "/api/v1/titles/%FF"),
        ("PATCH", "/api/v1/titles/%FF"),
        ("GET", "/api/v1/sessions/%C3"),
        ("DELETE", "/api/v1/sessions/%FF%FE"),
        ("GET", "/api/v1/sessions/%FF/events"),
        ("GET", "/api/v1/nodes/%80"),
        ("POST", "/api/v1/nodes/%80/drain"),
    ];
    let mut failed = Vec::new();
    for (method, path) in cases {
        // 400 or 404: what matters is the error body, and that nothing changed.
        let check = w.check_refused(method, path, br#"{"name":"x"}"#, &[400, 404]);
        note_failure(check, &mut failed).await;
    }
    assert_all_passed(&failed, cases.len());
    w.finish().await;
}

/// A 10 MB body is refused at once, without reading it all, and the server goes on.
async fn huge_bodies_are_refused_quickly(backend: Backend) {
    let w = World::new(&backend, "bad-huge").await;
    let c = &w.coord;
    let before = w.snapshot().await;
    let ten_mb = {
        let mut b = b"{\"title_id\":\"t1\",\"pad\":\"".to_vec();
        b.resize(10 * 1024 * 1024, b'x');
        b.extend_from_slice(b"\"}");
        b
    };

    // Declared as 10 MB but only the first 128 KiB sent: the answer comes without the rest.
    for path in ["/api/v1/sessions", "/api/v1/titles", "/api/v1/titles/t1"] {
        let method = if path.ends_with("t1") {
            "PATCH"
        } else {
            "POST"
        };
        let started = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            c.addr,
            ten_mb.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&ten_mb[..128 * 1024]).await.unwrap();
        let a = read_answer(&mut tcp).await;
        assert_eq!(
            a.status,
            413,
            "{method} {path} (10 MB declared): {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_error(path, a.status, &a.json(), "payload_too_large", "bytes");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    // Chunked, with no length declared.
    let mut tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        c.addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    for chunk in ten_mb[..256 * 1024].chunks(16 * 1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if tcp.write_all(&framed).await.is_err() {
            break; // refused already
        }
    }
    let a = read_answer(&mut tcp).await;
    assert_eq!(
        a.status,
        413,
        "chunked: {}",
        String::from_utf8_lossy(&a.body)
    );

    // All 10 MB sent while the answer is read, as curl or a browser does: 413, quickly.
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let mut req = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        c.addr,
        ten_mb.len()
    )
    .into_bytes();
    req.extend_from_slice(&ten_mb);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&req).await; // cut short once the server has answered
    });
    let a = read_answer(&mut rd).await;
    assert_eq!(a.status, 413, "10 MB: {}", String::from_utf8_lossy(&a.body));
    assert_error("10 MB", 413, &a.json(), "payload_too_large", "bytes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    writer.abort();

    // reqwest (hyper's client) stops at the first failed write and reports that rather than
    // the early answer; either way it must not wait for long.
    let started = Instant::now();
    let resp = c
        .http
        .post(c.url("/api/v1/sessions"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(ten_mb.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 413);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The server still answers, and nothing changed.
    let (s, _) = c.call("GET", "/healthz", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(before, w.snapshot().await);
    w.finish().await;
}

/// Headers that are not what they claim.
async fn bad_headers_are_refused(backend: Backend) {
    let w = World::new(&backend, "bad-headers").await;
    let before = w.snapshot().await;
    for (label, auth) in [
        ("invalid UTF-8", b"Bearer \xff\xfe".to_vec()),
        ("no scheme", ADMIN.as_bytes().to_vec()),
        ("a token with spaces", b"Bearer a b c".to_vec()),
    ] {
        let mut req = b"POST /api/v1/titles HTTP/1.1\r\nAuthorization: ".to_vec();
        req.extend_from_slice(&auth);
        let body = br#"{"id":"t9","name":"t9","application_id":"demo"}"#;
        let mut tcp = tokio::net::TcpStream::connect(w.coord.addr).await.unwrap();
        req.extend_from_slice(
            format!(
                "\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(body);
        tcp.write_all(&req).await.unwrap();
        let a = read_answer(&mut tcp).await;
        assert_eq!(
            a.status,
            401,
            "{label}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_error(label, 401, &a.json(), "unauthorized", "token");
    }
    assert_eq!(before, w.snapshot().await);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_bodies_are_refused_on_every_endpoint() {
    for b in backends() {
        bad_bodies_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_bad_titles_times_or_durations_are_refused() {
    for b in backends() {
        bad_sessions_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_with_bad_fields_are_refused() {
    for b in backends() {
        bad_titles_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_nodes_and_queries_are_refused_with_a_clear_message() {
    for b in backends() {
        bad_tokens_nodes_and_queries_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_typed_visibility_or_role_names_the_field() {
    for b in backends() {
        wrong_types_for_named_values_name_the_field(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_in_text_fields_are_refused_on_every_database() {
    for b in backends() {
        nul_characters_in_text_fields_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_an_endpoint_lacks_gets_an_api_error() {
    for b in backends() {
        wrong_methods_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_in_paths_are_not_found() {
    for b in backends() {
        odd_paths_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_ids_in_paths_get_an_api_error() {
    for b in backends() {
        non_utf8_path_ids_are_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_body_is_refused_quickly_and_the_server_goes_on() {
    for b in backends() {
        huge_bodies_are_refused_quickly(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_unauthorized() {
    for b in backends() {
        bad_headers_are_refused(b).await;
    }
}
