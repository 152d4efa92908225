//! Delivery over HTTP: the Standard Webhooks signature (`v1,` + base64 HMAC-SHA256 of
//! `id.timestamp.body` with each `whsec_` secret) and the mapping of answers to outcomes.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;

use super::WebhookConfig;
use crate::envelope::{CLOUDEVENTS_BATCH_JSON, CLOUDEVENTS_JSON};
use crate::{AdapterError, BuildContext, Envelope, Outbound, Outcome};

/// Decodes a `whsec_` secret into its key bytes.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, AdapterError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| AdapterError::Build("a webhook secret must start with whsec_".into()))?;
    let key = B64.decode(b64).map_err(|_| AdapterError::Build("a webhook secret must be whsec_ + base64".into()))?;
    if key.len() < 24 {
        return Err(AdapterError::Build("a webhook secret must hold at least 24 bytes".into()));
    }
    Ok(key)
}

/// The `webhook-signature` header value: one `v1,` signature per key, space-separated.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .filter_map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running webhook adapter.
pub struct WebhookSink {
    url: String,
    keys: Vec<Vec<u8>>,
    client: reqwest::Client,
    batch: usize,
}

impl WebhookSink {
    /// Builds the HTTP client and reads the secrets.
    pub fn build(config: &WebhookConfig, ctx: &BuildContext<'_>) -> Result<Self, AdapterError> {
        let secrets = (ctx.secret)(&config.secret_env)
            .ok_or_else(|| AdapterError::Build(format!("the environment variable {} is not set", config.secret_env)))?;
        let keys = secrets.split_whitespace().map(parse_secret).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(AdapterError::Build(format!("{} holds no secret", config.secret_env)));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .user_agent(concat!("conghua-hub/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca {
            let path = (ctx.resolve)(ca);
            let pem = std::fs::read(&path).map_err(|e| AdapterError::Build(format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| AdapterError::Build(format!("{}: {e}", path.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if config.client_certificate {
            let pem = ctx
                .client_identity_pem
                .as_ref()
                .ok_or_else(|| AdapterError::Build("the hub has no client certificate to present".into()))?;
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| AdapterError::Build(format!("client certificate: {e}")))?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| AdapterError::Build(format!("http client: {e}")))?;
        Ok(Self { url: config.url.clone(), keys, client, batch: config.batch.max(1) })
    }

    async fn post(&self, e: &Envelope) -> Outcome {
        self.send_traced(e.id(), CLOUDEVENTS_JSON, e.json().to_vec(), e.attempt_trace()).await
    }

    /// Several events as one CloudEvents JSON batch (an array of the same structured events).
    async fn post_batch(&self, batch: &[Envelope]) -> Outcome {
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.json().len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e.json());
        }
        body.push(b']');
        // One request, one attempt: the hub makes one span for the batch, named by its first event.
        let trace = batch.first().and_then(Envelope::attempt_trace);
        self.send_traced(&batch_id(batch), CLOUDEVENTS_BATCH_JSON, body, trace).await
    }

    /// Sends any signed JSON body (alerts use this: plain JSON, not CloudEvents).
    pub async fn send(&self, id: &str, content_type: &'static str, body: Vec<u8>) -> Outcome {
        self.send_traced(id, content_type, body, None).await
    }

    /// As [`WebhookSink::send`], with the W3C `traceparent` of the attempt, so that the
    /// receiver's own tracing joins the trace the publish started.
    async fn send_traced(&self, id: &str, content_type: &'static str, body: Vec<u8>, trace: Option<&str>) -> Outcome {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&self.keys, id, timestamp, &body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ]
        .into_iter()
        .chain(trace.map(|t| ("traceparent", t.to_owned())))
        {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => return Outcome::Reject { reason: format!("{name} is not a valid header value") },
            }
        }
        match self.client.post(&self.url).headers(headers).body(body).send().await {
            Ok(resp) => classify(resp.status().as_u16(), resp.headers().get(RETRY_AFTER)),
            Err(e) if e.is_timeout() => {
                Outcome::Retry { reason: "the receiver did not answer in time".into(), retry_after: None }
            }
            Err(e) if e.is_connect() => {
                Outcome::Retry { reason: "cannot connect to the receiver".into(), retry_after: None }
            }
            Err(_) => Outcome::Retry { reason: "the request to the receiver failed".into(), retry_after: None },
        }
    }
}

/// The `webhook-id` of a batch: the same events in the same order always get the same id, so a
/// receiver that saw a batch before may answer its retry at once; one that did not still drops
/// each event it holds by the event's own id.
pub fn batch_id(batch: &[Envelope]) -> String {
    use sha2::Digest as _;
    let mut h = Sha256::new();
    for e in batch {
        h.update(e.id().as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    format!("batch_{}", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Maps a receiver's status to an outcome. Only status codes travel into reasons: a receiver's
/// body could echo personal data back.
pub(crate) fn classify(status: u16, retry_after: Option<&HeaderValue>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("the receiver answered HTTP {status}"),
            retry_after: retry_after.and_then(|v| v.to_str().ok()).and_then(parse_retry_after),
        },
        410 => Outcome::Gone { reason: "the receiver answered HTTP 410 Gone".into() },
        _ => Outcome::Reject { reason: format!("the receiver answered HTTP {status}") },
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

#[async_trait]
impl Outbound for WebhookSink {
    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        if self.batch > 1 {
            return self.post_batch(batch).await;
        }
        for e in batch {
            let outcome = self.post(e).await;
            if outcome != Outcome::Delivered {
                return outcome;
            }
        }
        Outcome::Delivered
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    async fn health(&self) -> Result<(), String> {
        let ping = serde_json::json!({
            "specversion": "1.0", "id": format!("health-{}", chrono::Utc::now().timestamp_millis()),
            "source": "urn:hub:health", "type": "hub.health.ping",
        });
        let id = ping["id"].as_str().unwrap_or("health").to_owned();
        match self.send(&id, CLOUDEVENTS_JSON, ping.to_string().into_bytes()).await {
            Outcome::Delivered => Ok(()),
            Outcome::Retry { reason, .. } | Outcome::Reject { reason } | Outcome::Gone { reason } => Err(reason),
        }
    }
}
