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
