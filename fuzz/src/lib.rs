//! What the fuzz targets share: the Conghua catalogue, loaded once, and the checks every record
//! body must pass through exactly as the publish path runs them.

use std::sync::OnceLock;

use hub::catalog::{strict, Catalog};
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

/// One record body through the publish path's pure steps (`RecordType::check`, as
/// `records::prepare` runs it): strict parse, schema and key, subjects, canonical form. Strict
/// JSON must be a subset of serde_json's, with the same value.
pub fn publish_body(record_type: &str, bytes: &[u8]) {
    let Ok(doc) = strict::parse(bytes) else { return };
    let lenient: Value = serde_json::from_slice(bytes).expect("strict JSON that serde_json refuses");
    assert_eq!(doc, lenient, "strict and lenient parses differ");
    let Some(t) = catalog().get(record_type) else { return };
    match t.check(&doc) {
        Err(violations) => {
            for v in &violations {
                assert!(v.pointer.is_empty() || v.pointer.starts_with('/'), "a violation without a pointer: {v:?}");
            }
        }
        Ok(key) => {
            assert!(!key.is_empty());
            let _ = t.subjects_of(&doc);
            let canonical = serde_jcs::to_string(&doc).expect("a valid record without a canonical form");
            let again: Value = serde_json::from_str(&canonical).expect("canonical JSON that does not parse");
            assert_eq!(again, doc, "canonical form changes the record");
        }
    }
}

/// Whether a jq program may run without end (the fuzz targets skip those; see jq_filter.rs).
pub fn may_not_end(program: &str) -> bool {
    ["def", "repeat", "recurse", "until", "while", "range", "limit", "input", "..", "env", "$__loc__"]
        .iter()
        .any(|w| program.contains(w))
}
