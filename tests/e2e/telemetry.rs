//! Traces across the exchange: a hub with `[telemetry]` exports its spans over OTLP/HTTP to a
//! local receiver (decoded here with the OTLP protobuf types), continues a publisher's
//! `traceparent`, and carries the trace into the webhook (the `traceparent` header of the attempt
//! and the CloudEvents distributed-tracing extension of the event), with no personal data in any
//! span. Without `[telemetry]`, the publisher's own context still reaches the subscriber.

use adapters::testkit::{Captured, Receiver};
use anyhow::{Context, Result};
use harness::{free_port, marriage, resident_id, HubProcess, TestConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// What one traced publish left behind.
struct Run {
    /// The webhook Family Planning received.
    webhook: Captured,
    /// Every value of the record that names a person or the record.
    personal: Vec<String>,
}

/// Publishes one marriage with the caller's `traceparent` to a hub (with `[telemetry]` pointing
/// at `collector` when given), waits for Family Planning's webhook, and stops the hub gracefully,
/// which exports every span still batched.
async fn publish_traced(collector: Option<&Receiver>) -> Result<Run> {
    let family_planning = Receiver::start().await;
    let mut config = TestConfig::conghua().receiver(9103, &family_planning.url).fast_retries().without_checks();
    if let Some(c) = collector {
        config = config.append(&format!("\n[telemetry]\notlp_endpoint = \"{}/v1/traces\"\n", c.url));
    }
    let (_dir, config) = config.write();
    let data = tempfile::tempdir()?;
    let mut hub = HubProcess::start_config(BIN, &config, &data.path().join("d"), free_port()?, &[], &[]).await?;
    let (a, b) = (resident_id("19900315", 123), resident_id("19920708", 124));
    let no = "J440184-2026-007001";
    let record = marriage(no, &a, &b);
    let civil = hub.client("civil-affairs");
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let publish = civil.http.post(format!("{}/v1/records/marriage-registration", civil.url));
    let r = civil.send(publish.header("traceparent", &traceparent).json(&record)).await?;
    assert_eq!(r.status, 201, "{}", r.text);
    family_planning.wait_accepted(1).await;
    let status = hub.terminate()?;
    assert!(status.success(), "the hub stopped with {status}");
    let webhook = family_planning.accepted().into_iter().next().context("a webhook")?;
    let mut personal = vec![no.to_owned(), a, b];
    for party in record["parties"].as_array().context("parties")? {
        personal.push(party["name"].as_str().context("name")?.to_owned());
    }
    Ok(Run { webhook, personal })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).map(|a| text(&a.value))
}

/// `version-trace-span-flags` of a `traceparent`.
fn parts(traceparent: &str) -> Vec<String> {
    traceparent.split('-').map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_runs_through_receive_validate_commit_and_the_delivery_to_the_webhook() -> Result<()> {
    let collector = Receiver::start().await;
    let run = publish_traced(Some(&collector)).await?;

    let mut spans: Vec<Span> = Vec::new();
    for export in collector.accepted() {
        assert_eq!(export.headers["content-type"], "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(&export.body[..])?;
        for resource in request.resource_spans {
            let service = resource.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name");
            assert_eq!(service.map(|a| text(&a.value)).as_deref(), Some("conghua-hub"));
            spans.extend(resource.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE_ID).collect();
    let named = |name: &str| ours.iter().copied().find(|s| s.name == name);
    let names: Vec<&str> = ours.iter().map(|s| s.name.as_str()).collect();

    // The publish: the caller's span is the parent of the hub's server span, which holds the
    // validation and the commit.
    let receive = named("POST /v1/records/{type}").with_context(|| format!("no receive span in {names:?}"))?;
    assert_eq!(hex(&receive.parent_span_id), CALLER_SPAN);
    assert_eq!(receive.kind, SpanKind::Server as i32);
    assert_eq!(attribute(receive, "http.route").as_deref(), Some("/v1/records/{type}"));
    assert_eq!(attribute(receive, "http.response.status_code").as_deref(), Some("201"));
    assert_eq!(attribute(receive, "hub.principal").as_deref(), Some("civil-affairs"));
    for inner in ["validate", "commit"] {
        let span = named(inner).with_context(|| format!("no {inner} span in {names:?}"))?;
        assert_eq!(span.parent_span_id, receive.span_id, "{inner} is part of the receive");
    }
    assert_eq!(attribute(named("validate").unwrap(), "hub.record_type").as_deref(), Some("marriage-registration"));

    // The delivery: a client span in the same trace, under the publish, whose context is what
    // the webhook's `traceparent` header names, while the event keeps the publish's.
    let deliver =
        named("deliver marriage-to-family-planning").with_context(|| format!("no deliver span in {names:?}"))?;
    assert_eq!(deliver.kind, SpanKind::Client as i32);
    assert_eq!(deliver.parent_span_id, receive.span_id);
    assert_eq!(attribute(deliver, "hub.outcome").as_deref(), Some("delivered"));
    let header = run.webhook.headers["traceparent"].to_str()?.to_owned();
    assert_eq!(parts(&header), ["00", TRACE_ID, &hex(&deliver.span_id), "01"], "{header}");
    let event: Value = serde_json::from_slice(&run.webhook.body)?;
    let extension = event["traceparent"].as_str().context("the CloudEvents traceparent extension")?;
    assert_eq!(parts(extension), ["00", TRACE_ID, &hex(&receive.span_id), "01"], "{extension}");

    // Routes, type ids, subscriptions and principals only: nothing of the record's people or key.
    for span in &spans {
        let mut values = vec![span.name.clone()];
        values.extend(span.attributes.iter().map(|a| text(&a.value)));
        for v in &values {
            for p in &run.personal {
                assert!(!v.contains(p.as_str()), "span {:?} carries personal data in {v:?}", span.name);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telemetry_the_callers_context_still_reaches_the_subscriber() -> Result<()> {
    let run = publish_traced(None).await?;
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    assert_eq!(run.webhook.headers["traceparent"].to_str()?, caller);
    let event: Value = serde_json::from_slice(&run.webhook.body)?;
    assert_eq!(event["traceparent"], caller.as_str());
    Ok(())
}
