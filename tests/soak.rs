//! Soak (issue 10, item 2): a busy daemon for `SOAK_SECONDS` (default 60, the CI
//! smoke run; `make soak` runs an hour) while its RSS, open fds, threads and zombie
//! children are sampled every second. Fails if fds or threads drift, if a zombie
//! survives from one sample to the next, or if RSS keeps growing over the second
//! half. Prints a summary of the samples.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn soak_seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| *s >= 20)
        .unwrap_or(60)
}

struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: usize,
    threads: u64,
    zombies: Vec<i32>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn note(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn get(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn config_text(sock: &str, port: u16, runs: &str, flip: u64) -> String {
    let mut jobs: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{ name: "svc-{i}", exec: ["sleep", "100000"], health: {{ exec: "true", interval: 1, ttl: 5 }} }}"#
            )
        })
        .collect();
    jobs.push(format!(
        r#"{{ name: "tick", exec: ["sh", "-c", "echo x >> {runs}"], when: {{ interval: "100ms" }} }}"#
    ));
    // exits at once: restarted with the growing delay (SPEC §2.14)
    jobs.push(r#"{ name: "crash", exec: ["sh", "-c", "exit 1"], restarts: "unlimited" }"#.into());
    // lives a second: restarted at once, forever
    jobs.push(
        r#"{ name: "crash-slow", exec: ["sh", "-c", "sleep 1; exit 1"], restarts: "unlimited" }"#
            .into(),
    );
    // changes on every reload, so each reload stops one job and starts its new version
    jobs.push(format!(
        r#"{{ name: "flip", exec: ["sh", "-c", "sleep 100000; : {}"] }}"#,
        flip % 2
    ));
    format!(
        r#"{{
          control: {{ socket: {sock:?} }},
          stopTimeout: 2,
          telemetry: {{
            port: {port},
            interfaces: ["lo"],
            metrics: [
              {{ namespace: "soak", name: "hits", help: "control hits", type: "counter" }},
              {{ namespace: "soak", name: "level", help: "a gauge", type: "gauge" }},
            ],
          }},
          jobs: [ {} ],
        }}"#,
        jobs.join(",\n")
    )
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

#[test]
fn soak() {
    let secs = soak_seconds();
    let d = TempDir::new("soak");
    let port = free_port();
    let sock = d.socket();
    let sock_s = sock.display().to_string();
    let runs = d.path("tick-runs").display().to_string();
    let cfg = d.write("cp.json5", &config_text(&sock_s, port, &runs, 0));
    let sweep = Sweep::new("soak");
    let mut cp = Daemon::start_with(
        std::process::Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .env(MARK_VAR, &sweep.0),
    );
    wait_ready(&sock);
    let pid = cp.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(Counts::default());
    let ops = Arc::new(Counts::default());
    let reloads = Arc::new(Counts::default());
    let mut workers = Vec::new();

    // telemetry scraped every 100 ms
    {
        let (stop, scrapes) = (stop.clone(), scrapes.clone());
        workers.push(std::thread::spawn(move || {
            let addr = format!("127.0.0.1:{port}");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = if i % 10 == 0 { "/status" } else { "/metrics" };
                let ok = std::net::TcpStream::connect(&addr)
                    .ok()
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(10 * SEC)).ok()?;
                        containerpilot::http::request(&mut s, "GET", path, None).ok()
                    })
                    .is_some_and(|r| r.status == 200);
                scrapes.note(ok);
                std::thread::sleep(100 * MS);
            }
        }));
    }
    // control clients: putenv, putmetric, ping in a loop
    for c in 0..2 {
        let (stop, ops, sock) = (stop.clone(), ops.clone(), sock.clone());
        workers.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let env = format!("{{\"SOAK_{c}\":\"{i}\"}}");
                let metric = format!("{{\"soak_hits\": 1, \"soak_level\": {}}}", i % 100);
                for (m, p, b) in [
                    ("POST", "/v3/environ", Some(env.as_str())),
                    ("POST", "/v3/metric", Some(metric.as_str())),
                    ("GET", "/v3/ping", None),
                ] {
                    let ok = try_control(&sock, m, p, b, 10 * SEC).is_ok_and(|(c, _)| c == 200);
                    ops.note(ok);
                }
                std::thread::sleep(20 * MS);
            }
        }));
    }
    // a reload every 5 s
    {
        let (stop, reloads, sock, cfg) = (stop.clone(), reloads.clone(), sock.clone(), cfg.clone());
        let (sock_s, runs) = (sock_s.clone(), runs.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let mut next = Instant::now() + 5 * SEC;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(100 * MS);
                    continue;
                }
                next += 5 * SEC;
                n += 1;
                let text = config_text(&sock_s, port, &runs, n);
                let tmp = cfg.with_extension("tmp");
                let ok = std::fs::write(&tmp, text).is_ok()
                    && std::fs::rename(&tmp, &cfg).is_ok()
                    && try_control(&sock, "POST", "/v3/reload", None, 10 * SEC)
                        .is_ok_and(|(c, _)| c == 200);
                reloads.note(ok);
            }
        }));
    }

    // sample every second
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid).unwrap_or(0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut died = false;
    for k in 1..=secs {
        let due = t0 + k as u32 * SEC;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (Some(rss_kb), Some(fds), Some(threads)) =
            (rss_kb(pid), fd_count(pid), thread_count(pid))
        else {
            died = true;
            break;
        };
        samples.push(Sample {
            at: t0.elapsed(),
            rss_kb,
            fds,
            threads,
            zombies: zombie_children(pid),
        });
    }
    let cpu_ticks_used = cpu_ticks(pid).unwrap_or(c0) - c0;
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    assert!(!died, "daemon died during the soak:\n{}", cp.log());

    // --- analysis
    let n = samples.len();
    let warm = (n / 10).max(5).min(n.saturating_sub(2));
    let steady = &samples[warm..];
    let third = (steady.len() / 3).max(1);
    let early_fd_floor = steady[..third].iter().map(|s| s.fds).min().unwrap_or(0);
    let late_fd_floor = steady[steady.len() - third..]
        .iter()
        .map(|s| s.fds)
        .min()
        .unwrap_or(0);
    let fd_min = steady.iter().map(|s| s.fds).min().unwrap_or(0);
    let fd_max = steady.iter().map(|s| s.fds).max().unwrap_or(0);
    let threads: std::collections::BTreeSet<u64> = samples.iter().map(|s| s.threads).collect();
    let mut stale_zombies = Vec::new();
    for w in samples.windows(2) {
        for z in &w[1].zombies {
            if w[0].zombies.contains(z) {
                stale_zombies.push((*z, w[1].at));
            }
        }
    }
    let zombie_max = samples.iter().map(|s| s.zombies.len()).max().unwrap_or(0);
    let zombie_seen = samples.iter().map(|s| s.zombies.len()).sum::<usize>();
    let half = &samples[n / 2..];
    let pts: Vec<(f64, f64)> = half
        .iter()
        .map(|s| (s.at.as_secs_f64() / 60.0, s.rss_kb as f64))
        .collect();
    let rss_slope = slope(&pts);
    let half_minutes = (half.last().map(|s| s.at).unwrap_or_default()
        - half.first().map(|s| s.at).unwrap_or_default())
    .as_secs_f64()
        / 60.0;
    // A short run cannot tell a 50 KB/min leak from allocator noise, so it allows
    // 256 KiB over the window; an hour-long run holds to 50 KB/min.
    let slope_bound = (256.0 / half_minutes.max(0.1)).max(50.0);
    let rss_first = samples.first().map(|s| s.rss_kb).unwrap_or(0);
    let rss_last = samples.last().map(|s| s.rss_kb).unwrap_or(0);
    let rss_min = samples.iter().map(|s| s.rss_kb).min().unwrap_or(0);
    let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let tick_runs = std::fs::read_to_string(&runs)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let log = cp.log();
    let crash_exits = log.matches("crash exited with error").count();
    let crash_slow_exits = log.matches("crash-slow exited with error").count();
    let (scr_ok, scr_bad) = scrapes.get();
    let (ops_ok, ops_bad) = ops.get();
    let (rel_ok, rel_bad) = reloads.get();
    let cpu = cpu_ticks_used as f64 / 100.0 / elapsed.as_secs_f64() * 100.0;
    let ping = try_control(&sock, "GET", "/v3/ping", None, 5 * SEC);

    eprintln!("soak summary ({secs} s requested, {n} samples, warm-up {warm} s):");
    eprintln!(
        "  rss KiB: first {rss_first} min {rss_min} max {rss_max} last {rss_last}; \
         slope over the second half {rss_slope:.1} KiB/min (bound {slope_bound:.0})"
    );
    eprintln!(
        "  fds: steady min {fd_min} max {fd_max}; floor early {early_fd_floor} late {late_fd_floor}"
    );
    eprintln!("  threads: {threads:?}");
    eprintln!(
        "  zombies: max {zombie_max} in one sample, {zombie_seen} sightings in all, \
         {} survived a second",
        stale_zombies.len()
    );
    eprintln!(
        "  load: {tick_runs} interval runs, crash exits {crash_exits} (+{crash_slow_exits} slow), \
         scrapes {scr_ok} ok/{scr_bad} failed, control ops {ops_ok} ok/{ops_bad} failed, \
         reloads {rel_ok} ok/{rel_bad} failed; daemon cpu {cpu:.1}% of a core"
    );

    assert!(
        ping.as_ref().is_ok_and(|(c, _)| *c == 200),
        "no ping at the end: {ping:?}"
    );
    assert_eq!(threads.len(), 1, "thread count changed: {threads:?}");
    assert!(
        late_fd_floor <= early_fd_floor + 2,
        "open fds creep: resting level {early_fd_floor} -> {late_fd_floor}"
    );
    assert!(
        fd_max <= fd_min + 96,
        "open fds spread {fd_min}..{fd_max} (20 checks and a few jobs at once need < 96)"
    );
    assert!(
        stale_zombies.is_empty(),
        "zombies older than one sample: {stale_zombies:?}"
    );
    assert!(
        rss_slope <= slope_bound,
        "RSS grows {rss_slope:.1} KiB/min over the second half (bound {slope_bound:.0})"
    );
    assert_eq!(scr_bad, 0, "telemetry scrapes failed");
    assert_eq!(ops_bad, 0, "control operations failed");
    assert_eq!(rel_bad, 0, "reloads failed:\n{log}");
    assert!(
        tick_runs as u64 >= secs * 10 / 2,
        "interval job ran {tick_runs} times in {secs} s"
    );
    assert!(crash_slow_exits as u64 >= secs / 3, "crash loop stalled");
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    assert!(took < 5 * SEC, "stop took {took:?}");
}
