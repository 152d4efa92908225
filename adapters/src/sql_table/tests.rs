//! Against the real PostgreSQL and MariaDB of the machine, when `HUB_TEST_POSTGRES_URL` and
//! `HUB_TEST_MYSQL_URL` are set; without them each test says it skipped.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::db::Db;
use super::*;
use crate::testkit::{run_inbound_conformance, run_target_conformance, InboundUpstream, OutboundTarget};

fn url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let n: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

async fn exec(db: &Db, sql: String) {
    match db {
        Db::Pg(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
        Db::My(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
    }
    .expect("test statement");
}

async fn count(db: &Db, sql: String) -> i64 {
    match db {
        Db::Pg(p) => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).fetch_one(p).await,
        Db::My(p) => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).fetch_one(p).await,
    }
    .expect("test query")
}

struct Staging {
    url: String,
    db: Db,
    table: String,
}

impl Staging {
    async fn new(url: &str) -> Self {
        let db = Db::lazy(url).unwrap();
        let table = unique("hub_staging");
        let ddl = match db {
            Db::Pg(_) => format!(
                "CREATE TABLE {table} (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'new', receipt text, \
                 problem text, n bigint, name text, bad boolean)"
            ),
            Db::My(_) => format!(
                "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, status VARCHAR(16) NOT NULL DEFAULT 'new', \
                 receipt TEXT, problem TEXT, n BIGINT, name VARCHAR(100), bad BOOLEAN)"
            ),
        };
        exec(&db, ddl).await;
        Self { url: url.to_owned(), db, table }
    }
}

#[async_trait]
impl InboundUpstream for Staging {
    async fn offer(&self, records: &[Value]) {
        for r in records {
            let bad = if r["bad"] == true { "TRUE" } else { "FALSE" };
            let sql = format!("INSERT INTO {} (n, name, bad) VALUES ({}, 'record', {bad})", self.table, r["n"]);
            exec(&self.db, sql).await;
        }
    }
    async fn pending(&self) -> usize {
        count(&self.db, format!("SELECT COUNT(*) FROM {} WHERE status = 'new'", self.table)).await as usize
    }
    fn adapter(&self) -> Box<dyn crate::Inbound> {
        let config =
            SqlInbound { url: Some(self.url.clone()), url_env: None, table: self.table.clone(), poll_ms: 20, batch: 2 };
        Box::new(SqlSource::new(Db::lazy(&self.url).unwrap(), config))
    }
}

async fn inbound_conformance(url: &str) {
    let staging = Staging::new(url).await;
    run_inbound_conformance(&staging).await;
    // Every row is marked: taken with the receipt, or rejected with the problem and its pointer.
    let taken = count(
        &staging.db,
        format!("SELECT COUNT(*) FROM {} WHERE status = 'taken' AND receipt IS NOT NULL", staging.table),
    )
    .await;
    let rejected = count(
        &staging.db,
        format!("SELECT COUNT(*) FROM {} WHERE status = 'rejected' AND problem LIKE '%/bad%'", staging.table),
    )
    .await;
    assert_eq!((taken, rejected), (7, 1));
    exec(&staging.db, format!("DROP TABLE {}", staging.table)).await;
}

#[tokio::test]
async fn postgres_staging_table_passes_the_inbound_suite() {
    if let Some(url) = url("HUB_TEST_POSTGRES_URL") {
        inbound_conformance(&url).await;
    }
}

#[tokio::test]
async fn mysql_staging_table_passes_the_inbound_suite() {
    if let Some(url) = url("HUB_TEST_MYSQL_URL") {
        inbound_conformance(&url).await;
    }
}

struct Exchange {
    url: String,
    db: Db,
    table: String,
}

#[async_trait]
impl OutboundTarget for Exchange {
    fn adapter(&self) -> Box<dyn crate::Outbound> {
        let config =
            SqlOutbound { url: Some(self.url.clone()), url_env: None, table: self.table.clone(), max_batch: 3 };
        Box::new(SqlSink::new(Db::lazy(&self.url).unwrap(), config))
    }
    fn unreachable(&self) -> Box<dyn crate::Outbound> {
        let closed = match self.db {
            Db::Pg(_) => "postgres://postgres@127.0.0.1:1/test",
            Db::My(_) => "mysql://root@127.0.0.1:1/test",
        };
        let config = SqlOutbound { url: Some(closed.into()), url_env: None, table: self.table.clone(), max_batch: 3 };
        Box::new(SqlSink::new(Db::lazy(closed).unwrap(), config))
    }
    async fn received(&self) -> Vec<String> {
        let sql = format!("SELECT event_id FROM {} ORDER BY seq", self.table);
        match &self.db {
            Db::Pg(p) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_all(p).await,
            Db::My(p) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_all(p).await,
        }
        .expect("exchange rows")
    }
    fn dedupes(&self) -> bool {
        true
    }
    async fn lose(&self, id: &str) {
        let sql = format!("DELETE FROM {} WHERE event_id = '{id}'", self.table);
        exec(&self.db, sql).await;
    }
}

async fn target_conformance(url: &str) {
    let db = Db::lazy(url).unwrap();
    let table = unique("hub_exchange");
    let ddl = match db {
        Db::Pg(_) => format!(
            "CREATE TABLE {table} (seq bigserial, event_id text PRIMARY KEY, registration_no text NOT NULL, kind text)"
        ),
        Db::My(_) => format!(
            "CREATE TABLE {table} (seq BIGINT AUTO_INCREMENT UNIQUE, event_id VARCHAR(100) PRIMARY KEY, \
             registration_no VARCHAR(40) NOT NULL, kind VARCHAR(20))"
        ),
    };
    exec(&db, ddl).await;
    let target = Exchange { url: url.to_owned(), db, table };
    run_target_conformance(&target).await;

    // A row the table cannot take (a value too long for its column) will never fit: Reject.
    exec(&target.db, format!("ALTER TABLE {} ADD COLUMN code VARCHAR(2)", target.table)).await;
    let e = crate::Envelope::new(crate::EnvelopeFields {
        data: serde_json::json!({"registration_no": "J1", "code": "far too long"}),
        ..crate::testkit::envelope_fields(50)
    })
    .unwrap();
    match target.adapter().deliver(&[e]).await {
        crate::Outcome::Reject { reason } => assert!(reason.contains("SQLSTATE 22"), "{reason}"),
        other => panic!("a value too long gave {other:?}"),
    }
    exec(&target.db, format!("DROP TABLE {}", target.table)).await;
}

#[tokio::test]
async fn postgres_exchange_table_passes_the_target_suite() {
    if let Some(url) = url("HUB_TEST_POSTGRES_URL") {
        target_conformance(&url).await;
    }
}

#[tokio::test]
async fn mysql_exchange_table_passes_the_target_suite() {
    if let Some(url) = url("HUB_TEST_MYSQL_URL") {
        target_conformance(&url).await;
    }
}
