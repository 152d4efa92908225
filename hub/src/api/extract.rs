//! Extractors whose rejections are problems: a path segment or a query parameter of the wrong
//! shape answers `400` problem+json naming it, instead of axum's plain-text rejection. The
//! pointer addresses the request's parameters as one document, `{"path": {..}, "query": {..}}`:
//! `/query/limit` is the `limit` parameter.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::Problem;
use crate::catalog::Violation;

/// `axum::extract::Path`, rejected as a problem.
pub struct Path<T>(pub T);

/// `axum::extract::Query`, rejected as a problem.
pub struct Query<T>(pub T);

fn invalid(pointer: String, message: String) -> Problem {
    let message = crate::mask::scrub(&message);
    Problem::InvalidParameter(message.clone(), vec![Violation { pointer, message }])
}

/// The pointer segment of a parameter name (RFC 6901 escapes).
fn segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The route's name of path segment `index`, or of the only one when `index` is None.
async fn nth_name<S: Send + Sync>(parts: &mut Parts, state: &S, index: Option<usize>) -> Option<String> {
    let raw = RawPathParams::from_request_parts(parts, state).await.ok()?;
    let names: Vec<&str> = raw.iter().map(|(k, _)| k).collect();
    match index {
        Some(i) => names.get(i).map(|k| (*k).to_owned()),
        None if names.len() == 1 => Some(names[0].to_owned()),
        None => None,
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let text = e.body_text();
                let key = match e.into_kind() {
                    ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::DeserializeError { key, .. } => Some(key),
                    // A tuple names segments by position, a single value not at all: find the
                    // name the route gave it.
                    ErrorKind::ParseErrorAtIndex { index, .. } => nth_name(parts, state, Some(index)).await,
                    ErrorKind::ParseError { .. } => nth_name(parts, state, None).await,
                    _ => None,
                };
                let pointer = key.map_or_else(|| "/path".to_owned(), |k| format!("/path/{}", segment(&k)));
                Err(invalid(pointer, text))
            }
            Err(other) => Err(Problem::Internal(other.body_text())),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let pointer = if path == "." { "/query".to_owned() } else { format!("/query/{}", segment(&path)) };
            invalid(pointer, format!("query parameter {path}: {}", e.inner()))
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::FromRequestParts;
    use axum::http::Request;

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<u32>,
        since: Option<String>,
    }

    #[tokio::test]
    async fn a_bad_query_parameter_is_a_problem_naming_it() {
        let (mut parts, ()) = Request::get("/v1/audit?since=x&limit=abc").body(()).unwrap().into_parts();
        let Err(p) = Query::<Q>::from_request_parts(&mut parts, &()).await else { panic!("accepted") };
        let body = p.body();
        assert_eq!(body["status"], 400, "{body}");
        assert_eq!(body["errors"][0]["pointer"], "/query/limit", "{body}");
        let (mut parts, ()) = Request::get("/v1/audit?limit=7").body(()).unwrap().into_parts();
        let Ok(Query(q)) = Query::<Q>::from_request_parts(&mut parts, &()).await else { panic!("refused") };
        assert_eq!(q.limit, Some(7));
    }
}
