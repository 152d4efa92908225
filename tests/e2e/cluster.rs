//! Two real `hub` processes on one PostgreSQL database (a fresh one, on the server
//! `HUB_TEST_POSTGRES_URL` names): publishing through both at once gives one valid audit chain
//! and every version exactly once; each scheduled check instant runs on one node only; and when
//! one node is killed with SIGKILL while deliveries are pending, the other delivers every event,
//! in per-record order, once the dead node's leases run out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::testkit::{Answer, Receiver};
use anyhow::{Context, Result};
use harness::{free_port, marriage, resident_id, Client, HubProcess, PgDatabase, TestConfig};
use serde_json::Value;
use sqlx::Connection as _;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const TYPE: &str = "marriage-registration";

/// Publishes `no` with a body that names the round, with the round as the idempotency key's tail.
async fn publish(client: &Client, no: &str, round: u32) -> Result<Value> {
    let mut rec = marriage(no, &resident_id("19900315", round), &resident_id("19920708", round + 1));
    rec["registered_on"] = Value::from(format!("2026-11-{:02}", 10 + round));
    let url = format!("{}/v1/records/{TYPE}", client.url);
    let r = client.send(client.http.post(url).header("idempotency-key", format!("{no}-r{round}")).json(&rec)).await?;
    anyhow::ensure!(r.status == 201, "publish {no} round {round}: {} {}", r.status, r.text);
    Ok(r.json)
}

/// The audit entries a person's access log lists, up to `head`.
async fn access_log(portal: &Client, person: &str, head: u64) -> Result<Vec<u64>> {
    let r = portal.post("/v1/access-log", &serde_json::json!({ "subject": person })).await?;
    anyhow::ensure!(r.status == 200, "access log: {}", r.text);
    let accesses = r.json["accesses"].as_array().cloned().unwrap_or_default();
    Ok(accesses.iter().filter_map(|a| a["audit_seq"].as_u64()).filter(|s| *s <= head).collect())
}

/// The versions of each record in the order they were first accepted by the receiver.
fn arrivals(fp: &Receiver) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in fp.accepted() {
        let Ok(ev) = serde_json::from_slice::<Value>(&c.body) else { continue };
        let (Some(subject), Some(version)) = (ev["subject"].as_str(), ev["recordversion"].as_u64()) else { continue };
        let seen = out.entry(subject.to_owned()).or_default();
        if !seen.contains(&version) {
            seen.push(version);
        }
    }
    out
}

async fn check_runs(db: &str, name: &str) -> Result<Vec<(String, String)>> {
    let mut c = sqlx::PgConnection::connect(db).await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT started, trigger FROM check_runs WHERE name = $1 ORDER BY started")
            .bind(name)
            .fetch_all(&mut c)
            .await?;
    Ok(rows)
}

async fn check_runs_with_status(db: &str, name: &str) -> Result<Vec<String>> {
    let mut c = sqlx::PgConnection::connect(db).await?;
    Ok(sqlx::query_scalar("SELECT status FROM check_runs WHERE name = $1").bind(name).fetch_all(&mut c).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_chain_run_each_check_once_and_survive_a_sigkill() -> Result<()> {
    let Some(db) = PgDatabase::create("two hub nodes on one PostgreSQL database").await? else { return Ok(()) };
    let fp = Receiver::start().await;
    // Short leases, so the takeover after the kill comes within seconds.
    let (_cfg_dir, cfg) = TestConfig::postgres_nodes(&fp.url)
        .append(
            "[ops]\nhistory_days = 30\n\n\
             [[checks]]\nname = \"backlog\"\nkind = \"delivery_backlog\"\nschedule = \"0 * * * * *\"\n\n\
             [[checks]]\nname = \"tick\"\nkind = \"dead_letters\"\nschedule = \"*/2 * * * * *\"\n\n\
             [[checks]]\nname = \"probe\"\nkind = \"synthetic\"\nschedule = \"*/3 * * * * *\"\n\n\
             [[checks]]\nname = \"disk\"\nkind = \"storage\"\nschedule = \"*/5 * * * * *\"\n",
        )
        .write();
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let dir = tempfile::tempdir()?;
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = HubProcess::start_config(BIN, &cfg, &data_a, free_port()?, &[], &env).await?;
    // Every node of a cluster holds the same keys and certificates (ops/deploy/cluster.md).
    hub::server::copy_node_identity(&data_a, &data_b)?;
    let b = HubProcess::start_config(BIN, &cfg, &data_b, free_port()?, &[], &env).await?;
    let started = std::time::Instant::now();

    // 1. Publishing through both nodes at once: 8 writers, each record's two versions through
    //    different nodes, one after the other.
    let nodes = [a.client("civil-affairs"), b.client("civil-affairs")];
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let nodes = nodes.clone();
        writers.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..25u32 {
                let no = format!("J440184-2026-{w:01}{i:05}");
                let first = (w + i) as usize % 2;
                receipts.push((no.clone(), publish(&nodes[first], &no, 1).await?));
                receipts.push((no.clone(), publish(&nodes[1 - first], &no, 2).await?));
            }
            anyhow::Ok(receipts)
        }));
    }
    let mut receipts: Vec<(String, Value)> = Vec::new();
    for w in writers {
        receipts.extend(w.await??);
    }
    assert_eq!(receipts.len(), 400);
    let mut seqs: Vec<u64> = receipts.iter().filter_map(|(_, r)| r["audit_seq"].as_u64()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 400, "two receipts share an audit sequence number");
    let by_no: HashMap<&str, Vec<&Value>> = receipts.iter().fold(HashMap::new(), |mut m, (no, r)| {
        m.entry(no.as_str()).or_default().push(r);
        m
    });
    for (no, mine) in &by_no {
        let h = nodes[0].get(&format!("/v1/records/{TYPE}/{no}/history")).await?;
        let versions = h.json["versions"].as_array().cloned().unwrap_or_default();
        let got: Vec<u64> = versions.iter().filter_map(|v| v["version"].as_u64()).collect();
        assert_eq!(got, vec![1, 2], "{no}: versions {got:?}");
        for r in mine {
            let v = &versions[r["version"].as_u64().context("version")? as usize - 1];
            assert_eq!(v["digest"], r["digest"], "{no}: the stored digest differs from the receipt");
        }
    }
    let want: usize = by_no.len();
    harness::eventually(Duration::from_secs(60), "both versions of every record at the receiver", || {
        let done = arrivals(&fp).values().filter(|v| v.len() == 2).count();
        async move { Ok(done == want) }
    })
    .await?;
    for (subject, versions) in arrivals(&fp) {
        assert_eq!(versions, vec![1, 2], "{subject} arrived out of order");
    }

    // 2. Checks: on first start both nodes found `backlog` and `tick` never run; one node ran
    //    each. `tick` fires every 2 s and `backlog` every minute: wait for a minute's run.
    harness::eventually(Duration::from_secs(75), "a scheduled run of the every-minute check", || {
        let url = db.url.clone();
        async move { Ok(check_runs(&url, "backlog").await?.iter().any(|(_, t)| t == "schedule")) }
    })
    .await?;
    // A second node running the same instant would have recorded it by the time a later `tick`
    // instant has run.
    let minute_run = check_runs(&db.url, "backlog").await?.into_iter().rfind(|(_, t)| t == "schedule");
    let minute_run = minute_run.map(|(s, _)| s).context("the minute's run")?;
    harness::eventually(Duration::from_secs(20), "a `tick` run 2 s after the minute's run", || {
        let (url, after) = (db.url.clone(), minute_run.clone());
        async move {
            let later = chrono::DateTime::parse_from_rfc3339(&after)? + chrono::Duration::seconds(2);
            let ticks = check_runs(&url, "tick").await?;
            Ok(ticks.iter().any(|(s, _)| chrono::DateTime::parse_from_rfc3339(s).is_ok_and(|t| t > later)))
        }
    })
    .await?;
    let backlog = check_runs(&db.url, "backlog").await?;
    let firsts = backlog.iter().filter(|(_, t)| t == "missed").count();
    assert_eq!(firsts, 1, "the first run of `backlog` ran on {firsts} nodes: {backlog:?}");
    let minutes: Vec<&str> = backlog.iter().filter(|(_, t)| t == "schedule").map(|(s, _)| &s[..16]).collect();
    let mut distinct = minutes.clone();
    distinct.dedup();
    assert_eq!(minutes, distinct, "a minute's run of `backlog` ran on both nodes: {backlog:?}");
    let tick = check_runs(&db.url, "tick").await?;
    let instants: Vec<&str> = tick.iter().filter(|(_, t)| t == "schedule").map(|(s, _)| &s[..19]).collect();
    let mut distinct = instants.clone();
    distinct.dedup();
    assert_eq!(instants, distinct, "an instant of `tick` ran on both nodes: {tick:?}");
    // The storage check measures the database through the server, not a file in DATA.
    let mut c = sqlx::PgConnection::connect(&db.url).await?;
    let sizes: Vec<String> =
        sqlx::query_scalar("SELECT measurements FROM check_runs WHERE name = 'disk'").fetch_all(&mut c).await?;
    let last: Value = serde_json::from_str(sizes.last().context("a run of the storage check")?)?;
    assert!(last["database_bytes"].as_f64() > Some(1_000_000.0), "{last}");
    assert_eq!(last["wal_bytes"].as_f64(), Some(0.0), "{last}");
    // The synthetic probe goes end to end whichever node's worker takes it.
    let probes = check_runs_with_status(&db.url, "probe").await?;
    assert!(probes.len() >= 3, "{probes:?}");
    assert!(probes.iter().all(|s| s != "critical"), "a probe failed on the cluster: {probes:?}");
    let expected = started.elapsed().as_secs() / 2;
    assert!(instants.len() as u64 + 3 >= expected, "{} runs of `tick` in {expected} instants", instants.len());

    // 3. SIGKILL while deliveries are pending: the receiver hangs, so both nodes hold leases on
    //    attempts in flight; node A dies holding some; the receiver recovers; node B takes A's
    //    entries once their leases run out and delivers everything, in order.
    fp.answer(Answer::Hang);
    let before = fp.captured().len();
    let mut pending = Vec::new();
    for i in 0..30u32 {
        let no = format!("J440184-2026-9{i:05}");
        publish(&nodes[i as usize % 2], &no, 1).await?;
        publish(&nodes[(i as usize + 1) % 2], &no, 2).await?;
        publish(&nodes[i as usize % 2], &no, 3).await?;
        pending.push(no);
    }
    harness::eventually(Duration::from_secs(20), "attempts from both nodes", || {
        let n = fp.captured().len();
        async move { Ok(n > before + 4) }
    })
    .await?;
    // Kill node A at a moment it holds leases (between two attempts it may hold none): on
    // entries kept as rows (retries), or on a subscription's cursor over the log, whose
    // entries out are in its memory only.
    let mut c = sqlx::PgConnection::connect(&db.url).await?;
    let owner = format!("%-{}-%", a.child.id());
    let mut held_by_a = 0i64;
    for _ in 0..200 {
        held_by_a = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND lease_owner LIKE $1 AND lease_until > $2)
                  + (SELECT COUNT(*) FROM cursors WHERE lease_owner LIKE $1 AND lease_until > $2)",
        )
        .bind(&owner)
        .bind(chrono::Utc::now().timestamp_millis())
        .fetch_one(&mut c)
        .await?;
        if held_by_a > 0 {
            break;
        }
    }
    assert!(held_by_a > 0, "node A never held a lease: the takeover would go untested");
    a.kill()?;
    eprintln!("node A killed holding {held_by_a} leases");
    fp.answer(Answer::Status(200, None));
    harness::eventually(Duration::from_secs(60), "every version of every record delivered by the survivor", || {
        let arrived = arrivals(&fp);
        let done =
            pending.iter().filter(|no| arrived.get(&format!("{TYPE}/{no}")).is_some_and(|v| v.len() == 3)).count();
        let n = pending.len();
        async move { Ok(done == n) }
    })
    .await?;
    for no in &pending {
        let versions = &arrivals(&fp)[&format!("{TYPE}/{no}")];
        assert_eq!(versions, &vec![1, 2, 3], "{no} arrived out of order after the kill");
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE subscription = 'marriage-to-family-planning' AND state <> 'delivered'",
    )
    .fetch_one(&mut c)
    .await?;
    assert_eq!(left, 0, "entries left undelivered");

    // 4. One chain, intact, whichever node wrote each entry.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--data"])
        .arg(&data_b)
        .arg("--config")
        .arg(&cfg)
        .env("HUB_DATABASE_URL", &db.url)
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hub audit verify: {text}");
    assert!(text.contains("audit chain ok"), "{text}");
    drop(b);
    Ok(())
}

fn run_hub(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    let out = std::process::Command::new(BIN).args(args).envs(env.iter().copied()).output()?;
    Ok((
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    ))
}

/// The head line of `hub audit verify`: entries, checkpoints, head seq and digest.
fn chain_line(text: &str) -> String {
    text.lines().find(|l| l.starts_with("audit chain ok")).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_migrate_moves_a_populated_sqlite_hub_to_postgres_with_its_chain_intact() -> Result<()> {
    let Some(db) = PgDatabase::create("hub migrate from SQLite to PostgreSQL").await? else { return Ok(()) };
    let fp = Receiver::start().await;
    let base = || {
        TestConfig::conghua()
            .receiver(9103, &fp.url)
            .fast_retries()
            .replace("checkpoint_every = 1000", "checkpoint_every = 16")
            .without_checks()
            .only_subscription("marriage-to-family-planning")
    };
    let (_d1, sqlite_cfg) = base().write();
    let (_d2, pg_cfg) = base().replace("engine = \"sqlite\"", "engine = \"postgres\"").write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let env = [("HUB_DATABASE_URL", db.url.as_str())];

    // A populated SQLite hub: records with two versions, reads, deliveries done and pending.
    let mut hub = HubProcess::start_config(BIN, &sqlite_cfg, &data, free_port()?, &[], &[]).await?;
    let client = hub.client("civil-affairs");
    let mut receipts = Vec::new();
    for i in 0..60u32 {
        let no = format!("J440184-2026-7{i:05}");
        receipts.push((no.clone(), publish(&client, &no, 1).await?));
        if i % 3 == 0 {
            receipts.push((no.clone(), publish(&client, &no, 2).await?));
        }
        let read = client.get(&format!("/v1/records/{TYPE}/{no}")).await?;
        assert_eq!(read.status, 200, "{}", read.text);
    }
    fp.wait_accepted(80).await;
    fp.answer(Answer::Status(503, None));
    for i in 60..70u32 {
        let no = format!("J440184-2026-7{i:05}");
        receipts.push((no.clone(), publish(&client, &no, 1).await?));
    }
    // The access logs of a person every first version names and of one the second versions
    // dropped, as SQLite answers them.
    let people = [resident_id("19900315", 1), resident_id("19920708", 3)];
    let mut logs_before = Vec::new();
    for p in &people {
        logs_before.push(access_log(&hub.client("citizen-portal"), p, u64::MAX).await?);
    }
    assert!(logs_before.iter().all(|l| !l.is_empty()), "{logs_before:?}");
    assert!(hub.terminate()?.success());
    let data_s = data.to_string_lossy().into_owned();
    let (ok, source) = run_hub(&["audit", "verify", "--data", &data_s], &[])?;
    assert!(ok, "{source}");

    let cfg_s = pg_cfg.to_string_lossy().into_owned();
    let (ok, text) =
        run_hub(&["migrate", "--from", "sqlite", "--to", "postgres", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(ok, "hub migrate: {text}");
    assert!(text.contains("migrate ok"), "{text}");
    assert!(!text.contains(&db.url) || !db.url.contains('@'), "the URL's credentials were printed");
    // Into a database that holds data already: refused, and nothing is touched.
    let (ok, again) =
        run_hub(&["migrate", "--from", "sqlite", "--to", "postgres", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(!ok && again.contains("not empty"), "{again}");
    // The same chain, entry for entry, to the same head.
    let (ok, target) = run_hub(&["audit", "verify", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(ok, "{target}");
    assert_eq!(chain_line(&target), chain_line(&source));

    // The hub runs on PostgreSQL from where SQLite left off: records, versions, chain, and the
    // deliveries still owed.
    fp.answer(Answer::Status(200, None));
    let hub = HubProcess::start_config(BIN, &pg_cfg, &data, free_port()?, &[], &env).await?;
    let client = hub.client("civil-affairs");
    for (no, r) in &receipts {
        let h = client.get(&format!("/v1/records/{TYPE}/{no}/history")).await?;
        assert_eq!(h.status, 200, "{no}: {}", h.text);
        let versions = h.json["versions"].as_array().cloned().unwrap_or_default();
        let v = versions.iter().find(|v| v["version"] == r["version"]).context("the version")?;
        assert_eq!(v["digest"], r["digest"], "{no}");
    }
    let next = publish(&client, "J440184-2026-700000", 3).await?;
    assert_eq!(next["version"], 3);
    let head: u64 = chain_line(&source)
        .split("head seq ")
        .nth(1)
        .and_then(|t| t.split(' ').next()?.parse().ok())
        .context("head")?;
    assert!(next["audit_seq"].as_u64() > Some(head), "the chain did not go on from the migrated head");
    for (p, before) in people.iter().zip(&logs_before) {
        assert_eq!(&access_log(&hub.client("citizen-portal"), p, head).await?, before, "an access log changed");
    }
    harness::eventually(Duration::from_secs(30), "the deliveries owed before the migration", || {
        let arrived = arrivals(&fp);
        let done = (60..70u32).filter(|i| arrived.contains_key(&format!("{TYPE}/J440184-2026-7{i:05}"))).count();
        async move { Ok(done == 10) }
    })
    .await?;
    drop(hub);
    let (ok, text) = run_hub(&["audit", "verify", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(ok, "{text}");
    Ok(())
}

/// A feed's long poll on one node ends as soon as another node stores a record for it (within
/// `poll_ms`), not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_sees_a_record_published_on_the_other() -> Result<()> {
    let Some(db) = PgDatabase::create("a feed across two nodes").await? else { return Ok(()) };
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("engine = \"sqlite\"", "engine = \"postgres\"")
        .replace("attempt_timeout_secs = 30", "attempt_timeout_secs = 30\npoll_ms = 200")
        .without_checks()
        .only_subscription("marriage-to-hrss")
        .write();
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let dir = tempfile::tempdir()?;
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = HubProcess::start_config(BIN, &cfg, &data_a, free_port()?, &[], &env).await?;
    hub::server::copy_node_identity(&data_a, &data_b)?;
    let b = HubProcess::start_config(BIN, &cfg, &data_b, free_port()?, &[], &env).await?;
    let hrss = b.client("hrss");
    let poll = tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let r = hrss.get("/v1/feeds/marriage-to-hrss?wait=20").await;
        (t0.elapsed(), r)
    });
    // Give the poll a head start: should the publish still come first, the poll answers at once
    // and the test holds all the same; the delay decides which path is tested, not the outcome.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish(&a.client("civil-affairs"), "J440184-2026-600001", 1).await?;
    let (waited, reply) = poll.await?;
    let reply = reply?;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["count"], 1, "{}", reply.text);
    assert!(waited < Duration::from_secs(5), "the long poll ended after {waited:?}, not when the record came");
    Ok(())
}

/// What a Patroni failover looks like from a node: every connection to the database is cut. Under
/// publish load, callers get 503 with `Retry-After` (or their receipt), never a 500; the node
/// reconnects by itself; retried with their Idempotency-Keys, every record is stored once and
/// the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_database_connections_give_503_and_the_node_recovers_without_a_restart() -> Result<()> {
    let Some(db) = PgDatabase::create("database connections cut under load").await? else { return Ok(()) };
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("engine = \"sqlite\"", "engine = \"postgres\"")
        .without_checks()
        .only_subscription("marriage-to-hrss")
        .write();
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("a");
    let mut node = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &env).await?;
    let client = node.client("civil-affairs");
    let name = db.url.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = std::env::var("HUB_TEST_POSTGRES_URL")?;
    // Writers that have ended, well or not: once all four have, the node may hold no connection
    // at all (its pool is lazy and this config runs no checks), so there is nothing left to cut,
    // and a writer's failure must surface as itself rather than as a wait for connections.
    let finished = Arc::new(AtomicU32::new(0));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let client = client.clone();
        let finished = finished.clone();
        let write = async move {
            let mut unavailable = 0u32;
            for i in 0..60u32 {
                let no = format!("J440184-2026-5{w:01}{i:04}");
                let mut rec = marriage(&no, &resident_id("19900315", i), &resident_id("19920708", i + 1));
                rec["registered_on"] = Value::from("2026-11-11");
                let url = format!("{}/v1/records/{TYPE}", client.url);
                // A department system's loop: send, and on 503 send again with the same key.
                loop {
                    let r = client.send(client.http.post(&url).header("idempotency-key", &no).json(&rec)).await?;
                    match r.status {
                        200 | 201 => break,
                        503 => {
                            anyhow::ensure!(r.headers.contains_key("retry-after"), "503 without Retry-After");
                            unavailable += 1;
                        }
                        other => anyhow::bail!("publish {no}: {other} {}", r.text),
                    }
                }
            }
            anyhow::Ok(unavailable)
        };
        writers.push(tokio::spawn(async move {
            let ended = write.await;
            finished.fetch_add(1, Ordering::SeqCst);
            ended
        }));
    }
    // Cut every connection of the node, up to three times, while the writers write. On a fast
    // machine the 240 publishes can end before the third cut; the first always finds them at work.
    let mut admin_conn = sqlx::PgConnection::connect(&admin).await?;
    let mut cut = 0i64;
    for _ in 0..3 {
        if finished.load(Ordering::SeqCst) == 4 {
            break;
        }
        harness::eventually(Duration::from_secs(10), "connections to cut, or the writers done", || {
            let (admin, name, finished) = (admin.clone(), name.clone(), finished.clone());
            async move {
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(&name)
                    .fetch_one(&mut c)
                    .await?;
                Ok(n > 0 || finished.load(Ordering::SeqCst) == 4)
            }
        })
        .await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1) t",
        )
        .bind(&name)
        .fetch_one(&mut admin_conn)
        .await?;
        cut += n;
    }
    let mut unavailable = 0;
    for w in writers {
        match w.await? {
            Ok(n) => unavailable += n,
            Err(e) => anyhow::bail!("a writer failed: {e:#}\n{}", node.post_mortem(40)),
        }
    }
    eprintln!("{cut} connections cut; {unavailable} answers were 503 and sent again");
    assert!(cut > 0);
    // Every record once, at version 1, and the node is ready again.
    let mut c = sqlx::PgConnection::connect(&db.url).await?;
    let (records, max_version): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(version), 0) FROM records").fetch_one(&mut c).await?;
    assert_eq!((records, max_version), (240, 1));
    let ready = client.get("/readyz").await?;
    assert_eq!(ready.status, 200, "{}", ready.text);
    // A database that refuses connections takes the node out of the balancer, and back in after.
    let refuse = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(refuse(false))).execute(&mut admin_conn).await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin_conn)
        .await?;
    let readiness = |want: u16| {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move { Ok(client.get("/readyz").await?.status == want) }
        }
    };
    harness::eventually(Duration::from_secs(20), "/readyz to fail without the database", readiness(503)).await?;
    sqlx::query(sqlx::AssertSqlSafe(refuse(true))).execute(&mut admin_conn).await?;
    harness::eventually(Duration::from_secs(20), "/readyz to pass again", readiness(200)).await?;
    let data_s = data.to_string_lossy().into_owned();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let (ok, text) = run_hub(&["audit", "verify", "--data", &data_s, "--config", &cfg_s], &env)?;
    assert!(ok, "{text}");
    drop(node);
    Ok(())
}
