//! Joint cases end to end over the real API: one application, each department's step in
//! dependency order (a step done by publishing its record with `Hub-Case-Step`), what each
//! department sees of the case, the events through feeds and signed webhooks, the unified reply,
//! a refusal that stops the other steps, and every bad request answered with a problem and
//! nothing stored.

use std::time::Duration;

use adapters::testkit::{Captured, Receiver};
use anyhow::Result;
use harness::{dev_secret, marriage, resident_id, Client, Reply, TestConfig, TestHub};

const BIN: &str = env!("CARGO_BIN_EXE_hub");
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

    // The couple's access log shows which departments worked on their case.
    let log = hub.client("citizen-portal").post("/v1/access-log", &json!({ "subject": b })).await?;
    assert_eq!(log.status, 200, "{}", log.text);
    let worked: Vec<(String, String)> = log.json["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "case")
        .map(|e| {
            (
                e["department"].as_str().unwrap_or("").to_owned(),
                e["case"]["transition"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for who in ["citizen-service-centre", "civil-affairs", "family-planning", "public-security"] {
        assert!(worked.iter().any(|(d, _)| d == who), "{who} missing from {worked:?}");
    }
    assert!(!log.text.contains(&a) && !log.text.contains(&b), "no ID numbers in the access log");

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

/// Noon in Conghua (UTC+8, no daylight saving) on `day`, as the sweep's clock.
/// The hub's command line with a config and data directory: success, stdout, stderr.
fn hub_cli(args: &[&str], config: &std::path::Path, data: &std::path::Path) -> Result<(bool, String, String)> {
    let out =
        std::process::Command::new(BIN).args(args).arg("--config").arg(config).arg("--data").arg(data).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn noon(day: chrono::NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_hms_opt(4, 0, 0).unwrap().and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_step_is_reminded_then_escalated_to_the_supervision_bureau_once_each() -> Result<()> {
    let (_cfg_dir, cfg) = TestConfig::conghua().fast_retries().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 31), resident_id("19920708", 32));
    let opener = hub.client("citizen-service-centre");
    let r = opener.post("/v1/cases/marriage-and-birth", &application(&a, &b, false)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let due = chrono::NaiveDate::parse_from_str(step(&r.json, "marriage")["due"].as_str().unwrap(), "%Y-%m-%d")?;
    let calendar = &hub.state.catalog.cases.calendar;
    let cases = hub.state.cases.clone();

    // On its last day the step is not late; the day after, Civil Affairs is reminded, once.
    assert_eq!(cases.sweep_at(noon(due)).await?, 0);
    let after = due.succ_opt().unwrap();
    assert_eq!(cases.sweep_at(noon(after)).await?, 1);
    assert_eq!(cases.sweep_at(noon(after)).await?, 0, "a reminder goes once");
    let civil = hub.client("civil-affairs");
    let f = civil.get("/v1/feeds/cases-to-civil-affairs?wait=5&limit=10").await?;
    let kinds: Vec<&str> = f.json["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["hub.case.step.ready", "hub.case.step.overdue"], "{}", f.text);
    assert!(f.json["events"][1]["data"].get("application").is_none(), "a reminder carries no personal data");

    // Two working days past the limit, the step goes to the supervision bureau (an auditor),
    // which then sees who is late; the step's department still answers it.
    let escalate_after = calendar.add_working_days(due, 2);
    assert_eq!(cases.sweep_at(noon(escalate_after)).await?, 0);
    assert_eq!(cases.sweep_at(noon(escalate_after.succ_opt().unwrap())).await?, 1);
    assert_eq!(cases.sweep_at(noon(escalate_after.succ_opt().unwrap())).await?, 0, "an escalation goes once");
    let seen = hub.client("supervision").get(&format!("/v1/cases/{id}")).await?;
    let marriage_step = step(&seen.json, "marriage");
    assert!(marriage_step["reminded_at"].is_string() && marriage_step["escalated_at"].is_string(), "{}", seen.text);
    let audit = hub.client("supervision").get("/v1/audit?limit=1000").await?;
    let escalations = audit.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "case" && e["detail"]["event"] == "escalated" && e["detail"]["to"] == "supervision")
        .count();
    assert_eq!(escalations, 1, "{}", audit.text);
    // The case desk on that day names the step, and counts it for Civil Affairs.
    let that_day = escalate_after.succ_opt().unwrap().to_string();
    let desk = hub.state.store.case_counts(&that_day).await?;
    assert_eq!(desk.late, [("civil-affairs".to_owned(), 1)]);
    let named: Vec<(&str, &str, &str)> =
        desk.late_steps.iter().map(|l| (l.case.as_str(), l.step.as_str(), l.department.as_str())).collect();
    assert_eq!(named, [(id.as_str(), "marriage", "civil-affairs")]);
    assert_eq!(desk.late_steps[0].due, due.to_string());
    assert!(hub.state.store.case_counts(&due.to_string()).await?.late_steps.is_empty(), "not late on its last day");
    let m = marriage("J440184-2026-000031", &a, &b);
    assert_eq!(publish_for_step(&civil, "marriage-registration", &id, "marriage", &m).await?.status, 201);
    let after_done = hub.state.store.case_counts(&that_day).await?;
    assert!(after_done.late_steps.iter().all(|l| l.step != "marriage"), "a done step is not late: {after_done:?}");

    // The month's signed case report: the ops desk gets the late steps, the vendor counts only;
    // the dashboard counts the open case.
    let month = (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m").to_string();
    let ops = hub.client("ops-duty").get(&format!("/v1/ops/reports/cases?month={month}")).await?;
    assert_eq!(ops.status, 200, "{}", ops.text);
    let types = ops.json["report"]["case_types"].as_array().unwrap();
    let mb = types.iter().find(|t| t["case_type"] == "marriage-and-birth").unwrap();
    assert_eq!((mb["opened"].as_u64(), mb["completed"].as_u64()), (Some(1), Some(0)), "{}", ops.text);
    let steps = ops.json["report"]["steps"].as_array().unwrap();
    let done = steps.iter().find(|s| s["step"] == "marriage").unwrap();
    assert_eq!(done["working_days_to_done"]["count"], 1, "{}", ops.text);
    assert!(ops.json["report"]["late_steps"].is_array() && ops.json["signature"]["value"].is_string());
    let vendor = hub.client("vendor").get(&format!("/v1/ops/reports/cases?month={month}")).await?;
    assert_eq!(vendor.status, 200, "{}", vendor.text);
    assert!(vendor.json["report"].get("late_steps").is_none(), "the vendor sees counts only");
    assert!(!vendor.text.contains(&id), "no case is named to the vendor");
    assert_eq!(hub.client("civil-affairs").get(&format!("/v1/ops/reports/cases?month={month}")).await?.status, 403);
    assert_eq!(hub.client("ops-duty").get("/v1/ops/reports/cases?month=2026-13").await?.status, 400);
    let printable = hub.client("ops-duty").get(&format!("/v1/ops/reports/cases?month={month}&format=html")).await?;
    assert!(printable.content_type.starts_with("text/html"), "{}", printable.content_type);
    assert!(
        printable.text.contains("marriage-and-birth") && printable.text.contains("no step was late"),
        "{}",
        printable.text
    );
    let page = hub.client("ops-duty").get("/ops/").await?;
    assert!(page.text.contains("Joint cases") && page.text.contains("format=html"), "{}", page.text);

    // The case desk now: the open case counted; the vendor gets no late-step list.
    let desk = hub.client("ops-duty").get("/v1/ops/cases").await?;
    assert_eq!(desk.status, 200, "{}", desk.text);
    let open = desk.json["case_types"].as_array().unwrap().iter().find(|t| t["case_type"] == "marriage-and-birth");
    assert_eq!(open.map(|t| t["open"].clone()), Some(json!(1)), "{}", desk.text);
    assert!(desk.json["late_steps"].is_array());
    let vendor_desk = hub.client("vendor").get("/v1/ops/cases").await?;
    assert!(vendor_desk.status == 200 && vendor_desk.json.get("late_steps").is_none(), "{}", vendor_desk.text);
    assert_eq!(hub.client("civil-affairs").get("/v1/ops/cases").await?.status, 403);

    // The same from the command line: `hub cases` against the running hub, and the printable
    // report from the data directory once it has stopped.
    let (url, data, config) = (hub.url.clone(), hub.data.path().to_path_buf(), cfg.clone());
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || hub_cli(&["cases", "--url", &url], &config, &data)).await??;
    assert!(ok, "{err}");
    assert!(out.contains("marriage-and-birth") && out.contains("适龄青年婚育一条龙服务"), "{out}");
    let data = hub.stop_keeping_data().await;
    let (ok, out, err) = hub_cli(&["report", "cases", "--month", &month, "--format", "html"], &cfg, data.path())?;
    assert!(ok, "{err}");
    assert!(out.starts_with("<!DOCTYPE html>") && out.contains("birth-service") && out.contains("Ed25519"), "{out}");
    Ok(())
}

fn enterprise_application(owner: &str) -> Value {
    serde_json::from_str::<Value>(
        &std::fs::read_to_string(
            harness::root().join("schemas/enterprise-establishment/v1/examples/valid/lychee-farm.json"),
        )
        .expect("the example application"),
    )
    .map(|mut v| {
        v["legal_representative"]["id_number"] = json!(owner);
        v
    })
    .expect("JSON")
}

/// Waits until a department's staging row (its status and problem, from `row`) is no longer
/// new, and checks the hub took it.
async fn taken<F, Fut>(what: &str, row: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(String, Option<String>)>>,
{
    harness::eventually(Duration::from_secs(30), &format!("{what} to be taken"), || async {
        Ok(row().await?.0 != "new")
    })
    .await?;
    let (status, problem) = row().await?;
    assert_eq!(status, "taken", "{what}: {problem:?}");
    Ok(())
}

/// The enterprise establishment of the plan over the adapters each department uses, on the
/// PostgreSQL store: the Investment Centre's application; Industry and Commerce's licence (the
/// case from its feed, the licence from its MariaDB staging table); then State Tax (its exchange
/// table in its own PostgreSQL, carrying the licence's credit code, answered from its staging
/// table) and Quality Supervision (its feed) in parallel; and the unified reply in the
/// Investment Centre's RabbitMQ queue through the AMQP outbound adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_application_runs_three_departments_in_order_and_replies_through_the_queue() -> Result<()> {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let (Some(pg_url), Some(my_url), Some(amqp_url)) = (
        harness::server("HUB_TEST_POSTGRES_URL"),
        harness::server("HUB_TEST_MYSQL_URL"),
        harness::server("HUB_TEST_AMQP_URL"),
    ) else {
        return Ok(());
    };
    let Some(db) = harness::PgDatabase::create("joint cases on the PostgreSQL store").await? else { return Ok(()) };
    let sfx = harness::suffix();
    let (table, queue) = (format!("ajsl_exchange_{sfx}"), format!("conghua.investment-centre.cases.{sfx}"));
    let tax_db = sqlx::PgPool::connect(&pg_url).await?;
    let ddl = std::fs::read_to_string(harness::root().join("config/examples/sql/state-tax-postgres.sql"))?;
    let staging = format!("swdj_staging_{sfx}");
    for t in ["swdj_staging", "ajsl_exchange"] {
        let from = ddl.find(&format!("CREATE TABLE IF NOT EXISTS {t} ")).expect("the table's DDL");
        let stmt = &ddl[from..from + ddl[from..].find(");").expect("its end") + 2];
        let stmt = stmt.replace("swdj_staging", &staging).replace("ajsl_exchange", &table);
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt)).execute(&tax_db).await?;
    }
    // Industry and Commerce's own MariaDB, with the staging table its licences leave by.
    let ic_db = sqlx::MySqlPool::connect(&my_url).await?;
    let licences = format!("qydj_staging_{sfx}");
    let ddl = std::fs::read_to_string(harness::root().join("config/examples/sql/industry-commerce-mariadb.sql"))?;
    harness::run_sql_my(&ic_db, &ddl.replace("qydj_staging", &licences)).await?;
    let conn = lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;

    let (_cfg_dir, cfg) = TestConfig::conghua_with_exchange(&[
        "cases-to-investment-centre-queue",
        "cases-to-state-tax-table",
        "state-tax-staging",
        "industry-commerce-staging",
    ])
    .without_checks()
    .fast_retries()
    .replace("engine = \"sqlite\"", "engine = \"postgres\"")
    .replace("amqp://guest:guest@127.0.0.1:5672/%2f", &amqp_url)
    .replace("routing_key = \"conghua.investment-centre.cases\"", &format!("routing_key = \"{queue}\""))
    .replace("table = \"ajsl_exchange\"", &format!("table = \"{table}\""))
    .replace("table = \"swdj_staging\" }", &format!("table = \"{staging}\", poll_ms = 50 }}"))
    .replace("table = \"qydj_staging\" }", &format!("table = \"{licences}\", poll_ms = 50 }}"))
    .replace(
        "settings = { url = \"postgres://postgres@127.0.0.1:5432/test\", table",
        &format!("settings = {{ url = \"{pg_url}\", table"),
    )
    .replace("mysql://root@127.0.0.1:3306/test", &my_url)
    .write();
    let dir = tempfile::tempdir()?;
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let hub = harness::HubProcess::start_config(BIN, &cfg, &dir.path().join("data"), harness::free_port()?, &[], &env)
        .await?;
    let owner = resident_id("19580911", 17);
    let centre = hub.client("investment-centre");
    let r = centre.post("/v1/cases/enterprise-establishment", &enterprise_application(&owner)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        states(&r.json),
        [
            ("licence".into(), "ready".into()),
            ("tax".into(), "waiting".into()),
            ("organization-code".into(), "waiting".into())
        ]
    );

    // Industry and Commerce reads the application from its feed and issues the licence from its
    // own MariaDB: a staging row with the case and step of the feed's event.
    let ic = hub.client("industry-commerce");
    let f = ic.get("/v1/feeds/cases-to-industry-commerce?wait=10").await?;
    let event = &f.json["events"][0]["data"];
    assert_eq!(event["application"]["enterprise"]["name"], "广州市从化区流溪河荔枝农业有限公司", "{}", f.text);
    let code = harness::uscc("91440184MA59XK0D1");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {licences} (tyshxydm, qymc, qylx, fddbr_xm, fddbr_sfzh, zczb, clrq, zs, jyfw, djzt, ajbh, hjbh) \
         VALUES (?, '广州市从化区流溪河荔枝农业有限公司', 'limited-liability', '陈国强', ?, 50.00, '2026-12-04', \
         '广州市从化区太平镇钱岗村', '水果种植；农产品初加工', 'active', ?, ?)"
    )))
    .bind(&code)
    .bind(&owner)
    .bind(event["id"].as_str())
    .bind(event["steps"][0]["id"].as_str())
    .execute(&ic_db)
    .await?;
    taken("Industry and Commerce's staging row", || async {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT status, problem FROM {licences}")))
            .fetch_one(&ic_db)
            .await?)
    })
    .await?;

    // State Tax's exchange table gets its step with the licence's credit code; Quality
    // Supervision's feed gets its own.
    harness::eventually(Duration::from_secs(30), "State Tax's case row", || async {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&tax_db).await?;
        Ok(n > 0)
    })
    .await?;
    let (ajbh, hjbh, sjlx, nsrsbh, nsrmc): (String, String, String, Option<String>, Option<String>) = sqlx::query_as(
        sqlx::AssertSqlSafe(format!("SELECT ajbh, hjbh, sjlx, nsrsbh, nsrmc FROM {table} ORDER BY seq LIMIT 1")),
    )
    .fetch_one(&tax_db)
    .await?;
    assert_eq!((ajbh.as_str(), hjbh.as_str(), sjlx.as_str()), (id.as_str(), "tax", "step.ready"));
    assert_eq!(
        (nsrsbh.as_deref(), nsrmc.as_deref()),
        (Some(code.as_str()), Some("广州市从化区流溪河荔枝农业有限公司"))
    );
    let qs = hub.client("quality-supervision");
    let f = qs.get("/v1/feeds/cases-to-quality-supervision?wait=10").await?;
    assert_eq!(f.json["events"][0]["data"]["inputs"]["licence"]["record"]["uscc"], code.as_str(), "{}", f.text);
    assert!(f.json["events"][0]["data"]["inputs"]["licence"]["record"]["legal_representative"]
        .get("id_number")
        .is_none());

    // State Tax answers from its own database: a staging row with the case and step of its
    // exchange-table row is the registration that completes the step.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {staging} (djxh, nsrsbh, nsrmc, nsrlx, djrq, swjg, zt, ajbh, hjbh) \
         VALUES ('TR440184-2026-000901', $1, '广州市从化区流溪河荔枝农业有限公司', 'qy', '2026-12-07', \
         '国家税务总局广州市从化区税务局', 'zc', $2, $3)"
    )))
    .bind(&code)
    .bind(&ajbh)
    .bind(&hjbh)
    .execute(&tax_db)
    .await?;
    taken("State Tax's staging row", || async {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT status, problem FROM {staging}")))
            .fetch_one(&tax_db)
            .await?)
    })
    .await?;
    let seen = centre.get(&format!("/v1/cases/{id}")).await?;
    assert_eq!(step(&seen.json, "tax")["state"], "done", "{}", seen.text);
    let org_code = json!({
        "code": "MA59XK0D-5", "uscc": code, "name": "广州市从化区流溪河荔枝农业有限公司", "organization_type": "enterprise",
        "issued_on": "2026-12-07", "valid_until": "2030-12-06", "issuing_authority": "从化区质量技术监督局", "status": "valid"
    });
    let r = publish_for_step(&qs, "organization-code", &id, "organization-code", &org_code).await?;
    assert_eq!(r.status, 201, "{}", r.text);

    // One unified reply in the Investment Centre's queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut reply = None;
    while reply.is_none() && tokio::time::Instant::now() < deadline {
        match channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await? {
            Some(m) => reply = Some(serde_json::from_slice::<Value>(&m.delivery.data)?),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let reply = reply.unwrap_or_default();
    assert_eq!(reply["type"], "hub.case.completed", "{reply}");
    assert_eq!(
        states(&reply["data"]),
        [("licence".into(), "done".into()), ("tax".into(), "done".into()), ("organization-code".into(), "done".into())]
    );
    assert_eq!(step(&reply["data"], "tax")["record"]["key"], "TR440184-2026-000901");
    assert!(channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await?.is_none(), "one reply");
    let v = hub.client("supervision").get("/v1/audit/verify").await?;
    assert_eq!(v.json["ok"], true, "{}", v.text);
    // The case desk's queries on the PostgreSQL store: nothing open, nothing late.
    let desk = hub.client("ops-duty").get("/v1/ops/cases").await?;
    assert_eq!(desk.status, 200, "{}", desk.text);
    assert!(desk.json["case_types"].as_array().unwrap().iter().all(|t| t["open"] == 0), "{}", desk.text);
    assert_eq!(desk.json["late_steps"], json!([]), "{}", desk.text);
    drop(hub);
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}; DROP TABLE {staging}"))).execute(&tax_db).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {licences}"))).execute(&ic_db).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// SIGKILL while departments complete steps: after the restart every step a department was told
/// is done is done once (its record stored once, the case moved once), every other is still
/// ready and takes the department's retry, and the next department's events arrive at least once
/// with ids that do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_cases_loses_no_transition_and_repeats_none() -> Result<()> {
    const N: usize = 120;
    let fp = Receiver::start().await;
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9103, &fp.url).fast_retries().without_checks().write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = harness::free_port()?;
    let mut hub = harness::HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let opener = hub.client("citizen-service-centre");
    let mut cases = Vec::new();
    for i in 0..N as u32 {
        let (a, b) = (resident_id("19900315", 200 + i), resident_id("19920708", 200 + i));
        let r = opener.post("/v1/cases/marriage-and-birth", &application(&a, &b, false)).await?;
        assert_eq!(r.status, 201, "{}", r.text);
        cases.push((
            r.json["id"].as_str().unwrap().to_owned(),
            marriage(&format!("J440184-2026-{:06}", 500 + i), &a, &b),
        ));
    }
    let answer = |civil: Client, id: String, m: Value, n: usize| async move {
        let req = civil
            .http
            .post(format!("{}/v1/records/marriage-registration", civil.url))
            .header("hub-case-step", format!("{id}/marriage"))
            .header("idempotency-key", format!("marriage-{n}"))
            .json(&m);
        civil.send(req).await.map(|r| r.status).unwrap_or(0)
    };
    // Civil Affairs answers the cases one after another; the hub is killed a quarter of the way,
    // with answers in flight.
    let civil = hub.client("civil-affairs");
    let heard = std::sync::Arc::new(std::sync::Mutex::new(vec![0u16; N]));
    let answering = {
        let (heard, cases) = (heard.clone(), cases.clone());
        tokio::spawn(async move {
            for (n, (id, m)) in cases.into_iter().enumerate() {
                let status = answer(civil.clone(), id, m, n).await;
                heard.lock().unwrap()[n] = status;
            }
        })
    };
    harness::eventually(Duration::from_secs(30), "a quarter of the answers", || async {
        Ok(heard.lock().unwrap().iter().filter(|s| **s == 201).count() >= N / 4)
    })
    .await?;
    hub.kill()?;
    answering.await?;
    let heard = heard.lock().unwrap().clone();
    let told_done = heard.iter().filter(|s| **s == 201).count();
    eprintln!("killed after {told_done} of {N} answers were acknowledged");

    // After the restart, Civil Affairs sends again what it did not hear back about, with the
    // same keys: a replay for what had committed, the transition for what had not.
    let hub = harness::HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    for (n, (id, m)) in cases.iter().enumerate() {
        let status = answer(civil.clone(), id.clone(), m.clone(), n).await;
        assert!(status == 200 || status == 201, "case {n}: {status}");
        if heard[n] == 201 {
            assert_eq!(status, 200, "case {n} was told done before the kill: its retry is a replay");
        }
    }
    let opener = hub.client("citizen-service-centre");
    let audit = hub.client("supervision");
    for (id, m) in &cases {
        let c = opener.get(&format!("/v1/cases/{id}")).await?;
        assert_eq!(step(&c.json, "marriage")["state"], "done", "{}", c.text);
        assert_eq!(step(&c.json, "marriage")["record"]["version"], 1);
        assert_eq!(step(&c.json, "birth-service")["state"], "ready");
        assert_eq!(c.json["version"], 2, "opened, then the marriage: one transition each: {}", c.text);
        let key = m["registration_no"].as_str().unwrap();
        let h = audit.get(&format!("/v1/records/marriage-registration/{key}/history")).await?;
        assert_eq!(h.json["versions"].as_array().map(Vec::len), Some(1), "{key} stored once");
    }
    // Family Planning hears of every ready step, at least once, under one id per step.
    let ready_ids = || -> std::collections::HashSet<String> {
        fp.accepted()
            .iter()
            .filter(|c| event(c)["type"] == "hub.case.step.ready")
            .map(|c| c.headers["webhook-id"].to_str().unwrap_or("").to_owned())
            .collect()
    };
    harness::eventually(Duration::from_secs(60), "every birth-service step to reach Family Planning", || async {
        Ok(ready_ids().len() >= N)
    })
    .await?;
    assert_eq!(ready_ids().len(), N, "one id per ready step, however often it came");
    let v = audit.get("/v1/audit/verify").await?;
    assert_eq!(v.json["ok"], true, "{}", v.text);
    Ok(())
}
