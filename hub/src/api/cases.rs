//! The joint-case endpoints (CONTRACT.md, joint cases): open a case, read it, list a worklist,
//! answer a step. The engine (`cases::engine`) does the work; here are the caller checks (audited
//! when refused), the bodies, and the audit entry of every read before it is answered.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::records::idempotency_key;
use super::{is_json, json_response, parse_json, read_body, AppState, Context, Problem};
use crate::cases::engine::{CaseError, Cases, Outcome};
use crate::cases::model::{Answer, Case, RecordRef};
use crate::cases::CASE_TYPE;
use crate::catalog::Violation;
use crate::config::Role;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;
use crate::store::CaseQuery;

/// The header of a publish that completes a case step: `CASE/STEP`.
pub const CASE_STEP_HEADER: &str = "hub-case-step";

/// Case routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read, open))
        .routes(routes!(answer))
        .routes(routes!(report))
        .routes(routes!(desk))
}

impl AppState {
    /// A case error as the problem to send; refusals of the caller are audited first.
    async fn case_problem(&self, who: &Principal, e: CaseError) -> Problem {
        let ctx = Context { record_type: Some(CASE_TYPE), ..Default::default() };
        match Problem::from(e) {
            Problem::Forbidden(why) => self.refuse(who, why, ctx).await,
            other => other,
        }
    }

    /// Audits that `who` is shown these cases, then the caller may answer.
    async fn audit_case_read(&self, who: &Principal, cases: &[(&Case, u64)], detail: Value) -> Result<(), Problem> {
        let mut subjects = Vec::new();
        for (c, _) in cases {
            if let Ok(t) = self.cases.case_type(&c.case_type) {
                for s in self.cases.subjects(t, c) {
                    if !subjects.contains(&s) {
                        subjects.push(s);
                    }
                }
            }
        }
        let one = (cases.len() == 1).then(|| cases[0]);
        let entry = NewEntry {
            record_type: Some(CASE_TYPE.into()),
            record_key: one.map(|(c, _)| c.id.clone()),
            record_version: one.map(|(_, v)| v),
            subjects,
            detail: Some(detail),
            ..NewEntry::new(who.id(), Action::Read, "ok")
        };
        self.store.audit(entry).await?;
        Ok(())
    }
}

/// What the opener hears: the case as the contract shapes it, with the audit entry of its version.
fn opened(o: &Outcome, view: Value) -> Value {
    let mut v = view;
    v["audit_seq"] = json!(o.audit_seq);
    v
}

/// `POST /v1/cases/{case_type}`: a department allowed to open the type sends the application.
// One path template with the read: OpenAPI takes `/v1/cases/{a}` and `/v1/cases/{b}` for one path.
#[utoipa::path(post, path = "/v1/cases/{case}", tag = "cases",
    params(("case" = String, Path, description = "The case type id (a case gets its own id when opened)"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key and application: the case opened then")),
    request_body(content = Object, content_type = "application/json", description = "The application, of the case type's schema"),
    responses((status = 201, description = "Opened: the case with its steps"),
              (status = 200, description = "Idempotent replay: the case as it is now"),
              (status = 400, body = crate::openapi::Problem), (status = 403, body = crate::openapi::Problem),
              (status = 404, body = crate::openapi::Problem), (status = 409, body = crate::openapi::Problem),
              (status = 415, body = crate::openapi::Problem), (status = 422, body = crate::openapi::Problem)))]
pub async fn open(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(type_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let t = match state.cases.case_type(&type_id) {
        Ok(t) => t,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    if !Cases::may_open(t, &who) {
        let why = format!("only {} may open a {} case", t.openers.join(", "), t.id);
        return Err(state.case_problem(&who, CaseError::NotOpener(why)).await);
    }
    let bytes = read_body(&headers, body, state.config.server.max_body_bytes, is_json, "application/json").await?;
    let idem = idempotency_key(&headers)?;
    let o = match state.cases.open(t, who.id(), &bytes, idem).await {
        Ok(o) => o,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    let view = match state.cases.view(&o.case, o.version, &who).await {
        Ok(v) => v,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    let status = if o.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let mut resp = json_response(status, &opened(&o, view));
    if let Ok(v) = format!("/v1/cases/{}", o.case.id).parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `GET /v1/cases/{id}`: the opener and auditors see all, a step's department its own steps.
#[utoipa::path(get, path = "/v1/cases/{case}", tag = "cases",
    params(("case" = String, Path, description = "Case id")),
    responses((status = 200, description = "The case as the caller may see it"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem)))]
pub async fn read(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (case, rec) = match state.cases.load(&id).await {
        Ok(c) => c,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    let view = match state.cases.view(&case, rec.version, &who).await {
        Ok(v) => v,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    state.audit_case_read(&who, &[(&case, rec.version)], json!({ "case": case.id })).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Query of a case list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Cases in this state.
    #[param(pattern = "^(open|completed|refused)$")]
    state: Option<String>,
    /// `mine`: cases with a step of the caller's.
    #[param(pattern = "^mine$")]
    step: Option<String>,
    /// With `step=mine`: steps in this state (default `ready`).
    #[param(pattern = "^(waiting|ready|done|refused|cancelled)$")]
    step_state: Option<String>,
    /// Cases of this type.
    case_type: Option<String>,
    /// Most cases on the page (default 50; more than 500 reads as 500).
    #[param(minimum = 0)]
    limit: Option<u32>,
    /// The `next` cursor of a previous page.
    #[param(pattern = "^[^~]*~[^~]*$")]
    before: Option<String>,
}

fn bad(name: &str, message: &str) -> Problem {
    Problem::InvalidParameter(
        format!("query parameter {name}: {message}"),
        vec![Violation { pointer: format!("/query/{name}"), message: message.to_owned() }],
    )
}

/// `GET /v1/cases?state=open&step=mine`: a department's worklist (cases with a step of its in
/// `step_state`, default `ready`), or without `step=mine` the cases it opened; auditors see every
/// case. Newest first; `next` pages on.
#[utoipa::path(get, path = "/v1/cases", tag = "cases",
    params(ListQuery),
    responses((status = 200, description = "The cases, as the caller may see each"),
              (status = 400, body = crate::openapi::Problem), (status = 403, body = crate::openapi::Problem)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    const CASE_STATES: [&str; 3] = ["open", "completed", "refused"];
    const STEP_STATES: [&str; 5] = ["waiting", "ready", "done", "refused", "cancelled"];
    if q.state.as_deref().is_some_and(|s| !CASE_STATES.contains(&s)) {
        return Err(bad("state", "must be open, completed or refused"));
    }
    if q.step.as_deref().is_some_and(|s| s != "mine") {
        return Err(bad("step", "must be mine"));
    }
    if q.step_state.as_deref().is_some_and(|s| !STEP_STATES.contains(&s)) {
        return Err(bad("step_state", "must be waiting, ready, done, refused or cancelled"));
    }
    let before = match &q.before {
        None => None,
        Some(c) => Some(
            c.rsplit_once('~')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad("before", "must be a next cursor of this list"))?,
        ),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let mut query = CaseQuery {
        states: q.state.iter().cloned().collect(),
        case_type: q.case_type.clone(),
        before,
        limit,
        ..CaseQuery::default()
    };
    match (&who, q.step.is_some()) {
        (Principal::Department(d), true) => {
            query.step_department = Some(d.clone());
            query.step_states = vec![q.step_state.clone().unwrap_or_else(|| "ready".into())];
        }
        (Principal::Department(d), false) => query.opener = Some(d.clone()),
        (Principal::Operator(_, Role::Auditor), false) => {}
        _ => {
            let why = "case lists are for departments (their cases and worklists) and auditors".to_owned();
            return Err(state.case_problem(&who, CaseError::NotParty(why)).await);
        }
    }
    let rows = state.store.cases(query).await?;
    let mut cases = Vec::with_capacity(rows.len());
    for row in &rows {
        match state.cases.load(&row.id).await {
            Ok((case, rec)) => cases.push((case, rec.version)),
            Err(CaseError::NoCase(_)) => continue,
            Err(e) => return Err(state.case_problem(&who, e).await),
        }
    }
    let mut views = Vec::with_capacity(cases.len());
    for (case, version) in &cases {
        match state.cases.view(case, *version, &who).await {
            Ok(v) => views.push(v),
            Err(CaseError::NotParty(_)) => continue,
            Err(e) => return Err(state.case_problem(&who, e).await),
        }
    }
    let shown: Vec<(&Case, u64)> = cases.iter().map(|(c, v)| (c, *v)).collect();
    let ids: Vec<&str> = cases.iter().map(|(c, _)| c.id.as_str()).collect();
    state.audit_case_read(&who, &shown, json!({ "cases": ids, "list": true })).await?;
    let next =
        (rows.len() == limit as usize).then(|| rows.last().map(|r| format!("{}~{}", r.opened_at, r.id))).flatten();
    Ok(json_response(StatusCode::OK, &json!({ "count": views.len(), "cases": views, "next": next })))
}

/// Body of a step's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    outcome: String,
    #[serde(default)]
    record: Option<RecordRef>,
    #[serde(default)]
    reasons: Option<Vec<String>>,
}

/// `POST /v1/cases/{id}/steps/{step}`: the step's department says done (with the record it
/// published, for a step that completes with one) or refused (with reasons).
#[utoipa::path(post, path = "/v1/cases/{case}/steps/{step}", tag = "cases",
    params(("case" = String, Path), ("step" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key and answer: the case as it is now")),
    request_body(content = crate::openapi::StepAnswer, content_type = "application/json", description = "Done (with the record the step produced) or refused (with the reasons the applicant reads)"),
    responses((status = 200, description = "Taken: the case as the caller may see it"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 409, body = crate::openapi::Problem), (status = 422, body = crate::openapi::Problem)))]
pub async fn answer(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let Principal::Department(dept) = &who else {
        let why = "only the step's department answers it".to_owned();
        return Err(state.case_problem(&who, CaseError::NotParty(why)).await);
    };
    let bytes = read_body(&headers, body, 64 * 1024, is_json, "application/json").await?;
    let doc = parse_json(&bytes)?;
    let shape = "the answer is {\"outcome\":\"done\",\"record\"?} or {\"outcome\":\"refused\",\"reasons\":[..]}";
    let b: AnswerBody = serde_json::from_value(doc).map_err(|e| {
        Problem::InvalidRequest(
            shape.into(),
            vec![Violation { pointer: String::new(), message: crate::mask::scrub(&e.to_string()) }],
        )
    })?;
    let answer = match (b.outcome.as_str(), b.record, b.reasons) {
        ("done", record, None) => Answer::Done(record),
        ("refused", None, Some(reasons)) => Answer::Refused(reasons),
        ("done" | "refused", ..) => {
            return Err(Problem::InvalidRequest(
                shape.into(),
                vec![Violation {
                    pointer: "/outcome".into(),
                    message: "done takes a record, refused takes reasons".into(),
                }],
            ))
        }
        _ => {
            return Err(Problem::InvalidRequest(
                shape.into(),
                vec![Violation { pointer: "/outcome".into(), message: "must be done or refused".into() }],
            ))
        }
    };
    let o = match state.cases.answer(&id, &step, dept, answer, idempotency_key(&headers)?).await {
        Ok(o) => o,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    let view = match state.cases.view(&o.case, o.version, &who).await {
        Ok(v) => v,
        Err(e) => return Err(state.case_problem(&who, e).await),
    };
    Ok(json_response(StatusCode::OK, &opened(&o, view)))
}

/// The case and step a publish's `Hub-Case-Step` header names, if it has one.
pub(super) fn case_step(headers: &HeaderMap) -> Result<Option<(String, String)>, Problem> {
    let Some(v) = headers.get(CASE_STEP_HEADER) else { return Ok(None) };
    let text = v.to_str().ok().and_then(|s| s.split_once('/')).filter(|(c, s)| {
        let ok = |x: &str| {
            !x.is_empty() && x.len() <= 128 && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        };
        ok(c) && ok(s)
    });
    text.map(|(c, s)| Some((c.to_owned(), s.to_owned()))).ok_or_else(|| {
        Problem::BadRequest("Hub-Case-Step must be CASE/STEP (a case id and one of its step ids)".into())
    })
}

/// Publishes a prepared version as the record that completes a case step.
pub(super) async fn publish_for_step(
    state: &AppState,
    who: &Principal,
    (case, step): (String, String),
    v: crate::store::NewVersion,
) -> Result<crate::store::Published, Problem> {
    match state.cases.publish_for_step(&case, &step, v).await {
        Ok(p) => Ok(p),
        Err(e) => Err(state.case_problem(who, e).await),
    }
}

/// Query of the case report.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    month: Option<String>,
    format: Option<String>,
}

/// `GET /v1/ops/reports/cases?month=YYYY-MM`: the signed monthly case report (ops and auditors
/// with the late steps, the vendor counts only).
#[utoipa::path(get, path = "/v1/ops/reports/cases", tag = "cases",
    params(("month" = String, Query, description = "YYYY-MM in the hub's time zone", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$"), ("format" = Option<String>, Query, description = "json (default) or html", pattern = "^(json|html)$")),
    responses((status = 200, description = "The signed case report (JSON, or its printable page)"),
              (status = 400, body = crate::openapi::Problem), (status = 403, body = crate::openapi::Problem)))]
pub async fn report(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Problem> {
    let role = state.require_role(&who, &[Role::Ops, Role::Vendor, Role::Auditor], "the case report").await?;
    let month = q.month.ok_or_else(|| bad("month", "is required: YYYY-MM"))?;
    let signed = crate::cases::report::monthly(
        state.store.as_ref(),
        &state.catalog.cases,
        &state.keys,
        state.config.hub.name.get_ref(),
        state.config.timezone(),
        &month,
        role == Role::Vendor,
    )
    .await
    .map_err(|e| match e {
        crate::report::ReportError::BadMonth => bad("month", "must be YYYY-MM"),
        crate::report::ReportError::Store(s) => s.into(),
    })?;
    if super::wants_html(q.format.as_deref(), &headers)? {
        return Ok(super::report_page(crate::cases::report::html(&signed)));
    }
    Ok(json_response(StatusCode::OK, &signed))
}

/// `GET /v1/ops/cases`: the case desk now: open cases per type, late steps per department, and
/// (for ops and auditors) the late steps themselves; the vendor gets the counts only.
#[utoipa::path(get, path = "/v1/ops/cases", tag = "cases",
    responses((status = 200, description = "Open cases and late steps"),
              (status = 403, body = crate::openapi::Problem)))]
pub async fn desk(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, Problem> {
    let role = state.require_role(&who, &[Role::Ops, Role::Vendor, Role::Auditor], "the case desk").await?;
    let today = chrono::Utc::now().with_timezone(&state.config.timezone()).date_naive().to_string();
    let counts = state.store.case_counts(&today).await?;
    let open = |id: &str| counts.open.iter().find(|(t, _)| t == id).map_or(0, |(_, n)| *n);
    let types: Vec<Value> = state
        .catalog
        .cases
        .iter()
        .map(|t| json!({ "case_type": t.id, "title": t.title, "open": open(&t.id) }))
        .collect();
    let late: Vec<Value> = counts.late.iter().map(|(d, n)| json!({ "department": d, "late": n })).collect();
    let mut body = json!({ "today": today, "case_types": types, "late_by_department": late });
    if role != Role::Vendor {
        body["late_steps"] = serde_json::to_value(&counts.late_steps).map_err(|e| Problem::Internal(e.to_string()))?;
    }
    Ok(json_response(StatusCode::OK, &body))
}
