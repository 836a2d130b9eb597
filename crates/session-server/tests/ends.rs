//! Every way a session ends on its own, each reported with its reason: crash (with the signal),
//! exit (with the code), start timeout, idle players, nobody connected. The application is the
//! real `pxs streamer` with its fault flags.

mod common;

use common::*;
use pxs_protocol::node::{EndReason, SessionId};
use std::future::ready;
use std::time::{Duration, Instant};

/// Whether the session has ended, as a condition for `holds_for`.
fn not_ended(coord: &Coordinator, id: &SessionId) -> Result<(), String> {
    match coord.ended(id) {
        Some(e) => Err(format!("{id} ended: {e:?}")),
        None => Ok(()),
    }
}

/// A player that keeps sending `activity` every 300 ms until told to stop; then hands back its
/// connection and when it last sent one.
struct KeepActive {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Ws, Instant)>,
}

impl KeepActive {
    fn start(mut ws: Ws) -> KeepActive {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut stopped => return (ws, last),
                    _ = every.tick() => {
                        send_activity(&mut ws).await;
                        last = Instant::now();
                        drain(&mut ws).await;
                    }
                }
            }
        });
        KeepActive { stop, task }
    }

    async fn stop(self) -> (Ws, Instant) {
        let _ = self.stop.send(());
        self.task.await.expect("the activity task")
    }
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
    coord.start_session(&id, "crashy");
    let pid = wait_until(Duration::from_secs(15), || {
        ready(coord.pid_of(&id).ok_or_else(|| format!("{id} not started")))
    })
    .await;
    // It crashes 1 s after it starts. The report is timed from the moment the process is seen
    // dead (a zombie counts), not from the start command: how long a debug binary takes to
    // start, or a core dump to be written, on a loaded machine is not the node's doing.
    wait_until(Duration::from_secs(15), || {
        ready(if alive(pid) {
            Err(format!("{pid} has not crashed"))
        } else {
            Ok(())
        })
    })
    .await;
    let died = wall_ms();
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::Crashed, "{e:?}");
    assert_eq!(e.signal, Some(6), "SIGABRT");
    assert!(e.failed);
    // `at` is when the node recorded the end; seen dead can only be later than truly dead.
    let lag = coord.at_of(&id, "ended").saturating_sub(died);
    assert!(lag < 2000, "ended {lag} ms after the process was seen dead");
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

const START_TIMEOUT: Duration = Duration::from_secs(2);

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
            &format!(
                "start_timeout = \"{}ms\"\nidle_timeout = \"off\"",
                START_TIMEOUT.as_millis()
            ),
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
    // it can be a few ms later): at least 2 s after it was sent. Then the streamer got SIGTERM
    // and, not killed, exited within the kill grace: no later than timeout + grace (+ slack).
    let took = coord.at_of(&id, "ended").saturating_sub(sent);
    let latest = (START_TIMEOUT + KILL_GRACE + SLACK).as_millis() as u64;
    assert!(
        (START_TIMEOUT.as_millis() as u64..latest).contains(&took),
        "ended {took} ms after the start command (timeout {START_TIMEOUT:?}, grace {KILL_GRACE:?})"
    );
    assert!(coord.at_of(&id, "starting") >= sent);
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

    // The active player joins first and sends `activity` every 300 ms; the passive one joins
    // after it and sends nothing.
    let a = player(server.addr(), &active, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let keep = KeepActive::start(a);
    // Taken before it connects: the node counts from a moment no earlier than this.
    let joined = wall_ms();
    let _p = player(server.addr(), &passive, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    let e = coord.wait_ended(&passive, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::Idle);
    assert!(!e.failed);
    let took = coord.at_of(&passive, "ended").saturating_sub(joined);
    assert!(took >= 1500, "idle {took} ms after its player joined");
    // The active session's idle deadline, had its activity not counted, came no later than the
    // passive one's (its player joined first): give it as long again as the passive session
    // took to end, and a second more.
    not_ended(&coord, &active).expect("an active player keeps the session");
    holds_for(
        Duration::from_millis(took) + Duration::from_secs(1),
        "the session with an active player to stay",
        || ready(not_ended(&coord, &active)),
    )
    .await;
    // Then it stops: idle 1.5 s later.
    let (_a, last_activity) = keep.stop().await;
    let e = coord.wait_ended(&active, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::Idle);
    // Activity reaches the supervisor at most every 250 ms, so the last one it saw may be
    // that much older than the last one sent.
    let after = last_activity.elapsed();
    assert!(
        after >= Duration::from_millis(1000),
        "ended only {after:?} after the last activity"
    );
    server.shutdown().await.unwrap();
    coord.check_delivery();
}

const EMPTY_TIMEOUT: Duration = Duration::from_millis(1500);

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
            &format!(
                "empty_timeout = \"{}ms\"\nidle_timeout = \"off\"",
                EMPTY_TIMEOUT.as_millis()
            ),
        ),
    ))
    .await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let (lonely, visited) = (sid("lonely"), sid("visited"));
    coord.start_session(&lonely, "demo");
    coord.start_session(&visited, "demo");
    // A player joins `visited` as soon as it is ready (its empty timeout runs from then).
    coord.wait_ready(&visited, Duration::from_secs(60)).await;
    let p = player(server.addr(), &visited, Some(PLAYER_TOKEN))
        .await
        .expect("joins");
    coord.wait_ready(&lonely, Duration::from_secs(60)).await;
    let e = coord.wait_ended(&lonely, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::Empty);
    // Not before the timeout; then SIGTERM, and the streamer exits within the kill grace.
    let took = coord.at_of(&lonely, "ended") - coord.at_of(&lonely, "ready");
    let latest = (EMPTY_TIMEOUT + KILL_GRACE + SLACK).as_millis() as u64;
    assert!(
        (EMPTY_TIMEOUT.as_millis() as u64..latest).contains(&took),
        "{took} ms after ready"
    );
    // `visited` was ready before now, so without its player it would have ended within `took`
    // from now, as `lonely` did: give it that and a second more.
    not_ended(&coord, &visited).expect("a session with a player is not empty");
    holds_for(
        Duration::from_millis(took) + Duration::from_secs(1),
        "a session with a player not to end as empty",
        || ready(not_ended(&coord, &visited)),
    )
    .await;
    drop(p);
    let e = coord.wait_ended(&visited, Duration::from_secs(10)).await;
    assert_eq!(e.reason, EndReason::Empty, "empty once its player left");
    server.shutdown().await.unwrap();
    coord.check_delivery();
}
