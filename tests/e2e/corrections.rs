//! Corrections and recalls over the real API: a corrected marriage reaches every department
//! that had an earlier version (its webhooks and feeds, and the departments that only read or
//! looked it up, through their notice feeds), each with only its granted fields and once; a
//! recalled record answers `410` to others, its notices survive a SIGKILL, and every bad request
//! gets a problem with nothing stored.

use std::time::Duration;

use adapters::testkit::{Answer, Captured};
use anyhow::Result;
use harness::{marriage, resident_id, Client, TestHub};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hub");

fn event(c: &Captured) -> Value {
    serde_json::from_slice(&c.body).expect("a CloudEvent")
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

/// The events of a feed (read once, not acknowledged).
async fn feed(c: &Client, path: &str) -> Result<Vec<Value>> {
    let f = c.get(path).await?;
    assert_eq!(f.status, 200, "{}", f.text);
    Ok(f.json["events"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_marriage_reaches_everyone_who_had_it_once_with_only_their_fields() -> Result<()> {
    let ([fp, ps, lh], config) = harness::marriage_webhooks().await;
    let (_cfg_dir, cfg) = config
        .append(
            "[[checks]]\nname = \"notices\"\nkind = \"notices\"\nschedule = \"0 0 9 * * *\"\n\
             thresholds = { warn_working_days = 0, critical_working_days = 10 }\n",
        )
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 501), resident_id("19920708", 502));
    let key = "J440184-2026-000501";
    let civil = hub.client("civil-affairs");
    let m = marriage(key, &a, &b);
    let r = civil.publish("marriage-registration", &m).await?;
    assert_eq!((r.status, r.json["routed"].as_u64()), (201, Some(5)), "{}", r.text);
    for rx in [&fp, &ps, &lh] {
        tokio::time::timeout(Duration::from_secs(20), rx.wait_accepted(1)).await?;
    }
    // HRSS takes its feed and acknowledges; State Tax reads without acknowledging.
    let hrss = hub.client("hrss");
    let f = hrss.get("/v1/feeds/marriage-to-hrss?wait=5").await?;
    assert_eq!(f.json["count"], 1, "{}", f.text);
    hrss.post("/v1/feeds/marriage-to-hrss/ack", &json!({ "cursor": f.json["cursor"] })).await?;
    let tax = hub.client("state-tax");
    assert_eq!(feed(&tax, "/v1/feeds/marriage-to-state-tax?wait=5").await?.len(), 1);
    // Justice reads it for a notarization; the Disabled Persons' Federation looks the husband
    // up. Neither has a subscription for marriages.
    let justice = hub.client("justice");
    let read =
        justice.get(&format!("/v1/records/marriage-registration/{key}?purpose=marital-status-notarization")).await?;
    assert_eq!(read.status, 200, "{}", read.text);
    let federation = hub.client("disabled-federation");
    let found = federation
        .post(
            "/v1/lookup",
            &json!({ "subject": a, "purpose": "disability-subsidy-review", "types": ["marriage-registration"] }),
        )
        .await?;
    assert_eq!(found.json["count"], 1, "{}", found.text);

    // The registration was wrong: it records a divorce. Family Planning's filter
    // (`.kind == "marriage"`) rejects the new version, yet it hears of the correction.
    let mut corrected = m.clone();
    corrected["kind"] = json!("divorce");
    let r = civil.publish("marriage-registration", &corrected).await?;
    assert_eq!((r.status, r.json["version"].as_u64()), (201, Some(2)), "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), fp.wait_accepted(2)).await?;
    let notice = event(&fp.accepted()[1]);
    assert_eq!(notice["type"], "hub.record.corrected", "{notice}");
    assert_eq!(notice["subject"], format!("marriage-registration/{key}"));
    assert_eq!((notice["supersedes"].as_u64(), notice["recordversion"].as_u64()), (Some(1), Some(2)));
    assert_eq!(notice["data"]["data"]["kind"], "divorce");
    assert!(notice["data"]["data"].get("registry_office").is_none(), "not in Family Planning's grant");
    // Public Security and Land and Housing take the new version as their filters let it
    // through, marked as superseding version 1; their feeds give HRSS and State Tax the same.
    for rx in [&ps, &lh] {
        tokio::time::timeout(Duration::from_secs(20), rx.wait_accepted(2)).await?;
        let e = event(&rx.accepted()[1]);
        assert_eq!(
            (e["type"].as_str(), e["supersedes"].as_u64()),
            (Some("hub.record.marriage-registration.v1"), Some(1))
        );
    }
    let got = feed(&hrss, "/v1/feeds/marriage-to-hrss?wait=5").await?;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0]["data"]["kind"].as_str(), got[0]["supersedes"].as_u64()), (Some("divorce"), Some(1)));
    // The departments that read or looked it up are told through their notice feeds, each
    // within its own grant.
    let told = feed(&justice, "/v1/notices?wait=5").await?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["type"], "hub.record.corrected");
    assert_eq!(told[0]["data"]["purpose"], "marital-status-notarization");
    assert_eq!(keys(&told[0]["data"]["data"]["parties"][0]), ["id_number", "name"]);
    let told = feed(&federation, "/v1/notices?wait=5").await?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(keys(&told[0]["data"]["data"]["parties"][0]), ["id_number"], "the federation's grant is narrower");
    assert!(feed(&hub.client("education"), "/v1/notices").await?.is_empty(), "education never had it");
    let notices = justice.get("/v1/notices").await?;
    let ack = justice.post("/v1/notices/ack", &json!({ "cursor": notices.json["cursor"] })).await?;
    assert_eq!((ack.status, ack.json["acknowledged"].as_u64()), (200, Some(1)), "{}", ack.text);
    assert!(feed(&justice, "/v1/notices").await?.is_empty(), "acknowledged");

    // A correction of a field nobody else is granted (the registry office) tells nobody: the
    // subscribers whose filters take it get the new version, nobody gets a notice.
    let mut office = corrected.clone();
    office["registry_office"] = json!("从化区民政局婚姻登记处（太平分处）");
    assert_eq!(civil.publish("marriage-registration", &office).await?.status, 201);
    tokio::time::timeout(Duration::from_secs(20), ps.wait_accepted(3)).await?;
    assert!(feed(&justice, "/v1/notices").await?.is_empty());
    assert!(feed(&federation, "/v1/notices").await?.len() == 1, "only the first correction, unacknowledged");
    assert_eq!(fp.accepted().len(), 2, "Family Planning's fields did not change");

    // The scheduled check names the department that sits on its notice (the federation); the
    // one that acknowledged (Justice) is not named.
    let ops = hub.client("ops-duty");
    let run = ops.post("/v1/ops/checks/notices/run", &json!({})).await?;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(run.json["report"]["status"], "warn", "{}", run.text);
    let measured = &run.json["report"]["measurements"];
    assert_eq!(measured["unacknowledged.disabled-federation"], 1.0, "{}", run.text);
    assert!(measured.get("unacknowledged.justice").is_none(), "{}", run.text);
    assert!(!run.text.contains(key) && !run.text.contains(&a), "the vendor reads this: {}", run.text);

    // The couple's access log shows who was told.
    let log = hub.client("citizen-portal").post("/v1/access-log", &json!({ "subject": a })).await?;
    let told: Vec<&str> = log.json["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "notice")
        .filter_map(|e| e["department"].as_str())
        .collect();
    assert_eq!(told.len(), 3, "one notice each, for the one change that touched their fields: {told:?}");
    for d in ["justice", "family-planning", "disabled-federation"] {
        assert!(told.contains(&d), "{d} not among those told: {told:?}");
    }
    // ... and who acknowledged: Justice on its notice feed, Family Planning's webhook by taking
    // it; the federation has not.
    let acknowledged = |d: &str| {
        log.json["accesses"].as_array().unwrap().iter().any(|e| {
            e["action"] == "notice" && e["department"] == d && e["acknowledged"].as_str().is_some_and(|t| t.len() > 10)
        })
    };
    assert!(acknowledged("justice"), "{}", log.text);
    assert!(acknowledged("family-planning"), "{}", log.text);
    assert!(!acknowledged("disabled-federation"), "{}", log.text);
    assert!(!log.text.contains(&a), "no ID numbers in the access log");
    hub.stop().await;
    Ok(())
}

/// A recall: later reads and lookups by others answer `410` with nothing of the record, the
/// owner and auditors keep the history, and the owner may publish it again. The hub is killed
/// right after the recall is acknowledged, before any receiver could take its notices (they
/// answer 503): after the restart every notice still goes out, once per department.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recalled_record_answers_410_and_its_notices_survive_a_sigkill() -> Result<()> {
    let ([fp, ps, lh], config) = harness::marriage_webhooks().await;
    let (_cfg_dir, cfg) = config.write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = harness::free_port()?;
    let mut hub = harness::HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let (a, b) = (resident_id("19880101", 601), resident_id("19890202", 602));
    let key = "J440184-2026-000601";
    let civil = hub.client("civil-affairs");
    assert_eq!(civil.publish("marriage-registration", &marriage(key, &a, &b)).await?.status, 201);
    for rx in [&fp, &ps, &lh] {
        tokio::time::timeout(Duration::from_secs(20), rx.wait_accepted(1)).await?;
    }
    let justice = hub.client("justice");
    let path = format!("/v1/records/marriage-registration/{key}");
    let purpose = "?purpose=marital-status-notarization";
    assert_eq!(justice.get(&format!("{path}{purpose}")).await?.status, 200);

    // Bad recalls: not the owner, no reason, an unknown record.
    let refused = hub.client("public-security").post(&format!("{path}/revoke"), &json!({"reason": "x"})).await?;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let empty = civil.post(&format!("{path}/revoke"), &json!({"reason": "  "})).await?;
    assert_eq!(empty.status, 422, "{}", empty.text);
    assert_eq!(empty.json["errors"][0]["pointer"], "/reason");
    let extra = civil.post(&format!("{path}/revoke"), &json!({"reason": "x", "version": 1})).await?;
    assert_eq!(extra.status, 422, "{}", extra.text);
    let unknown =
        civil.post("/v1/records/marriage-registration/J440184-2026-999999/revoke", &json!({"reason": "x"})).await?;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert_eq!(justice.get(&format!("{path}{purpose}")).await?.status, 200, "nothing was revoked yet");

    // Every receiver is down; the recall is acknowledged, and the hub is killed at once.
    for rx in [&fp, &ps, &lh] {
        rx.answer(Answer::Status(503, None));
    }
    let reason = "婚姻登记无效：当事人未达法定婚龄 (void: under the legal age)";
    let req = civil
        .http
        .post(format!("{}{path}/revoke", civil.url))
        .header("idempotency-key", "revoke-601")
        .json(&json!({ "reason": reason }));
    let revoked = civil.send(req).await?;
    assert_eq!((revoked.status, revoked.json["version"].as_u64()), (200, Some(2)), "{}", revoked.text);
    hub.kill()?;

    let hub = harness::HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    for rx in [&fp, &ps, &lh] {
        rx.answer(Answer::Status(200, None));
    }
    // The same recall sent again is answered as the first; another is a conflict of states.
    let civil = hub.client("civil-affairs");
    let req = civil
        .http
        .post(format!("{}{path}/revoke", civil.url))
        .header("idempotency-key", "revoke-601")
        .json(&json!({ "reason": reason }));
    let again = civil.send(req).await?;
    assert_eq!((again.status, &again.json["audit_seq"]), (200, &revoked.json["audit_seq"]), "{}", again.text);
    let twice = civil.post(&format!("{path}/revoke"), &json!({"reason": "again"})).await?;
    assert_eq!(twice.status, 409, "{}", twice.text);

    // Each webhook receiver gets one revoked notice (at least once, one id), with no data.
    for rx in [&fp, &ps, &lh] {
        harness::eventually(Duration::from_secs(30), "the revoked notice", || async {
            Ok(rx.accepted().iter().any(|c| event(c)["type"] == "hub.record.revoked"))
        })
        .await?;
        let notices: std::collections::HashSet<String> = rx
            .accepted()
            .iter()
            .filter(|c| event(c)["type"] == "hub.record.revoked")
            .map(|c| event(c)["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(notices.len(), 1, "one notice per department");
        let n = rx.accepted().into_iter().map(|c| event(&c)).find(|e| e["type"] == "hub.record.revoked").unwrap();
        assert_eq!((n["data"]["reason"].as_str(), n["supersedes"].as_u64()), (Some(reason), Some(1)), "{n}");
        assert!(n["data"]["data"].is_null(), "a recall carries nothing of the record: {n}");
    }
    let justice = hub.client("justice");
    let told = feed(&justice, "/v1/notices?wait=10").await?;
    assert_eq!((told.len(), told[0]["type"].as_str()), (1, Some("hub.record.revoked")), "{told:?}");
    let hrss = hub.client("hrss");
    let got = feed(&hrss, "/v1/feeds/marriage-to-hrss?wait=10").await?;
    assert!(got.iter().any(|e| e["type"] == "hub.record.revoked"), "{got:?}");

    // Reads and lookups by others: 410 with nothing of the record; the lookup names it only.
    let gone = justice.get(&format!("{path}{purpose}")).await?;
    assert_eq!(gone.status, 410, "{}", gone.text);
    assert!(gone.content_type.starts_with("application/problem+json"));
    assert!(!gone.text.contains(&a) && !gone.text.contains("陈志明"), "{}", gone.text);
    let found = hub
        .client("disabled-federation")
        .post("/v1/lookup", &json!({ "subject": a, "purpose": "disability-subsidy-review" }))
        .await?;
    assert_eq!(found.json["count"], 0, "{}", found.text);
    assert_eq!(found.json["revoked"][0]["key"], key, "{}", found.text);
    // The owner and the auditors keep the history, the recall and its reason last.
    let h = hub.client("supervision").get(&format!("{path}/history")).await?;
    let versions = h.json["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{}", h.text);
    assert_eq!(
        (versions[1]["state"].as_str(), versions[1]["revoked"]["reason"].as_str()),
        (Some("revoked"), Some(reason))
    );
    assert_eq!(versions[0]["data"]["registration_no"], key, "never deleted");

    // The owner publishes it again (a new version): it is readable again.
    assert_eq!(civil.publish("marriage-registration", &marriage(key, &a, &b)).await?.json["version"], 3);
    assert_eq!(justice.get(&format!("{path}{purpose}")).await?.status, 200);
    let v = hub.client("supervision").get("/v1/audit/verify").await?;
    assert_eq!(v.json["ok"], true, "{}", v.text);
    Ok(())
}
