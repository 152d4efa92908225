//! RabbitMQ (AMQP 0-9-1) through lapin.
//!
//! Outbound, each event is published persistent, `mandatory`, with `message-id` = event id, on a
//! channel in confirm mode: `Delivered` only once the broker confirmed every message of the batch
//! (for a durable queue, that means written to disk). A message no queue takes comes back and
//! counts as `Retry`, never as delivered.
//!
//! Inbound, the hub consumes a department queue with manual acknowledgement: a message is acked
//! only after the hub's durable receipt. Its idempotency key is its `message-id` (or, without
//! one, the SHA-256 of its body), so a message redelivered after a crash between receipt and ack
//! is not stored twice. A message the hub rejects is logged by the hub and rejected without
//! requeue (to the queue's dead-letter exchange, if the department set one): a poison message
//! never loops.

mod config;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

pub use config::{AmqpInbound, AmqpOutbound};
pub use inbound::AmqpSource;
pub use outbound::AmqpSink;

use crate::{AdapterError, BuildContext, Direction, Inbound, Kind, Outbound};

/// The registry entry.
pub fn kind() -> Kind {
    Kind {
        name: "amqp",
        direction: Direction::Push,
        description: "RabbitMQ: publish with confirms to an exchange; consume a queue with manual acks",
        validate: |t| crate::settings::<AmqpOutbound>(t)?.validate(),
        build: Some(build),
        validate_inbound: Some(|t| crate::settings::<AmqpInbound>(t)?.validate()),
        build_inbound: Some(build_inbound),
    }
}

fn build(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Outbound>, AdapterError> {
    let config: AmqpOutbound = crate::settings(settings)?;
    config.validate()?;
    let url = crate::connection_url(&config.url, &config.url_env, ctx)?;
    Ok(Box::new(AmqpSink::new(url, config)))
}

fn build_inbound(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Inbound>, AdapterError> {
    let config: AmqpInbound = crate::settings(settings)?;
    config.validate()?;
    let url = crate::connection_url(&config.url, &config.url_env, ctx)?;
    Ok(Box::new(AmqpSource::new(url, config)))
}

/// Connects with a deadline: lapin would otherwise wait for the OS to give up on a dead host.
async fn connect(url: &str) -> Result<lapin::Connection, String> {
    let props = lapin::ConnectionProperties::default().with_connection_name("conghua-hub".into());
    match tokio::time::timeout(std::time::Duration::from_secs(5), lapin::Connection::connect(url, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("broker: {e}")),
        Err(_) => Err("broker: no connection within 5 s".into()),
    }
}
