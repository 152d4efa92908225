//! Durability end to end with the real binary: a restart keeps everything, SIGKILL during a
//! burst of publishes loses no acknowledged record, `hub audit verify` passes after a run and
//! names the right sequence number after one audit row is edited in the database file, and
//! group commit really flushes many records per fsync.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use harness::{free_port, marriage, resident_id, uscc, HubProcess, TestHub};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn verify_cli(data: &std::path::Path) -> Result<(i32, String, String)> {
    let out = Command::new(BIN).args(["audit", "verify", "--data"]).arg(data).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_records_and_audit_and_edits_are_located() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut hub = HubProcess::start(BIN, &data, port).await?;
    let civil = hub.client("civil-affairs");
    let mut receipts = Vec::new();
    for i in 0..12u32 {
        let rec = marriage(&format!("J440184-2026-{:06}", i), &resident_id("19900315", i), &resident_id("19920708", i));
        let r = civil.publish("marriage-registration", &rec).await?;
        assert_eq!(r.status, 201, "{}", r.text);
        receipts.push(r.json);
    }
    let fp = hub.client("family-planning");
    assert_eq!(
        fp.get("/v1/records/marriage-registration/J440184-2026-000003?purpose=birth-service-registration")
            .await?
            .status,
        200
    );
    let status = hub.terminate()?;
    assert!(status.success(), "SIGTERM must end with exit 0, got {status}");

    let (code, out, err) = verify_cli(&data)?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("13 entries checked"), "12 publishes and 1 read: {out}");

    let mut hub = HubProcess::start(BIN, &data, port).await?;
    let civil = hub.client("civil-affairs");
    for r in &receipts {
        let got = civil.get(&format!("/v1/records/marriage-registration/{}", r["key"].as_str().unwrap())).await?;
        assert_eq!(got.status, 200);
        assert_eq!(got.json["digest"], r["digest"]);
    }
    // The chain continues where it stopped.
    let r = civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000100", &resident_id("19800101", 1), &resident_id("19800202", 2)),
        )
        .await?;
    assert_eq!(r.json["audit_seq"], 13 + 12 + 1, "{}", r.text);
    assert!(hub.terminate()?.success());
    assert_eq!(verify_cli(&data)?.0, 0);

    // Edit one audit row behind the hub's back: verification fails and names that row.
    {
        let db = rusqlite::Connection::open(data.join("hub.db"))?;
        let changed = db.execute("UPDATE audit SET purpose = 'something-else' WHERE seq = 5", [])?;
        assert_eq!(changed, 1);
    }
    let (code, _, err) = verify_cli(&data)?;
    assert_eq!(code, 1);
    assert!(err.contains("seq 5"), "{err}");
    assert!(!err.contains("panicked"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acknowledged_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut hub = HubProcess::start(BIN, &data, port).await?;
    let civil = hub.client("civil-affairs");
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let mut writers = Vec::new();
    for w in 0..16u32 {
        let (civil, stop, acked_tx) = (civil.clone(), stop.clone(), acked_tx.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let no = format!("J440184-2026-{:02}{:04}", w, i % 10_000);
                let rec = marriage(&no, &resident_id("19900315", w), &resident_id("19920708", i));
                // Errors after the kill are expected; only acknowledged receipts count.
                if let Ok(r) = civil.publish("marriage-registration", &rec).await {
                    if r.status == 201 {
                        let _ = acked_tx.send(r.json);
                    }
                }
                i += 1;
            }
        }));
    }
    drop(acked_tx);
    // Kill once a good number of records have been acknowledged, with requests still in flight.
    let mut acked = Vec::new();
    while acked.len() < 400 {
        match acked_rx.recv().await {
            Some(r) => acked.push(r),
            None => break,
        }
    }
    hub.kill()?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    while let Ok(r) = acked_rx.try_recv() {
        acked.push(r);
    }
    assert!(acked.len() >= 400, "only {} acknowledged", acked.len());

    let (code, out, err) = verify_cli(&data)?;
    assert_eq!(code, 0, "audit chain after SIGKILL: {out}{err}");

    let hub = HubProcess::start(BIN, &data, port).await?;
    let civil = hub.client("civil-affairs");
    for r in &acked {
        let key = r["key"].as_str().unwrap();
        let h = civil.get(&format!("/v1/records/marriage-registration/{key}/history")).await?;
        let versions = h.json["versions"].as_array().cloned().unwrap_or_default();
        let found = versions.iter().find(|v| v["version"] == r["version"]);
        assert!(found.is_some_and(|v| v["digest"] == r["digest"]), "acknowledged {key} v{} is lost", r["version"]);
        let numbers: Vec<u64> = versions.iter().map(|v| v["version"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "versions of {key} must be 1..n without gaps or repeats");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_flushes_many_records_per_fsync_under_concurrent_load() -> Result<()> {
    let hub = TestHub::start().await?;
    let civil = hub.client("civil-affairs");
    let before = hub.state.store.writer_stats();
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let civil = civil.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8u32 {
                let rec = marriage(
                    &format!("J440184-2027-{:02}{:04}", w, i),
                    &resident_id("19900315", w),
                    &resident_id("19920708", i),
                );
                let r = civil.publish("marriage-registration", &rec).await.unwrap();
                assert_eq!(r.status, 201);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let after = hub.state.store.writer_stats();
    let commits = after.commits - before.commits;
    let syncs = after.syncs - before.syncs;
    let operations = after.operations - before.operations;
    eprintln!("group commit: {operations} operations in {commits} commits, {syncs} fsyncs");
    // Delivery retries to the configured (absent) receivers share the writer, hence at least.
    assert!(operations >= 64 * 8, "{operations}");
    assert!(operations >= syncs * 2, "{operations} operations took {syncs} fsyncs: no group commit");
    assert!(syncs <= commits, "{syncs} fsyncs for {commits} commits");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_never_carry_a_resident_id_a_credit_code_or_a_name_in_clear() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let log = data.with_extension("log");
    let mut hub = HubProcess::start_with(BIN, &data, port, &["--log-format", "json"], &[("HUB_LOG", "debug")]).await?;
    let id = resident_id("19900315", 123);
    let civil = hub.client("civil-affairs");
    let r = civil
        .publish("marriage-registration", &marriage("J440184-2026-000001", &id, &resident_id("19920708", 1)))
        .await?;
    assert_eq!(r.status, 201);
    // An ID where a key belongs, in the URL: the request log masks it.
    let _ = civil.get(&format!("/v1/records/marriage-registration/{id}")).await?;
    // A credit code, and a name sent percent-encoded as every client encodes Chinese in a URL.
    let code = uscc("91440184MA59XK0D1");
    let _ = civil.get(&format!("/v1/records/enterprise-registration/{code}?purpose=marriage-registration")).await?;
    let encoded = "%E9%99%88%E5%9B%BD%E5%BC%BA"; // 陈国强
    let _ = civil.get(&format!("/v1/records/marriage-registration/{encoded}")).await?;
    assert!(hub.terminate()?.success());
    let text = std::fs::read_to_string(&log)?;
    for (clear, masked) in [
        (id.as_str(), hub::mask::resident_id(&id)),
        (code.as_str(), hub::mask::credit_code(&code)),
        ("陈国强", "陈**".to_owned()),
        (encoded, "陈**".to_owned()),
    ] {
        assert!(!text.contains(clear), "{clear} in clear in the log:\n{text}");
        assert!(text.contains(&masked), "the masked form {masked} is logged:\n{text}");
    }
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_running_hub_restores_into_a_working_hub() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let hub = TestHub::start().await?;
    let civil = hub.client("civil-affairs");
    let a = resident_id("19900315", 7);
    let r = civil
        .publish("marriage-registration", &marriage("J440184-2026-000007", &a, &resident_id("19920708", 8)))
        .await?;
    assert_eq!(r.status, 201);
    // Receipts given before the backup starts: every one must be in the restored hub.
    let mut receipts = vec![r.json];
    for i in 0..30u32 {
        let rec = marriage(&format!("J440184-2029-{i:06}"), &resident_id("19850101", i), &resident_id("19860101", i));
        let r = civil.publish("marriage-registration", &rec).await?;
        assert_eq!(r.status, 201);
        receipts.push(r.json);
    }
    // Keep publishing while the backup runs: the snapshot must still be one consistent state.
    let busy = {
        let civil = civil.clone();
        tokio::spawn(async move {
            for i in 0..150u32 {
                let rec =
                    marriage(&format!("J440184-2028-{i:06}"), &resident_id("19800101", i), &resident_id("19810101", i));
                assert_eq!(civil.publish("marriage-registration", &rec).await.unwrap().status, 201);
            }
        })
    };
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hub.backup");
    let out = Command::new(BIN).args(["backup", "--data"]).arg(hub.data.path()).arg("--out").arg(&file).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup ok"));
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600, "the backup holds keys");
    busy.await?;
    // Never overwrite a backup.
    let again = Command::new(BIN).args(["backup", "--data"]).arg(hub.data.path()).arg("--out").arg(&file).output()?;
    assert_eq!(again.status.code(), Some(1));
    hub.stop().await;

    let restored = tempfile::tempdir()?;
    let out = Command::new(BIN).args(["restore", "--from"]).arg(&file).arg("--data").arg(restored.path()).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, stdout, stderr) = verify_cli(restored.path())?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Restoring onto existing data, or from something that is not a backup, is refused.
    let out = Command::new(BIN).args(["restore", "--from"]).arg(&file).arg("--data").arg(restored.path()).output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not a database")?;
    let out =
        Command::new(BIN).args(["restore", "--from"]).arg(&junk).arg("--data").arg(dir.path().join("x")).output()?;
    assert_eq!(out.status.code(), Some(1));

    let (_cfg_dir, cfg) = harness::TestConfig::conghua().write();
    let hub = TestHub::start_in(&cfg, restored).await?;
    let owner = hub.client("civil-affairs");
    for receipt in &receipts {
        let key = receipt["key"].as_str().unwrap();
        let got = owner.get(&format!("/v1/records/marriage-registration/{key}")).await?;
        assert_eq!(
            (got.status, &got.json["digest"], &got.json["version"]),
            (200, &receipt["digest"], &receipt["version"]),
            "{key}"
        );
    }
    let fp = hub.client("family-planning");
    let r = fp.get("/v1/records/marriage-registration/J440184-2026-000007?purpose=birth-service-registration").await?;
    assert_eq!(r.status, 200, "{}", r.text);
    // Lookups need the subject key, which came with the backup.
    let r = fp.post("/v1/lookup", &serde_json::json!({"subject": a, "purpose": "birth-service-registration"})).await?;
    assert_eq!(r.json["count"], 1, "{}", r.text);
    hub.stop().await;
    Ok(())
}
