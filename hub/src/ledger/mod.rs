//! The tamper-evident audit chain: entry shape, digests (the suite's hash over RFC 8785 canonical
//! JSON, each covering its predecessor's digest), keyed subject hashes, and signed checkpoints.
//! The suite (`suite`) is named in the chain's first entry and in every checkpoint. Pure
//! functions and key files only; the store persists what this module seals.

pub mod keys;
pub mod suite;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use keys::PublicKey;
use suite::Suite;

/// The digest that precedes the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A department published a record version.
    Publish,
    /// A record (or its history) was read.
    Read,
    /// Records were looked up by subject.
    Lookup,
    /// A request was refused (401/403).
    Deny,
    /// An operator or auditor action (audit export, verification).
    Admin,
    /// The portal asked who accessed a person's records.
    AccessLog,
    /// A subscriber received a record version (webhook confirmed, or served by its feed).
    Deliver,
    /// A record version could not be delivered and went to the dead letters.
    DeadLetter,
    /// A record offered through an inbound connection was rejected (schema, key, mapping): the
    /// hub's rejected log, beside the problem the adapter reports upstream.
    Reject,
    /// A joint case changed (opened, a step answered, a late step reminded or escalated) or sent
    /// one of its events.
    Case,
    /// A record's owner withdrew it (a new state of the record, never a deletion).
    Revoke,
    /// A department that had a record is told of its correction or recall.
    Notice,
    /// A department acknowledged a notice on its notice feed.
    Acknowledge,
    /// A department's holdings of a subscription's events for a day were compared with the
    /// hub's deliveries (by the department, or by the scheduled check).
    Reconcile,
}

impl Action {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Read => "read",
            Action::Lookup => "lookup",
            Action::Deny => "deny",
            Action::Admin => "admin",
            Action::AccessLog => "access_log",
            Action::Deliver => "deliver",
            Action::DeadLetter => "dead_letter",
            Action::Reject => "reject",
            Action::Case => "case",
            Action::Revoke => "revoke",
            Action::Notice => "notice",
            Action::Acknowledge => "acknowledge",
            Action::Reconcile => "reconcile",
        }
    }
}

/// An entry before the ledger writer gives it a place in the chain.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Principal id, or `anonymous`.
    pub actor: String,
    /// What happened.
    pub action: Action,
    /// Record type concerned.
    pub record_type: Option<String>,
    /// Record key concerned.
    pub record_key: Option<String>,
    /// Record version (the writer fills it for publishes).
    pub record_version: Option<u64>,
    /// Keyed hashes of the subjects concerned.
    pub subjects: Vec<String>,
    /// Stated purpose.
    pub purpose: Option<String>,
    /// `ok`, or the refusal status and reason.
    pub outcome: String,
    /// Small structured context (never personal data in clear).
    pub detail: Option<Value>,
}

impl NewEntry {
    /// A bare entry; set the optional parts with struct update syntax.
    pub fn new(actor: impl Into<String>, action: Action, outcome: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action,
            record_type: None,
            record_key: None,
            record_version: None,
            subjects: Vec::new(),
            purpose: None,
            outcome: outcome.into(),
            detail: None,
        }
    }
}

/// An entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339 UTC time the writer sealed it.
    pub time: String,
    /// Principal id.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Record type.
    pub record_type: Option<String>,
    /// Record key.
    pub record_key: Option<String>,
    /// Record version.
    pub record_version: Option<u64>,
    /// Keyed hashes of subjects.
    pub subjects: Vec<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Context.
    pub detail: Option<Value>,
    /// Digest of the previous entry.
    pub prev: String,
    /// This entry's digest.
    pub digest: String,
}

impl Entry {
    /// Whether the entry is about one stored record version, whose record's index rows (the
    /// subject index, and the people later versions removed) name its subjects: the stores find
    /// such an entry for a person through the record rather than by a key per subject. Every
    /// entry with a version is: writers set it only for a version they store, deliveries and
    /// reads only for versions they found.
    pub fn names_a_version(&self) -> bool {
        self.record_type.is_some() && self.record_key.is_some() && self.record_version.is_some()
    }
}

/// The member of the first entry's `detail` that names the chain's suite.
pub const SUITE_MEMBER: &str = "crypto_suite";

/// The suite a chain's first entry names. A chain begun before suites existed names none: it is
/// SHA-256 and Ed25519. `None` for a name this release does not know.
pub fn suite_of_first(e: &Entry) -> Option<Suite> {
    suite_named(e.detail.as_ref())
}

/// The suite a first entry's `detail` names (see `suite_of_first`).
pub fn suite_named(detail: Option<&Value>) -> Option<Suite> {
    match detail.and_then(|d| d.get(SUITE_MEMBER)) {
        None => Some(Suite::Sha256Ed25519),
        Some(v) => v.as_str()?.parse().ok(),
    }
}

/// Refuses keys of another suite than the chain's first entry names. `first_detail` is that
/// entry's stored `detail` column as both stores read it: `None` for an empty chain, which takes
/// the keys' suite.
pub fn check_suite(first_detail: Option<Option<String>>, keys: Suite) -> Result<(), String> {
    let Some(detail) = first_detail else { return Ok(()) };
    let detail = detail.and_then(|d| serde_json::from_str::<Value>(&d).ok());
    match suite_named(detail.as_ref()) {
        Some(s) if s == keys => Ok(()),
        found => Err(format!(
            "the audit chain is sealed with the crypto suite {}, but [audit] suite = \"{keys}\": a hub keeps the suite \
             its data was made with",
            found.map_or("(unknown to this release)", Suite::as_str)
        )),
    }
}

/// The digest an entry must carry: the suite's hash of the canonical JSON of every other field.
pub fn digest_of(suite: Suite, e: &Entry) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        seq: u64,
        time: &'a str,
        actor: &'a str,
        action: &'a str,
        record_type: &'a Option<String>,
        record_key: &'a Option<String>,
        record_version: Option<u64>,
        subjects: &'a [String],
        purpose: &'a Option<String>,
        outcome: &'a str,
        detail: &'a Option<Value>,
        prev: &'a str,
    }
    let body = Body {
        seq: e.seq,
        time: &e.time,
        actor: &e.actor,
        action: &e.action,
        record_type: &e.record_type,
        record_key: &e.record_key,
        record_version: e.record_version,
        subjects: &e.subjects,
        purpose: &e.purpose,
        outcome: &e.outcome,
        detail: &e.detail,
        prev: &e.prev,
    };
    // serde_jcs only fails on non-string map keys and non-finite floats, which this body cannot hold.
    let bytes = serde_jcs::to_vec(&body).unwrap_or_default();
    suite.hash_hex(&bytes)
}

/// Gives a new entry its place: sequence number, time, predecessor and digest. The first entry
/// of a chain also names the suite, inside the digest it seals.
pub fn seal(suite: Suite, new: NewEntry, seq: u64, time: String, prev: &str) -> Entry {
    let mut detail = new.detail;
    if seq == 1 {
        let named = Value::String(suite.as_str().to_owned());
        detail = Some(match detail {
            Some(Value::Object(mut m)) => {
                m.insert(SUITE_MEMBER.to_owned(), named);
                Value::Object(m)
            }
            None => serde_json::json!({ SUITE_MEMBER: named }),
            Some(other) => serde_json::json!({ SUITE_MEMBER: named, "value": other }),
        });
    }
    let mut e = Entry {
        seq,
        time,
        actor: new.actor,
        action: new.action.as_str().to_owned(),
        record_type: new.record_type,
        record_key: new.record_key,
        record_version: new.record_version,
        subjects: new.subjects,
        purpose: new.purpose,
        outcome: new.outcome,
        detail,
        prev: prev.to_owned(),
        digest: String::new(),
    };
    e.digest = digest_of(suite, &e);
    e
}

/// What a checkpoint signature covers: v2 names the suite; v1, without one, is what checkpoints
/// signed before suites existed cover (Ed25519 only).
pub fn checkpoint_message(suite: Option<Suite>, seq: u64, digest: &str) -> String {
    match suite {
        None => format!("conghua-hub audit checkpoint v1\nseq={seq}\ndigest={digest}\n"),
        Some(s) => format!("conghua-hub audit checkpoint v2\nsuite={s}\nseq={seq}\ndigest={digest}\n"),
    }
}

/// A signed statement that the chain up to `seq` ends in `digest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number covered.
    pub seq: u64,
    /// Chain digest at `seq`.
    pub digest: String,
    /// Base64 signature of `checkpoint_message`, by the suite's algorithm.
    pub signature: String,
    /// When it was signed.
    pub time: String,
    /// The suite it was signed with; none on checkpoints signed before suites existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<Suite>,
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainReport {
    /// Entries checked.
    pub entries: u64,
    /// Last sequence number.
    pub head_seq: u64,
    /// Last digest.
    pub head_digest: String,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    /// The crypto suite it was verified under.
    pub suite: Suite,
    /// The last signed checkpoint this pass found intact, where a later pass may resume.
    #[serde(skip)]
    pub last_checkpoint: Option<Anchor>,
}

/// A verified point of the chain: the entry at `seq` ends in `digest` and a signed checkpoint says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Sequence number of the checkpointed entry.
    pub seq: u64,
    /// Its digest.
    pub digest: String,
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBroken {
    /// First bad sequence number.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// A pass over a chain read in order, from the genesis or from an anchor an earlier pass verified
/// (whose entry and checkpoint it re-checks first): what both stores run over their rows.
pub struct Walk {
    verifier: Verifier,
    anchor: Option<(Anchor, Option<Checkpoint>)>,
}

impl Walk {
    /// `checkpoints` are those at or after the anchor (all of them from the genesis).
    pub fn new(key: PublicKey, checkpoints: Vec<Checkpoint>, anchor: Option<&Anchor>) -> Self {
        match anchor {
            None => Self { verifier: Verifier::new(key, checkpoints), anchor: None },
            Some(a) => {
                let at = checkpoints.iter().find(|c| c.seq == a.seq).cloned();
                Self { verifier: Verifier::resume(key, checkpoints, a), anchor: Some((a.clone(), at)) }
            }
        }
    }

    /// The next entry read. `Ok(true)` when it was checked as a new entry (the anchor's own entry
    /// is only compared with what the earlier pass saw).
    pub fn push(&mut self, e: &Entry) -> Result<bool, ChainBroken> {
        if let Some((a, cp)) = self.anchor.take() {
            let at = (e.seq == a.seq).then_some(e);
            self.verifier.check_anchor(&a, at, cp.as_ref())?;
            if at.is_some() {
                return Ok(false);
            }
        }
        self.verifier.push(e)?;
        Ok(true)
    }

    /// Ends the pass (an anchor whose entry never came is a break).
    pub fn finish(self) -> Result<ChainReport, ChainBroken> {
        if let Some((a, cp)) = &self.anchor {
            self.verifier.check_anchor(a, None, cp.as_ref())?;
        }
        self.verifier.finish()
    }
}

/// Streams entries in order and checks sequence, linkage, digests and checkpoints.
pub struct Verifier {
    key: PublicKey,
    checkpoints: std::collections::BTreeMap<u64, Checkpoint>,
    next_seq: u64,
    prev: String,
    checked_checkpoints: u64,
    entries: u64,
    last_checkpoint: Option<Anchor>,
}

impl Verifier {
    /// Starts at the genesis with the checkpoints to expect.
    pub fn new(key: PublicKey, checkpoints: Vec<Checkpoint>) -> Self {
        Self {
            key,
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
            next_seq: 1,
            prev: GENESIS.to_owned(),
            checked_checkpoints: 0,
            entries: 0,
            last_checkpoint: None,
        }
    }

    /// Continues after an anchor an earlier pass verified: the next entry must be `anchor.seq + 1`
    /// and link to its digest. The caller re-checks the anchor entry itself (see `check_anchor`).
    pub fn resume(key: PublicKey, checkpoints: Vec<Checkpoint>, anchor: &Anchor) -> Self {
        let mut v = Self::new(key, checkpoints.into_iter().filter(|c| c.seq > anchor.seq).collect());
        v.next_seq = anchor.seq + 1;
        v.prev = anchor.digest.clone();
        v.last_checkpoint = Some(anchor.clone());
        v
    }

    /// Checks that the anchor entry is still what was verified: same digest, contents that hash to
    /// it, and a checkpoint that still signs it. Catches truncation or an edit at the resume point.
    pub fn check_anchor(
        &self,
        anchor: &Anchor,
        entry: Option<&Entry>,
        cp: Option<&Checkpoint>,
    ) -> Result<(), ChainBroken> {
        let broken = |reason: &str| ChainBroken { seq: anchor.seq, reason: reason.to_owned() };
        let e = entry.ok_or_else(|| broken("the last verified checkpointed entry is missing"))?;
        if e.digest != anchor.digest || digest_of(self.key.suite(), e) != e.digest {
            return Err(broken("the last verified checkpointed entry has changed"));
        }
        match cp {
            Some(cp) if cp.digest == anchor.digest && self.signature_ok(cp) => Ok(()),
            _ => Err(broken("the signed checkpoint at the resume point is missing or changed")),
        }
    }

    /// Checks the next entry.
    pub fn push(&mut self, e: &Entry) -> Result<(), ChainBroken> {
        let broken = |seq, reason: &str| ChainBroken { seq, reason: reason.to_owned() };
        if e.seq != self.next_seq {
            return Err(broken(self.next_seq, "entry missing or out of order"));
        }
        if e.prev != self.prev {
            return Err(broken(e.seq, "does not link to the previous entry"));
        }
        let suite = self.key.suite();
        if e.seq == 1 && suite_of_first(e) != Some(suite) {
            let named = e
                .detail
                .as_ref()
                .and_then(|d| d.get(SUITE_MEMBER))
                .map_or(Suite::Sha256Ed25519.to_string(), Value::to_string);
            return Err(ChainBroken {
                seq: 1,
                reason: format!("the chain names the crypto suite {named}, but the key verifying it is of {suite}"),
            });
        }
        if digest_of(suite, e) != e.digest {
            return Err(broken(e.seq, "contents do not match the digest"));
        }
        if let Some(cp) = self.checkpoints.get(&e.seq) {
            if cp.digest != e.digest {
                return Err(broken(e.seq, "digest differs from the signed checkpoint"));
            }
            if !self.signature_ok(cp) {
                return Err(broken(e.seq, "checkpoint signature is not valid"));
            }
            self.checked_checkpoints += 1;
            self.last_checkpoint = Some(Anchor { seq: e.seq, digest: e.digest.clone() });
        }
        self.prev = e.digest.clone();
        self.next_seq += 1;
        self.entries += 1;
        Ok(())
    }

    /// Ends the stream: a checkpoint beyond the last entry means entries were removed.
    pub fn finish(self) -> Result<ChainReport, ChainBroken> {
        let head_seq = self.next_seq - 1;
        if let Some((seq, _)) = self.checkpoints.range(self.next_seq..).next() {
            return Err(ChainBroken {
                seq: self.next_seq,
                reason: format!("entries up to the signed checkpoint at seq {seq} are missing"),
            });
        }
        Ok(ChainReport {
            entries: self.entries,
            head_seq,
            head_digest: self.prev,
            checkpoints: self.checked_checkpoints,
            suite: self.key.suite(),
            last_checkpoint: self.last_checkpoint,
        })
    }

    /// A checkpoint names the key's suite (or, signed before suites, none, and then only an
    /// Ed25519 key may have signed it) and its signature is valid.
    fn signature_ok(&self, cp: &Checkpoint) -> bool {
        let suite = self.key.suite();
        let named_ok = match cp.suite {
            Some(s) => s == suite,
            None => suite == Suite::Sha256Ed25519,
        };
        named_ok && self.key.verify(checkpoint_message(cp.suite, cp.seq, &cp.digest).as_bytes(), &cp.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64, key: &keys::HubKeys, every: u64) -> (Vec<Entry>, Vec<Checkpoint>) {
        let mut prev = GENESIS.to_owned();
        let mut entries = Vec::new();
        let mut cps = Vec::new();
        for seq in 1..=n {
            let e = seal(key.suite(), NewEntry::new("civil-affairs", Action::Publish, "ok"), seq, "t".into(), &prev);
            prev = e.digest.clone();
            if seq.is_multiple_of(every) {
                cps.push(key.checkpoint(seq, &e.digest, "t".into()));
            }
            entries.push(e);
        }
        (entries, cps)
    }

    fn verify(entries: &[Entry], cps: Vec<Checkpoint>, key: &keys::HubKeys) -> Result<ChainReport, ChainBroken> {
        let mut v = Verifier::new(key.public_key(), cps);
        for e in entries {
            v.push(e)?;
        }
        v.finish()
    }

    #[test]
    fn intact_chain_verifies_and_edits_are_located() {
        for suite in Suite::ALL {
            edits_are_located(suite);
        }
    }

    fn edits_are_located(suite: Suite) {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::HubKeys::load_or_create(dir.path(), suite).unwrap();
        let (entries, cps) = chain(10, &key, 4);
        let report = verify(&entries, cps.clone(), &key).unwrap();
        assert_eq!((report.entries, report.checkpoints), (10, 2));

        let mut edited = entries.clone();
        edited[6].actor = "someone-else".into();
        assert_eq!(verify(&edited, cps.clone(), &key).unwrap_err().seq, 7);

        // Re-sealing the edited entry and everything after it still breaks at the checkpoint.
        let mut forged = entries.clone();
        forged[6].actor = "someone-else".into();
        for i in 6..forged.len() {
            forged[i].prev = if i == 0 { GENESIS.into() } else { forged[i - 1].digest.clone() };
            forged[i].digest = digest_of(suite, &forged[i]);
        }
        assert_eq!(verify(&forged, cps.clone(), &key).unwrap_err().seq, 8);

        let truncated = &entries[..6];
        assert_eq!(verify(truncated, cps, &key).unwrap_err().seq, 7);
    }

    #[test]
    fn a_resumed_pass_checks_only_new_entries_and_its_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::HubKeys::load_or_create(dir.path(), Suite::Sm3Sm2).unwrap();
        let (entries, cps) = chain(10, &key, 4);
        let full = verify(&entries, cps.clone(), &key).unwrap();
        let anchor = full.last_checkpoint.clone().unwrap();
        assert_eq!(anchor.seq, 8);

        let resumed = |entries: &[Entry]| {
            let mut v = Verifier::resume(key.public_key(), cps.clone(), &anchor);
            let at = entries.iter().find(|e| e.seq == anchor.seq);
            v.check_anchor(&anchor, at, cps.iter().find(|c| c.seq == anchor.seq))?;
            for e in entries.iter().filter(|e| e.seq > anchor.seq) {
                v.push(e)?;
            }
            v.finish()
        };
        let r = resumed(&entries).unwrap();
        assert_eq!((r.entries, r.head_seq, r.head_digest.as_str()), (2, 10, full.head_digest.as_str()));

        let mut after = entries.clone();
        after[9].outcome = "refused".into();
        assert_eq!(resumed(&after).unwrap_err().seq, 10);
        let mut at_anchor = entries.clone();
        at_anchor[7].actor = "someone-else".into();
        assert_eq!(resumed(&at_anchor).unwrap_err().seq, 8);
        assert_eq!(resumed(&entries[..7]).unwrap_err().seq, 8);
        // An edit before the anchor is outside an incremental pass: that is what the full pass is for.
        let mut before = entries.clone();
        before[2].actor = "someone-else".into();
        assert!(resumed(&before).is_ok());
        assert_eq!(verify(&before, cps.clone(), &key).unwrap_err().seq, 3);
    }

    #[test]
    fn the_first_entry_and_every_checkpoint_name_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::HubKeys::load_or_create(dir.path(), Suite::Sm3Sm2).unwrap();
        let (entries, cps) = chain(4, &key, 2);
        assert_eq!(entries[0].detail, Some(serde_json::json!({ "crypto_suite": "sm3-sm2" })));
        assert_eq!(suite_of_first(&entries[0]), Some(Suite::Sm3Sm2));
        assert!(entries[1].detail.is_none(), "only the first entry names it");
        assert!(cps.iter().all(|c| c.suite == Some(Suite::Sm3Sm2)));
        // A first entry with its own detail keeps it beside the suite.
        let first = seal(
            Suite::Sm3Sm2,
            NewEntry { detail: Some(serde_json::json!({"n": 1})), ..NewEntry::new("a", Action::Admin, "ok") },
            1,
            "t".into(),
            GENESIS,
        );
        assert_eq!(first.detail, Some(serde_json::json!({ "n": 1, "crypto_suite": "sm3-sm2" })));
    }

    #[test]
    fn a_chain_is_not_verified_with_the_other_suites_key() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let sm = keys::HubKeys::load_or_create(dirs[0].path(), Suite::Sm3Sm2).unwrap();
        let ed = keys::HubKeys::load_or_create(dirs[1].path(), Suite::Sha256Ed25519).unwrap();
        let (entries, cps) = chain(4, &sm, 2);
        let broken = verify(&entries, cps, &ed).unwrap_err();
        assert_eq!(broken.seq, 1);
        assert!(broken.reason.contains("\"sm3-sm2\"") && broken.reason.contains("sha256-ed25519"), "{broken}");

        // Renaming the suite in the first entry, even with every digest sealed again, breaks at
        // the first entry: what a chain names must be what its key signs.
        let (mut entries, cps) = chain(4, &sm, 2);
        entries[0].detail = Some(serde_json::json!({ "crypto_suite": "sha256-ed25519" }));
        for i in 0..entries.len() {
            entries[i].prev = if i == 0 { GENESIS.into() } else { entries[i - 1].digest.clone() };
            entries[i].digest = digest_of(Suite::Sm3Sm2, &entries[i]);
        }
        let broken = verify(&entries, cps, &sm).unwrap_err();
        assert_eq!(broken.seq, 1);
        assert!(broken.reason.contains("names the crypto suite"), "{broken}");
    }

    #[test]
    fn a_chain_sealed_before_suites_existed_still_verifies() {
        // What the release before suites wrote: no suite in the first entry, v1 checkpoints.
        let dir = tempfile::tempdir().unwrap();
        let key = keys::HubKeys::load_or_create(dir.path(), Suite::Sha256Ed25519).unwrap();
        let (mut entries, mut cps) = chain(4, &key, 2);
        entries[0].detail = None;
        for i in 0..entries.len() {
            entries[i].prev = if i == 0 { GENESIS.into() } else { entries[i - 1].digest.clone() };
            entries[i].digest = digest_of(Suite::Sha256Ed25519, &entries[i]);
        }
        for c in &mut cps {
            let digest = &entries[c.seq as usize - 1].digest;
            c.digest = digest.clone();
            c.signature = key.sign(checkpoint_message(None, c.seq, digest).as_bytes());
            c.suite = None;
        }
        assert_eq!(verify(&entries, cps.clone(), &key).unwrap().checkpoints, 2);
        // A v1 checkpoint is Ed25519's only: under an SM2 key it is not valid.
        let sm_dir = tempfile::tempdir().unwrap();
        let sm = keys::HubKeys::load_or_create(sm_dir.path(), Suite::Sm3Sm2).unwrap();
        let mut v = Verifier::new(sm.public_key(), cps);
        assert!(!v.signature_ok(&Checkpoint { suite: None, ..sm.checkpoint(2, &entries[1].digest, "t".into()) }));
        assert!(v.push(&entries[0]).is_err());
    }
}
