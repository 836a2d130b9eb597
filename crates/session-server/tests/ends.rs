//! Every way a session ends on its own, each reported with its reason: crash (with the signal),
//! exit (with the code), start timeout, idle players, nobody connected. The application is the
//! real `pxs streamer` with its fault flags.

mod common;

use common::*;
use pxs_protocol::node::{EndReason, SessionEventKind};
use std::time::{Duration, Instant};

/// Now, in the milliseconds of an event's `at`.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn at_of(coord: &Coordinator, id: &pxs_protocol::node::SessionId, kind: &str) -> u64 {
    let s = coord.seen.lock().expect("lock");
    s.events
        .iter()
        .find(|e| {
            &e.event.session_id == id
                && matches!(
                    (&e.event.kind, kind),
                    (SessionEventKind::Starting { .. }, "starting")
                        | (SessionEventKind::Ready { .. }, "ready")
                        | (SessionEventKind::Ended(_), "ended")
                )
        })
        .map(|e| e.event.at)
        .unwrap_or_else(|| panic!("no {kind} event for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_reported_with_its_signal_within_two_seconds() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("crash");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("crashy", &["--crash-after", "1"], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("crash");
    let sent = Instant::now();
    coord.start_session(&id, "crashy");
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    let took = sent.elapsed();
    assert_eq!(e.reason, EndReason::Crashed, "{e:?}");
    assert_eq!(e.signal, Some(6), "SIGABRT");
    assert!(e.failed);
    // It crashes 1 s after it starts; the report follows within 2 s of that.
    let lag = at_of(&coord, &id, "ended") - at_of(&coord, &id, "starting");
    assert!(lag < 3000, "ended {lag} ms after starting");
    assert!(
        took < Duration::from_secs(4),
        "reported {took:?} after the start command"
    );
    assert!(!alive(coord.pid_of(&id).unwrap()));
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_is_reported_with_its_code() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("exit");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app("quits", &["--exit-after", "1", "--exit-code", "7"], ""),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("exit");
    coord.start_session(&id, "quits");
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!(
        (e.reason, e.exit_code, e.signal),
        (EndReason::Exited, Some(7), None)
    );
    assert!(e.failed, "a non-zero exit is a failure");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamer_that_never_connects_fails_with_start_timeout() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("timeout");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app(
            "silent",
            &["--no-signalling"],
            "start_timeout = \"2s\"\nidle_timeout = \"off\"",
        ),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("silent");
    let sent = wall_ms();
    coord.start_session(&id, "silent");
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::StartTimeout, "{e:?}");
    assert!(e.failed);
    // The streamer handles SIGTERM and exits by itself: no forced kill was needed.
    assert_ne!(e.signal, Some(9), "{e:?}");
    // The timeout counts from the order (the `starting` event is stamped after the spawn, so
    // it can be a few ms later): at least 2 s after it was sent, and not much more.
    let took = at_of(&coord, &id, "ended").saturating_sub(sent);
    assert!((2000..4000).contains(&took), "{took} ms");
    assert!(at_of(&coord, &id, "starting") >= sent);
    assert!(!alive(coord.pid_of(&id).unwrap()));
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_who_stop_being_active_end_the_session_as_idle() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("idle");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app(
            "demo",
            &[],
            "idle_timeout = \"1500ms\"\nempty_timeout = \"off\"",
        ),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let (active, passive) = (sid("active"), sid("passive"));
    coord.start_session(&active, "demo");
    coord.start_session(&passive, "demo");
    coord.wait_ready(&active, Duration::from_secs(60)).await;
    coord.wait_ready(&passive, Duration::from_secs(60)).await;

    let mut a = player(server.addr(), &active, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let _p = player(server.addr(), &passive, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let joined = Instant::now();
    // The active player sends `activity` every 300 ms for 4 s: its session stays.
    while joined.elapsed() < Duration::from_secs(4) {
        send_activity(&mut a).await;
        drain(&mut a).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let e = coord.wait_ended(&passive, Duration::from_secs(1)).await;
    assert_eq!(e.reason, EndReason::Idle);
    assert!(!e.failed);
    assert!(
        coord
            .events_of(&active)
            .iter()
            .all(|k| !matches!(k, SessionEventKind::Ended(_))),
        "an active player keeps the session"
    );
    // Then it stops: idle 1.5 s later.
    let stopped = Instant::now();
    let e = coord.wait_ended(&active, Duration::from_secs(10)).await;
    assert_eq!(e.reason, EndReason::Idle);
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(1000),
        "ended only {after:?} after the last activity"
    );
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_connected_ends_the_session_as_empty() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("empty");
    let server = start_server(&config_toml(
        &coord,
        &dir,
        "",
        &streamer_app(
            "demo",
            &[],
            "empty_timeout = \"1500ms\"\nidle_timeout = \"off\"",
        ),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let (lonely, visited) = (sid("lonely"), sid("visited"));
    coord.start_session(&lonely, "demo");
    coord.start_session(&visited, "demo");
    coord.wait_ready(&lonely, Duration::from_secs(60)).await;
    coord.wait_ready(&visited, Duration::from_secs(60)).await;
    let p = player(server.addr(), &visited, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let e = coord.wait_ended(&lonely, Duration::from_secs(10)).await;
    assert_eq!(e.reason, EndReason::Empty);
    let took = at_of(&coord, &lonely, "ended") - at_of(&coord, &lonely, "ready");
    assert!((1500..3500).contains(&took), "{took} ms after ready");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        coord
            .events_of(&visited)
            .iter()
            .all(|k| !matches!(k, SessionEventKind::Ended(_))),
        "a session with a player is not empty"
    );
    drop(p);
    let e = coord.wait_ended(&visited, Duration::from_secs(10)).await;
    assert_eq!(e.reason, EndReason::Empty, "empty once its player left");
    server.shutdown().await.unwrap();
    coord.check_delivery();
}
