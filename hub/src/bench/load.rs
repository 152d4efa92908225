//! The load itself: one task and one client (one connection) per connection slot, closed or open
//! loop, latencies in microseconds into a per-worker HDR histogram merged at the end.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::records::Generator;
use super::BenchArgs;

/// One mTLS client per connection slot, for each principal a scenario uses.
pub struct Clients {
    by_principal: Vec<(&'static str, Vec<reqwest::Client>)>,
}

fn client(data: &Path, name: &str, http2: bool) -> Result<reqwest::Client> {
    let pki = data.join("pki");
    let read = |p: std::path::PathBuf| std::fs::read(&p).with_context(|| format!("{}", p.display()));
    let ca = reqwest::Certificate::from_pem(&read(pki.join("ca.crt"))?)?;
    let mut pem = read(pki.join("clients").join(format!("{name}.crt")))?;
    pem.extend(read(pki.join("clients").join(format!("{name}.key")))?);
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem)?)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30));
    Ok(if http2 { b.http2_prior_knowledge() } else { b.http1_only() }.build()?)
}

impl Clients {
    /// `n` clients for each principal the benchmarks use.
    pub fn new(data: &Path, n: usize, http2: bool) -> Result<Self> {
        let mut by_principal = Vec::new();
        for p in ["civil-affairs", "family-planning"] {
            by_principal.push((p, (0..n).map(|_| client(data, p, http2)).collect::<Result<Vec<_>>>()?));
        }
        Ok(Self { by_principal })
    }

    fn get(&self, principal: &str, slot: usize) -> Option<&reqwest::Client> {
        self.by_principal.iter().find(|(p, _)| *p == principal).and_then(|(_, c)| c.get(slot))
    }
}

/// What one run measured.
pub struct Outcome {
    /// Latencies of the successful requests (µs).
    pub histogram: Histogram<u64>,
    /// Answers with the expected status.
    pub ok: u64,
    /// Other answers and transport errors.
    pub errors: u64,
    /// Measured time.
    pub elapsed: Duration,
    /// A few error descriptions.
    pub samples: Vec<String>,
}

/// What one worker counted: its latencies, answers as expected, failures and a few of their
/// descriptions.
pub type Tally = (Histogram<u64>, u64, u64, Vec<String>);

impl Outcome {
    /// Nothing yet, over `elapsed`.
    pub fn empty(elapsed: Duration) -> Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ok: 0,
            errors: 0,
            elapsed,
            samples: Vec::new(),
        })
    }

    /// Adds one worker's tally, keeping at most three error samples in all.
    pub fn add(&mut self, (h, ok, errors, samples): Tally) -> Result<()> {
        self.histogram.add(h)?;
        self.ok += ok;
        self.errors += errors;
        self.samples.extend(samples.into_iter().take(3usize.saturating_sub(self.samples.len())));
        Ok(())
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The figures, for the JSON report.
    pub fn json(&self) -> Value {
        let q = |p: f64| (self.histogram.value_at_quantile(p) as f64 / 10.0).round() / 100.0;
        json!({
            "requests": self.ok + self.errors, "errors": self.errors, "per_s": self.throughput().round(),
            "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999),
                           "max": (self.histogram.max() as f64 / 10.0).round() / 100.0},
            "error_samples": self.samples,
        })
    }
}

/// How to load.
#[derive(Clone)]
pub struct Load {
    connections: usize,
    duration: Duration,
    warmup: Duration,
    requests: Option<u64>,
    rate: Option<f64>,
}

impl Load {
    /// From the command line.
    pub fn new(args: &BenchArgs) -> Self {
        Self {
            connections: args.connections.max(1),
            duration: args.duration,
            warmup: args.warmup,
            requests: args.requests,
            rate: args.rate.filter(|r| *r > 0.0),
        }
    }

    /// Runs the scenario against `urls`, connection `w` on `urls[w % urls.len()]`.
    pub async fn run(&self, clients: &Clients, urls: &[String], gen: Arc<Generator>) -> Result<Outcome> {
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let deadline = measure_from + self.duration;
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..self.connections {
            let principal = gen.principal(w);
            let Some(client) = clients.get(principal, w).cloned() else { bail!("no client for {principal}") };
            let url = urls.get(w % urls.len().max(1)).cloned().unwrap_or_default();
            let (gen, sent, load) = (gen.clone(), sent.clone(), self.clone());
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut errors, mut samples) = (0u64, 0u64, Vec::new());
                let interval = load.rate.map(|r| Duration::from_secs_f64(load.connections as f64 / r));
                let mut k = 0u64;
                loop {
                    // Open loop: each request has its slot; a late answer delays the next send but
                    // not its clock, so queueing shows in the latency.
                    let intended = match interval {
                        Some(i) => {
                            let t = start + i.mul_f64(k as f64);
                            tokio::time::sleep_until(t).await;
                            t
                        }
                        None => Instant::now(),
                    };
                    if intended >= deadline {
                        break;
                    }
                    if load.requests.is_some_and(|n| sent.fetch_add(1, Ordering::Relaxed) >= n) {
                        break;
                    }
                    let req = gen.request(w, k);
                    k += 1;
                    let builder = if req.post {
                        client
                            .post(format!("{url}{}", req.path))
                            .header("content-type", "application/json")
                            .body(req.body)
                    } else {
                        client.get(format!("{url}{}", req.path))
                    };
                    let result = builder.send().await;
                    let done = Instant::now();
                    let good = match result {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body = resp.bytes().await;
                            if status == req.expect && body.is_ok() {
                                true
                            } else {
                                if samples.len() < 3 {
                                    samples
                                        .push(format!("HTTP {status} on {}", req.path.split('?').next().unwrap_or("")));
                                }
                                false
                            }
                        }
                        Err(e) => {
                            if samples.len() < 3 {
                                samples.push(e.to_string());
                            }
                            false
                        }
                    };
                    if intended < measure_from {
                        continue;
                    }
                    if good {
                        ok += 1;
                        let _ = h.record((done - intended).as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
                (h, ok, errors, samples)
            }));
        }
        let mut out = Outcome::empty(Duration::ZERO)?;
        for t in tasks {
            out.add(t.await?)?;
        }
        out.elapsed =
            Instant::now().saturating_duration_since(measure_from).min(self.duration).max(Duration::from_millis(1));
        Ok(out)
    }
}

/// Publishes `n` records through the batch endpoint, for reads and lookups to find.
pub async fn preload(clients: &Clients, url: &str, gen: &Generator, n: u64) -> Result<()> {
    let client = clients.get("civil-affairs", 0).context("a civil-affairs client")?;
    let mut i = 0;
    while i < n {
        let lines = (n - i).min(1000);
        let mut body = Vec::new();
        for j in i..i + lines {
            body.extend(serde_json::to_vec(&super::records::marriage(j, true))?);
            body.push(b'\n');
        }
        let resp = client
            .post(format!("{url}/v1/batch/marriage-registration"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let v: Value = resp.json().await?;
        if v["failed"] != 0 {
            bail!("preload failed: {}", v["results"][0]);
        }
        i += lines;
    }
    gen.preloaded(n);
    Ok(())
}
