//! `hub migrate --from sqlite --to postgres`: copies a stopped hub's SQLite database into an empty
//! PostgreSQL database in one transaction (a failed copy leaves the target empty), then proves the
//! copy: every table's row count, and the whole audit chain verified again on PostgreSQL with the
//! same head as the source's.

use std::path::Path;

use rusqlite::types::Value as Cell;
use sqlx::{Postgres, QueryBuilder};

use super::postgres::PostgresStore;
use super::sqlite::{db_path, open_reader, verify_with};
use super::StoreError;
use crate::ledger::ChainReport;

/// Why a migration stopped. Nothing was written to the target unless `Verify` says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading the source or writing the target.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target already holds data.
    #[error("the target database is not empty ({0} holds rows); migrate only into a new database")]
    NotEmpty(&'static str),
    /// The source chain is broken: a broken chain is not copied.
    #[error("the source audit chain does not verify: {0}")]
    SourceBroken(String),
    /// The copy is not what was read (the target keeps it, for inspection).
    #[error("the copy does not verify: {0}")]
    Verify(String),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

/// How a column is bound on PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bool,
}

use Kind::{Bool, Int, Text};

/// Every table, in an order that keeps references intact, with its columns. Identity columns
/// (`outbox.id`, `check_runs.id`, `alerts.id`) keep their values: a feed cursor or a dead-letter id
/// a department or operator holds still points at the same entry.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "audit",
        &[
            ("seq", Int),
            ("time", Text),
            ("actor", Text),
            ("action", Text),
            ("record_type", Text),
            ("record_key", Text),
            ("record_version", Int),
            ("subjects", Text),
            ("purpose", Text),
            ("outcome", Text),
            ("detail", Text),
            ("prev", Text),
            ("digest", Text),
        ],
    ),
    ("audit_subjects", &[("subject_hash", Text), ("seq", Int)]),
    ("checkpoints", &[("seq", Int), ("digest", Text), ("signature", Text), ("time", Text), ("suite", Text)]),
    // A version's `trace` (the W3C context its deliveries carry) is not copied: it is operational,
    // and a delivery still pending after a migration starts a trace of its own.
    (
        "records",
        &[
            ("type", Text),
            ("key", Text),
            ("version", Int),
            ("schema_version", Int),
            ("payload", Text),
            ("digest", Text),
            ("publisher", Text),
            ("received_at", Text),
            ("audit_seq", Int),
            ("subjects", Text),
        ],
    ),
    ("latest", &[("type", Text), ("key", Text), ("version", Int)]),
    ("subjects", &[("subject_hash", Text), ("type", Text), ("key", Text)]),
    ("subjects_past", &[("subject_hash", Text), ("type", Text), ("key", Text)]),
    (
        "idempotency",
        &[("publisher", Text), ("idem_key", Text), ("request_digest", Text), ("receipt", Text), ("created_at", Text)],
    ),
    (
        "outbox",
        &[
            ("id", Int),
            ("subscription", Text),
            ("record_type", Text),
            ("key", Text),
            ("version", Int),
            ("event_id", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("created_at", Int),
            ("last_error", Text),
            ("settled_at", Int),
        ],
    ),
    ("subscription_state", &[("name", Text), ("disabled", Bool), ("reason", Text), ("since", Text)]),
    ("feed_cursor", &[("subscription", Text), ("acked", Int)]),
    (
        "check_runs",
        &[
            ("id", Int),
            ("name", Text),
            ("kind", Text),
            ("started", Text),
            ("duration_ms", Int),
            ("status", Text),
            ("summary", Text),
            ("measurements", Text),
            ("trigger", Text),
        ],
    ),
    (
        "alerts",
        &[
            ("id", Int),
            ("check_name", Text),
            ("from_status", Text),
            ("to_status", Text),
            ("summary", Text),
            ("time", Text),
            ("flapping", Bool),
            ("delivered_at", Text),
            ("attempts", Int),
            ("last_error", Text),
        ],
    ),
    ("schedule_claims", &[("check_name", Text), ("slot", Text), ("claimed_at", Text)]),
];

/// Where a target table's rows come from in the SQLite database: the table of the same name, but
/// for `latest`, which SQLite keeps as the last entry of its records index (schema 7), and the
/// tables through which a person's access log finds entries (schema 10): `audit_subjects` as every
/// entry's own subjects, as the chain holds them (the copy's access log needs no upgrade step),
/// `subjects` as whom each record's latest version names, and `subjects_past` as everyone its
/// earlier versions named that the latest does not.
fn rows_of(table: &str, checkpoints_name_a_suite: bool) -> &str {
    match table {
        // Before schema 13 checkpoints name no suite (they are all SHA-256 and Ed25519).
        "checkpoints" if !checkpoints_name_a_suite => "(SELECT seq, digest, signature, time, NULL AS suite FROM checkpoints)",
        "latest" => "(SELECT type, key, MAX(version) AS version FROM records GROUP BY type, key)",
        "audit_subjects" => {
            "(SELECT DISTINCT j.value AS subject_hash, a.seq AS seq FROM audit a, json_each(a.subjects) j)"
        }
        // From the records themselves, so that a database of any schema since 7 gives the same:
        // since schema 14 SQLite's `subjects` is a superset merged behind the log, while the
        // target's holds exactly whom each latest version names.
        "subjects" => {
            "(SELECT DISTINCT j.value AS subject_hash, r.type AS type, r.key AS key FROM records r, json_each(r.subjects) j
              WHERE r.version = (SELECT MAX(m.version) FROM records m WHERE m.type = r.type AND m.key = r.key))"
        }
        "subjects_past" => {
            "(SELECT DISTINCT j.value AS subject_hash, r.type AS type, r.key AS key FROM records r, json_each(r.subjects) j
              WHERE NOT EXISTS (SELECT 1 FROM records l, json_each(l.subjects) k
                  WHERE l.type = r.type AND l.key = r.key AND k.value = j.value
                    AND l.version = (SELECT MAX(m.version) FROM records m WHERE m.type = r.type AND m.key = r.key)))"
        }
        other => other,
    }
}

/// Rows per INSERT: well under PostgreSQL's 65,535 bind parameters for the widest table.
const CHUNK: usize = 2000;

/// What was moved.
#[derive(Debug)]
pub struct Migrated {
    /// Rows per table.
    pub tables: Vec<(&'static str, u64)>,
    /// The chain as verified on the target.
    pub chain: ChainReport,
}

/// Copies the SQLite database of `data` into `target`, reporting rows copied out of the total.
pub async fn sqlite_to_postgres(
    data: &Path,
    target: &PostgresStore,
    key: crate::ledger::keys::PublicKey,
    progress: &mut (dyn FnMut(&'static str, u64, u64) + Send),
) -> Result<Migrated, MigrateError> {
    let path = db_path(data);
    if !path.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        ))
        .into());
    }
    let source = open_reader(&path)?;
    // One read transaction: every table and the chain check see the same instant.
    source.execute_batch("BEGIN")?;
    let source_chain = match verify_with(&source, key.clone(), &mut |_| {})? {
        Ok(r) => r,
        Err(b) => return Err(MigrateError::SourceBroken(b.to_string())),
    };
    let named = crate::store::sqlite::checkpoints_name_a_suite(&source)?;
    let mut counts = Vec::with_capacity(TABLES.len());
    for (table, _) in TABLES {
        let n: i64 = source.query_row(&format!("SELECT COUNT(*) FROM {}", rows_of(table, named)), [], |r| r.get(0))?;
        counts.push((*table, n as u64));
    }
    // What the log still owes push subscriptions (cursors, in SQLite) becomes pending outbox
    // rows after those already there: the PostgreSQL store keeps rows for every subscription.
    let owed = crate::store::sqlite::owed_from_log(&source)?;
    let first_id: i64 = source.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM outbox", [], |r| r.get(0))?;
    if let Some(c) = counts.iter_mut().find(|(t, _)| *t == "outbox") {
        c.1 += owed.len() as u64;
    }
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let pool = target.pool();
    for (table, _) in TABLES {
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT EXISTS (SELECT 1 FROM {table})")))
            .fetch_one(pool)
            .await?;
        if any {
            return Err(MigrateError::NotEmpty(table));
        }
    }

    let mut tx = pool.begin().await?;
    // Other nodes must not append to the chain while it is being copied in.
    sqlx::query("LOCK TABLE audit IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    let mut done = 0u64;
    for (table, columns) in TABLES {
        let names = columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let mut stmt = source.prepare(&format!("SELECT {names} FROM {}", rows_of(table, named)))?;
        let mut rows = stmt.query([])?;
        let mut chunk: Vec<Vec<Cell>> = Vec::with_capacity(CHUNK);
        loop {
            let row = rows.next()?;
            if let Some(row) = row {
                chunk.push((0..columns.len()).map(|i| row.get::<_, Cell>(i)).collect::<Result<_, _>>()?);
            }
            if chunk.len() == CHUNK || (row.is_none() && !chunk.is_empty()) {
                insert(&mut tx, table, &names, columns, &chunk).await?;
                done += chunk.len() as u64;
                progress(table, done, total);
                chunk.clear();
            }
            if row.is_none() {
                break;
            }
        }
    }
    let owed: Vec<Vec<Cell>> = owed
        .into_iter()
        .zip(first_id..)
        .map(|(o, id)| {
            vec![
                Cell::Integer(id),
                Cell::Text(o.subscription),
                Cell::Text(o.record_type),
                Cell::Text(o.key),
                Cell::Integer(o.version as i64),
                Cell::Text(o.event_id),
                Cell::Text(o.state),
                Cell::Integer(i64::from(o.attempts)),
                Cell::Integer(o.next_attempt_at),
                Cell::Integer(o.created_at),
                Cell::Null,
                Cell::Null,
            ]
        })
        .collect();
    let outbox = TABLES.iter().find(|(t, _)| *t == "outbox").map_or(&[][..], |(_, c)| *c);
    let names = outbox.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    for chunk in owed.chunks(CHUNK) {
        insert(&mut tx, "outbox", &names, outbox, chunk).await?;
        done += chunk.len() as u64;
        progress("outbox", done, total);
    }
    for table in ["outbox", "check_runs", "alerts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    source.execute_batch("COMMIT")?;

    for (table, n) in &counts {
        let m: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(pool).await?;
        if m as u64 != *n {
            return Err(MigrateError::Verify(format!("{table}: {n} rows in the source, {m} in the target")));
        }
    }
    let chain = match target.verify_with(key, None, &mut |_| {}).await? {
        Ok(r) => r,
        Err(b) => return Err(MigrateError::Verify(b.to_string())),
    };
    if chain.head_seq != source_chain.head_seq || chain.head_digest != source_chain.head_digest {
        return Err(MigrateError::Verify(format!(
            "the chain head moved: source seq {} {}, target seq {} {}",
            source_chain.head_seq, source_chain.head_digest, chain.head_seq, chain.head_digest
        )));
    }
    Ok(Migrated { tables: counts, chain })
}

async fn insert(
    tx: &mut sqlx::PgConnection,
    table: &str,
    names: &str,
    columns: &[(&str, Kind)],
    rows: &[Vec<Cell>],
) -> Result<(), MigrateError> {
    let mut q = QueryBuilder::<Postgres>::new(format!("INSERT INTO {table} ({names}) "));
    let mut bad: Option<String> = None;
    q.push_values(rows, |mut b, row| {
        for (cell, (column, kind)) in row.iter().zip(columns) {
            match (kind, cell) {
                (_, Cell::Null) => match kind {
                    Int => b.push_bind(None::<i64>),
                    Text => b.push_bind(None::<String>),
                    Bool => b.push_bind(None::<bool>),
                },
                (Int, Cell::Integer(n)) => b.push_bind(*n),
                (Bool, Cell::Integer(n)) => b.push_bind(*n != 0),
                (Text, Cell::Text(s)) => b.push_bind(s.clone()),
                (_, other) => {
                    bad.get_or_insert_with(|| format!("{table}.{column} holds an unexpected {:?}", other.data_type()));
                    b.push_bind(None::<String>)
                }
            };
        }
    });
    if let Some(reason) = bad {
        return Err(MigrateError::Store(StoreError::Corrupt(reason)));
    }
    q.build().execute(&mut *tx).await?;
    Ok(())
}
