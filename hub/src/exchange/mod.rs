//! The record's way below the API: a department's bytes become a durable, routed record version.
//! [`Exchange::prepare`] runs the pure steps ([`prepare`]: strict parse → schema and key →
//! canonical form and digest) and adds what needs the hub's keys and subscriptions (keyed subject
//! hashes, routes); [`Exchange::commit`] makes a group of versions durable in one store commit,
//! wakes the workers of their routes and emits a `RecordPublished` for each version created. The API, the inbound
//! connections and the synthetic probe all publish through here; nothing here knows HTTP, and
//! the owner check stays with the callers, which audit their refusals.

pub mod prepare;

use std::sync::Arc;

use crate::catalog::{Catalog, RecordType, Violation};
use crate::delivery::Delivery;
use crate::events::{Event, RecordPublished};
use crate::ledger::keys::HubKeys;
use crate::ledger::{Action, NewEntry};
use crate::metrics::Metrics;
use crate::routing::Routing;
use crate::store::{NewVersion, Published, Store, StoreError};

/// Why a record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The record type is not in the catalogue.
    #[error("there is no record type {0:?}")]
    UnknownType(String),
    /// The bytes are not JSON (the message names line and column, never content).
    #[error("{0}")]
    Malformed(String),
    /// A member name appears twice in one object.
    #[error("{message}")]
    Repeated {
        /// What is wrong, without the content.
        message: String,
        /// Its pointer.
        violation: Violation,
    },
    /// Every schema violation, each with its pointer.
    #[error("the record does not match the schema of its type")]
    Invalid(Vec<Violation>),
    /// The same Idempotency-Key came with another record.
    #[error("this Idempotency-Key was already used with a different body")]
    Conflict,
    /// The store did not take it (full, unreachable, shutting down): nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: logged by the caller, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The record's way, shared by every caller that publishes.
pub struct Exchange {
    catalog: Arc<Catalog>,
    keys: Arc<HubKeys>,
    routing: Arc<Routing>,
    delivery: Arc<Delivery>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Exchange {
    /// The exchange over the hub's parts.
    pub fn new(
        catalog: Arc<Catalog>,
        keys: Arc<HubKeys>,
        routing: Arc<Routing>,
        delivery: Arc<Delivery>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { catalog, keys, routing, delivery, store, metrics }
    }

    /// The record type `id`.
    pub fn record_type(&self, id: &str) -> Result<&RecordType, PublishError> {
        self.catalog.get(id).ok_or_else(|| PublishError::UnknownType(id.to_owned()))
    }

    /// The subscriptions a version of `record_type` with this content goes to (a replay asks).
    pub fn routes(&self, record_type: &str, doc: &serde_json::Value) -> Vec<String> {
        self.routing.routes(record_type, doc)
    }

    /// Validates one record's bytes and prepares its version, or names every problem.
    pub fn prepare(
        &self,
        t: &RecordType,
        publisher: &str,
        bytes: &[u8],
        idempotency: Option<String>,
    ) -> Result<NewVersion, PublishError> {
        self.prepare_doc(t, publisher, prepare::parse(bytes)?, idempotency)
    }

    /// As [`Exchange::prepare`], for a record already parsed (an inbound connection's mapped row).
    pub fn prepare_doc(
        &self,
        t: &RecordType,
        publisher: &str,
        doc: serde_json::Value,
        idempotency: Option<String>,
    ) -> Result<NewVersion, PublishError> {
        let c = prepare::canonical(t, doc)?;
        let subjects: Vec<String> = c.subjects.iter().map(|s| self.keys.subject_hash(s)).collect();
        // Only an Idempotency-Key needs the request's digest; most publishes carry none.
        let idempotency = idempotency.map(|k| (k, prepare::request_digest(&t.id, &c.canonical)));
        Ok(NewVersion {
            record_type: t.id.clone(),
            key: c.key.clone(),
            schema_version: t.schema_version,
            routes: self.routing.routes(&t.id, &c.doc),
            canonical: c.canonical,
            digest: c.digest,
            publisher: publisher.to_owned(),
            subjects: subjects.clone(),
            idempotency,
            audit: NewEntry {
                record_type: Some(t.id.clone()),
                record_key: Some(c.key),
                subjects,
                ..NewEntry::new(publisher, Action::Publish, "ok")
            },
        })
    }

    /// Stores `versions` in one durable commit (results in input order), then counts each version
    /// created and wakes the workers of its routes. Receipts exist only after the commit.
    pub async fn commit(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let labels: Vec<(String, Vec<String>)> =
            versions.iter().map(|v| (v.publisher.clone(), v.routes.clone())).collect();
        let outcomes = self.store.publish(versions).await?;
        // A replayed or conflicting version routed nothing new: only created ones wake workers.
        let mut woken = Vec::new();
        for ((publisher, routes), outcome) in labels.into_iter().zip(&outcomes) {
            if let Ok(Published::Created(r)) = outcome {
                self.counted(&publisher, r);
                woken.extend(routes);
            }
        }
        self.wake(woken);
        Ok(outcomes)
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a version created (a publish, or a record that completed a case step).
    pub fn counted(&self, publisher: &str, r: &crate::store::Receipt) {
        RecordPublished {
            department: publisher,
            record_type: &r.record_type,
            version: r.version,
            audit_seq: r.audit_seq,
        }
        .emit(&self.metrics);
    }

    /// Wakes the workers of these subscriptions: committed versions wait for them.
    pub fn wake(&self, mut routes: Vec<String>) {
        routes.sort();
        routes.dedup();
        self.delivery.notify(&routes);
    }

    /// Prepares and commits one record.
    pub async fn publish(
        &self,
        t: &RecordType,
        publisher: &str,
        bytes: &[u8],
        idempotency: Option<String>,
    ) -> Result<Published, PublishError> {
        let version = self.prepare(t, publisher, bytes, idempotency)?;
        match self.commit(vec![version]).await?.pop() {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.into()),
            None => Err(PublishError::Internal("the store returned no outcome".into())),
        }
    }
}
