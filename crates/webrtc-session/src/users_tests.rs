//! Scenario tests of the users core: every rule of control, kicking, chat and names, on a fake
//! clock, and a property that control is never held by two or by someone gone.

use super::*;
use proptest::prelude::*;
use std::time::Duration;

struct T {
    users: Users,
    t0: Instant,
    at: Duration,
}

fn p(s: &str) -> PlayerId {
    PlayerId(s.to_owned())
}

impl T {
    fn new() -> T {
        T::with(Limits::default())
    }

    fn with(limits: Limits) -> T {
        T {
            users: Users::new(limits),
            t0: Instant::now(),
            at: Duration::ZERO,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.at,
            wall_ms: 1_800_000_000_000 + self.at.as_millis() as u64,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.at += d;
    }

    fn join_as(&mut self, who: &str, role: Role, link: Option<&str>) -> Result<(), Denied> {
        let now = self.now();
        self.users.join(
            now,
            Joining {
                player: p(who),
                name: Some(who.to_owned()),
                role,
                link: link.map(str::to_owned),
            },
        )
    }

    fn join(&mut self, who: &str, role: Role) {
        self.join_as(who, role, None).unwrap();
    }

    fn cmd(&mut self, who: &str, c: Command) -> Result<(), Denied> {
        let now = self.now();
        self.users.command(now, &p(who), c)
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.users.poll_output()).collect()
    }

    /// The control changes among the outputs so far, as (from, to) names.
    fn moves(&mut self) -> Vec<(Option<String>, Option<String>)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Control { from, to } => Some((from.map(|p| p.0), to.map(|p| p.0))),
                _ => None,
            })
            .collect()
    }

    fn controller(&self) -> Option<&str> {
        self.users.control().map(|p| p.as_str())
    }

    fn requested(&self) -> Vec<String> {
        self.users
            .presence()
            .into_iter()
            .filter(|u| u.requested)
            .map(|u| u.player.0)
            .collect()
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn the_owner_joins_with_control_and_everyone_sees_who_is_there() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    let out = t.outputs();
    assert_eq!(
        out[0],
        Output::History {
            to: p("alice"),
            lines: vec![]
        }
    );
    assert_eq!(
        out[1],
        Output::Control {
            from: None,
            to: Some(p("alice"))
        }
    );
    let Output::Users(list) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!(list.len(), 1);
    assert!(list[0].control && list[0].role == Role::Owner && list[0].name == "alice");
    assert!(t.users.may_send_input(&p("alice")));

    t.join("bob", Role::Viewer);
    assert_eq!(
        t.controller(),
        Some("alice"),
        "a viewer joining takes nothing"
    );
    assert!(!t.users.may_send_input(&p("bob")));
    let last = t.outputs().pop().unwrap();
    let Output::Users(list) = last else {
        panic!("{last:?}")
    };
    let names: Vec<_> = list.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"], "in the order they joined");
}

#[test]
fn a_viewer_asks_and_the_owner_gives() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.outputs();
    t.cmd("bob", Command::Request).unwrap();
    assert_eq!(t.controller(), Some("alice"));
    assert_eq!(t.requested(), ["bob"]);
    assert!(t.moves().is_empty());
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    assert_eq!(t.controller(), Some("bob"));
    assert_eq!(t.moves(), [(some("alice"), some("bob"))]);
    assert!(t.requested().is_empty(), "the request is answered");
    assert!(t.users.may_send_input(&p("bob")) && !t.users.may_send_input(&p("alice")));
}

#[test]
fn a_viewer_cannot_give_or_take_and_nobody_gives_to_a_stranger() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.join("carol", Role::Viewer);
    assert_eq!(
        t.cmd("bob", Command::Give(p("carol"))),
        Err(Denied::NotOwnerOrController)
    );
    assert_eq!(t.cmd("bob", Command::Take), Err(Denied::NotOwner));
    assert_eq!(t.cmd("bob", Command::Release), Err(Denied::NotInControl));
    assert_eq!(t.cmd("bob", Command::Reset), Err(Denied::NotOwner));
    assert_eq!(
        t.cmd("alice", Command::Give(p("nobody"))),
        Err(Denied::NoSuchUser)
    );
    assert_eq!(t.cmd("mallory", Command::Take), Err(Denied::NotJoined));
    assert_eq!(t.controller(), Some("alice"), "nothing changed");
}

#[test]
fn the_one_in_control_hands_it_on_and_the_owner_takes_it_back() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.join("carol", Role::Viewer);
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.cmd("bob", Command::Give(p("carol"))).unwrap();
    assert_eq!(t.controller(), Some("carol"));
    assert_eq!(
        t.cmd("bob", Command::Give(p("bob"))),
        Err(Denied::NotOwnerOrController),
        "bob no longer has it"
    );
    t.cmd("alice", Command::Take).unwrap();
    assert_eq!(t.controller(), Some("alice"));
    assert_eq!(
        t.moves(),
        [
            (None, some("alice")),
            (some("alice"), some("bob")),
            (some("bob"), some("carol")),
            (some("carol"), some("alice")),
        ]
    );
}

#[test]
fn a_controller_gets_free_control_by_asking_and_waits_when_it_is_held() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("dave", Role::Controller);
    assert_eq!(t.controller(), Some("alice"), "held: joining takes nothing");
    t.cmd("dave", Command::Request).unwrap();
    assert_eq!(t.requested(), ["dave"]);
    t.cmd("alice", Command::Release).unwrap();
    assert_eq!(t.controller(), None, "released: nobody");
    assert_eq!(t.requested(), ["dave"], "a request waits for an answer");
    t.cmd("dave", Command::Request).unwrap();
    assert_eq!(t.controller(), Some("dave"));
    assert!(t.requested().is_empty());
    // A viewer never gets free control by asking.
    t.cmd("dave", Command::Release).unwrap();
    t.join("bob", Role::Viewer);
    t.cmd("bob", Command::Request).unwrap();
    assert_eq!(t.controller(), None);
    assert_eq!(t.requested(), ["bob"]);
    // … and may withdraw.
    t.cmd("bob", Command::Release).unwrap();
    assert!(t.requested().is_empty());
}

#[test]
fn reset_leaves_nobody_in_control_and_drops_every_request() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.join("carol", Role::Viewer);
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.cmd("carol", Command::Request).unwrap();
    t.cmd("alice", Command::Reset).unwrap();
    assert_eq!(t.controller(), None);
    assert!(t.requested().is_empty());
}

#[test]
fn the_controller_leaving_returns_control_to_an_owner_or_to_nobody() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.users.leave(&p("bob"));
    assert_eq!(t.controller(), Some("alice"));

    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.users.leave(&p("alice"));
    assert_eq!(
        t.controller(),
        Some("bob"),
        "the owner leaving takes nothing"
    );
    t.users.leave(&p("bob"));
    assert_eq!(t.controller(), None);
    assert!(t.users.is_empty());
    assert_eq!(
        t.moves(),
        [
            (None, some("alice")),
            (some("alice"), some("bob")),
            (some("bob"), None)
        ]
    );
    t.users.leave(&p("bob")); // twice: nothing
    assert!(t.outputs().is_empty());
}

#[test]
fn the_owner_leaving_and_rejoining_keeps_the_session_as_it_was() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.users.leave(&p("alice"));
    // The owner's page reloads: a new connection with the owner's token.
    t.join("alice2", Role::Owner);
    assert_eq!(
        t.controller(),
        Some("bob"),
        "control held by bob stays with bob"
    );
    t.cmd("alice2", Command::Take).unwrap();
    assert_eq!(t.controller(), Some("alice2"), "and the owner can take it");

    // With nobody in control, the returning owner has it.
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    t.cmd("alice", Command::Release).unwrap();
    t.users.leave(&p("alice"));
    t.join("alice2", Role::Owner);
    assert_eq!(t.controller(), Some("alice2"));
}

#[test]
fn a_kicked_user_cannot_rejoin_with_the_same_link_until_allowed() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join_as("bob", Role::Viewer, Some("lnk_1")).unwrap();
    t.join_as("carol", Role::Viewer, Some("lnk_2")).unwrap();
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.outputs();
    assert_eq!(
        t.cmd("carol", Command::Kick(p("bob"))),
        Err(Denied::NotOwner)
    );
    assert_eq!(
        t.cmd("alice", Command::Kick(p("alice"))),
        Err(Denied::CannotKickOwner)
    );
    t.cmd("alice", Command::Kick(p("bob"))).unwrap();
    let out = t.outputs();
    assert!(out.contains(&Output::Disconnect {
        player: p("bob"),
        reason: Denied::Kicked.to_string()
    }));
    assert!(out.contains(&Output::Control {
        from: Some(p("bob")),
        to: Some(p("alice"))
    }));
    assert_eq!(t.users.role(&p("bob")), None, "out at once");
    assert_eq!(t.controller(), Some("alice"));
    // The same link, a new connection (a reload): refused. Another link still works.
    assert_eq!(
        t.join_as("bob2", Role::Viewer, Some("lnk_1")),
        Err(Denied::Kicked)
    );
    t.join_as("dave", Role::Viewer, Some("lnk_2")).unwrap();
    assert_eq!(
        t.cmd("carol", Command::Allow("lnk_1".into())),
        Err(Denied::NotOwner)
    );
    t.cmd("alice", Command::Allow("lnk_1".into())).unwrap();
    t.join_as("bob2", Role::Viewer, Some("lnk_1")).unwrap();
}

#[test]
fn a_revoked_link_closes_its_users_and_stays_refused_even_if_allowed() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.join_as("bob", Role::Controller, Some("lnk_1")).unwrap();
    t.join_as("bob-tab", Role::Controller, Some("lnk_1"))
        .unwrap();
    t.join_as("carol", Role::Viewer, Some("lnk_2")).unwrap();
    t.cmd("alice", Command::Give(p("bob"))).unwrap();
    t.outputs();
    t.users.revoke("lnk_1");
    let out = t.outputs();
    for who in ["bob", "bob-tab"] {
        assert!(out.contains(&Output::Disconnect {
            player: p(who),
            reason: Denied::Revoked.to_string()
        }));
        assert_eq!(t.users.role(&p(who)), None);
    }
    assert_eq!(
        t.controller(),
        Some("alice"),
        "control goes back to the owner"
    );
    assert_eq!(
        t.users.role(&p("carol")),
        Some(Role::Viewer),
        "another link stays"
    );
    // Revoking again changes nothing; the owner's allow does not undo it.
    t.users.revoke("lnk_1");
    assert!(
        !t.outputs()
            .iter()
            .any(|o| matches!(o, Output::Disconnect { .. })),
        "nobody left to close"
    );
    t.cmd("alice", Command::Allow("lnk_1".into())).unwrap();
    assert_eq!(
        t.join_as("bob2", Role::Controller, Some("lnk_1")),
        Err(Denied::Revoked)
    );
    t.join_as("dave", Role::Viewer, Some("lnk_2")).unwrap();
}

#[test]
fn chat_is_checked_limited_and_replayed_to_joiners() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    t.outputs();
    assert_eq!(
        t.cmd("alice", Command::Chat("   ".into())),
        Err(Denied::ChatLength(500))
    );
    assert_eq!(
        t.cmd("alice", Command::Chat("x".repeat(501))),
        Err(Denied::ChatLength(500))
    );
    t.cmd("alice", Command::Chat("é".repeat(500))).unwrap();
    let out = t.outputs();
    let [Output::Chat(line)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((line.id, line.name.as_str()), (1, "alice"));
    assert_eq!(line.text.chars().count(), 500, "characters, not bytes");
    // Control characters go (a newline stays); surrounding space is trimmed.
    t.cmd("alice", Command::Chat("  hi\u{0}\u{7}\nthere ".into()))
        .unwrap();
    let Some(Output::Chat(line)) = t.outputs().pop() else {
        panic!()
    };
    assert_eq!(line.text, "hi\nthere");
    // A burst of 5, then one per 2 s.
    for i in 0..3 {
        t.cmd("alice", Command::Chat(format!("m{i}"))).unwrap();
    }
    assert_eq!(
        t.cmd("alice", Command::Chat("one too many".into())),
        Err(Denied::ChatTooFast)
    );
    t.advance(Duration::from_millis(1_900));
    assert_eq!(
        t.cmd("alice", Command::Chat("still".into())),
        Err(Denied::ChatTooFast)
    );
    t.advance(Duration::from_millis(100));
    t.cmd("alice", Command::Chat("now".into())).unwrap();
    assert_eq!(
        t.users.chat.back().map(|l| l.at_ms),
        Some(1_800_000_002_000),
        "wall time of the message"
    );
}

#[test]
fn the_last_fifty_messages_are_replayed_also_after_a_reload() {
    let mut t = T::new();
    t.join("alice", Role::Owner);
    for i in 1..=60 {
        t.advance(Duration::from_secs(2));
        t.cmd("alice", Command::Chat(format!("message {i}")))
            .unwrap();
    }
    t.join("bob", Role::Viewer);
    let history = t.outputs().into_iter().find_map(|o| match o {
        Output::History { to, lines } if to == p("bob") => Some(lines),
        _ => None,
    });
    let lines = history.expect("bob gets the history");
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0].text, "message 11");
    assert_eq!(lines[49].text, "message 60");
    assert!(lines.windows(2).all(|w| w[0].id + 1 == w[1].id));
    // Bob reloads: a new connection gets the same history.
    t.users.leave(&p("bob"));
    t.join("bob2", Role::Viewer);
    let again = t.outputs().into_iter().find_map(|o| match o {
        Output::History { to, lines } if to == p("bob2") => Some(lines),
        _ => None,
    });
    assert_eq!(again.unwrap(), lines);
}

#[test]
fn a_full_session_refuses_with_a_clear_reason() {
    let mut t = T::with(Limits {
        max_users: 2,
        ..Limits::default()
    });
    t.join("alice", Role::Owner);
    t.join("bob", Role::Viewer);
    let e = t.join_as("carol", Role::Viewer, None).unwrap_err();
    assert_eq!(e, Denied::Full(2));
    assert_eq!(e.to_string(), "the session is full (2 users at most)");
    t.users.leave(&p("bob"));
    t.join("carol", Role::Viewer);
}

#[test]
fn names_are_cleaned_and_missing_ones_are_made_up() {
    let mut t = T::new();
    let now = t.now();
    let mut join = |who: &str, name: Option<&str>, role| {
        t.users
            .join(
                now,
                Joining {
                    player: p(who),
                    name: name.map(str::to_owned),
                    role,
                    link: None,
                },
            )
            .unwrap()
    };
    join("a", None, Role::Owner);
    join("b", Some("  \u{1b}[31mEve\u{0}  "), Role::Viewer);
    join("c", Some(&"x".repeat(100)), Role::Viewer);
    join("d", Some("   "), Role::Viewer);
    join("e", None, Role::Controller);
    let names: Vec<String> = t.users.presence().into_iter().map(|u| u.name).collect();
    assert_eq!(names[0], "Owner");
    assert_eq!(names[1], "[31mEve");
    assert_eq!(names[2].chars().count(), 40);
    assert_eq!(names[3], "Guest 1");
    assert_eq!(names[4], "Guest 2");
}

#[derive(Clone, Debug)]
enum Step {
    Join(u8, Role),
    Leave(u8),
    Cmd(u8, u8, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0u8..5,
            prop::sample::select(vec![Role::Owner, Role::Controller, Role::Viewer])
        )
            .prop_map(|(u, r)| Step::Join(u, r)),
        (0u8..5).prop_map(Step::Leave),
        (0u8..5, 0u8..7, 0u8..5).prop_map(|(u, c, t)| Step::Cmd(u, c, t)),
    ]
}

proptest! {
    /// Whatever users do: control is held by one user who is there, or by nobody; each
    /// `Control` output starts where the previous one ended, and the last one names the holder;
    /// a refused command changes nothing.
    #[test]
    fn control_is_held_by_one_present_user_or_nobody(steps in prop::collection::vec(step(), 0..60)) {
        let mut t = T::new();
        let name = |u: u8| format!("u{u}");
        let mut holder: Option<PlayerId> = None;
        for s in steps {
            let before = (t.users.control().cloned(), t.users.presence());
            let refused = match s {
                Step::Join(u, r) => t.join_as(&name(u), r, None).is_err(),
                Step::Leave(u) => { t.users.leave(&p(&name(u))); false }
                Step::Cmd(u, c, target) => {
                    let target = p(&name(target));
                    let cmd = match c {
                        0 => Command::Request,
                        1 => Command::Give(target),
                        2 => Command::Take,
                        3 => Command::Release,
                        4 => Command::Reset,
                        5 => Command::Kick(target),
                        _ => Command::Chat("hi".into()),
                    };
                    t.cmd(&name(u), cmd).is_err()
                }
            };
            if refused {
                prop_assert_eq!(&before, &(t.users.control().cloned(), t.users.presence()));
            }
            for o in t.outputs() {
                if let Output::Control { from, to } = o {
                    prop_assert_eq!(&from, &holder);
                    prop_assert_ne!(&from, &to);
                    holder = to;
                }
            }
            prop_assert_eq!(t.users.control(), holder.as_ref());
            if let Some(h) = &holder {
                prop_assert!(t.users.role(h).is_some(), "{} holds control but is gone", h);
            }
            let flagged = t.users.presence().iter().filter(|u| u.control).count();
            prop_assert_eq!(flagged, usize::from(holder.is_some()));
        }
    }
}
