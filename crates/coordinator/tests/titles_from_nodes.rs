//! Titles from the applications nodes advertise (issue 12): a node's new application becomes a
//! title with the node's catalog data, in the transaction that records the node's applications;
//! with `[titles] approve_new` it stays hidden from everyone but admins until approved; a title
//! an admin changed is never changed by nodes again, and one an admin deleted is not made again;
//! hostile catalog data is cut or dropped with a warning and breaks nothing else. Fake nodes, on
//! SQLite and, when configured, PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::api::{MAX_TITLE_NAME, Visibility};
use pxs_protocol::node::{ApplicationInfo, CoordinatorToNode, NodeToCoordinator};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// `GET /api/v1/titles` as `token` (None: anonymous): the ids listed, sorted (the list is by
/// name, whose order depends on the database's collation).
async fn listed(c: &Coord, token: Option<&str>) -> Vec<String> {
    let (st, v) = c.call("GET", "/api/v1/titles", token, None).await;
    assert_eq!(st, 200, "{v}");
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Title `id` as the admin sees it; panics unless it exists.
async fn title(c: &Coord, id: &str) -> Value {
    let (st, v) = c.admin("GET", &format!("/api/v1/titles/{id}"), None).await;
    assert_eq!(st, 200, "title {id}: {v}");
    v
}

/// Waits until title `id` exists (a node's message that makes it has been processed).
async fn wait_title(c: &Coord, id: &str) -> Value {
    wait_until(WAIT, || async move {
        match c.admin("GET", &format!("/api/v1/titles/{id}"), None).await {
            (200, v) => Ok(v),
            (st, v) => Err(format!("title {id}: {st} {v}")),
        }
    })
    .await
}

/// Mints an API token with `role`.
async fn token(c: &Coord, role: &str) -> String {
    let (st, v) = c
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": role, "role": role})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

fn space() -> ApplicationInfo {
    ApplicationInfo {
        name: "Space Game".into(),
        description: "Fly.\nShoot.".into(),
        image_url: Some("https://img.example.org/space.png".into()),
        max_players: 3,
        idle_timeout: Some(900),
        empty_timeout: Some(60),
        ..app_info("space")
    }
}

/// The node's operator changes its applications (a reload): `applications` on the link, with
/// an application `probe` that is new each time. The message is applied in one transaction, so
/// once `probe`'s title exists, everything else the message did is there too.
async fn reload(c: &Coord, node: &FakeNode, apps: Vec<ApplicationInfo>, probe: &str) {
    let mut applications = apps;
    applications.push(app_info(probe));
    node.send_raw(NodeToCoordinator::Applications { applications });
    wait_title(c, probe).await;
}

async fn a_nodes_new_application_becomes_a_public_title(backend: Backend) {
    let db = fresh_database(&backend, "titles-new").await;
    let c = Coord::start(&db, FAST_TIMING).await;
    let node = FakeNode::connect_with(&c, hello("n1", vec![space()], 2), true).await;

    // Made in the hello's transaction: there once the welcome came, for anonymous callers too.
    let (st, t) = c.call("GET", "/api/v1/titles/space", None, None).await;
    assert_eq!(st, 200, "{t}");
    let created = t["created_at"].clone();
    assert_eq!(t["name"], "Space Game", "{t}");
    assert_eq!(t["description"], "Fly.\nShoot.", "{t}");
    assert_eq!(t["image_url"], "https://img.example.org/space.png", "{t}");
    assert_eq!(t["application_id"], "space", "{t}");
    assert_eq!(t["visibility"], "public", "{t}");
    assert_eq!(
        (&t["max_players"], &t["idle_timeout"], &t["empty_timeout"]),
        (&json!(3), &json!(900), &json!(60)),
        "the application's limits: {t}"
    );
    assert_eq!(
        (&t["source"], &t["approved"]),
        (&json!("node"), &json!(true))
    );
    assert_eq!(t["availability"]["nodes"], 1, "{t}");
    assert_eq!(listed(&c, None).await, ["space"]);

    // Anyone may start it; the node is told the title's limits, which are its own.
    let (st, s) = c
        .call(
            "POST",
            "/api/v1/sessions",
            None,
            Some(json!({"title_id": "space"})),
        )
        .await;
    assert_eq!(st, 201, "{s}");
    let options = wait_until(WAIT, || async {
        node.commands
            .lock()
            .unwrap()
            .iter()
            .find_map(|m| match m {
                CoordinatorToNode::StartSession {
                    application_id,
                    options,
                    ..
                } if application_id.as_str() == "space" => Some(options.clone()),
                _ => None,
            })
            .ok_or_else(|| "no start_session yet".to_owned())
    })
    .await;
    assert_eq!(
        (
            options.max_players,
            options.idle_timeout,
            options.empty_timeout
        ),
        (Some(3), Some(900), Some(60))
    );

    // The operator changes the description and adds an application (a reload): the title
    // follows, a second one is made, a private one is for signed-in users only.
    let changed = ApplicationInfo {
        description: "Fly further.".into(),
        ..space()
    };
    let hidden = ApplicationInfo {
        visibility: Some(Visibility::Private),
        ..app_info("internal")
    };
    reload(&c, &node, vec![changed.clone(), hidden], "other").await;
    let t = title(&c, "space").await;
    assert_eq!(t["description"], "Fly further.", "{t}");
    assert_eq!(t["created_at"], created);
    assert_eq!(title(&c, "internal").await["visibility"], "private");
    assert_eq!(listed(&c, None).await, ["other", "space"]);
    let user = token(&c, "user").await;
    assert_eq!(
        listed(&c, Some(&user)).await,
        ["internal", "other", "space"]
    );

    // Saying the same again changes nothing (no churn at every hello).
    let before = title(&c, "space").await["updated_at"].clone();
    reload(&c, &node, vec![changed], "other2").await;
    assert_eq!(title(&c, "space").await["updated_at"], before);

    // The applications go from every node: the titles stay, with no availability; the running
    // session is not touched (no stop was sent).
    reload(&c, &node, vec![], "other3").await;
    let t = title(&c, "space").await;
    assert_eq!(t["availability"]["nodes"], 0, "{t}");
    node.round_trip().await;
    let stops = node.stops();
    assert!(
        stops.iter().all(|id| id.as_str() != s["id"]),
        "a session was stopped: {stops:?}"
    );
    let (_, s2) = c
        .admin(
            "GET",
            &format!("/api/v1/sessions/{}", s["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s2["state"], "ready", "{s2}");
    node.disconnect();
}

async fn with_approve_new_a_title_waits_for_an_admin(backend: Backend) {
    let db = fresh_database(&backend, "titles-approve").await;
    let c = Coord::start(&db, &format!("{FAST_TIMING}[titles]\napprove_new = true\n")).await;
    let user = token(&c, "user").await;
    let node = FakeNode::connect_with(&c, hello("n1", vec![space()], 2), true).await;

    // Made, but only admins see it or may start it.
    let t = title(&c, "space").await;
    assert_eq!(
        (&t["approved"], &t["source"]),
        (&json!(false), &json!("node"))
    );
    assert_eq!(listed(&c, Some(ADMIN)).await, ["space"]);
    for who in [None, Some(user.as_str())] {
        assert!(
            listed(&c, who).await.is_empty(),
            "{who:?} sees a pending title"
        );
        let (st, v) = c.call("GET", "/api/v1/titles/space", who, None).await;
        assert_eq!(st, 404, "{who:?}: {v}");
        let (st, v) = c
            .call(
                "POST",
                "/api/v1/sessions",
                who,
                Some(json!({"title_id": "space"})),
            )
            .await;
        assert_eq!(st, 404, "{who:?} started a pending title: {v}");
    }
    // Only an admin approves; a refused approval changes nothing.
    let (st, v) = c
        .call("POST", "/api/v1/titles/space/approve", Some(&user), None)
        .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = c
        .call("POST", "/api/v1/titles/space/approve", None, None)
        .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(title(&c, "space").await["approved"], false);
    let (st, v) = c
        .admin("POST", "/api/v1/titles/nothing/approve", None)
        .await;
    assert_eq!(st, 404, "{v}");

    // A pending title still follows its application.
    let changed = ApplicationInfo {
        name: "Space Game 2".into(),
        ..space()
    };
    reload(&c, &node, vec![changed.clone()], "probe1").await;
    assert_eq!(title(&c, "space").await["name"], "Space Game 2");

    let (st, t) = c.admin("POST", "/api/v1/titles/space/approve", None).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (&t["approved"], &t["source"]),
        (&json!(true), &json!("node"))
    );
    assert_eq!(listed(&c, None).await, ["space"]);
    assert_eq!(listed(&c, Some(&user)).await, ["space"]);
    // Approving again is harmless and changes nothing.
    let (st, again) = c.admin("POST", "/api/v1/titles/space/approve", None).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["updated_at"], t["updated_at"]);
    // The node's next message keeps it approved; users can start it now.
    reload(&c, &node, vec![changed], "probe2").await;
    assert_eq!(title(&c, "space").await["approved"], true);
    let (st, s) = c
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&user),
            Some(json!({"title_id": "space"})),
        )
        .await;
    assert_eq!(st, 201, "{s}");
    node.disconnect();
}

async fn admins_keep_what_they_changed_or_deleted(backend: Backend) {
    let db = fresh_database(&backend, "titles-admin").await;
    let mut c = Coord::start(&db, FAST_TIMING).await;
    // Titles an admin made before any node said anything: one of application `custom` under
    // another id, and one named `clash` of another application.
    c.title("my-custom", "custom", json!({"name": "Mine"}))
        .await;
    c.title("clash", "demo", json!({"name": "Clash"})).await;
    let apps = || {
        vec![
            space(),
            app_info("other"),
            app_info("custom"),
            app_info("clash"),
        ]
    };
    let node = FakeNode::connect_with(&c, hello("n1", apps(), 2), true).await;
    title(&c, "space").await;
    title(&c, "other").await;
    // `custom` has a title already, and `clash`'s id is taken: nothing made of them.
    for id in ["custom"] {
        let (st, v) = c.admin("GET", &format!("/api/v1/titles/{id}"), None).await;
        assert_eq!(st, 404, "{v}");
    }
    let clash = title(&c, "clash").await;
    assert_eq!(
        (&clash["name"], &clash["application_id"], &clash["source"]),
        (&json!("Clash"), &json!("demo"), &json!("admin"))
    );

    // An admin edits `space` and deletes `other`.
    let (st, t) = c
        .admin(
            "PATCH",
            "/api/v1/titles/space",
            Some(json!({"name": "Space (curated)"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["source"], "admin", "an edited title is the admin's: {t}");
    let (st, v) = c.admin("DELETE", "/api/v1/titles/other", None).await;
    assert_eq!(st, 204, "{v}");

    // The node's operator changes the applications: the edited title keeps the admin's data,
    // the deleted one is not made again.
    let renamed = ApplicationInfo {
        name: "Space Game 2".into(),
        description: "New text.".into(),
        ..space()
    };
    reload(
        &c,
        &node,
        vec![renamed.clone(), app_info("other"), app_info("custom")],
        "probe1",
    )
    .await;
    let t = title(&c, "space").await;
    assert_eq!(
        (&t["name"], &t["description"], &t["source"]),
        (
            &json!("Space (curated)"),
            &json!("Fly.\nShoot."),
            &json!("admin")
        )
    );
    let (st, v) = c.admin("GET", "/api/v1/titles/other", None).await;
    assert_eq!(st, 404, "a deleted title was made again: {v}");

    // Nor after a new hello, nor after a restart of the coordinator (the dismissal is a row).
    node.disconnect();
    let node = FakeNode::connect_with(&c, hello("n1", apps(), 2), true).await;
    node.round_trip().await;
    assert_eq!(c.admin("GET", "/api/v1/titles/other", None).await.0, 404);
    node.disconnect();
    c = c.restart().await;
    let node = FakeNode::connect_with(&c, hello("n1", apps(), 2), true).await;
    reload(&c, &node, vec![renamed, app_info("other")], "probe2").await;
    assert_eq!(c.admin("GET", "/api/v1/titles/other", None).await.0, 404);
    assert_eq!(title(&c, "space").await["name"], "Space (curated)");

    // An admin may make it again by hand: it is then the admin's.
    c.title("other", "other", json!({"name": "Other, by hand"}))
        .await;
    let t = title(&c, "other").await;
    assert_eq!(
        (&t["source"], &t["approved"]),
        (&json!("admin"), &json!(true))
    );
    node.disconnect();
    c.stop().await;
}

/// Log lines written while a test runs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn hostile_application_data_is_cut_or_refused(backend: Backend, logs: &Logs) {
    let db = fresh_database(&backend, "titles-hostile").await;
    let c = Coord::start(&db, FAST_TIMING).await;
    let hostile = vec![
        ApplicationInfo {
            name: "N".repeat(100_000),
            description: "d\u{0}".repeat(5000),
            image_url: Some("javascript:alert(1)".into()),
            idle_timeout: Some(u64::MAX),
            ..app_info("long")
        },
        ApplicationInfo {
            name: "\u{1b}[2J\u{7}".into(),
            image_url: Some(format!("https://x.example/{}", "i".repeat(5000))),
            ..app_info("blank")
        },
        // A repeated id: the first one counts.
        ApplicationInfo {
            name: "Fine".into(),
            ..app_info("fine")
        },
        ApplicationInfo {
            name: "Impostor".into(),
            ..app_info("fine")
        },
    ];
    let node = FakeNode::connect_with(&c, hello("n1", hostile, 4), true).await;
    let t = title(&c, "long").await;
    assert_eq!(
        t["name"].as_str().unwrap().chars().count(),
        MAX_TITLE_NAME,
        "the name is cut"
    );
    assert_eq!(
        t["description"].as_str().unwrap().len(),
        4000,
        "cut, NULs gone"
    );
    assert_eq!(t["image_url"], Value::Null, "a javascript: URL is dropped");
    assert_eq!(t["idle_timeout"], 366 * 24 * 3600, "capped");
    let t = title(&c, "blank").await;
    assert_eq!(t["name"], "[2J", "control characters removed: {t}");
    assert_eq!(t["image_url"], Value::Null, "an overlong URL is dropped");
    assert_eq!(title(&c, "fine").await["name"], "Fine");
    let log = logs.text();
    for needle in [
        "name: 100000 characters cut to 200",
        "name: control characters removed",
        "description: control characters removed",
        "description: 5000 characters cut to 4000",
        "image_url: refused (not an http:// or https:// URL)",
        "image_url: refused (longer than 2000 characters)",
        "idle_timeout: 18446744073709551615 s capped",
    ] {
        assert!(
            log.contains(needle),
            "no log line with {needle:?} in:\n{log}"
        );
    }
    assert!(
        !log.contains(&"N".repeat(300)),
        "the hostile name reached the log"
    );

    // Nothing else broke: the node is linked and its sessions start.
    let s = c.create(json!({"title_id": "long"})).await;
    c.wait_state(&s.id, pxs_protocol::api::SessionState::Ready, WAIT)
        .await;

    // A message the protocol refuses (an unknown visibility) closes that link and stores
    // nothing of it; the coordinator and other nodes go on.
    let (mut ws, _) = node_link_with(&c, hello("n2", vec![app_info("calm")], 1)).await;
    title(&c, "calm").await;
    ws.send(Message::text(
        r#"{"type":"applications","applications":[{"id":"bad","name":"x","res_x":64,"res_y":64,"max_players":0,"visibility":"secret"}]}"#,
    ))
    .await
    .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(f))) => return f.map(|f| f.reason.to_string()),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the link is closed");
    assert_eq!(closed.as_deref(), Some("invalid message"));
    assert_eq!(c.admin("GET", "/api/v1/titles/bad", None).await.0, 404);
    reload(&c, &node, vec![app_info("fine")], "after").await;

    // A node advertising many new applications at once gets 100 titles from one message, the
    // rest from its next.
    let many: Vec<ApplicationInfo> = (0..130).map(|i| app_info(&format!("m{i:03}"))).collect();
    node.send_raw(NodeToCoordinator::Applications {
        applications: many.clone(),
    });
    let count = || async {
        listed(&c, Some(ADMIN))
            .await
            .iter()
            .filter(|id| id.starts_with('m'))
            .count()
    };
    wait_until(WAIT, || async {
        match count().await {
            100 => Ok(()),
            n => Err(format!("{n} titles of 130 applications")),
        }
    })
    .await;
    assert!(
        logs.text()
            .contains("over 100 new applications in one message")
    );
    reload(&c, &node, many, "after2").await;
    assert_eq!(count().await, 130);
    node.disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_new_application_is_a_public_title_with_its_catalog_data() {
    for b in backends() {
        a_nodes_new_application_becomes_a_public_title(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_approve_new_titles_are_hidden_until_an_admin_approves() {
    for b in backends() {
        with_approve_new_a_title_waits_for_an_admin(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_title_is_not_overwritten_and_a_deleted_one_not_made_again() {
    for b in backends() {
        admins_keep_what_they_changed_or_deleted(b).await;
    }
}

/// On one thread, so that every task of the coordinator logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn hostile_application_data_is_cut_or_dropped_with_a_warning() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for b in backends() {
        hostile_application_data_is_cut_or_refused(b, &logs).await;
    }
}
