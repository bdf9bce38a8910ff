//! The pixel pipeline: frames decoded (`codec`), rendered (`render`),
//! transcoded (`transcode`) and made into thumbnails (`thumbnail`), on a
//! rayon pool sized to the cores behind a bounded queue, never on the
//! async workers. `pixel` reads what the pixels mean from the stored
//! metadata; `source` fetches a frame's bytes by range reads.
//!
//! Every job runs under `catch_unwind`: a codec that panics on a bad file
//! fails that request, not the server.

pub mod codec;
pub mod frame;
pub mod j2k;
pub(crate) mod jpeg_lossless;
pub mod pixel;
pub mod render;
pub mod rle;
pub mod source;
pub mod thumbnail;
pub mod transcode;
pub(crate) mod turbo;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The data cannot be decoded or rendered by this server (a codec or
    /// a pixel layout it does not handle).
    #[error("{0}")]
    Unsupported(String),
    /// The stored pixel data contradicts its own header.
    #[error("{0}")]
    Corrupt(String),
    /// A request parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// The queue stayed full.
    #[error("the imaging queue is full")]
    Busy,
    /// A codec panicked (caught).
    #[error("a codec failed unexpectedly: {0}")]
    Panicked(String),
    /// The frame, instance or series asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The index or the object store failed (mapped by their own meaning).
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// What the index holds contradicts itself (logged, never the client's fault).
    #[error("{0}")]
    Internal(String),
}

/// The CPU pool for decoding, rendering and encoding.
#[derive(Clone, Debug)]
pub struct Imaging {
    pool: Arc<rayon::ThreadPool>,
    queue: Arc<Semaphore>,
    threads: usize,
}

/// How long a request waits for a place in the queue before 503.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

impl Imaging {
    /// `threads` 0 means one per core.
    pub fn new(threads: usize) -> Imaging {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("phim-imaging-{i}"))
            .build()
            .unwrap_or_else(|_| {
                // Building a pool only fails when threads cannot be spawned.
                #[allow(clippy::expect_used)]
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("a one-thread rayon pool")
            });
        Imaging {
            pool: Arc::new(pool),
            // Jobs queued beyond the running ones: enough to keep the
            // threads busy, few enough that memory stays bounded.
            queue: Arc::new(Semaphore::new(threads * 4)),
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on the pool (inside it, rayon's parallel iterators use the
    /// same threads), waiting for a place in the queue.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ImagingError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ImagingError> + Send + 'static,
    {
        use crate::telemetry as t;
        let depth = t::Held::new(::metrics::gauge!(t::IMAGING_QUEUE));
        let permit = tokio::time::timeout(QUEUE_WAIT, self.queue.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            ::metrics::counter!(t::IMAGING_BUSY).increment(1);
            return Err(ImagingError::Busy);
        };
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let started = std::time::Instant::now();
            let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(ImagingError::Panicked(msg))
            });
            ::metrics::histogram!(t::IMAGING_JOB).record(started.elapsed().as_secs_f64());
            drop(depth);
            drop(permit);
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| ImagingError::Panicked("the job was dropped".into()))?
    }

    /// Runs `f` on the pool without the async side (benchmarks, import).
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.pool.install(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors() {
        let im = Imaging::new(1);
        let r: Result<(), _> = im.run(|| panic!("codec bug")).await;
        assert!(matches!(r, Err(ImagingError::Panicked(m)) if m.contains("codec bug")));
        assert_eq!(im.run(|| Ok(7)).await.unwrap(), 7);
    }
}
