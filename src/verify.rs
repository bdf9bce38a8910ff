//! `phim verify`: every indexed instance's object read back from the store
//! and hashed again, against the SHA-256 the index recorded when it was
//! received. What it reports: objects whose bytes changed (bit rot, a
//! write behind Phim's back, a store that lies), objects that are gone,
//! and objects whose size differs. Nothing is changed; the exit status
//! says whether the archive is intact.

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::index::{Index, IndexError, StoredInstance};
use crate::store::{ObjectKey, Store, StoreError};

/// Instances read from the index per query.
const PAGE: i64 = 500;

/// What is wrong with one instance's object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The bytes hash to something else than the index recorded.
    Changed { found: String },
    /// The object has another size than the index recorded.
    Size { found: u64 },
    /// The store has no object under the instance's key.
    Missing,
    /// The store could not be read (not a verdict on the object).
    Unreadable(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed { found } => write!(f, "content changed (SHA-256 now {found})"),
            Problem::Size { found } => write!(f, "size changed (now {found} bytes)"),
            Problem::Missing => f.write_str("object missing"),
            Problem::Unreadable(e) => write!(f, "cannot read the object: {e}"),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Default)]
pub struct Report {
    pub checked: u64,
    pub bytes: u64,
    /// (instance, what is wrong), in index order.
    pub problems: Vec<(StoredInstance, Problem)>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// `phim verify`: opens the index and the store, verifies, prints the
/// instances that are not intact and a summary; `Ok(true)` when intact.
pub async fn run(args: crate::config::VerifyArgs) -> Result<bool, String> {
    let storage = &args.storage;
    let url = storage.database_url();
    let index = crate::index::open(&url, false)
        .await
        .map_err(|e| format!("{}: {e}", crate::redact::redact_url(&url)))?;
    let location = storage.store_location().map_err(|e| e.to_string())?;
    let store = Store::open(&location, &storage.s3_options()).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let report = verify(index.as_ref(), &store, args.concurrency, |r| {
        tracing::info!(
            checked = r.checked,
            bytes = r.bytes,
            problems = r.problems.len(),
            "verifying"
        );
    })
    .await
    .map_err(|e| e.to_string())?;
    for (inst, problem) in &report.problems {
        println!(
            "NOT INTACT study {} series {} instance {} (object {}): {problem}",
            inst.study_uid, inst.series_uid, inst.sop_uid, inst.object_key
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} instances checked ({} MB in {secs:.1} s): {}",
        report.checked,
        report.bytes / 1_000_000,
        if report.intact() {
            "all intact".to_owned()
        } else {
            format!("{} not intact", report.problems.len())
        }
    );
    Ok(report.intact())
}

/// Verifies every indexed instance, `concurrency` objects at a time;
/// `progress` is called after each page.
pub async fn verify(
    index: &dyn Index,
    store: &Store,
    concurrency: usize,
    mut progress: impl FnMut(&Report),
) -> Result<Report, IndexError> {
    let mut report = Report::default();
    let mut after = 0;
    loop {
        let page = index.instance_page(after, PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        let results: Vec<(StoredInstance, Result<u64, Problem>)> =
            futures::stream::iter(page.into_iter().map(|(_, inst)| async move {
                let r = check(store, &inst).await;
                (inst, r)
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        for (inst, r) in results {
            report.checked += 1;
            match r {
                Ok(n) => report.bytes += n,
                Err(p) => {
                    tracing::warn!(sop = %inst.sop_uid, key = %inst.object_key, problem = %p, "verify: instance not intact");
                    report.problems.push((inst, p));
                }
            }
        }
        progress(&report);
    }
    Ok(report)
}

/// Reads one object and hashes it; its size when intact.
async fn check(store: &Store, inst: &StoredInstance) -> Result<u64, Problem> {
    let key = ObjectKey::from_stored(&inst.object_key)
        .map_err(|e| Problem::Unreadable(format!("bad object key in the index: {e}")))?;
    let mut stream = match store.get_stream(&key).await {
        Ok(s) => s,
        Err(StoreError::NotFound(_)) => return Err(Problem::Missing),
        Err(e) => return Err(Problem::Unreadable(e.to_string())),
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Problem::Unreadable(e.to_string()))?
    {
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let found = hex::encode(hasher.finalize());
    if u64::try_from(inst.size).ok() != Some(size) {
        return Err(Problem::Size { found: size });
    }
    if found != inst.sha256 {
        return Err(Problem::Changed { found });
    }
    Ok(size)
}
