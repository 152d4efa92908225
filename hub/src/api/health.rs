//! Health for operators and the vendor: `/health` (`application/health+json`, the IETF draft's
//! shape: overall status and every check with its status, time and output) and the check
//! endpoints. Everything here is counts, durations and error classes: the vendor may call it all.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::{json_response, AppState, Problem};
use crate::config::Role;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;

/// Checks, alerts, the SLA report and metrics.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(checks))
        .routes(routes!(alerts))
        .routes(routes!(sla))
        .routes(routes!(documents_spared))
        .routes(routes!(history))
        .routes(routes!(run))
        .routes(routes!(metrics))
}

fn health_status(s: &str) -> &'static str {
    match s {
        "ok" => "pass",
        "warn" => "warn",
        _ => "fail",
    }
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "application/health+json: every check's latest status (ops, vendor)")))]
/// `GET /health` (ops, vendor).
pub async fn health(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "health").await?;
    let latest = state.store.latest_checks().await?;
    let mut checks = Map::new();
    let mut worst = 0u8;
    for e in state.checks.entries() {
        let name = e.check.name();
        let run = latest.iter().find(|r| r.name == name);
        let (status, time, output) = match run {
            Some(r) => (health_status(&r.status), Some(r.started.clone()), r.summary.clone()),
            None => ("warn", None, "not run yet".to_owned()),
        };
        worst = worst.max(match status {
            "pass" => 0,
            "warn" => 1,
            _ => 2,
        });
        checks.insert(
            name.to_owned(),
            json!([{ "componentType": e.check.kind(), "status": status, "time": time, "output": output,
                     "observedValue": run.map(|r| r.measurements.clone()) }]),
        );
    }
    let status = ["pass", "warn", "fail"][worst as usize];
    let body = json!({
        "status": status,
        "serviceId": state.config.hub.name.get_ref(),
        "description": "Conghua Data Exchange Hub",
        "checks": checks,
    });
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/health+json")], body.to_string()).into_response())
}

#[utoipa::path(get, path = "/v1/ops/checks", tag = "operations",
    responses((status = 200, description = "Every check with its schedule and latest run (ops, vendor)")))]
/// `GET /v1/ops/checks` (ops, vendor).
pub async fn checks(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "the checks").await?;
    let latest = state.store.latest_checks().await?;
    let list: Vec<Value> = state
        .checks
        .entries()
        .map(|e| {
            let name = e.check.name();
            json!({
                "name": name, "kind": e.check.kind(), "schedule": e.schedule.as_str(),
                "timeout_secs": e.timeout.as_secs(),
                "next_run": e.schedule.next_after(chrono::Utc::now()).map(|t| t.to_rfc3339()),
                "latest": latest.iter().find(|r| r.name == name),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "checks": list })))
}

/// Query of a history.
#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/ops/checks/{name}/history", tag = "operations",
    params(("name" = String, Path), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "Runs, newest first (ops, vendor)")))]
/// `GET /v1/ops/checks/{name}/history` (ops, vendor).
pub async fn history(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "check history").await?;
    if !state.checks.entries().any(|e| e.check.name() == name) {
        return Err(Problem::NotFound(format!("there is no check {name:?}")));
    }
    let runs = state.store.check_history(&name, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(json_response(StatusCode::OK, &json!({ "check": name, "runs": runs })))
}

#[utoipa::path(post, path = "/v1/ops/checks/{name}/run", tag = "operations",
    params(("name" = String, Path)),
    responses((status = 200, description = "The run's result (ops)"), (status = 409, body = crate::openapi::Problem)))]
/// `POST /v1/ops/checks/{name}/run` (ops): runs a check now, unless it is already running.
pub async fn run(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops], "running a check").await?;
    let entry = NewEntry { detail: Some(json!({ "check_run": name })), ..NewEntry::new(who.id(), Action::Admin, "ok") };
    match state.store.audit(entry).await {
        Ok(_) => {}
        // A check reads no citizen data, and on a full disk running `storage` is how ops learn
        // why publishes fail: the run goes ahead unaudited, and the log says so.
        Err(crate::store::StoreError::Full) => {
            tracing::warn!(principal = who.id(), check = %crate::mask::scrub(&name), "disk full: a manual check run is not audited");
        }
        Err(e) => return Err(e.into()),
    }
    match state.checks.run_now(&name, ops::runner::Trigger::Manual).await {
        Ok(r) => Ok(json_response(StatusCode::OK, &r)),
        Err(ops::runner::RunError::Unknown(_)) => Err(Problem::NotFound(format!("there is no check {name:?}"))),
        Err(e @ ops::runner::RunError::AlreadyRunning(_)) => Err(Problem::Busy(e.to_string())),
    }
}

#[utoipa::path(get, path = "/v1/ops/alerts", tag = "operations",
    params(("limit" = Option<u32>, Query)),
    responses((status = 200, description = "The alert log, newest first, with delivery state (ops, vendor)")))]
/// `GET /v1/ops/alerts` (ops, vendor).
pub async fn alerts(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "the alert log").await?;
    let alerts = state.store.alerts(q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(json_response(StatusCode::OK, &json!({ "alerts": alerts })))
}

/// Brings the scrape-time gauges up to date and encodes every metric.
pub async fn exposition(state: &AppState) -> Result<String, Problem> {
    let m = &state.metrics;
    for c in state.store.delivery_counts().await? {
        let set = |st: &str, v: u64| {
            m.backlog
                .get_or_create(&crate::metrics::BacklogLabels {
                    subscription: c.subscription.clone(),
                    state: st.to_owned(),
                })
                .set(v as i64)
        };
        set("pending", c.pending);
        set("dead", c.dead);
    }
    for r in state.store.latest_checks().await? {
        let level = match r.status.as_str() {
            "ok" => 0,
            "warn" => 1,
            _ => 2,
        };
        m.checks.get_or_create(&crate::metrics::CheckLabels { check: r.name }).set(level);
    }
    let w = state.store.writer_stats();
    m.writer_totals(w.commits, w.operations);
    if let Some(wal) = &w.wal {
        m.wal(wal, chrono::Utc::now().timestamp_millis());
    }
    m.encode().map_err(|e| Problem::Internal(e.to_string()))
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition (ops, vendor)")))]
/// `GET /metrics` (ops, vendor).
pub async fn metrics(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "metrics").await?;
    let text = exposition(&state).await?;
    Ok(negotiate(&headers, text))
}

/// OpenMetrics for scrapers that ask for it, the Prometheus text format otherwise.
pub fn negotiate(headers: &axum::http::HeaderMap, openmetrics: String) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, crate::metrics::OPENMETRICS)], openmetrics).into_response()
    } else {
        ([(header::CONTENT_TYPE, crate::metrics::PROMETHEUS_TEXT)], crate::metrics::to_prometheus_text(&openmetrics))
            .into_response()
    }
}

/// Query of the SLA report.
#[derive(Deserialize)]
pub struct SlaQuery {
    month: Option<String>,
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/ops/reports/sla", tag = "operations",
    params(("month" = String, Query, description = "YYYY-MM in the hub's time zone", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$"), ("format" = Option<String>, Query, description = "json (default) or html", pattern = "^(json|html)$")),
    responses((status = 200, description = "The signed SLA report (ops, vendor)")))]
/// `GET /v1/ops/reports/sla?month=YYYY-MM` (ops, vendor).
pub async fn sla(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: axum::http::HeaderMap,
    Query(q): Query<SlaQuery>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "the SLA report").await?;
    let month = q.month.ok_or_else(|| Problem::BadRequest("month=YYYY-MM is required".into()))?;
    let signed = crate::report::sla(
        state.store.as_ref(),
        &state.keys,
        state.config.hub.name.get_ref(),
        state.config.timezone(),
        &month,
    )
    .await?;
    if super::wants_html(q.format.as_deref(), &headers)? {
        return Ok(super::report_page(crate::report::html(&signed)));
    }
    Ok(json_response(StatusCode::OK, &signed))
}

#[utoipa::path(get, path = "/v1/ops/reports/documents-spared", tag = "operations",
    params(("month" = String, Query, description = "YYYY-MM in the hub's time zone", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$"), ("format" = Option<String>, Query, description = "json (default) or html", pattern = "^(json|html)$")),
    responses((status = 200, description = "The signed monthly report of paper documents the services' reads replaced (ops, vendor, auditor)"),
              (status = 400, body = crate::openapi::Problem), (status = 403, body = crate::openapi::Problem)))]
/// `GET /v1/ops/reports/documents-spared?month=YYYY-MM` (ops, vendor, auditors): counts only.
pub async fn documents_spared(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: axum::http::HeaderMap,
    Query(q): Query<SlaQuery>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor, Role::Auditor], "the documents-spared report").await?;
    let month = q.month.ok_or_else(|| Problem::BadRequest("month=YYYY-MM is required".into()))?;
    let signed = crate::services::documents_spared(state.store.as_ref(), &state.keys, &state.config, &month).await?;
    if super::wants_html(q.format.as_deref(), &headers)? {
        return Ok(super::report_page(crate::services::html(&signed)));
    }
    Ok(json_response(StatusCode::OK, &signed))
}
