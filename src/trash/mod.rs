//! Deletion and the trash: `DELETE` on a study, series or instance (and,
//! later, retention) moves its instances to the trash in one index
//! transaction (`index/trash.rs`); `phim trash restore` indexes them
//! again; the purge job deletes their objects once `--trash-retention` has
//! passed. The objects never move: a trashed instance is one whose index
//! rows are gone and whose object key is in the trash.
//!
//! Deleting is not a DICOMweb service of PS3.18 (which defines no DELETE);
//! the routes are those other archives and `dicomweb-client` use.

pub(crate) mod routes;

use std::sync::Arc;
use std::time::Duration;

use crate::config::TrashCommand;
use crate::index::{now_ms, ClaimedJob, Index, IndexError, JobEnd, Scope, Trashed, TrashedStudy};
use crate::ingest::{Ingest, IngestError};
use crate::store::{ObjectKey, Store, StoreError};

/// Objects the purge job deletes per index round trip.
const PURGE_BATCH: i64 = 200;

/// Moves `scope` to the trash, to be purged `retention` from now; `None`
/// when it names nothing indexed.
pub(crate) async fn delete(
    index: &dyn Index,
    scope: &Scope,
    deleted_by: &str,
    retention: Duration,
) -> Result<Option<Trashed>, IndexError> {
    let now = now_ms();
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let trashed = index
        .trash(scope, deleted_by, now, now.saturating_add(keep))
        .await?;
    if let Some(t) = &trashed {
        tracing::info!(
            study = %scope.study,
            series = scope.series.as_ref().map(|s| s.as_str()),
            instance = scope.instance.as_ref().map(|s| s.as_str()),
            instances = t.instances,
            study_removed = t.study_removed,
            retention_s = retention.as_secs(),
            "moved to the trash"
        );
    }
    Ok(trashed)
}

/// What restoring a study did.
#[derive(Debug, Default)]
pub struct Restored {
    pub restored: usize,
    /// Instances left in the trash, with why (e.g. a newer version of the
    /// SOP Instance UID is stored).
    pub kept: Vec<(String, String)>,
}

/// Indexes the trashed instances of `study` again, each through the ingest
/// pipeline from its stored object (which takes it out of the trash).
pub async fn restore(
    index: &dyn Index,
    ingest: &Ingest,
    study: &str,
) -> Result<Restored, IndexError> {
    let mut done = Restored::default();
    for object in index.trashed_objects(study).await? {
        let key = match ObjectKey::from_stored(&object.object_key) {
            Ok(k) => k,
            Err(e) => {
                done.kept
                    .push((object.sop_uid, format!("bad object key: {e}")));
                continue;
            }
        };
        match ingest.ingest_stored(&key).await {
            Ok(_) => done.restored += 1,
            Err(f) if matches!(f.error, IngestError::Duplicate) => done.kept.push((
                object.sop_uid,
                "the SOP Instance UID is stored again with other content".into(),
            )),
            Err(f) => done.kept.push((object.sop_uid, f.error.to_string())),
        }
    }
    tracing::info!(
        study,
        restored = done.restored,
        kept = done.kept.len(),
        "restored from the trash"
    );
    Ok(done)
}

/// Deletes the objects of trashed instances due now: marks them purging,
/// deletes the objects, then their rows, and a study's thumbnails once
/// nothing of it is left. How many were purged.
pub(crate) async fn purge_due(index: &dyn Index, store: &Store) -> Result<usize, String> {
    let mut purged = 0;
    loop {
        let batch = index
            .claim_purge(now_ms(), None, PURGE_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(purged);
        }
        let mut pks = Vec::with_capacity(batch.len());
        let mut studies: Vec<&str> = Vec::new();
        for object in &batch {
            let gone = match ObjectKey::from_stored(&object.object_key) {
                Ok(key) => match store.delete(&key).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => true,
                    Err(e) => {
                        tracing::warn!(key = object.object_key, error = %e, "purge: object not deleted");
                        false
                    }
                },
                // Not a key this server could have written: nothing to delete.
                Err(_) => true,
            };
            if gone {
                pks.push(object.pk);
                if !studies.contains(&object.study_uid.as_str()) {
                    studies.push(&object.study_uid);
                }
            }
        }
        index.purged(&pks).await.map_err(|e| e.to_string())?;
        purged += pks.len();
        for s in studies {
            if !index.study_known(s).await.map_err(|e| e.to_string())? {
                if let Err(e) = store.delete_thumbnails(s).await {
                    tracing::warn!(study = s, error = %e, "purge: thumbnails not deleted");
                }
            }
        }
        if pks.len() < batch.len() {
            return Err(format!(
                "{} objects could not be deleted; they stay in the trash",
                batch.len() - pks.len()
            ));
        }
    }
}

/// The periodic `purge` job (`--trash-purge-interval`), run once across
/// all servers; a deletion with `--trash-retention 0` queues it at once.
pub(crate) struct Purge {
    pub(crate) index: Arc<dyn Index>,
    pub(crate) store: Store,
    pub(crate) every: Duration,
}

#[async_trait::async_trait]
impl crate::jobs::Handler for Purge {
    async fn run(&self, _job: &ClaimedJob) -> JobEnd {
        let error = match purge_due(self.index.as_ref(), &self.store).await {
            Ok(0) => None,
            Ok(n) => {
                tracing::info!(objects = n, "purge: trashed objects deleted");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "purge: not finished");
                Some(e)
            }
        };
        JobEnd::again_in(self.every, error)
    }
}

/// Queues the purge job to run now (after a deletion with no retention).
pub(crate) async fn purge_soon(index: &dyn Index, wake: &tokio::sync::Notify) {
    let now = now_ms();
    let job = crate::index::NewJob {
        kind: crate::index::jobs::kind::PURGE,
        key: "",
        payload: "",
        run_at: now,
        max_attempts: crate::jobs::PERIODIC_MAX_ATTEMPTS,
    };
    match index.enqueue_job(&job, now).await {
        Ok(()) => wake.notify_one(),
        Err(e) => tracing::warn!(error = %e, "purge not queued; the next periodic run does it"),
    }
}

/// `phim trash …`; `Ok(false)` for exit status 1.
pub async fn run(cmd: TrashCommand) -> Result<bool, String> {
    match cmd {
        TrashCommand::List { storage, json } => {
            std::fs::create_dir_all(&storage.data_dir).map_err(|e| e.to_string())?;
            let url = storage.database_url();
            let index = crate::index::open(&url, true)
                .await
                .map_err(|e| format!("index {}: {e}", crate::redact::redact_url(&url)))?;
            list(index.as_ref(), json).await
        }
        TrashCommand::Restore {
            storage,
            ingest,
            study,
        } => {
            let (index, _store, ingest) = crate::backends::open_backends(&storage, &ingest).await?;
            restore_command(index.as_ref(), &ingest, &study).await
        }
    }
}

/// `phim trash list`.
async fn list(index: &dyn Index, json: bool) -> Result<bool, String> {
    let studies = index.trash_list().await.map_err(|e| e.to_string())?;
    if json {
        for s in &studies {
            println!("{}", serde_json::to_string(s).map_err(|e| e.to_string())?);
        }
        return Ok(true);
    }
    if studies.is_empty() {
        println!("the trash is empty");
        return Ok(true);
    }
    println!(
        "{:<40} {:<16} {:<24} {:<8} {:<10} {:>9} {:>12}  {:<20} {:<20} deleted by",
        "study",
        "patient id",
        "patient name",
        "date",
        "modality",
        "instances",
        "bytes",
        "deleted",
        "purged after"
    );
    for s in &studies {
        println!("{}", list_line(s));
    }
    Ok(true)
}

fn list_line(s: &TrashedStudy) -> String {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "{:<40} {:<16} {:<24} {:<8} {:<10} {:>9} {:>12}  {:<20} {:<20} {}",
        s.study_uid,
        or_dash(&s.patient_id),
        or_dash(&s.patient_name),
        or_dash(&s.study_date),
        or_dash(&s.modalities),
        s.instances,
        s.bytes,
        time(s.deleted_at_ms),
        time(s.purge_after_ms),
        s.deleted_by
    )
}

/// `phim trash restore STUDY`; `Ok(false)` when some instances stay in the trash.
async fn restore_command(index: &dyn Index, ingest: &Ingest, study: &str) -> Result<bool, String> {
    let done = restore(index, ingest, study)
        .await
        .map_err(|e| e.to_string())?;
    for (sop, why) in &done.kept {
        println!("KEPT {sop}: {why}");
    }
    if done.restored == 0 && done.kept.is_empty() {
        println!("nothing of study {study} is in the trash (or it is being purged)");
        return Ok(false);
    }
    println!(
        "study {study}: {} instances restored, {} left in the trash",
        done.restored,
        done.kept.len()
    );
    Ok(done.kept.is_empty())
}
