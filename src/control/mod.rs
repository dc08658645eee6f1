//! The control plane's routes: an HTTP request on the control socket becomes a
//! `Command` for the loop, or an error response. Validation happens here, before
//! anything is applied, so a rejected request changes nothing.

pub mod client;

use crate::http::{BodyRule, Request, Response};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `(key, Some(v))` sets, `(key, None)` unsets.
    PutEnv(Vec<(String, Option<String>)>),
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

fn valid_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Response> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad(422, "Unprocessable Entity: body must be a JSON object")),
        Err(e) => Err(bad(
            422,
            &format!("Unprocessable Entity: invalid JSON: {e}"),
        )),
    }
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
        Ok(Route::Env | Route::Metric | Route::Signal(_)) => BodyRule::Keep(MAX_BODY),
        Ok(_) => BodyRule::Discard(MAX_BODY),
        Err(_) => BodyRule::Refuse,
    }
}

/// Turn a request into a command, or answer it directly.
pub fn parse(req: &Request) -> Result<Command, Response> {
    match route(&req.method, &req.path)? {
        Route::Ping => Ok(Command::Ping),
        Route::Status => Ok(Command::Status),
        Route::Env => {
            let m = json_object(&req.body)?;
            let mut out = Vec::with_capacity(m.len());
            for (k, v) in m {
                if !valid_env_key(&k) {
                    return Err(bad(
                        400,
                        &format!("invalid environment variable name {k:?}"),
                    ));
                }
                match v {
                    serde_json::Value::Null => out.push((k, None)),
                    serde_json::Value::String(s) if s.is_empty() => out.push((k, None)),
                    serde_json::Value::String(s) => out.push((k, Some(s))),
                    other => {
                        return Err(bad(
                            422,
                            &format!("Unprocessable Entity: value of {k:?} must be a string or null, got {other}"),
                        ))
                    }
                }
            }
            Ok(Command::PutEnv(out))
        }
        Route::Metric => {
            let m = json_object(&req.body)?;
            Ok(Command::PutMetric(m.into_iter().collect()))
        }
        Route::Reload => Ok(Command::Reload),
        Route::Maintenance(on) => Ok(Command::Maintenance(on)),
        Route::Signal(job) => {
            let signal = match serde_json::from_slice::<serde_json::Value>(&req.body) {
                Ok(v) => match v.get("signal").and_then(|s| s.as_str()) {
                    Some(s) => s.to_string(),
                    None => return Err(bad(400, "body must be {\"signal\": \"SIGNAME\"}")),
                },
                Err(e) => return Err(bad(400, &format!("invalid JSON: {e}"))),
            };
            Ok(Command::Signal {
                job: job.to_string(),
                signal,
            })
        }
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
            let c = parse(&req("POST", path, r#"{"A":"1","B":null,"C":"","D":"x=y"}"#)).unwrap();
            assert_eq!(
                c,
                Command::PutEnv(vec![
                    ("A".into(), Some("1".into())),
                    ("B".into(), None),
                    ("C".into(), None),
                    ("D".into(), Some("x=y".into())),
                ])
            );
        }
        // the string "null" is a value like any other
        assert_eq!(
            parse(&req("POST", "/v3/environ", r#"{"A":"null"}"#)).unwrap(),
            Command::PutEnv(vec![("A".into(), Some("null".into()))])
        );
    }

    #[test]
    fn environ_rejects_bad_keys_and_values() {
        let (s, b) = err(parse(&req(
            "POST",
            "/v3/environ",
            r#"{"OK":"1","1BAD":"x"}"#,
        )));
        assert_eq!(s, 400);
        assert!(b.contains("\"1BAD\""), "{b}");
        assert_eq!(err(parse(&req("POST", "/v3/environ", r#"{"A":1}"#))).0, 422);
        assert_eq!(err(parse(&req("POST", "/v3/environ", "not json"))).0, 422);
        assert_eq!(err(parse(&req("POST", "/v3/environ", "[1]"))).0, 422);
        assert_eq!(
            err(parse(&req("GET", "/v3/environ", ""))),
            (405, "Method Not Allowed\n".into())
        );
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(parse(&req("GET", "/v3/ping", "")).unwrap(), Command::Ping);
        assert_eq!(parse(&req("POST", "/v3/ping", "")).unwrap(), Command::Ping);
        assert_eq!(
            parse(&req("POST", "/v3/reload", "")).unwrap(),
            Command::Reload
        );
        assert_eq!(
            parse(&req("POST", "/v3/maintenance/enable", "garbage")).unwrap(),
            Command::Maintenance(true)
        );
        assert_eq!(
            parse(&req("POST", "/v3/maintenance/disable", "")).unwrap(),
            Command::Maintenance(false)
        );
        assert_eq!(
            parse(&req("GET", "/v3/status", "")).unwrap(),
            Command::Status
        );
        assert_eq!(err(parse(&req("POST", "/v3/status", ""))).0, 405);
        assert_eq!(err(parse(&req("GET", "/v3/reload", ""))).0, 405);
        assert_eq!(
            err(parse(&req("GET", "/nope", ""))),
            (404, "404 page not found\n".into())
        );
        assert_eq!(
            parse(&req("POST", "/v3/signal/app", r#"{"signal":"SIGHUP"}"#)).unwrap(),
            Command::Signal {
                job: "app".into(),
                signal: "SIGHUP".into()
            }
        );
        assert_eq!(err(parse(&req("POST", "/v3/signal/app", "{}"))).0, 400);
        assert_eq!(err(parse(&req("POST", "/v3/metric", "{"))).0, 422);
    }

    #[test]
    fn body_rules_follow_the_routes() {
        assert_eq!(body_rule("POST", "/v3/environ"), BodyRule::Keep(MAX_BODY));
        assert_eq!(body_rule("POST", "/v3/metric"), BodyRule::Keep(MAX_BODY));
        assert_eq!(
            body_rule("POST", "/v3/signal/app"),
            BodyRule::Keep(MAX_BODY)
        );
        assert_eq!(body_rule("POST", "/v3/reload"), BodyRule::Discard(MAX_BODY));
        assert_eq!(body_rule("PUT", "/v3/ping"), BodyRule::Discard(MAX_BODY));
        // Whatever is refused here, `parse` answers with 404/405 without a body.
        for (m, p) in [
            ("GET", "/v3/environ"),
            ("PUT", "/v3/metric"),
            ("POST", "/v3/status"),
            ("POST", "/v3/signal/"),
            ("POST", "/nope"),
        ] {
            assert_eq!(body_rule(m, p), BodyRule::Refuse, "{m} {p}");
            let (status, _) = err(parse(&req(m, p, "")));
            assert!(matches!(status, 404 | 405), "{m} {p}: {status}");
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
