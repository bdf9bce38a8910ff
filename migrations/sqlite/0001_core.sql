-- The core index: patient / study / series / instance (PS3.3 information
-- model), holding what QIDO matches and returns, where each instance's
-- object is, and its prepared DICOM JSON metadata.

CREATE TABLE patients (
    pk          INTEGER PRIMARY KEY,
    -- Patient ID + issuer; for an empty Patient ID, one patient per study.
    patient_key TEXT NOT NULL UNIQUE,
    patient_id  TEXT,
    issuer      TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE studies (
    pk                       INTEGER PRIMARY KEY,
    study_uid                TEXT NOT NULL UNIQUE,
    patient_pk               BIGINT NOT NULL REFERENCES patients (pk),
    -- Patient attributes as received with this study.
    patient_name             TEXT,
    patient_id               TEXT,
    patient_birth_date       TEXT,
    patient_sex              TEXT,
    study_date               TEXT,
    study_time               TEXT,
    accession_number         TEXT,
    study_id                 TEXT,
    referring_physician_name TEXT,
    study_description        TEXT,
    created_at               BIGINT NOT NULL
);
CREATE INDEX studies_patient_pk ON studies (patient_pk);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_accession_number ON studies (accession_number);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_created_at ON studies (created_at);

CREATE TABLE series (
    pk                 INTEGER PRIMARY KEY,
    series_uid         TEXT NOT NULL UNIQUE,
    study_pk           BIGINT NOT NULL REFERENCES studies (pk),
    modality           TEXT,
    series_number      BIGINT,
    series_description TEXT,
    body_part_examined TEXT,
    pps_start_date     TEXT,
    pps_start_time     TEXT,
    created_at         BIGINT NOT NULL
);
CREATE INDEX series_study_pk ON series (study_pk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    pk                  INTEGER PRIMARY KEY,
    sop_uid             TEXT NOT NULL UNIQUE,
    series_pk           BIGINT NOT NULL REFERENCES series (pk),
    sop_class_uid       TEXT NOT NULL,
    instance_number     BIGINT,
    num_rows            BIGINT,
    num_columns         BIGINT,
    num_frames          BIGINT,
    bits_allocated      BIGINT,
    transfer_syntax_uid TEXT NOT NULL,
    object_key          TEXT NOT NULL,
    size                BIGINT NOT NULL,
    sha256              TEXT NOT NULL,
    -- DICOM JSON (PS3.18 Annex F), deflate-compressed, BulkDataURIs
    -- relative to the DICOMweb root.
    metadata            BLOB NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX instances_series_pk ON instances (series_pk);
