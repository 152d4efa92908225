//! `reconciliation`: every push subscription whose receiver the hub can read back (an exchange
//! folder's manifests, an exchange table's `event_id` column) is compared, for yesterday and
//! today, with the hub's own delivery audit. The summary names subscriptions and days with
//! counts only; the missing events are queued again by one ops call
//! (`POST /v1/ops/reconciliation/{subscription}/redeliver` with the day).

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::config::checks::{CheckKind, ReconciliationThresholds};
use crate::delivery::reconcile::{read_back, Day, ReadBackError};
use crate::delivery::Delivery;
use crate::store::Store;

/// Days reconciled, ending today: a run after midnight still sees the whole of yesterday.
const DAYS: u64 = 2;

pub(super) struct Reconciliation {
    pub(super) n: Named,
    pub(super) t: ReconciliationThresholds,
    pub(super) store: Arc<dyn Store>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) tz: chrono_tz::Tz,
}

#[async_trait]
impl Check for Reconciliation {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Reconciliation.as_str()
    }
    async fn run(&self) -> Report {
        let today = chrono::Utc::now().with_timezone(&self.tz).date_naive();
        let days: Vec<Day> = (0..DAYS)
            .rev()
            .filter_map(|back| today.checked_sub_days(chrono::Days::new(back)))
            .filter_map(|d| Day::of(d, self.tz))
            .collect();
        let (mut compared, mut delivered, mut missing, mut damaged) = (0u64, 0u64, 0u64, 0u64);
        let (mut findings, mut unreadable, mut per_sub) = (Vec::new(), Vec::new(), Vec::new());
        for sub in self.delivery.all() {
            // Only receivers that can be read back (asking about no event costs nothing).
            if sub.holdings(&[]).await.is_none() {
                continue;
            }
            let (mut sub_missing, mut sub_damaged) = (0u64, 0u64);
            let mut readable = true;
            for day in &days {
                match read_back(self.store.as_ref(), sub, day, self.tz).await {
                    Ok(Some((c, _))) => {
                        compared += 1;
                        delivered += c.delivered as u64;
                        sub_missing += c.missing.len() as u64;
                        sub_damaged += c.damaged.len() as u64;
                        if !c.missing.is_empty() || !c.damaged.is_empty() {
                            findings.push(format!(
                                "{} on {}: {} missing, {} damaged",
                                sub.name,
                                day.date,
                                c.missing.len(),
                                c.damaged.len()
                            ));
                        }
                    }
                    Ok(None) => {
                        readable = false;
                        break;
                    }
                    Err(ReadBackError::Store(e)) => {
                        return Report::new(Status::Critical, format!("cannot read the delivery audit: {e}"))
                    }
                    Err(ReadBackError::Receiver(why)) => {
                        unreadable.push(format!("{}: {why}", sub.name));
                        break;
                    }
                }
            }
            if readable {
                missing += sub_missing;
                damaged += sub_damaged;
                per_sub.push((sub.name.clone(), sub_missing, sub_damaged));
            }
        }
        let mut status =
            Status::from_thresholds(missing as f64, Some(self.t.warn_missing), Some(self.t.critical_missing));
        if damaged > 0 && status == Status::Ok {
            status = Status::Warn;
        }
        if !unreadable.is_empty() {
            status = Status::Critical;
        }
        let summary = if findings.is_empty() && unreadable.is_empty() {
            format!("{compared} subscription days agree: {delivered} events delivered, every one held")
        } else {
            let mut parts = findings;
            parts.extend(unreadable.iter().map(|u| format!("cannot be read back: {u}")));
            format!(
                "{missing} events missing, {damaged} damaged files or rows; {}; \
                 POST /v1/ops/reconciliation/SUBSCRIPTION/redeliver with the day queues them again",
                parts.join("; ")
            )
        };
        per_sub.into_iter().fold(
            Report::new(status, summary)
                .with("compared", compared as f64)
                .with("delivered", delivered as f64)
                .with("missing", missing as f64)
                .with("damaged", damaged as f64)
                .with("unreadable", unreadable.len() as f64),
            |r, (name, m, d)| r.with(format!("missing.{name}"), m as f64).with(format!("damaged.{name}"), d as f64),
        )
    }
}
