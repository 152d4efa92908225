//! The subject index off the commit path: the subjects of the versions committed since the last
//! merge are held here, in memory, and merged into `subjects` by the writer in runs sorted by
//! subject hash, a slice beside each group commit; `subjects_merged` says through which audit
//! sequence the table holds them.
//!
//! Written inside each publish, the keyed hashes (random by design) put a B-tree insert at a
//! random leaf for every subject of every record: a 4 KiB page in the write-ahead log and in the
//! checkpoint for ~100 bytes of index (BENCHMARKS.md, the subject index off the commit path).
//! Sorted and in a batch, neighbouring keys share their leaf.
//!
//! The table is a superset: a merge inserts and never deletes, so it names every record some
//! merged version named (which is also what a person's access log needs). A lookup takes the
//! records the table and the tail name and keeps those whose latest version names the person,
//! so it is exact whatever the table holds beyond the truth. The tail is read before the table:
//! a version leaves the tail only after the merge that wrote it has committed, so a lookup that
//! no longer finds it here reads a table that has it. A version joins the tail before its group's
//! replies go to the syncer, so a receipt is never given for a version a lookup cannot find.
//! After a crash the tail is read back from the records past the mark, the part of the log a
//! merge had not yet reached (a few thousand versions; nothing else is read at start).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use rusqlite::{params, Connection};

use crate::store::StoreError;

/// Versions the tail holds before the writer starts merging them: a run of ~16,000 keys for a
/// record type with two subjects, written over the next few dozen group commits. The larger the
/// run, the more of its keys share a leaf; the tail holds a few MiB.
pub const MERGE_AT: usize = 8192;

/// A row of `subjects`: the version, and which of its subjects.
type IndexKey = (Arc<Staged>, usize);

/// One committed version's place in the index.
#[derive(Debug, Clone)]
pub(super) struct Staged {
    pub seq: i64,
    pub record_type: String,
    pub key: String,
    pub subjects: Vec<String>,
}

impl Staged {
    /// The `subjects` row of subject `i`, in the table's order.
    fn row(&self, i: usize) -> (&str, &str, &str) {
        (&self.subjects[i], &self.record_type, &self.key)
    }
}

/// The tail's map key for a subject hash. Versions are found by it and then checked, so two
/// subjects sharing one only cost a comparison; the map holds no copy of the hashes' text.
fn slot(subject_hash: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject_hash.hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct Inner {
    /// In audit sequence order: the writer commits in that order.
    versions: VecDeque<Arc<Staged>>,
    /// [`slot`] of a subject → the versions in `versions` naming a subject of that slot.
    by_subject: HashMap<u64, Vec<Arc<Staged>>>,
}

/// What the table does not hold yet.
#[derive(Default)]
pub(super) struct Tail {
    inner: RwLock<Inner>,
}

impl Tail {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every change below is made whole under the lock before it is released.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the versions past the merge mark back from the log (at start).
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let through: i64 = conn.query_row("SELECT through FROM subjects_merged WHERE id = 1", [], |r| r.get(0))?;
        let mut stmt =
            conn.prepare("SELECT audit_seq, type, key, subjects FROM records WHERE audit_seq > ?1 ORDER BY audit_seq")?;
        let rows = stmt.query_map(params![through], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut staged = Vec::new();
        for row in rows {
            let (seq, record_type, key, subjects) = row?;
            let subjects: Vec<String> = serde_json::from_str(&subjects)
                .map_err(|e| StoreError::Corrupt(format!("subjects of the record at audit sequence {seq}: {e}")))?;
            staged.push(Staged { seq, record_type, key, subjects });
        }
        let tail = Self::default();
        tail.add(staged);
        Ok(tail)
    }

    /// Versions not merged yet.
    pub(super) fn len(&self) -> usize {
        self.read().versions.len()
    }

    /// Takes in versions whose group has committed.
    pub(super) fn add(&self, staged: Vec<Staged>) {
        if staged.is_empty() {
            return;
        }
        let mut inner = self.write();
        for v in staged {
            let v = Arc::new(v);
            for s in &v.subjects {
                inner.by_subject.entry(slot(s)).or_default().push(v.clone());
            }
            inner.versions.push_back(v);
        }
    }

    /// The records versions in the tail name this subject in, each once.
    pub(super) fn candidates(&self, subject_hash: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match self.read().by_subject.get(&slot(subject_hash)) {
            Some(list) => list
                .iter()
                .filter(|v| v.subjects.iter().any(|s| s == subject_hash))
                .map(|v| (v.record_type.clone(), v.key.clone()))
                .collect(),
            None => Vec::new(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// The oldest `n` versions' keys sorted as the table orders them, and the audit sequence
    /// of the last of them.
    fn oldest(&self, n: usize) -> Option<(Vec<IndexKey>, i64)> {
        let inner = self.read();
        let through = inner.versions.get(n.min(inner.versions.len()).checked_sub(1)?)?.seq;
        let mut keys: Vec<IndexKey> =
            inner.versions.iter().take(n).flat_map(|v| (0..v.subjects.len()).map(|i| (v.clone(), i))).collect();
        keys.sort_unstable_by(|(a, i), (b, j)| a.row(*i).cmp(&b.row(*j)));
        keys.dedup_by(|(a, i), (b, j)| a.row(*i) == b.row(*j));
        Some((keys, through))
    }

    /// Lets go of the versions through `through`, which the table now holds.
    fn drop_through(&self, through: i64) {
        let mut inner = self.write();
        while inner.versions.front().is_some_and(|v| v.seq <= through) {
            let Some(v) = inner.versions.pop_front() else { break };
            for s in &v.subjects {
                let key = slot(s);
                let emptied = match inner.by_subject.get_mut(&key) {
                    Some(list) => {
                        // Once per subject it names: a version naming one subject twice is in
                        // the list twice.
                        if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, &v)) {
                            list.swap_remove(i);
                        }
                        list.is_empty()
                    }
                    None => false,
                };
                if emptied {
                    inner.by_subject.remove(&key);
                }
            }
        }
    }
}

/// Keys written beside one group commit at least: a lone publish still moves a run on.
const SLICE_MIN: usize = 256;

/// The merge in progress: the oldest versions of the tail as one run sorted by key, written a
/// slice at a time inside the writer's group commits. One transaction for the whole run held the
/// writer (and every receipt behind it) for tens of milliseconds; consecutive keys of a sorted
/// run share their leaves in whichever commit they go, so slices keep the run's economy.
#[derive(Default)]
pub(super) struct Merger {
    run: Vec<IndexKey>,
    /// Keys of `run` committed.
    next: usize,
    /// The audit sequence of the run's last version.
    through: i64,
}

/// What one slice wrote, for [`Merger::committed`] once its group is on disk.
pub(super) struct Slice {
    end: usize,
    completes: Option<i64>,
}

impl Merger {
    /// Whether a group commit should carry a slice: a run is under way, or the tail has `at`
    /// versions to start one.
    pub(super) fn due(&self, tail: &Tail, at: usize) -> bool {
        self.next < self.run.len() || tail.len() >= at
    }

    /// Inside the group's transaction (when [`Merger::due`]): the next slice of the run, at least
    /// `SLICE_MIN` keys and twice the keys the group itself staged (so that runs outpace
    /// publishing), starting a run of the oldest `at` versions if none is under way. The last
    /// slice moves the mark.
    pub(super) fn step(
        &mut self,
        conn: &Connection,
        tail: &Tail,
        at: usize,
        staged_keys: usize,
    ) -> Result<Option<Slice>, rusqlite::Error> {
        if self.next >= self.run.len() {
            let Some((run, through)) = tail.oldest(at) else { return Ok(None) };
            *self = Merger { run, next: 0, through };
        }
        let end = self.run.len().min(self.next + SLICE_MIN.max(2 * staged_keys));
        let mut insert =
            conn.prepare_cached("INSERT OR IGNORE INTO subjects (subject_hash, type, key) VALUES (?1, ?2, ?3)")?;
        for (v, i) in &self.run[self.next..end] {
            let (s, t, k) = v.row(*i);
            insert.execute(params![s, t, k])?;
        }
        let completes = (end == self.run.len()).then_some(self.through);
        if let Some(through) = completes {
            conn.prepare_cached("UPDATE subjects_merged SET through = MAX(through, ?1) WHERE id = 1")?
                .execute(params![through])?;
        }
        Ok(Some(Slice { end, completes }))
    }

    /// The group of `slice` committed: the run moves on, and a run written whole leaves the tail.
    pub(super) fn committed(&mut self, tail: &Tail, slice: Slice) {
        self.next = slice.end;
        if let Some(through) = slice.completes {
            tail.drop_through(through);
            *self = Merger::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(seq: i64, key: &str, subjects: &[&str]) -> Staged {
        Staged {
            seq,
            record_type: "t".into(),
            key: key.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE records (audit_seq INTEGER PRIMARY KEY, type TEXT, key TEXT, subjects TEXT);
             CREATE TABLE subjects (subject_hash TEXT, type TEXT, key TEXT, PRIMARY KEY (subject_hash, type, key)) WITHOUT ROWID;
             CREATE TABLE subjects_merged (id INTEGER PRIMARY KEY CHECK (id = 1), through INTEGER NOT NULL);
             INSERT INTO subjects_merged VALUES (1, 0);",
        )
        .unwrap();
        conn
    }

    fn table(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn.prepare("SELECT subject_hash, key FROM subjects ORDER BY 1, 2").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    /// Runs slices in their own transactions until the run is done, as group commits would.
    fn merge(conn: &Connection, tail: &Tail, at: usize) -> Result<usize, rusqlite::Error> {
        let mut merger = Merger::default();
        let mut keys = 0;
        loop {
            if !merger.due(tail, at) {
                return Ok(keys);
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            match merger.step(conn, tail, at, 0) {
                Ok(Some(slice)) => {
                    conn.execute_batch("COMMIT")?;
                    keys = slice.end;
                    let done = slice.completes.is_some();
                    merger.committed(tail, slice);
                    if done {
                        return Ok(keys);
                    }
                }
                Ok(None) => {
                    conn.execute_batch("COMMIT")?;
                    return Ok(keys);
                }
                Err(e) => {
                    conn.execute_batch("ROLLBACK")?;
                    return Err(e);
                }
            }
        }
    }

    #[test]
    fn a_run_longer_than_a_slice_leaves_the_tail_only_with_its_last_slice() {
        let conn = db();
        let tail = Tail::default();
        let many: Vec<Staged> = (1..=200).map(|i| staged(i, &format!("k{i:03}"), &["p", "q"])).collect();
        tail.add(many);
        let mut merger = Merger::default();
        conn.execute_batch("BEGIN").unwrap();
        let first = merger.step(&conn, &tail, 150, 0).unwrap().unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!((first.end, first.completes), (256, None));
        merger.committed(&tail, first);
        // Written in part: still whole in the tail, and the mark has not moved.
        assert_eq!(tail.len(), 200);
        assert_eq!(tail.candidates("q").len(), 200);
        let through: i64 = conn.query_row("SELECT through FROM subjects_merged", [], |r| r.get(0)).unwrap();
        assert_eq!(through, 0);
        // A slice whose group rolls back is written again.
        conn.execute_batch("BEGIN").unwrap();
        let lost = merger.step(&conn, &tail, 150, 0).unwrap().unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        assert_eq!(lost.end, 300);
        conn.execute_batch("BEGIN").unwrap();
        let last = merger.step(&conn, &tail, 150, 0).unwrap().unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!((last.end, last.completes), (300, Some(150)));
        merger.committed(&tail, last);
        assert_eq!(tail.len(), 50);
        assert_eq!(table(&conn).len(), 300);
        let through: i64 = conn.query_row("SELECT through FROM subjects_merged", [], |r| r.get(0)).unwrap();
        assert_eq!(through, 150);
    }

    #[test]
    fn a_version_is_found_in_the_tail_until_its_merge_has_committed_and_then_in_the_table() {
        let conn = db();
        let tail = Tail::default();
        tail.add(vec![staged(1, "a", &["p", "q"]), staged(2, "b", &["q"]), staged(3, "a", &["p"])]);
        assert_eq!(tail.candidates("q"), [("t".to_owned(), "a".to_owned()), ("t".to_owned(), "b".to_owned())]);
        assert_eq!(tail.candidates("p"), [("t".to_owned(), "a".to_owned())]);

        // The two oldest: the third version stays, with its subject.
        assert_eq!(merge(&conn, &tail, 2).unwrap(), 3);
        assert_eq!(tail.len(), 1);
        assert!(tail.candidates("q").is_empty());
        assert_eq!(tail.candidates("p"), [("t".to_owned(), "a".to_owned())]);
        let through: i64 = conn.query_row("SELECT through FROM subjects_merged", [], |r| r.get(0)).unwrap();
        assert_eq!(through, 2);
        assert_eq!(table(&conn), [("p".into(), "a".into()), ("q".into(), "a".into()), ("q".into(), "b".into())]);

        assert_eq!(merge(&conn, &tail, 1).unwrap(), 1);
        assert_eq!(tail.len(), 0);
        assert!(tail.candidates("p").is_empty());
        assert_eq!(merge(&conn, &tail, 1).unwrap(), 0);
    }

    #[test]
    fn a_merge_the_database_refuses_leaves_the_tail_whole() {
        let conn = db();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON subjects WHEN NEW.key = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let tail = Tail::default();
        tail.add(vec![staged(1, "a", &["p"]), staged(2, "boom", &["q"])]);
        assert!(merge(&conn, &tail, 2).is_err());
        assert_eq!(tail.len(), 2);
        assert_eq!(tail.candidates("p"), [("t".to_owned(), "a".to_owned())]);
        assert!(table(&conn).is_empty(), "a refused merge wrote part of its keys");
        let through: i64 = conn.query_row("SELECT through FROM subjects_merged", [], |r| r.get(0)).unwrap();
        assert_eq!(through, 0);
    }

    #[test]
    fn after_a_restart_the_tail_is_the_log_past_the_mark() {
        let conn = db();
        conn.execute_batch(
            r#"INSERT INTO records VALUES (1, 't', 'a', '["p"]'), (2, 't', 'b', '["q"]'), (3, 't', 'c', '["p","q"]');
               UPDATE subjects_merged SET through = 1;"#,
        )
        .unwrap();
        let tail = Tail::load(&conn).unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!(tail.candidates("p"), [("t".to_owned(), "c".to_owned())]);
        assert_eq!(tail.candidates("q"), [("t".to_owned(), "b".to_owned()), ("t".to_owned(), "c".to_owned())]);
    }
}
