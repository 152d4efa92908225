//! The failover drill's checks, run by `ops/failover.sh` (which starts etcd, two PostgreSQL servers
//! under Patroni in synchronous mode and HAProxy, and names them in `HUB_TEST_FAILOVER_*`): two hub
//! nodes publish and deliver through the proxy, the primary's postmaster is SIGKILLed, and the
//! standby must be promoted, both nodes answer again without a restart, every acknowledged record
//! be stored exactly once, the chain verify and the deliveries resume. Prints the figures
//! RELIABILITY.md records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::testkit::Receiver;
use anyhow::{bail, Context, Result};
use harness::{free_port, marriage, resident_id, Client, HubProcess, TestConfig};
use serde_json::Value;
use sqlx::Connection as _;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const TYPE: &str = "marriage-registration";
/// Writers per hub node, each publishing one record after another (a closed loop, paced).
const WRITERS_PER_NODE: usize = 4;
const PACE: Duration = Duration::from_millis(20);

/// The cluster `ops/failover.sh` started.
struct Drill {
    proxy_url: String,
    patroni: Vec<String>,
    work: PathBuf,
    http: reqwest::Client,
}

impl Drill {
    fn from_env() -> Option<Self> {
        let proxy_url = harness::server("HUB_TEST_FAILOVER_URL")?;
        let patroni = std::env::var("HUB_TEST_FAILOVER_PATRONI").ok()?.split(',').map(str::to_owned).collect();
        let work = PathBuf::from(std::env::var("HUB_TEST_FAILOVER_WORK").ok()?);
        Some(Self { proxy_url, patroni, work, http: reqwest::Client::new() })
    }

    /// Patroni's view of the cluster, from whichever REST API answers.
    async fn cluster(&self) -> Result<Value> {
        for rest in &self.patroni {
            let got = self.http.get(format!("{rest}/cluster")).timeout(Duration::from_secs(1)).send().await;
            if let Ok(r) = got {
                if let Ok(v) = r.json::<Value>().await {
                    return Ok(v);
                }
            }
        }
        bail!("no Patroni REST API answers")
    }

    async fn member_with_role(&self, role: &str) -> Result<Option<String>> {
        let c = self.cluster().await?;
        Ok(c["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["role"] == role && (m["state"] == "running" || m["state"] == "streaming"))
            .and_then(|m| m["name"].as_str().map(str::to_owned)))
    }

    /// How long after `since` Patroni lists `member` in `role` (within 60 s of it).
    async fn until_role(&self, role: &str, member: &str, since: Instant) -> Option<Duration> {
        while since.elapsed() < Duration::from_secs(60) {
            if self.member_with_role(role).await.ok().flatten().as_deref() == Some(member) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGKILL to the postmaster of `member` (its backends follow it down; Patroni stays).
    fn kill_postmaster(&self, member: &str) -> Result<u32> {
        let pid_file = self.work.join(member).join("data/postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).with_context(|| pid_file.display().to_string())?;
        let pid: u32 = text.lines().next().context("postmaster.pid")?.trim().parse()?;
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -KILL {pid}");
        Ok(pid)
    }
}

/// What the writers saw.
#[derive(Default)]
struct Seen {
    /// Key → (digest, node) of each acknowledged publish.
    acked: BTreeMap<String, (String, usize)>,
    /// (node, when it ended, what it got) of each attempt refused or not answered.
    refused: Vec<(usize, Instant, String)>,
    /// (node, when the first attempt began, when the acknowledgement came) of each publish.
    acks: Vec<(usize, Instant, Instant)>,
}

/// Publishes `key` until it is acknowledged, with the key as the idempotency key: a retry after a
/// commit whose answer was lost gets the same receipt, never a second version.
async fn publish_until_acked(node: usize, client: &Client, key: &str, n: u32, seen: &Mutex<Seen>) -> Result<()> {
    let record = marriage(key, &resident_id("19900315", n), &resident_id("19920708", n));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(120);
    loop {
        let req = client.http.post(format!("{}/v1/records/{TYPE}", client.url)).header("idempotency-key", key);
        let got = client.send(req.json(&record)).await;
        {
            let mut s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            match got {
                Ok(r) if r.status == 201 || r.status == 200 => {
                    let digest = r.json["digest"].as_str().unwrap_or_default().to_owned();
                    if let Some((before, _)) = s.acked.get(key) {
                        anyhow::ensure!(*before == digest, "{key}: two receipts with different digests");
                    }
                    s.acked.insert(key.to_owned(), (digest, node));
                    s.acks.push((node, began, Instant::now()));
                    return Ok(());
                }
                Ok(r) => s.refused.push((node, Instant::now(), r.status.to_string())),
                Err(e) => s.refused.push((node, Instant::now(), format!("no answer: {}", e.root_cause()))),
            }
        }
        if Instant::now() > deadline {
            bail!("{key} was not acknowledged within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_survives_the_loss_of_its_primary_database() -> Result<()> {
    let Some(drill) = Drill::from_env() else { return Ok(()) };
    let fp = Receiver::start().await;
    let (_cfg_dir, cfg) = TestConfig::postgres_nodes(&fp.url).write();
    let env = [("HUB_DATABASE_URL", drill.proxy_url.as_str())];
    let dir = tempfile::tempdir()?;
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = HubProcess::start_config(BIN, &cfg, &data_a, free_port()?, &[], &env).await?;
    hub::server::copy_node_identity(&data_a, &data_b)?;
    let mut b = HubProcess::start_config(BIN, &cfg, &data_b, free_port()?, &[], &env).await?;
    let nodes = [a.client("civil-affairs"), b.client("civil-affairs")];
    let primary = drill.member_with_role("leader").await?.context("no leader")?;
    let standby = drill.member_with_role("sync_standby").await?.context("no synchronous standby")?;
    eprintln!("failover: primary {primary}, synchronous standby {standby}");

    // Load: writers on both nodes, and the readiness each node reports, sampled.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 * WRITERS_PER_NODE {
        let (node, client, seen, stop) = (w % 2, nodes[w % 2].clone(), seen.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("J440184-2026-9{w}{i:04}");
                publish_until_acked(node, &client, &key, i, &seen).await?;
                i += 1;
                tokio::time::sleep(PACE).await;
            }
            anyhow::Ok(i)
        }));
    }
    let readiness = Arc::new(Mutex::new(Vec::<(usize, Instant, bool)>::new()));
    let sampler = {
        let (urls, readiness, stop) = ([a.url.clone(), b.url.clone()], readiness.clone(), stop.clone());
        let http = nodes[0].http.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (n, url) in urls.iter().enumerate() {
                    let ok = http
                        .get(format!("{url}/readyz"))
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if let Ok(mut r) = readiness.lock() {
                        r.push((n, Instant::now(), ok));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.acked.len();
    anyhow::ensure!(before > 50, "too little load before the kill: {before} acknowledged");
    let killed_at = Instant::now();
    let pid = drill.kill_postmaster(&primary)?;
    eprintln!("failover: SIGKILL to {primary}'s postmaster (pid {pid}) after {before} acknowledged publishes");

    // The standby is promoted.
    let promoted_after = drill
        .until_role("leader", &standby, killed_at)
        .await
        .context("the synchronous standby was not promoted within 60 s")?;
    eprintln!("failover: Patroni reports {standby} as the leader {:.1} s after the kill", promoted_after.as_secs_f64());

    // In strict synchronous mode the new primary commits nothing until a synchronous standby is
    // back: the old primary, restarted as a replica by its Patroni.
    let rejoined_after = drill
        .until_role("sync_standby", &primary, killed_at)
        .await
        .context("the old primary did not rejoin as the synchronous standby within 60 s")?;
    eprintln!("failover: {primary} is the synchronous standby {:.1} s after the kill", rejoined_after.as_secs_f64());

    // Both nodes acknowledge again, and keep doing so for 5 s, without a restart.
    let recovered = |seen: &Seen, node: usize| {
        let last_refusal =
            seen.refused.iter().filter(|(n, t, _)| *n == node && *t > killed_at).map(|(_, t, _)| *t).max();
        let after = last_refusal.unwrap_or(killed_at);
        seen.acks.iter().filter(|(n, _, t)| *n == node && *t > after).count() >= 20
            && Instant::now().duration_since(after) > Duration::from_secs(5)
    };
    harness::eventually(Duration::from_secs(120), "both hub nodes to acknowledge publishes again", || {
        let done = seen.lock().map(|s| recovered(&s, 0) && recovered(&s, 1)).unwrap_or(false);
        async move { Ok(done) }
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut published = 0;
    for w in writers {
        published += w.await??;
    }
    sampler.await?;
    assert!(a.child.try_wait()?.is_none() && b.child.try_wait()?.is_none(), "a hub node exited");

    let seen = Arc::try_unwrap(seen).map_err(|_| anyhow::anyhow!("writers still hold the record"))?;
    let seen = seen.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
    anyhow::ensure!(seen.acked.len() == published as usize, "{} acknowledged, {published} published", seen.acked.len());

    // Every acknowledged record is there, exactly once, with the digest its receipt gave.
    let mut db = sqlx::PgConnection::connect(&drill.proxy_url).await?;
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT key, version, digest FROM records WHERE type = $1 ORDER BY key, version")
            .bind(TYPE)
            .fetch_all(&mut db)
            .await?;
    let mut stored: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (key, version, digest) in rows {
        stored.entry(key).or_default().push((version, digest));
    }
    let mut lost = Vec::new();
    for (key, (digest, _)) in &seen.acked {
        match stored.get(key).map(Vec::as_slice) {
            Some([(1, d)]) if d == digest => {}
            Some(other) => bail!("{key} is stored as {other:?}, acknowledged with {digest}"),
            None => lost.push(key.clone()),
        }
    }
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let strays: Vec<&String> = stored.keys().filter(|k| !seen.acked.contains_key(*k)).collect();
    assert!(strays.is_empty(), "stored but never acknowledged: {strays:?}");

    // Deliveries resume: every acknowledged record reaches the subscriber.
    let delivered_by = Instant::now();
    harness::eventually(Duration::from_secs(120), "every acknowledged record delivered", || {
        let got: BTreeSet<String> = fp
            .accepted()
            .iter()
            .filter_map(|c| serde_json::from_slice::<Value>(&c.body).ok())
            .filter_map(|ev| ev["subject"].as_str().map(str::to_owned))
            .collect();
        let missing = seen.acked.keys().filter(|k| !got.contains(&format!("{TYPE}/{k}"))).count();
        async move { Ok(missing == 0) }
    })
    .await?;
    let delivered_after = delivered_by.elapsed();

    // The chain verifies, through the proxy, on the promoted server.
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--data"])
        .arg(&data_a)
        .arg("--config")
        .arg(&cfg)
        .envs(env)
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hub audit verify: {said}");

    // The figures.
    let outage = |node: usize| {
        seen.refused
            .iter()
            .filter(|(n, t, _)| *n == node && *t > killed_at)
            .map(|(_, t, _)| t.duration_since(killed_at))
            .max()
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, t, what) in &seen.refused {
        if *t > killed_at {
            *kinds.entry(what.as_str()).or_default() += 1;
        }
    }
    let unready = |node: usize| {
        let r = readiness.lock().map(|r| r.clone()).unwrap_or_default();
        let down: Vec<Instant> =
            r.iter().filter(|(n, t, ok)| *n == node && !ok && *t > killed_at).map(|(_, t, _)| *t).collect();
        match (down.first(), down.last()) {
            (Some(f), Some(l)) => format!(
                "{:.1}–{:.1} s",
                f.duration_since(killed_at).as_secs_f64(),
                l.duration_since(killed_at).as_secs_f64()
            ),
            _ => "never".to_owned(),
        }
    };
    let secs = |d: Option<Duration>| d.map_or("none".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    // The longest stretch without an acknowledgement around the kill, and the longest a
    // publish took (its retries included), for one node.
    let gap = |node: usize| {
        let mut times: Vec<Instant> = seen
            .acks
            .iter()
            .filter(|(n, _, t)| *n == node && *t + Duration::from_secs(1) > killed_at)
            .map(|(_, _, t)| *t)
            .collect();
        times.sort();
        times.windows(2).map(|w| w[1].duration_since(w[0])).max()
    };
    let longest = |node: usize| {
        seen.acks.iter().filter(|(n, _, t)| *n == node && *t > killed_at).map(|(_, b, t)| t.duration_since(*b)).max()
    };
    eprintln!("failover: figures");
    eprintln!("  acknowledged publishes: {} ({before} before the kill), lost: 0, stored twice: 0", seen.acked.len());
    eprintln!(
        "  promoted: {standby} {:.1} s after the kill; {primary} synchronous standby again after {:.1} s",
        promoted_after.as_secs_f64(),
        rejoined_after.as_secs_f64()
    );
    for (node, name) in [(0, "a"), (1, "b")] {
        eprintln!(
            "  node {name}: no acknowledgement for {}; longest publish {}; last refused request {} after the kill; \
             /readyz not ready {}",
            secs(gap(node)),
            secs(longest(node)),
            secs(outage(node)),
            unready(node)
        );
    }
    eprintln!("  refused attempts after the kill (each retried with its idempotency key): {kinds:?}");
    eprintln!("  every acknowledged record delivered {:.1} s after the load stopped", delivered_after.as_secs_f64());
    eprintln!("  audit chain: {}", said.lines().next().unwrap_or_default());
    let _ = (a.terminate(), b.terminate());
    // What an operator reads in a node's log meanwhile: each kind of line once, with its count
    // (level, target and message; the fields after it dropped).
    let log = std::fs::read_to_string(data_a.with_extension("log")).unwrap_or_default();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("database")) {
        let words: Vec<&str> =
            line.split(' ').skip(1).filter(|w| !w.is_empty()).take_while(|w| !w.contains('=')).collect();
        *kinds.entry(words.join(" ")).or_default() += 1;
    }
    for (kind, n) in kinds {
        eprintln!("  node a log, {n} ×: {kind}");
    }
    Ok(())
}
