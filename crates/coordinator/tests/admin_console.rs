//! What the admin console reads that no other endpoint gave: the coordinator's numbers as JSON
//! (`GET /api/v1/metrics`), the session history's filters (`node_id`, `end_reason`, `limit`),
//! and, in an admin's list, who created each session and how many players it has; and the
//! console's pages are served. With a fake node; on SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{self, SessionState};
use pxs_protocol::node::{
    ApplicationId, EndReason, Ended, Heartbeat, NodeToCoordinator, ObservedState, SessionEventKind,
    SessionStatus,
};
use serde_json::{Value, json};
use std::time::Duration;

fn sessions_of(v: &Value) -> Vec<api::Session> {
    serde_json::from_value(v["items"].clone()).unwrap()
}

async fn metrics(coord: &Coord) -> api::Metrics {
    let (s, v) = coord.admin("GET", "/api/v1/metrics", None).await;
    assert_eq!(s, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "admin-console").await;
    let mut coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({"max_players": 4})).await;
    let (node, beat) = online_fake_node(&coord, "n1", "demo", 1).await;

    // A user's session (ready on n1), then an anonymous one (queued behind it).
    let (s, user) = coord
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ada", "role": "user"})),
        )
        .await;
    assert_eq!(s, 201, "{user}");
    let user_token = user["token"].as_str().unwrap().to_owned();
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (s, v) = coord
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&user_token),
            Some(json!({"title_id": "demo"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let first: api::Session = serde_json::from_value(v).unwrap();
    coord
        .wait_state(&first.id, SessionState::Ready, Duration::from_secs(10))
        .await;
    let (s, v) = coord
        .call(
            "POST",
            "/api/v1/sessions",
            None,
            Some(json!({"title_id": "demo"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let queued: api::Session = serde_json::from_value(v).unwrap();
    assert_eq!(queued.state, SessionState::Queued);

    // ---- the numbers as JSON: every state present, the queue, the start latency.
    let m = metrics(&coord).await;
    assert_eq!(m.sessions.len(), SessionState::ALL.len(), "{m:?}");
    assert_eq!(m.sessions["ready"], 1, "{m:?}");
    assert_eq!(m.sessions["queued"], 1, "{m:?}");
    assert_eq!(m.queue_length, 1, "{m:?}");
    assert_eq!(m.nodes["online"], 1, "{m:?}");
    assert_eq!(m.node_links, 1, "{m:?}");
    assert!(m.session_start_seconds.count >= 1, "{m:?}");
    assert!(m.placement_seconds.count >= 2, "{m:?}");
    // Admins only.
    let (s, _) = coord
        .call("GET", "/api/v1/metrics", Some(&user_token), None)
        .await;
    assert_eq!(s, 403);

    // ---- owners and players in an admin's list, and only there.
    beat.abort();
    node.send_raw(NodeToCoordinator::Heartbeat(Heartbeat {
        at: 0,
        sessions: vec![SessionStatus {
            session_id: first.id.clone(),
            application_id: ApplicationId::parse("demo").unwrap(),
            state: ObservedState::Ready,
            players: 3,
            gpu: None,
            started_at: 0,
        }],
        free_slots: 0,
        gpus: vec![],
        draining: false,
    }));
    let list = wait_until(Duration::from_secs(10), || async {
        let (s, v) = coord.admin("GET", "/api/v1/sessions", None).await;
        assert_eq!(s, 200, "{v}");
        let list = sessions_of(&v);
        match list
            .iter()
            .find(|x| x.id == first.id)
            .and_then(|x| x.players)
        {
            Some(3) => Ok(list),
            other => Err(format!("players of the ready session: {other:?}")),
        }
    })
    .await;
    let by_id = |id| list.iter().find(|x| &x.id == id).unwrap();
    assert_eq!(by_id(&first.id).owner.as_deref(), Some(user_id.as_str()));
    assert_eq!(by_id(&queued.id).owner.as_deref(), Some("anonymous"));
    assert_eq!(
        by_id(&queued.id).players,
        None,
        "a queued session has no players"
    );
    let (s, v) = coord
        .call("GET", "/api/v1/sessions", Some(&user_token), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let own = sessions_of(&v);
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].owner, None, "{v}");
    assert_eq!(own[0].players, None, "{v}");
    assert!(v["items"][0].get("owner").is_none(), "{v}");

    // ---- end the first one (the node says why): history filters by node and end reason.
    node.send_event(
        &first.id,
        SessionEventKind::Ended(Ended {
            reason: EndReason::Crashed,
            failed: false,
            exit_code: Some(3),
            signal: None,
            detail: None,
        }),
    );
    coord
        .wait_state(&first.id, SessionState::Ended, Duration::from_secs(10))
        .await;
    let ids = |v: &Value| {
        sessions_of(v)
            .into_iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
    };
    let (s, v) = coord
        .admin("GET", "/api/v1/sessions?end_reason=crashed", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v), vec![first.id.to_string()]);
    let (_, v) = coord
        .admin("GET", "/api/v1/sessions?end_reason=stopped", None)
        .await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // The queued one has started on n1 in its place: both were on n1.
    coord
        .wait_state(&queued.id, SessionState::Ready, Duration::from_secs(10))
        .await;
    let (_, v) = coord
        .admin("GET", "/api/v1/sessions?node_id=n1", None)
        .await;
    assert_eq!(
        ids(&v),
        vec![queued.id.to_string(), first.id.to_string()],
        "newest first"
    );
    let (_, v) = coord
        .admin("GET", "/api/v1/sessions?node_id=n2", None)
        .await;
    assert_eq!(ids(&v), Vec::<String>::new());
    let (_, v) = coord
        .admin("GET", "/api/v1/sessions?node_id=n1&limit=1", None)
        .await;
    assert_eq!(ids(&v), vec![queued.id.to_string()]);
    let (_, v) = coord
        .admin(
            "GET",
            "/api/v1/sessions?state=ended&title_id=demo&node_id=n1&end_reason=crashed",
            None,
        )
        .await;
    assert_eq!(ids(&v), vec![first.id.to_string()]);

    // Filters that cannot match anything are refused, naming the parameter.
    for (q, field) in [
        ("end_reason=bored", "end_reason"),
        ("node_id=no%20such", "node_id"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("owner=me", "owner"),
    ] {
        let (s, v) = coord
            .admin("GET", &format!("/api/v1/sessions?{q}"), None)
            .await;
        assert_eq!(s, 400, "{q}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{q}: {message}");
    }

    // ---- the console's pages are served as HTML, to anyone (the API checks the calls).
    for page in ["/admin", "/admin/api"] {
        let r = coord.http.get(coord.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{page}: {ct}");
    }
    // The reference documents the new endpoint and the history's filters.
    let (_, doc) = coord.call("GET", "/api/v1/openapi.json", None, None).await;
    assert!(doc["paths"]["/api/v1/metrics"]["get"].is_object(), "{doc}");
    let params: Vec<&str> = doc["paths"]["/api/v1/sessions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["state", "title_id", "node_id", "end_reason", "limit"]
    );
    assert!(doc["components"]["schemas"]["Metrics"].is_object());

    drop(node);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_metrics_history_owners_and_players() {
    for b in backends() {
        story(b).await;
    }
}
