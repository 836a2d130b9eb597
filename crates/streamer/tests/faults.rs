//! The fault flags, on the real binary (`pxs streamer ...`): each behaves like a mock driver's
//! scripted fault. Signalling is a plain TCP listener or a scripted WebSocket server here, so
//! each test controls exactly what the streamer sees.

mod common;

use common::{holds_for, pxs_bin, send_json};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Slack for a debug binary on a loaded 2-core machine: how much later than its own timer a
/// fault may show.
const SLACK: Duration = Duration::from_secs(3);

/// The streamer process, with its stdout JSON events on a channel. Killed on drop.
struct Streamer {
    child: Child,
    events: mpsc::Receiver<Value>,
    started: Instant,
}

impl Streamer {
    fn spawn(args: &[&str]) -> Streamer {
        let mut cmd = Command::new(pxs_bin());
        cmd.arg("streamer").args(args).stdout(Stdio::piped());
        if std::env::var_os("PXS_TEST_LOGS").is_none() {
            cmd.stderr(Stdio::null());
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("pxs starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Streamer {
            child,
            events,
            started,
        }
    }

    /// Waits for the process to end; returns its status and when it was seen ended.
    fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return (s, Instant::now());
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            // The interval between two polls of the exit status.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The next stdout event named `name`.
    fn event(&self, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => continue,
                Err(_) => panic!("no {name} event within {timeout:?}"),
            }
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks when a fault timer of `after` fired: not before `after` from the spawn, and not much
/// after `after` from the `started` event. The timer starts before `started` is printed, so the
/// upper bound leaves out however long the binary took to start on a loaded machine.
fn fired_in_time(s: &Streamer, started_seen: Instant, ended: Instant, after: Duration) {
    let since_spawn = ended - s.started;
    assert!(since_spawn >= after, "fired too early: {since_spawn:?}");
    let since_started = ended.saturating_duration_since(started_seen);
    assert!(
        since_started < after + SLACK,
        "fired {since_started:?} after `started` (timer {after:?})"
    );
}

#[test]
fn crash_after_aborts_with_a_signal() {
    let mut s = Streamer::spawn(&["--no-signalling", "--crash-after", "1"]);
    s.event("started", Duration::from_secs(10));
    let started_seen = Instant::now();
    let (status, ended) = s.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status:?}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "SIGABRT, got {status:?}");
    }
    fired_in_time(&s, started_seen, ended, Duration::from_secs(1));
}

#[test]
fn exit_after_exits_with_the_given_code() {
    let mut s = Streamer::spawn(&["--no-signalling", "--exit-after", "1", "--exit-code", "7"]);
    s.event("started", Duration::from_secs(10));
    let started_seen = Instant::now();
    let (status, ended) = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(7));
    fired_in_time(&s, started_seen, ended, Duration::from_secs(1));
}

#[test]
fn bad_flags_exit_2_with_a_clear_message_and_help_exits_0() {
    let out = Command::new(pxs_bin())
        .args(["streamer", "-ResX=abc"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value \"abc\" for -ResX"), "{err}");
    let out = Command::new(pxs_bin())
        .args(["streamer", "--help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--crash-after"));
}

#[tokio::test]
async fn no_signalling_never_connects_but_stays_alive() {
    // A plain listener, polled without blocking: a connection would wait in its backlog.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("non-blocking");
    let url = format!(
        "-PixelStreamingURL=ws://{}",
        listener.local_addr().expect("addr")
    );
    let s = Streamer::spawn(&[
        &url,
        "--no-signalling",
        "-RenderOffScreen",
        "--stats-interval",
        "0.5",
    ]);
    s.event("started", Duration::from_secs(10));
    // A streamer starts its first connection right after `started`, before its first stats
    // line: from here on a connection would be there to accept.
    s.event("stats", Duration::from_secs(10));
    let mut s = s;
    let neither_connected_nor_ended = || {
        let connected = match listener.accept() {
            Ok((_, peer)) => Some(peer.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept: {e}"),
        };
        std::future::ready(match connected {
            Some(peer) => Err(format!("it connected from {peer} despite --no-signalling")),
            None if !s.alive() => Err("it exited".to_owned()),
            None => Ok(()),
        })
    };
    holds_for(
        Duration::from_secs(2),
        "a --no-signalling streamer to run without connecting",
        neither_connected_nor_ended,
    )
    .await;
    // And it was running all along, not stuck: its stats kept coming.
    s.event("stats", Duration::from_secs(10));
}

#[tokio::test]
async fn start_delay_connects_only_after_the_delay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!(
        "-PixelStreamingURL=ws://{}",
        listener.local_addr().expect("addr")
    );
    let s = Streamer::spawn(&[&url, "--start-delay", "1.5"]);
    let (_conn, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept())
        .await
        .expect("connects in the end")
        .expect("accept");
    let elapsed = s.started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "connected after only {elapsed:?}"
    );
}

/// A scripted signalling server: accepts one streamer, sends identify, expects endpointId.
async fn accept_streamer(listener: &TcpListener) -> common::Ws {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept())
        .await
        .expect("the streamer connects")
        .expect("accept");
    let ws = tokio_tungstenite::accept_async(tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .expect("handshake");
    let mut ws = ws;
    send_json(
        &mut ws,
        json!({"type": "config", "peerConnectionOptions": {}}),
    )
    .await;
    send_json(&mut ws, json!({"type": "identify"})).await;
    let id = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("endpointId");
    assert_eq!(id["type"], "endpointId");
    send_json(
        &mut ws,
        json!({"type": "endpointIdConfirm", "committedId": id["id"]}),
    )
    .await;
    ws
}

/// The next JSON text frame; None on timeout. Panics if the connection ends.
async fn next_json(ws: &mut common::Ws, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON"));
            }
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn hang_after_keeps_the_socket_open_but_answers_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!(
        "-PixelStreamingURL=ws://{}",
        listener.local_addr().expect("addr")
    );
    let s = Streamer::spawn(&[&url, "-ResX=320", "-ResY=180", "--hang-after", "3"]);
    let mut ws = accept_streamer(&listener).await;

    // Before the hang it answers a player with an offer.
    let asked = Instant::now();
    send_json(&mut ws, json!({"type": "playerConnected", "playerId": "Player0", "dataChannel": true, "sfu": false})).await;
    let offer = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("an offer");
    let answered = asked.elapsed();
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["playerId"], "Player0");

    s.event("hang", Duration::from_secs(10));
    // Now: no offer for a new player, no pong to a WebSocket ping, and no close either.
    send_json(&mut ws, json!({"type": "playerConnected", "playerId": "Player1", "dataChannel": true, "sfu": false})).await;
    futures_util::SinkExt::send(&mut ws, Message::Ping(b"alive?".to_vec().into()))
        .await
        .expect("ping");
    // Whatever arrives from here on (an answer, or the end of the socket) is written down.
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = tokio::spawn({
        let heard = heard.clone();
        async move {
            loop {
                let what = match ws.next().await {
                    Some(Ok(Message::Pong(_))) => "a pong to the ping".to_owned(),
                    Some(Ok(Message::Text(t))) => format!("the text {t}"),
                    Some(Ok(_)) => continue,
                    other => {
                        heard
                            .lock()
                            .expect("lock")
                            .push(format!("the end: {other:?}"));
                        return;
                    }
                };
                heard.lock().expect("lock").push(what);
            }
        }
    });
    // Before the hang it answered within `answered`: give it ten times that, 2 s at least.
    let mut s = s;
    let silence = (answered * 10).max(Duration::from_secs(2));
    holds_for(
        silence,
        "a hung streamer to answer nothing and keep its socket open",
        || {
            let heard = heard.lock().expect("lock").clone();
            std::future::ready(match heard.first() {
                Some(what) => Err(format!("it sent {what}")),
                None if !s.alive() => Err("it exited".to_owned()),
                None => Ok(()),
            })
        },
    )
    .await;
    reader.abort();
}

#[tokio::test]
async fn reconnects_with_backoff_when_signalling_drops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!(
        "-PixelStreamingURL=ws://{}",
        listener.local_addr().expect("addr")
    );
    let _s = Streamer::spawn(&[&url, "-PixelStreamingID=Again", "-ResX=320", "-ResY=180"]);
    let ws = accept_streamer(&listener).await;
    drop(ws);
    let dropped = Instant::now();
    let mut ws = accept_streamer(&listener).await;
    let gap = dropped.elapsed();
    assert!(
        gap >= Duration::from_millis(400),
        "reconnected without backoff: {gap:?}"
    );
    // Registered again under the same id, and works.
    send_json(&mut ws, json!({"type": "playerConnected", "playerId": "Player3", "dataChannel": true, "sfu": false})).await;
    let offer = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("an offer");
    assert_eq!(offer["playerId"], "Player3");
}

#[tokio::test]
async fn keepalive_pings_signalling() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let url = format!(
        "-PixelStreamingURL=ws://{}",
        listener.local_addr().expect("addr")
    );
    let _s = Streamer::spawn(&[&url, "-PixelStreamingSignalingKeepAliveInterval=0.3"]);
    let mut ws = accept_streamer(&listener).await;
    let ping = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("a ping within the interval");
    assert_eq!(ping["type"], "ping");
    assert!(
        ping["time"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "{ping}"
    );
}
