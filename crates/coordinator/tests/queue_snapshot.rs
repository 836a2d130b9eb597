//! Queue positions under churn (issue 9, case 7): a list of queued sessions is read while others
//! join and leave the queue. Every read must show one consistent queue: the positions of a
//! title's queued sessions are exactly 1..n, never 0, never twice.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{self, SessionState};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "queue-snapshot").await;
    let coord = Arc::new(Coord::start(&db, FAST_TIMING).await);
    coord.title("demo", "demo", json!({})).await;
    let (_node, beat) = online_fake_node(&coord, "n1", "demo", 1).await;
    let running = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&running.id, SessionState::Ready, Duration::from_secs(10))
        .await;

    // Churn: two writers keep the queue at about 10, each adding at its tail and cancelling
    // its own oldest.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (coord, stop) = (coord.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut mine = std::collections::VecDeque::new();
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let s = coord.create(json!({"title_id": "demo"})).await;
                assert_eq!(s.state, SessionState::Queued);
                mine.push_back(s.id);
                if mine.len() > 5 {
                    let id = mine.pop_front().unwrap();
                    let (st, v) = coord
                        .admin("DELETE", &format!("/api/v1/sessions/{id}"), None)
                        .await;
                    assert_eq!(st, 200, "{v}");
                }
            }
        }));
    }

    let mut reads = 0;
    let mut seen_queue = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while reads < 1500 && tokio::time::Instant::now() < deadline {
        let (st, v) = coord
            .admin("GET", "/api/v1/sessions?state=queued&title_id=demo", None)
            .await;
        assert_eq!(st, 200, "{v}");
        let list: Vec<api::Session> = serde_json::from_value(v["items"].clone()).unwrap();
        let mut positions: Vec<u32> = list
            .iter()
            .map(|s| s.queue_position.expect("a queued session has a position"))
            .collect();
        positions.sort_unstable();
        let want: Vec<u32> = (1..=u32::try_from(list.len()).unwrap()).collect();
        assert_eq!(
            positions, want,
            "read {reads}: the positions of one queue, read at once"
        );
        seen_queue = seen_queue.max(list.len());
        // One session alone agrees with itself as well.
        if let Some(s) = list.first() {
            let one = coord.session(&s.id).await;
            if one.state == SessionState::Queued {
                assert!(one.queue_position.is_some_and(|p| p >= 1), "{one:?}");
            }
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    beat.abort();
    assert!(
        seen_queue >= 5,
        "the queue never filled: at most {seen_queue}"
    );
    assert!(reads >= 100, "only {reads} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_positions_are_read_from_one_snapshot() {
    for backend in backends() {
        story(backend).await;
    }
}
