//! # The Conghua Data Exchange Hub
//!
//! Department systems publish the records they own; the hub validates them against JSON Schemas,
//! stores them durably, lets authorised departments read exactly the fields their purpose allows,
//! and keeps a tamper-evident audit chain of every publish, read and refusal.
//!
//! # Layout
//! - [`config`]: the TOML configuration by section (`sections`, `parties`, `delivery`,
//!   `maintenance`), the typed check kinds (`config::checks`), and its checks (`validate`), every
//!   problem with file and line.
//! - [`catalog`]: record types, compiled schemas, check-digit formats, pointers and projection.
//! - [`policy`]: principals (certificate CN or token) and the read policy (grants, sharing).
//! - [`ledger`]: the audit chain: entries, digests, keyed subject hashes, signed checkpoints.
//! - [`exchange`]: the record's way below the API: prepare (schema, canonical digest, subject
//!   hashes, routes) → one durable commit → wake the routes' workers → emit. The API, the inbound
//!   connections, the synthetic probe and the fuzz targets all publish through it.
//! - [`routing`]: the routing table (record type → subscriptions, jq filters) and the jq programs.
//! - [`delivery`]: the engine (`mod.rs`), a worker per push subscription (`worker`), the one
//!   attempt path for one or many envelopes (`attempt`), projection to the grant (`envelope`) and
//!   `backoff`; [`probe`]: the synthetic probe's loopback receiver.
//! - [`inbound`]: connections that take records in (folders, staging tables, queues) through the
//!   exchange.
//! - [`events`]: one struct per occurrence that emits its log line and metric together;
//!   [`metrics`]: the Prometheus registry.
//! - [`problem`]: every way a request is refused, with its RFC 9457 status, type and body.
//! - [`store`]: the `Store` trait, its SQLite implementation with a group-commit writer and a
//!   bounded write-ahead log (`store::wal`), and the PostgreSQL implementation.
//! - [`checks`]: one file per check kind of the scheduled O&M checks, `checks::build` their
//!   registry, and the store's history and alerting.
//! - [`pki`]: the development PKI and the rustls server configuration.
//! - [`api`]: the HTTP API: a router per feature, problem+json extractors, problems sent.
//! - [`server`]: the TLS accept loop and graceful shutdown.
//! - [`cli`]: the `hub` command line (the binary is a thin wrapper around it): serve, admin
//!   commands, the development PKI, remote operator commands. [`opsctl`] is its HTTP client.
//! - [`bench`], [`report`], [`openapi`]: `hub bench`, the signed SLA report, the OpenAPI document.
//! - [`mask`]: masking of resident IDs in logs and error bodies; [`telemetry`]: OTLP traces and
//!   the W3C trace context a record carries into its deliveries.
//!
//! Dependencies point one way: `api → exchange → catalog, routing, delivery, store → ledger`;
//! nothing below `api` knows about HTTP (`problem` is plain data the API sends).

pub mod api;
pub mod bench;
pub mod cases;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod events;
pub mod exchange;
pub mod inbound;
pub mod ledger;
pub mod mask;
pub mod metrics;
pub mod openapi;
pub mod opsctl;
pub mod pki;
pub mod policy;
pub mod probe;
pub mod problem;
pub mod report;
pub mod routing;
pub mod server;
pub mod services;
pub mod store;
pub mod telemetry;

use std::path::Path;

pub use catalog::Catalog;
pub use config::{Config, ConfigError};

/// Loads a config and builds its catalogue, reporting every problem of both at once (a broken
/// grant does not hide a field missing from a schema).
pub fn load(path: &Path) -> Result<(Config, Catalog), ConfigError> {
    let config = Config::read(path)?;
    let checked = config.check();
    match Catalog::build(&config) {
        Ok(catalog) => checked.map(|()| (config, catalog)),
        Err(e) => Err(ConfigError::merge(checked, Err(e)).err().unwrap_or(ConfigError::Invalid(Vec::new()))),
    }
}
