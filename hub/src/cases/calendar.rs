//! Working days: the State Council's public holidays and adjusted working days (调休) of each
//! year, read from a data file, and the arithmetic of time limits in working days.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{line_of, Problem};

/// The file's shape: one `[[years]]` table per year.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    years: Vec<YearFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: Spanned<i32>,
    /// The notice the dates come from.
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    /// Days off that would otherwise be working days.
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    /// Saturdays and Sundays that are working days (调休上班).
    #[serde(default)]
    workdays: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Clone)]
struct Year {
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

/// Which days are working days. A year the calendar does not hold counts Monday to Friday.
#[derive(Debug, Default, Clone)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
    /// Where it was read from (for warnings).
    pub path: Option<PathBuf>,
}

impl Calendar {
    /// Reads a calendar file, naming the line of every problem.
    pub fn load(path: &Path) -> Result<Calendar, Vec<Problem>> {
        let problem = |line: usize, message: String| Problem { file: path.to_path_buf(), line, message };
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![problem(1, format!("cannot read the working-day calendar: {e}"))])?;
        let file: File = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
            vec![problem(line, e.message().trim().replace('\n', " "))]
        })?;
        let mut problems = Vec::new();
        let mut years = BTreeMap::new();
        for y in file.years {
            let year = *y.year.get_ref();
            let at = |s: &Spanned<String>| line_of(&text, s.span().start);
            if years.contains_key(&year) {
                problems.push(problem(line_of(&text, y.year.span().start), format!("year {year} appears twice")));
                continue;
            }
            let mut out = Year::default();
            let date = |s: &Spanned<String>, what: &str, problems: &mut Vec<Problem>| -> Option<NaiveDate> {
                match NaiveDate::parse_from_str(s.get_ref(), "%Y-%m-%d") {
                    Err(_) => {
                        problems.push(problem(at(s), format!("{what} {:?} is not a date YYYY-MM-DD", s.get_ref())));
                        None
                    }
                    Ok(d) if d.year() != year => {
                        problems.push(problem(at(s), format!("{what} {} is not in {year}", s.get_ref())));
                        None
                    }
                    Ok(d) => Some(d),
                }
            };
            for h in &y.holidays {
                let Some(d) = date(h, "holiday", &mut problems) else { continue };
                if !out.holidays.insert(d) {
                    problems.push(problem(at(h), format!("holiday {} is listed twice", h.get_ref())));
                }
            }
            for w in &y.workdays {
                let Some(d) = date(w, "workday", &mut problems) else { continue };
                if !is_weekend(d) {
                    problems.push(problem(
                        at(w),
                        format!(
                            "workday {} is a weekday: only Saturdays and Sundays can be adjusted working days",
                            w.get_ref()
                        ),
                    ));
                } else if out.holidays.contains(&d) {
                    problems.push(problem(at(w), format!("{} is both a holiday and a workday", w.get_ref())));
                } else if !out.workdays.insert(d) {
                    problems.push(problem(at(w), format!("workday {} is listed twice", w.get_ref())));
                }
            }
            years.insert(year, out);
        }
        if problems.is_empty() {
            Ok(Calendar { years, path: Some(path.to_path_buf()) })
        } else {
            Err(problems)
        }
    }

    /// True when the calendar holds `year`.
    pub fn knows(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// Whether `d` is a working day.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        match self.years.get(&d.year()) {
            Some(y) if y.workdays.contains(&d) => true,
            Some(y) if y.holidays.contains(&d) => false,
            _ => !is_weekend(d),
        }
    }

    /// The `n`-th working day after `from` (a step ready on `from` has `n` full working days,
    /// however late in the day it became ready).
    pub fn add_working_days(&self, from: NaiveDate, n: u32) -> NaiveDate {
        let mut d = from;
        let mut left = n;
        while left > 0 {
            d = d.checked_add_days(Days::new(1)).unwrap_or(d);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// Working days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        let mut n = 0;
        let mut d = from;
        while d < to {
            d = d.checked_add_days(Days::new(1)).unwrap_or(to);
            if self.is_working_day(d) {
                n += 1;
            }
        }
        n
    }
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn calendar(text: &str) -> Result<Calendar, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calendar.toml");
        std::fs::write(&path, text).unwrap();
        Calendar::load(&path)
    }

    #[test]
    fn the_spring_festival_of_2026_moves_a_time_limit_past_the_holiday() {
        let c = calendar(
            "[[years]]\nyear = 2026\nholidays = [\"2026-02-16\", \"2026-02-17\", \"2026-02-18\", \"2026-02-19\", \
             \"2026-02-20\", \"2026-02-23\"]\nworkdays = [\"2026-02-14\", \"2026-02-28\"]\n",
        )
        .unwrap();
        // Friday 13 February + 3 working days: Saturday 14th (adjusted), then Tuesday 24th and
        // Wednesday 25th, after the holiday.
        assert_eq!(c.add_working_days(day("2026-02-13"), 1), day("2026-02-14"));
        assert_eq!(c.add_working_days(day("2026-02-13"), 3), day("2026-02-25"));
        assert!(c.is_working_day(day("2026-02-28")), "an adjusted Saturday is worked");
        assert!(!c.is_working_day(day("2026-02-21")), "an ordinary Saturday is not");
        assert_eq!(c.working_days_between(day("2026-02-13"), day("2026-02-25")), 3);
        assert_eq!(c.working_days_between(day("2026-02-25"), day("2026-02-13")), 0);
        // A year it does not hold counts Monday to Friday.
        assert!(!c.knows(2027));
        assert_eq!(c.add_working_days(day("2027-01-01"), 1), day("2027-01-04"));
    }

    #[test]
    fn every_problem_of_a_calendar_names_its_line() {
        let problems = calendar(
            "[[years]]\nyear = 2026\nholidays = [\n  \"2026-01-01\",\n  \"2026-13-01\",\n  \"2025-12-31\",\n  \"2026-01-01\",\n]\n\
             workdays = [\n  \"2026-01-05\",\n  \"2026-01-01\",\n]\n",
        )
        .unwrap_err();
        let lines: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (5, "holiday \"2026-13-01\" is not a date YYYY-MM-DD"),
                (6, "holiday 2025-12-31 is not in 2026"),
                (7, "holiday 2026-01-01 is listed twice"),
                (10, "workday 2026-01-05 is a weekday: only Saturdays and Sundays can be adjusted working days"),
                (11, "workday 2026-01-01 is a weekday: only Saturdays and Sundays can be adjusted working days"),
            ]
        );
        let unknown = calendar("[[years]]\nyear = 2026\nholiday = []\n").unwrap_err();
        assert_eq!(unknown[0].line, 3, "{unknown:?}");
        assert!(unknown[0].message.contains("unknown field"), "{unknown:?}");
    }
}
