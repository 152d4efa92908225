//! Which status changes become alerts. A change of status is raised once, when it happens
//! (ok → warn → critical → ok). A check that flaps — more than `max_changes` changes within its last
//! `window` runs — raises one "flapping" alert and then stays quiet until it has held one status
//! for `window` runs, when its settled status is raised if it differs from the last one raised.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::check::Status;
use crate::runner::Run;

/// One alert for the vendor's ticketing system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Check name.
    pub check: String,
    /// Check kind.
    pub kind: String,
    /// Status last raised.
    pub from: Status,
    /// Status now.
    pub to: Status,
    /// The run's summary.
    pub summary: String,
    /// When the run started.
    pub time: DateTime<Utc>,
    /// The check changes status too often; further changes are held back.
    pub flapping: bool,
}

#[derive(Default)]
struct PerCheck {
    raised: Option<Status>,
    recent: VecDeque<Status>,
    quiet: bool,
}

/// The alert state of every check.
pub struct Alerts {
    window: usize,
    max_changes: usize,
    checks: HashMap<String, PerCheck>,
}

impl Alerts {
    /// Flap suppression over the last `window` runs, tolerating `max_changes` changes.
    pub fn new(window: usize, max_changes: usize) -> Self {
        Self { window: window.max(2), max_changes, checks: HashMap::new() }
    }

    /// Takes a finished run; returns the alert to raise, if any. A check's first run raises only
    /// when it is not ok (the hub starting is not an incident).
    pub fn observe(&mut self, run: &Run) -> Option<Alert> {
        let window = self.window;
        let st = self.checks.entry(run.name.clone()).or_default();
        let now = run.report.status;
        st.recent.push_back(now);
        while st.recent.len() > window {
            st.recent.pop_front();
        }
        let changes = st.recent.iter().zip(st.recent.iter().skip(1)).filter(|(a, b)| a != b).count();
        let alert = |from: Status, flapping: bool| Alert {
            check: run.name.clone(),
            kind: run.kind.clone(),
            from,
            to: now,
            summary: run.report.summary.clone(),
            time: run.started,
            flapping,
        };
        let Some(raised) = st.raised else {
            st.raised = Some(now);
            return (now != Status::Ok).then(|| alert(Status::Ok, false));
        };
        if st.quiet {
            let settled = st.recent.len() == window && changes == 0;
            if settled {
                st.quiet = false;
                if now != raised {
                    st.raised = Some(now);
                    return Some(alert(raised, false));
                }
            }
            return None;
        }
        if now == raised {
            return None;
        }
        st.raised = Some(now);
        if changes > self.max_changes {
            st.quiet = true;
            return Some(alert(raised, true));
        }
        Some(alert(raised, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Report;
    use crate::runner::Trigger;

    fn run(status: Status) -> Run {
        Run {
            name: "backlog".into(),
            kind: "delivery_backlog".into(),
            started: Utc::now(),
            duration_ms: 1,
            report: Report::new(status, "x"),
            trigger: Trigger::Schedule,
        }
    }

    fn feed(a: &mut Alerts, seq: &[Status]) -> Vec<(Status, Status, bool)> {
        seq.iter().filter_map(|s| a.observe(&run(*s))).map(|x| (x.from, x.to, x.flapping)).collect()
    }

    use Status::*;

    #[test]
    fn changes_are_raised_once_each() {
        let mut a = Alerts::new(6, 3);
        let got = feed(&mut a, &[Ok, Ok, Warn, Warn, Critical, Critical, Ok, Ok]);
        assert_eq!(got, vec![(Ok, Warn, false), (Warn, Critical, false), (Critical, Ok, false)]);
    }

    #[test]
    fn a_first_bad_run_is_raised_a_first_good_one_is_not() {
        assert_eq!(feed(&mut Alerts::new(6, 3), &[Critical]), vec![(Ok, Critical, false)]);
        assert_eq!(feed(&mut Alerts::new(6, 3), &[Ok]), vec![]);
    }

    #[test]
    fn flapping_is_raised_once_then_quiet_until_settled() {
        let mut a = Alerts::new(4, 2);
        let flaps = [Ok, Critical, Ok, Critical, Ok, Critical, Ok, Critical];
        let got = feed(&mut a, &flaps);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[2].2, "the third change within the window is marked flapping: {got:?}");
        // Settles on critical, the status last raised: nothing new to say.
        let settled = feed(&mut a, &[Critical, Critical, Critical, Critical, Critical]);
        assert_eq!(settled, vec![]);
        // And a later recovery is raised normally.
        assert_eq!(feed(&mut a, &[Ok]), vec![(Critical, Ok, false)]);
    }
}
