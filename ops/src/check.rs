//! The check boundary: a check looks at one aspect of the hub and reports a status, a one-line
//! summary (no personal data: operators and the vendor read it) and named measurements.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Health of one aspect, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Needs attention soon.
    Warn,
    /// Needs attention now.
    Critical,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Critical => "critical",
        }
    }

    /// The status for a value against warn and critical thresholds (higher is worse).
    pub fn from_thresholds(value: f64, warn: Option<f64>, critical: Option<f64>) -> Status {
        if critical.is_some_and(|c| value >= c) {
            Status::Critical
        } else if warn.is_some_and(|w| value >= w) {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Status.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// Named numbers (counts, ages in seconds, bytes, milliseconds).
    pub measurements: BTreeMap<String, f64>,
}

impl Report {
    /// A report without measurements.
    pub fn new(status: Status, summary: impl Into<String>) -> Self {
        Self { status, summary: summary.into(), measurements: BTreeMap::new() }
    }

    /// Adds a measurement.
    pub fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.measurements.insert(name.into(), value);
        self
    }
}

/// One kind of health check.
#[async_trait]
pub trait Check: Send + Sync {
    /// The configured name.
    fn name(&self) -> &str;
    /// The kind (`delivery_backlog`, `audit_chain`, ...).
    fn kind(&self) -> &'static str;
    /// Looks and reports; never panics, never blocks the runtime for long.
    async fn run(&self) -> Report;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(Status::from_thresholds(1.0, Some(10.0), Some(100.0)), Status::Ok);
        assert_eq!(Status::from_thresholds(10.0, Some(10.0), Some(100.0)), Status::Warn);
        assert_eq!(Status::from_thresholds(500.0, Some(10.0), Some(100.0)), Status::Critical);
        assert_eq!(Status::from_thresholds(500.0, None, None), Status::Ok);
        assert!(Status::Critical > Status::Warn && Status::Warn > Status::Ok);
    }
}
