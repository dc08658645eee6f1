//! The daemon against the Consul agent test double: registration payloads, TTL
//! heartbeats, maintenance, agent restarts and outages, watches, tokens, and the
//! shutdown order.

mod common;
use common::consul_double::ConsulDouble;
use common::*;
use serde_json::Value;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn host() -> String {
    containerpilot::catalog::hostname()
}

fn start(d: &TempDir, consul: &str, body: &str) -> Daemon {
    start_at(d, consul, body, "DEBUG")
}

fn start_at(d: &TempDir, consul: &str, body: &str, level: &str) -> Daemon {
    let cfg = d.write(
        "cp.json5",
        &format!(
            "{{ consul: {consul}, logging: {{ level: {level:?} }}, control: {{ socket: {:?} }}, {body} }}",
            d.socket().display().to_string()
        ),
    );
    let cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    cp
}

fn service<'a>(services: &'a Value, id: &str) -> Option<&'a Value> {
    services.get(id)
}

#[test]
fn healthy_job_is_registered_with_the_exact_payload_then_deregistered() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-reg");
    let flag = d.path("healthy");
    std::fs::write(&flag, "").unwrap();
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        &format!(
            r#"jobs: [ {{ name: "web", exec: ["sleep", "60"], port: 8080, interfaces: ["lo"], tags: ["a", "b"],
                         health: {{ exec: ["test", "-e", {f:?}], interval: 1, ttl: 3 }} }} ]"#,
            f = flag.display().to_string()
        ),
    );
    let id = format!("web-{}", host());
    assert!(
        wait_until(5 * SEC, || service(&consul.services(), &id).is_some()),
        "{}",
        cp.log()
    );
    let svc = consul.services()[&id].clone();
    assert_eq!(svc["ID"], id.as_str());
    assert_eq!(svc["Service"], "web");
    assert_eq!(svc["Address"], "127.0.0.1");
    assert_eq!(svc["Port"], 8080);
    assert_eq!(svc["Tags"], serde_json::json!(["a", "b"]));
    let check = format!("service:{id}");
    assert!(wait_until(3 * SEC, || consul
        .check_status(&check)
        .as_deref()
        == Some("passing")));
    // failing checks send nothing: the TTL runs out and Consul marks it critical
    std::fs::remove_file(&flag).unwrap();
    assert!(wait_until(8 * SEC, || consul
        .check_status(&check)
        .as_deref()
        == Some("critical")));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(
        service(&consul.services(), &id).is_none(),
        "deregistered on stop"
    );
}

#[test]
fn initial_status_registers_at_once() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-initial");
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        r#"jobs: [ { name: "slow", exec: ["sleep", "60"], port: 81, interfaces: ["lo"], initial_status: "warning",
                     health: { exec: "false", interval: 30, ttl: 60 } } ]"#,
    );
    let check = format!("service:slow-{}", host());
    assert!(
        wait_until(3 * SEC, || consul.check_status(&check).as_deref()
            == Some("warning")),
        "{}",
        cp.log()
    );
    cp.stop();
}

#[test]
fn maintenance_removes_every_service_and_brings_them_back() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-maint");
    let port = free_port();
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        &format!(
            r#"telemetry: {{ port: {port}, interfaces: ["lo"] }},
               jobs: [ {{ name: "web", exec: ["sleep", "60"], port: 80, interfaces: ["lo"], health: {{ exec: "true", interval: 1, ttl: 5 }} }} ]"#
        ),
    );
    let web = format!("web-{}", host());
    let cpid = format!("containerpilot-{}", host());
    // the telemetry service heartbeats every 5 s
    assert!(
        wait_until(8 * SEC, || {
            let s = consul.services();
            service(&s, &web).is_some() && service(&s, &cpid).is_some()
        }),
        "{}",
        cp.log()
    );
    assert_eq!(
        control(&d.socket(), "POST", "/v3/maintenance/enable", None).0,
        200
    );
    assert!(wait_until(3 * SEC, || {
        let s = consul.services();
        service(&s, &web).is_none() && service(&s, &cpid).is_none()
    }));
    // no heartbeats in maintenance: they stay gone
    std::thread::sleep(2 * SEC);
    assert!(service(&consul.services(), &web).is_none());
    assert_eq!(
        control(&d.socket(), "POST", "/v3/maintenance/disable", None).0,
        200
    );
    assert!(
        wait_until(2 * SEC, || {
            let s = consul.services();
            service(&s, &web).is_some() && service(&s, &cpid).is_some()
        }),
        "back at once on leaving maintenance"
    );
    cp.stop();
}

#[test]
fn agent_restarted_empty_gets_services_back_without_reload() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-restart");
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        r#"jobs: [ { name: "web", exec: ["sleep", "60"], port: 80, interfaces: ["lo"], health: { exec: "true", interval: 1, ttl: 5 } } ]"#,
    );
    let web = format!("web-{}", host());
    assert!(wait_until(5 * SEC, || service(&consul.services(), &web).is_some()));
    consul.restart();
    assert!(service(&consul.services(), &web).is_none());
    assert!(
        wait_until(3 * SEC, || service(&consul.services(), &web).is_some()),
        "{}",
        cp.log()
    );
    assert!(wait_until(3 * SEC, || consul
        .check_status(&format!("service:{web}"))
        .as_deref()
        == Some("passing")));
    cp.stop();
}

#[test]
fn agent_outage_does_not_disturb_jobs_or_the_control_socket() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-down");
    let o = d.path("ticks");
    // at INFO, as in production: what an outage costs in log lines
    let mut cp = start_at(
        &d,
        &format!("{:?}", consul.addr()),
        &format!(
            r#"jobs: [ {{ name: "web", exec: ["sleep", "60"], port: 80, interfaces: ["lo"], health: {{ exec: "true", interval: 1, ttl: 5 }} }},
                      {{ name: "tick", exec: ["sh", "-c", "echo t >> {o}"], when: {{ interval: "200ms" }} }} ]"#,
            o = o.display()
        ),
        "INFO",
    );
    let web = format!("web-{}", host());
    assert!(wait_until(5 * SEC, || service(&consul.services(), &web).is_some()));
    consul.set_down(true);
    consul.restart();
    let before = d.read("ticks").lines().count();
    let t0 = std::time::Instant::now();
    let log_before = cp.log().lines().count();
    while t0.elapsed() < 10 * SEC {
        let t = std::time::Instant::now();
        assert_eq!(control(&d.socket(), "GET", "/v3/ping", None).0, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "ping took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        d.read("ticks").lines().count() >= before + 30,
        "interval job kept running"
    );
    let failures = cp
        .log()
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("failed"))
        .count();
    assert!(
        failures <= 4,
        "failures are logged once per state change, got {failures}:\n{}",
        cp.log()
    );
    consul.set_down(false);
    assert!(
        wait_until(5 * SEC, || service(&consul.services(), &web).is_some()),
        "{}",
        cp.log()
    );
    cp.stop();
}

#[test]
fn watches_report_changes_in_order_and_trigger_jobs() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-watch");
    let o = d.path("changes");
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        &format!(
            r#"watches: [ {{ name: "up", interval: 1 }} ],
               jobs: [ {{ name: "app", exec: ["sleep", "60"] }},
                       {{ name: "on-change", exec: ["sh", "-c", "echo c >> {o}"], when: {{ source: "watch.up", each: "changed" }} }} ]"#,
            o = o.display()
        ),
    );
    let reg = |port: u16| {
        consul.register(serde_json::json!({
            "ID": "up-1", "Name": "up", "Address": "10.0.0.1", "Port": port,
            "Check": { "TTL": "60s", "Status": "passing" }
        }))
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reg(5000), 200);
    assert!(
        wait_until(4 * SEC, || d.read("changes").lines().count() == 1),
        "{}",
        cp.log()
    );
    assert_eq!(reg(5001), 200);
    assert!(
        wait_until(4 * SEC, || d.read("changes").lines().count() == 2),
        "{}",
        cp.log()
    );
    assert_eq!(consul.deregister("up-1"), 200);
    assert!(
        wait_until(4 * SEC, || d.read("changes").lines().count() == 3),
        "{}",
        cp.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.read("changes").lines().count(), 3, "no change, no event");
    let events: Vec<String> = cp
        .log()
        .lines()
        .filter(|l| l.contains("event: {Status") && l.contains("watch.up"))
        .map(|l| l.split("event: ").nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "{StatusChanged watch.up}",
            "{StatusHealthy watch.up}",
            "{StatusChanged watch.up}",
            "{StatusHealthy watch.up}",
            "{StatusChanged watch.up}",
            "{StatusUnhealthy watch.up}"
        ]
    );
    cp.stop();
}

#[test]
fn token_reaches_the_agent() {
    let consul = ConsulDouble::start_with_token("s3cret");
    let d = TempDir::new("consul-token");
    let mut cp = start(
        &d,
        &format!("{{ address: {:?}, token: \"s3cret\" }}", consul.addr()),
        r#"jobs: [ { name: "web", exec: ["sleep", "60"], port: 80, interfaces: ["lo"], health: { exec: "true", interval: 1, ttl: 5 } } ]"#,
    );
    let web = format!("web-{}", host());
    assert!(
        wait_until(5 * SEC, || service(&consul.services(), &web).is_some()),
        "{}",
        cp.log()
    );
    assert!(consul
        .requests()
        .iter()
        .all(|(_, _, t)| t.as_deref() == Some("s3cret")));
    cp.stop();
}

#[test]
fn shutdown_deregisters_before_any_job_gets_sigterm() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("consul-order");
    let o = d.path("term");
    let app = d.script(
        "app.sh",
        &format!(
            "trap 'date +%s%N > {}; exit 0' TERM\nwhile true; do sleep 0.02; done",
            o.display()
        ),
    );
    let mut cp = start(
        &d,
        &format!("{:?}", consul.addr()),
        &format!(
            r#"jobs: [ {{ name: "web", exec: {:?}, port: 80, interfaces: ["lo"], health: {{ exec: "true", interval: 1, ttl: 5 }} }} ]"#,
            app.display().to_string()
        ),
    );
    let web = format!("web-{}", host());
    assert!(wait_until(5 * SEC, || service(&consul.services(), &web).is_some()));
    // Every answer from the agent now takes 300 ms: if jobs were stopped before
    // the deregistration was answered, the app would see SIGTERM at once.
    consul.set_delay(Duration::from_millis(300));
    let sent_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(service(&consul.services(), &web).is_none());
    assert!(consul
        .requests()
        .iter()
        .any(|(m, p, _)| m == "PUT" && p == &format!("/v1/agent/service/deregister/{web}")));
    let term_ns: u128 = d.read("term").trim().parse().expect("app got SIGTERM");
    assert!(
        term_ns >= sent_ns + 250_000_000,
        "app got SIGTERM {} ms after the signal, before deregistration was answered",
        (term_ns.saturating_sub(sent_ns)) / 1_000_000
    );
}
