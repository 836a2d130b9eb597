//! `pxs session-server check-config` refuses a bad config with a message that names the file and
//! the key, and the server does not start with one.

mod common;

use common::*;
use std::process::Command;

fn check(text: &str, name: &str) -> (i32, String, String) {
    let dir = temp_dir(&format!("check-{name}"));
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("write the config");
    let out = Command::new(pxs_bin())
        .args(["session-server", "check-config", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NODE: &str = "[node]\nname = \"n\"\npublic_url = \"https://n.example.org\"\nstreamer_ports = \"30000-30009\"\n\
                    [coordinator]\nurl = \"https://c.example.org\"\ntoken = \"t\"\n";

fn app(id: &str, exe: &str) -> String {
    format!("[[applications]]\nid = \"{id}\"\nexecutable = '{exe}'\n")
}

#[test]
fn a_good_config_passes() {
    let exe = pxs_bin().display().to_string();
    let (code, out, err) = check(&format!("{NODE}{}", app("demo", &exe)), "good");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("configuration OK") && out.contains("demo"),
        "{out}"
    );
    assert!(!out.contains("\"t\""), "no secret in the summary: {out}");
}

#[test]
fn a_missing_executable_is_named() {
    let (code, _, err) = check(
        &format!("{NODE}{}", app("demo", "/nonexistent/game.exe")),
        "missing",
    );
    assert_eq!(code, 1);
    assert!(err.contains("missing.toml"), "{err}");
    assert!(
        err.contains("applications[0].executable: /nonexistent/game.exe does not exist"),
        "{err}"
    );
}

#[test]
fn a_duplicate_application_id_is_named() {
    let exe = pxs_bin().display().to_string();
    let (code, _, err) = check(
        &format!("{NODE}{}{}", app("demo", &exe), app("demo", &exe)),
        "duplicate",
    );
    assert_eq!(code, 1);
    assert!(err.contains("duplicate.toml"), "{err}");
    assert!(
        err.contains("applications[1].id: duplicate application id `demo`"),
        "{err}"
    );
}

#[test]
fn an_invalid_port_range_is_named() {
    for (range, why) in [
        ("20999-20000", "the range is empty"),
        ("20000-", "is not a port range"),
        ("0-10", "port 0 is not a port"),
    ] {
        let (code, _, err) = check(&NODE.replace("30000-30009", range), "ports");
        assert_eq!(code, 1);
        assert!(
            err.contains("ports.toml: node.streamer_ports:") && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn the_server_does_not_start_with_a_bad_config() {
    let dir = temp_dir("nostart");
    let file = dir.join("bad.toml");
    std::fs::write(&file, NODE.replace("30000-30009", "x")).unwrap();
    let out = Command::new(pxs_bin())
        .args(["session-server", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.streamer_ports"));
}
