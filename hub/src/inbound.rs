//! Inbound connections (`[[inbound]]`): the department systems the hub takes records from
//! through an adapter (an exchange folder, a staging table, a queue). Each runs in its own task
//! with a sink bound to its department, record type and field mapping; the sink takes the same
//! path as `POST /v1/records` (schema, key, idempotency, one durable commit, audit, routing), so
//! a record is the same whichever way it came in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::{BuildContext, RecordSink, SinkError};
use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::exchange::Exchange;
use crate::ledger::{Action, NewEntry};
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::routing::jq::JqProgram;
use crate::store::{NewVersion, Published, Store};

/// Why the inbound connections could not be built.
#[derive(Debug, thiserror::Error)]
#[error("inbound {connection}: {source}")]
pub struct InboundError {
    /// Which one.
    pub connection: String,
    /// Why.
    #[source]
    pub source: adapters::AdapterError,
}

/// One inbound connection, built.
pub struct Connection {
    /// Name.
    pub name: String,
    /// The publishing department.
    pub department: String,
    /// The record type.
    pub record_type: String,
    /// Adapter kind.
    pub adapter_kind: String,
    adapter: Arc<dyn adapters::Inbound>,
    mapping: Option<JqProgram>,
    case_step: Option<JqProgram>,
}

impl Connection {
    /// Checks the department side like the adapter would reach it.
    pub async fn health(&self) -> Result<(), String> {
        self.adapter.health().await
    }
}

/// Every inbound connection.
#[derive(Default)]
pub struct Inbounds {
    conns: Vec<Arc<Connection>>,
}

/// What a connection's sink publishes through: the record's way, the audit for its refusals,
/// its counters, and the flag that shutdown has begun.
#[derive(Clone)]
pub struct Hub {
    /// The record's way.
    pub exchange: Arc<Exchange>,
    /// Where refusals are audited.
    pub store: Arc<dyn Store>,
    /// `hub_inbound_records_total`.
    pub metrics: Arc<Metrics>,
    /// True once shutdown begins: new records are answered "unavailable".
    pub draining: Arc<AtomicBool>,
    /// Joint cases: a record that completes a step goes through them.
    pub cases: Arc<crate::cases::engine::Cases>,
}

/// Pause before an adapter whose run ended with an error is started again.
const RESTART: Duration = Duration::from_secs(5);

impl Inbounds {
    /// Builds every adapter (no I/O: a department system that is down does not stop the hub).
    pub fn build(config: &Config, data: &std::path::Path) -> Result<Self, InboundError> {
        let secret = crate::delivery::secret_resolver(data, config.tls.dev_pki);
        let resolve = |p: &str| config.resolve(p);
        let ctx = BuildContext { secret: &secret, resolve: &resolve, client_identity_pem: None };
        let mut conns = Vec::new();
        for c in &config.inbound {
            let name = c.name.get_ref().clone();
            let err = |source| InboundError { connection: name.clone(), source };
            let kind = adapters::kind(c.adapter.get_ref()).map_err(err)?;
            let build = kind
                .build_inbound
                .ok_or_else(|| err(adapters::AdapterError::Config(format!("{} takes no records in", kind.name))))?;
            let settings = c.settings.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
            let adapter: Arc<dyn adapters::Inbound> = Arc::from(build(&settings, &ctx).map_err(err)?);
            conns.push(Arc::new(Connection {
                name: name.clone(),
                department: c.department.get_ref().clone(),
                record_type: c.record_type.get_ref().clone(),
                adapter_kind: kind.name.to_owned(),
                adapter,
                mapping: c.mapping.as_ref().and_then(|m| JqProgram::compile(m.get_ref()).ok()),
                case_step: c.case_step.as_ref().and_then(|m| JqProgram::compile(m.get_ref()).ok()),
            }));
        }
        Ok(Self { conns })
    }

    /// Every connection.
    pub fn all(&self) -> &[Arc<Connection>] {
        &self.conns
    }

    /// Starts one task per connection; they finish the record in hand and stop when `stop`
    /// turns true. An adapter that fails is started again after a pause.
    pub fn spawn(&self, hub: Hub, mut stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        {
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                token.cancel();
            }));
        }
        for conn in &self.conns {
            let sink: Arc<dyn RecordSink> = Arc::new(HubSink { hub: hub.clone(), conn: conn.clone() });
            let (conn, token) = (conn.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                tracing::info!(inbound = %conn.name, adapter = %conn.adapter_kind, "inbound connection started");
                while !token.is_cancelled() {
                    match conn.adapter.run(sink.clone(), token.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(inbound = %conn.name, error = %crate::mask::scrub(&e.to_string()), "inbound connection failed; restarting");
                            tokio::select! {
                                _ = token.cancelled() => break,
                                _ = tokio::time::sleep(RESTART) => {}
                            }
                        }
                    }
                }
                tracing::info!(inbound = %conn.name, "inbound connection stopped");
            }));
        }
        tasks
    }
}

/// The hub as an inbound adapter sees it.
struct HubSink {
    hub: Hub,
    conn: Arc<Connection>,
}

/// Idempotency keys are visible ASCII of at most 255 bytes; an adapter's key (a Chinese file
/// name, a long message id) is hashed when it is not, and every key is scoped to its connection.
fn scoped_key(connection: &str, key: &str) -> String {
    let plain = format!("inbound:{connection}:{key}");
    if plain.len() <= 255 && plain.bytes().all(|b| b.is_ascii_graphic()) {
        plain
    } else {
        format!("inbound:{connection}:sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

impl HubSink {
    /// Maps and validates one record, as its department publishing it, with the case step it
    /// completes (`case_step` on the department's record), if any.
    fn prepare(&self, key: &str, body: &[u8]) -> Result<(NewVersion, Option<(String, String)>), Problem> {
        let exchange = &self.hub.exchange;
        let t = exchange
            .record_type(&self.conn.record_type)
            .map_err(|_| Problem::Unavailable("the record type is no longer configured".into()))?;
        let department = &self.conn.department;
        let idem = Some(scoped_key(&self.conn.name, key));
        if self.conn.mapping.is_none() && self.conn.case_step.is_none() {
            return Ok((exchange.prepare(t, department, body, idem)?, None));
        }
        let doc: Value = crate::catalog::strict::parse(body)
            .map_err(|e| Problem::BadRequest(format!("the record is not strict JSON: {e}")))?;
        let step = match &self.conn.case_step {
            None => None,
            Some(p) => match p.map(&doc) {
                Ok(Value::Null) => None,
                Ok(Value::String(s)) => match s.split_once('/') {
                    Some((case, step)) if !case.is_empty() && !step.is_empty() => {
                        Some((case.to_owned(), step.to_owned()))
                    }
                    _ => {
                        return Err(Problem::InvalidRequest("case_step must give CASE/STEP or null".into(), Vec::new()))
                    }
                },
                Ok(_) => {
                    return Err(Problem::InvalidRequest("case_step must give CASE/STEP or null".into(), Vec::new()))
                }
                Err(e) => return Err(Problem::InvalidRequest(format!("case_step: {e}"), Vec::new())),
            },
        };
        let mapped = match &self.conn.mapping {
            None => doc,
            Some(m) => m.map(&doc).map_err(|e| Problem::InvalidRequest(format!("inbound mapping: {e}"), Vec::new()))?,
        };
        Ok((exchange.prepare_doc(t, department, mapped, idem)?, step))
    }

    /// A refusal: counted, written to the hub's rejected log (the audit), and handed back.
    async fn reject(&self, key: &str, e: &Problem) -> SinkError {
        let problem = e.body();
        self.hub.metrics.inbound(&self.conn.name, "rejected");
        let pointers: Vec<&Value> =
            problem["errors"].as_array().map(|a| a.iter().map(|v| &v["pointer"]).collect()).unwrap_or_default();
        let entry = NewEntry {
            record_type: Some(self.conn.record_type.clone()),
            detail: Some(json!({
                "connection": self.conn.name,
                "source": crate::mask::scrub(key),
                "status": problem["status"],
                "title": problem["title"],
                "pointers": pointers,
            })),
            ..NewEntry::new(self.conn.department.clone(), Action::Reject, format!("{} rejected", e.parts().0.as_u16()))
        };
        if let Err(err) = self.hub.store.audit(entry).await {
            tracing::warn!(inbound = %self.conn.name, error = %err, "rejection not audited");
        }
        SinkError::Rejected { problem }
    }

    fn unavailable(&self, why: String) -> SinkError {
        self.hub.metrics.inbound(&self.conn.name, "unavailable");
        SinkError::Unavailable(why)
    }
}

#[async_trait]
impl RecordSink for HubSink {
    async fn publish(&self, key: &str, body: &[u8]) -> Result<Value, SinkError> {
        let items = [(key.to_owned(), body.to_vec())];
        self.publish_many(&items).await.pop().unwrap_or_else(|| Err(SinkError::Unavailable("no answer".into())))
    }

    async fn publish_many(&self, items: &[(String, Vec<u8>)]) -> Vec<Result<Value, SinkError>> {
        if self.hub.draining.load(Ordering::SeqCst) {
            return items.iter().map(|_| Err(self.unavailable("the hub is shutting down".into()))).collect();
        }
        let mut results: Vec<Option<Result<Value, SinkError>>> = Vec::with_capacity(items.len());
        let mut pending: Vec<(usize, NewVersion)> = Vec::new();
        let mut for_steps: Vec<(usize, NewVersion, (String, String))> = Vec::new();
        for (i, (key, body)) in items.iter().enumerate() {
            match self.prepare(key, body) {
                Ok((v, None)) => {
                    pending.push((i, v));
                    results.push(None);
                }
                Ok((v, Some(step))) => {
                    for_steps.push((i, v, step));
                    results.push(None);
                }
                Err(e) if e.parts().0.is_client_error() => results.push(Some(Err(self.reject(key, &e).await))),
                Err(e) => results.push(Some(Err(self.unavailable(e.to_string())))),
            }
        }
        let (mut slots, versions): (Vec<usize>, Vec<NewVersion>) = pending.into_iter().unzip();
        let mut outcomes = match self.hub.exchange.commit(versions).await {
            Ok(o) => o,
            Err(e) => {
                let why = e.to_string();
                return results.into_iter().map(|r| r.unwrap_or_else(|| Err(self.unavailable(why.clone())))).collect();
            }
        };
        // A record that completes a case step commits with the step's transition, one at a time.
        let mut refused: Vec<(usize, Problem)> = Vec::new();
        for (slot, v, (case, step)) in for_steps {
            match self.hub.cases.publish_for_step(&case, &step, v).await {
                Ok(p) => {
                    slots.push(slot);
                    outcomes.push(Ok(p));
                }
                Err(e) => refused.push((slot, Problem::from(e))),
            }
        }
        for (slot, e) in refused {
            let key = &items[slot].0;
            results[slot] = Some(if e.parts().0.is_client_error() {
                Err(self.reject(key, &e).await)
            } else {
                Err(self.unavailable(e.to_string()))
            });
        }
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            let key = &items[slot].0;
            results[slot] = Some(match outcome {
                Ok(Published::Created(receipt)) => {
                    self.hub.metrics.inbound(&self.conn.name, "published");
                    Ok(receipt_json(&receipt, false))
                }
                Ok(Published::Replayed(receipt)) => {
                    self.hub.metrics.inbound(&self.conn.name, "replayed");
                    Ok(receipt_json(&receipt, true))
                }
                Ok(Published::Conflict) => {
                    let e = Problem::Conflict(
                        "this source (file and line, row or message id) was already published with other content"
                            .into(),
                    );
                    Err(self.reject(key, &e).await)
                }
                Err(e) => {
                    let e = Problem::from(e);
                    if e.parts().0.is_client_error() {
                        Err(self.reject(key, &e).await)
                    } else {
                        Err(self.unavailable(e.to_string()))
                    }
                }
            });
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(SinkError::Unavailable("no answer".into())))).collect()
    }
}

fn receipt_json(receipt: &crate::store::Receipt, replayed: bool) -> Value {
    let mut v = serde_json::to_value(receipt).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("replayed".into(), Value::Bool(replayed));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::scoped_key;

    #[test]
    fn keys_are_scoped_and_hashed_when_not_plain_ascii() {
        assert_eq!(scoped_key("tax-staging", "row:t:7"), "inbound:tax-staging:row:t:7");
        let k = scoped_key("disability-csv", "file:残联-2026.csv:3");
        assert!(k.starts_with("inbound:disability-csv:sha256:") && k.is_ascii(), "{k}");
        assert_eq!(k, scoped_key("disability-csv", "file:残联-2026.csv:3"), "stable");
        assert!(scoped_key("a", &"x".repeat(300)).len() <= 255);
    }
}
