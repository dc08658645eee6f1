//! ContainerPilot 2.x configs: detection, translation onto the one 3.x job model,
//! and `-convert` to equivalent 3.x JSON5 text.
//!
//! A 2.x config is a shim around one application (reference
//! `containerpilot-2.x-behaviour.md`). It becomes jobs, watches and metrics:
//!
//! | 2.x                 | job(s)                                                        |
//! |---------------------|---------------------------------------------------------------|
//! | `preStart`/`onStart`| `preStart`, runs at startup                                   |
//! | trailing arguments  | `app` (`main` if a service is already called `app`), after preStart |
//! | `preStop`/`postStop`| `preStop`/`postStop` on `stopping`/`stopped` of the app job   |
//! | `services[]`        | advertised jobs without exec, health = check + poll/ttl       |
//! | `backends[]`        | watch + `onChange-<name>` job on `each: changed`             |
//! | `coprocesses[]`     | jobs with `restarts`                                          |
//! | `tasks[]`           | interval jobs with `timeout`                                  |
//! | `telemetry.sensors` | metric + interval job `sensor-<metric>` with `sensor` set     |
//!
//! Jobs that 2.x started only after `preStart` succeeded (services,
//! coprocesses, the app) wait for `preStart`'s exitSuccess.

use super::decode::{self, ConfigError, LoadEnv};
use super::decode::{
    format_number, is_metric_name, is_service_name, join, parse_go_bool, type_name, Fields,
};
use super::duration;
use super::json5::{self, Spanned, Value};
use super::types::*;
use crate::events::EventCode;
use std::time::Duration;

/// Top-level keys only 2.x has (besides `telemetry.sensors`). `etcd` is not
/// here: our 3.x dialect takes it too.
const V2_KEYS: [&str; 8] = [
    "services",
    "backends",
    "preStart",
    "onStart",
    "preStop",
    "postStop",
    "coprocesses",
    "tasks",
];
const V3_KEYS: [&str; 3] = ["jobs", "watches", "control"];
const SHARED_KEYS: [&str; 5] = ["consul", "etcd", "logging", "stopTimeout", "telemetry"];

/// 2.x resolved only this by default (3.x added an `inet` fallback).
const DEFAULT_INTERFACE: &str = "eth0:inet";
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TELEMETRY_PORT: u16 = 9090;
const DEFAULT_ETCD_PREFIX: &str = "/containerpilot";
const DEFAULT_CONSUL_ADDRESS: &str = "127.0.0.1:8500";
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const TELEMETRY_SERVICE: &str = "containerpilot";
/// Metric names our own telemetry already registers.
const BUILTIN_METRICS: [&str; 3] = [
    "containerpilot_events",
    "containerpilot_control_http_requests",
    "containerpilot_watch_instances",
];

pub const PRE_START_JOB: &str = "preStart";
pub const PRE_STOP_JOB: &str = "preStop";
pub const POST_STOP_JOB: &str = "postStop";
/// The application's job; `APP_JOB_FALLBACK` when a 2.x service is called `app`.
pub const APP_JOB: &str = "app";
pub const APP_JOB_FALLBACK: &str = "main";

/// The 2.x `etcd` block (v2 keys layout, reference §3.5). `Config` has no place
/// for it yet; the loader can take it from [`etcd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

/// True when the top-level keys are 2.x keys; an error naming both kinds when
/// 2.x-only and 3.x-only keys are mixed. A config with only shared keys
/// (`consul`, `etcd`, `logging`, `stopTimeout`, `telemetry` without
/// `sensors`/`metrics`) reads the same either way and counts as 3.x.
pub fn is_v2(root: &Spanned) -> Result<bool, ConfigError> {
    let Value::Object(entries) = &root.value else {
        return Ok(false);
    };
    let mut v2: Vec<(String, u32)> = Vec::new();
    let mut v3: Vec<(String, u32)> = Vec::new();
    for (k, v) in entries {
        if V2_KEYS.contains(&k.name.as_str()) {
            v2.push((k.name.clone(), k.line));
        } else if V3_KEYS.contains(&k.name.as_str()) {
            v3.push((k.name.clone(), k.line));
        } else if k.name == "telemetry" {
            let Value::Object(inner) = &v.value else {
                continue;
            };
            for (ik, _) in inner {
                if ik.name.eq_ignore_ascii_case("sensors") {
                    v2.push(("telemetry.sensors".into(), ik.line));
                } else if ik.name.eq_ignore_ascii_case("metrics") {
                    v3.push(("telemetry.metrics".into(), ik.line));
                }
            }
        }
    }
    if !v2.is_empty() && !v3.is_empty() {
        let names = |l: &[(String, u32)]| {
            l.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let line = v3.iter().chain(&v2).map(|(_, l)| *l).min();
        return Err(ConfigError {
            path: String::new(),
            line,
            msg: format!(
                "mixes ContainerPilot 2.x keys ({}) with 3.x keys ({}); use one format \
                 (containerpilot -convert prints the 3.x form of a 2.x config)",
                names(&v2),
                names(&v3)
            ),
        });
    }
    Ok(!v2.is_empty())
}

/// Translates a 2.x config into the 3.x model (see the module docs). `main` is
/// the already rendered application command line; without it the app job has
/// no exec and the daemon idles until SIGTERM, as 2.x did.
pub fn translate(
    root: &Spanned,
    env: &LoadEnv,
    main: Option<&[String]>,
) -> Result<Config, Vec<ConfigError>> {
    let (config, _) = run(root, env, main)?;
    Ok(config)
}

/// `-convert`: equivalent 3.x JSON5 text, with `//` comments where 2.x had no
/// exact 3.x form. The text is checked with the 3.x decoder before it is
/// returned.
pub fn convert(root: &Spanned, env: &LoadEnv) -> Result<String, Vec<ConfigError>> {
    let (config, info) = run(root, env, None)?;
    let mut errors = convert_blockers(&config);
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = emit(&config, &info);
    let parsed = json5::parse(&text).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            line: Some(e.line),
            msg: format!("internal error: converted config does not parse: {e}"),
        }]
    })?;
    if let Err(errs) = decode::decode(&parsed, env) {
        errors.extend(errs.into_iter().map(|e| ConfigError {
            msg: format!("internal error: converted config is invalid: {}", e.msg),
            ..e
        }));
        return Err(errors);
    }
    Ok(text)
}

/// The validated `etcd` block of a 2.x config, if it has one.
pub fn etcd(root: &Spanned, env: &LoadEnv) -> Result<Option<EtcdConfig>, Vec<ConfigError>> {
    let (_, info) = run(root, env, None)?;
    Ok(info.etcd)
}

/// What `convert` needs beyond the `Config`.
#[derive(Default)]
struct Extras {
    consul_src: Option<Spanned>,
    etcd: Option<EtcdConfig>,
    on_start: OnStart,
    /// Non-default hidden telemetry service settings (name, poll, ttl).
    telemetry_service: Option<(String, u32, u32)>,
    /// Services without `timeout` (2.x waited for the check forever).
    untimed_checks: Vec<String>,
    /// Hidden keys that 2.x accepted and ignored, as paths.
    ignored: Vec<String>,
}

#[derive(Default, PartialEq, Eq)]
enum OnStart {
    #[default]
    Absent,
    /// Used as `preStart` (deprecated alias).
    Alias,
    /// Ignored because `preStart` is set too.
    Ignored,
}

fn run(
    root: &Spanned,
    env: &LoadEnv,
    main: Option<&[String]>,
) -> Result<(Config, Extras), Vec<ConfigError>> {
    let mut t = Translator {
        env,
        errors: Vec::new(),
        taken: Vec::new(),
        extras: Extras::default(),
    };
    let config = t.config(root, main);
    if t.errors.is_empty() {
        Ok((config, t.extras))
    } else {
        Err(t.errors)
    }
}

struct Translator<'e, 'a> {
    env: &'e LoadEnv<'a>,
    errors: Vec<ConfigError>,
    /// Job names in use; later jobs get a `-2`, `-3`… suffix instead of clashing.
    taken: Vec<String>,
    extras: Extras,
}

/// Top-level pieces read before jobs are built.
struct Hooks {
    pre_start: Option<(Vec<String>, u32)>,
    pre_stop: Option<(Vec<String>, u32)>,
    post_stop: Option<(Vec<String>, u32)>,
}

/// Go's `fmt.Sprintf("%v")` of a decoded JSON value: 2.x formats non-string
/// command arguments this way.
fn go_format(v: &Value) -> String {
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

/// Go's `strconv.ParseInt(s, 0, 64)` (mapstructure's weak string → int).
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r.replace('_', ""))
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r.replace('_', ""))
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r.replace('_', ""))
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].replace('_', ""))
    } else {
        (10, lower)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(&digits, radix).ok()?;
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

fn nanos(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(n.into())
}

fn split_scheme(addr: &str) -> (Option<&'static str>, &str) {
    if let Some(rest) = addr.strip_prefix("https://") {
        (Some("https"), rest)
    } else if let Some(rest) = addr.strip_prefix("http://") {
        (Some("http"), rest)
    } else {
        (None, addr)
    }
}

fn plain_job(name: String, exec: Option<Vec<String>>, line: u32) -> JobConfig {
    JobConfig {
        line,
        ..JobConfig::new(&name, exec)
    }
}

fn on_event(code: EventCode, source: &str, each: bool) -> WhenConfig {
    WhenConfig {
        trigger: Trigger::Event {
            code,
            source: source.to_string(),
            each,
        },
        timeout: None,
    }
}

impl Translator<'_, '_> {
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

    /// Matches keys like mapstructure (exact, then case-insensitive). `hidden`
    /// keys matched 2.x's unexported fields: accepted and ignored.
    fn fields<'v>(
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
            let hit = entries
                .iter()
                .enumerate()
                .find(|(i, (k, _))| !used[*i] && k.name.eq_ignore_ascii_case(name));
            if let Some((i, (_, val))) = hit {
                used[i] = true;
                found.push((name, val));
            }
        }
        for (i, (k, _)) in entries.iter().enumerate() {
            if !used[i] && hidden.iter().any(|h| k.name.eq_ignore_ascii_case(h)) {
                used[i] = true;
                self.extras.ignored.push(join(path, &k.name));
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

    // ----- weakly typed values (reference §2.4) -----

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
                let msg = format!("number {} is not a usable integer", format_number(*n));
                self.err(path, v.line, msg);
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

    /// An array of weakly typed strings (no single-value lifting in 2.x).
    fn string_list(&mut self, v: &Spanned, path: &str) -> Option<Vec<String>> {
        let Value::Array(items) = &v.value else {
            self.expected(path, v, "an array");
            return None;
        };
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

    /// A required whole number of seconds ≥ 1 (poll, ttl).
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
                let msg = format!("must be at most {}", u32::MAX);
                self.err(&path, f.line_of(name), msg);
                None
            }
        }
    }

    /// A 2.x duration (weak string; integer = seconds, else Go syntax) as
    /// signed nanoseconds with its line; `None` when absent or empty.
    fn duration(&mut self, f: &Fields, name: &str) -> Option<(i128, u32)> {
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

    /// Health/onChange/sensor `timeout`: 0 means none; 2.x crashed on negative
    /// values. `floor` lifts tiny values to what the 3.x job model accepts.
    fn hook_timeout(&mut self, f: &Fields, name: &str, floor: Duration) -> Option<Duration> {
        let (ns, line) = self.duration(f, name)?;
        if ns < 0 {
            self.err(&f.path(name), line, "must not be negative");
            return None;
        }
        (ns > 0).then(|| nanos(ns).max(floor))
    }

    /// A task `frequency`/`timeout`: at least 1ms.
    fn task_duration(&mut self, f: &Fields, name: &str) -> Option<Duration> {
        let (ns, line) = self.duration(f, name)?;
        if ns < MIN_TIMEOUT.as_nanos() as i128 {
            self.err(&f.path(name), line, "cannot be less than 1ms");
            return None;
        }
        Some(nanos(ns))
    }

    /// A command (reference §2.6): a string split on every single space, or an
    /// array whose non-string elements are formatted Go-style.
    fn command(&mut self, v: &Spanned, path: &str) -> Option<Vec<String>> {
        let args: Vec<String> = match &v.value {
            Value::String(s) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    Vec::new()
                } else {
                    trimmed.split(' ').map(str::to_string).collect()
                }
            }
            Value::Array(items) => items
                .iter()
                .map(|i| match &i.value {
                    Value::String(s) => s.clone(),
                    other => go_format(other),
                })
                .collect(),
            _ => {
                self.expected(path, v, "a string or an array");
                return None;
            }
        };
        if !matches!(args.first(), Some(a) if !a.is_empty()) {
            self.err(path, v.line, "received zero-length argument");
            return None;
        }
        Some(args)
    }

    fn required_command(&mut self, f: &Fields, name: &str) -> Option<Vec<String>> {
        match f.get(name) {
            Some(v) => self.command(v, &f.path(name)),
            None => {
                self.err(&f.path(name), f.line, "is required");
                None
            }
        }
    }

    /// Gives `base`, or `base-2`, `base-3`… if a job already has that name.
    fn claim(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.taken.push(name.clone());
        name
    }

    /// Resolves interface specs for an advertised job or telemetry.
    fn resolve(&mut self, specs: &[String], path: &str, line: u32) -> Option<std::net::IpAddr> {
        match (self.env.resolve_ip)(specs) {
            Ok(ip) => Some(ip),
            Err(e) => {
                self.err(path, line, format!("unable to resolve: {e}"));
                None
            }
        }
    }

    // ----- the top level -----

    fn config(&mut self, root: &Spanned, main: Option<&[String]>) -> Config {
        let mut config = Config {
            consul: None,
            etcd: None,
            logging: LoggingConfig::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            jobs: Vec::new(),
            watches: Vec::new(),
            telemetry: None,
            control: ControlConfig::default(),
            compat: Compat::V2,
            exit_policy: None,
        };
        if let Err(e) = is_v2(root) {
            self.errors.push(e);
            return config;
        }
        let empty = Vec::new();
        let entries = match &root.value {
            Value::Object(entries) => entries,
            // Go's decoder reads a top-level null as an empty config.
            Value::Null => &empty,
            _ => {
                self.expected("", root, "an object");
                return config;
            }
        };
        self.unknown_top_level(entries, root.line);
        // Unlike the sections, 2.x matched top-level keys exactly.
        let top = |name: &str| entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
        fn present(v: Option<&Spanned>) -> Option<&Spanned> {
            v.filter(|v| !matches!(v.value, Value::Null))
        }

        self.discovery(top("consul"), top("etcd"), root.line, &mut config);
        // The 2.x etcd block runs on our etcd backend (etcd's v3 API; 2.x's v2 keys
        // layout is gone from current etcd, see README).
        config.etcd = self
            .extras
            .etcd
            .as_ref()
            .map(|e| crate::config::types::EtcdConfig {
                endpoints: e.endpoints.clone(),
                prefix: e.prefix.clone(),
                username: None,
                password: None,
                tls: Default::default(),
            });
        if let Some(v) = present(top("logging")) {
            config.logging = self.logging(v);
        }
        if let Some(v) = present(top("stopTimeout")) {
            if let Some(secs) = self.int(v, "stopTimeout") {
                config.stop_timeout = match secs {
                    0 => DEFAULT_STOP_TIMEOUT,
                    s if s < 0 => Duration::ZERO,
                    s => Duration::from_secs(s.unsigned_abs()),
                };
            }
        }
        let hooks = self.hooks(present(top("preStart")), present(top("onStart")), |n| {
            present(top(n))
        });

        // Service names are identities in the catalog: they are never renamed.
        let services_src = present(top("services"));
        let telemetry_src = present(top("telemetry"));
        let mut services = match services_src {
            Some(v) => self.services(v),
            None => Vec::new(),
        };
        let telemetry = telemetry_src.and_then(|v| self.telemetry(v));
        if let Some(t) = &telemetry {
            if self.taken.contains(&t.job.name) {
                let msg = format!("'{}' is reserved for the telemetry service", t.job.name);
                self.err("telemetry", t.job.line, msg);
            } else {
                self.taken.push(t.job.name.clone());
            }
        }

        let pre_start = hooks.pre_start.as_ref().map(|_| self.claim(PRE_START_JOB));
        let app_base = if self.taken.iter().any(|n| n == APP_JOB) {
            APP_JOB_FALLBACK
        } else {
            APP_JOB
        };
        let app = self.claim(app_base);
        let pre_stop = hooks.pre_stop.as_ref().map(|_| self.claim(PRE_STOP_JOB));
        let post_stop = hooks.post_stop.as_ref().map(|_| self.claim(POST_STOP_JOB));
        let after_pre_start = match &pre_start {
            Some(name) => on_event(EventCode::ExitSuccess, name, false),
            None => WhenConfig::default(),
        };

        let (watches, on_change) = match present(top("backends")) {
            Some(v) => self.backends(v),
            None => (Vec::new(), Vec::new()),
        };
        let coprocesses = match present(top("coprocesses")) {
            Some(v) => self.coprocesses(v, &after_pre_start),
            None => Vec::new(),
        };
        let tasks = match present(top("tasks")) {
            Some(v) => self.tasks(v),
            None => Vec::new(),
        };
        let sensors = match &telemetry {
            Some(t) => self.sensor_jobs(&t.sensors),
            None => Vec::new(),
        };
        for s in &mut services {
            s.when = after_pre_start.clone();
        }

        // Start order as in 2.x: preStart, coprocesses, pollers, then the app.
        if let (Some(name), Some((exec, line))) = (&pre_start, hooks.pre_start) {
            let mut job = plain_job(name.clone(), Some(exec), line);
            job.raw = true;
            config.jobs.push(job);
        }
        config.jobs.extend(coprocesses);
        config.jobs.extend(on_change);
        config.jobs.extend(services);
        config.jobs.extend(sensors);
        config.jobs.extend(tasks);
        let mut app_job = plain_job(app.clone(), main.map(<[String]>::to_vec), 0);
        app_job.when = after_pre_start;
        app_job.raw = true;
        config.jobs.push(app_job);
        for (name, hook, code) in [
            (&pre_stop, hooks.pre_stop, EventCode::Stopping),
            (&post_stop, hooks.post_stop, EventCode::Stopped),
        ] {
            if let (Some(name), Some((exec, line))) = (name, hook) {
                let mut job = plain_job(name.clone(), Some(exec), line);
                job.when = on_event(code, &app, false);
                job.raw = true;
                config.jobs.push(job);
            }
        }
        config.watches = watches;
        if let Some(t) = telemetry {
            config.jobs.push(t.job);
            config.telemetry = Some(t.config);
        }
        config.exit_policy = Some(ExitPolicy {
            main: app,
            pre_start,
            post_stop,
        });
        config
    }

    fn unknown_top_level(&mut self, entries: &[(json5::Key, Spanned)], line: u32) {
        let known = |k: &str| V2_KEYS.contains(&k) || SHARED_KEYS.contains(&k);
        let mut unknown: Vec<(&str, u32)> = entries
            .iter()
            .filter(|(k, _)| !known(&k.name))
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

    fn hooks<'v>(
        &mut self,
        pre_start: Option<&'v Spanned>,
        on_start: Option<&'v Spanned>,
        top: impl Fn(&str) -> Option<&'v Spanned>,
    ) -> Hooks {
        let (start_path, start) = match (pre_start, on_start) {
            (Some(p), Some(_)) => {
                self.extras.on_start = OnStart::Ignored;
                ("preStart", Some(p))
            }
            (Some(p), None) => ("preStart", Some(p)),
            (None, Some(o)) => {
                self.extras.on_start = OnStart::Alias;
                ("onStart", Some(o))
            }
            (None, None) => ("preStart", None),
        };
        let mut hook = |path: &str, v: Option<&Spanned>| {
            let v = v?;
            self.command(v, path).map(|exec| (exec, v.line))
        };
        Hooks {
            pre_start: hook(start_path, start),
            pre_stop: hook("preStop", top("preStop")),
            post_stop: hook("postStop", top("postStop")),
        }
    }

    // ----- discovery, logging -----

    fn discovery(
        &mut self,
        consul: Option<&Spanned>,
        etcd: Option<&Spanned>,
        line: u32,
        config: &mut Config,
    ) {
        // 2.x built a backend for a present key even when its value was null.
        match (consul, etcd) {
            (None, None) => {
                let msg = "no discovery backend defined (a 2.x config needs 'consul' or 'etcd')";
                self.err("consul", line, msg);
            }
            (Some(c), Some(e)) => {
                config.consul = self.consul(c);
                self.extras.etcd = self.etcd(e);
                self.err("etcd", e.line, "more than one discovery backend defined");
            }
            (Some(c), None) => {
                config.consul = self.consul(c);
                self.extras.consul_src = Some(c.clone());
            }
            (None, Some(e)) => self.extras.etcd = self.etcd(e),
        }
    }

    fn env_var(&self, key: &str) -> Option<String> {
        self.env.env.get(key).filter(|v| !v.is_empty()).cloned()
    }

    fn consul(&mut self, v: &Spanned) -> Option<ConsulConfig> {
        let mut scheme = String::new();
        let mut token = None;
        let address = match &v.value {
            Value::String(s) => s.clone(),
            Value::Object(_) => {
                let f = self.fields(v, "consul", &["address", "scheme", "token"], &[])?;
                scheme = self.string_field(&f, "scheme").unwrap_or_default();
                token = self.string_field(&f, "token").filter(|t| !t.is_empty());
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
                let msg = format!(
                    "unexpected Consul config structure: expected a string or an object, got {}",
                    type_name(&v.value)
                );
                self.err("consul", v.line, msg);
                return None;
            }
        };
        let (prefix_scheme, rest) = split_scheme(&address);
        let mut address = rest.to_string();
        if let Some(s) = prefix_scheme {
            scheme = s.to_string();
        }
        // The Consul client library's defaults fill what the config left empty.
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
        if let Some(t) = self.env_var("CONSUL_HTTP_TOKEN") {
            token = Some(t);
        }
        let mut tls = TlsConfig::default();
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

    fn etcd(&mut self, v: &Spanned) -> Option<EtcdConfig> {
        let f = self.fields(v, "etcd", &["endpoints", "prefix"], &[])?;
        let endpoints: Vec<String> = match f.get("endpoints").map(|e| &e.value) {
            Some(Value::String(s)) => vec![s.clone()],
            // 2.x dropped non-string elements silently.
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| match &i.value {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => {
                // 2.x: fatal "Must provide etcd endpoints".
                self.err(
                    &f.path("endpoints"),
                    f.line_of("endpoints"),
                    "must be provided",
                );
                return None;
            }
        };
        if endpoints.iter().all(|e| e.trim().is_empty()) {
            let msg = "no endpoints available";
            self.err(&f.path("endpoints"), f.line_of("endpoints"), msg);
            return None;
        }
        let prefix = self
            .string_field(&f, "prefix")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_string());
        Some(EtcdConfig { endpoints, prefix })
    }

    fn logging(&mut self, v: &Spanned) -> LoggingConfig {
        let mut cfg = LoggingConfig::default();
        let Some(f) = self.fields(v, "logging", &["level", "format", "output"], &[]) else {
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
                _ => {
                    // 2.x had no file output; a path here was a config error.
                    let msg = format!("unknown output type '{output}' (use stdout or stderr)");
                    self.err(&f.path("output"), f.line_of("output"), msg);
                    cfg.output
                }
            };
        }
        cfg
    }

    // ----- list sections -----

    /// The objects of a top-level list; null elements are dropped as in 2.x.
    /// (2.x silently ignored a list that was not an array; that hid typos, so
    /// it is an error here.)
    fn items<'v>(&mut self, v: &'v Spanned, key: &str) -> Vec<(String, &'v Spanned)> {
        let Value::Array(items) = &v.value else {
            self.expected(key, v, "an array");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| !matches!(item.value, Value::Null))
            .map(|(i, item)| (format!("{key}[{i}]"), item))
            .collect()
    }

    fn services(&mut self, v: &Spanned) -> Vec<JobConfig> {
        let mut jobs: Vec<JobConfig> = Vec::new();
        for (path, item) in self.items(v, "services") {
            let Some(job) = self.service(item, &path) else {
                continue;
            };
            if job.name.trim().is_empty() {
                continue;
            }
            if self.taken.contains(&job.name) {
                let msg = format!("duplicate service name '{}'", job.name);
                let line = item.line;
                self.err(&join(&path, "name"), line, msg);
                continue;
            }
            self.taken.push(job.name.clone());
            jobs.push(job);
        }
        jobs
    }

    fn service(&mut self, v: &Spanned, path: &str) -> Option<JobConfig> {
        const KEYS: [&str; 9] = [
            "name",
            "poll",
            "ttl",
            "port",
            "health",
            "timeout",
            "interfaces",
            "tags",
            "consul",
        ];
        let hidden = ["id", "ipaddress", "definition", "healthcheckcmd"];
        let f = self.fields(v, path, &KEYS, &hidden)?;
        let name = self.name(&f);
        let poll = self.positive_int(&f, "poll");
        let ttl = self.positive_int(&f, "ttl");
        let port = self.port(&f);
        let check = match f.get("health") {
            Some(h) => self.command(h, &f.path("health")).map(Some),
            None => Some(None),
        };
        let timeout = self.hook_timeout(&f, "timeout", Duration::ZERO);
        let interfaces = self.interfaces(&f);
        let tags = match f.get("tags") {
            Some(t) => self.string_list(t, &f.path("tags")).unwrap_or_default(),
            None => Vec::new(),
        };
        let consul = match f.get("consul") {
            Some(c) => self.service_consul(c, &f.path("consul")),
            None => None,
        };
        let (poll, ttl, port, check) = (poll?, ttl?, port?, check?);
        let ip = match &interfaces {
            Some(list) => self.resolve(list, &f.path("interfaces"), f.line_of("interfaces")),
            None => None,
        };
        if timeout.is_none() && check.is_some() {
            self.extras.untimed_checks.push(name.clone());
        }
        let interval = secs(poll);
        let mut job = plain_job(name, None, v.line);
        job.port = port;
        job.interfaces = interfaces?;
        job.ip = Some(ip?);
        job.tags = tags;
        job.consul = consul;
        // 2.x waited for a check without `timeout` forever; the 3.x model
        // bounds it by the poll interval, as 3.8 does.
        job.health = Some(HealthConfig {
            exec: check,
            interval,
            ttl,
            timeout: timeout.unwrap_or(interval),
            raw: false,
        });
        Some(job)
    }

    fn name(&mut self, f: &Fields) -> String {
        let name = match f.get("name") {
            Some(v) => self.string(v, &f.path("name")).unwrap_or_default(),
            None => String::new(),
        };
        if name.trim().is_empty() {
            self.err(&f.path("name"), f.line_of("name"), "must not be blank");
        }
        name
    }

    fn port(&mut self, f: &Fields) -> Option<u16> {
        let path = f.path("port");
        let n = match f.get("port") {
            Some(v) => self.int(v, &path)?,
            None => 0,
        };
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ if n < 1 => {
                self.err(&path, f.line_of("port"), "must be > 0");
                None
            }
            _ => {
                self.err(&path, f.line_of("port"), "must be at most 65535");
                None
            }
        }
    }

    /// Service `interfaces`: a string or an array; 2.x's default is eth0 only.
    fn interfaces(&mut self, f: &Fields) -> Option<Vec<String>> {
        let path = f.path("interfaces");
        let list = match f.get("interfaces") {
            None => Vec::new(),
            Some(v) => match &v.value {
                Value::String(s) => vec![s.clone()],
                Value::Array(_) => self.string_list(v, &path)?,
                _ => {
                    self.expected(&path, v, "a string or an array");
                    return None;
                }
            },
        };
        if list.is_empty() {
            return Some(vec![DEFAULT_INTERFACE.to_string()]);
        }
        Some(list)
    }

    fn service_consul(&mut self, v: &Spanned, path: &str) -> Option<JobConsulExtras> {
        let names = ["enableTagOverride", "deregisterCriticalServiceAfter"];
        let f = self.fields(v, path, &names, &[])?;
        let enable_tag_override = match f.get(names[0]) {
            Some(b) => self.bool(b, &f.path(names[0]))?,
            None => false,
        };
        let dereg = self.string_field(&f, names[1]).filter(|s| !s.is_empty());
        if let Some(text) = &dereg {
            // Consul parses this as a Go duration, which needs a unit.
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
                let msg = format!("unable to parse '{text}': {e}");
                self.err(&f.path(names[1]), f.line_of(names[1]), msg);
                return None;
            }
        }
        Some(JobConsulExtras {
            enable_tag_override,
            deregister_critical_service_after: dereg,
        })
    }

    fn backends(&mut self, v: &Spanned) -> (Vec<WatchConfig>, Vec<JobConfig>) {
        let mut watches: Vec<WatchConfig> = Vec::new();
        let mut jobs = Vec::new();
        for (path, item) in self.items(v, "backends") {
            let keys = ["name", "poll", "onChange", "tag", "timeout"];
            let Some(f) = self.fields(item, &path, &keys, &["laststate", "onchangecmd"]) else {
                continue;
            };
            let name = self.name(&f);
            let on_change = self.required_command(&f, "onChange");
            let tag = self.string_field(&f, "tag").filter(|s| !s.is_empty());
            let timeout = self.hook_timeout(&f, "timeout", MIN_TIMEOUT);
            let poll = self.positive_int(&f, "poll");
            if name.trim().is_empty() {
                continue;
            }
            if watches.iter().any(|w| w.name == name) {
                // Watch events are keyed by name; 2.x let two such backends
                // overwrite each other's state.
                let msg = format!("duplicate backend name '{name}'");
                self.err(&f.path("name"), f.line_of("name"), msg);
                continue;
            }
            let (Some(exec), Some(poll)) = (on_change, poll) else {
                continue;
            };
            let watch = WatchConfig {
                name: name.clone(),
                interval: secs(poll),
                tag,
                dc: None,
            };
            let mut job = plain_job(
                self.claim(&format!("onChange-{name}")),
                Some(exec),
                item.line,
            );
            job.when = on_event(EventCode::StatusChanged, &watch.source(), true);
            job.timeout = timeout;
            watches.push(watch);
            jobs.push(job);
        }
        (watches, jobs)
    }

    fn coprocesses(&mut self, v: &Spanned, when: &WhenConfig) -> Vec<JobConfig> {
        let mut jobs = Vec::new();
        for (path, item) in self.items(v, "coprocesses") {
            let keys = ["command", "name", "restarts"];
            let hidden = ["restartlimit", "cmd"];
            if let Value::Object(entries) = &item.value {
                // 2.x silently ignored this typo, so the coprocess never restarted.
                if let Some((k, _)) = entries
                    .iter()
                    .find(|(k, _)| k.name.eq_ignore_ascii_case("restart"))
                {
                    let msg = "unknown key (did you mean 'restarts'? 2.x silently ignored it)";
                    self.err(&join(&path, &k.name), k.line, msg);
                }
            }
            let hidden_and_typo = [hidden[0], hidden[1], "restart"];
            let Some(f) = self.fields(item, &path, &keys, &hidden_and_typo) else {
                continue;
            };
            let exec = self.required_command(&f, "command");
            let name = self.string_field(&f, "name").unwrap_or_default();
            let restarts = self.coprocess_restarts(&f);
            let Some(exec) = exec else {
                continue;
            };
            let name = if name.is_empty() {
                exec.join(" ")
            } else {
                name
            };
            let mut job = plain_job(self.claim(&name), Some(exec), item.line);
            job.when = when.clone();
            job.restarts = restarts;
            jobs.push(job);
        }
        jobs
    }

    fn coprocess_restarts(&mut self, f: &Fields) -> Restarts {
        let Some(v) = f.get("restarts") else {
            return Restarts::Count(0);
        };
        let ok = match &v.value {
            Value::String(s) if s == "unlimited" => Some(Restarts::Unlimited),
            Value::String(s) if s == "never" => Some(Restarts::Count(0)),
            Value::String(s) => s
                .parse::<u64>()
                .ok()
                .map(|n| Restarts::Count(u32::try_from(n).unwrap_or(u32::MAX))),
            // Saturating cast truncates fractions as 2.x did.
            Value::Number(n) if *n >= 0.0 => Some(Restarts::Count(*n as u32)),
            _ => None,
        };
        ok.unwrap_or_else(|| {
            let shown = match &v.value {
                Value::String(s) => s.clone(),
                other => go_format(other),
            };
            let msg = format!(
                "invalid value \"{shown}\": accepts positive integers, \"unlimited\" or \"never\""
            );
            self.err(&f.path("restarts"), v.line, msg);
            Restarts::Count(0)
        })
    }

    fn tasks(&mut self, v: &Spanned) -> Vec<JobConfig> {
        let mut jobs = Vec::new();
        for (path, item) in self.items(v, "tasks") {
            let keys = ["name", "command", "frequency", "timeout"];
            let Some(f) = self.fields(item, &path, &keys, &["freqduration"]) else {
                continue;
            };
            let name = self.string_field(&f, "name").unwrap_or_default();
            let exec = self.required_command(&f, "command");
            let frequency = if f.get("frequency").is_none() {
                self.err(&f.path("frequency"), f.line, "is required");
                None
            } else {
                self.task_duration(&f, "frequency")
            };
            let has_timeout = f
                .get("timeout")
                .is_some_and(|t| !matches!(&t.value, Value::String(s) if s.is_empty()));
            let timeout = if has_timeout {
                self.task_duration(&f, "timeout")
            } else {
                frequency
            };
            let (Some(exec), Some(frequency), Some(timeout)) = (exec, frequency, timeout) else {
                continue;
            };
            let base = if name.is_empty() { "task" } else { &name };
            let mut job = plain_job(self.claim(base), Some(exec), item.line);
            job.when = WhenConfig {
                trigger: Trigger::Interval(frequency),
                timeout: None,
            };
            job.timeout = Some(timeout);
            job.restarts = Restarts::Unlimited;
            jobs.push(job);
        }
        jobs
    }

    // ----- telemetry -----

    fn telemetry(&mut self, v: &Spanned) -> Option<Telemetry> {
        let keys = [
            "port",
            "interfaces",
            "tags",
            "sensors",
            "ttl",
            "poll",
            "url",
            "servicename",
        ];
        let hidden = ["mux", "addr", "lock", "listening"];
        let f = self.fields(v, "telemetry", &keys, &hidden)?;
        let port = match f.get("port") {
            None => Some(DEFAULT_TELEMETRY_PORT),
            Some(_) => self.port(&f),
        };
        let tags = match f.get("tags") {
            Some(t) => self.string_list(t, &f.path("tags")).unwrap_or_default(),
            None => Vec::new(),
        };
        // 2.x decoded telemetry `interfaces` into a list: no bare string.
        let interfaces = match f.get("interfaces") {
            Some(i) => self.string_list(i, &f.path("interfaces")),
            None => Some(Vec::new()),
        };
        let interfaces = interfaces.map(|l| {
            if l.is_empty() {
                vec![DEFAULT_INTERFACE.to_string()]
            } else {
                l
            }
        });
        let ttl = match f.get("ttl") {
            Some(_) => self.positive_int(&f, "ttl"),
            None => Some(15),
        };
        let poll = match f.get("poll") {
            Some(_) => self.positive_int(&f, "poll"),
            None => Some(5),
        };
        if let Some(url) = self.string_field(&f, "url").filter(|u| !u.is_empty()) {
            if url != "/metrics" {
                let msg = format!("'{url}' is not supported: metrics are served at /metrics");
                self.err(&f.path("url"), f.line_of("url"), msg);
            }
        }
        let service = self
            .string_field(&f, "servicename")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| TELEMETRY_SERVICE.to_string());
        let sensors = match f.get("sensors") {
            Some(s) => self.sensors(s, &f.path("sensors")),
            None => Vec::new(),
        };
        let (port, interfaces, ttl, poll) = (port?, interfaces?, ttl?, poll?);
        let ip = self.resolve(&interfaces, &f.path("interfaces"), f.line_of("interfaces"))?;
        if service != TELEMETRY_SERVICE || ttl != 15 || poll != 5 {
            self.extras.telemetry_service = Some((service.clone(), poll, ttl));
        }
        let telemetry = TelemetryConfig {
            port,
            interfaces: interfaces.clone(),
            ip: Some(ip),
            tags: tags.clone(),
            metrics: sensors.iter().map(|s| s.metric.clone()).collect(),
        };
        let mut job = plain_job(service, None, v.line);
        job.port = port;
        job.interfaces = interfaces;
        job.ip = Some(ip);
        // 2.x tagged the telemetry service with the user's tags only.
        job.tags = tags;
        job.health = Some(HealthConfig {
            exec: None,
            interval: secs(poll),
            ttl,
            timeout: secs(poll),
            raw: false,
        });
        job.always_healthy = true;
        Some(Telemetry {
            config: telemetry,
            sensors,
            job,
        })
    }

    fn sensors(&mut self, v: &Spanned, path: &str) -> Vec<Sensor> {
        let Value::Array(items) = &v.value else {
            self.expected(path, v, "an array");
            return Vec::new();
        };
        let mut sensors: Vec<Sensor> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matches!(item.value, Value::Null) {
                continue;
            }
            if let Some(sensor) = self.sensor(item, &format!("{path}[{i}]")) {
                // 2.x re-registered the collector: the later sensor wins.
                let name = sensor.metric.full_name();
                sensors.retain(|s| s.metric.full_name() != name);
                sensors.push(sensor);
            }
        }
        sensors
    }

    fn sensor(&mut self, v: &Spanned, path: &str) -> Option<Sensor> {
        let keys = [
            "namespace",
            "subsystem",
            "name",
            "help",
            "type",
            "poll",
            "check",
            "timeout",
        ];
        let f = self.fields(v, path, &keys, &["checkcmd", "collector"])?;
        let text = |d: &mut Self, name| d.string_field(&f, name).unwrap_or_default();
        let (namespace, subsystem) = (text(self, "namespace"), text(self, "subsystem"));
        let (name, help, kind) = (text(self, "name"), text(self, "help"), text(self, "type"));
        let kind = match kind.as_str() {
            "counter" => Some(MetricKind::Counter),
            "gauge" => Some(MetricKind::Gauge),
            "histogram" => Some(MetricKind::Histogram),
            "summary" => Some(MetricKind::Summary),
            _ => {
                let msg = format!(
                    "invalid sensor type: {kind} (use counter, gauge, histogram or summary)"
                );
                self.err(&f.path("type"), f.line_of("type"), msg);
                None
            }
        };
        // 2.x crashed on a missing or non-positive poll.
        let poll = self.positive_int(&f, "poll");
        let check = self.required_command(&f, "check");
        let timeout = self.hook_timeout(&f, "timeout", MIN_TIMEOUT);
        let metric = MetricConfig {
            namespace,
            subsystem,
            name,
            help,
            kind: kind.unwrap_or(MetricKind::Gauge),
        };
        let full = metric.full_name();
        if !is_metric_name(&full) {
            let msg = format!("invalid metric name '{full}': must match [a-zA-Z_:][a-zA-Z0-9_:]*");
            self.err(&f.path("name"), f.line_of("name"), msg);
            return None;
        }
        if BUILTIN_METRICS.contains(&full.as_str()) {
            let msg = format!("'{full}' is already a built-in metric");
            self.err(&f.path("name"), f.line_of("name"), msg);
            return None;
        }
        kind?;
        Some(Sensor {
            metric,
            poll: poll?,
            check: check?,
            timeout,
            line: v.line,
        })
    }

    fn sensor_jobs(&mut self, sensors: &[Sensor]) -> Vec<JobConfig> {
        sensors
            .iter()
            .map(|s| {
                let full = s.metric.full_name();
                let interval = secs(s.poll);
                let mut job = plain_job(
                    self.claim(&format!("sensor-{full}")),
                    Some(s.check.clone()),
                    s.line,
                );
                job.when = WhenConfig {
                    trigger: Trigger::Interval(interval),
                    timeout: None,
                };
                // 2.x never applied the sensor timeout; a run now ends at the
                // timeout, or at the next poll like any 3.x interval job.
                job.timeout = Some(s.timeout.unwrap_or(interval));
                job.restarts = Restarts::Unlimited;
                job.sensor = Some(full);
                job
            })
            .collect()
    }
}

/// The telemetry config (sensors as metrics), the sensors for their jobs, and
/// the service job advertising the endpoint.
struct Telemetry {
    config: TelemetryConfig,
    sensors: Vec<Sensor>,
    job: JobConfig,
}

struct Sensor {
    metric: MetricConfig,
    poll: u32,
    check: Vec<String>,
    timeout: Option<Duration>,
    line: u32,
}

// ----- -convert -----

/// What a valid 2.x config can hold but 3.x cannot express.
fn convert_blockers(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let rule = "is not a valid 3.x service name (^[a-z][a-zA-Z0-9-]+$; 2.x only warned)";
    for job in config
        .jobs
        .iter()
        .filter(|j| j.is_advertised() && !j.always_healthy)
    {
        if !is_service_name(&job.name) {
            errors.push(ConfigError {
                path: "services".into(),
                line: Some(job.line),
                msg: format!("cannot convert: '{}' {rule}", job.name),
            });
        }
    }
    for w in &config.watches {
        if !is_service_name(&w.name) {
            errors.push(ConfigError {
                path: "backends".into(),
                line: None,
                msg: format!("cannot convert: '{}' {rule}", w.name),
            });
        }
    }
    errors
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn quote_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", parts.join(", "))
}

fn dur(d: Duration) -> String {
    quote(&duration::format(d))
}

fn event_config_name(code: EventCode) -> &'static str {
    match code {
        EventCode::Startup => "startup",
        EventCode::Shutdown => "shutdown",
        EventCode::ExitSuccess => "exitSuccess",
        EventCode::ExitFailed => "exitFailed",
        EventCode::Error => "error",
        EventCode::Stopping => "stopping",
        EventCode::Stopped => "stopped",
        EventCode::StatusHealthy => "healthy",
        EventCode::StatusUnhealthy => "unhealthy",
        EventCode::StatusChanged => "changed",
        EventCode::TimerExpired => "timerExpired",
        EventCode::EnterMaintenance => "enterMaintenance",
        EventCode::ExitMaintenance => "exitMaintenance",
        EventCode::None | EventCode::Signal | EventCode::Metric | EventCode::Quit => "",
    }
}

/// A shell word for `/bin/sh -c`.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The 3.x form of a sensor run: the check's trimmed stdout is sent with
/// `-putmetric`; a failing check records nothing, as in 2.x.
fn sensor_exec(check: &[String], metric: &str) -> Vec<String> {
    let cmd: Vec<String> = check.iter().map(|a| sh_quote(a)).collect();
    let script = format!(
        "v=$({}) || exit $?; set -f; set -- $v; exec containerpilot -putmetric \"{metric}=$*\"",
        cmd.join(" ")
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

struct Out {
    text: String,
}

impl Out {
    fn line(&mut self, indent: usize, s: &str) {
        for _ in 0..indent {
            self.text.push_str("  ");
        }
        self.text.push_str(s);
        self.text.push('\n');
    }

    fn comment(&mut self, indent: usize, s: &str) {
        self.line(indent, &format!("// {s}"));
    }
}

fn emit(config: &Config, extras: &Extras) -> String {
    let mut o = Out {
        text: String::new(),
    };
    o.comment(
        0,
        "Converted from a ContainerPilot 2.x config by `containerpilot -convert`.",
    );
    o.comment(0, "Differences in meaning a 3.x config cannot express:");
    o.comment(
        0,
        "- 2.x exited with the application's exit code; a 3.x config exits 0 once",
    );
    o.comment(
        0,
        "  all jobs are done (unless the application is given as trailing arguments).",
    );
    o.comment(
        0,
        "- 2.x: SIGHUP reloaded and SIGUSR1 toggled maintenance; in 3.x use",
    );
    o.comment(
        0,
        "  `containerpilot -reload` and `containerpilot -maintenance enable|disable`.",
    );
    o.comment(
        0,
        "- 2.x registered TTL checks with ID <service ID> via the legacy pass endpoint;",
    );
    o.comment(0, "  3.x uses check ID service:<service ID>.");
    o.comment(
        0,
        "- 2.x interval tasks and sensors first ran one period after start; 3.x",
    );
    o.comment(0, "  interval jobs also run at startup.");
    if !extras.ignored.is_empty() {
        o.comment(0, "2.x accepted and ignored these keys; they are left out:");
        o.comment(0, &format!("  {}", extras.ignored.join(", ")));
    }
    o.line(0, "{");
    emit_discovery(&mut o, config, extras);
    let l = &config.logging;
    let level = match l.level {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERROR",
        LogLevel::Fatal => "FATAL",
        LogLevel::Panic => "PANIC",
    };
    let format = match l.format {
        LogFormat::Default => "default",
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let output = match &l.output {
        LogOutput::Stderr => "stderr".to_string(),
        LogOutput::Stdout => "stdout".to_string(),
        LogOutput::File(p) => p.display().to_string(),
    };
    o.line(
        1,
        &format!(
            "logging: {{level: {}, format: {}, output: {}}},",
            quote(level),
            quote(format),
            quote(&output)
        ),
    );
    if config.stop_timeout.is_zero() {
        o.comment(1, "2.x: a negative stopTimeout sends SIGKILL at once.");
        o.line(1, "stopTimeout: -1,");
    } else {
        o.line(
            1,
            &format!("stopTimeout: {},", config.stop_timeout.as_secs()),
        );
    }
    o.line(1, "jobs: [");
    for job in config.jobs.iter().filter(|j| !j.always_healthy) {
        emit_job(&mut o, job, config, extras);
    }
    o.line(1, "],");
    if !config.watches.is_empty() {
        o.line(1, "watches: [");
        for w in &config.watches {
            let mut parts = vec![
                format!("name: {}", quote(&w.name)),
                format!("interval: {}", w.interval.as_secs()),
            ];
            if let Some(tag) = &w.tag {
                parts.push(format!("tag: {}", quote(tag)));
            }
            o.line(2, &format!("{{{}}},", parts.join(", ")));
        }
        o.line(1, "],");
    }
    if let Some(t) = &config.telemetry {
        emit_telemetry(&mut o, t, extras);
    }
    o.line(0, "}");
    o.text
}

fn emit_discovery(o: &mut Out, config: &Config, extras: &Extras) {
    if let Some(src) = &extras.consul_src {
        match &src.value {
            Value::String(s) => o.line(1, &format!("consul: {},", quote(s))),
            Value::Object(entries) => {
                let parts: Vec<String> = entries
                    .iter()
                    .filter(|(_, v)| !matches!(v.value, Value::Null))
                    .map(|(k, v)| {
                        let text = match &v.value {
                            Value::String(s) => s.clone(),
                            other => go_format(other),
                        };
                        format!("{}: {}", k.name.to_lowercase(), quote(&text))
                    })
                    .collect();
                o.line(1, &format!("consul: {{{}}},", parts.join(", ")));
            }
            _ => {}
        }
    } else if let Some(c) = &config.consul {
        o.line(
            1,
            &format!(
                "consul: {},",
                quote(&format!("{}://{}", c.scheme, c.address))
            ),
        );
    }
    if let Some(e) = &extras.etcd {
        o.comment(
            1,
            "2.x used etcd's v2 keys API (<prefix>/<service>/<service ID>); this runs on etcd's v3 API.",
        );
        o.line(
            1,
            &format!(
                "etcd: {{endpoints: {}, prefix: {}}},",
                quote_list(&e.endpoints),
                quote(&e.prefix)
            ),
        );
    }
}

fn emit_job(o: &mut Out, job: &JobConfig, config: &Config, extras: &Extras) {
    let policy = config.exit_policy.as_ref();
    let is_main = policy.is_some_and(|p| p.main == job.name);
    if is_main {
        o.comment(
            2,
            "The application. 2.x took it from the command line: add its `exec` here, or",
        );
        o.comment(
            2,
            "pass it as trailing arguments (then the container exits with its exit code).",
        );
    }
    if policy.and_then(|p| p.pre_start.as_deref()) == Some(job.name.as_str()) {
        match extras.on_start {
            OnStart::Alias => o.comment(2, "2.x `onStart` (the old name of `preStart`)."),
            OnStart::Ignored => o.comment(2, "2.x ignored `onStart` because `preStart` is set."),
            OnStart::Absent => {}
        }
        o.comment(2, "2.x exited with this hook's code when it failed.");
    }
    if policy.and_then(|p| p.post_stop.as_deref()) == Some(job.name.as_str()) {
        o.comment(2, "2.x exited with this hook's code when it was not 0.");
    }
    if extras.untimed_checks.contains(&job.name) {
        o.comment(2, "2.x waited for this health check without a timeout.");
    }
    o.line(2, "{");
    o.line(3, &format!("name: {},", quote(&job.name)));
    if let Some(metric) = &job.sensor {
        o.comment(
            3,
            "2.x sensor: the check's output was the value of the metric.",
        );
        let exec = job.exec.as_deref().unwrap_or_default();
        o.line(
            3,
            &format!("exec: {},", quote_list(&sensor_exec(exec, metric))),
        );
    } else if let Some(exec) = &job.exec {
        o.line(3, &format!("exec: {},", quote_list(exec)));
    }
    if job.is_advertised() {
        o.line(3, &format!("port: {},", job.port));
        o.line(3, &format!("interfaces: {},", quote_list(&job.interfaces)));
        if !job.tags.is_empty() {
            o.line(3, &format!("tags: {},", quote_list(&job.tags)));
        }
        if let Some(c) = &job.consul {
            let mut parts = vec![format!("enableTagOverride: {}", c.enable_tag_override)];
            if let Some(d) = &c.deregister_critical_service_after {
                parts.push(format!("deregisterCriticalServiceAfter: {}", quote(d)));
            }
            o.line(3, &format!("consul: {{{}}},", parts.join(", ")));
        }
    }
    if let Some(h) = &job.health {
        let mut parts = Vec::new();
        if let Some(exec) = &h.exec {
            parts.push(format!("exec: {}", quote_list(exec)));
        }
        parts.push(format!("interval: {}", h.interval.as_secs()));
        parts.push(format!("ttl: {}", h.ttl));
        parts.push(format!("timeout: {}", dur(h.timeout)));
        o.line(3, &format!("health: {{{}}},", parts.join(", ")));
    }
    match &job.when.trigger {
        Trigger::Event { code, source, each } => {
            let kind = if *each { "each" } else { "once" };
            let name = quote(event_config_name(*code));
            o.line(
                3,
                &format!("when: {{source: {}, {kind}: {name}}},", quote(source)),
            );
        }
        Trigger::Interval(d) => o.line(3, &format!("when: {{interval: {}}},", dur(*d))),
        Trigger::Startup | Trigger::Signal(_) | Trigger::Never => {}
    }
    if let Some(t) = job.timeout {
        o.line(3, &format!("timeout: {},", dur(t)));
    }
    let interval = matches!(job.when.trigger, Trigger::Interval(_));
    match job.restarts {
        Restarts::Unlimited if !interval => o.line(3, "restarts: \"unlimited\","),
        Restarts::Count(n) if interval || n > 0 => o.line(3, &format!("restarts: {n},")),
        _ => {}
    }
    if job.raw {
        o.line(3, "logging: {raw: true},");
    }
    o.line(2, "},");
}

fn emit_telemetry(o: &mut Out, t: &TelemetryConfig, extras: &Extras) {
    if let Some((name, poll, ttl)) = &extras.telemetry_service {
        o.comment(
            1,
            &format!(
            "2.x advertised telemetry as '{name}' with poll {poll}s and ttl {ttl}s; 3.x always uses"
        ),
        );
        o.comment(1, "'containerpilot', 5s and 15s.");
    }
    o.line(1, "telemetry: {");
    o.line(2, &format!("port: {},", t.port));
    o.line(2, &format!("interfaces: {},", quote_list(&t.interfaces)));
    if !t.tags.is_empty() {
        o.line(2, &format!("tags: {},", quote_list(&t.tags)));
    }
    if !t.metrics.is_empty() {
        o.line(2, "metrics: [");
        for m in &t.metrics {
            let kind = match m.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
                MetricKind::Summary => "summary",
            };
            let mut parts = Vec::new();
            for (key, value) in [
                ("namespace", &m.namespace),
                ("subsystem", &m.subsystem),
                ("name", &m.name),
                ("help", &m.help),
            ] {
                if !value.is_empty() {
                    parts.push(format!("{key}: {}", quote(value)));
                }
            }
            parts.push(format!("type: {}", quote(kind)));
            o.line(3, &format!("{{{}}},", parts.join(", ")));
        }
        o.line(2, "],");
    }
    o.line(1, "},");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::template;
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const APP: [&str; 2] = ["/usr/local/bin/myapp", "--flag"];

    /// Stand-in resolver: `static:` specs, and eth0/inet find the LAN address.
    fn resolve(specs: &[String]) -> Result<IpAddr, String> {
        for s in specs {
            if let Some(ip) = s.strip_prefix("static:") {
                return ip
                    .parse()
                    .map_err(|_| format!("Unable to parse static ip static: in {s}"));
            }
            if s == "eth0" || s == "eth0:inet" || s == "inet" {
                return Ok(LAN);
            }
        }
        Err("none of the interface specifications were able to match".into())
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fixture_env() -> HashMap<String, String> {
        vars(&[
            ("ENV_VAR_NAME", "envval"),
            ("BACKEND", "backend"),
            ("TEST", "HELLO"),
            ("URL_TO_SERVICE", "http://svc"),
            ("API_KEY", "key"),
        ])
    }

    fn parse(src: &str) -> Spanned {
        json5::parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)))
    }

    fn with_env<T>(env: &HashMap<String, String>, f: impl FnOnce(&LoadEnv) -> T) -> T {
        f(&LoadEnv {
            env,
            resolve_ip: &resolve,
        })
    }

    fn app_args() -> Vec<String> {
        APP.iter().map(|s| s.to_string()).collect()
    }

    fn tr(src: &str, main: Option<&[String]>) -> Result<Config, Vec<ConfigError>> {
        with_env(&HashMap::new(), |env| translate(&parse(src), env, main))
    }

    fn ok(src: &str) -> Config {
        tr(src, Some(&app_args())).unwrap_or_else(|e| panic!("unexpected errors: {e:#?}"))
    }

    fn errs(src: &str) -> Vec<String> {
        match tr(src, None) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn fmt(d: Duration) -> String {
        duration::format(d)
    }

    /// One line per job with every field the runtime acts on.
    fn summary(j: &JobConfig) -> String {
        let mut s = j.name.clone();
        if let Some(e) = &j.exec {
            s += &format!(" exec=[{}]", e.join(", "));
        }
        if j.port != 0 {
            let ip = j.ip.map_or("-".to_string(), |i| i.to_string());
            s += &format!(
                " port={} ip={ip} ifaces=[{}]",
                j.port,
                j.interfaces.join(", ")
            );
        }
        if !j.tags.is_empty() {
            s += &format!(" tags=[{}]", j.tags.join(", "));
        }
        if let Some(c) = &j.consul {
            let dereg = c
                .deregister_critical_service_after
                .as_deref()
                .unwrap_or("-");
            s += &format!(" consul=({}, {dereg})", c.enable_tag_override);
        }
        if let Some(h) = &j.health {
            let exec = h
                .exec
                .as_ref()
                .map_or(String::new(), |e| format!("exec=[{}] ", e.join(", ")));
            s += &format!(
                " health=({exec}every {} ttl {} timeout {})",
                fmt(h.interval),
                h.ttl,
                fmt(h.timeout)
            );
        }
        match &j.when.trigger {
            Trigger::Startup => {}
            Trigger::Event { code, source, each } => {
                let kind = if *each { "each" } else { "once" };
                s += &format!(" when={kind} {} {source}", event_config_name(*code));
            }
            Trigger::Interval(d) => s += &format!(" every={}", fmt(*d)),
            other => s += &format!(" when={other:?}"),
        }
        if let Some(t) = j.timeout {
            s += &format!(" timeout={}", fmt(t));
        }
        match j.restarts {
            Restarts::Count(0) => {}
            Restarts::Count(n) => s += &format!(" restarts={n}"),
            Restarts::Unlimited => s += " restarts=unlimited",
        }
        if j.raw {
            s += " raw";
        }
        if let Some(m) = &j.sensor {
            s += &format!(" sensor={m}");
        }
        if j.always_healthy {
            s += " always-healthy";
        }
        s
    }

    fn summaries(c: &Config) -> Vec<String> {
        c.jobs.iter().map(summary).collect()
    }

    fn watch_summaries(c: &Config) -> Vec<String> {
        c.watches
            .iter()
            .map(|w| {
                let tag = w
                    .tag
                    .as_deref()
                    .map_or(String::new(), |t| format!(" tag={t}"));
                format!("{} every={}{tag}", w.name, fmt(w.interval))
            })
            .collect()
    }

    fn metric_summaries(c: &Config) -> Vec<String> {
        let Some(t) = &c.telemetry else {
            return Vec::new();
        };
        t.metrics
            .iter()
            .map(|m| format!("{} {:?} {:?}", m.full_name(), m.kind, m.help))
            .collect()
    }

    fn policy(main: &str, pre: Option<&str>, post: Option<&str>) -> Option<ExitPolicy> {
        Some(ExitPolicy {
            main: main.into(),
            pre_start: pre.map(str::to_string),
            post_stop: post.map(str::to_string),
        })
    }

    // ----- detection -----

    #[test]
    fn detects_2x_keys() {
        for src in [
            r#"{"services": []}"#,
            r#"{"backends": []}"#,
            r#"{"preStart": "x"}"#,
            r#"{"onStart": "x"}"#,
            r#"{"preStop": "x"}"#,
            r#"{"postStop": "x"}"#,
            r#"{"coprocesses": []}"#,
            r#"{"tasks": []}"#,
            r#"{"consul": "c:8500", "telemetry": {"sensors": []}}"#,
            r#"{"telemetry": {"Sensors": []}}"#,
        ] {
            assert_eq!(is_v2(&parse(src)), Ok(true), "{src}");
        }
    }

    #[test]
    fn shared_and_3x_keys_are_not_2x() {
        for src in [
            r#"{}"#,
            r#"{"consul": "newconsul:8500"}"#,
            r#"{"consul": "c", "logging": {}, "stopTimeout": 5, "telemetry": {"port": 9090}}"#,
            r#"{"etcd": {"endpoints": "http://e:4001"}}"#,
            r#"{"jobs": [], "watches": [], "control": {}}"#,
            r#"{"telemetry": {"metrics": []}}"#,
            // Top-level keys are case-sensitive in both generations.
            r#"{"Services": []}"#,
        ] {
            assert_eq!(is_v2(&parse(src)), Ok(false), "{src}");
        }
    }

    #[test]
    fn mixed_keys_name_both_kinds() {
        let src = "{\n  \"consul\": \"c\",\n  \"jobs\": [],\n  \"services\": [],\n  \"preStop\": \"x\",\n  \"telemetry\": {\"metrics\": []}\n}";
        let e = is_v2(&parse(src)).unwrap_err();
        assert_eq!(e.path, "");
        assert_eq!(e.line, Some(3));
        assert_eq!(
            e.msg,
            "mixes ContainerPilot 2.x keys (services, preStop) with 3.x keys (jobs, \
             telemetry.metrics); use one format (containerpilot -convert prints the 3.x \
             form of a 2.x config)"
        );
        // translate reports the same error instead of guessing.
        assert_eq!(errs(src), vec![format!("line 3: {}", e.msg)]);
    }

    // ----- translation details -----

    #[test]
    fn minimal_config_has_app_job_and_policy() {
        let c = ok(r#"{"consul": "consul:8500", "services": []}"#);
        assert_eq!(c.compat, Compat::V2);
        assert_eq!(
            summaries(&c),
            ["app exec=[/usr/local/bin/myapp, --flag] raw"]
        );
        assert_eq!(c.exit_policy, policy("app", None, None));
        assert_eq!(c.stop_timeout, Duration::from_secs(5));
        let consul = c.consul.unwrap();
        assert_eq!(
            (consul.address.as_str(), consul.scheme.as_str()),
            ("consul:8500", "http")
        );
        assert!(c.watches.is_empty() && c.telemetry.is_none());
    }

    #[test]
    fn without_application_the_app_job_has_no_exec() {
        let src = r#"{"consul": "c:8500", "preStart": "/bin/a", "preStop": "/bin/b"}"#;
        let c = tr(src, None).unwrap();
        assert_eq!(
            summaries(&c),
            [
                "preStart exec=[/bin/a] raw",
                "app when=once exitSuccess preStart raw",
                "preStop exec=[/bin/b] when=once stopping app raw",
            ]
        );
        assert_eq!(c.exit_policy, policy("app", Some("preStart"), None));
    }

    #[test]
    fn app_job_is_main_when_a_service_is_called_app() {
        let src = r#"{"consul": "c", "services": [{"name": "app", "port": 1, "poll": 1, "ttl": 2}],
                      "tasks": [{"name": "main", "command": "/t", "frequency": 1}]}"#;
        let c = ok(src);
        let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["app", "main-2", "main"]);
        assert_eq!(c.exit_policy.unwrap().main, "main");
    }

    #[test]
    fn on_start_is_an_alias_and_pre_start_wins() {
        let c = ok(r#"{"consul": "c", "onStart": "/bin/old"}"#);
        assert_eq!(summary(&c.jobs[0]), "preStart exec=[/bin/old] raw");
        let c = ok(r#"{"consul": "c", "onStart": "/bin/old", "preStart": "/bin/new"}"#);
        assert_eq!(summary(&c.jobs[0]), "preStart exec=[/bin/new] raw");
    }

    #[test]
    fn commands_split_on_single_spaces_and_format_arrays_go_style() {
        let c = ok(r#"{"consul": "c", "preStart": "  /bin/a  b c ",
                       "preStop": ["/bin/x", 1, 1.5, true, null, ["a", 2], {"k": "v"}]}"#);
        assert_eq!(c.jobs[0].exec.as_deref().unwrap(), ["/bin/a", "", "b", "c"]);
        let stop = c.jobs.iter().find(|j| j.name == "preStop").unwrap();
        assert_eq!(
            stop.exec.as_deref().unwrap(),
            ["/bin/x", "1", "1.5", "true", "<nil>", "[a 2]", "map[k:v]"]
        );
    }

    #[test]
    fn weak_typing_in_services() {
        let c = ok(
            r#"{"consul": "c", "services": [{"Name": "web", "PORT": "8080", "poll": 2.9,
                       "ttl": "0x10", "tags": [1, true], "interfaces": "eth0", "id": "ignored"}]}"#,
        );
        assert_eq!(
            summary(&c.jobs[0]),
            "web port=8080 ip=10.0.0.2 ifaces=[eth0] tags=[1, 1] health=(every 2s ttl 16 timeout 2s)"
        );
    }

    #[test]
    fn stop_timeout_values() {
        let st = |v: &str| ok(&format!(r#"{{"consul": "c", "stopTimeout": {v}}}"#)).stop_timeout;
        assert_eq!(st("0"), Duration::from_secs(5));
        assert_eq!(st("null"), Duration::from_secs(5));
        assert_eq!(st("\"10\""), Duration::from_secs(10));
        assert_eq!(st("2.9"), Duration::from_secs(2));
        assert_eq!(st("-1"), Duration::ZERO);
        assert_eq!(st("-7"), Duration::ZERO);
    }

    #[test]
    fn coprocess_restarts_table() {
        let r = |v: &str| {
            let src = format!(
                r#"{{"consul": "c", "coprocesses": [{{"command": "/c", "restarts": {v}}}]}}"#
            );
            ok(&src).jobs[0].restarts
        };
        assert_eq!(r("1.1"), Restarts::Count(1));
        assert_eq!(r("\"1\""), Restarts::Count(1));
        assert_eq!(r("3"), Restarts::Count(3));
        assert_eq!(r("\"unlimited\""), Restarts::Unlimited);
        assert_eq!(r("\"never\""), Restarts::Count(0));
        assert_eq!(r("0"), Restarts::Count(0));
        assert_eq!(r("\"0\""), Restarts::Count(0));
        assert_eq!(r("null"), Restarts::Count(0));
        for bad in ["\"invalid\"", "\"-1\"", "-1", "true", "{}"] {
            let src = format!(
                r#"{{"consul": "c", "coprocesses": [{{"command": "/c", "restarts": {bad}}}]}}"#
            );
            let e = errs(&src);
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(
                e[0].contains("coprocesses[0].restarts: invalid value"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn coprocess_name_defaults_to_command_line() {
        let c = ok(
            r#"{"consul": "c", "coprocesses": [{"command": "consul agent -dev"}, {"command": ["consul", "agent", "-dev"]}]}"#,
        );
        assert_eq!(c.jobs[0].name, "consul agent -dev");
        assert_eq!(c.jobs[1].name, "consul agent -dev-2");
    }

    #[test]
    fn task_durations() {
        let t = |freq: &str, timeout: &str| {
            let src = format!(
                r#"{{"consul": "c", "tasks": [{{"command": "/t", "frequency": {freq}, "timeout": {timeout}}}]}}"#
            );
            summary(&ok(&src).jobs[0])
        };
        assert_eq!(
            t("\"10s\"", "\"10\""),
            "task exec=[/t] every=10s timeout=10s restarts=unlimited"
        );
        assert_eq!(
            t("\"10\"", "null"),
            "task exec=[/t] every=10s timeout=10s restarts=unlimited"
        );
        assert_eq!(
            t("10", "\"\""),
            "task exec=[/t] every=10s timeout=10s restarts=unlimited"
        );
        assert_eq!(
            t("\"1ms\"", "\"1ms\""),
            "task exec=[/t] every=1ms timeout=1ms restarts=unlimited"
        );
        let e = errs(
            r#"{"consul": "c", "tasks": [{"command": "/t", "frequency": "1s", "timeout": "0"}]}"#,
        );
        assert_eq!(e, ["line 1: tasks[0].timeout: cannot be less than 1ms"]);
    }

    #[test]
    fn hook_timeouts_zero_means_none_and_tiny_rounds_up() {
        let c = ok(r#"{"consul": "c", "backends": [
            {"name": "a", "poll": 1, "onChange": "/x", "timeout": "0"},
            {"name": "b", "poll": 1, "onChange": "/x", "timeout": "1ns"},
            {"name": "c", "poll": 1, "onChange": "/x", "timeout": ""}]}"#);
        let timeouts: Vec<Option<Duration>> = c.jobs.iter().map(|j| j.timeout).collect();
        assert_eq!(timeouts[..3], [None, Some(MIN_TIMEOUT), None]);
    }

    #[test]
    fn later_sensor_with_the_same_name_replaces_the_earlier() {
        let c = ok(r#"{"consul": "c", "telemetry": {"sensors": [
            {"name": "m", "type": "counter", "poll": 1, "check": "/first"},
            {"name": "m", "type": "gauge", "poll": 2, "check": "/second"}]}}"#);
        assert_eq!(metric_summaries(&c), ["m Gauge \"\""]);
        assert_eq!(
            summary(&c.jobs[0]),
            "sensor-m exec=[/second] every=2s timeout=2s restarts=unlimited sensor=m"
        );
    }

    #[test]
    fn hidden_telemetry_settings_shape_the_service() {
        let c = ok(
            r#"{"consul": "c", "telemetry": {"servicename": "metrics", "ttl": 30, "poll": 10, "url": "/metrics", "mux": 1}}"#,
        );
        assert_eq!(
            summary(c.jobs.last().unwrap()),
            "metrics port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 10s ttl 30 timeout 10s) always-healthy"
        );
    }

    #[test]
    fn consul_forms_and_environment() {
        let get = |src: &str, env: &[(&str, &str)]| {
            with_env(&vars(env), |e| translate(&parse(src), e, None))
                .unwrap()
                .consul
                .unwrap()
        };
        let c = get(r#"{"consul": "https://https://x:1", "tasks": []}"#, &[]);
        assert_eq!(
            (c.scheme.as_str(), c.address.as_str()),
            ("https", "https://x:1")
        );
        let c = get(
            r#"{"consul": {"Address": "c:8500", "token": "t"}, "tasks": []}"#,
            &[("CONSUL_HTTP_TOKEN", "envtoken")],
        );
        assert_eq!(
            (c.address.as_str(), c.token.as_deref()),
            ("c:8500", Some("envtoken"))
        );
        let c = get(
            r#"{"consul": "", "tasks": []}"#,
            &[("CONSUL_HTTP_ADDR", "https://a:1")],
        );
        assert_eq!((c.scheme.as_str(), c.address.as_str()), ("https", "a:1"));
        let e = errs(r#"{"consul": {"address": "c", "tls": {}}, "tasks": []}"#);
        assert_eq!(e, ["line 1: consul: has invalid keys: tls"]);
    }

    #[test]
    fn etcd_block_is_parsed() {
        let src = r#"{"etcd": {"endpoints": ["http://a:4001", 7, "http://b:4001"], "prefix": ""}, "tasks": []}"#;
        let got = with_env(&HashMap::new(), |e| etcd(&parse(src), e)).unwrap();
        let want = EtcdConfig {
            endpoints: vec!["http://a:4001".into(), "http://b:4001".into()],
            prefix: "/containerpilot".into(),
        };
        assert_eq!(got, Some(want));
        let c = tr(src, None).unwrap();
        assert_eq!(c.consul, None);
    }

    #[test]
    fn errors_are_collected_with_lines() {
        let src = "{\n \"consul\": \"c\",\n \"services\": [\n  {\"name\": \"a\"},\n  {\"name\": \"b\", \"port\": 1, \"poll\": 1, \"ttl\": 1, \"health\": []}\n ],\n \"tasks\": [{}]\n}";
        assert_eq!(
            errs(src),
            [
                "line 4: services[0].poll: must be > 0",
                "line 4: services[0].ttl: must be > 0",
                "line 4: services[0].port: must be > 0",
                "line 5: services[1].health: received zero-length argument",
                "line 7: tasks[0].command: is required",
                "line 7: tasks[0].frequency: is required",
            ]
        );
    }

    #[test]
    fn convert_refuses_names_3x_rejects() {
        let src =
            r#"{"consul": "c", "services": [{"name": "my_app", "port": 1, "poll": 1, "ttl": 1}]}"#;
        assert!(tr(src, None).is_ok(), "2.x accepted the name");
        let e = with_env(&HashMap::new(), |env| convert(&parse(src), env)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0]
            .msg
            .starts_with("cannot convert: 'my_app' is not a valid 3.x service name"));
    }

    #[test]
    fn sensor_exec_quotes_for_the_shell() {
        let check = vec!["/bin/x".to_string(), "it's".to_string(), "a b".to_string()];
        assert_eq!(
            sensor_exec(&check, "ns_m"),
            [
                "/bin/sh",
                "-c",
                "v=$(/bin/x 'it'\\''s' 'a b') || exit $?; set -f; set -- $v; exec containerpilot -putmetric \"ns_m=$*\""
            ]
        );
    }

    // ----- fixtures -----

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
    }

    fn read_fixture(path: &std::path::Path) -> String {
        let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        template::render(&raw, &fixture_env()).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    }

    fn fixture_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    }

    struct Expect {
        file: &'static str,
        jobs: &'static [&'static str],
        watches: &'static [&'static str],
        metrics: &'static [&'static str],
        policy: (&'static str, Option<&'static str>, Option<&'static str>),
    }

    const FULL_IFACES: &str =
        "eth0, eth1[1], 192.168.0.0/16, 2001:db8::/64, eth2:inet, eth2:inet6, inet, inet6";

    fn expectations() -> Vec<Expect> {
        vec![
            Expect {
                file: "app-with-consul-prestart-sighup.json",
                jobs: &[
                    "preStart exec=[/bin/sh, -c, sed -i 's/8888/8000/' /app-with-consul-prestart-sighup.json && kill -HUP 1] raw",
                    "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8888] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("main", Some("preStart"), None),
            },
            Expect {
                file: "app-with-consul-prestart-sigusr1.json",
                jobs: &[
                    "preStart exec=[/bin/sh, -c, kill -USR1 1] raw",
                    "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("main", Some("preStart"), None),
            },
            Expect {
                file: "app-with-consul.json",
                jobs: &[
                    "preStart exec=[/bin/prestart-app.sh] raw",
                    "onChange-nginx exec=[/bin/reload-app.sh] when=each changed watch.nginx",
                    "onChange-app exec=[/bin/reload-app.sh] when=each changed watch.app",
                    "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] tags=[application] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "sensor-containerpilot_app_some_counter exec=[/bin/sensor.sh] every=1s timeout=1s restarts=unlimited sensor=containerpilot_app_some_counter",
                    "task1 exec=[/bin/task.sh, task1] every=500ms timeout=500ms restarts=unlimited",
                    "task2 exec=[/bin/task.sh, task2, 2s] every=1.5s timeout=1.5s restarts=unlimited",
                    "task3 exec=[/bin/task.sh, task3, 1s] every=1.5s timeout=100ms restarts=unlimited",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                    "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 5s ttl 15 timeout 5s) always-healthy",
                ],
                watches: &["nginx every=7s", "app every=5s tag=application"],
                metrics: &["containerpilot_app_some_counter Counter \"help text\""],
                policy: ("main", Some("preStart"), None),
            },
            Expect {
                file: "app-with-coprocess.json",
                jobs: &[
                    "/bin/coprocess.sh --interval 1 exec=[/bin/coprocess.sh, --interval, 1] restarts=1",
                    "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s)",
                    "main exec=[/usr/local/bin/myapp, --flag] raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("main", None, None),
            },
            Expect {
                file: "app-with-etcd.json",
                jobs: &[
                    "preStart exec=[/bin/prestart-app.sh] raw",
                    "onChange-nginx exec=[/bin/reload-app.sh] when=each changed watch.nginx",
                    "onChange-app exec=[/bin/reload-app.sh] when=each changed watch.app",
                    "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &["nginx every=7s", "app every=5s tag=application"],
                metrics: &[],
                policy: ("main", Some("preStart"), None),
            },
            Expect {
                file: "core-app-test.json",
                jobs: &[
                    "preStart exec=[/bin/to/preStart.sh, arg1, arg2] raw",
                    "onChange-upstreamA exec=[/bin/to/onChangeEvent/for/upstream/A.sh, HELLO] when=each changed watch.upstreamA",
                    "onChange-upstreamB exec=[/bin/to/onChangeEvent/for/upstream/B.sh] when=each changed watch.upstreamB",
                    "serviceA port=8080 ip=10.0.0.2 ifaces=[eth0] tags=[tag1, tag2] health=(exec=[/bin/to/healthcheck/for/service/A.sh] every 30s ttl 19 timeout 30s) when=once exitSuccess preStart",
                    "serviceB port=5000 ip=10.0.0.2 ifaces=[ethwe, eth0] health=(exec=[/bin/to/healthcheck/for/service/B.sh] every 30s ttl 103 timeout 30s) when=once exitSuccess preStart",
                    "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                    "preStop exec=[/bin/to/preStop.sh, arg1, arg2] when=once stopping app raw",
                    "postStop exec=[/bin/to/postStop.sh] when=once stopped app raw",
                ],
                watches: &["upstreamA every=11s tag=dev", "upstreamB every=1m19s"],
                metrics: &[],
                policy: ("app", Some("preStart"), Some("postStop")),
            },
            Expect {
                file: "cp2-readme-template.json",
                jobs: &[
                    "preStart exec=[/opt/containerpilot/onStart-script.sh, http://svc, key] raw",
                    "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("app", Some("preStart"), None),
            },
            Expect {
                file: "cp2-readme.json",
                jobs: &[
                    "preStart exec=[/opt/containerpilot/onStart-script.sh, envval] raw",
                    "onChange-nginx exec=[/opt/containerpilot/reload-app.sh] when=each changed watch.nginx",
                    "onChange-app exec=[/opt/containerpilot/reload-app.sh] when=each changed watch.app",
                    // FULL_IFACES, spelled out by the test below.
                    "app port=80 ip=10.0.0.2 ifaces=[IFACES] tags=[tag1] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/app] every 10s ttl 30 timeout 10s) when=once exitSuccess preStart",
                    "sensor-metric_id exec=[/bin/sensor.sh] every=5s timeout=5s restarts=unlimited sensor=metric_id",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                    "preStop exec=[/opt/containerpilot/preStop-script.sh] when=once stopping main raw",
                    "postStop exec=[/opt/containerpilot/postStop-script.sh] when=once stopped main raw",
                    "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 5s ttl 15 timeout 5s) always-healthy",
                ],
                watches: &["nginx every=30s", "app every=10s"],
                metrics: &["metric_id Counter \"help text\""],
                policy: ("main", Some("preStart"), Some("postStop")),
            },
            Expect {
                file: "docs-configuration.json",
                jobs: &[
                    "preStart exec=[/usr/local/bin/setup.sh, envval] raw",
                    "agent exec=[/usr/local/bin/agent, -config-dir, /etc/agent] when=once exitSuccess preStart restarts=unlimited",
                    "onChange-database exec=[/usr/local/bin/reconfigure-db.sh] when=each changed watch.database timeout=10s",
                    "onChange-cache exec=[/usr/local/bin/reconfigure-cache.sh] when=each changed watch.cache timeout=5s",
                    "app port=80 ip=10.0.0.2 ifaces=[IFACES, static:192.168.1.100] tags=[web, v1] consul=(true, 90m) health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 10s ttl 30 timeout 10s) when=once exitSuccess preStart",
                    "sensor-requests_total exec=[/usr/local/bin/count-requests.sh] every=5s timeout=5s restarts=unlimited sensor=requests_total",
                    "rotate exec=[/usr/local/bin/rotate-logs.sh, --keep, 3] every=1.5s timeout=100ms restarts=unlimited",
                    "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                    "preStop exec=[/usr/local/bin/drain.sh] when=once stopping main raw",
                    "postStop exec=[/usr/local/bin/cleanup.sh] when=once stopped main raw",
                    "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] tags=[op] health=(every 5s ttl 15 timeout 5s) always-healthy",
                ],
                watches: &["database every=30s", "cache every=10s tag=primary"],
                metrics: &["requests_total Counter \"requests served\""],
                policy: ("main", Some("preStart"), Some("postStop")),
            },
            Expect {
                file: "docs-health.json",
                jobs: &[
                    "web port=8080 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost:8080/] every 3s ttl 10 timeout 3s)",
                    "app exec=[/usr/local/bin/myapp, --flag] raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("app", None, None),
            },
            Expect {
                file: "docs-service-discovery.json",
                jobs: &[
                    "onChange-backend exec=[/usr/local/bin/reload.sh] when=each changed watch.backend",
                    "app exec=[/usr/local/bin/myapp, --flag] raw",
                ],
                watches: &["backend every=7s"],
                metrics: &[],
                policy: ("app", None, None),
            },
            Expect {
                file: "docs-start-stop.json",
                jobs: &[
                    "preStart exec=[/usr/local/bin/prepare.sh, arg1, arg2] raw",
                    "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                    "preStop exec=[/usr/local/bin/drain.sh, --wait, 10] when=once stopping app raw",
                    "postStop exec=[/usr/local/bin/report.sh] when=once stopped app raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("app", Some("preStart"), Some("postStop")),
            },
            Expect {
                file: "docs-telemetry.json",
                jobs: &[
                    "sensor-myapp_queue_depth exec=[/usr/local/bin/queue-depth.sh, --queue, main] every=5s timeout=5s restarts=unlimited sensor=myapp_queue_depth",
                    "app exec=[/usr/local/bin/myapp, --flag] raw",
                    "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0] tags=[monitoring] health=(every 5s ttl 15 timeout 5s) always-healthy",
                ],
                watches: &[],
                metrics: &["myapp_queue_depth Gauge \"jobs waiting in the queue\""],
                policy: ("app", None, None),
            },
            Expect {
                file: "nginx-with-consul.json",
                jobs: &[
                    "preStart exec=[consul-template, -once, -consul, consul:8500, -template, /etc/containerpilot/nginx.conf.ctmpl:/etc/nginx/nginx.conf] raw",
                    "onChange-app exec=[consul-template, -once, -consul, consul:8500, -template, /etc/containerpilot/nginx.conf.ctmpl:/etc/nginx/nginx.conf:nginx -s reload] when=each changed watch.app",
                    "nginx port=80 ip=10.0.0.2 ifaces=[eth0] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &["app every=1s"],
                metrics: &[],
                policy: ("app", Some("preStart"), None),
            },
            Expect {
                file: "nginx-with-etcd.json",
                jobs: &[
                    "preStart exec=[confd, -onetime, -backend, etcd, -node, http://etcd:4001] raw",
                    "onChange-app exec=[/bin/sh, -c, confd -onetime -backend etcd -node http://etcd:4001 && nginx -s reload] when=each changed watch.app",
                    "nginx port=80 ip=10.0.0.2 ifaces=[eth0] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                    "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                ],
                watches: &["app every=1s"],
                metrics: &[],
                policy: ("app", Some("preStart"), None),
            },
            Expect {
                file: "test-envvars.json",
                jobs: &[
                    "etcd port=4001 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost:4001/health] every 2s ttl 10 timeout 2s)",
                    "app exec=[/usr/local/bin/myapp, --flag] raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("app", None, None),
            },
            Expect {
                file: "zombie-maker.json",
                jobs: &[
                    "zombie-maker port=8080 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/zombie.sh] every 1s ttl 5 timeout 1s)",
                    "app exec=[/usr/local/bin/myapp, --flag] raw",
                ],
                watches: &[],
                metrics: &[],
                policy: ("app", None, None),
            },
        ]
    }

    #[test]
    fn every_valid_fixture_translates_as_expected() {
        let expectations = expectations();
        let files = fixture_files(&fixture_dir());
        let names: Vec<String> = files
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let expected: Vec<&str> = expectations.iter().map(|e| e.file).collect();
        assert_eq!(names, expected, "every fixture has an expectation");
        let main = app_args();
        for exp in &expectations {
            let src = read_fixture(&fixture_dir().join(exp.file));
            let root = parse(&src);
            assert_eq!(is_v2(&root), Ok(true), "{}", exp.file);
            let c = with_env(&HashMap::new(), |env| translate(&root, env, Some(&main)))
                .unwrap_or_else(|e| panic!("{}: {e:#?}", exp.file));
            let jobs: Vec<String> = exp
                .jobs
                .iter()
                .map(|j| j.replace("IFACES", FULL_IFACES))
                .collect();
            assert_eq!(summaries(&c), jobs, "{}", exp.file);
            assert_eq!(watch_summaries(&c), exp.watches, "{}", exp.file);
            assert_eq!(metric_summaries(&c), exp.metrics, "{}", exp.file);
            let (m, pre, post) = exp.policy;
            assert_eq!(c.exit_policy, policy(m, pre, post), "{}", exp.file);
            assert_eq!(c.compat, Compat::V2);
        }
    }

    #[test]
    fn fixture_details_beyond_jobs() {
        let load = |file: &str| {
            let src = read_fixture(&fixture_dir().join(file));
            with_env(&HashMap::new(), |env| translate(&parse(&src), env, None)).unwrap()
        };
        let c = load("app-with-consul.json");
        assert_eq!(c.logging.level, LogLevel::Debug);
        assert_eq!(c.logging.format, LogFormat::Text);
        assert_eq!(c.logging.output, LogOutput::Stdout);
        let t = c.telemetry.unwrap();
        assert_eq!((t.port, t.ip), (9090, Some(LAN)));
        assert_eq!(load("docs-start-stop.json").stop_timeout, Duration::ZERO);
        let c = load("app-with-etcd.json");
        assert_eq!(c.consul, None);
        let src = read_fixture(&fixture_dir().join("app-with-etcd.json"));
        let e = with_env(&HashMap::new(), |env| etcd(&parse(&src), env)).unwrap();
        assert_eq!(
            e,
            Some(EtcdConfig {
                endpoints: vec!["http://etcd:4001".into()],
                prefix: "/containerpilot".into()
            })
        );
    }

    #[test]
    fn every_invalid_fixture_fails_as_expected() {
        let files = fixture_files(&fixture_dir().join("invalid"));
        assert!(files.len() >= 40, "only {} invalid fixtures", files.len());
        for path in files {
            let src = read_fixture(&path);
            let first = src.lines().next().unwrap_or_default();
            let spec = first
                .strip_prefix("// expect: ")
                .unwrap_or_else(|| panic!("{path:?}: no expect line"));
            let (want_path, want_msg) = spec
                .split_once(": ")
                .unwrap_or_else(|| panic!("{path:?}: bad expect line"));
            let errors = with_env(&HashMap::new(), |env| translate(&parse(&src), env, None))
                .err()
                .unwrap_or_else(|| panic!("{path:?}: loaded"));
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == want_path && e.msg.contains(want_msg) && e.line == Some(2)),
                "{path:?}: want {want_path}: {want_msg}, got {errors:#?}"
            );
        }
    }

    // ----- -convert round trip -----

    /// The fields both paths must agree on.
    fn comparable(j: &JobConfig, sensor_jobs: &[&str]) -> String {
        let mut j = j.clone();
        j.line = 0;
        if j.always_healthy {
            // 3.x adds its version tag to the telemetry service; 2.x did not.
            j.tags.clear();
        }
        if sensor_jobs.contains(&j.name.as_str()) {
            // The 3.x form runs the check through `-putmetric`.
            j.sensor = None;
            j.exec = None;
        }
        format!("{j:?}")
    }

    #[test]
    fn convert_output_decodes_to_the_same_model() {
        let env = fixture_env();
        for path in fixture_files(&fixture_dir()) {
            let src = read_fixture(&path);
            let root = parse(&src);
            let (translated, text) = with_env(&env, |e| {
                let c =
                    translate(&root, e, None).unwrap_or_else(|err| panic!("{path:?}: {err:#?}"));
                let text = convert(&root, e).unwrap_or_else(|err| panic!("{path:?}: {err:#?}"));
                (c, text)
            });
            let converted = parse(&text);
            assert_eq!(is_v2(&converted), Ok(false), "{path:?}");
            let decoded = with_env(&env, |e| decode::decode(&converted, e))
                .unwrap_or_else(|err| panic!("{path:?}: {err:#?}\n{text}"));
            let sensor_jobs: Vec<&str> = translated
                .jobs
                .iter()
                .filter(|j| j.sensor.is_some())
                .map(|j| j.name.as_str())
                .collect();
            let a: Vec<String> = translated
                .jobs
                .iter()
                .map(|j| comparable(j, &sensor_jobs))
                .collect();
            let b: Vec<String> = decoded
                .jobs
                .iter()
                .map(|j| comparable(j, &sensor_jobs))
                .collect();
            assert_eq!(a, b, "{path:?}\n{text}");
            assert_eq!(translated.watches, decoded.watches, "{path:?}");
            assert_eq!(translated.telemetry, decoded.telemetry, "{path:?}");
            assert_eq!(translated.consul, decoded.consul, "{path:?}");
            assert_eq!(translated.logging, decoded.logging, "{path:?}");
            assert_eq!(translated.stop_timeout, decoded.stop_timeout, "{path:?}");
            // Sensor jobs keep their name and timing and send the value themselves.
            for (t, d) in translated.jobs.iter().zip(&decoded.jobs) {
                if let Some(metric) = &t.sensor {
                    let exec = d.exec.as_deref().unwrap_or_default();
                    assert_eq!(exec[..2], ["/bin/sh", "-c"]);
                    assert!(
                        exec[2].contains(&format!("-putmetric \"{metric}=$*\"")),
                        "{exec:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn convert_text_for_a_small_config() {
        let src = r#"{"consul": "consul:8500", "onStart": "/bin/start",
            "services": [{"name": "web", "port": 80, "poll": 2, "ttl": 6}],
            "backends": [{"name": "db", "poll": 3, "tag": "p", "onChange": "/bin/reload"}],
            "stopTimeout": -1}"#;
        let text = with_env(&HashMap::new(), |e| convert(&parse(src), e)).unwrap();
        let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with("//")).collect();
        assert_eq!(
            body,
            [
                "{",
                "  consul: \"consul:8500\",",
                "  logging: {level: \"INFO\", format: \"default\", output: \"stdout\"},",
                "  // 2.x: a negative stopTimeout sends SIGKILL at once.",
                "  stopTimeout: -1,",
                "  jobs: [",
                "    // 2.x `onStart` (the old name of `preStart`).",
                "    // 2.x exited with this hook's code when it failed.",
                "    {",
                "      name: \"preStart\",",
                "      exec: [\"/bin/start\"],",
                "      logging: {raw: true},",
                "    },",
                "    {",
                "      name: \"onChange-db\",",
                "      exec: [\"/bin/reload\"],",
                "      when: {source: \"watch.db\", each: \"changed\"},",
                "    },",
                "    {",
                "      name: \"web\",",
                "      port: 80,",
                "      interfaces: [\"eth0:inet\"],",
                "      health: {interval: 2, ttl: 6, timeout: \"2s\"},",
                "      when: {source: \"preStart\", once: \"exitSuccess\"},",
                "    },",
                "    // The application. 2.x took it from the command line: add its `exec` here, or",
                "    // pass it as trailing arguments (then the container exits with its exit code).",
                "    {",
                "      name: \"app\",",
                "      when: {source: \"preStart\", once: \"exitSuccess\"},",
                "      logging: {raw: true},",
                "    },",
                "  ],",
                "  watches: [",
                "    {name: \"db\", interval: 3, tag: \"p\"},",
                "  ],",
                "}",
            ]
        );
    }
}
