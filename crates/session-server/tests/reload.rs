//! A reload re-reads the applications and re-advertises them; running sessions are untouched.

mod common;

use common::*;
use pxs_protocol::node::SessionEventKind;
use pxs_session_server::{Config, Options, SessionServer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_an_application_without_touching_running_sessions() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("reload");
    let file = dir.join("session-server.toml");
    let one = config_toml(
        &coord,
        &dir.join("data"),
        "",
        &streamer_app("demo", &[], ""),
    );
    std::fs::write(&file, &one).unwrap();
    let opts = Options {
        config: Some(file.clone()),
        ..Default::default()
    };
    let server = SessionServer::start(Config::load(&opts).unwrap())
        .await
        .unwrap();
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("running");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let pid = coord.pid_of(&id).unwrap();

    // A broken file is refused: the applications stay.
    std::fs::write(
        &file,
        one.replace("[[applications]]", "[[applications]]\nbogus = 1"),
    )
    .unwrap();
    server.reload();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(coord.seen.lock().unwrap().applications.is_empty());

    let two = format!("{one}{}", streamer_app("second", &[], ""));
    std::fs::write(&file, &two).unwrap();
    server.reload();
    let apps = wait_until(Duration::from_secs(5), || {
        coord
            .seen
            .lock()
            .unwrap()
            .applications
            .last()
            .cloned()
            .ok_or_else(|| "no applications message".to_string())
    })
    .await;
    let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["demo", "second"]);
    assert!(alive(pid), "the running session's process is untouched");
    assert!(
        coord
            .events_of(&id)
            .iter()
            .all(|k| !matches!(k, SessionEventKind::Ended(_)))
    );
    let new = sid("second");
    coord.start_session(&new, "second");
    coord.wait_ready(&new, Duration::from_secs(60)).await;
    server.shutdown().await.unwrap();
    coord.check_delivery();
}
