//! Joint cases in the embedded store: a transition's versions (the causing record, the case,
//! its events) and the case's index rows in one savepoint of the group commit, after the
//! idempotency key and the versions it was computed from are checked; and the index reads.

use rusqlite::{params, Connection};

use super::{linked, Done, Tx, WriteFn};
use crate::store::{CaseCounts, CaseQuery, CaseRow, CaseWrite, CaseWritten, LateStep, NewVersion, StoreError};

/// The write of a transition; `bits` are the cursors of each version, in order (record, case,
/// events). Run in its own savepoint: an error after the first write undoes all of it.
pub(super) fn transition_op(w: CaseWrite, bits: Vec<i64>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let first = w.record.as_ref().map_or(&w.case, |(v, _)| v);
        let mut expects: Vec<(&str, &str, Option<u64>)> =
            w.record.iter().map(|(v, e)| (v.record_type.as_str(), v.key.as_str(), *e)).collect();
        expects.push((&w.case.record_type, &w.case.key, w.case_expect));
        if let Some(early) = linked::check(tx.conn, first, &expects)? {
            return Ok(Done::Case(early.into()));
        }
        let has_record = w.record.is_some();
        let versions: Vec<NewVersion> = w.record.into_iter().map(|(v, _)| v).chain([w.case]).chain(w.events).collect();
        let mut receipts = linked::create_all(tx, versions, bits)?.into_iter();
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
