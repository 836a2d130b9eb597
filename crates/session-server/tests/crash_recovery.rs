//! The real `pxs session-server` is killed with SIGKILL, or stopped, and started again on the
//! same data dir (or on a new one): what its sessions' processes do, what the next run reports,
//! and how it numbers its events.
//!
//! Normally each session's guard kills its processes the moment the session server dies (see
//! `orphans.rs`); the first test here takes the guards away to check the second line of
//! defence: the next start finds the orphans in the data dir, kills their trees and reports
//! those sessions `ended{node_restart}`.

mod common;

use common::*;
use pxs_protocol::node::{EndReason, SessionEventKind};
use std::time::Duration;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_the_next_start_kills_the_orphans_and_reports_them() {
    let coord = Coordinator::start().await;
    let dir = temp_dir("sigkill");
    let file = dir.join("session-server.toml");
    std::fs::write(
        &file,
        config_toml(
            &coord,
            &dir.join("data"),
            "",
            &streamer_app("demo", &[], ""),
        ),
    )
    .unwrap();

    let mut node = Node::start(&file);
    coord.wait_linked(Duration::from_secs(20)).await;
    let (a, b) = (sid("orphan_a"), sid("orphan_b"));
    coord.start_session(&a, "demo");
    coord.start_session(&b, "demo");
    coord.wait_ready(&a, Duration::from_secs(60)).await;
    coord.wait_ready(&b, Duration::from_secs(60)).await;
    let pids = [coord.pid_of(&a).unwrap(), coord.pid_of(&b).unwrap()];

    // The guards fail first (as if killed by an operator), so the apps can outlive the node.
    let guards: Vec<u32> = guards_of(node.pid()).into_iter().map(|(_, g)| g).collect();
    assert_eq!(guards.len(), 2, "one guard per session");
    for g in &guards {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*g as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    wait_all_gone(&guards, Duration::from_secs(5)).await;
    // SIGKILL: no chance to clean up.
    node.kill9();
    coord.wait_unlinked(Duration::from_secs(5)).await;
    for pid in pids {
        assert!(
            alive(pid),
            "{pid} outlived the session server (it is an orphan now)"
        );
    }
    let state = std::fs::read_to_string(dir.join("data").join("state.json")).unwrap();
    assert!(
        state.contains("orphan_a") && state.contains("orphan_b"),
        "{state}"
    );

    let node = Node::start(&file);
    for id in [&a, &b] {
        let e = coord.wait_ended(id, Duration::from_secs(20)).await;
        assert_eq!(e.reason, EndReason::NodeRestart, "{id}: {e:?}");
        assert!(!e.failed, "it had been ready");
    }
    for pid in pids {
        wait_until(Duration::from_secs(5), || {
            std::future::ready(if alive(pid) {
                Err(format!("{pid} still alive"))
            } else {
                Ok(())
            })
        })
        .await;
        assert!(
            group_members(pid).is_empty(),
            "nothing left of {pid}'s group"
        );
    }
    // The restarted node works: a new session starts.
    let c = sid("after");
    coord.start_session(&c, "demo");
    coord.wait_ready(&c, Duration::from_secs(60)).await;
    coord.check_delivery();
    let pid = coord.pid_of(&c).unwrap();
    // A clean stop (SIGTERM) ends it and leaves nothing behind.
    let mut node = node;
    let stopping = tokio::task::spawn_blocking(move || {
        node.terminate();
        node
    });
    let e = coord.wait_ended(&c, Duration::from_secs(20)).await;
    assert_eq!(e.reason, EndReason::NodeShutdown);
    wait_until(Duration::from_secs(10), || {
        std::future::ready(if alive(pid) {
            Err(format!("{pid} still alive"))
        } else {
            Ok(())
        })
    })
    .await;
    drop(stopping.await.unwrap());
    coord.check_delivery();
}

/// Writes a config for the real binary in a fresh directory; returns the file.
fn real_node_config(coord: &Coordinator, name: &str, apps: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let file = dir.join("session-server.toml");
    std::fs::write(&file, config_toml(coord, &dir.join("data"), "", apps))
        .expect("write the config");
    file
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_replayed_ends_arrive_before_the_first_heartbeat() {
    init_logs();
    let coord = Coordinator::start().await;
    let apps = format!(
        "{}{}",
        streamer_app("demo", &[], ""),
        streamer_app("mute", &["--no-signalling"], "")
    );
    let file = real_node_config(&coord, "replay-order", &apps);
    let mut node = Node::start(&file);
    coord.wait_linked(Duration::from_secs(20)).await;
    let (ready, never) = (sid("was_ready"), sid("never_ready"));
    coord.start_session(&ready, "demo");
    coord.start_session(&never, "mute");
    coord.wait_ready(&ready, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(20), || {
        std::future::ready(
            coord
                .pid_of(&never)
                .map(|_| ())
                .ok_or("not started".to_owned()),
        )
    })
    .await;
    node.kill9();
    coord.wait_unlinked(Duration::from_secs(5)).await;
    // A coordinator slow to answer `hello`: several heartbeat intervals (300 ms) pass before
    // its `welcome`.
    coord.delay_welcome(Duration::from_millis(1500));
    let _node = Node::start(&file);
    let e = coord.wait_ended(&never, Duration::from_secs(20)).await;
    assert_eq!(
        (e.reason, e.failed),
        (EndReason::NodeRestart, true),
        "{e:?}"
    );
    let e = coord.wait_ended(&ready, Duration::from_secs(20)).await;
    assert_eq!(
        (e.reason, e.failed),
        (EndReason::NodeRestart, false),
        "{e:?}"
    );
    // The second connection, in arrival order: hello, then the replayed events, and only then
    // heartbeats.
    let seen = coord.seen.lock().unwrap();
    let ended_seqs: Vec<u64> = seen
        .events
        .iter()
        .filter(|e| matches!(e.event.kind, SessionEventKind::Ended(_)))
        .map(|e| e.seq)
        .collect();
    let second: Vec<&str> = seen
        .arrivals
        .iter()
        .filter(|(c, _)| *c == 2)
        .map(|(_, w)| w.as_str())
        .collect();
    assert_eq!(second.first(), Some(&"hello"), "{second:?}");
    let first_heartbeat = second.iter().position(|w| *w == "heartbeat");
    for seq in ended_seqs {
        let at = second
            .iter()
            .position(|w| *w == format!("event {seq}"))
            .unwrap_or_else(|| panic!("ended #{seq} not on the second connection: {second:?}"));
        assert!(
            first_heartbeat.is_none_or(|h| at < h),
            "ended #{seq} after a heartbeat: {second:?}"
        );
    }
    drop(seen);
    coord.check_delivery();
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_dir_numbers_its_events_from_the_coordinators_acked() {
    init_logs();
    let coord = Coordinator::start().await;
    let file = real_node_config(&coord, "lost-data-dir", &streamer_app("demo", &[], ""));
    let mut node = Node::start(&file);
    coord.wait_linked(Duration::from_secs(20)).await;
    let first = sid("before");
    coord.start_session(&first, "demo");
    coord.wait_ready(&first, Duration::from_secs(60)).await;
    coord.stop_session(&first);
    coord.wait_ended(&first, Duration::from_secs(20)).await;
    let acked = coord.last_seq();
    assert_eq!(acked, 3, "starting, ready, ended");
    // Off the runtime: the fake coordinator on it must go on answering while the node stops.
    tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();

    // The data dir is lost; the node comes back under the same name.
    std::fs::remove_dir_all(file.parent().unwrap().join("data")).unwrap();
    let _node = Node::start(&file);
    wait_until(Duration::from_secs(20), || {
        std::future::ready(
            if coord.seen.lock().unwrap().connections >= 2 && coord.connected() {
                Ok(())
            } else {
                Err("not linked again".into())
            },
        )
    })
    .await;
    let second = sid("after");
    coord.start_session(&second, "demo");
    coord.wait_ready(&second, Duration::from_secs(60)).await;
    let seen = coord.seen.lock().unwrap();
    let numbers: Vec<u64> = seen
        .arrivals
        .iter()
        .filter(|(c, _)| *c == 2)
        .filter_map(|(_, w)| w.strip_prefix("event ")?.parse().ok())
        .collect();
    assert_eq!(
        numbers.first(),
        Some(&(acked + 1)),
        "the first event after the welcome is acked + 1: {numbers:?}"
    );
    assert_eq!(numbers[..2], [acked + 1, acked + 2], "{numbers:?}");
    drop(seen);
    coord.check_delivery();
}
