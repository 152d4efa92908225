//! The front-end exchange end to end, through the hub as configured in `config/conghua.toml`:
//! a GB18030 CSV dropped by the Disabled Persons' Federation, staging tables of State Tax
//! (PostgreSQL) and Industry and Commerce (MariaDB) whose rows arrive mapped in the other
//! database's exchange table, and HRSS's queue consumed across a SIGKILL of the real binary.
//! The database and broker suites run when `HUB_TEST_POSTGRES_URL`, `HUB_TEST_MYSQL_URL` and
//! `HUB_TEST_AMQP_URL` are set, and say so when they skip.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use harness::{
    eventually, free_port, resident_id, run_sql_my, run_sql_pg, server, suffix, uscc, HubProcess, TestConfig, TestHub,
};
use serde_json::{json, Value};

fn results(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn pointers(result: &Value) -> Vec<String> {
    result["problem"]["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["pointer"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gb18030_csv_in_the_exchange_folder_is_published_line_by_line() -> Result<()> {
    let (dir, cfg) =
        TestConfig::conghua_with_exchange(&["disabled-federation-csv", "household-to-disabled-federation-folder"])
            .without_checks()
            .replace(
                "settings = { dir = \"../exchange/disabled-federation\", encoding = \"gb18030\" }",
                "settings = { dir = \"../exchange/disabled-federation\", encoding = \"gb18030\", poll_ms = 20 }",
            )
            .write();
    let hub = TestHub::start_with(&cfg).await?;
    let folder = dir.path().join("exchange/disabled-federation");
    let (good1, good2, bad_id) =
        (resident_id("19580911", 17), resident_id("19700102", 21), resident_id("19800203", 33));
    let mut bad_id_wrong = bad_id.clone();
    bad_id_wrong.replace_range(17..18, if bad_id.ends_with('0') { "1" } else { "0" });
    let csv = |third_id: &str, third_level: &str, fifth: &str| {
        format!(
            "证号,身份证号,姓名,残疾类别,残疾等级,发证日期,有效期至,状态\n\
             CDPF440184-2020-000231,{good1},陈国强,肢体,3,2020-05-06,2030-05-05,有效\n\
             CDPF440184-2021-000232,{good2},李秀英,视力,1,2021-06-07,,有效\n\
             CDPF440184-2022-000233,{third_id},王小明,听力,{third_level},2022-07-08,2032-07-07,有效\n\
             CDPF440184-2023-000234,{good2},李秀英,言语,2,2023-08-09,2033-08-08,有效\n\
             {fifth}\n"
        )
    };
    let drop = |text: String| -> Result<()> {
        let (bytes, _, unmappable) = encoding_rs::GB18030.encode(&text);
        anyhow::ensure!(!unmappable, "GB18030 can encode the file");
        let inbox = folder.join("inbox");
        std::fs::create_dir_all(&inbox)?;
        std::fs::write(inbox.join("残联-20261126.csv.part"), &bytes)?;
        std::fs::rename(inbox.join("残联-20261126.csv.part"), inbox.join("残联-20261126.csv"))?;
        Ok(())
    };
    // Line 4: an ID with a wrong check digit and a level that is no number; line 6: a short row.
    drop(csv(&bad_id_wrong, "三级", "CDPF440184-2024-000235,只有两列"))?;
    let result_file = folder.join("results/残联-20261126.csv.result.ndjson");
    eventually(Duration::from_secs(20), "the result file", || async {
        Ok(folder.join("rejected/残联-20261126.csv").exists())
    })
    .await?;
    let first = results(&result_file)?;
    let lines: Vec<(u64, &str)> =
        first.iter().map(|r| (r["line"].as_u64().unwrap_or(0), r["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(lines, [(2, "published"), (3, "published"), (4, "rejected"), (5, "published"), (6, "rejected")]);
    assert_eq!(pointers(&first[2]), ["/disability_level", "/person/id_number"], "{}", first[2]);
    assert_eq!(first[4]["problem"]["detail"], "the row has 2 fields; the header has 8");
    let text = std::fs::read_to_string(&result_file)?;
    assert!(!text.contains(&bad_id_wrong) && !text.contains(&good1), "no resident ID in clear in the result file");

    let federation = hub.client("disabled-federation");
    let rec = federation.get("/v1/records/disability-certificate/CDPF440184-2020-000231").await?;
    assert_eq!(rec.status, 200, "{}", rec.text);
    assert_eq!(rec.json["data"]["disability_category"], "physical", "mapped from 肢体");
    assert_eq!(rec.json["data"]["disability_level"], 3, "a number, from the CSV's text");
    assert_eq!(rec.json["data"]["person"]["name"], "陈国强", "decoded from GB18030");
    assert!(rec.json["data"].get("valid_until").is_some());
    let second = federation.get("/v1/records/disability-certificate/CDPF440184-2021-000232").await?;
    assert!(second.json["data"].get("valid_until").is_none(), "an empty cell is no field");

    // The department corrects the file and drops it again under its name: the lines stored
    // before are replays (no second version), the corrected ones are new.
    drop(
        csv(&bad_id, "2", "CDPF440184-2024-000235,,张三,精神,4,2024-09-10,2034-09-09,有效")
            .replace(",,张三", &format!(",{good1},张三")),
    )?;
    eventually(Duration::from_secs(20), "the corrected file is processed", || async {
        Ok(folder.join("processed/残联-20261126.csv").exists())
    })
    .await?;
    let again = results(&result_file)?;
    let statuses: Vec<(&str, bool)> =
        again.iter().map(|r| (r["status"].as_str().unwrap_or(""), r["receipt"]["replayed"] == true)).collect();
    assert_eq!(
        statuses,
        [("published", true), ("published", true), ("published", false), ("published", true), ("published", false)]
    );
    let history = federation.get("/v1/records/disability-certificate/CDPF440184-2020-000231/history").await?;
    assert_eq!(history.json["versions"].as_array().map(Vec::len), Some(1), "{}", history.text);

    // And out through the folder: a household registration, projected to the federation's grant.
    let police = hub.client("public-security");
    let example = harness::root().join("schemas/household-registration/v1/examples/valid/typical.json");
    let mut household: Value = serde_json::from_slice(&std::fs::read(example)?)?;
    household["household_no"] = json!("440184000077777");
    let published = police.publish("household-registration", &household).await?;
    assert_eq!(published.status, 201, "{}", published.text);
    let outbox = folder.join("outbox");
    eventually(Duration::from_secs(20), "an event file with its manifest", || async {
        Ok(std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().ends_with(".manifest.json")))
            .unwrap_or(false))
    })
    .await?;
    let manifest_path = std::fs::read_dir(&outbox)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .context("manifest")?;
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
    let data = std::fs::read(outbox.join(manifest["file"].as_str().context("file")?))?;
    let event: Value = serde_json::from_slice(data.split(|b| *b == b'\n').next().context("a line")?)?;
    assert_eq!(manifest["count"], 1);
    assert_eq!(event["data"]["household_no"], "440184000077777");
    assert!(event["data"].get("address").is_none(), "not in the federation's grant");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_tables_in_postgres_and_mariadb_reach_each_others_exchange_tables() -> Result<()> {
    let (Some(pg_url), Some(my_url)) = (server("HUB_TEST_POSTGRES_URL"), server("HUB_TEST_MYSQL_URL")) else {
        return Ok(());
    };
    let sfx = suffix();
    // The documented DDL, under names of this run's own.
    let rename = |sql: &str| {
        ["swdj_staging", "qydj_exchange", "qydj_staging", "swdj_exchange"]
            .iter()
            .fold(sql.to_owned(), |s, t| s.replace(t, &format!("{t}_{sfx}")))
    };
    let root = harness::root().join("config/examples/sql");
    let pg = sqlx::PgPool::connect(&pg_url).await?;
    let my = sqlx::MySqlPool::connect(&my_url).await?;
    run_sql_pg(&pg, &rename(&std::fs::read_to_string(root.join("state-tax-postgres.sql"))?)).await?;
    run_sql_my(&my, &rename(&std::fs::read_to_string(root.join("industry-commerce-mariadb.sql"))?)).await?;
    run_sql_my(&my, &rename(&std::fs::read_to_string(root.join("civil-affairs-mariadb.sql"))?)).await?;

    let mut config = TestConfig::conghua_with_exchange(&[
        "enterprise-to-state-tax-table",
        "tax-to-civil-affairs-table",
        "state-tax-staging",
        "industry-commerce-staging",
    ])
    .without_checks()
    .fast_retries()
    .replace("postgres://postgres@127.0.0.1:5432/test", &pg_url)
    .replace("mysql://root@127.0.0.1:3306/test", &my_url);
    for t in ["swdj_staging", "qydj_staging"] {
        config = config.replace(&format!("table = \"{t}\" }}"), &format!("table = \"{t}_{sfx}\", poll_ms = 50 }}"));
    }
    for t in ["qydj_exchange", "swdj_exchange"] {
        config = config.replace(&format!("table = \"{t}\" }}"), &format!("table = \"{t}_{sfx}\" }}"));
    }
    let (_dir, cfg) = config.write();
    let hub = TestHub::start_with(&cfg).await?;

    // Industry and Commerce writes two enterprises and one with a broken credit code.
    let (e1, e2) = (uscc("91440184MA59XK0D1"), uscc("91440184MA5AB12C3"));
    let mut broken = uscc("91440184MA5CD45E6");
    broken.replace_range(17..18, if broken.ends_with('0') { "1" } else { "0" });
    let owner = resident_id("19580911", 17);
    for (code, name) in
        [(&e1, "广州市从化区流溪河荔枝农业有限公司"), (&e2, "从化温泉旅游发展有限公司"), (&broken, "错误代码有限公司")]
    {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO qydj_staging_{sfx} (tyshxydm, qymc, qylx, fddbr_xm, fddbr_sfzh, zczb, clrq, zs, djzt) \
             VALUES (?, ?, 'limited-liability', '陈国强', ?, 50.00, '2016-03-18', '广州市从化区太平镇钱岗村', 'active')"
        )))
        .bind(code)
        .bind(name)
        .bind(&owner)
        .execute(&my)
        .await?;
    }
    // State Tax writes a registration, and one with a resident ID whose check digit is wrong.
    let mut bad_id = resident_id("19700102", 21);
    bad_id.replace_range(17..18, if bad_id.ends_with('0') { "1" } else { "0" });
    for (no, id) in [("TR440184-2019-000777", owner.as_str()), ("TR440184-2019-000778", bad_id.as_str())] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO swdj_staging_{sfx} (djxh, nsrsbh, nsrmc, nsrlx, djrq, swjg, zt) \
             VALUES ($1, $2, '陈国强', 'gtgsh', '2019-04-01', '国家税务总局广州市从化区税务局', 'zc')"
        )))
        .bind(no)
        .bind(id)
        .execute(&pg)
        .await?;
    }

    // Every staging row is marked in the department's own table.
    let my_marks = format!(
        "SELECT tyshxydm, status, COALESCE(receipt, ''), COALESCE(problem, '') FROM qydj_staging_{sfx} ORDER BY id"
    );
    eventually(Duration::from_secs(30), "MariaDB staging rows marked", || async {
        let rows: Vec<(String, String, String, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(my_marks.clone())).fetch_all(&my).await?;
        Ok(rows.iter().all(|r| r.1 != "new"))
    })
    .await?;
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(my_marks.clone())).fetch_all(&my).await?;
    assert_eq!(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["taken", "taken", "rejected"]);
    let receipt: Value = serde_json::from_str(&rows[0].2)?;
    assert_eq!(
        (receipt["type"].as_str(), receipt["key"].as_str()),
        (Some("enterprise-registration"), Some(e1.as_str()))
    );
    let problem: Value = serde_json::from_str(&rows[2].3)?;
    assert_eq!(pointers(&json!({"problem": problem})), ["/uscc"], "{problem}");

    let pg_marks = format!("SELECT djxh, status, COALESCE(problem, '') FROM swdj_staging_{sfx} ORDER BY id");
    eventually(Duration::from_secs(30), "PostgreSQL staging rows marked", || async {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(pg_marks.clone())).fetch_all(&pg).await?;
        Ok(rows.iter().all(|r| r.1 != "new"))
    })
    .await?;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(pg_marks.clone())).fetch_all(&pg).await?;
    assert_eq!(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["taken", "rejected"]);
    assert!(rows[1].2.contains("/taxpayer_id") && !rows[1].2.contains(&bad_id), "pointer, masked: {}", rows[1].2);

    // Published as their departments, mapped from the staging columns.
    let tax = hub.client("state-tax").get("/v1/records/tax-registration/TR440184-2019-000777").await?;
    assert_eq!(tax.status, 200, "{}", tax.text);
    assert_eq!(
        (tax.json["data"]["taxpayer_kind"].as_str(), tax.json["data"]["status"].as_str()),
        (Some("individual-business"), Some("normal"))
    );
    assert_eq!(tax.json["publisher"], "state-tax");

    // Delivered onward: enterprises into State Tax's PostgreSQL table in its pinyin columns ...
    let exchange_pg =
        format!("SELECT nsrsbh, nsrmc, clrq::text, COALESCE(fddbrxm, '') FROM qydj_exchange_{sfx} ORDER BY seq");
    eventually(Duration::from_secs(30), "enterprises in State Tax's exchange table", || async {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM qydj_exchange_{sfx}")))
            .fetch_one(&pg)
            .await?;
        Ok(n == 2)
    })
    .await?;
    let got: Vec<(String, String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(exchange_pg)).fetch_all(&pg).await?;
    let mut codes: Vec<&str> = got.iter().map(|r| r.0.as_str()).collect();
    codes.sort_unstable();
    let mut want = [e1.as_str(), e2.as_str()];
    want.sort_unstable();
    assert_eq!(codes, want);
    assert!(got.iter().all(|r| r.2 == "2016-03-18" && r.3 == "陈国强"), "{got:?}");

    // ... and the tax registration into Civil Affairs' MariaDB table, in its grant's fields.
    let exchange_my = format!("SELECT djxh, nsrsbh, COALESCE(nsrlx, ''), COALESCE(zt, '') FROM swdj_exchange_{sfx}");
    eventually(Duration::from_secs(30), "the tax registration in Civil Affairs' exchange table", || async {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM swdj_exchange_{sfx}")))
            .fetch_one(&my)
            .await?;
        Ok(n == 1)
    })
    .await?;
    let got: Vec<(String, String, String, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(exchange_my)).fetch_all(&my).await?;
    assert_eq!(
        got,
        [("TR440184-2019-000777".to_owned(), owner.clone(), "individual-business".to_owned(), "normal".to_owned())]
    );

    // The rejections are in the hub's rejected log (the audit), with their pointers.
    let audit = hub.client("supervision").get("/v1/audit?limit=1000").await?;
    let rejects: Vec<&Value> =
        audit.json["entries"].as_array().context("entries")?.iter().filter(|e| e["action"] == "reject").collect();
    assert_eq!(rejects.len(), 2, "{}", audit.text);
    assert!(rejects.iter().any(
        |e| e["detail"]["connection"] == "industry-commerce-staging" && e["detail"]["pointers"] == json!(["/uscc"])
    ));
    hub.stop().await;

    for t in ["swdj_staging", "qydj_exchange"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {t}_{sfx}"))).execute(&pg).await?;
    }
    for t in ["qydj_staging", "swdj_exchange"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {t}_{sfx}"))).execute(&my).await?;
    }
    Ok(())
}

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn enrollment(n: u32) -> Value {
    json!({
        "enrollment_no": format!("SI440184-{:010}", 2026000000u64 + u64::from(n)),
        "person": {"id_number": resident_id("19850607", n % 900 + 1), "name": "测试参保人"},
        "insurance_types": ["pension", "medical"],
        "enrolled_on": "2026-01-01",
        "status": "active"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_consumed_across_a_sigkill_loses_and_doubles_nothing() -> Result<()> {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let Some(amqp_url) = server("HUB_TEST_AMQP_URL") else { return Ok(()) };
    let queue = format!("conghua.hrss.social-insurance.{}", suffix());
    let (_dir, cfg) = TestConfig::conghua_with_exchange(&["hrss-enrollment-queue"])
        .without_checks()
        .replace("amqp://guest:guest@127.0.0.1:5672/%2f", &amqp_url)
        .replace("queue = \"conghua.hrss.social-insurance\"", &format!("queue = \"{queue}\""))
        .write();
    let conn = lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
    const N: u32 = 400;
    for n in 0..N {
        let props = lapin::BasicProperties::default().with_message_id(format!("hrss-{n}").into()).with_delivery_mode(2);
        let body = enrollment(n).to_string();
        channel
            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), body.as_bytes(), props)
            .await?
            .await?;
    }
    let depth = || async {
        let q = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok((q.message_count(), q.consumer_count()))
    };

    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    // Killed mid-stream: messages are in flight between the queue, the hub and its store.
    eventually(Duration::from_secs(60), "the hub to be consuming", || async { Ok(depth().await?.0 < N - 100) }).await?;
    hub.kill()?;
    let at_kill = depth().await?;
    eprintln!("killed with {} messages ready in the queue", at_kill.0);

    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    eventually(Duration::from_secs(120), "the queue to drain", || async { Ok(depth().await?.0 == 0) }).await?;
    let hrss = hub.client("hrss");
    // The last acks follow the last receipts: wait until every record is readable.
    let mut missing = Vec::new();
    for n in 0..N {
        let key = enrollment(n)["enrollment_no"].as_str().unwrap_or_default().to_owned();
        let mut reply = hrss.get(&format!("/v1/records/social-insurance-enrollment/{key}")).await?;
        for _ in 0..100 {
            if reply.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply = hrss.get(&format!("/v1/records/social-insurance-enrollment/{key}")).await?;
        }
        if reply.status != 200 {
            missing.push(key);
            continue;
        }
        assert_eq!(reply.json["version"], 1, "{key} was stored more than once");
    }
    assert!(missing.is_empty(), "lost: {missing:?}");
    let metrics = hub.client("ops-duty").get("/metrics").await?;
    let replayed =
        metrics.text.lines().find(|l| l.contains("inbound_records") && l.contains("replayed")).unwrap_or("none");
    eprintln!("redelivered after the kill and answered as replays: {replayed}");
    hub.terminate()?;
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_folder_that_cannot_be_written_turns_adapter_reachability_critical() -> Result<()> {
    let (dir, cfg) = TestConfig::conghua_with_exchange(&["disabled-federation-csv"]).write();
    let hub = TestHub::start_with(&cfg).await?;
    let ops = hub.client("ops-duty");
    let run = || async {
        // The check may be running from its schedule or the start: 409 means busy, ask again.
        for _ in 0..400 {
            let r = ops.post("/v1/ops/checks/receivers/run", &json!({})).await?;
            if r.status != 409 {
                return anyhow::Ok(r.json["report"]["summary"].as_str().unwrap_or_default().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the receivers check stayed busy")
    };
    let before = run().await?;
    assert!(!before.contains("inbound disabled-federation-csv"), "{before}");
    // The exchange folder's inbox replaced by a file: nothing can be dropped or taken there.
    let inbox = dir.path().join("exchange/disabled-federation/inbox");
    eventually(Duration::from_secs(10), "the inbox to exist", || async { Ok(inbox.is_dir()) }).await?;
    std::fs::remove_dir_all(&inbox)?;
    std::fs::write(&inbox, b"not a folder")?;
    let after = run().await?;
    assert!(after.contains("inbound disabled-federation-csv"), "{after}");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_subscription_is_delivered_in_batches_keeping_each_records_order() -> Result<()> {
    let (dir, cfg) =
        TestConfig::conghua_with_exchange(&["household-to-disabled-federation-folder"]).without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let police = hub.client("public-security");
    let example = harness::root().join("schemas/household-registration/v1/examples/valid/typical.json");
    let base: Value = serde_json::from_slice(&std::fs::read(example)?)?;
    // 200 households, then four more versions of the first, each with another address.
    let mut lines = String::new();
    for n in 0..200u32 {
        let mut h = base.clone();
        h["household_no"] = json!(format!("4401840001{n:05}"));
        lines.push_str(&format!("{h}\n"));
    }
    let batch = |body: String| {
        police
            .http
            .post(format!("{}/v1/batch/household-registration", police.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
    };
    let r = police.send(batch(lines)).await?;
    assert_eq!(r.json["stored"], 200, "{}", r.text);
    for v in 2..=5u32 {
        let mut h = base.clone();
        h["household_no"] = json!("440184000100000");
        h["address"] = json!(format!("广东省广州市从化区街口街道新村路{v}号"));
        assert_eq!(police.publish("household-registration", &h).await?.status, 201);
    }

    let outbox = dir.path().join("exchange/disabled-federation/outbox");
    let manifests = || -> Vec<Value> {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(30), "204 events in the folder", || {
        let n: u64 = manifests().iter().filter_map(|m| m["count"].as_u64()).sum();
        async move { Ok(n >= 204) }
    })
    .await?;
    let files = manifests();
    let events: u64 = files.iter().filter_map(|m| m["count"].as_u64()).sum();
    assert_eq!(events, 204);
    assert!(files.len() < 100, "204 events went out in {} files: the adapter's batches were not used", files.len());
    for m in &files {
        let data = std::fs::read(outbox.join(m["file"].as_str().context("file")?))?;
        assert_eq!(
            data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64,
            m["count"].as_u64().unwrap_or(0)
        );
    }

    // Each delivery is audited (its settlement commits just after the files are written), and the
    // five versions of one household went out in order.
    let delivered_count = || async {
        let entries = hub.state.store.audit_after(0, 100_000).await?;
        Ok::<usize, anyhow::Error>(entries.iter().filter(|e| e.action == "deliver").count())
    };
    eventually(Duration::from_secs(10), "204 audited deliveries", || async { Ok(delivered_count().await? >= 204) })
        .await?;
    let entries = hub.state.store.audit_after(0, 100_000).await?;
    let delivered: Vec<_> = entries.iter().filter(|e| e.action == "deliver").collect();
    assert_eq!(delivered.len(), 204);
    let versions: Vec<u64> = delivered
        .iter()
        .filter(|e| e.record_key.as_deref() == Some("440184000100000"))
        .filter_map(|e| e.record_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_table_rejects_is_tried_entry_by_entry_so_only_the_bad_record_is_dead() -> Result<()> {
    let Some(pg_url) = server("HUB_TEST_POSTGRES_URL") else { return Ok(()) };
    let sfx = suffix();
    let table = format!("qydj_exchange_{sfx}");
    let pg = sqlx::PgPool::connect(&pg_url).await?;
    let ddl = std::fs::read_to_string(harness::root().join("config/examples/sql/state-tax-postgres.sql"))?
        .replace("qydj_exchange", &table)
        .replace("swdj_staging", &format!("swdj_staging_{sfx}"));
    run_sql_pg(&pg, &ddl).await?;
    // The tax bureau's table refuses one taxpayer name: SQLSTATE 23514, a rejection.
    run_sql_pg(&pg, &format!("ALTER TABLE {table} ADD CONSTRAINT refuse_one CHECK (nsrmc <> '拒收有限公司');")).await?;
    let (_dir, cfg) = TestConfig::conghua_with_exchange(&["enterprise-to-state-tax-table"])
        .without_checks()
        .fast_retries()
        .replace("postgres://postgres@127.0.0.1:5432/test", &pg_url)
        .replace("table = \"qydj_exchange\" }", &format!("table = \"{table}\" }}"))
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let example = harness::root().join("schemas/enterprise-registration/v1/examples/valid/typical.json");
    let base: Value = serde_json::from_slice(&std::fs::read(example)?)?;
    let mut lines = String::new();
    for n in 0..30u32 {
        let mut e = base.clone();
        e["uscc"] = json!(uscc(&format!("91440184MA5{n:06}")));
        e["name"] = json!(if n == 17 { "拒收有限公司".to_owned() } else { format!("从化第{n}有限公司") });
        lines.push_str(&format!("{e}\n"));
    }
    let ic = hub.client("industry-commerce");
    let req = ic
        .http
        .post(format!("{}/v1/batch/enterprise-registration", ic.url))
        .header("content-type", "application/x-ndjson")
        .body(lines);
    let r = ic.send(req).await?;
    assert_eq!(r.json["stored"], 30, "{}", r.text);

    let count = || async {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&pg).await?;
        Ok::<i64, anyhow::Error>(n)
    };
    let dead = || async {
        let entries = hub.state.store.audit_after(0, 100_000).await?;
        Ok::<usize, anyhow::Error>(entries.iter().filter(|e| e.action == "dead_letter").count())
    };
    eventually(Duration::from_secs(30), "29 rows and one dead letter", || async {
        Ok(count().await? == 29 && dead().await? == 1)
    })
    .await?;
    let names: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT nsrmc FROM {table}"))).fetch_all(&pg).await?;
    assert!(!names.iter().any(|n| n == "拒收有限公司"));
    hub.stop().await;
    Ok(())
}
