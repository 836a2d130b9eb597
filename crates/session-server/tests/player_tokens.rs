#![allow(clippy::unwrap_used)]
//! Players join with a token signed with the session's key (`StartOptions::player_token`), for
//! that session, not expired; or with the key itself. Everything else is refused with 401 at the
//! upgrade.

mod common;

use common::*;
use futures_util::StreamExt;
use pxs_protocol::node::{SessionId, UnixMillis};
use pxs_protocol::player_token::{Claims, Role, sign};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(key: &str, session: &SessionId, role: Role, exp: UnixMillis) -> String {
    sign(
        key.as_bytes(),
        &Claims {
            session_id: session.clone(),
            role,
            exp,
            name: Some("Ada".into()),
            link: None,
        },
    )
}

/// The first frame of an admitted player is the signalling's `config`.
async fn expect_config(ws: &mut Ws) {
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("config arrives")
        .expect("open")
        .expect("frame");
    assert!(first.to_text().unwrap().contains("\"config\""), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_session_admits_signed_tokens_and_the_key_and_refuses_the_rest() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("player-tokens");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("demo", &["-RenderOffScreen"], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("tokens");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let addr = server.addr();
    let in_a_minute = now_millis() + 60_000;

    // A signed controller token, in the query.
    let controller = token(PLAYER_TOKEN, &id, Role::Controller, in_a_minute);
    assert!(controller.starts_with("pt1."));
    let mut p = player(addr, &id, Some(&controller))
        .await
        .expect("a signed controller token joins");
    expect_config(&mut p).await;

    // A signed viewer token, as a bearer header.
    let viewer = token(PLAYER_TOKEN, &id, Role::Viewer, in_a_minute);
    let mut req = format!("ws://{addr}/sessions/{id}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {viewer}").parse().unwrap());
    let (mut v, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("a signed viewer token in the header joins");
    expect_config(&mut v).await;

    // Refused at the upgrade.
    let expired = token(PLAYER_TOKEN, &id, Role::Controller, now_millis() - 1_000);
    assert_eq!(player(addr, &id, Some(&expired)).await.err(), Some(401));
    let elsewhere = token(PLAYER_TOKEN, &sid("other"), Role::Controller, in_a_minute);
    assert_eq!(player(addr, &id, Some(&elsewhere)).await.err(), Some(401));
    let wrong_key = token("not-the-key", &id, Role::Controller, in_a_minute);
    assert_eq!(player(addr, &id, Some(&wrong_key)).await.err(), Some(401));
    let (head, last) = controller.split_at(controller.len() - 1);
    let tampered = format!("{head}{}", if last == "A" { "B" } else { "A" });
    assert_eq!(player(addr, &id, Some(&tampered)).await.err(), Some(401));
    assert_eq!(player(addr, &id, None).await.err(), Some(401));

    // The key itself still admits (operators, tools).
    let mut k = player(addr, &id, Some(PLAYER_TOKEN))
        .await
        .expect("the raw key joins");
    expect_config(&mut k).await;

    drop((p, v, k));
    server.shutdown().await.expect("clean shutdown");
    coord.wait_ended(&id, Duration::from_secs(10)).await;
    coord.check_delivery();
}
