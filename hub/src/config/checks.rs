//! The check kinds the hub implements, listed once, and each kind's `thresholds` as a typed
//! table that refuses a name it does not know: a misspelt `warn_pendng` is a `hub config check`
//! error with its line, not a threshold silently left at its default.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A kind of scheduled check (`[[checks]] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Each adapter's own health check, per subscription and inbound connection.
    AdapterReachability,
    /// Pending deliveries and the age of the oldest.
    DeliveryBacklog,
    /// Dead-lettered deliveries.
    DeadLetters,
    /// The audit chain verifies.
    AuditChain,
    /// Disk, database and write-ahead log.
    Storage,
    /// Certificate and CRL expiry.
    Certificates,
    /// A backup of the data directory.
    Backup,
    /// A probe record through the whole exchange.
    Synthetic,
}

impl CheckKind {
    /// Every kind.
    pub const ALL: [CheckKind; 8] = [
        CheckKind::AdapterReachability,
        CheckKind::DeliveryBacklog,
        CheckKind::DeadLetters,
        CheckKind::AuditChain,
        CheckKind::Storage,
        CheckKind::Certificates,
        CheckKind::Backup,
        CheckKind::Synthetic,
    ];

    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::AdapterReachability => "adapter_reachability",
            CheckKind::DeliveryBacklog => "delivery_backlog",
            CheckKind::DeadLetters => "dead_letters",
            CheckKind::AuditChain => "audit_chain",
            CheckKind::Storage => "storage",
            CheckKind::Certificates => "certificates",
            CheckKind::Backup => "backup",
            CheckKind::Synthetic => "synthetic",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Checks a `thresholds` table against this kind's type.
    pub fn check_thresholds(self, table: &toml::Table) -> Result<(), String> {
        // The typed read would say only "expected f64", without the name.
        if let Some((k, _)) = table.iter().find(|(_, v)| !(v.is_integer() || v.is_float())) {
            return Err(format!("threshold {k:?} must be a number"));
        }
        match self {
            CheckKind::DeliveryBacklog => thresholds::<BacklogThresholds>(table).map(drop),
            CheckKind::DeadLetters => thresholds::<DeadLetterThresholds>(table).map(drop),
            CheckKind::Storage => thresholds::<StorageThresholds>(table).map(drop),
            CheckKind::Certificates => thresholds::<CertificateThresholds>(table).map(drop),
            CheckKind::Synthetic => thresholds::<SyntheticThresholds>(table).map(drop),
            CheckKind::AdapterReachability | CheckKind::AuditChain | CheckKind::Backup => {
                thresholds::<NoThresholds>(table).map(drop)
            }
        }
    }
}

/// Reads a `thresholds` table as `T`; the message names the unknown field and the known ones.
pub fn thresholds<T: DeserializeOwned>(table: &toml::Table) -> Result<T, String> {
    toml::Value::Table(table.clone()).try_into::<T>().map_err(|e| format!("thresholds: {}", e.message().trim()))
}

/// Kinds that take no thresholds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoThresholds {}

/// `delivery_backlog`: pending deliveries and the oldest's age. Unset: the check's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogThresholds {
    /// Pending deliveries that warn (default 1,000).
    pub warn_pending: Option<f64>,
    /// Pending deliveries that are critical (default 10,000).
    pub critical_pending: Option<f64>,
    /// Age of the oldest pending delivery that warns, in seconds (default 300).
    pub warn_age_secs: Option<f64>,
    /// ... that is critical (default 3,600).
    pub critical_age_secs: Option<f64>,
}

/// `dead_letters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterThresholds {
    /// Dead letters that warn (default 1).
    pub warn_dead: Option<f64>,
    /// Dead letters that are critical (default 100).
    pub critical_dead: Option<f64>,
}

/// `storage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageThresholds {
    /// Free share of the disk below which it warns, in percent (default 20).
    pub warn_free_percent: Option<f64>,
    /// ... below which it is critical (default 10).
    pub critical_free_percent: Option<f64>,
    /// WAL size that warns, in bytes, whatever the bound (default 512 MiB).
    pub warn_wal_bytes: Option<f64>,
    /// WAL size that is critical (default: none).
    pub critical_wal_bytes: Option<f64>,
    /// Seconds without a complete checkpoint that warn (default 120).
    pub warn_checkpoint_age_seconds: Option<f64>,
    /// ... that are critical (default 600).
    pub critical_checkpoint_age_seconds: Option<f64>,
}

/// `certificates`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateThresholds {
    /// Days to expiry that warn (default 30).
    pub warn_days: Option<f64>,
    /// Days to expiry that are critical (default 7).
    pub critical_days: Option<f64>,
    /// Age of the CRL that warns, in days (default 7).
    pub warn_crl_age_days: Option<f64>,
}

/// `synthetic`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticThresholds {
    /// Round trip that warns, in ms (default 2,000).
    pub warn_ms: Option<f64>,
    /// Round trip that is critical (default 10,000); three times it, the probe is given up.
    pub critical_ms: Option<f64>,
}
