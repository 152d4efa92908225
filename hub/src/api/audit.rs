//! Endpoints over the audit chain: export for auditors, verification (counts and digests only,
//! so ops and the vendor may call it), and the citizen portal's access log.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::Query;
use super::{json_response, read_request, AppState, Problem};
use crate::catalog::{formats, Violation};
use crate::config::Role;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;

/// The audit log, its verification and the citizen access log.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/access-log", post(access_log))
}

/// Query of the export.
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

/// `GET /v1/audit?after=SEQ&limit=N` (auditor).
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("after" = Option<u64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "Entries after the sequence number (auditor)")))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Auditor], "the audit log").await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state.store.audit_after(q.after, limit).await?;
    let entry = NewEntry {
        detail: Some(json!({ "export": { "after": q.after, "limit": limit, "count": entries.len() } })),
        ..NewEntry::new(who.id(), Action::Admin, "ok")
    };
    state.store.audit(entry).await?;
    let next = entries.last().map_or(q.after, |e| e.seq);
    Ok(json_response(StatusCode::OK, &json!({ "entries": entries, "next_after": next })))
}

/// `GET /v1/audit/verify` (auditor, ops, vendor).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "Chain verification: counts and digests only")))]
pub async fn verify(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Auditor, Role::Ops, Role::Vendor], "audit verification").await?;
    let body = match state.store.verify_audit().await? {
        Ok(r) => json!({
            "ok": true, "entries": r.entries, "head_seq": r.head_seq,
            "head_digest": r.head_digest, "checkpoints": r.checkpoints,
        }),
        Err(b) => json!({ "ok": false, "first_bad_seq": b.seq, "reason": b.reason }),
    };
    let entry =
        NewEntry { detail: Some(json!({ "verify": body["ok"] })), ..NewEntry::new(who.id(), Action::Admin, "ok") };
    state.store.audit(entry).await?;
    Ok(json_response(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogRequest {
    subject: Value,
}

/// `POST /v1/access-log` (portal): who read or received this person's records, when, for what.
#[utoipa::path(post, path = "/v1/access-log", tag = "audit",
    request_body(content = Object, content_type = "application/json", description = "{\"subject\"}"),
    responses((status = 200, description = "Who read or received this person's records (portal)")))]
pub async fn access_log(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Portal], "the access log").await?;
    let invalid = || {
        Problem::InvalidRequest(
            "the body must be {\"subject\": resident ID or credit code}".into(),
            vec![Violation {
                pointer: "/subject".into(),
                message: "must be a valid resident ID number or unified social credit code".into(),
            }],
        )
    };
    let req: AccessLogRequest = read_request(&headers, body, 16 * 1024, &invalid).await?;
    let subject = req.subject.as_str().unwrap_or_default();
    if !(formats::is_resident_id(subject) || formats::is_uscc(subject)) {
        return Err(invalid());
    }
    let hash = state.keys.subject_hash(subject);
    let entries = state.store.audit_by_subject(&hash, 1000).await?;
    // When each department took each notice: acknowledged on its notice feed, or confirmed by
    // the receiver of the push subscription that carried it. Keyed (department, type, key, version).
    let taken: std::collections::HashMap<(&str, &str, &str, u64), &str> = entries
        .iter()
        .filter(|e| {
            let d = e.detail.as_ref();
            e.action == "acknowledge"
                || (e.action == "deliver"
                    && e.outcome == "ok"
                    && d.is_some_and(|d| d["notice"].is_string() && d["event_id"].is_string()))
        })
        .filter_map(|e| {
            let (t, k, v) = (e.record_type.as_deref()?, e.record_key.as_deref()?, e.record_version?);
            Some(((e.actor.as_str(), t, k, v), e.time.as_str()))
        })
        .collect();
    let accesses: Vec<Value> = entries
        .iter()
        .filter(|e| match e.action.as_str() {
            "read" | "lookup" | "deliver" => true,
            // A correction or recall: who withdrew the record, and each department told of it.
            "revoke" | "notice" => true,
            // A department's work on the person's joint case (opening it, doing or refusing a
            // step); the events the hub sent are in the deliveries.
            "case" => {
                state.config.department(&e.actor).is_some()
                    && e.detail.as_ref().is_some_and(|d| d.get("transition").is_some())
            }
            _ => false,
        })
        .map(|e| {
            let detail = e.detail.as_ref();
            // A notice's entry is the owner's; the department it names is the one told.
            let department = match (e.action.as_str(), detail.and_then(|d| d["to"].as_str())) {
                ("notice", Some(to)) => to,
                _ => e.actor.as_str(),
            };
            let name = state.config.department(department).map(|d| d.name.clone());
            let record_type = match e.action.as_str() {
                "notice" => detail.map(|d| d["record_type"].clone()).unwrap_or_default(),
                _ => json!(e.record_type),
            };
            let mut v = json!({
                "time": e.time, "department": department, "department_name": name, "action": e.action,
                "record_type": record_type, "purpose": e.purpose, "audit_seq": e.seq,
            });
            if let Some(kind) = detail.and_then(|d| d.get("notice")).filter(|k| k.is_string()) {
                v["notice"] = kind.clone();
            }
            if e.action == "notice" {
                // The notice's own key is `DEPARTMENT/TYPE/KEY/VERSION`.
                let t = detail.and_then(|d| d["record_type"].as_str()).unwrap_or_default();
                let version = detail.and_then(|d| d["version"].as_u64()).unwrap_or_default();
                let key = e
                    .record_key
                    .as_deref()
                    .and_then(|k| k.strip_prefix(&format!("{department}/{t}/")))
                    .and_then(|k| k.strip_suffix(&format!("/{version}")));
                let when = key.and_then(|k| taken.get(&(department, t, k, version)));
                v["acknowledged"] = json!(when);
            }
            if let Some(d) = e.detail.as_ref().filter(|_| e.action == "case") {
                v["case"] = json!({ "case_type": d["case_type"], "transition": d["transition"], "step": d["step"] });
            }
            v
        })
        .collect();
    let entry = NewEntry {
        subjects: vec![hash],
        detail: Some(json!({ "accesses": accesses.len() })),
        ..NewEntry::new(who.id(), Action::AccessLog, "ok")
    };
    state.store.audit(entry).await?;
    Ok(json_response(StatusCode::OK, &json!({ "count": accesses.len(), "accesses": accesses })))
}
