//! Corrections and recalls reach everyone who had the record. A department had an earlier
//! version when one was routed to a subscription of its (the records' `routes` bits, delivered
//! or still owed; deliveries in the audit chain for the rest), or when it read or looked the
//! record up (the audit chain). A correction (a new version whose fields in that department's
//! grant differ) or a recall sends each of them one notice, committed with the change itself:
//! through a subscription of its own for the record type when one can carry it (a push or feed
//! subscription without a mapping into the department's own shape), else through its notice
//! feed. A department whose subscription takes the new version anyway gets that event instead
//! (it says which version it supersedes), and none gets a notice for fields it is not granted.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::Exchange;
use crate::catalog::pointer::project;
use crate::catalog::RecordType;
use crate::ledger::{Action, NewEntry};
use crate::policy::{Access, Principal};
use crate::store::{NewVersion, RecordVersion, StoreError};

pub use crate::delivery::{notice_feed, NOTICE_TYPE};

/// The `schema_version` of a recall: a state of the record, not a document of its schema.
pub const REVOKED: u32 = 0;

/// How many audit entries about a record (or of a person's lookups) are searched for readers.
const AUDIT_SEARCHED: u32 = 10_000;

/// What happened to the record.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A new version with this content.
    Corrected(&'a Value),
    /// Withdrawn by its owner, for this reason.
    Revoked(&'a str),
}

impl Change<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Change::Corrected(_) => "corrected",
            Change::Revoked(_) => "revoked",
        }
    }
}

impl Exchange {
    /// The notices a change of `prev`'s record sends (versions of [`NOTICE_TYPE`], to commit with
    /// the change); `served` are the subscriptions the new version is routed to by their filters.
    pub async fn notices(
        &self,
        t: &RecordType,
        prev: &RecordVersion,
        change: Change<'_>,
        served: &[String],
        today: NaiveDate,
    ) -> Result<Vec<NewVersion>, StoreError> {
        let subs: Vec<_> =
            self.delivery.all().iter().filter(|s| s.record_type == t.id && s.department != t.owner).collect();
        let served_departments: BTreeSet<&str> =
            subs.iter().filter(|s| served.contains(&s.name)).map(|s| s.department.as_str()).collect();
        let entries = self.store.audit_by_record(&t.id, &prev.key, AUDIT_SEARCHED).await?;
        let mut had: BTreeSet<String> = self.store.routed(&t.id, &prev.key).await?.into_iter().collect();
        let mut readers: Vec<(String, String)> = Vec::new();
        for e in &entries {
            match e.action.as_str() {
                "deliver" => {
                    if let Some(s) = e.detail.as_ref().and_then(|d| d["subscription"].as_str()) {
                        had.insert(s.to_owned());
                    }
                }
                "read" if e.outcome == "ok" => {
                    if let Some(p) = &e.purpose {
                        readers.push((e.actor.clone(), p.clone()));
                    }
                }
                _ => {}
            }
        }
        // A lookup names the versions it returned; it is found through the person.
        let prefix = format!("{}/{}@", t.id, prev.key);
        for subject in &prev.subjects {
            for e in self.store.audit_by_subject(subject, AUDIT_SEARCHED).await? {
                let returned = e
                    .detail
                    .as_ref()
                    .and_then(|d| d["records"].as_array())
                    .is_some_and(|r| r.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with(&prefix))));
                if e.action == "lookup" && returned {
                    if let Some(p) = &e.purpose {
                        readers.push((e.actor.clone(), p.clone()));
                    }
                }
            }
        }
        // One way per department (the route, and the purpose its grant is read for): the
        // subscription that had a version, else one that can carry the notice, else its feed.
        let mut chosen: BTreeMap<String, (String, String)> = BTreeMap::new();
        for s in subs.iter().filter(|s| had.contains(&s.name)) {
            if served_departments.contains(s.department.as_str()) || chosen.contains_key(&s.department) {
                continue;
            }
            let route = if s.carries_notices() { s.name.clone() } else { notice_feed(&s.department) };
            chosen.insert(s.department.clone(), (route, s.purpose.clone()));
        }
        for (d, purpose) in readers {
            if d == t.owner || served_departments.contains(d.as_str()) || chosen.contains_key(&d) {
                continue;
            }
            let way = match subs.iter().find(|s| s.department == d && s.carries_notices()) {
                Some(s) => (s.name.clone(), s.purpose.clone()),
                None => (notice_feed(&d), purpose),
            };
            chosen.insert(d, way);
        }
        let mut out = Vec::new();
        for (department, (route, purpose)) in chosen {
            // Told only within what it may read now: a lapsed grant hears nothing.
            let who = Principal::Department(department.clone());
            let Ok(access) = self.delivery.grants().read_access(t, &who, Some(&purpose), today) else { continue };
            let seen = |doc: &Value| match &access {
                Access::Full => doc.clone(),
                Access::Fields(fields) => project(doc, fields),
            };
            let version = prev.version + 1;
            let mut notice = json!({
                "kind": change.kind(), "department": department, "record_type": t.id, "key": prev.key,
                "version": version, "supersedes": prev.version, "purpose": purpose, "owner": t.owner,
            });
            match change {
                Change::Corrected(doc) => {
                    let data = seen(doc);
                    if data == seen(&prev.payload) {
                        continue;
                    }
                    notice["data"] = data;
                }
                Change::Revoked(reason) => notice["reason"] = json!(reason),
            }
            let key = format!("{department}/{}/{}/{version}", t.id, prev.key);
            let canonical = serde_jcs::to_string(&notice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(NewVersion {
                record_type: NOTICE_TYPE.into(),
                key: key.clone(),
                schema_version: 1,
                digest: super::prepare::digest(&canonical),
                canonical,
                publisher: t.owner.clone(),
                subjects: prev.subjects.clone(),
                idempotency: None,
                routes: vec![route],
                first_only: false,
                audit: NewEntry {
                    record_type: Some(NOTICE_TYPE.into()),
                    record_key: Some(key),
                    subjects: prev.subjects.clone(),
                    purpose: Some(purpose),
                    detail: Some(json!({
                        "notice": change.kind(), "to": department, "record_type": t.id, "version": version,
                    })),
                    ..NewEntry::new(t.owner.clone(), Action::Notice, "ok")
                },
                trace: None,
            });
        }
        Ok(out)
    }
}
