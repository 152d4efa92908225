//! `Problem`: every way the hub refuses or fails a request, with its RFC 9457 status, type and
//! body, in one place. The HTTP API sends it as `application/problem+json` (`api/problem.rs`);
//! the inbound connections write the same body to their rejected logs, so a department reads one
//! vocabulary whichever way its record came in. Nothing here knows the HTTP server.

use http::StatusCode;
use serde::Serialize;

use crate::catalog::Violation;
use crate::store::StoreError;

/// Request failures.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 400: a path segment or query parameter of the wrong shape, with its pointer
    /// (`/path/NAME`, `/query/NAME`).
    #[error("{0}")]
    InvalidParameter(String, Vec<Violation>),
    /// 401: no certificate and no token, or neither is known.
    #[error("a client certificate signed by the hub's CA, or a bearer token, is required")]
    Unauthenticated,
    /// 403: known caller, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: idempotency key reused with another body.
    #[error("{0}")]
    Conflict(String),
    /// 409: a case or its step is not in a state to take the request (answered twice, before it
    /// is ready, after the case closed).
    #[error("{0}")]
    StateConflict(String),
    /// 409: the record is not in a state to take the request (revoked already).
    #[error("{0}")]
    RecordState(String),
    /// 410: the record was withdrawn by its owner; nothing of it is sent.
    #[error("{0}")]
    Gone(String),
    /// 409: the operation is already under way.
    #[error("{0}")]
    Busy(String),
    /// 413.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 431: the request's header section is larger than the hub reads.
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: every schema violation with its pointer.
    #[error("the record does not match the schema of its type")]
    Invalid(Vec<Violation>),
    /// 422 for request bodies of the API itself (lookup, access log).
    #[error("{0}")]
    InvalidRequest(String, Vec<Violation>),
    /// 503: try again shortly.
    #[error("{0}")]
    Unavailable(String),
    /// 503: more requests in flight than `[server] max_in_flight`; shed before any work.
    #[error("the hub is at its limit of requests in flight; retry shortly")]
    Overloaded,
    /// 429: the department is over its `rate_limit`; the wait is sent as `Retry-After`.
    #[error("this department is over its request rate limit")]
    RateLimited(std::time::Duration),
    /// 507: the disk is full; nothing was stored.
    #[error("storage is full; nothing was stored")]
    StorageFull,
    /// 500: logged, not sent.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full => Problem::StorageFull,
            StoreError::WriterGone => Problem::Unavailable("the hub is shutting down".into()),
            StoreError::Aborted => Problem::Unavailable("nothing was stored; send the request again".into()),
            StoreError::Unavailable(_) => Problem::Unavailable(
                "the database cannot be reached; send the request again with the same Idempotency-Key".into(),
            ),
            other => Problem::Internal(other.to_string()),
        }
    }
}

/// The signed monthly reports (SLA, documents spared): a bad month is the caller's.
impl From<crate::report::ReportError> for Problem {
    fn from(e: crate::report::ReportError) -> Self {
        match e {
            crate::report::ReportError::BadMonth => Problem::BadRequest(e.to_string()),
            crate::report::ReportError::Store(s) => s.into(),
        }
    }
}

impl From<crate::exchange::PublishError> for Problem {
    fn from(e: crate::exchange::PublishError) -> Self {
        use crate::exchange::PublishError as P;
        match e {
            P::UnknownType(_) => Problem::NotFound(e.to_string()),
            P::Malformed(m) => Problem::BadRequest(m),
            P::Repeated { message, violation } => Problem::InvalidRequest(message, vec![violation]),
            P::Invalid(v) => Problem::Invalid(v),
            P::Conflict => Problem::Conflict(e.to_string()),
            P::NoRecord(_) => Problem::NotFound(e.to_string()),
            P::AlreadyRevoked(_) => Problem::RecordState(e.to_string()),
            P::Store(s) => s.into(),
            P::Internal(m) => Problem::Internal(m),
        }
    }
}

impl From<crate::cases::engine::CaseError> for Problem {
    /// The problem of a case error, for callers that audit their refusals themselves (an inbound
    /// connection writes its rejected log; the API audits a 403 before it answers).
    fn from(e: crate::cases::engine::CaseError) -> Self {
        use crate::cases::engine::CaseError as C;
        use crate::cases::model::Refusal as R;
        match e {
            C::UnknownType(_) | C::NoCase(_) | C::Refused(R::NoStep { .. }) => Problem::NotFound(e.to_string()),
            C::NotOpener(why) | C::NotParty(why) => Problem::Forbidden(why),
            C::Refused(r @ R::NotYours { .. }) => Problem::Forbidden(r.to_string()),
            C::Refused(R::State(why)) => Problem::StateConflict(why),
            C::Refused(R::Invalid(why)) => Problem::InvalidRequest(why, Vec::new()),
            C::Malformed(p) => p.into(),
            C::Invalid(v) => Problem::InvalidRequest("the application does not match its schema".into(), v),
            C::Conflict => Problem::Conflict(e.to_string()),
            C::Busy => Problem::Unavailable(e.to_string()),
            C::Store(s) => s.into(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [Violation],
}

impl Problem {
    /// Status code, problem type slug and title.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use Problem::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            InvalidParameter(..) => (StatusCode::BAD_REQUEST, "invalid-parameter", "Invalid parameter"),
            Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "idempotency-conflict", "Idempotency key reused"),
            Busy(_) => (StatusCode::CONFLICT, "busy", "Already under way"),
            StateConflict(_) => (StatusCode::CONFLICT, "case-state", "Not in a state to take this"),
            RecordState(_) => (StatusCode::CONFLICT, "record-state", "The record is not in a state to take this"),
            Gone(_) => (StatusCode::GONE, "revoked", "Revoked by its owner"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request body too large"),
            HeadersTooLarge(_) => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", "Request headers too large")
            }
            UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "schema-violation", "Schema violation"),
            InvalidRequest(..) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage-full", "Storage full"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The problem body for this error.
    pub fn body(&self) -> serde_json::Value {
        let (status, slug, title) = self.parts();
        let errors: &[Violation] = match self {
            Problem::Invalid(v) | Problem::InvalidRequest(_, v) | Problem::InvalidParameter(_, v) => v,
            _ => &[],
        };
        let detail = match self {
            Problem::Invalid(v) => format!("{} violation(s) of the record type's schema", v.len()),
            other => crate::mask::scrub(&other.to_string()),
        };
        serde_json::to_value(Body {
            kind: format!("urn:conghua-hub:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
        })
        .unwrap_or_default()
    }
}
