//! Versions that commit together or not at all, in one savepoint of the group commit: a
//! correction or recall with the notices it sends, and the versions of a case transition. First
//! the first version's idempotency key and the versions they were computed from are checked;
//! then every version is created, and an error after the first undoes all of them.

use rusqlite::{params, Connection, OptionalExtension};

use super::{publish_op, Done, Tx, WriteFn};
use crate::store::{Linked, NewVersion, Published, Receipt, StoreError};

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

/// What stops a linked write before it writes anything: the first version's idempotency key
/// seen before, or a record (type, key) no longer at the version it was computed from.
pub(super) fn check(
    c: &Connection,
    first: &NewVersion,
    expects: &[(&str, &str, Option<u64>)],
) -> Result<Option<Linked>, StoreError> {
    if let Some((key, digest)) = &first.idempotency {
        if let Some((seen, receipt)) = idempotent(c, &first.publisher, key)? {
            return Ok(Some(if seen == *digest { Linked::Replayed(receipt) } else { Linked::Conflict }));
        }
    }
    for (record_type, key, expect) in expects {
        if latest_version(c, record_type, key)? != *expect {
            return Ok(Some(Linked::Stale));
        }
    }
    Ok(None)
}

/// Creates every version (`bits`: the cursors of each, in order), or fails.
pub(super) fn create_all(
    tx: &mut Tx<'_>,
    versions: Vec<NewVersion>,
    bits: Vec<i64>,
) -> Result<Vec<Receipt>, StoreError> {
    let mut receipts = Vec::with_capacity(versions.len());
    for (v, bits) in versions.into_iter().zip(bits.into_iter().chain(std::iter::repeat(0))) {
        match publish_op(v, bits)(tx)? {
            Done::Published(Published::Created(r)) => receipts.push(r),
            _ => return Err(StoreError::Corrupt("a version of a linked write was not created".into())),
        }
    }
    Ok(receipts)
}

/// The write of [`crate::store::Store::publish_linked`].
pub(super) fn linked_op(versions: Vec<NewVersion>, expect: Option<u64>, bits: Vec<i64>) -> WriteFn {
    Box::new(move |tx: &mut Tx<'_>| {
        let Some(first) = versions.first() else { return Ok(Done::Linked(Linked::Done(Vec::new()))) };
        if let Some(early) = check(tx.conn, first, &[(&first.record_type, &first.key, expect)])? {
            return Ok(Done::Linked(early));
        }
        Ok(Done::Linked(Linked::Done(create_all(tx, versions, bits)?)))
    })
}
