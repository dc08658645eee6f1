//! Issue 20: a repeated job name (3.x) or service name (2.x) is a warning, and
//! both jobs run as on 3.8. The configs are shaped like the autopilot-pattern
//! nginx one with `ACME_DOMAIN` set: two `nginx-public-ssl` jobs advertised on
//! different interfaces with different health checks.

mod common;
use common::consul_double::ConsulDouble;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const SSL: &str = "nginx-public-ssl";
/// Where the second job is advertised: `eth7` does not exist, so the static
/// spec after it wins (as `["eth1", "eth0"]` falls through on a host without eth1).
const SECOND_IP: &str = "192.0.2.250";

fn host() -> String {
    containerpilot::catalog::hostname()
}

/// The 3.x config (a template: the SSL jobs exist only with `ACME_DOMAIN`).
fn nginx_config(d: &TempDir, consul: &str) -> std::path::PathBuf {
    let dir = d.0.display().to_string();
    let text = format!(
        r#"{{
  consul: "{consul}",
  logging: {{ level: "INFO" }},
  control: {{ socket: "{dir}/cp.socket" }},
  jobs: [
    {{
      name: "preStart",
      exec: ["sh", "-c", "echo ok >> {dir}/prestart"]
    }},
    {{
      name: "nginx",
      port: 80,
      interfaces: ["lo"],
      exec: ["sleep", "60"],
      when: {{ source: "preStart", once: "exitSuccess" }},
      health: {{ exec: "true", interval: 1, ttl: 5 }}
    }},
    {{
      name: "nginx-public",
      port: 80,
      interfaces: ["eth7", "lo"],
      health: {{ exec: "true", interval: 1, ttl: 5 }}
    }},
    {{{{ if .ACME_DOMAIN }}}}{{
      name: "nginx-ssl",
      port: 443,
      interfaces: ["lo"],
      health: {{ exec: "true", interval: 1, ttl: 5 }}
    }},
    {{
      name: "nginx-public-ssl",
      port: 443,
      interfaces: ["lo"],
      health: {{ exec: ["sh", "-c", "echo a >> {dir}/ssl-a"], interval: 1, ttl: 5 }}
    }},
    {{
      name: "nginx-public-ssl",
      port: 443,
      interfaces: ["eth7", "static:{SECOND_IP}"],
      health: {{ exec: ["sh", "-c", "echo {{{{ .ACME_DOMAIN }}}} >> {dir}/ssl-b"], interval: 1, ttl: 5 }}
    }},{{{{ end }}}}
    {{
      name: "sensor",
      exec: "true",
      when: {{ interval: "5s" }}
    }}
  ]
}}
"#
    );
    d.write("containerpilot.json5", &text)
}

/// 1-based lines of the `name: "<name>"` entries of a file.
fn name_lines(path: &std::path::Path, name: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(path).unwrap();
    let needle = format!("name: \"{name}\"");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle))
        .map(|(i, _)| i + 1)
        .collect()
}

fn registrations_of(consul: &ConsulDouble, id: &str) -> Vec<Value> {
    consul
        .registrations()
        .into_iter()
        .filter(|r| r["ID"] == id)
        .collect()
}

fn status(d: &TempDir) -> Value {
    let (code, body) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

#[test]
fn validate_warns_with_both_places_and_strict_refuses() {
    let d = TempDir::new("dup-validate");
    let cfg = nginx_config(&d, "127.0.0.1:1");
    let lines = name_lines(&cfg, SSL);
    assert_eq!(lines.len(), 2);
    let path = cfg.display().to_string();
    let (code, out, err) = run(
        &["-validate", "-config", &path],
        &[("ACME_DOMAIN", "example.com")],
    );
    assert_eq!(code, 0, "{out}{err}");
    let expected = format!(
        "{path}: warning: line {}: jobs[5].name: duplicate job name '{SSL}' (also jobs[4].name at line {})",
        lines[1], lines[0]
    );
    assert!(err.contains(&expected), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(out.contains(": OK: 7 jobs"), "{out}");

    let (code, out, err) = run(
        &["-validate", "-strict", "-config", &path],
        &[("ACME_DOMAIN", "example.com")],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("1 error(s)"), "{err}");
    assert!(
        err.contains(&format!("jobs[5].name: duplicate job name '{SSL}'")),
        "{err}"
    );
    // without ACME_DOMAIN there is no repeated name: nothing to warn about
    let (code, _, err) = run(&["-validate", "-strict", "-config", &path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // the daemon refuses to start with -strict, as a config error
    let (code, _, err) = run(
        &["-strict", "-config", &path],
        &[("ACME_DOMAIN", "example.com")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("duplicate job name"), "{err}");
}

#[test]
fn nginx_with_acme_starts_runs_both_jobs_registers_as_3_8_and_deregisters_on_sigterm() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("dup-nginx");
    let cfg = nginx_config(&d, &consul.addr());
    let mut cp = Daemon::start_with(
        Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .env("ACME_DOMAIN", "example.com"),
    );
    wait_ready(&d.socket());
    let id = format!("{SSL}-{}", host());
    // both health checks run, each its own command
    assert!(
        wait_until(10 * SEC, || d.read("ssl-a").lines().count() >= 2
            && d.read("ssl-b").lines().count() >= 2),
        "{}",
        cp.log()
    );
    assert!(d.read("ssl-b").lines().all(|l| l == "example.com"));
    assert_eq!(cp.count("duplicate job name 'nginx-public-ssl'"), 1);

    // 3.8: both jobs register under the one ID `<name>-<hostname>`, each with its
    // own address, once; the catalog keeps one entry (the last registration).
    assert!(
        wait_until(5 * SEC, || registrations_of(&consul, &id).len() >= 2),
        "{:?}\n{}",
        consul.registrations(),
        cp.log()
    );
    // heartbeats of both go on without registering again
    std::thread::sleep(3 * SEC);
    let regs = registrations_of(&consul, &id);
    let mut addrs: Vec<&str> = regs.iter().filter_map(|r| r["Address"].as_str()).collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1", SECOND_IP], "{regs:?}");
    for r in &regs {
        assert_eq!(r["Name"], SSL);
        assert_eq!(r["Port"], 443);
        assert_eq!(r["Check"]["TTL"], "5s");
    }
    let services = consul.services();
    let entries: Vec<&String> = services
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(SSL))
        .collect();
    assert_eq!(entries, [&id], "{services}");
    assert_eq!(
        consul.check_status(&format!("service:{id}")).as_deref(),
        Some("passing")
    );
    // every other job registered exactly once too
    for name in ["nginx", "nginx-public", "nginx-ssl"] {
        let other = format!("{name}-{}", host());
        assert_eq!(registrations_of(&consul, &other).len(), 1, "{name}");
    }

    // -status and /v3/status list both jobs, each with its own address
    let st = status(&d);
    let ssl: Vec<&Value> = st["Services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Name"] == SSL)
        .collect();
    assert_eq!(ssl.len(), 2, "{st}");
    assert_eq!(ssl[0]["Address"], "127.0.0.1");
    assert_eq!(ssl[1]["Address"], SECOND_IP);
    assert!(ssl.iter().all(|s| s["Status"] == "healthy"), "{st}");

    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    let services = consul.services();
    assert!(
        services.as_object().unwrap().is_empty(),
        "everything deregistered: {services}"
    );
    let deregs = consul
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p == &format!("/v1/agent/service/deregister/{id}"))
        .count();
    assert!(deregs >= 1);
}

#[test]
fn jobs_sharing_a_name_answer_signal_and_pid_variable_together() {
    let d = TempDir::new("dup-signal");
    let dir = d.0.display().to_string();
    let worker = format!(
        r#"{{ name: "worker", exec: ["sh", "-c", "trap 'echo $$ >> {dir}/hups' HUP; while :; do sleep 0.1; done"] }}"#
    );
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: "{dir}/cp.socket" }},
  jobs: [ {worker}, {worker},
    {{ name: "reporter", exec: ["sh", "-c", "echo $CONTAINERPILOT_WORKER_PID >> {dir}/env"], when: {{ interval: "300ms" }} }} ] }}"#
        ),
    );
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let pids = || -> Vec<i64> {
        status(&d)["Jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["Name"] == "worker")
            .filter_map(|j| j["Pid"].as_i64())
            .collect()
    };
    assert!(wait_until(5 * SEC, || pids().len() == 2), "{}", cp.log());
    let both = pids();
    assert_ne!(both[0], both[1]);

    // -signal worker=SIGHUP reaches both
    let path = cfg.display().to_string();
    let (code, out, err) = run(&["-config", &path, "-signal", "worker=SIGHUP"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(wait_until(5 * SEC, || {
        let mut got: Vec<i64> = d
            .read("hups")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        got.sort();
        let mut want = both.clone();
        want.sort();
        got == want
    }));

    // the variable names the later started of the running ones, then the other
    let last_env = || {
        d.read("env")
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<i64>().ok())
    };
    assert!(
        wait_until(5 * SEC, || last_env() == Some(both[1])),
        "{:?}",
        d.read("env")
    );
    unsafe_kill(both[1] as i32);
    assert!(
        wait_until(5 * SEC, || last_env() == Some(both[0])),
        "{:?}",
        d.read("env")
    );
    assert_eq!(pids(), [both[0]]);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

fn unsafe_kill(pid: i32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

#[test]
fn v2_services_with_one_name_both_run_register_and_deregister() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("dup-v2");
    let dir = d.0.display().to_string();
    let cfg = d.write(
        "containerpilot.json",
        &format!(
            r#"{{
  "consul": "{addr}",
  "services": [
    {{
      "name": "nginx-public-ssl",
      "port": 443,
      "interfaces": ["lo"],
      "health": ["sh", "-c", "echo a >> {dir}/ssl-a"],
      "poll": 1,
      "ttl": 5
    }},
    {{
      "name": "nginx-public-ssl",
      "port": 443,
      "interfaces": ["eth7", "static:{SECOND_IP}"],
      "health": ["sh", "-c", "echo b >> {dir}/ssl-b"],
      "poll": 1,
      "ttl": 5
    }}
  ]
}}
"#,
            addr = consul.addr()
        ),
    );
    let path = cfg.display().to_string();
    let (code, _, err) = run(&["-validate", "-config", &path], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "warning: line 13: services[1].name: duplicate service name '{SSL}' (also services[0].name at line 5)"
        )),
        "{err}"
    );
    let (code, _, err) = run(&["-validate", "-strict", "-config", &path], &[]);
    assert_eq!(code, 1, "{err}");

    let mut cp = Daemon::start(&cfg);
    let id = format!("{SSL}-{}", host());
    assert!(
        wait_until(10 * SEC, || d.read("ssl-a").lines().count() >= 2
            && d.read("ssl-b").lines().count() >= 2),
        "{}",
        cp.log()
    );
    assert!(
        wait_until(5 * SEC, || registrations_of(&consul, &id).len() >= 2),
        "{}",
        cp.log()
    );
    std::thread::sleep(3 * SEC);
    let regs = registrations_of(&consul, &id);
    let mut addrs: Vec<&str> = regs.iter().filter_map(|r| r["Address"].as_str()).collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1", SECOND_IP], "{regs:?}");
    // 2.x registers without an inline check and passes the check named after the ID
    assert!(regs
        .iter()
        .all(|r| r.get("Check").is_none_or(Value::is_null)));
    assert_eq!(consul.check_status(&id).as_deref(), Some("passing"));
    assert_eq!(
        consul.services().as_object().unwrap().len(),
        1,
        "{}",
        consul.services()
    );
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    assert!(consul.services().as_object().unwrap().is_empty());
}
