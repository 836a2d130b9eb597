//! The supervisor: a sans-IO core that decides everything about the sessions of one node.
//!
//! Inputs come in with the time ([`Now`]): commands from the coordinator (`start_session`,
//! `stop_session`, `drain`), what the shell observed (the process spawned, exited; the streamer
//! identified; players joined, left, were active; the link came up, went down, acknowledged
//! events) and [`Supervisor::handle_timeout`]. Outputs ([`Output`]) are queued for the shell to
//! act on with [`Supervisor::poll_output`]; [`Supervisor::poll_timeout`] says when to call
//! `handle_timeout` next. The core never reads the clock, spawns, kills or touches a socket, so
//! every timeout (start, idle, empty, max duration, kill grace) is tested with a fake clock.
//!
//! It also owns the node's event queue: every session event gets the next sequence number, is
//! persisted, sent while the link is up, and kept until the coordinator acknowledges it
//! (see `pxs_protocol::node`).
//!
//! A session's states (only this module moves them):
//!
//! ```text
//!  start_session ──(rejected: unknown app, full, draining, no port/GPU)──▶ ended{rejected}
//!       │
//!       ▼  Spawn (loopback port, GPU)              spawn failed ──▶ ended{spawn_failed}
//!   Starting ──streamer identified──▶ Ready
//!       │                               │
//!       │ start_timeout, stop, drain,   │ stop, drain, shutdown, idle, empty,
//!       │ shutdown                      │ max_duration
//!       ▼                               ▼
//!   Stopping{reason} ── Kill{graceful} ── kill_grace passes ──▶ Kill{forced}
//!       │
//!       │ process exited                       (Starting or Ready) process exited
//!       ▼                                                 │
//!   ended{reason, exit_code, signal} ◀────────────────────┘  reason exited | crashed
//!   (Teardown: signalling stopped, port and GPU slot released; session forgotten)
//! ```

use crate::config::Application;
use pxs_protocol::ice::IceSettings;
use pxs_protocol::node::{
    ApplicationId, ApplicationInfo, EndReason, Ended, GpuUse, Heartbeat, NodeToCoordinator,
    ObservedState, SequencedEvent, SessionEvent, SessionEventKind, SessionId, SessionStatus,
    StartOptions, Token, UnixMillis,
};
use pxs_protocol::secret::redact_query;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The time, as the shell read it: a monotonic instant for deadlines and the wall clock for the
/// timestamps of events.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub wall: UnixMillis,
}

/// How the supervisor is set up (from the node's config).
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Where browsers reach the node; a session's player URL is `<public_url>/sessions/<id>/ws`.
    pub public_url: String,
    pub max_sessions: u32,
    /// Loopback ports for the sessions' streamer listeners.
    pub streamer_ports: RangeInclusive<u16>,
    /// Between the graceful stop and killing the process tree.
    pub kill_grace: Duration,
    /// GPUs found on the node (0: none; sessions then get no GPU and no GPU limit applies).
    pub gpus: u32,
    /// Sessions per GPU; 0 = no limit.
    pub max_sessions_per_gpu: u32,
    /// Per-session log files go to `<logs_dir>/<session id>.log`.
    pub logs_dir: PathBuf,
}

/// The process of a session, as spawned by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Its process group (Unix; the group the shell kills), if any.
    #[serde(default)]
    pub pgid: Option<u32>,
    /// The OS's start time of the process (Linux: clock ticks since boot, from /proc), to tell
    /// it from a later process that reuses the pid.
    #[serde(default)]
    pub start_time: Option<u64>,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What the shell must launch. Its `Debug` hides the credentials (the tokens, and the
/// streamer credential inside `-PixelStreamingURL`), so logging a `Spawn` leaks nothing.
#[derive(Clone, PartialEq)]
pub struct Spawn {
    pub session: SessionId,
    /// Program and arguments; never given to a shell.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// stdout and stderr go here.
    pub log: PathBuf,
    /// The session's streamer listener: `127.0.0.1:<port>`.
    pub port: u16,
    /// Players must present this token to join; `None`: nobody may join.
    pub player_token: Option<Token>,
    /// The session's streamer credential: the application gets it in its `-PixelStreamingURL`
    /// (`?token=`) and the streamer listener admits no WebSocket without it. Never logged.
    pub streamer_credential: Token,
    /// Players per streamer; 0 = unlimited.
    pub max_players: u32,
    pub gpu: Option<u32>,
    /// The STUN and TURN servers the coordinator gave (`start_session.options.ice`); the node's
    /// own `[ice]`, if set, is used instead. Holds the TURN secret: never logged.
    pub ice: Option<IceSettings>,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let argv: Vec<String> = self.argv.iter().map(|a| redact_query(a)).collect();
        f.debug_struct("Spawn")
            .field("session", &self.session)
            .field("argv", &argv)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("log", &self.log)
            .field("port", &self.port)
            .field("player_token", &self.player_token)
            .field("ice", &self.ice.as_ref().map(|i| &i.urls))
            .field("streamer_credential", &self.streamer_credential)
            .field("max_players", &self.max_players)
            .field("gpu", &self.gpu)
            .finish()
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Start the session's signalling and streamer listener on `port`, then the process. Report
    /// back with `spawned`, `spawn_failed` or `port_unavailable`.
    Spawn(Box<Spawn>),
    /// Stop the session's process tree: gracefully (SIGTERM to the group) or by force (kill the
    /// group or job). Report back with `process_exited`.
    Kill {
        session: SessionId,
        pid: Option<u32>,
        graceful: bool,
    },
    /// A process left running by a previous run of the session server: kill its tree now.
    KillOrphan(PersistedSession),
    /// The session is over: stop its signalling, close its listener, forget its process.
    Teardown { session: SessionId },
    /// Send to the coordinator (only produced while the link is up).
    Send(NodeToCoordinator),
    /// Write this to the data dir (atomically) before acting on the outputs that follow.
    Persist(PersistedState),
    /// Tell every user of the session (on their signalling sockets).
    Notify { session: SessionId, notice: Notice },
}

/// What the users of a session are told about its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// It ends at `ends_at` for `reason` (`Idle`: unless a user is active before then;
    /// `MaxDuration`: whatever happens).
    Warning {
        reason: EndReason,
        ends_at: UnixMillis,
    },
    /// The warning for `reason` no longer holds (a user was active).
    WarningCleared { reason: EndReason },
    /// It is stopping, for `reason`.
    Ended { reason: EndReason },
}

/// How long before an idle or max-duration end its users are warned: a minute, or half the
/// limit when that is shorter.
pub const WARNING_LEAD: Duration = Duration::from_secs(60);

fn warning_lead(limit: Duration) -> Duration {
    (limit / 2).min(WARNING_LEAD)
}

/// What survives a crash of the session server: the sessions it runs (to find their processes)
/// and the events the coordinator has not acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// The sequence number of the next event.
    pub next_seq: u64,
    pub unacked: Vec<SequencedEvent>,
    pub sessions: Vec<PersistedSession>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedSession {
    pub session_id: SessionId,
    pub application_id: ApplicationId,
    pub port: u16,
    #[serde(default)]
    pub gpu: Option<u32>,
    /// `None` until the process is spawned.
    #[serde(default)]
    pub process: Option<ProcessInfo>,
    pub started_at: UnixMillis,
    #[serde(default)]
    pub ready: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Launched (or being launched); waiting for the streamer to identify.
    Starting,
    Ready,
    /// Stop sent; the tree is killed at `kill_at` if the process has not exited by then.
    Stopping {
        reason: EndReason,
        kill_at: Instant,
        forced: bool,
    },
}

/// The limits a session runs under: the coordinator's (`start_session.options`) where it gave
/// them, else its application's. `None`: never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    /// Players per streamer; 0 = unlimited.
    max_players: u32,
    idle_timeout: Option<Duration>,
    empty_timeout: Option<Duration>,
    max_duration: Option<Duration>,
}

/// Longer limits are cut to this, so that a deadline (an `Instant` plus the limit) cannot
/// overflow whatever a coordinator or a config asks for. Ten years is "never" for a session.
const LONGEST_LIMIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Limits {
    /// The effective limits of a session of `app` started with `options`.
    ///
    /// `max_players`, `idle_timeout` and `empty_timeout` from the options replace the
    /// application's (0: unlimited / never). The application's `max_duration` is the operator's
    /// cap: the options can shorten it, never lengthen or lift it (their 0 means "no limit from
    /// the coordinator", so the application's applies).
    fn effective(app: &Application, options: &StartOptions) -> Limits {
        let secs = |v: u64| (v > 0).then(|| Duration::from_secs(v));
        let max_duration = match (options.max_duration.and_then(secs), app.max_duration) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        let cut = |d: Option<Duration>| d.map(|d| d.min(LONGEST_LIMIT));
        Limits {
            max_players: options.max_players.unwrap_or(app.max_players),
            idle_timeout: cut(options.idle_timeout.map_or(app.idle_timeout, secs)),
            empty_timeout: cut(options.empty_timeout.map_or(app.empty_timeout, secs)),
            max_duration: cut(max_duration),
        }
    }
}

#[derive(Debug)]
struct Session {
    app: Arc<Application>,
    /// From `start_session`; not persisted (a restarted node ends its sessions).
    ice: Option<IceSettings>,
    limits: Limits,
    state: State,
    port: u16,
    gpu: Option<u32>,
    token: Option<Token>,
    /// See [`Spawn::streamer_credential`].
    credential: Token,
    res: (u32, u32),
    process: Option<ProcessInfo>,
    started: Instant,
    started_wall: UnixMillis,
    ready: bool,
    /// Connected players and when each was last active.
    players: BTreeMap<String, Instant>,
    /// Since when no player is connected (counted from ready).
    empty_since: Option<Instant>,
    /// Its users were warned of the idle end (until a user is active again).
    warned_idle: bool,
    /// Its users were warned of the max-duration end.
    warned_max: bool,
    port_attempts: u32,
}

/// What a session's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Stop it, for this reason.
    Stop(EndReason),
    /// Warn its users that it stops for this reason at the given time.
    Warn(EndReason, Instant),
    /// Its stop's grace is over: kill its process tree.
    Kill,
}

impl Session {
    /// Its deadlines, in the order they win when several have passed: the one place that says
    /// when a session times out (`poll_timeout` takes the earliest, `handle_timeout` acts on the
    /// first that is due).
    fn deadlines(&self) -> impl Iterator<Item = (Instant, Due)> {
        let mut out: [Option<(Instant, Due)>; 5] = [None; 5];
        match self.state {
            State::Starting => {
                out[0] = Some((
                    self.started + self.app.start_timeout,
                    Due::Stop(EndReason::StartTimeout),
                ));
            }
            State::Ready => {
                out[0] = self
                    .limits
                    .max_duration
                    .map(|d| (self.started + d, Due::Stop(EndReason::MaxDuration)));
                out[1] = self
                    .limits
                    .idle_timeout
                    .zip(self.players.values().max())
                    .map(|(idle, last)| (*last + idle, Due::Stop(EndReason::Idle)));
                out[2] = self
                    .limits
                    .empty_timeout
                    .zip(self.empty_since)
                    .map(|(empty, since)| (since + empty, Due::Stop(EndReason::Empty)));
                // The warnings come after the stops: a stop due at the same time wins.
                if !self.warned_max {
                    out[3] = self.limits.max_duration.map(|d| {
                        let end = self.started + d;
                        (
                            end - warning_lead(d),
                            Due::Warn(EndReason::MaxDuration, end),
                        )
                    });
                }
                if !self.warned_idle {
                    out[4] = self.idle_deadline().map(|(end, idle)| {
                        (end - warning_lead(idle), Due::Warn(EndReason::Idle, end))
                    });
                }
            }
            State::Stopping {
                kill_at,
                forced: false,
                ..
            } => out[0] = Some((kill_at, Due::Kill)),
            State::Stopping { forced: true, .. } => {}
        }
        out.into_iter().flatten()
    }

    /// When the session ends for idleness as things stand (the latest activity of any player
    /// plus the idle timeout), and the timeout; `None` without players or without the limit.
    fn idle_deadline(&self) -> Option<(Instant, Duration)> {
        let idle = self.limits.idle_timeout?;
        let last = self.players.values().max()?;
        Some((*last + idle, idle))
    }

    /// After a change of players: the idle warning no longer holds once the end it announced
    /// has moved out of the warning's lead (someone was active), or is gone.
    fn idle_warning_cleared(&mut self, now: Instant) -> bool {
        if !self.warned_idle {
            return false;
        }
        let holds = self
            .idle_deadline()
            .is_some_and(|(end, idle)| now >= end - warning_lead(idle));
        if holds {
            return false;
        }
        self.warned_idle = false;
        true
    }
}

/// Who asked the node to drain. Each drain is undone by its own `resume`; the node drains while
/// any of them asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainBy {
    /// `drain_gracefully` (or `drain`) on the node link; `resume` there undoes it.
    Coordinator,
    /// The machine's operator: `pxs session-server drain` (a file in the data dir).
    Operator,
}

/// Ports tried for one session before it fails.
const MAX_PORT_ATTEMPTS: u32 = 5;
/// A port found in use by someone else is not offered again for this long.
const PORT_QUARANTINE: Duration = Duration::from_secs(60);

/// The supervision core of one node.
#[derive(Debug)]
pub struct Supervisor {
    config: SupervisorConfig,
    apps: BTreeMap<ApplicationId, Arc<Application>>,
    sessions: BTreeMap<SessionId, Session>,
    ports_in_use: BTreeSet<u16>,
    quarantined: HashMap<u16, Instant>,
    /// The drains in force, each with the time its sessions are stopped (`None`: never).
    drains: BTreeMap<DrainBy, Option<Instant>>,
    shutting_down: bool,
    // The event queue.
    next_seq: u64,
    unacked: VecDeque<SequencedEvent>,
    link_up: bool,
    outputs: VecDeque<Output>,
    dirty: bool,
}

impl Supervisor {
    /// A supervisor for a node whose previous run left `previous` behind (`None`: a first
    /// start). Sessions found there are orphans: their processes are killed
    /// ([`Output::KillOrphan`]) and they are reported `ended{node_restart}`; unacknowledged
    /// events are kept, in order, with their numbers.
    pub fn new(
        config: SupervisorConfig,
        apps: Vec<Application>,
        previous: Option<PersistedState>,
        now: Now,
    ) -> Supervisor {
        let mut s = Supervisor {
            config,
            apps: BTreeMap::new(),
            sessions: BTreeMap::new(),
            ports_in_use: BTreeSet::new(),
            quarantined: HashMap::new(),
            drains: BTreeMap::new(),
            shutting_down: false,
            next_seq: 1,
            unacked: VecDeque::new(),
            link_up: false,
            outputs: VecDeque::new(),
            dirty: true,
        };
        s.set_apps(apps);
        if let Some(prev) = previous {
            s.next_seq = prev.next_seq.max(1);
            s.unacked = prev.unacked.into();
            for orphan in prev.sessions {
                info!(session = %orphan.session_id, process = ?orphan.process, "orphaned session from a previous run: killing its processes");
                let ended = Ended {
                    reason: EndReason::NodeRestart,
                    failed: !orphan.ready,
                    exit_code: None,
                    signal: None,
                    detail: None,
                };
                let id = orphan.session_id.clone();
                s.outputs.push_back(Output::KillOrphan(orphan));
                s.report(now, id, SessionEventKind::Ended(ended));
            }
        }
        s
    }

    // ----- outputs -----

    /// The next thing for the shell to do. A pending [`Output::Persist`] comes first, so the
    /// state is on disk before any event it numbers is sent or any process it records is acted
    /// on.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.dirty {
            self.dirty = false;
            return Some(Output::Persist(self.persisted()));
        }
        self.outputs.pop_front()
    }

    /// When `handle_timeout` must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(at) = self.drain_deadline()
            && self
                .sessions
                .values()
                .any(|s| !matches!(s.state, State::Stopping { .. }))
        {
            consider(at);
        }
        for s in self.sessions.values() {
            for (at, _) in s.deadlines() {
                consider(at);
            }
        }
        next
    }

    // ----- commands from the coordinator -----

    pub fn start_session(
        &mut self,
        now: Now,
        id: SessionId,
        app_id: &ApplicationId,
        options: StartOptions,
    ) {
        if self.sessions.contains_key(&id) {
            debug!(session = %id, "start_session for a running session ignored");
            return;
        }
        let reject = |why: String| Ended {
            reason: EndReason::Rejected,
            failed: true,
            exit_code: None,
            signal: None,
            detail: Some(why),
        };
        let Some(app) = self.apps.get(app_id).cloned() else {
            let e = reject(format!("unknown application `{app_id}`"));
            return self.report(now, id, SessionEventKind::Ended(e));
        };
        if self.is_draining() {
            let e = reject("the node is draining".into());
            return self.report(now, id, SessionEventKind::Ended(e));
        }
        if self.sessions.len() >= self.config.max_sessions as usize {
            let e = reject(format!(
                "the node is full ({} sessions)",
                self.config.max_sessions
            ));
            return self.report(now, id, SessionEventKind::Ended(e));
        }
        let gpu = if self.config.gpus > 0 {
            match self.pick_gpu() {
                Some(g) => Some(g),
                None => {
                    let e = reject("every GPU has its maximum of sessions".into());
                    return self.report(now, id, SessionEventKind::Ended(e));
                }
            }
        } else {
            None
        };
        let Some(port) = self.pick_port(now.mono) else {
            let e = reject("no free streamer port".into());
            return self.report(now, id, SessionEventKind::Ended(e));
        };
        let Some(credential) = new_credential() else {
            let e = reject("the OS random number generator failed".into());
            return self.report(now, id, SessionEventKind::Ended(e));
        };
        self.ports_in_use.insert(port);
        let res = (
            options.res_x.unwrap_or(app.res_x),
            options.res_y.unwrap_or(app.res_y),
        );
        let limits = Limits::effective(&app, &options);
        let session = Session {
            app,
            limits,
            state: State::Starting,
            port,
            gpu,
            token: options.player_token,
            ice: options.ice.map(|b| *b),
            credential,
            res,
            process: None,
            started: now.mono,
            started_wall: now.wall,
            ready: false,
            players: BTreeMap::new(),
            empty_since: None,
            warned_idle: false,
            warned_max: false,
            port_attempts: 1,
        };
        info!(session = %id, application = %app_id, port, ?gpu, ?limits, "starting session");
        let spawn = self.spawn_spec(&id, &session);
        self.sessions.insert(id, session);
        self.dirty = true;
        self.outputs.push_back(Output::Spawn(Box::new(spawn)));
    }

    pub fn stop_session(&mut self, now: Now, id: &SessionId) {
        if !self.sessions.contains_key(id) {
            debug!(session = %id, "stop_session for an unknown session ignored");
            return;
        }
        self.stop(now, id, EndReason::Stopped);
    }

    /// `by` asks the node to drain: it takes no new sessions, and stops those still running at
    /// `stop_at` ([`EndReason::Drained`]; `None`: never, they end by themselves). A second call
    /// by the same asker replaces its deadline; with two askers the earlier deadline applies.
    pub fn drain(&mut self, now: Now, by: DrainBy, stop_at: Option<Instant>) {
        if self.drains.get(&by) != Some(&stop_at) {
            let stop_in = stop_at.map(|t| t.saturating_duration_since(now.mono));
            info!(
                ?by,
                ?stop_in,
                sessions = self.sessions.len(),
                "draining: taking no new sessions"
            );
        }
        self.drains.insert(by, stop_at);
        self.stop_drained(now);
    }

    /// Undoes the drain `by` asked for; the node takes sessions again unless another drain is
    /// in force.
    pub fn resume(&mut self, by: DrainBy) {
        if self.drains.remove(&by).is_some() {
            info!(?by, still_draining = self.is_draining(), "drain undone");
        }
    }

    /// The drain `by` asked for, if any, with its deadline (for tests).
    #[cfg(test)]
    pub fn drain_of(&self, by: DrainBy) -> Option<Option<Instant>> {
        self.drains.get(&by).copied()
    }

    /// The session server is stopping: stop every session ([`EndReason::NodeShutdown`]); the
    /// shell waits until [`Supervisor::is_empty`].
    pub fn shutdown(&mut self, now: Now) {
        self.shutting_down = true;
        self.stop_all(now, EndReason::NodeShutdown);
    }

    /// Replaces the applications (a reload). Running sessions keep the definition they started
    /// with. Re-advertised at once when the link is up.
    pub fn set_applications(&mut self, apps: Vec<Application>) {
        self.set_apps(apps);
        if self.link_up {
            self.outputs
                .push_back(Output::Send(NodeToCoordinator::Applications {
                    applications: self.applications(),
                }));
        }
    }

    // ----- what the shell observed -----

    /// The process of `id` is running.
    pub fn spawned(&mut self, now: Now, id: &SessionId, process: ProcessInfo) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.process = Some(process);
        let (app, gpu, state) = (s.app.id.clone(), s.gpu, s.state);
        self.dirty = true;
        self.report(
            now,
            id.clone(),
            SessionEventKind::Starting {
                application_id: app,
                pid: process.pid,
                gpu,
            },
        );
        if let State::Stopping { .. } = state {
            // Stopped while it was being launched.
            self.kill(id, true);
        }
    }

    /// The process of `id` could not be launched.
    pub fn spawn_failed(&mut self, now: Now, id: &SessionId, detail: String) {
        if self.sessions.contains_key(id) {
            warn!(session = %id, %detail, "spawn failed");
            self.end(
                now,
                id,
                Ended {
                    reason: EndReason::SpawnFailed,
                    failed: true,
                    exit_code: None,
                    signal: None,
                    detail: Some(detail),
                },
            );
        }
    }

    /// The session's streamer port is taken by someone else: try another.
    pub fn port_unavailable(&mut self, now: Now, id: &SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let (old, attempts) = (s.port, s.port_attempts);
        warn!(session = %id, port = old, "streamer port in use by another program");
        self.quarantined.insert(old, now.mono + PORT_QUARANTINE);
        self.ports_in_use.remove(&old);
        let next = if attempts < MAX_PORT_ATTEMPTS {
            self.pick_port(now.mono)
        } else {
            None
        };
        let Some(port) = next else {
            return self.spawn_failed(
                now,
                id,
                format!("no usable streamer port after {attempts} attempts"),
            );
        };
        self.ports_in_use.insert(port);
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.port = port;
        s.port_attempts += 1;
        let spawn = match self.sessions.get(id) {
            Some(s) => self.spawn_spec(id, s),
            None => return,
        };
        self.dirty = true;
        self.outputs.push_back(Output::Spawn(Box::new(spawn)));
    }

    /// The session's process (the group leader) ended. The shell has killed what was left of
    /// its tree.
    pub fn process_exited(&mut self, now: Now, id: &SessionId, exit: Exit) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let ended = match s.state {
            State::Stopping { reason, .. } => Ended {
                reason,
                failed: matches!(
                    reason,
                    EndReason::StartTimeout | EndReason::SpawnFailed | EndReason::Rejected
                ),
                exit_code: exit.code,
                signal: exit.signal,
                detail: None,
            },
            State::Starting | State::Ready => {
                let crashed = exit.signal.is_some();
                Ended {
                    reason: if crashed {
                        EndReason::Crashed
                    } else {
                        EndReason::Exited
                    },
                    failed: crashed || exit.code != Some(0) || !s.ready,
                    exit_code: exit.code,
                    signal: exit.signal,
                    detail: None,
                }
            }
        };
        info!(session = %id, reason = ?ended.reason, code = ?exit.code, signal = ?exit.signal, "session ended");
        self.end(now, id, ended);
    }

    /// A streamer identified on the session's signalling: the session is ready.
    pub fn streamer_identified(&mut self, now: Now, id: &SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.state != State::Starting {
            return;
        }
        s.state = State::Ready;
        s.ready = true;
        if s.players.is_empty() {
            s.empty_since = Some(now.mono);
        }
        self.dirty = true;
        let player_url = self.player_url(id);
        info!(session = %id, "session ready");
        self.report(now, id.clone(), SessionEventKind::Ready { player_url });
    }

    pub fn player_joined(&mut self, now: Now, id: &SessionId, player: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.players.insert(player.to_owned(), now.mono);
            s.empty_since = None;
        }
        self.check_idle_warning(now, id);
    }

    pub fn player_left(&mut self, now: Now, id: &SessionId, player: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.players.remove(player);
            if s.players.is_empty() && s.ready {
                s.empty_since = Some(now.mono);
            }
        }
        self.check_idle_warning(now, id);
    }

    pub fn player_activity(&mut self, now: Now, id: &SessionId, player: &str) {
        if let Some(s) = self.sessions.get_mut(id)
            && let Some(at) = s.players.get_mut(player)
        {
            *at = now.mono;
        }
        self.check_idle_warning(now, id);
    }

    /// Tells the users when the idle warning they got no longer holds.
    fn check_idle_warning(&mut self, now: Now, id: &SessionId) {
        if let Some(s) = self.sessions.get_mut(id)
            && s.idle_warning_cleared(now.mono)
        {
            debug!(session = %id, "a user is active: idle warning cleared");
            self.outputs.push_back(Output::Notify {
                session: id.clone(),
                notice: Notice::WarningCleared {
                    reason: EndReason::Idle,
                },
            });
        }
    }

    /// The link is up (`welcome`) and the coordinator has processed every event up to `acked`:
    /// resend the rest, in order, numbered so that the first one is `acked + 1` (see
    /// [`Numbering`]). Until this is called on a connection, nothing is sent on it, heartbeats
    /// included.
    pub fn link_up(&mut self, acked: u64) {
        self.link_up = true;
        let numbering = Numbering::of(acked, self.last_acked(), self.next_seq - 1);
        match numbering {
            Numbering::InStep => self.ack(acked),
            Numbering::NodeBehind | Numbering::CoordinatorBehind => {
                let first = acked + 1;
                warn!(
                    acked,
                    node_last_acked = self.last_acked(),
                    node_last_seq = self.next_seq - 1,
                    pending = self.unacked.len(),
                    case = numbering.describe(),
                    "event numbers out of step with the coordinator: renumbering the pending events from {first}"
                );
                for (i, e) in self.unacked.iter_mut().enumerate() {
                    e.seq = first + i as u64;
                }
                self.next_seq = first + self.unacked.len() as u64;
                self.dirty = true;
            }
        }
        for e in &self.unacked {
            self.outputs
                .push_back(Output::Send(NodeToCoordinator::Event(e.clone())));
        }
    }

    /// The highest sequence number the coordinator has acknowledged, as far as this node knows:
    /// acknowledgements are cumulative and events are numbered without gaps, so it is the one
    /// before the first unacknowledged event (or the last event when none is pending).
    fn last_acked(&self) -> u64 {
        self.unacked.front().map_or(self.next_seq, |e| e.seq) - 1
    }

    /// A heartbeat with the current state, if the link is up. It goes through the same queue as
    /// the events, so a heartbeat is never sent on a connection before `welcome` nor before the
    /// events replayed after it: a coordinator reconciles at the first heartbeat after a
    /// reconnect and must by then have the node's last word on every session.
    pub fn heartbeat(&mut self, now: Now, gpus: Vec<GpuUse>) {
        if !self.link_up {
            return;
        }
        self.outputs
            .push_back(Output::Send(NodeToCoordinator::Heartbeat(Heartbeat {
                at: now.wall,
                sessions: self.statuses(),
                free_slots: self.free_slots(),
                gpus,
                draining: self.is_draining(),
            })));
    }

    pub fn link_down(&mut self) {
        self.link_up = false;
    }

    /// The coordinator has processed every event up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        let before = self.unacked.len();
        while self.unacked.front().is_some_and(|e| e.seq <= seq) {
            self.unacked.pop_front();
        }
        if self.unacked.len() != before {
            self.dirty = true;
        }
    }

    /// Acts on every deadline that has passed.
    pub fn handle_timeout(&mut self, now: Now) {
        self.quarantined.retain(|_, until| *until > now.mono);
        let mut stops = Vec::new();
        let mut kills = Vec::new();
        for (id, s) in &mut self.sessions {
            // The first due in the order `deadlines` gives them.
            let due = s.deadlines().find(|(at, _)| now.mono >= *at);
            match due {
                Some((_, Due::Stop(reason))) => stops.push((id.clone(), reason)),
                Some((_, Due::Warn(reason, end))) => {
                    match reason {
                        EndReason::Idle => s.warned_idle = true,
                        _ => s.warned_max = true,
                    }
                    let left = end.saturating_duration_since(now.mono);
                    let ends_at =
                        now.wall + u64::try_from(left.as_millis()).unwrap_or(u64::MAX / 2);
                    info!(session = %id, ?reason, ends_in = ?left, "warning the users of the end");
                    self.outputs.push_back(Output::Notify {
                        session: id.clone(),
                        notice: Notice::Warning { reason, ends_at },
                    });
                }
                Some((_, Due::Kill)) => {
                    if let State::Stopping {
                        reason, kill_at, ..
                    } = s.state
                    {
                        s.state = State::Stopping {
                            reason,
                            kill_at,
                            forced: true,
                        };
                    }
                    kills.push(id.clone());
                }
                None => {}
            }
        }
        for (id, reason) in stops {
            info!(session = %id, ?reason, "stopping session");
            self.stop(now, &id, reason);
        }
        self.stop_drained(now);
        for id in kills {
            warn!(session = %id, "still running after the grace period: killing its process tree");
            self.kill(&id, false);
        }
    }

    // ----- snapshots -----

    /// No session is running (after `shutdown`: the shell may exit).
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// No new sessions: a drain is in force, or the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.shutting_down || !self.drains.is_empty()
    }

    /// Every unacknowledged event has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }

    pub fn statuses(&self) -> Vec<SessionStatus> {
        self.sessions
            .iter()
            .map(|(id, s)| SessionStatus {
                session_id: id.clone(),
                application_id: s.app.id.clone(),
                state: match s.state {
                    State::Starting => ObservedState::Starting,
                    State::Ready => ObservedState::Ready,
                    State::Stopping { .. } => ObservedState::Stopping,
                },
                players: s.players.len() as u32,
                gpu: s.gpu,
                started_at: s.started_wall,
            })
            .collect()
    }

    pub fn free_slots(&self) -> u32 {
        if self.is_draining() {
            return 0;
        }
        let by_count = self
            .config
            .max_sessions
            .saturating_sub(self.sessions.len() as u32);
        if self.config.gpus > 0 && self.config.max_sessions_per_gpu > 0 {
            let gpu_free: u32 = (0..self.config.gpus)
                .map(|g| {
                    self.config
                        .max_sessions_per_gpu
                        .saturating_sub(self.gpu_sessions(g))
                })
                .sum();
            by_count.min(gpu_free)
        } else {
            by_count
        }
    }

    /// Sessions on each GPU, by index.
    pub fn gpu_sessions(&self, gpu: u32) -> u32 {
        self.sessions
            .values()
            .filter(|s| s.gpu == Some(gpu))
            .count() as u32
    }

    pub fn applications(&self) -> Vec<ApplicationInfo> {
        self.apps.values().map(|a| a.info()).collect()
    }

    /// The session's streamer port, if it is running.
    pub fn port_of(&self, id: &SessionId) -> Option<u16> {
        self.sessions.get(id).map(|s| s.port)
    }

    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    // ----- internals -----

    fn set_apps(&mut self, apps: Vec<Application>) {
        self.apps = apps
            .into_iter()
            .map(|a| (a.id.clone(), Arc::new(a)))
            .collect();
    }

    fn persisted(&self) -> PersistedState {
        PersistedState {
            next_seq: self.next_seq,
            unacked: self.unacked.iter().cloned().collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(id, s)| PersistedSession {
                    session_id: id.clone(),
                    application_id: s.app.id.clone(),
                    port: s.port,
                    gpu: s.gpu,
                    process: s.process,
                    started_at: s.started_wall,
                    ready: s.ready,
                })
                .collect(),
        }
    }

    fn player_url(&self, id: &SessionId) -> String {
        let base = self.config.public_url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!("{base}/sessions/{id}/ws")
    }

    fn pick_port(&self, now: Instant) -> Option<u16> {
        self.config.streamer_ports.clone().find(|p| {
            !self.ports_in_use.contains(p) && self.quarantined.get(p).is_none_or(|t| *t <= now)
        })
    }

    /// The least loaded GPU with room, lowest index first.
    fn pick_gpu(&self) -> Option<u32> {
        let max = self.config.max_sessions_per_gpu;
        (0..self.config.gpus)
            .map(|g| (self.gpu_sessions(g), g))
            .filter(|(n, _)| max == 0 || *n < max)
            .min()
            .map(|(_, g)| g)
    }

    fn spawn_spec(&self, id: &SessionId, s: &Session) -> Spawn {
        let app = &s.app;
        let mut argv = Vec::with_capacity(app.args.len() + 6);
        argv.push(app.executable.to_string_lossy().into_owned());
        argv.extend(app.args.iter().cloned());
        // UE passes the URL through unchanged, query included, and so does `pxs streamer`.
        argv.push(format!(
            "-PixelStreamingURL=ws://127.0.0.1:{}/?token={}",
            s.port, s.credential.0
        ));
        argv.push(format!("-PixelStreamingID={id}"));
        argv.push(format!("-ResX={}", s.res.0));
        argv.push(format!("-ResY={}", s.res.1));
        let mut env: Vec<(String, String)> = app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("PXS_SESSION_ID".into(), id.to_string()));
        if let Some(g) = s.gpu {
            argv.push(format!("-graphicsadapter={g}"));
            env.push(("CUDA_VISIBLE_DEVICES".into(), g.to_string()));
            env.push(("PXS_GPU".into(), g.to_string()));
        }
        Spawn {
            session: id.clone(),
            argv,
            env,
            cwd: app.working_dir.clone(),
            log: self.config.logs_dir.join(format!("{id}.log")),
            port: s.port,
            player_token: s.token.clone(),
            streamer_credential: s.credential.clone(),
            max_players: s.limits.max_players,
            gpu: s.gpu,
            ice: s.ice.clone(),
        }
    }

    /// When the drains stop the sessions still running: the earliest deadline of those in force.
    fn drain_deadline(&self) -> Option<Instant> {
        self.drains.values().flatten().min().copied()
    }

    /// Stops every session, reason `drained`, once a drain's deadline has come.
    fn stop_drained(&mut self, now: Now) {
        if self.drain_deadline().is_some_and(|at| at <= now.mono) {
            self.stop_all(now, EndReason::Drained);
        }
    }

    fn stop_all(&mut self, now: Now, reason: EndReason) {
        let ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.stop(now, &id, reason);
        }
    }

    /// Graceful stop now, forced after the grace period. A session already stopping keeps its
    /// first reason.
    fn stop(&mut self, now: Now, id: &SessionId, reason: EndReason) {
        let grace = self.config.kill_grace;
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if matches!(s.state, State::Stopping { .. }) {
            return;
        }
        s.state = State::Stopping {
            reason,
            kill_at: now.mono + grace,
            forced: false,
        };
        self.outputs.push_back(Output::Notify {
            session: id.clone(),
            notice: Notice::Ended { reason },
        });
        if s.process.is_some() {
            self.kill(id, true);
        }
    }

    fn kill(&mut self, id: &SessionId, graceful: bool) {
        let pid = self.sessions.get(id).and_then(|s| s.process.map(|p| p.pid));
        self.outputs.push_back(Output::Kill {
            session: id.clone(),
            pid,
            graceful,
        });
    }

    fn end(&mut self, now: Now, id: &SessionId, ended: Ended) {
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        self.ports_in_use.remove(&s.port);
        self.dirty = true;
        self.outputs.push_back(Output::Teardown {
            session: id.clone(),
        });
        self.report(now, id.clone(), SessionEventKind::Ended(ended));
    }

    fn report(&mut self, now: Now, session_id: SessionId, kind: SessionEventKind) {
        let e = SequencedEvent {
            seq: self.next_seq,
            event: SessionEvent {
                session_id,
                at: now.wall,
                kind,
            },
        };
        self.next_seq += 1;
        self.dirty = true;
        if self.link_up {
            self.outputs
                .push_back(Output::Send(NodeToCoordinator::Event(e.clone())));
        }
        self.unacked.push_back(e);
    }
}

/// How a coordinator's `welcome{acked}` relates to the node's own numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numbering {
    /// `node_last_acked <= acked <= node_last_seq`: the usual case. Events up to `acked` are
    /// done; the rest are resent with their numbers.
    InStep,
    /// `acked > node_last_seq`: the coordinator has processed events this node never numbered
    /// (its data dir was lost or replaced). Pending events are renumbered from `acked + 1`.
    NodeBehind,
    /// `acked < node_last_acked`: the coordinator forgot events it had acknowledged (restored
    /// from a backup, say). Pending events are renumbered from `acked + 1`.
    CoordinatorBehind,
}

impl Numbering {
    pub fn of(acked: u64, node_last_acked: u64, node_last_seq: u64) -> Numbering {
        if acked > node_last_seq {
            Numbering::NodeBehind
        } else if acked < node_last_acked {
            Numbering::CoordinatorBehind
        } else {
            Numbering::InStep
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Numbering::InStep => "in step",
            Numbering::NodeBehind => {
                "the coordinator acknowledged more than this node numbered (node data dir lost?)"
            }
            Numbering::CoordinatorBehind => {
                "the coordinator acknowledged less than it had before (coordinator data lost?)"
            }
        }
    }
}

/// A fresh streamer credential: 32 random bytes from the OS, hex (URL-safe as it is). `None` if
/// the OS cannot give randomness, which fails the start instead of using a guessable one.
fn new_credential() -> Option<Token> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
