//! Telemetry without I/O: the metric registry behind `/metrics` and
//! `/v3/metric`, and the `/status` body. The event loop owns the sockets and
//! calls into this module.

pub mod metrics;
pub mod procstat;
pub mod status;

pub use metrics::{MetricError, Metrics, CONTENT_TYPE, SUMMARY_WINDOW};
pub use status::{status_json, status_table, JobStatus, RenderStatus, WatchStatus};
