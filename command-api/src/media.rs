//! Uploaded audio on disk: streamed to a temporary file under `MEDIA_DIR/tmp/` while it is hashed
//! and counted, then moved to its content-addressed place (`MediaFile::relative_path`).
//!
//! A large upload is never held in memory. A temporary file is removed when its [`TempUpload`] is
//! dropped, whatever happened: a rejected form, a failed measurement, or a client that went away
//! mid-upload (axum then drops the handler's future, and with it the file).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// An upload being received or received whole, not yet moved into place.
pub struct TempUpload {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl TempUpload {
    pub async fn create(media_dir: &Path) -> std::io::Result<TempUpload> {
        let dir = media_dir.join("tmp");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(format!("{}.upload", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(TempUpload {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        match &mut self.file {
            Some(file) => file.write_all(chunk).await,
            None => Err(std::io::Error::other("the upload was already finished")),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and closes the file; returns its SHA-256 (lowercase hex).
    pub async fn finish(&mut self) -> std::io::Result<String> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.sync_all().await?;
        }
        Ok(hex::encode(self.hasher.clone().finalize()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `destination` (under the same `MEDIA_DIR`, so a rename). If the same
    /// content is already there, the upload is simply dropped.
    pub async fn persist(self, destination: &Path) -> std::io::Result<()> {
        if tokio::fs::try_exists(destination).await? {
            return Ok(());
        }
        if let Some(parent) = destination.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Two uploads of the same bytes may both get here; the second rename replaces the first
        // file with an identical one, atomically.
        tokio::fs::rename(&self.path, destination).await
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        // After a successful `persist` the file is gone and this fails harmlessly.
        let _ = std::fs::remove_file(&self.path);
    }
}
