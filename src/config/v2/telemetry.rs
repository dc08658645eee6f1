//! 2.x `telemetry`: the endpoint, its hidden service settings, and `sensors`
//! (each a metric plus an interval job whose output is the value).

use super::{plain_job, secs, Translator, DEFAULT_INTERFACE, MIN_TIMEOUT};
use crate::config::json5::{Spanned, Value};
use crate::config::types::*;
use std::time::Duration;

const DEFAULT_TELEMETRY_PORT: u16 = 9090;
const TELEMETRY_SERVICE: &str = "containerpilot";
/// Metric names our own telemetry already registers.
const BUILTIN_METRICS: [&str; 3] = [
    "containerpilot_events",
    "containerpilot_control_http_requests",
    "containerpilot_watch_instances",
];

impl Translator<'_, '_> {
    pub(super) fn telemetry(&mut self, v: &Spanned) -> Option<Telemetry> {
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
        let f = self.r.fields_with_hidden(v, "telemetry", &keys, &hidden)?;
        let port = match f.get("port") {
            None => Some(DEFAULT_TELEMETRY_PORT),
            Some(_) => self.port(&f),
        };
        let tags = self.r.strings_field(&f, "tags", false);
        // 2.x decoded telemetry `interfaces` into a list: no bare string.
        let interfaces = match f.get("interfaces") {
            Some(i) => self.r.strings(i, &f.path("interfaces"), false),
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
            Some(_) => self.r.positive_int(&f, "ttl"),
            None => Some(15),
        };
        let poll = match f.get("poll") {
            Some(_) => self.r.positive_int(&f, "poll"),
            None => Some(5),
        };
        if let Some(url) = self.r.text_field(&f, "url") {
            if url != "/metrics" {
                let msg = format!("'{url}' is not supported: metrics are served at /metrics");
                self.r.err(&f.path("url"), f.line_of("url"), msg);
            }
        }
        let service = self
            .r
            .text_field(&f, "servicename")
            .unwrap_or_else(|| TELEMETRY_SERVICE.to_string());
        let sensors = match f.get("sensors") {
            Some(s) => self.sensors(s, &f.path("sensors")),
            None => Vec::new(),
        };
        let (port, interfaces, ttl, poll) = (port?, interfaces?, ttl?, poll?);
        let ip = self
            .r
            .resolve(&interfaces, &f.path("interfaces"), f.line_of("interfaces"))?;
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
            native: None,
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
            self.r.expected(path, v, "an array");
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
        let f = self
            .r
            .fields_with_hidden(v, path, &keys, &["checkcmd", "collector"])?;
        let (metric, kind_ok) = self.r.metric(&f);
        // 2.x crashed on a missing or non-positive poll.
        let poll = self.r.positive_int(&f, "poll");
        let check = self.r.required_command(&f, "check");
        let timeout = self.hook_timeout(&f, "timeout", MIN_TIMEOUT);
        if !self.r.metric_name_ok(&f, &metric) {
            return None;
        }
        let full = metric.full_name();
        if BUILTIN_METRICS.contains(&full.as_str()) {
            let msg = format!("'{full}' is already a built-in metric");
            self.r.err(&f.path("name"), f.line_of("name"), msg);
            return None;
        }
        if !kind_ok {
            return None;
        }
        Some(Sensor {
            metric,
            poll: poll?,
            check: check?,
            timeout,
            line: v.line,
        })
    }

    pub(super) fn sensor_jobs(&mut self, sensors: &[Sensor]) -> Vec<JobConfig> {
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
pub(super) struct Telemetry {
    pub(super) config: TelemetryConfig,
    pub(super) sensors: Vec<Sensor>,
    pub(super) job: JobConfig,
}

pub(super) struct Sensor {
    metric: MetricConfig,
    poll: u32,
    check: Vec<String>,
    timeout: Option<Duration>,
    line: u32,
}
