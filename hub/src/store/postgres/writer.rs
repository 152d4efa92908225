//! The writer of one node: its queue drained into one transaction under the cluster's chain lock
//! (group commit), and the writes that append to the chain besides publishes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::SecondsFormat;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use super::append::{append_batch, Appended};
use super::reads::outbox_from_row;
use super::{PgOptions, Stats, OUTBOX_COLUMNS};
use crate::ledger::keys::HubKeys;
use crate::ledger::{NewEntry, GENESIS};
use crate::store::{Audited, Published, StoreError};

/// A write that appends to the audit chain (or may): it runs in the writer's transaction.
pub(super) enum Op {
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
    /// Cursors for these subscriptions (`log.rs`), under the chain lock: a new one starts at the
    /// head, after everything committed before it and before everything committed after.
    Register(Vec<String>),
    /// A case transition, with the cursor bits of each of its versions.
    Transition(Box<crate::store::CaseWrite>, Vec<i64>),
    /// Versions written together ([`crate::store::Store::publish_linked`]).
    Linked(Vec<crate::store::NewVersion>, Option<u64>, Vec<i64>),
}

pub(super) enum Done {
    Published(Published),
    Audited(Audited),
    Count(u64),
    Subscription(Option<String>),
    /// (name, slot, position, tenure) of each cursor.
    Cursors(Vec<(String, i64, i64, i64)>),
    Case(crate::store::CaseWritten),
    Linked(crate::store::Linked),
    /// A first version found its record stored ([`crate::store::StoreError::NotFirst`]).
    NotFirst,
}

pub(super) type JobResult = Result<Vec<Result<Done, StoreError>>, StoreError>;

pub(super) struct Job {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<JobResult>,
    /// Each operation in its own savepoint (see the SQLite store's `Job`).
    pub isolated: bool,
}

#[derive(Clone)]
pub(super) struct Head {
    pub seq: u64,
    pub digest: String,
}

/// The writer's view of one group transaction.
pub(super) struct Group<'a> {
    pub head: Head,
    pub keys: &'a HubKeys,
    pub every: u64,
    pub time: String,
    pub now_ms: i64,
}

/// The advisory lock every chain writer of the cluster takes ("conghua!" in ASCII).
const CHAIN_LOCK: i64 = i64::from_be_bytes(*b"conghua!");

pub(super) async fn writer_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    keys: Arc<HubKeys>,
    opts: PgOptions,
    stats: Arc<Stats>,
) {
    while let Some(first) = rx.recv().await {
        let (jobs, n) = crate::store::gather(first, &mut rx, opts.group_commit_max, |j: &Job| j.ops.len());
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
                let errors = crate::store::group_failure(replies.len(), failed, e);
                for (reply, err) in replies.into_iter().zip(errors) {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
    stats.running.store(false, Ordering::SeqCst);
}

/// One group transaction. On failure: which job failed (if one did) and why; nothing was stored.
pub(super) async fn commit_group(
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

/// Writes a run of publish and audit jobs with [`append_batch`] and files each job's results
/// under it. A failure fails the transaction (no savepoints: only the database itself can make
/// these writes fail); the first job of the run is told the cause, the others to send again.
pub(super) async fn flush_appends(
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

pub(super) async fn apply(c: &mut PgConnection, g: &mut Group<'_>, op: Op) -> Result<Done, StoreError> {
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
                let entry = super::log::expired_entry(row, subjects.as_deref(), &error, &template);
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
        Op::Register(names) => {
            let rows: Vec<(String, i32, i64, i64)> =
                sqlx::query_as("SELECT subscription, slot, position, tenure FROM cursors").fetch_all(&mut *c).await?;
            let taken = rows.iter().map(|(n, slot, _, _)| (n.clone(), i64::from(*slot))).collect();
            let mut cursors: Vec<(String, i64, i64, i64)> =
                rows.into_iter().map(|(n, slot, position, tenure)| (n, i64::from(slot), position, tenure)).collect();
            for (name, slot) in crate::store::cursor::new_slots(&names, &taken) {
                sqlx::query("INSERT INTO cursors (subscription, slot, position) VALUES ($1, $2, $3)")
                    .bind(&name)
                    .bind(slot as i32)
                    .bind(g.head.seq as i64)
                    .execute(&mut *c)
                    .await?;
                cursors.push((name, slot, g.head.seq as i64, 0));
            }
            cursors.retain(|(n, ..)| names.contains(n));
            Ok(Done::Cursors(cursors))
        }
        Op::Transition(write, bits) => super::cases::transition(c, g, *write, bits).await,
        Op::Linked(versions, expect, bits) => super::linked::linked(c, g, versions, expect, bits).await,
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

pub(super) async fn insert_outbox(
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
    .bind(crate::store::event_id(subscription, record_type, key, version))
    .bind(g.now_ms)
    .execute(&mut *c)
    .await?;
    Ok(())
}
