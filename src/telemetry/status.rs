//! The `/status` (telemetry) and `/v3/status` (control) body, and the table
//! `containerpilot -status` prints from it.

use serde_json::Value;

/// One job as the status page shows it; `advertised` jobs are listed under
/// "Services" with their address and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    pub name: String,
    /// `healthy`, `unhealthy`, `maintenance` or `unknown`.
    pub status: &'static str,
    pub advertised: bool,
    pub address: Option<String>,
    pub port: u16,
    /// The `when.source`s the job starts on (`global` left out).
    pub depends_on: Vec<String>,
    /// Those of them whose event has not come yet, while the job waits.
    pub waiting_for: Vec<String>,
    /// `when.cron` jobs: the next run, RFC 3339 UTC.
    pub next_run: Option<String>,
    pub pid: Option<i32>,
    /// Restarts left; `None` = unlimited.
    pub restarts_left: Option<u32>,
    /// Render jobs: what the last render did.
    pub render: Option<RenderStatus>,
}

/// A render job's last render (`Render` in its entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderStatus {
    pub dest: String,
    /// RFC 3339 UTC time of the last render; `None` before the first.
    pub last_render: Option<String>,
    /// `written`, `unchanged` or `failed`.
    pub result: Option<&'static str>,
    /// Why the last render failed.
    pub error: Option<String>,
    /// `fnv1a64:<16 hex digits>` of the content last written.
    pub hash: Option<String>,
}

fn render_json(r: &RenderStatus) -> String {
    format!(
        ",\"Render\":{{\"Dest\":{},\"LastRender\":{},\"Result\":{},\"Error\":{},\"Hash\":{}}}",
        js(&r.dest),
        opt_js(r.last_render.as_deref().map(js)),
        opt_js(r.result.map(js)),
        opt_js(r.error.as_deref().map(js)),
        opt_js(r.hash.as_deref().map(js)),
    )
}

/// One watch as the status page shows it (`WatchDetails`); `Watches` keeps the
/// 3.8 list of names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchStatus {
    pub name: String,
    /// `service` or `key`.
    pub kind: &'static str,
    /// The catalog index the next blocking query waits from (0 = none yet).
    pub index: u64,
    /// RFC 3339 UTC time of the last change seen.
    pub last_change: Option<String>,
    /// Service watches: passing instances last seen.
    pub instances: Option<usize>,
    /// Key watches: the value's size in bytes and its modify index; both
    /// `None` while the key does not exist. The value itself is never shown.
    pub value_size: Option<usize>,
    pub modify_index: Option<u64>,
    /// True while the watch's last query failed.
    pub failing: bool,
}

fn watch_json(w: &WatchStatus) -> String {
    let mut out = format!(
        "{{\"Name\":{},\"Kind\":{},\"Index\":{},\"LastChange\":{},\"Failing\":{}",
        js(&w.name),
        js(w.kind),
        w.index,
        opt_js(w.last_change.as_deref().map(js)),
        w.failing
    );
    if w.kind == "key" {
        out.push_str(&format!(
            ",\"ValueSize\":{},\"ModifyIndex\":{}",
            opt_js(w.value_size),
            opt_js(w.modify_index)
        ));
    } else {
        out.push_str(&format!(",\"Instances\":{}", w.instances.unwrap_or(0)));
    }
    out.push('}');
    out
}

fn js(s: &str) -> String {
    Value::from(s).to_string()
}

fn opt_js<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |x| x.to_string())
}

/// The fields every entry carries beyond the 3.8 shape (SPEC §3.3):
/// `DependsOn` is the sources as one comma-separated string (a plain name for
/// the usual single source), `WaitingFor` the ones still missing as a list.
fn extras(j: &JobStatus) -> String {
    let restarts = j
        .restarts_left
        .map_or_else(|| js("unlimited"), |n| n.to_string());
    let depends = (!j.depends_on.is_empty()).then(|| js(&j.depends_on.join(",")));
    let render = j.render.as_ref().map(render_json).unwrap_or_default();
    format!(
        "\"DependsOn\":{},\"WaitingFor\":{},\"NextRun\":{},\"Pid\":{},\"Restarts\":{}{render}",
        opt_js(depends),
        list(j.waiting_for.iter().map(|w| js(w)).collect()),
        opt_js(j.next_run.as_deref().map(js)),
        opt_js(j.pid),
        restarts
    )
}

/// Empty lists are `null`, as Go encodes a nil slice.
fn list(items: Vec<String>) -> String {
    if items.is_empty() {
        "null".to_string()
    } else {
        format!("[{}]", items.join(","))
    }
}

/// Compact JSON with a trailing newline (Go's `json.Encoder` output), keys in
/// the 3.8 order: Version, Jobs, Services, Watches (names), then WatchDetails;
/// entries in the order given.
pub fn status_json(version: &str, jobs: &[JobStatus], watches: &[WatchStatus]) -> String {
    let plain = jobs
        .iter()
        .filter(|j| !j.advertised)
        .map(|j| {
            format!(
                "{{\"Name\":{},\"Status\":{},{}}}",
                js(&j.name),
                js(j.status),
                extras(j)
            )
        })
        .collect();
    let services = jobs
        .iter()
        .filter(|j| j.advertised)
        .map(|j| {
            format!(
                "{{\"Name\":{},\"Address\":{},\"Port\":{},\"Status\":{},{}}}",
                js(&j.name),
                js(j.address.as_deref().unwrap_or("")),
                j.port,
                js(j.status),
                extras(j)
            )
        })
        .collect();
    let names = watches.iter().map(|w| js(&w.name)).collect();
    let details = watches.iter().map(watch_json).collect();
    format!(
        "{{\"Version\":{},\"Jobs\":{},\"Services\":{},\"Watches\":{},\"WatchDetails\":{}}}\n",
        js(version),
        list(plain),
        list(services),
        list(names),
        list(details)
    )
}

/// A cell from untrusted JSON: strings as-is (control characters replaced so
/// they cannot move the terminal cursor), numbers as written, else "-".
fn cell(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.is_empty() => s
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".to_string(),
    }
}

fn address(entry: &Value) -> String {
    let host = cell(entry.get("Address"));
    match (host.as_str(), entry.get("Port").and_then(Value::as_u64)) {
        ("-", _) => "-".to_string(),
        (h, Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
        (h, Some(p)) => format!("{h}:{p}"),
        (h, None) => h.to_string(),
    }
}

/// What a job waits on: its sources (with the missing ones when it waits for
/// several), or its next cron run.
fn depends_cell(entry: &Value) -> String {
    if let Some(next) = entry.get("NextRun").filter(|v| v.is_string()) {
        return format!("cron, next {}", cell(Some(next)));
    }
    let sources = cell(entry.get("DependsOn"));
    let waiting: Vec<String> = entry
        .get("WaitingFor")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(|w| cell(Some(w))).collect())
        .unwrap_or_default();
    if sources.contains(',') && !waiting.is_empty() {
        format!("{sources} (waiting: {})", waiting.join(","))
    } else {
        sources
    }
}

fn row(entry: &Value, addr: String) -> [String; 6] {
    [
        cell(entry.get("Name")),
        cell(entry.get("Status")),
        cell(entry.get("Pid")),
        cell(entry.get("Restarts")),
        depends_cell(entry),
        addr,
    ]
}

fn entries<'a>(status: &'a Value, key: &str) -> &'a [Value] {
    status
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Rows padded to their widest cell per column; no trailing spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One `WatchDetails` entry: what it last saw and whether it is failing.
fn watch_row(w: &Value) -> [String; 6] {
    let number = |k: &str| w.get(k).and_then(Value::as_u64);
    let seen = match w.get("Kind").and_then(Value::as_str) {
        Some("key") => match number("ValueSize") {
            Some(n) => format!("{n} bytes"),
            None => "no key".to_string(),
        },
        _ => match number("Instances") {
            Some(1) => "1 instance".to_string(),
            Some(n) => format!("{n} instances"),
            None => "-".to_string(),
        },
    };
    let state = match w.get("Failing").and_then(Value::as_bool) {
        Some(true) => "failing",
        Some(false) => "ok",
        None => "-",
    };
    [
        cell(w.get("Name")),
        cell(w.get("Kind")),
        cell(w.get("Index")),
        cell(w.get("LastChange")),
        seen,
        state.to_string(),
    ]
}

/// Jobs and services in one table, then the watches in another (or, from a
/// daemon without `WatchDetails`, a `WATCHES:` line of names).
pub fn status_table(status: &Value) -> String {
    let header = ["NAME", "STATUS", "PID", "RESTARTS", "DEPENDS ON", "ADDRESS"].map(String::from);
    let mut rows = vec![header];
    rows.extend(entries(status, "Jobs").iter().map(|j| row(j, "-".into())));
    rows.extend(
        entries(status, "Services")
            .iter()
            .map(|s| row(s, address(s))),
    );
    let mut out = table(&rows);
    let details = entries(status, "WatchDetails");
    if !details.is_empty() {
        let header = ["WATCH", "KIND", "INDEX", "LAST CHANGE", "SEEN", "STATE"].map(String::from);
        let mut rows = vec![header];
        rows.extend(details.iter().map(watch_row));
        out.push('\n');
        out.push_str(&table(&rows));
        return out;
    }
    let watches: Vec<String> = entries(status, "Watches")
        .iter()
        .map(|w| cell(Some(w)))
        .collect();
    if !watches.is_empty() {
        out.push_str(&format!("\nWATCHES: {}\n", watches.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<JobStatus> {
        vec![
            JobStatus {
                name: "app".into(),
                status: "healthy",
                advertised: true,
                address: Some("10.0.0.2".into()),
                port: 8080,
                depends_on: vec!["setup".into()],
                waiting_for: Vec::new(),
                next_run: None,
                pid: Some(42),
                restarts_left: None,
                render: None,
            },
            JobStatus {
                name: "setup".into(),
                status: "unknown",
                advertised: false,
                address: None,
                port: 0,
                depends_on: Vec::new(),
                waiting_for: Vec::new(),
                next_run: None,
                pid: None,
                restarts_left: Some(0),
                render: None,
            },
            JobStatus {
                name: "containerpilot".into(),
                status: "healthy",
                advertised: true,
                address: Some("10.0.0.2".into()),
                port: 9090,
                depends_on: Vec::new(),
                waiting_for: Vec::new(),
                next_run: None,
                pid: None,
                restarts_left: Some(3),
                render: None,
            },
        ]
    }

    fn watches() -> Vec<WatchStatus> {
        vec![
            WatchStatus {
                name: "db".into(),
                kind: "service",
                index: 42,
                last_change: Some("2026-12-05T18:49:54Z".into()),
                instances: Some(2),
                value_size: None,
                modify_index: None,
                failing: false,
            },
            WatchStatus {
                name: "cfg".into(),
                kind: "key",
                index: 17,
                last_change: None,
                instances: None,
                value_size: Some(1234),
                modify_index: Some(16),
                failing: true,
            },
        ]
    }

    #[test]
    fn render_jobs_show_their_last_render() {
        let mut job = sample().remove(1);
        job.render = Some(RenderStatus {
            dest: "/etc/nginx/nginx.conf".into(),
            last_render: None,
            result: None,
            error: None,
            hash: None,
        });
        let out = status_json("3.9.0", std::slice::from_ref(&job), &[]);
        assert!(out.contains(r#""Restarts":0,"Render":{"Dest":"/etc/nginx/nginx.conf","LastRender":null,"Result":null,"Error":null,"Hash":null}}"#), "{out}");
        job.render = Some(RenderStatus {
            dest: "/x".into(),
            last_render: Some("2026-12-05T18:49:54.5Z".into()),
            result: Some("failed"),
            error: Some("template t:1:2: boom \"x\"".into()),
            hash: Some("fnv1a64:00000000000000ff".into()),
        });
        let out = status_json("3.9.0", &[job], &[]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let r = &v["Jobs"][0]["Render"];
        assert_eq!(r["Result"], "failed");
        assert_eq!(r["Error"], "template t:1:2: boom \"x\"");
        assert_eq!(r["Hash"], "fnv1a64:00000000000000ff");
        assert_eq!(r["LastRender"], "2026-12-05T18:49:54.5Z");
    }

    #[test]
    fn json_shape() {
        let out = status_json("3.9.0", &sample(), &watches());
        assert_eq!(
            out,
            concat!(
                r#"{"Version":"3.9.0","#,
                r#""Jobs":[{"Name":"setup","Status":"unknown","DependsOn":null,"WaitingFor":null,"NextRun":null,"Pid":null,"Restarts":0}],"#,
                r#""Services":[{"Name":"app","Address":"10.0.0.2","Port":8080,"Status":"healthy","DependsOn":"setup","WaitingFor":null,"NextRun":null,"Pid":42,"Restarts":"unlimited"},"#,
                r#"{"Name":"containerpilot","Address":"10.0.0.2","Port":9090,"Status":"healthy","DependsOn":null,"WaitingFor":null,"NextRun":null,"Pid":null,"Restarts":3}],"#,
                r#""Watches":["db","cfg"],"#,
                r#""WatchDetails":[{"Name":"db","Kind":"service","Index":42,"LastChange":"2026-12-05T18:49:54Z","Failing":false,"Instances":2},"#,
                r#"{"Name":"cfg","Kind":"key","Index":17,"LastChange":null,"Failing":true,"ValueSize":1234,"ModifyIndex":16}]}"#,
                "\n"
            )
        );
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["Services"][0]["Port"], 8080);
    }

    #[test]
    fn empty_lists_are_null_and_strings_escaped() {
        assert_eq!(
            status_json("dev", &[], &[]),
            "{\"Version\":\"dev\",\"Jobs\":null,\"Services\":null,\"Watches\":null,\"WatchDetails\":null}\n"
        );
        let mut j = sample().remove(1);
        j.name = "a\"b".into();
        let out = status_json("v", &[j], &[]);
        assert!(out.contains(r#""Name":"a\"b""#), "{out}");
    }

    #[test]
    fn table_from_json() {
        let json = status_json("3.9.0", &sample(), &watches());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            status_table(&v),
            concat!(
                "NAME            STATUS   PID  RESTARTS   DEPENDS ON  ADDRESS\n",
                "setup           unknown  -    0          -           -\n",
                "app             healthy  42   unlimited  setup       10.0.0.2:8080\n",
                "containerpilot  healthy  -    3          -           10.0.0.2:9090\n",
                "\n",
                "WATCH  KIND     INDEX  LAST CHANGE           SEEN         STATE\n",
                "db     service  42     2026-12-05T18:49:54Z  2 instances  ok\n",
                "cfg    key      17     -                     1234 bytes   failing\n",
            )
        );
        // a daemon without WatchDetails: the 3.8 list of names
        let old = serde_json::json!({"Jobs": null, "Services": null, "Watches": ["db", "cache"]});
        assert_eq!(
            status_table(&old),
            concat!(
                "NAME  STATUS  PID  RESTARTS  DEPENDS ON  ADDRESS\n",
                "\n",
                "WATCHES: db, cache\n"
            )
        );
    }

    #[test]
    fn table_shows_what_a_job_waits_for() {
        let mut jobs = sample();
        jobs[1].depends_on = vec!["db".into(), "cache".into()];
        jobs[1].waiting_for = vec!["cache".into()];
        jobs[2].next_run = Some("2026-12-05T19:15:00Z".into());
        let json = status_json("v", &jobs, &[]);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Jobs"][0]["DependsOn"], "db,cache");
        assert_eq!(v["Jobs"][0]["WaitingFor"], serde_json::json!(["cache"]));
        let t = status_table(&v);
        assert!(t.contains("db,cache (waiting: cache)"), "{t}");
        assert!(t.contains("cron, next 2026-12-05T19:15:00Z"), "{t}");
    }

    #[test]
    fn table_tolerates_odd_input() {
        let v: Value = serde_json::json!({
            "Jobs": null,
            "Services": [{"Name": "v6\u{1b}[2J", "Address": "fd00::1", "Port": 80}, 7],
            "Watches": "nope"
        });
        assert_eq!(
            status_table(&v),
            concat!(
                "NAME    STATUS  PID  RESTARTS  DEPENDS ON  ADDRESS\n",
                "v6?[2J  -       -    -         -           [fd00::1]:80\n",
                "-       -       -    -         -           -\n"
            )
        );
        assert_eq!(
            status_table(&Value::Null),
            "NAME  STATUS  PID  RESTARTS  DEPENDS ON  ADDRESS\n"
        );
    }
}
