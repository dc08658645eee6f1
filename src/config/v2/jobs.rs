//! The 2.x lists that become jobs and watches: `services[]` (advertised jobs
//! without exec), `backends[]` (a watch and its `onChange` job),
//! `coprocesses[]` and `tasks[]`.

use super::{plain_job, secs, Translator, DEFAULT_INTERFACE, MIN_TIMEOUT};
use crate::config::decode::{duplicate_name_warning, field_line};
use crate::config::json5::{Spanned, Value};
use crate::config::reader::{go_format, join, Fields};
use crate::config::types::*;
use crate::events::EventCode;
use std::time::Duration;

const SERVICE_KEYS: [&str; 9] = [
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
/// Keys that matched 2.x's unexported fields: accepted and ignored.
const SERVICE_HIDDEN: [&str; 4] = ["id", "ipaddress", "definition", "healthcheckcmd"];

impl Translator<'_, '_> {
    /// The objects of a top-level list; null elements are dropped as in 2.x.
    /// (2.x silently ignored a list that was not an array; that hid typos, so
    /// it is an error here.)
    fn items<'v>(&mut self, v: &'v Spanned, key: &str) -> Vec<(String, &'v Spanned)> {
        let Value::Array(items) = &v.value else {
            self.r.expected(key, v, "an array");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| !matches!(item.value, Value::Null))
            .map(|(i, item)| (format!("{key}[{i}]"), item))
            .collect()
    }

    pub(super) fn services(&mut self, v: &Spanned) -> Vec<JobConfig> {
        let mut jobs: Vec<JobConfig> = Vec::new();
        // (path, line) of the first service with each name
        let mut first: Vec<(String, u32)> = Vec::new();
        for (path, item) in self.items(v, "services") {
            let Some(job) = self.service(item, &path) else {
                continue;
            };
            if job.name.trim().is_empty() {
                continue;
            }
            let line = field_line(item, "name").unwrap_or(item.line);
            // 2.x ran both services: a warning, and both become jobs.
            match jobs.iter().position(|j| j.name == job.name) {
                Some(i) => {
                    let (first_path, first_line) = &first[i];
                    let msg = duplicate_name_warning("service", &job.name, first_path, *first_line);
                    self.r.warn(&join(&path, "name"), line, msg);
                }
                None => self.taken.push(job.name.clone()),
            }
            first.push((path.clone(), line));
            jobs.push(job);
        }
        jobs
    }

    fn service(&mut self, v: &Spanned, path: &str) -> Option<JobConfig> {
        let f = self
            .r
            .fields_with_hidden(v, path, &SERVICE_KEYS, &SERVICE_HIDDEN)?;
        let name = self.r.name(&f);
        let poll = self.r.positive_int(&f, "poll");
        let ttl = self.r.positive_int(&f, "ttl");
        let port = self.port(&f);
        let check = match f.get("health") {
            Some(h) => self.r.command(h, &f.path("health")).map(Some),
            None => Some(None),
        };
        let timeout = self.hook_timeout(&f, "timeout", Duration::ZERO);
        let interfaces = self.interfaces(&f);
        let tags = self.r.strings_field(&f, "tags", false);
        let consul = match f.get("consul") {
            Some(c) => self.r.job_consul(c, &f.path("consul")),
            None => None,
        };
        let (poll, ttl, port, check) = (poll?, ttl?, port?, check?);
        let ip = match &interfaces {
            Some(list) => self
                .r
                .resolve(list, &f.path("interfaces"), f.line_of("interfaces")),
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
            native: None,
            interval,
            ttl,
            timeout: timeout.unwrap_or(interval),
            raw: false,
        });
        Some(job)
    }

    pub(super) fn port(&mut self, f: &Fields) -> Option<u16> {
        let path = f.path("port");
        let n = match f.get("port") {
            Some(v) => self.r.int(v, &path)?,
            None => 0,
        };
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ if n < 1 => {
                self.r.err(&path, f.line_of("port"), "must be > 0");
                None
            }
            _ => {
                self.r
                    .err(&path, f.line_of("port"), "must be at most 65535");
                None
            }
        }
    }

    /// Service `interfaces`: a string or an array; 2.x's default is eth0 only.
    fn interfaces(&mut self, f: &Fields) -> Option<Vec<String>> {
        let path = f.path("interfaces");
        let list = match f.get("interfaces") {
            None => Vec::new(),
            Some(v) => self.r.strings(v, &path, true)?,
        };
        if list.is_empty() {
            return Some(vec![DEFAULT_INTERFACE.to_string()]);
        }
        Some(list)
    }

    pub(super) fn backends(&mut self, v: &Spanned) -> (Vec<WatchConfig>, Vec<JobConfig>) {
        let mut watches: Vec<WatchConfig> = Vec::new();
        let mut jobs = Vec::new();
        for (path, item) in self.items(v, "backends") {
            let keys = ["name", "poll", "onChange", "tag", "timeout"];
            let Some(f) =
                self.r
                    .fields_with_hidden(item, &path, &keys, &["laststate", "onchangecmd"])
            else {
                continue;
            };
            let name = self.r.name(&f);
            let on_change = self.r.required_command(&f, "onChange");
            let tag = self.r.string_field(&f, "tag").filter(|s| !s.is_empty());
            let timeout = self.hook_timeout(&f, "timeout", MIN_TIMEOUT);
            let poll = self.r.positive_int(&f, "poll");
            if name.trim().is_empty() {
                continue;
            }
            if watches.iter().any(|w| w.name == name) {
                // Watch events are keyed by name; 2.x let two such backends
                // overwrite each other's state.
                let msg = format!("duplicate backend name '{name}'");
                self.r.err(&f.path("name"), f.line_of("name"), msg);
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
                key: None,
            };
            let mut job = plain_job(
                self.claim(&format!("onChange-{name}")),
                Some(exec),
                item.line,
            );
            job.when = WhenConfig::on_event(EventCode::StatusChanged, &watch.source(), true);
            job.timeout = timeout;
            watches.push(watch);
            jobs.push(job);
        }
        (watches, jobs)
    }

    pub(super) fn coprocesses(&mut self, v: &Spanned, when: &WhenConfig) -> Vec<JobConfig> {
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
                    self.r.err(&join(&path, &k.name), k.line, msg);
                }
            }
            let hidden_and_typo = [hidden[0], hidden[1], "restart"];
            let Some(f) = self
                .r
                .fields_with_hidden(item, &path, &keys, &hidden_and_typo)
            else {
                continue;
            };
            let exec = self.r.required_command(&f, "command");
            let name = self.r.string_field(&f, "name").unwrap_or_default();
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
            self.r.err(&f.path("restarts"), v.line, msg);
            Restarts::Count(0)
        })
    }

    pub(super) fn tasks(&mut self, v: &Spanned) -> Vec<JobConfig> {
        let mut jobs = Vec::new();
        for (path, item) in self.items(v, "tasks") {
            let keys = ["name", "command", "frequency", "timeout"];
            let Some(f) = self
                .r
                .fields_with_hidden(item, &path, &keys, &["freqduration"])
            else {
                continue;
            };
            let name = self.r.string_field(&f, "name").unwrap_or_default();
            let exec = self.r.required_command(&f, "command");
            let frequency = if f.get("frequency").is_none() {
                self.r.err(&f.path("frequency"), f.line, "is required");
                None
            } else {
                self.r.min_1ms_duration(&f, "frequency")
            };
            let has_timeout = f
                .get("timeout")
                .is_some_and(|t| !matches!(&t.value, Value::String(s) if s.is_empty()));
            let timeout = if has_timeout {
                self.r.min_1ms_duration(&f, "timeout")
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
}
