//! Internal events: one struct per occurrence that operators watch (a record published, an access
//! refused, a delivery made, retried or dead-lettered). Emitting one writes its log line and moves
//! its metric together, as Vector's internal events do, so the two cannot drift and a test can
//! assert on both. Fields are ids, counts and masked reasons: never a record key or a subject.

use std::time::Duration;

use crate::metrics::{DeliveryLabels, Metrics, RecordLabels, RefusalLabels};

/// Something worth a log line and a metric.
pub trait Event {
    /// Writes the log line and moves the metric.
    fn emit(self, metrics: &Metrics);
}

/// A new record version is durable (its receipt exists).
pub struct RecordPublished<'a> {
    /// The publishing department.
    pub department: &'a str,
    /// Its record type.
    pub record_type: &'a str,
    /// The version created.
    pub version: u64,
    /// Its audit entry.
    pub audit_seq: u64,
}

impl Event for RecordPublished<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(
            department = self.department,
            record_type = self.record_type,
            version = self.version,
            audit_seq = self.audit_seq,
            "record published"
        );
        let labels = RecordLabels { department: self.department.to_owned(), record_type: self.record_type.to_owned() };
        metrics.published.get_or_create(&labels).inc();
    }
}

/// A case transition is durable, with its events.
pub struct CaseChanged<'a> {
    /// Case type.
    pub case_type: &'a str,
    /// What happened.
    pub transition: &'a str,
    /// The case's version after it.
    pub version: u64,
    /// Its audit entry.
    pub audit_seq: u64,
}

impl Event for CaseChanged<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(
            case_type = self.case_type,
            transition = self.transition,
            version = self.version,
            audit_seq = self.audit_seq,
            "case changed"
        );
        let labels =
            crate::metrics::CaseLabels { case_type: self.case_type.to_owned(), transition: self.transition.to_owned() };
        metrics.cases.get_or_create(&labels).inc();
    }
}

/// A known caller was refused (403) and the refusal is audited.
pub struct AccessRefused<'a> {
    /// Department or operator id.
    pub principal: &'a str,
    /// Why, as sent to the caller (no personal data: it names types, purposes and roles).
    pub reason: &'a str,
}

impl Event for AccessRefused<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(principal = self.principal, reason = %self.reason, "request refused");
        metrics.refusals.get_or_create(&RefusalLabels { principal: self.principal.to_owned() }).inc();
    }
}

fn count(metrics: &Metrics, subscription: &str, outcome: &str, n: usize) {
    let labels = DeliveryLabels { subscription: subscription.to_owned(), outcome: outcome.to_owned() };
    metrics.deliveries.get_or_create(&labels).inc_by(n as u64);
}

/// The receiver confirmed `events` envelopes and the settlements are durable.
pub struct Delivered<'a> {
    /// The subscription.
    pub subscription: &'a str,
    /// How many envelopes the one call carried.
    pub events: usize,
}

impl Event for Delivered<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::debug!(subscription = self.subscription, events = self.events, "delivered");
        count(metrics, self.subscription, "delivered", self.events);
    }
}

/// The receiver deferred `events` envelopes; they go again after `delay`.
pub struct DeliveryRetried<'a> {
    /// The subscription.
    pub subscription: &'a str,
    /// How many envelopes will be tried again.
    pub events: usize,
    /// Attempts so far of the most-tried one.
    pub attempts: u32,
    /// The pause before the next attempt.
    pub delay: Duration,
    /// What the receiver or the timeout said (masked).
    pub reason: &'a str,
}

impl Event for DeliveryRetried<'_> {
    fn emit(self, metrics: &Metrics) {
        let reason = crate::mask::scrub(self.reason);
        tracing::info!(subscription = self.subscription, events = self.events, attempts = self.attempts,
            delay_ms = self.delay.as_millis() as u64, reason = %reason, "delivery will be retried");
        count(metrics, self.subscription, "retry", self.events);
    }
}

/// An event will not be delivered: its dead letter and audit entry are durable.
pub struct DeadLettered<'a> {
    /// The subscription.
    pub subscription: &'a str,
    /// The CloudEvents id (random, not personal).
    pub event_id: &'a str,
    /// Why (already masked by the caller, which also stores it).
    pub reason: &'a str,
}

impl Event for DeadLettered<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(subscription = self.subscription, event = self.event_id, reason = %self.reason,
            "event dead-lettered");
        count(metrics, self.subscription, "dead", 1);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The log lines an event writes, captured, and the metrics text after it.
    fn emitted(event: impl Event) -> (String, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let metrics = Metrics::new();
        tracing::subscriber::with_default(subscriber, || event.emit(&metrics));
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (log, metrics.encode().unwrap())
    }

    #[test]
    fn a_publish_logs_its_receipt_and_counts_its_department_and_type() {
        let (log, m) =
            emitted(RecordPublished { department: "civil-affairs", record_type: "marriage", version: 2, audit_seq: 9 });
        assert!(log.contains("INFO") && log.contains("record published") && log.contains("audit_seq=9"), "{log}");
        assert!(
            m.contains(r#"hub_records_published_total{department="civil-affairs",record_type="marriage"} 1"#),
            "{m}"
        );
    }

    #[test]
    fn a_refusal_logs_its_reason_and_counts_its_principal() {
        let (log, m) = emitted(AccessRefused { principal: "tax", reason: "no grant on marriage for audit" });
        assert!(log.contains("request refused") && log.contains("no grant on marriage"), "{log}");
        assert!(m.contains(r#"hub_access_refused_total{principal="tax"} 1"#), "{m}");
    }

    #[test]
    fn delivery_outcomes_count_every_envelope_of_the_call() {
        let (log, m) = emitted(Delivered { subscription: "tax-marriage", events: 3 });
        assert!(log.contains("DEBUG") && log.contains("events=3"), "{log}");
        assert!(m.contains(r#"hub_delivery_attempts_total{subscription="tax-marriage",outcome="delivered"} 3"#), "{m}");

        let retried = DeliveryRetried {
            subscription: "tax-marriage",
            events: 2,
            attempts: 4,
            delay: Duration::from_millis(1500),
            reason: "503 from 440105199003151234",
        };
        let (log, m) = emitted(retried);
        assert!(log.contains("delivery will be retried") && log.contains("delay_ms=1500"), "{log}");
        assert!(!log.contains("440105199003151234"), "a resident id in the reason is masked: {log}");
        assert!(m.contains(r#"hub_delivery_attempts_total{subscription="tax-marriage",outcome="retry"} 2"#), "{m}");
    }

    #[test]
    fn a_dead_letter_warns_and_counts_once() {
        let (log, m) = emitted(DeadLettered { subscription: "tax-marriage", event_id: "e-1", reason: "410 gone" });
        assert!(log.contains("WARN") && log.contains("event dead-lettered") && log.contains("e-1"), "{log}");
        assert!(m.contains(r#"hub_delivery_attempts_total{subscription="tax-marriage",outcome="dead"} 1"#), "{m}");
    }
}
