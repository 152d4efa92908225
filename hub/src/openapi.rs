//! The OpenAPI 3.1 description served at `/openapi.json`, generated with utoipa from the types the
//! API really uses, so the document cannot drift from the receipts and problems it describes.

use utoipa::OpenApi;

/// RFC 9457 problem details as the hub sends them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// URN of the problem type.
    r#type: String,
    /// Short summary.
    title: String,
    /// HTTP status.
    status: u16,
    /// What went wrong (never personal data).
    detail: String,
    /// Every violation, with its JSON pointer.
    errors: Option<Vec<crate::catalog::Violation>>,
}

/// `POST /v1/lookup`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LookupRequest {
    /// A resident ID number (GB 11643, its check digit verified) or a unified social credit code
    /// (GB 32100, its check character verified).
    #[schema(pattern = "^[0-9]{17}[0-9X]$|^[0-9A-HJ-NPQRTUWXY]{18}$")]
    subject: String,
    /// A purpose the caller declared (kebab-case).
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 64)]
    purpose: String,
    /// Only these record types.
    types: Option<Vec<String>>,
}

/// `POST /v1/feeds/{subscription}/ack` and `POST /v1/notices/ack`: `{"cursor"}` and nothing else.
pub struct AckRequest;

impl utoipa::PartialSchema for AckRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder};
        ObjectBuilder::new()
            .property("cursor", <Cursor as utoipa::PartialSchema>::schema())
            .required("cursor")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}
impl utoipa::ToSchema for AckRequest {}

/// A feed cursor: as a feed page returns it (`ROWS` or `ROWS-LOG`), or a row count.
pub struct Cursor;

impl utoipa::PartialSchema for Cursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,18}(-[0-9]{1,18})?$")))
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
            .into()
    }
}

impl utoipa::ToSchema for Cursor {}

/// `POST /v1/reconciliation/{subscription}`, JSON form: the ids a department received on a day.
pub struct ReconcileRequest;

/// `POST /v1/ops/reconciliation/{subscription}/redeliver`: a day, and the ids reported missing.
pub struct RedeliverRequest;

/// `{"day", "event_ids"}`, with `required` members and no others.
fn day_and_ids(required: &[&str]) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let mut o = ObjectBuilder::new()
        .property(
            "day",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
                .description(Some("A day in the hub's time zone, YYYY-MM-DD")),
        )
        .property(
            "event_ids",
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^evt_[0-9a-f]{32}$"))),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for r in required {
        o = o.required(*r);
    }
    o.into()
}

impl utoipa::PartialSchema for ReconcileRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        day_and_ids(&["day", "event_ids"])
    }
}
impl utoipa::ToSchema for ReconcileRequest {}

impl utoipa::PartialSchema for RedeliverRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        day_and_ids(&["day"])
    }
}
impl utoipa::ToSchema for RedeliverRequest {}

/// `POST /v1/cases/{case}/steps/{step}`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
pub enum StepAnswer {
    /// Done, with the record it produced where the step completes with one.
    Done {
        /// The record version the step produced.
        record: Option<crate::cases::model::RecordRef>,
    },
    /// Refused, with the reasons the applicant will read.
    Refused {
        /// Why, in words the applicant reads.
        reasons: Vec<String>,
    },
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conghua Data Exchange Hub",
        description = "Publish, validate, store, read and audit shared government records (CONTRACT.md)."
    ),
    components(schemas(crate::store::Receipt, crate::catalog::Violation, Problem)),
    tags((name = "records"), (name = "catalogue"), (name = "delivery"), (name = "operations"), (name = "audit"), (name = "health"), (name = "cases"))
)]
struct ApiDoc;

/// Paths that answer without a certificate or token.
const PUBLIC: [&str; 2] = ["/livez", "/readyz"];

/// Declares the two ways to authenticate, and which one each operation takes.
fn security(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "mutualTLS",
        SecurityScheme::MutualTls {
            description: Some("a client certificate signed by the hub's CA; its CN names the principal".into()),
            extensions: None,
        },
    );
    components
        .add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    for (path, item) in openapi.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        for op in operations(item) {
            op.security = Some(if public {
                // An empty requirement: anyone may call it.
                vec![SecurityRequirement::default()]
            } else {
                vec![
                    SecurityRequirement::new("mutualTLS", Vec::<String>::new()),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]
            });
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten()
}

/// The refusals the layers around every handler can give (authentication, roles, admission
/// control, the header and body limits, unknown names in the path), added to each operation they
/// apply to; and every error answer described as the problem+json it is.
fn refusals(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str()) || path == "/livez";
        for op in operations(item) {
            for p in op.parameters.iter_mut().flatten() {
                if p.name == "Idempotency-Key" {
                    // The hub's rule (api::records::idempotency_key), stated once for every use.
                    p.schema = Some(
                        utoipa::openapi::schema::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String)
                            .pattern(Some("^[!-~]{1,255}$"))
                            .into(),
                    );
                }
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            let in_path = params.iter().any(|p| matches!(p.parameter_in, ParameterIn::Path));
            let in_query_or_header =
                params.iter().any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header));
            let body = op.request_body.as_ref().map(|b| b.content.keys().cloned().collect::<Vec<_>>());
            let json_body = body.as_ref().is_some_and(|types| types.iter().any(|t| t.ends_with("json")));
            let mut add = |code: &str, what: &str| {
                op.responses.responses.entry(code.into()).or_insert_with(|| problem(what).into());
            };
            if !public {
                add("401", "No certificate or token this hub knows");
                add("403", "The caller's role, grants or purpose do not allow this; the refusal is audited");
                add("429", "The department is over its rate limit; `Retry-After` says when to retry");
            }
            if in_path {
                add("404", "No such record type, record, subscription, case, check or delivery");
            }
            if in_path || in_query_or_header || body.is_some() {
                add("400", "A parameter or the body is malformed; `detail` says which");
            }
            if body.is_some() {
                add("413", "The body is larger than the hub accepts");
                add("415", "The body's Content-Type is not one this operation reads");
            }
            if json_body {
                add("422", "The body is valid JSON but not what this operation takes; `errors` points at each member");
            }
            if path != "/livez" {
                add("431", "The request headers are larger than 32 KiB");
                add("503", "Overloaded (shed at once), shutting down, or the audit entry could not be made durable; `Retry-After` says when to retry");
            }
            add("500", "A fault of the hub's own; the body names no personal data");
            // Every error, whoever declared it, is a problem.
            for (code, response) in op.responses.responses.iter_mut() {
                if code.starts_with('4') || code.starts_with('5') {
                    if let utoipa::openapi::RefOr::T(r) = response {
                        let description = r.description.clone();
                        *r = problem(&description);
                    }
                }
            }
        }
    }
}

/// The document for the paths the router registered, with the names this hub's catalogue knows
/// where a request names a record type.
pub fn document(paths: impl IntoIterator<Item = utoipa::openapi::OpenApi>, record_types: &[&str]) -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    for p in paths {
        doc.merge(p);
    }
    security(&mut doc);
    refusals(&mut doc);
    unique_operation_ids(&mut doc);
    let mut json = serde_json::to_value(&doc).unwrap_or_default();
    unsigned_32(&mut json);
    if let Some(items) = json.pointer_mut("/components/schemas/LookupRequest/properties/types/items") {
        *items = serde_json::json!({ "type": "string", "enum": record_types });
    }
    json
}

/// utoipa describes a `u32` as `int32` from 0, which reads as at most 2^31 − 1; the hub takes
/// every `u32`, so the document says so.
fn unsigned_32(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("format").and_then(|f| f.as_str()) == Some("int32") && o.get("minimum") == Some(&0.into()) {
                o.remove("format");
                o.insert("maximum".into(), u32::MAX.into());
            }
            o.values_mut().for_each(unsigned_32);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unsigned_32),
        _ => {}
    }
}

/// utoipa names an operation after its handler, and several modules have a `read` or a `list`:
/// an operation id must be unique in the document (client generators name methods after it), so
/// a shared one takes its tag in front.
fn unique_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for item in openapi.paths.paths.values_mut() {
        for op in operations(item) {
            *seen.entry(op.operation_id.clone().unwrap_or_default()).or_default() += 1;
        }
    }
    for item in openapi.paths.paths.values_mut() {
        for op in operations(item) {
            let id = op.operation_id.clone().unwrap_or_default();
            if seen.get(&id).copied().unwrap_or(0) > 1 {
                let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
                op.operation_id = Some(format!("{tag}_{id}"));
            }
        }
    }
}
