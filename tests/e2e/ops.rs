//! Operations end to end: `/health` and the check endpoints over mTLS, checks that turn
//! critical when a receiver stops or an audit row is edited and warn when a certificate nears
//! expiry, and a vendor who sees health without seeing a citizen.

use std::time::Duration;

use adapters::testkit::{Answer, Receiver};
use anyhow::Result;
use harness::{marriage, resident_id, TestConfig, TestHub};
use serde_json::{json, Value};

/// Runs a check through the API, waiting while a scheduled or start-up run of it is under way
/// (the hub refuses overlapping runs with 409).
async fn run_now(ops: &harness::Client, path: &str) -> Result<harness::Reply> {
    for _ in 0..400 {
        let r = ops.post(path, &json!({})).await?;
        if r.status != 409 {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{path} stayed busy")
}

fn run_check(v: &Value) -> (&str, &str) {
    (v["report"]["status"].as_str().unwrap_or("?"), v["report"]["summary"].as_str().unwrap_or("?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_report_receivers_audit_tampering_and_expiring_certificates() -> Result<()> {
    let (fp, ps, lh) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let alerts = Receiver::start().await;
    let metrics_port = harness::free_port()?;
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9103, &fp.url)
        .receiver(9102, &ps.url)
        .receiver(9106, &lh.url)
        .replace("http://127.0.0.1:9110/hub/cases", &lh.url)
        .replace("http://127.0.0.1:9190/hub/alerts", &alerts.url)
        .replace("keep = 7", "keep = 1")
        .replace("checkpoint_every = 1000", "checkpoint_every = 5")
        .replace("full_every = 24", "full_every = 2")
        .replace("[ops]\n", &format!("[ops]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"))
        .fast_retries()
        .write();
    // A department certificate that expires in five days.
    let data = tempfile::tempdir()?;
    let (config, _) = hub::load(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pki = hub::pki::DevPki::new(data.path());
    pki.ensure(hub::policy::Directory::new(&config).ids())?;
    pki.issue_client("justice", 5)?;
    // And a CRL (Education's old certificate revoked), whose age the check watches too.
    pki.revoke("education")?;
    pki.issue_client("education", 30)?;
    let hub = TestHub::start_in(&cfg, data).await?;
    let ops = hub.client("ops-duty");

    // Every configured check ran once at start and is listed with its schedule.
    let list = ops.get("/v1/ops/checks").await?;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> =
        list.json["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "receivers",
            "backlog",
            "dead-letters",
            "audit-chain",
            "storage",
            "notices",
            "reconciliation",
            "certificates",
            "synthetic-probe",
            "nightly-backup"
        ]
    );

    // Receivers: all answer, then one stops, then it is back.
    let r = run_now(&ops, "/v1/ops/checks/receivers/run").await?;
    assert_eq!(run_check(&r.json).0, "ok", "{}", r.text);
    ps.answer(Answer::Status(503, None));
    let r = run_now(&ops, "/v1/ops/checks/receivers/run").await?;
    let (status, summary) = run_check(&r.json);
    assert_eq!(status, "critical", "{summary}");
    assert!(summary.contains("marriage-to-public-security"), "{summary}");
    ps.answer(Answer::Status(200, None));
    assert_eq!(run_check(&run_now(&ops, "/v1/ops/checks/receivers/run").await?.json).0, "ok");

    // The vendor's ticketing webhook got the change and the recovery, signed, in order.
    tokio::time::timeout(Duration::from_secs(20), alerts.wait_accepted(3)).await?;
    let secret = harness::dev_secret(hub.data.path(), "HUB_ALERT_SECRET");
    let mut changes = Vec::new();
    for c in alerts.accepted() {
        standardwebhooks::Webhook::new(&secret)?.verify(&c.body, &c.headers)?;
        let a: Value = serde_json::from_slice(&c.body)?;
        let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
        changes.push((field("check"), field("old_status"), field("new_status")));
    }
    let receivers: Vec<(String, String)> =
        changes.iter().filter(|c| c.0 == "receivers").map(|c| (c.1.clone(), c.2.clone())).collect();
    assert_eq!(
        receivers,
        [("ok".to_owned(), "critical".to_owned()), ("critical".to_owned(), "ok".to_owned())],
        "{changes:?}"
    );
    assert!(changes.contains(&("certificates".into(), "ok".into(), "warn".into())), "raised at start: {changes:?}");
    // The alert log records each delivery once the vendor's webhook confirmed it.
    harness::eventually(Duration::from_secs(20), "delivered alerts in the alert log", || {
        let ops = ops.clone();
        async move {
            let log = ops.get("/v1/ops/alerts").await?;
            let list = log.json["alerts"].as_array().cloned().unwrap_or_default();
            Ok(list.len() >= 3 && list.iter().all(|a| a["delivered_at"].is_string()))
        }
    })
    .await?;

    // The synthetic probe goes through the real pipeline (durable publish, outbox, worker, signed
    // webhook) to the hub's loopback receiver, and departments never see it.
    let r = run_now(&ops, "/v1/ops/checks/synthetic-probe/run").await?;
    let (status, summary) = run_check(&r.json);
    assert_eq!(status, "ok", "{summary}");
    let latency = r.json["report"]["measurements"]["latency_ms"].as_f64().unwrap();
    assert!(latency > 0.0 && latency < 10_000.0, "{latency}");
    let catalog = hub.client("civil-affairs").get("/v1/catalog").await?;
    assert!(!catalog.text.contains("hub-probe"), "probes are not in the catalogue");
    assert_eq!(hub.client("civil-affairs").get("/v1/records/hub-probe/x").await?.status, 404);

    // Certificates: the justice bureau's expires in five days.
    let r = run_now(&ops, "/v1/ops/checks/certificates/run").await?;
    let (status, summary) = run_check(&r.json);
    assert_eq!(status, "warn", "{summary}");
    let crl_age = r.json["report"]["measurements"]["crl_age_days"].as_f64();
    assert!(crl_age.is_some_and(|d| (0.0..1.0).contains(&d)), "a fresh CRL: {}", r.text);
    assert!(
        summary.contains("client justice expires in 5 days") || summary.contains("client justice expires in 4 days"),
        "{summary}"
    );

    // The nightly backup: keeps the newest one, names the chain head in its manifest, and
    // restores into a hub whose chain verifies.
    harness::eventually(Duration::from_secs(30), "the backup taken at start", || {
        let ops = ops.clone();
        async move {
            Ok(ops.get("/v1/ops/checks/nightly-backup/history").await?.json["runs"]
                .as_array()
                .is_some_and(|r| !r.is_empty()))
        }
    })
    .await?;
    let r = run_now(&ops, "/v1/ops/checks/nightly-backup/run").await?;
    assert_eq!(run_check(&r.json).0, "ok", "{}", r.text);
    let backups: Vec<std::path::PathBuf> =
        std::fs::read_dir(_cfg_dir.path().join("backups"))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    assert_eq!(backups.len(), 1, "keep = 1: {backups:?}");
    let manifest = rusqlite::Connection::open(&backups[0])?;
    let head: String =
        manifest.query_row("SELECT v FROM backup_meta WHERE k = 'audit_head_digest'", [], |r| r.get(0))?;
    assert_eq!(head.len(), 64);
    let restored = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["restore", "--from"])
        .arg(&backups[0])
        .arg("--data")
        .arg(restored.path().join("data"))
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&head), "the restored chain ends at the manifest's head");

    // Audit chain: fine, until a row is edited behind the hub's back.
    let civil = hub.client("civil-affairs");
    let (a, b) = (resident_id("19900315", 77), resident_id("19920708", 77));
    civil.publish("marriage-registration", &marriage("J440184-2026-000077", &a, &b)).await?;
    // A full pass leaves an anchor at the last signed checkpoint; the run after it resumes there.
    // (Whether the run at start found a checkpoint depends on timing, so run until one resumes.)
    let mut incremental = None;
    for _ in 0..3 {
        let r = run_now(&ops, "/v1/ops/checks/audit-chain/run").await?;
        assert_eq!(run_check(&r.json).0, "ok", "{}", r.text);
        if r.json["report"]["measurements"]["full_pass"] == 0.0 {
            incremental = Some(r.json["report"].clone());
            break;
        }
    }
    let report = incremental.expect("a run resumes from the checkpoint");
    assert!(report["summary"].as_str().unwrap().starts_with("incremental pass"), "{report}");
    let m = &report["measurements"];
    assert!(m["entries"].as_f64() < m["head_seq"].as_f64(), "only entries after the checkpoint: {m}");
    {
        let db = rusqlite::Connection::open(hub.data.path().join("hub.db"))?;
        db.busy_timeout(Duration::from_secs(5))?;
        assert_eq!(db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 1", [])?, 1);
    }
    // An edit before the checkpoint is what the periodic full pass is for (full_every = 2 here).
    let r = run_now(&ops, "/v1/ops/checks/audit-chain/run").await?;
    let (status, summary) = run_check(&r.json);
    assert_eq!(status, "critical");
    assert!(summary.contains("seq 1"), "{summary}");

    // /health sums it up, in application/health+json, for ops and the vendor alike.
    let h = ops.get("/health").await?;
    assert_eq!(h.status, 200);
    assert!(h.content_type.starts_with("application/health+json"));
    assert_eq!(h.json["status"], "fail");
    assert_eq!(h.json["checks"]["audit-chain"][0]["status"], "fail");
    assert_eq!(h.json["checks"]["storage"][0]["componentType"], "storage");
    let history = ops.get("/v1/ops/checks/audit-chain/history").await?;
    let statuses: Vec<&str> =
        history.json["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(&statuses[..2], ["critical", "ok"], "newest first");

    // The vendor sees health, never a citizen; departments do not see operations.
    let vendor = hub.client("vendor");
    for path in [
        "/health",
        "/v1/ops/alerts",
        "/v1/ops/checks",
        "/v1/ops/checks/audit-chain/history",
        "/v1/ops/subscriptions",
        "/v1/ops/deliveries?state=pending",
    ] {
        let r = vendor.get(path).await?;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        for secret in [a.as_str(), &b, "陈志明", "李晓红", "J440184-2026-000077", "hukou"] {
            assert!(!r.text.contains(secret), "{path} shows {secret} to the vendor");
        }
    }
    assert_eq!(vendor.post("/v1/ops/checks/storage/run", &json!({})).await?.status, 403, "running checks is for ops");

    // Metrics: no personal data in any label, promtool accepts them, and a local Prometheus can
    // scrape the plain loopback listener.
    let m = vendor.get("/metrics").await?;
    assert_eq!(m.status, 200);
    assert!(m.content_type.starts_with("text/plain; version=0.0.4"), "{}", m.content_type);
    for needle in [
        "hub_records_published_total{department=\"civil-affairs\",record_type=\"marriage-registration\"} 1",
        "hub_check_status{check=\"audit-chain\"} 2",
        "hub_outbox_entries{subscription=\"marriage-to-hrss\",state=\"pending\"} 1",
        "hub_http_requests_total{endpoint=\"/v1/records/{type}\",method=\"POST\",status=\"201\",principal=\"civil-affairs\"} 1",
    ] {
        assert!(m.text.contains(needle), "{needle} missing from:\n{}", m.text);
    }
    for secret in [a.as_str(), &b, "陈志明", "J440184-2026-000077"] {
        assert!(!m.text.contains(secret), "metrics show {secret}");
    }
    promtool_accepts(&m.text)?;
    let plain = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await?;
    assert_eq!(plain.status(), 200);
    assert!(plain.text().await?.contains("hub_store_commits_total"));
    assert_eq!(vendor.get("/v1/records/marriage-registration/J440184-2026-000077?purpose=x").await?.status, 403);
    assert_eq!(vendor.get("/v1/audit").await?.status, 403);
    assert_eq!(vendor.get("/v1/feeds/marriage-to-hrss").await?.status, 403);
    assert_eq!(civil.get("/health").await?.status, 403);
    assert_eq!(run_now(&ops, "/v1/ops/checks/nope/run").await?.status, 404);
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_report_shows_an_injected_outage_and_its_signature_verifies() -> Result<()> {
    let (_cfg_dir, cfg) = TestConfig::conghua().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    // October 2026 in Conghua (UTC+8) starts at 2026-09-30T16:00Z: one run an hour, and the
    // receivers check critical for two hours on the 15th, 10:00 to 12:00 local time.
    let start = chrono::DateTime::parse_from_rfc3339("2026-09-30T16:00:00Z")?.with_timezone(&chrono::Utc);
    for h in 0..744i64 {
        let t = start + chrono::Duration::hours(h);
        let down = (14 * 24 + 10..14 * 24 + 12).contains(&h);
        for (name, status) in [("receivers", if down { "critical" } else { "ok" }), ("storage", "ok")] {
            let run = hub::store::CheckRun {
                name: name.into(),
                kind: "test".into(),
                started: t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                duration_ms: 3,
                status: status.into(),
                summary: String::new(),
                measurements: json!({}),
                trigger: "schedule".into(),
            };
            hub.state.store.record_check(run, "2000-01-01T00:00:00Z".into()).await?;
        }
    }
    let vendor = hub.client("vendor");
    let r = vendor.get("/v1/ops/reports/sla?month=2026-10").await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let report = &r.json["report"];
    let expected = 100.0 * (1.0 - 2.0 / 744.0);
    let got = report["availability"]["checks"]["receivers"]["availability_percent"].as_f64().unwrap();
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    assert!((report["availability"]["overall_percent"].as_f64().unwrap() - 99.731).abs() < 1e-9);
    assert_eq!(report["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(report["incidents"][0]["start"], "2026-10-15T02:00:00Z");
    assert_eq!(report["incidents"][0]["end"], "2026-10-15T04:00:00Z");
    assert_eq!(report["incidents"][0]["duration_secs"], 7200);
    assert_eq!(report["mttr_secs"], 7200.0);
    assert_eq!(report["period"]["complete"], true);

    // The signature verifies with the hub's public key file, over the canonical report.
    let public = hub.data.path().join("keys/audit-signing.pub");
    let sig = r.json["signature"]["value"].as_str().unwrap();
    assert!(harness::signature_valid(&public, &serde_jcs::to_vec(report)?, sig)?, "the report's signature");
    let mut forged = report.clone();
    forged["availability"]["overall_percent"] = json!(100.0);
    assert!(!harness::signature_valid(&public, &serde_jcs::to_vec(&forged)?, sig)?, "an edited report must not verify");

    // Printable HTML, and the same report from the command line.
    let page = vendor.get("/v1/ops/reports/sla?month=2026-10&format=html").await?;
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.text.contains("99.731%") && page.text.contains("2026-10-15T02:00:00Z"), "{}", page.text);
    assert_eq!(vendor.get("/v1/ops/reports/sla?month=October").await?.status, 400);
    assert_eq!(hub.client("civil-affairs").get("/v1/ops/reports/sla?month=2026-10").await?.status, 403);
    let data = hub.stop_keeping_data().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["report", "sla", "--month", "2026-10", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(data.path())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(cli["report"]["incidents"], report["incidents"]);
    Ok(())
}

/// `promtool check metrics`, when promtool is installed. CI installs it and sets
/// HUB_TEST_REQUIRE_PROMTOOL, so there a missing promtool fails instead of skipping.
fn promtool_accepts(text: &str) -> Result<()> {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var_os("HUB_TEST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("promtool is not installed: `promtool check metrics` skipped");
            return Ok(());
        }
        Err(e) => anyhow::bail!("promtool is required here: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every `hub_*` metric the alert rules and the Grafana dashboard query is one the hub exports,
/// and promtool accepts the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_dashboard_query_real_metrics() -> Result<()> {
    let hub = TestHub::start().await?;
    let civil = hub.client("civil-affairs");
    civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000555", &resident_id("19900315", 5), &resident_id("19920708", 5)),
        )
        .await?;
    hub.client("ops-duty").post("/v1/ops/checks/storage/run", &json!({})).await?;
    hub.client("family-planning")
        .get("/v1/records/marriage-registration/J440184-2026-000555?purpose=birth-service-registration")
        .await?;
    // Families appear once they have a sample: wait for the first delivery attempt (the
    // configured receivers are absent, so it is a retry).
    let ops = hub.client("ops-duty");
    harness::eventually(Duration::from_secs(20), "a delivery attempt in the metrics", || {
        let ops = ops.clone();
        async move { Ok(ops.get("/metrics").await?.text.contains("hub_delivery_attempts_total{")) }
    })
    .await?;
    let metrics = ops.get("/metrics").await?.text;
    let exported: std::collections::HashSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|n| [n.to_owned(), format!("{n}_bucket"), format!("{n}_sum"), format!("{n}_count")])
        .collect();
    let mut used = Vec::new();
    let rules = std::fs::read_to_string(harness::root().join("ops/alerts/hub.rules.yml"))?;
    let dashboard = std::fs::read_to_string(harness::root().join("ops/dashboards/hub.json"))?;
    let dash: Value = serde_json::from_str(&dashboard)?;
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for text in [&rules, &dashboard] {
        for (i, _) in text.match_indices("hub_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            used.push(name);
        }
    }
    assert!(used.len() > 10);
    for name in &used {
        assert!(exported.contains(name), "{name} is queried but not exported");
    }
    hub.stop().await;
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(harness::root().join("ops/alerts/hub.rules.yml"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) if std::env::var_os("HUB_TEST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("promtool is not installed: `promtool check rules` skipped")
        }
        Err(e) => anyhow::bail!("promtool is required here: {e}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_cli_talks_to_a_running_hub_with_an_operator_certificate() -> Result<()> {
    let ps = Receiver::start().await;
    ps.answer(Answer::Status(400, None));
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9102, &ps.url).fast_retries().write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000808", &resident_id("19900315", 8), &resident_id("19920708", 8)),
        )
        .await?;
    let ops = hub.client("ops-duty");
    harness::eventually(Duration::from_secs(20), "a dead letter", || {
        let ops = ops.clone();
        async move {
            Ok(ops.get("/v1/ops/deliveries?state=dead").await?.json["entries"]
                .as_array()
                .is_some_and(|e| !e.is_empty()))
        }
    })
    .await?;
    let data = hub.data.path().to_path_buf();
    let (url, cfg_path) = (hub.url.clone(), cfg.clone());
    let cli = move |args: &[&str]| -> Result<(i32, String, String)> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(args)
            .arg("--url")
            .arg(&url)
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&cfg_path)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["status"])
    })
    .await??;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("marriage-to-public-security") && out.contains("从化区公安分局") && out.contains("audit-chain"),
        "{out}"
    );
    let (code, out, _) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["checks", "run", "storage", "--format", "json"])
    })
    .await??;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out)?["name"], "storage");
    let (code, out, _) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["dlq", "list"])
    })
    .await??;
    assert_eq!(code, 0);
    assert!(out.contains("J440184-2026-000808") && out.contains("HTTP 400"), "{out}");
    // The vendor's certificate gets counts and error texts only.
    let (code, out, _) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["dlq", "list", "--as", "vendor"])
    })
    .await??;
    assert_eq!(code, 0);
    assert!(out.contains("HTTP 400") && !out.contains("J440184-2026-000808"), "{out}");
    let (code, _, err) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["dlq", "retry", "999999"])
    })
    .await??;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    hub.stop().await;
    Ok(())
}

/// Headless Chromium, when installed (CI installs it and sets HUB_TEST_REQUIRE_CHROMIUM).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(std::env::var_os("HUB_TEST_REQUIRE_CHROMIUM").is_none(), "chromium is required here");
        eprintln!("chromium is not installed: the dashboard browser test is skipped");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failing_check_in_headless_chromium() -> Result<()> {
    let ps = Receiver::start().await;
    let port = harness::free_port()?;
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9102, &ps.url)
        .replace("[ops]\n", &format!("[ops]\nmetrics_listen = \"127.0.0.1:{port}\"\n"))
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let ops = hub.client("ops-duty");
    ps.answer(Answer::Status(503, None));
    let r = run_now(&ops, "/v1/ops/checks/receivers/run").await?;
    assert_eq!(run_check(&r.json).0, "critical");
    hub.client("civil-affairs")
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000321", &resident_id("19900315", 21), &resident_id("19920708", 21)),
        )
        .await?;

    // Over mTLS for ops and the vendor, with a strict CSP and no personal data.
    let vendor = hub.client("vendor");
    let page = vendor.send(vendor.http.get(format!("{}/ops/", hub.url))).await?;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("marriage-to-public-security") && page.text.contains("critical"), "{}", page.text);
    for secret in [resident_id("19900315", 21).as_str(), "陈志明", "J440184-2026-000321"] {
        assert!(!page.text.contains(secret), "the dashboard shows {secret}");
    }
    let head = vendor.http.get(format!("{}/ops/", hub.url)).send().await?;
    let csp = head.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    assert_eq!(hub.client("civil-affairs").get("/ops/").await?.status, 403);

    // In a real browser, from the loopback console.
    let Some(browser) = chromium() else { return Ok(()) };
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir()?;
    let url = format!("http://127.0.0.1:{port}/ops/");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ];
    let profile_dir = profile.path().display().to_string();
    let run = move |extra: String| -> Result<std::process::Output> {
        Ok(std::process::Command::new(browser)
            .args(flags)
            .arg(format!("--user-data-dir={profile_dir}"))
            .arg(extra)
            .arg(&url)
            .output()?)
    };
    let dom = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run("--dump-dom".into())
    })
    .await??;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("receivers") && dom.contains("critical") && dom.contains("从化区公安分局"), "{dom}");
    let shot_arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || run(shot_arg)).await??;
    let png = std::fs::read(out_dir.join("dashboard.png"))?;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
    eprintln!("dashboard screenshot: {}", out_dir.join("dashboard.png").display());
    hub.stop().await;
    Ok(())
}
