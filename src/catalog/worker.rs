//! The worker thread: registrations, TTL heartbeats and deregistrations, one
//! after the other, in request order. Watches never run here (they have their
//! own lanes), so a heartbeat never waits behind a long poll.

use super::consul::ConsulClient;
use super::etcd::EtcdClient;
use super::{CatalogError, Reply, Request, Service};
use crate::config::types::CheckStatus;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

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
}

/// The worker thread's state.
pub(super) struct Worker {
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
    pub(super) fn new(backend: Backend, replies: Sender<Reply>, waker: Arc<mio::Waker>) -> Worker {
        Worker {
            backend,
            replies,
            waker,
            registered: BTreeMap::new(),
            stale: BTreeSet::new(),
            failing: HashSet::new(),
        }
    }

    pub(super) fn run(mut self, requests: Receiver<Request>) {
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
            Request::Deregister { id } => self.deregister_and_reply(id),
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
            // No reply: the loop has nothing to do with a heartbeat that
            // went through, and waking it for each one costs more than the
            // heartbeat itself when a hundred jobs beat every second.
            Ok(()) => self.recovered(&format!("ttl {id}")),
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

    fn deregister_and_reply(&mut self, id: String) {
        let reply = match self.deregister(&id) {
            Ok(()) => Reply::Deregistered { id },
            Err(e) => Reply::DeregisterFailed {
                id,
                error: e.to_string(),
            },
        };
        self.reply(reply);
    }

    fn shutdown(&mut self, batch: Vec<Request>) {
        // Explicit deregistrations still queued are honoured with a reply; the rest
        // of the backlog (heartbeats, registrations) is moot now.
        for r in batch {
            if let Request::Deregister { id } = r {
                self.deregister_and_reply(id);
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
