//! Graceful shutdown of the real binary under load: SIGTERM while 32 publishers write and a
//! delivery hangs at its receiver. The hub stops accepting at once, answers every request it had
//! taken in (nothing is stored without its answer reaching the client), cuts the hung delivery at
//! the end of `shutdown_grace_secs` and exits 0 within it; after a restart the held event is
//! delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::testkit::{Answer, Receiver};
use anyhow::Result;
use harness::{free_port, marriage, resident_id, HubProcess, TestConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const GRACE: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_what_it_took_in_and_exits_0_within_the_grace_period() -> Result<()> {
    let fp = Receiver::start().await;
    // The receiver takes the first event and never answers: a delivery is in flight at SIGTERM.
    fp.answer(Answer::Hang);
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9103, &fp.url)
        .replace("shutdown_grace_secs = 30", &format!("shutdown_grace_secs = {GRACE}"))
        .without_checks()
        .only_subscription("marriage-to-family-planning")
        .write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let client = hub.client("civil-affairs");

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Result<harness::Reply>)>();
    let mut writers = Vec::new();
    for w in 0..32u32 {
        let (client, stop, tx) = (client.clone(), stop.clone(), tx.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..1000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let no = format!("J440184-2026-{w:02}{i:04}");
                let rec = marriage(&no, &resident_id("19900315", w), &resident_id("19920708", i));
                let _ = tx.send((no, client.publish("marriage-registration", &rec).await));
            }
        }));
    }
    drop(tx);
    let mut outcomes: HashMap<String, Result<harness::Reply>> = HashMap::new();
    while outcomes.values().filter(|r| r.as_ref().is_ok_and(|r| r.status == 201)).count() < 300 {
        let Some((no, r)) = rx.recv().await else { break };
        outcomes.insert(no, r);
    }
    fp.wait_for(1).await;

    let pid = hub.child.id().to_string();
    let signalled = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
    // New connections are refused while the hub drains.
    let refused = harness::eventually(Duration::from_secs(GRACE), "the listener to close", || async {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let status = tokio::task::spawn_blocking(move || {
        let status = hub.child.wait();
        (status, signalled.elapsed())
    })
    .await?;
    let (status, took) = (status.0?, status.1);
    for w in writers {
        w.await?;
    }
    while let Ok((no, r)) = rx.try_recv() {
        outcomes.insert(no, r);
    }
    eprintln!("exit {status:?} {took:?} after SIGTERM, {} requests", outcomes.len());
    refused?;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(GRACE + 2), "exit took {took:?} with a {GRACE} s grace period");

    let answers: Vec<u16> = outcomes.values().filter_map(|r| r.as_ref().ok().map(|r| r.status)).collect();
    assert!(answers.iter().all(|s| *s == 201 || *s == 503), "answers during shutdown: {answers:?}");

    // After a restart: every receipt is there, and no request that got no answer was stored (a
    // stored record without its answer would be an in-flight request cut off).
    fp.answer(Answer::Status(200, None));
    let hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    let mut stored = 0;
    for (no, r) in &outcomes {
        let got = civil.get(&format!("/v1/records/marriage-registration/{no}")).await?;
        match r {
            Ok(r) if r.status == 201 => {
                assert_eq!(got.status, 200, "{no} was acknowledged and is missing");
                stored += 1;
            }
            _ => assert_eq!(got.status, 404, "{no} was stored but its request got no 201: {r:?}"),
        }
    }
    // The delivery cut off at shutdown is still owed, and arrives now with the rest.
    harness::eventually(Duration::from_secs(60), "every event delivered after the restart", || {
        let subjects: std::collections::HashSet<String> = fp
            .accepted()
            .iter()
            .filter_map(|c| serde_json::from_slice::<Value>(&c.body).ok()?["subject"].as_str().map(str::to_owned))
            .collect();
        async move { Ok(subjects.len() >= stored) }
    })
    .await?;
    Ok(())
}
