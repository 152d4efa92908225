//! The department's database, PostgreSQL or MySQL/MariaDB, behind one small enum: the two
//! dialects differ only in a few statements, which `inbound` and `outbound` spell out per engine.

use std::time::Duration;

use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, MySqlPool, PgPool};

use crate::{AdapterError, Outcome};

/// A pool on the department's database; connections open on first use.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL.
    Pg(PgPool),
    /// MySQL or MariaDB.
    My(MySqlPool),
}

/// How long a statement may wait for a connection before the attempt counts as failed.
const ACQUIRE: Duration = Duration::from_secs(5);

impl Db {
    /// A lazily connecting pool for `url` (no I/O here, so a department database that is down
    /// does not stop the hub from starting).
    pub fn lazy(url: &str) -> Result<Self, AdapterError> {
        let bad = |e: sqlx::Error| AdapterError::Build(format!("database url: {}", redact(&e.to_string())));
        match url.split("://").next() {
            Some("postgres" | "postgresql") => Ok(Db::Pg(
                PgPoolOptions::new().max_connections(2).acquire_timeout(ACQUIRE).connect_lazy(url).map_err(bad)?,
            )),
            Some("mysql" | "mariadb") => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                Ok(Db::My(
                    MySqlPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(ACQUIRE)
                        .connect_lazy(&url)
                        .map_err(bad)?,
                ))
            }
            _ => Err(AdapterError::Config("the database url must be postgres://... or mysql://...".into())),
        }
    }

    /// Reachable, and the table is there and readable.
    pub async fn health(&self, table: &str) -> Result<(), String> {
        let sql = format!("SELECT 1 FROM {table} WHERE 1 = 0");
        let r = match self {
            Db::Pg(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
            Db::My(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
        };
        r.map_err(|e| format!("table {table}: {}", describe(&e)))
    }
}

/// What a failed statement means for a delivery: bad data (SQLSTATE classes 22 and 23) will not
/// get better by retrying; everything else (connection, lock timeout, a table being migrated)
/// may.
pub fn outcome_of(e: &sqlx::Error) -> Outcome {
    let reason = describe(e);
    match e {
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")) => {
            Outcome::Reject { reason }
        }
        _ => Outcome::Retry { reason, retry_after: None },
    }
}

/// The error without values: database messages can quote the offending value (a name, an ID).
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("database error SQLSTATE {code}"),
            None => "database error".to_owned(),
        },
        sqlx::Error::PoolTimedOut => "no database connection within 5 s".to_owned(),
        sqlx::Error::Io(io) => format!("database connection: {io}"),
        other => redact(&other.to_string()),
    }
}

/// Removes a password from anything that may quote the URL.
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***{}", &text[..s], &text[a..]),
        _ => text.to_owned(),
    }
}
