//! The watch rows of `make bench`, each beside what ContainerPilot 3.8's
//! polling costs. 3.8 is emulated with the same binary against a Consul double
//! that does not hold blocking queries (`set_holding(false)`): every query is
//! then answered at once, so the daemon queries once per `interval`, which is
//! exactly 3.8's plain polling.
//!
//! - catalog requests per idle watch per hour: 10 idle watches at `interval:
//!   5`, requests counted over at least 330 s after a 20 s warm-up (longer than
//!   one full blocking wait, jitter included), scaled to an hour;
//! - catalog change → dependent job started: 10 watches at `interval: 10`, each
//!   with a job `when: {source: "watch.wN", each: "changed"}` that writes its
//!   CLOCK_REALTIME start; 5 rounds of changing all 10 services at once, 50
//!   samples. With blocking queries a round starts once each watch's query is
//!   open (the steady state); with polling, the rounds start 1, 3, 5, 7 and 9 s
//!   after the poll that saw the previous change (the phase a change at a random
//!   time would have).
#![allow(dead_code)]

use super::common::consul_double::ConsulDouble;
use super::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WATCHES: usize = 10;
const WARM_UP: Duration = Duration::from_secs(20);
const IDLE_WINDOW: Duration = Duration::from_secs(330);
const ROUNDS: usize = 5;

/// A daemon killed on drop.
struct Cp(Child);

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &TempDir, name: &str, consul: &ConsulDouble, body: &str) -> Cp {
    let sock = dir.path(&format!("{name}.sock"));
    let cfg = dir.write(
        &format!("{name}.json5"),
        &format!(
            "{{ consul: {:?}, control: {{ socket: {:?} }}, {body} }}",
            consul.addr(),
            sock.display().to_string()
        ),
    );
    let child = Command::new(bin())
        .arg("-config")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start containerpilot");
    Cp(child)
}

fn watches(interval: u64) -> Vec<String> {
    (0..WATCHES)
        .map(|i| format!(r#"{{ name: "w{i}", interval: {interval} }}"#))
        .collect()
}

fn upstream(i: usize, port: u16) -> serde_json::Value {
    serde_json::json!({
        "ID": format!("w{i}-1"), "Name": format!("w{i}"), "Address": "10.0.0.1", "Port": port,
        "Check": { "TTL": "3600s", "Status": "passing" }
    })
}

/// One double per mode, with one instance per watched service.
fn double(holding: bool) -> ConsulDouble {
    let d = ConsulDouble::start();
    d.set_holding(holding);
    for i in 0..WATCHES {
        d.register(upstream(i, 1000));
    }
    d
}

/// Idle watches of both kinds, running in the background while other rows
/// are measured.
pub struct IdleWatches {
    dir: TempDir,
    blocking: (ConsulDouble, Cp),
    polling: (ConsulDouble, Cp),
    started: Instant,
    /// Requests each double had seen at the end of the warm-up.
    base: Option<(Instant, usize, usize)>,
}

fn health_requests(d: &ConsulDouble) -> usize {
    d.count_requests("/v1/health/service/")
}

impl IdleWatches {
    pub fn start() -> IdleWatches {
        let dir = TempDir::new("bench-idle-watches");
        let body = format!("watches: [ {} ]", watches(5).join(", "));
        let b = double(true);
        let bcp = spawn(&dir, "blocking", &b, &body);
        let p = double(false);
        let pcp = spawn(&dir, "polling", &p, &body);
        IdleWatches {
            dir,
            blocking: (b, bcp),
            polling: (p, pcp),
            started: Instant::now(),
            base: None,
        }
    }

    /// Take the warm-up counts (at least `WARM_UP` after the start).
    fn mark(&mut self) {
        if self.base.is_none() {
            let left = WARM_UP.saturating_sub(self.started.elapsed());
            std::thread::sleep(left);
            self.base = Some((
                Instant::now(),
                health_requests(&self.blocking.0),
                health_requests(&self.polling.0),
            ));
        }
    }

    /// The row: requests per idle watch per hour, blocking beside polling.
    pub fn finish(mut self) -> Vec<String> {
        self.mark();
        let (t0, b0, p0) = self.base.unwrap_or((Instant::now(), 0, 0));
        let left = IDLE_WINDOW.saturating_sub(t0.elapsed());
        std::thread::sleep(left);
        let hours = t0.elapsed().as_secs_f64() / 3600.0;
        let per = |n: usize| n as f64 / WATCHES as f64 / hours;
        let blocking = per(health_requests(&self.blocking.0) - b0);
        let polling = per(health_requests(&self.polling.0) - p0);
        vec![
            format!(
                "catalog requests per idle watch per hour, interval 5 ({WATCHES} watches over {:.0} s)",
                t0.elapsed().as_secs_f64()
            ),
            format!("{blocking:.0} (3.8 polling: {polling:.0})"),
            "n/a".into(),
            "n/a".into(),
            "≤ 60 (3.8: 720)".into(),
        ]
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn read_ns(p: &Path) -> Option<i128> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Latencies (ms) from a catalog change to the dependent job's start.
fn change_to_job(helper: &str, holding: bool) -> Vec<f64> {
    let dir = TempDir::new("bench-watch-latency");
    let consul = double(holding);
    let stamps: Vec<PathBuf> = (0..WATCHES).map(|i| dir.path(&format!("s{i}"))).collect();
    let jobs: Vec<String> = stamps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                r#"{{ name: "on-w{i}", exec: [{helper:?}, "stamp", {:?}], when: {{ source: "watch.w{i}", each: "changed" }} }}"#,
                s.display().to_string()
            )
        })
        .collect();
    let body = format!(
        "watches: [ {} ], jobs: [ {} ]",
        watches(10).join(", "),
        jobs.join(", ")
    );
    let _cp = spawn(&dir, "cp", &consul, &body);
    // The first answers announce every instance: wait for those runs.
    if !wait_until(15 * Duration::from_secs(1), || {
        stamps.iter().all(|s| read_ns(s).is_some())
    }) {
        return Vec::new();
    }
    let mut lat = Vec::new();
    for round in 0..ROUNDS {
        if holding {
            // Change only under an open blocking query: the steady state.
            let open = |i: usize| {
                consul.count_requests(&format!("/v1/health/service/w{i}?passing=1&index=")) > round
            };
            if !wait_until(Duration::from_secs(25), || (0..WATCHES).all(open)) {
                break;
            }
        } else {
            // Polls come every 10 s from the one that saw the last change: spread
            // the changes over that period, as changes at random times would be.
            let phase = (round as f64 + 0.5) / ROUNDS as f64 * 10.0;
            std::thread::sleep(Duration::from_secs_f64(phase));
        }
        let before: Vec<Option<i128>> = stamps.iter().map(|s| read_ns(s)).collect();
        let t = now_ns();
        for i in 0..WATCHES {
            consul.register(upstream(i, 2000 + round as u16));
        }
        let moved = |i: usize| read_ns(&stamps[i]) != before[i];
        wait_until(Duration::from_secs(15), || (0..WATCHES).all(moved));
        for (i, s) in stamps.iter().enumerate() {
            if let Some(ns) = read_ns(s).filter(|_| moved(i)) {
                lat.push((ns - t) as f64 / 1e6);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms_or_s(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.1} s", x / 1000.0)
    } else {
        format!("{x:.1} ms")
    }
}

/// The row: change → dependent job start, blocking beside polling.
pub fn latency_row(helper: &str) -> Vec<String> {
    let b = change_to_job(helper, true);
    let p = change_to_job(helper, false);
    vec![
        format!(
            "catalog change to dependent job start, interval 10 (p50 / p99 of {})",
            b.len()
        ),
        format!(
            "{} / {} (3.8 polling, {} samples: {} / {})",
            ms_or_s(pct(&b, 50.0)),
            ms_or_s(pct(&b, 99.0)),
            p.len(),
            ms_or_s(pct(&p, 50.0)),
            ms_or_s(pct(&p, 99.0))
        ),
        "n/a".into(),
        "n/a".into(),
        "p99 ≤ 50 ms".into(),
    ]
}
