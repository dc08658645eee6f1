//! containerpilot: an init system and micro-orchestrator for containers,
//! compatible with ContainerPilot 3 configs and control-plane clients.

pub mod app;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod cron;
pub mod events;
pub mod graph;
pub mod health;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod process;
pub mod runtime;
pub mod telemetry;
pub mod users;
pub mod watches;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_HASH: &str = match option_env!("CONTAINERPILOT_GIT_HASH") {
    Some(h) => h,
    None => "unknown",
};
