//! Per-job `user`/`group` and `when.cron`, against the real binary (the tests
//! run as root, as the daemon does in a container).

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SEC: Duration = Duration::from_secs(1);

/// uid, gid and home of `name` from /etc/passwd.
fn passwd(name: &str) -> (u32, u32, String) {
    let text = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let f: Vec<&str> = text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .unwrap_or_else(|| panic!("{name} not in /etc/passwd"));
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[5].to_string(),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn open_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

#[test]
fn jobs_and_checks_run_as_their_user() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (uid, gid, home) = passwd("nobody");
    let dir = open_dir("user-nobody");
    let sock = dir.socket();
    let (out, check) = (dir.path("written"), dir.path("check"));
    let cfg = dir.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                {{ name: "writer", user: "nobody",
                   exec: ["sh", "-c", "echo \"$(id -u) $(id -g) $HOME\" > {out}; exec sleep 60"],
                   health: {{ exec: ["sh", "-c", "id -u > {check}"], interval: 1, ttl: 5 }} }},
                {{ name: "as-root", exec: ["sh", "-c", "id -u > {out}.root"] }} ] }}"#,
            sock = sock.display().to_string(),
            out = out.display(),
            check = check.display(),
        ),
    );
    let mut d = Daemon::start(&cfg);
    wait_ready(&sock);
    assert!(
        wait_until(5 * SEC, || dir.read("written").ends_with('\n')),
        "{}",
        d.log()
    );
    let meta = std::fs::metadata(&out).expect("file written by the job");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of the file");
    assert_eq!(dir.read("written").trim(), format!("{uid} {gid} {home}"));
    assert!(
        wait_until(5 * SEC, || dir.read("check").trim() == uid.to_string()),
        "{}",
        d.log()
    );
    assert_eq!(std::fs::metadata(&check).expect("check file").uid(), uid);
    assert!(wait_until(5 * SEC, || dir.read("written.root").trim() == "0"));
    let (st, _) = d.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn unknown_users_are_config_errors() {
    let dir = TempDir::new("user-unknown");
    let cfg = dir.write(
        "cp.json5",
        r#"{
  jobs: [
    { name: "a", exec: "true", user: "no-such-user-xyz" },
    { name: "b", exec: "true", user: "nobody", group: "no-such-group-xyz" },
    { name: "c", exec: "true", group: "nogroup" },
    { name: "d", exec: "true", user: "54321" },
  ]
}"#,
    );
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-validate"], &[]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "line 3: jobs[0].user: user \"no-such-user-xyz\" is not in /etc/passwd",
        "line 4: jobs[1].group: group \"no-such-group-xyz\" is not in /etc/group",
        "line 5: jobs[2].group: needs 'user' too",
        "line 6: jobs[3].user: user 54321 is not in /etc/passwd: give a group too",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn switching_users_needs_root() {
    if !is_root() {
        eprintln!("skipped: needs root to start the daemon as another user");
        return;
    }
    let dir = open_dir("user-notroot");
    let cfg = dir.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {:?} }}, jobs: [ {{ name: "web", exec: "true", user: "daemon" }} ] }}"#,
            dir.socket().display().to_string()
        ),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (uid, gid, _) = passwd("nobody");
    let mut cmd = std::process::Command::new(bin());
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    cmd.arg("-config").arg(&cfg);
    let mut d = Daemon::start_with(&mut cmd);
    let st = d.wait_exit(10 * SEC).expect("exits");
    assert_eq!(st.code(), Some(1), "{}", d.log());
    assert!(
        d.log().contains(&format!(
            "job web: user: running as uid {uid}, not root: cannot switch to uid"
        )),
        "{}",
        d.log()
    );
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn job_status(sock: &std::path::Path, name: &str) -> Value {
    let (code, body) = control(sock, "GET", "/v3/status", None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    v["Jobs"]
        .as_array()
        .and_then(|l| l.iter().find(|j| j["Name"] == name).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn cron_job_fires_on_the_minute_without_polling() {
    let dir = TempDir::new("cron-minute");
    let sock = dir.socket();
    let stamps = dir.path("stamps");
    let cfg = dir.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                {{ name: "tick", exec: ["sh", "-c", "date +%s.%N >> {stamps}"], when: {{ cron: "* * * * *" }} }} ] }}"#,
            sock = sock.display().to_string(),
            stamps = stamps.display(),
        ),
    );
    let start = now_secs();
    let mut d = Daemon::start_with(
        std::process::Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .env_remove("TZ"),
    );
    wait_ready(&sock);
    let next_minute = ((start / 60.0).floor() + 1.0) * 60.0;
    let next = job_status(&sock, "tick")["NextRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(next.ends_with(":00Z"), "NextRun {next:?}");
    let deadline = Duration::from_secs_f64((next_minute - now_secs()).max(0.0) + 5.0);
    assert!(
        wait_until(deadline, || dir.read("stamps").lines().count() >= 1),
        "cron job did not run by {next}: {}",
        d.log()
    );
    let fired: f64 = dir
        .read("stamps")
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let late = fired - next_minute;
    assert!(
        (0.0..1.5).contains(&late),
        "ran {late:.3} s after the minute boundary"
    );
    let after = job_status(&sock, "tick")["NextRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(after > next, "NextRun moved on: {next} -> {after}");
    assert_eq!(job_status(&sock, "tick")["Status"], "unknown");
    // While waiting for its next minute (about a minute away now, so the run
    // itself is not in the window) the daemon sleeps: no per-second wake-ups.
    std::thread::sleep(SEC / 2);
    let pid = d.pid();
    let runs0 = sched_runs(pid).unwrap_or(0);
    std::thread::sleep(3 * SEC);
    let woke = sched_runs(pid).unwrap_or(0) - runs0;
    assert!(woke <= 3, "woke {woke} times in 3 s while idle");
    let (st, _) = d.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn cron_reads_its_fields_in_the_tz_zone() {
    let dir = TempDir::new("cron-tz");
    let sock = dir.socket();
    let cfg = dir.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                {{ name: "hourly", exec: "true", when: {{ cron: "0 * * * *" }} }} ] }}"#,
            sock = sock.display().to_string(),
        ),
    );
    // India is UTC+5:30 with no daylight time: local :00 is UTC :30.
    let _d = Daemon::start_with(
        std::process::Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .env("TZ", "<+0530>-5:30"),
    );
    wait_ready(&sock);
    let next = job_status(&sock, "hourly")["NextRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(next.ends_with(":30:00Z"), "NextRun {next:?}");

    let bad = dir.write(
        "bad.json5",
        r#"{ jobs: [ { name: "x", exec: "true",
  when: { cron: "0 0 30 2 *" } },
  { name: "y", exec: "true", when: { cron: "*/5 * * *" } },
  { name: "z", exec: "true", when: { cron: "0 * * * *", source: "x" } } ] }"#,
    );
    let (code, _, err) = run(&["-config", bad.to_str().unwrap(), "-validate"], &[]);
    assert_eq!(code, 1);
    for want in [
        "line 2: jobs[0].when.cron: \"0 0 30 2 *\" never fires: no month it names has that day",
        "line 3: jobs[1].when.cron: \"*/5 * * *\" has 4 fields",
        "line 4: jobs[2].when.source: 'source' does not apply to a 'cron' schedule",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let (code, _, err) = run(
        &["-config", cfg.to_str().unwrap(), "-validate"],
        &[("TZ", "Mars/Olympus_Mons")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("jobs[0].when.cron: TZ \"Mars/Olympus_Mons\": cannot read /usr/share/zoneinfo/Mars/Olympus_Mons"),
        "{err}"
    );
}

#[test]
fn reload_reschedules_a_changed_cron_job() {
    let dir = TempDir::new("cron-reload");
    let sock = dir.socket();
    let write = |spec: &str| {
        dir.write(
            "cp.json5",
            &format!(
                r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                    {{ name: "report", exec: "true", when: {{ cron: {spec:?} }} }},
                    {{ name: "other", exec: "true", when: {{ cron: "@yearly" }} }} ] }}"#,
                sock = sock.display().to_string(),
            ),
        )
    };
    let cfg = write("0 0 1 1 *");
    let _d = Daemon::start_with(
        std::process::Command::new(bin())
            .arg("-config")
            .arg(&cfg)
            .env_remove("TZ"),
    );
    wait_ready(&sock);
    let next = |name: &str| {
        job_status(&sock, name)["NextRun"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let yearly = next("report");
    assert!(yearly.ends_with("-01-01T00:00:00Z"), "{yearly}");
    let other = next("other");
    write("30 12 * * *");
    let (code, body) = control(&sock, "POST", "/v3/reload", None);
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_until(5 * SEC, || next("report").ends_with("T12:30:00Z")),
        "NextRun after reload: {}",
        next("report")
    );
    assert_eq!(next("other"), other, "an unchanged job keeps its schedule");
}
