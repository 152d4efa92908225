//! The signed monthly case report (督办催办 in numbers): per case type the cases opened, completed
//! and refused in the month and their working days from opening to the reply (median, p90); per
//! step the steps done, their working days from ready to done and how many were late; late steps
//! per department. Ops and auditors also get the late steps themselves (case, step, department,
//! last day); the maintenance vendor gets the counts only. Signed like the SLA report.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use super::model::{Case, CaseState, StepState};
use super::{CaseTypes, CASE_TYPE};
use crate::ledger::keys::HubKeys;
use crate::report::{month_bounds, rfc3339, signed, ReportError};
use crate::store::{CaseQuery, Store, StoreError};

/// Median and 90th percentile (nearest rank) of working-day counts.
fn spread(mut days: Vec<u32>) -> Value {
    if days.is_empty() {
        return json!({ "count": 0, "median": null, "p90": null });
    }
    days.sort_unstable();
    let rank = |p: f64| days[((p * days.len() as f64).ceil() as usize).clamp(1, days.len()) - 1];
    json!({ "count": days.len(), "median": rank(0.5), "p90": rank(0.9) })
}

/// Every case opened or closed in [start, end), and every case still open (its late steps count).
async fn cases_of(store: &dyn Store, start: &str, end: &str) -> Result<Vec<Case>, StoreError> {
    let mut ids = std::collections::BTreeSet::new();
    for query in [
        CaseQuery { touched: Some((start.to_owned(), end.to_owned())), ..CaseQuery::default() },
        CaseQuery { states: vec!["open".into()], ..CaseQuery::default() },
    ] {
        let mut before = None;
        loop {
            let rows = store.cases(CaseQuery { before: before.clone(), limit: 500, ..query.clone() }).await?;
            ids.extend(rows.iter().map(|r| r.id.clone()));
            match rows.last() {
                Some(last) if rows.len() == 500 => before = Some((last.opened_at.clone(), last.id.clone())),
                _ => break,
            }
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(rec) = store.latest(CASE_TYPE, &id).await? {
            let case: Case = serde_json::from_value(rec.payload)
                .map_err(|e| StoreError::Corrupt(format!("case {id} cannot be read: {e}")))?;
            out.push(case);
        }
    }
    Ok(out)
}

/// The signed report of `month` (YYYY-MM in `tz`); `counts_only` for the vendor.
pub async fn monthly(
    store: &dyn Store,
    cases: &CaseTypes,
    keys: &HubKeys,
    hub: &str,
    tz: chrono_tz::Tz,
    month: &str,
    counts_only: bool,
) -> Result<Value, ReportError> {
    let (start, month_end) = month_bounds(tz, month)?;
    let now = Utc::now();
    let end = month_end.min(now);
    let (from, to) = (rfc3339(start), rfc3339(end));
    let in_month = |t: &Option<String>| t.as_deref().is_some_and(|t| t >= from.as_str() && t < to.as_str());
    let day = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&tz).date_naive());
    // The last day the month's lateness is judged on: its last day, or today in the current one.
    let last_day = (end - chrono::Duration::milliseconds(1)).with_timezone(&tz).date_naive();
    let calendar = &cases.calendar;
    let mut per_type: BTreeMap<String, (u64, u64, u64, Vec<u32>)> = BTreeMap::new();
    let mut per_step: BTreeMap<(String, String), (Vec<u32>, u64)> = BTreeMap::new();
    let mut late_by_department: BTreeMap<String, u64> = BTreeMap::new();
    let mut late_steps = Vec::new();
    for case in cases_of(store, &from, &to).await? {
        let t = per_type.entry(case.case_type.clone()).or_default();
        if in_month(&Some(case.opened_at.clone())) {
            t.0 += 1;
        }
        if in_month(&case.closed_at) {
            match case.state {
                CaseState::Completed => t.1 += 1,
                CaseState::Refused => t.2 += 1,
                CaseState::Open => {}
            }
            if let (Some(a), Some(b)) = (day(&case.opened_at), case.closed_at.as_deref().and_then(day)) {
                t.3.push(calendar.working_days_between(a, b));
            }
        }
        for s in &case.steps {
            let due = s.due.as_deref().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            let done_day = s.done_at.as_deref().and_then(day);
            let entry = per_step.entry((case.case_type.clone(), s.id.clone())).or_default();
            let late = match (s.state, due, done_day) {
                (StepState::Done | StepState::Refused, Some(due), Some(done)) if in_month(&s.done_at) => done > due,
                (StepState::Ready, Some(due), _) if case.state == CaseState::Open => last_day > due,
                _ => false,
            };
            if s.state == StepState::Done && in_month(&s.done_at) {
                if let (Some(a), Some(b)) = (s.ready_at.as_deref().and_then(day), done_day) {
                    entry.0.push(calendar.working_days_between(a, b));
                }
            }
            if late {
                entry.1 += 1;
                *late_by_department.entry(s.department.clone()).or_default() += 1;
                late_steps.push(json!({
                    "case": case.id, "case_type": case.case_type, "step": s.id, "department": s.department,
                    "due": s.due, "state": s.state, "done_at": s.done_at,
                }));
            }
        }
    }
    let types: Vec<Value> = per_type
        .into_iter()
        .map(|(id, (opened, completed, refused, days))| {
            json!({ "case_type": id, "opened": opened, "completed": completed, "refused": refused,
                    "working_days_to_reply": spread(days) })
        })
        .collect();
    let steps: Vec<Value> = per_step
        .into_iter()
        .map(|((case_type, step), (days, late))| {
            json!({ "case_type": case_type, "step": step, "late": late, "working_days_to_done": spread(days) })
        })
        .collect();
    let mut report = json!({
        "hub": hub,
        "month": month,
        "timezone": tz.name(),
        "period": { "start": from, "end": to, "complete": end == month_end },
        "generated_at": rfc3339(now),
        "case_types": types,
        "steps": steps,
        "late_steps_by_department": late_by_department,
    });
    if !counts_only {
        report["late_steps"] = Value::Array(late_steps);
    }
    Ok(signed(report, keys))
}

/// A printable HTML page of a signed case report (no scripts, no external assets).
pub fn html(signed: &Value) -> String {
    let r = &signed["report"];
    let text = |v: &Value| {
        v.as_str().map(str::to_owned).unwrap_or_else(|| if v.is_null() { "–".into() } else { v.to_string() })
    };
    let rows = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let markup = maud::html! {
        (maud::DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                title { "Joint cases " (text(&r["month"])) " — " (text(&r["hub"])) }
                style { "body{font:14px/1.5 sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}"
                        "td,th{border:1px solid #999;padding:.3em .6em;text-align:left}td.n{text-align:right}"
                        "code{word-break:break-all;font-size:11px}" }
            }
            body {
                h1 { "联办案件报告 Joint case report " (text(&r["month"])) }
                p {
                    "Hub " b { (text(&r["hub"])) } ", time zone " (text(&r["timezone"])) ", period "
                    (text(&r["period"]["start"])) " – " (text(&r["period"]["end"]))
                    @if r["period"]["complete"] != true { " (the month so far)" } "."
                }
                h2 { "Cases 案件 (working days from opening to the reply)" }
                table {
                    tr { th { "case type" } th { "opened" } th { "completed" } th { "refused" } th { "median" } th { "p90" } }
                    @for t in rows(&r["case_types"]) {
                        tr {
                            td { (text(&t["case_type"])) } td.n { (text(&t["opened"])) } td.n { (text(&t["completed"])) }
                            td.n { (text(&t["refused"])) } td.n { (text(&t["working_days_to_reply"]["median"])) }
                            td.n { (text(&t["working_days_to_reply"]["p90"])) }
                        }
                    }
                }
                h2 { "Steps 环节 (working days from ready to done)" }
                table {
                    tr { th { "case type" } th { "step" } th { "done" } th { "median" } th { "p90" } th { "late" } }
                    @for s in rows(&r["steps"]) {
                        tr {
                            td { (text(&s["case_type"])) } td { (text(&s["step"])) }
                            td.n { (text(&s["working_days_to_done"]["count"])) } td.n { (text(&s["working_days_to_done"]["median"])) }
                            td.n { (text(&s["working_days_to_done"]["p90"])) } td.n { (text(&s["late"])) }
                        }
                    }
                }
                h2 { "Late steps per department 超期环节" }
                table {
                    tr { th { "department" } th { "late steps" } }
                    @for (d, n) in r["late_steps_by_department"].as_object().cloned().unwrap_or_default() {
                        tr { td { (d) } td.n { (text(&n)) } }
                    }
                    @if r["late_steps_by_department"].as_object().is_none_or(|m| m.is_empty()) {
                        tr { td colspan="2" { "no step was late" } }
                    }
                }
                @if let Some(late) = r["late_steps"].as_array().filter(|l| !l.is_empty()) {
                    table {
                        tr { th { "case" } th { "case type" } th { "step" } th { "department" } th { "last day" } th { "state" } th { "done" } }
                        @for l in late {
                            tr {
                                td { code { (text(&l["case"])) } } td { (text(&l["case_type"])) } td { (text(&l["step"])) }
                                td { (text(&l["department"])) } td { (text(&l["due"])) } td { (text(&l["state"])) } td { (text(&l["done_at"])) }
                            }
                        }
                    }
                }
                h2 { "Signature 签名" }
                p { (text(&signed["signature"]["algorithm"])) " over " (text(&signed["signature"]["canonicalization"])) ":" }
                p { code { (text(&signed["signature"]["value"])) } }
                pre { (text(&signed["signature"]["public_key"])) }
            }
        }
    };
    markup.into_string()
}
