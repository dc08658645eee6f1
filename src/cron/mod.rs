//! `when.cron`: five-field cron schedules and the next time one fires.
//!
//! Pure calendar arithmetic: the caller passes the wall-clock time (Unix
//! seconds) and a [`Zone`]; nothing here reads a clock. Times are evaluated on
//! the zone's local wall clock. On a daylight-saving change a local time that
//! does not exist is skipped that day, and a local time that occurs twice fires
//! once (the caller passes the last local time it fired at).

mod tz;

pub use tz::{Zone, ZoneError};

use std::fmt;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// As written, for status and messages.
    pub text: String,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// Day-of-month or day-of-week written as `*`: cron matches a day when both
    /// fields match, except that when both are restricted either one suffices.
    days_any: bool,
    weekdays_any: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 7 is accepted as Sunday too (folded onto 0 after parsing).
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            // Month names count from 1, weekday names from 0, as the numbers do.
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{:?} is not a number", s))?;
        if v < self.min || v > self.max {
            return Err(format!("{v} is out of range {}-{}", self.min, self.max));
        }
        Ok(v)
    }

    /// One comma-separated part: `*`, `N`, `A-B`, each optionally `/STEP`.
    fn part(&self, part: &str) -> Result<u64, String> {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("step must be at least 1".into());
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" {
            (self.min, self.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (self.value(a)?, self.value(b)?);
            if a > b {
                return Err(format!("range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = self.value(range)?;
            // `N/STEP` means from N to the end of the field (as Vixie cron).
            (a, if step.is_some() { self.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut bits = 0u64;
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
        Ok(bits)
    }

    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let mut bits = 0;
        for part in text.split(',') {
            bits |= self
                .part(part)
                .map_err(|e| CronError(format!("{} field {text:?}: {e}", self.name)))?;
        }
        Ok(bits)
    }
}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Longest day of each month (February in a leap year).
const MONTH_MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Schedule {
    /// `minute hour day-of-month month day-of-week`, or one of `@yearly`,
    /// `@monthly`, `@weekly`, `@daily`, `@hourly`. A schedule that can never
    /// fire (`0 0 30 2 *`) is an error.
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let trimmed = text.trim();
        let expanded = match MACROS.iter().find(|(m, _)| *m == trimmed) {
            Some((_, e)) => *e,
            None if trimmed.starts_with('@') => {
                return Err(CronError(format!(
                    "unknown schedule {trimmed:?} (use five fields or @yearly, @monthly, @weekly, @daily, @hourly)"
                )))
            }
            None => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [mi, ho, da, mo, wd] = fields[..] else {
            return Err(CronError(format!(
                "{trimmed:?} has {} fields; cron takes 5: minute hour day-of-month month day-of-week",
                fields.len()
            )));
        };
        let mut weekdays = WEEKDAY.parse(wd)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let s = Schedule {
            text: trimmed.to_string(),
            minutes: MINUTE.parse(mi)?,
            hours: HOUR.parse(ho)? as u32,
            days: DAY.parse(da)? as u32,
            months: MONTH.parse(mo)? as u16,
            weekdays: weekdays as u8,
            days_any: da.starts_with('*'),
            weekdays_any: wd.starts_with('*'),
        };
        if !s.can_fire() {
            return Err(CronError(format!(
                "{trimmed:?} never fires: no month it names has that day"
            )));
        }
        Ok(s)
    }

    fn can_fire(&self) -> bool {
        if !self.weekdays_any {
            return true; // any weekday comes round in every month
        }
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=MONTH_MAX_DAYS[m as usize - 1]).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days & (1 << day) != 0;
        let w = self.weekdays & (1 << weekday) != 0;
        if !self.days_any && !self.weekdays_any {
            d || w
        } else {
            d && w
        }
    }

    /// The first minute strictly after `after` (Unix seconds) at which the
    /// schedule fires in `zone`, skipping local times at or before `last_local`
    /// (the local wall time of the previous run, so a repeated hour does not
    /// fire twice). `None` only if nothing matches within eight years.
    pub fn next_after(&self, zone: &Zone, after: i64, last_local: Option<i64>) -> Option<i64> {
        let mut t = (after.div_euclid(60) + 1) * 60;
        let limit = after.saturating_add(8 * 366 * 86_400);
        while t <= limit {
            let off = zone.offset_at(t) as i64;
            let local = t + off;
            let days = local.div_euclid(86_400);
            let sod = local.rem_euclid(86_400);
            let (_, month, day) = civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32;
            let (hour, minute) = ((sod / 3600) as u32, ((sod % 3600) / 60) as u32);
            if self.months & (1 << month) == 0 || !self.day_matches(day, weekday) {
                // To the next local midnight, unless the offset changes on the
                // way: then hour by hour so no part of a day is skipped.
                let next = t + (86_400 - sod);
                t = if zone.offset_at(next) as i64 == off {
                    next
                } else {
                    t + (3600 - sod % 3600)
                };
                continue;
            }
            if self.hours & (1 << hour) == 0 {
                t += 3600 - sod % 3600;
                continue;
            }
            if self.minutes & (1 << minute) == 0 {
                let later = self.minutes >> minute;
                t += match (1..60 - minute).find(|k| later & (1 << k) != 0) {
                    Some(k) => k as i64 * 60,
                    None => (60 - minute) as i64 * 60,
                };
                continue;
            }
            if last_local.is_some_and(|l| local <= l) {
                t += 60;
                continue;
            }
            return Some(t);
        }
        None
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count from March so the leap day is the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + (month <= 2) as i64;
    (year, month, day)
}

/// RFC 3339 in UTC (`2026-12-05T19:15:00Z`) for status output.
pub fn rfc3339_utc(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

/// The wall clock, in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    fn next(s: &str, after: i64) -> i64 {
        Schedule::parse(s)
            .unwrap()
            .next_after(&Zone::Utc, after, None)
            .unwrap()
    }

    #[test]
    fn calendar_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for d in -800_000..800_000i64 {
            if d % 997 != 0 {
                continue;
            }
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(
            rfc3339_utc(at(2026, 12, 5, 19, 15) + 7),
            "2026-12-05T19:15:07Z"
        );
    }

    #[test]
    fn fields_parse_like_cron() {
        let s = Schedule::parse("*/15 9-17 * jan,JUL mon-fri").unwrap();
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, (9..=17).map(|h| 1 << h).sum::<u32>());
        assert_eq!(s.months, 1 << 1 | 1 << 7);
        assert_eq!(s.weekdays, 0b0111110);
        let s = Schedule::parse("5/20 0 1 * 7").unwrap();
        assert_eq!(s.minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(s.weekdays, 1, "7 is Sunday");
        assert_eq!(
            Schedule::parse("@daily").unwrap().minutes,
            Schedule::parse("0 0 * * *").unwrap().minutes
        );
    }

    #[test]
    fn bad_schedules_say_which_field() {
        let e = |s: &str| Schedule::parse(s).unwrap_err().0;
        assert!(e("* * * *").contains("has 4 fields"), "{}", e("* * * *"));
        assert!(e("60 * * * *").contains("minute field \"60\": 60 is out of range 0-59"));
        assert!(e("* 5-2 * * *").contains("hour field \"5-2\": range \"5-2\" runs backwards"));
        assert!(e("*/0 * * * *").contains("step must be at least 1"));
        assert!(e("* * * foo *").contains("month field \"foo\""));
        assert!(e("0 0 30 2 *").contains("never fires"));
        assert!(e("@reboot").contains("unknown schedule"));
        // February 29 does come round; with a weekday either one matches.
        assert!(Schedule::parse("0 0 29 2 *").is_ok());
        assert!(Schedule::parse("0 0 30 2 mon").is_ok());
    }

    #[test]
    fn next_minute_in_utc() {
        let t = at(2026, 12, 5, 18, 47) + 13;
        assert_eq!(next("* * * * *", t), at(2026, 12, 5, 18, 48));
        assert_eq!(next("*/15 * * * *", t), at(2026, 12, 5, 19, 0));
        // strictly after: on the minute itself gives the next one
        assert_eq!(
            next("*/15 * * * *", at(2026, 12, 5, 19, 0)),
            at(2026, 12, 5, 19, 15)
        );
        assert_eq!(next("30 2 * * *", t), at(2026, 12, 6, 2, 30));
        assert_eq!(next("0 0 1 * *", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("0 0 29 2 *", t), at(2028, 2, 29, 0, 0));
        // 2026-12-05 is a Saturday
        assert_eq!(next("0 9 * * mon", t), at(2026, 12, 7, 9, 0));
        // day-of-month OR day-of-week when both are restricted
        assert_eq!(next("0 0 13 * fri", t), at(2026, 12, 11, 0, 0));
        assert_eq!(next("0 0 13 * *", t), at(2026, 12, 13, 0, 0));
    }

    #[test]
    fn named_zone_and_dst() {
        let berlin = match Zone::load(Some("Europe/Berlin"), None) {
            Ok(z) => z,
            Err(_) => return, // no tzdata on this machine; the POSIX test covers rules
        };
        let s = Schedule::parse("0 9 * * *").unwrap();
        // winter: UTC+1
        assert_eq!(
            s.next_after(&berlin, at(2026, 12, 5, 12, 0), None),
            Some(at(2026, 12, 6, 8, 0))
        );
        // summer: UTC+2
        assert_eq!(
            s.next_after(&berlin, at(2026, 7, 1, 12, 0), None),
            Some(at(2026, 7, 2, 7, 0))
        );
    }

    #[test]
    fn dst_gap_skips_and_overlap_fires_once() {
        let z = Zone::load(Some("CET-1CEST,M3.5.0,M10.5.0/3"), None).unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        // 2026-03-29: 02:00 local jumps to 03:00, so 02:30 does not exist that day.
        let fired = s.next_after(&z, at(2026, 3, 28, 12, 0), None).unwrap();
        assert_eq!(fired, at(2026, 3, 30, 0, 30));
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let first = s.next_after(&z, at(2026, 10, 24, 12, 0), None).unwrap();
        assert_eq!(first, at(2026, 10, 25, 0, 30));
        let local = first + z.offset_at(first) as i64;
        let again = s.next_after(&z, first, Some(local)).unwrap();
        assert_eq!(again, at(2026, 10, 26, 1, 30));
        // without the memory it would fire in the repeated hour
        assert_eq!(s.next_after(&z, first, None), Some(at(2026, 10, 25, 1, 30)));
    }
}
