//! Sends a [`Problem`] as an RFC 9457 `application/problem+json` response, with the headers its
//! kind calls for (`Retry-After`, `WWW-Authenticate`). Internal causes are logged here and never sent.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub use crate::problem::Problem;

/// Media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, ..) = self.parts();
        if let Problem::Internal(cause) = &self {
            tracing::error!(cause = %crate::mask::scrub(cause), "request failed");
        }
        let mut resp = (status, self.body().to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Problem::Unavailable(_) | Problem::StorageFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Problem::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Problem::RateLimited(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(super::admission::retry_after_secs(*wait)));
            }
            _ => {}
        }
        if matches!(self, Problem::Unauthenticated) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"conghua-hub\""));
        }
        resp
    }
}
