//! Publishes delivery batches with publisher confirms on one long-lived channel, reconnecting
//! after any failure.

use async_trait::async_trait;
use cloudevents::AttributesReader as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use super::config::AmqpOutbound;
use crate::envelope::CLOUDEVENTS_JSON;
use crate::{Envelope, Outbound, Outcome};

/// The outbound side: an exchange on the department's broker.
pub struct AmqpSink {
    url: String,
    config: AmqpOutbound,
    /// The connection and its confirm-mode channel, opened on first use.
    link: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpSink {
    /// A sink publishing to `url`.
    pub fn new(url: String, config: AmqpOutbound) -> Self {
        Self { url, config, link: Mutex::new(None) }
    }

    async fn open(&self) -> Result<(Connection, Channel), String> {
        let conn = super::connect(&self.url).await?;
        let channel = conn.create_channel().await.map_err(|e| format!("broker channel: {e}"))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirm mode: {e}"))?;
        Ok((conn, channel))
    }

    async fn publish(&self, channel: &Channel, batch: &[Envelope]) -> Result<Outcome, lapin::Error> {
        let mut confirms = Vec::with_capacity(batch.len());
        for e in batch {
            let props = BasicProperties::default()
                .with_message_id(e.id().into())
                .with_content_type(CLOUDEVENTS_JSON.into())
                .with_delivery_mode(2)
                .with_type(e.event().ty().into());
            let options = BasicPublishOptions { mandatory: true, ..Default::default() };
            let exchange = self.config.exchange.as_str().into();
            let key = self.config.routing_key.as_str().into();
            confirms.push(channel.basic_publish(exchange, key, options, e.json(), props).await?);
        }
        let mut outcome = Outcome::Delivered;
        for c in confirms {
            match c.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => {
                    outcome =
                        Outcome::Retry { reason: "no queue is bound for the routing key".into(), retry_after: None }
                }
                Confirmation::Nack(_) => {
                    outcome = Outcome::Retry { reason: "the broker refused the message".into(), retry_after: None }
                }
                Confirmation::NotRequested => {
                    outcome = Outcome::Retry { reason: "the channel is not in confirm mode".into(), retry_after: None }
                }
            }
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Outbound for AmqpSink {
    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let mut link = self.link.lock().await;
        if link.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            match self.open().await {
                Ok(l) => *link = Some(l),
                Err(reason) => return Outcome::Retry { reason, retry_after: None },
            }
        }
        let Some((_, channel)) = link.as_ref() else {
            return Outcome::Retry { reason: "no broker connection".into(), retry_after: None };
        };
        match self.publish(channel, batch).await {
            Ok(o) => o,
            Err(e) => {
                // Start afresh next time: a channel that failed mid-batch may have lost confirms.
                *link = None;
                Outcome::Retry { reason: format!("broker: {e}"), retry_after: None }
            }
        }
    }

    async fn health(&self) -> Result<(), String> {
        let conn = super::connect(&self.url).await?;
        let channel = conn.create_channel().await.map_err(|e| format!("broker channel: {e}"))?;
        // Passive declares only look: the exchange (or, on the default exchange, the queue) exists.
        let r = if self.config.exchange.is_empty() {
            let options = QueueDeclareOptions { passive: true, ..Default::default() };
            channel
                .queue_declare(self.config.routing_key.as_str().into(), options, FieldTable::default())
                .await
                .map(|_| ())
        } else {
            let options = ExchangeDeclareOptions { passive: true, ..Default::default() };
            channel
                .exchange_declare(
                    self.config.exchange.as_str().into(),
                    lapin::ExchangeKind::Direct,
                    options,
                    FieldTable::default(),
                )
                .await
        };
        let _ = conn.close(200, "health check done".into()).await;
        r.map_err(|e| format!("broker: {e}"))
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch
    }
}
