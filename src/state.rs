//! What every request handler shares, built once at start-up by
//! [`crate::server::serve`]: its own module, so that handlers depend on the
//! state and not on the server that routes to them.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::Audit;
use crate::auth::Auth;
use crate::emr::config::EmrConfig;
use crate::imaging::thumbnail::Thumbnails;
use crate::imaging::Imaging;
use crate::index::Index;
use crate::ingest::Ingest;
use crate::store::Store;

/// Everything a request handler needs, built once.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The metadata index (SQLite or PostgreSQL).
    pub index: Arc<dyn Index>,
    /// Object storage for instances.
    pub store: Store,
    /// The ingest pipeline (STOW-RS, import, C-STORE).
    pub ingest: Ingest,
    /// Base URL for RetrieveURL/BulkDataURI when set; else from Host.
    pub public_url: Option<String>,
    /// The bound address (fallback for URLs without a Host header).
    pub listen_addr: SocketAddr,
    /// Folder of the built web viewer served at `/`.
    pub viewer_dir: std::path::PathBuf,
    /// EMR links, change feed and webhooks.
    pub emr: Arc<EmrConfig>,
    /// Wakes the job runner: jobs were queued that are due now.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// The CPU pool for pixels (decode, render, transcode).
    pub imaging: Imaging,
    /// Who may do what ([`crate::auth`]); every route passes its layer.
    pub auth: Arc<Auth>,
    /// The audit trail's queue.
    pub audit: Audit,
    /// Limits on the shape of one request (parts, headers, frames).
    pub limits: crate::dicomweb::limits::RequestLimits,
}

impl AppState {
    pub fn thumbnails(&self) -> Thumbnails {
        Thumbnails {
            index: self.index.clone(),
            store: self.store.clone(),
            imaging: self.imaging.clone(),
        }
    }
}
