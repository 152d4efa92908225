//! # Scheduled operations and maintenance
//!
//! The pieces of the hub's health checking that know nothing of records: cron schedules
//! evaluated in the hub's time zone, the [`check::Check`] trait and its statuses, the runner that
//! fires checks on schedule (never two runs of one check at once, a missed run caught up at
//! start, a timeout per run), and the alert state machine with flap suppression. The hub
//! implements the concrete checks (backlog, audit chain, ...) against this crate.
//!
//! # Layout
//! - [`schedule`]: cron expressions with seconds, in a time zone.
//! - [`check`]: `Check`, `Status`, `Report`.
//! - [`runner`]: the scheduler and the `History` it records into; its clock follows tokio time,
//!   so tests pause time instead of sleeping.
//! - [`alert`]: which status changes become alerts.
//! - [`sla`]: availability, incidents and MTTR over a month of runs.

pub mod alert;
pub mod check;
pub mod runner;
pub mod schedule;
pub mod sla;
