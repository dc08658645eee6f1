//! `when.source` lists (all-of), typo-proof sources and `-graph`, against the
//! real binary.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn status(sock: &std::path::Path) -> Value {
    let (code, body) = control(sock, "GET", "/v3/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

fn job<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["Jobs"]
        .as_array()
        .and_then(|l| l.iter().find(|j| j["Name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {s}"))
}

#[test]
fn a_job_starts_once_all_its_sources_have_sent_the_event() {
    let dir = TempDir::new("deps-multi");
    let sock = dir.socket();
    let marker = dir.path("app-ran");
    let cfg = dir.write(
        "cp.json5",
        &format!(
            r#"{{ control: {{ socket: {sock:?} }}, jobs: [
                {{ name: "db", exec: "true" }},
                {{ name: "cache", exec: "true", when: {{ source: "SIGHUP" }} }},
                {{ name: "app", exec: ["touch", {marker:?}],
                   when: {{ source: ["db", "cache"], once: "exitSuccess" }} }},
                {{ name: "keepalive", exec: ["sleep", "60"] }} ] }}"#,
            sock = sock.display().to_string(),
            marker = marker.display().to_string(),
        ),
    );
    let mut d = Daemon::start(&cfg);
    wait_ready(&sock);
    assert!(
        wait_until(5 * SEC, || job(&status(&sock), "app")["WaitingFor"]
            == serde_json::json!(["cache"])),
        "{}",
        status(&sock)
    );
    let s = status(&sock);
    assert_eq!(job(&s, "app")["DependsOn"], "db,cache");
    std::thread::sleep(SEC);
    assert!(!marker.exists(), "app started with cache missing");
    let (code, table, _) = run(&["-config", cfg.to_str().unwrap(), "-status"], &[]);
    assert_eq!(code, 0);
    assert!(table.contains("db,cache (waiting: cache)"), "{table}");
    d.signal(SIGHUP);
    assert!(wait_until(5 * SEC, || marker.exists()), "{}", d.log());
    assert!(
        wait_until(5 * SEC, || job(&status(&sock), "app")["WaitingFor"]
            .is_null()),
        "{}",
        status(&sock)
    );
    let (st, _) = d.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}

fn typo_config(dir: &TempDir) -> std::path::PathBuf {
    dir.write(
        "cp.json5",
        r#"{
  watches: [ { name: "consul", interval: 3 } ],
  jobs: [
    { name: "database", exec: "true" },
    { name: "app", exec: "true",
      when: { source: "databse", once: "exitSuccess" } },
    { name: "web", exec: "true",
      when: { source: ["database", "watch.consl"], each: "changed" } },
    { name: "a", exec: "true", when: { source: "b", once: "healthy" } },
    { name: "b", exec: "true", health: { exec: "true", interval: 1, ttl: 2 },
      when: { source: "a", once: "exitSuccess" } },
  ]
}"#,
    )
}

#[test]
fn validate_names_unknown_sources_with_a_suggestion() {
    let dir = TempDir::new("deps-typo");
    let cfg = typo_config(&dir);
    let (code, _, err) = run(&["-config", cfg.to_str().unwrap(), "-validate"], &[]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "line 6: jobs[1].when.source: unknown source \"databse\": no job, watch (watch.<name>), health check (check.<job>) or \"global\" has that name; did you mean \"database\"?",
        "line 8: jobs[2].when.source: unknown source \"watch.consl\"",
        "did you mean \"watch.consul\"?",
        "line 9: jobs[3].when.source: jobs wait for each other and can never start: a -> b -> a",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Start-up refuses the same config, with the same words.
    let mut d = Daemon::start(&cfg);
    let st = d.wait_exit(10 * SEC).expect("exits");
    assert_eq!(st.code(), Some(1));
    assert!(
        d.log().contains("did you mean \"database\"?"),
        "{}",
        d.log()
    );
}

#[test]
fn reload_with_an_unknown_source_is_refused_and_the_old_config_kept() {
    let dir = TempDir::new("deps-reload");
    let sock = dir.socket();
    let write = |source: &str| {
        dir.write(
            "cp.json5",
            &format!(
                r#"{{ control: {{ socket: {:?} }}, jobs: [
                    {{ name: "db", exec: ["sleep", "60"] }},
                    {{ name: "app", exec: "true", when: {{ source: {source:?}, once: "stopped" }} }} ] }}"#,
                sock.display().to_string()
            ),
        )
    };
    let cfg = write("db");
    let _d = Daemon::start(&cfg);
    wait_ready(&sock);
    write("dbb");
    let (code, body) = control(&sock, "POST", "/v3/reload", None);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("did you mean \\\"db\\\"?") || body.contains("did you mean \"db\"?"),
        "{body}"
    );
    assert_eq!(job(&status(&sock), "app")["DependsOn"], "db");
}

/// `"from" -> "to" [label="..."]` lines of DOT output.
fn edges(dot: &str) -> BTreeSet<(String, String, String)> {
    let unq = |s: &str| s.trim().trim_matches('"').replace("\\\"", "\"");
    dot.lines()
        .filter_map(|l| {
            let l = l.trim().strip_suffix(';')?;
            let (lhs, attrs) = l.split_once(" [")?;
            let (from, to) = lhs.split_once(" -> ")?;
            let label = attrs.split("label=").nth(1)?.split('"').nth(1)?.to_string();
            Some((unq(from), unq(to), label))
        })
        .collect()
}

#[test]
fn graph_prints_the_dependency_graph_as_dot() {
    let dir = TempDir::new("deps-graph");
    let cfg = dir.write(
        "cp.json5",
        r#"{
  watches: [ { name: "backend", interval: 3 } ],
  jobs: [
    { name: "setup", exec: "true" },
    { name: "db", exec: "db", when: { source: "setup", once: "exitSuccess" },
      health: { tcp: "127.0.0.1:5432", interval: 2, ttl: 5 } },
    { name: "app", exec: "app", when: { source: ["db", "watch.backend"], once: "healthy" } },
    { name: "reconfig", exec: "reconfig", when: { source: "watch.backend", each: "changed" } },
    { name: "drain", exec: "drain", when: { source: "app", once: "stopping" } },
    { name: "rotate", exec: "rotate", when: { source: "SIGHUP" } },
    { name: "report", exec: "report", when: { cron: "0 * * * *" } },
  ]
}"#,
    );
    let (code, out, err) = run(&["-config", cfg.to_str().unwrap(), "-graph"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("digraph containerpilot {"), "{out}");
    assert!(out.trim_end().ends_with('}'), "{out}");
    let e = edges(&out);
    let want: BTreeSet<(String, String, String)> = [
        ("global", "setup", "once startup"),
        ("setup", "db", "once exitSuccess"),
        ("db", "app", "once healthy"),
        ("watch.backend", "app", "once healthy"),
        ("watch.backend", "reconfig", "each changed"),
        ("app", "drain", "once stopping"),
        ("SIGHUP", "rotate", "each signal"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(e, want, "{out}");
    assert!(
        out.contains("\"report\" [label=\"report\\ncron 0 * * * *\"];"),
        "{out}"
    );
    // A config error is reported instead of a graph.
    let bad = dir.write(
        "bad.json5",
        r#"{ jobs: [ { name: "x", when: { source: "y", once: "stopped" } } ] }"#,
    );
    let (code, out, err) = run(&["-config", bad.to_str().unwrap(), "-graph"], &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("jobs[0].when.source: unknown source \"y\""),
        "{err}"
    );
}
