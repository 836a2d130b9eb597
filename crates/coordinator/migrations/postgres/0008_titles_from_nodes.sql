-- Titles made from the applications nodes advertise (issue 12).
-- source: 'admin' (made with POST /api/v1/titles, or changed by an admin since: nodes never
-- change it) or 'node' (made by the coordinator from a node's application, kept in step with
-- what nodes advertise). approved: 0 while such a title waits for an admin's approval
-- ([titles] approve_new); only admins see it then.
ALTER TABLE titles ADD COLUMN source TEXT NOT NULL DEFAULT 'admin' CHECK (source IN ('admin', 'node'));
ALTER TABLE titles ADD COLUMN approved BIGINT NOT NULL DEFAULT 1;
CREATE INDEX titles_by_application ON titles (application_id);

-- Applications whose title an admin deleted: the coordinator does not make their title again.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE dismissed_applications (
    application_id TEXT PRIMARY KEY,
    dismissed_at BIGINT NOT NULL
);
