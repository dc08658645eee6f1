//! The binary's command line: -version, -help, -template, -validate, usage errors,
//! and every config fixture through -validate.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

fn fixtures(dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json5"))
        .collect();
    v.sort();
    v
}

#[test]
fn version_prints_version_and_hash() {
    let (code, out, _) = run(&["-version"], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], format!("Version: {}", env!("CARGO_PKG_VERSION")));
    assert!(
        lines[1].starts_with("GitHash: ") && lines[1].len() > 9,
        "{out}"
    );
    // Go flag forms
    assert_eq!(run(&["--version"], &[]).0, 0);
    assert_eq!(run(&["-version=true"], &[]).0, 0);
}

#[test]
fn help_prints_usage_and_exits_2() {
    let (code, out, err) = run(&["-help"], &[]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("-config string") && err.contains("-putenv"),
        "{err}"
    );
}

#[test]
fn usage_error_is_one_line_naming_the_flag() {
    let (code, _, err) = run(&["-bogus"], &[]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("-bogus"), "{err}");
    let (code, _, err) = run(&["-putmetric", "novalue"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("key=val"), "{err}");
}

#[test]
fn missing_config_is_an_error() {
    let (code, _, err) = run(&["-validate"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("-config flag is required"), "{err}");
}

#[test]
fn template_renders_to_stdout_and_to_a_file() {
    let d = TempDir::new("tpl");
    let src = "{ consul: \"{{ .CONSUL | default \"localhost\" }}:8500\", jobs: [{{ range $i := loop 2 }}{ name: \"j{{ $i }}\" },{{ end }}] }";
    let cfg = d.write("in.json5", src);
    let expect = "{ consul: \"c1:8500\", jobs: [{ name: \"j0\" },{ name: \"j1\" },] }";
    let (code, out, err) = run(
        &["-config", cfg.to_str().unwrap(), "-template"],
        &[("CONSUL", "c1")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, expect, "raw bytes, no newline added");
    let (code, out, _) = run(
        &["-config", cfg.to_str().unwrap(), "-template", "-out", "-"],
        &[("CONSUL", "c1")],
    );
    assert_eq!((code, out.as_str()), (0, expect));
    let dest = d.path("out.json5");
    let (code, out, _) = run(
        &[
            "-template",
            "-config",
            cfg.to_str().unwrap(),
            "-out",
            dest.to_str().unwrap(),
        ],
        &[("CONSUL", "c1")],
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), expect);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // CONTAINERPILOT env is the fallback for -config
    let (code, out, _) = run(
        &["-template"],
        &[("CONTAINERPILOT", cfg.to_str().unwrap()), ("CONSUL", "c2")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("c2:8500"));
}

#[test]
fn template_errors_name_line_and_column() {
    let d = TempDir::new("tplerr");
    let cfg = d.write("in.json5", "{\n  jobs: [ {{ nosuchfunc .X }} ]\n}");
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-template"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("could not apply template to config"), "{err}");
    assert!(err.contains("config:2:11"), "{err}");
    assert!(err.contains("\"nosuchfunc\""), "{err}");
}

#[test]
fn validate_accepts_every_valid_fixture() {
    let all = fixtures("tests/fixtures/config");
    assert!(all.len() >= 12);
    for f in all.iter().chain(std::iter::once(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example.json5"),
    )) {
        let (code, out, err) = run(&["-validate", "-config", f.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{}: {err}", f.display());
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains(": OK: "), "{out}");
    }
    let (_, out, _) = run(
        &[
            "-check",
            "-config",
            &format!(
                "{}/tests/fixtures/config/full.json5",
                env!("CARGO_MANIFEST_DIR")
            ),
        ],
        &[],
    );
    assert!(out.contains("10 jobs, 2 watches"), "{out}");
}

#[test]
fn validate_rejects_every_invalid_fixture_naming_the_field() {
    let all = fixtures("tests/fixtures/config/invalid");
    assert!(all.len() >= 40, "at least 40 invalid configs, one per rule");
    for f in all {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{} lacks an expect line", f.display()))
            .to_string();
        let (code, out, err) = run(&["-validate", "-config", f.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{}: {out}", f.display());
        assert!(
            err.contains(&expect),
            "{}: expected {expect:?} in:\n{err}",
            f.display()
        );
        assert!(
            err.contains("line "),
            "{}: error names the line:\n{err}",
            f.display()
        );
    }
}

#[test]
fn validate_reports_every_error_not_just_the_first() {
    let d = TempDir::new("many");
    let cfg = d.write(
        "c.json5",
        "{\n  jobs: [\n    { name: \"\" },\n    { name: \"svc\", port: 80 },\n    { name: \"c\", restarts: \"sometimes\" },\n  ],\n  watches: [ { name: \"db\" } ],\n}",
    );
    let (code, _, err) = run(&["-validate", "-config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("4 error(s)"), "{err}");
    assert!(err.contains("line 3: jobs[0].name"), "{err}");
    assert!(err.contains("line 4: jobs[1].health"), "{err}");
    assert!(err.contains("line 5: jobs[2].restarts"), "{err}");
    assert!(err.contains("watches[0].interval"), "{err}");
}

#[test]
fn validate_shows_syntax_errors_with_a_caret() {
    let d = TempDir::new("syntax");
    let cfg = d.write(
        "c.json5",
        "{\n  jobs: [\n    { name: \"a\" exec: \"x\" }\n  ]\n}",
    );
    let (code, _, err) = run(&["-validate", "-config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("parse error at line:col [3:17]"), "{err}");
    assert!(
        err.contains("    3:     { name: \"a\" exec: \"x\" }"),
        "{err}"
    );
    assert!(err.contains('^'), "{err}");
}

#[test]
fn maintenance_takes_only_enable_or_disable() {
    let d = TempDir::new("maint-word");
    let sock = d.socket();
    let cfg = d.write(
        "c.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, jobs: [ {{ name: \"a\", exec: [\"sleep\", \"60\"] }} ] }}",
            sock
        ),
    );
    let c = cfg.to_str().unwrap();
    let mut daemon = Daemon::start(&cfg);
    wait_ready(&sock);
    assert_eq!(run(&["-config", c, "-maintenance", "enable"], &[]).0, 0);
    for word in ["off", "Disable", "true"] {
        let (code, out, err) = run(&["-config", c, "-maintenance", word], &[]);
        assert_eq!(code, 2, "{word}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("-maintenance") && err.contains(&format!("{word:?}")),
            "{err}"
        );
    }
    // The daemon never heard of the typos: it is still in maintenance.
    assert_eq!(
        control(&sock, "POST", "/v3/maintenance/enable", None),
        (200, "{\"updated\":false}".into())
    );
    assert!(daemon.stop().0.is_some_and(|s| s.success()));
}

#[test]
fn no_catalog_notice_is_said_once_at_start_up() {
    let d = TempDir::new("no-catalog");
    let sock = d.socket();
    // `web` would be registered but never turns healthy; `checked` is healthy but
    // advertises no port, so it is never registered anyway.
    let cfg = d.write(
        "c.json5",
        &format!(
            "{{ control: {{ socket: {:?} }}, jobs: [
              {{ name: \"web\", exec: [\"sleep\", \"60\"], port: 8080,
                 health: {{ exec: [\"false\"], interval: 1, ttl: 5 }} }},
              {{ name: \"checked\", exec: [\"sleep\", \"60\"],
                 health: {{ exec: [\"true\"], interval: 1, ttl: 5 }} }} ] }}",
            sock
        ),
    );
    let c = cfg.to_str().unwrap();
    let mut daemon = Daemon::start(&cfg);
    wait_ready(&sock);
    let notice = "no catalog configured, service is not registered";
    daemon.expect_log(&format!("web: {notice}"), Duration::from_secs(5));
    // Health passes, a maintenance round trip and the shutdown are all catalog
    // actions; none may repeat the notice or say it for `checked`.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(run(&["-config", c, "-maintenance", "enable"], &[]).0, 0);
    assert_eq!(run(&["-config", c, "-maintenance", "disable"], &[]).0, 0);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(daemon.stop().0.is_some_and(|s| s.success()));
    let log = daemon.log();
    assert_eq!(log.matches(notice).count(), 1, "{log}");
}

/// exec(2) takes C strings, and so does bind(2): `-validate` refuses a NUL byte
/// where the daemon could never use it, naming the line and the field.
#[test]
fn validate_rejects_nul_bytes_in_socket_and_exec_arguments() {
    let d = TempDir::new("nul");
    let v3 = d.write(
        "v3.json5",
        r#"{
  control: { socket: "/tmp/a\u0000b.sock" },
  jobs: [
    { name: "a", exec: "/bin/echo a\u0000b" },
    { name: "b", exec: ["/bin/echo", "x\u0000"] },
    { name: "c", exec: "true", health: { exec: ["check", "ok", "\u0000"], interval: 1, ttl: 2 } },
    { name: "d", exec: ["/bin/echo", "fine"] },
  ],
}"#,
    );
    let (code, out, err) = run(&["-validate", "-config", v3.to_str().unwrap()], &[]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("4 error(s)"), "{err}");
    for want in [
        "line 2: control.socket: must not contain a NUL byte",
        "line 4: jobs[0].exec: must not contain a NUL byte",
        "line 5: jobs[1].exec[1]: must not contain a NUL byte",
        "line 6: jobs[2].health.exec[2]: must not contain a NUL byte",
    ] {
        assert!(err.contains(want), "wanted {want:?} in\n{err}");
    }

    let v2 = d.write(
        "v2.json5",
        r#"{
  consul: "localhost:8500",
  preStart: "/bin/true\u0000",
  backends: [ { name: "db", poll: 1, onChange: ["/bin/reload", "\u0000"] } ],
  coprocesses: [ { command: "sidecar --x=\u0000" } ],
  tasks: [ { name: "t", command: ["x", "y\u0000"], frequency: "1s" } ],
}"#,
    );
    let (code, _, err) = run(&["-validate", "-config", v2.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "line 3: preStart: must not contain a NUL byte",
        "line 4: backends[0].onChange[1]: must not contain a NUL byte",
        "line 5: coprocesses[0].command: must not contain a NUL byte",
        "line 6: tasks[0].command[1]: must not contain a NUL byte",
    ] {
        assert!(err.contains(want), "wanted {want:?} in\n{err}");
    }
}

/// The socket subcommands need only a valid `control` section: a daemon whose file
/// was since broken elsewhere is still reachable.
#[test]
fn socket_subcommands_need_only_the_control_section() {
    let d = TempDir::new("control-only");
    let sock = d.socket();
    let control = format!("control: {{ socket: {:?} }}", sock);
    let cfg = d.write(
        "c.json5",
        &format!("{{ {control}, jobs: [ {{ name: \"a\", exec: [\"sleep\", \"60\"] }} ] }}"),
    );
    let c = cfg.to_str().unwrap();
    let mut daemon = Daemon::start(&cfg);
    wait_ready(&sock);

    d.write(
        "c.json5",
        &format!(
            "{{ {control}, jobs: [ {{ name: \"a\", exec: [\"sleep\", \"60\"], restarts: \"sometimes\" }} ],\n  watches: [ {{ name: \"\" }} ], logging: {{ level: \"loud\" }} }}"
        ),
    );
    assert_eq!(run(&["-validate", "-config", c], &[]).0, 1);
    assert_eq!(
        run(&["-config", c, "-ping"], &[]),
        (0, "ok\n".into(), String::new())
    );
    let (code, out, err) = run(&["-config", c, "-putenv", "CP_CONTROL_ONLY=yes"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&["-config", c, "-status", "-json"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("\"a\""), "{out}");

    // a broken control section itself is still an error, naming the field
    d.write(
        "c.json5",
        &format!(
            "{{ control: {{ socket: {:?}, mode: \"999\" }}, jobs: [] }}",
            sock
        ),
    );
    let (code, out, err) = run(&["-config", c, "-ping"], &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("control.mode: invalid mode '999'") && err.lines().count() == 1,
        "{err}"
    );
    d.write("c.json5", "{ control: { socket: 5 ");
    let (code, _, err) = run(&["-config", c, "-ping"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("parse error"), "{err}");

    assert!(daemon.stop().0.is_some_and(|s| s.success()));
}

#[test]
fn bundled_example_shows_putenv_in_the_ticker() {
    // The README's quick start, on a socket of its own.
    let d = TempDir::new("example-putenv");
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example.json5"),
    )
    .expect("read example");
    let sock = d.socket();
    let text = example.replace(
        "\"/tmp/containerpilot-example.socket\"",
        &format!("{:?}", sock.display().to_string()),
    );
    assert_ne!(text, example, "the example's socket path moved");
    let cfg = d.write("example.json5", &text);
    let mut daemon = Daemon::start(&cfg);
    daemon.expect_log("GREETING is unset", Duration::from_secs(5));
    let c = cfg.to_str().unwrap();
    assert_eq!(run(&["-config", c, "-putenv", "GREETING=hello"], &[]).0, 0);
    daemon.expect_log("GREETING is hello", Duration::from_secs(15));
    assert!(daemon.stop().0.is_some_and(|s| s.success()));
}
