//! Settings of the AMQP adapter, inbound and outbound.

use serde::Deserialize;

use crate::AdapterError;

/// Outbound settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpOutbound {
    /// Broker URL (`amqp://` or `amqps://`), for development brokers. Production uses `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the broker URL (with its credentials).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Exchange to publish to; `""` is the default exchange (routing key = queue name).
    #[serde(default)]
    pub exchange: String,
    /// Routing key of every message.
    pub routing_key: String,
    /// Most messages published before waiting for their confirms.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

/// Inbound settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpInbound {
    /// Broker URL, as for outbound.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the broker URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The department's queue (it must exist; the department owns its settings).
    pub queue: String,
    /// Unacknowledged messages the broker may hand the hub at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
}

fn default_max_batch() -> usize {
    100
}
fn default_prefetch() -> u16 {
    50
}

fn check_url(url: &Option<String>, url_env: &Option<String>) -> Result<(), AdapterError> {
    match (url, url_env) {
        (Some(u), None) if u.starts_with("amqp://") || u.starts_with("amqps://") => Ok(()),
        (Some(_), None) => Err(AdapterError::Config("url must be amqp://... or amqps://...".into())),
        (None, Some(env)) if crate::is_env_name(env) => Ok(()),
        (None, Some(_)) => Err(AdapterError::Config("url_env must name an environment variable (A-Z, 0-9, _)".into())),
        _ => Err(AdapterError::Config("give exactly one of url and url_env".into())),
    }
}

/// AMQP short strings are at most 255 bytes.
fn check_name(what: &str, name: &str, empty_ok: bool) -> Result<(), AdapterError> {
    if (name.is_empty() && !empty_ok) || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(AdapterError::Config(format!("{what} must be 1 to 255 bytes without control characters")));
    }
    Ok(())
}

impl AmqpOutbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        check_url(&self.url, &self.url_env)?;
        check_name("exchange", &self.exchange, true)?;
        // A fanout exchange ignores the routing key; the default exchange needs the queue name.
        check_name("routing_key", &self.routing_key, !self.exchange.is_empty())?;
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(AdapterError::Config("max_batch must be 1 to 10000".into()));
        }
        Ok(())
    }
}

impl AmqpInbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        check_url(&self.url, &self.url_env)?;
        check_name("queue", &self.queue, false)?;
        if self.prefetch == 0 {
            return Err(AdapterError::Config("prefetch must be at least 1".into()));
        }
        Ok(())
    }
}
