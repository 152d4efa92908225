//! The shared store: PostgreSQL, which several hub nodes may use at once (ops/deploy/cluster.md).
//! Each node runs one writer task that drains its queue into one transaction (group commit, as
//! the SQLite writer does). That transaction first takes one cluster-wide advisory lock, the
//! chain lock, and reads the chain head: audit entries get one global sequence and an unbroken
//! hash chain whichever node writes them, and outbox ids become visible in id order. Everything
//! that writes no audit entry (claims, acknowledgements, check runs, alerts) goes straight to the
//! pool and never waits for the chain lock. Claims lease their entries with
//! `FOR UPDATE SKIP LOCKED`, so each entry is with one node at a time.
//!
//! One piece for now, and over the ~600 lines the layout allows: the log-and-cursor store of the
//! speed issue (issue 16) rewrites this file's writer and tables, and its split (writer, reads,
//! outbox, audit) is made there, once, rather than here and again there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SecondsFormat;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{
    AlertRecord, Audited, CheckRun, DeliveryCounts, FeedCursor, FeedPage, Lease, NewVersion, OutboxRow, Published,
    Receipt, RecordVersion, Settlement, Store, StoreError, SubscriptionState, WriterStats,
};
use crate::ledger::keys::HubKeys;
use crate::ledger::{seal, Anchor, ChainBroken, ChainReport, Checkpoint, Entry, NewEntry, Walk, GENESIS};

/// The advisory lock every chain writer of the cluster takes ("conghua!" in ASCII).
const CHAIN_LOCK: i64 = 0x636f_6e67_6875_6121;

const RECORD_COLUMNS: &str =
    "r.type, r.key, r.version, r.schema_version, r.payload, r.digest, r.publisher, r.received_at, r.audit_seq, r.subjects";
const OUTBOX_COLUMNS: &str =
    "o.id, o.subscription, o.record_type, o.key, o.version, o.event_id, o.state, o.attempts, o.next_attempt_at, o.created_at, o.last_error";
/// The first pending version of the record of outbox entry `o` for its subscription: an entry may
/// go only when it is that one (versions of one record arrive in order).
const FIRST_PENDING_OF_RECORD: &str = "(SELECT MIN(p.id) FROM outbox p WHERE p.subscription = o.subscription
     AND p.record_type = o.record_type AND p.key = o.key AND p.state = 'pending')";
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
        m(1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
        m(2, "autovacuum", include_str!("../../migrations/postgres/0002_autovacuum.sql")),
        m(3, "audit by record", include_str!("../../migrations/postgres/0003_audit_by_record.sql")),
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

/// A write that appends to the audit chain (or may): it runs in the writer's transaction.
enum Op {
    /// Written with others of its kind in one statement ([`append_batch`]).
    Append(Box<Appended>),
    Expire {
        subscription: String,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    },
    Enqueue {
        subscription: String,
        versions: Vec<(String, String, u64)>,
        audit: NewEntry,
    },
    RetryDead(i64, NewEntry),
    SetSubscription {
        name: String,
        disabled: bool,
        reason: Option<String>,
        audit: NewEntry,
    },
}

enum Done {
    Published(Published),
    Audited(Audited),
    Count(u64),
    Subscription(Option<String>),
}

type JobResult = Result<Vec<Result<Done, StoreError>>, StoreError>;

struct Job {
    ops: Vec<Op>,
    reply: oneshot::Sender<JobResult>,
    /// Each operation in its own savepoint (see the SQLite store's `Job`).
    isolated: bool,
}

#[derive(Clone)]
struct Head {
    seq: u64,
    digest: String,
}

/// The writer's view of one group transaction.
struct Group<'a> {
    head: Head,
    keys: &'a HubKeys,
    every: u64,
    time: String,
    now_ms: i64,
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

    /// Verifies the chain in one consistent snapshot, reporting each entry's seq to `progress`.
    pub async fn verify_with(
        &self,
        key: ed25519_dalek::VerifyingKey,
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
    sqlx::query(
        "INSERT INTO hub_identity (id, audit_public_key, subject_key_fingerprint) VALUES (1, $1, $2)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&public)
    .bind(&fingerprint)
    .execute(pool)
    .await?;
    let row = sqlx::query("SELECT audit_public_key, subject_key_fingerprint FROM hub_identity WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let (theirs_public, theirs_fp): (String, String) = (row.try_get(0)?, row.try_get(1)?);
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

async fn writer_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    keys: Arc<HubKeys>,
    opts: PgOptions,
    stats: Arc<Stats>,
) {
    while let Some(first) = rx.recv().await {
        let (jobs, n) = super::gather(first, &mut rx, opts.group_commit_max, |j: &Job| j.ops.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut work = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push(job.reply);
            work.push((job.ops, job.isolated));
        }
        match commit_group(&pool, work, &keys, &opts).await {
            Ok(results) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.operations.fetch_add(n as u64, Ordering::Relaxed);
                stats.reachable.store(true, Ordering::SeqCst);
                for (reply, done) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err((failed, e)) => {
                tracing::error!(error = %crate::mask::scrub(&e.to_string()), operations = n, "group commit failed; nothing of it was stored");
                if matches!(e, StoreError::Unavailable(_)) {
                    stats.reachable.store(false, Ordering::SeqCst);
                }
                let errors = super::group_failure(replies.len(), failed, e);
                for (reply, err) in replies.into_iter().zip(errors) {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
    stats.running.store(false, Ordering::SeqCst);
}

/// One group transaction. On failure: which job failed (if one did) and why; nothing was stored.
async fn commit_group(
    pool: &PgPool,
    work: Vec<(Vec<Op>, bool)>,
    keys: &HubKeys,
    opts: &PgOptions,
) -> Result<Vec<Vec<Result<Done, StoreError>>>, (Option<usize>, StoreError)> {
    let whole = |e: sqlx::Error| (None, StoreError::from(e));
    let mut tx = pool.begin().await.map_err(whole)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *tx).await.map_err(whole)?;
    let head = sqlx::query("SELECT seq, digest FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(whole)?;
    let head = match head {
        Some(r) => Head { seq: r.try_get::<i64, _>(0).map_err(whole)? as u64, digest: r.try_get(1).map_err(whole)? },
        None => Head { seq: 0, digest: GENESIS.to_owned() },
    };
    let now = chrono::Utc::now();
    let mut g = Group {
        head,
        keys,
        every: opts.checkpoint_every,
        time: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        now_ms: now.timestamp_millis(),
    };
    let mut results: Vec<Vec<Result<Done, StoreError>>> = (0..work.len()).map(|_| Vec::new()).collect();
    // Publishes and bare audit entries in a row are written together: a fixed number of
    // statements for the lot, instead of several round trips each while every node waits for the
    // chain lock.
    let mut batch: Vec<(usize, Vec<Appended>)> = Vec::new();
    for (i, (ops, isolated)) in work.into_iter().enumerate() {
        if ops.iter().all(|op| matches!(op, Op::Append(_))) {
            let items = ops
                .into_iter()
                .filter_map(|op| match op {
                    Op::Append(a) => Some(*a),
                    _ => None,
                })
                .collect();
            batch.push((i, items));
            continue;
        }
        flush_appends(&mut tx, &mut g, std::mem::take(&mut batch), &mut results).await?;
        let mut done = Vec::with_capacity(ops.len());
        for op in ops {
            if isolated {
                sqlx::query("SAVEPOINT op").execute(&mut *tx).await.map_err(whole)?;
            }
            let before = g.head.clone();
            match apply(&mut tx, &mut g, op).await {
                Ok(d) => {
                    if isolated {
                        sqlx::query("RELEASE SAVEPOINT op").execute(&mut *tx).await.map_err(whole)?;
                    }
                    done.push(Ok(d));
                }
                Err(e) if isolated && !matches!(e, StoreError::Unavailable(_)) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT op").execute(&mut *tx).await.map_err(whole)?;
                    g.head = before;
                    done.push(Err(e));
                }
                Err(e) => return Err((Some(i), e)),
            }
        }
        results[i] = done;
    }
    flush_appends(&mut tx, &mut g, batch, &mut results).await?;
    tx.commit().await.map_err(whole)?;
    Ok(results)
}

/// What [`append_batch`] writes: a record version with its audit entry, or an audit entry alone
/// (a read, a lookup, a refusal).
enum Appended {
    Publish(NewVersion),
    Audit(NewEntry),
    /// The end of a delivery attempt, audited when it changed the entry.
    Settle(i64, Settlement, Option<NewEntry>),
}

/// Writes a run of publish and audit jobs with [`append_batch`] and files each job's results
/// under it. A failure fails the transaction (no savepoints: only the database itself can make
/// these writes fail); the first job of the run is told the cause, the others to send again.
async fn flush_appends(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    batch: Vec<(usize, Vec<Appended>)>,
    results: &mut [Vec<Result<Done, StoreError>>],
) -> Result<(), (Option<usize>, StoreError)> {
    let Some(first) = batch.first().map(|(i, _)| *i) else { return Ok(()) };
    let sizes: Vec<(usize, usize)> = batch.iter().map(|(i, v)| (*i, v.len())).collect();
    let items = batch.into_iter().flat_map(|(_, v)| v).collect();
    let mut done = append_batch(c, g, items).await.map_err(|e| (Some(first), e))?.into_iter();
    for (i, n) in sizes {
        results[i] = done.by_ref().take(n).map(Ok).collect();
    }
    Ok(())
}

async fn apply(c: &mut PgConnection, g: &mut Group<'_>, op: Op) -> Result<Done, StoreError> {
    match op {
        Op::Append(a) => {
            let mut one = append_batch(c, g, vec![*a]).await?;
            one.pop().ok_or_else(|| StoreError::Corrupt("a write gave no result".into()))
        }
        Op::Expire { subscription, cutoff_ms, error, template } => {
            let sql = format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.subscription = $1 AND o.state = 'pending' AND o.created_at < $2
                 ORDER BY o.id LIMIT 1000 FOR UPDATE"
            );
            let rows = sqlx::query(AssertSqlSafe(sql)).bind(&subscription).bind(cutoff_ms).fetch_all(&mut *c).await?;
            let rows = rows.iter().map(outbox_from_row).collect::<Result<Vec<_>, _>>()?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                sqlx::query(
                    "UPDATE outbox SET state = 'dead', settled_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(g.now_ms)
                .bind(&error)
                .execute(&mut *c)
                .await?;
                let subjects: Option<String> =
                    sqlx::query_scalar("SELECT subjects FROM records WHERE type = $1 AND key = $2 AND version = $3")
                        .bind(&row.record_type)
                        .bind(&row.key)
                        .bind(row.version as i64)
                        .fetch_optional(&mut *c)
                        .await?;
                let entry = NewEntry {
                    record_type: Some(row.record_type.clone()),
                    record_key: Some(row.key.clone()),
                    record_version: Some(row.version),
                    subjects: subjects.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
                    detail: Some(serde_json::json!({
                        "subscription": row.subscription, "event_id": row.event_id, "reason": error,
                    })),
                    ..template.clone()
                };
                entries.push(Appended::Audit(entry));
            }
            append_batch(c, g, entries).await?;
            Ok(Done::Count(rows.len() as u64))
        }
        Op::Enqueue { subscription, versions, audit } => {
            for (t, k, v) in &versions {
                insert_outbox(c, g, &subscription, t, k, *v).await?;
            }
            append_batch(c, g, vec![Appended::Audit(audit)]).await?;
            Ok(Done::Count(versions.len() as u64))
        }
        Op::RetryDead(id, audit) => {
            let sub: Option<String> = sqlx::query_scalar(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, last_error = NULL,
                 settled_at = NULL, lease_owner = NULL, lease_until = NULL WHERE id = $1 AND state = 'dead'
                 RETURNING subscription",
            )
            .bind(id)
            .bind(g.now_ms)
            .fetch_optional(&mut *c)
            .await?;
            if sub.is_some() {
                append_batch(c, g, vec![Appended::Audit(audit)]).await?;
            }
            Ok(Done::Subscription(sub))
        }
        Op::SetSubscription { name, disabled, reason, audit } => {
            sqlx::query(
                "INSERT INTO subscription_state (name, disabled, reason, since) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET disabled = excluded.disabled, reason = excluded.reason, since = excluded.since",
            )
            .bind(&name)
            .bind(disabled)
            .bind(&reason)
            .bind(&g.time)
            .execute(&mut *c)
            .await?;
            append_batch(c, g, vec![Appended::Audit(audit)]).await?;
            Ok(Done::Count(1))
        }
    }
}

/// Applies the settlements of a batch in one statement; returns the positions (in `items`) of
/// those that changed their entry (still pending, first settlement of it in the batch).
async fn settle_batch(
    c: &mut PgConnection,
    g: &Group<'_>,
    items: &[Appended],
) -> Result<std::collections::HashSet<usize>, StoreError> {
    let (mut ids, mut kinds, mut at, mut errors, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (n, item) in items.iter().enumerate() {
        let Appended::Settle(id, s, _) = item else { continue };
        if ids.contains(id) {
            continue;
        }
        let (kind, when, error) = match s {
            Settlement::Delivered => ("delivered", 0, None),
            Settlement::Retry { at_ms, error } => ("retry", *at_ms, Some(error.clone())),
            Settlement::Dead { error } => ("dead", 0, Some(error.clone())),
        };
        ids.push(*id);
        kinds.push(kind);
        at.push(when);
        errors.push(error);
        positions.push(n);
    }
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let changed: Vec<i64> = sqlx::query_scalar(
        "UPDATE outbox o SET
             state = CASE u.kind WHEN 'retry' THEN o.state ELSE u.kind END,
             attempts = o.attempts + 1,
             next_attempt_at = CASE u.kind WHEN 'retry' THEN u.at ELSE o.next_attempt_at END,
             last_error = u.err,
             settled_at = CASE u.kind WHEN 'retry' THEN o.settled_at ELSE $5 END,
             lease_owner = NULL, lease_until = NULL
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS u(id, kind, at, err)
         WHERE o.id = u.id AND o.state = 'pending'
         RETURNING o.id",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&at)
    .bind(&errors)
    .bind(g.now_ms)
    .fetch_all(&mut *c)
    .await?;
    Ok(ids.iter().zip(positions).filter(|(id, _)| changed.contains(id)).map(|(_, n)| n).collect())
}

/// Column arrays of one batch of publishes, bound to one statement.
#[derive(Default)]
struct Rows {
    // audit
    a_seq: Vec<i64>,
    a_time: Vec<String>,
    a_actor: Vec<String>,
    a_action: Vec<String>,
    a_type: Vec<Option<String>>,
    a_key: Vec<Option<String>>,
    a_version: Vec<Option<i64>>,
    a_subjects: Vec<String>,
    a_purpose: Vec<Option<String>>,
    a_outcome: Vec<String>,
    a_detail: Vec<Option<String>>,
    a_prev: Vec<String>,
    a_digest: Vec<String>,
    // audit_subjects
    as_hash: Vec<String>,
    as_seq: Vec<i64>,
    // records
    r_type: Vec<String>,
    r_key: Vec<String>,
    r_version: Vec<i64>,
    r_schema: Vec<i32>,
    r_payload: Vec<String>,
    r_digest: Vec<String>,
    r_publisher: Vec<String>,
    r_seq: Vec<i64>,
    r_subjects: Vec<String>,
    // latest and the subject index: the last version of each record in the batch
    l_type: Vec<String>,
    l_key: Vec<String>,
    l_version: Vec<i64>,
    s_hash: Vec<String>,
    s_type: Vec<String>,
    s_key: Vec<String>,
    // people an earlier version in the batch named and its record's last one does not
    p_hash: Vec<String>,
    p_type: Vec<String>,
    p_key: Vec<String>,
    // outbox, in publish order (ids follow it, and with them per-record order)
    o_sub: Vec<String>,
    o_type: Vec<String>,
    o_key: Vec<String>,
    o_version: Vec<i64>,
    o_event: Vec<String>,
    // idempotency
    i_publisher: Vec<String>,
    i_key: Vec<String>,
    i_digest: Vec<String>,
    i_receipt: Vec<String>,
    // checkpoints
    c_seq: Vec<i64>,
    c_digest: Vec<String>,
    c_signature: Vec<String>,
}

impl Rows {
    /// Seals the next entry of the chain and adds it (with its subjects and any checkpoint).
    fn seal(&mut self, g: &mut Group<'_>, entry: NewEntry) -> Result<Entry, StoreError> {
        let e = seal(entry, g.head.seq + 1, g.time.clone(), &g.head.digest);
        g.head = Head { seq: e.seq, digest: e.digest.clone() };
        // An entry about a stored version is found through its record (see `audit_by_subject`).
        if !e.names_a_version() {
            for s in &e.subjects {
                self.as_hash.push(s.clone());
                self.as_seq.push(e.seq as i64);
            }
        }
        if e.seq.is_multiple_of(g.every) {
            let cp = g.keys.checkpoint(e.seq, &e.digest, g.time.clone());
            self.c_seq.push(cp.seq as i64);
            self.c_digest.push(cp.digest);
            self.c_signature.push(cp.signature);
        }
        self.a_seq.push(e.seq as i64);
        self.a_time.push(e.time.clone());
        self.a_actor.push(e.actor.clone());
        self.a_action.push(e.action.clone());
        self.a_type.push(e.record_type.clone());
        self.a_key.push(e.record_key.clone());
        self.a_version.push(e.record_version.map(|n| n as i64));
        self.a_subjects.push(json_text(&e.subjects)?);
        self.a_purpose.push(e.purpose.clone());
        self.a_outcome.push(e.outcome.clone());
        self.a_detail.push(e.detail.as_ref().map(|d| d.to_string()));
        self.a_prev.push(e.prev.clone());
        self.a_digest.push(e.digest.clone());
        Ok(e)
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes a batch of publishes and audit entries with a fixed number of statements (the caller
/// holds the chain lock): two reads (idempotency keys seen before, current versions), the
/// versions, receipts and audit entries worked out here in order, then one statement that writes
/// every table. Results are in input order; a repeated idempotency key inside the batch is a
/// replay or conflict of the first.
async fn append_batch(c: &mut PgConnection, g: &mut Group<'_>, items: Vec<Appended>) -> Result<Vec<Done>, StoreError> {
    use std::collections::HashMap;
    let (mut idem_p, mut idem_k) = (Vec::new(), Vec::new());
    let (mut rec_t, mut rec_k) = (Vec::new(), Vec::new());
    for v in items.iter().filter_map(|i| match i {
        Appended::Publish(v) => Some(v),
        Appended::Audit(_) | Appended::Settle(..) => None,
    }) {
        if let Some((key, _)) = &v.idempotency {
            idem_p.push(v.publisher.clone());
            idem_k.push(key.clone());
        }
        rec_t.push(v.record_type.clone());
        rec_k.push(v.key.clone());
    }
    // (publisher, key) → (request digest, receipt JSON): stored before, or earlier in this batch.
    let mut seen: HashMap<(String, String), (String, String)> = HashMap::new();
    if !idem_p.is_empty() {
        let rows = sqlx::query(
            "SELECT i.publisher, i.idem_key, i.request_digest, i.receipt FROM idempotency i
             JOIN UNNEST($1::text[], $2::text[]) AS u(p, k) ON i.publisher = u.p AND i.idem_key = u.k",
        )
        .bind(&idem_p)
        .bind(&idem_k)
        .fetch_all(&mut *c)
        .await?;
        for r in &rows {
            seen.insert((r.try_get(0)?, r.try_get(1)?), (r.try_get(2)?, r.try_get(3)?));
        }
    }
    let mut current: HashMap<(String, String), u64> = HashMap::new();
    let rows = if rec_t.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT l.type, l.key, l.version FROM latest l
         JOIN (SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])) AS u(t, k) ON l.type = u.t AND l.key = u.k",
        )
        .bind(&rec_t)
        .bind(&rec_k)
        .fetch_all(&mut *c)
        .await?
    };
    for r in &rows {
        current.insert((r.try_get(0)?, r.try_get(1)?), r.try_get::<i64, _>(2)? as u64);
    }

    let settled = settle_batch(c, g, &items).await?;
    let mut out = Vec::with_capacity(items.len());
    let mut w = Rows::default();
    // The last version of each record in the batch: its latest row and its subject index rows.
    let mut last: HashMap<(String, String), (u64, Vec<String>)> = HashMap::new();
    // Everyone each record's versions in the batch named: those its last version drops go to
    // subjects_past, as the rows of a version stored alone would.
    let mut named: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (n, item) in items.into_iter().enumerate() {
        let v = match item {
            Appended::Audit(entry) => {
                let seq = w.seal(g, entry)?.seq;
                out.push(Done::Audited(Audited { seq }));
                continue;
            }
            Appended::Settle(_, _, audit) => {
                let changed = settled.contains(&n);
                if let (true, Some(entry)) = (changed, audit) {
                    w.seal(g, entry)?;
                }
                out.push(Done::Count(u64::from(changed)));
                continue;
            }
            Appended::Publish(v) => v,
        };
        if let Some((key, digest)) = &v.idempotency {
            if let Some((first_digest, receipt)) = seen.get(&(v.publisher.clone(), key.clone())) {
                out.push(Done::Published(if first_digest == digest {
                    Published::Replayed(serde_json::from_str(receipt).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                } else {
                    Published::Conflict
                }));
                continue;
            }
        }
        let id = (v.record_type.clone(), v.key.clone());
        let version = current.get(&id).map_or(1, |n| n + 1);
        current.insert(id.clone(), version);
        let mut entry = v.audit;
        entry.record_version = Some(version);
        let e = w.seal(g, entry)?;

        w.r_type.push(v.record_type.clone());
        w.r_key.push(v.key.clone());
        w.r_version.push(version as i64);
        w.r_schema.push(v.schema_version as i32);
        w.r_payload.push(v.canonical);
        w.r_digest.push(v.digest.clone());
        w.r_publisher.push(v.publisher.clone());
        w.r_seq.push(e.seq as i64);
        w.r_subjects.push(json_text(&v.subjects)?);
        for sub in &v.routes {
            w.o_sub.push(sub.clone());
            w.o_type.push(v.record_type.clone());
            w.o_key.push(v.key.clone());
            w.o_version.push(version as i64);
            w.o_event.push(super::event_id(sub, &v.record_type, &v.key, version));
        }
        named.entry(id.clone()).or_default().extend(v.subjects.iter().cloned());
        last.insert(id, (version, v.subjects));
        let receipt = Receipt {
            record_type: v.record_type,
            key: v.key,
            version,
            digest: v.digest,
            audit_seq: e.seq,
            received_at: g.time.clone(),
            routed: v.routes.len() as u64,
        };
        if let Some((key, digest)) = v.idempotency {
            let text = json_text(&receipt)?;
            w.i_publisher.push(v.publisher);
            w.i_key.push(key.clone());
            w.i_digest.push(digest.clone());
            w.i_receipt.push(text.clone());
            seen.insert((w.i_publisher[w.i_publisher.len() - 1].clone(), key), (digest, text));
        }
        out.push(Done::Published(Published::Created(receipt)));
    }
    if w.a_seq.is_empty() {
        return Ok(out);
    }
    for ((t, k), (version, subjects)) in last {
        let mut dropped: Vec<String> = named
            .remove(&(t.clone(), k.clone()))
            .unwrap_or_default()
            .into_iter()
            .filter(|h| !subjects.contains(h))
            .collect();
        dropped.sort();
        dropped.dedup();
        for h in dropped {
            w.p_hash.push(h);
            w.p_type.push(t.clone());
            w.p_key.push(k.clone());
        }
        for h in subjects {
            w.s_hash.push(h);
            w.s_type.push(t.clone());
            w.s_key.push(k.clone());
        }
        w.l_type.push(t);
        w.l_key.push(k);
        w.l_version.push(version as i64);
    }
    // One statement: its parts see the same snapshot, so the subject index is brought to the new
    // set by deleting what is no longer in it and inserting what is missing.
    sqlx::query(
        "WITH
         a AS (INSERT INTO audit (seq, time, actor, action, record_type, record_key, record_version, subjects, purpose,
                                  outcome, detail, prev, digest)
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])),
         x AS (INSERT INTO audit_subjects (subject_hash, seq)
               SELECT * FROM UNNEST($14::text[], $15::bigint[]) ON CONFLICT DO NOTHING),
         r AS (INSERT INTO records (type, key, version, schema_version, payload, digest, publisher, received_at,
                                    audit_seq, subjects)
               SELECT t, k, v, sv, p, d, pub, $41, seq, s
               FROM UNNEST($16::text[], $17::text[], $18::bigint[], $19::int[], $20::text[], $21::text[], $22::text[],
                           $23::bigint[], $24::text[]) AS u(t, k, v, sv, p, d, pub, seq, s)),
         l AS (INSERT INTO latest (type, key, version) SELECT * FROM UNNEST($25::text[], $26::text[], $27::bigint[])
               ON CONFLICT (type, key) DO UPDATE SET version = excluded.version),
         sd AS (DELETE FROM subjects s USING UNNEST($25::text[], $26::text[]) AS u(t, k)
                WHERE s.type = u.t AND s.key = u.k
                  AND NOT EXISTS (SELECT 1 FROM UNNEST($28::text[], $29::text[], $30::text[]) AS n(h, t, k)
                                  WHERE n.h = s.subject_hash AND n.t = s.type AND n.k = s.key)
                RETURNING s.subject_hash, s.type, s.key),
         sp AS (INSERT INTO subjects_past (subject_hash, type, key)
                SELECT * FROM sd UNION SELECT * FROM UNNEST($45::text[], $46::text[], $47::text[])
                ON CONFLICT DO NOTHING),
         si AS (INSERT INTO subjects (subject_hash, type, key)
                SELECT * FROM UNNEST($28::text[], $29::text[], $30::text[]) ON CONFLICT DO NOTHING),
         o AS (INSERT INTO outbox (subscription, record_type, key, version, event_id, state, attempts, next_attempt_at,
                                   created_at)
               SELECT s, t, k, v, e, 'pending', 0, $42, $42
               FROM UNNEST($31::text[], $32::text[], $33::text[], $34::bigint[], $35::text[]) WITH ORDINALITY
                    AS u(s, t, k, v, e, n)
               ORDER BY n),
         i AS (INSERT INTO idempotency (publisher, idem_key, request_digest, receipt, created_at)
               SELECT p, k, d, r, $41 FROM UNNEST($36::text[], $37::text[], $38::text[], $39::text[]) AS u(p, k, d, r)),
         c AS (INSERT INTO checkpoints (seq, digest, signature, time)
               SELECT seq, d, sig, $41 FROM UNNEST($40::bigint[], $43::text[], $44::text[]) AS u(seq, d, sig))
         SELECT 1",
    )
    .bind(&w.a_seq)
    .bind(&w.a_time)
    .bind(&w.a_actor)
    .bind(&w.a_action)
    .bind(&w.a_type)
    .bind(&w.a_key)
    .bind(&w.a_version)
    .bind(&w.a_subjects)
    .bind(&w.a_purpose)
    .bind(&w.a_outcome)
    .bind(&w.a_detail)
    .bind(&w.a_prev)
    .bind(&w.a_digest)
    .bind(&w.as_hash)
    .bind(&w.as_seq)
    .bind(&w.r_type)
    .bind(&w.r_key)
    .bind(&w.r_version)
    .bind(&w.r_schema)
    .bind(&w.r_payload)
    .bind(&w.r_digest)
    .bind(&w.r_publisher)
    .bind(&w.r_seq)
    .bind(&w.r_subjects)
    .bind(&w.l_type)
    .bind(&w.l_key)
    .bind(&w.l_version)
    .bind(&w.s_hash)
    .bind(&w.s_type)
    .bind(&w.s_key)
    .bind(&w.o_sub)
    .bind(&w.o_type)
    .bind(&w.o_key)
    .bind(&w.o_version)
    .bind(&w.o_event)
    .bind(&w.i_publisher)
    .bind(&w.i_key)
    .bind(&w.i_digest)
    .bind(&w.i_receipt)
    .bind(&w.c_seq)
    .bind(&g.time)
    .bind(g.now_ms)
    .bind(&w.c_digest)
    .bind(&w.c_signature)
    .bind(&w.p_hash)
    .bind(&w.p_type)
    .bind(&w.p_key)
    .execute(&mut *c)
    .await?;
    Ok(out)
}

async fn insert_outbox(
    c: &mut PgConnection,
    g: &Group<'_>,
    subscription: &str,
    record_type: &str,
    key: &str,
    version: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (subscription, record_type, key, version, event_id, state, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
    )
    .bind(subscription)
    .bind(record_type)
    .bind(key)
    .bind(version as i64)
    .bind(super::event_id(subscription, record_type, key, version))
    .bind(g.now_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}

fn record_from_row(r: &PgRow) -> Result<RecordVersion, StoreError> {
    let payload: String = r.try_get(4)?;
    let subjects: String = r.try_get(9)?;
    Ok(RecordVersion {
        record_type: r.try_get(0)?,
        key: r.try_get(1)?,
        version: r.try_get::<i64, _>(2)? as u64,
        schema_version: r.try_get::<i32, _>(3)? as u32,
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(format!("record payload: {e}")))?,
        digest: r.try_get(5)?,
        publisher: r.try_get(6)?,
        received_at: r.try_get(7)?,
        audit_seq: r.try_get::<i64, _>(8)? as u64,
        subjects: serde_json::from_str(&subjects).map_err(|e| StoreError::Corrupt(format!("record subjects: {e}")))?,
    })
}

fn outbox_from_row(r: &PgRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        subscription: r.try_get(1)?,
        record_type: r.try_get(2)?,
        key: r.try_get(3)?,
        version: r.try_get::<i64, _>(4)? as u64,
        event_id: r.try_get(5)?,
        state: r.try_get(6)?,
        attempts: r.try_get::<i32, _>(7)? as u32,
        next_attempt_at: r.try_get(8)?,
        created_at: r.try_get(9)?,
        last_error: r.try_get(10)?,
    })
}

/// An audit row; `Err` says why it cannot be read (the verifier reports it as a break).
fn entry_from_row(r: &PgRow) -> Result<Entry, String> {
    let get = |e: sqlx::Error| format!("row cannot be read: {e}");
    let subjects: String = r.try_get(7).map_err(get)?;
    let detail: Option<String> = r.try_get(10).map_err(get)?;
    Ok(Entry {
        seq: r.try_get::<i64, _>(0).map_err(get)? as u64,
        time: r.try_get(1).map_err(get)?,
        actor: r.try_get(2).map_err(get)?,
        action: r.try_get(3).map_err(get)?,
        record_type: r.try_get(4).map_err(get)?,
        record_key: r.try_get(5).map_err(get)?,
        record_version: r.try_get::<Option<i64>, _>(6).map_err(get)?.map(|v| v as u64),
        subjects: serde_json::from_str(&subjects).map_err(|x| format!("subjects cannot be decoded: {x}"))?,
        purpose: r.try_get(8).map_err(get)?,
        outcome: r.try_get(9).map_err(get)?,
        detail: detail
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|x| format!("detail cannot be decoded: {x}"))?,
        prev: r.try_get(11).map_err(get)?,
        digest: r.try_get(12).map_err(get)?,
    })
}

/// An audit row for a read (a row that cannot be decoded is corrupt).
fn entry_row(r: &PgRow) -> Result<Entry, StoreError> {
    entry_from_row(r).map_err(StoreError::Corrupt)
}

fn check_run_from_row(r: &PgRow) -> Result<CheckRun, StoreError> {
    Ok(CheckRun {
        name: r.try_get(0)?,
        kind: r.try_get(1)?,
        started: r.try_get(2)?,
        duration_ms: r.try_get::<i64, _>(3)? as u64,
        status: r.try_get(4)?,
        summary: r.try_get(5)?,
        measurements: serde_json::from_str(&r.try_get::<String, _>(6)?).unwrap_or(Value::Null),
        trigger: r.try_get(7)?,
    })
}

fn checkpoint_from_row(r: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: r.try_get::<i64, _>(0)? as u64,
        digest: r.try_get(1)?,
        signature: r.try_get(2)?,
        time: r.try_get(3)?,
    })
}

/// Entries read per round trip while verifying.
const VERIFY_PAGE: i64 = 5000;

async fn verify_in(
    c: &mut PgConnection,
    key: ed25519_dalek::VerifyingKey,
    anchor: Option<&Anchor>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
    let from = anchor.map_or(0, |a| a.seq) as i64;
    let checkpoints = sqlx::query("SELECT seq, digest, signature, time FROM checkpoints WHERE seq >= $1 ORDER BY seq")
        .bind(from)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(checkpoint_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut walk = Walk::new(key, checkpoints, anchor);
    // Keyset pages: the first from the anchor itself (re-checked), then strictly after the last.
    let (mut after, mut inclusive) = (from, true);
    loop {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit a WHERE a.seq > $1 OR ($2 AND a.seq = $1) ORDER BY a.seq LIMIT $3"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(after).bind(inclusive).bind(VERIFY_PAGE).fetch_all(&mut *c).await?;
        inclusive = false;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let seq = row.try_get::<i64, _>(0).unwrap_or(0) as u64;
            after = seq as i64;
            let entry = match entry_from_row(row) {
                Ok(e) => e,
                Err(reason) => return Ok(Err(ChainBroken { seq, reason })),
            };
            match walk.push(&entry) {
                Ok(true) => progress(seq),
                Ok(false) => {}
                Err(b) => return Ok(Err(b)),
            }
        }
    }
    Ok(walk.finish())
}

#[async_trait]
impl Store for PostgresStore {
    async fn publish(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError> {
        let ops = versions.into_iter().map(|v| Op::Append(Box::new(Appended::Publish(v)))).collect();
        let done = self.send(ops, false).await?;
        Ok(done
            .into_iter()
            .map(|d| match d {
                Ok(Done::Published(p)) => Ok(p),
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

    async fn audit_by_subject(&self, subject_hash: &str, limit: u32) -> Result<Vec<Entry>, StoreError> {
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
             ) ORDER BY a.seq DESC LIMIT $2"
        );
        self.fetch(sql, |q| q.bind(subject_hash.to_owned()).bind(i64::from(limit)), entry_row).await
    }

    async fn verify_audit(&self) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        self.verify_with(self.keys.verifying_key(), None, &mut |_| {}).await
    }

    async fn verify_audit_since(&self, anchor: Anchor) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
        self.verify_with(self.keys.verifying_key(), Some(&anchor), &mut |_| {}).await
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

    async fn claim(
        &self,
        subscription: &str,
        now_ms: i64,
        limit: u32,
        lease: Lease,
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
                 ORDER BY o.id LIMIT $3
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE outbox o SET lease_owner = $4, lease_until = $5 FROM due WHERE o.id = due.id
             RETURNING {OUTBOX_COLUMNS}"
        );
        let mut rows = self
            .fetch(
                sql,
                |q| {
                    q.bind(subscription.to_owned())
                        .bind(now_ms)
                        .bind(i64::from(limit))
                        .bind(lease.owner)
                        .bind(lease.until_ms)
                },
                outbox_from_row,
            )
            .await?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    async fn next_due(&self, subscription: &str) -> Result<Option<i64>, StoreError> {
        // The earliest entries by due time, not the minimum over the whole backlog: a MIN over
        // every pending entry (each with its NOT EXISTS) cost the database O(backlog) after
        // every claim. An entry further on falls due no earlier than the last one read, so that
        // bounds the answer when the leases of those read end later.
        const LOOK: i64 = 64;
        let sql = format!(
            "SELECT o.next_attempt_at, o.lease_until FROM outbox o
             WHERE o.subscription = $1 AND o.state = 'pending' AND o.id = {FIRST_PENDING_OF_RECORD}
             ORDER BY o.next_attempt_at LIMIT $2"
        );
        let rows: Vec<(i64, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(subscription).bind(LOOK).fetch_all(&self.pool).await?;
        let due = rows.iter().map(|(at, lease)| (*at).max(lease.unwrap_or(0))).min();
        let bound = rows.last().filter(|_| rows.len() as i64 == LOOK).map(|(at, _)| *at);
        Ok(match (due, bound) {
            (Some(d), Some(b)) => Some(d.min(b)),
            (d, _) => d,
        })
    }

    async fn settle(&self, id: i64, settlement: Settlement, audit: Option<NewEntry>) -> Result<(), StoreError> {
        self.count(Op::Append(Box::new(Appended::Settle(id, settlement, audit)))).await.map(|_| ())
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND state = 'pending'",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn settle_many(&self, settlements: Vec<(i64, Settlement, Option<NewEntry>)>) -> Result<(), StoreError> {
        let ops = settlements
            .into_iter()
            .map(|(id, s, audit)| Op::Append(Box::new(Appended::Settle(id, s, audit))))
            .collect();
        for done in self.send(ops, true).await? {
            done?;
        }
        Ok(())
    }

    async fn expire(
        &self,
        subscription: &str,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        self.count(Op::Expire { subscription: subscription.to_owned(), cutoff_ms, error, template }).await
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
        // Feeds are rows here. A cursor's log part came from an embedded hub before `hub migrate`,
        // which made rows of what its log still owed: they lie past every row part it gave out.
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE o.subscription = $1 AND o.state = 'pending' AND o.id > $2
             ORDER BY o.id LIMIT $3"
        );
        let rows = self
            .fetch(sql, |q| q.bind(subscription.to_owned()).bind(after.rows).bind(i64::from(limit)), outbox_from_row)
            .await?;
        let next = FeedCursor { log: None, ..after.past(&rows) };
        Ok(FeedPage { rows, next })
    }

    async fn feed_cursor(&self, subscription: &str) -> Result<FeedCursor, StoreError> {
        let rows = sqlx::query_scalar::<_, i64>("SELECT acked FROM feed_cursor WHERE subscription = $1")
            .bind(subscription)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0);
        Ok(FeedCursor { rows, log: None })
    }

    async fn ack(&self, subscription: &str, cursor: FeedCursor) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
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
        self.fetch(sql, |q| q.bind(state.to_owned()).bind(subscription).bind(i64::from(limit)), outbox_from_row).await
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
