//! Stopping a session ends its whole process tree: the application (a small program that starts
//! `pxs streamer` and a second child that ignores SIGTERM) and everything it started.

mod common;

use common::*;
use pxs_protocol::node::EndReason;
use std::future::ready;
use std::time::Duration;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_the_whole_process_tree() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("stop");
    let tree = env!("CARGO_BIN_EXE_pxs-test-tree");
    let app = format!(
        "[[applications]]\nid = \"tree\"\nexecutable = '{tree}'\nargs = ['{}', 'streamer']\nres_x = 320\nres_y = 240\n",
        pxs_bin().display()
    );
    let server = start_server(&config_toml(&coord, &dir, "", &app)).await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("tree");
    coord.start_session(&id, "tree");
    // Ready: the grandchild streamer identified.
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let leader = coord.pid_of(&id).unwrap();
    let members = wait_until(Duration::from_secs(10), || {
        let m = group_members(leader);
        ready(if m.len() >= 3 {
            Ok(m)
        } else {
            Err(format!("group {leader}: {m:?}"))
        })
    })
    .await;
    let log = std::fs::read_to_string(dir.join("logs").join(format!("{id}.log"))).unwrap();
    assert!(log.contains("\"event\":\"tree\""), "{log}");

    let stopped = wall_ms();
    coord.stop_session(&id);
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::Stopped);
    assert!(!e.failed);
    // The child that ignores SIGTERM does not hold the stop up past the kill grace. Timed by
    // the node's own stamp on `ended`, so the test's polling is not counted.
    let took = coord.at_of(&id, "ended").saturating_sub(stopped);
    assert!(
        u128::from(took) < (KILL_GRACE + SLACK).as_millis(),
        "ended {took} ms after the stop command (grace {KILL_GRACE:?})"
    );
    for pid in &members {
        assert!(!alive(*pid), "process {pid} of the tree is still alive");
    }
    assert!(
        group_members(leader).is_empty(),
        "the process group is empty"
    );
    // The port is released: a new session gets a listener again.
    let again = sid("again");
    coord.start_session(&again, "tree");
    coord.wait_ready(&again, Duration::from_secs(60)).await;
    server.shutdown().await.unwrap();
    let e = coord.wait_ended(&again, Duration::from_secs(15)).await;
    assert_eq!(e.reason, EndReason::NodeShutdown);
    let leader = coord.pid_of(&again).unwrap();
    assert!(
        group_members(leader).is_empty(),
        "shutdown leaves no process behind"
    );
    coord.check_delivery();
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_exits_takes_its_children_with_it() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("exit-tree");
    let tree = env!("CARGO_BIN_EXE_pxs-test-tree");
    // The tree's main child exits after 1 s; the stubborn child would live on.
    let app = format!(
        "[[applications]]\nid = \"tree\"\nexecutable = '{tree}'\nargs = ['{}', 'streamer', '--exit-after', '1', '--exit-code', '3']\nres_x = 320\nres_y = 240\n",
        pxs_bin().display()
    );
    let server = start_server(&config_toml(&coord, &dir, "", &app)).await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("exits");
    coord.start_session(&id, "tree");
    let e = coord.wait_ended(&id, Duration::from_secs(15)).await;
    assert_eq!((e.reason, e.exit_code), (EndReason::Exited, Some(3)));
    let leader = coord.pid_of(&id).unwrap();
    wait_until(Duration::from_secs(10), || {
        let m = group_members(leader);
        ready(if m.is_empty() {
            Ok(())
        } else {
            Err(format!("left behind: {m:?}"))
        })
    })
    .await;
    server.shutdown().await.unwrap();
}
