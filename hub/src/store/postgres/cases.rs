//! Joint cases on PostgreSQL: a transition's versions (the causing record, the case, its events)
//! written by one batch statement and the case's index rows beside them, in the writer's
//! transaction under the chain lock, after the idempotency key and the versions it was computed
//! from are checked; and the index reads.

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::linked;
use super::writer::{Done, Group};
use crate::store::{CaseCounts, CaseQuery, CaseRow, CaseWrite, CaseWritten, LateStep, NewVersion, StoreError};

/// Applies a transition in the writer's transaction (its own savepoint: the job is isolated).
pub(super) async fn transition(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    w: CaseWrite,
    bits: Vec<i64>,
) -> Result<Done, StoreError> {
    let first = w.record.as_ref().map_or(&w.case, |(v, _)| v);
    let mut expects: Vec<(&str, &str, Option<u64>)> =
        w.record.iter().map(|(v, e)| (v.record_type.as_str(), v.key.as_str(), *e)).collect();
    expects.push((&w.case.record_type, &w.case.key, w.case_expect));
    if let Some(early) = linked::check(c, first, &expects).await? {
        return Ok(Done::Case(early.into()));
    }
    let has_record = w.record.is_some();
    let versions: Vec<NewVersion> = w.record.into_iter().map(|(v, _)| v).chain([w.case]).chain(w.events).collect();
    let mut receipts = linked::create_all(c, g, versions, bits).await?.into_iter();
    let record = if has_record { receipts.next() } else { None };
    let case = receipts.next().ok_or_else(|| StoreError::Corrupt("the case version gave no receipt".into()))?;
    let r = &w.row;
    sqlx::query(
        "INSERT INTO cases (id, case_type, opener, state, opened_at, closed_at, next_sweep, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, closed_at = excluded.closed_at,
         next_sweep = excluded.next_sweep, version = excluded.version",
    )
    .bind(&r.id)
    .bind(&r.case_type)
    .bind(&r.opener)
    .bind(&r.state)
    .bind(&r.opened_at)
    .bind(&r.closed_at)
    .bind(&r.next_sweep)
    .bind(case.version as i64)
    .execute(&mut *c)
    .await?;
    let steps: Vec<&str> = w.steps.iter().map(|s| s.step.as_str()).collect();
    let departments: Vec<&str> = w.steps.iter().map(|s| s.department.as_str()).collect();
    let states: Vec<&str> = w.steps.iter().map(|s| s.state.as_str()).collect();
    let dues: Vec<Option<&str>> = w.steps.iter().map(|s| s.due.as_deref()).collect();
    sqlx::query(
        "INSERT INTO case_steps (case_id, step, department, state, due)
         SELECT $1, u.step, u.department, u.state, u.due FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])
             AS u(step, department, state, due)
         ON CONFLICT (case_id, step) DO UPDATE SET state = excluded.state, due = excluded.due",
    )
    .bind(&r.id)
    .bind(&steps)
    .bind(&departments)
    .bind(&states)
    .bind(&dues)
    .execute(&mut *c)
    .await?;
    Ok(Done::Case(CaseWritten::Done { record, case }))
}

/// The cases a query selects, newest first.
pub(super) async fn cases(pool: &PgPool, q: &CaseQuery) -> Result<Vec<CaseRow>, StoreError> {
    let (sql, args) = q.sql(|n| format!("${n}"));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for a in &args {
        query = query.bind(a);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(CaseRow {
                id: r.try_get(0)?,
                case_type: r.try_get(1)?,
                opener: r.try_get(2)?,
                state: r.try_get(3)?,
                opened_at: r.try_get(4)?,
                closed_at: r.try_get(5)?,
                next_sweep: r.try_get(6)?,
                version: r.try_get::<i64, _>(7)? as u64,
            })
        })
        .collect()
}

/// Open cases per type and late steps per department.
pub(super) async fn case_counts(pool: &PgPool, today: &str) -> Result<CaseCounts, StoreError> {
    let [open, late, steps] = crate::store::CASE_COUNT_SQL;
    let open: Vec<(String, i64)> = sqlx::query_as(open).fetch_all(pool).await?;
    let late: Vec<(String, i64)> = sqlx::query_as(late).bind(today).fetch_all(pool).await?;
    let late_steps: Vec<(String, String, String, String, String)> =
        sqlx::query_as(steps).bind(today).fetch_all(pool).await?;
    let counted = |v: Vec<(String, i64)>| v.into_iter().map(|(k, n)| (k, n as u64)).collect();
    Ok(CaseCounts {
        open: counted(open),
        late: counted(late),
        late_steps: late_steps
            .into_iter()
            .map(|(case, case_type, step, department, due)| LateStep { case, case_type, step, department, due })
            .collect(),
    })
}
