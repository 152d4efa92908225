//! The monthly SLA report the city holds the maintenance vendor to: availability per check and
//! overall, incidents with start, end and duration, MTTR, deliveries made and dead-lettered, and
//! publishes, for a month in the hub's time zone. Signed with the hub's key (Ed25519, or SM2 on
//! the national suite) over the RFC 8785 canonical JSON of the report, so either side can verify
//! it later with `DATA/keys/audit-signing.pub`. Also rendered as a printable HTML page.

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::ledger::keys::HubKeys;
use crate::store::{Store, StoreError};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `month` is not YYYY-MM.
    #[error("month must be YYYY-MM")]
    BadMonth,
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The first instant of `month` (YYYY-MM) in `tz` and of the month after, in UTC.
pub fn month_bounds(
    tz: chrono_tz::Tz,
    month: &str,
) -> Result<(chrono::DateTime<Utc>, chrono::DateTime<Utc>), ReportError> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| ReportError::BadMonth)?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .ok_or(ReportError::BadMonth)?;
    let local = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()).earliest().map(|t| t.with_timezone(&Utc))
    };
    match (local(first), local(next)) {
        (Some(start), Some(end)) => Ok((start, end)),
        _ => Err(ReportError::BadMonth),
    }
}

/// Signs a report: `{"report": {...}, "signature": {...}}` over its RFC 8785 form.
pub fn signed(report: Value, keys: &HubKeys) -> Value {
    let canonical = serde_jcs::to_vec(&report).unwrap_or_default();
    json!({
        "report": report,
        "signature": {
            "algorithm": keys.suite().signature_algorithm(),
            "suite": keys.suite().as_str(),
            "canonicalization": "RFC 8785 (JCS) of the \"report\" member",
            "value": keys.sign(&canonical),
            "public_key": keys.public_pem(),
        }
    })
}

/// The signed report: `{"report": {...}, "signature": {...}}`.
pub async fn sla(
    store: &dyn Store,
    keys: &HubKeys,
    hub: &str,
    tz: chrono_tz::Tz,
    month: &str,
) -> Result<Value, ReportError> {
    let (start, month_end) = month_bounds(tz, month)?;
    let end = month_end.min(Utc::now());
    // A week before the month finds the run that sets each check's opening status.
    let runs = store.check_runs_between(&rfc3339(start - chrono::Duration::days(7)), &rfc3339(end)).await?;
    let samples: Vec<ops::sla::Sample> = runs
        .iter()
        .filter_map(|r| {
            let started = chrono::DateTime::parse_from_rfc3339(&r.started).ok()?.with_timezone(&Utc);
            let status = match r.status.as_str() {
                "ok" => ops::check::Status::Ok,
                "warn" => ops::check::Status::Warn,
                _ => ops::check::Status::Critical,
            };
            Some(ops::sla::Sample { check: r.name.clone(), started, status })
        })
        .collect();
    let levels = ops::sla::compute(&samples, start, end);
    // The hub's own read-backs of folders and tables in the month, and the departments' own.
    let (from, to) = (rfc3339(start), rfc3339(end));
    let reconciled: Vec<_> =
        runs.iter().filter(|r| r.kind == "reconciliation" && r.started >= from && r.started < to).collect();
    let found = |r: &&crate::store::CheckRun| r.measurements["missing"].as_f64().unwrap_or(0.0);
    let counts = store.audit_action_counts(&rfc3339(start), &rfc3339(end)).await?;
    let count = |a: &str| counts.iter().find(|(x, _)| x == a).map_or(0, |(_, n)| *n);
    let report = json!({
        "hub": hub,
        "month": month,
        "timezone": tz.name(),
        "period": { "start": rfc3339(start), "end": rfc3339(end), "complete": end == month_end },
        "generated_at": rfc3339(Utc::now()),
        "availability": {
            "overall_percent": (levels.overall_availability_percent * 1000.0).round() / 1000.0,
            "checks": levels.checks,
        },
        "incidents": levels.incidents,
        "mttr_secs": levels.mttr_secs,
        "deliveries": { "delivered": count("deliver"), "dead_lettered": count("dead_letter") },
        "publishes": count("publish"),
        "reconciliation": {
            "runs": reconciled.len(),
            "runs_with_missing": reconciled.iter().filter(|r| found(r) > 0.0).count(),
            "events_missing_found": reconciled.iter().map(found).sum::<f64>() as u64,
            "by_departments": count("reconcile"),
        },
    });
    Ok(signed(report, keys))
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A printable HTML page of a signed report (no scripts, no external assets).
pub fn html(signed: &Value) -> String {
    let r = &signed["report"];
    let text = |v: &Value| esc(&v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()));
    let mut rows = String::new();
    if let Some(checks) = r["availability"]["checks"].as_object() {
        for (name, c) in checks {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}%</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(name),
                c["availability_percent"].as_f64().unwrap_or(0.0),
                c["critical_secs"],
                c["warn_secs"],
                c["runs"]
            ));
        }
    }
    let mut incidents = String::new();
    for i in r["incidents"].as_array().into_iter().flatten() {
        incidents.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            text(&i["check"]),
            text(&i["start"]),
            if i["end"].is_null() { "ongoing".to_owned() } else { text(&i["end"]) },
            i["duration_secs"]
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>SLA {month} — {hub}</title>
<style>body{{font:14px/1.5 sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #999;padding:.3em .6em;text-align:left}}code{{word-break:break-all;font-size:11px}}</style></head>
<body><h1>服务水平报告 Service level report {month}</h1>
<p>Hub <b>{hub}</b>, time zone {tz}, period {start} – {end}{partial}.</p>
<h2>Availability 可用性: {overall:.3}%</h2>
<table><tr><th>Check</th><th>Availability</th><th>Critical (s)</th><th>Warning (s)</th><th>Runs</th></tr>
{rows}</table>
<h2>Incidents 故障 (MTTR {mttr})</h2>
<table><tr><th>Check</th><th>Start</th><th>End</th><th>Duration (s)</th></tr>
{incidents}</table>
<h2>Deliveries 数据交付</h2><p>{delivered} delivered, {dead} dead-lettered; {publishes} records published.</p>
<h2>Reconciliation 对账</h2><p>{rec_runs} read-backs of exchange folders and tables, {rec_missing} of them with
missing events ({rec_found} events found missing); {rec_departments} reconciliations by departments.</p>
<h2>Signature 签名</h2><p>{alg} over the RFC 8785 canonical JSON of the report:</p>
<p><code>{sig}</code></p><pre>{key}</pre></body></html>
"#,
        alg = text(&signed["signature"]["algorithm"]),
        month = text(&r["month"]),
        hub = text(&r["hub"]),
        tz = text(&r["timezone"]),
        start = text(&r["period"]["start"]),
        end = text(&r["period"]["end"]),
        partial = if r["period"]["complete"] == true { "" } else { " (month not over)" },
        overall = r["availability"]["overall_percent"].as_f64().unwrap_or(0.0),
        mttr = r["mttr_secs"].as_f64().map_or("none".to_owned(), |s| format!("{s:.0} s")),
        delivered = r["deliveries"]["delivered"],
        dead = r["deliveries"]["dead_lettered"],
        publishes = r["publishes"],
        rec_runs = r["reconciliation"]["runs"],
        rec_missing = r["reconciliation"]["runs_with_missing"],
        rec_found = r["reconciliation"]["events_missing_found"],
        rec_departments = r["reconciliation"]["by_departments"],
        sig = text(&signed["signature"]["value"]),
        key = text(&signed["signature"]["public_key"]),
    )
}
