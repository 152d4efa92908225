//! The core of the refusal matrix in process: the real router over a real store (the deployable
//! config, a fresh data directory), one request at a time through `oneshot`, with the identity
//! the TLS layer would have attached. Each refusal must be problem+json with its status and type,
//! and name its field where it has one. The end-to-end suites cover the same over real mTLS.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::problem::PROBLEM_JSON;
use super::{router, AppState, PeerIdentity};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/conghua.toml");

async fn hub(dir: &std::path::Path) -> AppState {
    let (config, catalog) = crate::load(std::path::Path::new(CONFIG)).unwrap();
    crate::server::open(config, catalog, dir).await.unwrap().0
}

fn resident_id(first17: &str) -> String {
    format!("{first17}{}", crate::catalog::formats::resident_id_check(first17).unwrap())
}

fn marriage(no: &str) -> Value {
    let party = |id: String, sex: &str, birth: &str| {
        json!({"id_number": id, "name": "陈志明", "sex": sex, "birth_date": birth, "nationality": "CHN",
               "hukou_address": "广东省广州市从化区街口街道新村路8号"})
    };
    json!({"registration_no": no, "kind": "marriage", "registered_on": "2026-11-20",
           "registry_office": "从化区民政局婚姻登记处",
           "parties": [party(resident_id("44018419900315123"), "male", "1990-03-15"),
                       party(resident_id("44018419920708124"), "female", "1992-07-08")]})
}

/// One request as `who` (None: no certificate), answered by a fresh router over `state`.
async fn call(
    state: &AppState,
    who: Option<&str>,
    method: Method,
    uri: &str,
    body: Payload<'_>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((media, _)) = &body {
        req = req.header(header::CONTENT_TYPE, *media);
    }
    let mut req = req.body(body.map_or_else(Body::empty, |(_, b)| Body::from(b))).unwrap();
    req.extensions_mut().insert(PeerIdentity { common_name: who.map(str::to_owned) });
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let media = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, media, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn json_body(v: &Value) -> Payload<'static> {
    Some(("application/json", v.to_string().into_bytes()))
}

/// A request body and its media type.
type Payload<'a> = Option<(&'a str, Vec<u8>)>;

/// What, as whom, method, URI, body → status, problem type, a pointer among its errors.
type Case<'a> = (&'a str, Option<&'a str>, Method, String, Payload<'a>, u16, &'a str, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_core_matrix_is_a_problem_with_its_status_type_and_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub(dir.path()).await;
    let m = "/v1/records/marriage-registration";
    let good = marriage("J440184-2026-000001");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("registered_on");
    let too_large = Some(("application/json", vec![b' '; state.config.server.max_body_bytes + 1]));
    let cases: Vec<Case> = vec![
        ("no identity", None, Method::GET, "/v1/catalog".into(), None, 401, "unauthenticated", None),
        ("unknown endpoint", Some("civil-affairs"), Method::GET, "/v1/nothing".into(), None, 404, "not-found", None),
        ("wrong method", Some("civil-affairs"), Method::DELETE, "/v1/catalog".into(), None, 405, "http-405", None),
        ("not the owner", Some("state-tax"), Method::POST, m.into(), json_body(&good), 403, "forbidden", None),
        (
            "unknown type",
            Some("civil-affairs"),
            Method::POST,
            "/v1/records/no-such-type".into(),
            json_body(&good),
            404,
            "not-found",
            None,
        ),
        (
            "not JSON",
            Some("civil-affairs"),
            Method::POST,
            m.into(),
            Some(("text/plain", b"x".to_vec())),
            415,
            "unsupported-media-type",
            None,
        ),
        (
            "bad JSON",
            Some("civil-affairs"),
            Method::POST,
            m.into(),
            Some(("application/json", b"{\"a\":".to_vec())),
            400,
            "bad-request",
            None,
        ),
        ("too large", Some("civil-affairs"), Method::POST, m.into(), too_large, 413, "too-large", None),
        (
            "schema violation",
            Some("civil-affairs"),
            Method::POST,
            m.into(),
            json_body(&missing),
            422,
            "schema-violation",
            Some("/registered_on"),
        ),
        (
            "read for an ungranted purpose",
            Some("state-tax"),
            Method::GET,
            format!("{m}/J440184-2026-000001?purpose=marketing"),
            None,
            403,
            "forbidden",
            None,
        ),
        (
            "operator endpoint as a department",
            Some("civil-affairs"),
            Method::GET,
            "/v1/ops/deliveries".into(),
            None,
            403,
            "forbidden",
            None,
        ),
        (
            "bad path parameter",
            Some("ops-duty"),
            Method::POST,
            "/v1/ops/deliveries/abc/retry".into(),
            None,
            400,
            "invalid-parameter",
            Some("/path/id"),
        ),
        (
            "bad query parameter",
            Some("supervision"),
            Method::GET,
            "/v1/audit?limit=many".into(),
            None,
            400,
            "invalid-parameter",
            Some("/query/limit"),
        ),
    ];
    for (what, who, method, uri, body, status, slug, pointer) in cases {
        let (got, media, problem) = call(&state, who, method, &uri, body).await;
        assert_eq!(got.as_u16(), status, "{what}: {problem}");
        assert!(media.starts_with(PROBLEM_JSON), "{what}: answered as {media:?}");
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert_eq!(problem["type"], format!("urn:conghua-hub:problem:{slug}"), "{what}: {problem}");
        if let Some(p) = pointer {
            let pointers: Vec<&Value> = problem["errors"].as_array().unwrap().iter().map(|e| &e["pointer"]).collect();
            assert!(pointers.iter().any(|q| *q == p), "{what}: {p} not among {pointers:?}");
        }
        assert!(!problem.to_string().contains("44018419900315123"), "{what}: a resident id in {problem}");
    }

    // The same Idempotency-Key with another body: 409, and the first receipt stands.
    let publish = |body: &Value| {
        let mut req = Request::post(m)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", "oneshot-1")
            .body(Body::from(body.to_string()))
            .unwrap();
        req.extensions_mut().insert(PeerIdentity { common_name: Some("civil-affairs".into()) });
        router(state.clone()).oneshot(req)
    };
    let first = publish(&good).await.unwrap();
    let status = first.status();
    let body = axum::body::to_bytes(first.into_body(), 1 << 20).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let conflict = publish(&marriage("J440184-2026-000002")).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    // Every refusal of a known caller above is on the record: the chain holds them.
    let (_, _, audit) = call(&state, Some("supervision"), Method::GET, "/v1/audit?limit=1000", None).await;
    let denied = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "deny").count();
    assert!(denied >= 3, "403s and the 401 are audited: {audit}");
    state.store.close().await;
}

/// The document is built from the same registrations as the router (utoipa-axum's `routes!`);
/// this holds it to that: every documented operation reaches a handler, every other method on a
/// documented path is a 405, and every operation says how it authenticates and how it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_and_the_openapi_document_have_the_same_operations() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub(dir.path()).await;
    let (_, _, doc) = call(&state, Some("ops-duty"), Method::GET, "/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 40, "{} paths", paths.len());
    for required in ["/openapi.json", "/ops/", "/ops/style.css", "/livez", "/readyz", "/v1/records/{type}"] {
        assert!(paths.contains_key(required), "{required} is not in the document");
    }
    let mut operations = 0;
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        // Each `{param}` filled with a name no catalogue has.
        let uri = path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
        for method in ["get", "post", "put", "delete", "patch"] {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let body = (method == "post").then(|| ("application/json", b"{}".to_vec()));
            let (status, media, problem) = call(&state, Some("ops-duty"), m, &uri, body).await;
            let Some(op) = item.get(method) else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri} is routed but not documented");
                continue;
            };
            operations += 1;
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(!id.is_empty() && ids.insert(id.clone()), "{method} {path}: operation id {id:?} is not unique");
            let unrouted = status == StatusCode::NOT_FOUND && problem["detail"] == "no such endpoint";
            assert!(!unrouted && status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented, not routed");
            let code = status.as_u16().to_string();
            assert!(op["responses"].get(&code).is_some(), "{method} {uri} answered {code}, which it does not document");
            if status.as_u16() >= 400 {
                assert!(media.starts_with(PROBLEM_JSON), "{method} {uri}: {media}");
                assert!(op["responses"][&code]["content"].get(PROBLEM_JSON).is_some(), "{method} {path} {code}");
            }
            for (code, answer) in op["responses"].as_object().unwrap() {
                let typed =
                    answer["content"].as_object().is_some_and(|c| c.values().any(|m| m.get("schema").is_some()));
                assert!(!code.starts_with('2') || typed, "{method} {path} {code} states no schema for its body");
            }
            let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {path} states no security"));
            let public = ["/livez", "/readyz"].contains(&path.as_str());
            assert_eq!(security.iter().any(|s| s.get("mutualTLS").is_some()), !public, "{method} {path}");
            if !public {
                for refusal in ["401", "403", "431", "500", "503"] {
                    assert!(op["responses"].get(refusal).is_some(), "{method} {path} does not document {refusal}");
                }
            }
        }
    }
    assert!(operations >= 43, "{operations} operations");
}

/// Each record type has its own publish and batch operation, whose body is the type's own JSON
/// Schema: its valid examples validate against the body the document states, and a publish of one
/// through the typed path is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_type_has_a_publish_and_a_batch_typed_by_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub(dir.path()).await;
    let (_, _, doc) = call(&state, Some("civil-affairs"), Method::GET, "/openapi.json", None).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut typed = 0;
    for t in state.catalog.iter() {
        let publish = &doc["paths"][format!("/v1/records/{}", t.id)]["post"];
        let batch = &doc["paths"][format!("/v1/batch/{}", t.id)]["post"];
        let reference = format!("#/components/schemas/{}", t.id);
        assert_eq!(publish["requestBody"]["content"]["application/json"]["schema"]["$ref"], reference.as_str());
        assert_eq!(
            batch["requestBody"]["content"]["application/x-ndjson"]["schema"]["items"]["$ref"],
            reference.as_str()
        );
        assert!(publish["parameters"].as_array().unwrap().iter().all(|p| p["name"] != "type"), "{}", t.id);
        for status in ["201", "403", "413", "422"] {
            assert!(publish["responses"].get(status).is_some(), "{} {status}", t.id);
        }
        let schema = &doc["components"]["schemas"][t.id.as_str()];
        assert_eq!(schema["$id"], t.schema["$id"], "{}: the component is the type's schema", t.id);
        let validator = jsonschema::validator_for(schema).unwrap();
        let examples = root.join(format!("schemas/{}/v{}/examples/valid", t.id, t.schema_version));
        for file in std::fs::read_dir(&examples).unwrap() {
            let example: Value = serde_json::from_slice(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
            assert!(validator.is_valid(&example), "{}: a valid example does not fit the document", t.id);
        }
        typed += 1;
    }
    assert_eq!(typed, state.catalog.iter().count());
    assert!(typed >= 20, "{typed} record types");
    let ids: std::collections::HashSet<_> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap().to_owned()))
        .collect();
    assert!(ids.contains("publish_marriage_registration") && ids.contains("batch_marriage_registration"));
    let (status, _, receipt) = call(
        &state,
        Some("civil-affairs"),
        Method::POST,
        "/v1/records/marriage-registration",
        json_body(&marriage("J440184-2026-000777")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    state.store.close().await;
}

/// The answers a department (or the desk) reads are what the document says they are: each real answer validates
/// against the schema of its operation's 200 (the document is the root, so its `$ref`s resolve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_answers_fit_the_documented_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub(dir.path()).await;
    let (_, _, doc) = call(&state, Some("civil-affairs"), Method::GET, "/openapi.json", None).await;
    let fits = |path: &str, method: &str, answer: &Value| {
        let pointer =
            format!("/paths/{}/{method}/responses/200/content/application~1json/schema", path.replace('/', "~1"));
        assert!(doc.pointer(&pointer).is_some(), "{method} {path} documents no schema for its 200");
        let mut root = doc.clone();
        // A URI fragment: the braces of a path template are percent-encoded.
        root["$ref"] = json!(format!("#{}", pointer.replace('{', "%7B").replace('}', "%7D")));
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(answer).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{method} {path}: {errors:?} in {answer}");
    };
    let no = "J440184-2026-000888";
    let (status, _, receipt) = call(
        &state,
        Some("civil-affairs"),
        Method::POST,
        "/v1/records/marriage-registration",
        json_body(&marriage(no)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let read = format!("/v1/records/marriage-registration/{no}");
    let projected = format!("{read}?purpose=birth-service-registration");
    let subject = marriage(no)["parties"][0]["id_number"].clone();
    let lookup = json!({ "subject": subject, "purpose": "birth-service-registration" });
    let batch = Some(("application/x-ndjson", format!("{}\n{{}}\n", marriage("J440184-2026-000889")).into_bytes()));
    for (who, method, uri, body, path) in [
        ("family-planning", Method::GET, projected.as_str(), None, "/v1/records/{type}/{key}"),
        ("civil-affairs", Method::GET, read.as_str(), None, "/v1/records/{type}/{key}"),
        ("civil-affairs", Method::GET, &format!("{read}/history"), None, "/v1/records/{type}/{key}/history"),
        ("family-planning", Method::POST, "/v1/lookup", json_body(&lookup), "/v1/lookup"),
        ("family-planning", Method::GET, "/v1/catalog", None, "/v1/catalog"),
        ("civil-affairs", Method::POST, "/v1/batch/marriage-registration", batch, "/v1/batch/{type}"),
        ("hrss", Method::GET, "/v1/feeds/marriage-to-hrss?limit=10", None, "/v1/feeds/{subscription}"),
        ("hrss", Method::GET, "/v1/notices", None, "/v1/notices"),
        ("supervision", Method::GET, "/v1/audit?limit=5", None, "/v1/audit"),
        ("supervision", Method::GET, "/v1/audit/verify", None, "/v1/audit/verify"),
        ("ops-duty", Method::GET, "/v1/ops/deliveries?state=pending", None, "/v1/ops/deliveries"),
        ("vendor", Method::GET, "/v1/ops/deliveries?state=pending", None, "/v1/ops/deliveries"),
        ("ops-duty", Method::GET, "/v1/ops/subscriptions", None, "/v1/ops/subscriptions"),
        ("ops-duty", Method::GET, "/v1/ops/checks", None, "/v1/ops/checks"),
        ("ops-duty", Method::GET, "/v1/ops/cases", None, "/v1/ops/cases"),
    ] {
        let (status, _, answer) = call(&state, Some(who), method.clone(), uri, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}: {answer}");
        fits(path, &method.as_str().to_ascii_lowercase(), &answer);
        if path == "/v1/lookup" {
            assert_eq!(answer["count"], 1, "the lookup found the record: {answer}");
        }
        if path == "/v1/feeds/{subscription}" {
            assert!(answer["count"].as_u64().unwrap() >= 1, "the feed has the record: {answer}");
            let ack = json!({ "cursor": answer["cursor"] });
            let (status, _, acked) =
                call(&state, Some("hrss"), Method::POST, "/v1/feeds/marriage-to-hrss/ack", json_body(&ack)).await;
            assert_eq!(status, StatusCode::OK, "{acked}");
            fits("/v1/feeds/{subscription}/ack", "post", &acked);
        }
    }
    // The schemas are not vacuous: a read without its `data`'s object, or a feed without events, fails.
    let broken = json!({ "type": "marriage-registration", "key": no, "version": "one", "publisher": "civil-affairs", "received_at": "x" });
    let mut root = doc.clone();
    root["$ref"] = json!("#/components/schemas/RecordView");
    assert!(!jsonschema::validator_for(&root).unwrap().is_valid(&broken));
    state.store.close().await;
}

/// A credential that fails is refused, never passed over for another that passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_certificate_with_a_bad_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub(dir.path()).await;
    for (token, want) in [(None, StatusCode::OK), (Some("Bearer not-a-token"), StatusCode::UNAUTHORIZED)] {
        let mut req = Request::builder().uri("/v1/catalog");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, t);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(PeerIdentity { common_name: Some("civil-affairs".into()) });
        let resp = router(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), want, "{token:?}");
    }
    let (_, _, audit) = call(&state, Some("supervision"), Method::GET, "/v1/audit?limit=1000", None).await;
    let refused = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "deny").cloned().unwrap();
    assert_eq!(refused["actor"], "civil-affairs", "{refused}");
    assert!(refused["detail"]["reason"].as_str().unwrap().contains("bearer token"), "{refused}");
}
