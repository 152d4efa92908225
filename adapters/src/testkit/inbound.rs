//! The inbound conformance suite every inbound adapter runs against its real upstream (a
//! folder, a database table, a broker queue): records are published once and acknowledged only
//! after the hub's durable receipt; a crash between receipt and acknowledgement re-offers the
//! record under the same idempotency key, so it is not stored twice; a rejected record is
//! reported and not offered again; while the hub is unavailable nothing is acknowledged; and the
//! adapter stops promptly and cleanly when told to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lock;
use crate::{Inbound, RecordSink, SinkError};

/// How the [`MemorySink`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkMode {
    /// Store (idempotently by key) and answer at once.
    Accept,
    /// Never answer and store nothing: the hub has not made the record durable yet.
    Hold,
    /// Store, then never answer: the process dies between the receipt and the upstream ack.
    StoreThenHold,
    /// Answer `Unavailable`.
    Unavailable,
}

#[derive(Default)]
struct SinkState {
    /// Idempotency key → body of the stored record.
    stored: BTreeMap<String, Vec<u8>>,
    /// Offers per key (stored, replayed, rejected or refused).
    calls: BTreeMap<String, usize>,
    rejected: usize,
    replays: usize,
}

/// A sink with the hub's contract: durable on `Ok`, idempotent by key, and a rejection for any
/// record whose JSON has a true `bad` (`true`, `1` or `"true"`, as a table or a CSV spells it),
/// or is no JSON object.
pub struct MemorySink {
    state: Mutex<SinkState>,
    mode: Mutex<SinkMode>,
    changed: Notify,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self { state: Mutex::default(), mode: Mutex::new(SinkMode::Accept), changed: Notify::new() }
    }
}

impl MemorySink {
    /// Sets how the next offers are answered.
    pub fn set_mode(&self, m: SinkMode) {
        *lock(&self.mode) = m;
    }

    /// Records stored, by key.
    pub fn stored(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.state).stored.clone()
    }

    /// Offers of one key so far.
    pub fn calls(&self, key: &str) -> usize {
        lock(&self.state).calls.get(key).copied().unwrap_or(0)
    }

    /// Offers in all.
    pub fn total_calls(&self) -> usize {
        lock(&self.state).calls.values().sum()
    }

    /// Idempotent replays answered.
    pub fn replays(&self) -> usize {
        lock(&self.state).replays
    }

    /// Records rejected.
    pub fn rejected(&self) -> usize {
        lock(&self.state).rejected
    }

    /// Waits (at most 30 s) until `f` holds.
    pub async fn wait(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if f(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting until {what}");
            }
        }
    }
}

#[async_trait]
impl RecordSink for MemorySink {
    async fn publish(&self, key: &str, body: &[u8]) -> Result<Value, SinkError> {
        let mode = *lock(&self.mode);
        {
            let mut s = lock(&self.state);
            *s.calls.entry(key.to_owned()).or_default() += 1;
        }
        self.changed.notify_waiters();
        let doc: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
        let outcome = match mode {
            SinkMode::Hold => std::future::pending().await,
            SinkMode::Unavailable => Err(SinkError::Unavailable("the store is closed".into())),
            _ if doc.as_ref().is_none_or(|d| {
                matches!(&d["bad"], Value::Bool(true)) || d["bad"] == json!(1) || d["bad"] == "true"
            }) =>
            {
                lock(&self.state).rejected += 1;
                Err(SinkError::Rejected {
                    problem: json!({"type": "about:blank", "title": "Unprocessable record", "status": 422,
                        "errors": [{"pointer": "/bad", "detail": "bad records are refused"}]}),
                })
            }
            SinkMode::Accept | SinkMode::StoreThenHold => {
                let mut s = lock(&self.state);
                let replay = match s.stored.get(key) {
                    Some(old) if old == body => true,
                    Some(_) => {
                        return Err(SinkError::Rejected {
                            problem: json!({"title": "Idempotency conflict", "status": 409}),
                        })
                    }
                    None => false,
                };
                if replay {
                    s.replays += 1;
                } else {
                    s.stored.insert(key.to_owned(), body.to_vec());
                }
                Ok(json!({"key": key, "replayed": replay}))
            }
        };
        self.changed.notify_waiters();
        if mode == SinkMode::StoreThenHold && outcome.is_ok() {
            std::future::pending::<()>().await;
        }
        outcome
    }
}

/// The department side of an inbound adapter under test.
#[async_trait]
pub trait InboundUpstream: Send + Sync {
    /// Puts records upstream as the department would (a file, rows, messages), in order.
    async fn offer(&self, records: &[Value]);
    /// Records still upstream and to be offered again. Asked only while no adapter runs.
    async fn pending(&self) -> usize;
    /// A new adapter over this upstream, as after a restart.
    fn adapter(&self) -> Box<dyn Inbound>;
    /// Called after an adapter's task was killed mid-record: an upstream that releases a dead
    /// consumer's records asynchronously (a broker requeueing unacked messages when the
    /// connection closes) waits here, for a bounded time, until they are back.
    async fn after_crash(&self) {}
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::AdapterError>>,
}

fn start(up: &dyn InboundUpstream, sink: &Arc<MemorySink>) -> Running {
    let adapter = up.adapter();
    let stop = CancellationToken::new();
    let (token, sink) = (stop.clone(), sink.clone() as Arc<dyn RecordSink>);
    let task = tokio::spawn(async move { adapter.run(sink, token).await });
    Running { stop, task }
}

impl Running {
    async fn shut_down(self, when: &str) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{when}: the adapter stopped with an error: {e}"),
            Ok(Err(e)) => panic!("{when}: the adapter panicked: {e}"),
            Err(_) => panic!("{when}: the adapter did not stop within 10 s of shutdown"),
        }
    }
}

fn record(n: u64) -> Value {
    json!({"n": n, "name": format!("record {n}")})
}

/// The numbers `n` of the stored records, each once.
fn stored_numbers(sink: &MemorySink) -> Vec<u64> {
    let mut ns: Vec<u64> = sink
        .stored()
        .values()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter_map(|v| v["n"].as_u64().or_else(|| v["n"].as_str().and_then(|s| s.parse().ok())))
        .collect();
    ns.sort_unstable();
    ns
}

/// Runs the suite against `up`, which must start empty.
pub async fn run_inbound_conformance(up: &dyn InboundUpstream) {
    let sink = Arc::new(MemorySink::default());
    assert_eq!(up.pending().await, 0, "the upstream starts empty");

    // Records are published once each, acknowledged, and the adapter stops cleanly.
    up.offer(&[record(1), record(2), record(3)]).await;
    let run = start(up, &sink);
    sink.wait("three records are stored", |s| s.stored().len() == 3).await;
    run.shut_down("after three records").await;
    assert_eq!(up.pending().await, 0, "stored records are acknowledged upstream");
    assert_eq!(stored_numbers(&sink), [1, 2, 3]);

    // A record the hub rejects is reported upstream and not offered again and again.
    let calls = sink.total_calls();
    up.offer(&[json!({"n": 40, "bad": true}), record(4)]).await;
    let run = start(up, &sink);
    sink.wait("the bad record is rejected and the next one stored", |s| s.rejected() == 1 && s.stored().len() == 4)
        .await;
    run.shut_down("after a rejection").await;
    assert_eq!(up.pending().await, 0, "a rejected record is settled upstream, not left to come back");
    assert_eq!(sink.total_calls(), calls + 2, "the rejected record was offered once");

    // No acknowledgement before the hub's durable receipt.
    sink.set_mode(SinkMode::Hold);
    let calls = sink.total_calls();
    up.offer(&[record(5)]).await;
    let run = start(up, &sink);
    sink.wait("record 5 is offered", |s| s.total_calls() > calls).await;
    run.shut_down("while the hub holds a record").await;
    assert_eq!(up.pending().await, 1, "a record without a receipt stays upstream");

    // A crash between the receipt and the upstream ack: offered again, stored once.
    sink.set_mode(SinkMode::StoreThenHold);
    let run = start(up, &sink);
    sink.wait("record 5 is stored", |s| s.stored().len() == 5).await;
    run.task.abort();
    let _ = run.task.await;
    up.after_crash().await;
    assert_eq!(up.pending().await, 1, "not acknowledged: the process died before the ack");
    sink.set_mode(SinkMode::Accept);
    let replays = sink.replays();
    let run = start(up, &sink);
    sink.wait("record 5 is offered again", |s| s.replays() > replays).await;
    run.shut_down("after the replay").await;
    assert_eq!(up.pending().await, 0);
    assert_eq!(stored_numbers(&sink), [1, 2, 3, 4, 5], "the re-offered record kept its idempotency key");

    // The hub unavailable: nothing is acknowledged; everything arrives once it is back.
    sink.set_mode(SinkMode::Unavailable);
    let calls = sink.total_calls();
    up.offer(&[record(6), record(7)]).await;
    let run = start(up, &sink);
    sink.wait("record 6 is offered", |s| s.total_calls() > calls).await;
    run.shut_down("while the hub is unavailable").await;
    assert_eq!(up.pending().await, 2, "nothing is acknowledged while the hub is unavailable");
    sink.set_mode(SinkMode::Accept);
    let run = start(up, &sink);
    sink.wait("records 6 and 7 are stored", |s| s.stored().len() == 7).await;
    run.shut_down("at the end").await;
    assert_eq!(up.pending().await, 0);
    assert_eq!(stored_numbers(&sink), [1, 2, 3, 4, 5, 6, 7]);
}
