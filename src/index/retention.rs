//! What retention (`crate::retention`) reads of the index: each study's
//! dates and modalities, and the holds an admin sets (migration 0010).

use async_trait::async_trait;

use super::IndexError;

/// A study as the retention rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    /// Position in the index (for paging).
    pub pk: i64,
    pub study_uid: String,
    /// Study Date (0008,0020), as stored (`YYYYMMDD`).
    pub study_date: Option<String>,
    /// When the study was first received (ms since the epoch).
    pub created_at_ms: i64,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub modalities: Vec<String>,
    /// An admin keeps it (`PUT /api/studies/{s}/keep`).
    pub held: bool,
}

#[async_trait]
pub trait Retention {
    /// Studies after position `after`, at most `limit`, in index order.
    async fn retention_page(&self, after: i64, limit: i64)
        -> Result<Vec<RetentionRow>, IndexError>;

    /// Sets or clears a study's hold; `false` when the study is not indexed
    /// (setting) or had no hold (clearing).
    async fn set_hold(
        &self,
        study_uid: &str,
        hold: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, IndexError>;
}
