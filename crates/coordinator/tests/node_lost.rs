//! A node killed with its sessions: it goes offline after the heartbeat TTL, and its sessions end
//! as `node_lost` after the grace period. When it comes back it is online again and the
//! coordinator does not resurrect the lost session.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{NodeState, SessionState};
use pxs_protocol::node::{
    ApplicationId, CoordinatorToNode, EndReason, Ended, NodeToCoordinator, SequencedEvent,
    SessionEvent, SessionEventKind,
};
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
    assert_eq!(lost.end_reason.map(|r| r.as_str()), Some("node_lost"));
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
    let fresh = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&fresh.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    // The node's events are numbered and applied in order, so by the fresh session's `ready`
    // whatever it replayed about the lost session after its restart has been applied too.
    let after = coord.session(&s.id).await;
    assert_eq!(after.end_reason.map(|r| r.as_str()), Some("node_lost"));
    drop(node2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_goes_offline_and_its_sessions_are_lost() {
    for b in backends() {
        story(b).await;
    }
}

/// Events that arrive together (a node's replay, `starting` and `ready` back to back) are
/// applied in order, each once: a repeated `seq` among them changes nothing, and the node is
/// acknowledged up to the last one.
async fn events_in_a_burst(backend: Backend) {
    let db = fresh_database(&backend, "burst-events").await;
    let c = Coord::start(&db, FAST_TIMING).await;
    c.title("demo", "demo", json!({})).await;
    let node = FakeNode::connect(&c, "n1", "demo", 3, false).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(c.create(json!({"title_id": "demo"})).await.id);
    }
    wait_until(Duration::from_secs(5), || async {
        let starts = node.starts().len();
        if starts == 3 {
            Ok(())
        } else {
            Err(format!("{starts} starts"))
        }
    })
    .await;
    let app = ApplicationId::parse("demo").unwrap();
    for id in &ids {
        node.send_event(
            id,
            SessionEventKind::Starting {
                application_id: app.clone(),
                pid: 1,
                gpu: None,
            },
        );
        node.send_event(
            id,
            SessionEventKind::Ready {
                player_url: format!("ws://n1.invalid/sessions/{id}/ws"),
            },
        );
    }
    // Seq 2 again, now claiming the first session ended: a repeat, to be ignored.
    node.send_raw(NodeToCoordinator::Event(SequencedEvent {
        seq: 2,
        event: SessionEvent {
            session_id: ids[0].clone(),
            at: 0,
            kind: SessionEventKind::Ended(Ended {
                reason: EndReason::Crashed,
                failed: true,
                exit_code: Some(1),
                signal: None,
                detail: None,
            }),
        },
    }));
    // One more real event (seq 7, a ready again): once it is acknowledged, the repeat before
    // it has been handled.
    node.send_event(
        &ids[1],
        SessionEventKind::Ready {
            player_url: format!("ws://n1.invalid/sessions/{}/ws", ids[1]),
        },
    );
    node.heartbeat();
    for id in &ids {
        c.wait_state(id, SessionState::Ready, Duration::from_secs(5))
            .await;
    }
    wait_until(Duration::from_secs(5), || async {
        let acked = node
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| match m {
                CoordinatorToNode::Ack { seq } => Some(*seq),
                _ => None,
            })
            .max();
        if acked == Some(7) {
            Ok(())
        } else {
            Err(format!("acked up to {acked:?}"))
        }
    })
    .await;
    assert_eq!(
        c.session(&ids[0]).await.state,
        SessionState::Ready,
        "the repeat was applied"
    );
    node.disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arriving_together_are_applied_in_order_and_once() {
    for b in backends() {
        events_in_a_burst(b).await;
    }
}
