//! Test harness: a scripted coordinator speaking the node link (an axum WebSocket server on
//! 127.0.0.1:0 that numbers, de-duplicates and acknowledges events as a real one must), the
//! session server in-process, the `pxs` binary (its `streamer` is the application), players, and
//! test-support's `wait_until` and `holds_for`.
#![allow(dead_code)]

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::{
    ApplicationInfo, CoordinatorToNode, EndReason, Ended, Heartbeat, Hello, NodeToCoordinator,
    SequencedEvent, SessionEventKind, SessionId, StartOptions, Token,
};
use pxs_session_server::{Config, Options, SessionServer};
#[allow(unused_imports)] // each test binary uses its own subset
pub use pxs_test_support::{holds_for, pxs_bin, wait_until};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const NODE_TOKEN: &str = "node-token-for-tests";
pub const PLAYER_TOKEN: &str = "player-token-for-tests";

/// The `kill_grace` of every config [`config_toml`] writes: how long a session's processes have
/// to exit after SIGTERM before they are killed.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Slack added to a bound derived from the configuration (a timeout, the kill grace) before a
/// test calls something late: room for a debug build on a loaded 2-core machine.
pub const SLACK: Duration = Duration::from_secs(3);

/// Now, in the milliseconds of an event's `at`.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    pxs_test_support::scratch_dir(&format!("session-server-{name}"))
}

/// A range of 20 loopback ports no other test of this process uses. Below Linux's ephemeral
/// range (32768-60999): an outgoing connection of any test (HTTP, PostgreSQL) may take a port
/// there as its own, and a session limited to one port then finds it in use.
pub fn port_range() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 30) as u16 * 400;
    let start = base + NEXT.fetch_add(20, Ordering::Relaxed);
    format!("{start}-{}", start + 19)
}

pub fn sid(name: &str) -> SessionId {
    SessionId::parse(&format!("ses_{name}")).expect("session id")
}

// ----- the scripted coordinator -----

#[derive(Default)]
pub struct Seen {
    pub hellos: Vec<Hello>,
    /// Events processed, in order (each seq once).
    pub events: Vec<SequencedEvent>,
    /// Every event frame received, duplicates included.
    pub received: Vec<u64>,
    /// Sequence gaps found (an event arriving before an earlier one): must stay empty.
    pub gaps: Vec<(u64, u64)>,
    pub heartbeats: Vec<Heartbeat>,
    pub applications: Vec<Vec<ApplicationInfo>>,
    pub connections: u32,
    /// The status answered to every request for the link, in order: 101 (upgraded), 401 (wrong
    /// node token), 503 (refused while `refuse` is on).
    pub attempts: Vec<u16>,
    /// Every message from the node in arrival order, as (connection number, what):
    /// `hello`, `event <seq>`, `heartbeat`, `applications`.
    pub arrivals: Vec<(u32, String)>,
    last_seq: u64,
    conn: Option<mpsc::UnboundedSender<Option<CoordinatorToNode>>>,
    refuse: bool,
    welcome_delay: Duration,
}

#[derive(Clone)]
pub struct Coordinator {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl Coordinator {
    pub async fn start() -> Coordinator {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .route("/api/v1/nodes/link", axum::routing::get(link))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Coordinator { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends to the node on the current connection; false if there is none.
    pub fn send(&self, m: CoordinatorToNode) -> bool {
        self.lock()
            .conn
            .as_ref()
            .is_some_and(|c| c.send(Some(m)).is_ok())
    }

    pub fn start_session(&self, id: &SessionId, app: &str) {
        let sent = self.send(CoordinatorToNode::StartSession {
            session_id: id.clone(),
            application_id: app.parse().expect("app id"),
            options: StartOptions {
                player_token: Some(Token(PLAYER_TOKEN.into())),
                ..Default::default()
            },
        });
        assert!(sent, "no node connected");
    }

    pub fn stop_session(&self, id: &SessionId) {
        assert!(self.send(CoordinatorToNode::StopSession {
            session_id: id.clone()
        }));
    }

    /// Closes the current connection.
    pub fn kick(&self) {
        if let Some(c) = self.lock().conn.take() {
            let _ = c.send(None);
        }
    }

    /// Answer each `hello` only after `delay` (a slow coordinator).
    pub fn delay_welcome(&self, delay: Duration) {
        self.lock().welcome_delay = delay;
    }

    /// The highest seq processed so far (what `welcome` says).
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Refuse (503) new connections while `on`.
    pub fn refuse(&self, on: bool) {
        self.lock().refuse = on;
    }

    pub fn connected(&self) -> bool {
        self.lock().conn.is_some()
    }

    /// How many requests for the link were answered with `status` so far.
    pub fn attempts_answered(&self, status: u16) -> usize {
        self.lock()
            .attempts
            .iter()
            .filter(|s| **s == status)
            .count()
    }

    /// Waits until a node is linked (hello answered).
    pub async fn wait_linked(&self, timeout: Duration) {
        wait_until(timeout, || {
            std::future::ready(if self.connected() {
                Ok(())
            } else {
                Err("no node linked".into())
            })
        })
        .await
    }

    /// Waits until no node is linked (its session server went away).
    pub async fn wait_unlinked(&self, timeout: Duration) {
        wait_until(timeout, || {
            std::future::ready(if self.connected() {
                Err("link still up".into())
            } else {
                Ok(())
            })
        })
        .await
    }

    /// The processed events of one session.
    pub fn events_of(&self, id: &SessionId) -> Vec<SessionEventKind> {
        self.lock()
            .events
            .iter()
            .filter(|e| &e.event.session_id == id)
            .map(|e| e.event.kind.clone())
            .collect()
    }

    pub async fn wait_ready(&self, id: &SessionId, timeout: Duration) -> String {
        let ready = || {
            let ev = self.events_of(id);
            for k in &ev {
                if let SessionEventKind::Ready { player_url } = k {
                    return Ok(player_url.clone());
                }
                if let SessionEventKind::Ended(e) = k {
                    panic!("{id} ended before ready: {e:?}");
                }
            }
            Err(format!("{id} not ready: {ev:?}"))
        };
        wait_until(timeout, || std::future::ready(ready())).await
    }

    /// The session's `ended`, if it has come.
    pub fn ended(&self, id: &SessionId) -> Option<Ended> {
        self.events_of(id).into_iter().find_map(|k| match k {
            SessionEventKind::Ended(e) => Some(e),
            _ => None,
        })
    }

    pub async fn wait_ended(&self, id: &SessionId, timeout: Duration) -> Ended {
        wait_until(timeout, || {
            std::future::ready(
                self.ended(id)
                    .ok_or_else(|| format!("{id} has not ended: {:?}", self.events_of(id))),
            )
        })
        .await
    }

    /// The `at` (node wall clock, ms) of the session's first event of `kind`: "starting",
    /// "ready" or "ended".
    pub fn at_of(&self, id: &SessionId, kind: &str) -> u64 {
        self.lock()
            .events
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

    pub fn pid_of(&self, id: &SessionId) -> Option<u32> {
        self.events_of(id).iter().find_map(|k| match k {
            SessionEventKind::Starting { pid, .. } => Some(*pid),
            _ => None,
        })
    }

    /// Checks delivery: contiguous numbers from 1, no gap, and per session exactly the kinds
    /// starting?, ready?, ended, in that order and once each.
    pub fn check_delivery(&self) {
        let seen = self.lock();
        assert!(seen.gaps.is_empty(), "sequence gaps: {:?}", seen.gaps);
        for (i, e) in seen.events.iter().enumerate() {
            assert_eq!(
                e.seq,
                i as u64 + 1,
                "processed events are numbered 1, 2, ..."
            );
        }
        let mut by_session: std::collections::BTreeMap<&SessionId, Vec<&'static str>> =
            Default::default();
        for e in &seen.events {
            by_session
                .entry(&e.event.session_id)
                .or_default()
                .push(match e.event.kind {
                    SessionEventKind::Starting { .. } => "starting",
                    SessionEventKind::Ready { .. } => "ready",
                    SessionEventKind::Ended(_) => "ended",
                });
        }
        for (id, kinds) in by_session {
            let ok = matches!(
                kinds.as_slice(),
                ["ended"]
                    | ["starting", "ended"]
                    | ["starting", "ready", "ended"]
                    | ["starting"]
                    | ["starting", "ready"]
            );
            assert!(ok, "{id}: events {kinds:?}");
        }
    }
}

async fn link(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let answer = if auth != format!("Bearer {NODE_TOKEN}") {
        (StatusCode::UNAUTHORIZED, "bad node token").into_response()
    } else if seen.lock().unwrap_or_else(|e| e.into_inner()).refuse {
        (StatusCode::SERVICE_UNAVAILABLE, "not now").into_response()
    } else {
        let seen = seen.clone();
        ws.on_upgrade(move |socket| serve_node(socket, seen))
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .attempts
        .push(answer.status().as_u16());
    answer
}

async fn serve_node(mut socket: WebSocket, seen: Arc<Mutex<Seen>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<CoordinatorToNode>>();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Some(m)) => {
                    if socket.send(Message::text(m.to_json())).await.is_err() { break; }
                }
                _ => break,
            },
            msg = socket.next() => {
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(text) = msg else { continue };
                let m = NodeToCoordinator::from_json(&text).expect("a node link message");
                let reply = {
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let what = match &m {
                        NodeToCoordinator::Hello(_) => "hello".to_owned(),
                        NodeToCoordinator::Event(e) => format!("event {}", e.seq),
                        NodeToCoordinator::Heartbeat(_) => "heartbeat".to_owned(),
                        NodeToCoordinator::Applications { .. } => "applications".to_owned(),
                    };
                    let conn_no = s.connections + u32::from(matches!(m, NodeToCoordinator::Hello(_)));
                    s.arrivals.push((conn_no, what));
                    match m {
                        NodeToCoordinator::Hello(h) => {
                            s.hellos.push(h);
                            s.connections += 1;
                            s.conn = Some(tx.clone());
                            let welcome = CoordinatorToNode::Welcome { acked: s.last_seq };
                            if s.welcome_delay.is_zero() {
                                Some(welcome)
                            } else {
                                let (tx, delay) = (tx.clone(), s.welcome_delay);
                                tokio::spawn(async move {
                                    // The fault this stand-in plays: a slow coordinator.
                                    tokio::time::sleep(delay).await;
                                    let _ = tx.send(Some(welcome));
                                });
                                None
                            }
                        }
                        NodeToCoordinator::Event(e) => {
                            s.received.push(e.seq);
                            if e.seq == s.last_seq + 1 {
                                s.last_seq = e.seq;
                                s.events.push(e);
                            } else if e.seq > s.last_seq + 1 {
                                let expected = s.last_seq + 1;
                                s.gaps.push((expected, e.seq));
                            }
                            Some(CoordinatorToNode::Ack { seq: s.last_seq })
                        }
                        NodeToCoordinator::Heartbeat(h) => {
                            s.heartbeats.push(h);
                            None
                        }
                        NodeToCoordinator::Applications { applications } => {
                            s.applications.push(applications);
                            None
                        }
                    }
                };
                if let Some(r) = reply
                    && socket.send(Message::text(r.to_json())).await.is_err()
                {
                    break;
                }
            }
        }
    }
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    if s.conn.as_ref().is_some_and(|c| c.same_channel(&tx)) {
        s.conn = None;
    }
}

// ----- the session server -----

/// An application entry running `pxs streamer <args>`.
pub fn streamer_app(id: &str, args: &[&str], extra: &str) -> String {
    let mut all = vec!["streamer".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    let start_timeout = if extra.contains("start_timeout") {
        ""
    } else {
        "start_timeout = \"30s\"\n"
    };
    format!(
        "[[applications]]\nid = \"{id}\"\nexecutable = '{}'\nargs = {}\nres_x = 320\nres_y = 240\n{start_timeout}{extra}\n",
        pxs_bin().display(),
        toml_list(&all),
    )
}

pub fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|a| format!("'{a}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A whole config: the node on 127.0.0.1:0 with its data dir, linked to `coord`.
pub fn config_toml(coord: &Coordinator, data_dir: &Path, node_extra: &str, apps: &str) -> String {
    format!(
        "[node]\nname = \"test-node\"\npublic_url = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\n\
         data_dir = '{}'\nmax_sessions = 8\nstreamer_ports = \"{}\"\nkill_grace = \"{}ms\"\n\
         heartbeat_interval = \"300ms\"\ngpus = \"none\"\n{node_extra}\n\
         [coordinator]\nurl = \"{}\"\ntoken = \"{NODE_TOKEN}\"\n\n{apps}",
        data_dir.display(),
        port_range(),
        KILL_GRACE.as_millis(),
        coord.url(),
    )
}

/// The node's `/healthz` answer, as JSON.
pub async fn healthz(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let req = b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        pxs_test_support::raw_http::exchange(addr, req),
    )
    .await
    .map_err(|_| "no /healthz answer within 5 s".to_owned())?
    .ok_or_else(|| "/healthz: closed without an answer".to_owned())?;
    if answer.status != 200 {
        return Err(format!("/healthz {}: {}", answer.status, answer.body));
    }
    serde_json::from_str(&answer.body).map_err(|e| format!("/healthz: {e}: {}", answer.body))
}

pub async fn start_server(toml: &str) -> SessionServer {
    let mut config =
        Config::from_toml(toml, Path::new("."), &Options::default()).expect("valid config");
    // As the `pxs` binary does: its sessions' guards are `pxs session-server guard`.
    config.guard_program = Some(pxs_bin());
    SessionServer::start(config)
        .await
        .expect("session server starts")
}

pub fn init_logs() {
    if std::env::var_os("PXS_TEST_LOGS").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,pxs_session_server=debug")
            .with_test_writer()
            .try_init();
    }
}

// ----- players -----

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A player WebSocket to `/sessions/<id>/ws` with `token`; Err(status) when refused.
pub async fn player(server: SocketAddr, id: &SessionId, token: Option<&str>) -> Result<Ws, u16> {
    let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
    let url = format!("ws://{server}/sessions/{id}/ws{q}");
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("player connect failed: {e}"),
    }
}

pub async fn send_activity(ws: &mut Ws) {
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"activity"}"#,
    ))
    .await
    .expect("send activity");
}

/// Reads (and drops) whatever the server sent, without blocking.
pub async fn drain(ws: &mut Ws) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await {}
}

// ----- processes -----

/// Pids of every live process in group `pgid` (Linux).
pub fn group_members(pgid: u32) -> Vec<u32> {
    live_where(2, pgid)
}

/// Pids of every live process whose `/proc/<pid>/stat` field `field` (counted after the command
/// name: 0 state, 1 parent, 2 process group) is `value` (Linux).
fn live_where(field: usize, value: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
            f.first().is_some_and(|s| *s != "Z" && *s != "X")
                && f.get(field).and_then(|v| v.parse::<u32>().ok()) == Some(value)
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    pxs_session_server::process::alive(pid)
}

pub fn end_reason(e: &Ended) -> EndReason {
    e.reason
}

/// Asks for the streamer list on a player connection and returns the ids.
pub async fn list_streamers(ws: &mut Ws) -> Vec<String> {
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"listStreamers"}"#,
    ))
    .await
    .expect("send listStreamers");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a reply within 5 s")
            .expect("connection open")
            .expect("a frame");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or("")) else {
            continue;
        };
        if v["type"] == "streamerList" {
            return v["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|i| i.as_str().expect("an id").to_owned())
                .collect();
        }
    }
}

// ----- the real binary -----

/// `pxs session-server --config <file>` as a child process. Its stderr (the log) is appended to
/// `<file>.stderr.log`. Killed (SIGKILL) when dropped.
pub struct Node {
    pub child: std::process::Child,
    pub log: PathBuf,
    /// Its HTTP port (players).
    pub addr: SocketAddr,
}

impl Node {
    /// Starts the binary and waits for its `listening` line.
    pub fn start(config: &Path) -> Node {
        use std::io::BufRead;
        let log = config.with_extension("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("node log file");
        let mut child = std::process::Command::new(pxs_bin())
            .args(["session-server", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("pxs session-server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a line");
        let listening: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not the listening line ({e}): {line}"));
        assert_eq!(listening["event"], "listening", "{line}");
        let addr = listening["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("an address");
        Node { child, log, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaped.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM (a clean stop), and reaped.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("reaped");
    }

    /// How many lines of its log contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of a process (Linux), its arguments split.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Live children of `parent` (Linux).
pub fn children(parent: u32) -> Vec<u32> {
    live_where(1, parent)
}

/// The guard processes (`pxs session-server guard`) a session server started, by session id.
pub fn guards_of(node: u32) -> Vec<(String, u32)> {
    children(node)
        .into_iter()
        .filter_map(|pid| {
            let args = cmdline(pid);
            if !args.iter().any(|a| a == "guard") {
                return None;
            }
            let i = args.iter().position(|a| a == "--session")?;
            Some((args.get(i + 1)?.clone(), pid))
        })
        .collect()
}

/// The `-PixelStreamingURL` an application was launched with.
pub fn streamer_url_of(pid: u32) -> String {
    cmdline(pid)
        .into_iter()
        .find_map(|a| a.strip_prefix("-PixelStreamingURL=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no -PixelStreamingURL in {:?}", cmdline(pid)))
}

/// Waits until none of `pids` is alive; returns how long that took.
pub async fn wait_all_gone(pids: &[u32], timeout: Duration) -> Duration {
    let since = Instant::now();
    wait_until(timeout, || {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        std::future::ready(if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still alive: {left:?}"))
        })
    })
    .await;
    since.elapsed()
}
