//! The coordinator's test harness: a real coordinator on 127.0.0.1:0 over a fresh database (SQLite
//! always, PostgreSQL too when `PXS_TEST_POSTGRES_URL` names a server we may create databases
//! on), real session servers (`pxs session-server` processes running `pxs streamer`), a
//! scriptable fake node for the tests that drive time by hand, and a small API client.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use pxs_coordinator::{Clock, Config, Coordinator, Options};
use pxs_protocol::api::{self, SessionState};
use pxs_protocol::node::{
    ApplicationId, ApplicationInfo, Capacity, CoordinatorToNode, EndReason, Ended, Heartbeat,
    Hello, NodeId, NodeToCoordinator, ObservedState, SequencedEvent, SessionEvent,
    SessionEventKind, SessionId, SessionStatus,
};
use pxs_protocol::secret::Secret;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use pxs_test_support::{pxs_bin, wait_until};

pub const ADMIN: &str = "admin-token-for-tests-0123456789";
pub const NODE_TOKEN: &str = "node-token-for-tests-0123456789";
pub const SESSION_SECRET: &str = "session-secret-for-tests-0123456789abcdef";

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PXS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn temp_dir(name: &str) -> PathBuf {
    pxs_test_support::scratch_dir(&format!("coord-{name}-{}", rand_suffix()))
}

fn rand_suffix() -> String {
    pxs_coordinator::auth::new_id("")
}

/// The databases every story runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("PXS_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        v.push(Backend::Postgres(url));
    }
    v
}

/// The PostgreSQL backend, if one is configured; otherwise says the test is skipped, and `why`.
pub fn postgres_only(why: &str) -> Option<Backend> {
    let pg = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)));
    if pg.is_none() {
        eprintln!("skipped: PXS_TEST_POSTGRES_URL is not set ({why})");
    }
    pg
}

/// A fresh, empty database of `backend`; returns its URL.
pub async fn fresh_database(backend: &Backend, name: &str) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/coordinator.db", temp_dir(name).display()),
        Backend::Postgres(admin_url) => {
            use sqlx::Connection;
            let db = format!("pxs_t_{}", rand_suffix());
            let mut c = sqlx::PgConnection::connect(admin_url)
                .await
                .unwrap_or_else(|e| {
                    // The URL without its password: it reaches logs.
                    let shown = admin_url
                        .split_once('@')
                        .map_or(admin_url.clone(), |(_, host)| {
                            format!("postgres://***@{host}")
                        });
                    panic!("PXS_TEST_POSTGRES_URL {shown:?} is not a reachable server: {e}")
                });
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut c)
                .await
                .unwrap();
            // Same server and credentials, the new database.
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(b, _)| b);
            format!("{base}/{db}")
        }
    }
}

/// A coordinator under test.
pub struct Coord {
    pub c: Option<Coordinator>,
    pub addr: std::net::SocketAddr,
    pub db: String,
    pub http: reqwest::Client,
}

pub const FAST_TIMING: &str = "[timing]\ntick = \"50ms\"\nheartbeat_ttl = \"2s\"\nnode_lost_grace = \"2s\"\nschedule_lead = \"1s\"\n";

impl Coord {
    pub async fn start(db: &str, extra_toml: &str) -> Coord {
        Self::start_on(
            db,
            extra_toml,
            "127.0.0.1:0",
            Arc::new(pxs_coordinator::SystemClock),
        )
        .await
    }

    pub async fn start_on(
        db: &str,
        extra_toml: &str,
        listen: &str,
        clock: Arc<dyn Clock>,
    ) -> Coord {
        init_logs();
        let opts = Options {
            listen: Some(listen.into()),
            database_url: Some(Secret(db.into())),
            admin_token: Some(Secret(ADMIN.into())),
            node_token: Some(Secret(NODE_TOKEN.into())),
            // PostgreSQL needs one; SQLite makes and keeps its own beside the database.
            session_secret: db
                .starts_with("postgres")
                .then(|| Secret(SESSION_SECRET.into())),
            config: None,
            ..Options::default()
        };
        let config = Config::from_toml(extra_toml, &opts).unwrap();
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let c = Coordinator::start_with(config, listener, clock)
            .await
            .unwrap();
        let addr = c.addr();
        Coord {
            c: Some(c),
            addr,
            db: db.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Stops this coordinator and starts a new one on the same database and address (so nodes
    /// find it again), with the fast timing of the stories.
    pub async fn restart(mut self) -> Coord {
        let listen = self.addr.to_string();
        self.stop().await;
        Coord::start_on(
            &self.db,
            FAST_TIMING,
            &listen,
            Arc::new(pxs_coordinator::SystemClock),
        )
        .await
    }

    pub fn engine(&self) -> &Arc<pxs_coordinator::Engine> {
        &self.c.as_ref().unwrap().engine
    }

    pub async fn stop(&mut self) {
        if let Some(c) = self.c.take() {
            c.shutdown().await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn link_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A request with `token` (None: anonymous).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// Creates a title of `app` (public, or not).
    pub async fn title(&self, id: &str, app: &str, extra: Value) {
        let mut body = serde_json::json!({"id": id, "name": id, "application_id": app, "visibility": "public"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (s, v) = self.admin("POST", "/api/v1/titles", Some(body)).await;
        assert_eq!(s, 201, "{v}");
    }

    pub async fn create(&self, body: Value) -> api::Session {
        let (s, v) = self.admin("POST", "/api/v1/sessions", Some(body)).await;
        assert_eq!(s, 201, "{v}");
        serde_json::from_value(v).unwrap()
    }

    pub async fn session(&self, id: &SessionId) -> api::Session {
        let (s, v) = self
            .admin("GET", &format!("/api/v1/sessions/{id}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        serde_json::from_value(v).unwrap()
    }

    pub async fn wait_state(
        &self,
        id: &SessionId,
        want: SessionState,
        timeout: Duration,
    ) -> api::Session {
        wait_until(timeout, || async {
            let s = self.session(id).await;
            if s.state == want {
                Ok(s)
            } else {
                Err(format!(
                    "{id} is {:?} ({:?}), want {want:?}",
                    s.state, s.end_reason
                ))
            }
        })
        .await
    }

    /// Waits until this coordinator knows `node` (its hello is recorded), in any state.
    pub async fn wait_for_node(&self, node: &str) {
        wait_until(Duration::from_secs(5), || async {
            self.node_state(node)
                .await
                .map(|_| ())
                .ok_or(format!("no node {node} yet"))
        })
        .await;
    }

    pub async fn node_state(&self, node: &str) -> Option<api::NodeState> {
        let (s, v) = self
            .admin("GET", &format!("/api/v1/nodes/{node}"), None)
            .await;
        if s != 200 {
            return None;
        }
        serde_json::from_value::<api::Node>(v).ok().map(|n| n.state)
    }
}

/// A `pxs session-server` process linked to a coordinator, running `pxs streamer`.
pub struct NodeProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub name: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NodeProcess {
    pub fn start(coord_url: &str, name: &str, slots: u32, dir: &Path) -> NodeProcess {
        let port = free_port();
        // Streamer ports on loopback: a block of 10 per node, spread by the node's port.
        let ports_from = 21000 + (port % 400) * 10;
        let toml = format!(
            "[node]\nname = \"{name}\"\npublic_url = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
             data_dir = \"{dir}\"\nmax_sessions = {slots}\nheartbeat_interval = \"500ms\"\n\
             streamer_ports = \"{ports_from}-{ports_to}\"\nkill_grace = \"3s\"\n\n\
             [coordinator]\nurl = \"{coord_url}\"\ntoken = \"{NODE_TOKEN}\"\n\n\
             [[applications]]\nid = \"demo\"\nname = \"demo\"\nexecutable = \"{exe}\"\n\
             args = [\"streamer\", \"-RenderOffScreen\"]\nres_x = 320\nres_y = 240\nstart_timeout = \"20s\"\n",
            dir = dir.join("node").display(),
            ports_to = ports_from + 9,
            exe = pxs_bin().display(),
        );
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, toml).unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = std::process::Command::new(pxs_bin())
            .arg("session-server")
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        NodeProcess {
            child,
            dir: dir.to_path_buf(),
            name: name.into(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// SIGKILL the session server, then its applications (which a killed server leaves behind).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Graceful stop (SIGTERM), as an operator would.
    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .stderr(Stdio::null())
                .status();
            // Polls for its exit (this also runs in Drop, outside any runtime), 10 s at most.
            for _ in 0..200 {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill_hard();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
        kill_streamers_of(&self.dir);
    }
}

/// Kills `pxs streamer` processes whose logs are under `dir` (left by a killed session server).
pub fn kill_streamers_of(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("streamer") && env.contains(&needle) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// A node played by the test: says hello, answers as told, reports what it was sent.
pub struct FakeNode {
    pub name: String,
    pub commands: Arc<Mutex<Vec<CoordinatorToNode>>>,
    out: mpsc::UnboundedSender<NodeToCoordinator>,
    seq: Arc<Mutex<u64>>,
    pub running: Arc<Mutex<Vec<SessionId>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A node link's client socket.
pub type NodeSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A node link to `coord` as node `name` with `slots` slots of application `app`, past its
/// `hello`; returns the socket and the `acked` of the coordinator's welcome.
pub async fn node_link(coord: &Coord, name: &str, app: &str, slots: u32) -> (NodeSocket, u64) {
    node_link_with(coord, hello(name, vec![app_info(app)], slots)).await
}

/// An application as a node advertises it, with no catalog data.
pub fn app_info(app: &str) -> ApplicationInfo {
    ApplicationInfo {
        id: ApplicationId::parse(app).unwrap(),
        name: app.into(),
        res_x: 64,
        res_y: 64,
        max_players: 0,
        description: String::new(),
        image_url: None,
        visibility: None,
        idle_timeout: None,
        empty_timeout: None,
    }
}

/// The `hello` of node `name` with `slots` slots of `applications`.
pub fn hello(name: &str, applications: Vec<ApplicationInfo>, slots: u32) -> Hello {
    Hello {
        node: NodeId::parse(name).unwrap(),
        version: "test".into(),
        public_url: format!("http://{name}.invalid"),
        upstream_url: None,
        capacity: Capacity {
            max_sessions: slots,
            max_sessions_per_gpu: 0,
        },
        applications,
        gpus: vec![],
        sessions: vec![],
        draining: false,
    }
}

/// A node link to `coord` past `hello`; returns the socket and the `acked` of the welcome.
pub async fn node_link_with(coord: &Coord, hello: Hello) -> (NodeSocket, u64) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/nodes/link", coord.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {NODE_TOKEN}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(NodeToCoordinator::Hello(hello).to_json().into())
        .await
        .unwrap();
    loop {
        let m = ws.next().await.unwrap().unwrap();
        if m.is_ping() || m.is_pong() {
            continue;
        }
        let text = m.into_text().unwrap();
        match CoordinatorToNode::from_json(&text).unwrap() {
            CoordinatorToNode::Welcome { acked } => return (ws, acked),
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

impl FakeNode {
    /// Connects to `coord` with `slots` slots of application `app`. With `auto`, it answers
    /// `start_session` with starting + ready and `stop_session` with ended{stopped}.
    pub async fn connect(coord: &Coord, name: &str, app: &str, slots: u32, auto: bool) -> FakeNode {
        Self::connect_with(coord, hello(name, vec![app_info(app)], slots), auto).await
    }

    /// As [`FakeNode::connect`], saying `hello`.
    pub async fn connect_with(coord: &Coord, hello: Hello, auto: bool) -> FakeNode {
        let name = hello.node.to_string();
        // Number events after what the coordinator already has, as a real node does.
        let (ws, acked) = node_link_with(coord, hello).await;
        let (mut sink, mut stream) = ws.split();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(Vec::new()));
        let seq = Arc::new(Mutex::new(acked));
        let (out, mut out_rx) = mpsc::unbounded_channel::<NodeToCoordinator>();
        let (cmds, run, s2, out2) = (commands.clone(), running.clone(), seq.clone(), out.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => if sink.send(m.to_json().into()).await.is_err() { return },
                        None => return,
                    },
                    m = stream.next() => {
                        let Some(Ok(m)) = m else { return };
                        let Ok(text) = m.into_text() else { continue };
                        let Ok(cmd) = CoordinatorToNode::from_json(&text) else { continue };
                        cmds.lock().unwrap().push(cmd.clone());
                        if !auto { continue }
                        match cmd {
                            CoordinatorToNode::StartSession { session_id, application_id, .. } => {
                                run.lock().unwrap().push(session_id.clone());
                                let _ = out2.send(event(&s2, &session_id, SessionEventKind::Starting { application_id, pid: 1, gpu: None }));
                                let _ = out2.send(event(&s2, &session_id, SessionEventKind::Ready { player_url: format!("ws://fake/sessions/{session_id}/ws") }));
                            }
                            CoordinatorToNode::StopSession { session_id } => {
                                run.lock().unwrap().retain(|s| s != &session_id);
                                let _ = out2.send(event(&s2, &session_id, SessionEventKind::Ended(Ended { reason: EndReason::Stopped, failed: false, exit_code: None, signal: None, detail: None })));
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        FakeNode {
            name,
            commands,
            out,
            seq,
            running,
            task,
        }
    }

    pub fn send_event(&self, id: &SessionId, kind: SessionEventKind) {
        let _ = self.out.send(event(&self.seq, id, kind));
    }

    /// Sends `m` as it is (a repeated or out-of-order event, say).
    pub fn send_raw(&self, m: NodeToCoordinator) {
        let _ = self.out.send(m);
    }

    pub fn heartbeat(&self) {
        let sessions = self
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|id| SessionStatus {
                session_id: id.clone(),
                application_id: ApplicationId::parse("demo").unwrap(),
                state: ObservedState::Ready,
                players: 0,
                gpu: None,
                started_at: 0,
            })
            .collect();
        let _ = self.out.send(NodeToCoordinator::Heartbeat(Heartbeat {
            at: 0,
            sessions,
            free_slots: 0,
            gpus: vec![],
            draining: false,
        }));
    }

    pub fn starts(&self) -> Vec<SessionId> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                CoordinatorToNode::StartSession { session_id, .. } => Some(session_id.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn stops(&self) -> Vec<SessionId> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                CoordinatorToNode::StopSession { session_id } => Some(session_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits until everything the coordinator queued for this node before the call has arrived:
    /// sends an event of a session the coordinator does not know, which it answers with a
    /// `stop_session` on the same, ordered link. Tests that show no more commands come use it
    /// instead of waiting a while.
    pub async fn round_trip(&self) {
        let marker = SessionId::from_random(pxs_coordinator::auth::random_bytes::<16>());
        self.send_event(
            &marker,
            SessionEventKind::Starting {
                application_id: pxs_protocol::node::ApplicationId::parse("marker").unwrap(),
                pid: 1,
                gpu: None,
            },
        );
        wait_until(Duration::from_secs(10), || async {
            if self.stops().contains(&marker) {
                Ok(())
            } else {
                Err(format!("no stop_session for the marker {marker} yet"))
            }
        })
        .await;
    }

    pub fn disconnect(self) {
        self.task.abort();
    }
}

fn event(seq: &Mutex<u64>, id: &SessionId, kind: SessionEventKind) -> NodeToCoordinator {
    let mut s = seq.lock().unwrap();
    *s += 1;
    NodeToCoordinator::Event(SequencedEvent {
        seq: *s,
        event: SessionEvent {
            session_id: id.clone(),
            at: 0,
            kind,
        },
    })
}

/// A fake node (answering on its own) kept online by a heartbeat every 300 ms, once the
/// coordinator shows it online. Abort the handle to stop the heartbeats.
pub async fn online_fake_node(
    coord: &Coord,
    name: &str,
    app: &str,
    slots: u32,
) -> (Arc<FakeNode>, tokio::task::JoinHandle<()>) {
    let node = Arc::new(FakeNode::connect(coord, name, app, slots, true).await);
    let n = node.clone();
    let beat = tokio::spawn(async move {
        loop {
            n.heartbeat();
            // The node's heartbeat interval (what a real node does), not a wait for something.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    wait_until(Duration::from_secs(10), || async {
        match coord.node_state(name).await {
            Some(api::NodeState::Online) => Ok(()),
            s => Err(format!("node {name} is {s:?}")),
        }
    })
    .await;
    (node, beat)
}
