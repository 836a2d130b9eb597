//! Draining a node, with a real coordinator, real session servers and `pxs streamer`: an admin's
//! drain reaches the node, which takes no new sessions while the running ones go on; the node is
//! `drained` once they are over; a deadline ends them with reason `drained`; resume places
//! sessions again; the drain outlives a restart of both the coordinator and the node; and the
//! machine's operator drains with `pxs session-server drain`. On SQLite, and on PostgreSQL when
//! configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::{NodeState, SessionState};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A coordinator with the `demo` title and node `n1` (`slots` slots) online.
async fn world(backend: &Backend, name: &str, slots: u32) -> (Coord, NodeProcess) {
    let db = fresh_database(backend, name).await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let node = NodeProcess::start(&coord.link_url(), "n1", slots, &temp_dir(name));
    wait_node(&coord, &node, NodeState::Online).await;
    (coord, node)
}

async fn wait_node(coord: &Coord, node: &NodeProcess, want: NodeState) {
    wait_until(Duration::from_secs(30), || async {
        match coord.node_state(&node.name).await {
            Some(s) if s == want => Ok(()),
            s => Err(format!("node is {s:?}, want {want:?}\n{}", node.log())),
        }
    })
    .await;
}

/// The session server's own `/healthz` (its port is in its config file); `Err` while it does
/// not answer.
async fn try_healthz(node: &NodeProcess) -> Result<Value, String> {
    let toml = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    let listen = toml
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"');
    let r = reqwest::get(format!("http://{listen}/healthz"))
        .await
        .map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}

async fn healthz(node: &NodeProcess) -> Value {
    try_healthz(node).await.unwrap()
}

/// Waits until the session server itself says it drains (`want`).
async fn wait_node_draining(node: &NodeProcess, want: bool) {
    wait_until(Duration::from_secs(20), || async {
        let h = try_healthz(node).await?;
        if h["draining"] == want {
            Ok(())
        } else {
            Err(format!(
                "node healthz {h}, want draining = {want}\n{}",
                node.log()
            ))
        }
    })
    .await;
}

async fn post(coord: &Coord, path: &str, body: Option<Value>) -> Value {
    let (s, v) = coord.admin("POST", path, body).await;
    assert_eq!(s, 200, "POST {path}: {v}");
    v
}

/// Drain without a deadline: the running session goes on, a new one waits in the queue, the
/// node is drained once the session ends; resume places the waiting one.
async fn a_drain_lets_sessions_finish(backend: Backend) {
    let (coord, node) = world(&backend, "drain-finish", 2).await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(30))
        .await;

    let v = post(&coord, "/api/v1/nodes/n1/drain", None).await;
    assert_eq!(v["state"], "draining", "{v}");
    assert!(v.get("drain_deadline").is_none(), "{v}");
    wait_node_draining(&node, true).await;
    let b = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!(
        b.state,
        SessionState::Queued,
        "a drained node takes no new session"
    );
    // The node got the drain and still runs the session: nothing ends it.
    assert_eq!(healthz(&node).await["sessions"], 1);
    assert_eq!(coord.session(&a.id).await.state, SessionState::Ready);

    let (s, v) = coord
        .admin("DELETE", &format!("/api/v1/sessions/{}", a.id), None)
        .await;
    assert!((200..300).contains(&s), "{v}");
    let ended = coord
        .wait_state(&a.id, SessionState::Ended, Duration::from_secs(30))
        .await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("stopped"));
    wait_node(&coord, &node, NodeState::Drained).await;
    assert_eq!(coord.session(&b.id).await.state, SessionState::Queued);

    // The node is placed on again from its next heartbeat, which says it no longer drains.
    post(&coord, "/api/v1/nodes/n1/resume", None).await;
    wait_node_draining(&node, false).await;
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    wait_node(&coord, &node, NodeState::Online).await;
}

/// Drain with a deadline: the sessions still running then end with reason `drained`, not
/// before.
async fn a_drain_deadline_ends_sessions(backend: Backend) {
    let (coord, node) = world(&backend, "drain-deadline", 2).await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    let b = coord.create(json!({"title_id": "demo"})).await;
    for s in [&a, &b] {
        coord
            .wait_state(&s.id, SessionState::Ready, Duration::from_secs(30))
            .await;
    }
    let asked = Instant::now();
    let v = post(
        &coord,
        "/api/v1/nodes/n1/drain",
        Some(json!({"deadline": 2})),
    )
    .await;
    assert_eq!(v["state"], "draining", "{v}");
    assert!(v["drain_deadline"].is_string(), "{v}");
    for s in [&a, &b] {
        let ended = coord
            .wait_state(&s.id, SessionState::Ended, Duration::from_secs(30))
            .await;
        assert_eq!(
            ended.end_reason.map(|r| r.as_str()),
            Some("drained"),
            "{ended:?}"
        );
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "ended {:?} after the drain, before its deadline",
        asked.elapsed()
    );
    wait_node(&coord, &node, NodeState::Drained).await;
    // The admin's resume undoes it.
    post(&coord, "/api/v1/nodes/n1/resume", None).await;
    wait_node(&coord, &node, NodeState::Online).await;
    let c = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&c.id, SessionState::Ready, Duration::from_secs(30))
        .await;
}

/// The drain is a record: a coordinator that restarts keeps it, and tells the node, which lost
/// it in its own restart, after its hello.
async fn a_drain_outlives_restarts(backend: Backend) {
    let (mut coord, mut node) = world(&backend, "drain-restart", 1).await;
    let listen = coord.addr.to_string();
    // An hour from now, to the second, as an RFC 3339 time.
    let deadline = pxs_coordinator::engine::rfc3339((coord.engine().now() / 1000 + 3600) * 1000);
    let v = post(
        &coord,
        "/api/v1/nodes/n1/drain",
        Some(json!({ "deadline": deadline })),
    )
    .await;
    assert_eq!(v["drain_deadline"], deadline.as_str(), "{v}");
    wait_node_draining(&node, true).await;

    coord.stop().await;
    node.kill_hard();
    let coord2 = Coord::start_on(
        &coord.db,
        FAST_TIMING,
        &listen,
        std::sync::Arc::new(pxs_coordinator::SystemClock),
    )
    .await;
    let node2 = NodeProcess::start(&coord2.link_url(), "n1", 1, &node.dir);
    wait_node_draining(&node2, true).await;
    wait_node(&coord2, &node2, NodeState::Drained).await;
    let (_, v) = coord2.admin("GET", "/api/v1/nodes/n1", None).await;
    assert_eq!(v["drain_deadline"], deadline.as_str(), "{v}");
    let queued = coord2.create(json!({"title_id": "demo"})).await;
    assert_eq!(queued.state, SessionState::Queued);
    post(&coord2, "/api/v1/nodes/n1/resume", None).await;
    coord2
        .wait_state(&queued.id, SessionState::Ready, Duration::from_secs(30))
        .await;
}

/// `pxs session-server drain` and `resume`, run by the machine's operator against the running
/// session server (its config file names the data dir).
async fn the_operator_drains_with_the_cli(backend: Backend) {
    let (coord, node) = world(&backend, "drain-cli", 1).await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(pxs_bin())
            .arg("session-server")
            .arg("--config")
            .arg(node.dir.join("node.toml"))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = cli(&["drain", "--deadline", "soon"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--deadline"), "{text}");
    assert_eq!(
        healthz(&node).await["draining"],
        false,
        "a refused drain changes nothing"
    );

    let (code, text) = cli(&["drain", "--deadline", "2s"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("drain.json"), "{text}");
    wait_node_draining(&node, true).await;
    wait_node(&coord, &node, NodeState::Draining).await;
    let ended = coord
        .wait_state(&a.id, SessionState::Ended, Duration::from_secs(30))
        .await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("drained"));
    wait_node(&coord, &node, NodeState::Drained).await;
    let queued = coord.create(json!({"title_id": "demo"})).await;
    assert_eq!(queued.state, SessionState::Queued);

    let (code, text) = cli(&["resume"]);
    assert_eq!(code, Some(0), "{text}");
    wait_node_draining(&node, false).await;
    coord
        .wait_state(&queued.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    let (code, text) = cli(&["resume"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("nothing to undo"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drain_lets_running_sessions_finish_and_resume_places_again() {
    for b in backends() {
        a_drain_lets_sessions_finish(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drain_deadline_ends_the_sessions_still_running_as_drained() {
    for b in backends() {
        a_drain_deadline_ends_sessions(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drain_outlives_a_coordinator_and_node_restart() {
    for b in backends() {
        a_drain_outlives_restarts(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_drains_and_resumes_the_node_with_the_cli() {
    for b in backends() {
        the_operator_drains_with_the_cli(b).await;
    }
}

/// A node that missed the drain message (a full link queue, a link held by another coordinator
/// when the admin drained it) and so keeps reporting that it does not drain is told again, once
/// per heartbeat TTL, until it reports the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_the_node_does_not_report_is_sent_again() {
    let db = fresh_database(&Backend::Sqlite, "drain-resend").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    // This fake node never drains: its heartbeats always say `draining: false`.
    let (node, beat) = online_fake_node(&coord, "n1", "demo", 1).await;
    let (s, v) = coord
        .admin(
            "POST",
            "/api/v1/nodes/n1/drain",
            Some(json!({"deadline": 600})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let drains = || {
        node.commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    pxs_protocol::node::CoordinatorToNode::DrainGracefully { .. }
                )
            })
            .count()
    };
    let started = Instant::now();
    wait_until(Duration::from_secs(15), || async {
        match drains() {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} drain messages so far")),
        }
    })
    .await;
    // Not more often than the heartbeat TTL (2 s in FAST_TIMING).
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "three drains within {:?}",
        started.elapsed()
    );
    beat.abort();
}
