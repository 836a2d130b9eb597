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

/// Polls `f` until it returns Ok, or panics with its last reason after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                panic!("condition not met within {timeout:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
