//! Check history and claimed run slots in the hub's store (so one node of a cluster runs each slot).

use std::sync::Arc;

use async_trait::async_trait;
use ops::runner::{History, Run};

use crate::store::{CheckRun, Store};

/// Check history in the hub's store.
pub struct StoreHistory {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Days kept.
    pub days: u32,
}

#[async_trait]
impl History for StoreHistory {
    async fn record(&self, run: &Run) -> Result<(), String> {
        let keep_after = (chrono::Utc::now() - chrono::Duration::days(i64::from(self.days)))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let row = CheckRun {
            name: run.name.clone(),
            kind: run.kind.clone(),
            started: run.started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            duration_ms: run.duration_ms,
            status: run.report.status.as_str().to_owned(),
            summary: crate::mask::scrub(&run.report.summary),
            measurements: serde_json::to_value(&run.report.measurements).unwrap_or_default(),
            trigger: run.trigger.as_str().to_owned(),
        };
        self.store.record_check(row, keep_after).await.map_err(|e| e.to_string())
    }

    async fn last_started(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        let last = self.store.last_check_started(name).await.map_err(|e| e.to_string())?;
        Ok(last.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&chrono::Utc)))
    }

    async fn claim(&self, name: &str, slot: Option<chrono::DateTime<chrono::Utc>>) -> Result<bool, String> {
        let slot =
            slot.map_or_else(|| "first-run".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        self.store.claim_slot(name, &slot).await.map_err(|e| e.to_string())
    }
}
