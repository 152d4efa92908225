//! Alerts on status changes: the log, the store's alert log, and the vendor's ticketing webhook.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::Status;
use ops::runner::{Observer, Run};

use crate::store::Store;

/// Raises alerts on status changes (flap-suppressed): into the log, the alert log in the store,
/// and, when `[ops].alert_url` is set, the vendor's ticketing webhook as Standard Webhooks signed
/// JSON. One queue delivers them in order, retrying each with backoff.
pub struct Alerting {
    state: std::sync::Mutex<ops::alert::Alerts>,
    store: Arc<dyn Store>,
    queue: Option<tokio::sync::mpsc::UnboundedSender<(i64, Vec<u8>)>>,
}

/// How alert deliveries are retried.
const ALERT_RETRY: crate::config::DeliverySection = crate::config::DeliverySection {
    max_attempts: 20,
    max_age_hours: 72,
    backoff_initial_ms: 1000,
    backoff_max_ms: 300_000,
    concurrency: 1,
    attempt_timeout_secs: 30,
    lease_secs: None,
    poll_ms: 1000,
};

impl Alerting {
    /// Alerts into the store and, with a sink, to the vendor. Spawns the delivery task.
    pub fn new(store: Arc<dyn Store>, sink: Option<adapters::webhook::WebhookSink>, hub: String) -> Self {
        let queue = sink.map(|sink| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Vec<u8>)>();
            let store = store.clone();
            tokio::spawn(async move {
                while let Some((id, body)) = rx.recv().await {
                    let webhook_id = format!("alert_{hub}_{id}");
                    for attempt in 1..=ALERT_RETRY.max_attempts {
                        let outcome = sink.send(&webhook_id, "application/json", body.clone()).await;
                        let (error, retry_after) = match outcome {
                            adapters::Outcome::Delivered => (None, None),
                            adapters::Outcome::Retry { reason, retry_after } => (Some(reason), Some(retry_after)),
                            adapters::Outcome::Reject { reason } | adapters::Outcome::Gone { reason } => (Some(reason), None),
                        };
                        if let Err(e) = store.alert_attempt(id, error.clone()).await {
                            tracing::error!(alert = id, error = %e, "cannot record the alert delivery");
                        }
                        match (error, retry_after) {
                            (None, _) => break,
                            (Some(reason), Some(after)) if attempt < ALERT_RETRY.max_attempts => {
                                tracing::warn!(alert = id, attempt, reason = %reason, "alert not delivered; retrying");
                                tokio::time::sleep(crate::delivery::backoff(&ALERT_RETRY, attempt, after)).await;
                            }
                            (Some(reason), _) => {
                                tracing::error!(alert = id, reason = %reason, "alert could not be delivered to the vendor");
                                break;
                            }
                        }
                    }
                }
            });
            tx
        });
        Self { state: std::sync::Mutex::new(ops::alert::Alerts::new(10, 4)), store, queue }
    }
}

#[async_trait]
impl Observer for Alerting {
    async fn finished(&self, run: &Run) {
        let alert = self.state.lock().unwrap_or_else(|e| e.into_inner()).observe(run);
        let Some(a) = alert else { return };
        let summary = crate::mask::scrub(&a.summary);
        match a.to {
            Status::Ok => {
                tracing::info!(check = %a.check, from = a.from.as_str(), to = "ok", flapping = a.flapping, summary = %summary, "check recovered")
            }
            _ => {
                tracing::error!(check = %a.check, from = a.from.as_str(), to = a.to.as_str(), flapping = a.flapping, summary = %summary, "check alert")
            }
        }
        let time = a.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let record = crate::store::AlertRecord {
            id: 0,
            check: a.check.clone(),
            from: a.from.as_str().to_owned(),
            to: a.to.as_str().to_owned(),
            summary: summary.clone(),
            time: time.clone(),
            flapping: a.flapping,
            delivered_at: None,
            attempts: 0,
            last_error: None,
        };
        let id = match self.store.record_alert(record).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(check = %a.check, error = %e, "cannot record the alert");
                return;
            }
        };
        if let Some(q) = &self.queue {
            let body = serde_json::json!({
                "id": id, "check": a.check, "kind": a.kind, "old_status": a.from, "new_status": a.to,
                "summary": summary, "time": time, "flapping": a.flapping,
            });
            let _ = q.send((id, body.to_string().into_bytes()));
        }
    }
}
