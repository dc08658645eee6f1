//! Shared harness for the integration tests: unique temp dirs, config files, a
//! running `containerpilot` whose output is collected, and small waiting helpers.
#![allow(dead_code)]

pub mod consul_double;
pub mod etcd;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_containerpilot")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("cp-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write file");
        p
    }

    /// Write a shell script and make it executable.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    pub fn socket(&self) -> PathBuf {
        self.path("cp.socket")
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Output of a process collected by background threads.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|g| g.clone()).unwrap_or_default()).into_owned()
    }

    fn collect<R: Read + Send + 'static>(&self, mut r: R) {
        let buf = self.0.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut g) = buf.lock() {
                            g.extend_from_slice(&chunk[..n]);
                        }
                    }
                }
            }
        });
    }
}

pub struct Daemon {
    pub child: Child,
    pub out: Output,
    pub status: Option<ExitStatus>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with(Command::new(bin()).arg("-config").arg(config))
    }

    pub fn start_with(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start containerpilot");
        let out = Output::default();
        if let Some(o) = child.stdout.take() {
            out.collect(o);
        }
        if let Some(e) = child.stderr.take() {
            out.collect(e);
        }
        Daemon {
            child,
            out,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        self.out.text()
    }

    /// Wait until the log contains `needle`; panics with the log on timeout.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.log().contains(needle)) {
            panic!("timed out waiting for {needle:?} in log:\n{}", self.log());
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe {
            libc_kill(self.pid(), sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                // let the reader threads catch the last output
                std::thread::sleep(Duration::from_millis(50));
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM and wait for exit; returns the exit status and how long it took.
    pub fn stop(&mut self) -> (Option<ExitStatus>, Duration) {
        let t = Instant::now();
        self.signal(SIGTERM);
        let s = self.wait_exit(Duration::from_secs(15));
        (s, t.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGTERM: i32 = 15;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the binary to completion with arguments; returns (code, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("CONTAINERPILOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run containerpilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fields of /proc/<pid>/stat after the command name.
pub fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(|x| x.to_string()).collect())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = proc_stat(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// How many times the scheduler ran the task (third field of schedstat: cpu
/// time, run-queue wait, timeslices run).
pub fn sched_runs(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().nth(2)?.parse().ok()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One HTTP request over the control socket.
pub fn control(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let b = body.map(|b| ("application/json", b.as_bytes()));
    match containerpilot::http::request_unix(sock, method, path, b, Duration::from_secs(10)) {
        Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Err(e) => panic!("control request {method} {path} failed: {e}"),
    }
}

/// One HTTP GET/POST to a TCP address like "127.0.0.1:9090".
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    match containerpilot::http::request(&mut s, method, path, None) {
        Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Err(e) => panic!("{method} {addr}{path} failed: {e}"),
    }
}

/// Wait for the control socket to answer a ping.
pub fn wait_ready(sock: &Path) {
    let ok = wait_until(Duration::from_secs(10), || {
        containerpilot::http::request_unix(sock, "GET", "/v3/ping", None, Duration::from_secs(2))
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
    assert!(ok, "control socket {} never answered", sock.display());
}

// ---- process inspection for the hardening and soak tests (Linux /proc) ----

/// A field of /proc/<pid>/status as a number (e.g. "VmRSS" in kB, "Threads").
pub fn proc_status_field(pid: i32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size in KiB.
pub fn rss_kb(pid: i32) -> Option<u64> {
    proc_status_field(pid, "VmRSS")
}

pub fn thread_count(pid: i32) -> Option<u64> {
    proc_status_field(pid, "Threads")
}

/// Number of open file descriptors.
pub fn fd_count(pid: i32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Direct children of a process (all its threads' children).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

/// Children of `pid` that are zombies (exited, not yet reaped).
pub fn zombie_children(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|c| proc_stat(*c).is_some_and(|f| f.first().is_some_and(|s| s == "Z")))
        .collect()
}

/// Every process whose environment holds `KEY=value` exactly: a marker set on the
/// daemon is inherited by each job and everything the jobs start.
pub fn procs_with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// (rchar, wchar) from /proc/<pid>/io: bytes the process read and wrote.
pub fn io_chars(pid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let get = |k: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((get("rchar:")?, get("wchar:")?))
}

/// One control-socket request that reports failure instead of panicking (for
/// clients racing a daemon that may be going away).
pub fn try_control(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let b = body.map(|b| ("application/json", b.as_bytes()));
    containerpilot::http::request_unix(sock, method, path, b, timeout)
        .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        .map_err(|e| e.to_string())
}

/// A marker value unique to this test process and call.
pub fn unique_marker(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{n}-{nanos}", std::process::id())
}

/// Environment variable that marks every process a test's daemon starts.
pub const MARK_VAR: &str = "CP_TEST_MARK";

/// SIGKILLs, on drop, every process carrying `MARK_VAR=<marker>`: `Daemon`'s drop
/// kills only the daemon, so a failing test would otherwise leave its jobs behind.
/// Declare it before the `Daemon` so it drops after it.
pub struct Sweep(pub String);

impl Sweep {
    pub fn new(tag: &str) -> Sweep {
        Sweep(unique_marker(tag))
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for p in procs_with_env(MARK_VAR, &self.0) {
            if p as u32 != std::process::id() {
                // SAFETY: plain kill(2) on a process started for this test.
                unsafe {
                    libc_kill(p, SIGKILL);
                }
            }
        }
    }
}
