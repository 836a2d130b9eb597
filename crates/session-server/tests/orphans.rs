//! What becomes of a session's processes when the real `pxs session-server` dies with SIGKILL,
//! and why a process left over from one session can never take part in another.

mod common;

use common::*;
use std::time::Duration;

/// SIGKILL to `pid`.
fn kill9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Processes this test leaves running on purpose, SIGKILLed when it ends (also when it fails).
struct KillAtEnd(Vec<u32>);

impl Drop for KillAtEnd {
    fn drop(&mut self) {
        for pid in &self.0 {
            kill9(*pid);
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_session_server_takes_its_applications_and_their_children_with_it() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("die-together");
    let tree = env!("CARGO_BIN_EXE_pxs-test-tree");
    let apps = format!(
        "{}[[applications]]\nid = \"tree\"\nexecutable = '{tree}'\nargs = ['{}', 'streamer']\nres_x = 320\nres_y = 240\n",
        streamer_app("demo", &[], ""),
        pxs_bin().display()
    );
    let file = dir.join("session-server.toml");
    std::fs::write(&file, config_toml(&coord, &dir.join("data"), "", &apps)).unwrap();
    let mut node = Node::start(&file);
    coord.wait_linked(Duration::from_secs(20)).await;
    let (plain, tree_id) = (sid("plain"), sid("tree"));
    coord.start_session(&plain, "demo");
    coord.start_session(&tree_id, "tree");
    coord.wait_ready(&plain, Duration::from_secs(60)).await;
    coord.wait_ready(&tree_id, Duration::from_secs(60)).await;
    // Every process of both sessions: the tree's leader, its streamer and its stubborn child.
    let leaders = [
        coord.pid_of(&plain).unwrap(),
        coord.pid_of(&tree_id).unwrap(),
    ];
    let mut pids = wait_until(Duration::from_secs(5), || {
        let tree = group_members(leaders[1]);
        std::future::ready(if tree.len() >= 3 {
            Ok(tree)
        } else {
            Err(format!("tree group: {tree:?}"))
        })
    })
    .await;
    pids.extend(group_members(leaders[0]));
    let guards: Vec<u32> = guards_of(node.pid()).into_iter().map(|(_, g)| g).collect();

    node.kill9();
    // No restart: the processes must go by themselves.
    let took = wait_all_gone(&pids, Duration::from_secs(5)).await;
    eprintln!("every application process gone {took:?} after the SIGKILL");
    for leader in leaders {
        assert!(group_members(leader).is_empty(), "group {leader} is empty");
    }
    assert_eq!(guards.len(), 2, "one guard per session");
    wait_all_gone(&guards, Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(dir.join("data/logs").join(format!("{tree_id}.log")))
        .unwrap_or_default();
    assert!(
        log.contains("pxs guard: the session server of ses_tree is gone"),
        "the guard says what it did in the session's log: {log}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_cannot_attach_to_the_session_that_took_its_port() {
    init_logs();
    let coord = Coordinator::start().await;
    // The second run links to a coordinator of its own, which knows nothing of the first run's
    // events: this test is about ports, not about event numbers (crash_recovery.rs).
    let coord_2 = Coordinator::start().await;
    let dir = temp_dir("orphan-port");
    // One port only, so that the second run's session surely gets the first one's port.
    let toml_for = |coord: &Coordinator, data: &str| {
        config_toml(
            coord,
            &dir.join(data),
            "",
            &streamer_app(
                "demo",
                &[],
                "idle_timeout = \"off\"\nempty_timeout = \"off\"",
            ),
        )
    };
    let first_toml = toml_for(&coord, "data-1");
    let ports = first_toml
        .lines()
        .find_map(|l| l.strip_prefix("streamer_ports = \""))
        .and_then(|r| r.split('-').next())
        .unwrap()
        .to_owned();
    let one_port = |t: String| {
        t.lines()
            .map(|l| {
                if l.starts_with("streamer_ports") {
                    format!("streamer_ports = \"{ports}-{ports}\"")
                } else if l.starts_with("max_sessions") {
                    "max_sessions = 1".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let file_1 = dir.join("first.toml");
    std::fs::write(&file_1, one_port(first_toml)).unwrap();
    let file_2 = dir.join("second.toml");
    std::fs::write(&file_2, one_port(toml_for(&coord_2, "data-2"))).unwrap();

    let mut first = Node::start(&file_1);
    coord.wait_linked(Duration::from_secs(20)).await;
    let s1 = sid("first");
    coord.start_session(&s1, "demo");
    coord.wait_ready(&s1, Duration::from_secs(60)).await;
    let orphan = coord.pid_of(&s1).unwrap();
    let mut leftovers = KillAtEnd(vec![orphan]);
    let orphan_url = streamer_url_of(orphan);
    // Its guard fails, then the session server dies: the application lives on and redials.
    for (_, g) in guards_of(first.pid()) {
        kill9(g);
    }
    first.kill9();
    assert!(alive(orphan), "an orphan now");

    // A new run on another data dir does not know the orphan; its session gets the same port.
    let second = Node::start(&file_2);
    coord_2.wait_linked(Duration::from_secs(20)).await;
    let s2 = sid("second");
    coord_2.start_session(&s2, "demo");
    coord_2.wait_ready(&s2, Duration::from_secs(60)).await;
    let own_url = streamer_url_of(coord_2.pid_of(&s2).unwrap());
    let port_of = |url: &str| url.split('/').nth(2).unwrap().to_owned();
    assert_eq!(port_of(&orphan_url), port_of(&own_url), "the same port");

    // Two more strangers: one with no credential at all claiming the session's own id, one
    // with the session's real credential but another id.
    let no_credential = format!("ws://{}/", port_of(&own_url));
    let stranger = |url: &str, id: &str| {
        std::process::Command::new(pxs_bin())
            .args(["streamer", "-RenderOffScreen"])
            .arg(format!("-PixelStreamingURL={url}"))
            .arg(format!("-PixelStreamingID={id}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("a stranger streamer")
    };
    let impostor = stranger(&no_credential, s2.as_str());
    let intruder = stranger(&own_url, "ses_intruder");
    leftovers.0.extend([impostor.id(), intruder.id()]);

    // The orphan redials every 5 s at most; each stranger tries at once.
    wait_until(Duration::from_secs(20), || {
        let refused = second.log_lines_with(&format!(
            "streamer refused: missing or wrong streamer credential session={s2}"
        ));
        let other_id = second.log_lines_with("identified as another session's streamer");
        std::future::ready(if refused >= 2 && other_id >= 1 {
            Ok(())
        } else {
            Err(format!(
                "refused {refused} (want the orphan and the impostor), wrong id {other_id}"
            ))
        })
    })
    .await;
    let mut p = player(second.addr, &s2, Some(PLAYER_TOKEN))
        .await
        .expect("the player joins");
    assert_eq!(
        list_streamers(&mut p).await,
        vec![s2.to_string()],
        "the session's player sees its own streamer only"
    );
    assert!(
        alive(orphan),
        "the orphan is still redialling, refused each time"
    );
    assert_ne!(orphan_url, own_url, "each session has its own credential");
    let log = std::fs::read_to_string(&second.log).unwrap();
    for secret in [&own_url, &orphan_url] {
        let credential = secret.split("token=").nth(1).unwrap();
        assert!(!log.contains(credential), "a credential in the node's log");
    }
    drop(leftovers);
    for mut c in [impostor, intruder] {
        let _ = c.wait();
    }
}
