//! Subscriptions served from the log on PostgreSQL (the model is `store/cursor.rs`). Several
//! nodes share the database, so a push cursor is served by one node at a time: the holder of its
//! lease, which every claim renews. Another node's claims get nothing for it until the lease runs
//! out (its holder stopped or died); then it takes the cursor over from the durable position, and
//! what the old holder had out goes again (at least once, same event ids). A feed needs no holder:
//! its readers carry their place, and acknowledgements move its cursor from any node.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;

use super::append::{Appended, LogWrite, NewRow};
use super::writer::Op;
use super::PostgresStore;
use crate::ledger::NewEntry;
use crate::store::cursor::{self, log_row, split_id, Cursor, Scanned, State};
use crate::store::{FeedCursor, FeedPage, Lease, OutboxRow, Settlement, StoreError};

/// Entries routed to cursor `$4` (its bit) of record type `$1` after `$2` up to `$3`, each with
/// what the outbox holds of its record for subscription `$5`.
const SCAN: &str = "SELECT r.audit_seq, r.key, r.version, r.received_at,
        EXISTS (SELECT 1 FROM outbox o WHERE o.subscription = $5 AND o.record_type = r.type AND o.key = r.key
                AND o.state IN ('pending', 'dead') AND o.version = r.version),
        EXISTS (SELECT 1 FROM outbox o WHERE o.subscription = $5 AND o.record_type = r.type AND o.key = r.key
                AND o.state = 'pending' AND o.version < r.version)
    FROM records r
    WHERE r.type = $1 AND r.audit_seq > $2 AND r.audit_seq <= $3 AND (r.routes & $4::bigint) <> 0
    ORDER BY r.audit_seq LIMIT $6";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The writes that settle `entries` of a cursor: a delivery writes nothing but its audit entry,
/// a failure becomes an outbox row; `advance` moves the cursor.
pub(super) fn settle_write(
    entries: Vec<(OutboxRow, Settlement, Option<NewEntry>)>,
    advance: Option<(String, i64)>,
) -> LogWrite {
    let mut w = LogWrite { count: entries.len() as u64, advance, ..LogWrite::default() };
    for (row, settlement, audit) in entries {
        let attempts = row.attempts + 1;
        match settlement {
            Settlement::Delivered => {}
            Settlement::Retry { at_ms, error } => {
                w.rows.push(NewRow { row, state: "pending", attempts, next_ms: at_ms, error: Some(error) });
            }
            Settlement::Dead { error } => {
                w.rows.push(NewRow { row, state: "dead", attempts, next_ms: now_ms(), error: Some(error) });
            }
        }
        w.audits.extend(audit);
    }
    w
}

/// The audit entry of an entry dead-lettered by age, made from `template`.
pub(super) fn expired_entry(row: &OutboxRow, subjects: Option<&str>, error: &str, template: &NewEntry) -> NewEntry {
    NewEntry {
        record_type: Some(row.record_type.clone()),
        record_key: Some(row.key.clone()),
        record_version: Some(row.version),
        subjects: subjects.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default(),
        detail: Some(serde_json::json!({
            "subscription": row.subscription, "event_id": row.event_id, "reason": error,
        })),
        ..template.clone()
    }
}

#[async_trait]
impl cursor::Log for PostgresStore {
    async fn due_rows(
        &self,
        subscription: &str,
        behind: cursor::Behind,
        now_ms: i64,
        limit: u32,
        lease: &Lease,
        busy: HashSet<(String, String)>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.claim_rows(subscription, behind, now_ms, limit, lease.clone(), busy).await
    }

    async fn scan(&self, cursor: &Cursor, after: i64, limit: u32) -> Result<(Vec<Scanned>, i64), StoreError> {
        // The end first: the chain lock makes commits visible in sequence order, so everything at
        // or below it is visible to the next statement, and whatever commits later is past it.
        let end: Option<i64> = sqlx::query_scalar("SELECT MAX(audit_seq) FROM records WHERE type = $1")
            .bind(&cursor.record_type)
            .fetch_one(&self.pool)
            .await?;
        let Some(end) = end.filter(|e| *e > after) else { return Ok((Vec::new(), after)) };
        let rows = sqlx::query(SCAN)
            .bind(&cursor.record_type)
            .bind(after)
            .bind(end)
            .bind(cursor.bit())
            .bind(&cursor.name)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (seq, key, version, received_at): (i64, String, i64, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            out.push(Scanned {
                row: log_row((&cursor.name, &cursor.record_type, cursor.slot), seq, key, version, &received_at),
                is_row: r.try_get(4)?,
                behind_row: r.try_get(5)?,
            });
        }
        let upto = if out.len() as u32 == limit { out.last().map_or(end, |s| split_id(s.row.id).0) } else { end };
        Ok((out, upto))
    }

    async fn hold(&self, cursor: &Cursor, held: Vec<OutboxRow>, position: i64) -> Result<(), StoreError> {
        let now = now_ms();
        let rows = held.into_iter().map(|row| NewRow { row, state: "pending", attempts: 0, next_ms: now, error: None });
        let write =
            LogWrite { rows: rows.collect(), advance: Some((cursor.name.clone(), position)), ..LogWrite::default() };
        self.count(Op::Append(Box::new(Appended::Log(write)))).await.map(|_| ())
    }

    async fn pending(&self, cursor: &Cursor, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.pending_log(cursor, limit).await
    }
}

impl PostgresStore {
    /// The durable position of a cursor.
    pub(super) async fn position(&self, subscription: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT position FROM cursors WHERE subscription = $1")
            .bind(subscription)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }

    /// Takes or renews this node's lease on a push cursor until the claim's lease ends. A node
    /// that takes it (back) over starts from the durable position. False: another node holds it.
    async fn hold_cursor(&self, c: &Cursor, st: &mut State, now_ms: i64, lease: &Lease) -> Result<bool, StoreError> {
        let took: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE cursors SET tenure = CASE WHEN lease_owner = $2 THEN tenure ELSE tenure + 1 END,
                 lease_owner = $2, lease_until = $3
             WHERE subscription = $1 AND (lease_owner = $2 OR lease_owner IS NULL OR lease_until <= $4)
             RETURNING position, tenure",
        )
        .bind(&c.name)
        .bind(&lease.owner)
        .bind(lease.until_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        match took {
            Some((position, tenure)) => {
                if tenure != st.tenure {
                    if st.tenure != 0 || !st.out.is_empty() {
                        tracing::info!(subscription = %c.name, position, "this node serves the subscription's cursor now");
                    }
                    *st = State::at(position, tenure);
                }
                st.held_until = lease.until_ms;
                Ok(true)
            }
            None => {
                let until: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT lease_until FROM cursors WHERE subscription = $1")
                        .bind(&c.name)
                        .fetch_optional(&self.pool)
                        .await?;
                st.held_until = 0;
                st.other_until = until.flatten().unwrap_or(0);
                Ok(false)
            }
        }
    }

    /// Claims for a subscription served from the log: from its log only while this node holds
    /// the cursor; its rows (failed attempts) from any node, but none behind the log.
    pub(super) async fn claim_log(
        &self,
        c: Arc<Cursor>,
        now_ms: i64,
        limit: u32,
        lease: Lease,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = c.state.lock().await;
        if !self.hold_cursor(&c, &mut st, now_ms, &lease).await? {
            drop(st);
            let behind = cursor::Behind { bit: c.bit(), position: self.position(&c.name).await? };
            return self.claim_rows(&c.name, behind, now_ms, limit, lease, HashSet::new()).await;
        }
        cursor::claim(self, &c, &mut st, now_ms, limit, lease).await
    }

    /// Until when another node holds this cursor, if one does: nothing of it is due here before.
    pub(super) async fn held_elsewhere(&self, c: &Cursor) -> Option<i64> {
        let st = c.state.lock().await;
        let now = now_ms();
        (st.held_until <= now && st.other_until > now).then_some(st.other_until)
    }

    /// When a log subscription must look again: now if the log has grown past its scan, else
    /// when the first lease of an entry out runs out.
    pub(super) async fn next_due_log(&self, c: &Cursor) -> Result<Option<i64>, StoreError> {
        let (scanned, lease) = {
            let st = c.state.lock().await;
            (st.scanned, st.out.values().filter(|o| !o.settling).map(|o| o.lease.until_ms).min())
        };
        let end: Option<i64> = sqlx::query_scalar("SELECT MAX(audit_seq) FROM records WHERE type = $1")
            .bind(&c.record_type)
            .fetch_one(&self.pool)
            .await?;
        if end.is_some_and(|e| e > scanned) {
            return Ok(Some(now_ms()));
        }
        Ok(lease)
    }

    /// The writes that settle a batch's log entries, and what they settle (`cursor::settled`).
    pub(super) async fn settle_log(
        &self,
        settlements: &mut Vec<(i64, Settlement, Option<NewEntry>)>,
    ) -> Result<(Vec<Op>, Vec<cursor::Settling>), StoreError> {
        let taken = cursor::take_settlements(&self.cursors(), settlements).await;
        let mut ops = Vec::new();
        let mut settling = Vec::new();
        for (s, entries) in taken.pushes {
            let write = settle_write(entries, Some((s.cursor.name.clone(), s.position)));
            ops.push(Op::Append(Box::new(Appended::Log(write))));
            settling.push(s);
        }
        for (c, entries) in taken.feeds {
            // A feed's entries that cannot be served become rows, which the log's copy then gives
            // way to; its cursor moves only with acknowledgements.
            match self.feed_rows_of(&c, entries).await {
                Ok(write) => ops.push(Op::Append(Box::new(Appended::Log(write)))),
                Err(e) => {
                    cursor::settled(settling, false).await;
                    return Err(e);
                }
            }
        }
        Ok((ops, settling))
    }

    async fn feed_rows_of(
        &self,
        c: &Cursor,
        entries: Vec<(i64, Settlement, Option<NewEntry>)>,
    ) -> Result<LogWrite, StoreError> {
        let seqs: Vec<i64> = entries.iter().map(|(seq, ..)| *seq).collect();
        let found: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT audit_seq, key, version, received_at FROM records WHERE type = $1 AND audit_seq = ANY($2)",
        )
        .bind(&c.record_type)
        .bind(&seqs)
        .fetch_all(&self.pool)
        .await?;
        let entries = entries
            .into_iter()
            .filter_map(|(seq, settlement, audit)| {
                let (_, key, version, received_at) = found.iter().find(|f| f.0 == seq)?;
                let row = log_row((&c.name, &c.record_type, c.slot), seq, key.clone(), *version, received_at);
                Some((row, settlement, audit))
            })
            .collect();
        Ok(settle_write(entries, None))
    }

    /// Dead-letters what waited in the log since before `cutoff_ms`, while this node holds the
    /// cursor: the oldest entries past the scan, up to the first younger one.
    pub(super) async fn expire_log(
        &self,
        c: &Cursor,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        let mut st = c.state.lock().await;
        if st.held_until <= now_ms() {
            return Ok(0);
        }
        let (found, _) = cursor::Log::scan(self, c, st.scanned, 1000).await?;
        let old: Vec<Scanned> = found.into_iter().take_while(|s| s.row.created_at < cutoff_ms).collect();
        let Some(last) = old.last().map(|s| split_id(s.row.id).0) else { return Ok(0) };
        let old: Vec<OutboxRow> = old.into_iter().filter(|s| !s.is_row).map(|s| s.row).collect();
        let seqs: Vec<i64> = old.iter().map(|r| split_id(r.id).0).collect();
        let subjects: Vec<(i64, String)> =
            sqlx::query_as("SELECT audit_seq, subjects FROM records WHERE type = $1 AND audit_seq = ANY($2)")
                .bind(&c.record_type)
                .bind(&seqs)
                .fetch_all(&self.pool)
                .await?;
        let before = st.scanned;
        st.scanned = last;
        let position = st.frontier(&[]);
        let mut write =
            LogWrite { count: old.len() as u64, advance: Some((c.name.clone(), position)), ..LogWrite::default() };
        for row in old {
            let named = subjects.iter().find(|(seq, _)| *seq == split_id(row.id).0).map(|(_, s)| s.as_str());
            write.audits.push(expired_entry(&row, named, &error, &template));
            write.rows.push(NewRow { row, state: "dead", attempts: 0, next_ms: now_ms(), error: Some(error.clone()) });
        }
        match self.count(Op::Append(Box::new(Appended::Log(write)))).await {
            Ok(n) => {
                st.durable = st.durable.max(position);
                Ok(n)
            }
            Err(e) => {
                st.scanned = before;
                Err(e)
            }
        }
    }

    /// Where the log part of a listing or count starts for `c`: past what this node has out of
    /// a cursor it serves, else past the durable position (another node's entries out are
    /// listed as owed).
    async fn view(&self, c: &Cursor, limit: u32) -> Result<(Vec<OutboxRow>, i64), StoreError> {
        let serves = !c.feed && c.state.lock().await.held_until > now_ms();
        if serves {
            return Ok(cursor::out_and_after(c, limit).await);
        }
        Ok((Vec::new(), self.position(&c.name).await?))
    }

    /// Entries owed from the log to `c`, as pending rows, at most `limit`.
    pub(super) async fn pending_log(&self, c: &Cursor, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let (mut rows, after) = self.view(c, limit).await?;
        let room = limit.saturating_sub(rows.len() as u32);
        if room > 0 {
            let (found, _) = cursor::Log::scan(self, c, after, room).await?;
            rows.extend(found.into_iter().filter(|s| !s.is_row).map(|s| s.row));
        }
        Ok(rows)
    }

    /// How many entries the log owes `c`, and since when the oldest waits (ms).
    pub(super) async fn count_log(&self, c: &Cursor) -> Result<(u64, Option<i64>), StoreError> {
        let (out, after) = self.view(c, u32::MAX).await?;
        let oldest_out = out.iter().map(|o| o.created_at).min();
        let (n, first): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(audit_seq) FROM records
             WHERE type = $1 AND audit_seq > $2 AND (routes & $3::bigint) <> 0",
        )
        .bind(&c.record_type)
        .bind(after)
        .bind(c.bit())
        .fetch_one(&self.pool)
        .await?;
        let first = match first {
            Some(seq) => {
                sqlx::query_scalar::<_, String>("SELECT received_at FROM records WHERE type = $1 AND audit_seq = $2")
                    .bind(&c.record_type)
                    .bind(seq)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|t| cursor::millis(&t))
            }
            None => None,
        };
        Ok((out.len() as u64 + n as u64, cursor::earliest(oldest_out, first)))
    }

    /// A page of a feed served from the log: its rows after the row part (replays, and what it
    /// was owed before it read the log), then the log after the log part or the acknowledged
    /// position, whichever is further.
    pub(super) async fn feed_log(&self, c: &Cursor, after: FeedCursor, limit: u32) -> Result<FeedPage, StoreError> {
        let acked = self.position(&c.name).await?;
        let from = after.log.map_or(acked, |l| l.max(acked));
        let mut rows = self.feed_rows(&c.name, after.rows, limit).await?;
        let mut next = FeedCursor { log: Some(from), ..after.past(&rows) };
        let room = limit.saturating_sub(rows.len() as u32);
        if room > 0 {
            // Past `upto` the scan saw everything: what it leaves out is a row already (served
            // above, or dead), so the next page need not look at it again.
            let (found, upto) = cursor::Log::scan(self, c, from, room).await?;
            rows.extend(found.into_iter().filter(|s| !s.is_row).map(|s| s.row));
            next.log = Some(upto);
        }
        Ok(FeedPage { rows, next })
    }

    /// Acknowledges a feed up to `to`, a log position, in the transaction `tx` of its row part:
    /// never past the end of the log (a cursor from nowhere acknowledges nothing not yet
    /// written). Returns how many log entries that settled.
    pub(super) async fn ack_log(tx: &mut sqlx::PgConnection, c: &Cursor, to: i64) -> Result<u64, StoreError> {
        let at: i64 = sqlx::query_scalar("SELECT position FROM cursors WHERE subscription = $1 FOR UPDATE")
            .bind(&c.name)
            .fetch_one(&mut *tx)
            .await?;
        let end: Option<i64> = sqlx::query_scalar("SELECT MAX(audit_seq) FROM records WHERE type = $1")
            .bind(&c.record_type)
            .fetch_one(&mut *tx)
            .await?;
        let to = to.min(end.unwrap_or(0));
        if to <= at {
            return Ok(0);
        }
        // What died before (a dead row) was settled then, not now.
        let logged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM records r
             WHERE r.type = $1 AND r.audit_seq > $2 AND r.audit_seq <= $3 AND (r.routes & $4::bigint) <> 0
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.subscription = $5 AND o.record_type = r.type
                   AND o.key = r.key AND o.version = r.version AND o.state = 'dead')",
        )
        .bind(&c.record_type)
        .bind(at)
        .bind(to)
        .bind(c.bit())
        .bind(&c.name)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE cursors SET position = $2 WHERE subscription = $1")
            .bind(&c.name)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        Ok(logged as u64)
    }

    /// Gives back what `owner` holds of the cursors: their entries out and their leases.
    pub(super) async fn release_log(&self, owner: &str) -> Result<u64, StoreError> {
        let cursors = self.cursors();
        let n = cursor::release(&cursors, owner).await;
        let given: Vec<String> = sqlx::query_scalar(
            "UPDATE cursors SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 RETURNING subscription",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        for c in given.iter().filter_map(|name| cursors.by_name.get(name)) {
            c.state.lock().await.held_until = 0;
        }
        Ok(n)
    }
}
