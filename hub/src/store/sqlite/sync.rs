//! Durability of the embedded store: the syncer thread, which makes committed groups durable
//! with one `fdatasync` of the write-ahead log for all the groups committed since its last one,
//! and the marks that hold back replies and deliveries until what they carry is on disk.
//!
//! Why: with `synchronous=FULL` SQLite's COMMIT includes the fsync, so the writer waited for the
//! disk after every group and the next group could not start (BENCHMARKS.md, "Where SQLite
//! publishes wait now": the writer on a core ~0.38 of the time). Now the writer commits with
//! `synchronous=NORMAL` and goes on to the next group while this thread flushes the last ones.
//!
//! Why that keeps the promise of a receipt: a COMMIT in WAL mode appends the group's frames to
//! the `-wal` file with plain writes, and SQLite's recovery keeps the longest run of frames whose
//! checksums chain, up to its last commit frame. So an `fdatasync` of that file after commit N
//! makes commits 1..=N durable together, through whichever descriptor it goes (it flushes the
//! file's pages, not the descriptor's). SQLite itself still syncs the log before a checkpoint
//! copies it into the database, the database after, and the log's header when the log starts
//! over, so a checkpoint never moves a frame the disk has not got.
//!
//! What waits: a reply (receipt, audit entry, settlement) is sent only after the sync that covers
//! its commit; and nothing goes out to a department before it is on disk either, or a power cut
//! could take back a version a department was sent and whose publisher never had a receipt. A
//! push delivery's or a feed's scan of the log stops at the last audit sequence flushed, and a
//! claim of outbox rows that found some waits until every commit it could have seen is flushed.
//! Reads and lookups need neither: each answers only after its audit entry, written after the
//! read, is flushed, and a flush covers every commit before it. (A wait after every read cost
//! audited lookups a third of their rate: two flushes per lookup instead of one.)
//!
//! A failed `fdatasync` cannot be retried (the kernel may already have dropped the pages it could
//! not write, and a second call succeeds without them), so, as PostgreSQL does, the store then
//! takes no more writes and answers every waiting caller that nothing is known to be stored,
//! until an operator restarts it and recovery reads what really is on disk.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::{Done, JobResult};
use crate::store::StoreError;

/// Where durability stands, as readers and the writer see it.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    /// Every group commit numbered up to this one is on disk.
    durable: u64,
    /// A sync failed: nothing after `durable` is known to be on disk, and nothing more will be.
    failed: bool,
}

/// The numbers of group commits and how far they are durable.
pub(super) struct Durability {
    /// The last group commit's number, taken before its COMMIT: a read that sees a group's rows
    /// finds at least that group's number here.
    announced: AtomicU64,
    mark: watch::Sender<Mark>,
    /// The last audit sequence on disk: a delivery's scan of the log stops there.
    flushed_seq: AtomicI64,
    syncs: AtomicU64,
    /// Held by the syncer around each flush; the tests hold it to keep a flush back.
    #[cfg(test)]
    pub(super) gate: std::sync::Mutex<()>,
}

/// The error every caller hears once a sync has failed, and every write after it.
pub(super) fn lost() -> StoreError {
    StoreError::Unavailable(
        "the write-ahead log could not be flushed to disk; the hub takes no writes until it is restarted".into(),
    )
}

impl Durability {
    /// `head` is the last audit sequence in the database as opened (made durable by
    /// [`Syncer::start`]).
    pub(super) fn new(head: u64) -> Arc<Self> {
        Arc::new(Self {
            announced: AtomicU64::new(0),
            mark: watch::Sender::new(Mark::default()),
            flushed_seq: AtomicI64::new(head as i64),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            gate: std::sync::Mutex::new(()),
        })
    }

    /// Numbers the group commit about to run. Every number taken must reach the syncer
    /// ([`Syncer::hand`]), committed or not, or reads would wait for it for ever.
    pub(super) fn announce(&self) -> u64 {
        self.announced.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A sync has failed: the store takes no more writes.
    pub(super) fn failed(&self) -> bool {
        self.mark.borrow().failed
    }

    /// The last audit sequence on disk.
    pub(super) fn flushed_seq(&self) -> i64 {
        self.flushed_seq.load(Ordering::SeqCst)
    }

    /// `fdatasync` calls made so far.
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Waits until every group commit that a read which has just ended (a claim of outbox rows)
    /// could have seen is durable. Called after the read: whatever it saw was committed, hence
    /// announced, before now.
    pub(super) async fn settled(&self) -> Result<(), StoreError> {
        let seen = self.announced.load(Ordering::SeqCst);
        let done = |m: &Mark| m.failed || m.durable >= seen;
        let now = *self.mark.borrow();
        let mark = if done(&now) {
            now
        } else {
            // `wait_for` looks at the value it finds first, so a sync that ended between the
            // look above and this subscription is not missed.
            let mut rx = self.mark.subscribe();
            let mark = *rx.wait_for(done).await.map_err(|_| StoreError::WriterGone)?;
            mark
        };
        if mark.failed && mark.durable < seen {
            return Err(lost());
        }
        Ok(())
    }
}

/// The replies of one committed group, to be sent once it is durable.
pub(super) type Replies = Vec<(oneshot::Sender<JobResult>, Vec<Result<Done, StoreError>>)>;

/// One group commit handed to the syncer.
struct Handed {
    number: u64,
    /// The chain's head after the group (for one that did not commit, the head before it).
    seq: u64,
    /// Empty for a group that did not commit: its callers were answered, but its number must
    /// still pass so that reads stop waiting for it.
    replies: Replies,
}

/// The syncer thread and the way to it.
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<Handed>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the syncer of the write-ahead log at `wal` (`Wal::log_path`). Whatever is in the
    /// log already (a process killed before its last flush leaves commits that no flush covered)
    /// is flushed first, before anything of it can be delivered.
    pub(super) fn start(wal: &Path, durability: Arc<Durability>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Handed>();
        let mut log = Log::new(wal);
        if log.path.exists() {
            log.flush()?;
        }
        let thread = std::thread::Builder::new().name("wal-syncer".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                // Every group committed meanwhile goes with this flush.
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let upto = batch.iter().map(|h| h.number).max().unwrap_or(0);
                let seq = batch.iter().map(|h| h.seq).max().unwrap_or(0);
                let wrote = batch.iter().any(|h| !h.replies.is_empty());
                let flushed = if durability.failed() {
                    Err(None)
                } else if wrote {
                    #[cfg(test)]
                    let _gate = durability.gate.lock().unwrap_or_else(|e| e.into_inner());
                    durability.syncs.fetch_add(1, Ordering::Relaxed);
                    log.flush().map_err(Some)
                } else {
                    Ok(())
                };
                match flushed {
                    Ok(()) => {
                        // The mark first: a caller that reads right after its receipt must not wait.
                        durability.flushed_seq.fetch_max(seq as i64, Ordering::SeqCst);
                        durability.mark.send_modify(|m| m.durable = m.durable.max(upto));
                        for (reply, done) in batch.into_iter().flat_map(|h| h.replies) {
                            let _ = reply.send(Ok(done));
                        }
                    }
                    Err(cause) => {
                        if let Some(e) = cause {
                            tracing::error!(error = %e, wal = %log.path.display(), "fdatasync of the write-ahead log failed; the store takes no more writes until the hub is restarted");
                        }
                        durability.mark.send_modify(|m| m.failed = true);
                        for (reply, _) in batch.into_iter().flat_map(|h| h.replies) {
                            let _ = reply.send(Err(lost()));
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands over group commit `number`, after which the chain's head is `seq`, with the replies
    /// it owes once durable.
    pub(super) fn hand(&self, number: u64, seq: u64, replies: Replies) {
        if let Some(tx) = &self.tx {
            if let Err(mpsc::SendError(h)) = tx.send(Handed { number, seq, replies }) {
                // The thread is gone (it cannot panic short of a bug): nothing is known durable.
                for (reply, _) in h.replies {
                    let _ = reply.send(Err(StoreError::WriterGone));
                }
            }
        }
    }

    /// Flushes what was handed over and ends the thread.
    pub(super) fn stop(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `-wal` file, opened at its first flush: SQLite creates it with the first write.
struct Log {
    path: PathBuf,
    dir: PathBuf,
    file: Option<File>,
}

impl Log {
    fn new(path: &Path) -> Self {
        let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self { path: path.to_path_buf(), dir, file: None }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let file = match &self.file {
            Some(f) => f,
            None => {
                // SQLite keeps this file (the same inode: a restart of the log overwrites and
                // truncates it) while any connection is open, and the writer's is open until the
                // syncer has stopped. Its name in the directory must be durable too: SQLite syncs
                // the directory only with the log's first sync, which `synchronous=NORMAL` leaves
                // to the first checkpoint.
                let file = File::open(&self.path)?;
                File::open(&self.dir)?.sync_all()?;
                self.file.insert(file)
            }
        };
        file.sync_data()
    }
}
