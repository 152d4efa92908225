//! Consumes the department's queue with manual acks, one message at a time, reconnecting with a
//! pause after any broker failure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::config::AmqpInbound;
use crate::{AdapterError, Inbound, RecordSink, SinkError};

/// Pause while the hub is unavailable, and the first pause after a broker failure.
const PAUSE: Duration = Duration::from_secs(1);
/// Longest pause between reconnections to a broker that keeps failing.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The inbound side: a queue on the department's broker.
pub struct AmqpSource {
    url: String,
    config: AmqpInbound,
}

/// Why consuming stopped.
enum Stop {
    Cancelled,
    Broker(String),
}

impl AmqpSource {
    /// A source consuming from `url`.
    pub fn new(url: String, config: AmqpInbound) -> Self {
        Self { url, config }
    }

    fn key(d: &Delivery) -> String {
        match d.properties.message_id() {
            Some(id) if !id.as_str().is_empty() => format!("msg:{}", id.as_str()),
            _ => format!("body:{}", hex(&Sha256::digest(&d.data))),
        }
    }

    async fn consume(&self, sink: &dyn RecordSink, shutdown: &CancellationToken) -> Result<(), Stop> {
        let broker = |e: lapin::Error| Stop::Broker(e.to_string());
        let conn = CloseOnDrop(Some(super::connect(&self.url).await.map_err(Stop::Broker)?));
        let conn = conn.0.as_ref().ok_or_else(|| Stop::Broker("no connection".into()))?;
        let result = async {
            let channel = conn.create_channel().await.map_err(broker)?;
            channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await.map_err(broker)?;
            let mut consumer = channel
                .basic_consume(
                    self.config.queue.as_str().into(),
                    "conghua-hub".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Err(Stop::Cancelled),
                    n = consumer.next() => n,
                };
                let delivery = match next {
                    None => return Err(Stop::Broker("the broker ended the consumer".into())),
                    Some(Err(e)) => return Err(broker(e)),
                    Some(Ok(d)) => d,
                };
                let key = Self::key(&delivery);
                let answer = tokio::select! {
                    // Unacked: closing the connection below hands the message back to the queue.
                    _ = shutdown.cancelled() => return Err(Stop::Cancelled),
                    a = sink.publish(&key, &delivery.data) => a,
                };
                match answer {
                    Ok(_) => {
                        delivery.acker.ack(lapin::options::BasicAckOptions::default()).await.map_err(broker)?;
                    }
                    Err(SinkError::Rejected { .. }) => {
                        tracing::warn!(queue = %self.config.queue, "message rejected by the hub; not requeued");
                        let options = BasicRejectOptions { requeue: false };
                        delivery.acker.reject(options).await.map_err(broker)?;
                    }
                    Err(SinkError::Unavailable(why)) => {
                        tracing::warn!(queue = %self.config.queue, %why, "hub unavailable; message requeued");
                        let options = BasicNackOptions { requeue: true, ..Default::default() };
                        delivery.acker.nack(options).await.map_err(broker)?;
                        tokio::select! {
                            _ = shutdown.cancelled() => return Err(Stop::Cancelled),
                            _ = tokio::time::sleep(PAUSE) => {}
                        }
                    }
                }
            }
        }
        .await;
        // Unacked messages go back to the queue when the connection closes.
        let _ = conn.close(200, "hub stopping consumer".into()).await;
        result
    }
}

/// Closes the connection when the consumer is dropped mid-message (its task aborted), so the
/// broker hands unacked messages to the next consumer instead of holding them for a dead one.
struct CloseOnDrop(Option<lapin::Connection>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let (Some(conn), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = conn.close(320, "consumer dropped".into()).await;
            });
        }
    }
}

#[async_trait]
impl Inbound for AmqpSource {
    async fn run(&self, sink: Arc<dyn RecordSink>, shutdown: CancellationToken) -> Result<(), AdapterError> {
        let mut pause = PAUSE;
        while !shutdown.is_cancelled() {
            let started = tokio::time::Instant::now();
            match self.consume(sink.as_ref(), &shutdown).await {
                Err(Stop::Cancelled) | Ok(()) => break,
                Err(Stop::Broker(why)) => {
                    // A connection that lived a while starts the pauses afresh.
                    if started.elapsed() > MAX_PAUSE {
                        pause = PAUSE;
                    }
                    tracing::warn!(queue = %self.config.queue, %why, retry_in_s = pause.as_secs(), "queue not consumed; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        let conn = super::connect(&self.url).await?;
        let channel = conn.create_channel().await.map_err(|e| format!("broker channel: {e}"))?;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let r = channel.queue_declare(self.config.queue.as_str().into(), options, FieldTable::default()).await;
        let _ = conn.close(200, "health check done".into()).await;
        r.map(|_| ()).map_err(|e| format!("queue {}: {e}", self.config.queue))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
