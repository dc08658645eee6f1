//! The validated configuration: plain data, no I/O. Produced by `config::load`,
//! consumed by the runtime. Every default of ContainerPilot 3.8 is already applied.

use crate::events::EventCode;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `None` when the config has no `consul` key (runs catalog-free, SPEC §2.10).
    pub consul: Option<ConsulConfig>,
    /// `None` when the config has no `etcd` key; never set together with `consul`.
    pub etcd: Option<EtcdConfig>,
    pub logging: LoggingConfig,
    /// Top-level `stopTimeout`: how long shutdown waits before SIGKILL (default 5 s;
    /// 0 in the file means 5 s; negative means "kill at once").
    pub stop_timeout: Duration,
    /// Jobs in config order. When telemetry is configured the `containerpilot`
    /// service job is appended last.
    pub jobs: Vec<JobConfig>,
    pub watches: Vec<WatchConfig>,
    pub telemetry: Option<TelemetryConfig>,
    pub control: ControlConfig,
    /// Which generation of config this came from (2.x configs are translated).
    pub compat: Compat,
    /// Shim mode: whose exit ends the daemon, and with what code.
    pub exit_policy: Option<ExitPolicy>,
    /// What loading accepted but reports (a repeated job name): path, line, text.
    pub warnings: Vec<crate::config::reader::ConfigError>,
}

impl Config {
    /// A config with nothing in it: every section at its default.
    pub fn empty(compat: Compat, stop_timeout: Duration) -> Config {
        Config {
            consul: None,
            etcd: None,
            logging: LoggingConfig::default(),
            stop_timeout,
            jobs: Vec::new(),
            watches: Vec::new(),
            telemetry: None,
            control: ControlConfig::default(),
            compat,
            exit_policy: None,
            warnings: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compat {
    /// ContainerPilot 3 semantics: SIGHUP/SIGUSR2 are job triggers, SIGUSR1 reopens logs.
    #[default]
    V3,
    /// A translated 2.x config: SIGHUP reloads, SIGUSR1 toggles maintenance.
    V2,
}

/// The main application of shim mode (2.x, or a 3.x config with trailing arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPolicy {
    /// The job running the application: when its process exits, the daemon shuts
    /// down and exits with its code (128+N if killed by signal N, 127 if it could
    /// not start).
    pub main: String,
    /// A job that must succeed before the application starts; if it fails, the
    /// daemon exits with its code.
    pub pre_start: Option<String>,
    /// A job whose non-zero exit code wins over the application's.
    pub post_stop: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Panic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Default,
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    pub output: LogOutput,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Default,
            output: LogOutput::Stdout,
        }
    }
}

pub const DEFAULT_SOCKET: &str = "/var/run/containerpilot.socket";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    pub socket: PathBuf,
    /// File mode of the socket (SPEC §2.15), default 0o600.
    pub mode: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            mode: 0o600,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub cafile: Option<String>,
    pub capath: Option<String>,
    pub clientcert: Option<String>,
    pub clientkey: Option<String>,
    pub servername: Option<String>,
    /// `None` = not set in file or env; https then verifies (SPEC §2.13).
    pub verify: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `host:port` without scheme.
    pub address: String,
    /// `http` or `https`.
    pub scheme: String,
    pub token: Option<String>,
    pub tls: TlsConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Full base URLs (`http://host:port`), tried in this order.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing slash (default `/containerpilot`).
    pub prefix: String,
    /// Set together with `password` (the loader checks).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Used for `https://` endpoints; `capath` and `servername` stay unset.
    pub tls: TlsConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restarts {
    Unlimited,
    Count(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalName {
    Sighup,
    Sigusr2,
}

impl SignalName {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalName::Sighup => "SIGHUP",
            SignalName::Sigusr2 => "SIGUSR2",
        }
    }
}

/// What starts a job (the `when` block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// No `when`: start once on `startup` from `global`.
    Startup,
    /// `once`/`each` on an event from every one of `sources` (all-of; one
    /// source is the 3.8 case). `each` = unlimited starts; with several sources
    /// each start needs a fresh event from all of them (see `jobs`).
    Event {
        code: EventCode,
        sources: Vec<String>,
        each: bool,
    },
    /// `when.cron`: start at every matching minute of the local wall clock.
    Cron(CronTrigger),
    /// `when.interval`: start at startup and again every tick.
    Interval(Duration),
    /// `source: "SIGHUP"|"SIGUSR2"`: start on every such signal.
    Signal(SignalName),
    /// `when: {}` or a `source` with neither once nor each: never starts (3.8).
    Never,
}

/// A cron schedule and the zone (from `TZ`) its fields are read in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronTrigger {
    pub schedule: crate::cron::Schedule,
    pub zone: std::sync::Arc<crate::cron::Zone>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhenConfig {
    pub trigger: Trigger,
    /// `when.timeout` (only with once/each); `None` = no timeout.
    pub timeout: Option<Duration>,
}

impl WhenConfig {
    /// Start on an event from `source`: once, or on each one.
    pub fn on_event(code: EventCode, source: &str, each: bool) -> WhenConfig {
        WhenConfig {
            trigger: Trigger::Event {
                code,
                sources: vec![source.to_string()],
                each,
            },
            timeout: None,
        }
    }
}

impl Default for WhenConfig {
    fn default() -> Self {
        WhenConfig {
            trigger: Trigger::Startup,
            timeout: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// `None` (and no `native`): no check; an advertised job then heartbeats
    /// unconditionally.
    pub exec: Option<Vec<String>>,
    /// `http`/`tcp`: probed in the loop, no process (exclusive with `exec`).
    pub native: Option<crate::health::Target>,
    pub interval: Duration,
    /// TTL in whole seconds, as sent to Consul (`"<ttl>s"`).
    pub ttl: u32,
    /// Defaults to `interval`.
    pub timeout: Duration,
    pub raw: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JobConsulExtras {
    pub enable_tag_override: bool,
    /// Go duration text passed through to Consul (e.g. "10m").
    pub deregister_critical_service_after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobConfig {
    pub name: String,
    /// Program + args; `None` for a job without exec.
    pub exec: Option<Vec<String>>,
    /// 0 = not advertised.
    pub port: u16,
    pub initial_status: Option<CheckStatus>,
    /// Interface specs (reference §9); only meaningful when advertised.
    pub interfaces: Vec<String>,
    /// Resolved address for advertised jobs (set by the loader).
    pub ip: Option<IpAddr>,
    pub tags: Vec<String>,
    pub consul: Option<JobConsulExtras>,
    pub health: Option<HealthConfig>,
    pub when: WhenConfig,
    /// Run timeout; interval jobs default to the interval.
    pub timeout: Option<Duration>,
    pub restarts: Restarts,
    /// `user`/`group`: who `exec` and `health.exec` run as (`None` = as we do).
    pub user: Option<crate::users::Identity>,
    /// Bound on waiting for this job's stop hook (SPEC §2.2); `None` = top-level value.
    pub stop_timeout: Option<Duration>,
    pub raw: bool,
    /// The telemetry `containerpilot` service: no exec, always healthy.
    pub always_healthy: bool,
    /// 2.x sensor: each line the job prints on stdout is a value for this metric
    /// (its full Prometheus name) instead of a log line.
    pub sensor: Option<String>,
    /// Instead of `exec`: render a template to a file, inside the loop.
    pub render: Option<RenderConfig>,
    /// Instead of `exec`: signal another job's process group, inside the loop.
    pub signal: Option<SignalJobConfig>,
    /// 1-based line of the job object in the config file (for messages).
    pub line: u32,
}

impl JobConfig {
    /// A job with every field at its default: runs `exec` once at start-up.
    pub fn new(name: &str, exec: Option<Vec<String>>) -> JobConfig {
        JobConfig {
            name: name.to_string(),
            exec,
            port: 0,
            initial_status: None,
            interfaces: Vec::new(),
            ip: None,
            tags: Vec::new(),
            consul: None,
            health: None,
            when: WhenConfig::default(),
            timeout: None,
            restarts: Restarts::Count(0),
            user: None,
            stop_timeout: None,
            raw: false,
            always_healthy: false,
            sensor: None,
            render: None,
            signal: None,
            line: 0,
        }
    }

    pub fn is_advertised(&self) -> bool {
        self.port != 0
    }

    /// Whether a run of this job does anything: a process, a render or a signal.
    pub fn has_work(&self) -> bool {
        self.exec.is_some() || self.runs_in_loop()
    }

    /// A render or signal job: its runs happen inside the loop, without a process.
    pub fn runs_in_loop(&self) -> bool {
        self.render.is_some() || self.signal.is_some()
    }

    /// The same job as far as running it goes: everything but where it sits
    /// in the file (a reload keeps such a job as it is).
    pub fn same_definition(&self, other: &JobConfig) -> bool {
        let at = |j: &JobConfig| JobConfig {
            line: 0,
            ..j.clone()
        };
        at(self) == at(other)
    }
}

/// `render: {template, dest, mode}`: what a render job writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// As written in the config (relative paths are from the daemon's directory).
    pub template: std::path::PathBuf,
    pub dest: std::path::PathBuf,
    /// File mode of `dest` (default 0o644).
    pub mode: u32,
    /// The template's text, read when the config is loaded (again on reload,
    /// so an edited template is a changed job).
    pub source: String,
    /// What the template reads, each resolved to the watch that provides it.
    pub reads: Vec<RenderRead>,
}

/// A `service "x"` or `key "p"` of a render template and the watch behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderRead {
    pub kind: crate::config::template::RefKind,
    /// The service name or key path as the template writes it.
    pub name: String,
    /// Template line of its first use.
    pub line: usize,
    /// The name of the watch that provides it.
    pub watch: String,
}

/// `signal: {job, signal}`: what a signal job sends, and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalJobConfig {
    pub job: String,
    pub signal: nix::sys::signal::Signal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// The watch's name (the event source is `watch.<name>`): the service it
    /// watches, unless `key` is set.
    pub name: String,
    pub interval: Duration,
    /// Service watches only.
    pub tag: Option<String>,
    pub dc: Option<String>,
    /// A key watch: the Consul KV key, or the etcd key as written.
    pub key: Option<String>,
}

impl WatchConfig {
    pub fn source(&self) -> String {
        format!("watch.{}", self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricConfig {
    pub namespace: String,
    pub subsystem: String,
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
}

impl MetricConfig {
    /// The exposed Prometheus name: non-empty parts joined by `_`.
    pub fn full_name(&self) -> String {
        [&self.namespace, &self.subsystem, &self.name]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("_")
    }

    /// The 3.8 matching key, empty parts included (`__name`, issue #569).
    pub fn legacy_name(&self) -> String {
        format!("{}_{}_{}", self.namespace, self.subsystem, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub port: u16,
    pub interfaces: Vec<String>,
    /// Resolved listen/advertise address.
    pub ip: Option<IpAddr>,
    pub tags: Vec<String>,
    pub metrics: Vec<MetricConfig>,
}
