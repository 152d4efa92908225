//! Subscriptions served from the log on SQLite (the model is `store/cursor.rs`): the statements
//! that read a cursor's way and write its settlements. One process has the database (the ledger
//! writer), so the cursors' state in memory is the whole truth beside the durable positions.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Done, Tx, WriteFn};
use crate::ledger::NewEntry;
use crate::store::cursor::{self, log_row, millis, split_id, Cursor, Cursors, Scanned};
use crate::store::{FeedCursor, FeedPage, FromLog, Lease, OutboxRow, Settlement, StoreError};

/// Gives each subscription its slot and, when it is new, a cursor at the end of the log (it is
/// owed only what is published from now on). Returns (name, slot, position, tenure); a
/// subscription left without a slot is not in it.
pub(super) fn register_op(subscriptions: Vec<String>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let mut taken: HashMap<String, (i64, i64)> = HashMap::new();
        {
            let mut stmt = tx.conn.prepare_cached("SELECT subscription, slot, position FROM cursors")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))?;
            for row in rows {
                let (name, at) = row?;
                taken.insert(name, at);
            }
        }
        let slots = taken.iter().map(|(n, (slot, _))| (n.clone(), *slot)).collect();
        let position = tx.head.seq as i64;
        for (name, slot) in cursor::new_slots(&subscriptions, &slots) {
            tx.conn
                .prepare_cached("INSERT INTO cursors (subscription, slot, position) VALUES (?1, ?2, ?3)")?
                .execute(params![name, slot, position])?;
            taken.insert(name, (slot, position));
        }
        let out = subscriptions
            .into_iter()
            .filter_map(|name| taken.get(&name).map(|(slot, position)| (name.clone(), *slot, *position, 0)))
            .collect();
        Ok(Done::Cursors(out))
    })
}

/// Up to `limit` entries routed to `cursor` after `after` and at or below `flushed` (the last
/// audit sequence on disk: a version committed but not yet flushed is not handed out, see
/// `sync.rs`), oldest first, and how far the scan got: to the last entry when it found `limit`,
/// else to the end of the log it saw.
pub(super) fn scan(
    conn: &Connection,
    cursor: (&str, &str, i64),
    after: i64,
    limit: u32,
    flushed: i64,
) -> Result<(Vec<Scanned>, i64), StoreError> {
    let (name, record_type, slot) = cursor;
    // The end first: whatever commits after this read has a later sequence number.
    let end: Option<i64> = conn
        .prepare_cached("SELECT MAX(audit_seq) FROM records WHERE type = ?1")?
        .query_row(params![record_type], |r| r.get(0))?;
    let Some(end) = end.map(|e| e.min(flushed)).filter(|e| *e > after) else { return Ok((Vec::new(), after)) };
    let mut stmt = conn.prepare_cached(
        "SELECT r.audit_seq, r.key, r.version, r.received_at FROM records r INDEXED BY records_by_seq
         WHERE r.type = ?1 AND r.audit_seq > ?2 AND r.audit_seq <= ?3 AND (r.routes & ?4) != 0
         ORDER BY r.audit_seq LIMIT ?5",
    )?;
    let found = stmt
        .query_map(params![record_type, after, end, 1i64 << slot, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
        })?
        .collect::<Result<Vec<(i64, String, i64, String)>, _>>()?;
    let upto = if found.len() as u32 == limit { found.last().map_or(end, |f| f.0) } else { end };
    let mut pending = conn.prepare_cached(
        "SELECT version FROM outbox WHERE subscription = ?1 AND record_type = ?2 AND key = ?3 AND state = 'pending'",
    )?;
    let mut dead = conn.prepare_cached(
        "SELECT 1 FROM outbox WHERE subscription = ?1 AND record_type = ?2 AND key = ?3 AND version = ?4 AND state = 'dead'",
    )?;
    let mut out = Vec::with_capacity(found.len());
    for (seq, key, version, received_at) in found {
        let row = log_row((name, record_type, slot), seq, key, version, &received_at);
        let waiting = pending
            .query_map(params![name, record_type, row.key], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        let is_dead = dead.query_row(params![name, record_type, row.key, version], |_| Ok(())).optional()?.is_some();
        out.push(Scanned {
            is_row: is_dead || waiting.contains(&version),
            behind_row: waiting.iter().any(|v| *v < version),
            row,
        });
    }
    Ok((out, upto))
}

/// How many entries routed to a cursor lie past `after`, and the audit sequence of the first.
pub(super) fn backlog(
    conn: &Connection,
    record_type: &str,
    bit: i64,
    after: i64,
) -> Result<(u64, Option<i64>), StoreError> {
    // From the index alone: it carries the routes.
    let (n, first): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(audit_seq) FROM records INDEXED BY records_by_seq
             WHERE type = ?1 AND audit_seq > ?2 AND (routes & ?3) != 0",
        )?
        .query_row(params![record_type, after, bit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((n as u64, first))
}

/// When the record of this audit sequence was accepted (ms).
pub(super) fn received_ms(conn: &Connection, seq: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT received_at FROM records WHERE audit_seq = ?1")?
        .query_row(params![seq], |r| r.get::<_, String>(0))
        .optional()?
        .map(|t| millis(&t)))
}

fn insert_row(
    tx: &Tx<'_>,
    row: &OutboxRow,
    state: &str,
    attempts: u32,
    next_ms: i64,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let settled = (state == "dead").then_some(tx.now_ms);
    tx.conn
        .prepare_cached(
            "INSERT INTO outbox (subscription, record_type, key, version, event_id, state, attempts, next_attempt_at,
                                 created_at, last_error, settled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            row.subscription,
            row.record_type,
            row.key,
            row.version as i64,
            row.event_id,
            state,
            attempts,
            next_ms,
            row.created_at,
            error,
            settled
        ])?;
    Ok(())
}

fn advance(tx: &Tx<'_>, subscription: &str, position: i64) -> Result<(), StoreError> {
    // MAX: two settlements of one subscription may reach the disk in either order.
    tx.conn
        .prepare_cached("UPDATE cursors SET position = MAX(position, ?2) WHERE subscription = ?1")?
        .execute(params![subscription, position])?;
    Ok(())
}

/// Settles entries handed out from the log: a delivery writes nothing but its audit entry, a
/// failure becomes an outbox row; the cursor moves to `position`. One operation for the lot.
pub(super) fn settle_op(
    subscription: String,
    entries: Vec<(OutboxRow, Settlement, Option<NewEntry>)>,
    position: i64,
) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let n = entries.len() as u64;
        for (row, settlement, audit) in entries {
            match &settlement {
                Settlement::Delivered => {}
                Settlement::Retry { at_ms, error } => {
                    insert_row(tx, &row, "pending", row.attempts + 1, *at_ms, Some(error))?;
                }
                Settlement::Dead { error } => {
                    insert_row(tx, &row, "dead", row.attempts + 1, tx.now_ms, Some(error))?;
                }
            }
            if let Some(entry) = audit {
                tx.audit(entry)?;
            }
        }
        advance(tx, &subscription, position)?;
        Ok(Done::Count(n))
    })
}

/// Makes rows of entries that cannot go in log order now (another version of their record is
/// out or waits as a row): pending, due at once, behind it in id order.
pub(super) fn hold_op(subscription: String, held: Vec<OutboxRow>, position: i64) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        for row in &held {
            insert_row(tx, row, "pending", 0, tx.now_ms, None)?;
        }
        advance(tx, &subscription, position)?;
        Ok(Done::Count(held.len() as u64))
    })
}

/// Dead-letters entries that waited in the log past their age, each with its audit entry made
/// from `template`.
pub(super) fn expire_op(
    subscription: String,
    old: Vec<Scanned>,
    position: i64,
    error: String,
    template: NewEntry,
) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        for s in &old {
            insert_row(tx, &s.row, "dead", 0, tx.now_ms, Some(&error))?;
            let entry = super::expired_entry(tx, &s.row, &error, &template)?;
            tx.audit(entry)?;
        }
        advance(tx, &subscription, position)?;
        Ok(Done::Count(old.len() as u64))
    })
}

/// Acknowledges a feed up to `cursor`: its rows up to the row part, and, for a feed served from
/// the log (`log`: its record type and bit), the log up to the log part, which never passes the
/// end of the log (a cursor from nowhere acknowledges nothing that was not yet written).
pub(super) fn ack_op(subscription: String, cursor: FeedCursor, log: Option<(String, i64)>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let rows = tx
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = 'delivered', settled_at = ?3
                 WHERE subscription = ?1 AND state = 'pending' AND id <= ?2",
            )?
            .execute(params![subscription, cursor.rows, tx.now_ms])? as u64;
        tx.conn
            .prepare_cached(
                "INSERT INTO feed_cursor (subscription, acked) VALUES (?1, ?2)
                 ON CONFLICT (subscription) DO UPDATE SET acked = MAX(acked, excluded.acked)",
            )?
            .execute(params![subscription, cursor.rows])?;
        let (Some((record_type, bit)), Some(to)) = (log, cursor.log) else { return Ok(Done::Acked(rows, None)) };
        let to = to.min(tx.head.seq as i64);
        let at: i64 = tx
            .conn
            .prepare_cached("SELECT position FROM cursors WHERE subscription = ?1")?
            .query_row(params![subscription], |r| r.get(0))?;
        if to <= at {
            return Ok(Done::Acked(rows, Some(at)));
        }
        // What died before (a dead row) was settled then, not now.
        let logged: i64 = tx
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM records r INDEXED BY records_by_seq
                 WHERE r.type = ?1 AND r.audit_seq > ?2 AND r.audit_seq <= ?3 AND (r.routes & ?4) != 0
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.subscription = ?5 AND o.record_type = r.type
                       AND o.key = r.key AND o.version = r.version AND o.state = 'dead')",
            )?
            .query_row(params![record_type, at, to, bit, subscription], |r| r.get(0))?;
        advance(tx, &subscription, to)?;
        Ok(Done::Acked(rows + logged as u64, Some(to)))
    })
}

/// Ends entries of a feed that were read from the log and cannot be served (their projection
/// failed): each becomes a row, which the log's copy then gives way to. The cursor moves only
/// with acknowledgements.
fn feed_settle_op(cursor: (String, String, i64), entries: Vec<(i64, Settlement, Option<NewEntry>)>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let (name, record_type, slot) = &cursor;
        let mut n = 0;
        for (seq, settlement, audit) in entries {
            let found: Option<(String, i64, String)> = tx
                .conn
                .prepare_cached("SELECT key, version, received_at FROM records WHERE audit_seq = ?1 AND type = ?2")?
                .query_row(params![seq, record_type], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((key, version, received_at)) = found else { continue };
            let row = log_row((name, record_type, *slot), seq, key, version, &received_at);
            match &settlement {
                Settlement::Delivered => {}
                Settlement::Retry { at_ms, error } => insert_row(tx, &row, "pending", 1, *at_ms, Some(error))?,
                Settlement::Dead { error } => insert_row(tx, &row, "dead", 1, tx.now_ms, Some(error))?,
            }
            if let Some(entry) = audit {
                tx.audit(entry)?;
            }
            n += 1;
        }
        Ok(Done::Count(n))
    })
}

/// Outbox rows for what the log still owes each cursor (for `hub migrate`, whose target keeps
/// rows): every routed version past a cursor that no row holds yet, oldest first.
pub(crate) fn owed(conn: &Connection) -> Result<Vec<OutboxRow>, StoreError> {
    let schema_9: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'cursors'", [], |r| {
            r.get(0)
        })?;
    if schema_9 == 0 {
        return Ok(Vec::new());
    }
    let cursors: Vec<(String, i64, i64)> = {
        let mut stmt = conn.prepare("SELECT subscription, slot, position FROM cursors ORDER BY slot")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (name, slot, position) in cursors {
        let types: Vec<String> = {
            let mut stmt =
                conn.prepare("SELECT DISTINCT type FROM records WHERE audit_seq > ?1 AND (routes & ?2) != 0")?;
            let rows = stmt.query_map(params![position, 1i64 << slot], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for t in types {
            // Offline (`hub migrate`): everything in the file is as durable as it gets.
            let (found, _) = scan(conn, (&name, &t, slot), position, u32::MAX, i64::MAX)?;
            out.extend(found.into_iter().filter(|s| !s.is_row).map(|s| s.row));
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl cursor::Log for super::SqliteStore {
    async fn due_rows(
        &self,
        subscription: &str,
        behind: cursor::Behind,
        now_ms: i64,
        limit: u32,
        lease: &Lease,
        busy: HashSet<(String, String)>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.claim_rows(subscription, behind, now_ms, limit, lease, busy).await
    }

    async fn scan(&self, cursor: &Cursor, after: i64, limit: u32) -> Result<(Vec<Scanned>, i64), StoreError> {
        let (name, record_type, slot) = (cursor.name.clone(), cursor.record_type.clone(), cursor.slot);
        let flushed = self.durability.flushed_seq();
        self.readers.with(move |c| scan(c, (&name, &record_type, slot), after, limit, flushed)).await
    }

    async fn hold(&self, cursor: &Cursor, held: Vec<OutboxRow>, position: i64) -> Result<(), StoreError> {
        self.count(hold_op(cursor.name.clone(), held, position)).await.map(|_| ())
    }

    async fn pending(&self, cursor: &Cursor, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.pending_log(cursor, limit).await
    }
}

impl super::SqliteStore {
    /// `scan` of `cursor` on a read connection.
    async fn scan_log(&self, cursor: &Cursor, after: i64, limit: u32) -> Result<(Vec<Scanned>, i64), StoreError> {
        cursor::Log::scan(self, cursor, after, limit).await
    }

    /// Claims for a subscription served from the log (`cursor::claim`).
    pub(super) async fn claim_log(
        &self,
        cursor: std::sync::Arc<Cursor>,
        now_ms: i64,
        limit: u32,
        lease: Lease,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = cursor.state.lock().await;
        cursor::claim(self, &cursor, &mut st, now_ms, limit, lease).await
    }

    /// When a log subscription must look again: now if the log has grown past its scan, else
    /// when the first lease of an entry out runs out.
    pub(super) async fn next_due_log(&self, cursor: &Cursor) -> Result<Option<i64>, StoreError> {
        let (scanned, lease) = {
            let st = cursor.state.lock().await;
            (st.scanned, st.out.values().filter(|o| !o.settling).map(|o| o.lease.until_ms).min())
        };
        let record_type = cursor.record_type.clone();
        let end: Option<i64> = self
            .readers
            .with(move |c| {
                Ok(c.prepare_cached("SELECT MAX(audit_seq) FROM records WHERE type = ?1")?
                    .query_row(params![record_type], |r| r.get(0))?)
            })
            .await?;
        if end.is_some_and(|e| e > scanned) {
            return Ok(Some(chrono::Utc::now().timestamp_millis()));
        }
        Ok(lease)
    }

    /// Takes the log entries among `settlements` out of them (`cursor::take_settlements`): one
    /// write per subscription, with the position its cursor may take once it is on disk.
    pub(super) async fn settle_log(
        &self,
        settlements: &mut Vec<(i64, Settlement, Option<NewEntry>)>,
    ) -> (Vec<WriteFn>, Vec<cursor::Settling>) {
        let taken = cursor::take_settlements(&self.cursors(), settlements).await;
        let mut ops = Vec::new();
        for (c, entries) in taken.feeds {
            ops.push(feed_settle_op((c.name.clone(), c.record_type.clone(), c.slot), entries));
        }
        let mut settling = Vec::new();
        for (s, entries) in taken.pushes {
            ops.push(settle_op(s.cursor.name.clone(), entries, s.position));
            settling.push(s);
        }
        (ops, settling)
    }

    /// Dead-letters what waited in the log since before `cutoff_ms`: the oldest entries past
    /// the scan, up to the first younger one.
    pub(super) async fn expire_log(
        &self,
        cursor: &Cursor,
        cutoff_ms: i64,
        error: String,
        template: NewEntry,
    ) -> Result<u64, StoreError> {
        let mut st = cursor.state.lock().await;
        let (found, _) = self.scan_log(cursor, st.scanned, 1000).await?;
        let old: Vec<Scanned> = found.into_iter().take_while(|s| s.row.created_at < cutoff_ms).collect();
        let Some(last) = old.last().map(|s| split_id(s.row.id).0) else { return Ok(0) };
        let old: Vec<Scanned> = old.into_iter().filter(|s| !s.is_row).collect();
        let before = st.scanned;
        st.scanned = last;
        let position = st.frontier(&[]);
        match self.count(expire_op(cursor.name.clone(), old, position, error, template)).await {
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

    /// Entries owed from the log to `cursor`, as pending rows: those out, then the log past the
    /// scan, at most `limit`.
    pub(super) async fn pending_log(&self, cursor: &Cursor, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let (mut rows, after) = cursor::out_and_after(cursor, limit).await;
        let room = limit.saturating_sub(rows.len() as u32);
        if room > 0 {
            let (found, _) = self.scan_log(cursor, after, room).await?;
            rows.extend(found.into_iter().filter(|s| !s.is_row).map(|s| s.row));
        }
        Ok(rows)
    }

    /// How many entries the log owes `cursor`, and since when the oldest waits (ms).
    pub(super) async fn count_log(&self, cursor: &Cursor) -> Result<(u64, Option<i64>), StoreError> {
        let (out, oldest_out, after) = {
            let st = cursor.state.lock().await;
            (st.out.len() as u64, st.out.values().map(|o| o.row.created_at).min(), st.scanned)
        };
        let (record_type, bit) = (cursor.record_type.clone(), cursor.bit());
        let (n, first) = self
            .readers
            .with(move |c| {
                let (n, first) = backlog(c, &record_type, bit, after)?;
                let first = match first {
                    Some(seq) => received_ms(c, seq)?,
                    None => None,
                };
                Ok((n, first))
            })
            .await?;
        Ok((out + n, cursor::earliest(oldest_out, first)))
    }

    /// A page of a feed served from the log: its rows after the row part (replays, and what it
    /// was owed before it read the log), then the log after the log part or the acknowledged
    /// position, whichever is further.
    pub(super) async fn feed_log(
        &self,
        cursor: &Cursor,
        after: FeedCursor,
        limit: u32,
    ) -> Result<FeedPage, StoreError> {
        let acked = cursor.state.lock().await.durable;
        let from = after.log.map_or(acked, |l| l.max(acked));
        let (name, record_type, slot) = (cursor.name.clone(), cursor.record_type.clone(), cursor.slot);
        let flushed = self.durability.flushed_seq();
        self.readers
            .with(move |c| {
                let mut rows = super::feed_rows(c, &name, after.rows, limit)?;
                let mut next = FeedCursor { log: Some(from), ..after.past(&rows) };
                let room = limit.saturating_sub(rows.len() as u32);
                if room > 0 {
                    // Past `upto` the scan saw everything: what it leaves out is a row already
                    // (served above, or dead), so the next page need not look at it again.
                    let (found, upto) = scan(c, (&name, &record_type, slot), from, room, flushed)?;
                    rows.extend(found.into_iter().filter(|s| !s.is_row).map(|s| s.row));
                    next.log = Some(upto);
                }
                Ok(FeedPage { rows, next })
            })
            .await
    }

    /// Serves these subscriptions from the log.
    pub(super) async fn register(&self, subscriptions: Vec<FromLog>) -> Result<(), StoreError> {
        let names = subscriptions.iter().map(|s| s.name.clone()).collect();
        let Done::Cursors(taken) = self.one(register_op(names)).await? else {
            return Err(StoreError::Corrupt("writer gave no cursors".into()));
        };
        let cursors = Cursors::of(taken, &subscriptions, false);
        *self.cursors.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(cursors);
        Ok(())
    }
}
