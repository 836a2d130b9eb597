-- An admin's drain may have a deadline: sessions still running on the node then are stopped
-- (reason `drained`). Milliseconds since the epoch; NULL: no deadline (or no drain).
ALTER TABLE nodes ADD COLUMN drain_deadline INTEGER;
