//! Reconciliation over the API: `POST /v1/reconciliation/{subscription}`, where a department
//! sends the event ids it holds for a day (JSON, or NDJSON for large days) and learns what it is
//! missing and what the hub never sent; and `POST /v1/ops/reconciliation/{subscription}/redeliver`,
//! the one ops call that queues a day's missing events again (read back by the hub itself from an
//! exchange folder or table, or the ids a department reported).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::records::is_ndjson;
use super::{is_json, json_response, media_type, parse_json, read_body, AppState, Context, Problem};
use crate::catalog::Violation;
use crate::config::Role;
use crate::delivery::reconcile::{self, Day, DayError, ReadBackError};
use crate::delivery::Subscription;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;

/// Routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reconcile)).routes(routes!(redeliver))
}

/// Most malformed ids named in one answer: the rest are like them.
const NAMED: usize = 20;

fn subscription<'a>(state: &'a AppState, name: &str) -> Result<&'a std::sync::Arc<Subscription>, Problem> {
    state.delivery.get(name).ok_or_else(|| Problem::NotFound(format!("there is no subscription {name:?}")))
}

/// An event id as the hub makes them: `evt_` and 32 lowercase hex digits.
fn is_event_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("evt_")
        && id[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn day_of(text: &str, state: &AppState, pointer: &str) -> Result<Day, Problem> {
    Day::parse(text, state.config.timezone()).map_err(|e: DayError| {
        Problem::InvalidRequest(
            "the day cannot be reconciled".into(),
            vec![Violation { pointer: pointer.into(), message: e.to_string() }],
        )
    })
}

/// The ids of a JSON array at `/event_ids`, each checked.
fn ids_of(value: Option<&Value>) -> Result<Vec<String>, Vec<Violation>> {
    let Some(Value::Array(items)) = value else {
        return Err(vec![Violation { pointer: "/event_ids".into(), message: "must be an array of event ids".into() }]);
    };
    let mut bad = Vec::new();
    let ids = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v.as_str().filter(|s| is_event_id(s)) {
            Some(id) => Some(id.to_owned()),
            None => {
                bad.push(Violation {
                    pointer: format!("/event_ids/{i}"),
                    message: "must be an event id (evt_ and 32 hex digits)".into(),
                });
                None
            }
        })
        .collect();
    if bad.is_empty() {
        Ok(ids)
    } else {
        bad.truncate(NAMED);
        Err(bad)
    }
}

/// The NDJSON form: one id a line, as a JSON string or bare; blank lines are skipped.
fn ndjson_ids(bytes: &[u8]) -> Result<Vec<String>, Problem> {
    let text = std::str::from_utf8(bytes).map_err(|_| Problem::BadRequest("the body is not UTF-8".into()))?;
    let mut bad = Vec::new();
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id = match serde_json::from_str::<Value>(line) {
            Ok(Value::String(s)) => s,
            _ => line.to_owned(),
        };
        if is_event_id(&id) {
            ids.push(id);
        } else if bad.len() < NAMED {
            bad.push(Violation {
                pointer: String::new(),
                message: format!("line {}: must be an event id (evt_ and 32 hex digits)", i + 1),
            });
        }
    }
    if bad.is_empty() {
        Ok(ids)
    } else {
        Err(Problem::InvalidRequest("some lines are not event ids".into(), bad))
    }
}

/// Refuses a member other than `day` and `event_ids`, and reads the day at `/day`.
fn day_member(body: &Value, state: &AppState) -> Result<Day, Problem> {
    let violation = |pointer: String, message: &str| vec![Violation { pointer, message: message.into() }];
    if let Some(other) = body.as_object().and_then(|o| o.keys().find(|k| !matches!(k.as_str(), "day" | "event_ids"))) {
        return Err(Problem::InvalidRequest(
            "unexpected member".into(),
            violation(format!("/{other}"), "is not a member of this body"),
        ));
    }
    match body.get("day").and_then(Value::as_str) {
        Some(day) => day_of(day, state, "/day"),
        None => Err(Problem::InvalidRequest(
            "the day is missing".into(),
            violation("/day".into(), "must be a date YYYY-MM-DD"),
        )),
    }
}

/// `?day=` of the NDJSON form.
#[derive(Deserialize)]
pub struct DayQuery {
    day: Option<String>,
}

#[utoipa::path(post, path = "/v1/reconciliation/{subscription}", tag = "delivery",
    params(("subscription" = String, Path), ("day" = Option<String>, Query, description = "YYYY-MM-DD, with an NDJSON body")),
    request_body(content(
        (crate::openapi::ReconcileRequest = "application/json"),
        (Vec<String> = "application/x-ndjson")),
        description = "The ids received on a day: JSON, or NDJSON with one event id a line and ?day="),
    responses((status = 200, description = "{subscription, day, timezone, delivered, held, missing, unknown, duplicates, neighbouring_days}"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 422, body = crate::openapi::Problem)))]
/// `POST /v1/reconciliation/{subscription}` (the subscription's department).
pub async fn reconcile(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<DayQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let sub = subscription(&state, &name)?.clone();
    if !matches!(&who, Principal::Department(d) if *d == sub.department) {
        let reason = format!("subscription {name} belongs to {}", sub.department);
        let ctx = Context { record_type: Some(&sub.record_type), ..Default::default() };
        return Err(state.refuse(&who, reason, ctx).await);
    }
    let limit = state.config.server.max_batch_bytes;
    let ndjson = media_type(&headers).is_some_and(|m| is_ndjson(&m));
    let (day, held) = if ndjson {
        let bytes = read_body(&headers, body, limit, is_ndjson, "application/x-ndjson").await?;
        let Some(day) = q.day.as_deref() else {
            return Err(Problem::InvalidParameter(
                "an NDJSON body needs ?day=YYYY-MM-DD".into(),
                vec![Violation { pointer: "/query/day".into(), message: "is required".into() }],
            ));
        };
        (day_of(day, &state, "/query/day")?, ndjson_ids(&bytes)?)
    } else {
        let accepts = |m: &str| is_json(m) || is_ndjson(m);
        let bytes = read_body(&headers, body, limit, accepts, "application/json or application/x-ndjson").await?;
        let body = parse_json(&bytes)?;
        let shape = || {
            Problem::InvalidRequest(
                "the body must be {\"day\": \"YYYY-MM-DD\", \"event_ids\": [..]}".into(),
                vec![Violation { pointer: String::new(), message: "must be an object with day and event_ids".into() }],
            )
        };
        if !body.is_object() {
            return Err(shape());
        }
        let day = day_member(&body, &state)?;
        let ids = ids_of(body.get("event_ids"))
            .map_err(|v| Problem::InvalidRequest("some event ids are malformed".into(), v))?;
        (day, ids)
    };
    let tz = state.config.timezone();
    let delivered = reconcile::deliveries(state.store.as_ref(), &sub, &day).await?;
    let c = reconcile::compare(&sub, &day, tz, &delivered, &held);
    let entry = NewEntry {
        record_type: Some(sub.record_type.clone()),
        detail: Some(c.detail()),
        ..NewEntry::new(who.id(), Action::Reconcile, if c.agrees() { "ok" } else { "differs" })
    };
    state.store.audit(entry).await?;
    Ok(json_response(StatusCode::OK, &c))
}

#[utoipa::path(post, path = "/v1/ops/reconciliation/{subscription}/redeliver", tag = "operations",
    params(("subscription" = String, Path)),
    request_body(content = crate::openapi::RedeliverRequest, content_type = "application/json",
        description = "{\"day\"}: what the hub reads back as missing from a folder or table; or {\"day\", \"event_ids\"}: the ids a department reported missing"),
    responses((status = 200, description = "{subscription, day, queued, missing}"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem),
              (status = 422, body = crate::openapi::Problem), (status = 503, body = crate::openapi::Problem)))]
/// `POST /v1/ops/reconciliation/{subscription}/redeliver` (ops).
pub async fn redeliver(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    state.require_role(&who, &[Role::Ops], "redelivering a subscription's events").await?;
    let sub = subscription(&state, &name)?.clone();
    let bytes = read_body(&headers, body, state.config.server.max_batch_bytes, is_json, "application/json").await?;
    let body = parse_json(&bytes)?;
    let day = day_member(&body, &state)?;
    let tz = state.config.timezone();
    let (missing, delivered) = match body.get("event_ids") {
        Some(v) => {
            let ids = ids_of(Some(v)).map_err(|v| Problem::InvalidRequest("some event ids are malformed".into(), v))?;
            let delivered = reconcile::deliveries(state.store.as_ref(), &sub, &day).await?;
            let strangers: Vec<Violation> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !delivered.on_day(id))
                .take(NAMED)
                .map(|(i, _)| Violation {
                    pointer: format!("/event_ids/{i}"),
                    message: format!("was not delivered to {name} on {}", day.date),
                })
                .collect();
            if !strangers.is_empty() {
                return Err(Problem::InvalidRequest(
                    "only events delivered that day can be delivered again".into(),
                    strangers,
                ));
            }
            (ids, delivered)
        }
        None => match reconcile::read_back(state.store.as_ref(), &sub, &day, tz).await {
            Ok(Some((c, delivered))) => (c.missing, delivered),
            Ok(None) => {
                return Err(Problem::InvalidRequest(
                    format!("the receiver of {name} cannot be read back"),
                    vec![Violation {
                        pointer: "/event_ids".into(),
                        message: "give the ids its department reported missing".into(),
                    }],
                ))
            }
            Err(ReadBackError::Store(e)) => return Err(e.into()),
            Err(ReadBackError::Receiver(why)) => {
                return Err(Problem::Unavailable(format!("the receiver of {name} cannot be read: {why}")))
            }
        },
    };
    let entry = NewEntry {
        record_type: Some(sub.record_type.clone()),
        detail: Some(json!({ "redeliver": name, "day": day.date.to_string(), "events": missing.len() })),
        ..NewEntry::new(who.id(), Action::Admin, "ok")
    };
    let queued = reconcile::redeliver(state.store.as_ref(), &sub, &delivered, &missing, entry).await?;
    state.delivery.notify(std::slice::from_ref(&name));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "subscription": name, "day": day.date.to_string(), "queued": queued, "missing": missing }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_checked_and_the_bad_ones_named() {
        assert!(is_event_id("evt_0123456789abcdef0123456789abcdef"));
        assert!(!is_event_id("evt_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_event_id("evt_0123"));
        let bad = ids_of(Some(&json!(["evt_0123456789abcdef0123456789abcdef", 3, "x"]))).unwrap_err();
        let pointers: Vec<&str> = bad.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/event_ids/1", "/event_ids/2"]);
        let body = b"\"evt_0123456789abcdef0123456789abcdef\"\n\nevt_0123456789abcdef0123456789abcde0\n";
        assert_eq!(ndjson_ids(body).unwrap().len(), 2);
        assert!(ndjson_ids(b"evt_1\n").is_err());
    }
}
