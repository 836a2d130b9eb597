//! The disk under the SQLite database fills up, then frees again (issue 9, case 1). While it is
//! full, writes fail with an error and `/healthz` says so; afterwards, every write that was
//! answered 2xx is readable at once and is still there after a restart.
//!
//! The database lives on a small tmpfs the test mounts (as root; CI runs as root). Where mounting
//! is not allowed the test says so and passes only outside CI.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::SessionState;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<SmallDisk> {
        let dir = temp_dir(name);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if f.write_all(&block).is_err() || f.sync_all().is_err() {
                break;
            }
        }
        // The last bytes too (tmpfs counts pages).
        let small = [0u8; 512];
        while f.write_all(&small).and_then(|()| f.sync_all()).is_ok() {}
        path
    }
}

impl SmallDisk {
    /// A 3 MiB disk; None (the test is skipped, with a line saying so) where mounting is not
    /// allowed, which CI must allow.
    fn mount_or_skip(name: &str) -> Option<SmallDisk> {
        let disk = SmallDisk::mount(name, "3m");
        if disk.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs (run as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (not root)");
        }
        disk
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn title_body(id: &str) -> serde_json::Value {
    // A long description so that each write needs fresh pages.
    json!({"id": id, "name": id, "application_id": "demo", "visibility": "public",
           "description": "x".repeat(3000)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_every_acknowledged_write_is_durable() {
    let Some(disk) = SmallDisk::mount_or_skip("disk-full") else {
        return;
    };
    let db = format!("sqlite://{}", disk.dir.join("coordinator.db").display());
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let (node, beat) = online_fake_node(&coord, "n1", "demo", 4).await;
    let first = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&first.id, SessionState::Ready, Duration::from_secs(10))
        .await;

    // Every write answered 2xx, by kind: titles created, sessions created.
    let mut titles: Vec<String> = vec!["demo".into()];
    let mut sessions = vec![first.id.clone()];

    let filler = disk.fill();
    // Writes until one fails (a WAL file may still have room for the first few).
    let mut failed = 0;
    let mut saw_unhealthy = false;
    for i in 0..400 {
        let id = format!("full-{i}");
        let (s, v) = coord
            .admin("POST", "/api/v1/titles", Some(title_body(&id)))
            .await;
        match s {
            201 => titles.push(id),
            500..=599 => {
                failed += 1;
                assert!(v["error"]["code"].is_string(), "{v}");
                // While writes fail, /healthz says so.
                let (h, body) = coord.call("GET", "/healthz", None, None).await;
                if h == 503 {
                    saw_unhealthy = true;
                    assert!(body.to_string().contains("write"), "{body}");
                }
                if failed >= 3 {
                    break;
                }
            }
            _ => panic!("POST /api/v1/titles answered {s}: {v}"),
        }
    }
    assert!(failed > 0, "the disk never filled up");
    assert!(saw_unhealthy, "/healthz never reported the failing writes");
    // A node event while the disk is full: the session's end.
    node.running.lock().unwrap().clear();
    node.send_event(
        &first.id,
        pxs_protocol::node::SessionEventKind::Ended(pxs_protocol::node::Ended {
            reason: pxs_protocol::node::EndReason::Exited,
            failed: false,
            exit_code: Some(0),
            signal: None,
            detail: None,
        }),
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(10), || async {
        match coord.call("GET", "/healthz", None, None).await {
            (200, _) => Ok(()),
            (s, v) => Err(format!("healthz {s}: {v}")),
        }
    })
    .await;

    // The session ends in a defined state: its event applied, or its node lost (the link that
    // could not store the event was closed, and this fake node does not redial).
    let ended = coord
        .wait_state(&first.id, SessionState::Ended, Duration::from_secs(15))
        .await;
    assert!(
        matches!(
            ended.end_reason.map(|r| r.as_str()),
            Some("exited" | "node_lost")
        ),
        "{ended:?}"
    );

    // After the fault: every 2xx write is readable at once.
    for i in 0..20 {
        titles.push(title_readable_at_once(&coord, &format!("after-{i}")).await);
    }
    for _ in 0..3 {
        let (s, v) = coord
            .admin(
                "POST",
                "/api/v1/sessions",
                Some(json!({"title_id": "demo"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id: pxs_protocol::node::SessionId = serde_json::from_value(v["id"].clone()).unwrap();
        let (s, v) = coord
            .admin("GET", &format!("/api/v1/sessions/{id}"), None)
            .await;
        assert_eq!(s, 200, "session {id} answered 201 but reads {s}: {v}");
        sessions.push(id);
    }

    // And after a restart.
    beat.abort();
    let coord = coord.restart().await;
    assert_all_there(&coord, &titles, &sessions).await;
    assert_db_file_has(&disk.dir.join("coordinator.db"), titles.len());
}

/// Creates title `id`, which must answer 201 and then read 200 at once; returns the id.
async fn title_readable_at_once(coord: &Coord, id: &str) -> String {
    let (s, v) = coord
        .admin("POST", "/api/v1/titles", Some(title_body(id)))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = coord
        .admin("GET", &format!("/api/v1/titles/{id}"), None)
        .await;
    assert_eq!(s, 200, "title {id} answered 201 but reads {s}: {v}");
    id.to_owned()
}

/// Every title and session in the lists reads 200.
async fn assert_all_there(
    coord: &Coord,
    titles: &[String],
    sessions: &[pxs_protocol::node::SessionId],
) {
    for id in titles {
        let (s, v) = coord
            .admin("GET", &format!("/api/v1/titles/{id}"), None)
            .await;
        assert_eq!(s, 200, "title {id} lost in the restart: {v}");
    }
    for id in sessions {
        let (s, v) = coord
            .admin("GET", &format!("/api/v1/sessions/{id}"), None)
            .await;
        assert_eq!(s, 200, "session {id} lost in the restart: {v}");
    }
}

/// The titles are in the database file itself (read with a connection of our own).
fn assert_db_file_has(path: &Path, n: usize) {
    let rt = tokio::runtime::Handle::current();
    let url = format!("sqlite://{}", path.display());
    let count: i64 = tokio::task::block_in_place(|| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT COUNT(*) FROM titles")
                .fetch_one(&mut c)
                .await
                .unwrap()
        })
    });
    assert_eq!(count, i64::try_from(n).unwrap());
}

/// The issue's own steps, with real processes: a real session server and streamers; with the
/// disk full, a streamer is killed, so its node's `ended` event meets the full disk; then the
/// space comes back. Every write answered 2xx afterwards is in the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_event_on_a_full_disk_does_not_lose_later_writes() {
    let Some(disk) = SmallDisk::mount_or_skip("disk-full-node") else {
        return;
    };
    let db = format!("sqlite://{}", disk.dir.join("coordinator.db").display());
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let node_dir = temp_dir("disk-full-node-n1");
    let node = NodeProcess::start(&coord.link_url(), "n1", 3, &node_dir);
    wait_until(Duration::from_secs(20), || async {
        match coord.node_state("n1").await {
            Some(pxs_protocol::api::NodeState::Online) => Ok(()),
            s => Err(format!("node is {s:?}\n{}", node.log())),
        }
    })
    .await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(30))
        .await;

    let filler = disk.fill();
    let mut failed = 0;
    for i in 0..400 {
        let (s, v) = coord
            .admin(
                "POST",
                "/api/v1/titles",
                Some(title_body(&format!("full-{i}"))),
            )
            .await;
        match s {
            201 => {}
            500..=599 => {
                failed += 1;
                if failed >= 2 {
                    break;
                }
            }
            _ => panic!("POST /api/v1/titles answered {s}: {v}"),
        }
    }
    assert!(failed > 0, "the disk never filled up");
    let failures = || async {
        let (_, m) = coord.call("GET", "/metrics", None, None).await;
        let text = m.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("pxs_database_commit_failures_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = failures().await;
    // The streamer dies; its node reports `ended`, which the full disk refuses.
    kill_streamers_of(&node_dir);
    wait_until(Duration::from_secs(20), || async {
        let now = failures().await;
        if now > before {
            Ok(())
        } else {
            Err(format!("no commit has failed since the kill ({now})"))
        }
    })
    .await;
    std::fs::remove_file(&filler).unwrap();

    // The node's event is stored once the space is back (the node resends it).
    wait_until(Duration::from_secs(30), || async {
        let s = coord.session(&a.id).await;
        if s.state.is_final() {
            Ok(())
        } else {
            Err(format!("{} is still {:?}", a.id, s.state))
        }
    })
    .await;
    let ended = coord.session(&a.id).await;
    assert_eq!(
        ended.end_reason.map(|r| r.as_str()),
        Some("crashed"),
        "{ended:?}"
    );
    // Every 2xx write after the fault is readable at once, and in the file after a restart.
    let mut titles = vec!["demo".to_owned()];
    let mut sessions = vec![a.id.clone()];
    for i in 0..10 {
        titles.push(title_readable_at_once(&coord, &format!("after-{i}")).await);
    }
    let b = coord.create(json!({"title_id": "demo"})).await;
    let (s, v) = coord
        .admin("GET", &format!("/api/v1/sessions/{}", b.id), None)
        .await;
    assert_eq!(s, 200, "session {} answered 201 but reads {s}: {v}", b.id);
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(30))
        .await;
    sessions.push(b.id.clone());

    let coord = coord.restart().await;
    assert_all_there(&coord, &titles, &sessions).await;
    // The running session was not stopped by the restart.
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(10))
        .await;
    drop(node);
}
