//! Bodies of the control plane's write endpoints. The first input byte picks the
//! route; the rest is the body.
//! Checked: no panic; accepted env updates carry valid names and no empty values;
//! a metric update names only configured metrics (the parse stops at the first other);
//! metric updates feed a fixed set of user metrics (one of each kind) and a rejected
//! update leaves every exposed value unchanged (all-or-nothing).
#![no_main]

use std::cell::RefCell;

use containerpilot::config::types::{MetricConfig, MetricKind};
use containerpilot::control::{self, Command};
use containerpilot::http::Request;
use containerpilot::telemetry::Metrics;
use libfuzzer_sys::fuzz_target;

const ROUTES: [&str; 4] = ["/v3/environ", "/v3/env", "/v3/metric", "/v3/signal/app"];

fn metric(name: &str, kind: MetricKind) -> MetricConfig {
    MetricConfig {
        namespace: "app".to_string(),
        subsystem: String::new(),
        name: name.to_string(),
        help: String::new(),
        kind,
    }
}

thread_local! {
    static METRICS: RefCell<Option<Metrics>> = RefCell::new(
        Metrics::new(&[
            metric("hits", MetricKind::Counter),
            metric("temp", MetricKind::Gauge),
            metric("latency", MetricKind::Histogram),
            metric("size", MetricKind::Summary),
        ])
        .ok(),
    );
}

/// The user metrics' exposition, without process metrics that change on their own.
fn user_values(m: &Metrics) -> String {
    m.render()
        .lines()
        .filter(|l| l.contains("app_"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn valid_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let req = Request {
        method: "POST".to_string(),
        path: ROUTES[usize::from(sel) % ROUTES.len()].to_string(),
        query: String::new(),
        headers: vec![("Content-Length".to_string(), body.len().to_string())],
        body: body.to_vec(),
        body_refused: false,
        keep_alive: true,
    };
    // The names the fixed metric list knows, as the daemon would ask.
    let known =
        |k: &str| METRICS.with(|cell| cell.borrow().as_ref().is_some_and(|m| m.knows(k)));
    match control::parse(&req, &known) {
        Ok(Command::PutEnv(update)) => {
            for (k, v) in update.iter() {
                assert!(valid_env_key(k), "accepted env name {k:?}");
                assert!(v != Some(""), "empty value for {k:?} must unset");
            }
        }
        Ok(Command::PutMetric(updates)) => {
            assert!(
                updates.iter().all(|(k, _)| known(k)),
                "an unknown metric name got through: {updates:?}"
            );
            METRICS.with(|cell| {
                let mut guard = cell.borrow_mut();
                let Some(m) = guard.as_mut() else {
                    panic!("fixed metric list was rejected");
                };
                let before = user_values(m);
                if let Err(e) = m.apply(&updates) {
                    let _ = e.to_string();
                    assert_eq!(
                        user_values(m),
                        before,
                        "rejected update {updates:?} changed metric values"
                    );
                }
            })
        }
        Ok(Command::Signal { job, signal }) => {
            assert_eq!(job, "app");
            let _ = control::parse_signal(&signal);
        }
        Ok(other) => panic!("{} parsed as {other:?}", req.path),
        Err(resp) => {
            assert!(
                matches!(resp.status, 400 | 404 | 405 | 413 | 422),
                "unexpected status {}",
                resp.status
            );
        }
    }
});
