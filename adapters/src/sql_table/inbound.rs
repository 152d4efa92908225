//! Takes `new` rows from the staging table, publishes them, and marks each `taken` (with the
//! receipt) or `rejected` (with the problem) in the transaction that locked it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;

use super::config::SqlInbound;
use super::db::{describe, Db};
use crate::{AdapterError, Inbound, RecordSink, SinkError};

/// Longest pause between attempts on a database that keeps failing.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Columns the hub manages; all others are the record.
const HUB_COLUMNS: [&str; 4] = ["id", "status", "receipt", "problem"];

/// The inbound side of a staging table.
pub struct SqlSource {
    db: Db,
    config: SqlInbound,
}

/// Why a poll stopped early.
enum Stop {
    Cancelled,
    Unavailable,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Db(e)
    }
}

/// What to write back on one row.
enum Mark {
    Taken(String),
    Rejected(String),
}

impl Mark {
    /// The UPDATE for this mark and the text it writes; `p1`/`p2` are the dialect's placeholders.
    fn update(&self, table: &str, p1: &str, p2: &str) -> (String, &str) {
        match self {
            Mark::Taken(r) => (format!("UPDATE {table} SET status = 'taken', receipt = {p1} WHERE id = {p2}"), r),
            Mark::Rejected(p) => (format!("UPDATE {table} SET status = 'rejected', problem = {p1} WHERE id = {p2}"), p),
        }
    }
}

impl SqlSource {
    /// A source over `db`.
    pub fn new(db: Db, config: SqlInbound) -> Self {
        Self { db, config }
    }

    fn key(&self, id: i64) -> String {
        format!("row:{}:{id}", self.config.table)
    }

    /// Publishes what the sink answers for `rows`, and returns the marks to write, in order.
    /// Stops at the first `Unavailable`: the rows from there on stay `new`.
    async fn offer(
        &self,
        rows: &[(i64, String)],
        sink: &dyn RecordSink,
        shutdown: &CancellationToken,
    ) -> Result<(Vec<(i64, Mark)>, bool), Stop> {
        let items: Vec<(String, Vec<u8>)> =
            rows.iter().map(|(id, j)| (self.key(*id), j.clone().into_bytes())).collect();
        let results = tokio::select! {
            r = sink.publish_many(&items) => r,
            // Dropping the transaction rolls back: the rows stay `new`, locked by nobody.
            _ = shutdown.cancelled() => return Err(Stop::Cancelled),
        };
        let mut marks = Vec::with_capacity(rows.len());
        for ((id, _), r) in rows.iter().zip(results) {
            match r {
                Ok(receipt) => marks.push((*id, Mark::Taken(receipt.to_string()))),
                Err(SinkError::Rejected { problem }) => marks.push((*id, Mark::Rejected(problem.to_string()))),
                Err(SinkError::Unavailable(_)) => return Ok((marks, true)),
            }
        }
        Ok((marks, false))
    }

    /// One transaction: lock up to `batch` new rows, publish, mark. Returns how many were marked.
    async fn poll(&self, sink: &dyn RecordSink, shutdown: &CancellationToken) -> Result<usize, Stop> {
        let t = &self.config.table;
        let limit = self.config.batch as i64;
        // The two dialects differ in how a row becomes JSON and in placeholders; the transaction
        // (lock, publish, mark, commit) is the same, but sqlx types it per database.
        macro_rules! take {
            ($pool:expr, $select:expr, $p1:literal, $p2:literal) => {{
                let mut tx = $pool.begin().await?;
                let rows: Vec<(i64, String)> =
                    sqlx::query_as(AssertSqlSafe($select)).bind(limit).fetch_all(&mut *tx).await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                let (marks, unavailable) = self.offer(&rows, sink, shutdown).await?;
                for (id, mark) in &marks {
                    let (sql, text) = mark.update(t, $p1, $p2);
                    sqlx::query(AssertSqlSafe(sql)).bind(text).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                if unavailable {
                    return Err(Stop::Unavailable);
                }
                Ok(marks.len())
            }};
        }
        match &self.db {
            Db::Pg(pool) => {
                let except: String = HUB_COLUMNS.iter().map(|c| format!(" - '{c}'")).collect();
                let select = format!(
                    "SELECT id::bigint, (to_jsonb(s){except})::text FROM {t} s WHERE status = 'new' \
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
                );
                take!(pool, select, "$1", "$2")
            }
            Db::My(pool) => {
                let (schema, name) = match t.split_once('.') {
                    Some((s, n)) => (Some(s.to_owned()), n.to_owned()),
                    None => (None, t.clone()),
                };
                let columns: Vec<(String,)> = sqlx::query_as(
                    "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                     WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(schema)
                .bind(name)
                .fetch_all(pool)
                .await?;
                let pairs: Vec<String> = columns
                    .iter()
                    .map(|(c,)| c)
                    .filter(|c| !HUB_COLUMNS.contains(&c.to_ascii_lowercase().as_str()))
                    .filter(|c| crate::is_sql_identifier(c))
                    .map(|c| format!("'{c}', `{c}`"))
                    .collect();
                let select = format!(
                    "SELECT CAST(id AS SIGNED), CAST(JSON_OBJECT({}) AS CHAR) FROM {t} WHERE status = 'new' \
                     ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
                    pairs.join(", ")
                );
                take!(pool, select, "?", "?")
            }
        }
    }
}

#[async_trait]
impl Inbound for SqlSource {
    async fn run(&self, sink: Arc<dyn RecordSink>, shutdown: CancellationToken) -> Result<(), AdapterError> {
        let poll = Duration::from_millis(self.config.poll_ms);
        let table = &self.config.table;
        // A database that is down is retried with a doubling pause, not hammered (or logged) per poll.
        let mut failing = Duration::ZERO;
        while !shutdown.is_cancelled() {
            let wait = match self.poll(sink.as_ref(), &shutdown).await {
                // A full batch: there is probably more, take it at once.
                Ok(n) if n == self.config.batch => {
                    failing = Duration::ZERO;
                    continue;
                }
                Ok(_) | Err(Stop::Unavailable) => {
                    failing = Duration::ZERO;
                    poll
                }
                Err(Stop::Cancelled) => break,
                Err(Stop::Db(e)) => {
                    failing = (failing * 2).clamp(poll.max(Duration::from_secs(1)), MAX_PAUSE);
                    tracing::warn!(%table, error = %describe(&e), retry_in_s = failing.as_secs(), "staging table not polled");
                    failing
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        self.db.health(&self.config.table).await
    }
}
