#![allow(clippy::unwrap_used)]
//! `pxs webrtc-session --turn_secret`, the real binary: every connection's `config` carries TURN
//! credentials of its own that the TURN server would accept, and the secret shows nowhere: not in
//! the process's output at debug level, not in the REST API, not in `--help`.

mod common;
use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

/// Unique to this run, so that finding it anywhere can only mean it leaked.
fn test_secret() -> String {
    format!(
        "turn-secret-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

const PEER_OPTIONS: &str = r#"{"iceServers":[{"urls":["stun:stun.example.org:19302"]},{"urls":["turn:127.0.0.1:3478?transport=udp","turn:127.0.0.1:3478?transport=tcp"]}]}"#;

/// The running binary; killed when dropped, so a failing test leaves no process behind.
struct Running {
    child: Child,
    /// Every line of stdout and stderr so far.
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str]) -> (Running, Value) {
        let mut child = Command::new(pxs_test_support::pxs_bin())
            .arg("webrtc-session")
            .args(args)
            .env("PXS_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = mpsc::channel();
        let mut readers = Vec::new();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (out, first) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                Some(first_tx),
            ),
            (Box::new(stderr), None),
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if let Some(tx) = &first {
                        let _ = tx.send(line.clone());
                    }
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        let mut running = Running {
            child,
            lines,
            readers,
        };
        let listening = match first_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(_) => {
                let output = running.finish();
                panic!("no listening line; output:\n{}", output.join("\n"));
            }
        };
        (running, listening)
    }

    /// Stops the process and returns all it wrote.
    fn finish(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr(listening: &Value, port: &str) -> std::net::SocketAddr {
    listening[port].as_str().unwrap().parse().unwrap()
}

/// The TURN entries' `(username, credential)` of a `config`, checked: the STUN entry untouched,
/// every TURN entry the same pair, and the credential the HMAC-SHA1 of the username under
/// `secret`, computed here as coturn does.
fn turn_pair(config: &Value, secret: &str) -> (String, String) {
    assert_eq!(config["type"], "config", "{config}");
    let servers = config["peerConnectionOptions"]["iceServers"]
        .as_array()
        .unwrap();
    assert_eq!(
        servers[0],
        serde_json::json!({"urls":["stun:stun.example.org:19302"]})
    );
    let username = servers[1]["username"].as_str().unwrap().to_owned();
    let credential = servers[1]["credential"].as_str().unwrap().to_owned();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(credential, expected, "the credential of {username}");
    (username, credential)
}

fn expiry_of(username: &str) -> u64 {
    username.split_once(':').unwrap().0.parse().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn each_connection_gets_its_own_credentials_and_the_secret_shows_nowhere() {
    let secret = test_secret();
    let (mut pxs, listening) = Running::start(&[
        "--bind_address",
        "127.0.0.1",
        "--streamer_port",
        "0",
        "--player_port",
        "0",
        "--sfu_port",
        "0",
        "--rest_api",
        "--log_level_console",
        "debug",
        "--turn_secret",
        &secret,
        "--turn_ttl",
        "600",
        "--peer_options",
        PEER_OPTIONS,
    ]);
    let (player_addr, streamer_addr) = (addr(&listening, "player"), addr(&listening, "streamer"));

    let before = unix_now();
    let mut streamer = connect(streamer_addr, "/").await;
    let (user_s, _) = turn_pair(&streamer.recv().await, &secret);
    assert!(
        expiry_of(&user_s) >= before + 10 * 365 * 86_400,
        "a streamer's credentials outlive it: {user_s}"
    );
    assert_eq!(streamer.recv().await["type"], "identify");
    streamer
        .send(serde_json::json!({"type":"endpointId","id":"DefaultStreamer"}))
        .await;
    assert_eq!(streamer.recv().await["type"], "endpointIdConfirm");
    let mut p1 = connect(player_addr, "/").await;
    let mut p2 = connect(player_addr, "/").await;
    let (user1, cred1) = turn_pair(&p1.recv().await, &secret);
    let (user2, cred2) = turn_pair(&p2.recv().await, &secret);
    let after = unix_now();
    assert_ne!(user1, user2);
    assert_ne!(cred1, cred2);
    for user in [&user1, &user2] {
        let expiry = expiry_of(user);
        assert!(
            (before + 600..=after + 600).contains(&expiry),
            "{user}: expires {before}+600..={after}+600"
        );
    }
    assert!(
        user1.contains(":Player0-") && user2.contains(":Player1-"),
        "{user1} {user2}"
    );
    // The two still work as players.
    p1.send(serde_json::json!({"type":"subscribe","streamerId":"DefaultStreamer"}))
        .await;
    assert_eq!(streamer.recv().await["type"], "playerConnected");

    // The REST API never answers with the secret (and has no /api/config).
    let http = reqwest::Client::new();
    for path in [
        "/api/status",
        "/api/streamers",
        "/api/streamers/DefaultStreamer",
        "/api/players",
        "/api/players/Player0",
        "/api/config",
    ] {
        let resp = http
            .get(format!("http://{player_addr}{path}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(
            status,
            if path == "/api/config" { 404 } else { 200 },
            "{path}"
        );
        assert!(!body.contains(&secret), "{path} leaks the secret: {body}");
    }

    drop((p1, p2, streamer));
    let output = pxs.finish();
    assert!(
        output
            .iter()
            .any(|l| l.contains("TURN credentials issued") && l.contains(&user1)),
        "debug logging was on, and it names the usernames:\n{}",
        output.join("\n")
    );
    for line in &output {
        assert!(!line.contains(&secret), "the secret in the output: {line}");
        assert!(
            !line.contains(&cred1) && !line.contains(&cred2),
            "a credential in the output: {line}"
        );
    }
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let secret = test_secret();
    let out = Command::new(pxs_test_support::pxs_bin())
        .args(["webrtc-session", "--help"])
        .env("PXS_WEBRTC_TURN_SECRET", &secret)
        .env("PXS_WEBRTC_PLAYER_TOKEN", &secret)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("--turn_secret") && text.contains("--turn_ttl"),
        "{text}"
    );
    assert!(!text.contains(&secret), "{text}");
}

#[test]
fn an_unreadable_or_empty_secret_file_stops_the_start_with_a_clear_error() {
    let dir = pxs_test_support::scratch_dir("turn-secret-file");
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (file, says) in [
        (dir.join("missing"), "turn_secret_file: cannot read"),
        (empty.clone(), "is empty"),
    ] {
        let out = Command::new(pxs_test_support::pxs_bin())
            .args(["webrtc-session", "--player_port", "0", "--turn_secret_file"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} started", file.display());
        assert!(err.contains(says), "{err} should say {says}");
        assert!(
            err.contains(&file.display().to_string()),
            "{err} names the file"
        );
    }
}
