//! Share links and the owner key (issue 11): an anonymous session is reachable only with the
//! owner key its creation returned (also after a restart: the key is a row); its owner makes,
//! lists and revokes share links; each key's join URL carries its role, its link, an expiry no
//! later than the link's, and the name asked for; an expired or revoked link is refused; a
//! link's holder can neither end the session nor manage its links; a revocation reaches the
//! session's node, and again after the node links anew; hostile requests store nothing. A fake
//! node and a clock moved by hand. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use pxs_coordinator::ManualClock;
use pxs_coordinator::routes::{Access, ROUTES};
use pxs_protocol::api::{self, SessionState};
use pxs_protocol::node::{CoordinatorToNode, SessionId};
use pxs_protocol::player_token::{self, Claims, Role};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The fake node must stay online whatever the clock does.
const TIMING: &str =
    "[timing]\ntick = \"20ms\"\nheartbeat_ttl = \"1000h\"\nnode_lost_grace = \"1000h\"\n";
const WAIT: Duration = Duration::from_secs(10);

/// A coordinator on a clock moved by hand, a title `demo`, and a fake node that starts what it
/// is told at once.
struct World {
    coord: Coord,
    clock: Arc<ManualClock>,
    node: FakeNode,
}

impl World {
    async fn new(backend: &Backend, name: &str, extra_toml: &str) -> World {
        let db = fresh_database(backend, name).await;
        let t0 = pxs_coordinator::Clock::now_ms(&pxs_coordinator::SystemClock);
        let clock = Arc::new(ManualClock::new(t0));
        let coord = Coord::start_on(
            &db,
            &format!("{extra_toml}{TIMING}"),
            "127.0.0.1:0",
            clock.clone(),
        )
        .await;
        coord.title("demo", "demo", json!({})).await;
        let node = FakeNode::connect(&coord, "n1", "demo", 8, true).await;
        wait_until(WAIT, || async {
            match coord.node_state("n1").await {
                Some(api::NodeState::Online) => Ok(()),
                s => Err(format!("n1 is {s:?}")),
            }
        })
        .await;
        World { coord, clock, node }
    }

    fn now(&self) -> u64 {
        u64::try_from(pxs_coordinator::Clock::now_ms(self.clock.as_ref())).unwrap()
    }

    /// A ready session made anonymously, and its owner key.
    async fn anonymous_session(&self) -> (api::Session, String) {
        let (st, v) = self
            .coord
            .call(
                "POST",
                "/api/v1/sessions",
                None,
                Some(json!({"title_id": "demo"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let s: api::Session = serde_json::from_value(v).unwrap();
        let key = s
            .owner_key
            .clone()
            .expect("an anonymous session has an owner key");
        self.coord
            .wait_state(&s.id, SessionState::Ready, WAIT)
            .await;
        (s, key)
    }

    /// The key the node was given for `id`: the one that verifies its player tokens.
    fn signing_key(&self, id: &SessionId) -> String {
        self.node
            .commands
            .lock()
            .unwrap()
            .iter()
            .find_map(|c| match c {
                CoordinatorToNode::StartSession {
                    session_id,
                    options,
                    ..
                } if session_id == id => Some(options.player_token.clone().unwrap().0),
                _ => None,
            })
            .expect("the node was told to start it")
    }

    /// The claims of a join URL of session `id`, verified with the node's key now.
    fn claims(&self, id: &SessionId, join_url: &str) -> Claims {
        let token = join_url.split("token=").nth(1).unwrap();
        player_token::verify(self.signing_key(id).as_bytes(), token, id, self.now()).unwrap()
    }

    /// `POST /api/v1/sessions/{id}/links` with `bearer`: status and body.
    async fn make_link(&self, id: &SessionId, bearer: &str, body: Value) -> (u16, Value) {
        self.coord
            .call(
                "POST",
                &format!("/api/v1/sessions/{id}/links"),
                Some(bearer),
                Some(body),
            )
            .await
    }

    /// How many session keys (owner keys and links) are stored.
    async fn stored_keys(&self) -> i64 {
        sqlx::Row::try_get(
            &sqlx::query("SELECT COUNT(*) AS n FROM session_keys")
                .fetch_one(self.coord.engine().store.pool())
                .await
                .unwrap(),
            "n",
        )
        .unwrap()
    }

    fn revocations(&self) -> Vec<(SessionId, String)> {
        revocations_of(&self.node)
    }

    async fn finish(mut self) {
        self.coord.stop().await;
        self.node.disconnect();
    }
}

fn revocations_of(node: &FakeNode) -> Vec<(SessionId, String)> {
    node.commands
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| match c {
            CoordinatorToNode::RevokeLink {
                session_id,
                link_id,
            } => Some((session_id.clone(), link_id.clone())),
            _ => None,
        })
        .collect()
}

/// The key in a link's `url` (`…/play/<id>#key=<key>`).
fn key_of(link: &Value) -> String {
    link["url"]
        .as_str()
        .unwrap()
        .split_once("#key=")
        .unwrap()
        .1
        .to_owned()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

fn session_of(v: Value) -> api::Session {
    serde_json::from_value(v).unwrap()
}

/// The first `session` event of an event stream.
async fn first_event(resp: reqwest::Response) -> Value {
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if let Some(data) = text
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .filter(|_| text.contains("\n\n"))
            {
                return serde_json::from_str(data.trim()).unwrap();
            }
        }
        panic!("the stream ended without an event: {text}")
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------

/// An anonymous session: unreadable by its id alone, readable and endable with the owner key,
/// which is a row in the database (so it outlives a restart) holding only the key's hash.
async fn the_owner_key_is_the_anonymous_session(backend: Backend) {
    let db = fresh_database(&backend, "links-owner").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let (node, beat) = online_fake_node(&coord, "n1", "demo", 4).await;
    let (st, v) = coord
        .call(
            "POST",
            "/api/v1/sessions",
            None,
            Some(json!({"title_id": "demo"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let created = session_of(v.clone());
    let key = created.owner_key.clone().unwrap();
    assert!(key.starts_with("pxs_key_") && key.len() == 8 + 52, "{key}");
    assert_eq!(created.role.as_deref(), Some("owner"), "{v}");
    let path = format!("/api/v1/sessions/{}", created.id);

    // Without the key: as if it did not exist, from the very address that made it.
    for p in [
        path.clone(),
        format!("{path}/events"),
        format!("{path}/links"),
    ] {
        let (st, v) = coord.call("GET", &p, None, None).await;
        assert_eq!(st, 404, "GET {p} without the key: {v}");
        assert!(message(&v).contains("no session"), "{v}");
    }
    let (st, _) = coord.call("DELETE", &path, None, None).await;
    assert_eq!(st, 404);
    // A signed-in user does not see it either; an admin does.
    let (_, u) = coord
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "u", "role": "user"})),
        )
        .await;
    let user = u["token"].as_str().unwrap().to_owned();
    assert_eq!(coord.call("GET", &path, Some(&user), None).await.0, 404);
    assert_eq!(
        coord.session(&created.id).await.role.as_deref(),
        Some("owner")
    );

    // With the key: the session, with the owner's join URL once ready.
    coord
        .wait_state(&created.id, SessionState::Ready, WAIT)
        .await;
    let (st, v) = coord.call("GET", &path, Some(&key), None).await;
    assert_eq!(st, 200, "{v}");
    let s = session_of(v);
    assert_eq!((s.role.as_deref(), s.owner_key), (Some("owner"), None));
    assert!(s.join_url.is_some());

    // Stored as a row: its hash, never the key.
    let pool = coord.engine().store.pool();
    let rows = sqlx::query(
        "SELECT id, session_id, role, secret_hash, expires_at, revoked_at FROM session_keys",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let get = |c: &str| sqlx::Row::try_get::<Option<String>, _>(&rows[0], c).unwrap();
    assert!(get("id").unwrap().starts_with("own_"));
    assert_eq!(get("session_id").as_deref(), Some(created.id.as_str()));
    assert_eq!(get("role").as_deref(), Some("owner"));
    assert_eq!(
        get("secret_hash"),
        Some(pxs_coordinator::auth::hash_token(&key))
    );
    for c in ["expires_at", "revoked_at"] {
        let v: Option<i64> = sqlx::Row::try_get(&rows[0], c).unwrap();
        assert_eq!(v, None, "{c}");
    }
    // A signed-in creator gets no owner key: the token is the credential.
    let (st, v) = coord
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&user),
            Some(json!({"title_id": "demo"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert!(v.get("owner_key").is_none(), "{v}");
    let by_user = session_of(v);
    let later = json!({
        "title_id": "demo",
        "start_at": pxs_coordinator::engine::rfc3339(coord.engine().now() + 3_600_000),
        "duration": 60,
    });
    let (st, v) = coord
        .admin("POST", "/api/v1/sessions", Some(later.clone()))
        .await;
    assert_eq!(st, 201, "{v}");
    let by_admin = session_of(v);
    let (st, v) = coord
        .call("POST", "/api/v1/sessions", None, Some(later))
        .await;
    assert_eq!(st, 201, "{v}");
    let other = session_of(v);

    // The owner ends it with the key: recorded as ended by its owner. A user ending their own
    // session, and an admin theirs, are its owner too; an admin ending another's is the admin.
    let (st, v) = coord.call("DELETE", &path, Some(&key), None).await;
    assert!(matches!(st, 200 | 202), "{st} {v}");
    assert_eq!(v["ended_by"], "owner", "{v}");
    for (id, token, by) in [
        (&by_user.id, user.as_str(), "owner"),
        (&by_admin.id, ADMIN, "owner"),
        (&other.id, ADMIN, "admin"),
    ] {
        let (st, v) = coord
            .call(
                "DELETE",
                &format!("/api/v1/sessions/{id}"),
                Some(token),
                None,
            )
            .await;
        assert!(matches!(st, 200 | 202), "{st} {v}");
        assert_eq!(v["ended_by"], by, "{v}");
    }
    coord
        .wait_state(&created.id, SessionState::Ended, WAIT)
        .await;

    // The key, and who ended each, outlive a restart of the coordinator.
    let coord = coord.restart().await;
    let (st, v) = coord.call("GET", &path, Some(&key), None).await;
    assert_eq!(st, 200, "after a restart: {v}");
    let ended = session_of(v);
    assert_eq!(
        (
            ended.state,
            ended.ended_by.as_deref(),
            ended.role.as_deref()
        ),
        (SessionState::Ended, Some("owner"), Some("owner"))
    );
    assert_eq!(
        coord.session(&other.id).await.ended_by.as_deref(),
        Some("admin")
    );
    beat.abort();
    drop(node);
}

/// The owner makes links of each role; each link's key reads the session with its role, and
/// its join URL carries the role, the link, an expiry no later than the link's and the name
/// asked for; the list shows them newest first without secrets; revoking stops the key at once
/// and ends its event stream.
async fn links_are_made_listed_and_revoked(backend: Backend) {
    let w = World::new(&backend, "links-api", "").await;
    let c = &w.coord;
    let (s, owner) = w.anonymous_session().await;
    let t0 = w.now();

    // A viewer link with the default life (a day), a controller link for 2 minutes.
    let (st, viewer) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    assert_eq!(st, 201, "{viewer}");
    w.clock.advance(1);
    let (st, controller) = w
        .make_link(
            &s.id,
            &owner,
            json!({"role": "controller", "expires_in": 120}),
        )
        .await;
    assert_eq!(st, 201, "{controller}");
    let link_id = |l: &Value| l["id"].as_str().unwrap().to_owned();
    for (l, role, life) in [
        (&viewer, "viewer", 86_400_000),
        (&controller, "controller", 120_000),
    ] {
        assert!(link_id(l).starts_with("lnk_"), "{l}");
        assert_eq!(l["role"], role);
        let created = pxs_coordinator::engine::parse_rfc3339(l["created_at"].as_str().unwrap());
        let expires = pxs_coordinator::engine::parse_rfc3339(l["expires_at"].as_str().unwrap());
        assert_eq!(expires.unwrap() - created.unwrap(), life, "{l}");
        let url = l["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://{}/play/{}#key=pxs_key_", c.addr, s.id)),
            "{url}"
        );
        // The link's own join URL: its role and link.
        let claims = w.claims(&s.id, l["join_url"].as_str().unwrap());
        assert_eq!(claims.link.as_deref(), Some(link_id(l).as_str()));
        assert_eq!(serde_json::to_value(claims.role).unwrap(), role);
    }
    assert_ne!(key_of(&viewer), key_of(&controller));

    // Each key reads the session with its role, and its join URL is made for it.
    let ttl = 600_000; // join_token_ttl
    let now = w.now();
    for (l, role, cap) in [
        (&viewer, Role::Viewer, now + ttl),
        // The link's end comes before the token's ttl: the token ends with the link.
        (&controller, Role::Controller, t0 + 1 + 120_000),
    ] {
        let path = format!("/api/v1/sessions/{}?name=%20Ada%07%20", s.id);
        let (st, v) = c.call("GET", &path, Some(&key_of(l)), None).await;
        assert_eq!(st, 200, "{v}");
        let seen = session_of(v);
        assert_eq!(
            seen.role.as_deref(),
            Some(pxs_coordinator::auth::role_name(role))
        );
        assert_eq!(seen.owner_key, None);
        let claims = w.claims(&s.id, seen.join_url.as_deref().unwrap());
        assert_eq!(claims.role, role);
        assert_eq!(claims.link.as_deref(), Some(link_id(l).as_str()));
        assert_eq!(claims.exp, cap, "{role:?}");
        assert_eq!(claims.name.as_deref(), Some("Ada"));
    }
    // The owner key's join URL: owner, no link, no name unless asked, the full ttl.
    let (_, v) = c
        .call(
            "GET",
            &format!("/api/v1/sessions/{}", s.id),
            Some(&owner),
            None,
        )
        .await;
    let claims = w.claims(&s.id, session_of(v).join_url.as_deref().unwrap());
    assert_eq!(
        (claims.role, claims.link, claims.name, claims.exp),
        (Role::Owner, None, None, now + ttl)
    );
    // Admins, and the lists, keep the owner's join URL.
    let claims = w.claims(&s.id, c.session(&s.id).await.join_url.as_deref().unwrap());
    assert_eq!((claims.role, claims.link), (Role::Owner, None));
    let (_, list) = c.admin("GET", "/api/v1/sessions", None).await;
    let listed = session_of(list["items"][0].clone());
    assert_eq!(listed.role.as_deref(), Some("owner"));
    assert_eq!(
        w.claims(&s.id, listed.join_url.as_deref().unwrap()).role,
        Role::Owner
    );

    // The event stream, with the key and a name in the query, as a browser opens it.
    let resp = c
        .http
        .get(c.url(&format!(
            "/api/v1/sessions/{}/events?token={}&name=Bob",
            s.id,
            key_of(&viewer)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = first_event(resp).await;
    assert_eq!(first["role"], "viewer", "{first}");
    let claims = w.claims(&s.id, first["join_url"].as_str().unwrap());
    assert_eq!(
        (claims.role, claims.name.as_deref()),
        (Role::Viewer, Some("Bob"))
    );

    // The list: newest first, no secret, no owner key.
    let (st, list) = c
        .call(
            "GET",
            &format!("/api/v1/sessions/{}/links", s.id),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let ids: Vec<String> = items.iter().map(link_id).collect();
    assert_eq!(ids, [link_id(&controller), link_id(&viewer)], "{list}");
    assert!(!list.to_string().contains("pxs_key_"), "{list}");
    assert!(
        items
            .iter()
            .all(|l| l["revoked_at"].is_null() && l.get("url").is_none())
    );

    // Revoking: 204, again 204; its key is refused at once; its open stream ends.
    let stream = c
        .http
        .get(c.url(&format!(
            "/api/v1/sessions/{}/events?token={}",
            s.id,
            key_of(&viewer)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let revoke = format!("/api/v1/sessions/{}/links/{}", s.id, link_id(&viewer));
    for _ in 0..2 {
        let (st, v) = c.call("DELETE", &revoke, Some(&owner), None).await;
        assert_eq!(st, 204, "{v}");
    }
    let (st, v) = c
        .call(
            "GET",
            &format!("/api/v1/sessions/{}", s.id),
            Some(&key_of(&viewer)),
            None,
        )
        .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(
        message(&v),
        "this invitation was withdrawn or does not exist"
    );
    let ended = tokio::time::timeout(WAIT, async {
        let mut body = stream.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked link's event stream goes on");
    let (_, list) = c
        .call(
            "GET",
            &format!("/api/v1/sessions/{}/links", s.id),
            Some(&owner),
            None,
        )
        .await;
    let revoked = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == link_id(&viewer).as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{list}");
    // An unknown link, the owner key's id, a link of another session: 404.
    let (st, v) = c
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{}/links/lnk_nothing", s.id),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, 404, "{v}");
    let owner_key_id: String = sqlx::Row::try_get(
        &sqlx::query("SELECT id FROM session_keys WHERE role = 'owner'")
            .fetch_one(c.engine().store.pool())
            .await
            .unwrap(),
        "id",
    )
    .unwrap();
    let (st, v) = c
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{}/links/{owner_key_id}", s.id),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, 404, "the owner key is no link: {v}");
    assert_eq!(
        c.call(
            "GET",
            &format!("/api/v1/sessions/{}", s.id),
            Some(&owner),
            None
        )
        .await
        .0,
        200
    );
    w.finish().await;
}

/// A link expires at its `expires_at`: its key is refused with its own message.
async fn an_expired_link_is_refused(backend: Backend) {
    let w = World::new(&backend, "links-expiry", "").await;
    let (s, owner) = w.anonymous_session().await;
    let (st, l) = w
        .make_link(&s.id, &owner, json!({"role": "viewer", "expires_in": 60}))
        .await;
    assert_eq!(st, 201, "{l}");
    let path = format!("/api/v1/sessions/{}", s.id);
    w.clock.advance(59_999);
    let (st, v) = w.coord.call("GET", &path, Some(&key_of(&l)), None).await;
    assert_eq!(st, 200, "a moment before it expires: {v}");
    let claims = w.claims(&s.id, v["join_url"].as_str().unwrap());
    assert_eq!(claims.exp, w.now() + 1, "the token ends with the link");
    w.clock.advance(1);
    for p in [path.clone(), format!("{path}/events")] {
        let (st, v) = w.coord.call("GET", &p, Some(&key_of(&l)), None).await;
        assert_eq!(st, 401, "{p}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
        assert_eq!(message(&v), "this invitation has expired");
    }
    // The owner key does not expire.
    w.clock.advance(365 * 24 * 3_600_000);
    assert_eq!(w.coord.call("GET", &path, Some(&owner), None).await.0, 200);
    w.finish().await;
}

/// A link's holder sees the session but can neither end it nor manage its links (403, the
/// session unchanged); a key opens nothing signed-in; a key of one session gives nothing on
/// another.
async fn link_holders_are_not_owners(backend: Backend) {
    let w = World::new(&backend, "links-holders", "").await;
    let c = &w.coord;
    let (a, owner_a) = w.anonymous_session().await;
    let (b, owner_b) = w.anonymous_session().await;
    let (_, viewer) = w
        .make_link(&a.id, &owner_a, json!({"role": "viewer"}))
        .await;
    let (_, controller) = w
        .make_link(&a.id, &owner_a, json!({"role": "controller"}))
        .await;
    let (_, link_b) = w
        .make_link(&b.id, &owner_b, json!({"role": "viewer"}))
        .await;
    let keys_before = w.stored_keys().await;
    let pa = format!("/api/v1/sessions/{}", a.id);
    for holder in [key_of(&viewer), key_of(&controller)] {
        let (st, v) = c.call("DELETE", &pa, Some(&holder), None).await;
        assert_eq!(st, 403, "{v}");
        assert_eq!(v["error"]["code"], "forbidden");
        assert_eq!(
            message(&v),
            "only the session's owner can end it for everyone; close the page to leave"
        );
        for (method, path, body) in [
            ("GET", format!("{pa}/links"), None),
            (
                "POST",
                format!("{pa}/links"),
                Some(json!({"role": "viewer"})),
            ),
            (
                "DELETE",
                format!("{pa}/links/{}", viewer["id"].as_str().unwrap()),
                None,
            ),
        ] {
            let (st, v) = c.call(method, &path, Some(&holder), body).await;
            assert_eq!(st, 403, "{method} {path}: {v}");
            assert_eq!(message(&v), "only the session's owner can do that");
        }
        // A hostile body does not get past the owner check either.
        let (st, v) = c
            .call(
                "POST",
                &format!("{pa}/links"),
                Some(&holder),
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(st, 403, "{v}");
        // Reading is theirs.
        assert_eq!(c.call("GET", &pa, Some(&holder), None).await.0, 200);
    }
    let s = c.session(&a.id).await;
    assert_eq!(
        (s.state, s.ended_by.as_deref()),
        (SessionState::Ready, None),
        "a holder changed the session"
    );
    assert_eq!(w.stored_keys().await, keys_before, "a holder stored a key");
    assert!(w.revocations().is_empty(), "a holder revoked a link");

    // A key is no API token: every user and admin route says 401.
    for r in ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::User | Access::Admin))
    {
        let path = r.path.replace("{id}", "x");
        for key in [owner_a.as_str(), &key_of(&viewer)] {
            let (st, v) = c
                .call(&r.method.as_str().to_uppercase(), &path, Some(key), None)
                .await;
            assert_eq!(
                st,
                401,
                "{} {path} with a session key: {v}",
                r.method.as_str()
            );
        }
    }

    // The keys of A give nothing on B, and B's on A; both unchanged.
    let pb = format!("/api/v1/sessions/{}", b.id);
    for (key, path) in [
        (owner_a.as_str(), pb.as_str()),
        (&key_of(&viewer), pb.as_str()),
        (&key_of(&link_b), pa.as_str()),
    ] {
        for (method, p) in [
            ("GET", path.to_owned()),
            ("GET", format!("{path}/events")),
            ("GET", format!("{path}/links")),
            (
                "DELETE",
                format!("{path}/links/{}", link_b["id"].as_str().unwrap()),
            ),
            ("DELETE", path.to_owned()),
        ] {
            let (st, v) = c.call(method, &p, Some(key), None).await;
            assert_eq!(st, 404, "{method} {p} with another session's key: {v}");
        }
        let (st, _) = c
            .call(
                "POST",
                &format!("{path}/links"),
                Some(key),
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 404);
    }
    for id in [&a.id, &b.id] {
        assert_eq!(c.session(id).await.state, SessionState::Ready);
    }
    assert_eq!(w.stored_keys().await, keys_before);
    assert_eq!(
        c.call("GET", &pb, Some(&key_of(&link_b)), None).await.0,
        200
    );
    w.finish().await;
}

/// A revocation reaches the session's node at once, and again after the node links anew (it
/// may have restarted, or missed it while its link was down).
async fn revocations_reach_the_node(backend: Backend) {
    let w = World::new(&backend, "links-node", "").await;
    let c = &w.coord;
    let (s, owner) = w.anonymous_session().await;
    let (_, kept) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    let (_, gone) = w
        .make_link(&s.id, &owner, json!({"role": "controller"}))
        .await;
    let gone_id = gone["id"].as_str().unwrap().to_owned();
    let (st, v) = c
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{}/links/{gone_id}", s.id),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let want = vec![(s.id.clone(), gone_id.clone())];
    wait_until(WAIT, || async {
        let got = w.revocations();
        if got == want {
            Ok(())
        } else {
            Err(format!("revocations at the node: {got:?}"))
        }
    })
    .await;
    // Nothing else follows: the link kept is not revoked.
    w.node.round_trip().await;
    assert_eq!(w.revocations(), want);
    assert!(kept["id"] != gone["id"]);

    // The node links again (without heartbeats: its report would end the session it lost).
    let World { coord, clock, node } = w;
    node.disconnect();
    let again = FakeNode::connect(&coord, "n1", "demo", 8, true).await;
    wait_until(WAIT, || async {
        let got = revocations_of(&again);
        if got == want {
            Ok(())
        } else {
            Err(format!("revocations after the hello: {got:?}"))
        }
    })
    .await;
    let w = World {
        coord,
        clock,
        node: again,
    };
    w.finish().await;
}

/// Hostile requests for links are refused with a clear message and store nothing; an ended
/// session takes no links; a session has at most 100 open ones.
async fn hostile_link_requests_store_nothing(backend: Backend) {
    let w = World::new(&backend, "links-hostile", "").await;
    let c = &w.coord;
    let (s, owner) = w.anonymous_session().await;
    let path = format!("/api/v1/sessions/{}/links", s.id);
    let before = w.stored_keys().await;
    for (body, mentions) in [
        (json!({"role": "owner"}), "role"),
        (json!({"role": "admin"}), "role"),
        (json!({"role": "Viewer"}), "role"),
        (json!({"role": null}), "role"),
        (json!({}), "role"),
        (json!({"role": "viewer", "expires_in": 0}), "expires_in"),
        (json!({"role": "viewer", "expires_in": 59}), "expires_in"),
        (
            json!({"role": "viewer", "expires_in": 2_592_001}),
            "expires_in",
        ),
        (
            json!({"role": "viewer", "expires_in": u64::MAX}),
            "expires_in",
        ),
        (json!({"role": "viewer", "expires_in": 1e30}), "expires_in"),
        (json!({"role": "viewer", "expires_in": -60}), "expires_in"),
        (json!({"role": "viewer", "expires_in": "600"}), "expires_in"),
        (json!({"role": "viewer", "expires_in": 600.5}), "expires_in"),
        (json!({"role": "viewer", "secret": "mine"}), "secret"),
        (
            json!({"role": "viewer", "session_id": "ses_other"}),
            "session_id",
        ),
        (json!(["viewer"]), ""),
    ] {
        let (st, v) = c
            .call("POST", &path, Some(&owner), Some(body.clone()))
            .await;
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{body}: {v}");
        assert!(message(&v).contains(mentions), "{body}: {v}");
    }
    // Bad names on the reads that take one.
    let one = format!("/api/v1/sessions/{}", s.id);
    for q in [
        "name=",
        "name=%20%20",
        "name=%07%1b",
        &format!("name={}", "x".repeat(41)),
        "name=a&name=b",
    ] {
        for p in [format!("{one}?{q}"), format!("{one}/events?{q}")] {
            let (st, v) = c.call("GET", &p, Some(&owner), None).await;
            assert_eq!(st, 400, "{p}: {v}");
            assert!(message(&v).starts_with("name:"), "{p}: {v}");
        }
    }
    // A Host header that cannot make a URL, or none (and no public_url configured).
    for host in [Some("evil.example@x"), Some("a/b"), Some("a:b"), None] {
        let body = r#"{"role":"viewer"}"#;
        let host_line = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let req = format!(
            "POST {path} HTTP/1.1\r\n{host_line}Authorization: Bearer {owner}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let a = pxs_test_support::raw_http::exchange(c.addr, req.as_bytes())
            .await
            .unwrap();
        assert_eq!(a.status, 400, "Host {host:?}: {}", a.body);
    }
    assert_eq!(
        w.stored_keys().await,
        before,
        "a refused request stored a key"
    );

    // At most 100 open links; revoking one makes room.
    let mut first = None;
    for n in 0..100 {
        let (st, v) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
        assert_eq!(st, 201, "link {n}: {v}");
        first.get_or_insert(v["id"].as_str().unwrap().to_owned());
    }
    let (st, v) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    assert_eq!(st, 409, "{v}");
    assert!(message(&v).contains("100"), "{v}");
    let (st, _) = c
        .call(
            "DELETE",
            &format!("{path}/{}", first.unwrap()),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, v) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    assert_eq!(st, 201, "{v}");

    // An ended session takes no link.
    let (st, _) = c.call("DELETE", &one, Some(&owner), None).await;
    assert!(matches!(st, 200 | 202));
    c.wait_state(&s.id, SessionState::Ended, WAIT).await;
    let count = w.stored_keys().await;
    let (st, v) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(message(&v), "the session has ended");
    assert_eq!(w.stored_keys().await, count);
    w.finish().await;
}

/// With `public_url` configured, a link's URL is made from it, whatever the Host header says.
async fn links_use_the_public_url(backend: Backend) {
    let w = World::new(
        &backend,
        "links-public-url",
        "public_url = \"https://pxs.example.org/\"\n",
    )
    .await;
    let (s, owner) = w.anonymous_session().await;
    let (st, l) = w.make_link(&s.id, &owner, json!({"role": "viewer"})).await;
    assert_eq!(st, 201, "{l}");
    assert!(
        l["url"].as_str().unwrap().starts_with(&format!(
            "https://pxs.example.org/play/{}#key=pxs_key_",
            s.id
        )),
        "{l}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_session_is_reachable_only_with_its_owner_key() {
    for b in backends() {
        the_owner_key_is_the_anonymous_session(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_make_list_and_revoke_share_links() {
    for b in backends() {
        links_are_made_listed_and_revoked(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_share_link_is_refused() {
    for b in backends() {
        an_expired_link_is_refused(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_link_holders_cannot_end_the_session_or_manage_links() {
    for b in backends() {
        link_holders_are_not_owners(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_links_reach_the_node_and_again_after_it_reconnects() {
    for b in backends() {
        revocations_reach_the_node(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_link_requests_are_refused_and_store_nothing() {
    for b in backends() {
        hostile_link_requests_store_nothing(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_link_urls_use_the_public_url() {
    for b in backends() {
        links_use_the_public_url(b).await;
    }
}
