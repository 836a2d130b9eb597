//! Sessions run side by side: each on its own loopback streamer port with its own signalling,
//! all reached through the node's one HTTP port, routed by session id, behind its token.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::{EndReason, ObservedState, SessionEventKind};
use pxs_session_server::SessionServer;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sessions_run_at_once_on_their_own_ports_and_each_is_ready() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("three");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("demo", &["-RenderOffScreen"], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let hello = coord.seen.lock().unwrap().hellos[0].clone();
    assert_eq!(hello.node.as_str(), "test-node");
    assert_eq!(hello.applications[0].id.as_str(), "demo");
    assert_eq!(hello.capacity.max_sessions, 8);
    assert!(hello.gpus.is_empty(), "gpus = \"none\"");

    let ids = [sid("a"), sid("b"), sid("c")];
    for id in &ids {
        coord.start_session(id, "demo");
    }
    for id in &ids {
        let url = coord.wait_ready(id, Duration::from_secs(60)).await;
        assert_eq!(url, format!("ws://127.0.0.1:1/sessions/{id}/ws"));
    }
    // Three different streamer ports, from the log lines of each session's application.
    let mut ports = Vec::new();
    for id in &ids {
        let log = std::fs::read_to_string(dir.join("logs").join(format!("{id}.log")))
            .expect("per-session log");
        let started: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &serde_json::Value| v["event"] == "started")
            .expect("the streamer's started line in its log");
        assert_eq!(started["streamer_id"], id.as_str());
        assert_eq!(
            (started["width"].as_u64(), started["height"].as_u64()),
            (Some(320), Some(240))
        );
        ports.push(started["signalling_url"].as_str().unwrap().to_owned());
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct streamer ports: {ports:?}");
    assert!(ports.iter().all(|p| p.starts_with("ws://127.0.0.1:")));

    // Heartbeats carry the observed state.
    wait_until(Duration::from_secs(5), || {
        let s = coord.seen.lock().unwrap();
        std::future::ready(match s.heartbeats.last() {
            Some(h)
                if h.sessions.len() == 3
                    && h.sessions.iter().all(|x| x.state == ObservedState::Ready) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        })
    })
    .await;

    // Players: routed by id, token checked at the upgrade.
    let addr = server.addr();
    assert_eq!(player(addr, &ids[0], None).await.err(), Some(401));
    assert_eq!(player(addr, &ids[0], Some("wrong")).await.err(), Some(401));
    assert_eq!(
        player(addr, &sid("nope"), Some(PLAYER_TOKEN)).await.err(),
        Some(404)
    );
    let mut p = player(addr, &ids[1], Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let first = tokio::time::timeout(Duration::from_secs(5), p.next())
        .await
        .expect("config arrives")
        .expect("open")
        .expect("frame");
    assert!(first.to_text().unwrap().contains("\"config\""), "{first:?}");
    p.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"listStreamers"}"#,
    ))
    .await
    .unwrap();
    let list = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), p.next())
            .await
            .expect("reply")
            .expect("open")
            .expect("frame");
        if m.to_text().unwrap().contains("streamerList") {
            break m.to_text().unwrap().to_owned();
        }
    };
    assert!(
        list.contains(ids[1].as_str()),
        "the session's own streamer: {list}"
    );
    assert!(
        !list.contains(ids[0].as_str()),
        "not another session's: {list}"
    );

    server.shutdown().await.expect("clean shutdown");
    for id in &ids {
        let e = coord.wait_ended(id, Duration::from_secs(10)).await;
        assert_eq!(e.reason, EndReason::NodeShutdown);
        let pid = coord.pid_of(id).unwrap();
        assert!(!alive(pid), "{id}'s process {pid} is gone");
    }
    coord.check_delivery();
    assert!(!dir.join("session-server.pid").exists());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["sessions"], serde_json::json!([]));
    let starting = coord
        .events_of(&ids[0])
        .into_iter()
        .find(|k| matches!(k, SessionEventKind::Starting { .. }));
    assert!(starting.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_for_an_unknown_application_is_rejected() {
    let coord = Coordinator::start().await;
    let (server, _dir) = linked_demo_node(&coord, "unknown").await;
    coord.start_session(&sid("x"), "nope");
    let e = coord.wait_ended(&sid("x"), Duration::from_secs(5)).await;
    assert_eq!(e.reason, EndReason::Rejected);
    assert_eq!(e.detail.as_deref(), Some("unknown application `nope`"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_every_session_and_refuses_new_ones() {
    let coord = Coordinator::start().await;
    let (server, _dir) = linked_demo_node(&coord, "drain").await;
    let (a, b) = (sid("d1"), sid("d2"));
    coord.start_session(&a, "demo");
    coord.start_session(&b, "demo");
    coord.wait_ready(&a, Duration::from_secs(60)).await;
    coord.wait_ready(&b, Duration::from_secs(60)).await;
    assert!(coord.send(pxs_protocol::node::CoordinatorToNode::Drain));
    for id in [&a, &b] {
        let e = coord.wait_ended(id, Duration::from_secs(10)).await;
        assert_eq!(e.reason, EndReason::Drained);
        assert!(!alive(coord.pid_of(id).unwrap()));
    }
    let c = sid("d3");
    coord.start_session(&c, "demo");
    let e = coord.wait_ended(&c, Duration::from_secs(5)).await;
    assert_eq!(e.reason, EndReason::Rejected);
    wait_until(Duration::from_secs(5), || {
        let s = coord.seen.lock().unwrap();
        std::future::ready(match s.heartbeats.last() {
            Some(h) if h.draining && h.free_slots == 0 => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })
    .await;
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

/// Waits for a heartbeat that says `draining` is `want`.
async fn wait_draining(coord: &Coordinator, want: bool) {
    wait_until(Duration::from_secs(10), || {
        let s = coord.seen.lock().unwrap_or_else(|e| e.into_inner());
        std::future::ready(match s.heartbeats.last() {
            Some(h) if h.draining == want => Ok(()),
            other => Err(format!("want draining = {want}: {other:?}")),
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_drain_lets_sessions_run_refuses_new_ones_and_stops_them_at_its_deadline() {
    use pxs_protocol::node::CoordinatorToNode;
    let coord = Coordinator::start().await;
    let (server, _dir) = linked_demo_node(&coord, "drain-gracefully").await;
    let a = sid("g1");
    coord.start_session(&a, "demo");
    coord.wait_ready(&a, Duration::from_secs(60)).await;
    assert!(coord.send(CoordinatorToNode::DrainGracefully {
        stop_after_ms: None
    }));
    wait_draining(&coord, true).await;
    // The heartbeat that reports the drain still reports the session ready, not being stopped
    // (a stop would leave the process alive for its grace period, so `alive` alone can't tell).
    {
        let seen = coord.seen.lock().unwrap_or_else(|e| e.into_inner());
        let draining = seen.heartbeats.iter().rev().find(|h| h.draining).unwrap();
        let state = draining
            .sessions
            .iter()
            .find(|st| st.session_id == a)
            .map(|st| st.state);
        assert_eq!(state, Some(pxs_protocol::node::ObservedState::Ready));
    }
    let refused = sid("g2");
    coord.start_session(&refused, "demo");
    let e = coord.wait_ended(&refused, Duration::from_secs(5)).await;
    assert_eq!(e.reason, EndReason::Rejected);
    assert_eq!(e.detail.as_deref(), Some("the node is draining"));
    // The refusal was answered after the drain: the running session was left alone.
    assert!(alive(coord.pid_of(&a).unwrap()));
    assert!(
        !coord
            .events_of(&a)
            .iter()
            .any(|k| matches!(k, SessionEventKind::Ended(_))),
        "a drain without a deadline stops nothing"
    );

    // A deadline: the session still running is stopped then, reason `drained`.
    let sent = std::time::Instant::now();
    assert!(coord.send(CoordinatorToNode::DrainGracefully {
        stop_after_ms: Some(500)
    }));
    let e = coord.wait_ended(&a, Duration::from_secs(10)).await;
    assert!(sent.elapsed() >= Duration::from_millis(500));
    assert_eq!(e.reason, EndReason::Drained);
    assert!(!e.failed);

    // Resume: new sessions start again.
    assert!(coord.send(CoordinatorToNode::Resume));
    wait_draining(&coord, false).await;
    let b = sid("g3");
    coord.start_session(&b, "demo");
    coord.wait_ready(&b, Duration::from_secs(60)).await;
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_drain_file_drains_the_node_until_removed_and_a_bad_one_changes_nothing() {
    use pxs_session_server::state::{self, DrainRequest};
    let coord = Coordinator::start().await;
    let dir = temp_dir("drain-operator");
    let data = dir.join("data");
    let toml = config_toml(&coord, &data, "", &streamer_app("demo", &[], ""));
    // Drained before it starts: the first hello says so.
    std::fs::create_dir_all(&data).unwrap();
    state::write_drain(&data, &DrainRequest { deadline: None }).unwrap();
    let server = start_server(&toml).await;
    coord.wait_linked(Duration::from_secs(10)).await;
    assert!(coord.seen.lock().unwrap().hellos[0].draining);
    // A coordinator's resume leaves the operator's drain in force.
    assert!(coord.send(pxs_protocol::node::CoordinatorToNode::Resume));
    let refused = sid("o1");
    coord.start_session(&refused, "demo");
    let e = coord.wait_ended(&refused, Duration::from_secs(5)).await;
    assert_eq!(e.detail.as_deref(), Some("the node is draining"));
    // A file that is not a drain request is reported and changes nothing.
    std::fs::write(data.join(state::DRAIN_FILE), "{\"deadline\": \"soon\"}").unwrap();
    coord.seen.lock().unwrap().heartbeats.clear();
    wait_until(Duration::from_secs(5), || {
        let s = coord.seen.lock().unwrap();
        std::future::ready(
            (s.heartbeats.len() >= 2)
                .then_some(())
                .ok_or("two heartbeats".to_owned()),
        )
    })
    .await;
    wait_draining(&coord, true).await;
    assert!(state::remove_drain(&data).unwrap());
    wait_draining(&coord, false).await;
    let a = sid("o2");
    coord.start_session(&a, "demo");
    coord.wait_ready(&a, Duration::from_secs(60)).await;
    server.shutdown().await.unwrap();
}

/// A session server with the `demo` streamer application in a fresh dir named `name`, linked to
/// `coord`; returns it and its dir.
async fn linked_demo_node(coord: &Coordinator, name: &str) -> (SessionServer, PathBuf) {
    let dir = temp_dir(name);
    let server = start_server(&config_toml(
        coord,
        &dir,
        "",
        &streamer_app("demo", &[], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    (server, dir)
}
