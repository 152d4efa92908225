//! The pure steps of the record's way, which need no store and no network: strict parse → the
//! type's schema and key → canonical form (RFC 8785) and digest → the subjects it is about. The
//! fuzz targets run exactly these.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::PublishError;
use crate::catalog::strict::{self, JsonError};
use crate::catalog::RecordType;

/// A record that passed its type's checks, in the form the hub stores and hashes.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// The parsed record.
    pub doc: Value,
    /// The business key.
    pub key: String,
    /// Canonical JSON (RFC 8785): the same record always has the same digest, however spaced.
    pub canonical: String,
    /// SHA-256 (hex) of `canonical`.
    pub digest: String,
    /// The subjects (resident IDs, credit codes) in clear: the caller hashes them with its key.
    pub subjects: Vec<String>,
}

/// Parses `bytes` strictly, naming line and column (never the content) when it is not JSON and
/// the pointer when a member name is repeated.
pub fn parse(bytes: &[u8]) -> Result<Value, PublishError> {
    strict::parse(bytes).map_err(|e| match e {
        JsonError::Malformed { .. } => PublishError::Malformed(e.to_string()),
        JsonError::Duplicate { ref pointer, .. } => PublishError::Repeated {
            message: e.to_string(),
            violation: crate::catalog::violation(
                pointer.clone(),
                "this member appears more than once in its object".into(),
            ),
        },
    })
}

/// Checks a parsed record against its type and puts it in canonical form.
pub fn canonical(t: &RecordType, doc: Value) -> Result<Canonical, PublishError> {
    let key = t.check(&doc).map_err(PublishError::Invalid)?;
    let canonical = serde_jcs::to_string(&doc).map_err(|e| PublishError::Internal(e.to_string()))?;
    let digest = digest(&canonical);
    let subjects = t.subjects_of(&doc);
    Ok(Canonical { doc, key, canonical, digest, subjects })
}

/// The SHA-256 (hex) of a canonical form.
pub fn digest(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The digest an `Idempotency-Key` is bound to: the type and the canonical record.
pub fn request_digest(record_type: &str, canonical: &str) -> String {
    hex::encode(Sha256::digest(format!("{record_type}\n{canonical}").as_bytes()))
}
