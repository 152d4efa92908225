//! An outbox entry becomes what its subscriber may see: the version projected to the grant as of
//! now (then the subscription's own mapping), wrapped in a CloudEvents envelope; and the audit
//! entry that records who received it.

use adapters::{Envelope, EnvelopeFields};
use serde_json::json;

use super::{Delivery, Subscription, NOTICE_TYPE, PROBE_SUBSCRIPTION, PROBE_TYPE};
use crate::catalog::pointer::project;
use crate::ledger::{Action, NewEntry};
use crate::policy::{Access, Principal};
use crate::store::{OutboxRow, RecordVersion, StoreError};

impl Delivery {
    /// The envelope for an outbox entry, projected to the subscriber's grant as of now.
    /// `Ok(Err(reason))` when it can no longer be delivered at all.
    pub async fn envelope(
        &self,
        sub: &Subscription,
        row: &OutboxRow,
    ) -> Result<Result<(Envelope, RecordVersion), String>, StoreError> {
        let Some(rec) = self.store.version(&row.record_type, &row.key, row.version).await? else {
            return Ok(Err("the record version no longer exists".into()));
        };
        if row.record_type == PROBE_TYPE && sub.name == PROBE_SUBSCRIPTION {
            let envelope = Envelope::new(EnvelopeFields {
                id: row.event_id.clone(),
                source: format!("urn:hub:{}:probe", self.hub),
                ty: "hub.probe.v1".into(),
                subject: format!("{PROBE_TYPE}/{}", rec.key),
                time: chrono::Utc::now(),
                data: rec.payload.clone(),
                record_version: rec.version,
                audit_seq: rec.audit_seq,
                supersedes: None,
                traceparent: rec.trace.clone(),
            });
            return Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()));
        }
        if row.record_type == crate::cases::CASE_EVENT_TYPE {
            // A case event carries what its receiver may see, made when the transition committed.
            let kind = rec.payload["kind"].as_str().unwrap_or("event").to_owned();
            let case = rec.payload["id"].as_str().unwrap_or_default().to_owned();
            let data = match &sub.mapping {
                None => rec.payload.clone(),
                Some(m) => match m.map(&rec.payload) {
                    Ok(mapped) => mapped,
                    Err(e) => return Ok(Err(format!("not delivered: {e}"))),
                },
            };
            let envelope = Envelope::new(EnvelopeFields {
                id: row.event_id.clone(),
                source: format!("urn:hub:{}:cases", self.hub),
                ty: format!("hub.case.{kind}"),
                subject: format!("cases/{case}"),
                time: received(&rec.received_at),
                data,
                record_version: rec.version,
                audit_seq: rec.audit_seq,
                supersedes: None,
                traceparent: rec.trace.clone(),
            });
            return Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()));
        }
        if row.record_type == NOTICE_TYPE {
            // A notice carries what its department may see, made when the change committed.
            let n = &rec.payload;
            let text = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
            let envelope = Envelope::new(EnvelopeFields {
                id: row.event_id.clone(),
                source: format!("urn:hub:{}:department:{}", self.hub, text("owner")),
                ty: format!("hub.record.{}", text("kind")),
                subject: format!("{}/{}", text("record_type"), text("key")),
                time: received(&rec.received_at),
                data: json!({
                    "record_type": n["record_type"], "key": n["key"], "version": n["version"],
                    "supersedes": n["supersedes"], "purpose": n["purpose"], "data": n.get("data"),
                    "reason": n.get("reason"),
                }),
                record_version: n["version"].as_u64().unwrap_or(rec.version),
                audit_seq: rec.audit_seq,
                supersedes: n["supersedes"].as_u64(),
                traceparent: rec.trace.clone(),
            });
            return Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()));
        }
        let Some(t) = self.catalog.get(&row.record_type) else {
            return Ok(Err("the record type is no longer configured".into()));
        };
        let today = self.today();
        let who = Principal::Department(sub.department.clone());
        let data = match self.grants.read_access(t, &who, Some(&sub.purpose), today) {
            Ok(Access::Full) => rec.payload.clone(),
            Ok(Access::Fields(fields)) => project(&rec.payload, &fields),
            Err(denied) => return Ok(Err(format!("not delivered: {denied}"))),
        };
        // The department's own shape, after the projection: a mapping never sees ungranted fields.
        let data = match &sub.mapping {
            None => data,
            Some(m) => match m.map(&data) {
                Ok(mapped) => mapped,
                Err(e) => return Ok(Err(format!("not delivered: {e}"))),
            },
        };
        let time = received(&rec.received_at);
        let envelope = Envelope::new(EnvelopeFields {
            id: row.event_id.clone(),
            source: format!("urn:hub:{}:department:{}", self.hub, t.owner),
            ty: format!("hub.record.{}.v{}", t.id, rec.schema_version),
            subject: format!("{}/{}", t.id, rec.key),
            time,
            data,
            record_version: rec.version,
            audit_seq: rec.audit_seq,
            supersedes: rec.version.checked_sub(1).filter(|v| *v > 0),
            traceparent: rec.trace.clone(),
        });
        Ok(envelope.map(|e| (e, rec)).map_err(|e| e.to_string()))
    }

    /// The audit entry of a delivery (or dead letter) to `sub`: the subscriber is the actor, so a
    /// citizen's access log shows who received their data.
    pub fn receipt_entry(
        sub: &Subscription,
        rec: Option<&RecordVersion>,
        row: &OutboxRow,
        action: Action,
        outcome: &str,
        reason: Option<&str>,
    ) -> NewEntry {
        let mut detail = json!({
            "subscription": sub.name, "event_id": row.event_id, "attempts": row.attempts + 1, "reason": reason,
        });
        // A notice is entered under the record it is about, so the person's access log and the
        // next change of the record find who was told.
        let notice = rec.filter(|r| r.record_type == NOTICE_TYPE).map(|r| &r.payload);
        let (record_type, key, version, purpose) = match notice {
            Some(n) => {
                detail["notice"] = n["kind"].clone();
                (
                    n["record_type"].as_str().unwrap_or_default().to_owned(),
                    n["key"].as_str().unwrap_or_default().to_owned(),
                    n["version"].as_u64().unwrap_or(row.version),
                    n["purpose"].as_str().unwrap_or(&sub.purpose).to_owned(),
                )
            }
            None => (row.record_type.clone(), row.key.clone(), row.version, sub.purpose.clone()),
        };
        NewEntry {
            record_type: Some(record_type),
            record_key: Some(key),
            record_version: Some(version),
            subjects: rec.map(|r| r.subjects.clone()).unwrap_or_default(),
            purpose: Some(purpose),
            detail: Some(detail),
            ..NewEntry::new(sub.department.clone(), action, outcome)
        }
    }
}

/// When a version was accepted (now, if the stored time cannot be read).
fn received(at: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now())
}
