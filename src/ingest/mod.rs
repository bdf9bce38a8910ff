//! The ingest pipeline shared by STOW-RS, `phim import` and DIMSE
//! C-STORE: spool → scan the header → validate → store the bytes → index.
//!
//! Store first, index second: an instance is acknowledged only after its
//! object is durable and its index rows are committed. A crash in between
//! leaves at worst an unindexed object, never an index row without one.

pub mod batch;
pub(crate) mod rejection;
pub mod spool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::dicom::json::{write_dataset, JsonOptions};
use crate::dicom::scan::{is_binary_vr, scan_file, ScanError, ScanLimits, Scanned, Value};
use crate::dicom::{tags, Uid};
use crate::index::{self, Attributes, Index, IndexError, Insert, NewInstance};
use crate::query::{Kind, Level};
use crate::store::{ObjectKey, Store, StoreError};

pub use spool::{Spool, SpoolError, SpoolWriter};

/// What to do with a SOP Instance UID that is stored with other bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DuplicatePolicy {
    /// Keep the stored instance; fail the new one (0111).
    Reject,
    /// Store the new instance in place of the old one.
    Replace,
}

/// Why an instance was not stored. Each maps to one DICOM Failure Reason
/// and one HTTP status in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot parse the instance: {0}")]
    Unparseable(#[from] ScanError),
    #[error("required attribute {attribute} is missing or invalid: {reason}")]
    InvalidAttribute {
        attribute: &'static str,
        reason: String,
    },
    #[error("Study Instance UID {found} does not match the study {expected} of the request")]
    StudyMismatch { expected: String, found: String },
    #[error("SOP Instance UID is already stored with different content")]
    Duplicate,
    /// The instance was rejected by an IOCM rejection note (`rejection`).
    #[error("the instance was rejected: {0}")]
    Rejected(String),
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("instance too large: {0}")]
    TooLarge(String),
    #[error("could not receive the instance: {0}")]
    Receive(String),
    /// The spool's disk is full (or over quota): the server's problem, and
    /// one that passes once space is freed.
    #[error("no space left to receive the instance: {0}")]
    NoSpace(String),
    #[error("object store failure: {0}")]
    Store(#[from] StoreError),
    #[error("index failure: {0}")]
    Index(#[from] IndexError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// The kind of failure, as a metrics label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            IngestError::Unparseable(_) => "unparseable",
            IngestError::InvalidAttribute { .. } => "invalid_attribute",
            IngestError::StudyMismatch { .. } => "study_mismatch",
            IngestError::Duplicate => "duplicate",
            IngestError::Rejected(_) => "rejected",
            IngestError::NotAuthorized(_) => "not_authorized",
            IngestError::TooLarge(_) => "too_large",
            IngestError::Receive(_) => "receive",
            IngestError::NoSpace(_) => "no_space",
            IngestError::Store(_) => "store",
            IngestError::Index(_) => "index",
            IngestError::Internal(_) => "internal",
        }
    }
}

impl From<SpoolError> for IngestError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::TooLarge(_) => IngestError::TooLarge(e.to_string()),
            SpoolError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                IngestError::NoSpace(io.to_string())
            }
            SpoolError::Io(io) => IngestError::Receive(io.to_string()),
        }
    }
}

/// A failure with whatever identifies the instance (for FailedSOPSequence).
#[derive(Debug)]
pub struct IngestFailure {
    pub sop_class_uid: Option<String>,
    pub(crate) sop_instance_uid: Option<String>,
    pub error: IngestError,
}

impl From<IngestError> for IngestFailure {
    fn from(error: IngestError) -> Self {
        IngestFailure {
            sop_class_uid: None,
            sop_instance_uid: None,
            error,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The same bytes were already stored (an idempotent retry).
    AlreadyStored,
    Replaced,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub study_uid: Uid,
    pub series_uid: Uid,
    pub sop_uid: Uid,
    pub sop_class_uid: String,
    pub outcome: Outcome,
    pub(crate) warnings: Vec<String>,
}

/// A series is queued for its thumbnail this long after its last instance
/// arrived (each new instance pushes the job back).
const THUMBNAIL_DEBOUNCE_MS: i64 = 3_000;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub spool_dir: PathBuf,
    pub max_instance_size: u64,
    pub on_duplicate: DuplicatePolicy,
    /// Instances processed (scanned, stored, indexed) at once.
    pub concurrency: usize,
    pub limits: ScanLimits,
    /// How long deleted and rejected instances stay in the trash.
    pub trash_retention: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Ingest {
    store: Store,
    index: Arc<dyn Index>,
    config: Arc<IngestConfig>,
    permits: Arc<Semaphore>,
    /// When this process last queued each series for its thumbnail: one
    /// queue write per series and second, not one per instance.
    thumbnail_queued: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

/// The header, validated and turned into index rows.
struct Prepared {
    study: Uid,
    series: Uid,
    sop: Uid,
    record: NewInstance,
    warnings: Vec<String>,
    /// What it rejects, when it is an IOCM rejection note.
    rejection: Option<rejection::RejectionNote>,
}

/// What [`Ingest::before_writing`] decided.
enum Before {
    AlreadyStored,
    /// Write the object; it replaces the one at this key, if any.
    Write {
        replacing: Option<String>,
    },
}

impl Ingest {
    pub fn new(
        store: Store,
        index: Arc<dyn Index>,
        config: IngestConfig,
    ) -> std::io::Result<Ingest> {
        std::fs::create_dir_all(&config.spool_dir)?;
        remove_stale_spools(&config.spool_dir);
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Ok(Ingest {
            store,
            index,
            config: Arc::new(config),
            permits,
            thumbnail_queued: Arc::default(),
        })
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// A writer for one incoming instance.
    pub(crate) async fn spool_writer(&self) -> Result<SpoolWriter, SpoolError> {
        SpoolWriter::create(&self.config.spool_dir, self.config.max_instance_size).await
    }

    /// Stores one spooled instance. `expected_study` is the study of a
    /// `POST /studies/{study}` request.
    pub async fn ingest(
        &self,
        spool: Spool,
        expected_study: Option<&Uid>,
    ) -> Result<Stored, IngestFailure> {
        self.ingest_as(spool, expected_study, false).await
    }

    /// [`Ingest::ingest`] for a caller that may store derived objects only
    /// (`derived_only`: a radiologist): other SOP classes are refused
    /// before anything is written.
    pub(crate) async fn ingest_as(
        &self,
        spool: Spool,
        expected_study: Option<&Uid>,
        derived_only: bool,
    ) -> Result<Stored, IngestFailure> {
        use crate::telemetry as t;
        let (started, size) = (std::time::Instant::now(), spool.size());
        let result = self.pipeline(spool, expected_study, derived_only).await;
        ::metrics::histogram!(t::INGEST_DURATION).record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(s) if s.outcome == Outcome::AlreadyStored => "already_stored",
            Ok(s) => {
                ::metrics::counter!(t::STORED_BYTES).increment(size);
                if s.outcome == Outcome::Replaced {
                    "replaced"
                } else {
                    "stored"
                }
            }
            Err(f) => {
                ::metrics::counter!(t::INGEST_FAILURES, "kind" => f.error.kind()).increment(1);
                "failed"
            }
        };
        ::metrics::counter!(t::INSTANCES, "outcome" => outcome).increment(1);
        result
    }

    /// Sends an object of the store through the pipeline again (fsck's
    /// orphans, the trash's restore): it is indexed under the same key.
    pub(crate) async fn ingest_stored(&self, key: &ObjectKey) -> Result<Stored, IngestFailure> {
        let mut writer = self.spool_writer().await.map_err(IngestError::from)?;
        let mut body = self
            .store
            .get_stream(key)
            .await
            .map_err(IngestError::from)?;
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(IngestError::from)?;
            writer.write(&chunk).await.map_err(IngestError::from)?;
        }
        let spool = writer.finish().await.map_err(IngestError::from)?;
        self.ingest(spool, None).await
    }

    /// Spool → scan → admit → store → index, for one instance.
    async fn pipeline(
        &self,
        spool: Spool,
        expected_study: Option<&Uid>,
        derived_only: bool,
    ) -> Result<Stored, IngestFailure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;

        // Scanning and JSON generation are CPU and blocking I/O: off the
        // async workers.
        let path = spool.path().to_owned();
        let limits = self.config.limits.clone();
        let (size, sha) = (spool.size(), spool.sha256().to_owned());
        let mut prepared = tokio::task::spawn_blocking(move || prepare(&path, &limits, size, &sha))
            .await
            .map_err(|e| IngestError::Internal(format!("scan task failed: {e}")))??;
        if spool.prefixed() {
            prepared.warnings.push(
                "the file had no Part 10 preamble/DICM prefix; it was added (PS3.10 §7.1)".into(),
            );
        }
        let (class_uid, sop_uid) = (
            prepared.record.sop_class_uid.clone(),
            prepared.sop.to_string(),
        );
        let fail = move |error: IngestError| IngestFailure {
            sop_class_uid: Some(class_uid.clone()),
            sop_instance_uid: Some(sop_uid.clone()),
            error,
        };

        admit(&prepared, expected_study, derived_only).map_err(&fail)?;

        let key = ObjectKey::instance(&prepared.study, spool.sha256());
        let mut record = prepared.record;
        record.object_key = key.as_str().to_owned();
        let stored = |outcome| Stored {
            study_uid: prepared.study.clone(),
            series_uid: prepared.series.clone(),
            sop_uid: prepared.sop.clone(),
            sop_class_uid: record.sop_class_uid.clone(),
            outcome,
            warnings: prepared.warnings.clone(),
        };

        let replacing = match self.before_writing(&prepared.sop, &record.sha256).await {
            Ok(Before::Write { replacing }) => replacing,
            Ok(Before::AlreadyStored) => {
                // A rejection note sent again applies again (its first
                // application may have failed after it was indexed).
                self.apply_rejection(&prepared.sop, prepared.rejection.as_ref())
                    .await
                    .map_err(&fail)?;
                return Ok(stored(Outcome::AlreadyStored));
            }
            Err(e) => return Err(fail(e)),
        };

        if let Err(e) = self
            .store
            .put_file(&key, spool.path(), spool.size(), spool.owned())
            .await
        {
            return Err(fail(e.into()));
        }

        let outcome = match replacing {
            Some(previous) => self.replace(&record, &previous, &key).await,
            None => self.insert(&record, &key).await,
        };
        match outcome {
            Ok(o) => {
                tracing::debug!(sop = %prepared.sop, study = %prepared.study, outcome = ?o, "instance stored");
                self.apply_rejection(&prepared.sop, prepared.rejection.as_ref())
                    .await
                    .map_err(&fail)?;
                if record.frame_index.is_some() {
                    self.queue_thumbnail(&record.study_uid, &record.series_uid)
                        .await;
                }
                Ok(stored(o))
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// What the index says before anything is written: a rejected instance
    /// sent again is refused (IHE IOCM), the same bytes are already stored,
    /// or other bytes are stored under the SOP Instance UID (refused or
    /// replaced by the duplicate policy).
    async fn before_writing(&self, sop: &Uid, sha256: &str) -> Result<Before, IngestError> {
        if let Some(why) = self.index.rejection(sop.as_str()).await? {
            return Err(IngestError::Rejected(why));
        }
        match self.index.find_instance(sop.as_str()).await? {
            Some(existing) if existing.sha256 == sha256 => Ok(Before::AlreadyStored),
            Some(existing) => match self.config.on_duplicate {
                DuplicatePolicy::Reject => Err(IngestError::Duplicate),
                DuplicatePolicy::Replace => Ok(Before::Write {
                    replacing: Some(existing.object_key),
                }),
            },
            None => Ok(Before::Write { replacing: None }),
        }
    }

    /// Hides what a stored rejection note rejects: recorded as rejected,
    /// moved to the trash. A failure fails the note's store, so that the
    /// sender sends it again (and it applies again).
    async fn apply_rejection(
        &self,
        note_uid: &Uid,
        note: Option<&rejection::RejectionNote>,
    ) -> Result<(), IngestError> {
        let Some(note) = note else {
            return Ok(());
        };
        let now = crate::index::now_ms();
        let keep = i64::try_from(self.config.trash_retention.as_millis()).unwrap_or(i64::MAX);
        let record = crate::index::Rejection {
            note_uid: note_uid.as_str(),
            code: note.code,
            meaning: note.meaning,
            references: &note.references,
        };
        let hidden = self
            .index
            .reject(&record, now, now.saturating_add(keep))
            .await?;
        tracing::info!(note = %note_uid, code = note.code, referenced = note.references.len(),
            hidden, "IOCM rejection note applied");
        Ok(())
    }

    /// Queues the series' thumbnail (made in the background once the
    /// series pauses); a failure only delays the thumbnail until asked for.
    async fn queue_thumbnail(&self, study: &str, series: &str) {
        let now = std::time::Instant::now();
        {
            let Ok(mut seen) = self.thumbnail_queued.lock() else {
                return;
            };
            if seen
                .get(series)
                .is_some_and(|t| now.duration_since(*t).as_millis() < 1000)
            {
                return;
            }
            if seen.len() > 10_000 {
                seen.retain(|_, t| now.duration_since(*t).as_secs() < 10);
            }
            seen.insert(series.to_owned(), now);
        }
        let now = crate::index::now_ms();
        let job = crate::index::NewJob {
            kind: crate::index::jobs::kind::THUMBNAIL,
            key: series,
            payload: study,
            run_at: now + THUMBNAIL_DEBOUNCE_MS,
            max_attempts: crate::imaging::thumbnail::MAX_ATTEMPTS,
        };
        if let Err(e) = self.index.enqueue_job(&job, now).await {
            tracing::warn!(study, series, error = %e, "thumbnail not queued");
        }
    }

    async fn insert(&self, record: &NewInstance, key: &ObjectKey) -> Result<Outcome, IngestError> {
        match self.index.insert_instance(record).await {
            Ok(Insert::Inserted) => Ok(Outcome::Stored),
            // A concurrent request stored the same SOP Instance UID first.
            Ok(Insert::Exists(existing)) if existing.sha256 == record.sha256 => {
                Ok(Outcome::AlreadyStored)
            }
            Ok(Insert::Exists(existing)) => match self.config.on_duplicate {
                DuplicatePolicy::Reject => {
                    self.discard(key, &existing.object_key).await;
                    Err(IngestError::Duplicate)
                }
                DuplicatePolicy::Replace => self.replace(record, &existing.object_key, key).await,
            },
            Err(e @ IndexError::Conflict(_)) => {
                self.discard(key, "").await;
                Err(e.into())
            }
            // Unavailable: whether the row committed is unknown, so the
            // object stays (an orphan at worst, never a dangling row).
            Err(e) => Err(e.into()),
        }
    }

    async fn replace(
        &self,
        record: &NewInstance,
        previous_key: &str,
        key: &ObjectKey,
    ) -> Result<Outcome, IngestError> {
        if self.index.replace_instance(record, previous_key).await? {
            if previous_key != key.as_str() {
                if let Ok(old) = ObjectKey::from_stored(previous_key) {
                    if let Err(e) = self.store.delete(&old).await {
                        tracing::warn!(key = previous_key, error = %e, "replaced object not deleted");
                    }
                }
            }
            Ok(Outcome::Replaced)
        } else {
            Err(IngestError::Index(IndexError::Conflict(
                "the instance changed while it was being replaced".into(),
            )))
        }
    }

    /// Deletes an object this request wrote, unless the index uses it.
    async fn discard(&self, key: &ObjectKey, in_use: &str) {
        if key.as_str() != in_use {
            if let Err(e) = self.store.delete(key).await {
                tracing::warn!(key = key.as_str(), error = %e, "unused object not deleted");
            }
        }
    }
}

/// Removes spool files left by a process that died mid-request. Only old
/// ones: another process may share the data folder.
fn remove_stale_spools(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t < cutoff)
            .unwrap_or(false);
        if stale && e.path().extension().is_some_and(|x| x == "part") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Scans the spooled file and builds the index record and metadata.
fn prepare(
    path: &std::path::Path,
    limits: &ScanLimits,
    size: u64,
    sha256: &str,
) -> Result<Prepared, IngestFailure> {
    let file = std::fs::File::open(path).map_err(|e| IngestError::Receive(e.to_string()))?;
    let scanned = scan_file(file, limits).map_err(IngestError::from)?;

    let sop_class = scanned.text(tags::SOP_CLASS_UID);
    let sop_raw = scanned.text(tags::SOP_INSTANCE_UID);
    let fail = |error: IngestError| IngestFailure {
        sop_class_uid: sop_class.clone(),
        sop_instance_uid: sop_raw.clone(),
        error,
    };
    let uid = |attribute: &'static str, value: &Option<String>| -> Result<Uid, IngestFailure> {
        let v = value.as_deref().ok_or_else(|| {
            fail(IngestError::InvalidAttribute {
                attribute,
                reason: "missing".into(),
            })
        })?;
        Uid::from_value(v).map_err(|e| {
            fail(IngestError::InvalidAttribute {
                attribute,
                reason: e.to_string(),
            })
        })
    };
    let sop = uid("SOPInstanceUID", &sop_raw)?;
    let sop_class_uid = uid("SOPClassUID", &sop_class)?;
    let study = uid("StudyInstanceUID", &scanned.text(tags::STUDY_INSTANCE_UID))?;
    let series = uid(
        "SeriesInstanceUID",
        &scanned.text(tags::SERIES_INSTANCE_UID),
    )?;

    let mut warnings = scanned.warnings.clone();
    if scanned.charset().unknown {
        warnings.push(
            "unknown Specific Character Set: text decoded with the configured default (--default-charset)"
                .into(),
        );
    }
    if scanned.undeclared_non_ascii() {
        warnings.push(
            "no Specific Character Set but non-ASCII text: decoded with the configured default (--default-charset)"
                .into(),
        );
    }

    let instance_path = format!("/studies/{study}/series/{series}/instances/{sop}");
    let metadata = metadata_document(&scanned, &instance_path)
        .map_err(|e| fail(IngestError::Internal(e.to_string())))?;

    let int = |tag| scanned.uint(tag).and_then(|v| i64::try_from(v).ok());
    let record = NewInstance {
        study_uid: study.to_string(),
        series_uid: series.to_string(),
        sop_uid: sop.to_string(),
        sop_class_uid: sop_class_uid.to_string(),
        attributes: copied_attributes(&scanned),
        issuer_of_patient_id: scanned.text(tags::ISSUER_OF_PATIENT_ID),
        rows: int(tags::ROWS),
        columns: int(tags::COLUMNS),
        frames: int(tags::NUMBER_OF_FRAMES),
        bits_allocated: int(tags::BITS_ALLOCATED),
        transfer_syntax_uid: scanned.transfer_syntax.uid.to_owned(),
        object_key: String::new(),
        size: size as i64,
        sha256: sha256.to_owned(),
        metadata,
        sequence_values: sequence_values(&scanned),
        frame_index: crate::dicom::frames::frame_index(&scanned).map(|f| f.encode()),
    };
    let rejection = rejection::rejection_note(&scanned, &record.sop_class_uid);
    Ok(Prepared {
        study,
        series,
        sop,
        record,
        warnings,
        rejection,
    })
}

/// Whether the request may store this instance: a caller allowed
/// derived objects only sends one, and a request naming a study sends an
/// instance of it.
fn admit(
    prepared: &Prepared,
    expected_study: Option<&Uid>,
    derived_only: bool,
) -> Result<(), IngestError> {
    if derived_only && !crate::auth::policy::is_derived_sop_class(&prepared.record.sop_class_uid) {
        return Err(IngestError::NotAuthorized(format!(
            "this caller may store derived objects (reports, key images, presentation states) only, not SOP class {}",
            prepared.record.sop_class_uid
        )));
    }
    if let Some(expected) = expected_study {
        if *expected != prepared.study {
            return Err(IngestError::StudyMismatch {
                expected: expected.to_string(),
                found: prepared.study.to_string(),
            });
        }
    }
    Ok(())
}

/// The values of the attributes the index copies
/// ([`crate::query::Stored::Copied`]), at every level.
fn copied_attributes(scanned: &Scanned) -> Attributes {
    let mut out = Attributes::default();
    for level in [Level::Study, Level::Series, Level::Instance] {
        for a in crate::query::copied(level) {
            let tag = a.dicom_tag();
            let value = match a.kind {
                Kind::Integer => first_integer(scanned, tag).map(index::Value::Int),
                _ => scanned.text(tag).map(index::Value::Text),
            };
            out.set(tag, value);
        }
    }
    out
}

/// The first value of an IS (or other numeric string) element.
fn first_integer(scanned: &Scanned, tag: dicom_core::Tag) -> Option<i64> {
    scanned
        .text(tag)?
        .split('\\')
        .next()
        .and_then(|v| v.trim().parse::<i64>().ok())
}

/// Text values inside the items of the sequences indexed for sequence
/// matching, as (`SSSSSSSS.EEEEEEEE`, value) pairs.
fn sequence_values(scanned: &Scanned) -> Vec<(String, String)> {
    let charset = scanned.charset();
    let mut out = Vec::new();
    for seq in &scanned.dataset {
        let tag = ((seq.tag.0 as u32) << 16) | seq.tag.1 as u32;
        if !crate::query::INDEXED_SEQUENCES.contains(&tag) {
            continue;
        }
        let Value::Sequence { items, .. } = &seq.value else {
            continue;
        };
        for item in items {
            for e in item {
                let Value::Inline(bytes) = &e.value else {
                    continue;
                };
                if is_binary_vr(e.vr) || !is_text_vr(e.vr) {
                    continue;
                }
                let inner = ((e.tag.0 as u32) << 16) | e.tag.1 as u32;
                for v in charset.decode_vr(bytes, e.vr).split('\\') {
                    let v = v.trim_matches([' ', '\0']);
                    if !v.is_empty() {
                        out.push((format!("{tag:08X}.{inner:08X}"), v.to_owned()));
                    }
                }
            }
        }
    }
    out
}

fn is_text_vr(vr: dicom_core::VR) -> bool {
    use dicom_core::VR;
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::PN
            | VR::SH
            | VR::TM
            | VR::UC
            | VR::UI
    )
}

/// The instance's DICOM JSON, deflate-compressed for the index.
pub(crate) fn metadata_document(
    scanned: &Scanned,
    instance_path: &str,
) -> std::io::Result<Vec<u8>> {
    let mut json = String::with_capacity(8 * 1024);
    write_dataset(
        &mut json,
        &scanned.dataset,
        &JsonOptions {
            encoding: scanned.encoding(),
            instance_path,
            default_charset: scanned.default_charset,
            available_transfer_syntax: Some(scanned.transfer_syntax.uid),
        },
    );
    crate::index::metadata::deflate(&json)
}
