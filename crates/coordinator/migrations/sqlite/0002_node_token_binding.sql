-- A node token may be bound to one node id: a link that says hello as another node is refused.
-- NULL: a fleet token, for any node name.
ALTER TABLE node_tokens ADD COLUMN node_id TEXT;
