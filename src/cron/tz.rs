//! The local time zone for cron schedules, from `TZ`: unset means UTC; a zone
//! name (`Europe/Berlin`, or `:Europe/Berlin`) or an absolute path is read as a
//! TZif file (RFC 8536) from `TZDIR` or /usr/share/zoneinfo; otherwise `TZ` is
//! taken as a POSIX rule string (`CET-1CEST,M3.5.0,M10.5.0/3`). Leap-second
//! records are ignored. A static binary has no libc zone support to lean on, so
//! this is the whole of it.

use super::{civil_from_days, days_from_civil};
use std::fmt;

/// Largest zone file we read (real ones are a few KiB).
const MAX_TZIF: u64 = 1 << 20;
const DEFAULT_TZDIR: &str = "/usr/share/zoneinfo";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zone {
    Utc,
    Rule(Posix),
    Table(Table),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneError(pub String);

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ZoneError {}

/// Transitions from a TZif file, with its footer rule for times after the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    times: Vec<i64>,
    /// Index into `offsets` for each transition.
    kinds: Vec<u8>,
    /// UTC offsets in seconds east.
    offsets: Vec<i32>,
    footer: Option<Posix>,
}

/// A POSIX TZ rule: standard offset and, optionally, daylight time between two
/// yearly transitions. Offsets are seconds east of UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posix {
    std_off: i32,
    dst: Option<Dst>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Dst {
    off: i32,
    start: Change,
    end: Change,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Day {
    /// `Jn`: 1..=365, February 29 never counted.
    NoLeap(u16),
    /// `n`: 0..=365, counting February 29.
    Leap(u16),
    /// `Mm.w.d`: weekday `d` of week `w` (5 = last) of month `m`.
    Week { month: u32, week: u32, weekday: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Change {
    day: Day,
    /// Seconds after local midnight (may be negative or past 24 h).
    time: i32,
}

impl Zone {
    /// The zone `tz` (the `TZ` variable) names; `tzdir` overrides the zone
    /// directory (`TZDIR`).
    pub fn load(tz: Option<&str>, tzdir: Option<&str>) -> Result<Zone, ZoneError> {
        let raw = tz.unwrap_or("").trim();
        let name = raw.strip_prefix(':').unwrap_or(raw);
        if matches!(
            name,
            "" | "UTC" | "UTC0" | "GMT" | "GMT0" | "Etc/UTC" | "Etc/GMT"
        ) {
            return Ok(Zone::Utc);
        }
        let path = if name.starts_with('/') {
            name.to_string()
        } else if name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ZoneError(format!("TZ {raw:?} is not a zone name")));
        } else {
            format!(
                "{}/{name}",
                tzdir.filter(|d| !d.is_empty()).unwrap_or(DEFAULT_TZDIR)
            )
        };
        match read_limited(&path) {
            Ok(bytes) => parse_tzif(&bytes)
                .map(Zone::Table)
                .map_err(|e| ZoneError(format!("TZ {raw:?}: {path}: {e}"))),
            Err(read_err) => match Posix::parse(name) {
                Some(p) => Ok(Zone::Rule(p)),
                None => Err(ZoneError(format!(
                    "TZ {raw:?}: cannot read {path} ({read_err}) and it is not a POSIX TZ rule"
                ))),
            },
        }
    }

    /// Seconds to add to UTC for local time at `t` (Unix seconds).
    pub fn offset_at(&self, t: i64) -> i32 {
        match self {
            Zone::Utc => 0,
            Zone::Rule(p) => p.offset_at(t),
            Zone::Table(tab) => tab.offset_at(t),
        }
    }
}

fn read_limited(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    f.take(MAX_TZIF).read_to_end(&mut out)?;
    Ok(out)
}

impl Table {
    fn offset_at(&self, t: i64) -> i32 {
        let i = self.times.partition_point(|&x| x <= t);
        if i == self.times.len() {
            if let Some(f) = &self.footer {
                return f.offset_at(t);
            }
        }
        // Before the first transition the first type applies (RFC 8536 §3.2).
        let kind = if i == 0 {
            0
        } else {
            self.kinds[i - 1] as usize
        };
        self.offsets.get(kind).copied().unwrap_or(0)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or("file is truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<usize, String> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
}

struct Counts {
    isut: usize,
    isstd: usize,
    leap: usize,
    time: usize,
    kind: usize,
    chars: usize,
}

fn header(c: &mut Cursor) -> Result<(u8, Counts), String> {
    if c.take(4)? != b"TZif" {
        return Err("not a TZif file".into());
    }
    let version = c.take(16)?[0];
    let counts = Counts {
        isut: c.u32()?,
        isstd: c.u32()?,
        leap: c.u32()?,
        time: c.u32()?,
        kind: c.u32()?,
        chars: c.u32()?,
    };
    if counts.kind == 0 {
        return Err("no local time types".into());
    }
    Ok((version, counts))
}

fn parse_tzif(b: &[u8]) -> Result<Table, String> {
    let mut c = Cursor { b, at: 0 };
    let (version, n) = header(&mut c)?;
    let (n, width) = if version >= b'2' {
        // Skip the 32-bit block; the 64-bit one that follows has it all.
        let v1 = n.time * 5 + n.kind * 6 + n.chars + n.leap * 8 + n.isstd + n.isut;
        c.take(v1)?;
        (header(&mut c)?.1, 8)
    } else {
        (n, 4)
    };
    let raw_times = c.take(n.time * width)?;
    let times: Vec<i64> = raw_times
        .chunks_exact(width)
        .map(|x| {
            if width == 8 {
                i64::from_be_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]])
            } else {
                i32::from_be_bytes([x[0], x[1], x[2], x[3]]) as i64
            }
        })
        .collect();
    let kinds = c.take(n.time)?.to_vec();
    if kinds.iter().any(|&k| k as usize >= n.kind) {
        return Err("transition names a missing time type".into());
    }
    let offsets = c
        .take(n.kind * 6)?
        .chunks_exact(6)
        .map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        .collect();
    c.take(n.chars + n.leap * (width + 4) + n.isstd + n.isut)?;
    let footer = if width == 8 {
        let rest = &b[c.at..];
        let text = rest
            .strip_prefix(b"\n")
            .and_then(|r| r.split(|&x| x == b'\n').next())
            .and_then(|r| std::str::from_utf8(r).ok())
            .unwrap_or("");
        if text.is_empty() {
            None
        } else {
            Some(Posix::parse(text).ok_or_else(|| format!("bad footer rule {text:?}"))?)
        }
    } else {
        None
    };
    Ok(Table {
        times,
        kinds,
        offsets,
        footer,
    })
}

struct Text<'a> {
    s: &'a [u8],
    at: usize,
}

impl Text<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn number(&mut self) -> Option<i32> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) && self.at - start < 4 {
            self.at += 1;
        }
        std::str::from_utf8(&self.s[start..self.at])
            .ok()?
            .parse()
            .ok()
    }

    /// `EST` or `<+0330>`.
    fn name(&mut self) -> Option<()> {
        if self.eat(b'<') {
            while self.peek()? != b'>' {
                self.at += 1;
            }
            self.at += 1;
            return Some(());
        }
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.at += 1;
        }
        (self.at - start >= 3).then_some(())
    }

    /// `[+-]hh[:mm[:ss]]` in seconds.
    fn clock(&mut self) -> Option<i32> {
        let sign = if self.eat(b'-') {
            -1
        } else {
            self.eat(b'+');
            1
        };
        let h = self.number()?;
        if h > 167 {
            return None;
        }
        let mut secs = h * 3600;
        for scale in [60, 1] {
            if !self.eat(b':') {
                break;
            }
            let v = self.number()?;
            if v > 59 {
                return None;
            }
            secs += v * scale;
        }
        Some(sign * secs)
    }

    fn change(&mut self) -> Option<Change> {
        let day = if self.eat(b'J') {
            Day::NoLeap(self.number().filter(|n| (1..=365).contains(n))? as u16)
        } else if self.eat(b'M') {
            let month = self.number().filter(|n| (1..=12).contains(n))? as u32;
            self.eat(b'.').then_some(())?;
            let week = self.number().filter(|n| (1..=5).contains(n))? as u32;
            self.eat(b'.').then_some(())?;
            let weekday = self.number().filter(|n| (0..=6).contains(n))? as u32;
            Day::Week {
                month,
                week,
                weekday,
            }
        } else {
            Day::Leap(self.number().filter(|n| (0..=365).contains(n))? as u16)
        };
        let time = if self.eat(b'/') { self.clock()? } else { 7200 };
        Some(Change { day, time })
    }
}

impl Posix {
    pub fn parse(s: &str) -> Option<Posix> {
        let mut t = Text {
            s: s.as_bytes(),
            at: 0,
        };
        t.name()?;
        // POSIX offsets count west of Greenwich; ours count east.
        let std_off = -t.clock()?;
        if t.peek().is_none() {
            return Some(Posix { std_off, dst: None });
        }
        t.name()?;
        let off = match t.peek() {
            Some(b',') | None => std_off + 3600,
            _ => -t.clock()?,
        };
        let (start, end) = if t.eat(b',') {
            let start = t.change()?;
            t.eat(b',').then_some(())?;
            (start, t.change()?)
        } else {
            // POSIX leaves the default rule to the implementation; the US rule
            // is what the C libraries use.
            let week = |month, week| Change {
                day: Day::Week {
                    month,
                    week,
                    weekday: 0,
                },
                time: 7200,
            };
            (week(3, 2), week(11, 1))
        };
        if t.peek().is_some() {
            return None;
        }
        Some(Posix {
            std_off,
            dst: Some(Dst { off, start, end }),
        })
    }

    fn offset_at(&self, t: i64) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std_off;
        };
        let year = civil_from_days((t + self.std_off as i64).div_euclid(86_400)).0;
        // The start is written in standard time, the end in daylight time.
        let start = dst.start.local(year) - self.std_off as i64;
        let end = dst.end.local(year) - dst.off as i64;
        let in_dst = if start < end {
            start <= t && t < end
        } else {
            !(end <= t && t < start)
        };
        if in_dst {
            dst.off
        } else {
            self.std_off
        }
    }
}

fn leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

impl Change {
    /// Local seconds (since the epoch, as if local were UTC) of this change in `year`.
    fn local(&self, year: i64) -> i64 {
        let jan1 = days_from_civil(year, 1, 1);
        let day = match self.day {
            Day::NoLeap(n) => {
                let n = n as i64 - 1;
                jan1 + n + (leap(year) && n >= 59) as i64
            }
            Day::Leap(n) => jan1 + n as i64,
            Day::Week {
                month,
                week,
                weekday,
            } => {
                let first = days_from_civil(year, month, 1);
                let first_wd = (first + 4).rem_euclid(7) as u32;
                let mut d = first + ((weekday + 7 - first_wd) % 7) as i64 + (week as i64 - 1) * 7;
                let next_month = if month == 12 {
                    days_from_civil(year + 1, 1, 1)
                } else {
                    days_from_civil(year, month + 1, 1)
                };
                while d >= next_month {
                    d -= 7;
                }
                d
            }
        };
        day * 86_400 + self.time as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, mo: u32, d: u32, h: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600
    }

    #[test]
    fn utc_names_and_rules() {
        assert_eq!(Zone::load(None, None), Ok(Zone::Utc));
        assert_eq!(Zone::load(Some(":UTC"), None), Ok(Zone::Utc));
        let z = Zone::load(Some("EST5EDT"), Some("/nonexistent")).unwrap();
        assert_eq!(z.offset_at(at(2026, 1, 15, 12)), -5 * 3600);
        assert_eq!(z.offset_at(at(2026, 7, 15, 12)), -4 * 3600);
        // US 2026: second Sunday of March (8th) 02:00 EST = 07:00 UTC
        assert_eq!(z.offset_at(at(2026, 3, 8, 7) - 1), -5 * 3600);
        assert_eq!(z.offset_at(at(2026, 3, 8, 7)), -4 * 3600);
        let z = Zone::load(Some("<+0530>-5:30"), Some("/nonexistent")).unwrap();
        assert_eq!(z.offset_at(0), 5 * 3600 + 1800);
        // southern hemisphere: daylight time spans the new year
        let z = Zone::load(Some("AEST-10AEDT,M10.1.0,M4.1.0/3"), Some("/x")).unwrap();
        assert_eq!(z.offset_at(at(2026, 1, 15, 0)), 11 * 3600);
        assert_eq!(z.offset_at(at(2026, 6, 15, 0)), 10 * 3600);
    }

    #[test]
    fn bad_tz_is_an_error() {
        let e = Zone::load(Some("Mars/Olympus"), Some("/nonexistent")).unwrap_err();
        assert!(e.0.contains("/nonexistent/Mars/Olympus"), "{e}");
        assert!(Zone::load(Some("../etc/passwd"), None).is_err());
    }

    #[test]
    fn tzif_v2_with_footer() {
        // Built by hand: one transition at t=1000 to type 1 (+3600), footer UTC+2.
        let mut b = Vec::new();
        let hdr = |b: &mut Vec<u8>, time: u32, kind: u32| {
            b.extend_from_slice(b"TZif2");
            b.extend_from_slice(&[0; 15]);
            for n in [0, 0, 0, time, kind, 4] {
                b.extend_from_slice(&u32::to_be_bytes(n));
            }
        };
        hdr(&mut b, 1, 2);
        b.extend_from_slice(&1000i32.to_be_bytes());
        b.push(1);
        for off in [0i32, 3600] {
            b.extend_from_slice(&off.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
        }
        b.extend_from_slice(b"UTC\0");
        hdr(&mut b, 1, 2);
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.push(1);
        for off in [0i32, 3600] {
            b.extend_from_slice(&off.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
        }
        b.extend_from_slice(b"UTC\0");
        b.extend_from_slice(b"\n<+02>-2\n");
        let t = parse_tzif(&b).unwrap();
        assert_eq!(t.offset_at(999), 0);
        assert_eq!(
            t.offset_at(1000),
            7200,
            "after the last transition the footer rules"
        );
        let mut short = b.clone();
        short.truncate(60);
        assert!(parse_tzif(&short).is_err());
        assert!(parse_tzif(b"nope").is_err());
    }

    #[test]
    fn system_zone_files_when_present() {
        let Ok(z) = Zone::load(Some("America/New_York"), None) else {
            return;
        };
        assert_eq!(z.offset_at(at(2026, 1, 15, 12)), -5 * 3600);
        assert_eq!(z.offset_at(at(2026, 7, 15, 12)), -4 * 3600);
        assert_eq!(z.offset_at(at(1990, 7, 15, 12)), -4 * 3600);
        assert_eq!(z.offset_at(at(2090, 7, 15, 12)), -4 * 3600);
    }
}
