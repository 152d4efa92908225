//! Upgrades lose nothing. Each folder of `tests/fixtures/upgrade/` is a data directory written by
//! one release, with what its API showed before it stopped (`manifest.json`): every record
//! version and its digest, every audit entry's sequence and digest, the pending and dead
//! deliveries by event id, and what the two feeds still owed. `sqlite-v6` is SQLite schema 6 (the
//! last before the log-and-cursor store), `sqlite-v8` schema 8 (the last with an outbox row per
//! route). The current release must open a copy of each and show the same, and the chain must
//! verify offline afterwards. `postgres-v3` is a PostgreSQL database at migration 3 (the last with
//! an outbox row per route), kept as `pg_dump --inserts` output beside the hub's keys, and loaded
//! into a fresh database when `HUB_TEST_POSTGRES_URL` is set.
//!
//! A fixture is written by `write_the_upgrade_fixture` (ignored; run it with
//! `HUB_WRITE_UPGRADE_FIXTURE=DIR`, and `HUB_FIXTURE_BIN` naming the release being captured if it
//! is not this build; with `HUB_TEST_POSTGRES_URL` also set, on PostgreSQL) and committed whole: a
//! newer release cannot make an older one's files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use harness::{eventually, free_port, marriage, resident_id, HubProcess, PgDatabase, TestConfig};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn fixture(name: &str) -> PathBuf {
    harness::root().join("tests/fixtures/upgrade").join(name)
}

/// The config both releases run: every subscription; Family Planning's receiver at `fp`, the
/// other webhooks on ports where nothing listens (their entries stay pending).
fn config(fp: &str, pg: Option<&PgDatabase>) -> TestConfig {
    // The fixtures' pending entries are as old as the fixtures: with the deployment's 72 h bound
    // they would be dead-lettered on start (expiry has its own tests), so the bound is lifted.
    let c = TestConfig::conghua()
        .receiver(9103, fp)
        .without_checks()
        .replace("max_age_hours = 72", &format!("max_age_hours = {}", 24 * 365 * 100));
    match pg {
        Some(_) => c.replace("engine = \"sqlite\"", "engine = \"postgres\""),
        None => c,
    }
}

/// The environment that points a hub at `pg`.
fn env(pg: Option<&PgDatabase>) -> Vec<(&'static str, &str)> {
    pg.map(|db| ("HUB_DATABASE_URL", db.url.as_str())).into_iter().collect()
}

/// Everything the manifest holds, read through the API in an order where the audited reads come
/// before the audit listing that ends it.
async fn observe(hub: &HubProcess, keys: &[String]) -> Result<Value> {
    let (civil, ops, auditor) = (hub.client("civil-affairs"), hub.client("ops-duty"), hub.client("supervision"));
    let mut records = Vec::new();
    for key in keys {
        let h = civil.get(&format!("/v1/records/marriage-registration/{key}/history")).await?;
        anyhow::ensure!(h.status == 200, "history of {key}: {}", h.text);
        let versions: Vec<Value> = h.json["versions"]
            .as_array()
            .context("versions")?
            .iter()
            .map(|v| json!({"version": v["version"], "digest": v["digest"], "received_at": v["received_at"], "data": v["data"]}))
            .collect();
        records.push(json!({"key": key, "versions": versions}));
    }
    let mut deliveries = json!({});
    for state in ["pending", "dead"] {
        let r = ops.get(&format!("/v1/ops/deliveries?state={state}&limit=1000")).await?;
        anyhow::ensure!(r.status == 200, "{state} deliveries: {}", r.text);
        let ids: BTreeSet<String> = r.json["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .map(|e| format!("{} {}", e["subscription"].as_str().unwrap_or(""), e["event_id"].as_str().unwrap_or("")))
            .collect();
        deliveries[state] = json!(ids);
    }
    let mut feeds = json!({});
    for (dept, feed) in [("hrss", "marriage-to-hrss"), ("state-tax", "marriage-to-state-tax")] {
        let r = hub.client(dept).get(&format!("/v1/feeds/{feed}?limit=1000")).await?;
        anyhow::ensure!(r.status == 200, "{feed}: {}", r.text);
        let ids: Vec<&str> =
            r.json["events"].as_array().context("events")?.iter().filter_map(|e| e["id"].as_str()).collect();
        feeds[feed] = json!(ids);
    }
    let audit: Vec<Value> = chain(&auditor)
        .await?
        .iter()
        .map(|e| json!({"seq": e["seq"], "action": e["action"], "digest": e["digest"]}))
        .collect();
    Ok(json!({"records": records, "deliveries": deliveries, "feeds": feeds, "audit": audit}))
}

/// Every audit entry, as the auditor's export pages it.
async fn chain(auditor: &harness::Client) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    loop {
        let after = all.last().and_then(|e: &Value| e["seq"].as_u64()).unwrap_or(0);
        let r = auditor.get(&format!("/v1/audit?after={after}&limit=1000")).await?;
        anyhow::ensure!(r.status == 200, "audit: {}", r.text);
        let page = r.json["entries"].as_array().context("entries")?.clone();
        all.extend(page.iter().cloned());
        // Each page read is audited too: a short page is the end of what was there before.
        if page.len() < 1000 {
            return Ok(all);
        }
    }
}

fn keys() -> Vec<String> {
    (1..=6).map(|i| format!("J440184-2026-{:06}", 900 + i)).collect()
}

/// Writes the fixture with the release under test. Not a check: run it on purpose, once per
/// schema version worth keeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the upgrade fixture; run with HUB_WRITE_UPGRADE_FIXTURE=DIR"]
async fn write_the_upgrade_fixture() -> Result<()> {
    let out = PathBuf::from(std::env::var("HUB_WRITE_UPGRADE_FIXTURE").context("HUB_WRITE_UPGRADE_FIXTURE")?);
    let bin = std::env::var("HUB_FIXTURE_BIN").unwrap_or_else(|_| BIN.to_owned());
    let pg = PgDatabase::create("the upgrade fixture on PostgreSQL").await?;
    let fp = adapters::testkit::Receiver::start().await;
    let (_cfg_dir, cfg) = config(&fp.url, pg.as_ref()).fast_retries().write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let hub = HubProcess::start_config(&bin, &cfg, &data, free_port()?, &[], &env(pg.as_ref())).await?;
    let (civil, fpc, hrss) = (hub.client("civil-affairs"), hub.client("family-planning"), hub.client("hrss"));
    let ops = hub.client("ops-duty");
    let keys = keys();
    let person = |i: u32| resident_id("19900315", 100 + i);
    // Records 1–3 delivered to Family Planning; record 1 in three versions.
    for (n, key) in keys.iter().take(3).enumerate() {
        let r = civil
            .publish("marriage-registration", &marriage(key, &person(2 * n as u32), &person(2 * n as u32 + 1)))
            .await?;
        anyhow::ensure!(r.status == 201, "{}", r.text);
    }
    for v in 0..2u32 {
        let r = civil.publish("marriage-registration", &marriage(&keys[0], &person(0), &person(50 + v))).await?;
        anyhow::ensure!(r.status == 201, "{}", r.text);
    }
    fp.wait_accepted(5).await;
    // Record 4: Family Planning refuses it for good (a dead letter).
    fp.answer(adapters::testkit::Answer::Status(400, None));
    let r = civil.publish("marriage-registration", &marriage(&keys[3], &person(7), &person(8))).await?;
    anyhow::ensure!(r.status == 201, "{}", r.text);
    eventually(std::time::Duration::from_secs(20), "a dead letter", || async {
        let r = ops.get("/v1/ops/deliveries?state=dead").await?;
        Ok(r.json["entries"].as_array().is_some_and(|e| e.len() == 1))
    })
    .await?;
    // Records 5 and 6: Family Planning is down (they stay pending with it, as with the others).
    fp.answer(adapters::testkit::Answer::Status(503, None));
    for (n, key) in keys.iter().enumerate().skip(4) {
        let r = civil.publish("marriage-registration", &marriage(key, &person(10 + n as u32), &person(20))).await?;
        anyhow::ensure!(r.status == 201, "{}", r.text);
    }
    // HRSS acknowledges the first three events of its feed; State Tax none.
    let f = hrss.get("/v1/feeds/marriage-to-hrss?limit=3").await?;
    let cursor = f.json["cursor"].as_str().context("cursor")?.to_owned();
    let ack = hrss.post("/v1/feeds/marriage-to-hrss/ack", &json!({ "cursor": cursor })).await?;
    anyhow::ensure!(ack.status == 200, "{}", ack.text);
    // A read and a lookup, for audit entries of those kinds.
    let r =
        fpc.get(&format!("/v1/records/marriage-registration/{}?purpose=birth-service-registration", keys[1])).await?;
    anyhow::ensure!(r.status == 200, "{}", r.text);
    let r = fpc.post("/v1/lookup", &json!({"subject": person(3), "purpose": "birth-service-registration"})).await?;
    anyhow::ensure!(r.status == 200, "{}", r.text);
    let manifest = observe(&hub, &keys).await?;
    let mut hub = hub;
    hub.terminate()?;

    std::fs::create_dir_all(&out)?;
    let target = out.join("data");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target)?;
    // The database (checkpointed into one file at shutdown, or dumped as statements) and the
    // hub's keys; the development PKI is made afresh by whichever release opens it, so no
    // certificate in the fixture expires.
    match &pg {
        None => {
            std::fs::copy(data.join("hub.db"), target.join("hub.db"))?;
        }
        Some(db) => {
            let dump = std::process::Command::new("pg_dump")
                .args(["--inserts", "--no-owner", "--no-privileges", "--dbname", &db.url])
                .output()?;
            anyhow::ensure!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
            std::fs::write(out.join("dump.sql"), dump.stdout)?;
        }
    }
    hub::server::copy_tree(&data.join("keys"), &target.join("keys"))?;
    std::fs::write(out.join("manifest.json"), serde_json::to_string_pretty(&manifest)? + "\n")?;
    Ok(())
}

/// Git keeps no file modes but the executable bit, and the hub refuses secrets others can read:
/// the copy gets back the 0600 the release wrote (public keys too, which is stricter than needed).
fn owner_only(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            owner_only(&entry.path())?;
        } else {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// An audit listing as (sequence, digest) pairs.
fn seqs(audit: &Value) -> Vec<(u64, String)> {
    audit
        .as_array()
        .map(|a| {
            a.iter().map(|e| (e["seq"].as_u64().unwrap_or(0), e["digest"].as_str().unwrap_or("").to_owned())).collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_schema_6_release_opens_with_everything_in_it() -> Result<()> {
    opens_with_everything_in_it("sqlite-v6").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_schema_8_release_opens_with_everything_in_it() -> Result<()> {
    opens_with_everything_in_it("sqlite-v8").await
}

/// Written by d396d3b: push subscriptions and feeds as cursors over the log, positions and
/// routes bits in the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_schema_9_release_opens_with_everything_in_it() -> Result<()> {
    opens_with_everything_in_it("sqlite-v9").await
}

/// Each person's access log, after the upgrade, lists every read, lookup and delivery the
/// chain holds about them: people every version of a record names, and people a later version
/// removed (person 1 and person 50, from the first record's second and third versions).
async fn access_logs_hold_every_entry(hub: &HubProcess, data: &std::path::Path) -> Result<()> {
    let keys = hub::ledger::keys::HubKeys::load_or_create(data, Default::default())?;
    let (auditor, portal) = (hub.client("supervision"), hub.client("citizen-portal"));
    let chain = chain(&auditor).await?;
    let last = chain.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
    for i in [0, 1, 2, 3, 50, 51] {
        let person = resident_id("19900315", 100 + i);
        let hash = keys.subject_hash(&person);
        let expected: BTreeSet<u64> = chain
            .iter()
            .filter(|e| matches!(e["action"].as_str(), Some("read" | "lookup" | "deliver")))
            .filter(|e| e["subjects"].as_array().is_some_and(|s| s.iter().any(|h| h == &json!(hash))))
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        let r = portal.post("/v1/access-log", &json!({ "subject": person })).await?;
        anyhow::ensure!(r.status == 200, "access log: {}", r.text);
        let listed: BTreeSet<u64> = r.json["accesses"]
            .as_array()
            .context("accesses")?
            .iter()
            .filter_map(|a| a["audit_seq"].as_u64())
            .filter(|s| *s <= last)
            .collect();
        anyhow::ensure!(
            listed == expected,
            "person {i}: the access log lists {listed:?}, the chain holds {expected:?}"
        );
        anyhow::ensure!(!expected.is_empty() || i == 51, "person {i} was received by someone");
    }
    Ok(())
}

async fn opens_with_everything_in_it(name: &str) -> Result<()> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(fixture(name).join("manifest.json"))?)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    hub::server::copy_tree(&fixture(name).join("data"), &data)?;
    owner_only(&data)?;
    let dump = fixture(name).join("dump.sql");
    let pg = if dump.exists() {
        let Some(db) = PgDatabase::create("the upgrade of a PostgreSQL database").await? else { return Ok(()) };
        load(&db, &std::fs::read_to_string(&dump)?).await?;
        Some(db)
    } else {
        None
    };
    if pg.is_none() {
        // The old release's file verifies as it is, before anything upgrades it (a backup, a
        // stopped data directory: checkpoints that name no suite).
        let out = std::process::Command::new(BIN).args(["audit", "verify", "--data"]).arg(&data).output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("suite sha256-ed25519"), "before the upgrade: {text}");
    }
    // Nothing listens for Family Planning now: its pending entries stay pending.
    let (_cfg_dir, cfg) = config(&format!("http://127.0.0.1:{}/hub/events", free_port()?), pg.as_ref()).write();
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &env(pg.as_ref())).await?;
    let now = observe(&hub, &keys()).await?;
    assert_eq!(now["records"], manifest["records"], "every record version, its digest and its audit entry");
    assert_eq!(now["deliveries"], manifest["deliveries"], "pending and dead deliveries");
    assert_eq!(now["feeds"], manifest["feeds"], "what each feed still owes, by event id");
    let (before, after) = (seqs(&manifest["audit"]), seqs(&now["audit"]));
    assert!(!before.is_empty());
    assert_eq!(after[..before.len()], before[..], "every audit entry of the old release, unchanged");
    access_logs_hold_every_entry(&hub, &data).await?;
    hub.terminate()?;
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&cfg)
        .envs(env(pg.as_ref()))
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("audit chain ok"), "hub audit verify: {text}");
    Ok(())
}

/// Written by 4a7956e: PostgreSQL at migration 3, an outbox row per route; the pending and
/// unacknowledged rows must still be owed after migration 4 makes the subscriptions cursors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_database_of_migration_3_opens_with_everything_in_it() -> Result<()> {
    opens_with_everything_in_it("postgres-v3").await
}

/// Loads a `pg_dump` into `db`: its statements as they are, without the lines only psql reads.
async fn load(db: &PgDatabase, dump: &str) -> Result<()> {
    use sqlx::Connection as _;
    let sql: String = dump.lines().filter(|l| !l.starts_with('\\')).map(|l| format!("{l}\n")).collect();
    let mut c = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
    c.close().await?;
    Ok(())
}
