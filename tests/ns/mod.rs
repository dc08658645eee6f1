//! Helpers for the tests that run the daemon as PID 1 of a fresh PID namespace
//! (`unshare --pid --fork --mount-proc`) or in a container: the shipped static musl
//! binary, the static helper job, process-tree inspection from the host side, and
//! a free loopback port.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{wait_until, Daemon, TempDir};

/// Why PID-namespace tests cannot run here, or `None` when they can.
pub fn unshare_unavailable() -> Option<String> {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "unshare --pid --fork --mount-proc is not permitted here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The binary users ship: the release build for x86_64-unknown-linux-musl (what
/// `make static` builds). The PID-1, scratch, Docker and bench tests run it, while
/// `cargo test` itself builds for the gnu target; so the first call in a test
/// process asks cargo for it (a no-op when it is up to date).
/// `CONTAINERPILOT_MUSL_BIN` names a prebuilt one instead.
pub fn musl_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BIN.get_or_init(|| match std::env::var_os("CONTAINERPILOT_MUSL_BIN") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => build_musl(),
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_musl() -> Result<PathBuf, String> {
    // Several test binaries may ask at once; cargo serialises their builds itself.
    // The shared build lock keeps this compile from competing with others on a
    // busy machine; it is only waited for, never required.
    let _lock = BuildLock::take();
    match cargo_build_musl()? {
        Ok(bin) => Ok(bin),
        Err(stderr) if stderr.contains("target may not be installed") => {
            eprintln!("the {MUSL} target is missing: rustup target add {MUSL}");
            let added = Command::new("rustup")
                .args(["target", "add", MUSL])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !added {
                return Err(format!(
                    "the {MUSL} target is not installed and `rustup target add {MUSL}` \
                     failed; install it (.ci/run does)\n{stderr}"
                ));
            }
            cargo_build_musl()?.map_err(|e| format!("cargo build --target {MUSL} failed:\n{e}"))
        }
        Err(stderr) => Err(format!("cargo build --target {MUSL} failed:\n{stderr}")),
    }
}

/// `cargo build --release --target musl`: Ok(Ok(path)) on success, Ok(Err(stderr))
/// when cargo ran and failed.
fn cargo_build_musl() -> Result<Result<PathBuf, String>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--bin",
            "containerpilot",
            "--target",
            MUSL,
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Ok(Err(stderr));
    }
    // The artifact message names the executable wherever the target dir is.
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "containerpilot")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    match exe {
        Some(p) => Ok(Ok(p)),
        None => Ok(Err(format!(
            "cargo named no containerpilot executable\n{stderr}"
        ))),
    }
}

/// flock(2) on the build lock shared by the developers' cargo commands
/// (`CONTAINERPILOT_BUILD_LOCK`, default /tmp/cp-cargo.lock), waited for at most
/// 15 minutes: whoever holds it longer is not compiling, so we build anyway.
struct BuildLock(Option<std::fs::File>);

impl BuildLock {
    fn take() -> BuildLock {
        let path = std::env::var_os("CONTAINERPILOT_BUILD_LOCK")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/tmp/cp-cargo.lock".into());
        let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            return BuildLock(None);
        };
        let start = Instant::now();
        let mut said = false;
        loop {
            // SAFETY: flock(2) on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return BuildLock(Some(f));
            }
            if start.elapsed() > Duration::from_secs(15 * 60) {
                eprintln!("build lock {path:?} still held after 15 min; building anyway");
                return BuildLock(None);
            }
            if !said {
                eprintln!("waiting for the build lock {path:?} to build the {MUSL} binary");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Build `tests/fixtures/cp_helper.c` statically into `dir`; the tests need it, so
/// a missing compiler is a failure with the reason, not a skip.
pub fn build_helper(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cp_helper.c");
    let out = dir.join("cp_helper");
    let res = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc to build the static test helper");
    assert!(
        res.status.success(),
        "cc -static failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Direct children of `pid` (all threads), zombies included, as the host sees them.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out
}

/// The daemon's host pid: the one child of the `unshare --fork` process.
pub fn daemon_pid(unshare: &mut Daemon) -> i32 {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = children(unshare.pid()).first().copied();
        found.is_some() || unshare.wait_exit(Duration::ZERO).is_some()
    });
    match found {
        Some(pid) => pid,
        None => panic!(
            "unshare did not start the daemon (exit: {:?}); output:\n{}",
            unshare.wait_exit(Duration::ZERO),
            unshare.log()
        ),
    }
}

/// A process's state letter and parent from /proc/<pid>/status.
pub fn state_and_ppid(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut state = None;
    let mut ppid = None;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("State:") {
            state = v.trim().chars().next();
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        }
    }
    Some((state?, ppid?))
}

/// Zombies whose parent is `parent`, found by scanning all of /proc.
pub fn zombies_of(parent: i32) -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| state_and_ppid(pid) == Some(('Z', parent)))
        .count()
}

/// A loopback port nobody listens on right now.
pub fn loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// One HTTP GET over TCP to 127.0.0.1:port with the crate's client.
pub fn http_get(port: u16, path: &str) -> Result<containerpilot::http::ClientResponse, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    containerpilot::http::request(&mut s, "GET", path, None).map_err(|e| e.to_string())
}

/// A temp dir for a namespace test plus the helper built inside it.
pub fn with_helper(tag: &str) -> (TempDir, PathBuf) {
    let d = TempDir::new(tag);
    let h = build_helper(&d.0);
    (d, h)
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started (or its direct child).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader): the
/// PT_INTERP program header. Static and static-pie binaries have none.
pub fn elf_interpreter(path: &Path) -> Result<bool, String> {
    let b = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only: that is what this project builds.
    if b.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(format!(
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        ));
    }
    let bad = || format!("{}: truncated ELF header", path.display());
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)?;
    let phnum = u16_at(0x38).ok_or_else(bad)?;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let ty = u32_at(phoff + i * phentsize).ok_or_else(bad)?;
        if ty == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}
