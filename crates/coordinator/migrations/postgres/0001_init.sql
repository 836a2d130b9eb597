-- pxs coordinator schema, PostgreSQL flavour (keep in step with migrations/sqlite).
-- Times are milliseconds since the Unix epoch; durations seconds.
CREATE TABLE titles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    image_url TEXT,
    application_id TEXT NOT NULL,
    visibility TEXT NOT NULL,
    max_players BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    empty_timeout BIGINT NOT NULL,
    max_duration BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE node_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    public_url TEXT NOT NULL,
    max_sessions BIGINT NOT NULL,
    max_sessions_per_gpu BIGINT NOT NULL,
    applications TEXT NOT NULL,
    gpus TEXT NOT NULL,
    online BIGINT NOT NULL,
    admin_drain BIGINT NOT NULL DEFAULT 0,
    node_drain BIGINT NOT NULL DEFAULT 0,
    link_owner TEXT,
    link_since BIGINT,
    last_seen BIGINT NOT NULL,
    offline_since BIGINT,
    acked_seq BIGINT NOT NULL DEFAULT 0,
    first_seen BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    title_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    node_id TEXT,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    observed TEXT NOT NULL,
    queue_seq BIGINT,
    created_at BIGINT NOT NULL,
    start_at BIGINT,
    duration BIGINT,
    slot_start BIGINT,
    slot_end BIGINT,
    dispatched_at BIGINT,
    stop_sent_at BIGINT,
    ready_at BIGINT,
    ended_at BIGINT,
    end_reason TEXT,
    stop_reason TEXT,
    exit_code BIGINT,
    detail TEXT,
    player_url TEXT,
    player_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_state ON sessions (state);
CREATE INDEX sessions_by_node ON sessions (node_id, state);
CREATE INDEX sessions_by_owner ON sessions (owner);
CREATE INDEX sessions_queue ON sessions (title_id, queue_seq);
