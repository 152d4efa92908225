//! The pull feed: `GET /v1/feeds/{subscription}` (long poll) and `POST .../ack`. Only the
//! subscription's department reads it; events are the same CloudEvents envelopes a webhook gets,
//! projected to the same grant; unacknowledged events come again. Serving events is a delivery,
//! so each answer is audited (subscriber as actor, every subject) before it is sent. A
//! department's notice feed (`GET /v1/notices`, `POST /v1/notices/ack`) is one of them.

use std::time::Duration;

use adapters::Direction;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Path, Query};
use super::{json_response, read_request, AppState, Context, Problem};
use crate::delivery::{Delivery, Subscription};
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;
use crate::store::{FeedCursor, Settlement};

/// Pull-mode subscriptions.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read))
        .routes(routes!(ack))
        .routes(routes!(notices))
        .routes(routes!(notices_ack))
}

/// The caller's notice feed.
async fn notice_feed_of(state: &AppState, who: &Principal) -> Result<String, Problem> {
    match who {
        Principal::Department(d) => Ok(crate::delivery::notice_feed(d)),
        Principal::Operator(..) => {
            Err(state.refuse(who, "notices are for departments".into(), Context::default()).await)
        }
    }
}

#[utoipa::path(get, path = "/v1/notices", tag = "delivery",
    params(FeedQuery),
    responses((status = 200, description = "hub.record.corrected and hub.record.revoked CloudEvents after the cursor, and the new cursor"),
              (status = 403, body = crate::openapi::Problem)))]
/// `GET /v1/notices`: the caller's notices of corrections and recalls of records it read or
/// looked up, that no subscription of its own carries.
pub async fn notices(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<FeedQuery>,
) -> Result<Response, Problem> {
    let name = notice_feed_of(&state, &who).await?;
    serve(&state, &who, &name, q).await
}

#[utoipa::path(post, path = "/v1/notices/ack", tag = "delivery",
    request_body(content = crate::openapi::AckRequest, content_type = "application/json"),
    responses((status = 200, description = "Notices up to the cursor are acknowledged"), (status = 403, body = crate::openapi::Problem)))]
/// `POST /v1/notices/ack` with `{"cursor"}`.
pub async fn notices_ack(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let name = notice_feed_of(&state, &who).await?;
    // What the acknowledgement settled, from the feed before and after it (whatever form its
    // cursors take): each notice taken is audited under its record, for the person's access log.
    let before = unacknowledged(&state, &name).await?;
    let answer = acknowledge(&state, &who, &name, headers, body).await?;
    let after: std::collections::HashSet<String> =
        unacknowledged(&state, &name).await?.into_iter().map(|r| r.event_id).collect();
    for row in before.iter().filter(|r| !after.contains(&r.event_id)) {
        let Some(notice) = state.store.version(&row.record_type, &row.key, row.version).await? else { continue };
        let n = &notice.payload;
        let entry = NewEntry {
            record_type: n["record_type"].as_str().map(str::to_owned),
            record_key: n["key"].as_str().map(str::to_owned),
            record_version: n["version"].as_u64(),
            subjects: notice.subjects.clone(),
            purpose: n["purpose"].as_str().map(str::to_owned),
            detail: Some(json!({ "notice": n["kind"], "subscription": name, "event_id": row.event_id })),
            ..NewEntry::new(who.id(), Action::Acknowledge, "ok")
        };
        state.store.audit(entry).await?;
    }
    Ok(answer)
}

/// Notices of a feed not yet acknowledged, up to [`ACK_AUDITED`].
async fn unacknowledged(state: &AppState, name: &str) -> Result<Vec<crate::store::OutboxRow>, Problem> {
    let (mut at, mut rows) = (state.store.feed_cursor(name).await?, Vec::new());
    while rows.len() < ACK_AUDITED {
        let page = state.store.feed(name, at, 1000).await?;
        if page.rows.is_empty() {
            break;
        }
        at = page.next;
        rows.extend(page.rows);
    }
    Ok(rows)
}

/// How many notices one acknowledgement audits: a department with more outstanding than this
/// acknowledges in steps (the feed's pages are smaller anyway).
const ACK_AUDITED: usize = 10_000;

/// Query of a feed read.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// A cursor the feed returned; default: the acknowledged one.
    #[param(pattern = "^[0-9]{1,18}(-[0-9]{1,18})?$")]
    after: Option<String>,
    /// Most events on the page (default 100, at most the subscription's `max_events`).
    #[param(minimum = 0)]
    limit: Option<u32>,
    /// Seconds to wait for a first event (at most the subscription's `max_wait_secs`).
    #[param(minimum = 0)]
    wait: Option<u64>,
}

async fn feed_of<'a>(
    state: &'a AppState,
    who: &Principal,
    name: &str,
) -> Result<&'a std::sync::Arc<Subscription>, Problem> {
    let sub = state
        .delivery
        .get(name)
        .filter(|s| s.direction == Direction::Pull)
        .ok_or_else(|| Problem::NotFound(format!("there is no feed {name:?}")))?;
    if !matches!(who, Principal::Department(d) if *d == sub.department) {
        let reason = format!("feed {name} belongs to {}", sub.department);
        return Err(state
            .refuse(who, reason, Context { record_type: Some(&sub.record_type), ..Default::default() })
            .await);
    }
    Ok(sub)
}

fn cursor(text: &str) -> Result<FeedCursor, Problem> {
    text.parse::<FeedCursor>().map_err(|()| Problem::BadRequest("cursor must be a cursor returned by the feed".into()))
}

#[utoipa::path(get, path = "/v1/feeds/{subscription}", tag = "delivery",
    params(("subscription" = String, Path), FeedQuery),
    responses((status = 200, description = "CloudEvents after the cursor, and the new cursor"),
              (status = 403, body = crate::openapi::Problem), (status = 404, body = crate::openapi::Problem)))]
/// `GET /v1/feeds/{subscription}?after=CURSOR&limit=N&wait=SECONDS`.
pub async fn read(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    Query(q): Query<FeedQuery>,
) -> Result<Response, Problem> {
    serve(&state, &who, &name, q).await
}

/// One page of a feed, after the long poll.
async fn serve(state: &AppState, who: &Principal, name: &str, q: FeedQuery) -> Result<Response, Problem> {
    let sub = feed_of(state, who, name).await?;
    let settings = sub.feed.clone().ok_or_else(|| Problem::Internal(format!("feed {name} has no settings")))?;
    let after = match &q.after {
        Some(c) => cursor(c)?,
        None => state.store.feed_cursor(name).await?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, settings.max_events);
    // The long poll must end before the request deadline does.
    let deadline = state.config.server.request_timeout_secs.saturating_sub(1);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(settings.max_wait_secs).min(deadline));
    let mut page = state.store.feed(name, after, limit).await?;
    if page.rows.is_empty() && !wait.is_zero() {
        let until = tokio::time::Instant::now() + wait;
        // Entries routed by other nodes of a cluster wake nothing here: look every `poll_ms`.
        let nap = if state.store.is_shared() { Duration::from_millis(state.config.delivery.poll_ms) } else { wait };
        loop {
            let notified = sub.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            page = state.store.feed(name, after, limit).await?;
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if !page.rows.is_empty() || left.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left.min(nap), notified).await;
        }
    }
    let mut events: Vec<Value> = Vec::new();
    let (mut ids, mut records) = (Vec::new(), Vec::new());
    let mut subjects: Vec<String> = Vec::new();
    for row in &page.rows {
        match state.delivery.envelope(sub, row).await? {
            Ok((envelope, rec)) => {
                events.push(serde_json::from_slice(envelope.json()).map_err(|e| Problem::Internal(e.to_string()))?);
                ids.push(row.event_id.clone());
                // What each id was, so a reconciliation can queue a missing one again.
                records.push(format!("{}/{}@{}", row.record_type, row.key, row.version));
                for s in rec.subjects {
                    if !subjects.contains(&s) {
                        subjects.push(s);
                    }
                }
            }
            Err(reason) => {
                let entry = Delivery::receipt_entry(sub, None, row, Action::DeadLetter, "dead", Some(&reason));
                state.store.settle(row.id, Settlement::Dead { error: reason }, Some(entry)).await?;
            }
        }
    }
    let next = page.next.to_string();
    if !events.is_empty() {
        let entry = NewEntry {
            record_type: Some(sub.record_type.clone()),
            subjects,
            purpose: Some(sub.purpose.clone()),
            detail: Some(json!({ "subscription": sub.name, "events": ids, "records": records, "cursor": next })),
            ..NewEntry::new(sub.department.clone(), Action::Deliver, "ok")
        };
        state.store.audit(entry).await?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "subscription": sub.name, "count": events.len(), "events": events, "cursor": next }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    cursor: Value,
}

#[utoipa::path(post, path = "/v1/feeds/{subscription}/ack", tag = "delivery",
    params(("subscription" = String, Path)),
    request_body(content = crate::openapi::AckRequest, content_type = "application/json"),
    responses((status = 200, description = "Events up to the cursor are acknowledged")))]
/// `POST /v1/feeds/{subscription}/ack` with `{"cursor"}`.
pub async fn ack(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    acknowledge(&state, &who, &name, headers, body).await
}

/// Acknowledges a feed up to the body's cursor.
async fn acknowledge(
    state: &AppState,
    who: &Principal,
    name: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    feed_of(state, who, name).await?;
    let invalid = || {
        Problem::InvalidRequest(
            "the body must be {\"cursor\": CURSOR}".into(),
            vec![crate::catalog::Violation {
                pointer: "/cursor".into(),
                message: "must be a cursor returned by the feed".into(),
            }],
        )
    };
    let body: AckBody = read_request(&headers, body, 4096, &invalid).await?;
    let c = match &body.cursor {
        Value::String(s) => cursor(s).map_err(|_| invalid())?,
        // JSON Schema's integer: 605.0 is 605.
        Value::Number(n) => {
            let whole =
                n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64));
            FeedCursor { rows: whole.filter(|c| *c >= 0).ok_or_else(invalid)?, log: None }
        }
        _ => return Err(invalid()),
    };
    let n = state.store.ack(name, c).await?;
    Ok(json_response(StatusCode::OK, &json!({ "acknowledged": n, "cursor": c.to_string() })))
}
