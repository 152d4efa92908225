//! Prometheus metrics (`/metrics`, text format, prometheus-client). Labels are departments,
//! record types, subscriptions, endpoint templates and statuses: never a record key, a subject
//! or a name, so the vendor and any Prometheus may read them.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template, e.g. `/v1/records/{type}/{key}`.
    pub endpoint: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: String,
    /// Principal id, or `anonymous`.
    pub principal: String,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Route template.
    pub endpoint: String,
}

/// Labels of record traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    /// Department (publisher or reader).
    pub department: String,
    /// Record type.
    pub record_type: String,
}

/// Labels of a delivery outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// Subscription.
    pub subscription: String,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
}

/// Labels of a request refused by admission control.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `overloaded` (503) or `rate_limited` (429).
    pub reason: String,
}

/// Labels of a backlog gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BacklogLabels {
    /// Subscription.
    pub subscription: String,
    /// `pending` or `dead`.
    pub state: String,
}

/// Labels of an inbound record counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    /// Inbound connection name.
    pub connection: String,
    /// `published`, `replayed`, `rejected` or `unavailable`.
    pub outcome: String,
}

/// Labels of an audited refusal (403): who was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Department or operator id.
    pub principal: String,
}

/// Labels of a case transition: the case type and what happened (no case ids: they grow without
/// bound).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaseLabels {
    /// Case type.
    pub case_type: String,
    /// `opened`, `step.done`, `step.refused` or `swept`.
    pub transition: String,
}

/// Labels of a check gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// Check name.
    pub check: String,
}

/// Every metric of the hub.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests.
    pub requests: Family<RequestLabels, Counter>,
    /// HTTP latency (seconds).
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Record versions published.
    pub published: Family<RecordLabels, Counter>,
    /// Records returned by reads and lookups.
    pub reads: Family<RecordLabels, Counter>,
    /// Delivery attempts by outcome.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Outbox entries by subscription and state (set at scrape).
    pub backlog: Family<BacklogLabels, Gauge>,
    /// Latest status per check: 0 ok, 1 warn, 2 critical (set at scrape).
    pub checks: Family<CheckLabels, Gauge>,
    /// Records offered through inbound connections, by outcome.
    pub inbound: Family<InboundLabels, Counter>,
    /// Requests refused by admission control, by reason.
    pub shed: Family<ShedLabels, Counter>,
    /// Audited refusals (403) by principal.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Case transitions committed.
    pub cases: Family<CaseLabels, Counter>,
    commits: Counter,
    operations: Counter,
    seen: (AtomicU64, AtomicU64),
    wal: WalGauges,
}

/// The SQLite write-ahead log (set at scrape; absent on PostgreSQL, whose WAL is the server's).
#[derive(Default)]
struct WalGauges {
    bytes: Gauge,
    limit: Gauge,
    checkpoint_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    restarts: Counter,
    held_up: Counter,
    seen: (AtomicU64, AtomicU64),
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hub");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint template, method, status and principal",
            requests.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint template",
            latency.clone(),
        );
        let published = Family::<RecordLabels, Counter>::default();
        registry.register("records_published", "Record versions published", published.clone());
        let reads = Family::<RecordLabels, Counter>::default();
        registry.register("records_read", "Records returned by reads and lookups", reads.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("delivery_attempts", "Delivery attempts by subscription and outcome", deliveries.clone());
        let backlog = Family::<BacklogLabels, Gauge>::default();
        registry.register("outbox_entries", "Outbox entries by subscription and state", backlog.clone());
        let checks = Family::<CheckLabels, Gauge>::default();
        registry.register("check_status", "Latest status per check (0 ok, 1 warn, 2 critical)", checks.clone());
        let inbound = Family::<InboundLabels, Counter>::default();
        registry.register("inbound_records", "Records offered by inbound connections, by outcome", inbound.clone());
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register("requests_shed", "Requests and connections refused before any handler ran, by reason (overloaded, rate_limited, connections, tls_refused)", shed.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register("access_refused", "Requests refused (403) and audited, by principal", refusals.clone());
        let cases = Family::<CaseLabels, Counter>::default();
        registry.register(
            "case_transitions",
            "Joint-case transitions committed, by case type and transition",
            cases.clone(),
        );
        let commits = Counter::default();
        registry.register("store_commits", "Durable commits (one fsync each)", commits.clone());
        let operations = Counter::default();
        registry.register("store_operations", "Operations carried by those commits (group commit)", operations.clone());
        let wal = WalGauges::default();
        registry.register("storage_wal_bytes", "Size of the SQLite write-ahead log file", wal.bytes.clone());
        registry.register(
            "storage_wal_limit_bytes",
            "The write-ahead log's bound ([storage] max_wal_mib)",
            wal.limit.clone(),
        );
        registry.register(
            "storage_wal_checkpoint_age_seconds",
            "Seconds since a checkpoint last copied the whole write-ahead log into the database",
            wal.checkpoint_age.clone(),
        );
        registry.register(
            "storage_wal_restarts",
            "Times the writer made the write-ahead log start over at its bound",
            wal.restarts.clone(),
        );
        registry.register(
            "storage_wal_held_up",
            "Restarts of the write-ahead log that readers held up past their wait",
            wal.held_up.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            published,
            reads,
            deliveries,
            backlog,
            checks,
            inbound,
            shed,
            refusals,
            cases,
            commits,
            operations,
            seen: (AtomicU64::new(0), AtomicU64::new(0)),
            wal,
        }
    }

    /// Counts a record an inbound connection offered.
    pub fn inbound(&self, connection: &str, outcome: &str) {
        let labels = InboundLabels { connection: connection.to_owned(), outcome: outcome.to_owned() };
        self.inbound.get_or_create(&labels).inc();
    }

    /// Counts a record returned to a reader.
    pub fn read(&self, department: &str, record_type: &str) {
        let labels = RecordLabels { department: department.to_owned(), record_type: record_type.to_owned() };
        self.reads.get_or_create(&labels).inc();
    }

    /// Brings the writer's totals into their counters.
    pub fn writer_totals(&self, commits: u64, operations: u64) {
        let dc = commits.saturating_sub(self.seen.0.swap(commits, Ordering::SeqCst));
        let dops = operations.saturating_sub(self.seen.1.swap(operations, Ordering::SeqCst));
        self.commits.inc_by(dc);
        self.operations.inc_by(dops);
    }

    /// Brings the write-ahead log's state into its gauges; `now_ms` dates the checkpoint's age.
    pub fn wal(&self, w: &crate::store::wal::WalStats, now_ms: i64) {
        let g = &self.wal;
        g.bytes.set(w.bytes as i64);
        g.limit.set(w.limit_bytes as i64);
        g.checkpoint_age.set((now_ms - w.last_complete_ms).max(0) as f64 / 1000.0);
        g.restarts.inc_by(w.restarts.saturating_sub(g.seen.0.swap(w.restarts, Ordering::SeqCst)));
        g.held_up.inc_by(w.held_up.saturating_sub(g.seen.1.swap(w.held_up, Ordering::SeqCst)));
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Media type of OpenMetrics, served to scrapers that ask for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Media type of the Prometheus text format 0.0.4, the default (what promtool checks).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics into the Prometheus text format 0.0.4: a counter family's `# HELP` and
/// `# TYPE` lines name its `_total` samples, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_in_their_metadata_and_no_eof() {
        let m = Metrics::new();
        m.published.get_or_create(&RecordLabels { department: "civil-affairs".into(), record_type: "t".into() }).inc();
        m.latency.get_or_create(&EndpointLabels { endpoint: "/livez".into() }).observe(0.01);
        let text = to_prometheus_text(&m.encode().unwrap());
        assert!(text.contains("# TYPE hub_records_published_total counter"), "{text}");
        assert!(text.contains("# HELP hub_records_published_total Record versions published."), "{text}");
        assert!(text.contains("hub_records_published_total{department=\"civil-affairs\",record_type=\"t\"} 1"));
        assert!(text.contains("# TYPE hub_http_request_duration_seconds histogram"));
        assert!(!text.contains("# EOF"));
    }
}
