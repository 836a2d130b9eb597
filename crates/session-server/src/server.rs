//! The tokio shell around the [`Supervisor`]: one task owns the supervisor and drives it; it
//! carries out its outputs (launch and stop processes, start and stop each session's signalling
//! and streamer listener, write the state, talk on the node link) and feeds back what happened.
//!
//! ```text
//!  node link task ──LinkEvent──┐
//!  process tasks ──exit────────┤
//!  signalling observers ───────┼──▶ server loop (owns Supervisor) ──▶ spawn / kill / persist /
//!  reload, shutdown ───────────┘         ▲  timers: poll_timeout,      send on the link /
//!                                        │  heartbeat                   routes for HTTP
//! ```

use crate::config::Config;
use crate::gpu::Gpus;
use crate::http::{
    Route, Routes, StreamerSide, bind_streamer_port, node_app, serve, serve_streamer,
};
use crate::link::{self, LinkEvent};
use crate::process::{self, Launched, Stop};
use crate::state::{self, DataDir, DrainRequest};
use crate::supervisor::{DrainBy, Exit, Notice, Now, Output, Spawn, Supervisor, SupervisorConfig};
use anyhow::Context;
use pxs_protocol::node::{Capacity, CoordinatorToNode, Hello, NodeToCoordinator, SessionId};
use pxs_protocol::signalling::ServerMessage;
use pxs_webrtc_session::Signalling;
use pxs_webrtc_session::router::{RouterConfig, SessionEvent, UsersConfig};
use pxs_webrtc_session::session::Limits;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// A player's `activity` is reported to the supervisor at most this often (so an idle timeout
/// may fire up to this much early; timeouts are minutes in practice).
const ACTIVITY_INTERVAL: Duration = Duration::from_millis(250);
/// After a shutdown stopped every session, how long to wait for the coordinator to acknowledge
/// the last events.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(2);
/// A shutdown gives up on sessions that have not ended this long after the kill grace period.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(10);

enum Input {
    Link(LinkEvent),
    Exited(SessionId, Exit),
    Signalling(SessionId, SessionEvent),
    Reload,
    Shutdown,
}

/// A running session server.
pub struct SessionServer {
    addr: SocketAddr,
    inputs: mpsc::UnboundedSender<Input>,
    task: JoinHandle<anyhow::Result<()>>,
    player_app: axum::Router,
}

/// The shell's part of a session.
struct Handle {
    signalling: Signalling,
    stop_listener: watch::Sender<bool>,
    process: Option<mpsc::UnboundedSender<Stop>>,
}

struct Shell {
    config: Config,
    sup: Supervisor,
    data: DataDir,
    marker: String,
    gpus: Gpus,
    routes: Routes,
    handles: HashMap<SessionId, Handle>,
    link: Option<mpsc::UnboundedSender<NodeToCoordinator>>,
    inputs: mpsc::UnboundedSender<Input>,
    exits: mpsc::UnboundedSender<(SessionId, Exit)>,
    /// Whether the node drains, for `/healthz`.
    draining: Arc<AtomicBool>,
    /// The operator's drain request as last read from the data dir, and whether reading it
    /// failed last time (so the error is logged once, not at every heartbeat).
    operator_drain: Option<DrainRequest>,
    drain_file_error: bool,
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

impl SessionServer {
    /// Opens the data dir (killing whatever a previous run left), binds `node.listen` and starts
    /// serving and linking. Port 0 picks a free port; see [`SessionServer::addr`].
    pub async fn start(mut config: Config) -> anyhow::Result<SessionServer> {
        let data = DataDir::open(&config.node.data_dir)?;
        if cfg!(unix) && config.guard_program.is_none() {
            warn!(
                "no guard program: applications will outlive a crash of this session server until its next start"
            );
        }
        let marker = data.path.display().to_string();
        let previous = data.load();
        let gpus = Gpus::detect(config.node.gpus);
        let sup = Supervisor::new(
            SupervisorConfig {
                public_url: config.node.public_url.clone(),
                max_sessions: config.node.max_sessions,
                streamer_ports: config.node.streamer_ports.clone(),
                kill_grace: config.node.kill_grace,
                gpus: gpus.count(),
                max_sessions_per_gpu: config.node.max_sessions_per_gpu,
                logs_dir: data.logs(),
            },
            config.applications.clone(),
            previous,
            now(),
        );
        let listener = TcpListener::bind(config.node.listen)
            .await
            .with_context(|| format!("node.listen: cannot listen on {}", config.node.listen))?;
        let addr = listener.local_addr()?;
        // What `hello` tells: the bound port, when node.listen asked for any (0).
        config.node.upstream_url = config.node.upstream_for(addr);
        data.write_pid()
            .with_context(|| format!("node.data_dir: cannot write in {}", data.path.display()))?;
        let routes = Routes::default();
        let draining = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = node_app(
            routes.clone(),
            config.node.name.to_string(),
            draining.clone(),
            config.node.trusted_proxies.clone(),
        );
        let player_app = app.clone();
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(serve("node", &config).run(listener, app, async move {
            let _ = http_stop.wait_for(|s| *s).await;
        }));

        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let (link_tx, mut link_rx) = mpsc::unbounded_channel();
        tokio::spawn(link::run(
            config.coordinator.link_url.clone(),
            config.coordinator.token.clone(),
            config.node.heartbeat_interval,
            link_tx,
            stop_rx.clone(),
        ));
        let fwd = inputs.clone();
        tokio::spawn(async move {
            while let Some(e) = link_rx.recv().await {
                if fwd.send(Input::Link(e)).is_err() {
                    return;
                }
            }
        });
        let (exits, mut exits_rx) = mpsc::unbounded_channel();
        let fwd = inputs.clone();
        tokio::spawn(async move {
            while let Some((id, exit)) = exits_rx.recv().await {
                if fwd.send(Input::Exited(id, exit)).is_err() {
                    return;
                }
            }
        });
        info!(
            node = %config.node.name,
            %addr,
            public_url = %config.node.public_url,
            gpus = gpus.count(),
            applications = config.applications.len(),
            "session server listening"
        );
        let shell = Shell {
            config,
            sup,
            data,
            marker,
            gpus,
            routes,
            handles: HashMap::new(),
            link: None,
            inputs: inputs.clone(),
            exits,
            draining,
            operator_drain: None,
            drain_file_error: false,
        };
        let task = tokio::spawn(async move {
            let result = shell.run(inputs_rx).await;
            let _ = stop_tx.send(true);
            let _ = http.await;
            result
        });
        Ok(SessionServer {
            addr,
            inputs,
            task,
            player_app,
        })
    }

    /// The address of the node's HTTP port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's HTTP application (player WebSockets, `/healthz`), for a program that also
    /// serves it on another port (`pxs up` serves it under `/node/local/` of its one port).
    pub fn player_app(&self) -> axum::Router {
        self.player_app.clone()
    }

    /// Re-reads the applications from the config file (as SIGHUP does).
    pub fn reload(&self) {
        let _ = self.inputs.send(Input::Reload);
    }

    /// A handle that can ask for reloads after `self` is consumed by `run_until`.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.inputs.clone())
    }

    /// Stops every session (graceful, then forced after the grace period), reports them ended,
    /// and stops serving.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.inputs.send(Input::Shutdown);
        self.task.await.context("the session server task failed")?
    }

    /// Serves until `signal` completes, then shuts down.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Asks a running session server to reload its applications.
#[derive(Clone)]
pub struct Reloader(mpsc::UnboundedSender<Input>);

impl Reloader {
    pub fn reload(&self) {
        let _ = self.0.send(Input::Reload);
    }
}

impl Shell {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) -> anyhow::Result<()> {
        // First the sessions the state file knows (KillOrphan outputs)...
        self.drive();
        // ...then any process that escaped its group, or was launched just before a crash and
        // never recorded: they carry our marker.
        let marked = process::kill_marked(&self.marker);
        if !marked.is_empty() {
            warn!(pids = ?marked, "killed processes left by a previous run");
        }
        // An operator's drain outlives restarts: in force before the first hello.
        self.check_operator_drain();
        self.drive();
        let mut heartbeat = tokio::time::interval(self.config.node.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutting_down: Option<Instant> = None;
        let mut emptied: Option<Instant> = None;
        loop {
            if let Some(since) = shutting_down {
                if self.sup.is_empty() {
                    // Give the coordinator a moment to take the last events; unacknowledged
                    // ones stay in the state file and go at the next start.
                    let at = *emptied.get_or_insert_with(Instant::now);
                    if self.sup.all_acked() || self.link.is_none() || at.elapsed() >= FINAL_ACK_WAIT
                    {
                        break;
                    }
                } else if since.elapsed() > self.config.node.kill_grace + SHUTDOWN_SLACK {
                    error!("sessions still running after the kill grace period; exiting anyway");
                    break;
                }
            }
            let mut deadline = self.sup.poll_timeout();
            if let Some(at) = emptied {
                let d = at + FINAL_ACK_WAIT;
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            if let Some(since) = shutting_down {
                let d = since + self.config.node.kill_grace + SHUTDOWN_SLACK;
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            tokio::select! {
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    match input {
                        Input::Shutdown => {
                            if shutting_down.is_none() {
                                info!("shutting down: stopping every session");
                                shutting_down = Some(Instant::now());
                                self.sup.shutdown(now());
                            }
                        }
                        other => self.handle(other),
                    }
                }
                _ = sleep_until(deadline) => self.sup.handle_timeout(now()),
                _ = heartbeat.tick() => {
                    self.check_operator_drain();
                    self.heartbeat();
                }
            }
            self.drive();
        }
        self.data.remove_pid();
        info!("session server stopped");
        Ok(())
    }

    fn handle(&mut self, input: Input) {
        let t = now();
        match input {
            Input::Link(LinkEvent::Connected(tx)) => {
                // A new connection: nothing goes on it but `hello` until `welcome`.
                self.sup.link_down();
                let hello = NodeToCoordinator::Hello(Hello {
                    node: self.config.node.name.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    public_url: self.config.node.public_url.clone(),
                    upstream_url: self
                        .config
                        .node
                        .upstream_url
                        .as_ref()
                        .map(ToString::to_string),
                    capacity: Capacity {
                        max_sessions: self.config.node.max_sessions,
                        max_sessions_per_gpu: self.config.node.max_sessions_per_gpu,
                    },
                    applications: self.sup.applications(),
                    gpus: self.gpus.info().to_vec(),
                    sessions: self.sup.statuses(),
                    draining: self.sup.is_draining(),
                });
                let _ = tx.send(hello);
                self.link = Some(tx);
            }
            Input::Link(LinkEvent::Disconnected(why)) => {
                debug!(%why, "link down");
                self.link = None;
                self.sup.link_down();
            }
            Input::Link(LinkEvent::Message(m)) => match m {
                CoordinatorToNode::Welcome { acked } => {
                    info!(acked, "node link up");
                    self.sup.link_up(acked);
                }
                CoordinatorToNode::Ack { seq } => self.sup.ack(seq),
                CoordinatorToNode::StartSession {
                    session_id,
                    application_id,
                    options,
                } => self
                    .sup
                    .start_session(t, session_id, &application_id, options),
                CoordinatorToNode::StopSession { session_id } => {
                    self.sup.stop_session(t, &session_id)
                }
                CoordinatorToNode::Drain => {
                    info!("drain: stopping every session, taking no new ones");
                    self.sup.drain(t, DrainBy::Coordinator, Some(t.mono));
                    self.heartbeat();
                }
                CoordinatorToNode::DrainGracefully { stop_after_ms } => {
                    // Past the clock's range: never, in practice.
                    let stop_at =
                        stop_after_ms.and_then(|ms| t.mono.checked_add(Duration::from_millis(ms)));
                    self.sup.drain(t, DrainBy::Coordinator, stop_at);
                    self.heartbeat();
                }
                CoordinatorToNode::Resume => {
                    self.sup.resume(DrainBy::Coordinator);
                    self.heartbeat();
                }
                CoordinatorToNode::RevokeLink {
                    session_id,
                    link_id,
                } => match self.handles.get(&session_id) {
                    Some(h) => {
                        info!(session = %session_id, link = %link_id, "share link revoked: closing its users");
                        if !h.signalling.revoke_link(link_id) {
                            warn!(session = %session_id, "the session's signalling did not take the revocation (shutting down or overloaded)");
                        }
                    }
                    None => {
                        debug!(session = %session_id, "revocation for a session not running here, dropped")
                    }
                },
            },
            Input::Exited(id, exit) => self.sup.process_exited(t, &id, exit),
            Input::Signalling(id, e) => match e {
                SessionEvent::StreamerIdentified { .. } => self.sup.streamer_identified(t, &id),
                SessionEvent::StreamerDisconnected { streamer_id } => {
                    info!(session = %id, streamer = %streamer_id, "streamer disconnected")
                }
                SessionEvent::PlayerConnected { player_id } => {
                    self.sup.player_joined(t, &id, player_id.as_str())
                }
                SessionEvent::PlayerDisconnected { player_id } => {
                    self.sup.player_left(t, &id, player_id.as_str())
                }
                SessionEvent::PlayerActivity { player_id } => {
                    self.sup.player_activity(t, &id, player_id.as_str())
                }
            },
            Input::Reload => self.reload(),
            Input::Shutdown => {}
        }
    }

    fn reload(&mut self) {
        if self.config.file.is_none() {
            warn!("reload: no config file to read");
            return;
        }
        match Config::load(&self.config.options) {
            Ok(new) => {
                for note in &new.notes {
                    warn!("{note}");
                }
                if new.node.listen != self.config.node.listen
                    || new.node.data_dir != self.config.node.data_dir
                    || new.node.streamer_ports != self.config.node.streamer_ports
                    || new.node.max_sessions != self.config.node.max_sessions
                    || new.coordinator.link_url != self.config.coordinator.link_url
                {
                    warn!(
                        "reload: [node] and [coordinator] changes take effect at the next start; only the applications were reloaded"
                    );
                }
                info!(
                    applications = new.applications.len(),
                    "reloaded the applications"
                );
                self.sup.set_applications(new.applications.clone());
                self.config.applications = new.applications;
            }
            Err(e) => error!("reload refused, keeping the current applications: {e:#}"),
        }
    }

    /// Applies the operator's drain request (`drain.json` in the data dir) when it changed:
    /// written by `pxs session-server drain`, removed by `resume`.
    fn check_operator_drain(&mut self) {
        let req = match state::read_drain(&self.data.path) {
            Ok(r) => r,
            Err(e) => {
                if !self.drain_file_error {
                    error!(
                        "{e}; keeping the drain as it was (write it again with `pxs session-server drain`, or remove it with `resume`)"
                    );
                    self.drain_file_error = true;
                }
                return;
            }
        };
        self.drain_file_error = false;
        if req == self.operator_drain {
            return;
        }
        self.operator_drain = req;
        let t = now();
        match req {
            Some(DrainRequest { deadline }) => {
                let stop_at = deadline.and_then(|d| {
                    t.mono
                        .checked_add(Duration::from_millis(d.saturating_sub(t.wall)))
                });
                info!(?deadline, "drain asked for by the operator");
                self.sup.drain(t, DrainBy::Operator, stop_at);
            }
            None => {
                info!("the operator's drain was removed");
                self.sup.resume(DrainBy::Operator);
            }
        }
        self.heartbeat();
    }

    fn heartbeat(&mut self) {
        if self.link.is_none() {
            return;
        }
        let sup = &self.sup;
        let gpus = self.gpus.usage(|g| sup.gpu_sessions(g));
        // Queued behind anything the supervisor has to send first (the replay after `welcome`);
        // nothing at all before `welcome`.
        self.sup.heartbeat(now(), gpus);
    }

    /// Carries out the supervisor's outputs (and the inputs they cause) until there are none.
    fn drive(&mut self) {
        while let Some(out) = self.sup.poll_output() {
            match out {
                Output::Persist(state) => {
                    if let Err(e) = self.data.save(&state) {
                        error!(%e, dir = %self.data.path.display(), "cannot write the state file");
                    }
                }
                Output::Spawn(spec) => self.launch(*spec),
                Output::Kill {
                    session, graceful, ..
                } => {
                    if let Some(p) = self.handles.get(&session).and_then(|h| h.process.as_ref()) {
                        let _ = p.send(if graceful {
                            Stop::Graceful
                        } else {
                            Stop::Force
                        });
                    }
                }
                Output::KillOrphan(s) => {
                    process::kill_orphan(&s);
                }
                Output::Teardown { session } => self.teardown(&session),
                Output::Send(msg) => {
                    if let Some(link) = &self.link {
                        let _ = link.send(msg);
                    }
                }
                Output::Notify { session, notice } => {
                    if let Some(h) = self.handles.get(&session) {
                        let msg = notice_message(notice);
                        if !h.signalling.announce(msg) {
                            debug!(session = %session, "notice not delivered: the signalling is gone or full");
                        }
                    }
                }
            }
        }
        self.draining
            .store(self.sup.is_draining(), Ordering::Relaxed);
    }

    fn launch(&mut self, spec: Spawn) {
        let t = now();
        let id = spec.session.clone();
        // A leftover of an earlier attempt on another port.
        self.teardown(&id);
        let listener = match bind_streamer_port(spec.port) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return self.sup.port_unavailable(t, &id);
            }
            Err(e) => {
                return self.sup.spawn_failed(
                    t,
                    &id,
                    format!("cannot listen on 127.0.0.1:{}: {e}", spec.port),
                );
            }
        };
        let router = RouterConfig {
            // The title's max_players is the users core's (it says so to the one refused).
            max_players: 0,
            // UE sets endpointId from -PixelStreamingID, which is the session id.
            expected_streamer_id: Some(id.to_string()),
            // Every session is shared: its players are users with roles, control and chat.
            users: Some(UsersConfig {
                limits: pxs_webrtc_session::users::Limits {
                    max_users: spec.max_players as usize,
                    ..Default::default()
                },
                epoch: (Instant::now(), crate::http::now_millis()),
            }),
            // The node's own STUN and TURN servers win over the coordinator's.
            ..ice_router_config(self.config.ice.as_ref().or(spec.ice.as_ref()))
        };
        let limits = Limits {
            idle_timeout: self.config.websocket_idle_timeout,
            ..Limits::default()
        };
        let (signalling, mut events) =
            Signalling::spawn_observed(router, limits, ACTIVITY_INTERVAL);
        let fwd = self.inputs.clone();
        let sid = id.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if fwd.send(Input::Signalling(sid.clone(), e)).is_err() {
                    return;
                }
            }
        });
        let (stop_listener, stop_rx) = watch::channel(false);
        serve_streamer(
            serve("streamer", &self.config),
            listener,
            StreamerSide {
                session: id.clone(),
                signalling: signalling.clone(),
                credential: spec.streamer_credential.clone(),
            },
            stop_rx,
        );
        self.routes.insert(
            id.clone(),
            Route {
                signalling: signalling.clone(),
                token: spec.player_token.clone(),
            },
        );
        let guard = if cfg!(unix) {
            self.config.guard_program.as_deref()
        } else {
            // Job objects with kill-on-close do the guard's work there.
            None
        };
        let process = match process::launch(&spec, &self.marker, guard, self.exits.clone()) {
            Ok(Launched { info, control }) => {
                info!(session = %id, pid = info.pid, port = spec.port, "application launched");
                self.sup.spawned(t, &id, info);
                Some(control)
            }
            Err(e) => {
                self.handles.insert(
                    id.clone(),
                    Handle {
                        signalling,
                        stop_listener,
                        process: None,
                    },
                );
                return self.sup.spawn_failed(
                    t,
                    &id,
                    format!("cannot start {}: {e}", spec.argv[0]),
                );
            }
        };
        self.handles.insert(
            id,
            Handle {
                signalling,
                stop_listener,
                process,
            },
        );
    }

    fn teardown(&mut self, id: &SessionId) {
        self.routes.remove(id);
        if let Some(h) = self.handles.remove(id) {
            let _ = h.stop_listener.send(true);
            let signalling = h.signalling;
            tokio::spawn(async move { signalling.shutdown().await });
        }
    }
}

/// What the users of a session are told, on their signalling sockets (reasons by the
/// coordinator's names, as the session's `end_reason` will say).
fn notice_message(notice: Notice) -> ServerMessage {
    let name = |r| pxs_protocol::api::EndReason::from(r).as_str().to_owned();
    match notice {
        Notice::Warning { reason, ends_at } => ServerMessage::Warning {
            reason: name(reason),
            ends_at,
        },
        Notice::WarningCleared { reason } => ServerMessage::WarningCleared {
            reason: name(reason),
        },
        Notice::Ended { reason } => ServerMessage::Ended {
            reason: name(reason),
        },
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The signalling's `peer_connection_options` and TURN credentials for a session with these
/// STUN and TURN servers (none: an empty configuration, host candidates only).
fn ice_router_config(ice: Option<&pxs_protocol::ice::IceSettings>) -> RouterConfig {
    let Some(ice) = ice else {
        return RouterConfig::default();
    };
    RouterConfig {
        peer_connection_options: ice.peer_connection_options(),
        turn: ice.turn_secret.clone().map(|secret| {
            let ttl = ice
                .turn_ttl
                .map_or(pxs_webrtc_session::turn::DEFAULT_TTL, Duration::from_secs);
            pxs_webrtc_session::turn::TurnConfig::new(secret, ttl)
        }),
        ..RouterConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pxs_protocol::ice::IceSettings;
    use pxs_protocol::secret::Secret;

    #[test]
    fn a_sessions_signalling_gets_the_servers_and_mints_turn_credentials_from_the_secret() {
        let ice = IceSettings {
            urls: vec!["stun:t.example.org".into(), "turn:t.example.org".into()],
            turn_secret: Some(Secret("a-secret-of-twenty-chars".into())),
            turn_ttl: Some(600),
            ..Default::default()
        };
        let r = ice_router_config(Some(&ice));
        assert_eq!(r.peer_connection_options, ice.peer_connection_options());
        let turn = r.turn.expect("credentials are minted");
        assert_eq!(turn.ttl, Duration::from_secs(600));
        assert_eq!(turn.secret.0, "a-secret-of-twenty-chars");
        // Fixed credentials, or STUN only: nothing to mint.
        let fixed = IceSettings {
            turn_secret: None,
            turn_ttl: None,
            username: Some("u".into()),
            credential: Some(Secret("c".into())),
            ..ice
        };
        assert!(ice_router_config(Some(&fixed)).turn.is_none());
        let none = ice_router_config(None);
        assert!(none.turn.is_none());
        assert_eq!(none.peer_connection_options, serde_json::json!({}));
    }
}
