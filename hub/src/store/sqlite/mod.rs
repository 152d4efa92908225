//! The embedded store: SQLite in WAL mode. One write connection is owned by the ledger-writer
//! thread, which drains its queue into one transaction (group commit) and hands the transaction's
//! replies to the syncer (`sync.rs`), which flushes the log once for every group committed since
//! its last flush while the writer goes on with the next. The writer gives each operation but
//! publishes and settlements a savepoint so one failure cannot spoil its neighbours (a failed
//! publish rolls back its whole group), assigns audit sequence numbers and chains digests. Reads
//! use a small pool of read-only connections on blocking threads; WAL lets them run beside the
//! writer. Push subscriptions are cursors over the log (`log.rs`); the subject index is merged
//! behind the log in sorted runs (`subjects.rs`); the schema and its upgrade steps are the SQL
//! files beside this one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::SecondsFormat;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

mod cases;
mod linked;
mod log;
mod subjects;
mod sync;

pub(crate) use log::owed as owed_from_log;

use self::subjects::{Merger, Staged, Tail};
use self::sync::{Durability, Syncer};
use super::cursor;
use super::wal::{Wal, WalWriter};
use super::{
    AlertRecord, Audited, CaseQuery, CaseRow, CaseWrite, CaseWritten, CheckRun, DeliveryCounts, FeedCursor, FeedPage,
    FromLog, Lease, NewVersion, OutboxRow, Published, Receipt, RecordVersion, Settlement, Store, StoreError,
    SubscriptionState, WriterStats,
};
use crate::ledger::keys::HubKeys;
use crate::ledger::{seal, Anchor, ChainBroken, ChainReport, Checkpoint, Entry, NewEntry, Walk, GENESIS};

const SCHEMA: &str = include_str!("schema.sql");

/// The schema version `SCHEMA` writes.
const SCHEMA_VERSION: i64 = 14;

/// From schema 6: `records` becomes a table keyed by its publish audit entry, so that a ~1 KiB
/// payload sits in the row (in a `WITHOUT ROWID` table, whose rows are index entries, anything
/// over ~1,000 bytes took a 4 KiB overflow page of its own); `latest` is the last entry of
/// `records_by_key`; the subject index is kept up to date from the previous version's subjects
/// instead of through an index by record.
const FROM_6: &str = include_str!("upgrade-7.sql");

/// From schema 7: the outbox is indexed only where entries wait (pending, dead). An index with
/// the state in its key moved three entries on every settlement and grew with every delivery
/// ever made; partial indexes lose an entry when one is delivered and stay the size of the
/// backlog.
const FROM_7: &str = include_str!("upgrade-8.sql");

/// From schema 8: push subscriptions become cursors over the log (`log.rs`). A record names the
/// cursors it is routed to as bits of `routes`, which `records_by_seq` carries so that a cursor
/// reads its way and counts its backlog from the index alone; outbox rows are left for what
/// cannot go in log order.
const FROM_8: &str = include_str!("upgrade-9.sql");

/// From schema 9: an audit entry about a stored record version (a publish, a delivery, a read)
/// is found for a person through the record (`subjects`, and `subjects_past` for the people
/// later versions removed, never deleted) and `audit_by_record`, whose keys follow the record
/// keys' order, instead of one `audit_subjects` key per subject at a random place in a B-tree
/// that outgrows memory (BENCHMARKS.md, how cost grows). `subjects_past` starts with everyone
/// earlier versions named and the index no longer does. The upgrade reads every record and audit
/// entry once.
const FROM_9: &str = include_str!("upgrade-10.sql");

/// From schema 10: joint cases. A case's states are versions of a `hub.case` record; these tables
/// are what worklists, the sweep for late steps and the case report query.
const FROM_10: &str = include_str!("upgrade-11.sql");

/// From schema 11: a record version keeps the W3C trace context of its publish, which its
/// deliveries carry (a column that is NULL for the versions stored before).
const FROM_11: &str = include_str!("upgrade-12.sql");

/// From schema 12: a checkpoint names the crypto suite it was signed with (NULL on those signed
/// before: SHA-256 and Ed25519, `ledger::suite`).
const FROM_12: &str = include_str!("upgrade-13.sql");

/// From schema 13: the subject index is merged in batches off the commit path (`subjects.rs`);
/// a mark says through which audit sequence it holds the versions, all of them until now.
const FROM_13: &str = include_str!("upgrade-14.sql");

/// Each upgrade step: the version it leaves and its statements.
const UPGRADES: &[(i64, &str)] =
    &[(7, FROM_6), (8, FROM_7), (9, FROM_8), (10, FROM_9), (11, FROM_10), (12, FROM_11), (13, FROM_12), (14, FROM_13)];

const RECORD_COLUMNS: &str =
    "r.type, r.key, r.version, r.schema_version, r.payload, r.digest, r.publisher, r.received_at, r.audit_seq, r.subjects, r.trace";
const OUTBOX_COLUMNS: &str =
    "o.id, o.subscription, o.record_type, o.key, o.version, o.event_id, o.state, o.attempts, o.next_attempt_at, o.created_at, o.last_error";
const CHECK_COLUMNS: &str = "name, kind, started, duration_ms, status, summary, measurements, trigger";
const AUDIT_COLUMNS: &str =
    "a.seq, a.time, a.actor, a.action, a.record_type, a.record_key, a.record_version, a.subjects, a.purpose, a.outcome, a.detail, a.prev, a.digest";

/// Tuning of the SQLite store.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Most operations flushed by one commit.
    pub group_commit_max: usize,
    /// Read connections.
    pub read_connections: usize,
    /// A signed checkpoint every this many audit entries.
    pub checkpoint_every: u64,
    /// The write-ahead log's bound (see `wal`).
    pub max_wal_bytes: u64,
    /// Versions whose subjects wait in memory before the writer merges them into the subject
    /// index (`subjects.rs`; [`SUBJECT_MERGE_AT`] unless a test wants merges to come sooner).
    pub subject_merge_at: usize,
}

pub use subjects::MERGE_AT as SUBJECT_MERGE_AT;

/// The database file inside a data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("hub.db")
}

/// What a write operation produced.
enum Done {
    Published(Published),
    Cursors(Vec<(String, i64, i64, i64)>),
    Audited(Audited),
    Count(u64),
    /// Entries acknowledged, and where the feed's cursor over the log stands.
    Acked(u64, Option<i64>),
    Subscription(Option<String>),
    Case(CaseWritten),
    Linked(super::Linked),
    /// A first version found its record stored ([`StoreError::NotFirst`]); nothing written.
    NotFirst,
}

/// One write: runs inside its own savepoint of the group transaction, with the audit chain at hand.
type WriteFn = Box<dyn FnOnce(&mut Tx<'_>) -> Result<Done, StoreError> + Send>;

type JobResult = Result<Vec<Result<Done, StoreError>>, StoreError>;

struct Job {
    ops: Vec<WriteFn>,
    reply: oneshot::Sender<JobResult>,
    /// Each operation in its own savepoint, so that its failure spoils nothing else. Publishes go
    /// without (a savepoint costs a tenth of the writer's time): they fail only on errors of the
    /// database itself, and then the whole group is rolled back and every caller told to retry.
    isolated: bool,
}

/// The writer's view of the transaction: the connection, the chain head so far, and the clock
/// every operation of this commit shares.
struct Tx<'a> {
    conn: &'a Connection,
    head: Head,
    keys: &'a HubKeys,
    every: u64,
    time: &'a str,
    now_ms: i64,
    /// The versions this operation stored, for the subject index's tail once the group commits.
    staged: Vec<Staged>,
}

impl Tx<'_> {
    fn audit(&mut self, entry: NewEntry) -> Result<Entry, StoreError> {
        let (e, h) = append_entry(self.conn, entry, &self.head, self.keys, self.every, self.time)?;
        self.head = h;
        Ok(e)
    }
}

#[derive(Clone)]
struct Head {
    seq: u64,
    digest: String,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    operations: AtomicU64,
    running: AtomicBool,
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a connection list half-updated (push and pop
    // are single steps), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReadPool {
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::WriterGone)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&pool.conns).pop().ok_or(StoreError::WriterGone)?;
            let result = f(&conn);
            lock(&pool.conns).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }
}

/// The SQLite store.
pub struct SqliteStore {
    /// Claimed outbox entries by id. One process has the database at a time (the ledger writer),
    /// so leases live here and end with the process: after a restart every entry may go at once.
    leases: Mutex<std::collections::HashMap<i64, Lease>>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReadPool>,
    stats: Arc<Stats>,
    durability: Arc<Durability>,
    keys: Arc<HubKeys>,
    wal: Arc<Wal>,
    /// Push subscriptions served from the log; set once at start, before the first publish.
    cursors: std::sync::RwLock<Arc<cursor::Cursors>>,
    /// The subject index's part not merged into `subjects` yet.
    tail: Arc<Tail>,
}

pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    tune(&conn)?;
    Ok(conn)
}

/// Settings every connection of the store shares.
fn tune(conn: &Connection) -> Result<(), StoreError> {
    // The planner may look at a bound value to choose a plan (a partial index, say); a statement
    // so planned is prepared again whenever that value changes, and the same cached claim runs for
    // each subscription in turn: re-preparing took a twelfth of the hub under delivery load. Every
    // statement here names the states its partial indexes need as literals, so it loses nothing.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // More statements than rusqlite's default 16 run on each connection; past the cache they are
    // parsed again on every call.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data` and starts the ledger writer.
    pub fn open(data: &Path, keys: Arc<HubKeys>, opts: SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data)?;
        let path = db_path(data);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(super::wal::BUSY_TIMEOUT)?;
        tune(&conn)?;
        // WAL: readers never block the writer. NORMAL: a commit does not wait for the disk; the
        // syncer flushes the log after it and only then are its replies sent (`sync.rs`), so a
        // receipt still promises durability and the writer need not wait.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every operation of a group commit runs in a savepoint; SQLite keeps a savepoint's undo
        // pages in a statement journal, by default a temporary file written page by page (a
        // seventh of the writer's time in the profile of BENCHMARKS.md). In memory it is bounded
        // by one group commit's pages.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints (copying the WAL into the database) run on their own thread and connection
        // (see `wal`): inline, the auto-checkpoint took a tenth of the writer's time.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let wal = Wal::new(&path, &conn, opts.max_wal_bytes)?;
        upgrade(&conn)?;
        conn.execute_batch(SCHEMA)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let head = conn
            .query_row("SELECT seq, digest FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok(Head { seq: r.get::<_, i64>(0)? as u64, digest: r.get(1)? })
            })
            .optional()?
            .unwrap_or(Head { seq: 0, digest: GENESIS.to_owned() });
        let first: Option<Option<String>> =
            conn.query_row("SELECT detail FROM audit WHERE seq = 1", [], |r| r.get(0)).optional()?;
        crate::ledger::check_suite(first, keys.suite()).map_err(StoreError::Mismatch)?;
        let tail = Arc::new(Tail::load(&conn)?);

        let readers = (0..opts.read_connections.max(1)).map(|_| open_reader(&path)).collect::<Result<Vec<_>, _>>()?;
        let durability = Durability::new(head.seq);
        let readers = Arc::new(ReadPool { permits: Semaphore::new(readers.len()), conns: Mutex::new(readers) });
        let stats = Arc::new(Stats::default());
        stats.running.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(4096);
        let checkpoints = wal.checkpointer(Connection::open(&path)?)?;
        let syncer = Syncer::start(wal.log_path(), durability.clone())?;
        let writer = {
            let (keys, stats, wal, durability) = (keys.clone(), stats.clone(), wal.clone(), durability.clone());
            let tail = tail.clone();
            std::thread::Builder::new().name("ledger-writer".into()).spawn(move || {
                let after = AfterCommit { tail: &tail, syncer: &syncer, durability: &durability, wal: wal.writer() };
                writer_loop(&conn, rx, head, &keys, opts, &stats, after);
                // Before the connection closes: SQLite removes the log with the last one.
                syncer.stop();
                drop(conn);
                checkpoints.stop();
            })?
        };
        Ok(Self {
            leases: Mutex::default(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers,
            stats,
            durability,
            keys,
            wal,
            cursors: std::sync::RwLock::default(),
            tail,
        })
    }

    /// Verifies the audit chain of a data directory without starting the hub.
    pub fn verify_offline(
        data: &Path,
        key: crate::ledger::keys::PublicKey,
    ) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        let path = db_path(data);
        if !path.exists() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )));
        }
        verify_with(&open_reader(&path)?, key, &mut |_| {})
    }

    async fn one(&self, op: WriteFn) -> Result<Done, StoreError> {
        self.submit(vec![op]).await?.pop().unwrap_or(Err(StoreError::WriterGone))
    }

    async fn count(&self, op: WriteFn) -> Result<u64, StoreError> {
        match self.one(op).await? {
            Done::Count(n) => Ok(n),
            _ => Err(StoreError::Corrupt("writer gave no count".into())),
        }
    }

    async fn submit(&self, ops: Vec<WriteFn>) -> JobResult {
        self.send(ops, true).await
    }

    fn cursors(&self) -> Arc<cursor::Cursors> {
        self.cursors.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn cursor(&self, subscription: &str) -> Option<Arc<cursor::Cursor>> {
        self.cursors().by_name.get(subscription).cloned()
    }

    /// The cursor of a feed served from the log: only it moves with acknowledgements (a push
    /// cursor moves with settlements).
    fn feed_log_cursor(&self, subscription: &str) -> Option<Arc<cursor::Cursor>> {
        self.cursor(subscription).filter(|c| c.feed)
    }

    /// Leases due pending outbox rows of a subscription, leaving out records in `busy` (a
    /// version of theirs is out from the log) and rows `behind` the cursor's way.
    async fn claim_rows(
        &self,
        subscription: &str,
        behind: cursor::Behind,
        now_ms: i64,
        limit: u32,
        lease: &Lease,
        busy: HashSet<(String, String)>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sub = subscription.to_owned();
        // One worker per subscription claims, so two claims never race for the same entries.
        let leased: Vec<i64> = {
            let mut leases = lock(&self.leases);
            leases.retain(|_, l| l.until_ms > now_ms);
            leases.keys().copied().collect()
        };
        let rows = self
            .readers
            .with(move |c| {
                // An entry may go when it is due and no earlier version of the same record is still
                // pending: versions of one record arrive in order (by version, not id: a version
                // held back behind one out from the log has a lower id than the row that one
                // becomes when its attempt fails). Walked in id order and stopped at
                // the limit: left to itself, the planner takes the due index for the due range and
                // sorts every due entry of the backlog on each claim (deliveries fell to ~20/s per
                // subscription behind a growing backlog).
                let sql = format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox o INDEXED BY outbox_pending
                     WHERE o.subscription = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
                       AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.subscription = o.subscription
                           AND p.record_type = o.record_type AND p.key = o.key AND p.state = 'pending'
                           AND (p.version < o.version OR (p.version = o.version AND p.id < o.id)))
                       AND NOT EXISTS (SELECT 1 FROM records r INDEXED BY records_by_key
                           WHERE r.type = o.record_type AND r.key = o.key AND r.version < o.version
                             AND r.audit_seq > ?4 AND (r.routes & ?5) != 0)
                     ORDER BY o.id LIMIT ?3"
                );
                let fetch = limit + (leased.len() + busy.len()) as u32;
                let rows = outbox_rows(c, &sql, &[&sub, &now_ms, &fetch, &behind.position, &behind.bit])?;
                Ok(rows
                    .into_iter()
                    .filter(|r| !leased.contains(&r.id) && !busy.contains(&(r.record_type.clone(), r.key.clone())))
                    .take(limit as usize)
                    .collect::<Vec<_>>())
            })
            .await?;
        // A row may come from a commit not flushed yet (a version held back, say): it goes out
        // only once that is on disk (`sync.rs`).
        if !rows.is_empty() {
            self.durability.settled().await?;
        }
        let mut leases = lock(&self.leases);
        for r in &rows {
            leases.insert(r.id, lease.clone());
        }
        Ok(rows)
    }

    async fn next_due_rows(&self, subscription: &str) -> Result<Option<i64>, StoreError> {
        let sub = subscription.to_owned();
        let leased: std::collections::HashMap<i64, i64> =
            lock(&self.leases).iter().map(|(id, l)| (*id, l.until_ms)).collect();
        self.readers
            .with(move |c| {
                // Oldest due first; a leased entry counts from the end of its lease. Past the
                // leased ones, the first that is not leased bounds the answer.
                let mut stmt = c.prepare_cached(
                    "SELECT o.id, o.next_attempt_at FROM outbox o
                     WHERE o.subscription = ?1 AND o.state = 'pending'
                       AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.subscription = o.subscription
                           AND p.record_type = o.record_type AND p.key = o.key AND p.state = 'pending'
                           AND (p.version < o.version OR (p.version = o.version AND p.id < o.id)))
                     ORDER BY o.next_attempt_at LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![sub, leased.len() as i64 + 1], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut due: Option<i64> = None;
                for row in rows {
                    let (id, at) = row?;
                    let at = leased.get(&id).map_or(at, |until| at.max(*until));
                    due = Some(due.map_or(at, |d| d.min(at)));
                }
                Ok(due)
            })
            .await
    }

    async fn expire_rows(
        &self,
        subscription: &str,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        let sub = subscription.to_owned();
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            let sql = format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.subscription = ?1 AND o.state = 'pending' AND o.created_at < ?2
                 ORDER BY o.id LIMIT 1000"
            );
            let rows = outbox_rows(tx.conn, &sql, &[&sub, &cutoff_ms])?;
            for row in &rows {
                tx.conn
                    .prepare_cached("UPDATE outbox SET state = 'dead', settled_at = ?2, last_error = ?3 WHERE id = ?1")?
                    .execute(params![row.id, tx.now_ms, error])?;
                let entry = expired_entry(tx, row, &error, &template)?;
                tx.audit(entry)?;
            }
            Ok(Done::Count(rows.len() as u64))
        });
        self.count(op).await
    }

    /// The records versions not merged into `subjects` yet name this subject in, as a JSON
    /// array of `[type, key]` for the statement.
    fn tail_candidates(&self, subject_hash: &str) -> Result<String, StoreError> {
        serde_json::to_string(&self.tail.candidates(subject_hash)).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    async fn send(&self, ops: Vec<WriteFn>, isolated: bool) -> JobResult {
        let tx = lock(&self.tx).clone().ok_or(StoreError::WriterGone)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Job { ops, reply, isolated }).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Brings a database written by an earlier release to `SCHEMA_VERSION` in one transaction (a
/// failed upgrade leaves it as it was), and refuses one written by a newer release.
fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Mismatch(format!(
            "the database has schema version {version}, written by a newer release; this one knows up to {SCHEMA_VERSION}"
        )));
    }
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'records'", [], |r| {
            r.get(0)
        })?;
    if tables == 0 || version >= SCHEMA_VERSION {
        return Ok(());
    }
    // Releases before schema 7 created their tables additively and all had schema 6's
    // `records` (WITHOUT ROWID, beside `latest`), so they take the same first step.
    let records: i64 = conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
    tracing::info!(from = version, to = SCHEMA_VERSION, records, "upgrading the database schema");
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let steps = UPGRADES.iter().filter(|(to, _)| *to > version).map(|(_, sql)| *sql);
    let done = steps.into_iter().try_for_each(|sql| conn.execute_batch(sql));
    if let Err(e) = done.and_then(|()| conn.execute_batch("COMMIT")) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    Ok(())
}

/// What the writer does after a commit: give the subject index's tail its versions, hand its
/// replies to the syncer (whose flushes it must know of) and keep the log within its bound.
struct AfterCommit<'a> {
    /// The subject index's tail, which takes the group's versions before their replies go.
    tail: &'a Tail,
    syncer: &'a Syncer,
    durability: &'a Durability,
    wal: WalWriter,
}

fn writer_loop(
    conn: &Connection,
    mut rx: mpsc::Receiver<Job>,
    mut head: Head,
    keys: &HubKeys,
    opts: SqliteOptions,
    stats: &Stats,
    mut after: AfterCommit<'_>,
) {
    let tail = after.tail;
    let mut merger = Merger::default();
    let merge_at = opts.subject_merge_at.max(1);
    while let Some(first) = rx.blocking_recv() {
        let (jobs, n) = super::gather(first, &mut rx, opts.group_commit_max, |j: &Job| j.ops.len());
        if after.durability.failed() {
            // What is committed from here on could never be known durable.
            for job in jobs {
                let _ = job.reply.send(Err(sync::lost()));
            }
            continue;
        }
        // Taken before BEGIN, so that a claim which sees this group's rows waits for its flush.
        let number = after.durability.announce();
        let mut replies = Vec::with_capacity(jobs.len());
        let mut results = Vec::with_capacity(jobs.len());
        let mut tentative = head.clone();
        let now = chrono::Utc::now();
        let time = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let now_ms = now.timestamp_millis();
        // An operation without a savepoint that failed: the group cannot commit (its partial
        // writes are in the transaction), so it is rolled back whole.
        let mut aborted: Option<(usize, StoreError)> = None;
        let mut staged = Vec::new();
        let mut slice = None;
        let outcome = (|| -> Result<(), rusqlite::Error> {
            // Prepared once: execute_batch would parse these statements for every operation.
            let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
            exec("BEGIN IMMEDIATE")?;
            for job in jobs {
                let mut done = Vec::with_capacity(job.ops.len());
                replies.push(job.reply);
                if aborted.is_some() {
                    continue;
                }
                for op in job.ops {
                    if job.isolated {
                        exec("SAVEPOINT op")?;
                    }
                    let mut tx = Tx {
                        conn,
                        head: tentative.clone(),
                        keys,
                        every: opts.checkpoint_every,
                        time: &time,
                        now_ms,
                        staged: Vec::new(),
                    };
                    match op(&mut tx) {
                        Ok(d) => {
                            if job.isolated {
                                exec("RELEASE op")?;
                            }
                            tentative = tx.head;
                            staged.append(&mut tx.staged);
                            done.push(Ok(d));
                        }
                        Err(e) if job.isolated => {
                            exec("ROLLBACK TO op")?;
                            exec("RELEASE op")?;
                            done.push(Err(e));
                        }
                        Err(e) => {
                            aborted = Some((replies.len() - 1, e));
                            break;
                        }
                    }
                }
                results.push(done);
            }
            if aborted.is_some() {
                return conn.execute_batch("ROLLBACK");
            }
            // The next slice of the subject index's merge, when one is due, in its own
            // savepoint: a failure there is the merge's (tried again with the next group), not
            // the publishes'.
            if merger.due(tail, merge_at) {
                exec("SAVEPOINT merge")?;
                let keys = staged.iter().map(|v: &Staged| v.subjects.len()).sum();
                match merger.step(conn, tail, merge_at, keys) {
                    Ok(s) => {
                        exec("RELEASE merge")?;
                        slice = s;
                    }
                    Err(e) => {
                        exec("ROLLBACK TO merge")?;
                        exec("RELEASE merge")?;
                        tracing::error!(error = %crate::mask::scrub(&e.to_string()), "merging the subject index failed; it is tried again with the next group");
                    }
                }
            }
            exec("COMMIT")
        })();
        match (outcome, aborted) {
            (Ok(()), None) => {
                head = tentative;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.operations.fetch_add(n as u64, Ordering::Relaxed);
                // Before any receipt: a lookup finds what a receipt was given for (`subjects.rs`).
                tail.add(staged);
                if let Some(slice) = slice {
                    merger.committed(tail, slice);
                }
                // Answered once the syncer has flushed it; meanwhile the next group is written.
                after.syncer.hand(number, head.seq, replies.into_iter().zip(results).collect());
                // After the hand-over: a restart of the log delays the next group, not this one.
                after.wal.committed(conn);
            }
            (Ok(()), Some((failed, e))) => {
                tracing::error!(error = %crate::mask::scrub(&e.to_string()), operations = n, "a write failed inside a group commit; the group was rolled back");
                let errors = super::group_failure(replies.len(), Some(failed), e);
                for (reply, err) in replies.into_iter().zip(errors) {
                    let _ = reply.send(Err(err));
                }
                after.syncer.hand(number, head.seq, Vec::new());
            }
            (Err(e), _) => {
                let _ = conn.execute_batch("ROLLBACK");
                let full = e.sqlite_error_code() == Some(ErrorCode::DiskFull);
                tracing::error!(error = %crate::mask::scrub(&e.to_string()), operations = n, "group commit failed; nothing of it was stored");
                for reply in replies {
                    let err = if full { StoreError::Full } else { StoreError::Corrupt(format!("commit failed: {e}")) };
                    let _ = reply.send(Err(err));
                }
                after.syncer.hand(number, head.seq, Vec::new());
            }
        }
    }
    stats.running.store(false, Ordering::SeqCst);
}

/// Ends one attempt: the outbox row's new state and, when it changed, its audit entry.
fn settle_op(id: i64, settlement: Settlement, audit: Option<NewEntry>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let changed = match &settlement {
            Settlement::Delivered => tx
                .conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, settled_at = ?2, last_error = NULL
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, tx.now_ms])?,
            Settlement::Retry { at_ms, error } => tx
                .conn
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, at_ms, error])?,
            Settlement::Dead { error } => tx
                .conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, settled_at = ?2, last_error = ?3
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, tx.now_ms, error])?,
        };
        if changed > 0 {
            if let Some(entry) = audit {
                tx.audit(entry)?;
            }
        }
        Ok(Done::Count(changed as u64))
    })
}

/// Stores a version; `bits` are the cursors it is routed to beside the outbox rows of `v.routes`.
fn publish_op(v: NewVersion, bits: i64) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let conn = tx.conn;
        if let Some((idem_key, request_digest)) = &v.idempotency {
            let seen: Option<(String, String)> = conn
                .prepare_cached(
                    "SELECT request_digest, receipt FROM idempotency WHERE publisher = ?1 AND idem_key = ?2",
                )?
                .query_row(params![v.publisher, idem_key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((digest, receipt)) = seen {
                let outcome = if digest == *request_digest {
                    Published::Replayed(serde_json::from_str(&receipt).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                } else {
                    Published::Conflict
                };
                return Ok(Done::Published(outcome));
            }
        }
        // From the index alone: the record's row is not read.
        let previous: Option<i64> = conn
            .prepare_cached("SELECT version FROM records WHERE type = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1")?
            .query_row(params![v.record_type, v.key], |r| r.get(0))
            .optional()?;
        if v.first_only && previous.is_some() {
            return Ok(Done::NotFirst);
        }
        let version = previous.map_or(1, |n| n as u64 + 1);
        let mut entry = v.audit;
        entry.record_version = Some(version);
        let e = tx.audit(entry)?;
        let time = tx.time;
        let subjects = serde_json::to_string(&v.subjects).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        conn.prepare_cached(
            "INSERT INTO records (audit_seq, type, key, version, schema_version, digest, publisher, received_at, subjects, payload, routes, trace)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            e.seq as i64,
            v.record_type,
            v.key,
            version as i64,
            v.schema_version,
            v.digest,
            v.publisher,
            time,
            subjects,
            v.canonical,
            (bits != 0).then_some(bits),
            v.trace
        ])?;
        // The subject index is written later, in sorted batches (`subjects.rs`).
        tx.staged.push(Staged {
            seq: e.seq as i64,
            record_type: v.record_type.clone(),
            key: v.key.clone(),
            subjects: v.subjects,
        });
        for sub in &v.routes {
            insert_outbox(tx, sub, &v.record_type, &v.key, version)?;
        }
        let receipt = Receipt {
            record_type: v.record_type,
            key: v.key,
            version,
            digest: v.digest,
            audit_seq: e.seq,
            received_at: time.to_owned(),
            routed: v.routes.len() as u64 + u64::from(bits.count_ones()),
        };
        if let Some((idem_key, request_digest)) = &v.idempotency {
            let text = serde_json::to_string(&receipt).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO idempotency (publisher, idem_key, request_digest, receipt, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![v.publisher, idem_key, request_digest, text, time])?;
        }
        Ok(Done::Published(Published::Created(receipt)))
    })
}

fn insert_outbox(
    tx: &Tx<'_>,
    subscription: &str,
    record_type: &str,
    key: &str,
    version: u64,
) -> Result<(), StoreError> {
    tx.conn
        .prepare_cached(
            "INSERT INTO outbox (subscription, record_type, key, version, event_id, state, attempts, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
        )?
        .execute(params![
            subscription,
            record_type,
            key,
            version as i64,
            super::event_id(subscription, record_type, key, version),
            tx.now_ms
        ])?;
    Ok(())
}

/// Pending outbox rows of a feed after the row `after`, in id order.
fn feed_rows(c: &Connection, subscription: &str, after: i64, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
    let sql = format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.subscription = ?1 AND o.state = 'pending' AND o.id > ?2
         ORDER BY o.id LIMIT ?3"
    );
    outbox_rows(c, &sql, &[&subscription, &after, &limit])
}

/// The audit entry of an entry dead-lettered by age: `template` with the record's type, key,
/// version and subjects and the entry's subscription, event id and `error`.
fn expired_entry(tx: &Tx<'_>, row: &OutboxRow, error: &str, template: &NewEntry) -> Result<NewEntry, StoreError> {
    let subjects: Option<String> = tx
        .conn
        .prepare_cached("SELECT subjects FROM records WHERE type = ?1 AND key = ?2 AND version = ?3")?
        .query_row(params![row.record_type, row.key, row.version as i64], |r| r.get(0))
        .optional()?;
    Ok(NewEntry {
        record_type: Some(row.record_type.clone()),
        record_key: Some(row.key.clone()),
        record_version: Some(row.version),
        subjects: subjects.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
        detail: Some(serde_json::json!({
            "subscription": row.subscription, "event_id": row.event_id, "reason": error,
        })),
        ..template.clone()
    })
}

/// RFC 3339 time a week before `now_ms`: how long schedule claims are kept.
pub(crate) fn week_before(now_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(now_ms - 7 * 86_400_000)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn check_runs(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<CheckRun>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(CheckRun {
            name: r.get(0)?,
            kind: r.get(1)?,
            started: r.get(2)?,
            duration_ms: r.get::<_, i64>(3)? as u64,
            status: r.get(4)?,
            summary: r.get(5)?,
            measurements: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Value::Null),
            trigger: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn outbox_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        subscription: r.get(1)?,
        record_type: r.get(2)?,
        key: r.get(3)?,
        version: r.get::<_, i64>(4)? as u64,
        event_id: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        created_at: r.get(9)?,
        last_error: r.get(10)?,
    })
}

fn outbox_rows(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, outbox_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn append_entry(
    conn: &Connection,
    entry: NewEntry,
    head: &Head,
    keys: &HubKeys,
    every: u64,
    time: &str,
) -> Result<(Entry, Head), StoreError> {
    let e = seal(keys.suite(), entry, head.seq + 1, time.to_owned(), &head.digest);
    let subjects = serde_json::to_string(&e.subjects).map_err(|x| StoreError::Corrupt(x.to_string()))?;
    let detail = e.detail.as_ref().map(|d| d.to_string());
    conn.prepare_cached(
        "INSERT INTO audit (seq, time, actor, action, record_type, record_key, record_version, subjects, purpose, outcome, detail, prev, digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        e.seq as i64,
        e.time,
        e.actor,
        e.action,
        e.record_type,
        e.record_key,
        e.record_version.map(|v| v as i64),
        subjects,
        e.purpose,
        e.outcome,
        detail,
        e.prev,
        e.digest
    ])?;
    // An entry about a stored version is found through its record (see `audit_by_subject`).
    if !e.names_a_version() {
        for s in &e.subjects {
            conn.prepare_cached("INSERT OR IGNORE INTO audit_subjects (subject_hash, seq) VALUES (?1, ?2)")?
                .execute(params![s, e.seq as i64])?;
        }
    }
    if e.seq.is_multiple_of(every) {
        let cp = keys.checkpoint(e.seq, &e.digest, time.to_owned());
        conn.prepare_cached(
            "INSERT INTO checkpoints (seq, digest, signature, time, suite) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![cp.seq as i64, cp.digest, cp.signature, cp.time, cp.suite.map(|s| s.as_str())])?;
    }
    let h = Head { seq: e.seq, digest: e.digest.clone() };
    Ok((e, h))
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RecordVersion, String, String)> {
    Ok((
        RecordVersion {
            record_type: r.get(0)?,
            key: r.get(1)?,
            version: r.get::<_, i64>(2)? as u64,
            schema_version: r.get(3)?,
            payload: serde_json::Value::Null,
            digest: r.get(5)?,
            publisher: r.get(6)?,
            received_at: r.get(7)?,
            audit_seq: r.get::<_, i64>(8)? as u64,
            subjects: Vec::new(),
            trace: r.get(10)?,
        },
        r.get(4)?,
        r.get(9)?,
    ))
}

fn finish_record((mut v, payload, subjects): (RecordVersion, String, String)) -> Result<RecordVersion, StoreError> {
    v.payload = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(format!("record payload: {e}")))?;
    v.subjects = serde_json::from_str(&subjects).map_err(|e| StoreError::Corrupt(format!("record subjects: {e}")))?;
    Ok(v)
}

fn records(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<RecordVersion>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, record_from_row)?;
    rows.map(|r| finish_record(r?)).collect()
}

type RawEntry = (Entry, String, Option<String>);

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        Entry {
            seq: r.get::<_, i64>(0)? as u64,
            time: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            record_type: r.get(4)?,
            record_key: r.get(5)?,
            record_version: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            subjects: Vec::new(),
            purpose: r.get(8)?,
            outcome: r.get(9)?,
            detail: None,
            prev: r.get(11)?,
            digest: r.get(12)?,
        },
        r.get(7)?,
        r.get(10)?,
    ))
}

fn finish_entry((mut e, subjects, detail): RawEntry) -> Result<Entry, String> {
    e.subjects = serde_json::from_str(&subjects).map_err(|x| format!("subjects cannot be decoded: {x}"))?;
    e.detail =
        detail.map(|d| serde_json::from_str(&d)).transpose().map_err(|x| format!("detail cannot be decoded: {x}"))?;
    Ok(e)
}

fn entries(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, entry_from_row)?;
    rows.map(|r| finish_entry(r?).map_err(StoreError::Corrupt)).collect()
}

/// Whether the `checkpoints` table has its `suite` column (schema 13 on).
pub(crate) fn checkpoints_name_a_suite(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT COUNT(*) FROM pragma_table_info('checkpoints') WHERE name = 'suite'", [], |r| {
        r.get::<_, i64>(0).map(|n| n > 0)
    })
}

/// Verifies the audit chain held by `conn`, reporting each checked entry's seq to `progress`.
pub(crate) fn verify_with(
    conn: &Connection,
    key: crate::ledger::keys::PublicKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
    verify_from(conn, key, None, progress)
}

/// Verifies the chain from the genesis, or only what follows `anchor` (a checkpoint an earlier pass
/// verified) after re-checking the anchor entry and its signature.
fn verify_from(
    conn: &Connection,
    key: crate::ledger::keys::PublicKey,
    anchor: Option<&Anchor>,
    progress: &mut dyn FnMut(u64),
) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
    let from = anchor.map_or(0, |a| a.seq) as i64;
    // A database of an earlier release (a backup, a stopped data directory) is verified as it is,
    // without an upgrade: before schema 13 checkpoints name no suite.
    let suite = if checkpoints_name_a_suite(conn)? { "suite" } else { "NULL" };
    let checkpoints = conn
        .prepare(&format!(
            "SELECT seq, digest, signature, time, {suite} FROM checkpoints WHERE seq >= ?1 ORDER BY seq"
        ))?
        .query_map([from], |r| {
            let cp = Checkpoint {
                seq: r.get::<_, i64>(0)? as u64,
                digest: r.get(1)?,
                signature: r.get(2)?,
                time: r.get(3)?,
                suite: None,
            };
            Ok((cp, r.get::<_, Option<String>>(4)?))
        })?
        .map(|row| {
            let (cp, suite) = row?;
            let suite = crate::ledger::suite::stored(suite).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(Checkpoint { suite, ..cp })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut walk = Walk::new(key, checkpoints, anchor);
    // In pages, each its own read transaction: one statement over the whole chain would hold a
    // snapshot for as long as the walk takes, and with it the write-ahead log (see `wal`).
    const PAGE: i64 = 10_000;
    let mut stmt =
        conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq >= ?1 ORDER BY a.seq LIMIT {PAGE}"))?;
    let mut next = from;
    loop {
        let mut rows = stmt.query([next])?;
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            let raw = match entry_from_row(row) {
                Ok(raw) => raw,
                Err(e) => {
                    let seq = row.get::<_, i64>(0).map(|s| s as u64).unwrap_or(0);
                    return Ok(Err(ChainBroken { seq, reason: format!("row cannot be read: {e}") }));
                }
            };
            let seq = raw.0.seq;
            next = seq as i64 + 1;
            let entry = match finish_entry(raw) {
                Ok(e) => e,
                Err(reason) => return Ok(Err(ChainBroken { seq, reason })),
            };
            match walk.push(&entry) {
                Ok(true) => progress(seq),
                Ok(false) => {}
                Err(b) => return Ok(Err(b)),
            }
        }
        if read < PAGE {
            return Ok(walk.finish());
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn publish(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError> {
        let cursors = self.cursors();
        let ops = versions
            .into_iter()
            .map(|mut v| {
                // Routes to a cursor are a bit of the record's row; the others get outbox rows.
                let bits = cursors.take_bits(&v.record_type, &mut v.routes);
                publish_op(v, bits)
            })
            .collect();
        let done = self.send(ops, false).await?;
        Ok(done
            .into_iter()
            .map(|d| match d {
                Ok(Done::Published(p)) => Ok(p),
                Ok(Done::NotFirst) => Err(StoreError::NotFirst),
                Ok(_) => Err(StoreError::Corrupt("writer answered a publish with something else".into())),
                Err(e) => Err(e),
            })
            .collect())
    }

    async fn audit(&self, entry: NewEntry) -> Result<Audited, StoreError> {
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| Ok(Done::Audited(Audited { seq: tx.audit(entry)?.seq })));
        match self.one(op).await? {
            Done::Audited(a) => Ok(a),
            _ => Err(StoreError::Corrupt("writer gave no audit receipt".into())),
        }
    }

    async fn latest(&self, record_type: &str, key: &str) -> Result<Option<RecordVersion>, StoreError> {
        let (t, k) = (record_type.to_owned(), key.to_owned());
        self.readers
            .with(move |c| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = ?1 AND r.key = ?2 ORDER BY r.version DESC LIMIT 1"
                );
                Ok(records(c, &sql, &[&t, &k])?.pop())
            })
            .await
    }

    async fn history(&self, record_type: &str, key: &str) -> Result<Vec<RecordVersion>, StoreError> {
        let (t, k) = (record_type.to_owned(), key.to_owned());
        self.readers
            .with(move |c| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = ?1 AND r.key = ?2 ORDER BY r.version"
                );
                records(c, &sql, &[&t, &k])
            })
            .await
    }

    async fn by_subject(&self, subject_hash: &str) -> Result<Vec<RecordVersion>, StoreError> {
        let h = subject_hash.to_owned();
        // The tail before the table (`subjects.rs`).
        let tail = self.tail_candidates(&h)?;
        self.readers
            .with(move |c| {
                // The index names every record a version named; the latest version decides.
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM (
                         SELECT type, key FROM subjects WHERE subject_hash = ?1
                         UNION SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]') FROM json_each(?2) j
                     ) s
                     JOIN records r ON r.type = s.type AND r.key = s.key
                       AND r.version = (SELECT MAX(m.version) FROM records m WHERE m.type = s.type AND m.key = s.key)
                     WHERE instr(r.subjects, '\"' || ?1 || '\"') > 0 ORDER BY r.type, r.key"
                );
                records(c, &sql, &[&h, &tail])
            })
            .await
    }

    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        self.readers
            .with(move |c| {
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq > ?1 ORDER BY a.seq LIMIT ?2");
                entries(c, &sql, &[&(after as i64), &limit])
            })
            .await
    }

    async fn audit_by_subject_before(
        &self,
        subject_hash: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError> {
        let h = subject_hash.to_owned();
        let before = before.min(i64::MAX as u64) as i64;
        let tail = self.tail_candidates(&h)?;
        self.readers
            .with(move |c| {
                // Entries about no stored version by their own keys; entries about a version
                // through the records that ever named the person, checked against the entry's
                // own subjects (a record's other versions may name other people).
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq IN (
                         SELECT x.seq FROM audit_subjects x WHERE x.subject_hash = ?1
                         UNION
                         SELECT e.seq FROM (
                             SELECT type, key FROM subjects WHERE subject_hash = ?1
                             UNION SELECT type, key FROM subjects_past WHERE subject_hash = ?1
                             UNION SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]') FROM json_each(?4) j
                         ) r JOIN audit e ON e.record_type = r.type AND e.record_key = r.key AND e.record_version IS NOT NULL
                         WHERE instr(e.subjects, '\"' || ?1 || '\"') > 0
                     ) AND a.seq < ?3 ORDER BY a.seq DESC LIMIT ?2"
                );
                entries(c, &sql, &[&h, &limit, &before, &tail])
            })
            .await
    }

    async fn verify_audit(&self) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        let key = self.keys.public_key();
        self.readers.with(move |c| verify_with(c, key, &mut |_| {})).await
    }

    async fn verify_audit_since(&self, anchor: Anchor) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        let key = self.keys.public_key();
        self.readers.with(move |c| verify_from(c, key, Some(&anchor), &mut |_| {})).await
    }

    async fn version(&self, record_type: &str, key: &str, version: u64) -> Result<Option<RecordVersion>, StoreError> {
        let (t, k, v) = (record_type.to_owned(), key.to_owned(), version as i64);
        self.readers
            .with(move |c| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = ?1 AND r.key = ?2 AND r.version = ?3"
                );
                Ok(records(c, &sql, &[&t, &k, &v])?.pop())
            })
            .await
    }

    async fn versions_since(
        &self,
        record_type: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<RecordVersion>, StoreError> {
        let t = record_type.to_owned();
        self.readers
            .with(move |c| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = ?1 AND r.audit_seq >= ?2 ORDER BY r.audit_seq LIMIT ?3"
                );
                records(c, &sql, &[&t, &(from_seq as i64), &limit])
            })
            .await
    }

    async fn serve_from_log(&self, subscriptions: Vec<FromLog>) -> Result<(), StoreError> {
        self.register(subscriptions).await
    }

    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        limit: u32,
        lease: Lease,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        match self.cursor(subscription) {
            Some(c) => self.claim_log(c, now_ms, limit, lease).await,
            None => {
                self.claim_rows(subscription, cursor::Behind::default(), now_ms, limit, &lease, HashSet::new()).await
            }
        }
    }

    async fn next_due(&self, subscription: &str) -> Result<Option<i64>, StoreError> {
        let rows = self.next_due_rows(subscription).await?;
        let log = match self.cursor(subscription) {
            Some(c) => self.next_due_log(&c).await?,
            None => None,
        };
        Ok(cursor::earliest(rows, log))
    }

    async fn settle(&self, id: i64, settlement: Settlement, audit: Option<NewEntry>) -> Result<(), StoreError> {
        self.settle_many(vec![(id, settlement, audit)]).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let rows = {
            let mut leases = lock(&self.leases);
            let before = leases.len();
            leases.retain(|_, l| l.owner != owner);
            (before - leases.len()) as u64
        };
        Ok(rows + cursor::release(&self.cursors(), owner).await)
    }

    async fn settle_many(&self, mut settlements: Vec<(i64, Settlement, Option<NewEntry>)>) -> Result<(), StoreError> {
        // One job, without a savepoint each: a settlement fails only with the database, and then
        // its group is rolled back whole and the entries go again.
        let (mut ops, settling) = self.settle_log(&mut settlements).await;
        let ids: Vec<i64> = settlements.iter().map(|(id, _, _)| *id).collect();
        ops.extend(settlements.into_iter().map(|(id, s, audit)| settle_op(id, s, audit)));
        let result = self.send(ops, false).await.and_then(|done| done.into_iter().try_for_each(|d| d.map(|_| ())));
        cursor::settled(settling, result.is_ok()).await;
        if result.is_ok() {
            let mut leases = lock(&self.leases);
            for id in ids {
                leases.remove(&id);
            }
        }
        result
    }

    async fn expire(
        &self,
        subscription: &str,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        let rows = self.expire_rows(subscription, cutoff_ms, error.clone(), template.clone()).await?;
        match self.cursor(subscription) {
            Some(c) => Ok(rows + self.expire_log(&c, cutoff_ms, error, template).await?),
            None => Ok(rows),
        }
    }

    async fn enqueue(
        &self,
        subscription: &str,
        versions: Vec<(String, String, u64)>,
        audit: NewEntry,
    ) -> Result<u64, StoreError> {
        let sub = subscription.to_owned();
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            for (t, k, v) in &versions {
                insert_outbox(tx, &sub, t, k, *v)?;
            }
            tx.audit(audit)?;
            Ok(Done::Count(versions.len() as u64))
        });
        self.count(op).await
    }

    async fn feed(&self, subscription: &str, after: FeedCursor, limit: u32) -> Result<FeedPage, StoreError> {
        if let Some(c) = self.feed_log_cursor(subscription) {
            return self.feed_log(&c, after, limit).await;
        }
        let sub = subscription.to_owned();
        let rows = self.readers.with(move |c| feed_rows(c, &sub, after.rows, limit)).await?;
        Ok(FeedPage { next: after.past(&rows), rows })
    }

    async fn feed_cursor(&self, subscription: &str) -> Result<FeedCursor, StoreError> {
        let sub = subscription.to_owned();
        let rows = self
            .readers
            .with(move |c| {
                Ok(c.prepare_cached("SELECT acked FROM feed_cursor WHERE subscription = ?1")?
                    .query_row(params![sub], |r| r.get::<_, i64>(0))
                    .optional()?
                    .unwrap_or(0))
            })
            .await?;
        let log = match self.feed_log_cursor(subscription) {
            Some(c) => Some(c.state.lock().await.durable),
            None => None,
        };
        Ok(FeedCursor { rows, log })
    }

    async fn ack(&self, subscription: &str, cursor: FeedCursor) -> Result<u64, StoreError> {
        let log = self.feed_log_cursor(subscription);
        let op = log::ack_op(subscription.to_owned(), cursor, log.as_ref().map(|c| (c.record_type.clone(), c.bit())));
        let Done::Acked(n, position) = self.one(op).await? else {
            return Err(StoreError::Corrupt("writer gave no acknowledgement".into()));
        };
        if let (Some(c), Some(position)) = (log, position) {
            let mut st = c.state.lock().await;
            st.durable = st.durable.max(position);
            st.scanned = st.durable;
        }
        Ok(n)
    }

    async fn deliveries(
        &self,
        state: &str,
        subscription: Option<String>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // The state is written into the statement, not bound: only a literal lets the planner use
        // the partial index of that state.
        let state = match state {
            "pending" => "pending",
            "dead" => "dead",
            _ => return Ok(Vec::new()),
        };
        let log = state == "pending";
        let one = subscription.clone();
        let mut rows = self
            .readers
            .with(move |c| {
                let all = format!("SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.state = '{state}'");
                match &subscription {
                    Some(s) => outbox_rows(
                        c,
                        &format!("{all} AND o.subscription = ?1 ORDER BY o.id LIMIT ?2"),
                        &[s as &dyn rusqlite::ToSql, &limit],
                    ),
                    None => outbox_rows(c, &format!("{all} ORDER BY o.id LIMIT ?1"), &[&limit]),
                }
            })
            .await?;
        if log {
            cursor::add_pending(self, &self.cursors(), one.as_deref(), limit, &mut rows).await?;
        }
        Ok(rows)
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>, StoreError> {
        let mut out = self
            .readers
            .with(move |c| {
                // One pass over each partial index (a state IN (...) would scan the whole table).
                let mut stmt = c.prepare_cached(
                    "SELECT subscription, 'pending', COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'
                     GROUP BY subscription
                     UNION ALL
                     SELECT subscription, 'dead', COUNT(*), NULL FROM outbox WHERE state = 'dead' GROUP BY subscription
                     ORDER BY 1, 2 DESC",
                )?;
                let mut out: Vec<DeliveryCounts> = Vec::new();
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })?;
                for row in rows {
                    let (sub, state, n, oldest) = row?;
                    if out.last().is_none_or(|c| c.subscription != sub) {
                        out.push(DeliveryCounts { subscription: sub, ..Default::default() });
                    }
                    if let Some(c) = out.last_mut() {
                        if state == "pending" {
                            c.pending = n as u64;
                            c.oldest_pending_ms = oldest;
                        } else {
                            c.dead = n as u64;
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        for c in self.cursors().by_name.values() {
            let (pending, oldest) = self.count_log(c).await?;
            cursor::add_backlog(&mut out, &c.name, pending, oldest);
        }
        out.sort_by(|a, b| a.subscription.cmp(&b.subscription));
        Ok(out)
    }

    async fn retry_dead(&self, id: i64, audit: NewEntry) -> Result<Option<String>, StoreError> {
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            let sub: Option<String> = tx
                .conn
                .prepare_cached("SELECT subscription FROM outbox WHERE id = ?1 AND state = 'dead'")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            if sub.is_some() {
                tx.conn
                    .prepare_cached(
                        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2, last_error = NULL,
                         settled_at = NULL WHERE id = ?1",
                    )?
                    .execute(params![id, tx.now_ms])?;
                tx.audit(audit)?;
            }
            Ok(Done::Subscription(sub))
        });
        match self.one(op).await? {
            Done::Subscription(s) => Ok(s),
            _ => Err(StoreError::Corrupt("writer gave no subscription".into())),
        }
    }

    async fn set_subscription(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<String>,
        audit: NewEntry,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            tx.conn
                .prepare_cached(
                    "INSERT INTO subscription_state (name, disabled, reason, since) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET disabled = excluded.disabled, reason = excluded.reason, since = excluded.since",
                )?
                .execute(params![name, disabled, reason, tx.time])?;
            tx.audit(audit)?;
            Ok(Done::Count(1))
        });
        self.count(op).await.map(|_| ())
    }

    async fn subscription_states(&self) -> Result<Vec<SubscriptionState>, StoreError> {
        self.readers
            .with(move |c| {
                let mut stmt =
                    c.prepare_cached("SELECT name, disabled, reason, since FROM subscription_state ORDER BY name")?;
                let rows = stmt.query_map([], |r| {
                    Ok(SubscriptionState { name: r.get(0)?, disabled: r.get(1)?, reason: r.get(2)?, since: r.get(3)? })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn transition(&self, mut write: CaseWrite) -> Result<CaseWritten, StoreError> {
        let bits = self.cursors().take_case_bits(&mut write);
        match self.one(cases::transition_op(write, bits)).await? {
            Done::Case(c) => Ok(c),
            _ => Err(StoreError::Corrupt("writer answered a case transition with something else".into())),
        }
    }

    async fn cases(&self, query: CaseQuery) -> Result<Vec<CaseRow>, StoreError> {
        self.readers.with(move |c| cases::cases(c, &query)).await
    }

    async fn publish_linked(
        &self,
        mut versions: Vec<NewVersion>,
        expect: Option<u64>,
    ) -> Result<super::Linked, StoreError> {
        let bits = self.cursors().take_all_bits(&mut versions);
        match self.one(linked::linked_op(versions, expect, bits)).await? {
            Done::Linked(l) => Ok(l),
            _ => Err(StoreError::Corrupt("writer answered a linked write with something else".into())),
        }
    }

    async fn routed(&self, record_type: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let (t, k) = (record_type.to_owned(), key.to_owned());
        self.readers
            .with(move |c| {
                let mut stmt = c.prepare_cached(&super::ROUTED_SQL.replace("$1", "?1").replace("$2", "?2"))?;
                let names = stmt.query_map(params![t, k], |r| r.get::<_, String>(0))?;
                Ok(names.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn audit_by_record(&self, record_type: &str, key: &str, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let (t, k) = (record_type.to_owned(), key.to_owned());
        self.readers
            .with(move |c| {
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.record_type = ?1 AND a.record_key = ?2
                     AND a.record_version IS NOT NULL ORDER BY a.seq DESC LIMIT ?3"
                );
                entries(c, &sql, &[&t, &k, &limit])
            })
            .await
    }

    async fn audit_between(
        &self,
        from: &str,
        to: &str,
        actor: &str,
        action: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError> {
        let (f, t, who, what) = (from.to_owned(), to.to_owned(), actor.to_owned(), action.to_owned());
        self.readers
            .with(move |c| {
                // The window's sequence range first (from the time index alone), then pages in
                // sequence order over it: ordering the window by time would sort it again for
                // every page. `+a.time` keeps the planner on the sequence.
                let (lo, hi): (Option<i64>, Option<i64>) = c
                    .prepare_cached("SELECT min(seq), max(seq) FROM audit WHERE time >= ?1 AND time < ?2")?
                    .query_row(params![f, t], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(Vec::new()) };
                let start = (after as i64).max(lo - 1);
                let sql = format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq > ?1 AND a.seq <= ?2 AND +a.time >= ?3
                     AND +a.time < ?4 AND a.actor = ?5 AND a.action = ?6 ORDER BY a.seq LIMIT ?7"
                );
                entries(c, &sql, &[&start, &hi, &f, &t, &who, &what, &limit])
            })
            .await
    }

    async fn case_counts(&self, today: &str) -> Result<super::CaseCounts, StoreError> {
        let today = today.to_owned();
        self.readers.with(move |c| cases::case_counts(c, &today)).await
    }

    async fn idempotent(&self, publisher: &str, key: &str) -> Result<Option<(String, Receipt)>, StoreError> {
        let (p, k) = (publisher.to_owned(), key.to_owned());
        self.readers.with(move |c| linked::idempotent(c, &p, &k)).await
    }

    async fn record_check(&self, run: CheckRun, keep_after: String) -> Result<(), StoreError> {
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            tx.conn
                .prepare_cached(
                    "INSERT INTO check_runs (name, kind, started, duration_ms, status, summary, measurements, trigger)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    run.name,
                    run.kind,
                    run.started,
                    run.duration_ms as i64,
                    run.status,
                    run.summary,
                    run.measurements.to_string(),
                    run.trigger
                ])?;
            let gone =
                tx.conn.prepare_cached("DELETE FROM check_runs WHERE started < ?1")?.execute(params![keep_after])?;
            Ok(Done::Count(gone as u64))
        });
        self.count(op).await.map(|_| ())
    }

    async fn last_check_started(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.readers
            .with(move |c| {
                Ok(c.prepare_cached("SELECT MAX(started) FROM check_runs WHERE name = ?1")?
                    .query_row(params![name], |r| r.get::<_, Option<String>>(0))?)
            })
            .await
    }

    async fn check_history(&self, name: &str, limit: u32) -> Result<Vec<CheckRun>, StoreError> {
        let name = name.to_owned();
        self.readers
            .with(move |c| {
                check_runs(c, &format!("SELECT {CHECK_COLUMNS} FROM check_runs WHERE name = ?1 ORDER BY started DESC, id DESC LIMIT ?2"), &[&name, &limit])
            })
            .await
    }

    async fn latest_checks(&self) -> Result<Vec<CheckRun>, StoreError> {
        self.readers
            .with(move |c| {
                check_runs(
                    c,
                    &format!(
                        "SELECT {CHECK_COLUMNS} FROM check_runs WHERE id IN (SELECT MAX(id) FROM check_runs GROUP BY name) ORDER BY name"
                    ),
                    &[],
                )
            })
            .await
    }

    async fn check_runs_between(&self, from: &str, to: &str) -> Result<Vec<CheckRun>, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.readers
            .with(move |c| {
                check_runs(
                    c,
                    &format!("SELECT {CHECK_COLUMNS} FROM check_runs WHERE started >= ?1 AND started < ?2 ORDER BY started, id"),
                    &[&from, &to],
                )
            })
            .await
    }

    async fn record_alert(&self, a: AlertRecord) -> Result<i64, StoreError> {
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            tx.conn
                .prepare_cached(
                    "INSERT INTO alerts (check_name, from_status, to_status, summary, time, flapping)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![a.check, a.from, a.to, a.summary, a.time, a.flapping])?;
            Ok(Done::Count(tx.conn.last_insert_rowid() as u64))
        });
        self.count(op).await.map(|id| id as i64)
    }

    async fn alert_attempt(&self, id: i64, error: Option<String>) -> Result<(), StoreError> {
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            let delivered = error.is_none().then(|| tx.time.to_owned());
            tx.conn
                .prepare_cached(
                    "UPDATE alerts SET attempts = attempts + 1, last_error = ?2,
                     delivered_at = COALESCE(?3, delivered_at) WHERE id = ?1",
                )?
                .execute(params![id, error, delivered])?;
            Ok(Done::Count(1))
        });
        self.count(op).await.map(|_| ())
    }

    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        self.readers
            .with(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, check_name, from_status, to_status, summary, time, flapping, delivered_at, attempts, last_error
                     FROM alerts ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit], |r| {
                    Ok(AlertRecord {
                        id: r.get(0)?,
                        check: r.get(1)?,
                        from: r.get(2)?,
                        to: r.get(3)?,
                        summary: r.get(4)?,
                        time: r.get(5)?,
                        flapping: r.get(6)?,
                        delivered_at: r.get(7)?,
                        attempts: r.get(8)?,
                        last_error: r.get(9)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn claim_slot(&self, check: &str, slot: &str) -> Result<bool, StoreError> {
        let (check, slot) = (check.to_owned(), slot.to_owned());
        let op: WriteFn = Box::new(move |tx: &mut Tx<'_>| {
            let n = tx
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO schedule_claims (check_name, slot, claimed_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![check, slot, tx.time])?;
            // Claims older than a week mark nothing a node could still ask about.
            tx.conn
                .prepare_cached("DELETE FROM schedule_claims WHERE claimed_at < ?1")?
                .execute(params![week_before(tx.now_ms)])?;
            Ok(Done::Count(n as u64))
        });
        self.count(op).await.map(|n| n > 0)
    }

    async fn audit_action_counts(&self, from: &str, to: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.readers
            .with(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT action, COUNT(*) FROM audit WHERE time >= ?1 AND time < ?2 GROUP BY action ORDER BY action",
                )?;
                let rows =
                    stmt.query_map(params![from, to], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            syncs: self.durability.syncs(),
            operations: self.stats.operations.load(Ordering::Relaxed),
            wal: Some(self.wal.stats()),
        }
    }

    fn is_ready(&self) -> bool {
        self.stats.running.load(Ordering::SeqCst) && lock(&self.tx).is_some() && !self.durability.failed()
    }

    async fn close(&self) {
        drop(lock(&self.tx).take());
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(lock(&self.tx).take());
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Action;

    fn test_options(group_commit_max: usize, read_connections: usize) -> SqliteOptions {
        SqliteOptions {
            group_commit_max,
            read_connections,
            checkpoint_every: 1000,
            max_wal_bytes: 256 << 20,
            subject_merge_at: SUBJECT_MERGE_AT,
        }
    }

    fn version(key: &str) -> NewVersion {
        NewVersion {
            record_type: "t".into(),
            key: key.into(),
            schema_version: 1,
            canonical: "{}".into(),
            digest: "d".into(),
            publisher: "p".into(),
            subjects: vec!["s".into()],
            idempotency: None,
            routes: vec!["sub".into()],
            first_only: false,
            audit: NewEntry::new("p", Action::Publish, "ok"),
            trace: None,
        }
    }

    /// Publishers each look their person up the moment their receipt comes, while the writer
    /// merges runs of the tail into the table beside their commits and lets them go: no lookup
    /// may fall between the two, and a correction that drops a person hides the record at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_receipt_is_found_by_its_subject_while_the_index_is_merged_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let opts = SqliteOptions { subject_merge_at: 16, ..test_options(32, 4) };
        let store = Arc::new(SqliteStore::open(dir.path(), keys.clone(), opts).unwrap());
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..150 {
                    let (key, person) = (format!("k{w}-{i}"), format!("person-{w}-{i}"));
                    let subjects = vec![person.clone(), "shared".into()];
                    let audit = NewEntry { subjects: subjects.clone(), ..NewEntry::new("p", Action::Publish, "ok") };
                    let v = NewVersion { subjects, audit, ..version(&key) };
                    store.publish(vec![v]).await.unwrap().pop().unwrap().unwrap();
                    let found = store.by_subject(&person).await.unwrap();
                    assert_eq!(found.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), [key.as_str()]);
                    if i % 10 == 0 {
                        // The person leaves the record: found no more, though the table keeps
                        // the key; still in their access log.
                        let v = NewVersion { subjects: vec!["shared".into()], ..version(&key) };
                        store.publish(vec![v]).await.unwrap().pop().unwrap().unwrap();
                        assert!(store.by_subject(&person).await.unwrap().is_empty(), "{key} still found");
                        assert_eq!(store.audit_by_subject(&person, 10).await.unwrap().len(), 1);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.by_subject("shared").await.unwrap().len(), 16 * 150);
        let merged: i64 = store
            .readers
            .with(|c| Ok(c.query_row("SELECT through FROM subjects_merged", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert!(merged > 0, "no run was merged");
        store.close().await;
        // After a restart the part not merged comes back from the log.
        let store = SqliteStore::open(dir.path(), keys, opts).unwrap();
        assert_eq!(store.by_subject("shared").await.unwrap().len(), 16 * 150);
        assert_eq!(store.by_subject("person-3-7").await.unwrap().len(), 1);
        assert!(store.by_subject("person-3-10").await.unwrap().is_empty());
        store.close().await;
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let conn = Connection::open(db_path(dir.path())).unwrap();
        conn.execute_batch("CREATE TABLE records (x); PRAGMA user_version = 99;").unwrap();
        drop(conn);
        let opts = test_options(8, 1);
        match SqliteStore::open(dir.path(), keys, opts) {
            Err(StoreError::Mismatch(m)) => assert!(m.contains("schema version 99"), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
        let conn = Connection::open(db_path(dir.path())).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, 99);
    }

    /// Holds the syncer's gate on a thread of its own until the returned sender is dropped.
    fn hold_flushes(store: &Arc<SqliteStore>) -> std::sync::mpsc::Sender<()> {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let durability = store.durability.clone();
        std::thread::spawn(move || {
            let _gate = durability.gate.lock().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        held_rx.recv().unwrap();
        release_tx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_receipt_and_no_delivery_read_is_given_before_the_log_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let opts = test_options(64, 2);
        let store = Arc::new(SqliteStore::open(dir.path(), keys, opts).unwrap());
        let sub = super::super::FromLog { name: "sub".into(), record_type: "t".into(), feed: false };
        store.serve_from_log(vec![sub]).await.unwrap();
        let cursor = store.cursor("sub").unwrap();
        let scanned = |store: Arc<SqliteStore>, cursor: Arc<cursor::Cursor>| async move {
            let (found, _) = cursor::Log::scan(&*store, &cursor, 0, 10).await.unwrap();
            found.iter().map(|s| s.row.key.clone()).collect::<Vec<_>>()
        };
        store.publish(vec![version("a")]).await.unwrap();
        let before = store.writer_stats();
        let release = hold_flushes(&store);
        let publish = tokio::spawn({
            let store = store.clone();
            async move { store.publish(vec![version("b")]).await }
        });
        // The writer does not wait for the flush: the version is committed, and a connection of
        // its own sees it.
        let raw = Connection::open(db_path(dir.path())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while raw.query_row("SELECT COUNT(*) FROM records WHERE key = 'b'", [], |r| r.get::<_, i64>(0)).unwrap() == 0 {
            assert!(std::time::Instant::now() < deadline, "the writer did not commit while the flush was held");
            tokio::task::yield_now().await;
        }
        // But its receipt does not come back, a delivery's scan of the log stops before it, and
        // a delivery's claim of rows waits (an audited read returns only after its own audit
        // entry, written later, is flushed, so it needs neither).
        assert_eq!(store.durability.flushed_seq(), 1);
        assert_eq!(scanned(store.clone(), cursor.clone()).await, ["a"], "a delivery saw an unflushed version");
        let claim_wait = tokio::spawn({
            let store = store.clone();
            async move { store.durability.settled().await }
        });
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), store.durability.settled()).await;
        assert!(early.is_err(), "a delivery's wait for an unflushed commit ended: {early:?}");
        assert!(!publish.is_finished(), "a receipt was given before the flush");
        assert!(!claim_wait.is_finished(), "a delivery's wait ended before the flush");
        drop(release);
        match publish.await.unwrap().unwrap().pop() {
            Some(Ok(Published::Created(r))) => assert_eq!(r.audit_seq, 2),
            other => panic!("{other:?}"),
        }
        claim_wait.await.unwrap().unwrap();
        assert_eq!(store.durability.flushed_seq(), 2);
        assert_eq!(scanned(store.clone(), cursor).await, ["a", "b"]);
        let after = store.writer_stats();
        assert!(after.syncs > before.syncs, "{before:?} {after:?}");
        store.close().await;
    }

    #[tokio::test]
    async fn a_publish_failing_after_its_first_writes_rolls_back_its_group_and_leaves_the_chain_whole() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(HubKeys::load_or_create(dir.path(), Default::default()).unwrap());
        let opts = test_options(64, 1);
        let store = SqliteStore::open(dir.path(), keys, opts).unwrap();
        // The database refuses the record row after the audit entry is in, as a full disk or a
        // broken page would: the operation has already written when it fails.
        Connection::open(db_path(dir.path()))
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.key = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let failed = store.publish(vec![version("a"), version("boom"), version("b")]).await;
        assert!(failed.is_err(), "{failed:?}");
        for key in ["a", "boom", "b"] {
            assert!(store.latest("t", key).await.unwrap().is_none(), "{key} was stored from a failed group");
        }
        // The next publish gets audit sequence 1: nothing of the failed group is in the chain.
        let done = store.publish(vec![version("c")]).await.unwrap();
        match &done[0] {
            Ok(Published::Created(r)) => assert_eq!(r.audit_seq, 1),
            other => panic!("{other:?}"),
        }
        let report = store.verify_audit().await.unwrap().unwrap();
        assert_eq!(report.entries, 1);
        store.close().await;
    }
}
