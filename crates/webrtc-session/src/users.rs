//! The users of a shared session: who is there, with which role, who has control, the chat. A
//! sans-IO core like the [`router`](crate::router): inputs come with the time, outputs are
//! queued for the shell ([`Users::poll_output`]); it never reads a clock or touches a socket.
//!
//! Each player connection is one user. Its role comes from the token it joined with:
//!
//! | role | may |
//! |---|---|
//! | `owner` | everything below, and `take` control, `reset` it, `kick` a user and `allow` a kicked link back |
//! | `controller` | get control when nobody has it, just by asking |
//! | `viewer` | watch, chat, and ask for control, which the owner or the controller may give |
//!
//! Control, in neko's words: exactly one user has it at a time, or nobody.
//!
//! ```text
//!   request ── nobody has control and the asker is an owner or controller ──▶ the asker has it
//!           └─ otherwise ──▶ the request is shown to everyone until given, reset or withdrawn
//!   give(to)   the owner or the one in control hands it to any user
//!   take       the owner takes it
//!   release    the one in control lets it go: nobody has it (one who asked withdraws)
//!   reset      the owner: nobody has it, every request is dropped
//!   the one in control leaves or is kicked ──▶ an owner still there has it, else nobody
//!   an owner or controller joins while nobody has it ──▶ they have it
//! ```
//!
//! Only the one in control may send input; [`Output::Control`] tells the shell whose right
//! changed so it can take the input channel from one and give it to the other.

use crate::router::{Bucket, RateLimit};
use pxs_protocol::signalling::PlayerId;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// A user's role, from the token they joined with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Owner,
    Controller,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Controller => "controller",
            Role::Viewer => "viewer",
        }
    }
}

/// The time, as the shell read it: monotonic for the rate limits, the wall clock (ms since the
/// Unix epoch) for what users are shown.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest chat message, in characters.
    pub chat_chars: usize,
    /// Chat messages kept and replayed to a joiner.
    pub chat_history: usize,
    /// Chat messages per user.
    pub chat_rate: RateLimit,
    /// Users at once (the title's `max_players`); 0: no limit.
    pub max_users: usize,
    /// Longest display name, in characters.
    pub name_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            chat_chars: 500,
            chat_history: 50,
            chat_rate: RateLimit {
                per_second: 0.5,
                burst: 5.0,
            },
            max_users: 0,
            name_chars: 40,
        }
    }
}

/// Someone joining.
#[derive(Clone, Debug)]
pub struct Joining {
    pub player: PlayerId,
    /// From the token; `None` or unusable: "Guest n" (or "Owner").
    pub name: Option<String>,
    pub role: Role,
    /// The share link the token came from, if any: a kicked user's link stays refused.
    pub link: Option<String>,
}

/// Why a join or a command was refused; `Display` is the message for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the session is full ({0} users at most)")]
    Full(usize),
    #[error("you were removed from this session; ask its owner to let you back in")]
    Kicked,
    #[error("the invitation you joined with was withdrawn")]
    Revoked,
    #[error("only the session's owner may do that")]
    NotOwner,
    #[error("only the session's owner or the user in control may do that")]
    NotOwnerOrController,
    #[error("you do not have control")]
    NotInControl,
    #[error("no such user in this session")]
    NoSuchUser,
    #[error("the owner cannot be removed")]
    CannotKickOwner,
    #[error("a chat message has 1 to {0} characters")]
    ChatLength(usize),
    #[error("too many chat messages; wait a moment")]
    ChatTooFast,
    #[error("you are not in this session")]
    NotJoined,
}

/// A chat message, as every user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLine {
    /// Numbered from 1 in the session.
    pub id: u64,
    pub from: PlayerId,
    pub name: String,
    pub text: String,
    pub at_ms: u64,
}

/// One user, as every user sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub player: PlayerId,
    pub name: String,
    pub role: Role,
    pub control: bool,
    /// Asked for control and waits.
    pub requested: bool,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Everyone: who is there now (sent after any change of users, control or requests).
    Users(Vec<Presence>),
    /// Everyone: a new chat message.
    Chat(ChatLine),
    /// One joiner: the chat so far.
    History { to: PlayerId, lines: Vec<ChatLine> },
    /// Control moved: `from` may no longer send input, `to` now may.
    Control {
        from: Option<PlayerId>,
        to: Option<PlayerId>,
    },
    /// Close this user's connection (kicked).
    Disconnect { player: PlayerId, reason: String },
}

/// A command from a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Request,
    Give(PlayerId),
    Take,
    Release,
    Reset,
    Kick(PlayerId),
    /// Let the users of a kicked share link join again.
    Allow(String),
    Chat(String),
}

#[derive(Debug)]
struct User {
    name: String,
    role: Role,
    link: Option<String>,
    /// When they asked for control, if they wait for it (orders the requests).
    requested: Option<u64>,
    /// Join order, for a stable list and for who inherits control.
    seq: u64,
    chat: Bucket,
}

#[derive(Debug)]
pub struct Users {
    limits: Limits,
    users: BTreeMap<PlayerId, User>,
    control: Option<PlayerId>,
    chat: VecDeque<ChatLine>,
    next_chat: u64,
    next_seq: u64,
    guests: u64,
    /// Share links whose users were kicked.
    kicked: Vec<String>,
    /// Share links the owner revoked (at the coordinator): refused for good.
    revoked: Vec<String>,
    outputs: VecDeque<Output>,
}

impl Users {
    pub fn new(limits: Limits) -> Users {
        Users {
            limits,
            users: BTreeMap::new(),
            control: None,
            chat: VecDeque::new(),
            next_chat: 1,
            next_seq: 1,
            guests: 0,
            kicked: Vec::new(),
            revoked: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Who has control.
    pub fn control(&self) -> Option<&PlayerId> {
        self.control.as_ref()
    }

    /// Whether `player` may send input now.
    pub fn may_send_input(&self, player: &PlayerId) -> bool {
        self.control.as_ref() == Some(player)
    }

    pub fn role(&self, player: &PlayerId) -> Option<Role> {
        self.users.get(player).map(|u| u.role)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Everyone, in the order they joined.
    pub fn presence(&self) -> Vec<Presence> {
        let mut list: Vec<(&PlayerId, &User)> = self.users.iter().collect();
        list.sort_by_key(|(_, u)| u.seq);
        list.into_iter()
            .map(|(p, u)| Presence {
                player: p.clone(),
                name: u.name.clone(),
                role: u.role,
                control: self.control.as_ref() == Some(p),
                requested: u.requested.is_some(),
            })
            .collect()
    }

    /// A player connection joins. Refused when the session is full or its share link was
    /// kicked (and not allowed back since).
    pub fn join(&mut self, now: Now, j: Joining) -> Result<(), Denied> {
        if j.link.as_ref().is_some_and(|l| self.revoked.contains(l)) {
            return Err(Denied::Revoked);
        }
        if j.link.as_ref().is_some_and(|l| self.kicked.contains(l)) {
            return Err(Denied::Kicked);
        }
        if self.limits.max_users > 0
            && self.users.len() >= self.limits.max_users
            && !self.users.contains_key(&j.player)
        {
            return Err(Denied::Full(self.limits.max_users));
        }
        let name = self.display_name(j.name.as_deref(), j.role);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.users.insert(
            j.player.clone(),
            User {
                name,
                role: j.role,
                link: j.link,
                requested: None,
                seq,
                chat: Bucket::new(self.limits.chat_rate, now.mono),
            },
        );
        self.outputs.push_back(Output::History {
            to: j.player.clone(),
            lines: self.chat.iter().cloned().collect(),
        });
        if self.control.is_none() && j.role != Role::Viewer {
            self.move_control(Some(j.player));
        }
        self.publish();
        Ok(())
    }

    /// A player connection is gone. If it had control, an owner still there gets it, else
    /// nobody.
    pub fn leave(&mut self, player: &PlayerId) {
        if self.users.remove(player).is_none() {
            return;
        }
        if self.control.as_ref() == Some(player) {
            let heir = self.first_owner();
            self.move_control(heir);
        }
        self.publish();
    }

    /// A share link was revoked: its users are closed, and it cannot join again (unlike a
    /// kick, the owner's `allow` does not undo it).
    pub fn revoke(&mut self, link: &str) {
        if !self.revoked.iter().any(|l| l == link) {
            self.revoked.push(link.to_owned());
        }
        let gone: Vec<PlayerId> = self
            .users
            .iter()
            .filter(|(_, u)| u.link.as_deref() == Some(link))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.outputs.push_back(Output::Disconnect {
                player: p.clone(),
                reason: Denied::Revoked.to_string(),
            });
            self.leave(&p);
        }
    }

    /// A command from `from`.
    pub fn command(&mut self, now: Now, from: &PlayerId, cmd: Command) -> Result<(), Denied> {
        let role = self.users.get(from).ok_or(Denied::NotJoined)?.role;
        let in_control = self.control.as_ref() == Some(from);
        match cmd {
            Command::Request => {
                if in_control {
                    return Ok(());
                }
                if self.control.is_none() && role != Role::Viewer {
                    self.move_control(Some(from.clone()));
                } else if let Some(u) = self.users.get_mut(from)
                    && u.requested.is_none()
                {
                    u.requested = Some(self.next_seq);
                    self.next_seq += 1;
                }
            }
            Command::Give(to) => {
                if role != Role::Owner && !in_control {
                    return Err(Denied::NotOwnerOrController);
                }
                if !self.users.contains_key(&to) {
                    return Err(Denied::NoSuchUser);
                }
                self.move_control(Some(to));
            }
            Command::Take => {
                if role != Role::Owner {
                    return Err(Denied::NotOwner);
                }
                self.move_control(Some(from.clone()));
            }
            Command::Release => {
                if in_control {
                    self.move_control(None);
                } else if let Some(u) = self.users.get_mut(from)
                    && u.requested.is_some()
                {
                    // Withdraws the request.
                    u.requested = None;
                } else {
                    return Err(Denied::NotInControl);
                }
            }
            Command::Reset => {
                if role != Role::Owner {
                    return Err(Denied::NotOwner);
                }
                for u in self.users.values_mut() {
                    u.requested = None;
                }
                self.move_control(None);
            }
            Command::Kick(target) => {
                if role != Role::Owner {
                    return Err(Denied::NotOwner);
                }
                let victim = self.users.get(&target).ok_or(Denied::NoSuchUser)?;
                if victim.role == Role::Owner {
                    return Err(Denied::CannotKickOwner);
                }
                if let Some(link) = &victim.link
                    && !self.kicked.contains(link)
                {
                    self.kicked.push(link.clone());
                }
                self.outputs.push_back(Output::Disconnect {
                    player: target.clone(),
                    reason: Denied::Kicked.to_string(),
                });
                // Its connection closes later; it is out of the session now.
                self.leave(&target);
                return Ok(());
            }
            Command::Allow(link) => {
                if role != Role::Owner {
                    return Err(Denied::NotOwner);
                }
                self.kicked.retain(|l| *l != link);
                return Ok(());
            }
            Command::Chat(text) => {
                return self.chat(now, from, &text);
            }
        }
        self.publish();
        Ok(())
    }

    fn chat(&mut self, now: Now, from: &PlayerId, text: &str) -> Result<(), Denied> {
        let text: String = text
            .trim()
            .chars()
            .filter(|c| !c.is_control() || *c == '\n')
            .collect();
        let n = text.chars().count();
        if n == 0 || n > self.limits.chat_chars {
            return Err(Denied::ChatLength(self.limits.chat_chars));
        }
        let user = self.users.get_mut(from).ok_or(Denied::NotJoined)?;
        if !user.chat.take(now.mono) {
            return Err(Denied::ChatTooFast);
        }
        let line = ChatLine {
            id: self.next_chat,
            from: from.clone(),
            name: user.name.clone(),
            text,
            at_ms: now.wall_ms,
        };
        self.next_chat += 1;
        self.chat.push_back(line.clone());
        while self.chat.len() > self.limits.chat_history {
            self.chat.pop_front();
        }
        self.outputs.push_back(Output::Chat(line));
        Ok(())
    }

    /// Gives control to `to` (or nobody), clearing its request; says so when it changed.
    fn move_control(&mut self, to: Option<PlayerId>) {
        if let Some(u) = to.as_ref().and_then(|p| self.users.get_mut(p)) {
            u.requested = None;
        }
        if self.control == to {
            return;
        }
        let from = std::mem::replace(&mut self.control, to.clone());
        self.outputs.push_back(Output::Control { from, to });
    }

    fn first_owner(&self) -> Option<PlayerId> {
        self.users
            .iter()
            .filter(|(_, u)| u.role == Role::Owner)
            .min_by_key(|(_, u)| u.seq)
            .map(|(p, _)| p.clone())
    }

    fn publish(&mut self) {
        self.outputs.push_back(Output::Users(self.presence()));
    }

    /// A name to show: the token's, cleaned (no control characters, at most `name_chars`), or
    /// "Owner" / "Guest n".
    fn display_name(&mut self, name: Option<&str>, role: Role) -> String {
        let clean: String = name
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(self.limits.name_chars)
            .collect();
        let clean = clean.trim();
        if !clean.is_empty() {
            return clean.to_owned();
        }
        if role == Role::Owner {
            return "Owner".to_owned();
        }
        self.guests += 1;
        format!("Guest {}", self.guests)
    }
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;
