//! ContainerPilot 2.x configs on the same runtime: loading, -convert, shim mode
//! with exit codes, 2.x signals (SIGHUP reload, SIGUSR1 maintenance), backends,
//! coprocesses, tasks and sensors.

mod common;
use common::consul_double::ConsulDouble;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// 2.x defaults to eth0; point the fixtures at the loopback where eth0 is absent.
fn env_for_fixtures() -> Vec<(&'static str, &'static str)> {
    vec![
        ("URL_TO_SERVICE", "http://x"),
        ("API_KEY", "k"),
        ("BACKEND", "upstream"),
    ]
}

fn has_eth0() -> bool {
    Path::new("/sys/class/net/eth0").exists()
}

#[test]
fn every_2x_fixture_loads_and_converts_to_a_valid_3x_config() {
    if !has_eth0() {
        eprintln!("skipped: 2.x configs advertise on eth0 by default and this machine has none");
        return;
    }
    let d = TempDir::new("v2-fixtures");
    let all = fixtures("tests/fixtures/v2");
    assert!(all.len() >= 15);
    for f in all {
        let p = f.to_str().unwrap();
        let (code, out, err) = run(&["-validate", "-config", p], &env_for_fixtures());
        assert_eq!(code, 0, "{p}: {err}");
        assert!(out.contains(": OK: "), "{out}");
        let (code, converted, err) = run(&["-convert", "-config", p], &env_for_fixtures());
        assert_eq!(code, 0, "{p}: {err}");
        let out3 = d.write("converted.json5", &converted);
        let (code, _, err) = run(
            &["-validate", "-config", out3.to_str().unwrap()],
            &env_for_fixtures(),
        );
        assert_eq!(
            code, 0,
            "{p}: converted config does not validate: {err}\n{converted}"
        );
    }
}

#[test]
fn every_invalid_2x_fixture_fails_naming_the_field() {
    let all = fixtures("tests/fixtures/v2/invalid");
    assert!(all.len() >= 20);
    for f in all {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{} lacks an expect line", f.display()))
            .to_string();
        let (code, _, err) = run(&["-validate", "-config", f.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{}", f.display());
        // `path: message`: both must be named (the message may be shortened)
        let (path, msg) = expect.split_once(": ").unwrap_or(("", &expect));
        assert!(
            err.contains(&format!("{path}: ")) && err.contains(msg.trim_end_matches(':')),
            "{}: expected {expect:?} in:\n{err}",
            f.display()
        );
    }
}

#[test]
fn mixing_2x_and_3x_keys_is_an_error_naming_both() {
    let d = TempDir::new("v2-mixed");
    let c = d.write(
        "c.json",
        r#"{ "consul": "c:8500", "services": [], "jobs": [] }"#,
    );
    let (code, _, err) = run(&["-validate", "-config", c.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("services") && err.contains("jobs"), "{err}");
}

#[test]
fn config_may_be_inline_json_or_a_file_url() {
    let inline = r#"{"consul": "localhost:8500", "preStart": "true"}"#;
    let (code, out, err) = run(&["-validate"], &[("CONTAINERPILOT", inline)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"));
    let d = TempDir::new("v2-url");
    let c = d.write("c.json", inline);
    let url = format!("file://{}", c.display());
    let (code, _, err) = run(&["-validate", "-config", &url], &[]);
    assert_eq!(code, 0, "{err}");
}

/// A 2.x shim config with hooks writing to `order`.
fn shim_config(d: &TempDir, pre_start: &str, post_stop: &str) -> PathBuf {
    let o = d.path("order");
    d.write(
        "app.json",
        &format!(
            r#"{{
              "consul": "127.0.0.1:1",
              "preStart": ["sh", "-c", "echo preStart >> {o}; {pre_start}"],
              "preStop": ["sh", "-c", "echo preStop >> {o}"],
              "postStop": ["sh", "-c", "echo postStop >> {o}; {post_stop}"],
              "stopTimeout": 2
            }}"#,
            o = o.display()
        ),
    )
}

fn shim(cfg: &Path, app: &[&str]) -> Daemon {
    let mut cmd = Command::new(bin());
    cmd.arg("-config").arg(cfg).args(app);
    Daemon::start_with(&mut cmd)
}

#[test]
fn shim_propagates_the_application_exit_code() {
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137)] {
        let d = TempDir::new("v2-shim");
        let cfg = shim_config(&d, "true", "true");
        let o = d.path("order");
        let mut cp = shim(
            &cfg,
            &[
                "sh",
                "-c",
                &format!("echo app >> {}; {script}", o.display()),
            ],
        );
        let st = cp.wait_exit(10 * SEC).expect("exits with the app");
        assert_eq!(st.code(), Some(want), "{script}: {}", cp.log());
        // preStop runs only on SIGTERM in 2.x, postStop always
        assert_eq!(d.read("order"), "preStart\napp\npostStop\n", "{script}");
    }
}

#[test]
fn non_zero_post_stop_wins_and_failing_pre_start_stops_everything() {
    let d = TempDir::new("v2-post");
    let mut cp = shim(&shim_config(&d, "true", "exit 9"), &["true"]);
    assert_eq!(
        cp.wait_exit(10 * SEC).and_then(|s| s.code()),
        Some(9),
        "{}",
        cp.log()
    );

    let d = TempDir::new("v2-pre");
    let o = d.path("order");
    let mut cp = shim(
        &shim_config(&d, "exit 4", "true"),
        &["sh", "-c", &format!("echo app >> {}", o.display())],
    );
    assert_eq!(
        cp.wait_exit(10 * SEC).and_then(|s| s.code()),
        Some(4),
        "{}",
        cp.log()
    );
    assert!(
        !d.read("order").contains("app"),
        "the app never started: {}",
        d.read("order")
    );
}

#[test]
fn sigterm_runs_pre_stop_then_stops_the_app_then_post_stop() {
    let d = TempDir::new("v2-term");
    let o = d.path("order");
    let cfg = shim_config(&d, "true", "true");
    let app = d.script(
        "app.sh",
        &format!(
            "trap 'echo app-term >> {o}; exit 0' TERM\nwhile true; do sleep 0.05; done",
            o = o.display()
        ),
    );
    let mut cp = shim(&cfg, &[app.to_str().unwrap()]);
    assert!(wait_until(5 * SEC, || d.read("order") == "preStart\n"));
    std::thread::sleep(Duration::from_millis(300));
    let (st, _) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", cp.log());
    assert_eq!(d.read("order"), "preStart\npreStop\napp-term\npostStop\n");
}

#[test]
fn application_output_is_byte_for_byte() {
    let d = TempDir::new("v2-raw");
    let cfg = shim_config(&d, "true", "true");
    let out = Command::new(bin())
        .arg("-config")
        .arg(&cfg)
        .args(["printf", "\\001raw\\tbytes\\r\\n{{ .WHO }}"])
        .env("WHO", "templated")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\u{1}raw\tbytes\r\ntemplated"),
        "{stdout:?}"
    );
}

#[test]
fn exit_code_propagates_as_pid_1() {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: unshare --pid not permitted here");
        return;
    }
    let d = TempDir::new("v2-pid1");
    let cfg = shim_config(&d, "true", "true");
    let st = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .arg("-config")
        .arg(&cfg)
        .args(["sh", "-c", "exit 5"])
        .status()
        .expect("unshare");
    assert_eq!(st.code(), Some(5));
}

fn socket_of(d: &TempDir) -> PathBuf {
    d.socket()
}

#[test]
fn sigusr1_toggles_maintenance_and_sighup_reloads() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("v2-signals");
    let o = d.path("task");
    let text = |msg: &str| {
        format!(
            r#"{{
              "consul": "{addr}",
              "services": [ {{ "name": "web", "port": 8080, "health": "true", "poll": 1, "ttl": 5, "interfaces": ["lo"] }} ],
              "tasks": [ {{ "name": "tick", "command": ["sh", "-c", "echo {msg} >> {o}"], "frequency": "300ms" }} ]
            }}"#,
            addr = consul.addr(),
            o = o.display()
        )
    };
    let cfg = d.write("app.json", &text("v1"));
    let mut cp = shim(&cfg, &["sleep", "30"]);
    let web = format!("web-{}", containerpilot::catalog::hostname());
    assert!(
        wait_until(6 * SEC, || consul.services().get(&web).is_some()),
        "{}",
        cp.log()
    );
    cp.signal(SIGUSR1);
    assert!(
        wait_until(3 * SEC, || consul.services().get(&web).is_none()),
        "maintenance deregisters"
    );
    cp.signal(SIGUSR1);
    assert!(
        wait_until(3 * SEC, || consul.services().get(&web).is_some()),
        "and back"
    );
    // SIGHUP reloads a changed file; the application keeps running
    std::fs::write(&cfg, text("v2")).unwrap();
    cp.signal(SIGHUP);
    assert!(
        wait_until(5 * SEC, || d.read("task").contains("v2")),
        "{}",
        cp.log()
    );
    assert!(
        cp.wait_exit(Duration::from_millis(200)).is_none(),
        "app still running"
    );
    let _ = socket_of(&d);
    cp.stop();
}

#[test]
fn backends_coprocesses_tasks_and_sensors() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("v2-all");
    let port = free_port();
    let changes = d.path("changes");
    let co = d.path("co");
    let slow = d.path("slow");
    let cfg = d.write(
        "app.json",
        &format!(
            r#"{{
              "consul": "{addr}",
              "backends": [ {{ "name": "db", "poll": 1, "onChange": ["sh", "-c", "echo change >> {changes}"] }} ],
              "coprocesses": [ {{ "name": "co", "command": ["sh", "-c", "echo run >> {co}"], "restarts": 2 }} ],
              "tasks": [ {{ "name": "slow", "command": ["sh", "-c", "echo start >> {slow}; sleep 5; echo never >> {slow}"],
                           "frequency": "1s", "timeout": "200ms" }} ],
              "telemetry": {{ "port": {port}, "interfaces": ["lo"],
                "sensors": [ {{ "name": "queue_depth", "help": "depth", "type": "gauge", "poll": 1, "check": ["echo", "42"] }} ] }}
            }}"#,
            addr = consul.addr(),
            changes = changes.display(),
            co = co.display(),
            slow = slow.display()
        ),
    );
    let mut cp = shim(&cfg, &["sleep", "30"]);
    // coprocess: 1 run + 2 restarts
    assert!(
        wait_until(8 * SEC, || d.read("co").lines().count() == 3),
        "{}",
        cp.log()
    );
    // backend: appearing and disappearing upstream → onChange twice
    consul.register(
        serde_json::json!({"ID": "db-1", "Name": "db", "Address": "10.0.0.9", "Port": 5432,
        "Check": {"TTL": "60s", "Status": "passing"}}),
    );
    assert!(
        wait_until(4 * SEC, || d.read("changes").lines().count() == 1),
        "{}",
        cp.log()
    );
    consul.deregister("db-1");
    assert!(
        wait_until(4 * SEC, || d.read("changes").lines().count() == 2),
        "{}",
        cp.log()
    );
    // sensor value reaches /metrics
    assert!(
        wait_until(5 * SEC, || http(
            &format!("127.0.0.1:{port}"),
            "GET",
            "/metrics"
        )
        .1
        .lines()
        .any(|l| l == "queue_depth 42")),
        "{}",
        http(&format!("127.0.0.1:{port}"), "GET", "/metrics").1
    );
    // the task runs at its frequency and is killed at its timeout
    assert!(d.read("slow").lines().filter(|l| *l == "start").count() >= 2);
    assert!(!d.read("slow").contains("never"));
    assert_eq!(d.read("co").lines().count(), 3, "restart budget holds");
    cp.stop();
}

/// Events seen in a DEBUG log, as a sorted set of `{Code source}` strings.
fn event_set(log: &str) -> std::collections::BTreeSet<String> {
    log.lines()
        .filter_map(|l| l.split("event: ").nth(1))
        .filter(|e| !e.starts_with("{Error") && !e.starts_with("{Metric"))
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_2x_config_and_its_conversion_behave_the_same() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("v2-side");
    let v2 = d.write(
        "app.json",
        &format!(
            r#"{{
              "consul": "{addr}",
              "logging": {{ "level": "DEBUG" }},
              "preStart": "true",
              "services": [ {{ "name": "web", "port": 8080, "health": "true", "poll": 1, "ttl": 5, "interfaces": ["lo"] }} ],
              "backends": [ {{ "name": "db", "poll": 1, "onChange": "true" }} ],
              "coprocesses": [ {{ "name": "co", "command": ["sleep", "30"] }} ],
              "tasks": [ {{ "name": "tick", "command": "true", "frequency": "500ms" }} ],
              "preStop": "true",
              "postStop": "true"
            }}"#,
            addr = consul.addr()
        ),
    );
    let (code, converted, err) = run(&["-convert", "-config", v2.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    // the converted config gets its own control socket so both can run at once
    let converted = converted.replacen(
        '{',
        &format!(
            "{{ control: {{ socket: {:?} }},",
            d.path("c.sock").display().to_string()
        ),
        1,
    );
    let v3 = d.write("app.json5", &converted);
    // what reached the catalog while it ran: (service ID, name, address, port)
    type Registered = Vec<(String, String, String, u64)>;
    let catalog = |c: &ConsulDouble| -> Registered {
        c.services()
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(id, v)| {
                        (
                            id.clone(),
                            v["Service"].as_str().unwrap_or_default().to_string(),
                            v["Address"].as_str().unwrap_or_default().to_string(),
                            v["Port"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    type Outcome = (String, serde_json::Value, Registered);
    let run_one = |cfg: &Path, sock: Option<PathBuf>| -> Outcome {
        let mut cp = shim(cfg, &["sleep", "30"]);
        std::thread::sleep(Duration::from_millis(3500));
        let status = sock
            .map(|s| {
                serde_json::from_str(&control(&s, "GET", "/v3/status", None).1).unwrap_or_default()
            })
            .unwrap_or_default();
        let registered = catalog(&consul);
        cp.stop();
        (cp.log(), status, registered)
    };
    let (log2, _, reg2) = run_one(&v2, None);
    let (log3, status3, reg3) = run_one(&v3, Some(d.path("c.sock")));
    let e2 = event_set(&log2);
    for e in [
        "{Startup global}",
        "{ExitSuccess preStart}",
        "{StatusHealthy web}",
        "{ExitSuccess tick}",
        "{Stopped app}",
    ] {
        assert!(e2.contains(e), "{e} missing from {e2:?}");
    }
    assert_eq!(
        e2,
        event_set(&log3),
        "same events\n--- 2.x:\n{log2}\n--- converted:\n{log3}"
    );
    // the same services reached the catalog (2.x registers its check the 2.x way,
    // the conversion the 3.x way: that is the point of converting)
    assert!(!reg2.is_empty());
    assert_eq!(reg2, reg3);
    assert!(catalog(&consul).is_empty(), "both deregistered on stop");
    let names: Vec<&str> = status3["Jobs"]
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["Name"].as_str()).collect())
        .unwrap_or_default();
    for j in [
        "preStart",
        "co",
        "onChange-db",
        "tick",
        "app",
        "preStop",
        "postStop",
    ] {
        assert!(names.contains(&j), "{j} missing from {names:?}");
    }
}

#[test]
fn services_register_with_the_2x_payload_shape() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("v2-payload");
    let cfg = d.write(
        "app.json",
        &format!(
            r#"{{ "consul": "{addr}",
                  "services": [ {{ "name": "web", "port": 8080, "health": "true", "poll": 1, "ttl": 5,
                                   "interfaces": ["lo"], "tags": ["v2"] }} ] }}"#,
            addr = consul.addr()
        ),
    );
    let mut cp = shim(&cfg, &["sleep", "30"]);
    let web = format!("web-{}", containerpilot::catalog::hostname());
    // the check is named after the service ID (3.x uses `service:<ID>`)
    assert!(
        wait_until(6 * SEC, || consul.check_status(&web).as_deref()
            == Some("passing")),
        "{}",
        cp.log()
    );
    assert_eq!(consul.check_status(&format!("service:{web}")), None);
    let checks = consul.checks();
    assert_eq!(checks[&web]["Notes"], "TTL for web set by containerpilot");
    assert_eq!(checks[&web]["ServiceID"], web.as_str());
    assert_eq!(consul.services()[&web]["Tags"], serde_json::json!(["v2"]));
    let reqs = consul.requests();
    assert!(reqs
        .iter()
        .any(|(m, p, _)| m == "PUT" && p == "/v1/agent/check/register"));
    assert!(reqs
        .iter()
        .any(|(m, p, _)| m == "PUT" && *p == format!("/v1/agent/check/pass/{web}?note=ok")));
    assert!(!reqs
        .iter()
        .any(|(_, p, _)| p.starts_with("/v1/agent/check/update/")));
    // an agent that forgot everything gets the service and its check back
    consul.restart();
    assert!(
        wait_until(4 * SEC, || consul.check_status(&web).as_deref()
            == Some("passing")),
        "{}",
        cp.log()
    );
    cp.stop();
    assert!(
        consul.services().get(&web).is_none(),
        "deregistered on SIGTERM"
    );
}

#[test]
fn a_2x_reload_to_shared_keys_only_stays_2x() {
    let consul = ConsulDouble::start();
    let d = TempDir::new("v2-shared");
    let with_service = format!(
        r#"{{ "consul": "{addr}", "services": [ {{ "name": "web", "port": 80, "health": "true", "poll": 1, "ttl": 5, "interfaces": ["lo"] }} ] }}"#,
        addr = consul.addr()
    );
    let cfg = d.write("app.json", &with_service);
    let mut cp = shim(&cfg, &["sleep", "30"]);
    let web = format!("web-{}", containerpilot::catalog::hostname());
    assert!(
        wait_until(6 * SEC, || consul.services().get(&web).is_some()),
        "{}",
        cp.log()
    );
    // only `consul` left: still a 2.x config (a 3.x reading would make SIGHUP a job trigger)
    std::fs::write(&cfg, format!(r#"{{ "consul": "{}" }}"#, consul.addr())).unwrap();
    cp.signal(SIGHUP);
    assert!(
        wait_until(4 * SEC, || consul.services().get(&web).is_none()),
        "{}",
        cp.log()
    );
    std::fs::write(&cfg, &with_service).unwrap();
    cp.signal(SIGHUP);
    assert!(
        wait_until(6 * SEC, || consul.services().get(&web).is_some()),
        "second SIGHUP reloads too: {}",
        cp.log()
    );
    assert!(
        !cp.log().contains("reload on SIGHUP failed"),
        "{}",
        cp.log()
    );
    cp.stop();
}
