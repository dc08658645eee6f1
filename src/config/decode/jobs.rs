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

impl Reader<'_, '_> {
    pub(super) fn jobs(&mut self, v: &Spanned, telemetry_on: bool) -> Vec<JobConfig> {
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
            Some(e) => self.command(e, &f.path("exec")),
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
        let f = self.fields(v, &path, &["exec", "interval", "ttl", "timeout", "logging"])?;
        let exec = match f.get("exec") {
            Some(e) => self.command(e, &f.path("exec")),
            None => None,
        };
        let interval = self.positive_int(&f, "interval");
        let ttl = self.positive_int(&f, "ttl");
        let interval = std::time::Duration::from_secs(interval.unwrap_or(1).into());
        // 3.8 reads "0" as "no timeout"; a check must end, so it falls back to
        // the interval like an absent timeout does.
        let timeout = self.positive_duration(&f, "timeout").unwrap_or(interval);
        let raw = self.raw_logging(&f);
        Some(HealthConfig {
            exec,
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
        let Some(f) = self.fields(v, &path, &["interval", "source", "once", "each", "timeout"])
        else {
            return WhenConfig::default();
        };
        let text = |r: &mut Self, name| r.string_field(&f, name).unwrap_or_default();
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
            Value::Number(n) => crate::config::reader::format_number(*n),
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
}
