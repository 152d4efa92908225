//! Refusals as real clients meet them: a body over the limit, a header block over the limit and a
//! request shed by admission control reach the real `curl` (HTTP/1.1 with and without
//! `Expect: 100-continue`, and HTTP/2) and Python `requests` as problem+json, not as a reset
//! connection. Skipped, and named, where curl or `requests` is missing, unless
//! `HUB_TEST_REQUIRE_CLIENTS` is set (CI sets it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use harness::{free_port, HubProcess, TestConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

/// Python `requests`, as a department's script would call the hub: the whole body is sent before
/// the answer is read, which is what makes an early close look like `SSLEOFError`.
const PY_CLIENT: &str = r#"
import json, sys, requests
url, ca, cert, key, body_len, header_len = sys.argv[1:7]
headers = {"Content-Type": "application/json"}
if int(header_len):
    headers["X-Padding"] = "a" * int(header_len)
try:
    r = requests.post(url, data=b" " * int(body_len), headers=headers, verify=ca, cert=(cert, key), timeout=60)
    print(json.dumps({"status": r.status_code, "content_type": r.headers.get("content-type", ""), "body": r.text}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
"#;

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

/// Whether the real clients are here; a missing one fails the test where CI asked for them.
fn clients_present() -> Result<bool> {
    let curl = have("curl", &["--version"]);
    let requests = have("python3", &["-c", "import requests"]);
    if curl && requests {
        return Ok(true);
    }
    let missing = if curl { "python3 requests" } else { "curl" };
    if std::env::var_os("HUB_TEST_REQUIRE_CLIENTS").is_some() {
        bail!("{missing} is missing and HUB_TEST_REQUIRE_CLIENTS is set");
    }
    eprintln!("skipped: refusals through real clients ({missing} is not installed)");
    Ok(false)
}

/// Runs a client to its end off the runtime's threads, which the hub's own tests share.
async fn output(mut cmd: Command) -> Result<std::process::Output> {
    Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
}

/// What one client saw: status, media type, HTTP version and body, or the transport error.
#[derive(Debug)]
struct Seen {
    status: u16,
    content_type: String,
    version: String,
    body: String,
}

impl Seen {
    /// Asserts a problem+json refusal of `status` and `kind` (`urn:conghua-hub:problem:KIND`).
    fn is_problem(&self, how: &str, status: u16, kind: &str) -> Result<()> {
        if self.status != status || !self.content_type.starts_with("application/problem+json") {
            bail!("{how}: expected a {status} problem, saw {self:?}");
        }
        let json: Value = serde_json::from_str(&self.body).with_context(|| format!("{how}: {}", self.body))?;
        if json["type"] != format!("urn:conghua-hub:problem:{kind}") || json["status"] != status {
            bail!("{how}: expected {kind}, got {json}");
        }
        Ok(())
    }
}

/// The paths `curl` and `requests` need for the mutual TLS of department `name`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(data: &Path, name: &str) -> Pki {
    let p = data.join("pki");
    let s = |rel: String| p.join(rel).display().to_string();
    Pki { ca: s("ca.crt".into()), cert: s(format!("clients/{name}.crt")), key: s(format!("clients/{name}.key")) }
}

/// POSTs `body_len` spaces (and a padding header of `header_len` bytes) to `url` with curl.
/// `expect`: `Some(true)` sends `Expect: 100-continue`, `Some(false)` suppresses it.
async fn curl(
    dir: &Path,
    pki: &Pki,
    url: &str,
    http2: bool,
    expect: Option<bool>,
    body_len: usize,
    header_len: usize,
) -> Result<Seen> {
    let body = dir.join(format!("body-{body_len}"));
    if !body.exists() {
        std::fs::write(&body, vec![b' '; body_len])?;
    }
    let out = dir.join("curl-out");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--cacert", &pki.ca, "--cert", &pki.cert, "--key", &pki.key])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}\n%{content_type}\n%{http_version}"]);
    match expect {
        Some(true) => cmd.args(["-H", "Expect: 100-continue"]),
        Some(false) => cmd.args(["-H", "Expect:"]),
        None => &mut cmd,
    };
    if header_len > 0 {
        cmd.args(["-H", &format!("X-Padding: {}", "a".repeat(header_len))]);
    }
    cmd.arg(url);
    let output = output(cmd).await.context("running curl")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("curl failed ({}): {} {stdout}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    let mut lines = stdout.lines();
    let status = lines.next().unwrap_or("0").parse()?;
    let content_type = lines.next().unwrap_or_default().to_owned();
    let version = lines.next().unwrap_or_default().to_owned();
    Ok(Seen { status, content_type, version, body: std::fs::read_to_string(&out).unwrap_or_default() })
}

/// The same POST through Python `requests`.
async fn requests(dir: &Path, pki: &Pki, url: &str, body_len: usize, header_len: usize) -> Result<Seen> {
    let script = dir.join("client.py");
    std::fs::write(&script, PY_CLIENT)?;
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args([url, &pki.ca, &pki.cert, &pki.key, &body_len.to_string(), &header_len.to_string()]);
    let output = output(cmd).await.context("running python3")?;
    let line = String::from_utf8_lossy(&output.stdout);
    let json: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("python said: {line} {}", String::from_utf8_lossy(&output.stderr)))?;
    if let Some(e) = json["error"].as_str() {
        bail!("requests raised {e}");
    }
    Ok(Seen {
        status: json["status"].as_u64().unwrap_or(0) as u16,
        content_type: json["content_type"].as_str().unwrap_or_default().to_owned(),
        version: "1.1".into(),
        body: json["body"].as_str().unwrap_or_default().to_owned(),
    })
}

async fn start(cfg: TestConfig) -> Result<(HubProcess, tempfile::TempDir, tempfile::TempDir)> {
    let (cfg_dir, path) = cfg.without_checks().write();
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start_config(BIN, &path, &dir.path().join("data"), free_port()?, &[], &[]).await?;
    Ok((hub, dir, cfg_dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_or_a_header_block_over_the_limit_reaches_curl_and_requests_as_a_problem() -> Result<()> {
    if !clients_present()? {
        return Ok(());
    }
    let (hub, dir, _cfg) = start(TestConfig::conghua()).await?;
    let civil = pki(&hub.data, "civil-affairs");
    let url = format!("{}/v1/records/marriage-registration", hub.url);
    // 1.5 MiB: over the 1 MiB record limit, well inside what the hub reads and drops.
    let over = 1536 * 1024;
    for (how, http2, expect) in [
        ("curl HTTP/1.1", false, Some(false)),
        ("curl HTTP/1.1 + Expect: 100-continue", false, Some(true)),
        ("curl HTTP/2", true, None),
    ] {
        let seen = curl(dir.path(), &civil, &url, http2, expect, over, 0).await?;
        seen.is_problem(how, 413, "too-large")?;
        assert_eq!(seen.version, if http2 { "2" } else { "1.1" }, "{how}");
    }
    requests(dir.path(), &civil, &url, over, 0).await?.is_problem("requests", 413, "too-large")?;
    // 40 MiB, past what the hub reads and drops: a client that waits for `100 Continue` is told
    // no before it sends a byte.
    let huge = 40 << 20;
    let seen = curl(dir.path(), &civil, &url, false, Some(true), huge, 0).await?;
    seen.is_problem("curl HTTP/1.1 + Expect, 40 MiB", 413, "too-large")?;

    // A 40 KiB header over the hub's 32 KiB, with a body the hub never reads.
    let (body, pad) = (512 * 1024, 40 * 1024);
    for (how, http2, expect) in [("curl HTTP/1.1", false, Some(false)), ("curl HTTP/2", true, None)] {
        curl(dir.path(), &civil, &url, http2, expect, body, pad).await?.is_problem(how, 431, "headers-too-large")?;
    }
    requests(dir.path(), &civil, &url, body, pad).await?.is_problem("requests", 431, "headers-too-large")?;

    // The connection stays usable after a drained refusal: the record the hub accepts still lands.
    let ok = hub
        .client("civil-affairs")
        .publish(
            "marriage-registration",
            &harness::marriage(
                "J440184-2026-413001",
                &harness::resident_id("19900315", 1),
                &harness::resident_id("19920708", 2),
            ),
        )
        .await?;
    assert_eq!(ok.status, 201, "{}", ok.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shed_by_admission_control_reaches_curl_and_requests_as_a_problem() -> Result<()> {
    if !clients_present()? {
        return Ok(());
    }
    let (hub, dir, _cfg) = start(TestConfig::conghua().replace("max_in_flight = 1024", "max_in_flight = 1")).await?;
    // A long poll holds the one slot while the clients publish.
    let hold_slot = || {
        let hrss = hub.client("hrss");
        tokio::spawn(async move { hrss.get("/v1/feeds/marriage-to-hrss?wait=60").await })
    };
    let mut hold = hold_slot();
    let civil = pki(&hub.data, "civil-affairs");
    let url = format!("{}/v1/records/marriage-registration", hub.url);
    let body = 512 * 1024;
    // The long poll may not be in flight yet: try until a request is shed.
    let started = Instant::now();
    loop {
        // A publish that took the slot first sheds the long poll itself (a faster hub wins that
        // race more often): poll again until the poll is the one holding it.
        if hold.is_finished() {
            hold = hold_slot();
        }
        let seen = curl(dir.path(), &civil, &url, false, Some(false), body, 0).await?;
        if seen.status == 503 {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("nothing was shed with one slot held: {seen:?}");
        }
    }
    for (how, http2, expect) in [
        ("curl HTTP/1.1", false, Some(false)),
        ("curl HTTP/1.1 + Expect: 100-continue", false, Some(true)),
        ("curl HTTP/2", true, None),
    ] {
        curl(dir.path(), &civil, &url, http2, expect, body, 0).await?.is_problem(how, 503, "overloaded")?;
    }
    requests(dir.path(), &civil, &url, body, 0).await?.is_problem("requests", 503, "overloaded")?;
    hold.abort();
    Ok(())
}
