//! The data dir: `state.json` (what survives a crash: running sessions and unacknowledged
//! events), written atomically; `logs/<session id>.log`; `session-server.pid`; `lock`.

use crate::supervisor::PersistedState;
use anyhow::Context;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::error;

pub const STATE_FILE: &str = "state.json";
pub const PID_FILE: &str = "session-server.pid";

/// The opened data dir, locked against a second session server.
#[derive(Debug)]
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(path: &Path) -> anyhow::Result<DataDir> {
        std::fs::create_dir_all(path.join("logs"))
            .with_context(|| format!("node.data_dir: cannot create {}", path.display()))?;
        let path = path
            .canonicalize()
            .with_context(|| format!("node.data_dir: {}", path.display()))?;
        let lock = File::create(path.join("lock"))
            .with_context(|| format!("node.data_dir: cannot write in {}", path.display()))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "node.data_dir: {} is in use by another session server",
                path.display()
            );
        }
        Ok(DataDir { path, _lock: lock })
    }

    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// The state a previous run left, if any. An unreadable file is moved aside (and the error
    /// logged) rather than stopping the node: the marker scan still finds its processes.
    pub fn load(&self) -> Option<PersistedState> {
        let file = self.path.join(STATE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                error!(file = %file.display(), %e, "cannot read the state file");
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                let aside = self.path.join(format!("{STATE_FILE}.corrupt"));
                error!(file = %file.display(), %e, aside = %aside.display(), "the state file is corrupt; moved aside");
                let _ = std::fs::rename(&file, &aside);
                None
            }
        }
    }

    /// Writes the state: to a temporary file, flushed to disk, then renamed over the old one, so
    /// a crash leaves either the old or the new state, never a torn one.
    pub fn save(&self, state: &PersistedState) -> std::io::Result<()> {
        let tmp = self.path.join(format!("{STATE_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.path.join(STATE_FILE))?;
        #[cfg(unix)]
        if let Ok(dir) = File::open(&self.path) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    pub fn write_pid(&self) -> std::io::Result<()> {
        std::fs::write(
            self.path.join(PID_FILE),
            format!("{}\n", std::process::id()),
        )
    }

    pub fn remove_pid(&self) {
        let _ = std::fs::remove_file(self.path.join(PID_FILE));
    }
}

/// The pid a running session server wrote in `data_dir`.
pub fn read_pid(data_dir: &Path) -> anyhow::Result<u32> {
    let file = data_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("no running session server: cannot read {}", file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a pid", file.display()))
}

/// Asks the session server running on `data_dir` to reload its applications (SIGHUP to the pid
/// in its pid file). Returns the pid.
#[cfg(unix)]
pub fn signal_reload(data_dir: &Path) -> anyhow::Result<u32> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = read_pid(data_dir)?;
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), Signal::SIGHUP)
        .with_context(|| format!("cannot signal the session server (pid {pid})"))?;
    Ok(pid)
}

#[cfg(not(unix))]
pub fn signal_reload(_data_dir: &Path) -> anyhow::Result<u32> {
    anyhow::bail!("reload by signal is not available on this platform: restart the session server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_second_server_is_refused() {
        // Removed by the scratch helper; DataDir::open makes it again.
        let dir = pxs_test_support::scratch_dir("ss-state").join("data");
        let d = DataDir::open(&dir).unwrap();
        assert!(d.load().is_none());
        let s = PersistedState {
            next_seq: 9,
            ..Default::default()
        };
        d.save(&s).unwrap();
        assert_eq!(d.load(), Some(s));
        assert!(!dir.join("state.json.tmp").exists());
        let e = DataDir::open(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another session server"), "{e}");
        std::fs::write(dir.join(STATE_FILE), "{torn").unwrap();
        assert!(d.load().is_none());
        assert!(dir.join("state.json.corrupt").exists());
        drop(d);
        DataDir::open(&dir).unwrap();
    }
}
