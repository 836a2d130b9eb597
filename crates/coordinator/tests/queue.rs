//! The queue with a real node of one slot: three requests get the slot and positions 1 and 2,
//! and start in order as the slot frees. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::SessionState;
use serde_json::json;
use std::time::Duration;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "queue").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let node = NodeProcess::start(&coord.link_url(), "n1", 1, &temp_dir("queue-node"));
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(pxs_protocol::api::NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node.log())),
        }
    })
    .await;

    let a = coord.create(json!({"title_id": "demo"})).await;
    let b = coord.create(json!({"title_id": "demo"})).await;
    let c = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!(a.state, SessionState::Starting);
    assert_eq!((b.state, b.queue_position), (SessionState::Queued, Some(1)));
    assert_eq!((c.state, c.queue_position), (SessionState::Queued, Some(2)));
    let (_, titles) = coord.admin("GET", "/api/v1/titles/demo", None).await;
    assert_eq!(titles["availability"]["queued"], 2, "{titles}");
    assert_eq!(titles["availability"]["free_slots"], 0, "{titles}");

    coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", a.id), None)
        .await;
    coord
        .wait_state(&a.id, SessionState::Ended, Duration::from_secs(20))
        .await;
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    let c_now = coord.session(&c.id).await;
    assert_eq!(
        (c_now.state, c_now.queue_position),
        (SessionState::Queued, Some(1))
    );

    // Cancelling the queued one works too; then the slot goes to nobody until b ends.
    let (status, v) = coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", c.id), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["end_reason"], "cancelled");
    let d = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!((d.state, d.queue_position), (SessionState::Queued, Some(1)));
    coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", b.id), None)
        .await;
    coord
        .wait_state(&d.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    let b_end = coord.session(&b.id).await;
    assert_eq!(b_end.end_reason.map(|r| r.as_str()), Some("stopped"));
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_start_in_order_as_slots_free() {
    for b in backends() {
        story(b).await;
    }
}
