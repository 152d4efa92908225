//! Durable state behind one trait: record versions, latest versions, the subject index,
//! idempotency keys and the audit chain. Every write goes through the ledger writer so that a
//! record version, its subject index rows, its audit entry (and later its outbox rows) commit in one
//! transaction, and a caller hears back only once that transaction is on disk. (SQLite writes the
//! subject index rows in sorted batches behind the log instead, and lookups read the part not
//! yet written from memory: `sqlite/subjects.rs`.)

pub mod backup;
pub(crate) mod cursor;
pub mod migrate;
pub mod postgres;
pub mod sqlite;
pub mod wal;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::ledger::{Anchor, ChainBroken, ChainReport, Entry, NewEntry};

/// Storage failures, classified so the API can tell "try again" from "broken".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing was written; retry when space returns.
    #[error("storage is full")]
    Full,
    /// The ledger writer is not running (shutting down, or it failed).
    #[error("the ledger writer is not running")]
    WriterGone,
    /// Another write of the same group commit failed, so the group was rolled back: nothing of
    /// this one was stored; it may be sent again at once.
    #[error("another write of the same commit failed; nothing was stored")]
    Aborted,
    /// The database reported an error.
    // The cause is in the message, not also behind `source`: an error chain would print it twice.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL reported an error, or cannot be reached.
    #[error("database error: {0}")]
    Postgres(sqlx::Error),
    /// The database server cannot be reached (a failover, say): the outcome of a write in flight
    /// is unknown, so it is safe to send again only with its idempotency key.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// The database is not this hub's: another cluster's keys, or a newer schema.
    #[error("{0}")]
    Mismatch(String),
    /// Files of the data directory.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A version meant as its record's first ([`NewVersion::first_only`]) found one stored:
    /// nothing was written, and the exchange makes it a correction.
    #[error("the record has a version already")]
    NotFirst,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Sqlite(e),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        match code.as_deref() {
            // disk_full, and insufficient_resources in general: nothing was written.
            Some("53100") => StoreError::Full,
            // serialization_failure, deadlock_detected: the transaction was rolled back whole.
            Some("40001" | "40P01") => StoreError::Aborted,
            // admin_shutdown, crash_shutdown, cannot_connect_now, read_only_sql_transaction (a
            // demoted primary during failover).
            Some("57P01" | "57P02" | "57P03" | "25006") => StoreError::Unavailable(e.to_string()),
            _ => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                    StoreError::Unavailable(e.to_string())
                }
                other => StoreError::Postgres(other),
            },
        }
    }
}

/// Fills a group commit: `first`, then whatever else is queued, up to `max` operations. Returns
/// the jobs and their operation count.
pub(crate) fn gather<J>(
    first: J,
    rx: &mut tokio::sync::mpsc::Receiver<J>,
    max: usize,
    ops: impl Fn(&J) -> usize,
) -> (Vec<J>, usize) {
    let mut n = ops(&first);
    let mut jobs = vec![first];
    while n < max {
        match rx.try_recv() {
            Ok(job) => {
                n += ops(&job);
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    (jobs, n)
}

/// What each of `jobs` callers of a failed group commit hears: `failed` (when one job failed)
/// gets the cause; the others that nothing was stored, as full disk, lost database or a plain
/// "send again" as the cause says.
pub(crate) fn group_failure(jobs: usize, failed: Option<usize>, cause: StoreError) -> Vec<StoreError> {
    let (full, unreachable) = (matches!(cause, StoreError::Full), matches!(cause, StoreError::Unavailable(_)));
    let other = || match (full, unreachable) {
        (true, _) => StoreError::Full,
        (_, true) => StoreError::Unavailable("the database cannot be reached".into()),
        _ => StoreError::Aborted,
    };
    let mut cause = Some(cause);
    (0..jobs).map(|i| if Some(i) == failed { cause.take().unwrap_or_else(other) } else { other() }).collect()
}

/// A claim's lease: the entries are this node's until `until_ms`, or until it settles them. A
/// node that dies holding a lease only delays those entries until the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The claiming node.
    pub owner: String,
    /// Leased until (ms since the epoch).
    pub until_ms: i64,
}

/// Opens the store `[storage]` names: the SQLite database in `data`, or the PostgreSQL database
/// whose URL is in the environment variable `url_env`.
pub async fn open(
    config: &crate::config::Config,
    data: &std::path::Path,
    keys: std::sync::Arc<crate::ledger::keys::HubKeys>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let s = &config.storage;
    Ok(match s.engine() {
        crate::config::Engine::Sqlite => std::sync::Arc::new(sqlite::SqliteStore::open(
            data,
            keys,
            sqlite::SqliteOptions {
                group_commit_max: s.group_commit_max,
                read_connections: s.read_connections,
                checkpoint_every: config.audit.checkpoint_every,
                max_wal_bytes: *s.max_wal_mib.get_ref() << 20,
                subject_merge_at: sqlite::SUBJECT_MERGE_AT,
            },
        )?),
        crate::config::Engine::Postgres => {
            let url = std::env::var(&s.url_env).map_err(|_| {
                StoreError::Mismatch(format!(
                    "[storage] engine is postgres but the environment variable {} (url_env) is not set",
                    s.url_env
                ))
            })?;
            let opts = postgres::PgOptions {
                url,
                max_connections: s.max_connections,
                group_commit_max: s.group_commit_max,
                checkpoint_every: config.audit.checkpoint_every,
            };
            std::sync::Arc::new(postgres::PostgresStore::open(keys, opts).await?)
        }
    })
}

/// A record version to store.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Record type.
    pub record_type: String,
    /// Business key.
    pub key: String,
    /// Schema version it was validated against.
    pub schema_version: u32,
    /// Canonical JSON (RFC 8785) of the payload.
    pub canonical: String,
    /// SHA-256 (hex) of `canonical`.
    pub digest: String,
    /// Publishing department.
    pub publisher: String,
    /// Keyed hashes of the subjects.
    pub subjects: Vec<String>,
    /// `Idempotency-Key` and the digest of the request it came with.
    pub idempotency: Option<(String, String)>,
    /// Subscriptions that get an outbox entry, in the same transaction.
    pub routes: Vec<String>,
    /// Only as the record's first version: a record that has one already answers
    /// [`StoreError::NotFirst`] and nothing is written. A publish finds out this way, in the
    /// write it makes anyway, that it is a correction and owes notices.
    pub first_only: bool,
    /// The publish audit entry (the writer fills in the version).
    pub audit: NewEntry,
    /// The W3C `traceparent` of the publish, carried into every delivery of this version.
    pub trace: Option<String>,
}

/// A case transition ([`Store::transition`]): every version and the case's index rows commit in
/// one transaction, or nothing does.
#[derive(Debug, Clone)]
pub struct CaseWrite {
    /// The record that causes it (published with `Hub-Case-Step`), stored first, and the latest
    /// version it must still have (none: a new record).
    pub record: Option<(NewVersion, Option<u64>)>,
    /// The case's new version (`hub.case`).
    pub case: NewVersion,
    /// The latest version the case must still have (none: a new case).
    pub case_expect: Option<u64>,
    /// The events it sends (`hub.case-event` versions).
    pub events: Vec<NewVersion>,
    /// The case's index row after it.
    pub row: CaseRow,
    /// Its steps' index rows after it.
    pub steps: Vec<StepRow>,
}

/// What became of a [`CaseWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum CaseWritten {
    /// Stored: the record's receipt (if one came with it) and the case version's.
    Done {
        /// The causing record's receipt.
        record: Option<Receipt>,
        /// The case version's receipt.
        case: Receipt,
    },
    /// The first version's idempotency key was seen with the same request: its receipt, and
    /// nothing written.
    Replayed(Receipt),
    /// The first version's idempotency key was seen with another request; nothing written.
    Conflict,
    /// The case or the record moved on since it was read; nothing written: read and try again.
    Stale,
}

/// What became of versions written together ([`Store::publish_linked`]): a correction or a
/// recall and the notices it sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Linked {
    /// Stored: every version's receipt, in order.
    Done(Vec<Receipt>),
    /// The first version's idempotency key was seen with the same request: its receipt, and
    /// nothing written.
    Replayed(Receipt),
    /// The first version's idempotency key was seen with another request; nothing written.
    Conflict,
    /// The record moved on since the notices were computed; nothing written: try again.
    Stale,
}

impl From<Linked> for CaseWritten {
    /// A case transition stopped before it wrote anything.
    fn from(l: Linked) -> Self {
        match l {
            Linked::Replayed(r) => CaseWritten::Replayed(r),
            Linked::Conflict => CaseWritten::Conflict,
            Linked::Stale | Linked::Done(_) => CaseWritten::Stale,
        }
    }
}

/// The subscriptions any version of a record was routed to (each engine's cursors and the
/// records' `routes` bits; `$1` type, `$2` key). A bit stays set once the version is delivered,
/// so this is everyone who got a version or is still owed one.
pub(crate) const ROUTED_SQL: &str = "SELECT c.subscription FROM cursors c WHERE EXISTS (
     SELECT 1 FROM records r WHERE r.type = $1 AND r.key = $2 AND r.routes IS NOT NULL
     AND (r.routes & (CAST(1 AS BIGINT) << c.slot)) != 0) ORDER BY c.subscription";

/// A case as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    /// Id (the `hub.case` key).
    pub id: String,
    /// Case type.
    pub case_type: String,
    /// Opening department.
    pub opener: String,
    /// `open`, `completed` or `refused`.
    pub state: String,
    /// RFC 3339.
    pub opened_at: String,
    /// RFC 3339.
    pub closed_at: Option<String>,
    /// The first day the sweep has something to do for it (YYYY-MM-DD).
    pub next_sweep: Option<String>,
    /// Its latest version.
    pub version: u64,
}

/// A step as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    /// Step id.
    pub step: String,
    /// Its department.
    pub department: String,
    /// `waiting`, `ready`, `done`, `refused` or `cancelled`.
    pub state: String,
    /// Last day of its time limit.
    pub due: Option<String>,
}

/// Which cases [`Store::cases`] lists; the conditions hold together. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseQuery {
    /// Cases with a step of this department ...
    pub step_department: Option<String>,
    /// ... in one of these states (any, when empty).
    pub step_states: Vec<String>,
    /// Opened by this department.
    pub opener: Option<String>,
    /// In one of these states (any, when empty).
    pub states: Vec<String>,
    /// Whose sweep day is on or before this day (YYYY-MM-DD).
    pub sweep_by: Option<String>,
    /// Opened or closed in [from, to) (RFC 3339).
    pub touched: Option<(String, String)>,
    /// Of this case type.
    pub case_type: Option<String>,
    /// Opened before this case (its `opened_at` and id), for paging.
    pub before: Option<(String, String)>,
    /// At most this many.
    pub limit: u32,
}

impl CaseQuery {
    /// The SELECT of the `cases` index this query makes, and its arguments in order; `at(n)`
    /// writes the n-th placeholder in the engine's syntax (`?n`, `$n`).
    pub(crate) fn sql(&self, at: impl Fn(usize) -> String) -> (String, Vec<String>) {
        let mut sql = String::from(
            "SELECT c.id, c.case_type, c.opener, c.state, c.opened_at, c.closed_at, c.next_sweep, c.version FROM cases c WHERE 1 = 1",
        );
        let mut args: Vec<String> = Vec::new();
        let mut arg = |sql: &mut String, text: &str, v: &str| {
            args.push(v.to_owned());
            sql.push_str(&text.replace('?', &at(args.len())));
        };
        let list = |sql: &mut String, arg: &mut dyn FnMut(&mut String, &str, &str), column: &str, values: &[String]| {
            for (i, v) in values.iter().enumerate() {
                let text = if i == 0 { format!(" AND {column} IN (?") } else { ", ?".to_owned() };
                arg(sql, &text, v);
            }
            if !values.is_empty() {
                sql.push(')');
            }
        };
        if let Some(d) = &self.step_department {
            let mut inner = String::from(" AND EXISTS (SELECT 1 FROM case_steps s WHERE s.case_id = c.id");
            arg(&mut inner, " AND s.department = ?", d);
            list(&mut inner, &mut arg, "s.state", &self.step_states);
            inner.push(')');
            sql.push_str(&inner);
        }
        if let Some(o) = &self.opener {
            arg(&mut sql, " AND c.opener = ?", o);
        }
        list(&mut sql, &mut arg, "c.state", &self.states);
        if let Some(day) = &self.sweep_by {
            arg(&mut sql, " AND c.next_sweep IS NOT NULL AND c.next_sweep <= ?", day);
        }
        if let Some((from, to)) = &self.touched {
            arg(&mut sql, " AND ((c.opened_at >= ?", from);
            arg(&mut sql, " AND c.opened_at < ?)", to);
            arg(&mut sql, " OR (c.closed_at >= ?", from);
            arg(&mut sql, " AND c.closed_at < ?))", to);
        }
        if let Some(t) = &self.case_type {
            arg(&mut sql, " AND c.case_type = ?", t);
        }
        if let Some((opened, id)) = &self.before {
            arg(&mut sql, " AND (c.opened_at < ?", opened);
            arg(&mut sql, " OR (c.opened_at = ?", opened);
            arg(&mut sql, " AND c.id < ?))", id);
        }
        sql.push_str(&format!(" ORDER BY c.opened_at DESC, c.id DESC LIMIT {}", self.limit));
        (sql, args)
    }
}

/// Open cases and late steps: counted (the dashboard, the vendor), and the late steps themselves,
/// oldest last day first (ops and auditors; a case id names no person).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaseCounts {
    /// Open cases per case type.
    pub open: Vec<(String, u64)>,
    /// Ready steps past their last day, per department.
    pub late: Vec<(String, u64)>,
    /// The first 200 of those steps: an operator's screen, not an export (the monthly report
    /// lists them all).
    pub late_steps: Vec<LateStep>,
}

/// A ready step of an open case past its last day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateStep {
    /// The case.
    pub case: String,
    /// Its type.
    pub case_type: String,
    /// The step.
    pub step: String,
    /// The step's department.
    pub department: String,
    /// Its last day (YYYY-MM-DD).
    pub due: String,
}

/// The queries behind [`CaseCounts`], the same on both engines; `$1` is today.
pub(crate) const CASE_COUNT_SQL: [&str; 3] = [
    "SELECT case_type, COUNT(*) FROM cases WHERE state = 'open' GROUP BY case_type ORDER BY case_type",
    "SELECT s.department, COUNT(*) FROM case_steps s JOIN cases c ON c.id = s.case_id
     WHERE c.state = 'open' AND s.state = 'ready' AND s.due < $1 GROUP BY s.department ORDER BY s.department",
    "SELECT s.case_id, c.case_type, s.step, s.department, s.due FROM case_steps s JOIN cases c ON c.id = s.case_id
     WHERE c.state = 'open' AND s.state = 'ready' AND s.due < $1 ORDER BY s.due, s.case_id, s.step LIMIT 200",
];

/// The receipt a publisher gets (CONTRACT.md).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Business key.
    pub key: String,
    /// Version assigned.
    pub version: u64,
    /// SHA-256 of the canonical JSON.
    pub digest: String,
    /// The publish audit entry.
    pub audit_seq: u64,
    /// When the hub accepted it (RFC 3339 UTC).
    pub received_at: String,
    /// Outbox entries created for subscribers.
    pub routed: u64,
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// A new version is durable.
    Created(Receipt),
    /// The same idempotency key and body were seen before: the original receipt.
    Replayed(Receipt),
    /// The idempotency key was used before with another body.
    Conflict,
}

/// A stored record version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordVersion {
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Key.
    pub key: String,
    /// Version.
    pub version: u64,
    /// Schema version.
    pub schema_version: u32,
    /// Payload.
    pub payload: Value,
    /// Digest of the canonical payload.
    pub digest: String,
    /// Publishing department.
    pub publisher: String,
    /// Acceptance time.
    pub received_at: String,
    /// Publish audit entry.
    pub audit_seq: u64,
    /// Keyed hashes of subjects.
    #[serde(skip)]
    pub subjects: Vec<String>,
    /// The W3C `traceparent` its publish came with (or made), for its deliveries.
    #[serde(skip)]
    pub trace: Option<String>,
}

/// Where an audit entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audited {
    /// Its sequence number.
    pub seq: u64,
}

/// The CloudEvents id of a record version for a subscription: stable, so a replay or a
/// redelivery carries the id the receiver already saw and can drop.
pub fn event_id(subscription: &str, record_type: &str, key: &str, version: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{subscription}\n{record_type}\n{key}\n{version}").as_bytes());
    format!("evt_{}", &hex::encode(digest)[..32])
}

/// One outbox entry: a record version owed to a subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    /// Monotonic id (also the feed cursor).
    pub id: i64,
    /// Subscription.
    pub subscription: String,
    /// Record type.
    pub record_type: String,
    /// Record key.
    pub key: String,
    /// Record version.
    pub version: u64,
    /// CloudEvents id.
    pub event_id: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Not before (ms since the epoch).
    pub next_attempt_at: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last failure (status codes and transport errors only).
    pub last_error: Option<String>,
}

/// Where a feed's reader stands: past the outbox rows up to `rows` (outbox ids), and past the
/// log up to `log` (an audit sequence; `None`: from the acknowledged position). A feed kept in
/// rows has no log part, so its cursors read as they always did: one number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCursor {
    /// The last outbox row read.
    pub rows: i64,
    /// The last log position read.
    pub log: Option<i64>,
}

impl FeedCursor {
    /// This cursor moved past `rows`, outbox rows just read in id order.
    pub fn past(self, rows: &[OutboxRow]) -> Self {
        Self { rows: rows.last().map_or(self.rows, |r| r.id), ..self }
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.log {
            Some(log) => write!(f, "{}-{log}", self.rows),
            None => write!(f, "{}", self.rows),
        }
    }
}

impl std::str::FromStr for FeedCursor {
    type Err = ();

    /// `ROWS` (every cursor before feeds read the log, and any feed kept in rows) or `ROWS-LOG`.
    fn from_str(text: &str) -> Result<Self, ()> {
        let number = |t: &str| t.parse::<i64>().ok().filter(|n| *n >= 0 && !t.starts_with('+')).ok_or(());
        match text.split_once('-') {
            Some((rows, log)) => Ok(Self { rows: number(rows)?, log: Some(number(log)?) }),
            None => Ok(Self { rows: number(text)?, log: None }),
        }
    }
}

/// One page of a feed and the cursor after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedPage {
    /// Entries, in feed order: outbox rows first (replays, and what was owed before the feed read
    /// the log), then the log.
    pub rows: Vec<OutboxRow>,
    /// Where the next page starts.
    pub next: FeedCursor,
}

/// A subscription the store may serve as a cursor over the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromLog {
    /// Subscription.
    pub name: String,
    /// Its record type.
    pub record_type: String,
    /// A pull feed (read and acknowledged by its department) rather than a push subscription.
    pub feed: bool,
}

/// How a delivery attempt ends for its outbox entry.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The receiver confirmed.
    Delivered,
    /// Try again at this time (ms since the epoch).
    Retry {
        /// Next attempt.
        at_ms: i64,
        /// Why this one failed.
        error: String,
    },
    /// Give up.
    Dead {
        /// Why.
        error: String,
    },
}

/// Pending and dead entries of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryCounts {
    /// Subscription.
    pub subscription: String,
    /// Waiting (push) or unacknowledged (feed).
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
    /// Creation time (ms) of the oldest pending entry.
    pub oldest_pending_ms: Option<i64>,
}

/// A subscription stopped by its receiver (HTTP 410) or an operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionState {
    /// Subscription.
    pub name: String,
    /// Whether deliveries are stopped.
    pub disabled: bool,
    /// Why.
    pub reason: Option<String>,
    /// Since when.
    pub since: String,
}

/// One recorded run of a health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRun {
    /// Check name.
    pub name: String,
    /// Check kind.
    pub kind: String,
    /// Start (RFC 3339 UTC).
    pub started: String,
    /// Duration.
    pub duration_ms: u64,
    /// `ok`, `warn` or `critical`.
    pub status: String,
    /// One line, no personal data.
    pub summary: String,
    /// Named numbers.
    pub measurements: Value,
    /// `schedule`, `missed` or `manual`.
    pub trigger: String,
}

/// One raised alert and what became of its delivery to the vendor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// Id.
    pub id: i64,
    /// Check name.
    pub check: String,
    /// Status before.
    pub from: String,
    /// Status now.
    pub to: String,
    /// The run's summary.
    pub summary: String,
    /// When.
    pub time: String,
    /// Raised as flapping.
    pub flapping: bool,
    /// When the vendor's webhook confirmed it.
    pub delivered_at: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Last failure.
    pub last_error: Option<String>,
}

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Flushes that made them durable: one can carry several commits (the SQLite store flushes
    /// the log while the next group is written; a PostgreSQL commit is its own flush).
    pub syncs: u64,
    /// Operations (publishes, audit entries) those transactions carried.
    pub operations: u64,
    /// The write-ahead log, where the store keeps one (SQLite).
    pub wal: Option<wal::WalStats>,
}

/// The storage boundary. The SQLite implementation is the embedded default.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores versions atomically each, flushed together; results in input order.
    async fn publish(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError>;
    /// Appends one audit entry and waits until it is durable.
    async fn audit(&self, entry: NewEntry) -> Result<Audited, StoreError>;
    /// The latest version of a record.
    async fn latest(&self, record_type: &str, key: &str) -> Result<Option<RecordVersion>, StoreError>;
    /// Every version of a record, oldest first.
    async fn history(&self, record_type: &str, key: &str) -> Result<Vec<RecordVersion>, StoreError>;
    /// Latest versions whose subjects include this keyed hash.
    async fn by_subject(&self, subject_hash: &str) -> Result<Vec<RecordVersion>, StoreError>;
    /// Audit entries after `after`, at most `limit`.
    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError>;
    /// Audit entries concerning a subject, newest first.
    async fn audit_by_subject(&self, subject_hash: &str, limit: u32) -> Result<Vec<Entry>, StoreError> {
        self.audit_by_subject_before(subject_hash, i64::MAX as u64, limit).await
    }
    /// Audit entries concerning a subject with a sequence below `before`, newest first: one page
    /// of a person's whole history.
    async fn audit_by_subject_before(
        &self,
        subject_hash: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError>;
    /// Verifies the whole chain and its checkpoints.
    async fn verify_audit(&self) -> Result<Result<ChainReport, ChainBroken>, StoreError>;
    /// Verifies only the entries after `anchor`, a signed checkpoint an earlier pass found intact,
    /// after re-checking the anchor entry and its signature. Edits before it need the full pass.
    async fn verify_audit_since(&self, anchor: Anchor) -> Result<Result<ChainReport, ChainBroken>, StoreError>;
    /// One version of a record.
    async fn version(&self, record_type: &str, key: &str, version: u64) -> Result<Option<RecordVersion>, StoreError>;
    /// Versions of a type whose publish audit entry is at or after `from_seq`, oldest first.
    async fn versions_since(
        &self,
        record_type: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<RecordVersion>, StoreError>;

    /// Leases due pending entries of a subscription that may go now: at most one per record, never
    /// a later version while an earlier one is still pending, and none leased to anyone (this node
    /// included) whose lease has not run out. Oldest first.
    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        limit: u32,
        lease: Lease,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Serves these subscriptions as cursors over the log where the store can: a version routed
    /// to one writes no outbox row unless an attempt fails. Called once at start, before the
    /// first publish; a store that cannot keeps rows for all.
    async fn serve_from_log(&self, subscriptions: Vec<FromLog>) -> Result<(), StoreError> {
        let _ = subscriptions;
        Ok(())
    }
    /// Gives back the leases of `owner` (a node stopping): its unfinished entries may go from
    /// another node at once instead of when the leases run out. Returns how many.
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;
    /// When the next entry of a subscription that is not held back by an earlier version falls due
    /// (or its lease runs out).
    async fn next_due(&self, subscription: &str) -> Result<Option<i64>, StoreError>;
    /// Records the end of an attempt, with its audit entry, in one transaction.
    async fn settle(&self, id: i64, settlement: Settlement, audit: Option<NewEntry>) -> Result<(), StoreError>;
    /// Records the end of a batch's attempt: every settlement with its audit entry. The default
    /// settles one by one; a store that can commits them together.
    async fn settle_many(&self, settlements: Vec<(i64, Settlement, Option<NewEntry>)>) -> Result<(), StoreError> {
        for (id, settlement, audit) in settlements {
            self.settle(id, settlement, audit).await?;
        }
        Ok(())
    }
    /// Dead-letters pending entries created before `cutoff_ms`. Each gets an audit entry made
    /// from `template` with the record's type, key, version and subjects filled in.
    async fn expire(
        &self,
        subscription: &str,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError>;
    /// Adds outbox entries (replay), with one audit entry.
    async fn enqueue(
        &self,
        subscription: &str,
        versions: Vec<(String, String, u64)>,
        audit: NewEntry,
    ) -> Result<u64, StoreError>;
    /// Pending entries of a feed after a cursor, at most `limit`.
    async fn feed(&self, subscription: &str, after: FeedCursor, limit: u32) -> Result<FeedPage, StoreError>;
    /// The feed's acknowledged cursor.
    async fn feed_cursor(&self, subscription: &str) -> Result<FeedCursor, StoreError>;
    /// Acknowledges a feed up to a cursor (never back); returns how many entries that settled.
    async fn ack(&self, subscription: &str, cursor: FeedCursor) -> Result<u64, StoreError>;
    /// Entries in a state (`pending` or `dead`), optionally of one subscription.
    async fn deliveries(
        &self,
        state: &str,
        subscription: Option<String>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Pending and dead counts per subscription.
    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>, StoreError>;
    /// Puts a dead entry back in the queue; returns its subscription if it was dead.
    async fn retry_dead(&self, id: i64, audit: NewEntry) -> Result<Option<String>, StoreError>;
    /// Stops or restarts a subscription, with an audit entry.
    async fn set_subscription(
        &self,
        name: &str,
        disabled: bool,
        reason: Option<String>,
        audit: NewEntry,
    ) -> Result<(), StoreError>;
    /// Stopped subscriptions.
    async fn subscription_states(&self) -> Result<Vec<SubscriptionState>, StoreError>;

    /// Commits a case transition with the record that caused it and the events it sends, if the
    /// case (and the record) are still at the versions it was computed from.
    async fn transition(&self, write: CaseWrite) -> Result<CaseWritten, StoreError>;
    /// Cases from the index, newest first.
    async fn cases(&self, query: CaseQuery) -> Result<Vec<CaseRow>, StoreError>;
    /// Open cases per type and ready steps whose last day is before `today` (YYYY-MM-DD), per
    /// department.
    async fn case_counts(&self, today: &str) -> Result<CaseCounts, StoreError>;
    /// Commits `versions` together or not at all, if the first one's record still has the latest
    /// version `expect` (none: a new record): a correction or recall with the notices it sends.
    async fn publish_linked(&self, versions: Vec<NewVersion>, expect: Option<u64>) -> Result<Linked, StoreError>;
    /// The subscriptions any version of a record was routed to ([`ROUTED_SQL`]).
    async fn routed(&self, record_type: &str, key: &str) -> Result<Vec<String>, StoreError>;
    /// The audit entries about any version of a record (publishes, reads, deliveries), newest
    /// first.
    async fn audit_by_record(&self, record_type: &str, key: &str, limit: u32) -> Result<Vec<Entry>, StoreError>;
    /// Entries of `action` by `actor` sealed in `[from, to)` (RFC 3339 UTC), after audit sequence
    /// `after`, in sequence order, at most `limit`: a department's deliveries of a day.
    async fn audit_between(
        &self,
        from: &str,
        to: &str,
        actor: &str,
        action: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError>;
    /// The receipt an idempotency key of `publisher` was given, and the digest of its request.
    async fn idempotent(&self, publisher: &str, key: &str) -> Result<Option<(String, Receipt)>, StoreError>;

    /// Records a check run and forgets runs that started before `keep_after` (RFC 3339).
    async fn record_check(&self, run: CheckRun, keep_after: String) -> Result<(), StoreError>;
    /// When a check last started.
    async fn last_check_started(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// A check's runs, newest first.
    async fn check_history(&self, name: &str, limit: u32) -> Result<Vec<CheckRun>, StoreError>;
    /// The newest run of every check.
    async fn latest_checks(&self) -> Result<Vec<CheckRun>, StoreError>;
    /// Check runs that started in [from, to) (RFC 3339), oldest first.
    async fn check_runs_between(&self, from: &str, to: &str) -> Result<Vec<CheckRun>, StoreError>;

    /// Adds an alert to the alert log; returns its id.
    async fn record_alert(&self, alert: AlertRecord) -> Result<i64, StoreError>;
    /// Records a delivery attempt of an alert (`error` none: delivered).
    async fn alert_attempt(&self, id: i64, error: Option<String>) -> Result<(), StoreError>;
    /// The alert log, newest first.
    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError>;

    /// Takes the run of a check's scheduled instant `slot` for this node: true for the first node to
    /// ask, false for every other, so that a cluster runs each scheduled instant once.
    async fn claim_slot(&self, check: &str, slot: &str) -> Result<bool, StoreError>;

    /// Audit entries per action with a time in [from, to) (RFC 3339).
    async fn audit_action_counts(&self, from: &str, to: &str) -> Result<Vec<(String, u64)>, StoreError>;

    /// Bytes the database takes, where the store can tell (the storage check).
    async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// True when other hub nodes may write to the same database: their new entries wake no worker
    /// here, so workers must look on their own from time to time.
    fn is_shared(&self) -> bool {
        false
    }
    /// Group-commit counters.
    fn writer_stats(&self) -> WriterStats;
    /// True while the ledger writer runs.
    fn is_ready(&self) -> bool;
    /// Stops the writer after it has flushed everything queued.
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::FeedCursor;

    #[test]
    fn a_feed_cursor_reads_back_as_written_and_nothing_else_is_one() {
        for c in [FeedCursor { rows: 0, log: None }, FeedCursor { rows: 12, log: Some(3456) }] {
            assert_eq!(c.to_string().parse::<FeedCursor>(), Ok(c));
        }
        assert_eq!("7".parse::<FeedCursor>(), Ok(FeedCursor { rows: 7, log: None }));
        for bad in ["", "-1", "+1", "1-", "-", "1-2-3", "1-+2", "a", "1.5", "1--2"] {
            assert_eq!(bad.parse::<FeedCursor>(), Err(()), "{bad:?}");
        }
    }
}
