//! Hostile peers, round two (issue 14 points 2-6, issue 13 point 4's socket file):
//! full connection tables, bodies that pin memory, JSON that blows up when parsed,
//! running out of file descriptors, and a second daemon on a live control socket.
//! The figures asserted are the issue's acceptance bounds. Tests that measure
//! latency, CPU or memory take `HEAVY`, so they do not skew each other.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn config_at(d: &TempDir, sock: &Path, body: &str) -> PathBuf {
    d.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, {body} }}",
            sock.display().to_string()
        ),
    )
}

/// A daemon with one sleeping job (and `extra` config), its processes marked.
fn start(d: &TempDir, extra: &str) -> (Sweep, Daemon) {
    start_with(d, extra, |_| {})
}

fn start_with(d: &TempDir, extra: &str, tweak: impl FnOnce(&mut Command)) -> (Sweep, Daemon) {
    let cfg = config_at(
        d,
        &d.socket(),
        &format!(r#"jobs: [ {{ name: "app", exec: ["sleep", "3600"] }} ], {extra}"#),
    );
    let sweep = Sweep::new("hostile");
    let mut cmd = Command::new(bin());
    cmd.arg("-config").arg(&cfg).env(MARK_VAR, &sweep.0);
    tweak(&mut cmd);
    let cp = Daemon::start_with(&mut cmd);
    wait_ready(&d.socket());
    (sweep, cp)
}

fn telemetry(port: u16) -> String {
    format!(r#"telemetry: {{ port: {port}, interfaces: ["lo"] }}"#)
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 99).div_ceil(100) - 1]
}

/// A client connection to either listener.
enum Peer {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Peer {
    fn connect(to: &Target) -> std::io::Result<Peer> {
        Ok(match to {
            Target::Unix(p) => Peer::Unix(UnixStream::connect(p)?),
            Target::Tcp(a) => Peer::Tcp(TcpStream::connect(a)?),
        })
    }

    fn nonblocking(self) -> Peer {
        match &self {
            Peer::Unix(s) => s.set_nonblocking(true).expect("nonblocking"),
            Peer::Tcp(s) => s.set_nonblocking(true).expect("nonblocking"),
        }
        self
    }

    fn set_timeout(&self, t: Duration) {
        match self {
            Peer::Unix(s) => {
                let _ = s.set_read_timeout(Some(t));
                let _ = s.set_write_timeout(Some(t));
            }
            Peer::Tcp(s) => {
                let _ = s.set_read_timeout(Some(t));
                let _ = s.set_write_timeout(Some(t));
            }
        }
    }

    /// True once the server closed the connection (EOF or reset); never blocks
    /// on a non-blocking peer.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Peer::Unix(s) => s.read(buf),
            Peer::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Peer::Unix(s) => s.write(buf),
            Peer::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// One well-behaved request on a fresh connection, as `-ping` or a scraper does.
fn ask(to: &Target, method: &str, path: &str) -> Result<u16, String> {
    let mut p = Peer::connect(to).map_err(|e| format!("connect: {e}"))?;
    p.set_timeout(2 * SEC);
    containerpilot::http::request(&mut p, method, path, None)
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------ point 2: full tables

/// Attackers holding connections: `silent` ones that never send, and `trickling`
/// ones that send one header byte a second. A dropped one reconnects at once, as a
/// real attacker would, so the pressure stays on for the whole test.
struct Siege {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Siege {
    fn start(to: Target, silent: usize, trickling: usize) -> Siege {
        const HEAD: &[u8] = b"GET /v3/ping HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let open = |to: &Target| Peer::connect(to).ok().map(Peer::nonblocking);
        let mut quiet: Vec<Option<Peer>> = (0..silent).map(|_| open(&to)).collect();
        let mut slow: Vec<(Option<Peer>, usize)> = (0..trickling).map(|_| (open(&to), 0)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut reconnects = 0;
            let mut tick = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                for q in quiet.iter_mut() {
                    if q.as_mut().map(|p| p.closed()).unwrap_or(true) {
                        *q = open(&to);
                        reconnects += 1;
                    }
                }
                let byte_due = tick.elapsed() >= SEC;
                for (s, sent) in slow.iter_mut() {
                    let dead = match s.as_mut() {
                        None => true,
                        Some(p) => {
                            p.closed()
                                || (byte_due && p.write(&HEAD[*sent % HEAD.len()..][..1]).is_err())
                        }
                    };
                    if dead {
                        *s = open(&to);
                        *sent = 0;
                        reconnects += 1;
                    } else if byte_due {
                        *sent += 1;
                    }
                }
                if byte_due {
                    tick = Instant::now();
                }
                std::thread::sleep(100 * MS);
            }
            reconnects
        });
        Siege {
            stop,
            thread: Some(thread),
        }
    }

    fn end(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Siege {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// 200 requests on fresh connections, 10 ms apart; gives up early once the p99
/// bound is certainly missed (so a failing run does not take half an hour).
fn latencies(to: &Target, method: &str, path: &str) -> (Vec<Duration>, Vec<String>) {
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        match ask(to, method, path) {
            Ok(200) => {}
            Ok(code) => errors.push(format!("status {code}")),
            Err(e) => errors.push(e),
        }
        lat.push(t.elapsed());
        if lat.iter().filter(|l| **l >= 50 * MS).count() > 10 {
            break;
        }
        std::thread::sleep(10 * MS);
    }
    (lat, errors)
}

#[test]
fn full_connection_tables_still_serve_a_new_client_at_once() {
    let _g = heavy();
    let d = TempDir::new("siege");
    let port = free_port();
    let (_sweep, mut cp) = start(&d, &telemetry(port));
    let targets = [
        ("control socket", Target::Unix(d.socket()), "/v3/ping"),
        (
            "telemetry port",
            Target::Tcp(format!("127.0.0.1:{port}")),
            "/metrics",
        ),
    ];
    let sieges: Vec<Siege> = targets
        .iter()
        .map(|(_, to, _)| Siege::start(to.clone(), 300, 50))
        .collect();
    std::thread::sleep(2 * SEC);
    let fds = fd_count(cp.pid()).expect("fds");
    let mut report = Vec::new();
    let mut fails = Vec::new();
    for (name, to, path) in &targets {
        let (mut lat, errors) = latencies(to, "GET", path);
        let n = lat.len();
        let p99 = p99(&mut lat);
        report.push(format!(
            "{name}: {n} requests, p50 {:?}, p99 {p99:?}, max {:?}, {} errors",
            lat[n / 2],
            lat[n - 1],
            errors.len()
        ));
        if n < 200 || p99 >= 50 * MS || !errors.is_empty() {
            fails.push(format!(
                "{name}: p99 {p99:?} over {n} requests; errors {errors:?}"
            ));
        }
    }
    let reconnects: usize = sieges.into_iter().map(Siege::end).sum();
    eprintln!(
        "300 silent + 50 trickling per listener: {}; attackers reconnected {reconnects} times; daemon fds {fds}",
        report.join("; ")
    );
    assert!(fails.is_empty(), "{fails:?}\n{}", cp.log());
    assert!(fds < 2 * 256 + 64, "{fds} fds: a table holds more than 256");
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}
