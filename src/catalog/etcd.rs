//! etcd v3 as the catalog, through etcd's JSON gateway (`/v3/...`, served by
//! etcd 3.4 and later), blocking, each call bounded by the agent's timeout. The
//! worker thread registers through one client; each watch lane reads through
//! its own copy (`reader`), waiting for changes with the gateway's watch stream.
//!
//! Layout (documented in the README for other readers of the catalog): one key per
//! instance, `<prefix>/services/<name>/<id>`, whose value is the JSON object
//! `{"ID","Name","Address","Port","Tags","Status"}`, attached to a lease whose TTL
//! is the job's health `ttl`. A heartbeat is a lease keepalive, so an instance
//! whose checks fail simply disappears when the TTL runs out.

use super::base64::{decode, encode};
use super::{
    CatalogError, Instance, KeyValue, Observation, RequestCounts, RequestKind, Service, Snapshot,
    Target,
};
use crate::config::types::{CheckStatus, EtcdConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

/// Most a watch stream may send before the change it waits for is seen.
const MAX_WATCH_STREAM: u64 = 16 * 1024 * 1024;

pub struct EtcdClient {
    agent: ureq::Agent,
    /// Base URLs, `scheme://host:port`, in the configured order.
    endpoints: Vec<String>,
    /// The endpoint that answered last; calls start there.
    current: usize,
    prefix: String,
    credentials: Option<(String, String)>,
    token: Option<String>,
    /// What this client wrote, by service ID.
    entries: HashMap<String, Entry>,
    counts: RequestCounts,
    /// What the requests sent now are for (set by each public call).
    kind: RequestKind,
}

/// One registered instance: its lease and what its key holds.
struct Entry {
    lease: i64,
    service: Service,
    status: CheckStatus,
}

impl EtcdClient {
    pub fn new(cfg: &EtcdConfig, timeout: Duration) -> Result<EtcdClient, CatalogError> {
        let builder = ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(timeout)
            .redirects(0)
            .user_agent(concat!("containerpilot/", env!("CARGO_PKG_VERSION")));
        let https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
        let builder = if https {
            with_tls(builder, cfg)?
        } else {
            builder
        };
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(EtcdClient {
            agent: builder.build(),
            endpoints: cfg
                .endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            current: 0,
            prefix: cfg.prefix.trim_end_matches('/').to_string(),
            credentials,
            token: None,
            entries: HashMap::new(),
            counts: RequestCounts::default(),
            kind: RequestKind::Register,
        })
    }

    /// Count every request in `counts` (see `RequestCounts`).
    pub fn with_counts(mut self, counts: RequestCounts) -> EtcdClient {
        self.counts = counts;
        self
    }

    /// A client for a watch lane: same endpoints, credentials, TLS and
    /// connection pool, none of this client's registrations.
    pub fn reader(&self) -> EtcdClient {
        EtcdClient {
            agent: self.agent.clone(),
            endpoints: self.endpoints.clone(),
            current: self.current,
            prefix: self.prefix.clone(),
            credentials: self.credentials.clone(),
            token: None,
            entries: HashMap::new(),
            counts: self.counts.clone(),
            kind: RequestKind::Watch,
        }
    }

    /// The endpoint calls currently go to.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoints.get(self.current).map(String::as_str)
    }

    /// A fresh lease with the health TTL, then the key on it. A lease this client
    /// held before for the same ID is revoked afterwards (the key has moved off it).
    pub fn register(&mut self, s: &Service, status: CheckStatus) -> Result<(), CatalogError> {
        self.kind = RequestKind::Register;
        let lease = self.grant(s.ttl_secs)?;
        if let Err(e) = self.put(s, status, lease) {
            let _ = self.revoke(lease);
            return Err(e);
        }
        let entry = Entry {
            lease,
            service: s.clone(),
            status,
        };
        if let Some(old) = self.entries.insert(s.id.clone(), entry) {
            if old.lease != lease {
                // Best effort: an old lease left behind expires on its own.
                let _ = self.revoke(old.lease);
            }
        }
        Ok(())
    }

    /// Keeps the instance's lease alive. A lease etcd no longer knows (expired
    /// during an outage, revoked by someone else) is reported as a 404 so that
    /// the worker registers the instance again.
    pub fn pass_ttl(&mut self, id: &str) -> Result<(), CatalogError> {
        self.kind = RequestKind::Heartbeat;
        let Some(entry) = self.entries.get(id) else {
            return Err(lease_not_found(id));
        };
        let lease = entry.lease;
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        let result = keepalive_result(&answer)?;
        if int_field(result, "TTL")? <= 0 {
            self.entries.remove(id);
            return Err(lease_not_found(id));
        }
        // A key written with initial_status warning/critical turns passing with
        // the first passing check, as the Consul TTL check does.
        let stale_status = self
            .entries
            .get(id)
            .filter(|e| e.status != CheckStatus::Passing)
            .map(|e| e.service.clone());
        if let Some(service) = stale_status {
            self.put(&service, CheckStatus::Passing, lease)?;
            if let Some(e) = self.entries.get_mut(id) {
                e.status = CheckStatus::Passing;
            }
        }
        Ok(())
    }

    /// Revokes the lease and deletes the key. An ID this client never registered,
    /// or a lease etcd no longer knows, counts as deregistered.
    pub fn deregister(&mut self, id: &str) -> Result<(), CatalogError> {
        self.kind = RequestKind::Deregister;
        let Some(entry) = self.entries.remove(id) else {
            return Ok(());
        };
        match self.revoke(entry.lease) {
            Ok(()) | Err(CatalogError::Status { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let key = service_key(&self.prefix, &entry.service);
        self.call(
            "/v3/kv/deleterange",
            &json!({ "key": encode(key.as_bytes()) }),
        )
        .map(drop)
    }

    /// What a watch looks at: the passing instances under
    /// `<prefix>/services/<name>/` carrying `tag`, or one key as written. With
    /// `index` > 0 and a `wait`, first waits up to `wait` on a watch stream from
    /// revision `index + 1`; when nothing moved, answers without reading again
    /// (`snapshot: None`). The index answered is the store's revision.
    pub fn observe(
        &mut self,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<Observation, CatalogError> {
        let (key, end) = match target {
            Target::Service { name, .. } => {
                self.kind = RequestKind::Watch;
                let dir = format!("{}/services/{name}/", self.prefix);
                let end = prefix_end(dir.as_bytes());
                (dir.into_bytes(), Some(end))
            }
            Target::Key { key, .. } => {
                self.kind = RequestKind::Key;
                (key.as_bytes().to_vec(), None)
            }
        };
        if let (Some(wait), true) = (wait, index > 0) {
            if !self.wait_for_change(&key, end.as_deref(), index, wait)? {
                return Ok(Observation {
                    index,
                    snapshot: None,
                });
            }
        }
        let mut body = json!({ "key": encode(&key) });
        if let Some(end) = &end {
            body["range_end"] = json!(encode(end));
        }
        let answer = self.call("/v3/kv/range", &body)?;
        let revision = answer
            .get("header")
            .map_or(Ok(0), |h| int_field(h, "revision"))?;
        let snapshot = match target {
            Target::Service { tag, .. } => Snapshot::Instances(parse_range(
                &answer,
                tag.as_deref().filter(|t| !t.is_empty()),
            )?),
            Target::Key { .. } => Snapshot::Key(parse_key(&answer)?),
        };
        Ok(Observation {
            index: u64::try_from(revision).unwrap_or(0),
            snapshot: Some(snapshot),
        })
    }

    /// Holds a watch from revision `index + 1` open on the current endpoint
    /// until an event under the key(s) arrives (true) or `wait` runs out
    /// (false). A watch etcd cancels (its start revision was compacted), a
    /// store whose revision went back (restored or wiped), or a stream that
    /// ends count as a change: the caller reads the state again.
    fn wait_for_change(
        &mut self,
        key: &[u8],
        end: Option<&[u8]>,
        index: u64,
        wait: Duration,
    ) -> Result<bool, CatalogError> {
        let mut create = json!({
            "key": encode(key),
            "start_revision": (index + 1).to_string(),
        });
        if let Some(end) = end {
            create["range_end"] = json!(encode(end));
        }
        let body = json!({ "create_request": create });
        let i = self.current;
        let opened = self.authorized(i, |c, token| {
            c.exchange(i, "/v3/watch", &body, token, Some(wait))
        });
        let resp = match opened {
            Ok(r) => r,
            Err(e) => {
                if moves_on(&e) && !self.endpoints.is_empty() {
                    // The next try goes to the next endpoint.
                    self.current = (i + 1) % self.endpoints.len();
                }
                return Err(e);
            }
        };
        let reader = resp.into_reader().take(MAX_WATCH_STREAM);
        for message in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    return match e.io_error_kind() {
                        Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                            Ok(false)
                        }
                        // The gateway's closing trailers are not JSON: the stream ended.
                        None if e.is_syntax() => Ok(true),
                        _ => Err(CatalogError::Transport(format!("etcd watch: {e}"))),
                    };
                }
            };
            if let Some(err) = message.get("error") {
                let text = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("watch failed");
                return Err(CatalogError::Status {
                    code: 500,
                    body: text.to_string(),
                });
            }
            let Some(result) = message.get("result") else {
                continue;
            };
            if result.get("created").and_then(Value::as_bool) == Some(true) {
                let now = result
                    .get("header")
                    .map_or(Ok(0), |h| int_field(h, "revision"))?;
                if u64::try_from(now).unwrap_or(0) < index {
                    return Ok(true);
                }
            }
            let canceled = result.get("canceled").and_then(Value::as_bool) == Some(true);
            let compacted = int_field(result, "compact_revision")? > 0;
            let events = result
                .get("events")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.is_empty());
            if canceled || compacted || events {
                return Ok(true);
            }
            // Anything else (a progress notice) leaves the watch waiting.
        }
        Ok(true)
    }

    fn grant(&mut self, ttl: u32) -> Result<i64, CatalogError> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        if let Some(err) = answer.get("error").and_then(Value::as_str) {
            if !err.is_empty() {
                return Err(CatalogError::Status {
                    code: 500,
                    body: err.to_string(),
                });
            }
        }
        let id = int_field(&answer, "ID")?;
        if id == 0 {
            return Err(CatalogError::Decode("lease grant: no lease ID".into()));
        }
        Ok(id)
    }

    fn put(&mut self, s: &Service, status: CheckStatus, lease: i64) -> Result<(), CatalogError> {
        let key = service_key(&self.prefix, s);
        let value = instance_value(s, status);
        let body = json!({
            "key": encode(key.as_bytes()),
            "value": encode(value.as_bytes()),
            "lease": lease.to_string(),
        });
        self.call("/v3/kv/put", &body).map(drop)
    }

    fn revoke(&mut self, lease: i64) -> Result<(), CatalogError> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
            .map(drop)
    }

    /// One call, trying the endpoints in order from the one that answered last;
    /// moves on only when an endpoint cannot serve (unreachable, 5xx).
    fn call(&mut self, path: &str, body: &Value) -> Result<Value, CatalogError> {
        let n = self.endpoints.len();
        let mut last = CatalogError::Transport("no etcd endpoints configured".into());
        for k in 0..n {
            let i = (self.current + k) % n;
            match self.call_endpoint(i, path, body) {
                Err(e) if moves_on(&e) => {
                    log::debug!("etcd: {} {path}: {e}", self.endpoints[i]);
                    last = e;
                }
                answer => {
                    if i != self.current {
                        log::info!("etcd: now using endpoint {}", self.endpoints[i]);
                        self.current = i;
                    }
                    return answer;
                }
            }
        }
        Err(last)
    }

    fn call_endpoint(&mut self, i: usize, path: &str, body: &Value) -> Result<Value, CatalogError> {
        self.authorized(i, |c, token| c.post_with(i, path, body, token))
    }

    /// Runs `op` with this client's token, logging in first when credentials
    /// are set and no token is held, and once more when the token was refused
    /// (etcd's simple tokens expire after 5 minutes idle).
    fn authorized<T>(
        &mut self,
        i: usize,
        op: impl Fn(&EtcdClient, Option<&str>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        if self.credentials.is_some() && self.token.is_none() {
            self.token = Some(self.authenticate(i)?);
        }
        match op(self, self.token.as_deref()) {
            Err(e) if self.credentials.is_some() && is_bad_token(&e) => {
                self.token = None;
                self.token = Some(self.authenticate(i)?);
                op(self, self.token.as_deref())
            }
            answer => answer,
        }
    }

    fn authenticate(&self, i: usize) -> Result<String, CatalogError> {
        let Some((name, password)) = &self.credentials else {
            return Err(CatalogError::Decode(
                "authenticate without credentials".into(),
            ));
        };
        let body = json!({ "name": name, "password": password });
        let answer = self.post_with(i, "/v3/auth/authenticate", &body, None)?;
        match answer.get("token").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Ok(t.to_string()),
            _ => Err(CatalogError::Decode("authenticate: no token".into())),
        }
    }

    /// One POST and its first JSON document.
    fn post_with(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, CatalogError> {
        let text = self
            .exchange(i, path, body, token, None)?
            .into_string()
            .map_err(|e| CatalogError::Transport(format!("reading response: {e}")))?;
        first_json(&text)
    }

    /// One POST to endpoint `i`, counted; a 2xx answer's response (body unread)
    /// or the error. `timeout` replaces the agent's for this request.
    fn exchange(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        token: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<ureq::Response, CatalogError> {
        let base = self.endpoints.get(i).map(String::as_str).unwrap_or("");
        let mut req = self
            .agent
            .post(&format!("{base}{path}"))
            .set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", t);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let result = match req.send_string(&body.to_string()) {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => Err(CatalogError::Status {
                code,
                body: error_text(&error_body(resp)),
            }),
            Err(ureq::Error::Transport(t)) => Err(CatalogError::Transport(t.to_string())),
        };
        self.counts.add(self.kind, result.is_ok());
        result
    }
}

/// The body of an error answer. The gateway ends those with HTTP trailers that
/// the chunked reader refuses; what was read before that is the message we want.
fn error_body(resp: ureq::Response) -> String {
    let mut buf = Vec::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Another endpoint may do better: this one is unreachable or cannot serve.
fn moves_on(e: &CatalogError) -> bool {
    match e {
        CatalogError::Transport(_) => true,
        CatalogError::Status { code, .. } => *code >= 500,
        _ => false,
    }
}

fn is_bad_token(e: &CatalogError) -> bool {
    match e {
        CatalogError::Status { code: 401, .. } => true,
        CatalogError::Status { body, .. } => {
            body.contains("invalid auth token") || body.contains("revision of auth store is old")
        }
        _ => false,
    }
}

fn lease_not_found(id: &str) -> CatalogError {
    CatalogError::Status {
        code: 404,
        body: format!("etcd: no live lease for {id}"),
    }
}

/// `<prefix>/services/<name>/<id>`
pub fn service_key(prefix: &str, s: &Service) -> String {
    format!("{prefix}/services/{}/{}", s.name, s.id)
}

/// The key's value, field order fixed so other tools see a stable document.
pub fn instance_value(s: &Service, status: CheckStatus) -> String {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Address": s.address,
        "Port": s.port,
        "Tags": s.tags,
        "Status": status.as_str(),
    })
    .to_string()
}

/// The first JSON document of a body: the gateway may append its trailers as text.
fn first_json(text: &str) -> Result<Value, CatalogError> {
    match serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(CatalogError::Decode(format!("etcd answer: {e}"))),
        None => Err(CatalogError::Decode("etcd answer: empty body".into())),
    }
}

/// The gateway's `{"error": "...", "code": N}` message, or the raw text.
fn error_text(text: &str) -> String {
    let parsed = first_json(text).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.get("error")
            .and_then(Value::as_str)
            .or_else(|| v.get("message").and_then(Value::as_str))
            .or_else(|| v.pointer("/error/message").and_then(Value::as_str))
    });
    match message {
        Some(m) => m.to_string(),
        None => text.trim().to_string(),
    }
}

/// The `result` of a keepalive stream answer; an `error` in the stream is an error.
fn keepalive_result(v: &Value) -> Result<&Value, CatalogError> {
    if let Some(err) = v.get("error") {
        let code = err
            .get("http_code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500);
        let body = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("keepalive failed")
            .to_string();
        return Err(CatalogError::Status { code, body });
    }
    v.get("result")
        .ok_or_else(|| CatalogError::Decode("keepalive: no result".into()))
}

/// An int64 field, which proto3 JSON sends as a string; absent means 0.
fn int_field(v: &Value, name: &str) -> Result<i64, CatalogError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| CatalogError::Decode(format!("{name}: not an integer: {s:?}"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| CatalogError::Decode(format!("{name}: not an integer: {n}"))),
        Some(other) => Err(CatalogError::Decode(format!(
            "{name}: not an integer: {other}"
        ))),
    }
}

/// Instances from a range answer. Values other writers left that cannot be read
/// are skipped (logged), so one bad key does not blind the watch.
pub fn parse_range(v: &Value, tag: Option<&str>) -> Result<Vec<Instance>, CatalogError> {
    let kvs = match v.get("kvs") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(CatalogError::Decode("range: kvs is not an array".into())),
    };
    let mut out = Vec::new();
    for kv in kvs {
        match instance_of(kv, tag) {
            Ok(Some(i)) => out.push(i),
            Ok(None) => {}
            Err(reason) => {
                let key = kv
                    .get("key")
                    .and_then(Value::as_str)
                    .and_then(|k| decode(k).ok())
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .unwrap_or_default();
                log::debug!("etcd: skipping {key}: {reason}");
            }
        }
    }
    Ok(out)
}

/// `None` when the instance is not passing or lacks the tag.
fn instance_of(kv: &Value, tag: Option<&str>) -> Result<Option<Instance>, String> {
    let raw = kv.get("value").and_then(Value::as_str).unwrap_or("");
    let bytes = decode(raw)?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("value: {e}"))?;
    let Some(obj) = doc.as_object() else {
        return Err("value is not a JSON object".into());
    };
    let status = obj
        .get("Status")
        .and_then(Value::as_str)
        .unwrap_or("passing");
    if status != "passing" {
        return Ok(None);
    }
    let instance = Instance::from_json(obj, "Name")?;
    if tag.is_some_and(|t| !instance.tags.iter().any(|x| x == t)) {
        return Ok(None);
    }
    Ok(Some(instance))
}

/// The key of a single-key range answer, `None` when it does not exist.
pub fn parse_key(v: &Value) -> Result<Option<KeyValue>, CatalogError> {
    let kv = match v.get("kvs") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => match a.first() {
            None => return Ok(None),
            Some(kv) => kv,
        },
        Some(_) => return Err(CatalogError::Decode("range: kvs is not an array".into())),
    };
    let value = decode(kv.get("value").and_then(Value::as_str).unwrap_or(""))
        .map_err(|e| CatalogError::Decode(format!("range: value: {e}")))?;
    let modify_index = int_field(kv, "mod_revision")?;
    Ok(Some(KeyValue {
        value,
        modify_index: u64::try_from(modify_index).unwrap_or(0),
    }))
}

/// The smallest key after every key starting with `prefix` (etcd's `range_end`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): "to the end of the keyspace".
    vec![0]
}

fn with_tls(
    builder: ureq::AgentBuilder,
    cfg: &EtcdConfig,
) -> Result<ureq::AgentBuilder, CatalogError> {
    Ok(builder.tls_config(super::tls::client_config(&cfg.tls)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Service {
        Service {
            id: "api-host1".into(),
            name: "api".into(),
            address: "10.0.0.2".into(),
            port: 8080,
            tags: vec!["blue".into(), "v1".into()],
            enable_tag_override: false,
            ttl_secs: 10,
            deregister_critical_service_after: None,
        }
    }

    fn kv(value: &str) -> Value {
        json!({ "key": encode(b"/cp/services/api/x"), "value": encode(value.as_bytes()) })
    }

    #[test]
    fn key_and_value_layout() {
        assert_eq!(
            service_key("/containerpilot", &sample()),
            "/containerpilot/services/api/api-host1"
        );
        assert_eq!(
            instance_value(&sample(), CheckStatus::Warning),
            concat!(
                r#"{"ID":"api-host1","Name":"api","Address":"10.0.0.2","Port":8080,"#,
                r#""Tags":["blue","v1"],"Status":"warning"}"#
            )
        );
        let mut s = sample();
        s.tags.clear();
        assert!(
            instance_value(&s, CheckStatus::Passing).ends_with(r#""Tags":[],"Status":"passing"}"#)
        );
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(
            prefix_end(b"/cp/services/api/"),
            b"/cp/services/api0".to_vec()
        );
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn range_answers_become_passing_tagged_instances() {
        let answer = json!({
            "header": {},
            "kvs": [
                kv(r#"{"ID":"api-a","Name":"api","Address":"10.0.0.5","Port":5432,"Tags":["blue"],"Status":"passing"}"#),
                kv(r#"{"ID":"api-b","Name":"api","Address":"10.0.0.6","Port":5433,"Tags":[],"Status":"passing"}"#),
                kv(r#"{"ID":"api-c","Name":"api","Address":"10.0.0.7","Port":5434,"Tags":["blue"],"Status":"warning"}"#),
                kv(r#"{"ID":"api-d","Port":1}"#),
                kv("not json"),
                { "key": "x", "value": "%%%" },
                kv(r#"{"ID":"api-e","Port":70000}"#),
            ],
            "count": "7"
        });
        let all = parse_range(&answer, None).expect("range");
        let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["api-a", "api-b", "api-d"]);
        assert_eq!(
            all[0],
            Instance {
                id: "api-a".into(),
                name: "api".into(),
                address: "10.0.0.5".into(),
                port: 5432,
                tags: vec!["blue".into()],
            }
        );
        assert_eq!(
            all[2].address, "",
            "missing fields are empty, Status defaults to passing"
        );
        let blue = parse_range(&answer, Some("blue")).expect("range");
        assert_eq!(blue.len(), 1);
        assert_eq!(blue[0].id, "api-a");
        assert_eq!(parse_range(&json!({"header": {}}), None), Ok(vec![]));
        assert_eq!(
            parse_range(&json!({"kvs": 3}), None),
            Err(CatalogError::Decode("range: kvs is not an array".into()))
        );
    }

    #[test]
    fn key_range_answers() {
        let answer = json!({"header": {"revision": "9"}, "kvs": [{
            "key": encode(b"app/config"), "create_revision": "4", "mod_revision": "8",
            "version": "2", "value": encode(b"x=1")}], "count": "1"});
        assert_eq!(
            parse_key(&answer),
            Ok(Some(KeyValue {
                value: b"x=1".to_vec(),
                modify_index: 8
            }))
        );
        assert_eq!(parse_key(&json!({"header": {"revision": "9"}})), Ok(None));
        assert_eq!(parse_key(&json!({"kvs": []})), Ok(None));
        let no_value = json!({"kvs": [{"key": encode(b"k"), "mod_revision": "3"}]});
        assert_eq!(
            parse_key(&no_value),
            Ok(Some(KeyValue {
                value: vec![],
                modify_index: 3
            }))
        );
    }

    #[test]
    fn gateway_bodies() {
        let with_trailer = concat!(
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
            "Grpc-Trailer-Content-Type: application/grpc\r\n"
        );
        assert_eq!(
            error_text(with_trailer),
            "etcdserver: requested lease not found"
        );
        assert_eq!(error_text("plain text\n"), "plain text");
        assert_eq!(first_json(r#"{"a":1} trailing"#), Ok(json!({"a": 1})));
        assert_eq!(
            first_json(""),
            Err(CatalogError::Decode("etcd answer: empty body".into()))
        );
        let ok = json!({"result": {"ID": "7", "TTL": "5"}});
        assert_eq!(
            int_field(keepalive_result(&ok).expect("result"), "TTL"),
            Ok(5)
        );
        let gone = json!({"result": {"ID": "7"}});
        assert_eq!(
            int_field(keepalive_result(&gone).expect("result"), "TTL"),
            Ok(0)
        );
        let err = json!({"error": {"http_code": 503, "message": "etcdserver: no leader"}});
        assert_eq!(
            keepalive_result(&err),
            Err(CatalogError::Status {
                code: 503,
                body: "etcdserver: no leader".into()
            })
        );
        assert_eq!(int_field(&json!({"ID": 12}), "ID"), Ok(12));
        assert_eq!(
            int_field(&json!({"ID": "x"}), "ID"),
            Err(CatalogError::Decode("ID: not an integer: \"x\"".into()))
        );
    }

    #[test]
    fn error_classes() {
        assert!(moves_on(&CatalogError::Transport("refused".into())));
        assert!(moves_on(&CatalogError::Status {
            code: 503,
            body: "etcdserver: no leader".into()
        }));
        assert!(!moves_on(&CatalogError::Status {
            code: 404,
            body: String::new()
        }));
        assert!(is_bad_token(&CatalogError::Status {
            code: 401,
            body: "etcdserver: invalid auth token".into()
        }));
        assert!(!is_bad_token(&CatalogError::Status {
            code: 400,
            body: "etcdserver: authentication failed, invalid user ID or password".into()
        }));
        assert!(lease_not_found("api-h").is_unknown_check());
    }

    fn cfg(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: "/cp/".into(),
            username: None,
            password: None,
            tls: Default::default(),
        }
    }

    /// Free loopback ports nobody listens on: every call is refused at once.
    fn dead_endpoint() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn unreachable_endpoints_give_a_transport_error_after_trying_all() {
        let (a, b) = (dead_endpoint(), dead_endpoint());
        let mut c = EtcdClient::new(&cfg(&[&a, &b]), Duration::from_secs(2)).expect("client");
        assert_eq!(c.prefix, "/cp");
        let target = Target::Service {
            name: "api".into(),
            tag: None,
            dc: None,
        };
        let e = c.observe(&target, 0, None).expect_err("down");
        assert!(e.is_transport(), "{e}");
        assert!(e.to_string().contains(&b["http://".len()..]), "{e}");
        assert_eq!(
            c.endpoint(),
            Some(a.as_str()),
            "stays put when none answers"
        );
        // nothing registered: a heartbeat asks for registration, deregistration is a no-op
        assert!(c.pass_ttl("api-h").expect_err("unknown").is_unknown_check());
        assert_eq!(c.deregister("api-h"), Ok(()));
    }
}
