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

/// `POST /v1/records/{type}/{key}/revoke`.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RevokeRequest {
    /// Why the record is recalled, in words its readers will see (not blank once trimmed).
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    reason: String,
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
                // The hub's rules (api::records::idempotency_key, api::cases::case_step,
                // api::records::check_purpose), stated once for every use.
                let (pattern, format, max) = match (p.name.as_str(), &p.parameter_in) {
                    ("Idempotency-Key", _) => ("^[!-~]{1,255}$", None, None),
                    // Two bounded parts: named as a format too, for generators that read lengths
                    // and patterns apart (and would make a 257-character value without the slash).
                    ("Hub-Case-Step", _) => {
                        ("^[A-Za-z0-9_.:-]{1,128}/[A-Za-z0-9_.:-]{1,128}$", Some("hub-case-step"), None)
                    }
                    ("purpose", ParameterIn::Query) => ("^[a-z0-9]+(-[a-z0-9]+)*$", None, Some(64)),
                    _ => continue,
                };
                use utoipa::openapi::schema::SchemaFormat;
                p.schema = Some(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .pattern(Some(pattern))
                        .format(format.map(|f| SchemaFormat::Custom(f.into())))
                        .max_length(max)
                        .into(),
                );
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

/// The document for the paths the router registered, with what this hub's catalogue knows where
/// a request names a record type: the type ids, and each type's publish and batch bodies.
pub fn document<'a>(
    paths: impl IntoIterator<Item = utoipa::openapi::OpenApi>,
    record_types: impl IntoIterator<Item = &'a crate::catalog::RecordType>,
) -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    for p in paths {
        doc.merge(p);
    }
    security(&mut doc);
    refusals(&mut doc);
    unique_operation_ids(&mut doc);
    let mut json = serde_json::to_value(&doc).unwrap_or_default();
    unsigned_32(&mut json);
    let types: Vec<&crate::catalog::RecordType> = record_types.into_iter().collect();
    let ids: Vec<&str> = types.iter().map(|t| t.id.as_str()).collect();
    if let Some(items) = json.pointer_mut("/components/schemas/LookupRequest/properties/types/items") {
        *items = serde_json::json!({ "type": "string", "enum": ids });
    }
    // First the answers, so each typed operation (a copy of its `{type}` one) has them too.
    replies(&mut json);
    typed_records(&mut json, &types);
    json
}

/// The JSON the department-facing reads answer, as schemas: what a client may rely on. Required
/// members are the ones every answer has; no schema closes its object, because an answer may gain
/// members (CONTRACT.md), and a client must take those in its stride. Written beside the handlers'
/// `json!` rather than derived, since those answers are built as JSON; schemathesis's response
/// conformance check (ops/api-check.sh) holds each to what the hub sends.
fn replies(json: &mut serde_json::Value) {
    use serde_json::json;
    let string = json!({ "type": "string" });
    let count = json!({ "type": "integer", "minimum": 0 });
    let time = json!({ "type": "string", "format": "date-time" });
    let cursor = json!({ "type": "string", "pattern": "^[0-9]{1,18}(-[0-9]{1,18})?$" });
    let view = json!({
        "type": "object",
        "description": "A record version as the caller may see it: `data` is projected to the caller's grant for the purpose (`projected`), or whole for its owner and auditors",
        "required": ["type", "key", "version", "publisher", "received_at"],
        "properties": {
            "type": string, "key": string, "version": { "type": "integer", "minimum": 1 },
            "schema_version": { "type": "integer", "minimum": 0 },
            "digest": { "type": "string", "description": "SHA-256 of the canonical record; left out of projections" },
            "publisher": string, "received_at": time, "projected": { "type": "boolean" },
            "data": { "type": "object", "description": "The record (its type's JSON Schema), or the fields of it the grant names" },
            "state": { "const": "revoked", "description": "A recall, in a history" },
            "revoked": { "type": "object", "description": "A recall's reason and the version it withdrew" },
        },
    });
    let event = json!({
        "type": "object",
        "description": "A CloudEvents 1.0 event, structured JSON mode, as webhooks receive it",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": { "const": "1.0" }, "id": string, "source": string, "type": string,
            "subject": string, "time": time, "datacontenttype": string, "data": {},
            "recordversion": { "type": "integer" }, "auditseq": { "type": "integer" },
            "supersedes": { "type": "integer" },
            "traceparent": { "type": "string", "description": "W3C trace context of the publish (distributed tracing extension)" },
        },
    });
    let reference = json!({
        "type": "object", "required": ["type", "key", "version"],
        "properties": { "type": string, "key": string, "version": { "type": "integer" } },
    });
    let line = json!({
        "type": "object", "required": ["line", "status"],
        "properties": {
            "line": { "type": "integer", "minimum": 1 }, "status": { "type": "integer" },
            "receipt": { "$ref": "#/components/schemas/Receipt" }, "problem": { "$ref": "#/components/schemas/Problem" },
        },
    });
    let feed = json!({
        "type": "object", "required": ["subscription", "count", "events", "cursor"],
        "properties": {
            "subscription": string, "count": count, "cursor": cursor,
            "events": { "type": "array", "items": { "$ref": "#/components/schemas/CloudEvent" } },
        },
    });
    let acked = json!({
        "type": "object", "required": ["acknowledged", "cursor"],
        "properties": { "acknowledged": count, "cursor": cursor },
    });
    let object_list =
        |required: &[&str]| json!({ "type": "array", "items": { "type": "object", "required": required } });
    let catalog = json!({
        "type": "object", "required": ["hub", "principal", "record_types", "grants", "purposes", "subscriptions"],
        "properties": {
            "hub": string,
            "principal": { "type": "object", "required": ["id", "kind"], "properties": { "id": string, "kind": string } },
            "record_types": object_list(&["id", "owner", "sharing", "key", "subjects", "schema_versions", "schema"]),
            "grants": object_list(&["record_type", "purposes", "fields"]),
            "purposes": object_list(&["id"]),
            "subscriptions": object_list(&["name", "record_type", "purpose", "mode"]),
        },
    });
    json["components"]["schemas"]["RecordView"] = view;
    json["components"]["schemas"]["CloudEvent"] = event;
    let view = json!({ "$ref": "#/components/schemas/RecordView" });
    let answers = [
        ("/v1/records/{type}/{key}", view.clone()),
        (
            "/v1/records/{type}/{key}/history",
            json!({
                "type": "object", "required": ["type", "key", "versions"],
                "properties": { "type": string, "key": string, "versions": { "type": "array", "items": view } },
            }),
        ),
        (
            "/v1/lookup",
            json!({
                "type": "object", "required": ["purpose", "count", "records", "revoked"],
                "properties": {
                    "purpose": string, "count": count,
                    "records": { "type": "array", "items": view },
                    "revoked": { "type": "array", "items": reference, "description": "Records about the subject their owners revoked: nothing of them is sent" },
                },
            }),
        ),
        (
            "/v1/batch/{type}",
            json!({
                "type": "object", "required": ["stored", "failed", "results"],
                "properties": { "stored": count, "failed": count, "results": { "type": "array", "items": line } },
            }),
        ),
        ("/v1/feeds/{subscription}", feed.clone()),
        ("/v1/notices", feed),
        ("/v1/feeds/{subscription}/ack", acked.clone()),
        ("/v1/notices/ack", acked),
        ("/v1/catalog", catalog),
    ];
    let signed = json!({
        "type": "object", "required": ["report", "signature"],
        "description": "A signed report: the hub's key (Ed25519, or SM2 with SM3 on the national suite; `signature.algorithm` says which) over the RFC 8785 form of `report`",
        "properties": {
            "report": { "type": "object" },
            "signature": { "type": "object", "required": ["algorithm", "value", "public_key"] },
        },
    });
    let health = json!({ "type": "object", "required": ["status"], "properties": { "status": { "enum": ["pass", "warn", "fail"] } } });
    let other_media = [
        (
            "/v1/schemas/{type}",
            "application/schema+json",
            json!({ "type": "object", "description": "JSON Schema 2020-12" }),
        ),
        (
            "/v1/schemas/{type}/{version}",
            "application/schema+json",
            json!({ "type": "object", "description": "JSON Schema 2020-12" }),
        ),
        ("/health", "application/health+json", health.clone()),
        ("/livez", "application/health+json", health.clone()),
        ("/readyz", "application/health+json", health),
        ("/v1/catalog/services", "application/json", json!({ "type": "object" })),
        ("/v1/ops/checks/{name}/run", "application/json", json!({ "type": "object" })),
        ("/v1/ops/reports/sla", "application/json", signed.clone()),
        ("/v1/ops/reports/sla", "text/html", json!({ "type": "string" })),
        ("/v1/ops/reports/documents-spared", "application/json", signed.clone()),
        ("/v1/ops/reports/documents-spared", "text/html", json!({ "type": "string" })),
        ("/v1/ops/reports/cases", "application/json", signed),
        ("/v1/ops/reports/cases", "text/html", json!({ "type": "string" })),
        // Prometheus text, or OpenMetrics when the scraper asks for it.
        ("/metrics", "text/plain", json!({ "type": "string" })),
        ("/metrics", "application/openmetrics-text", json!({ "type": "string" })),
    ];
    for (path, media, schema) in other_media {
        answer(json, path, media, &schema);
    }
    for (path, schema) in answers.into_iter().chain(operations_answers()) {
        answer(json, path, "application/json", &schema);
    }
}

/// `schema` as the `media` body of every success answer (200, and 201 where an operation creates)
/// of every operation at `path`.
fn answer(json: &mut serde_json::Value, path: &str, media: &str, schema: &serde_json::Value) {
    let Some(item) = json.pointer_mut(&path_pointer(path)).and_then(serde_json::Value::as_object_mut) else { return };
    for op in item.values_mut() {
        for status in ["200", "201"] {
            if let Some(ok) = op.pointer_mut(&format!("/responses/{status}")) {
                ok["content"][media]["schema"] = schema.clone();
            }
        }
    }
}

/// The JSON pointer of a path item (RFC 6901 escapes).
fn path_pointer(path: &str) -> String {
    format!("/paths/{}", path.replace('~', "~0").replace('/', "~1"))
}

/// The answers of the case, operations and audit endpoints: their members at the top, which is
/// what a desk's scripts and dashboards read (the entries inside are described in CONTRACT.md and
/// the runbooks).
fn operations_answers() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let object = |required: &[&str], arrays: &[&str]| {
        let mut properties = serde_json::Map::new();
        for a in arrays {
            properties.insert((*a).to_owned(), json!({ "type": "array" }));
        }
        json!({ "type": "object", "required": required, "properties": properties })
    };
    let case = json!({
        "type": "object",
        "description": "A joint case as the caller may see it: every step's state, due date and outcome",
        "required": ["id", "case_type", "state", "steps"],
        "properties": {
            "id": { "type": "string" }, "case_type": { "type": "string" }, "state": { "type": "string" },
            "audit_seq": { "type": "integer" },
            "steps": { "type": "array", "items": { "type": "object", "required": ["id", "department", "state"] } },
        },
    });
    let ids = ["missing", "unknown", "duplicates", "neighbouring_days"];
    vec![
        ("/v1/cases/{case}", case.clone()),
        ("/v1/cases/{case}/steps/{step}", case),
        (
            "/v1/cases",
            json!({ "type": "object", "required": ["count", "cases"],
                    "properties": { "count": { "type": "integer" }, "cases": { "type": "array", "items": { "type": "object" } } } }),
        ),
        (
            "/v1/ops/cases",
            object(&["today", "case_types", "late_by_department"], &["case_types", "late_by_department"]),
        ),
        ("/v1/ops/deliveries", object(&["state", "counts"], &["entries", "errors"])),
        ("/v1/ops/deliveries/{id}/retry", object(&["id", "subscription", "state"], &[])),
        ("/v1/ops/subscriptions", object(&["subscriptions"], &["subscriptions"])),
        ("/v1/ops/subscriptions/{name}/enable", object(&["subscription", "disabled"], &[])),
        ("/v1/ops/subscriptions/{name}/replay", object(&["subscription", "queued"], &[])),
        ("/v1/ops/checks", object(&["checks"], &["checks"])),
        ("/v1/ops/checks/{name}/history", object(&["check", "runs"], &["runs"])),
        ("/v1/ops/alerts", object(&["alerts"], &["alerts"])),
        ("/v1/audit", object(&["entries"], &["entries"])),
        ("/v1/audit/verify", object(&["ok"], &[])),
        ("/v1/access-log", object(&["count", "accesses"], &["accesses"])),
        (
            "/v1/reconciliation/{subscription}",
            object(&["subscription", "day", "timezone", "delivered", "held", "missing", "unknown", "duplicates"], &ids),
        ),
        (
            "/v1/ops/reconciliation/{subscription}/redeliver",
            object(&["subscription", "day", "queued", "missing"], &["missing"]),
        ),
    ]
}

/// One publish and one batch operation for each record type, whose body is that type's JSON
/// Schema (also served at `/v1/schemas/{type}`) as a component named after the type: a client
/// generator makes `publish_marriage_registration(MarriageRegistration)` of it, and a tool that
/// generates requests from the document sends records the hub can take. The operations are the
/// `{type}` ones with the type filled in, so they keep every parameter, answer and refusal; the
/// `{type}` operations stay for clients that take the type as data. Done on the JSON, because a
/// record schema is JSON Schema 2020-12 as written, not a shape utoipa's types must hold.
fn typed_records(json: &mut serde_json::Value, types: &[&crate::catalog::RecordType]) {
    use serde_json::{json, Value};
    let generic = |path: &str| json.pointer(&format!("{}/post", path_pointer(path))).cloned();
    let (Some(publish), Some(batch)) = (generic("/v1/records/{type}"), generic("/v1/batch/{type}")) else { return };
    for t in types {
        let mut schema = (*t.schema).clone();
        if let Some(o) = schema.as_object_mut() {
            // The document's dialect (OpenAPI 3.1's, a superset of 2020-12) covers it.
            o.remove("$schema");
        }
        let reference = json!({ "$ref": format!("#/components/schemas/{}", t.id) });
        let snake = t.id.replace('-', "_");
        let name = t.name.as_deref().unwrap_or(&t.id);
        let typed = |generic: &Value, verb: &str, media: &str, body: Value, what: String| {
            let mut op = generic.clone();
            op["operationId"] = json!(format!("{verb}_{snake}"));
            op["summary"] = json!(format!("{what} ({name}; owner: {})", t.owner));
            if let Some(params) = op["parameters"].as_array_mut() {
                params.retain(|p| !(p["in"] == "path" && p["name"] == "type"));
            }
            op["requestBody"]["content"][media]["schema"] = body;
            op["requestBody"]["description"] = json!(format!(
                "The record type's JSON Schema, version {} (also at /v1/schemas/{})",
                t.schema_version, t.id
            ));
            op
        };
        let publish =
            typed(&publish, "publish", "application/json", reference.clone(), format!("Publish a {} record", t.id));
        let batch = typed(
            &batch,
            "batch",
            "application/x-ndjson",
            json!({ "type": "array", "items": reference }),
            format!("Publish {} records, one a line", t.id),
        );
        json["paths"][format!("/v1/records/{}", t.id)] = json!({ "post": publish });
        json["paths"][format!("/v1/batch/{}", t.id)] = json!({ "post": batch });
        json["components"]["schemas"][t.id.as_str()] = schema;
    }
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
