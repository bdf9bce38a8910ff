-- The job queue (issue #13): every background job of every server is a row
-- here (src/jobs.rs runs them; src/index/sql/jobs.rs is the SQL). A worker
-- claims due rows with a lease (on PostgreSQL with FOR UPDATE SKIP LOCKED,
-- so servers sharing the index take different rows without waiting on one
-- another), renews the lease while it works, and deletes the row when done.
-- A lease that runs out (the server died) makes the row due again; a job
-- that failed max_attempts times is kept as 'dead' for an admin to see
-- (GET /api/jobs?state=dead) and retry.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    -- What the job is about (a series UID, a delivery id, '' for periodic
    -- jobs): queuing a (kind, job_key) that is queued already updates it.
    job_key      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    -- queued | running | dead
    state        TEXT NOT NULL,
    -- queued: when it is due; running: when its lease runs out.
    run_at       BIGINT NOT NULL,
    attempts     BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    -- Raised each time the job is queued again; a worker's outcome applies
    -- only to the generation it claimed.
    generation   BIGINT NOT NULL,
    owner        TEXT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (kind, job_key)
);
CREATE INDEX jobs_due ON jobs (state, run_at);

-- The thumbnail queue of 0004 becomes jobs of kind 'thumbnail'.
INSERT INTO jobs (kind, job_key, payload, state, run_at, attempts, max_attempts,
                  generation, created_at, updated_at)
    SELECT 'thumbnail', series_uid, study_uid, 'queued', due_at, 0, 3, 0, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM thumbnail_queue;
DROP TABLE thumbnail_queue;

-- Webhook deliveries keep their log in webhook_deliveries (attempts and
-- outcomes, GET /api/webhooks/deliveries); their scheduling moves here, one
-- 'webhook' job per pending delivery (claimed_until is no longer used; the
-- handler gives up at --webhook-max-attempts, max_attempts here bounds only
-- attempts cut short by a server that died).
INSERT INTO jobs (kind, job_key, payload, state, run_at, attempts, max_attempts,
                  generation, created_at, updated_at)
    SELECT 'webhook', CAST(pk AS TEXT), '', 'queued', next_attempt_at, attempts,
           attempts + 10, 0, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM webhook_deliveries WHERE status = 'pending';
