//! The 2.x translator and `-convert` against fixtures and small configs.

use super::convert::{event_config_name, sensor_exec};
use super::*;
use crate::config::duration;
use crate::config::template;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const APP: [&str; 2] = ["/usr/local/bin/myapp", "--flag"];

/// Stand-in resolver: `static:` specs, and eth0/inet find the LAN address.
fn resolve(specs: &[String]) -> Result<IpAddr, String> {
    for s in specs {
        if let Some(ip) = s.strip_prefix("static:") {
            return ip
                .parse()
                .map_err(|_| format!("Unable to parse static ip static: in {s}"));
        }
        if s == "eth0" || s == "eth0:inet" || s == "inet" {
            return Ok(LAN);
        }
    }
    Err("none of the interface specifications were able to match".into())
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fixture_env() -> HashMap<String, String> {
    vars(&[
        ("ENV_VAR_NAME", "envval"),
        ("BACKEND", "backend"),
        ("TEST", "HELLO"),
        ("URL_TO_SERVICE", "http://svc"),
        ("API_KEY", "key"),
    ])
}

fn parse(src: &str) -> Spanned {
    json5::parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)))
}

fn with_env<T>(env: &HashMap<String, String>, f: impl FnOnce(&LoadEnv) -> T) -> T {
    f(&LoadEnv {
        env,
        resolve_ip: &resolve,
    })
}

fn app_args() -> Vec<String> {
    APP.iter().map(|s| s.to_string()).collect()
}

fn tr(src: &str, main: Option<&[String]>) -> Result<Config, Vec<ConfigError>> {
    with_env(&HashMap::new(), |env| translate(&parse(src), env, main))
}

fn ok(src: &str) -> Config {
    tr(src, Some(&app_args())).unwrap_or_else(|e| panic!("unexpected errors: {e:#?}"))
}

fn errs(src: &str) -> Vec<String> {
    match tr(src, None) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn fmt(d: Duration) -> String {
    duration::format(d)
}

/// One line per job with every field the runtime acts on.
fn summary(j: &JobConfig) -> String {
    let mut s = j.name.clone();
    if let Some(e) = &j.exec {
        s += &format!(" exec=[{}]", e.join(", "));
    }
    if j.port != 0 {
        let ip = j.ip.map_or("-".to_string(), |i| i.to_string());
        s += &format!(
            " port={} ip={ip} ifaces=[{}]",
            j.port,
            j.interfaces.join(", ")
        );
    }
    if !j.tags.is_empty() {
        s += &format!(" tags=[{}]", j.tags.join(", "));
    }
    if let Some(c) = &j.consul {
        let dereg = c
            .deregister_critical_service_after
            .as_deref()
            .unwrap_or("-");
        s += &format!(" consul=({}, {dereg})", c.enable_tag_override);
    }
    if let Some(h) = &j.health {
        let exec = h
            .exec
            .as_ref()
            .map_or(String::new(), |e| format!("exec=[{}] ", e.join(", ")));
        s += &format!(
            " health=({exec}every {} ttl {} timeout {})",
            fmt(h.interval),
            h.ttl,
            fmt(h.timeout)
        );
    }
    match &j.when.trigger {
        Trigger::Startup => {}
        Trigger::Event {
            code,
            sources,
            each,
        } => {
            let kind = if *each { "each" } else { "once" };
            let source = sources.join(",");
            s += &format!(" when={kind} {} {source}", event_config_name(*code));
        }
        Trigger::Interval(d) => s += &format!(" every={}", fmt(*d)),
        other => s += &format!(" when={other:?}"),
    }
    if let Some(t) = j.timeout {
        s += &format!(" timeout={}", fmt(t));
    }
    match j.restarts {
        Restarts::Count(0) => {}
        Restarts::Count(n) => s += &format!(" restarts={n}"),
        Restarts::Unlimited => s += " restarts=unlimited",
    }
    if j.raw {
        s += " raw";
    }
    if let Some(m) = &j.sensor {
        s += &format!(" sensor={m}");
    }
    if j.always_healthy {
        s += " always-healthy";
    }
    s
}

fn summaries(c: &Config) -> Vec<String> {
    c.jobs.iter().map(summary).collect()
}

fn watch_summaries(c: &Config) -> Vec<String> {
    c.watches
        .iter()
        .map(|w| {
            let tag = w
                .tag
                .as_deref()
                .map_or(String::new(), |t| format!(" tag={t}"));
            format!("{} every={}{tag}", w.name, fmt(w.interval))
        })
        .collect()
}

fn metric_summaries(c: &Config) -> Vec<String> {
    let Some(t) = &c.telemetry else {
        return Vec::new();
    };
    t.metrics
        .iter()
        .map(|m| format!("{} {:?} {:?}", m.full_name(), m.kind, m.help))
        .collect()
}

fn policy(main: &str, pre: Option<&str>, post: Option<&str>) -> Option<ExitPolicy> {
    Some(ExitPolicy {
        main: main.into(),
        pre_start: pre.map(str::to_string),
        post_stop: post.map(str::to_string),
    })
}

// ----- detection -----

#[test]
fn detects_2x_keys() {
    for src in [
        r#"{"services": []}"#,
        r#"{"backends": []}"#,
        r#"{"preStart": "x"}"#,
        r#"{"onStart": "x"}"#,
        r#"{"preStop": "x"}"#,
        r#"{"postStop": "x"}"#,
        r#"{"coprocesses": []}"#,
        r#"{"tasks": []}"#,
        r#"{"consul": "c:8500", "telemetry": {"sensors": []}}"#,
        r#"{"telemetry": {"Sensors": []}}"#,
    ] {
        assert_eq!(is_v2(&parse(src)), Ok(true), "{src}");
    }
}

#[test]
fn shared_and_3x_keys_are_not_2x() {
    for src in [
        r#"{}"#,
        r#"{"consul": "newconsul:8500"}"#,
        r#"{"consul": "c", "logging": {}, "stopTimeout": 5, "telemetry": {"port": 9090}}"#,
        r#"{"etcd": {"endpoints": "http://e:4001"}}"#,
        r#"{"jobs": [], "watches": [], "control": {}}"#,
        r#"{"telemetry": {"metrics": []}}"#,
        // Top-level keys are case-sensitive in both generations.
        r#"{"Services": []}"#,
    ] {
        assert_eq!(is_v2(&parse(src)), Ok(false), "{src}");
    }
}

#[test]
fn mixed_keys_name_both_kinds() {
    let src = "{\n  \"consul\": \"c\",\n  \"jobs\": [],\n  \"services\": [],\n  \"preStop\": \"x\",\n  \"telemetry\": {\"metrics\": []}\n}";
    let e = is_v2(&parse(src)).unwrap_err();
    assert_eq!(e.path, "");
    assert_eq!(e.line, Some(3));
    assert_eq!(
        e.msg,
        "mixes ContainerPilot 2.x keys (services, preStop) with 3.x keys (jobs, \
         telemetry.metrics); use one format (containerpilot -convert prints the 3.x \
         form of a 2.x config)"
    );
    // translate reports the same error instead of guessing.
    assert_eq!(errs(src), vec![format!("line 3: {}", e.msg)]);
}

// ----- translation details -----

#[test]
fn minimal_config_has_app_job_and_policy() {
    let c = ok(r#"{"consul": "consul:8500", "services": []}"#);
    assert_eq!(c.compat, Compat::V2);
    assert_eq!(
        summaries(&c),
        ["app exec=[/usr/local/bin/myapp, --flag] raw"]
    );
    assert_eq!(c.exit_policy, policy("app", None, None));
    assert_eq!(c.stop_timeout, Duration::from_secs(5));
    let consul = c.consul.unwrap();
    assert_eq!(
        (consul.address.as_str(), consul.scheme.as_str()),
        ("consul:8500", "http")
    );
    assert!(c.watches.is_empty() && c.telemetry.is_none());
}

#[test]
fn without_application_the_app_job_has_no_exec() {
    let src = r#"{"consul": "c:8500", "preStart": "/bin/a", "preStop": "/bin/b"}"#;
    let c = tr(src, None).unwrap();
    assert_eq!(
        summaries(&c),
        [
            "preStart exec=[/bin/a] raw",
            "app when=once exitSuccess preStart raw",
            "preStop exec=[/bin/b] when=once stopping app raw",
        ]
    );
    assert_eq!(c.exit_policy, policy("app", Some("preStart"), None));
}

#[test]
fn app_job_is_main_when_a_service_is_called_app() {
    let src = r#"{"consul": "c", "services": [{"name": "app", "port": 1, "poll": 1, "ttl": 2}],
                  "tasks": [{"name": "main", "command": "/t", "frequency": 1}]}"#;
    let c = ok(src);
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["app", "main-2", "main"]);
    assert_eq!(c.exit_policy.unwrap().main, "main");
}

#[test]
fn on_start_is_an_alias_and_pre_start_wins() {
    let c = ok(r#"{"consul": "c", "onStart": "/bin/old"}"#);
    assert_eq!(summary(&c.jobs[0]), "preStart exec=[/bin/old] raw");
    let c = ok(r#"{"consul": "c", "onStart": "/bin/old", "preStart": "/bin/new"}"#);
    assert_eq!(summary(&c.jobs[0]), "preStart exec=[/bin/new] raw");
}

#[test]
fn commands_split_on_single_spaces_and_format_arrays_go_style() {
    let c = ok(r#"{"consul": "c", "preStart": "  /bin/a  b c ",
                   "preStop": ["/bin/x", 1, 1.5, true, null, ["a", 2], {"k": "v"}]}"#);
    assert_eq!(c.jobs[0].exec.as_deref().unwrap(), ["/bin/a", "", "b", "c"]);
    let stop = c.jobs.iter().find(|j| j.name == "preStop").unwrap();
    assert_eq!(
        stop.exec.as_deref().unwrap(),
        ["/bin/x", "1", "1.5", "true", "<nil>", "[a 2]", "map[k:v]"]
    );
}

#[test]
fn weak_typing_in_services() {
    let c = ok(
        r#"{"consul": "c", "services": [{"Name": "web", "PORT": "8080", "poll": 2.9,
                   "ttl": "0x10", "tags": [1, true], "interfaces": "eth0", "id": "ignored"}]}"#,
    );
    assert_eq!(
        summary(&c.jobs[0]),
        "web port=8080 ip=10.0.0.2 ifaces=[eth0] tags=[1, 1] health=(every 2s ttl 16 timeout 2s)"
    );
}

#[test]
fn stop_timeout_values() {
    let st = |v: &str| ok(&format!(r#"{{"consul": "c", "stopTimeout": {v}}}"#)).stop_timeout;
    assert_eq!(st("0"), Duration::from_secs(5));
    assert_eq!(st("null"), Duration::from_secs(5));
    assert_eq!(st("\"10\""), Duration::from_secs(10));
    assert_eq!(st("2.9"), Duration::from_secs(2));
    assert_eq!(st("-1"), Duration::ZERO);
    assert_eq!(st("-7"), Duration::ZERO);
}

#[test]
fn coprocess_restarts_table() {
    let r = |v: &str| {
        let src =
            format!(r#"{{"consul": "c", "coprocesses": [{{"command": "/c", "restarts": {v}}}]}}"#);
        ok(&src).jobs[0].restarts
    };
    assert_eq!(r("1.1"), Restarts::Count(1));
    assert_eq!(r("\"1\""), Restarts::Count(1));
    assert_eq!(r("3"), Restarts::Count(3));
    assert_eq!(r("\"unlimited\""), Restarts::Unlimited);
    assert_eq!(r("\"never\""), Restarts::Count(0));
    assert_eq!(r("0"), Restarts::Count(0));
    assert_eq!(r("\"0\""), Restarts::Count(0));
    assert_eq!(r("null"), Restarts::Count(0));
    for bad in ["\"invalid\"", "\"-1\"", "-1", "true", "{}"] {
        let src = format!(
            r#"{{"consul": "c", "coprocesses": [{{"command": "/c", "restarts": {bad}}}]}}"#
        );
        let e = errs(&src);
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert!(
            e[0].contains("coprocesses[0].restarts: invalid value"),
            "{e:?}"
        );
    }
}

#[test]
fn coprocess_name_defaults_to_command_line() {
    let c = ok(
        r#"{"consul": "c", "coprocesses": [{"command": "consul agent -dev"}, {"command": ["consul", "agent", "-dev"]}]}"#,
    );
    assert_eq!(c.jobs[0].name, "consul agent -dev");
    assert_eq!(c.jobs[1].name, "consul agent -dev-2");
}

#[test]
fn task_durations() {
    let t = |freq: &str, timeout: &str| {
        let src = format!(
            r#"{{"consul": "c", "tasks": [{{"command": "/t", "frequency": {freq}, "timeout": {timeout}}}]}}"#
        );
        summary(&ok(&src).jobs[0])
    };
    assert_eq!(
        t("\"10s\"", "\"10\""),
        "task exec=[/t] every=10s timeout=10s restarts=unlimited"
    );
    assert_eq!(
        t("\"10\"", "null"),
        "task exec=[/t] every=10s timeout=10s restarts=unlimited"
    );
    assert_eq!(
        t("10", "\"\""),
        "task exec=[/t] every=10s timeout=10s restarts=unlimited"
    );
    assert_eq!(
        t("\"1ms\"", "\"1ms\""),
        "task exec=[/t] every=1ms timeout=1ms restarts=unlimited"
    );
    let e =
        errs(r#"{"consul": "c", "tasks": [{"command": "/t", "frequency": "1s", "timeout": "0"}]}"#);
    assert_eq!(e, ["line 1: tasks[0].timeout: cannot be less than 1ms"]);
}

#[test]
fn hook_timeouts_zero_means_none_and_tiny_rounds_up() {
    let c = ok(r#"{"consul": "c", "backends": [
        {"name": "a", "poll": 1, "onChange": "/x", "timeout": "0"},
        {"name": "b", "poll": 1, "onChange": "/x", "timeout": "1ns"},
        {"name": "c", "poll": 1, "onChange": "/x", "timeout": ""}]}"#);
    let timeouts: Vec<Option<Duration>> = c.jobs.iter().map(|j| j.timeout).collect();
    assert_eq!(timeouts[..3], [None, Some(MIN_TIMEOUT), None]);
}

#[test]
fn later_sensor_with_the_same_name_replaces_the_earlier() {
    let c = ok(r#"{"consul": "c", "telemetry": {"sensors": [
        {"name": "m", "type": "counter", "poll": 1, "check": "/first"},
        {"name": "m", "type": "gauge", "poll": 2, "check": "/second"}]}}"#);
    assert_eq!(metric_summaries(&c), ["m Gauge \"\""]);
    assert_eq!(
        summary(&c.jobs[0]),
        "sensor-m exec=[/second] every=2s timeout=2s restarts=unlimited sensor=m"
    );
}

#[test]
fn hidden_telemetry_settings_shape_the_service() {
    let c = ok(
        r#"{"consul": "c", "telemetry": {"servicename": "metrics", "ttl": 30, "poll": 10, "url": "/metrics", "mux": 1}}"#,
    );
    assert_eq!(
        summary(c.jobs.last().unwrap()),
        "metrics port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 10s ttl 30 timeout 10s) always-healthy"
    );
}

#[test]
fn consul_forms_and_environment() {
    let get = |src: &str, env: &[(&str, &str)]| {
        with_env(&vars(env), |e| translate(&parse(src), e, None))
            .unwrap()
            .consul
            .unwrap()
    };
    let c = get(r#"{"consul": "https://https://x:1", "tasks": []}"#, &[]);
    assert_eq!(
        (c.scheme.as_str(), c.address.as_str()),
        ("https", "https://x:1")
    );
    let c = get(
        r#"{"consul": {"Address": "c:8500", "token": "t"}, "tasks": []}"#,
        &[("CONSUL_HTTP_TOKEN", "envtoken")],
    );
    assert_eq!(
        (c.address.as_str(), c.token.as_deref()),
        ("c:8500", Some("envtoken"))
    );
    let c = get(
        r#"{"consul": "", "tasks": []}"#,
        &[("CONSUL_HTTP_ADDR", "https://a:1")],
    );
    assert_eq!((c.scheme.as_str(), c.address.as_str()), ("https", "a:1"));
    let e = errs(r#"{"consul": {"address": "c", "tls": {}}, "tasks": []}"#);
    assert_eq!(e, ["line 1: consul: has invalid keys: tls"]);
}

#[test]
fn etcd_block_is_parsed() {
    let src = r#"{"etcd": {"endpoints": ["http://a:4001", 7, "http://b:4001"], "prefix": ""}, "tasks": []}"#;
    let got = with_env(&HashMap::new(), |e| etcd(&parse(src), e)).unwrap();
    let want = EtcdConfig {
        endpoints: vec!["http://a:4001".into(), "http://b:4001".into()],
        prefix: "/containerpilot".into(),
    };
    assert_eq!(got, Some(want));
    let c = tr(src, None).unwrap();
    assert_eq!(c.consul, None);
}

#[test]
fn errors_are_collected_with_lines() {
    let src = "{\n \"consul\": \"c\",\n \"services\": [\n  {\"name\": \"a\"},\n  {\"name\": \"b\", \"port\": 1, \"poll\": 1, \"ttl\": 1, \"health\": []}\n ],\n \"tasks\": [{}]\n}";
    assert_eq!(
        errs(src),
        [
            "line 4: services[0].poll: must be > 0",
            "line 4: services[0].ttl: must be > 0",
            "line 4: services[0].port: must be > 0",
            "line 5: services[1].health: received zero-length argument",
            "line 7: tasks[0].command: is required",
            "line 7: tasks[0].frequency: is required",
        ]
    );
}

#[test]
fn convert_refuses_names_3x_rejects() {
    let src =
        r#"{"consul": "c", "services": [{"name": "my_app", "port": 1, "poll": 1, "ttl": 1}]}"#;
    assert!(tr(src, None).is_ok(), "2.x accepted the name");
    let e = with_env(&HashMap::new(), |env| convert(&parse(src), env)).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e[0]
        .msg
        .starts_with("cannot convert: 'my_app' is not a valid 3.x service name"));
}

#[test]
fn sensor_exec_quotes_for_the_shell() {
    let check = vec!["/bin/x".to_string(), "it's".to_string(), "a b".to_string()];
    assert_eq!(
        sensor_exec(&check, "ns_m"),
        [
            "/bin/sh",
            "-c",
            "v=$(/bin/x 'it'\\''s' 'a b') || exit $?; set -f; set -- $v; exec containerpilot -putmetric \"ns_m=$*\""
        ]
    );
}

// ----- fixtures -----

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

fn read_fixture(path: &std::path::Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    template::render(&raw, &fixture_env()).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn fixture_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

struct Expect {
    file: &'static str,
    jobs: &'static [&'static str],
    watches: &'static [&'static str],
    metrics: &'static [&'static str],
    policy: (&'static str, Option<&'static str>, Option<&'static str>),
}

const FULL_IFACES: &str =
    "eth0, eth1[1], 192.168.0.0/16, 2001:db8::/64, eth2:inet, eth2:inet6, inet, inet6";

fn expectations() -> Vec<Expect> {
    vec![
        Expect {
            file: "app-with-consul-prestart-sighup.json",
            jobs: &[
                "preStart exec=[/bin/sh, -c, sed -i 's/8888/8000/' /app-with-consul-prestart-sighup.json && kill -HUP 1] raw",
                "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8888] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("main", Some("preStart"), None),
        },
        Expect {
            file: "app-with-consul-prestart-sigusr1.json",
            jobs: &[
                "preStart exec=[/bin/sh, -c, kill -USR1 1] raw",
                "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("main", Some("preStart"), None),
        },
        Expect {
            file: "app-with-consul.json",
            jobs: &[
                "preStart exec=[/bin/prestart-app.sh] raw",
                "onChange-nginx exec=[/bin/reload-app.sh] when=each changed watch.nginx",
                "onChange-app exec=[/bin/reload-app.sh] when=each changed watch.app",
                "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] tags=[application] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "sensor-containerpilot_app_some_counter exec=[/bin/sensor.sh] every=1s timeout=1s restarts=unlimited sensor=containerpilot_app_some_counter",
                "task1 exec=[/bin/task.sh, task1] every=500ms timeout=500ms restarts=unlimited",
                "task2 exec=[/bin/task.sh, task2, 2s] every=1.5s timeout=1.5s restarts=unlimited",
                "task3 exec=[/bin/task.sh, task3, 1s] every=1.5s timeout=100ms restarts=unlimited",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 5s ttl 15 timeout 5s) always-healthy",
            ],
            watches: &["nginx every=7s", "app every=5s tag=application"],
            metrics: &["containerpilot_app_some_counter Counter \"help text\""],
            policy: ("main", Some("preStart"), None),
        },
        Expect {
            file: "app-with-coprocess.json",
            jobs: &[
                "/bin/coprocess.sh --interval 1 exec=[/bin/coprocess.sh, --interval, 1] restarts=1",
                "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s)",
                "main exec=[/usr/local/bin/myapp, --flag] raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("main", None, None),
        },
        Expect {
            file: "app-with-etcd.json",
            jobs: &[
                "preStart exec=[/bin/prestart-app.sh] raw",
                "onChange-nginx exec=[/bin/reload-app.sh] when=each changed watch.nginx",
                "onChange-app exec=[/bin/reload-app.sh] when=each changed watch.app",
                "app port=8000 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, -o, /dev/null, http://localhost:8000] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &["nginx every=7s", "app every=5s tag=application"],
            metrics: &[],
            policy: ("main", Some("preStart"), None),
        },
        Expect {
            file: "core-app-test.json",
            jobs: &[
                "preStart exec=[/bin/to/preStart.sh, arg1, arg2] raw",
                "onChange-upstreamA exec=[/bin/to/onChangeEvent/for/upstream/A.sh, HELLO] when=each changed watch.upstreamA",
                "onChange-upstreamB exec=[/bin/to/onChangeEvent/for/upstream/B.sh] when=each changed watch.upstreamB",
                "serviceA port=8080 ip=10.0.0.2 ifaces=[eth0] tags=[tag1, tag2] health=(exec=[/bin/to/healthcheck/for/service/A.sh] every 30s ttl 19 timeout 30s) when=once exitSuccess preStart",
                "serviceB port=5000 ip=10.0.0.2 ifaces=[ethwe, eth0] health=(exec=[/bin/to/healthcheck/for/service/B.sh] every 30s ttl 103 timeout 30s) when=once exitSuccess preStart",
                "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                "preStop exec=[/bin/to/preStop.sh, arg1, arg2] when=once stopping app raw",
                "postStop exec=[/bin/to/postStop.sh] when=once stopped app raw",
            ],
            watches: &["upstreamA every=11s tag=dev", "upstreamB every=1m19s"],
            metrics: &[],
            policy: ("app", Some("preStart"), Some("postStop")),
        },
        Expect {
            file: "cp2-readme-template.json",
            jobs: &[
                "preStart exec=[/opt/containerpilot/onStart-script.sh, http://svc, key] raw",
                "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("app", Some("preStart"), None),
        },
        Expect {
            file: "cp2-readme.json",
            jobs: &[
                "preStart exec=[/opt/containerpilot/onStart-script.sh, envval] raw",
                "onChange-nginx exec=[/opt/containerpilot/reload-app.sh] when=each changed watch.nginx",
                "onChange-app exec=[/opt/containerpilot/reload-app.sh] when=each changed watch.app",
                // FULL_IFACES, spelled out by the test below.
                "app port=80 ip=10.0.0.2 ifaces=[IFACES] tags=[tag1] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/app] every 10s ttl 30 timeout 10s) when=once exitSuccess preStart",
                "sensor-metric_id exec=[/bin/sensor.sh] every=5s timeout=5s restarts=unlimited sensor=metric_id",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                "preStop exec=[/opt/containerpilot/preStop-script.sh] when=once stopping main raw",
                "postStop exec=[/opt/containerpilot/postStop-script.sh] when=once stopped main raw",
                "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] health=(every 5s ttl 15 timeout 5s) always-healthy",
            ],
            watches: &["nginx every=30s", "app every=10s"],
            metrics: &["metric_id Counter \"help text\""],
            policy: ("main", Some("preStart"), Some("postStop")),
        },
        Expect {
            file: "docs-configuration.json",
            jobs: &[
                "preStart exec=[/usr/local/bin/setup.sh, envval] raw",
                "agent exec=[/usr/local/bin/agent, -config-dir, /etc/agent] when=once exitSuccess preStart restarts=unlimited",
                "onChange-database exec=[/usr/local/bin/reconfigure-db.sh] when=each changed watch.database timeout=10s",
                "onChange-cache exec=[/usr/local/bin/reconfigure-cache.sh] when=each changed watch.cache timeout=5s",
                "app port=80 ip=10.0.0.2 ifaces=[IFACES, static:192.168.1.100] tags=[web, v1] consul=(true, 90m) health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 10s ttl 30 timeout 10s) when=once exitSuccess preStart",
                "sensor-requests_total exec=[/usr/local/bin/count-requests.sh] every=5s timeout=5s restarts=unlimited sensor=requests_total",
                "rotate exec=[/usr/local/bin/rotate-logs.sh, --keep, 3] every=1.5s timeout=100ms restarts=unlimited",
                "main exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                "preStop exec=[/usr/local/bin/drain.sh] when=once stopping main raw",
                "postStop exec=[/usr/local/bin/cleanup.sh] when=once stopped main raw",
                "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0:inet] tags=[op] health=(every 5s ttl 15 timeout 5s) always-healthy",
            ],
            watches: &["database every=30s", "cache every=10s tag=primary"],
            metrics: &["requests_total Counter \"requests served\""],
            policy: ("main", Some("preStart"), Some("postStop")),
        },
        Expect {
            file: "docs-health.json",
            jobs: &[
                "web port=8080 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost:8080/] every 3s ttl 10 timeout 3s)",
                "app exec=[/usr/local/bin/myapp, --flag] raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("app", None, None),
        },
        Expect {
            file: "docs-service-discovery.json",
            jobs: &[
                "onChange-backend exec=[/usr/local/bin/reload.sh] when=each changed watch.backend",
                "app exec=[/usr/local/bin/myapp, --flag] raw",
            ],
            watches: &["backend every=7s"],
            metrics: &[],
            policy: ("app", None, None),
        },
        Expect {
            file: "docs-start-stop.json",
            jobs: &[
                "preStart exec=[/usr/local/bin/prepare.sh, arg1, arg2] raw",
                "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
                "preStop exec=[/usr/local/bin/drain.sh, --wait, 10] when=once stopping app raw",
                "postStop exec=[/usr/local/bin/report.sh] when=once stopped app raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("app", Some("preStart"), Some("postStop")),
        },
        Expect {
            file: "docs-telemetry.json",
            jobs: &[
                "sensor-myapp_queue_depth exec=[/usr/local/bin/queue-depth.sh, --queue, main] every=5s timeout=5s restarts=unlimited sensor=myapp_queue_depth",
                "app exec=[/usr/local/bin/myapp, --flag] raw",
                "containerpilot port=9090 ip=10.0.0.2 ifaces=[eth0] tags=[monitoring] health=(every 5s ttl 15 timeout 5s) always-healthy",
            ],
            watches: &[],
            metrics: &["myapp_queue_depth Gauge \"jobs waiting in the queue\""],
            policy: ("app", None, None),
        },
        Expect {
            file: "nginx-with-consul.json",
            jobs: &[
                "preStart exec=[consul-template, -once, -consul, consul:8500, -template, /etc/containerpilot/nginx.conf.ctmpl:/etc/nginx/nginx.conf] raw",
                "onChange-app exec=[consul-template, -once, -consul, consul:8500, -template, /etc/containerpilot/nginx.conf.ctmpl:/etc/nginx/nginx.conf:nginx -s reload] when=each changed watch.app",
                "nginx port=80 ip=10.0.0.2 ifaces=[eth0] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &["app every=1s"],
            metrics: &[],
            policy: ("app", Some("preStart"), None),
        },
        Expect {
            file: "nginx-with-etcd.json",
            jobs: &[
                "preStart exec=[confd, -onetime, -backend, etcd, -node, http://etcd:4001] raw",
                "onChange-app exec=[/bin/sh, -c, confd -onetime -backend etcd -node http://etcd:4001 && nginx -s reload] when=each changed watch.app",
                "nginx port=80 ip=10.0.0.2 ifaces=[eth0] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost/health] every 1s ttl 5 timeout 1s) when=once exitSuccess preStart",
                "app exec=[/usr/local/bin/myapp, --flag] when=once exitSuccess preStart raw",
            ],
            watches: &["app every=1s"],
            metrics: &[],
            policy: ("app", Some("preStart"), None),
        },
        Expect {
            file: "test-envvars.json",
            jobs: &[
                "etcd port=4001 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/usr/bin/curl, --fail, -s, http://localhost:4001/health] every 2s ttl 10 timeout 2s)",
                "app exec=[/usr/local/bin/myapp, --flag] raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("app", None, None),
        },
        Expect {
            file: "zombie-maker.json",
            jobs: &[
                "zombie-maker port=8080 ip=10.0.0.2 ifaces=[eth0:inet] health=(exec=[/zombie.sh] every 1s ttl 5 timeout 1s)",
                "app exec=[/usr/local/bin/myapp, --flag] raw",
            ],
            watches: &[],
            metrics: &[],
            policy: ("app", None, None),
        },
    ]
}

#[test]
fn every_valid_fixture_translates_as_expected() {
    let expectations = expectations();
    let files = fixture_files(&fixture_dir());
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let expected: Vec<&str> = expectations.iter().map(|e| e.file).collect();
    assert_eq!(names, expected, "every fixture has an expectation");
    let main = app_args();
    for exp in &expectations {
        let src = read_fixture(&fixture_dir().join(exp.file));
        let root = parse(&src);
        assert_eq!(is_v2(&root), Ok(true), "{}", exp.file);
        let c = with_env(&HashMap::new(), |env| translate(&root, env, Some(&main)))
            .unwrap_or_else(|e| panic!("{}: {e:#?}", exp.file));
        let jobs: Vec<String> = exp
            .jobs
            .iter()
            .map(|j| j.replace("IFACES", FULL_IFACES))
            .collect();
        assert_eq!(summaries(&c), jobs, "{}", exp.file);
        assert_eq!(watch_summaries(&c), exp.watches, "{}", exp.file);
        assert_eq!(metric_summaries(&c), exp.metrics, "{}", exp.file);
        let (m, pre, post) = exp.policy;
        assert_eq!(c.exit_policy, policy(m, pre, post), "{}", exp.file);
        assert_eq!(c.compat, Compat::V2);
    }
}

#[test]
fn fixture_details_beyond_jobs() {
    let load = |file: &str| {
        let src = read_fixture(&fixture_dir().join(file));
        with_env(&HashMap::new(), |env| translate(&parse(&src), env, None)).unwrap()
    };
    let c = load("app-with-consul.json");
    assert_eq!(c.logging.level, LogLevel::Debug);
    assert_eq!(c.logging.format, LogFormat::Text);
    assert_eq!(c.logging.output, LogOutput::Stdout);
    let t = c.telemetry.unwrap();
    assert_eq!((t.port, t.ip), (9090, Some(LAN)));
    assert_eq!(load("docs-start-stop.json").stop_timeout, Duration::ZERO);
    let c = load("app-with-etcd.json");
    assert_eq!(c.consul, None);
    let src = read_fixture(&fixture_dir().join("app-with-etcd.json"));
    let e = with_env(&HashMap::new(), |env| etcd(&parse(&src), env)).unwrap();
    assert_eq!(
        e,
        Some(EtcdConfig {
            endpoints: vec!["http://etcd:4001".into()],
            prefix: "/containerpilot".into()
        })
    );
}

#[test]
fn every_invalid_fixture_fails_as_expected() {
    let files = fixture_files(&fixture_dir().join("invalid"));
    assert!(files.len() >= 40, "only {} invalid fixtures", files.len());
    for path in files {
        let src = read_fixture(&path);
        let (want_path, want_msg) = crate::config::reader::expected_error(&src)
            .unwrap_or_else(|| panic!("{path:?}: no expect line"));
        let errors = with_env(&HashMap::new(), |env| translate(&parse(&src), env, None))
            .err()
            .unwrap_or_else(|| panic!("{path:?}: loaded"));
        assert!(
            errors
                .iter()
                .any(|e| e.path == want_path && e.msg.contains(want_msg) && e.line == Some(2)),
            "{path:?}: want {want_path}: {want_msg}, got {errors:#?}"
        );
    }
}

// ----- -convert round trip -----

/// The fields both paths must agree on.
fn comparable(j: &JobConfig, sensor_jobs: &[&str]) -> String {
    let mut j = j.clone();
    j.line = 0;
    if j.always_healthy {
        // 3.x adds its version tag to the telemetry service; 2.x did not.
        j.tags.clear();
    }
    if sensor_jobs.contains(&j.name.as_str()) {
        // The 3.x form runs the check through `-putmetric`.
        j.sensor = None;
        j.exec = None;
    }
    format!("{j:?}")
}

#[test]
fn convert_output_decodes_to_the_same_model() {
    let env = fixture_env();
    for path in fixture_files(&fixture_dir()) {
        let src = read_fixture(&path);
        let root = parse(&src);
        let (translated, text) = with_env(&env, |e| {
            let c = translate(&root, e, None).unwrap_or_else(|err| panic!("{path:?}: {err:#?}"));
            let text = convert(&root, e).unwrap_or_else(|err| panic!("{path:?}: {err:#?}"));
            (c, text)
        });
        let converted = parse(&text);
        assert_eq!(is_v2(&converted), Ok(false), "{path:?}");
        let decoded = with_env(&env, |e| decode::decode(&converted, e))
            .unwrap_or_else(|err| panic!("{path:?}: {err:#?}\n{text}"));
        let sensor_jobs: Vec<&str> = translated
            .jobs
            .iter()
            .filter(|j| j.sensor.is_some())
            .map(|j| j.name.as_str())
            .collect();
        let a: Vec<String> = translated
            .jobs
            .iter()
            .map(|j| comparable(j, &sensor_jobs))
            .collect();
        let b: Vec<String> = decoded
            .jobs
            .iter()
            .map(|j| comparable(j, &sensor_jobs))
            .collect();
        assert_eq!(a, b, "{path:?}\n{text}");
        assert_eq!(translated.watches, decoded.watches, "{path:?}");
        assert_eq!(translated.telemetry, decoded.telemetry, "{path:?}");
        assert_eq!(translated.consul, decoded.consul, "{path:?}");
        assert_eq!(translated.logging, decoded.logging, "{path:?}");
        assert_eq!(translated.stop_timeout, decoded.stop_timeout, "{path:?}");
        // Sensor jobs keep their name and timing and send the value themselves.
        for (t, d) in translated.jobs.iter().zip(&decoded.jobs) {
            if let Some(metric) = &t.sensor {
                let exec = d.exec.as_deref().unwrap_or_default();
                assert_eq!(exec[..2], ["/bin/sh", "-c"]);
                assert!(
                    exec[2].contains(&format!("-putmetric \"{metric}=$*\"")),
                    "{exec:?}"
                );
            }
        }
    }
}

#[test]
fn convert_text_for_a_small_config() {
    let src = r#"{"consul": "consul:8500", "onStart": "/bin/start",
        "services": [{"name": "web", "port": 80, "poll": 2, "ttl": 6}],
        "backends": [{"name": "db", "poll": 3, "tag": "p", "onChange": "/bin/reload"}],
        "stopTimeout": -1}"#;
    let text = with_env(&HashMap::new(), |e| convert(&parse(src), e)).unwrap();
    let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with("//")).collect();
    assert_eq!(
        body,
        [
            "{",
            "  consul: \"consul:8500\",",
            "  logging: {level: \"INFO\", format: \"default\", output: \"stdout\"},",
            "  // 2.x: a negative stopTimeout sends SIGKILL at once.",
            "  stopTimeout: -1,",
            "  jobs: [",
            "    // 2.x `onStart` (the old name of `preStart`).",
            "    // 2.x exited with this hook's code when it failed.",
            "    {",
            "      name: \"preStart\",",
            "      exec: [\"/bin/start\"],",
            "      logging: {raw: true},",
            "    },",
            "    {",
            "      name: \"onChange-db\",",
            "      exec: [\"/bin/reload\"],",
            "      when: {source: \"watch.db\", each: \"changed\"},",
            "    },",
            "    {",
            "      name: \"web\",",
            "      port: 80,",
            "      interfaces: [\"eth0:inet\"],",
            "      health: {interval: 2, ttl: 6, timeout: \"2s\"},",
            "      when: {source: \"preStart\", once: \"exitSuccess\"},",
            "    },",
            "    // The application. 2.x took it from the command line: add its `exec` here, or",
            "    // pass it as trailing arguments (then the container exits with its exit code).",
            "    {",
            "      name: \"app\",",
            "      when: {source: \"preStart\", once: \"exitSuccess\"},",
            "      logging: {raw: true},",
            "    },",
            "  ],",
            "  watches: [",
            "    {name: \"db\", interval: 3, tag: \"p\"},",
            "  ],",
            "}",
        ]
    );
}

#[test]
fn repeated_service_name_is_a_warning_and_both_services_are_kept() {
    let c = ok(r#"{"consul": "consul:8500", "services": [
        {"name": "app", "port": 80, "poll": 1, "ttl": 5},
        {"name": "app", "port": 81, "poll": 1, "ttl": 5}]}"#);
    let ports: Vec<u16> = c
        .jobs
        .iter()
        .filter(|j| j.name == "app")
        .map(|j| j.port)
        .collect();
    assert_eq!(ports, [80, 81]);
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "line 3: services[1].name: duplicate service name 'app' (also services[0].name at line 2)"
        ),
        "{warnings:?}"
    );
}
