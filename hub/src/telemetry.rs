//! Traces of the record's way: the `[telemetry]` OTLP exporter, and the W3C trace context a record
//! carries from its publish into every delivery of it.
//!
//! The spans are `tracing` spans of target [`TARGET`] (receive, validate, commit, deliver), turned
//! into OpenTelemetry spans by `tracing-opentelemetry` only when `[telemetry]` is configured. Their
//! names and attributes are routes, record type ids, subscription names, principals (departments
//! and operators, never people) and status codes: never a record key, a subject or a payload.
//!
//! A record keeps one `traceparent` (its `trace` column): the hub's receive span when traces are
//! exported, otherwise the caller's own, so a department's tracing joins publish to delivery even
//! when the hub exports nothing.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use crate::config::TelemetrySection;

/// The target of the spans that are exported; every other span stays in the process.
pub const TARGET: &str = "hub::trace";

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter refused its configuration.
    #[error("[telemetry]: {0}")]
    Exporter(String),
}

/// The running exporter. [`Telemetry::shutdown`] sends the spans still batched.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Starts the exporter on `runtime` and returns it with the tracer the tracing layer uses.
    pub fn start(
        config: &TelemetrySection,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Self, opentelemetry_sdk::trace::Tracer), TelemetryError> {
        let client = OnRuntime {
            inner: opentelemetry_http::hyper::HyperClient::with_default_connector(Duration::from_secs(10), None),
            runtime,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.otlp_endpoint.get_ref().clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A caller's decision stands; the ratio applies to the traces the hub starts.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(*config.sample_ratio.get_ref()))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("conghua-hub");
        Ok((Self { provider }, tracer))
    }

    /// Sends what is batched and stops. Blocks: call it off the runtime's worker threads.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// The SDK exports from a thread of its own, without a runtime; the hyper client needs one, so
/// each export is spawned on the hub's.
#[derive(Debug, Clone)]
struct OnRuntime {
    inner: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let inner = self.inner.clone();
        self.runtime.spawn(async move { inner.send_bytes(request).await }).await?
    }
}

/// One header's value, as the propagator reads it.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The remote context a W3C `traceparent` names, or `None` when it is absent or malformed (a
/// malformed one is ignored, as the W3C recommendation says, and the hub starts a new trace).
pub fn remote(traceparent: Option<&str>) -> Option<opentelemetry::Context> {
    let cx = TraceContextPropagator::new().extract(&Traceparent(traceparent?));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A span context as a W3C `traceparent`, when it is one.
pub fn traceparent(cx: &SpanContext) -> Option<String> {
    cx.is_valid().then(|| format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()))
}

/// The `traceparent` of a `tracing` span: set only when traces are exported.
pub fn of_span(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    traceparent(&span.context().span().span_context().clone())
}

/// What a record published under `span` carries into its deliveries: the hub's own span when
/// traces are exported, otherwise the caller's `traceparent` (when it is one), passed on.
pub fn carried(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    of_span(span).or_else(|| remote(incoming).and_then(|cx| traceparent(&cx.span().span_context().clone())))
}

/// Makes `span` a child of the context `traceparent` names (no-op when traces are off).
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(cx) = remote(traceparent) {
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_malformed_one_is_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote(Some(tp)).unwrap();
        assert!(cx.span().span_context().is_remote());
        assert_eq!(traceparent(&cx.span().span_context().clone()).as_deref(), Some(tp));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "not a traceparent",
        ] {
            assert!(remote(Some(bad)).is_none(), "{bad:?}");
        }
        assert!(remote(None).is_none());
    }
}
