//! The delivery envelope: a CloudEvents 1.0 event in structured JSON mode, with the fields
//! CONTRACT.md names (`id` stable per record version and subscription, `source`, `type`,
//! `subject`, `time`, `data`, and the extensions `recordversion` and `auditseq`).

use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};

use crate::AdapterError;

/// Media type of a structured CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// Media type of a CloudEvents JSON batch: an array of structured events.
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// What the hub knows when it builds an envelope.
pub struct EnvelopeFields {
    /// Stable per record version and subscription, so receivers can drop duplicates.
    pub id: String,
    /// `urn:hub:HUB:department:OWNER`.
    pub source: String,
    /// `hub.record.TYPE.vSCHEMA_VERSION`.
    pub ty: String,
    /// `TYPE/KEY`.
    pub subject: String,
    /// When the record version was accepted.
    pub time: DateTime<Utc>,
    /// The record, projected to the subscriber's grant.
    pub data: serde_json::Value,
    /// Record version.
    pub record_version: u64,
    /// The publish audit entry.
    pub audit_seq: u64,
    /// The record version this one corrects (the extension `supersedes`): set on every version
    /// after the first, and on the notices of a correction or recall.
    pub supersedes: Option<u64>,
    /// The W3C `traceparent` of the publish that made the event (the CloudEvents distributed
    /// tracing extension): where the event was created, the same on every attempt.
    pub traceparent: Option<String>,
}

/// One event, ready to deliver.
#[derive(Debug, Clone)]
pub struct Envelope {
    event: Event,
    json: Vec<u8>,
    attempt_trace: Option<String>,
}

impl Envelope {
    /// Builds and serializes the event once; every attempt sends the same bytes.
    pub fn new(f: EnvelopeFields) -> Result<Self, AdapterError> {
        let mut builder = EventBuilderV10::new()
            .id(f.id)
            .source(f.source)
            .ty(f.ty)
            .subject(f.subject)
            .time(f.time)
            .data("application/json", f.data)
            .extension("recordversion", f.record_version as i64)
            .extension("auditseq", f.audit_seq as i64);
        if let Some(v) = f.supersedes {
            builder = builder.extension("supersedes", v as i64);
        }
        if let Some(tp) = f.traceparent {
            builder = builder.extension("traceparent", tp);
        }
        let event = builder.build().map_err(|e| AdapterError::Build(format!("cloudevent: {e}")))?;
        let json = serde_json::to_vec(&event).map_err(|e| AdapterError::Build(format!("cloudevent: {e}")))?;
        Ok(Self { event, json, attempt_trace: None })
    }

    /// The `traceparent` of this delivery attempt, sent as the HTTP header by the adapters that
    /// speak HTTP (the event's own extension stays the publish's).
    pub fn set_attempt_trace(&mut self, traceparent: Option<String>) {
        self.attempt_trace = traceparent;
    }

    /// The attempt's `traceparent`, if any.
    pub fn attempt_trace(&self) -> Option<&str> {
        self.attempt_trace.as_deref()
    }

    /// The event id.
    pub fn id(&self) -> &str {
        self.event.id()
    }

    /// The structured JSON bytes.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The record the event carries (projected, and mapped when the subscription has a mapping).
    pub fn data(&self) -> Option<&serde_json::Value> {
        match self.event.data() {
            Some(cloudevents::Data::Json(v)) => Some(v),
            _ => None,
        }
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_json_carries_the_contract_fields() {
        let e = Envelope::new(EnvelopeFields {
            id: "evt-1".into(),
            source: "urn:hub:conghua:department:civil-affairs".into(),
            ty: "hub.record.marriage-registration.v1".into(),
            subject: "marriage-registration/J440184-2026-000001".into(),
            time: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            data: json!({"kind": "marriage"}),
            record_version: 2,
            audit_seq: 17,
            supersedes: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(e.json()).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "evt-1");
        assert_eq!(v["type"], "hub.record.marriage-registration.v1");
        assert_eq!(v["subject"], "marriage-registration/J440184-2026-000001");
        assert_eq!(v["data"]["kind"], "marriage");
        assert_eq!(v["recordversion"], 2);
        assert_eq!(v["auditseq"], 17);
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    }
}
