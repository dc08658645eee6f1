//! The metric registry behind `/metrics` and `/v3/metric`: built-in counters,
//! user metrics from the config, and the daemon's own process figures.
//!
//! Pure state, no I/O besides reading `/proc/self` at render time; the event
//! loop calls it directly.

use super::procstat::ProcessCollector;
use crate::catalog::{RequestCounts, RequestKind};
use crate::config::types::{MetricConfig, MetricKind};
use crate::events::{Event, EventCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, Opts, Registry,
    TextEncoder,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Content-Type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How many recent observations a summary keeps for its quantiles.
pub const SUMMARY_WINDOW: usize = 500;

/// The objectives of 3.8's summaries (Go client defaults).
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

const EVENTS: &str = "containerpilot_events";
const CONTROL: &str = "containerpilot_control_http_requests";
const WATCHES: &str = "containerpilot_watch_instances";
const CATALOG: &str = "containerpilot_catalog_requests_total";

#[derive(Clone, Debug, PartialEq)]
pub enum MetricError {
    /// No configured metric has this name (as sent by the client).
    Unknown(String),
    NotNumeric {
        name: String,
        value: String,
    },
    NegativeCounter {
        name: String,
        value: f64,
    },
    /// A metric that cannot be created or registered; the text names it.
    Invalid(String),
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::Unknown(name) => write!(f, "unknown metric {name:?}"),
            MetricError::NotNumeric { name, value } => {
                write!(f, "metric {name:?}: value {value} is not a finite number")
            }
            MetricError::NegativeCounter { name, value } => {
                write!(f, "metric {name:?}: counter cannot decrease (got {value})")
            }
            MetricError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for MetricError {}

/// A summary over the last [`SUMMARY_WINDOW`] observations; `_sum` and
/// `_count` cover every observation, as in Prometheus.
#[derive(Clone)]
struct WindowSummary {
    desc: Desc,
    state: Arc<Mutex<SummaryState>>,
}

#[derive(Default)]
struct SummaryState {
    window: VecDeque<f64>,
    sum: f64,
    count: u64,
}

impl WindowSummary {
    fn new(name: &str, help: &str) -> prometheus::Result<WindowSummary> {
        let desc = Desc::new(name.to_string(), help.to_string(), vec![], HashMap::new())?;
        Ok(WindowSummary {
            desc,
            state: Arc::default(),
        })
    }

    fn observe(&self, v: f64) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.window.len() >= SUMMARY_WINDOW {
            st.window.pop_front();
        }
        st.window.push_back(v);
        st.sum += v;
        st.count += 1;
    }
}

/// Nearest-rank quantile of a sorted, non-empty slice; NaN when empty (as the
/// Go client reports a summary without observations).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Collector for WindowSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (mut sorted, sum, count) = {
            let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (
                st.window.iter().copied().collect::<Vec<f64>>(),
                st.sum,
                st.count,
            )
        };
        sorted.sort_by(f64::total_cmp);
        let quantiles = QUANTILES
            .iter()
            .map(|q| {
                let mut pq = proto::Quantile::default();
                pq.set_quantile(*q);
                pq.set_value(quantile(&sorted, *q));
                pq
            })
            .collect();
        let mut s = proto::Summary::default();
        s.set_sample_sum(sum);
        s.set_sample_count(count);
        s.set_quantile(quantiles);
        let mut m = proto::Metric::default();
        m.set_summary(s);
        let mut mf = MetricFamily::default();
        mf.set_name(self.desc.fq_name.clone());
        mf.set_help(self.desc.help.clone());
        mf.set_field_type(MetricType::SUMMARY);
        mf.set_metric(vec![m]);
        vec![mf]
    }
}

/// `containerpilot_catalog_requests_total{kind,outcome}`, read at scrape time
/// from the counters the catalog threads bump. Every kind and outcome is
/// always listed, so rates work from the first scrape.
struct CatalogRequests {
    desc: Desc,
    counts: RequestCounts,
}

impl CatalogRequests {
    fn new(counts: RequestCounts) -> prometheus::Result<CatalogRequests> {
        let desc = Desc::new(
            CATALOG.to_string(),
            "HTTP requests sent to the catalog, partitioned by kind (register, heartbeat, \
             deregister, watch, key) and outcome (ok, error)"
                .to_string(),
            vec!["kind".to_string(), "outcome".to_string()],
            HashMap::new(),
        )?;
        Ok(CatalogRequests { desc, counts })
    }
}

impl Collector for CatalogRequests {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let label = |name: &str, value: &str| {
            let mut l = proto::LabelPair::default();
            l.set_name(name.to_string());
            l.set_value(value.to_string());
            l
        };
        let mut metrics = Vec::new();
        for kind in RequestKind::ALL {
            for (ok, outcome) in [(true, "ok"), (false, "error")] {
                let mut c = proto::Counter::default();
                c.set_value(self.counts.get(kind, ok) as f64);
                let mut m = proto::Metric::from_label(vec![
                    label("kind", kind.as_str()),
                    label("outcome", outcome),
                ]);
                m.set_counter(c);
                metrics.push(m);
            }
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.desc.fq_name.clone());
        mf.set_help(self.desc.help.clone());
        mf.set_field_type(MetricType::COUNTER);
        mf.set_metric(metrics);
        vec![mf]
    }
}

#[derive(Clone)]
enum UserValue {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Summary(WindowSummary),
}

impl UserValue {
    fn collector(&self) -> Box<dyn Collector> {
        match self {
            UserValue::Counter(c) => Box::new(c.clone()),
            UserValue::Gauge(g) => Box::new(g.clone()),
            UserValue::Histogram(h) => Box::new(h.clone()),
            UserValue::Summary(s) => Box::new(s.clone()),
        }
    }

    /// Counter adds, gauge sets, histogram and summary observe (3.8 semantics).
    fn update(&self, v: f64) {
        match self {
            UserValue::Counter(c) => c.inc_by(v),
            UserValue::Gauge(g) => g.set(v),
            UserValue::Histogram(h) => h.observe(v),
            UserValue::Summary(s) => s.observe(v),
        }
    }
}

#[derive(Clone)]
struct UserMetric {
    /// The definition it was built from: a reload keeps the metric (and its
    /// value) only while this stays the same.
    cfg: MetricConfig,
    full_name: String,
    legacy_name: String,
    value: UserValue,
}

impl UserMetric {
    fn build(cfg: &MetricConfig) -> Result<UserMetric, MetricError> {
        let full_name = cfg.full_name();
        // The prometheus crate refuses an empty help; 3.8 configs may omit it.
        let help = if cfg.help.is_empty() {
            full_name.clone()
        } else {
            cfg.help.clone()
        };
        let invalid = |e: prometheus::Error| {
            MetricError::Invalid(format!("metric {full_name:?}: {}", reason(&e)))
        };
        let value = match cfg.kind {
            MetricKind::Counter => UserValue::Counter(
                Counter::with_opts(Opts::new(&full_name, &help)).map_err(invalid)?,
            ),
            MetricKind::Gauge => {
                UserValue::Gauge(Gauge::with_opts(Opts::new(&full_name, &help)).map_err(invalid)?)
            }
            MetricKind::Histogram => UserValue::Histogram(
                Histogram::with_opts(HistogramOpts::new(&full_name, &help)).map_err(invalid)?,
            ),
            MetricKind::Summary => {
                UserValue::Summary(WindowSummary::new(&full_name, &help).map_err(invalid)?)
            }
        };
        Ok(UserMetric {
            cfg: cfg.clone(),
            legacy_name: cfg.legacy_name(),
            full_name,
            value,
        })
    }
}

pub struct Metrics {
    /// Built-ins and process figures: never replaced.
    registry: Registry,
    /// Names the built-in registry holds; a user metric may not take one.
    builtin_names: Vec<String>,
    events: CounterVec,
    control_requests: CounterVec,
    watch_instances: GaugeVec,
    catalog_requests: RequestCounts,
    /// User metrics live in a registry of their own, built anew by a reload: a
    /// prometheus registry never forgets a name's help text, so a changed help
    /// could not be registered again in the same one.
    user_registry: Registry,
    user: Vec<UserMetric>,
}

impl Metrics {
    /// Built-ins plus the user metrics. Two user metrics with the same
    /// Prometheus name: the last one wins (3.8 re-registered over the first).
    /// A bad name, or a name taken by a built-in or `process_*` metric, is an
    /// error naming the metric.
    pub fn new(user: &[MetricConfig]) -> Result<Metrics, MetricError> {
        let builtin =
            |e: prometheus::Error| MetricError::Invalid(format!("built-in metric: {}", reason(&e)));
        let registry = Registry::new();
        let events = CounterVec::new(
            Opts::new(
                EVENTS,
                "count of ContainerPilot events, partitioned by type and source",
            ),
            &["code", "source"],
        )
        .map_err(builtin)?;
        let control_requests = CounterVec::new(
            Opts::new(
                CONTROL,
                "count of requests to the control plane, partitioned by HTTP code and path",
            ),
            &["code", "path"],
        )
        .map_err(builtin)?;
        let watch_instances = GaugeVec::new(
            Opts::new(
                WATCHES,
                "number of healthy instances found by a watch, partitioned by service",
            ),
            &["service"],
        )
        .map_err(builtin)?;
        registry
            .register(Box::new(events.clone()))
            .map_err(builtin)?;
        registry
            .register(Box::new(control_requests.clone()))
            .map_err(builtin)?;
        registry
            .register(Box::new(watch_instances.clone()))
            .map_err(builtin)?;
        let process = ProcessCollector::new();
        let catalog_requests = RequestCounts::default();
        let catalog = CatalogRequests::new(catalog_requests.clone()).map_err(builtin)?;
        let builtin_names = [
            events.desc(),
            control_requests.desc(),
            watch_instances.desc(),
            process.desc(),
            catalog.desc(),
        ]
        .iter()
        .flatten()
        .map(|d| d.fq_name.clone())
        .collect();
        registry.register(Box::new(process)).map_err(builtin)?;
        registry.register(Box::new(catalog)).map_err(builtin)?;
        let mut metrics = Metrics {
            registry,
            builtin_names,
            events,
            control_requests,
            watch_instances,
            catalog_requests,
            user_registry: Registry::new(),
            user: Vec::new(),
        };
        metrics.reload_user(user)?;
        Ok(metrics)
    }

    /// Replaces the user metrics. A metric whose definition is unchanged keeps
    /// its value (SPEC §3.10; 3.8 zeroed them); a changed one starts from zero,
    /// a removed one disappears. Built-in values are kept. On error nothing
    /// changes.
    pub fn reload_user(&mut self, user: &[MetricConfig]) -> Result<(), MetricError> {
        let mut list = Vec::with_capacity(user.len());
        for cfg in last_wins(user) {
            match self.user.iter().find(|m| m.cfg == *cfg) {
                // a clone shares the value
                Some(kept) => list.push(kept.clone()),
                None => list.push(UserMetric::build(cfg)?),
            }
        }
        let registry = Registry::new();
        for m in &list {
            let taken = self.builtin_names.contains(&m.full_name);
            let res = if taken {
                Err("the name belongs to a built-in metric".to_string())
            } else {
                registry
                    .register(m.value.collector())
                    .map_err(|e| reason(&e))
            };
            if let Err(why) = res {
                return Err(MetricError::Invalid(format!(
                    "metric {:?}: cannot register: {why}",
                    m.full_name
                )));
            }
        }
        self.user = list;
        self.user_registry = registry;
        Ok(())
    }

    /// The Prometheus name wins over a legacy key that happens to equal it.
    fn find(&self, key: &str) -> Option<&UserMetric> {
        self.user
            .iter()
            .find(|m| m.full_name == key)
            .or_else(|| self.user.iter().find(|m| m.legacy_name == key))
    }

    /// Whether `key` names a configured metric (Prometheus or legacy name).
    pub fn knows(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Applies a whole `/v3/metric` request, or nothing of it (SPEC §2.6).
    pub fn apply(&mut self, updates: &[(String, serde_json::Value)]) -> Result<(), MetricError> {
        let mut planned: Vec<(&UserValue, f64)> = Vec::with_capacity(updates.len());
        for (key, raw) in updates {
            let m = self
                .find(key)
                .ok_or_else(|| MetricError::Unknown(key.clone()))?;
            let v = parse_value(key, raw)?;
            if matches!(m.value, UserValue::Counter(_)) && v < 0.0 {
                return Err(MetricError::NegativeCounter {
                    name: key.clone(),
                    value: v,
                });
            }
            planned.push((&m.value, v));
        }
        for (value, v) in planned {
            value.update(v);
        }
        Ok(())
    }

    /// Counts a bus event. Metric events are not counted (3.8); Error events
    /// carry the error text as source, so they are all counted under "error"
    /// to keep the label set bounded.
    pub fn record_event(&mut self, ev: &Event) {
        let source = match ev.code {
            EventCode::Metric => return,
            EventCode::Error => "error",
            _ => ev.source.as_str(),
        };
        if let Ok(c) = self
            .events
            .get_metric_with_label_values(&[ev.code.name(), source])
        {
            c.inc();
        }
    }

    /// `path` should be the matched route, not the raw request path, so that
    /// clients cannot grow the label set without bound.
    pub fn record_control_request(&mut self, code: u16, path: &str) {
        let code = code.to_string();
        if let Ok(c) = self
            .control_requests
            .get_metric_with_label_values(&[code.as_str(), path])
        {
            c.inc();
        }
    }

    pub fn set_watch_instances(&mut self, service: &str, n: usize) {
        if let Ok(g) = self
            .watch_instances
            .get_metric_with_label_values(&[service])
        {
            g.set(n as f64);
        }
    }

    /// The counters the catalog bumps for each request it sends.
    pub fn catalog_requests(&self) -> RequestCounts {
        self.catalog_requests.clone()
    }

    /// Prometheus text exposition (see [`CONTENT_TYPE`]), families sorted by name.
    pub fn render(&self) -> String {
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.user_registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        for mf in families {
            // One malformed family must not blank the whole scrape.
            let mut one = Vec::new();
            if encoder.encode(std::slice::from_ref(&mf), &mut one).is_ok() {
                out.extend_from_slice(&one);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The crate's text without its "Error: " prefix, for one-line messages.
/// Two definitions with one Prometheus name: the last one wins (3.8
/// re-registered over the first), in the place of the last.
fn last_wins(user: &[MetricConfig]) -> Vec<&MetricConfig> {
    let mut list: Vec<&MetricConfig> = Vec::with_capacity(user.len());
    for cfg in user {
        let name = cfg.full_name();
        list.retain(|old| old.full_name() != name);
        list.push(cfg);
    }
    list
}

fn reason(e: &prometheus::Error) -> String {
    match e {
        prometheus::Error::Msg(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON numbers, or strings holding a number (3.8 parsed the text after
/// trimming spaces). NaN and infinities are refused: they would poison sums.
fn parse_value(key: &str, raw: &serde_json::Value) -> Result<f64, MetricError> {
    let parsed = match raw {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(v) if v.is_finite() => Ok(v),
        _ => Err(MetricError::NotNumeric {
            name: key.to_string(),
            value: raw.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(ns: &str, sub: &str, name: &str, kind: MetricKind) -> MetricConfig {
        MetricConfig {
            namespace: ns.into(),
            subsystem: sub.into(),
            name: name.into(),
            help: format!("help for {name}"),
            kind,
        }
    }

    fn sample() -> Vec<MetricConfig> {
        vec![
            cfg("containerpilot", "app", "some_counter", MetricKind::Counter),
            cfg("containerpilot", "app", "some_gauge", MetricKind::Gauge),
            cfg("", "", "free_memory", MetricKind::Gauge),
            cfg("app", "", "latency", MetricKind::Histogram),
            cfg("app", "", "duration", MetricKind::Summary),
        ]
    }

    fn up(pairs: &[(&str, serde_json::Value)]) -> Vec<(String, serde_json::Value)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn lines(m: &Metrics) -> Vec<String> {
        m.render().lines().map(str::to_string).collect()
    }

    fn has(m: &Metrics, line: &str) -> bool {
        lines(m).iter().any(|l| l == line)
    }

    #[test]
    fn counter_adds() {
        let mut m = Metrics::new(&sample()).unwrap();
        let key = "containerpilot_app_some_counter";
        m.apply(&up(&[(key, json!(40))])).unwrap();
        m.apply(&up(&[(key, json!(2.0))])).unwrap();
        let text = m.render();
        assert!(text.contains("# HELP containerpilot_app_some_counter help for some_counter\n"));
        assert!(text.contains("# TYPE containerpilot_app_some_counter counter\n"));
        assert!(has(&m, "containerpilot_app_some_counter 42"), "{text}");
        // 3.8 key with all parts set is the same string.
        m.apply(&up(&[(key, json!("1"))])).unwrap();
        assert!(has(&m, "containerpilot_app_some_counter 43"));
    }

    #[test]
    fn gauge_sets_and_string_values() {
        let mut m = Metrics::new(&sample()).unwrap();
        let key = "containerpilot_app_some_gauge";
        m.apply(&up(&[(key, json!(7))])).unwrap();
        m.apply(&up(&[(key, json!(" 42 "))])).unwrap();
        assert!(has(&m, "containerpilot_app_some_gauge 42"));
        m.apply(&up(&[(key, json!("-1.5"))])).unwrap();
        assert!(has(&m, "containerpilot_app_some_gauge -1.5"));
    }

    #[test]
    fn name_only_metric_by_real_and_legacy_key() {
        let mut m = Metrics::new(&sample()).unwrap();
        m.apply(&up(&[("free_memory", json!(100))])).unwrap();
        assert!(has(&m, "free_memory 100"));
        m.apply(&up(&[("__free_memory", json!(200))])).unwrap();
        assert!(has(&m, "free_memory 200"));
        // Namespace only: legacy key "app__latency".
        m.apply(&up(&[("app__latency", json!(1))])).unwrap();
        assert!(has(&m, "app_latency_count 1"));
    }

    #[test]
    fn histogram_buckets() {
        let mut m = Metrics::new(&sample()).unwrap();
        let vals = [json!(0.001), json!(0.004), json!(0.3), json!(20)];
        for v in vals {
            m.apply(&up(&[("app_latency", v)])).unwrap();
        }
        let text = m.render();
        assert!(text.contains("# TYPE app_latency histogram\n"));
        for line in [
            "app_latency_bucket{le=\"0.005\"} 2",
            "app_latency_bucket{le=\"0.25\"} 2",
            "app_latency_bucket{le=\"0.5\"} 3",
            "app_latency_bucket{le=\"10\"} 3",
            "app_latency_bucket{le=\"+Inf\"} 4",
            "app_latency_sum 20.305",
            "app_latency_count 4",
        ] {
            assert!(has(&m, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn summary_quantiles() {
        let mut m = Metrics::new(&sample()).unwrap();
        assert!(has(&m, "app_duration{quantile=\"0.5\"} NaN"));
        for i in 1..=100 {
            m.apply(&up(&[("app_duration", json!(i))])).unwrap();
        }
        let text = m.render();
        assert!(text.contains("# TYPE app_duration summary\n"));
        for line in [
            "app_duration{quantile=\"0.5\"} 50",
            "app_duration{quantile=\"0.9\"} 90",
            "app_duration{quantile=\"0.99\"} 99",
            "app_duration_sum 5050",
            "app_duration_count 100",
        ] {
            assert!(has(&m, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn summary_window_is_bounded() {
        let mut m = Metrics::new(&sample()).unwrap();
        for i in 0..(SUMMARY_WINDOW + 100) {
            let v = if i < 100 { 1000 } else { 1 };
            m.apply(&up(&[("app_duration", json!(v))])).unwrap();
        }
        // The 100 large early values fell out of the window, not out of sum/count.
        assert!(has(&m, "app_duration{quantile=\"0.99\"} 1"));
        assert!(has(&m, "app_duration_sum 100500"));
        assert!(has(&m, "app_duration_count 600"));
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }

    #[test]
    fn unknown_key_rejects_whole_request() {
        let mut m = Metrics::new(&sample()).unwrap();
        let req = up(&[
            ("containerpilot_app_some_counter", json!(5)),
            ("nope", json!(1)),
        ]);
        let err = m.apply(&req).unwrap_err();
        assert_eq!(err, MetricError::Unknown("nope".into()));
        assert_eq!(err.to_string(), "unknown metric \"nope\"");
        assert!(!m.render().contains("containerpilot_app_some_counter 5"));
        assert!(has(&m, "containerpilot_app_some_counter 0"));
        // Legacy form of a metric with both parts set is not a second key.
        assert!(matches!(
            m.apply(&up(&[("free_memory_", json!(1))])),
            Err(MetricError::Unknown(_))
        ));
    }

    #[test]
    fn non_numeric_values() {
        let mut m = Metrics::new(&sample()).unwrap();
        let g = "containerpilot_app_some_gauge";
        for bad in [
            json!("abc"),
            json!(true),
            json!(null),
            json!([1]),
            json!("NaN"),
            json!("inf"),
        ] {
            let err = m
                .apply(&up(&[(g, json!(3)), (g, bad.clone())]))
                .unwrap_err();
            assert!(matches!(err, MetricError::NotNumeric { .. }), "{bad}");
        }
        let err = m.apply(&up(&[(g, json!("abc"))])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric \"containerpilot_app_some_gauge\": value \"abc\" is not a finite number"
        );
        assert!(has(&m, "containerpilot_app_some_gauge 0"));
    }

    #[test]
    fn negative_counter_rejected() {
        let mut m = Metrics::new(&sample()).unwrap();
        let c = "containerpilot_app_some_counter";
        let err = m
            .apply(&up(&[(c, json!(1)), (c, json!("-2"))]))
            .unwrap_err();
        assert_eq!(
            err,
            MetricError::NegativeCounter {
                name: c.into(),
                value: -2.0
            }
        );
        assert_eq!(
            err.to_string(),
            "metric \"containerpilot_app_some_counter\": counter cannot decrease (got -2)"
        );
        assert!(has(&m, "containerpilot_app_some_counter 0"));
    }

    #[test]
    fn events_counted_with_labels() {
        let mut m = Metrics::new(&[]).unwrap();
        m.record_event(&Event::new(EventCode::StatusHealthy, "app"));
        m.record_event(&Event::new(EventCode::StatusHealthy, "app"));
        m.record_event(&Event::global(EventCode::Startup));
        m.record_event(&Event::new(EventCode::Metric, "foo|1"));
        m.record_event(&Event::new(EventCode::Error, "app: exit status 1"));
        m.record_event(&Event::new(EventCode::Error, "app: signal: killed"));
        let text = m.render();
        assert!(text.contains(
            "# HELP containerpilot_events count of ContainerPilot events, partitioned by type and source\n"
        ));
        assert!(text.contains("# TYPE containerpilot_events counter\n"));
        assert!(has(
            &m,
            "containerpilot_events{code=\"StatusHealthy\",source=\"app\"} 2"
        ));
        assert!(has(
            &m,
            "containerpilot_events{code=\"Startup\",source=\"global\"} 1"
        ));
        assert!(has(
            &m,
            "containerpilot_events{code=\"Error\",source=\"error\"} 2"
        ));
        assert!(!text.contains("Metric"), "{text}");
        assert!(!text.contains("exit status"));
    }

    #[test]
    fn control_requests_and_watches() {
        let mut m = Metrics::new(&[]).unwrap();
        m.record_control_request(200, "/v3/environ");
        m.record_control_request(200, "/v3/environ");
        m.record_control_request(400, "/v3/metric");
        m.catalog_requests().add(RequestKind::Heartbeat, true);
        m.catalog_requests().add(RequestKind::Heartbeat, true);
        m.catalog_requests().add(RequestKind::Key, false);
        m.set_watch_instances("db", 3);
        m.set_watch_instances("db", 2);
        m.set_watch_instances("cache", 0);
        let text = m.render();
        assert!(text.contains("# TYPE containerpilot_control_http_requests counter\n"));
        assert!(text.contains("# TYPE containerpilot_watch_instances gauge\n"));
        assert!(text.contains("# TYPE containerpilot_catalog_requests_total counter\n"));
        for line in [
            "containerpilot_control_http_requests{code=\"200\",path=\"/v3/environ\"} 2",
            "containerpilot_control_http_requests{code=\"400\",path=\"/v3/metric\"} 1",
            "containerpilot_watch_instances{service=\"db\"} 2",
            "containerpilot_watch_instances{service=\"cache\"} 0",
            "containerpilot_catalog_requests_total{kind=\"heartbeat\",outcome=\"ok\"} 2",
            "containerpilot_catalog_requests_total{kind=\"key\",outcome=\"error\"} 1",
            "containerpilot_catalog_requests_total{kind=\"register\",outcome=\"ok\"} 0",
        ] {
            assert!(has(&m, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn process_metrics_present_and_plausible() {
        let m = Metrics::new(&[]).unwrap();
        let ls = lines(&m);
        let value = |name: &str| -> f64 {
            ls.iter()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0)
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") > 0.0);
        assert!(value("process_open_fds") > 0.0);
        assert!(value("process_max_fds") > 0.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_start_time_seconds") > 1_577_836_800.0);
        assert!(m
            .render()
            .contains("# TYPE process_cpu_seconds_total counter\n"));
    }

    #[test]
    fn reload_keeps_builtins_and_replaces_user_metrics() {
        let mut m = Metrics::new(&sample()).unwrap();
        m.record_event(&Event::global(EventCode::Startup));
        m.apply(&up(&[("containerpilot_app_some_counter", json!(5))]))
            .unwrap();
        m.reload_user(&[
            cfg("", "", "fresh", MetricKind::Counter),
            cfg("", "", "free_memory", MetricKind::Gauge),
        ])
        .unwrap();
        assert!(has(
            &m,
            "containerpilot_events{code=\"Startup\",source=\"global\"} 1"
        ));
        assert!(!m.render().contains("containerpilot_app_some_counter"));
        assert!(has(&m, "free_memory 0"));
        m.apply(&up(&[("fresh", json!(1))])).unwrap();
        assert!(has(&m, "fresh 1"));
        assert_eq!(
            m.apply(&up(&[("containerpilot_app_some_counter", json!(1))])),
            Err(MetricError::Unknown(
                "containerpilot_app_some_counter".into()
            ))
        );
    }

    #[test]
    fn reload_keeps_unchanged_metrics_with_their_values_and_resets_changed_ones() {
        let mut m = Metrics::new(&sample()).unwrap();
        m.apply(&up(&[
            ("free_memory", json!(42)),
            ("containerpilot_app_some_counter", json!(5)),
        ]))
        .unwrap();
        m.record_event(&Event::global(EventCode::Startup));
        // same list: everything stays
        m.reload_user(&sample()).unwrap();
        assert!(has(&m, "free_memory 42"), "{}", m.render());
        assert!(has(&m, "containerpilot_app_some_counter 5"));
        // the counter's help changes and a metric is added: only the counter
        // starts again; the gauge keeps its value, the new one starts at 0
        let mut changed = sample();
        for c in changed.iter_mut() {
            if c.name == "some_counter" {
                c.help = "another help".into();
            }
        }
        changed.push(cfg("", "", "added", MetricKind::Gauge));
        m.reload_user(&changed).unwrap();
        assert!(has(&m, "free_memory 42"));
        assert!(has(&m, "containerpilot_app_some_counter 0"));
        assert!(m
            .render()
            .contains("# HELP containerpilot_app_some_counter another help\n"));
        assert!(has(&m, "added 0"));
        // removed: gone, and updates to it are refused
        m.reload_user(&[cfg("", "", "added", MetricKind::Gauge)])
            .unwrap();
        assert!(!m.render().contains("free_memory"));
        assert!(m.apply(&up(&[("free_memory", json!(1))])).is_err());
        assert!(has(
            &m,
            "containerpilot_events{code=\"Startup\",source=\"global\"} 1"
        ));
        // a type change under the same name is a new metric
        m.apply(&up(&[("added", json!(7))])).unwrap();
        m.reload_user(&[cfg("", "", "added", MetricKind::Counter)])
            .unwrap();
        assert!(m.render().contains("# TYPE added counter\n"));
        assert!(has(&m, "added 0"));
    }

    #[test]
    fn failed_reload_keeps_previous_user_metrics() {
        let mut m = Metrics::new(&sample()).unwrap();
        m.apply(&up(&[("free_memory", json!(9))])).unwrap();
        let err = m
            .reload_user(&[
                cfg("", "", "ok", MetricKind::Gauge),
                cfg("", "", "bad-name", MetricKind::Gauge),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric \"bad-name\": 'bad-name' is not a valid metric name"
        );
        assert!(has(&m, "free_memory 9"));
        m.apply(&up(&[("free_memory", json!(10))])).unwrap();
        assert!(has(&m, "free_memory 10"));
        assert!(!m.render().contains("\nok "));
        // A clash with a built-in is caught at registration and rolled back.
        let err = m
            .reload_user(&[
                cfg("", "", "ok", MetricKind::Gauge),
                cfg("", "", "process_open_fds", MetricKind::Gauge),
            ])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metric \"process_open_fds\": cannot register"),
            "{err}"
        );
        assert!(!has(&m, "ok 0"));
        m.reload_user(&[cfg("", "", "ok", MetricKind::Gauge)])
            .unwrap();
        assert!(has(&m, "ok 0"));
    }

    #[test]
    fn config_errors_name_the_metric() {
        let err = Metrics::new(&[cfg("", "", "", MetricKind::Counter)]).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("metric \"\": '' is not a valid metric name".to_string())
        );
        let err = Metrics::new(&[cfg("containerpilot", "", "events", MetricKind::Counter)]).err();
        assert!(
            matches!(err, Some(MetricError::Invalid(s)) if s.starts_with("metric \"containerpilot_events\": cannot register"))
        );
    }

    #[test]
    fn duplicate_names_last_wins_and_empty_help_ok() {
        let mut first = cfg("", "", "dup", MetricKind::Counter);
        first.help = String::new();
        let second = cfg("", "", "dup", MetricKind::Gauge);
        let mut m = Metrics::new(&[first, second]).unwrap();
        assert!(m.render().contains("# TYPE dup gauge\n"));
        m.apply(&up(&[("dup", json!(-3))])).unwrap();
        assert!(has(&m, "dup -3"));
        let mut nohelp = cfg("", "", "quiet", MetricKind::Summary);
        nohelp.help = String::new();
        let m = Metrics::new(&[nohelp]).unwrap();
        assert!(m.render().contains("# HELP quiet quiet\n"));
    }
}
