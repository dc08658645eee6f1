// TEMPORARY STAND-IN (replaced by the telemetry helper)
use crate::config::types::MetricConfig;
use crate::events::Event;
#[derive(Debug)]
pub struct MetricError(pub String);
impl std::fmt::Display for MetricError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
pub struct Metrics;
impl Metrics {
    pub fn new(_u: &[MetricConfig]) -> Result<Metrics, MetricError> { Ok(Metrics) }
    pub fn reload_user(&mut self, _u: &[MetricConfig]) -> Result<(), MetricError> { Ok(()) }
    pub fn apply(&mut self, _u: &[(String, serde_json::Value)]) -> Result<(), MetricError> { Ok(()) }
    pub fn record_event(&mut self, _e: &Event) {}
    pub fn record_control_request(&mut self, _c: u16, _p: &str) {}
    pub fn set_watch_instances(&mut self, _s: &str, _n: usize) {}
    pub fn render(&self) -> String { String::new() }
}
pub struct JobStatus { pub name: String, pub status: &'static str, pub advertised: bool, pub address: Option<String>, pub port: u16, pub depends_on: Option<String>, pub pid: Option<i32>, pub restarts_left: Option<u32> }
pub fn status_json(_v: &str, _j: &[JobStatus], _w: &[String]) -> String { String::new() }
pub fn status_table(_s: &serde_json::Value) -> String { String::new() }
