#![allow(clippy::unwrap_used)]
//! Epic's sequences over real WebSockets against the real server.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn streamer_and_player_negotiate_through_the_server() {
    let server = start(options()).await;
    let a = server.addrs();
    let mut s = streamer(a.streamer, "DefaultStreamer").await;

    // Players may connect on any path of the player port.
    let mut p = connect(a.player, "/some/path?x=1").await;
    assert_eq!(
        p.recv().await,
        json!({"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"})
    );
    p.send(json!({"type":"listStreamers"})).await;
    assert_eq!(
        p.recv().await,
        json!({"type":"streamerList","ids":["DefaultStreamer"]})
    );
    p.send(json!({"type":"subscribe","streamerId":"DefaultStreamer"}))
        .await;
    assert_eq!(
        s.recv().await,
        json!({"type":"playerConnected","playerId":"Player0","dataChannel":true,"sfu":false})
    );
    let sdp = "v=0\r\n".repeat(600); // about 3 KB, like a real offer
    s.send(json!({"type":"offer","sdp":sdp,"playerId":"Player0"}))
        .await;
    assert_eq!(
        p.recv().await,
        json!({"type":"offer","sdp":sdp,"playerId":"Player0"})
    );
    p.send(json!({"type":"answer","sdp":"v=0\r\n","minBitrateBps":0,"maxBitrateBps":0}))
        .await;
    assert_eq!(
        s.recv().await,
        json!({"type":"answer","sdp":"v=0\r\n","playerId":"Player0","minBitrateBps":0,"maxBitrateBps":0})
    );
    p.send(json!({"type":"ping","time":1764039000123_i64}))
        .await;
    assert_eq!(
        p.recv().await,
        json!({"type":"pong","time":1764039000123_i64})
    );

    // disconnectPlayer: the player sees 1011 and the reason; the streamer is told.
    s.send(json!({"type":"disconnectPlayer","playerId":"Player0","reason":"bye"}))
        .await;
    let frame = p.closed().await.expect("a close code");
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Error, "bye")
    );
    assert_eq!(
        s.recv().await,
        json!({"type":"playerDisconnected","playerId":"Player0"})
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_streamer_leaving_closes_its_players_without_a_code() {
    let server = start(options()).await;
    let a = server.addrs();
    let mut s = streamer(a.streamer, "S").await;
    let mut p = connect(a.player, "/").await;
    p.recv().await;
    p.send(json!({"type":"subscribe","streamerId":"S"})).await;
    s.recv_type("playerConnected").await;
    s.ws.close(None).await.unwrap();
    assert_eq!(
        p.closed().await,
        None,
        "Epic's server closes players with no status (1005)"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sfu_port_gets_identify_and_can_subscribe() {
    let server = start(options()).await;
    let a = server.addrs();
    let mut s = streamer(a.streamer, "S").await;
    let mut sfu = connect(a.sfu, "/").await;
    assert_eq!(sfu.recv().await["type"], "config");
    assert_eq!(sfu.recv().await["type"], "identify");
    sfu.send(json!({"type":"endpointId","id":"SFU"})).await;
    assert_eq!(sfu.recv().await["committedId"], "SFU");
    sfu.send(json!({"type":"subscribe","streamerId":"S"})).await;
    assert_eq!(s.recv().await["sfu"], true);
    s.ws.close(None).await.unwrap();
    assert_eq!(sfu.recv().await, json!({"type":"streamerDisconnected"}));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_first_offered_subprotocol_is_echoed() {
    let server = start(options()).await;
    let mut p = connect_with(
        server.addrs().player,
        "/",
        &[("sec-websocket-protocol", "epic-token-abc, other")],
    )
    .await
    .expect("the browser would abort if no protocol were selected");
    assert_eq!(p.response_protocol.as_deref(), Some("epic-token-abc"));
    assert_eq!(p.recv().await["type"], "config");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_legacy_streamer_is_listed_under_a_legacy_id() {
    let server = start(Options {
        legacy_streamer_timeout: Some(0.2),
        ..options()
    })
    .await;
    let a = server.addrs();
    let mut s = connect(a.streamer, "/").await;
    s.recv().await;
    s.recv().await;
    let mut p = connect(a.player, "/").await;
    p.recv().await;
    wait_until(WAIT, || {
        let sig = server.signalling().clone();
        async move {
            match sig.inspect(|r| r.streamer_count()).await {
                Some(1) => Ok(()),
                n => Err(format!("{n:?} streamers")),
            }
        }
    })
    .await;
    p.send(json!({"type":"listStreamers"})).await;
    assert_eq!(p.recv().await["ids"], json!(["__LEGACY_STREAMER__0"]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let server = start(options()).await;
    let a = server.addrs();
    let mut s = streamer(a.streamer, "S").await;
    let mut p = connect(a.player, "/").await;
    p.recv().await;
    server.shutdown().await.unwrap();
    assert_eq!(p.closed().await.unwrap().code, CloseCode::Away);
    assert_eq!(s.closed().await.unwrap().code, CloseCode::Away);
}

#[tokio::test]
async fn many_players_on_many_streamers_are_routed_independently() {
    let server = start(options()).await;
    let a = server.addrs();
    let mut streamers = Vec::new();
    for i in 0..3 {
        streamers.push(streamer(a.streamer, &format!("S{i}")).await);
    }
    let mut players = Vec::new();
    for i in 0..30 {
        let mut p = connect(a.player, "/").await;
        p.recv().await;
        p.send(json!({"type":"subscribe","streamerId":format!("S{}", i % 3)}))
            .await;
        let pc = streamers[i % 3].recv_type("playerConnected").await;
        players.push((p, pc["playerId"].as_str().unwrap().to_owned()));
    }
    for (i, (_, pid)) in players.iter().enumerate() {
        streamers[i % 3]
            .send(json!({"type":"offer","sdp":format!("for {pid}"),"playerId":pid}))
            .await;
    }
    for (p, pid) in players.iter_mut() {
        assert_eq!(p.recv().await["sdp"], format!("for {pid}"));
        p.silent(Duration::from_millis(5)).await;
    }
    server.shutdown().await.unwrap();
}
