#![allow(clippy::unwrap_used)]
//! The systemd units in deploy/linux are valid for systemd (`systemd-analyze verify`, with the
//! binary path pointed at this build), and the command lines they run are ones pxs accepts.

use std::path::Path;
use std::process::Command;

#[test]
fn the_systemd_units_verify() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/linux");
    let dir = std::env::temp_dir().join(format!("pxs-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains("ExecStart=/usr/local/bin/pxs "),
                "{}",
                path.display()
            );
            let here = dir.join(path.file_name().unwrap());
            std::fs::write(
                &here,
                text.replace("/usr/local/bin/pxs", env!("CARGO_BIN_EXE_pxs")),
            )
            .unwrap();
            units.push(here);
        }
    }
    assert_eq!(units.len(), 2, "the coordinator's and the session server's");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_units_command_lines_are_accepted() {
    // `--config FILE` on both; a missing file is a config error, not a usage error (exit 2).
    for part in ["coordinator", "session-server"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pxs"))
            .args([part, "--config", "/nonexistent/pxs.toml"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(2), "{part}: {err}");
        assert!(!out.status.success(), "{part}: a missing config fails");
        assert!(err.contains("/nonexistent/pxs.toml"), "{part}: {err}");
    }
}
