//! `phim fsck`: objects the store holds that the index does not know.
//!
//! Ingest stores first and indexes second, so a crash (or a lost index
//! transaction) between the two leaves an object no query finds; it is
//! still the only copy of an instance a modality was never told was stored
//! — or was told was not. fsck lists every instance object, finds those no
//! index row points at, and with `--repair` sends each through the ingest
//! pipeline again, which indexes it under the same key. An orphan newer
//! than `--min-age` is left alone: it may be an ingest in flight. What
//! cannot be indexed (not an instance, or a SOP Instance UID indexed with
//! other content) is reported and kept: fsck never deletes what may be the
//! last copy of something. Index rows whose object is gone are
//! `phim verify`'s to report.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;

use crate::config::FsckArgs;
use crate::index::{ClaimedJob, Index, JobEnd};
use crate::ingest::{Ingest, IngestError};
use crate::jobs::Handler;
use crate::store::{ObjectKey, Store};

/// What a check found, one object at a time.
enum Finding<'a> {
    Orphan {
        key: &'a ObjectKey,
        size: u64,
        modified: chrono::DateTime<chrono::Utc>,
    },
    Indexed {
        key: &'a ObjectKey,
        what: &'a str,
    },
    Kept {
        key: &'a ObjectKey,
        why: &'a str,
    },
}

/// What a check counted.
#[derive(Debug, Default)]
struct Summary {
    objects: u64,
    /// Orphans newer than the minimum age, left alone.
    recent: u64,
    orphans: usize,
    /// Orphans indexed again (with `repair`).
    indexed: usize,
}

/// Lists every instance object, reports those no index row points at (and
/// older than `min_age`) and, with `repair`, indexes them again.
async fn check(
    index: &dyn Index,
    store: &Store,
    ingest: &Ingest,
    min_age: Duration,
    repair: bool,
    report: &mut (dyn FnMut(Finding<'_>) + Send),
) -> Result<Summary, String> {
    let known = indexed_keys(index).await?;
    let min_age = chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let horizon = chrono::Utc::now()
        .checked_sub_signed(min_age)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut summary = Summary::default();
    let mut orphans = Vec::new();
    let mut listing = store.list_instance_objects();
    while let Some(item) = listing.try_next().await.map_err(|e| e.to_string())? {
        let crate::store::Listed {
            key,
            size,
            modified,
        } = item;
        summary.objects += 1;
        if known.contains(key.as_str()) {
            continue;
        }
        if modified > horizon {
            summary.recent += 1;
            continue;
        }
        report(Finding::Orphan {
            key: &key,
            size,
            modified,
        });
        orphans.push(key);
    }
    summary.orphans = orphans.len();
    if repair {
        for key in &orphans {
            match reindex(ingest, key).await {
                Ok(what) => {
                    report(Finding::Indexed { key, what: &what });
                    summary.indexed += 1;
                }
                Err(why) => report(Finding::Kept { key, why: &why }),
            }
        }
    }
    Ok(summary)
}

/// `phim fsck`; `Ok(true)` when no orphan is left unindexed.
pub async fn run(args: FsckArgs) -> Result<bool, String> {
    let (index, store, ingest) =
        crate::backends::open_backends(&args.storage, &args.ingest).await?;
    let mut print = |f: Finding<'_>| match f {
        Finding::Orphan {
            key,
            size,
            modified,
        } => println!("ORPHAN {} ({size} bytes, stored {modified})", key.as_str()),
        Finding::Indexed { key, what } => println!("INDEXED {} as {what}", key.as_str()),
        Finding::Kept { key, why } => println!("KEPT {}: {why}", key.as_str()),
    };
    let s = check(
        index.as_ref(),
        &store,
        &ingest,
        Duration::from_secs(args.min_age),
        args.repair,
        &mut print,
    )
    .await?;
    let left = s.orphans - s.indexed;
    println!(
        "{} instance objects in the store, {} indexed; {} orphans{}{}",
        s.objects,
        s.objects - s.orphans as u64 - s.recent,
        s.orphans,
        if args.repair {
            format!(" ({} indexed now, {left} kept)", s.indexed)
        } else if s.orphans == 0 {
            String::new()
        } else {
            " (--repair indexes them)".to_owned()
        },
        if s.recent > 0 {
            format!("; {} newer than --min-age left alone", s.recent)
        } else {
            String::new()
        }
    );
    Ok(left == 0)
}

/// The periodic `fsck` job of `serve` (`--fsck-interval`): the check with
/// repair, its findings logged.
pub(crate) struct Background {
    pub(crate) index: Arc<dyn Index>,
    pub(crate) store: Store,
    pub(crate) ingest: Ingest,
    pub(crate) min_age: Duration,
    pub(crate) every: Duration,
}

#[async_trait::async_trait]
impl Handler for Background {
    async fn run(&self, _job: &ClaimedJob) -> JobEnd {
        let mut log = |f: Finding<'_>| match f {
            Finding::Orphan { key, size, .. } => {
                tracing::warn!(key = key.as_str(), size, "fsck: object not in the index")
            }
            Finding::Indexed { key, what } => {
                tracing::warn!(key = key.as_str(), what, "fsck: object indexed again")
            }
            Finding::Kept { key, why } => {
                tracing::warn!(key = key.as_str(), why, "fsck: object kept, not indexed")
            }
        };
        let result = check(
            self.index.as_ref(),
            &self.store,
            &self.ingest,
            self.min_age,
            true,
            &mut log,
        )
        .await;
        let error = match result {
            Ok(s) => {
                tracing::info!(
                    objects = s.objects,
                    orphans = s.orphans,
                    indexed = s.indexed,
                    recent = s.recent,
                    "fsck: background check done"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "fsck: background check failed");
                Some(e)
            }
        };
        JobEnd::again_in(self.every, error)
    }
}

/// Every object key the index points at, and those of the trash (deleted
/// instances are not orphans).
async fn indexed_keys(index: &dyn Index) -> Result<HashSet<String>, String> {
    let mut keys: HashSet<String> = index
        .trashed_keys()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let mut after = 0;
    loop {
        let page = index
            .instance_page(after, 1000)
            .await
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else {
            return Ok(keys);
        };
        after = *last;
        keys.extend(page.into_iter().map(|(_, i)| i.object_key));
    }
}

/// Sends an orphan through the ingest pipeline again; what it became.
async fn reindex(ingest: &Ingest, key: &ObjectKey) -> Result<String, String> {
    match ingest.ingest_stored(key).await {
        Ok(s) => Ok(format!(
            "study {} series {} instance {}",
            s.study_uid, s.series_uid, s.sop_uid
        )),
        Err(f) if matches!(f.error, IngestError::Duplicate) => Err(format!(
            "instance {} is indexed with other content (this object is an older or other version)",
            f.sop_instance_uid.as_deref().unwrap_or("?")
        )),
        Err(f) => Err(f.error.to_string()),
    }
}
