//! Writes delivery batches into the department's exchange folder: the data file first, then its
//! manifest, each atomically, so a department that takes files by manifest never sees half a file.
//! Read back for reconciliation from the manifests: the folder and its `taken/` subfolder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fsync::write_atomic;
use crate::{Envelope, Holdings, Outbound, Outcome};

/// Where a department that moves the files it has taken keeps them, inside the exchange folder,
/// so that the hub can still reconcile what it wrote.
pub const TAKEN: &str = "taken";

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

    async fn holdings(&self, ids: &[String]) -> Option<Result<Holdings, String>> {
        let (dir, wanted): (PathBuf, HashSet<String>) = (self.dir.clone(), ids.iter().cloned().collect());
        let read = tokio::task::spawn_blocking(move || read_back(&dir, &wanted)).await;
        Some(read.map_err(|e| format!("exchange folder: {e}")).and_then(|r| r))
    }
}

/// The events of `wanted` that intact files of the folder (or `taken/`) hold. A file is intact
/// when its data file is there with its manifest's count and SHA-256; the data file's name comes
/// from the manifest's own name, never from its content, so a manifest cannot point elsewhere.
fn read_back(dir: &Path, wanted: &HashSet<String>) -> Result<Holdings, String> {
    let mut out = Holdings::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    for folder in [dir.to_path_buf(), dir.join(TAKEN)] {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("exchange folder {}: {e}", folder.display())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("exchange folder {}: {e}", folder.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".manifest.json") else { continue };
            let manifest: Option<serde_json::Value> =
                std::fs::read(entry.path()).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let Some(manifest) = manifest else {
                out.damaged.push(name);
                continue;
            };
            let ids: Vec<&str> =
                manifest["event_ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            // Files about other events are not read: a folder keeps months of them.
            if !ids.iter().any(|id| wanted.contains(*id)) {
                continue;
            }
            let data_name = format!("{stem}.ndjson");
            let intact = std::fs::read(folder.join(&data_name)).is_ok_and(|data| {
                let lines = data.iter().filter(|b| **b == b'\n').count();
                manifest["sha256"].as_str() == Some(hex(&Sha256::digest(&data)).as_str())
                    && manifest["count"].as_u64() == Some(lines as u64)
            });
            if intact {
                out.held.extend(ids.into_iter().filter(|id| wanted.contains(*id)).map(str::to_owned));
            } else {
                out.damaged.push(data_name);
            }
        }
    }
    out.damaged.sort();
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
