//! Spooling: an incoming instance is streamed to a temporary file while its
//! SHA-256 is computed, so no instance is ever held whole in memory and the
//! header can be scanned with a seekable reader afterwards.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("instance larger than the configured maximum of {0} bytes")]
    TooLarge(u64),
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A complete instance on local disk.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    size: u64,
    sha256: String,
    /// Our temporary file (removed on drop, may be moved into the store);
    /// otherwise a user's file (import) that is only read.
    owned: bool,
    /// The received bytes lacked the Part 10 preamble and/or "DICM" prefix,
    /// which was added in front of them.
    prefixed: bool,
}

impl Spool {
    /// Hashes an existing file without taking ownership of it.
    pub async fn from_existing(path: &Path) -> std::io::Result<Spool> {
        let mut f = tokio::fs::File::open(path).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Spool {
            path: path.to_owned(),
            size,
            sha256: hex::encode(hasher.finalize()),
            owned: false,
            prefixed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub(crate) fn owned(&self) -> bool {
        self.owned
    }
    pub(crate) fn prefixed(&self) -> bool {
        self.prefixed
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.owned {
            // Gone already when the store took it by rename.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes chunks to a new spool file.
///
/// Chunks are gathered in memory up to [`FLUSH_AT`] and then hashed and
/// written in one call on the blocking pool: an instance of a few hundred
/// KB costs one thread hop, and SHA-256 never runs on the async workers.
///
/// Some writers (pydicom's `dcmwrite` without `enforce_file_format`, and
/// clients built on it) send the file meta group without the 128-byte
/// preamble and "DICM" that PS3.10 §7.1 requires. The first bytes are held
/// back until that can be told, and the missing prefix is written in front:
/// what is stored and served is then a valid Part 10 file whose data is the
/// received bytes, unchanged.
pub struct SpoolWriter {
    /// File and hasher; `None` only while a flush is running.
    sink: Option<(std::fs::File, Sha256)>,
    pending: Vec<u8>,
    path: PathBuf,
    /// Bytes accepted so far (prefix included).
    size: u64,
    max: u64,
    done: bool,
    /// Still deciding whether a prefix is needed.
    head_open: bool,
    prefixed: bool,
}

const PREFIX_LEN: usize = 132;
/// Pending bytes that trigger a write.
const FLUSH_AT: usize = 1 << 20;

impl SpoolWriter {
    pub async fn create(dir: &Path, max: u64) -> Result<SpoolWriter, SpoolError> {
        let path = dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await?.into_std().await;
        Ok(SpoolWriter {
            sink: Some((file, Sha256::new())),
            pending: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            path,
            size: 0,
            max,
            done: false,
            head_open: true,
            prefixed: false,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        if self.size + chunk.len() as u64 > self.max {
            return Err(SpoolError::TooLarge(self.max));
        }
        self.size += chunk.len() as u64;
        self.pending.extend_from_slice(chunk);
        if self.head_open && self.pending.len() >= PREFIX_LEN {
            self.close_head();
        }
        if !self.head_open && self.pending.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Decides on the Part 10 prefix once the first bytes are known.
    fn close_head(&mut self) {
        self.head_open = false;
        let head = &self.pending;
        if head.get(128..132) == Some(b"DICM") {
            return;
        }
        let prefix: Vec<u8> = if head.starts_with(b"DICM") {
            vec![0u8; 128]
        } else if head.starts_with(&[0x02, 0x00]) {
            // A file meta group element (0002,xxxx), little endian.
            let mut p = vec![0u8; 128];
            p.extend_from_slice(b"DICM");
            p
        } else {
            return; // not DICOM: the scan will say so
        };
        self.prefixed = true;
        self.size += prefix.len() as u64;
        self.pending.splice(0..0, prefix);
    }

    /// Hashes and writes the pending bytes on the blocking pool.
    async fn flush(&mut self) -> Result<(), SpoolError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (mut file, mut hasher) = self
            .sink
            .take()
            .ok_or_else(|| SpoolError::Io(std::io::Error::other("spool writer poisoned")))?;
        let mut buf = std::mem::take(&mut self.pending);
        let (file, hasher, buf) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            hasher.update(&buf);
            file.write_all(&buf)?;
            buf.clear();
            Ok::<_, std::io::Error>((file, hasher, buf))
        })
        .await
        .map_err(|e| SpoolError::Io(std::io::Error::other(e)))??;
        self.sink = Some((file, hasher));
        self.pending = buf;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Spool, SpoolError> {
        if self.head_open {
            self.close_head();
        }
        self.flush().await?;
        let (_, hasher) = self
            .sink
            .take()
            .ok_or_else(|| SpoolError::Io(std::io::Error::other("spool writer poisoned")))?;
        self.done = true;
        Ok(Spool {
            path: std::mem::take(&mut self.path),
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            owned: true,
            prefixed: self.prefixed,
        })
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
