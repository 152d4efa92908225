//! The monthly service-level computation. A check's status holds from one run to the next, so
//! its runs make a timeline; time spent critical is unavailable. Availability is measured over
//! the part of the period the history covers (a hub installed mid-month is not charged for the
//! days before it existed). Incidents are maximal critical stretches; MTTR averages the resolved
//! ones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::check::Status;

/// One run, as the computation needs it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Check name.
    pub check: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// What it found.
    pub status: Status,
}

/// A stretch of critical status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Check.
    pub check: String,
    /// First critical run.
    pub start: DateTime<Utc>,
    /// First run after it that was not critical (none while it lasts).
    pub end: Option<DateTime<Utc>>,
    /// Seconds within the period.
    pub duration_secs: i64,
}

/// One check's service level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckLevel {
    /// Seconds of the period the history covers.
    pub observed_secs: i64,
    /// Seconds spent critical.
    pub critical_secs: i64,
    /// Seconds spent warning.
    pub warn_secs: i64,
    /// Share of observed time not critical, in percent.
    pub availability_percent: f64,
    /// Runs in the period.
    pub runs: usize,
}

/// The report's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Levels {
    /// Per check.
    pub checks: BTreeMap<String, CheckLevel>,
    /// Share of observed time during which no check was critical, in percent.
    pub overall_availability_percent: f64,
    /// Every incident, by start.
    pub incidents: Vec<Incident>,
    /// Mean time to repair of resolved incidents, in seconds.
    pub mttr_secs: Option<f64>,
}

fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_seconds().max(0)
}

/// Computes the levels over [start, end) from runs that may begin before `start` (the last run
/// before it sets the opening status).
pub fn compute(samples: &[Sample], start: DateTime<Utc>, end: DateTime<Utc>) -> Levels {
    let mut by_check: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.started < end) {
        by_check.entry(&s.check).or_default().push(s);
    }
    let mut checks = BTreeMap::new();
    let mut incidents = Vec::new();
    // Critical stretches of every check, to find when at least one was critical.
    let mut critical_spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut observed_from = end;
    for (name, mut runs) in by_check {
        runs.sort_by_key(|s| s.started);
        // Keep the last run before the period and every run inside it.
        let first_inside = runs.iter().position(|s| s.started >= start).unwrap_or(runs.len());
        let from = first_inside.saturating_sub(1);
        let runs = &runs[from..];
        let mut level =
            CheckLevel { observed_secs: 0, critical_secs: 0, warn_secs: 0, availability_percent: 100.0, runs: 0 };
        let mut open: Option<DateTime<Utc>> = None;
        for (i, r) in runs.iter().enumerate() {
            let seg_start = r.started.max(start);
            let seg_end = runs.get(i + 1).map_or(end, |n| n.started).min(end);
            if r.started >= start {
                level.runs += 1;
            }
            let d = secs(seg_start, seg_end);
            level.observed_secs += d;
            observed_from = observed_from.min(seg_start);
            match r.status {
                Status::Critical => {
                    level.critical_secs += d;
                    critical_spans.push((seg_start, seg_end));
                    open.get_or_insert(seg_start);
                }
                other => {
                    if other == Status::Warn {
                        level.warn_secs += d;
                    }
                    if let Some(s) = open.take() {
                        incidents.push(Incident {
                            check: name.to_owned(),
                            start: s,
                            end: Some(seg_start),
                            duration_secs: secs(s, seg_start),
                        });
                    }
                }
            }
        }
        if let Some(s) = open {
            incidents.push(Incident { check: name.to_owned(), start: s, end: None, duration_secs: secs(s, end) });
        }
        if level.observed_secs > 0 {
            level.availability_percent = 100.0 * (1.0 - level.critical_secs as f64 / level.observed_secs as f64);
        }
        checks.insert(name.to_owned(), level);
    }
    critical_spans.sort();
    let mut down = 0i64;
    let mut cur: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (a, b) in critical_spans {
        match cur {
            Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                down += secs(ca, cb);
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    if let Some((a, b)) = cur {
        down += secs(a, b);
    }
    let observed = secs(observed_from, end);
    let overall = if observed > 0 { 100.0 * (1.0 - down as f64 / observed as f64) } else { 100.0 };
    incidents.sort_by_key(|i| i.start);
    let resolved: Vec<i64> = incidents.iter().filter(|i| i.end.is_some()).map(|i| i.duration_secs).collect();
    let mttr = (!resolved.is_empty()).then(|| resolved.iter().sum::<i64>() as f64 / resolved.len() as f64);
    Levels { checks, overall_availability_percent: overall, incidents, mttr_secs: mttr }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 10, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_two_hour_outage_in_october() {
        let start = at(1, 0);
        let end = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let mut samples = Vec::new();
        let mut t = start;
        while t < end {
            let down = t >= at(15, 10) && t < at(15, 12);
            samples.push(Sample {
                check: "receivers".into(),
                started: t,
                status: if down { Status::Critical } else { Status::Ok },
            });
            samples.push(Sample { check: "storage".into(), started: t, status: Status::Ok });
            t += chrono::Duration::hours(1);
        }
        let l = compute(&samples, start, end);
        let r = &l.checks["receivers"];
        assert_eq!((r.observed_secs, r.critical_secs, r.runs), (744 * 3600, 2 * 3600, 744));
        assert!((r.availability_percent - 100.0 * (1.0 - 2.0 / 744.0)).abs() < 1e-9);
        assert_eq!(
            l.incidents,
            vec![Incident { check: "receivers".into(), start: at(15, 10), end: Some(at(15, 12)), duration_secs: 7200 }]
        );
        assert_eq!(l.mttr_secs, Some(7200.0));
        assert!((l.overall_availability_percent - r.availability_percent).abs() < 1e-9);
        assert_eq!(l.checks["storage"].availability_percent, 100.0);
    }

    #[test]
    fn history_starting_mid_month_and_an_ongoing_incident() {
        let start = at(1, 0);
        let end = at(3, 0);
        let samples = vec![
            Sample { check: "c".into(), started: at(2, 0), status: Status::Ok },
            Sample { check: "c".into(), started: at(2, 18), status: Status::Critical },
        ];
        let l = compute(&samples, start, end);
        assert_eq!(l.checks["c"].observed_secs, 24 * 3600, "not charged for the day before the hub existed");
        assert_eq!(l.incidents[0].end, None);
        assert_eq!(l.incidents[0].duration_secs, 6 * 3600);
        assert_eq!(l.mttr_secs, None);
        assert!((l.overall_availability_percent - 75.0).abs() < 1e-9);
        // A run before the period sets the opening status.
        let carried = vec![Sample {
            check: "c".into(),
            started: Utc.with_ymd_and_hms(2026, 9, 30, 23, 0, 0).unwrap(),
            status: Status::Critical,
        }];
        let l = compute(&carried, start, end);
        assert_eq!(l.checks["c"].critical_secs, 48 * 3600);
    }
}
