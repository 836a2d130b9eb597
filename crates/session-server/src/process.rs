//! Launching and stopping applications: each session's process is the leader of its own process
//! group (Unix) or runs in its own job object and console process group (Windows), so that stopping a session reaches every
//! process it started. Also the recovery of processes left behind by a session server that died.
//!
//! On Unix each session also has a *guard*: a small process (`pxs session-server guard`) whose
//! stdin is a pipe whose only writer is the session server. When the session server dies, however
//! it dies (SIGKILL included), the kernel closes that pipe; the guard reads end-of-file and kills
//! the session's process group and every process carrying the session's markers, then exits. When
//! the session ends normally the session server kills its guard. See docs/session-server.md.

use crate::supervisor::{Exit, PersistedSession, ProcessInfo, Spawn};
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use pxs_protocol::node::SessionId;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Every process a session server launches carries this variable, set to the session server's
/// data dir: after a crash, a process that escaped its group is still recognised as ours.
pub const MARKER_ENV: &str = "PXS_SESSION_SERVER_DATA_DIR";

/// How to stop a process tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM to the process group (Unix); on Windows `CTRL_BREAK_EVENT` to the session's
    /// console process group and `WM_CLOSE` to the tree's windows (see `win32`).
    Graceful,
    /// SIGKILL to the group; on Windows, terminate the job.
    Force,
}

/// A launched process: its ids and the way to stop it. Its exit is reported on the channel given
/// to [`launch`], once, after what was left of its tree has been killed.
#[derive(Debug)]
pub struct Launched {
    pub info: ProcessInfo,
    pub control: mpsc::UnboundedSender<Stop>,
}

/// Starts `spec`'s program (never through a shell) with stdout and stderr appended to its log.
/// With `guard` (the `pxs` binary; Unix only) the session's guard is started first, so that a
/// session never runs unguarded: if the guard cannot start, neither does the application.
pub fn launch(
    spec: &Spawn,
    marker: &str,
    guard: Option<&Path>,
    exits: mpsc::UnboundedSender<(SessionId, Exit)>,
) -> std::io::Result<Launched> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(std::io::Error::other("empty argument vector"));
    };
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let log_err = log.try_clone()?;
    let mut guard =
        match guard {
            Some(program) => Some(Guard::start(program, &spec.session, marker, &log).map_err(
                |e| std::io::Error::new(e.kind(), format!("cannot start the session's guard: {e}")),
            )?),
            None => None,
        };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(MARKER_ENV, marker)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    let mut wrap = CommandWrap::from(cmd);
    #[cfg(unix)]
    wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    {
        use windows::Win32::System::Threading::PROCESS_CREATION_FLAGS;
        // Its own console process group, so that CTRL_BREAK_EVENT reaches this session only.
        wrap.wrap(process_wrap::tokio::CreationFlags(PROCESS_CREATION_FLAGS(
            crate::win32::CREATE_NEW_PROCESS_GROUP,
        )));
        wrap.wrap(process_wrap::tokio::JobObject);
    }
    // With the job object: the job is closed, and its processes killed, if we die.
    wrap.wrap(KillOnDrop);
    let child = match wrap.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(g) = guard.take() {
                tokio::spawn(g.dismiss());
            }
            return Err(e);
        }
    };
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the process exited before its pid was read"))?;
    let info = ProcessInfo {
        pid,
        pgid: if cfg!(unix) { Some(pid) } else { None },
        start_time: proc_start_time(pid),
    };
    if let Some(g) = &mut guard {
        g.watch(pid);
    }
    let (control, commands) = mpsc::unbounded_channel();
    tokio::spawn(supervise(
        spec.session.clone(),
        child,
        guard,
        commands,
        exits,
    ));
    Ok(Launched { info, control })
}

/// A session's guard process (see the module docs) and the write end of its pipe.
#[derive(Debug)]
struct Guard {
    child: tokio::process::Child,
    pipe: std::io::PipeWriter,
}

impl Guard {
    /// Starts `<program> session-server guard --session <id> --marker <marker>` in a process group
    /// of its own (a Ctrl-C meant for the session server does not reach it), with a clean
    /// environment, stdin the read end of a new pipe, and its messages appended to the session's
    /// log. The write end stays here only: it is close-on-exec, so no other child inherits it.
    fn start(
        program: &Path,
        session: &SessionId,
        marker: &str,
        log: &std::fs::File,
    ) -> std::io::Result<Guard> {
        let (reader, pipe) = std::io::pipe()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(["session-server", "guard", "--session"])
            .arg(session.as_str())
            .arg("--marker")
            .arg(marker)
            .env_clear()
            .stdin(Stdio::from(reader))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.try_clone()?));
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd.spawn()?;
        Ok(Guard { child, pipe })
    }

    /// Tells the guard the session's process group (a line with the group id).
    fn watch(&mut self, pgid: u32) {
        use std::io::Write;
        // A few bytes into an empty pipe: never blocks. If the guard is already gone, its
        // exit is reaped when the session ends; the restart sweep remains.
        if let Err(e) = writeln!(self.pipe, "{pgid}") {
            warn!(pgid, %e, "the session's guard is gone: this session will not die with the session server");
        }
    }

    /// The session is over (or never started): the guard goes without touching anything.
    async fn dismiss(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        drop(self.pipe);
    }
}

/// What `pxs session-server guard` runs: reads stdin (the session server writes the session's
/// process group id on it, then nothing) until end-of-file, which means the session server is
/// gone, then kills the group and every process with this session's markers. Returns the pids it
/// signalled.
#[cfg(unix)]
pub fn run_guard(session: &str, marker: &str) -> Vec<u32> {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let pgid = match stdin.read_line(&mut line) {
        Ok(n) if n > 0 => line.trim().parse::<u32>().ok(),
        _ => None,
    };
    // Anything more is not expected; wait for end-of-file (or an error: same meaning).
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stdin, &mut rest);
    eprintln!(
        "pxs guard: the session server of {session} is gone: killing the session's processes (group {pgid:?})"
    );
    let mut killed = Vec::new();
    if let Some(g) = pgid {
        killed.extend(group_members(g).into_iter().map(|(pid, _)| pid));
        if let Ok(g) = i32::try_from(g) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(g),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Those that left the group (or the application, if the server died before telling us its
    // group) still carry the markers.
    for pid in session_processes(marker, session) {
        if let Ok(p) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !killed.contains(&pid) {
            killed.push(pid);
        }
    }
    killed
}

#[cfg(not(unix))]
pub fn run_guard(_session: &str, _marker: &str) -> Vec<u32> {
    // Job objects do this on Windows; no guard is started there.
    Vec::new()
}

/// Owns the child: waits for the group leader, applies stop commands, and when the leader is gone
/// kills the rest of its tree before reporting the exit.
async fn supervise(
    session: SessionId,
    mut child: Box<dyn ChildWrapper>,
    guard: Option<Guard>,
    mut commands: mpsc::UnboundedReceiver<Stop>,
    exits: mpsc::UnboundedSender<(SessionId, Exit)>,
) {
    let mut commands_open = true;
    let status = loop {
        tokio::select! {
            // The leader alone (the wrapper's own wait would also wait for every member of the
            // group, which a straggler could delay forever).
            status = child.inner_mut().wait() => break status,
            cmd = commands.recv(), if commands_open => match cmd {
                Some(stop) => {
                    match stop_tree(child.as_mut(), stop) {
                        Ok(()) => {}
                        // Already gone (ESRCH): its exit is on the way.
                        #[cfg(unix)]
                        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
                            debug!(session = %session, %e, "nothing left to signal");
                        }
                        Err(e) => warn!(session = %session, ?stop, %e, "stop request not delivered"),
                    }
                }
                None => commands_open = false,
            },
        }
    };
    // Whatever is left of the tree goes with its leader.
    if let Err(e) = child.start_kill() {
        debug!(session = %session, %e, "nothing left of the process tree to kill");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    if let Some(g) = guard {
        g.dismiss().await;
    }
    let exit = match status {
        Ok(s) => exit_of(s),
        Err(e) => {
            warn!(session = %session, %e, "waiting for the process failed");
            Exit {
                code: None,
                signal: None,
            }
        }
    };
    let _ = exits.send((session, exit));
}

fn stop_tree(child: &mut dyn ChildWrapper, stop: Stop) -> std::io::Result<()> {
    match stop {
        #[cfg(unix)]
        Stop::Graceful => child.signal(nix::sys::signal::Signal::SIGTERM as i32),
        #[cfg(windows)]
        Stop::Graceful => {
            let Some(pid) = child.id() else {
                return Ok(()); // already exited: nothing to ask
            };
            let sent = crate::win32::request_stop(pid);
            debug!(pid, ?sent, "graceful stop requested");
            if !sent.ctrl_break && sent.windows_closed == 0 {
                return Err(std::io::Error::other(format!(
                    "neither CTRL_BREAK_EVENT ({}) nor WM_CLOSE (no window) could be delivered; \
                     the tree is ended after node.kill_grace",
                    sent.ctrl_break_error.as_deref().unwrap_or("?")
                )));
            }
            Ok(())
        }
        #[cfg(not(any(unix, windows)))]
        Stop::Graceful => child.start_kill(),
        Stop::Force => child.start_kill(),
    }
}

/// `leader` and every process whose parent chain in `table` (`(pid, parent pid)` rows) leads to
/// it. Process ids are reused, so a parent link counts only if the child was created no earlier
/// than its parent (`created`, in any unit; unknown: the link does not count): a process whose
/// own parent died before its id went to one of ours is not ours. A row that names itself as
/// its parent (Windows' idle process) is not followed.
pub fn tree_of(
    leader: u32,
    table: &[(u32, u32)],
    created: impl Fn(u32) -> Option<u64>,
) -> std::collections::HashSet<u32> {
    let mut tree = std::collections::HashSet::from([leader]);
    // Each process's creation time is asked once (on Windows it opens the process).
    let mut times = std::collections::HashMap::new();
    let mut created_at = |pid: u32| *times.entry(pid).or_insert_with(|| created(pid));
    loop {
        let before = tree.len();
        for (pid, parent) in table {
            if pid == parent || tree.contains(pid) || !tree.contains(parent) {
                continue;
            }
            if let (Some(c), Some(p)) = (created_at(*pid), created_at(*parent))
                && c >= p
            {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

fn exit_of(s: std::process::ExitStatus) -> Exit {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            code: s.code(),
            signal: s.signal(),
        }
    }
    #[cfg(not(unix))]
    {
        Exit {
            code: s.code(),
            signal: None,
        }
    }
}

// ----- Linux /proc -----

/// `(process group, start time)` of a process, from `/proc/<pid>/stat` (Linux).
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: split after the
    // last ')'. Then field 3 (state) is index 0, pgrp (5) index 2, starttime (22) index 19.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// The start time of a process (Linux: clock ticks since boot), to recognise it after a restart.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// Every process (Linux) whose environment has `MARKER_ENV=<marker>`.
pub fn marked_processes(marker: &str) -> Vec<u32> {
    processes_with(&[format!("{MARKER_ENV}={marker}")])
}

/// Every process (Linux) of session `session` of the session server on `marker`: its
/// environment has both markers.
pub fn session_processes(marker: &str, session: &str) -> Vec<u32> {
    processes_with(&[
        format!("{MARKER_ENV}={marker}"),
        format!("PXS_SESSION_ID={session}"),
    ])
}

/// Every process but this one (Linux) whose environment has each of `vars` (`NAME=value`).
fn processes_with(vars: &[String]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                vars.iter()
                    .all(|v| env.split(|b| *b == 0).any(|var| var == v.as_bytes()))
            })
        })
        .collect()
}

/// Live members (not zombies) of process group `pgid` (Linux), with their start times.
#[cfg(unix)]
fn group_members(pgid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let (g, t) = proc_stat(pid)?;
            (g == pgid).then_some((pid, t))
        })
        .collect()
}

/// Waits (briefly, blocking) until none of `pids` is alive.
#[cfg(unix)]
fn wait_gone(pids: &[u32], limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills what is left of a session from a previous run: its process group, if it is still the
/// one we started (on Linux its members started no earlier than the recorded leader; the leader
/// itself, if alive, has the recorded start time). Returns the pids it signalled.
#[cfg(unix)]
pub fn kill_orphan(s: &PersistedSession) -> Vec<u32> {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let Some(p) = s.process else {
        return Vec::new();
    };
    let Some(pgid) = p.pgid else {
        return Vec::new();
    };
    let members = group_members(pgid);
    let ours: Vec<u32> = match p.start_time {
        Some(t0) if std::path::Path::new("/proc/self/stat").exists() => members
            .iter()
            .filter(|(pid, t)| if *pid == p.pid { *t == t0 } else { *t >= t0 })
            .map(|(pid, _)| *pid)
            .collect(),
        // No /proc: trust the group id.
        _ => vec![pgid],
    };
    if ours.is_empty() {
        debug!(session = %s.session_id, pgid, "no process of the orphaned session is left");
        return ours;
    }
    tracing::info!(session = %s.session_id, pgid, pids = ?ours, "killing the orphaned session's process group");
    if let Ok(pgid) = i32::try_from(pgid)
        && let Err(e) = killpg(Pid::from_raw(pgid), Signal::SIGKILL)
    {
        debug!(%e, "killpg");
    }
    wait_gone(&ours, Duration::from_secs(2));
    ours
}

/// On Windows the previous run's job objects were closed when it died, which killed their
/// processes (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`): nothing is left to do.
#[cfg(not(unix))]
pub fn kill_orphan(s: &PersistedSession) -> Vec<u32> {
    debug!(session = %s.session_id, "orphan processes died with their job object");
    Vec::new()
}

/// Kills every process carrying our marker (those that escaped their group, or were launched just
/// before a crash and never recorded). Linux only; elsewhere there is nothing to scan.
#[cfg(unix)]
pub fn kill_marked(marker: &str) -> Vec<u32> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pids = marked_processes(marker);
    for pid in &pids {
        if let Ok(p) = i32::try_from(*pid) {
            warn!(
                pid,
                "killing a process left by a previous run of this session server"
            );
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    wait_gone(&pids, Duration::from_secs(2));
    pids
}

#[cfg(not(unix))]
pub fn kill_marked(_marker: &str) -> Vec<u32> {
    Vec::new()
}

/// Whether a process exists (Linux: and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rfind(')')
            .and_then(|i| text[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tree_tests {
    use super::tree_of;
    use std::collections::HashSet;

    #[test]
    fn the_tree_of_a_leader_is_it_and_its_descendants_only() {
        // 0 is its own parent (Windows' idle process); 10 → 11 → 12 and 10 → 13 is the tree; 20
        // and its child 21 are another; 12's child comes before its parent in the table.
        let table = [
            (0, 0),
            (4, 0),
            (14, 12),
            (10, 4),
            (11, 10),
            (12, 11),
            (13, 10),
            (20, 4),
            (21, 20),
        ];
        // Created in the order of their ids.
        let created = |pid: u32| Some(u64::from(pid));
        assert_eq!(
            tree_of(10, &table, created),
            HashSet::from([10, 11, 12, 13, 14])
        );
        assert_eq!(tree_of(21, &table, created), HashSet::from([21]));
        // A cycle of reused ids ends.
        assert_eq!(
            tree_of(1, &[(1, 2), (2, 1)], |_| Some(0)),
            HashSet::from([1, 2])
        );
    }

    #[test]
    fn a_process_older_than_the_holder_of_its_parents_id_is_not_in_the_tree() {
        // 30 was started (at 5) by a process that had id 10 and died; the session's leader got
        // id 10 later (at 9). 31 is the leader's own child (at 12).
        let table = [(30, 10), (31, 10)];
        let created = |pid: u32| match pid {
            30 => Some(5),
            10 => Some(9),
            31 => Some(12),
            _ => None,
        };
        assert_eq!(tree_of(10, &table, created), HashSet::from([10, 31]));
        // A process whose creation time cannot be read (not ours to open) is left out.
        assert_eq!(tree_of(10, &table, |_| None), HashSet::from([10]));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn orphan(process: Option<ProcessInfo>) -> PersistedSession {
        PersistedSession {
            session_id: "ses_t".parse().expect("id"),
            application_id: "a".parse().expect("id"),
            port: 1,
            gpu: None,
            process,
            started_at: 0,
            ready: true,
        }
    }

    #[test]
    fn an_orphaned_group_is_killed_only_if_it_is_still_ours() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let real = ProcessInfo {
            pid,
            pgid: Some(pid),
            start_time: proc_start_time(pid),
        };
        assert!(real.start_time.is_some());
        // A recorded start time that does not match: a reused pid, left alone.
        let stale = ProcessInfo {
            start_time: real.start_time.map(|t| t + 1),
            ..real
        };
        assert!(kill_orphan(&orphan(Some(stale))).is_empty());
        assert!(alive(pid));
        assert_eq!(kill_orphan(&orphan(Some(real))), vec![pid]);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(kill_orphan(&orphan(None)).is_empty(), "never spawned");
    }

    #[test]
    fn marked_processes_are_found_by_their_environment() {
        let marker = format!("/tmp/pxs-marker-test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_ENV, &marker)
            .spawn()
            .unwrap();
        let pid = child.id();
        // The kernel releases a vfork parent before it fills in the new image's environment, so
        // /proc/<pid>/environ can be empty for a moment right after spawn returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while marked_processes(&marker).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(marked_processes(&marker), vec![pid]);
        assert!(marked_processes(&format!("{marker}-other")).is_empty());
        assert_eq!(kill_marked(&marker), vec![pid]);
        child.wait().unwrap();
    }
}
