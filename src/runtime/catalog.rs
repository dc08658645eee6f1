//! The loop's side of the service catalog: turning job actions into requests for
//! the worker thread, running the watches' query cycles, and handling replies.
//! Nothing here waits on the network: requests go into channels, replies come
//! back through the waker, and each watch's next query is a timer.

use super::{Runtime, TimerKey};
use crate::catalog::{Catalog, Observation, Reply, Request, RequestCounts, Service};
use crate::config::types::{Config, WatchConfig};
use crate::events::{Event, EventCode};
use crate::jobs::Action;
use crate::watches::WatchState;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

/// How long shutdown waits for deregistration before stopping jobs anyway.
const DEREGISTER_WAIT: Duration = Duration::from_secs(5);

/// Catalog state owned by the loop.
pub(super) struct CatalogState {
    pub client: Option<Catalog>,
    pub hostname: String,
    pub watches: Vec<WatchState>,
    /// Shutdown deregistration: service IDs still waiting for an answer.
    pub draining: HashSet<String>,
    /// Catalog requests by kind and outcome, shown by the metrics.
    pub counts: RequestCounts,
}

/// Fresh watch states; the seeds vary each watch's wait jitter.
fn watch_states(watches: &[WatchConfig]) -> Vec<WatchState> {
    let clock = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let base = clock ^ (u64::from(std::process::id()) << 32);
    watches
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let seed = base ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            WatchState::new(w, seed)
        })
        .collect()
}

impl CatalogState {
    pub fn new(
        cfg: &Config,
        waker: std::sync::Arc<mio::Waker>,
        counts: RequestCounts,
    ) -> Result<CatalogState, String> {
        let client = Catalog::start_for(cfg, waker, crate::catalog::DEFAULT_TIMEOUT, &counts, None)
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
            watches: watch_states(&cfg.watches),
            draining: HashSet::new(),
            counts,
        })
    }
}

impl Runtime {
    pub(super) fn service(&self, job: usize) -> Option<Service> {
        Service::from_job(&self.jobs[job].cfg, &self.catalog.hostname)
    }

    /// A job's Register/Heartbeat/Deregister action.
    ///
    /// Jobs sharing a name share a service ID (`<name>-<hostname>`), as in 3.8:
    /// each registers its own definition once (the catalog keeps the last one
    /// written), and their heartbeats then only keep that entry passing. The
    /// worker re-registers whenever a heartbeat carries a definition other than
    /// the one it registered, so a heartbeat names the definition the catalog
    /// holds unless this job has not announced its own yet (or changed it).
    pub(super) fn catalog_action(&mut self, job: usize, a: Action) {
        if self.catalog.client.is_none() {
            return;
        }
        let Some(own) = self.service(job) else {
            return;
        };
        let fresh = self.announced.get(&job) != Some(&own);
        // Another job (a sibling of the same name, or this job's version before
        // a reload) wrote the entry: this job's first heartbeat registers its
        // own definition over it, even when the payload is the same.
        let over_other = fresh && self.in_catalog.contains_key(&own.id);
        let service = match &a {
            Action::Heartbeat if !fresh => self
                .in_catalog
                .get(&own.id)
                .cloned()
                .unwrap_or_else(|| own.clone()),
            _ => own.clone(),
        };
        // Once shutdown has begun, services only leave the catalog.
        let leaving = self.shutting_down || !self.catalog.draining.is_empty();
        // A registration may be on the wire when SIGTERM comes: count it as
        // registered from the moment it is sent, so the shutdown sweep takes it
        // out too (deregistering an unknown ID is harmless).
        if matches!(a, Action::Register(_) | Action::Heartbeat) && !leaving {
            self.registered.insert(service.id.clone());
            self.announced.insert(job, own.clone());
            self.in_catalog.insert(own.id.clone(), service.clone());
        }
        let req = match a {
            Action::Register(status) if !leaving => Request::Register { service, status },
            Action::Heartbeat if !leaving && over_other => {
                if let Some(c) = &self.catalog.client {
                    c.send(Request::Register {
                        service: service.clone(),
                        status: crate::config::types::CheckStatus::Passing,
                    });
                }
                Request::Heartbeat { service }
            }
            Action::Heartbeat if !leaving => Request::Heartbeat { service },
            Action::Deregister => {
                if self.deregistered.contains(&service.id) {
                    return; // already gone in the shutdown sweep
                }
                if self.handover.contains(&job) {
                    return; // the job's new version takes the entry over
                }
                self.forget_service(&service.id);
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
        // From here on, jobs a reload was about to start are not started.
        self.shutting_down = true;
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

    /// The entry is gone from the catalog: whoever heartbeats next registers
    /// its own definition again.
    fn forget_service(&mut self, id: &str) {
        self.in_catalog.remove(id);
        self.announced.retain(|_, s| s.id != id);
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

    /// Start a watch's next query (its timer fired, or the watches start).
    pub(super) fn query_watch(&mut self, i: usize, now: Instant) {
        let (Some(state), Some(client)) = (
            self.catalog.watches.get_mut(i),
            self.catalog.client.as_mut(),
        ) else {
            return;
        };
        let Some(q) = state.start(now) else {
            return;
        };
        if let Err(e) = client.observe(i, state.target(), q.index, q.wait) {
            self.watch_answer(i, Err(e.to_string()));
        }
    }

    /// A watch's answer: publish what changed, log, and arm its next query.
    fn watch_answer(&mut self, i: usize, result: Result<Observation, String>) {
        let now = Instant::now();
        let Some(state) = self.catalog.watches.get_mut(i) else {
            return;
        };
        let ok = result.is_ok();
        let out = state.on_answer(now, SystemTime::now(), result);
        if ok && state.kind() == "service" {
            self.metrics
                .set_watch_instances(state.name(), state.count());
        }
        if let Some((level, msg)) = &out.log {
            crate::logging::emit(*level, None, None, msg);
        }
        for ev in out.events {
            self.bus.publish(ev);
        }
        self.timers.arm(TimerKey::Watch(i), now, out.next_in, false);
    }

    /// Every watch's first query, now (nothing to do without a catalog).
    pub(super) fn start_watches(&mut self, now: Instant) {
        for i in 0..self.catalog.watches.len() {
            self.query_watch(i, now);
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
                Reply::Observed { watch, result, .. } => self.watch_answer(watch, result),
                Reply::RegisterFailed { .. }
                | Reply::HeartbeatFailed { .. }
                | Reply::ShutdownDone => {}
            }
        }
    }

    /// A reload may change the catalog address or the watches. Watches start
    /// over with fresh state (the first answer reports what it finds); their
    /// open long polls are abandoned.
    pub(super) fn reload_catalog(&mut self, new: &Config, now: Instant) -> Result<(), String> {
        self.stop_watches();
        let same_catalog = new.consul == self.cfg.consul && new.etcd == self.cfg.etcd;
        if !same_catalog {
            // The old catalog deregisters on its own thread; the loop goes on.
            let old = self.catalog.client.take();
            self.registered.clear();
            self.announced.clear();
            self.in_catalog.clear();
            self.catalog.client = Catalog::start_for(
                new,
                self.waker.clone(),
                crate::catalog::DEFAULT_TIMEOUT,
                &self.catalog.counts,
                old,
            )
            .map_err(|e| format!("catalog: {e}"))?;
        } else if let Some(c) = self.catalog.client.as_mut() {
            c.abandon_watches();
        }
        // A watch the reload did not change keeps what it saw (and its index):
        // its next answer reports a change only if the catalog really changed.
        let mut old = std::mem::take(&mut self.catalog.watches);
        let mut fresh = watch_states(&new.watches).into_iter();
        self.catalog.watches = new
            .watches
            .iter()
            .map(|w| {
                let fresh = fresh.next();
                let kept = same_catalog
                    .then(|| old.iter().position(|o| o.watches_same(w)))
                    .flatten()
                    .map(|i| old.swap_remove(i));
                match (kept, fresh) {
                    (Some(mut k), _) => {
                        k.abandoned();
                        k
                    }
                    (None, Some(f)) => f,
                    (None, None) => WatchState::new(w, 1),
                }
            })
            .collect();
        for gone in &old {
            self.past.forget(gone.source());
        }
        self.start_watches(now);
        Ok(())
    }

    /// Each watch for the status page: what it looks at, where it is, what it saw.
    pub(super) fn watch_status(&self) -> Vec<crate::telemetry::WatchStatus> {
        self.catalog
            .watches
            .iter()
            .map(|w| {
                let key = w.kind() == "key";
                crate::telemetry::WatchStatus {
                    name: w.name().to_string(),
                    kind: w.kind(),
                    index: w.index(),
                    last_change: w.last_change().map(|t| {
                        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                        crate::logging::rfc3339nano(d.as_secs() as i64, 0)
                    }),
                    instances: (!key).then(|| w.count()),
                    value_size: w.value().map(|v| v.value.len()),
                    modify_index: w.value().map(|v| v.modify_index),
                    failing: w.failing(),
                }
            })
            .collect()
    }

    /// The state of the watch named `name`: the instances or the key value it
    /// last saw (what templates read).
    pub fn watch_state(&self, name: &str) -> Option<&WatchState> {
        self.catalog.watches.iter().find(|w| w.name() == name)
    }

    /// On the way out: make sure nothing we registered stays behind.
    pub(super) fn close_catalog(&mut self) {
        if let Some(c) = self.catalog.client.take() {
            c.shutdown(Duration::from_secs(3));
        }
    }
}
