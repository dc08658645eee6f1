//! Prometheus /metrics and /status on the telemetry port, fed by real jobs and by
//! `containerpilot -putmetric`, as 3.8's test_telemetry did.

mod common;
use common::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn start(d: &TempDir, port: u16, jobs: &str, iface: &str) -> (Daemon, std::path::PathBuf) {
    let cfg = d.write(
        "cp.json5",
        &format!(
            r#"{{
              control: {{ socket: {sock:?} }},
              telemetry: {{
                port: {port},
                interfaces: {iface},
                tags: ["t1"],
                metrics: [
                  {{ namespace: "containerpilot", subsystem: "app", name: "some_counter", help: "help text", type: "counter" }},
                  {{ name: "free_memory", help: "bytes", type: "gauge" }},
                  {{ namespace: "app", name: "latency", help: "seconds", type: "histogram" }},
                ],
              }},
              jobs: [ {jobs} ],
            }}"#,
            sock = d.socket().display().to_string()
        ),
    );
    let cp = Daemon::start(&cfg);
    wait_ready(&d.socket());
    (cp, cfg)
}

fn metric_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.to_string())
}

#[test]
fn metrics_show_user_and_builtin_series() {
    let d = TempDir::new("tele");
    let port = free_port();
    let bin = bin();
    let (mut cp, cfg) = start(
        &d,
        port,
        &format!(
            r#"{{ name: "sensor", exec: [{bin:?}, "-config", {cfg:?}, "-putmetric", "containerpilot_app_some_counter=21"],
                 when: {{ interval: "300ms" }}, restarts: 1 }},
               {{ name: "app", exec: ["sleep", "30"] }}"#,
            cfg = d.path("cp.json5").display().to_string()
        ),
        r#"["lo"]"#,
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_until(10 * SEC, || {
            metric_line(
                &http(&addr, "GET", "/metrics").1,
                "containerpilot_app_some_counter ",
            )
            .is_some_and(|l| l.ends_with(" 42"))
        }),
        "{}\n{}",
        http(&addr, "GET", "/metrics").1,
        cp.log()
    );
    // name-only metric, matched by its real name and by the 3.8 form
    let (code, _, err) = run(
        &[
            "-config",
            cfg.to_str().unwrap(),
            "-putmetric",
            "free_memory=1024",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        control(
            &d.socket(),
            "POST",
            "/v3/metric",
            Some(r#"{"app_latency": 0.003, "__free_memory": "2048"}"#)
        )
        .0,
        200
    );
    let (code, body) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric_line(&body, "free_memory ").as_deref(),
        Some("free_memory 2048")
    );
    assert_eq!(
        metric_line(&body, "app_latency_bucket{le=\"0.005\"}").as_deref(),
        Some("app_latency_bucket{le=\"0.005\"} 1")
    );
    assert!(
        body.contains("containerpilot_events{code=\"Startup\",source=\"global\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("containerpilot_events{code=\"ExitSuccess\",source=\"sensor\"}"),
        "{body}"
    );
    assert!(
        body.contains("containerpilot_control_http_requests{code=\"200\",path=\"/v3/metric\"}"),
        "{body}"
    );
    assert!(
        !body.contains("code=\"Metric\""),
        "Metric events are not counted"
    );
    for m in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(metric_line(&body, m).is_some(), "{m} missing");
    }
    cp.stop();
}

#[test]
fn bad_metric_updates_are_rejected_whole() {
    let d = TempDir::new("tele-bad");
    let port = free_port();
    let (mut cp, cfg) = start(
        &d,
        port,
        r#"{ name: "app", exec: ["sleep", "30"] }"#,
        r#""lo""#,
    );
    let s = d.socket();
    let (code, body) = control(
        &s,
        "POST",
        "/v3/metric",
        Some(r#"{"free_memory": 5, "nope": 1}"#),
    );
    assert_eq!(code, 400);
    assert!(body.contains("\"nope\""), "{body}");
    let (code, body) = control(&s, "POST", "/v3/metric", Some(r#"{"free_memory": "lots"}"#));
    assert_eq!(code, 400, "{body}");
    let (code, body) = control(
        &s,
        "POST",
        "/v3/metric",
        Some(r#"{"containerpilot_app_some_counter": -1}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(control(&s, "POST", "/v3/metric", Some("[")).0, 422);
    let (code, _, err) = run(
        &["-config", cfg.to_str().unwrap(), "-putmetric", "nope=1"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
    let metrics = http(&format!("127.0.0.1:{port}"), "GET", "/metrics").1;
    assert_eq!(
        metric_line(&metrics, "free_memory ").as_deref(),
        Some("free_memory 0"),
        "nothing applied"
    );
    assert_eq!(control(&s, "GET", "/v3/ping", None).0, 200, "still alive");
    cp.stop();
}

#[test]
fn status_and_routes_on_the_telemetry_port() {
    let d = TempDir::new("tele-status");
    let port = free_port();
    let o = d.path("ip");
    let (mut cp, _) = start(
        &d,
        port,
        &format!(
            r#"{{ name: "app", exec: ["sleep", "30"] }},
               {{ name: "ipcheck", exec: ["sh", "-c", "echo $CONTAINERPILOT_CONTAINERPILOT_IP > {o}"] }}"#,
            o = o.display()
        ),
        r#"["lo"]"#,
    );
    let addr = format!("127.0.0.1:{port}");
    let (code, body) = http(&addr, "GET", "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    let services = v["Services"].as_array().expect("services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["Name"], "containerpilot");
    assert_eq!(services[0]["Address"], "127.0.0.1");
    assert_eq!(services[0]["Port"], port);
    assert_eq!(services[0]["Status"], "healthy");
    assert_eq!(v["Jobs"][0]["Name"], "app");
    assert_eq!(http(&addr, "POST", "/status").0, 405);
    assert_eq!(http(&addr, "GET", "/other").0, 404);
    assert!(wait_until(5 * SEC, || d.read("ip").trim() == "127.0.0.1"));
    // the control socket serves the same status
    let (_, body2) = control(&d.socket(), "GET", "/v3/status", None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body2).unwrap()["Services"],
        v["Services"]
    );
    let (st, took) = cp.stop();
    assert_eq!(st.and_then(|s| s.code()), Some(0));
    assert!(
        took < 2 * SEC,
        "telemetry service does not delay shutdown: {took:?}"
    );
}
