#![allow(clippy::unwrap_used)]
//! Tokens at the upgrade, the per-IP connection cap, and the REST API.

mod common;
use common::*;
use pxs_webrtc_session::config::Secret;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;

fn status_of(err: WsError) -> u16 {
    match err {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn tokens_are_checked_before_anything_is_sent() {
    let server = start(Options {
        player_token: Some(Secret("player-secret".into())),
        streamer_token: Some(Secret("streamer-secret".into())),
        ..options()
    })
    .await;
    let a = server.addrs();
    for (addr, path, headers) in [
        (a.player, "/", vec![]),
        (a.player, "/?token=wrong", vec![]),
        (a.player, "/?token=streamer-secret", vec![]),
        (a.player, "/", vec![("authorization", "Bearer wrong")]),
        (a.streamer, "/", vec![]),
        (a.streamer, "/?token=player-secret", vec![]),
        (a.sfu, "/", vec![]),
    ] {
        let err = connect_with(addr, path, &headers)
            .await
            .err()
            .expect("refused");
        assert_eq!(status_of(err), 401, "{addr} {path} {headers:?}");
    }
    let mut p = connect(a.player, "/?token=player-secret").await;
    assert_eq!(p.recv().await["type"], "config");
    let mut p2 = connect_with(a.player, "/", &[("authorization", "Bearer player-secret")])
        .await
        .unwrap();
    assert_eq!(p2.recv().await["type"], "config");
    let mut s = connect(a.streamer, "/?token=streamer-secret").await;
    assert_eq!(s.recv().await["type"], "config");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = start(Options {
        max_connections_per_ip: Some(2),
        ..options()
    })
    .await;
    let a = server.addrs();
    let mut p1 = connect(a.player, "/").await;
    let _p2 = connect(a.player, "/").await;
    let err = connect_with(a.player, "/", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(err), 429);
    let err = connect_with(a.streamer, "/", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(err), 429, "the cap counts every port");
    p1.ws.close(None).await.unwrap();
    p1.closed().await;
    wait_until(WAIT, || async {
        match connect_with(a.player, "/", &[]).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_rest_api_has_epics_shapes() {
    let server = start(Options {
        rest_api: Some(true),
        ..options()
    })
    .await;
    let a = server.addrs();
    let base = format!("http://{}", a.player);
    let mut s = streamer(a.streamer, "DefaultStreamer").await;
    let mut p = connect(a.player, "/").await;
    p.recv().await;
    p.send(json!({"type":"subscribe","streamerId":"DefaultStreamer"}))
        .await;
    s.recv_type("playerConnected").await;

    let (code, status) = get(&format!("{base}/api/status")).await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            status["streamer_count"].clone(),
            status["player_count"].clone()
        ),
        (json!(1), json!(1))
    );
    assert!(status["uptime"].is_u64() && status["version"].is_string());

    let player = json!({"playerId":"Player0","type":"Player","subscribedTo":"DefaultStreamer","remoteAddress":"127.0.0.1"});
    let (code, streamers) = get(&format!("{base}/api/streamers")).await;
    assert_eq!(code, 200);
    assert_eq!(
        streamers,
        json!([{"streamerId":"DefaultStreamer","type":"Streamer","streaming":true,"remoteAddress":"127.0.0.1","subscribers":[player]}])
    );
    assert_eq!(
        get(&format!("{base}/api/streamers/DefaultStreamer"))
            .await
            .1["streamerId"],
        "DefaultStreamer"
    );
    let (code, body) = get(&format!("{base}/api/streamers/Nope")).await;
    assert_eq!((code, body["message"].is_string()), (404, true));
    assert_eq!(get(&format!("{base}/api/players")).await.1, json!([player]));
    assert_eq!(get(&format!("{base}/api/players/Player0")).await.1, player);
    assert_eq!(get(&format!("{base}/api/players/Player9")).await.0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_rest_api_is_off_by_default_and_guarded_by_the_streamer_token() {
    let server = start(options()).await;
    assert_eq!(
        get(&format!("http://{}/api/status", server.addrs().player))
            .await
            .0,
        404
    );
    server.shutdown().await.unwrap();

    let server = start(Options {
        rest_api: Some(true),
        streamer_token: Some(Secret("ops".into())),
        ..options()
    })
    .await;
    let base = format!("http://{}", server.addrs().player);
    assert_eq!(get(&format!("{base}/api/status")).await.0, 401);
    assert_eq!(get(&format!("{base}/api/streamers?token=ops")).await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_secret_appears_in_the_rest_api() {
    let server = start(Options {
        rest_api: Some(true),
        peer_options: Some(
            r#"{"iceServers":[{"urls":["turn:x"],"username":"u","credential":"turn-secret"}]}"#
                .into(),
        ),
        ..options()
    })
    .await;
    let base = format!("http://{}", server.addrs().player);
    for path in [
        "/api/status",
        "/api/streamers",
        "/api/players",
        "/api/config",
    ] {
        let text = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("turn-secret"), "{path}: {text}");
    }
    server.shutdown().await.unwrap();
}
