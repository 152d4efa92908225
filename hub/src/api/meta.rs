//! Endpoints about the hub rather than about records: the resource catalogue, schemas, liveness,
//! readiness and the OpenAPI description.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::Path;
use super::{json_response, AppState, Problem};
use crate::policy::Principal;

/// The catalogue, schemas, the OpenAPI document and readiness.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(catalog))
        .routes(routes!(services))
        .routes(routes!(schema_latest))
        .routes(routes!(schema_version))
        .routes(routes!(openapi))
        .routes(routes!(readyz))
}

/// `GET /v1/catalog`: every record type, and the caller's own grants.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalogue",
    responses((status = 200, description = "Record types, and the caller's grants and subscriptions")))]
pub async fn catalog(State(state): State<AppState>, Extension(who): Extension<Principal>) -> Response {
    let types: Vec<Value> = state
        .catalog
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "name": t.name,
                "owner": t.owner,
                "sharing": t.sharing.as_str(),
                "key": t.key.as_str(),
                "subjects": t.subjects.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "schema_versions": [t.schema_version],
                "schema": format!("/v1/schemas/{}/{}", t.id, t.schema_version),
            })
        })
        .collect();
    let grants: Vec<Value> = state
        .policy
        .grants_of(who.id())
        .map(|g| {
            json!({
                "record_type": g.record_type,
                "purposes": g.purposes,
                "fields": g.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "expires": g.expires.map(|d| d.to_string()),
                "basis": g.basis,
            })
        })
        .collect();
    let purposes: Vec<Value> = state
        .policy
        .purposes_of(who.id())
        .map(|id| {
            let declared = state.config.purposes.iter().find(|p| p.id.get_ref() == id);
            json!({
                "id": id,
                "name": declared.and_then(|p| p.name.clone()),
                "basis": declared.map(|p| p.basis.clone()),
            })
        })
        .collect();
    let subscriptions: Vec<Value> = state
        .delivery
        .all()
        .iter()
        .filter(|s| s.department == who.id())
        .map(|s| {
            json!({
                "name": s.name, "record_type": s.record_type, "purpose": s.purpose,
                "mode": if s.direction == adapters::Direction::Pull { "feed" } else { "push" },
                "feed": (s.direction == adapters::Direction::Pull).then(|| format!("/v1/feeds/{}", s.name)),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "hub": state.config.hub.name.get_ref(),
            "principal": { "id": who.id(), "kind": who.kind() },
            "record_types": types,
            "grants": grants,
            "purposes": purposes,
            "subscriptions": subscriptions,
        }),
    )
}

/// `GET /v1/catalog/services`: the plan's online services, what each reads instead of paper.
#[utoipa::path(get, path = "/v1/catalog/services", tag = "catalogue",
    responses((status = 200, description = "Every online service: its department, what it publishes, the records it reads for which purpose, and the paper documents a citizen no longer brings")))]
pub async fn services(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &crate::services::catalogue(&state.config, &state.catalog))
}

fn schema_response(schema: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/schema+json")], schema.to_string()).into_response()
}

/// `GET /v1/schemas/{type}`: the current schema.
#[utoipa::path(get, path = "/v1/schemas/{type}", tag = "catalogue",
    params(("type" = String, Path)), responses((status = 200, description = "JSON Schema 2020-12")))]
pub async fn schema_latest(State(state): State<AppState>, Path(type_id): Path<String>) -> Result<Response, Problem> {
    let t =
        state.catalog.get(&type_id).ok_or_else(|| Problem::NotFound(format!("there is no record type {type_id:?}")))?;
    Ok(schema_response(&t.schema))
}

/// `GET /v1/schemas/{type}/{version}`.
#[utoipa::path(get, path = "/v1/schemas/{type}/{version}", tag = "catalogue",
    params(("type" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "JSON Schema 2020-12"), (status = 404, body = crate::openapi::Problem)))]
pub async fn schema_version(
    State(state): State<AppState>,
    Path((type_id, version)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let t =
        state.catalog.get(&type_id).ok_or_else(|| Problem::NotFound(format!("there is no record type {type_id:?}")))?;
    let wanted = version.trim_start_matches('v').parse::<u32>().ok();
    if wanted != Some(t.schema_version) {
        return Err(Problem::NotFound(format!("{} has no schema version {version:?}", t.id)));
    }
    Ok(schema_response(&t.schema))
}

fn health(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/health+json")], json!({ "status": text }).to_string()).into_response()
}

/// `GET /livez`: the process answers.
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn livez() -> Response {
    health(StatusCode::OK, "pass")
}

/// `GET /readyz`: the ledger writer runs, so publishes can be made durable.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.is_ready() && !state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        health(StatusCode::OK, "pass")
    } else {
        health(StatusCode::SERVICE_UNAVAILABLE, "fail")
    }
}

/// `GET /openapi.json`: this document, serialised once when the router was built.
#[utoipa::path(get, path = "/openapi.json", tag = "catalogue",
    responses((status = 200, description = "The OpenAPI 3.1 description of this hub's API", body = Object)))]
pub async fn openapi(Extension(doc): Extension<super::OpenApiJson>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0.clone()).into_response()
}
