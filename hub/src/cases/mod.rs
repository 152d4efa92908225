//! Joint cases across departments (一口受理、全网办理、统一答复): the case types of the config,
//! compiled and checked against the record types and grants; the working-day calendar; the
//! case model and its transitions (`model`); and the engine that commits each transition with
//! the record that causes it and the events it sends (`engine`).

pub mod calendar;
pub mod engine;
pub mod model;
pub mod report;
pub mod view;

use std::collections::BTreeMap;

use chrono::Datelike;
use serde_json::Value;

use crate::catalog::pointer::FieldPointer;
use crate::catalog::RecordType;
use crate::config::{CaseTypeConfig, Config, Problem, Problems, Sharing};
use crate::routing::jq::JqProgram;
use calendar::Calendar;

pub use crate::config::{ANSWER, CASE_EVENT_TYPE, CASE_TYPE};

/// One step of a case type, compiled.
pub struct StepType {
    /// Id.
    pub id: String,
    /// The department that does it.
    pub department: String,
    /// A record type id, or `"answer"`.
    pub completes_with: String,
    /// Steps that must be done first.
    pub depends_on: Vec<String>,
    /// What the department sees, as written (`/application/...`, `/steps/<id>/record/...`).
    pub fields: Vec<FieldPointer>,
    /// The purpose its department reads the case for.
    pub purpose: String,
    /// Working days once ready.
    pub time_limit_days: u32,
    /// Only in cases whose application this holds for.
    when: Option<JqProgram>,
}

impl StepType {
    /// Whether a case with this application has this step (a failing condition keeps the step:
    /// a department doing a step it need not is better than a step nobody does).
    pub fn applies_to(&self, application: &Value) -> bool {
        self.when.as_ref().is_none_or(|w| w.matches(application).unwrap_or(true))
    }

    /// The application fields the department sees (pointers below `/application`).
    pub fn application_fields(&self) -> Vec<FieldPointer> {
        self.below("/application")
    }

    /// The fields of an earlier step's record the department asks for (below
    /// `/steps/<step>/record`).
    pub fn record_fields(&self, step: &str) -> Vec<FieldPointer> {
        self.below(&format!("/steps/{step}/record"))
    }

    fn below(&self, prefix: &str) -> Vec<FieldPointer> {
        self.fields
            .iter()
            .filter_map(|f| f.as_str().strip_prefix(prefix).filter(|r| r.starts_with('/')))
            .filter_map(|r| FieldPointer::parse(r).ok())
            .collect()
    }
}

/// Where late steps go.
pub struct Escalation {
    /// Working days past the time limit.
    pub after_days: u32,
    /// A department or an operator.
    pub to: String,
}

/// A case type, compiled.
pub struct CaseType {
    /// Id.
    pub id: String,
    /// Display name.
    pub title: String,
    /// Departments that may open one.
    pub openers: Vec<String>,
    /// The purpose of the case (its audit entries name it).
    pub purpose: String,
    /// The application's schema and subjects.
    pub application: RecordType,
    /// The steps, in config order.
    pub steps: Vec<StepType>,
    /// The opener's subscription for the reply.
    pub reply: String,
    /// Where late steps go.
    pub escalation: Option<Escalation>,
}

impl CaseType {
    /// A step by id.
    pub fn step(&self, id: &str) -> Option<&StepType> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Every case type, the calendar their time limits count in, and what the config check warns of.
#[derive(Default)]
pub struct CaseTypes {
    types: BTreeMap<String, CaseType>,
    /// Working days.
    pub calendar: Calendar,
    /// Not errors, but an operator should know (a year missing from the calendar).
    pub warnings: Vec<Problem>,
}

impl CaseTypes {
    /// A case type by id.
    pub fn get(&self, id: &str) -> Option<&CaseType> {
        self.types.get(id)
    }

    /// Every case type, by id.
    pub fn iter(&self) -> impl Iterator<Item = &CaseType> {
        self.types.values()
    }

    /// Compiles the config's case types against the catalogue's record types, reporting every
    /// problem with its line: the application schema, pointers that are not in it, fields of
    /// earlier steps' records that the step's department has no grant to see, the calendar.
    pub fn build(config: &Config, types: &BTreeMap<String, RecordType>, problems: &mut Problems<'_>) -> CaseTypes {
        let mut out = CaseTypes::default();
        if let Some(path) = &config.cases.calendar {
            match Calendar::load(&config.resolve(path.get_ref())) {
                Ok(c) => out.calendar = c,
                Err(list) => {
                    for p in list {
                        problems.in_file(&p.file, p.line, p.message);
                    }
                }
            }
        }
        if !config.case_types.is_empty() {
            out.warn_of_missing_years(config);
        }
        for c in &config.case_types {
            if let Some(t) = compile(config, c, types, problems) {
                out.types.insert(t.id.clone(), t);
            }
        }
        out
    }

    fn warn_of_missing_years(&mut self, config: &Config) {
        let this_year = chrono::Utc::now().with_timezone(&config.timezone()).year();
        let (line, what) = match (&config.cases.calendar, &self.calendar.path) {
            (Some(at), Some(path)) => {
                (crate::config::line_of(&config.source, at.span().start), format!("{} holds", path.display()))
            }
            _ => (1, "(none is configured: [cases] calendar) holds".to_owned()),
        };
        let file = config.path.clone();
        for year in [this_year, this_year + 1] {
            if !self.calendar.knows(year) {
                self.warnings.push(Problem {
                    file: file.clone(),
                    line,
                    message: format!(
                        "the working-day calendar {what} no year {year}: time limits in {year} count Monday to \
                         Friday, without its public holidays and adjusted working days"
                    ),
                });
            }
        }
    }
}

fn compile(
    config: &Config,
    c: &CaseTypeConfig,
    types: &BTreeMap<String, RecordType>,
    problems: &mut Problems<'_>,
) -> Option<CaseType> {
    let (_, version, schema, validator) = crate::catalog::load_schema(config, &c.application, problems)?;
    let subjects: Vec<FieldPointer> = c.subjects.iter().filter_map(|s| FieldPointer::parse(s.get_ref()).ok()).collect();
    for (s, p) in c.subjects.iter().zip(&subjects) {
        if !p.exists_in_schema(&schema) {
            problems.at(s.span(), format!("subject {p} does not exist in the application schema"));
        }
    }
    let mut steps = Vec::new();
    for s in &c.steps {
        let purpose = s.purpose.as_ref().unwrap_or(&c.purpose).get_ref();
        let mut fields = Vec::new();
        for f in &s.fields {
            let Ok(p) = FieldPointer::parse(f.get_ref()) else {
                problems.at(f.span(), format!("field {:?} is not a JSON pointer", f.get_ref()));
                continue;
            };
            if let Some(rest) = f.get_ref().strip_prefix("/application") {
                if let Ok(q) = FieldPointer::parse(rest) {
                    if !q.exists_in_schema(&schema) {
                        problems.at(f.span(), format!("field {q} does not exist in the application schema"));
                    }
                }
            } else if let Some((step, rest)) = f
                .get_ref()
                .strip_prefix("/steps/")
                .and_then(|r| r.split_once('/'))
                .map(|(a, b)| (a, b.strip_prefix("record")))
            {
                let earlier = c.steps.iter().find(|o| o.id.get_ref() == step);
                let record_type = earlier.map(|o| o.completes_with.get_ref().as_str()).and_then(|ty| types.get(ty));
                if let (Some(t), Some(Ok(q))) = (record_type, rest.map(FieldPointer::parse)) {
                    if !q.exists_in_schema(&t.schema) {
                        problems.at(f.span(), format!("field {q} does not exist in the schema of {}", t.id));
                    } else if let Err(why) = may_see(config, s.department.get_ref(), t, purpose, &q) {
                        problems.at(f.span(), why);
                    }
                }
            }
            fields.push(p);
        }
        steps.push(StepType {
            id: s.id.get_ref().clone(),
            department: s.department.get_ref().clone(),
            completes_with: s.completes_with.get_ref().clone(),
            depends_on: s.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
            fields,
            purpose: purpose.clone(),
            time_limit_days: *s.time_limit_days.get_ref(),
            when: s.when.as_ref().and_then(|w| JqProgram::compile(w.get_ref()).ok()),
        });
    }
    Some(CaseType {
        id: c.id.get_ref().clone(),
        title: c.title.clone(),
        openers: c.openers.iter().map(|o| o.get_ref().clone()).collect(),
        purpose: c.purpose.get_ref().clone(),
        application: RecordType::application(c.id.get_ref(), schema, version, subjects, validator),
        steps,
        reply: c.reply.get_ref().clone(),
        escalation: c
            .escalation
            .as_ref()
            .map(|e| Escalation { after_days: *e.after_days.get_ref(), to: e.to.get_ref().clone() }),
    })
}

/// Whether `department` may see field `q` of `t` for `purpose`, as a read would: the owner and
/// unconditional types wholly, others through a grant whose fields include it.
fn may_see(config: &Config, department: &str, t: &RecordType, purpose: &str, q: &FieldPointer) -> Result<(), String> {
    if t.owner == department || t.sharing == Sharing::Unconditional {
        return Ok(());
    }
    if t.sharing == Sharing::None {
        return Err(format!("{} is not shared (sharing = \"none\"): {department} cannot see {q}", t.id));
    }
    let Some(g) = config.grant_for(department, &t.id, purpose) else {
        return Err(format!("{department} has no grant on {} for purpose {purpose:?}, so it cannot see {q}", t.id));
    };
    let covered =
        g.fields.iter().any(|f| q.as_str() == f.get_ref() || q.as_str().starts_with(&format!("{}/", f.get_ref())));
    if covered {
        Ok(())
    } else {
        Err(format!("{department}'s grant on {} for purpose {purpose:?} does not include {q}", t.id))
    }
}
