#![allow(clippy::unwrap_used)]
//! `pxs coordinator backup`: a copy of a running coordinator's SQLite database that a new
//! coordinator opens with every row; it never overwrites a file, and sends PostgreSQL users to
//! pg_dump.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const ADMIN: &str = "pxs_adm_backup_test_admin_token_0123456789";
const NODE: &str = "pxs_node_backup_test_node_token_0123456789";

fn pxs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pxs"))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pxs-backup-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `pxs coordinator` on `db`, once it says where it listens.
fn coordinator(db: &Path) -> Running {
    let mut child = pxs()
        .args(["coordinator", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .args(["--admin-token", ADMIN, "--node-token", NODE])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the coordinator says where it listens");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Running {
        child,
        url: format!("http://{}", v["addr"].as_str().unwrap()),
    }
}

fn backup(db_url: &str, out: &Path) -> Output {
    pxs()
        .args(["coordinator", "--database-url", db_url, "backup"])
        .arg(out)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_backup_of_a_running_coordinator_opens_with_every_row() {
    let dir = temp_dir();
    let db = dir.join("coordinator.db");
    let live = coordinator(&db);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/titles", live.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "id": "kept", "name": "Kept in the backup", "application_id": "demo",
            "visibility": "public", "max_players": 0, "idle_timeout": 60,
            "empty_timeout": 60, "max_duration": 0
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    // While it runs.
    let out = dir.join("backup.db");
    let done = backup(&format!("sqlite://{}", db.display()), &out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("backed up to"));

    // Never over an existing file; the file is left as it was.
    let before = std::fs::read(&out).unwrap();
    let again = backup(&format!("sqlite://{}", db.display()), &out);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(&out).unwrap(), before);

    // PostgreSQL: pg_dump, with the password kept out of the message.
    let pg = backup(
        "postgres://pxs:secret-password@127.0.0.1:1/pxs",
        &dir.join("pg.db"),
    );
    assert_eq!(pg.status.code(), Some(1));
    let err = String::from_utf8_lossy(&pg.stderr);
    assert!(
        err.contains("pg_dump") && !err.contains("secret-password"),
        "{err}"
    );
    assert!(!dir.join("pg.db").exists());

    // The live database is gone; a coordinator on the backup has the title.
    drop(live);
    std::fs::remove_file(&db).unwrap();
    let restored = coordinator(&out);
    let title: serde_json::Value = http
        .get(format!("{}/api/v1/titles/kept", restored.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(title["name"], "Kept in the backup", "{title}");
    drop(restored);
    let _ = std::fs::remove_dir_all(&dir);
}
