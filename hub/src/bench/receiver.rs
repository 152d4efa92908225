//! The `deliver` scenario's webhook receiver: it checks every Standard Webhooks signature with
//! the development secrets the hub wrote, counts events, and measures publish-to-receipt latency
//! from each event's `time` (when the hub accepted the record).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;

#[derive(Default)]
struct Inner {
    keys: Mutex<Vec<Vec<u8>>>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    events: u64,
    bad: u64,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
    latency_us: Option<Histogram<u64>>,
}

/// A local receiver.
pub struct Receiver {
    /// Its URL.
    pub url: String,
    inner: Arc<Inner>,
}

/// What arrived.
pub struct Deliveries {
    /// Events with a valid signature.
    pub events: u64,
    /// Requests whose signature did not verify.
    pub bad_signatures: u64,
    /// Events per second between the first and the last.
    pub per_s: f64,
    /// Publish to receipt, median (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Largest (ms).
    pub max_ms: f64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let keys = lock(&inner.keys).clone();
    let good = ts.parse::<i64>().is_ok_and(|ts| {
        let expected = adapters::webhook::sign(&keys, &id, ts, &body);
        !keys.is_empty() && sig.split(' ').any(|s| expected.split(' ').any(|e| e == s))
    });
    let now = std::time::Instant::now();
    // One event, or a CloudEvents batch (an array of them).
    let events = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(events)) => events,
        Ok(event) => vec![event],
        Err(_) => Vec::new(),
    };
    let latency = |v: &serde_json::Value| {
        v["time"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0).max(1) as u64)
    };
    let mut seen = lock(&inner.seen);
    if !good || events.is_empty() {
        seen.bad += 1;
        return StatusCode::UNAUTHORIZED;
    }
    seen.events += events.len() as u64;
    seen.first.get_or_insert(now);
    seen.last = Some(now);
    for e in &events {
        if let (Some(l), Some(h)) = (latency(e), seen.latency_us.as_mut()) {
            let _ = h.record(l);
        }
    }
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Listens on 127.0.0.1:0.
    pub async fn start() -> Result<Self> {
        let inner = Arc::new(Inner::default());
        lock(&inner.seen).latency_us = Some(Histogram::new_with_bounds(1, 600_000_000, 3)?);
        let app = axum::Router::new().fallback(axum::routing::post(receive)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner })
    }

    /// Reads the development secrets the hub wrote (every subscription's).
    pub fn load_secrets(&self, dir: &Path) -> Result<()> {
        let mut keys = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let text = std::fs::read_to_string(e?.path())?;
            if let Ok(k) = adapters::webhook::parse_secret(text.trim()) {
                keys.push(k);
            }
        }
        *lock(&self.inner.keys) = keys;
        Ok(())
    }

    /// Waits until a second passes without a new event (or `limit`), then reports.
    pub async fn wait_settled(&self, limit: Duration) -> Deliveries {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = u64::MAX;
        while tokio::time::Instant::now() < deadline {
            let now = lock(&self.inner.seen).events;
            if now == last {
                break;
            }
            last = now;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let seen = lock(&self.inner.seen);
        let span = match (seen.first, seen.last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-3),
            _ => 1.0,
        };
        let ms = |p: f64| seen.latency_us.as_ref().map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0);
        Deliveries {
            events: seen.events,
            bad_signatures: seen.bad,
            per_s: seen.events as f64 / span,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: seen.latency_us.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        }
    }
}

/// Points every `url = "http://..."` of the config (the webhook subscriptions) at `receiver`,
/// with `batch` events per request when more than one.
pub fn point_webhooks_at(text: &str, receiver: &str, batch: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("url = \"http://") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "url = \"".len()..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&format!("url = \"{receiver}\""));
        if batch > 1 {
            out.push_str(&format!(", batch = {batch}"));
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}
