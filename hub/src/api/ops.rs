//! Operator endpoints over delivery: the dead letters and pending events, retrying a dead
//! letter, replaying a subscription, restarting one its receiver stopped. The vendor sees counts
//! and error texts only: never a key, a payload or a subject.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::{json_response, read_request, AppState, Problem};
use crate::catalog::Violation;
use crate::config::Role;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;

/// Deliveries, dead letters and subscriptions, for operators.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deliveries))
        .routes(routes!(retry))
        .routes(routes!(subscriptions))
        .routes(routes!(replay))
        .routes(routes!(enable))
}

/// Query of the deliveries view.
#[derive(Deserialize)]
pub struct DeliveriesQuery {
    state: Option<String>,
    subscription: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/ops/deliveries", tag = "operations",
    params(("state" = Option<String>, Query, description = "dead (default) or pending", pattern = "^(dead|pending)$"), ("subscription" = Option<String>, Query),
           ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "Ops: the entries; vendor: counts and error texts only")))]
/// `GET /v1/ops/deliveries?state=dead|pending&subscription=S`.
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, Problem> {
    let role = state.require_role(&who, &[Role::Ops, Role::Vendor], "the delivery view").await?;
    let which = q.state.as_deref().unwrap_or("dead");
    if !matches!(which, "dead" | "pending") {
        return Err(Problem::BadRequest("state must be dead or pending".into()));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.deliveries(which, q.subscription.clone(), limit).await?;
    let counts = state.store.delivery_counts().await?;
    let body = if role == Role::Vendor {
        let mut errors: Vec<(String, String, u64)> = Vec::new();
        for r in &rows {
            let err = crate::mask::scrub(r.last_error.as_deref().unwrap_or(""));
            match errors.iter_mut().find(|(s, e, _)| *s == r.subscription && *e == err) {
                Some(x) => x.2 += 1,
                None => errors.push((r.subscription.clone(), err, 1)),
            }
        }
        let errors: Vec<Value> =
            errors.into_iter().map(|(s, e, n)| json!({ "subscription": s, "error": e, "count": n })).collect();
        json!({ "state": which, "counts": counts, "errors": errors })
    } else {
        json!({ "state": which, "counts": counts, "entries": rows })
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[utoipa::path(post, path = "/v1/ops/deliveries/{id}/retry", tag = "operations",
    params(("id" = i64, Path)), responses((status = 200, description = "Back in the queue"), (status = 404, body = crate::openapi::Problem)))]
/// `POST /v1/ops/deliveries/{id}/retry` (ops).
pub async fn retry(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<i64>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops], "retrying a delivery").await?;
    let entry = NewEntry { detail: Some(json!({ "retry": id })), ..NewEntry::new(who.id(), Action::Admin, "ok") };
    match state.store.retry_dead(id, entry).await? {
        Some(sub) => {
            state.delivery.notify(std::slice::from_ref(&sub));
            Ok(json_response(StatusCode::OK, &json!({ "id": id, "subscription": sub, "state": "pending" })))
        }
        None => Err(Problem::NotFound(format!("there is no dead letter {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    since: Option<String>,
}

#[utoipa::path(post, path = "/v1/ops/subscriptions/{name}/replay", tag = "operations",
    params(("name" = String, Path)),
    request_body(content = Object, content_type = "application/json", description = "{\"from_seq\"} or {\"since\": RFC 3339}"),
    responses((status = 200, description = "Events queued again (same event ids)")))]
/// `POST /v1/ops/subscriptions/{name}/replay` (ops): queues every matching record version published
/// since an audit sequence number or a time again, with the same event ids.
pub async fn replay(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops], "replaying a subscription").await?;
    let sub = state
        .delivery
        .get(&name)
        .ok_or_else(|| Problem::NotFound(format!("there is no subscription {name:?}")))?
        .clone();
    let invalid = |pointer: &str, message: &str| {
        Problem::InvalidRequest(
            "the body must be {\"from_seq\": N} or {\"since\": RFC 3339 time}".into(),
            vec![Violation { pointer: pointer.into(), message: message.into() }],
        )
    };
    let req: ReplayBody = read_request(&headers, body, 4096, || invalid("", "unexpected body")).await?;
    let since = match &req.since {
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| invalid("/since", "must be an RFC 3339 time"))?
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        None => None,
    };
    if since.is_none() && req.from_seq.is_none() {
        return Err(invalid("", "give from_seq or since"));
    }
    let mut from = req.from_seq.unwrap_or(0);
    let mut picked = Vec::new();
    loop {
        let page = state.store.versions_since(&sub.record_type, from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.audit_seq + 1;
        for v in &page {
            let recent = since.as_ref().is_none_or(|s| v.received_at >= *s);
            // A recall is a state of the record, not a document any filter or grant applies to.
            let document = v.schema_version != crate::exchange::notices::REVOKED;
            if recent && document && state.exchange.routes(&v.record_type, &v.payload).contains(&name) {
                picked.push((v.record_type.clone(), v.key.clone(), v.version));
            }
        }
    }
    let entry = NewEntry {
        record_type: Some(sub.record_type.clone()),
        detail: Some(json!({ "replay": name, "from_seq": req.from_seq, "since": since, "events": picked.len() })),
        ..NewEntry::new(who.id(), Action::Admin, "ok")
    };
    let n = state.store.enqueue(&name, picked, entry).await?;
    state.delivery.notify(std::slice::from_ref(&name));
    Ok(json_response(StatusCode::OK, &json!({ "subscription": name, "queued": n })))
}

#[utoipa::path(post, path = "/v1/ops/subscriptions/{name}/enable", tag = "operations",
    params(("name" = String, Path)), responses((status = 200, description = "Deliveries resume")))]
/// `POST /v1/ops/subscriptions/{name}/enable` (ops): restarts a subscription its receiver stopped.
pub async fn enable(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops], "restarting a subscription").await?;
    if state.delivery.get(&name).is_none() {
        return Err(Problem::NotFound(format!("there is no subscription {name:?}")));
    }
    let entry = NewEntry {
        detail: Some(json!({ "subscription": name, "disabled": false })),
        ..NewEntry::new(who.id(), Action::Admin, "ok")
    };
    state.store.set_subscription(&name, false, None, entry).await?;
    state.delivery.set_disabled(&name, false);
    Ok(json_response(StatusCode::OK, &json!({ "subscription": name, "disabled": false })))
}

#[utoipa::path(get, path = "/v1/ops/subscriptions", tag = "operations",
    responses((status = 200, description = "Every subscription with its state and backlog")))]
/// `GET /v1/ops/subscriptions` (ops, vendor).
pub async fn subscriptions(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops, Role::Vendor], "the subscription view").await?;
    let counts = state.store.delivery_counts().await?;
    let list: Vec<Value> = state
        .delivery
        .all()
        .iter()
        .map(|s| {
            let c = counts.iter().find(|c| c.subscription == s.name);
            json!({
                "name": s.name, "department": s.department, "record_type": s.record_type, "purpose": s.purpose,
                "mode": if s.direction == adapters::Direction::Pull { "feed" } else { "push" },
                "disabled": s.is_disabled(),
                "pending": c.map_or(0, |c| c.pending), "dead": c.map_or(0, |c| c.dead),
                "oldest_pending_ms": c.and_then(|c| c.oldest_pending_ms),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "subscriptions": list })))
}
