//! Cron schedules as operators write them: the standard five-field crontab line
//! (`minute hour day-of-month month day-of-week`, day-of-week `0`–`7` with `0` and `7` Sunday, or
//! `SUN`–`SAT`), read with the `cron` crate — which wants a leading seconds field and numbers
//! days of the week from `1` = Sunday, so a five-field line is translated. A six- or seven-field
//! line (seconds first, optional year last) is taken as the `cron` crate reads it.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed schedule; all times UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    schedule: cron::Schedule,
}

/// A schedule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {written:?}: {message}")]
pub struct ScheduleError {
    /// What was written.
    pub written: String,
    /// Why it does not parse.
    pub message: String,
}

impl FromStr for CronSchedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let err = |message: String| ScheduleError { written: s.to_owned(), message };
        let fields: Vec<&str> = s.split_whitespace().collect();
        let expression = match fields.len() {
            5 => {
                let dow = crontab_days_of_week(fields[4]).map_err(err)?;
                format!("0 {} {} {} {} {dow}", fields[0], fields[1], fields[2], fields[3])
            }
            6 | 7 => fields.join(" "),
            n => return Err(err(format!("expected 5 fields (minute hour day month weekday), found {n}"))),
        };
        let schedule = cron::Schedule::from_str(&expression).map_err(|e| err(e.to_string()))?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err(err("it never fires".to_owned()));
        }
        Ok(Self { source: s.to_owned(), schedule })
    }
}

impl CronSchedule {
    /// What the operator wrote.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `t`.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }

    /// The latest firing in `(after, now]`, if any: the one tick to run after downtime, however
    /// many were missed. Looks at most a few hundred thousand firings ahead of `after` (a
    /// per-second schedule missed for days), then gives the last of those.
    #[must_use]
    pub fn latest_due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).take(400_000).take_while(|t| *t <= now).last()
    }
}

/// Translates a crontab day-of-week field (`0`–`7`, `0`/`7` Sunday) to the `cron` crate's
/// numbering (`1`–`7`, `1` Sunday). Names and `*` pass through; step values are not days.
fn crontab_days_of_week(field: &str) -> Result<String, String> {
    let day = |d: &str| -> Result<String, String> {
        match d.parse::<u8>() {
            Ok(n @ 0..=6) => Ok((n + 1).to_string()),
            Ok(7) => Ok("1".to_owned()),
            Ok(n) => Err(format!("day of week {n} is out of range (0-7, 0 and 7 are Sunday)")),
            Err(_) => Ok(d.to_owned()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let base = match base.split_once('-') {
            // A range ending on Sunday written as 7 (`5-7`, Friday to Sunday) wraps past the
            // cron crate's Saturday (7) to its Sunday (1).
            Some((a, "7")) if step.is_none() => match day(a)?.as_str() {
                "1" => "1-7".to_owned(),
                a => format!("{a}-7,1"),
            },
            Some((_, "7")) => return Err("write Sunday as 0 in a stepped range".to_owned()),
            Some((a, b)) => format!("{}-{}", day(a)?, day(b)?),
            None => day(base)?,
        };
        items.push(step.map_or_else(|| base.clone(), |s| format!("{base}/{s}")));
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Weekday};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    #[test]
    fn five_fields_are_a_crontab_line() {
        let hourly: CronSchedule = "0 * * * *".parse().expect("hourly");
        assert_eq!(hourly.next_after(at("2030-01-01T10:20:30Z")), Some(at("2030-01-01T11:00:00Z")));
        // Crontab numbers Monday 1; the cron crate would read 1 as Sunday.
        let monday: CronSchedule = "30 9 * * 1".parse().expect("mondays");
        let next = monday.next_after(at("2030-01-01T00:00:00Z")).expect("a monday");
        assert_eq!((next.weekday(), next.format("%H:%M").to_string()), (Weekday::Mon, "09:30".to_owned()));
        for sunday in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN"] {
            let s: CronSchedule = sunday.parse().expect(sunday);
            assert_eq!(s.next_after(at("2030-01-01T00:00:00Z")).map(|t| t.weekday()), Some(Weekday::Sun), "{sunday}");
        }
        let weekdays: CronSchedule = "0 8 * * 1-5".parse().expect("weekdays");
        let days: Vec<Weekday> =
            weekdays.schedule.after(&at("2030-01-05T12:00:00Z")).take(5).map(|t| t.weekday()).collect();
        assert_eq!(days, [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]);
        let to_sunday: CronSchedule = "0 8 * * 5-7".parse().expect("friday to sunday");
        let days: Vec<Weekday> =
            to_sunday.schedule.after(&at("2030-01-01T12:00:00Z")).take(3).map(|t| t.weekday()).collect();
        assert_eq!(days, [Weekday::Fri, Weekday::Sat, Weekday::Sun]);
    }

    #[test]
    fn six_fields_have_seconds_and_bad_lines_are_refused() {
        let every: CronSchedule = "*/2 * * * * *".parse().expect("every two seconds");
        assert_eq!(every.next_after(at("2030-01-01T00:00:01Z")), Some(at("2030-01-01T00:00:02Z")));
        for bad in ["", "* * * *", "61 * * * *", "0 0 * * 8", "nonsense here and there too", "0 0 30 2 *"] {
            assert!(bad.parse::<CronSchedule>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn after_downtime_the_latest_missed_tick_is_the_one_to_run() {
        let hourly: CronSchedule = "0 * * * *".parse().expect("hourly");
        let last = Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).single().expect("time");
        assert_eq!(hourly.latest_due(last, at("2030-01-01T10:59:59Z")), None);
        assert_eq!(hourly.latest_due(last, at("2030-01-01T15:30:00Z")), Some(at("2030-01-01T15:00:00Z")));
    }
}
