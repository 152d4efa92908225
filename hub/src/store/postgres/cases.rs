//! Joint cases on PostgreSQL: a transition's versions (the causing record, the case, its events)
//! written by one batch statement and the case's index rows beside them, in the writer's
//! transaction under the chain lock, after the idempotency key and the versions it was computed
//! from are checked; and the index reads.

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::append::{append_batch, Appended};
use super::writer::{Done, Group};
use crate::store::{CaseCounts, CaseQuery, CaseRow, CaseWrite, CaseWritten, LateStep, Published, Receipt, StoreError};

/// The receipt an idempotency key was given, and its request's digest.
pub(super) async fn idempotent<'e, E: sqlx::PgExecutor<'e>>(
    c: E,
    publisher: &str,
    key: &str,
) -> Result<Option<(String, Receipt)>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT request_digest, receipt FROM idempotency WHERE publisher = $1 AND idem_key = $2")
            .bind(publisher)
            .bind(key)
            .fetch_optional(c)
            .await?;
    row.map(|(digest, receipt)| {
        serde_json::from_str(&receipt).map(|r| (digest, r)).map_err(|e| StoreError::Corrupt(e.to_string()))
    })
    .transpose()
}

async fn latest_version(c: &mut PgConnection, record_type: &str, key: &str) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = sqlx::query_scalar("SELECT version FROM latest WHERE type = $1 AND key = $2")
        .bind(record_type)
        .bind(key)
        .fetch_optional(&mut *c)
        .await?;
    Ok(v.map(|v| v as u64))
}

/// Applies a transition in the writer's transaction (its own savepoint: the job is isolated).
pub(super) async fn transition(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    w: CaseWrite,
    bits: Vec<i64>,
) -> Result<Done, StoreError> {
    let first = w.record.as_ref().map_or(&w.case, |(v, _)| v);
    if let Some((key, digest)) = &first.idempotency {
        if let Some((seen, receipt)) = idempotent(&mut *c, &first.publisher, key).await? {
            return Ok(Done::Case(if seen == *digest {
                CaseWritten::Replayed(receipt)
            } else {
                CaseWritten::Conflict
            }));
        }
    }
    // Under the chain lock no other writer of the cluster commits meanwhile, so what these
    // reads see is what the batch below writes after.
    if let Some((v, expect)) = &w.record {
        if latest_version(c, &v.record_type, &v.key).await? != *expect {
            return Ok(Done::Case(CaseWritten::Stale));
        }
    }
    if latest_version(c, &w.case.record_type, &w.case.key).await? != w.case_expect {
        return Ok(Done::Case(CaseWritten::Stale));
    }
    let has_record = w.record.is_some();
    let items = w
        .record
        .into_iter()
        .map(|(v, _)| v)
        .chain([w.case])
        .chain(w.events)
        .zip(bits.into_iter().chain(std::iter::repeat(0)))
        .map(|(v, b)| Appended::Publish(v, b))
        .collect();
    let mut receipts = Vec::new();
    for d in append_batch(c, g, items).await? {
        match d {
            Done::Published(Published::Created(r)) => receipts.push(r),
            _ => return Err(StoreError::Corrupt("a version of a case transition was not created".into())),
        }
    }
    let mut receipts = receipts.into_iter();
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
