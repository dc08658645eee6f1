//! The control plane's routes: an HTTP request on the control socket becomes a
//! `Command` for the loop, or an error response. Validation happens here, before
//! anything is applied, so a rejected request changes nothing.

mod body;
pub mod client;

pub use body::{EnvUpdate, ENV_MAX_BODY};

use crate::http::{BodyRule, Request, Response};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `(key, Some(v))` sets, `(key, None)` unsets, in order.
    PutEnv(EnvUpdate),
    PutMetric(Vec<(String, serde_json::Value)>),
    Reload,
    Maintenance(bool),
    Ping,
    Status,
    Signal {
        job: String,
        signal: String,
    },
}

/// The `path` label for the request counter: known routes only, so a client
/// probing random paths cannot grow the label set.
pub fn path_label(path: &str) -> &'static str {
    match path {
        "/v3/environ" => "/v3/environ",
        "/v3/env" => "/v3/env",
        "/v3/metric" => "/v3/metric",
        "/v3/reload" => "/v3/reload",
        "/v3/maintenance/enable" => "/v3/maintenance/enable",
        "/v3/maintenance/disable" => "/v3/maintenance/disable",
        "/v3/ping" => "/v3/ping",
        "/v3/status" => "/v3/status",
        p if p.starts_with("/v3/signal/") => "/v3/signal",
        _ => "other",
    }
}

pub fn not_found() -> Response {
    Response::text(404, "404 page not found\n")
}

fn method_not_allowed() -> Response {
    Response::text(405, "Method Not Allowed\n")
}

fn bad(status: u16, msg: &str) -> Response {
    Response::text(status, &format!("{msg}\n"))
}

/// Largest body a control request may carry.
pub const MAX_BODY: usize = 1 << 20;

/// A control route, known from the method and path alone.
enum Route<'a> {
    Ping,
    Status,
    Env,
    Metric,
    Reload,
    Maintenance(bool),
    Signal(&'a str),
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, Response> {
    let post = |r: Route<'a>| {
        if method == "POST" {
            Ok(r)
        } else {
            Err(method_not_allowed())
        }
    };
    match path {
        "/v3/ping" => Ok(Route::Ping),
        "/v3/status" => match method {
            "GET" | "HEAD" => Ok(Route::Status),
            _ => Err(method_not_allowed()),
        },
        "/v3/environ" | "/v3/env" => post(Route::Env),
        "/v3/metric" => post(Route::Metric),
        "/v3/reload" => post(Route::Reload),
        "/v3/maintenance/enable" => post(Route::Maintenance(true)),
        "/v3/maintenance/disable" => post(Route::Maintenance(false)),
        p if p.starts_with("/v3/signal/") => match &p["/v3/signal/".len()..] {
            "" => Err(not_found()),
            job => post(Route::Signal(job)),
        },
        _ => Err(not_found()),
    }
}

/// What the control socket does with a request's body, from its head alone: a
/// request that will be refused (404/405) is answered before its body is read,
/// and routes that ignore their body do not store it.
pub fn body_rule(method: &str, path: &str) -> BodyRule {
    match route(method, path) {
        Ok(Route::Env) => BodyRule::Keep(ENV_MAX_BODY),
        Ok(Route::Metric | Route::Signal(_)) => BodyRule::Keep(MAX_BODY),
        Ok(_) => BodyRule::Discard(MAX_BODY),
        Err(_) => BodyRule::Refuse,
    }
}

/// Turn a request into a command, or answer it directly. `known_metric` says
/// whether a `/v3/metric` name is configured: the body is checked as it is parsed.
pub fn parse(req: &Request, known_metric: &dyn Fn(&str) -> bool) -> Result<Command, Response> {
    match route(&req.method, &req.path)? {
        Route::Ping => Ok(Command::Ping),
        Route::Status => Ok(Command::Status),
        Route::Env => body::env(&req.body).map(Command::PutEnv),
        Route::Metric => body::metric(&req.body, known_metric).map(Command::PutMetric),
        Route::Reload => Ok(Command::Reload),
        Route::Maintenance(on) => Ok(Command::Maintenance(on)),
        Route::Signal(job) => Ok(Command::Signal {
            job: job.to_string(),
            signal: body::signal(&req.body)?,
        }),
    }
}

/// Signals a job may be sent (`SIGHUP` or `HUP`, any case).
pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal::*;
    let up = name.to_ascii_uppercase();
    let short = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match short {
        "HUP" => SIGHUP,
        "INT" => SIGINT,
        "QUIT" => SIGQUIT,
        "KILL" => SIGKILL,
        "USR1" => SIGUSR1,
        "USR2" => SIGUSR2,
        "TERM" => SIGTERM,
        "ALRM" => SIGALRM,
        "CONT" => SIGCONT,
        "STOP" => SIGSTOP,
        "TSTP" => SIGTSTP,
        "WINCH" => SIGWINCH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
            body_refused: false,
            keep_alive: true,
        }
    }

    /// Parses with one configured metric, `m`.
    fn p(r: &Request) -> Result<Command, Response> {
        parse(r, &|k| k == "m")
    }

    fn env_pairs(c: Command) -> Vec<(String, Option<String>)> {
        match c {
            Command::PutEnv(u) => u
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            other => panic!("expected PutEnv, got {other:?}"),
        }
    }

    fn err(r: Result<Command, Response>) -> (u16, String) {
        match r {
            Err(resp) => (
                resp.status,
                String::from_utf8_lossy(&resp.body).into_owned(),
            ),
            Ok(c) => panic!("expected an error, got {c:?}"),
        }
    }

    #[test]
    fn environ_accepts_both_paths_and_unsets_with_null_or_empty() {
        for path in ["/v3/environ", "/v3/env"] {
            let c = p(&req("POST", path, r#"{"A":"1","B":null,"C":"","D":"x=y"}"#)).unwrap();
            assert_eq!(
                env_pairs(c),
                [
                    ("A".into(), Some("1".into())),
                    ("B".into(), None),
                    ("C".into(), None),
                    ("D".into(), Some("x=y".into())),
                ]
            );
        }
        // the string "null" is a value like any other
        assert_eq!(
            env_pairs(p(&req("POST", "/v3/environ", r#"{"A":"null"}"#)).unwrap()),
            [("A".into(), Some("null".into()))]
        );
    }

    #[test]
    fn environ_rejects_bad_keys_and_values() {
        let (s, b) = err(p(&req("POST", "/v3/environ", r#"{"OK":"1","1BAD":"x"}"#)));
        assert_eq!(s, 400);
        assert!(b.contains("\"1BAD\""), "{b}");
        assert_eq!(err(p(&req("POST", "/v3/environ", r#"{"A":1}"#))).0, 422);
        assert_eq!(err(p(&req("POST", "/v3/environ", "not json"))).0, 422);
        assert_eq!(err(p(&req("POST", "/v3/environ", "[1]"))).0, 422);
        assert_eq!(
            err(p(&req("GET", "/v3/environ", ""))),
            (405, "Method Not Allowed\n".into())
        );
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(p(&req("GET", "/v3/ping", "")).unwrap(), Command::Ping);
        assert_eq!(p(&req("POST", "/v3/ping", "")).unwrap(), Command::Ping);
        assert_eq!(p(&req("POST", "/v3/reload", "")).unwrap(), Command::Reload);
        assert_eq!(
            p(&req("POST", "/v3/maintenance/enable", "garbage")).unwrap(),
            Command::Maintenance(true)
        );
        assert_eq!(
            p(&req("POST", "/v3/maintenance/disable", "")).unwrap(),
            Command::Maintenance(false)
        );
        assert_eq!(p(&req("GET", "/v3/status", "")).unwrap(), Command::Status);
        assert_eq!(err(p(&req("POST", "/v3/status", ""))).0, 405);
        assert_eq!(err(p(&req("GET", "/v3/reload", ""))).0, 405);
        assert_eq!(
            err(p(&req("GET", "/nope", ""))),
            (404, "404 page not found\n".into())
        );
        assert_eq!(
            p(&req("POST", "/v3/signal/app", r#"{"signal":"SIGHUP"}"#)).unwrap(),
            Command::Signal {
                job: "app".into(),
                signal: "SIGHUP".into()
            }
        );
        assert_eq!(err(p(&req("POST", "/v3/signal/app", "{}"))).0, 400);
        assert_eq!(err(p(&req("POST", "/v3/metric", "{"))).0, 422);
        assert_eq!(
            p(&req("POST", "/v3/metric", r#"{"m": 2}"#)).unwrap(),
            Command::PutMetric(vec![("m".into(), serde_json::json!(2))])
        );
        assert_eq!(
            err(p(&req("POST", "/v3/metric", r#"{"m": 2, "x": 1}"#))),
            (400, "unknown metric \"x\"\n".into())
        );
    }

    #[test]
    fn body_rules_follow_the_routes() {
        assert_eq!(
            body_rule("POST", "/v3/environ"),
            BodyRule::Keep(ENV_MAX_BODY)
        );
        assert_eq!(body_rule("POST", "/v3/metric"), BodyRule::Keep(MAX_BODY));
        assert_eq!(
            body_rule("POST", "/v3/signal/app"),
            BodyRule::Keep(MAX_BODY)
        );
        assert_eq!(body_rule("POST", "/v3/reload"), BodyRule::Discard(MAX_BODY));
        assert_eq!(body_rule("PUT", "/v3/ping"), BodyRule::Discard(MAX_BODY));
        // Whatever is refused here, `parse` answers with 404/405 without a body.
        for (m, path) in [
            ("GET", "/v3/environ"),
            ("PUT", "/v3/metric"),
            ("POST", "/v3/status"),
            ("POST", "/v3/signal/"),
            ("POST", "/nope"),
        ] {
            assert_eq!(body_rule(m, path), BodyRule::Refuse, "{m} {path}");
            let (status, _) = err(p(&req(m, path, "")));
            assert!(matches!(status, 404 | 405), "{m} {path}: {status}");
        }
    }

    #[test]
    fn signal_names() {
        assert_eq!(
            parse_signal("SIGHUP"),
            Some(nix::sys::signal::Signal::SIGHUP)
        );
        assert_eq!(
            parse_signal("usr1"),
            Some(nix::sys::signal::Signal::SIGUSR1)
        );
        assert_eq!(parse_signal("SIGFOO"), None);
    }

    #[test]
    fn path_labels_are_bounded() {
        assert_eq!(path_label("/v3/signal/anything"), "/v3/signal");
        assert_eq!(path_label("/random/123"), "other");
    }
}
