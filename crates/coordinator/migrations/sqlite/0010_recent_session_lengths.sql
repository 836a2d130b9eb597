-- The estimated wait in a queue reads how long a title's latest sessions lasted: the 20 newest
-- ended ones. This index finds them without reading the title's whole history.
CREATE INDEX sessions_ended_by_title ON sessions (title_id, state, ended_at);
