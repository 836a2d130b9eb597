//! `GET /metrics` on the node port: the node's sessions, and each running session's signalling
//! counters (webrtc-session's backpressure and dropped-message counters) labelled with its id;
//! a session's series go when it ends.

mod common;

use common::*;
use std::time::Duration;

async fn metrics(addr: std::net::SocketAddr) -> String {
    let req = b"GET /metrics HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
    let answer = pxs_test_support::raw_http::exchange(addr, req)
        .await
        .expect("an answer to /metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_exposes_every_running_sessions_signalling_counters() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("metrics");
    let apps = streamer_app(
        "demo",
        &[],
        "idle_timeout = \"off\"\nempty_timeout = \"off\"",
    );
    let server = start_server(&config_toml(&coord, &dir, "", &apps)).await;
    coord.wait_linked(Duration::from_secs(10)).await;

    let idle = metrics(server.addr()).await;
    assert!(idle.contains("pxs_node_sessions 0\n"), "{idle}");
    assert!(idle.contains("pxs_node_draining 0\n"), "{idle}");
    assert!(
        !idle.contains("pxs_signalling_"),
        "no session, no series: {idle}"
    );

    let id = sid("metered");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let running = metrics(server.addr()).await;
    assert!(running.contains("pxs_node_sessions 1\n"), "{running}");
    for name in [
        "pxs_signalling_streamer_stalls_total",
        "pxs_signalling_players_paused_total",
        "pxs_signalling_streamer_ice_dropped_total",
        "pxs_signalling_slow_players_closed_total",
    ] {
        assert_eq!(
            running.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name} declared once: {running}"
        );
        assert!(
            running.contains(&format!("{name}{{session=\"{id}\"}} 0\n")),
            "{name} for {id}: {running}"
        );
    }

    coord.stop_session(&id);
    coord.wait_ended(&id, Duration::from_secs(30)).await;
    let after = metrics(server.addr()).await;
    assert!(after.contains("pxs_node_sessions 0\n"), "{after}");
    assert!(
        !after.contains(&id.to_string()),
        "the ended session's series are gone: {after}"
    );
}
