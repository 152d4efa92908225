//! Reconciliation: a department that sends the ids it holds learns what it is missing, what the
//! hub never sent and what it holds twice (JSON and NDJSON, push and feed subscriptions); the
//! scheduled check reads an exchange folder and a PostgreSQL exchange table back and finds a
//! removed file and a deleted row; one ops call queues the missing events again with the ids
//! the department already knows; bad requests get problems and change nothing.

use std::time::Duration;

use anyhow::Result;
use harness::{eventually, marriage, resident_id, run_sql_pg, server, suffix, uscc, TestConfig, TestHub};
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> =
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect();
    out.sort();
    out
}

fn today(hub: &TestHub) -> String {
    chrono::Utc::now().with_timezone(&hub.state.config.timezone()).date_naive().to_string()
}

/// An id of the hub's shape that it never made.
const NEVER_SENT: &str = "evt_00000000000000000000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_finds_a_dropped_event_an_id_never_sent_and_a_duplicate() -> Result<()> {
    let ([fp, _ps, _lh], config) = harness::marriage_webhooks().await;
    let (_dir, cfg) = config.write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    for n in 0..3u32 {
        let m = marriage(
            &format!("J440184-2026-0006{n:02}"),
            &resident_id("19900315", 600 + n),
            &resident_id("19920708", 650 + n),
        );
        assert_eq!(civil.publish("marriage-registration", &m).await?.status, 201);
    }
    tokio::time::timeout(Duration::from_secs(20), fp.wait_accepted(3)).await?;
    let got: Vec<String> = fp
        .accepted()
        .iter()
        .map(|c| serde_json::from_slice::<Value>(&c.body).map(|e| e["id"].as_str().unwrap_or_default().to_owned()))
        .collect::<Result<_, _>>()?;
    let day = today(&hub);
    let fpc = hub.client("family-planning");
    let sub = "marriage-to-family-planning";
    let path = format!("/v1/reconciliation/{sub}");
    // The settlement (and its audit entry) commits just after the receiver answered.
    eventually(Duration::from_secs(10), "three audited deliveries", || async {
        let r = fpc.post(&path, &json!({ "day": day, "event_ids": [] })).await?;
        Ok(r.json["delivered"] == 3)
    })
    .await?;

    // Family Planning lost the second event, holds the third twice and one the hub never sent.
    let held = json!([got[0], got[2], got[2], NEVER_SENT]);
    let r = fpc.post(&path, &json!({ "day": day, "event_ids": held })).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["delivered"].as_u64(), r.json["held"].as_u64()), (Some(3), Some(3)), "{}", r.text);
    assert_eq!(ids(&r.json["missing"]), [got[1].clone()]);
    assert_eq!(ids(&r.json["unknown"]), [NEVER_SENT]);
    assert_eq!(ids(&r.json["duplicates"]), [got[2].clone()]);
    assert_eq!(r.json["timezone"], "Asia/Shanghai");

    // The same as NDJSON, one id a line (quoted or bare), the day in the query.
    let body = format!("\"{}\"\n{}\n\n{}\n", got[0], got[2], NEVER_SENT);
    let req =
        fpc.http.post(format!("{}{path}?day={day}", fpc.url)).header("content-type", "application/x-ndjson").body(body);
    let n = fpc.send(req).await?;
    assert_eq!(n.status, 200, "{}", n.text);
    assert_eq!((ids(&n.json["missing"]), ids(&n.json["unknown"])), (vec![got[1].clone()], vec![NEVER_SENT.to_owned()]));

    // A pull feed: what was served counts as delivered.
    let hrss = hub.client("hrss");
    let f = hrss.get("/v1/feeds/marriage-to-hrss?wait=5").await?;
    let served: Vec<String> =
        f.json["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(served.len(), 3, "{}", f.text);
    let r = hrss.post("/v1/reconciliation/marriage-to-hrss", &json!({ "day": day, "event_ids": served[..2] })).await?;
    assert_eq!((r.status, ids(&r.json["missing"])), (200, vec![served[2].clone()]), "{}", r.text);

    // One ops call queues the dropped event again, with the id Family Planning knows.
    let ops = hub.client("ops-duty");
    let redeliver = format!("/v1/ops/reconciliation/{sub}/redeliver");
    let r = ops.post(&redeliver, &json!({ "day": day, "event_ids": [got[1]] })).await?;
    assert_eq!((r.status, r.json["queued"].as_u64()), (200, Some(1)), "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), fp.wait_accepted(4)).await?;
    let again: Value = serde_json::from_slice(&fp.accepted()[3].body)?;
    assert_eq!(again["id"], got[1].as_str(), "the same event id");
    // The feed's missing one too: it is served again.
    let r = ops
        .post("/v1/ops/reconciliation/marriage-to-hrss/redeliver", &json!({ "day": day, "event_ids": [served[2]] }))
        .await?;
    assert_eq!((r.status, r.json["queued"].as_u64()), (200, Some(1)), "{}", r.text);
    let f =
        hrss.get(&format!("/v1/feeds/marriage-to-hrss?after={}&wait=5", f.json["cursor"].as_str().unwrap())).await?;
    let again: Vec<&str> = f.json["events"].as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(again, [served[2].as_str()], "{}", f.text);

    // Bad requests: each a problem naming what is wrong.
    let r = hrss.post(&path, &json!({ "day": day, "event_ids": [] })).await?;
    assert_eq!(r.status, 403, "another department's subscription: {}", r.text);
    let r = ops.post(&path, &json!({ "day": day, "event_ids": [] })).await?;
    assert_eq!(r.status, 403, "ops reconcile through the redelivery call: {}", r.text);
    let r = fpc.post("/v1/reconciliation/no-such-subscription", &json!({ "day": day, "event_ids": [] })).await?;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = fpc.post(&path, &json!({ "day": day, "event_ids": [got[0], "evt_12", 7] })).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    let pointers: Vec<&str> =
        r.json["errors"].as_array().unwrap().iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert_eq!(pointers, ["/event_ids/1", "/event_ids/2"], "{}", r.text);
    let r = fpc.post(&path, &json!({ "day": "2099-01-01", "event_ids": [] })).await?;
    assert_eq!((r.status, r.json["errors"][0]["pointer"].as_str()), (422, Some("/day")), "{}", r.text);
    let r = fpc.post(&path, &json!({ "day": "04.12.2026", "event_ids": [] })).await?;
    assert_eq!((r.status, r.json["errors"][0]["pointer"].as_str()), (422, Some("/day")), "{}", r.text);
    let req = fpc.http.post(format!("{}{path}", fpc.url)).header("content-type", "application/x-ndjson").body("x\n");
    let r = fpc.send(req).await?;
    assert_eq!((r.status, r.json["errors"][0]["pointer"].as_str()), (400, Some("/query/day")), "{}", r.text);
    let r = ops.post(&redeliver, &json!({ "day": day, "event_ids": [NEVER_SENT] })).await?;
    assert_eq!((r.status, r.json["errors"][0]["pointer"].as_str()), (422, Some("/event_ids/0")), "{}", r.text);
    let r = ops.post(&redeliver, &json!({ "day": day })).await?;
    assert_eq!(r.status, 422, "a webhook cannot be read back: the ids are needed: {}", r.text);
    let r = fpc.post(&redeliver, &json!({ "day": day, "event_ids": [got[1]] })).await?;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(fp.accepted().len(), 4, "nothing more was sent");

    // Each reconciliation is audited with its counts, never the ids.
    let entries = hub.state.store.audit_after(0, 100_000).await?;
    let rec: Vec<_> = entries.iter().filter(|e| e.action == "reconcile").collect();
    assert!(rec.len() >= 4, "{rec:?}");
    let differs = rec
        .iter()
        .find(|e| {
            e.outcome == "differs" && e.detail.as_ref().is_some_and(|d| d["unknown"] == 1 && d["duplicates"] == 1)
        })
        .expect("the reconciliation that found a duplicate and an unknown id");
    assert_eq!(differs.detail.as_ref().unwrap()["missing"], 1);
    assert!(!differs.detail.as_ref().unwrap().to_string().contains("evt_"));
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_finds_a_removed_file_and_a_deleted_row_and_one_call_restores_them() -> Result<()> {
    let Some(pg_url) = server("HUB_TEST_POSTGRES_URL") else { return Ok(()) };
    let sfx = suffix();
    let table = format!("qydj_exchange_{sfx}");
    let pg = sqlx::PgPool::connect(&pg_url).await?;
    let ddl = std::fs::read_to_string(harness::root().join("config/examples/sql/state-tax-postgres.sql"))?
        .replace("qydj_exchange", &table)
        .replace("swdj_staging", &format!("swdj_staging_{sfx}"));
    run_sql_pg(&pg, &ddl).await?;
    let (dir, cfg) = TestConfig::conghua_with_exchange(&[
        "household-to-disabled-federation-folder",
        "enterprise-to-state-tax-table",
    ])
    .fast_retries()
    .replace("postgres://postgres@127.0.0.1:5432/test", &pg_url)
    .replace("table = \"qydj_exchange\" }", &format!("table = \"{table}\" }}"))
    .write();
    let hub = TestHub::start_with(&cfg).await?;

    let police = hub.client("public-security");
    let example = harness::root().join("schemas/household-registration/v1/examples/valid/typical.json");
    let base: Value = serde_json::from_slice(&std::fs::read(example)?)?;
    for n in 0..3u32 {
        let mut h = base.clone();
        h["household_no"] = json!(format!("4401840007{n:05}"));
        assert_eq!(police.publish("household-registration", &h).await?.status, 201);
    }
    let example = harness::root().join("schemas/enterprise-registration/v1/examples/valid/typical.json");
    let base: Value = serde_json::from_slice(&std::fs::read(example)?)?;
    let ic = hub.client("industry-commerce");
    for n in 0..3u32 {
        let mut e = base.clone();
        e["uscc"] = json!(uscc(&format!("91440184MA7{n:06}")));
        assert_eq!(ic.publish("enterprise-registration", &e).await?.status, 201);
    }
    let rows = || async {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&pg).await?;
        Ok::<i64, anyhow::Error>(n)
    };
    let outbox = dir.path().join("exchange/disabled-federation/outbox");
    let data_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(".ndjson"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ops = hub.client("ops-duty");
    let run = || async {
        let r = ops.post("/v1/ops/checks/reconciliation/run", &json!({})).await?;
        assert_eq!(r.status, 200, "{}", r.text);
        Ok::<Value, anyhow::Error>(r.json["report"].clone())
    };
    // Settled, audited, and the check agrees.
    eventually(Duration::from_secs(30), "six deliveries read back", || async {
        let report = run().await?;
        Ok(rows().await? == 3 && report["measurements"]["delivered"] == 6.0 && report["status"] == "ok")
    })
    .await?;

    // The federation's folder loses one file; the tax bureau's table loses one row.
    let files = data_files();
    std::fs::remove_file(&files[0])?;
    let lost_row: String =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT event_id FROM {table} LIMIT 1"))).fetch_one(&pg).await?;
    run_sql_pg(&pg, &format!("DELETE FROM {table} WHERE event_id = '{lost_row}';")).await?;
    let report = run().await?;
    assert_eq!(report["status"], "warn", "{report}");
    let m = &report["measurements"];
    let folder = "household-to-disabled-federation-folder";
    let tab = "enterprise-to-state-tax-table";
    assert_eq!(m[format!("missing.{tab}")], 1.0, "{report}");
    assert!(m[format!("missing.{folder}")].as_f64().unwrap_or(0.0) >= 1.0, "{report}");
    assert_eq!(m[format!("damaged.{folder}")], 1.0, "the manifest without its file: {report}");
    let summary = report["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(folder) && summary.contains(tab) && summary.contains("redeliver"), "{summary}");

    // One ops call per subscription, with the day the report names.
    let day = today(&hub);
    for sub in [folder, tab] {
        let r = ops.post(&format!("/v1/ops/reconciliation/{sub}/redeliver"), &json!({ "day": day })).await?;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json["queued"].as_u64().unwrap_or(0) >= 1, "{}", r.text);
    }
    eventually(Duration::from_secs(30), "the file and the row restored", || async {
        Ok(rows().await? == 3 && files[0].exists())
    })
    .await?;
    let held: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT event_id FROM {table}"))).fetch_all(&pg).await?;
    assert!(held.contains(&lost_row), "the row came back with its own event id");
    eventually(Duration::from_secs(10), "the check agrees again", || async { Ok(run().await?["status"] == "ok") })
        .await?;
    hub.stop().await;
    run_sql_pg(&pg, &format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS swdj_staging_{sfx};")).await?;
    Ok(())
}
