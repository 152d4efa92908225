//! Every endpoint × every kind of caller, table-driven: the owning department, a department with
//! a grant and a feed, a department with none, each operator role, no certificate, a wrong bearer
//! token, and three certificates the handshake must refuse (expired, revoked via the CRL, issued by
//! a foreign CA). Each cell is the expected status (0: refused at the TLS handshake), and every
//! refusal must be in the audit chain, naming the caller.

use std::time::Duration;

use anyhow::Result;
use harness::{client_presenting, identity_pem, marriage, resident_id, TestConfig, TestHub};
use serde_json::{json, Value};

/// Callers, in the order of the table's columns.
const CALLERS: [&str; 12] = [
    "owner",
    "granted",
    "ungranted",
    "ops",
    "vendor",
    "auditor",
    "portal",
    "no-cert",
    "bad-token",
    "expired",
    "revoked",
    "foreign-ca",
];

const KEY: &str = "J440184-2026-000777";

/// Method, what the endpoint is, path, JSON body, and the expected status per caller.
type Row = (&'static str, &'static str, String, Option<Value>, [u16; 12]);

#[rustfmt::skip]
fn table() -> Vec<Row> {
    let rec = marriage(KEY, &resident_id("19900315", 7), &resident_id("19920708", 7));
    let subject = json!({ "subject": resident_id("19900315", 7), "purpose": "social-insurance-dependants" });
    let t = "marriage-registration";
    //   owner granted ungranted ops vendor auditor portal no-cert bad-token expired revoked foreign
    vec![
        ("POST", "publish", format!("/v1/records/{t}"), Some(rec.clone()),
            [201, 403, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "batch", format!("/v1/batch/{t}"), None,
            [200, 403, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "read", format!("/v1/records/{t}/{KEY}?purpose=social-insurance-dependants"), None,
            [200, 200, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "history", format!("/v1/records/{t}/{KEY}/history"), None,
            [200, 403, 403, 403, 403, 200, 403, 401, 401, 0, 0, 0]),
        // HRSS's purpose: the purposes register lets no other department state it.
        ("POST", "lookup", "/v1/lookup".into(), Some(subject.clone()),
            [403, 200, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "catalog", "/v1/catalog".into(), None,
            [200, 200, 200, 200, 200, 200, 200, 401, 401, 0, 0, 0]),
        ("GET", "services catalogue", "/v1/catalog/services".into(), None,
            [200, 200, 200, 200, 200, 200, 200, 401, 401, 0, 0, 0]),
        ("GET", "schema", format!("/v1/schemas/{t}"), None,
            [200, 200, 200, 200, 200, 200, 200, 401, 401, 0, 0, 0]),
        ("GET", "schema version", format!("/v1/schemas/{t}/1"), None,
            [200, 200, 200, 200, 200, 200, 200, 401, 401, 0, 0, 0]),
        ("GET", "audit export", "/v1/audit".into(), None,
            [403, 403, 403, 403, 403, 200, 403, 401, 401, 0, 0, 0]),
        ("GET", "audit verify", "/v1/audit/verify".into(), None,
            [403, 403, 403, 200, 200, 200, 403, 401, 401, 0, 0, 0]),
        ("POST", "access log", "/v1/access-log".into(), Some(json!({ "subject": resident_id("19900315", 7) })),
            [403, 403, 403, 403, 403, 403, 200, 401, 401, 0, 0, 0]),
        ("GET", "feed", "/v1/feeds/marriage-to-hrss".into(), None,
            [403, 200, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "feed ack", "/v1/feeds/marriage-to-hrss/ack".into(), Some(json!({ "cursor": 0 })),
            [403, 200, 403, 403, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "dead letters", "/v1/ops/deliveries".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "retry delivery", "/v1/ops/deliveries/999999/retry".into(), Some(json!({})),
            [403, 403, 403, 404, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "subscriptions", "/v1/ops/subscriptions".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "replay", "/v1/ops/subscriptions/marriage-to-hrss/replay".into(), Some(json!({ "since": "2026-11-01T00:00:00Z" })),
            [403, 403, 403, 200, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "enable", "/v1/ops/subscriptions/marriage-to-hrss/enable".into(), Some(json!({})),
            [403, 403, 403, 200, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "health", "/health".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "checks", "/v1/ops/checks".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "alerts", "/v1/ops/alerts".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "sla report", "/v1/ops/reports/sla?month=2026-11".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "documents-spared report", "/v1/ops/reports/documents-spared?month=2026-11".into(), None,
            [403, 403, 403, 200, 200, 200, 403, 401, 401, 0, 0, 0]),
        ("GET", "check history", "/v1/ops/checks/backlog/history".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("POST", "run check", "/v1/ops/checks/backlog/run".into(), Some(json!({})),
            [403, 403, 403, 200, 403, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "metrics", "/metrics".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "dashboard", "/ops/".into(), None,
            [403, 403, 403, 200, 200, 403, 403, 401, 401, 0, 0, 0]),
        ("GET", "openapi", "/openapi.json".into(), None,
            [200, 200, 200, 200, 200, 200, 200, 401, 401, 0, 0, 0]),
        ("GET", "livez", "/livez".into(), None,
            [200, 200, 200, 200, 200, 200, 200, 200, 200, 0, 0, 0]),
        ("GET", "readyz", "/readyz".into(), None,
            [200, 200, 200, 200, 200, 200, 200, 200, 200, 0, 0, 0]),
        ("GET", "unknown path", "/v1/../../etc/passwd".into(), None,
            [404, 404, 404, 404, 404, 404, 404, 401, 401, 0, 0, 0]),
    ]
}

/// A certificate for `cn` from the hub's own CA that expired at the end of 2025.
fn expired_identity(data: &std::path::Path, cn: &str) -> Result<Vec<u8>> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(data.join("pki/ca.key"))?)?;
    let ca = CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(data.join("pki/ca.crt"))?)?
        .self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 12, 31);
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes())
}

async fn deny_entries_since(hub: &TestHub, after: &mut u64) -> Result<Vec<(String, String)>> {
    let entries = hub.state.store.audit_after(*after, 1000).await?;
    if let Some(last) = entries.last() {
        *after = last.seq;
    }
    Ok(entries.into_iter().filter(|e| e.action == "deny").map(|e| (e.actor, e.outcome)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_kind_of_caller_as_the_table_says_and_audits_each_refusal() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (config, _) = hub::load(&harness::conghua_config()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pki = hub::pki::DevPki::new(data.path());
    pki.ensure(hub::policy::Directory::new(&config).ids())?;
    pki.revoke("justice")?;
    let foreign = tempfile::tempdir()?;
    hub::pki::DevPki::new(foreign.path()).ensure(["civil-affairs"])?;
    let expired = expired_identity(data.path(), "civil-affairs")?;
    let (_cfg_dir, cfg) = TestConfig::conghua().write();
    let hub = TestHub::start_in(&cfg, data).await?;
    let d = hub.data.path();
    let clients = [
        client_presenting(d, Some(identity_pem(d, "civil-affairs")?))?,
        client_presenting(d, Some(identity_pem(d, "hrss")?))?,
        client_presenting(d, Some(identity_pem(d, "education")?))?,
        client_presenting(d, Some(identity_pem(d, "ops-duty")?))?,
        client_presenting(d, Some(identity_pem(d, "vendor")?))?,
        client_presenting(d, Some(identity_pem(d, "supervision")?))?,
        client_presenting(d, Some(identity_pem(d, "citizen-portal")?))?,
        client_presenting(d, None)?,
        client_presenting(d, None)?,
        client_presenting(d, Some(expired))?,
        client_presenting(d, Some(identity_pem(d, "justice")?))?,
        client_presenting(d, Some(identity_pem(foreign.path(), "civil-affairs")?))?,
    ];
    let actors = [
        "civil-affairs",
        "hrss",
        "education",
        "ops-duty",
        "vendor",
        "supervision",
        "citizen-portal",
        "anonymous",
        "anonymous",
        "tls-peer",
        "tls-peer",
        "tls-peer",
    ];
    let batch =
        format!("{}\n", marriage("J440184-2026-000778", &resident_id("19900315", 8), &resident_id("19920708", 8)));

    let mut after = 0u64;
    deny_entries_since(&hub, &mut after).await?;
    let mut mismatches = Vec::new();
    for (method, what, path, body, expected) in table() {
        for (i, client) in clients.iter().enumerate() {
            let url = format!("{}{path}", hub.url);
            let mut req = match method {
                "GET" => client.get(&url),
                _ => client.post(&url),
            };
            req = match (&body, what) {
                (_, "batch") => req.header("content-type", "application/x-ndjson").body(batch.clone()),
                (Some(b), _) => req.json(b),
                (None, _) => req,
            };
            if CALLERS[i] == "bad-token" {
                req = req.bearer_auth("not-the-token");
            }
            let got = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    if status >= 400 {
                        assert!(ct.starts_with("application/problem+json"), "{what} as {}: {status} {ct}", CALLERS[i]);
                    }
                    status
                }
                Err(_) => 0,
            };
            if got != expected[i] {
                mismatches.push(format!("{method} {what} as {}: expected {}, got {got}", CALLERS[i], expected[i]));
                continue;
            }
            // Every refusal is on the record, naming who was refused.
            if matches!(got, 401 | 403) {
                let denied = deny_entries_since(&hub, &mut after).await?;
                assert!(
                    denied.iter().any(|(actor, _)| actor == actors[i]),
                    "{method} {what} refused to {} without an audit entry: {denied:?}",
                    CALLERS[i]
                );
            }
        }
    }
    assert!(mismatches.is_empty(), "{} cells differ:\n{}", mismatches.len(), mismatches.join("\n"));

    // Handshake refusals are audited too (within their budget), each with its reason.
    let refused = || async {
        let entries = hub.state.store.audit_after(0, 100_000).await?;
        Ok::<Vec<String>, anyhow::Error>(
            entries.into_iter().filter(|e| e.actor == "tls-peer" && e.action == "deny").map(|e| e.outcome).collect(),
        )
    };
    let wanted = ["expired", "revoked", "not issued by the hub's CA"];
    let all_there = harness::eventually(Duration::from_secs(10), "handshake refusals in the audit", || async {
        let reasons = refused().await?;
        Ok(wanted.iter().all(|w| reasons.iter().any(|o| o.contains(w))))
    })
    .await;
    if all_there.is_err() {
        let entries = hub.state.store.audit_after(0, 100_000).await?;
        let actors: std::collections::BTreeSet<(String, String)> =
            entries.into_iter().filter(|e| e.action == "deny").map(|e| (e.actor, e.outcome)).collect();
        anyhow::bail!("handshake refusals are not all audited; deny entries: {actors:?}");
    }
    hub.stop().await;
    Ok(())
}
