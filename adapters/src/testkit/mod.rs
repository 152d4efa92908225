//! The conformance suites adapters run from their own tests (in the spirit of Vector's
//! `run_and_assert_sink_compliance`): [`run_outbound_conformance`] for HTTP push adapters,
//! [`run_target_conformance`] for push adapters into folders, tables and brokers, and
//! [`run_inbound_conformance`] for inbound adapters.
//!
//! The HTTP suite has a real local receiver that answers as told,
//! and the checks that 2xx is `Delivered`, 4xx `Reject`, 410 `Gone`, 408/429/5xx, timeouts and
//! refused connections `Retry` (with `Retry-After`), and that nothing is `Delivered` before the
//! receiver has answered.
// Test support (the `testkit` feature, for the adapters' and the hub's suites): a failed
// expectation here is the test's report, so it panics like a test does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{oneshot, Notify};

use crate::{Envelope, EnvelopeFields, Outbound, Outcome};

/// What the receiver does with the next requests.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// Answer this status (with `Retry-After: N` when given).
    Status(u16, Option<u64>),
    /// Never answer.
    Hang,
    /// Hold the request until [`Receiver::release`], then answer 200.
    Gate,
}

/// One captured request.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its exact body bytes.
    pub body: Vec<u8>,
    /// The status the receiver answered (0 when it never answered).
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    answer: Mutex<Option<Answer>>,
    captured: Mutex<Vec<Captured>>,
    gate: Mutex<Option<oneshot::Sender<()>>>,
    arrived: Notify,
}

/// A local HTTP receiver on 127.0.0.1:0.
pub struct Receiver {
    /// Its URL.
    pub url: String,
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = lock(&inner.answer).unwrap_or(Answer::Status(200, None));
    // The gate is registered before the arrival is announced, so `release` always finds it.
    let gate = matches!(answer, Answer::Gate).then(|| {
        let (tx, rx) = oneshot::channel();
        *lock(&inner.gate) = Some(tx);
        rx
    });
    let status = match answer {
        Answer::Status(code, _) => code,
        Answer::Hang => 0,
        Answer::Gate => 200,
    };
    lock(&inner.captured).push(Captured { headers, body: body.to_vec(), status });
    inner.arrived.notify_waiters();
    match answer {
        Answer::Status(code, retry) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match retry {
                Some(s) => (status, [("retry-after", s.to_string())]).into_response(),
                None => status.into_response(),
            }
        }
        Answer::Hang => std::future::pending().await,
        Answer::Gate => {
            if let Some(rx) = gate {
                let _ = rx.await;
            }
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    /// Starts a receiver answering 200.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new().fallback(axum::routing::post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}/events", listener.local_addr().expect("local addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    /// Sets how the next requests are answered.
    pub fn answer(&self, a: Answer) {
        *lock(&self.inner.answer) = Some(a);
    }

    /// Requests captured so far.
    pub fn captured(&self) -> Vec<Captured> {
        lock(&self.inner.captured).clone()
    }

    /// Requests answered 2xx so far.
    pub fn accepted(&self) -> Vec<Captured> {
        lock(&self.inner.captured).iter().filter(|c| (200..300).contains(&c.status)).cloned().collect()
    }

    /// Waits until at least `n` requests have been answered 2xx.
    pub async fn wait_accepted(&self, n: usize) {
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.accepted().len() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Waits until at least `n` requests have arrived in all.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.inner.captured).len() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Lets a gated request answer 200.
    pub fn release(&self) {
        if let Some(tx) = lock(&self.inner.gate).take() {
            let _ = tx.send(());
        }
    }
}

/// A sample envelope.
pub fn envelope(n: u64) -> Envelope {
    Envelope::new(envelope_fields(n)).expect("envelope")
}

/// The fields of [`envelope`], to vary in adapter-specific tests.
pub fn envelope_fields(n: u64) -> EnvelopeFields {
    EnvelopeFields {
        id: format!("evt-conformance-{n}"),
        source: "urn:hub:test:department:civil-affairs".into(),
        ty: "hub.record.marriage-registration.v1".into(),
        subject: format!("marriage-registration/J440184-2026-{n:06}"),
        time: chrono::Utc::now(),
        data: serde_json::json!({"registration_no": format!("J440184-2026-{n:06}"), "kind": "marriage"}),
        record_version: 1,
        audit_seq: n,
        supersedes: None,
        traceparent: None,
    }
}

/// Runs the suite. `make(url, timeout_secs)` builds the adapter under test for a receiver URL.
/// Returns the receiver's captured requests of the successful deliveries, for adapter-specific
/// checks (signatures, media types).
pub async fn run_outbound_conformance<F>(make: F) -> Vec<Captured>
where
    F: Fn(&str, u64) -> Box<dyn Outbound>,
{
    let rx = Receiver::start().await;
    let adapter = make(&rx.url, 1);

    let e = envelope(1);
    assert_eq!(adapter.deliver(std::slice::from_ref(&e)).await, Outcome::Delivered, "2xx is Delivered");
    let ok = rx.captured();
    assert_eq!(ok.len(), 1, "one request per envelope");
    assert_eq!(ok[0].body, e.json(), "the exact envelope bytes are sent");

    for (code, want_retry) in
        [(400, false), (403, false), (422, false), (408, true), (429, true), (500, true), (503, true)]
    {
        rx.answer(Answer::Status(code, None));
        let got = adapter.deliver(&[envelope(2)]).await;
        match (want_retry, &got) {
            (true, Outcome::Retry { .. }) | (false, Outcome::Reject { .. }) => {}
            _ => panic!("HTTP {code} gave {got:?}"),
        }
    }
    rx.answer(Answer::Status(503, Some(7)));
    match adapter.deliver(&[envelope(3)]).await {
        Outcome::Retry { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)), "Retry-After is honoured")
        }
        other => panic!("503 with Retry-After gave {other:?}"),
    }
    rx.answer(Answer::Status(410, None));
    assert!(matches!(adapter.deliver(&[envelope(4)]).await, Outcome::Gone { .. }), "410 is Gone");

    rx.answer(Answer::Hang);
    assert!(matches!(adapter.deliver(&[envelope(5)]).await, Outcome::Retry { .. }), "a timeout is Retry");

    // Nothing is acknowledged before the receiver confirms.
    rx.answer(Answer::Gate);
    let before = rx.captured().len();
    let pending = {
        let adapter = make(&rx.url, 30);
        tokio::spawn(async move { adapter.deliver(&[envelope(6)]).await })
    };
    rx.wait_for(before + 1).await;
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "the delivery completed before the receiver answered");
    rx.release();
    assert_eq!(pending.await.expect("join"), Outcome::Delivered);

    // A receiver that is not there at all.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/events", l.local_addr().expect("addr"));
        drop(l);
        url
    };
    assert!(matches!(make(&closed, 1).deliver(&[envelope(7)]).await, Outcome::Retry { .. }), "refused is Retry");
    ok
}

mod inbound;
mod target;
pub use inbound::{run_inbound_conformance, InboundUpstream, MemorySink, SinkMode};
pub use target::{run_target_conformance, OutboundTarget};
