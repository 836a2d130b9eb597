//! Who may call what: every endpoint of `routes::ROUTES` called anonymously, with a garbage token,
//! with a user token and with an admin token, and the answer checked against the route's
//! `Access`; then what each caller may see (private titles, other users' sessions, anonymous
//! sessions only with their owner key) and the event streams' `?token=`. On SQLite, and on PostgreSQL when
//! configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_coordinator::routes::{Access, ROUTES};
use pxs_protocol::api;
use pxs_protocol::node::{Capacity, Hello, NodeId, NodeToCoordinator, SessionId};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
enum As<'a> {
    Anonymous,
    Bearer(&'a str),
    /// A raw `Authorization` header value.
    Header(&'a str),
}

/// An answer: status, JSON body (`Null` for event streams, which are not read), content type.
struct Answer {
    status: u16,
    body: Value,
    content_type: String,
}

/// One request. Event streams are not read (they do not end): the status and headers say enough.
async fn send(coord: &Coord, method: &str, path: &str, who: As<'_>, body: Option<Value>) -> Answer {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = coord
        .http
        .request(m, coord.url(path))
        .timeout(Duration::from_secs(20));
    match who {
        As::Anonymous => {}
        As::Bearer(t) => r = r.bearer_auth(t),
        As::Header(h) => r = r.header("authorization", h),
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("text/event-stream") {
        return Answer {
            status,
            body: Value::Null,
            content_type,
        };
    }
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        content_type,
    }
}

/// Asserts `a` is the API's error shape with `code` and a message.
fn assert_error(a: &Answer, code: &str, what: &str) {
    assert_eq!(
        a.body["error"]["code"].as_str(),
        Some(code),
        "{what}: {} {}",
        a.status,
        a.body
    );
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{what}: no message in {}",
        a.body
    );
}

/// A coordinator with a title, a node, tokens and a session: something behind every `{id}`.
struct World {
    coord: Coord,
    node: Arc<FakeNode>,
    beat: tokio::task::JoinHandle<()>,
    /// A user token, and a second user's.
    user: String,
    user2: String,
}

impl World {
    async fn new(backend: &Backend, name: &str) -> World {
        let db = fresh_database(backend, name).await;
        // The table test makes an anonymous session for each route that needs a fresh one.
        let toml = format!("{FAST_TIMING}[anonymous]\nmax_sessions_per_address = 100\n");
        let coord = Coord::start(&db, &toml).await;
        coord.title("t1", "demo", json!({})).await;
        // Heartbeats keep the node online for as long as the story takes.
        let (node, beat) = online_fake_node(&coord, "n1", "demo", 32).await;
        let user = mint(&coord, "user", "u").await;
        let user2 = mint(&coord, "user", "u2").await;
        World {
            coord,
            node,
            beat,
            user,
            user2,
        }
    }

    async fn create_session(&self, who: As<'_>, title: &str) -> api::Session {
        let a = send(
            &self.coord,
            "POST",
            "/api/v1/sessions",
            who,
            Some(json!({"title_id": title})),
        )
        .await;
        assert_eq!(
            a.status, 201,
            "{who:?} creating a session of {title}: {}",
            a.body
        );
        serde_json::from_value(a.body).unwrap()
    }

    /// A session made by `who`, and the bearer to reach it with: the token, or for an anonymous
    /// caller the owner key that came back.
    async fn own_session(&self, who: As<'_>, title: &str) -> (api::Session, String) {
        let s = self.create_session(who, title).await;
        let bearer = match who {
            As::Bearer(t) => {
                assert_eq!(s.owner_key, None, "a signed-in creator got an owner key");
                t.to_owned()
            }
            _ => s
                .owner_key
                .clone()
                .expect("an anonymous creator gets an owner key"),
        };
        (s, bearer)
    }

    /// A share link of session `id` made by the admin; returns its id.
    async fn link(&self, id: &SessionId) -> String {
        let (st, v) = self
            .coord
            .admin(
                "POST",
                &format!("/api/v1/sessions/{id}/links"),
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// The session and link a request of `who` to `method route` names: `mine`, or a fresh
    /// session of `who` where the call ends it; a fresh link where the route names one.
    async fn target(
        &self,
        who: As<'_>,
        mine: &api::Session,
        route: &str,
        method: &str,
    ) -> (api::Session, String) {
        let s = if route == "/api/v1/sessions/{id}" && method == "delete" {
            self.own_session(who, "t1").await.0
        } else {
            mine.clone()
        };
        let link = if route.contains("{link_id}") {
            self.link(&s.id).await
        } else {
            "lnk_none".to_owned()
        };
        (s, link)
    }

    async fn finish(mut self) {
        self.beat.abort();
        self.coord.stop().await;
        drop(self.node);
    }
}

/// Mints an API token of `role` as admin.
async fn mint(coord: &Coord, role: &str, name: &str) -> String {
    let (s, v) = coord
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": name, "role": role})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["role"], role, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// A fresh token of the kind `route` revokes (`/api/v1/tokens/{id}` or
/// `/api/v1/node-tokens/{id}`), minted by the admin; returns its id.
async fn revocable(coord: &Coord, route: &str, tag: &str) -> Option<String> {
    let (path, body) = if route.starts_with("/api/v1/tokens/") {
        (
            "/api/v1/tokens",
            json!({"name": format!("revoke {tag}"), "role": "user"}),
        )
    } else if route.starts_with("/api/v1/node-tokens/") {
        (
            "/api/v1/node-tokens",
            json!({"name": format!("revoke {tag}")}),
        )
    } else {
        return None;
    };
    let (s, v) = coord.admin("POST", path, Some(body)).await;
    assert_eq!(s, 201, "{v}");
    Some(v["id"].as_str().unwrap().to_owned())
}

/// The request that exercises `(method, route)` for caller `tag`: the route with real ids in
/// place of `{id}` (`session` for sessions) and `{link_id}`, and a valid body where the endpoint
/// takes one, so an allowed caller succeeds.
fn request_for(
    method: &str,
    route: &str,
    session: &SessionId,
    link: &str,
    tag: &str,
) -> (String, Option<Value>) {
    let id = if route.starts_with("/api/v1/titles/") {
        // Deleting takes a title made for it, so `t1` stays for the others.
        if method == "delete" { "gone" } else { "t1" }.to_owned()
    } else if route.starts_with("/api/v1/nodes/") {
        "n1".to_owned()
    } else {
        session.to_string()
    };
    let path = route
        .replace("{id}", &id)
        .replace("{link_id}", link)
        .replace("{*path}", "app.css");
    let body = match (method, route) {
        ("post", "/api/v1/titles") => Some(json!({
            "id": format!("new-{tag}"), "name": "new", "application_id": "demo"
        })),
        ("patch", "/api/v1/titles/{id}") => Some(json!({"description": format!("by {tag}")})),
        ("post", "/api/v1/node-tokens") => Some(json!({"name": format!("node of {tag}")})),
        ("post", "/api/v1/tokens") => Some(json!({"name": format!("of {tag}"), "role": "user"})),
        ("post", "/api/v1/sessions") => Some(json!({"title_id": "t1"})),
        ("post", "/api/v1/sessions/{id}/links") => Some(json!({"role": "viewer"})),
        _ => None,
    };
    (path, body)
}

/// A path about one session (`/api/v1/sessions/{id}…`): for a session's owner and admins.
fn about_a_session(route: &str) -> bool {
    route.starts_with("/api/v1/sessions/{id}")
}

/// Every route of the table, as each kind of caller. The routes about one session are called on
/// a session of the caller's own (an anonymous caller with the owner key its session came with),
/// a fresh one where the call ends it; without its key an anonymous caller finds none.
async fn every_route_checks_its_role(backend: Backend) {
    let w = World::new(&backend, "roles-table").await;
    let c = &w.coord;
    c.title("gone", "demo", json!({})).await;
    let (anon_s, anon_key) = w.own_session(As::Anonymous, "t1").await;
    let (user_s, _) = w.own_session(As::Bearer(&w.user), "t1").await;
    let admin2 = mint(c, "admin", "a2").await;
    assert!(admin2.starts_with("pxs_adm_"), "{admin2}");
    assert!(w.user.starts_with("pxs_usr_"), "{}", w.user);
    assert!(anon_key.starts_with("pxs_key_"), "{anon_key}");

    let mut checked = 0;
    for r in ROUTES {
        let (method, route, access) = (r.method.as_str(), r.path, r.access);
        let upper = method.to_uppercase();
        let what = |who: &str| format!("{upper} {route} ({access:?}) as {who}");
        if route == "/api/v1/nodes/link" {
            continue; // a WebSocket with node tokens: `the_node_link_takes_node_tokens_only`
        }

        // Anonymous, without a key: nothing about a session is theirs to see.
        let (s, link) = w.target(As::Anonymous, &anon_s, route, method).await;
        let (mut path, body) = request_for(method, route, &s.id, &link, "anon");
        if let Some(id) = revocable(c, route, "anon").await {
            path = route.replace("{id}", &id);
        }
        let a = send(c, &upper, &path, As::Anonymous, body.clone()).await;
        match access {
            Access::Admin | Access::User => {
                assert_eq!(a.status, 401, "{}: {}", what("anonymous"), a.body);
                assert_error(&a, "unauthorized", &what("anonymous"));
            }
            Access::Anyone if about_a_session(route) => {
                assert_eq!(
                    a.status,
                    404,
                    "{}: {}",
                    what("anonymous without the key"),
                    a.body
                );
                assert_error(&a, "not_found", &what("anonymous without the key"));
                // With the owner key the session came with, the same anonymous visitor may.
                let key = if s.id == anon_s.id {
                    anon_key.clone()
                } else {
                    s.owner_key.clone().unwrap()
                };
                let a = send(c, &upper, &path, As::Bearer(&key), body).await;
                assert!(
                    (200..300).contains(&a.status),
                    "{}: {} {}",
                    what("anonymous with the owner key"),
                    a.status,
                    a.body
                );
            }
            Access::Anyone | Access::Public => {
                assert!(
                    (200..300).contains(&a.status),
                    "{}: {} {}",
                    what("anonymous"),
                    a.status,
                    a.body
                );
            }
        }

        // A token nobody minted, and Authorization headers that are not bearer tokens.
        for (label, who) in [
            (
                "a garbage token",
                As::Bearer("pxs_usr_garbage0000000000000000000000"),
            ),
            (
                "a session key nobody minted",
                As::Bearer("pxs_key_garbage0000000000000000000000"),
            ),
            ("a token over 256 characters", As::Bearer(&"x".repeat(300))),
            ("basic auth", As::Header("Basic dXNlcjpwYXNz")),
            ("an empty bearer", As::Header("Bearer ")),
            ("the node token", As::Bearer(NODE_TOKEN)),
        ] {
            let (path, body) = request_for(method, route, &anon_s.id, &link, "garbage");
            let a = send(c, &upper, &path, who, body).await;
            if access == Access::Public {
                assert!(
                    (200..300).contains(&a.status),
                    "{}: {} {}",
                    what(label),
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(a.status, 401, "{}: {}", what(label), a.body);
                assert_error(&a, "unauthorized", &what(label));
            }
        }

        // A user, on a session of theirs.
        let (s, link) = w.target(As::Bearer(&w.user), &user_s, route, method).await;
        let (mut path, body) = request_for(method, route, &s.id, &link, "user");
        if let Some(id) = revocable(c, route, "user").await {
            path = route.replace("{id}", &id);
        }
        let a = send(c, &upper, &path, As::Bearer(&w.user), body).await;
        if access == Access::Admin {
            assert_eq!(a.status, 403, "{}: {}", what("user"), a.body);
            assert_error(&a, "forbidden", &what("user"));
        } else {
            assert!(
                (200..300).contains(&a.status),
                "{}: {} {}",
                what("user"),
                a.status,
                a.body
            );
        }
        if about_a_session(route) {
            // Not on the anonymous visitor's session: it does not exist for them.
            let (path, body) = request_for(method, route, &anon_s.id, &link, "user");
            let a = send(c, &upper, &path, As::Bearer(&w.user), body).await;
            assert_eq!(a.status, 404, "{}: {}", what("another's user"), a.body);
        }

        // Admins: the configured token and one minted through the API, on anyone's session.
        for (label, token) in [("admin", ADMIN), ("minted admin", admin2.as_str())] {
            let tag = label.replace(' ', "-");
            let (s, link) = w.target(As::Bearer(ADMIN), &anon_s, route, method).await;
            let (mut path, body) = request_for(method, route, &s.id, &link, &tag);
            if route == "/api/v1/titles/{id}" && method == "delete" && label != "admin" {
                // The first admin deleted `gone`: make another for the second.
                c.title("gone2", "demo", json!({})).await;
                path = path.replace("gone", "gone2");
            }
            if let Some(id) = revocable(c, route, &tag).await {
                path = route.replace("{id}", &id);
            }
            let a = send(c, &upper, &path, As::Bearer(token), body).await;
            assert!(
                (200..300).contains(&a.status),
                "{}: {} {}",
                what(label),
                a.status,
                a.body
            );
        }
        checked += 1;
    }
    assert_eq!(checked + 1, ROUTES.len());

    // The effects of the calls that were refused did not happen: titles `new-anon`,
    // `new-garbage`, `new-user` do not exist, the first user minted no token.
    for id in ["new-anon", "new-garbage", "new-user"] {
        let (st, v) = c.admin("GET", &format!("/api/v1/titles/{id}"), None).await;
        assert_eq!(
            st, 404,
            "{id} was created by a caller without the right: {v}"
        );
    }
    for id in ["new-admin", "new-minted-admin"] {
        let (st, v) = c.admin("GET", &format!("/api/v1/titles/{id}"), None).await;
        assert_eq!(st, 200, "{v}");
    }
    let (_, t1) = c.admin("GET", "/api/v1/titles/t1", None).await;
    assert_eq!(t1["description"], "by minted-admin", "{t1}");
    w.finish().await;
}

/// `?token=` works for the event streams only (EventSource cannot set headers).
async fn tokens_in_the_query_only_for_event_streams(backend: Backend) {
    let w = World::new(&backend, "roles-query").await;
    let c = &w.coord;
    let a = send(
        c,
        "GET",
        &format!("/api/v1/nodes?token={ADMIN}"),
        As::Anonymous,
        None,
    )
    .await;
    assert_eq!(a.status, 401, "GET /api/v1/nodes?token=admin: {}", a.body);
    let a = send(
        c,
        "POST",
        &format!("/api/v1/titles?token={ADMIN}"),
        As::Anonymous,
        Some(json!({"id": "q", "name": "q", "application_id": "demo"})),
    )
    .await;
    assert_eq!(a.status, 401, "POST /api/v1/titles?token=admin: {}", a.body);
    let (st, _) = c.admin("GET", "/api/v1/titles/q", None).await;
    assert_eq!(st, 404);

    // GET /api/v1/events: admin only, by header or query.
    for (label, path, who, want) in [
        ("anonymous", "/api/v1/events".to_owned(), As::Anonymous, 401),
        (
            "garbage ?token",
            "/api/v1/events?token=garbage-token-0123456789".to_owned(),
            As::Anonymous,
            401,
        ),
        (
            "user ?token",
            format!("/api/v1/events?token={}", w.user),
            As::Anonymous,
            403,
        ),
        (
            "user header",
            "/api/v1/events".to_owned(),
            As::Bearer(&w.user),
            403,
        ),
        (
            "admin header",
            "/api/v1/events".to_owned(),
            As::Bearer(ADMIN),
            200,
        ),
    ] {
        let a = send(c, "GET", &path, who, None).await;
        assert_eq!(a.status, want, "GET /api/v1/events as {label}: {}", a.body);
        if want == 200 {
            assert!(
                a.content_type.starts_with("text/event-stream"),
                "{}",
                a.content_type
            );
        } else {
            assert_error(
                &a,
                if want == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                },
                label,
            );
        }
    }

    // With the admin token in the query it streams: a session created now is told.
    let resp = c
        .http
        .get(c.url(&format!("/api/v1/events?token={ADMIN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let s = w.create_session(As::Bearer(&w.user), "t1").await;
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("event: session") && text.contains(s.id.as_str()) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "no session event on /api/v1/events: {text}"
    );
    drop(stream);

    // A session's stream with `?token=`: its owner yes, another user no (it does not exist for
    // them), and not anonymously either.
    let path = format!("/api/v1/sessions/{}/events", s.id);
    let a = send(
        c,
        "GET",
        &format!("{path}?token={}", w.user),
        As::Anonymous,
        None,
    )
    .await;
    assert_eq!(a.status, 200, "owner with ?token: {}", a.body);
    let a = send(
        c,
        "GET",
        &format!("{path}?token={}", w.user2),
        As::Anonymous,
        None,
    )
    .await;
    assert_eq!(a.status, 404, "another user with ?token: {}", a.body);
    assert_error(&a, "not_found", "another user's session stream");
    let a = send(c, "GET", &path, As::Anonymous, None).await;
    assert_eq!(
        a.status, 404,
        "anonymous on a user's session stream: {}",
        a.body
    );
    let a = send(
        c,
        "GET",
        &format!("{path}?token=garbage-0123456789"),
        As::Anonymous,
        None,
    )
    .await;
    assert_eq!(
        a.status, 401,
        "garbage ?token on a session stream: {}",
        a.body
    );
    w.finish().await;
}

/// The node link takes node tokens, and refuses anything else before the upgrade.
async fn the_node_link_takes_node_tokens_only(backend: Backend) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let w = World::new(&backend, "roles-link").await;
    let c = &w.coord;
    let user = w.user.clone();
    for (label, auth) in [
        ("no token", None),
        (
            "a garbage token",
            Some("Bearer garbage-node-token-0123456789".to_owned()),
        ),
        ("the admin API token", Some(format!("Bearer {ADMIN}"))),
        ("a user API token", Some(format!("Bearer {user}"))),
        ("basic auth", Some("Basic dXNlcjpwYXNz".to_owned())),
    ] {
        let mut req = format!("ws://{}/api/v1/nodes/link", c.addr)
            .into_client_request()
            .unwrap();
        if let Some(a) = auth {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("the node link accepted {label}"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401, "node link with {label}");
            }
            Err(e) => panic!("node link with {label}: {e}"),
        }
    }
    // No node came of it: still just n1.
    let (_, v) = c.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
    // A node token minted through the API is accepted.
    let (s, v) = c
        .admin("POST", "/api/v1/node-tokens", Some(json!({"name": "n2"})))
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("pxs_node_"), "{token}");
    let (ws, resp) = node_link(c, token).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    drop(ws);
    w.finish().await;
}

/// Opens `c`'s node link with `token` as the bearer.
async fn node_link(
    c: &Coord,
    token: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/nodes/link", c.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await
}

/// A node's hello, as a real session server sends it (no application, one slot).
fn hello_as(node: &str) -> NodeToCoordinator {
    NodeToCoordinator::Hello(Hello {
        node: NodeId::parse(node).unwrap(),
        version: "test".into(),
        public_url: format!("http://{node}.invalid"),
        upstream_url: None,
        capacity: Capacity {
            max_sessions: 1,
            max_sessions_per_gpu: 0,
        },
        applications: vec![],
        gpus: vec![],
        sessions: vec![],
        draining: false,
    })
}

/// Reads a node link until it closes (at most 5 s): the close frame's reason, `None` without
/// one; `Err` if it stays open.
async fn close_reason<S>(ws: &mut S) -> Result<Option<String>, tokio::time::error::Elapsed>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
}

/// A node token bound to a node admits that node only.
async fn bound_node_tokens_admit_their_node_only(backend: Backend) {
    let w = World::new(&backend, "roles-bound").await;
    let c = &w.coord;
    let (s, v) = c
        .admin(
            "POST",
            "/api/v1/node-tokens",
            Some(json!({"name": "the machine in rack 7", "node": "gpu-7"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["node"], "gpu-7", "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (_, list) = c.admin("GET", "/api/v1/node-tokens", None).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == v["id"] && t["node"] == "gpu-7"),
        "{list}"
    );
    // Another node's name: refused with the reason, and no trace of that node.
    let (mut ws, _) = node_link(c, &token).await.unwrap();
    ws.send(hello_as("gpu-8").to_json().into()).await.unwrap();
    let reason = close_reason(&mut ws)
        .await
        .expect("a hello as another node is refused");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("bound to another node")),
        "close reason: {reason:?}"
    );
    assert_eq!(c.node_state("gpu-8").await, None);
    // Its own name: welcome.
    let (mut ws, _) = node_link(c, &token).await.unwrap();
    ws.send(hello_as("gpu-7").to_json().into()).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(welcome.contains("welcome"), "{welcome}");
    assert_eq!(c.node_state("gpu-7").await, Some(api::NodeState::Online));
    drop(ws);
    w.finish().await;
}

/// The error body of a refused node link is the API's error shape, like every other error.
async fn the_node_link_refusal_is_an_api_error(backend: Backend) {
    let w = World::new(&backend, "roles-link-error").await;
    let c = &w.coord;
    let mut problems = Vec::new();
    // A WebSocket handshake without a token: 401, as `unauthorized`.
    let resp = c
        .http
        .get(c.url("/api/v1/nodes/link"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if status != 401 || v["error"]["code"] != "unauthorized" {
        problems.push(format!(
            "handshake without a node token: want 401 unauthorized in the API's error body, \
             got {status} {text:?}"
        ));
    }
    // A plain GET, not a handshake: some 4xx, in the API's error body.
    let a = send(c, "GET", "/api/v1/nodes/link", As::Anonymous, None).await;
    if !(400..500).contains(&a.status) || a.body["error"]["code"].as_str().is_none_or(str::is_empty)
    {
        problems.push(format!(
            "plain GET: want a 4xx in the API's error body, got {} {} ({})",
            a.status, a.body, a.content_type
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    w.finish().await;
}

/// Private titles are for signed-in users; anonymous callers cannot tell they exist.
async fn private_titles_are_invisible_to_anonymous_callers(backend: Backend) {
    let w = World::new(&backend, "roles-private").await;
    let c = &w.coord;
    c.title("secret", "demo", json!({"visibility": "private"}))
        .await;
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let a = send(c, "GET", "/api/v1/titles", As::Anonymous, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(ids(&a.body), ["t1"], "{}", a.body);
    let a = send(c, "GET", "/api/v1/titles/secret", As::Anonymous, None).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_error(&a, "not_found", "anonymous GET of a private title");
    // The same answer as for a title that does not exist.
    let b = send(c, "GET", "/api/v1/titles/nothing", As::Anonymous, None).await;
    assert_eq!(
        (b.status, b.body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let a = send(
        c,
        "POST",
        "/api/v1/sessions",
        As::Anonymous,
        Some(json!({"title_id": "secret"})),
    )
    .await;
    assert_eq!(
        a.status, 404,
        "anonymous session of a private title: {}",
        a.body
    );
    assert_error(&a, "not_found", "anonymous session of a private title");

    for token in [w.user.as_str(), ADMIN] {
        let a = send(c, "GET", "/api/v1/titles", As::Bearer(token), None).await;
        let mut got = ids(&a.body);
        got.sort();
        assert_eq!(got, ["secret", "t1"], "{}", a.body);
        let a = send(c, "GET", "/api/v1/titles/secret", As::Bearer(token), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["visibility"], "private");
    }
    let s = w.create_session(As::Bearer(&w.user), "secret").await;
    assert_eq!(s.title_id.as_str(), "secret");
    // No anonymous session was made of it.
    let (_, all) = c
        .admin("GET", "/api/v1/sessions?title_id=secret", None)
        .await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");

    // Made public, anonymous callers see it; private again, they do not.
    let (st, v) = c
        .admin(
            "PATCH",
            "/api/v1/titles/secret",
            Some(json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let a = send(c, "GET", "/api/v1/titles/secret", As::Anonymous, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (st, v) = c
        .admin(
            "PATCH",
            "/api/v1/titles/secret",
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let a = send(c, "GET", "/api/v1/titles/secret", As::Anonymous, None).await;
    assert_eq!(a.status, 404, "{}", a.body);
    w.finish().await;
}

/// Users see and end only their own sessions; admins all; an anonymous session only with its
/// owner key.
async fn users_see_only_their_own_sessions(backend: Backend) {
    let w = World::new(&backend, "roles-owners").await;
    let c = &w.coord;
    let mine = w.create_session(As::Bearer(&w.user), "t1").await;
    let theirs = w.create_session(As::Bearer(&w.user2), "t1").await;
    let (anon, anon_key) = w.own_session(As::Anonymous, "t1").await;
    let by_admin = w.create_session(As::Bearer(ADMIN), "t1").await;
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |v: &[&SessionId]| -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };

    // The lists.
    let a = send(c, "GET", "/api/v1/sessions", As::Bearer(&w.user), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(ids(&a.body), sorted(&[&mine.id]), "{}", a.body);
    let a = send(c, "GET", "/api/v1/sessions", As::Bearer(&w.user2), None).await;
    assert_eq!(ids(&a.body), sorted(&[&theirs.id]), "{}", a.body);
    let a = send(c, "GET", "/api/v1/sessions", As::Bearer(ADMIN), None).await;
    assert_eq!(
        ids(&a.body),
        sorted(&[&mine.id, &theirs.id, &anon.id, &by_admin.id]),
        "{}",
        a.body
    );
    let a = send(
        c,
        "GET",
        "/api/v1/sessions?state=starting",
        As::Bearer(&w.user),
        None,
    )
    .await;
    assert!(
        ids(&a.body).iter().all(|i| i == mine.id.as_str()),
        "a filter showed another's session: {}",
        a.body
    );
    let a = send(c, "GET", "/api/v1/sessions", As::Anonymous, None).await;
    assert_eq!(a.status, 401, "{}", a.body);

    // Another user's session does not exist for a user, nor for anonymous callers; an
    // anonymous session does not exist for anyone without its key, not even for the address
    // that made it; a key opens its own session only.
    for (label, who) in [
        ("user", As::Bearer(&w.user)),
        ("anonymous", As::Anonymous),
        ("the owner key of another session", As::Bearer(&anon_key)),
    ] {
        for path in [
            format!("/api/v1/sessions/{}", theirs.id),
            format!("/api/v1/sessions/{}/events", theirs.id),
            format!("/api/v1/sessions/{}", by_admin.id),
        ] {
            let a = send(c, "GET", &path, who, None).await;
            assert_eq!(a.status, 404, "GET {path} as {label}: {}", a.body);
            assert_error(&a, "not_found", &path);
            // The same message as for a session that does not exist: nothing leaks.
            assert!(
                a.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("no session"),
                "{}",
                a.body
            );
        }
        let path = format!("/api/v1/sessions/{}", theirs.id);
        let a = send(c, "DELETE", &path, who, None).await;
        assert_eq!(a.status, 404, "DELETE {path} as {label}: {}", a.body);
    }
    for (label, who) in [
        ("user", As::Bearer(&w.user)),
        ("other user", As::Bearer(&w.user2)),
        ("anonymous", As::Anonymous),
    ] {
        for (method, path) in [
            ("GET", format!("/api/v1/sessions/{}", anon.id)),
            ("GET", format!("/api/v1/sessions/{}/events", anon.id)),
            ("GET", format!("/api/v1/sessions/{}/links", anon.id)),
            ("DELETE", format!("/api/v1/sessions/{}", anon.id)),
        ] {
            let a = send(c, method, &path, who, None).await;
            assert_eq!(a.status, 404, "{method} {path} as {label}: {}", a.body);
            assert_error(&a, "not_found", &path);
        }
    }
    // ...and they still run.
    for id in [&theirs.id, &anon.id] {
        let s = c.session(id).await;
        assert!(!s.state.is_final(), "a DELETE of another ended it: {s:?}");
    }

    // Own sessions are reachable: by the creating token, an anonymous one by its owner key.
    for (label, who, id) in [
        ("owner", As::Bearer(&w.user), &mine.id),
        ("owner key on anonymous", As::Bearer(&anon_key), &anon.id),
        ("admin on user", As::Bearer(ADMIN), &theirs.id),
        ("admin on anonymous", As::Bearer(ADMIN), &anon.id),
    ] {
        let a = send(c, "GET", &format!("/api/v1/sessions/{id}"), who, None).await;
        assert_eq!(a.status, 200, "{label}: {}", a.body);
        assert_eq!(a.body["id"], id.as_str());
        let a = send(
            c,
            "GET",
            &format!("/api/v1/sessions/{id}/events"),
            who,
            None,
        )
        .await;
        assert_eq!(a.status, 200, "{label} (events): {}", a.body);
    }
    // A user's session is not in the anonymous caller's reach even though they share an
    // address.
    let a = send(
        c,
        "GET",
        &format!("/api/v1/sessions/{}", mine.id),
        As::Anonymous,
        None,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);

    // Ending: the owner may, an admin may end anyone's.
    let a = send(
        c,
        "DELETE",
        &format!("/api/v1/sessions/{}", mine.id),
        As::Bearer(&w.user),
        None,
    )
    .await;
    assert!(matches!(a.status, 200 | 202), "{}", a.body);
    let a = send(
        c,
        "DELETE",
        &format!("/api/v1/sessions/{}", theirs.id),
        As::Bearer(ADMIN),
        None,
    )
    .await;
    assert!(matches!(a.status, 200 | 202), "{}", a.body);
    for id in [&mine.id, &theirs.id] {
        c.wait_state(id, api::SessionState::Ended, Duration::from_secs(10))
            .await;
    }
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_requires_its_role() {
    for b in backends() {
        every_route_checks_its_role(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_are_for_event_streams_and_events_are_admin_only() {
    for b in backends() {
        tokens_in_the_query_only_for_event_streams(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_refuses_anything_but_a_node_token() {
    for b in backends() {
        the_node_link_takes_node_tokens_only(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_bound_to_a_node_admit_that_node_only() {
    for b in backends() {
        bound_node_tokens_admit_their_node_only(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_refusal_has_the_api_error_shape() {
    for b in backends() {
        the_node_link_refusal_is_an_api_error(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_titles_are_hidden_from_anonymous_callers() {
    for b in backends() {
        private_titles_are_invisible_to_anonymous_callers(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_their_own_sessions_and_admins_all() {
    for b in backends() {
        users_see_only_their_own_sessions(b).await;
    }
}

async fn revoked_tokens_stop_working_at_once(backend: Backend) {
    let db = fresh_database(&backend, "revoke").await;
    let c = Coord::start(&db, FAST_TIMING).await;
    let (_, v) = c
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "u", "role": "user"})),
        )
        .await;
    let (user_id, user) = (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    // Used once, so the coordinator has it cached.
    assert_eq!(
        c.call("GET", "/api/v1/nodes", Some(&user), None).await.0,
        200
    );
    let (_, list) = c.admin("GET", "/api/v1/tokens", None).await;
    let items = list["items"].as_array().unwrap();
    assert!(items.iter().any(|t| t["id"] == user_id.as_str()), "{list}");
    assert!(
        !list.to_string().contains(&user),
        "a listing never shows a secret"
    );

    let (s, v) = c
        .admin("DELETE", &format!("/api/v1/tokens/{user_id}"), None)
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = c.call("GET", "/api/v1/nodes", Some(&user), None).await;
    assert_eq!(s, 401, "a revoked token is refused at once: {v}");
    let (s, _) = c
        .admin("DELETE", &format!("/api/v1/tokens/{user_id}"), None)
        .await;
    assert_eq!(s, 404);

    // The configured admin token is the only admin: it cannot be revoked.
    let admin_id = items.iter().find(|t| t["role"] == "admin").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = c
        .admin("DELETE", &format!("/api/v1/tokens/{admin_id}"), None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(c.admin("GET", "/api/v1/tokens", None).await.0, 200);

    // A revoked node token no longer opens the node link.
    let (_, v) = c
        .admin(
            "POST",
            "/api/v1/node-tokens",
            Some(json!({"name": "gpu-9"})),
        )
        .await;
    let (node_id, node_token) = (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    let (mut ws, _) = node_link(&c, &node_token).await.unwrap();
    ws.send(hello_as("gpu-9").to_json().into()).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(welcome.contains("welcome"), "{welcome}");
    assert_eq!(c.node_state("gpu-9").await, Some(api::NodeState::Online));
    let (s, _) = c
        .admin("DELETE", &format!("/api/v1/node-tokens/{node_id}"), None)
        .await;
    assert_eq!(s, 204);
    // The link that came in with it is closed too: a revoked node is out now, not at its next
    // reconnect.
    let closed = close_reason(&mut ws)
        .await
        .expect("the link of a revoked node token stays open");
    assert!(
        closed.as_deref().is_some_and(|r| r.contains("revoked")),
        "close reason: {closed:?}"
    );
    wait_until(Duration::from_secs(5), || async {
        match c.node_state("gpu-9").await {
            Some(api::NodeState::Offline) => Ok(()),
            other => Err(format!("gpu-9 is {other:?}")),
        }
    })
    .await;
    let err = node_link(&c, &node_token).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_and_the_last_admin_stays() {
    for b in backends() {
        revoked_tokens_stop_working_at_once(b).await;
    }
}

/// The OpenAPI document lists exactly the routes of the table, and every path and method it
/// lists is served: answered by its handler, not by the router's "no such endpoint" fallback or
/// a 405. An unknown path shows what the fallback looks like, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_served_route() {
    let db = fresh_database(&Backend::Sqlite, "routes-openapi").await;
    let mut c = Coord::start(&db, FAST_TIMING).await;
    let doc = send(&c, "GET", "/api/v1/openapi.json", As::Anonymous, None).await;
    assert_eq!(doc.status, 200, "{}", doc.body);
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc.body["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let table: std::collections::BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.replace("{*", "{")))
        .collect();
    assert_eq!(documented, table);

    let fallback = |a: &Answer| a.status == 405 || a.body["error"]["message"] == "no such endpoint";
    let unknown = send(&c, "GET", "/api/v1/no-such-thing", As::Anonymous, None).await;
    assert!(fallback(&unknown), "{} {}", unknown.status, unknown.body);
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "x")
            .replace("{link_id}", "x")
            .replace("{path}", "app.css");
        let a = send(&c, &method.to_uppercase(), &concrete, As::Anonymous, None).await;
        assert!(
            !fallback(&a),
            "{method} {path} is documented but not served: {} {}",
            a.status,
            a.body
        );
    }
    c.stop().await;
}
