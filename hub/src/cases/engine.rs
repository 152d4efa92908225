//! The case engine: each transition (open, an answer, a record published for a step, the sweep's
//! reminders and escalations) read from the case's latest version, computed by `model`, and
//! committed by the store in one transaction with the record that caused it and the events it
//! sends, only if nothing moved meanwhile (otherwise read again and recompute). The events are
//! `hub.case-event` versions, so they travel the record's way: cursors over the log, the
//! subscriptions' adapters, at least once with stable ids.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::model::{Answer, Case, Notice, RecordRef, Refusal};
use super::{view, CaseType, CASE_EVENT_TYPE, CASE_TYPE};
use crate::catalog::{Catalog, Violation};
use crate::config::{Config, Role};
use crate::events::Event as _;
use crate::exchange::{Exchange, PublishError};
use crate::ledger::keys::HubKeys;
use crate::ledger::{Action, NewEntry};
use crate::policy::{Policy, Principal};
use crate::routing::Routing;
use crate::store::{
    CaseQuery, CaseRow, CaseWrite, CaseWritten, NewVersion, Published, RecordVersion, StepRow, Store, StoreError,
};

/// How often a transition is recomputed when the case moved under it before it gives up (each
/// retry means another transition of the same case committed meanwhile).
const ATTEMPTS: usize = 8;

/// Why a case request was not done; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// No such case type.
    #[error("there is no case type {0:?}")]
    UnknownType(String),
    /// No such case.
    #[error("there is no case {0:?}")]
    NoCase(String),
    /// The caller may not open this case type.
    #[error("{0}")]
    NotOpener(String),
    /// The caller takes no part in the case.
    #[error("{0}")]
    NotParty(String),
    /// The application is not JSON, or repeats a member.
    #[error(transparent)]
    Malformed(PublishError),
    /// The application does not match its schema.
    #[error("the application does not match the schema of its case type")]
    Invalid(Vec<Violation>),
    /// The answer or the step refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The same Idempotency-Key came with another request.
    #[error("this Idempotency-Key was already used with a different request")]
    Conflict,
    /// The case kept changing under the request.
    #[error("the case changed {ATTEMPTS} times while this request was being applied; send it again")]
    Busy,
    /// The store did not take it; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A case as one request leaves it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// Its version.
    pub version: u64,
    /// The audit entry of that version.
    pub audit_seq: u64,
    /// True when the request was a replay (same Idempotency-Key and request): nothing changed.
    pub replayed: bool,
}

/// The engine over the hub's parts.
pub struct Cases {
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
    store: Arc<dyn Store>,
    keys: Arc<HubKeys>,
    routing: Arc<Routing>,
    exchange: Arc<Exchange>,
    /// Each department's `hub.case-event` subscriptions.
    event_subs: HashMap<String, Vec<String>>,
    tz: chrono_tz::Tz,
}

impl Cases {
    /// The engine for a checked config.
    pub fn new(
        config: &Config,
        catalog: Arc<Catalog>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        keys: Arc<HubKeys>,
        routing: Arc<Routing>,
        exchange: Arc<Exchange>,
    ) -> Self {
        let mut event_subs: HashMap<String, Vec<String>> = HashMap::new();
        for s in config.subscriptions.iter().filter(|s| s.record_type.get_ref() == CASE_EVENT_TYPE) {
            event_subs.entry(s.department.get_ref().clone()).or_default().push(s.name.get_ref().clone());
        }
        Self { catalog, policy, store, keys, routing, exchange, event_subs, tz: config.timezone() }
    }

    fn now(&self) -> (String, NaiveDate) {
        self.at(chrono::Utc::now())
    }

    fn at(&self, now: chrono::DateTime<chrono::Utc>) -> (String, NaiveDate) {
        (now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), now.with_timezone(&self.tz).date_naive())
    }

    /// A case type by id.
    pub fn case_type(&self, id: &str) -> Result<&CaseType, CaseError> {
        self.catalog.cases.get(id).ok_or_else(|| CaseError::UnknownType(id.to_owned()))
    }

    /// Whether `who` may open cases of `t`.
    pub fn may_open(t: &CaseType, who: &Principal) -> bool {
        matches!(who, Principal::Department(d) if t.openers.contains(d))
    }

    /// The latest version of a case.
    pub async fn load(&self, id: &str) -> Result<(Case, RecordVersion), CaseError> {
        let rec = self.store.latest(CASE_TYPE, id).await?.ok_or_else(|| CaseError::NoCase(id.to_owned()))?;
        let case = serde_json::from_value(rec.payload.clone())
            .map_err(|e| StoreError::Corrupt(format!("case {id} cannot be read: {e}")))?;
        Ok((case, rec))
    }

    /// Opens a case of `t` for `opener` (checked by the caller) from the application's bytes.
    pub async fn open(
        &self,
        t: &CaseType,
        opener: &str,
        bytes: &[u8],
        idempotency: Option<String>,
    ) -> Result<Outcome, CaseError> {
        let doc = crate::exchange::prepare::parse(bytes).map_err(CaseError::Malformed)?;
        let violations = t.application.violations(&doc);
        if !violations.is_empty() {
            return Err(CaseError::Invalid(violations));
        }
        let canonical = serde_jcs::to_string(&doc).map_err(|e| StoreError::Corrupt(format!("application: {e}")))?;
        let idem = idempotency.map(|k| (k, digest(&format!("case\n{}\n{canonical}", t.id))));
        if let Some(out) = self.replay(opener, idem.as_ref()).await? {
            return Ok(out);
        }
        let (now, today) = self.now();
        let id = format!("{}-{:012x}", today.format("%Y%m%d"), rand::thread_rng().gen::<u64>() >> 16);
        let (case, notices) = Case::open(t, id, opener, doc, &now, today, &self.catalog.cases.calendar);
        match self.commit(t, &case, None, notices, opener, "opened", None, None, idem).await? {
            CaseWritten::Done { case: r, .. } => {
                Ok(Outcome { case, version: r.version, audit_seq: r.audit_seq, replayed: false })
            }
            CaseWritten::Replayed(r) => self.replayed(&r.key).await,
            CaseWritten::Conflict => Err(CaseError::Conflict),
            // A new random id that already exists: nothing was written.
            CaseWritten::Stale => Err(CaseError::Busy),
        }
    }

    /// A department's answer to its ready step: done (with a record it published, or none for an
    /// `answer` step) or refused.
    pub async fn answer(
        &self,
        id: &str,
        step: &str,
        caller: &str,
        answer: Answer,
        idempotency: Option<String>,
    ) -> Result<Outcome, CaseError> {
        let body = match &answer {
            Answer::Done(r) => json!({ "outcome": "done", "record": r }),
            Answer::Refused(reasons) => json!({ "outcome": "refused", "reasons": reasons }),
        };
        let idem = idempotency.map(|k| (k, digest(&format!("answer\n{id}\n{step}\n{body}"))));
        if let Some(out) = self.replay(caller, idem.as_ref()).await? {
            return Ok(out);
        }
        if let Answer::Done(Some(r)) = &answer {
            let published = self.store.version(&r.record_type, &r.key, r.version).await?;
            if published.is_none_or(|v| v.publisher != caller) {
                return Err(Refusal::Invalid(format!(
                    "{} {} version {} is not a record {caller} published",
                    r.record_type, r.key, r.version
                ))
                .into());
            }
        }
        for _ in 0..ATTEMPTS {
            let (case, rec) = self.load(id).await?;
            let t = self.case_type(&case.case_type)?;
            let (now, today) = self.now();
            let (after, notices) =
                case.answer(t, step, caller, answer.clone(), &now, today, &self.catalog.cases.calendar)?;
            let what = if matches!(answer, Answer::Done(_)) { "step.done" } else { "step.refused" };
            let written = self
                .commit(t, &after, Some(rec.version), notices, caller, what, Some(step), None, idem.clone())
                .await?;
            match written {
                CaseWritten::Done { case: r, .. } => {
                    return Ok(Outcome { case: after, version: r.version, audit_seq: r.audit_seq, replayed: false })
                }
                CaseWritten::Replayed(r) => return self.replayed(&r.key).await,
                CaseWritten::Conflict => return Err(CaseError::Conflict),
                CaseWritten::Stale => continue,
            }
        }
        Err(CaseError::Busy)
    }

    /// Publishes `v` (prepared by the exchange, its owner checked) as what completes `step` of
    /// case `id`: the record and the step's completion commit together, or neither does.
    pub async fn publish_for_step(&self, id: &str, step: &str, mut v: NewVersion) -> Result<Published, CaseError> {
        // The transition checks the record's latest version itself; a step's record that
        // corrects an earlier version sends no notices (the case's events tell its parties).
        v.first_only = false;
        if let Some((key, digest)) = &v.idempotency {
            if let Some((seen, receipt)) = self.store.idempotent(&v.publisher, key).await? {
                return if seen == *digest { Ok(Published::Replayed(receipt)) } else { Ok(Published::Conflict) };
            }
        }
        for _ in 0..ATTEMPTS {
            let (case, rec) = self.load(id).await?;
            let t = self.case_type(&case.case_type)?;
            let latest = self.store.latest(&v.record_type, &v.key).await?.map(|r| r.version);
            let made = RecordRef {
                record_type: v.record_type.clone(),
                key: v.key.clone(),
                version: latest.map_or(1, |n| n + 1),
            };
            let (now, today) = self.now();
            let (after, notices) = case.answer(
                t,
                step,
                &v.publisher,
                Answer::Done(Some(made)),
                &now,
                today,
                &self.catalog.cases.calendar,
            )?;
            let publisher = v.publisher.clone();
            let written = self
                .commit(
                    t,
                    &after,
                    Some(rec.version),
                    notices,
                    &publisher,
                    "step.done",
                    Some(step),
                    Some((v.clone(), latest)),
                    None,
                )
                .await?;
            match written {
                CaseWritten::Done { record: Some(r), .. } => {
                    self.exchange.counted(&publisher, &r);
                    return Ok(Published::Created(r));
                }
                CaseWritten::Done { record: None, .. } => {
                    return Err(StoreError::Corrupt("the record of a case step gave no receipt".into()).into())
                }
                CaseWritten::Replayed(r) => return Ok(Published::Replayed(r)),
                CaseWritten::Conflict => return Ok(Published::Conflict),
                CaseWritten::Stale => continue,
            }
        }
        Err(CaseError::Busy)
    }

    /// Sends the reminders and escalations due today; returns how many cases it changed.
    pub async fn sweep(&self) -> Result<u32, CaseError> {
        self.sweep_at(chrono::Utc::now()).await
    }

    /// [`Cases::sweep`] as if it were `now` (the tests' clock: a step late by days is a step
    /// whose sweep runs days later).
    pub async fn sweep_at(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u32, CaseError> {
        let (_, today) = self.at(now);
        let mut changed = 0;
        let mut before = None;
        loop {
            let rows = self
                .store
                .cases(CaseQuery {
                    states: vec!["open".into()],
                    sweep_by: Some(today.to_string()),
                    before: before.clone(),
                    limit: 200,
                    ..CaseQuery::default()
                })
                .await?;
            for row in &rows {
                if self.sweep_one(&row.id, now).await? {
                    changed += 1;
                }
            }
            match rows.last() {
                Some(last) if rows.len() == 200 => before = Some((last.opened_at.clone(), last.id.clone())),
                _ => break,
            }
        }
        Ok(changed)
    }

    async fn sweep_one(&self, id: &str, at: chrono::DateTime<chrono::Utc>) -> Result<bool, CaseError> {
        for _ in 0..ATTEMPTS {
            let (case, rec) = self.load(id).await?;
            let Ok(t) = self.case_type(&case.case_type) else { return Ok(false) };
            let (now, today) = self.at(at);
            let Some((after, notices)) = case.sweep(t, &now, today, &self.catalog.cases.calendar) else {
                return Ok(false);
            };
            match self.commit(t, &after, Some(rec.version), notices, "hub", "swept", None, None, None).await? {
                CaseWritten::Stale => continue,
                _ => return Ok(true),
            }
        }
        Err(CaseError::Busy)
    }

    /// What `who` may see of a case at `version`.
    pub async fn view(&self, case: &Case, version: u64, who: &Principal) -> Result<Value, CaseError> {
        let t = self.case_type(&case.case_type)?;
        let (_, today) = self.now();
        match who {
            Principal::Department(d) if *d == case.opener => Ok(view::full(case, t, version)),
            Principal::Operator(_, Role::Auditor) => Ok(view::full(case, t, version)),
            Principal::Department(d) if case.steps.iter().any(|s| s.department == *d) => {
                Ok(view::for_department(&self.sight(today), case, t, version, d, None).await?)
            }
            // An operator a late step was escalated to sees who is late, not the application.
            Principal::Operator(o, _) if t.escalation.as_ref().is_some_and(|e| e.to == *o) => {
                Ok(view::reply(case, t, version))
            }
            other => Err(CaseError::NotParty(format!("{} takes no part in case {}", other.id(), case.id))),
        }
    }

    fn sight(&self, today: NaiveDate) -> view::Sight<'_> {
        view::Sight { store: &*self.store, catalog: &self.catalog, policy: &self.policy, today }
    }

    /// The subjects of a case, as keyed hashes.
    pub fn subjects(&self, t: &CaseType, case: &Case) -> Vec<String> {
        t.application.subjects_of(&case.application).iter().map(|s| self.keys.subject_hash(s)).collect()
    }

    async fn replay(&self, who: &str, idem: Option<&(String, String)>) -> Result<Option<Outcome>, CaseError> {
        let Some((key, digest)) = idem else { return Ok(None) };
        match self.store.idempotent(who, key).await? {
            None => Ok(None),
            Some((seen, r)) if seen == *digest => self.replayed(&r.key).await.map(Some),
            Some(_) => Err(CaseError::Conflict),
        }
    }

    async fn replayed(&self, id: &str) -> Result<Outcome, CaseError> {
        let (case, rec) = self.load(id).await?;
        Ok(Outcome { case, version: rec.version, audit_seq: rec.audit_seq, replayed: true })
    }

    /// Builds and commits one transition: the case's new version, an event per notice, the index
    /// rows; wakes the subscriptions the events and the record go to once it is durable.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        t: &CaseType,
        after: &Case,
        expect: Option<u64>,
        notices: Vec<Notice>,
        actor: &str,
        transition: &str,
        step: Option<&str>,
        record: Option<(NewVersion, Option<u64>)>,
        idempotency: Option<(String, String)>,
    ) -> Result<CaseWritten, StoreError> {
        let version = expect.map_or(1, |v| v + 1);
        let subjects = self.subjects(t, after);
        let (_, today) = self.now();
        let canonical = serde_jcs::to_string(after).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let case = NewVersion {
            record_type: CASE_TYPE.into(),
            key: after.id.clone(),
            schema_version: 1,
            digest: digest(&canonical),
            canonical,
            publisher: actor.to_owned(),
            subjects: subjects.clone(),
            idempotency,
            routes: Vec::new(),
            first_only: false,
            audit: NewEntry {
                record_type: Some(CASE_TYPE.into()),
                record_key: Some(after.id.clone()),
                subjects: subjects.clone(),
                purpose: Some(t.purpose.clone()),
                detail: Some(
                    json!({ "transition": transition, "case_type": t.id, "step": step, "state": after.state }),
                ),
                ..NewEntry::new(actor, Action::Case, "ok")
            },
            trace: None,
        };
        let mut woken: Vec<String> = record.as_ref().map(|(v, _)| v.routes.clone()).unwrap_or_default();
        // The record committed with this transition is not in the store yet: the events that
        // carry it take it from here.
        let fresh_doc: Option<(RecordRef, Value)> = match &record {
            Some((v, expect)) => Some((
                RecordRef {
                    record_type: v.record_type.clone(),
                    key: v.key.clone(),
                    version: expect.map_or(1, |n| n + 1),
                },
                serde_json::from_str(&v.canonical).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )),
            None => None,
        };
        let fresh = fresh_doc.as_ref().map(|(r, d)| (r, d));
        let mut events = Vec::with_capacity(notices.len());
        for (i, n) in notices.iter().enumerate() {
            let data = view::event(&self.sight(today), after, t, version, n, fresh).await?;
            let routes = self.event_routes(t, after, n, &data);
            woken.extend(routes.iter().cloned());
            let canonical = serde_jcs::to_string(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let key = format!("{}.{version}.{}", after.id, i + 1);
            events.push(NewVersion {
                record_type: CASE_EVENT_TYPE.into(),
                key: key.clone(),
                schema_version: 1,
                digest: digest(&canonical),
                canonical,
                publisher: actor.to_owned(),
                subjects: subjects.clone(),
                idempotency: None,
                routes,
                first_only: false,
                audit: NewEntry {
                    record_type: Some(CASE_EVENT_TYPE.into()),
                    record_key: Some(key),
                    subjects: subjects.clone(),
                    purpose: Some(t.purpose.clone()),
                    detail: Some(json!({ "event": n.kind.as_str(), "to": n.to, "case": after.id, "step": n.step })),
                    ..NewEntry::new(actor, Action::Case, "ok")
                },
                trace: None,
            });
        }
        let calendar = &self.catalog.cases.calendar;
        let write = CaseWrite {
            record,
            case,
            case_expect: expect,
            events,
            row: CaseRow {
                id: after.id.clone(),
                case_type: after.case_type.clone(),
                opener: after.opener.clone(),
                state: after.state.as_str().into(),
                opened_at: after.opened_at.clone(),
                closed_at: after.closed_at.clone(),
                next_sweep: after.next_sweep(t, calendar).map(|d| d.to_string()),
                version,
            },
            steps: after
                .steps
                .iter()
                .map(|s| StepRow {
                    step: s.id.clone(),
                    department: s.department.clone(),
                    state: s.state.as_str().into(),
                    due: s.due.clone(),
                })
                .collect(),
        };
        let written = self.store.transition(write).await?;
        if let CaseWritten::Done { case, .. } = &written {
            crate::events::CaseChanged {
                case_type: &t.id,
                transition,
                version: case.version,
                audit_seq: case.audit_seq,
            }
            .emit(self.exchange.metrics());
            self.exchange.wake(woken);
        }
        Ok(written)
    }

    /// The subscriptions a notice goes to: the case type's reply subscription for the unified reply,
    /// otherwise every `hub.case-event` subscription of the receiver whose filter takes the event.
    fn event_routes(&self, t: &CaseType, case: &Case, n: &Notice, data: &Value) -> Vec<String> {
        if n.to == case.opener && n.step.is_none() {
            return vec![t.reply.clone()];
        }
        let Some(mine) = self.event_subs.get(&n.to) else { return Vec::new() };
        self.routing.routes(CASE_EVENT_TYPE, data).into_iter().filter(|s| mine.contains(s)).collect()
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs the sweep every `every` until `stop` turns true: reminders and escalations go out within
/// one period of the day they fall due. A failed sweep is logged and tried again next period.
pub fn spawn_sweep(
    cases: Arc<Cases>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match cases.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(cases = n, "late case steps reminded or escalated"),
                Err(e) => {
                    tracing::warn!(error = %crate::mask::scrub(&e.to_string()), "the case sweep failed; it runs again")
                }
            }
        }
    })
}
