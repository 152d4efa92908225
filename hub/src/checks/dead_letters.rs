//! `dead_letters`: events that will not be delivered, per subscription.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{CheckKind, DeadLetterThresholds};
use crate::store::Store;

pub(super) struct DeadLetters {
    pub(super) n: Named,
    pub(super) t: DeadLetterThresholds,
    pub(super) store: Arc<dyn Store>,
}

#[async_trait]
impl Check for DeadLetters {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::DeadLetters.as_str()
    }
    async fn run(&self) -> Report {
        let counts = match self.store.delivery_counts().await {
            Ok(c) => c,
            Err(e) => return Report::new(Status::Critical, format!("cannot read the outbox: {e}")),
        };
        let total: u64 = counts.iter().map(|c| c.dead).sum();
        let t = &self.t;
        let status = Status::from_thresholds(total as f64, Some(t.warn_dead), Some(t.critical_dead));
        let which: Vec<String> =
            counts.iter().filter(|c| c.dead > 0).map(|c| format!("{} ({})", c.subscription, c.dead)).collect();
        let summary = if which.is_empty() {
            "no dead letters".to_owned()
        } else {
            format!("{total} dead letters: {}", which.join(", "))
        };
        counts.iter().fold(Report::new(status, summary).with("dead", total as f64), |r, c| {
            r.with(format!("dead.{}", c.subscription), c.dead as f64)
        })
    }
}
