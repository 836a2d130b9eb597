//! The data dir: `state.json` (what survives a crash: running sessions and unacknowledged
//! events), written atomically; `logs/<session id>.log`; `session-server.pid`; `lock`; and
//! `drain.json`, the operator's drain request (`pxs session-server drain`, until `resume`).

use crate::supervisor::PersistedState;
use anyhow::Context;
use pxs_protocol::node::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::error;

pub const STATE_FILE: &str = "state.json";
pub const PID_FILE: &str = "session-server.pid";
pub const DRAIN_FILE: &str = "drain.json";

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
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.path, STATE_FILE, &bytes)
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

/// Writes `dir/name`: to a temporary file, flushed to disk, then renamed over the old one, so a
/// crash leaves either the old or the new file, never a torn one.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The operator's drain request, `<data_dir>/drain.json`: the node takes no new sessions and
/// stops those still running at `deadline`. Written by `pxs session-server drain`, removed by
/// `pxs session-server resume`; the running server reads it at start and at every heartbeat.
/// Only who may write the data dir can drain the node: no port, no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Milliseconds since the Unix epoch; `None`: sessions run until they end by themselves.
    pub deadline: Option<UnixMillis>,
}

/// Records the operator's drain request in `data_dir` (replacing an earlier one).
pub fn write_drain(data_dir: &Path, req: &DrainRequest) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(req).context("drain request")?;
    write_atomic(data_dir, DRAIN_FILE, &bytes)
        .with_context(|| format!("cannot write {}", data_dir.join(DRAIN_FILE).display()))
}

/// Removes the operator's drain request; false when there was none.
pub fn remove_drain(data_dir: &Path) -> anyhow::Result<bool> {
    let file = data_dir.join(DRAIN_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", file.display())),
    }
}

/// The operator's drain request in `data_dir`, if any; an error names the file and what is
/// wrong with it.
pub fn read_drain(data_dir: &Path) -> Result<Option<DrainRequest>, String> {
    let file = data_dir.join(DRAIN_FILE);
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("{} is not a drain request: {e}", file.display()))
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

    #[test]
    fn drain_requests_round_trip_and_a_bad_one_is_reported() {
        let dir = pxs_test_support::scratch_dir("ss-drain");
        assert_eq!(read_drain(&dir), Ok(None));
        let req = DrainRequest {
            deadline: Some(1_764_039_000_000),
        };
        write_drain(&dir, &req).unwrap();
        assert_eq!(read_drain(&dir), Ok(Some(req)));
        assert!(remove_drain(&dir).unwrap());
        assert!(!remove_drain(&dir).unwrap());
        std::fs::write(dir.join(DRAIN_FILE), "{\"deadline\": \"soon\"}").unwrap();
        let e = read_drain(&dir).unwrap_err();
        assert!(e.contains("drain.json is not a drain request"), "{e}");
    }
}
