//! Operations and maintenance: `[ops]` (history, alerts, metrics listener) and `[[checks]]`.

use serde::Deserialize;
use toml::Spanned;

use super::checks;

/// `[ops]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct OpsSection {
    /// Days of check history kept.
    #[serde(default = "default_retention")]
    pub history_days: u32,
    /// The vendor's ticketing webhook: alerts are POSTed there as Standard Webhooks signed JSON.
    #[serde(default)]
    pub alert_url: Option<Spanned<String>>,
    /// Environment variable holding the alert signing secret (`whsec_...`).
    #[serde(default)]
    pub alert_secret_env: Option<String>,
    /// A plain-HTTP loopback address serving only `/metrics`, for a local Prometheus.
    #[serde(default)]
    pub metrics_listen: Option<Spanned<String>>,
}

fn default_retention() -> u32 {
    400
}

impl Default for OpsSection {
    fn default() -> Self {
        Self { history_days: default_retention(), alert_url: None, alert_secret_env: None, metrics_listen: None }
    }
}

/// `[[checks]]`: one scheduled health check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Name (kebab-case), used in URLs and alerts.
    pub name: Spanned<String>,
    /// Kind (see `checks::CheckKind`).
    pub kind: Spanned<String>,
    /// Cron expression with seconds, in the hub's time zone.
    pub schedule: Spanned<String>,
    /// Deadline of one run (s).
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
    /// Kind-specific thresholds (`warn_*`, `critical_*`), numbers; each kind's names are in
    /// `checks` and any other name is refused.
    #[serde(default)]
    pub thresholds: Option<Spanned<toml::Table>>,
    /// `backup` only: the folder backups go to (relative to this file) and how many to keep.
    #[serde(default)]
    pub backup: Option<BackupSettings>,
    /// `audit_chain` only: every Nth run re-verifies the whole chain; the runs between verify only
    /// what follows the last signed checkpoint found intact. 1 makes every run a full pass.
    #[serde(default)]
    pub full_every: Option<Spanned<u32>>,
}

impl CheckConfig {
    /// The kind (`None` only in a config that did not pass its check).
    pub fn kind(&self) -> Option<checks::CheckKind> {
        checks::CheckKind::parse(self.kind.get_ref())
    }

    /// The thresholds as the kind's type; a config that passed its check always has them.
    pub fn thresholds<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        self.thresholds.as_ref().and_then(|t| checks::thresholds(t.get_ref()).ok()).unwrap_or_default()
    }
}

/// Where a `backup` check writes, and its retention.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Destination folder (relative to the config file); another disk in production.
    pub dir: String,
    /// Backups kept; older ones are deleted after a successful new one.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    7
}

fn default_check_timeout() -> u64 {
    60
}
