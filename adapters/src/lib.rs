//! # The adapter boundary
//!
//! How the hub reaches department systems that do not call its API. This crate knows nothing of
//! storage, grants or retries: the hub hands an outbound adapter an [`Envelope`] (a CloudEvents 1.0
//! event, already projected to the subscriber's grant) and gets an [`Outcome`] back; the hub's
//! delivery engine owns backoff, ordering, dead letters, timeouts and the audit.
//!
//! # Layout
//! - [`envelope`]: the CloudEvents envelope, fields exactly as CONTRACT.md says.
//! - [`webhook`]: signed HTTP(S) POST (Standard Webhooks).
//! - [`feed`]: the pull feed's settings (the hub serves the feed itself).
//! - [`file_drop`]: the exchange folder of a front-end processor (NDJSON/CSV, UTF-8 or GB18030).
//! - [`sql_table`]: a staging table and an exchange table in the department's PostgreSQL or MySQL.
//! - [`amqp`]: a RabbitMQ queue in, an exchange out, with publisher confirms and manual acks.
//! - `testkit` (feature `testkit`): the outbound and inbound conformance suites.
//!
//! Each adapter kind is a folder with a config struct that validates without I/O and a `build`
//! that does the I/O; [`registry`] is the one plain list of kinds.

pub mod amqp;
pub mod envelope;
pub mod feed;
pub mod file_drop;
mod fsync;
pub mod sql_table;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
pub use envelope::{Envelope, EnvelopeFields};

/// What became of one delivery attempt. The engine decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver confirmed it has the event.
    Delivered,
    /// A passing failure (timeout, connection, 408/429/5xx): try again, not before `retry_after`.
    Retry {
        /// Why, without payload data.
        reason: String,
        /// The receiver's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// The receiver will never accept this event (4xx): dead-letter it.
    Reject {
        /// Why.
        reason: String,
    },
    /// The receiver says the endpoint is gone for good (410): stop the subscription.
    Gone {
        /// Why.
        reason: String,
    },
}

/// Adapter configuration and construction failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// Settings do not validate.
    #[error("{0}")]
    Config(String),
    /// Building the running part failed (a file, a secret, a TLS setting).
    #[error("{0}")]
    Build(String),
    /// No adapter of that kind.
    #[error("unknown adapter kind {0:?}")]
    UnknownKind(String),
}

/// A push adapter: delivers envelopes and says what happened. It never sleeps or retries.
#[async_trait]
pub trait Outbound: Send + Sync {
    /// Delivers a batch in order (at most [`Outbound::max_batch`] envelopes). `Delivered` means
    /// the receiver confirmed every envelope of the batch.
    async fn deliver(&self, batch: &[Envelope]) -> Outcome;
    /// Checks the receiver the way a real delivery would reach it, with no record data.
    async fn health(&self) -> Result<(), String>;
    /// Most envelopes per call.
    fn max_batch(&self) -> usize {
        1
    }
    /// Which of these delivered events the receiver still holds, read back from it (an exchange
    /// folder's manifests, an exchange table's `event_id` column). `None` where a receiver cannot
    /// be read back (a webhook, a broker): there only the department can say what it holds.
    async fn holdings(&self, _ids: &[String]) -> Option<Result<Holdings, String>> {
        None
    }
}

/// What a receiver holds of the events asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// The ids asked about that the receiver holds intact.
    pub held: std::collections::HashSet<String>,
    /// Files or rows that name events but cannot be trusted (a data file gone, or not what its
    /// manifest says): their events count as not held.
    pub damaged: Vec<String>,
}

/// The hub's answer to a record an inbound adapter offered.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkError {
    /// The record will never be accepted as it is (schema, key, idempotency conflict): the adapter
    /// reports the problem upstream and moves on. The hub has already logged the rejection.
    Rejected {
        /// The RFC 9457 problem, with JSON pointers to the offending fields (IDs masked).
        problem: serde_json::Value,
    },
    /// The hub cannot take records now (store unavailable, shutting down): leave the record
    /// upstream, unacknowledged, and offer it again later.
    Unavailable(String),
}

impl SinkError {
    /// One line for logs and result columns: the problem's title and detail.
    pub fn summary(&self) -> String {
        match self {
            SinkError::Rejected { problem } => {
                let title = problem["title"].as_str().unwrap_or("rejected");
                match problem["detail"].as_str() {
                    Some(d) => format!("{title}: {d}"),
                    None => title.to_owned(),
                }
            }
            SinkError::Unavailable(why) => format!("hub unavailable: {why}"),
        }
    }
}

/// Where an inbound adapter hands the records it takes from a department system. The hub's sink
/// is bound to one inbound connection: its department, record type and field mapping.
#[async_trait]
pub trait RecordSink: Send + Sync {
    /// Publishes one record in the department's own shape (JSON bytes); `Ok` carries the hub's
    /// receipt and comes only once the record is durable. The idempotency key (unique within the
    /// connection, e.g. file name and line) lets an adapter that crashed between publish and
    /// upstream acknowledgement offer the record again without creating a second version.
    async fn publish(&self, idempotency_key: &str, body: &[u8]) -> Result<serde_json::Value, SinkError>;

    /// Publishes several records in one durable commit where the hub can; results in order.
    async fn publish_many(&self, items: &[(String, Vec<u8>)]) -> Vec<Result<serde_json::Value, SinkError>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, body) in items {
            out.push(self.publish(key, body).await);
        }
        out
    }
}

/// An inbound adapter: takes records from a department system (a folder, a table, a queue) and
/// acknowledges upstream only after the sink confirmed durability.
#[async_trait]
pub trait Inbound: Send + Sync {
    /// Runs until `shutdown` is cancelled, then returns after finishing (or abandoning, unacked)
    /// the record in hand. Errors that outlive a retry (a missing folder) end the run.
    async fn run(
        &self,
        sink: std::sync::Arc<dyn RecordSink>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), AdapterError>;
    /// Checks the department side (folder writable, database or broker reachable).
    async fn health(&self) -> Result<(), String>;
}

/// How an adapter kind is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The hub pushes envelopes ([`Outbound`]).
    Push,
    /// The department pulls them from the hub's feed API.
    Pull,
}

/// What the hub gives an adapter to build with: no environment reading deep in adapter code.
pub struct BuildContext<'a> {
    /// Looks up a secret by the name written in the config (`secret_env`).
    pub secret: &'a dyn Fn(&str) -> Option<String>,
    /// Resolves a path written in the config against the config's folder.
    pub resolve: &'a dyn Fn(&str) -> PathBuf,
    /// The hub's own client certificate and key (PEM), for receivers that ask for mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
}

/// Builds a running push adapter from its settings.
pub type BuildFn = fn(&toml::Table, &BuildContext<'_>) -> Result<Box<dyn Outbound>, AdapterError>;

/// Checks settings without I/O.
pub type ValidateFn = fn(&toml::Table) -> Result<(), AdapterError>;

/// Builds a running inbound adapter from its settings.
pub type BuildInboundFn = fn(&toml::Table, &BuildContext<'_>) -> Result<Box<dyn Inbound>, AdapterError>;

/// One adapter kind.
pub struct Kind {
    /// The `adapter = "..."` name in the config.
    pub name: &'static str,
    /// Push or pull.
    pub direction: Direction,
    /// One line for operators.
    pub description: &'static str,
    /// Checks settings without I/O.
    pub validate: ValidateFn,
    /// Builds the running push adapter (`None` for pull kinds).
    pub build: Option<BuildFn>,
    /// Checks inbound settings without I/O (`None`: the kind takes no records in).
    pub validate_inbound: Option<ValidateFn>,
    /// Builds the running inbound adapter.
    pub build_inbound: Option<BuildInboundFn>,
}

/// Every adapter kind, in one plain list.
pub fn registry() -> Vec<Kind> {
    vec![webhook::kind(), feed::kind(), file_drop::kind(), sql_table::kind(), amqp::kind()]
}

/// The kind named `name`.
pub fn kind(name: &str) -> Result<Kind, AdapterError> {
    registry().into_iter().find(|k| k.name == name).ok_or_else(|| AdapterError::UnknownKind(name.to_owned()))
}

/// Checks that `name` is a plain SQL identifier (optionally schema-qualified), so it can be put
/// into a statement: table and column names come from the config and from field mappings.
pub fn is_sql_identifier(name: &str) -> bool {
    let part = |p: &str| {
        let mut b = p.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && p.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| part(p))
}

/// Whether `name` can name an environment variable in the config (`A-Z`, `0-9`, `_`).
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A connection URL given in the settings directly (`url`, for trust-authenticated development
/// databases) or, as production does, through an environment variable (`url_env`).
pub fn connection_url(
    url: &Option<String>,
    url_env: &Option<String>,
    ctx: &BuildContext<'_>,
) -> Result<String, AdapterError> {
    match (url, url_env) {
        (Some(u), None) => Ok(u.clone()),
        (None, Some(env)) => {
            (ctx.secret)(env).ok_or_else(|| AdapterError::Build(format!("environment variable {env} is not set")))
        }
        _ => Err(AdapterError::Config("give exactly one of url and url_env".into())),
    }
}

/// Deserializes adapter settings strictly (unknown keys are errors).
pub fn settings<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, AdapterError> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| AdapterError::Config(e.message().to_owned()))
}
