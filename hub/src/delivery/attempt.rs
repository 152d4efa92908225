//! One attempt path for one envelope or many: build the envelopes, make one adapter call under
//! the attempt timeout, and settle every entry by the outcome (delivered, retried with backoff,
//! dead-lettered, or the subscription stopped when the receiver is gone). Each settlement carries
//! its audit entry, and each outcome is emitted as an event (log line and metric together).

use std::sync::Arc;
use std::time::Duration;

use adapters::Outcome;
use serde_json::json;

use super::worker::Verdict;
use super::{backoff, Delivery, Subscription};
use crate::events::{DeadLettered, Delivered, DeliveryRetried, Event};
use crate::ledger::{Action, NewEntry};
use crate::store::{OutboxRow, RecordVersion, Settlement};

/// The pause after the store failed to load or record something: the entries stay pending.
pub(super) const STORE_PAUSE: Duration = Duration::from_secs(1);

impl Delivery {
    /// Delivers `rows` (in claim order) in one call. The receiver's answer settles them together;
    /// when it rejects a batch, each entry is tried alone so that only the bad one goes to the
    /// dead letters.
    pub(super) async fn attempt(&self, sub: &Arc<Subscription>, rows: Vec<OutboxRow>) -> Verdict {
        let Some(adapter) = &sub.adapter else { return Verdict::Settled };
        let mut verdict = Verdict::Settled;
        let (mut ready, mut envelopes) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for row in rows {
            match self.envelope(sub, &row).await {
                Ok(Ok((envelope, rec))) => {
                    envelopes.push(envelope);
                    ready.push((row, rec));
                }
                Ok(Err(reason)) => verdict = verdict.or(self.dead(sub, None, &row, &reason).await),
                Err(e) => {
                    // The rest stay pending and are claimed again.
                    tracing::error!(subscription = %sub.name, error = %e, "cannot load a record to deliver");
                    return Verdict::Retry(STORE_PAUSE);
                }
            }
        }
        if ready.is_empty() {
            return verdict;
        }
        // One span per attempt, in the trace of the (first) record's publish: its events were
        // made there, and the receiver's own tracing continues from this span.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "deliver",
            otel.name = %format_args!("deliver {}", sub.name),
            otel.kind = "client",
            hub.subscription = %sub.name,
            hub.events = ready.len(),
            hub.attempt = ready[0].0.attempts + 1,
            hub.outcome = tracing::field::Empty,
        );
        crate::telemetry::continue_from(&span, ready[0].1.trace.as_deref());
        let attempt = crate::telemetry::of_span(&span);
        for (e, (_, rec)) in envelopes.iter_mut().zip(&ready) {
            e.set_attempt_trace(attempt.clone().or_else(|| rec.trace.clone()));
        }
        let limit = Duration::from_secs(self.policy.attempt_timeout_secs);
        let call =
            tracing::Instrument::instrument(tokio::time::timeout(limit, adapter.deliver(&envelopes)), span.clone());
        let outcome = match call.await {
            Ok(o) => o,
            Err(_) => Outcome::Retry { reason: "the attempt timed out".into(), retry_after: None },
        };
        span.record(
            "hub.outcome",
            match &outcome {
                Outcome::Delivered => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::Reject { .. } => "rejected",
                Outcome::Gone { .. } => "gone",
            },
        );
        match outcome {
            Outcome::Delivered => {
                let settlements = ready
                    .iter()
                    .map(|(row, rec)| {
                        let entry = Self::receipt_entry(sub, Some(rec), row, Action::Deliver, "ok", None);
                        (row.id, Settlement::Delivered, Some(entry))
                    })
                    .collect();
                let Ok(permit) = sub.settle_permits.clone().acquire_owned().await else { return Verdict::Settled };
                let (store, metrics, events, owner) =
                    (self.store.clone(), self.metrics.clone(), ready.len(), sub.clone());
                sub.settling.spawn(async move {
                    let _permit = permit;
                    match store.settle_many(settlements).await {
                        Ok(()) => Delivered { subscription: &owner.name, events }.emit(&metrics),
                        // Not recorded: the entries stay leased, then go again (at least once).
                        Err(e) => {
                            owner.settle_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                            tracing::error!(subscription = %owner.name, error = %e, "delivered but not recorded");
                        }
                    }
                    // The worker may have found the records' next versions waiting on these.
                    owner.notify.notify_waiters();
                });
                Verdict::Delivered
            }
            Outcome::Retry { reason, retry_after } => {
                let (mut settlements, mut delay, mut most) = (Vec::with_capacity(ready.len()), Duration::ZERO, 0);
                for (row, rec) in &ready {
                    let attempts = row.attempts + 1;
                    if attempts >= self.policy.max_attempts {
                        let why = format!("gave up after {attempts} attempts: {reason}");
                        verdict = verdict.or(self.dead(sub, Some(rec), row, &why).await);
                        continue;
                    }
                    let wait = backoff(&self.policy, attempts, retry_after);
                    (delay, most) = (delay.max(wait), most.max(attempts));
                    let at_ms = chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64;
                    settlements.push((row.id, Settlement::Retry { at_ms, error: reason.clone() }, None));
                }
                if settlements.is_empty() {
                    return verdict;
                }
                let events = settlements.len();
                if let Err(e) = self.store.settle_many(settlements).await {
                    tracing::error!(subscription = %sub.name, error = %e, "cannot record the retry");
                }
                DeliveryRetried { subscription: &sub.name, events, attempts: most, delay, reason: &reason }
                    .emit(&self.metrics);
                Verdict::Retry(delay)
            }
            Outcome::Reject { reason } if ready.len() == 1 => {
                let (row, rec) = &ready[0];
                self.dead(sub, Some(rec), row, &reason).await
            }
            Outcome::Reject { reason } => {
                tracing::warn!(subscription = %sub.name, events = ready.len(), reason = %crate::mask::scrub(&reason), "batch rejected; trying its entries one by one");
                for (row, _) in ready {
                    verdict = Box::pin(self.attempt(sub, vec![row])).await;
                    if matches!(verdict, Verdict::Retry(_)) {
                        // The rest stay pending and are claimed again after the pause.
                        break;
                    }
                }
                verdict
            }
            Outcome::Gone { reason } => {
                for (row, rec) in &ready {
                    verdict = verdict.or(self.dead(sub, Some(rec), row, &reason).await);
                }
                self.stop_subscription(sub, reason).await;
                verdict
            }
        }
    }

    /// The receiver said it is gone for good: the subscription stops until an operator restarts it.
    async fn stop_subscription(&self, sub: &Subscription, reason: String) {
        let entry = NewEntry {
            detail: Some(json!({ "subscription": sub.name, "disabled": true, "reason": reason })),
            ..NewEntry::new("hub", Action::Admin, "subscription-disabled")
        };
        match self.store.set_subscription(&sub.name, true, Some(reason.clone()), entry).await {
            Ok(()) => self.set_disabled(&sub.name, true),
            Err(e) => tracing::error!(subscription = %sub.name, error = %e, "cannot record the stopped subscription"),
        }
        tracing::error!(subscription = %sub.name, reason = %reason, "receiver is gone; subscription stopped");
    }

    /// Settles one entry as a dead letter with its audit entry. `Retry` when the store did not
    /// take it: the entry stays pending.
    async fn dead(&self, sub: &Subscription, rec: Option<&RecordVersion>, row: &OutboxRow, reason: &str) -> Verdict {
        let reason = crate::mask::scrub(reason);
        let entry = Self::receipt_entry(sub, rec, row, Action::DeadLetter, "dead", Some(&reason));
        match self.store.settle(row.id, Settlement::Dead { error: reason.clone() }, Some(entry)).await {
            Ok(()) => {
                DeadLettered { subscription: &sub.name, event_id: &row.event_id, reason: &reason }.emit(&self.metrics);
                Verdict::Settled
            }
            Err(e) => {
                tracing::error!(subscription = %sub.name, error = %e, "cannot record the dead letter");
                Verdict::Retry(STORE_PAUSE)
            }
        }
    }
}
