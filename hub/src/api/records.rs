//! The department endpoints over records: publish, batch, read, history and lookup. A publish is
//! the owner check (audited when refused), media type and size here, then the record's way in
//! `exchange` (schema → canonical digest → routes → one durable commit → receipt). The read path
//! audits before it answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::{is_json, json_response, parse_json, read_body, AppState, Context, Problem};
use crate::catalog::pointer::project;
use crate::catalog::{formats, RecordType, Violation};
use crate::config::{is_kebab, Role};
use crate::exchange::notices::REVOKED;
use crate::ledger::{Action, NewEntry};
use crate::policy::{Access, Principal};
use crate::store::{NewVersion, Published, RecordVersion};

/// Publishing, reading, history and lookup.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(batch))
        .routes(routes!(read))
        .routes(routes!(history))
        .routes(routes!(revoke))
        .routes(routes!(lookup))
}

fn record_type<'a>(state: &'a AppState, id: &str) -> Result<&'a RecordType, Problem> {
    Ok(state.exchange.record_type(id)?)
}

/// Only the owner publishes or revokes (`doing`) records of its type; a refusal is audited.
async fn require_owner(
    state: &AppState,
    who: &Principal,
    t: &RecordType,
    doing: &str,
    key: Option<&str>,
) -> Result<(), Problem> {
    if matches!(who, Principal::Department(d) if *d == t.owner) {
        return Ok(());
    }
    let reason = format!("only {} may {doing} {}", t.owner, t.id);
    Err(state.refuse(who, reason, Context { record_type: Some(&t.id), record_key: key, ..Default::default() }).await)
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = v.to_str().ok().filter(|s| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()));
    text.map(|s| Some(s.to_owned()))
        .ok_or_else(|| Problem::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into()))
}

/// `POST /v1/records/{type}`.
#[utoipa::path(post, path = "/v1/records/{type}", tag = "records",
    params(("type" = String, Path, description = "Record type id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key and body: the original receipt"),
           ("Hub-Case-Step" = Option<String>, Header, description = "CASE/STEP: the record completes that step of a joint case, in the same commit")),
    request_body(content = Object, content_type = "application/json", description = "One record of the type's schema"),
    responses((status = 201, description = "Durable", body = crate::store::Receipt),
              (status = 200, description = "Idempotent replay", body = crate::store::Receipt),
              (status = 400, body = crate::openapi::Problem), (status = 401, body = crate::openapi::Problem),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 409, body = crate::openapi::Problem), (status = 413, body = crate::openapi::Problem),
              (status = 415, body = crate::openapi::Problem), (status = 422, body = crate::openapi::Problem)))]
pub async fn publish(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(type_id): Path<String>,
    Extension(trace): Extension<super::RecordTrace>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let t = record_type(&state, &type_id)?;
    require_owner(&state, &who, t, "publish", None).await?;
    let step = super::cases::case_step(&headers)?;
    let bytes = read_body(&headers, body, state.config.server.max_body_bytes, is_json, "application/json").await?;
    let idem = idempotency_key(&headers)?;
    let v = NewVersion { trace: trace.0, ..state.exchange.prepare(t, who.id(), &bytes, idem)? };
    let published = match step {
        // The record completes a case step: both commit together, or neither does.
        Some(step) => super::cases::publish_for_step(&state, &who, step, v).await?,
        None => state.exchange.publish(v).await?,
    };
    match published {
        Published::Created(receipt) => {
            let location = format!("/v1/records/{}/{}", receipt.record_type, receipt.key);
            let mut resp = json_response(StatusCode::CREATED, &receipt);
            if let Ok(v) = location.parse() {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Published::Replayed(receipt) => Ok(json_response(StatusCode::OK, &receipt)),
        Published::Conflict => Err(crate::exchange::PublishError::Conflict.into()),
    }
}

pub(super) fn is_ndjson(media: &str) -> bool {
    matches!(media, "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/jsonlines")
}

#[derive(Serialize)]
struct LineResult {
    line: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<crate::store::Receipt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<Value>,
}

/// `POST /v1/batch/{type}`: one result per line, in order; valid lines are stored even when
/// others fail, all in one group commit. With an `Idempotency-Key`, line N uses `KEY:N`.
#[utoipa::path(post, path = "/v1/batch/{type}", tag = "records",
    params(("type" = String, Path, description = "Record type id")),
    request_body(content = Vec<Object>, content_type = "application/x-ndjson", description = "One record of the type's schema a line"),
    responses((status = 200, description = "One result per line, in order: receipt or problem")))]
pub async fn batch(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(type_id): Path<String>,
    Extension(trace): Extension<super::RecordTrace>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let t = record_type(&state, &type_id)?;
    require_owner(&state, &who, t, "publish", None).await?;
    let limits = &state.config.server;
    let bytes = read_body(&headers, body, limits.max_batch_bytes, is_ndjson, "application/x-ndjson").await?;
    let base_key = idempotency_key(&headers)?;
    let mut results: Vec<LineResult> = Vec::new();
    let mut pending: Vec<(usize, NewVersion)> = Vec::new();
    let lines = crate::catalog::strict::ndjson_lines(&bytes);
    if lines.len() > limits.max_batch_lines {
        return Err(Problem::BadRequest(format!("a batch holds at most {} lines", limits.max_batch_lines)));
    }
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let idem = base_key.as_ref().map(|k| format!("{k}:{n}"));
        let result = if line.iter().all(u8::is_ascii_whitespace) {
            Err(Problem::BadRequest("empty line".into()))
        } else {
            state.exchange.prepare(t, who.id(), line, idem).map_err(Problem::from)
        };
        let result = result.map(|v| NewVersion { trace: trace.0.clone(), ..v });
        match result {
            Ok(v) => {
                pending.push((results.len(), v));
                results.push(LineResult { line: n, status: 0, receipt: None, problem: None });
            }
            Err(e) => results.push(LineResult {
                line: n,
                status: e.parts().0.as_u16(),
                receipt: None,
                problem: Some(e.body()),
            }),
        }
    }
    let (slots, versions): (Vec<usize>, Vec<NewVersion>) = pending.into_iter().unzip();
    let outcomes = state.exchange.commit(versions).await?;
    let mut stored = 0usize;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        let r = &mut results[slot];
        match outcome {
            Ok(Published::Created(receipt)) => {
                stored += 1;
                r.status = 201;
                r.receipt = Some(receipt);
            }
            Ok(Published::Replayed(receipt)) => {
                r.status = 200;
                r.receipt = Some(receipt);
            }
            Ok(Published::Conflict) => {
                let e = Problem::from(crate::exchange::PublishError::Conflict);
                r.status = 409;
                r.problem = Some(e.body());
            }
            Err(e) => {
                let e = Problem::from(e);
                r.status = e.parts().0.as_u16();
                r.problem = Some(e.body());
            }
        }
    }
    tracing::info!(department = who.id(), record_type = %t.id, lines = results.len(), stored, "batch published");
    let failed = results.iter().filter(|r| r.status >= 400).count();
    let wants_ndjson = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("ndjson"));
    if wants_ndjson {
        let mut out = Vec::new();
        for r in &results {
            serde_json::to_writer(&mut out, r).map_err(|e| Problem::Internal(e.to_string()))?;
            out.push(b'\n');
        }
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response());
    }
    Ok(json_response(StatusCode::OK, &json!({ "stored": stored, "failed": failed, "results": results })))
}

/// Query of a read.
#[derive(Deserialize)]
pub struct ReadQuery {
    purpose: Option<String>,
}

fn check_purpose(purpose: Option<&str>) -> Result<(), Problem> {
    match purpose {
        Some(p) if !is_kebab(p) => {
            Err(Problem::BadRequest("purpose must be a kebab-case word such as income-tax-deduction".into()))
        }
        _ => Ok(()),
    }
}

fn view(v: &RecordVersion, access: &Access) -> Value {
    if v.schema_version == REVOKED {
        // A recall: its reason, for the owner and auditors who see the history.
        return json!({
            "type": v.record_type, "key": v.key, "version": v.version, "state": "revoked",
            "publisher": v.publisher, "received_at": v.received_at, "revoked": v.payload["revoked"],
        });
    }
    match access {
        Access::Full => json!({
            "type": v.record_type, "key": v.key, "version": v.version, "schema_version": v.schema_version,
            "digest": v.digest, "publisher": v.publisher, "received_at": v.received_at,
            "projected": false, "data": v.payload,
        }),
        // The digest covers fields the reader may not see, so it is left out of projections.
        Access::Fields(fields) => json!({
            "type": v.record_type, "key": v.key, "version": v.version, "schema_version": v.schema_version,
            "publisher": v.publisher, "received_at": v.received_at,
            "projected": true, "data": project(&v.payload, fields),
        }),
    }
}

/// `GET /v1/records/{type}/{key}?purpose=P`.
#[utoipa::path(get, path = "/v1/records/{type}/{key}", tag = "records",
    params(("type" = String, Path), ("key" = String, Path),
           ("purpose" = Option<String>, Query, description = "Required unless the caller owns the type")),
    responses((status = 200, description = "Latest version, projected to the grant"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 410, description = "Revoked by its owner: nothing of it is sent", body = crate::openapi::Problem)))]
pub async fn read(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((type_id, key)): Path<(String, String)>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, Problem> {
    let t = record_type(&state, &type_id)?;
    let purpose = q.purpose.as_deref();
    check_purpose(purpose)?;
    let access = match state.policy.read_access(t, &who, purpose, state.today()) {
        Ok(a) => a,
        Err(denied) => {
            let ctx = Context { record_type: Some(&t.id), record_key: Some(&key), purpose };
            return Err(state.refuse(&who, denied.to_string(), ctx).await);
        }
    };
    let found = state.store.latest(&t.id, &key).await?;
    let entry = NewEntry {
        record_type: Some(t.id.clone()),
        record_key: Some(key.clone()),
        record_version: found.as_ref().map(|v| v.version),
        subjects: found.as_ref().map(|v| v.subjects.clone()).unwrap_or_default(),
        purpose: purpose.map(str::to_owned),
        ..NewEntry::new(who.id(), Action::Read, if found.is_some() { "ok" } else { "not-found" })
    };
    let revoked = found.as_ref().is_some_and(|v| v.schema_version == REVOKED);
    let entry = if revoked { NewEntry { outcome: "revoked".into(), ..entry } } else { entry };
    // No audit, no data: the entry is durable before anything is sent.
    state.store.audit(entry).await?;
    let v = found.ok_or_else(|| Problem::NotFound(format!("there is no {} record with this key", t.id)))?;
    if revoked {
        return Err(Problem::Gone(format!(
            "this {} record was revoked by its owner at version {}; nothing of it is sent",
            t.id, v.version
        )));
    }
    state.metrics.read(who.id(), &t.id);
    Ok(json_response(StatusCode::OK, &view(&v, &access)))
}

/// `GET /v1/records/{type}/{key}/history`: owner and auditors.
#[utoipa::path(get, path = "/v1/records/{type}/{key}/history", tag = "records",
    params(("type" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "Every version (owner and auditors)"),
              (status = 403, body = crate::openapi::Problem)))]
pub async fn history(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((type_id, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let t = record_type(&state, &type_id)?;
    let allowed = match &who {
        Principal::Department(d) => *d == t.owner,
        Principal::Operator(_, role) => *role == Role::Auditor,
    };
    if !allowed {
        let ctx = Context { record_type: Some(&t.id), record_key: Some(&key), ..Default::default() };
        return Err(state.refuse(&who, "history is for the owner and auditors".into(), ctx).await);
    }
    let versions = state.store.history(&t.id, &key).await?;
    let entry = NewEntry {
        record_type: Some(t.id.clone()),
        record_key: Some(key.clone()),
        record_version: versions.last().map(|v| v.version),
        subjects: versions.last().map(|v| v.subjects.clone()).unwrap_or_default(),
        detail: Some(json!({ "history": true, "versions": versions.len() })),
        ..NewEntry::new(who.id(), Action::Read, if versions.is_empty() { "not-found" } else { "ok" })
    };
    state.store.audit(entry).await?;
    if versions.is_empty() {
        return Err(Problem::NotFound(format!("there is no {} record with this key", t.id)));
    }
    let list: Vec<Value> = versions.iter().map(|v| view(v, &Access::Full)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "type": t.id, "key": key, "versions": list })))
}

/// Body of a lookup.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupRequest {
    subject: Value,
    purpose: Value,
    #[serde(default)]
    types: Option<Value>,
}

fn bad(pointer: &str, message: &str) -> Violation {
    Violation { pointer: pointer.to_owned(), message: message.to_owned() }
}

/// `POST /v1/lookup`: every latest record about a person or organisation that the caller may
/// read for the purpose, each projected; one audit entry names every record returned.
#[utoipa::path(post, path = "/v1/lookup", tag = "records",
    request_body(content = crate::openapi::LookupRequest, content_type = "application/json"),
    responses((status = 200, description = "Every readable latest record about the subject, projected"),
              (status = 422, body = crate::openapi::Problem)))]
pub async fn lookup(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    if !matches!(who, Principal::Department(_)) {
        return Err(state.refuse(&who, "only departments look up records".into(), Context::default()).await);
    }
    let bytes = read_body(&headers, body, 64 * 1024, is_json, "application/json").await?;
    let doc = parse_json(&bytes)?;
    let req: LookupRequest = serde_json::from_value(doc).map_err(|e| {
        let msg = crate::mask::scrub(&e.to_string());
        Problem::InvalidRequest(
            "the lookup body is not {\"subject\", \"purpose\", \"types\"?}".into(),
            vec![bad("", &msg)],
        )
    })?;
    let mut errors = Vec::new();
    let subject = req.subject.as_str().unwrap_or_default().to_owned();
    if !(formats::is_resident_id(&subject) || formats::is_uscc(&subject)) {
        errors.push(bad("/subject", "must be a valid resident ID number or unified social credit code"));
    }
    let purpose = req.purpose.as_str().unwrap_or_default().to_owned();
    if !is_kebab(&purpose) {
        errors.push(bad("/purpose", "must be a kebab-case purpose such as minimum-living-allowance-review"));
    }
    let mut wanted: Option<Vec<String>> = None;
    match &req.types {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            for (i, v) in list.iter().enumerate() {
                match v.as_str().filter(|s| state.catalog.get(s).is_some()) {
                    Some(s) => names.push(s.to_owned()),
                    None => errors.push(bad(&format!("/types/{i}"), "is not a record type")),
                }
            }
            wanted = Some(names);
        }
        Some(_) => errors.push(bad("/types", "must be an array of record type ids")),
    }
    if !errors.is_empty() {
        return Err(Problem::InvalidRequest("the lookup request is invalid".into(), errors));
    }
    // An undeclared purpose is refused as a whole, not answered with nothing found.
    if let Err(denied) = state.policy.may_state(who.id(), &purpose) {
        let ctx = Context { purpose: Some(&purpose), ..Context::default() };
        return Err(state.refuse(&who, denied.to_string(), ctx).await);
    }
    let subject_hash = state.keys.subject_hash(&subject);
    let today = state.today();
    let mut out = Vec::new();
    let mut seen_subjects = vec![subject_hash.clone()];
    let mut returned = Vec::new();
    let mut gone = Vec::new();
    for v in state.store.by_subject(&subject_hash).await? {
        if wanted.as_ref().is_some_and(|w| !w.contains(&v.record_type)) {
            continue;
        }
        let Some(t) = state.catalog.get(&v.record_type) else {
            continue;
        };
        let Ok(access) = state.policy.read_access(t, &who, Some(&purpose), today) else {
            continue;
        };
        if v.schema_version == REVOKED {
            gone.push(json!({ "type": v.record_type, "key": v.key, "version": v.version }));
            continue;
        }
        for s in &v.subjects {
            if !seen_subjects.contains(s) {
                seen_subjects.push(s.clone());
            }
        }
        returned.push(format!("{}/{}@{}", v.record_type, v.key, v.version));
        state.metrics.read(who.id(), &v.record_type);
        out.push(view(&v, &access));
    }
    let entry = NewEntry {
        subjects: seen_subjects,
        purpose: Some(purpose.clone()),
        detail: Some(json!({ "records": returned, "types": wanted, "revoked": gone.len() })),
        ..NewEntry::new(who.id(), Action::Lookup, "ok")
    };
    state.store.audit(entry).await?;
    tracing::info!(department = who.id(), purpose = %purpose, records = out.len(), "lookup answered");
    // A revoked record is named (type, key, the version of its recall), never shown.
    Ok(json_response(
        StatusCode::OK,
        &json!({ "purpose": purpose, "count": out.len(), "records": out, "revoked": gone }),
    ))
}

/// Body of a recall.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Value,
}

/// `POST /v1/records/{type}/{key}/revoke`: the owner withdraws a record. A new state of the
/// record, never a deletion: reads and lookups by others answer `410` from then on, the owner
/// and auditors still see the history, and every department that had it gets a notice.
#[utoipa::path(post, path = "/v1/records/{type}/{key}/revoke", tag = "records",
    params(("type" = String, Path), ("key" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Same key and reason: the original receipt")),
    request_body(content = crate::openapi::RevokeRequest, content_type = "application/json"),
    responses((status = 200, description = "Revoked: the receipt of the recall's version", body = crate::store::Receipt),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 409, body = crate::openapi::Problem), (status = 422, body = crate::openapi::Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((type_id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let t = record_type(&state, &type_id)?;
    require_owner(&state, &who, t, "revoke", Some(&key)).await?;
    let invalid = |message: &str| {
        Problem::InvalidRequest("the body must be {\"reason\": TEXT}".into(), vec![bad("/reason", message)])
    };
    let bytes = read_body(&headers, body, 16 * 1024, is_json, "application/json").await?;
    let doc = parse_json(&bytes)?;
    let body: RevokeBody = serde_json::from_value(doc).map_err(|_| invalid("is required, and nothing else"))?;
    let reason = body.reason.as_str().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(invalid("must be a text of 1 to 2000 characters"));
    }
    let idem = idempotency_key(&headers)?;
    match state.exchange.revoke(t, who.id(), &key, reason, idem).await? {
        Published::Created(receipt) | Published::Replayed(receipt) => Ok(json_response(StatusCode::OK, &receipt)),
        Published::Conflict => Err(crate::exchange::PublishError::Conflict.into()),
    }
}
