//! pxs.exe, the Windows release, under Wine (Debian's `wine64`) on Linux: the release zip of
//! `scripts/windows-release` unzipped, `pxs.exe session-server` linked to a Linux `pxs
//! coordinator`, sessions of `pxs.exe streamer` played by a WebRTC player on Linux.
//!
//! The zip is named by `PXS_WINDOWS_ZIP` (scripts/test builds it and sets it). Without it the
//! tests say so and pass, unless `CI` is set: there a missing zip is a failure.
//!
//! Test-only help that never ships: `tests/wine/bcryptprimitives.c`, built beside pxs.exe, gives
//! Wine 8 the `ProcessPrng` that Rust's standard library imports (Windows 10 has it).
//!
//! What Wine cannot do, and so is not proven here: deliver `CTRL_BREAK_EVENT` to another process
//! (`GenerateConsoleCtrlEvent` fails there with "invalid access" or "invalid handle") and create
//! windows without a display (so no `WM_CLOSE`). The tests check the fallback that follows on
//! Windows too when an application ignores both: the failure is logged and the job object is
//! ended after `node.kill_grace`.

mod common;

use common::{Player, pxs_bin, wait_until};
use pxs_protocol::datachannel::{FromStreamer, Value};
use serde_json::{Value as Json, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// One Wine test at a time: each runs Wine, an H.264 encoder and a decoding player, which is
/// all a 2-core machine has.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ADMIN: &str = "wine-test-admin-token-0123456789";
const NODE_TOKEN: &str = "wine-test-node-token-0123456789";

/// The unzipped release (the folder holding pxs.exe), or None when the tests cannot run here.
fn release() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let Some(zip) = std::env::var_os("PXS_WINDOWS_ZIP").filter(|z| !z.is_empty()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PXS_WINDOWS_ZIP is not set: scripts/test builds the Windows release and sets it"
            );
            eprintln!("skipped: PXS_WINDOWS_ZIP is not set (scripts/test sets it)");
            return None;
        };
        let root = pxs_test_support::scratch_dir("windows-release");
        let status = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&zip)
            .arg(&root)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "cannot unzip {zip:?}");
        let dir = std::fs::read_dir(&root)
            .expect("unzipped")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .expect("the zip holds one folder");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["README.txt", "pxs.exe", "session-server.toml"],
            "the release holds pxs.exe alone (no DLL), its example config and README"
        );
        // The test-only shim, beside pxs.exe where Windows looks first.
        build_shim(&dir.join("bcryptprimitives.dll"));
        Some(dir)
    })
    .as_deref()
}

fn build_shim(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/bcryptprimitives.c");
    let status = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-O2", "-shared", "-s", "-o"])
        .arg(out)
        .arg(&src)
        .arg("-ladvapi32")
        .status()
        .expect("x86_64-w64-mingw32-gcc runs");
    assert!(status.success(), "cannot build the ProcessPrng shim");
}

/// The Wine prefix of this test run, made once (`wineboot`).
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let p = pxs_test_support::scratch_dir("wine-prefix");
        let out = wine_command(&p, Path::new("wineboot"))
            .arg("--init")
            .stdout(Stdio::null())
            .output()
            .expect("wineboot runs");
        assert!(
            out.status.success(),
            "wineboot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    })
}

/// Debian's 64-bit Wine loader.
fn wine_loader() -> PathBuf {
    let debian = PathBuf::from("/usr/lib/wine/wine64");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("wine64")
    }
}

fn wine_command(prefix: &Path, program: &Path) -> Command {
    let mut c = Command::new(wine_loader());
    c.arg(program)
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        // No Mono or Gecko install prompts while the prefix is made.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .stdin(Stdio::null());
    c
}

/// A Linux path as Wine's Windows programs see it (drive Z: is /).
fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// `pxs.exe <args>` under Wine, with the test's output files.
fn pxs_exe(dir: &Path) -> Command {
    wine_command(prefix(), &dir.join("pxs.exe"))
}

/// A real `pxs coordinator` (Linux) on a free port with SQLite.
struct Coordinator {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Coordinator {
    fn start(dir: &Path) -> Coordinator {
        let mut child = Command::new(pxs_bin())
            .arg("coordinator")
            .args(["--listen", "127.0.0.1:0", "--database-url"])
            .arg(format!("sqlite://{}", dir.join("coordinator.db").display()))
            .args(["--admin-token", ADMIN, "--node-token", NODE_TOKEN])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("coordinator.log")).expect("log"))
            .spawn()
            .expect("pxs coordinator starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if l.contains("\"listening\"") {
                    let _ = tx.send(l);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(WAIT) else {
            let _ = child.kill();
            panic!(
                "the coordinator did not say it listens within {WAIT:?}: {}",
                std::fs::read_to_string(dir.join("coordinator.log")).unwrap_or_default()
            );
        };
        let v: Json = serde_json::from_str(&line).expect("listening line");
        let url = format!("http://{}", v["addr"].as_str().expect("addr"));
        Coordinator {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> (u16, Json) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("coordinator answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    async fn session(&self, id: &str) -> Json {
        let (s, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn wait_session(&self, id: &str, state: &str) -> Json {
        wait_until(WAIT, || async move {
            let v = self.session(id).await;
            if v["state"] == state {
                Ok(())
            } else {
                Err(format!("want {state}: {v}"))
            }
        })
        .await;
        self.session(id).await
    }

    async fn wait_node(&self, name: &str, state: &str) {
        wait_until(WAIT, || async move {
            let (_, v) = self
                .call(reqwest::Method::GET, &format!("/api/v1/nodes/{name}"), None)
                .await;
            if v["state"] == state {
                Ok(())
            } else {
                Err(format!("node {name}, want {state}: {v}"))
            }
        })
        .await;
    }

    /// A title of application `app` and a session of it; returns the session's id.
    async fn launch(&self, app: &str) -> String {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/titles",
                Some(
                    json!({"id": app, "name": app, "application_id": app, "visibility": "public"}),
                ),
            )
            .await;
        assert!(s == 201 || s == 409, "{s} {v}");
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/sessions",
                Some(json!({"title_id": app})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: a scratch folder, the coordinator, and the application: pxs.exe copied
/// under a folder with spaces ("Program Files/pxs test app"), as a UE app would be installed.
struct World {
    dir: PathBuf,
    coord: Coordinator,
    app_exe: PathBuf,
    input_log: PathBuf,
    node_port: u16,
}

const TRICKY_ARGS: [&str; 3] = [
    r#"-Title=He said "hi" to C:\Program Files\"#,
    "two words",
    r#"C:\Program Files\My App\Map.umap"#,
];

impl World {
    fn new(name: &str) -> Option<World> {
        let release = release()?;
        let dir = pxs_test_support::scratch_dir(&format!("windows-{name}"));
        let app_dir = dir.join("Program Files").join("pxs test app");
        std::fs::create_dir_all(&app_dir).expect("app dir");
        let app_exe = app_dir.join("pxs.exe");
        std::fs::copy(release.join("pxs.exe"), &app_exe).expect("copy pxs.exe");
        std::fs::copy(
            release.join("bcryptprimitives.dll"),
            app_dir.join("bcryptprimitives.dll"),
        )
        .expect("copy the shim");
        let coord = Coordinator::start(&dir);
        let node_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Some(World {
            input_log: dir.join("input.jsonl"),
            dir,
            coord,
            app_exe,
            node_port,
        })
    }

    /// The session server's config: node `name`, application "demo" = the copied pxs.exe as a
    /// streamer, with arguments that need quoting.
    fn write_config(&self, name: &str) -> PathBuf {
        let ports_from = 22000 + (self.node_port % 400) * 10;
        let mut args = vec![
            "streamer".to_owned(),
            "-RenderOffScreen".to_owned(),
            "--input-log".to_owned(),
            win_path(&self.input_log),
        ];
        args.extend(TRICKY_ARGS.iter().map(|a| a.to_string()));
        let toml = format!(
            "[node]\nname = {name:?}\npublic_url = \"http://127.0.0.1:{port}\"\n\
             listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\nmax_sessions = 2\n\
             heartbeat_interval = \"500ms\"\nstreamer_ports = \"{ports_from}-{}\"\n\
             kill_grace = \"2s\"\n\n[coordinator]\nurl = {url:?}\ntoken = {NODE_TOKEN:?}\n\n\
             [[applications]]\nid = \"demo\"\nname = \"demo\"\nexecutable = {exe:?}\n\
             args = {args}\nres_x = 320\nres_y = 240\nstart_timeout = \"60s\"\n",
            ports_from + 9,
            port = self.node_port,
            data = win_path(&self.dir.join("node data")),
            url = self.coord.url,
            exe = win_path(&self.app_exe),
            args = serde_json::to_string(&args).expect("args"),
        );
        let file = self.dir.join("node.toml");
        std::fs::write(&file, toml).expect("config");
        file
    }

    /// `pxs.exe session-server` in the foreground (its stderr in node.log).
    fn start_node(&self, name: &str) -> Child {
        let config = self.write_config(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("log");
        pxs_exe(release().expect("release"))
            .args(["session-server", "--config"])
            .arg(win_path(&config))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("wine starts")
    }

    fn node_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn session_log(&self, id: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .join("node data")
                .join("logs")
                .join(format!("{id}.log")),
        )
        .unwrap_or_default()
    }
}

/// Linux pids of the processes (Wine's included) whose command line names session `id`: the
/// application gets `-PixelStreamingID=<id>`.
fn session_processes(id: &str) -> Vec<u32> {
    let needle = format!("-PixelStreamingID={id}");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_no_process(id: &str) {
    wait_until(WAIT, || async move {
        let left = session_processes(id);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("processes of {id} still run: {left:?}"))
        }
    })
    .await;
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxs_exe_streams_a_session_to_a_linux_player_and_delete_leaves_no_process() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(w) = World::new("stream") else {
        return;
    };
    let _node = Kill(w.start_node("win-stream"));
    w.coord.wait_node("win-stream", "online").await;

    let id = w.coord.launch("demo").await;
    let ready = w.coord.wait_session(&id, "ready").await;
    let join_url = ready["join_url"].as_str().expect("join_url while ready");

    // The application got every argument exactly: path with spaces, quotes, backslashes.
    let log = w.session_log(&id);
    let started: Json = log
        .lines()
        .find(|l| l.contains("\"event\":\"started\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no started event in the session log:\n{log}"));
    let mut expected = vec![json!("-RenderOffScreen")];
    expected.extend(TRICKY_ARGS.iter().map(|a| json!(a)));
    assert_eq!(started["ignored"], Json::Array(expected), "{started}");

    // A player on Linux: video decoded, audio, the data channel; a click arrives where it was
    // made.
    let mut player = Player::subscribe_url(join_url, &id).await;
    player
        .run_until(WAIT, "30 frames, 3 decoded, audio, the data channel", |p| {
            p.frames >= 30
                && p.decoded.len() >= 3
                && p.audio.packets >= 20
                && p.count(|m| matches!(m, FromStreamer::Protocol(_))) >= 1
        })
        .await;
    for f in &player.decoded {
        assert_eq!((f.width, f.height), (320, 240));
    }
    player.send_input(
        "MouseDown",
        &[Value::U8(0), Value::U16(16384), Value::U16(49152)],
    );
    let input_log = w.input_log.clone();
    wait_until(WAIT, || {
        let text = std::fs::read_to_string(&input_log).unwrap_or_default();
        async move {
            if text.contains(r#""name":"MouseDown","fields":{"button":0,"x":16384,"y":49152}"#) {
                Ok(())
            } else {
                Err(format!("no MouseDown in the input log yet: {text}"))
            }
        }
    })
    .await;
    eprintln!(
        "pxs.exe under Wine: {} frames, {} decoded, {} audio packets",
        player.frames,
        player.decoded.len(),
        player.audio.packets
    );
    drop(player);
    assert!(!session_processes(&id).is_empty(), "the application runs");

    // DELETE: the session ends `stopped` and none of its processes is left. (Wine cannot deliver
    // CTRL_BREAK_EVENT: the node says so and ends the job after kill_grace.)
    let (s, v) = w
        .coord
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            None,
        )
        .await;
    assert!((200..300).contains(&s), "{s} {v}");
    let ended = w.coord.wait_session(&id, "ended").await;
    assert_eq!(ended["end_reason"], "stopped", "{ended}");
    wait_no_process(&id).await;
    let node_log = w.node_log();
    let log = w.session_log(&id);
    // No NVIDIA driver under Wine: said plainly, and the node runs without GPUs.
    assert!(
        node_log.contains("no NVIDIA GPU found (NVML is not available); running without GPUs"),
        "{node_log}"
    );
    assert!(
        node_log.contains("stop request not delivered")
            || log.contains("CTRL_BREAK_EVENT received"),
        "the graceful stop either reached the app or its failure was logged:\n{node_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_killed_session_server_takes_its_application_and_reports_node_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(w) = World::new("kill") else {
        return;
    };
    let mut node = Kill(w.start_node("win-kill"));
    w.coord.wait_node("win-kill", "online").await;
    let id = w.coord.launch("demo").await;
    w.coord.wait_session(&id, "ready").await;
    assert!(!session_processes(&id).is_empty(), "the application runs");

    // SIGKILL to the session server (Wine's process for pxs.exe): no chance to clean up.
    node.0.kill().expect("kill");
    node.0.wait().expect("reaped");
    // Its job object closes with it, and Windows (here Wine) ends the application.
    wait_no_process(&id).await;

    // The restart finds the session in its data dir and reports it.
    let _node = Kill(w.start_node("win-kill"));
    let ended = w.coord.wait_session(&id, "ended").await;
    assert_eq!(ended["end_reason"], "node_restart", "{ended}");
    assert!(
        w.node_log()
            .contains("orphaned session from a previous run"),
        "{}",
        w.node_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_windows_service_installs_runs_sessions_stops_and_uninstalls() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(w) = World::new("service") else {
        return;
    };
    let release = release().expect("release");
    let config = w.write_config("win-service");
    let name = format!("pxs-test-{}", std::process::id());
    let run = |args: &[&str]| {
        let out = pxs_exe(release)
            .args(["session-server", "--config"])
            .arg(win_path(&config))
            .args(args)
            .args(["--name", &name])
            .output()
            .expect("pxs.exe runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let out = run(&["service", "install"]);
    assert!(out.contains("installed the service"), "{out}");
    // Whatever fails below, the service does not outlive the test.
    struct Uninstall<'a>(&'a Path, &'a str);
    impl Drop for Uninstall<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = pxs_exe(self.0)
                    .args(["session-server", "service", "uninstall", "--name", self.1])
                    .output();
            }
        }
    }
    let _uninstall = Uninstall(release, &name);
    let out = run(&["service", "start"]);
    assert!(out.contains("is running"), "{out}");
    w.coord.wait_node("win-service", "online").await;
    let id = w.coord.launch("demo").await;
    w.coord.wait_session(&id, "ready").await;
    assert!(!session_processes(&id).is_empty(), "the application runs");

    // A stop of the service ends its sessions as a shutdown does.
    let out = run(&["service", "stop"]);
    assert!(out.contains("has stopped"), "{out}");
    let ended = w.coord.wait_session(&id, "ended").await;
    assert_eq!(ended["end_reason"], "node_shutdown", "{ended}");
    wait_no_process(&id).await;
    let out = run(&["service", "uninstall"]);
    assert!(out.contains("removed the service"), "{out}");

    // The service wrote its log into the data dir.
    let log = std::fs::read_to_string(w.dir.join("node data/logs/session-server.log"))
        .expect("the service's log file");
    assert!(log.contains("starting as a Windows service"), "{log}");
    assert!(log.contains("session server stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_of_the_release_checks_once_its_application_is_there() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(release) = release() else {
        return;
    };
    let check = || {
        pxs_exe(release)
            .args(["session-server", "--config"])
            .arg(win_path(&release.join("session-server.toml")))
            .arg("check-config")
            .output()
            .expect("pxs.exe runs")
    };
    // The UE application it names is not installed: the error says which file is missing.
    let ue_app = prefix().join("drive_c/Program Files/My Company/My UE App/Windows/MyUEApp.exe");
    let _ = std::fs::remove_file(&ue_app);
    let out = check();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains(r"C:\Program Files\My Company\My UE App\Windows\MyUEApp.exe"),
        "{text}"
    );
    // Installed (any file will do for the check), the example is valid as it ships.
    std::fs::create_dir_all(ue_app.parent().expect("dir")).expect("dir");
    std::fs::write(&ue_app, b"MZ").expect("app");
    let out = check();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}
