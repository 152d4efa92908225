//! The plan's twenty online services and the rules that let data flow to them: the services
//! catalogue, the purposes register (an undeclared purpose is refused, also on unconditional
//! types), the documents-spared report counted from real reads and lookups, every sharing class
//! read, looked up and delivered by non-owners, and grants that expire.

use anyhow::Result;
use harness::{TestConfig, TestHub};
use serde_json::{json, Value};

fn example(record_type: &str) -> Result<Value> {
    let path = harness::root().join("schemas").join(record_type).join("v1/examples/valid/typical.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// The current month in the hub's time zone, Asia/Shanghai (UTC+8 all year): reports are by
/// local month.
fn this_month() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m").to_string()
}

fn service<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["services"].as_array().unwrap().iter().find(|s| s["service"] == id || s["id"] == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twenty_services_are_catalogued_and_their_reads_counted_as_documents_spared() -> Result<()> {
    let (_dir, cfg) = TestConfig::conghua().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;

    // Every service of the plan's annex, each run by a department, each producing a type the
    // catalogue knows and reading at least one shared record instead of a paper copy.
    let vendor = hub.client("vendor");
    let c = vendor.get("/v1/catalog/services").await?;
    assert_eq!((c.status, c.json["count"].as_u64()), (200, Some(20)), "{}", c.text);
    let types = hub.client("finance").get("/v1/catalog").await?;
    let known: Vec<&str> =
        types.json["record_types"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut departments = std::collections::BTreeSet::new();
    for s in c.json["services"].as_array().unwrap() {
        departments.insert(s["department"]["id"].as_str().unwrap().to_owned());
        assert!(s["department"]["name"].is_string(), "{s}");
        for t in s["produces"].as_array().unwrap() {
            assert!(known.contains(&t.as_str().unwrap()), "{t} is not in the catalogue");
        }
        let reads = s["reads"].as_array().unwrap();
        assert!(!reads.is_empty(), "{s}");
        for r in reads {
            assert!(["grant", "own", "unconditional"].contains(&r["footing"].as_str().unwrap()), "{r}");
            assert!(r["basis"].is_string() && !r["replaces"].as_array().unwrap().is_empty(), "{r}");
        }
        assert!(!s["documents_no_longer_brought"].as_array().unwrap().is_empty());
    }
    for d in ["land-housing", "justice", "education", "finance"] {
        assert!(departments.contains(d), "{d} runs a service of the plan");
    }
    let accounting = service(&c.json, "accounting-qualification");
    assert_eq!(accounting["department"]["id"], "finance");
    assert_eq!(accounting["reads"][0]["record_type"], "household-registration");

    // Finance's accounting-qualification counter reads a household and looks a person up
    // instead of asking for a copy of the household register; Justice's exam registration too.
    let police = hub.client("public-security");
    let household = example("household-registration")?;
    let person = household["members"][0]["id_number"].as_str().unwrap().to_owned();
    assert_eq!(police.publish("household-registration", &household).await?.status, 201);
    let finance = hub.client("finance");
    let path = "/v1/records/household-registration/440184000012345";
    let r = finance.get(&format!("{path}?purpose=accounting-qualification")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["projected"], true);
    assert!(r.json["data"].get("police_station").is_none(), "not granted to Finance: {}", r.json);
    let l = finance.post("/v1/lookup", &json!({"subject": person, "purpose": "accounting-qualification"})).await?;
    assert_eq!((l.status, l.json["count"].as_u64()), (200, Some(1)), "{}", l.text);
    let j = hub.client("justice").get(&format!("{path}?purpose=judicial-exam-registration")).await?;
    assert_eq!(j.status, 200, "{}", j.text);

    // A purpose nobody declared is refused as a problem naming the register, for reads and
    // lookups alike; so is a declared purpose stated by a department it is not declared for.
    for (who, purpose) in [("finance", "curiosity"), ("finance", "judicial-exam-registration")] {
        let r = hub.client(who).get(&format!("{path}?purpose={purpose}")).await?;
        assert_eq!(r.status, 403, "{}", r.text);
        assert!(r.content_type.starts_with("application/problem+json"), "{}", r.content_type);
        assert!(r.text.contains("purpose"), "{}", r.text);
        let l = hub.client(who).post("/v1/lookup", &json!({"subject": person, "purpose": purpose})).await?;
        assert_eq!(l.status, 403, "{}", l.text);
        assert!(l.text.contains("purpose"), "{}", l.text);
    }
    // Refused reads and a read for another purpose (Finance's FIE registration has no grant on
    // households) spare no document.
    assert_eq!(finance.get(&format!("{path}?purpose=fie-finance-registration")).await?.status, 403);

    let month = this_month();
    let r = vendor.get(&format!("/v1/ops/reports/documents-spared?month={month}")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    let report = &r.json["report"];
    let acc = service(report, "accounting-qualification");
    assert_eq!((acc["reads"].as_u64(), acc["lookups"].as_u64()), (Some(1), Some(1)), "{acc}");
    assert_eq!(acc["documents_spared"], 2);
    assert_eq!(acc["by_record_type"][0]["record_type"], "household-registration");
    assert_eq!(service(report, "judicial-exam")["documents_spared"], 1);
    assert_eq!(service(report, "fie-finance-registration")["documents_spared"], 0);
    assert_eq!(report["documents_spared"], 3);
    assert_eq!(report["services"].as_array().unwrap().len(), 20);
    assert!(!r.text.contains(&person), "counts only");

    let public = hub.data.path().join("keys/audit-signing.pub");
    let sig = r.json["signature"]["value"].as_str().unwrap();
    assert!(harness::signature_valid(&public, &serde_jcs::to_vec(report)?, sig)?, "the report's signature");
    let mut forged = report.clone();
    forged["documents_spared"] = json!(3000);
    assert!(!harness::signature_valid(&public, &serde_jcs::to_vec(&forged)?, sig)?, "an edited report must not verify");

    let page =
        hub.client("supervision").get(&format!("/v1/ops/reports/documents-spared?month={month}&format=html")).await?;
    assert!(page.content_type.starts_with("text/html") && page.text.contains("会计从业资格"), "{}", page.text);
    assert_eq!(vendor.get("/v1/ops/reports/documents-spared?month=soon").await?.status, 400);
    assert_eq!(finance.get(&format!("/v1/ops/reports/documents-spared?month={month}")).await?.status, 403);

    let data = hub.stop_keeping_data().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["report", "documents-spared", "--month", &month, "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(data.path())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(cli["report"]["services"], report["services"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sharing_class_holds_for_reads_lookups_and_deliveries_and_grants_expire() -> Result<()> {
    // A feed of the public pre-sale permits for the Investment Service Centre (unconditional: no
    // grant), Justice's marriage grant lapsed, Disabled Federation's running until 2099.
    let (_dir, cfg) = TestConfig::conghua()
        .without_checks()
        .replace(
            "purposes = [\"marital-status-notarization\"]\n",
            "purposes = [\"marital-status-notarization\"]\nexpires = \"2020-12-31\"\n",
        )
        .replace(
            "purposes = [\"disability-subsidy-review\"]\nfields = [\"/registration_no\"",
            "purposes = [\"disability-subsidy-review\"]\nexpires = \"2099-12-31\"\nfields = [\"/registration_no\"",
        )
        .append(
            "[[subscriptions]]\nname = \"permits-to-investment-centre\"\ndepartment = \"investment-centre\"\n\
             record_type = \"commercial-housing-presale-permit\"\npurpose = \"public-register-check\"\nadapter = \"feed\"\n",
        )
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let (land, tax) = (hub.client("land-housing"), hub.client("state-tax"));
    let permit = example("commercial-housing-presale-permit")?;
    let developer = permit["developer"]["uscc"].as_str().unwrap().to_owned();
    assert_eq!(land.publish("commercial-housing-presale-permit", &permit).await?.status, 201);
    let payment = example("tax-payment")?;
    assert_eq!(payment["taxpayer_id"], developer.as_str(), "the developer paid the tax");
    assert_eq!(tax.publish("tax-payment", &payment).await?.status, 201);
    let invoices = json!({
        "verification_no": "YJ440184-20261102-000078", "taxpayer_id": developer, "taxpayer_name": "广州从化流溪湾房地产开发有限公司",
        "batches": [{"invoice_code": "144012600111", "number_from": "03212001", "number_to": "03212050",
                     "issued": 50, "voided": 0, "total_amount": 90000.0}],
        "verified_on": "2026-11-03", "result": "passed"
    });
    assert_eq!(tax.publish("invoice-verification", &invoices).await?.status, 201, "the owner publishes a none type");

    // Unconditional: any department, every field, but only for a purpose it may state.
    let ic = hub.client("investment-centre");
    let permit_path = "/v1/records/commercial-housing-presale-permit/YS440184-2026-0037";
    let r = ic.get(&format!("{permit_path}?purpose=public-register-check")).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["projected"], false);
    assert_eq!(r.json["data"], permit);
    for bad in ["", "?purpose=anything-at-all", "?purpose=presale-permit-review"] {
        let r = ic.get(&format!("{permit_path}{bad}")).await?;
        assert_eq!(r.status, 403, "{bad}: {}", r.text);
    }
    // ... and delivered whole through a subscription that needs no grant.
    let f = ic.get("/v1/feeds/permits-to-investment-centre?wait=10").await?;
    assert_eq!((f.status, f.json["count"].as_u64()), (200, Some(1)), "{}", f.text);
    assert_eq!(f.json["events"][0]["data"], permit);

    // Conditional: the grant's fields only, and nothing without a grant for the purpose.
    let payment_path = "/v1/records/tax-payment/JS440184-20261015-000318";
    let r = land.get(&format!("{payment_path}?purpose=presale-permit-review")).await?;
    assert_eq!((r.status, &r.json["projected"]), (200, &json!(true)), "{}", r.text);
    assert!(r.json["data"].get("bank").is_none() && r.json["data"]["amount"] == payment["amount"], "{}", r.json);
    let civil = hub.client("civil-affairs");
    assert_eq!(civil.get(&format!("{payment_path}?purpose=minimum-living-allowance-review")).await?.status, 403);

    // None: the owner reads it, nobody else, whatever the purpose; a lookup leaves it out.
    let inv_path = "/v1/records/invoice-verification/YJ440184-20261102-000078";
    assert_eq!(tax.get(inv_path).await?.status, 200);
    let r = land.get(&format!("{inv_path}?purpose=presale-permit-review")).await?;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("not shared"), "{}", r.text);
    let l = land.post("/v1/lookup", &json!({"subject": developer, "purpose": "presale-permit-review"})).await?;
    assert_eq!(l.status, 200, "{}", l.text);
    let mut found: Vec<&str> =
        l.json["records"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    found.sort();
    assert_eq!(found, ["commercial-housing-presale-permit", "tax-payment"], "the invoices are left out");
    let l = tax.post("/v1/lookup", &json!({"subject": developer, "purpose": "online-tax-payment"})).await?;
    let mut found: Vec<&str> =
        l.json["records"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    found.sort();
    assert_eq!(
        found,
        ["commercial-housing-presale-permit", "invoice-verification", "tax-payment"],
        "the owner's lookup finds its own none type, and the public permit"
    );

    // An expired grant refuses reads and lookups and says why; a grant until 2099 still works.
    let civil_pub = civil
        .publish(
            "marriage-registration",
            &harness::marriage(
                "J440184-2026-000931",
                &harness::resident_id("19900101", 31),
                &harness::resident_id("19910202", 32),
            ),
        )
        .await?;
    assert_eq!(civil_pub.status, 201, "{}", civil_pub.text);
    let m = "/v1/records/marriage-registration/J440184-2026-000931";
    let r = hub.client("justice").get(&format!("{m}?purpose=marital-status-notarization")).await?;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("expired"), "{}", r.text);
    let l = hub
        .client("justice")
        .post(
            "/v1/lookup",
            &json!({"subject": harness::resident_id("19900101", 31), "purpose": "marital-status-notarization"}),
        )
        .await?;
    assert_eq!((l.status, l.json["count"].as_u64()), (200, Some(0)), "{}", l.text);
    let r = hub.client("disabled-federation").get(&format!("{m}?purpose=disability-subsidy-review")).await?;
    assert_eq!(r.status, 200, "{}", r.text);

    // Every refusal above is in the audit chain with its reason.
    let audit = hub.client("supervision").get("/v1/audit?limit=500").await?;
    let denials: Vec<&Value> =
        audit.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "deny").collect();
    let reasons: Vec<&str> = denials.iter().filter_map(|e| e["detail"]["reason"].as_str()).collect();
    for why in ["purposes register", "may not state", "not shared", "expired", "no grant"] {
        assert!(reasons.iter().any(|r| r.contains(why)), "{why}: {reasons:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_pages_over_a_persons_whole_history_and_hides_keys_a_grant_did_not_include() -> Result<()> {
    // Justice's household grant without the household number: its reader never saw the key.
    let (_dir, cfg) = TestConfig::conghua()
        .without_checks()
        .replace(
            "fields = [\"/household_no\", \"/members/*/id_number\", \"/members/*/name\", \"/members/*/birth_date\"]",
            "fields = [\"/members/*/id_number\", \"/members/*/name\", \"/members/*/birth_date\"]",
        )
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let household = example("household-registration")?;
    let person = household["members"][0]["id_number"].as_str().unwrap().to_owned();
    assert_eq!(hub.client("public-security").publish("household-registration", &household).await?.status, 201);
    let path = "/v1/records/household-registration/440184000012345";
    let civil = hub.client("civil-affairs");
    const READS: usize = 1050;
    for _ in 0..READS / 50 {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let civil = civil.clone();
            reads.spawn(async move { civil.get(&format!("{path}?purpose=minimum-living-allowance-review")).await });
        }
        while let Some(r) = reads.join_next().await {
            assert_eq!(r??.status, 200);
        }
    }
    assert_eq!(hub.client("justice").get(&format!("{path}?purpose=judicial-exam-registration")).await?.status, 200);
    let l = hub
        .client("finance")
        .post("/v1/lookup", &json!({"subject": person, "purpose": "accounting-qualification"}))
        .await?;
    assert_eq!(l.status, 200, "{}", l.text);

    // More than a thousand entries for one person, read a page at a time, newest first.
    let portal = hub.client("citizen-portal");
    let (mut pages, mut all, mut before) = (0, Vec::new(), Value::Null);
    loop {
        let r = portal.post("/v1/access-log", &json!({"subject": person, "limit": 500, "before": before})).await?;
        assert_eq!(r.status, 200, "{}", r.text);
        let accesses = r.json["accesses"].as_array().unwrap().clone();
        assert!(accesses.len() <= 500);
        pages += 1;
        all.extend(accesses);
        if r.json["next"].is_null() {
            break;
        }
        before = r.json["next"].clone();
    }
    assert_eq!(pages, 3);
    assert_eq!(all.len(), READS + 2, "every read and the lookup, none twice, nothing capped");
    let seqs: Vec<u64> = all.iter().map(|a| a["audit_seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first, no overlap between pages");

    let lookup = &all[0];
    assert_eq!((lookup["action"].as_str(), lookup["department"].as_str()), (Some("lookup"), Some("finance")));
    assert_eq!(lookup["record_types"], json!(["household-registration"]));
    let justice = &all[1];
    assert_eq!(justice["department"], "justice");
    assert!(justice.get("record_key").is_none(), "Justice's grant has no household number: {justice}");
    let civil_read = &all[2];
    assert_eq!(civil_read["record_key"], "440184000012345");
    assert_eq!(civil_read["purpose"], "minimum-living-allowance-review");

    // Without a limit, one page of up to a thousand; bad cursors and limits are named.
    let r = portal.post("/v1/access-log", &json!({"subject": person})).await?;
    assert_eq!((r.json["count"].as_u64(), r.json["next"].is_u64()), (Some(1000), true), "{}", r.json["next"]);
    for (body, pointer) in [
        (json!({"subject": person, "limit": 0}), "/limit"),
        (json!({"subject": person, "limit": 1001}), "/limit"),
        (json!({"subject": person, "before": "yesterday"}), "/before"),
    ] {
        let r = portal.post("/v1/access-log", &body).await?;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains(pointer), "{}", r.text);
    }
    Ok(())
}
