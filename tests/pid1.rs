//! The daemon as PID 1 of a fresh PID namespace (`unshare --pid --fork
//! --mount-proc`), as in a container: orphans are reaped, `CONTAINERPILOT_PID` is 1,
//! SIGTERM ends everything fast, a stubborn job is killed after `stopTimeout`, and a
//! config error still exits 1. The daemon is the shipped static musl build.
//! Skipped (with the reason) where unshare is missing or not permitted.

mod common;
mod ns;
use common::*;
use ns::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn skip() -> bool {
    match unshare_unavailable() {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

fn config(dir: &TempDir, body: &str) -> PathBuf {
    dir.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, {body} }}",
            dir.socket().display().to_string()
        ),
    )
}

/// Start the daemon as PID 1; `--kill-child` takes the namespace down with the
/// unshare process if a test fails half-way.
fn start_pid1(cfg: &Path) -> (Daemon, i32) {
    let mut cp = unshare_daemon(cfg);
    let pid = daemon_pid(&mut cp);
    (cp, pid)
}

fn unshare_daemon(cfg: &Path) -> Daemon {
    Daemon::start_with(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(musl_bin())
            .arg("-config")
            .arg(cfg),
    )
}

/// SIGTERM to the daemon itself (unshare ignores it); the exit code and how long
/// the daemon took, as seen through unshare, which exits with its child's status.
fn sigterm(cp: &mut Daemon, pid: i32) -> (Option<i32>, Duration) {
    let t = Instant::now();
    kill(pid, SIGTERM);
    let st = cp.wait_exit(15 * SEC);
    (st.and_then(|s| s.code()), t.elapsed())
}

#[test]
fn pid1_reaps_a_thousand_orphans_and_reports_pid_1() {
    if skip() {
        return;
    }
    let d = TempDir::new("pid1-orphans");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "app", exec: ["sleep", "60"] }},
              {{ name: "pid", exec: ["sh", "-c", "echo $CONTAINERPILOT_PID > {p}"] }},
              {{ name: "orphans", exec: ["sh", "-c", "for i in $(seq 1000); do (sleep 0.3 &); done; echo done > {f}"] }},
            ]"#,
            p = d.path("pid").display(),
            f = d.path("done").display()
        ),
    );
    let (mut cp, pid) = start_pid1(&cfg);
    // While the loop runs, the sleeps' parents exit at once, so the daemon must be
    // their parent now: count its children to prove they really were re-parented.
    let mut most = 0;
    let finished = wait_until(60 * SEC, || {
        most = most.max(children(pid).len());
        d.path("done").exists()
    });
    eprintln!("most children of the daemon seen: {most}");
    assert!(finished, "orphan job did not finish; log:\n{}", cp.log());
    assert!(
        most > 10,
        "only {most} children of the daemon seen: orphans not re-parented to PID 1"
    );
    let clean = wait_until(10 * SEC, || {
        zombies_of(pid) == 0 && children(pid).len() == 1
    });
    assert!(
        clean,
        "{} zombies and {} children left under the daemon; log:\n{}",
        zombies_of(pid),
        children(pid).len(),
        cp.log()
    );
    assert_eq!(d.read("pid").trim(), "1", "log:\n{}", cp.log());
    let (code, _) = sigterm(&mut cp, pid);
    assert_eq!(code, Some(0), "log:\n{}", cp.log());
}

#[test]
fn pid1_sigterm_ends_everything_in_under_a_second() {
    if skip() {
        return;
    }
    let d = TempDir::new("pid1-term");
    let cfg = config(
        &d,
        r#"jobs: [
          { name: "a", exec: ["sleep", "60"] },
          { name: "b", exec: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"] },
        ]"#,
    );
    let (mut cp, pid) = start_pid1(&cfg);
    assert!(
        wait_until(5 * SEC, || children(pid).len() == 2),
        "jobs did not start; log:\n{}",
        cp.log()
    );
    let (code, took) = sigterm(&mut cp, pid);
    assert_eq!(code, Some(0), "log:\n{}", cp.log());
    assert!(took < SEC, "took {took:?}; log:\n{}", cp.log());
}

#[test]
fn pid1_kills_a_job_ignoring_sigterm_after_stop_timeout() {
    if skip() {
        return;
    }
    let d = TempDir::new("pid1-stubborn");
    let app = d.script(
        "stubborn.sh",
        "trap '' TERM\nwhile true; do sleep 0.05; done",
    );
    let cfg = config(
        &d,
        &format!(
            r#"stopTimeout: 1, jobs: [ {{ name: "stubborn", exec: {:?} }} ]"#,
            app.display().to_string()
        ),
    );
    let (mut cp, pid) = start_pid1(&cfg);
    assert!(
        wait_until(5 * SEC, || !children(pid).is_empty()),
        "job did not start; log:\n{}",
        cp.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    let (code, took) = sigterm(&mut cp, pid);
    assert_eq!(code, Some(0), "log:\n{}", cp.log());
    assert!(
        took >= Duration::from_millis(900) && took < 4 * SEC,
        "took {took:?}; log:\n{}",
        cp.log()
    );
}

#[test]
fn pid1_config_error_exits_1() {
    if skip() {
        return;
    }
    let d = TempDir::new("pid1-bad");
    let cfg = d.write("bad.json5", "{ jobs: [ { name: \"\" } ] }");
    // No daemon_pid here: the daemon may be gone before we could look.
    let mut cp = unshare_daemon(&cfg);
    let st = cp.wait_exit(5 * SEC).expect("exits");
    assert_eq!(st.code(), Some(1), "log:\n{}", cp.log());
    assert!(cp.log().contains("name"), "{}", cp.log());
}
