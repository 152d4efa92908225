//! `notices`: notices of corrections and recalls that departments have not acknowledged on their
//! notice feeds, in working days since the change (the joint cases' calendar). The summary
//! counts; the measurements name each department that has not acted, by id (no record, no
//! person), so the ops desk knows whom to call.

use std::sync::Arc;

use async_trait::async_trait;
use ops::check::{Check, Report, Status};

use super::Named;
use crate::catalog::Catalog;
use crate::config::checks::{CheckKind, NoticeThresholds};
use crate::store::Store;

/// How many unacknowledged notices of one department are looked at.
const LOOKED_AT: u32 = 1000;

pub(super) struct Notices {
    pub(super) n: Named,
    pub(super) t: NoticeThresholds,
    pub(super) store: Arc<dyn Store>,
    /// (department, its notice feed).
    pub(super) feeds: Vec<(String, String)>,
    /// Its joint cases' calendar counts the working days.
    pub(super) catalog: Arc<Catalog>,
    pub(super) tz: chrono_tz::Tz,
}

#[async_trait]
impl Check for Notices {
    fn name(&self) -> &str {
        &self.n.name
    }
    fn kind(&self) -> &'static str {
        CheckKind::Notices.as_str()
    }
    async fn run(&self) -> Report {
        let today = chrono::Utc::now().with_timezone(&self.tz).date_naive();
        let (mut late, mut oldest_days, mut departments) = (0u64, 0u32, Vec::new());
        for (department, feed) in &self.feeds {
            let page = match self.store.feed_cursor(feed).await {
                Ok(at) => self.store.feed(feed, at, LOOKED_AT).await,
                Err(e) => Err(e),
            };
            let rows = match page {
                Ok(p) => p.rows,
                Err(e) => return Report::new(Status::Critical, format!("cannot read the notice feeds: {e}")),
            };
            let mut mine = 0u64;
            for row in rows {
                let Ok(Some(v)) = self.store.version(&row.record_type, &row.key, row.version).await else { continue };
                let Ok(at) = chrono::DateTime::parse_from_rfc3339(&v.received_at) else { continue };
                let days =
                    self.catalog.cases.calendar.working_days_between(at.with_timezone(&self.tz).date_naive(), today);
                if f64::from(days) >= self.t.warn_working_days {
                    mine += 1;
                    oldest_days = oldest_days.max(days);
                }
            }
            if mine > 0 {
                late += mine;
                departments.push((department.clone(), mine));
            }
        }
        let status = Status::from_thresholds(
            f64::from(oldest_days),
            Some(self.t.warn_working_days),
            Some(self.t.critical_working_days),
        );
        let status = if late == 0 { Status::Ok } else { status };
        let summary = if late == 0 {
            "every notice past its time is acknowledged".to_owned()
        } else {
            format!(
                "{late} notices unacknowledged for {} working days or more at {} departments (oldest {oldest_days})",
                self.t.warn_working_days,
                departments.len()
            )
        };
        departments.iter().fold(
            Report::new(status, summary)
                .with("unacknowledged", late as f64)
                .with("oldest_working_days", f64::from(oldest_days)),
            |r, (d, n)| r.with(format!("unacknowledged.{d}"), *n as f64),
        )
    }
}
