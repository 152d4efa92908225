//! The national crypto suite end to end with the real binary: a hub on `sm3-sm2` seals its chain
//! with SM3 and signs checkpoints and reports with SM2 (checked by OpenSSL, not by the hub's
//! code), names the suite in its first entry and every checkpoint, and a node configured with
//! another suite than its data is refused at start, on SQLite and on PostgreSQL. The other
//! suites run again on `sm3-sm2` from `ops/test.sh` (`HUB_TEST_SUITE`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::{free_port, marriage, resident_id, HubProcess, PgDatabase, TestConfig};
use hub::ledger::suite::Suite;
use hub::ledger::{digest_of, Entry};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

/// `hub serve` that must not start: its exit status and what it said.
async fn refused_start(config: &Path, data: &Path, env: &[(&str, &str)]) -> Result<(i32, String)> {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"]).arg(config).arg("--data").arg(data);
    cmd.args(["--listen", &format!("127.0.0.1:{}", free_port()?)]).envs(env.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .context("a node with the wrong suite kept running")???;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), said))
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    let out = Command::new(BIN).args(args).envs(env.iter().copied()).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

fn sm3_config(engine: &str) -> TestConfig {
    TestConfig::conghua()
        .replace("engine = \"sqlite\"", &format!("engine = \"{engine}\""))
        .replace("checkpoint_every = 1000", "checkpoint_every = 5")
        .suite("sm3-sm2")
        .without_checks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_on_sm3_sm2_seals_with_sm3_signs_with_sm2_and_keeps_its_suite() -> Result<()> {
    let (_cfg_dir, cfg) = sm3_config("sqlite").write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &[]).await?;

    let civil = hub.client("civil-affairs");
    let (a, b) = (resident_id("19900315", 41), resident_id("19920708", 41));
    for i in 0..8u32 {
        let r = civil.publish("marriage-registration", &marriage(&format!("J440184-2026-41{i:04}"), &a, &b)).await?;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // Subject hashes (HMAC-SM3) are what lookups find people by.
    let fp = hub.client("family-planning");
    let found = fp.post("/v1/lookup", &json!({"subject": b, "purpose": "birth-service-registration"})).await?;
    assert_eq!(found.status, 200, "{}", found.text);
    assert!(found.text.contains("J440184-2026-410007"), "{}", found.text);

    // The chain names its suite in its first entry, and its digests are SM3's, not SHA-256's.
    let audit = hub.client("supervision").get("/v1/audit?limit=1000").await?;
    let entries: Vec<Entry> = serde_json::from_value(audit.json["entries"].clone())?;
    assert!(entries.len() >= 9, "{}", audit.text);
    assert_eq!(entries[0].detail.as_ref().map(|d| d["crypto_suite"].clone()), Some(json!("sm3-sm2")));
    for e in &entries {
        assert_eq!(digest_of(Suite::Sm3Sm2, e), e.digest, "seq {}", e.seq);
        assert_ne!(digest_of(Suite::Sha256Ed25519, e), e.digest);
    }
    assert!(!audit.text.contains(&a), "subjects appear hashed only");
    let verified = hub.client("supervision").get("/v1/audit/verify").await?;
    assert_eq!((verified.json["ok"].clone(), verified.json["suite"].clone()), (json!(true), json!("sm3-sm2")));

    // The report's signature is SM2 with SM3: OpenSSL verifies it with the hub's public key file.
    let public = data.join("keys/audit-signing.pub");
    let (ok, text) = {
        let out = Command::new("openssl").args(["pkey", "-pubin", "-noout", "-text", "-in"]).arg(&public).output()?;
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(ok && text.contains("SM2"), "an SM2 public key: {text}");
    let r = hub.client("ops-duty").get("/v1/ops/reports/sla?month=2026-10").await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["signature"]["suite"], "sm3-sm2");
    let sig = r.json["signature"]["value"].as_str().context("signature")?;
    let report = serde_jcs::to_vec(&r.json["report"])?;
    assert!(harness::signature_valid(&public, &report, sig)?, "OpenSSL verifies the SM2 signature");
    let mut forged = r.json["report"].clone();
    forged["publishes"] = json!(1_000_000);
    assert!(!harness::signature_valid(&public, &serde_jcs::to_vec(&forged)?, sig)?);
    assert!(hub.terminate()?.success());

    // Offline: verified under the suite, every checkpoint names it.
    let data_s = data.to_string_lossy().into_owned();
    let (ok, text) = run(&["audit", "verify", "--data", &data_s], &[])?;
    assert!(ok && text.contains("suite sm3-sm2"), "{text}");
    {
        let db = rusqlite::Connection::open(data.join("hub.db"))?;
        let suites: Vec<Option<String>> =
            db.prepare("SELECT suite FROM checkpoints")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        assert!(suites.len() >= 2 && suites.iter().all(|s| s.as_deref() == Some("sm3-sm2")), "{suites:?}");
    }

    // Started with the default suite on this data: refused, with both names and what to do.
    let (_d, default_cfg) = TestConfig::conghua().without_checks().suite("sha256-ed25519").write();
    let (code, said) = refused_start(&default_cfg, &data, &[]).await?;
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("sm3-sm2") && said.contains("sha256-ed25519") && !said.contains("panicked"), "{said}");
    // With its own suite it starts again, and the chain goes on.
    let hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &[]).await?;
    let r =
        hub.client("civil-affairs").publish("marriage-registration", &marriage("J440184-2026-419999", &a, &b)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    drop(hub);
    let (ok, text) = run(&["audit", "verify", "--data", &data_s], &[])?;
    assert!(ok, "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_keeps_its_suite_and_refuses_a_node_of_another() -> Result<()> {
    let Some(db) = PgDatabase::create("the crypto suite of a PostgreSQL hub").await? else { return Ok(()) };
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let (_c1, cfg) = sm3_config("postgres").write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("a");
    let hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &env).await?;
    let civil = hub.client("civil-affairs");
    for i in 0..6u32 {
        let r = civil
            .publish(
                "marriage-registration",
                &marriage(&format!("J440184-2026-42{i:04}"), &resident_id("19900315", i), &resident_id("19920708", i)),
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    drop(hub);
    let (data_s, cfg_s) = (data.to_string_lossy().into_owned(), cfg.to_string_lossy().into_owned());
    let (ok, text) = run(&["audit", "verify", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(ok && text.contains("suite sm3-sm2"), "{text}");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await?;
    let suites: Vec<Option<String>> = sqlx::query_scalar("SELECT suite FROM checkpoints").fetch_all(&mut conn).await?;
    assert!(!suites.is_empty() && suites.iter().all(|s| s.as_deref() == Some("sm3-sm2")), "{suites:?}");
    let identity: Option<String> = sqlx::query_scalar("SELECT suite FROM hub_identity").fetch_one(&mut conn).await?;
    assert_eq!(identity.as_deref(), Some("sm3-sm2"));

    // A second node on the default suite: its own new keys are Ed25519; the database refuses it
    // by the suite before the key.
    let (_c2, other) = TestConfig::conghua()
        .replace("engine = \"sqlite\"", "engine = \"postgres\"")
        .suite("sha256-ed25519")
        .without_checks()
        .write();
    let (code, said) = refused_start(&other, &dir.path().join("b"), &env).await?;
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("crypto suite sm3-sm2") && said.contains("sha256-ed25519"), "{said}");
    Ok(())
}
