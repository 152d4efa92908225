//! Inserts delivered events into the department's exchange table, one row per event, all of a
//! batch in one transaction, idempotent on `event_id`.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;

use super::config::SqlOutbound;
use super::db::describe;
use super::db::{outcome_of, Db};
use crate::{is_sql_identifier, Envelope, Holdings, Outbound, Outcome};

/// Ids asked about in one statement when reading the table back (MySQL has no array binds).
const READ_BACK_CHUNK: usize = 500;

/// The outbound side of an exchange table.
pub struct SqlSink {
    db: Db,
    config: SqlOutbound,
}

impl SqlSink {
    /// A sink into `db`.
    pub fn new(db: Db, config: SqlOutbound) -> Self {
        Self { db, config }
    }
}

/// The row of one event: `event_id` and the record's top-level fields as columns. A field name
/// that is no plain SQL name can never be inserted, so the event is rejected.
fn row_of(e: &Envelope) -> Result<Map<String, Value>, Outcome> {
    let Some(Value::Object(data)) = e.data() else {
        return Err(Outcome::Reject { reason: "the record (after mapping) is not a JSON object".into() });
    };
    if let Some(bad) = data.keys().find(|k| !is_sql_identifier(k) || k.contains('.') || *k == "event_id") {
        return Err(Outcome::Reject { reason: format!("field {bad:?} cannot be a column of the exchange table") });
    }
    let mut row = Map::with_capacity(data.len() + 1);
    row.insert("event_id".into(), Value::String(e.id().to_owned()));
    row.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(row)
}

#[async_trait]
impl Outbound for SqlSink {
    async fn deliver(&self, batch: &[Envelope]) -> Outcome {
        let rows = match batch.iter().map(row_of).collect::<Result<Vec<_>, _>>() {
            Ok(rows) => rows,
            Err(outcome) => return outcome,
        };
        let t = &self.config.table;
        let result: Result<(), sqlx::Error> = async {
            match &self.db {
                Db::Pg(pool) => {
                    let mut tx = pool.begin().await?;
                    for row in &rows {
                        let cols = row.keys().cloned().collect::<Vec<_>>().join(", ");
                        // The table's own row type converts each JSON value to its column's type.
                        let sql = format!(
                            "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_record(NULL::{t}, $1::json) \
                             ON CONFLICT (event_id) DO NOTHING"
                        );
                        let json = Value::Object(row.clone()).to_string();
                        sqlx::query(AssertSqlSafe(sql)).bind(json).execute(&mut *tx).await?;
                    }
                    tx.commit().await
                }
                Db::My(pool) => {
                    let mut tx = pool.begin().await?;
                    for row in &rows {
                        let cols: Vec<String> = row.keys().map(|k| format!("`{k}`")).collect();
                        let marks = vec!["?"; cols.len()].join(", ");
                        let sql = format!(
                            "INSERT INTO {t} ({}) VALUES ({marks}) ON DUPLICATE KEY UPDATE event_id = event_id",
                            cols.join(", ")
                        );
                        let mut q = sqlx::query(AssertSqlSafe(sql));
                        for v in row.values() {
                            q = match v {
                                Value::Null => q.bind(None::<String>),
                                Value::Bool(b) => q.bind(*b),
                                Value::Number(n) => match n.as_i64() {
                                    Some(i) => q.bind(i),
                                    None => q.bind(n.as_f64()),
                                },
                                Value::String(s) => q.bind(s.clone()),
                                other => q.bind(other.to_string()),
                            };
                        }
                        q.execute(&mut *tx).await?;
                    }
                    tx.commit().await
                }
            }
        }
        .await;
        match result {
            Ok(()) => Outcome::Delivered,
            Err(e) => outcome_of(&e),
        }
    }

    async fn health(&self) -> Result<(), String> {
        self.db.health(&self.config.table).await
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch
    }

    /// The rows of these ids in the exchange table, whatever the department did with the rest of
    /// each row since (a status column, a receipt).
    async fn holdings(&self, ids: &[String]) -> Option<Result<Holdings, String>> {
        let t = &self.config.table;
        let mut out = Holdings::default();
        for chunk in ids.chunks(READ_BACK_CHUNK) {
            let found: Result<Vec<String>, sqlx::Error> = match &self.db {
                Db::Pg(pool) => {
                    let sql = format!("SELECT event_id FROM {t} WHERE event_id = ANY($1)");
                    sqlx::query_scalar(AssertSqlSafe(sql)).bind(chunk).fetch_all(pool).await
                }
                Db::My(pool) => {
                    let marks = vec!["?"; chunk.len()].join(", ");
                    let sql = format!("SELECT event_id FROM {t} WHERE event_id IN ({marks})");
                    chunk.iter().fold(sqlx::query_scalar(AssertSqlSafe(sql)), |q, id| q.bind(id)).fetch_all(pool).await
                }
            };
            match found {
                Ok(found) => out.held.extend(found),
                Err(e) => return Some(Err(format!("table {t}: {}", describe(&e)))),
            }
        }
        Some(Ok(out))
    }
}
