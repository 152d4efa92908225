//! The shared store: PostgreSQL, which several hub nodes may use at once (ops/deploy/cluster.md).
//! Each node runs one writer task that drains its queue into one transaction (group commit, as
//! the SQLite writer does). That transaction first takes one cluster-wide advisory lock, the
//! chain lock, and reads the chain head: audit entries get one global sequence and an unbroken
//! hash chain whichever node writes them, and outbox ids become visible in id order. Everything
//! that writes no audit entry (claims, acknowledgements, check runs, alerts) goes straight to the
//! pool and never waits for the chain lock. Claims lease their entries with
//! `FOR UPDATE SKIP LOCKED`, so each entry is with one node at a time.
//!
//! Push subscriptions and feeds are cursors over the log (`log.rs`), each push cursor served by
//! one node at a time.
//!
//! Files by concern: `writer.rs` the group commit and the writes that need the chain lock,
//! `append.rs` the one statement that writes a batch of publishes, audit entries and
//! settlements, `log.rs` the cursors, `reads.rs` decoding rows and walking the chain; the tables
//! are the migrations in `hub/migrations/postgres`.

mod append;
mod cases;
mod linked;
mod log;
mod reads;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use append::Appended;
use reads::{check_run_from_row, entry_row, outbox_from_row, record_from_row, verify_in};
use writer::{writer_loop, Done, Job, JobResult, Op};

use super::cursor::{self, Behind, Cursor, Cursors};
use super::{
    AlertRecord, Audited, CaseQuery, CaseRow, CaseWrite, CaseWritten, CheckRun, DeliveryCounts, FeedCursor, FeedPage,
    FromLog, Lease, NewVersion, OutboxRow, Published, Receipt, RecordVersion, Settlement, Store, StoreError,
    SubscriptionState, WriterStats,
};
use crate::ledger::keys::HubKeys;
use crate::ledger::{Anchor, ChainBroken, ChainReport, Entry, NewEntry};

const RECORD_COLUMNS: &str =
    "r.type, r.key, r.version, r.schema_version, r.payload, r.digest, r.publisher, r.received_at, r.audit_seq, r.subjects, r.trace";
const OUTBOX_COLUMNS: &str =
    "o.id, o.subscription, o.record_type, o.key, o.version, o.event_id, o.state, o.attempts, o.next_attempt_at, o.created_at, o.last_error";
/// The first pending version of the record of outbox entry `o` for its subscription: an entry may
/// go only when it is that one (versions of one record arrive in order). By version, not id: a
/// version held back as a row behind one out from the log has a lower id than the row that one
/// becomes when its attempt fails.
const FIRST_PENDING_OF_RECORD: &str = "(SELECT p.id FROM outbox p WHERE p.subscription = o.subscription
     AND p.record_type = o.record_type AND p.key = o.key AND p.state = 'pending' ORDER BY p.version, p.id LIMIT 1)";
const CHECK_COLUMNS: &str = "name, kind, started, duration_ms, status, summary, measurements, trigger";
const AUDIT_COLUMNS: &str =
    "a.seq, a.time, a.actor, a.action, a.record_type, a.record_key, a.record_version, a.subjects, a.purpose, a.outcome, a.detail, a.prev, a.digest";

/// The migrations, embedded so a node needs nothing beside its binary. sqlx applies them under its
/// own advisory lock, so nodes starting together migrate once.
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let m = |version, description: &'static str, sql: &'static str| {
        Migration::new(version, description.into(), MigrationType::Simple, sqlx::SqlStr::from_static(sql), false)
    };
    Migrator::with_migrations(vec![
        m(1, "initial", include_str!("../../../migrations/postgres/0001_initial.sql")),
        m(2, "autovacuum", include_str!("../../../migrations/postgres/0002_autovacuum.sql")),
        m(3, "audit by record", include_str!("../../../migrations/postgres/0003_audit_by_record.sql")),
        m(4, "cursors", include_str!("../../../migrations/postgres/0004_cursors.sql")),
        m(5, "cases", include_str!("../../../migrations/postgres/0005_cases.sql")),
        m(6, "trace", include_str!("../../../migrations/postgres/0006_trace.sql")),
        m(7, "suite", include_str!("../../../migrations/postgres/0007_suite.sql")),
    ])
}

/// Tuning of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connection URL.
    pub url: String,
    /// Connections kept by this node.
    pub max_connections: u32,
    /// Most operations flushed by one commit.
    pub group_commit_max: usize,
    /// A signed checkpoint every this many audit entries.
    pub checkpoint_every: u64,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    operations: AtomicU64,
    running: AtomicBool,
    /// The last commit or probe reached the database.
    reachable: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Guards hold only an Option that is taken in one step: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    prober: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
    keys: Arc<HubKeys>,
    cursors: std::sync::RwLock<Arc<Cursors>>,
}

/// The URL with its password masked, for messages.
pub fn redact(url: &str) -> String {
    // scheme://user:password@host/db: the password lies between the first ':' after the scheme
    // and the last '@' of the authority.
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..start], &authority[..colon], &url[start + at..])
        }
        _ => url.to_owned(),
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations, checks that the database belongs to a hub with these
    /// keys (recording them if it is new) and starts the writer.
    pub async fn open(keys: Arc<HubKeys>, opts: PgOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = opts.url.parse()?;
        // One connection first: a pool that cannot connect says only that it timed out; this
        // says why (refused, authentication, no such database).
        {
            use sqlx::Connection as _;
            PgConnection::connect_with(&connect).await?.close().await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        migrator().run(&pool).await.map_err(|e| StoreError::Mismatch(format!("database migration failed: {e}")))?;
        check_identity(&pool, &keys).await?;
        // The outbox takes two updates per delivery; without autovacuum its dead rows pile up
        // for ever (BENCHMARKS.md, "Table growth under sustained load"). The server's to set.
        if let Ok(setting) = sqlx::query_scalar::<_, String>("SHOW autovacuum").fetch_one(&pool).await {
            if setting != "on" {
                tracing::warn!(
                    autovacuum = %setting,
                    "the database server runs without autovacuum: the outbox's dead rows will not be reclaimed (ops/deploy/cluster.md)"
                );
            }
        }
        let stats = Arc::new(Stats::default());
        stats.running.store(true, Ordering::SeqCst);
        stats.reachable.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(4096);
        let writer = tokio::spawn(writer_loop(pool.clone(), rx, keys.clone(), opts.clone(), stats.clone()));
        let prober = tokio::spawn(probe_loop(pool.clone(), stats.clone()));
        Ok(Self {
            pool,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            prober: Mutex::new(Some(prober)),
            stats,
            keys,
            cursors: std::sync::RwLock::default(),
        })
    }

    /// The connection pool (the migration tool writes through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn send(&self, ops: Vec<Op>, isolated: bool) -> JobResult {
        let tx = lock(&self.tx).clone().ok_or(StoreError::WriterGone)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Job { ops, reply, isolated }).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn one(&self, op: Op) -> Result<Done, StoreError> {
        self.send(vec![op], true).await?.pop().unwrap_or(Err(StoreError::WriterGone))
    }

    async fn count(&self, op: Op) -> Result<u64, StoreError> {
        match self.one(op).await? {
            Done::Count(n) => Ok(n),
            _ => Err(StoreError::Corrupt("writer gave no count".into())),
        }
    }

    /// Runs a read and decodes its rows.
    async fn fetch<T>(
        &self,
        sql: String,
        bind: impl FnOnce(PgQuery<'_>) -> PgQuery<'_>,
        decode: fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = bind(sqlx::query(AssertSqlSafe(sql))).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    fn cursors(&self) -> Arc<Cursors> {
        self.cursors.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn cursor(&self, subscription: &str) -> Option<Arc<Cursor>> {
        self.cursors().by_name.get(subscription).cloned()
    }

    /// Leases due pending outbox rows of a subscription that may go now: at most one per record,
    /// none of a record in `busy` (out from the log here) and none `behind` its cursor's way.
    async fn claim_rows(
        &self,
        subscription: &str,
        behind: Behind,
        now_ms: i64,
        limit: u32,
        lease: Lease,
        busy: std::collections::HashSet<(String, String)>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // SKIP LOCKED: two nodes claiming at once take disjoint entries instead of queueing. An
        // earlier version that is pending (leased or not, locked or not) holds back later ones,
        // so per-record order holds across nodes.
        //
        // Written so that no statistics can turn it into a sort of the whole backlog: the entries
        // are walked in id order (`+ 0` keeps the due index out of it) and stop at the limit, and
        // the first pending version of each record is a subquery run per entry (one index probe)
        // rather than an anti-join the planner may build over every pending entry. With the
        // statistics of a young table it did both: 257 ms per claim behind a 25,000-entry backlog.
        let sql = format!(
            "WITH due AS (
                 SELECT o.id FROM outbox o
                 WHERE o.subscription = $1 AND o.state = 'pending' AND o.next_attempt_at + 0 <= $2
                   AND (o.lease_until IS NULL OR o.lease_until <= $2)
                   AND o.id = {FIRST_PENDING_OF_RECORD}
                   AND NOT EXISTS (SELECT 1 FROM UNNEST($6::text[], $7::text[]) AS b(t, k)
                                   WHERE b.t = o.record_type AND b.k = o.key)
                   AND NOT EXISTS (SELECT 1 FROM records r WHERE r.type = o.record_type AND r.key = o.key
                                   AND r.version < o.version AND r.audit_seq > $8 AND (r.routes & $9::bigint) <> 0)
                 ORDER BY o.id LIMIT $3
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o SET lease_owner = $4, lease_until = $5 FROM due WHERE o.id = due.id
             RETURNING {OUTBOX_COLUMNS}"
        );
        let (busy_t, busy_k): (Vec<String>, Vec<String>) = busy.into_iter().unzip();
        let mut rows = self
            .fetch(
                sql,
                |q| {
                    q.bind(subscription.to_owned())
                        .bind(now_ms)
                        .bind(i64::from(limit))
                        .bind(lease.owner)
                        .bind(lease.until_ms)
                        .bind(busy_t)
                        .bind(busy_k)
                        .bind(behind.position)
                        .bind(behind.bit)
                },
                outbox_from_row,
            )
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// When the next row of a subscription falls due, leaving out rows `behind` its cursor's way
    /// (a node that does not hold the cursor would otherwise look again at once, and again).
    async fn next_due_rows(&self, subscription: &str, behind: Behind) -> Result<Option<i64>, StoreError> {
        // The earliest entries by due time, not the minimum over the whole backlog: a MIN over
        // every pending entry (each with its NOT EXISTS) cost the database O(backlog) after
        // every claim. An entry further on falls due no earlier than the last one read, so that
        // bounds the answer when the leases of those read end later.
        const LOOK: i64 = 64;
        let sql = format!(
            "SELECT o.next_attempt_at, o.lease_until FROM outbox o
             WHERE o.subscription = $1 AND o.state = 'pending' AND o.id = {FIRST_PENDING_OF_RECORD}
               AND NOT EXISTS (SELECT 1 FROM records r WHERE r.type = o.record_type AND r.key = o.key
                               AND r.version < o.version AND r.audit_seq > $3 AND (r.routes & $4::bigint) <> 0)
             ORDER BY o.next_attempt_at LIMIT $2"
        );
        let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(subscription)
            .bind(LOOK)
            .bind(behind.position)
            .bind(behind.bit)
            .fetch_all(&self.pool)
            .await?;
        let due = rows.iter().map(|(at, lease)| (*at).max(lease.unwrap_or(0))).min();
        let bound = rows.last().filter(|_| rows.len() as i64 == LOOK).map(|(at, _)| *at);
        Ok(match (due, bound) {
            (Some(d), Some(b)) => Some(d.min(b)),
            (d, _) => d,
        })
    }

    /// Pending rows of a feed after `after`, at most `limit`.
    async fn feed_rows(&self, subscription: &str, after: i64, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.subscription = $1 AND o.state = 'pending' AND o.id > $2
             ORDER BY o.id LIMIT $3"
        );
        self.fetch(sql, |q| q.bind(subscription.to_owned()).bind(after).bind(i64::from(limit)), outbox_from_row).await
    }

    /// Verifies the chain in one consistent snapshot, reporting each entry's seq to `progress`.
    pub async fn verify_with(
        &self,
        key: crate::ledger::keys::PublicKey,
        anchor: Option<&Anchor>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let result = verify_in(&mut tx, key, anchor, progress).await;
        tx.rollback().await?;
        result
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Records this hub's keys in a new database, or refuses a database made with other keys.
async fn check_identity(pool: &PgPool, keys: &HubKeys) -> Result<(), StoreError> {
    let public = keys.public_pem();
    // An HMAC of a fixed text: equal for equal keys, and telling nothing about the key.
    let fingerprint = keys.subject_hash("conghua-hub identity fingerprint");
    let suite = keys.suite();
    sqlx::query(
        "INSERT INTO hub_identity (id, audit_public_key, subject_key_fingerprint, suite) VALUES (1, $1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&public)
    .bind(&fingerprint)
    .bind(suite.as_str())
    .execute(pool)
    .await?;
    let row = sqlx::query("SELECT audit_public_key, subject_key_fingerprint, suite FROM hub_identity WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let (theirs_public, theirs_fp, theirs_suite): (String, String, Option<String>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if let Some(theirs) = theirs_suite.filter(|s| s != suite.as_str()) {
        return Err(StoreError::Mismatch(format!(
            "the database's audit chain is sealed with the crypto suite {theirs}, but this node has [audit] suite = \"{suite}\": \
             every node of a hub uses the suite its database was made with"
        )));
    }
    // A database made before identities named a suite: its chain's first entry does.
    let first: Option<Option<String>> =
        sqlx::query_scalar("SELECT detail FROM audit WHERE seq = 1").fetch_optional(pool).await?;
    crate::ledger::check_suite(first, suite).map_err(StoreError::Mismatch)?;
    if theirs_public.trim() != public.trim() {
        return Err(StoreError::Mismatch(
            "the database's audit chain is signed with another key than DATA/keys/audit-signing.key: every node of a \
             cluster needs the same keys directory (ops/deploy/cluster.md)"
                .into(),
        ));
    }
    if theirs_fp != fingerprint {
        return Err(StoreError::Mismatch(
            "the database's subjects are hashed with another key than DATA/keys/subject-hmac.key: every node of a \
             cluster needs the same keys directory (ops/deploy/cluster.md)"
                .into(),
        ));
    }
    Ok(())
}

/// Keeps `reachable` current while the writer is idle, so `/readyz` takes a node that lost its
/// database out of the load balancer.
async fn probe_loop(pool: PgPool, stats: Arc<Stats>) {
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT 1").execute(&pool))
            .await
            .is_ok_and(|r| r.is_ok());
        if stats.reachable.swap(ok, Ordering::SeqCst) != ok {
            if ok {
                tracing::info!("the database can be reached again");
            } else {
                tracing::error!("the database cannot be reached");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn publish(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError> {
        let cursors = self.cursors();
        let ops = versions
            .into_iter()
            .map(|mut v| {
                // Routes to a cursor are a bit of the record's row; the others get outbox rows.
                let bits = cursors.take_bits(&v.record_type, &mut v.routes);
                Op::Append(Box::new(Appended::Publish(Box::new(v), bits)))
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
        match self.one(Op::Append(Box::new(Appended::Audit(entry)))).await? {
            Done::Audited(a) => Ok(a),
            _ => Err(StoreError::Corrupt("writer gave no audit receipt".into())),
        }
    }

    async fn latest(&self, record_type: &str, key: &str) -> Result<Option<RecordVersion>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM latest l JOIN records r
             ON r.type = l.type AND r.key = l.key AND r.version = l.version
             WHERE l.type = $1 AND l.key = $2"
        );
        Ok(self.fetch(sql, |q| q.bind(record_type.to_owned()).bind(key.to_owned()), record_from_row).await?.pop())
    }

    async fn history(&self, record_type: &str, key: &str) -> Result<Vec<RecordVersion>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = $1 AND r.key = $2 ORDER BY r.version");
        self.fetch(sql, |q| q.bind(record_type.to_owned()).bind(key.to_owned()), record_from_row).await
    }

    async fn by_subject(&self, subject_hash: &str) -> Result<Vec<RecordVersion>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM subjects s
             JOIN latest l ON l.type = s.type AND l.key = s.key
             JOIN records r ON r.type = l.type AND r.key = l.key AND r.version = l.version
             WHERE s.subject_hash = $1 ORDER BY r.type, r.key"
        );
        self.fetch(sql, |q| q.bind(subject_hash.to_owned()), record_from_row).await
    }

    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq > $1 ORDER BY a.seq LIMIT $2");
        self.fetch(sql, |q| q.bind(after as i64).bind(i64::from(limit)), entry_row).await
    }

    async fn audit_by_subject_before(
        &self,
        subject_hash: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError> {
        let before = before.min(i64::MAX as u64) as i64;
        // As on SQLite: entries about no stored version by their own keys, entries about a
        // version through the records that ever named the person, checked against the entry.
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq IN (
                 SELECT x.seq FROM audit_subjects x WHERE x.subject_hash = $1
                 UNION
                 SELECT e.seq FROM (
                     SELECT type, key FROM subjects WHERE subject_hash = $1
                     UNION SELECT type, key FROM subjects_past WHERE subject_hash = $1
                 ) r JOIN audit e ON e.record_type = r.type AND e.record_key = r.key AND e.record_version IS NOT NULL
                 WHERE strpos(e.subjects, '\"' || $1 || '\"') > 0
             ) AND a.seq < $3 ORDER BY a.seq DESC LIMIT $2"
        );
        self.fetch(sql, |q| q.bind(subject_hash.to_owned()).bind(i64::from(limit)).bind(before), entry_row).await
    }

    async fn verify_audit(&self) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        self.verify_with(self.keys.public_key(), None, &mut |_| {}).await
    }

    async fn verify_audit_since(&self, anchor: Anchor) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        self.verify_with(self.keys.public_key(), Some(&anchor), &mut |_| {}).await
    }

    async fn version(&self, record_type: &str, key: &str, version: u64) -> Result<Option<RecordVersion>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = $1 AND r.key = $2 AND r.version = $3");
        Ok(self
            .fetch(sql, |q| q.bind(record_type.to_owned()).bind(key.to_owned()).bind(version as i64), record_from_row)
            .await?
            .pop())
    }

    async fn versions_since(
        &self,
        record_type: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<RecordVersion>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r WHERE r.type = $1 AND r.audit_seq >= $2 ORDER BY r.audit_seq LIMIT $3"
        );
        self.fetch(
            sql,
            |q| q.bind(record_type.to_owned()).bind(from_seq as i64).bind(i64::from(limit)),
            record_from_row,
        )
        .await
    }

    async fn serve_from_log(&self, subscriptions: Vec<FromLog>) -> Result<(), StoreError> {
        let names = subscriptions.iter().map(|s| s.name.clone()).collect();
        let Done::Cursors(taken) = self.one(Op::Register(names)).await? else {
            return Err(StoreError::Corrupt("writer gave no cursors".into()));
        };
        let cursors = Cursors::of(taken, &subscriptions, true);
        *self.cursors.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cursors);
        Ok(())
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
            None => self.claim_rows(subscription, Behind::default(), now_ms, limit, lease, Default::default()).await,
        }
    }

    async fn next_due(&self, subscription: &str) -> Result<Option<i64>, StoreError> {
        let Some(c) = self.cursor(subscription) else {
            return self.next_due_rows(subscription, Behind::default()).await;
        };
        // Its rows may go from any node; its log only from the node that holds it.
        let behind = Behind { bit: c.bit(), position: self.position(&c.name).await? };
        let rows = self.next_due_rows(subscription, behind).await?;
        let log = match self.held_elsewhere(&c).await {
            Some(until) => Some(until),
            None => self.next_due_log(&c).await?,
        };
        Ok(cursor::earliest(rows, log))
    }

    async fn settle(&self, id: i64, settlement: Settlement, audit: Option<NewEntry>) -> Result<(), StoreError> {
        self.settle_many(vec![(id, settlement, audit)]).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND state = 'pending'",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(rows + self.release_log(owner).await?)
    }

    async fn settle_many(&self, mut settlements: Vec<(i64, Settlement, Option<NewEntry>)>) -> Result<(), StoreError> {
        // One job, written with the group's one statement: a settlement fails only with the
        // database, and then its group is rolled back whole and the entries go again.
        let (mut ops, settling) = self.settle_log(&mut settlements).await?;
        ops.extend(settlements.into_iter().map(|(id, s, audit)| Op::Append(Box::new(Appended::Settle(id, s, audit)))));
        let result = self.send(ops, false).await.and_then(|done| done.into_iter().try_for_each(|d| d.map(|_| ())));
        cursor::settled(settling, result.is_ok()).await;
        result
    }

    async fn expire(
        &self,
        subscription: &str,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        let rows = self
            .count(Op::Expire {
                subscription: subscription.to_owned(),
                cutoff_ms,
                error: error.clone(),
                template: template.clone(),
            })
            .await?;
        match self.cursor(subscription).filter(|c| !c.feed) {
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
        self.count(Op::Enqueue { subscription: subscription.to_owned(), versions, audit }).await
    }

    async fn feed(&self, subscription: &str, after: FeedCursor, limit: u32) -> Result<FeedPage, StoreError> {
        if let Some(c) = self.cursor(subscription).filter(|c| c.feed) {
            return self.feed_log(&c, after, limit).await;
        }
        // A feed kept in rows. A cursor's log part came from an embedded hub before `hub migrate`,
        // which made rows of what its log still owed: they lie past every row part it gave out.
        let rows = self.feed_rows(subscription, after.rows, limit).await?;
        let next = FeedCursor { log: None, ..after.past(&rows) };
        Ok(FeedPage { rows, next })
    }

    async fn feed_cursor(&self, subscription: &str) -> Result<FeedCursor, StoreError> {
        let rows = sqlx::query_scalar::<_, i64>("SELECT acked FROM feed_cursor WHERE subscription = $1")
            .bind(subscription)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        let log = match self.cursor(subscription).filter(|c| c.feed) {
            Some(c) => Some(self.position(&c.name).await?),
            None => None,
        };
        Ok(FeedCursor { rows, log })
    }

    async fn ack(&self, subscription: &str, cursor: FeedCursor) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut n = sqlx::query(
            "UPDATE outbox SET state = 'delivered', settled_at = $3
             WHERE subscription = $1 AND state = 'pending' AND id <= $2",
        )
        .bind(subscription)
        .bind(cursor.rows)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO feed_cursor (subscription, acked) VALUES ($1, $2)
             ON CONFLICT (subscription) DO UPDATE SET acked = GREATEST(feed_cursor.acked, excluded.acked)",
        )
        .bind(subscription)
        .bind(cursor.rows)
        .execute(&mut *tx)
        .await?;
        if let (Some(c), Some(to)) = (self.cursor(subscription).filter(|c| c.feed), cursor.log) {
            n += Self::ack_log(&mut tx, &c, to).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn deliveries(
        &self,
        state: &str,
        subscription: Option<String>,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.state = $1 AND ($2::text IS NULL OR o.subscription = $2)
             ORDER BY o.id LIMIT $3"
        );
        let one = subscription.clone();
        let mut rows = self
            .fetch(sql, |q| q.bind(state.to_owned()).bind(subscription).bind(i64::from(limit)), outbox_from_row)
            .await?;
        if state == "pending" {
            cursor::add_pending(self, &self.cursors(), one.as_deref(), limit, &mut rows).await?;
        }
        Ok(rows)
    }

    async fn delivery_counts(&self) -> Result<Vec<DeliveryCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT subscription, state, COUNT(*), MIN(created_at) FROM outbox
             WHERE state IN ('pending', 'dead') GROUP BY subscription, state ORDER BY subscription",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<DeliveryCounts> = Vec::new();
        for r in &rows {
            let (sub, state): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let (n, oldest): (i64, Option<i64>) = (r.try_get(2)?, r.try_get(3)?);
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
        for c in self.cursors().by_name.values() {
            let (pending, oldest) = self.count_log(c).await?;
            cursor::add_backlog(&mut out, &c.name, pending, oldest);
        }
        out.sort_by(|a, b| a.subscription.cmp(&b.subscription));
        Ok(out)
    }

    async fn retry_dead(&self, id: i64, audit: NewEntry) -> Result<Option<String>, StoreError> {
        match self.one(Op::RetryDead(id, audit)).await? {
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
        self.count(Op::SetSubscription { name: name.to_owned(), disabled, reason, audit }).await.map(|_| ())
    }

    async fn subscription_states(&self) -> Result<Vec<SubscriptionState>, StoreError> {
        let rows = sqlx::query("SELECT name, disabled, reason, since FROM subscription_state ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionState {
                    name: r.try_get(0)?,
                    disabled: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    since: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn transition(&self, mut write: CaseWrite) -> Result<CaseWritten, StoreError> {
        let bits = self.cursors().take_case_bits(&mut write);
        match self.one(Op::Transition(Box::new(write), bits)).await? {
            Done::Case(c) => Ok(c),
            _ => Err(StoreError::Corrupt("writer answered a case transition with something else".into())),
        }
    }

    async fn cases(&self, query: CaseQuery) -> Result<Vec<CaseRow>, StoreError> {
        cases::cases(&self.pool, &query).await
    }

    async fn publish_linked(
        &self,
        mut versions: Vec<NewVersion>,
        expect: Option<u64>,
    ) -> Result<super::Linked, StoreError> {
        let bits = self.cursors().take_all_bits(&mut versions);
        match self.one(Op::Linked(versions, expect, bits)).await? {
            Done::Linked(l) => Ok(l),
            _ => Err(StoreError::Corrupt("writer answered a linked write with something else".into())),
        }
    }

    async fn routed(&self, record_type: &str, key: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(super::ROUTED_SQL).bind(record_type).bind(key).fetch_all(&self.pool).await?)
    }

    async fn audit_by_record(&self, record_type: &str, key: &str, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.record_type = $1 AND a.record_key = $2
             AND a.record_version IS NOT NULL ORDER BY a.seq DESC LIMIT $3"
        );
        let (t, k) = (record_type.to_owned(), key.to_owned());
        self.fetch(sql, |q| q.bind(t).bind(k).bind(i64::from(limit)), entry_row).await
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
        // As on SQLite: the window's sequence range from the time index, then pages by sequence.
        let (lo, hi): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM audit WHERE time >= $1 AND time < $2")
                .bind(from)
                .bind(to)
                .fetch_one(&self.pool)
                .await?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(Vec::new()) };
        let start = (after as i64).max(lo - 1);
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq > $1 AND a.seq <= $2 AND a.time >= $3
             AND a.time < $4 AND a.actor = $5 AND a.action = $6 ORDER BY a.seq LIMIT $7"
        );
        let (f, t, who, what) = (from.to_owned(), to.to_owned(), actor.to_owned(), action.to_owned());
        self.fetch(
            sql,
            |q| q.bind(start).bind(hi).bind(f).bind(t).bind(who).bind(what).bind(i64::from(limit)),
            entry_row,
        )
        .await
    }

    async fn case_counts(&self, today: &str) -> Result<super::CaseCounts, StoreError> {
        cases::case_counts(&self.pool, today).await
    }

    async fn idempotent(&self, publisher: &str, key: &str) -> Result<Option<(String, Receipt)>, StoreError> {
        linked::idempotent(&self.pool, publisher, key).await
    }

    async fn record_check(&self, run: CheckRun, keep_after: String) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO check_runs (name, kind, started, duration_ms, status, summary, measurements, trigger)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&run.name)
        .bind(&run.kind)
        .bind(&run.started)
        .bind(run.duration_ms as i64)
        .bind(&run.status)
        .bind(&run.summary)
        .bind(run.measurements.to_string())
        .bind(&run.trigger)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM check_runs WHERE started < $1").bind(&keep_after).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn last_check_started(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<String>>("SELECT MAX(started) FROM check_runs WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn check_history(&self, name: &str, limit: u32) -> Result<Vec<CheckRun>, StoreError> {
        let sql =
            format!("SELECT {CHECK_COLUMNS} FROM check_runs WHERE name = $1 ORDER BY started DESC, id DESC LIMIT $2");
        self.fetch(sql, |q| q.bind(name.to_owned()).bind(i64::from(limit)), check_run_from_row).await
    }

    async fn latest_checks(&self) -> Result<Vec<CheckRun>, StoreError> {
        let sql = format!(
            "SELECT {CHECK_COLUMNS} FROM check_runs WHERE id IN (SELECT MAX(id) FROM check_runs GROUP BY name) ORDER BY name"
        );
        self.fetch(sql, |q| q, check_run_from_row).await
    }

    async fn check_runs_between(&self, from: &str, to: &str) -> Result<Vec<CheckRun>, StoreError> {
        let sql =
            format!("SELECT {CHECK_COLUMNS} FROM check_runs WHERE started >= $1 AND started < $2 ORDER BY started, id");
        self.fetch(sql, |q| q.bind(from.to_owned()).bind(to.to_owned()), check_run_from_row).await
    }

    async fn record_alert(&self, a: AlertRecord) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "INSERT INTO alerts (check_name, from_status, to_status, summary, time, flapping)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&a.check)
        .bind(&a.from)
        .bind(&a.to)
        .bind(&a.summary)
        .bind(&a.time)
        .bind(a.flapping)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn alert_attempt(&self, id: i64, error: Option<String>) -> Result<(), StoreError> {
        let delivered = error.is_none().then(|| chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true));
        sqlx::query(
            "UPDATE alerts SET attempts = attempts + 1, last_error = $2, delivered_at = COALESCE($3, delivered_at)
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(delivered)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, check_name, from_status, to_status, summary, time, flapping, delivered_at, attempts, last_error
             FROM alerts ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRecord {
                    id: r.try_get(0)?,
                    check: r.try_get(1)?,
                    from: r.try_get(2)?,
                    to: r.try_get(3)?,
                    summary: r.try_get(4)?,
                    time: r.try_get(5)?,
                    flapping: r.try_get(6)?,
                    delivered_at: r.try_get(7)?,
                    attempts: r.try_get::<i32, _>(8)? as u32,
                    last_error: r.try_get(9)?,
                })
            })
            .collect()
    }

    async fn claim_slot(&self, check: &str, slot: &str) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "INSERT INTO schedule_claims (check_name, slot, claimed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(check)
        .bind(slot)
        .bind(now.to_rfc3339_opts(SecondsFormat::Millis, true))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM schedule_claims WHERE claimed_at < $1")
            .bind(super::sqlite::week_before(now.timestamp_millis()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn audit_action_counts(&self, from: &str, to: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT action, COUNT(*) FROM audit WHERE time >= $1 AND time < $2 GROUP BY action ORDER BY action",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64))).collect()
    }

    async fn database_bytes(&self) -> Result<Option<u64>, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&self.pool).await?;
        Ok(Some(n as u64))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            // Each commit waits for its own flush (`synchronous_commit`).
            syncs: self.stats.commits.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
            wal: None,
        }
    }

    fn is_ready(&self) -> bool {
        self.stats.running.load(Ordering::SeqCst)
            && self.stats.reachable.load(Ordering::SeqCst)
            && lock(&self.tx).is_some()
    }

    async fn close(&self) {
        drop(lock(&self.tx).take());
        let writer = lock(&self.writer).take();
        if let Some(handle) = writer {
            let _ = handle.await;
        }
        if let Some(prober) = lock(&self.prober).take() {
            prober.abort();
        }
        self.pool.close().await;
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(prober) = lock(&self.prober).take() {
            prober.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(redact("postgres://hub:s3cret@db:5432/hub"), "postgres://hub:***@db:5432/hub");
        assert_eq!(redact("postgres://hub:p@ss@db/hub?sslmode=require"), "postgres://hub:***@db/hub?sslmode=require");
        assert_eq!(redact("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(redact("postgres:///hub?host=/run/postgresql"), "postgres:///hub?host=/run/postgresql");
    }
}
