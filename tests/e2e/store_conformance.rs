//! One store conformance suite that both backends pass: the embedded SQLite store and the shared
//! PostgreSQL store (a fresh database per test, when `HUB_TEST_POSTGRES_URL` is set). It holds the
//! promises the exchange relies on: a version, its index rows, its audit entry and its outbox
//! entries commit together or not at all; idempotency; versions and audit sequence in order;
//! leases; feeds; schedule claims; and everything intact after a restart. Each engine runs it
//! twice: with outbox rows for every subscription, and with the push subscription `tax` and the
//! feed `police` served as cursors over the log (what `hub serve` does for every subscription).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use harness::PgDatabase;
use hub::ledger::keys::HubKeys;
use hub::ledger::{Action, NewEntry};
use hub::store::postgres::{PgOptions, PostgresStore};
use hub::store::sqlite::{db_path, SqliteOptions, SqliteStore};
use hub::store::{FeedCursor, FromLog, Lease, Linked, NewVersion, Published, Receipt, Settlement, Store, StoreError};

/// A backend under test: how to open its store (again, for restarts) and how to make its database
/// refuse one key after the record row is written, as a failing disk would.
enum Backend {
    Sqlite { dir: tempfile::TempDir },
    SqliteLog { dir: tempfile::TempDir },
    Postgres { db: PgDatabase, dir: tempfile::TempDir },
    PostgresLog { db: PgDatabase, dir: tempfile::TempDir },
}

impl Backend {
    async fn sqlite() -> Result<Option<Self>> {
        Ok(Some(Backend::Sqlite { dir: tempfile::tempdir()? }))
    }

    async fn sqlite_log() -> Result<Option<Self>> {
        Ok(Some(Backend::SqliteLog { dir: tempfile::tempdir()? }))
    }

    async fn postgres() -> Result<Option<Self>> {
        Ok(PgDatabase::create("store conformance on PostgreSQL")
            .await?
            .map(|db| Backend::Postgres { db, dir: tempfile::tempdir().expect("a temporary directory") }))
    }

    async fn postgres_log() -> Result<Option<Self>> {
        Ok(Self::postgres().await?.map(Self::into_log))
    }

    /// The same storage, its subscriptions served as cursors over the log.
    fn into_log(self) -> Self {
        match self {
            Backend::Sqlite { dir } => Backend::SqliteLog { dir },
            Backend::Postgres { db, dir } => Backend::PostgresLog { db, dir },
            log => log,
        }
    }

    /// The same storage, every subscription kept in outbox rows.
    fn into_rows(self) -> Self {
        match self {
            Backend::SqliteLog { dir } => Backend::Sqlite { dir },
            Backend::PostgresLog { db, dir } => Backend::Postgres { db, dir },
            rows => rows,
        }
    }

    /// Several nodes may share the store: a cursor is served by the node that holds its lease.
    fn is_shared(&self) -> bool {
        matches!(self, Backend::Postgres { .. } | Backend::PostgresLog { .. })
    }

    fn dir(&self) -> &Path {
        match self {
            Backend::Sqlite { dir }
            | Backend::SqliteLog { dir }
            | Backend::Postgres { dir, .. }
            | Backend::PostgresLog { dir, .. } => dir.path(),
        }
    }

    async fn open(&self) -> Result<Arc<dyn Store>> {
        let keys = Arc::new(HubKeys::load_or_create(self.dir(), Default::default())?);
        let store: Arc<dyn Store> = match self {
            Backend::Sqlite { dir } | Backend::SqliteLog { dir } => {
                let opts = SqliteOptions {
                    group_commit_max: 64,
                    read_connections: 2,
                    checkpoint_every: 4,
                    max_wal_bytes: 256 << 20,
                    // Both ways of the subject index: merged after every commit, and never merged
                    // (every lookup from memory, and after a restart from the log past the mark).
                    subject_merge_at: if matches!(self, Backend::Sqlite { .. }) { 1 } else { usize::MAX },
                };
                Arc::new(SqliteStore::open(dir.path(), keys, opts)?)
            }
            Backend::Postgres { db, .. } | Backend::PostgresLog { db, .. } => {
                let opts =
                    PgOptions { url: db.url.clone(), max_connections: 4, group_commit_max: 64, checkpoint_every: 4 };
                Arc::new(PostgresStore::open(keys, opts).await?)
            }
        };
        if matches!(self, Backend::SqliteLog { .. } | Backend::PostgresLog { .. }) {
            let served = |name: &str, feed| FromLog { name: name.into(), record_type: "marriage".into(), feed };
            store.serve_from_log(vec![served("tax", false), served("police", true)]).await?;
        }
        Ok(store)
    }

    /// Makes the database refuse to index key `boom` (after the record row is in).
    async fn sabotage(&self) -> Result<()> {
        match self {
            Backend::Sqlite { dir } | Backend::SqliteLog { dir } => {
                // The record row is written after the audit entry (SQLite keeps no `latest` table,
                // and writes the subject index after the commit).
                rusqlite::Connection::open(db_path(dir.path()))?.execute_batch(
                    "CREATE TRIGGER refuse AFTER INSERT ON records WHEN NEW.key = 'boom'
                     BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                )?;
            }
            Backend::Postgres { db, .. } | Backend::PostgresLog { db, .. } => {
                use sqlx::Connection as _;
                let mut c = sqlx::PgConnection::connect(&db.url).await?;
                sqlx::raw_sql(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF NEW.key = 'boom' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
                     CREATE TRIGGER refuse BEFORE INSERT ON latest FOR EACH ROW EXECUTE FUNCTION refuse();",
                )
                .execute(&mut c)
                .await?;
            }
        }
        Ok(())
    }
}

fn version(key: &str, body: &str) -> NewVersion {
    NewVersion {
        record_type: "marriage".into(),
        key: key.into(),
        schema_version: 1,
        canonical: format!("{{\"v\":\"{body}\"}}"),
        digest: format!("digest-{body}"),
        publisher: "civil-affairs".into(),
        subjects: vec![format!("subject-{key}")],
        idempotency: None,
        routes: vec!["tax".into(), "police".into()],
        first_only: false,
        audit: NewEntry {
            record_type: Some("marriage".into()),
            record_key: Some(key.into()),
            subjects: vec![format!("subject-{key}")],
            ..NewEntry::new("civil-affairs", Action::Publish, "ok")
        },
        trace: Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", key.len() + 1)),
    }
}

async fn publish_one(store: &dyn Store, v: NewVersion) -> Result<Published> {
    let mut out = store.publish(vec![v]).await?;
    Ok(out.pop().expect("one result")?)
}

fn created(p: Published) -> Result<Receipt> {
    match p {
        Published::Created(r) => Ok(r),
        other => bail!("expected a new version, got {other:?}"),
    }
}

fn lease(owner: &str, until_ms: i64) -> Lease {
    Lease { owner: owner.into(), until_ms }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Version, subject index, audit entry and outbox entries are there together.
async fn publish_is_atomic_and_complete(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let r = created(publish_one(&*store, version("m1", "a")).await?)?;
    assert_eq!((r.version, r.routed), (1, 2));
    let latest = store.latest("marriage", "m1").await?.expect("latest");
    assert_eq!((latest.version, latest.audit_seq, latest.payload["v"].as_str()), (1, r.audit_seq, Some("a")));
    // The trace context its deliveries carry is kept with the version.
    let kept = store.version("marriage", "m1", 1).await?.expect("version 1").trace;
    assert_eq!(kept.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000003-01"));
    assert_eq!(store.by_subject("subject-m1").await?.len(), 1);
    let audit = store.audit_after(0, 10).await?;
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].seq, audit[0].record_version), (r.audit_seq, Some(1)));
    assert_eq!(store.audit_by_subject("subject-m1", 10).await?.len(), 1);
    let pending = store.deliveries("pending", None, 10).await?;
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|o| o.version == 1 && o.key == "m1"));
    store.close().await;
    Ok(())
}

/// A write that fails after its first rows rolls back its whole group: no version, no index row,
/// no audit entry, no outbox entry, and the chain goes on from where it was.
async fn a_failed_write_leaves_nothing(b: Backend) -> Result<()> {
    let store = b.open().await?;
    created(publish_one(&*store, version("before", "x")).await?)?;
    b.sabotage().await?;
    let failed = store.publish(vec![version("a", "1"), version("boom", "2"), version("b", "3")]).await;
    let stored_any = match failed {
        Err(_) => false,
        Ok(results) => results.iter().any(|r| r.is_ok()),
    };
    assert!(!stored_any, "a group with a failed write reported success");
    for key in ["a", "boom", "b"] {
        assert!(store.latest("marriage", key).await?.is_none(), "{key} was stored from a failed group");
        assert!(store.by_subject(&format!("subject-{key}")).await?.is_empty());
    }
    assert_eq!(store.audit_after(0, 100).await?.len(), 1);
    assert_eq!(store.deliveries("pending", None, 100).await?.len(), 2);
    let next = created(publish_one(&*store, version("after", "y")).await?)?;
    assert_eq!(next.audit_seq, 2);
    assert_eq!(store.verify_audit().await?.map_err(anyhow::Error::from)?.entries, 2);
    store.close().await;
    Ok(())
}

/// The same key and body give the first receipt back; another body is a conflict; neither adds
/// a version or an audit entry.
async fn idempotency(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let with_key = |body: &str, digest: &str| NewVersion {
        idempotency: Some(("key-1".into(), digest.into())),
        ..version("m1", body)
    };
    let first = created(publish_one(&*store, with_key("a", "req-a")).await?)?;
    match publish_one(&*store, with_key("a", "req-a")).await? {
        Published::Replayed(r) => assert_eq!(r, first),
        other => bail!("expected the first receipt, got {other:?}"),
    }
    assert_eq!(publish_one(&*store, with_key("b", "req-b")).await?, Published::Conflict);
    // Idempotency keys are the publisher's own: another department may use the same one.
    let other = NewVersion { publisher: "police".into(), ..with_key("c", "req-c") };
    assert_eq!(created(publish_one(&*store, other).await?)?.version, 2);
    assert_eq!(store.history("marriage", "m1").await?.len(), 2);
    assert_eq!(store.audit_after(0, 10).await?.len(), 2);
    store.close().await;
    Ok(())
}

/// Versions count up per record, audit sequence numbers have no gap, checkpoints are signed, and
/// a subscriber gets a record's versions one at a time, in order.
async fn ordering(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let mut seqs = Vec::new();
    for (i, body) in ["a", "b", "c"].iter().enumerate() {
        let r = created(publish_one(&*store, version("m1", body)).await?)?;
        assert_eq!(r.version, i as u64 + 1);
        seqs.push(r.audit_seq);
    }
    let r = created(publish_one(&*store, version("m2", "z")).await?)?;
    seqs.push(r.audit_seq);
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    let history: Vec<u64> = store.history("marriage", "m1").await?.iter().map(|v| v.version).collect();
    assert_eq!(history, vec![1, 2, 3]);
    let report = store.verify_audit().await?.map_err(anyhow::Error::from)?;
    assert_eq!((report.entries, report.checkpoints), (4, 1));
    assert_eq!(store.versions_since("marriage", 3, 10).await?.len(), 2);

    // m1 v1 and m2 v1 may go; m1 v2 waits for v1.
    let claimed = store.claim("tax", now_ms(), 10, lease("node-a", now_ms() + 60_000)).await?;
    let got: Vec<(String, u64)> = claimed.iter().map(|o| (o.key.clone(), o.version)).collect();
    assert_eq!(got, vec![("m1".to_owned(), 1), ("m2".to_owned(), 1)]);
    store.settle(claimed[0].id, Settlement::Delivered, None).await?;
    let next = store.claim("tax", now_ms(), 10, lease("node-a", now_ms() + 60_000)).await?;
    assert_eq!(next.iter().map(|o| o.version).collect::<Vec<_>>(), vec![2]);
    store.close().await;
    Ok(())
}

/// A claimed entry is the claimer's until its lease runs out or it settles; then another node
/// takes it. A retry gives it back with its new due time.
async fn leases(b: Backend) -> Result<()> {
    let store = b.open().await?;
    created(publish_one(&*store, version("m1", "a")).await?)?;
    created(publish_one(&*store, version("m2", "b")).await?)?;
    let t0 = now_ms();
    let a = store.claim("tax", t0, 10, lease("node-a", t0 + 30_000)).await?;
    assert_eq!(a.len(), 2);
    assert!(store.claim("tax", t0, 10, lease("node-b", t0 + 30_000)).await?.is_empty(), "a leased entry went twice");
    // The subscription's next look is when the lease runs out.
    assert_eq!(store.next_due("tax").await?, Some(t0 + 30_000));
    // Other subscriptions are not held up.
    assert_eq!(store.claim("police", t0, 10, lease("node-b", t0 + 30_000)).await?.len(), 2);
    // Node A dies: once its lease has run out, node B takes over.
    let b_rows = store.claim("tax", t0 + 30_001, 10, lease("node-b", t0 + 60_000)).await?;
    assert_eq!(b_rows.iter().map(|o| o.id).collect::<Vec<_>>(), a.iter().map(|o| o.id).collect::<Vec<_>>());
    // A retry ends the lease and sets the due time.
    let at = t0 + 5_000;
    store.settle(b_rows[0].id, Settlement::Retry { at_ms: at, error: "503".into() }, None).await?;
    assert!(store.claim("tax", at - 1, 10, lease("node-c", at + 30_000)).await?.is_empty());
    let again = store.claim("tax", at, 10, lease("node-c", at + 30_000)).await?;
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    // Settled entries are never claimed again.
    let entry = NewEntry::new("tax", Action::Deliver, "ok");
    store
        .settle_many(vec![
            (again[0].id, Settlement::Delivered, Some(entry.clone())),
            (b_rows[1].id, Settlement::Dead { error: "410".into() }, Some(entry)),
        ])
        .await?;
    assert!(store.claim("tax", t0 + 120_000, 10, lease("node-d", t0 + 150_000)).await?.is_empty());
    assert_eq!(store.next_due("tax").await?, None);
    // A node that stops gives its leases back: its entries go at once, not when the leases end.
    let police = store.claim("police", t0 + 40_000, 10, lease("node-e", t0 + 90_000)).await?;
    assert_eq!(police.len(), 2);
    assert_eq!(store.release_leases("node-x").await?, 0);
    assert_eq!(store.release_leases("node-e").await?, 2);
    assert_eq!(store.claim("police", t0 + 40_001, 10, lease("node-f", t0 + 90_000)).await?.len(), 2);
    store.close().await;
    Ok(())
}

/// Dead letters are counted, listed and queued again with an audit entry; age expiry
/// dead-letters with one audit entry each.
async fn dead_letters_and_expiry(b: Backend) -> Result<()> {
    let store = b.open().await?;
    created(publish_one(&*store, version("m1", "a")).await?)?;
    let rows = store.claim("tax", now_ms(), 10, lease("n", now_ms() + 10_000)).await?;
    let dead = NewEntry::new("tax", Action::DeadLetter, "dead");
    store.settle(rows[0].id, Settlement::Dead { error: "rejected".into() }, Some(dead.clone())).await?;
    let counts = store.delivery_counts().await?;
    let tax = counts.iter().find(|c| c.subscription == "tax").expect("tax counts");
    assert_eq!((tax.pending, tax.dead), (0, 1));
    // A dead letter is a row (an entry from the log becomes one when it dies), with its event id.
    let dead_rows = store.deliveries("dead", Some("tax".into()), 10).await?;
    assert_eq!(dead_rows.iter().map(|o| &o.event_id).collect::<Vec<_>>(), [&rows[0].event_id]);
    let id = dead_rows[0].id;
    assert_eq!(store.retry_dead(id, NewEntry::new("ops", Action::Admin, "ok")).await?.as_deref(), Some("tax"));
    assert_eq!(store.retry_dead(id, NewEntry::new("ops", Action::Admin, "ok")).await?, None);
    let expired = store.expire("tax", now_ms() + 1, "too old".into(), dead).await?;
    assert_eq!(expired, 1);
    assert_eq!(store.deliveries("dead", Some("tax".into()), 10).await?.len(), 1);
    // publish, dead letter, retry, expiry.
    let actions: Vec<String> = store.audit_after(0, 10).await?.into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["publish", "dead_letter", "admin", "dead_letter"]);
    store.close().await;
    Ok(())
}

/// A feed reads pending entries after a cursor in order; an acknowledgement settles them and
/// moves the cursor, never back; a cursor survives its text form.
async fn feeds(b: Backend) -> Result<()> {
    let store = b.open().await?;
    for k in ["m1", "m2", "m3"] {
        created(publish_one(&*store, version(k, "a")).await?)?;
    }
    let start = store.feed_cursor("police").await?;
    let page = store.feed("police", start, 2).await?;
    assert_eq!(page.rows.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
    let first = store.feed("police", start, 1).await?.next;
    let text = page.next.to_string();
    assert_eq!(text.parse::<FeedCursor>(), Ok(page.next));
    assert_eq!(store.ack("police", page.next).await?, 2);
    assert_eq!(store.feed_cursor("police").await?, page.next);
    assert_eq!(store.ack("police", first).await?, 0);
    assert_eq!(store.feed_cursor("police").await?, page.next, "the cursor moved back");
    let rest = store.feed("police", page.next, 10).await?;
    assert_eq!(rest.rows.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m3"]);
    // Read again from the start, only what is not acknowledged comes.
    let again = store.feed("police", start, 10).await?;
    assert_eq!(again.rows.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m3"]);
    assert_eq!(again.next, rest.next);
    let counts = store.delivery_counts().await?;
    assert_eq!(counts.iter().find(|c| c.subscription == "police").map(|c| c.pending), Some(1));
    store.close().await;
    Ok(())
}

/// Each scheduled instant of a check is taken once.
async fn schedule_claims(b: Backend) -> Result<()> {
    let store = b.open().await?;
    assert!(store.claim_slot("backlog", "2026-11-26T08:00:00.000Z").await?);
    assert!(!store.claim_slot("backlog", "2026-11-26T08:00:00.000Z").await?);
    assert!(store.claim_slot("backlog", "2026-11-26T08:01:00.000Z").await?);
    assert!(store.claim_slot("storage", "2026-11-26T08:00:00.000Z").await?);
    store.close().await;
    Ok(())
}

/// Everything survives a restart, and the chain, versions and outbox ids go on from there.
async fn restart(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let first = created(publish_one(&*store, version("m1", "a")).await?)?;
    store.set_subscription("tax", true, Some("410 Gone".into()), NewEntry::new("tax", Action::Admin, "ok")).await?;
    let outbox_before = store.deliveries("pending", None, 10).await?;
    store.close().await;
    drop(store);

    let store = b.open().await?;
    assert_eq!(store.latest("marriage", "m1").await?.map(|v| v.digest), Some(first.digest.clone()));
    // The person is found through the index as before (on SQLite's tail way, from the log).
    let found = store.by_subject("subject-m1").await?;
    assert_eq!(found.iter().map(|v| &v.digest).collect::<Vec<_>>(), [&first.digest]);
    assert_eq!(store.audit_by_subject("subject-m1", 10).await?.len(), 1);
    let states = store.subscription_states().await?;
    assert_eq!((states.len(), states[0].disabled), (1, true));
    let second = created(publish_one(&*store, version("m1", "b")).await?)?;
    assert_eq!((second.version, second.audit_seq), (2, 3));
    let outbox_after = store.deliveries("pending", None, 10).await?;
    // Ids go on from there: rows count up, and an entry from the log is named by its record's
    // audit sequence, which does.
    assert_eq!(outbox_after.len(), 4);
    for o in outbox_after.iter().filter(|o| o.version == 2) {
        assert!(outbox_before.iter().all(|b| b.id != o.id && b.event_id != o.event_id));
        assert!(o.id < 0 || outbox_before.iter().all(|b| b.id < o.id));
    }
    let report = store.verify_audit().await?.map_err(anyhow::Error::from)?;
    assert_eq!(report.head_seq, 3);
    store.close().await;
    Ok(())
}

/// One call with repeats: two versions of one record, a replayed and a conflicting idempotency
/// key of the same call, and audit entries between: versions count up, the replay gets the first
/// receipt, the index follows the last version, and the chain has every entry once, in order.
async fn repeats_within_one_commit(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let keyed = |key: &str, body: &str, digest: &str| NewVersion {
        idempotency: Some(("k1".into(), digest.into())),
        ..version(key, body)
    };
    let moved = NewVersion { subjects: vec!["subject-new".into()], ..version("m1", "b") };
    let (publishes, audit) = tokio::join!(
        store.publish(vec![keyed("m1", "a", "req-a"), moved, keyed("m1", "a", "req-a"), keyed("m9", "z", "req-z")]),
        store.audit(NewEntry::new("police", Action::Lookup, "ok"))
    );
    let publishes: Vec<Published> = publishes?.into_iter().collect::<Result<_, _>>()?;
    let first = match &publishes[0] {
        Published::Created(r) => r.clone(),
        other => bail!("{other:?}"),
    };
    assert_eq!(created(publishes[1].clone())?.version, 2);
    assert_eq!(publishes[2], Published::Replayed(first.clone()));
    assert_eq!(publishes[3], Published::Conflict);
    let audit = audit?;
    assert!(store.by_subject("subject-m1").await?.is_empty(), "the index still points at the old version");
    assert_eq!(store.by_subject("subject-new").await?.len(), 1);
    let entries = store.audit_after(0, 10).await?;
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().any(|e| e.seq == audit.seq && e.action == "lookup"));
    assert_eq!(store.verify_audit().await?.map_err(anyhow::Error::from)?.entries, 3);
    let tax: Vec<u64> = store.deliveries("pending", Some("tax".into()), 10).await?.iter().map(|o| o.version).collect();
    assert_eq!(tax, vec![1, 2]);
    store.close().await;
    Ok(())
}

/// Cursors over the log, through a restart: an entry that failed is a row and goes once, from its
/// row; what lies past the first entry still out when the store closed goes again (at least
/// once), delivered or not; what was settled below it does not. (A shared store's cursor goes to
/// the restarted node once the lease of the one before has run out.)
async fn a_cursor_restarts_from_its_last_settlement_and_a_failed_entry_goes_once(b: Backend) -> Result<()> {
    let store = b.open().await?;
    for k in ["m1", "m2", "m3", "m4"] {
        created(publish_one(&*store, version(k, "a")).await?)?;
    }
    let t0 = now_ms();
    let out = store.claim("tax", t0, 10, lease("a", t0 + 60_000)).await?;
    assert_eq!(out.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m1", "m2", "m3", "m4"]);
    assert!(out.iter().all(|o| o.id < 0), "entries from the log are not rows");
    let at = t0 + 1_000;
    store.settle(out[0].id, Settlement::Delivered, None).await?;
    store.settle(out[1].id, Settlement::Retry { at_ms: at, error: "503".into() }, None).await?;
    store.settle(out[3].id, Settlement::Delivered, None).await?;
    // The store closes with m3 out.
    store.close().await;
    drop(store);

    let store = b.open().await?;
    let at = if b.is_shared() { t0 + 60_000 } else { at };
    let again = store.claim("tax", at, 10, lease("b", at + 60_000)).await?;
    let mut got: Vec<(&str, u32, bool)> = again.iter().map(|o| (o.key.as_str(), o.attempts, o.id > 0)).collect();
    got.sort();
    assert_eq!(got, [("m2", 1, true), ("m3", 0, false), ("m4", 0, false)]);
    assert_eq!(again.iter().find(|o| o.key == "m2").map(|o| o.event_id.clone()), Some(out[1].event_id.clone()));
    let counts = store.delivery_counts().await?;
    assert_eq!(counts.iter().find(|c| c.subscription == "tax").map(|c| c.pending), Some(3));
    store.settle_many(again.iter().map(|o| (o.id, Settlement::Delivered, None)).collect()).await?;
    assert!(store.claim("tax", at + 120_000, 10, lease("c", at + 180_000)).await?.is_empty());
    assert_eq!(store.next_due("tax").await?, None);
    store.close().await;
    Ok(())
}

/// A version held back as a row (an earlier one of its record was out) still waits for that one
/// when the cursor walks the log again after a restart: the earlier version goes first, from
/// the log, and the row only after it.
async fn a_version_held_back_as_a_row_waits_for_the_one_before_it_after_a_restart(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let t0 = now_ms();
    created(publish_one(&*store, version("m1", "a")).await?)?;
    let first = store.claim("tax", t0, 10, lease("a", t0 + 60_000)).await?;
    assert_eq!(first.iter().map(|o| o.version).collect::<Vec<_>>(), [1]);
    created(publish_one(&*store, version("m1", "b")).await?)?;
    assert!(store.claim("tax", t0, 10, lease("a", t0 + 60_000)).await?.is_empty(), "version 2 overtook version 1");
    assert_eq!(store.deliveries("pending", Some("tax".into()), 10).await?.iter().filter(|o| o.id > 0).count(), 1);
    // The store closes with version 1 out and version 2 a row.
    store.close().await;
    drop(store);

    let store = b.open().await?;
    let at = if b.is_shared() { t0 + 60_000 } else { now_ms() };
    let again = store.claim("tax", at, 10, lease("b", at + 60_000)).await?;
    assert_eq!(again.iter().map(|o| (o.version, o.id < 0)).collect::<Vec<_>>(), [(1, true)]);
    store.settle(again[0].id, Settlement::Delivered, None).await?;
    let next = store.claim("tax", at, 10, lease("b", at + 60_000)).await?;
    assert_eq!(next.iter().map(|o| (o.version, o.id > 0)).collect::<Vec<_>>(), [(2, true)]);
    store.close().await;
    Ok(())
}

/// A version held back as a row while the one before it was out does not overtake that one when
/// its attempt fails and it becomes a row too (with a later id): the retry goes first.
async fn a_held_back_version_waits_for_the_retry_of_the_one_before_it(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let t0 = now_ms();
    created(publish_one(&*store, version("m1", "a")).await?)?;
    let first = store.claim("tax", t0, 10, lease("a", t0 + 60_000)).await?;
    created(publish_one(&*store, version("m1", "b")).await?)?;
    assert!(store.claim("tax", t0, 10, lease("a", t0 + 60_000)).await?.is_empty());
    let at = now_ms() + 1_000;
    store.settle(first[0].id, Settlement::Retry { at_ms: at, error: "503".into() }, None).await?;
    assert!(store.claim("tax", at - 1, 10, lease("a", at + 60_000)).await?.is_empty(), "version 2 overtook the retry");
    let retry = store.claim("tax", at, 10, lease("a", at + 60_000)).await?;
    assert_eq!(retry.iter().map(|o| (o.version, o.attempts)).collect::<Vec<_>>(), [(1, 1)]);
    store.settle(retry[0].id, Settlement::Delivered, None).await?;
    let next = store.claim("tax", at, 10, lease("a", at + 60_000)).await?;
    assert_eq!(next.iter().map(|o| o.version).collect::<Vec<_>>(), [2]);
    store.close().await;
    Ok(())
}

/// A feed that kept rows moves to the log without losing or repeating anything: a reader's old
/// cursor (one number) reads the rows still owed, then the log; a replay is a row, read after
/// the reader's cursor; an entry that cannot be served dies as a row and is passed over; an
/// acknowledgement never passes the end of the log; the position survives a restart.
async fn a_feed_moves_from_rows_to_the_log_and_keeps_its_readers(b: Backend) -> Result<()> {
    let rows = b.into_rows();
    let store = rows.open().await?;
    for k in ["m1", "m2"] {
        created(publish_one(&*store, version(k, "a")).await?)?;
    }
    let old = store.feed("police", FeedCursor::default(), 1).await?.next;
    assert_eq!((old.log, old.to_string()), (None, old.rows.to_string()));
    store.close().await;
    drop(store);
    let b = rows.into_log();
    let store = b.open().await?;
    for k in ["m3", "m4"] {
        created(publish_one(&*store, version(k, "a")).await?)?;
    }
    let keys = |p: &hub::store::FeedPage| p.rows.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
    let page = store.feed("police", old, 10).await?;
    assert_eq!(keys(&page), ["m2", "m3", "m4"]);
    assert!(page.rows[0].id > 0 && page.rows[1].id < 0, "the row owed before, then the log");
    let text = page.next.to_string();
    assert!(text.contains('-'), "{text}");
    // m3 cannot be served: it dies as a row, and a page from before it passes it over.
    store
        .settle(
            page.rows[1].id,
            Settlement::Dead { error: "projection".into() },
            Some(NewEntry::new("police", Action::DeadLetter, "dead")),
        )
        .await?;
    assert_eq!(store.deliveries("dead", Some("police".into()), 10).await?.len(), 1);
    assert_eq!(keys(&store.feed("police", old, 10).await?), ["m2", "m4"]);
    // A replay is a row, read by a reader whose cursor is past the log it replays.
    let replay = vec![("marriage".to_owned(), "m1".to_owned(), 1)];
    store.enqueue("police", replay, NewEntry::new("ops", Action::Admin, "ok")).await?;
    let replayed = store.feed("police", page.next, 10).await?;
    assert_eq!(keys(&replayed), ["m1"]);
    // The acknowledgement settles both old rows (m1 was read, never acknowledged), the replay,
    // and the log up to its end but for what died before (m4).
    let beyond = FeedCursor { rows: replayed.next.rows, log: Some(1_000_000) };
    assert_eq!(store.ack("police", beyond).await?, 4);
    let acked = store.feed_cursor("police").await?;
    assert!(acked.log >= page.next.log && acked.log < beyond.log, "{acked:?}: not up to the end of the log");
    assert!(store.feed("police", FeedCursor::default(), 10).await?.rows.is_empty());
    store.close().await;
    drop(store);

    let store = b.open().await?;
    assert_eq!(store.feed_cursor("police").await?, acked);
    created(publish_one(&*store, version("m5", "a")).await?)?;
    assert_eq!(keys(&store.feed("police", acked, 10).await?), ["m5"]);
    assert_eq!(keys(&store.feed("police", old, 10).await?), ["m5"], "an old cursor reads what is acknowledged");
    store.close().await;
    Ok(())
}

/// Entries that waited in the log past their age become dead letters with an audit entry each;
/// a version not routed to a cursor is not owed to it. The node that serves the cursor expires
/// (on a shared store, the one that holds it: a claim of nothing takes it).
async fn log_entries_expire_and_only_routed_versions_are_owed(b: Backend) -> Result<()> {
    let store = b.open().await?;
    if b.is_shared() {
        assert!(store.claim("tax", now_ms(), 0, lease("a", now_ms() + 60_000)).await?.is_empty());
    }
    created(publish_one(&*store, version("m1", "a")).await?)?;
    created(publish_one(&*store, NewVersion { routes: vec!["police".into()], ..version("m2", "a") }).await?)?;
    created(publish_one(&*store, version("m3", "a")).await?)?;
    let dead = NewEntry::new("tax", Action::DeadLetter, "dead");
    assert_eq!(store.expire("tax", now_ms() + 1, "too old".into(), dead).await?, 2);
    let dead_rows = store.deliveries("dead", Some("tax".into()), 10).await?;
    assert_eq!(dead_rows.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m1", "m3"]);
    assert!(store.claim("tax", now_ms(), 10, lease("a", now_ms() + 60_000)).await?.is_empty());
    let audits = store.audit_after(0, 10).await?;
    let dead_letters: Vec<_> = audits.iter().filter(|e| e.action == "dead_letter").collect();
    assert_eq!(dead_letters.len(), 2);
    assert!(dead_letters.iter().all(|e| e.subjects.len() == 1 && e.record_version == Some(1)));
    store.close().await;
    Ok(())
}

/// A person's access log holds every entry that names them, whichever way the store keeps it:
/// the publish of each version that named them (also after a later version removed them),
/// deliveries and reads of those versions, lookups and refusals that name no stored version, and
/// nothing about a version of the same record that named someone else; newest first, limited.
async fn access_log(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let with = |key: &str, subjects: &[&str]| {
        let mut v = version(key, &format!("{key}-{}", subjects.join("-")));
        v.subjects = subjects.iter().map(|s| s.to_string()).collect();
        v.audit.subjects = v.subjects.clone();
        v
    };
    let about = |action: Action, version: Option<u64>, subjects: &[&str]| NewEntry {
        record_type: Some("marriage".into()),
        record_key: Some("m".into()),
        record_version: version,
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..NewEntry::new("family-planning", action, "ok")
    };
    let v1 = created(publish_one(&*store, with("m", &["ann", "bob"])).await?)?.audit_seq;
    let read1 = store.audit(about(Action::Read, Some(1), &["ann", "bob"])).await?.seq;
    let lookup = store
        .audit(NewEntry { subjects: vec!["bob".into()], ..NewEntry::new("family-planning", Action::Lookup, "ok") })
        .await?
        .seq;
    // Version 2 no longer names bob; version 3 names carl too.
    let v2 = created(publish_one(&*store, with("m", &["ann"])).await?)?.audit_seq;
    let read2 = store.audit(about(Action::Read, Some(2), &["ann"])).await?.seq;
    let refused = store.audit(about(Action::Read, None, &["bob"])).await?.seq;
    let v3 = created(publish_one(&*store, with("m", &["ann", "carl"])).await?)?.audit_seq;
    let other = created(publish_one(&*store, with("n", &["bob"])).await?)?.audit_seq;
    // Two versions of one record in one commit: the first names eve, the second no longer does.
    let both = store.publish(vec![with("p", &["eve", "fay"]), with("p", &["fay"])]).await?;
    let both: Vec<u64> = both.into_iter().map(|r| Ok(created(r?)?.audit_seq)).collect::<Result<_>>()?;
    let seqs = |v: Vec<hub::ledger::Entry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.audit_by_subject("eve", 100).await?), [both[0]]);
    assert_eq!(seqs(store.audit_by_subject("fay", 100).await?), [both[1], both[0]]);
    assert_eq!(seqs(store.audit_by_subject("bob", 100).await?), [other, refused, lookup, read1, v1]);
    assert_eq!(seqs(store.audit_by_subject("ann", 100).await?), [v3, read2, v2, read1, v1]);
    assert_eq!(seqs(store.audit_by_subject("carl", 100).await?), [v3]);
    assert_eq!(seqs(store.audit_by_subject("bob", 2).await?), [other, refused]);
    assert!(store.audit_by_subject("dora", 100).await?.is_empty());
    // The same after a restart.
    store.close().await;
    let store = b.open().await?;
    assert_eq!(seqs(store.audit_by_subject("bob", 100).await?), [other, refused, lookup, read1, v1]);
    store.close().await;
    Ok(())
}

/// A version meant as its record's first writes nothing once the record has one; versions
/// written together all land or none does, only while the record is at the version they were
/// computed from; a version of another type routed to a cursor becomes an outbox row; and the
/// store names every subscription a record's versions were routed to, and its audit entries.
async fn linked_writes_and_first_versions(b: Backend) -> Result<()> {
    let store = b.open().await?;
    let first = || NewVersion { first_only: true, ..version("m1", "a") };
    created(publish_one(&*store, first()).await?)?;
    let heads = store.audit_after(0, 100).await?.len();
    assert!(matches!(store.publish(vec![first()]).await?.pop(), Some(Err(StoreError::NotFirst))));
    assert_eq!(store.audit_after(0, 100).await?.len(), heads, "nothing written");
    let notice = NewVersion {
        record_type: "notice".into(),
        key: "tax/m1/2".into(),
        routes: vec!["tax".into()],
        audit: NewEntry { record_type: Some("notice".into()), ..version("m1", "n").audit },
        ..version("m1", "n")
    };
    let pair = || vec![version("m1", "b"), notice.clone()];
    assert_eq!(store.publish_linked(pair(), Some(7)).await?, Linked::Stale);
    assert_eq!(store.latest("marriage", "m1").await?.map(|v| v.version), Some(1), "nothing written");
    match store.publish_linked(pair(), Some(1)).await? {
        Linked::Done(r) => assert_eq!(
            r.iter().map(|r| (r.record_type.as_str(), r.version)).collect::<Vec<_>>(),
            [("marriage", 2), ("notice", 1)]
        ),
        other => bail!("expected both versions, got {other:?}"),
    }
    let rows = store.deliveries("pending", Some("tax".into()), 10).await?;
    assert!(rows.iter().any(|o| o.record_type == "notice" && o.key == "tax/m1/2"), "{rows:?}");
    assert_eq!(store.routed("marriage", "m1").await?, ["police", "tax"]);
    assert!(store.routed("marriage", "nobody").await?.is_empty());
    let about = store.audit_by_record("marriage", "m1", 10).await?;
    assert_eq!(about.iter().map(|e| e.record_version).collect::<Vec<_>>(), [Some(2), Some(1)]);
    store.close().await;
    Ok(())
}

macro_rules! conformance {
    ($backend:ident: $($name:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    match super::Backend::$backend().await? {
                        Some(b) => super::$name(b).await,
                        None => Ok(()),
                    }
                }
            )+
        }
    };
}

conformance!(sqlite: publish_is_atomic_and_complete, a_failed_write_leaves_nothing, idempotency, ordering, leases,
    dead_letters_and_expiry, feeds, schedule_claims, restart, repeats_within_one_commit, access_log);
conformance!(sqlite_log: publish_is_atomic_and_complete, a_failed_write_leaves_nothing, idempotency, ordering, leases,
    dead_letters_and_expiry, feeds, schedule_claims, restart, repeats_within_one_commit, access_log,
    a_cursor_restarts_from_its_last_settlement_and_a_failed_entry_goes_once,
    a_feed_moves_from_rows_to_the_log_and_keeps_its_readers, log_entries_expire_and_only_routed_versions_are_owed,
    a_version_held_back_as_a_row_waits_for_the_one_before_it_after_a_restart,
    a_held_back_version_waits_for_the_retry_of_the_one_before_it, linked_writes_and_first_versions);
conformance!(postgres: publish_is_atomic_and_complete, a_failed_write_leaves_nothing, idempotency, ordering, leases,
    dead_letters_and_expiry, feeds, schedule_claims, restart, repeats_within_one_commit, access_log);
conformance!(postgres_log: publish_is_atomic_and_complete, a_failed_write_leaves_nothing, idempotency, ordering,
    leases, dead_letters_and_expiry, feeds, schedule_claims, restart, repeats_within_one_commit, access_log,
    a_cursor_restarts_from_its_last_settlement_and_a_failed_entry_goes_once,
    a_feed_moves_from_rows_to_the_log_and_keeps_its_readers, log_entries_expire_and_only_routed_versions_are_owed,
    a_version_held_back_as_a_row_waits_for_the_one_before_it_after_a_restart,
    a_held_back_version_waits_for_the_retry_of_the_one_before_it, linked_writes_and_first_versions);

/// PostgreSQL only: two stores on one database (two nodes) publishing at once write one chain,
/// with every version once and no gap, and a claim hands each entry to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_share_one_chain_and_one_queue() -> Result<()> {
    let Some(b) = Backend::postgres().await? else { return Ok(()) };
    let (n1, n2) = (b.open().await?, b.open().await?);
    let mut tasks = Vec::new();
    for (i, node) in [n1.clone(), n2.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for round in 0..40 {
                // Both nodes write the same records: versions must still count up without a gap.
                let batch = (0..5).map(|k| version(&format!("m{k}"), &format!("n{i}-r{round}"))).collect();
                for r in node.publish(batch).await? {
                    receipts.push(created(r?)?);
                }
            }
            anyhow::Ok(receipts)
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await??);
    }
    assert_eq!(receipts.len(), 400);
    let mut seqs: Vec<u64> = receipts.iter().map(|r| r.audit_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>(), "audit sequence numbers repeat or have gaps");
    for k in 0..5 {
        let versions: Vec<u64> = n1.history("marriage", &format!("m{k}")).await?.iter().map(|v| v.version).collect();
        assert_eq!(versions, (1..=80).collect::<Vec<_>>());
    }
    let report = n2.verify_audit().await?.map_err(anyhow::Error::from)?;
    assert_eq!((report.entries, report.checkpoints), (400, 100));

    // Both nodes claim at once: every entry goes to exactly one of them.
    let t = now_ms();
    let (c1, c2) = tokio::join!(
        n1.claim("tax", t, 1000, lease("node-1", t + 30_000)),
        n2.claim("tax", t, 1000, lease("node-2", t + 30_000))
    );
    let (c1, c2) = (c1?, c2?);
    assert_eq!(c1.len() + c2.len(), 5, "one entry per record may go, once");
    assert!(c1.iter().all(|a| c2.iter().all(|b| a.id != b.id)));
    n1.close().await;
    n2.close().await;
    Ok(())
}

/// PostgreSQL only: two nodes serving `tax` from the log. One node at a time holds the cursor and
/// hands out its log; the other gets none of it, but may take the failed entries' rows that are
/// not behind the log. When the holder stops (its leases given back) the other takes the cursor
/// over from its durable position: nothing settled goes again, nothing owed is lost, and a
/// version never overtakes the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_hand_a_cursor_over() -> Result<()> {
    let Some(b) = Backend::postgres_log().await? else { return Ok(()) };
    let (n1, n2) = (b.open().await?, b.open().await?);
    for k in 0..6 {
        created(publish_one(&*n1, version(&format!("m{k}"), "a")).await?)?;
    }
    let t0 = now_ms();
    let one = n1.claim("tax", t0, 4, lease("node-1", t0 + 30_000)).await?;
    assert_eq!(one.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3"]);
    assert!(n2.claim("tax", t0, 10, lease("node-2", t0 + 30_000)).await?.is_empty(), "two nodes hand out one log");
    assert_eq!(n2.next_due("tax").await?, Some(t0 + 30_000), "the other node looks again when the lease ends");
    // m0 delivered, m1 failed (a row, due at once, which either node may take), m2 and m3 still
    // out; m2's second version is published from the other node.
    n1.settle_many(vec![
        (one[0].id, Settlement::Delivered, None),
        (one[1].id, Settlement::Retry { at_ms: t0, error: "503".into() }, None),
    ])
    .await?;
    created(publish_one(&*n2, version("m2", "b")).await?)?;
    let retried = n2.claim("tax", t0, 10, lease("node-2", t0 + 30_000)).await?;
    assert_eq!(retried.iter().map(|o| (o.key.as_str(), o.attempts)).collect::<Vec<_>>(), [("m1", 1)]);
    // The holder goes on: m4, m5; m2's second version waits for its first, still out.
    let more = n1.claim("tax", t0, 10, lease("node-1", t0 + 30_000)).await?;
    assert_eq!(more.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["m4", "m5"]);
    n1.settle(more[0].id, Settlement::Delivered, None).await?;
    // Node 1 stops with m2, m3 and m5 out; node 2 takes the cursor over from where it was durable,
    // before m2: m4, settled past it, goes again (at least once), m0 does not.
    assert_eq!(n1.release_leases("node-1").await?, 3);
    n1.close().await;
    // The held-back row fell due when it was made.
    let t1 = now_ms();
    let taken = n2.claim("tax", t1, 10, lease("node-2", t1 + 60_000)).await?;
    let mut got: Vec<(&str, u64)> = taken.iter().map(|o| (o.key.as_str(), o.version)).collect();
    got.sort_unstable();
    assert_eq!(got, [("m2", 1), ("m3", 1), ("m4", 1), ("m5", 1)], "owed entries were lost or m0 went again");
    n2.settle_many(taken.iter().map(|o| (o.id, Settlement::Delivered, None)).collect()).await?;
    let last = n2.claim("tax", t1, 10, lease("node-2", t1 + 60_000)).await?;
    assert_eq!(last.iter().map(|o| (o.key.as_str(), o.version)).collect::<Vec<_>>(), [("m2", 2)]);
    n2.settle(last[0].id, Settlement::Delivered, None).await?;
    n2.settle(retried[0].id, Settlement::Delivered, None).await?;
    assert!(n2.claim("tax", t1, 10, lease("node-2", t1 + 60_000)).await?.is_empty());
    let counts = n2.delivery_counts().await?;
    assert_eq!(counts.iter().find(|c| c.subscription == "tax").map(|c| c.pending).unwrap_or(0), 0);
    n2.close().await;
    Ok(())
}

/// PostgreSQL only: a node started with other keys than the cluster's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_keys_is_refused() -> Result<()> {
    let Some(b) = Backend::postgres().await? else { return Ok(()) };
    b.open().await?.close().await;
    let Backend::Postgres { db, .. } = &b else { unreachable!() };
    let stranger = tempfile::tempdir()?;
    let keys = Arc::new(HubKeys::load_or_create(stranger.path(), Default::default())?);
    let opts = PgOptions { url: db.url.clone(), max_connections: 2, group_commit_max: 8, checkpoint_every: 4 };
    match PostgresStore::open(keys, opts).await {
        Ok(_) => bail!("a node with other keys was let in"),
        Err(e) => assert!(e.to_string().contains("same keys directory"), "{e}"),
    }
    Ok(())
}
