//! Bookings and the queue people can trust (issue 14), with a clock moved by hand and a fake
//! node: the catalog's free slots are exactly the Launches that start (a reservation later on
//! takes a slot from an open-ended title now; a queue goes first); a queued session says about
//! how long it waits, from the windows of the sessions ahead and how long the title's recent
//! sessions lasted; a booking's node is told not to end it `empty` before its window's end (or,
//! with `timing.booking_empty_grace`, before its start plus the grace), while a session for now
//! keeps its title's empty timeout. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_coordinator::ManualClock;
use pxs_coordinator::engine::rfc3339;
use pxs_protocol::api::{self, SessionState};
use pxs_protocol::node::{CoordinatorToNode, SessionId};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Long heartbeat TTL: the fake node must not go offline when the clock jumps.
const TIMING: &str = "[timing]\ntick = \"20ms\"\nheartbeat_ttl = \"1000h\"\nnode_lost_grace = \"1000h\"\nschedule_lead = \"60s\"\n";
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const WAIT: Duration = Duration::from_secs(10);

async fn title(coord: &Coord, id: &str) -> api::Title {
    let (st, v) = coord
        .admin("GET", &format!("/api/v1/titles/{id}"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Launches `title` as the catalog's button does, as long as the catalog shows a free slot:
/// each of those starts, and the next one queues. Returns the started and the queued session.
async fn launches_match_the_catalog(coord: &Coord, id: &str) -> (Vec<api::Session>, api::Session) {
    let shown = title(coord, id).await.availability.free_slots;
    let mut started = Vec::new();
    for i in 0..shown {
        let s = coord.create(json!({"title_id": id})).await;
        assert_eq!(
            s.state,
            SessionState::Starting,
            "launch {} of the {shown} free slots the catalog showed for {id}",
            i + 1
        );
        started.push(s);
    }
    assert_eq!(title(coord, id).await.availability.free_slots, 0);
    let queued = coord.create(json!({"title_id": id})).await;
    assert_eq!(
        queued.state,
        SessionState::Queued,
        "the catalog showed no free slot of {id}"
    );
    (started, queued)
}

async fn cancel(coord: &Coord, id: &SessionId) {
    let (st, v) = coord
        .admin("DELETE", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert!(st == 200 || st == 202, "{v}");
}

async fn availability_agrees_with_placement(backend: Backend) {
    let db = fresh_database(&backend, "bookings-availability").await;
    let t0 = pxs_coordinator::Clock::now_ms(&pxs_coordinator::SystemClock);
    let clock = Arc::new(ManualClock::new(t0));
    let coord = Coord::start_on(&db, TIMING, "127.0.0.1:0", clock.clone()).await;
    coord.title("open", "demo", json!({})).await;
    coord
        .title("timed", "demo", json!({"max_duration": 600}))
        .await;
    let _node = FakeNode::connect(&coord, "n1", "demo", 2, true).await;
    wait_until(WAIT, || async {
        match title(&coord, "open").await.availability.free_slots {
            2 => Ok(()),
            n => Err(format!("{n} free slots, want 2")),
        }
    })
    .await;

    // One of the two slots is booked an hour from now, for an hour.
    let booking = coord
        .create(json!({"title_id": "open", "start_at": rfc3339(t0 + HOUR), "duration": 3600}))
        .await;
    assert_eq!(booking.state, SessionState::Scheduled);
    // An open-ended session would run into the booking on one slot, not on the other: one free
    // slot, and one Launch starts (before, the catalog said 2 and the second Launch queued).
    assert_eq!(title(&coord, "open").await.availability.free_slots, 1);
    let (open, queued) = launches_match_the_catalog(&coord, "open").await;
    assert_eq!(open.len(), 1);
    // A 10-minute session ends long before the booking: the slot is free for it, though not
    // for an open-ended one (before, the catalog said "1 free slot" here for both).
    let timed = title(&coord, "timed").await;
    assert_eq!(timed.availability.free_slots, 1, "{timed:?}");
    cancel(&coord, &queued.id).await;
    let (timed_started, timed_queued) = launches_match_the_catalog(&coord, "timed").await;
    assert_eq!(timed_started.len(), 1);

    // The queued one waits for a slot, and says about how long: the timed session's window
    // ends in 10 minutes.
    let q = coord.session(&timed_queued.id).await;
    assert_eq!(q.queue_reason.as_deref(), Some("slot"));
    assert_eq!(q.queue_position, Some(1));
    assert_eq!(q.estimated_wait_s, Some(600), "{q:?}");
    // While it waits, nobody overtakes it: the catalog shows no free slot for either title.
    assert_eq!(title(&coord, "timed").await.availability.free_slots, 0);
    assert_eq!(title(&coord, "open").await.availability.free_slots, 0);

    // Twenty minutes on, the timed session's window is over: it stops, and the queued one
    // takes its slot.
    clock.advance(20 * MIN);
    coord
        .wait_state(&timed_started[0].id, SessionState::Ended, WAIT)
        .await;
    coord
        .wait_state(&timed_queued.id, SessionState::Ready, WAIT)
        .await;
    // The open-ended session ends after 20 minutes: the title's typical length now.
    cancel(&coord, &open[0].id).await;
    coord
        .wait_state(&open[0].id, SessionState::Ended, WAIT)
        .await;
    cancel(&coord, &timed_queued.id).await;
    coord
        .wait_state(&timed_queued.id, SessionState::Ended, WAIT)
        .await;
    // Again one open-ended session fits beside the booking, and the next one queues. Five
    // minutes later, the running one is expected to go on for 15 more (a typical 20 less the 5
    // it ran), and so is the wait.
    let (open, queued) = launches_match_the_catalog(&coord, "open").await;
    assert_eq!(open.len(), 1);
    clock.advance(5 * MIN);
    let q = coord.session(&queued.id).await;
    assert_eq!(q.queue_reason.as_deref(), Some("slot"));
    assert_eq!(q.estimated_wait_s, Some(15 * 60), "{q:?}");
    // Once it has run longer than that, half a typical length more.
    clock.advance(30 * MIN);
    let q = coord.session(&queued.id).await;
    assert_eq!(q.estimated_wait_s, Some(10 * 60), "{q:?}");
    drop(booking);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_never_promises_a_slot_launch_cannot_give() {
    for b in backends() {
        availability_agrees_with_placement(b).await;
    }
}

/// The empty timeout the node was sent with the start of `id`.
fn empty_timeout_sent(node: &FakeNode, id: &SessionId) -> Option<u64> {
    node.commands.lock().unwrap().iter().find_map(|c| match c {
        CoordinatorToNode::StartSession {
            session_id,
            options,
            ..
        } if session_id == id => options.empty_timeout,
        _ => None,
    })
}

async fn booking_grace(backend: Backend, extra: &str, want: impl Fn(u64) -> bool, what: &str) {
    let db = fresh_database(&backend, "bookings-grace").await;
    let t0 = pxs_coordinator::Clock::now_ms(&pxs_coordinator::SystemClock);
    let clock = Arc::new(ManualClock::new(t0));
    let coord = Coord::start_on(
        &db,
        &format!("{TIMING}{extra}"),
        "127.0.0.1:0",
        clock.clone(),
    )
    .await;
    // The title's empty timeout is short: 5 s.
    coord
        .title("demo", "demo", json!({"empty_timeout": 5}))
        .await;
    let node = FakeNode::connect(&coord, "n1", "demo", 2, true).await;
    coord.wait_for_node("n1").await;
    let booked = coord
        .create(json!({"title_id": "demo", "start_at": rfc3339(t0 + HOUR), "duration": 3600}))
        .await;
    let now = coord
        .create(json!({"title_id": "demo", "duration": 600}))
        .await;
    coord.wait_state(&now.id, SessionState::Ready, WAIT).await;
    assert_eq!(
        empty_timeout_sent(&node, &now.id),
        Some(5),
        "a session for now keeps its title's empty timeout"
    );
    // The booking starts a lead time (60 s) before its window.
    clock.advance(HOUR - 30_000);
    coord
        .wait_state(&booked.id, SessionState::Ready, WAIT)
        .await;
    let sent = empty_timeout_sent(&node, &booked.id).unwrap();
    assert!(
        want(sent),
        "{what}: the booking's node was sent empty_timeout {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_not_ended_empty_before_its_window_ends() {
    for b in backends() {
        // By default: not before the end of its window (30 s before the start, plus an hour).
        booking_grace(b.clone(), "", |s| s >= 3630, "until the window's end").await;
        // With a grace of 10 minutes: from its start plus the grace.
        booking_grace(
            b,
            "booking_empty_grace = \"10m\"\n",
            |s| s == 630,
            "the start plus 10 minutes",
        )
        .await;
    }
}
