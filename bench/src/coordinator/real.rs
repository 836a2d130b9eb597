//! POST → ready with the real thing: `pxs up` (a coordinator, a session server and the demo
//! title, which runs `pxs streamer`) as a child process on a port the kernel picks, its data in
//! a fresh directory. Sessions of `demo` are created one after another; each is followed on its
//! event stream until `ready`, then deleted and followed until it has ended, so that the next
//! one finds a free slot.

use super::api::Api;
use crate::report::{Latency, latency_histogram};
use anyhow::{Context, bail};
use pxs_coordinator::engine::parse_rfc3339;
use pxs_protocol::api::{self, SessionState};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Up {
    child: Child,
    pid: u32,
    pub url: String,
    pub admin_token: String,
}

impl Up {
    /// Starts `pxs up --port 0 --data-dir <dir>/data`, its log in `<dir>/pxs-up.log`, and reads
    /// its URL and admin token from stdout.
    pub async fn start(pxs: &Path, dir: &Path) -> anyhow::Result<Up> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("pxs-up.log"))?;
        let mut child = Command::new(pxs)
            .args(["up", "--port", "0", "--data-dir"])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} up", pxs.display()))?;
        let pid = child.id().context("pxs up exited at once")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        let (mut url, mut token) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while url.is_none() || token.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(_) => bail!("pxs up exited; see {}", dir.join("pxs-up.log").display()),
                Err(_) => bail!("pxs up did not print its URL within 60 s"),
            };
            if let Some(u) = line.strip_prefix("pxs up: ") {
                url = Some(u.trim().trim_end_matches('/').to_owned());
            } else if let Some(t) = line.strip_prefix("admin token: ") {
                token = Some(t.trim().to_owned());
            }
        }
        // Keep reading so that a later line never blocks it on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = url.unwrap_or_default();
        if !url.starts_with("http://127.0.0.1:") {
            bail!("pxs up listens on {url}, not on 127.0.0.1: refusing to load it");
        }
        Ok(Up {
            child,
            pid,
            url,
            admin_token: token.unwrap_or_default(),
        })
    }

    /// SIGTERM (it stops its sessions, then itself), SIGKILL after 30 s.
    pub async fn stop(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if term.is_ok_and(|s| s.success())
            && let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

pub struct RealResult {
    pub samples: usize,
    /// POST sent → the event stream shows `ready`.
    pub post_to_ready: Latency,
    /// The `POST` alone.
    pub post: Latency,
    /// `ready_at − created_at` as the coordinator recorded them (millisecond resolution).
    pub recorded: Latency,
    /// DELETE sent → the event stream shows the session ended.
    pub delete_to_ended: Latency,
    /// Means from `pxs up`'s own `/metrics` over every start (the uncounted first one too):
    /// `pxs_placement_seconds` (the POST's placement transaction) and
    /// `pxs_session_start_seconds` (`start_session` sent → the node's `ready` processed).
    pub placement_mean: Option<Duration>,
    pub node_start_mean: Option<Duration>,
}

/// The mean of a Prometheus histogram (`_sum / _count`) in `text`.
pub fn histogram_mean(text: &str, name: &str) -> Option<Duration> {
    let value = |suffix: &str| -> Option<f64> {
        let key = format!("{name}_{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    };
    let (sum, count) = (value("sum")?, value("count")?);
    if count <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(sum / count).ok()
}

/// `pxs` from `--pxs`/`PXS_BIN`, else beside this program, else `target/release/pxs`.
pub fn pxs_path(given: Option<&PathBuf>) -> PathBuf {
    given.cloned().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("pxs")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("target/release/pxs"))
    })
}

pub async fn run(pxs: &Path, dir: &Path, samples: usize) -> anyhow::Result<RealResult> {
    let up = Up::start(pxs, dir).await?;
    let result = measure(&up, samples).await;
    up.stop().await;
    result
}

async fn measure(up: &Up, samples: usize) -> anyhow::Result<RealResult> {
    let api = Api::new(&up.url, &up.admin_token, 4)?;
    api.wait_for_nodes("demo", 1, Duration::from_secs(30))
        .await
        .context("the session server of pxs up did not link")?;
    let (mut to_ready, mut post, mut recorded, mut to_ended) = (
        latency_histogram(),
        latency_histogram(),
        latency_histogram(),
        latency_histogram(),
    );
    // One start first, not counted: the first streamer start pays for cold caches.
    for i in 0..=samples {
        let t0 = Instant::now();
        let r = api.create_session("demo").await?;
        let t1 = Instant::now();
        if r.status != 201 {
            bail!(
                "POST /api/v1/sessions: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let s: api::Session = r.json()?;
        if s.state != SessionState::Starting && s.state != SessionState::Ready {
            bail!(
                "session {} is {:?}, not starting: is a slot free?",
                s.id,
                s.state
            );
        }
        let (ready, at) = api
            .wait_session(
                &s.id,
                |v| v.state == SessionState::Ready,
                Duration::from_secs(60),
            )
            .await?;
        let t2 = Instant::now();
        api.delete_session(&s.id).await?;
        let (_, ended_at) = api
            .wait_session(&s.id, |v| v.state.is_final(), Duration::from_secs(60))
            .await?;
        if i == 0 {
            continue;
        }
        let ns = |d: Duration| (d.as_nanos() as u64).max(1);
        let _ = to_ready.record(ns(at - t0));
        let _ = post.record(ns(t1 - t0));
        let _ = to_ended.record(ns(ended_at.saturating_duration_since(t2)));
        if let (Some(c), Some(r)) = (
            parse_rfc3339(&ready.created_at),
            ready.ready_at.as_deref().and_then(parse_rfc3339),
        ) {
            let _ = recorded.record(((r - c).max(0) as u64 * 1_000_000).max(1));
        }
    }
    let metrics = api.get("/metrics").await?;
    let metrics = String::from_utf8_lossy(&metrics.body);
    Ok(RealResult {
        placement_mean: histogram_mean(&metrics, "pxs_placement_seconds"),
        node_start_mean: histogram_mean(&metrics, "pxs_session_start_seconds"),
        samples,
        post_to_ready: Latency::of(&to_ready),
        post: Latency::of(&post),
        recorded: Latency::of(&recorded),
        delete_to_ended: Latency::of(&to_ended),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_mean_is_read_from_metrics() {
        let text = "# TYPE pxs_session_start_seconds histogram\n\
                    pxs_session_start_seconds_bucket{le=\"+Inf\"} 4\n\
                    pxs_session_start_seconds_sum 0.02\npxs_session_start_seconds_count 4\n";
        assert_eq!(
            histogram_mean(text, "pxs_session_start_seconds"),
            Some(Duration::from_millis(5))
        );
        assert_eq!(histogram_mean(text, "pxs_placement_seconds"), None);
    }
}
