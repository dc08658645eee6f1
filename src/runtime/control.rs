//! The loop's side of the control socket and telemetry listener: accepting and
//! serving clients, carrying out control commands, and reloading the config.

use super::server::Server;
use super::{
    listeners, Runtime, TimerKey, CLIENT_SPAN, CONTROL, CONTROL_CLIENTS, TELEMETRY,
    TELEMETRY_CLIENTS,
};
use crate::catalog::Service;
use crate::config::types::Config;
use crate::control::{self, Command};
use crate::events::{Event, EventCode};
use crate::http::{Request, Response};
use crate::jobs::{Budget, Job};
use crate::telemetry::{self, JobStatus};
use std::collections::HashSet;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Control,
    Telemetry,
}

impl Runtime {
    pub(super) fn on_server_event(&mut self, t: mio::Token) {
        let now = Instant::now();
        for which in [Which::Control, Which::Telemetry] {
            let Some(mut srv) = self.take_server(which) else {
                continue;
            };
            if srv.owns(t) {
                if srv.is_listener(t) {
                    srv.accept(self.poll.registry(), now);
                } else {
                    self.serve(&mut srv, which, t, now);
                }
            }
            self.put_server(which, srv);
        }
    }

    /// Paused reads and a backlog of connections waiting for a free slot.
    pub(super) fn service_servers(&mut self) {
        let now = Instant::now();
        for which in [Which::Control, Which::Telemetry] {
            let Some(mut srv) = self.take_server(which) else {
                continue;
            };
            if srv.wants_accept(now) {
                srv.accept(self.poll.registry(), now);
            }
            for t in srv.paused() {
                self.serve(&mut srv, which, t, now);
            }
            srv.expire(self.poll.registry(), now);
            self.put_server(which, srv);
        }
    }

    pub(super) fn servers_busy(&self) -> bool {
        let now = Instant::now();
        [&self.control, &self.telemetry]
            .into_iter()
            .flatten()
            .any(|s| !s.paused().is_empty() || s.wants_accept(now))
    }

    /// When the next idle client may be dropped.
    pub(super) fn server_deadline(&mut self, now: Instant) -> Option<Instant> {
        let reg = self.poll.registry();
        let a = self.control.as_mut().and_then(|s| s.expire(reg, now));
        let b = self.telemetry.as_mut().and_then(|s| s.expire(reg, now));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_server(&mut self, which: Which) -> Option<Server> {
        match which {
            Which::Control => self.control.take(),
            Which::Telemetry => self.telemetry.take(),
        }
    }

    fn put_server(&mut self, which: Which, mut srv: Server) {
        let slot = match which {
            Which::Control => &mut self.control,
            Which::Telemetry => &mut self.telemetry,
        };
        if slot.is_some() {
            // A reload replaced this listener while we were serving on it; the
            // response to the reload has been written, the old one can go.
            srv.deregister(self.poll.registry());
        } else {
            *slot = Some(srv);
        }
    }

    fn serve(&mut self, srv: &mut Server, which: Which, t: mio::Token, now: Instant) {
        let mut route = |req: Request| -> Response {
            match which {
                Which::Control => self.route_control(req),
                Which::Telemetry => self.route_telemetry(req),
            }
        };
        if srv.serve(t, now, &mut route) {
            srv.close(self.poll.registry(), t);
        }
    }

    fn route_control(&mut self, req: Request) -> Response {
        let label = control::path_label(&req.path);
        let metrics = &self.metrics;
        let parsed = control::parse(&req, &|k| metrics.knows(k));
        let resp = match parsed {
            Ok(cmd) => self.apply(cmd),
            Err(resp) => resp,
        };
        if resp.status != 404 || label != "other" {
            self.metrics.record_control_request(resp.status, label);
        }
        resp
    }

    fn route_telemetry(&mut self, req: Request) -> Response {
        let get = matches!(req.method.as_str(), "GET" | "HEAD");
        match req.path.as_str() {
            "/metrics" | "/status" if !get => Response::text(405, "Method Not Allowed\n"),
            // Nothing on this listener reads a body; the connection closes.
            "/metrics" | "/status" if req.body_refused => {
                Response::text(413, "the telemetry listener takes no request body\n")
            }
            "/metrics" => {
                let mut r = Response::new(200, self.metrics.render());
                r.content_type = Some("text/plain; version=0.0.4; charset=utf-8");
                r
            }
            "/status" => Response::json(200, self.status_json()),
            _ => control::not_found(),
        }
    }

    fn apply(&mut self, cmd: Command) -> Response {
        match cmd {
            Command::Ping => Response::text(200, "ok"),
            Command::Status => Response::json(200, self.status_json()),
            Command::PutEnv(update) => {
                for (k, v) in update.iter() {
                    match v {
                        Some(v) => {
                            self.env.insert(k.to_string(), v.to_string());
                        }
                        None => {
                            self.env.remove(k);
                        }
                    }
                }
                Response::text(200, "\n")
            }
            Command::PutMetric(updates) => match self.metrics.apply(&updates) {
                Ok(()) => {
                    for (k, v) in &updates {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        self.bus
                            .publish(Event::new(EventCode::Metric, format!("{k}|{v}")));
                    }
                    Response::text(200, "\n")
                }
                Err(e) => Response::text(400, &format!("{e}\n")),
            },
            Command::Maintenance(on) => {
                let changed = self.set_maintenance(on);
                Response::json(200, format!("{{\"updated\":{changed}}}"))
            }
            Command::Signal { job, signal } => {
                use super::render::SignalFailure;
                let Some(sig) = control::parse_signal(&signal) else {
                    return match self.live_slots(&job).next() {
                        None => Response::text(404, &format!("no job named {job:?}\n")),
                        Some(_) => Response::text(400, &format!("unknown signal {signal:?}\n")),
                    };
                };
                match self.signal_job(&job, sig) {
                    Ok(()) => Response::text(200, "\n"),
                    Err(SignalFailure::NoJob) => {
                        Response::text(404, &format!("no job named {job:?}\n"))
                    }
                    Err(SignalFailure::NoProcess) => {
                        Response::text(409, &format!("job {job:?} has no running process\n"))
                    }
                    Err(SignalFailure::Os(e)) => {
                        Response::text(409, &format!("cannot signal job {job:?}: {e}\n"))
                    }
                }
            }
            Command::Reload => self.reload_from_file(),
        }
    }

    /// Enter or leave maintenance; returns whether anything changed.
    pub(super) fn set_maintenance(&mut self, on: bool) -> bool {
        let changed = self.maintenance != on;
        if changed {
            self.maintenance = on;
            let code = if on {
                EventCode::EnterMaintenance
            } else {
                EventCode::ExitMaintenance
            };
            self.bus.publish(Event::global(code));
        }
        changed
    }

    pub(super) fn reload_from_file(&mut self) -> Response {
        if self.shutting_down {
            // Jobs are stopping for good; restarting them now would keep the
            // daemon from ever exiting.
            return Response::text(503, "shutting down: reload refused\n");
        }
        let app = crate::config::MainApp {
            prefer_v2: self.cfg.compat == crate::config::types::Compat::V2,
            ..self.app.clone()
        };
        match crate::config::load_with(&self.config_path, &self.env, &app) {
            Ok(cfg) => match self.reload(cfg) {
                Ok(()) => {
                    log::info!("control: reloaded app via control plane");
                    Response::text(200, "\n")
                }
                Err(e) => Response::text(400, &format!("{e}\n")),
            },
            Err(e) => {
                let msg = e.to_string().replace('\n', "; ");
                log::error!("reload rejected, keeping the running config: {msg}");
                Response::text(400, &format!("{msg}\n"))
            }
        }
    }

    /// SPEC §2.4 and §3.10: a job whose definition is unchanged keeps its slot
    /// and so all of its state (finished, running, waiting, health, timers,
    /// restart budget, registration); changed and removed ones stop; changed and
    /// new ones start per their `when` once their old version is gone, hearing
    /// what already happened (`Past`).
    fn reload(&mut self, new: Config) -> Result<(), String> {
        super::check_users(&new)?;
        for w in &new.warnings {
            log::warn!("{}: {w}", self.config_path);
        }
        let metrics = new
            .telemetry
            .as_ref()
            .map(|t| t.metrics.as_slice())
            .unwrap_or(&[]);
        self.metrics
            .reload_user(metrics)
            .map_err(|e| format!("telemetry: {e}"))?;
        if new.control.socket != self.cfg.control.socket {
            let l = listeners::bind_control(&new.control)?;
            let srv = Server::new(
                self.poll.registry(),
                l,
                CONTROL,
                CONTROL_CLIENTS,
                CLIENT_SPAN,
            )
            .map_err(|e| format!("cannot watch control socket: {e}"))?;
            // While serving, the old server is out of its slot: `put_server` drops
            // it once the reload's own response has been written.
            if let Some(mut old) = self.control.replace(srv) {
                old.deregister(self.poll.registry());
            }
            log::info!("control: serving at {}", new.control.socket.display());
        } else if new.control.mode != self.cfg.control.mode {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                &new.control.socket,
                std::fs::Permissions::from_mode(new.control.mode),
            );
        }
        if new.telemetry.as_ref().map(|t| (t.ip, t.port))
            != self.cfg.telemetry.as_ref().map(|t| (t.ip, t.port))
        {
            if let Some(mut old) = self.telemetry.take() {
                old.deregister(self.poll.registry());
            }
            if let Some(t) = &new.telemetry {
                let l = listeners::bind_telemetry(t)?;
                self.telemetry = Some(
                    Server::new(
                        self.poll.registry(),
                        l,
                        TELEMETRY,
                        TELEMETRY_CLIENTS,
                        CLIENT_SPAN,
                    )
                    .map_err(|e| format!("cannot watch telemetry listener: {e}"))?,
                );
            }
        }
        if let Err(e) = crate::logging::configure(&new.logging) {
            log::error!("{e}");
        }

        let now = Instant::now();
        self.reload_catalog(&new, now)?;
        self.arm_missing_heartbeats(now);

        // Match each new job with an unmatched current job of the same
        // definition (jobs may share a name, so matching is by definition).
        let mut unmatched: Vec<usize> = self.lineup.iter().flatten().copied().collect();
        let mut lineup = Vec::with_capacity(new.jobs.len());
        for n in &new.jobs {
            let hit = unmatched
                .iter()
                .position(|&i| self.jobs[i].cfg.same_definition(n))
                .map(|k| unmatched.remove(k));
            if let Some(i) = hit {
                self.jobs[i].cfg.line = n.line;
            }
            lineup.push(hit);
        }
        let host = self.catalog.hostname.clone();
        let kept_ids: HashSet<String> = new
            .jobs
            .iter()
            .filter_map(|j| Service::from_job(j, &host))
            .map(|s| s.id)
            .collect();
        self.lineup = lineup;
        for j in self.jobs.iter_mut() {
            j.relink(&new.jobs);
        }
        let stop_timeout = self.cfg.stop_timeout;
        self.cfg = new;
        // Changed or removed: what the old version did says nothing about the
        // new one, and it goes through its stop sequence now.
        for i in unmatched {
            let check = self.jobs[i].check_name();
            self.past.forget(self.jobs[i].name());
            self.past.forget(&check);
            if self.jobs[i].is_done() {
                continue;
            }
            if self.service(i).is_some_and(|s| kept_ids.contains(&s.id)) {
                self.handover.insert(i);
            }
            let world = super::world_at(now, &self.completed, stop_timeout);
            let acts = self.jobs[i].retire(&world);
            self.execute(i, acts, now);
        }
        self.refresh_completed();
        self.install_pending();
        Ok(())
    }

    /// Start the jobs a reload changed or added once their old version (a
    /// retired job of the same name) has fully stopped.
    pub(super) fn install_pending(&mut self) {
        if !self.has_pending() {
            return;
        }
        let now = Instant::now();
        for pos in 0..self.lineup.len() {
            if self.lineup[pos].is_some() {
                continue;
            }
            let cfg = self.cfg.jobs[pos].clone();
            let ghosts: Vec<usize> = (0..self.jobs.len())
                .filter(|i| !self.lineup.contains(&Some(*i)))
                .collect();
            let quiet =
                |i: usize| self.jobs[i].is_done() && !self.procs.values().any(|p| p.job == i);
            if ghosts
                .iter()
                .any(|&g| self.jobs[g].name() == cfg.name && !quiet(g))
            {
                continue;
            }
            let reuse = ghosts.into_iter().find(|&g| quiet(g));
            let job = Job::new(cfg, &self.cfg.jobs);
            let slot = match reuse {
                Some(g) => {
                    self.cancel_job_timers(g);
                    self.jobs[g] = job;
                    g
                }
                None => {
                    self.jobs.push(job);
                    self.jobs.len() - 1
                }
            };
            self.handover.remove(&slot);
            self.announced.remove(&slot);
            self.lineup[pos] = Some(slot);
            self.refresh_completed();
            self.forget_render(slot);
            let world = super::world_at(now, &self.completed, self.cfg.stop_timeout);
            let acts = self.jobs[slot].begin(&world);
            self.execute(slot, acts, now);
            // Startup was published once for this run, and other events may have
            // come and gone: the new job hears those that still hold, alone, so
            // running jobs are not triggered again.
            let world = super::world_at(now, &self.completed, self.cfg.stop_timeout);
            let acts = self.jobs[slot].catch_up(&self.past, &world);
            self.execute(slot, acts, now);
            if self.maintenance {
                let world = super::world_at(now, &self.completed, self.cfg.stop_timeout);
                let acts =
                    self.jobs[slot].on_event(&Event::global(EventCode::EnterMaintenance), &world);
                self.execute(slot, acts, now);
            }
        }
    }

    fn cancel_job_timers(&mut self, idx: usize) {
        for t in crate::jobs::JobTimer::ALL {
            self.timers.cancel(TimerKey::Job(idx, t));
        }
        self.stop_probe(idx);
    }

    /// Jobs in config order; jobs sharing a name are listed each on its own.
    pub(super) fn status_json(&self) -> String {
        let mut jobs = Vec::new();
        for (pos, slot) in self.lineup.iter().enumerate() {
            let (i, j) = match slot {
                Some(i) => (*i, &self.jobs[*i]),
                // changed by a reload: its old version, while it stops
                None => match self.jobs.iter().enumerate().find(|(i, j)| {
                    j.name() == self.cfg.jobs[pos].name
                        && !j.is_done()
                        && !self.lineup.contains(&Some(*i))
                }) {
                    Some(found) => found,
                    None => continue,
                },
            };
            jobs.push(JobStatus {
                name: j.cfg.name.clone(),
                status: j.status.as_str(),
                advertised: j.cfg.is_advertised(),
                address: j.cfg.ip.map(|ip| ip.to_string()),
                port: j.cfg.port,
                depends_on: j.depends_on().iter().map(|s| s.to_string()).collect(),
                waiting_for: j.waiting_for().iter().map(|s| s.to_string()).collect(),
                next_run: j.next_run.map(crate::cron::rfc3339_utc),
                pid: j.exec_pid,
                restarts_left: match j.restarts_remain {
                    Budget::Unlimited => None,
                    Budget::Left(n) => Some(n),
                },
                render: self.render_status(i),
            });
        }
        telemetry::status_json(crate::VERSION, &jobs, &self.watch_status())
    }
}
