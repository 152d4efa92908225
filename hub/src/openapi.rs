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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conghua Data Exchange Hub",
        description = "Publish, validate, store, read and audit shared government records (CONTRACT.md)."
    ),
    components(schemas(crate::store::Receipt, crate::catalog::Violation, Problem)),
    paths(
        crate::api::records::publish, crate::api::records::batch, crate::api::records::read,
        crate::api::records::history, crate::api::records::lookup, crate::api::records::revoke, crate::api::meta::catalog, crate::api::meta::services,
        crate::api::meta::schema_latest, crate::api::meta::schema_version, crate::api::audit::list,
        crate::api::audit::verify, crate::api::access_log::access_log, crate::api::meta::livez, crate::api::meta::readyz,
        crate::api::feeds::read, crate::api::feeds::ack, crate::api::feeds::notices, crate::api::feeds::notices_ack, crate::api::reconciliation::reconcile, crate::api::reconciliation::redeliver, crate::api::ops::deliveries, crate::api::ops::retry,
        crate::api::ops::replay, crate::api::ops::enable, crate::api::ops::subscriptions,
        crate::api::health::health, crate::api::health::checks, crate::api::health::history, crate::api::health::run, crate::api::health::alerts, crate::api::health::metrics, crate::api::health::sla, crate::api::health::documents_spared,
        crate::api::cases::open, crate::api::cases::read, crate::api::cases::list, crate::api::cases::answer,
        crate::api::cases::report, crate::api::cases::desk
    ),
    modifiers(&Security, &Admission),
    tags((name = "records"), (name = "catalogue"), (name = "delivery"), (name = "operations"), (name = "audit"), (name = "health"), (name = "cases"))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "mutualTLS",
            SecurityScheme::MutualTls {
                description: Some("a client certificate signed by the hub's CA; its CN names the principal".into()),
                extensions: None,
            },
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Answers any operation may give before its handler runs (admission control and the header
/// limit): added to every operation except `/livez`, which is exempt from shedding.
struct Admission;

impl utoipa::Modify for Admission {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
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
            if path == "/livez" {
                continue;
            }
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                let r = &mut op.responses.responses;
                r.entry("429".into()).or_insert_with(|| {
                    problem("The department is over its rate limit; `Retry-After` says when to retry").into()
                });
                r.entry("431".into()).or_insert_with(|| problem("The request headers are larger than 32 KiB").into());
                r.entry("503".into()).or_insert_with(|| {
                    problem("Overloaded (shed at once) or shutting down; `Retry-After` says when to retry").into()
                });
            }
        }
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
