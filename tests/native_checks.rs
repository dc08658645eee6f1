//! Native health checks (`health.http`, `health.tcp`) against the real binary:
//! a small HTTP(S) server in this process answers 200, 500, 204 or never; a
//! free port stands for a refused connection. What is asserted is what a user
//! sees: `/v3/status`, the one log line a failing check writes, dependent jobs
//! starting, heartbeats reaching the Consul double, sockets closed.

mod common;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// An HTTP/1.1 server on 127.0.0.1: `/ok` 200, `/fail` 500, `/nocontent` 204,
/// `/hang` reads the request and never answers; `/drop` answers as if the
/// connection stayed open, then closes it. With `keep` it serves further
/// requests on a connection (and says so), else it answers
/// `Connection: close`. It records request heads, counts connections, and
/// counts hung connections the client has closed.
struct Upstream {
    addr: String,
    heads: Arc<Mutex<Vec<String>>>,
    hung_closed: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

enum Wrap {
    Plain,
    Tls(Arc<rustls::ServerConfig>),
}

#[derive(Clone, Copy)]
enum Conn {
    Close,
    Keep,
    /// Keep-alive answers, but a second request on a connection is met by a
    /// hang-up (a server's idle timeout racing the next probe).
    KeepOnce,
}

impl Upstream {
    fn start(wrap: Wrap) -> Upstream {
        Self::start_with(wrap, Conn::Close)
    }

    fn start_with(wrap: Wrap, mode: Conn) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let hung_closed = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let wrap = Arc::new(wrap);
        {
            let (heads, hung_closed, conns, stop) = (
                heads.clone(),
                hung_closed.clone(),
                conns.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for s in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    conns.fetch_add(1, Ordering::SeqCst);
                    let (heads, hung_closed, wrap) =
                        (heads.clone(), hung_closed.clone(), wrap.clone());
                    std::thread::spawn(move || match &*wrap {
                        Wrap::Plain => answer(s, &heads, &hung_closed, mode),
                        Wrap::Tls(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                                return;
                            };
                            let _ = s.set_read_timeout(Some(10 * SEC));
                            let tls = rustls::StreamOwned::new(conn, s);
                            answer(tls, &heads, &hung_closed, mode)
                        }
                    });
                }
            });
        }
        Upstream {
            addr,
            heads,
            hung_closed,
            conns,
            stop,
        }
    }

    fn requests(&self, path: &str) -> usize {
        let line = format!("GET {path} HTTP/1.1\r\n");
        self.heads().iter().filter(|h| h.starts_with(&line)).count()
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn answer<S: Read + Write>(
    mut s: S,
    heads: &Mutex<Vec<String>>,
    hung_closed: &AtomicUsize,
    mode: Conn,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut served = 0;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if matches!(mode, Conn::KeepOnce) && served == 1 {
            return;
        }
        served += 1;
        if let Ok(mut h) = heads.lock() {
            h.push(head);
        }
        let status = match path.as_str() {
            "/ok" | "/drop" => "200 OK",
            "/nocontent" => "204 No Content",
            "/hang" => {
                // Hold the connection until the client gives up on it.
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
                hung_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => "500 Internal Server Error",
        };
        let (body, conn) = match (mode, status) {
            (_, "204 No Content") => ("", ""),
            (Conn::Keep | Conn::KeepOnce, _) => ("bye", ""),
            (Conn::Close, _) => ("bye", "Connection: close\r\n"),
        };
        let len = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let _ = s.write_all(format!("HTTP/1.1 {status}\r\n{len}{conn}\r\n{body}").as_bytes());
        let _ = s.flush();
        if matches!(mode, Conn::Close) || path == "/drop" {
            return;
        }
    }
}

/// Write `jobs` into a config with a control socket in `dir`; start it.
fn daemon(dir: &TempDir, extra: &str, jobs: &str) -> Daemon {
    let sock = dir.socket();
    let cfg = dir.write(
        "cp.json5",
        &format!(
            "{{ {extra} control: {{ socket: {:?} }}, jobs: [ {jobs} ] }}",
            sock.display().to_string()
        ),
    );
    let d = Daemon::start(&cfg);
    wait_ready(&sock);
    d
}

fn status(dir: &TempDir) -> Value {
    let (code, body) = control(&dir.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// The `Status` of job `name` (plain jobs and services alike).
fn job_status(dir: &TempDir, name: &str) -> String {
    let s = status(dir);
    for key in ["Jobs", "Services"] {
        if let Some(list) = s[key].as_array() {
            if let Some(j) = list.iter().find(|j| j["Name"] == name) {
                return j["Status"].as_str().unwrap_or("").to_string();
            }
        }
    }
    panic!("no job {name} in {s}");
}

fn wait_status(d: &Daemon, dir: &TempDir, name: &str, want: &str) {
    let ok = wait_until(10 * SEC, || job_status(dir, name) == want);
    assert!(
        ok,
        "{name} never became {want} (is {}); log:\n{}",
        job_status(dir, name),
        d.log()
    );
}

#[test]
fn http_checks_pass_on_2xx_and_fail_on_500_refused_and_hang() {
    let up = Upstream::start(Wrap::Plain);
    let refused = format!("http://127.0.0.1:{}/ok", free_port());
    let dir = TempDir::new("native-http");
    let started = dir.path("started");
    let jobs = format!(
        r#"
        {{ name: "ok", health: {{ http: {ok:?}, headers: {{ "X-Probe": "yes" }}, interval: 1, ttl: 5 }} }},
        {{ name: "fail", health: {{ http: {fail:?}, interval: 1, ttl: 5 }} }},
        {{ name: "refused", health: {{ http: {refused:?}, interval: 1, ttl: 5 }} }},
        {{ name: "hang", health: {{ http: {hang:?}, interval: 1, ttl: 5, timeout: "300ms" }} }},
        {{ name: "after-ok", exec: ["sh", "-c", "touch {started}"],
           when: {{ source: "ok", once: "healthy" }} }},
        {{ name: "after-fail", exec: ["sh", "-c", "touch {started}.fail"],
           when: {{ source: "check.fail", once: "exitFailed" }} }},
        "#,
        ok = up.url("http", "/ok"),
        fail = up.url("http", "/fail"),
        hang = up.url("http", "/hang"),
        started = started.display(),
    );
    let mut d = daemon(&dir, "", &jobs);
    wait_status(&d, &dir, "ok", "healthy");
    wait_status(&d, &dir, "fail", "unhealthy");
    wait_status(&d, &dir, "refused", "unhealthy");
    wait_status(&d, &dir, "hang", "unhealthy");
    assert!(wait_until(5 * SEC, || started.exists()), "{}", d.log());
    assert!(
        wait_until(5 * SEC, || dir.path("started.fail").exists()),
        "check.fail publishes exitFailed like an exec check: {}",
        d.log()
    );
    let log = d.log();
    let fail_line = format!(
        "check.fail: GET {}: HTTP 500 Internal Server Error",
        up.url("http", "/fail")
    );
    assert!(log.contains(&fail_line), "{log}");
    assert!(
        log.contains(&format!("check.refused: GET {refused}: connect"))
            && log.contains("connection refused"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "check.hang: GET {}: timeout after 300ms (waiting for the response)",
            up.url("http", "/hang")
        )),
        "{log}"
    );
    // Passing checks are quiet; each failure is one line per check run.
    assert!(!log.contains("check.ok: GET"), "{log}");
    let lines = log.lines().filter(|l| l.contains(&fail_line)).count();
    let runs = up
        .heads()
        .iter()
        .filter(|h| h.starts_with("GET /fail "))
        .count();
    assert!(
        lines >= 1 && lines <= runs + 1,
        "{lines} lines for {runs} runs"
    );
    // The request: GET with Host and the configured header.
    let heads = up.heads();
    let ok_head = heads
        .iter()
        .find(|h| h.starts_with("GET /ok HTTP/1.1\r\n"))
        .expect("GET /ok");
    assert!(
        ok_head.contains(&format!("\r\nHost: {}\r\n", up.addr)),
        "{ok_head}"
    );
    assert!(ok_head.contains("\r\nX-Probe: yes\r\n"), "{ok_head}");
    // A hung connection is closed by the daemon when the timeout fires.
    assert!(
        wait_until(5 * SEC, || up.hung_closed.load(Ordering::SeqCst) >= 1),
        "the daemon never closed the hung connection"
    );
    // No socket piles up over repeated runs.
    let pid = d.pid();
    let before = fd_count(pid).unwrap_or(0);
    std::thread::sleep(3 * SEC);
    let after = fd_count(pid).unwrap_or(0);
    assert!(after <= before + 2, "fds grew from {before} to {after}");
    let (st, _) = d.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn expected_status_and_tcp_checks() {
    let up = Upstream::start(Wrap::Plain);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").to_string();
    let closed = format!("127.0.0.1:{}", free_port());
    let dir = TempDir::new("native-tcp");
    let jobs = format!(
        r#"
        {{ name: "nc", health: {{ http: {nc:?}, status: 204, interval: 1, ttl: 5 }} }},
        {{ name: "want204", health: {{ http: {ok:?}, status: 204, interval: 1, ttl: 5 }} }},
        {{ name: "tcp-open", health: {{ tcp: {open:?}, interval: 1, ttl: 5 }} }},
        {{ name: "tcp-closed", health: {{ tcp: {closed:?}, interval: 1, ttl: 5 }} }},
        "#,
        nc = up.url("http", "/nocontent"),
        ok = up.url("http", "/ok"),
    );
    let d = daemon(&dir, "", &jobs);
    wait_status(&d, &dir, "nc", "healthy");
    wait_status(&d, &dir, "want204", "unhealthy");
    wait_status(&d, &dir, "tcp-open", "healthy");
    wait_status(&d, &dir, "tcp-closed", "unhealthy");
    let log = d.log();
    assert!(log.contains("check.want204: GET "), "{log}");
    assert!(log.contains(": HTTP 200 OK, expected 204"), "{log}");
    assert!(
        log.contains(&format!("check.tcp-closed: tcp {closed}: connect")),
        "{log}"
    );
    drop(listener);
}

#[test]
fn native_checks_heartbeat_to_consul_like_exec_checks() {
    let up = Upstream::start(Wrap::Plain);
    let consul = consul_double::ConsulDouble::start();
    let dir = TempDir::new("native-consul");
    let jobs = format!(
        r#"
        {{ name: "web", port: 8080, interfaces: ["lo"],
           health: {{ http: {ok:?}, interval: 1, ttl: 3 }} }},
        {{ name: "broken", port: 8081, interfaces: ["lo"],
           health: {{ http: {fail:?}, interval: 1, ttl: 3 }} }},
        "#,
        ok = up.url("http", "/ok"),
        fail = up.url("http", "/fail"),
    );
    let _d = daemon(&dir, &format!("consul: {:?},", consul.addr()), &jobs);
    let updates = |id: &str| {
        consul
            .requests()
            .iter()
            .filter(|(m, p, _)| {
                m == "PUT" && p.starts_with(&format!("/v1/agent/check/update/service:{id}"))
            })
            .count()
    };
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (web, broken) = (format!("web-{host}"), format!("broken-{host}"));
    assert!(
        wait_until(10 * SEC, || updates(&web) >= 3),
        "{:?}",
        consul.requests()
    );
    assert_eq!(
        consul.check_status(&format!("service:{web}")).as_deref(),
        Some("passing")
    );
    assert_eq!(updates(&broken), 0, "a failing check sends no heartbeat");
}

/// ca.pem, srv.pem/srv.key for IP 127.0.0.1, from the openssl CLI.
fn certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=native-ca",
    ]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&a);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

fn tls_server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config"),
    )
}

#[test]
fn https_checks_verify_the_certificate() {
    let dir = TempDir::new("native-https");
    certs(&dir.0);
    let up = Upstream::start(Wrap::Tls(tls_server_config(&dir.0)));
    let ca = dir.path("ca.pem").display().to_string();
    let jobs = format!(
        r#"
        {{ name: "trusted", health: {{ http: {ok:?}, tls: {{ cafile: {ca:?} }}, interval: 1, ttl: 5 }} }},
        {{ name: "unknown-ca", health: {{ http: {ok:?}, interval: 1, ttl: 5 }} }},
        {{ name: "noverify", health: {{ http: {ok:?}, tls: {{ verify: false }}, interval: 1, ttl: 5 }} }},
        {{ name: "trusted-500", health: {{ http: {fail:?}, tls: {{ cafile: {ca:?} }}, interval: 1, ttl: 5 }} }},
        "#,
        ok = up.url("https", "/ok"),
        fail = up.url("https", "/fail"),
    );
    let d = daemon(&dir, "", &jobs);
    wait_status(&d, &dir, "trusted", "healthy");
    wait_status(&d, &dir, "noverify", "healthy");
    wait_status(&d, &dir, "unknown-ca", "unhealthy");
    wait_status(&d, &dir, "trusted-500", "unhealthy");
    let log = d.log();
    assert!(
        log.contains("check.unknown-ca: GET ") && log.contains("tls: invalid peer certificate"),
        "{log}"
    );
    assert!(log.contains(": HTTP 500 Internal Server Error"), "{log}");
    assert!(
        up.heads()
            .iter()
            .any(|h| h.starts_with("GET /ok HTTP/1.1\r\n")),
        "requests went through TLS"
    );
}

#[test]
fn reload_replaces_a_changed_check() {
    let up = Upstream::start(Wrap::Plain);
    let dir = TempDir::new("native-reload");
    let sock = dir.socket();
    let write = |path: &str| {
        dir.write(
            "cp.json5",
            &format!(
                r#"{{ control: {{ socket: {:?} }}, jobs: [
                    {{ name: "web", health: {{ http: {:?}, interval: 1, ttl: 5, timeout: "500ms" }} }},
                    {{ name: "steady", health: {{ http: {:?}, interval: 1, ttl: 5 }} }} ] }}"#,
                sock.display().to_string(),
                up.url("http", path),
                up.url("http", "/ok"),
            ),
        )
    };
    let cfg = write("/hang");
    let d = Daemon::start(&cfg);
    wait_ready(&sock);
    wait_status(&d, &dir, "web", "unhealthy");
    write("/ok");
    let (code, body) = control(&sock, "POST", "/v3/reload", None);
    assert_eq!(code, 200, "{body}");
    wait_status(&d, &dir, "web", "healthy");
    wait_status(&d, &dir, "steady", "healthy");
    // The hung probe of the old job was closed, not leaked.
    assert!(wait_until(5 * SEC, || up
        .hung_closed
        .load(Ordering::SeqCst)
        >= 1));
}

#[test]
fn validate_rejects_bad_native_checks_with_path_and_line() {
    let dir = TempDir::new("native-validate");
    let cfg = dir.write(
        "cp.json5",
        r#"{
  jobs: [
    { name: "a", health: { exec: "true", http: "http://127.0.0.1:1/", interval: 1, ttl: 5 } },
    { name: "b", health: { tcp: "127.0.0.1", interval: 1, ttl: 5 } },
    { name: "c", health: { tcp: "127.0.0.1:5", headers: { X: "1" }, interval: 1, ttl: 5 } },
    { name: "d", health: { http: "ftp://x/", interval: 1, ttl: 5 } },
    { name: "e", health: { http: "http://127.0.0.1:1/",
                           headers: { "Bad Name": "1" }, status: 999, interval: 1, ttl: 5 } },
    { name: "f", health: { http: "https://127.0.0.1:1/", tls: { cafile: "/nonexistent/ca.pem" },
                           interval: 1, ttl: 5 } },
  ]
}"#,
    );
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-validate"], &[]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "line 3: jobs[0].health: can have only one of 'exec', 'http' or 'tcp' (has exec, http)",
        "line 4: jobs[1].health.tcp: \"127.0.0.1\" is not host:port",
        "line 5: jobs[2].health.headers: applies only to 'http' checks",
        "line 6: jobs[3].health.http: \"ftp://x/\": must start with http:// or https://",
        "line 8: jobs[4].health.headers: \"Bad Name\" is not a valid header name",
        "line 8: jobs[4].health.status: must be an HTTP status code (100-599)",
        "line 9: jobs[5].health.http: TLS file /nonexistent/ca.pem",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn kept_connections_carry_the_next_probes() {
    let up = Upstream::start_with(Wrap::Plain, Conn::Keep);
    let dir = TempDir::new("native-keep");
    let jobs = format!(
        r#"
        {{ name: "keep", health: {{ http: {ok:?}, interval: 1, ttl: 5 }} }},
        {{ name: "drop", health: {{ http: {drop:?}, interval: 1, ttl: 5 }} }},
        "#,
        ok = up.url("http", "/ok"),
        drop = up.url("http", "/drop"),
    );
    let racy = Upstream::start_with(Wrap::Plain, Conn::KeepOnce);
    let jobs = format!(
        r#"{jobs} {{ name: "racy", health: {{ http: {url:?}, interval: 1, ttl: 5 }} }}"#,
        url = racy.url("http", "/ok")
    );
    let d = daemon(&dir, "", &jobs);
    assert!(
        wait_until(10 * SEC, || up.requests("/ok") >= 4
            && up.requests("/drop") >= 4
            && racy.requests("/ok") >= 4),
        "{}",
        d.log()
    );
    // Every probe after the first found its kept connection hung up on, and
    // passed on a fresh one.
    assert_eq!(job_status(&dir, "racy"), "healthy");
    assert!(!d.log().contains("check.racy: GET"), "{}", d.log());
    assert!(racy.conns.load(Ordering::SeqCst) >= racy.requests("/ok"));
    assert_eq!(job_status(&dir, "keep"), "healthy");
    assert_eq!(job_status(&dir, "drop"), "healthy");
    // /ok keeps one connection; /drop needs a new one for every probe, and a
    // server that hangs up between probes is never reported as a failure.
    let conns = up.conns.load(Ordering::SeqCst);
    let drops = up.requests("/drop");
    assert!(
        conns <= drops + 2,
        "{conns} connections for {drops} /drop and {} /ok probes",
        up.requests("/ok")
    );
    assert!(!d.log().contains("check.drop: GET"), "{}", d.log());
    assert!(!d.log().contains("check.keep: GET"), "{}", d.log());
}

#[test]
fn kept_tls_connections_carry_the_next_probes() {
    let dir = TempDir::new("native-keep-tls");
    certs(&dir.0);
    let up = Upstream::start_with(Wrap::Tls(tls_server_config(&dir.0)), Conn::Keep);
    let ca = dir.path("ca.pem").display().to_string();
    let jobs = format!(
        r#"{{ name: "web", health: {{ http: {ok:?}, tls: {{ cafile: {ca:?} }}, interval: 1, ttl: 5 }} }}"#,
        ok = up.url("https", "/ok"),
    );
    let d = daemon(&dir, "", &jobs);
    assert!(
        wait_until(10 * SEC, || up.requests("/ok") >= 4),
        "{}",
        d.log()
    );
    assert_eq!(job_status(&dir, "web"), "healthy");
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "one TLS handshake for every probe"
    );
}
