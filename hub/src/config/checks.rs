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
    /// Notices of corrections and recalls a department has not acknowledged.
    Notices,
    /// Exchange folders and tables read back against the hub's deliveries.
    Reconciliation,
}

impl CheckKind {
    /// Every kind.
    pub const ALL: [CheckKind; 10] = [
        CheckKind::AdapterReachability,
        CheckKind::DeliveryBacklog,
        CheckKind::DeadLetters,
        CheckKind::AuditChain,
        CheckKind::Storage,
        CheckKind::Certificates,
        CheckKind::Backup,
        CheckKind::Synthetic,
        CheckKind::Notices,
        CheckKind::Reconciliation,
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
            CheckKind::Notices => "notices",
            CheckKind::Reconciliation => "reconciliation",
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
            CheckKind::Notices => thresholds::<NoticeThresholds>(table).map(drop),
            CheckKind::Reconciliation => thresholds::<ReconciliationThresholds>(table).map(drop),
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

/// `delivery_backlog`: pending deliveries and the oldest's age. Each unset field has the
/// default named beside it (the struct's `Default`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BacklogThresholds {
    /// Pending deliveries that warn (default 1,000).
    pub warn_pending: f64,
    /// Pending deliveries that are critical (default 10,000).
    pub critical_pending: f64,
    /// Age of the oldest pending delivery that warns, in seconds (default 300).
    pub warn_age_secs: f64,
    /// ... that is critical (default 3,600).
    pub critical_age_secs: f64,
}

impl Default for BacklogThresholds {
    fn default() -> Self {
        Self { warn_pending: 1000.0, critical_pending: 10_000.0, warn_age_secs: 300.0, critical_age_secs: 3600.0 }
    }
}

/// `notices`: how many working days a department may leave a notice of a correction or recall
/// unacknowledged.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoticeThresholds {
    /// Working days after which an unacknowledged notice warns (default 3).
    pub warn_working_days: f64,
    /// ... is critical (default 10).
    pub critical_working_days: f64,
}

impl Default for NoticeThresholds {
    fn default() -> Self {
        Self { warn_working_days: 3.0, critical_working_days: 10.0 }
    }
}

/// `reconciliation`: events the hub delivered that a department's folder or table does not hold,
/// over yesterday and today.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconciliationThresholds {
    /// Missing events that warn (default 1: any).
    pub warn_missing: f64,
    /// ... are critical (default 100).
    pub critical_missing: f64,
}

impl Default for ReconciliationThresholds {
    fn default() -> Self {
        Self { warn_missing: 1.0, critical_missing: 100.0 }
    }
}

/// `dead_letters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterThresholds {
    /// Dead letters that warn (default 1).
    pub warn_dead: f64,
    /// Dead letters that are critical (default 100).
    pub critical_dead: f64,
}

impl Default for DeadLetterThresholds {
    fn default() -> Self {
        Self { warn_dead: 1.0, critical_dead: 100.0 }
    }
}

/// `storage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageThresholds {
    /// Free share of the disk below which it warns, in percent (default 20).
    pub warn_free_percent: f64,
    /// ... below which it is critical (default 10).
    pub critical_free_percent: f64,
    /// WAL size that warns, in bytes, whatever the bound (default 512 MiB).
    pub warn_wal_bytes: f64,
    /// WAL size that is critical (default: none).
    pub critical_wal_bytes: Option<f64>,
    /// Seconds without a complete checkpoint that warn (default 120).
    pub warn_checkpoint_age_seconds: f64,
    /// ... that are critical (default 600).
    pub critical_checkpoint_age_seconds: f64,
}

impl Default for StorageThresholds {
    fn default() -> Self {
        Self {
            warn_free_percent: 20.0,
            critical_free_percent: 10.0,
            warn_wal_bytes: 512.0 * 1048576.0,
            critical_wal_bytes: None,
            warn_checkpoint_age_seconds: 120.0,
            critical_checkpoint_age_seconds: 600.0,
        }
    }
}

/// `certificates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateThresholds {
    /// Days to expiry that warn (default 30).
    pub warn_days: f64,
    /// Days to expiry that are critical (default 7).
    pub critical_days: f64,
    /// Age of the CRL that warns, in days (default 7).
    pub warn_crl_age_days: f64,
}

impl Default for CertificateThresholds {
    fn default() -> Self {
        Self { warn_days: 30.0, critical_days: 7.0, warn_crl_age_days: 7.0 }
    }
}

/// `synthetic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticThresholds {
    /// Round trip that warns, in ms (default 2,000).
    pub warn_ms: f64,
    /// Round trip that is critical (default 10,000); three times it, the probe is given up.
    pub critical_ms: f64,
}

impl Default for SyntheticThresholds {
    fn default() -> Self {
        Self { warn_ms: 2000.0, critical_ms: 10_000.0 }
    }
}
