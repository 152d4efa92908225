//! The file-drop exchange folder, as a front-end processor (前置机) shares it with the hub.
//!
//! Inbound, the department drops NDJSON or CSV files (UTF-8 or GB18030) into `DIR/inbox/`. A file
//! is taken only once complete: under its final extension (`rename`, the default: write
//! `x.csv.part`, then rename) or once `x.csv.done` exists (`marker`). Each line is published with
//! the idempotency key `file:NAME:LINE`, so a crash part-way re-offers the same keys and nothing
//! is published twice; and a corrected file dropped again under the same name stores only the
//! lines that failed before. A per-line result file goes to `DIR/results/NAME.result.ndjson`,
//! then the file moves to `DIR/processed/`, or to `DIR/rejected/` when any line was rejected.
//!
//! Outbound, each delivery batch becomes `DIR/events-ID.ndjson` (one CloudEvent a line), written
//! atomically, followed by `events-ID.manifest.json` with its count and SHA-256: the department
//! takes a data file once its manifest exists.

mod config;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

pub use config::{Complete, Encoding, FileDropInbound, FileDropOutbound};
pub use inbound::FileDropSource;
pub use outbound::FileDropSink;

use crate::{AdapterError, BuildContext, Direction, Inbound, Kind, Outbound};

/// The registry entry.
pub fn kind() -> Kind {
    Kind {
        name: "file_drop",
        direction: Direction::Push,
        description: "an exchange folder: NDJSON/CSV files in (UTF-8 or GB18030), NDJSON files with manifests out",
        validate: |t| crate::settings::<FileDropOutbound>(t)?.validate(),
        build: Some(build),
        validate_inbound: Some(|t| crate::settings::<FileDropInbound>(t)?.validate()),
        build_inbound: Some(build_inbound),
    }
}

fn build(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Outbound>, AdapterError> {
    let config: FileDropOutbound = crate::settings(settings)?;
    config.validate()?;
    Ok(Box::new(FileDropSink::new((ctx.resolve)(&config.dir), config.max_batch)))
}

fn build_inbound(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Inbound>, AdapterError> {
    let config: FileDropInbound = crate::settings(settings)?;
    config.validate()?;
    let root = (ctx.resolve)(&config.dir);
    Ok(Box::new(FileDropSource::new(root, config)))
}
