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

use futures::{StreamExt, TryStreamExt};

use crate::config::FsckArgs;
use crate::index::Index;
use crate::ingest::{Ingest, IngestError};
use crate::store::{ObjectKey, Store};

/// `phim fsck`; `Ok(true)` when no orphan is left unindexed.
pub async fn run(args: FsckArgs) -> Result<bool, String> {
    let (index, store, ingest) = crate::server::open_backends(&args.storage, &args.ingest).await?;
    let known = indexed_keys(index.as_ref()).await?;
    let horizon = chrono::Utc::now() - chrono::Duration::seconds(args.min_age as i64);
    let (mut objects, mut recent) = (0u64, 0u64);
    let mut orphans = Vec::new();
    let mut listing = store.list_instance_objects();
    while let Some(item) = listing.try_next().await.map_err(|e| e.to_string())? {
        let crate::store::Listed {
            key,
            size,
            modified,
        } = item;
        objects += 1;
        if known.contains(key.as_str()) {
            continue;
        }
        if modified > horizon {
            recent += 1;
            continue;
        }
        println!("ORPHAN {} ({size} bytes, stored {modified})", key.as_str());
        orphans.push(key);
    }
    let mut left = orphans.len();
    if args.repair {
        for key in &orphans {
            match reindex(&store, &ingest, key).await {
                Ok(what) => {
                    println!("INDEXED {} as {what}", key.as_str());
                    left -= 1;
                }
                Err(why) => println!("KEPT {}: {why}", key.as_str()),
            }
        }
    }
    println!(
        "{objects} instance objects in the store, {} indexed; {} orphans{}{}",
        objects - orphans.len() as u64 - recent,
        orphans.len(),
        if args.repair {
            format!(" ({} indexed now, {left} kept)", orphans.len() - left)
        } else if orphans.is_empty() {
            String::new()
        } else {
            " (--repair indexes them)".to_owned()
        },
        if recent > 0 {
            format!("; {recent} newer than --min-age left alone")
        } else {
            String::new()
        }
    );
    Ok(left == 0)
}

/// Every object key the index points at.
async fn indexed_keys(index: &dyn Index) -> Result<HashSet<String>, String> {
    let mut keys = HashSet::new();
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
async fn reindex(store: &Store, ingest: &Ingest, key: &ObjectKey) -> Result<String, String> {
    let mut writer = ingest.spool_writer().await.map_err(|e| e.to_string())?;
    let mut body = store.get_stream(key).await.map_err(|e| e.to_string())?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        writer.write(&chunk).await.map_err(|e| e.to_string())?;
    }
    let spool = writer.finish().await.map_err(|e| e.to_string())?;
    match ingest.ingest(spool, None).await {
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
