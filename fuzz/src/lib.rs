//! What the fuzz targets share: the Conghua catalogue, loaded once, and the checks every record
//! body must pass through exactly as the publish path runs them.

use std::sync::OnceLock;

use hub::catalog::Catalog;
use serde_json::Value;

/// The repository's own config and schemas.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/conghua.toml");
        match hub::load(&path) {
            Ok((_, catalog)) => catalog,
            Err(e) => panic!("the fuzz targets need {}: {e}", path.display()),
        }
    })
}

/// One record body through the record's way's pure steps (`hub::exchange::prepare`, as every
/// publish runs them): strict parse, schema and key, subjects, canonical form and digest. Strict
/// JSON must be a subset of serde_json's, with the same value.
pub fn publish_body(record_type: &str, bytes: &[u8]) {
    use hub::exchange::{prepare, PublishError};
    let Ok(doc) = prepare::parse(bytes) else { return };
    let lenient: Value = serde_json::from_slice(bytes).expect("strict JSON that serde_json refuses");
    assert_eq!(doc, lenient, "strict and lenient parses differ");
    let Some(t) = catalog().get(record_type) else { return };
    match prepare::canonical(t, doc.clone()) {
        Err(PublishError::Invalid(violations)) => {
            for v in &violations {
                assert!(v.pointer.is_empty() || v.pointer.starts_with('/'), "a violation without a pointer: {v:?}");
            }
        }
        Err(e) => panic!("a parsed record refused for another reason than its schema: {e}"),
        Ok(c) => {
            assert!(!c.key.is_empty());
            let again: Value = serde_json::from_str(&c.canonical).expect("canonical JSON that does not parse");
            assert_eq!(again, doc, "canonical form changes the record");
            assert_eq!(c.digest.len(), 64);
        }
    }
}

/// Whether a jq program may run without end (the fuzz targets skip those; see jq_filter.rs).
pub fn may_not_end(program: &str) -> bool {
    ["def", "repeat", "recurse", "until", "while", "range", "limit", "input", "..", "env", "$__loc__"]
        .iter()
        .any(|w| program.contains(w))
}
