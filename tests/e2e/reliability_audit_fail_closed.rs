//! Audit fail-closed, on both engines: a read, lookup, history or feed read whose audit entry the
//! database refuses to store returns a problem and no data. The refusal is the database's own (a
//! trigger that aborts every insert into the audit table, made beside the running hub, as a full
//! or broken disk would refuse it); once it is gone the same requests answer with the record,
//! so the refusals were the audit's and nothing else's.

use anyhow::Result;
use harness::{free_port, marriage, resident_id, Client, HubProcess, PgDatabase, Reply, TestConfig};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_hub");
const NO: &str = "J440184-2026-000777";

/// How the test makes the database refuse audit entries, and lets it take them again.
enum Refusal {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Refusal {
    async fn set(&self, refuse: bool) -> Result<()> {
        match self {
            Refusal::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn.execute_batch(if refuse {
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END;"
                } else {
                    "DROP TRIGGER refuse_audit;"
                })?;
            }
            Refusal::Postgres(url) => {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(url).await?;
                let sql = if refuse {
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;
                     CREATE TRIGGER refuse_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION refuse_audit();"
                } else {
                    "DROP TRIGGER refuse_audit ON audit; DROP FUNCTION refuse_audit();"
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
            }
        }
        Ok(())
    }
}

/// The four audited reads of one record, each as the principal allowed to make it.
async fn reads(civil: &Client, fp: &Client, hrss: &Client, subject: &str) -> Result<Vec<(&'static str, Reply)>> {
    Ok(vec![
        ("read", fp.get(&format!("/v1/records/marriage-registration/{NO}?purpose=birth-service-registration")).await?),
        ("lookup", fp.post("/v1/lookup", &json!({"subject": subject, "purpose": "birth-service-registration"})).await?),
        ("history", civil.get(&format!("/v1/records/marriage-registration/{NO}/history")).await?),
        ("feed", hrss.get("/v1/feeds/marriage-to-hrss").await?),
    ])
}

async fn fail_closed(hub: &HubProcess, refusal: Refusal) -> Result<()> {
    let (civil, fp, hrss) = (hub.client("civil-affairs"), hub.client("family-planning"), hub.client("hrss"));
    let (a, b) = (resident_id("19900315", 771), resident_id("19920708", 772));
    let r = civil.publish("marriage-registration", &marriage(NO, &a, &b)).await?;
    assert_eq!(r.status, 201, "{}", r.text);

    refusal.set(true).await?;
    for (what, r) in reads(&civil, &fp, &hrss, &b).await? {
        assert!(r.status >= 500, "{what}: {} {}", r.status, r.text);
        assert!(r.content_type.starts_with("application/problem+json"), "{what}: {}", r.content_type);
        for personal in [NO, a.as_str(), b.as_str(), "陈志明"] {
            assert!(!r.text.contains(personal), "{what} answered with data its audit entry did not cover: {}", r.text);
        }
    }

    refusal.set(false).await?;
    for (what, r) in reads(&civil, &fp, &hrss, &b).await? {
        assert_eq!(r.status, 200, "{what} once the audit takes entries again: {}", r.text);
        assert!(r.text.contains(&b), "{what}: {}", r.text);
    }
    Ok(())
}

fn config(engine: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    TestConfig::conghua()
        .replace("engine = \"sqlite\"", &format!("engine = \"{engine}\""))
        .without_checks()
        .only_subscription("marriage-to-hrss")
        .write()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_read_whose_audit_entry_cannot_be_stored_returns_no_data() -> Result<()> {
    let (_cfg_dir, cfg) = config("sqlite");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let hub = HubProcess::start_config(BIN, &cfg, &data, free_port()?, &[], &[]).await?;
    fail_closed(&hub, Refusal::Sqlite(data.join("hub.db"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_whose_audit_entry_cannot_be_stored_returns_no_data() -> Result<()> {
    let Some(db) = PgDatabase::create("audit fail-closed on PostgreSQL").await? else { return Ok(()) };
    let (_cfg_dir, cfg) = config("postgres");
    let dir = tempfile::tempdir()?;
    let env = [("HUB_DATABASE_URL", db.url.as_str())];
    let hub = HubProcess::start_config(BIN, &cfg, &dir.path().join("data"), free_port()?, &[], &env).await?;
    fail_closed(&hub, Refusal::Postgres(db.url.clone())).await
}
