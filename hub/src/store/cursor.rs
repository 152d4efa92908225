//! Subscriptions served as cursors over the log, the part both engines share. Each has a cursor
//! (a position in the audit sequence) and a slot, its bit in the record row's `routes`: a version
//! routed to it is owed while it lies past the cursor, and nothing else is written for it at
//! publish. An outbox row is made only for what cannot go in log order: a failed attempt (retry,
//! dead letter) and a version held back behind another of the same record. In memory, per
//! subscription: the entries handed out and not yet settled, which bound how far the cursor may
//! move. A restart (or another node taking the cursor over) starts again from the durable
//! position: entries between it and the last settlement go again (at least once, same event id).
//! A pull feed is a cursor too, moved by its department's acknowledgements; its readers say where
//! they stand themselves (`FeedCursor`), so nothing of it is held in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;

use super::{event_id, Lease, OutboxRow, Settlement, StoreError};
use crate::ledger::NewEntry;

/// Bits of `routes`: the most subscriptions served from the log. Past them a subscription keeps
/// outbox rows, as every subscription did before.
pub(crate) const SLOTS: i64 = 63;

/// How far past its durable position a cursor may have scanned before the position is written
/// without a settlement: a subscription whose filter lets little through has few settlements,
/// and a restart would walk all of it again.
pub(crate) const WRITE_AHEAD: i64 = 4096;

/// The id of a log entry: below zero (outbox rows count up from one), from its record's audit
/// sequence and the subscription's slot, so it is the same in every claim and listing.
pub(crate) fn entry_id(seq: i64, slot: i64) -> i64 {
    -(seq * 64 + slot)
}

/// The audit sequence and slot of a log entry's id.
pub(crate) fn split_id(id: i64) -> (i64, i64) {
    let n = -id;
    (n / 64, n % 64)
}

/// How far a subscription has got, in memory.
pub(crate) struct State {
    /// The position on disk.
    pub durable: i64,
    /// Every routed entry at or below this one was handed out, settled, or made a row.
    pub scanned: i64,
    /// Entries handed out and not settled, by audit sequence.
    pub out: BTreeMap<i64, Out>,
    /// Which tenure of the cursor this state belongs to: a store shared by several nodes lets one
    /// node at a time serve a cursor, and a node that takes it (back) over starts again from the
    /// durable position. Settlements of an earlier tenure leave the state alone.
    pub tenure: i64,
    /// Until when this node holds the cursor (ms; a store of one node always does).
    pub held_until: i64,
    /// Until when another node holds it, as last seen (ms).
    pub other_until: i64,
}

impl State {
    /// A cursor at `position`, nothing handed out.
    pub fn at(position: i64, tenure: i64) -> Self {
        Self {
            durable: position,
            scanned: position,
            out: BTreeMap::new(),
            tenure,
            held_until: i64::MAX,
            other_until: 0,
        }
    }

    /// The furthest the cursor may move once the entries `settling` are settled: every routed
    /// entry at or below it is then settled or a row.
    pub fn frontier(&self, settling: &[i64]) -> i64 {
        self.out.keys().find(|s| !settling.contains(s)).map_or(self.scanned, |s| s - 1)
    }

    /// Records (type, key) with a version out: another version of them must wait.
    pub fn busy(&self) -> HashSet<(String, String)> {
        self.out.values().map(|o| (o.row.record_type.clone(), o.row.key.clone())).collect()
    }
}

/// An entry handed out.
pub(crate) struct Out {
    pub row: OutboxRow,
    pub lease: Lease,
    /// Its settlement is on its way to disk: not handed out again, and still bounds the cursor.
    pub settling: bool,
}

/// A subscription served from the log.
pub(crate) struct Cursor {
    pub name: String,
    pub record_type: String,
    pub slot: i64,
    /// A pull feed: nothing is handed out, and the cursor moves with acknowledgements.
    pub feed: bool,
    pub state: tokio::sync::Mutex<State>,
}

impl Cursor {
    pub fn bit(&self) -> i64 {
        1 << self.slot
    }
}

/// The subscriptions served from the log.
#[derive(Default)]
pub(crate) struct Cursors {
    pub by_name: HashMap<String, Arc<Cursor>>,
    pub by_slot: HashMap<i64, Arc<Cursor>>,
}

impl Cursors {
    /// The cursors of `taken` (name, slot, position, tenure) among `wanted`. In a store `shared`
    /// by several nodes, a node holds a cursor only once it has taken its lease.
    pub fn of(taken: Vec<(String, i64, i64, i64)>, wanted: &[super::FromLog], shared: bool) -> Self {
        let mut cursors = Cursors::default();
        for (name, slot, position, tenure) in taken {
            let Some(s) = wanted.iter().find(|s| s.name == name) else { continue };
            let c = Arc::new(Cursor {
                name: name.clone(),
                record_type: s.record_type.clone(),
                slot,
                feed: s.feed,
                state: State { held_until: if shared { 0 } else { i64::MAX }, ..State::at(position, tenure) }.into(),
            });
            cursors.by_slot.insert(slot, c.clone());
            cursors.by_name.insert(name, c);
        }
        cursors
    }

    /// The bits of each version of a case transition (record, case, events, in the order the
    /// stores write them), taken from their routes as [`Cursors::take_bits`] does.
    pub fn take_case_bits(&self, w: &mut super::CaseWrite) -> Vec<i64> {
        let versions = w.record.iter_mut().map(|(v, _)| v).chain([&mut w.case]).chain(w.events.iter_mut());
        versions.map(|v| self.take_bits(&v.record_type, &mut v.routes)).collect()
    }

    /// The bits of each of `versions` (the routes they keep are outbox rows).
    pub fn take_all_bits(&self, versions: &mut [super::NewVersion]) -> Vec<i64> {
        versions.iter_mut().map(|v| self.take_bits(&v.record_type, &mut v.routes)).collect()
    }

    /// The bits of the routes served from the log; `routes` keeps the others (outbox rows). A
    /// cursor reads its own record type's rows only, so a version of another type routed to it
    /// (a notice of a correction, say) is an outbox row.
    pub fn take_bits(&self, record_type: &str, routes: &mut Vec<String>) -> i64 {
        let mut bits = 0i64;
        routes.retain(|r| match self.by_name.get(r).filter(|c| c.record_type == record_type) {
            Some(c) => {
                bits |= c.bit();
                false
            }
            None => true,
        });
        bits
    }
}

/// Slots for `names`: those `taken` already have keep theirs, a new one gets the first free slot.
/// Returns (name, slot) for the new ones; a name left without a slot is in neither.
pub(crate) fn new_slots(names: &[String], taken: &HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut free = (0..SLOTS).filter(|s| !taken.values().any(|t| t == s));
    let mut out = Vec::new();
    for name in names.iter().filter(|n| !taken.contains_key(*n)) {
        match free.next() {
            Some(slot) => out.push((name.clone(), slot)),
            None => {
                tracing::warn!(subscription = %name, "every log slot is taken; this subscription keeps outbox rows")
            }
        }
    }
    out
}

/// A routed entry past a position, as a scan finds it.
pub(crate) struct Scanned {
    pub row: OutboxRow,
    /// An outbox row already holds this version (made before a restart the cursor did not see).
    pub is_row: bool,
    /// An earlier version of the record waits as a pending row.
    pub behind_row: bool,
}

/// The earlier of two times either of which may be missing.
pub(crate) fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |t| t.timestamp_millis())
}

/// The pending entry of a routed version in the log of `cursor` (name, record type, slot).
pub(crate) fn log_row(cursor: (&str, &str, i64), seq: i64, key: String, version: i64, received_at: &str) -> OutboxRow {
    let (name, record_type, slot) = cursor;
    let created = millis(received_at);
    OutboxRow {
        id: entry_id(seq, slot),
        subscription: name.to_owned(),
        record_type: record_type.to_owned(),
        event_id: event_id(name, record_type, &key, version as u64),
        key,
        version: version as u64,
        state: "pending".into(),
        attempts: 0,
        next_attempt_at: created,
        created_at: created,
        last_error: None,
    }
}

/// Where a subscription's cursor stands, for its outbox rows: a row waits while an earlier
/// version of its record routed to the cursor (`bit`) lies past `position`, still owed from the
/// log. Without it a version held back as a row, or left as one by a crash, could overtake the
/// version it waited for when the cursor walks that way again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Behind {
    pub bit: i64,
    pub position: i64,
}

/// What an engine gives the claim of a cursor.
#[async_trait]
pub(crate) trait Log: Send + Sync {
    /// Due pending outbox rows of the subscription, at most `limit`, leaving out records in `busy`
    /// (a version of theirs is out from the log) and rows behind an earlier version of their
    /// record still owed past `behind` (the cursor's bit and durable position), leased to `lease`.
    #[allow(clippy::too_many_arguments)]
    async fn due_rows(
        &self,
        subscription: &str,
        behind: Behind,
        now_ms: i64,
        limit: u32,
        lease: &Lease,
        busy: HashSet<(String, String)>,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Up to `limit` entries routed to `cursor` after `after`, oldest first, and how far the scan
    /// got: to the last entry when it found `limit`, else to the end of the log it saw.
    async fn scan(&self, cursor: &Cursor, after: i64, limit: u32) -> Result<(Vec<Scanned>, i64), StoreError>;
    /// Makes pending rows of `held` (entries that cannot go in log order now) and moves the
    /// cursor to `position`, in one transaction.
    async fn hold(&self, cursor: &Cursor, held: Vec<OutboxRow>, position: i64) -> Result<(), StoreError>;
    /// Entries the log owes `cursor`, as pending rows, at most `limit`.
    async fn pending(&self, cursor: &Cursor, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;
}

/// Adds to `rows`, up to `limit` in all, what the log owes subscription `one`, or every
/// subscription in slot order.
pub(crate) async fn add_pending(
    log: &dyn Log,
    cursors: &Cursors,
    one: Option<&str>,
    limit: u32,
    rows: &mut Vec<OutboxRow>,
) -> Result<(), StoreError> {
    let mut subs: Vec<&Arc<Cursor>> = match one {
        Some(name) => cursors.by_name.get(name).into_iter().collect(),
        None => cursors.by_name.values().collect(),
    };
    subs.sort_by_key(|c| c.slot);
    for c in subs {
        let room = limit.saturating_sub(rows.len() as u32);
        if room == 0 {
            break;
        }
        rows.extend(log.pending(c, room).await?);
    }
    Ok(())
}

/// Claims for a subscription served from the log: its due rows first (retries and held-back
/// versions are older than anything past the cursor), then entries whose lease ran out, then the
/// log past what was handed out.
pub(crate) async fn claim(
    log: &dyn Log,
    cursor: &Cursor,
    st: &mut State,
    now_ms: i64,
    limit: u32,
    lease: Lease,
) -> Result<Vec<OutboxRow>, StoreError> {
    // A settlement writes the position as far as the entries out at that moment allowed, so two
    // settling at once can leave it behind; once nothing is out, the scan's end is the cursor's,
    // and rows waiting behind the log need it on disk.
    if st.out.is_empty() && st.scanned > st.durable {
        log.hold(cursor, Vec::new(), st.scanned).await?;
        st.durable = st.scanned;
    }
    let mut busy = st.busy();
    let behind = Behind { bit: cursor.bit(), position: st.durable };
    let mut rows = log.due_rows(&cursor.name, behind, now_ms, limit, &lease, busy.clone()).await?;
    busy.extend(rows.iter().map(|r| (r.record_type.clone(), r.key.clone())));
    for o in st.out.values_mut() {
        if rows.len() as u32 >= limit {
            break;
        }
        if !o.settling && o.lease.until_ms <= now_ms {
            o.lease = lease.clone();
            rows.push(o.row.clone());
        }
    }
    let room = limit.saturating_sub(rows.len() as u32);
    if room == 0 {
        return Ok(rows);
    }
    let (found, upto) = log.scan(cursor, st.scanned, room).await?;
    let (mut held, mut handed) = (Vec::new(), Vec::new());
    for s in found {
        if s.is_row {
            continue;
        }
        let record = (s.row.record_type.clone(), s.row.key.clone());
        if s.behind_row || busy.contains(&record) {
            held.push(s.row);
            continue;
        }
        busy.insert(record);
        handed.push(s.row.id);
        st.out.insert(split_id(s.row.id).0, Out { row: s.row.clone(), lease: lease.clone(), settling: false });
        rows.push(s.row);
    }
    let before = st.scanned;
    st.scanned = upto;
    let position = st.frontier(&[]);
    if !held.is_empty() || position > st.durable + WRITE_AHEAD {
        if let Err(e) = log.hold(cursor, held, position).await {
            st.scanned = before;
            for id in handed {
                st.out.remove(&split_id(id).0);
            }
            return Err(e);
        }
        st.durable = st.durable.max(position);
    }
    Ok(rows)
}

/// A settlement of log entries on its way to disk: the cursor, its entries, where it may move.
pub(crate) struct Settling {
    pub cursor: Arc<Cursor>,
    pub seqs: Vec<i64>,
    pub position: i64,
    pub tenure: i64,
}

/// A settlement as the store's callers make it: an entry id, how it ended, its audit entry.
pub(crate) type ById = (i64, Settlement, Option<NewEntry>);

/// A settlement of an entry handed out from the log.
pub(crate) type OfRow = (OutboxRow, Settlement, Option<NewEntry>);

/// The log entries among a batch's settlements, by cursor.
#[derive(Default)]
pub(crate) struct LogSettlements {
    /// Entries of feeds that cannot be served, by audit sequence.
    pub feeds: Vec<(Arc<Cursor>, Vec<ById>)>,
    /// Entries of push cursors that were out, marked settling.
    pub pushes: Vec<(Settling, Vec<OfRow>)>,
}

/// Takes the log entries out of `settlements` (rows stay): each push cursor's entries that are
/// out are marked settling, with the position its cursor may take once they are on disk. An
/// entry not out (settled already, by an attempt whose lease ran out, or of an earlier tenure)
/// changes nothing.
pub(crate) async fn take_settlements(
    cursors: &Cursors,
    settlements: &mut Vec<(i64, Settlement, Option<NewEntry>)>,
) -> LogSettlements {
    let mut by_slot: BTreeMap<i64, Vec<(i64, Settlement, Option<NewEntry>)>> = BTreeMap::new();
    for s in std::mem::take(settlements) {
        if s.0 < 0 {
            by_slot.entry(split_id(s.0).1).or_default().push(s);
        } else {
            settlements.push(s);
        }
    }
    let mut out = LogSettlements::default();
    for (slot, group) in by_slot {
        // A slot no subscription holds now: nothing of it is out.
        let Some(cursor) = cursors.by_slot.get(&slot).cloned() else { continue };
        if cursor.feed {
            let entries = group.into_iter().map(|(id, s, audit)| (split_id(id).0, s, audit)).collect();
            out.feeds.push((cursor, entries));
            continue;
        }
        let mut st = cursor.state.lock().await;
        let mut entries = Vec::with_capacity(group.len());
        let mut seqs = Vec::with_capacity(group.len());
        for (id, settlement, audit) in group {
            let seq = split_id(id).0;
            if let Some(o) = st.out.get_mut(&seq).filter(|o| !o.settling) {
                o.settling = true;
                entries.push((o.row.clone(), settlement, audit));
                seqs.push(seq);
            }
        }
        if entries.is_empty() {
            continue;
        }
        let (position, tenure) = (st.frontier(&seqs), st.tenure);
        drop(st);
        out.pushes.push((Settling { cursor, seqs, position, tenure }, entries));
    }
    out
}

/// After the writer answered: a settled entry is no longer out and the cursor has moved; one that
/// was not stored goes again when its lease runs out.
pub(crate) async fn settled(settling: Vec<Settling>, stored: bool) {
    for s in settling {
        let mut st = s.cursor.state.lock().await;
        if st.tenure != s.tenure {
            continue;
        }
        for seq in &s.seqs {
            if stored {
                st.out.remove(seq);
            } else if let Some(o) = st.out.get_mut(seq) {
                o.settling = false;
            }
        }
        if stored {
            st.durable = st.durable.max(s.position);
        }
    }
}

/// Gives back the leases `owner` holds on log entries.
pub(crate) async fn release(cursors: &Cursors, owner: &str) -> u64 {
    let mut n = 0;
    for cursor in cursors.by_name.values() {
        let mut st = cursor.state.lock().await;
        for o in st.out.values_mut().filter(|o| !o.settling && o.lease.owner == owner) {
            o.lease.until_ms = 0;
            n += 1;
        }
    }
    n
}

/// Adds what the log owes subscription `name` to its counts (kept in subscription order).
pub(crate) fn add_backlog(counts: &mut Vec<super::DeliveryCounts>, name: &str, pending: u64, oldest: Option<i64>) {
    if pending == 0 {
        return;
    }
    let i = match counts.iter().position(|d| d.subscription == name) {
        Some(i) => i,
        None => {
            counts.push(super::DeliveryCounts { subscription: name.to_owned(), ..Default::default() });
            counts.len() - 1
        }
    };
    let d = &mut counts[i];
    d.pending += pending;
    d.oldest_pending_ms = earliest(d.oldest_pending_ms, oldest);
}

/// Entries owed to a cursor that are out, at most `limit`, and where the log past them starts.
pub(crate) async fn out_and_after(cursor: &Cursor, limit: u32) -> (Vec<OutboxRow>, i64) {
    let st = cursor.state.lock().await;
    (st.out.values().map(|o| o.row.clone()).take(limit as usize).collect(), st.scanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_gives_back_its_sequence_and_slot() {
        for (seq, slot) in [(1, 0), (7, 62), (1 << 40, 31)] {
            assert!(entry_id(seq, slot) < 0);
            assert_eq!(split_id(entry_id(seq, slot)), (seq, slot));
        }
    }

    #[test]
    fn new_subscriptions_take_the_free_slots_and_the_others_keep_theirs() {
        let taken = HashMap::from([("a".to_owned(), 0), ("b".to_owned(), 2)]);
        let names = ["a", "c", "d"].map(String::from);
        assert_eq!(new_slots(&names, &taken), [("c".to_owned(), 1), ("d".to_owned(), 3)]);
    }
}
