//! A case as it is stored (one `hub.case` version per transition) and the transitions
//! themselves, pure: open, answer, refuse, the sweep for late steps. Each transition says which
//! notices it sends and to whom; the engine turns them into `hub.case-event` versions committed
//! with the case's new version.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::calendar::Calendar;
use super::CaseType;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseState {
    /// Steps are being worked.
    Open,
    /// Every step is done; the unified reply went out.
    Completed,
    /// A step refused; the others were cancelled.
    Refused,
}

impl CaseState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Open => "open",
            CaseState::Completed => "completed",
            CaseState::Refused => "refused",
        }
    }
}

/// Where a step stands (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// A step it depends on is not done yet.
    Waiting,
    /// Its department may work on it.
    Ready,
    /// Done, with its record or answer.
    Done,
    /// Its department refused the application.
    Refused,
    /// Another step refused, so this one stopped.
    Cancelled,
}

impl StepState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Waiting => "waiting",
            StepState::Ready => "ready",
            StepState::Done => "done",
            StepState::Refused => "refused",
            StepState::Cancelled => "cancelled",
        }
    }
}

/// A record version a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordRef {
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Key.
    pub key: String,
    /// Version.
    pub version: u64,
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Step id (from the case type).
    pub id: String,
    /// The department that does it.
    pub department: String,
    /// A record type id, or `"answer"`.
    pub completes_with: String,
    /// Steps of this case it waits for.
    pub depends_on: Vec<String>,
    /// Where it stands.
    pub state: StepState,
    /// When it became ready (RFC 3339).
    #[serde(default)]
    pub ready_at: Option<String>,
    /// The last working day of its time limit (YYYY-MM-DD, hub time zone).
    #[serde(default)]
    pub due: Option<String>,
    /// When it was done, refused or cancelled.
    #[serde(default)]
    pub done_at: Option<String>,
    /// The record it produced.
    #[serde(default)]
    pub record: Option<RecordRef>,
    /// Why it was refused.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// When its department was reminded that it is late.
    #[serde(default)]
    pub reminded_at: Option<String>,
    /// When it was escalated.
    #[serde(default)]
    pub escalated_at: Option<String>,
}

/// A case: the application and every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Id (also the `hub.case` record key).
    pub id: String,
    /// Case type id.
    pub case_type: String,
    /// The department that opened it and gets the unified reply.
    pub opener: String,
    /// Where it stands.
    pub state: CaseState,
    /// When it was opened (RFC 3339).
    pub opened_at: String,
    /// When it was completed or refused.
    #[serde(default)]
    pub closed_at: Option<String>,
    /// The application, as validated.
    pub application: Value,
    /// The steps, in the case type's order.
    pub steps: Vec<Step>,
}

/// What a notice tells its receiver (the CloudEvents type is `hub.case.` + this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A step may be worked.
    #[serde(rename = "step.ready")]
    StepReady,
    /// A step is past its time limit.
    #[serde(rename = "step.overdue")]
    StepOverdue,
    /// A step is past its time limit and the escalation's days.
    #[serde(rename = "escalated")]
    Escalated,
    /// The unified reply: every step done.
    #[serde(rename = "completed")]
    Completed,
    /// The unified reply (or, to a department still working, the order to stop): a step refused.
    #[serde(rename = "refused")]
    Refused,
}

impl Kind {
    /// The spelling in event types and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StepReady => "step.ready",
            Kind::StepOverdue => "step.overdue",
            Kind::Escalated => "escalated",
            Kind::Completed => "completed",
            Kind::Refused => "refused",
        }
    }
}

/// A notice a transition sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it says.
    pub kind: Kind,
    /// A department, or an operator (escalations).
    pub to: String,
    /// The step it is about, if one.
    pub step: Option<String>,
}

/// What a step's department says.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Done, with the record it produced (required when the step completes with a record).
    Done(Option<RecordRef>),
    /// Refused, with the reasons the applicant will read.
    Refused(Vec<String>),
}

/// Why an answer cannot be taken; the API maps each to its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such step in this case.
    #[error("case {case} has no step {step:?}")]
    NoStep {
        /// Case id.
        case: String,
        /// Step asked for.
        step: String,
    },
    /// The step belongs to another department.
    #[error("step {step:?} of case {case} is done by {owner}, not {caller}")]
    NotYours {
        /// Case id.
        case: String,
        /// Step.
        step: String,
        /// Its department.
        owner: String,
        /// The caller.
        caller: String,
    },
    /// The case or the step is not in a state to take it.
    #[error("{0}")]
    State(String),
    /// The answer does not fit the step (a record missing, of another type).
    #[error("{0}")]
    Invalid(String),
}

/// A transition's result: the case after it and the notices it sends.
pub type Transition = (Case, Vec<Notice>);

impl Case {
    /// A new case: the steps the application calls for, those with nothing to wait for ready.
    pub fn open(
        t: &CaseType,
        id: String,
        opener: &str,
        application: Value,
        now: &str,
        today: NaiveDate,
        calendar: &Calendar,
    ) -> Transition {
        let steps = t
            .steps
            .iter()
            .filter(|s| s.applies_to(&application))
            .map(|s| Step {
                id: s.id.clone(),
                department: s.department.clone(),
                completes_with: s.completes_with.clone(),
                depends_on: s.depends_on.clone(),
                state: StepState::Waiting,
                ready_at: None,
                due: None,
                done_at: None,
                record: None,
                reasons: Vec::new(),
                reminded_at: None,
                escalated_at: None,
            })
            .collect();
        let mut case = Case {
            id,
            case_type: t.id.clone(),
            opener: opener.to_owned(),
            state: CaseState::Open,
            opened_at: now.to_owned(),
            closed_at: None,
            application,
            steps,
        };
        let notices = case.advance(t, now, today, calendar);
        (case, notices)
    }

    /// A step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Takes a department's answer to one of its ready steps.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &self,
        t: &CaseType,
        step: &str,
        caller: &str,
        answer: Answer,
        now: &str,
        today: NaiveDate,
        calendar: &Calendar,
    ) -> Result<Transition, Refusal> {
        let Some(i) = self.steps.iter().position(|s| s.id == step) else {
            return Err(Refusal::NoStep { case: self.id.clone(), step: step.to_owned() });
        };
        let s = &self.steps[i];
        if s.department != caller {
            return Err(Refusal::NotYours {
                case: self.id.clone(),
                step: step.to_owned(),
                owner: s.department.clone(),
                caller: caller.to_owned(),
            });
        }
        if self.state != CaseState::Open {
            return Err(Refusal::State(format!(
                "case {} is {}: it takes no more answers",
                self.id,
                self.state.as_str()
            )));
        }
        match s.state {
            StepState::Ready => {}
            StepState::Waiting => {
                let open: Vec<&str> = s
                    .depends_on
                    .iter()
                    .filter(|d| self.step(d).is_some_and(|o| o.state != StepState::Done))
                    .map(String::as_str)
                    .collect();
                return Err(Refusal::State(format!("step {step:?} is not ready: it waits for {}", open.join(", "))));
            }
            other => {
                return Err(Refusal::State(format!("step {step:?} was already answered ({})", other.as_str())));
            }
        }
        let mut case = self.clone();
        let mut notices = Vec::new();
        match answer {
            Answer::Done(record) => {
                match (&record, s.completes_with.as_str()) {
                    (None, super::ANSWER) | (Some(_), super::ANSWER) => {}
                    (None, ty) => {
                        return Err(Refusal::Invalid(format!("step {step:?} is done with a {ty} record: name it")))
                    }
                    (Some(r), ty) if r.record_type != ty => {
                        return Err(Refusal::Invalid(format!(
                            "step {step:?} is done with a {ty} record, not {}",
                            r.record_type
                        )))
                    }
                    (Some(_), _) => {}
                }
                let st = &mut case.steps[i];
                st.state = StepState::Done;
                st.done_at = Some(now.to_owned());
                st.record = record;
                notices.extend(case.advance(t, now, today, calendar));
            }
            Answer::Refused(reasons) => {
                if reasons.is_empty() || reasons.iter().any(|r| r.trim().is_empty()) {
                    return Err(Refusal::Invalid("a refusal needs at least one reason, none of them empty".into()));
                }
                let st = &mut case.steps[i];
                st.state = StepState::Refused;
                st.done_at = Some(now.to_owned());
                st.reasons = reasons;
                for other in case.steps.iter_mut().filter(|o| o.id != step) {
                    if other.state == StepState::Ready {
                        // Still working on it: tell it to stop.
                        notices.push(Notice {
                            kind: Kind::Refused,
                            to: other.department.clone(),
                            step: Some(other.id.clone()),
                        });
                    }
                    if matches!(other.state, StepState::Ready | StepState::Waiting) {
                        other.state = StepState::Cancelled;
                        other.done_at = Some(now.to_owned());
                    }
                }
                case.state = CaseState::Refused;
                case.closed_at = Some(now.to_owned());
                notices.push(Notice { kind: Kind::Refused, to: case.opener.clone(), step: None });
            }
        }
        Ok((case, notices))
    }

    /// Marks ready every waiting step whose dependencies are done, and completes the case when
    /// every step is.
    fn advance(&mut self, t: &CaseType, now: &str, today: NaiveDate, calendar: &Calendar) -> Vec<Notice> {
        let mut notices = Vec::new();
        let done: Vec<String> =
            self.steps.iter().filter(|s| s.state == StepState::Done).map(|s| s.id.clone()).collect();
        let present: Vec<String> = self.steps.iter().map(|s| s.id.clone()).collect();
        for s in self.steps.iter_mut().filter(|s| s.state == StepState::Waiting) {
            // A dependency the application did not call for is no dependency.
            if s.depends_on.iter().all(|d| done.contains(d) || !present.contains(d)) {
                let limit = t.step(&s.id).map_or(1, |c| c.time_limit_days);
                s.state = StepState::Ready;
                s.ready_at = Some(now.to_owned());
                s.due = Some(calendar.add_working_days(today, limit).to_string());
                notices.push(Notice { kind: Kind::StepReady, to: s.department.clone(), step: Some(s.id.clone()) });
            }
        }
        if self.state == CaseState::Open && self.steps.iter().all(|s| s.state == StepState::Done) {
            self.state = CaseState::Completed;
            self.closed_at = Some(now.to_owned());
            notices.push(Notice { kind: Kind::Completed, to: self.opener.clone(), step: None });
        }
        notices
    }

    /// Reminders and escalations due `today` for late ready steps; `None` when nothing is due.
    pub fn sweep(&self, t: &CaseType, now: &str, today: NaiveDate, calendar: &Calendar) -> Option<Transition> {
        if self.state != CaseState::Open {
            return None;
        }
        let mut case = self.clone();
        let mut notices = Vec::new();
        for s in case.steps.iter_mut().filter(|s| s.state == StepState::Ready) {
            let Some(due) = s.due.as_deref().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
                continue;
            };
            if today > due && s.reminded_at.is_none() {
                s.reminded_at = Some(now.to_owned());
                notices.push(Notice { kind: Kind::StepOverdue, to: s.department.clone(), step: Some(s.id.clone()) });
            }
            if let Some(e) = &t.escalation {
                if today > calendar.add_working_days(due, e.after_days) && s.escalated_at.is_none() {
                    s.escalated_at = Some(now.to_owned());
                    notices.push(Notice { kind: Kind::Escalated, to: e.to.clone(), step: Some(s.id.clone()) });
                }
            }
        }
        (!notices.is_empty()).then_some((case, notices))
    }

    /// The first day the sweep has something to do for this case (a reminder or an escalation),
    /// for the index the sweep reads.
    pub fn next_sweep(&self, t: &CaseType, calendar: &Calendar) -> Option<NaiveDate> {
        if self.state != CaseState::Open {
            return None;
        }
        self.steps
            .iter()
            .filter(|s| s.state == StepState::Ready)
            .filter_map(|s| {
                let due = NaiveDate::parse_from_str(s.due.as_deref()?, "%Y-%m-%d").ok()?;
                let day_after = |d: NaiveDate| d.succ_opt();
                if s.reminded_at.is_none() {
                    return day_after(due);
                }
                let e = t.escalation.as_ref()?;
                if s.escalated_at.is_none() {
                    return day_after(calendar.add_working_days(due, e.after_days));
                }
                None
            })
            .min()
    }
}
