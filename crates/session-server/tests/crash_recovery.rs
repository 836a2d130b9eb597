//! The real `pxs session-server` is killed with SIGKILL while it runs sessions. Their processes
//! live on (they are in their own process groups); the next start finds them in the data dir,
//! kills their trees and reports those sessions `ended{node_restart}`.

mod common;

use common::*;
use pxs_protocol::node::EndReason;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Node(Child);

impl Node {
    /// Starts the binary and waits for its `listening` line.
    fn start(config: &std::path::Path) -> Node {
        let mut cmd = Command::new(pxs_bin());
        cmd.args(["session-server", "--config"])
            .arg(config)
            .stdout(Stdio::piped());
        if std::env::var_os("PXS_TEST_LOGS").is_none() {
            cmd.stderr(Stdio::null());
        }
        let mut child = cmd.spawn().expect("pxs session-server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a line");
        assert!(line.contains("\"listening\""), "{line}");
        Node(child)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

    // SIGKILL: no chance to clean up.
    node.0.kill().expect("SIGKILL");
    node.0.wait().expect("reaped");
    wait_until(Duration::from_secs(5), || {
        if coord.connected() {
            Err("link still up".into())
        } else {
            Ok(())
        }
    })
    .await;
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
            if alive(pid) {
                Err(format!("{pid} still alive"))
            } else {
                Ok(())
            }
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
    let status = Command::new("kill")
        .arg(node.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let e = coord.wait_ended(&c, Duration::from_secs(20)).await;
    assert_eq!(e.reason, EndReason::NodeShutdown);
    wait_until(Duration::from_secs(10), || {
        if alive(pid) {
            Err(format!("{pid} still alive"))
        } else {
            Ok(())
        }
    })
    .await;
    drop(node);
    coord.check_delivery();
}
