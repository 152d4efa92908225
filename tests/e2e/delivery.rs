//! Routing and delivery end to end: real webhook receivers on loopback, signatures checked with
//! the independent `standardwebhooks` crate, feeds read and acknowledged over mTLS, a receiver
//! down for a thousand publishes, dead letters and operator retries, SIGKILL with thousands of
//! deliveries pending, and the memory of a hub holding a 100,000-event backlog.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use adapters::testkit::{Answer, Captured, Receiver};
use anyhow::Result;
use harness::{dev_secret, eventually, free_port, marriage, resident_id, HubProcess, TestConfig, TestHub};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const FP_SECRET: &str = "HUB_WEBHOOK_SECRET_FAMILY_PLANNING";

fn event(c: &Captured) -> Value {
    serde_json::from_slice(&c.body).expect("a CloudEvent")
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

fn distinct_ids(r: &Receiver) -> HashSet<String> {
    r.accepted().iter().map(|c| c.headers["webhook-id"].to_str().unwrap().to_owned()).collect()
}

fn batch_body(records: &[Value]) -> String {
    records.iter().map(|r| r.to_string() + "\n").collect()
}

async fn publish_batch(client: &harness::Client, records: &[Value]) -> Result<u64> {
    let req = client
        .http
        .post(format!("{}/v1/batch/marriage-registration", client.url))
        .header("content-type", "application/x-ndjson")
        .body(batch_body(records));
    let r = client.send(req).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    Ok(r.json["stored"].as_u64().unwrap_or(0))
}

/// 200 marriages, then `versions - 1` corrections of each, 200 to a batch: version `v` of every
/// record is published before version `v + 1` of any.
async fn publish_corrections(civil: &harness::Client, versions: u32) -> Result<()> {
    for version in 0..versions {
        let batch: Vec<Value> = (0..200u32)
            .map(|k| {
                let mut m =
                    marriage(&format!("J440184-2026-{k:06}"), &resident_id("19900315", k), &resident_id("19920708", k));
                m["registry_office"] = json!(format!("从化区民政局婚姻登记处 第{version}次更正"));
                m
            })
            .collect();
        assert_eq!(publish_batch(civil, &batch).await?, 200);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marriage_reaches_every_subscriber_with_only_its_granted_fields() -> Result<()> {
    let ([fp, ps, lh], config) = harness::marriage_webhooks().await;
    let (_cfg_dir, cfg) = config.write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 123), resident_id("19920708", 124));
    let civil = hub.client("civil-affairs");
    let r = civil.publish("marriage-registration", &marriage("J440184-2026-000123", &a, &b)).await?;
    assert_eq!((r.status, r.json["routed"].as_u64()), (201, Some(5)), "{}", r.text);

    // Family Planning's receiver gets one CloudEvent, signed so that an independent Standard
    // Webhooks implementation accepts it, carrying only Family Planning's fields.
    tokio::time::timeout(Duration::from_secs(20), fp.wait_accepted(1)).await?;
    let got = fp.accepted().remove(0);
    let secret = dev_secret(hub.data.path(), FP_SECRET);
    standardwebhooks::Webhook::new(&secret)?.verify(&got.body, &got.headers)?;
    assert_eq!(got.headers["content-type"], "application/cloudevents+json");
    let ev = event(&got);
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["id"], got.headers["webhook-id"].to_str()?);
    assert_eq!(ev["source"], "urn:hub:conghua:department:civil-affairs");
    assert_eq!(ev["type"], "hub.record.marriage-registration.v1");
    assert_eq!(ev["subject"], "marriage-registration/J440184-2026-000123");
    assert_eq!((ev["recordversion"].as_u64(), ev["auditseq"].as_u64()), (Some(1), r.json["audit_seq"].as_u64()));
    assert!(ev["data"].get("registry_office").is_none(), "not granted to family planning");
    assert_eq!(ev["data"]["parties"][0]["id_number"], a.as_str());
    // Land and Housing's grant is narrower, and its projection is its own.
    tokio::time::timeout(Duration::from_secs(20), lh.wait_accepted(1)).await?;
    assert_eq!(sorted_keys(&event(&lh.accepted()[0])["data"]["parties"][0]), ["hukou_address", "id_number", "name"]);

    // HRSS reads its feed, acknowledges, and the event does not come again.
    let hrss = hub.client("hrss");
    let f = hrss.get("/v1/feeds/marriage-to-hrss?wait=5").await?;
    assert_eq!((f.status, f.json["count"].as_u64()), (200, Some(1)), "{}", f.text);
    assert_eq!(sorted_keys(&f.json["events"][0]["data"]["parties"][0]), ["id_number", "name"]);
    let cursor = f.json["cursor"].as_str().unwrap().to_owned();
    let ack = hrss.post("/v1/feeds/marriage-to-hrss/ack", &json!({ "cursor": cursor })).await?;
    assert_eq!((ack.status, ack.json["acknowledged"].as_u64()), (200, Some(1)), "{}", ack.text);
    assert_eq!(hrss.get("/v1/feeds/marriage-to-hrss").await?.json["count"], 0);
    // State Tax reads without acknowledging: the event comes again, with the same id.
    let tax = hub.client("state-tax");
    let first = tax.get("/v1/feeds/marriage-to-state-tax").await?;
    let again = tax.get("/v1/feeds/marriage-to-state-tax").await?;
    assert_eq!(first.json["count"], 1);
    assert_eq!(first.json["events"][0]["id"], again.json["events"][0]["id"]);
    // A feed is its department's alone.
    assert_eq!(hub.client("education").get("/v1/feeds/marriage-to-hrss").await?.status, 403);
    assert_eq!(hrss.get("/v1/feeds/marriage-to-state-tax").await?.status, 403);
    assert_eq!(hrss.get("/v1/feeds/marriage-to-family-planning").await?.status, 404, "a push subscription has no feed");
    // A long poll returns as soon as an event arrives.
    let waiting = {
        let hrss = hrss.clone();
        tokio::spawn(async move { hrss.get("/v1/feeds/marriage-to-hrss?wait=20").await })
    };
    let divorce = json!({
        "registration_no": "L440184-2026-000124", "kind": "divorce", "registered_on": "2026-11-25",
        "registry_office": "从化区民政局婚姻登记处", "parties": marriage("x", &a, &b)["parties"].clone()
    });
    // A divorce is not sent to Family Planning, whose filter is `.kind == "marriage"`.
    let r = civil.publish("marriage-registration", &divorce).await?;
    assert_eq!(r.json["routed"], 4, "{}", r.text);
    let polled = tokio::time::timeout(Duration::from_secs(20), waiting).await???;
    assert_eq!(polled.json["count"], 1, "{}", polled.text);
    tokio::time::timeout(Duration::from_secs(20), ps.wait_accepted(2)).await?;
    assert_eq!(fp.accepted().len(), 1);
    let pending = hub.client("ops-duty").get("/v1/ops/subscriptions").await?;
    let fp_sub = pending.json["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "marriage-to-family-planning")
        .cloned();
    assert_eq!(fp_sub.map(|s| s["pending"].clone()), Some(json!(0)));

    // The citizen's access log names every department that received the record.
    let portal = hub.client("citizen-portal");
    let wanted = ["family-planning", "public-security", "land-housing", "hrss", "state-tax"];
    eventually(Duration::from_secs(20), "deliveries in the access log", || {
        let portal = portal.clone();
        let a = a.clone();
        async move {
            let r = portal.post("/v1/access-log", &json!({ "subject": a })).await?;
            let got: HashSet<String> = r.json["accesses"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == "deliver")
                .map(|e| e["department"].as_str().unwrap().to_owned())
                .collect();
            Ok(wanted.iter().all(|w| got.contains(*w)))
        }
    })
    .await?;
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_thousand_publishes_gets_every_event_in_order() -> Result<()> {
    let fp = Receiver::start().await;
    fp.answer(Answer::Status(503, None));
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9103, &fp.url).fast_retries().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    // 200 records, 5 versions each, published while the receiver is down.
    publish_corrections(&civil, 5).await?;
    let probes = fp.captured().len();
    assert!(probes < 200, "a down receiver is probed, not flooded: {probes} requests");
    fp.answer(Answer::Status(200, None));
    eventually(Duration::from_secs(90), "1000 distinct events", || {
        let n = distinct_ids(&fp).len();
        async move { Ok(n >= 1000) }
    })
    .await?;
    let accepted = fp.accepted();
    assert_eq!(distinct_ids(&fp).len(), 1000, "no event lost");
    // Duplicates (at least once) carry the same webhook-id and the same bytes.
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let mut first_seen: HashMap<(String, u64), usize> = HashMap::new();
    for (i, c) in accepted.iter().enumerate() {
        let id = c.headers["webhook-id"].to_str()?.to_owned();
        if let Some(b) = bodies.get(&id) {
            assert_eq!(b, &c.body, "a duplicate differs from the original");
        }
        bodies.insert(id, c.body.clone());
        let ev = event(c);
        let key = ev["subject"].as_str().unwrap().to_owned();
        first_seen.entry((key, ev["recordversion"].as_u64().unwrap())).or_insert(i);
    }
    for k in 0..200u32 {
        let key = format!("marriage-registration/J440184-2026-{k:06}");
        let order: Vec<usize> = (1..=5u64).map(|v| first_seen[&(key.clone(), v)]).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: versions arrived out of order: {order:?}");
    }
    hub.stop().await;
    Ok(())
}

/// A receiver that takes CloudEvents batches (`batch = 50`): every event of a backlog arrives,
/// each version after the one before, in far fewer requests than events, each request signed
/// over its whole body; a batch refused with 503 goes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_receiver_gets_every_event_in_order_in_few_signed_requests() -> Result<()> {
    let fp = Receiver::start().await;
    fp.answer(Answer::Status(503, None));
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("url = \"http://127.0.0.1:9103/hub/events\"", &format!("url = \"{}\", batch = 50", fp.url))
        .fast_retries()
        .without_checks()
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    publish_corrections(&civil, 3).await?;
    fp.answer(Answer::Status(200, None));
    let events = |r: &Receiver| -> Vec<Value> {
        r.accepted().iter().flat_map(|c| event(c).as_array().cloned().unwrap_or_default()).collect()
    };
    eventually(Duration::from_secs(90), "600 distinct events", || {
        let n = events(&fp).iter().map(|e| e["id"].to_string()).collect::<HashSet<_>>().len();
        async move { Ok(n >= 600) }
    })
    .await?;
    let secret = dev_secret(hub.data.path(), FP_SECRET);
    let wh = standardwebhooks::Webhook::new(&secret)?;
    let accepted = fp.accepted();
    for c in &accepted {
        assert_eq!(c.headers["content-type"], "application/cloudevents-batch+json");
        wh.verify(&c.body, &c.headers).map_err(|e| anyhow::anyhow!("a batch's signature: {e}"))?;
    }
    assert!(accepted.len() <= 60, "600 events in {} requests: batches are not being used", accepted.len());
    let mut first_seen: HashMap<(String, u64), usize> = HashMap::new();
    for (i, e) in events(&fp).iter().enumerate() {
        let key = e["subject"].as_str().unwrap().to_owned();
        first_seen.entry((key, e["recordversion"].as_u64().unwrap())).or_insert(i);
    }
    assert_eq!(first_seen.len(), 600, "no event lost");
    for k in 0..200u32 {
        let key = format!("marriage-registration/J440184-2026-{k:06}");
        let order: Vec<usize> = (1..=3u64).map(|v| first_seen[&(key.clone(), v)]).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: versions arrived out of order: {order:?}");
    }
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_dead_lettered_then_retried_by_an_operator() -> Result<()> {
    let ps = Receiver::start().await;
    ps.answer(Answer::Status(400, None));
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9102, &ps.url).fast_retries().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let (a, b) = (resident_id("19900315", 9), resident_id("19920708", 9));
    let r =
        hub.client("civil-affairs").publish("marriage-registration", &marriage("J440184-2026-000009", &a, &b)).await?;
    assert_eq!(r.status, 201);
    let ops = hub.client("ops-duty");
    eventually(Duration::from_secs(20), "a dead letter", || {
        let ops = ops.clone();
        async move {
            let r = ops.get("/v1/ops/deliveries?state=dead&subscription=marriage-to-public-security").await?;
            Ok(r.json["entries"].as_array().is_some_and(|e| e.len() == 1))
        }
    })
    .await?;
    let dead = ops.get("/v1/ops/deliveries?state=dead").await?;
    let entry = dead.json["entries"][0].clone();
    assert!(entry["last_error"].as_str().unwrap().contains("HTTP 400"), "{entry}");

    // The vendor sees counts and error texts, never a key, a payload or a subject.
    let vendor = hub.client("vendor").get("/v1/ops/deliveries?state=dead").await?;
    assert_eq!(vendor.status, 200, "{}", vendor.text);
    assert!(vendor.text.contains("HTTP 400"));
    for secret in [a.as_str(), &b, "陈志明", "李晓红", "J440184-2026-000009", "registration_no", "hukou"] {
        assert!(!vendor.text.contains(secret), "the vendor's view shows {secret}: {}", vendor.text);
    }
    assert!(vendor.json.get("entries").is_none());
    let id = entry["id"].as_i64().unwrap();
    assert_eq!(hub.client("vendor").post(&format!("/v1/ops/deliveries/{id}/retry"), &json!({})).await?.status, 403);

    // Fixed receiver, operator retry: it arrives.
    ps.answer(Answer::Status(200, None));
    let r = ops.post(&format!("/v1/ops/deliveries/{id}/retry"), &json!({})).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), ps.wait_accepted(1)).await?;
    assert_eq!(ops.post(&format!("/v1/ops/deliveries/{id}/retry"), &json!({})).await?.status, 404, "no longer dead");

    // Replay sends it again with the same event id, for a department that lost it.
    let r = ops.post("/v1/ops/subscriptions/marriage-to-public-security/replay", &json!({ "from_seq": 0 })).await?;
    assert_eq!((r.status, r.json["queued"].as_u64()), (200, Some(1)), "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), ps.wait_accepted(2)).await?;
    let ids: Vec<String> = ps.accepted().iter().map(|c| c.headers["webhook-id"].to_str().unwrap().to_owned()).collect();
    assert_eq!(ids[0], ids[1]);

    // All of it is on the audit record.
    eventually(Duration::from_secs(20), "the deliveries in the audit", || {
        let sup = hub.client("supervision");
        async move {
            let audit = sup.get("/v1/audit?limit=1000").await?;
            let seen: Vec<(String, String)> = audit.json["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
                .collect();
            let has = |a: &str, b: &str| seen.iter().any(|(x, y)| x == a && y == b);
            Ok(has("public-security", "dead_letter") && has("public-security", "deliver") && has("ops-duty", "admin"))
        }
    })
    .await?;
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_receiver_stops_its_subscription_until_an_operator_restarts_it() -> Result<()> {
    let lh = Receiver::start().await;
    lh.answer(Answer::Status(410, None));
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9106, &lh.url).fast_retries().without_checks().write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000410", &resident_id("19900315", 1), &resident_id("19920708", 2)),
        )
        .await?;
    let ops = hub.client("ops-duty");
    let stopped = || {
        let ops = ops.clone();
        async move {
            let r = ops.get("/v1/ops/subscriptions").await?;
            let s = r.json["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "marriage-to-land-housing")
                .cloned();
            Ok(s.is_some_and(|s| s["disabled"] == true))
        }
    };
    eventually(Duration::from_secs(20), "the subscription to stop", stopped).await?;
    lh.answer(Answer::Status(200, None));
    civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000411", &resident_id("19900315", 3), &resident_id("19920708", 4)),
        )
        .await?;
    let r = ops.post("/v1/ops/subscriptions/marriage-to-land-housing/enable", &json!({})).await?;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::timeout(Duration::from_secs(20), lh.wait_accepted(1)).await?;
    assert_eq!(event(&lh.accepted()[0])["subject"], "marriage-registration/J440184-2026-000411");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_thousands_of_deliveries_pending_loses_none() -> Result<()> {
    let fp = Receiver::start().await;
    fp.answer(Answer::Status(503, None));
    let (_cfg_dir, cfg) = TestConfig::conghua().receiver(9103, &fp.url).fast_retries().without_checks().write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let mut hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    for b in 0..5u32 {
        let batch: Vec<Value> = (0..1000u32)
            .map(|i| {
                let n = b * 1000 + i;
                marriage(&format!("J440184-2027-{n:06}"), &resident_id("19900315", n), &resident_id("19920708", n))
            })
            .collect();
        assert_eq!(publish_batch(&civil, &batch).await?, 1000);
    }
    hub.kill()?;
    fp.answer(Answer::Status(200, None));
    let _hub = HubProcess::start_config(BIN, &cfg, &data, port, &[], &[]).await?;
    eventually(Duration::from_secs(120), "5000 distinct events after the restart", || {
        let n = distinct_ids(&fp).len();
        async move { Ok(n >= 5000) }
    })
    .await?;
    assert_eq!(distinct_ids(&fp).len(), 5000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_event_backlog_keeps_memory_bounded() -> Result<()> {
    let fp = Receiver::start().await;
    fp.answer(Answer::Status(503, None));
    // Only the Family Planning subscription, so the backlog is exactly the events counted here.
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9103, &fp.url)
        .fast_retries()
        .without_checks()
        .only_subscription("marriage-to-family-planning")
        .write();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &[]).await?;
    let civil = hub.client("civil-affairs");
    let batch = |b: u32| -> Vec<Value> {
        (0..1000u32)
            .map(|i| {
                let n = b * 1000 + i;
                marriage(&format!("J440184-2028-{n:06}"), &resident_id("19900315", n), &resident_id("19920708", n))
            })
            .collect()
    };
    // Warm up allocator and caches, then measure.
    for b in 0..5 {
        publish_batch(&civil, &batch(b)).await?;
    }
    let before = hub.rss_bytes()?;
    for b in 5..105 {
        assert_eq!(publish_batch(&civil, &batch(b)).await?, 1000);
    }
    let after = hub.rss_bytes()?;
    let r = hub.client("ops-duty").get("/v1/ops/subscriptions").await?;
    let fp_sub = r.json["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "marriage-to-family-planning")
        .cloned()
        .unwrap();
    assert!(fp_sub["pending"].as_u64().unwrap() >= 100_000, "{fp_sub}");
    let grown = after.saturating_sub(before) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "backlog of {} events: RSS {:.1} MiB -> {:.1} MiB (+{grown:.1} MiB)",
        fp_sub["pending"],
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    assert!(grown < 50.0, "RSS grew by {grown:.1} MiB");
    Ok(())
}

/// An HTTPS receiver that demands a client certificate from the given CA and records the CN
/// of each caller with the request body.
async fn mutual_tls_receiver(
    pki: &hub::pki::DevPki,
) -> Result<(String, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>)> {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(pki.ca_cert())?)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider.clone())
            .build()?;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(pki.server_cert())?];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.server_key())?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}/hub/events", listener.local_addr()?.port());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| hub::pki::common_name(c))
                    .unwrap_or_default();
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, cn) = (tx.clone(), cn.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let _ = tx.send((cn, body));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok((url, rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_that_asks_for_a_certificate_gets_the_hubs() -> Result<()> {
    let data = tempfile::tempdir()?;
    let (config, _) = hub::load(&harness::conghua_config()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pki = hub::pki::DevPki::new(data.path());
    pki.ensure(hub::policy::Directory::new(&config).ids())?;
    let (url, mut received) = mutual_tls_receiver(&pki).await?;
    let settings = format!(
        "settings = {{ url = \"{url}\", secret_env = \"HUB_WEBHOOK_SECRET_PUBLIC_SECURITY\", ca = \"{}\", client_certificate = true }}",
        pki.ca_cert().display()
    );
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .replace("settings = { url = \"http://127.0.0.1:9102/hub/events\", secret_env = \"HUB_WEBHOOK_SECRET_PUBLIC_SECURITY\" }", &settings)
        .fast_retries().without_checks()
        .write();
    let hub = TestHub::start_in(&cfg, data).await?;
    let r = hub
        .client("civil-affairs")
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000443", &resident_id("19900315", 4), &resident_id("19920708", 3)),
        )
        .await?;
    assert_eq!(r.status, 201);
    let (cn, body) = tokio::time::timeout(Duration::from_secs(20), received.recv()).await?.expect("a delivery");
    assert_eq!(cn, "conghua-hub", "the hub presents its own client certificate");
    assert_eq!(serde_json::from_slice::<Value>(&body)?["subject"], "marriage-registration/J440184-2026-000443");
    hub.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_and_max_age_send_events_to_the_dead_letters() -> Result<()> {
    let ps = Receiver::start().await;
    ps.answer(Answer::Status(503, None));
    let (_cfg_dir, cfg) = TestConfig::conghua()
        .receiver(9102, &ps.url)
        .fast_retries()
        .without_checks()
        .replace("max_attempts = 1000", "max_attempts = 3")
        .write();
    let hub = TestHub::start_with(&cfg).await?;
    let civil = hub.client("civil-affairs");
    civil
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000303", &resident_id("19900315", 3), &resident_id("19920708", 3)),
        )
        .await?;
    let ops = hub.client("ops-duty");
    let dead_error = |ops: harness::Client, sub: &'static str| async move {
        let r = ops.get(&format!("/v1/ops/deliveries?state=dead&subscription={sub}")).await?;
        Ok::<_, anyhow::Error>(r.json["entries"][0]["last_error"].as_str().map(str::to_owned))
    };
    harness::eventually(Duration::from_secs(20), "a dead letter after three attempts", || {
        let ops = ops.clone();
        async move { Ok(dead_error(ops, "marriage-to-public-security").await?.is_some()) }
    })
    .await?;
    let error = dead_error(ops.clone(), "marriage-to-public-security").await?.unwrap_or_default();
    assert!(error.starts_with("gave up after 3 attempts"), "{error}");
    assert_eq!(ps.captured().len(), 3, "exactly max_attempts requests");

    hub.stop().await;

    // An event older than max_age_hours goes to the dead letters without another attempt (here
    // attempts are unlimited, so age is the only way out).
    let (_age_dir, age_cfg) = TestConfig::conghua().receiver(9102, &ps.url).fast_retries().without_checks().write();
    let hub = TestHub::start_with(&age_cfg).await?;
    let r = hub
        .client("civil-affairs")
        .publish(
            "marriage-registration",
            &marriage("J440184-2026-000304", &resident_id("19900315", 4), &resident_id("19920708", 4)),
        )
        .await?;
    assert_eq!(r.status, 201);
    let data = hub.stop_keeping_data().await;
    {
        let db = rusqlite::Connection::open(data.path().join("hub.db"))?;
        let four_days_ago = chrono::Utc::now().timestamp_millis() - 4 * 86_400_000;
        let aged = db.execute(
            "UPDATE outbox SET created_at = ?1 WHERE subscription = 'marriage-to-public-security' AND state = 'pending'",
            [four_days_ago],
        )?;
        assert_eq!(aged, 1);
    }
    let hub = TestHub::start_in(&age_cfg, data).await?;
    let ops = hub.client("ops-duty");
    harness::eventually(Duration::from_secs(20), "an expired event in the dead letters", || {
        let ops = ops.clone();
        async move { Ok(dead_error(ops, "marriage-to-public-security").await?.is_some()) }
    })
    .await?;
    let error = dead_error(ops.clone(), "marriage-to-public-security").await?.unwrap_or_default();
    assert_eq!(error, "not delivered within 72 hours");
    hub.stop().await;
    Ok(())
}
