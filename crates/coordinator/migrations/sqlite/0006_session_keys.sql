-- Session keys: each anonymous session's owner key and every share link, as the SHA-256 of its
-- secret (`pxs_key_…`, shown once). Times are milliseconds since the Unix epoch; expires_at NULL:
-- it does not expire (owner keys); revoked_at NULL: not revoked. Rows are kept after their
-- session ends, as sessions are.
CREATE TABLE session_keys (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'controller', 'viewer')),
    secret_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX session_keys_by_session ON session_keys (session_id);

-- Who ended a session through the API: 'owner' (its creator's token or owner key) or 'admin';
-- NULL when it ended by itself.
ALTER TABLE sessions ADD COLUMN ended_by TEXT CHECK (ended_by IN ('owner', 'admin'));
