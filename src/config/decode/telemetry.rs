//! `telemetry`: the Prometheus endpoint, its user metrics, and the
//! `containerpilot` service job that advertises it.

use crate::config::json5::{Spanned, Value};
use crate::config::reader::{Dialect, Fields, Reader};
use crate::config::types::*;
use std::time::Duration;

use super::jobs::{with_default_interfaces, TELEMETRY_JOB};

const DEFAULT_TELEMETRY_PORT: u16 = 9090;

/// Prometheus metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(in crate::config) fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The `containerpilot` service that advertises the telemetry endpoint.
pub(super) fn telemetry_job(t: &TelemetryConfig, line: u32) -> JobConfig {
    let mut tags = t.tags.clone();
    tags.push(env!("CARGO_PKG_VERSION").to_string());
    JobConfig {
        port: t.port,
        interfaces: t.interfaces.clone(),
        ip: t.ip,
        tags,
        health: Some(HealthConfig {
            exec: None,
            native: None,
            interval: Duration::from_secs(5),
            ttl: 15,
            timeout: Duration::from_secs(5),
            raw: false,
        }),
        always_healthy: true,
        line,
        ..JobConfig::new(TELEMETRY_JOB, None)
    }
}

impl Reader<'_, '_> {
    pub(super) fn telemetry(&mut self, v: &Spanned) -> Option<TelemetryConfig> {
        let f = self.fields(v, "telemetry", &["port", "interfaces", "tags", "metrics"])?;
        let port = if f.get("port").is_some() {
            self.port(&f, 1)
        } else {
            DEFAULT_TELEMETRY_PORT
        };
        let tags = self.strings_field(&f, "tags", false);
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
            let (path, line) = (f.path("interfaces"), f.line_of("interfaces"));
            telemetry.ip = self.resolve(&telemetry.interfaces, &path, line);
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
            let (metric, _) = self.metric(&f);
            self.metric_name_ok(&f, &metric);
            metrics.push(metric);
        }
        metrics
    }

    /// The metric fields of a 3.x metric or a 2.x sensor, and whether its `type`
    /// is valid (an invalid one is reported and read as a gauge).
    pub(in crate::config) fn metric(&mut self, f: &Fields) -> (MetricConfig, bool) {
        let text = |r: &mut Self, name| r.string_field(f, name).unwrap_or_default();
        let (namespace, subsystem) = (text(self, "namespace"), text(self, "subsystem"));
        let (name, help, kind) = (text(self, "name"), text(self, "help"), text(self, "type"));
        let parsed = match kind.as_str() {
            "counter" => Some(MetricKind::Counter),
            "gauge" => Some(MetricKind::Gauge),
            "histogram" => Some(MetricKind::Histogram),
            "summary" => Some(MetricKind::Summary),
            _ => {
                let use_one = "(use counter, gauge, histogram or summary)";
                let msg = match self.dialect {
                    Dialect::V3 => format!("invalid metric type '{kind}' {use_one}"),
                    Dialect::V2 => format!("invalid sensor type: {kind} {use_one}"),
                };
                self.err(&f.path("type"), f.line_of("type"), msg);
                None
            }
        };
        let metric = MetricConfig {
            namespace,
            subsystem,
            name,
            help,
            kind: parsed.unwrap_or(MetricKind::Gauge),
        };
        (metric, parsed.is_some())
    }

    /// Reports a full metric name Prometheus would refuse.
    pub(in crate::config) fn metric_name_ok(&mut self, f: &Fields, metric: &MetricConfig) -> bool {
        let full = metric.full_name();
        if is_metric_name(&full) {
            return true;
        }
        let msg = format!("invalid metric name '{full}': must match [a-zA-Z_:][a-zA-Z0-9_:]*");
        self.err(&f.path("name"), f.line_of("name"), msg);
        false
    }
}
