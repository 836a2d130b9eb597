//! The anonymous limit per client address queues rather than refuses (issue 14): behind a
//! trusted proxy, two colleagues of one office address run their two sessions and the third
//! one's request waits in the queue, saying why (`queue_reason: address_limit`, the limit),
//! without holding up anyone else: a user at another address starts at once, and the catalog
//! still shows the slot the waiting request cannot take. When one of the office's sessions
//! ends, the third starts. A booking past the limit cannot wait (429, the limit named), and
//! neither can a request past `anonymous.max_waiting_per_address`. The address that counts is
//! the forwarded one. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_coordinator::engine::rfc3339;
use pxs_protocol::api::{self, SessionState};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// An anonymous request from `client` (forwarded by the trusted proxy on 127.0.0.1).
async fn create(coord: &Coord, client: &str, body: Value) -> (u16, Value) {
    let resp = coord
        .http
        .post(coord.url("/api/v1/sessions"))
        .header("x-forwarded-for", client)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Session `s` as its anonymous owner reads it, with its owner key.
async fn read(coord: &Coord, s: &Value) -> api::Session {
    let id = s["id"].as_str().unwrap();
    let (st, v) = coord
        .call(
            "GET",
            &format!("/api/v1/sessions/{id}"),
            s["owner_key"].as_str(),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

async fn wait_for(coord: &Coord, s: &Value, want: SessionState) -> api::Session {
    wait_until(WAIT, || async {
        let r = read(coord, s).await;
        if r.state == want {
            Ok(r)
        } else {
            Err(format!("{} is {:?}, want {want:?}", r.id, r.state))
        }
    })
    .await
}

async fn free_slots(coord: &Coord) -> u32 {
    let (st, v) = coord.call("GET", "/api/v1/titles/demo", None, None).await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value::<api::Title>(v)
        .unwrap()
        .availability
        .free_slots
}

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "anonymous-limits").await;
    let toml = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{FAST_TIMING}[anonymous]\nmax_sessions_per_address = 2\nmax_waiting_per_address = 2\n"
    );
    let coord = Coord::start(&db, &toml).await;
    coord
        .title("demo", "demo", json!({"max_duration": 3600}))
        .await;
    let (_node, beat) = online_fake_node(&coord, "n1", "demo", 4).await;
    let office = "203.0.113.9";

    // Two colleagues at the office start theirs.
    let mut running = Vec::new();
    for _ in 0..2 {
        let (st, s) = create(&coord, office, json!({"title_id": "demo"})).await;
        assert_eq!(st, 201, "{s}");
        wait_for(&coord, &s, SessionState::Ready).await;
        running.push(s);
    }
    // The third colleague waits, and is told why.
    let (st, third) = create(&coord, office, json!({"title_id": "demo"})).await;
    assert_eq!(
        st, 201,
        "the third colleague is queued, not refused: {third}"
    );
    let t = read(&coord, &third).await;
    assert_eq!(t.state, SessionState::Queued);
    assert_eq!(t.queue_reason.as_deref(), Some("address_limit"), "{t:?}");
    assert_eq!(t.address_limit, Some(2));
    // Nobody else waits for it: two slots are still free for others, and someone at another
    // address starts at once (the catalog's count and Launch agree).
    assert_eq!(free_slots(&coord).await, 2);
    let (st, home) = create(&coord, "198.51.100.20", json!({"title_id": "demo"})).await;
    assert_eq!(st, 201, "{home}");
    assert_eq!(home["state"], "starting", "{home}");
    assert_eq!(free_slots(&coord).await, 1);

    // A booking past the limit cannot wait: refused, with the limit said.
    let soon = rfc3339(coord.engine().now() + 3_600_000);
    let (st, v) = create(
        &coord,
        office,
        json!({"title_id": "demo", "start_at": soon, "duration": 600}),
    )
    .await;
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 sessions"),
        "{v}"
    );
    // Nor a request past the two that may wait.
    let (st, fourth) = create(&coord, office, json!({"title_id": "demo"})).await;
    assert_eq!(st, 201, "{fourth}");
    let (st, v) = create(&coord, office, json!({"title_id": "demo"})).await;
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests waiting"),
        "{v}"
    );

    // One colleague ends theirs: the third starts, the fourth still waits its turn.
    let first = running[0]["id"].as_str().unwrap();
    let (st, v) = coord
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{first}"),
            running[0]["owner_key"].as_str(),
            None,
        )
        .await;
    assert_eq!(st, 202, "{v}");
    wait_for(&coord, &third, SessionState::Ready).await;
    let f = read(&coord, &fourth).await;
    assert_eq!(f.state, SessionState::Queued);
    assert_eq!(f.queue_reason.as_deref(), Some("address_limit"));
    beat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_address_at_its_limit_queues_rather_than_being_refused() {
    for b in backends() {
        story(b).await;
    }
}

/// Twenty-four requests from one address at once, with slots free for all of them: the address
/// holds exactly its limit and the rest wait. On PostgreSQL placements run side by side, so
/// this holds only because each locks its address before counting what it holds.
async fn burst(backend: Backend) {
    let db = fresh_database(&backend, "anonymous-burst").await;
    let toml = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{FAST_TIMING}[anonymous]\nmax_sessions_per_address = 2\nmax_waiting_per_address = 30\n"
    );
    let coord = Coord::start(&db, &toml).await;
    coord
        .title("demo", "demo", json!({"max_duration": 3600}))
        .await;
    let (_n1, beat1) = online_fake_node(&coord, "n1", "demo", 16).await;
    let (_n2, beat2) = online_fake_node(&coord, "n2", "demo", 16).await;
    let answers = futures_util::future::join_all(
        (0..24).map(|_| create(&coord, "203.0.113.9", json!({"title_id": "demo"}))),
    )
    .await;
    let mut states = Vec::new();
    for (st, s) in &answers {
        assert_eq!(*st, 201, "{s}");
        states.push(s["state"].as_str().unwrap().to_owned());
    }
    let started = states.iter().filter(|s| *s == "starting").count();
    assert_eq!(started, 2, "{states:?}");
    assert_eq!(states.iter().filter(|s| *s == "queued").count(), 22);
    beat1.abort();
    beat2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_address_holds_no_more_than_its_limit() {
    for b in backends() {
        burst(b).await;
    }
}
