//! The service catalog (Consul or etcd), kept off the event loop.
//!
//! Catalog calls are blocking HTTP calls, so they run on helper threads and the
//! loop only ever touches channels:
//! - one **worker** thread (`worker.rs`) does registrations, TTL heartbeats and
//!   deregistrations in request order;
//! - each watch gets a **lane** (`lanes.rs`): a thread with a small stack that
//!   holds that watch's blocking query (Consul `index`/`wait`, etcd watch) open
//!   for minutes. A long poll therefore never delays a heartbeat, another
//!   watch, or the loop.
//!
//! Replies from both come back on one channel, and the sender wakes the loop
//! with a `mio::Waker`. Threads exist only when a catalog is configured: the
//! worker from the start, a lane from its watch's first query. On shutdown or
//! reload an open long poll is abandoned, not awaited: its lane is dropped, the
//! reply it may still send is ignored, and the thread ends when its request
//! does (the process may exit first). Non-blocking catalog I/O inside the mio
//! loop was the alternative; it would mean a second, non-blocking HTTP client
//! and TLS stack plus asynchronous DNS, against one small thread per watch.

pub mod base64;
pub mod consul;
pub mod etcd;
mod lanes;
pub(crate) mod tls;
mod worker;

use crate::config::types::{CheckStatus, Config, ConsulConfig, JobConfig};
use consul::ConsulClient;
use etcd::EtcdClient;
use lanes::{Lanes, Reader};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
pub use worker::Backend;

/// Default bound on every catalog call that is not a long poll (SPEC §2.9).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Stack of every catalog thread. Threads touch only a few pages of it (HTTP,
/// JSON and TLS handshakes are shallow), so this bounds address space, not RSS.
pub const THREAD_STACK: usize = 256 * 1024;

/// How long a catalog replaced by a reload may take to deregister its services
/// before its successor starts anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// One advertised service as the catalog sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub enable_tag_override: bool,
    pub ttl_secs: u32,
    pub deregister_critical_service_after: Option<String>,
}

impl Service {
    /// `None` when the job is not advertised (no port) or has no TTL to heartbeat
    /// against (the config loader guarantees `health` for advertised jobs).
    pub fn from_job(job: &JobConfig, hostname: &str) -> Option<Service> {
        if !job.is_advertised() {
            return None;
        }
        let health = job.health.as_ref()?;
        let extras = job.consul.clone().unwrap_or_default();
        Some(Service {
            id: format!("{}-{}", job.name, hostname),
            name: job.name.clone(),
            address: job.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            port: job.port,
            tags: job.tags.clone(),
            enable_tag_override: extras.enable_tag_override,
            ttl_secs: health.ttl,
            deregister_critical_service_after: extras.deregister_critical_service_after,
        })
    }
}

/// Work for the worker thread. Replies arrive in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Register now with this check status (`initial_status`, leaving maintenance).
    /// Replies `Registered` or `RegisterFailed`.
    Register {
        service: Service,
        status: CheckStatus,
    },
    /// Mark the TTL check passing, registering first when needed (SPEC §2.9).
    /// Replies `Registered`/`RegisterFailed` when it had to register, and
    /// `HeartbeatFailed` when the update failed; a heartbeat that went through
    /// is not answered (it is counted in the catalog request metric).
    Heartbeat { service: Service },
    /// Replies `Deregistered` or `DeregisterFailed`.
    Deregister { id: String },
    /// Deregister everything this worker registered, reply Done, then exit the thread.
    Shutdown,
}

/// One passing instance of a watched service, as templates will read it.
/// Change detection compares ID, address, port and tags (see `watches`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    pub id: String,
    /// The service name the instance is registered under.
    pub name: String,
    /// The service's own address (`Service.Address` in Consul), as registered.
    pub address: String,
    pub port: u16,
    /// Sorted, so that the same tags in another order are the same instance.
    pub tags: Vec<String>,
}

impl Instance {
    /// From a service document, Consul's `Service` object or the value of an
    /// etcd instance key: `ID`, the name under `name_key`, `Address`, `Port`,
    /// `Tags`. Missing fields are empty; a port that is not a port is an error.
    pub fn from_json(
        doc: &serde_json::Map<String, serde_json::Value>,
        name_key: &str,
    ) -> Result<Instance, String> {
        use serde_json::Value;
        let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let port = match doc.get("Port") {
            None | Some(Value::Null) => 0,
            Some(p) => p
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("bad Port {p}"))?,
        };
        let mut tags: Vec<String> = doc
            .get("Tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        Ok(Instance {
            id: text("ID"),
            name: text(name_key),
            address: text("Address"),
            port,
            tags,
        })
    }
}

/// A watched key's value and the catalog's version of it (Consul
/// `ModifyIndex`, etcd `mod_revision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub modify_index: u64,
}

/// What a watch looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Passing instances of a service, optionally with a tag, in a datacenter.
    Service {
        name: String,
        tag: Option<String>,
        dc: Option<String>,
    },
    /// One key: Consul KV, or an etcd key as written (not under `prefix`).
    Key { key: String, dc: Option<String> },
}

/// What a watch saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    Instances(Vec<Instance>),
    /// `None`: the key does not exist.
    Key(Option<KeyValue>),
}

/// One answer to a watch query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Where the catalog is now (Consul `X-Consul-Index`, etcd revision); the
    /// next blocking query waits for a change after it. 0 when the catalog
    /// sent none.
    pub index: u64,
    /// `None`: the wait ran out with nothing moved and nothing was read again
    /// (etcd); Consul always sends the current state.
    pub snapshot: Option<Snapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Registered {
        id: String,
    },
    RegisterFailed {
        id: String,
        error: String,
    },
    HeartbeatFailed {
        id: String,
        error: String,
    },
    Deregistered {
        id: String,
    },
    DeregisterFailed {
        id: String,
        error: String,
    },
    /// The answer to `Catalog::observe` for watch `watch`.
    Observed {
        watch: usize,
        /// The lane that asked; answers of abandoned lanes never reach `try_recv`.
        lane: u64,
        result: Result<Observation, String>,
    },
    ShutdownDone,
}

/// Why a catalog call or the catalog set-up failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogError {
    /// A TLS file could not be used.
    Tls { path: String, reason: String },
    /// A TLS setting could not be applied.
    TlsSetup(String),
    /// The agent could not be reached or did not answer in time.
    Transport(String),
    /// The agent answered with a non-2xx status; `body` is its error text.
    Status { code: u16, body: String },
    /// The agent answered 2xx with a body we could not understand.
    Decode(String),
    /// The worker thread could not be started.
    Spawn(String),
}

impl CatalogError {
    /// True when the agent no longer knows the service or its check, so the
    /// service must be registered again (agent restarted, external deregistration).
    pub fn is_unknown_check(&self) -> bool {
        match self {
            CatalogError::Status { code: 404, .. } => true,
            CatalogError::Status { body, .. } => {
                body.contains("does not have associated TTL")
                    || body.contains("Unknown check")
                    || body.contains("Unknown service")
            }
            _ => false,
        }
    }

    pub fn is_transport(&self) -> bool {
        matches!(self, CatalogError::Transport(_))
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Tls { path, reason } => write!(f, "TLS file {path}: {reason}"),
            CatalogError::TlsSetup(reason) => write!(f, "TLS setup failed: {reason}"),
            CatalogError::Transport(reason) => f.write_str(reason),
            // Same wording as the Consul Go client, which 3.8 logged.
            CatalogError::Status { code, body } => {
                write!(f, "Unexpected response code: {code} ({body})")
            }
            CatalogError::Decode(reason) => write!(f, "unexpected catalog response: {reason}"),
            CatalogError::Spawn(reason) => write!(f, "cannot start catalog thread: {reason}"),
        }
    }
}

impl std::error::Error for CatalogError {}

/// What a catalog request was for, as the request counter labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Register,
    Heartbeat,
    Deregister,
    /// A service watch's query.
    Watch,
    /// A key watch's query.
    Key,
}

impl RequestKind {
    pub const ALL: [RequestKind; 5] = [
        RequestKind::Register,
        RequestKind::Heartbeat,
        RequestKind::Deregister,
        RequestKind::Watch,
        RequestKind::Key,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Register => "register",
            RequestKind::Heartbeat => "heartbeat",
            RequestKind::Deregister => "deregister",
            RequestKind::Watch => "watch",
            RequestKind::Key => "key",
        }
    }
}

/// HTTP requests sent to the catalog, by kind and outcome, shared by every
/// catalog thread and read by the metrics at scrape time. `ok`: the catalog
/// gave an answer the client accepts (a 404 for a missing key or an already
/// gone service included); `error`: any other answer, or none.
#[derive(Clone, Debug, Default)]
pub struct RequestCounts(Arc<[AtomicU64; 10]>);

impl RequestCounts {
    fn slot(kind: RequestKind, ok: bool) -> usize {
        kind as usize * 2 + usize::from(!ok)
    }

    pub fn add(&self, kind: RequestKind, ok: bool) {
        self.0[Self::slot(kind, ok)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: RequestKind, ok: bool) -> u64 {
        self.0[Self::slot(kind, ok)].load(Ordering::Relaxed)
    }
}

/// Handle held by the loop.
pub struct Catalog {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
    lanes: Lanes,
}

impl Catalog {
    /// A Consul catalog (tests and tools; the daemon uses `start_for`).
    pub fn start(
        cfg: &ConsulConfig,
        waker: Arc<mio::Waker>,
        timeout: Duration,
    ) -> Result<Catalog, CatalogError> {
        let client = ConsulClient::new(cfg, timeout)?;
        Catalog::spawn(
            Backend::Consul(client.clone()),
            Reader::Consul(client),
            waker,
            None,
        )
    }

    /// The catalog the config names (`consul` or `etcd`), `None` without one.
    /// Every HTTP request it sends is counted in `counts`.
    ///
    /// `previous` is the catalog a reload replaces: it takes its services out
    /// of its agent before the new worker sends anything (bounded by
    /// `RETIRE_WAIT`), so on a shared agent the old deregistrations cannot
    /// overtake the new registrations. That wait happens on the new worker's
    /// thread (or a thread of its own when there is no new catalog), never on
    /// the loop.
    pub fn start_for(
        cfg: &Config,
        waker: Arc<mio::Waker>,
        timeout: Duration,
        counts: &RequestCounts,
        previous: Option<Catalog>,
    ) -> Result<Option<Catalog>, CatalogError> {
        let clients = match (&cfg.consul, &cfg.etcd) {
            (Some(c), _) => ConsulClient::new(c, timeout).map(|client| {
                let client = client
                    .with_legacy_checks(cfg.compat == crate::config::types::Compat::V2)
                    .with_counts(counts.clone());
                Some((Backend::Consul(client.clone()), Reader::Consul(client)))
            }),
            (None, Some(e)) => EtcdClient::new(e, timeout).map(|client| {
                let client = client.with_counts(counts.clone());
                let reader = client.reader();
                Some((Backend::Etcd(client), Reader::Etcd(reader)))
            }),
            (None, None) => Ok(None),
        };
        match clients {
            Ok(Some((backend, reader))) => {
                Catalog::spawn(backend, reader, waker, previous).map(Some)
            }
            other => {
                if let Some(old) = previous {
                    old.retire();
                }
                other.map(|_| None)
            }
        }
    }

    fn spawn(
        backend: Backend,
        reader: Reader,
        waker: Arc<mio::Waker>,
        previous: Option<Catalog>,
    ) -> Result<Catalog, CatalogError> {
        let (req_tx, req_rx) = mpsc::channel();
        let (rep_tx, rep_rx) = mpsc::channel();
        let worker = worker::Worker::new(backend, rep_tx.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name("catalog".to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                if let Some(old) = previous {
                    old.shutdown(RETIRE_WAIT);
                }
                worker.run(req_rx)
            })
            .map_err(|e| CatalogError::Spawn(e.to_string()))?;
        Ok(Catalog {
            requests: req_tx,
            replies: rep_rx,
            thread: Some(thread),
            lanes: Lanes::new(reader, rep_tx, waker),
        })
    }

    /// Queue a request for the worker; never blocks. A request sent after the
    /// worker exited is dropped (only possible after `Shutdown`).
    pub fn send(&self, r: Request) {
        if self.requests.send(r).is_err() {
            log::debug!("catalog worker is gone; request dropped");
        }
    }

    /// Ask watch `watch`'s lane about `target`: a plain read when `wait` is
    /// `None`, else a blocking query for a change after `index` that gives up
    /// after about `wait`. The answer comes back as `Reply::Observed`. A lane
    /// busy with an older query of another target is abandoned for a new one.
    pub fn observe(
        &mut self,
        watch: usize,
        target: &Target,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<(), CatalogError> {
        self.lanes.observe(watch, target, index, wait)
    }

    /// Drop every watch lane, abandoning open long polls (a reload).
    pub fn abandon_watches(&mut self) {
        self.lanes.abandon_all();
    }

    /// Watch threads alive, abandoned ones still finishing a poll included.
    pub fn lane_threads(&self) -> usize {
        self.lanes.alive()
    }

    /// The next reply, skipping answers of abandoned lanes.
    pub fn try_recv(&self) -> Option<Reply> {
        loop {
            let r = self.replies.try_recv().ok()?;
            if let Reply::Observed { watch, lane, .. } = &r {
                if !self.lanes.is_current(*watch, *lane) {
                    continue;
                }
            }
            return Some(r);
        }
    }

    /// Deregister every service and stop the worker, waiting at most `max_wait`.
    /// Watch lanes are abandoned at once; other replies still in flight are
    /// discarded: the loop is exiting.
    /// `shutdown` on a thread of its own, for a reload that drops the catalog:
    /// the loop goes on while the old services leave their agent.
    pub fn retire(self) {
        let spawned = std::thread::Builder::new()
            .name("catalog-retire".to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || self.shutdown(RETIRE_WAIT));
        if let Err(e) = spawned {
            // The old services then leave only by their TTL running out.
            log::warn!("catalog: cannot start a thread to deregister from the old catalog: {e}");
        }
    }

    pub fn shutdown(mut self, max_wait: Duration) {
        self.lanes.abandon_all();
        self.send(Request::Shutdown);
        let deadline = Instant::now() + max_wait;
        let done = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Reply::ShutdownDone) => break true,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => break false,
                Err(RecvTimeoutError::Disconnected) => break true,
            }
        };
        match self.thread.take() {
            Some(t) if done => {
                let _ = t.join();
            }
            // A worker stuck on a hung agent is left behind; the process is exiting.
            _ => log::warn!("catalog: gave up waiting for deregistration after {max_wait:?}"),
        }
    }
}

/// The OS hostname, "" when it cannot be read (3.8 ignored the error too).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{HealthConfig, JobConsulExtras};
    use std::net::{IpAddr, Ipv4Addr};

    fn job(name: &str, port: u16) -> JobConfig {
        JobConfig {
            port,
            ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            tags: vec!["web".to_string(), "v1".to_string()],
            consul: None,
            health: Some(HealthConfig {
                exec: Some(vec!["/bin/check".to_string()]),
                native: None,
                interval: Duration::from_secs(5),
                ttl: 10,
                timeout: Duration::from_secs(5),
                raw: false,
            }),
            line: 1,
            ..JobConfig::new(name, Some(vec!["/bin/app".to_string()]))
        }
    }

    #[test]
    fn service_from_advertised_job() {
        let mut j = job("app", 8080);
        j.consul = Some(JobConsulExtras {
            enable_tag_override: true,
            deregister_critical_service_after: Some("10m".to_string()),
        });
        let s = Service::from_job(&j, "host1").expect("advertised");
        assert_eq!(
            s,
            Service {
                id: "app-host1".to_string(),
                name: "app".to_string(),
                address: "10.0.0.2".to_string(),
                port: 8080,
                tags: vec!["web".to_string(), "v1".to_string()],
                enable_tag_override: true,
                ttl_secs: 10,
                deregister_critical_service_after: Some("10m".to_string()),
            }
        );
    }

    #[test]
    fn service_from_job_not_advertised() {
        assert_eq!(Service::from_job(&job("app", 0), "h"), None);
        let mut j = job("app", 80);
        j.health = None;
        assert_eq!(Service::from_job(&j, "h"), None);
    }

    #[test]
    fn service_without_ip_has_empty_address() {
        let mut j = job("app", 80);
        j.ip = None;
        let s = Service::from_job(&j, "").expect("advertised");
        assert_eq!(s.address, "");
        assert_eq!(s.id, "app-");
    }

    #[test]
    fn error_messages() {
        let e = CatalogError::Status {
            code: 500,
            body: "CheckID \"service:a-h\" does not have associated TTL".to_string(),
        };
        assert_eq!(
            e.to_string(),
            "Unexpected response code: 500 (CheckID \"service:a-h\" does not have associated TTL)"
        );
        assert!(e.is_unknown_check());
        assert!(CatalogError::Status {
            code: 404,
            body: String::new()
        }
        .is_unknown_check());
        assert!(!CatalogError::Status {
            code: 403,
            body: "Permission denied".to_string()
        }
        .is_unknown_check());
        assert!(!CatalogError::Transport("refused".to_string()).is_unknown_check());
        assert_eq!(
            CatalogError::Tls {
                path: "/ca.pem".to_string(),
                reason: "no certificates found".to_string()
            }
            .to_string(),
            "TLS file /ca.pem: no certificates found"
        );
    }

    #[test]
    fn hostname_is_readable() {
        // The test machine has a hostname; the exact value is the OS's.
        let h = hostname();
        assert!(!h.is_empty());
        assert!(!h.contains('\0'));
    }
}
