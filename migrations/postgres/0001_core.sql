-- The core index: patient / study / series / instance (PS3.3 information
-- model), holding what QIDO matches and returns, where each instance's
-- object is, and its prepared DICOM JSON metadata.
--
-- Text is COLLATE "C": DICOM matching compares code points (PS3.4
-- C.2.2.2), and prefix wildcards become index ranges, which are only
-- correct in code point order.

CREATE TABLE patients (
    pk          BIGSERIAL PRIMARY KEY,
    -- Patient ID + issuer; for an empty Patient ID, one patient per study.
    patient_key TEXT COLLATE "C" NOT NULL UNIQUE,
    patient_id  TEXT COLLATE "C",
    issuer      TEXT COLLATE "C",
    created_at  BIGINT NOT NULL
);

CREATE TABLE studies (
    pk                       BIGSERIAL PRIMARY KEY,
    study_uid                TEXT COLLATE "C" NOT NULL UNIQUE,
    patient_pk               BIGINT NOT NULL REFERENCES patients (pk),
    -- Patient attributes as received with this study.
    patient_name             TEXT COLLATE "C",
    patient_id               TEXT COLLATE "C",
    patient_birth_date       TEXT COLLATE "C",
    patient_sex              TEXT COLLATE "C",
    study_date               TEXT COLLATE "C",
    study_time               TEXT COLLATE "C",
    accession_number         TEXT COLLATE "C",
    study_id                 TEXT COLLATE "C",
    referring_physician_name TEXT COLLATE "C",
    study_description        TEXT COLLATE "C",
    created_at               BIGINT NOT NULL
);
CREATE INDEX studies_patient_pk ON studies (patient_pk);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_accession_number ON studies (accession_number);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_created_at ON studies (created_at);

CREATE TABLE series (
    pk                 BIGSERIAL PRIMARY KEY,
    series_uid         TEXT COLLATE "C" NOT NULL UNIQUE,
    study_pk           BIGINT NOT NULL REFERENCES studies (pk),
    modality           TEXT COLLATE "C",
    series_number      BIGINT,
    series_description TEXT COLLATE "C",
    body_part_examined TEXT COLLATE "C",
    pps_start_date     TEXT COLLATE "C",
    pps_start_time     TEXT COLLATE "C",
    created_at         BIGINT NOT NULL
);
CREATE INDEX series_study_pk ON series (study_pk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    pk                  BIGSERIAL PRIMARY KEY,
    sop_uid             TEXT COLLATE "C" NOT NULL UNIQUE,
    series_pk           BIGINT NOT NULL REFERENCES series (pk),
    sop_class_uid       TEXT COLLATE "C" NOT NULL,
    instance_number     BIGINT,
    num_rows            BIGINT,
    num_columns         BIGINT,
    num_frames          BIGINT,
    bits_allocated      BIGINT,
    transfer_syntax_uid TEXT COLLATE "C" NOT NULL,
    object_key          TEXT COLLATE "C" NOT NULL,
    size                BIGINT NOT NULL,
    sha256              TEXT COLLATE "C" NOT NULL,
    -- DICOM JSON (PS3.18 Annex F), deflate-compressed, BulkDataURIs
    -- relative to the DICOMweb root.
    metadata            BYTEA NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX instances_series_pk ON instances (series_pk);
