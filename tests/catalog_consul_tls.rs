//! https to the agent (TLS is part of every build): CA file verification, a
//! wrong CA, `verify: false`, `servername`, bad TLS files; and the shipped musl
//! binary doing the same from its config and the CONSUL_* variables. Certificates
//! come from the `openssl` CLI; a small rustls server answers health queries.

mod common;
mod ns;

use containerpilot::catalog::{Catalog, Observation, Reply, Snapshot, Target};
use containerpilot::config::types::{ConsulConfig, TlsConfig};
use mio::{Events, Poll, Token, Waker};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static N: AtomicUsize = AtomicUsize::new(0);

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ca.pem/ca.key, other-ca.pem, srv.pem/srv.key (SAN: DNS consul.test only,
/// plus IP 127.0.0.1 when `with_ip`).
fn make_certs(with_ip: bool) -> Certs {
    let dir = std::env::temp_dir().join(format!(
        "cp-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "test-ca"), ("other-ca", "other-ca")] {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(&dir, &a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=consul.test",
    ]);
    openssl(&dir, &a);
    let san = if with_ip {
        "subjectAltName=DNS:consul.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    } else {
        "subjectAltName=DNS:consul.test\nextendedKeyUsage=serverAuth\n"
    };
    std::fs::write(dir.join("ext.cnf"), san).expect("ext");
    openssl(
        &dir,
        &[
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
        ],
    );
    Certs { dir }
}

/// Answers every request with `[]`; records the X-Consul-Token of each.
struct TlsAgent {
    addr: String,
    tokens: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
}

impl TlsAgent {
    fn start(certs: &Certs) -> TlsAgent {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.path("srv.pem"))
                .expect("cert")
                .collect::<Result<_, _>>()
                .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(certs.path("srv.key")).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (tokens, stop) = (tokens.clone(), stop.clone());
            std::thread::spawn(move || {
                for s in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    let (config, tokens) = (config.clone(), tokens.clone());
                    std::thread::spawn(move || serve(s, config, tokens));
                }
            });
        }
        TlsAgent { addr, tokens, stop }
    }
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(s: TcpStream, config: Arc<rustls::ServerConfig>, tokens: Arc<Mutex<Vec<Option<String>>>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let token = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Consul-Token"))
        .map(|(_, v)| v.trim().to_string());
    if let Ok(mut t) = tokens.lock() {
        t.push(token);
    }
    let _ = tls.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// One watch query through a lane (a thread with the catalog's small stack, so
/// the TLS handshake is exercised there).
fn query(addr: &str, tls: TlsConfig, token: Option<&str>) -> Result<Observation, String> {
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(1)).expect("waker"));
    let cfg = ConsulConfig {
        address: addr.to_string(),
        scheme: "https".to_string(),
        token: token.map(str::to_string),
        tls,
    };
    let mut c = Catalog::start(&cfg, waker, Duration::from_secs(5)).expect("catalog");
    let target = Target::Service {
        name: "db".to_string(),
        tag: None,
        dc: None,
    };
    c.observe(0, &target, 0, None).expect("lane");
    let mut poll = poll;
    let mut events = Events::with_capacity(2);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if let Some(Reply::Observed { result, .. }) = c.try_recv() {
            return result;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no reply");
        poll.poll(&mut events, Some(left)).expect("poll");
    }
}

/// The agent sends no X-Consul-Index: index 0.
fn ok() -> Result<Observation, String> {
    Ok(Observation {
        index: 0,
        snapshot: Some(Snapshot::Instances(vec![])),
    })
}

#[test]
fn cafile_verifies_and_token_is_sent() {
    let certs = make_certs(true);
    let agent = TlsAgent::start(&certs);
    let tls = TlsConfig {
        cafile: Some(certs.path("ca.pem")),
        ..TlsConfig::default()
    };
    assert_eq!(query(&agent.addr, tls, Some("tok")), ok());
    assert_eq!(
        *agent.tokens.lock().expect("tokens"),
        vec![Some("tok".to_string())]
    );
}

#[test]
fn capath_verifies() {
    let certs = make_certs(true);
    let agent = TlsAgent::start(&certs);
    let cadir = certs.dir.join("cadir");
    std::fs::create_dir_all(&cadir).expect("cadir");
    std::fs::copy(certs.dir.join("ca.pem"), cadir.join("ca.pem")).expect("copy");
    let tls = TlsConfig {
        capath: Some(cadir.to_string_lossy().into_owned()),
        ..TlsConfig::default()
    };
    assert_eq!(query(&agent.addr, tls, None), ok());
}

#[test]
fn wrong_ca_fails_with_a_clear_error() {
    let certs = make_certs(true);
    let agent = TlsAgent::start(&certs);
    let tls = TlsConfig {
        cafile: Some(certs.path("other-ca.pem")),
        ..TlsConfig::default()
    };
    match query(&agent.addr, tls, None) {
        Err(error) => {
            assert!(
                error.contains("invalid peer certificate: UnknownIssuer"),
                "{error}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    // verify: false accepts the same server.
    let tls = TlsConfig {
        cafile: Some(certs.path("other-ca.pem")),
        verify: Some(false),
        ..TlsConfig::default()
    };
    assert_eq!(query(&agent.addr, tls, None), ok());
}

#[test]
fn servername_overrides_the_checked_name() {
    let certs = make_certs(false);
    let agent = TlsAgent::start(&certs);
    let tls = TlsConfig {
        cafile: Some(certs.path("ca.pem")),
        ..TlsConfig::default()
    };
    match query(&agent.addr, tls.clone(), None) {
        Err(error) => {
            assert!(error.contains("invalid peer certificate"), "{error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let tls = TlsConfig {
        servername: Some("consul.test".to_string()),
        ..tls
    };
    assert_eq!(query(&agent.addr, tls, None), ok());
}

#[test]
fn bad_tls_files_fail_at_start() {
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(1)).expect("waker"));
    let mut cfg = ConsulConfig {
        address: "127.0.0.1:8501".to_string(),
        scheme: "https".to_string(),
        token: None,
        tls: TlsConfig {
            cafile: Some("/nonexistent/ca.pem".to_string()),
            ..TlsConfig::default()
        },
    };
    let e = Catalog::start(&cfg, waker.clone(), Duration::from_secs(1))
        .err()
        .expect("missing cafile");
    assert!(
        e.to_string().starts_with("TLS file /nonexistent/ca.pem: "),
        "{e}"
    );
    cfg.tls = TlsConfig {
        clientcert: Some("/x.pem".to_string()),
        ..TlsConfig::default()
    };
    let e = Catalog::start(&cfg, waker, Duration::from_secs(1))
        .err()
        .expect("cert without key");
    assert_eq!(
        e.to_string(),
        "TLS setup failed: clientcert and clientkey must be set together"
    );
}

/// The shipped (musl) binary as a daemon whose watch asks the agent over https:
/// trusted through the config's `tls.cafile`, through `CONSUL_CACERT`, refused
/// with neither (the test CA is in no root store), and accepted unverified with
/// `CONSUL_HTTP_SSL_VERIFY=false` or `tls: { verify: false }`.
#[test]
fn shipped_binary_talks_https_to_the_agent() {
    let certs = make_certs(true);
    let bin = ns::musl_bin();
    let ca = certs.path("ca.pem");
    let cafile = format!("tls: {{ cafile: {ca:?} }},");
    // (what, the consul block's tls part, an environment variable, trusted)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, bool);
    let cases: [Case; 5] = [
        ("tls.cafile", &cafile, None, true),
        ("CONSUL_CACERT", "", Some(("CONSUL_CACERT", &ca)), true),
        ("no CA", "", None, false),
        (
            "CONSUL_HTTP_SSL_VERIFY=false",
            "",
            Some(("CONSUL_HTTP_SSL_VERIFY", "false")),
            true,
        ),
        ("verify: false", "tls: { verify: false },", None, true),
    ];
    for (what, tls, var, trusted) in cases {
        let agent = TlsAgent::start(&certs);
        let d = common::TempDir::new("tls-bin");
        let cfg = d.write(
            "cp.json5",
            &format!(
                "{{ consul: {{ address: {:?}, scheme: \"https\", {tls} }},\n  control: {{ socket: {:?} }},\n  watches: [ {{ name: \"db\", interval: 1 }} ] }}",
                agent.addr,
                d.socket().display().to_string()
            ),
        );
        let mut cmd = Command::new(&bin);
        cmd.arg("-config")
            .arg(&cfg)
            .env_remove("CONSUL_CACERT")
            .env_remove("CONSUL_CAPATH")
            .env_remove("CONSUL_HTTP_SSL_VERIFY");
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        let mut daemon = common::Daemon::start_with(&mut cmd);
        let asked = || agent.tokens.lock().map(|t| t.len()).unwrap_or(0);
        if trusted {
            assert!(
                common::wait_until(Duration::from_secs(10), || asked() >= 2),
                "{what}: the agent was not asked over https; log:\n{}",
                daemon.log()
            );
            assert!(
                !daemon.log().contains("certificate"),
                "{what}: {}",
                daemon.log()
            );
        } else {
            daemon.expect_log("invalid peer certificate", Duration::from_secs(10));
            assert_eq!(asked(), 0, "{what}: a request got through unverified");
        }
        let (st, _) = daemon.stop();
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "{what}: {}",
            daemon.log()
        );
    }
}
