//! `make bench`: one markdown table of what the daemon costs, with tini and
//! dumb-init side by side where they are installed. Ignored in the normal test run:
//! `cargo test --release --test bench -- --ignored --nocapture --test-threads=1`.
//!
//! The daemon measured is the shipped static musl build (`ns::musl_bin`).
//! Every job is the static helper from tests/fixtures/cp_helper.c, so the figures
//! are the daemon's and not a shell's. Timestamps taken by jobs use CLOCK_REALTIME,
//! compared with the test's own clock. Each measurement has a time bound.

mod common;
mod ns;
mod watchbench;
use common::*;
use ns::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SEC: Duration = Duration::from_secs(1);
const IDLE_SECS: u64 = 30;
const ORPHANS: usize = 10_000;

/// A process killed and waited for on drop, whatever happens to the test.
struct Guard(Child);

impl Guard {
    fn spawn(cmd: &mut Command) -> Guard {
        let c = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Guard(c)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Wait for exit, at most `limit`; the exit code if it exited.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An init to compare with: how to put a command under it.
struct Peer {
    name: String,
    bin: PathBuf,
    /// Arguments between the init and the command.
    args: Vec<&'static str>,
}

impl Peer {
    fn command(&self, job: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(&self.args).args(job);
        c
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.split_whitespace()
                .last()
                .unwrap_or("")
                .trim_start_matches('v')
                .to_string()
        })
        .unwrap_or_default()
}

/// tini (its static build when the package ships one, as a scratch image would
/// use) and dumb-init, when installed. `-s`: tini as a subreaper outside PID 1.
fn peers() -> (Option<Peer>, Option<Peer>) {
    let tini = which("tini-static")
        .or_else(|| which("tini"))
        .map(|bin| Peer {
            name: format!("tini {}", version(&bin)),
            bin,
            args: vec!["-s", "--"],
        });
    let dumb = which("dumb-init").map(|bin| Peer {
        name: format!("dumb-init {}", version(&bin)),
        bin,
        args: vec![],
    });
    (tini, dumb)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn read_ns(path: &Path) -> Option<i128> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Times the scheduler ran the process, over all its threads: the third field of
/// schedstat (the second is run-queue wait time in ns).
fn runs_all_threads(pid: i32) -> u64 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn ms(x: f64) -> String {
    format!("{x:.2} ms")
}

fn kb(kb: Option<u64>) -> String {
    kb.map(|k| format!("{k} kB")).unwrap_or_else(|| "?".into())
}

/// The test's config files, all in one temp dir.
struct Bench {
    dir: TempDir,
    helper: PathBuf,
    n: usize,
}

impl Bench {
    fn config(&mut self, body: &str) -> PathBuf {
        self.n += 1;
        let sock = self.dir.path(&format!("cp{}.sock", self.n));
        self.dir.write(
            &format!("cp{}.json5", self.n),
            &format!(
                "{{ control: {{ socket: {:?} }}, {body} }}",
                sock.display().to_string()
            ),
        )
    }

    fn sleepers(&mut self, n: usize, extra: &str) -> PathBuf {
        let jobs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{ name: "sleeper{i}", exec: [{:?}, "sleep", "600"] }}"#,
                    self.helper.display().to_string()
                )
            })
            .collect();
        self.config(&format!("{extra} jobs: [{}]", jobs.join(", ")))
    }

    fn h(&self) -> String {
        self.helper.display().to_string()
    }
}

fn cp_command(cfg: &Path) -> Command {
    let mut c = Command::new(musl_bin());
    c.arg("-config").arg(cfg);
    c
}

/// Time from spawning the init to the first job's own timestamp, p50 of `runs`.
fn startup(mut cmd: impl FnMut(&Path) -> Command, stamp: &Path, runs: usize) -> f64 {
    let mut v = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(stamp);
        let t0 = now_ns();
        let mut g = Guard::spawn(&mut cmd(stamp));
        g.wait(5 * SEC);
        if let Some(t1) = read_ns(stamp) {
            v.push((t1 - t0) as f64 / 1e6);
        }
    }
    percentile(&sorted(v), 50.0)
}

/// SIGTERM to exit when the jobs exit on SIGTERM: (p50, max) over `runs`, in ms.
fn sigterm_to_exit(mut cmd: impl FnMut() -> Command, jobs: usize, runs: usize) -> (f64, f64) {
    let mut v = Vec::new();
    for _ in 0..runs {
        let mut g = Guard::spawn(&mut cmd());
        let pid = g.pid();
        if !wait_until(5 * SEC, || children(pid).len() >= jobs) {
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        kill(pid, SIGTERM);
        // Blocking wait: its return is the exit, with no polling interval added.
        if g.0.wait().is_ok() {
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let s = sorted(v);
    (percentile(&s, 50.0), s.last().copied().unwrap_or(f64::NAN))
}

/// Orphans reaped per second as PID 1 (median of `runs`), or why not. `argv` is
/// the init's command line, given the helper's result file.
fn reaping(argv: impl Fn(&Path) -> Vec<String>, result: &Path, runs: usize) -> String {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(result);
        let mut g = Guard::spawn(
            Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .args(argv(result)),
        );
        g.wait(90 * SEC);
        let text = std::fs::read_to_string(result).unwrap_or_default();
        let mut f = text.split_whitespace();
        match (
            f.next().and_then(|n| n.parse::<f64>().ok()),
            f.next().and_then(|t| t.parse::<f64>().ok()),
        ) {
            (Some(n), Some(ns)) if ns > 0.0 => rates.push(n / (ns / 1e9)),
            _ => return format!("failed: {:?}", text.trim()),
        }
    }
    let r = percentile(&sorted(rates), 50.0);
    format!("{r:.0} /s, none left")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("on {date} ({cpu}, {cores} cores, Linux {})", kernel.trim())
}

/// A tiny HTTP/1.1 server for native checks: answers every request with 200
/// and keeps the connection, a thread per connection (as most servers keep
/// connections alive, the daemon's probes reuse them).
fn health_endpoint() -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut seen = Vec::new();
                loop {
                    while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..i + 4);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// CPU time of all the process's threads, in ns (schedstat: exact, unlike
/// tick-sampled utime/stime).
fn cpu_ns(pid: i32) -> u64 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// 100 advertised jobs with 1 s checks heartbeating to the Consul double: the
/// daemon's CPU over 10 s and its RSS, with `health.exec` and with `health.http`.
fn check_rows(b: &Bench) -> Vec<Vec<String>> {
    let endpoint = health_endpoint();
    let mut rows = Vec::new();
    for (kind, check) in [
        ("exec", r#"exec: "true""#.to_string()),
        ("native HTTP", format!("http: \"http://{endpoint}/health\"")),
        // No check at all: what the heartbeats alone cost.
        ("no", String::new()),
    ] {
        let check = if check.is_empty() {
            check
        } else {
            format!("{check},")
        };
        let consul = common::consul_double::ConsulDouble::start();
        let sock = b.dir.path(&format!("hb-{}.sock", rows.len()));
        let jobs: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    r#"{{ name: "svc{i}", exec: [{h:?}, "sleep", "600"], port: {p}, interfaces: ["lo"],
                         health: {{ {check} interval: 1, ttl: 5 }} }}"#,
                    h = b.h(),
                    p = 10000 + i
                )
            })
            .collect();
        let cfg = b.dir.write(
            &format!("hb-{}.json5", rows.len()),
            &format!(
                "{{ consul: {:?}, control: {{ socket: {:?} }}, jobs: [ {} ] }}",
                consul.addr(),
                sock.display().to_string(),
                jobs.join(",")
            ),
        );
        let cp = Guard::spawn(&mut cp_command(&cfg));
        wait_until(10 * SEC, || {
            consul.services().as_object().map(|m| m.len()).unwrap_or(0) >= 100
        });
        std::thread::sleep(3 * SEC);
        let pid = cp.pid();
        let t0 = cpu_ns(pid);
        let hb = |c: &common::consul_double::ConsulDouble| {
            c.requests()
                .iter()
                .filter(|(_, p, _)| p.starts_with("/v1/agent/check/update/"))
                .count()
        };
        let h0 = hb(&consul);
        std::thread::sleep(10 * SEC);
        let t1 = cpu_ns(pid);
        let h1 = hb(&consul);
        let rss = rss_kb(pid);
        let goal = if kind == "native HTTP" {
            "≤ 0.5 % CPU"
        } else {
            "—"
        };
        rows.push(vec![
            format!(
                "heartbeats: 100 advertised jobs, 1 s {kind} checks, TTL 5 s (daemon CPU over 10 s, RSS)"
            ),
            format!(
                "{:.2} % CPU, {:.0} heartbeats/s, {}",
                (t1.saturating_sub(t0)) as f64 / 1e9 / 10.0 * 100.0,
                (h1 - h0) as f64 / 10.0,
                kb(rss)
            ),
            "n/a".into(),
            "n/a".into(),
            goal.into(),
        ]);
        drop(cp);
    }
    rows
}

/// Just the check rows, for a quick look:
/// `cargo test --release --test bench checks_only -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn checks_only() {
    let dir = TempDir::new("bench-checks");
    let helper = build_helper(&dir.0);
    let b = Bench { dir, helper, n: 0 };
    for r in check_rows(&b) {
        println!("| {} |", r.join(" | "));
    }
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn performance_table() {
    if let Some(why) = unshare_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = TempDir::new("bench");
    let helper = build_helper(&dir.0);
    // Idle watches count their catalog requests while the other rows run.
    let idle_watches = watchbench::IdleWatches::start();
    let mut b = Bench { dir, helper, n: 0 };
    let h = b.h();
    let (tini, dumb) = peers();
    let peers: Vec<&Peer> = [&tini, &dumb].into_iter().flatten().collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let missing = "not installed".to_string();
    let na = "n/a".to_string();
    let peer_cells = |f: &mut dyn FnMut(&Peer) -> String| -> Vec<String> {
        [&tini, &dumb]
            .iter()
            .map(|p| p.as_ref().map(&mut *f).unwrap_or_else(|| missing.clone()))
            .collect()
    };

    // Binary size.
    let size = |p: &Path| {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let kind = match elf_interpreter(p) {
            Ok(false) => "static",
            Ok(true) => "dynamic",
            Err(_) => "?",
        };
        format!("{len} bytes, {kind}")
    };
    let mut row = vec![
        "binary size (shipped musl build)".to_string(),
        size(&musl_bin()),
    ];
    row.extend(peer_cells(&mut |p: &Peer| size(&p.bin)));
    row.push("≤ 3000000 bytes, static".into());
    rows.push(row);
    eprintln!("size done");

    // Idle: everything at once, so the 30 s are spent once.
    let one = b.sleepers(1, "");
    let port = loopback_port();
    let ten = b.sleepers(
        10,
        &format!(r#"telemetry: {{ port: {port}, interfaces: ["lo"] }},"#),
    );
    let mut idle = vec![
        Guard::spawn(&mut cp_command(&one)),
        Guard::spawn(&mut cp_command(&ten)),
    ];
    for p in &peers {
        idle.push(Guard::spawn(&mut p.command(&[&h, "sleep", "600"])));
    }
    std::thread::sleep(2 * SEC);
    let pids: Vec<i32> = idle.iter().map(|g| g.pid()).collect();
    let rss: Vec<Option<u64>> = pids.iter().map(|&p| rss_kb(p)).collect();
    let before: Vec<(u64, u64)> = pids
        .iter()
        .map(|&p| (cpu_ticks(p).unwrap_or(0), runs_all_threads(p)))
        .collect();
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let after: Vec<(u64, u64)> = pids
        .iter()
        .map(|&p| (cpu_ticks(p).unwrap_or(0), runs_all_threads(p)))
        .collect();
    drop(idle);
    let idle_cell = |i: usize| {
        format!(
            "{} ticks, {:.2} wake-ups/s",
            after[i].0.saturating_sub(before[i].0),
            after[i].1.saturating_sub(before[i].1) as f64 / IDLE_SECS as f64
        )
    };
    // Peer columns in table order, with their index in `pids` when running.
    let mut peer_idx = Vec::new();
    let mut k = 2;
    for p in [&tini, &dumb] {
        peer_idx.push(p.as_ref().map(|_| {
            k += 1;
            k - 1
        }));
    }
    let peer_col = |f: &dyn Fn(usize) -> String| -> Vec<String> {
        peer_idx
            .iter()
            .map(|i| i.map(f).unwrap_or_else(|| missing.clone()))
            .collect()
    };
    let mut row = vec!["idle RSS, 1 job (after 2 s)".to_string(), kb(rss[0])];
    row.extend(peer_col(&|i| kb(rss[i])));
    row.push("≤ 2048 kB".into());
    rows.push(row);
    let mut row = vec!["idle RSS, 10 jobs + telemetry".to_string(), kb(rss[1])];
    row.extend([na.clone(), na.clone()]);
    row.push("≤ 3072 kB".into());
    rows.push(row);
    let mut row = vec![
        format!("idle CPU and wake-ups over {IDLE_SECS} s, 1 job"),
        idle_cell(0),
    ];
    row.extend(peer_col(&idle_cell));
    row.push("0 wake-ups/s".into());
    rows.push(row);
    let row = vec![
        format!("idle CPU and wake-ups over {IDLE_SECS} s, 10 jobs + telemetry"),
        idle_cell(1),
        na.clone(),
        na.clone(),
        "0 wake-ups/s".into(),
    ];
    rows.push(row);
    eprintln!("idle done");

    // Start-up to the first job's exec.
    let stamp = b.dir.path("stamp");
    let st = stamp.display().to_string();
    let cfg = b.config(&format!(
        r#"jobs: [ {{ name: "first", exec: [{h:?}, "stamp", {st:?}] }} ]"#
    ));
    let mut row = vec![
        "start-up to first job exec (p50 of 20)".to_string(),
        ms(startup(|_| cp_command(&cfg), &stamp, 20)),
    ];
    row.extend(peer_cells(&mut |p: &Peer| {
        ms(startup(
            |s| p.command(&[&h, "stamp", &s.display().to_string()]),
            &stamp,
            20,
        ))
    }));
    row.push("—".into());
    rows.push(row);
    eprintln!("startup done");

    // SIGTERM to exit.
    let two = b.sleepers(2, "");
    let (p50, max) = sigterm_to_exit(|| cp_command(&two), 2, 10);
    let mut row = vec![
        "SIGTERM to exit, jobs exit promptly (p50 / max of 10)".to_string(),
        format!("{} / {}", ms(p50), ms(max)),
    ];
    row.extend(peer_cells(&mut |p: &Peer| {
        let (p50, max) = sigterm_to_exit(|| p.command(&[&h, "sleep", "600"]), 1, 10);
        format!("{} / {}", ms(p50), ms(max))
    }));
    row.push("≤ 50 ms".into());
    rows.push(row);
    eprintln!("sigterm done");

    // Child exit to dependent start.
    let (a, bb) = (b.dir.path("a"), b.dir.path("b"));
    let (sa, sb) = (a.display().to_string(), bb.display().to_string());
    let cfg = b.config(&format!(
        r#"jobs: [
          {{ name: "a", exec: [{h:?}, "stamp", {sa:?}] }},
          {{ name: "b", exec: [{h:?}, "stamp", {sb:?}], when: {{ source: "a", once: "exitSuccess" }} }},
        ]"#
    ));
    let mut lat = Vec::new();
    for _ in 0..50 {
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&bb);
        let mut g = Guard::spawn(&mut cp_command(&cfg));
        g.wait(5 * SEC);
        if let (Some(ta), Some(tb)) = (read_ns(&a), read_ns(&bb)) {
            lat.push((tb - ta) as f64 / 1e6);
        }
    }
    let lat = sorted(lat);
    rows.push(vec![
        "child exit to dependent start (p50 / p99 of 50)".into(),
        format!(
            "{} / {}",
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0))
        ),
        na.clone(),
        na.clone(),
        "≤ 1 ms p50".into(),
    ]);
    eprintln!("chain done");

    // Reaping throughput as PID 1.
    let result = b.dir.path("reaped");
    let rs = result.display().to_string();
    let n = ORPHANS.to_string();
    let cfg = b.config(&format!(
        r#"jobs: [ {{ name: "orphans", exec: [{h:?}, "reap", {n:?}, {rs:?}] }} ]"#
    ));
    let mut row = vec![
        "reaping as PID 1, 10 000 orphans (median of 3)".to_string(),
        reaping(
            |_| {
                vec![
                    musl_bin().display().to_string(),
                    "-config".into(),
                    cfg.display().to_string(),
                ]
            },
            &result,
            3,
        ),
    ];
    row.extend(peer_cells(&mut |p: &Peer| {
        let argv = |r: &Path| {
            let mut v = vec![p.bin.display().to_string()];
            // As PID 1 tini needs no -s.
            v.extend(p.args.iter().filter(|a| **a != "-s").map(|a| a.to_string()));
            v.extend([h.clone(), "reap".into(), n.clone(), r.display().to_string()]);
            v
        };
        reaping(argv, &result, 3)
    }));
    row.push("≥ 10 000 /s, none left".into());
    rows.push(row);
    eprintln!("reaping done");

    // Control-plane ping.
    let cfg = b.sleepers(1, "");
    let sock = b.dir.path(&format!("cp{}.sock", b.n));
    let _cp = Guard::spawn(&mut cp_command(&cfg));
    wait_until(5 * SEC, || sock.exists());
    let mut v = Vec::new();
    for i in 0..1050 {
        let t = Instant::now();
        let r = containerpilot::http::request_unix(&sock, "GET", "/v3/ping", None, SEC);
        let us = t.elapsed().as_secs_f64() * 1e6;
        assert!(matches!(&r, Ok(resp) if resp.status == 200), "ping: {r:?}");
        if i >= 50 {
            v.push(us); // the first 50 warm up caches
        }
    }
    let v = sorted(v);
    rows.push(vec![
        "control ping round trip, 1 000 sequential (p50 / p99)".into(),
        format!(
            "{:.0} µs / {:.0} µs",
            percentile(&v, 50.0),
            percentile(&v, 99.0)
        ),
        na.clone(),
        na.clone(),
        "≤ 50 µs p50".into(),
    ]);

    // Heartbeat throughput: 100 advertised jobs with 1 s checks against the
    // Consul double; the daemon's CPU over 10 s, exec checks vs native ones.
    rows.extend(check_rows(&b));
    eprintln!("heartbeats done");

    rows.push(watchbench::latency_row(&h));
    rows.push(idle_watches.finish());
    eprintln!("watches done");

    let names: Vec<String> = [&tini, &dumb]
        .iter()
        .zip(["tini", "dumb-init"])
        .map(|(p, n)| {
            p.as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| n.into())
        })
        .collect();
    println!("\nMeasured {} with `make bench`.\n", machine());
    println!(
        "| measurement | containerpilot {} | {} | {} | target |",
        env!("CARGO_PKG_VERSION"),
        names[0],
        names[1]
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

/// Only the watch rows (`cargo test --release --test bench -- --ignored
/// watch_rows --nocapture`): about 6 minutes.
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn watch_rows() {
    let dir = TempDir::new("bench-watch-rows");
    let helper = ns::build_helper(&dir.0);
    let idle = watchbench::IdleWatches::start();
    let latency = watchbench::latency_row(&helper.display().to_string());
    let idle = idle.finish();
    println!("\nMeasured {} with `make bench`.\n", machine());
    println!(
        "| measurement | containerpilot {} | | | target |",
        env!("CARGO_PKG_VERSION")
    );
    println!("|---|---|---|---|---|");
    for r in [latency, idle] {
        println!("| {} |", r.join(" | "));
    }
}
