//! `--peer rabbitmq`: a message broker doing the exchange's fan-out, in its durable form.
//! Persistent messages with publisher confirms to a fanout exchange bound to four quorum queues
//! (replicated, fsynced logs: what a broker needs before it may say "stored"). Each connection
//! publishes on its own confirm channel with up to 64 messages awaiting their confirm; a
//! message's latency runs from its publish to its confirm. The exchange and queues are the run's
//! own and are deleted after it.

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::time::Instant;

use super::SUBSCRIBERS;
use crate::bench::load::Outcome;
use crate::bench::records::Generator;
use crate::bench::{BenchArgs, Scenario};

/// Messages each publisher has in flight (awaiting their confirm).
const WINDOW: usize = 64;

async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(url, ConnectionProperties::default().with_connection_name("hub-bench".into()))
        .await
        .context("connecting to the --peer-amqp-url RabbitMQ")
}

/// Runs the peer for the configured connections and duration.
pub async fn run(args: &BenchArgs) -> Result<Outcome> {
    let admin = connect(&args.peer_amqp_url).await?;
    let channel = admin.create_channel().await?;
    let exchange = format!("hub_bench_{}", std::process::id());
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let queues: Vec<String> = SUBSCRIBERS.iter().map(|s| format!("{exchange}_{s}")).collect();
    for q in &queues {
        channel.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), quorum.clone()).await?;
        channel
            .queue_bind(
                q.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let result = drive(args, &exchange).await;
    for q in &queues {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
    let _ = admin.close(200, "benchmark done".into()).await;
    result
}

async fn drive(args: &BenchArgs, exchange: &str) -> Result<Outcome> {
    let gen = Arc::new(Generator::new(Scenario::Publish));
    // Every connection open before the clock starts: opening 256 takes a while.
    let mut links = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let conn = connect(&args.peer_amqp_url).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        links.push((conn, channel));
    }
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let mut tasks = Vec::new();
    for (conn, channel) in links {
        let (gen, exchange) = (gen.clone(), exchange.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors, mut samples) = (0u64, 0u64, Vec::<String>::new());
            let mut in_flight = VecDeque::with_capacity(WINDOW);
            let mut sending = true;
            loop {
                sending = sending && Instant::now() < deadline;
                if sending && in_flight.len() < WINDOW {
                    let body = gen.publish(true).body;
                    let props = BasicProperties::default().with_delivery_mode(2);
                    let began = Instant::now();
                    match channel
                        .basic_publish(
                            exchange.as_str().into(),
                            "".into(),
                            BasicPublishOptions::default(),
                            &body,
                            props,
                        )
                        .await
                    {
                        Ok(confirm) => in_flight.push_back((began, confirm)),
                        Err(e) => {
                            errors += 1;
                            samples.push(e.to_string());
                            break;
                        }
                    }
                    continue;
                }
                // The window is full (or the run is over): wait for the oldest confirm.
                let Some((began, confirm)) = in_flight.pop_front() else { break };
                let counted = began >= measure_from && began < deadline;
                match confirm.await {
                    Ok(Confirmation::Ack(None)) if counted => {
                        ok += 1;
                        let _ = h.record(began.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(Confirmation::Ack(None)) => {}
                    Ok(other) => {
                        errors += 1;
                        if samples.len() < 3 {
                            samples.push(format!("{other:?}"));
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if samples.len() < 3 {
                            samples.push(e.to_string());
                        }
                    }
                }
            }
            let _ = conn.close(200, "benchmark done".into()).await;
            anyhow::Ok((h, ok, errors, samples))
        }));
    }
    let mut out = Outcome::empty(args.duration)?;
    for task in tasks {
        out.add(task.await??)?;
    }
    Ok(out)
}
