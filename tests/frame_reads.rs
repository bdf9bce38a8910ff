//! Frames are served by range reads (issue #4): asking for frame 7 of a
//! 2,000-frame object reads that frame's bytes from the store, not the
//! object. Checked through the HTTP router on a store wrapper that counts
//! the bytes every read returns.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use phim::dicom::write::{file_meta_prefix, ElementWriter};
use phim::imaging::Imaging;
use phim::ingest::{Ingest, IngestConfig, Spool};
use phim::server::router;
use phim::state::AppState;
use phim::store::Store;
use tower::ServiceExt;

/// Counts the bytes returned by reads.
#[derive(Debug)]
struct Counting {
    inner: InMemory,
    read: Arc<AtomicU64>,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let r = self.inner.get_opts(location, options).await?;
        self.read
            .fetch_add(r.range.end - r.range.start, Ordering::SeqCst);
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.read.fetch_add(total, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

const STUDY: &str = "1.2.826.0.1.3680043.8.498.77";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.77.1";
const SOP: &str = "1.2.826.0.1.3680043.8.498.77.1.1";
const FRAMES: u32 = 2000;
const ROWS: u16 = 64;
const COLS: u16 = 64;
const FRAME_LEN: u64 = ROWS as u64 * COLS as u64 * 2;

/// A 2,000-frame 64×64 16-bit object; frame n holds the value n everywhere.
fn multiframe() -> Vec<u8> {
    let mut ds = ElementWriter::default();
    ds.str(0x0008, 0x0016, b"UI", "1.2.840.10008.5.1.4.1.1.7")
        .str(0x0008, 0x0018, b"UI", SOP)
        .str(0x0008, 0x0060, b"CS", "OT")
        .str(0x0010, 0x0020, b"LO", "FRAMES-1")
        .str(0x0020, 0x000D, b"UI", STUDY)
        .str(0x0020, 0x000E, b"UI", SERIES)
        .us(0x0028, 0x0002, 1)
        .str(0x0028, 0x0004, b"CS", "MONOCHROME2")
        .str(0x0028, 0x0008, b"IS", &FRAMES.to_string())
        .us(0x0028, 0x0010, ROWS)
        .us(0x0028, 0x0011, COLS)
        .us(0x0028, 0x0100, 16)
        .us(0x0028, 0x0101, 16)
        .us(0x0028, 0x0102, 15)
        .us(0x0028, 0x0103, 0);
    let mut pixels = Vec::with_capacity((FRAME_LEN * FRAMES as u64) as usize);
    for f in 0..FRAMES {
        for _ in 0..ROWS as usize * COLS as usize {
            pixels.extend_from_slice(&(f as u16).to_le_bytes());
        }
    }
    ds.raw(0x7FE0, 0x0010, b"OW", &pixels);
    let mut file = file_meta_prefix("1.2.840.10008.5.1.4.1.1.7", SOP, "1.2.840.10008.1.2.1");
    file.extend_from_slice(&ds.into_bytes());
    file
}

#[tokio::test]
async fn a_frame_is_read_by_its_byte_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let read = Arc::new(AtomicU64::new(0));
    let store = Store::wrap(
        Arc::new(Counting {
            inner: InMemory::new(),
            read: read.clone(),
        }),
        "counting memory store",
    );
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let index = phim::index::open(&url, true).await.expect("index");
    let ingest = Ingest::new(
        store.clone(),
        index.clone(),
        IngestConfig {
            spool_dir: dir.path().join("spool"),
            max_instance_size: 1 << 30,
            on_duplicate: phim::ingest::DuplicatePolicy::Reject,
            concurrency: 1,
            limits: Default::default(),
            trash_retention: std::time::Duration::ZERO,
        },
    )
    .expect("ingest");
    let file = dir.path().join("mf.dcm");
    let bytes = multiframe();
    let object_size = bytes.len() as u64;
    std::fs::write(&file, bytes).expect("write");
    let spool = Spool::from_existing(&file).await.expect("spool");
    ingest.ingest(spool, None).await.expect("stored");

    let index_for_auth = index.clone();
    let state = AppState {
        index,
        store,
        ingest,
        public_url: None,
        listen_addr: "127.0.0.1:8080".parse().expect("addr"),
        viewer_dir: dir.path().join("no-viewer"),
        emr: Default::default(),
        jobs_wake: Default::default(),
        imaging: Imaging::new(1),
        auth: std::sync::Arc::new(phim::auth::Auth::new(
            Default::default(),
            index_for_auth,
            None,
        )),
        audit: phim::audit::Audit::disabled(),
        limits: Default::default(),
    };
    let app = router(state);
    let base = format!("/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let get = |path: String, accept: &'static str| {
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(
                    Request::get(path)
                        .header("accept", accept)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, body)
        }
    };

    // Frame 7 as stored: exactly its bytes are read.
    read.store(0, Ordering::SeqCst);
    let (status, body) = get(
        format!("{base}/frames/7"),
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
    )
    .await;
    assert_eq!(status, 200);
    let n = read.load(Ordering::SeqCst);
    assert_eq!(
        n, FRAME_LEN,
        "frame 7 read {n} bytes of a {object_size}-byte object"
    );
    let six = 6u16.to_le_bytes();
    assert!(body.windows(2).filter(|w| *w == six).count() >= (ROWS as usize * COLS as usize));

    // Rendered frame 1,000: its bytes, plus nothing else from the object
    // (the pixel description comes from the index).
    read.store(0, Ordering::SeqCst);
    let (status, body) = get(format!("{base}/frames/1000/rendered"), "image/png").await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"\x89PNG"));
    assert_eq!(read.load(Ordering::SeqCst), FRAME_LEN);

    // Transcoded frame 2,000 (RLE): decoded from its own range only.
    read.store(0, Ordering::SeqCst);
    let (status, _) = get(
        format!("{base}/frames/2000"),
        "multipart/related; type=\"image/x-dicom-rle\"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read.load(Ordering::SeqCst), FRAME_LEN);
}
