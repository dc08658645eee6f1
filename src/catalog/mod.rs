//! The service catalog, kept off the event loop.
//!
//! Every catalog call is a blocking HTTP call, so all of them run on one helper
//! thread. The loop hands that thread [`Request`]s over a channel and gets
//! [`Reply`]s back on another; after each reply the worker wakes the loop with a
//! `mio::Waker`, so the loop never waits on the catalog. The worker talks to its
//! backend through the plain [`Backend`] enum so that a second catalog (etcd) can
//! sit beside Consul without jobs or watches noticing.

pub mod consul;
pub mod etcd;

use crate::config::types::{CheckStatus, Config, ConsulConfig, JobConfig};
use consul::ConsulClient;
use etcd::EtcdClient;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default bound on every catalog call (SPEC §2.9).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Work for the catalog thread. Replies arrive in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Register now with this check status (`initial_status`, leaving maintenance).
    /// Replies `Registered` or `RegisterFailed`.
    Register {
        service: Service,
        status: CheckStatus,
    },
    /// Mark the TTL check passing, registering first when needed (SPEC §2.9).
    /// Replies `Registered`/`RegisterFailed` when it had to register, then
    /// `HeartbeatOk` or `HeartbeatFailed`.
    Heartbeat { service: Service },
    /// Replies `Deregistered` or `DeregisterFailed`.
    Deregister { id: String },
    /// Passing instances of a service; replies `Instances` or `QueryFailed`.
    Query {
        watch: usize,
        name: String,
        tag: Option<String>,
        dc: Option<String>,
    },
    /// Deregister everything this worker registered, reply Done, then exit the thread.
    Shutdown,
}

/// One passing instance of a watched service; change detection looks at these
/// three fields only (reference §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub address: String,
    pub port: u16,
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
    HeartbeatOk {
        id: String,
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
    Instances {
        watch: usize,
        instances: Vec<Instance>,
    },
    QueryFailed {
        watch: usize,
        error: String,
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

/// The catalog implementations the worker can drive.
pub enum Backend {
    Consul(ConsulClient),
    /// Keeps per-instance lease state, hence the `&mut self` methods.
    Etcd(EtcdClient),
}

impl Backend {
    fn register(&mut self, s: &Service, status: CheckStatus) -> Result<(), CatalogError> {
        match self {
            Backend::Consul(c) => c.register(s, status),
            Backend::Etcd(c) => c.register(s, status),
        }
    }

    fn pass_ttl(&mut self, id: &str) -> Result<(), CatalogError> {
        match self {
            Backend::Consul(c) => c.pass_ttl(id),
            Backend::Etcd(c) => c.pass_ttl(id),
        }
    }

    fn deregister(&mut self, id: &str) -> Result<(), CatalogError> {
        match self {
            Backend::Consul(c) => c.deregister(id),
            Backend::Etcd(c) => c.deregister(id),
        }
    }

    fn query(
        &mut self,
        name: &str,
        tag: Option<&str>,
        dc: Option<&str>,
    ) -> Result<Vec<Instance>, CatalogError> {
        match self {
            Backend::Consul(c) => c.query(name, tag, dc),
            // `dc` is refused by the config loader when etcd is the catalog.
            Backend::Etcd(c) => c.query(name, tag),
        }
    }
}

/// Handle held by the loop.
pub struct Catalog {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl Catalog {
    pub fn start(
        cfg: &ConsulConfig,
        waker: Arc<mio::Waker>,
        timeout: Duration,
    ) -> Result<Catalog, CatalogError> {
        let backend = Backend::Consul(ConsulClient::new(cfg, timeout)?);
        Catalog::start_backend(backend, waker)
    }

    /// The catalog the config names (`consul` or `etcd`), `None` without one.
    pub fn start_for(
        cfg: &Config,
        waker: Arc<mio::Waker>,
        timeout: Duration,
    ) -> Result<Option<Catalog>, CatalogError> {
        let backend = match (&cfg.consul, &cfg.etcd) {
            (Some(c), _) => Backend::Consul(
                ConsulClient::new(c, timeout)?
                    .with_legacy_checks(cfg.compat == crate::config::types::Compat::V2),
            ),
            (None, Some(e)) => Backend::Etcd(EtcdClient::new(e, timeout)?),
            (None, None) => return Ok(None),
        };
        Catalog::start_backend(backend, waker).map(Some)
    }

    pub fn start_backend(
        backend: Backend,
        waker: Arc<mio::Waker>,
    ) -> Result<Catalog, CatalogError> {
        let (req_tx, req_rx) = mpsc::channel();
        let (rep_tx, rep_rx) = mpsc::channel();
        let worker = Worker {
            backend,
            replies: rep_tx,
            waker,
            registered: BTreeMap::new(),
            stale: BTreeSet::new(),
            failing: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("catalog".to_string())
            .spawn(move || worker.run(req_rx))
            .map_err(|e| CatalogError::Spawn(e.to_string()))?;
        Ok(Catalog {
            requests: req_tx,
            replies: rep_rx,
            thread: Some(thread),
        })
    }

    /// Queue a request; never blocks. A request sent after the worker exited is
    /// dropped (only possible after `Shutdown`).
    pub fn send(&self, r: Request) {
        if self.requests.send(r).is_err() {
            log::debug!("catalog worker is gone; request dropped");
        }
    }

    pub fn try_recv(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// Deregister every service and stop the worker, waiting at most `max_wait`.
    /// Other replies still in flight are discarded: the loop is exiting.
    pub fn shutdown(mut self, max_wait: Duration) {
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

/// The helper thread's state.
struct Worker {
    backend: Backend,
    replies: Sender<Reply>,
    waker: Arc<mio::Waker>,
    /// Services this worker registered and has not deregistered, by ID.
    registered: BTreeMap<String, Service>,
    /// Filled when a call could not reach the agent: it may have restarted empty,
    /// so the next heartbeat of each of these services registers it again first.
    stale: BTreeSet<String>,
    /// Operations currently failing, so an outage logs once, not per heartbeat.
    failing: HashSet<String>,
}

impl Worker {
    fn run(mut self, requests: Receiver<Request>) {
        // Take everything already queued at once so that a Shutdown behind a
        // backlog of heartbeats is not delayed by them.
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            batch.extend(requests.try_iter());
            if batch.contains(&Request::Shutdown) {
                self.shutdown(batch);
                return;
            }
            for r in batch {
                self.handle(r);
            }
        }
        // The loop dropped its handle without a Shutdown: nothing left to answer.
    }

    fn reply(&self, r: Reply) {
        if self.replies.send(r).is_ok() {
            if let Err(e) = self.waker.wake() {
                log::debug!("catalog: cannot wake the loop: {e}");
            }
        }
    }

    fn handle(&mut self, r: Request) {
        match r {
            Request::Register { service, status } => {
                if status != CheckStatus::Passing {
                    log::info!(
                        "Registering service {} with initial status set to {}",
                        service.name,
                        status.as_str()
                    );
                }
                let reply = match self.register(&service, status) {
                    Ok(()) => Reply::Registered { id: service.id },
                    Err(e) => Reply::RegisterFailed {
                        id: service.id,
                        error: e.to_string(),
                    },
                };
                self.reply(reply);
            }
            Request::Heartbeat { service } => self.heartbeat(service),
            Request::Deregister { id } => {
                let reply = match self.deregister(&id) {
                    Ok(()) => Reply::Deregistered { id },
                    Err(e) => Reply::DeregisterFailed {
                        id,
                        error: e.to_string(),
                    },
                };
                self.reply(reply);
            }
            Request::Query {
                watch,
                name,
                tag,
                dc,
            } => {
                let reply = match self.query(&name, tag.as_deref(), dc.as_deref()) {
                    Ok(instances) => Reply::Instances { watch, instances },
                    Err(e) => Reply::QueryFailed {
                        watch,
                        error: e.to_string(),
                    },
                };
                self.reply(reply);
            }
            Request::Shutdown => self.shutdown(Vec::new()),
        }
    }

    /// Remember a transport failure (agent may come back empty) and pass the error on.
    fn note<T>(&mut self, r: Result<T, CatalogError>) -> Result<T, CatalogError> {
        if let Err(e) = &r {
            if e.is_transport() {
                self.stale = self.registered.keys().cloned().collect();
            }
        }
        r
    }

    fn register(&mut self, service: &Service, status: CheckStatus) -> Result<(), CatalogError> {
        let key = format!("register {}", service.id);
        let r = self.backend.register(service, status);
        match self.note(r) {
            Ok(()) => {
                self.recovered(&key);
                log::info!("Service registered: {}", service.name);
                self.stale.remove(&service.id);
                self.registered.insert(service.id.clone(), service.clone());
                Ok(())
            }
            Err(e) => {
                self.failed(key, format!("service registration failed: {e}"));
                Err(e)
            }
        }
    }

    fn heartbeat(&mut self, service: Service) {
        let id = service.id.clone();
        let changed = self.registered.get(&id).is_some_and(|s| *s != service);
        let must_register =
            changed || self.stale.contains(&id) || !self.registered.contains_key(&id);
        if must_register {
            if let Err(e) = self.register_for_heartbeat(&service) {
                self.heartbeat_failed(id, e);
                return;
            }
        }
        let first = self.backend.pass_ttl(&id);
        let result = match self.note(first) {
            Err(e) if e.is_unknown_check() && !must_register => {
                // The agent lost the service (restart, external deregistration).
                self.registered.remove(&id);
                match self.register_for_heartbeat(&service) {
                    Ok(()) => {
                        let again = self.backend.pass_ttl(&id);
                        self.note(again)
                    }
                    Err(e) => {
                        self.heartbeat_failed(id, e);
                        return;
                    }
                }
            }
            other => other,
        };
        match result {
            Ok(()) => {
                self.recovered(&format!("ttl {id}"));
                self.reply(Reply::HeartbeatOk { id });
            }
            Err(e) => self.heartbeat_failed(id, e),
        }
    }

    fn register_for_heartbeat(&mut self, service: &Service) -> Result<(), CatalogError> {
        match self.register(service, CheckStatus::Passing) {
            Ok(()) => {
                self.reply(Reply::Registered {
                    id: service.id.clone(),
                });
                Ok(())
            }
            Err(e) => {
                self.reply(Reply::RegisterFailed {
                    id: service.id.clone(),
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }

    fn heartbeat_failed(&mut self, id: String, e: CatalogError) {
        self.failed(
            format!("ttl {id}"),
            format!("service update TTL failed: {e}"),
        );
        self.reply(Reply::HeartbeatFailed {
            id,
            error: e.to_string(),
        });
    }

    fn deregister(&mut self, id: &str) -> Result<(), CatalogError> {
        let r = self.backend.deregister(id);
        let r = self.note(r);
        // Whatever the answer, this worker no longer owns the service.
        self.registered.remove(id);
        self.stale.remove(id);
        if let Err(e) = &r {
            log::info!("deregistering failed: {e}");
        }
        r
    }

    fn query(
        &mut self,
        name: &str,
        tag: Option<&str>,
        dc: Option<&str>,
    ) -> Result<Vec<Instance>, CatalogError> {
        let key = format!("query {name} {tag:?} {dc:?}");
        let r = self.backend.query(name, tag, dc);
        match self.note(r) {
            Ok(list) => {
                self.recovered(&key);
                Ok(list)
            }
            Err(e) => {
                self.failed(key, format!("failed to query {name}: {e}"));
                Err(e)
            }
        }
    }

    fn shutdown(&mut self, batch: Vec<Request>) {
        // Explicit deregistrations still queued are honoured with a reply; the rest
        // of the backlog (heartbeats, queries) is moot now.
        for r in batch {
            if let Request::Deregister { id } = r {
                let reply = match self.deregister(&id) {
                    Ok(()) => Reply::Deregistered { id },
                    Err(e) => Reply::DeregisterFailed {
                        id,
                        error: e.to_string(),
                    },
                };
                self.reply(reply);
            }
        }
        let ids: Vec<String> = self.registered.keys().cloned().collect();
        for id in ids {
            let _ = self.deregister(&id);
        }
        self.reply(Reply::ShutdownDone);
    }

    /// Log a failure at WARN the first time; repeats of a failing operation go to
    /// DEBUG so an agent outage does not flood the log.
    fn failed(&mut self, key: String, message: String) {
        if self.failing.insert(key) {
            log::warn!("{message}");
        } else {
            log::debug!("{message}");
        }
    }

    fn recovered(&mut self, key: &str) {
        self.failing.remove(key);
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
