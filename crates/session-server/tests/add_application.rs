//! Adding an application is one config entry and a reload (issue 12), with the real binaries:
//! a `pxs coordinator` process and a `pxs session-server` process running `pxs streamer`. The
//! node's `demo` application becomes a title by itself and has a live session with a player
//! connected; the operator appends an `[[applications]]` entry `other` to the node's config file
//! and runs `pxs session-server reload`; `other` appears in the anonymous catalog with its name
//! and description, and a session of it starts and becomes ready, while the `demo` session stays
//! the same, ready session the whole time, its player WebSocket open.

mod common;

use common::*;
use pxs_test_support::raw_http;
use serde_json::{Value, json};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ADMIN: &str = "admin-token-for-the-catalog-test";
const WAIT: Duration = Duration::from_secs(60);

/// A `pxs coordinator` process on 127.0.0.1:0 with SQLite in `dir`; its log in
/// `<dir>/coordinator.log`. Stopped with SIGTERM when dropped.
struct CoordinatorProcess {
    child: Child,
    addr: SocketAddr,
}

impl CoordinatorProcess {
    fn start(dir: &Path) -> CoordinatorProcess {
        let mut child = Command::new(pxs_bin())
            .args(["coordinator", "--listen", "127.0.0.1:0", "--database-url"])
            .arg(format!("sqlite://{}", dir.join("coordinator.db").display()))
            .args(["--admin-token", ADMIN, "--node-token", NODE_TOKEN])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("coordinator.log")).expect("log file"))
            .spawn()
            .expect("pxs coordinator starts");
        let stdout = child.stdout.take().expect("stdout");
        // Its one JSON line says where it listens (port 0).
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a line");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not the listening line ({e}): {line}"));
        let addr = v["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"));
        CoordinatorProcess { child, addr }
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// On a failure, the end of each process's log, to read with the panic.
struct ShowLogs(Vec<PathBuf>);

impl Drop for ShowLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- {} (last 40 lines) -----", path.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A request to the coordinator's API over a fresh connection: the status and the JSON body.
async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        raw_http::exchange(addr, req.as_bytes()),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 20 s"))
    .unwrap_or_else(|| panic!("{method} {path}: closed without an answer"));
    let v = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body));
    (answer.status, v)
}

/// The title `id` as an anonymous visitor finds it in the catalog (`GET /api/v1/titles`).
async fn in_catalog(addr: SocketAddr, id: &str) -> Result<Value, String> {
    let (st, v) = api(addr, "GET", "/api/v1/titles", None, None).await;
    if st != 200 {
        return Err(format!("GET /api/v1/titles: {st} {v}"));
    }
    v["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["id"] == id).cloned())
        .ok_or_else(|| format!("no title {id} in {v}"))
}

/// An anonymous visitor starts a session of `title`: its id and owner key.
async fn start(addr: SocketAddr, title: &str) -> (String, String) {
    let (st, v) = api(
        addr,
        "POST",
        "/api/v1/sessions",
        None,
        Some(json!({"title_id": title})),
    )
    .await;
    assert_eq!(st, 201, "POST /api/v1/sessions {title}: {v}");
    (
        v["id"].as_str().expect("an id").to_owned(),
        v["owner_key"].as_str().expect("an owner key").to_owned(),
    )
}

/// The session as its owner sees it.
async fn session(addr: SocketAddr, id: &str, key: &str) -> Value {
    let (st, v) = api(
        addr,
        "GET",
        &format!("/api/v1/sessions/{id}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(st, 200, "GET session {id}: {v}");
    v
}

/// Waits until the session is ready; its join URL.
async fn wait_ready(addr: SocketAddr, id: &str, key: &str) -> String {
    wait_until(WAIT, || async move {
        let v = session(addr, id, key).await;
        match (v["state"].as_str(), v["join_url"].as_str()) {
            (Some("ready"), Some(url)) => Ok(url.to_owned()),
            (Some("ended" | "failed"), _) => panic!("session {id} is over: {v}"),
            _ => Err(format!("session {id}: {v}")),
        }
    })
    .await
}

/// A player on the join URL, its streamer there (the session's application identified with
/// the session's id).
async fn join(join_url: &str, id: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(join_url)
        .await
        .unwrap_or_else(|e| panic!("joining {id}: {e}"));
    let streamers = list_streamers(&mut ws).await;
    assert_eq!(streamers, [id], "the session's own streamer");
    ws
}

fn node_config(dir: &Path, coordinator: SocketAddr, port: u16, apps: &str) -> String {
    format!(
        "[node]\nname = \"catalog-node\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         listen = \"127.0.0.1:{port}\"\ndata_dir = '{}'\nmax_sessions = 4\n\
         streamer_ports = \"{}\"\nkill_grace = \"2s\"\nheartbeat_interval = \"300ms\"\n\
         gpus = \"none\"\n\n[coordinator]\nurl = \"http://{coordinator}\"\n\
         token = \"{NODE_TOKEN}\"\n\n{apps}",
        dir.join("data").display(),
        port_range(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_added_to_the_config_and_reloaded_is_in_the_catalog() {
    let dir = temp_dir("add-application");
    let coordinator = CoordinatorProcess::start(&dir);
    let c = coordinator.addr;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let file = dir.join("node.toml");
    let demo = streamer_app(
        "demo",
        &["-RenderOffScreen"],
        "name = \"Demo\"\ndescription = \"The test pattern.\"\n",
    );
    std::fs::write(&file, node_config(&dir, c, port, &demo)).expect("config written");
    let node = Node::start(&file);
    let _logs = ShowLogs(vec![dir.join("coordinator.log"), node.log.clone()]);

    // The node's application is a title by itself, for anonymous visitors too.
    let t = wait_until(WAIT, || in_catalog(c, "demo")).await;
    assert_eq!(
        (&t["name"], &t["description"]),
        (&json!("Demo"), &json!("The test pattern."))
    );
    let (demo_id, demo_key) = start(c, "demo").await;
    let demo_join = wait_ready(c, &demo_id, &demo_key).await;
    let mut demo_player = join(&demo_join, &demo_id).await;

    // From now on, the demo session stays the same ready session.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (watching, id, key) = (watching.clone(), demo_id.clone(), demo_key.clone());
        async move {
            let mut checks = 0u32;
            while watching.load(Ordering::SeqCst) {
                let v = session(c, &id, &key).await;
                if v["state"] != "ready" || v["id"] != id.as_str() {
                    return Err(format!("after {checks} checks the demo session is {v}"));
                }
                checks += 1;
                // The pace of the check, not a wait for something to happen.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(checks)
        }
    });

    // The operator appends an entry and reloads.
    let other = streamer_app(
        "other",
        &["-RenderOffScreen"],
        "name = \"Other game\"\ndescription = \"Another one.\"\n",
    );
    let mut text = std::fs::read_to_string(&file).expect("config read");
    text.push_str(&other);
    std::fs::write(&file, text).expect("config written");
    let out = Command::new(pxs_bin())
        .args(["session-server", "reload", "--config"])
        .arg(&file)
        .output()
        .expect("pxs session-server reload runs");
    assert!(
        out.status.success(),
        "reload: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let t = wait_until(WAIT, || in_catalog(c, "other")).await;
    assert_eq!(
        (
            &t["name"],
            &t["description"],
            &t["visibility"],
            &t["source"]
        ),
        (
            &json!("Other game"),
            &json!("Another one."),
            &json!("public"),
            &json!("node")
        ),
        "{t}"
    );
    let (other_id, other_key) = start(c, "other").await;
    let other_join = wait_ready(c, &other_id, &other_key).await;
    let _other_player = join(&other_join, &other_id).await;

    // The demo session was ready throughout, and its player's WebSocket is still the open one.
    watching.store(false, Ordering::SeqCst);
    let checks = watcher
        .await
        .expect("the watcher ran")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(checks > 0, "the demo session was never checked");
    assert_eq!(
        list_streamers(&mut demo_player).await,
        [demo_id.as_str()],
        "the demo player's WebSocket answers"
    );
    let v = session(c, &demo_id, &demo_key).await;
    assert_eq!(v["state"], "ready", "{v}");
    drop(node);
    drop(coordinator);
}
