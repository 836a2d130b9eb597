//! The coordinator restarts mid-way: its state is intact, the node reconnects, no session is lost
//! or started twice, and the queue goes on. On SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{NodeState, SessionState};
use serde_json::json;
use std::time::Duration;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "restart").await;
    let mut coord = Coord::start(&db, FAST_TIMING).await;
    let listen = coord.addr.to_string();
    coord.title("demo", "demo", json!({})).await;
    let dir = temp_dir("restart-node");
    let node = NodeProcess::start(&coord.link_url(), "n1", 2, &dir);
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node.log())),
        }
    })
    .await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    let b = coord.create(json!({"title_id": "demo"})).await;
    let c = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!(c.state, SessionState::Queued);
    let a_ready = coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(30))
        .await;

    coord.stop().await;
    // Restart on the same address so the node finds it again.
    let coord = Coord::start_on(
        &db,
        FAST_TIMING,
        &listen,
        std::sync::Arc::new(pxs_coordinator::SystemClock),
    )
    .await;
    // The node's hello records a time; its first heartbeat on the new link, the one that
    // reconciles, records a later one: wait for both.
    let last_heartbeat = || async {
        let (_, n) = coord.admin("GET", "/api/v1/nodes/n1", None).await;
        (n["state"] == "online").then(|| n["last_heartbeat"].clone())
    };
    let at_hello = Some(
        wait_until(Duration::from_secs(20), || async {
            last_heartbeat()
                .await
                .ok_or_else(|| format!("node not back\n{}", node.log()))
        })
        .await,
    );
    wait_until(Duration::from_secs(20), || async {
        let now = last_heartbeat().await;
        if now.is_some() && now != at_hello {
            Ok(())
        } else {
            Err(format!("no heartbeat after the hello yet: {now:?}"))
        }
    })
    .await;
    let a2 = coord.session(&a.id).await;
    let b2 = coord.session(&b.id).await;
    let c2 = coord.session(&c.id).await;
    assert_eq!(a2.state, SessionState::Ready, "{a2:?}");
    assert_eq!(b2.state, SessionState::Ready, "{b2:?}");
    assert_eq!(
        a2.ready_at, a_ready.ready_at,
        "the same session, not a new one"
    );
    assert_eq!(
        (c2.state, c2.queue_position),
        (SessionState::Queued, Some(1))
    );
    let (_, list) = coord.admin("GET", "/api/v1/sessions", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    let (_, n) = coord.admin("GET", "/api/v1/nodes/n1", None).await;
    assert_eq!(n["sessions"], 2, "{n}");
    // Each session was launched once: one streamer log each on the node.
    let logs = std::fs::read_dir(dir.join("node").join("logs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(logs, 2, "two sessions launched on the node");

    coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", a.id), None)
        .await;
    coord
        .wait_state(&c.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_loses_and_duplicates_nothing() {
    for b in backends() {
        story(b).await;
    }
}
