//! Settings of the SQL exchange table, inbound and outbound.

use serde::Deserialize;

use crate::{is_sql_identifier, AdapterError};

/// Inbound settings: the department's staging table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlInbound {
    /// Connection URL (`postgres://...` or `mysql://...`), for development databases without a
    /// password. Production uses `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the connection URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The staging table (`name` or `schema.name`).
    pub table: String,
    /// How often the table is polled when it had nothing new (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Rows taken per transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// Outbound settings: the department's exchange table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlOutbound {
    /// Connection URL, as for inbound.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the connection URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The exchange table; it needs a unique `event_id` column.
    pub table: String,
    /// Most events inserted in one transaction.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_poll() -> u64 {
    1000
}
fn default_batch() -> usize {
    100
}
fn default_max_batch() -> usize {
    100
}

fn check_common(url: &Option<String>, url_env: &Option<String>, table: &str) -> Result<(), AdapterError> {
    match (url, url_env) {
        (Some(u), None) => {
            let scheme = u.split("://").next().unwrap_or("");
            if !matches!(scheme, "postgres" | "postgresql" | "mysql" | "mariadb") {
                return Err(AdapterError::Config("url must be postgres://... or mysql://...".into()));
            }
        }
        (None, Some(env)) => {
            if !crate::is_env_name(env) {
                return Err(AdapterError::Config("url_env must name an environment variable (A-Z, 0-9, _)".into()));
            }
        }
        _ => return Err(AdapterError::Config("give exactly one of url and url_env".into())),
    }
    if !is_sql_identifier(table) {
        return Err(AdapterError::Config(format!("table {table:?} must be a plain SQL name (letters, digits, _)")));
    }
    Ok(())
}

impl SqlInbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        check_common(&self.url, &self.url_env, &self.table)?;
        if !(10..=600_000).contains(&self.poll_ms) {
            return Err(AdapterError::Config("poll_ms must be 10 to 600000".into()));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(AdapterError::Config("batch must be 1 to 10000".into()));
        }
        Ok(())
    }
}

impl SqlOutbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        check_common(&self.url, &self.url_env, &self.table)?;
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(AdapterError::Config("max_batch must be 1 to 10000".into()));
        }
        Ok(())
    }
}
