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
        crate::api::records::history, crate::api::records::lookup, crate::api::meta::catalog,
        crate::api::meta::schema_latest, crate::api::meta::schema_version, crate::api::audit::list,
        crate::api::audit::verify, crate::api::audit::access_log, crate::api::meta::livez, crate::api::meta::readyz,
        crate::api::feeds::read, crate::api::feeds::ack, crate::api::ops::deliveries, crate::api::ops::retry,
        crate::api::ops::replay, crate::api::ops::enable, crate::api::ops::subscriptions,
        crate::api::health::health, crate::api::health::checks, crate::api::health::history, crate::api::health::run, crate::api::health::alerts, crate::api::health::metrics, crate::api::health::sla
    ),
    modifiers(&Security),
    tags((name = "records"), (name = "catalogue"), (name = "delivery"), (name = "operations"), (name = "audit"), (name = "health"))
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
