#![allow(clippy::unwrap_used)]
//! A shared session with the real binaries (`pxs session-server` running `pxs streamer`): the
//! owner and a viewer join with signed tokens; only the user in control is offered the input
//! channel by the application, a handoff gives it to the other, the users see each other and
//! chat, and a user cannot make an offer of its own to get a channel.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::{SessionId, UnixMillis};
use pxs_protocol::player_token::{Claims, Role, sign};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

fn in_a_minute() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000
}

fn token(session: &SessionId, role: Role, name: &str) -> String {
    sign(
        PLAYER_TOKEN.as_bytes(),
        &Claims {
            session_id: session.clone(),
            role,
            exp: in_a_minute(),
            name: Some(name.into()),
            link: None,
        },
    )
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next message of type `kind`, skipping others; panics after 10 s.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    let wait = async {
        loop {
            let frame = ws.next().await.expect("open").expect("frame");
            let Ok(text) = frame.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no `{kind}` within 10 s"))
}

/// Whether an offer's SDP has the input data channel (an `m=application` line).
fn offers_input(offer: &Value) -> bool {
    offer["sdp"].as_str().unwrap().contains("m=application")
}

async fn join(server: std::net::SocketAddr, id: &SessionId, token: &str) -> Ws {
    let mut ws = player(server, id, Some(token)).await.expect("joins");
    send(
        &mut ws,
        json!({"type":"subscribe","streamerId": id.as_str()}),
    )
    .await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_user_in_control_is_offered_the_input_channel() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("shared");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("demo", &["-RenderOffScreen"], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("shared");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let addr = server.addr();

    // The owner joins first: control, and an offer with the input channel.
    let mut alice = join(addr, &id, &token(&id, Role::Owner, "Alice")).await;
    let you = next_of(&mut alice, "you").await;
    assert_eq!(you["role"], "owner", "{you}");
    assert!(offers_input(&next_of(&mut alice, "offer").await));

    // A viewer: seen by both, offered video without the channel.
    let mut bob = join(addr, &id, &token(&id, Role::Viewer, "Bob")).await;
    let users = next_of(&mut bob, "users").await;
    assert_eq!(
        users["users"],
        json!([
            {"playerId": you["playerId"], "name":"Alice","role":"owner","control":true,"requested":false},
            {"playerId": users["users"][1]["playerId"], "name":"Bob","role":"viewer","control":false,"requested":false}
        ])
    );
    let bob_id = users["users"][1]["playerId"].clone();
    let offer = next_of(&mut bob, "offer").await;
    assert!(
        !offers_input(&offer),
        "a viewer is offered no input channel: {offer}"
    );

    // A hand-written client cannot get one by offering itself.
    send(
        &mut bob,
        json!({"type":"offer","sdp":"v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"}),
    )
    .await;
    assert_eq!(next_of(&mut bob, "refused").await["command"], "offer");

    // Chat reaches the other user, with the sender's name.
    send(&mut bob, json!({"type":"chat","text":"may I drive?"})).await;
    let line = next_of(&mut alice, "chat").await;
    assert_eq!(
        (line["name"].as_str(), line["text"].as_str()),
        (Some("Bob"), Some("may I drive?"))
    );

    // Bob asks, Alice gives: the application offers again, the channel to Bob and not to Alice.
    send(&mut bob, json!({"type":"control","action":"request"})).await;
    send(
        &mut alice,
        json!({"type":"control","action":"give","playerId": bob_id}),
    )
    .await;
    let bob_again = next_of(&mut bob, "offer").await;
    assert!(offers_input(&bob_again), "{bob_again}");
    let alice_again = next_of(&mut alice, "offer").await;
    assert!(!offers_input(&alice_again), "{alice_again}");
    // A viewer cannot take control back from the owner's side either.
    send(&mut bob, json!({"type":"kick","playerId": you["playerId"]})).await;
    assert_eq!(
        next_of(&mut bob, "refused").await["message"],
        "only the session's owner may do that"
    );

    drop((alice, bob));
    server.shutdown().await.expect("clean shutdown");
    coord.wait_ended(&id, Duration::from_secs(10)).await;
}

fn link_token(session: &SessionId, role: Role, name: &str, link: &str) -> String {
    sign(
        PLAYER_TOKEN.as_bytes(),
        &Claims {
            session_id: session.clone(),
            role,
            exp: in_a_minute(),
            name: Some(name.into()),
            link: Some(link.into()),
        },
    )
}

/// The close frame's code and reason, skipping other frames; panics after 10 s.
async fn closed(ws: &mut Ws) -> (u16, String) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string());
                }
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("closed within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_is_closed_and_users_are_warned_before_an_idle_end() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("shared-revoke");
    // Idle after 6 s: the users are warned 3 s before.
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("demo", &["-RenderOffScreen"], "idle_timeout = \"6s\"\n"),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("revoke");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let addr = server.addr();

    let mut alice = join(addr, &id, &token(&id, Role::Owner, "Alice")).await;
    next_of(&mut alice, "you").await;
    let mut bob = join(addr, &id, &link_token(&id, Role::Viewer, "Bob", "lnk_b")).await;
    next_of(&mut bob, "you").await;
    let mut carol = join(addr, &id, &link_token(&id, Role::Viewer, "Carol", "lnk_c")).await;
    next_of(&mut carol, "you").await;

    // The coordinator revokes Bob's link: Bob is closed with the reason, Carol stays.
    assert!(
        coord.send(pxs_protocol::node::CoordinatorToNode::RevokeLink {
            session_id: id.clone(),
            link_id: "lnk_b".into(),
        })
    );
    assert_eq!(
        closed(&mut bob).await,
        (
            1008,
            "the invitation you joined with was withdrawn".to_owned()
        )
    );
    // Alice sees the list without Bob (earlier lists, from before Carol came, had two too).
    loop {
        let u = next_of(&mut alice, "users").await;
        let names: Vec<&str> = u["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        if names == ["Alice", "Carol"] {
            break;
        }
    }
    // The link stays refused.
    let mut again = player(
        addr,
        &id,
        Some(&link_token(&id, Role::Viewer, "Bob", "lnk_b")),
    )
    .await
    .expect("the upgrade itself is accepted");
    send(
        &mut again,
        json!({"type":"subscribe","streamerId": id.as_str()}),
    )
    .await;
    assert_eq!(closed(&mut again).await.0, 1008);

    // Nobody is active: both are warned, with the time of the end, then told it ended idle.
    let warning = next_of(&mut carol, "warning").await;
    assert_eq!(warning["reason"], "idle", "{warning}");
    let ends_at = warning["endsAt"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // At most the lead ahead (read at once, or a little later on a loaded machine).
    assert!(
        ends_at <= now + 3_000 && ends_at + 3_000 > now,
        "ends at {ends_at}, now {now}"
    );
    assert_eq!(
        next_of(&mut alice, "warning").await["endsAt"],
        warning["endsAt"]
    );
    // Carol moves: the warning is cleared for everyone.
    send(&mut carol, json!({"type":"activity"})).await;
    assert_eq!(
        next_of(&mut alice, "warningCleared").await["reason"],
        "idle"
    );
    // Then nobody moves again: warned, and ended.
    next_of(&mut alice, "warning").await;
    assert_eq!(next_of(&mut carol, "ended").await["reason"], "idle");
    assert_eq!(next_of(&mut alice, "ended").await["reason"], "idle");
    let ended = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!(format!("{:?}", ended.reason), "Idle");
    drop((alice, carol));
    server.shutdown().await.expect("clean shutdown");
}
