//! A session's whole life with a real session server and `pxs streamer`: create (anonymously,
//! with the owner key that comes back) → ready → the join URL admits a player (and a tampered
//! one does not) → delete with the owner key → ended; the event stream tells each step. On
//! SQLite, and on PostgreSQL when configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use pxs_protocol::api::SessionState;
use serde_json::json;
use std::time::Duration;

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "lifecycle").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let dir = temp_dir("lifecycle-node");
    let node = NodeProcess::start(&coord.link_url(), "n1", 2, &dir);
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(pxs_protocol::api::NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node.log())),
        }
    })
    .await;

    // Anonymous, as a visitor of the catalog would.
    let (status, v) = coord
        .call(
            "POST",
            "/api/v1/sessions",
            None,
            Some(json!({"title_id": "demo"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let created: pxs_protocol::api::Session = serde_json::from_value(v).unwrap();
    assert_eq!(created.state, SessionState::Starting);
    assert_eq!(created.node_id.as_ref().map(|n| n.as_str()), Some("n1"));
    // The visitor's credential for this session, shown this once.
    let key = created
        .owner_key
        .clone()
        .expect("an anonymous session has an owner key");

    // The event stream, opened by the same anonymous visitor with its owner key (`?token=`,
    // as a browser's EventSource sends it).
    let mut events = coord
        .http
        .get(coord.url(&format!(
            "/api/v1/sessions/{}/events?token={key}",
            created.id
        )))
        .send()
        .await
        .unwrap()
        .bytes_stream();

    let ready = coord
        .wait_state(&created.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    let join = ready
        .join_url
        .clone()
        .expect("a ready session has a join URL");
    assert!(join.starts_with("ws://127.0.0.1:"), "{join}");
    assert!(join.contains("token=pt1."), "{join}");

    // The join URL admits a player: the signalling server greets it with `config`.
    let (mut ws, _) = tokio_tungstenite::connect_async(join.as_str())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "config", "{first}");
    drop(ws);
    // A tampered token is refused before the upgrade.
    let tampered = format!("{}x", join);
    let err = tokio_tungstenite::connect_async(tampered.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let (status, v) = coord
        .call(
            "DELETE",
            &format!("/api/v1/sessions/{}", created.id),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["ended_by"], "owner", "{v}");
    let ended = coord
        .wait_state(&created.id, SessionState::Ended, Duration::from_secs(20))
        .await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("stopped"));
    assert!(ended.join_url.is_none());

    // The stream said starting, ready, ended, in that order (ready perhaps twice: once more
    // when the owner asked for the end, with `ended_by`), and then ended itself.
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = events.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the stream did not end after the session did: {text}"
    );
    let seen: Vec<(String, Option<String>)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            let v = serde_json::from_str::<serde_json::Value>(d.trim()).unwrap();
            (
                v["state"].as_str().unwrap().to_owned(),
                v["ended_by"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let mut states: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    states.dedup();
    assert_eq!(states, ["starting", "ready", "ended"], "{text}");
    assert_eq!(seen[0].1, None, "{text}");
    assert_eq!(
        seen.last().unwrap().1.as_deref(),
        Some("owner"),
        "the end says who: {text}"
    );

    // Still the same after a restart of the coordinator: the row is in the database.
    let mut coord = coord;
    coord.stop().await;
    let again = Coord::start(&db, FAST_TIMING).await;
    let s = again.session(&created.id).await;
    assert_eq!(
        (s.state, s.end_reason.map(|r| r.as_str())),
        (SessionState::Ended, Some("stopped"))
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_and_ends_through_the_api() {
    for b in backends() {
        story(b).await;
    }
}
