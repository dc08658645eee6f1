//! The control plane as scripts use it: `containerpilot -putenv ...` and friends,
//! and raw HTTP on the unix socket for codes, bodies and limits.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn start(d: &TempDir, body: &str) -> (Daemon, std::path::PathBuf) {
    let cfg = d.write(
        "cp.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, {body} }}",
            d.socket().display().to_string()
        ),
    );
    let cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    (cp, cfg)
}

fn sub(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut v = vec!["-config", cfg.to_str().unwrap()];
    v.extend_from_slice(args);
    run(&v, &[])
}

#[test]
fn ping_subcommand_prints_ok() {
    let d = TempDir::new("ping");
    let (mut cp, cfg) = start(&d, r#"jobs: [ { name: "app", exec: ["sleep", "30"] } ]"#);
    assert_eq!(sub(&cfg, &["-ping"]), (0, "ok\n".into(), String::new()));
    assert_eq!(
        control(&d.socket(), "GET", "/v3/ping", None),
        (200, "ok".into())
    );
    assert_eq!(control(&d.socket(), "POST", "/v3/ping", None).0, 200);
    cp.stop();
    // no daemon: the subcommand fails and says where it tried
    let (code, _, err) = sub(&cfg, &["-ping"]);
    assert_eq!(code, 1);
    assert!(err.contains("-ping") && err.contains("cp.socket"), "{err}");
}

#[test]
fn putenv_reaches_later_processes_and_can_unset() {
    let d = TempDir::new("putenv");
    let o = d.path("seen");
    let (mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: ["sleep", "30"] }},
                      {{ name: "show", exec: ["sh", "-c", "echo \"[$FOO][$BAR][${{GONE-unset}}]\" >> {o}"], when: {{ source: "SIGHUP" }} }} ]"#,
            o = o.display()
        ),
    );
    assert_eq!(
        sub(
            &cfg,
            &["-putenv", "FOO=a=b", "-putenv", "BAR=2", "-putenv", "GONE=x"]
        )
        .0,
        0
    );
    cp.signal(SIGHUP);
    assert!(
        wait_until(5 * SEC, || d.read("seen").lines().count() == 1),
        "{}",
        cp.log()
    );
    assert_eq!(sub(&cfg, &["-putenv", "GONE"]).0, 0);
    assert_eq!(
        control(&d.socket(), "POST", "/v3/env", Some(r#"{"BAR": null}"#)),
        (200, "\n".into())
    );
    cp.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || d.read("seen").lines().count() == 2));
    assert_eq!(d.read("seen"), "[a=b][2][x]\n[a=b][][unset]\n");
    cp.stop();
}

#[test]
fn putenv_rejects_bad_input_and_applies_nothing() {
    let d = TempDir::new("putenv-bad");
    let o = d.path("seen");
    let (mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: ["sleep", "30"] }},
                      {{ name: "show", exec: ["sh", "-c", "echo \"[${{OK-none}}]\" >> {o}"], when: {{ source: "SIGHUP" }} }} ]"#,
            o = o.display()
        ),
    );
    let (code, body) = control(
        &d.socket(),
        "POST",
        "/v3/environ",
        Some(r#"{"OK":"1","NOT-OK":"2"}"#),
    );
    assert_eq!(code, 400);
    assert!(
        body.contains("\"NOT-OK\"") && body.lines().count() == 1,
        "{body}"
    );
    assert_eq!(
        control(&d.socket(), "POST", "/v3/environ", Some(r#"{"OK": 5}"#)).0,
        422
    );
    assert_eq!(
        control(&d.socket(), "POST", "/v3/environ", Some("{nope")).0,
        422
    );
    assert_eq!(
        control(&d.socket(), "GET", "/v3/environ", None),
        (405, "Method Not Allowed\n".into())
    );
    let (code, _, err) = sub(&cfg, &["-putenv", "1X=y"]);
    assert_eq!(code, 1);
    assert!(err.contains("400"), "{err}");
    cp.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || !d.read("seen").is_empty()));
    assert_eq!(d.read("seen"), "[none]\n");
    cp.stop();
}

#[test]
fn maintenance_is_idempotent_and_triggers_jobs() {
    let d = TempDir::new("maint");
    let o = d.path("maint");
    let (mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: ["sleep", "30"] }},
                      {{ name: "on-enter", exec: ["sh", "-c", "echo enter >> {o}"], when: {{ source: "global", each: "enterMaintenance" }} }},
                      {{ name: "on-exit", exec: ["sh", "-c", "echo exit >> {o}"], when: {{ source: "global", each: "exitMaintenance" }} }} ]"#,
            o = o.display()
        ),
    );
    let s = d.socket();
    assert_eq!(
        control(&s, "POST", "/v3/maintenance/enable", None),
        (200, "{\"updated\":true}".into())
    );
    assert_eq!(
        control(&s, "POST", "/v3/maintenance/enable", None),
        (200, "{\"updated\":false}".into())
    );
    assert!(wait_until(5 * SEC, || d.read("maint") == "enter\n"));
    assert_eq!(sub(&cfg, &["-maintenance", "disable"]).0, 0);
    assert!(
        wait_until(5 * SEC, || d.read("maint") == "enter\nexit\n"),
        "{}",
        d.read("maint")
    );
    assert_eq!(
        control(&s, "POST", "/v3/maintenance/disable", None),
        (200, "{\"updated\":false}".into())
    );
    assert_eq!(control(&s, "GET", "/v3/maintenance/enable", None).0, 405);
    cp.stop();
}

#[test]
fn signal_a_job() {
    let d = TempDir::new("sigjob");
    let o = d.path("got");
    let app = d.script(
        "app.sh",
        &format!(
            "trap 'echo usr1 >> {}' USR1\nwhile true; do sleep 0.05; done",
            o.display()
        ),
    );
    let (mut cp, cfg) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "app", exec: {:?} }}, {{ name: "done", exec: "true" }} ]"#,
            app.display().to_string()
        ),
    );
    let s = d.socket();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        control(
            &s,
            "POST",
            "/v3/signal/app",
            Some(r#"{"signal":"SIGUSR1"}"#)
        )
        .0,
        200
    );
    assert!(wait_until(5 * SEC, || d.read("got") == "usr1\n"));
    assert_eq!(sub(&cfg, &["-signal", "app=USR1"]).0, 0);
    assert!(wait_until(5 * SEC, || d.read("got") == "usr1\nusr1\n"));
    assert_eq!(
        control(
            &s,
            "POST",
            "/v3/signal/nope",
            Some(r#"{"signal":"SIGHUP"}"#)
        )
        .0,
        404
    );
    assert_eq!(
        control(
            &s,
            "POST",
            "/v3/signal/app",
            Some(r#"{"signal":"SIGBOGUS"}"#)
        )
        .0,
        400
    );
    wait_until(5 * SEC, || cp.log().contains("done"));
    std::thread::sleep(Duration::from_millis(300));
    // `done` has finished: 404 for a job that is no longer running at all, or 409
    let (code, body) = control(
        &s,
        "POST",
        "/v3/signal/done",
        Some(r#"{"signal":"SIGHUP"}"#),
    );
    assert!(code == 409 || code == 404, "{code} {body}");
    cp.stop();
}

#[test]
fn signal_a_job_without_a_process_is_409() {
    let d = TempDir::new("sig409");
    let (mut cp, _) = start(
        &d,
        r#"jobs: [ { name: "app", exec: ["sleep", "30"] }, { name: "waiting", exec: "true", when: { source: "SIGHUP" } } ]"#,
    );
    let (code, body) = control(
        &d.socket(),
        "POST",
        "/v3/signal/waiting",
        Some(r#"{"signal":"SIGTERM"}"#),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("no running process"), "{body}");
    cp.stop();
}

#[test]
fn status_shows_jobs_with_pid_dependency_and_restarts() {
    let d = TempDir::new("status");
    let (mut cp, cfg) = start(
        &d,
        r#"jobs: [ { name: "app", exec: ["sleep", "30"], restarts: 3 },
                   { name: "after", exec: ["sleep", "30"], when: { source: "app", once: "healthy" } } ]"#,
    );
    let (code, body) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    let jobs = v["Jobs"].as_array().expect("jobs");
    assert_eq!(jobs[0]["Name"], "app");
    assert!(jobs[0]["Pid"].as_i64().is_some_and(|p| p > 1));
    assert_eq!(jobs[0]["Restarts"], 3);
    assert_eq!(jobs[1]["DependsOn"], "app");
    assert!(jobs[1]["Pid"].is_null());
    assert!(v["Services"].is_null() && v["Watches"].is_null());
    let (code, out, _) = sub(&cfg, &["-status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("NAME") && out.contains("app") && out.contains("after"),
        "{out}"
    );
    let (code, out, _) = sub(&cfg, &["-status", "-json"]);
    assert_eq!(code, 0);
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_ok(),
        "{out}"
    );
    assert_eq!(control(&d.socket(), "POST", "/v3/status", None).0, 405);
    assert_eq!(
        control(&d.socket(), "GET", "/v3/nothing", None),
        (404, "404 page not found\n".into())
    );
    cp.stop();
}

#[test]
fn reload_keeps_unchanged_jobs_and_rejects_bad_configs() {
    let d = TempDir::new("reload");
    let sock = d.socket().display().to_string();
    let cfg_text = |extra: &str| {
        format!(
            r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                 {{ name: "keep", exec: ["sleep", "30"] }},
                 {{ name: "change", exec: ["sleep", "31"] }},
                 {{ name: "remove", exec: ["sleep", "32"] }} {extra} ] }}"#
        )
    };
    let cfg = d.write("cp.json5", &cfg_text(""));
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let pid_of = |name: &str| -> Option<i64> {
        let (_, body) = control(&d.socket(), "GET", "/v3/status", None);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["Jobs"].as_array()?.iter().find(|j| j["Name"] == name)?["Pid"].as_i64()
    };
    assert!(wait_until(5 * SEC, || pid_of("remove").is_some()));
    let keep = pid_of("keep").expect("keep runs");
    let change = pid_of("change").expect("change runs");

    // a bad file: 400, one line, and everything keeps running
    std::fs::write(&cfg, "{ jobs: [ { name: \"\" } ] }").unwrap();
    let (code, body) = control(&d.socket(), "POST", "/v3/reload", None);
    assert_eq!(code, 400);
    assert!(body.contains("jobs[0].name"), "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    // -reload reports the daemon's refusal...
    let (code, _, err) = run(
        &[
            "-config",
            d.write("ok.json5", &cfg_text("")).to_str().unwrap(),
            "-reload",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("jobs[0].name"), "{err}");
    // ...and succeeds once the file is good again, without disturbing anything
    std::fs::write(&cfg, cfg_text("")).unwrap();
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-reload"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(pid_of("change"), Some(change));

    let new = format!(
        r#"{{ control: {{ socket: {sock:?} }}, jobs: [
             {{ name: "keep", exec: ["sleep", "30"] }},
             {{ name: "change", exec: ["sleep", "41"] }},
             {{ name: "added", exec: ["sleep", "33"] }} ] }}"#
    );
    std::fs::write(&cfg, &new).unwrap();
    assert_eq!(control(&d.socket(), "POST", "/v3/reload", None).0, 200);
    assert!(
        wait_until(5 * SEC, || pid_of("added").is_some()),
        "{}",
        cp.log()
    );
    assert!(
        wait_until(5 * SEC, || pid_of("change").is_some_and(|p| p != change)),
        "{}",
        cp.log()
    );
    assert_eq!(pid_of("keep"), Some(keep), "unchanged job undisturbed");
    assert_eq!(pid_of("remove"), None);
    cp.expect_log("control: reloaded app via control plane", 5 * SEC);
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

#[test]
fn many_rapid_reloads_do_not_wedge() {
    let d = TempDir::new("reloads");
    let (mut cp, _) = start(&d, r#"jobs: [ { name: "app", exec: ["sleep", "30"] } ]"#);
    for _ in 0..200 {
        assert_eq!(control(&d.socket(), "POST", "/v3/reload", None).0, 200);
    }
    assert_eq!(control(&d.socket(), "GET", "/v3/ping", None).0, 200);
    cp.stop();
}

#[test]
fn socket_lifecycle_mode_stale_file_and_removal() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("sock");
    // a stale socket file from a previous run
    let stale = std::os::unix::net::UnixListener::bind(d.socket()).unwrap();
    drop(stale);
    let (mut cp, _) = start(&d, r#"jobs: [ { name: "app", exec: ["sleep", "30"] } ]"#);
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    cp.stop();
    assert!(!d.socket().exists(), "socket removed on exit");

    let d2 = TempDir::new("sock-mode");
    let cfg = d2.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {:?}, mode: "0660" }}, jobs: [ {{ name: "app", exec: ["sleep", "30"] }} ] }}"#,
            d2.socket().display().to_string()
        ),
    );
    let mut cp2 = Daemon::start(&cfg);
    wait_ready(&d2.socket());
    assert_eq!(
        std::fs::metadata(d2.socket()).unwrap().permissions().mode() & 0o777,
        0o660
    );
    cp2.stop();
}

fn raw(sock: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http_limits_and_garbage() {
    let d = TempDir::new("limits");
    let (mut cp, _) = start(&d, r#"jobs: [ { name: "app", exec: ["sleep", "30"] } ]"#);
    let s = d.socket();
    let resp = raw(&s, b"\x16\x03\x01 definitely not http\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let mut big_head = b"GET /v3/ping HTTP/1.1\r\nX-Pad: ".to_vec();
    big_head.extend(std::iter::repeat_n(b'a', 9000));
    big_head.extend_from_slice(b"\r\n\r\n");
    assert!(raw(&s, &big_head).starts_with("HTTP/1.1 431"));
    let big_body = format!(
        "POST /v3/environ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    assert!(raw(&s, big_body.as_bytes()).starts_with("HTTP/1.1 413"));
    // keep-alive: two requests on one connection
    let two = raw(
        &s,
        b"GET /v3/ping HTTP/1.1\r\n\r\nGET /v3/ping HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(two.matches("HTTP/1.1 200").count(), 2, "{two}");
    // chunked request body (curl -H 'Transfer-Encoding: chunked')
    let chunked = raw(
        &s,
        b"POST /v3/environ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n9\r\n{\"A\":\"1\"}\r\n0\r\n\r\n",
    );
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    cp.stop();
}

#[test]
fn a_slow_client_does_not_stall_the_loop() {
    let d = TempDir::new("slow");
    let o = d.path("ran");
    let (mut cp, _) = start(
        &d,
        &format!(
            r#"jobs: [ {{ name: "tick", exec: ["sh", "-c", "echo x >> {o}"], when: {{ interval: "200ms" }} }} ]"#,
            o = o.display()
        ),
    );
    // half a request, never finished, on several connections
    let mut idle: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut c = UnixStream::connect(d.socket()).unwrap();
            c.write_all(b"POST /v3/environ HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            c
        })
        .collect();
    let before = d.read("ran").lines().count();
    assert_eq!(control(&d.socket(), "GET", "/v3/ping", None).0, 200);
    assert!(wait_until(5 * SEC, || d.read("ran").lines().count() >= before + 3));
    // an idle client is dropped after 10 s
    let mut buf = [0u8; 16];
    idle[0].set_read_timeout(Some(15 * SEC)).unwrap();
    let t = std::time::Instant::now();
    let n = idle[0].read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "server closed the idle connection");
    assert!(t.elapsed() < 12 * SEC);
    idle.clear();
    cp.stop();
}

#[test]
fn reload_moves_the_socket_only_when_its_path_changes() {
    let d = TempDir::new("reload-sock");
    let text = |sock: &std::path::Path| {
        format!(
            r#"{{ control: {{ socket: {:?} }}, jobs: [ {{ name: "app", exec: ["sleep", "30"] }} ] }}"#,
            sock.display().to_string()
        )
    };
    let cfg = d.write("cp.json5", &text(&d.socket()));
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let ino =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let first = ino(&d.socket());
    assert_eq!(control(&d.socket(), "POST", "/v3/reload", None).0, 200);
    assert_eq!(ino(&d.socket()), first, "same path: the socket is kept");
    let moved = d.path("moved.socket");
    std::fs::write(&cfg, text(&moved)).unwrap();
    assert_eq!(control(&d.socket(), "POST", "/v3/reload", None).0, 200);
    wait_ready(&moved);
    assert!(!d.socket().exists(), "old socket removed");
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(!moved.exists());
}

#[test]
fn reload_gives_a_changed_job_a_fresh_restart_budget() {
    let d = TempDir::new("reload-budget");
    let o = d.path("runs");
    let text = |arg: &str| {
        format!(
            r#"{{ control: {{ socket: {:?} }}, jobs: [
                 {{ name: "app", exec: ["sleep", "30"] }},
                 {{ name: "co", exec: ["sh", "-c", "echo {arg} >> {o}; sleep 1.2"], restarts: 1 }} ] }}"#,
            d.socket().display().to_string(),
            o = o.display()
        )
    };
    let cfg = d.write("cp.json5", &text("v1"));
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    // restarts: 1 -> exactly two runs
    assert!(wait_until(10 * SEC, || d.read("runs").lines().count() == 2));
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(d.read("runs"), "v1\nv1\n");
    std::fs::write(&cfg, text("v2")).unwrap();
    assert_eq!(control(&d.socket(), "POST", "/v3/reload", None).0, 200);
    assert!(
        wait_until(10 * SEC, || d.read("runs").lines().count() == 4),
        "{}",
        d.read("runs")
    );
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(d.read("runs"), "v1\nv1\nv2\nv2\n");
    cp.stop();
}
