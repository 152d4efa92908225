//! Durable state behind one trait: record versions, latest versions, the subject index,
//! idempotency keys and the audit chain. Every write goes through the ledger writer so that a
//! record version, its subject index rows, its audit entry (and later its outbox rows) commit in one
//! transaction, and a caller hears back only once that transaction is on disk.

pub mod backup;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::ledger::{ChainBroken, ChainReport, Entry, NewEntry};

/// Storage failures, classified so the API can tell "try again" from "broken".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing was written; retry when space returns.
    #[error("storage is full")]
    Full,
    /// The ledger writer is not running (shutting down, or it failed).
    #[error("the ledger writer is not running")]
    WriterGone,
    /// The database reported an error.
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// Files of the data directory.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// A record version to store.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Record type.
    pub record_type: String,
    /// Business key.
    pub key: String,
    /// Schema version it was validated against.
    pub schema_version: u32,
    /// Canonical JSON (RFC 8785) of the payload.
    pub canonical: String,
    /// SHA-256 (hex) of `canonical`.
    pub digest: String,
    /// Publishing department.
    pub publisher: String,
    /// Keyed hashes of the subjects.
    pub subjects: Vec<String>,
    /// `Idempotency-Key` and the digest of the request it came with.
    pub idempotency: Option<(String, String)>,
    /// The publish audit entry (the writer fills in the version).
    pub audit: NewEntry,
}

/// The receipt a publisher gets (CONTRACT.md).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Business key.
    pub key: String,
    /// Version assigned.
    pub version: u64,
    /// SHA-256 of the canonical JSON.
    pub digest: String,
    /// The publish audit entry.
    pub audit_seq: u64,
    /// When the hub accepted it (RFC 3339 UTC).
    pub received_at: String,
    /// Outbox entries created for subscribers.
    pub routed: u64,
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// A new version is durable.
    Created(Receipt),
    /// The same idempotency key and body were seen before: the original receipt.
    Replayed(Receipt),
    /// The idempotency key was used before with another body.
    Conflict,
}

/// A stored record version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordVersion {
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Key.
    pub key: String,
    /// Version.
    pub version: u64,
    /// Schema version.
    pub schema_version: u32,
    /// Payload.
    pub payload: Value,
    /// Digest of the canonical payload.
    pub digest: String,
    /// Publishing department.
    pub publisher: String,
    /// Acceptance time.
    pub received_at: String,
    /// Publish audit entry.
    pub audit_seq: u64,
    /// Keyed hashes of subjects.
    #[serde(skip)]
    pub subjects: Vec<String>,
}

/// Where an audit entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audited {
    /// Its sequence number.
    pub seq: u64,
}

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Operations (publishes, audit entries) those transactions carried.
    pub operations: u64,
}

/// The storage boundary. The SQLite implementation is the embedded default.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores versions atomically each, flushed together; results in input order.
    async fn publish(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError>;
    /// Appends one audit entry and waits until it is durable.
    async fn audit(&self, entry: NewEntry) -> Result<Audited, StoreError>;
    /// The latest version of a record.
    async fn latest(&self, record_type: &str, key: &str) -> Result<Option<RecordVersion>, StoreError>;
    /// Every version of a record, oldest first.
    async fn history(&self, record_type: &str, key: &str) -> Result<Vec<RecordVersion>, StoreError>;
    /// Latest versions whose subjects include this keyed hash.
    async fn by_subject(&self, subject_hash: &str) -> Result<Vec<RecordVersion>, StoreError>;
    /// Audit entries after `after`, at most `limit`.
    async fn audit_after(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError>;
    /// Audit entries concerning a subject, newest first.
    async fn audit_by_subject(&self, subject_hash: &str, limit: u32) -> Result<Vec<Entry>, StoreError>;
    /// Verifies the whole chain and its checkpoints.
    async fn verify_audit(&self) -> Result<Result<ChainReport, ChainBroken>, StoreError>;
    /// Group-commit counters.
    fn writer_stats(&self) -> WriterStats;
    /// True while the ledger writer runs.
    fn is_ready(&self) -> bool;
    /// Stops the writer after it has flushed everything queued.
    async fn close(&self);
}
