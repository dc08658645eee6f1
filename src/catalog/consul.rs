//! Consul agent HTTP calls (reference §5), blocking. Registration calls are
//! bounded by the client's timeout; a blocking query (`index` + `wait`, Consul's
//! long poll) by its wait plus the server's jitter plus that timeout. The
//! worker thread and the watch lanes call these.

use super::{
    base64, CatalogError, Instance, KeyValue, Observation, RequestCounts, RequestKind, Service,
    Snapshot, Target,
};
use crate::config::types::{CheckStatus, ConsulConfig};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Cloned for each watch lane: clones share the connection pool and TLS set-up.
#[derive(Clone)]
pub struct ConsulClient {
    agent: ureq::Agent,
    /// `scheme://host:port`, no trailing slash.
    base: String,
    token: Option<String>,
    /// 2.x style (a translated 2.x config): the service is registered without an
    /// inline check, the TTL check is registered on its own with the service ID as
    /// its ID, and heartbeats use the legacy pass endpoint.
    legacy_checks: bool,
    timeout: Duration,
    counts: RequestCounts,
}

/// An answer the caller accepts: its status, body and `X-Consul-Index`.
struct Answer {
    status: u16,
    body: String,
    index: Option<u64>,
}

impl ConsulClient {
    pub fn new(cfg: &ConsulConfig, timeout: Duration) -> Result<ConsulClient, CatalogError> {
        let builder = ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(timeout)
            .redirects(0)
            .user_agent(concat!("containerpilot/", env!("CARGO_PKG_VERSION")));
        let https = cfg.scheme.eq_ignore_ascii_case("https");
        let builder = if https {
            with_tls(builder, cfg)?
        } else {
            builder
        };
        let scheme = if https { "https" } else { "http" };
        Ok(ConsulClient {
            agent: builder.build(),
            base: format!("{scheme}://{}", cfg.address.trim_end_matches('/')),
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            legacy_checks: false,
            timeout,
            counts: RequestCounts::default(),
        })
    }

    /// Switch to 2.x-style checks (see `legacy_checks`).
    pub fn with_legacy_checks(mut self, on: bool) -> ConsulClient {
        self.legacy_checks = on;
        self
    }

    /// Count every request in `counts` (see `RequestCounts`).
    pub fn with_counts(mut self, counts: RequestCounts) -> ConsulClient {
        self.counts = counts;
        self
    }

    pub fn register(&self, s: &Service, status: CheckStatus) -> Result<(), CatalogError> {
        let kind = RequestKind::Register;
        if self.legacy_checks {
            let mut body = registration_payload(s, status);
            if let Some(o) = body.as_object_mut() {
                o.remove("Check");
            }
            let req = self.request("PUT", "/v1/agent/service/register");
            self.send(kind, req, Some(&body.to_string()), &[])?;
            let check = legacy_check_payload(s).to_string();
            let req = self.request("PUT", "/v1/agent/check/register");
            return self.send(kind, req, Some(&check), &[]).map(drop);
        }
        let body = registration_payload(s, status).to_string();
        let req = self.request("PUT", "/v1/agent/service/register");
        self.send(kind, req, Some(&body), &[]).map(drop)
    }

    /// Marks the TTL check `service:<id>` passing.
    pub fn pass_ttl(&self, id: &str) -> Result<(), CatalogError> {
        let kind = RequestKind::Heartbeat;
        if self.legacy_checks {
            let path = format!("/v1/agent/check/pass/{}?note=ok", escape(id));
            return self
                .send(kind, self.request("PUT", &path), None, &[])
                .map(drop);
        }
        let path = format!(
            "/v1/agent/check/update/{}",
            escape(&format!("service:{id}"))
        );
        let body = r#"{"Status":"passing","Output":"ok"}"#;
        self.send(kind, self.request("PUT", &path), Some(body), &[])
            .map(drop)
    }

    /// A service the agent does not know (404) counts as deregistered: that is the
    /// state we wanted.
    pub fn deregister(&self, id: &str) -> Result<(), CatalogError> {
        let path = format!("/v1/agent/service/deregister/{}", escape(id));
        let req = self.request("PUT", &path);
        self.send(RequestKind::Deregister, req, None, &[404])
            .map(drop)
    }

    /// What a watch looks at: a plain read when `index` is 0 or `wait` is
    /// `None`, else a blocking query that Consul holds until the index moves past
    /// `index` or `wait` (plus up to `wait/16` of Consul's jitter) runs out.
    pub fn observe(
        &self,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Observation, CatalogError> {
        let wait = wait.filter(|_| index > 0);
        let (kind, path, mut req) = match target {
            Target::Service { name, tag, dc } => {
                let path = format!("/v1/health/service/{}", escape(name));
                let mut req = self.request("GET", &path).query("passing", "1");
                if let Some(tag) = tag.as_deref().filter(|t| !t.is_empty()) {
                    req = req.query("tag", tag);
                }
                if let Some(dc) = dc.as_deref().filter(|d| !d.is_empty()) {
                    req = req.query("dc", dc);
                }
                (RequestKind::Watch, path, req)
            }
            Target::Key { key, dc } => {
                let path = format!("/v1/kv/{}", escape_key(key));
                let mut req = self.request("GET", &path);
                if let Some(dc) = dc.as_deref().filter(|d| !d.is_empty()) {
                    req = req.query("dc", dc);
                }
                (RequestKind::Key, path, req)
            }
        };
        if let Some(wait) = wait {
            req = req
                .query("index", &index.to_string())
                .query("wait", &format!("{}s", wait.as_secs().max(1)))
                .timeout(wait + wait / 16 + self.timeout);
        }
        let answer = self.send(
            kind,
            req,
            None,
            if kind == RequestKind::Key {
                &[404]
            } else {
                &[]
            },
        )?;
        let snapshot = match target {
            Target::Service { .. } => {
                let value: Value = serde_json::from_str(&answer.body)
                    .map_err(|e| CatalogError::Decode(format!("health entries: {e}")))?;
                Snapshot::Instances(parse_health_entries(&value)?)
            }
            Target::Key { .. } if answer.status == 404 => Snapshot::Key(None),
            Target::Key { .. } => {
                let value: Value = serde_json::from_str(&answer.body)
                    .map_err(|e| CatalogError::Decode(format!("{path}: {e}")))?;
                Snapshot::Key(parse_kv_entry(&value)?)
            }
        };
        Ok(Observation {
            index: answer.index.unwrap_or(0),
            snapshot: Some(snapshot),
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.set("X-Consul-Token", t),
            None => req,
        }
    }

    /// Performs the call; a 2xx answer or one with a status in `accept` is an
    /// answer, anything else an error. Counted either way.
    fn send(
        &self,
        kind: RequestKind,
        req: ureq::Request,
        body: Option<&str>,
        accept: &[u16],
    ) -> Result<Answer, CatalogError> {
        let result = exchange(req, body, accept);
        self.counts.add(kind, result.is_ok());
        result
    }
}

fn exchange(
    req: ureq::Request,
    body: Option<&str>,
    accept: &[u16],
) -> Result<Answer, CatalogError> {
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(ureq::Error::Status(code, resp)) if accept.contains(&code) => resp,
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            return Err(CatalogError::Status {
                code,
                body: body.trim().to_string(),
            });
        }
        Err(ureq::Error::Transport(t)) => return Err(CatalogError::Transport(t.to_string())),
    };
    let status = resp.status();
    let index = resp
        .header("X-Consul-Index")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = resp
        .into_string()
        .map_err(|e| CatalogError::Transport(format!("reading response: {e}")))?;
    Ok(Answer {
        status,
        body,
        index,
    })
}

/// The registration body, field order as the Consul Go client sends it (reference §5.2).
pub fn registration_payload(s: &Service, status: CheckStatus) -> Value {
    let mut check = Map::new();
    check.insert("TTL".into(), json!(format!("{}s", s.ttl_secs)));
    check.insert("Status".into(), json!(status.as_str()));
    check.insert(
        "Notes".into(),
        json!(format!("TTL for {} set by containerpilot", s.name)),
    );
    if let Some(after) = &s.deregister_critical_service_after {
        check.insert("DeregisterCriticalServiceAfter".into(), json!(after));
    }
    let mut body = Map::new();
    body.insert("ID".into(), json!(s.id));
    body.insert("Name".into(), json!(s.name));
    if !s.tags.is_empty() {
        body.insert("Tags".into(), json!(s.tags));
    }
    body.insert("Port".into(), json!(s.port));
    body.insert("Address".into(), json!(s.address));
    if s.enable_tag_override {
        body.insert("EnableTagOverride".into(), json!(true));
    }
    body.insert("Check".into(), Value::Object(check));
    Value::Object(body)
}

/// 2.x's separately registered TTL check: ID and Name are the service ID, no
/// initial status (Consul starts it critical until the first pass).
pub fn legacy_check_payload(s: &Service) -> Value {
    let mut check = Map::new();
    check.insert("ID".into(), json!(s.id));
    check.insert("Name".into(), json!(s.id));
    check.insert(
        "Notes".into(),
        json!(format!("TTL for {} set by containerpilot", s.name)),
    );
    check.insert("ServiceID".into(), json!(s.id));
    check.insert("TTL".into(), json!(format!("{}s", s.ttl_secs)));
    if let Some(after) = &s.deregister_critical_service_after {
        check.insert("DeregisterCriticalServiceAfter".into(), json!(after));
    }
    Value::Object(check)
}

/// Reads `[{"Service": {"ID", "Service", "Address", "Port", "Tags"}, ...}]`, the
/// documented shape of `/v1/health/service/<name>`; other fields are ignored.
pub fn parse_health_entries(v: &Value) -> Result<Vec<Instance>, CatalogError> {
    let entries = match v {
        Value::Array(a) => a,
        // Consul answers `null` for an unknown service in some versions.
        Value::Null => return Ok(Vec::new()),
        _ => {
            return Err(CatalogError::Decode(
                "health entries: not a JSON array".into(),
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let svc = e.get("Service").and_then(Value::as_object).ok_or_else(|| {
                CatalogError::Decode(format!("health entry {i}: no Service object"))
            })?;
            Instance::from_json(svc, "Service")
                .map_err(|e| CatalogError::Decode(format!("health entry {i}: {e}")))
        })
        .collect()
}

/// Reads `GET /v1/kv/<key>`'s `[{"Key", "Value", "ModifyIndex", ...}]`: the value
/// is base64, `null` for an empty value.
pub fn parse_kv_entry(v: &Value) -> Result<Option<KeyValue>, CatalogError> {
    let bad = |why: String| CatalogError::Decode(format!("kv entry: {why}"));
    let Some(entry) = v.as_array().and_then(|a| a.first()) else {
        return match v {
            Value::Array(_) | Value::Null => Ok(None),
            _ => Err(bad("not a JSON array".into())),
        };
    };
    let value = match entry.get("Value") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => base64::decode(text).map_err(bad)?,
        Some(other) => return Err(bad(format!("Value is not a string: {other}"))),
    };
    let modify_index = match entry.get("ModifyIndex") {
        None | Some(Value::Null) => 0,
        Some(n) => n
            .as_u64()
            .ok_or_else(|| bad(format!("bad ModifyIndex {n}")))?,
    };
    Ok(Some(KeyValue {
        value,
        modify_index,
    }))
}

/// A KV key in a URL: each `/`-separated segment escaped, the slashes kept; a
/// leading slash dropped, as the Consul Go client does.
pub fn escape_key(key: &str) -> String {
    key.trim_start_matches('/')
        .split('/')
        .map(escape)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes a path segment, keeping what Go's URL encoder keeps in a
/// path (so `service:<id>` goes out with its colon, as 3.8 sent it).
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_tls(
    builder: ureq::AgentBuilder,
    cfg: &ConsulConfig,
) -> Result<ureq::AgentBuilder, CatalogError> {
    Ok(builder.tls_config(super::tls::client_config(&cfg.tls)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Service {
        Service {
            id: "app-host1".into(),
            name: "app".into(),
            address: "10.0.0.2".into(),
            port: 8080,
            tags: vec!["web".into(), "v1".into()],
            enable_tag_override: false,
            ttl_secs: 10,
            deregister_critical_service_after: None,
        }
    }

    #[test]
    fn payload_exact_with_tags_and_defaults_omitted() {
        let body = registration_payload(&sample(), CheckStatus::Passing).to_string();
        assert_eq!(
            body,
            concat!(
                r#"{"ID":"app-host1","Name":"app","Tags":["web","v1"],"Port":8080,"#,
                r#""Address":"10.0.0.2","Check":{"TTL":"10s","Status":"passing","#,
                r#""Notes":"TTL for app set by containerpilot"}}"#
            )
        );
    }

    #[test]
    fn payload_exact_with_extras_and_warning() {
        let mut s = sample();
        s.tags.clear();
        s.enable_tag_override = true;
        s.deregister_critical_service_after = Some("90m".into());
        let body = registration_payload(&s, CheckStatus::Warning).to_string();
        assert_eq!(
            body,
            concat!(
                r#"{"ID":"app-host1","Name":"app","Port":8080,"Address":"10.0.0.2","#,
                r#""EnableTagOverride":true,"Check":{"TTL":"10s","Status":"warning","#,
                r#""Notes":"TTL for app set by containerpilot","#,
                r#""DeregisterCriticalServiceAfter":"90m"}}"#
            )
        );
    }

    #[test]
    fn payload_status_critical() {
        let v = registration_payload(&sample(), CheckStatus::Critical);
        assert_eq!(v["Check"]["Status"], "critical");
    }

    #[test]
    fn health_entries_parse() {
        let v: Value = serde_json::from_str(
            r#"[{"Node":{"Node":"n1","Address":"10.1.1.1"},
                 "Service":{"ID":"db-a","Service":"db","Tags":["x"],"Address":"10.0.0.5","Port":5432},
                 "Checks":[]},
                {"Service":{"ID":"db-b","Service":"db","Port":5433}}]"#,
        )
        .expect("json");
        assert_eq!(
            parse_health_entries(&v).expect("entries"),
            vec![
                Instance {
                    id: "db-a".into(),
                    name: "db".into(),
                    address: "10.0.0.5".into(),
                    port: 5432,
                    tags: vec!["x".into()],
                },
                Instance {
                    id: "db-b".into(),
                    name: "db".into(),
                    address: "".into(),
                    port: 5433,
                    tags: vec![],
                },
            ]
        );
        assert_eq!(parse_health_entries(&Value::Null).expect("null"), vec![]);
        let v = json!([{"Service": {"ID": "a", "Tags": ["v2", "blue", "a"]}}]);
        assert_eq!(
            parse_health_entries(&v).expect("entries")[0].tags,
            ["a", "blue", "v2"],
            "tags sorted"
        );
    }

    #[test]
    fn kv_entries_parse() {
        let v = json!([{"LockIndex": 0, "Key": "app/config", "Flags": 0,
            "Value": base64::encode(b"a=1\n"), "CreateIndex": 10, "ModifyIndex": 12}]);
        assert_eq!(
            parse_kv_entry(&v),
            Ok(Some(KeyValue {
                value: b"a=1\n".to_vec(),
                modify_index: 12
            }))
        );
        let empty = json!([{"Key": "k", "Value": null, "ModifyIndex": 3}]);
        assert_eq!(
            parse_kv_entry(&empty),
            Ok(Some(KeyValue {
                value: vec![],
                modify_index: 3
            }))
        );
        assert_eq!(parse_kv_entry(&json!([])), Ok(None));
        assert_eq!(
            parse_kv_entry(&json!({"Key": "k"}))
                .expect_err("object")
                .to_string(),
            "unexpected catalog response: kv entry: not a JSON array"
        );
        assert_eq!(
            parse_kv_entry(&json!([{"Value": "%%"}]))
                .expect_err("b64")
                .to_string(),
            "unexpected catalog response: kv entry: invalid base64 character '%'"
        );
    }

    #[test]
    fn kv_keys_keep_their_slashes() {
        assert_eq!(escape_key("service/app/config"), "service/app/config");
        assert_eq!(escape_key("/a b/c?"), "a%20b/c%3F");
    }

    #[test]
    fn health_entries_errors() {
        let e = parse_health_entries(&json!({"a": 1})).expect_err("object");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entries: not a JSON array"
        );
        let e = parse_health_entries(&json!([{"Node": {}}])).expect_err("no service");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entry 0: no Service object"
        );
        let e = parse_health_entries(&json!([{"Service": {"ID": "a", "Port": 70000}}]))
            .expect_err("port");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entry 0: bad Port 70000"
        );
    }

    #[test]
    fn escape_keeps_colon_and_encodes_the_rest() {
        assert_eq!(escape("service:app-host1"), "service:app-host1");
        assert_eq!(escape("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }
}
