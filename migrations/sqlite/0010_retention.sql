-- Retention (issue #12): studies an admin keeps whatever the retention
-- rules say (PUT /api/studies/{s}/keep). Kept by Study Instance UID, so a
-- hold outlives a deletion and a restore of the study.
CREATE TABLE retention_holds (
    study_uid TEXT PRIMARY KEY,
    set_by    TEXT NOT NULL,
    set_at    BIGINT NOT NULL
);
