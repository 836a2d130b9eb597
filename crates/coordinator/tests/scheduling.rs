//! Scheduled sessions with a clock moved by hand: a reservation holds its window (409 for an
//! overlapping one, not for an adjacent one), blocks open-ended sessions but not short ones
//! that end before it, survives a coordinator restart, starts a lead time before `start_at` and
//! ends at the end of its window. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_coordinator::ManualClock;
use pxs_coordinator::engine::rfc3339;
use pxs_protocol::api::SessionState;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Long heartbeat TTL: the fake node must not go offline when the clock jumps by hours.
const TIMING: &str = "[timing]\ntick = \"20ms\"\nheartbeat_ttl = \"1000h\"\nnode_lost_grace = \"1000h\"\nschedule_lead = \"60s\"\n";

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "schedule").await;
    let t0 = pxs_coordinator::Clock::now_ms(&pxs_coordinator::SystemClock);
    let clock = Arc::new(ManualClock::new(t0));
    let mut coord = Coord::start_on(&db, TIMING, "127.0.0.1:0", clock.clone()).await;
    let listen = coord.addr.to_string();
    coord.title("demo", "demo", json!({})).await;
    let node = FakeNode::connect(&coord, "n1", "demo", 1, true).await;
    coord.wait_for_node("n1").await;

    let at = |ms: i64| rfc3339(t0 + ms);
    let first = coord
        .create(json!({"title_id": "demo", "start_at": at(HOUR), "duration": 3600}))
        .await;
    assert_eq!(first.state, SessionState::Scheduled);
    assert_eq!(first.node_id.as_ref().unwrap().as_str(), "n1");
    let (status, v) = coord
        .admin(
            "POST",
            "/api/v1/sessions",
            Some(json!({"title_id": "demo", "start_at": at(HOUR + 30 * MIN), "duration": 3600})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("no node"),
        "{v}"
    );
    let second = coord
        .create(json!({"title_id": "demo", "start_at": at(2 * HOUR), "duration": 600}))
        .await;
    assert_eq!(second.state, SessionState::Scheduled);

    // An open-ended session now would run into the reservation: it waits.
    let open = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!(open.state, SessionState::Queued);
    coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", open.id), None)
        .await;
    // A short one that ends before the window starts is fine.
    let short = coord
        .create(json!({"title_id": "demo", "duration": 1800}))
        .await;
    assert_eq!(short.state, SessionState::Starting);
    coord
        .wait_state(&short.id, SessionState::Ready, Duration::from_secs(5))
        .await;

    // Reservations survive a restart (same database, same clock); the node comes back.
    coord.stop().await;
    node.disconnect();
    coord = Coord::start_on(&db, TIMING, &listen, clock.clone()).await;
    let node = FakeNode::connect(&coord, "n1", "demo", 1, true).await;
    assert_eq!(
        coord.session(&first.id).await.state,
        SessionState::Scheduled
    );
    assert_eq!(
        coord.session(&second.id).await.state,
        SessionState::Scheduled
    );
    // The node reports the short session still running (it kept running while we were down).
    node.running.lock().unwrap().push(short.id.clone());
    node.heartbeat();

    // The short one's window ends at +30 min: stopped by the coordinator.
    clock.advance(30 * MIN);
    let short_end = coord
        .wait_state(&short.id, SessionState::Ended, Duration::from_secs(5))
        .await;
    assert_eq!(short_end.end_reason.map(|r| r.as_str()), Some("window_end"));
    // Not yet: the lead time is 60 s.
    clock.advance(28 * MIN);
    // A timer pass at this time (the test's own, so it has certainly run) leaves it scheduled.
    coord.engine().tick().await;
    assert_eq!(
        coord.session(&first.id).await.state,
        SessionState::Scheduled
    );
    // Within the lead time: started, and ready when the node says so.
    clock.advance(90_000);
    coord
        .wait_state(&first.id, SessionState::Ready, Duration::from_secs(5))
        .await;
    // The end of its window (+2 h) ends it; the adjacent reservation starts.
    clock.advance(HOUR + MIN);
    let ended = coord
        .wait_state(&first.id, SessionState::Ended, Duration::from_secs(5))
        .await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("window_end"));
    coord
        .wait_state(&second.id, SessionState::Ready, Duration::from_secs(5))
        .await;
    assert_eq!(node.starts(), vec![first.id.clone(), second.id.clone()]);
    // Start_at in the past is refused.
    let (status, v) = coord
        .admin(
            "POST",
            "/api/v1/sessions",
            Some(json!({"title_id": "demo", "start_at": at(0), "duration": 60})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_sessions_hold_their_window_and_start_on_time() {
    for b in backends() {
        story(b).await;
    }
}
