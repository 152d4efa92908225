//! The SQL exchange table in the department's own PostgreSQL or MySQL/MariaDB database.
//!
//! Inbound, the department inserts rows into a staging table with `status = 'new'`. The hub
//! locks a batch (`FOR UPDATE SKIP LOCKED`), publishes each row as a JSON object of its columns
//! (idempotency key `row:TABLE:ID`), and in the same department transaction marks it `taken` with
//! the receipt, or `rejected` with the problem. A crash before that commit leaves the rows `new`
//! and they are offered again under the same keys. The staging table needs the columns `id`
//! (ascending integer key), `status`, `receipt` and `problem`; every other column is record data.
//!
//! Outbound, each event becomes one row of the department's exchange table: the column
//! `event_id` (unique) plus one column per field of the (mapped) record. Re-delivering an event
//! inserts nothing (`ON CONFLICT DO NOTHING` / `ON DUPLICATE KEY`). PostgreSQL converts the
//! values to the column types with `json_populate_record`; MySQL casts them on insert.

mod config;
mod db;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

pub use config::{SqlInbound, SqlOutbound};
pub use inbound::SqlSource;
pub use outbound::SqlSink;

use crate::{AdapterError, BuildContext, Direction, Inbound, Kind, Outbound};

/// The registry entry.
pub fn kind() -> Kind {
    Kind {
        name: "sql_table",
        direction: Direction::Push,
        description: "a staging table in and an exchange table out, in the department's PostgreSQL or MySQL",
        validate: |t| crate::settings::<SqlOutbound>(t)?.validate(),
        build: Some(build),
        validate_inbound: Some(|t| crate::settings::<SqlInbound>(t)?.validate()),
        build_inbound: Some(build_inbound),
    }
}

fn build(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Outbound>, AdapterError> {
    let config: SqlOutbound = crate::settings(settings)?;
    config.validate()?;
    let url = crate::connection_url(&config.url, &config.url_env, ctx)?;
    Ok(Box::new(SqlSink::new(db::Db::lazy(&url)?, config)))
}

fn build_inbound(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Inbound>, AdapterError> {
    let config: SqlInbound = crate::settings(settings)?;
    config.validate()?;
    let url = crate::connection_url(&config.url, &config.url_env, ctx)?;
    Ok(Box::new(SqlSource::new(db::Db::lazy(&url)?, config)))
}
