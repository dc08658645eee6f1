//! `-convert`: a translated 2.x config written out as 3.x JSON5, with `//`
//! comments where 2.x meant something 3.x cannot express.

use super::{Extras, OnStart};
use crate::config::decode::is_service_name;
use crate::config::duration;
use crate::config::json5::Value;
use crate::config::reader::{go_format, ConfigError};
use crate::config::types::*;
use crate::events::EventCode;
use std::time::Duration;

/// What a valid 2.x config can hold but 3.x cannot express.
pub(super) fn convert_blockers(config: &Config) -> Vec<ConfigError> {
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

pub(super) fn event_config_name(code: EventCode) -> &'static str {
    code.config_name()
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
pub(super) fn sensor_exec(check: &[String], metric: &str) -> Vec<String> {
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

pub(super) fn emit(config: &Config, extras: &Extras) -> String {
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
        Trigger::Event {
            code,
            sources,
            each,
        } => {
            let kind = if *each { "each" } else { "once" };
            let name = quote(event_config_name(*code));
            let source = match &sources[..] {
                [one] => quote(one),
                many => quote_list(many),
            };
            o.line(3, &format!("when: {{source: {source}, {kind}: {name}}},"));
        }
        Trigger::Interval(d) => o.line(3, &format!("when: {{interval: {}}},", dur(*d))),
        Trigger::Startup | Trigger::Signal(_) | Trigger::Never | Trigger::Cron(_) => {}
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
