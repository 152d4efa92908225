//! The peers a city could use instead of the hub, each measured in the same run with the same
//! records: `postgres` (an exchange table written by an application through a pool, one
//! transaction per record), `pgbench` (the same table shape driven by the real `pgbench`, one
//! prepared statement per record) and `rabbitmq` (persistent messages with publisher confirms,
//! fanned out to four quorum queues). None validates, checks grants, audits or speaks TLS.

mod pgbench;
mod postgres;
mod rabbitmq;

use anyhow::{Context, Result};
use sqlx::AssertSqlSafe;

use super::load::Outcome;
use super::BenchArgs;

/// The four subscribers of a marriage registration that get a copy (the fifth, a feed, needs none).
const SUBSCRIBERS: [&str; 4] = ["family-planning", "public-security", "hrss", "state-tax"];

/// Peers measured in the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// A PostgreSQL exchange table: record + 4 outbox rows per transaction, through a pool.
    Postgres,
    /// The real `pgbench -M prepared`: one statement per record writes it and its 4 outbox rows.
    Pgbench,
    /// RabbitMQ: persistent messages, publisher confirms, a fanout exchange on 4 quorum queues.
    Rabbitmq,
}

impl Peer {
    /// Its key in the report (`peer_KEY`, `ratio_to_KEY`) and its row's name.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Peer::Postgres => ("postgres", "postgres exchange table"),
            Peer::Pgbench => ("pgbench", "pgbench -M prepared"),
            Peer::Rabbitmq => ("rabbitmq", "rabbitmq quorum x4"),
        }
    }

    /// Runs the peer for the configured connections and duration.
    pub async fn run(self, args: &BenchArgs) -> Result<Outcome> {
        match self {
            Peer::Postgres => postgres::run(args).await,
            Peer::Pgbench => pgbench::run(args).await,
            Peer::Rabbitmq => rabbitmq::run(args).await,
        }
    }
}

/// A database of its own for a `--engine postgres` run, on the `--peer-url` server.
pub struct Database {
    /// Its URL (given to the hub nodes as `HUB_DATABASE_URL`).
    pub url: String,
    admin: String,
    name: String,
}

impl Database {
    /// Creates `hub_bench_db_PID` on the server of `admin`.
    pub async fn create(admin: &str) -> Result<Self> {
        use sqlx::Connection as _;
        let name = format!("hub_bench_db_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin).await.context("connecting to the --peer-url PostgreSQL")?;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut conn).await?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
        let (server, _) = base.rsplit_once('/').context("--peer-url names no database")?;
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        Ok(Self { url, admin: admin.to_owned(), name })
    }

    /// Drops it (the hub nodes have stopped).
    pub async fn drop_now(self) {
        use sqlx::Connection as _;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
                eprintln!("could not drop the benchmark database {}: {e}", self.name);
            }
        }
    }
}
