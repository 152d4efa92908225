//! The citizen portal's access log (`POST /v1/access-log`): who read, looked up, received,
//! corrected or was told about a person's records, when and for what purpose, paged over the
//! person's whole history, each record key shown only to a reader whose grant included it.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_response, read_request, AppState, Problem};
use crate::catalog::{formats, Violation};
use crate::config::Role;
use crate::ledger::{Action, Entry, NewEntry};
use crate::policy::{Access, Principal};

/// Audit entries read per store call while filtering for accesses.
const SCAN: u32 = 1000;
/// Accesses per page unless the portal asks for fewer (the most the log answered before it paged).
const PAGE: usize = 1000;
/// The most accesses one page holds.
const PAGE_MAX: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogRequest {
    subject: Value,
    #[serde(default)]
    before: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
}

/// When each department took each notice, keyed (department, type, key, version): acknowledged
/// on its notice feed, or confirmed by the receiver of the push subscription that carried it.
type Taken = HashMap<(String, String, String, u64), String>;

fn note_taken(taken: &mut Taken, e: &Entry) {
    let d = e.detail.as_ref();
    let took = e.action == "acknowledge"
        || (e.action == "deliver"
            && e.outcome == "ok"
            && d.is_some_and(|d| d["notice"].is_string() && d["event_id"].is_string()));
    if let (true, Some(t), Some(k), Some(v)) = (took, &e.record_type, &e.record_key, e.record_version) {
        taken.entry((e.actor.clone(), t.clone(), k.clone(), v)).or_insert_with(|| e.time.clone());
    }
}

fn is_access(state: &AppState, e: &Entry) -> bool {
    match e.action.as_str() {
        "read" | "lookup" | "deliver" => true,
        // A correction or recall: who withdrew the record, and each department told of it.
        "revoke" | "notice" => true,
        // A department's work on the person's joint case (opening it, doing or refusing a step);
        // the events the hub sent are in the deliveries.
        "case" => {
            state.config.department(&e.actor).is_some()
                && e.detail.as_ref().is_some_and(|d| d.get("transition").is_some())
        }
        _ => false,
    }
}

/// The entry's own record key (a notice's key is `DEPARTMENT/TYPE/KEY/VERSION`).
fn record_of<'a>(e: &'a Entry, department: &str) -> (Option<&'a str>, Option<&'a str>, Option<u64>) {
    let detail = e.detail.as_ref();
    if e.action == "notice" {
        let t = detail.and_then(|d| d["record_type"].as_str());
        let version = detail.and_then(|d| d["version"].as_u64());
        let key = match (t, version) {
            (Some(t), Some(v)) => e
                .record_key
                .as_deref()
                .and_then(|k| k.strip_prefix(department)?.strip_prefix('/')?.strip_prefix(t)?.strip_prefix('/'))
                .and_then(|k| k.strip_suffix(&format!("/{v}"))),
            _ => None,
        };
        return (t, key, version);
    }
    (e.record_type.as_deref(), e.record_key.as_deref(), e.record_version)
}

/// `POST /v1/access-log` (portal) body `{"subject", "before"?, "limit"?}`: one page of accesses,
/// newest first, and `next`, the `before` of the following page (null on the last).
#[utoipa::path(post, path = "/v1/access-log", tag = "audit",
    request_body(content = Object, content_type = "application/json", description = "{\"subject\", \"before\"?: audit seq, \"limit\"?: 1..1000}"),
    responses((status = 200, description = "Who read or received this person's records, a page at a time (portal)"),
              (status = 422, body = crate::openapi::Problem)))]
pub async fn access_log(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Portal], "the access log").await?;
    let bad = |pointer: &str, message: &str| {
        Problem::InvalidRequest(
            "the body must be {\"subject\": resident ID or credit code, \"before\"?, \"limit\"?}".into(),
            vec![Violation { pointer: pointer.into(), message: message.into() }],
        )
    };
    let invalid = || bad("/subject", "must be a valid resident ID number or unified social credit code");
    let req: AccessLogRequest = read_request(&headers, body, 16 * 1024, &invalid).await?;
    let subject = req.subject.as_str().unwrap_or_default();
    if !(formats::is_resident_id(subject) || formats::is_uscc(subject)) {
        return Err(invalid());
    }
    let before = match &req.before {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|b| *b > 0)
                .ok_or_else(|| bad("/before", "must be a positive audit sequence (a page's next)"))?,
        ),
    };
    let limit = match &req.limit {
        None | Some(Value::Null) => PAGE,
        Some(v) => v
            .as_u64()
            .filter(|l| (1..=PAGE_MAX as u64).contains(l))
            .ok_or_else(|| bad("/limit", "must be an integer from 1 to 1000"))? as usize,
    };
    let hash = state.keys.subject_hash(subject);

    // Filter page by page until the page of accesses is full: nothing is capped before it.
    let (mut cursor, mut kept, mut taken, mut more) = (before.unwrap_or(u64::MAX), Vec::new(), Taken::new(), false);
    'scan: loop {
        let page = state.store.audit_by_subject_before(&hash, cursor, SCAN).await?;
        for e in &page {
            cursor = e.seq;
            note_taken(&mut taken, e);
            if is_access(&state, e) {
                if kept.len() == limit {
                    more = true;
                    break 'scan;
                }
                kept.push(e.clone());
            }
        }
        if page.len() < SCAN as usize {
            break;
        }
    }
    // A page after the first may hold notices whose acknowledgement (always later) is above it.
    if before.is_some() {
        for e in kept.iter().filter(|e| e.action == "notice") {
            let to = e.detail.as_ref().and_then(|d| d["to"].as_str()).unwrap_or_default().to_owned();
            if let (Some(t), Some(k), Some(v)) = record_of(e, &to) {
                if !taken.contains_key(&(to.clone(), t.to_owned(), k.to_owned(), v)) {
                    for later in state.store.audit_by_record(t, k, SCAN).await? {
                        note_taken(&mut taken, &later);
                    }
                }
            }
        }
    }

    let today = state.today();
    let mut sees_key: HashMap<(String, String, Option<String>), bool> = HashMap::new();
    let mut accesses = Vec::with_capacity(kept.len());
    for e in &kept {
        let detail = e.detail.as_ref();
        // A notice's entry is the owner's; the department it names is the one told.
        let department = match (e.action.as_str(), detail.and_then(|d| d["to"].as_str())) {
            ("notice", Some(to)) => to,
            _ => e.actor.as_str(),
        };
        let (record_type, key, version) = record_of(e, department);
        let name = state.config.department(department).map(|d| d.name.clone());
        let mut v = json!({
            "time": e.time, "department": department, "department_name": name, "action": e.action,
            "record_type": record_type, "purpose": e.purpose, "audit_seq": e.seq,
        });
        // The key only where the department's grant (for that purpose) included it.
        if let (Some(t), Some(k)) = (record_type, key) {
            let visible = *sees_key
                .entry((department.to_owned(), t.to_owned(), e.purpose.clone()))
                .or_insert_with(|| key_visible(&state, department, t, e.purpose.as_deref(), today));
            if visible {
                v["record_key"] = json!(k);
                v["record_version"] = json!(version);
            }
        }
        if let Some(kind) = detail.and_then(|d| d.get("notice")).filter(|k| k.is_string()) {
            v["notice"] = kind.clone();
        }
        if e.action == "notice" {
            let when = match (record_type, key, version) {
                (Some(t), Some(k), Some(ver)) => taken.get(&(department.to_owned(), t.to_owned(), k.to_owned(), ver)),
                _ => None,
            };
            v["acknowledged"] = json!(when);
        }
        if e.action == "lookup" {
            // What the lookup returned, by type (each `type/key@version` in its entry).
            let mut types: Vec<&str> = detail
                .and_then(|d| d["records"].as_array())
                .map(|r| r.iter().filter_map(Value::as_str).filter_map(|r| r.split_once('/').map(|(t, _)| t)).collect())
                .unwrap_or_default();
            types.sort_unstable();
            types.dedup();
            v["record_types"] = json!(types);
        }
        if e.action == "deliver" {
            let sub = detail.and_then(|d| d["subscription"].as_str());
            let adapter = sub
                .and_then(|s| state.config.subscriptions.iter().find(|c| c.name.get_ref() == s))
                .map(|c| c.adapter.get_ref().clone());
            v["subscription"] = json!(sub);
            v["adapter"] = json!(adapter);
        }
        if let Some(d) = detail.filter(|_| e.action == "case") {
            v["case"] = json!({ "case_type": d["case_type"], "transition": d["transition"], "step": d["step"] });
        }
        accesses.push(v);
    }
    let next = if more { kept.last().map(|e| e.seq) } else { None };
    let entry = NewEntry {
        subjects: vec![hash],
        detail: Some(json!({ "accesses": accesses.len(), "before": before, "next": next })),
        ..NewEntry::new(who.id(), Action::AccessLog, "ok")
    };
    state.store.audit(entry).await?;
    Ok(json_response(StatusCode::OK, &json!({ "count": accesses.len(), "accesses": accesses, "next": next })))
}

/// Whether `department` reading `record_type` for `purpose` saw the record's key: the owner and
/// unconditional readers see every field, a grant only its fields.
fn key_visible(
    state: &AppState,
    department: &str,
    record_type: &str,
    purpose: Option<&str>,
    today: chrono::NaiveDate,
) -> bool {
    let Some(t) = state.catalog.get(record_type) else { return false };
    let who = Principal::Department(department.to_owned());
    match state.policy.read_access(t, &who, purpose, today) {
        Ok(Access::Full) => true,
        Ok(Access::Fields(fields)) => fields.iter().any(|f| f.as_str() == t.key.as_str()),
        Err(_) => false,
    }
}
