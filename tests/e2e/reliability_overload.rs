//! Overload and slow clients against the real binary: ten times more concurrent publishers than
//! the hub admits are answered 503 + `Retry-After` at once while the admitted ones are stored; a
//! department over its rate limit gets 429 + `Retry-After` without slowing the others; idle and
//! byte-at-a-time connections are cut off by the handshake and header timeouts; past
//! `max_connections` a new connection is closed on accept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::{free_port, marriage, resident_id, HubProcess, TestConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_hub");

async fn start(cfg: TestConfig) -> Result<(HubProcess, tempfile::TempDir, tempfile::TempDir)> {
    let (cfg_dir, path) = cfg.without_checks().write();
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start_config(BIN, &path, &dir.path().join("data"), free_port()?, &[], &[]).await?;
    Ok((hub, dir, cfg_dir))
}

fn addr(hub: &HubProcess) -> String {
    hub.url.trim_start_matches("https://").to_owned()
}

/// A counter of the hub's `/metrics` text, summed over the label sets that contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_more_publishers_than_admitted_are_shed_with_retry_after() -> Result<()> {
    let (hub, _dir, _cfg) = start(TestConfig::conghua().replace("max_in_flight = 1024", "max_in_flight = 8")).await?;
    let publishers = 160;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        // Each publisher on its own connection, as separate department systems would be.
        let client = hub.client("civil-affairs");
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..15u32 {
                let no = format!("J440184-2026-{p:03}{i:03}");
                let rec = marriage(&no, &resident_id("19900315", p), &resident_id("19920708", i));
                let started = Instant::now();
                let r = client.publish("marriage-registration", &rec).await;
                out.push((r, started.elapsed()));
            }
            out
        }));
    }
    let (mut admitted, mut shed, mut latencies) = (Vec::new(), 0usize, Vec::new());
    for t in tasks {
        for (r, took) in t.await? {
            let r = r?;
            match r.status {
                201 => {
                    latencies.push(took);
                    admitted.push(r.json);
                }
                503 => {
                    shed += 1;
                    assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap_or("")), Some("1"));
                    assert_eq!(r.json["type"], "urn:conghua-hub:problem:overloaded", "{}", r.text);
                    assert!(r.headers["content-type"].to_str()?.starts_with("application/problem+json"));
                }
                other => panic!("a publish under overload answered {other}: {}", r.text),
            }
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let rss = hub.rss_bytes()?;
    eprintln!(
        "{publishers} publishers, 8 admitted at once: {} stored, {shed} shed, admitted p99 {p99:?}, hub RSS {} MiB",
        admitted.len(),
        rss >> 20
    );
    assert!(shed > 0, "160 concurrent publishers never exceeded 8 in flight");
    assert!(!admitted.is_empty(), "nothing was admitted");
    assert!(rss < 300 << 20, "RSS under overload: {} MiB", rss >> 20);

    // The hub counted exactly the shed requests, and stored every admitted one.
    let ops = hub.client("ops-duty");
    let m = ops.get("/metrics").await?;
    assert_eq!(metric(&m.text, "hub_requests_shed_total", "reason=\"overloaded\"") as usize, shed, "{}", m.text);
    let civil = hub.client("civil-affairs");
    for receipt in admitted.iter().step_by(7) {
        let key = receipt["key"].as_str().context("key")?;
        let r = civil.get(&format!("/v1/records/marriage-registration/{key}")).await?;
        assert_eq!(r.status, 200, "{key}: {}", r.text);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_over_its_rate_gets_429_and_the_others_do_not_notice() -> Result<()> {
    let cfg = TestConfig::conghua()
        .replace("id = \"state-tax\"\n", "id = \"state-tax\"\nrate_limit = { per_second = 2, burst = 5 }\n");
    let (hub, _dir, _cfg) = start(cfg).await?;
    let (tax, civil) = (hub.client("state-tax"), hub.client("civil-affairs"));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = tax.get("/v1/catalog").await?;
        if r.status == 429 {
            assert_eq!(r.json["type"], "urn:conghua-hub:problem:rate-limited", "{}", r.text);
            let wait: u64 = r.headers["retry-after"].to_str()?.parse()?;
            assert_eq!(wait, 1, "at 2 per second the wait is under a second, sent rounded up to 1");
        }
        statuses.push(r.status);
        assert_eq!(civil.get("/v1/catalog").await?.status, 200, "civil affairs has no limit");
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses[..5].iter().all(|s| *s == 200), "the burst of 5 passes: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(ok < 20, "{statuses:?}");
    let m = hub.client("ops-duty").get("/metrics").await?;
    assert_eq!(metric(&m.text, "hub_requests_shed_total", "reason=\"rate_limited\"") as usize, 20 - ok);
    Ok(())
}

fn tls_client(data: &std::path::Path, name: &str) -> Result<tokio_rustls::TlsConnector> {
    let pki = data.join("pki");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
        roots.add(c?)?;
    }
    let certs =
        CertificateDer::pem_file_iter(pki.join(format!("clients/{name}.crt")))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("clients/{name}.key")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// True when the peer closes the stream (EOF or reset) within `limit`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine; keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_byte_at_a_time_connections_are_cut_off_without_hurting_others() -> Result<()> {
    let cfg = TestConfig::conghua()
        .replace("handshake_timeout_secs = 10", "handshake_timeout_secs = 1")
        .replace("header_timeout_secs = 15", "header_timeout_secs = 1");
    let (hub, _dir, _cfg) = start(cfg).await?;
    let addr = addr(&hub);

    // 300 connections that never say hello.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(&addr).await?);
    }
    // 20 authenticated TLS connections that send their request line one byte every 200 ms.
    let connector = tls_client(&hub.data, "civil-affairs")?;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let tcp = TcpStream::connect(&addr).await?;
        let tls = connector.connect(ServerName::try_from("localhost")?.to_owned(), tcp).await?;
        slow.push(tokio::spawn(async move {
            let mut tls = tls;
            let request = b"GET /v1/catalog HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n\r\n";
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            for (sent, byte) in request.iter().enumerate() {
                ticker.tick().await;
                if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                    return Ok::<usize, anyhow::Error>(sent);
                }
                // The hub may answer (408) and close; either way the request never completes.
                let mut buf = [0u8; 64];
                if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await {
                    return Ok(sent);
                }
            }
            anyhow::bail!("the whole slow request was accepted")
        }));
    }
    // Meanwhile other callers are served normally.
    let civil = hub.client("civil-affairs");
    for _ in 0..20 {
        assert_eq!(civil.get("/v1/catalog").await?.status, 200);
    }
    for mut s in idle {
        assert!(
            closed_within(&mut s, Duration::from_secs(10)).await,
            "an idle connection was kept past the handshake timeout"
        );
    }
    for s in slow {
        let sent = s.await??;
        assert!(sent < 40, "a byte-at-a-time client sent {sent} bytes before being cut off");
    }
    assert_eq!(civil.get("/v1/catalog").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_connections_are_closed_on_accept() -> Result<()> {
    let cfg = TestConfig::conghua().replace("max_connections = 4096", "max_connections = 50");
    let (hub, _dir, _cfg) = start(cfg).await?;
    let addr = addr(&hub);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(&addr).await?);
    }
    // The hub holds the 50 (its handshake timeout is 10 s); the 51st is closed at once.
    let mut extra = TcpStream::connect(&addr).await?;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await, "the 51st connection was kept");
    for s in held.iter_mut().take(5) {
        assert!(!closed_within(s, Duration::from_millis(100)).await, "a connection within the limit was closed");
    }
    let m = hub.client("ops-duty");
    drop(held);
    // Closed by the client, the 50 give their slots back as soon as the hub notices.
    harness::eventually(Duration::from_secs(10), "a slot after the held connections close", || async {
        Ok(m.get("/v1/catalog").await.is_ok_and(|r| r.status == 200))
    })
    .await?;
    let text = m.get("/metrics").await?.text;
    assert!(metric(&text, "hub_requests_shed_total", "reason=\"connections\"") >= 1.0, "{text}");
    Ok(())
}
