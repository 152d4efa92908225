//! `hub bench` runs every scenario end to end, briefly and at a low offered rate: a smoke test
//! that the load generator, the baseline servers and the receiver work. It asserts completion
//! without errors only; the figures belong in BENCHMARKS.md, never in a test.

use std::process::Command;

use anyhow::Result;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn bench(args: &[&str]) -> Result<Value> {
    let out = Command::new(BIN)
        .current_dir(harness::root())
        .args([
            "bench",
            "--connections",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--rate",
            "40",
            "--preload",
            "50",
        ])
        .args(args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hub bench {args:?} failed:\n{stderr}");
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    let v: Value = serde_json::from_str(&last)?;
    assert_eq!(v["hub"]["errors"], 0, "{stderr}");
    assert!(v["hub"]["requests"].as_u64() > Some(0), "{stderr}");
    Ok(v)
}

#[test]
fn every_scenario_runs_without_errors() -> Result<()> {
    for scenario in ["publish", "publish-invalid", "read", "lookup", "mixed"] {
        bench(&["--scenario", scenario])?;
    }
    let v = bench(&["--scenario", "publish", "--http2", "--baseline"])?;
    assert!(v["ratio_to_parse"].as_f64().is_some() && v["ratio_to_validate"].as_f64().is_some(), "{v}");
    for batch in ["1", "20"] {
        let v = bench(&["--scenario", "deliver", "--webhook-batch", batch])?;
        assert!(v["deliveries"]["events"].as_u64() > Some(0), "{v}");
        assert_eq!(v["deliveries"]["bad_signatures"], 0);
    }
    Ok(())
}

/// `--stored` writes records through the store before the hub starts; a kept data directory
/// holds them for the next run, which adds only what is missing and publishes new keys.
#[test]
fn stored_records_are_found_and_a_kept_directory_grows() -> Result<()> {
    let kept = tempfile::tempdir()?;
    let dir = kept.path().join("data");
    let dir = dir.to_str().unwrap_or_default();
    let v = bench(&["--scenario", "lookup", "--stored", "300", "--keep", dir])?;
    assert_eq!(v["stored_before"], 300, "{v}");
    assert_eq!(v["stored_now"]["records"], 300, "{v}");
    assert!(v["database_bytes_per_stored_record"].as_f64() > Some(0.0), "{v}");
    // Publishing into the kept directory must not repeat a stored key (that would be a replay,
    // not a 201), and the next run finds every record it published.
    let v = bench(&["--scenario", "publish", "--stored", "300", "--keep", dir])?;
    assert!(v["stored_now"].is_null(), "nothing to add: {v}");
    let published = v["hub"]["requests"].as_u64().unwrap_or(0);
    let v = bench(&["--scenario", "read", "--stored", "400", "--keep", dir])?;
    assert!(v["stored_before"].as_u64() >= Some(400), "{v}");
    assert!(published > 0);
    Ok(())
}

#[test]
fn the_postgres_peers_run_when_their_server_is_there() -> Result<()> {
    let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") else {
        eprintln!("skipped: HUB_TEST_POSTGRES_URL is not set");
        return Ok(());
    };
    let v = bench(&["--scenario", "publish", "--peer", "postgres", "--peer", "pgbench", "--peer-url", &url])?;
    for peer in ["postgres", "pgbench"] {
        assert_eq!(v[format!("peer_{peer}")]["errors"], 0, "{v}");
        assert!(v[format!("peer_{peer}")]["requests"].as_u64() > Some(0), "{v}");
        assert!(v[format!("ratio_to_{peer}")].as_f64().is_some(), "{v}");
    }
    Ok(())
}

#[test]
fn the_rabbitmq_peer_runs_when_its_broker_is_there() -> Result<()> {
    let Ok(url) = std::env::var("HUB_TEST_AMQP_URL") else {
        eprintln!("skipped: HUB_TEST_AMQP_URL is not set");
        return Ok(());
    };
    let v = bench(&["--scenario", "publish", "--peer", "rabbitmq", "--peer-amqp-url", &url])?;
    assert_eq!(v["peer_rabbitmq"]["errors"], 0, "{v}");
    assert!(v["peer_rabbitmq"]["requests"].as_u64() > Some(0), "{v}");
    assert!(v["ratio_to_rabbitmq"].as_f64().is_some(), "{v}");
    Ok(())
}
