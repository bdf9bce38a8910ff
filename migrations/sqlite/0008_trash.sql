-- The trash (issue #12): a deleted instance's index rows go, in the same
-- transaction that writes its row here; its object stays in the store
-- until the purge job (src/trash.rs) deletes it after --trash-retention.
-- Restoring sends the object through ingest again, which takes the row
-- out of here in the transaction that indexes it (so an instance is always
-- either live or here, never both). A row being purged ('purging') refuses
-- that re-indexing until its object is gone; background fsck leaves every
-- object named here alone.
CREATE TABLE trash (
    pk                 INTEGER PRIMARY KEY AUTOINCREMENT,
    object_key         TEXT NOT NULL UNIQUE,
    study_uid          TEXT NOT NULL,
    series_uid         TEXT NOT NULL,
    sop_uid            TEXT NOT NULL,
    size               BIGINT NOT NULL,
    sha256             TEXT NOT NULL,
    -- For the admin's listing (phim trash list, GET /api/trash): what the
    -- study was, as the index held it when deleted.
    patient_id         TEXT,
    patient_name       TEXT,
    study_date         TEXT,
    accession_number   TEXT,
    study_description  TEXT,
    modality           TEXT,
    deleted_at         BIGINT NOT NULL,
    -- Who deleted it (user, key name or 'retention').
    deleted_by         TEXT NOT NULL,
    -- When the purge job may delete the object (ms since the epoch).
    purge_after        BIGINT NOT NULL,
    -- trashed | purging
    state              TEXT NOT NULL
);
CREATE INDEX trash_study ON trash (study_uid);
CREATE INDEX trash_purge_after ON trash (purge_after);
