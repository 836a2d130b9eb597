//! Scenarios of the supervision core with a fake clock: every end reason, the event queue across
//! link drops, recovery after a crash. No processes, no sockets, no sleeps.

use super::*;
use pxs_protocol::node::CoordinatorToNode;

struct H {
    sup: Supervisor,
    now: Now,
    /// Outputs other than Persist, since the last `take`.
    out: Vec<Output>,
    persisted: Option<PersistedState>,
    next_pid: u32,
}

fn app(id: &str) -> Application {
    Application {
        id: ApplicationId::parse(id).unwrap(),
        name: id.to_uppercase(),
        description: String::new(),
        image_url: None,
        visibility: pxs_protocol::api::Visibility::Public,
        executable: "/opt/app/run".into(),
        args: vec!["-RenderOffScreen".into()],
        working_dir: None,
        env: [("A".to_owned(), "1".to_owned())].into(),
        res_x: 1280,
        res_y: 720,
        max_players: 2,
        idle_timeout: Some(Duration::from_secs(60)),
        empty_timeout: Some(Duration::from_secs(30)),
        max_duration: Some(Duration::from_secs(3600)),
        start_timeout: Duration::from_secs(20),
    }
}

fn config() -> SupervisorConfig {
    SupervisorConfig {
        public_url: "https://n1.example.org".into(),
        max_sessions: 3,
        streamer_ports: 20000..=20009,
        kill_grace: Duration::from_secs(5),
        gpus: 0,
        max_sessions_per_gpu: 0,
        logs_dir: "/data/logs".into(),
    }
}

fn sid(n: u32) -> SessionId {
    SessionId::parse(&format!("ses_{n}")).unwrap()
}

impl H {
    fn new() -> H {
        H::with(config(), None)
    }

    fn with(config: SupervisorConfig, previous: Option<PersistedState>) -> H {
        let now = Now {
            mono: Instant::now(),
            wall: 1_000_000,
        };
        let mut h = H {
            sup: Supervisor::new(config, vec![app("demo"), app("other")], previous, now),
            now,
            out: Vec::new(),
            persisted: None,
            next_pid: 100,
        };
        h.pump();
        h
    }

    fn pump(&mut self) {
        while let Some(o) = self.sup.poll_output() {
            match o {
                Output::Persist(p) => self.persisted = Some(p),
                o => self.out.push(o),
            }
        }
    }

    fn take(&mut self) -> Vec<Output> {
        self.pump();
        std::mem::take(&mut self.out)
    }

    fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall += d.as_millis() as u64;
        // Each call acts on one due deadline per session; a warning and a stop may both be due.
        for _ in 0..10 {
            if self.sup.poll_timeout().is_none_or(|t| t > self.now.mono) {
                break;
            }
            self.sup.handle_timeout(self.now);
        }
        self.pump();
    }

    fn start(&mut self, n: u32) -> Spawn {
        self.start_with(
            n,
            StartOptions {
                player_token: Some(Token("tok".into())),
                ..Default::default()
            },
        )
    }

    /// Starts `ses_<n>` of `demo` with these options and reports its process spawned.
    fn start_with(&mut self, n: u32, options: StartOptions) -> Spawn {
        self.sup.start_session(
            self.now,
            sid(n),
            &ApplicationId::parse("demo").unwrap(),
            options,
        );
        let out = self.take();
        let spawn = out
            .iter()
            .find_map(|o| match o {
                Output::Spawn(s) => Some((**s).clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no spawn in {out:?}"));
        let pid = self.next_pid;
        self.next_pid += 1;
        self.sup.spawned(
            self.now,
            &sid(n),
            ProcessInfo {
                pid,
                pgid: Some(pid),
                start_time: Some(7),
            },
        );
        self.pump();
        spawn
    }

    fn ready(&mut self, n: u32) {
        self.start(n);
        self.sup.streamer_identified(self.now, &sid(n));
        self.pump();
    }

    /// Like `ready`, with these options; returns what was spawned.
    fn ready_with(&mut self, n: u32, options: StartOptions) -> Spawn {
        let spawn = self.start_with(n, options);
        self.sup.streamer_identified(self.now, &sid(n));
        self.pump();
        spawn
    }

    /// A node whose `demo` application is `demo` (and `other` the usual one).
    fn with_demo(demo: Application) -> H {
        let mut h = H::new();
        h.sup.set_applications(vec![demo, app("other")]);
        h.pump();
        h
    }

    /// Advances one second at a time until `ses_<n>` is stopped (a graceful kill), for at most
    /// `limit` seconds; the seconds it took, or `None`.
    fn seconds_until_stopped(&mut self, n: u32, limit: u64) -> Option<u64> {
        for t in 1..=limit {
            self.advance(Duration::from_secs(1));
            if self.kills().contains(&(sid(n), true)) {
                return Some(t);
            }
        }
        None
    }

    /// Every event sent (the link must be up) or queued, as (seq, session, kind name).
    fn events(&self) -> Vec<SequencedEvent> {
        self.sup.unacked.iter().cloned().collect()
    }

    fn ended(&self, n: u32) -> Option<Ended> {
        self.events().into_iter().find_map(|e| match e.event.kind {
            SessionEventKind::Ended(x) if e.event.session_id == sid(n) => Some(x),
            _ => None,
        })
    }

    fn kills(&mut self) -> Vec<(SessionId, bool)> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Kill {
                    session, graceful, ..
                } => Some((session, graceful)),
                _ => None,
            })
            .collect()
    }

    fn exit(&mut self, n: u32, code: Option<i32>, signal: Option<i32>) {
        self.sup
            .process_exited(self.now, &sid(n), Exit { code, signal });
        self.pump();
    }
}

#[test]
fn a_start_spawns_the_application_with_ue_flags_on_a_loopback_port() {
    let mut h = H::new();
    let s = h.start(1);
    let url = format!(
        "-PixelStreamingURL=ws://127.0.0.1:20000/?token={}",
        s.streamer_credential.0
    );
    assert_eq!(
        s.argv,
        vec![
            "/opt/app/run",
            "-RenderOffScreen",
            url.as_str(),
            "-PixelStreamingID=ses_1",
            "-ResX=1280",
            "-ResY=720"
        ]
    );
    assert_eq!(s.port, 20000);
    assert_eq!(s.log, PathBuf::from("/data/logs/ses_1.log"));
    assert!(s.env.contains(&("A".into(), "1".into())));
    assert!(s.env.contains(&("PXS_SESSION_ID".into(), "ses_1".into())));
    assert_eq!(s.max_players, 2);
    let s2 = h.start(2);
    assert_eq!(s2.port, 20001, "each session gets its own port");
    let kinds: Vec<&str> = h
        .events()
        .iter()
        .map(|e| match e.event.kind {
            SessionEventKind::Starting { .. } => "starting",
            SessionEventKind::Ready { .. } => "ready",
            SessionEventKind::Ended(_) => "ended",
        })
        .collect();
    assert_eq!(kinds, ["starting", "starting"]);
    let p = h.persisted.clone().unwrap();
    assert_eq!(p.sessions.len(), 2);
    assert_eq!(p.sessions[0].process.unwrap().pid, 100);
}

#[test]
fn resolution_can_be_overridden_per_session() {
    let mut h = H::new();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions {
            res_x: Some(640),
            res_y: Some(360),
            ..Default::default()
        },
    );
    let out = h.take();
    let Some(Output::Spawn(s)) = out.iter().find(|o| matches!(o, Output::Spawn(_))) else {
        panic!("{out:?}")
    };
    assert!(s.argv.contains(&"-ResX=640".to_owned()) && s.argv.contains(&"-ResY=360".to_owned()));
}

#[test]
fn the_streamer_identifying_makes_the_session_ready_with_its_player_url() {
    let mut h = H::new();
    h.ready(1);
    let e = h.events().pop().unwrap();
    assert_eq!(
        e.event.kind,
        SessionEventKind::Ready {
            player_url: "wss://n1.example.org/sessions/ses_1/ws".into()
        }
    );
    assert_eq!(h.sup.statuses()[0].state, ObservedState::Ready);
}

#[test]
fn stop_is_graceful_then_forced_after_the_grace_period() {
    let mut h = H::new();
    h.ready(1);
    h.sup.stop_session(h.now, &sid(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    assert_eq!(h.sup.statuses()[0].state, ObservedState::Stopping);
    h.advance(Duration::from_millis(4999));
    assert!(h.kills().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.kills(), vec![(sid(1), false)]);
    h.advance(Duration::from_secs(60));
    assert!(h.kills().is_empty(), "killed once");
    h.exit(1, None, Some(9));
    let e = h.ended(1).unwrap();
    assert_eq!(e.reason, EndReason::Stopped);
    assert!(!e.failed);
    assert_eq!(e.signal, Some(9));
    assert!(h.sup.is_empty());
}

#[test]
fn a_stopped_session_that_exits_in_time_is_not_killed() {
    let mut h = H::new();
    h.ready(1);
    h.sup.stop_session(h.now, &sid(1));
    h.kills();
    h.advance(Duration::from_secs(1));
    h.exit(1, None, Some(15));
    let out = h.take();
    assert!(
        out.contains(&Output::Teardown { session: sid(1) }),
        "{out:?}"
    );
    h.advance(Duration::from_secs(10));
    assert!(h.kills().is_empty());
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Stopped);
    assert!(h.sup.poll_timeout().is_none());
}

#[test]
fn an_application_that_exits_is_reported_with_its_code() {
    let mut h = H::new();
    h.ready(1);
    h.exit(1, Some(0), None);
    let e = h.ended(1).unwrap();
    assert_eq!(
        (e.reason, e.exit_code, e.failed),
        (EndReason::Exited, Some(0), false)
    );
    h.ready(2);
    h.exit(2, Some(3), None);
    let e = h.ended(2).unwrap();
    assert_eq!(
        (e.reason, e.exit_code, e.failed),
        (EndReason::Exited, Some(3), true)
    );
}

#[test]
fn an_application_killed_by_a_signal_crashed() {
    let mut h = H::new();
    h.ready(1);
    h.exit(1, None, Some(6));
    let e = h.ended(1).unwrap();
    assert_eq!(
        (e.reason, e.signal, e.failed),
        (EndReason::Crashed, Some(6), true)
    );
    assert!(
        h.kills().is_empty(),
        "the shell cleans up the tree of an exited leader"
    );
}

#[test]
fn a_streamer_that_never_identifies_fails_with_start_timeout() {
    let mut h = H::new();
    h.start(1);
    h.advance(Duration::from_millis(19_999));
    assert!(h.kills().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, None, Some(15));
    let e = h.ended(1).unwrap();
    assert_eq!((e.reason, e.failed), (EndReason::StartTimeout, true));
}

#[test]
fn idle_players_end_the_session() {
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(10));
    h.sup.player_joined(h.now, &sid(1), "Player1");
    h.advance(Duration::from_secs(40));
    h.sup.player_activity(h.now, &sid(1), "Player0");
    // Player1 idle since t=10, Player0 active at t=50: not every player is idle.
    h.advance(Duration::from_secs(59));
    assert!(h.kills().is_empty(), "Player0 was active 59 s ago");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Idle);
}

/// The notices given to the users of `ses_<n>` since the last take (other outputs are dropped).
impl H {
    fn notices(&mut self, n: u32) -> Vec<Notice> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Notify { session, notice } if session == sid(n) => Some(notice),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn users_are_warned_before_an_idle_end_and_any_activity_clears_the_warning() {
    // Idle 60 s: the warning comes 30 s before (half the limit, under a minute).
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.sup.player_joined(h.now, &sid(1), "Player1");
    h.take();
    h.advance(Duration::from_millis(29_999));
    assert_eq!(h.notices(1), []);
    h.advance(Duration::from_millis(1));
    let ends_at = h.now.wall + 30_000;
    assert_eq!(
        h.notices(1),
        [Notice::Warning {
            reason: EndReason::Idle,
            ends_at
        }]
    );
    h.advance(Duration::from_secs(10));
    assert_eq!(h.notices(1), [], "warned once");
    // One user moves: cleared for everyone, and the clock starts again.
    h.sup.player_activity(h.now, &sid(1), "Player1");
    assert_eq!(
        h.notices(1),
        [Notice::WarningCleared {
            reason: EndReason::Idle
        }]
    );
    h.advance(Duration::from_secs(29));
    assert_eq!(h.notices(1), []);
    h.advance(Duration::from_secs(1));
    assert!(matches!(
        h.notices(1)[..],
        [Notice::Warning {
            reason: EndReason::Idle,
            ..
        }]
    ));
    // Nobody moves: the session stops, and the users are told why.
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.notices(1),
        [Notice::Ended {
            reason: EndReason::Idle
        }]
    );
    h.exit(1, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Idle);
}

#[test]
fn users_are_warned_a_minute_before_the_time_limit_and_activity_does_not_clear_it() {
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.take();
    for _ in 0..3539 {
        h.advance(Duration::from_secs(1));
        h.sup.player_activity(h.now, &sid(1), "Player0");
    }
    assert_eq!(h.notices(1), []);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.notices(1),
        [Notice::Warning {
            reason: EndReason::MaxDuration,
            ends_at: h.now.wall + 60_000
        }]
    );
    h.sup.player_activity(h.now, &sid(1), "Player0");
    assert_eq!(h.notices(1), [], "input does not lift a time limit");
    h.advance(Duration::from_secs(60));
    assert_eq!(
        h.notices(1),
        [Notice::Ended {
            reason: EndReason::MaxDuration
        }]
    );
}

#[test]
fn the_idle_warning_is_cleared_when_everyone_leaves() {
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(30));
    assert_eq!(h.notices(1).len(), 1);
    // Nobody left to be idle: the empty timeout takes over, the warning is void.
    h.sup.player_left(h.now, &sid(1), "Player0");
    assert_eq!(
        h.notices(1),
        [Notice::WarningCleared {
            reason: EndReason::Idle
        }]
    );
}

#[test]
fn activity_from_an_unknown_player_does_not_count() {
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(59));
    h.sup.player_activity(h.now, &sid(1), "Player9");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
}

#[test]
fn nobody_connected_for_the_empty_timeout_ends_the_session() {
    let mut h = H::new();
    h.ready(1);
    h.advance(Duration::from_secs(20));
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(20));
    h.sup.player_activity(h.now, &sid(1), "Player0");
    h.sup.player_left(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(29));
    assert!(
        h.kills().is_empty(),
        "the empty clock restarted when the player left"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, Some(0), None);
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Empty);
}

#[test]
fn the_empty_clock_starts_at_ready_not_at_launch() {
    let mut h = H::new();
    h.start(1);
    h.advance(Duration::from_secs(15));
    h.sup.streamer_identified(h.now, &sid(1));
    h.advance(Duration::from_secs(29));
    assert!(h.kills().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
}

#[test]
fn max_duration_ends_even_an_active_session() {
    let mut h = H::new();
    h.ready(1);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    for _ in 0..119 {
        h.advance(Duration::from_secs(30));
        h.sup.player_activity(h.now, &sid(1), "Player0");
    }
    assert!(h.kills().is_empty());
    h.advance(Duration::from_secs(30));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, Some(0), None);
    assert_eq!(h.ended(1).unwrap().reason, EndReason::MaxDuration);
}

#[test]
fn drain_stops_everything_and_refuses_new_sessions() {
    let mut h = H::new();
    h.ready(1);
    h.start(2);
    // `drain` on the link: a deadline that has come.
    h.sup.drain(h.now, DrainBy::Coordinator, Some(h.now.mono));
    let mut k = h.kills();
    k.sort();
    assert_eq!(k, vec![(sid(1), true), (sid(2), true)]);
    h.exit(1, None, Some(15));
    h.exit(2, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Drained);
    assert_eq!(h.ended(2).unwrap().reason, EndReason::Drained);
    h.sup.start_session(
        h.now,
        sid(3),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    let e = h.ended(3).unwrap();
    assert_eq!(e.reason, EndReason::Rejected);
    assert_eq!(e.detail.as_deref(), Some("the node is draining"));
    assert_eq!(h.sup.free_slots(), 0);
}

fn refused_as_draining(h: &mut H, n: u32) -> bool {
    h.sup.start_session(
        h.now,
        sid(n),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    h.pump();
    h.ended(n)
        .is_some_and(|e| e.detail.as_deref() == Some("the node is draining"))
}

#[test]
fn a_drain_without_deadline_refuses_new_sessions_and_lets_running_ones_end() {
    let mut h = H::new();
    h.ready(1);
    h.sup.drain(h.now, DrainBy::Coordinator, None);
    assert!(h.sup.is_draining());
    assert_eq!(h.sup.free_slots(), 0);
    assert!(refused_as_draining(&mut h, 2));
    assert_eq!(
        h.sup.poll_timeout(),
        Some(h.now.mono + Duration::from_secs(30))
    );
    h.sup.player_joined(h.now, &sid(1), "Player0");
    for _ in 0..50 {
        h.advance(Duration::from_secs(20));
        h.sup.player_activity(h.now, &sid(1), "Player0");
    }
    assert!(
        h.kills().is_empty(),
        "a drain without deadline stops nothing"
    );
    h.exit(1, Some(0), None);
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Exited);
    h.sup.resume(DrainBy::Coordinator);
    assert!(!h.sup.is_draining());
    assert_eq!(h.sup.free_slots(), 3);
    h.start(3);
}

#[test]
fn a_drain_deadline_stops_the_sessions_still_running_with_reason_drained() {
    let mut h = H::new();
    h.ready(1);
    h.start(2);
    h.sup.drain(
        h.now,
        DrainBy::Coordinator,
        Some(h.now.mono + Duration::from_secs(10)),
    );
    assert_eq!(h.seconds_until_stopped(1, 30), Some(10));
    h.exit(1, None, Some(15));
    h.exit(2, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Drained);
    assert_eq!(h.ended(2).unwrap().reason, EndReason::Drained);
    assert!(!h.ended(1).unwrap().failed);
    // Nothing left to stop: no timer spins on the passed deadline.
    assert_eq!(h.sup.poll_timeout(), None);
    assert!(h.sup.is_draining());
}

#[test]
fn each_drain_is_undone_by_its_own_resume_and_the_earlier_deadline_applies() {
    let mut h = H::new();
    h.ready(1);
    let now = h.now.mono;
    h.sup.drain(h.now, DrainBy::Operator, None);
    h.sup.drain(
        h.now,
        DrainBy::Coordinator,
        Some(now + Duration::from_secs(20)),
    );
    assert_eq!(h.sup.poll_timeout(), Some(now + Duration::from_secs(20)));
    // A second drain by the same asker replaces its deadline.
    h.sup.drain(
        h.now,
        DrainBy::Coordinator,
        Some(now + Duration::from_secs(5)),
    );
    assert_eq!(h.sup.poll_timeout(), Some(now + Duration::from_secs(5)));
    h.sup.resume(DrainBy::Coordinator);
    assert!(
        h.sup.is_draining(),
        "the operator's drain is still in force"
    );
    assert_eq!(h.sup.drain_of(DrainBy::Operator), Some(None));
    assert_eq!(h.sup.drain_of(DrainBy::Coordinator), None);
    h.advance(Duration::from_secs(10));
    assert!(h.kills().is_empty());
    assert!(refused_as_draining(&mut h, 2));
    h.sup.resume(DrainBy::Operator);
    assert!(!h.sup.is_draining());
    h.start(3);
}

#[test]
fn shutdown_stops_everything_with_its_own_reason() {
    let mut h = H::new();
    h.ready(1);
    h.sup.shutdown(h.now);
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::NodeShutdown);
    assert!(h.sup.is_empty());
}

#[test]
fn a_second_stop_keeps_the_first_reason() {
    let mut h = H::new();
    h.start(1);
    h.advance(Duration::from_secs(20));
    h.kills();
    h.sup.stop_session(h.now, &sid(1));
    assert!(h.kills().is_empty());
    h.exit(1, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::StartTimeout);
}

#[test]
fn starts_are_rejected_with_a_reason() {
    let mut h = H::new();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("nope").unwrap(),
        StartOptions::default(),
    );
    assert_eq!(
        h.ended(1).unwrap().detail.as_deref(),
        Some("unknown application `nope`")
    );
    for n in 2..5 {
        h.start(n);
    }
    h.sup.start_session(
        h.now,
        sid(9),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    assert_eq!(
        h.ended(9).unwrap().detail.as_deref(),
        Some("the node is full (3 sessions)")
    );
    assert_eq!(h.sup.free_slots(), 0);
}

#[test]
fn a_duplicate_start_is_ignored() {
    let mut h = H::new();
    h.start(1);
    let before = h.events().len();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    assert!(h.take().is_empty());
    assert_eq!(h.events().len(), before);
}

#[test]
fn a_spawn_failure_ends_the_session_and_frees_its_port() {
    let mut h = H::new();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    h.take();
    h.sup
        .spawn_failed(h.now, &sid(1), "permission denied".into());
    let e = h.ended(1).unwrap();
    assert_eq!((e.reason, e.failed), (EndReason::SpawnFailed, true));
    assert_eq!(h.start(2).port, 20000, "the port was released");
}

#[test]
fn a_port_taken_by_someone_else_is_skipped() {
    let mut h = H::new();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    h.take();
    h.sup.port_unavailable(h.now, &sid(1));
    let out = h.take();
    let Some(Output::Spawn(s)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(s.port, 20001);
    let url = format!(
        "-PixelStreamingURL=ws://127.0.0.1:20001/?token={}",
        s.streamer_credential.0
    );
    assert!(s.argv.contains(&url));
    // A new session does not get the quarantined port either, until the quarantine ends.
    assert_eq!(h.start(2).port, 20002);
    h.advance(Duration::from_secs(61));
    assert_eq!(h.start(3).port, 20000);
}

#[test]
fn ports_run_out() {
    let mut h = H::with(
        SupervisorConfig {
            streamer_ports: 20000..=20001,
            ..config()
        },
        None,
    );
    h.start(1);
    h.start(2);
    h.sup.start_session(
        h.now,
        sid(3),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    assert_eq!(
        h.ended(3).unwrap().detail.as_deref(),
        Some("no free streamer port")
    );
}

#[test]
fn sessions_are_spread_over_gpus_within_the_per_gpu_limit() {
    let mut h = H::with(
        SupervisorConfig {
            gpus: 2,
            max_sessions_per_gpu: 1,
            ..config()
        },
        None,
    );
    assert_eq!(h.sup.free_slots(), 2);
    let a = h.start(1);
    let b = h.start(2);
    assert_eq!((a.gpu, b.gpu), (Some(0), Some(1)));
    assert!(a.argv.contains(&"-graphicsadapter=0".to_owned()));
    assert!(b.env.contains(&("CUDA_VISIBLE_DEVICES".into(), "1".into())));
    h.sup.start_session(
        h.now,
        sid(3),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    assert_eq!(h.ended(3).unwrap().reason, EndReason::Rejected);
    h.exit(1, Some(0), None);
    assert_eq!(h.sup.free_slots(), 1);
    assert_eq!(h.start(4).gpu, Some(0));
}

#[test]
fn events_are_numbered_sent_while_up_and_resent_after_a_drop_until_acked() {
    let mut h = H::new();
    h.sup.link_up(0);
    h.ready(1); // seq 1 starting, 2 ready
    let sent: Vec<u64> = h
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(NodeToCoordinator::Event(e)) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![1, 2]);
    h.sup.ack(1);
    h.sup.link_down();
    h.exit(1, Some(0), None); // seq 3, queued only
    let out = h.take();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send(_))),
        "nothing is sent while the link is down: {out:?}"
    );
    h.sup.link_up(1);
    let resent: Vec<u64> = h
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(NodeToCoordinator::Event(e)) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(resent, vec![2, 3], "in order, from the first unacked");
    h.sup.ack(3);
    h.pump();
    assert!(h.sup.all_acked());
    assert!(h.persisted.clone().unwrap().unacked.is_empty());
    // The coordinator may have processed more than it acked: welcome says so.
    h.ready(2); // 4, 5
    h.take();
    h.sup.link_down();
    h.sup.link_up(5);
    assert!(!h.take().iter().any(|o| matches!(o, Output::Send(_))));
}

#[test]
fn the_state_is_persisted_before_an_event_is_sent() {
    let mut h = H::new();
    h.sup.link_up(0);
    h.pump();
    h.out.clear();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    h.sup.spawned(
        h.now,
        &sid(1),
        ProcessInfo {
            pid: 5,
            pgid: Some(5),
            start_time: None,
        },
    );
    let first = h.sup.poll_output().unwrap();
    let Output::Persist(p) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        p.next_seq, 2,
        "seq 1 (starting) is on disk before it is sent"
    );
    assert_eq!(p.unacked.len(), 1);
    assert_eq!(p.sessions[0].process.unwrap().pid, 5);
}

#[test]
fn a_restart_kills_orphans_reports_them_and_keeps_the_queue() {
    let mut h = H::new();
    h.ready(1);
    h.start(2);
    let state = h.persisted.clone().unwrap();
    assert_eq!(state.next_seq, 4);
    // The session server is SIGKILLed here; a new one starts from the state on disk.
    let mut h2 = H::with(config(), Some(state));
    let out = std::mem::take(&mut h2.out);
    let orphans: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::KillOrphan(s) => s.process.map(|p| p.pid),
            _ => None,
        })
        .collect();
    assert_eq!(orphans, vec![100, 101]);
    let ev = h2.events();
    let seqs: Vec<u64> = ev.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5],
        "old unacked events first, then the new ones"
    );
    let e1 = h2.ended(1).unwrap();
    assert_eq!((e1.reason, e1.failed), (EndReason::NodeRestart, false));
    let e2 = h2.ended(2).unwrap();
    assert_eq!((e2.reason, e2.failed), (EndReason::NodeRestart, true));
    assert!(h2.sup.is_empty());
    assert!(h2.persisted.clone().unwrap().sessions.is_empty());
    assert_eq!(h2.start(3).port, 20000, "the orphans' ports are free again");
}

#[test]
fn a_reload_replaces_applications_without_touching_sessions() {
    let mut h = H::new();
    h.sup.link_up(0);
    h.ready(1);
    h.take();
    let mut changed = app("demo");
    changed.executable = "/opt/app/v2".into();
    h.sup.set_applications(vec![changed, app("third")]);
    let out = h.take();
    let Some(Output::Send(NodeToCoordinator::Applications { applications })) = out.first() else {
        panic!("{out:?}")
    };
    let ids: Vec<&str> = applications.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["demo", "third"]);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Kill { .. })),
        "running sessions are untouched"
    );
    assert_eq!(h.start(2).argv[0], "/opt/app/v2");
    assert_eq!(h.sup.statuses().len(), 2);
}

#[test]
fn heartbeats_report_observed_state_and_players() {
    let mut h = H::new();
    h.ready(1);
    h.start(2);
    h.sup.player_joined(h.now, &sid(1), "Player0");
    let st = h.sup.statuses();
    assert_eq!(st[0].state, ObservedState::Ready);
    assert_eq!(st[0].players, 1);
    assert_eq!(st[1].state, ObservedState::Starting);
    assert_eq!(h.sup.free_slots(), 1);
}

#[test]
fn coordinator_messages_drive_the_core() {
    // The shell maps link messages one to one onto core inputs; check the shapes it relies on.
    let m = CoordinatorToNode::from_json(
        r#"{"type":"start_session","session_id":"ses_1","application_id":"demo","options":{"player_token":"t"}}"#,
    )
    .unwrap();
    let mut h = H::new();
    if let CoordinatorToNode::StartSession {
        session_id,
        application_id,
        options,
    } = m
    {
        h.sup
            .start_session(h.now, session_id, &application_id, options);
    }
    let out = h.take();
    let Some(Output::Spawn(s)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(s.player_token, Some(Token("t".into())));
}

// ----- per-session limits from the coordinator (`start_session.options`) -----

fn limits(
    max_players: Option<u32>,
    idle_timeout: Option<u64>,
    empty_timeout: Option<u64>,
    max_duration: Option<u64>,
) -> StartOptions {
    StartOptions {
        player_token: Some(Token("tok".into())),
        max_players,
        idle_timeout,
        empty_timeout,
        max_duration,
        ..Default::default()
    }
}

#[test]
fn idle_timeout_from_the_coordinator_replaces_the_applications() {
    let mut demo = app("demo");
    demo.idle_timeout = Some(Duration::from_secs(600));
    let mut h = H::with_demo(demo);
    h.ready_with(1, limits(None, Some(5), None, None));
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(3));
    h.sup.player_activity(h.now, &sid(1), "Player0");
    h.advance(Duration::from_millis(4999));
    assert!(h.kills().is_empty(), "Player0 was active 4.999 s ago");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.kills(), vec![(sid(1), true)]);
    h.exit(1, None, Some(15));
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Idle);
}

#[test]
fn an_idle_timeout_of_zero_from_the_coordinator_means_never() {
    let mut h = H::new();
    h.ready_with(1, limits(None, Some(0), None, None));
    h.sup.player_joined(h.now, &sid(1), "Player0");
    // The application says 60 s idle and 3600 s at most: only the latter ends it.
    assert_eq!(h.seconds_until_stopped(1, 4000), Some(3600));
    h.exit(1, Some(0), None);
    assert_eq!(h.ended(1).unwrap().reason, EndReason::MaxDuration);
}

#[test]
fn empty_timeout_from_the_coordinator_replaces_the_applications() {
    let mut h = H::new();
    // The application says 30 s.
    h.ready_with(1, limits(None, None, Some(10), None));
    h.ready_with(2, limits(None, None, Some(120), None));
    h.ready_with(3, limits(None, None, Some(0), None));
    assert_eq!(h.seconds_until_stopped(1, 200), Some(10));
    assert_eq!(
        h.seconds_until_stopped(2, 200),
        Some(110),
        "120 s after ready"
    );
    h.exit(1, Some(0), None);
    h.exit(2, Some(0), None);
    assert_eq!(h.ended(1).unwrap().reason, EndReason::Empty);
    assert_eq!(h.ended(2).unwrap().reason, EndReason::Empty);
    // 0: never empty; the application's max duration (3600 s) ends it.
    assert_eq!(h.seconds_until_stopped(3, 4000), Some(3600 - 120));
    h.exit(3, Some(0), None);
    assert_eq!(h.ended(3).unwrap().reason, EndReason::MaxDuration);
}

#[test]
fn max_duration_is_the_shorter_of_the_coordinators_and_the_applications() {
    // (the application's max_duration, the coordinator's, when the session ends)
    let cases: [(Option<u64>, Option<u64>, Option<u64>); 7] = [
        (Some(3600), None, Some(3600)),
        (Some(3600), Some(60), Some(60)),
        (Some(3600), Some(7200), Some(3600)),
        (Some(3600), Some(0), Some(3600)),
        (None, Some(60), Some(60)),
        (None, Some(0), None),
        (None, None, None),
    ];
    for (app_max, asked, ends_at) in cases {
        let mut demo = app("demo");
        demo.max_duration = app_max.map(Duration::from_secs);
        // Nothing else may end the session.
        demo.idle_timeout = None;
        demo.empty_timeout = None;
        let mut h = H::with_demo(demo);
        h.ready_with(1, limits(None, None, None, asked));
        assert_eq!(
            h.seconds_until_stopped(1, 8000),
            ends_at,
            "application {app_max:?}, coordinator {asked:?}"
        );
        if ends_at.is_some() {
            h.exit(1, Some(0), None);
            assert_eq!(h.ended(1).unwrap().reason, EndReason::MaxDuration);
        } else {
            assert!(h.sup.poll_timeout().is_none());
        }
    }
}

#[test]
fn max_players_from_the_coordinator_configures_the_sessions_signalling() {
    let mut h = H::new();
    // The application says 2.
    assert_eq!(
        h.start_with(1, limits(Some(8), None, None, None))
            .max_players,
        8
    );
    assert_eq!(
        h.start_with(2, limits(Some(0), None, None, None))
            .max_players,
        0,
        "0: unlimited"
    );
    assert_eq!(
        h.start_with(3, limits(None, None, None, None)).max_players,
        2
    );
}

#[test]
fn max_players_from_the_coordinator_survives_a_port_retry() {
    let mut h = H::new();
    h.sup.start_session(
        h.now,
        sid(1),
        &ApplicationId::parse("demo").unwrap(),
        limits(Some(8), None, None, None),
    );
    h.take();
    h.sup.port_unavailable(h.now, &sid(1));
    let out = h.take();
    let Some(Output::Spawn(s)) = out.iter().find(|o| matches!(o, Output::Spawn(_))) else {
        panic!("{out:?}")
    };
    assert_eq!((s.port, s.max_players), (20001, 8));
}

#[test]
fn without_options_a_session_keeps_its_applications_limits() {
    let mut h = H::new();
    // The application: 2 players, idle 60 s, empty 30 s, at most 3600 s.
    assert_eq!(h.ready_with(1, StartOptions::default()).max_players, 2);
    assert_eq!(h.seconds_until_stopped(1, 100), Some(30), "empty");
    h.ready_with(2, StartOptions::default());
    h.sup.player_joined(h.now, &sid(2), "Player0");
    assert_eq!(h.seconds_until_stopped(2, 100), Some(60), "idle");
    h.ready_with(3, StartOptions::default());
    h.sup.player_joined(h.now, &sid(3), "Player0");
    for _ in 0..119 {
        h.advance(Duration::from_secs(30));
        h.sup.player_activity(h.now, &sid(3), "Player0");
    }
    assert!(!h.kills().contains(&(sid(3), true)));
    assert_eq!(h.seconds_until_stopped(3, 100), Some(30), "max duration");
    h.exit(1, Some(0), None);
    h.exit(2, Some(0), None);
    h.exit(3, Some(0), None);
    let reasons: Vec<EndReason> = (1..=3).map(|n| h.ended(n).unwrap().reason).collect();
    assert_eq!(
        reasons,
        [EndReason::Empty, EndReason::Idle, EndReason::MaxDuration]
    );
}

#[test]
fn absurdly_long_limits_from_the_coordinator_mean_never_and_do_not_panic() {
    let mut demo = app("demo");
    demo.max_duration = None;
    let mut h = H::with_demo(demo);
    h.ready_with(
        1,
        limits(None, Some(u64::MAX), Some(u64::MAX), Some(u64::MAX)),
    );
    assert!(h.sup.poll_timeout().is_some());
    h.advance(Duration::from_secs(365 * 24 * 3600));
    h.sup.player_joined(h.now, &sid(1), "Player0");
    h.advance(Duration::from_secs(365 * 24 * 3600));
    assert!(h.kills().is_empty());
    assert_eq!(h.sup.statuses()[0].state, ObservedState::Ready);
}

#[test]
fn limits_from_the_link_reach_the_core() {
    let m = CoordinatorToNode::from_json(
        r#"{"type":"start_session","session_id":"ses_1","application_id":"demo",
            "options":{"player_token":"t","max_players":4,"idle_timeout":5,"empty_timeout":7,
                       "max_duration":0}}"#,
    )
    .unwrap();
    let CoordinatorToNode::StartSession {
        session_id,
        application_id,
        options,
    } = m
    else {
        panic!("{m:?}")
    };
    let mut h = H::new();
    h.sup
        .start_session(h.now, session_id, &application_id, options);
    let out = h.take();
    let Some(Output::Spawn(s)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(s.max_players, 4);
    h.sup.spawned(
        h.now,
        &sid(1),
        ProcessInfo {
            pid: 1,
            pgid: None,
            start_time: None,
        },
    );
    h.sup.streamer_identified(h.now, &sid(1));
    h.pump();
    assert_eq!(h.seconds_until_stopped(1, 100), Some(7), "empty after 7 s");
}

// ----- the streamer credential -----

#[test]
fn each_session_gets_its_own_unguessable_streamer_credential_in_its_url() {
    let mut h = H::new();
    let a = h.start(1);
    let b = h.start(2);
    for s in [&a, &b] {
        let c = &s.streamer_credential.0;
        assert_eq!(c.len(), 64, "32 random bytes, hex");
        assert!(c.chars().all(|ch| ch.is_ascii_hexdigit()));
        assert!(
            s.argv
                .iter()
                .any(|arg| arg.starts_with("-PixelStreamingURL=") && arg.ends_with(c.as_str())),
            "{:?}",
            s.argv
        );
    }
    assert_ne!(a.streamer_credential, b.streamer_credential);
    // A Spawn logged with {:?} shows no credential, not even inside the URL.
    let shown = format!("{a:?}");
    assert!(!shown.contains(&a.streamer_credential.0), "{shown}");
    assert!(shown.contains("token=<redacted>"), "{shown}");
    // A retry on another port keeps the session's credential.
    h.sup.start_session(
        h.now,
        sid(3),
        &ApplicationId::parse("demo").unwrap(),
        StartOptions::default(),
    );
    let Some(Output::Spawn(first)) = h.take().into_iter().find(|o| matches!(o, Output::Spawn(_)))
    else {
        panic!("no spawn")
    };
    h.sup.port_unavailable(h.now, &sid(3));
    let Some(Output::Spawn(retry)) = h.take().into_iter().find(|o| matches!(o, Output::Spawn(_)))
    else {
        panic!("no retry")
    };
    assert_ne!(first.port, retry.port);
    assert_eq!(first.streamer_credential, retry.streamer_credential);
    // Never in the state file: sessions are not adopted by a later run, so nothing needs it.
    let state = serde_json::to_string(&h.persisted.clone().unwrap()).unwrap();
    assert!(!state.contains(&a.streamer_credential.0));
}

// ----- numbering after `welcome` -----

/// The sequence numbers of the events sent since the last `take`.
fn sent_seqs(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(NodeToCoordinator::Event(e)) => Some(e.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn numbering_cases_are_told_apart() {
    // (acked, node's last acked, node's last seq)
    assert_eq!(Numbering::of(3, 3, 5), Numbering::InStep);
    assert_eq!(Numbering::of(5, 3, 5), Numbering::InStep);
    assert_eq!(Numbering::of(0, 0, 0), Numbering::InStep);
    assert_eq!(Numbering::of(15, 0, 0), Numbering::NodeBehind);
    assert_eq!(Numbering::of(6, 3, 5), Numbering::NodeBehind);
    assert_eq!(Numbering::of(2, 3, 5), Numbering::CoordinatorBehind);
}

#[test]
fn a_node_that_lost_its_data_dir_numbers_on_from_the_coordinators_acked() {
    // A fresh data dir: the node would number from 1, but the coordinator has processed 15.
    let mut h = H::new();
    h.start(1); // seq 1 (starting), queued: the link is not up yet
    h.sup.link_up(15);
    let out = h.take();
    assert_eq!(
        sent_seqs(&out),
        vec![16],
        "the pending event renumbered to acked + 1"
    );
    let p = h.persisted.clone().unwrap();
    assert_eq!(p.next_seq, 17, "the new numbering is on disk");
    assert_eq!(
        p.unacked.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![16]
    );
    h.sup.streamer_identified(h.now, &sid(1));
    assert_eq!(sent_seqs(&h.take()), vec![17], "and goes on from there");
    h.sup.ack(17);
    h.pump();
    assert!(h.sup.all_acked());
}

#[test]
fn a_coordinator_that_lost_events_gets_the_pending_ones_from_its_acked_plus_one() {
    let mut h = H::new();
    h.sup.link_up(0);
    h.ready(1); // 1, 2
    h.start(2); // 3
    h.sup.ack(3);
    h.sup.link_down();
    h.exit(1, Some(0), None); // 4
    h.exit(2, Some(0), None); // 5
    h.take();
    // The coordinator comes back from a backup that had processed only up to 1.
    h.sup.link_up(1);
    let out = h.take();
    assert_eq!(sent_seqs(&out), vec![2, 3], "contiguous from acked + 1");
    let kinds: Vec<SessionId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(NodeToCoordinator::Event(e)) => Some(e.event.session_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![sid(1), sid(2)], "the same events, in order");
    assert_eq!(h.persisted.clone().unwrap().next_seq, 4);
}

#[test]
fn an_in_step_welcome_changes_no_number() {
    let mut h = H::new();
    h.sup.link_up(0);
    h.ready(1); // 1, 2
    h.start(2); // 3
    h.take();
    h.sup.ack(1);
    h.sup.link_down();
    h.sup.link_up(2);
    assert_eq!(sent_seqs(&h.take()), vec![3]);
    assert_eq!(h.persisted.clone().unwrap().next_seq, 4);
}

// ----- heartbeats after a (re)connect -----

#[test]
fn no_heartbeat_before_welcome_and_replayed_events_before_the_first_one() {
    // A restart with two orphans: one ready, one that never was.
    let mut h = H::new();
    h.ready(1);
    h.start(2);
    let state = h.persisted.clone().unwrap();
    let mut h2 = H::with(config(), Some(state));
    h2.take();
    // Connected, `hello` sent, no `welcome` yet: a heartbeat tick sends nothing.
    h2.sup.heartbeat(h2.now, Vec::new());
    assert!(h2.take().is_empty(), "nothing before welcome");
    h2.sup.link_up(0);
    h2.sup.heartbeat(h2.now, Vec::new());
    let out = h2.take();
    let order: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(NodeToCoordinator::Event(e)) => Some(match &e.event.kind {
                SessionEventKind::Ended(_) => "ended",
                _ => "event",
            }),
            Output::Send(NodeToCoordinator::Heartbeat(_)) => Some("heartbeat"),
            _ => None,
        })
        .collect();
    assert_eq!(order.last(), Some(&"heartbeat"), "{order:?}");
    assert_eq!(order.iter().filter(|k| **k == "heartbeat").count(), 1);
    assert_eq!(order.iter().filter(|k| **k == "ended").count(), 2);
    // A link that drops stops heartbeats again until the next welcome.
    h2.sup.link_down();
    h2.sup.heartbeat(h2.now, Vec::new());
    assert!(h2.take().is_empty());
}
