//! The trash (migration 0008): what `DELETE` on a study, series or
//! instance moves out of the index, kept until the purge job deletes its
//! objects (`crate::trash` runs deletion, restore and purge on this).
//!
//! - Deleting is one transaction: every instance of the scope gets a
//!   `trash` row and loses its index rows (sequence values, and the series
//!   and study rows it leaves empty). A crash leaves all of it live or all
//!   of it in the trash.
//! - Indexing an instance whose object is in the trash takes the object out
//!   of it in the same transaction (`sql::trash::take_from_trash`); restoring is
//!   ingesting the stored object again.
//! - Purging marks rows `purging` before it deletes their objects and
//!   removes the rows after; an ingest that meets a `purging` row is
//!   refused (its object is going), never indexed onto a deleted object.
//! - An IOCM rejection note (`ingest::rejection`) records its instances in
//!   `rejections` (they are refused from then on) and trashes those stored.

use async_trait::async_trait;

use super::{IndexError, Scope};

/// What a deletion moved to the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trashed {
    pub instances: i64,
    pub bytes: i64,
    /// The patient of the study (for the audit record).
    pub patient_id: Option<String>,
    /// Whether the study itself is gone (no instance of it is left).
    pub study_removed: bool,
}

/// A study's objects in the trash, as `phim trash list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrashedStudy {
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_date: Option<String>,
    pub accession_number: Option<String>,
    pub study_description: Option<String>,
    /// Modalities of the trashed series, `,`-separated.
    pub modalities: Option<String>,
    pub instances: i64,
    pub bytes: i64,
    pub deleted_at_ms: i64,
    pub deleted_by: String,
    /// When the purge job may delete the objects (the earliest of them).
    pub purge_after_ms: i64,
}

/// One trashed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashedObject {
    pub pk: i64,
    pub object_key: String,
    pub study_uid: String,
    pub sop_uid: String,
}

/// An IOCM rejection note (`ingest::rejection`), as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection<'a> {
    /// The note's SOP Instance UID.
    pub note_uid: &'a str,
    /// PS3.16 CID 7011 code value and meaning.
    pub code: &'a str,
    pub meaning: &'a str,
    /// (study, series, SOP instance) of the rejected instances.
    pub references: &'a [(String, String, String)],
}

/// The trash of deleted instances (`index/trash.rs`).
#[async_trait]
pub trait Trash {
    /// Moves every instance of `scope` to the trash, in one transaction;
    /// `None` when the scope names nothing indexed.
    async fn trash(
        &self,
        scope: &Scope,
        deleted_by: &str,
        now_ms: i64,
        purge_after_ms: i64,
    ) -> Result<Option<Trashed>, IndexError>;

    /// The studies with objects in the trash, the last deleted first.
    async fn trash_list(&self) -> Result<Vec<TrashedStudy>, IndexError>;

    /// The objects of one study still in the trash (not being purged).
    async fn trashed_objects(&self, study_uid: &str) -> Result<Vec<TrashedObject>, IndexError>;

    /// Every object key in the trash, purging or not (fsck leaves them).
    async fn trashed_keys(&self) -> Result<Vec<String>, IndexError>;

    /// Marks at most `limit` objects due for purging at `now_ms` (of one
    /// study, or any) as `purging` and returns them; rows left `purging` by
    /// a purge that did not finish are due again.
    async fn claim_purge(
        &self,
        now_ms: i64,
        study_uid: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TrashedObject>, IndexError>;

    /// Removes purged objects' rows.
    async fn purged(&self, pks: &[i64]) -> Result<(), IndexError>;

    /// Records a rejection note's instances as rejected and moves those
    /// indexed to the trash, in one transaction; how many were indexed.
    /// Recording a note again changes nothing.
    async fn reject(
        &self,
        rejection: &Rejection<'_>,
        now_ms: i64,
        purge_after_ms: i64,
    ) -> Result<i64, IndexError>;

    /// Why an instance was rejected (its SOP Instance UID is refused), if it was.
    async fn rejection(&self, sop_uid: &str) -> Result<Option<String>, IndexError>;

    /// Whether any instance of the study is indexed or in the trash.
    async fn study_known(&self, study_uid: &str) -> Result<bool, IndexError>;
}
