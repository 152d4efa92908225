//! The record's way in and out: `[delivery]` (retry and concurrency policy),
//! `[[subscriptions]]` (push and feed) and `[[inbound]]` connections.

use serde::Deserialize;
use toml::Spanned;

/// `[delivery]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// Attempts before an event goes to the dead letters.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Age (hours) after which an undelivered event goes to the dead letters.
    #[serde(default = "default_max_age")]
    pub max_age_hours: u64,
    /// First retry delay (ms); it doubles per consecutive failure, with jitter.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay (ms).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Deliveries in flight per subscription.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline of one attempt (s), on top of the adapter's own timeout.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_secs: u64,
    /// How long a claimed entry stays this node's (s); longer than an attempt. Another node takes
    /// over the entries of a node that died once their lease runs out. Default: the attempt
    /// deadline plus 30 s.
    #[serde(default)]
    pub lease_secs: Option<u64>,
    /// On a shared (PostgreSQL) store, how often an idle worker looks for entries other nodes
    /// routed or left behind (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
}

impl DeliverySection {
    /// The lease of a claim.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs.unwrap_or(self.attempt_timeout_secs + 30))
    }
}

fn default_poll() -> u64 {
    1000
}

fn default_attempts() -> u32 {
    20
}
fn default_max_age() -> u64 {
    72
}
fn default_backoff_initial() -> u64 {
    1000
}
fn default_backoff_max() -> u64 {
    300_000
}
fn default_concurrency() -> usize {
    4
}
fn default_attempt_timeout() -> u64 {
    30
}

impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            max_age_hours: default_max_age(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            concurrency: default_concurrency(),
            attempt_timeout_secs: default_attempt_timeout(),
            lease_secs: None,
            poll_ms: default_poll(),
        }
    }
}

/// `[[subscriptions]]`: a department receives new versions of a record type for a purpose, through
/// an adapter. What it receives is projected exactly like a read for that purpose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Stable name (kebab-case), used in URLs and metrics.
    pub name: Spanned<String>,
    /// The receiving department.
    pub department: Spanned<String>,
    /// The record type it receives.
    pub record_type: Spanned<String>,
    /// The purpose; the department needs a grant for it (or the type is shared unconditionally).
    pub purpose: Spanned<String>,
    /// Optional jq filter; the record is sent when its first output is truthy.
    #[serde(default)]
    pub filter: Option<Spanned<String>>,
    /// Adapter kind (`webhook`, `feed`, ...).
    pub adapter: Spanned<String>,
    /// The adapter's own settings (see its documentation).
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// Optional jq program from the record (projected to the grant) to the department's own
    /// shape, e.g. `{nsrsbh: .uscc, nsrmc: .name}` for State Tax's exchange table.
    #[serde(default)]
    pub mapping: Option<Spanned<String>>,
}

/// `[[inbound]]`: a department system the hub takes records from (a folder, a staging table,
/// a queue). Records arrive as the department publishing them, and only the owner of the record
/// type may have one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Stable name (kebab-case), used in idempotency keys, logs and metrics.
    pub name: Spanned<String>,
    /// The publishing department.
    pub department: Spanned<String>,
    /// The record type it publishes.
    pub record_type: Spanned<String>,
    /// Adapter kind (`file_drop`, `sql_table`, `amqp`).
    pub adapter: Spanned<String>,
    /// The adapter's inbound settings.
    #[serde(default)]
    pub settings: Option<Spanned<toml::Table>>,
    /// Optional jq program from the department's shape to the record type's.
    #[serde(default)]
    pub mapping: Option<Spanned<String>>,
    /// A sample record in the department's shape (a JSON file, relative to this config): at load
    /// the mapping runs on it and its output must validate against the record type's schema.
    #[serde(default)]
    pub mapping_example: Option<Spanned<String>>,
    /// Optional jq program from the department's record (before the mapping) to the joint-case
    /// step it completes, `"CASE/STEP"`, or `null` for a record that completes none: the
    /// connection's equivalent of the `Hub-Case-Step` header.
    #[serde(default)]
    pub case_step: Option<Spanned<String>>,
}
