//! Settings of a webhook subscription (`[subscriptions.settings]`).

use serde::Deserialize;

use crate::AdapterError;

/// Webhook settings. Operators read these field docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver's URL, `http://` or `https://`.
    pub url: String,
    /// Name of the environment variable holding the signing secret (`whsec_` + base64). During a
    /// key rotation it may hold several secrets separated by spaces: each signs every request.
    pub secret_env: String,
    /// Seconds to wait for the receiver's answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// PEM file of the CA that signs an `https` receiver's certificate (relative to the config).
    #[serde(default)]
    pub ca: Option<String>,
    /// Present the hub's own client certificate to an `https` receiver that asks for one.
    #[serde(default)]
    pub client_certificate: bool,
    /// Events per request. 1 (the default) POSTs each event alone as
    /// `application/cloudevents+json`; more POSTs up to that many, in order, as one
    /// `application/cloudevents-batch+json` array signed once, for receivers that take the
    /// CloudEvents JSON batch format: a 2xx acknowledges every event of it.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_timeout() -> u64 {
    10
}

fn default_batch() -> usize {
    1
}

/// The largest `batch`: about 1 MiB of ~1 KiB events, well inside what receivers' request limits
/// usually allow, and a retry of a whole batch stays cheap.
pub const MAX_BATCH: usize = 1000;

impl WebhookConfig {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let url = url::Url::parse(&self.url).map_err(|e| AdapterError::Config(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AdapterError::Config("url must be http:// or https://".into()));
        }
        if url.host_str().is_none() {
            return Err(AdapterError::Config("url has no host".into()));
        }
        if !crate::is_env_name(&self.secret_env) {
            return Err(AdapterError::Config("secret_env must name an environment variable (A-Z, 0-9, _)".into()));
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(AdapterError::Config("timeout_secs must be 1 to 300".into()));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(AdapterError::Config(format!("batch must be 1 to {MAX_BATCH} events per request")));
        }
        if url.scheme() == "http" && (self.ca.is_some() || self.client_certificate) {
            return Err(AdapterError::Config("ca and client_certificate need an https:// url".into()));
        }
        Ok(())
    }
}
