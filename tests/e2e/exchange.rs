//! End to end over real HTTPS with certificates from the hub's own PKI: the marriage "once-only"
//! flow, the minimum-living-allowance review, every error class of the contract, the catalogue,
//! the audit endpoints and the citizen access log.

use anyhow::Result;
use harness::{marriage, resident_id, uscc, TestHub};
use serde_json::{json, Value};

const MARRIAGE: &str = "/v1/records/marriage-registration";

fn audit_actions(entries: &Value) -> Vec<(String, String, String)> {
    entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marriage_is_published_once_and_read_by_each_department_for_its_purpose() -> Result<()> {
    let hub = TestHub::start().await?;
    let (a, b) = (resident_id("19900315", 123), resident_id("19920708", 124));
    let civil = hub.client("civil-affairs");

    let r = civil.publish("marriage-registration", &marriage("J440184-2026-000123", &a, &b)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["routed"], 5, "family planning, public security, hrss, state tax, land and housing");
    assert_eq!(r.json["digest"].as_str().unwrap().len(), 64);
    for k in ["type", "key", "audit_seq", "received_at"] {
        assert!(r.json.get(k).is_some(), "receipt lacks {k}");
    }

    // Family Planning reads with its purpose and gets exactly its granted fields.
    let fp = hub.client("family-planning");
    let r = fp.get(&format!("{MARRIAGE}/J440184-2026-000123?purpose=birth-service-registration")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["projected"], true);
    let data = &r.json["data"];
    assert!(data.get("registry_office").is_none(), "not granted to family planning");
    assert_eq!(data["parties"][0]["id_number"], a.as_str());
    assert_eq!(data["parties"][1]["hukou_address"], "广东省广州市从化区江埔街道凤院村");

    // State Tax's grant is narrower: no hukou address, no birth date.
    let tax = hub.client("state-tax");
    let r = tax.get(&format!("{MARRIAGE}/J440184-2026-000123?purpose=income-tax-deduction")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let party = r.json["data"]["parties"][0].as_object().unwrap();
    let mut keys: Vec<&str> = party.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id_number", "name"]);

    // State Tax without a purpose: 403. Education, which has no grant: 403.
    let r = tax.get(&format!("{MARRIAGE}/J440184-2026-000123")).await?;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.content_type.starts_with("application/problem+json"));
    let edu = hub.client("education");
    let r = edu.get(&format!("{MARRIAGE}/J440184-2026-000123?purpose=birth-service-registration")).await?;
    assert_eq!(r.status, 403);
    // A purpose Family Planning has no grant for is refused as well.
    let r = fp.get(&format!("{MARRIAGE}/J440184-2026-000123?purpose=income-tax-deduction")).await?;
    assert_eq!(r.status, 403);

    // The refusals are on the audit record, for the supervision bureau to see.
    let audit = hub.client("supervision").get("/v1/audit?after=0&limit=1000").await?;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let actions = audit_actions(&audit.json);
    assert!(actions.contains(&("education".into(), "deny".into(), "forbidden".into())), "{actions:?}");
    assert!(actions.contains(&("state-tax".into(), "deny".into(), "forbidden".into())));
    assert!(actions.contains(&("family-planning".into(), "read".into(), "ok".into())));
    assert!(!audit.text.contains(&a), "the audit log holds keyed hashes, not IDs");

    // A lookup by one party's ID returns the record, projected.
    let r = fp.post("/v1/lookup", &json!({"subject": b, "purpose": "birth-service-registration"})).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["count"], 1);
    assert_eq!(r.json["records"][0]["key"], "J440184-2026-000123");
    assert!(r.json["records"][0]["data"].get("registry_office").is_none());
    // Education may not state Family Planning's purpose: the lookup is refused, not answered empty.
    let r = edu.post("/v1/lookup", &json!({"subject": b, "purpose": "birth-service-registration"})).await?;
    assert_eq!(r.status, 403, "{}", r.text);

    // A second publish with the same key makes version 2; the owner's history shows both.
    let mut divorce = marriage("J440184-2026-000123", &a, &b);
    divorce["registry_office"] = json!("从化区民政局婚姻登记处（更正）");
    let r = civil.publish("marriage-registration", &divorce).await?;
    assert_eq!((r.status, r.json["version"].as_u64()), (201, Some(2)), "{}", r.text);
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000123/history")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let versions: Vec<u64> =
        r.json["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);
    // The owner reads the full latest version without a purpose; others may not see history.
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000123")).await?;
    assert_eq!((r.status, r.json["version"].as_u64(), r.json["projected"].as_bool()), (200, Some(2), Some(false)));
    assert_eq!(fp.get(&format!("{MARRIAGE}/J440184-2026-000123/history")).await?.status, 403);
    assert_eq!(hub.client("supervision").get(&format!("{MARRIAGE}/J440184-2026-000123/history")).await?.status, 200);

    // Only the owner publishes.
    let r = fp.publish("marriage-registration", &marriage("J440184-2026-000999", &a, &b)).await?;
    assert_eq!(r.status, 403);
    let r = civil.publish("no-such-type", &json!({})).await?;
    assert_eq!(r.status, 404);
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000404")).await?;
    assert_eq!(r.status, 404);

    // The citizen portal answers "who read my records, when, for what purpose".
    let r = hub.client("citizen-portal").post("/v1/access-log", &json!({"subject": a})).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let who: Vec<(&str, &str)> = r.json["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["department"].as_str().unwrap(), e["purpose"].as_str().unwrap_or("")))
        .collect();
    assert!(who.contains(&("family-planning", "birth-service-registration")), "{who:?}");
    assert!(who.contains(&("state-tax", "income-tax-deduction")), "{who:?}");
    assert!(!who.iter().any(|(d, _)| *d == "education"), "education received nothing");
    // The access log is the portal's alone.
    assert_eq!(fp.post("/v1/access-log", &json!({"subject": a})).await?.status, 403);

    // The chain verifies through the API (counts and digests only; ops may call it).
    let r = hub.client("ops-duty").get("/v1/audit/verify").await?;
    assert_eq!((r.status, r.json["ok"].as_bool()), (200, Some(true)), "{}", r.text);
    assert_eq!(hub.client("ops-duty").get("/v1/audit").await?.status, 403, "the export is for auditors");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_living_allowance_review_gathers_a_household_from_five_departments() -> Result<()> {
    let hub = TestHub::start().await?;
    let head = resident_id("19580911", 17);
    let grandchild = resident_id("20150102", 45);
    let company = uscc("91440184MA59XK0D1");

    let r = hub.client("public-security").publish("household-registration", &json!({
        "household_no": "440184000012345", "hukou_type": "family", "address": "从化区街口街道新村路8号",
        "police_station": "街口派出所", "members": [
            {"id_number": head, "name": "陈国强", "sex": "male", "birth_date": "1958-09-11", "relation_to_head": "head"},
            {"id_number": grandchild, "name": "陈小宝", "sex": "male", "birth_date": "2015-01-02", "relation_to_head": "grandchild"}]
    })).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let hrss = hub.client("hrss");
    let r = hrss
        .publish(
            "social-insurance-enrollment",
            &json!({
        "enrollment_no": "SI440184-0000012345", "person": {"id_number": head, "name": "陈国强"},
        "employer_uscc": company, "insurance_types": ["pension", "medical"], "contribution_base": 4588.0,
        "enrolled_on": "2008-01-01", "status": "suspended"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = hrss
        .publish(
            "employment-registration",
            &json!({
        "registration_no": "EM440184-2025-000310", "person": {"id_number": head, "name": "陈国强"},
        "employment_status": "unemployed", "employer_name": "从化荔枝专业合作社",
        "started_on": "2008-01-01", "ended_on": "2025-06-30", "registered_on": "2025-07-02"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = hub
        .client("state-tax")
        .publish(
            "tax-registration",
            &json!({
        "registration_no": "TR440184-2019-000777", "taxpayer_id": head, "taxpayer_name": "陈国强",
        "taxpayer_kind": "individual-business", "registered_on": "2019-04-01",
        "tax_authority": "国家税务总局广州市从化区税务局", "status": "normal"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = hub
        .client("industry-commerce")
        .publish(
            "enterprise-registration",
            &json!({
        "uscc": company, "name": "广州市从化区流溪河荔枝农业有限公司", "enterprise_type": "limited-liability",
        "legal_representative": {"id_number": head, "name": "陈国强"}, "registered_capital": 50,
        "established_on": "2016-03-18", "address": "从化区太平镇钱岗村", "status": "active"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = hub
        .client("disabled-federation")
        .publish(
            "disability-certificate",
            &json!({
        "certificate_no": "CDPF440184-2020-000231", "person": {"id_number": head, "name": "陈国强"},
        "disability_category": "physical", "disability_level": 3, "issued_on": "2020-05-06",
        "valid_until": "2030-05-05", "status": "valid"}),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);

    let civil = hub.client("civil-affairs");
    let r = civil.post("/v1/lookup", &json!({"subject": head, "purpose": "minimum-living-allowance-review"})).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut types: Vec<&str> =
        r.json["records"].as_array().unwrap().iter().map(|v| v["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "disability-certificate",
            "employment-registration",
            "enterprise-registration",
            "household-registration",
            "social-insurance-enrollment",
            "tax-registration"
        ]
    );
    for rec in r.json["records"].as_array().unwrap() {
        assert_eq!(rec["projected"], true, "{rec}");
        let data = &rec["data"];
        match rec["type"].as_str().unwrap() {
            // Names of insured persons and the police station are not needed for the review.
            "social-insurance-enrollment" => {
                assert!(data["person"].get("name").is_none() && data.get("employer_uscc").is_none())
            }
            "household-registration" => {
                assert!(data.get("police_station").is_none() && data["members"][0].get("sex").is_none())
            }
            "enterprise-registration" => assert!(data.get("business_scope").is_none()),
            _ => {}
        }
    }
    // Types can be narrowed, and another purpose yields nothing.
    let r = civil
        .post(
            "/v1/lookup",
            &json!({"subject": head, "purpose": "minimum-living-allowance-review",
        "types": ["tax-registration"]}),
        )
        .await?;
    assert_eq!(r.json["count"], 1, "{}", r.text);
    // Land and Housing's purpose is not Civil Affairs' to state.
    let r = civil.post("/v1/lookup", &json!({"subject": head, "purpose": "housing-purchase-eligibility"})).await?;
    assert_eq!(r.status, 403, "{}", r.text);
    // The grandchild appears only in the household record.
    let r =
        civil.post("/v1/lookup", &json!({"subject": grandchild, "purpose": "minimum-living-allowance-review"})).await?;
    assert_eq!(r.json["count"], 1);
    // An enterprise is a subject too.
    let r =
        civil.post("/v1/lookup", &json!({"subject": company, "purpose": "minimum-living-allowance-review"})).await?;
    assert_eq!(r.json["records"][0]["type"], "enterprise-registration", "{}", r.text);
    // Bad lookups name the field, never echo it.
    let r = civil
        .post("/v1/lookup", &json!({"subject": "440184199003151231", "purpose": "Bad Purpose", "types": ["nope"]}))
        .await?;
    assert_eq!(r.status, 422);
    let pointers: Vec<&str> =
        r.json["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/subject", "/purpose", "/types/0"]);
    assert!(!r.text.contains("440184199003151231"));
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_problem_and_stores_nothing() -> Result<()> {
    let hub = TestHub::start().await?;
    let civil = hub.client("civil-affairs");
    let (a, b) = (resident_id("19900315", 123), resident_id("19920708", 124));

    // 422 lists every violation with its pointer, and echoes no ID number or name.
    let mut bad = marriage("J440184-2026-000001", &a, &b);
    let wrong = format!("{}{}", &a[..17], if a.ends_with('0') { '1' } else { '0' });
    bad["parties"][0]["id_number"] = json!(wrong);
    bad.as_object_mut().unwrap().remove("kind");
    bad["witness"] = json!("王五");
    bad["parties"][1]["sex"] = json!("unknown");
    let r = civil.publish("marriage-registration", &bad).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.content_type.starts_with("application/problem+json"));
    let mut pointers: Vec<&str> =
        r.json["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    pointers.sort();
    assert_eq!(pointers, ["/kind", "/parties/0/id_number", "/parties/1/sex", "/witness"]);
    for needle in [wrong.as_str(), &b, "陈志明", "李晓红", "王五"] {
        assert!(!r.text.contains(needle), "the problem body echoes {needle}: {}", r.text);
    }
    for k in ["type", "title", "status", "detail"] {
        assert!(r.json.get(k).is_some());
    }

    // 400 bad JSON, 415 not JSON, 413 too large.
    let url = format!("{}{MARRIAGE}", hub.url);
    let r = civil.send(civil.http.post(&url).header("content-type", "application/json").body("{\"kind\": ")).await?;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.content_type.starts_with("application/problem+json"));
    let r = civil.send(civil.http.post(&url).header("content-type", "text/plain").body("hello")).await?;
    assert_eq!(r.status, 415);
    let r = civil.send(civil.http.post(&url).body("{}")).await?;
    assert_eq!(r.status, 415, "no content type");
    let huge = format!("{{\"registry_office\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = civil.send(civil.http.post(&url).header("content-type", "application/json").body(huge)).await?;
    assert_eq!(r.status, 413);
    assert!(r.content_type.starts_with("application/problem+json"));

    // Idempotency: same key + same body → 200 and the same receipt; another body → 409.
    let rec = marriage("J440184-2026-000002", &a, &b);
    let send = |body: &Value, key: &str| civil.http.post(&url).header("idempotency-key", key).json(body);
    let first = civil.send(send(&rec, "req-0001")).await?;
    assert_eq!(first.status, 201);
    let again = civil.send(send(&rec, "req-0001")).await?;
    assert_eq!((again.status, &again.json), (200, &first.json));
    let mut other = rec.clone();
    other["registered_on"] = json!("2026-11-21");
    assert_eq!(civil.send(send(&other, "req-0001")).await?.status, 409);
    assert_eq!(civil.send(send(&rec, "bad key with spaces")).await?.status, 400);

    // Nothing invalid was stored: only version 1 of J...0002 exists, and J...0001 not at all.
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000002/history")).await?;
    assert_eq!(r.json["versions"].as_array().unwrap().len(), 1);
    assert_eq!(civil.get(&format!("{MARRIAGE}/J440184-2026-000001")).await?.status, 404);

    // Axum's own rejections are problems too: wrong method, unknown path, bad query.
    let r = civil.send(civil.http.delete(&url)).await?;
    assert_eq!(r.status, 405);
    assert!(r.content_type.starts_with("application/problem+json"), "{}", r.content_type);
    let r = civil.get("/v1/nothing-here").await?;
    assert_eq!(r.status, 404);
    assert!(r.content_type.starts_with("application/problem+json"));
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000002?purpose=Not%20Kebab")).await?;
    assert_eq!(r.status, 400);
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_store_valid_lines_and_report_each_line() -> Result<()> {
    let hub = TestHub::start().await?;
    let civil = hub.client("civil-affairs");
    let mut body = String::new();
    for i in 0..20u32 {
        let rec = marriage(
            &format!("J440184-2026-{:06}", 100 + i),
            &resident_id("19900315", i),
            &resident_id("19920708", i + 500),
        );
        body.push_str(&rec.to_string());
        body.push('\n');
        if i == 5 {
            body.push_str("{not json\n");
        }
        if i == 9 {
            body.push_str(&json!({"registration_no": "J440184-2026-999999"}).to_string());
            body.push('\n');
        }
    }
    let req = civil
        .http
        .post(format!("{}/v1/batch/marriage-registration", hub.url))
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", "batch-7")
        .body(body.clone());
    let r = civil.send(req).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["stored"].as_u64(), r.json["failed"].as_u64()), (Some(20), Some(2)));
    let results = r.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 22);
    assert_eq!(results[6]["status"], 400);
    assert_eq!(results[11]["status"], 422);
    assert_eq!(results[11]["line"], 12);
    assert!(results[11]["problem"]["errors"].as_array().unwrap().len() >= 4);
    assert_eq!(results[0]["receipt"]["version"], 1);

    // Replaying the same batch with the same key stores nothing new.
    let req = civil
        .http
        .post(format!("{}/v1/batch/marriage-registration", hub.url))
        .header("content-type", "application/x-ndjson")
        .header("accept", "application/x-ndjson")
        .header("idempotency-key", "batch-7")
        .body(body);
    let r = civil.send(req).await?;
    let lines: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 22);
    assert!(lines.iter().filter(|l| l["status"] == 200).count() == 20, "{}", r.text);
    let r = civil.get(&format!("{MARRIAGE}/J440184-2026-000100/history")).await?;
    assert_eq!(r.json["versions"].as_array().unwrap().len(), 1);
    // Batches are NDJSON.
    let req = civil.http.post(format!("{}/v1/batch/marriage-registration", hub.url)).json(&json!({}));
    assert_eq!(civil.send(req).await?.status, 415);
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_the_certificate_from_the_hubs_ca_or_a_known_token() -> Result<()> {
    let hub = TestHub::start().await?;
    // No certificate, no token: 401 problem, and the refusal is audited.
    let r = hub.anonymous().get("/v1/catalog").await?;
    assert_eq!(r.status, 401);
    assert!(r.content_type.starts_with("application/problem+json"));
    assert_eq!(hub.anonymous().get("/livez").await?.status, 200);
    assert_eq!(hub.anonymous().get("/readyz").await?.status, 200);
    // A wrong bearer token is no better.
    let anon = hub.anonymous();
    let r = anon.send(anon.http.get(format!("{}/v1/catalog", hub.url)).bearer_auth("guess")).await?;
    assert_eq!(r.status, 401);

    // A certificate issued by another CA (a second hub's development PKI) fails the handshake.
    let other = tempfile::tempdir()?;
    hub::pki::DevPki::new(other.path()).ensure(["civil-affairs"])?;
    let foreign =
        harness::client_presenting(hub.data.path(), Some(harness::identity_pem(other.path(), "civil-affairs")?))?;
    let result = foreign.get(format!("{}/v1/catalog", hub.url)).send().await;
    match result {
        Err(_) => {}
        Ok(resp) => panic!("a foreign certificate was accepted with status {}", resp.status()),
    }

    let audit = hub.client("supervision").get("/v1/audit?limit=1000").await?;
    let actions = audit_actions(&audit.json);
    assert!(actions.iter().filter(|(a, act, _)| a == "anonymous" && act == "deny").count() >= 2, "{actions:?}");

    // The catalogue shows every type and the caller's own grants.
    let r = hub.client("state-tax").get("/v1/catalog").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["record_types"].as_array().unwrap().len(), 27);
    let grants: Vec<&str> =
        r.json["grants"].as_array().unwrap().iter().map(|g| g["record_type"].as_str().unwrap()).collect();
    assert_eq!(grants, ["marriage-registration", "enterprise-registration"]);
    let schema = hub.client("state-tax").get("/v1/schemas/marriage-registration/1").await?;
    assert_eq!(schema.json["$id"], "urn:conghua:hub:schema:marriage-registration:v1");
    assert_eq!(hub.client("state-tax").get("/v1/schemas/marriage-registration/7").await?.status, 404);
    let api = hub.client("vendor").get("/openapi.json").await?;
    assert_eq!(api.json["openapi"], "3.1.0");
    assert!(api.json["paths"]["/v1/records/{type}"]["post"].is_object());
    // Admission control's answers are documented on every operation but liveness.
    for status in ["429", "431", "503"] {
        assert!(api.json["paths"]["/v1/records/{type}"]["post"]["responses"][status].is_object(), "{status}");
    }
    assert!(api.json["paths"]["/livez"]["get"]["responses"]["503"].is_null());
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_named_by_digest_in_the_config_identify_callers() -> Result<()> {
    use sha2::Digest;
    let token = "s3cret-token-of-the-tax-bureau";
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let (_dir, cfg) = harness::TestConfig::conghua()
        .replace("id = \"state-tax\"\n", &format!("id = \"state-tax\"\ntoken_sha256 = \"{digest}\"\n"))
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let anon = hub.anonymous();
    let r = anon.send(anon.http.get(format!("{}/v1/catalog", hub.url)).bearer_auth(token)).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["principal"]["id"], "state-tax");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_the_handshake() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (config, _) = hub::load(&harness::conghua_config()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pki = hub::pki::DevPki::new(data.path());
    pki.ensure(hub::policy::Directory::new(&config).ids())?;
    pki.revoke("hrss")?;
    let (_cfg_dir, cfg) = harness::TestConfig::conghua().write();
    let hub = TestHub::start_in(&cfg, data).await?;
    let revoked = hub.client("hrss").get("/v1/catalog").await;
    assert!(revoked.is_err(), "a revoked certificate was accepted: {:?}", revoked.map(|r| r.status));
    assert_eq!(hub.client("state-tax").get("/v1/catalog").await?.status, 200);
    // Re-issuing gives the department a new, unrevoked certificate.
    pki.issue_client("hrss", 30)?;
    assert_eq!(hub.client("hrss").get("/v1/catalog").await?.status, 200);
    hub.stop().await;
    Ok(())
}
