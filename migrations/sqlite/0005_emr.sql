-- EMR integration (issue #7): explicit EMR record links per study, the
-- change feed of stable studies, and webhook deliveries of its events.
-- (0004 is the pixel pipeline's.)

-- A link set by the EMR (PUT /api/studies/{study}/emr-link); it wins over
-- --emr-url-template.
CREATE TABLE emr_links (
    study_pk   INTEGER PRIMARY KEY REFERENCES studies (pk),
    record_id  TEXT NOT NULL,
    url        TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- What was last announced of each study. Detectors claim an announcement
-- by raising num_instances in one statement (compare-and-set), so several
-- servers on one index announce a study once.
CREATE TABLE study_announcements (
    study_pk      INTEGER PRIMARY KEY REFERENCES studies (pk),
    num_instances BIGINT NOT NULL,
    announced_at  BIGINT NOT NULL
);

-- The change feed (GET /api/changes), in seq order.
CREATE TABLE change_events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type       TEXT NOT NULL,
    study_uid        TEXT NOT NULL,
    accession_number TEXT,
    patient_id       TEXT,
    num_instances    BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);

-- One row per event and webhook URL; claimed with a lease before each
-- attempt so that one server delivers it at a time.
CREATE TABLE webhook_deliveries (
    pk              INTEGER PRIMARY KEY,
    event_seq       BIGINT NOT NULL REFERENCES change_events (seq),
    url             TEXT NOT NULL,
    -- pending | delivered | failed
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

-- The detector looks at instances that arrived after its horizon (ms);
-- instances older than it belong to studies already considered. Starts at
-- the migration: an existing archive is not announced study by study.
CREATE TABLE change_detector (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    horizon BIGINT NOT NULL
);
INSERT INTO change_detector (id, horizon)
    VALUES (1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
CREATE INDEX instances_created_at ON instances (created_at);
