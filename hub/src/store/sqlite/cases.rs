//! Joint cases in the embedded store: a transition's versions (the causing record, the case,
//! its events) and the case's index rows in one savepoint of the group commit, after the
//! idempotency key and the versions it was computed from are checked; and the index reads.

use rusqlite::{params, Connection, OptionalExtension};

use super::{publish_op, Done, Tx, WriteFn};
use crate::store::{
    CaseCounts, CaseQuery, CaseRow, CaseWrite, CaseWritten, LateStep, NewVersion, Published, Receipt, StoreError,
};

/// The receipt an idempotency key was given, and its request's digest.
pub(super) fn idempotent(c: &Connection, publisher: &str, key: &str) -> Result<Option<(String, Receipt)>, StoreError> {
    let row: Option<(String, String)> = c
        .prepare_cached("SELECT request_digest, receipt FROM idempotency WHERE publisher = ?1 AND idem_key = ?2")?
        .query_row(params![publisher, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(digest, receipt)| {
        serde_json::from_str(&receipt).map(|r| (digest, r)).map_err(|e| StoreError::Corrupt(e.to_string()))
    })
    .transpose()
}

fn latest_version(c: &Connection, record_type: &str, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(c.prepare_cached("SELECT version FROM records WHERE type = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1")?
        .query_row(params![record_type, key], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|v| v as u64))
}

/// The write of a transition; `bits` are the cursors of each version, in order (record, case,
/// events). Run in its own savepoint: an error after the first write undoes all of it.
pub(super) fn transition_op(w: CaseWrite, bits: Vec<i64>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let first = w.record.as_ref().map_or(&w.case, |(v, _)| v);
        if let Some((key, digest)) = &first.idempotency {
            if let Some((seen, receipt)) = idempotent(tx.conn, &first.publisher, key)? {
                return Ok(Done::Case(if seen == *digest {
                    CaseWritten::Replayed(receipt)
                } else {
                    CaseWritten::Conflict
                }));
            }
        }
        if let Some((v, expect)) = &w.record {
            if latest_version(tx.conn, &v.record_type, &v.key)? != *expect {
                return Ok(Done::Case(CaseWritten::Stale));
            }
        }
        if latest_version(tx.conn, &w.case.record_type, &w.case.key)? != w.case_expect {
            return Ok(Done::Case(CaseWritten::Stale));
        }
        let has_record = w.record.is_some();
        let versions: Vec<NewVersion> = w.record.into_iter().map(|(v, _)| v).chain([w.case]).chain(w.events).collect();
        let mut receipts = Vec::with_capacity(versions.len());
        for (v, bits) in versions.into_iter().zip(bits.into_iter().chain(std::iter::repeat(0))) {
            match publish_op(v, bits)(tx)? {
                Done::Published(Published::Created(r)) => receipts.push(r),
                _ => return Err(StoreError::Corrupt("a version of a case transition was not created".into())),
            }
        }
        let mut receipts = receipts.into_iter();
        let record = if has_record { receipts.next() } else { None };
        let case = receipts.next().ok_or_else(|| StoreError::Corrupt("the case version gave no receipt".into()))?;
        let r = &w.row;
        tx.conn
            .prepare_cached(
                "INSERT INTO cases (id, case_type, opener, state, opened_at, closed_at, next_sweep, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, closed_at = excluded.closed_at,
                 next_sweep = excluded.next_sweep, version = excluded.version",
            )?
            .execute(params![
                r.id,
                r.case_type,
                r.opener,
                r.state,
                r.opened_at,
                r.closed_at,
                r.next_sweep,
                case.version as i64
            ])?;
        for s in &w.steps {
            tx.conn
                .prepare_cached(
                    "INSERT INTO case_steps (case_id, step, department, state, due) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (case_id, step) DO UPDATE SET state = excluded.state, due = excluded.due",
                )?
                .execute(params![r.id, s.step, s.department, s.state, s.due])?;
        }
        Ok(Done::Case(CaseWritten::Done { record, case }))
    })
}

/// The cases a query selects, newest first.
pub(super) fn cases(c: &Connection, q: &CaseQuery) -> Result<Vec<CaseRow>, StoreError> {
    let (sql, args) = q.sql(|n| format!("?{n}"));
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        Ok(CaseRow {
            id: r.get(0)?,
            case_type: r.get(1)?,
            opener: r.get(2)?,
            state: r.get(3)?,
            opened_at: r.get(4)?,
            closed_at: r.get(5)?,
            next_sweep: r.get(6)?,
            version: r.get::<_, i64>(7)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Open cases per type and late steps per department.
pub(super) fn case_counts(c: &Connection, today: &str) -> Result<CaseCounts, StoreError> {
    let [open, late, steps] = crate::store::CASE_COUNT_SQL.map(|q| q.replace("$1", "?1"));
    let pairs = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = c.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    };
    let mut stmt = c.prepare_cached(&steps)?;
    let late_steps = stmt
        .query_map([today], |r| {
            Ok(LateStep {
                case: r.get(0)?,
                case_type: r.get(1)?,
                step: r.get(2)?,
                department: r.get(3)?,
                due: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaseCounts { open: pairs(&open, &[])?, late: pairs(&late, &[&today])?, late_steps })
}
