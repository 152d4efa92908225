//! Crash cycles: the real `hub` binary under publish and delivery load is killed with SIGKILL at
//! random points and restarted, again and again. Afterwards every receipt a client got is readable
//! with its digest and found through its person, no record has a version twice, every routed event
//! reached the receiver at least once, and `hub audit verify` passes. 3 cycles here; `HUB_RELIABILITY_LONG=1` runs 20 (see
//! RELIABILITY.md), `HUB_RELIABILITY_CYCLES=N` any number. The seed is printed so a failing run
//! can be replayed with `HUB_RELIABILITY_SEED`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::testkit::Receiver;
use anyhow::Result;
use harness::{free_port, marriage, resident_id, Client, HubProcess, TestConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const TYPE: &str = "marriage-registration";

fn cycles() -> usize {
    let long = std::env::var("HUB_RELIABILITY_LONG").is_ok_and(|v| v == "1");
    std::env::var("HUB_RELIABILITY_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 20 } else { 3 })
}

/// xorshift64*: a reproducible source of kill points without another dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

/// What a client knows: receipts it got, and requests it sent without an answer (to be retried
/// with the same Idempotency-Key, as a department system would).
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, Value>,
    unanswered: HashMap<String, Value>,
}

async fn publish(client: &Client, no: &str, rec: &Value) -> Result<harness::Reply> {
    let url = format!("{}/v1/records/{TYPE}", client.url);
    client.send(client.http.post(url).header("idempotency-key", no).json(rec)).await
}

fn record(cycle: usize, writer: u32, i: u32) -> (String, Value) {
    // The schema allows six digits: cycle, writer, then a per-writer count below 1,000.
    let no = format!("J440184-2026-{cycle:02}{writer:01}{i:03}");
    let rec = marriage(&no, &resident_id("19900315", writer * 100_000 + i), &resident_id("19920708", i));
    (no, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_cycles_lose_no_receipt_repeat_no_version_and_deliver_every_event() -> Result<()> {
    let seed = std::env::var("HUB_RELIABILITY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let cycles = cycles();
    eprintln!("crash cycles: {cycles}, HUB_RELIABILITY_SEED={seed}");
    let mut rng = Rng(seed);
    let fp = Receiver::start().await;
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9103, &fp.url)
        .fast_retries()
        .without_checks()
        .only_subscription("marriage-to-family-planning")
        .write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut ledger = Ledger::default();

    for cycle in 0..cycles {
        let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
        let client = hub.client("civil-affairs");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value, Option<Value>)>();
        // Last cycle's unanswered requests go first, with their keys, as a department would retry.
        let retries: Vec<(String, Value)> = ledger.unanswered.drain().collect();
        let mut writers = Vec::new();
        for w in 0..8u32 {
            let (client, stop, tx) = (client.clone(), stop.clone(), tx.clone());
            let mine: Vec<(String, Value)> =
                retries.iter().enumerate().filter(|(i, _)| *i % 8 == w as usize).map(|(_, r)| r.clone()).collect();
            writers.push(tokio::spawn(async move {
                let fresh = (0u32..1000).map(|i| record(cycle, w, i));
                for (no, rec) in mine.into_iter().chain(fresh) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let receipt = match publish(&client, &no, &rec).await {
                        Ok(r) if r.status == 201 || r.status == 200 => Some(r.json),
                        Ok(r) => panic!("publish answered {}: {}", r.status, r.text),
                        Err(_) => None,
                    };
                    let _ = tx.send((no, rec, receipt));
                }
            }));
        }
        drop(tx);
        // Kill somewhere between a few and a few hundred acknowledged publishes into the cycle,
        // with requests and deliveries in flight.
        let kill_after = 20 + rng.next(400) as usize;
        let mut acked_now = 0;
        while acked_now < kill_after {
            match rx.recv().await {
                Some((no, _, Some(receipt))) => {
                    ledger.acked.insert(no, receipt);
                    acked_now += 1;
                }
                Some((no, rec, None)) => {
                    ledger.unanswered.insert(no, rec);
                }
                None => break,
            }
        }
        hub.kill()?;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await?;
        }
        while let Ok((no, rec, receipt)) = rx.try_recv() {
            match receipt {
                Some(r) => {
                    ledger.acked.insert(no, r);
                }
                None => {
                    ledger.unanswered.insert(no, rec);
                }
            }
        }
        for no in ledger.acked.keys() {
            ledger.unanswered.remove(no);
        }
        eprintln!(
            "cycle {cycle}: killed after {acked_now} receipts in the cycle; {} in all, {} unanswered",
            ledger.acked.len(),
            ledger.unanswered.len()
        );
    }

    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let client = hub.client("civil-affairs");
    // A request that got no answer was either stored (its retry is a replay) or not (stored now).
    for (no, rec) in std::mem::take(&mut ledger.unanswered) {
        let r = publish(&client, &no, &rec).await?;
        assert!(r.status == 201 || r.status == 200, "retry of {no}: {} {}", r.status, r.text);
        ledger.acked.insert(no, r.json);
    }
    for (no, receipt) in &ledger.acked {
        let h = client.get(&format!("/v1/records/{TYPE}/{no}/history")).await?;
        assert_eq!(h.status, 200, "{no}: {}", h.text);
        let versions = h.json["versions"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 1, "{no} was published once and has {} versions", versions.len());
        assert_eq!(versions[0]["digest"], receipt["digest"], "{no}: the stored digest differs from the receipt");
        assert_eq!(versions[0]["version"], receipt["version"]);
    }
    // Every acknowledged record is found through its person: after the last kill the subject
    // index's part not yet merged comes back from the log (hub/src/store/sqlite/subjects.rs).
    let fp_client = hub.client("family-planning");
    let mut people: HashMap<String, Vec<&String>> = HashMap::new();
    for no in ledger.acked.keys() {
        let tail = no.rsplit('-').next().unwrap_or_default();
        let (writer, i): (u32, u32) = (tail[2..3].parse()?, tail[3..].parse()?);
        people.entry(resident_id("19900315", writer * 100_000 + i)).or_default().push(no);
    }
    for (person, records) in &people {
        let found = fp_client
            .post("/v1/lookup", &serde_json::json!({"subject": person, "purpose": "birth-service-registration"}))
            .await?;
        assert_eq!(found.status, 200, "{}", found.text);
        for no in records {
            assert!(found.text.contains(no.as_str()), "{no} is not found through its first party");
        }
    }
    eprintln!("{} people looked up, every record found", people.len());
    // Every record was routed to Family Planning; each must arrive at least once.
    let want: HashSet<String> = ledger.acked.keys().map(|no| format!("{TYPE}/{no}")).collect();
    let arrived = || -> HashSet<String> {
        fp.accepted()
            .iter()
            .filter_map(|c| serde_json::from_slice::<Value>(&c.body).ok())
            .filter_map(|ev| ev["subject"].as_str().map(str::to_owned))
            .collect()
    };
    harness::eventually(Duration::from_secs(120), "every routed event at the receiver", || {
        let missing = want.difference(&arrived()).count();
        async move { Ok(missing == 0) }
    })
    .await?;
    let duplicates = fp.accepted().len() - arrived().len();
    eprintln!("{} records, {} deliveries repeated after a crash (at least once)", want.len(), duplicates);

    let status = hub.terminate()?;
    assert!(status.success(), "hub exit after the crash cycles: {status:?}");
    let out = std::process::Command::new(BIN).args(["audit", "verify", "--data"]).arg(&data).output()?;
    assert!(
        out.status.success(),
        "hub audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
