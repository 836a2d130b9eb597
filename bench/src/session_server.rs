//! `pxs-bench session-server`: the real `pxs session-server` (a child process) linked to an
//! in-process scripted coordinator, running `pxs streamer` as its application.
//!
//! 1. start the session server; wait for its `hello`; its memory with no session;
//! 2. start → ready, one session at a time (`--samples`): how long from `start_session` sent to
//!    `ready` received, and from `stop_session` to `ended`;
//! 3. `--sessions` at once: time until all are ready, the session server's memory with them
//!    (and, apart, the applications' own memory), then all stopped;
//! 4. memory after they ended; a clean shutdown.

use crate::procfs;
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::{
    CoordinatorToNode, NodeToCoordinator, SessionEventKind, SessionId, StartOptions, Token,
};
use serde_json::json;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Debug, clap::Args)]
pub struct SessionServerArgs {
    /// The pxs binary [default: `pxs` beside this program, else target/release/pxs].
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Sessions started one after the other to time start → ready.
    #[arg(long, default_value_t = 10)]
    pub samples: u32,
    /// Sessions run at once for the memory figure.
    #[arg(long, default_value_t = 20)]
    pub sessions: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl SessionServerArgs {
    fn server_path(&self) -> PathBuf {
        self.server.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.join("pxs")))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("target/release/pxs"))
        })
    }
}

/// What the scripted coordinator saw: each session event with the time it arrived.
struct Seen {
    at: Instant,
    session: SessionId,
    kind: SessionEventKind,
}

struct Coordinator {
    url: String,
    commands: mpsc::UnboundedSender<CoordinatorToNode>,
    events: mpsc::UnboundedReceiver<Seen>,
    hello: mpsc::UnboundedReceiver<()>,
}

impl Coordinator {
    async fn start() -> anyhow::Result<Coordinator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/api/v1/nodes/link", listener.local_addr()?);
        let (commands, mut commands_rx) = mpsc::unbounded_channel::<CoordinatorToNode>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (hello_tx, hello) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut last_seq = 0;
            // One node; if its link drops, take the next connection.
            while let Ok((tcp, _)) = listener.accept().await {
                // An ack followed by a command would otherwise wait for the node's delayed ACK
                // (Nagle): 40 ms added to every command.
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    continue;
                };
                loop {
                    tokio::select! {
                        cmd = commands_rx.recv() => {
                            let Some(cmd) = cmd else { return };
                            if ws.send(Message::text(cmd.to_json())).await.is_err() { break; }
                        }
                        msg = ws.next() => {
                            let Some(Ok(Message::Text(text))) = msg else {
                                if matches!(msg, Some(Ok(_))) { continue; }
                                break;
                            };
                            let at = Instant::now();
                            let reply = match NodeToCoordinator::from_json(&text) {
                                Ok(NodeToCoordinator::Hello(_)) => {
                                    let _ = hello_tx.send(());
                                    Some(CoordinatorToNode::Welcome { acked: last_seq })
                                }
                                Ok(NodeToCoordinator::Event(e)) => {
                                    if e.seq == last_seq + 1 {
                                        last_seq = e.seq;
                                        let _ = events_tx.send(Seen {
                                            at,
                                            session: e.event.session_id,
                                            kind: e.event.kind,
                                        });
                                    }
                                    Some(CoordinatorToNode::Ack { seq: last_seq })
                                }
                                _ => None,
                            };
                            if let Some(r) = reply
                                && ws.send(Message::text(r.to_json())).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            }
        });
        Ok(Coordinator {
            url,
            commands,
            events,
            hello,
        })
    }

    fn send(&self, m: CoordinatorToNode) -> anyhow::Result<()> {
        self.commands
            .send(m)
            .context("the coordinator task stopped")
    }

    /// Waits for `kind` ("ready" or "ended") of each of `ids`; returns when each arrived.
    async fn wait_for(
        &mut self,
        ids: &[SessionId],
        kind: &str,
        timeout: Duration,
    ) -> anyhow::Result<HashMap<SessionId, (Instant, SessionEventKind)>> {
        let mut got = HashMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while got.len() < ids.len() {
            let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                bail!(
                    "only {} of {} sessions {kind} within {timeout:?}",
                    got.len(),
                    ids.len()
                );
            };
            let matches = match (&e.kind, kind) {
                (SessionEventKind::Ready { .. }, "ready") => true,
                (SessionEventKind::Ended(_), "ended") => true,
                (SessionEventKind::Ended(x), "ready") => {
                    bail!("{} ended before it was ready: {x:?}", e.session)
                }
                _ => false,
            };
            if matches && ids.contains(&e.session) {
                got.insert(e.session, (e.at, e.kind));
            }
        }
        Ok(got)
    }
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        // SIGTERM first so that it stops its sessions; SIGKILL only if it hangs.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_command(id: &SessionId) -> CoordinatorToNode {
    CoordinatorToNode::StartSession {
        session_id: id.clone(),
        application_id: "demo".parse().expect("a valid id"),
        options: StartOptions {
            player_token: Some(Token("bench".into())),
            ..Default::default()
        },
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "min_ms": v.first().copied().unwrap_or(f64::NAN),
        "p50_ms": percentile(&v, 0.5),
        "p95_ms": percentile(&v, 0.95),
        "max_ms": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn line(name: &str, s: &serde_json::Value) -> String {
    format!(
        "{name}: n {} · min {:.1} ms · p50 {:.1} ms · p95 {:.1} ms · max {:.1} ms",
        s["n"],
        s["min_ms"].as_f64().unwrap_or(f64::NAN),
        s["p50_ms"].as_f64().unwrap_or(f64::NAN),
        s["p95_ms"].as_f64().unwrap_or(f64::NAN),
        s["max_ms"].as_f64().unwrap_or(f64::NAN)
    )
}

pub async fn run(args: SessionServerArgs) -> anyhow::Result<()> {
    let pxs = args.server_path();
    if !pxs.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p pxs) or pass --server",
            pxs.display()
        );
    }
    let pxs = pxs.canonicalize()?;
    let dir = std::env::temp_dir().join(format!("pxs-bench-session-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut coord = Coordinator::start().await?;
    let config = format!(
        "[node]\nname = \"bench\"\npublic_url = \"http://127.0.0.1:1\"\nlisten = \"127.0.0.1:0\"\n\
         data_dir = '{data}'\nmax_sessions = {max}\nstreamer_ports = \"47000-47499\"\n\
         kill_grace = \"5s\"\ngpus = \"none\"\n\
         [coordinator]\nurl = \"{url}\"\ntoken = \"bench\"\n\
         [[applications]]\nid = \"demo\"\nexecutable = '{pxs}'\nargs = [\"streamer\", \"-RenderOffScreen\"]\n\
         res_x = 1280\nres_y = 720\nidle_timeout = \"off\"\nempty_timeout = \"off\"\nstart_timeout = \"60s\"\n",
        data = dir.join("data").display(),
        max = args.sessions.max(1) + 2,
        url = coord.url,
        pxs = pxs.display(),
    );
    let file = dir.join("session-server.toml");
    std::fs::write(&file, config)?;

    println!(
        "pxs-bench session-server: {} one at a time, then {} at once; {} cores; {}",
        args.samples,
        args.sessions,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        pxs.display()
    );
    let started = Instant::now();
    let mut child = Command::new(&pxs)
        .args(["session-server", "--config"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start pxs session-server")?;
    let stdout = child.stdout.take().context("stdout")?;
    let node = Node(child);
    let pid = node.0.id();
    let first = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut l);
        l
    })
    .await?;
    if !first.contains("listening") {
        bail!("the session server did not start: {first:?}");
    }
    tokio::time::timeout(Duration::from_secs(20), coord.hello.recv())
        .await
        .context("no hello from the session server")?;
    let linked = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = procfs::rss_kib(pid)?;
    println!(
        "phase 1: linked {:.0} ms after launch; idle RSS {} KiB",
        ms(linked),
        rss_idle
    );

    // Phase 2: one at a time.
    let mut to_ready = Vec::new();
    let mut to_ended = Vec::new();
    for i in 0..args.samples {
        let id = SessionId::parse(&format!("ses_seq{i}"))?;
        let t0 = Instant::now();
        coord.send(start_command(&id))?;
        let ready = coord
            .wait_for(std::slice::from_ref(&id), "ready", Duration::from_secs(60))
            .await?;
        to_ready.push(ms(ready[&id].0 - t0));
        let t1 = Instant::now();
        coord.send(CoordinatorToNode::StopSession {
            session_id: id.clone(),
        })?;
        let ended = coord
            .wait_for(std::slice::from_ref(&id), "ended", Duration::from_secs(30))
            .await?;
        to_ended.push(ms(ended[&id].0 - t1));
    }
    let seq_ready = summary(to_ready);
    let seq_stop = summary(to_ended);
    println!("phase 2: {}", line("start_session → ready", &seq_ready));
    println!("         {}", line("stop_session → ended", &seq_stop));

    // Phase 3: many at once.
    let ids: Vec<SessionId> = (0..args.sessions)
        .map(|i| SessionId::parse(&format!("ses_par{i}")))
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    for id in &ids {
        coord.send(start_command(id))?;
    }
    let ready = coord
        .wait_for(&ids, "ready", Duration::from_secs(120))
        .await?;
    let all_ready = ready
        .values()
        .map(|(at, _)| *at - t0)
        .max()
        .unwrap_or_default();
    let par_ready = summary(ready.values().map(|(at, _)| ms(*at - t0)).collect());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_busy = procfs::rss_kib(pid)?;
    let apps_kib: u64 = children_of(pid)
        .iter()
        .filter_map(|p| procfs::rss_kib(*p).ok())
        .sum();
    println!(
        "phase 3: {} sessions ready {:.0} ms after the first start; {}",
        ids.len(),
        ms(all_ready),
        line("start_session → ready", &par_ready)
    );
    println!(
        "         session server RSS {} KiB with {} sessions (+{} KiB, {:.0} KiB per session); the applications: {} KiB",
        rss_busy,
        ids.len(),
        rss_busy.saturating_sub(rss_idle),
        rss_busy.saturating_sub(rss_idle) as f64 / ids.len().max(1) as f64,
        apps_kib
    );
    let t1 = Instant::now();
    for id in &ids {
        coord.send(CoordinatorToNode::StopSession {
            session_id: id.clone(),
        })?;
    }
    let ended = coord
        .wait_for(&ids, "ended", Duration::from_secs(60))
        .await?;
    let all_ended = ended
        .values()
        .map(|(at, _)| *at - t1)
        .max()
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = procfs::rss_kib(pid)?;
    let left = children_of(pid).len();
    println!(
        "phase 4: all ended {:.0} ms after the stops; RSS after {} KiB; {} child processes left",
        ms(all_ended),
        rss_after,
        left
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(path) = &args.json {
        let v = json!({
            "benchmark": "session-server",
            "samples": args.samples,
            "sessions": args.sessions,
            "linked_ms": ms(linked),
            "rss_idle_kib": rss_idle,
            "sequential_start_to_ready": seq_ready,
            "sequential_stop_to_ended": seq_stop,
            "parallel_start_to_ready": par_ready,
            "parallel_all_ready_ms": ms(all_ready),
            "rss_with_sessions_kib": rss_busy,
            "applications_rss_kib": apps_kib,
            "parallel_all_ended_ms": ms(all_ended),
            "rss_after_kib": rss_after,
            "children_left": left,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if left > 0 {
        bail!("{left} application processes were left behind");
    }
    Ok(())
}

/// Live children of `pid` (Linux).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let f: Vec<&str> = stat[i + 1..].split_whitespace().collect();
            f.first().is_some_and(|s| *s != "Z")
                && f.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}
