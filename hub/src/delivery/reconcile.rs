//! Reconciliation of one subscription for one day: what the hub says it delivered (its own
//! delivery audit, the only record of a delivery it keeps) against what the department holds (the
//! ids it sends, or its exchange folder or table read back), and the missing events queued again
//! with the ids the department already knows.

use std::collections::{HashMap, HashSet};

use chrono::{NaiveDate, TimeZone, Utc};
use serde::Serialize;

use super::{Subscription, NOTICE_TYPE};
use crate::ledger::NewEntry;
use crate::store::{Store, StoreError};

/// Audit entries read per page.
const PAGE: u32 = 2000;

/// A day in the hub's time zone, as the instants that bound it.
#[derive(Debug, Clone, Copy)]
pub struct Day {
    /// The date.
    pub date: NaiveDate,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
}

/// Why a day cannot be reconciled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DayError {
    /// Not `YYYY-MM-DD`.
    #[error("must be a date YYYY-MM-DD")]
    Malformed,
    /// Nothing can have been delivered yet.
    #[error("must not be after today ({0})")]
    Future(NaiveDate),
}

impl Day {
    /// The day `text` names in `tz`, today at the latest.
    pub fn parse(text: &str, tz: chrono_tz::Tz) -> Result<Self, DayError> {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| DayError::Malformed)?;
        let today = Utc::now().with_timezone(&tz).date_naive();
        if date > today {
            return Err(DayError::Future(today));
        }
        Self::of(date, tz).ok_or(DayError::Malformed)
    }

    /// The day `date` in `tz`.
    pub fn of(date: NaiveDate, tz: chrono_tz::Tz) -> Option<Self> {
        let start =
            |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).earliest().map(|t| t.with_timezone(&Utc));
        Some(Self { date, from: start(date)?, to: start(date.succ_opt()?)? })
    }
}

/// What the hub delivered of one event id, and whether on the day itself.
#[derive(Debug, Clone)]
struct Sent {
    /// The outbox identity (type, key, version) to queue it again; unknown for feed pages
    /// audited before they named their records.
    record: Option<(String, String, u64)>,
    on_day: bool,
}

/// The hub's deliveries to a subscription on a day, and on the day before and after: a
/// department that files an event received just after midnight under the next day has not
/// got an event the hub never sent.
#[derive(Debug, Default)]
pub struct Deliveries {
    sent: HashMap<String, Sent>,
    /// Ids delivered on the day, in the order first delivered.
    order: Vec<String>,
}

impl Deliveries {
    /// Ids the hub delivered on the day, in order.
    pub fn ids(&self) -> &[String] {
        &self.order
    }

    /// What to queue again for these ids: (type, key, version) of each one delivered on the day.
    pub fn records(&self, ids: &[String]) -> Vec<(String, String, u64)> {
        ids.iter().filter_map(|id| self.sent.get(id).filter(|s| s.on_day).and_then(|s| s.record.clone())).collect()
    }

    /// Whether the hub delivered `id` on the day.
    pub fn on_day(&self, id: &str) -> bool {
        self.sent.get(id).is_some_and(|s| s.on_day)
    }
}

/// Reads the delivery audit of `sub` around `day`: confirmed push deliveries (one entry per
/// event) and served feed pages (one entry per page, its ids and records side by side).
pub async fn deliveries(store: &dyn Store, sub: &Subscription, day: &Day) -> Result<Deliveries, StoreError> {
    let margin = chrono::Duration::days(1);
    let (from, to) = (crate::report::rfc3339(day.from - margin), crate::report::rfc3339(day.to + margin));
    let (start, end) = (crate::report::rfc3339(day.from), crate::report::rfc3339(day.to));
    let mut out = Deliveries::default();
    let mut after = 0;
    loop {
        let page = store.audit_between(&from, &to, &sub.department, "deliver", after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page.iter().filter(|e| e.outcome == "ok") {
            let Some(d) = e.detail.as_ref().filter(|d| d["subscription"] == sub.name.as_str()) else { continue };
            let on_day = e.time >= start && e.time < end;
            let mut seen = |id: &str, record: Option<(String, String, u64)>| {
                let s = out.sent.entry(id.to_owned()).or_insert(Sent { record: None, on_day: false });
                if on_day && !s.on_day {
                    out.order.push(id.to_owned());
                }
                s.on_day |= on_day;
                s.record = s.record.take().or(record);
            };
            if let Some(id) = d["event_id"].as_str() {
                let record = match (&e.record_type, &e.record_key, e.record_version) {
                    // A notice is entered under the record it is about; its own key says which.
                    (Some(t), Some(k), Some(v)) if d["notice"].is_string() => {
                        Some((NOTICE_TYPE.to_owned(), format!("{}/{t}/{k}/{v}", sub.department), 1))
                    }
                    (Some(t), Some(k), Some(v)) => Some((t.clone(), k.clone(), v)),
                    _ => None,
                };
                seen(id, record);
            } else if let Some(ids) = d["events"].as_array() {
                let records = d["records"].as_array();
                for (i, id) in ids.iter().enumerate() {
                    let record = records.and_then(|r| r.get(i)).and_then(|r| r.as_str()).and_then(parse_record);
                    if let Some(id) = id.as_str() {
                        seen(id, record);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `TYPE/KEY@VERSION` (the type has no `/`; the key may have either).
fn parse_record(text: &str) -> Option<(String, String, u64)> {
    let (rest, version) = text.rsplit_once('@')?;
    let (t, k) = rest.split_once('/')?;
    Some((t.to_owned(), k.to_owned(), version.parse().ok()?))
}

/// The answer of a reconciliation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Comparison {
    /// Subscription.
    pub subscription: String,
    /// The day, in the hub's time zone.
    pub day: String,
    /// That time zone.
    pub timezone: String,
    /// Events the hub delivered that day.
    pub delivered: usize,
    /// Distinct events the department holds.
    pub held: usize,
    /// Delivered that day, not held: queue them again.
    pub missing: Vec<String>,
    /// Held, never delivered by the hub around that day.
    pub unknown: Vec<String>,
    /// Held more than once.
    pub duplicates: Vec<String>,
    /// Held, delivered the day before or after: filed under another day, nothing lost.
    pub neighbouring_days: Vec<String>,
    /// Files or rows that name events but cannot be trusted (read back by the hub only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
}

impl Comparison {
    /// Whether both sides agree.
    pub fn agrees(&self) -> bool {
        self.missing.is_empty() && self.unknown.is_empty() && self.duplicates.is_empty() && self.damaged.is_empty()
    }

    /// The audit detail: counts, never the ids (a day can hold many thousands).
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "subscription": self.subscription, "day": self.day, "delivered": self.delivered, "held": self.held,
            "missing": self.missing.len(), "unknown": self.unknown.len(), "duplicates": self.duplicates.len(),
            "damaged": self.damaged.len(),
        })
    }
}

/// Compares the hub's deliveries with what the department holds (`held`, in its order, repeats
/// kept: a repeat is a duplicate).
pub fn compare(sub: &Subscription, day: &Day, tz: chrono_tz::Tz, d: &Deliveries, held: &[String]) -> Comparison {
    let mut distinct: HashSet<&str> = HashSet::with_capacity(held.len());
    let (mut duplicates, mut unknown, mut neighbouring) = (Vec::new(), Vec::new(), Vec::new());
    for id in held {
        if !distinct.insert(id) {
            if !duplicates.contains(id) {
                duplicates.push(id.clone());
            }
            continue;
        }
        match d.sent.get(id.as_str()) {
            None => unknown.push(id.clone()),
            Some(s) if !s.on_day => neighbouring.push(id.clone()),
            Some(_) => {}
        }
    }
    Comparison {
        subscription: sub.name.clone(),
        day: day.date.to_string(),
        timezone: tz.name().to_owned(),
        delivered: d.order.len(),
        held: distinct.len(),
        missing: d.order.iter().filter(|id| !distinct.contains(id.as_str())).cloned().collect(),
        unknown,
        duplicates,
        neighbouring_days: neighbouring,
        damaged: Vec::new(),
    }
}

/// What the hub reads back from the subscription's receiver for the day: `None` where it
/// cannot be read back.
pub async fn read_back(
    store: &dyn Store,
    sub: &Subscription,
    day: &Day,
    tz: chrono_tz::Tz,
) -> Result<Option<(Comparison, Deliveries)>, ReadBackError> {
    let d = deliveries(store, sub, day).await?;
    let Some(held) = sub.holdings(d.ids()).await else { return Ok(None) };
    let held = held.map_err(ReadBackError::Receiver)?;
    // Read back by the ids the hub delivered: the receiver holds nothing else the hub can name.
    let ids: Vec<String> = d.ids().iter().filter(|id| held.held.contains(*id)).cloned().collect();
    let mut c = compare(sub, day, tz, &d, &ids);
    c.damaged = held.damaged;
    Ok(Some((c, d)))
}

/// Why the hub could not read a receiver back.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The delivery audit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The folder or table (its message names no record).
    #[error("{0}")]
    Receiver(String),
}

/// Queues `ids` (delivered on the day) again with their own event ids; returns how many.
pub async fn redeliver(
    store: &dyn Store,
    sub: &Subscription,
    d: &Deliveries,
    ids: &[String],
    audit: NewEntry,
) -> Result<u64, StoreError> {
    let records = d.records(ids);
    if records.is_empty() {
        return Ok(0);
    }
    store.enqueue(&sub.name, records, audit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_bounded_in_the_hubs_time_zone_and_never_after_today() {
        let tz = chrono_tz::Asia::Shanghai;
        let d = Day::parse("2026-03-01", tz).unwrap();
        assert_eq!(crate::report::rfc3339(d.from), "2026-02-28T16:00:00.000Z");
        assert_eq!(crate::report::rfc3339(d.to), "2026-03-01T16:00:00.000Z");
        assert_eq!(Day::parse("2026-02-30", tz).unwrap_err(), DayError::Malformed);
        assert_eq!(Day::parse("yesterday", tz).unwrap_err(), DayError::Malformed);
        let tomorrow = Utc::now().with_timezone(&tz).date_naive().succ_opt().unwrap();
        assert!(matches!(Day::parse(&tomorrow.to_string(), tz), Err(DayError::Future(_))));
    }

    #[test]
    fn records_are_read_back_from_their_audit_spelling() {
        assert_eq!(parse_record("hub.notice/a/b/c@1"), Some(("hub.notice".into(), "a/b/c".into(), 1)));
        assert_eq!(parse_record("t/k@x@2"), Some(("t".into(), "k@x".into(), 2)));
        assert_eq!(parse_record("no-version"), None);
    }
}
