//! Idle node links, from a child process (`pxs-bench coordinator-links`, this same program), so
//! that the coordinator's process holds only its own end of each link: its memory and CPU are
//! then the coordinator's alone, and each process needs one descriptor per link, not two.
//!
//! The child links `--count` nodes (`idle-00000`...), each: `hello`, `welcome`, a first
//! heartbeat, then a heartbeat every `--heartbeat` seconds (the first at a random point of the
//! first period, so they spread out). It prints `linked <ok> failed <n> in <ms> ms` once every
//! attempt is done; then, for each `status` line on its stdin, `links <alive> lost <n>
//! heartbeats <n>`; it exits when its stdin closes.

use super::nodes::{heartbeat, hello, open_link};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::ApplicationId;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// The environment variable that carries the node token to the child (not its command line).
const TOKEN_ENV: &str = "PXS_BENCH_NODE_TOKEN";

#[derive(Clone, Debug, clap::Args)]
pub struct LinksArgs {
    /// The coordinator, `127.0.0.1:port`.
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long)]
    pub count: usize,
    /// Seconds between heartbeats.
    #[arg(long)]
    pub heartbeat: f64,
    /// Links being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The application the nodes advertise.
    #[arg(long, default_value = "bench")]
    pub application: String,
}

#[derive(Default)]
struct Counts {
    alive: AtomicU64,
    lost: AtomicU64,
    heartbeats: AtomicU64,
}

/// The child's side.
pub async fn run_child(args: LinksArgs) -> anyhow::Result<()> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    let app = ApplicationId::parse(&args.application)?;
    let every = Duration::try_from_secs_f64(args.heartbeat).context("--heartbeat")?;
    let counts = Arc::new(Counts::default());
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let h = hello(&format!("idle-{i:05}"), &app, 1)?;
        let (token, counts, slots, done) = (
            token.clone(),
            counts.clone(),
            slots.clone(),
            done_tx.clone(),
        );
        // The first heartbeat after the one sent at once: spread over the first period.
        let offset = every.mul_f64((i as f64 * 0.618_034) % 1.0);
        tasks.spawn(async move {
            let permit = slots.acquire_owned().await;
            let linked = open_link(args.addr, &token, h, 1024).await;
            drop(permit);
            let Ok((mut ws, _)) = linked else {
                let _ = done.send(false);
                return;
            };
            if ws.send(heartbeat(Vec::new(), 1)).await.is_err() {
                let _ = done.send(false);
                return;
            }
            counts.alive.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(true);
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        if ws.send(heartbeat(Vec::new(), 1)).await.is_err() { break; }
                        counts.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            counts.alive.fetch_sub(1, Ordering::Relaxed);
            counts.lost.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(done_tx);
    let (mut ok, mut failed) = (0u64, 0u64);
    while let Some(linked) = done_rx.recv().await {
        if linked {
            ok += 1;
        } else {
            failed += 1;
        }
        if ok + failed == args.count as u64 {
            break;
        }
    }
    println!(
        "linked {ok} failed {failed} in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    // Standard input on a thread of its own (tokio's stdin would need another feature).
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if line.trim() == "status" {
            println!(
                "links {} lost {} heartbeats {}",
                counts.alive.load(Ordering::Relaxed),
                counts.lost.load(Ordering::Relaxed),
                counts.heartbeats.load(Ordering::Relaxed)
            );
        }
    }
    tasks.abort_all();
    Ok(())
}

/// What the child reported once its links were up.
#[derive(Clone, Copy, Debug)]
pub struct Linked {
    pub ok: u64,
    pub failed: u64,
    pub elapsed_ms: f64,
}

/// A `status` answer.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub alive: u64,
    pub lost: u64,
    pub heartbeats: u64,
}

/// The parent's handle on the child; killed when dropped.
pub struct LinksChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    pub pid: u32,
}

impl LinksChild {
    /// Starts the child and waits (up to `timeout`) for every link to be tried.
    pub async fn start(
        addr: SocketAddr,
        token: &str,
        count: usize,
        heartbeat: Duration,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<(LinksChild, Linked)> {
        let exe = std::env::current_exe().context("cannot find this program")?;
        let mut child = Command::new(exe)
            .arg("coordinator-links")
            .args(["--addr", &addr.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--heartbeat", &heartbeat.as_secs_f64().to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .env(TOKEN_ENV, token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the link client")?;
        let pid = child.id().context("the link client exited at once")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        let mut c = LinksChild {
            child,
            stdin,
            stdout,
            pid,
        };
        let line = c.line(timeout).await?;
        // linked <ok> failed <n> in <ms> ms
        let f: Vec<&str> = line.split_whitespace().collect();
        let linked = match f.as_slice() {
            ["linked", ok, "failed", failed, "in", ms, "ms"] => Linked {
                ok: ok.parse()?,
                failed: failed.parse()?,
                elapsed_ms: ms.parse()?,
            },
            _ => bail!("unexpected line from the link client: {line:?}"),
        };
        Ok((c, linked))
    }

    async fn line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => bail!("the link client exited"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("the link client said nothing within {timeout:?}"),
        }
    }

    pub async fn status(&mut self) -> anyhow::Result<Status> {
        let stdin = self.stdin.as_mut().context("the link client is stopping")?;
        stdin.write_all(b"status\n").await?;
        stdin.flush().await?;
        let line = self.line(Duration::from_secs(10)).await?;
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["links", alive, "lost", lost, "heartbeats", hb] => Ok(Status {
                alive: alive.parse()?,
                lost: lost.parse()?,
                heartbeats: hb.parse()?,
            }),
            _ => bail!("unexpected line from the link client: {line:?}"),
        }
    }

    /// Closes its stdin (it exits, closing every link) and waits for it.
    pub async fn stop(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
