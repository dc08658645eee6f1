//! The daemon as a user runs it: real configs, real child processes, signals, and
//! what shows up in the log and in files the jobs write.

mod common;
use common::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn config(dir: &TempDir, body: &str) -> std::path::PathBuf {
    dir.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, {body} }}",
            dir.socket().display().to_string()
        ),
    )
}

fn lines(dir: &TempDir, f: &str) -> Vec<String> {
    dir.read(f).lines().map(|s| s.to_string()).collect()
}

#[test]
fn b_runs_after_a_exits_successfully_and_daemon_exits_when_all_done() {
    let d = TempDir::new("chain");
    let out = d.path("order");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "a", exec: ["sh", "-c", "sleep 0.2; echo a >> {o}"] }},
              {{ name: "b", exec: ["sh", "-c", "echo b >> {o}"], when: {{ source: "a", once: "exitSuccess" }} }},
            ]"#,
            o = out.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    let st = cp
        .wait_exit(10 * SEC)
        .expect("daemon exits once every job is done");
    assert_eq!(st.code(), Some(0), "log:\n{}", cp.log());
    assert_eq!(lines(&d, "order"), ["a", "b"]);
}

#[test]
fn each_runs_once_per_trigger() {
    let d = TempDir::new("each");
    let out = d.path("count");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "src", exec: ["sh", "-c", "sleep 0.1"], restarts: 2 }},
              {{ name: "counter", exec: ["sh", "-c", "echo run >> {o}"], when: {{ source: "src", each: "exitSuccess" }} }},
            ]"#,
            o = out.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    assert!(
        wait_until(10 * SEC, || lines(&d, "count").len() >= 3),
        "log:\n{}",
        cp.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&d, "count").len(), 3);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn stop_hooks_run_around_the_jobs_sigterm() {
    let d = TempDir::new("hooks");
    let o = d.path("order");
    let app = d.script(
        "app.sh",
        &format!("trap 'echo app-got-term >> {o}; exit 0' TERM\necho app-up >> {o}\nwhile true; do sleep 0.05; done", o = o.display()),
    );
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "app", exec: {app:?} }},
              {{ name: "prestop", exec: ["sh", "-c", "sleep 0.3; echo prestop >> {o}"], when: {{ source: "app", once: "stopping" }} }},
              {{ name: "poststop", exec: ["sh", "-c", "echo poststop >> {o}"], when: {{ source: "app", once: "stopped" }} }},
            ]"#,
            app = app.display().to_string(),
            o = o.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    assert!(wait_until(5 * SEC, || lines(&d, "order").len() == 1));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "log:\n{}", cp.log());
    assert_eq!(
        lines(&d, "order"),
        ["app-up", "prestop", "app-got-term", "poststop"],
        "log:\n{}",
        cp.log()
    );
}

#[test]
fn sighup_and_sigusr2_jobs_run_on_those_signals() {
    let d = TempDir::new("signals");
    let o = d.path("sig");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "app", exec: ["sleep", "30"] }},
              {{ name: "on-hup", exec: ["sh", "-c", "echo hup >> {o}"], when: {{ source: "SIGHUP" }} }},
              {{ name: "on-usr2", exec: ["sh", "-c", "echo usr2 >> {o}"], when: {{ source: "SIGUSR2" }} }},
            ]"#,
            o = o.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    cp.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || lines(&d, "sig").len() == 1));
    cp.signal(SIGUSR2);
    assert!(wait_until(5 * SEC, || lines(&d, "sig").len() == 2));
    cp.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || lines(&d, "sig").len() == 3));
    assert_eq!(lines(&d, "sig"), ["hup", "usr2", "hup"]);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn dependent_job_sees_pid_and_ip_variables() {
    let d = TempDir::new("envvars");
    let o = d.path("env");
    let pidf = d.path("pid");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "testpid", exec: ["sh", "-c", "echo $$ > {p}; exec sleep 30"],
                 health: {{ exec: "true", interval: 1, ttl: 5 }} }},
              {{ name: "reader", when: {{ source: "testpid", once: "healthy" }},
                 exec: ["sh", "-c", "echo pid=$CONTAINERPILOT_TESTPID_PID cp=$CONTAINERPILOT_PID > {o}"] }},
            ]"#,
            p = pidf.display(),
            o = o.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    assert!(
        wait_until(10 * SEC, || !d.read("env").is_empty()),
        "log:\n{}",
        cp.log()
    );
    let pid = d.read("pid").trim().to_string();
    assert_eq!(d.read("env").trim(), format!("pid={pid} cp={}", cp.pid()));
    cp.stop();
}

#[test]
fn health_check_results_trigger_jobs() {
    let d = TempDir::new("health");
    let o = d.path("events");
    let flag = d.path("healthy-flag");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [
              {{ name: "app", exec: ["sleep", "30"],
                 health: {{ exec: ["test", "-e", "{f}"], interval: 1, ttl: 5 }} }},
              {{ name: "on-healthy", when: {{ source: "app", each: "healthy" }}, exec: ["sh", "-c", "echo healthy >> {o}"] }},
              {{ name: "on-unhealthy", when: {{ source: "app", once: "unhealthy" }}, exec: ["sh", "-c", "echo unhealthy >> {o}"] }},
            ]"#,
            f = flag.display(),
            o = o.display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    assert!(
        wait_until(5 * SEC, || d.read("events").contains("unhealthy")),
        "log:\n{}",
        cp.log()
    );
    assert!(!d.read("events").contains("healthy\n") || d.read("events").starts_with("unhealthy"));
    std::fs::write(&flag, "").expect("flag");
    assert!(
        wait_until(5 * SEC, || lines(&d, "events")
            .iter()
            .any(|l| l == "healthy")),
        "log:\n{}",
        cp.log()
    );
    cp.stop();
}

fn output_in_format(format: &str) -> (String, i32) {
    let d = TempDir::new("fmt");
    let cfg = config(
        &d,
        &format!(
            r#"logging: {{ format: "{format}" }},
               jobs: [ {{ name: "talker", exec: ["sh", "-c", "echo $$ > {p}; echo hello from talker; printf 'no newline' >&2"] }} ]"#,
            p = d.path("pid").display()
        ),
    );
    let mut cp = Daemon::start(&cfg);
    cp.wait_exit(10 * SEC).expect("exits when done");
    let pid: i32 = d.read("pid").trim().parse().expect("pid written");
    (cp.log(), pid)
}

#[test]
fn job_output_in_default_format_has_job_and_pid() {
    let (log, pid) = output_in_format("default");
    let line = log
        .lines()
        .find(|l| l.ends_with(" hello from talker"))
        .unwrap_or_else(|| panic!("no output line in:\n{log}"));
    let parts: Vec<&str> = line.splitn(4, ' ').collect();
    assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{line}");
    assert_eq!(parts[1], "talker");
    assert_eq!(parts[2], pid.to_string());
    assert!(
        log.contains(&format!(" talker {pid} no newline")),
        "last line without newline is kept:\n{log}"
    );
}

#[test]
fn job_output_in_text_format_is_logrus_shaped() {
    let (log, pid) = output_in_format("text");
    assert!(
        log.contains(&format!(
            "level=info msg=\"hello from talker\" job=talker pid={pid}"
        )),
        "{log}"
    );
    assert!(log.lines().any(|l| l.starts_with("time=\"")), "{log}");
}

#[test]
fn job_output_in_json_format_is_one_object_per_line() {
    let (log, pid) = output_in_format("json");
    let v: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == "hello from talker")
        .unwrap_or_else(|| panic!("no json line in:\n{log}"));
    assert_eq!(v["job"], "talker");
    assert_eq!(v["pid"], pid);
    assert_eq!(v["level"], "info");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn raw_output_is_passed_through_byte_for_byte() {
    let d = TempDir::new("raw");
    let cfg = config(
        &d,
        r#"jobs: [ { name: "raw", exec: ["printf", "\\001binary\\tdata\\r\\n  spaced  "], logging: { raw: true } } ]"#,
    );
    let mut cp = Daemon::start(&cfg);
    cp.wait_exit(10 * SEC).expect("exits");
    assert!(
        cp.log().contains("\u{1}binary\tdata\r\n  spaced  "),
        "{:?}",
        cp.log()
    );
}

#[test]
fn missing_binary_backs_off_and_costs_little_cpu() {
    let d = TempDir::new("backoff");
    let cfg = config(
        &d,
        r#"jobs: [ { name: "ghost", exec: "/nonexistent/binary", restarts: "unlimited" } ]"#,
    );
    let mut cp = Daemon::start(&cfg);
    cp.expect_log("restarting in 100ms", 5 * SEC);
    cp.expect_log("restarting in 400ms", 5 * SEC);
    let t0 = cpu_ticks(cp.pid()).expect("stat");
    std::thread::sleep(10 * SEC);
    let t1 = cpu_ticks(cp.pid()).expect("stat");
    // clock ticks are 1/100 s: 5 % of 10 s is 50 ticks
    assert!(t1 - t0 < 50, "used {} ticks in 10 s", t1 - t0);
    // 100 ms doubling: the 7th delay is 6.4 s, reached about 6.3 s after the first
    assert!(cp.log().contains("restarting in 6.4s"), "{}", cp.log());
    assert!(cp.log().contains(
        "unable to start ghost: fork/exec /nonexistent/binary: no such file or directory"
    ));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn sigterm_ends_the_daemon_fast_when_jobs_exit_on_sigterm() {
    let d = TempDir::new("fast");
    let cfg = config(
        &d,
        r#"jobs: [ { name: "a", exec: ["sleep", "60"] }, { name: "b", exec: ["sleep", "60"] } ]"#,
    );
    let mut cp = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(took < SEC, "took {took:?}");
}

#[test]
fn job_ignoring_sigterm_is_killed_after_stop_timeout() {
    let d = TempDir::new("stubborn");
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
    let mut cp = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < 4 * SEC,
        "took {took:?}"
    );
}

#[test]
fn config_error_exits_1() {
    let d = TempDir::new("bad");
    let cfg = d.write("bad.json5", "{ jobs: [ { name: \"\" } ] }");
    let mut cp = Daemon::start(&cfg);
    let st = cp.wait_exit(5 * SEC).expect("exits");
    assert_eq!(st.code(), Some(1));
    assert!(cp.log().contains("name"), "{}", cp.log());
}

#[test]
fn idle_daemon_is_not_scheduled() {
    let d = TempDir::new("idle");
    let cfg = config(&d, r#"jobs: [ { name: "app", exec: ["sleep", "60"] } ]"#);
    let mut cp = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    let before = sched_runs(cp.pid()).expect("schedstat");
    std::thread::sleep(5 * SEC);
    let after = sched_runs(cp.pid()).expect("schedstat");
    assert_eq!(
        after,
        before,
        "the daemon woke up {} times while idle",
        after - before
    );
    cp.stop();
}

#[test]
fn timeout_kills_the_job_group() {
    let d = TempDir::new("timeout");
    let cfg = config(
        &d,
        r#"jobs: [ { name: "slow", exec: ["sleep", "30"], timeout: "200ms" } ]"#,
    );
    let mut cp = Daemon::start(&cfg);
    let st = cp.wait_exit(5 * SEC).expect("job killed, daemon done");
    assert_eq!(st.code(), Some(0));
    let log = cp.log();
    assert!(
        log.contains("slow timeout after 200ms: 'sleep 30'"),
        "{log}"
    );
    assert!(
        log.contains("slow exited with error: signal: killed"),
        "{log}"
    );
}

#[test]
fn bundled_example_shows_the_chain() {
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example.json5");
    let mut cp = Daemon::start(&cfg);
    cp.expect_log("setup", 5 * SEC);
    cp.expect_log("app is up", 5 * SEC);
    cp.expect_log("app reported healthy", 10 * SEC);
    cp.expect_log("tick at", 5 * SEC);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    let log = cp.log();
    let pos = |s: &str| {
        log.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing in:\n{log}"))
    };
    assert!(pos("preparing the app") < pos("app is up"));
    assert!(pos("app is up") < pos("app reported healthy"));
    assert!(pos("saying goodbye") < pos("app got SIGTERM"), "{log}");
}

#[test]
fn jobs_do_not_inherit_stray_descriptors() {
    use std::os::unix::process::CommandExt;
    let d = TempDir::new("fds");
    let o = d.path("fd");
    let cfg = config(
        &d,
        &format!(
            r#"jobs: [ {{ name: "look", exec: ["sh", "-c", "if [ -e /proc/self/fd/7 ]; then echo leaked; else echo clean; fi > {o}"] }} ]"#,
            o = o.display()
        ),
    );
    let held = std::fs::File::open(&cfg).expect("open");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&held);
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("-config").arg(&cfg);
    // SAFETY: dup2 in the child before exec, on descriptors we own.
    unsafe {
        cmd.pre_exec(move || {
            if libc_dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cp = Daemon::start_with(&mut cmd);
    cp.wait_exit(10 * SEC).expect("exits");
    assert_eq!(d.read("fd").trim(), "clean", "{}", cp.log());
}

extern "C" {
    #[link_name = "dup2"]
    fn libc_dup2(old: i32, new: i32) -> i32;
}
