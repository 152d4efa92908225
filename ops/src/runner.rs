//! Fires checks on their schedules. One task per check, so a check never overlaps itself; a
//! manual run while one is under way is refused. A scheduled instant that passed while the hub
//! was down is run once at start, as is a check that never ran. Every run has a deadline and is recorded in the [`History`]
//! before observers (alerts) hear of it. Wall time comes from a [`Clock`] that advances with tokio
//! time, so tests pause time and check exact firing instants without sleeping.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{Check, Report, Status};
use crate::schedule::Schedule;

/// Wall time that moves with tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0: DateTime<Utc>,
    inst0: Instant,
}

impl Clock {
    /// The system's time.
    pub fn system() -> Self {
        Self::starting_at(Utc::now())
    }

    /// A clock that reads `t` now (tests start it at a chosen instant).
    pub fn starting_at(t: DateTime<Utc>) -> Self {
        Self { wall0: t, inst0: Instant::now() }
    }

    /// Current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        self.wall0 + chrono::Duration::from_std(self.inst0.elapsed()).unwrap_or_default()
    }

    /// The tokio instant at which the clock will read `t`.
    pub fn instant_at(&self, t: DateTime<Utc>) -> Instant {
        self.inst0 + (t - self.wall0).to_std().unwrap_or_default()
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Its schedule fired.
    Schedule,
    /// A scheduled instant passed while the hub was down.
    Missed,
    /// An operator asked.
    Manual,
}

impl Trigger {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Missed => "missed",
            Trigger::Manual => "manual",
        }
    }
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Check name.
    pub name: String,
    /// Check kind.
    pub kind: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
    /// What it found.
    pub report: Report,
    /// Why it ran.
    pub trigger: Trigger,
}

/// Where runs are kept.
#[async_trait]
pub trait History: Send + Sync {
    /// Stores a finished run.
    async fn record(&self, run: &Run) -> Result<(), String>;
    /// When the check last started, if ever.
    async fn last_started(&self, name: &str) -> Result<Option<DateTime<Utc>>, String>;
    /// Takes the run of one scheduled instant (`None`: the first run of a check that never ran).
    /// A history shared by several hub nodes says yes to the first node that asks and no to the
    /// rest, so a cluster runs each instant once. One node alone is always the first.
    async fn claim(&self, _name: &str, _slot: Option<DateTime<Utc>>) -> Result<bool, String> {
        Ok(true)
    }
}

/// Hears of every recorded run (alerting).
#[async_trait]
pub trait Observer: Send + Sync {
    /// A run finished and was recorded.
    async fn finished(&self, run: &Run);
}

/// A check with its schedule and deadline.
pub struct Entry {
    /// The check.
    pub check: Arc<dyn Check>,
    /// When it runs.
    pub schedule: Schedule,
    /// Longest a run may take.
    pub timeout: Duration,
}

/// Why a run did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// No check of that name.
    #[error("there is no check {0:?}")]
    Unknown(String),
    /// It is running already.
    #[error("check {0:?} is already running")]
    AlreadyRunning(String),
}

struct Slot {
    entry: Entry,
    busy: tokio::sync::Mutex<()>,
}

/// The scheduler.
pub struct Runner {
    slots: Vec<Slot>,
    history: Arc<dyn History>,
    observers: Vec<Arc<dyn Observer>>,
    clock: Clock,
}

impl Runner {
    /// A runner over `entries`, recording into `history`.
    pub fn new(entries: Vec<Entry>, history: Arc<dyn History>, clock: Clock) -> Self {
        let slots = entries.into_iter().map(|entry| Slot { entry, busy: tokio::sync::Mutex::new(()) }).collect();
        Self { slots, history, observers: Vec::new(), clock }
    }

    /// Adds an observer of finished runs.
    pub fn observe(mut self, o: Arc<dyn Observer>) -> Self {
        self.observers.push(o);
        self
    }

    /// The checks, in config order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().map(|s| &s.entry)
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Runs a check now, unless it is running already.
    pub async fn run_now(&self, name: &str, trigger: Trigger) -> Result<Run, RunError> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.entry.check.name() == name)
            .ok_or_else(|| RunError::Unknown(name.to_owned()))?;
        let _busy = slot.busy.try_lock().map_err(|_| RunError::AlreadyRunning(name.to_owned()))?;
        let started = self.clock.now();
        let t0 = Instant::now();
        let limit = slot.entry.timeout;
        let report = match tokio::time::timeout(limit, slot.entry.check.run()).await {
            Ok(r) => r,
            Err(_) => Report::new(Status::Critical, format!("the check did not finish within {} s", limit.as_secs())),
        };
        let run = Run {
            name: name.to_owned(),
            kind: slot.entry.check.kind().to_owned(),
            started,
            duration_ms: t0.elapsed().as_millis() as u64,
            report,
            trigger,
        };
        if let Err(e) = self.history.record(&run).await {
            tracing::error!(check = name, error = %e, "cannot record the check run");
        }
        for o in &self.observers {
            o.finished(&run).await;
        }
        Ok(run)
    }

    /// Starts one task per check; they stop when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        (0..self.slots.len())
            .map(|i| {
                let (runner, shutdown) = (self.clone(), shutdown.clone());
                tokio::spawn(async move { runner.drive(i, shutdown).await })
            })
            .collect()
    }

    /// Whether this node runs the scheduled instant `slot`. When the history cannot say, it runs:
    /// a check run twice does less harm than one never run.
    async fn take(&self, name: &str, slot: Option<DateTime<Utc>>) -> bool {
        match self.history.claim(name, slot).await {
            Ok(mine) => {
                if !mine {
                    tracing::debug!(check = name, "another node runs this scheduled instant");
                }
                mine
            }
            Err(e) => {
                tracing::warn!(check = name, error = %e, "cannot claim the scheduled run; running it here");
                true
            }
        }
    }

    async fn drive(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let entry = &self.slots[index].entry;
        let name = entry.check.name().to_owned();
        // A firing that passed while the hub was down runs once, now; so does a check that never
        // ran, so that health is known from the start rather than from the first firing.
        let due = entry.schedule.last_at_or_before(self.clock.now());
        let missed = match self.history.last_started(&name).await {
            Ok(Some(last)) => due.is_some_and(|due| due > last),
            Ok(None) => true,
            Err(_) => false,
        };
        if missed && self.take(&name, due).await {
            let _ = self.run_now(&name, Trigger::Missed).await;
        }
        while let Some(next) = entry.schedule.next_after(self.clock.now()) {
            tokio::select! {
                () = tokio::time::sleep_until(self.clock.instant_at(next)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            if !self.take(&name, Some(next)).await {
                continue;
            }
            if let Err(e) = self.run_now(&name, Trigger::Schedule).await {
                tracing::warn!(check = %name, error = %e, "scheduled run skipped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    #[derive(Default)]
    struct Memory {
        runs: Mutex<Vec<Run>>,
        seeded_last: Mutex<Option<DateTime<Utc>>>,
        claimed: Mutex<std::collections::HashSet<(String, Option<DateTime<Utc>>)>>,
    }

    #[async_trait]
    impl History for Memory {
        async fn record(&self, run: &Run) -> Result<(), String> {
            self.runs.lock().unwrap().push(run.clone());
            Ok(())
        }
        async fn last_started(&self, _: &str) -> Result<Option<DateTime<Utc>>, String> {
            Ok(*self.seeded_last.lock().unwrap())
        }
        async fn claim(&self, name: &str, slot: Option<DateTime<Utc>>) -> Result<bool, String> {
            Ok(self.claimed.lock().unwrap().insert((name.to_owned(), slot)))
        }
    }

    struct Probe {
        hold: Option<Arc<Notify>>,
    }

    #[async_trait]
    impl Check for Probe {
        fn name(&self) -> &str {
            "probe"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn run(&self) -> Report {
            if let Some(n) = &self.hold {
                n.notified().await;
            }
            Report::new(Status::Ok, "fine")
        }
    }

    fn runner(history: Arc<Memory>, hold: Option<Arc<Notify>>, start: DateTime<Utc>, timeout: Duration) -> Arc<Runner> {
        let entry = Entry {
            check: Arc::new(Probe { hold }),
            schedule: Schedule::parse("0 */5 * * * *", Shanghai).unwrap(),
            timeout,
        };
        Arc::new(Runner::new(vec![entry], history, Clock::starting_at(start)))
    }

    fn local(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Shanghai.with_ymd_and_hms(2026, 11, 26, h, m, s).unwrap().with_timezone(&Utc)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_scheduled_instants_in_asia_shanghai() {
        let history = Arc::new(Memory::default());
        *history.seeded_last.lock().unwrap() = Some(local(9, 55, 0));
        let r = runner(history.clone(), None, local(9, 58, 30), Duration::from_secs(10));
        let (stop, stopped) = watch::channel(false);
        let tasks = r.spawn(stopped);
        tokio::time::sleep(Duration::from_secs(16 * 60)).await;
        let _ = stop.send(true);
        for t in tasks {
            t.await.unwrap();
        }
        let times: Vec<DateTime<Utc>> = history.runs.lock().unwrap().iter().map(|r| r.started).collect();
        assert_eq!(times, vec![local(10, 0, 0), local(10, 5, 0), local(10, 10, 0)]);
        assert!(history.runs.lock().unwrap().iter().all(|r| r.trigger == Trigger::Schedule));
    }

    #[tokio::test(start_paused = true)]
    async fn two_nodes_sharing_a_history_run_each_instant_once() {
        let history = Arc::new(Memory::default());
        let nodes = [
            runner(history.clone(), None, local(9, 58, 30), Duration::from_secs(10)),
            runner(history.clone(), None, local(9, 58, 30), Duration::from_secs(10)),
        ];
        let (stop, stopped) = watch::channel(false);
        let tasks: Vec<_> = nodes.iter().flat_map(|r| r.spawn(stopped.clone())).collect();
        tokio::time::sleep(Duration::from_secs(11 * 60)).await;
        let _ = stop.send(true);
        for t in tasks {
            t.await.unwrap();
        }
        let runs: Vec<(Trigger, DateTime<Utc>)> =
            history.runs.lock().unwrap().iter().map(|r| (r.trigger, r.started)).collect();
        // Both found the check never run: one first run; then one run per instant.
        assert_eq!(
            runs,
            vec![
                (Trigger::Missed, local(9, 58, 30)),
                (Trigger::Schedule, local(10, 0, 0)),
                (Trigger::Schedule, local(10, 5, 0))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_missed_while_down_runs_once_at_start() {
        let history = Arc::new(Memory::default());
        *history.seeded_last.lock().unwrap() = Some(local(9, 40, 0));
        let r = runner(history.clone(), None, local(9, 58, 30), Duration::from_secs(10));
        let (stop, stopped) = watch::channel(false);
        let tasks = r.spawn(stopped);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let _ = stop.send(true);
        for t in tasks {
            t.await.unwrap();
        }
        let runs = history.runs.lock().unwrap();
        assert_eq!(runs.len(), 1, "09:45, 09:50 and 09:55 were missed: one catch-up run, not three");
        assert_eq!((runs[0].trigger, runs[0].started), (Trigger::Missed, local(9, 58, 30)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_never_ran_runs_at_start() {
        let history = Arc::new(Memory::default());
        let r = runner(history.clone(), None, local(9, 58, 30), Duration::from_secs(10));
        let (stop, stopped) = watch::channel(false);
        let tasks = r.spawn(stopped);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let _ = stop.send(true);
        for t in tasks {
            t.await.unwrap();
        }
        let runs: Vec<(Trigger, DateTime<Utc>)> =
            history.runs.lock().unwrap().iter().map(|r| (r.trigger, r.started)).collect();
        assert_eq!(runs, vec![(Trigger::Missed, local(9, 58, 30)), (Trigger::Schedule, local(10, 0, 0))]);
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_runs_are_refused_and_slow_runs_time_out() {
        let history = Arc::new(Memory::default());
        let hold = Arc::new(Notify::new());
        let r = runner(history.clone(), Some(hold.clone()), local(10, 0, 1), Duration::from_secs(30));
        let first = {
            let r = r.clone();
            tokio::spawn(async move { r.run_now("probe", Trigger::Manual).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(r.run_now("probe", Trigger::Manual).await, Err(RunError::AlreadyRunning("probe".into())));
        hold.notify_one();
        assert_eq!(first.await.unwrap().unwrap().report.status, Status::Ok);
        // Nobody releases this one: the deadline turns it critical.
        let slow = r.run_now("probe", Trigger::Manual).await.unwrap();
        assert_eq!(slow.report.status, Status::Critical);
        assert_eq!(slow.duration_ms, 30_000);
        assert_eq!(r.run_now("nope", Trigger::Manual).await, Err(RunError::Unknown("nope".into())));
    }
}
