//! Joint cases end to end over the real API: one application, each department's step in
//! dependency order (a step done by publishing its record with `Hub-Case-Step`), what each
//! department sees of the case, the events through feeds and signed webhooks, the unified reply,
//! a refusal that stops the other steps, and every bad request answered with a problem and
//! nothing stored.

use std::time::Duration;

use adapters::testkit::{Captured, Receiver};
use anyhow::Result;
use harness::{dev_secret, marriage, resident_id, Client, Reply, TestConfig, TestHub};
use serde_json::{json, Value};

fn event(c: &Captured) -> Value {
    serde_json::from_slice(&c.body).expect("a CloudEvent")
}

fn application(a: &str, b: &str, adoption: bool) -> Value {
    json!({
        "parties": [
            { "id_number": a, "name": "陈志明", "phone": "13902461234" },
            { "id_number": b, "name": "李晓红", "phone": "13712345678" }
        ],
        "registry_office": "从化区民政局婚姻登记处",
        "appointment_on": "2026-12-08",
        "hukou_household_no": "440184000012345",
        "adoption": adoption
    })
}

async fn publish_for_step(c: &Client, record_type: &str, case: &str, step: &str, body: &Value) -> Result<Reply> {
    let req = c
        .http
        .post(format!("{}/v1/records/{record_type}", c.url))
        .header("hub-case-step", format!("{case}/{step}"))
        .json(body);
    c.send(req).await
}

fn step<'a>(case: &'a Value, id: &str) -> &'a Value {
    case["steps"].as_array().and_then(|s| s.iter().find(|s| s["id"] == id)).unwrap_or(&Value::Null)
}

fn states(case: &Value) -> Vec<(String, String)> {
    case["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| (s["id"].as_str().unwrap_or("").to_owned(), s["state"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn birth(a: &str, b: &str, marriage_no: &str) -> Value {
    json!({
        "certificate_no": "FP440184-2026-000045",
        "mother": { "id_number": b, "name": "李晓红" },
        "father": { "id_number": a, "name": "陈志明" },
        "marriage_registration_no": marriage_no,
        "child_order": 1,
        "registered_on": "2026-12-09",
        "expected_due_date": "2027-06-30",
        "status": "registered"
    })
}

fn household(a: &str) -> Value {
    json!({
        "household_no": "440184000012345", "hukou_type": "family",
        "address": "广东省广州市从化区街口街道新村路8号", "police_station": "从化区公安分局街口派出所",
        "members": [
            { "id_number": a, "name": "陈志明", "sex": "male", "birth_date": "1990-03-15",
              "relation_to_head": "head", "ethnicity": "汉" }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marriage_and_birth_runs_from_one_application_through_three_departments() -> Result<()> {
    let (centre, fp, ps) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("http://127.0.0.1:9110/hub/cases", &centre.url)
        .replace("http://127.0.0.1:9103/hub/cases", &fp.url)
        .replace("http://127.0.0.1:9102/hub/cases", &ps.url)
        .fast_retries()
        .without_checks()
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 123), resident_id("19920708", 124));
    let opener = hub.client("citizen-service-centre");
    let civil = hub.client("civil-affairs");
    let family = hub.client("family-planning");
    let police = hub.client("public-security");

    // One application: marriage ready, the rest waiting, no adoption step (the couple did not ask).
    let r = opener.post("/v1/cases/marriage-and-birth", &application(&a, &b, false)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["location"], format!("/v1/cases/{id}").as_str());
    assert_eq!(r.json["state"], "open");
    assert_eq!(
        states(&r.json),
        [
            ("marriage".into(), "ready".into()),
            ("birth-service".into(), "waiting".into()),
            ("household".into(), "waiting".into())
        ]
    );
    assert!(step(&r.json, "marriage")["due"].is_string(), "{}", r.text);
    assert!(r.json["audit_seq"].is_u64());

    // Civil Affairs finds it in its worklist and in its feed, with the application fields its
    // step names (not the household number).
    let work = civil.get("/v1/cases?state=open&step=mine").await?;
    assert_eq!((work.status, work.json["count"].as_u64()), (200, Some(1)), "{}", work.text);
    assert_eq!(work.json["cases"][0]["id"], id.as_str());
    let f = civil.get("/v1/feeds/cases-to-civil-affairs?wait=5").await?;
    assert_eq!((f.status, f.json["count"].as_u64()), (200, Some(1)), "{}", f.text);
    let ev = &f.json["events"][0];
    assert_eq!(ev["type"], "hub.case.step.ready");
    assert_eq!(ev["data"]["steps"][0]["id"], "marriage");
    assert_eq!(ev["data"]["application"]["parties"][0]["id_number"], a.as_str());
    assert!(ev["data"]["application"].get("hukou_household_no").is_none(), "{ev}");
    assert!(family.get("/v1/cases?step=mine").await?.json["count"] == 0, "nothing is ready for Family Planning yet");

    // Out of order, by the wrong department, an unknown step: problems, nothing changes.
    let early = police.post(&format!("/v1/cases/{id}/steps/household"), &json!({"outcome": "done"})).await?;
    assert_eq!((early.status, early.content_type.as_str()), (409, "application/problem+json"), "{}", early.text);
    assert!(early.json["detail"].as_str().unwrap().contains("waits for birth-service"), "{}", early.text);
    let wrong = family.post(&format!("/v1/cases/{id}/steps/marriage"), &json!({"outcome": "done"})).await?;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    let none = civil.post(&format!("/v1/cases/{id}/steps/divorce"), &json!({"outcome": "done"})).await?;
    assert_eq!(none.status, 404, "{}", none.text);
    let no_record = civil.post(&format!("/v1/cases/{id}/steps/marriage"), &json!({"outcome": "done"})).await?;
    assert_eq!(no_record.status, 422, "a record step needs its record: {}", no_record.text);

    // Civil Affairs registers the marriage with the case reference: the record and the step's
    // completion commit together.
    let m = marriage("J440184-2026-000123", &a, &b);
    let r = publish_for_step(&civil, "marriage-registration", &id, "marriage", &m).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.json["type"].as_str(), r.json["version"].as_u64()), (Some("marriage-registration"), Some(1)));
    let twice = publish_for_step(&civil, "marriage-registration", &id, "marriage", &m).await?;
    assert_eq!(twice.status, 409, "a step is done once: {}", twice.text);
    assert_eq!(
        civil.get("/v1/records/marriage-registration/J440184-2026-000123").await?.json["version"],
        1,
        "the refused publish stored nothing"
    );

    // Family Planning sees its step, the application fields it names and the marriage as its
    // grant projects it: the registration number and the parties' ids, not their addresses.
    let seen = family.get(&format!("/v1/cases/{id}")).await?;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(states(&seen.json), [("birth-service".into(), "ready".into())], "only its own step");
    let input = &seen.json["inputs"]["marriage"];
    assert_eq!((input["type"].as_str(), input["version"].as_u64()), (Some("marriage-registration"), Some(1)));
    assert_eq!(input["record"]["registration_no"], "J440184-2026-000123");
    assert_eq!(input["record"]["parties"][1]["id_number"], b.as_str());
    assert!(input["record"]["parties"][0].get("hukou_address").is_none(), "{input}");
    assert!(seen.json["application"].get("registry_office").is_none());
    // Its webhook got the same, signed.
    tokio::time::timeout(Duration::from_secs(20), fp.wait_accepted(1)).await?;
    let got = fp.accepted().remove(0);
    standardwebhooks::Webhook::new(&dev_secret(hub.data.path(), "HUB_WEBHOOK_SECRET_FAMILY_PLANNING"))?
        .verify(&got.body, &got.headers)?;
    let ev = event(&got);
    assert_eq!(
        (ev["type"].as_str(), ev["source"].as_str()),
        (Some("hub.case.step.ready"), Some("urn:hub:conghua:cases"))
    );
    assert_eq!(input["record"]["registration_no"], "J440184-2026-000123", "{}", seen.text);
    // A department with no step in the case sees nothing of it.
    assert_eq!(hub.client("hrss").get(&format!("/v1/cases/{id}")).await?.status, 403);

    let r = publish_for_step(
        &family,
        "birth-service-registration",
        &id,
        "birth-service",
        &birth(&a, &b, "J440184-2026-000123"),
    )
    .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), ps.wait_accepted(1)).await?;
    assert_eq!(
        event(&ps.accepted()[0])["data"]["inputs"]["birth-service"]["record"]["certificate_no"],
        "FP440184-2026-000045"
    );
    let r = publish_for_step(&police, "household-registration", &id, "household", &household(&a)).await?;
    assert_eq!(r.status, 201, "{}", r.text);

    // One unified reply, through the opener's webhook: every step done, with its record.
    tokio::time::timeout(Duration::from_secs(20), centre.wait_accepted(1)).await?;
    let reply = event(&centre.accepted()[0]);
    assert_eq!(reply["type"], "hub.case.completed");
    assert_eq!(reply["data"]["state"], "completed");
    assert_eq!(
        states(&reply["data"]),
        [
            ("marriage".into(), "done".into()),
            ("birth-service".into(), "done".into()),
            ("household".into(), "done".into())
        ]
    );
    assert_eq!(step(&reply["data"], "household")["record"]["type"], "household-registration");
    assert_eq!(centre.accepted().len(), 1, "one reply");
    let whole = opener.get(&format!("/v1/cases/{id}")).await?;
    assert_eq!(
        (whole.json["state"].as_str(), whole.json["application"]["hukou_household_no"].as_str()),
        (Some("completed"), Some("440184000012345"))
    );
    let late =
        civil.post(&format!("/v1/cases/{id}/steps/marriage"), &json!({"outcome": "refused", "reasons": ["x"]})).await?;
    assert_eq!(late.status, 409, "{}", late.text);

    // Every transition is in the audit chain, and the chain verifies.
    let audit = hub.client("supervision");
    let v = audit.get("/v1/audit/verify").await?;
    assert_eq!((v.status, v.json["ok"].as_bool()), (200, Some(true)), "{}", v.text);
    let seen_by_auditor = audit.get(&format!("/v1/cases/{id}")).await?;
    assert_eq!(seen_by_auditor.json["steps"].as_array().map(Vec::len), Some(3));
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_step_ends_the_case_with_one_reply_naming_it_and_stops_the_others() -> Result<()> {
    let centre = Receiver::start().await;
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("http://127.0.0.1:9110/hub/cases", &centre.url)
        .fast_retries()
        .without_checks()
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 7), resident_id("19920708", 8));
    let opener = hub.client("citizen-service-centre");
    let civil = hub.client("civil-affairs");
    let r = opener.post("/v1/cases/marriage-and-birth", &application(&a, &b, true)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(states(&r.json).len(), 4, "the couple asked for the adoption step: {}", r.text);
    let m = marriage("J440184-2026-000777", &a, &b);
    assert_eq!(publish_for_step(&civil, "marriage-registration", &id, "marriage", &m).await?.status, 201);
    // Birth service and adoption are ready; the adoption is refused.
    let refused = civil
        .post(
            &format!("/v1/cases/{id}/steps/adoption"),
            &json!({"outcome": "refused", "reasons": ["收养人不符合收养法第六条规定的条件"]}),
        )
        .await?;
    assert_eq!(refused.status, 200, "{}", refused.text);
    assert_eq!(refused.json["state"], "refused");
    tokio::time::timeout(Duration::from_secs(20), centre.wait_accepted(1)).await?;
    let reply = event(&centre.accepted()[0]);
    assert_eq!(reply["type"], "hub.case.refused");
    assert_eq!(step(&reply["data"], "adoption")["reasons"][0], "收养人不符合收养法第六条规定的条件");
    assert_eq!(step(&reply["data"], "birth-service")["state"], "cancelled");
    assert_eq!(step(&reply["data"], "household")["state"], "cancelled");
    // Family Planning, which was working on its step, is told to stop.
    let family = hub.client("family-planning");
    assert_eq!(family.get("/v1/cases?step=mine").await?.json["count"], 0);
    let cancelled = family.get("/v1/cases?step=mine&step_state=cancelled").await?;
    assert_eq!(cancelled.json["count"], 1, "{}", cancelled.text);
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_case_requests_get_problems_and_store_nothing() -> Result<()> {
    let (_cfg_dir, cfg) = TestConfig::conghua().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 1), resident_id("19920708", 2));
    let opener = hub.client("citizen-service-centre");
    let before = opener.get("/v1/cases").await?;
    assert_eq!((before.status, before.json["count"].as_u64()), (200, Some(0)), "{}", before.text);

    let unknown = opener.post("/v1/cases/no-such-case", &application(&a, &b, false)).await?;
    assert_eq!((unknown.status, unknown.content_type.as_str()), (404, "application/problem+json"));
    let mut bad = application(&a, &b, false);
    bad["parties"][0]["id_number"] = json!("440184199003151231");
    bad.as_object_mut().unwrap().remove("adoption");
    let invalid = opener.post("/v1/cases/marriage-and-birth", &bad).await?;
    assert_eq!(invalid.status, 422, "{}", invalid.text);
    let pointers: Vec<&str> =
        invalid.json["errors"].as_array().unwrap().iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert!(pointers.contains(&"/parties/0/id_number") && pointers.contains(&"/adoption"), "{pointers:?}");
    assert!(!invalid.text.contains("440184199003151231"), "no ID number in a problem");
    let not_opener =
        hub.client("civil-affairs").post("/v1/cases/marriage-and-birth", &application(&a, &b, false)).await?;
    assert_eq!(not_opener.status, 403, "{}", not_opener.text);
    let malformed = opener
        .send(
            opener
                .http
                .post(format!("{}/v1/cases/marriage-and-birth", opener.url))
                .header("content-type", "application/json")
                .body("{\"parties\": ["),
        )
        .await?;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    assert_eq!(opener.get("/v1/cases/20261203-000000000000").await?.status, 404);
    assert_eq!(opener.get("/v1/cases?state=closed").await?.status, 400);
    assert_eq!(hub.client("ops-duty").get("/v1/cases").await?.status, 403, "ops see counts, not cases");
    assert_eq!(opener.get("/v1/cases").await?.json["count"], 0, "nothing was stored");

    // The same Idempotency-Key and application: the same case; with another application: 409.
    let open = |key: &str, body: &Value| {
        let req = opener
            .http
            .post(format!("{}/v1/cases/marriage-and-birth", opener.url))
            .header("idempotency-key", key)
            .json(body);
        opener.send(req)
    };
    let first = open("k-1", &application(&a, &b, false)).await?;
    let again = open("k-1", &application(&a, &b, false)).await?;
    assert_eq!((first.status, again.status), (201, 200), "{}", again.text);
    assert_eq!(first.json["id"], again.json["id"]);
    assert_eq!(open("k-1", &application(&a, &b, true)).await?.status, 409);
    assert_eq!(opener.get("/v1/cases").await?.json["count"], 1);
    hub.stop().await;
    Ok(())
}
