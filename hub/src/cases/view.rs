//! What each reader of a case sees: the opener and auditors the whole case; a step's department
//! its own steps, the application fields those steps name and the earlier steps' records as its
//! grants project them; the unified reply; and the data of each case event.

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::model::{Case, Kind, Notice, RecordRef, Step};
use super::CaseType;
use crate::catalog::pointer::project;
use crate::catalog::Catalog;
use crate::policy::{Access, Policy, Principal};
use crate::store::{Store, StoreError};

/// The case's head, which every reader may see.
fn head(case: &Case, t: &CaseType, version: u64) -> Value {
    json!({
        "id": case.id,
        "case_type": case.case_type,
        "title": t.title,
        "opener": case.opener,
        "state": case.state,
        "opened_at": case.opened_at,
        "closed_at": case.closed_at,
        "version": version,
    })
}

/// A step as the contract shows it: what is not known yet is left out.
fn step_view(s: &Step) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(s.id));
    m.insert("department".into(), json!(s.department));
    m.insert("completes_with".into(), json!(s.completes_with));
    m.insert("depends_on".into(), json!(s.depends_on));
    m.insert("state".into(), json!(s.state));
    m.insert("due".into(), json!(s.due));
    for (k, val) in [
        ("ready_at", s.ready_at.as_ref().map(|x| json!(x))),
        ("done_at", s.done_at.as_ref().map(|x| json!(x))),
        ("record", s.record.as_ref().map(|r| json!(r))),
        ("reminded_at", s.reminded_at.as_ref().map(|x| json!(x))),
        ("escalated_at", s.escalated_at.as_ref().map(|x| json!(x))),
    ] {
        if let Some(val) = val {
            m.insert(k.into(), val);
        }
    }
    if !s.reasons.is_empty() {
        m.insert("reasons".into(), json!(s.reasons));
    }
    Value::Object(m)
}

/// The whole case: for the opener and auditors.
pub fn full(case: &Case, t: &CaseType, version: u64) -> Value {
    let mut v = head(case, t, version);
    v["application"] = case.application.clone();
    v["steps"] = case.steps.iter().map(step_view).collect();
    v
}

/// The unified reply: every step's outcome, the records produced and the reasons of a refusal.
pub fn reply(case: &Case, t: &CaseType, version: u64) -> Value {
    let mut v = head(case, t, version);
    v["steps"] = case.steps.iter().map(step_view).collect();
    v
}

/// What a view reads with: the store (earlier steps' records), the record types and the grants,
/// as of one day.
pub struct Sight<'a> {
    /// Where the records are.
    pub store: &'a dyn Store,
    /// Their types.
    pub catalog: &'a Catalog,
    /// The grants.
    pub policy: &'a Policy,
    /// The day grants are judged on.
    pub today: NaiveDate,
}

/// A record version being written in the same commit as the case version that names it: not
/// in the store yet, but what a step's department must see of it.
pub type Fresh<'a> = Option<(&'a RecordRef, &'a Value)>;

/// What the department of one or more steps sees: those steps, the application fields they name,
/// and for each, the earlier steps' records projected first to the department's grant (as a read
/// for the step's purpose would be) and then to the fields the step names.
pub async fn for_department(
    sight: &Sight<'_>,
    case: &Case,
    t: &CaseType,
    version: u64,
    department: &str,
    fresh: Fresh<'_>,
) -> Result<Value, StoreError> {
    let Sight { store, catalog, policy, today } = *sight;
    let mine: Vec<&Step> = case.steps.iter().filter(|s| s.department == department).collect();
    let mut v = head(case, t, version);
    let mut fields = Vec::new();
    let mut inputs = Map::new();
    for s in &mine {
        let Some(st) = t.step(&s.id) else { continue };
        fields.extend(st.application_fields());
        for dep in &s.depends_on {
            let Some(r) = case.step(dep).and_then(|d| d.record.as_ref()) else { continue };
            let wanted = st.record_fields(dep);
            if wanted.is_empty() || inputs.contains_key(dep) {
                continue;
            }
            let Some(rt) = catalog.get(&r.record_type) else { continue };
            let who = Principal::Department(department.to_owned());
            let data = match policy.read_access(rt, &who, Some(&st.purpose), today) {
                Ok(access) => {
                    let payload = match fresh {
                        Some((f, payload)) if f == r => Some(payload.clone()),
                        _ => store.version(&r.record_type, &r.key, r.version).await?.map(|rec| rec.payload),
                    };
                    payload.map(|payload| {
                        let granted = match access {
                            Access::Full => payload,
                            Access::Fields(f) => project(&payload, &f),
                        };
                        project(&granted, &wanted)
                    })
                }
                // A grant that lapsed since the config was checked: the reference, not the data.
                Err(_) => None,
            };
            let mut input = json!({ "type": r.record_type, "key": r.key, "version": r.version });
            if let Some(d) = data {
                input["record"] = d;
            }
            inputs.insert(dep.clone(), input);
        }
    }
    v["application"] = project(&case.application, &fields);
    v["steps"] = mine.iter().map(|s| step_view(s)).collect();
    if !inputs.is_empty() {
        v["inputs"] = Value::Object(inputs);
    }
    Ok(v)
}

/// The data of the event a notice becomes, as its receiver may see it.
pub async fn event(
    sight: &Sight<'_>,
    case: &Case,
    t: &CaseType,
    version: u64,
    n: &Notice,
    fresh: Fresh<'_>,
) -> Result<Value, StoreError> {
    let mut data = match n.kind {
        Kind::Completed | Kind::Refused if n.to == case.opener && n.step.is_none() => reply(case, t, version),
        Kind::StepReady => {
            let mut v = for_department(sight, case, t, version, &n.to, fresh).await?;
            // Only the step the event is about; the department's other steps have their own.
            if let Some(steps) = v["steps"].as_array_mut() {
                steps.retain(|s| s["id"].as_str() == n.step.as_deref());
            }
            v
        }
        // Reminders, escalations, orders to stop: who is late or stops, never the data.
        _ => {
            let mut v = head(case, t, version);
            v["steps"] =
                case.steps.iter().filter(|s| Some(s.id.as_str()) == n.step.as_deref()).map(step_view).collect();
            v
        }
    };
    data["kind"] = json!(n.kind.as_str());
    Ok(data)
}
