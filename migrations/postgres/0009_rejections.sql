-- IHE IOCM rejection notes (issue #12): every instance a rejection note
-- (a Key Object Selection document titled from PS3.16 CID 7011) lists.
-- Ingest refuses these SOP Instance UIDs from then on (src/ingest); those
-- already stored were moved to the trash in the transaction that wrote
-- these rows (src/index/sql/trash.rs).
CREATE TABLE rejections (
    sop_uid     TEXT COLLATE "C" PRIMARY KEY,
    study_uid   TEXT COLLATE "C" NOT NULL,
    series_uid  TEXT COLLATE "C" NOT NULL,
    -- CID 7011 code value (113001, 113037, 113038, 113039) and meaning.
    code        TEXT COLLATE "C" NOT NULL,
    meaning     TEXT COLLATE "C" NOT NULL,
    -- The rejection note's SOP Instance UID.
    note_uid    TEXT COLLATE "C" NOT NULL,
    rejected_at BIGINT NOT NULL
);
CREATE INDEX rejections_study ON rejections (study_uid);
