//! `jobs[]`: what runs, when it starts (`when`), how often it may restart, its
//! health check and, for advertised jobs (a `port`), how it is registered.

use crate::config::json5::{Spanned, Value};
use crate::config::reader::{join, Fields, Reader};
use crate::config::types::*;
use crate::events::EventCode;

/// Used when a job or telemetry gives no interfaces (3.8 code, not its docs).
const DEFAULT_INTERFACES: [&str; 2] = ["eth0:inet", "inet"];
pub(super) const TELEMETRY_JOB: &str = "containerpilot";
const RESTARTS_ACCEPTS: &str = "accepts positive integers, \"unlimited\", or \"never\"";
pub(super) const NAME_RULE: &str =
    "service names must be alphanumeric with dashes to comply with service discovery";

/// `^[a-z][a-zA-Z0-9-]+$`: Consul service names and watch names.
pub(in crate::config) fn is_service_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub(super) fn with_default_interfaces(list: Vec<String>) -> Vec<String> {
    if list.is_empty() {
        DEFAULT_INTERFACES.iter().map(|s| s.to_string()).collect()
    } else {
        list
    }
}

/// The text of a repeated job (or 2.x service) name warning.
pub(in crate::config) fn duplicate_name_warning(
    kind: &str,
    name: &str,
    first_path: &str,
    first_line: u32,
) -> String {
    format!(
        "duplicate {kind} name '{name}' (also {first_path}.name at line {first_line}): \
         both run as separate {kind}s sharing the name (see README, duplicate names)"
    )
}

/// Whether `when.<key>` is set (restarts "unlimited" is refused next to
/// `each` and `cron`).
fn when_has(job: &Fields, key: &str) -> bool {
    let Some(Value::Object(entries)) = job.get("when").map(|w| &w.value) else {
        return false;
    };
    let found = entries.iter().find(|(k, _)| k.name == key).or_else(|| {
        entries
            .iter()
            .find(|(k, _)| k.name.eq_ignore_ascii_case(key))
    });
    match found.map(|(_, v)| &v.value) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

/// Line of a named key's value in an object, exact or case-folded.
pub(in crate::config) fn field_line(v: &Spanned, name: &str) -> Option<u32> {
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

/// Where to point at a job's `when.source` in messages: its JSON path and
/// line, found from the job's line and name (the job list skips nulls).
pub(in crate::config) fn source_site(root: &Spanned, job_line: u32, name: &str) -> (String, u32) {
    let jobs = match &root.value {
        Value::Object(entries) => entries.iter().find(|(k, _)| k.name == "jobs"),
        _ => None,
    };
    let Some((
        _,
        Spanned {
            value: Value::Array(items),
            ..
        },
    )) = jobs
    else {
        return ("jobs".into(), job_line);
    };
    let named = |v: &Spanned| match &v.value {
        Value::Object(e) => e
            .iter()
            .any(|(k, n)| k.name == "name" && matches!(&n.value, Value::String(s) if s == name)),
        _ => false,
    };
    let found = items
        .iter()
        .enumerate()
        .find(|(_, v)| v.line == job_line && named(v));
    let Some((i, item)) = found else {
        return ("jobs".into(), job_line);
    };
    let path = format!("jobs[{i}].when.source");
    let when = match &item.value {
        Value::Object(e) => e.iter().find(|(k, _)| k.name.eq_ignore_ascii_case("when")),
        _ => None,
    };
    let line = when
        .and_then(|(_, w)| field_line(w, "source").or(Some(w.line)))
        .unwrap_or(item.line);
    (path, line)
}

impl Reader<'_, '_> {
    /// The jobs, and the path each was read at (for checks made once the
    /// watches are known).
    pub(super) fn jobs(
        &mut self,
        v: &Spanned,
        telemetry_on: bool,
    ) -> (Vec<JobConfig>, Vec<String>) {
        let Value::Array(items) = &v.value else {
            self.expected("jobs", v, "an array");
            return (Vec::new(), Vec::new());
        };
        let mut jobs = Vec::new();
        let mut paths = Vec::new();
        // (name, path, line) of the first job with each name
        let mut seen: Vec<(String, String, u32)> = Vec::new();
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
                // 3.8 ran both jobs (configs in the wild rely on it): a warning.
                if let Some((_, first, line)) = seen.iter().find(|(n, _, _)| *n == job.name) {
                    let msg = duplicate_name_warning("job", &job.name, first, *line);
                    self.warn(&join(&path, "name"), name_line, msg);
                } else {
                    seen.push((job.name.clone(), path.clone(), name_line));
                }
            }
            jobs.push(job);
            paths.push(path);
        }
        self.check_signal_targets(&jobs, &paths);
        (jobs, paths)
    }

    fn job(&mut self, v: &Spanned, path: &str) -> Option<JobConfig> {
        const KEYS: [&str; 17] = [
            "name",
            "exec",
            "render",
            "signal",
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
            "user",
            "group",
        ];
        let f = self.fields(v, path, &KEYS)?;
        let name = self.name(&f);
        let exec = match f.get("exec") {
            Some(e) => self.command(e, &f.path("exec")),
            None => None,
        };
        let render = match f.get("render") {
            Some(r) => self.render(r, &f.path("render")),
            None => None,
        };
        let signal = match f.get("signal") {
            Some(s) => self.signal_job(s, &f.path("signal")),
            None => None,
        };
        let work = ["exec", "render", "signal"];
        if work.iter().filter(|k| f.get(k).is_some()).count() > 1 {
            let msg = "can have only one of 'exec', 'render' or 'signal'";
            self.err(path, v.line, msg);
        }
        let port = self.port(&f, 0);
        let health = self.health(&f);
        if port != 0 && f.get("health").is_none() {
            let msg = "must be set if 'port' is set";
            self.err(&f.path("health"), f.line_of("health"), msg);
        }

        let when = self.when(&f);
        let unbounded = ["each", "cron"].into_iter().find(|k| when_has(&f, k));
        let mut timeout = self.min_1ms_duration(&f, "timeout");
        let mut restarts = self.restarts(&f, unbounded);
        let user = self.user(&f);
        if let Trigger::Interval(interval) = when.trigger {
            timeout = timeout.or(Some(interval));
            if f.get("restarts").is_none() {
                restarts = Restarts::Unlimited;
            }
        }
        let stop_timeout = self.positive_duration(&f, "stopTimeout");
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
            user,
            stop_timeout,
            raw,
            always_healthy: false,
            sensor: None,
            render,
            signal,
            line: v.line,
        };
        // Discovery fields are not even parsed for jobs that are not advertised.
        if port != 0 {
            self.advertised(&f, &mut job);
        }
        Some(job)
    }

    /// `port` between `min` and 65535; 0 (not advertised) when absent or wrong.
    pub(super) fn port(&mut self, f: &Fields, min: i64) -> u16 {
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
        if let Some(status) = self.text_field(f, "initial_status") {
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
            job.ip = self.resolve(
                &job.interfaces,
                &f.path("interfaces"),
                f.line_of("interfaces"),
            );
        }
    }

    /// A job's (2.x: a service's) `consul` extras.
    pub(in crate::config) fn job_consul(
        &mut self,
        v: &Spanned,
        path: &str,
    ) -> Option<JobConsulExtras> {
        let f = self.fields(
            v,
            path,
            &["enableTagOverride", "deregisterCriticalServiceAfter"],
        )?;
        let enable_tag_override = self.bool_field(&f, "enableTagOverride").unwrap_or(false);
        // Fix over 3.8: an absent or empty value means "not set" instead of
        // failing to parse as a duration.
        let dereg = self.go_duration_text(&f, "deregisterCriticalServiceAfter");
        Some(JobConsulExtras {
            enable_tag_override,
            deregister_critical_service_after: dereg,
        })
    }

    fn health(&mut self, job: &Fields) -> Option<HealthConfig> {
        let v = job.get("health")?;
        let path = job.path("health");
        let keys = [
            "exec", "http", "tcp", "headers", "status", "tls", "interval", "ttl", "timeout",
            "logging",
        ];
        let f = self.fields(v, &path, &keys)?;
        let exec = match f.get("exec") {
            Some(e) => self.command(e, &f.path("exec")),
            None => None,
        };
        let native = self.native_check(&f);
        let kinds: Vec<&str> = ["exec", "http", "tcp"]
            .into_iter()
            .filter(|k| f.get(k).is_some())
            .collect();
        if kinds.len() > 1 {
            let msg = format!(
                "can have only one of 'exec', 'http' or 'tcp' (has {})",
                kinds.join(", ")
            );
            self.err(&path, f.line, msg);
        }
        let interval = self.positive_int(&f, "interval");
        let ttl = self.positive_int(&f, "ttl");
        let interval = std::time::Duration::from_secs(interval.unwrap_or(1).into());
        // 3.8 reads "0" as "no timeout"; a check must end, so it falls back to
        // the interval like an absent timeout does.
        let timeout = self.positive_duration(&f, "timeout").unwrap_or(interval);
        let raw = self.raw_logging(&f);
        Some(HealthConfig {
            exec,
            native,
            interval,
            ttl: ttl.unwrap_or(1),
            timeout,
            raw,
        })
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

    fn when(&mut self, job: &Fields) -> WhenConfig {
        let Some(v) = job.get("when") else {
            return WhenConfig::default();
        };
        let path = job.path("when");
        let keys = ["interval", "source", "once", "each", "timeout", "cron"];
        let Some(f) = self.fields(v, &path, &keys) else {
            return WhenConfig::default();
        };
        let text = |r: &mut Self, name| r.string_field(&f, name).unwrap_or_default();
        let interval = text(self, "interval");
        let sources = self.sources(&f);
        let (once, each, cron) = (text(self, "once"), text(self, "each"), text(self, "cron"));
        let set = [&interval, &once, &each, &cron]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if set > 1 {
            let msg = if cron.is_empty() {
                "can have only one of 'interval', 'once', or 'each'"
            } else {
                "'cron' cannot be combined with 'interval', 'once' or 'each'"
            };
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
        if !cron.is_empty() {
            return WhenConfig {
                trigger: self.cron(&f, &cron),
                timeout: None,
            };
        }
        let timeout = self.positive_duration(&f, "timeout");
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
        let trigger = match (&sources[..], event) {
            ([s], _) if s == "SIGHUP" => Trigger::Signal(SignalName::Sighup),
            ([s], _) if s == "SIGUSR2" => Trigger::Signal(SignalName::Sigusr2),
            (_, Some((code, each))) => Trigger::Event {
                code,
                sources,
                each,
            },
            (_, None) => Trigger::Never,
        };
        WhenConfig { trigger, timeout }
    }

    /// `when.source`: one name, or a list of names that must all have emitted
    /// the event (our extension). Absent = `[""]`, which never fires (3.8).
    fn sources(&mut self, f: &Fields) -> Vec<String> {
        let Some(v) = f.get("source") else {
            return vec![String::new()];
        };
        let path = f.path("source");
        let list = match &v.value {
            Value::Array(_) => self.strings(v, &path, false).unwrap_or_default(),
            _ => return vec![self.string(v, &path).unwrap_or_default()],
        };
        if list.is_empty() {
            self.err(&path, v.line, "must name at least one source");
            return vec![String::new()];
        }
        for (i, s) in list.iter().enumerate() {
            if list[..i].contains(s) {
                self.err(&path, v.line, format!("names {s:?} twice"));
            }
        }
        if list.len() > 1 && list.iter().any(|s| s == "SIGHUP" || s == "SIGUSR2") {
            let msg = "a signal (SIGHUP, SIGUSR2) must be the only source";
            self.err(&path, v.line, msg);
        }
        list
    }

    /// `when.cron`: a five-field schedule read in the zone `TZ` names (UTC when
    /// unset). `source` and `timeout` do not apply next to it.
    fn cron(&mut self, f: &Fields, text: &str) -> Trigger {
        for other in ["source", "timeout"] {
            if f.get(other).is_some() {
                let msg = format!("'{other}' does not apply to a 'cron' schedule");
                self.err(&f.path(other), f.line_of(other), msg);
            }
        }
        let (path, line) = (f.path("cron"), f.line_of("cron"));
        let schedule = match crate::cron::Schedule::parse(text) {
            Ok(s) => s,
            Err(e) => {
                self.err(&path, line, e.to_string());
                return Trigger::Never;
            }
        };
        let tz = self.env_var("TZ");
        let tzdir = self.env_var("TZDIR");
        match crate::cron::Zone::load(tz.as_deref(), tzdir.as_deref()) {
            Ok(zone) => Trigger::Cron(CronTrigger {
                schedule,
                zone: std::sync::Arc::new(zone),
            }),
            Err(e) => {
                self.err(&path, line, e.to_string());
                Trigger::Never
            }
        }
    }

    /// `user` and `group`, resolved now from /etc/passwd and /etc/group.
    fn user(&mut self, f: &Fields) -> Option<crate::users::Identity> {
        let user = self.text_field(f, "user");
        let group = self.text_field(f, "group");
        let Some(user) = user else {
            if group.is_some() {
                self.err(&f.path("group"), f.line_of("group"), "needs 'user' too");
            }
            return None;
        };
        match crate::users::resolve(&user, group.as_deref()) {
            Ok(id) => Some(id),
            Err(e) => {
                let key = if e.0.starts_with("group") {
                    "group"
                } else {
                    "user"
                };
                self.err(&f.path(key), f.line_of(key), e.to_string());
                None
            }
        }
    }

    /// `health.http` (with `headers`, `status`, `tls`) or `health.tcp`.
    fn native_check(&mut self, f: &Fields) -> Option<crate::health::Target> {
        use crate::health::{check_header, HttpTarget, Target, TcpTarget};
        let http = self.text_field(f, "http");
        for key in ["headers", "status", "tls"] {
            if f.get(key).is_some() && http.is_none() {
                self.err(
                    &f.path(key),
                    f.line_of(key),
                    "applies only to 'http' checks",
                );
            }
        }
        if let Some(spec) = self.text_field(f, "tcp") {
            return match TcpTarget::parse(&spec) {
                Ok(t) => Some(Target::Tcp(t)),
                Err(e) => {
                    self.err(&f.path("tcp"), f.line_of("tcp"), e.to_string());
                    None
                }
            };
        }
        let url = http?;
        let mut t = match HttpTarget::parse(&url) {
            Ok(t) => t,
            Err(e) => {
                self.err(&f.path("http"), f.line_of("http"), e.to_string());
                return None;
            }
        };
        if let Some(h) = f.get("headers") {
            let path = f.path("headers");
            match &h.value {
                Value::Object(entries) => {
                    for (k, v) in entries {
                        let Some(value) = self.string(v, &join(&path, &k.name)) else {
                            continue;
                        };
                        match check_header(&k.name, &value) {
                            Ok(()) => t.headers.push((k.name.clone(), value)),
                            Err(e) => self.err(&path, k.line, e.to_string()),
                        }
                    }
                }
                _ => self.expected(&path, h, "an object of header names and values"),
            }
        }
        if let Some(v) = f.get("status") {
            let path = f.path("status");
            match self.int(v, &path) {
                Some(code @ 100..=599) => t.status = Some(code as u16),
                Some(_) => self.err(&path, v.line, "must be an HTTP status code (100-599)"),
                None => {}
            }
        }
        if let Some(v) = f.get("tls") {
            let path = f.path("tls");
            if !t.https {
                self.err(&path, v.line, "applies only to https:// URLs");
            }
            if let Some(tls) = self.tls(v, &path, &super::catalog::CONSUL_TLS_KEYS) {
                t.tls = tls;
            }
        }
        if t.https {
            // Bad CA files and names are config errors, not failing checks.
            let checked = crate::health::tls_client_config(&t.tls)
                .and_then(|_| crate::health::server_name(&t));
            if let Err(e) = checked {
                self.err(&f.path("http"), f.line_of("http"), e.to_string());
            }
        }
        Some(Target::Http(Box::new(t)))
    }

    /// `unbounded`: the `when` key (`each`, `cron`) that starts the job again
    /// and again, next to which "unlimited" restarts are refused.
    fn restarts(&mut self, f: &Fields, unbounded: Option<&str>) -> Restarts {
        let Some(v) = f.get("restarts") else {
            return Restarts::Count(0);
        };
        let path = f.path("restarts");
        let shown = match &v.value {
            Value::String(s) => s.clone(),
            Value::Number(n) => crate::config::reader::format_number(*n),
            _ => v.to_json().to_string(),
        };
        let unbounded_msg;
        let problem = match &v.value {
            Value::String(s) if s == "unlimited" && unbounded.is_some() => {
                unbounded_msg = format!(
                    "may not be used when 'job.when.{}' is set because it may result in infinite processes",
                    unbounded.unwrap_or("each")
                );
                unbounded_msg.as_str()
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
}
