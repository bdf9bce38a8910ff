-- Trust (issue #11): API keys for machines and the append-only audit trail.

-- Only the SHA-256 of each key is kept; the key itself is shown once.
-- A revoked key's row stays (the audit trail names keys); its name may
-- then be given to a new key.
CREATE TABLE api_keys (
    pk         BIGSERIAL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    role       TEXT COLLATE "C" NOT NULL,
    key_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Each row carries the hash of the previous one (prev_hash) and its own
-- (hash = SHA-256 of prev_hash, seq, time and body), so that a changed,
-- inserted or removed row breaks the chain (`phim audit verify`).
-- Rows are only ever inserted.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    event_id   BIGINT NOT NULL,
    outcome    BIGINT NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    patient_id TEXT COLLATE "C",
    study_uids TEXT COLLATE "C" NOT NULL,
    body       TEXT COLLATE "C" NOT NULL,
    prev_hash  TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_patient ON audit_log (patient_id, time_ms);

-- Keys that sign share links (POST /api/studies/{study}/share). The
-- newest signs; every key still here verifies, so links outlive a
-- rotation (`phim share-key rotate`) until they expire.
CREATE TABLE share_keys (
    kid        TEXT COLLATE "C" PRIMARY KEY,
    secret     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
