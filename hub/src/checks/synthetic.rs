//! `synthetic`: a probe record published through the record's way, delivered to the hub's own
//! loopback receiver and timed end to end.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{CheckKind, SyntheticThresholds};
use crate::delivery::Delivery;
use crate::store::Store;

pub(super) struct Synthetic {
    pub(super) n: Named,
    pub(super) t: SyntheticThresholds,
    pub(super) store: Arc<dyn Store>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) exchange: Arc<crate::exchange::Exchange>,
}

#[async_trait]
impl Check for Synthetic {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Synthetic.as_str()
    }
    async fn run(&self) -> Report {
        use crate::delivery::{PROBE_SUBSCRIPTION, PROBE_TYPE};
        use sha2::Digest;
        let t = &self.t;
        let key = format!("probe-{}-{:08x}", chrono::Utc::now().timestamp_millis(), rand::random::<u32>());
        let payload = serde_json::json!({ "probe": key, "sent_at": chrono::Utc::now().to_rfc3339() });
        let canonical = serde_jcs::to_string(&payload).unwrap_or_default();
        let event = crate::store::event_id(PROBE_SUBSCRIPTION, PROBE_TYPE, &key, 1);
        let waiter = self.delivery.expect_probe(&event);
        let started = std::time::Instant::now();
        let version = crate::store::NewVersion {
            record_type: PROBE_TYPE.into(),
            key: key.clone(),
            schema_version: 1,
            digest: hex::encode(sha2::Sha256::digest(canonical.as_bytes())),
            canonical,
            publisher: "hub".into(),
            subjects: Vec::new(),
            idempotency: None,
            routes: vec![PROBE_SUBSCRIPTION.into()],
            first_only: false,
            audit: crate::ledger::NewEntry {
                record_type: Some(PROBE_TYPE.into()),
                record_key: Some(key),
                ..crate::ledger::NewEntry::new("hub", crate::ledger::Action::Publish, "ok")
            },
            trace: None,
        };
        // The probe is the hub's own record, of a type outside the catalogue, with its one route.
        match self.exchange.commit(vec![version]).await.map(|mut v| v.pop()) {
            Ok(Some(Ok(crate::store::Published::Created(_)))) => {}
            Ok(Some(Err(e))) | Err(e) => {
                return Report::new(Status::Critical, format!("the probe could not be published: {e}"))
            }
            _ => return Report::new(Status::Critical, "the probe could not be published"),
        }
        let limit = Duration::from_millis(t.critical_ms as u64 * 3);
        let arrived = async {
            tokio::select! {
                here = waiter => here.is_ok(),
                elsewhere = self.delivered_by_another_node(&event) => elsewhere,
            }
        };
        match tokio::time::timeout(limit, arrived).await {
            Ok(true) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let status = Status::from_thresholds(ms, Some(t.warn_ms), Some(t.critical_ms));
                Report::new(status, format!("probe published and delivered end to end in {ms:.1} ms"))
                    .with("latency_ms", ms)
            }
            _ => Report::new(Status::Critical, format!("the probe did not arrive within {} s", limit.as_secs())),
        }
    }
}

impl Synthetic {
    /// On a shared store another node's worker may take the probe and deliver it to that node's
    /// own receiver: then the store says it was delivered. True once delivered, false if it went
    /// to the dead letters; never ends on a store of one node, where the receiver here answers.
    async fn delivered_by_another_node(&self, event: &str) -> bool {
        use crate::delivery::PROBE_SUBSCRIPTION;
        if !self.store.is_shared() {
            return std::future::pending().await;
        }
        let in_state = |state: &'static str| async move {
            self.store
                .deliveries(state, Some(PROBE_SUBSCRIPTION.into()), 10_000)
                .await
                .map(|rows| rows.iter().any(|r| r.event_id == event))
        };
        loop {
            // A probe is one row among few: a look costs little.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(false) = in_state("pending").await {
                return !in_state("dead").await.unwrap_or(false);
            }
        }
    }
}
