//! The node's HTTP port under connections that misbehave: silent sockets are closed within
//! `limits.header_read_timeout` while `/healthz` keeps answering, a kept-alive connection after
//! `limits.idle_timeout`, connections past `limits.max_connections` at once; oversized targets and
//! heads, and refused players, are answered with `{"error": {"code", "message"}}`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_test_support::raw_http::{self, Answer};
use std::time::{Duration, Instant};

const HEAD_TIMEOUT: Duration = Duration::from_millis(1000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(2500);

async fn node(
    name: &str,
    max_connections: usize,
) -> (Coordinator, pxs_session_server::SessionServer) {
    init_logs();
    let coord = Coordinator::start().await;
    let limits = format!(
        "[limits]\nheader_read_timeout = \"{}ms\"\nidle_timeout = \"{}ms\"\nmax_connections = {max_connections}\n",
        HEAD_TIMEOUT.as_millis(),
        IDLE_TIMEOUT.as_millis()
    );
    let server = start_server(&config_toml(&coord, &temp_dir(name), "", &limits)).await;
    (coord, server)
}

fn code(a: &Answer) -> String {
    assert!(
        a.head.contains("content-type: application/json"),
        "not JSON: {a:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_within_the_header_timeout_while_healthz_answers() {
    let (_coord, server) = node("limits-silent", 10_000).await;
    let addr = server.addr();
    let silent = raw_http::silent_sockets(addr, 500).await;
    let opened = Instant::now();
    assert_eq!(raw_http::get_status(addr, "/healthz").await, Some(200));
    let closed = raw_http::closed_by_server(silent, HEAD_TIMEOUT * 5).await;
    eprintln!("500 silent sockets closed after {closed:?} (header_read_timeout {HEAD_TIMEOUT:?})");
    assert!(opened.elapsed() + Duration::from_millis(100) >= HEAD_TIMEOUT);
    assert_eq!(raw_http::get_status(addr, "/healthz").await, Some(200));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (_coord, server) = node("limits-idle", 10_000).await;
    let idle = raw_http::idle_until_closed(server.addr(), "/healthz", IDLE_TIMEOUT * 3).await;
    eprintln!("kept-alive connection closed after {idle:?} idle (idle_timeout {IDLE_TIMEOUT:?})");
    assert!(
        idle + Duration::from_millis(100) >= IDLE_TIMEOUT,
        "{idle:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_refused_players_are_answered_with_json() {
    let (_coord, server) = node("limits-json", 10_000).await;
    let addr = server.addr();
    let ask = |req: Vec<u8>| async move { raw_http::exchange(addr, &req).await.unwrap() };
    let a = ask(raw_http::long_target(10 * 1024)).await;
    assert_eq!((a.status, code(&a).as_str()), (414, "uri_too_long"));
    for req in [
        raw_http::long_target(70 * 1024),
        raw_http::big_header(40 * 1024),
        raw_http::many_headers(150),
    ] {
        let a = ask(req).await;
        assert_eq!((a.status, code(&a).as_str()), (431, "headers_too_large"));
    }
    let a =
        ask(b"GET /sessions/ses_nope/ws HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec())
            .await;
    assert_eq!((a.status, code(&a).as_str()), (404, "not_found"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_are_closed_at_once_and_healthz_returns() {
    let (_coord, server) = node("limits-cap", 20).await;
    let addr = server.addr();
    let held = raw_http::silent_sockets(addr, 20).await;
    let excess = raw_http::silent_sockets(addr, 20).await;
    let took = raw_http::closed_by_server(excess, HEAD_TIMEOUT / 2).await;
    eprintln!("20 connections past max_connections closed after {took:?}");
    let _ = raw_http::closed_by_server(held, HEAD_TIMEOUT * 5).await;
    pxs_test_support::wait_until(Duration::from_secs(5), || async {
        match raw_http::get_status(addr, "/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!(
                "healthz after the held connections closed: {other:?}"
            )),
        }
    })
    .await;
    server.shutdown().await.unwrap();
}
