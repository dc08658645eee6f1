//! The weakly-typed reader both config dialects decode with: key matching with
//! unknown-key errors, mapstructure's weak scalar conversions, and error
//! collection with JSON path and source line.
//!
//! ContainerPilot 3.8 (reference §2.3) and 2.x (2.x reference §2.4) both decoded
//! with mapstructure, so the rules are shared; where they differ the
//! [`Dialect`] says how (see its methods). A section reader is a method on
//! [`Reader`] next to the fields it validates (`decode/*.rs`, `v2/*.rs`).

use super::duration;
use super::json5::{Key, Spanned, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path like `jobs[1].when.interval`; empty for the top level.
    pub path: String,
    pub line: Option<u32>,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

/// What decoding may consult outside the document: the environment (Consul and
/// etcd variables) and the interface resolver for advertised addresses.
pub struct LoadEnv<'a> {
    pub env: &'a HashMap<String, String>,
    pub resolve_ip: &'a dyn Fn(&[String]) -> Result<IpAddr, String>,
}

/// Which generation of config is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    V3,
    V2,
}

impl Dialect {
    /// Array-form commands: 3.x takes strings, numbers and booleans only; 2.x
    /// formatted any element with Go's `%v` (`<nil>`, `[a b]`, `map[k:v]`).
    fn formats_any_arg(self) -> bool {
        self == Dialect::V2
    }

    /// A `name` of the wrong type: 2.x went on with an empty name, so it is
    /// reported as blank too.
    pub(super) fn blank_after_type_error(self) -> bool {
        self == Dialect::V2
    }
}

/// The fields of one config object after key matching. Null values count as
/// absent so that defaults stay in place.
pub struct Fields<'v> {
    pub path: String,
    pub line: u32,
    found: Vec<(&'static str, &'v Spanned)>,
}

impl<'v> Fields<'v> {
    pub fn get(&self, name: &str) -> Option<&'v Spanned> {
        self.found
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v.value, Value::Null))
    }

    pub fn path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Line of a field's value, or of the object when the field is missing.
    pub fn line_of(&self, name: &str) -> u32 {
        self.get(name).map_or(self.line, |v| v.line)
    }
}

pub fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`, which mapstructure uses to turn
/// numbers into strings.
pub fn format_number(n: f64) -> String {
    if n.is_infinite() {
        return if n > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    format!("{n}")
}

/// Go's `fmt.Sprintf("%v")` of a decoded JSON value.
pub fn go_format(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format_number(*n),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| go_format(&i.value)).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(entries) => {
            let mut parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", k.name, go_format(&v.value)))
                .collect();
            parts.sort();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then 0x/0o/0b prefixes or a leading
/// 0 for octal, underscores between digits only with a prefix.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r.to_string(), true)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r.to_string(), true)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r.to_string(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string(), true)
    } else {
        (10, lower, false)
    };
    // Go allows an underscore right after the prefix and between digits.
    let underscores_ok = prefixed && !digits.ends_with('_') && !digits.contains("__");
    let digits = if underscores_ok {
        digits.replace('_', "")
    } else {
        digits
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(&digits, radix).ok()?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).ok()
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Signed nanoseconds as a duration; zero or less is zero.
pub fn nanos_to_duration(ns: i128) -> Duration {
    if ns <= 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Strips an `http://`/`https://` prefix, returning the scheme it named.
pub fn split_scheme(addr: &str) -> (Option<&'static str>, &str) {
    if let Some(rest) = addr.strip_prefix("https://") {
        (Some("https"), rest)
    } else if let Some(rest) = addr.strip_prefix("http://") {
        (Some("http"), rest)
    } else {
        (None, addr)
    }
}

const MIN_TIMEOUT_NS: i128 = 1_000_000;
/// Program arguments and socket paths are C strings.
pub const NUL_RULE: &str = "must not contain a NUL byte";

/// Reads spanned values into typed ones, collecting every error instead of
/// stopping at the first.
pub struct Reader<'e, 'a> {
    pub errors: Vec<ConfigError>,
    /// Accepted but worth telling (`-validate` prints them, the daemon logs
    /// them, `-strict` turns them into errors).
    pub warnings: Vec<ConfigError>,
    pub env: &'e LoadEnv<'a>,
    pub dialect: Dialect,
    /// Keys accepted and ignored (2.x's unexported fields), as paths.
    pub ignored: Vec<String>,
}

impl<'e, 'a> Reader<'e, 'a> {
    pub fn new(env: &'e LoadEnv<'a>, dialect: Dialect) -> Self {
        Reader {
            errors: Vec::new(),
            warnings: Vec::new(),
            env,
            dialect,
            ignored: Vec::new(),
        }
    }

    /// The result: `value` when nothing was reported, else every error.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }

    pub fn err(&mut self, path: &str, line: u32, msg: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: Some(line),
            msg: msg.into(),
        });
    }

    pub fn warn(&mut self, path: &str, line: u32, msg: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.to_string(),
            line: Some(line),
            msg: msg.into(),
        });
    }

    pub fn expected(&mut self, path: &str, v: &Spanned, what: &str) {
        let got = type_name(&v.value);
        self.err(path, v.line, format!("expected {what}, got {got}"));
    }

    /// A non-empty environment variable.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.env.env.get(key).filter(|v| !v.is_empty()).cloned()
    }

    /// Matches the keys of `v` against `names` like mapstructure: exact first,
    /// then case-insensitively; leftover keys are one "has invalid keys" error.
    pub fn fields<'v>(
        &mut self,
        v: &'v Spanned,
        path: &str,
        names: &[&'static str],
    ) -> Option<Fields<'v>> {
        self.fields_with_hidden(v, path, names, &[])
    }

    /// [`Reader::fields`] where `hidden` keys (2.x's unexported fields, matched
    /// case-insensitively) are accepted, ignored and remembered in `ignored`.
    pub fn fields_with_hidden<'v>(
        &mut self,
        v: &'v Spanned,
        path: &str,
        names: &[&'static str],
        hidden: &[&str],
    ) -> Option<Fields<'v>> {
        let Value::Object(entries) = &v.value else {
            self.expected(path, v, "an object");
            return None;
        };
        let mut used = vec![false; entries.len()];
        let mut found: Vec<(&'static str, &'v Spanned)> = Vec::new();
        for name in names {
            if let Some(i) = entries.iter().position(|(k, _)| k.name == *name) {
                used[i] = true;
                found.push((name, &entries[i].1));
            }
        }
        for name in names {
            if found.iter().any(|(n, _)| n == name) {
                continue;
            }
            let folded = name.to_lowercase();
            let hit = entries
                .iter()
                .enumerate()
                .find(|(i, (k, _))| !used[*i] && k.name.to_lowercase() == folded);
            if let Some((i, (_, val))) = hit {
                used[i] = true;
                found.push((name, val));
            }
        }
        for (i, (k, _)) in entries.iter().enumerate() {
            if !used[i] && hidden.iter().any(|h| k.name.eq_ignore_ascii_case(h)) {
                used[i] = true;
                self.ignored.push(join(path, &k.name));
            }
        }
        let mut unknown: Vec<(&str, u32)> = entries
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|((k, _), _)| (k.name.as_str(), k.line))
            .collect();
        if !unknown.is_empty() {
            let line = unknown.iter().map(|(_, l)| *l).min().unwrap_or(v.line);
            unknown.sort();
            let list: Vec<&str> = unknown.iter().map(|(n, _)| *n).collect();
            self.err(path, line, format!("has invalid keys: {}", list.join(", ")));
        }
        Some(Fields {
            path: path.to_string(),
            line: v.line,
            found,
        })
    }

    /// Top-level keys are matched exactly; the unknown ones are one error.
    pub fn unknown_top_level(&mut self, entries: &[(Key, Spanned)], line: u32, known: &[&str]) {
        let mut unknown: Vec<(&str, u32)> = entries
            .iter()
            .filter(|(k, _)| !known.contains(&k.name.as_str()))
            .map(|(k, _)| (k.name.as_str(), k.line))
            .collect();
        if unknown.is_empty() {
            return;
        }
        let line = unknown.iter().map(|(_, l)| *l).min().unwrap_or(line);
        unknown.sort();
        let names: Vec<&str> = unknown.iter().map(|(n, _)| *n).collect();
        let msg = format!("unknown config keys: [{}]", names.join(" "));
        self.err("", line, msg);
    }

    // ----- weakly typed scalars -----

    pub fn string(&mut self, v: &Spanned, path: &str) -> Option<String> {
        match &v.value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            Value::Null => Some(String::new()),
            _ => {
                self.expected(path, v, "a string");
                None
            }
        }
    }

    pub fn string_field(&mut self, f: &Fields, name: &str) -> Option<String> {
        let v = f.get(name)?;
        self.string(v, &f.path(name))
    }

    /// A string field where empty means "not set".
    pub fn text_field(&mut self, f: &Fields, name: &str) -> Option<String> {
        self.string_field(f, name).filter(|s| !s.is_empty())
    }

    pub fn int(&mut self, v: &Spanned, path: &str) -> Option<i64> {
        match &v.value {
            Value::Number(n) if n.is_finite() && n.trunc().abs() < 9.2e18 => Some(n.trunc() as i64),
            Value::Number(n) => {
                let text = format_number(*n);
                self.err(
                    path,
                    v.line,
                    format!("number {text} is not a usable integer"),
                );
                None
            }
            Value::Bool(b) => Some(i64::from(*b)),
            Value::String(s) if s.is_empty() => Some(0),
            Value::String(s) => {
                let parsed = parse_go_int(s);
                if parsed.is_none() {
                    self.err(path, v.line, format!("cannot parse '{s}' as an integer"));
                }
                parsed
            }
            _ => {
                self.expected(path, v, "an integer");
                None
            }
        }
    }

    pub fn bool(&mut self, v: &Spanned, path: &str) -> Option<bool> {
        match &v.value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(*n != 0.0),
            Value::String(s) if s.is_empty() => Some(false),
            Value::String(s) => {
                let parsed = parse_go_bool(s);
                if parsed.is_none() {
                    self.err(path, v.line, format!("cannot parse '{s}' as a boolean"));
                }
                parsed
            }
            _ => {
                self.expected(path, v, "a boolean");
                None
            }
        }
    }

    pub fn bool_field(&mut self, f: &Fields, name: &str) -> Option<bool> {
        let v = f.get(name)?;
        self.bool(v, &f.path(name))
    }

    /// A list of strings; `allow_single` also takes one bare string.
    pub fn strings(&mut self, v: &Spanned, path: &str, allow_single: bool) -> Option<Vec<String>> {
        match &v.value {
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match &item.value {
                        Value::Array(_) | Value::Object(_) | Value::Null => {
                            self.expected(&item_path, item, "a string");
                            ok = false;
                        }
                        _ => out.extend(self.string(item, &item_path)),
                    }
                }
                ok.then_some(out)
            }
            Value::String(s) if allow_single => Some(vec![s.clone()]),
            _ if allow_single => {
                self.expected(path, v, "a string or an array");
                None
            }
            _ => {
                self.expected(path, v, "an array");
                None
            }
        }
    }

    /// An optional list field (absent: empty).
    pub fn strings_field(&mut self, f: &Fields, name: &str, allow_single: bool) -> Vec<String> {
        match f.get(name) {
            Some(v) => self
                .strings(v, &f.path(name), allow_single)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// A required whole number ≥ 1 (seconds of an interval, ttl or poll).
    pub fn positive_int(&mut self, f: &Fields, name: &str) -> Option<u32> {
        let path = f.path(name);
        let n = match f.get(name) {
            Some(v) => self.int(v, &path)?,
            None => 0,
        };
        if n < 1 {
            self.err(&path, f.line_of(name), "must be > 0");
            return None;
        }
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                let msg = format!("must be at most {}", u32::MAX);
                self.err(&path, f.line_of(name), msg);
                None
            }
        }
    }

    // ----- durations -----

    /// A duration field (weak string; a bare integer is seconds, else Go
    /// syntax) as signed nanoseconds with its line; `None` when absent, null or
    /// empty (both generations treat an empty string as "not set").
    pub fn duration(&mut self, f: &Fields, name: &str) -> Option<(i128, u32)> {
        let v = f.get(name)?;
        let text = self.string(v, &f.path(name))?;
        if text.is_empty() {
            return None;
        }
        match duration::parse(&text) {
            Ok(ns) => Some((ns, v.line)),
            Err(e) => {
                let msg = format!("unable to parse '{text}': {e}");
                self.err(&f.path(name), v.line, msg);
                None
            }
        }
    }

    /// A duration where zero or less means "not set".
    pub fn positive_duration(&mut self, f: &Fields, name: &str) -> Option<Duration> {
        self.duration(f, name)
            .map(|(ns, _)| nanos_to_duration(ns))
            .filter(|d| !d.is_zero())
    }

    /// A duration that, when set, must be at least 1ms (run timeouts, intervals).
    pub fn min_1ms_duration(&mut self, f: &Fields, name: &str) -> Option<Duration> {
        let (ns, line) = self.duration(f, name)?;
        if ns < MIN_TIMEOUT_NS {
            self.err(&f.path(name), line, "cannot be less than 1ms");
            return None;
        }
        Some(nanos_to_duration(ns))
    }

    /// Consul's `deregisterCriticalServiceAfter`: text passed through, but it must
    /// be a real Go duration (with a unit) because Consul parses it that way.
    pub fn go_duration_text(&mut self, f: &Fields, name: &str) -> Option<String> {
        let text = self.text_field(f, name)?;
        let unitless = text
            .trim_start_matches(['-', '+'])
            .chars()
            .all(|c| c.is_ascii_digit());
        let problem = if unitless && text != "0" {
            Some(format!("time: missing unit in duration \"{text}\""))
        } else {
            duration::parse(&text).err().map(|e| e.to_string())
        };
        match problem {
            Some(e) => {
                let msg = format!("unable to parse '{text}': {e}");
                self.err(&f.path(name), f.line_of(name), msg);
                None
            }
            None => Some(text),
        }
    }

    // ----- commands, names, addresses -----

    /// A command: a string (trimmed, split on every single space) or an array.
    pub fn command(&mut self, v: &Spanned, path: &str) -> Option<Vec<String>> {
        let args = match &v.value {
            Value::String(s) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    Vec::new()
                } else {
                    trimmed.split(' ').map(str::to_string).collect()
                }
            }
            Value::Array(items) => self.command_args(items, path)?,
            _ => {
                self.expected(path, v, "a string or an array");
                return None;
            }
        };
        if args.first().map_or(true, |a| a.is_empty()) {
            self.err(path, v.line, "received zero-length argument");
            return None;
        }
        if let Some(i) = args.iter().position(|a| a.contains('\0')) {
            // exec(2) takes C strings: the daemon could never start this.
            let (path, line) = match &v.value {
                Value::Array(items) => (
                    format!("{path}[{i}]"),
                    items.get(i).map_or(v.line, |it| it.line),
                ),
                _ => (path.to_string(), v.line),
            };
            self.err(&path, line, NUL_RULE);
            return None;
        }
        Some(args)
    }

    /// Array-form command arguments: strings as they are, numbers and booleans
    /// as Go's `%v`; other elements per dialect.
    fn command_args(&mut self, items: &[Spanned], path: &str) -> Option<Vec<String>> {
        let mut args = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(s) => args.push(s.clone()),
                Value::Number(_) | Value::Bool(_) => args.push(go_format(&item.value)),
                other if self.dialect.formats_any_arg() => args.push(go_format(other)),
                _ => {
                    self.expected(&format!("{path}[{i}]"), item, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(args)
    }

    /// A command field that must be present.
    pub fn required_command(&mut self, f: &Fields, name: &str) -> Option<Vec<String>> {
        match f.get(name) {
            Some(v) => self.command(v, &f.path(name)),
            None => {
                self.err(&f.path(name), f.line, "is required");
                None
            }
        }
    }

    /// The required `name`; blank (or of a wrong type) is reported here.
    pub fn name(&mut self, f: &Fields) -> String {
        let name = match f.get("name") {
            Some(v) => match self.string(v, &f.path("name")) {
                Some(s) => s,
                None if self.dialect.blank_after_type_error() => String::new(),
                None => return String::new(),
            },
            None => String::new(),
        };
        if name.trim().is_empty() {
            self.err(&f.path("name"), f.line_of("name"), "must not be blank");
        }
        name
    }

    /// Resolves interface specs for an advertised job or telemetry.
    pub fn resolve(&mut self, specs: &[String], path: &str, line: u32) -> Option<IpAddr> {
        match (self.env.resolve_ip)(specs) {
            Ok(ip) => Some(ip),
            Err(e) => {
                self.err(path, line, format!("unable to resolve: {e}"));
                None
            }
        }
    }

    /// Top-level `stopTimeout` in whole seconds: 0 means the default, negative
    /// means "kill at once".
    pub fn stop_timeout(&mut self, v: &Spanned, default: Duration) -> Option<Duration> {
        let secs = self.int(v, "stopTimeout")?;
        Some(match secs {
            0 => default,
            s if s < 0 => Duration::ZERO,
            s => Duration::from_secs(s.unsigned_abs()),
        })
    }
}

/// The error an invalid fixture expects, from its first line
/// `// expect: <path>: <message>` (or `// expect: <path>:`).
#[cfg(test)]
pub fn expected_error(src: &str) -> Option<(&str, &str)> {
    let expect = src.lines().next()?.strip_prefix("// expect: ")?;
    expect
        .split_once(": ")
        .or_else(|| expect.strip_suffix(':').map(|p| (p, "")))
}
