//! The SQLite write-ahead log and its bound: the checkpointer thread that copies the log back
//! into the database off the writer's path, and the writer's own restart of the log when it
//! passes `[storage] max_wal_mib`.
//!
//! Why a bound needs the writer: a PASSIVE checkpoint copies frames but never waits, and the log
//! starts over from its first frame only when a writer begins a transaction after a checkpoint
//! copied *every* frame and no reader still reads from the log. Under a writer that never pauses,
//! frames are appended while the checkpointer copies, so that moment never comes and the log
//! grows without end (RELIABILITY.md, item 7). So when the log passes its
//! bound, the writer, between two groups, runs a RESTART checkpoint itself: no frame can be added
//! while it runs (it *is* the writer), so the copy completes, and RESTART then waits for the
//! readers still on the log to finish, after which the writer's next transaction starts the log
//! over and `journal_size_limit` cuts the file back to the bound.
//!
//! Why it cannot starve: readers that begin after the copy completed read the database file
//! alone (SQLite's read mark 0), so only readers that were already running can hold the restart
//! up, and every read of the hub is one short statement (the chain walk reads in pages for this
//! reason). A reader that holds a snapshot for long (a `VACUUM INTO` backup) does pin the log; the
//! writer then waits at most [`READER_WAIT_MS`] per try and tries again after [`RETRY_AFTER`],
//! doubled after each try the reader held up (to [`RETRY_MAX`]), so a backup slows publishing by
//! little, the log grows for as long as the backup runs, and the storage check warns.

use std::cell::Cell;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;

/// How long one restart waits for readers still on the log, in steps of a millisecond (SQLite's
/// own busy timeout sleeps up to 100 ms between looks, which would stall the writer for nothing).
/// Short reads end within a few of them, even on a loaded machine (the WAL test measured 37 ms
/// at most beside two busy readers on two cores).
const READER_WAIT_MS: i32 = 200;
/// After a restart that readers held up, how long the writer goes on before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// The longest pause between tries while a reader holds the log.
const RETRY_MAX: Duration = Duration::from_secs(8);
/// How often the checkpointer copies the log back.
const PASSIVE_EVERY: Duration = Duration::from_millis(200);
/// The writer connection's usual busy timeout.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// A WAL file's header, and each frame's header before its page.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

thread_local! {
    /// Frames in the log after the last commit on this thread's connection. SQLite's WAL hook is a
    /// plain function without user data (rusqlite's `wal_hook`), and it runs on the thread that
    /// commits: the ledger writer's, which owns the only write connection.
    static FRAMES: Cell<u64> = const { Cell::new(0) };
}

fn record_frames(_: &rusqlite::hooks::Wal, frames: c_int) -> rusqlite::Result<()> {
    FRAMES.with(|f| f.set(frames.max(0) as u64));
    Ok(())
}

/// What `/metrics`, the dashboard and the storage check see of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalStats {
    /// The `-wal` file's size on disk now.
    pub bytes: u64,
    /// The bound (`[storage] max_wal_mib`).
    pub limit_bytes: u64,
    /// When a checkpoint last copied the whole log (ms since the epoch), or the store was opened
    /// if none has since: its age grows while no checkpoint completes.
    pub last_complete_ms: i64,
    /// Times the writer made the log start over.
    pub restarts: u64,
    /// Restarts that readers held up past their wait.
    pub held_up: u64,
    /// The most bytes one group commit added to the log: how far past the bound it may reach.
    pub largest_commit_bytes: u64,
}

impl WalStats {
    /// Past the bound by more than the one group commit after which the writer restarts the log:
    /// a reader holds it, or restarts fail.
    pub fn above_bound(&self) -> bool {
        self.bytes > self.limit_bytes + self.largest_commit_bytes
    }
}

/// State shared by the writer, the checkpointer and whoever reads the stats.
pub(crate) struct Wal {
    path: PathBuf,
    limit_bytes: u64,
    page_size: u64,
    /// Serialises the two checkpointers: SQLite answers a checkpoint that finds another running
    /// with SQLITE_BUSY at once, without waiting.
    checkpointing: Mutex<()>,
    last_complete_ms: AtomicI64,
    restarts: AtomicU64,
    held_up: AtomicU64,
    largest_commit_frames: AtomicU64,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutex guards no data, only the order of checkpoints.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What one checkpoint did.
struct Pass {
    /// It copied every frame of the log.
    complete: bool,
    /// Frames in the log.
    frames: u64,
}

/// Runs `PRAGMA wal_checkpoint(MODE)`.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Pass> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        let (busy, log, copied): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        Ok(Pass { complete: busy == 0 && log == copied, frames: log.max(0) as u64 })
    })
}

impl Wal {
    /// Sets the bound up on the writer's connection (already in WAL mode).
    pub(crate) fn new(db: &Path, conn: &Connection, limit_bytes: u64) -> Result<Arc<Self>, StoreError> {
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
        // A log that started over keeps its file; this cuts the file back to the bound.
        conn.pragma_update(None, "journal_size_limit", limit_bytes as i64)?;
        // After `wal_autocheckpoint = 0`, which clears the hook: it would replace ours.
        conn.wal_hook(Some(record_frames));
        Ok(Arc::new(Self {
            path: db.with_extension("db-wal"),
            limit_bytes,
            page_size,
            checkpointing: Mutex::new(()),
            last_complete_ms: AtomicI64::new(now_ms()),
            restarts: AtomicU64::new(0),
            held_up: AtomicU64::new(0),
            largest_commit_frames: AtomicU64::new(0),
        }))
    }

    fn bytes_of(&self, frames: u64) -> u64 {
        WAL_HEADER + frames * (self.page_size + FRAME_HEADER)
    }

    /// The `-wal` file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.path
    }

    /// The stats now.
    pub(crate) fn stats(&self) -> WalStats {
        WalStats {
            bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            limit_bytes: self.limit_bytes,
            last_complete_ms: self.last_complete_ms.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            held_up: self.held_up.load(Ordering::Relaxed),
            largest_commit_bytes: self.bytes_of(self.largest_commit_frames.load(Ordering::Relaxed)) - WAL_HEADER,
        }
    }

    /// The writer's side: to be called on the writer's thread after every commit, between groups.
    pub(crate) fn writer(self: &Arc<Self>) -> WalWriter {
        WalWriter { wal: self.clone(), frames_before: None, retry_at: None, held_up: 0 }
    }

    /// Starts the checkpointer thread on its own connection.
    pub(crate) fn checkpointer(self: &Arc<Self>, conn: Connection) -> Result<Checkpointer, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let wal = self.clone();
        let thread = std::thread::Builder::new().name("wal-checkpointer".into()).spawn(move || {
            // Frames in the log at the last pass.
            let run = |mode: &str| -> u64 {
                let _turn = lock(&wal.checkpointing);
                match checkpoint(&conn, mode) {
                    Ok(pass) => {
                        if pass.complete {
                            wal.last_complete_ms.store(now_ms(), Ordering::Relaxed);
                        }
                        pass.frames
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "wal checkpoint failed");
                        0
                    }
                }
            };
            let mut frames = 0;
            loop {
                // Past half the bound, pass after pass: what is left for the writer's restart
                // is then what one pass takes, not 200 ms of writes on top.
                let pause = if wal.bytes_of(frames) > wal.limit_bytes / 2 { Duration::ZERO } else { PASSIVE_EVERY };
                match stopped.recv_timeout(pause) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => frames = run("PASSIVE"),
                    _ => break,
                }
            }
            run("TRUNCATE");
        })?;
        Ok(Checkpointer { stop, thread })
    }
}

/// The writer thread's handle on the bound.
pub(crate) struct WalWriter {
    wal: Arc<Wal>,
    /// Frames after the previous commit; none before the first, whose log may hold frames that a
    /// crash left (SQLite recovers them on open).
    frames_before: Option<u64>,
    /// After a restart that readers held up: not before then.
    retry_at: Option<Instant>,
    /// Tries in a row that readers held up.
    held_up: u32,
}

impl WalWriter {
    /// After a commit: notes how much it added and, past the bound, makes the log start over.
    pub(crate) fn committed(&mut self, conn: &Connection) {
        let frames = FRAMES.with(Cell::get);
        if let Some(before) = self.frames_before {
            // Fewer frames than before: the log started over (after a checkpoint that completed
            // while the writer paused), and this commit wrote from its first frame.
            let added = if frames >= before { frames - before } else { frames };
            self.wal.largest_commit_frames.fetch_max(added, Ordering::Relaxed);
        }
        self.frames_before = Some(frames);
        if self.wal.bytes_of(frames) <= self.wal.limit_bytes || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let started = Instant::now();
        match self.restart(conn) {
            Ok(true) => {
                tracing::debug!(
                    frames,
                    ms = started.elapsed().as_millis() as u64,
                    "write-ahead log restarted at its bound"
                );
                // The next transaction writes from the log's first frame.
                self.frames_before = Some(0);
                self.retry_at = None;
                self.held_up = 0;
                self.wal.restarts.fetch_add(1, Ordering::Relaxed);
                self.wal.last_complete_ms.store(now_ms(), Ordering::Relaxed);
            }
            Ok(false) => {
                self.retry_at = Some(Instant::now() + self.pause());
                self.held_up += 1;
                self.wal.held_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    wal_bytes = self.wal.bytes_of(frames),
                    limit_bytes = self.wal.limit_bytes,
                    "readers held the write-ahead log past its bound; trying again shortly"
                );
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + self.pause());
                self.held_up += 1;
                tracing::warn!(error = %e, "wal restart failed");
            }
        }
    }

    fn pause(&self) -> Duration {
        RETRY_AFTER.saturating_mul(1 << self.held_up.min(5)).min(RETRY_MAX)
    }

    fn restart(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let _turn = lock(&self.wal.checkpointing);
        conn.busy_handler(Some(wait_for_readers))?;
        let done = checkpoint(conn, "RESTART");
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(done?.complete)
    }
}

fn wait_for_readers(tries: i32) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    tries < READER_WAIT_MS
}

/// The thread that keeps the log short while the writer writes.
pub(crate) struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Stops after a last checkpoint that truncates the log.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::ledger::keys::HubKeys;
    use crate::ledger::{Action, NewEntry};
    use crate::store::sqlite::{db_path, SqliteOptions, SqliteStore};
    use crate::store::{NewVersion, Published, Store};

    const RECORDS: usize = 100_000;
    const LIMIT: u64 = 4 << 20;

    /// A record version about the size of a marriage registration (the checks' tests use it too).
    pub(crate) fn version(i: usize) -> NewVersion {
        // About the size of a marriage registration's canonical form, so pages fill as in use.
        let canonical = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(850));
        NewVersion {
            record_type: "t".into(),
            key: format!("K{i:07}"),
            schema_version: 1,
            digest: format!("{:x}", i * 7919),
            canonical,
            publisher: "p".into(),
            subjects: vec![format!("s{}", i % 5000), format!("s{}", (i * 31) % 5000)],
            idempotency: None,
            routes: vec!["a".into(), "b".into()],
            first_only: false,
            audit: NewEntry::new("p", Action::Publish, "ok"),
            trace: None,
        }
    }

    /// The largest size the `-wal` file reaches while `running`, sampled every millisecond.
    fn sample(path: PathBuf, running: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut largest = 0;
            while running.load(Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(1));
            }
            largest
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sustained_publishing_beside_busy_readers_keeps_the_log_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        // Groups of at most 128 publishes, so that one group's pages are small beside the bound.
        let opts = SqliteOptions {
            group_commit_max: 128,
            read_connections: 2,
            checkpoint_every: 1000,
            max_wal_bytes: LIMIT,
            subject_merge_at: 1024,
        };
        let store = Arc::new(SqliteStore::open(dir.path(), keys, opts).unwrap());
        let running = Arc::new(AtomicBool::new(true));
        let sampler = sample(db_path(dir.path()).with_extension("db-wal"), running.clone());

        // The read pool stays busy with lookups and reads for as long as the load lasts.
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (store, running) = (store.clone(), running.clone());
                tokio::spawn(async move {
                    let mut reads = 0u64;
                    while running.load(Ordering::Relaxed) {
                        store.by_subject(&format!("s{}", (reads * 13 + r) % 5000)).await.unwrap();
                        store.latest("t", &format!("K{:07}", reads % 1000)).await.unwrap();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let publishers: Vec<_> = (0..8)
            .map(|p| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut receipts = Vec::new();
                    for chunk in (p..RECORDS).step_by(8).collect::<Vec<_>>().chunks(64) {
                        for done in store.publish(chunk.iter().map(|&i| version(i)).collect()).await.unwrap() {
                            match done.unwrap() {
                                Published::Created(r) => receipts.push(r),
                                other => panic!("{other:?}"),
                            }
                        }
                    }
                    receipts
                })
            })
            .collect();
        let mut receipts = HashMap::new();
        for p in publishers {
            for r in p.await.unwrap() {
                receipts.insert(r.key.clone(), r);
            }
        }
        running.store(false, Ordering::Relaxed);
        let largest = sampler.join().unwrap();
        let reads: u64 = futures_sum(readers).await;

        let wal = store.writer_stats().wal.unwrap();
        assert!(reads > 100, "the readers made only {reads} reads");
        assert!(wal.restarts > 0, "{wal:?}");
        assert!(
            largest <= LIMIT + wal.largest_commit_bytes + WAL_HEADER,
            "the log reached {largest} bytes, past its bound of {LIMIT} and one commit of {} ({wal:?})",
            wal.largest_commit_bytes
        );

        // Every receipt is readable, with its digest and audit entry.
        assert_eq!(receipts.len(), RECORDS);
        let mut seen = 0;
        let mut from = 0;
        loop {
            let page = store.versions_since("t", from, 10_000).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.audit_seq + 1;
            for v in &page {
                let r = &receipts[&v.key];
                assert_eq!((v.version, v.audit_seq, &v.digest), (r.version, r.audit_seq, &r.digest));
                seen += 1;
            }
        }
        assert_eq!(seen, RECORDS);
        let report = store.verify_audit().await.unwrap().unwrap();
        assert_eq!(report.entries, RECORDS as u64);
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_holding_a_snapshot_delays_the_restart_without_stalling_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let opts = SqliteOptions {
            group_commit_max: 128,
            read_connections: 1,
            checkpoint_every: 1000,
            max_wal_bytes: 1 << 20,
            subject_merge_at: 64,
        };
        let store = SqliteStore::open(dir.path(), keys, opts).unwrap();
        let wal_file = db_path(dir.path()).with_extension("db-wal");
        let publish = |from: usize| {
            let store = &store;
            async move {
                for r in store.publish((from..from + 100).map(version).collect()).await.unwrap() {
                    assert!(matches!(r.unwrap(), Published::Created(_)));
                }
            }
        };
        publish(0).await;
        // A backup's long read: one snapshot held while the writer goes on.
        let reader = Connection::open(db_path(dir.path())).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader.query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0)).unwrap();
        let started = Instant::now();
        let mut next = 100;
        while store.writer_stats().wal.unwrap().held_up < 2 {
            assert!(next < 100_000, "no restart was held up: {:?}", store.writer_stats().wal);
            publish(next).await;
            next += 100;
        }
        // Each held-up try waits at most READER_WAIT_MS, and tries back off.
        assert!(started.elapsed() < Duration::from_secs(5), "the writer stalled for {:?}", started.elapsed());
        let held = store.writer_stats().wal.unwrap();
        assert!(std::fs::metadata(&wal_file).unwrap().len() > held.limit_bytes, "the reader did not pin the log");
        assert_eq!(held.restarts, 0, "{held:?}");

        // Once the reader ends, the next try restarts the log and the file shrinks to the bound.
        reader.execute_batch("COMMIT").unwrap();
        while store.writer_stats().wal.unwrap().restarts == 0 {
            assert!(next < 200_000, "the log never restarted after the reader ended");
            publish(next).await;
            next += 100;
        }
        publish(next).await;
        let after = store.writer_stats().wal.unwrap();
        let size = std::fs::metadata(&wal_file).unwrap().len();
        assert!(size <= after.limit_bytes + after.largest_commit_bytes + WAL_HEADER, "{size} {after:?}");
        store.close().await;
    }

    async fn futures_sum(tasks: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    }
}
