//! The webhook adapter against the conformance suite, with its signatures checked by an
//! independent Standard Webhooks implementation (the `standardwebhooks` crate).

use std::path::PathBuf;

use base64::Engine as _;

use super::*;
use crate::testkit::{self, Answer, Receiver};
use crate::{BuildContext, Outcome};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_c2VjcmV0LWtleS1iZWZvcmUtcm90YXRpb24tMDAx";

fn sink(url: &str, timeout: u64, secrets: &str) -> WebhookSink {
    sink_with(url, timeout, secrets, "")
}

fn sink_with(url: &str, timeout: u64, secrets: &str, more: &str) -> WebhookSink {
    let table: toml::Table =
        toml::from_str(&format!("url = \"{url}\"\nsecret_env = \"HOOK_SECRET\"\ntimeout_secs = {timeout}\n{more}"))
            .unwrap();
    let config: WebhookConfig = crate::settings(&table).unwrap();
    config.validate().unwrap();
    let secrets = secrets.to_owned();
    let secret = move |name: &str| (name == "HOOK_SECRET").then(|| secrets.clone());
    let resolve = |p: &str| PathBuf::from(p);
    let ctx = BuildContext { secret: &secret, resolve: &resolve, client_identity_pem: None };
    WebhookSink::build(&config, &ctx).unwrap()
}

fn verify(secret: &str, c: &testkit::Captured) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&c.body, &c.headers).is_ok()
}

#[tokio::test]
async fn webhook_passes_the_outbound_conformance_suite_and_signs_verifiably() {
    let captured = testkit::run_outbound_conformance(|url, timeout| {
        Box::new(sink(url, timeout, SECRET)) as Box<dyn crate::Outbound>
    })
    .await;
    let c = &captured[0];
    assert_eq!(c.headers["content-type"], "application/cloudevents+json");
    assert_eq!(c.headers["webhook-id"], "evt-conformance-1");
    assert!(verify(SECRET, c), "standardwebhooks rejects our signature");
    assert!(!verify("whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IGtleSBhdCBhbGw=", c));
    // The signature covers the exact bytes: one changed byte fails it.
    let mut tampered = c.clone();
    tampered.body[10] ^= 1;
    assert!(!verify(SECRET, &tampered));
}

#[tokio::test]
async fn during_rotation_both_secrets_sign() {
    let rx = Receiver::start().await;
    let s = sink(&rx.url, 5, &format!("{SECRET} {OLD_SECRET}"));
    assert_eq!(s.deliver(&[testkit::envelope(1)]).await, Outcome::Delivered);
    let c = &rx.captured()[0];
    assert_eq!(c.headers["webhook-signature"].to_str().unwrap().split(' ').count(), 2);
    assert!(verify(SECRET, c) && verify(OLD_SECRET, c));
    // health() reaches the receiver like a delivery, signed, with no record data.
    assert!(s.health().await.is_ok());
    let ping = rx.captured().pop().unwrap();
    assert!(verify(SECRET, &ping));
    assert!(!String::from_utf8_lossy(&ping.body).contains("registration_no"));
    rx.answer(Answer::Status(503, None));
    assert!(s.health().await.is_err());
}

#[tokio::test]
async fn a_batch_is_one_signed_cloudevents_batch_in_order_and_goes_again_whole() {
    let rx = Receiver::start().await;
    let s = sink_with(&rx.url, 5, SECRET, "batch = 3\n");
    assert_eq!(crate::Outbound::max_batch(&s), 3);
    let events = [testkit::envelope(1), testkit::envelope(2), testkit::envelope(3)];
    assert_eq!(s.deliver(&events).await, Outcome::Delivered);
    let got = rx.captured();
    assert_eq!(got.len(), 1, "one request for the batch");
    let c = &got[0];
    assert_eq!(c.headers["content-type"], "application/cloudevents-batch+json");
    assert!(verify(SECRET, c), "standardwebhooks rejects the batch's signature");
    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    let ids: Vec<&str> = body.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = events.iter().map(|e| e.id()).collect();
    assert_eq!(ids, want, "the events of a batch keep their order");
    for (sent, e) in body.as_array().unwrap().iter().zip(&events) {
        assert_eq!(sent, &serde_json::from_slice::<serde_json::Value>(e.json()).unwrap(), "each event as sent alone");
    }
    // The same events always carry the same webhook-id; other events another.
    let id = c.headers["webhook-id"].to_str().unwrap().to_owned();
    assert_eq!(id, batch_id(&events));
    assert_ne!(id, batch_id(&events[..2]));
    // A refusal of the batch refuses all of it: the engine sends it again as a whole.
    rx.answer(Answer::Status(503, None));
    assert!(matches!(s.deliver(&events).await, Outcome::Retry { .. }));
    rx.answer(Answer::Status(400, None));
    assert!(matches!(s.deliver(&events).await, Outcome::Reject { .. }));
}

#[test]
fn settings_are_checked_without_io() {
    let check = |text: &str| crate::kind("webhook").and_then(|k| (k.validate)(&toml::from_str(text).unwrap()));
    assert!(check("url = \"http://127.0.0.1:9101/x\"\nsecret_env = \"A_B\"").is_ok());
    assert!(check("url = \"ftp://x/\"\nsecret_env = \"A\"").is_err());
    assert!(check("url = \"http://x/\"\nsecret_env = \"lower\"").is_err());
    assert!(check("url = \"http://x/\"\nsecret_env = \"A\"\ncolour = 1").is_err(), "unknown keys are errors");
    assert!(check("url = \"http://x/\"\nsecret_env = \"A\"\nclient_certificate = true").is_err());
    assert!(check("url = \"http://x/\"\nsecret_env = \"A\"\nbatch = 100").is_ok());
    assert!(check("url = \"http://x/\"\nsecret_env = \"A\"\nbatch = 0").is_err());
    assert!(check("url = \"http://x/\"\nsecret_env = \"A\"\nbatch = 1001").is_err());
    assert!(parse_secret("nope").is_err());
    assert!(parse_secret(&format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([1u8; 8]))).is_err());
}

#[test]
fn answers_map_to_outcomes() {
    use outbound_test_access::*;
    assert_eq!(classify(204, None), Outcome::Delivered);
    assert!(matches!(classify(302, None), Outcome::Reject { .. }), "redirects are not followed");
    assert_eq!(parse_retry_after("120"), Some(std::time::Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(std::time::Duration::ZERO));
    assert_eq!(parse_retry_after("soon"), None);
}

mod outbound_test_access {
    pub(super) use super::super::outbound::{classify, parse_retry_after};
}
