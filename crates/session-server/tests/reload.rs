//! A reload re-reads the applications and re-advertises them; running sessions are untouched.

mod common;

use common::*;
use pxs_protocol::node::{EndReason, SessionEventKind};
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

    // A broken file (which would add `second`) is refused: the applications stay.
    let two = format!("{one}{}", streamer_app("second", &[], ""));
    std::fs::write(
        &file,
        two.replace("[[applications]]", "[[applications]]\nbogus = 1"),
    )
    .unwrap();
    server.reload();
    // The server takes its inputs in order, and this start command reaches it after the
    // reload: when its answer arrives, the reload has been dealt with, and anything it sent on
    // the link would have arrived first.
    let early = sid("too-early");
    coord.start_session(&early, "second");
    let e = coord.wait_ended(&early, Duration::from_secs(10)).await;
    assert_eq!(
        e.reason,
        EndReason::Rejected,
        "`second` is still unknown: {e:?}"
    );
    assert!(
        coord.seen.lock().unwrap().applications.is_empty(),
        "a refused reload advertises nothing"
    );

    std::fs::write(&file, &two).unwrap();
    server.reload();
    let apps = wait_until(Duration::from_secs(10), || {
        std::future::ready(
            coord
                .seen
                .lock()
                .unwrap()
                .applications
                .last()
                .cloned()
                .ok_or_else(|| "no applications message".to_string()),
        )
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
