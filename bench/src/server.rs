//! The signalling server under test, `pxs webrtc-session`, as a child process on 127.0.0.1.
//! It is killed when this handle is dropped, whatever the way out (error, Ctrl-C, panic).

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Where the clients connect.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub streamer: SocketAddr,
    pub player: SocketAddr,
}

pub struct ServerChild {
    child: Child,
    pid: u32,
    addrs: Addrs,
    log_lines: Arc<AtomicU64>,
}

impl ServerChild {
    /// Starts `path webrtc-session` on 127.0.0.1 with ports picked by the kernel and waits for its
    /// `listening` line.
    pub async fn start(path: &Path, extra: &[String], timeout: Duration) -> anyhow::Result<Self> {
        let mut cmd = Command::new(path);
        cmd.arg("webrtc-session")
            .args(["--no_config", "--bind_address", "127.0.0.1"])
            .args([
                "--streamer_port",
                "0",
                "--player_port",
                "0",
                "--sfu_port",
                "0",
            ])
            .args(["--log_level_console", "error", "--max_players", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let log_lines = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        // stderr must be read all along, or a chatty server would block on a full pipe.
        tokio::spawn(relay_log(stderr, log_lines.clone()));
        let mut stdout = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(timeout, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => bail!("the server exited before it was listening"),
            Ok(Err(e)) => return Err(e).context("cannot read the server's stdout"),
            Err(_) => bail!("the server did not say it was listening within {timeout:?}"),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let addrs = parse_listening(&line)?;
        Ok(ServerChild {
            child,
            pid,
            addrs,
            log_lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// Lines the server wrote to stderr (errors only, at `--log_level_console error`).
    pub fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }

    /// `Some(status)` if the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM (the server closes its connections and exits; a profiler wrapping it gets to
    /// write its report), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if term.is_ok_and(|s| s.success())
            && let Ok(Ok(_)) = tokio::time::timeout(grace, self.child.wait()).await
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

async fn relay_log(pipe: impl AsyncRead + Unpin, count: Arc<AtomicU64>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Print the first few in full; count the rest.
        if count.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("[server] {line}");
        }
    }
}

/// `{"event":"listening","streamer":"127.0.0.1:P","player":"127.0.0.1:P",...}`. Only loopback
/// addresses are accepted: the benchmark never sends load anywhere else.
fn parse_listening(line: &str) -> anyhow::Result<Addrs> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("the server's first line is not JSON: {line}"))?;
    if v["event"] != "listening" {
        bail!("the server's first line is not a listening event: {line}");
    }
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let a: SocketAddr = v[key]
            .as_str()
            .with_context(|| format!("no `{key}` address in {line}"))?
            .parse()
            .with_context(|| format!("bad `{key}` address in {line}"))?;
        if !a.ip().is_loopback() {
            bail!("the server listens for {key}s on {a}, not on loopback: refusing to load it");
        }
        Ok(a)
    };
    Ok(Addrs {
        streamer: addr("streamer")?,
        player: addr("player")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_listening_line_is_accepted() {
        let ok = r#"{"event":"listening","streamer":"127.0.0.1:1","player":"127.0.0.1:2","sfu":"127.0.0.1:3","https":null}"#;
        let a = parse_listening(ok).expect("parses");
        assert_eq!(a.player.port(), 2);
        let public = ok.replace("127.0.0.1:2", "192.0.2.1:2");
        assert!(parse_listening(&public).is_err());
        assert!(parse_listening("hello").is_err());
    }
}
