//! The autopilot-pattern nginx with nothing but the daemon: `examples/nginx/`
//! (its config and template, unchanged) runs real nginx (Debian's) as a job,
//! as root, with every nginx path in the test's directory. Backends are small
//! HTTP servers started here and registered in the catalog (the Consul double,
//! or a real etcd); the tests follow what nginx serves as they come, fail their
//! check, come back and go away, and count what the daemon forks meanwhile.

mod common;
use common::consul_double::ConsulDouble;
use common::etcd::{available, Etcd};
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
/// How soon nginx must follow a change in the catalog.
const FOLLOW: Duration = Duration::from_secs(2);

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/nginx")
        .join(name)
}

fn nginx_installed(test: &str) -> bool {
    let ok = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        println!("SKIPPED {test}: `nginx` is not installed (Debian: nginx)");
    }
    ok
}

/// A tiny HTTP server that answers every request with its own name.
struct Backend {
    name: String,
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("backend addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, body) = (stop.clone(), name.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(5 * SEC));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Backend {
            name: name.to_string(),
            port,
            stop,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One GET through nginx: status and body, or why it failed.
fn get(port: u16) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(5 * SEC));
    containerpilot::http::request(&mut s, "GET", "/", None)
        .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        .map_err(|e| e.to_string())
}

/// The bodies of `n` requests (failed requests count as "ERR <why>").
fn sample(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match get(port) {
            Ok((200, body)) => body,
            Ok((code, body)) => format!("{code} {}", body.trim_end()),
            Err(e) => format!("ERR {e}"),
        })
        .collect()
}

fn distinct(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// How long until nginx serves exactly `want`, steadily: every batch of 8
/// requests for 300 ms reaches exactly those (nginx's old workers keep
/// accepting for about 100 ms after a reload, so one good batch is not yet the
/// end of the old config). Returns when the steady state began, or `None` if
/// it had not begun within `within`.
fn until_served(port: u16, want: &[&str], within: Duration) -> Option<Duration> {
    const STEADY: Duration = Duration::from_millis(300);
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let mut since: Option<Duration> = None;
    while t.elapsed() < within + STEADY {
        let at = t.elapsed();
        if distinct(&sample(port, 8)) == want {
            let start = *since.get_or_insert(at);
            if t.elapsed() - start >= STEADY {
                return Some(start).filter(|s| *s <= within);
            }
        } else {
            since = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Everything one run of the example needs.
struct Lb {
    dir: TempDir,
    cp: Daemon,
    port: u16,
}

impl Lb {
    /// Starts the example with `catalog` env (`CONSUL` or `ETCD_ENDPOINTS`).
    fn start(tag: &str, catalog: (&str, String)) -> Lb {
        let dir = TempDir::new(tag);
        let run = dir.path("run");
        std::fs::create_dir_all(&run).expect("run dir");
        let port = free_port();
        let mut cmd = Command::new(bin());
        cmd.arg("-config")
            .arg(example("containerpilot.json5"))
            .env(catalog.0, catalog.1)
            .env("LOG_LEVEL", "DEBUG")
            .env("CONTAINERPILOT_SOCKET", dir.socket())
            .env("NGINX_TEMPLATE", example("nginx.conf.tmpl"))
            .env("NGINX_CONF", dir.path("conf/nginx.conf"))
            .env("NGINX_RUN_DIR", &run)
            .env("NGINX_PORT", port.to_string())
            .env("NGINX_LOG_LEVEL", "notice");
        let cp = Daemon::start_with(&mut cmd);
        wait_ready(&dir.socket());
        Lb { dir, cp, port }
    }

    fn conf(&self) -> String {
        std::fs::read_to_string(self.dir.path("conf/nginx.conf")).unwrap_or_default()
    }

    /// Processes the daemon started: its `Run start` lines (debug log).
    fn spawned(&self) -> Vec<String> {
        self.cp
            .log()
            .lines()
            .filter(|l| l.contains(".Run start"))
            .map(String::from)
            .collect()
    }

    fn nginx_master(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.path("run/nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        children_of(self.cp.pid()).contains(&pid).then_some(pid)
    }
}

/// The tails (after " in ") of log lines containing `needle`.
fn log_lines<'l>(log: &'l str, needle: &str) -> Vec<&'l str> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.rsplit(" in ").next())
        .collect()
}

/// The daemon's direct children, sampled until `stop`: every set seen.
fn watch_children(pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeSet<Vec<i32>>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while !stop.load(Ordering::SeqCst) {
            let mut c = children_of(pid);
            c.sort();
            seen.insert(c);
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    })
}

fn consul_register(consul: &ConsulDouble, b: &Backend) {
    let code = consul.register(json!({
        "ID": b.name, "Name": "app", "Address": "127.0.0.1", "Port": b.port,
        "Check": { "TTL": "3600s", "Status": "passing" }
    }));
    assert_eq!(code, 200);
}

/// `PUT /v1/agent/check/update/service:<id>`, as the backend's own agent would.
fn consul_check(consul: &ConsulDouble, id: &str, status: &str) {
    let mut s = TcpStream::connect(consul.addr()).expect("connect consul double");
    let body = json!({ "Status": status, "Output": "test" }).to_string();
    let r = containerpilot::http::request(
        &mut s,
        "PUT",
        &format!("/v1/agent/check/update/service:{id}"),
        Some(("application/json", body.as_bytes())),
    )
    .expect("check update");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn nginx_follows_the_catalog_without_a_fork() {
    if !nginx_installed("nginx_follows_the_catalog_without_a_fork") {
        return;
    }
    let consul = ConsulDouble::start();
    let mut lb = Lb::start("nginx-consul", ("CONSUL", consul.addr()));

    // Nothing in the catalog yet: nginx starts on the start-up render and
    // answers with the template's error page.
    assert!(
        wait_until(10 * SEC, || get(lb.port).is_ok()),
        "nginx never served:\n{}",
        lb.cp.log()
    );
    assert_eq!(
        get(lb.port).unwrap(),
        (503, "no instance of app is available\n".to_string())
    );
    let master = lb
        .nginx_master()
        .expect("nginx master is the daemon's child");
    let conf = lb.conf();
    assert!(conf.contains("pid ") && conf.contains(&lb.dir.path("run").display().to_string()));
    assert!(!conf.contains("upstream app"), "{conf}");
    let spawned_at_start = lb.spawned();
    assert_eq!(spawned_at_start.len(), 1, "{spawned_at_start:?}");
    assert!(spawned_at_start[0].contains("nginx.Run start"));

    let stop = Arc::new(AtomicBool::new(false));
    let children = watch_children(lb.cp.pid(), stop.clone());
    let mut figures = Vec::new();

    // two backends come up: nginx serves both
    let (a, b) = (Backend::start("app-a"), Backend::start("app-b"));
    consul_register(&consul, &a);
    consul_register(&consul, &b);
    let took = until_served(lb.port, &["app-a", "app-b"], FOLLOW);
    assert!(
        took.is_some(),
        "both not served:\n{}\n{}",
        lb.conf(),
        lb.cp.log()
    );
    figures.push(("both up", took));
    assert!(lb
        .conf()
        .contains(&format!("server 127.0.0.1:{};  # app-b", b.port)));

    // app-b fails its check: nginx stops sending to it
    consul_check(&consul, "app-b", "critical");
    let took = until_served(lb.port, &["app-a"], FOLLOW);
    assert!(
        took.is_some(),
        "app-b still served:\n{}\n{}",
        lb.conf(),
        lb.cp.log()
    );
    figures.push(("app-b critical", took));
    let after = sample(lb.port, 20);
    assert_eq!(
        distinct(&after),
        distinct(&["app-a".into()]),
        "{after:?}\n{}\n{}",
        lb.conf(),
        lb.cp.log()
    );

    // it comes back: served again
    consul_check(&consul, "app-b", "passing");
    let took = until_served(lb.port, &["app-a", "app-b"], FOLLOW);
    assert!(took.is_some(), "app-b not back:\n{}", lb.cp.log());
    figures.push(("app-b passing", took));

    // all gone: the error page again
    assert_eq!(consul.deregister("app-a"), 200);
    assert_eq!(consul.deregister("app-b"), 200);
    let took = until_served(lb.port, &["503 no instance of app is available"], FOLLOW);
    assert!(
        took.is_some(),
        "no error page:\n{}\n{}",
        lb.conf(),
        lb.cp.log()
    );
    figures.push(("all gone", took));

    stop.store(true, Ordering::SeqCst);
    let seen = children.join().expect("child sampler");
    println!("nginx followed the catalog: {figures:?}");
    let log = lb.cp.log();
    let render_times = log_lines(&log, "nginx-conf: wrote ");
    println!("renders (render + write + fsync): {render_times:?}");

    // What the daemon forked for the four changes: nothing. Its only child
    // was the nginx master all along (nginx's workers are the master's
    // children), the master was never restarted, and no process was started.
    assert_eq!(seen, BTreeSet::from([vec![master]]), "daemon children seen");
    assert_eq!(lb.nginx_master(), Some(master));
    assert_eq!(lb.spawned(), spawned_at_start, "no process for any change");
    let log = lb.cp.log();
    let writes = log.matches("nginx-conf: wrote ").count();
    let reloads = log.matches("event: {ExitSuccess nginx-reload}").count();
    assert!(
        writes >= 4 && reloads == writes,
        "writes {writes}, reloads {reloads}\n{log}"
    );
    assert!(!log.contains("ExitFailed"), "{log}");

    // the status page shows the last render
    let (code, body) = control(&lb.dir.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let render = status["Jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["Name"] == "nginx-conf"))
        .map(|j| j["Render"].clone())
        .expect("nginx-conf in status");
    assert_eq!(render["Result"], "written");
    assert_eq!(
        render["Dest"],
        lb.dir.path("conf/nginx.conf").display().to_string()
    );
    let hash = render["Hash"].as_str().expect("hash").to_string();
    assert!(hash.starts_with("fnv1a64:") && hash.len() == 24, "{hash}");
    assert!(render["LastRender"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let (st, _) = lb.cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", lb.cp.log());
    assert!(
        wait_until(5 * SEC, || !std::path::Path::new(&format!(
            "/proc/{master}"
        ))
        .exists()),
        "nginx outlived the daemon"
    );
}

/// An unchanged render writes nothing and signals nobody: a watch change
/// that does not change the file leaves nginx alone.
#[test]
fn a_change_that_does_not_change_the_file_reloads_nothing() {
    if !nginx_installed("a_change_that_does_not_change_the_file_reloads_nothing") {
        return;
    }
    let consul = ConsulDouble::start();
    let mut lb = Lb::start("nginx-same", ("CONSUL", consul.addr()));
    let a = Backend::start("app-a");
    consul_register(&consul, &a);
    assert!(
        until_served(lb.port, &["app-a"], 10 * SEC).is_some(),
        "{}",
        lb.cp.log()
    );
    let reloads = || lb.cp.count("event: {ExitSuccess nginx-reload}");
    assert!(wait_until(5 * SEC, || reloads() >= 1));
    let before = (reloads(), lb.cp.count("nginx-conf: wrote "));
    // Tags are not in the template: the watch sees a change, the file does not.
    let code = consul.register(json!({
        "ID": "app-a", "Name": "app", "Address": "127.0.0.1", "Port": a.port, "Tags": ["new"],
        "Check": { "TTL": "3600s", "Status": "passing" }
    }));
    assert_eq!(code, 200);
    lb.cp.expect_log("unchanged", 5 * SEC);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (reloads(), lb.cp.count("nginx-conf: wrote ")),
        before,
        "{}",
        lb.cp.log()
    );
    let (st, _) = lb.cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn nginx_follows_etcd_too() {
    if !nginx_installed("nginx_follows_etcd_too") || !available("nginx_follows_etcd_too") {
        return;
    }
    let etcd = Etcd::single();
    let mut lb = Lb::start("nginx-etcd", ("ETCD_ENDPOINTS", etcd.url(0)));
    assert!(
        wait_until(10 * SEC, || get(lb.port).is_ok()),
        "{}",
        lb.cp.log()
    );
    assert_eq!(get(lb.port).unwrap().0, 503);
    let master = lb.nginx_master().expect("nginx master");

    let (a, b) = (Backend::start("app-a"), Backend::start("app-b"));
    let put = |b: &Backend, status: &str| {
        let value = json!({
            "ID": b.name, "Name": "app", "Address": "127.0.0.1", "Port": b.port,
            "Tags": [], "Status": status
        });
        etcd.etcdctl(&[
            "put",
            &format!("/containerpilot/services/app/{}", b.name),
            &value.to_string(),
        ]);
    };
    put(&a, "passing");
    put(&b, "passing");
    assert!(
        until_served(lb.port, &["app-a", "app-b"], FOLLOW).is_some(),
        "{}\n{}",
        lb.conf(),
        lb.cp.log()
    );
    put(&b, "critical");
    assert!(
        until_served(lb.port, &["app-a"], FOLLOW).is_some(),
        "{}",
        lb.cp.log()
    );
    put(&b, "passing");
    assert!(
        until_served(lb.port, &["app-a", "app-b"], FOLLOW).is_some(),
        "{}",
        lb.cp.log()
    );
    etcd.etcdctl(&["del", "--prefix", "/containerpilot/services/app/"]);
    assert!(
        until_served(lb.port, &["503 no instance of app is available"], FOLLOW).is_some(),
        "{}",
        lb.cp.log()
    );
    assert_eq!(lb.nginx_master(), Some(master), "nginx was never restarted");
    assert_eq!(
        lb.spawned().len(),
        1,
        "only nginx was started: {:?}",
        lb.spawned()
    );
    let (st, _) = lb.cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", lb.cp.log());
}

/// `-validate` reads the example's template: a service no watch provides is
/// an error naming the template file and line, before anything runs.
#[test]
fn validate_names_the_template_file_and_line() {
    let d = TempDir::new("nginx-validate");
    let good = std::fs::read_to_string(example("nginx.conf.tmpl")).expect("template");
    let bad = d.write(
        "bad.tmpl",
        &good.replace("service \"app\"", "service \"api\""),
    );
    let line = good
        .lines()
        .position(|l| l.contains("service \"app\""))
        .expect("template reads app")
        + 1;
    let config = example("containerpilot.json5");
    let run = |template: &std::path::Path| {
        let out = Command::new(bin())
            .arg("-config")
            .arg(&config)
            .arg("-validate")
            .env("CONSUL", "127.0.0.1:8500")
            .env("NGINX_TEMPLATE", template)
            .env("NGINX_CONF", d.path("conf/nginx.conf"))
            .env("CONTAINERPILOT_SOCKET", d.socket())
            .output()
            .expect("run -validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&example("nginx.conf.tmpl"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK: 4 jobs, 1 watches"), "{text}");
    let (code, text) = run(&bad);
    assert_eq!(code, Some(1), "{text}");
    let want = format!(
        "jobs[0].render.template: {}:{line}: service \"api\" is not watched (add a watch named 'api')",
        bad.display()
    );
    assert!(text.contains(&want), "{want}\nnot in\n{text}");
    assert_eq!(
        text.matches("is not watched").count(),
        2,
        "both render jobs: {text}"
    );
    assert!(
        !d.path("conf/nginx.conf").exists(),
        "-validate writes nothing"
    );
}
