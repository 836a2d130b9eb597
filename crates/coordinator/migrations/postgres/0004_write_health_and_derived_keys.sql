-- /healthz proves the database takes writes by updating this one row.
CREATE TABLE health (
    id INTEGER PRIMARY KEY,
    checked_at BIGINT NOT NULL
);
INSERT INTO health (id, checked_at) VALUES (1, 0);
-- Session signing keys are derived from the coordinator's session secret and no longer stored:
-- a copy of the database must not let anyone join a live session. New sessions store '' here;
-- sessions from before keep their stored key until they end, when it is cleared too.
UPDATE sessions SET player_key = '' WHERE state IN ('ended', 'failed');
