//! Micro-benchmarks of what every published or delivered record goes through, on the Conghua
//! marriage record: strict parsing (against serde_json's own), schema validation, the canonical
//! digest, projection to a grant, and a subscription's jq filter and mapping.
// A benchmark, like a test, reports a broken fixture by panicking; criterion's macros make
// undocumented items.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hub::catalog::pointer::{project, FieldPointer};
use hub::catalog::strict;
use hub::routing::jq::JqProgram;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The schema's own first valid example (real check digits in its resident IDs).
fn record(root: &Path) -> Vec<u8> {
    let dir = root.join("schemas/marriage-registration/v1/examples/valid");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("examples").filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let doc: Value = serde_json::from_slice(&std::fs::read(&files[0]).expect("example")).expect("json");
    serde_json::to_vec(&doc).expect("json")
}

fn hot_paths(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (_, catalog) = hub::load(&root.join("config/conghua.toml")).unwrap_or_else(|e| panic!("{e}"));
    let t = catalog.get("marriage-registration").expect("marriage-registration");
    let bytes = record(&root);
    let doc: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(t.violations(&doc).is_empty(), "the benchmark record must be valid");

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse/serde_json", |b| b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes))));
    g.bench_function("parse/strict", |b| b.iter(|| strict::parse(black_box(&bytes))));
    g.bench_function("validate", |b| b.iter(|| t.violations(black_box(&doc))));
    g.bench_function("canonical_digest", |b| {
        b.iter(|| {
            let canonical = serde_jcs::to_string(black_box(&doc)).expect("jcs");
            Sha256::digest(canonical.as_bytes())
        })
    });
    let grant: Vec<FieldPointer> =
        ["/registration_no", "/kind", "/registered_on", "/parties/*/id_number", "/parties/*/name"]
            .iter()
            .map(|p| FieldPointer::parse(p).expect("pointer"))
            .collect();
    g.bench_function("project", |b| b.iter(|| project(black_box(&doc), &grant)));
    let filter = JqProgram::compile(r#".kind == "marriage""#).expect("filter");
    g.bench_function("jq_filter", |b| b.iter(|| filter.matches(black_box(&doc))));
    let mapping = JqProgram::compile("{djbh: .registration_no, djrq: .registered_on, sfzh: [.parties[].id_number]}")
        .expect("mapping");
    g.bench_function("jq_mapping", |b| b.iter(|| mapping.map(black_box(&doc))));
    g.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
