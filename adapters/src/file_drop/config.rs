//! Settings of the exchange folder, inbound (`[[inbound]] settings`) and outbound
//! (`[[subscriptions]] settings`).

use serde::Deserialize;

use crate::AdapterError;

/// How a dropped file says it is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complete {
    /// The department writes under another name (`x.csv.part`) and renames: any `.ndjson`,
    /// `.jsonl` or `.csv` file in the inbox is complete.
    #[default]
    Rename,
    /// The department writes `x.csv`, then an empty `x.csv.done`.
    Marker,
}

/// Text encoding of dropped files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// UTF-8 (a byte-order mark is allowed).
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// GB18030 (a superset of GBK and GB2312), as older department systems write.
    #[serde(rename = "gb18030")]
    Gb18030,
}

/// Inbound settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDropInbound {
    /// The exchange folder (relative to the config file); `inbox/`, `processed/`, `rejected/` and
    /// `results/` are created under it.
    pub dir: String,
    /// Encoding of every file dropped here.
    #[serde(default)]
    pub encoding: Encoding,
    /// How a file says it is complete.
    #[serde(default)]
    pub complete: Complete,
    /// How often the inbox is looked at (ms).
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Lines published per durable commit.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_poll() -> u64 {
    1000
}
fn default_batch() -> usize {
    500
}

impl FileDropInbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        if self.dir.is_empty() {
            return Err(AdapterError::Config("dir must name the exchange folder".into()));
        }
        if !(10..=600_000).contains(&self.poll_ms) {
            return Err(AdapterError::Config("poll_ms must be 10 to 600000".into()));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(AdapterError::Config("batch must be 1 to 10000".into()));
        }
        Ok(())
    }
}

/// Outbound settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDropOutbound {
    /// The folder event files are written to (relative to the config file).
    pub dir: String,
    /// Most events in one file.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_max_batch() -> usize {
    100
}

impl FileDropOutbound {
    /// Checks the settings without I/O.
    pub fn validate(&self) -> Result<(), AdapterError> {
        if self.dir.is_empty() {
            return Err(AdapterError::Config("dir must name the exchange folder".into()));
        }
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(AdapterError::Config("max_batch must be 1 to 10000".into()));
        }
        Ok(())
    }
}
