//! Duration strings as ContainerPilot 3.8 reads them: Go `time.ParseDuration`
//! syntax, plus a bare integer meaning seconds.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A duration string that could not be parsed; the message mirrors Go's wording
/// because users see it inside config errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for DurationError {}

/// Go durations are int64 nanoseconds; magnitudes are accumulated unsigned and
/// checked against 2^63 so that the most negative value still parses.
const LIMIT: u64 = 1 << 63;

/// Go time.ParseDuration syntax ("300ms", "1.5h", "2h45m", "-1s", "0"; units ns us µs ms s m h),
/// except that a bare integer string (optionally signed, e.g. "5", "-3") means that many seconds.
/// Returns signed nanoseconds. Errors are Go-like one-liners:
///   time: invalid duration "x"   |  time: missing unit in duration "1.5"  |  time: unknown unit "q" in duration "1q"
pub fn parse(s: &str) -> Result<i128, DurationError> {
    // 3.8 turns an integer (as strconv.Atoi accepts it: sign, leading zeros,
    // int64 range) into "<n>s" and parses that, so an overflowing count of
    // seconds reports the synthesized string, e.g. "9223372036854775807s".
    match s.parse::<i64>() {
        Ok(secs) => parse_go(&format!("{secs}s")),
        Err(_) => parse_go(s),
    }
}

fn parse_go(orig: &str) -> Result<i128, DurationError> {
    let mut rest = orig.as_bytes();
    let mut neg = false;
    if let Some(&sign @ (b'-' | b'+')) = rest.first() {
        neg = sign == b'-';
        rest = &rest[1..];
    }
    if rest == b"0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid(orig));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (nanos, tail) = component(rest, orig)?;
        total = total
            .checked_add(nanos)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(|| invalid(orig))?;
        rest = tail;
    }
    if neg {
        return Ok(-i128::from(total));
    }
    if total > LIMIT - 1 {
        return Err(invalid(orig));
    }
    Ok(i128::from(total))
}

/// One `<number><unit>` group; returns its nanoseconds and the remaining input.
fn component<'a>(s: &'a [u8], orig: &str) -> Result<(u64, &'a [u8]), DurationError> {
    if !(s[0] == b'.' || s[0].is_ascii_digit()) {
        return Err(invalid(orig));
    }
    let (whole, mut rest) = leading_int(s).ok_or_else(|| invalid(orig))?;
    let has_whole = rest.len() != s.len();
    let mut frac = 0u64;
    let mut scale = 1f64;
    let mut has_frac = false;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let (f, sc, tail) = leading_fraction(after_dot);
        has_frac = tail.len() != after_dot.len();
        frac = f;
        scale = sc;
        rest = tail;
    }
    if !has_whole && !has_frac {
        return Err(invalid(orig));
    }
    let unit_len = rest
        .iter()
        .position(|c| *c == b'.' || c.is_ascii_digit())
        .unwrap_or(rest.len());
    if unit_len == 0 {
        return Err(DurationError(format!(
            "time: missing unit in duration {}",
            quote(orig.as_bytes())
        )));
    }
    let (unit, rest) = rest.split_at(unit_len);
    let per = unit_nanos(unit).ok_or_else(|| {
        DurationError(format!(
            "time: unknown unit {} in duration {}",
            quote(unit),
            quote(orig.as_bytes())
        ))
    })?;
    if whole > LIMIT / per {
        return Err(invalid(orig));
    }
    let mut nanos = whole * per;
    if frac > 0 {
        // Same float arithmetic as Go so fractional results round identically.
        let extra = (frac as f64 * (per as f64 / scale)) as u64;
        nanos = nanos
            .checked_add(extra)
            .filter(|n| *n <= LIMIT)
            .ok_or_else(|| invalid(orig))?;
    }
    Ok((nanos, rest))
}

/// Leading decimal digits; None on overflow past 2^63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    let mut used = 0;
    for &c in s.iter().take_while(|c| c.is_ascii_digit()) {
        if value > LIMIT / 10 {
            return None;
        }
        value = value * 10 + u64::from(c - b'0');
        if value > LIMIT {
            return None;
        }
        used += 1;
    }
    Some((value, &s[used..]))
}

/// Digits after the dot: value, 10^(digits kept), remaining input. Digits that
/// would overflow are consumed but ignored, as Go does.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let mut value: u64 = 0;
    let mut scale = 1f64;
    let mut overflow = false;
    let mut used = 0;
    for &c in s.iter().take_while(|c| c.is_ascii_digit()) {
        used += 1;
        if overflow {
            continue;
        }
        if value > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let next = value * 10 + u64::from(c - b'0');
        if next > LIMIT {
            overflow = true;
            continue;
        }
        value = next;
        scale *= 10.0;
    }
    (value, scale, &s[used..])
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    match unit {
        b"ns" => Some(1),
        // "us", MICRO SIGN µ and GREEK SMALL LETTER MU μ
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => Some(1_000),
        b"ms" => Some(1_000_000),
        b"s" => Some(1_000_000_000),
        b"m" => Some(60_000_000_000),
        b"h" => Some(3_600_000_000_000),
        _ => None,
    }
}

fn invalid(orig: &str) -> DurationError {
    DurationError(format!("time: invalid duration {}", quote(orig.as_bytes())))
}

/// Go's time-package quoting: control and non-ASCII bytes become \xNN so the
/// message stays a printable single line.
fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        if !(0x20..0x80).contains(&b) {
            out.push_str(&format!("\\x{b:02x}"));
        } else {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(char::from(b));
        }
    }
    out.push('"');
    out
}

/// Format like Go's Duration.String(): "5s", "1m30s", "1.5s", "100ms", "0s", "1h0m0s".
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (prec, unit) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (whole, frac) = split_fraction(nanos, prec);
        return format!("{whole}{frac}{unit}");
    }
    let (total_secs, frac) = split_fraction(nanos, 9);
    let secs = total_secs % 60;
    let total_mins = total_secs / 60;
    let mut out = String::new();
    if total_mins > 0 {
        let hours = total_mins / 60;
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        out.push_str(&format!("{}m", total_mins % 60));
    }
    out.push_str(&format!("{secs}{frac}s"));
    out
}

/// Splits off `prec` low decimal digits as ".ddd" without trailing zeros
/// (empty when they are all zero).
fn split_fraction(value: u128, prec: u32) -> (u128, String) {
    let div = 10u128.pow(prec);
    let low = value % div;
    if low == 0 {
        return (value / div, String::new());
    }
    let digits = format!("{low:0width$}", width = prec as usize);
    (value / div, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;
    const MS: i128 = 1_000_000;

    #[test]
    fn valid_inputs() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("5", 5 * S),
            ("-3", -3 * S),
            ("+7", 7 * S),
            ("007", 7 * S),
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("300ms", 300 * MS),
            ("1s", S),
            ("2m", 120 * S),
            ("1h", 3600 * S),
            ("1.5h", 5400 * S),
            ("2h45m", (2 * 3600 + 45 * 60) * S),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("-1s", -S),
            ("+1.5s", 1_500 * MS),
            ("-1.5m", -90 * S),
            (".5s", 500 * MS),
            ("5.s", 5 * S),
            ("0s", 0),
            ("0.000000001s", 1),
            ("0.0000000001s", 0),
            ("1.0000000000000000000001s", S),
            ("100.00100s", 100 * S + MS),
            ("9223372036854775807ns", i128::from(i64::MAX)),
            ("-9223372036854775808ns", i128::from(i64::MIN)),
            ("2562047h", 2_562_047 * 3600 * S),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn invalid_inputs() {
        let cases: &[(&str, &str)] = &[
            ("", r#"time: invalid duration """#),
            ("x", r#"time: invalid duration "x""#),
            ("-", r#"time: invalid duration "-""#),
            (".", r#"time: invalid duration ".""#),
            ("-.", r#"time: invalid duration "-.""#),
            (".s", r#"time: invalid duration ".s""#),
            ("s", r#"time: invalid duration "s""#),
            ("1.5", r#"time: missing unit in duration "1.5""#),
            ("3000000h", r#"time: invalid duration "3000000h""#),
            ("1q", r#"time: unknown unit "q" in duration "1q""#),
            ("1sec", r#"time: unknown unit "sec" in duration "1sec""#),
            ("1S", r#"time: unknown unit "S" in duration "1S""#),
            (" 5", r#"time: invalid duration " 5""#),
            ("5 ", r#"time: unknown unit " " in duration "5 ""#),
            ("5 s", r#"time: unknown unit " s" in duration "5 s""#),
            ("1s ", r#"time: unknown unit "s " in duration "1s ""#),
            ("\t1s", r#"time: invalid duration "\x091s""#),
            (
                "1é",
                r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#,
            ),
            ("1\"", r#"time: unknown unit "\"" in duration "1\"""#),
            ("1s-1s", r#"time: unknown unit "s-" in duration "1s-1s""#),
            ("--1s", r#"time: invalid duration "--1s""#),
            ("1..5s", r#"time: missing unit in duration "1..5s""#),
            (
                "9223372036854775808ns",
                r#"time: invalid duration "9223372036854775808ns""#,
            ),
            (
                "-9223372036854775809ns",
                r#"time: invalid duration "-9223372036854775809ns""#,
            ),
            (
                "99999999999999999999999s",
                r#"time: invalid duration "99999999999999999999999s""#,
            ),
            (
                "9223372036854775807",
                r#"time: invalid duration "9223372036854775807s""#,
            ),
            (
                "99999999999999999999",
                r#"time: invalid duration "99999999999999999999""#,
            ),
            (
                "2562047h2562047h",
                r#"time: invalid duration "2562047h2562047h""#,
            ),
            (
                "2562047h47m16.854775808s",
                r#"time: invalid duration "2562047h47m16.854775808s""#,
            ),
        ];
        for (input, want) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn extreme_values_do_not_panic() {
        assert_eq!(parse("-2562047h47m16.854775808s"), Ok(i128::from(i64::MIN)));
        assert_eq!(parse("2562047h47m16.854775807s"), Ok(i128::from(i64::MAX)));
        assert!(parse("-9223372036854775808").is_err());
        assert!(parse(&"9".repeat(500)).is_err());
        assert!(parse(&format!("1.{}s", "9".repeat(500))).is_ok());
    }

    #[test]
    fn format_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (Duration::from_micros(1), "1µs"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_nanos(100_000_001), "100.000001ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(2 * 3600 + 45 * 60), "2h45m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(100 * 3600 + 1), "100h0m1s"),
            (
                Duration::from_nanos(i64::MAX as u64),
                "2562047h47m16.854775807s",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(format(*d), *want, "duration {d:?}");
        }
    }

    #[test]
    fn format_parse_round_trip() {
        for s in ["1h2m3.5s", "1.5ms", "999ns", "2h45m0s"] {
            let nanos = parse(s).expect(s);
            let d = Duration::from_nanos(u64::try_from(nanos).expect(s));
            assert_eq!(format(d), s);
        }
    }
}
