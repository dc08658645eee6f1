//! Render and signal jobs on the real binary, without nginx: a key watch feeds a
//! template, a failing render is reported with the template's line and column,
//! and a signal job reaches a job's process group.

mod common;
use common::consul_double::ConsulDouble;
use common::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn status_render(d: &TempDir, job: &str) -> serde_json::Value {
    let (code, body) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    v["Jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["Name"] == job))
        .map(|j| j["Render"].clone())
        .unwrap_or_else(|| panic!("{job} not in {body}"))
}

#[test]
fn a_key_watch_feeds_a_template_and_failures_name_line_and_column() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("render-key");
    let t = d.write(
        "motd.tmpl",
        "motd: {{ keyOrDefault \"app/motd\" \"(none)\" }}\n{{ if keyExists \"app/strict\" }}\n  strict: {{ key \"app/missing-on-purpose\" }}\n{{ end }}",
    );
    let dest = d.path("out/motd.txt");
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{
  consul: "{addr}",
  logging: {{ level: "DEBUG" }},
  control: {{ socket: {sock:?} }},
  jobs: [
    {{ name: "motd", render: {{ template: {t:?}, dest: {dest:?}, mode: "0640" }},
       when: {{ source: "watch.motd", each: "changed" }} }},
  ],
  watches: [
    {{ name: "motd", key: "app/motd", interval: 1 }},
    {{ name: "strict", key: "app/strict", interval: 1 }},
    {{ name: "other", key: "app/missing-on-purpose", interval: 1 }},
  ],
}}"#,
            addr = consul.addr(),
            sock = d.socket().display().to_string(),
            t = t.display().to_string(),
            dest = dest.display().to_string(),
        ),
    );
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    let read = || std::fs::read_to_string(&dest).unwrap_or_default();
    // nothing has changed yet: the job has not run
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dest.exists());
    assert!(status_render(&d, "motd")["LastRender"].is_null());

    consul.kv_put("app/motd", b"hello");
    assert!(
        wait_until(5 * SEC, || read() == "motd: hello\n"),
        "{:?}\n{}",
        read(),
        cp.log()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    cp.expect_log("event: {ExitSuccess motd}", 2 * SEC);

    consul.kv_put("app/motd", b"bye");
    assert!(
        wait_until(5 * SEC, || read() == "motd: bye\n"),
        "{}",
        cp.log()
    );
    assert!(wait_until(2 * SEC, || cp
        .count("event: {ExitSuccess motd}")
        == 2));
    let r = status_render(&d, "motd");
    assert_eq!(r["Result"], "written");
    assert!(r["Hash"].as_str().unwrap().starts_with("fnv1a64:"));

    // deleted: the default
    consul.kv_delete("app/motd");
    assert!(
        wait_until(5 * SEC, || read() == "motd: (none)\n"),
        "{}",
        cp.log()
    );

    // the template now needs a key that does not exist: the render fails with
    // the template's line and column, and the file stays as it was
    consul.kv_put("app/strict", b"1");
    cp.expect_log("event: {StatusChanged watch.strict}", 5 * SEC);
    consul.kv_put("app/motd", b"again");
    cp.expect_log("event: {ExitFailed motd}", 5 * SEC);
    let want = format!(
        "event: {{Error motd: template {}:3:11: error calling key: key \"app/missing-on-purpose\" does not exist",
        t.display()
    );
    cp.expect_log(&want, 2 * SEC);
    assert_eq!(read(), "motd: (none)\n");
    let r = status_render(&d, "motd");
    assert_eq!(r["Result"], "failed");
    assert!(r["Error"].as_str().unwrap().contains(":3:11: "), "{r}");

    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
}

#[test]
fn a_signal_job_reaches_the_process_group_and_fails_without_a_process() {
    let d = TempDir::new("render-signal");
    let got = d.path("got");
    let app = d.script(
        "app.sh",
        &format!(
            "trap 'echo hup >> {}' HUP\nwhile true; do sleep 0.05; done",
            got.display()
        ),
    );
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{
  logging: {{ level: "DEBUG" }},
  control: {{ socket: {sock:?} }},
  jobs: [
    {{ name: "app", exec: {app:?}, when: {{ source: "SIGUSR2" }} }},
    {{ name: "hup-app", signal: {{ job: "app", signal: "SIGHUP" }}, when: {{ source: "SIGHUP" }} }},
  ],
}}"#,
            sock = d.socket().display().to_string(),
            app = app.display().to_string(),
        ),
    );
    let mut cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    // app is not running yet: exitFailed and an error, no fork
    cp.signal(SIGHUP);
    cp.expect_log("event: {ExitFailed hup-app}", 5 * SEC);
    cp.expect_log(
        "event: {Error hup-app: job \"app\" has no running process}",
        2 * SEC,
    );
    cp.signal(SIGUSR2);
    cp.expect_log("app.Run start", 5 * SEC);
    std::thread::sleep(Duration::from_millis(300));
    let before = cp.count(".Run start");
    cp.signal(SIGHUP);
    assert!(
        wait_until(5 * SEC, || d.read("got") == "hup\n"),
        "{}",
        cp.log()
    );
    cp.expect_log("event: {ExitSuccess hup-app}", 2 * SEC);
    assert_eq!(cp.count(".Run start"), before, "a signal job forks nothing");
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
}
