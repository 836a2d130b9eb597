//! Helpers shared by pxs's integration tests. A dev-dependency only: nothing here ships.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The `pxs` binary. `PXS_BIN` wins (scripts/test sets it); otherwise `cargo build -p pxs` once per
/// test binary (a no-op when up to date) and the binary in this test's own target directory.
pub fn pxs_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PXS_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test exe");
        // target/<profile>/deps/<test> → target/<profile>/pxs
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "pxs", "--quiet"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p pxs failed");
        let bin = profile_dir.join(format!("pxs{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A fresh, empty directory for one test: `$TMPDIR/pxs-tests/<pid>/<name>`. Tests keep what they
/// write there (logs to read when one fails), and the first call in a test process removes the
/// directories of earlier test processes that are no longer running, so runs do not pile up.
pub fn scratch_dir(name: &str) -> PathBuf {
    static SWEPT: OnceLock<PathBuf> = OnceLock::new();
    let mine = SWEPT.get_or_init(|| {
        let root = std::env::temp_dir().join("pxs-tests");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let pid = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok());
                if let Some(pid) = pid
                    && pid != std::process::id()
                    && !process_alive(pid)
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        root.join(std::process::id().to_string())
    });
    let d = mine.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

/// Whether process `pid` runs. Where that cannot be told (no /proc), says yes: nothing is
/// removed that might be in use.
fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// How long the polling helpers below wait between two checks of a condition.
const POLL: Duration = Duration::from_millis(20);

/// Polls `f` until it returns `Ok`, and returns what it gave; panics with its last reason after
/// `timeout`. A synchronous check is polled as `|| std::future::ready(check())`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                panic!("condition not met within {timeout:?}: {why}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// For a test that shows that something does *not* happen: checks `condition` over and over for
/// `duration` and panics the moment it fails, saying `what` was expected to hold and for how long
/// it did. The condition is checked at once, every 20 ms, and once more when `duration` is up.
///
/// A bounded wait like this proves nothing if the system never had its chance to break the
/// condition (a slow machine that had not got that far yet). Call it after an event that shows
/// the system got past the point where it would have: a later heartbeat, a later log line, a
/// sibling that did get its timeout. A sync check is passed as `|| std::future::ready(check())`.
pub async fn holds_for<F, Fut>(duration: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + duration;
    loop {
        if let Err(why) = condition().await {
            panic!(
                "expected {what} for {duration:?}, but it broke after {:?}: {why}",
                start.elapsed()
            );
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// Raw HTTP/1.1 over TCP, for tests of the listeners' limits (timeouts, caps, oversized heads),
/// which an HTTP client library would hide.
pub mod raw_http {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An answer as read off the socket.
    #[derive(Debug)]
    pub struct Answer {
        pub status: u16,
        /// The head, lower-cased.
        pub head: String,
        pub body: String,
    }

    /// Opens `n` connections that send nothing.
    pub async fn silent_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
            socks.push(s);
        }
        socks
    }

    /// Waits until the server has closed every socket (a read sees end of file or a reset) and
    /// returns how long that took; panics after `timeout`.
    pub async fn closed_by_server(socks: Vec<TcpStream>, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut waits = tokio::task::JoinSet::new();
        for mut s in socks {
            waits.spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
        let left = waits.len();
        let all = async { while waits.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            panic!("the server did not close all {left} connections within {timeout:?}");
        }
        start.elapsed()
    }

    /// Reads one answer from `s`: the head, then `content-length` bytes of body (or to the end).
    /// `None` if the connection closes before a head.
    pub async fn read_answer(s: &mut TcpStream) -> Option<Answer> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let mut body = buf[head_end..].to_vec();
        while length.is_none_or(|n| body.len() < n) {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Some(Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Sends `request` on a new connection and reads the answer (`None`: closed without one).
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(request).await.ok()?;
        read_answer(&mut s).await
    }

    /// `GET <path>` on a new connection; the answer's status, or `None` when the connection was
    /// refused or closed without an answer.
    pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        tokio::time::timeout(Duration::from_secs(5), exchange(addr, req.as_bytes()))
            .await
            .ok()
            .flatten()
            .map(|a| a.status)
    }

    /// `GET <path>` on a new connection kept alive, then nothing: how long after the answer the
    /// server closed it (panics if that takes longer than `timeout`).
    pub async fn idle_until_closed(addr: SocketAddr, path: &str, timeout: Duration) -> Duration {
        let mut s = TcpStream::connect(addr).await.expect("connects");
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("request written");
        let answer = read_answer(&mut s).await.expect("an answer");
        assert_eq!(answer.status, 200, "{answer:?}");
        let answered = Instant::now();
        closed_by_server(vec![s], timeout).await;
        answered.elapsed()
    }

    /// A request whose target is `target_len` bytes long.
    pub fn long_target(target_len: usize) -> Vec<u8> {
        let path = format!("/{}", "a".repeat(target_len.saturating_sub(1)));
        format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").into_bytes()
    }

    /// A request with one header of `value_len` bytes.
    pub fn big_header(value_len: usize) -> Vec<u8> {
        format!(
            "GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n",
            "b".repeat(value_len)
        )
        .into_bytes()
    }

    /// A request with `n` small headers.
    pub fn many_headers(n: usize) -> Vec<u8> {
        let mut r = String::from("GET /healthz HTTP/1.1\r\nhost: test\r\n");
        for i in 0..n {
            r.push_str(&format!("x-h{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::{holds_for, wait_until};
    use std::future::ready;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn wait_until_returns_what_the_condition_gave() {
        let mut polls = 0;
        let got = wait_until(Duration::from_secs(5), || {
            polls += 1;
            ready(if polls >= 3 {
                Ok(polls)
            } else {
                Err(format!("{polls} polls"))
            })
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "condition not met within 50ms: never")]
    async fn wait_until_gives_up_with_the_last_reason() {
        wait_until(Duration::from_millis(50), || {
            ready(Err::<(), _>("never".to_owned()))
        })
        .await;
    }

    #[tokio::test]
    async fn holds_for_checks_until_the_duration_is_up() {
        let started = Instant::now();
        let mut checks = 0;
        holds_for(Duration::from_millis(200), "nothing", || {
            checks += 1;
            ready(Ok(()))
        })
        .await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(checks >= 2, "{checks} checks");
    }

    #[tokio::test]
    #[should_panic(expected = "expected the flag to stay down for 60s, but it broke after")]
    async fn holds_for_fails_the_moment_the_condition_breaks() {
        let mut checks = 0;
        // Were it to wait out the 60 s, the test would hang for a minute before failing.
        holds_for(Duration::from_secs(60), "the flag to stay down", || {
            checks += 1;
            ready(if checks < 3 {
                Ok(())
            } else {
                Err("up".to_owned())
            })
        })
        .await;
    }
}
