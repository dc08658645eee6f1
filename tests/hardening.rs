//! Fault injection and hostile clients (issue 10, items 3 and 4): floods, fork
//! storms, signal bursts, racing control clients, a vanished control socket, log
//! files that cannot be written, and clients that connect and misbehave. Every test
//! is bounded; the CPU-hungry ones take `HEAVY` so they do not skew each other's
//! latency and CPU figures when the harness runs tests in parallel.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// Marks every process a test's daemon starts (inherited through the environment).
const MARK: &str = MARK_VAR;

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(d: &TempDir, body: &str) -> PathBuf {
    d.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, {body} }}",
            d.socket().display().to_string()
        ),
    )
}

/// Start a daemon whose processes carry the returned sweep's marker; keep the
/// sweep alive until the end of the test (bind it to a named variable).
fn start(d: &TempDir, body: &str) -> (Sweep, Daemon, PathBuf) {
    let cfg = config(d, body);
    let sweep = Sweep::new("hardening");
    let cp = start_marked(&cfg, &sweep.0);
    wait_ready(&d.socket());
    (sweep, cp, cfg)
}

/// Start with a marker in the environment, so leftovers can be found afterwards.
fn start_marked(cfg: &Path, mark: &str) -> Daemon {
    Daemon::start_with(Command::new(bin()).arg("-config").arg(cfg).env(MARK, mark))
}

/// SIGKILL whatever still carries the marker (the daemon first); returns the pids
/// found, so a failing test does not leave sleepers behind.
fn kill_marked(cp: &mut Daemon, mark: &str) -> Vec<i32> {
    let left = procs_with_env(MARK, mark);
    if !left.is_empty() {
        let _ = cp.child.kill();
        let _ = cp.child.wait();
        for p in procs_with_env(MARK, mark) {
            signal_pid(p, SIGKILL);
        }
    }
    left
}

fn ping_ok(sock: &Path) -> bool {
    try_control(sock, "GET", "/v3/ping", None, 5 * SEC).is_ok_and(|(c, b)| c == 200 && b == "ok")
}

/// USER_HZ: /proc reports CPU time in 1/100 s on Linux.
fn ticks_per_sec() -> u64 {
    100
}

fn unshare_ok() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------- fault injection

#[test]
fn stdout_flood_leaves_the_loop_responsive_and_memory_flat() {
    let _g = heavy();
    let d = TempDir::new("flood");
    // Short lines (per-line cost) and no newlines at all (64 KiB splitting), both at
    // full speed. The log goes to /dev/null so the test's own memory is not the limit.
    let (_sweep, mut cp, _) = start(
        &d,
        r#"logging: { output: "/dev/null" },
           jobs: [ { name: "yes", exec: ["yes", "flood"] },
                   { name: "zeros", exec: ["cat", "/dev/zero"] } ]"#,
    );
    std::thread::sleep(500 * MS);
    let pid = cp.pid();
    let rss0 = rss_kb(pid).expect("rss");
    let (_, w0) = io_chars(pid).expect("io");
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut rss_max = rss0;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(control(&d.socket(), "GET", "/v3/ping", None).0, 200);
        lat.push(t.elapsed());
        rss_max = rss_max.max(rss_kb(pid).unwrap_or(0));
        std::thread::sleep(50 * MS);
    }
    let (_, w1) = io_chars(pid).expect("io");
    let logged_mb_s = (w1 - w0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
    // keep flooding a little longer: memory must not creep
    let until = Instant::now() + 3 * SEC;
    while Instant::now() < until {
        rss_max = rss_max.max(rss_kb(pid).unwrap_or(0));
        std::thread::sleep(100 * MS);
    }
    let worst = *lat.iter().max().unwrap();
    let med = median(&mut lat);
    eprintln!(
        "flood: ping median {med:?} worst {worst:?}; log written {logged_mb_s:.1} MB/s; \
         rss {rss0} -> max {rss_max} KiB"
    );
    assert!(med < 100 * MS, "ping median {med:?} under a stdout flood");
    assert!(worst < SEC, "worst ping {worst:?} under a stdout flood");
    // the log keeps up: the daemon goes on writing what the jobs produce
    assert!(
        logged_mb_s > 2.0,
        "log written at only {logged_mb_s:.1} MB/s"
    );
    assert!(
        rss_max < rss0 + 8 * 1024,
        "RSS grew from {rss0} to {rss_max} KiB"
    );
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(took < 3 * SEC, "stop took {took:?}");
}

const FORKER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

/* Start `rate` processes per second for `secs` seconds: each child starts a
   grandchild and exits at once, so the grandchild is orphaned to PID 1 (the daemon),
   which has to reap it. vfork because fork() copies page tables and tops out at
   ~2000 processes/s on small VMs. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rate = argc > 1 ? atol(argv[1]) : 5000;
    double secs = argc > 2 ? atof(argv[2]) : 10;
    double start = now(), el;
    long done = 0;
    while ((el = now() - start) < secs) {
        long target = (long)(el * rate);
        while (done < target && now() - start < secs) {
            pid_t p = vfork();
            if (p == 0) {
                if (vfork() == 0) _exit(0);
                _exit(0);
            }
            if (p < 0) { usleep(1000); break; }
            waitpid(p, 0, 0);
            done += 2;
        }
        usleep(1000);
    }
    printf("started %ld processes in %.1f s\n", done, now() - start);
    return 0;
}
"#;

#[test]
fn fork_storm_as_pid_1_leaves_no_zombies_and_costs_bounded_cpu() {
    if !unshare_ok() {
        eprintln!("skipped: unshare --pid not permitted here");
        return;
    }
    let _g = heavy();
    let d = TempDir::new("forks");
    let src = d.write("forker.c", FORKER_C);
    let exe = d.path("forker");
    let cc = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: ["sleep", "3600"] }},
                      {{ name: "forker", exec: [{:?}, "5000", "10"] }} ]"#,
            exe.display().to_string()
        ),
    );
    let sweep = Sweep::new("forks");
    let mut outer = Daemon::start_with(
        Command::new("unshare")
            .env(MARK, &sweep.0)
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(bin())
            .arg("-config")
            .arg(&cfg),
    );
    let mut daemon = 0;
    assert!(
        wait_until(10 * SEC, || {
            daemon = children_of(outer.pid()).first().copied().unwrap_or(0);
            daemon > 0
        }),
        "unshare never started the daemon: {}",
        outer.log()
    );
    wait_ready(&d.socket());
    let t0 = cpu_ticks(daemon).expect("daemon's /proc/<pid>/stat");
    let start = Instant::now();
    // every zombie child of the daemon, with when it was first seen
    let mut seen: std::collections::HashMap<i32, Instant> = Default::default();
    let mut oldest = Duration::ZERO;
    let mut peak = 0;
    while !outer.log().contains("started ") && start.elapsed() < 30 * SEC {
        let now = Instant::now();
        let z = zombie_children(daemon);
        peak = peak.max(z.len());
        seen.retain(|p, _| z.contains(p));
        for p in z {
            let first = *seen.entry(p).or_insert(now);
            oldest = oldest.max(now - first);
        }
        std::thread::sleep(20 * MS);
    }
    let took = start.elapsed();
    let ticks = cpu_ticks(daemon).unwrap_or_else(|| panic!("daemon gone:\n{}", outer.log())) - t0;
    let log = outer.log();
    let line = log
        .lines()
        .find(|l| l.contains(" processes in "))
        .unwrap_or_else(|| panic!("forker never finished:\n{log}"));
    let n: u64 = line
        .split("started ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    std::thread::sleep(500 * MS);
    let left = zombie_children(daemon);
    let cpu = ticks as f64 / ticks_per_sec() as f64 / took.as_secs_f64() * 100.0;
    eprintln!(
        "forks: {n} processes in {took:?}; daemon cpu {cpu:.0}% of a core; \
         zombies peak {peak}, oldest seen {oldest:?}, left {}",
        left.len()
    );
    // 5000/s is the aim; small shared VMs manage less (this one ~3500/s alone),
    // so require a fifth of it
    assert!(n >= 10_000, "only {n} processes were started: {line}");
    assert!(left.is_empty(), "zombies survive: {left:?}");
    assert!(oldest < SEC, "a zombie stayed {oldest:?}");
    // reaping ~5000 orphans a second must not take the daemon's whole core
    assert!(cpu < 60.0, "daemon used {cpu:.0}% of a core");
    assert!(ping_ok(&d.socket()));
    signal_pid(daemon, SIGTERM);
    let st = outer.wait_exit(10 * SEC).expect("exits");
    assert_eq!(st.code(), Some(0), "{}", outer.log());
}

fn signal_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started.
    unsafe {
        kill(pid, sig);
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_burst_of_1000_sighups_runs_the_job_but_never_twice_at_once() {
    let d = TempDir::new("hups");
    let o = d.path("runs");
    let (_sweep, mut cp, _) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: ["sleep", "3600"] }},
                      {{ name: "on-hup", when: {{ source: "SIGHUP" }},
                         exec: ["sh", "-c", "echo start >> {o}; sleep 0.1; echo end >> {o}"] }} ]"#,
            o = o.display()
        ),
    );
    // The kernel merges signals that arrive while one is pending, so the daemon sees
    // some of these as separate deliveries; each delivery while the job runs queues
    // one more run (SPEC §1: "a busy command queues its next run"), up to 1000.
    let t0 = Instant::now();
    for _ in 0..1000 {
        cp.signal(SIGHUP);
    }
    assert!(ping_ok(&d.socket()), "no ping after the burst");
    // settled: the last run has ended and no other starts for a while
    assert!(
        wait_until(30 * SEC, || {
            let a = d.read("runs");
            std::thread::sleep(700 * MS);
            a.ends_with("end\n") && d.read("runs") == a
        }),
        "{}",
        cp.log()
    );
    let runs = d.read("runs");
    let lines: Vec<&str> = runs.lines().collect();
    assert!(!lines.is_empty());
    for (i, l) in lines.iter().enumerate() {
        let want = if i % 2 == 0 { "start" } else { "end" };
        assert_eq!(*l, want, "runs overlapped:\n{runs}");
    }
    assert_eq!(lines.len() % 2, 0, "{runs}");
    eprintln!(
        "sighup burst: the job ran {} times, one after the other, settled after {:?}",
        lines.len() / 2,
        t0.elapsed()
    );
    assert!(cp.child.try_wait().ok().flatten().is_none(), "daemon died");
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

/// Write the whole file at once, so a concurrent reload never reads half of it.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn sigterm_during_reloads_exits_0_and_leaves_no_process() {
    let _g = heavy();
    for delay_ms in [150u64, 400, 900] {
        let d = TempDir::new("reload-term");
        let sweep = Sweep::new("reload-term");
        let mark = sweep.0.clone();
        let sock = d.socket().display().to_string();
        let text = move |i: u64| {
            format!(
                r#"{{ control: {{ socket: {sock:?} }}, stopTimeout: 2, jobs: [
                     {{ name: "keep", exec: ["sleep", "3600"] }},
                     {{ name: "flip", exec: ["sh", "-c", "sleep 3600; echo {i}"] }},
                     {{ name: "checked", exec: ["sleep", "3600"],
                        health: {{ exec: ["sh", "-c", "sleep 0.{}"], interval: 1, ttl: 5 }} }},
                     {{ name: "after", exec: ["sleep", "3600"], when: {{ source: "checked", once: "healthy" }} }} ] }}"#,
                i % 2 + 1
            )
        };
        let cfg = d.path("cp.json5");
        write_atomic(&cfg, &text(0));
        let mut cp = start_marked(&cfg, &mark);
        wait_ready(&d.socket());
        let stop = Arc::new(AtomicBool::new(false));
        let reloader = {
            let stop = stop.clone();
            let cfg = cfg.clone();
            let sock = d.socket();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    write_atomic(&cfg, &text(n));
                    if try_control(&sock, "POST", "/v3/reload", None, 5 * SEC).is_err() {
                        break;
                    }
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let t = Instant::now();
        cp.signal(SIGTERM);
        let st = cp.wait_exit(10 * SEC);
        let took = t.elapsed();
        stop.store(true, Ordering::SeqCst);
        let reloads = reloader.join().expect("reloader");
        if st.is_none() {
            kill_marked(&mut cp, &mark);
        }
        let log = cp.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "after {reloads} reloads; last log lines (newest first):\n{}",
            tail.join("\n")
        );
        assert!(took < 4 * SEC, "shutdown took {took:?}");
        std::thread::sleep(200 * MS);
        let left = kill_marked(&mut cp, &mark);
        assert!(left.is_empty(), "processes left behind: {left:?}");
        assert!(!d.socket().exists(), "control socket left behind");
        eprintln!("sigterm during reloads: {reloads} reloads, exit in {took:?}");
    }
}

// FAILS until: a reload is refused once shutdown has begun (see report:
// runtime/control.rs `reload` puts every stopped job into `pending` and
// `install_pending` starts it again, so the daemon never finishes).
#[test]
fn a_reload_after_sigterm_does_not_restart_jobs() {
    let d = TempDir::new("term-reload");
    let sweep = Sweep::new("term-reload");
    let mark = sweep.0.clone();
    let cfg = config(
        &d,
        r#"jobs: [ { name: "keep", exec: ["sleep", "3600"] },
                   { name: "slow", exec: ["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.05; done"] } ]"#,
    );
    let mut cp = start_marked(&cfg, &mark);
    wait_ready(&d.socket());
    std::thread::sleep(300 * MS);
    let t = Instant::now();
    cp.signal(SIGTERM);
    std::thread::sleep(100 * MS);
    // `slow` is still stopping; an orchestrator's reload arrives now
    let reload = try_control(&d.socket(), "POST", "/v3/reload", None, 5 * SEC);
    let st = cp.wait_exit(5 * SEC);
    let took = t.elapsed();
    std::thread::sleep(200 * MS);
    let left = kill_marked(&mut cp, &mark);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "reload answered {reload:?}; the daemon did not exit; processes {left:?}:\n{}",
        cp.log()
    );
    assert!(took < 3 * SEC, "{took:?}");
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

// FAILS until: signals are blocked from the first line of main() and unblocked
// once the runtime's handlers are in place (see report: a SIGTERM that arrives
// before Runtime::new installs the signal-hook handlers kills the daemon with the
// default action, so it "exits" by signal 15 instead of 0; as PID 1 the same
// early SIGTERM is discarded by the kernel and the container ignores `docker stop`).
#[test]
fn sigterm_during_start_up_exits_0_quickly_and_leaves_no_process() {
    let d = TempDir::new("start-term");
    // 1 MB of comments stands for slow start-up work (a big config, templates), so
    // the first SIGTERMs land before the runtime is up, as they can in production.
    let padding = "// padding padding padding padding padding padding padding\n".repeat(15_000);
    let cfg = config(
        &d,
        &format!(
            r#"{padding} jobs: [ {{ name: "a", exec: ["sleep", "3600"] }},
                   {{ name: "b", exec: ["sleep", "3600"], health: {{ exec: "true", interval: 1, ttl: 5 }} }},
                   {{ name: "c", exec: ["sleep", "3600"], when: {{ source: "b", once: "healthy" }} }},
                   {{ name: "d", exec: ["sh", "-c", "sleep 3600"] }} ]"#
        ),
    );
    let mut failures = Vec::new();
    // Up to ~1 ms after spawn the signal may land before main() runs; nothing can
    // catch it there, so dying of it (with nothing started) is accepted. From 10 ms
    // on the daemon is parsing its config and must shut down cleanly with 0.
    for (delay_us, strict) in [
        (0u64, false),
        (0, false),
        (200, false),
        (1000, false),
        (10_000, true),
        (20_000, true),
        (50_000, true),
        (100_000, true),
        (300_000, true),
    ] {
        let sweep = Sweep::new("start-term");
        let mark = sweep.0.clone();
        let mut cp = start_marked(&cfg, &mark);
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
        let t = Instant::now();
        cp.signal(SIGTERM);
        let st = cp.wait_exit(10 * SEC);
        let took = t.elapsed();
        std::thread::sleep(200 * MS);
        let left = procs_with_env(MARK, &mark);
        let clean = st.and_then(|s| s.code()) == Some(0)
            || (!strict && st.and_then(|s| s.signal()) == Some(SIGTERM));
        let ok = clean && took < 3 * SEC && left.is_empty();
        eprintln!("sigterm {delay_us} us after spawn: {st:?} in {took:?}, left {left:?}");
        if !ok {
            failures.push(format!(
                "SIGTERM {delay_us} us after spawn: status {st:?} after {took:?}, processes left {left:?}"
            ));
        }
        kill_marked(&mut cp, &mark);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reload_maintenance_and_putenv_from_16_clients_do_not_wedge() {
    let _g = heavy();
    let d = TempDir::new("race");
    let o = d.path("env");
    let m = d.path("maint");
    let (_sweep, mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "keep", exec: ["sleep", "3600"] }},
                      {{ name: "show", exec: ["sh", "-c", "echo \"[$FINAL]\" >> {o}"], when: {{ source: "SIGHUP" }} }},
                      {{ name: "on-enter", exec: ["sh", "-c", "echo enter >> {m}"], when: {{ source: "global", each: "enterMaintenance" }} }},
                      {{ name: "on-exit", exec: ["sh", "-c", "echo exit >> {m}"], when: {{ source: "global", each: "exitMaintenance" }} }} ]"#,
            o = o.display(),
            m = m.display()
        ),
    );
    let pid_of = |name: &str| -> Option<i64> {
        let (_, body) = control(&d.socket(), "GET", "/v3/status", None);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["Jobs"].as_array()?.iter().find(|j| j["Name"] == name)?["Pid"].as_i64()
    };
    let keep = pid_of("keep").expect("keep runs");
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let counts = Arc::new(Mutex::new(0usize));
    let until = Instant::now() + 4 * SEC;
    let mut threads = Vec::new();
    for t in 0..16usize {
        let cfg = cfg.clone();
        let sock = d.socket();
        let failures = failures.clone();
        let counts = counts.clone();
        threads.push(std::thread::spawn(move || {
            let c = cfg.to_str().unwrap_or_default().to_string();
            let mut i = 0usize;
            while Instant::now() < until {
                i += 1;
                let on = if i % 2 == 0 { "enable" } else { "disable" };
                let kv = format!("K{t}={i}");
                let res: Result<(), String> = match t / 4 {
                    // the subcommands, as scripts use them
                    0 => check_run(&["-config", &c, "-reload"]),
                    1 => check_run(&["-config", &c, "-maintenance", on]),
                    2 => check_run(&["-config", &c, "-putenv", &kv]),
                    // raw HTTP, faster, all kinds mixed
                    _ => {
                        let (m, p, b) = match i % 5 {
                            0 => ("POST", "/v3/reload".to_string(), None),
                            1 => ("POST", format!("/v3/maintenance/{on}"), None),
                            2 => (
                                "POST",
                                "/v3/environ".into(),
                                Some(format!("{{\"H{t}\":\"{i}\"}}")),
                            ),
                            3 => ("GET", "/v3/status".into(), None),
                            _ => ("GET", "/v3/ping".into(), None),
                        };
                        match try_control(&sock, m, &p, b.as_deref(), 10 * SEC) {
                            Ok((200, _)) => Ok(()),
                            Ok((code, body)) => Err(format!("{m} {p}: {code} {body}")),
                            Err(e) => Err(format!("{m} {p}: {e}")),
                        }
                    }
                };
                if let Err(e) = res {
                    if let Ok(mut f) = failures.lock() {
                        f.push(e);
                    }
                }
                if let Ok(mut n) = counts.lock() {
                    *n += 1;
                }
            }
        }));
    }
    for t in threads {
        t.join().expect("client thread");
    }
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    let total = counts.lock().map(|n| *n).unwrap_or(0);
    eprintln!("race: {total} control operations from 16 clients");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 100, "only {total} operations");
    // consistent afterwards: same job, same pid; maintenance and env as last set
    assert!(ping_ok(&d.socket()));
    assert_eq!(
        pid_of("keep"),
        Some(keep),
        "reloads disturbed an unchanged job"
    );
    let (_, body) = control(&d.socket(), "GET", "/v3/status", None);
    let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
    let names: Vec<&str> = v["Jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["Name"].as_str())
        .collect();
    assert_eq!(names, ["keep", "show", "on-enter", "on-exit"]);
    let s = d.socket();
    control(&s, "POST", "/v3/maintenance/disable", None);
    assert_eq!(
        control(&s, "POST", "/v3/maintenance/enable", None),
        (200, "{\"updated\":true}".into())
    );
    assert_eq!(
        control(&s, "POST", "/v3/maintenance/enable", None),
        (200, "{\"updated\":false}".into())
    );
    assert_eq!(
        control(&s, "POST", "/v3/environ", Some(r#"{"FINAL":"done"}"#)).0,
        200
    );
    std::thread::sleep(300 * MS); // let a run triggered by the race finish first
    let before = d.read("env").lines().count();
    cp.signal(SIGHUP);
    assert!(
        wait_until(5 * SEC, || d.read("env").lines().count() > before),
        "{}",
        cp.log()
    );
    assert_eq!(d.read("env").lines().last(), Some("[done]"));
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(took < 3 * SEC, "{took:?}");
}

fn check_run(args: &[&str]) -> Result<(), String> {
    let (code, out, err) = run(args, &[]);
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{args:?}: exit {code}: {out}{err}"))
    }
}

/// Observed and asserted: the daemon does not notice that its socket file is gone.
/// Jobs and timers are unaffected, connections accepted before keep working (also
/// for a reload), new clients get "no such file", and nothing recreates the file
/// while the path in the config is unchanged (a reload keeps the listener). SIGTERM
/// still shuts down cleanly.
#[test]
fn control_socket_deleted_under_the_daemon() {
    let d = TempDir::new("sock-gone");
    let o = d.path("ticks");
    let (_sweep, mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "tick", exec: ["sh", "-c", "echo x >> {o}"], when: {{ interval: "200ms" }} }} ]"#,
            o = o.display()
        ),
    );
    let mut kept = UnixStream::connect(d.socket()).expect("connect");
    kept.set_read_timeout(Some(5 * SEC)).unwrap();
    std::fs::remove_file(d.socket()).expect("delete socket");
    let before = d.read("ticks").lines().count();
    assert!(
        wait_until(5 * SEC, || d.read("ticks").lines().count() >= before + 5),
        "jobs stopped ticking:\n{}",
        cp.log()
    );
    let err = UnixStream::connect(d.socket()).expect_err("no socket file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-ping"], &[]);
    assert_eq!(code, 1, "{err}");
    // the connection accepted before the deletion still works
    let ask = |s: &mut UnixStream, req: &str| -> String {
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let r = ask(&mut kept, "GET /v3/ping HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let r = ask(
        &mut kept,
        "POST /v3/reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    std::thread::sleep(200 * MS);
    assert!(
        !d.socket().exists(),
        "a reload with the same path recreated the socket"
    );
    assert!(cp.child.try_wait().ok().flatten().is_none(), "daemon died");
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    assert!(took < 3 * SEC);
}

#[test]
fn unwritable_log_file_is_a_clear_start_up_error() {
    let d = TempDir::new("log-bad");
    let cfg = config(
        &d,
        r#"logging: { output: "/nonexistent/dir/x.log" }, jobs: [ { name: "app", exec: ["sleep", "30"] } ]"#,
    );
    let mut cp = Daemon::start(&cfg);
    let st = cp.wait_exit(5 * SEC).expect("exits at once");
    assert_eq!(st.code(), Some(1));
    let log = cp.log();
    assert_eq!(
        log.trim_end(),
        "containerpilot: Error initializing log file '/nonexistent/dir/x.log': No such file or directory (os error 2)"
    );
    assert!(!d.socket().exists());
}

/// A 64 KiB tmpfs, unmounted on drop (lazily: the daemon may still hold a file).
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(dir: PathBuf) -> Option<TinyFs> {
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k"])
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(TinyFs(dir))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Start a chatty daemon logging to a file on a 64 KiB filesystem and wait until
/// the filesystem is full.
fn full_disk_daemon(d: &TempDir) -> Option<(TinyFs, Sweep, Daemon, PathBuf)> {
    let fs = TinyFs::mount(d.path("tiny"))?;
    let log = fs.0.join("cp.log");
    let (sweep, cp, _) = start(
        d,
        &format!(
            r#"logging: {{ output: {:?} }},
               jobs: [ {{ name: "chatter", exec: ["sh", "-c", "while :; do echo chatter-line-padded-to-some-length-xxxxxxxxxxxxxxxx; sleep 0.005; done"] }} ]"#,
            log.display().to_string()
        ),
    );
    let full = wait_until(20 * SEC, || {
        let a = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        std::thread::sleep(300 * MS);
        let b = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        a > 32 * 1024 && a == b
    });
    assert!(full, "log file never filled the filesystem");
    Some((fs, sweep, cp, log))
}

#[test]
fn full_disk_for_the_log_file_keeps_the_daemon_serving() {
    let d = TempDir::new("log-full");
    let Some((fs, _sweep, mut cp, log)) = full_disk_daemon(&d) else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    for _ in 0..5 {
        let t = Instant::now();
        assert!(ping_ok(&d.socket()), "no ping with a full disk");
        assert!(t.elapsed() < SEC);
        std::thread::sleep(200 * MS);
    }
    assert!(cp.child.try_wait().ok().flatten().is_none(), "daemon died");
    // space comes back: logging resumes (the file is opened for appending)
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    assert!(
        wait_until(5 * SEC, || std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains("chatter-line"))),
        "logging did not resume once space was free"
    );
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    drop(fs);
}

// FAILS until: logging::emit_fields reports a failed write once (issue 10 item 3,
// "says so once"); today `let _ = f.write_all(..)` drops the error silently.
#[test]
fn full_disk_for_the_log_file_is_reported_once() {
    let d = TempDir::new("log-full-once");
    let Some((fs, _sweep, mut cp, _log)) = full_disk_daemon(&d) else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    std::thread::sleep(2 * SEC); // hundreds of failed writes
    let out = cp.log();
    let (st, _) = cp.stop();
    drop(fs);
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    let reports = out
        .lines()
        .filter(|l| l.contains("No space left on device"))
        .count();
    assert_eq!(reports, 1, "stderr/stdout of the daemon:\n{out}");
}

// ---------------------------------------------------------------- hostile clients

/// True once the server closed the connection (EOF or reset); never blocks.
fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// 500 idle connections on a table of 256: each one beyond the table takes the
/// slot of the longest-idle connection, a real client is served at once (issue 14
/// point 2; tests/hostile.rs measures the latency under a full siege), and the
/// ones left are dropped by the 10 s idle timeout.
#[test]
fn five_hundred_idle_connections_never_delay_a_new_client_and_are_dropped() {
    let d = TempDir::new("idle500");
    let port = free_port();
    let (_sweep, mut cp, _) = start(
        &d,
        &format!(
            r#"telemetry: {{ port: {port}, interfaces: ["lo"] }}, jobs: [ {{ name: "app", exec: ["sleep", "3600"] }} ]"#
        ),
    );
    let pid = cp.pid();
    let rss0 = rss_kb(pid).expect("rss");
    let t0 = Instant::now();
    let mut idle: Vec<(UnixStream, Option<Duration>)> = (0..500)
        .map(|_| {
            let s = UnixStream::connect(d.socket()).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            (s, None)
        })
        .collect();
    std::thread::sleep(SEC);
    // a real client does not wait behind them, on either listener
    let t = Instant::now();
    assert!(ping_ok(&d.socket()));
    let waited = t.elapsed();
    let t = Instant::now();
    let (code, _) = http(&format!("127.0.0.1:{port}"), "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(t.elapsed() < SEC, "telemetry took {:?}", t.elapsed());
    let rss_full = rss_kb(pid).expect("rss");
    let fds = fd_count(pid).expect("fds");
    while t0.elapsed() < 25 * SEC && idle.iter().any(|(_, c)| c.is_none()) {
        for (s, c) in idle.iter_mut().filter(|(_, c)| c.is_none()) {
            if closed(s) {
                *c = Some(t0.elapsed());
            }
        }
        std::thread::sleep(100 * MS);
    }
    let times: Vec<Duration> = idle.iter().filter_map(|(_, c)| *c).collect();
    let evicted = times.iter().filter(|t| **t < 5 * SEC).count();
    let timed_out = times
        .iter()
        .filter(|t| **t > 9 * SEC && **t < 13 * SEC)
        .count();
    eprintln!(
        "500 idle: ping waited {waited:?}; {} dropped ({evicted} evicted at once, {timed_out} \
         by the idle timeout, last at {:?}); fds while full {fds}; rss {rss0} -> {rss_full} KiB",
        times.len(),
        times.iter().max()
    );
    assert!(waited < SEC, "a new client waited {waited:?}");
    assert_eq!(times.len(), 500, "some idle connections were never dropped");
    // 244 over the table, plus one for the ping
    assert!(
        (244..=246).contains(&evicted),
        "{evicted} evicted before the idle timeout"
    );
    assert_eq!(evicted + timed_out, 500, "drop times {times:?}");
    assert!(fds < 256 + 64, "{fds} fds: more than 256 clients accepted");
    assert!(rss_full < rss0 + 16 * 1024, "RSS {rss0} -> {rss_full} KiB");
    assert!(ping_ok(&d.socket()));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

/// SPEC §4 says "a client that sends nothing for 10 s is dropped"; a slowloris
/// sends a byte every 500 ms and is never silent that long. The server counts idle
/// time from the last completed exchange (accept, request, response), not from the
/// last byte, so it drops the slowloris 10 s after it connected, which is what
/// issue 10 asks for ("drops them after the idle timeout").
#[test]
fn slowloris_headers_are_dropped_after_the_idle_timeout() {
    let d = TempDir::new("slowloris");
    let (_sweep, mut cp, _) = start(&d, r#"jobs: [ { name: "app", exec: ["sleep", "3600"] } ]"#);
    let mut slow: Vec<UnixStream> = (0..10)
        .map(|_| {
            let mut s = UnixStream::connect(d.socket()).expect("connect");
            s.write_all(b"GET /v3/ping HTTP/1.1\r\nX-Slow: ").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    let mut dropped_at = vec![None; slow.len()];
    let mut sent = 0;
    while t0.elapsed() < 15 * SEC && dropped_at.iter().any(|d| d.is_none()) {
        for (i, s) in slow.iter_mut().enumerate() {
            if dropped_at[i].is_some() {
                continue;
            }
            if s.write_all(b"a").is_err() || closed(s) {
                dropped_at[i] = Some(t0.elapsed());
            }
        }
        sent += 1;
        // others are served meanwhile
        let t = Instant::now();
        assert!(ping_ok(&d.socket()));
        assert!(t.elapsed() < SEC);
        std::thread::sleep(500 * MS);
    }
    eprintln!("slowloris: {sent} bytes each; dropped at {dropped_at:?}");
    for at in &dropped_at {
        let at = at.expect("a slowloris was never dropped");
        assert!(at > 9 * SEC && at < 12 * SEC, "dropped after {at:?}");
    }
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

// FAILS until: a connection whose input buffer is full while its output cannot be
// written stops being treated as "paused" and "progressing" (see report,
// runtime/server.rs `Server::serve`): today the loop spins at 100 % CPU on it with a
// zero poll timeout and resets its idle clock on every empty write, so it is never
// dropped.
#[test]
fn a_client_that_never_reads_is_bounded_and_dropped() {
    let _g = heavy();
    let d = TempDir::new("noread");
    let (_sweep, mut cp, _) = start(
        &d,
        r#"jobs: [ { name: "app", exec: ["sleep", "3600"] }, { name: "b", exec: ["sleep", "3600"] } ]"#,
    );
    let pid = cp.pid();
    let rss0 = rss_kb(pid).expect("rss");
    let s = UnixStream::connect(d.socket()).expect("connect");
    let last_write = Arc::new(Mutex::new(Instant::now()));
    let writer = {
        let mut s = s.try_clone().expect("clone");
        let last_write = last_write.clone();
        std::thread::spawn(move || {
            let req = b"GET /v3/status HTTP/1.1\r\n\r\n".repeat(64);
            let mut total = 0usize;
            let _ = s.set_write_timeout(Some(30 * SEC));
            while s.write_all(&req).is_ok() {
                total += req.len();
                if let Ok(mut t) = last_write.lock() {
                    *t = Instant::now();
                }
            }
            (total, Instant::now())
        })
    };
    // wait until the client is stuck: nothing written for a second
    assert!(wait_until(10 * SEC, || last_write
        .lock()
        .map(|t| t.elapsed() > SEC)
        .unwrap_or(false)));
    let stuck_at = *last_write.lock().unwrap();
    // others are served
    let t = Instant::now();
    assert!(ping_ok(&d.socket()));
    let ping = t.elapsed();
    let c0 = cpu_ticks(pid).expect("stat");
    let t = Instant::now();
    std::thread::sleep(3 * SEC);
    let cpu = (cpu_ticks(pid).expect("stat") - c0) as f64
        / ticks_per_sec() as f64
        / t.elapsed().as_secs_f64()
        * 100.0;
    let rss = rss_kb(pid).expect("rss");
    // the server gives up on it after the idle timeout: the blocked write fails
    let done = wait_until(15 * SEC, || writer.is_finished());
    let dropped_after = if done {
        let (total, at) = writer.join().expect("writer");
        eprintln!("no-read client wrote {total} bytes");
        Some(at.duration_since(stuck_at))
    } else {
        let _ = s.shutdown(std::net::Shutdown::Both);
        None
    };
    eprintln!(
        "no-read client: ping {ping:?}; daemon cpu {cpu:.0}% while it was stuck; \
         rss {rss0} -> {rss} KiB; dropped {dropped_after:?} after its last write"
    );
    assert!(ping < SEC, "ping took {ping:?}");
    assert!(rss < rss0 + 16 * 1024, "RSS {rss0} -> {rss} KiB");
    assert!(
        cpu < 20.0,
        "daemon used {cpu:.0}% of a core on a stuck client"
    );
    let after = dropped_after.expect("the stuck client was never dropped");
    assert!(
        after < 13 * SEC,
        "dropped only {after:?} after its last write"
    );
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}
