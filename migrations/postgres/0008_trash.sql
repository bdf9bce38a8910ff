-- The trash (issue #12): a deleted instance's index rows go, in the same
-- transaction that writes its row here; its object stays in the store
-- until the purge job (src/trash.rs) deletes it after --trash-retention.
-- Restoring sends the object through ingest again, which takes the row
-- out of here in the transaction that indexes it (so an instance is always
-- either live or here, never both). A row being purged ('purging') refuses
-- that re-indexing until its object is gone; background fsck leaves every
-- object named here alone.
CREATE TABLE trash (
    pk                 BIGSERIAL PRIMARY KEY,
    object_key         TEXT COLLATE "C" NOT NULL UNIQUE,
    study_uid          TEXT COLLATE "C" NOT NULL,
    series_uid         TEXT COLLATE "C" NOT NULL,
    sop_uid            TEXT COLLATE "C" NOT NULL,
    size               BIGINT NOT NULL,
    sha256             TEXT COLLATE "C" NOT NULL,
    -- For the admin's listing (phim trash list, GET /api/trash): what the
    -- study was, as the index held it when deleted.
    patient_id         TEXT COLLATE "C",
    patient_name       TEXT COLLATE "C",
    study_date         TEXT COLLATE "C",
    accession_number   TEXT COLLATE "C",
    study_description  TEXT COLLATE "C",
    modality           TEXT COLLATE "C",
    deleted_at         BIGINT NOT NULL,
    -- Who deleted it (user, key name or 'retention').
    deleted_by         TEXT COLLATE "C" NOT NULL,
    -- When the purge job may delete the object (ms since the epoch).
    purge_after        BIGINT NOT NULL,
    -- trashed | purging
    state              TEXT COLLATE "C" NOT NULL
);
CREATE INDEX trash_study ON trash (study_uid);
CREATE INDEX trash_purge_after ON trash (purge_after);
