//! The statements that read live sessions. Ended sessions are kept for ever, so each of these
//! must seek past them through an index that has the state in it (migration 0003); the store
//! test `live_session_queries_seek_past_the_history` checks SQLite's plan of every one in
//! [`LIVE_SESSION_QUERIES`] (PostgreSQL plans by its statistics).

/// The sessions that hold a slot (booked, starting, ready), each as `[node, id, state,
/// slot_start, slot_end]`, all in one JSON array.
macro_rules! held_slots {
    (sqlite, $and:literal) => {
        concat!(
            "SELECT json_group_array(json_array(node_id, id, state, slot_start, slot_end)) \
             FROM sessions WHERE node_id IS NOT NULL \
             AND state IN ('scheduled', 'starting', 'ready')",
            $and
        )
    };
    // The JSON written by concatenation: ids are checked to be `[A-Za-z0-9_.-]` before they are
    // stored and states are fixed words, so nothing needs escaping (anything else fails to parse
    // as `StoreError::Corrupt`); `json_agg(json_build_array(…))` took 2.5 µs a row, this 0.9.
    (postgres, $and:literal) => {
        concat!(
            "SELECT '[' || string_agg('[\"' || node_id || '\",\"' || id || '\",\"' || state \
             || '\",' || COALESCE(slot_start::text, 'null') || ',' \
             || COALESCE(slot_end::text, 'null') || ']', ',') || ']' \
             FROM sessions WHERE node_id IS NOT NULL \
             AND state IN ('scheduled', 'starting', 'ready')",
            $and
        )
    };
}
pub const HELD_SLOTS_SQLITE: &str = held_slots!(sqlite, "");
pub const HELD_SLOTS_POSTGRES: &str = held_slots!(postgres, "");
/// The slots held on one node (`$1`), read again after a placement locked it (PostgreSQL).
pub const HELD_ON_NODE_POSTGRES: &str = held_slots!(postgres, " AND node_id = $1");
pub const ACTIVE_ON_NODE: &str =
    "SELECT * FROM sessions WHERE node_id = $1 AND state IN ('starting', 'ready')";
/// [`ACTIVE_ON_NODE`] with the rows locked (PostgreSQL).
pub const ACTIVE_ON_NODE_FOR_UPDATE: &str =
    "SELECT * FROM sessions WHERE node_id = $1 AND state IN ('starting', 'ready') FOR UPDATE";
pub const SCHEDULED_DUE: &str =
    "SELECT * FROM sessions WHERE state = 'scheduled' AND start_at <= $1 ORDER BY start_at, id";
pub const SESSIONS_TO_END: &str = "SELECT s.* FROM sessions s \
    LEFT JOIN nodes n ON n.id = s.node_id \
    WHERE s.state IN ('starting', 'ready') AND (n.id IS NULL \
      OR (n.online = 0 AND n.offline_since <= $1) \
      OR (s.desired = 'run' AND s.slot_end IS NOT NULL AND s.slot_end <= $2)) \
    ORDER BY s.created_at";
pub const QUEUED_TITLES: &str =
    "SELECT DISTINCT title_id FROM sessions WHERE state = 'queued' ORDER BY title_id";
pub const QUEUE_OF: &str =
    "SELECT * FROM sessions WHERE state = 'queued' AND title_id = $1 ORDER BY queue_seq";
pub const QUEUE_LENGTH: &str =
    "SELECT COUNT(*) AS n FROM sessions WHERE state = 'queued' AND title_id = $1";
/// The one rule for a queue position: the column `queue_position` of a session `s` (1 =
/// next; NULL unless it is queued), counted in the statement that reads `s`, so from the same
/// snapshot.
macro_rules! position_column {
    () => {
        "CASE WHEN s.state = 'queued' THEN (SELECT COUNT(*) FROM sessions q \
         WHERE q.state = 'queued' AND q.title_id = s.title_id AND q.queue_seq <= s.queue_seq) \
         END AS queue_position"
    };
}
/// One session with its queue position.
pub const SESSION_WITH_POSITION: &str = concat!(
    "SELECT s.*, ",
    position_column!(),
    " FROM sessions s WHERE s.id = $1"
);
/// Sessions with their queue positions; `list_sessions` adds the filters.
pub const SESSIONS_WITH_POSITION: &str = concat!(
    "SELECT s.*, ",
    position_column!(),
    " FROM sessions s WHERE 1 = 1"
);
/// The positions of a title's queue (for the plan test: the count seeks the queue's index).
pub const QUEUE_POSITIONS: &str = concat!(
    "SELECT ",
    position_column!(),
    " FROM sessions s WHERE s.state = 'queued' AND s.title_id = $1"
);
/// `queue_seq` is set only while a session is queued.
pub const NEXT_QUEUE_SEQ: &str =
    "SELECT COALESCE(MAX(queue_seq), 0) + 1 AS n FROM sessions WHERE state = 'queued'";
pub const UNDELIVERED: &str = "SELECT * FROM sessions WHERE state IN ('starting', 'ready') \
    AND ((desired = 'run' AND dispatched_at IS NULL) \
      OR (desired = 'stop' AND stop_sent_at IS NULL)) \
    ORDER BY created_at";
pub const LIVE_OF_OWNER: &str = "SELECT COUNT(*) AS n FROM sessions WHERE owner = $1 \
    AND state IN ('scheduled', 'queued', 'starting', 'ready')";
pub const LIVE_OF_TITLE: &str = "SELECT COUNT(*) AS n FROM sessions WHERE title_id = $1 \
    AND state IN ('scheduled', 'queued', 'starting', 'ready')";
/// The sessions each anonymous address holds against its limit (booked, starting, ready).
pub const HOLDING_OF_ANONYMOUS: &str = "SELECT owner, COUNT(*) AS n FROM sessions \
    WHERE state IN ('scheduled', 'starting', 'ready') AND owner LIKE 'anon:%' GROUP BY owner";
/// The sessions one owner holds against the anonymous limit.
pub const HOLDING_OF_OWNER: &str = "SELECT COUNT(*) AS n FROM sessions WHERE owner = $1 \
    AND state IN ('scheduled', 'starting', 'ready')";
/// The requests one owner has waiting in queues.
pub const WAITING_OF_OWNER: &str =
    "SELECT COUNT(*) AS n FROM sessions WHERE owner = $1 AND state = 'queued'";
/// How long a title's latest sessions that ran lasted (ms), newest first: through the index of
/// migration 0010, so the history of a busy title costs 20 rows, not all of them. Not a live
/// query: it reads ended sessions on purpose.
pub const RECENT_LENGTHS: &str = "SELECT ended_at - ready_at AS n FROM sessions \
    WHERE title_id = $1 AND state = 'ended' AND ready_at IS NOT NULL AND ended_at IS NOT NULL \
    ORDER BY ended_at DESC LIMIT 20";
/// The revoked share links of the sessions live on a node (told again after its hello).
pub const REVOKED_LINKS_ON_NODE: &str = "SELECT k.session_id, k.id FROM sessions s \
    JOIN session_keys k ON k.session_id = s.id \
    WHERE s.node_id = $1 AND s.state IN ('starting', 'ready') \
    AND k.revoked_at IS NOT NULL AND k.role <> 'owner' ORDER BY k.session_id, k.id";

/// Every statement above, by name.
pub const LIVE_SESSION_QUERIES: &[(&str, &str)] = &[
    ("held_slots", HELD_SLOTS_SQLITE),
    ("held_on_node", held_slots!(sqlite, " AND node_id = $1")),
    ("active_on_node", ACTIVE_ON_NODE),
    ("scheduled_due", SCHEDULED_DUE),
    ("sessions_to_end", SESSIONS_TO_END),
    ("queued_titles", QUEUED_TITLES),
    ("queue_of", QUEUE_OF),
    ("queue_length", QUEUE_LENGTH),
    ("queue_positions", QUEUE_POSITIONS),
    ("next_queue_seq", NEXT_QUEUE_SEQ),
    ("undelivered", UNDELIVERED),
    ("live_of_owner", LIVE_OF_OWNER),
    ("live_of_title", LIVE_OF_TITLE),
    ("holding_of_anonymous", HOLDING_OF_ANONYMOUS),
    ("holding_of_owner", HOLDING_OF_OWNER),
    ("waiting_of_owner", WAITING_OF_OWNER),
    ("revoked_links_on_node", REVOKED_LINKS_ON_NODE),
];
