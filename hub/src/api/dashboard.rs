//! The operations dashboard (`/ops/`): a server-rendered page for the ops desk and the vendor
//! with check states and recent history, backlog and dead letters per subscription, certificate
//! expiry and throughput. Rendered with maud (escaped by construction), no scripts, no external
//! assets, a strict Content-Security-Policy; it refreshes itself every 30 seconds.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, DOCTYPE};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Problem};
use crate::config::Role;
use crate::policy::Principal;

/// The operations dashboard.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page)).routes(routes!(style))
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ops/` (ops, vendor).
#[utoipa::path(get, path = "/ops/", tag = "health",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
pub async fn page(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "the dashboard").await?;
    render(&state).await
}

/// `GET /ops/style.css`.
#[utoipa::path(get, path = "/ops/style.css", tag = "health",
    responses((status = 200, description = "The dashboard's style sheet", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("dashboard.css")).into_response()
}

fn age(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let secs = (chrono::Utc::now().timestamp_millis() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// Renders the page (also served on the loopback listener).
pub async fn render(state: &AppState) -> Result<Response, Problem> {
    let latest = state.store.latest_checks().await?;
    let mut histories = Vec::new();
    for e in state.checks.entries() {
        histories.push(state.store.check_history(e.check.name(), 12).await?);
    }
    let counts = state.store.delivery_counts().await?;
    let hour_ago =
        (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let hour = state.store.audit_action_counts(&hour_ago, &now).await?;
    let in_hour = |a: &str| hour.iter().find(|(x, _)| x == a).map_or(0, |(_, n)| *n);
    let w = state.store.writer_stats();
    let overall = latest.iter().map(|r| r.status.as_str()).fold("ok", |worst, s| match (worst, s) {
        (_, "critical") | ("critical", _) => "critical",
        (_, "warn") | ("warn", _) => "warn",
        _ => "ok",
    });
    let certificates = latest.iter().find(|r| r.kind == "certificates");
    let today = chrono::Utc::now().with_timezone(&state.config.timezone()).date_naive().to_string();
    let cases = state.store.case_counts(&today).await?;
    let markup = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="30";
                title { "运维 Operations — " (state.config.hub.name.get_ref()) }
                link rel="stylesheet" href="/ops/style.css";
            }
            body {
                h1 { (state.config.hub.display_name.as_deref().unwrap_or("Conghua Data Exchange Hub")) }
                p { "Overall: " span class=(overall) { (overall) } span.muted { " · refreshed every 30 s · " (now) } }
                h2 { "Checks 检查" }
                table {
                    tr { th { "check" } th { "kind" } th { "status" } th { "last run" } th { "summary" } th { "recent (newest left)" } }
                    @for (e, history) in state.checks.entries().zip(&histories) {
                        @let run = latest.iter().find(|r| r.name == e.check.name());
                        tr {
                            td { (e.check.name()) }
                            td.muted { (e.check.kind()) }
                            td class=(run.map_or("warn", |r| r.status.as_str())) { (run.map_or("not run yet", |r| r.status.as_str())) }
                            td.muted { (run.map_or("-", |r| r.started.as_str())) }
                            td { (run.map_or("", |r| r.summary.as_str())) }
                            td.recent { @for r in history { span class=(r.status) title=(r.started) { "■" } } }
                        }
                    }
                }
                h2 { "Delivery 数据交付" }
                table {
                    tr { th { "subscription" } th { "department" } th { "mode" } th.num { "pending" } th.num { "oldest" } th.num { "dead" } th { "state" } }
                    @for s in state.delivery.all() {
                        @let c = counts.iter().find(|c| c.subscription == s.name);
                        tr {
                            td { (s.name) }
                            td { (s.department) " " span.muted { (state.config.department(&s.department).map_or("", |d| d.name.as_str())) } }
                            td { (if s.direction == adapters::Direction::Pull { "feed" } else { "push" }) }
                            td.num { (c.map_or(0, |c| c.pending)) }
                            td.num { (age(c.and_then(|c| c.oldest_pending_ms))) }
                            td.num class=(if c.is_some_and(|c| c.dead > 0) { "critical" } else { "" }) { (c.map_or(0, |c| c.dead)) }
                            td class=(if s.is_disabled() { "critical" } else { "ok" }) { (if s.is_disabled() { "stopped" } else { "running" }) }
                        }
                    }
                }
                @if state.catalog.cases.iter().next().is_some() {
                    h2 { "Joint cases 联办案件" }
                    table {
                        tr { th { "case type" } th.num { "open" } }
                        @for t in state.catalog.cases.iter() {
                            tr { td { (t.title) } td.num { (cases.open.iter().find(|(k, _)| *k == t.id).map_or(0, |(_, n)| *n)) } }
                        }
                    }
                    table {
                        tr { th { "department" } th.num { "late steps" } }
                        @for (d, n) in &cases.late {
                            tr {
                                td { (d) " " span.muted { (state.config.department(d).map_or("", |x| x.name.as_str())) } }
                                td.num.warn { (n) }
                            }
                        }
                        @if cases.late.is_empty() { tr { td.muted colspan="2" { "no step is past its time limit" } } }
                    }
                    p { a href=(format!("/v1/ops/reports/cases?month={}&format=html", today.get(..7).unwrap_or_default())) { "This month's signed case report 本月联办案件报告" }
                        span.muted { " · the late steps themselves: hub cases, or GET /v1/ops/cases" } }
                }
                h2 { "Certificates 证书" }
                p class=(certificates.map_or("warn", |c| c.status.as_str())) { (certificates.map_or("no certificates check configured", |c| c.summary.as_str())) }
                @if let Some(wal) = &w.wal {
                    h2 { "Write-ahead log 预写日志" }
                    p class=(if wal.above_bound() { "warn" } else { "ok" }) {
                        (format!("{:.1}", wal.bytes as f64 / 1048576.0)) " MiB of a " (wal.limit_bytes >> 20) " MiB bound · last complete checkpoint "
                        (age(Some(wal.last_complete_ms))) " ago · " (wal.restarts) " restarts at the bound, " (wal.held_up) " held up by readers"
                    }
                }
                h2 { "Throughput 吞吐 (last hour)" }
                p {
                    (in_hour("publish")) " records published · " (in_hour("read") + in_hour("lookup")) " reads and lookups · "
                    (in_hour("deliver")) " deliveries · " (in_hour("dead_letter")) " dead letters · "
                    "group commit: " (w.operations) " operations in " (w.commits) " commits since start"
                }
            }
        }
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        markup.into_string(),
    )
        .into_response())
}
