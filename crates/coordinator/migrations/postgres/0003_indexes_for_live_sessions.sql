-- Ended sessions are kept, so the sessions table grows for ever. The queries on every request look
-- at live sessions only: each index lets them seek past the history instead of reading it.
-- (With 100,000 ended sessions, the queue length that every POST and every title reads took
-- 18 ms through the old (title_id, queue_seq) index.)
DROP INDEX sessions_queue;
DROP INDEX sessions_by_owner;
DROP INDEX sessions_by_state;
-- A title's queue, in order; only queued sessions are in it.
CREATE INDEX sessions_queued ON sessions (title_id, queue_seq) WHERE state = 'queued';
-- Live sessions by state (slots, the timer's work), and lists filtered by state, newest first.
CREATE INDEX sessions_by_state ON sessions (state, created_at);
-- A caller's live sessions (anonymous limits) and a title's (before deleting it).
CREATE INDEX sessions_by_owner ON sessions (owner, state);
CREATE INDEX sessions_by_title ON sessions (title_id, state);
-- The newest sessions, for lists without a filter.
CREATE INDEX sessions_by_created ON sessions (created_at);
