//! The back ends every command opens from its configuration: the index,
//! the object store and the ingest pipeline over both.

use std::sync::Arc;

use crate::dicom::scan::ScanLimits;
use crate::index::{self, Index};
use crate::ingest::{Ingest, IngestConfig};
use crate::redact::redact_url;
use crate::store::Store;

/// Opens the index and store and builds the ingest pipeline (shared by
/// `serve`, `import` and `fsck`).
pub(crate) async fn open_backends(
    storage: &crate::config::StorageArgs,
    ingest: &crate::config::IngestArgs,
) -> Result<(Arc<dyn Index>, Store, Ingest), String> {
    std::fs::create_dir_all(&storage.data_dir).map_err(|e| {
        format!(
            "cannot create data folder {}: {e}",
            storage.data_dir.display()
        )
    })?;
    let db_url = storage.database_url();
    let index = index::open(&db_url, true)
        .await
        .map_err(|e| format!("index {}: {e}", redact_url(&db_url)))?;
    let location = storage.store_location().map_err(|e| e.to_string())?;
    let store = Store::open(&location, &storage.s3_options()).map_err(|e| e.to_string())?;
    let pipeline = Ingest::new(
        store.clone(),
        index.clone(),
        IngestConfig {
            spool_dir: storage.spool_dir(),
            max_instance_size: ingest.max_instance_size,
            on_duplicate: ingest.on_duplicate,
            concurrency: ingest.ingest_concurrency,
            trash_retention: ingest.trash_retention,
            limits: ScanLimits {
                default_charset: ingest.default_charset()?,
                ..ScanLimits::default()
            },
        },
    )
    .map_err(|e| format!("cannot create spool folder: {e}"))?;
    tracing::info!(
        data_dir = %storage.data_dir.display(),
        index = %redact_url(&db_url),
        store = %store.description(),
        on_duplicate = ?ingest.on_duplicate,
        max_instance_size = ingest.max_instance_size,
        ingest_concurrency = ingest.ingest_concurrency,
        "back ends ready"
    );
    Ok((index, store, pipeline))
}
