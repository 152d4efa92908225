//! Endpoints over the audit chain: export for auditors, verification (counts and digests only,
//! so ops and the vendor may call it); the citizen portal's access log is in `access_log`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::Query;
use super::{json_response, AppState, Problem};
use crate::config::Role;
use crate::ledger::{Action, NewEntry};
use crate::policy::Principal;

/// The audit log, its verification and the citizen access log.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(verify)).routes(routes!(super::access_log::access_log))
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
            "head_digest": r.head_digest, "checkpoints": r.checkpoints, "suite": r.suite,
        }),
        Err(b) => json!({ "ok": false, "first_bad_seq": b.seq, "reason": b.reason }),
    };
    let entry =
        NewEntry { detail: Some(json!({ "verify": body["ok"] })), ..NewEntry::new(who.id(), Action::Admin, "ok") };
    state.store.audit(entry).await?;
    Ok(json_response(StatusCode::OK, &body))
}
