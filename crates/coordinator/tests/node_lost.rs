//! A node killed with its sessions: it goes offline after the heartbeat TTL, and its sessions end
//! as `node_lost` after the grace period. When it comes back it is online again and the
//! coordinator does not resurrect the lost session.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{NodeState, SessionState};
use serde_json::json;
use std::time::Duration;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "lost").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let dir = temp_dir("lost-node");
    let mut node = NodeProcess::start(&coord.link_url(), "n1", 2, &dir);
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node.log())),
        }
    })
    .await;
    let s = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&s.id, SessionState::Ready, Duration::from_secs(30))
        .await;

    node.kill_hard();
    kill_streamers_of(&dir);
    wait_until(Duration::from_secs(10), || async {
        match coord.node_state("n1").await {
            Some(NodeState::Offline) => Ok(()),
            s => Err(format!("node is {s:?}")),
        }
    })
    .await;
    let lost = coord
        .wait_state(&s.id, SessionState::Ended, Duration::from_secs(10))
        .await;
    assert_eq!(lost.end_reason.as_deref(), Some("node_lost"));
    let (_, t) = coord.admin("GET", "/api/v1/titles/demo", None).await;
    assert_eq!(t["availability"]["nodes"], 0, "{t}");

    // The node comes back (same name, same state dir): online, and the lost session stays over.
    let node2 = NodeProcess::start(&coord.link_url(), "n1", 2, &dir);
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node2.log())),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = coord.session(&s.id).await;
    assert_eq!(after.end_reason.as_deref(), Some("node_lost"));
    let fresh = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&fresh.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    drop(node2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_goes_offline_and_its_sessions_are_lost() {
    for b in backends() {
        story(b).await;
    }
}
