//! `backup`: an online copy of the SQLite database, verified, with the oldest beyond `keep` removed.

use std::path::PathBuf;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::CheckKind;

pub(super) struct Backup {
    pub(super) n: Named,
    pub(super) data: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) keep: usize,
}

#[async_trait]
impl Check for Backup {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Backup.as_str()
    }
    async fn run(&self) -> Report {
        let (data, dir, keep) = (self.data.clone(), self.dir.clone(), self.keep);
        let result = tokio::task::spawn_blocking(move || -> Result<(crate::store::backup::Report, usize), String> {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
            let file = dir.join(format!("hub-{stamp}.backup"));
            let report = crate::store::backup::backup(&data, &file, &mut |_, _| {}).map_err(|e| e.to_string())?;
            // Retention only after a good new backup: never delete the last good one first.
            let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("hub-") && n.ends_with(".backup"))
                })
                .collect();
            old.sort();
            let excess = old.len().saturating_sub(keep);
            for p in &old[..excess] {
                let _ = std::fs::remove_file(p);
            }
            Ok((report, excess))
        })
        .await;
        match result {
            Ok(Ok((r, removed))) => match &r.chain {
                Ok(head) => Report::new(
                    Status::Ok,
                    format!(
                        "backup of {:.1} MiB written, audit head seq {}; {removed} old backup(s) removed",
                        r.bytes as f64 / 1048576.0,
                        head.head_seq
                    ),
                )
                .with("bytes", r.bytes as f64)
                .with("audit_head_seq", head.head_seq as f64),
                Err(b) => Report::new(Status::Critical, format!("backup written, but its {b}")),
            },
            Ok(Err(e)) => Report::new(Status::Critical, format!("backup failed: {e}")),
            Err(e) => Report::new(Status::Critical, format!("backup task failed: {e}")),
        }
    }
}
