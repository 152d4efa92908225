//! A batch of publishes, audit entries and settlements written with a fixed number of statements,
//! whatever its size: column arrays bound to one statement that fills every table.

use sqlx::{PgConnection, Row};

use super::writer::{Done, Group, Head};
use crate::ledger::{seal, Entry, NewEntry};
use crate::store::{Audited, NewVersion, OutboxRow, Published, Receipt, Settlement, StoreError};

/// What [`append_batch`] writes: a record version with its audit entry, or an audit entry alone
/// (a read, a lookup, a refusal).
pub(super) enum Appended {
    /// A version, and the bits of the cursors it is routed to beside the outbox rows of its routes.
    Publish(Box<NewVersion>, i64),
    Audit(NewEntry),
    /// The end of a delivery attempt, audited when it changed the entry.
    Settle(i64, Settlement, Option<NewEntry>),
    /// What a cursor over the log writes: rows for entries that cannot go in log order, audit
    /// entries, and its new position.
    Log(LogWrite),
}

/// The writes of a cursor over the log ([`Appended::Log`]).
#[derive(Default)]
pub(super) struct LogWrite {
    /// Outbox rows to make.
    pub rows: Vec<NewRow>,
    /// Audit entries (deliveries, dead letters).
    pub audits: Vec<NewEntry>,
    /// The cursor and the position it moves to (never back).
    pub advance: Option<(String, i64)>,
    /// What the caller hears.
    pub count: u64,
}

/// An outbox row made from a log entry.
pub(super) struct NewRow {
    pub row: OutboxRow,
    pub state: &'static str,
    pub attempts: u32,
    pub next_ms: i64,
    pub error: Option<String>,
}

/// Applies the settlements of a batch in one statement; returns the positions (in `items`) of
/// those that changed their entry (still pending, first settlement of it in the batch).
pub(super) async fn settle_batch(
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
pub(super) struct Rows {
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
    r_routes: Vec<Option<i64>>,
    r_trace: Vec<Option<String>>,
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
    o_state: Vec<&'static str>,
    o_attempts: Vec<i32>,
    o_next: Vec<i64>,
    o_created: Vec<i64>,
    o_error: Vec<Option<String>>,
    o_settled: Vec<Option<i64>>,
    // cursors moved
    cu_sub: Vec<String>,
    cu_pos: Vec<i64>,
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
        let e = seal(g.keys.suite(), entry, g.head.seq + 1, g.time.clone(), &g.head.digest);
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

    /// Adds an outbox row.
    #[allow(clippy::too_many_arguments)]
    fn outbox(&mut self, sub: &str, t: &str, k: &str, v: i64, event: String, state: &'static str, attempts: i32) {
        self.o_sub.push(sub.to_owned());
        self.o_type.push(t.to_owned());
        self.o_key.push(k.to_owned());
        self.o_version.push(v);
        self.o_event.push(event);
        self.o_state.push(state);
        self.o_attempts.push(attempts);
    }

    fn is_empty(&self) -> bool {
        self.a_seq.is_empty() && self.o_sub.is_empty() && self.cu_sub.is_empty()
    }
}

pub(super) fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes a batch of publishes and audit entries with a fixed number of statements (the caller
/// holds the chain lock): two reads (idempotency keys seen before, current versions), the
/// versions, receipts and audit entries worked out here in order, then one statement that writes
/// every table. Results are in input order; a repeated idempotency key inside the batch is a
/// replay or conflict of the first.
pub(super) async fn append_batch(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    items: Vec<Appended>,
) -> Result<Vec<Done>, StoreError> {
    use std::collections::HashMap;
    let (mut idem_p, mut idem_k) = (Vec::new(), Vec::new());
    let (mut rec_t, mut rec_k) = (Vec::new(), Vec::new());
    for v in items.iter().filter_map(|i| match i {
        Appended::Publish(v, _) => Some(v),
        Appended::Audit(_) | Appended::Settle(..) | Appended::Log(_) => None,
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
            "SELECT u.p, u.k, i.request_digest, i.receipt FROM UNNEST($1::text[], $2::text[]) AS u(p, k)
             CROSS JOIN LATERAL (SELECT request_digest, receipt FROM idempotency WHERE publisher = u.p AND idem_key = u.k) AS i",
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
        // One index probe per record, whatever the statistics say: a plain join leaves the
        // planner free to hash the whole table for every group.
        sqlx::query(
            "SELECT u.t, u.k, l.version FROM (SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[])) AS u(t, k)
             CROSS JOIN LATERAL (SELECT version FROM latest WHERE type = u.t AND key = u.k) AS l",
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
            Appended::Log(l) => {
                for r in l.rows {
                    let OutboxRow { subscription, record_type, key, version, event_id, created_at, .. } = r.row;
                    w.outbox(&subscription, &record_type, &key, version as i64, event_id, r.state, r.attempts as i32);
                    w.o_next.push(r.next_ms);
                    w.o_created.push(created_at);
                    w.o_settled.push((r.state == "dead").then_some(g.now_ms));
                    w.o_error.push(r.error);
                }
                for entry in l.audits {
                    w.seal(g, entry)?;
                }
                if let Some((sub, position)) = l.advance {
                    w.cu_sub.push(sub);
                    w.cu_pos.push(position);
                }
                out.push(Done::Count(l.count));
                continue;
            }
            Appended::Publish(v, bits) => (*v, bits),
        };
        let (v, bits) = v;
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
        if v.first_only && current.contains_key(&id) {
            out.push(Done::NotFirst);
            continue;
        }
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
        w.r_routes.push((bits != 0).then_some(bits));
        w.r_trace.push(v.trace.clone());
        for sub in &v.routes {
            let event = crate::store::event_id(sub, &v.record_type, &v.key, version);
            w.outbox(sub, &v.record_type, &v.key, version as i64, event, "pending", 0);
            w.o_next.push(g.now_ms);
            w.o_created.push(g.now_ms);
            w.o_error.push(None);
            w.o_settled.push(None);
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
            routed: v.routes.len() as u64 + u64::from(bits.count_ones()),
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
    if w.is_empty() {
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
                                    audit_seq, subjects, routes, trace)
               SELECT t, k, v, sv, p, d, pub, $41, seq, s, ro, tr
               FROM UNNEST($16::text[], $17::text[], $18::bigint[], $19::int[], $20::text[], $21::text[], $22::text[],
                           $23::bigint[], $24::text[], $48::bigint[], $57::text[])
                    AS u(t, k, v, sv, p, d, pub, seq, s, ro, tr)),
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
                                   created_at, last_error, settled_at)
               SELECT s, t, k, v, e, st, at, nx, cr, er, se
               FROM UNNEST($31::text[], $32::text[], $33::text[], $34::bigint[], $35::text[], $49::text[], $50::int[],
                           $51::bigint[], $52::bigint[], $53::text[], $54::bigint[]) WITH ORDINALITY
                    AS u(s, t, k, v, e, st, at, nx, cr, er, se, n)
               ORDER BY n),
         cu AS (UPDATE cursors c SET position = GREATEST(c.position, u.p)
                FROM (SELECT s, MAX(p) AS p FROM UNNEST($55::text[], $56::bigint[]) AS x(s, p) GROUP BY s) AS u
                WHERE c.subscription = u.s),
         i AS (INSERT INTO idempotency (publisher, idem_key, request_digest, receipt, created_at)
               SELECT p, k, d, r, $41 FROM UNNEST($36::text[], $37::text[], $38::text[], $39::text[]) AS u(p, k, d, r)),
         c AS (INSERT INTO checkpoints (seq, digest, signature, time, suite)
               SELECT seq, d, sig, $41, $58 FROM UNNEST($40::bigint[], $43::text[], $44::text[]) AS u(seq, d, sig))
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
    .bind(&w.r_routes)
    .bind(&w.o_state)
    .bind(&w.o_attempts)
    .bind(&w.o_next)
    .bind(&w.o_created)
    .bind(&w.o_error)
    .bind(&w.o_settled)
    .bind(&w.cu_sub)
    .bind(&w.cu_pos)
    .bind(&w.r_trace)
    .bind(g.keys.suite().as_str())
    .execute(&mut *c)
    .await?;
    Ok(out)
}
