//! Cron schedules with a seconds field (`sec min hour day month weekday`), evaluated in the hub's
//! time zone (Asia/Shanghai by default) so "every day at 02:00" means 02:00 in Conghua.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A schedule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule {expr:?}: {reason}")]
pub struct ScheduleError {
    /// The expression.
    pub expr: String,
    /// Why.
    pub reason: String,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    inner: cron::Schedule,
    tz: Tz,
}

impl Schedule {
    /// Parses a six-field expression (seconds first) for a time zone.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let err = |reason: &str| ScheduleError { expr: expr.to_owned(), reason: reason.to_owned() };
        if expr.split_whitespace().count() != 6 {
            return Err(err("needs six fields: second minute hour day-of-month month day-of-week"));
        }
        let inner = cron::Schedule::from_str(expr).map_err(|e| err(&e.to_string()))?;
        if inner.upcoming(tz).next().is_none() {
            return Err(err("never fires"));
        }
        Ok(Self { expr: expr.to_owned(), inner, tz })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.inner.after(&t.with_timezone(&self.tz)).next().map(|d| d.with_timezone(&Utc))
    }

    /// The last firing at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = t + chrono::Duration::milliseconds(1);
        self.inner.after(&after.with_timezone(&self.tz)).next_back().map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Asia::Shanghai;

    #[test]
    fn daily_schedules_follow_the_hubs_time_zone() {
        let s = Schedule::parse("0 0 2 * * *", Shanghai).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(); // 20:00 in Conghua
                                                                       // 02:00 in Conghua is 18:00 UTC the day before.
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 11, 26, 18, 0, 0).unwrap()));
        assert_eq!(s.last_at_or_before(t), Some(Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap()));
        let exact = Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap();
        assert_eq!(s.last_at_or_before(exact), Some(exact));
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(Schedule::parse("*/5 * * * *", Shanghai).is_err(), "five fields");
        assert!(Schedule::parse("0 61 * * * *", Shanghai).is_err());
        assert!(Schedule::parse("0 0 0 30 2 *", Shanghai).is_err(), "30 February never comes");
        assert!(Schedule::parse("0 */5 * * * *", Shanghai).is_ok());
    }
}
