//! Hostile input over real mTLS: at least 10,000 generated bad requests (proptest strategies,
//! a seeded runner so a failure replays) — huge and deeply nested JSON, invalid UTF-8, repeated
//! member names, giant numbers, wrong content types, overlong headers, path traversal in record
//! keys and subscription names, bad NDJSON batches, bad lookups. Every answer is a 4xx problem
//! (never a 5xx, never a dropped connection), and nothing is stored. `HUB_RELIABILITY_LONG=1`
//! sends 100,000.

use std::sync::Arc;

use anyhow::Result;
use harness::{marriage, resident_id, TestHub};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

#[derive(Debug, Clone)]
struct BadRequest {
    kind: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<String>,
    extra_header: Option<(String, String)>,
    body: Vec<u8>,
}

fn valid_record(n: u32) -> String {
    marriage(&format!("J440184-2026-{:06}", n % 1_000_000), &resident_id("19900315", n), &resident_id("19920708", n))
        .to_string()
}

fn publish(kind: &'static str, body: Vec<u8>) -> BadRequest {
    BadRequest {
        kind,
        method: "POST",
        path: "/v1/records/marriage-registration".into(),
        content_type: Some("application/json".into()),
        extra_header: None,
        body,
    }
}

/// Pieces that make paths hostile: traversal, encoded separators, NUL, overlong, odd Unicode.
fn hostile_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just("..%2F..%2Fetc%2Fpasswd".to_owned()),
        Just("%2e%2e%2f%2e%2e%2f".to_owned()),
        Just("..%5c..%5cwindows".to_owned()),
        Just("%00".to_owned()),
        Just("a%00b".to_owned()),
        Just("%ff%fe".to_owned()),
        Just("%C0%AE%C0%AE%2F".to_owned()),
        "[a-z]{1,8}".prop_map(|s| format!("..%2F{s}")),
        (1usize..20_000).prop_map(|n| "k".repeat(n)),
        "\\PC{1,40}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>()),
    ]
}

fn bad_request() -> impl Strategy<Value = BadRequest> {
    prop_oneof![
        // Bodies beyond the 1 MiB record limit.
        (1_048_577usize..1_300_000).prop_map(|n| {
            let mut b = br#"{"registration_no":""#.to_vec();
            b.resize(n, b'x');
            publish("huge", b)
        }),
        // Nesting far past any schema (and past the parser's depth limit).
        (100usize..20_000, prop::bool::ANY).prop_map(|(depth, arrays)| {
            let (open, close) = if arrays { ("[", "]") } else { (r#"{"a":"#, "}") };
            publish("deep", format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes())
        }),
        // Invalid UTF-8 placed inside an otherwise valid record.
        // (bytes that can never start or continue a UTF-8 sequence, so no mix forms a valid one)
        (0u32..1_000_000, prop::collection::vec(prop::sample::select(vec![0xc0u8, 0xc1, 0xf5, 0xf8, 0xfe, 0xff]), 1..8)).prop_map(|(n, junk)| {
            let text = valid_record(n);
            let at = text.find("陈志明").unwrap_or(1);
            let mut b = text.as_bytes()[..at].to_vec();
            b.extend(junk);
            b.extend(&text.as_bytes()[at..]);
            publish("utf8", b)
        }),
        // A member repeated: which copy counts must never be the hub's guess.
        (0u32..1_000_000, prop::sample::select(vec!["kind", "registration_no", "registered_on"])).prop_map(|(n, member)| {
            let text = valid_record(n);
            let body = format!("{}, \"{member}\": \"divorce\"}}", &text[..text.len() - 1]);
            publish("duplicate", body.into_bytes())
        }),
        // Giant and malformed numbers where the schema wants strings or small integers.
        (0u32..1_000_000, prop::sample::select(vec!["1e400", "-1e999", "123456789012345678901234567890123456789", "0x10", "NaN", "Infinity", "1.", "-", "01"]))
            .prop_map(|(n, num)| {
                let text = valid_record(n).replacen("\"2026-11-20\"", num, 1);
                publish("number", text.into_bytes())
            }),
        // Random bytes and random JSON of the wrong shape.
        prop::collection::vec(any::<u8>(), 0..4096).prop_map(|b| publish("bytes", b)),
        "\\PC{0,200}".prop_map(|s| publish("string", serde_json::to_vec(&Value::String(s)).unwrap_or_default())),
        // A valid record under a content type that is not JSON.
        (0u32..1_000_000, prop::sample::select(vec!["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "application/json-seq", "image/png"]))
            .prop_map(|(n, ct)| BadRequest { content_type: Some(ct.to_owned()), ..publish("content-type", valid_record(n).into_bytes()) }),
        (0u32..1_000_000).prop_map(|n| BadRequest { content_type: None, ..publish("no-content-type", valid_record(n).into_bytes()) }),
        // Header sections larger than the hub reads.
        (33_000usize..60_000).prop_map(|n| BadRequest {
            extra_header: Some(("x-padding".into(), "p".repeat(n))),
            ..publish("header", b"{}".to_vec())
        }),
        (0usize..200).prop_map(|n| BadRequest {
            extra_header: Some(("idempotency-key".into(), format!("{}\u{b7}../", "k".repeat(n)))),
            ..publish("idempotency-key", b"{}".to_vec())
        }),
        // Traversal and junk in record keys, record types and subscription names.
        hostile_segment().prop_map(|s| BadRequest {
            kind: "read-key",
            method: "GET",
            path: format!("/v1/records/marriage-registration/{s}"),
            content_type: None,
            extra_header: None,
            body: Vec::new(),
        }),
        hostile_segment().prop_map(|s| BadRequest {
            kind: "history-key",
            method: "GET",
            path: format!("/v1/records/marriage-registration/{s}/history"),
            content_type: None,
            extra_header: None,
            body: Vec::new(),
        }),
        (hostile_segment(), 0u32..1_000_000).prop_map(|(s, n)| BadRequest {
            kind: "publish-type",
            path: format!("/v1/records/{s}"),
            ..publish("publish-type", valid_record(n).into_bytes())
        }),
        hostile_segment().prop_map(|s| BadRequest {
            kind: "feed-name",
            method: "GET",
            path: format!("/v1/feeds/{s}"),
            content_type: None,
            extra_header: None,
            body: Vec::new(),
        }),
        hostile_segment().prop_map(|s| BadRequest {
            kind: "replay-name",
            path: format!("/v1/ops/subscriptions/{s}/replay"),
            ..publish("replay-name", b"{}".to_vec())
        }),
        // NDJSON batches whose every line is bad.
        prop::collection::vec(prop_oneof![
            Just("{".to_owned()),
            Just("[]".to_owned()),
            Just("{\"kind\":\"marriage\",\"kind\":\"divorce\"}".to_owned()),
            "\\PC{0,50}",
        ], 1..50).prop_map(|lines| BadRequest {
            kind: "batch",
            path: "/v1/batch/marriage-registration".into(),
            content_type: Some("application/x-ndjson".into()),
            ..publish("batch", lines.join("\n").into_bytes())
        }),
        // Lookups with subjects that are not identifiers, or bodies that are not lookups.
        prop_oneof![
            "\\PC{0,40}".prop_map(|s| serde_json::json!({ "subject": s, "purpose": "social-insurance-dependants" }).to_string()),
            Just(r#"{"subject": 1, "purpose": []}"#.to_owned()),
            Just(r#"{"subject":"x","subject":"y","purpose":"p"}"#.to_owned()),
            "\\PC{0,100}",
        ].prop_map(|b| BadRequest { kind: "lookup", path: "/v1/lookup".into(), ..publish("lookup", b.into_bytes()) }),
        // Methods the endpoints do not have.
        prop::sample::select(vec!["PUT", "DELETE", "PATCH"]).prop_map(|m| BadRequest {
            kind: "method",
            method: m,
            ..publish("method", b"{}".to_vec())
        }),
    ]
}

fn cases(n: usize) -> Vec<BadRequest> {
    let seed: u64 = std::env::var("HUB_RELIABILITY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = bad_request();
    (0..n).filter_map(|_| strategy.new_tree(&mut runner).ok().map(|t| t.current())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_bad_requests_get_4xx_problems_and_store_nothing() -> Result<()> {
    let long = std::env::var("HUB_RELIABILITY_LONG").is_ok_and(|v| v == "1");
    let n = if long { 100_000 } else { 10_000 };
    // Without the scheduled checks: their probe publishes would be the only records stored.
    let (_cfg_dir, cfg) = harness::TestConfig::conghua().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let before = hub.state.store.audit_after(0, 100_000).await?.len();
    let cases = cases(n);
    assert_eq!(cases.len(), n);
    let mut client = hub.client("civil-affairs");
    let mut ops = hub.client("ops-duty");
    let limit = Arc::new(tokio::sync::Semaphore::new(
        std::env::var("HOSTILE_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, case) in cases.into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        // Replays go to the ops endpoint as an operator would send them; the rest as a department.
        // A request answered before its body is read resets its HTTP/2 stream, and h2 ends a
        // connection after 1,024 such resets (its defence against resets induced by the peer),
        // taking the other streams with it. So a huge body goes on a connection of its own (as it
        // must after a 413 on HTTP/1.1 too), and the shared connections are renewed every 500
        // requests, which keeps the rest under that budget (RELIABILITY.md).
        if i % 500 == 499 {
            client = hub.client("civil-affairs");
            ops = hub.client("ops-duty");
        }
        let c = match case.kind {
            "replay-name" => ops.clone(),
            "huge" => hub.client("civil-affairs"),
            _ => client.clone(),
        };
        tasks.spawn(async move {
            let _permit = permit;
            let url = format!("{}{}", c.url, case.path);
            let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut req = c.http.request(method, &url).body(case.body.clone());
            if let Some(ct) = &case.content_type {
                req = req.header("content-type", ct.as_str());
            }
            if let Some((k, v)) = &case.extra_header {
                req = req.header(k.as_str(), v.as_str());
            }
            (i, case, c.send(req).await)
        });
    }
    let mut failures = Vec::new();
    let mut failed_kinds = std::collections::BTreeMap::<(&str, u16), usize>::new();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(done) = tasks.join_next().await {
        let (i, case, reply) = done?;
        let summary =
            format!("case {i} ({}, {} {:.80}, {} body bytes)", case.kind, case.method, case.path, case.body.len());
        match reply {
            Err(e) => {
                *failed_kinds.entry((case.kind, 0)).or_default() += 1;
                failures.push(format!("{summary}: no answer: {}", e.to_string().chars().take(120).collect::<String>()))
            }
            Ok(r) => {
                *by_status.entry(r.status).or_default() += 1;
                let problem = r.content_type.starts_with("application/problem+json");
                // A batch answers 200 with a result per line; none may be stored.
                let batch_ok = case.kind == "batch"
                    && r.status == 200
                    && r.json["stored"] == 0
                    && r.json["results"].as_array().is_some_and(|a| {
                        a.iter().all(|l| {
                            l["status"].as_u64().is_some_and(|s| (400..500).contains(&s)) && l["problem"].is_object()
                        })
                    });
                if batch_ok {
                    continue;
                }
                if !(400..500).contains(&r.status) {
                    *failed_kinds.entry((case.kind, r.status)).or_default() += 1;
                    failures.push(format!(
                        "{summary}: status {} {}",
                        r.status,
                        r.text.chars().take(200).collect::<String>()
                    ));
                } else if !problem {
                    failures.push(format!("{summary}: {} without problem+json ({})", r.status, r.content_type));
                } else if case.kind == "duplicate" {
                    let pointer = r.json["errors"][0]["pointer"].as_str().unwrap_or_default().to_owned();
                    if r.status != 422 || !["/kind", "/registration_no", "/registered_on"].contains(&pointer.as_str()) {
                        failures.push(format!(
                            "{summary}: a repeated member must be a 422 naming it, got {} {pointer:?}",
                            r.status
                        ));
                    }
                }
            }
        }
    }
    eprintln!("{n} bad requests by status: {by_status:?}; failures by kind and status: {failed_kinds:?}");
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );

    // Nothing was stored: no publish entered the audit chain, and the hub still answers.
    let entries = hub.state.store.audit_after(0, 1_000_000).await?;
    let published = entries.iter().filter(|e| e.action == "publish").count();
    assert_eq!(published, 0, "an invalid request was stored");
    assert!(entries.len() >= before);
    let ok = client
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-999999", &resident_id("19900315", 1), &resident_id("19920708", 1)),
        )
        .await?;
    assert_eq!(ok.status, 201, "{}", ok.text);
    hub.stop().await;
    Ok(())
}
