//! The metadata index: one interface, two back ends (SQLite for the
//! embedded default, PostgreSQL for production), one conformance suite
//! (`tests/index_conformance.rs`) run against both.
//!
//! Both back ends share the SQL in [`sql`] through sqlx's `Any` driver; what
//! differs (connection set-up, migrations, aggregate functions) lives in
//! [`postgres`], [`sqlite`] and [`sql::Dialect`].

pub(crate) mod audit_log;
pub(crate) mod credentials;
pub mod jobs;
pub mod metadata;
pub(crate) mod postgres;
pub mod retention;
pub mod rows;
pub(crate) mod sql;
pub mod sqlite;
pub mod trash;

use std::sync::Arc;

use async_trait::async_trait;

use crate::dicom::Uid;
pub use crate::query::{Level, Query};
pub use audit_log::{AuditLog, AuditRecord, StoredAuditRecord};
pub use credentials::{ApiKeyRecord, Credentials};
pub use jobs::{ClaimedJob, JobCount, JobEnd, JobQueue, JobRecord, NewJob};
pub use retention::{Retention, RetentionRow};
pub use rows::{
    Attributes, Insert, InstanceRow, NewInstance, Scope, SeriesRow, StoredInstance, StudyRow, Value,
};
pub use trash::{Rejection, Trash, Trashed, TrashedObject, TrashedStudy};

/// Back-end-neutral index errors. SQL detail stays in the message for the
/// log; the HTTP layer only sees the variant.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index unavailable: {0}")]
    Unavailable(String),
    #[error("index conflict: {0}")]
    Conflict(String),
    #[error("invalid index configuration: {0}")]
    Config(String),
    #[error("index data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for IndexError {
    fn from(e: sqlx::Error) -> Self {
        let (kind, e) = match e {
            sqlx::Error::Configuration(c) => ("config", IndexError::Config(c.to_string())),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                ("corrupt", IndexError::Corrupt(e.to_string()))
            }
            other => ("unavailable", IndexError::Unavailable(other.to_string())),
        };
        ::metrics::counter!(crate::telemetry::INDEX_ERRORS, "kind" => kind).increment(1);
        e
    }
}

impl From<sqlx::migrate::MigrateError> for IndexError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        IndexError::Unavailable(format!("migration failed: {e}"))
    }
}

/// An EMR record link set for a study (`PUT /api/studies/{study}/emr-link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmrLink {
    pub record_id: String,
    pub url: String,
}

/// One event of the change feed (`GET /api/changes`, webhooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Position in the feed: increasing in the order events are committed.
    pub seq: i64,
    /// `study.stable`.
    pub event_type: String,
    /// When the event was recorded (ms since the epoch).
    pub(crate) time_ms: i64,
    pub study_uid: String,
    pub accession_number: Option<String>,
    pub patient_id: Option<String>,
    pub num_instances: i64,
}

/// A webhook delivery about to be attempted (its `webhook` job claimed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub url: String,
    pub event: ChangeEvent,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered {
        status: u16,
    },
    /// Failed; try again at `next_attempt_ms`.
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_ms: i64,
    },
    /// Failed for the last time.
    GaveUp {
        status: Option<u16>,
        error: String,
    },
}

/// A webhook delivery as logged (`GET /api/webhooks/deliveries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub(crate) event_seq: i64,
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub(crate) updated_ms: i64,
    pub delivered_ms: Option<i64>,
}

/// The index of stored instances: one `Arc<dyn Index>` for everything the
/// server keeps in SQL, its methods grouped by concern in supertraits (each
/// implemented for SQL in its own module of [`sql`]): the instances
/// themselves here, [`Search`], [`JobQueue`], [`EmrLinks`],
/// [`ChangeFeed`], [`Credentials`], [`AuditLog`], [`Trash`], [`Retention`].
#[async_trait]
pub trait Index:
    Search
    + JobQueue
    + EmrLinks
    + ChangeFeed
    + Credentials
    + AuditLog
    + Trash
    + Retention
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Checks that the index answers (for `/readyz`).
    async fn ping(&self) -> Result<(), IndexError>;

    async fn find_instance(&self, sop_uid: &str) -> Result<Option<StoredInstance>, IndexError>;

    /// Inserts the instance and, as needed, its patient, study and series,
    /// in one transaction. An existing SOP Instance UID is left untouched and
    /// reported as [`Insert::Exists`].
    async fn insert_instance(&self, rec: &NewInstance) -> Result<Insert, IndexError>;

    /// Points an indexed instance at a new object (the `replace` duplicate
    /// policy); only if it still points at `previous_key`.
    async fn replace_instance(
        &self,
        rec: &NewInstance,
        previous_key: &str,
    ) -> Result<bool, IndexError>;

    /// Every indexed instance, a page at a time in index order: those after
    /// `after` (a position this returns; 0 to start), at most `limit`.
    async fn instance_page(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError>;

    /// The instances of a study, series or single instance, in series and
    /// instance-number order.
    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>, IndexError>;

    /// One instance and its encoded frame index.
    async fn instance_frames(
        &self,
        scope: &Scope,
    ) -> Result<Option<(StoredInstance, Option<Vec<u8>>)>, IndexError>;

    /// The stored metadata documents of a scope, in the same order.
    async fn metadata(&self, scope: &Scope) -> Result<Vec<Vec<u8>>, IndexError>;
}

/// QIDO-RS and C-FIND over the index (`sql/search.rs`).
#[async_trait]
pub trait Search {
    /// QIDO / C-FIND at the query's level; at most `limit + 1` rows, so
    /// the caller can tell that more exist.
    async fn search_studies(&self, q: &Query) -> Result<Vec<StudyRow>, IndexError>;

    async fn search_series(&self, q: &Query) -> Result<Vec<SeriesRow>, IndexError>;

    async fn search_instances(&self, q: &Query) -> Result<Vec<InstanceRow>, IndexError>;

    /// The metadata document of one representative instance (the first
    /// stored) of each given study or series UID, for attributes that are
    /// not index columns (`includefield`).
    async fn representatives(
        &self,
        level: Level,
        uids: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError>;

    /// How many studies match (the query's limit and offset are ignored).
    async fn count_studies(&self, q: &Query) -> Result<i64, IndexError>;
}

/// Each study's link to its EMR record (`sql/emr_links.rs`).
#[async_trait]
pub trait EmrLinks {
    /// Sets the EMR link of a study; `false` when the study is not indexed.
    async fn put_emr_link(&self, study: &Uid, link: &EmrLink) -> Result<bool, IndexError>;

    /// The explicit EMR links of the given studies (those that have one).
    async fn emr_links(&self, studies: &[Uid]) -> Result<Vec<(String, EmrLink)>, IndexError>;

    /// Removes the EMR link of a study; `true` when there was one.
    async fn delete_emr_link(&self, study: &Uid) -> Result<bool, IndexError>;
}

/// Stable-study events and their webhook deliveries (`sql/feed.rs`).
#[async_trait]
pub trait ChangeFeed {
    /// Announces the studies that received instances and have had none for
    /// `stable_after_ms` at `now_ms`: records a `study.stable` event per study
    /// and, in the same transaction, a pending delivery per webhook URL with
    /// its `webhook` job (at most `webhook_max_attempts` attempts); returns
    /// the events. Each announcement is claimed atomically, so detectors on
    /// several servers announce a study once; a study that grows is
    /// announced again.
    async fn announce_stable_studies(
        &self,
        now_ms: i64,
        stable_after_ms: i64,
        webhook_urls: &[String],
        webhook_max_attempts: i64,
    ) -> Result<Vec<ChangeEvent>, IndexError>;

    /// Events after `since`, in order, at most `limit`.
    async fn changes(&self, since: i64, limit: i64) -> Result<Vec<ChangeEvent>, IndexError>;

    /// A delivery not delivered yet (pending, or failed and retried by an
    /// admin): its URL and event, for its job to attempt.
    async fn delivery(&self, id: i64) -> Result<Option<ClaimedDelivery>, IndexError>;

    /// Records the outcome of one more attempt.
    async fn record_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), IndexError>;

    /// The delivery log, newest first.
    async fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>, IndexError>;
}

/// Opens the index named by a database URL (`sqlite://…` or
/// `postgres://…`) and runs pending migrations when `migrate` is set.
pub async fn open(url: &str, migrate: bool) -> Result<Arc<dyn Index>, IndexError> {
    sqlx::any::install_default_drivers();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url, migrate).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url, migrate).await?))
    } else {
        Err(IndexError::Config(
            "database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
