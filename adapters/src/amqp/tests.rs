//! Against the real RabbitMQ of the machine when `HUB_TEST_AMQP_URL` is set.

use std::sync::Mutex;

use async_trait::async_trait;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;

use super::*;
use crate::testkit::{run_inbound_conformance, run_target_conformance, InboundUpstream, OutboundTarget};

fn url() -> Option<String> {
    match std::env::var("HUB_TEST_AMQP_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: HUB_TEST_AMQP_URL is not set");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}.{}.{}", std::process::id(), n % 1_000_000_000)
}

struct Broker {
    url: String,
    _conn: Connection,
    channel: Channel,
    queue: String,
}

impl Broker {
    async fn new(url: &str) -> Self {
        let conn = connect(url).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let queue = unique("hub-test");
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .unwrap();
        Self { url: url.to_owned(), _conn: conn, channel, queue }
    }

    /// Ready messages once no consumer is attached (so unacked ones are back in the queue).
    async fn ready(&self) -> usize {
        for _ in 0..200 {
            let q = self
                .channel
                .queue_declare(
                    self.queue.as_str().into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if q.consumer_count() == 0 {
                return q.message_count() as usize;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a consumer is still attached to {}", self.queue);
    }

    async fn delete(&self) {
        self.channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    }
}

#[async_trait]
impl InboundUpstream for Broker {
    async fn offer(&self, records: &[Value]) {
        for r in records {
            let props =
                BasicProperties::default().with_message_id(format!("m-{}", r["n"]).into()).with_delivery_mode(2);
            self.channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    r.to_string().as_bytes(),
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    async fn pending(&self) -> usize {
        self.ready().await
    }
    async fn after_crash(&self) {
        // The dead consumer's connection closes asynchronously; its unacked message comes back then.
        for _ in 0..100 {
            if self.ready().await > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    fn adapter(&self) -> Box<dyn crate::Inbound> {
        let config =
            AmqpInbound { url: Some(self.url.clone()), url_env: None, queue: self.queue.clone(), prefetch: 10 };
        Box::new(AmqpSource::new(self.url.clone(), config))
    }
}

#[tokio::test]
async fn queue_passes_the_inbound_suite() {
    let Some(url) = url() else { return };
    let broker = Broker::new(&url).await;
    run_inbound_conformance(&broker).await;
    broker.delete().await;
}

struct Target {
    broker: Broker,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl OutboundTarget for Target {
    fn adapter(&self) -> Box<dyn crate::Outbound> {
        let b = &self.broker;
        let config = AmqpOutbound {
            url: Some(b.url.clone()),
            url_env: None,
            exchange: String::new(),
            routing_key: b.queue.clone(),
            max_batch: 3,
        };
        Box::new(AmqpSink::new(b.url.clone(), config))
    }
    fn unreachable(&self) -> Box<dyn crate::Outbound> {
        let closed = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned();
        let config = AmqpOutbound {
            url: Some(closed.clone()),
            url_env: None,
            exchange: String::new(),
            routing_key: "x".into(),
            max_batch: 3,
        };
        Box::new(AmqpSink::new(closed, config))
    }
    async fn received(&self) -> Vec<String> {
        let ch = &self.broker.channel;
        while let Some(m) =
            ch.basic_get(self.broker.queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let v: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            assert_eq!(
                m.delivery.properties.message_id().as_ref().map(|s| s.as_str()),
                v["id"].as_str(),
                "message-id is the event id"
            );
            assert_eq!(m.delivery.properties.delivery_mode(), &Some(2), "persistent");
            self.seen.lock().unwrap().push(v["id"].as_str().unwrap().to_owned());
        }
        self.seen.lock().unwrap().clone()
    }
    fn dedupes(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn exchange_passes_the_target_suite_and_unroutable_is_retry() {
    let Some(url) = url() else { return };
    let target = Target { broker: Broker::new(&url).await, seen: Mutex::default() };
    run_target_conformance(&target).await;
    target.broker.delete().await;

    // The queue is gone: the broker returns the mandatory message, which is no delivery.
    let adapter = target.adapter();
    match adapter.deliver(&[crate::testkit::envelope(60)]).await {
        crate::Outcome::Retry { reason, .. } => assert!(reason.contains("no queue"), "{reason}"),
        other => panic!("an unroutable message gave {other:?}"),
    }
    assert!(adapter.health().await.is_err(), "health sees the missing queue");
}
