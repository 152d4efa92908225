//! Writes delivery batches into the department's exchange folder: the data file first, then its
//! manifest, each atomically, so a department that takes files by manifest never sees half a file.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fsync::write_atomic;
use crate::{Envelope, Outbound, Outcome};

/// The outbound side of an exchange folder.
pub struct FileDropSink {
    dir: PathBuf,
    max_batch: usize,
}

impl FileDropSink {
    /// A sink writing into `dir`.
    pub fn new(dir: PathBuf, max_batch: usize) -> Self {
        Self { dir, max_batch }
    }
}

/// File names come from event ids; anything but `[A-Za-z0-9._-]` is replaced so an id can never
/// name a path outside the folder.
fn safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect()
}

#[async_trait]
impl Outbound for FileDropSink {
    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let Some(first) = batch.first() else { return Outcome::Delivered };
        // Named after the first event: a retried batch rewrites the same file instead of adding one.
        let stem = format!("events-{}", safe(first.id()));
        let mut data = Vec::new();
        for e in batch {
            data.extend_from_slice(e.json());
            data.push(b'\n');
        }
        let manifest = json!({
            "file": format!("{stem}.ndjson"),
            "count": batch.len(),
            "sha256": hex(&Sha256::digest(&data)),
            "event_ids": batch.iter().map(|e| e.id()).collect::<Vec<_>>(),
            "written_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let (dir, manifest) = (self.dir.clone(), manifest.to_string());
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_atomic(&dir.join(format!("{stem}.ndjson")), &data)?;
            write_atomic(&dir.join(format!("{stem}.manifest.json")), manifest.as_bytes())
        })
        .await;
        match written {
            Ok(Ok(())) => Outcome::Delivered,
            // A full or unmounted disk passes; the engine retries with backoff.
            Ok(Err(e)) => Outcome::Retry { reason: format!("exchange folder: {e}"), retry_after: None },
            Err(e) => Outcome::Retry { reason: format!("exchange folder: {e}"), retry_after: None },
        }
    }

    async fn health(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| format!("folder {}: {e}", dir.display()))?;
            super::inbound::probe_writable(&dir)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
