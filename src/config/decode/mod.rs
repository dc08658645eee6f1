//! The 3.x decoder: parsed JSON5 → validated [`Config`], every error collected
//! with its JSON path and source line.
//!
//! The grammar is ContainerPilot 3.8's (reference §2–§4, §7): top-level keys are
//! exact-case, keys inside sections match case-insensitively (exact match first),
//! and values are weakly typed the way mapstructure did it (see `reader`). One
//! file per section, each validating its own fields:
//!
//! | file           | keys                                   |
//! |----------------|----------------------------------------|
//! | `jobs.rs`      | `jobs[]` (health, when, restarts, ...) |
//! | `render.rs`    | `jobs[].render`, `jobs[].signal`       |
//! | `watches.rs`   | `watches[]`                            |
//! | `telemetry.rs` | `telemetry` (+ its `containerpilot` job)|
//! | `catalog.rs`   | `consul`, `etcd`                       |
//! | `control.rs`   | `control`, `logging`, `stopTimeout`    |
//!
//! The 2.x translator (`v2`) reads with the same [`Reader`] and reuses the
//! section readers that both generations share (consul, logging, metrics).

mod catalog;
mod control;
mod jobs;
mod render;
mod telemetry;
mod watches;

#[cfg(test)]
mod tests;

pub use super::reader::{ConfigError, LoadEnv};
pub(super) use catalog::DEFAULT_ETCD_PREFIX;
pub(super) use jobs::{duplicate_name_warning, field_line, is_service_name, source_site};

use super::json5::{Spanned, Value};
use super::reader::{Dialect, Reader};
use super::types::*;
use std::time::Duration;

const TOP_LEVEL_KEYS: [&str; 8] = [
    "consul",
    "etcd",
    "logging",
    "stopTimeout",
    "jobs",
    "watches",
    "telemetry",
    "control",
];

pub(super) const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn decode(root: &Spanned, env: &LoadEnv) -> Result<Config, Vec<ConfigError>> {
    let mut r = Reader::new(env, Dialect::V3);
    let mut config = r.config(root);
    config.warnings = std::mem::take(&mut r.warnings);
    r.finish(config)
}

/// Only what the control-socket subcommands need: the `control` section (the
/// rest of the document may be invalid).
pub fn decode_control(root: &Spanned, env: &LoadEnv) -> Result<ControlConfig, Vec<ConfigError>> {
    let mut r = Reader::new(env, Dialect::V3);
    let control = match top_level(root, "control") {
        Some(v) => r.control(v),
        None => ControlConfig::default(),
    };
    r.finish(control)
}

/// A top-level key's value (exact match; null counts as absent).
fn top_level<'v>(root: &'v Spanned, name: &str) -> Option<&'v Spanned> {
    let Value::Object(entries) = &root.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(_, v)| v)
        .filter(|v| !matches!(v.value, Value::Null))
}

impl Reader<'_, '_> {
    fn config(&mut self, root: &Spanned) -> Config {
        let mut config = Config::empty(Compat::V3, DEFAULT_STOP_TIMEOUT);
        let Value::Object(entries) = &root.value else {
            self.expected("", root, "an object");
            return config;
        };
        self.unknown_top_level(entries, root.line, &TOP_LEVEL_KEYS);
        let top = |name: &str| top_level(root, name);

        if let Some(v) = top("consul") {
            config.consul = self.consul(v);
        }
        if let Some(v) = top("etcd") {
            if top("consul").is_some() {
                let msg = "cannot be used together with 'consul': configure one catalog";
                self.err("etcd", v.line, msg);
            }
            config.etcd = self.etcd(v);
        }
        if let Some(v) = top("logging") {
            config.logging = self.logging(v);
        }
        if let Some(v) = top("stopTimeout") {
            if let Some(t) = self.stop_timeout(v, DEFAULT_STOP_TIMEOUT) {
                config.stop_timeout = t;
            }
        }
        if let Some(v) = top("control") {
            config.control = self.control(v);
        }
        let telemetry_on = top("telemetry").is_some();
        let mut job_paths = Vec::new();
        if let Some(v) = top("jobs") {
            (config.jobs, job_paths) = self.jobs(v, telemetry_on);
        }
        if let Some(v) = top("watches") {
            config.watches = self.watches(v, top("etcd").is_some());
        }
        let etcd = config.etcd.is_some();
        self.resolve_render_reads(&mut config.jobs, &job_paths, &config.watches, etcd);
        if let Some(v) = top("telemetry") {
            if let Some(t) = self.telemetry(v) {
                config.jobs.push(telemetry::telemetry_job(&t, v.line));
                config.telemetry = Some(t);
            }
        }
        config
    }
}
