//! Spooling: an incoming instance is streamed to a temporary file while its
//! SHA-256 is computed, so no instance is ever held whole in memory and the
//! header can be scanned with a seekable reader afterwards.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

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
    pub fn owned(&self) -> bool {
        self.owned
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
pub struct SpoolWriter {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    max: u64,
    done: bool,
}

impl SpoolWriter {
    pub async fn create(dir: &Path, max: u64) -> Result<SpoolWriter, SpoolError> {
        let path = dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(SpoolWriter {
            file: BufWriter::with_capacity(256 * 1024, file),
            path,
            hasher: Sha256::new(),
            size: 0,
            max,
            done: false,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(SpoolError::TooLarge(self.max));
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await?;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Spool, SpoolError> {
        self.file.flush().await?;
        self.done = true;
        Ok(Spool {
            path: std::mem::take(&mut self.path),
            size: self.size,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            owned: true,
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
