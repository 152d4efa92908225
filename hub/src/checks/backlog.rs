//! `delivery_backlog`: entries waiting per subscription, and the age of the oldest.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{BacklogThresholds, CheckKind};
use crate::store::Store;

pub(super) struct DeliveryBacklog {
    pub(super) n: Named,
    pub(super) t: BacklogThresholds,
    pub(super) store: Arc<dyn Store>,
}

#[async_trait]
impl Check for DeliveryBacklog {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::DeliveryBacklog.as_str()
    }
    async fn run(&self) -> Report {
        let counts = match self.store.delivery_counts().await {
            Ok(c) => c,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the outbox: {e}")),
        };
        let t = &self.t;
        let now = chrono::Utc::now().timestamp_millis();
        let mut worst = Status::Ok;
        let mut report = Report::new(Status::Ok, String::new());
        let mut notes = Vec::new();
        let mut total = 0u64;
        for c in &counts {
            let age = c.oldest_pending_ms.map_or(0.0, |o| ((now - o).max(0) / 1000) as f64);
            total += c.pending;
            let s = Status::from_thresholds(c.pending as f64, Some(t.warn_pending), Some(t.critical_pending))
                .max(Status::from_thresholds(age, Some(t.warn_age_secs), Some(t.critical_age_secs)));
            if s > Status::Ok {
                notes.push(format!("{}: {} pending, oldest {}s", c.subscription, c.pending, age));
            }
            worst = worst.max(s);
            report = report
                .with(format!("pending.{}", c.subscription), c.pending as f64)
                .with(format!("oldest_age_secs.{}", c.subscription), age);
        }
        report.status = worst;
        report.summary = if notes.is_empty() { format!("{total} events pending") } else { notes.join("; ") };
        report.with("pending", total as f64)
    }
}
