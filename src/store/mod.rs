//! Object storage for instances: one type over `Arc<dyn ObjectStore>`.
//!
//! Back ends: the local filesystem (the embedded default), any S3-compatible
//! store (MinIO, Ceph, Garage, AWS S3) and memory (tests). Only [`keys`]
//! builds object paths, from validated UIDs.
//!
//! Durability: an instance is acknowledged only after `put_file` returns.
//! On the filesystem the spooled file is fsynced, renamed into place and its
//! directory fsynced; on S3 a completed PUT is durable by the service's
//! contract. Nothing here relies on conditional PUT (Garage ignores
//! `If-None-Match`): object keys carry the content hash, so two writers of
//! one key write the same bytes, and the index decides what is stored.

mod http;
pub mod keys;

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

pub use keys::ObjectKey;

/// Objects up to this size are sent in one PUT; larger ones in parts.
const SINGLE_PUT_MAX: u64 = 8 << 20;
const PART_SIZE: usize = 8 << 20;

/// Back-end-neutral storage errors; back-end detail stays in the message
/// for the log, never for the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// A byte range the object does not have (the caller's range, or an
    /// index that disagrees with the object): not an outage.
    #[error("invalid byte range: {0}")]
    InvalidRange(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        let (kind, e) = match e {
            // A missing object is an answer (a cache miss, a 404), not a
            // store failure: not counted.
            object_store::Error::NotFound { path, .. } => return StoreError::NotFound(path),
            // object_store does not export its range error type
            // (`InvalidGetRange`); its back ends all say "range".
            other if other.to_string().to_ascii_lowercase().contains("range") => {
                ("invalid_range", StoreError::InvalidRange(other.to_string()))
            }
            other => ("unavailable", StoreError::Unavailable(other.to_string())),
        };
        ::metrics::counter!(crate::telemetry::STORE_ERRORS, "kind" => kind).increment(1);
        e
    }
}

/// An object as the store lists it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) key: ObjectKey,
    pub(crate) size: u64,
    pub(crate) modified: chrono::DateTime<chrono::Utc>,
}

/// Where objects live, as configured (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory on the local filesystem.
    File(PathBuf),
    /// An S3 bucket and an optional key prefix.
    S3 { bucket: String, prefix: String },
    /// Process memory (tests only).
    Memory,
}

impl StoreLocation {
    /// Parses `file:///path`, `file://relative`, `s3://bucket[/prefix]`,
    /// `memory://`.
    pub fn parse(s: &str) -> Result<StoreLocation, StoreError> {
        if let Some(rest) = s.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(StoreError::Config("file:// needs a path".into()));
            }
            return Ok(StoreLocation::File(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Config("s3:// needs a bucket name".into()));
            }
            return Ok(StoreLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if s == "memory://" || s == "memory" {
            return Ok(StoreLocation::Memory);
        }
        Err(StoreError::Config(format!(
            "unsupported store '{s}': use file://PATH, s3://BUCKET[/PREFIX] or memory://"
        )))
    }
}

/// S3 connection settings beyond the location (`--s3-*`, `AWS_*`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    /// How long a failing request is retried (with backoff) before it
    /// fails; `None`: object_store's default (3 minutes).
    pub retry_timeout: Option<std::time::Duration>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Set for the filesystem back end: files are moved into place.
    local_root: Option<PathBuf>,
    description: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Store {
    pub fn open(location: &StoreLocation, s3: &S3Options) -> Result<Store, StoreError> {
        match location {
            StoreLocation::File(dir) => {
                std::fs::create_dir_all(dir)?;
                let root = dir.canonicalize()?;
                let fs = LocalFileSystem::new_with_prefix(&root)?.with_fsync(true);
                Ok(Store {
                    inner: Arc::new(fs),
                    local_root: Some(root.clone()),
                    description: format!("file://{}", root.display()),
                })
            }
            StoreLocation::S3 { bucket, prefix } => {
                // Credentials come from the usual AWS_* variables.
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &s3.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &s3.region {
                    b = b.with_region(region);
                }
                // (One set of client options: allow_http is one of them.)
                let mut client = object_store::ClientOptions::new().with_allow_http(s3.allow_http);
                // A store that does not answer fails requests within a bound
                // (a STOW answers A700, /readyz goes unready) instead of
                // holding them for object_store's 3 minutes of retries.
                if let Some(t) = s3.retry_timeout {
                    b = b.with_retry(object_store::RetryConfig {
                        retry_timeout: t,
                        ..Default::default()
                    });
                    client = client.with_connect_timeout(std::time::Duration::from_secs(5));
                }
                b = b
                    .with_client_options(client)
                    .with_http_connector(http::CountingConnector::default());
                let s3store = b.build().map_err(|e| StoreError::Config(e.to_string()))?;
                let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3store)
                } else {
                    Arc::new(PrefixStore::new(s3store, prefix.as_str()))
                };
                Ok(Store {
                    inner,
                    local_root: None,
                    description: format!(
                        "s3://{bucket}/{prefix} at {}",
                        s3.endpoint.as_deref().unwrap_or("the AWS default endpoint")
                    ),
                })
            }
            StoreLocation::Memory => Ok(Store {
                inner: Arc::new(InMemory::new()),
                local_root: None,
                description: "memory://".into(),
            }),
        }
    }

    /// A store over any `ObjectStore` (tests wrap one to observe reads).
    pub fn wrap(inner: Arc<dyn ObjectStore>, description: &str) -> Store {
        Store {
            inner,
            local_root: None,
            description: description.to_owned(),
        }
    }

    /// Whether spooled files can be renamed into the store (same machine).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Stores the file at `path` (`size` bytes) under `key`, durably.
    /// With `may_move`, a local back end takes the file by rename.
    pub async fn put_file(
        &self,
        key: &ObjectKey,
        path: &FsPath,
        size: u64,
        may_move: bool,
    ) -> Result<(), StoreError> {
        if let (Some(root), true) = (&self.local_root, may_move) {
            let target = root.join(key.as_path().as_ref());
            let src = path.to_owned();
            let moved = tokio::task::spawn_blocking(move || move_durably(&src, &target))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            match moved {
                Ok(()) => return Ok(()),
                // Another filesystem: fall back to copying through the store.
                Err(e) if e.raw_os_error() == Some(18) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if size <= SINGLE_PUT_MAX {
            let bytes = tokio::fs::read(path).await?;
            self.inner
                .put(key.as_path(), PutPayload::from(Bytes::from(bytes)))
                .await?;
            return Ok(());
        }
        let upload = self.inner.put_multipart(key.as_path()).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(2).await {
                return Err(e.into());
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(())
    }

    /// Stores small bytes (derived documents such as thumbnails).
    pub(crate) async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StoreError> {
        self.inner
            .put(key.as_path(), PutPayload::from(bytes))
            .await?;
        Ok(())
    }

    /// The whole object as a stream of chunks.
    pub async fn get_stream(
        &self,
        key: &ObjectKey,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        if let Some(root) = &self.local_root {
            // object_store's local reader hops to the blocking pool every
            // 8 KiB; 256 KiB reads keep a 512 KB instance to two hops.
            let path = root.join(key.as_path().as_ref());
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NotFound(key.as_str().to_owned())
                } else {
                    StoreError::Io(e)
                }
            })?;
            return Ok(
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                    .map(|r| r.map_err(StoreError::Io))
                    .boxed(),
            );
        }
        let got = self.inner.get(key.as_path()).await?;
        Ok(got
            .into_stream()
            .map(|r| r.map_err(StoreError::from))
            .boxed())
    }

    /// The whole object in memory (small objects only).
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        Ok(self.inner.get(key.as_path()).await?.bytes().await?)
    }

    /// Bytes `range` of the object; an empty range is empty (back ends
    /// refuse to read one).
    pub async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start > range.end {
            return Err(StoreError::InvalidRange(format!(
                "{}..{} of {}",
                range.start,
                range.end,
                key.as_str()
            )));
        }
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        Ok(self.inner.get_range(key.as_path(), range).await?)
    }

    pub async fn size(&self, key: &ObjectKey) -> Result<u64, StoreError> {
        Ok(self.inner.head(key.as_path()).await?.size)
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        match self.inner.delete(key.as_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every thumbnail of a study (once the study is purged).
    pub(crate) async fn delete_thumbnails(&self, study: &str) -> Result<(), StoreError> {
        let prefix = keys::ObjectKey::thumbnails_of(study);
        let listed: Vec<_> = self.inner.list(Some(&prefix)).collect().await;
        for meta in listed {
            match self.inner.delete(&meta?.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Every instance object in the store (under `studies/`); thumbnails
    /// are not listed.
    pub(crate) fn list_instance_objects(&self) -> BoxStream<'static, Result<Listed, StoreError>> {
        let prefix = object_store::path::Path::from(keys::INSTANCE_PREFIX);
        self.inner
            .list(Some(&prefix))
            .map(|r| {
                r.map(|m| Listed {
                    key: ObjectKey::from_path(m.location),
                    size: m.size,
                    modified: m.last_modified,
                })
                .map_err(StoreError::from)
            })
            .boxed()
    }

    /// Checks that the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self
            .inner
            .head(keys::ObjectKey::readiness_probe().as_path())
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

/// fsync the file, rename it to `target`, fsync the target directory, and
/// the parents of directories this call created (a new study's folder is
/// itself an entry that must survive a crash).
fn move_durably(src: &FsPath, target: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(src)?.sync_all()?;
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("object key without a parent directory"))?;
    let mut created = Vec::new();
    let mut d = dir;
    while !d.exists() {
        created.push(d.to_owned());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::rename(src, target)?;
    std::fs::File::open(dir)?.sync_all()?;
    for c in created {
        if let Some(parent) = c.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}
