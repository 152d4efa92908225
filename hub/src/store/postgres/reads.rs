//! Stored rows decoded, and the chain walked for verification in one snapshot.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::AUDIT_COLUMNS;
use crate::ledger::{Anchor, ChainBroken, ChainReport, Checkpoint, Entry, Walk};
use crate::store::{CheckRun, OutboxRow, RecordVersion, StoreError};

pub(super) fn record_from_row(r: &PgRow) -> Result<RecordVersion, StoreError> {
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
        trace: r.try_get(10)?,
    })
}

pub(super) fn outbox_from_row(r: &PgRow) -> Result<OutboxRow, StoreError> {
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
pub(super) fn entry_from_row(r: &PgRow) -> Result<Entry, String> {
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
pub(super) fn entry_row(r: &PgRow) -> Result<Entry, StoreError> {
    entry_from_row(r).map_err(StoreError::Corrupt)
}

pub(super) fn check_run_from_row(r: &PgRow) -> Result<CheckRun, StoreError> {
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

pub(super) fn checkpoint_from_row(r: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: r.try_get::<i64, _>(0)? as u64,
        digest: r.try_get(1)?,
        signature: r.try_get(2)?,
        time: r.try_get(3)?,
        suite: crate::ledger::suite::stored(r.try_get(4)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Entries read per round trip while verifying.
pub(super) const VERIFY_PAGE: i64 = 5000;

pub(super) async fn verify_in(
    c: &mut PgConnection,
    key: crate::ledger::keys::PublicKey,
    anchor: Option<&Anchor>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Result<ChainReport, ChainBroken>, StoreError> {
    let from = anchor.map_or(0, |a| a.seq) as i64;
    let checkpoints =
        sqlx::query("SELECT seq, digest, signature, time, suite FROM checkpoints WHERE seq >= $1 ORDER BY seq")
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
