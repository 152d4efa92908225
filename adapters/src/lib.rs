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
//! - `testkit` (feature `testkit`): the outbound conformance suite every push adapter runs.
//!
//! Each adapter kind is a folder with a config struct that validates without I/O and a `build`
//! that does the I/O; [`registry`] is the one plain list of kinds.

pub mod envelope;
pub mod feed;
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
}

/// Where an inbound adapter hands the records it takes from a department system.
#[async_trait]
pub trait RecordSink: Send + Sync {
    /// Publishes one record; `Ok` only once the hub has made it durable. The idempotency key
    /// lets an adapter that crashed between publish and upstream acknowledgement publish again
    /// without creating a second version.
    async fn publish(&self, record_type: &str, idempotency_key: &str, body: Vec<u8>) -> Result<String, String>;
}

/// An inbound adapter: takes records from a department system (a folder, a table, a queue) and
/// acknowledges upstream only after the sink confirmed durability. Kinds arrive with the
/// front-end exchange adapters issue (#5).
#[async_trait]
pub trait Inbound: Send {
    /// Runs until `shutdown` resolves.
    async fn run(
        &mut self,
        sink: &dyn RecordSink,
        shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Result<(), AdapterError>;
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

/// One adapter kind.
pub struct Kind {
    /// The `adapter = "..."` name in the config.
    pub name: &'static str,
    /// Push or pull.
    pub direction: Direction,
    /// One line for operators.
    pub description: &'static str,
    /// Checks settings without I/O.
    pub validate: fn(&toml::Table) -> Result<(), AdapterError>,
    /// Builds the running push adapter (`None` for pull kinds).
    pub build: Option<BuildFn>,
}

/// Every adapter kind, in one plain list.
pub fn registry() -> Vec<Kind> {
    vec![webhook::kind(), feed::kind()]
}

/// The kind named `name`.
pub fn kind(name: &str) -> Result<Kind, AdapterError> {
    registry().into_iter().find(|k| k.name == name).ok_or_else(|| AdapterError::UnknownKind(name.to_owned()))
}

/// Deserializes adapter settings strictly (unknown keys are errors).
pub fn settings<T: serde::de::DeserializeOwned>(table: &toml::Table) -> Result<T, AdapterError> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| AdapterError::Config(e.message().to_owned()))
}
