#![allow(clippy::unwrap_used)]
//! Hostile input over real sockets: each gets its defined outcome, and the other connections of
//! the session carry on.

mod common;
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A streamer and a subscribed bystander player, to check that they are unaffected.
async fn session(server: &Server) -> (Client, Client) {
    let a = server.addrs();
    let mut s = streamer(a.streamer, "S").await;
    let mut p = connect(a.player, "/").await;
    p.recv().await;
    p.send(json!({"type":"subscribe","streamerId":"S"})).await;
    s.recv_type("playerConnected").await;
    (s, p)
}

async fn still_works(s: &mut Client, p: &mut Client) {
    p.send(json!({"type":"ping","time":42})).await;
    assert_eq!(p.recv().await, json!({"type":"pong","time":42}));
    s.send(json!({"type":"offer","sdp":"still here","playerId":"Player0"}))
        .await;
    assert_eq!(p.recv().await["sdp"], "still here");
}

async fn attacker(server: &Server) -> Client {
    let mut x = connect(server.addrs().player, "/").await;
    x.recv().await;
    x
}

#[tokio::test]
async fn invalid_json_is_closed_with_1008() {
    let server = start(options()).await;
    let (mut s, mut p) = session(&server).await;
    for garbage in ["{not json", "[]", "{}", r#"{"type":null}"#, "", "\u{feff}{"] {
        let mut x = attacker(&server).await;
        x.send_raw(Message::Text(garbage.into())).await;
        let frame = x.closed().await.expect("a close code");
        assert_eq!(frame.code, CloseCode::Policy, "{garbage:?}");
    }
    still_works(&mut s, &mut p).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn binary_garbage_is_closed_with_1008_but_binary_json_is_accepted() {
    let server = start(options()).await;
    let (mut s, mut p) = session(&server).await;
    let mut x = attacker(&server).await;
    x.send_raw(Message::Binary(
        br#"{"type":"ping","time":5}"#.to_vec().into(),
    ))
    .await;
    assert_eq!(x.recv().await, json!({"type":"pong","time":5}));
    x.send_raw(Message::Binary(vec![0xff, 0xfe, 0x00, 0x80].into()))
        .await;
    assert_eq!(
        x.closed().await.expect("a close code").code,
        CloseCode::Policy
    );
    still_works(&mut s, &mut p).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_types_and_wrong_fields_are_dropped_and_the_connection_kept() {
    let server = start(options()).await;
    let (mut s, mut p) = session(&server).await;
    for text in [
        r#"{"type":"stats","data":{}}"#,
        r#"{"type":"subscribe","streamerId":{"$gt":""}}"#,
        r#"{"type":"offer","sdp":12}"#,
        r#"{"type":"ping","time":"x"}"#,
    ] {
        p.send_raw(Message::Text(text.into())).await;
        s.send_raw(Message::Text(text.into())).await;
    }
    p.silent(Duration::from_millis(50)).await;
    still_works(&mut s, &mut p).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_streamers_malformed_or_oversized_message_is_dropped_and_the_streamer_kept() {
    let server = start(options()).await;
    let (mut s, mut p) = session(&server).await;
    let sig = server.signalling().clone();
    // Unparsable, binary garbage, and 200 KiB (over max_message_size, within the streamer's
    // 1 MiB): each logged, counted and dropped; the streamer and its player carry on.
    s.send_raw(Message::Text("{not json".into())).await;
    s.send_raw(Message::Binary(vec![0xff, 0xfe, 0x00].into()))
        .await;
    let big = json!({"type":"offer","sdp":"x".repeat(200 * 1024),"playerId":"Player0"});
    s.send(big).await;
    still_works(&mut s, &mut p).await;
    let stats = sig.stats().await.unwrap();
    assert_eq!(
        (
            stats.streamer_invalid_dropped,
            stats.streamer_oversized_dropped
        ),
        (2, 1)
    );
    // Over the streamer's own limit (2 MiB) the frame cannot be skipped: closed with 1009, and
    // its player with it. The client may see the close frame or, having sent data the server
    // never read, a reset; either way the server has let it go.
    let huge = json!({"type":"offer","sdp":"x".repeat(2 * 1024 * 1024),"playerId":"Player0"});
    let _ = futures_util::SinkExt::send(&mut s.ws, Message::Text(huge.to_string().into())).await;
    match tokio::time::timeout(WAIT, s.ws.next()).await.unwrap() {
        Some(Ok(Message::Close(frame))) => assert_eq!(frame.unwrap().code, CloseCode::Size),
        Some(Err(_)) | None => {}
        Some(Ok(other)) => panic!("expected the close, got {other:?}"),
    }
    wait_until(WAIT, || {
        let sig = sig.clone();
        async move {
            match sig.inspect(|r| r.streamer("S").is_none()).await {
                Some(true) => Ok(()),
                _ => Err("the streamer is still listed".to_owned()),
            }
        }
    })
    .await;
    assert_eq!(
        p.closed().await,
        None,
        "its player is closed as for any streamer leaving"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_frame_over_the_size_limit_is_closed_with_1009() {
    let server = start(Options {
        max_message_size: Some(4096),
        ..options()
    })
    .await;
    let (mut s, mut p) = session(&server).await;
    let mut x = attacker(&server).await;
    let big = json!({"type":"offer","sdp":"x".repeat(5000)}).to_string();
    x.send_raw(Message::Text(big.into())).await;
    let frame = x.closed().await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Size);
    // Just under the limit passes.
    s.send(json!({"type":"offer","sdp":"y".repeat(4000),"playerId":"Player0"}))
        .await;
    assert_eq!(p.recv().await["sdp"].as_str().unwrap().len(), 4000);
    still_works(&mut s, &mut p).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flooding_player_is_closed_with_1008() {
    let server = start(Options {
        player_message_rate: Some(50.0),
        player_message_burst: Some(100.0),
        ..options()
    })
    .await;
    let (mut s, mut p) = session(&server).await;
    let mut x = attacker(&server).await;
    for i in 0..1000 {
        if futures_util::SinkExt::send(
            &mut x.ws,
            Message::Text(json!({"type":"ping","time":i}).to_string().into()),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    let frame = x.closed().await.expect("a close code");
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Policy, "message rate limit exceeded")
    );
    still_works(&mut s, &mut p).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_player_that_never_reads_is_dropped_not_buffered() {
    let server = start(Options {
        send_queue: Some(16),
        ..options()
    })
    .await;
    let a = server.addrs();
    let (mut s, mut p) = session(&server).await;
    // The slow player subscribes, then never reads again.
    let mut slow = connect(a.player, "/").await;
    slow.recv().await;
    slow.send(json!({"type":"subscribe","streamerId":"S"}))
        .await;
    let slow_id = s.recv_type("playerConnected").await["playerId"]
        .as_str()
        .unwrap()
        .to_owned();
    let sdp = "a".repeat(60_000);
    let mut dropped = false;
    for _ in 0..2000 {
        s.send(json!({"type":"offer","sdp":sdp,"playerId":slow_id}))
            .await;
        // Keep the streamer's own socket drained: the server tells it when the slow player goes.
        if let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(1), s.ws.next()).await
        {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v == json!({"type":"playerDisconnected","playerId":slow_id}) {
                dropped = true;
                break;
            }
        }
    }
    if !dropped {
        assert_eq!(
            s.recv_type("playerDisconnected").await["playerId"],
            slow_id.as_str()
        );
    }
    let sig = server.signalling().clone();
    let id = slow_id.clone();
    assert!(sig.inspect(move |r| r.player(&id)).await.unwrap().is_none());
    still_works(&mut s, &mut p).await;
    drop(slow);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_http_on_the_streamer_port_is_refused() {
    let server = start(options()).await;
    let resp = reqwest::get(format!("http://{}/", server.addrs().streamer))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 426);
    let resp = reqwest::get(format!("http://{}/", server.addrs().player))
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "nothing is served without --serve"
    );
    server.shutdown().await.unwrap();
}
