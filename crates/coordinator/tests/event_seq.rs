//! A node's event numbers out of step with the coordinator (issue 9, case 2): a node that lost
//! its data dir and counts from 1 again, or a hostile peer with the fleet token that sends
//! `seq` 2^63. The coordinator never moves `acked` past the next expected number: an event that
//! skips ahead is refused, the link is closed with the reason, and a node that numbers from the
//! welcome's `acked + 1` is heard again.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::api::SessionState;
use pxs_protocol::node::{
    ApplicationId, CoordinatorToNode, NodeId, NodeToCoordinator, SequencedEvent, SessionEvent,
    SessionEventKind, SessionId,
};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws = NodeSocket;

/// A link as node `n1` with one slot of `demo`; returns the socket and the welcome's `acked`.
async fn link(coord: &Coord) -> (Ws, u64) {
    node_link(coord, "n1", "demo", 1).await
}

/// The next message from the coordinator; None once the link is closed.
async fn next(ws: &mut Ws) -> Option<CoordinatorToNode> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the coordinator answers");
        match m {
            Some(Ok(Message::Text(t))) => return Some(CoordinatorToNode::from_json(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the coordinator closes the link; returns the close frame's code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the coordinator closes the link");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
            Some(Ok(_)) => {}
        }
    }
}

fn event(seq: u64, id: &SessionId, kind: SessionEventKind) -> Message {
    Message::text(
        NodeToCoordinator::Event(SequencedEvent {
            seq,
            event: SessionEvent {
                session_id: id.clone(),
                at: 0,
                kind,
            },
        })
        .to_json(),
    )
}

fn starting() -> SessionEventKind {
    SessionEventKind::Starting {
        application_id: ApplicationId::parse("demo").unwrap(),
        pid: 1,
        gpu: None,
    }
}

fn ready(id: &SessionId) -> SessionEventKind {
    SessionEventKind::Ready {
        player_url: format!("ws://n1.invalid/sessions/{id}/ws"),
    }
}

async fn acked_seq(coord: &Coord) -> i64 {
    let mut c = coord.engine().store.pool().acquire().await.unwrap();
    pxs_coordinator::store::acked_seq(&mut c, &NodeId::parse("n1").unwrap())
        .await
        .unwrap()
}

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "event-seq").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;

    // A first life of the node: three events, acknowledged.
    let (mut ws, acked) = link(&coord).await;
    assert_eq!(acked, 0);
    let s = coord.create(json!({"title_id": "demo"})).await;
    let id = s.id.clone();
    loop {
        match next(&mut ws).await {
            Some(CoordinatorToNode::StartSession { session_id, .. }) if session_id == id => break,
            Some(_) => {}
            None => panic!("link closed before the start"),
        }
    }
    ws.send(event(1, &id, starting())).await.unwrap();
    ws.send(event(2, &id, ready(&id))).await.unwrap();
    coord
        .wait_state(&id, SessionState::Ready, Duration::from_secs(5))
        .await;
    assert_eq!(acked_seq(&coord).await, 2);

    // A hostile event far ahead, with the fleet token: refused, `acked` unchanged, the link
    // closed with the reason; the session is untouched.
    ws.send(event(
        1 << 63,
        &id,
        SessionEventKind::Ended(pxs_protocol::node::Ended {
            reason: pxs_protocol::node::EndReason::Crashed,
            failed: true,
            exit_code: Some(1),
            signal: None,
            detail: None,
        }),
    ))
    .await
    .unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("out of step"), "{reason}");
    assert_eq!(acked_seq(&coord).await, 2);
    assert_eq!(coord.session(&id).await.state, SessionState::Ready);

    // The node comes back numbering from 1 (its data dir was lost): those are repeats of what
    // the coordinator has, as far as it can tell; the welcome tells the node where to go on.
    let (mut ws, acked) = link(&coord).await;
    assert_eq!(acked, 2, "the welcome carries the coordinator's acked");
    // Numbering from acked + 1 is heard: the session ends as the node says.
    ws.send(event(
        acked + 1,
        &id,
        SessionEventKind::Ended(pxs_protocol::node::Ended {
            reason: pxs_protocol::node::EndReason::Exited,
            failed: false,
            exit_code: Some(0),
            signal: None,
            detail: None,
        }),
    ))
    .await
    .unwrap();
    let ended = coord
        .wait_state(&id, SessionState::Ended, Duration::from_secs(5))
        .await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("exited"));
    assert_eq!(acked_seq(&coord).await, 3);

    // A gap of one is refused as well: numbering is strictly one after another.
    ws.send(event(5, &id, starting())).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(acked_seq(&coord).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_of_step_are_refused_and_the_node_is_heard_again() {
    for backend in backends() {
        story(backend).await;
    }
}
