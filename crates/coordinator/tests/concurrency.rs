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
        coord.wait_for_node("n1").await;
        burst(&[&coord]).await;
        check(&coord, &coord, &node).await;
        // On PostgreSQL placements run beside each other, and each of the requests that queued
        // was decided again with the lock exclusive: the metric counts them.
        let mut text = String::new();
        coord.engine().metrics.render_histograms(&mut text);
        let retries: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pxs_placement_retries_total "))
            .unwrap_or_else(|| panic!("no retry count in {text}"))
            .trim()
            .parse()
            .unwrap();
        match b {
            Backend::Postgres(_) => assert!(
                retries >= (REQUESTS - SLOTS as usize) as u64,
                "{retries} retries"
            ),
            _ => assert_eq!(retries, 0, "SQLite places one at a time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_on_one_postgresql_never_promise_a_slot_twice() {
    let Some(pg) = postgres_only("SQLite has one coordinator") else {
        return;
    };
    let db = fresh_database(&pg, "two").await;
    let a = Coord::start(&db, FAST_TIMING).await;
    let b = Coord::start(&db, FAST_TIMING).await;
    a.title("demo", "demo", json!({})).await;
    let node = FakeNode::connect(&a, "n1", "demo", SLOTS, false).await;
    b.wait_for_node("n1").await;
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

/// POSTs and DELETEs at once, from many clients and (on PostgreSQL) through two coordinators,
/// while the node answers every start and stop at once: a DELETE holds the placement lock only
/// shared and locks its session's row, beside the node's events (the same), while placements
/// and the queue's promotions hold it exclusive. The node is never asked to run more sessions
/// than its slots at any moment (a slot is free again only once the node said its session
/// ended), no DELETE is lost to an event changing the same session (each session ends, none
/// stays running), and every session is started at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_and_delete_storms_never_exceed_a_nodes_capacity() {
    const CLIENTS: usize = 12;
    const ROUNDS: usize = 12;
    for b in backends() {
        let db = fresh_database(&b, "storm").await;
        let a = Coord::start(&db, FAST_TIMING).await;
        let second = match b {
            Backend::Postgres(_) => Some(Coord::start(&db, FAST_TIMING).await),
            Backend::Sqlite => None,
        };
        a.title("demo", "demo", json!({})).await;
        let node = FakeNode::connect(&a, "n1", "demo", SLOTS, true).await;
        a.wait_for_node("n1").await;
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            let c = match (&second, i % 2) {
                (Some(s), 1) => s,
                _ => &a,
            };
            let (http, url) = (c.http.clone(), c.url("/api/v1/sessions"));
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for round in 0..ROUNDS {
                    let r = http
                        .post(&url)
                        .bearer_auth(ADMIN)
                        .json(&json!({"title_id": "demo"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                    let s: Session = r.json().await.unwrap();
                    // Some at once (often still queued or starting), some after a moment (the
                    // node's starting and ready on their way or applied).
                    if (i + round) % 3 != 0 {
                        tokio::time::sleep(Duration::from_millis(((i * 7 + round) % 5) as u64))
                            .await;
                    }
                    let r = http
                        .delete(format!("{url}/{}", s.id))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap();
                    assert!(matches!(r.status().as_u16(), 200 | 202), "{}", r.status());
                    ids.push(s.id);
                }
                ids
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        // Every session ends: none is left running or waiting because a DELETE was lost.
        wait_until(Duration::from_secs(20), || async {
            let (_, list) = a.admin("GET", "/api/v1/sessions?limit=1000", None).await;
            let all: Vec<Session> = serde_json::from_value(list["items"].clone()).unwrap();
            let open: Vec<_> = all
                .iter()
                .filter(|s| !matches!(s.state, SessionState::Ended | SessionState::Failed))
                .map(|s| (s.id.to_string(), s.state))
                .collect();
            if all.len() == CLIENTS * ROUNDS && open.is_empty() {
                Ok(())
            } else {
                Err(format!("{} sessions, not over: {open:?}", all.len()))
            }
        })
        .await;
        node.round_trip().await;
        // The node's commands in the order it got them: never more running than its slots.
        let mut running = BTreeSet::new();
        let mut starts = 0;
        for cmd in node.commands.lock().unwrap().iter() {
            match cmd {
                pxs_protocol::node::CoordinatorToNode::StartSession { session_id, .. } => {
                    starts += 1;
                    assert!(
                        running.insert(session_id.clone()),
                        "{session_id} started twice"
                    );
                    assert!(
                        running.len() <= SLOTS as usize,
                        "{b:?}: the node was asked to run {} sessions at once: {running:?}",
                        running.len()
                    );
                }
                pxs_protocol::node::CoordinatorToNode::StopSession { session_id } => {
                    running.remove(session_id);
                }
                _ => {}
            }
        }
        assert!(running.is_empty(), "still running on the node: {running:?}");
        assert!(starts > SLOTS as usize, "{b:?}: only {starts} starts");
        eprintln!(
            "{b:?}: {} sessions, {starts} started on the node",
            ids.len()
        );
    }
}

/// PostgreSQL ranks candidate nodes on a picture up to 250 ms old; what it promises is counted
/// again on the node it locks. One slot: the first POST takes it (and leaves behind a picture
/// read before its own insert, with the slot still free); the second, right after, ranks on
/// that picture, finds the node full when it counts again, and queues. A booking's refusal is
/// decided on a fresh read (here the running session has no end, so it blocks every later
/// window on the only node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_ranked_on_an_old_picture_is_counted_again() {
    let Some(pg) = postgres_only("SQLite places one at a time") else {
        return;
    };
    let db = fresh_database(&pg, "old-picture").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let _node = FakeNode::connect(&coord, "n1", "demo", 1, false).await;
    coord.wait_for_node("n1").await;
    let launch = || {
        coord.admin(
            "POST",
            "/api/v1/sessions",
            Some(json!({"title_id": "demo"})),
        )
    };
    let (st, first) = launch().await;
    assert_eq!(
        (st, first["state"].as_str()),
        (201, Some("starting")),
        "{first}"
    );
    let (st, second) = launch().await;
    assert_eq!(
        (st, second["state"].as_str()),
        (201, Some("queued")),
        "{second}"
    );
    assert_eq!(second["queue_position"], 1, "{second}");
    // Booked an hour ahead for ten minutes: refused, since the running session has no end.
    let later = pxs_coordinator::engine::rfc3339(coord.engine().now() + 3_600_000);
    let (st, v) = coord
        .admin(
            "POST",
            "/api/v1/sessions",
            Some(json!({"title_id": "demo", "start_at": later, "duration": 600})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    let (_, list) = coord.admin("GET", "/api/v1/sessions", None).await;
    let starting = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "starting")
        .count();
    assert_eq!(starting, 1, "{list}");
}

/// The catalog's reads are shared by requests that arrive together, yet each answer counts
/// every change made before its request: while eight clients read the catalog without pause,
/// each Launch is followed by a read that shows one free slot fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catalog_read_shared_under_load_still_sees_every_earlier_change() {
    for b in backends() {
        let db = fresh_database(&b, "catalog-shared").await;
        let coord = Coord::start(&db, FAST_TIMING).await;
        coord.title("demo", "demo", json!({})).await;
        const CAPACITY: u32 = 12;
        let _node = FakeNode::connect(&coord, "n1", "demo", CAPACITY, false).await;
        let free = |c: &Coord| {
            let (http, url) = (c.http.clone(), c.url("/api/v1/titles/demo"));
            async move {
                let v: serde_json::Value =
                    http.get(url).send().await.unwrap().json().await.unwrap();
                v["availability"]["free_slots"].as_u64().unwrap()
            }
        };
        wait_until(Duration::from_secs(5), || async {
            match free(&coord).await {
                n if n == u64::from(CAPACITY) => Ok(()),
                n => Err(format!("{n} free")),
            }
        })
        .await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..8 {
            let stop = stop.clone();
            let (http, url) = (coord.http.clone(), coord.url("/api/v1/titles"));
            readers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(
                        http.get(url.clone())
                            .send()
                            .await
                            .unwrap()
                            .status()
                            .is_success()
                    );
                    n += 1;
                }
                n
            }));
        }
        for started in 1..=CAPACITY {
            let (st, s) = coord
                .admin(
                    "POST",
                    "/api/v1/sessions",
                    Some(json!({"title_id": "demo"})),
                )
                .await;
            assert_eq!((st, s["state"].as_str()), (201, Some("starting")), "{s}");
            assert_eq!(
                free(&coord).await,
                u64::from(CAPACITY - started),
                "{b:?}: after launch {started}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.await.unwrap() > 0);
        }
    }
}
