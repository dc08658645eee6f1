//! Issue 15: a reload loses nothing. Unchanged jobs keep their state, metrics
//! keep their values, watches their instances, services their registration;
//! only what changed is stopped and started again.

mod common;
use common::consul_double::ConsulDouble;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn host() -> String {
    containerpilot::catalog::hostname()
}

fn reload(d: &TempDir) -> (u16, String) {
    control(&d.socket(), "POST", "/v3/reload", None)
}

fn status(d: &TempDir) -> Value {
    let (code, body) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The pid `/v3/status` shows for the job named `name`.
fn pid_of(d: &TempDir, name: &str) -> Option<i64> {
    let st = status(d);
    ["Jobs", "Services"]
        .iter()
        .filter_map(|k| st[*k].as_array())
        .flatten()
        .find(|j| j["Name"] == name)
        .and_then(|j| j["Pid"].as_i64())
}

fn lines(d: &TempDir, file: &str) -> usize {
    d.read(file).lines().count()
}

/// `containerpilot_events` series and their values.
fn event_counts(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200);
    body.lines()
        .filter(|l| l.starts_with("containerpilot_events{"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric(addr: &str, name: &str) -> Option<String> {
    let (_, body) = http(addr, "GET", "/metrics");
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(|l| l[name.len() + 1..].to_string())
}

fn requests_matching(consul: &ConsulDouble, pred: impl Fn(&str, &str) -> bool) -> usize {
    consul
        .requests()
        .iter()
        .filter(|(m, p, _)| pred(m, p))
        .count()
}

fn deregistrations(consul: &ConsulDouble) -> usize {
    requests_matching(consul, |m, p| {
        m == "PUT" && p.starts_with("/v1/agent/service/deregister/")
    })
}

fn registrations_of(consul: &ConsulDouble, id: &str) -> usize {
    consul
        .registrations()
        .iter()
        .filter(|r| r["ID"] == id)
        .count()
}

fn write_config(path: &Path, text: &str) {
    // write beside and rename, so the daemon never reads half a file
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    consul: ConsulDouble,
    d: TempDir,
    telemetry: String,
    cfg: PathBuf,
}

/// A config with a one-shot `setup`, a long-running advertised `app`, a
/// telemetry gauge, a watch on `upstream` and a job run on each of its changes;
/// `extra` is appended to the jobs.
fn config_text(s: &Setup, port: u16, app_interval: u32, extra: &str) -> String {
    let dir = s.d.0.display().to_string();
    format!(
        r#"{{
  consul: "{consul}",
  control: {{ socket: "{dir}/cp.socket" }},
  telemetry: {{ port: {port}, interfaces: ["lo"],
    metrics: [ {{ name: "queue_depth", help: "items waiting", type: "gauge" }} ] }},
  watches: [ {{ name: "upstream", interval: 1 }} ],
  jobs: [
    {{ name: "setup", exec: ["sh", "-c", "echo ran >> {dir}/setup"] }},
    {{ name: "app", exec: ["sleep", "300"], port: 8080, interfaces: ["lo"],
       when: {{ source: "setup", once: "exitSuccess" }},
       health: {{ exec: ["sh", "-c", "echo x >> {dir}/app-checks"], interval: {app_interval}, ttl: 10 }} }},
    {{ name: "other", exec: ["sleep", "300"], port: 8081, interfaces: ["lo"],
       health: {{ exec: ["sh", "-c", "echo x >> {dir}/other-checks"], interval: 1, ttl: 10 }} }},
    {{ name: "on-change", exec: ["sh", "-c", "echo c >> {dir}/changed"],
       when: {{ source: "watch.upstream", each: "changed" }} }},
    {extra}
  ]
}}"#,
        consul = s.consul.addr()
    )
}

fn start(tag: &str) -> (Setup, Daemon, u16) {
    let consul = ConsulDouble::start();
    assert_eq!(
        consul.register(json!({
            "ID": "upstream-1", "Name": "upstream", "Address": "10.1.1.1", "Port": 80,
            "Check": { "TTL": "3600s", "Status": "passing" }
        })),
        200
    );
    let d = TempDir::new(tag);
    let cfg = d.path("cp.json5");
    let port = free_port();
    let s = Setup {
        consul,
        telemetry: format!("127.0.0.1:{port}"),
        cfg,
        d,
    };
    write_config(&s.cfg, &config_text(&s, port, 1, ""));
    let cp = Daemon::start(&s.cfg);
    wait_ready(&s.d.socket());
    (s, cp, port)
}

#[test]
fn unchanged_config_reloaded_three_times_loses_nothing() {
    let (s, mut cp, _) = start("reload-same");
    let (d, consul) = (&s.d, &s.consul);
    let app_id = format!("app-{}", host());
    assert!(
        wait_until(10 * SEC, || pid_of(d, "app").is_some()
            && consul.services().get(&app_id).is_some()
            && lines(d, "changed") == 1),
        "{}",
        cp.log()
    );
    let app_pid = pid_of(d, "app");
    let (code, _) = control(
        &d.socket(),
        "POST",
        "/v3/metric",
        Some(r#"{"queue_depth": 42}"#),
    );
    assert_eq!(code, 200);
    assert_eq!(metric(&s.telemetry, "queue_depth").as_deref(), Some("42"));
    let regs_before = registrations_of(consul, &app_id);
    let mut counts = event_counts(&s.telemetry);
    for _ in 0..3 {
        let path = s.cfg.display().to_string();
        let (code, out, err) = run(&["-config", &path, "-reload"], &[]);
        assert_eq!(code, 0, "{out}{err}");
        std::thread::sleep(SEC);
        let now = event_counts(&s.telemetry);
        for (k, v) in &counts {
            let after = now.get(k).copied().unwrap_or(0.0);
            assert!(after >= *v, "{k} went from {v} to {after}");
        }
        counts = now;
    }
    // the watch's next answers find the same upstream: no `changed`
    std::thread::sleep(2 * SEC);
    assert_eq!(cp.count("control: reloaded app via control plane"), 3);
    assert_eq!(lines(d, "setup"), 1, "setup ran again:\n{}", cp.log());
    assert_eq!(pid_of(d, "app"), app_pid);
    assert_eq!(metric(&s.telemetry, "queue_depth").as_deref(), Some("42"));
    assert_eq!(deregistrations(consul), 0, "{:?}", consul.requests());
    assert_eq!(registrations_of(consul, &app_id), regs_before);
    assert_eq!(lines(d, "changed"), 1, "{}", cp.log());
    assert_eq!(status(d)["Services"][0]["Status"], "healthy");
    // the watch still works: a real change is seen
    consul.deregister("upstream-1");
    assert!(wait_until(5 * SEC, || lines(d, "changed") == 2));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn a_changed_health_interval_changes_only_that_job() {
    let (s, mut cp, port) = start("reload-interval");
    let (d, consul) = (&s.d, &s.consul);
    let app_id = format!("app-{}", host());
    let other_id = format!("other-{}", host());
    assert!(
        wait_until(10 * SEC, || pid_of(d, "app").is_some()
            && consul.services().get(&app_id).is_some()
            && consul.services().get(&other_id).is_some()),
        "{}",
        cp.log()
    );
    let other_pid = pid_of(d, "other");
    let (app_regs, other_regs) = (
        registrations_of(consul, &app_id),
        registrations_of(consul, &other_id),
    );
    write_config(&s.cfg, &config_text(&s, port, 3, ""));
    let (code, body) = reload(d);
    assert_eq!(code, 200, "{body}");
    // the new `app` is a new run (its `when` already happened: setup succeeded)
    assert!(wait_until(3 * SEC, || pid_of(d, "app").is_some()));
    std::thread::sleep(SEC);
    let (a0, o0) = (lines(d, "app-checks"), lines(d, "other-checks"));
    std::thread::sleep(6 * SEC);
    let (a, o) = (lines(d, "app-checks") - a0, lines(d, "other-checks") - o0);
    assert!((1..=3).contains(&a), "app checks every 3 s now: {a} in 6 s");
    assert!(o >= 5, "other still checks every second: {o} in 6 s");
    assert_eq!(pid_of(d, "other"), other_pid, "other untouched");
    assert_eq!(lines(d, "setup"), 1);
    assert_eq!(registrations_of(consul, &app_id), app_regs + 1);
    assert_eq!(registrations_of(consul, &other_id), other_regs);
    assert_eq!(deregistrations(consul), 0, "{:?}", consul.requests());
    let ttl = consul
        .registrations()
        .iter()
        .rev()
        .find(|r| r["ID"] == app_id.as_str())
        .map(|r| r["Check"]["TTL"].clone());
    assert_eq!(ttl, Some(json!("10s")));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn a_new_job_waiting_for_a_past_success_starts_within_a_second() {
    let (s, mut cp, port) = start("reload-past");
    let d = &s.d;
    assert!(wait_until(5 * SEC, || lines(d, "setup") == 1));
    let dir = d.0.display().to_string();
    let late = format!(
        r#"{{ name: "late", exec: ["sh", "-c", "echo started >> {dir}/late"],
             when: {{ source: "setup", once: "exitSuccess" }} }},
           {{ name: "never", exec: ["sh", "-c", "echo started >> {dir}/never"],
             when: {{ source: "setup", once: "exitFailed" }} }}"#
    );
    write_config(&s.cfg, &config_text(&s, port, 1, &late));
    let t = Instant::now();
    let (code, body) = reload(d);
    assert_eq!(code, 200, "{body}");
    assert!(wait_until(SEC, || lines(d, "late") == 1), "{}", cp.log());
    let took = t.elapsed();
    assert!(took < SEC, "{took:?}");
    std::thread::sleep(SEC);
    assert_eq!(lines(d, "late"), 1);
    assert_eq!(lines(d, "never"), 0);
    assert_eq!(lines(d, "setup"), 1);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

/// Configs A and B differ in one job; the third file does not parse.
fn alternating_configs(d: &TempDir) -> [String; 3] {
    let dir = d.0.display().to_string();
    let base = |x: &str| {
        format!(
            r#"{{
  control: {{ socket: "{dir}/cp.socket" }},
  jobs: [
    {{ name: "setup", exec: ["sh", "-c", "echo ran >> {dir}/setup"] }},
    {{ name: "steady", exec: ["sleep", "300"] }},
    {{ name: "x", exec: ["sleep", "{x}"] }},
  ]
}}"#
        )
    };
    [base("301"), base("302"), "{ jobs: [ { name: ".to_string()]
}

#[test]
fn two_hundred_alternating_reloads_leak_nothing_and_never_restart_unchanged_jobs() {
    let d = TempDir::new("reload-200");
    let cfg = d.path("cp.json5");
    let texts = alternating_configs(&d);
    write_config(&cfg, &texts[0]);
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    assert!(wait_until(5 * SEC, || pid_of(&d, "steady").is_some()
        && pid_of(&d, "x").is_some()));
    let steady = pid_of(&d, "steady");
    let daemon = cp.pid();
    let mut sample = None;
    let (mut ok, mut bad) = (0, 0);
    for round in 0..200 {
        for (i, text) in texts.iter().enumerate() {
            write_config(&cfg, text);
            let (code, body) = reload(&d);
            match i {
                2 => {
                    assert_eq!(code, 400, "{body}");
                    bad += 1;
                }
                _ => {
                    assert_eq!(code, 200, "{body}");
                    ok += 1;
                }
            }
        }
        if round == 19 {
            // let the last replaced `x` settle, then take the baseline
            assert!(wait_until(5 * SEC, || pid_of(&d, "x").is_some()));
            std::thread::sleep(Duration::from_millis(300));
            sample = Some((fd_count(daemon).unwrap(), rss_kb(daemon).unwrap()));
        }
    }
    assert!(wait_until(5 * SEC, || pid_of(&d, "x").is_some()));
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, rss0) = sample.unwrap();
    let (fds1, rss1) = (fd_count(daemon).unwrap(), rss_kb(daemon).unwrap());
    eprintln!(
        "200 rounds ({ok} valid, {bad} invalid reloads): fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB"
    );
    assert_eq!(fds1, fds0, "fd growth");
    assert!(rss1 <= rss0 + 512, "RSS grew from {rss0} to {rss1} KiB");
    assert!(
        wait_until(2 * SEC, || zombie_children(daemon).is_empty()),
        "zombies: {:?}",
        zombie_children(daemon)
    );
    // steady, setup, the last x and nothing else
    assert!(
        wait_until(3 * SEC, || children_of(daemon).len() == 2),
        "{:?}",
        children_of(daemon)
    );
    assert_eq!(pid_of(&d, "steady"), steady, "steady was restarted");
    assert_eq!(lines(&d, "setup"), 1);
    assert_eq!(status(&d)["Jobs"].as_array().map(|a| a.len()), Some(3));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn sighup_in_2x_mode_keeps_unchanged_jobs() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("reload-v2");
    let dir = d.0.display().to_string();
    let cfg = d.write(
        "containerpilot.json",
        &format!(
            r#"{{
  "consul": "{addr}",
  "preStart": ["sh", "-c", "echo ran >> {dir}/prestart"],
  "services": [ {{ "name": "web", "port": 8080, "interfaces": ["lo"], "health": "true", "poll": 1, "ttl": 5 }} ],
  "coprocesses": [ {{ "name": "helper", "command": ["sleep", "300"] }} ]
}}"#,
            addr = consul.addr()
        ),
    );
    let web_id = format!("web-{}", host());
    let mut cp = Daemon::start_with(
        std::process::Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .arg("sleep")
            .arg("300"),
    );
    let daemon = cp.pid();
    // the application and the coprocess
    let sleepers = || -> Vec<i32> {
        let mut v: Vec<i32> = children_of(daemon)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep"))
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        wait_until(5 * SEC, || sleepers().len() == 2
            && lines(&d, "prestart") == 1),
        "{}",
        cp.log()
    );
    assert!(wait_until(5 * SEC, || consul
        .services()
        .get(&web_id)
        .is_some()));
    let regs = registrations_of(&consul, &web_id);
    let before = sleepers();
    for _ in 0..3 {
        cp.signal(SIGHUP);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(cp.log().matches("reloaded").count() >= 3, "{}", cp.log());
    assert_eq!(lines(&d, "prestart"), 1, "{}", cp.log());
    assert_eq!(sleepers(), before);
    std::thread::sleep(2 * SEC);
    assert_eq!(deregistrations(&consul), 0, "{:?}", consul.requests());
    assert_eq!(registrations_of(&consul, &web_id), regs);
    assert_eq!(consul.check_status(&web_id).as_deref(), Some("passing"));
    let (st, _) = cp.stop();
    assert!(st.is_some());
    assert!(consul.services().get(&web_id).is_none());
}

#[test]
fn a_reload_during_shutdown_is_refused_with_503_and_an_invalid_one_with_400() {
    let d = TempDir::new("reload-refused");
    let dir = d.0.display().to_string();
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: "{dir}/cp.socket" }},
  jobs: [ {{ name: "slow", exec: ["sh", "-c", "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.05; done"] }} ] }}"#
        ),
    );
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    assert!(wait_until(5 * SEC, || pid_of(&d, "slow").is_some()));
    let pid = pid_of(&d, "slow");
    std::fs::write(&cfg, "{ jobs: [ { name: ").unwrap();
    let (code, body) = reload(&d);
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("parse error at line:col [1:"), "{body}");
    assert_eq!(pid_of(&d, "slow"), pid, "nothing changed");
    std::thread::sleep(Duration::from_millis(300));
    cp.signal(SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let (code, body) = reload(&d);
    assert_eq!(
        (code, body.as_str()),
        (503, "shutting down: reload refused\n")
    );
    let st = cp.wait_exit(10 * SEC);
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn moving_to_another_agent_never_waits_on_the_old_one() {
    let d = TempDir::new("reload-move");
    let dir = d.0.display().to_string();
    let old = ConsulDouble::start();
    let new = ConsulDouble::start();
    let cfg_for = |consul: &ConsulDouble| {
        format!(
            r#"{{ consul: "{}", control: {{ socket: "{dir}/cp.socket" }},
  jobs: [ {{ name: "web", port: 8080, interfaces: ["static:127.0.0.1"],
             exec: ["sleep", "600"],
             health: {{ exec: "true", interval: 1, ttl: 10 }} }} ] }}"#,
            consul.addr()
        )
    };
    let cfg = d.write("cp.json5", &cfg_for(&old));
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let id = format!("web-{}", host());
    assert!(wait_until(5 * SEC, || old.check_status(&id).as_deref()
        == Some("passing")));
    // The old agent hangs: a reload must not wait for its deregistration.
    old.set_delay(Duration::MAX);
    write_config(&cfg, &cfg_for(&new));
    let started = Instant::now();
    let (code, body) = reload(&d);
    let took = started.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(took < Duration::from_millis(500), "reload took {took:?}");
    let ping = Instant::now();
    assert_eq!(control(&d.socket(), "GET", "/v3/ping", None).0, 200);
    assert!(ping.elapsed() < Duration::from_millis(200));
    // The new agent gets the service once the old one gave up (2 s at most).
    assert!(wait_until(6 * SEC, || new.check_status(&id).as_deref()
        == Some("passing")));
    assert_eq!(deregistrations(&new), 0);
    // Back again, the old agent hears the deregistration that was waiting.
    old.set_delay(Duration::ZERO);
    assert!(wait_until(5 * SEC, || old
        .services()
        .as_object()
        .is_some_and(|m| m.is_empty())));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(new.services().as_object().is_some_and(|m| m.is_empty()));
}

#[test]
fn a_reload_publishes_no_health_edge_and_runs_no_check_early() {
    let d = TempDir::new("reload-edge");
    let dir = d.0.display().to_string();
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: "{dir}/cp.socket" }},
  jobs: [
    {{ name: "app", exec: ["sleep", "600"],
       health: {{ exec: ["sh", "-c", "echo x >> {dir}/checks"], interval: 2, ttl: 10 }} }},
    {{ name: "on-healthy", exec: ["sh", "-c", "echo x >> {dir}/healthy"],
       when: {{ source: "app", each: "healthy" }} }} ] }}"#
        ),
    );
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let count = |f: &str| std::fs::read_to_string(d.path(f)).map_or(0, |s| s.lines().count());
    // Catch the moment a check has just run (and its `healthy` was handled).
    assert!(wait_until(10 * SEC, || count("checks") >= 2
        && count("healthy") == count("checks")));
    let before = count("checks");
    assert!(wait_until(3 * SEC, || count("checks") > before));
    assert!(wait_until(SEC, || count("healthy") == count("checks")));
    let (checks, healthy) = (count("checks"), count("healthy"));
    for _ in 0..5 {
        assert_eq!(reload(&d).0, 200);
    }
    // The next check is due about 2 s after the last one: in the next second
    // neither a check nor a `healthy` edge may come from the reloads.
    std::thread::sleep(SEC);
    assert_eq!(count("checks"), checks, "a reload ran a check early");
    assert_eq!(
        count("healthy"),
        healthy,
        "a reload re-triggered each: healthy"
    );
    assert_eq!(status_of(&d, "app"), "healthy");
    // The cadence goes on.
    assert!(wait_until(3 * SEC, || count("checks") > checks));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

fn status_of(d: &TempDir, name: &str) -> String {
    status(d)["Jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["Name"] == name)
        .and_then(|j| j["Status"].as_str())
        .unwrap_or_default()
        .to_string()
}
