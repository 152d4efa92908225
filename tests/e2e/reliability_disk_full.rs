//! Disk full: the real binary on a 32 MiB tmpfs that the test mounts (as root; skipped with a
//! message otherwise). Once a filler file takes the last byte, publishes get 507 (or 503) problems,
//! the `storage` check is critical, and nothing acknowledged is lost; when space returns the hub
//! takes publishes again without a restart, and after one everything acknowledged is there and
//! `hub audit verify` passes.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use harness::{free_port, marriage, resident_id, HubProcess, TestConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(at: &Path) -> Option<Mount> {
    if is_root() {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Mount(at.to_path_buf()));
        }
    }
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next() == Some("0"))))
        .unwrap_or(false)
}

/// Writes zeros until the filesystem refuses another byte.
fn fill(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    // Whatever a 64 KiB chunk could not take, single bytes can.
    while f.write(&[0]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    let _ = f.sync_all();
    Ok(written)
}

fn record(i: u32) -> (String, Value) {
    let no = format!("J440184-2026-{i:06}");
    (no.clone(), marriage(&no, &resident_id("19900315", i), &resident_id("19920708", i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_clearly_loses_nothing_and_recovers_when_space_returns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt)?;
    let Some(_mount) = mount_small_tmpfs(&mnt) else {
        eprintln!("skipped: the disk-full test mounts a tmpfs and needs root");
        return Ok(());
    };
    let data = mnt.join("data");
    let (_cfg_dir, cfg) = TestConfig::conghua().write();
    let port = free_port()?;
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    let ops = hub.client("ops-duty");

    let mut acked = Vec::new();
    for i in 0..50 {
        let (no, rec) = record(i);
        let r = civil.publish("marriage-registration", &rec).await?;
        assert_eq!(r.status, 201, "{}", r.text);
        acked.push((no, r.json["digest"].clone()));
    }

    let filler = mnt.join("filler");
    let filled = fill(&filler)?;
    eprintln!("filled {} MiB", filled >> 20);
    let mut refused = 0;
    for i in 50..250 {
        let (no, rec) = record(i);
        let r = civil.publish("marriage-registration", &rec).await?;
        match r.status {
            // SQLite may still find room in pages it already has.
            201 => acked.push((no, r.json["digest"].clone())),
            507 | 503 => {
                refused += 1;
                assert!(r.content_type.starts_with("application/problem+json"), "{}", r.text);
                assert!(r.headers.contains_key("retry-after"), "a full disk is worth retrying later");
            }
            other => panic!("publish on a full disk answered {other}: {}", r.text),
        }
    }
    assert!(refused > 0, "200 publishes fitted on a full disk");
    let check = ops.post("/v1/ops/checks/storage/run", &serde_json::json!({})).await?;
    assert_eq!(check.json["report"]["status"], "critical", "{}", check.text);
    assert_eq!(ops.get("/livez").await?.status, 200, "a full disk does not kill the hub");

    // Space returns: publishes are taken again without a restart.
    std::fs::remove_file(&filler)?;
    let (no, rec) = record(900);
    // The writer retries its failed commit once space is back; the first publishes may still
    // meet the refusal while it does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let receipt = loop {
        ticker.tick().await;
        let r = civil.publish("marriage-registration", &rec).await?;
        if r.status == 201 || r.status == 200 {
            break r.json;
        }
        assert!([503, 507].contains(&r.status), "{}", r.text);
        assert!(tokio::time::Instant::now() < deadline, "publishes still refused after space returned: {}", r.text);
    };
    acked.push((no, receipt["digest"].clone()));
    let check = ops.post("/v1/ops/checks/storage/run", &serde_json::json!({})).await?;
    assert_ne!(check.json["report"]["status"], "critical", "{}", check.text);

    let status = hub.terminate()?;
    assert!(status.success(), "{status:?}");
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    for (no, digest) in &acked {
        let h = civil.get(&format!("/v1/records/marriage-registration/{no}/history")).await?;
        let versions = h.json["versions"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 1, "{no}: {}", h.text);
        assert_eq!(&versions[0]["digest"], digest, "{no}");
    }
    assert!(hub.terminate()?.success());
    let out = Command::new(BIN).args(["audit", "verify", "--data"]).arg(&data).output()?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(())
}
