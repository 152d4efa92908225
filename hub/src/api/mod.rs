//! The HTTP API (CONTRACT.md): one `Clone` state, one router, the authentication middleware that
//! turns the connection's certificate (or a bearer token) into a `Principal`, and a last layer that
//! makes every error — including axum's own rejections — an RFC 9457 problem.

pub(crate) mod access_log;
pub(crate) mod admission;
pub(crate) mod audit;
pub(crate) mod cases;
pub(crate) mod dashboard;
mod discard;
mod extract;
pub(crate) mod feeds;
pub(crate) mod health;
pub(crate) mod meta;
pub(crate) mod ops;
pub mod problem;
pub(crate) mod reconciliation;
pub(crate) mod records;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::events::Event as _;
use crate::ledger::keys::HubKeys;
use crate::ledger::{Action, NewEntry};
use crate::policy::{Directory, Policy, Principal};
use crate::store::Store;
pub use problem::Problem;

/// Everything a request handler may use.
pub struct Hub {
    /// The checked configuration.
    pub config: Config,
    /// Record types with compiled validators.
    pub catalog: Arc<Catalog>,
    /// Grants.
    pub policy: Arc<Policy>,
    /// Routing and delivery.
    pub delivery: Arc<crate::delivery::Delivery>,
    /// Inbound connections (folders, staging tables, queues).
    pub inbound: Arc<crate::inbound::Inbounds>,
    /// Scheduled health checks.
    pub checks: Arc<::ops::runner::Runner>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when shutdown begins: `/readyz` answers 503 so load balancers stop sending.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Known principals.
    pub directory: Directory,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The record's way: prepare, commit, wake, count.
    pub exchange: Arc<crate::exchange::Exchange>,
    /// Joint cases.
    pub cases: Arc<crate::cases::engine::Cases>,
    /// Subject-hash and checkpoint keys.
    pub keys: Arc<HubKeys>,
    /// Per-department request budgets.
    pub rate_limits: admission::RateLimits,
}

/// The router's state.
#[derive(Clone)]
pub struct AppState(pub Arc<Hub>);

impl std::ops::Deref for AppState {
    type Target = Hub;
    fn deref(&self) -> &Hub {
        &self.0
    }
}

/// What the TLS layer learnt about the connection, attached to every request on it.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// CN of the verified client certificate, if one was presented.
    pub common_name: Option<String>,
}

/// Where a refusal happened, for its audit entry.
#[derive(Default)]
pub struct Context<'a> {
    record_type: Option<&'a str>,
    record_key: Option<&'a str>,
    purpose: Option<&'a str>,
}

impl AppState {
    /// Audits a refusal, then returns the 403 to send. Fails closed: when the refusal cannot be
    /// audited the caller gets 503, not a silent 403.
    pub async fn refuse(&self, who: &Principal, reason: String, ctx: Context<'_>) -> Problem {
        let entry = NewEntry {
            record_type: ctx.record_type.map(str::to_owned),
            record_key: ctx.record_key.map(str::to_owned),
            purpose: ctx.purpose.map(str::to_owned),
            detail: Some(serde_json::json!({ "status": 403, "reason": reason })),
            ..NewEntry::new(who.id(), Action::Deny, "forbidden")
        };
        match self.store.audit(entry).await {
            Ok(_) => {
                crate::events::AccessRefused { principal: who.id(), reason: &reason }.emit(&self.metrics);
                Problem::Forbidden(reason)
            }
            Err(e) => e.into(),
        }
    }

    /// Lets operators with one of `roles` through; refuses (and audits) everyone else.
    pub async fn require_role(
        &self,
        who: &Principal,
        roles: &[crate::config::Role],
        what: &str,
    ) -> Result<crate::config::Role, Problem> {
        match who.role() {
            Some(r) if roles.contains(&r) => Ok(r),
            _ => Err(self.refuse(who, format!("{what} is not available to {}", who.kind()), Context::default()).await),
        }
    }

    /// Today in the hub's time zone (grant expiry is a local date).
    pub fn today(&self) -> chrono::NaiveDate {
        chrono::Utc::now().with_timezone(&self.config.timezone()).date_naive()
    }
}

/// Builds the router. Every route is registered with its `#[utoipa::path]` (utoipa-axum's
/// `routes!`), so the OpenAPI document served at `/openapi.json` has exactly the router's paths.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs.max(1));
    let (routes, paths) = OpenApiRouter::new()
        .merge(records::router())
        .merge(cases::router())
        .merge(meta::router())
        .merge(audit::router())
        .merge(feeds::router())
        .merge(reconciliation::router())
        .merge(ops::router())
        .merge(health::router())
        .merge(dashboard::router())
        .split_for_parts();
    // Liveness is added past the shedding so that an overloaded hub is not reported dead.
    let (livez, livez_paths) = OpenApiRouter::new().routes(utoipa_axum::routes!(meta::livez)).split_for_parts();
    let doc = crate::openapi::document([paths, livez_paths], state.catalog.iter());
    let doc = OpenApiJson(Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()));
    let router = routes
        .route_layer(from_fn(receive))
        .route_layer(from_fn_with_state(state.clone(), measure))
        .fallback(|| async { Problem::NotFound("no such endpoint".into()) })
        .layer(axum::Extension(doc))
        .layer(from_fn_with_state(state.clone(), authenticate))
        .layer(from_fn(move |req: Request, next: Next| deadline(timeout, req, next)));
    admission::shed(router, state.config.server.max_in_flight, state.metrics.clone())
        .merge(livez)
        .layer(from_fn(problemize))
        .layer(from_fn_with_state(discard_bound(&state.config), discard::layer))
        .with_state(state)
}

/// The OpenAPI document as served, built with the router.
#[derive(Clone)]
pub struct OpenApiJson(pub Bytes);

fn discard_bound(config: &crate::config::Config) -> discard::Bound {
    discard::Bound {
        bytes: config.server.discard_body_bytes,
        time: Duration::from_secs(config.server.header_timeout_secs.max(1)),
    }
}

/// Largest header section read (bytes): certificates carry identity, so no caller needs more.
const MAX_HEADER_BYTES: usize = 32 * 1024;

const PUBLIC: [&str; 2] = ["/livez", "/readyz"];

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if PUBLIC.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let cn = req.extensions().get::<PeerIdentity>().and_then(|p| p.common_name.clone());
    let by_cert = cn.as_deref().and_then(|cn| state.directory.by_common_name(cn).cloned());
    // A credential that does not verify is refused, never passed over for another: a wrong token
    // beside a good certificate is a misconfigured or borrowed client, not one to serve.
    let (principal, token_refused) = match (by_cert, req.headers().contains_key(header::AUTHORIZATION)) {
        (by_cert, false) => (by_cert, false),
        (by_cert, true) => {
            let by_token = bearer(req.headers()).and_then(|t| state.directory.by_token(t).cloned());
            match (by_cert, by_token) {
                (None, t) => (t, false),
                (Some(c), Some(t)) if c.id() == t.id() => (Some(c), false),
                (Some(_), _) => (None, true),
            }
        }
    };
    match principal {
        Some(p) => {
            if let Err(wait) = state.rate_limits.check(p.id()) {
                state.metrics.shed.get_or_create(&crate::metrics::ShedLabels { reason: "rate_limited".into() }).inc();
                return Problem::RateLimited(wait).into_response();
            }
            let (method, path, started) =
                (req.method().clone(), req.uri().path().to_owned(), std::time::Instant::now());
            req.extensions_mut().insert(p.clone());
            let resp = next.run(req).await;
            tracing::debug!(
                principal = p.id(),
                %method,
                path = %crate::mask::scrub_path(&path),
                status = resp.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "request"
            );
            resp
        }
        None => {
            // A certificate from our CA whose CN is no longer configured is named `unknown:CN`, a
            // known one refused for the token beside it by its own id; otherwise the caller is
            // anonymous. Either way the refusal is on the record.
            let actor = match cn {
                Some(cn) if token_refused => cn,
                Some(cn) => format!("unknown:{cn}"),
                None => "anonymous".to_owned(),
            };
            let mut detail = serde_json::json!({
                "status": 401,
                "method": req.method().as_str(),
                "path": crate::mask::scrub_path(req.uri().path()),
            });
            if token_refused {
                detail["reason"] =
                    "a bearer token beside the certificate does not verify or names another principal".into();
            }
            let entry = NewEntry { detail: Some(detail), ..NewEntry::new(actor, Action::Deny, "unauthenticated") };
            match state.store.audit(entry).await {
                Ok(_) => Problem::Unauthenticated.into_response(),
                Err(e) => Problem::from(e).into_response(),
            }
        }
    }
}

/// The plain loopback listener's router: `/metrics` and the dashboard, no identity (loopback
/// only, by config; neither shows personal data).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/ops/",
            get(|State(state): State<AppState>| async move {
                dashboard::render(&state).await.unwrap_or_else(|e| e.into_response())
            }),
        )
        .route("/ops/style.css", get(dashboard::style))
        .route(
            "/metrics",
            get(|State(state): State<AppState>, headers: HeaderMap| async move {
                match health::exposition(&state).await {
                    Ok(text) => health::negotiate(&headers, text),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .with_state(state)
}

/// Counts every routed request by endpoint template, method, status and principal.
async fn measure(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let principal = req.extensions().get::<Principal>().map_or_else(|| "anonymous".to_owned(), |p| p.id().to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .get_or_create(&crate::metrics::EndpointLabels { endpoint: endpoint.clone() })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&crate::metrics::RequestLabels {
            endpoint,
            method,
            status: resp.status().as_u16().to_string(),
            principal,
        })
        .inc();
    resp
}

/// The W3C `traceparent` the records a request publishes keep for their deliveries.
#[derive(Clone, Debug, Default)]
pub struct RecordTrace(pub Option<String>);

/// The request's span (`receive`, a server span named by its route), continuing the caller's
/// `traceparent`; and the context its records will carry ([`crate::telemetry`]).
async fn receive(mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    // Borrowed, and formatted only when a layer wants the span: with traces off, a request pays
    // for no string here.
    let (span, carried) = {
        let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
        let principal = req.extensions().get::<Principal>().map_or("anonymous", |p| p.id());
        let method = req.method().as_str();
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "receive",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            hub.principal = %principal,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let incoming = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
        crate::telemetry::continue_from(&span, incoming);
        let carried = crate::telemetry::carried(&span, incoming);
        (span, carried)
    };
    req.extensions_mut().insert(RecordTrace(carried));
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    resp
}

async fn deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Problem::Unavailable(format!("the request took longer than {} s", limit.as_secs())).into_response(),
    }
}

/// Rewrites any error response that is not yet problem+json (axum's extractor rejections, 405)
/// into one, keeping its status.
async fn problemize(req: Request, next: Next) -> Response {
    // hyper refuses far larger header sections itself (with a bare 431); below that, the hub's own
    // limit answers with a problem like every other refusal.
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Problem::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(problem::PROBLEM_JSON.as_bytes()));
    if status.as_u16() < 400 || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = crate::mask::scrub(String::from_utf8_lossy(&text).trim());
    let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { detail };
    let body = serde_json::json!({
        "type": format!("urn:conghua-hub:problem:http-{}", status.as_u16()),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut resp = (status, body.to_string()).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(problem::PROBLEM_JSON));
    resp
}

/// The media type of a request, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next()?.trim().to_ascii_lowercase())
}

/// True for `application/json` and `application/*+json`.
fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Checks the media type, then reads at most `limit` bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    accepts: fn(&str) -> bool,
    expected: &str,
) -> Result<Bytes, Problem> {
    match media_type(headers) {
        Some(m) if accepts(&m) => {}
        Some(m) => return Err(Problem::UnsupportedMediaType(format!("expected {expected}, got {m}"))),
        None => return Err(Problem::UnsupportedMediaType(format!("expected {expected}; Content-Type is missing"))),
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Problem::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Problem::TooLarge(limit)
        } else {
            Problem::BadRequest("the request body could not be read".into())
        }
    })
}

/// Reads a small JSON body of the API's own (lookup, ack, replay, access log) into `T`;
/// `invalid` explains a body of the wrong shape.
async fn read_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    invalid: impl Fn() -> Problem,
) -> Result<T, Problem> {
    let bytes = read_body(headers, body, limit, is_json, "application/json").await?;
    serde_json::from_value(parse_json(&bytes)?).map_err(|_| invalid())
}

/// Parses JSON strictly, as the record's way does (`exchange::prepare::parse`).
fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, Problem> {
    Ok(crate::exchange::prepare::parse(bytes)?)
}

/// `StatusCode` of a successful JSON answer with a body.
fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => Problem::Internal(e.to_string()).into_response(),
    }
}

/// Whether a report's caller asked for the printable page (`format=html`, or a browser's Accept).
/// An unknown `format` is refused: a caller asking for `xml` must not silently get JSON.
fn wants_html(format: Option<&str>, headers: &axum::http::HeaderMap) -> Result<bool, Problem> {
    match format {
        Some("html") => Ok(true),
        Some("json") => Ok(false),
        None => {
            Ok(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.starts_with("text/html")))
        }
        Some(_) => Err(Problem::InvalidParameter(
            "query parameter format: must be json or html".into(),
            vec![crate::catalog::Violation { pointer: "/query/format".into(), message: "must be json or html".into() }],
        )),
    }
}

/// A signed report's printable page: its one inline style block is the only thing it may load.
fn report_page(html: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
        ],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod oneshot;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_member_named_by_a_resident_id_is_reported_masked() {
        let body = br#"{"members":{"440184199003151230":1,"440184199003151230":2}}"#;
        let Err(Problem::InvalidRequest(detail, violations)) = parse_json(body) else { panic!("accepted") };
        assert_eq!(violations[0].pointer, "/members/4401**********1230");
        let problem = Problem::InvalidRequest(detail, violations).body().to_string();
        assert!(!problem.contains("440184199003151230"), "{problem}");
    }
}
