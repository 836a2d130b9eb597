//! The coordinator's HTTP listener under connections that misbehave: sockets that connect and
//! say nothing, kept-alive connections left idle, more connections than `limits.max_connections`,
//! request targets and heads over the limits. Silent and idle ones are closed in bounded time
//! (counted in /metrics), the excess is refused at once, `/healthz` keeps answering, and every
//! refusal is JSON in the API's error shape. The last test runs the real binary under a low
//! open-file limit and floods it.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_test_support::raw_http::{self, Answer};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const HEAD_TIMEOUT: Duration = Duration::from_millis(1000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(2500);

async fn start(name: &str, max_connections: usize) -> Coord {
    let db = fresh_database(&Backend::Sqlite, name).await;
    Coord::start(
        &db,
        &format!(
            "[limits]\nheader_read_timeout = \"{}ms\"\nidle_timeout = \"{}ms\"\nmax_connections = {max_connections}\nmax_node_links = 10\n",
            HEAD_TIMEOUT.as_millis(),
            IDLE_TIMEOUT.as_millis()
        ),
    )
    .await
}

fn error_code(a: &Answer) -> String {
    assert!(
        a.head.contains("content-type: application/json"),
        "not JSON: {a:?}"
    );
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    v["error"]["code"].as_str().unwrap().to_owned()
}

async fn metric(coord: &Coord, name: &str) -> u64 {
    let text = coord
        .http
        .get(coord.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("{name}{{listener=\"api\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_within_the_header_timeout_while_healthz_answers() {
    let coord = start("silent", 10_000).await;
    let silent = raw_http::silent_sockets(coord.addr, 500).await;
    let opened = Instant::now();
    // While all 500 are open, the coordinator still answers.
    assert_eq!(
        raw_http::get_status(coord.addr, "/healthz").await,
        Some(200)
    );
    let closed = raw_http::closed_by_server(silent, HEAD_TIMEOUT * 5).await;
    let since_open = opened.elapsed();
    eprintln!("500 silent sockets closed after {closed:?} (header_read_timeout {HEAD_TIMEOUT:?})");
    assert!(
        since_open + Duration::from_millis(100) >= HEAD_TIMEOUT,
        "closed before the timeout: {since_open:?}"
    );
    assert!(metric(&coord, "pxs_http_header_timeouts_total").await >= 500);
    assert_eq!(
        raw_http::get_status(coord.addr, "/healthz").await,
        Some(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_at_the_header_timeout() {
    let coord = start("slow-head", 10_000).await;
    let mut s = tokio::net::TcpStream::connect(coord.addr).await.unwrap();
    let start = Instant::now();
    // One byte at a time, slower than the whole head may take.
    let trickle = async {
        for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\n".iter() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            // The fault: a client slower than the head timeout allows.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    };
    let s = trickle.await;
    let took = raw_http::closed_by_server(vec![s], HEAD_TIMEOUT * 3).await;
    let took = start.elapsed().max(took);
    assert!(took < HEAD_TIMEOUT * 4, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_before() {
    let coord = start("idle", 10_000).await;
    let mut s = tokio::net::TcpStream::connect(coord.addr).await.unwrap();
    let get = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    s.write_all(get).await.unwrap();
    assert_eq!(raw_http::read_answer(&mut s).await.unwrap().status, 200);
    // Idle for longer than the header timeout: still open, the next request is served.
    // The fault: a client idle for longer than the header timeout.
    let ask_again = Instant::now() + HEAD_TIMEOUT + HEAD_TIMEOUT / 2;
    tokio::time::sleep_until(ask_again.into()).await;
    s.write_all(get).await.unwrap();
    assert_eq!(
        raw_http::read_answer(&mut s).await.map(|a| a.status),
        Some(200),
        "a connection idle past header_read_timeout but within idle_timeout was closed"
    );
    let answered = Instant::now();
    let _ = raw_http::closed_by_server(vec![s], IDLE_TIMEOUT * 3).await;
    let idle = answered.elapsed();
    eprintln!("kept-alive connection closed after {idle:?} idle (idle_timeout {IDLE_TIMEOUT:?})");
    assert!(
        idle + Duration::from_millis(100) >= IDLE_TIMEOUT,
        "{idle:?}"
    );
    assert!(idle < IDLE_TIMEOUT + Duration::from_secs(2), "{idle:?}");
    assert!(metric(&coord, "pxs_http_idle_closed_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_heads_are_answered_with_json() {
    let coord = start("oversized", 10_000).await;
    let ask = |req: Vec<u8>| async move { raw_http::exchange(coord.addr, &req).await.unwrap() };
    // Over max_uri_bytes (8 KiB) but within the head limit: our check.
    let a = ask(raw_http::long_target(10 * 1024)).await;
    assert_eq!((a.status, error_code(&a).as_str()), (414, "uri_too_long"));
    // Over the head limit (32 KiB), as a long target, one big header, or too many headers:
    // hyper refuses these itself; the answer is still ours.
    for req in [
        raw_http::long_target(70 * 1024),
        raw_http::big_header(40 * 1024),
        raw_http::many_headers(150),
    ] {
        let a = ask(req).await;
        assert_eq!(
            (a.status, error_code(&a).as_str()),
            (431, "headers_too_large")
        );
    }
    let a = ask(b"NOT HTTP AT ALL\r\n\r\n".to_vec()).await;
    assert_eq!((a.status, error_code(&a).as_str()), (400, "bad_request"));
    // Within the limits: served.
    let a = ask(raw_http::big_header(8 * 1024)).await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_ones_are_refused_and_healthz_returns_once_they_close() {
    let coord = start("cap", 50).await;
    let held = raw_http::silent_sockets(coord.addr, 50).await;
    let coord_addr = coord.addr;
    // Every connection past the cap is answered 503 (JSON) and closed at once.
    let mut refused = 0;
    for _ in 0..50 {
        let answer = raw_http::exchange(coord_addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        if let Ok(Some(a)) = tokio::time::timeout(HEAD_TIMEOUT / 2, answer).await {
            assert_eq!((a.status, error_code(&a).as_str()), (503, "unavailable"));
            refused += 1;
        }
    }
    assert!(refused >= 45, "only {refused} of 50 saw the 503");
    // The held ones time out; then /healthz answers again.
    let _ = raw_http::closed_by_server(held, HEAD_TIMEOUT * 5).await;
    wait_until(Duration::from_secs(5), || async {
        match raw_http::get_status(coord_addr, "/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!("healthz: {other:?}")),
        }
    })
    .await;
    assert!(metric(&coord, "pxs_http_connections_refused_total").await >= 50);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_never_runs_the_process_out_of_files() {
    use std::process::Stdio;
    // The real binary, its open-file limit lowered to 256 (soft and hard) by prlimit(1); it caps
    // connections at 150, under that limit. 600 connections arrive at once.
    let dir = temp_dir("flood");
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        "[limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 150\nmax_node_links = 10\n",
    )
    .unwrap();
    let port = free_port();
    let log_path = dir.join("coordinator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg("--")
        .arg(pxs_bin())
        .args(["coordinator", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("db.sqlite").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(Duration::from_secs(30), || async {
        match raw_http::get_status(addr, "/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!("not up yet: {other:?}")),
        }
    })
    .await;
    let flood = raw_http::silent_sockets(addr, 600).await;
    let _ = raw_http::closed_by_server(flood, Duration::from_secs(10)).await;
    wait_until(Duration::from_secs(5), || async {
        match raw_http::get_status(addr, "/healthz").await {
            Some(200) => Ok(()),
            other => Err(format!("healthz after the flood: {other:?}")),
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("open_files=256"),
        "the start-up log names the open-file limit:\n{log}"
    );
    assert!(
        log.contains("max_connections are open"),
        "refusals are logged:\n{log}"
    );
    assert!(
        !log.contains("accept failed"),
        "the process ran out of files:\n{log}"
    );
}
