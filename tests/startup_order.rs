//! `make startup-order`: regenerates `.cargo/startup-order.ld`, the linker script
//! that puts the code an idle daemon runs next to each other in the musl binary.
//!
//! Why: most of an idle daemon's RSS is the binary's own code pages, and the
//! kernel maps file pages in 64 kB runs around each fault ("fault-around"). With
//! the code that start-up and the steady state touch scattered over the whole
//! text, nearly every 64 kB run ends up resident; gathered in one output section
//! ahead of `.text`, a few runs hold it all. Nothing changes but the layout.
//!
//! How: build the musl release binary with a link map (its own target dir), run it
//! under `valgrind --tool=lackey` through start-up, a job with a health check, an
//! interval job, control requests and a metrics scrape, then map every executed
//! address to its input section. Rust function sections are written with the
//! symbol hash as a wildcard so the file keeps working across edits; musl's
//! objects (one function each, plain `.text`) by archive member. Code added later
//! just lands in `.text`: the file only loses precision until it is regenerated.
//! Needs valgrind. Ignored in the normal test run.

mod common;
mod ns;
use common::*;
use ns::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// One input section of the link map.
struct Section {
    start: u64,
    size: u64,
    name: String,
    file: String,
}

/// Input sections with an address, from a GNU ld map file, sorted by address.
fn parse_map(map: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for line in map.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, rest): (String, &[&str]) = if line.starts_with(" .") {
            if f.len() == 1 {
                pending = Some(f[0].to_string());
                continue;
            }
            (f[0].to_string(), &f[1..])
        } else if let Some(n) = pending.take() {
            (n, &f[..])
        } else {
            continue;
        };
        if rest.len() < 3 {
            continue;
        }
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        if let (Some(start), Some(size)) = (hex(rest[0]), hex(rest[1])) {
            if start != 0 && size != 0 {
                out.push(Section {
                    start,
                    size,
                    name,
                    file: rest[2..].join(" "),
                });
            }
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

/// The linker-script pattern selecting `s`, or None for sections that cannot be
/// told apart (a plain `.text` outside an archive).
fn pattern(s: &Section) -> Option<String> {
    if let Some(rest) = s.name.strip_prefix(".text.") {
        // Legacy Rust mangling ends in `17h<16 hex digits>E`.
        let name = match rest.len().checked_sub(20) {
            Some(i)
                if rest.is_char_boundary(i)
                    && rest[i..].starts_with("17h")
                    && rest.ends_with('E')
                    && rest[i + 3..rest.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit()) =>
            {
                format!("{}17h*E", &rest[..i])
            }
            _ => rest.to_string(),
        };
        return Some(format!("*(.text.{name})"));
    }
    if s.name == ".text" {
        // `/path/libc.a(memcpy.lo)` -> `*libc.a:memcpy.lo(.text)`
        let (archive, member) = s.file.strip_suffix(')')?.split_once('(')?;
        let archive = Path::new(archive).file_name()?.to_str()?;
        return Some(format!("*{archive}:{member}(.text)"));
    }
    None
}

fn cargo_musl_with_map(target_dir: &Path, map: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "rustc",
            "--release",
            "--bin",
            "containerpilot",
            "--target",
            MUSL,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--")
        .arg(format!("-Clink-arg=-Wl,-Map,{}", map.display()))
        .status()
        .expect("run cargo");
    assert!(st.success(), "cargo rustc failed");
    target_dir.join(MUSL).join("release/containerpilot")
}

#[test]
#[ignore = "regenerates .cargo/startup-order.ld: run with `make startup-order`"]
fn regenerate_startup_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("target/startup-order");
    std::fs::create_dir_all(&work).expect("mkdir");
    let map_path = work.join("containerpilot.map");
    let bin = cargo_musl_with_map(&work, &map_path);

    let d = TempDir::new("startup-order");
    let sock = d.socket();
    let port = loopback_port();
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{
  control: {{ socket: {sock:?} }},
  telemetry: {{ port: {port}, interfaces: ["lo"] }},
  jobs: [
    {{ name: "app", exec: ["sleep", "600"], health: {{ exec: ["true"], interval: 1, ttl: 5 }} }},
    {{ name: "tick", exec: ["sh", "-c", "echo tick"], when: {{ interval: "1s" }} }},
  ],
}}"#,
            sock = sock.display().to_string()
        ),
    );
    let log = work.join("lackey.log");
    let mut cp = Daemon::start_with(
        Command::new("valgrind")
            .args(["--tool=lackey", "--trace-mem=yes"])
            .arg(format!("--log-file={}", log.display()))
            .arg(&bin)
            .arg("-config")
            .arg(&cfg)
            .stdin(Stdio::null()),
    );
    assert!(
        wait_until(120 * SEC, || sock.exists()),
        "no control socket under valgrind:\n{}",
        cp.log()
    );
    std::thread::sleep(5 * SEC);
    for _ in 0..3 {
        let _ = control(&sock, "GET", "/v3/ping", None);
        let _ = control(&sock, "GET", "/v3/status", None);
        let _ = control(&sock, "POST", "/v3/environ", Some(r#"{"A":"1"}"#));
        let _ = http_get(port, "/metrics");
        std::thread::sleep(2 * SEC);
    }
    // Valgrind runs the daemon in its own process: SIGTERM is a normal shutdown,
    // after which the trace is complete.
    kill(cp.pid(), SIGTERM);
    cp.wait_exit(120 * SEC).expect("valgrind exits");

    let sections = parse_map(&std::fs::read_to_string(&map_path).expect("read map"));
    let starts: Vec<u64> = sections.iter().map(|s| s.start).collect();
    let trace = std::fs::read_to_string(&log).expect("read lackey log");
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for line in trace.lines() {
        let Some(rest) = line.strip_prefix("I  ") else {
            continue;
        };
        let Some(addr) = rest
            .split(',')
            .next()
            .and_then(|a| u64::from_str_radix(a.trim(), 16).ok())
        else {
            continue;
        };
        let i = starts.partition_point(|&s| s <= addr);
        let Some(s) = i.checked_sub(1).map(|i| &sections[i]) else {
            continue;
        };
        if addr >= s.start + s.size || !seen.insert(i) {
            continue;
        }
        if let Some(p) = pattern(s) {
            if !order.contains(&p) {
                order.push(p);
            }
        }
    }
    assert!(order.len() > 100, "only {} sections traced", order.len());
    let mut out = String::from(
        "/* Generated by `make startup-order` (tests/startup_order.rs): the code an idle\n   \
         daemon runs, gathered ahead of .text so few 64 kB runs of the binary are\n   \
         resident. Order of first execution. Do not edit by hand. */\n\
         SECTIONS\n{\n  .text.startup_hot :\n  {\n",
    );
    for p in &order {
        out.push_str(&format!("    {p}\n"));
    }
    out.push_str("  }\n}\nINSERT BEFORE .text;\n");
    std::fs::write(root.join(".cargo/startup-order.ld"), out).expect("write script");
    eprintln!(
        "{} sections written to .cargo/startup-order.ld",
        order.len()
    );
}
