//! Watches that react at once, against the Consul agent double and real etcd:
//! a change is seen within a second while a blocking query is open, key
//! watches report set/change/delete, heartbeats and the control socket never
//! wait behind a long poll, an agent that hangs or dies costs no CPU and is
//! caught up with when it returns, an index that goes back resets the cycle,
//! and status/metrics show what each watch saw (never a key's value).

mod common;
use common::consul_double::ConsulDouble;
use common::etcd::{available, Etcd};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

/// A daemon with `catalog` (`consul: "..."` or `etcd: {...}`), DEBUG logs in
/// the text format (levels visible) and `body`; ready when its socket answers.
fn start(d: &TempDir, catalog: &str, body: &str) -> Daemon {
    let cfg = d.write(
        "cp.json5",
        &format!(
            "{{ {catalog}, logging: {{ level: \"DEBUG\", format: \"text\" }}, control: {{ socket: {:?} }}, {body} }}",
            d.socket().display().to_string()
        ),
    );
    let cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    cp
}

fn consul_at(c: &ConsulDouble) -> String {
    format!("consul: {:?}", c.addr())
}

/// `Changed`, `Healthy`, `Unhealthy` events of `source`, in log order.
fn events(cp: &Daemon, source: &str) -> Vec<String> {
    cp.log()
        .lines()
        .filter(|l| l.contains("event: {Status") && l.contains(&format!(" {source}}}")))
        .filter_map(|l| l.split("event: {Status").nth(1))
        .map(|e| e.split(' ').next().unwrap_or("").to_string())
        .collect()
}

/// A job that appends a line to `file` on each `changed` of `watch.<watch>`.
fn on_change(watch: &str, file: &std::path::Path) -> String {
    format!(
        r#"{{ name: "on-{watch}", exec: ["sh", "-c", "echo c >> {f}"], when: {{ source: "watch.{watch}", each: "changed" }} }}"#,
        f = file.display()
    )
}

fn lines(d: &TempDir, name: &str) -> usize {
    d.read(name).lines().count()
}

fn status(d: &TempDir) -> Value {
    let (code, body) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The `WatchDetails` entry of watch `name`.
fn detail(d: &TempDir, name: &str) -> Value {
    status(d)["WatchDetails"]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["Name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Blocking (index-carrying) health queries the double received for `name`.
fn blocking(c: &ConsulDouble, name: &str) -> usize {
    c.count_requests(&format!("/v1/health/service/{name}?passing=1&index="))
}

fn instance(id: &str, name: &str, port: u16) -> Value {
    json!({
        "ID": id, "Name": name, "Address": "10.0.0.1", "Port": port, "Tags": ["b", "a"],
        "Check": { "TTL": "600s", "Status": "passing" }
    })
}

/// Runs `change` once the watch's next blocking query is open (`open()` true),
/// then waits for `done()`; returns how long the change took to be seen.
fn seen_after(
    open: impl Fn() -> bool,
    change: impl FnOnce(),
    done: impl Fn() -> bool,
    cp: &Daemon,
) -> Duration {
    assert!(
        wait_until(20 * SEC, open),
        "no blocking query:\n{}",
        cp.log()
    );
    let t = Instant::now();
    change();
    assert!(wait_until(10 * SEC, done), "change not seen:\n{}", cp.log());
    t.elapsed()
}

#[test]
fn consul_service_changes_are_seen_within_a_second_with_interval_10() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("watch-consul-svc");
    let o = d.path("changes");
    let mut cp = start(
        &d,
        &consul_at(&consul),
        &format!(
            r#"watches: [ {{ name: "up", interval: 10 }} ], jobs: [ {} ]"#,
            on_change("up", &o)
        ),
    );
    let mut took = Vec::new();
    took.push(seen_after(
        || blocking(&consul, "up") >= 1,
        || assert_eq!(consul.register(instance("up-1", "up", 5000)), 200),
        || lines(&d, "changes") == 1,
        &cp,
    ));
    let w = detail(&d, "up");
    assert_eq!(w["Kind"], "service");
    assert_eq!(w["Instances"], 1);
    assert_eq!(w["Index"], consul.service_index("up"));
    assert!(
        w["LastChange"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{w}"
    );
    took.push(seen_after(
        || blocking(&consul, "up") >= 2,
        || assert_eq!(consul.register(instance("up-1", "up", 5001)), 200),
        || lines(&d, "changes") == 2,
        &cp,
    ));
    took.push(seen_after(
        || blocking(&consul, "up") >= 3,
        || assert_eq!(consul.deregister("up-1"), 200),
        || lines(&d, "changes") == 3,
        &cp,
    ));
    println!("appear, port change, disappear seen after {took:?}");
    assert!(took.iter().all(|t| *t < SEC), "{took:?}");
    assert_eq!(
        events(&cp, "watch.up"),
        [
            "Changed",
            "Healthy",
            "Changed",
            "Healthy",
            "Changed",
            "Unhealthy"
        ]
    );
    // Each blocking query started no sooner than `interval` after the one
    // before: 3 changes cost 1 plain read and 4 blocking queries at most.
    assert!(wait_until(20 * SEC, || blocking(&consul, "up") >= 4));
    assert_eq!(consul.count_requests("/v1/health/service/up"), 5);
    assert_eq!(lines(&d, "changes"), 3, "one job run per change");
    // SIGTERM with a long poll open: it is abandoned, not awaited.
    let (st, t) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    assert!(t < 3 * SEC, "shutdown took {t:?}");
}

#[test]
fn consul_key_set_changed_and_deleted_are_three_changes_and_the_value_stays_private() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("watch-consul-key");
    let (o, env) = (d.path("changes"), d.path("env"));
    let port = free_port();
    let secret = "password=hunter2-do-not-leak";
    let mut cp = start(
        &d,
        &consul_at(&consul),
        &format!(
            r#"telemetry: {{ port: {port}, interfaces: ["lo"] }},
               watches: [ {{ name: "app-config", key: "service/app/config", interval: 1 }} ],
               jobs: [ {{ name: "on-cfg", exec: ["sh", "-c", "env >> {e}; echo c >> {o}"],
                          when: {{ source: "watch.app-config", each: "changed" }} }} ]"#,
            e = env.display(),
            o = o.display()
        ),
    );
    let key_queries = || consul.count_requests("/v1/kv/service/app/config?index=");
    seen_after(
        || key_queries() >= 1,
        || {
            consul.kv_put("service/app/config", secret.as_bytes());
        },
        || lines(&d, "changes") == 1,
        &cp,
    );
    let w = detail(&d, "app-config");
    assert_eq!(w["Kind"], "key");
    assert_eq!(w["ValueSize"], secret.len());
    assert!(w["ModifyIndex"].as_u64().is_some_and(|m| m > 0), "{w}");
    seen_after(
        || key_queries() >= 2,
        || {
            consul.kv_put("service/app/config", b"password=changed");
        },
        || lines(&d, "changes") == 2,
        &cp,
    );
    // The same value written again moves the index, not the value: no event.
    assert!(wait_until(10 * SEC, || key_queries() >= 3));
    let before = key_queries();
    consul.kv_put("service/app/config", b"password=changed");
    assert!(wait_until(10 * SEC, || key_queries() > before));
    std::thread::sleep(SEC / 2);
    assert_eq!(lines(&d, "changes"), 2);
    seen_after(
        || key_queries() > before,
        || consul.kv_delete("service/app/config"),
        || lines(&d, "changes") == 3,
        &cp,
    );
    assert_eq!(
        events(&cp, "watch.app-config"),
        ["Changed", "Changed", "Changed"]
    );
    let w = detail(&d, "app-config");
    assert_eq!(
        (w["ValueSize"].clone(), w["ModifyIndex"].clone()),
        (Value::Null, Value::Null)
    );
    // The value reached no job environment, no status page, no log line.
    let (_, status_body) = control(&d.socket(), "GET", "/v3/status", None);
    assert!(!d.read("env").contains("hunter2"));
    assert!(!status_body.contains("hunter2"));
    assert!(!cp.log().contains("hunter2"));
    let (code, metrics) = http(&format!("127.0.0.1:{port}"), "GET", "/metrics");
    assert_eq!(code, 200);
    let key_ok = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"containerpilot_catalog_requests_total{kind="key",outcome="ok"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        key_ok as usize >= consul.count_requests("/v1/kv/") - 1,
        "{key_ok} in\n{metrics}"
    );
    cp.stop();
}

#[test]
fn heartbeats_and_ping_never_wait_behind_a_long_poll() {
    let consul = ConsulDouble::start();
    // A known service has an index of its own: the 100 registrations below do
    // not move it, so its blocking query stays open.
    consul.register(instance("up-1", "up", 5000));
    let d = TempDir::new("watch-consul-hb");
    let jobs: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{ name: "svc{i}", exec: ["sleep", "600"], port: {p}, interfaces: ["lo"],
                     health: {{ exec: "true", interval: 2, ttl: 5 }} }}"#,
                p = 20000 + i
            )
        })
        .collect();
    let sweep = Sweep::new("watch-hb");
    let cfg_env = [(MARK_VAR, sweep.0.as_str())];
    let cfg = d.write(
        "cp.json5",
        &format!(
            "{{ consul: {:?}, control: {{ socket: {:?} }}, watches: [ {{ name: \"up\", interval: 1 }} ], jobs: [ {} ] }}",
            consul.addr(),
            d.socket().display().to_string(),
            jobs.join(",")
        ),
    );
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("-config").arg(&cfg).envs(cfg_env);
    let mut cp = Daemon::start_with(&mut cmd);
    wait_ready(&d.socket());
    let passing = || {
        consul
            .checks()
            .as_object()
            .map(|m| {
                m.values()
                    .filter(|c| {
                        c["ServiceName"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("svc"))
                    })
                    .filter(|c| c["Status"] == "passing")
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(wait_until(20 * SEC, || passing() == 100), "{}", cp.log());
    assert!(wait_until(10 * SEC, || blocking(&consul, "up") >= 1));
    let beats = || consul.count_requests("/v1/agent/check/update/");
    let (b0, q0) = (beats(), blocking(&consul, "up"));
    let mut pings = Vec::new();
    let started = Instant::now();
    while started.elapsed() < 10 * SEC {
        assert_eq!(passing(), 100, "a TTL expired while the watch long-polled");
        let t = Instant::now();
        let (code, out, err) = run(&["-ping", "-config", &cfg.display().to_string()], &[]);
        pings.push(t.elapsed());
        assert_eq!(code, 0, "{out}{err}");
        std::thread::sleep(SEC / 2);
    }
    let (b1, q1) = (beats(), blocking(&consul, "up"));
    println!(
        "{} heartbeats in 10 s, slowest -ping {:?}",
        b1 - b0,
        pings.iter().max()
    );
    assert_eq!(q1, q0, "the same blocking query stayed open all along");
    assert!(b1 - b0 >= 400, "{} heartbeats in 10 s", b1 - b0);
    assert!(
        pings.iter().all(|p| *p < SEC / 2),
        "-ping round trips: {pings:?}"
    );
    cp.stop();
}

#[test]
fn a_paused_then_dead_agent_costs_no_cpu_and_is_caught_up_with() {
    let consul = ConsulDouble::start();
    consul.register(instance("up-1", "up", 5000));
    let d = TempDir::new("watch-consul-outage");
    let mut cp = start(
        &d,
        &consul_at(&consul),
        r#"watches: [ { name: "up", interval: 1 } ], jobs: [ { name: "app", exec: ["sleep", "600"] } ]"#,
    );
    assert!(wait_until(10 * SEC, || events(&cp, "watch.up").len() == 2));
    assert!(wait_until(10 * SEC, || blocking(&consul, "up") >= 1));
    // Paused: requests hang, the open long poll included; the catalog moves on.
    consul.set_delay(Duration::MAX);
    consul.register(instance("up-2", "up", 5001));
    let t0 = cpu_ticks(cp.pid()).unwrap_or(0);
    std::thread::sleep(5 * SEC);
    let paused = cpu_ticks(cp.pid()).unwrap_or(0) - t0;
    // Down: held and new connections are closed unanswered.
    consul.set_down(true);
    consul.set_delay(Duration::ZERO);
    let t1 = cpu_ticks(cp.pid()).unwrap_or(0);
    std::thread::sleep(6 * SEC);
    let down = cpu_ticks(cp.pid()).unwrap_or(0) - t1;
    println!("daemon CPU ticks (1/100 s): {paused} in 5 s paused, {down} in 6 s down");
    assert!(paused < 5, "{paused} ticks in 5 s paused (≥ 1 % CPU)");
    assert!(down < 6, "{down} ticks in 6 s down (≥ 1 % CPU)");
    assert!(detail(&d, "up")["Failing"] == true, "{}", cp.log());
    // Back: the watch resumes and reports what changed meanwhile.
    consul.set_down(false);
    assert!(
        wait_until(30 * SEC, || detail(&d, "up")["Instances"] == 2),
        "{}",
        cp.log()
    );
    assert_eq!(
        events(&cp, "watch.up"),
        ["Changed", "Healthy", "Changed", "Healthy"]
    );
    assert_eq!(detail(&d, "up")["Failing"], false);
    let log = cp.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("level=warning") && l.contains("failed to query up"))
        .count();
    assert_eq!(warned, 1, "logged once per state change:\n{log}");
    assert_eq!(
        log.matches("watch up: the catalog answers again").count(),
        1
    );
    cp.stop();
}

#[test]
fn an_index_that_goes_back_resets_the_watch_and_changes_are_still_seen() {
    let consul = ConsulDouble::start();
    consul.register(instance("up-1", "up", 5000));
    let d = TempDir::new("watch-consul-rewind");
    let o = d.path("changes");
    let mut cp = start(
        &d,
        &consul_at(&consul),
        &format!(
            r#"watches: [ {{ name: "up", interval: 1 }} ], jobs: [ {} ]"#,
            on_change("up", &o)
        ),
    );
    assert!(wait_until(10 * SEC, || lines(&d, "changes") == 1));
    assert!(wait_until(10 * SEC, || blocking(&consul, "up") >= 1));
    let high = consul.service_index("up");
    // A snapshot restore: every index goes back; held queries return.
    consul.rewind_index(1);
    assert!(wait_until(10 * SEC, || detail(&d, "up")["Index"]
        .as_u64()
        .is_some_and(|i| i < high)));
    consul.register(instance("up-2", "up", 5001));
    assert!(
        wait_until(10 * SEC, || lines(&d, "changes") == 2),
        "a watch blocking on the old index would miss this:\n{}",
        cp.log()
    );
    assert_eq!(detail(&d, "up")["Instances"], 2);
    cp.stop();
}

#[test]
fn reload_restarts_watches_and_abandons_open_long_polls() {
    let consul = ConsulDouble::start();
    consul.register(instance("up-1", "up", 5000));
    let d = TempDir::new("watch-consul-reload");
    let o = d.path("changes");
    let body = |interval: u32| {
        format!(
            r#"watches: [ {{ name: "up", interval: {interval} }} ], jobs: [ {} ]"#,
            on_change("up", &o)
        )
    };
    let mut cp = start(&d, &consul_at(&consul), &body(1));
    assert!(wait_until(10 * SEC, || blocking(&consul, "up") >= 1));
    let base = thread_count(cp.pid()).unwrap_or(0);
    for (i, interval) in [2, 1, 2].into_iter().enumerate() {
        let held = blocking(&consul, "up");
        d.write(
            "cp.json5",
            &format!(
                "{{ consul: {:?}, logging: {{ level: \"DEBUG\", format: \"text\" }}, control: {{ socket: {:?} }}, {} }}",
                consul.addr(),
                d.socket().display().to_string(),
                body(interval)
            ),
        );
        let t = Instant::now();
        let (code, text) = control(&d.socket(), "POST", "/v3/reload", None);
        assert_eq!(code, 200, "{text}");
        assert!(t.elapsed() < SEC, "reload waited for a long poll");
        // Fresh state: the first answer reports the instance again.
        assert!(
            wait_until(10 * SEC, || lines(&d, "changes") == i + 2),
            "{}",
            cp.log()
        );
        assert!(wait_until(10 * SEC, || blocking(&consul, "up") > held));
    }
    // One new lane per reload; the abandoned ones end with their polls.
    let threads = thread_count(cp.pid()).unwrap_or(0);
    assert!(
        threads <= base + 3,
        "{base} threads before, {threads} after"
    );
    let (st, t) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(t < 3 * SEC, "shutdown took {t:?}");
}

// ---- real etcd ----

fn etcd_at(e: &Etcd) -> String {
    format!(
        "etcd: {{ endpoints: {}, prefix: \"/cp\" }}",
        e.endpoints_json()
    )
}

fn etcd_instance(e: &Etcd, id: &str, port: u16) {
    let value = json!({"ID": id, "Name": "up", "Address": "10.0.0.1", "Port": port,
                       "Tags": [], "Status": "passing"});
    e.etcdctl(&["put", &format!("/cp/services/up/{id}"), &value.to_string()]);
}

#[test]
fn etcd_service_changes_are_seen_within_a_second_with_interval_10() {
    if !available("etcd_service_changes_are_seen_within_a_second_with_interval_10") {
        return;
    }
    let etcd = Etcd::single();
    let d = TempDir::new("watch-etcd-svc");
    let o = d.path("changes");
    let mut cp = start(
        &d,
        &etcd_at(&etcd),
        &format!(
            r#"watches: [ {{ name: "up", interval: 10 }} ], jobs: [ {} ]"#,
            on_change("up", &o)
        ),
    );
    // The first read answers at once; the watch stream opens `interval` later.
    assert!(wait_until(10 * SEC, || detail(&d, "up")["Index"]
        .as_u64()
        .is_some_and(|i| i > 0)));
    let mut took = Vec::new();
    let changes: [&dyn Fn(); 3] = [
        &|| etcd_instance(&etcd, "up-1", 5000),
        &|| etcd_instance(&etcd, "up-1", 5001),
        &|| {
            etcd.etcdctl(&["del", "/cp/services/up/up-1"]);
        },
    ];
    for (i, change) in changes.into_iter().enumerate() {
        // No sooner than `interval` after the query that saw the last change
        // started: its successor is then open.
        std::thread::sleep(Duration::from_millis(10_500));
        let t = Instant::now();
        change();
        assert!(
            wait_until(10 * SEC, || lines(&d, "changes") == i + 1),
            "{}",
            cp.log()
        );
        took.push(t.elapsed());
    }
    println!("appear, port change, disappear seen after {took:?}");
    assert!(took.iter().all(|t| *t < SEC), "{took:?}");
    assert_eq!(
        events(&cp, "watch.up"),
        [
            "Changed",
            "Healthy",
            "Changed",
            "Healthy",
            "Changed",
            "Unhealthy"
        ]
    );
    let (st, t) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(t < 3 * SEC, "shutdown took {t:?}");
}

#[test]
fn etcd_key_set_changed_and_deleted_are_three_changes() {
    if !available("etcd_key_set_changed_and_deleted_are_three_changes") {
        return;
    }
    let etcd = Etcd::single();
    let d = TempDir::new("watch-etcd-key");
    let o = d.path("changes");
    let mut cp = start(
        &d,
        &etcd_at(&etcd),
        &format!(
            r#"watches: [ {{ name: "cfg", key: "/app/config", interval: 1 }} ], jobs: [ {} ]"#,
            on_change("cfg", &o)
        ),
    );
    assert!(wait_until(10 * SEC, || detail(&d, "cfg")["Index"]
        .as_u64()
        .is_some_and(|i| i > 0)));
    std::thread::sleep(SEC + SEC / 2);
    etcd.etcdctl(&["put", "/app/config", "a=1"]);
    assert!(
        wait_until(5 * SEC, || lines(&d, "changes") == 1),
        "{}",
        cp.log()
    );
    let w = detail(&d, "cfg");
    assert_eq!(
        (w["Kind"].as_str(), w["ValueSize"].as_u64()),
        (Some("key"), Some(3))
    );
    std::thread::sleep(SEC + SEC / 2);
    etcd.etcdctl(&["put", "/app/config", "a=22"]);
    assert!(
        wait_until(5 * SEC, || lines(&d, "changes") == 2),
        "{}",
        cp.log()
    );
    std::thread::sleep(SEC + SEC / 2);
    // Under the prefix is another key: the watch is on the key as written.
    etcd.etcdctl(&["put", "/cp/app/config", "other"]);
    std::thread::sleep(SEC + SEC / 2);
    assert_eq!(lines(&d, "changes"), 2);
    etcd.etcdctl(&["del", "/app/config"]);
    assert!(
        wait_until(5 * SEC, || lines(&d, "changes") == 3),
        "{}",
        cp.log()
    );
    assert_eq!(events(&cp, "watch.cfg"), ["Changed", "Changed", "Changed"]);
    assert_eq!(detail(&d, "cfg")["ValueSize"], Value::Null);
    cp.stop();
}
