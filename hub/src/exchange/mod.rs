//! The record's way below the API: a department's bytes become a durable, routed record version.
//! [`Exchange::prepare`] runs the pure steps ([`prepare`]: strict parse → schema and key →
//! canonical form and digest) and adds what needs the hub's keys and subscriptions (keyed subject
//! hashes, routes); [`Exchange::commit`] makes a group of versions durable in one store commit,
//! wakes the workers of their routes and emits a `RecordPublished` for each version created. The API, the inbound
//! connections and the synthetic probe all publish through here; nothing here knows HTTP, and
//! the owner check stays with the callers, which audit their refusals. A version of a record that
//! exists already is a correction, and a recall is the owner's withdrawal: each commits with the
//! notices it sends to the departments that had the record ([`notices`]).

pub mod notices;
pub mod prepare;

use std::sync::Arc;

use serde_json::json;

use crate::catalog::{Catalog, RecordType, Violation};
use crate::delivery::Delivery;
use crate::events::{Event, RecordPublished};
use crate::ledger::keys::HubKeys;
use crate::ledger::{Action, NewEntry};
use crate::metrics::Metrics;
use crate::routing::Routing;
use crate::store::{Linked, NewVersion, Published, RecordVersion, Store, StoreError};

/// How often a change is computed again when its record moved on meanwhile.
const ATTEMPTS: usize = 8;

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
    /// There is no such record to change.
    #[error("there is no {0} record with this key")]
    NoRecord(String),
    /// The record is withdrawn already.
    #[error("this {0} record is already revoked; its owner may publish it again as a new version")]
    AlreadyRevoked(String),
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

    /// The catalogue.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
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
        let _span =
            tracing::info_span!(target: crate::telemetry::TARGET, "validate", hub.record_type = %t.id).entered();
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
            // A correction owes notices; the write finds out whether this is one.
            first_only: true,
            audit: NewEntry {
                record_type: Some(t.id.clone()),
                record_key: Some(c.key),
                subjects,
                ..NewEntry::new(publisher, Action::Publish, "ok")
            },
            // The caller sets it: it knows the request the record came with.
            trace: None,
        })
    }

    /// Stores `versions` (results in input order), then counts each version created and wakes
    /// the workers of its routes. Receipts exist only after the commit. A new record goes in one
    /// durable group commit with the others; a new version of a record someone had commits with
    /// the notices its correction sends, or not at all.
    pub async fn commit(&self, versions: Vec<NewVersion>) -> Result<Vec<Result<Published, StoreError>>, StoreError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        // Every version goes as its record's first; the ones that find a version stored come
        // back untouched (NotFirst) and are corrections, made with their notices one by one.
        let again: Vec<Option<NewVersion>> =
            versions.iter().map(|v| v.first_only.then(|| NewVersion { first_only: false, ..v.clone() })).collect();
        let labels: Vec<(String, Vec<String>)> =
            versions.iter().map(|v| (v.publisher.clone(), v.routes.clone())).collect();
        let span = tracing::info_span!(target: crate::telemetry::TARGET, "commit", hub.versions = versions.len());
        let stored = tracing::Instrument::instrument(self.store.publish(versions), span).await?;
        let mut woken = Vec::new();
        let mut outcomes = Vec::with_capacity(stored.len());
        let mut changed = Vec::new();
        for (i, ((outcome, (publisher, routes)), again)) in stored.into_iter().zip(labels).zip(again).enumerate() {
            match (outcome, again) {
                (Err(StoreError::NotFirst), Some(v)) => {
                    changed.push((i, v));
                    outcomes.push(Err(StoreError::NotFirst));
                }
                (outcome, _) => {
                    // A replayed or conflicting version routed nothing new: only created ones
                    // wake workers.
                    if let Ok(Published::Created(r)) = &outcome {
                        self.counted(&publisher, r);
                        woken.extend(routes);
                    }
                    outcomes.push(outcome);
                }
            }
        }
        self.wake(woken);
        for (i, v) in changed {
            outcomes[i] = self.correct(v).await;
        }
        Ok(outcomes)
    }

    /// A new version of a record that exists, with the notices its correction sends to the
    /// departments that had an earlier one ([`notices`]), in one commit.
    async fn correct(&self, v: NewVersion) -> Result<Published, StoreError> {
        let t = self.catalog.get(&v.record_type).ok_or_else(|| StoreError::Corrupt("no record type".into()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&v.canonical).map_err(|e| StoreError::Corrupt(format!("canonical form: {e}")))?;
        for _ in 0..ATTEMPTS {
            let prev = self.store.latest(&v.record_type, &v.key).await?;
            let notices = match &prev {
                Some(prev) => {
                    self.notices(t, prev, notices::Change::Corrected(&doc), &v.routes, self.delivery.today()).await?
                }
                None => Vec::new(),
            };
            // A notice is part of the correction's way: its deliveries join the same trace.
            let notices = notices.into_iter().map(|n| NewVersion { trace: v.trace.clone(), ..n }).collect();
            match self.linked(v.clone(), prev.as_ref(), notices).await? {
                Some(p) => return Ok(p),
                None => continue,
            }
        }
        // It kept changing under us: nothing of this one was stored, and it may be sent again.
        Err(StoreError::Aborted)
    }

    /// Commits `v` with `notices` if its record is still at `prev`; `None` when it moved on.
    async fn linked(
        &self,
        v: NewVersion,
        prev: Option<&RecordVersion>,
        notices: Vec<NewVersion>,
    ) -> Result<Option<Published>, StoreError> {
        let publisher = v.publisher.clone();
        let mut routes: Vec<String> = v.routes.clone();
        routes.extend(notices.iter().flat_map(|n| n.routes.iter().cloned()));
        let told = notices.len();
        let versions: Vec<NewVersion> = std::iter::once(v).chain(notices).collect();
        match self.store.publish_linked(versions, prev.map(|p| p.version)).await? {
            Linked::Done(receipts) => {
                let Some(first) = receipts.first() else {
                    return Err(StoreError::Corrupt("a linked write gave no receipt".into()));
                };
                self.counted(&publisher, first);
                if told > 0 {
                    tracing::info!(record_type = %first.record_type, version = first.version, notices = told,
                        "departments that had the record are told of its change");
                }
                self.wake(routes);
                Ok(Some(Published::Created(first.clone())))
            }
            Linked::Replayed(r) => Ok(Some(Published::Replayed(r))),
            Linked::Conflict => Ok(Some(Published::Conflict)),
            Linked::Stale => Ok(None),
        }
    }

    /// The owner withdraws a record: a new version in the state revoked (never a deletion), and
    /// a notice to every department that had it, in one commit.
    pub async fn revoke(
        &self,
        t: &RecordType,
        owner: &str,
        key: &str,
        reason: &str,
        idempotency: Option<String>,
    ) -> Result<Published, PublishError> {
        // A key is bound to what was asked (the record and the reason), not to the version the
        // recall found, so the same request sent again is answered as the first time.
        let request = prepare::request_digest(&format!("revoke:{}", t.id), &format!("{key}\n{reason}"));
        for _ in 0..ATTEMPTS {
            let Some(prev) = self.store.latest(&t.id, key).await? else {
                return Err(PublishError::NoRecord(t.id.clone()));
            };
            if prev.schema_version == notices::REVOKED {
                if let Some(k) = &idempotency {
                    match self.store.idempotent(owner, k).await? {
                        Some((seen, receipt)) if seen == request => return Ok(Published::Replayed(receipt)),
                        Some(_) => return Ok(Published::Conflict),
                        None => {}
                    }
                }
                return Err(PublishError::AlreadyRevoked(t.id.clone()));
            }
            let payload = json!({ "revoked": { "reason": reason, "version": prev.version } });
            let canonical = serde_jcs::to_string(&payload).map_err(|e| PublishError::Internal(e.to_string()))?;
            let version = NewVersion {
                record_type: t.id.clone(),
                key: key.to_owned(),
                schema_version: notices::REVOKED,
                digest: prepare::digest(&canonical),
                idempotency: idempotency.clone().map(|k| (k, request.clone())),
                canonical,
                publisher: owner.to_owned(),
                subjects: prev.subjects.clone(),
                routes: Vec::new(),
                first_only: false,
                audit: NewEntry {
                    record_type: Some(t.id.clone()),
                    record_key: Some(key.to_owned()),
                    subjects: prev.subjects.clone(),
                    detail: Some(json!({ "revokes": prev.version })),
                    ..NewEntry::new(owner, Action::Revoke, "ok")
                },
                trace: None,
            };
            let notices = self.notices(t, &prev, notices::Change::Revoked(reason), &[], self.delivery.today()).await?;
            if let Some(p) = self.linked(version, Some(&prev), notices).await? {
                return Ok(p);
            }
        }
        // It kept changing under us: nothing of this one was stored, and it may be sent again.
        Err(StoreError::Aborted.into())
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

    /// Commits one prepared record.
    pub async fn publish(&self, version: NewVersion) -> Result<Published, PublishError> {
        match self.commit(vec![version]).await?.pop() {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.into()),
            None => Err(PublishError::Internal("the store returned no outcome".into())),
        }
    }
}
