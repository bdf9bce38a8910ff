-- Full QIDO / C-FIND matching (PS3.4 C.2.2.2): case-folded person names,
-- accent-folded name words for fuzzy matching, indexed sequence items, and
-- an index for the newest-first study order.

ALTER TABLE studies ADD COLUMN patient_name_key TEXT COLLATE "C";
CREATE INDEX studies_patient_name_key ON studies (patient_name_key);

CREATE INDEX studies_recent ON studies (study_date DESC NULLS LAST, study_time DESC NULLS LAST, pk DESC);
CREATE INDEX series_study_modality ON series (study_pk, modality);

CREATE TABLE study_name_words (
    study_pk BIGINT NOT NULL REFERENCES studies (pk),
    word     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (study_pk, word)
);
CREATE INDEX study_name_words_word ON study_name_words (word, study_pk);

CREATE TABLE sequence_items (
    instance_pk BIGINT NOT NULL REFERENCES instances (pk),
    series_pk   BIGINT NOT NULL,
    study_pk    BIGINT NOT NULL,
    -- SSSSSSSS.EEEEEEEE: the sequence and the element inside its items.
    path        TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX sequence_items_path_value ON sequence_items (path, value);
CREATE INDEX sequence_items_instance ON sequence_items (instance_pk);
