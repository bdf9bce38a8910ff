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
    pub fn owned(&self) -> bool {
        self.owned
    }
    pub fn prefixed(&self) -> bool {
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
/// Some writers (pydicom's `dcmwrite` without `enforce_file_format`, and
/// clients built on it) send the file meta group without the 128-byte
/// preamble and "DICM" that PS3.10 §7.1 requires. The first bytes are held
/// back until that can be told, and the missing prefix is written in front:
/// what is stored and served is then a valid Part 10 file whose data is the
/// received bytes, unchanged.
pub struct SpoolWriter {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    max: u64,
    done: bool,
    head: Option<Vec<u8>>,
    prefixed: bool,
}

const PREFIX_LEN: usize = 132;

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
            head: Some(Vec::with_capacity(PREFIX_LEN)),
            prefixed: false,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        if self.size + chunk.len() as u64 > self.max {
            return Err(SpoolError::TooLarge(self.max));
        }
        if let Some(head) = &mut self.head {
            head.extend_from_slice(chunk);
            if head.len() >= PREFIX_LEN {
                self.flush_head().await?;
            }
            return Ok(());
        }
        self.put(chunk).await
    }

    async fn put(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.size += bytes.len() as u64;
        self.hasher.update(bytes);
        self.file.write_all(bytes).await?;
        Ok(())
    }

    async fn flush_head(&mut self) -> Result<(), SpoolError> {
        let Some(head) = self.head.take() else {
            return Ok(());
        };
        let has_preamble = head.get(128..132) == Some(b"DICM");
        let prefix: &[u8] = if has_preamble {
            &[]
        } else if head.starts_with(b"DICM") {
            &[0u8; 128]
        } else if head.starts_with(&[0x02, 0x00]) {
            // A file meta group element (0002,xxxx), little endian.
            const PREAMBLE_AND_MAGIC: [u8; 132] = {
                let mut p = [0u8; 132];
                p[128] = b'D';
                p[129] = b'I';
                p[130] = b'C';
                p[131] = b'M';
                p
            };
            &PREAMBLE_AND_MAGIC
        } else {
            &[]
        };
        if !prefix.is_empty() {
            self.prefixed = true;
            self.put(prefix).await?;
        }
        self.put(&head).await
    }

    pub async fn finish(mut self) -> Result<Spool, SpoolError> {
        self.flush_head().await?;
        self.file.flush().await?;
        self.done = true;
        Ok(Spool {
            path: std::mem::take(&mut self.path),
            size: self.size,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
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
