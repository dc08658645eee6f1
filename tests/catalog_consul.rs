//! The catalog against the Consul agent double: registration, TTL heartbeats,
//! re-registration after an agent restart or outage, watch queries (plain and
//! blocking, services and keys), ACL tokens, timeouts and shutdown; and the
//! double's own Consul behaviour that the daemon tests rely on.

mod common;

use common::consul_double::{parse_go_duration, ConsulDouble};
use containerpilot::catalog::{
    Catalog, Instance, KeyValue, Observation, Reply, Request, Service, Snapshot, Target,
};
use containerpilot::config::types::{CheckStatus, ConsulConfig, TlsConfig};
use mio::{Events, Poll, Token, Waker};
use serde_json::json;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const WAKE: Token = Token(7);

/// Captures log lines so tests can check the 3.8 messages.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn logs() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Debug);
        c
    })
}

fn log_lines(containing: &str) -> Vec<String> {
    logs()
        .0
        .lock()
        .map(|v| {
            v.iter()
                .filter(|l| l.contains(containing))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

struct Harness {
    catalog: Option<Catalog>,
    poll: Poll,
}

impl Harness {
    fn new(addr: &str, token: Option<&str>, timeout: Duration) -> Harness {
        logs();
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).expect("waker"));
        let catalog = Catalog::start(&cfg(addr, token), waker, timeout).expect("catalog");
        Harness {
            catalog: Some(catalog),
            poll,
        }
    }

    fn catalog(&self) -> &Catalog {
        self.catalog.as_ref().expect("catalog running")
    }

    fn send(&self, r: Request) {
        self.catalog().send(r);
    }

    /// Waits on the mio poll the way the loop does: replies only after a wake.
    fn next(&mut self, within: Duration) -> Reply {
        let deadline = Instant::now() + within;
        let mut events = Events::with_capacity(4);
        loop {
            if let Some(r) = self.catalog().try_recv() {
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no catalog reply within {within:?}");
            self.poll.poll(&mut events, Some(left)).expect("poll");
        }
    }

    fn replies(&mut self, n: usize) -> Vec<Reply> {
        (0..n).map(|_| self.next(Duration::from_secs(5))).collect()
    }

    /// A heartbeat that succeeds gets no reply (the loop has nothing to do with
    /// it, and a hundred jobs beating every second must not wake it a hundred
    /// times): wait until the agent has seen `requests` calls, the last one the
    /// TTL update of `id`, and make sure nothing woke us.
    fn beat_taken(&mut self, d: &ConsulDouble, id: &str, requests: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.requests().len() < requests {
            assert!(Instant::now() < deadline, "{:?}", paths(d));
            std::thread::sleep(Duration::from_millis(5));
        }
        let p = paths(d);
        assert_eq!(p.len(), requests, "{p:?}");
        assert_eq!(
            p[requests - 1],
            format!("PUT /v1/agent/check/update/service:{id}")
        );
        let mut events = Events::with_capacity(4);
        self.poll
            .poll(&mut events, Some(Duration::from_millis(200)))
            .expect("poll");
        assert!(events.is_empty(), "a successful heartbeat woke the loop");
        assert_eq!(self.catalog().try_recv(), None);
    }

    /// One watch query on lane `watch`, and its answer.
    fn observe(
        &mut self,
        watch: usize,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Observation, String> {
        self.catalog
            .as_mut()
            .expect("catalog running")
            .observe(watch, target, index, wait)
            .expect("lane");
        match self.next(Duration::from_secs(20)) {
            Reply::Observed {
                watch: w, result, ..
            } if w == watch => result,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn svc_target(name: &str, tag: Option<&str>, dc: Option<&str>) -> Target {
    Target::Service {
        name: name.to_string(),
        tag: tag.map(str::to_string),
        dc: dc.map(str::to_string),
    }
}

fn instances(r: Result<Observation, String>) -> (u64, Vec<Instance>) {
    match r {
        Ok(Observation {
            index,
            snapshot: Some(Snapshot::Instances(list)),
        }) => (index, list),
        other => panic!("unexpected {other:?}"),
    }
}

fn cfg(addr: &str, token: Option<&str>) -> ConsulConfig {
    ConsulConfig {
        address: addr.to_string(),
        scheme: "http".to_string(),
        token: token.map(str::to_string),
        tls: TlsConfig::default(),
    }
}

fn service(name: &str, port: u16) -> Service {
    Service {
        id: format!("{name}-testhost"),
        name: name.to_string(),
        address: "10.0.0.2".to_string(),
        port,
        tags: vec!["web".to_string()],
        enable_tag_override: false,
        ttl_secs: 10,
        deregister_critical_service_after: None,
    }
}

/// Waits up to 5 s for what the agent double shows.
fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn registered(id: &str) -> Reply {
    Reply::Registered { id: id.to_string() }
}

fn paths(d: &ConsulDouble) -> Vec<String> {
    d.requests()
        .into_iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect()
}

#[test]
fn heartbeat_registers_then_marks_passing() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    h.send(Request::Heartbeat {
        service: service("app", 8080),
    });
    assert_eq!(h.replies(1), vec![registered("app-testhost")]);
    h.beat_taken(&d, "app-testhost", 2);
    assert_eq!(d.check_status("app-testhost").as_deref(), Some("passing"));
    assert_eq!(d.check_output("app-testhost").as_deref(), Some("ok"));
    let s = &d.services()["app-testhost"];
    assert_eq!(s["Service"], "app");
    assert_eq!(s["Address"], "10.0.0.2");
    assert_eq!(s["Port"], 8080);
    assert_eq!(s["Tags"], json!(["web"]));
    let checks = d.checks();
    assert_eq!(
        checks["service:app-testhost"]["Notes"],
        "TTL for app set by containerpilot"
    );
    assert_eq!(
        paths(&d),
        vec![
            "PUT /v1/agent/service/register",
            "PUT /v1/agent/check/update/service:app-testhost"
        ]
    );
    // Second heartbeat: only the TTL update.
    h.send(Request::Heartbeat {
        service: service("app", 8080),
    });
    h.beat_taken(&d, "app-testhost", 3);
    assert!(!log_lines("Service registered: app").is_empty());
}

#[test]
fn initial_status_warning_registers_at_once() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    h.send(Request::Register {
        service: service("warn", 81),
        status: CheckStatus::Warning,
    });
    assert_eq!(h.replies(1), vec![registered("warn-testhost")]);
    assert_eq!(d.check_status("warn-testhost").as_deref(), Some("warning"));
    assert!(!log_lines("Registering service warn with initial status set to warning").is_empty());
    // The first heartbeat needs no second registration.
    h.send(Request::Heartbeat {
        service: service("warn", 81),
    });
    h.beat_taken(&d, "warn-testhost", 2);
    assert_eq!(d.check_status("warn-testhost").as_deref(), Some("passing"));
}

#[test]
fn heartbeat_after_agent_restart_registers_again() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    let s = service("again", 82);
    h.send(Request::Heartbeat { service: s.clone() });
    assert_eq!(h.replies(1), vec![registered("again-testhost")]);
    h.beat_taken(&d, "again-testhost", 2);
    d.restart();
    assert_eq!(d.services(), json!({}));
    h.send(Request::Heartbeat { service: s.clone() });
    assert_eq!(h.replies(1), vec![registered("again-testhost")]);
    h.beat_taken(&d, "again-testhost", 5);
    assert_eq!(d.check_status("again-testhost").as_deref(), Some("passing"));
    let p = paths(&d);
    assert_eq!(
        p[2..],
        [
            "PUT /v1/agent/check/update/service:again-testhost",
            "PUT /v1/agent/service/register",
            "PUT /v1/agent/check/update/service:again-testhost"
        ]
    );
}

#[test]
fn heartbeat_after_outage_registers_again_and_logs_once() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    let s = service("outage", 83);
    h.send(Request::Heartbeat { service: s.clone() });
    assert_eq!(h.replies(1), vec![registered("outage-testhost")]);
    h.beat_taken(&d, "outage-testhost", 2);
    d.set_down(true);
    for _ in 0..4 {
        h.send(Request::Heartbeat { service: s.clone() });
    }
    let mut failed = 0;
    for _ in 0..4 {
        // A failed heartbeat may be preceded by its failed registration.
        loop {
            match h.next(Duration::from_secs(5)) {
                Reply::HeartbeatFailed { id, .. } => {
                    assert_eq!(id, "outage-testhost");
                    failed += 1;
                    break;
                }
                Reply::RegisterFailed { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(failed, 4);
    // The agent comes back empty: the service is registered again at once.
    d.restart();
    d.set_down(false);
    h.send(Request::Heartbeat { service: s.clone() });
    assert_eq!(h.replies(1), vec![registered("outage-testhost")]);
    let n = d.requests().len();
    wait_for(|| d.requests().len() > n);
    assert_eq!(
        d.check_status("outage-testhost").as_deref(),
        Some("passing")
    );
    let port = d.addr();
    let warns: Vec<String> = log_lines(&port)
        .into_iter()
        .filter(|l| l.starts_with("WARN"))
        .collect();
    // One line for the failed TTL update, one for the failed re-registration.
    assert_eq!(warns.len(), 2, "{warns:#?}");
    assert!(
        warns[0].starts_with("WARN service update TTL failed: "),
        "{warns:?}"
    );
    assert!(
        warns[1].starts_with("WARN service registration failed: "),
        "{warns:?}"
    );
}

#[test]
fn deregister_removes_the_service() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    h.send(Request::Heartbeat {
        service: service("gone", 84),
    });
    assert_eq!(h.replies(1), vec![registered("gone-testhost")]);
    h.beat_taken(&d, "gone-testhost", 2);
    h.send(Request::Deregister {
        id: "gone-testhost".to_string(),
    });
    assert_eq!(
        h.replies(1),
        vec![Reply::Deregistered {
            id: "gone-testhost".to_string()
        }]
    );
    assert_eq!(d.services(), json!({}));
    assert_eq!(d.check_status("gone-testhost"), None);
    assert_eq!(
        paths(&d).last().map(String::as_str),
        Some("PUT /v1/agent/service/deregister/gone-testhost")
    );
    // Deregistering what the agent does not know is not an error.
    h.send(Request::Deregister {
        id: "gone-testhost".to_string(),
    });
    assert_eq!(
        h.replies(1),
        vec![Reply::Deregistered {
            id: "gone-testhost".to_string()
        }]
    );
}

fn upstream(id: &str, address: &str, port: u16, tags: &[&str], status: &str) -> serde_json::Value {
    json!({
        "ID": id, "Name": "db", "Address": address, "Port": port, "Tags": tags,
        "Check": {"TTL": "30s", "Status": status}
    })
}

#[test]
fn query_returns_passing_instances_with_tag_and_dc() {
    let d = ConsulDouble::start();
    assert_eq!(
        d.register(upstream("db-b", "10.0.0.6", 5433, &["replica"], "passing")),
        200
    );
    assert_eq!(
        d.register(upstream("db-a", "10.0.0.5", 5432, &["primary"], "passing")),
        200
    );
    assert_eq!(
        d.register(upstream("db-c", "10.0.0.7", 5434, &["primary"], "critical")),
        200
    );
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    let inst = |id: &str, a: &str, p: u16, tag: &str| Instance {
        id: id.to_string(),
        name: "db".to_string(),
        address: a.to_string(),
        port: p,
        tags: vec![tag.to_string()],
    };
    let (index, list) = instances(h.observe(3, &svc_target("db", None, None), 0, None));
    assert_eq!(index, d.service_index("db"));
    assert_eq!(
        list,
        vec![
            inst("db-a", "10.0.0.5", 5432, "primary"),
            inst("db-b", "10.0.0.6", 5433, "replica")
        ]
    );
    let (_, list) =
        instances(h.observe(3, &svc_target("db", Some("primary"), Some("dc1")), 0, None));
    assert_eq!(list, vec![inst("db-a", "10.0.0.5", 5432, "primary")]);
    assert_eq!(
        h.observe(3, &svc_target("db", None, Some("dc2")), 0, None),
        Err("Unexpected response code: 500 (No path to datacenter)".to_string())
    );
    assert_eq!(
        paths(&d),
        vec![
            "GET /v1/health/service/db?passing=1",
            "GET /v1/health/service/db?passing=1&tag=primary&dc=dc1",
            "GET /v1/health/service/db?passing=1&dc=dc2",
        ]
    );
    // Unknown service: an empty list, not an error.
    let (_, list) = instances(h.observe(4, &svc_target("nothing", None, None), 0, None));
    assert_eq!(list, vec![]);
}

#[test]
fn blocking_query_waits_for_a_change_of_that_service() {
    let d = ConsulDouble::start();
    d.register(upstream("db-a", "10.0.0.5", 5432, &[], "passing"));
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    let target = svc_target("db", None, None);
    let (index, _) = instances(h.observe(0, &target, 0, None));
    // Another service changing does not wake the query; db does.
    let addr = d.addr();
    let changer = std::thread::spawn(move || {
        let d = ConsulDoubleHandle(addr);
        std::thread::sleep(Duration::from_millis(300));
        d.register(json!({"ID": "other-1", "Name": "other", "Port": 1}));
        std::thread::sleep(Duration::from_millis(300));
        d.register(upstream("db-b", "10.0.0.6", 5433, &[], "passing"));
    });
    let started = Instant::now();
    let (after, list) = instances(h.observe(0, &target, index, Some(Duration::from_secs(10))));
    let took = started.elapsed();
    changer.join().expect("changer");
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(after > index);
    assert_eq!(list.len(), 2);
    let asked: Vec<String> = d
        .requests()
        .into_iter()
        .map(|r| r.1)
        .filter(|p| p.starts_with("/v1/health/"))
        .collect();
    assert_eq!(
        asked,
        [
            "/v1/health/service/db?passing=1".to_string(),
            format!("/v1/health/service/db?passing=1&index={index}&wait=10s")
        ]
    );
    // Nothing changes: Consul answers the same state after `wait`.
    let started = Instant::now();
    let (same, list) = instances(h.observe(0, &target, after, Some(Duration::from_secs(1))));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!((same, list.len()), (after, 2));
}

#[test]
fn key_reads_and_blocking_key_queries() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    let target = Target::Key {
        key: "service/app/config".to_string(),
        dc: None,
    };
    let missing = h.observe(1, &target, 0, None).expect("404 is an answer");
    assert_eq!(missing.snapshot, Some(Snapshot::Key(None)));
    assert!(missing.index > 0, "X-Consul-Index on a 404 too");
    let m = d.kv_put("service/app/config", b"port=80\n");
    let got = h.observe(1, &target, missing.index, Some(Duration::from_secs(5)));
    assert_eq!(
        got,
        Ok(Observation {
            index: m,
            snapshot: Some(Snapshot::Key(Some(KeyValue {
                value: b"port=80\n".to_vec(),
                modify_index: m
            })))
        })
    );
    let addr = d.addr();
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ConsulDoubleHandle(addr).delete_key("service/app/config");
    });
    let started = Instant::now();
    let gone = h
        .observe(1, &target, m, Some(Duration::from_secs(10)))
        .expect("answer");
    deleter.join().expect("deleter");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gone.snapshot, Some(Snapshot::Key(None)));
    assert!(gone.index > m);
    let p = paths(&d);
    assert_eq!(p[0], "GET /v1/kv/service/app/config");
    assert_eq!(
        p[1],
        format!(
            "GET /v1/kv/service/app/config?index={}&wait=5s",
            missing.index
        )
    );
}

/// Drives the double over HTTP from another thread, as a second client would.
struct ConsulDoubleHandle(String);

impl ConsulDoubleHandle {
    fn register(&self, body: serde_json::Value) {
        ureq::put(&format!("http://{}/v1/agent/service/register", self.0))
            .send_string(&body.to_string())
            .expect("register");
    }

    fn delete_key(&self, key: &str) {
        ureq::delete(&format!("http://{}/v1/kv/{key}", self.0))
            .call()
            .expect("delete");
    }
}

#[test]
fn token_is_sent_on_every_call() {
    let d = ConsulDouble::start_with_token("s3cret");
    let mut h = Harness::new(&d.addr(), Some("s3cret"), Duration::from_secs(5));
    h.send(Request::Heartbeat {
        service: service("tok", 85),
    });
    assert_eq!(h.replies(1), vec![registered("tok-testhost")]);
    h.beat_taken(&d, "tok-testhost", 2);
    instances(h.observe(0, &svc_target("tok", None, None), 0, None));
    h.send(Request::Deregister {
        id: "tok-testhost".to_string(),
    });
    h.replies(1);
    let reqs = d.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter().all(|(_, _, t)| t.as_deref() == Some("s3cret")),
        "{reqs:?}"
    );
}

#[test]
fn wrong_or_missing_token_is_refused() {
    let d = ConsulDouble::start_with_token("s3cret");
    let mut wrong = Harness::new(&d.addr(), Some("nope"), Duration::from_secs(5));
    wrong.send(Request::Register {
        service: service("acl", 86),
        status: CheckStatus::Passing,
    });
    assert_eq!(
        wrong.replies(1),
        vec![Reply::RegisterFailed {
            id: "acl-testhost".to_string(),
            error: "Unexpected response code: 403 (ACL not found)".to_string()
        }]
    );
    let mut none = Harness::new(&d.addr(), None, Duration::from_secs(5));
    none.send(Request::Deregister {
        id: "acl-testhost".to_string(),
    });
    assert_eq!(
        none.replies(1),
        vec![Reply::DeregisterFailed {
            id: "acl-testhost".to_string(),
            error: "Unexpected response code: 403 (Permission denied)".to_string()
        }]
    );
    assert!(!log_lines("deregistering failed: Unexpected response code: 403").is_empty());
    assert_eq!(d.requests()[1].2, None);
}

#[test]
fn a_hung_agent_costs_at_most_the_timeout() {
    let d = ConsulDouble::start();
    d.set_delay(Duration::MAX);
    let timeout = Duration::from_millis(400);
    let mut h = Harness::new(&d.addr(), None, timeout);
    let started = Instant::now();
    let r = h.observe(1, &svc_target("db", None, None), 0, None);
    assert!(r.as_ref().is_err_and(|e| !e.is_empty()), "{r:?}");
    let took = started.elapsed();
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + Duration::from_millis(600), "{took:?}");
    // Registration inside a heartbeat is bounded the same way.
    let started = Instant::now();
    h.send(Request::Heartbeat {
        service: service("slow", 87),
    });
    let r = h.replies(2);
    assert!(matches!(r[0], Reply::RegisterFailed { .. }), "{r:?}");
    assert!(matches!(r[1], Reply::HeartbeatFailed { .. }), "{r:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(600));
    // Once the agent answers again the service gets registered.
    d.set_delay(Duration::ZERO);
    h.send(Request::Heartbeat {
        service: service("slow", 87),
    });
    assert_eq!(h.replies(1), vec![registered("slow-testhost")]);
    wait_for(|| d.check_status("slow-testhost").as_deref() == Some("passing"));
}

#[test]
fn unreachable_agent_fails_fast() {
    // Bind and drop to get a port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut h = Harness::new(&addr, None, Duration::from_secs(5));
    h.send(Request::Deregister {
        id: "x-testhost".to_string(),
    });
    match h.next(Duration::from_secs(5)) {
        Reply::DeregisterFailed { id, error } => {
            assert_eq!(id, "x-testhost");
            assert!(error.contains("Connection refused"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn shutdown_deregisters_everything_registered() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(5));
    h.send(Request::Heartbeat {
        service: service("one", 91),
    });
    h.send(Request::Register {
        service: service("two", 92),
        status: CheckStatus::Critical,
    });
    // One's registration and two's (a heartbeat that goes through is silent).
    h.replies(2);
    wait_for(|| d.check_status("one-testhost").as_deref() == Some("passing"));
    assert_eq!(d.services().as_object().map(|m| m.len()), Some(2));
    // Queued work behind the shutdown is dropped, not run first.
    for _ in 0..20 {
        h.send(Request::Heartbeat {
            service: service("one", 91),
        });
    }
    let before = d.requests().len();
    let started = Instant::now();
    h.catalog
        .take()
        .expect("catalog")
        .shutdown(Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(d.services(), json!({}));
    let mut tail: Vec<String> = paths(&d)[before..]
        .iter()
        .filter(|p| p.contains("deregister"))
        .cloned()
        .collect();
    tail.sort();
    assert_eq!(
        tail,
        vec![
            "PUT /v1/agent/service/deregister/one-testhost",
            "PUT /v1/agent/service/deregister/two-testhost"
        ]
    );
}

#[test]
fn shutdown_gives_up_after_max_wait() {
    let d = ConsulDouble::start();
    let mut h = Harness::new(&d.addr(), None, Duration::from_secs(30));
    h.send(Request::Heartbeat {
        service: service("stuck", 93),
    });
    assert_eq!(h.replies(1), vec![registered("stuck-testhost")]);
    h.beat_taken(&d, "stuck-testhost", 2);
    d.set_delay(Duration::MAX);
    let started = Instant::now();
    h.catalog
        .take()
        .expect("catalog")
        .shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    d.set_delay(Duration::ZERO);
}

#[test]
fn https_is_built_in() {
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).expect("waker"));
    let mut c = cfg("127.0.0.1:8501", None);
    c.scheme = "https".to_string();
    assert!(Catalog::start(&c, waker, Duration::from_secs(1)).is_ok());
}

// ---- the double itself: the Consul behaviour other tests rely on ----

fn http(d: &ConsulDouble, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://{}{path}", d.addr());
    let req = ureq::request(method, &url);
    let r = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("transport: {e}"),
    }
}

#[test]
fn double_follows_consul_errors() {
    let d = ConsulDouble::start();
    let (code, body) = http(&d, "PUT", "/v1/agent/service/register", Some("{nope"));
    assert_eq!(code, 400);
    assert!(body.starts_with("Request decode failed: "), "{body}");
    let (code, body) = http(
        &d,
        "PUT",
        "/v1/agent/service/register",
        Some(r#"{"Port":1}"#),
    );
    assert_eq!((code, body.as_str()), (400, "Missing service name"));
    let (code, body) = http(
        &d,
        "PUT",
        "/v1/agent/check/update/service:x",
        Some(r#"{"Status":"passing","Output":"ok"}"#),
    );
    assert_eq!(
        (code, body.as_str()),
        (500, r#"CheckID "service:x" does not have associated TTL"#)
    );
    let (code, body) = http(&d, "PUT", "/v1/agent/service/deregister/x", None);
    assert_eq!((code, body.as_str()), (404, r#"Unknown service ID "x""#));
    let (code, _) = http(&d, "GET", "/v1/agent/service/register", None);
    assert_eq!(code, 405);
    // Lower-case field names are accepted, ID defaults to Name, status to critical.
    let (code, _) = http(
        &d,
        "PUT",
        "/v1/agent/service/register",
        Some(r#"{"name":"web","port":80,"check":{"ttl":"5s"}}"#),
    );
    assert_eq!(code, 200);
    assert_eq!(d.check_status("web").as_deref(), Some("critical"));
    assert_eq!(d.checks()["service:web"]["Name"], "Service 'web' check");
}

#[test]
fn double_expires_ttl_and_reaps_critical_services() {
    let d = ConsulDouble::start();
    d.register(json!({
        "ID": "t-1", "Name": "t", "Port": 1,
        "Check": {"TTL": "300ms", "Status": "passing", "DeregisterCriticalServiceAfter": "400ms"}
    }));
    assert_eq!(d.check_status("t-1").as_deref(), Some("passing"));
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(d.check_status("t-1").as_deref(), Some("critical"));
    assert_eq!(d.check_output("t-1").as_deref(), Some("TTL expired"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.check_status("t-1"), None);
    assert_eq!(d.services(), json!({}));
}

#[test]
fn double_health_entries_and_blocking_queries() {
    let d = ConsulDouble::start();
    d.register(upstream("db-a", "10.0.0.5", 5432, &["primary"], "passing"));
    let resp = ureq::get(&format!(
        "http://{}/v1/health/service/db?passing=1",
        d.addr()
    ))
    .call()
    .expect("health");
    let index: u64 = resp
        .header("X-Consul-Index")
        .and_then(|i| i.parse().ok())
        .expect("X-Consul-Index");
    let body: serde_json::Value = resp.into_json().expect("json");
    assert_eq!(body[0]["Service"]["ID"], "db-a");
    assert_eq!(body[0]["Service"]["Service"], "db");
    assert_eq!(body[0]["Service"]["Port"], 5432);
    assert_eq!(body[0]["Node"]["Node"], "consul-double");
    assert_eq!(body[0]["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(body[0]["Checks"][1]["CheckID"], "service:db-a");
    assert_eq!(body[0]["Checks"][1]["ServiceID"], "db-a");
    // Nothing changes: the blocking query returns after `wait`.
    let started = Instant::now();
    let (code, _) = http(
        &d,
        "GET",
        &format!("/v1/health/service/db?index={index}&wait=300ms"),
        None,
    );
    assert_eq!(code, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A change releases it early.
    let addr = d.addr();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let resp = ureq::get(&format!(
            "http://{addr}/v1/health/service/db?index={index}&wait=5s"
        ))
        .call()
        .expect("blocking health");
        let body: serde_json::Value = resp.into_json().expect("json");
        (started.elapsed(), body)
    });
    std::thread::sleep(Duration::from_millis(200));
    d.register(upstream("db-b", "10.0.0.6", 5433, &[], "passing"));
    let (took, body) = waiter.join().expect("waiter");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(body.as_array().map(Vec::len), Some(2));
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    assert_eq!(
        parse_go_duration("10"),
        Err(r#"time: invalid duration "10""#.to_string())
    );
    assert!(parse_go_duration("5x").is_err());
}
