//! `storage`: free disk, the database reachable, and the write-ahead log within its bound and
//! checkpointed.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{CheckKind, StorageThresholds};
use crate::store::Store;

pub(super) struct Storage {
    pub(super) n: Named,
    pub(super) t: StorageThresholds,
    pub(super) data: PathBuf,
    pub(super) store: Arc<dyn Store>,
}

#[async_trait]
impl Check for Storage {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Storage.as_str()
    }
    async fn run(&self) -> Report {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64;
        // A database server reports its own size; its WAL and disk are the server's to watch.
        let (db_bytes, wal_bytes) = match self.store.database_bytes().await {
            Ok(Some(n)) => (n as f64, 0.0),
            Ok(None) => {
                let db = crate::store::sqlite::db_path(&self.data);
                (size(db.clone()), size(db.with_extension("db-wal")))
            }
            Err(e) => return Report::new(Status::Critical, format!("cannot read the database size: {e}")),
        };
        let fs = match rustix::fs::statvfs(&self.data) {
            Ok(s) => s,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the filesystem: {e}")),
        };
        let total = (fs.f_blocks as f64) * (fs.f_frsize as f64);
        let free = (fs.f_bavail as f64) * (fs.f_frsize as f64);
        let free_pct = if total > 0.0 { 100.0 * free / total } else { 0.0 };
        let t = &self.t;
        // Less free space is worse: compare the used share against the thresholds' complements.
        let used_pct = 100.0 - free_pct;
        let status =
            Status::from_thresholds(used_pct, Some(100.0 - t.warn_free_percent), Some(100.0 - t.critical_free_percent))
                .max(Status::from_thresholds(wal_bytes, Some(t.warn_wal_bytes), t.critical_wal_bytes));
        let mut summary = format!(
            "{free_pct:.1}% of the disk free, database {:.1} MiB, WAL {:.1} MiB",
            db_bytes / 1048576.0,
            wal_bytes / 1048576.0
        );
        let mut wal_measurements = Vec::new();
        let mut status = status;
        if let Some(wal) = self.store.writer_stats().wal {
            let age = (chrono::Utc::now().timestamp_millis() - wal.last_complete_ms).max(0) as f64 / 1000.0;
            let age_status = Status::from_thresholds(
                age,
                Some(t.warn_checkpoint_age_seconds),
                Some(t.critical_checkpoint_age_seconds),
            );
            status = status.max(age_status);
            if wal.above_bound() {
                status = status.max(Status::Warn);
                summary.push_str(&format!(", above its bound of {:.0} MiB", wal.limit_bytes as f64 / 1048576.0));
            }
            summary.push_str(&format!(", last complete checkpoint {age:.0} s ago"));
            wal_measurements = vec![
                ("wal_limit_bytes", wal.limit_bytes as f64),
                ("wal_checkpoint_age_seconds", age),
                ("wal_restarts", wal.restarts as f64),
            ];
        }
        wal_measurements.into_iter().fold(
            Report::new(status, summary)
                .with("free_bytes", free)
                .with("free_percent", free_pct)
                .with("database_bytes", db_bytes)
                .with("wal_bytes", wal_bytes),
            |r, (name, value)| r.with(name, value),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::keys::HubKeys;
    use crate::store::sqlite::{db_path, SqliteOptions, SqliteStore};
    use crate::store::wal::tests::version;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn storage_warns_above_the_wal_bound_and_goes_critical_while_no_checkpoint_completes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let opts = SqliteOptions {
            group_commit_max: 128,
            read_connections: 1,
            checkpoint_every: 1000,
            max_wal_bytes: 1 << 20,
            subject_merge_at: 64,
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), keys, opts).unwrap());
        // The disk's own free space must not decide these runs.
        let disk_aside = StorageThresholds { warn_free_percent: 0.0, critical_free_percent: 0.0, ..Default::default() };
        let check = |t: StorageThresholds| Storage {
            n: Named { name: "disk".into() },
            t,
            data: dir.path().to_path_buf(),
            store: store.clone(),
        };
        let publish = |from: usize| {
            let store = store.clone();
            async move { store.publish((from..from + 100).map(version).collect()).await.unwrap() }
        };
        publish(0).await;
        let calm = check(disk_aside.clone()).run().await;
        assert_eq!(calm.status, Status::Ok, "{}", calm.summary);

        // A reader holds a snapshot: the log cannot start over, and no checkpoint completes.
        let reader = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader.query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0)).unwrap();
        let mut next = 100;
        // Two held-up tries are at least 250 ms apart (the writer's back-off).
        while store.writer_stats().wal.unwrap().held_up < 2 {
            assert!(next < 100_000, "no restart was held up");
            publish(next).await;
            next += 100;
        }
        let warned = check(disk_aside.clone()).run().await;
        assert_eq!(warned.status, Status::Warn, "{}", warned.summary);
        assert!(warned.summary.contains("above its bound of 1 MiB"), "{}", warned.summary);
        let stalled = check(StorageThresholds { critical_checkpoint_age_seconds: 0.2, ..disk_aside }).run().await;
        assert_eq!(stalled.status, Status::Critical, "{}", stalled.summary);
        assert!(stalled.measurements["wal_checkpoint_age_seconds"] >= 0.2, "{:?}", stalled.measurements);
        reader.execute_batch("COMMIT").unwrap();
        store.close().await;
    }
}
