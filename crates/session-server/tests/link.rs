//! The node link drops and comes back: sessions keep running, events that happened meanwhile
//! are delivered in order when it returns, none lost, none applied twice.

mod common;

use common::*;
use pxs_protocol::node::{EndReason, SessionEventKind};
use std::future::ready;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_while_the_link_was_down_arrive_once_in_order() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("link");
    let apps = streamer_app(
        "demo",
        &[],
        "idle_timeout = \"off\"\nempty_timeout = \"off\"",
    );
    let server = start_server(&config_toml(&coord, &dir, "", &apps)).await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let (stays, brief) = (sid("stays"), sid("brief"));
    coord.start_session(&stays, "demo");
    coord.start_session(&brief, "demo");
    coord.wait_ready(&stays, Duration::from_secs(60)).await;
    coord.wait_ready(&brief, Duration::from_secs(60)).await;
    let before = coord.seen.lock().unwrap().events.len();

    // The link goes down and stays down (every reconnection refused).
    coord.refuse(true);
    coord.kick();
    coord.wait_unlinked(Duration::from_secs(10)).await;
    // Meanwhile `brief`'s application exits by itself (the streamer exits 0 on SIGTERM; the
    // node did not ask for it). Done by the test, not by a timer in the application, so that
    // it happens while the link is down however long the start took.
    let pid = coord.pid_of(&brief).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to brief's application");
    // The node has taken note of the end (it no longer routes `brief`) ...
    wait_until(Duration::from_secs(20), || async {
        match healthz(server.addr()).await?["sessions"].as_u64() {
            Some(1) => Ok(()),
            n => Err(format!("the node routes {n:?} sessions, want 1")),
        }
    })
    .await;
    // ... and has since tried to deliver it: a reconnection, refused, after that.
    let refused = coord.attempts_answered(503);
    wait_until(Duration::from_secs(20), || {
        let now = coord.attempts_answered(503);
        ready(if now > refused {
            Ok(())
        } else {
            Err(format!(
                "no reconnection since the end ({now} refused in all)"
            ))
        })
    })
    .await;
    assert_eq!(
        coord.seen.lock().unwrap().events.len(),
        before,
        "nothing can arrive while the link is down"
    );
    coord.refuse(false);
    let e = coord.wait_ended(&brief, Duration::from_secs(20)).await;
    assert_eq!((e.reason, e.exit_code), (EndReason::Exited, Some(0)));

    let (connections, hello) = {
        let seen = coord.seen.lock().unwrap();
        (seen.connections, seen.hellos.last().cloned().unwrap())
    };
    assert!(connections >= 2, "reconnected");
    // The hello after the reconnect lists the session that kept running.
    assert_eq!(
        hello
            .sessions
            .iter()
            .map(|s| s.session_id.clone())
            .collect::<Vec<_>>(),
        vec![stays.clone()]
    );
    assert!(
        alive(coord.pid_of(&stays).unwrap()),
        "sessions run on while the link is down"
    );
    assert!(
        coord
            .events_of(&stays)
            .iter()
            .all(|k| !matches!(k, SessionEventKind::Ended(_))),
    );
    coord.check_delivery();

    // A second drop, this time right after a stop command, with no pause.
    coord.stop_session(&stays);
    coord.kick();
    let e = coord.wait_ended(&stays, Duration::from_secs(20)).await;
    assert_eq!(e.reason, EndReason::Stopped);
    server.shutdown().await.unwrap();
    coord.check_delivery();
    let seen = coord.seen.lock().unwrap();
    let ended = seen
        .events
        .iter()
        .filter(|e| matches!(e.event.kind, SessionEventKind::Ended(_)))
        .count();
    assert_eq!(ended, 2, "one ended per session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_node_token_is_refused_and_retried() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("token");
    let toml = config_toml(&coord, &dir, "", "").replace(NODE_TOKEN, "wrong");
    let server = start_server(&toml).await;
    // The first attempt and two retries (after 250 ms and 500 ms of backoff), each refused.
    wait_until(Duration::from_secs(15), || {
        let refused = coord.attempts_answered(401);
        ready(if refused >= 3 {
            Ok(())
        } else {
            Err(format!("{refused} attempts refused for the token"))
        })
    })
    .await;
    {
        let seen = coord.seen.lock().unwrap();
        assert!(
            seen.attempts.iter().all(|s| *s == 401),
            "every attempt refused for its token: {:?}",
            seen.attempts
        );
        assert_eq!(seen.connections, 0, "never linked");
        assert!(seen.hellos.is_empty());
    }
    server.shutdown().await.unwrap();
}
