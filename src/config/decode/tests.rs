//! The 3.x decoder against fixtures and hand-written configs.

use super::catalog::etcd_endpoint;
use super::telemetry::is_metric_name;
use super::*;
use crate::config::json5;
use crate::config::reader::{format_number, parse_go_bool, parse_go_int};
use crate::events::EventCode;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Stand-in resolver: "inet"-like specs find the LAN address, "lo" loopback.
fn resolve(specs: &[String]) -> Result<IpAddr, String> {
    if let Some(bad) = specs.iter().find(|s| s.ends_with("inet5")) {
        return Err(format!("Unable to parse interface spec: {bad}"));
    }
    if specs.iter().any(|s| s == "inet" || s == "eth0:inet") {
        return Ok(LAN);
    }
    if specs.iter().any(|s| s == "lo") {
        return Ok(LOOPBACK);
    }
    Err("none of the interface specifications were able to match".to_string())
}

fn load_with(src: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let root = json5::parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
    decode(
        &root,
        &LoadEnv {
            env: &env,
            resolve_ip: &resolve,
        },
    )
}

fn load(src: &str) -> Config {
    match load_with(src, &[]) {
        Ok(c) => c,
        Err(errs) => panic!("unexpected errors: {errs:#?}"),
    }
}

fn errors(src: &str) -> Vec<String> {
    match load_with(src, &[]) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn job<'c>(c: &'c Config, name: &str) -> &'c JobConfig {
    c.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn base_job(name: &str, exec: &[&str], line: u32) -> JobConfig {
    JobConfig {
        line,
        ..JobConfig::new(name, Some(strings(exec)))
    }
}

fn event(code: EventCode, source: &str, each: bool) -> WhenConfig {
    WhenConfig::on_event(code, source, each)
}

fn version_tag() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

// ----- fixtures -----

#[test]
fn fixture_full_config() {
    let c = load(include_str!("../../../tests/fixtures/config/full.json5"));
    assert_eq!(
        c.consul,
        Some(ConsulConfig {
            address: "consul.service:8500".into(),
            scheme: "http".into(),
            token: None,
            tls: TlsConfig::default(),
        })
    );
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: LogLevel::Debug,
            format: LogFormat::Json,
            output: LogOutput::Stderr,
        }
    );
    assert_eq!(c.stop_timeout, secs(7));
    assert_eq!(
        c.control,
        ControlConfig {
            socket: PathBuf::from("/tmp/containerpilot-fixture.socket"),
            mode: 0o660,
        }
    );
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web",
            "api",
            "sidecar",
            "cleanup",
            "setup",
            "before-stop",
            "after-stop",
            "on-database-change",
            "on-cache-healthy",
            "containerpilot"
        ]
    );

    let mut web = base_job("web", &["/usr/local/bin/web", "--port", "8080"], 16);
    web.port = 8080;
    web.interfaces = strings(&["inet", "lo"]);
    web.ip = Some(LAN);
    web.tags = strings(&["frontend", "v2"]);
    web.health = Some(HealthConfig {
        exec: Some(strings(&["/usr/local/bin/web-health"])),
        native: None,
        interval: secs(15),
        ttl: 25,
        timeout: secs(15),
        raw: false,
    });
    web.when = event(EventCode::ExitSuccess, "setup", false);
    assert_eq!(job(&c, "web"), &web);

    let mut api = base_job("api", &["/usr/local/bin/api", "--verbose"], 33);
    api.port = 9001;
    api.interfaces = strings(&["ethwe", "eth0", "inet", "lo"]);
    api.ip = Some(LAN);
    api.health = Some(HealthConfig {
        exec: Some(strings(&["/usr/local/bin/api-health", "deep"])),
        native: None,
        interval: secs(10),
        ttl: 61,
        timeout: secs(3),
        raw: false,
    });
    assert_eq!(job(&c, "api"), &api);

    let mut sidecar = base_job("sidecar", &["/usr/local/bin/sidecar"], 45);
    sidecar.restarts = Restarts::Unlimited;
    assert_eq!(job(&c, "sidecar"), &sidecar);

    let mut cleanup = base_job("cleanup", &["/usr/local/bin/cleanup"], 50);
    cleanup.when.trigger = Trigger::Interval(secs(2));
    cleanup.timeout = Some(secs(2));
    cleanup.restarts = Restarts::Unlimited;
    assert_eq!(job(&c, "cleanup"), &cleanup);

    assert_eq!(
        job(&c, "setup"),
        &base_job("setup", &["/usr/local/bin/setup", "one", "two"], 57)
    );
    assert_eq!(
        job(&c, "before-stop").when,
        event(EventCode::Stopping, "web", false)
    );
    assert_eq!(
        job(&c, "after-stop").when,
        event(EventCode::Stopped, "web", false)
    );
    assert_eq!(
        job(&c, "on-database-change").when,
        event(EventCode::StatusChanged, "watch.database", true)
    );
    assert_eq!(
        job(&c, "on-cache-healthy").when,
        event(EventCode::StatusHealthy, "watch.cache", true)
    );

    let cp = job(&c, "containerpilot");
    let mut expected = base_job("containerpilot", &[], 105);
    expected.exec = None;
    expected.port = 9000;
    expected.interfaces = strings(&["inet", "lo"]);
    expected.ip = Some(LAN);
    expected.tags = vec!["metrics".to_string(), version_tag()];
    expected.health = Some(HealthConfig {
        exec: None,
        native: None,
        interval: secs(5),
        ttl: 15,
        timeout: secs(5),
        raw: false,
    });
    expected.always_healthy = true;
    assert_eq!(cp, &expected);

    assert_eq!(
        c.watches,
        [
            WatchConfig {
                name: "database".into(),
                interval: secs(12),
                tag: Some("primary".into()),
                dc: None,
                key: None,
            },
            WatchConfig {
                name: "cache".into(),
                interval: secs(30),
                tag: None,
                dc: None,
                key: None,
            },
        ]
    );
    assert_eq!(c.watches[0].source(), "watch.database");
    assert_eq!(
        c.telemetry,
        Some(TelemetryConfig {
            port: 9000,
            interfaces: strings(&["inet", "lo"]),
            ip: Some(LAN),
            tags: strings(&["metrics"]),
            metrics: vec![MetricConfig {
                namespace: "shop".into(),
                subsystem: "web".into(),
                name: "open_carts".into(),
                help: "carts currently open".into(),
                kind: MetricKind::Gauge,
            }],
        })
    );
}

#[test]
fn fixture_prestart() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-prestart.json5"
    ));
    assert_eq!(c.jobs.len(), 4);
    assert_eq!(
        c.jobs[0],
        base_job("prepare", &["/bin/prepare.sh", "--init", "db"], 5)
    );
    let app = &c.jobs[1];
    assert_eq!(
        app.exec,
        Some(strings(&["/bin/app", "-c", "/etc/app.conf"]))
    );
    assert_eq!(app.when, event(EventCode::ExitSuccess, "prepare", false));
    assert_eq!(app.port, 8000);
    assert_eq!(app.ip, Some(LAN));
    assert_eq!(app.restarts, Restarts::Count(0));
    assert_eq!(c.jobs[2].when, event(EventCode::Stopping, "app", false));
    assert_eq!(c.jobs[3].when, event(EventCode::Stopped, "app", false));
    assert_eq!(
        c.jobs[3].exec,
        Some(strings(&["/bin/notify.sh", "stopped"]))
    );
}

#[test]
fn fixture_stopping() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-stopping.json5"
    ));
    let queue = &c.jobs[0];
    assert_eq!(queue.stop_timeout, Some(secs(15)));
    assert_eq!(queue.interfaces, strings(&["lo"]));
    assert_eq!(queue.ip, Some(LOOPBACK));
    assert_eq!(queue.health.as_ref().map(|h| h.ttl), Some(9));
    assert_eq!(c.jobs[1].when, event(EventCode::Stopping, "queue", false));
    // no consul key: runs without a catalog (SPEC §2.10)
    assert_eq!(c.consul, None);
}

#[test]
fn fixture_health_timeout() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-health-timeout.json5"
    ));
    let timeouts: Vec<Duration> = c
        .jobs
        .iter()
        .filter_map(|j| j.health.as_ref().map(|h| h.timeout))
        .collect();
    assert_eq!(timeouts, [secs(5), secs(30)]);
}

#[test]
fn fixture_array_exec() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-array-exec.json5"
    ));
    let mut cache = base_job(
        "cache",
        &[
            "/usr/bin/cache-server",
            "--port",
            "6379",
            "--protected",
            "false",
        ],
        4,
    );
    cache.port = 6379;
    cache.interfaces = strings(&["ethwe", "eth0", "inet", "lo"]);
    cache.ip = Some(LAN);
    cache.health = Some(HealthConfig {
        exec: Some(strings(&["/usr/bin/cache-cli", "ping"])),
        native: None,
        interval: secs(4),
        ttl: 12,
        timeout: Duration::from_millis(1500),
        raw: true,
    });
    cache.raw = true;
    assert_eq!(c.jobs, [cache]);
}

#[test]
fn fixture_non_advertised() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-non-advertised.json5"
    ));
    let mut shipper = base_job("log_shipper", &["/bin/ship-logs"], 5);
    shipper.restarts = Restarts::Unlimited;
    assert_eq!(c.jobs, [shipper]);
}

#[test]
fn fixture_initial_status() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-initial-status.json5"
    ));
    assert_eq!(c.jobs[0].initial_status, Some(CheckStatus::Warning));
    assert_eq!(c.jobs[0].ip, Some(LOOPBACK));
    assert_eq!(c.jobs[1].initial_status, None);
}

#[test]
fn fixture_periodic_task() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-periodic-task.json5"
    ));
    let mut tick = base_job("tick", &["/bin/tick"], 4);
    tick.when.trigger = Trigger::Interval(secs(1));
    tick.timeout = Some(secs(1));
    tick.restarts = Restarts::Unlimited;
    assert_eq!(c.jobs, [tick]);
}

#[test]
fn fixture_consul_extras() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/job-consul-extras.json5"
    ));
    assert_eq!(
        c.jobs[0].consul,
        Some(JobConsulExtras {
            enable_tag_override: true,
            deregister_critical_service_after: Some("10m".into()),
        })
    );
    let consul = c
        .consul
        .as_ref()
        .map(|c| (c.address.as_str(), c.scheme.as_str()));
    assert_eq!(consul, Some(("consul:8500", "http")));
}

#[test]
fn fixture_smoke_test() {
    let c = load(include_str!("../../../tests/fixtures/config/smoke.json5"));
    assert_eq!(c.jobs.len(), 9);
    assert_eq!(c.telemetry, None);
    let triggers: Vec<(&str, &Trigger)> = c
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), &j.when.trigger))
        .collect();
    let ev = |code, source: &str, each| Trigger::Event {
        code,
        sources: vec![source.to_string()],
        each,
    };
    assert_eq!(
        triggers,
        [
            ("frontend", &ev(EventCode::ExitSuccess, "bootstrap", false)),
            ("backend", &Trigger::Startup),
            ("helper", &Trigger::Startup),
            ("every-second", &Trigger::Interval(secs(1))),
            ("bootstrap", &Trigger::Startup),
            ("pre-stop", &ev(EventCode::Stopping, "frontend", false)),
            ("post-stop", &ev(EventCode::Stopped, "frontend", false)),
            ("reload-on-hup", &Trigger::Signal(SignalName::Sighup)),
            ("dump-on-usr2", &Trigger::Signal(SignalName::Sigusr2)),
        ]
    );
    assert_eq!(job(&c, "frontend").ip, Some(LOOPBACK));
    assert_eq!(job(&c, "backend").health.as_ref().map(|h| h.ttl), Some(103));
    assert_eq!(job(&c, "dump-on-usr2").restarts, Restarts::Count(2));
    assert_eq!(job(&c, "helper").restarts, Restarts::Unlimited);
}

#[test]
fn fixture_telemetry() {
    let c = load(include_str!(
        "../../../tests/fixtures/config/telemetry.json5"
    ));
    let t = c.telemetry.as_ref().expect("telemetry");
    assert_eq!(t.port, 8000);
    assert_eq!(t.metrics.len(), 1);
    assert_eq!(t.metrics[0].kind, MetricKind::Counter);
    assert_eq!(t.metrics[0].full_name(), "telemetry_requests_handled_total");
    assert_eq!(c.jobs.len(), 1);
    let cp = &c.jobs[0];
    assert_eq!(
        (cp.name.as_str(), cp.port, cp.ip),
        ("containerpilot", 8000, Some(LAN))
    );
    assert_eq!(cp.tags, vec!["dev".to_string(), version_tag()]);
    assert_eq!(cp.line, 3);
}

#[test]
fn fixture_watches() {
    let c = load(include_str!("../../../tests/fixtures/config/watches.json5"));
    assert_eq!(
        c.watches,
        [
            WatchConfig {
                name: "payments".into(),
                interval: secs(10),
                tag: Some("blue".into()),
                dc: None,
                key: None,
            },
            WatchConfig {
                name: "inventory".into(),
                interval: secs(20),
                tag: None,
                dc: Some("east-2".into()),
                key: None,
            },
            WatchConfig {
                name: "app-config".into(),
                interval: secs(5),
                tag: None,
                dc: Some("east-2".into()),
                key: Some("service/app/config".into()),
            },
        ]
    );
}

/// Every file under invalid/ gives exactly one error, matching its
/// `// expect: <path>: <message>` first line: the message exactly, or as a
/// prefix when the header ends with ':' (the rest comes from a sibling module).
#[test]
fn invalid_fixtures() {
    let fixtures: &[(&str, &str)] = &[
        (
            "top-level-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/top-level-unknown-key.json5"),
        ),
        (
            "consul-type",
            include_str!("../../../tests/fixtures/config/invalid/consul-type.json5"),
        ),
        (
            "consul-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/consul-unknown-key.json5"),
        ),
        (
            "consul-scheme",
            include_str!("../../../tests/fixtures/config/invalid/consul-scheme.json5"),
        ),
        (
            "consul-tls-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/consul-tls-unknown-key.json5"),
        ),
        (
            "consul-tls-verify",
            include_str!("../../../tests/fixtures/config/invalid/consul-tls-verify.json5"),
        ),
        (
            "etcd-with-consul",
            include_str!("../../../tests/fixtures/config/invalid/etcd-with-consul.json5"),
        ),
        (
            "etcd-type",
            include_str!("../../../tests/fixtures/config/invalid/etcd-type.json5"),
        ),
        (
            "etcd-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/etcd-unknown-key.json5"),
        ),
        (
            "etcd-endpoint-scheme",
            include_str!("../../../tests/fixtures/config/invalid/etcd-endpoint-scheme.json5"),
        ),
        (
            "etcd-endpoint-path",
            include_str!("../../../tests/fixtures/config/invalid/etcd-endpoint-path.json5"),
        ),
        (
            "etcd-password-missing",
            include_str!("../../../tests/fixtures/config/invalid/etcd-password-missing.json5"),
        ),
        (
            "etcd-tls-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/etcd-tls-unknown-key.json5"),
        ),
        (
            "etcd-watch-dc",
            include_str!("../../../tests/fixtures/config/invalid/etcd-watch-dc.json5"),
        ),
        (
            "watch-key-with-tag",
            include_str!("../../../tests/fixtures/config/invalid/watch-key-with-tag.json5"),
        ),
        (
            "watch-key-blank",
            include_str!("../../../tests/fixtures/config/invalid/watch-key-blank.json5"),
        ),
        (
            "logging-level",
            include_str!("../../../tests/fixtures/config/invalid/logging-level.json5"),
        ),
        (
            "logging-format",
            include_str!("../../../tests/fixtures/config/invalid/logging-format.json5"),
        ),
        (
            "logging-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/logging-unknown-key.json5"),
        ),
        (
            "logging-type",
            include_str!("../../../tests/fixtures/config/invalid/logging-type.json5"),
        ),
        (
            "stop-timeout-unit",
            include_str!("../../../tests/fixtures/config/invalid/stop-timeout-unit.json5"),
        ),
        (
            "control-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/control-unknown-key.json5"),
        ),
        (
            "control-socket-empty",
            include_str!("../../../tests/fixtures/config/invalid/control-socket-empty.json5"),
        ),
        (
            "control-mode-symbolic",
            include_str!("../../../tests/fixtures/config/invalid/control-mode-symbolic.json5"),
        ),
        (
            "control-mode-too-large",
            include_str!("../../../tests/fixtures/config/invalid/control-mode-too-large.json5"),
        ),
        (
            "jobs-type",
            include_str!("../../../tests/fixtures/config/invalid/jobs-type.json5"),
        ),
        (
            "job-type",
            include_str!("../../../tests/fixtures/config/invalid/job-type.json5"),
        ),
        (
            "job-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/job-unknown-key.json5"),
        ),
        (
            "job-initialStatus-spelling",
            include_str!("../../../tests/fixtures/config/invalid/job-initialStatus-spelling.json5"),
        ),
        (
            "job-key-case-clash",
            include_str!("../../../tests/fixtures/config/invalid/job-key-case-clash.json5"),
        ),
        (
            "job-name-blank",
            include_str!("../../../tests/fixtures/config/invalid/job-name-blank.json5"),
        ),
        (
            "job-name-missing",
            include_str!("../../../tests/fixtures/config/invalid/job-name-missing.json5"),
        ),
        (
            "job-name-pattern",
            include_str!("../../../tests/fixtures/config/invalid/job-name-pattern.json5"),
        ),
        (
            "job-name-reserved",
            include_str!("../../../tests/fixtures/config/invalid/job-name-reserved.json5"),
        ),
        (
            "job-exec-empty-string",
            include_str!("../../../tests/fixtures/config/invalid/job-exec-empty-string.json5"),
        ),
        (
            "job-exec-empty-array",
            include_str!("../../../tests/fixtures/config/invalid/job-exec-empty-array.json5"),
        ),
        (
            "job-exec-type",
            include_str!("../../../tests/fixtures/config/invalid/job-exec-type.json5"),
        ),
        (
            "job-exec-element",
            include_str!("../../../tests/fixtures/config/invalid/job-exec-element.json5"),
        ),
        (
            "job-port-without-health",
            include_str!("../../../tests/fixtures/config/invalid/job-port-without-health.json5"),
        ),
        (
            "job-port-range",
            include_str!("../../../tests/fixtures/config/invalid/job-port-range.json5"),
        ),
        (
            "job-port-type",
            include_str!("../../../tests/fixtures/config/invalid/job-port-type.json5"),
        ),
        (
            "job-initial-status",
            include_str!("../../../tests/fixtures/config/invalid/job-initial-status.json5"),
        ),
        (
            "job-interfaces-type",
            include_str!("../../../tests/fixtures/config/invalid/job-interfaces-type.json5"),
        ),
        (
            "job-interfaces-unresolvable",
            include_str!(
                "../../../tests/fixtures/config/invalid/job-interfaces-unresolvable.json5"
            ),
        ),
        (
            "job-tags-type",
            include_str!("../../../tests/fixtures/config/invalid/job-tags-type.json5"),
        ),
        (
            "job-consul-enable-tag-override",
            include_str!(
                "../../../tests/fixtures/config/invalid/job-consul-enable-tag-override.json5"
            ),
        ),
        (
            "job-consul-deregister",
            include_str!("../../../tests/fixtures/config/invalid/job-consul-deregister.json5"),
        ),
        (
            "job-consul-deregister-unitless",
            include_str!(
                "../../../tests/fixtures/config/invalid/job-consul-deregister-unitless.json5"
            ),
        ),
        (
            "job-consul-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/job-consul-unknown-key.json5"),
        ),
        (
            "health-type",
            include_str!("../../../tests/fixtures/config/invalid/health-type.json5"),
        ),
        (
            "health-interval-missing",
            include_str!("../../../tests/fixtures/config/invalid/health-interval-missing.json5"),
        ),
        (
            "health-ttl-zero",
            include_str!("../../../tests/fixtures/config/invalid/health-ttl-zero.json5"),
        ),
        (
            "health-timeout",
            include_str!("../../../tests/fixtures/config/invalid/health-timeout.json5"),
        ),
        (
            "health-exec-empty",
            include_str!("../../../tests/fixtures/config/invalid/health-exec-empty.json5"),
        ),
        (
            "health-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/health-unknown-key.json5"),
        ),
        (
            "health-logging-raw",
            include_str!("../../../tests/fixtures/config/invalid/health-logging-raw.json5"),
        ),
        (
            "when-two-triggers",
            include_str!("../../../tests/fixtures/config/invalid/when-two-triggers.json5"),
        ),
        (
            "when-interval-small",
            include_str!("../../../tests/fixtures/config/invalid/when-interval-small.json5"),
        ),
        (
            "when-interval-parse",
            include_str!("../../../tests/fixtures/config/invalid/when-interval-parse.json5"),
        ),
        (
            "when-once-event",
            include_str!("../../../tests/fixtures/config/invalid/when-once-event.json5"),
        ),
        (
            "when-each-event-case",
            include_str!("../../../tests/fixtures/config/invalid/when-each-event-case.json5"),
        ),
        (
            "when-timeout",
            include_str!("../../../tests/fixtures/config/invalid/when-timeout.json5"),
        ),
        (
            "when-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/when-unknown-key.json5"),
        ),
        (
            "job-timeout-zero",
            include_str!("../../../tests/fixtures/config/invalid/job-timeout-zero.json5"),
        ),
        (
            "job-timeout-float",
            include_str!("../../../tests/fixtures/config/invalid/job-timeout-float.json5"),
        ),
        (
            "restarts-word",
            include_str!("../../../tests/fixtures/config/invalid/restarts-word.json5"),
        ),
        (
            "restarts-negative-string",
            include_str!("../../../tests/fixtures/config/invalid/restarts-negative-string.json5"),
        ),
        (
            "restarts-negative-number",
            include_str!("../../../tests/fixtures/config/invalid/restarts-negative-number.json5"),
        ),
        (
            "restarts-unlimited-each",
            include_str!("../../../tests/fixtures/config/invalid/restarts-unlimited-each.json5"),
        ),
        (
            "restarts-bool",
            include_str!("../../../tests/fixtures/config/invalid/restarts-bool.json5"),
        ),
        (
            "job-stop-timeout",
            include_str!("../../../tests/fixtures/config/invalid/job-stop-timeout.json5"),
        ),
        (
            "job-logging-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/job-logging-unknown-key.json5"),
        ),
        (
            "watches-type",
            include_str!("../../../tests/fixtures/config/invalid/watches-type.json5"),
        ),
        (
            "watch-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/watch-unknown-key.json5"),
        ),
        (
            "watch-name-blank",
            include_str!("../../../tests/fixtures/config/invalid/watch-name-blank.json5"),
        ),
        (
            "watch-name-pattern",
            include_str!("../../../tests/fixtures/config/invalid/watch-name-pattern.json5"),
        ),
        (
            "watch-name-duplicate",
            include_str!("../../../tests/fixtures/config/invalid/watch-name-duplicate.json5"),
        ),
        (
            "watch-interval-missing",
            include_str!("../../../tests/fixtures/config/invalid/watch-interval-missing.json5"),
        ),
        (
            "watch-interval-unit",
            include_str!("../../../tests/fixtures/config/invalid/watch-interval-unit.json5"),
        ),
        (
            "telemetry-type",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-type.json5"),
        ),
        (
            "telemetry-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-unknown-key.json5"),
        ),
        (
            "telemetry-port",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-port.json5"),
        ),
        (
            "telemetry-interfaces-type",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-interfaces-type.json5"),
        ),
        (
            "telemetry-tags-type",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-tags-type.json5"),
        ),
        (
            "telemetry-metrics-type",
            include_str!("../../../tests/fixtures/config/invalid/telemetry-metrics-type.json5"),
        ),
        (
            "metric-type",
            include_str!("../../../tests/fixtures/config/invalid/metric-type.json5"),
        ),
        (
            "metric-type-missing",
            include_str!("../../../tests/fixtures/config/invalid/metric-type-missing.json5"),
        ),
        (
            "metric-name",
            include_str!("../../../tests/fixtures/config/invalid/metric-name.json5"),
        ),
        (
            "metric-unknown-key",
            include_str!("../../../tests/fixtures/config/invalid/metric-unknown-key.json5"),
        ),
    ];
    assert!(fixtures.len() >= 45);
    for (name, src) in fixtures {
        let (path, msg) = crate::config::reader::expected_error(src)
            .unwrap_or_else(|| panic!("{name}: bad header"));
        let errs = match load_with(src, &[]) {
            Ok(_) => panic!("{name}: no error"),
            Err(errs) => errs,
        };
        assert_eq!(errs.len(), 1, "{name}: {errs:#?}");
        let e = &errs[0];
        assert_eq!(e.path, path, "{name}");
        if msg.is_empty() || msg.ends_with(':') {
            assert!(e.msg.starts_with(msg), "{name}: {}", e.msg);
        } else {
            assert_eq!(e.msg, msg, "{name}");
        }
        assert!(e.line.is_some_and(|l| l > 1), "{name}: {e:?}");
        let shown = e.to_string();
        let expect = src.lines().next().unwrap_or_default();
        assert!(
            shown.contains(&expect["// expect: ".len()..]),
            "{name}: {shown}"
        );
    }
}

// ----- reporting -----

#[test]
fn every_error_is_reported_with_line_and_path() {
    let src = r#"{
  consul: "consul:8500",
  bogus: 1,
  logging: { level: "chatty" },
  jobs: [
{ name: "", exec: "" },
null,
{
  name: "web",
  port: 80,
  interfaces: ["inet"],
  health: { interval: 0, ttl: 5 },
  when: { interval: "0s" },
  restarts: "lots",
},
  ],
  watches: [ { name: "x" } ],
}"#;
    assert_eq!(
        errors(src),
        [
            "line 3: unknown config keys: [bogus]",
            "line 4: logging.level: unknown log level 'chatty' (use debug, info, warn, error, fatal or panic)",
            "line 6: jobs[0].name: must not be blank",
            "line 6: jobs[0].exec: received zero-length argument",
            "line 12: jobs[2].health.interval: must be > 0",
            "line 13: jobs[2].when.interval: cannot be less than 1ms",
            "line 14: jobs[2].restarts: 'lots' invalid: accepts positive integers, \"unlimited\", or \"never\"",
            "line 17: watches[0].name: service names must be alphanumeric with dashes to comply with service discovery",
            "line 17: watches[0].interval: must be > 0",
        ]
    );
}

#[test]
fn display_without_line_or_path() {
    let e = ConfigError {
        path: "jobs[1].when.interval".into(),
        line: Some(12),
        msg: "cannot be less than 1ms".into(),
    };
    assert_eq!(
        e.to_string(),
        "line 12: jobs[1].when.interval: cannot be less than 1ms"
    );
    let e = ConfigError {
        path: String::new(),
        line: None,
        msg: "oops".into(),
    };
    assert_eq!(e.to_string(), "oops");
}

#[test]
fn unknown_keys_are_sorted_and_point_at_the_first() {
    assert_eq!(
        errors("{\n  jobs: [{\n    name: 'a',\n    zeta: 1,\n    alpha: 2,\n  }],\n  x: 1,\n  b: 2,\n}"),
        [
            "line 7: unknown config keys: [b x]",
            "line 4: jobs[0]: has invalid keys: alpha, zeta",
        ]
    );
}

// ----- defaults, weak typing, key matching -----

#[test]
fn empty_config_gets_all_defaults() {
    let c = load("{}");
    assert_eq!(
        c,
        Config {
            consul: None,
            etcd: None,
            logging: LoggingConfig::default(),
            stop_timeout: secs(5),
            jobs: Vec::new(),
            watches: Vec::new(),
            telemetry: None,
            control: ControlConfig::default(),
            compat: Compat::V3,
            exit_policy: None,
            warnings: Vec::new(),
        }
    );
}

#[test]
fn nulls_keep_defaults_and_null_entries_are_dropped() {
    let c = load(
        "{consul: null, logging: null, stopTimeout: null, control: {socket: null},
          jobs: [null, {name: 'a', exec: null, port: null, when: null, restarts: null}],
          watches: [null], telemetry: null}",
    );
    assert_eq!(c.consul, None);
    assert_eq!(c.stop_timeout, secs(5));
    assert_eq!(c.control, ControlConfig::default());
    let mut a = base_job("a", &[], 2);
    a.exec = None;
    assert_eq!(c.jobs, [a]);
    assert!(c.watches.is_empty());
    // indices in paths count the dropped entries
    assert_eq!(
        errors("{jobs: [null, {name: ''}]}"),
        ["line 1: jobs[1].name: must not be blank"]
    );
}

#[test]
fn keys_inside_sections_match_case_insensitively() {
    let c = load(
        "{jobs: [{NAME: 'a', Exec: 'x', When: {Interval: '5s'}, RESTARTS: 2, StopTimeout: 3}],
          logging: {LEVEL: 'warning'}}",
    );
    let a = &c.jobs[0];
    assert_eq!(a.exec, Some(strings(&["x"])));
    assert_eq!(a.when.trigger, Trigger::Interval(secs(5)));
    assert_eq!(a.restarts, Restarts::Count(2));
    assert_eq!(a.stop_timeout, Some(secs(3)));
    assert_eq!(c.logging.level, LogLevel::Warn);
    // top-level keys are exact-case
    assert_eq!(
        errors("{Jobs: []}"),
        ["line 1: unknown config keys: [Jobs]"]
    );
}

#[test]
fn weak_typing() {
    let c = load(
        "{stopTimeout: '0x0A', jobs: [
           {name: 'web', port: '0x1F90', interfaces: 'inet', exec: 'x',
            health: {interval: 2.9, ttl: true, timeout: 7}, logging: {raw: 1},
            tags: [1, 2.5, false]},
           {name: 'b', port: false, restarts: 1.9, logging: {raw: 'T'}},
           {name: 7, timeout: 12},
        ]}",
    );
    assert_eq!(c.stop_timeout, secs(10));
    let web = &c.jobs[0];
    assert_eq!(web.port, 8080);
    assert_eq!(web.tags, strings(&["1", "2.5", "0"]));
    assert!(web.raw);
    let h = web.health.as_ref().expect("health");
    assert_eq!((h.interval, h.ttl, h.timeout), (secs(2), 1, secs(7)));
    assert_eq!(
        (c.jobs[1].port, c.jobs[1].restarts, c.jobs[1].raw),
        (0, Restarts::Count(1), true)
    );
    assert_eq!(
        (c.jobs[2].name.as_str(), c.jobs[2].timeout),
        ("7", Some(secs(12)))
    );
    // Go's ParseInt base 0: a leading 0 is octal
    assert_eq!(load("{stopTimeout: '010'}").stop_timeout, secs(8));
    assert_eq!(load("{stopTimeout: '-0b11'}").stop_timeout, Duration::ZERO);
}

#[test]
fn weak_typing_errors() {
    assert_eq!(
        errors("{jobs: [{name: ['a'], port: 1e30, logging: {raw: 'nah'}}]}"),
        [
            "line 1: jobs[0].name: expected a string, got an array",
            "line 1: jobs[0].port: number 1000000000000000000000000000000 is not a usable integer",
            "line 1: jobs[0].logging.raw: cannot parse 'nah' as a boolean",
        ]
    );
    assert_eq!(
        errors("{jobs: [{name: 'a', port: {}}]}"),
        ["line 1: jobs[0].port: expected an integer, got an object"]
    );
    assert_eq!(
        errors("{jobs: [{name: 'a', port: NaN}]}"),
        ["line 1: jobs[0].port: number NaN is not a usable integer"]
    );
    assert_eq!(
        errors("{jobs: [{name: 'a', logging: {raw: []}}]}"),
        ["line 1: jobs[0].logging.raw: expected a boolean, got an array"]
    );
}

#[test]
fn go_number_and_bool_helpers() {
    assert_eq!(format_number(5.0), "5");
    assert_eq!(format_number(1.5), "1.5");
    assert_eq!(format_number(-0.25), "-0.25");
    assert_eq!(format_number(f64::INFINITY), "+Inf");
    assert_eq!(parse_go_int("0x_1F"), Some(31));
    assert_eq!(parse_go_int("1_000"), None);
    assert_eq!(parse_go_int("0o17"), Some(15));
    assert_eq!(parse_go_int("+42"), Some(42));
    assert_eq!(parse_go_int("9223372036854775808"), None);
    assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_go_int("08"), None);
    assert_eq!(parse_go_int("-"), None);
    assert_eq!(parse_go_bool("True"), Some(true));
    assert_eq!(parse_go_bool("F"), Some(false));
    assert_eq!(parse_go_bool("yes"), None);
    assert!(is_service_name("myService"));
    assert!(is_service_name("my-service-123"));
    for bad in [
        "my_service",
        "-my-service",
        "my%service",
        "a",
        "Ab",
        "9a",
        "",
    ] {
        assert!(!is_service_name(bad), "{bad}");
    }
    assert!(is_metric_name("a:b_c9"));
    assert!(is_metric_name("_x"));
    assert!(!is_metric_name("9x"));
    assert!(!is_metric_name(""));
}

// ----- etcd -----

fn etcd_of(src: &str, vars: &[(&str, &str)]) -> EtcdConfig {
    match load_with(src, vars) {
        Ok(c) => c.etcd.expect("etcd section"),
        Err(errs) => panic!("unexpected errors: {errs:#?}"),
    }
}

#[test]
fn etcd_defaults() {
    let e = etcd_of("{etcd: {}}", &[]);
    assert_eq!(
        e,
        EtcdConfig {
            endpoints: strings(&["http://127.0.0.1:2379"]),
            prefix: "/containerpilot".into(),
            username: None,
            password: None,
            tls: TlsConfig::default(),
        }
    );
    assert_eq!(load("{etcd: {}}").consul, None);
    assert_eq!(load("{consul: 'c:1'}").etcd, None);
    assert_eq!(load("{etcd: null}").etcd, None);
}

#[test]
fn etcd_full_object() {
    let e = etcd_of(
        "{etcd: {Endpoints: ['http://e1:2379', 'https://e2:2379/', 'e3:2379'],
                 prefix: '/cp/prod/', username: 'cp', password: 'pw',
                 tls: {cafile: '/ca.pem', clientcert: '/c.pem', clientkey: '/k.pem', verify: 'false'}}}",
        &[],
    );
    assert_eq!(
        e,
        EtcdConfig {
            endpoints: strings(&["http://e1:2379", "https://e2:2379", "http://e3:2379"]),
            prefix: "/cp/prod".into(),
            username: Some("cp".into()),
            password: Some("pw".into()),
            tls: TlsConfig {
                cafile: Some("/ca.pem".into()),
                capath: None,
                clientcert: Some("/c.pem".into()),
                clientkey: Some("/k.pem".into()),
                servername: None,
                verify: Some(false),
            },
        }
    );
    // a single string is one endpoint; "/" puts the keys at the root
    let e = etcd_of("{etcd: {endpoints: 'http://solo:4001', prefix: '/'}}", &[]);
    assert_eq!(e.endpoints, strings(&["http://solo:4001"]));
    assert_eq!(e.prefix, "");
}

#[test]
fn etcd_endpoints_env_override() {
    let vars = [("ETCD_ENDPOINTS", "http://a:1, b:2,,https://c:3")];
    let e = etcd_of("{etcd: {endpoints: ['http://file:2379']}}", &vars);
    assert_eq!(
        e.endpoints,
        strings(&["http://a:1", "http://b:2", "https://c:3"])
    );
    // empty variable: the file's list stays
    let e = etcd_of(
        "{etcd: {endpoints: ['http://file:2379']}}",
        &[("ETCD_ENDPOINTS", "")],
    );
    assert_eq!(e.endpoints, strings(&["http://file:2379"]));
    // the variable alone never creates an etcd section
    let c = load_with("{}", &vars).expect("loads");
    assert_eq!(c.etcd, None);
    let errs = match load_with("{\netcd: {}}", &[("ETCD_ENDPOINTS", "ftp://x")]) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert_eq!(
        errs,
        ["line 2: etcd.endpoints[0]: 'ftp://x' must be an http:// or https:// URL (from ETCD_ENDPOINTS)"]
    );
}

#[test]
fn etcd_errors_all_reported() {
    assert_eq!(
        errors(
            "{etcd: {endpoints: ['http://a b:1', 'https://'], password: 'pw', tls: 3},
              watches: [{name: 'db', interval: 2, dc: 'x'}, {name: 'web', interval: 2}]}"
        ),
        [
            "line 1: etcd.endpoints[0]: 'http://a b:1' is not a valid endpoint (want scheme://host:port)",
            "line 1: etcd.endpoints[1]: 'https://' is not a valid endpoint (want scheme://host:port)",
            "line 1: etcd.username: must be set when 'password' is set",
            "line 1: etcd.tls: expected an object, got a number",
            "line 2: watches[0].dc: 'dc' is a Consul datacenter and does not apply to etcd; remove it",
        ]
    );
    // with Consul, dc stays valid
    let c = load("{consul: 'c:1', watches: [{name: 'db', interval: 2, dc: 'x'}]}");
    assert_eq!(c.watches[0].dc.as_deref(), Some("x"));
}

#[test]
fn etcd_endpoint_forms() {
    assert_eq!(etcd_endpoint("http://h:1"), Ok("http://h:1".to_string()));
    assert_eq!(
        etcd_endpoint(" https://h:1/ "),
        Ok("https://h:1".to_string())
    );
    assert_eq!(etcd_endpoint("h:1"), Ok("http://h:1".to_string()));
    assert_eq!(
        etcd_endpoint("unix://sock"),
        Err("'unix://sock' must be an http:// or https:// URL".to_string())
    );
    assert_eq!(
        etcd_endpoint(""),
        Err("'' is not a valid endpoint (want scheme://host:port)".to_string())
    );
}

// ----- consul -----

#[test]
fn consul_string_forms() {
    let consul = |src: &str, vars: &[(&str, &str)]| match load_with(src, vars) {
        Ok(c) => c.consul.map(|c| (c.address, c.scheme)),
        Err(e) => panic!("{e:?}"),
    };
    let pair = |a: &str, s: &str| Some((a.to_string(), s.to_string()));
    assert_eq!(
        consul("{consul: 'consul:8500'}", &[]),
        pair("consul:8500", "http")
    );
    assert_eq!(
        consul("{consul: 'https://c:8501'}", &[]),
        pair("c:8501", "https")
    );
    assert_eq!(consul("{consul: 'http://c:80'}", &[]), pair("c:80", "http"));
    assert_eq!(consul("{consul: ''}", &[]), pair("127.0.0.1:8500", "http"));
    assert_eq!(consul("{consul: {}}", &[]), pair("127.0.0.1:8500", "http"));
    // malformed addresses pass through untouched
    assert_eq!(
        consul("{consul: 'tcp://x y'}", &[]),
        pair("tcp://x y", "http")
    );
    let vars = [("CONSUL_HTTP_ADDR", "https://agent:8501")];
    assert_eq!(consul("{consul: ''}", &vars), pair("agent:8501", "https"));
    // the environment only fills what the config left empty
    assert_eq!(consul("{consul: 'c:1'}", &vars), pair("c:1", "http"));
    let ssl = [("CONSUL_HTTP_SSL", "true")];
    assert_eq!(consul("{consul: 'c:1'}", &ssl), pair("c:1", "https"));
    assert_eq!(consul("{consul: 'http://c:1'}", &ssl), pair("c:1", "http"));
    assert_eq!(
        consul("{consul: {address: 'c:1', scheme: 'HTTPS'}}", &[]),
        pair("c:1", "https")
    );
}

#[test]
fn consul_object_form_and_env_overrides() {
    let src = "{consul: {address: 'c:8500', token: 'file-token',
                tls: {cafile: '/ca', capath: '', clientcert: '/cert', verify: true}}}";
    let c = load_with(src, &[])
        .ok()
        .and_then(|c| c.consul)
        .expect("consul");
    assert_eq!(c.token.as_deref(), Some("file-token"));
    assert_eq!(
        c.tls,
        TlsConfig {
            cafile: Some("/ca".into()),
            capath: None,
            clientcert: Some("/cert".into()),
            clientkey: None,
            servername: None,
            verify: Some(true),
        }
    );
    let vars = [
        ("CONSUL_HTTP_TOKEN", "env-token"),
        ("CONSUL_CACERT", "/env-ca"),
        ("CONSUL_CAPATH", "/env-capath"),
        ("CONSUL_CLIENT_CERT", ""),
        ("CONSUL_CLIENT_KEY", "/env-key"),
        ("CONSUL_TLS_SERVER_NAME", "consul.local"),
        ("CONSUL_HTTP_SSL_VERIFY", "FALSE"),
    ];
    let c = load_with(src, &vars)
        .ok()
        .and_then(|c| c.consul)
        .expect("consul");
    assert_eq!(c.token.as_deref(), Some("env-token"));
    assert_eq!(
        c.tls,
        TlsConfig {
            cafile: Some("/env-ca".into()),
            capath: Some("/env-capath".into()),
            clientcert: Some("/cert".into()),
            clientkey: Some("/env-key".into()),
            servername: Some("consul.local".into()),
            verify: Some(false),
        }
    );
    // overrides apply to the string form too; unknown verify values are ignored
    let vars = [("CONSUL_HTTP_TOKEN", "t"), ("CONSUL_HTTP_SSL_VERIFY", "1")];
    let c = load_with("{consul: 'c:1'}", &vars)
        .ok()
        .and_then(|c| c.consul)
        .expect("consul");
    assert_eq!((c.token.as_deref(), c.tls.verify), (Some("t"), Some(true)));
    let vars = [("CONSUL_HTTP_SSL_VERIFY", "maybe")];
    let c = load_with("{consul: 'c:1'}", &vars)
        .ok()
        .and_then(|c| c.consul)
        .expect("consul");
    assert_eq!((c.token, c.tls.verify), (None, None));
}

// ----- top-level scalars and small sections -----

#[test]
fn stop_timeout_values() {
    assert_eq!(load("{stopTimeout: 0}").stop_timeout, secs(5));
    assert_eq!(load("{stopTimeout: 12}").stop_timeout, secs(12));
    assert_eq!(load("{stopTimeout: '3'}").stop_timeout, secs(3));
    assert_eq!(load("{stopTimeout: -1}").stop_timeout, Duration::ZERO);
    assert_eq!(load("{stopTimeout: 2.7}").stop_timeout, secs(2));
}

#[test]
fn control_values() {
    let c = load("{control: {socket: '/run/cp.sock', mode: '600'}}");
    assert_eq!(c.control.socket, PathBuf::from("/run/cp.sock"));
    assert_eq!(c.control.mode, 0o600);
    assert_eq!(load("{control: {mode: '0777'}}").control.mode, 0o777);
    assert_eq!(load("{control: {mode: 640}}").control.mode, 0o640);
    assert_eq!(load("{control: {}}").control, ControlConfig::default());
    assert_eq!(
        errors("{control: {mode: '0689'}}"),
        ["line 1: control.mode: invalid mode '0689': must be octal digits no greater than 0777, like \"0660\""]
    );
}

#[test]
fn logging_values() {
    let c = load("{logging: {level: 'Error', format: 'TEXT', output: 'STDOUT'}}");
    assert_eq!(
        c.logging,
        LoggingConfig {
            level: LogLevel::Error,
            format: LogFormat::Text,
            output: LogOutput::Stdout,
        }
    );
    let c = load("{logging: {level: 'panic', output: '/var/log/Cp.log', format: ''}}");
    assert_eq!(c.logging.level, LogLevel::Panic);
    assert_eq!(c.logging.format, LogFormat::Default);
    assert_eq!(
        c.logging.output,
        LogOutput::File(PathBuf::from("/var/log/Cp.log"))
    );
    assert_eq!(
        load("{logging: {level: 'fatal'}}").logging.level,
        LogLevel::Fatal
    );
    assert_eq!(
        load("{logging: {level: 'warn'}}").logging.level,
        LogLevel::Warn
    );
}

// ----- jobs -----

#[test]
fn exec_string_splits_on_single_spaces() {
    let c = load("{jobs: [{name: 'a', exec: '  /bin/x  a  b '}]}");
    assert_eq!(c.jobs[0].exec, Some(strings(&["/bin/x", "", "a", "", "b"])));
}

#[test]
fn restarts_table() {
    let cases: &[(&str, Restarts)] = &[
        ("'unlimited'", Restarts::Unlimited),
        ("'never'", Restarts::Count(0)),
        ("1", Restarts::Count(1)),
        ("'1'", Restarts::Count(1)),
        ("0", Restarts::Count(0)),
        ("'0'", Restarts::Count(0)),
        ("'+3'", Restarts::Count(3)),
        ("1.9", Restarts::Count(1)),
        ("1e12", Restarts::Count(u32::MAX)),
        ("null", Restarts::Count(0)),
    ];
    for (value, expected) in cases {
        let c = load(&format!("{{jobs: [{{name: 'a', restarts: {value}}}]}}"));
        assert_eq!(c.jobs[0].restarts, *expected, "restarts: {value}");
    }
    // a number next to `each` is fine, and so is "unlimited" next to `once`
    let c = load("{jobs: [{name: 'a', restarts: 3, when: {source: 'b', each: 'healthy'}}]}");
    assert_eq!(c.jobs[0].restarts, Restarts::Count(3));
    let c =
        load("{jobs: [{name: 'a', restarts: 'unlimited', when: {source: 'b', once: 'healthy'}}]}");
    assert_eq!(c.jobs[0].restarts, Restarts::Unlimited);
    // interval jobs keep an explicit budget
    let c = load("{jobs: [{name: 'a', restarts: 5, when: {interval: '500ms'}}]}");
    assert_eq!(c.jobs[0].restarts, Restarts::Count(5));
    assert_eq!(
        errors("{jobs: [{name: 'a', restarts: [1]}]}"),
        ["line 1: jobs[0].restarts: '[1]' invalid: accepts positive integers, \"unlimited\", or \"never\""]
    );
}

#[test]
fn when_semantics() {
    let when = |w: &str| {
        load(&format!("{{jobs: [{{name: 'a', when: {w}}}]}}")).jobs[0]
            .when
            .clone()
    };
    assert_eq!(
        when("{}"),
        WhenConfig {
            trigger: Trigger::Never,
            timeout: None,
        }
    );
    assert_eq!(when("{source: 'b'}").trigger, Trigger::Never);
    assert_eq!(
        when("{source: 'b', once: 'healthy', timeout: '90s'}"),
        WhenConfig {
            trigger: Trigger::Event {
                code: EventCode::StatusHealthy,
                sources: vec!["b".into()],
                each: false,
            },
            timeout: Some(secs(90)),
        }
    );
    assert_eq!(
        when("{source: 'b', once: 'healthy', timeout: '0'}").timeout,
        None
    );
    assert_eq!(
        when("{source: 'b', once: 'healthy', timeout: '-5s'}").timeout,
        None
    );
    assert_eq!(
        when("{source: 'b', once: 'healthy', timeout: ''}").timeout,
        None
    );
    assert_eq!(
        when("{once: 'startup'}").trigger,
        Trigger::Event {
            code: EventCode::Startup,
            sources: vec![String::new()],
            each: false,
        }
    );
    assert_eq!(
        when("{source: 'SIGHUP'}").trigger,
        Trigger::Signal(SignalName::Sighup)
    );
    assert_eq!(
        when("{source: 'SIGUSR2', once: 'exitFailed'}").trigger,
        Trigger::Signal(SignalName::Sigusr2)
    );
    // source and timeout are ignored next to an interval (3.8 code)
    assert_eq!(
        when("{interval: 60, source: 'x', timeout: 'junk'}"),
        WhenConfig {
            trigger: Trigger::Interval(secs(60)),
            timeout: None,
        }
    );
    let c = load("{jobs: [{name: 'a', timeout: '250ms', when: {interval: '1s'}}]}");
    assert_eq!(c.jobs[0].timeout, Some(Duration::from_millis(250)));
}

#[test]
fn durations_and_defaults_on_jobs() {
    let c = load(
        "{jobs: [{name: 'a', timeout: '1ms', stopTimeout: '0',
           health: {interval: 10, ttl: 20, timeout: '0'}}]}",
    );
    let a = &c.jobs[0];
    assert_eq!(a.timeout, Some(Duration::from_millis(1)));
    assert_eq!(a.stop_timeout, None);
    // a "no timeout" health check falls back to its interval
    assert_eq!(a.health.as_ref().map(|h| h.timeout), Some(secs(10)));
    // health without port is allowed and has no discovery
    assert_eq!((a.port, a.ip), (0, None));
}

#[test]
fn advertised_job_discovery_fields() {
    let c = load(
        "{jobs: [{name: 'svc', port: 80, health: {interval: 1, ttl: 3},
           consul: {enableTagOverride: 'true'}, initial_status: 'critical'}]}",
    );
    let svc = &c.jobs[0];
    // no interfaces → the 3.8 default list
    assert_eq!(svc.interfaces, strings(&["eth0:inet", "inet"]));
    assert_eq!(svc.ip, Some(LAN));
    assert_eq!(svc.initial_status, Some(CheckStatus::Critical));
    // fix over 3.8: no deregisterCriticalServiceAfter is simply "not set"
    assert_eq!(
        svc.consul,
        Some(JobConsulExtras {
            enable_tag_override: true,
            deregister_critical_service_after: None,
        })
    );
    assert!(svc.is_advertised());
    assert_eq!(
        errors("{jobs: [{name: 'svc', port: 80, interfaces: ['lo6'], health: {interval: 1, ttl: 3}}]}"),
        ["line 1: jobs[0].interfaces: unable to resolve: none of the interface specifications were able to match"]
    );
}

/// Every prefix of a real config, and single-character corruptions of it,
/// either decode or report errors: no panic anywhere.
#[test]
fn truncated_and_corrupted_input_never_panics() {
    let src = include_str!("../../../tests/fixtures/config/full.json5");
    let env = HashMap::new();
    let load_env = LoadEnv {
        env: &env,
        resolve_ip: &resolve,
    };
    let attempt = |text: &str| match json5::parse(text) {
        Ok(root) => {
            let _ = decode(&root, &load_env);
        }
        Err(e) => {
            let _ = e.render(text);
        }
    };
    for (n, (i, c)) in src.char_indices().enumerate() {
        attempt(&src[..i]);
        if n % 3 == 0 {
            let rest = &src[i + c.len_utf8()..];
            for junk in ["\"", "{", "]", "-", "0x"] {
                attempt(&format!("{}{junk}{rest}", &src[..i]));
            }
        }
    }
}

#[test]
fn health_of_wrong_type_is_one_error() {
    assert_eq!(
        errors("{jobs: [{name: 'svc', port: 80, interfaces: 'lo', health: 'yes'}]}"),
        ["line 1: jobs[0].health: expected an object, got a string"]
    );
}

#[test]
fn containerpilot_name_is_free_without_telemetry() {
    let c = load("{jobs: [{name: 'containerpilot', exec: 'x'}]}");
    assert_eq!(c.jobs.len(), 1);
    assert!(!c.jobs[0].always_healthy);
}

#[test]
fn telemetry_defaults_and_string_interfaces() {
    let c = load("{telemetry: {}}");
    let t = c.telemetry.as_ref().expect("telemetry");
    assert_eq!(t.port, 9090);
    assert_eq!(t.interfaces, strings(&["eth0:inet", "inet"]));
    assert_eq!(c.jobs[0].port, 9090);
    assert_eq!(c.jobs[0].tags, vec![version_tag()]);
    let c = load("{telemetry: {interfaces: 'lo', metrics: [null, {name: 'x', type: 'summary'}]}}");
    let t = c.telemetry.as_ref().expect("telemetry");
    assert_eq!(
        (t.interfaces.clone(), t.ip),
        (strings(&["lo"]), Some(LOOPBACK))
    );
    assert_eq!(t.metrics.len(), 1);
    assert_eq!(t.metrics[0].legacy_name(), "__x");
    assert_eq!(
        errors("{telemetry: {interfaces: ['nothing']}}"),
        ["line 1: telemetry.interfaces: unable to resolve: none of the interface specifications were able to match"]
    );
}

#[test]
fn telemetry_port_range() {
    assert_eq!(
        errors("{telemetry: {port: 65536}}"),
        ["line 1: telemetry.port: must be between 1 and 65535"]
    );
    assert_eq!(load("{telemetry: {port: '65535'}}").jobs[0].port, 65535);
}

#[test]
fn job_line_is_the_object_line() {
    let c = load("{\n  jobs: [\n    {name: 'a'},\n\n    {\n      name: 'b'\n    }\n  ]\n}");
    let lines: Vec<u32> = c.jobs.iter().map(|j| j.line).collect();
    assert_eq!(lines, [3, 5]);
}

#[test]
fn repeated_job_name_is_a_warning_naming_both_places_and_both_jobs_are_kept() {
    let c = load(
        r#"{
  jobs: [
    { name: "web", exec: "/bin/a" },
    { name: "web",
      exec: "/bin/b" },
  ],
}"#,
    );
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["web", "web"]);
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "line 4: jobs[1].name: duplicate job name 'web' (also jobs[0].name at line 3)"
        ),
        "{warnings:?}"
    );
    assert!(load(r#"{ jobs: [ { name: "a", exec: "x" } ] }"#)
        .warnings
        .is_empty());
}
