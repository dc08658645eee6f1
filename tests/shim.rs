//! Shim mode: a trailing application whose exit ends the container with its exit
//! code (the long-requested 3.x issue #526), also as PID 1.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn cfg(d: &TempDir, jobs: &str) -> std::path::PathBuf {
    d.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, jobs: [ {jobs} ] }}",
            d.socket().display().to_string()
        ),
    )
}

fn shim(d: &TempDir, jobs: &str, app: &[&str]) -> Daemon {
    let c = cfg(d, jobs);
    let mut cmd = Command::new(bin());
    cmd.arg("-config").arg(&c).args(app);
    Daemon::start_with(&mut cmd)
}

#[test]
fn application_exit_codes_are_propagated() {
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137)] {
        let d = TempDir::new("shim-code");
        let mut cp = shim(
            &d,
            r#"{ name: "side", exec: ["sleep", "30"] }"#,
            &["sh", "-c", script],
        );
        let st = cp
            .wait_exit(10 * SEC)
            .expect("daemon exits with the application");
        assert_eq!(st.code(), Some(want), "{script}: {}", cp.log());
    }
}

#[test]
fn application_that_cannot_start_exits_127() {
    let d = TempDir::new("shim-127");
    let mut cp = shim(&d, "", &["/nonexistent/app"]);
    let st = cp.wait_exit(10 * SEC).expect("exits");
    assert_eq!(st.code(), Some(127), "{}", cp.log());
}

#[test]
fn stopped_hook_runs_after_the_application_and_its_code_stays() {
    // 3.x configs name their hooks themselves; the exit policy of a 3.x shim only
    // follows the application, so a failing hook does not change the code.
    let d = TempDir::new("shim-hook");
    let o = d.path("order");
    let mut cp = shim(
        &d,
        &format!(
            r#"{{ name: "post", exec: ["sh", "-c", "echo post >> {o}"], when: {{ source: "app", once: "stopped" }} }}"#,
            o = o.display()
        ),
        &["sh", "-c", &format!("echo app >> {}; exit 4", o.display())],
    );
    let st = cp.wait_exit(10 * SEC).expect("exits");
    assert_eq!(st.code(), Some(4));
    assert_eq!(d.read("order"), "app\npost\n");
}

#[test]
fn sigterm_reaches_the_application_and_its_code_is_the_exit_code() {
    let d = TempDir::new("shim-term");
    let app = d.script(
        "app.sh",
        "trap 'exit 7' TERM\nwhile true; do sleep 0.05; done",
    );
    let mut cp = shim(&d, "", &[app.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(400));
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(7), "{}", cp.log());
    assert!(took < 2 * SEC, "{took:?}");
}

#[test]
fn application_output_is_unmodified_and_args_are_templated() {
    let d = TempDir::new("shim-raw");
    let c = cfg(&d, "");
    let out = Command::new(bin())
        .arg("-config")
        .arg(&c)
        .args(["--", "printf", "%s|raw\\tbytes\\n", "{{ .GREETING }}"])
        .env("GREETING", "hello")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello|raw\tbytes\n"),
        "{:?}",
        out
    );
}

#[test]
fn main_name_names_the_application_job() {
    let d = TempDir::new("shim-name");
    let o = d.path("pid");
    let mut cp = shim(
        &d,
        &format!(
            r#"{{ name: "watcher", exec: ["sh", "-c", "echo $CONTAINERPILOT_WEB_PID > {o}"], when: {{ source: "SIGHUP" }} }}"#,
            o = o.display()
        ),
        &["-main-name", "web", "sleep", "2"],
    );
    wait_ready(&d.socket());
    cp.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || !d.read("pid").trim().is_empty()));
    let st = cp.wait_exit(10 * SEC).expect("exits after the app");
    assert_eq!(st.code(), Some(0));
}

fn unshare_ok() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn exit_code_propagates_as_pid_1() {
    if !unshare_ok() {
        eprintln!("skipped: unshare --pid not permitted here");
        return;
    }
    let d = TempDir::new("shim-pid1");
    let c = cfg(&d, r#"{ name: "side", exec: ["sleep", "30"] }"#);
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .arg("-config")
        .arg(&c)
        .args(["sh", "-c", "echo pid=$CONTAINERPILOT_PID; exit 3"])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pid=1"), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
