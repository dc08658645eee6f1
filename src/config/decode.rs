//! Parsed JSON5 → validated [`Config`], collecting every error with its JSON path
//! and source line instead of stopping at the first one.
//!
//! The grammar is ContainerPilot 3.8's (reference §2–§4, §7): top-level keys are
//! exact-case, keys inside sections match case-insensitively (exact match first),
//! and values are weakly typed the way mapstructure did it.

use super::duration;
use super::json5::{Spanned, Value};
use super::types::*;
use crate::events::EventCode;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
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

pub struct LoadEnv<'a> {
    pub env: &'a HashMap<String, String>,
    pub resolve_ip: &'a dyn Fn(&[String]) -> Result<IpAddr, String>,
}

const TOP_LEVEL_KEYS: [&str; 8] = [
    "consul",
    "etcd",
    "logging",
    "stopTimeout",
    "jobs",
    "watches",
    "telemetry",
    "control",
];

/// Used when a job or telemetry gives no interfaces (3.8 code, not its docs).
const DEFAULT_INTERFACES: [&str; 2] = ["eth0:inet", "inet"];
const DEFAULT_CONSUL_ADDRESS: &str = "127.0.0.1:8500";
const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
const DEFAULT_ETCD_PREFIX: &str = "/containerpilot";
const CONSUL_TLS_KEYS: [&str; 6] = [
    "cafile",
    "capath",
    "clientcert",
    "clientkey",
    "servername",
    "verify",
];
const ETCD_TLS_KEYS: [&str; 4] = ["cafile", "clientcert", "clientkey", "verify"];
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TELEMETRY_PORT: u16 = 9090;
const TELEMETRY_JOB: &str = "containerpilot";
const MIN_TIMEOUT_NS: i128 = 1_000_000;

const RESTARTS_ACCEPTS: &str = "accepts positive integers, \"unlimited\", or \"never\"";
const NAME_RULE: &str =
    "service names must be alphanumeric with dashes to comply with service discovery";

pub fn decode(root: &Spanned, env: &LoadEnv) -> Result<Config, Vec<ConfigError>> {
    let mut d = Decoder {
        errors: Vec::new(),
        env,
    };
    let config = d.config(root);
    if d.errors.is_empty() {
        Ok(config)
    } else {
        Err(d.errors)
    }
}

struct Decoder<'e, 'a> {
    errors: Vec<ConfigError>,
    env: &'e LoadEnv<'a>,
}

/// The fields of one config object after key matching. Null values count as
/// absent so that defaults stay in place.
pub(super) struct Fields<'v> {
    pub(super) path: String,
    pub(super) line: u32,
    pub(super) found: Vec<(&'static str, &'v Spanned)>,
}

impl<'v> Fields<'v> {
    pub(super) fn get(&self, name: &str) -> Option<&'v Spanned> {
        self.found
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v.value, Value::Null))
    }

    pub(super) fn path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Line of a field's value, or of the object when the field is missing.
    pub(super) fn line_of(&self, name: &str) -> u32 {
        self.get(name).map_or(self.line, |v| v.line)
    }
}

pub(super) fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
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
pub(super) fn format_number(n: f64) -> String {
    if n.is_infinite() {
        return if n > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    format!("{n}")
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then 0x/0o/0b prefixes or a leading
/// 0 for octal, underscores between digits only with a prefix.
fn parse_go_int(s: &str) -> Option<i64> {
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
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `^[a-z][a-zA-Z0-9-]+$`: Consul service names and watch names.
pub(super) fn is_service_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Prometheus metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(super) fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn nanos_to_duration(ns: i128) -> Duration {
    if ns <= 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Strips an `http://`/`https://` prefix, returning the scheme it named.
fn split_scheme(addr: &str) -> (Option<&'static str>, &str) {
    if let Some(rest) = addr.strip_prefix("https://") {
        (Some("https"), rest)
    } else if let Some(rest) = addr.strip_prefix("http://") {
        (Some("http"), rest)
    } else {
        (None, addr)
    }
}

/// An etcd endpoint as a base URL: `http://` is assumed when no scheme is given;
/// any path is refused because the gateway paths are fixed.
fn etcd_endpoint(raw: &str) -> Result<String, String> {
    let text = raw.trim();
    let (scheme, rest) = match split_scheme(text) {
        (Some(s), rest) => (s, rest),
        (None, rest) if rest.contains("://") => {
            return Err(format!("'{text}' must be an http:// or https:// URL"));
        }
        (None, rest) => ("http", rest),
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!(
            "'{text}' is not a valid endpoint (want scheme://host:port)"
        ));
    }
    Ok(format!("{scheme}://{host}"))
}

/// A control socket mode: up to four octal digits, at most 0777.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.chars().all(|c| matches!(c, '0'..='7')) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

impl Decoder<'_, '_> {
    fn err(&mut self, path: &str, line: u32, msg: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: Some(line),
            msg: msg.into(),
        });
    }

    fn expected(&mut self, path: &str, v: &Spanned, what: &str) {
        let got = type_name(&v.value);
        self.err(path, v.line, format!("expected {what}, got {got}"));
    }

    /// Matches the keys of `v` against `names` like mapstructure: exact first,
    /// then case-insensitively; leftover keys are one "has invalid keys" error.
    fn fields<'v>(
        &mut self,
        v: &'v Spanned,
        path: &str,
        names: &[&'static str],
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

    // ----- weakly typed scalars (reference §2.3) -----

    fn string(&mut self, v: &Spanned, path: &str) -> Option<String> {
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

    fn string_field(&mut self, f: &Fields, name: &str) -> Option<String> {
        let v = f.get(name)?;
        self.string(v, &f.path(name))
    }

    fn int(&mut self, v: &Spanned, path: &str) -> Option<i64> {
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

    fn bool(&mut self, v: &Spanned, path: &str) -> Option<bool> {
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

    fn bool_field(&mut self, f: &Fields, name: &str) -> Option<bool> {
        let v = f.get(name)?;
        self.bool(v, &f.path(name))
    }

    /// A list of strings; `allow_single` also takes one bare string (job
    /// `interfaces`, and telemetry `interfaces` as our extension).
    fn strings(&mut self, v: &Spanned, path: &str, allow_single: bool) -> Option<Vec<String>> {
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

    /// A duration field as text; `None` when absent, null or empty (3.8 treats an
    /// empty string as "not set").
    fn duration_text(&mut self, f: &Fields, name: &str) -> Option<(String, u32)> {
        let v = f.get(name)?;
        let text = self.string(v, &f.path(name))?;
        (!text.is_empty()).then_some((text, v.line))
    }

    /// Parses a duration field to signed nanoseconds, reporting parse errors.
    fn duration(&mut self, f: &Fields, name: &str) -> Option<(i128, u32)> {
        let (text, line) = self.duration_text(f, name)?;
        match duration::parse(&text) {
            Ok(ns) => Some((ns, line)),
            Err(e) => {
                self.err(
                    &f.path(name),
                    line,
                    format!("unable to parse '{text}': {e}"),
                );
                None
            }
        }
    }

    /// `exec` in string form (trimmed, split on single spaces) or array form.
    fn exec(&mut self, v: &Spanned, path: &str) -> Option<Vec<String>> {
        let args = match &v.value {
            Value::String(s) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    Vec::new()
                } else {
                    trimmed.split(' ').map(str::to_string).collect()
                }
            }
            Value::Array(items) => self.exec_args(items, path)?,
            _ => {
                self.expected(path, v, "a string or an array");
                return None;
            }
        };
        if args.first().map_or(true, |a| a.is_empty()) {
            self.err(path, v.line, "received zero-length argument");
            return None;
        }
        Some(args)
    }

    /// Array-form `exec`: strings as they are, numbers and booleans as Go's `%v`.
    fn exec_args(&mut self, items: &[Spanned], path: &str) -> Option<Vec<String>> {
        let mut args = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(s) => args.push(s.clone()),
                Value::Number(n) => args.push(format_number(*n)),
                Value::Bool(b) => args.push(b.to_string()),
                _ => {
                    self.expected(&format!("{path}[{i}]"), item, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(args)
    }

    // ----- sections -----

    fn config(&mut self, root: &Spanned) -> Config {
        let mut config = Config {
            consul: None,
            etcd: None,
            logging: LoggingConfig::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            jobs: Vec::new(),
            watches: Vec::new(),
            telemetry: None,
            control: ControlConfig::default(),
            compat: Compat::V3,
            exit_policy: None,
        };
        let Value::Object(entries) = &root.value else {
            self.expected("", root, "an object");
            return config;
        };
        let mut unknown: Vec<&str> = entries
            .iter()
            .map(|(k, _)| k.name.as_str())
            .filter(|k| !TOP_LEVEL_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            let line = entries
                .iter()
                .filter(|(k, _)| unknown.contains(&k.name.as_str()))
                .map(|(k, _)| k.line)
                .min()
                .unwrap_or(root.line);
            unknown.sort();
            self.err(
                "",
                line,
                format!("unknown config keys: [{}]", unknown.join(" ")),
            );
        }
        let top = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.name == name)
                .map(|(_, v)| v)
                .filter(|v| !matches!(v.value, Value::Null))
        };

        if let Some(v) = top("consul") {
            config.consul = self.consul(v);
        }
        if let Some(v) = top("etcd") {
            if top("consul").is_some() {
                let msg = "cannot be used together with 'consul': configure one catalog";
                self.err("etcd", v.line, msg);
            }
            config.etcd = self.etcd(v);
        }
        if let Some(v) = top("logging") {
            config.logging = self.logging(v);
        }
        if let Some(v) = top("stopTimeout") {
            if let Some(secs) = self.int(v, "stopTimeout") {
                config.stop_timeout = match secs {
                    0 => DEFAULT_STOP_TIMEOUT,
                    s if s < 0 => Duration::ZERO,
                    s => Duration::from_secs(s.unsigned_abs()),
                };
            }
        }
        if let Some(v) = top("control") {
            config.control = self.control(v);
        }
        let telemetry_on = top("telemetry").is_some();
        if let Some(v) = top("jobs") {
            config.jobs = self.jobs(v, telemetry_on);
        }
        if let Some(v) = top("watches") {
            config.watches = self.watches(v, top("etcd").is_some());
        }
        if let Some(v) = top("telemetry") {
            if let Some(t) = self.telemetry(v) {
                config.jobs.push(telemetry_job(&t, v.line));
                config.telemetry = Some(t);
            }
        }
        config
    }

    fn env_var(&self, key: &str) -> Option<String> {
        self.env.env.get(key).filter(|v| !v.is_empty()).cloned()
    }

    fn consul(&mut self, v: &Spanned) -> Option<ConsulConfig> {
        let mut scheme = String::new();
        let mut token = None;
        let mut tls = TlsConfig::default();
        let address = match &v.value {
            Value::String(s) => s.clone(),
            Value::Object(_) => {
                let f = self.fields(v, "consul", &["address", "scheme", "token", "tls"])?;
                scheme = self.string_field(&f, "scheme").unwrap_or_default();
                token = self.string_field(&f, "token").filter(|t| !t.is_empty());
                if let Some(t) = f.get("tls") {
                    tls = self
                        .tls(t, "consul.tls", &CONSUL_TLS_KEYS)
                        .unwrap_or_default();
                }
                if !scheme.is_empty() {
                    scheme = scheme.to_lowercase();
                    if scheme != "http" && scheme != "https" {
                        let line = f.line_of("scheme");
                        self.err("consul.scheme", line, "must be 'http' or 'https'");
                    }
                }
                self.string_field(&f, "address").unwrap_or_default()
            }
            _ => {
                self.expected("consul", v, "a string or an object");
                return None;
            }
        };

        let (prefix_scheme, rest) = split_scheme(&address);
        let mut address = rest.to_string();
        if let Some(s) = prefix_scheme {
            scheme = s.to_string();
        }
        // The Consul library's own defaults fill only what the config left empty.
        if address.is_empty() {
            let from_env = self.env_var("CONSUL_HTTP_ADDR");
            let env_addr = from_env.as_deref().unwrap_or(DEFAULT_CONSUL_ADDRESS);
            let (env_scheme, rest) = split_scheme(env_addr);
            address = rest.to_string();
            if scheme.is_empty() {
                scheme = env_scheme.unwrap_or_default().to_string();
            }
        }
        if scheme.is_empty() {
            let ssl = self.env_var("CONSUL_HTTP_SSL");
            let https = ssl.as_deref().and_then(parse_go_bool).unwrap_or(false);
            scheme = if https { "https" } else { "http" }.to_string();
        }

        // CP's own overrides: the environment wins when set and non-empty.
        if let Some(t) = self.env_var("CONSUL_HTTP_TOKEN") {
            token = Some(t);
        }
        let overrides = [
            ("CONSUL_CACERT", &mut tls.cafile),
            ("CONSUL_CAPATH", &mut tls.capath),
            ("CONSUL_CLIENT_CERT", &mut tls.clientcert),
            ("CONSUL_CLIENT_KEY", &mut tls.clientkey),
            ("CONSUL_TLS_SERVER_NAME", &mut tls.servername),
        ];
        for (key, slot) in overrides {
            if let Some(val) = self.env.env.get(key).filter(|v| !v.is_empty()) {
                *slot = Some(val.clone());
            }
        }
        if let Some(verify) = self.env_var("CONSUL_HTTP_SSL_VERIFY") {
            match verify.to_lowercase().as_str() {
                "1" | "true" => tls.verify = Some(true),
                "0" | "false" => tls.verify = Some(false),
                _ => {}
            }
        }
        Some(ConsulConfig {
            address,
            scheme,
            token,
            tls,
        })
    }

    /// `etcd: {endpoints, prefix, username, password, tls}`; `ETCD_ENDPOINTS`
    /// (comma-separated) replaces the configured endpoints when set.
    fn etcd(&mut self, v: &Spanned) -> Option<EtcdConfig> {
        let keys = ["endpoints", "prefix", "username", "password", "tls"];
        let f = self.fields(v, "etcd", &keys)?;
        let mut endpoints = match f.get("endpoints") {
            Some(e) => self
                .strings(e, &f.path("endpoints"), true)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut line = f.line_of("endpoints");
        let mut origin = "";
        if let Some(list) = self.env_var("ETCD_ENDPOINTS") {
            endpoints = list
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            line = v.line;
            origin = " (from ETCD_ENDPOINTS)";
        }
        let mut urls = Vec::new();
        for (i, e) in endpoints.iter().enumerate() {
            match etcd_endpoint(e) {
                Ok(url) => urls.push(url),
                Err(msg) => {
                    let path = format!("{}[{i}]", f.path("endpoints"));
                    self.err(&path, line, format!("{msg}{origin}"));
                }
            }
        }
        if urls.is_empty() && endpoints.is_empty() {
            urls.push(DEFAULT_ETCD_ENDPOINT.to_string());
        }
        let prefix = match self.string_field(&f, "prefix") {
            Some(p) if !p.trim_end_matches('/').is_empty() => p.trim_end_matches('/').to_string(),
            Some(p) if !p.is_empty() => String::new(),
            _ => DEFAULT_ETCD_PREFIX.to_string(),
        };
        let username = self.string_field(&f, "username").filter(|s| !s.is_empty());
        let password = self.string_field(&f, "password").filter(|s| !s.is_empty());
        if username.is_some() != password.is_some() {
            let (name, other) = if username.is_some() {
                ("password", "username")
            } else {
                ("username", "password")
            };
            let msg = format!("must be set when '{other}' is set");
            self.err(&f.path(name), f.line_of(other), msg);
        }
        let tls = match f.get("tls") {
            Some(t) => self.tls(t, "etcd.tls", &ETCD_TLS_KEYS).unwrap_or_default(),
            None => TlsConfig::default(),
        };
        Some(EtcdConfig {
            endpoints: urls,
            prefix,
            username,
            password,
            tls,
        })
    }

    fn tls(&mut self, v: &Spanned, path: &str, keys: &[&'static str]) -> Option<TlsConfig> {
        let f = self.fields(v, path, keys)?;
        let text = |d: &mut Self, name| d.string_field(&f, name).filter(|s| !s.is_empty());
        Some(TlsConfig {
            cafile: text(self, "cafile"),
            capath: text(self, "capath"),
            clientcert: text(self, "clientcert"),
            clientkey: text(self, "clientkey"),
            servername: text(self, "servername"),
            verify: self.bool_field(&f, "verify"),
        })
    }

    fn logging(&mut self, v: &Spanned) -> LoggingConfig {
        let mut cfg = LoggingConfig::default();
        let Some(f) = self.fields(v, "logging", &["level", "format", "output"]) else {
            return cfg;
        };
        if let Some(level) = self.string_field(&f, "level").filter(|s| !s.is_empty()) {
            cfg.level = match level.to_lowercase().as_str() {
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" | "warning" => LogLevel::Warn,
                "error" => LogLevel::Error,
                "fatal" => LogLevel::Fatal,
                "panic" => LogLevel::Panic,
                _ => {
                    let msg = format!(
                        "unknown log level '{level}' (use debug, info, warn, error, fatal or panic)"
                    );
                    self.err(&f.path("level"), f.line_of("level"), msg);
                    cfg.level
                }
            };
        }
        if let Some(format) = self.string_field(&f, "format").filter(|s| !s.is_empty()) {
            cfg.format = match format.to_lowercase().as_str() {
                "default" => LogFormat::Default,
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    let msg = format!("unknown log format '{format}' (use default, text or json)");
                    self.err(&f.path("format"), f.line_of("format"), msg);
                    cfg.format
                }
            };
        }
        if let Some(output) = self.string_field(&f, "output").filter(|s| !s.is_empty()) {
            cfg.output = match output.to_lowercase().as_str() {
                "stdout" => LogOutput::Stdout,
                "stderr" => LogOutput::Stderr,
                _ => LogOutput::File(PathBuf::from(output)),
            };
        }
        cfg
    }

    fn control(&mut self, v: &Spanned) -> ControlConfig {
        let mut cfg = ControlConfig::default();
        let Some(f) = self.fields(v, "control", &["socket", "mode"]) else {
            return cfg;
        };
        if let Some(socket) = self.string_field(&f, "socket") {
            if socket.is_empty() {
                self.err(&f.path("socket"), f.line_of("socket"), "must not be empty");
            } else {
                cfg.socket = PathBuf::from(socket);
            }
        }
        if let Some(mode) = self.string_field(&f, "mode") {
            match parse_mode(&mode) {
                Some(m) => cfg.mode = m,
                None => {
                    let msg = format!(
                        "invalid mode '{mode}': must be octal digits no greater than 0777, like \"0660\""
                    );
                    self.err(&f.path("mode"), f.line_of("mode"), msg);
                }
            }
        }
        cfg
    }

    // ----- jobs -----

    fn jobs(&mut self, v: &Spanned, telemetry_on: bool) -> Vec<JobConfig> {
        let Value::Array(items) = &v.value else {
            self.expected("jobs", v, "an array");
            return Vec::new();
        };
        let mut jobs = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matches!(item.value, Value::Null) {
                continue;
            }
            let path = format!("jobs[{i}]");
            let Some(job) = self.job(item, &path) else {
                continue;
            };
            let name_line = field_line(item, "name").unwrap_or(item.line);
            if telemetry_on && job.name == TELEMETRY_JOB {
                let msg = "'containerpilot' is reserved for the telemetry service";
                self.err(&join(&path, "name"), name_line, msg);
            } else if !job.name.trim().is_empty() {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == job.name) {
                    let msg = format!("duplicate job name '{}' (first used by {first})", job.name);
                    self.err(&join(&path, "name"), name_line, msg);
                } else {
                    seen.push((job.name.clone(), path.clone()));
                }
            }
            jobs.push(job);
        }
        jobs
    }

    fn job(&mut self, v: &Spanned, path: &str) -> Option<JobConfig> {
        const KEYS: [&str; 13] = [
            "name",
            "exec",
            "port",
            "initial_status",
            "interfaces",
            "tags",
            "consul",
            "health",
            "when",
            "timeout",
            "restarts",
            "stopTimeout",
            "logging",
        ];
        let f = self.fields(v, path, &KEYS)?;
        let name = self.name(&f);
        let exec = match f.get("exec") {
            Some(e) => self.exec(e, &f.path("exec")),
            None => None,
        };
        let port = self.port(&f, 0);
        let health = self.health(&f);
        if port != 0 && f.get("health").is_none() {
            let msg = "must be set if 'port' is set";
            self.err(&f.path("health"), f.line_of("health"), msg);
        }

        let when = self.when(&f);
        let each = when_has_each(&f);
        let mut timeout = self.min_1ms_duration(&f, "timeout");
        let mut restarts = self.restarts(&f, each);
        if let Trigger::Interval(interval) = when.trigger {
            timeout = timeout.or(Some(interval));
            if f.get("restarts").is_none() {
                restarts = Restarts::Unlimited;
            }
        }
        let stop_timeout = self
            .duration(&f, "stopTimeout")
            .map(|(ns, _)| nanos_to_duration(ns))
            .filter(|d| !d.is_zero());
        let raw = self.raw_logging(&f);

        let mut job = JobConfig {
            name,
            exec,
            port,
            initial_status: None,
            interfaces: Vec::new(),
            ip: None,
            tags: Vec::new(),
            consul: None,
            health,
            when,
            timeout,
            restarts,
            stop_timeout,
            raw,
            always_healthy: false,
            sensor: None,
            line: v.line,
        };
        // Discovery fields are not even parsed for jobs that are not advertised.
        if port != 0 {
            self.advertised(&f, &mut job);
        }
        Some(job)
    }

    /// The required `name`; blank (or of a wrong type) is reported here.
    fn name(&mut self, f: &Fields) -> String {
        let name = match f.get("name") {
            Some(v) => match self.string(v, &f.path("name")) {
                Some(s) => s,
                None => return String::new(),
            },
            None => String::new(),
        };
        if name.trim().is_empty() {
            self.err(&f.path("name"), f.line_of("name"), "must not be blank");
        }
        name
    }

    fn port(&mut self, f: &Fields, min: i64) -> u16 {
        let Some(v) = f.get("port") else {
            return 0;
        };
        let path = f.path("port");
        let Some(port) = self.int(v, &path) else {
            return 0;
        };
        match u16::try_from(port) {
            Ok(p) if i64::from(p) >= min => p,
            _ => {
                self.err(&path, v.line, format!("must be between {min} and 65535"));
                0
            }
        }
    }

    fn advertised(&mut self, f: &Fields, job: &mut JobConfig) {
        if !is_service_name(&job.name) && !job.name.trim().is_empty() {
            self.err(&f.path("name"), f.line_of("name"), NAME_RULE);
        }
        if let Some(status) = self
            .string_field(f, "initial_status")
            .filter(|s| !s.is_empty())
        {
            job.initial_status = match status.as_str() {
                "passing" => Some(CheckStatus::Passing),
                "warning" => Some(CheckStatus::Warning),
                "critical" => Some(CheckStatus::Critical),
                _ => {
                    let msg = "must be one of 'passing', 'warning' or 'critical'";
                    self.err(&f.path("initial_status"), f.line_of("initial_status"), msg);
                    None
                }
            };
        }
        if let Some(t) = f.get("tags") {
            job.tags = self.strings(t, &f.path("tags"), false).unwrap_or_default();
        }
        if let Some(c) = f.get("consul") {
            job.consul = self.job_consul(c, &f.path("consul"));
        }
        let interfaces = match f.get("interfaces") {
            Some(i) => self.strings(i, &f.path("interfaces"), true),
            None => Some(Vec::new()),
        };
        if let Some(list) = interfaces {
            job.interfaces = with_default_interfaces(list);
            match (self.env.resolve_ip)(&job.interfaces) {
                Ok(ip) => job.ip = Some(ip),
                Err(e) => {
                    let msg = format!("unable to resolve: {e}");
                    self.err(&f.path("interfaces"), f.line_of("interfaces"), msg);
                }
            }
        }
    }

    fn job_consul(&mut self, v: &Spanned, path: &str) -> Option<JobConsulExtras> {
        let f = self.fields(
            v,
            path,
            &["enableTagOverride", "deregisterCriticalServiceAfter"],
        )?;
        let enable_tag_override = self.bool_field(&f, "enableTagOverride").unwrap_or(false);
        // Fix over 3.8: an absent or empty value means "not set" instead of
        // failing to parse as a duration; a present one must still be a real Go
        // duration (with a unit) because Consul parses it that way.
        let dereg = self
            .string_field(&f, "deregisterCriticalServiceAfter")
            .filter(|s| !s.is_empty());
        if let Some(text) = &dereg {
            let unitless = text
                .trim_start_matches(['-', '+'])
                .chars()
                .all(|c| c.is_ascii_digit());
            let problem = if unitless && text != "0" {
                Some(format!("time: missing unit in duration \"{text}\""))
            } else {
                duration::parse(text).err().map(|e| e.to_string())
            };
            if let Some(e) = problem {
                let name = "deregisterCriticalServiceAfter";
                self.err(
                    &f.path(name),
                    f.line_of(name),
                    format!("unable to parse '{text}': {e}"),
                );
            }
        }
        Some(JobConsulExtras {
            enable_tag_override,
            deregister_critical_service_after: dereg,
        })
    }

    fn health(&mut self, job: &Fields) -> Option<HealthConfig> {
        let v = job.get("health")?;
        let path = job.path("health");
        let f = self.fields(v, &path, &["exec", "interval", "ttl", "timeout", "logging"])?;
        let exec = match f.get("exec") {
            Some(e) => self.exec(e, &f.path("exec")),
            None => None,
        };
        let interval = self.positive_int(&f, "interval");
        let ttl = self.positive_int(&f, "ttl");
        let interval = Duration::from_secs(interval.unwrap_or(1).into());
        // 3.8 reads "0" as "no timeout"; a check must end, so it falls back to
        // the interval like an absent timeout does.
        let timeout = self
            .duration(&f, "timeout")
            .map(|(ns, _)| nanos_to_duration(ns))
            .filter(|d| !d.is_zero())
            .unwrap_or(interval);
        let raw = self.raw_logging(&f);
        Some(HealthConfig {
            exec,
            interval,
            ttl: ttl.unwrap_or(1),
            timeout,
            raw,
        })
    }

    /// A required whole number of seconds ≥ 1 (health interval/ttl, watch interval).
    fn positive_int(&mut self, f: &Fields, name: &str) -> Option<u32> {
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
                self.err(
                    &path,
                    f.line_of(name),
                    format!("must be at most {}", u32::MAX),
                );
                None
            }
        }
    }

    fn raw_logging(&mut self, f: &Fields) -> bool {
        let Some(v) = f.get("logging") else {
            return false;
        };
        let Some(lf) = self.fields(v, &f.path("logging"), &["raw"]) else {
            return false;
        };
        self.bool_field(&lf, "raw").unwrap_or(false)
    }

    /// A duration that, when set, must be at least 1ms (`timeout`, `when.interval`).
    fn min_1ms_duration(&mut self, f: &Fields, name: &str) -> Option<Duration> {
        let (ns, line) = self.duration(f, name)?;
        if ns < MIN_TIMEOUT_NS {
            self.err(&f.path(name), line, "cannot be less than 1ms");
            return None;
        }
        Some(nanos_to_duration(ns))
    }

    fn when(&mut self, job: &Fields) -> WhenConfig {
        let Some(v) = job.get("when") else {
            return WhenConfig::default();
        };
        let path = job.path("when");
        let Some(f) = self.fields(v, &path, &["interval", "source", "once", "each", "timeout"])
        else {
            return WhenConfig::default();
        };
        let text = |d: &mut Self, name| d.string_field(&f, name).unwrap_or_default();
        let (interval, source) = (text(self, "interval"), text(self, "source"));
        let (once, each) = (text(self, "once"), text(self, "each"));
        let set = [&interval, &once, &each]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if set > 1 {
            let msg = "can have only one of 'interval', 'once', or 'each'";
            self.err(&path, f.line, msg);
            return WhenConfig::default();
        }
        if !interval.is_empty() {
            // 3.8 ignores source and timeout next to an interval.
            let trigger = match self.min_1ms_duration(&f, "interval") {
                Some(d) => Trigger::Interval(d),
                None => Trigger::Never,
            };
            return WhenConfig {
                trigger,
                timeout: None,
            };
        }
        let timeout = self
            .duration(&f, "timeout")
            .map(|(ns, _)| nanos_to_duration(ns))
            .filter(|d| !d.is_zero());
        let mut event = None;
        for (name, value) in [("once", &once), ("each", &each)] {
            if value.is_empty() {
                continue;
            }
            match EventCode::from_config_name(value) {
                Some(code) => event = Some((code, name == "each")),
                None => {
                    let msg = format!("{value} is not a valid event code");
                    self.err(&f.path(name), f.line_of(name), msg);
                }
            }
        }
        let trigger = match (source.as_str(), event) {
            ("SIGHUP", _) => Trigger::Signal(SignalName::Sighup),
            ("SIGUSR2", _) => Trigger::Signal(SignalName::Sigusr2),
            (_, Some((code, each))) => Trigger::Event { code, source, each },
            (_, None) => Trigger::Never,
        };
        WhenConfig { trigger, timeout }
    }

    fn restarts(&mut self, f: &Fields, each: bool) -> Restarts {
        let Some(v) = f.get("restarts") else {
            return Restarts::Count(0);
        };
        let path = f.path("restarts");
        let shown = match &v.value {
            Value::String(s) => s.clone(),
            Value::Number(n) => format_number(*n),
            _ => v.to_json().to_string(),
        };
        let problem = match &v.value {
            Value::String(s) if s == "unlimited" && each => {
                "may not be used when 'job.when.each' is set because it may result in infinite processes"
            }
            Value::String(s) if s == "unlimited" => return Restarts::Unlimited,
            Value::String(s) if s == "never" => return Restarts::Count(0),
            Value::String(s) => match s.parse::<i64>() {
                Ok(n) if n >= 0 => return Restarts::Count(u32::try_from(n).unwrap_or(u32::MAX)),
                _ => RESTARTS_ACCEPTS,
            },
            // Saturating cast: truncates fractions, huge counts become u32::MAX.
            Value::Number(n) if *n >= 0.0 => return Restarts::Count(*n as u32),
            Value::Number(_) => "number must be positive integer",
            _ => RESTARTS_ACCEPTS,
        };
        self.err(&path, v.line, format!("'{shown}' invalid: {problem}"));
        Restarts::Count(0)
    }

    // ----- watches -----

    fn watches(&mut self, v: &Spanned, etcd_on: bool) -> Vec<WatchConfig> {
        let Value::Array(items) = &v.value else {
            self.expected("watches", v, "an array");
            return Vec::new();
        };
        let mut watches: Vec<WatchConfig> = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matches!(item.value, Value::Null) {
                continue;
            }
            let path = format!("watches[{i}]");
            let Some(f) = self.fields(item, &path, &["name", "interval", "tag", "dc"]) else {
                continue;
            };
            let name = self.name(&f);
            let name_path = f.path("name");
            let name_line = f.line_of("name");
            if name.trim().is_empty() {
                // already reported
            } else if !is_service_name(&name) {
                self.err(&name_path, name_line, NAME_RULE);
            } else if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let msg = format!("duplicate watch name '{name}' (first used by {first})");
                self.err(&name_path, name_line, msg);
            } else {
                seen.push((name.clone(), path.clone()));
            }
            let interval = self.positive_int(&f, "interval").unwrap_or(1);
            let tag = self.string_field(&f, "tag").filter(|s| !s.is_empty());
            let dc = self.string_field(&f, "dc").filter(|s| !s.is_empty());
            if etcd_on && dc.is_some() {
                let msg = "'dc' is a Consul datacenter and does not apply to etcd; remove it";
                self.err(&f.path("dc"), f.line_of("dc"), msg);
            }
            watches.push(WatchConfig {
                name,
                interval: Duration::from_secs(interval.into()),
                tag,
                dc,
            });
        }
        watches
    }

    // ----- telemetry -----

    fn telemetry(&mut self, v: &Spanned) -> Option<TelemetryConfig> {
        let f = self.fields(v, "telemetry", &["port", "interfaces", "tags", "metrics"])?;
        let port = if f.get("port").is_some() {
            self.port(&f, 1)
        } else {
            DEFAULT_TELEMETRY_PORT
        };
        let tags = match f.get("tags") {
            Some(t) => self.strings(t, &f.path("tags"), false).unwrap_or_default(),
            None => Vec::new(),
        };
        let metrics = match f.get("metrics") {
            Some(m) => self.metrics(m, &f.path("metrics")),
            None => Vec::new(),
        };
        // A bare string is our extension: 3.8 documented it but rejected it.
        let interfaces = match f.get("interfaces") {
            Some(i) => self.strings(i, &f.path("interfaces"), true),
            None => Some(Vec::new()),
        };
        let mut telemetry = TelemetryConfig {
            port,
            interfaces: Vec::new(),
            ip: None,
            tags,
            metrics,
        };
        if let Some(list) = interfaces {
            telemetry.interfaces = with_default_interfaces(list);
            match (self.env.resolve_ip)(&telemetry.interfaces) {
                Ok(ip) => telemetry.ip = Some(ip),
                Err(e) => {
                    let msg = format!("unable to resolve: {e}");
                    self.err(&f.path("interfaces"), f.line_of("interfaces"), msg);
                }
            }
        }
        Some(telemetry)
    }

    fn metrics(&mut self, v: &Spanned, path: &str) -> Vec<MetricConfig> {
        let Value::Array(items) = &v.value else {
            self.expected(path, v, "an array");
            return Vec::new();
        };
        let mut metrics = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matches!(item.value, Value::Null) {
                continue;
            }
            let mpath = format!("{path}[{i}]");
            let keys = ["namespace", "subsystem", "name", "help", "type"];
            let Some(f) = self.fields(item, &mpath, &keys) else {
                continue;
            };
            let text = |d: &mut Self, name| d.string_field(&f, name).unwrap_or_default();
            let (namespace, subsystem) = (text(self, "namespace"), text(self, "subsystem"));
            let (name, help, kind) = (text(self, "name"), text(self, "help"), text(self, "type"));
            let kind = match kind.as_str() {
                "counter" => MetricKind::Counter,
                "gauge" => MetricKind::Gauge,
                "histogram" => MetricKind::Histogram,
                "summary" => MetricKind::Summary,
                _ => {
                    let msg = format!(
                        "invalid metric type '{kind}' (use counter, gauge, histogram or summary)"
                    );
                    self.err(&f.path("type"), f.line_of("type"), msg);
                    MetricKind::Gauge
                }
            };
            let metric = MetricConfig {
                namespace,
                subsystem,
                name,
                help,
                kind,
            };
            let full = metric.full_name();
            if !is_metric_name(&full) {
                let msg =
                    format!("invalid metric name '{full}': must match [a-zA-Z_:][a-zA-Z0-9_:]*");
                self.err(&f.path("name"), f.line_of("name"), msg);
            }
            metrics.push(metric);
        }
        metrics
    }
}

/// Whether `when.each` is set (restarts "unlimited" is refused next to it).
fn when_has_each(job: &Fields) -> bool {
    let Some(Value::Object(entries)) = job.get("when").map(|w| &w.value) else {
        return false;
    };
    let each = entries.iter().find(|(k, _)| k.name == "each").or_else(|| {
        entries
            .iter()
            .find(|(k, _)| k.name.eq_ignore_ascii_case("each"))
    });
    match each.map(|(_, v)| &v.value) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

/// Line of a named key's value in an object, exact or case-folded.
fn field_line(v: &Spanned, name: &str) -> Option<u32> {
    let Value::Object(entries) = &v.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.name == name)
        .or_else(|| {
            entries
                .iter()
                .find(|(k, _)| k.name.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v.line)
}

fn with_default_interfaces(list: Vec<String>) -> Vec<String> {
    if list.is_empty() {
        DEFAULT_INTERFACES.iter().map(|s| s.to_string()).collect()
    } else {
        list
    }
}

/// The `containerpilot` service that advertises the telemetry endpoint.
fn telemetry_job(t: &TelemetryConfig, line: u32) -> JobConfig {
    let mut tags = t.tags.clone();
    tags.push(env!("CARGO_PKG_VERSION").to_string());
    JobConfig {
        name: TELEMETRY_JOB.to_string(),
        exec: None,
        port: t.port,
        initial_status: None,
        interfaces: t.interfaces.clone(),
        ip: t.ip,
        tags,
        consul: None,
        health: Some(HealthConfig {
            exec: None,
            interval: Duration::from_secs(5),
            ttl: 15,
            timeout: Duration::from_secs(5),
            raw: false,
        }),
        when: WhenConfig::default(),
        timeout: None,
        restarts: Restarts::Count(0),
        stop_timeout: None,
        raw: false,
        always_healthy: true,
        sensor: None,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::json5;
    use std::net::Ipv4Addr;

    const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

    /// Stand-in resolver: "inet"-like specs find the LAN address, "lo" loopback.
    fn resolve(specs: &[String]) -> Result<IpAddr, String> {
        if let Some(bad) = specs.iter().find(|s| s.ends_with("inet5")) {
            return Err(format!("Unable to parse interface spec: {bad}"));
        }
        if specs.iter().any(|s| s == "inet" || s == "eth0:inet") {
            return Ok(LAN);
        }
        if specs.iter().any(|s| s == "lo") {
            return Ok(LOOPBACK);
        }
        Err("none of the interface specifications were able to match".to_string())
    }

    fn load_with(src: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let root = json5::parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
        decode(
            &root,
            &LoadEnv {
                env: &env,
                resolve_ip: &resolve,
            },
        )
    }

    fn load(src: &str) -> Config {
        match load_with(src, &[]) {
            Ok(c) => c,
            Err(errs) => panic!("unexpected errors: {errs:#?}"),
        }
    }

    fn errors(src: &str) -> Vec<String> {
        match load_with(src, &[]) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn job<'c>(c: &'c Config, name: &str) -> &'c JobConfig {
        c.jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn base_job(name: &str, exec: &[&str], line: u32) -> JobConfig {
        JobConfig {
            line,
            ..JobConfig::new(name, Some(strings(exec)))
        }
    }

    fn event(code: EventCode, source: &str, each: bool) -> WhenConfig {
        WhenConfig {
            trigger: Trigger::Event {
                code,
                source: source.to_string(),
                each,
            },
            timeout: None,
        }
    }

    fn version_tag() -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    // ----- fixtures -----

    #[test]
    fn fixture_full_config() {
        let c = load(include_str!("../../tests/fixtures/config/full.json5"));
        assert_eq!(
            c.consul,
            Some(ConsulConfig {
                address: "consul.service:8500".into(),
                scheme: "http".into(),
                token: None,
                tls: TlsConfig::default(),
            })
        );
        assert_eq!(
            c.logging,
            LoggingConfig {
                level: LogLevel::Debug,
                format: LogFormat::Json,
                output: LogOutput::Stderr,
            }
        );
        assert_eq!(c.stop_timeout, secs(7));
        assert_eq!(
            c.control,
            ControlConfig {
                socket: PathBuf::from("/tmp/containerpilot-fixture.socket"),
                mode: 0o660,
            }
        );
        let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "web",
                "api",
                "sidecar",
                "cleanup",
                "setup",
                "before-stop",
                "after-stop",
                "on-database-change",
                "on-cache-healthy",
                "containerpilot"
            ]
        );

        let mut web = base_job("web", &["/usr/local/bin/web", "--port", "8080"], 16);
        web.port = 8080;
        web.interfaces = strings(&["inet", "lo"]);
        web.ip = Some(LAN);
        web.tags = strings(&["frontend", "v2"]);
        web.health = Some(HealthConfig {
            exec: Some(strings(&["/usr/local/bin/web-health"])),
            interval: secs(15),
            ttl: 25,
            timeout: secs(15),
            raw: false,
        });
        web.when = event(EventCode::ExitSuccess, "setup", false);
        assert_eq!(job(&c, "web"), &web);

        let mut api = base_job("api", &["/usr/local/bin/api", "--verbose"], 33);
        api.port = 9001;
        api.interfaces = strings(&["ethwe", "eth0", "inet", "lo"]);
        api.ip = Some(LAN);
        api.health = Some(HealthConfig {
            exec: Some(strings(&["/usr/local/bin/api-health", "deep"])),
            interval: secs(10),
            ttl: 61,
            timeout: secs(3),
            raw: false,
        });
        assert_eq!(job(&c, "api"), &api);

        let mut sidecar = base_job("sidecar", &["/usr/local/bin/sidecar"], 45);
        sidecar.restarts = Restarts::Unlimited;
        assert_eq!(job(&c, "sidecar"), &sidecar);

        let mut cleanup = base_job("cleanup", &["/usr/local/bin/cleanup"], 50);
        cleanup.when.trigger = Trigger::Interval(secs(2));
        cleanup.timeout = Some(secs(2));
        cleanup.restarts = Restarts::Unlimited;
        assert_eq!(job(&c, "cleanup"), &cleanup);

        assert_eq!(
            job(&c, "setup"),
            &base_job("setup", &["/usr/local/bin/setup", "one", "two"], 57)
        );
        assert_eq!(
            job(&c, "before-stop").when,
            event(EventCode::Stopping, "web", false)
        );
        assert_eq!(
            job(&c, "after-stop").when,
            event(EventCode::Stopped, "web", false)
        );
        assert_eq!(
            job(&c, "on-database-change").when,
            event(EventCode::StatusChanged, "watch.database", true)
        );
        assert_eq!(
            job(&c, "on-cache-healthy").when,
            event(EventCode::StatusHealthy, "watch.cache", true)
        );

        let cp = job(&c, "containerpilot");
        let mut expected = base_job("containerpilot", &[], 105);
        expected.exec = None;
        expected.port = 9000;
        expected.interfaces = strings(&["inet", "lo"]);
        expected.ip = Some(LAN);
        expected.tags = vec!["metrics".to_string(), version_tag()];
        expected.health = Some(HealthConfig {
            exec: None,
            interval: secs(5),
            ttl: 15,
            timeout: secs(5),
            raw: false,
        });
        expected.always_healthy = true;
        assert_eq!(cp, &expected);

        assert_eq!(
            c.watches,
            [
                WatchConfig {
                    name: "database".into(),
                    interval: secs(12),
                    tag: Some("primary".into()),
                    dc: None,
                },
                WatchConfig {
                    name: "cache".into(),
                    interval: secs(30),
                    tag: None,
                    dc: None,
                },
            ]
        );
        assert_eq!(c.watches[0].source(), "watch.database");
        assert_eq!(
            c.telemetry,
            Some(TelemetryConfig {
                port: 9000,
                interfaces: strings(&["inet", "lo"]),
                ip: Some(LAN),
                tags: strings(&["metrics"]),
                metrics: vec![MetricConfig {
                    namespace: "shop".into(),
                    subsystem: "web".into(),
                    name: "open_carts".into(),
                    help: "carts currently open".into(),
                    kind: MetricKind::Gauge,
                }],
            })
        );
    }

    #[test]
    fn fixture_prestart() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-prestart.json5"
        ));
        assert_eq!(c.jobs.len(), 4);
        assert_eq!(
            c.jobs[0],
            base_job("prepare", &["/bin/prepare.sh", "--init", "db"], 5)
        );
        let app = &c.jobs[1];
        assert_eq!(
            app.exec,
            Some(strings(&["/bin/app", "-c", "/etc/app.conf"]))
        );
        assert_eq!(app.when, event(EventCode::ExitSuccess, "prepare", false));
        assert_eq!(app.port, 8000);
        assert_eq!(app.ip, Some(LAN));
        assert_eq!(app.restarts, Restarts::Count(0));
        assert_eq!(c.jobs[2].when, event(EventCode::Stopping, "app", false));
        assert_eq!(c.jobs[3].when, event(EventCode::Stopped, "app", false));
        assert_eq!(
            c.jobs[3].exec,
            Some(strings(&["/bin/notify.sh", "stopped"]))
        );
    }

    #[test]
    fn fixture_stopping() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-stopping.json5"
        ));
        let queue = &c.jobs[0];
        assert_eq!(queue.stop_timeout, Some(secs(15)));
        assert_eq!(queue.interfaces, strings(&["lo"]));
        assert_eq!(queue.ip, Some(LOOPBACK));
        assert_eq!(queue.health.as_ref().map(|h| h.ttl), Some(9));
        assert_eq!(c.jobs[1].when, event(EventCode::Stopping, "queue", false));
        // no consul key: runs without a catalog (SPEC §2.10)
        assert_eq!(c.consul, None);
    }

    #[test]
    fn fixture_health_timeout() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-health-timeout.json5"
        ));
        let timeouts: Vec<Duration> = c
            .jobs
            .iter()
            .filter_map(|j| j.health.as_ref().map(|h| h.timeout))
            .collect();
        assert_eq!(timeouts, [secs(5), secs(30)]);
    }

    #[test]
    fn fixture_array_exec() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-array-exec.json5"
        ));
        let mut cache = base_job(
            "cache",
            &[
                "/usr/bin/cache-server",
                "--port",
                "6379",
                "--protected",
                "false",
            ],
            4,
        );
        cache.port = 6379;
        cache.interfaces = strings(&["ethwe", "eth0", "inet", "lo"]);
        cache.ip = Some(LAN);
        cache.health = Some(HealthConfig {
            exec: Some(strings(&["/usr/bin/cache-cli", "ping"])),
            interval: secs(4),
            ttl: 12,
            timeout: Duration::from_millis(1500),
            raw: true,
        });
        cache.raw = true;
        assert_eq!(c.jobs, [cache]);
    }

    #[test]
    fn fixture_non_advertised() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-non-advertised.json5"
        ));
        let mut shipper = base_job("log_shipper", &["/bin/ship-logs"], 5);
        shipper.restarts = Restarts::Unlimited;
        assert_eq!(c.jobs, [shipper]);
    }

    #[test]
    fn fixture_initial_status() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-initial-status.json5"
        ));
        assert_eq!(c.jobs[0].initial_status, Some(CheckStatus::Warning));
        assert_eq!(c.jobs[0].ip, Some(LOOPBACK));
        assert_eq!(c.jobs[1].initial_status, None);
    }

    #[test]
    fn fixture_periodic_task() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-periodic-task.json5"
        ));
        let mut tick = base_job("tick", &["/bin/tick"], 4);
        tick.when.trigger = Trigger::Interval(secs(1));
        tick.timeout = Some(secs(1));
        tick.restarts = Restarts::Unlimited;
        assert_eq!(c.jobs, [tick]);
    }

    #[test]
    fn fixture_consul_extras() {
        let c = load(include_str!(
            "../../tests/fixtures/config/job-consul-extras.json5"
        ));
        assert_eq!(
            c.jobs[0].consul,
            Some(JobConsulExtras {
                enable_tag_override: true,
                deregister_critical_service_after: Some("10m".into()),
            })
        );
        let consul = c
            .consul
            .as_ref()
            .map(|c| (c.address.as_str(), c.scheme.as_str()));
        assert_eq!(consul, Some(("consul:8500", "http")));
    }

    #[test]
    fn fixture_smoke_test() {
        let c = load(include_str!("../../tests/fixtures/config/smoke.json5"));
        assert_eq!(c.jobs.len(), 9);
        assert_eq!(c.telemetry, None);
        let triggers: Vec<(&str, &Trigger)> = c
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), &j.when.trigger))
            .collect();
        let ev = |code, source: &str, each| Trigger::Event {
            code,
            source: source.to_string(),
            each,
        };
        assert_eq!(
            triggers,
            [
                ("frontend", &ev(EventCode::ExitSuccess, "bootstrap", false)),
                ("backend", &Trigger::Startup),
                ("helper", &Trigger::Startup),
                ("every-second", &Trigger::Interval(secs(1))),
                ("bootstrap", &Trigger::Startup),
                ("pre-stop", &ev(EventCode::Stopping, "frontend", false)),
                ("post-stop", &ev(EventCode::Stopped, "frontend", false)),
                ("reload-on-hup", &Trigger::Signal(SignalName::Sighup)),
                ("dump-on-usr2", &Trigger::Signal(SignalName::Sigusr2)),
            ]
        );
        assert_eq!(job(&c, "frontend").ip, Some(LOOPBACK));
        assert_eq!(job(&c, "backend").health.as_ref().map(|h| h.ttl), Some(103));
        assert_eq!(job(&c, "dump-on-usr2").restarts, Restarts::Count(2));
        assert_eq!(job(&c, "helper").restarts, Restarts::Unlimited);
    }

    #[test]
    fn fixture_telemetry() {
        let c = load(include_str!("../../tests/fixtures/config/telemetry.json5"));
        let t = c.telemetry.as_ref().expect("telemetry");
        assert_eq!(t.port, 8000);
        assert_eq!(t.metrics.len(), 1);
        assert_eq!(t.metrics[0].kind, MetricKind::Counter);
        assert_eq!(t.metrics[0].full_name(), "telemetry_requests_handled_total");
        assert_eq!(c.jobs.len(), 1);
        let cp = &c.jobs[0];
        assert_eq!(
            (cp.name.as_str(), cp.port, cp.ip),
            ("containerpilot", 8000, Some(LAN))
        );
        assert_eq!(cp.tags, vec!["dev".to_string(), version_tag()]);
        assert_eq!(cp.line, 3);
    }

    #[test]
    fn fixture_watches() {
        let c = load(include_str!("../../tests/fixtures/config/watches.json5"));
        assert_eq!(
            c.watches,
            [
                WatchConfig {
                    name: "payments".into(),
                    interval: secs(10),
                    tag: Some("blue".into()),
                    dc: None,
                },
                WatchConfig {
                    name: "inventory".into(),
                    interval: secs(20),
                    tag: None,
                    dc: Some("east-2".into()),
                },
            ]
        );
    }

    /// Every file under invalid/ gives exactly one error, matching its
    /// `// expect: <path>: <message>` first line: the message exactly, or as a
    /// prefix when the header ends with ':' (the rest comes from a sibling module).
    #[test]
    fn invalid_fixtures() {
        let fixtures: &[(&str, &str)] = &[
            (
                "top-level-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/top-level-unknown-key.json5"),
            ),
            (
                "consul-type",
                include_str!("../../tests/fixtures/config/invalid/consul-type.json5"),
            ),
            (
                "consul-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/consul-unknown-key.json5"),
            ),
            (
                "consul-scheme",
                include_str!("../../tests/fixtures/config/invalid/consul-scheme.json5"),
            ),
            (
                "consul-tls-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/consul-tls-unknown-key.json5"),
            ),
            (
                "consul-tls-verify",
                include_str!("../../tests/fixtures/config/invalid/consul-tls-verify.json5"),
            ),
            (
                "etcd-with-consul",
                include_str!("../../tests/fixtures/config/invalid/etcd-with-consul.json5"),
            ),
            (
                "etcd-type",
                include_str!("../../tests/fixtures/config/invalid/etcd-type.json5"),
            ),
            (
                "etcd-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/etcd-unknown-key.json5"),
            ),
            (
                "etcd-endpoint-scheme",
                include_str!("../../tests/fixtures/config/invalid/etcd-endpoint-scheme.json5"),
            ),
            (
                "etcd-endpoint-path",
                include_str!("../../tests/fixtures/config/invalid/etcd-endpoint-path.json5"),
            ),
            (
                "etcd-password-missing",
                include_str!("../../tests/fixtures/config/invalid/etcd-password-missing.json5"),
            ),
            (
                "etcd-tls-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/etcd-tls-unknown-key.json5"),
            ),
            (
                "etcd-watch-dc",
                include_str!("../../tests/fixtures/config/invalid/etcd-watch-dc.json5"),
            ),
            (
                "logging-level",
                include_str!("../../tests/fixtures/config/invalid/logging-level.json5"),
            ),
            (
                "logging-format",
                include_str!("../../tests/fixtures/config/invalid/logging-format.json5"),
            ),
            (
                "logging-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/logging-unknown-key.json5"),
            ),
            (
                "logging-type",
                include_str!("../../tests/fixtures/config/invalid/logging-type.json5"),
            ),
            (
                "stop-timeout-unit",
                include_str!("../../tests/fixtures/config/invalid/stop-timeout-unit.json5"),
            ),
            (
                "control-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/control-unknown-key.json5"),
            ),
            (
                "control-socket-empty",
                include_str!("../../tests/fixtures/config/invalid/control-socket-empty.json5"),
            ),
            (
                "control-mode-symbolic",
                include_str!("../../tests/fixtures/config/invalid/control-mode-symbolic.json5"),
            ),
            (
                "control-mode-too-large",
                include_str!("../../tests/fixtures/config/invalid/control-mode-too-large.json5"),
            ),
            (
                "jobs-type",
                include_str!("../../tests/fixtures/config/invalid/jobs-type.json5"),
            ),
            (
                "job-type",
                include_str!("../../tests/fixtures/config/invalid/job-type.json5"),
            ),
            (
                "job-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/job-unknown-key.json5"),
            ),
            (
                "job-initialStatus-spelling",
                include_str!(
                    "../../tests/fixtures/config/invalid/job-initialStatus-spelling.json5"
                ),
            ),
            (
                "job-key-case-clash",
                include_str!("../../tests/fixtures/config/invalid/job-key-case-clash.json5"),
            ),
            (
                "job-name-blank",
                include_str!("../../tests/fixtures/config/invalid/job-name-blank.json5"),
            ),
            (
                "job-name-missing",
                include_str!("../../tests/fixtures/config/invalid/job-name-missing.json5"),
            ),
            (
                "job-name-pattern",
                include_str!("../../tests/fixtures/config/invalid/job-name-pattern.json5"),
            ),
            (
                "job-name-reserved",
                include_str!("../../tests/fixtures/config/invalid/job-name-reserved.json5"),
            ),
            (
                "job-name-duplicate",
                include_str!("../../tests/fixtures/config/invalid/job-name-duplicate.json5"),
            ),
            (
                "job-exec-empty-string",
                include_str!("../../tests/fixtures/config/invalid/job-exec-empty-string.json5"),
            ),
            (
                "job-exec-empty-array",
                include_str!("../../tests/fixtures/config/invalid/job-exec-empty-array.json5"),
            ),
            (
                "job-exec-type",
                include_str!("../../tests/fixtures/config/invalid/job-exec-type.json5"),
            ),
            (
                "job-exec-element",
                include_str!("../../tests/fixtures/config/invalid/job-exec-element.json5"),
            ),
            (
                "job-port-without-health",
                include_str!("../../tests/fixtures/config/invalid/job-port-without-health.json5"),
            ),
            (
                "job-port-range",
                include_str!("../../tests/fixtures/config/invalid/job-port-range.json5"),
            ),
            (
                "job-port-type",
                include_str!("../../tests/fixtures/config/invalid/job-port-type.json5"),
            ),
            (
                "job-initial-status",
                include_str!("../../tests/fixtures/config/invalid/job-initial-status.json5"),
            ),
            (
                "job-interfaces-type",
                include_str!("../../tests/fixtures/config/invalid/job-interfaces-type.json5"),
            ),
            (
                "job-interfaces-unresolvable",
                include_str!(
                    "../../tests/fixtures/config/invalid/job-interfaces-unresolvable.json5"
                ),
            ),
            (
                "job-tags-type",
                include_str!("../../tests/fixtures/config/invalid/job-tags-type.json5"),
            ),
            (
                "job-consul-enable-tag-override",
                include_str!(
                    "../../tests/fixtures/config/invalid/job-consul-enable-tag-override.json5"
                ),
            ),
            (
                "job-consul-deregister",
                include_str!("../../tests/fixtures/config/invalid/job-consul-deregister.json5"),
            ),
            (
                "job-consul-deregister-unitless",
                include_str!(
                    "../../tests/fixtures/config/invalid/job-consul-deregister-unitless.json5"
                ),
            ),
            (
                "job-consul-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/job-consul-unknown-key.json5"),
            ),
            (
                "health-type",
                include_str!("../../tests/fixtures/config/invalid/health-type.json5"),
            ),
            (
                "health-interval-missing",
                include_str!("../../tests/fixtures/config/invalid/health-interval-missing.json5"),
            ),
            (
                "health-ttl-zero",
                include_str!("../../tests/fixtures/config/invalid/health-ttl-zero.json5"),
            ),
            (
                "health-timeout",
                include_str!("../../tests/fixtures/config/invalid/health-timeout.json5"),
            ),
            (
                "health-exec-empty",
                include_str!("../../tests/fixtures/config/invalid/health-exec-empty.json5"),
            ),
            (
                "health-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/health-unknown-key.json5"),
            ),
            (
                "health-logging-raw",
                include_str!("../../tests/fixtures/config/invalid/health-logging-raw.json5"),
            ),
            (
                "when-two-triggers",
                include_str!("../../tests/fixtures/config/invalid/when-two-triggers.json5"),
            ),
            (
                "when-interval-small",
                include_str!("../../tests/fixtures/config/invalid/when-interval-small.json5"),
            ),
            (
                "when-interval-parse",
                include_str!("../../tests/fixtures/config/invalid/when-interval-parse.json5"),
            ),
            (
                "when-once-event",
                include_str!("../../tests/fixtures/config/invalid/when-once-event.json5"),
            ),
            (
                "when-each-event-case",
                include_str!("../../tests/fixtures/config/invalid/when-each-event-case.json5"),
            ),
            (
                "when-timeout",
                include_str!("../../tests/fixtures/config/invalid/when-timeout.json5"),
            ),
            (
                "when-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/when-unknown-key.json5"),
            ),
            (
                "job-timeout-zero",
                include_str!("../../tests/fixtures/config/invalid/job-timeout-zero.json5"),
            ),
            (
                "job-timeout-float",
                include_str!("../../tests/fixtures/config/invalid/job-timeout-float.json5"),
            ),
            (
                "restarts-word",
                include_str!("../../tests/fixtures/config/invalid/restarts-word.json5"),
            ),
            (
                "restarts-negative-string",
                include_str!("../../tests/fixtures/config/invalid/restarts-negative-string.json5"),
            ),
            (
                "restarts-negative-number",
                include_str!("../../tests/fixtures/config/invalid/restarts-negative-number.json5"),
            ),
            (
                "restarts-unlimited-each",
                include_str!("../../tests/fixtures/config/invalid/restarts-unlimited-each.json5"),
            ),
            (
                "restarts-bool",
                include_str!("../../tests/fixtures/config/invalid/restarts-bool.json5"),
            ),
            (
                "job-stop-timeout",
                include_str!("../../tests/fixtures/config/invalid/job-stop-timeout.json5"),
            ),
            (
                "job-logging-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/job-logging-unknown-key.json5"),
            ),
            (
                "watches-type",
                include_str!("../../tests/fixtures/config/invalid/watches-type.json5"),
            ),
            (
                "watch-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/watch-unknown-key.json5"),
            ),
            (
                "watch-name-blank",
                include_str!("../../tests/fixtures/config/invalid/watch-name-blank.json5"),
            ),
            (
                "watch-name-pattern",
                include_str!("../../tests/fixtures/config/invalid/watch-name-pattern.json5"),
            ),
            (
                "watch-name-duplicate",
                include_str!("../../tests/fixtures/config/invalid/watch-name-duplicate.json5"),
            ),
            (
                "watch-interval-missing",
                include_str!("../../tests/fixtures/config/invalid/watch-interval-missing.json5"),
            ),
            (
                "watch-interval-unit",
                include_str!("../../tests/fixtures/config/invalid/watch-interval-unit.json5"),
            ),
            (
                "telemetry-type",
                include_str!("../../tests/fixtures/config/invalid/telemetry-type.json5"),
            ),
            (
                "telemetry-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/telemetry-unknown-key.json5"),
            ),
            (
                "telemetry-port",
                include_str!("../../tests/fixtures/config/invalid/telemetry-port.json5"),
            ),
            (
                "telemetry-interfaces-type",
                include_str!("../../tests/fixtures/config/invalid/telemetry-interfaces-type.json5"),
            ),
            (
                "telemetry-tags-type",
                include_str!("../../tests/fixtures/config/invalid/telemetry-tags-type.json5"),
            ),
            (
                "telemetry-metrics-type",
                include_str!("../../tests/fixtures/config/invalid/telemetry-metrics-type.json5"),
            ),
            (
                "metric-type",
                include_str!("../../tests/fixtures/config/invalid/metric-type.json5"),
            ),
            (
                "metric-type-missing",
                include_str!("../../tests/fixtures/config/invalid/metric-type-missing.json5"),
            ),
            (
                "metric-name",
                include_str!("../../tests/fixtures/config/invalid/metric-name.json5"),
            ),
            (
                "metric-unknown-key",
                include_str!("../../tests/fixtures/config/invalid/metric-unknown-key.json5"),
            ),
        ];
        assert!(fixtures.len() >= 45);
        for (name, src) in fixtures {
            let header = src.lines().next().unwrap_or_default();
            let expect = header
                .strip_prefix("// expect: ")
                .unwrap_or_else(|| panic!("{name}: bad header {header:?}"));
            let (path, msg) = expect
                .split_once(": ")
                .or_else(|| expect.strip_suffix(':').map(|p| (p, "")))
                .unwrap_or_else(|| panic!("{name}: bad header {header:?}"));
            let errs = match load_with(src, &[]) {
                Ok(_) => panic!("{name}: no error"),
                Err(errs) => errs,
            };
            assert_eq!(errs.len(), 1, "{name}: {errs:#?}");
            let e = &errs[0];
            assert_eq!(e.path, path, "{name}");
            if msg.is_empty() || msg.ends_with(':') {
                assert!(e.msg.starts_with(msg), "{name}: {}", e.msg);
            } else {
                assert_eq!(e.msg, msg, "{name}");
            }
            assert!(e.line.is_some_and(|l| l > 1), "{name}: {e:?}");
            let shown = e.to_string();
            assert!(shown.contains(expect), "{name}: {shown}");
        }
    }

    // ----- reporting -----

    #[test]
    fn every_error_is_reported_with_line_and_path() {
        let src = r#"{
  consul: "consul:8500",
  bogus: 1,
  logging: { level: "chatty" },
  jobs: [
    { name: "", exec: "" },
    null,
    {
      name: "web",
      port: 80,
      interfaces: ["inet"],
      health: { interval: 0, ttl: 5 },
      when: { interval: "0s" },
      restarts: "lots",
    },
  ],
  watches: [ { name: "x" } ],
}"#;
        assert_eq!(
            errors(src),
            [
                "line 3: unknown config keys: [bogus]",
                "line 4: logging.level: unknown log level 'chatty' (use debug, info, warn, error, fatal or panic)",
                "line 6: jobs[0].name: must not be blank",
                "line 6: jobs[0].exec: received zero-length argument",
                "line 12: jobs[2].health.interval: must be > 0",
                "line 13: jobs[2].when.interval: cannot be less than 1ms",
                "line 14: jobs[2].restarts: 'lots' invalid: accepts positive integers, \"unlimited\", or \"never\"",
                "line 17: watches[0].name: service names must be alphanumeric with dashes to comply with service discovery",
                "line 17: watches[0].interval: must be > 0",
            ]
        );
    }

    #[test]
    fn display_without_line_or_path() {
        let e = ConfigError {
            path: "jobs[1].when.interval".into(),
            line: Some(12),
            msg: "cannot be less than 1ms".into(),
        };
        assert_eq!(
            e.to_string(),
            "line 12: jobs[1].when.interval: cannot be less than 1ms"
        );
        let e = ConfigError {
            path: String::new(),
            line: None,
            msg: "oops".into(),
        };
        assert_eq!(e.to_string(), "oops");
    }

    #[test]
    fn unknown_keys_are_sorted_and_point_at_the_first() {
        assert_eq!(
            errors("{\n  jobs: [{\n    name: 'a',\n    zeta: 1,\n    alpha: 2,\n  }],\n  x: 1,\n  b: 2,\n}"),
            [
                "line 7: unknown config keys: [b x]",
                "line 4: jobs[0]: has invalid keys: alpha, zeta",
            ]
        );
    }

    // ----- defaults, weak typing, key matching -----

    #[test]
    fn empty_config_gets_all_defaults() {
        let c = load("{}");
        assert_eq!(
            c,
            Config {
                consul: None,
                etcd: None,
                logging: LoggingConfig::default(),
                stop_timeout: secs(5),
                jobs: Vec::new(),
                watches: Vec::new(),
                telemetry: None,
                control: ControlConfig::default(),
                compat: Compat::V3,
                exit_policy: None,
            }
        );
    }

    #[test]
    fn nulls_keep_defaults_and_null_entries_are_dropped() {
        let c = load(
            "{consul: null, logging: null, stopTimeout: null, control: {socket: null},
              jobs: [null, {name: 'a', exec: null, port: null, when: null, restarts: null}],
              watches: [null], telemetry: null}",
        );
        assert_eq!(c.consul, None);
        assert_eq!(c.stop_timeout, secs(5));
        assert_eq!(c.control, ControlConfig::default());
        let mut a = base_job("a", &[], 2);
        a.exec = None;
        assert_eq!(c.jobs, [a]);
        assert!(c.watches.is_empty());
        // indices in paths count the dropped entries
        assert_eq!(
            errors("{jobs: [null, {name: ''}]}"),
            ["line 1: jobs[1].name: must not be blank"]
        );
    }

    #[test]
    fn keys_inside_sections_match_case_insensitively() {
        let c = load(
            "{jobs: [{NAME: 'a', Exec: 'x', When: {Interval: '5s'}, RESTARTS: 2, StopTimeout: 3}],
              logging: {LEVEL: 'warning'}}",
        );
        let a = &c.jobs[0];
        assert_eq!(a.exec, Some(strings(&["x"])));
        assert_eq!(a.when.trigger, Trigger::Interval(secs(5)));
        assert_eq!(a.restarts, Restarts::Count(2));
        assert_eq!(a.stop_timeout, Some(secs(3)));
        assert_eq!(c.logging.level, LogLevel::Warn);
        // top-level keys are exact-case
        assert_eq!(
            errors("{Jobs: []}"),
            ["line 1: unknown config keys: [Jobs]"]
        );
    }

    #[test]
    fn weak_typing() {
        let c = load(
            "{stopTimeout: '0x0A', jobs: [
               {name: 'web', port: '0x1F90', interfaces: 'inet', exec: 'x',
                health: {interval: 2.9, ttl: true, timeout: 7}, logging: {raw: 1},
                tags: [1, 2.5, false]},
               {name: 'b', port: false, restarts: 1.9, logging: {raw: 'T'}},
               {name: 7, timeout: 12},
            ]}",
        );
        assert_eq!(c.stop_timeout, secs(10));
        let web = &c.jobs[0];
        assert_eq!(web.port, 8080);
        assert_eq!(web.tags, strings(&["1", "2.5", "0"]));
        assert!(web.raw);
        let h = web.health.as_ref().expect("health");
        assert_eq!((h.interval, h.ttl, h.timeout), (secs(2), 1, secs(7)));
        assert_eq!(
            (c.jobs[1].port, c.jobs[1].restarts, c.jobs[1].raw),
            (0, Restarts::Count(1), true)
        );
        assert_eq!(
            (c.jobs[2].name.as_str(), c.jobs[2].timeout),
            ("7", Some(secs(12)))
        );
        // Go's ParseInt base 0: a leading 0 is octal
        assert_eq!(load("{stopTimeout: '010'}").stop_timeout, secs(8));
        assert_eq!(load("{stopTimeout: '-0b11'}").stop_timeout, Duration::ZERO);
    }

    #[test]
    fn weak_typing_errors() {
        assert_eq!(
            errors("{jobs: [{name: ['a'], port: 1e30, logging: {raw: 'nah'}}]}"),
            [
                "line 1: jobs[0].name: expected a string, got an array",
                "line 1: jobs[0].port: number 1000000000000000000000000000000 is not a usable integer",
                "line 1: jobs[0].logging.raw: cannot parse 'nah' as a boolean",
            ]
        );
        assert_eq!(
            errors("{jobs: [{name: 'a', port: {}}]}"),
            ["line 1: jobs[0].port: expected an integer, got an object"]
        );
        assert_eq!(
            errors("{jobs: [{name: 'a', port: NaN}]}"),
            ["line 1: jobs[0].port: number NaN is not a usable integer"]
        );
        assert_eq!(
            errors("{jobs: [{name: 'a', logging: {raw: []}}]}"),
            ["line 1: jobs[0].logging.raw: expected a boolean, got an array"]
        );
    }

    #[test]
    fn go_number_and_bool_helpers() {
        assert_eq!(format_number(5.0), "5");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(-0.25), "-0.25");
        assert_eq!(format_number(f64::INFINITY), "+Inf");
        assert_eq!(parse_go_int("0x_1F"), Some(31));
        assert_eq!(parse_go_int("1_000"), None);
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("+42"), Some(42));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int("-"), None);
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("F"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert!(is_service_name("myService"));
        assert!(is_service_name("my-service-123"));
        for bad in [
            "my_service",
            "-my-service",
            "my%service",
            "a",
            "Ab",
            "9a",
            "",
        ] {
            assert!(!is_service_name(bad), "{bad}");
        }
        assert!(is_metric_name("a:b_c9"));
        assert!(is_metric_name("_x"));
        assert!(!is_metric_name("9x"));
        assert!(!is_metric_name(""));
    }

    // ----- etcd -----

    fn etcd_of(src: &str, vars: &[(&str, &str)]) -> EtcdConfig {
        match load_with(src, vars) {
            Ok(c) => c.etcd.expect("etcd section"),
            Err(errs) => panic!("unexpected errors: {errs:#?}"),
        }
    }

    #[test]
    fn etcd_defaults() {
        let e = etcd_of("{etcd: {}}", &[]);
        assert_eq!(
            e,
            EtcdConfig {
                endpoints: strings(&["http://127.0.0.1:2379"]),
                prefix: "/containerpilot".into(),
                username: None,
                password: None,
                tls: TlsConfig::default(),
            }
        );
        assert_eq!(load("{etcd: {}}").consul, None);
        assert_eq!(load("{consul: 'c:1'}").etcd, None);
        assert_eq!(load("{etcd: null}").etcd, None);
    }

    #[test]
    fn etcd_full_object() {
        let e = etcd_of(
            "{etcd: {Endpoints: ['http://e1:2379', 'https://e2:2379/', 'e3:2379'],
                     prefix: '/cp/prod/', username: 'cp', password: 'pw',
                     tls: {cafile: '/ca.pem', clientcert: '/c.pem', clientkey: '/k.pem', verify: 'false'}}}",
            &[],
        );
        assert_eq!(
            e,
            EtcdConfig {
                endpoints: strings(&["http://e1:2379", "https://e2:2379", "http://e3:2379"]),
                prefix: "/cp/prod".into(),
                username: Some("cp".into()),
                password: Some("pw".into()),
                tls: TlsConfig {
                    cafile: Some("/ca.pem".into()),
                    capath: None,
                    clientcert: Some("/c.pem".into()),
                    clientkey: Some("/k.pem".into()),
                    servername: None,
                    verify: Some(false),
                },
            }
        );
        // a single string is one endpoint; "/" puts the keys at the root
        let e = etcd_of("{etcd: {endpoints: 'http://solo:4001', prefix: '/'}}", &[]);
        assert_eq!(e.endpoints, strings(&["http://solo:4001"]));
        assert_eq!(e.prefix, "");
    }

    #[test]
    fn etcd_endpoints_env_override() {
        let vars = [("ETCD_ENDPOINTS", "http://a:1, b:2,,https://c:3")];
        let e = etcd_of("{etcd: {endpoints: ['http://file:2379']}}", &vars);
        assert_eq!(
            e.endpoints,
            strings(&["http://a:1", "http://b:2", "https://c:3"])
        );
        // empty variable: the file's list stays
        let e = etcd_of(
            "{etcd: {endpoints: ['http://file:2379']}}",
            &[("ETCD_ENDPOINTS", "")],
        );
        assert_eq!(e.endpoints, strings(&["http://file:2379"]));
        // the variable alone never creates an etcd section
        let c = load_with("{}", &vars).expect("loads");
        assert_eq!(c.etcd, None);
        let errs = match load_with("{\netcd: {}}", &[("ETCD_ENDPOINTS", "ftp://x")]) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        assert_eq!(
            errs,
            ["line 2: etcd.endpoints[0]: 'ftp://x' must be an http:// or https:// URL (from ETCD_ENDPOINTS)"]
        );
    }

    #[test]
    fn etcd_errors_all_reported() {
        assert_eq!(
            errors(
                "{etcd: {endpoints: ['http://a b:1', 'https://'], password: 'pw', tls: 3},
                  watches: [{name: 'db', interval: 2, dc: 'x'}, {name: 'web', interval: 2}]}"
            ),
            [
                "line 1: etcd.endpoints[0]: 'http://a b:1' is not a valid endpoint (want scheme://host:port)",
                "line 1: etcd.endpoints[1]: 'https://' is not a valid endpoint (want scheme://host:port)",
                "line 1: etcd.username: must be set when 'password' is set",
                "line 1: etcd.tls: expected an object, got a number",
                "line 2: watches[0].dc: 'dc' is a Consul datacenter and does not apply to etcd; remove it",
            ]
        );
        // with Consul, dc stays valid
        let c = load("{consul: 'c:1', watches: [{name: 'db', interval: 2, dc: 'x'}]}");
        assert_eq!(c.watches[0].dc.as_deref(), Some("x"));
    }

    #[test]
    fn etcd_endpoint_forms() {
        assert_eq!(etcd_endpoint("http://h:1"), Ok("http://h:1".to_string()));
        assert_eq!(
            etcd_endpoint(" https://h:1/ "),
            Ok("https://h:1".to_string())
        );
        assert_eq!(etcd_endpoint("h:1"), Ok("http://h:1".to_string()));
        assert_eq!(
            etcd_endpoint("unix://sock"),
            Err("'unix://sock' must be an http:// or https:// URL".to_string())
        );
        assert_eq!(
            etcd_endpoint(""),
            Err("'' is not a valid endpoint (want scheme://host:port)".to_string())
        );
    }

    // ----- consul -----

    #[test]
    fn consul_string_forms() {
        let consul = |src: &str, vars: &[(&str, &str)]| match load_with(src, vars) {
            Ok(c) => c.consul.map(|c| (c.address, c.scheme)),
            Err(e) => panic!("{e:?}"),
        };
        let pair = |a: &str, s: &str| Some((a.to_string(), s.to_string()));
        assert_eq!(
            consul("{consul: 'consul:8500'}", &[]),
            pair("consul:8500", "http")
        );
        assert_eq!(
            consul("{consul: 'https://c:8501'}", &[]),
            pair("c:8501", "https")
        );
        assert_eq!(consul("{consul: 'http://c:80'}", &[]), pair("c:80", "http"));
        assert_eq!(consul("{consul: ''}", &[]), pair("127.0.0.1:8500", "http"));
        assert_eq!(consul("{consul: {}}", &[]), pair("127.0.0.1:8500", "http"));
        // malformed addresses pass through untouched
        assert_eq!(
            consul("{consul: 'tcp://x y'}", &[]),
            pair("tcp://x y", "http")
        );
        let vars = [("CONSUL_HTTP_ADDR", "https://agent:8501")];
        assert_eq!(consul("{consul: ''}", &vars), pair("agent:8501", "https"));
        // the environment only fills what the config left empty
        assert_eq!(consul("{consul: 'c:1'}", &vars), pair("c:1", "http"));
        let ssl = [("CONSUL_HTTP_SSL", "true")];
        assert_eq!(consul("{consul: 'c:1'}", &ssl), pair("c:1", "https"));
        assert_eq!(consul("{consul: 'http://c:1'}", &ssl), pair("c:1", "http"));
        assert_eq!(
            consul("{consul: {address: 'c:1', scheme: 'HTTPS'}}", &[]),
            pair("c:1", "https")
        );
    }

    #[test]
    fn consul_object_form_and_env_overrides() {
        let src = "{consul: {address: 'c:8500', token: 'file-token',
                    tls: {cafile: '/ca', capath: '', clientcert: '/cert', verify: true}}}";
        let c = load_with(src, &[])
            .ok()
            .and_then(|c| c.consul)
            .expect("consul");
        assert_eq!(c.token.as_deref(), Some("file-token"));
        assert_eq!(
            c.tls,
            TlsConfig {
                cafile: Some("/ca".into()),
                capath: None,
                clientcert: Some("/cert".into()),
                clientkey: None,
                servername: None,
                verify: Some(true),
            }
        );
        let vars = [
            ("CONSUL_HTTP_TOKEN", "env-token"),
            ("CONSUL_CACERT", "/env-ca"),
            ("CONSUL_CAPATH", "/env-capath"),
            ("CONSUL_CLIENT_CERT", ""),
            ("CONSUL_CLIENT_KEY", "/env-key"),
            ("CONSUL_TLS_SERVER_NAME", "consul.local"),
            ("CONSUL_HTTP_SSL_VERIFY", "FALSE"),
        ];
        let c = load_with(src, &vars)
            .ok()
            .and_then(|c| c.consul)
            .expect("consul");
        assert_eq!(c.token.as_deref(), Some("env-token"));
        assert_eq!(
            c.tls,
            TlsConfig {
                cafile: Some("/env-ca".into()),
                capath: Some("/env-capath".into()),
                clientcert: Some("/cert".into()),
                clientkey: Some("/env-key".into()),
                servername: Some("consul.local".into()),
                verify: Some(false),
            }
        );
        // overrides apply to the string form too; unknown verify values are ignored
        let vars = [("CONSUL_HTTP_TOKEN", "t"), ("CONSUL_HTTP_SSL_VERIFY", "1")];
        let c = load_with("{consul: 'c:1'}", &vars)
            .ok()
            .and_then(|c| c.consul)
            .expect("consul");
        assert_eq!((c.token.as_deref(), c.tls.verify), (Some("t"), Some(true)));
        let vars = [("CONSUL_HTTP_SSL_VERIFY", "maybe")];
        let c = load_with("{consul: 'c:1'}", &vars)
            .ok()
            .and_then(|c| c.consul)
            .expect("consul");
        assert_eq!((c.token, c.tls.verify), (None, None));
    }

    // ----- top-level scalars and small sections -----

    #[test]
    fn stop_timeout_values() {
        assert_eq!(load("{stopTimeout: 0}").stop_timeout, secs(5));
        assert_eq!(load("{stopTimeout: 12}").stop_timeout, secs(12));
        assert_eq!(load("{stopTimeout: '3'}").stop_timeout, secs(3));
        assert_eq!(load("{stopTimeout: -1}").stop_timeout, Duration::ZERO);
        assert_eq!(load("{stopTimeout: 2.7}").stop_timeout, secs(2));
    }

    #[test]
    fn control_values() {
        let c = load("{control: {socket: '/run/cp.sock', mode: '600'}}");
        assert_eq!(c.control.socket, PathBuf::from("/run/cp.sock"));
        assert_eq!(c.control.mode, 0o600);
        assert_eq!(load("{control: {mode: '0777'}}").control.mode, 0o777);
        assert_eq!(load("{control: {mode: 640}}").control.mode, 0o640);
        assert_eq!(load("{control: {}}").control, ControlConfig::default());
        assert_eq!(
            errors("{control: {mode: '0689'}}"),
            ["line 1: control.mode: invalid mode '0689': must be octal digits no greater than 0777, like \"0660\""]
        );
    }

    #[test]
    fn logging_values() {
        let c = load("{logging: {level: 'Error', format: 'TEXT', output: 'STDOUT'}}");
        assert_eq!(
            c.logging,
            LoggingConfig {
                level: LogLevel::Error,
                format: LogFormat::Text,
                output: LogOutput::Stdout,
            }
        );
        let c = load("{logging: {level: 'panic', output: '/var/log/Cp.log', format: ''}}");
        assert_eq!(c.logging.level, LogLevel::Panic);
        assert_eq!(c.logging.format, LogFormat::Default);
        assert_eq!(
            c.logging.output,
            LogOutput::File(PathBuf::from("/var/log/Cp.log"))
        );
        assert_eq!(
            load("{logging: {level: 'fatal'}}").logging.level,
            LogLevel::Fatal
        );
        assert_eq!(
            load("{logging: {level: 'warn'}}").logging.level,
            LogLevel::Warn
        );
    }

    // ----- jobs -----

    #[test]
    fn exec_string_splits_on_single_spaces() {
        let c = load("{jobs: [{name: 'a', exec: '  /bin/x  a  b '}]}");
        assert_eq!(c.jobs[0].exec, Some(strings(&["/bin/x", "", "a", "", "b"])));
    }

    #[test]
    fn restarts_table() {
        let cases: &[(&str, Restarts)] = &[
            ("'unlimited'", Restarts::Unlimited),
            ("'never'", Restarts::Count(0)),
            ("1", Restarts::Count(1)),
            ("'1'", Restarts::Count(1)),
            ("0", Restarts::Count(0)),
            ("'0'", Restarts::Count(0)),
            ("'+3'", Restarts::Count(3)),
            ("1.9", Restarts::Count(1)),
            ("1e12", Restarts::Count(u32::MAX)),
            ("null", Restarts::Count(0)),
        ];
        for (value, expected) in cases {
            let c = load(&format!("{{jobs: [{{name: 'a', restarts: {value}}}]}}"));
            assert_eq!(c.jobs[0].restarts, *expected, "restarts: {value}");
        }
        // a number next to `each` is fine, and so is "unlimited" next to `once`
        let c = load("{jobs: [{name: 'a', restarts: 3, when: {source: 'b', each: 'healthy'}}]}");
        assert_eq!(c.jobs[0].restarts, Restarts::Count(3));
        let c = load(
            "{jobs: [{name: 'a', restarts: 'unlimited', when: {source: 'b', once: 'healthy'}}]}",
        );
        assert_eq!(c.jobs[0].restarts, Restarts::Unlimited);
        // interval jobs keep an explicit budget
        let c = load("{jobs: [{name: 'a', restarts: 5, when: {interval: '500ms'}}]}");
        assert_eq!(c.jobs[0].restarts, Restarts::Count(5));
        assert_eq!(
            errors("{jobs: [{name: 'a', restarts: [1]}]}"),
            ["line 1: jobs[0].restarts: '[1]' invalid: accepts positive integers, \"unlimited\", or \"never\""]
        );
    }

    #[test]
    fn when_semantics() {
        let when = |w: &str| {
            load(&format!("{{jobs: [{{name: 'a', when: {w}}}]}}")).jobs[0]
                .when
                .clone()
        };
        assert_eq!(
            when("{}"),
            WhenConfig {
                trigger: Trigger::Never,
                timeout: None,
            }
        );
        assert_eq!(when("{source: 'b'}").trigger, Trigger::Never);
        assert_eq!(
            when("{source: 'b', once: 'healthy', timeout: '90s'}"),
            WhenConfig {
                trigger: Trigger::Event {
                    code: EventCode::StatusHealthy,
                    source: "b".into(),
                    each: false,
                },
                timeout: Some(secs(90)),
            }
        );
        assert_eq!(
            when("{source: 'b', once: 'healthy', timeout: '0'}").timeout,
            None
        );
        assert_eq!(
            when("{source: 'b', once: 'healthy', timeout: '-5s'}").timeout,
            None
        );
        assert_eq!(
            when("{source: 'b', once: 'healthy', timeout: ''}").timeout,
            None
        );
        assert_eq!(
            when("{once: 'startup'}").trigger,
            Trigger::Event {
                code: EventCode::Startup,
                source: String::new(),
                each: false,
            }
        );
        assert_eq!(
            when("{source: 'SIGHUP'}").trigger,
            Trigger::Signal(SignalName::Sighup)
        );
        assert_eq!(
            when("{source: 'SIGUSR2', once: 'exitFailed'}").trigger,
            Trigger::Signal(SignalName::Sigusr2)
        );
        // source and timeout are ignored next to an interval (3.8 code)
        assert_eq!(
            when("{interval: 60, source: 'x', timeout: 'junk'}"),
            WhenConfig {
                trigger: Trigger::Interval(secs(60)),
                timeout: None,
            }
        );
        let c = load("{jobs: [{name: 'a', timeout: '250ms', when: {interval: '1s'}}]}");
        assert_eq!(c.jobs[0].timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn durations_and_defaults_on_jobs() {
        let c = load(
            "{jobs: [{name: 'a', timeout: '1ms', stopTimeout: '0',
               health: {interval: 10, ttl: 20, timeout: '0'}}]}",
        );
        let a = &c.jobs[0];
        assert_eq!(a.timeout, Some(Duration::from_millis(1)));
        assert_eq!(a.stop_timeout, None);
        // a "no timeout" health check falls back to its interval
        assert_eq!(a.health.as_ref().map(|h| h.timeout), Some(secs(10)));
        // health without port is allowed and has no discovery
        assert_eq!((a.port, a.ip), (0, None));
    }

    #[test]
    fn advertised_job_discovery_fields() {
        let c = load(
            "{jobs: [{name: 'svc', port: 80, health: {interval: 1, ttl: 3},
               consul: {enableTagOverride: 'true'}, initial_status: 'critical'}]}",
        );
        let svc = &c.jobs[0];
        // no interfaces → the 3.8 default list
        assert_eq!(svc.interfaces, strings(&["eth0:inet", "inet"]));
        assert_eq!(svc.ip, Some(LAN));
        assert_eq!(svc.initial_status, Some(CheckStatus::Critical));
        // fix over 3.8: no deregisterCriticalServiceAfter is simply "not set"
        assert_eq!(
            svc.consul,
            Some(JobConsulExtras {
                enable_tag_override: true,
                deregister_critical_service_after: None,
            })
        );
        assert!(svc.is_advertised());
        assert_eq!(
            errors("{jobs: [{name: 'svc', port: 80, interfaces: ['lo6'], health: {interval: 1, ttl: 3}}]}"),
            ["line 1: jobs[0].interfaces: unable to resolve: none of the interface specifications were able to match"]
        );
    }

    /// Every prefix of a real config, and single-character corruptions of it,
    /// either decode or report errors: no panic anywhere.
    #[test]
    fn truncated_and_corrupted_input_never_panics() {
        let src = include_str!("../../tests/fixtures/config/full.json5");
        let env = HashMap::new();
        let load_env = LoadEnv {
            env: &env,
            resolve_ip: &resolve,
        };
        let attempt = |text: &str| match json5::parse(text) {
            Ok(root) => {
                let _ = decode(&root, &load_env);
            }
            Err(e) => {
                let _ = e.render(text);
            }
        };
        for (n, (i, c)) in src.char_indices().enumerate() {
            attempt(&src[..i]);
            if n % 3 == 0 {
                let rest = &src[i + c.len_utf8()..];
                for junk in ["\"", "{", "]", "-", "0x"] {
                    attempt(&format!("{}{junk}{rest}", &src[..i]));
                }
            }
        }
    }

    #[test]
    fn health_of_wrong_type_is_one_error() {
        assert_eq!(
            errors("{jobs: [{name: 'svc', port: 80, interfaces: 'lo', health: 'yes'}]}"),
            ["line 1: jobs[0].health: expected an object, got a string"]
        );
    }

    #[test]
    fn containerpilot_name_is_free_without_telemetry() {
        let c = load("{jobs: [{name: 'containerpilot', exec: 'x'}]}");
        assert_eq!(c.jobs.len(), 1);
        assert!(!c.jobs[0].always_healthy);
    }

    #[test]
    fn telemetry_defaults_and_string_interfaces() {
        let c = load("{telemetry: {}}");
        let t = c.telemetry.as_ref().expect("telemetry");
        assert_eq!(t.port, 9090);
        assert_eq!(t.interfaces, strings(&["eth0:inet", "inet"]));
        assert_eq!(c.jobs[0].port, 9090);
        assert_eq!(c.jobs[0].tags, vec![version_tag()]);
        let c =
            load("{telemetry: {interfaces: 'lo', metrics: [null, {name: 'x', type: 'summary'}]}}");
        let t = c.telemetry.as_ref().expect("telemetry");
        assert_eq!(
            (t.interfaces.clone(), t.ip),
            (strings(&["lo"]), Some(LOOPBACK))
        );
        assert_eq!(t.metrics.len(), 1);
        assert_eq!(t.metrics[0].legacy_name(), "__x");
        assert_eq!(
            errors("{telemetry: {interfaces: ['nothing']}}"),
            ["line 1: telemetry.interfaces: unable to resolve: none of the interface specifications were able to match"]
        );
    }

    #[test]
    fn telemetry_port_range() {
        assert_eq!(
            errors("{telemetry: {port: 65536}}"),
            ["line 1: telemetry.port: must be between 1 and 65535"]
        );
        assert_eq!(load("{telemetry: {port: '65535'}}").jobs[0].port, 65535);
    }

    #[test]
    fn job_line_is_the_object_line() {
        let c = load("{\n  jobs: [\n    {name: 'a'},\n\n    {\n      name: 'b'\n    }\n  ]\n}");
        let lines: Vec<u32> = c.jobs.iter().map(|j| j.line).collect();
        assert_eq!(lines, [3, 5]);
    }
}
