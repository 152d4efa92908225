//! The webhook adapter: POSTs each envelope as `application/cloudevents+json`, signed per the
//! Standard Webhooks spec, to the department's receiver over HTTP or HTTPS (optionally with the
//! hub's own client certificate), and classifies the answer.

mod config;
mod outbound;
#[cfg(test)]
mod tests;

pub use config::WebhookConfig;
pub use outbound::{batch_id, parse_secret, sign, WebhookSink};

use crate::{AdapterError, BuildContext, Direction, Kind, Outbound};

/// The registry entry.
pub fn kind() -> Kind {
    Kind {
        name: "webhook",
        direction: Direction::Push,
        description: "signed CloudEvents POSTed to the department's HTTPS endpoint (Standard Webhooks)",
        validate: |t| crate::settings::<WebhookConfig>(t)?.validate(),
        build: Some(build),
        validate_inbound: None,
        build_inbound: None,
    }
}

fn build(settings: &toml::Table, ctx: &BuildContext<'_>) -> Result<Box<dyn Outbound>, AdapterError> {
    let config: WebhookConfig = crate::settings(settings)?;
    config.validate()?;
    Ok(Box::new(WebhookSink::build(&config, ctx)?))
}
