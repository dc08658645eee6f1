//! Template bombs: a config whose template would need gigabytes (or forever) is
//! refused with a message naming the limit, by `-validate` running under a 512 MiB
//! address-space limit, and by a running daemon's reload, which answers 400 and
//! keeps serving.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The address space every process in these tests gets.
const AS_LIMIT: u64 = 512 << 20;

/// A 100 000-character string, built inside the template.
const BIG: &str = r#"(printf "%0100000d" 0)"#;

fn limit_address_space(cmd: &mut Command) -> &mut Command {
    // SAFETY: only setrlimit runs between fork and exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `-validate` under the address-space limit: (exit code, stderr).
fn validate_limited(cfg: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("-config")
        .arg(cfg)
        .arg("-validate")
        .env_remove("CONTAINERPILOT");
    let out = limit_address_space(&mut cmd)
        .output()
        .expect("run containerpilot -validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each bomb and the reason its error must give.
fn bombs() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "join of a split",
            format!("/* {{{{join {BIG} (split \"\" {BIG})}}}} */"),
            "error calling join: result exceeds 16777216 bytes",
        ),
        (
            "replaceAll",
            format!("/* {{{{replaceAll \"\" {BIG} {BIG}}}}} */"),
            "error calling replaceAll: result exceeds 16777216 bytes",
        ),
        (
            "regexReplaceAll",
            format!("/* {{{{regexReplaceAll \"\" {BIG} {BIG}}}}} */"),
            "error calling regexReplaceAll: result exceeds 16777216 bytes",
        ),
        (
            "regexReplaceAll with group references",
            format!(
                "/* {{{{regexReplaceAll \"0+\" \"{}\" {BIG}}}}} */",
                "$0".repeat(1000)
            ),
            "error calling regexReplaceAll: result exceeds 16777216 bytes",
        ),
        (
            "split into too many parts",
            r#"/* {{ split "" (printf "%0999999d" 0) }} */"#.to_string(),
            "split: 999999 elements is more than the limit of 100000",
        ),
        (
            "loop",
            "/* {{ range loop 1000000000 }}x{{ end }} */".to_string(),
            "loop: 1000000000 elements is more than the limit of 100000",
        ),
        (
            "nested loops",
            "/* {{ range loop 100000 }}{{ range loop 100000 }}{{ end }}{{ end }} */".to_string(),
            "more than 1000000 range iterations",
        ),
        (
            "range over a huge int",
            "/* {{ range 100000000000 }}{{ end }} */".to_string(),
            "more than 1000000 range iterations",
        ),
        (
            "range over a huge list, printing wide",
            r#"/* {{ range loop 100000 }}{{ $x := printf "%1000000d" . }}{{ end }} */"#.to_string(),
            "the values this template builds exceed 67108864 bytes",
        ),
        (
            "nested printf",
            format!(
                "/* {{{{ $a := printf \"%01000000d\" 0 }}}}{} */",
                r#"{{ $a = printf "%s%s%s%s" $a $a $a $a }}"#.repeat(4)
            ),
            "error calling printf: result exceeds 16777216 bytes",
        ),
        (
            "many variables holding large values",
            format!(
                "/* {} */",
                r#"{{ $a := printf "%01000000d%01000000d%01000000d%01000000d" 0 0 0 0 }}"#
                    .repeat(20)
            ),
            "the values this template builds exceed 67108864 bytes",
        ),
        (
            "output",
            "{{ printf \"%01000000d\" 0 }}".repeat(17),
            "output exceeds 16777216 bytes",
        ),
    ]
}

#[test]
fn validate_refuses_template_bombs_within_512_mib() {
    let d = TempDir::new("bombs");
    for (name, text, reason) in bombs() {
        let cfg = d.write("bomb.json5", &format!("{text}\n{{ jobs: [] }}\n"));
        let (code, err) = validate_limited(&cfg);
        assert_eq!(code, Some(1), "{name}: exit {code:?}, stderr:\n{err}");
        assert!(
            err.contains("could not apply template to config: template: config:1:"),
            "{name}: {err}"
        );
        assert!(err.contains(reason), "{name}: wanted {reason:?} in\n{err}");
    }
    // the same limits leave a real config alone
    let cfg = d.write(
        "good.json5",
        r#"{ jobs: [ {{ range $i := loop 100 }}{ name: "w{{ $i }}", exec: "true" },{{ end }} ] }"#,
    );
    let (code, err) = validate_limited(&cfg);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn reloading_a_template_bomb_is_a_400_and_the_daemon_keeps_serving() {
    let d = TempDir::new("bomb-reload");
    let sock = d.socket();
    let good = format!(
        r#"{{ control: {{ socket: {:?} }}, jobs: [ {{ name: "app", exec: ["sleep", "60"] }} ] }}"#,
        sock.display().to_string()
    );
    let cfg = d.write("cp.json5", &good);
    let mut cmd = Command::new(bin());
    cmd.arg("-config").arg(&cfg).env_remove("CONTAINERPILOT");
    let mut cp = Daemon::start_with(limit_address_space(&mut cmd));
    wait_ready(&sock);

    for (name, text, reason) in bombs() {
        d.write("cp.json5", &format!("{text}\n{good}\n"));
        let (status, body) = control(&sock, "POST", "/v3/reload", None);
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body.contains(reason),
            "{name}: wanted {reason:?} in {body:?}"
        );
        assert_eq!(
            control(&sock, "GET", "/v3/ping", None),
            (200, "ok".into()),
            "{name}"
        );
    }
    assert!(
        cp.child.try_wait().ok().flatten().is_none(),
        "daemon exited"
    );

    // with the good file back, the subcommands and a reload work as before
    d.write("cp.json5", &good);
    let cfg_arg = cfg.to_str().unwrap_or_default();
    assert_eq!(
        run(&["-config", cfg_arg, "-ping"], &[]),
        (0, "ok\n".into(), String::new())
    );
    assert_eq!(run(&["-config", cfg_arg, "-reload"], &[]).0, 0);
    cp.expect_log("reloaded", Duration::from_secs(5));
    let (status, _) = cp.stop();
    assert!(status.is_some(), "daemon did not stop");
}
