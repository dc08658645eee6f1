//! A Consul agent test double: the part of the agent HTTP API that containerpilot
//! uses, served on 127.0.0.1 from background threads (no Consul binary can be
//! installed on the test machines).
//!
//! Followed: the Consul 1.8 agent HTTP API docs (`/agent/service`, `/agent/check`,
//! `/health`, blocking queries, ACL errors) and the 1.x agent's error texts:
//! - `PUT /v1/agent/service/register`: JSON body, field names matched
//!   case-insensitively as Consul's decoder does; 400 `Request decode failed: …`
//!   on bad JSON, 400 `Missing service name`; `ID` defaults to `Name`; a `Check`
//!   with `TTL` becomes the check `service:<ID>` named `Service '<Name>' check`,
//!   initial `Status` critical unless given; re-registering replaces.
//! - `PUT /v1/agent/check/update/<CheckID>`: body `{"Status","Output"}`; 400
//!   `Invalid status` for other statuses; an unknown check answers 500
//!   `CheckID "<id>" does not have associated TTL`.
//! - `PUT /v1/agent/service/deregister/<ID>`: 404 `Unknown service ID "<id>"` when
//!   unknown; removes the service and its checks.
//! - `GET /v1/agent/services`, `GET /v1/agent/checks`: maps keyed by ID.
//! - `GET /v1/health/service/<name>?passing&tag&dc&index&wait`: entries
//!   `{Node, Service, Checks}` (node check `serfHealth` included), header
//!   `X-Consul-Index` = the last index at which an instance or check of that
//!   service changed (the catalog's index for a name never seen); a `dc` other
//!   than `dc1` answers 500 `No path to datacenter`.
//! - `GET|PUT|DELETE /v1/kv/<key>[?dc&index&wait]`: PUT stores the raw body and
//!   answers `true`, DELETE answers `true` (also for a missing key); GET answers
//!   `[{"LockIndex","Key","Flags","Value" (base64, null when empty),
//!   "CreateIndex","ModifyIndex"}]`, or 404 with an empty body when the key does
//!   not exist. `X-Consul-Index` is the key's ModifyIndex, or the KV store's
//!   last index when the key does not exist.
//! - Blocking queries (health and KV): with `index` the call is held until the
//!   answer's index moves past it or `wait` (default 5m, max 10m, plus up to
//!   wait/16 of jitter) runs out, then answered with the current state and
//!   `X-Consul-Index` — on every answer. A TTL update that changes neither status
//!   nor output does not move the index (the agent syncs only changes).
//! - TTL checks turn critical with Output `TTL expired` when not updated within
//!   their TTL (the timer starts at registration); a service whose check has been
//!   critical for `DeregisterCriticalServiceAfter` is removed. Unlike Consul, no
//!   1-minute minimum and no 30 s reap period, so tests stay fast.
//! - ACLs (when a token is set): no token → 403 `Permission denied`, another token →
//!   403 `ACL not found`; the token is read from `X-Consul-Token`, `?token=` or
//!   `Authorization: Bearer`.
//!
//! Switches: `set_down` (connections are accepted and closed unanswered, like a
//! dead agent; held queries are dropped too), `set_delay` (answer slowly;
//! `Duration::MAX` = never, until reset: a paused agent), `set_holding(false)`
//! (answer blocking queries at once, as a cache or proxy in front of the agent
//! that strips the hold would; what plain interval polling costs),
//! `rewind_index` (every index goes back, as after a snapshot restore),
//! `restart` (forget every registration), `stop`. No TLS: std cannot serve it.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NODE: &str = "consul-double";
const DATACENTER: &str = "dc1";
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// (method, path with query, X-Consul-Token as sent)
pub type RequestRecord = (String, String, Option<String>);

pub struct ConsulDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    down: AtomicBool,
    stopped: AtomicBool,
    /// False: blocking queries are answered at once.
    holding: AtomicBool,
    delay: Mutex<Duration>,
}

#[derive(Default)]
struct State {
    /// Raft-like index: bumped on every catalog or KV change.
    index: u64,
    /// Per service name: the index of its last change.
    service_index: BTreeMap<String, u64>,
    services: BTreeMap<String, Svc>,
    checks: BTreeMap<String, Check>,
    kv: BTreeMap<String, KvEntry>,
    /// The index of the last KV write or delete.
    kv_index: u64,
    /// Bumped by `rewind_index`: held queries return, as after a restore.
    restores: u64,
    acl_token: Option<String>,
    log: Vec<RequestRecord>,
    /// Bodies of accepted service registrations, in order.
    registrations: Vec<Value>,
}

#[derive(Clone, Debug)]
struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

impl State {
    /// A change to service `name`: a new index, recorded for that name.
    fn touch(&mut self, name: &str) {
        self.index += 1;
        self.service_index.insert(name.to_string(), self.index);
    }

    fn index_of_service(&self, name: &str) -> u64 {
        self.service_index.get(name).copied().unwrap_or(self.index)
    }

    fn index_of_key(&self, key: &str) -> u64 {
        self.kv.get(key).map_or(self.kv_index, |e| e.modify_index)
    }
}

#[derive(Clone, Debug)]
struct Svc {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u64,
    enable_tag_override: bool,
}

#[derive(Clone, Debug)]
struct Check {
    id: String,
    name: String,
    service_id: String,
    service_name: String,
    status: String,
    notes: String,
    output: String,
    ttl: Duration,
    expires: Instant,
    deregister_after: Option<Duration>,
    critical_since: Option<Instant>,
}

struct Answer {
    code: u16,
    body: String,
    json: bool,
    index: Option<u64>,
}

impl Answer {
    fn json(v: Value) -> Answer {
        Answer {
            code: 200,
            body: v.to_string(),
            json: true,
            index: None,
        }
    }

    fn empty() -> Answer {
        Answer::error(200, "")
    }

    fn error(code: u16, text: &str) -> Answer {
        Answer {
            code,
            body: text.to_string(),
            json: false,
            index: None,
        }
    }
}

impl ConsulDouble {
    pub fn start() -> ConsulDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind consul double");
        let addr = listener.local_addr().expect("double address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                index: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            down: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            holding: AtomicBool::new(true),
            delay: Mutex::new(Duration::ZERO),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        let ticker = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                while !shared.stopped.load(Ordering::SeqCst) {
                    shared.tick();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        ConsulDouble {
            shared,
            addr,
            threads: vec![accept, ticker],
        }
    }

    /// Like `start`, with ACLs on: every call needs this token.
    pub fn start_with_token(token: &str) -> ConsulDouble {
        let d = ConsulDouble::start();
        d.shared.lock().acl_token = Some(token.to_string());
        d
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `GET /v1/agent/services` as Consul would answer it.
    pub fn services(&self) -> Value {
        let st = self.shared.lock();
        agent_services(&st)
    }

    /// `GET /v1/agent/checks` as Consul would answer it.
    pub fn checks(&self) -> Value {
        let st = self.shared.lock();
        agent_checks(&st)
    }

    /// Status of check `id`, or of the TTL check `service:<id>` of service `id`.
    pub fn check_status(&self, id: &str) -> Option<String> {
        self.shared.tick();
        let st = self.shared.lock();
        st.checks
            .get(&format!("service:{id}"))
            .or_else(|| st.checks.get(id))
            .map(|c| c.status.clone())
    }

    /// Output of check `id` (or `service:<id>`).
    pub fn check_output(&self, id: &str) -> Option<String> {
        let st = self.shared.lock();
        st.checks
            .get(&format!("service:{id}"))
            .or_else(|| st.checks.get(id))
            .map(|c| c.output.clone())
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// The JSON bodies of the service registrations the agent accepted.
    pub fn registrations(&self) -> Vec<Value> {
        self.shared.lock().registrations.clone()
    }

    /// Registers a service as `PUT /v1/agent/service/register` would (for
    /// upstreams that watches should see). Returns the HTTP status.
    pub fn register(&self, body: Value) -> u16 {
        let mut st = self.shared.lock();
        let a = register(&mut st, &body.to_string());
        self.shared.changed.notify_all();
        a.code
    }

    pub fn deregister(&self, id: &str) -> u16 {
        let mut st = self.shared.lock();
        let a = deregister(&mut st, id);
        self.shared.changed.notify_all();
        a.code
    }

    /// Forget every service and check, as a restarted agent without config would.
    pub fn restart(&self) {
        let mut st = self.shared.lock();
        let names: Vec<String> = st.services.values().map(|s| s.name.clone()).collect();
        st.services.clear();
        st.checks.clear();
        st.index += 1;
        for n in names {
            st.touch(&n);
        }
        self.shared.changed.notify_all();
    }

    /// `PUT /v1/kv/<key>` with this value; returns the new ModifyIndex.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> u64 {
        let mut st = self.shared.lock();
        kv_put(&mut st, key, value, None);
        self.shared.changed.notify_all();
        st.index
    }

    /// `DELETE /v1/kv/<key>`.
    pub fn kv_delete(&self, key: &str) {
        let mut st = self.shared.lock();
        kv_delete(&mut st, key);
        self.shared.changed.notify_all();
    }

    /// Every index goes back to `to` (a restored snapshot), the state stays.
    pub fn rewind_index(&self, to: u64) {
        let mut st = self.shared.lock();
        st.restores += 1;
        st.index = to;
        st.kv_index = st.kv_index.min(to);
        for i in st.service_index.values_mut() {
            *i = (*i).min(to);
        }
        for e in st.kv.values_mut() {
            e.modify_index = e.modify_index.min(to);
            e.create_index = e.create_index.min(to);
        }
        self.shared.changed.notify_all();
    }

    /// The current index of service `name` (what X-Consul-Index would say).
    pub fn service_index(&self, name: &str) -> u64 {
        self.shared.lock().index_of_service(name)
    }

    /// While down, connections are accepted and closed without an answer, and
    /// held blocking queries are dropped unanswered.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }

    /// `false`: blocking queries are answered at once (see the module notes).
    pub fn set_holding(&self, holding: bool) {
        self.shared.holding.store(holding, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }

    /// Requests whose path (with query) starts with `prefix`.
    pub fn count_requests(&self, prefix: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|(_, p, _)| p.starts_with(prefix))
            .count()
    }

    /// Every request is handled, and answered, no sooner than this long after
    /// it arrived; `Duration::MAX` answers nothing, held queries included, until
    /// the delay is set back (requests already waiting then proceed): a paused
    /// agent.
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.shared.delay.lock() {
            *d = delay;
        }
    }

    pub fn stop(&mut self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.changed.notify_all();
        // Unblock the accept loop.
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test thread that panicked while holding the lock must not hide the
        // state from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expire TTLs and reap long-critical services.
    fn tick(&self) {
        let mut st = self.lock();
        if expire(&mut st, Instant::now()) {
            self.changed.notify_all();
        }
    }

    /// Waits until `set_delay` after `since`; false when the agent went down or
    /// stopped meanwhile.
    fn pause(&self, since: Instant) -> bool {
        while since.elapsed() < self.delay() {
            if self.gone() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.gone()
    }

    fn gone(&self) -> bool {
        self.down.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst)
    }

    fn delay(&self) -> Duration {
        self.delay.lock().map(|d| *d).unwrap_or(Duration::ZERO)
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = Vec::new();
    for stream in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if shared.down.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        conns.push(std::thread::spawn(move || serve_connection(stream, shared)));
        conns.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    for t in conns {
        let _ = t.join();
    }
}

struct Parsed {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Keep-alive loop: one request after the other until the client closes, the
/// double goes down or stops.
fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf, &shared) {
            Some(Ok(r)) => r,
            Some(Err(code)) => {
                let _ = write_answer(&mut stream, &Answer::error(code, "bad request"), false);
                return;
            }
            None => return,
        };
        if shared.down.load(Ordering::SeqCst) {
            return;
        }
        let token = request_token(&req);
        shared
            .lock()
            .log
            .push((req.method.clone(), req.target.clone(), token.clone()));
        let arrived = Instant::now();
        if !shared.pause(arrived) {
            return;
        }
        // None: the agent went down while holding the query.
        let Some(answer) = route(&shared, &req, token.as_deref()) else {
            return;
        };
        // A paused agent does not answer the queries it was holding either.
        if !shared.pause(arrived) {
            return;
        }
        let close = req
            .header("Connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if write_answer(&mut stream, &answer, close).is_err() || close {
            return;
        }
    }
}

/// `None` when the connection ended (or the double stopped) before a request.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> Option<Result<Parsed, u16>> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Some(Err(431));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stopped.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(400));
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Err(400));
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Parsed {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if req.header("Transfer-Encoding").is_some() {
        return Some(Err(411));
    }
    let len = match req.header("Content-Length").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(_) => return Some(Err(400)),
    };
    buf.drain(..head_end + 4);
    while buf.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stopped.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    req.body = buf.drain(..len).collect();
    Some(Ok(req))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn write_answer(stream: &mut TcpStream, a: &Answer, close: bool) -> std::io::Result<()> {
    let reason = match a.code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        a.code,
        if a.json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        },
        a.body.len()
    );
    if let Some(index) = a.index {
        head.push_str(&format!(
            "X-Consul-Index: {index}\r\nX-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\n"
        ));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(a.body.as_bytes())?;
    stream.flush()
}

fn request_token(req: &Parsed) -> Option<String> {
    if let Some(t) = req.header("X-Consul-Token") {
        return Some(t.to_string());
    }
    if let Some(t) = query_params(&req.target).get("token") {
        return Some(t.clone());
    }
    req.header("Authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

fn route(shared: &Shared, req: &Parsed, token: Option<&str>) -> Option<Answer> {
    shared.tick();
    let (path, _) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let path = percent_decode(path);
    let params = query_params(&req.target);
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let mut st = shared.lock();
    if let Some(expected) = &st.acl_token {
        match token.filter(|t| !t.is_empty()) {
            None => return Some(Answer::error(403, "Permission denied")),
            Some(t) if t != expected => return Some(Answer::error(403, "ACL not found")),
            Some(_) => {}
        }
    }
    let method = req.method.as_str();
    let need = |m: &str| -> Option<Answer> {
        (method != m).then(|| Answer::error(405, &format!("method {method} not allowed")))
    };
    let answer = if path == "/v1/agent/service/register" {
        need("PUT").unwrap_or_else(|| register(&mut st, &body))
    } else if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        need("PUT").unwrap_or_else(|| deregister(&mut st, id))
    } else if let Some(id) = path.strip_prefix("/v1/agent/check/update/") {
        need("PUT").unwrap_or_else(|| update_check(&mut st, id, &body))
    } else if path == "/v1/agent/check/register" {
        need("PUT").unwrap_or_else(|| register_check(&mut st, &body))
    } else if let Some(id) = path.strip_prefix("/v1/agent/check/pass/") {
        // legacy endpoint (Consul ≤ 1.x still serves it): note becomes the output
        let note = params.get("note").cloned().unwrap_or_default();
        let body = serde_json::json!({ "Status": "passing", "Output": note }).to_string();
        need("PUT").unwrap_or_else(|| update_check(&mut st, id, &body))
    } else if path == "/v1/agent/services" {
        need("GET").unwrap_or_else(|| Answer::json(agent_services(&st)))
    } else if path == "/v1/agent/checks" {
        need("GET").unwrap_or_else(|| Answer::json(agent_checks(&st)))
    } else if let Some(name) = path.strip_prefix("/v1/health/service/") {
        if let Some(a) = need("GET") {
            a
        } else {
            drop(st);
            return health_service(shared, name, &params);
        }
    } else if let Some(key) = path.strip_prefix("/v1/kv/") {
        match method {
            "GET" => {
                drop(st);
                return kv_get(shared, key, &params);
            }
            "PUT" => {
                let flags = params.get("flags").and_then(|f| f.parse().ok());
                kv_put(&mut st, key, &req.body, flags);
                Answer::json(Value::Bool(true))
            }
            "DELETE" => {
                kv_delete(&mut st, key);
                Answer::json(Value::Bool(true))
            }
            _ => Answer::error(405, &format!("method {method} not allowed")),
        }
    } else {
        Answer::error(404, "404 page not found")
    };
    if answer.code == 200 && matches!(method, "PUT" | "DELETE") {
        shared.changed.notify_all();
    }
    Some(answer)
}

/// `index` and `wait` of a blocking query: `Ok(None)` without an index.
fn blocking_params(params: &BTreeMap<String, String>) -> Result<Option<(u64, Duration)>, Answer> {
    let wait = match params.get("wait").map(|w| parse_go_duration(w)) {
        None => Duration::from_secs(300),
        Some(Ok(w)) => w.min(Duration::from_secs(600)),
        Some(Err(e)) => return Err(Answer::error(400, &format!("Invalid wait time: {e}"))),
    };
    match params.get("index").map(|i| i.parse::<u64>()) {
        None => Ok(None),
        Some(Ok(i)) => {
            // Consul adds up to wait/16 so that many waiters do not wake together.
            let spread = wait.as_millis() as u64 / 16;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as u64);
            let jitter = if spread == 0 { 0 } else { nanos % spread };
            Ok(Some((i, wait + Duration::from_millis(jitter))))
        }
        Some(Err(_)) => Err(Answer::error(400, "Invalid index")),
    }
}

/// Holds a blocking query: returns the locked state once `index_of` moves past
/// `min`, the state is restored (`rewind_index`), or the wait runs out (at once
/// when the double does not hold); `None` when the agent went down or stopped
/// meanwhile.
fn hold<'a>(
    shared: &'a Shared,
    block: Option<(u64, Duration)>,
    index_of: impl Fn(&State) -> u64,
) -> Option<MutexGuard<'a, State>> {
    let mut st = shared.lock();
    let Some((min, wait)) = block else {
        return Some(st);
    };
    let deadline = Instant::now() + wait;
    let restores = st.restores;
    while index_of(&st) <= min && shared.holding.load(Ordering::SeqCst) && st.restores == restores {
        if shared.gone() {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        st = match shared.changed.wait_timeout(st, left) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    if shared.gone() {
        return None;
    }
    Some(st)
}

/// A read that may block: checks `dc`, then holds as asked (see `hold`).
/// `Err(Some(answer))`: answer that instead; `Err(None)`: drop the connection.
fn read<'a>(
    shared: &'a Shared,
    params: &BTreeMap<String, String>,
    index_of: impl Fn(&State) -> u64,
) -> Result<MutexGuard<'a, State>, Option<Answer>> {
    if let Some(dc) = params.get("dc").filter(|d| !d.is_empty()) {
        if dc != DATACENTER {
            return Err(Some(Answer::error(500, "No path to datacenter")));
        }
    }
    let block = blocking_params(params).map_err(Some)?;
    hold(shared, block, index_of).ok_or(None)
}

fn kv_put(st: &mut State, key: &str, value: &[u8], flags: Option<u64>) {
    st.index += 1;
    st.kv_index = st.index;
    let index = st.index;
    let entry = st.kv.entry(key.to_string()).or_insert(KvEntry {
        value: Vec::new(),
        flags: 0,
        create_index: index,
        modify_index: index,
    });
    entry.value = value.to_vec();
    entry.modify_index = index;
    if let Some(f) = flags {
        entry.flags = f;
    }
}

fn kv_delete(st: &mut State, key: &str) {
    // Consul moves the KV index on a delete even when the key did not exist.
    st.index += 1;
    st.kv_index = st.index;
    st.kv.remove(key);
}

fn kv_get(shared: &Shared, key: &str, params: &BTreeMap<String, String>) -> Option<Answer> {
    let st = match read(shared, params, |st| st.index_of_key(key)) {
        Ok(st) => st,
        Err(a) => return a,
    };
    let mut a = match st.kv.get(key) {
        None => Answer::error(404, ""),
        Some(e) => {
            let value = if e.value.is_empty() {
                Value::Null
            } else {
                Value::String(containerpilot::catalog::base64::encode(&e.value))
            };
            Answer::json(json!([{
                "LockIndex": 0,
                "Key": key,
                "Flags": e.flags,
                "Value": value,
                "CreateIndex": e.create_index,
                "ModifyIndex": e.modify_index,
            }]))
        }
    };
    // Consul never answers index 0: blocking on 0 would not block.
    a.index = Some(st.index_of_key(key).max(1));
    Some(a)
}

/// Case-insensitive field lookup, as Consul's JSON decoding matches names.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn text_field(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!("{name}: expected a string, got {v}")),
    }
}

fn register(st: &mut State, body: &str) -> Answer {
    match parse_registration(body) {
        Ok((svc, check)) => {
            st.checks.retain(|_, c| c.service_id != svc.id);
            if let Some(c) = check {
                st.checks.insert(c.id.clone(), c);
            }
            let name = svc.name.clone();
            if let Some(old) = st.services.insert(svc.id.clone(), svc) {
                if old.name != name {
                    st.touch(&old.name);
                }
            }
            st.touch(&name);
            if let Ok(v) = serde_json::from_str(body) {
                st.registrations.push(v);
            }
            Answer::empty()
        }
        Err(e) => Answer::error(400, &e),
    }
}

fn parse_registration(body: &str) -> Result<(Svc, Option<Check>), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("Request decode failed: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "Request decode failed: body is not a JSON object".to_string())?;
    let bad = |e: String| format!("Request decode failed: {e}");
    let name = text_field(obj, "Name").map_err(bad)?;
    if name.is_empty() {
        return Err("Missing service name".to_string());
    }
    let mut id = text_field(obj, "ID").map_err(bad)?;
    if id.is_empty() {
        id = name.clone();
    }
    let tags = match field(obj, "Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("Tags: expected strings".to_string()))?,
        Some(_) => return Err(bad("Tags: expected an array".to_string())),
    };
    let port = match field(obj, "Port") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_u64()
            .filter(|p| *p <= 65535)
            .ok_or_else(|| bad(format!("Port: invalid {p}")))?,
    };
    let enable_tag_override = match field(obj, "EnableTagOverride") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad(format!("EnableTagOverride: expected a bool, got {v}"))),
    };
    let svc = Svc {
        id: id.clone(),
        name: name.clone(),
        tags,
        address: text_field(obj, "Address").map_err(bad)?,
        port,
        enable_tag_override,
    };
    let check = match field(obj, "Check") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(parse_check(c, &svc)?),
        Some(_) => return Err(bad("Check: expected an object".to_string())),
    };
    Ok((svc, check))
}

fn parse_check(c: &Map<String, Value>, svc: &Svc) -> Result<Check, String> {
    let bad = |e: String| format!("Request decode failed: {e}");
    let ttl_text = text_field(c, "TTL").map_err(bad)?;
    if ttl_text.is_empty() {
        // The only check kind this double runs; others cannot be executed here.
        return Err("Invalid check: only TTL checks are supported by this agent".to_string());
    }
    let ttl = parse_go_duration(&ttl_text).map_err(|e| bad(format!("TTL: {e}")))?;
    if ttl.is_zero() {
        return Err("Invalid check: TTL must be > 0 for TTL checks".to_string());
    }
    let mut status = text_field(c, "Status").map_err(bad)?;
    if status.is_empty() {
        status = "critical".to_string();
    } else if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return Err(format!("Invalid check status: {status:?}"));
    }
    let after = text_field(c, "DeregisterCriticalServiceAfter").map_err(bad)?;
    let deregister_after = if after.is_empty() {
        None
    } else {
        Some(
            parse_go_duration(&after)
                .map_err(|e| bad(format!("DeregisterCriticalServiceAfter: {e}")))?,
        )
    };
    let mut check_id = text_field(c, "CheckID").map_err(bad)?;
    if check_id.is_empty() {
        check_id = format!("service:{}", svc.id);
    }
    let mut name = text_field(c, "Name").map_err(bad)?;
    if name.is_empty() {
        name = format!("Service '{}' check", svc.name);
    }
    let now = Instant::now();
    Ok(Check {
        id: check_id,
        name,
        service_id: svc.id.clone(),
        service_name: svc.name.clone(),
        critical_since: (status == "critical").then_some(now),
        status,
        notes: text_field(c, "Notes").map_err(bad)?,
        output: String::new(),
        ttl,
        expires: now + ttl,
        deregister_after,
    })
}

/// `PUT /v1/agent/check/register`: a TTL check bound to an existing service.
fn register_check(st: &mut State, body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::error(400, &format!("Request decode failed: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return Answer::error(400, "Request decode failed: body is not a JSON object");
    };
    let service_id = text_field(obj, "ServiceID").unwrap_or_default();
    let Some(svc) = st.services.get(&service_id).cloned() else {
        return Answer::error(500, &format!("ServiceID {service_id:?} does not exist"));
    };
    let mut c = obj.clone();
    if let Some(id) = obj.get("ID").cloned() {
        c.insert("CheckID".into(), id);
    }
    match parse_check(&c, &svc) {
        Ok(check) => {
            st.checks.insert(check.id.clone(), check);
            st.touch(&svc.name);
            Answer::empty()
        }
        Err(e) => Answer::error(400, &e),
    }
}

fn deregister(st: &mut State, id: &str) -> Answer {
    let Some(svc) = st.services.remove(id) else {
        return Answer::error(404, &format!("Unknown service ID {id:?}"));
    };
    st.checks.retain(|_, c| c.service_id != id);
    st.touch(&svc.name);
    Answer::empty()
}

fn update_check(st: &mut State, id: &str, body: &str) -> Answer {
    let (status, output) = if body.trim().is_empty() {
        (String::new(), String::new())
    } else {
        let v: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Answer::error(400, &format!("Request decode failed: {e}")),
        };
        let Some(obj) = v.as_object() else {
            return Answer::error(400, "Request decode failed: body is not a JSON object");
        };
        match (text_field(obj, "Status"), text_field(obj, "Output")) {
            (Ok(s), Ok(o)) => (s, o),
            (Err(e), _) | (_, Err(e)) => {
                return Answer::error(400, &format!("Request decode failed: {e}"))
            }
        }
    };
    if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return Answer::error(400, &format!("Invalid status {status:?}"));
    }
    let Some(check) = st.checks.get_mut(id) else {
        return Answer::error(500, &format!("CheckID {id:?} does not have associated TTL"));
    };
    let now = Instant::now();
    check.expires = now + check.ttl;
    check.critical_since = match (status.as_str(), check.critical_since) {
        ("critical", Some(since)) => Some(since),
        ("critical", None) => Some(now),
        _ => None,
    };
    // The agent syncs a check to the catalog only when it changed.
    let moved = check.status != status || check.output != output;
    check.status = status;
    check.output = output;
    if moved {
        let name = check.service_name.clone();
        st.touch(&name);
    }
    Answer::empty()
}

/// True when something changed.
fn expire(st: &mut State, now: Instant) -> bool {
    let mut touched = Vec::new();
    for c in st.checks.values_mut() {
        if now >= c.expires && c.status != "critical" {
            c.status = "critical".to_string();
            c.output = "TTL expired".to_string();
            c.critical_since = Some(now);
            touched.push(c.service_name.clone());
        }
    }
    let reap: Vec<String> = st
        .checks
        .values()
        .filter(|c| match (c.critical_since, c.deregister_after) {
            (Some(since), Some(after)) => now.duration_since(since) >= after,
            _ => false,
        })
        .map(|c| c.service_id.clone())
        .collect();
    for id in reap {
        if let Some(svc) = st.services.remove(&id) {
            touched.push(svc.name);
        }
        st.checks.retain(|_, c| c.service_id != id);
    }
    for name in &touched {
        st.touch(name);
    }
    !touched.is_empty()
}

fn service_json(s: &Svc) -> Value {
    json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Meta": {},
        "Port": s.port,
        "Address": s.address,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": s.enable_tag_override,
    })
}

fn check_json(c: &Check, tags: &[String]) -> Value {
    json!({
        "Node": NODE,
        "CheckID": c.id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": tags,
        "Type": "ttl",
        "Definition": {},
    })
}

fn agent_services(st: &State) -> Value {
    let map: Map<String, Value> = st
        .services
        .values()
        .map(|s| (s.id.clone(), service_json(s)))
        .collect();
    Value::Object(map)
}

fn agent_checks(st: &State) -> Value {
    let map: Map<String, Value> = st
        .checks
        .values()
        .map(|c| {
            let tags = st
                .services
                .get(&c.service_id)
                .map(|s| s.tags.clone())
                .unwrap_or_default();
            (c.id.clone(), check_json(c, &tags))
        })
        .collect();
    Value::Object(map)
}

fn health_service(
    shared: &Shared,
    name: &str,
    params: &BTreeMap<String, String>,
) -> Option<Answer> {
    let st = match read(shared, params, |st| st.index_of_service(name)) {
        Ok(st) => st,
        Err(a) => return a,
    };
    let passing_only = params.contains_key("passing");
    let tag = params.get("tag").filter(|t| !t.is_empty());
    let node = json!({
        "ID": "00000000-0000-0000-0000-000000000001",
        "Node": NODE,
        "Address": "127.0.0.1",
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
        "Meta": {},
    });
    let serf = json!({
        "Node": NODE,
        "CheckID": "serfHealth",
        "Name": "Serf Health Status",
        "Status": "passing",
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Definition": {},
    });
    let entries: Vec<Value> = st
        .services
        .values()
        .filter(|s| s.name == name)
        .filter(|s| tag.map_or(true, |t| s.tags.iter().any(|x| x == t)))
        .filter_map(|s| {
            let checks: Vec<&Check> = st
                .checks
                .values()
                .filter(|c| c.service_id == s.id)
                .collect();
            if passing_only && checks.iter().any(|c| c.status != "passing") {
                return None;
            }
            let mut all = vec![serf.clone()];
            all.extend(checks.iter().map(|c| check_json(c, &s.tags)));
            Some(json!({"Node": node, "Service": service_json(s), "Checks": all}))
        })
        .collect();
    let mut a = Answer::json(Value::Array(entries));
    a.index = Some(st.index_of_service(name).max(1));
    Some(a)
}

fn query_params(target: &str) -> BTreeMap<String, String> {
    let Some((_, q)) = target.split_once('?') else {
        return BTreeMap::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go `time.ParseDuration`: `[-]` then number+unit pairs (`ns us µs ms s m h`),
/// decimals allowed (`1.5h`), `0` alone allowed.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += num * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}
