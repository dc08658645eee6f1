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

mod convert;
mod jobs;
mod telemetry;

#[cfg(test)]
mod tests;

use super::decode::{self, DEFAULT_STOP_TIMEOUT};
use super::json5::{self, Spanned, Value};
use super::reader::{nanos_to_duration, ConfigError, Dialect, Fields, LoadEnv, Reader};
use super::types::*;
use crate::events::EventCode;
use convert::{convert_blockers, emit};
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
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

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
        r: Reader::new(env, Dialect::V2),
        taken: Vec::new(),
        extras: Extras::default(),
    };
    let mut config = t.config(root, main);
    config.warnings = std::mem::take(&mut t.r.warnings);
    let mut extras = t.extras;
    extras.ignored = std::mem::take(&mut t.r.ignored);
    t.r.finish((config, extras))
}

struct Translator<'e, 'a> {
    r: Reader<'e, 'a>,
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

fn secs(n: u32) -> Duration {
    Duration::from_secs(n.into())
}

fn plain_job(name: String, exec: Option<Vec<String>>, line: u32) -> JobConfig {
    JobConfig {
        line,
        ..JobConfig::new(&name, exec)
    }
}

impl Translator<'_, '_> {
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

    /// Health/onChange/sensor `timeout`: 0 means none; 2.x crashed on negative
    /// values. `floor` lifts tiny values to what the 3.x job model accepts.
    fn hook_timeout(&mut self, f: &Fields, name: &str, floor: Duration) -> Option<Duration> {
        let (ns, line) = self.r.duration(f, name)?;
        if ns < 0 {
            self.r.err(&f.path(name), line, "must not be negative");
            return None;
        }
        (ns > 0).then(|| nanos_to_duration(ns).max(floor))
    }

    // ----- the top level -----

    fn config(&mut self, root: &Spanned, main: Option<&[String]>) -> Config {
        let mut config = Config::empty(Compat::V2, DEFAULT_STOP_TIMEOUT);
        if let Err(e) = is_v2(root) {
            self.r.errors.push(e);
            return config;
        }
        let empty = Vec::new();
        let entries = match &root.value {
            Value::Object(entries) => entries,
            // Go's decoder reads a top-level null as an empty config.
            Value::Null => &empty,
            _ => {
                self.r.expected("", root, "an object");
                return config;
            }
        };
        let known: Vec<&str> = V2_KEYS.iter().chain(&SHARED_KEYS).copied().collect();
        self.r.unknown_top_level(entries, root.line, &known);
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
            config.logging = self.r.logging(v);
        }
        if let Some(v) = present(top("stopTimeout")) {
            if let Some(t) = self.r.stop_timeout(v, DEFAULT_STOP_TIMEOUT) {
                config.stop_timeout = t;
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
                self.r.err("telemetry", t.job.line, msg);
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
            Some(name) => WhenConfig::on_event(EventCode::ExitSuccess, name, false),
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
                job.when = WhenConfig::on_event(code, &app, false);
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
            self.r.command(v, path).map(|exec| (exec, v.line))
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
                self.r.err("consul", line, msg);
            }
            (Some(c), Some(e)) => {
                config.consul = self.r.consul(c);
                self.extras.etcd = self.etcd(e);
                self.r
                    .err("etcd", e.line, "more than one discovery backend defined");
            }
            (Some(c), None) => {
                config.consul = self.r.consul(c);
                self.extras.consul_src = Some(c.clone());
            }
            (None, Some(e)) => self.extras.etcd = self.etcd(e),
        }
    }

    fn etcd(&mut self, v: &Spanned) -> Option<EtcdConfig> {
        let f = self.r.fields(v, "etcd", &["endpoints", "prefix"])?;
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
                self.r.err(
                    &f.path("endpoints"),
                    f.line_of("endpoints"),
                    "must be provided",
                );
                return None;
            }
        };
        if endpoints.iter().all(|e| e.trim().is_empty()) {
            let msg = "no endpoints available";
            self.r
                .err(&f.path("endpoints"), f.line_of("endpoints"), msg);
            return None;
        }
        let prefix = self
            .r
            .text_field(&f, "prefix")
            .unwrap_or_else(|| decode::DEFAULT_ETCD_PREFIX.to_string());
        Some(EtcdConfig { endpoints, prefix })
    }
}
