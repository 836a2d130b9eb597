//! Capacity is never promised twice: many requests at once on one coordinator, and (on
//! PostgreSQL) on two coordinators sharing one database, fill exactly the free slots and queue
//! the rest with distinct positions.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{Session, SessionState};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const SLOTS: u32 = 3;
const REQUESTS: usize = 24;

async fn burst(coords: &[&Coord]) -> Vec<Session> {
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let c = coords[i % coords.len()];
        let (http, url) = (c.http.clone(), c.url("/api/v1/sessions"));
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"title_id": "demo"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            r.json::<Session>().await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// `coord` answers the API; `link` holds the node's link.
async fn check(coord: &Coord, link: &Coord, node: &FakeNode) {
    let (_, list) = coord.admin("GET", "/api/v1/sessions", None).await;
    let all: Vec<Session> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(all.len(), REQUESTS);
    let starting = all
        .iter()
        .filter(|s| s.state == SessionState::Starting)
        .count();
    let queued: Vec<u32> = all
        .iter()
        .filter(|s| s.state == SessionState::Queued)
        .map(|s| s.queue_position.unwrap())
        .collect();
    assert_eq!(starting, SLOTS as usize, "exactly the free slots are given");
    let positions: BTreeSet<u32> = queued.iter().copied().collect();
    assert_eq!(
        positions,
        (1..=(REQUESTS as u32 - SLOTS)).collect(),
        "{queued:?}"
    );
    // The node is asked to start exactly those, once each (also the ones placed by another
    // coordinator: they reach the node through the records).
    wait_until(Duration::from_secs(5), || async {
        let n = node.starts().len();
        if n == SLOTS as usize {
            Ok(())
        } else {
            Err(format!("{n} starts"))
        }
    })
    .await;
    // Nothing more comes: whatever the records still say to send is sent now, and the node has
    // received all of it.
    link.engine().dispatch().await;
    node.round_trip().await;
    let starts = node.starts();
    assert_eq!(starts.len(), SLOTS as usize, "{starts:?}");
    assert_eq!(starts.iter().collect::<BTreeSet<_>>().len(), SLOTS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_get_the_same_slot() {
    for b in backends() {
        let db = fresh_database(&b, "burst").await;
        let coord = Coord::start(&db, FAST_TIMING).await;
        coord.title("demo", "demo", json!({})).await;
        // Not auto: sessions stay `starting`, so the slots stay taken.
        let node = FakeNode::connect(&coord, "n1", "demo", SLOTS, false).await;
        wait_until(Duration::from_secs(5), || async {
            coord
                .node_state("n1")
                .await
                .map(|_| ())
                .ok_or("no node yet".to_owned())
        })
        .await;
        burst(&[&coord]).await;
        check(&coord, &coord, &node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_one_postgresql_never_promise_a_slot_twice() {
    let Some(pg) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        eprintln!("skipped: PXS_TEST_POSTGRES_URL is not set (SQLite has one coordinator)");
        return;
    };
    let db = fresh_database(&pg, "two").await;
    let a = Coord::start(&db, FAST_TIMING).await;
    let b = Coord::start(&db, FAST_TIMING).await;
    a.title("demo", "demo", json!({})).await;
    let node = FakeNode::connect(&a, "n1", "demo", SLOTS, false).await;
    wait_until(Duration::from_secs(5), || async {
        b.node_state("n1")
            .await
            .map(|_| ())
            .ok_or("no node yet".to_owned())
    })
    .await;
    burst(&[&a, &b]).await;
    check(&b, &a, &node).await;
}

/// Overload is answered, not queued without end: while the placement is held (the one SQLite
/// writer, the PostgreSQL placement lock), a POST waits `limits.database_wait` and gets 503
/// with Retry-After, and changes nothing; once free, the same request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_is_a_quick_503_with_retry_after() {
    for b in backends() {
        let db = fresh_database(&b, "busy").await;
        let c = Coord::start(&db, "[limits]\ndatabase_wait = \"300ms\"\n").await;
        c.title("demo", "demo", json!({})).await;
        let held = c.engine().store.begin_placement().await.unwrap();
        let started = std::time::Instant::now();
        let resp = c
            .http
            .post(c.url("/api/v1/sessions"))
            .bearer_auth(ADMIN)
            .json(&json!({"title_id": "demo"}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status().as_u16(), 503, "{b:?}");
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("busy"),
            "{v}"
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "answered after {took:?}"
        );
        drop(held);
        let (_, list) = c.admin("GET", "/api/v1/sessions", None).await;
        assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
        let (s, v) = c
            .admin(
                "POST",
                "/api/v1/sessions",
                Some(json!({"title_id": "demo"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}
