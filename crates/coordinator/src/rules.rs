//! The coordinator's decisions as pure functions of records and the time: what a request may
//! ask for, where a new session goes (admission), which queued sessions start (promotion), and
//! what the timer does to each session it looks at. `engine` loads the records, calls these in
//! the transaction that holds the placement lock, and stores what they say; these functions do
//! no I/O, so they are tested here with plain values and properties.
//!
//! Which node takes a session over an interval is `placement::place`; how a session's row moves
//! on a node's report is `model`.

use crate::error::{ApiError, Kind};
use crate::model::{NodeRow, SessionRow, TitleRow};
use crate::placement::{self, Interval, Millis, NodeSlots};
use pxs_protocol::api::{
    self, EndReason, MAX_IMAGE_URL, MAX_TITLE_DESCRIPTION, MAX_TITLE_NAME, NewSession,
    SessionState, TitleId, TitleSource, Visibility,
};
use pxs_protocol::node::{ApplicationInfo, NodeId, SessionId};

/// Longest session we accept (a year): keeps arithmetic far from overflow.
pub const MAX_DURATION_S: u64 = 366 * 24 * 3600;
/// Furthest `start_at` we accept.
pub const MAX_AHEAD_MS: Millis = 366 * 24 * 3600 * 1000;

// ---------------------------------------------------------------------------------------------
// Requests

/// What `POST /api/v1/sessions` asks for, checked against the limits that need no records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// When a scheduled session's window opens; `None`: now.
    pub start_at: Option<Millis>,
    /// Seconds, as asked (the title may cap it, see [`duration`]).
    pub duration: Option<u64>,
}

pub fn check_new_session(req: &NewSession, now: Millis) -> Result<Wanted, ApiError> {
    if let Some(0) = req.duration {
        return Err(ApiError::bad_request("duration: at least 1 second"));
    }
    if req.duration.is_some_and(|d| d > MAX_DURATION_S) {
        return Err(ApiError::bad_request(format!(
            "duration: at most {MAX_DURATION_S} seconds"
        )));
    }
    let start_at = match &req.start_at {
        None => None,
        Some(text) => Some(future_time(
            "start_at",
            text,
            now,
            "is not an RFC 3339 time like 2026-11-25T18:00:00Z",
        )?),
    };
    Ok(Wanted {
        start_at,
        duration: req.duration,
    })
}

/// A session's window length in seconds under `title`'s `max_duration` (0: none): what was
/// asked, or the title's maximum when nothing was; `None`: unbounded. A scheduled session
/// needs one.
pub fn duration(wanted: &Wanted, title: &TitleRow) -> Result<Option<u64>, ApiError> {
    let d = match (wanted.duration, title.max_duration) {
        (Some(d), max) if max > 0 && d > max => {
            return Err(ApiError::bad_request(format!(
                "duration: title `{}` allows at most {max} seconds",
                title.id
            )));
        }
        (Some(d), _) => Some(d),
        (None, 0) => None,
        (None, max) => Some(max),
    };
    if wanted.start_at.is_some() && d.is_none() {
        return Err(ApiError::bad_request(format!(
            "duration: a scheduled session needs one (title `{}` has no max_duration)",
            title.id
        )));
    }
    Ok(d)
}

/// What an anonymous client address's limit says of its new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressCheck {
    /// Under the limit: admitted as anyone's.
    Free,
    /// At the limit: it waits in the queue until one of the address's sessions ends.
    Wait,
}

/// An anonymous address that `holding` sessions (booked, starting or ready) asks for one more,
/// now or booked (`booking`). At `limit` sessions a request for now waits (colleagues behind
/// one office address queue rather than being refused); a booking cannot wait: 429, saying the
/// limit.
pub fn anonymous_admission(
    holding: i64,
    limit: u32,
    booking: bool,
) -> Result<AddressCheck, ApiError> {
    if holding < i64::from(limit) {
        return Ok(AddressCheck::Free);
    }
    if booking {
        return Err(ApiError::new(
            Kind::TooManyRequests,
            format!(
                "users without an access token may have {limit} sessions running or booked at \
                 once from one network address, and yours has {holding}; end or cancel one first"
            ),
        ));
    }
    Ok(AddressCheck::Wait)
}

/// An anonymous address with `waiting` requests in queues may queue one more while it has
/// fewer than `max_waiting`; else 429, saying the limit.
pub fn anonymous_may_wait(waiting: i64, max_waiting: u32) -> Result<(), ApiError> {
    if waiting >= i64::from(max_waiting) {
        return Err(ApiError::new(
            Kind::TooManyRequests,
            format!(
                "users without an access token may have {max_waiting} requests waiting at once \
                 from one network address; cancel one first"
            ),
        ));
    }
    Ok(())
}

/// A queued session waits for its address rather than for a slot: its owner is anonymous and
/// its address holds `limit` sessions already (`holding`, by owner).
pub fn held_by_address(
    s: &SessionRow,
    holding: &std::collections::HashMap<String, i64>,
    limit: u32,
) -> bool {
    matches!(s.owner, crate::auth::Owner::Anonymous(_))
        && holding.get(&s.owner.to_string()).copied().unwrap_or(0) >= i64::from(limit)
}

/// A share link lives this long unless its owner asks otherwise (a day).
pub const LINK_LIFETIME_DEFAULT_S: u64 = 24 * 3600;
/// The shortest and longest life a share link may be given (a minute, 30 days).
pub const LINK_LIFETIME_S: std::ops::RangeInclusive<u64> = 60..=30 * 24 * 3600;
/// Share links a session may have that are not revoked.
pub const MAX_LINKS: i64 = 100;
/// The longest display name a join URL may carry, in characters.
pub const MAX_NAME_CHARS: usize = 40;

/// How long a new share link lives, in seconds: `expires_in` as asked, or a day.
pub fn link_lifetime(expires_in: Option<u64>) -> Result<u64, ApiError> {
    let s = expires_in.unwrap_or(LINK_LIFETIME_DEFAULT_S);
    if !LINK_LIFETIME_S.contains(&s) {
        return Err(ApiError::bad_request(format!(
            "expires_in: from {} to {} seconds (30 days)",
            LINK_LIFETIME_S.start(),
            LINK_LIFETIME_S.end()
        )));
    }
    Ok(s)
}

/// A session with `open` share links not revoked may have another one.
pub fn link_quota(open: i64) -> Result<(), ApiError> {
    if open >= MAX_LINKS {
        return Err(ApiError::conflict(format!(
            "this session has {MAX_LINKS} share links already; revoke one to make another"
        )));
    }
    Ok(())
}

/// The display name a join URL carries, from `?name=`: control characters removed, surrounding
/// space trimmed, then 1 to 40 characters.
pub fn display_name(raw: &str) -> Result<String, ApiError> {
    let name: String = raw.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, without control characters \
             (this one has {n} after trimming)"
        )));
    }
    Ok(name.to_owned())
}

/// The drain deadline an admin asked for, in ms: seconds from now or an RFC 3339 time.
pub fn drain_deadline(
    d: Option<&api::DrainDeadline>,
    now: Millis,
) -> Result<Option<Millis>, ApiError> {
    let at = match d {
        None => return Ok(None),
        Some(api::DrainDeadline::In(s)) => {
            if *s > MAX_DURATION_S {
                return Err(ApiError::bad_request(format!(
                    "deadline: at most {MAX_DURATION_S} seconds"
                )));
            }
            now.saturating_add(seconds(*s))
        }
        Some(api::DrainDeadline::At(text)) => future_time(
            "deadline",
            text,
            now,
            "is neither seconds nor an RFC 3339 time like 2026-11-25T18:00:00Z",
        )?,
    };
    Ok(Some(at))
}

/// `text` of request field `field` as a time from now (a little in the past counts as now) to a
/// year ahead; `not_a_time` finishes the message when it is no RFC 3339 time.
fn future_time(field: &str, text: &str, now: Millis, not_a_time: &str) -> Result<Millis, ApiError> {
    let t = parse_rfc3339(text).ok_or_else(|| {
        ApiError::bad_request(format!("{field}: `{}` {not_a_time}", truncate(text, 64)))
    })?;
    if t < now - 5_000 {
        return Err(ApiError::bad_request(format!("{field}: is in the past")));
    }
    if t > now + MAX_AHEAD_MS {
        return Err(ApiError::bad_request(format!(
            "{field}: more than a year ahead"
        )));
    }
    Ok(t.max(now))
}

pub fn check_label(name: &str) -> Result<(), ApiError> {
    check_text("name", name, 1, 200, false)
}

/// `value` has `min..=max` characters (not bytes) and no control characters (newlines and tabs
/// only where `multiline`): NUL would be stored by SQLite and refused by PostgreSQL.
fn check_text(
    key: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max || (min > 0 && value.trim().is_empty()) {
        return Err(ApiError::bad_request(format!(
            "{key}: {min} to {max} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r')))
    {
        return Err(ApiError::bad_request(format!(
            "{key}: control characters are not allowed"
        )));
    }
    Ok(())
}

pub fn check_title(t: &TitleRow) -> Result<(), ApiError> {
    check_text("name", &t.name, 1, MAX_TITLE_NAME, false)?;
    check_text(
        "description",
        &t.description,
        0,
        MAX_TITLE_DESCRIPTION,
        true,
    )?;
    if let Some(u) = &t.image_url {
        check_text("image_url", u, 1, MAX_IMAGE_URL, false)?;
        if !(u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/')) {
            return Err(ApiError::bad_request(
                "image_url: an http(s) URL or a path starting with /",
            ));
        }
    }
    for (key, v) in [
        ("idle_timeout", t.idle_timeout),
        ("empty_timeout", t.empty_timeout),
        ("max_duration", t.max_duration),
    ] {
        if v > MAX_DURATION_S {
            return Err(ApiError::bad_request(format!(
                "{key}: at most {MAX_DURATION_S} seconds"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Titles from the applications nodes advertise

/// The default idle and empty timeouts of a title (seconds), when neither an admin nor the
/// node says.
pub const DEFAULT_IDLE_TIMEOUT: u64 = 600;
pub const DEFAULT_EMPTY_TIMEOUT: u64 = 120;

/// The title the coordinator makes of application `app` a node advertises: its id is the
/// application's, its catalog data and limits the application's, cut to what a title may hold
/// (see [`check_title`]); whatever was cut or dropped is said in the notes, for the log. A node
/// is not trusted to send what its config validation allows: a name is cleaned of control
/// characters and cut (or the id, when nothing is left), a description cut, an `image_url` that
/// is not a plain http(s) URL dropped, timeouts capped. `None`: the id cannot be a title's.
pub fn title_of_application(
    app: &ApplicationInfo,
    approved: bool,
    now: Millis,
) -> Option<(TitleRow, Vec<String>)> {
    let id = TitleId::parse(app.id.as_str()).ok()?;
    let mut notes = Vec::new();
    let name = clean_text("name", &app.name, MAX_TITLE_NAME, false, &mut notes);
    let name = name.trim().to_owned();
    let name = if name.is_empty() {
        notes.push("name: empty; the application id is used".into());
        app.id.to_string()
    } else {
        name
    };
    let description = clean_text(
        "description",
        &app.description,
        MAX_TITLE_DESCRIPTION,
        true,
        &mut notes,
    );
    let image_url = match app.image_url.as_deref() {
        None | Some("") => None,
        Some(u) => match node_image_url(u) {
            Ok(()) => Some(u.to_owned()),
            Err(why) => {
                notes.push(format!("image_url: refused ({why})"));
                None
            }
        },
    };
    let mut limit = |key: &str, v: Option<u64>, default: u64| match v {
        None => default,
        Some(v) if v > MAX_DURATION_S => {
            notes.push(format!("{key}: {v} s capped at {MAX_DURATION_S} s"));
            MAX_DURATION_S
        }
        Some(v) => v,
    };
    let idle_timeout = limit("idle_timeout", app.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    let empty_timeout = limit("empty_timeout", app.empty_timeout, DEFAULT_EMPTY_TIMEOUT);
    let t = TitleRow {
        id,
        name,
        description,
        image_url,
        application_id: app.id.clone(),
        visibility: app.visibility.unwrap_or(Visibility::Public),
        max_players: app.max_players,
        idle_timeout,
        empty_timeout,
        max_duration: 0,
        source: TitleSource::Node,
        approved,
        created_at: now,
        updated_at: now,
    };
    Some((t, notes))
}

/// `current`, a title made from a node's application, with the catalog data and limits of
/// `wanted` (made by [`title_of_application`]) at `now`; `None` when they are the same already.
/// Its id, approval and creation time stay.
pub fn refreshed_title(current: &TitleRow, wanted: &TitleRow, now: Millis) -> Option<TitleRow> {
    let same = current.name == wanted.name
        && current.description == wanted.description
        && current.image_url == wanted.image_url
        && current.visibility == wanted.visibility
        && current.max_players == wanted.max_players
        && current.idle_timeout == wanted.idle_timeout
        && current.empty_timeout == wanted.empty_timeout;
    (!same).then(|| TitleRow {
        name: wanted.name.clone(),
        description: wanted.description.clone(),
        image_url: wanted.image_url.clone(),
        visibility: wanted.visibility,
        max_players: wanted.max_players,
        idle_timeout: wanted.idle_timeout,
        empty_timeout: wanted.empty_timeout,
        updated_at: now,
        ..current.clone()
    })
}

/// `text` without control characters (but newlines and tabs where `multiline`), at most `max`
/// characters; what was removed goes to `notes`, under `key`.
fn clean_text(
    key: &str,
    text: &str,
    max: usize,
    multiline: bool,
    notes: &mut Vec<String>,
) -> String {
    let kept: String = text
        .chars()
        .filter(|c| !c.is_control() || (multiline && matches!(c, '\n' | '\t' | '\r')))
        .collect();
    if kept.len() != text.len() {
        notes.push(format!("{key}: control characters removed"));
    }
    let n = kept.chars().count();
    if n > max {
        notes.push(format!("{key}: {n} characters cut to {max}"));
        return kept.chars().take(max).collect();
    }
    kept
}

/// An image URL from a node: http:// or https:// with a host, at most [`MAX_IMAGE_URL`]
/// characters, no spaces or control characters (the session server's config checks the same).
fn node_image_url(u: &str) -> Result<(), &'static str> {
    let host = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        return Err("not an http:// or https:// URL");
    }
    if u.chars().count() > MAX_IMAGE_URL {
        return Err("longer than 2000 characters");
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("spaces or control characters");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admission and promotion

/// A window that opens at `start` and lasts `duration` seconds (`None`: unbounded).
pub fn window(start: Millis, duration: Option<u64>) -> Interval {
    Interval::new(start, duration.map(|d| start.saturating_add(seconds(d))))
}

/// Where a new session goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A window reserved on `node` for later.
    Scheduled { node: NodeId, window: Interval },
    /// Starts now on `node`.
    Start { node: NodeId, window: Interval },
    /// Waits behind the title's queue.
    Queue,
}

/// Admits a session of `title` lasting `duration` seconds, starting at `start_at` (scheduled)
/// or now. A scheduled one needs a node free over its whole window, or it is refused; one for
/// now starts where a slot is free, unless others of the title wait: nobody overtakes the
/// queue, a free slot goes to its head first.
pub fn admit(
    slots: &[NodeSlots],
    title: &TitleRow,
    start_at: Option<Millis>,
    duration: Option<u64>,
    queued: i64,
    now: Millis,
) -> Result<Admission, ApiError> {
    if let Some(at) = start_at {
        let want = window(at, duration);
        return match placement::place(slots, &title.application_id, &want) {
            Some(node) => Ok(Admission::Scheduled {
                node: node.clone(),
                window: want,
            }),
            None => Err(ApiError::conflict(format!(
                "no node can take a session of `{}` from {} to {}; choose another time",
                title.id,
                rfc3339(want.start),
                want.end.map(rfc3339).unwrap_or_default()
            ))),
        };
    }
    let want = window(now, duration);
    if queued > 0 {
        return Ok(Admission::Queue);
    }
    Ok(
        match placement::place(slots, &title.application_id, &want) {
            Some(node) => Admission::Start {
                node: node.clone(),
                window: want,
            },
            None => Admission::Queue,
        },
    )
}

/// The window a Launch asks for (`POST /api/v1/sessions {title_id}`, nothing else): from now, as
/// long as the title's `max_duration`, or without end.
pub fn launch_window(title: &TitleRow, now: Millis) -> Interval {
    window(now, (title.max_duration > 0).then_some(title.max_duration))
}

/// The free slots the catalog shows for `title`: how many Launches, one after another, would
/// start now rather than queue. The same rule as [`admit`]: nobody overtakes the `waiting`
/// requests of the title's queue (those waiting for a slot, not for their address), and a slot
/// counts only when it is free over the whole [`launch_window`], so a reservation later on takes
/// it from an open-ended title now.
pub fn launch_slots(slots: &[NodeSlots], title: &TitleRow, waiting: i64, now: Millis) -> u32 {
    if waiting > 0 {
        return 0;
    }
    let want = launch_window(title, now);
    slots
        .iter()
        .filter(|n| n.applications.contains(&title.application_id))
        .map(|n| placement::free_slots(n, &want))
        .sum()
}

/// A queued session that starts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promoted {
    pub session: SessionId,
    pub node: NodeId,
    pub window: Interval,
}

/// Which queued sessions start now: each title's queue in order, its head first, as long as a
/// node has a slot; a head that finds none keeps the rest of its queue waiting (nobody overtakes
/// it). `slots` gains the windows given out, so one call never promises a slot twice.
///
/// A session held by its address (see [`held_by_address`]; `holding` counts each anonymous
/// owner's sessions, `limit` the address limit) is passed over without holding up the others:
/// it waits for its own address, not for a slot. `holding` gains the sessions started.
pub fn promote(
    queues: &[Vec<SessionRow>],
    slots: &mut [NodeSlots],
    now: Millis,
    holding: &mut std::collections::HashMap<String, i64>,
    limit: u32,
) -> Vec<Promoted> {
    let mut out = Vec::new();
    for queue in queues {
        for s in queue {
            if held_by_address(s, holding, limit) {
                continue;
            }
            let want = Interval::new(
                now,
                s.duration
                    .map(|d| now.saturating_add(d.saturating_mul(1000))),
            );
            let Some(node) = placement::place(slots, &s.application_id, &want).cloned() else {
                break;
            };
            if let Some(n) = slots.iter_mut().find(|n| n.id == node) {
                n.busy.push(want);
            }
            if matches!(s.owner, crate::auth::Owner::Anonymous(_)) {
                *holding.entry(s.owner.to_string()).or_default() += 1;
            }
            out.push(Promoted {
                session: s.id.clone(),
                node,
                window: want,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The timer

/// What the timer does to a session that holds a slot (starting or ready).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    /// Its node has been gone longer than the grace: it ends here, `node_lost`.
    Lost,
    /// Its window is over: the node is told to stop it, `window_end`.
    StopForWindowEnd,
    /// Nothing.
    Keep,
}

/// `node`: the session's node record, if any; `grace`: how long a node may be offline before
/// its sessions count as lost.
pub fn running(s: &SessionRow, node: Option<&NodeRow>, now: Millis, grace: Millis) -> Running {
    let lost = node.is_none_or(|n| !n.online && n.offline_since.is_some_and(|t| t <= now - grace));
    if lost {
        Running::Lost
    } else if s.desired == crate::model::Desired::Run && s.slot_end.is_some_and(|e| e <= now) {
        Running::StopForWindowEnd
    } else {
        Running::Keep
    }
}

/// What the timer does to a scheduled session whose start is near (within the lead time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Its window passed before it could start: it fails, `window_missed`.
    Missed,
    /// It starts on its node.
    Start,
    /// Its node is gone or drained: find another for the rest of its window (`Interval`); if
    /// none has a slot, it fails, `no_capacity`.
    Replace(Interval),
}

/// `node_available`: its reserved node is online and not drained.
pub fn due(s: &SessionRow, node_available: bool, now: Millis) -> Due {
    if s.slot_end.is_some_and(|e| e <= now) {
        Due::Missed
    } else if node_available {
        Due::Start
    } else {
        Due::Replace(Interval::new(now, s.slot_end))
    }
}

/// The end state and reason of each timer outcome that ends a session here.
pub fn ending(reason: EndReason) -> SessionState {
    match reason {
        EndReason::WindowMissed | EndReason::NoCapacity => SessionState::Failed,
        _ => SessionState::Ended,
    }
}

// ---------------------------------------------------------------------------------------------
// The estimated wait

/// How long a session of a title typically lasts, from the lengths (ms, ready to end) of its
/// recent sessions: their median. `None` without any.
pub fn typical_length(lengths: &[Millis]) -> Option<Millis> {
    let mut l: Vec<Millis> = lengths.iter().copied().filter(|l| *l > 0).collect();
    if l.is_empty() {
        return None;
    }
    l.sort_unstable();
    Some(l[l.len() / 2])
}

/// About how long (ms) until the session at `position` of a queue of `application`, which
/// wants `want` from now, starts: a slot of the available nodes with the application is free
/// now when placement would give it for `want` (so not one a reservation takes), else it frees
/// at the end of the session that holds it (its window's end, else its start plus the
/// `typical` length, else, when it has run longer than that already, half a typical length
/// from now); each queued session ahead takes the next slot to free for a typical length.
/// `None` when it cannot be guessed (no typical length and not enough windows, or no node).
pub fn estimated_wait(
    position: u32,
    slots: &[NodeSlots],
    application: &pxs_protocol::node::ApplicationId,
    want: &Interval,
    typical: Option<Millis>,
    now: Millis,
) -> Option<Millis> {
    let mut frees: std::collections::BinaryHeap<std::cmp::Reverse<Millis>> =
        std::collections::BinaryHeap::new();
    for n in slots
        .iter()
        .filter(|n| n.available && n.applications.contains(application))
    {
        let running: Vec<&Interval> = n
            .busy
            .iter()
            .filter(|b| b.start <= now && b.end.is_none_or(|e| e > now))
            .collect();
        let free_now = placement::free_slots(n, want);
        for _ in 0..free_now.min(position) {
            frees.push(std::cmp::Reverse(now));
        }
        for b in running {
            let end = match (b.end, typical) {
                (Some(e), _) => Some(e),
                (None, Some(t)) if b.start.saturating_add(t) > now => Some(b.start + t),
                (None, Some(t)) => Some(now.saturating_add(t / 2)),
                (None, None) => None,
            };
            if let Some(e) = end {
                frees.push(std::cmp::Reverse(e));
            }
        }
    }
    for k in 1..=position {
        let std::cmp::Reverse(t) = frees.pop()?;
        if k == position {
            return Some(t.saturating_sub(now).max(0));
        }
        frees.push(std::cmp::Reverse(t.saturating_add(typical?)));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Bookings

/// The empty timeout (seconds) a session's node gets with its start at `now`. A session for now
/// gets its title's. A booking (one with a `start_at`) must not be ended `empty` because its
/// user is late: with `grace` (`timing.booking_empty_grace`) its node counts from the booked
/// start plus the grace (the title's timeout at the least); without, by default, its node waits
/// until the end of its window, where the coordinator stops it anyway (`window_end`). A title
/// whose empty timeout is off (0) keeps it off.
pub fn empty_timeout(s: &SessionRow, grace: Option<Millis>, now: Millis) -> u64 {
    let title = s.settings.empty_timeout;
    let Some(start_at) = s.start_at else {
        return title;
    };
    if title == 0 {
        return 0;
    }
    let until = match grace {
        Some(g) => start_at.saturating_add(g),
        None => match s.slot_end {
            Some(end) => end,
            None => return title,
        },
    };
    // Whole seconds, rounded up, so the node never ends it a moment early.
    let left = u64::try_from(until.saturating_sub(now).max(0))
        .unwrap_or(0)
        .div_ceil(1000);
    title.max(left).min(MAX_DURATION_S)
}

// ---------------------------------------------------------------------------------------------
// Time

/// `s` seconds in ms, saturating.
pub fn seconds(s: u64) -> Millis {
    i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000)
}

pub fn ms(d: std::time::Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision when not whole).
pub fn rfc3339(t: Millis) -> String {
    let nanos = i128::from(t) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(dt) => dt
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    if s.len() > 64 {
        return None;
    }
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_links_live_a_minute_to_30_days() {
        assert_eq!(link_lifetime(None).unwrap(), 86_400);
        assert_eq!(link_lifetime(Some(60)).unwrap(), 60);
        assert_eq!(link_lifetime(Some(2_592_000)).unwrap(), 2_592_000);
        for bad in [0, 59, 2_592_001, u64::MAX] {
            let e = link_lifetime(Some(bad)).unwrap_err();
            assert_eq!(e.kind, Kind::BadRequest, "{bad}");
            assert!(e.message.contains("expires_in"), "{}", e.message);
        }
    }

    #[test]
    fn a_session_has_at_most_100_open_links() {
        assert!(link_quota(99).is_ok());
        let e = link_quota(100).unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        assert!(e.message.contains("100"), "{}", e.message);
    }

    #[test]
    fn display_names_are_trimmed_cleaned_and_bounded() {
        assert_eq!(display_name("  Ada ").unwrap(), "Ada");
        assert_eq!(display_name("A\u{0}d\ta\n").unwrap(), "Ada");
        assert_eq!(display_name(&"é".repeat(40)).unwrap(), "é".repeat(40));
        for bad in ["", "   ", "\u{7}\u{1b}", &"x".repeat(41)] {
            let e = display_name(bad).unwrap_err();
            assert_eq!(e.kind, Kind::BadRequest, "{bad:?}");
            assert!(e.message.starts_with("name:"), "{}", e.message);
        }
    }
    use crate::auth::Owner;
    use crate::model::Desired;
    use proptest::prelude::*;
    use pxs_protocol::api::{TitleId, Visibility};
    use pxs_protocol::node::ApplicationId;

    const NOW: Millis = 1_000_000_000;

    fn title(app: &str, max_duration: u64) -> TitleRow {
        TitleRow {
            id: TitleId::parse(&format!("t-{app}")).unwrap(),
            name: "t".into(),
            description: String::new(),
            image_url: None,
            application_id: ApplicationId::parse(app).unwrap(),
            visibility: Visibility::Public,
            max_players: 4,
            idle_timeout: 600,
            empty_timeout: 120,
            max_duration,
            source: TitleSource::Admin,
            approved: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn app(name: &str) -> ApplicationInfo {
        ApplicationInfo {
            id: ApplicationId::parse("game").unwrap(),
            name: name.into(),
            res_x: 64,
            res_y: 64,
            max_players: 3,
            description: "A game.".into(),
            image_url: Some("https://img.example.org/game.png".into()),
            visibility: None,
            idle_timeout: Some(900),
            empty_timeout: Some(0),
        }
    }

    #[test]
    fn a_title_is_made_of_an_applications_catalog_data() {
        let (t, notes) = title_of_application(&app("Game"), true, NOW).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(t.id.as_str(), "game");
        assert_eq!(t.application_id.as_str(), "game");
        assert_eq!(
            (t.name.as_str(), t.description.as_str()),
            ("Game", "A game.")
        );
        assert_eq!(
            t.image_url.as_deref(),
            Some("https://img.example.org/game.png")
        );
        assert_eq!(
            t.visibility,
            Visibility::Public,
            "public when the node does not say"
        );
        assert_eq!(
            (t.max_players, t.idle_timeout, t.empty_timeout),
            (3, 900, 0)
        );
        assert_eq!(
            (t.source, t.approved, t.max_duration),
            (TitleSource::Node, true, 0)
        );
        check_title(&t).unwrap();
        let older = ApplicationInfo {
            idle_timeout: None,
            empty_timeout: None,
            ..app("Game")
        };
        let (t, _) = title_of_application(&older, false, NOW).unwrap();
        assert_eq!(
            (t.idle_timeout, t.empty_timeout, t.approved),
            (DEFAULT_IDLE_TIMEOUT, DEFAULT_EMPTY_TIMEOUT, false)
        );
    }

    #[test]
    fn hostile_catalog_data_is_cut_or_dropped_and_said() {
        for (label, a, check) in [
            (
                "overlong name",
                app(&"n".repeat(10_000)),
                Box::new(|t: &TitleRow| t.name.chars().count() == MAX_TITLE_NAME)
                    as Box<dyn Fn(&TitleRow) -> bool>,
            ),
            (
                "control characters",
                app("a\u{0}b\u{1b}[31mc\n"),
                Box::new(|t: &TitleRow| t.name == "ab[31mc"),
            ),
            (
                "nothing left of the name",
                app("\u{7}\u{7}  "),
                Box::new(|t: &TitleRow| t.name == "game"),
            ),
            (
                "javascript image",
                ApplicationInfo {
                    image_url: Some("javascript:alert(1)".into()),
                    ..app("Game")
                },
                Box::new(|t: &TitleRow| t.image_url.is_none()),
            ),
            (
                "overlong image",
                ApplicationInfo {
                    image_url: Some(format!("https://x.example/{}", "i".repeat(5000))),
                    ..app("Game")
                },
                Box::new(|t: &TitleRow| t.image_url.is_none()),
            ),
            (
                "overlong description",
                ApplicationInfo {
                    description: "d\u{0}".repeat(5000),
                    ..app("Game")
                },
                Box::new(|t: &TitleRow| t.description == "d".repeat(MAX_TITLE_DESCRIPTION)),
            ),
            (
                "endless timeouts",
                ApplicationInfo {
                    idle_timeout: Some(u64::MAX),
                    empty_timeout: Some(u64::MAX),
                    ..app("Game")
                },
                Box::new(|t: &TitleRow| {
                    (t.idle_timeout, t.empty_timeout) == (MAX_DURATION_S, MAX_DURATION_S)
                }),
            ),
        ] {
            let (t, notes) = title_of_application(&a, true, NOW).unwrap();
            assert!(check(&t), "{label}: {t:?}");
            assert!(!notes.is_empty(), "{label}: nothing said");
            check_title(&t).unwrap_or_else(|e| panic!("{label}: {e:?}"));
        }
    }

    #[test]
    fn a_node_title_is_refreshed_only_when_its_application_changed() {
        let (t, _) = title_of_application(&app("Game"), false, NOW).unwrap();
        assert_eq!(refreshed_title(&t, &t, NOW + 1), None);
        let (wanted, _) = title_of_application(&app("Game 2"), true, NOW + 5).unwrap();
        let r = refreshed_title(&t, &wanted, NOW + 5).unwrap();
        assert_eq!(r.name, "Game 2");
        assert_eq!((r.created_at, r.updated_at), (NOW, NOW + 5));
        assert!(!r.approved, "a refresh does not approve");
    }

    fn session(n: usize, app: &str, duration: Option<u64>) -> SessionRow {
        let id = SessionId::parse(&format!("ses_{n}")).unwrap();
        SessionRow::new(
            id,
            &title(app, 0),
            Owner::Token("u".into()),
            None,
            duration,
            NOW,
        )
    }

    fn slots_of(id: &str, capacity: u32, apps: &[&str], busy: Vec<Interval>) -> NodeSlots {
        NodeSlots {
            id: NodeId::parse(id).unwrap(),
            available: true,
            capacity,
            applications: apps
                .iter()
                .map(|a| ApplicationId::parse(a).unwrap())
                .collect(),
            busy,
        }
    }

    fn new_session(start_at: Option<&str>, duration: Option<u64>) -> NewSession {
        NewSession {
            title_id: TitleId::parse("demo").unwrap(),
            start_at: start_at.map(str::to_owned),
            duration,
        }
    }

    #[test]
    fn times_round_trip_as_rfc3339() {
        let t = 1_795_600_000_123;
        let s = rfc3339(t);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(
            parse_rfc3339("2026-11-25T10:00:00+01:00"),
            parse_rfc3339("2026-11-25T09:00:00Z")
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn a_request_is_checked_before_any_record_is_read() {
        let msg = |r: Result<Wanted, ApiError>| r.unwrap_err().message;
        assert!(msg(check_new_session(&new_session(None, Some(0)), NOW)).contains("at least 1"));
        assert!(
            msg(check_new_session(
                &new_session(None, Some(MAX_DURATION_S + 1)),
                NOW
            ))
            .contains("at most")
        );
        assert!(msg(check_new_session(&new_session(Some("soon"), None), NOW)).contains("RFC 3339"));
        let past = rfc3339(NOW - 60_000);
        assert!(msg(check_new_session(&new_session(Some(&past), None), NOW)).contains("past"));
        let far = rfc3339(NOW + MAX_AHEAD_MS + 60_000);
        assert!(msg(check_new_session(&new_session(Some(&far), None), NOW)).contains("year"));
        // A little in the past (clock skew) counts as now.
        let just = rfc3339(NOW - 1_000);
        let w = check_new_session(&new_session(Some(&just), Some(60)), NOW).unwrap();
        assert_eq!(w.start_at, Some(NOW));
        assert_eq!(w.duration, Some(60));
    }

    #[test]
    fn the_title_caps_the_duration_and_a_booking_needs_one() {
        let now = Wanted {
            start_at: None,
            duration: None,
        };
        let booked = Wanted {
            start_at: Some(NOW + 60_000),
            duration: None,
        };
        assert_eq!(duration(&now, &title("demo", 0)).unwrap(), None);
        assert_eq!(duration(&now, &title("demo", 300)).unwrap(), Some(300));
        let asked = Wanted {
            duration: Some(301),
            ..now
        };
        assert!(duration(&asked, &title("demo", 300)).is_err());
        assert!(duration(&booked, &title("demo", 0)).is_err());
        assert_eq!(duration(&booked, &title("demo", 300)).unwrap(), Some(300));
    }

    #[test]
    fn an_address_at_its_limit_waits_rather_than_being_refused() {
        assert_eq!(
            anonymous_admission(1, 2, false).unwrap(),
            AddressCheck::Free
        );
        assert_eq!(
            anonymous_admission(2, 2, false).unwrap(),
            AddressCheck::Wait,
            "a third colleague behind one office address waits"
        );
        assert_eq!(anonymous_admission(1, 2, true).unwrap(), AddressCheck::Free);
        let e = anonymous_admission(2, 2, true).unwrap_err();
        assert_eq!(e.kind, Kind::TooManyRequests, "a booking cannot wait");
        assert!(e.message.contains("network address"), "{}", e.message);
        assert!(anonymous_may_wait(3, 4).is_ok());
        let e = anonymous_may_wait(4, 4).unwrap_err();
        assert_eq!(e.kind, Kind::TooManyRequests);
        assert!(e.message.contains("4 requests waiting"), "{}", e.message);
    }

    fn anonymous(n: usize, address: &str) -> SessionRow {
        SessionRow {
            owner: Owner::Anonymous(address.into()),
            ..session(n, "demo", None)
        }
    }

    #[test]
    fn a_session_held_by_its_address_does_not_hold_up_the_queue() {
        let mut slots = [slots_of("n1", 3, &["demo"], vec![])];
        // Office's two sessions run; its third waits; a colleague elsewhere starts, and the
        // office's next one too once the first of its three is started.
        let mut holding = std::collections::HashMap::from([("anon:office".to_owned(), 2)]);
        let queue = vec![
            anonymous(1, "office"),
            anonymous(2, "home"),
            session(3, "demo", None),
        ];
        let promoted = promote(&[queue], &mut slots, NOW, &mut holding, 2);
        let started: Vec<&str> = promoted.iter().map(|p| p.session.as_str()).collect();
        assert_eq!(started, ["ses_2", "ses_3"]);
        assert_eq!(holding["anon:home"], 1);
    }

    #[test]
    fn the_catalog_counts_the_slots_a_launch_gets() {
        let open = title("demo", 0);
        let timed = title("demo", 600);
        // One slot, reserved an hour from now.
        let reserved = [slots_of(
            "n1",
            1,
            &["demo"],
            vec![Interval::new(NOW + 3_600_000, Some(NOW + 7_200_000))],
        )];
        assert_eq!(
            launch_slots(&reserved, &open, 0, NOW),
            0,
            "open-ended runs into it"
        );
        assert_eq!(
            launch_slots(&reserved, &timed, 0, NOW),
            1,
            "10 min end before it"
        );
        assert_eq!(
            launch_slots(&reserved, &timed, 1, NOW),
            0,
            "a queue goes first"
        );
        assert_eq!(
            admit(&reserved, &open, None, None, 0, NOW).unwrap(),
            Admission::Queue
        );
    }

    #[test]
    fn the_wait_is_guessed_from_windows_and_typical_lengths() {
        let app = ApplicationId::parse("demo").unwrap();
        let min = 60_000;
        let want = Interval::new(NOW, None);
        // Two slots: one ends its window in 5 min, one started 2 min ago, typically 10 min.
        let slots = [slots_of(
            "n1",
            2,
            &["demo"],
            vec![
                Interval::new(NOW - min, Some(NOW + 5 * min)),
                Interval::new(NOW - 2 * min, None),
            ],
        )];
        assert_eq!(
            estimated_wait(1, &slots, &app, &want, Some(10 * min), NOW),
            Some(5 * min)
        );
        assert_eq!(
            estimated_wait(2, &slots, &app, &want, Some(10 * min), NOW),
            Some(8 * min)
        );
        assert_eq!(
            estimated_wait(3, &slots, &app, &want, Some(10 * min), NOW),
            Some(15 * min)
        );
        // Without history, only what windows say.
        assert_eq!(
            estimated_wait(1, &slots, &app, &want, None, NOW),
            Some(5 * min)
        );
        assert_eq!(estimated_wait(2, &slots, &app, &want, None, NOW), None);
        // A session past its typical length: half of one more.
        assert_eq!(
            estimated_wait(1, &slots, &app, &want, Some(min), NOW),
            Some(min / 2)
        );
        assert_eq!(
            estimated_wait(2, &slots, &app, &want, Some(min), NOW),
            Some(3 * min / 2)
        );
        assert_eq!(estimated_wait(1, &[], &app, &want, Some(min), NOW), None);
        // A slot free now, but booked in an hour: free for a short session, not an open one.
        let booked = [slots_of(
            "n1",
            1,
            &["demo"],
            vec![Interval::new(NOW + 60 * min, Some(NOW + 120 * min))],
        )];
        assert_eq!(
            estimated_wait(1, &booked, &app, &want, Some(min), NOW),
            None
        );
        let short = Interval::new(NOW, Some(NOW + min));
        assert_eq!(
            estimated_wait(1, &booked, &app, &short, Some(min), NOW),
            Some(0)
        );
        assert_eq!(typical_length(&[5, 1, 9, 0]), Some(5));
        assert_eq!(typical_length(&[]), None);
    }

    #[test]
    fn a_late_user_still_finds_the_booking_they_made() {
        let start = NOW + 60_000;
        let mut b = session(1, "demo", Some(3600));
        b.start_at = Some(start);
        b.slot_start = Some(start);
        b.slot_end = Some(start + 3_600_000);
        // Started 30 s ahead of its window: the node waits until the window's end...
        assert_eq!(empty_timeout(&b, None, start - 30_000), 3630);
        // ...or, with a grace, until 10 min after the start.
        assert_eq!(empty_timeout(&b, Some(600_000), start - 30_000), 630);
        // The title's own timeout at the least; off stays off.
        assert_eq!(empty_timeout(&b, Some(0), start), 120);
        b.settings.empty_timeout = 0;
        assert_eq!(empty_timeout(&b, None, start), 0);
        // A session for now: its title's.
        let now = session(2, "demo", Some(3600));
        assert_eq!(empty_timeout(&now, None, NOW), 120);
    }

    #[test]
    fn nobody_overtakes_the_queue() {
        let slots = [slots_of("n1", 2, &["demo"], vec![])];
        let t = title("demo", 0);
        assert_eq!(
            admit(&slots, &t, None, None, 1, NOW).unwrap(),
            Admission::Queue
        );
        let Admission::Start { node, window } = admit(&slots, &t, None, Some(60), 0, NOW).unwrap()
        else {
            panic!("a free slot and no queue: starts");
        };
        assert_eq!(node.as_str(), "n1");
        assert_eq!(window, Interval::new(NOW, Some(NOW + 60_000)));
        let full = [slots_of("n1", 1, &["demo"], vec![Interval::new(NOW, None)])];
        assert_eq!(
            admit(&full, &t, None, None, 0, NOW).unwrap(),
            Admission::Queue
        );
    }

    #[test]
    fn a_booking_reserves_its_window_or_is_refused() {
        let t = title("demo", 0);
        let at = NOW + 3_600_000;
        // An unbounded session holds the only slot for ever: no window fits.
        let busy = [slots_of("n1", 1, &["demo"], vec![Interval::new(NOW, None)])];
        let e = admit(&busy, &t, Some(at), Some(60), 0, NOW).unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        // A session ending before the window opens leaves room; the queue does not matter.
        let ends = [slots_of(
            "n1",
            1,
            &["demo"],
            vec![Interval::new(NOW, Some(at))],
        )];
        assert_eq!(
            admit(&ends, &t, Some(at), Some(60), 5, NOW).unwrap(),
            Admission::Scheduled {
                node: NodeId::parse("n1").unwrap(),
                window: Interval::new(at, Some(at + 60_000)),
            }
        );
    }

    #[test]
    fn the_timer_ends_lost_and_overdue_sessions() {
        let mut s = session(1, "demo", Some(60));
        s.state = SessionState::Ready;
        s.node_id = Some(NodeId::parse("n1").unwrap());
        s.slot_end = Some(NOW + 60_000);
        let grace = 30_000;
        let mut n = NodeRow {
            id: NodeId::parse("n1").unwrap(),
            version: String::new(),
            public_url: String::new(),
            upstream_url: None,
            max_sessions: 1,
            max_sessions_per_gpu: 0,
            applications: vec![],
            gpus: vec![],
            online: true,
            admin_drain: false,
            drain_deadline: None,
            node_drain: false,
            link_owner: None,
            link_since: None,
            last_seen: NOW,
            offline_since: None,
            acked_seq: 0,
        };
        assert_eq!(running(&s, Some(&n), NOW, grace), Running::Keep);
        assert_eq!(
            running(&s, None, NOW, grace),
            Running::Lost,
            "no node record"
        );
        n.online = false;
        n.offline_since = Some(NOW - grace + 1);
        assert_eq!(
            running(&s, Some(&n), NOW, grace),
            Running::Keep,
            "within the grace"
        );
        assert_eq!(running(&s, Some(&n), NOW + 1, grace), Running::Lost);
        n.online = true;
        n.offline_since = None;
        assert_eq!(
            running(&s, Some(&n), NOW + 60_000, grace),
            Running::StopForWindowEnd
        );
        s.desired = Desired::Stop;
        assert_eq!(
            running(&s, Some(&n), NOW + 60_000, grace),
            Running::Keep,
            "asked already"
        );
    }

    #[test]
    fn the_timer_starts_misses_or_moves_a_booking() {
        let mut s = session(1, "demo", Some(60));
        s.state = SessionState::Scheduled;
        s.slot_start = Some(NOW);
        s.slot_end = Some(NOW + 60_000);
        assert_eq!(due(&s, true, NOW), Due::Start);
        assert_eq!(
            due(&s, false, NOW + 10_000),
            Due::Replace(Interval::new(NOW + 10_000, Some(NOW + 60_000)))
        );
        assert_eq!(due(&s, true, NOW + 60_000), Due::Missed);
        assert_eq!(ending(EndReason::WindowMissed), SessionState::Failed);
        assert_eq!(ending(EndReason::NoCapacity), SessionState::Failed);
        assert_eq!(ending(EndReason::NodeLost), SessionState::Ended);
    }

    fn queues() -> impl Strategy<Value = Vec<Vec<SessionRow>>> {
        // Up to three titles of two applications, each queue up to six long.
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b"]),
                prop::collection::vec(prop::option::of(1u64..600), 0..6),
            ),
            0..3,
        )
        .prop_map(|qs| {
            let mut n = 0;
            qs.into_iter()
                .map(|(app, durations)| {
                    durations
                        .into_iter()
                        .map(|d| {
                            n += 1;
                            session(n, app, d)
                        })
                        .collect()
                })
                .collect()
        })
    }

    fn fleet() -> impl Strategy<Value = Vec<NodeSlots>> {
        prop::collection::vec(
            (
                0u32..3,
                prop::sample::subsequence(vec!["a", "b"], 0..=2),
                any::<bool>(),
                // Sessions running now, and reservations ahead (bookings).
                prop::collection::vec((-600i64..600, prop::option::of(1i64..600)), 0..3),
            ),
            0..4,
        )
        .prop_map(|nodes| {
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, (cap, apps, available, busy))| {
                    let busy = busy
                        .into_iter()
                        .map(|(s, len)| {
                            let start = NOW + s * 1000;
                            Interval::new(start, len.map(|l| start.max(NOW) + l * 1000))
                        })
                        .collect();
                    NodeSlots {
                        available,
                        ..slots_of(&format!("n{i}"), cap, &apps, busy)
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// Promotion starts a prefix of each queue, never overfills a node, uses only available
        /// nodes with the application, and stops at a head only when no node has room for it.
        #[test]
        fn promotion_keeps_queue_order_and_capacity(queues in queues(), fleet in fleet()) {
            let mut slots = fleet.clone();
            let promoted = promote(&queues, &mut slots, NOW, &mut Default::default(), 2);
            for q in &queues {
                let started: Vec<bool> =
                    q.iter().map(|s| promoted.iter().any(|p| p.session == s.id)).collect();
                prop_assert!(started.windows(2).all(|w| w[0] || !w[1]),
                    "a later session started before an earlier one: {started:?}");
                if let Some(head) = q.iter().find(|s| !promoted.iter().any(|p| p.session == s.id)) {
                    let want = window(NOW, head.duration.map(|d| d as u64));
                    prop_assert!(placement::place(&slots, &head.application_id, &want).is_none(),
                        "{} waits although a node has room", head.id);
                }
            }
            for p in &promoted {
                let n = slots.iter().find(|n| n.id == p.node).unwrap();
                let s = queues.iter().flatten().find(|s| s.id == p.session).unwrap();
                prop_assert!(n.available && n.applications.contains(&s.application_id));
                prop_assert!(placement::peak(&n.busy, &p.window) <= n.capacity,
                    "{} over capacity", n.id);
            }
            let given: usize = slots.iter().map(|n| n.busy.len()).sum::<usize>()
                - fleet.iter().map(|n| n.busy.len()).sum::<usize>();
            prop_assert_eq!(given, promoted.len());
        }

        /// A session for now starts exactly when nobody waits and `place` finds a node; a
        /// booking is placed exactly when `place` finds a node for its whole window.
        #[test]
        fn admission_follows_placement_and_the_queue(
            fleet in fleet(),
            queued in 0i64..3,
            duration in prop::option::of(1u64..600),
            ahead in prop::option::of(0i64..600),
        ) {
            let t = title("a", 0);
            let start_at = ahead.map(|a| NOW + a * 1000);
            let want = window(start_at.unwrap_or(NOW), duration);
            let placed = placement::place(&fleet, &t.application_id, &want).cloned();
            match (admit(&fleet, &t, start_at, duration, queued, NOW), start_at) {
                (Ok(Admission::Scheduled { node, window: w }), Some(_)) => {
                    prop_assert_eq!(Some(node), placed);
                    prop_assert_eq!(w, want);
                }
                (Err(e), Some(_)) => {
                    prop_assert_eq!(e.kind, Kind::Conflict);
                    prop_assert!(placed.is_none());
                }
                (Ok(Admission::Start { node, window: w }), None) => {
                    prop_assert_eq!(queued, 0);
                    prop_assert_eq!(Some(node), placed);
                    prop_assert_eq!(w, want);
                }
                (Ok(Admission::Queue), None) => {
                    prop_assert!(queued > 0 || placed.is_none());
                }
                (other, at) => prop_assert!(false, "{other:?} for start_at {at:?}"),
            }
        }

        /// The catalog never promises a slot that Launch cannot give: with the free slots it
        /// shows, exactly that many Launches in a row start and the next one queues.
        #[test]
        fn the_catalog_agrees_with_launch(
            fleet in fleet(),
            waiting in 0i64..2,
            max_duration in prop::sample::select(vec![0u64, 60, 3600]),
        ) {
            let t = title("a", max_duration);
            let shown = launch_slots(&fleet, &t, waiting, NOW);
            let mut slots = fleet.clone();
            let d = duration(&Wanted { start_at: None, duration: None }, &t).unwrap();
            for i in 0..=shown {
                match admit(&slots, &t, None, d, waiting, NOW).unwrap() {
                    Admission::Start { node, window: w } => {
                        prop_assert!(i < shown, "launch {} started past the {shown} shown", i + 1);
                        slots.iter_mut().find(|n| n.id == node).unwrap().busy.push(w);
                    }
                    Admission::Queue => prop_assert_eq!(i, shown, "queued with slots shown"),
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
