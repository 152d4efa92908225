//! Versions that commit together or not at all, in the writer's transaction under the chain
//! lock: a correction or recall with the notices it sends, and the versions of a case
//! transition. First the first version's idempotency key and the versions they were computed
//! from are checked (under the lock no other writer of the cluster commits meanwhile, so what
//! these reads see is what the batch writes after); then one batch statement creates them all.

use sqlx::PgConnection;

use super::append::{append_batch, Appended};
use super::writer::{Done, Group};
use crate::store::{Linked, NewVersion, Published, Receipt, StoreError};

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

/// What stops a linked write before it writes anything: the first version's idempotency key
/// seen before, or a record (type, key) no longer at the version it was computed from.
pub(super) async fn check(
    c: &mut PgConnection,
    first: &NewVersion,
    expects: &[(&str, &str, Option<u64>)],
) -> Result<Option<Linked>, StoreError> {
    if let Some((key, digest)) = &first.idempotency {
        if let Some((seen, receipt)) = idempotent(&mut *c, &first.publisher, key).await? {
            return Ok(Some(if seen == *digest { Linked::Replayed(receipt) } else { Linked::Conflict }));
        }
    }
    for (record_type, key, expect) in expects {
        if latest_version(c, record_type, key).await? != *expect {
            return Ok(Some(Linked::Stale));
        }
    }
    Ok(None)
}

/// Creates every version (`bits`: the cursors of each, in order) in one batch, or fails.
pub(super) async fn create_all(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    versions: Vec<NewVersion>,
    bits: Vec<i64>,
) -> Result<Vec<Receipt>, StoreError> {
    let items = versions
        .into_iter()
        .zip(bits.into_iter().chain(std::iter::repeat(0)))
        .map(|(v, b)| Appended::Publish(Box::new(v), b));
    let mut receipts = Vec::new();
    for d in append_batch(c, g, items.collect()).await? {
        match d {
            Done::Published(Published::Created(r)) => receipts.push(r),
            _ => return Err(StoreError::Corrupt("a version of a linked write was not created".into())),
        }
    }
    Ok(receipts)
}

/// The write of [`crate::store::Store::publish_linked`].
pub(super) async fn linked(
    c: &mut PgConnection,
    g: &mut Group<'_>,
    versions: Vec<NewVersion>,
    expect: Option<u64>,
    bits: Vec<i64>,
) -> Result<Done, StoreError> {
    let Some(first) = versions.first() else { return Ok(Done::Linked(Linked::Done(Vec::new()))) };
    if let Some(early) = check(c, first, &[(&first.record_type, &first.key, expect)]).await? {
        return Ok(Done::Linked(early));
    }
    Ok(Done::Linked(Linked::Done(create_all(c, g, versions, bits).await?)))
}
