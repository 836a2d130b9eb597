//! The signalling server's listeners under connections that misbehave: silent sockets are closed
//! within `header_read_timeout` while the REST API keeps answering, kept-alive connections after
//! `idle_timeout`, connections past `max_connections` at once; oversized targets and heads are
//! answered in Epic's JSON error shape; a WebSocket peer that stops answering pings is closed
//! after `websocket_idle_timeout`, and one that answers stays.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use pxs_test_support::raw_http::{self, Answer};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const HEAD_TIMEOUT: Duration = Duration::from_millis(1000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(2500);
const WS_IDLE: Duration = Duration::from_millis(1500);

fn limited() -> Options {
    Options {
        rest_api: Some(true),
        header_read_timeout: Some(HEAD_TIMEOUT.as_secs_f64()),
        idle_timeout: Some(IDLE_TIMEOUT.as_secs_f64()),
        websocket_idle_timeout: Some(WS_IDLE.as_secs_f64()),
        ..options()
    }
}

fn message(a: &Answer) -> String {
    assert!(
        a.head.contains("content-type: application/json"),
        "not JSON: {a:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_on_every_port_are_closed_within_the_header_timeout() {
    let server = start(limited()).await;
    let a = server.addrs();
    let mut silent = Vec::new();
    for addr in [a.player, a.streamer, a.sfu] {
        silent.extend(raw_http::silent_sockets(addr, 200).await);
    }
    let opened = Instant::now();
    assert_eq!(
        raw_http::get_status(a.player, "/api/status").await,
        Some(200)
    );
    let closed = raw_http::closed_by_server(silent, HEAD_TIMEOUT * 5).await;
    eprintln!("600 silent sockets closed after {closed:?} (header_read_timeout {HEAD_TIMEOUT:?})");
    assert!(opened.elapsed() + Duration::from_millis(100) >= HEAD_TIMEOUT);
    assert_eq!(
        raw_http::get_status(a.player, "/api/status").await,
        Some(200)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(limited()).await;
    let player = server.addrs().player;
    let idle = raw_http::idle_until_closed(player, "/api/status", IDLE_TIMEOUT * 3).await;
    eprintln!("kept-alive connection closed after {idle:?} idle (idle_timeout {IDLE_TIMEOUT:?})");
    assert!(
        idle + Duration::from_millis(100) >= IDLE_TIMEOUT,
        "{idle:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_heads_are_answered_with_json() {
    let server = start(limited()).await;
    let player = server.addrs().player;
    let ask = |req: Vec<u8>| async move { raw_http::exchange(player, &req).await.unwrap() };
    let a = ask(raw_http::long_target(10 * 1024)).await;
    assert_eq!(a.status, 414);
    assert!(message(&a).contains("8192"), "{a:?}");
    for req in [
        raw_http::long_target(70 * 1024),
        raw_http::big_header(40 * 1024),
        raw_http::many_headers(150),
    ] {
        let a = ask(req).await;
        assert_eq!(a.status, 431);
        assert!(message(&a).contains("32768"), "{a:?}");
    }
    // Errors the handlers make are JSON too: no static files configured, a plain GET on the
    // streamer port.
    let a = ask(b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec()).await;
    assert_eq!(a.status, 404);
    message(&a);
    let a = raw_http::exchange(
        server.addrs().streamer,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(a.status, 426);
    assert!(message(&a).contains("WebSocket"), "{a:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_port_refuses_at_once_and_recovers() {
    let server = start(Options {
        max_connections: Some(20),
        ..limited()
    })
    .await;
    let player = server.addrs().player;
    let held = raw_http::silent_sockets(player, 20).await;
    let excess = raw_http::silent_sockets(player, 20).await;
    // The excess is closed at once, long before the header timeout.
    let took = raw_http::closed_by_server(excess, HEAD_TIMEOUT / 2).await;
    eprintln!("20 connections past max_connections closed after {took:?}");
    // Another port has its own cap.
    assert_eq!(
        raw_http::get_status(server.addrs().streamer, "/").await,
        Some(426)
    );
    let _ = raw_http::closed_by_server(held, HEAD_TIMEOUT * 5).await;
    wait_until(WAIT, || async {
        match raw_http::get_status(player, "/api/status").await {
            Some(200) => Ok(()),
            other => Err(format!("status: {other:?}")),
        }
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_peer_that_stops_answering_pings_is_closed() {
    let server = start(limited()).await;
    let player = server.addrs().player;
    // A live player: its client answers pings while it reads, and it stays past the idle
    // timeout (it sees several pings, a third of the timeout apart).
    let mut live = connect(player, "/").await;
    let mut pings = 0;
    let watch_until = Instant::now() + WS_IDLE * 2;
    while Instant::now() < watch_until {
        match tokio::time::timeout(WS_IDLE, live.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_)))) => {}
            other => panic!("a live peer was closed or went quiet: {other:?}"),
        }
    }
    assert!(pings >= 3, "{pings} pings in {:?}", WS_IDLE * 2);
    // A peer that completes the handshake and then reads nothing answers no ping.
    let mut mute = tokio::net::TcpStream::connect(player).await.unwrap();
    mute.write_all(
        b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let upgraded = Instant::now();
    let closed = raw_http::closed_by_server(vec![mute], WS_IDLE * 4).await;
    let silent_for = upgraded.elapsed();
    eprintln!(
        "silent WebSocket peer closed after {silent_for:?} (websocket_idle_timeout {WS_IDLE:?}, {closed:?})"
    );
    assert!(
        silent_for + Duration::from_millis(100) >= WS_IDLE,
        "{silent_for:?}"
    );
    drop(live);
    server.shutdown().await.unwrap();
}
