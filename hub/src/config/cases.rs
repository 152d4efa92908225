//! Joint cases in the file: `[cases]` (the working-day calendar, the sweep for late steps) and
//! `[[case_types]]` with their steps, and the checks on them that need no schema.

use serde::Deserialize;
use toml::Spanned;

use super::{is_kebab, Config, Problems};

/// What a step's completion is: a record its department publishes, or an explicit answer.
pub const ANSWER: &str = "answer";

/// The internal record type of a case's states (one version per transition).
pub const CASE_TYPE: &str = "hub.case";
/// The internal record type of case events; a `[[subscriptions]]` entry with this record type
/// receives the events addressed to its department.
pub const CASE_EVENT_TYPE: &str = "hub.case-event";

/// `[cases]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesSection {
    /// The working-day calendar (public holidays and adjusted working days per year), a TOML
    /// file relative to this config. Without it every Monday to Friday is a working day.
    #[serde(default)]
    pub calendar: Option<Spanned<String>>,
    /// How often the hub looks for steps past their time limit (seconds).
    #[serde(default = "default_sweep")]
    pub sweep_secs: u64,
}

fn default_sweep() -> u64 {
    60
}

impl Default for CasesSection {
    fn default() -> Self {
        Self { calendar: None, sweep_secs: default_sweep() }
    }
}

/// `[[case_types]]`: one application, several departments' steps, one unified reply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseTypeConfig {
    /// Id (kebab-case), used in URLs.
    pub id: Spanned<String>,
    /// Display name.
    pub title: String,
    /// Departments that may open a case of this type.
    pub openers: Vec<Spanned<String>>,
    /// Path of the application's JSON Schema, in a folder named `vN`.
    pub application: Spanned<String>,
    /// Pointers (with `*` over arrays) of the resident IDs or credit codes the application concerns:
    /// the citizen access log shows who worked on their case.
    #[serde(default)]
    pub subjects: Vec<Spanned<String>>,
    /// The purpose a step's department reads the case for (unless the step names its own); its
    /// grants on earlier steps' records must name it.
    pub purpose: Spanned<String>,
    /// The steps, each done by one department.
    pub steps: Vec<StepConfig>,
    /// The subscription (of an opener, record type `hub.case-event`) the unified reply and the
    /// opener's other case events travel through.
    pub reply: Spanned<String>,
    /// Where a step goes once it is late by `after_days` more working days.
    #[serde(default)]
    pub escalation: Option<EscalationConfig>,
}

/// One department's part of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Id within the case type (kebab-case).
    pub id: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub title: Option<String>,
    /// The department that does it.
    pub department: Spanned<String>,
    /// A record type that department owns (publishing it with `Hub-Case-Step` completes the
    /// step), or `"answer"`.
    pub completes_with: Spanned<String>,
    /// Steps that must be done first.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// What the department sees: pointers into the case, `/application/...` or
    /// `/steps/<step>/record/...` (an earlier step's record, through the department's grant).
    #[serde(default)]
    pub fields: Vec<Spanned<String>>,
    /// The purpose this department reads the case for, when it is not the case type's (each
    /// department reads under its own legal basis: a birth service registration, a household
    /// update).
    #[serde(default)]
    pub purpose: Option<Spanned<String>>,
    /// Working days the department has once the step is ready.
    pub time_limit_days: Spanned<u32>,
    /// A jq condition on the application: the step is part of a case only where it holds.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
}

/// `escalation = { after_days = N, to = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// Working days past the step's time limit.
    pub after_days: Spanned<u32>,
    /// A department (its `hub.case-event` subscriptions receive the escalation) or an operator
    /// (an auditor or ops: it sees the step in its case list).
    pub to: Spanned<String>,
}

impl Config {
    /// A case type by id.
    pub fn case_type(&self, id: &str) -> Option<&CaseTypeConfig> {
        self.case_types.iter().find(|c| c.id.get_ref() == id)
    }

    /// Case types and their steps: names, references, dependencies without cycles, the reply
    /// subscription, escalation targets.
    pub(super) fn check_cases(&self, p: &mut Problems<'_>) {
        if self.cases.sweep_secs == 0 {
            p.at(0..0, "cases sweep_secs must be at least 1");
        }
        for (i, c) in self.case_types.iter().enumerate() {
            let id = c.id.get_ref();
            if !is_kebab(id) {
                p.at(c.id.span(), format!("case type id {id:?} must be kebab-case"));
            }
            if self.case_types[..i].iter().any(|o| o.id.get_ref() == id) {
                p.at(c.id.span(), format!("case type {id:?} is defined twice"));
            }
            if c.openers.is_empty() {
                p.at(c.id.span(), format!("case type {id:?} needs at least one opener"));
            }
            for o in &c.openers {
                if self.department(o.get_ref()).is_none() {
                    p.at(o.span(), format!("opener {:?} is not a department", o.get_ref()));
                }
            }
            if !is_kebab(c.purpose.get_ref()) {
                p.at(c.purpose.span(), format!("purpose {:?} must be kebab-case", c.purpose.get_ref()));
            }
            for s in &c.subjects {
                if let Err(e) = crate::catalog::pointer::FieldPointer::parse(s.get_ref()) {
                    p.at(s.span(), format!("subject: {e}"));
                }
            }
            self.check_reply(p, c);
            if c.steps.is_empty() {
                p.at(c.id.span(), format!("case type {id:?} needs at least one step"));
            }
            for (j, s) in c.steps.iter().enumerate() {
                self.check_step(p, c, j, s);
            }
            if let Some(cycle) = cycle(c) {
                p.at(c.id.span(), format!("the steps of {id:?} depend on each other in a circle: {cycle}"));
            }
            if let Some(e) = &c.escalation {
                let to = e.to.get_ref();
                let operator = self.operators.iter().find(|o| o.id.get_ref() == to);
                let ok = self.department(to).is_some()
                    || operator.is_some_and(|o| matches!(o.role, super::Role::Auditor | super::Role::Ops));
                if !ok {
                    p.at(e.to.span(), format!("escalation to {to:?}: not a department, an auditor or an ops operator"));
                }
                if *e.after_days.get_ref() == 0 {
                    p.at(e.after_days.span(), "escalation after_days must be at least 1");
                }
            }
        }
    }

    fn check_reply(&self, p: &mut Problems<'_>, c: &CaseTypeConfig) {
        let name = c.reply.get_ref();
        match self.subscriptions.iter().find(|s| s.name.get_ref() == name) {
            None => p.at(c.reply.span(), format!("reply {name:?} is not a subscription")),
            Some(s) if s.record_type.get_ref() != CASE_EVENT_TYPE => p.at(
                c.reply.span(),
                format!("reply {name:?} must be a subscription with record_type = {CASE_EVENT_TYPE:?}"),
            ),
            Some(s) if !c.openers.iter().any(|o| o.get_ref() == s.department.get_ref()) => p.at(
                c.reply.span(),
                format!(
                    "reply {name:?} belongs to {:?}, which does not open {:?}",
                    s.department.get_ref(),
                    c.id.get_ref()
                ),
            ),
            Some(_) => {}
        }
    }

    fn check_step(&self, p: &mut Problems<'_>, c: &CaseTypeConfig, j: usize, s: &StepConfig) {
        let id = s.id.get_ref();
        if !is_kebab(id) {
            p.at(s.id.span(), format!("step id {id:?} must be kebab-case"));
        }
        if c.steps[..j].iter().any(|o| o.id.get_ref() == id) {
            p.at(s.id.span(), format!("step {id:?} is defined twice in {:?}", c.id.get_ref()));
        }
        let dept = s.department.get_ref();
        if self.department(dept).is_none() {
            p.at(s.department.span(), format!("step department {dept:?} is not a department"));
        }
        let with = s.completes_with.get_ref();
        if with != ANSWER {
            match self.record_type(with) {
                None => p.at(
                    s.completes_with.span(),
                    format!("completes_with {with:?} is neither \"answer\" nor a record type"),
                ),
                Some(t) if t.owner.get_ref() != dept => p.at(
                    s.completes_with.span(),
                    format!("{with:?} is published by {:?}, not by the step's department {dept:?}", t.owner.get_ref()),
                ),
                Some(_) => {}
            }
        }
        for d in &s.depends_on {
            if !c.steps.iter().any(|o| o.id.get_ref() == d.get_ref()) {
                p.at(d.span(), format!("depends_on {:?} is not a step of {:?}", d.get_ref(), c.id.get_ref()));
            }
        }
        if let Some(purpose) = &s.purpose {
            if !is_kebab(purpose.get_ref()) {
                p.at(purpose.span(), format!("purpose {:?} must be kebab-case", purpose.get_ref()));
            }
        }
        if *s.time_limit_days.get_ref() == 0 {
            p.at(s.time_limit_days.span(), "time_limit_days must be at least 1 (working days)");
        }
        if let Some(w) = &s.when {
            if let Err(e) = crate::routing::jq::JqProgram::compile(w.get_ref()) {
                p.at(w.span(), format!("when: {e}"));
            }
        }
        for f in &s.fields {
            match f.get_ref().strip_prefix("/steps/").and_then(|rest| rest.split_once('/')) {
                Some((step, rest)) => {
                    let earlier = c.steps.iter().find(|o| o.id.get_ref() == step);
                    match earlier {
                        None => p.at(f.span(), format!("field {:?}: {step:?} is not a step", f.get_ref())),
                        Some(o) if !depends(c, s, step) => p.at(
                            f.span(),
                            format!("field {:?}: step {id:?} does not depend on {:?}", f.get_ref(), o.id.get_ref()),
                        ),
                        Some(o) if o.completes_with.get_ref() == ANSWER => p.at(
                            f.span(),
                            format!("field {:?}: step {step:?} completes with an answer, not a record", f.get_ref()),
                        ),
                        Some(_) if !rest.starts_with("record/") => p.at(
                            f.span(),
                            format!(
                                "field {:?}: an earlier step's fields are under /steps/{step}/record/",
                                f.get_ref()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                None if f.get_ref().starts_with("/application/") => {}
                None => p.at(
                    f.span(),
                    format!("field {:?} must start with /application/ or /steps/<step>/record/", f.get_ref()),
                ),
            }
        }
    }
}

/// True when `step` is `from` or one of the steps it depends on, directly or not.
pub fn depends(c: &CaseTypeConfig, from: &StepConfig, step: &str) -> bool {
    let mut todo: Vec<&str> = from.depends_on.iter().map(|d| d.get_ref().as_str()).collect();
    let mut seen: Vec<&str> = Vec::new();
    while let Some(s) = todo.pop() {
        if s == step {
            return true;
        }
        if seen.contains(&s) {
            continue;
        }
        seen.push(s);
        if let Some(o) = c.steps.iter().find(|o| o.id.get_ref() == s) {
            todo.extend(o.depends_on.iter().map(|d| d.get_ref().as_str()));
        }
    }
    false
}

/// A dependency circle among the steps, as `a → b → a`, if there is one.
fn cycle(c: &CaseTypeConfig) -> Option<String> {
    c.steps.iter().find(|s| depends(c, s, s.id.get_ref())).map(|s| {
        let mut path = vec![s.id.get_ref().as_str()];
        let mut at = s;
        // Follow, from each step, a dependency that leads back to the start.
        while let Some(next) = at
            .depends_on
            .iter()
            .filter_map(|d| c.steps.iter().find(|o| o.id.get_ref() == d.get_ref()))
            .find(|o| o.id.get_ref() == s.id.get_ref() || depends(c, o, s.id.get_ref()))
        {
            path.push(next.id.get_ref());
            if next.id.get_ref() == s.id.get_ref() || path.len() > c.steps.len() + 1 {
                break;
            }
            at = next;
        }
        path.join(" → ")
    })
}
