-- Series waiting for their thumbnail (imaging::thumbnail). A row is
-- written (or its due time pushed back) when an instance of the series is
-- stored; a worker claims due rows by moving due_at forward by a lease and
-- deletes the row when done, unless new instances re-queued it meanwhile.
CREATE TABLE thumbnail_queue (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX thumbnail_queue_due ON thumbnail_queue (due_at);
