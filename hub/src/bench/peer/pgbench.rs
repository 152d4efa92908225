//! `--peer pgbench`: the strongest plain-PostgreSQL exchange table, driven by the real `pgbench`
//! rather than our own client. One prepared statement per record inserts the record row and its
//! four outbox rows (a data-modifying CTE, so one round trip and one commit), over as many
//! clients as the hub has connections, up to what the server can still accept. The body is the
//! bench's ~1 KiB marriage with its key spliced in, so the server parses a fresh `jsonb` each
//! time (a constant would be folded once into the prepared plan). Latencies come from pgbench's
//! per-transaction log, counted only after the warm-up.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::AssertSqlSafe;

use super::SUBSCRIBERS;
use crate::bench::load::Outcome;
use crate::bench::records::{marriage, registration_no};
use crate::bench::BenchArgs;

/// Connections pgbench leaves the server for everyone else (the hub's own run is over by then).
const SPARE_CONNECTIONS: i64 = 5;

/// Runs `pgbench` for the warm-up plus the duration and measures the part after the warm-up.
pub async fn run(args: &BenchArgs) -> Result<Outcome> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&args.peer_url)
        .await
        .context("connecting to the --peer-url PostgreSQL")?;
    let (free,): (i64,) = sqlx::query_as(
        "SELECT current_setting('max_connections')::bigint - current_setting('superuser_reserved_connections')::bigint
                - (SELECT count(*) FROM pg_stat_activity)",
    )
    .fetch_one(&pool)
    .await?;
    let clients = (args.connections as i64).min(free - SPARE_CONNECTIONS).max(1);
    if clients < args.connections as i64 {
        eprintln!("pgbench: {clients} clients (the server takes no more), not {}", args.connections);
    }
    let t = format!("hub_pgbench_{}", std::process::id());
    for sql in [
        format!("CREATE TABLE {t}_records (id bigserial PRIMARY KEY, key text UNIQUE NOT NULL, body jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"),
        format!("CREATE TABLE {t}_outbox (id bigserial PRIMARY KEY, record_id bigint NOT NULL, subscription text NOT NULL, state text NOT NULL DEFAULT 'pending', next_attempt_at timestamptz NOT NULL DEFAULT now())"),
        format!("CREATE INDEX ON {t}_outbox (subscription, state, next_attempt_at)"),
        format!("CREATE SEQUENCE {t}_keys"),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(&pool).await?;
    }
    let dir = tempfile::tempdir()?;
    let result = drive(args, clients, &t, dir.path()).await;
    for sql in [format!("DROP TABLE {t}_outbox, {t}_records"), format!("DROP SEQUENCE {t}_keys")] {
        sqlx::query(AssertSqlSafe(sql)).execute(&pool).await?;
    }
    result
}

/// The pgbench script: one statement per transaction.
fn script(t: &str) -> Result<String> {
    let template = registration_no(0);
    let body = serde_json::to_string(&marriage(0, true))?;
    if body.contains('\'') || !body.contains(&template) {
        bail!("the sample record cannot be written as an SQL literal");
    }
    let values = SUBSCRIBERS.iter().map(|s| format!("('{s}')")).collect::<Vec<_>>().join(", ");
    Ok(format!(
        "WITH k AS (SELECT 'J' || nextval('{t}_keys') AS key), \
         r AS (INSERT INTO {t}_records (key, body) SELECT k.key, replace('{body}', '{template}', k.key)::jsonb FROM k RETURNING id) \
         INSERT INTO {t}_outbox (record_id, subscription) SELECT r.id, s.name FROM r CROSS JOIN (VALUES {values}) AS s(name);\n"
    ))
}

async fn drive(args: &BenchArgs, clients: i64, t: &str, dir: &Path) -> Result<Outcome> {
    let script_path = dir.join("exchange.sql");
    std::fs::write(&script_path, script(t)?)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(clients as usize);
    let total = args.warmup + args.duration;
    let secs = total.as_secs_f64().ceil() as u64;
    let prefix = dir.join("log");
    let mut cmd = Command::new("pgbench");
    cmd.args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .args(["-c", &clients.to_string(), "-j", &threads.to_string(), "-T", &secs.to_string()])
        .arg("-f")
        .arg(&script_path)
        .arg(&args.peer_url);
    let started = std::time::SystemTime::now();
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running pgbench (Debian's postgresql-client package has it)")?;
    if !output.status.success() {
        bail!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    // The window starts from pgbench's own first transaction, not from when it was spawned: on
    // a loaded machine the process can take longer to start than the warm-up lasts.
    let mut ended: Vec<(u64, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("log")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            // client_id transaction_no time script_no time_epoch time_us: `time` is the latency
            // (µs), the epoch pair when the transaction ended.
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(latency), Some(sec), Some(usec)) = (f.get(2), f.get(4), f.get(5)) else { continue };
            let (Ok(latency), Ok(sec), Ok(usec)) = (latency.parse::<u64>(), sec.parse::<u64>(), usec.parse::<u64>())
            else {
                // "failed" or "skipped" in the latency column.
                continue;
            };
            ended.push((sec * 1_000_000 + usec, latency));
        }
    }
    let spawned = started.duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let first = ended.iter().map(|(at, latency)| at.saturating_sub(*latency)).min().unwrap_or(spawned).max(spawned);
    let measure_from = first + args.warmup.as_micros() as u64;
    let measure_to = measure_from + args.duration.as_micros() as u64;
    let mut out = Outcome::empty(args.duration)?;
    out.errors = failed;
    for (at, latency) in ended {
        if at >= measure_from && at < measure_to {
            out.ok += 1;
            let _ = out.histogram.record(latency.max(1));
        }
    }
    if out.ok == 0 {
        bail!("pgbench logged no transaction in the measured window: {}", stdout.trim());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_is_one_statement_with_the_key_spliced_into_the_body() {
        let s = super::script("t").unwrap();
        assert_eq!(s.matches(';').count(), 1, "{s}");
        assert!(s.contains("replace('{\""), "{s}");
        assert!(s.contains("('family-planning'), ('public-security'), ('hrss'), ('state-tax')"), "{s}");
    }
}
