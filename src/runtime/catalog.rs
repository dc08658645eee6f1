//! The loop's side of the service catalog: turning job actions into requests for
//! the catalog thread, polling watches, and handling replies. Nothing here waits
//! on the network: requests go into a channel, replies come back through the
//! waker.

use super::{Runtime, TimerKey};
use crate::catalog::{Catalog, Reply, Request, Service};
use crate::config::types::Config;
use crate::events::{Event, EventCode};
use crate::jobs::Action;
use crate::watches::WatchState;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long shutdown waits for deregistration before stopping jobs anyway.
const DEREGISTER_WAIT: Duration = Duration::from_secs(5);

/// Catalog state owned by the loop.
pub(super) struct CatalogState {
    pub client: Option<Catalog>,
    pub hostname: String,
    pub watches: Vec<WatchState>,
    /// Watches with a query on the wire: a hung agent must not pile them up.
    pub in_flight: HashSet<usize>,
    /// Shutdown deregistration: service IDs still waiting for an answer.
    pub draining: HashSet<String>,
}

impl CatalogState {
    pub fn new(cfg: &Config, waker: std::sync::Arc<mio::Waker>) -> Result<CatalogState, String> {
        let client = Catalog::start_for(cfg, waker, crate::catalog::DEFAULT_TIMEOUT)
            .map_err(|e| format!("catalog: {e}"))?;
        // Said once here, not at each registration, maintenance change or shutdown.
        if client.is_none() {
            for job in cfg
                .jobs
                .iter()
                .filter(|j| Service::from_job(j, "").is_some())
            {
                log::info!(
                    "{}: no catalog configured, service is not registered",
                    job.name
                );
            }
        }
        Ok(CatalogState {
            client,
            hostname: crate::catalog::hostname(),
            watches: cfg
                .watches
                .iter()
                .map(|w| WatchState::new(&w.name))
                .collect(),
            in_flight: HashSet::new(),
            draining: HashSet::new(),
        })
    }
}

impl Runtime {
    fn service(&self, job: usize) -> Option<Service> {
        Service::from_job(&self.jobs[job].cfg, &self.catalog.hostname)
    }

    /// A job's Register/Heartbeat/Deregister action.
    pub(super) fn catalog_action(&mut self, job: usize, a: Action) {
        if self.catalog.client.is_none() {
            return;
        }
        let Some(service) = self.service(job) else {
            return;
        };
        // Once shutdown has begun, services only leave the catalog.
        let leaving = self.shutting_down || !self.catalog.draining.is_empty();
        // A registration may be on the wire when SIGTERM comes: count it as
        // registered from the moment it is sent, so the shutdown sweep takes it
        // out too (deregistering an unknown ID is harmless).
        if matches!(a, Action::Register(_) | Action::Heartbeat) && !leaving {
            self.registered.insert(service.id.clone());
        }
        let req = match a {
            Action::Register(status) if !leaving => Request::Register { service, status },
            Action::Heartbeat if !leaving => Request::Heartbeat { service },
            Action::Deregister => {
                if self.deregistered.contains(&service.id) {
                    return; // already gone in the shutdown sweep
                }
                Request::Deregister { id: service.id }
            }
            _ => return,
        };
        if let Some(c) = &self.catalog.client {
            c.send(req);
        }
    }

    /// SIGTERM with a catalog: take every service out of the catalog first, so a
    /// Consul agent running as a job is still there to hear it; jobs are stopped
    /// once the answers are in (or after a bound).
    pub(super) fn begin_shutdown(&mut self) {
        if self.shutting_down {
            // A repeated SIGTERM is harmless, but must not cut the sweep short.
            if self.catalog.draining.is_empty() {
                self.bus.publish(Event::global(EventCode::Shutdown));
            }
            return;
        }
        self.shutting_down = true;
        // Jobs a reload was about to start again are not started any more.
        self.pending.clear();
        let ids: Vec<String> = match &self.catalog.client {
            Some(_) => self.registered.iter().cloned().collect(),
            None => Vec::new(),
        };
        if ids.is_empty() {
            self.bus.publish(Event::global(EventCode::Shutdown));
            return;
        }
        for id in ids {
            if let Some(c) = &self.catalog.client {
                c.send(Request::Deregister { id: id.clone() });
            }
            self.catalog.draining.insert(id);
        }
        self.timers.arm(
            TimerKey::DeregisterWait,
            Instant::now(),
            DEREGISTER_WAIT,
            false,
        );
    }

    fn drained(&mut self, id: &str) {
        if self.catalog.draining.remove(id) {
            self.deregistered.insert(id.to_string());
            if self.catalog.draining.is_empty() {
                self.timers.cancel(TimerKey::DeregisterWait);
                self.bus.publish(Event::global(EventCode::Shutdown));
            }
        }
    }

    pub(super) fn deregister_wait_expired(&mut self) {
        if !self.catalog.draining.is_empty() {
            log::warn!("catalog: deregistration not confirmed in time, stopping jobs anyway");
            for id in std::mem::take(&mut self.catalog.draining) {
                self.deregistered.insert(id);
            }
            self.bus.publish(Event::global(EventCode::Shutdown));
        }
    }

    /// A watch's interval elapsed: ask for its passing instances.
    pub(super) fn poll_watch(&mut self, i: usize) {
        let Some(w) = self.cfg.watches.get(i) else {
            return;
        };
        let Some(c) = &self.catalog.client else {
            return;
        };
        if !self.catalog.in_flight.insert(i) {
            return;
        }
        c.send(Request::Query {
            watch: i,
            name: w.name.clone(),
            tag: w.tag.clone(),
            dc: w.dc.clone(),
        });
    }

    /// Arm every watch's interval (first poll after one interval, as 3.8).
    pub(super) fn start_watches(&mut self, now: Instant) {
        for (i, w) in self.cfg.watches.iter().enumerate() {
            self.timers.arm(TimerKey::Watch(i), now, w.interval, true);
        }
    }

    pub(super) fn stop_watches(&mut self) {
        for i in 0..self.catalog.watches.len() {
            self.timers.cancel(TimerKey::Watch(i));
        }
    }

    /// Replies from the catalog thread (after a wake-up).
    pub(super) fn on_catalog_replies(&mut self) {
        while let Some(reply) = self.catalog.client.as_ref().and_then(|c| c.try_recv()) {
            match reply {
                Reply::Registered { id } => {
                    self.registered.insert(id);
                }
                Reply::Deregistered { id } | Reply::DeregisterFailed { id, .. } => {
                    self.registered.remove(&id);
                    self.drained(&id);
                }
                Reply::Instances { watch, instances } => {
                    self.catalog.in_flight.remove(&watch);
                    let Some(state) = self.catalog.watches.get_mut(watch) else {
                        continue;
                    };
                    let events = state.update(instances);
                    let n = state.count();
                    if let Some(w) = self.cfg.watches.get(watch) {
                        self.metrics.set_watch_instances(&w.name, n);
                    }
                    for ev in events {
                        self.bus.publish(ev);
                    }
                }
                Reply::QueryFailed { watch, .. } => {
                    // the catalog thread logs the failure once per state change
                    self.catalog.in_flight.remove(&watch);
                }
                Reply::RegisterFailed { .. }
                | Reply::HeartbeatOk { .. }
                | Reply::HeartbeatFailed { .. }
                | Reply::ShutdownDone => {}
            }
        }
    }

    /// A reload may change the catalog address or the watches.
    pub(super) fn reload_catalog(&mut self, new: &Config, now: Instant) -> Result<(), String> {
        if new.consul != self.cfg.consul || new.etcd != self.cfg.etcd {
            if let Some(old) = self.catalog.client.take() {
                old.shutdown(Duration::from_secs(2));
            }
            self.registered.clear();
            self.catalog.client =
                Catalog::start_for(new, self.waker.clone(), crate::catalog::DEFAULT_TIMEOUT)
                    .map_err(|e| format!("catalog: {e}"))?;
        }
        // Watches restart with fresh state: the first poll reports what it finds.
        self.stop_watches();
        self.catalog.watches = new
            .watches
            .iter()
            .map(|w| WatchState::new(&w.name))
            .collect();
        self.catalog.in_flight.clear();
        for (i, w) in new.watches.iter().enumerate() {
            self.timers.arm(TimerKey::Watch(i), now, w.interval, true);
        }
        Ok(())
    }

    /// On the way out: make sure nothing we registered stays behind.
    pub(super) fn close_catalog(&mut self) {
        if let Some(c) = self.catalog.client.take() {
            c.shutdown(Duration::from_secs(3));
        }
    }
}
