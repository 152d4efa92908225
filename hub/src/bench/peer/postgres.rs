//! `--peer postgres`: what a city would otherwise build, written as an application would. The same
//! records, over as many connections, go into a PostgreSQL exchange table with one outbox row for
//! each of four subscribers, in one transaction each (`synchronous_commit` as the server has
//! it). No validation, grants, audit or TLS: the hub does all of those on top.

use std::sync::Arc;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use sqlx::postgres::PgPoolOptions;
use sqlx::AssertSqlSafe;
use tokio::time::Instant;

use super::SUBSCRIBERS;
use crate::bench::load::Outcome;
use crate::bench::records::Generator;
use crate::bench::{BenchArgs, Scenario};

/// Runs the peer for the configured connections and duration.
pub async fn run(args: &BenchArgs) -> Result<Outcome> {
    let pool = PgPoolOptions::new()
        .max_connections(args.connections as u32)
        .connect(&args.peer_url)
        .await
        .with_context(|| "connecting to the --peer-url PostgreSQL".to_owned())?;
    let t = format!("hub_bench_{}", std::process::id());
    for sql in [
        format!("CREATE TABLE {t}_records (id bigserial PRIMARY KEY, key text UNIQUE NOT NULL, body jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"),
        format!("CREATE TABLE {t}_outbox (id bigserial PRIMARY KEY, record_id bigint NOT NULL, subscription text NOT NULL, state text NOT NULL DEFAULT 'pending', next_attempt_at timestamptz NOT NULL DEFAULT now())"),
        format!("CREATE INDEX ON {t}_outbox (subscription, state, next_attempt_at)"),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(&pool).await?;
    }
    let gen = Arc::new(Generator::new(Scenario::Publish));
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (pool, gen, t) = (pool.clone(), gen.clone(), t.clone());
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut samples) = (0u64, 0u64, Vec::new());
            let insert_record = format!("INSERT INTO {t}_records (key, body) VALUES ($1, $2::jsonb) RETURNING id");
            let rows = SUBSCRIBERS.iter().map(|s| format!("($1, '{s}')")).collect::<Vec<_>>().join(", ");
            let insert_outbox = format!("INSERT INTO {t}_outbox (record_id, subscription) VALUES {rows}");
            while Instant::now() < deadline {
                let req = gen.publish(true);
                let key = serde_json::from_slice::<serde_json::Value>(&req.body)
                    .ok()
                    .and_then(|v| v["registration_no"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let body = String::from_utf8(req.body).unwrap_or_default();
                let began = Instant::now();
                let result: Result<(), sqlx::Error> = async {
                    let mut tx = pool.begin().await?;
                    let (id,): (i64,) = sqlx::query_as(AssertSqlSafe(insert_record.clone()))
                        .bind(&key)
                        .bind(&body)
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(insert_outbox.clone())).bind(id).execute(&mut *tx).await?;
                    tx.commit().await
                }
                .await;
                if began < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        ok += 1;
                        let _ = h.record(began.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        if samples.len() < 3 {
                            samples.push(e.to_string());
                        }
                    }
                }
            }
            (h, ok, errors, samples)
        }));
    }
    let mut out = Outcome::empty(args.duration)?;
    for task in tasks {
        out.add(task.await?)?;
    }
    for suffix in ["outbox", "records"] {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {t}_{suffix}"))).execute(&pool).await?;
    }
    Ok(out)
}
