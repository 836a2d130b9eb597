-- pxs coordinator schema, SQLite flavour (keep in step with migrations/postgres).
-- Times are milliseconds since the Unix epoch; durations seconds.
CREATE TABLE titles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    image_url TEXT,
    application_id TEXT NOT NULL,
    visibility TEXT NOT NULL,
    max_players INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    empty_timeout INTEGER NOT NULL,
    max_duration INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE node_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    public_url TEXT NOT NULL,
    max_sessions INTEGER NOT NULL,
    max_sessions_per_gpu INTEGER NOT NULL,
    applications TEXT NOT NULL,
    gpus TEXT NOT NULL,
    online INTEGER NOT NULL,
    admin_drain INTEGER NOT NULL DEFAULT 0,
    node_drain INTEGER NOT NULL DEFAULT 0,
    link_owner TEXT,
    link_since INTEGER,
    last_seen INTEGER NOT NULL,
    offline_since INTEGER,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    title_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    node_id TEXT,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    observed TEXT NOT NULL,
    queue_seq INTEGER,
    created_at INTEGER NOT NULL,
    start_at INTEGER,
    duration INTEGER,
    slot_start INTEGER,
    slot_end INTEGER,
    dispatched_at INTEGER,
    stop_sent_at INTEGER,
    ready_at INTEGER,
    ended_at INTEGER,
    end_reason TEXT,
    stop_reason TEXT,
    exit_code INTEGER,
    detail TEXT,
    player_url TEXT,
    player_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    settings TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_state ON sessions (state);
CREATE INDEX sessions_by_node ON sessions (node_id, state);
CREATE INDEX sessions_by_owner ON sessions (owner);
CREATE INDEX sessions_queue ON sessions (title_id, queue_seq);
