//! The daemon: one single-threaded mio loop that owns every fd, timer and child.
//! Jobs decide (`jobs`), the loop does: it turns OS facts (a child exited, a line
//! was read, a timer is due) into inputs for the jobs and carries out the
//! `Action`s they return.

mod catalog;
mod checks;
mod control;
mod listeners;
mod pipes;
pub mod reaper;
mod render;
pub mod server;
pub mod timers;

use crate::config::types::{Config, LogLevel};
use crate::events::{Bus, Event, EventCode};
use crate::jobs::{Action, Job, JobTimer, ProcKind, World};
use crate::logging;
use crate::telemetry::Metrics;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use pipes::Pipes;
use server::Server;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::Timers;

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const CONTROL: Token = Token(2);
const TELEMETRY: Token = Token(3);
const CONTROL_CLIENTS: usize = 1 << 12;
const TELEMETRY_CLIENTS: usize = 2 << 12;
const CLIENT_SPAN: usize = 1 << 12;
/// Pipe tokens start here; lower numbers are fixed sources.
pub(crate) const FIRST_DYNAMIC: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    Job(usize, JobTimer),
    /// A process's `timeout`: SIGKILL its group.
    ProcTimeout(i32),
    /// After every job has ended on shutdown: SIGKILL whatever is still alive.
    FinalKill,
    /// A watch's next query is due.
    Watch(usize),
    /// Bound on waiting for shutdown deregistration.
    DeregisterWait,
    /// A native health probe's `health.timeout`.
    Probe(usize),
}

/// A child we started.
#[derive(Debug)]
struct Proc {
    /// The job's slot in `Runtime::jobs`.
    job: usize,
    kind: ProcKind,
    /// Display name: the job name or `check.<job>`.
    name: String,
    timed_out: bool,
    /// Start order: `CONTAINERPILOT_<NAME>_PID` names the latest running one.
    seq: u64,
}

#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

pub struct Runtime {
    poll: Poll,
    signals: Signals,
    waker: Arc<Waker>,
    catalog: catalog::CatalogState,
    /// Service IDs the catalog confirmed registered.
    registered: HashSet<String>,
    /// Service IDs deregistered by the shutdown sweep (not to be sent twice).
    deregistered: HashSet<String>,
    cfg: Config,
    /// Re-read on reload, with the same trailing application.
    config_path: String,
    app: crate::config::MainApp,
    /// What the daemon exits with (shim mode sets it from the application).
    exit_code: i32,
    /// Job slots. A job keeps its slot (its timers, processes and catalog
    /// ownership are keyed by it) for its whole life; a reload leaves unchanged
    /// jobs where they are, and a slot is reused only once its job is done.
    jobs: Vec<Job>,
    /// The slot of each job of `cfg.jobs`, in config order; `None` while a job
    /// a reload changed or added waits for its old version to stop. Slots not
    /// listed here hold jobs a reload retired ("ghosts").
    lineup: Vec<Option<usize>>,
    /// Names all of whose jobs are done (several jobs may share a name).
    completed: HashSet<String>,
    /// What already happened, for `once` jobs a reload adds.
    past: crate::jobs::Past,
    /// Slots a reload retired whose service ID lives on in the new config: their
    /// stop sequence leaves the registration to their successor.
    handover: HashSet<usize>,
    /// The service definition each slot last sent to the catalog, and the one
    /// the catalog holds per service ID (jobs sharing a name share an ID).
    announced: HashMap<usize, crate::catalog::Service>,
    in_catalog: HashMap<String, crate::catalog::Service>,
    spawn_seq: u64,
    procs: HashMap<i32, Proc>,
    pipes: Pipes,
    timers: Timers<TimerKey>,
    bus: Bus,
    /// The environment children get; changed by -putenv and `_PID` variables.
    env: BTreeMap<String, String>,
    shutting_down: bool,
    control: Option<Server>,
    telemetry: Option<Server>,
    metrics: Metrics,
    maintenance: bool,
    /// The latest process group of each job's exec and check, SIGKILLed on the
    /// way out as 3.8 did, so leftovers in those groups do not outlive us.
    groups: HashMap<(usize, ProcKind), i32>,
    /// Native health probes in flight.
    probes: checks::Probes,
    /// What each render job last wrote, by job index.
    renders: HashMap<usize, render::RenderMemo>,
}

const HANDLED: [Signal; 6] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn handled_set() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Jobs with a `user` need us to be root (unless it is who we are already).
fn check_users(cfg: &Config) -> Result<(), String> {
    for j in &cfg.jobs {
        if let Some(id) = &j.user {
            crate::users::check_can_switch(id).map_err(|e| format!("job {}: user: {e}", j.name))?;
        }
    }
    Ok(())
}

/// What jobs decide with, as of `now` (the wall clock is read for cron).
fn world_at(now: Instant, completed: &HashSet<String>, stop_timeout: Duration) -> World<'_> {
    World {
        now,
        completed,
        stop_timeout,
        wall_ms: crate::cron::wall_ms(),
    }
}

/// Hold the signals we handle pending from the first moment of a daemon run;
/// `Runtime::new` releases them once its handlers are in place.
pub fn block_signals() {
    let _ = handled_set().thread_block();
}

impl Runtime {
    pub fn new(
        cfg: Config,
        env: BTreeMap<String, String>,
        config_path: String,
        app: crate::config::MainApp,
    ) -> Result<Runtime, RunError> {
        check_users(&cfg).map_err(RunError)?;
        crate::process::cloexec_inherited_fds();
        let poll = Poll::new().map_err(|e| RunError(format!("cannot create poll: {e}")))?;
        let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
            .map_err(|e| RunError(format!("cannot install signal handlers: {e}")))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| RunError(format!("cannot watch signals: {e}")))?;
        // Handlers are in place: anything that arrived during start-up is
        // delivered now and read on the first turn of the loop.
        let _ = handled_set().thread_unblock();
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| RunError(format!("cannot create waker: {e}")))?,
        );
        reaper::become_subreaper();
        let jobs: Vec<Job> = cfg
            .jobs
            .iter()
            .map(|j| Job::new(j.clone(), &cfg.jobs))
            .collect();
        let lineup = (0..jobs.len()).map(Some).collect();
        let metrics = Metrics::new(
            cfg.telemetry
                .as_ref()
                .map(|t| t.metrics.as_slice())
                .unwrap_or(&[]),
        )
        .map_err(|e| RunError(format!("telemetry: {e}")))?;
        let control = match listeners::bind_control(&cfg.control).and_then(|l| {
            Server::new(poll.registry(), l, CONTROL, CONTROL_CLIENTS, CLIENT_SPAN)
                .map_err(|e| format!("cannot watch control socket: {e}"))
        }) {
            Ok(srv) => {
                log::info!("control: serving at {}", cfg.control.socket.display());
                Some(srv)
            }
            // 2.x had no control plane: its configs cannot name a socket, so a
            // busy default path must not stop an application that ran before.
            Err(e) if cfg.compat == crate::config::types::Compat::V2 => {
                log::warn!("{e}; running without a control socket");
                None
            }
            Err(e) => return Err(RunError(e)),
        };
        let catalog = catalog::CatalogState::new(&cfg, waker.clone(), metrics.catalog_requests())
            .map_err(RunError)?;
        let telemetry = match &cfg.telemetry {
            Some(t) => {
                let l = listeners::bind_telemetry(t).map_err(RunError)?;
                Some(
                    Server::new(
                        poll.registry(),
                        l,
                        TELEMETRY,
                        TELEMETRY_CLIENTS,
                        CLIENT_SPAN,
                    )
                    .map_err(|e| RunError(format!("cannot watch telemetry listener: {e}")))?,
                )
            }
            None => None,
        };
        let mut env = env;
        for j in &cfg.jobs {
            if let Some(ip) = j.ip {
                env.insert(
                    format!(
                        "CONTAINERPILOT_{}_IP",
                        j.name.to_uppercase().replace('-', "_")
                    ),
                    ip.to_string(),
                );
            }
        }
        Ok(Runtime {
            poll,
            signals,
            waker,
            catalog,
            registered: HashSet::new(),
            deregistered: HashSet::new(),
            cfg,
            config_path,
            app,
            exit_code: 0,
            jobs,
            lineup,
            completed: HashSet::new(),
            past: crate::jobs::Past::default(),
            handover: HashSet::new(),
            announced: HashMap::new(),
            in_catalog: HashMap::new(),
            spawn_seq: 0,
            procs: HashMap::new(),
            pipes: Pipes::new(FIRST_DYNAMIC),
            timers: Timers::default(),
            bus: Bus::default(),
            env,
            shutting_down: false,
            control,
            telemetry,
            metrics,
            maintenance: false,
            groups: HashMap::new(),
            probes: checks::Probes::default(),
            renders: HashMap::new(),
        })
    }

    /// Run until shutdown completes. Returns the exit code.
    pub fn run(mut self) -> i32 {
        let now = Instant::now();
        for i in 0..self.jobs.len() {
            let world = world_at(now, &self.completed, self.cfg.stop_timeout);
            let acts = self.jobs[i].begin(&world);
            self.execute(i, acts, now);
        }
        self.start_watches(now);
        self.bus.publish(Event::global(EventCode::Startup));
        let mut events = Events::with_capacity(256);
        loop {
            self.pump();
            if self.finished() {
                break;
            }
            let timeout = if self.pipes.has_backlog() || self.servers_busy() {
                Some(Duration::ZERO)
            } else {
                let now = Instant::now();
                let t = self.timers.next_deadline();
                let c = self.server_deadline(now);
                match (t, c) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
                .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed: {e}");
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    WAKER => self.on_catalog_replies(),
                    t if self.pipes.owns(t) => self.pipes.mark_ready(t),
                    t if checks::owns(t) => self.on_probe_ready(t),
                    t => self.on_server_event(t),
                }
            }
            self.service_servers();
            self.drain_pipes();
            self.install_pending();
            self.fire_timers();
        }
        self.exit_cleanup();
        self.exit_code
    }

    fn finished(&self) -> bool {
        if self.has_pending() {
            return false;
        }
        let all_done = self.jobs.iter().all(|j| j.is_done());
        if self.jobs.is_empty() {
            // Nothing to supervise: keep serving until told to stop.
            return self.shutting_down && self.procs.is_empty();
        }
        all_done && self.procs.is_empty()
    }

    /// Deliver every queued event to every job, in publish order.
    fn pump(&mut self) {
        while let Some(ev) = self.bus.pop() {
            if logging::enabled(LogLevel::Debug) {
                log::debug!("event: {ev}");
            }
            self.metrics.record_event(&ev);
            self.past.observe(&ev);
            // Read the clocks once per event, not once per job.
            let now = Instant::now();
            let wall_ms = crate::cron::wall_ms();
            for i in 0..self.jobs.len() {
                let world = World {
                    now,
                    completed: &self.completed,
                    stop_timeout: self.cfg.stop_timeout,
                    wall_ms,
                };
                let acts = self.jobs[i].on_event(&ev, &world);
                self.execute(i, acts, now);
            }
        }
        self.check_all_done();
    }

    fn check_all_done(&mut self) {
        if !self.jobs.is_empty()
            && !self.has_pending()
            && self.jobs.iter().all(|j| j.is_done())
            && !self.procs.is_empty()
            && !self.timers.is_armed(TimerKey::FinalKill)
        {
            let after = self.cfg.stop_timeout;
            self.timers
                .arm(TimerKey::FinalKill, Instant::now(), after, false);
        }
    }

    fn execute(&mut self, job: usize, acts: Vec<Action>, now: Instant) {
        let mut queue: VecDeque<Action> = acts.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Publish(ev) => self.bus.publish(ev),
                Action::Spawn(kind) => {
                    if let Some(more) = self.spawn(job, kind, now) {
                        queue.extend(more);
                    }
                }
                Action::RunInLoop => {
                    let more = self.run_in_loop(job);
                    queue.extend(more);
                }
                Action::Terminate(kind) | Action::Kill(kind) => {
                    let pid = match kind {
                        ProcKind::Exec => self.jobs[job].exec_pid,
                        ProcKind::Check => self.jobs[job].check_pid,
                    };
                    let sig = if matches!(a, Action::Kill(_)) {
                        log::warn!(
                            "{}: still running after stopTimeout, sending SIGKILL",
                            self.jobs[job].name()
                        );
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    if let Some(pid) = pid {
                        let _ = killpg(Pid::from_raw(pid), sig);
                    }
                }
                Action::Arm {
                    timer,
                    after,
                    repeat,
                } => {
                    if timer == JobTimer::Heartbeat && !self.heartbeat_matters(job) {
                        // nothing to check and nobody to tell: no wake-ups
                        continue;
                    }
                    self.timers
                        .arm(TimerKey::Job(job, timer), now, after, repeat)
                }
                Action::Cancel(timer) => self.timers.cancel(TimerKey::Job(job, timer)),
                Action::StopProbe => self.stop_probe(job),
                Action::Register(_) | Action::Heartbeat | Action::Deregister => {
                    self.catalog_action(job, a);
                }
                Action::Log(level, msg) => logging::emit(level, None, None, &msg),
                Action::Completed => self.refresh_completed(),
            }
        }
    }

    /// A job of the current config waits for its old version to stop (and we
    /// are not shutting down, which drops such jobs).
    fn has_pending(&self) -> bool {
        !self.shutting_down && self.lineup.iter().any(Option::is_none)
    }

    /// Slots of the current config's jobs named `name` that are not done.
    fn live_slots<'a>(&'a self, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.lineup
            .iter()
            .flatten()
            .copied()
            .filter(move |&i| self.jobs[i].name() == name && !self.jobs[i].is_done())
    }

    fn refresh_completed(&mut self) {
        let mut done: HashSet<String> = self
            .jobs
            .iter()
            .filter(|j| j.is_done())
            .map(|j| j.name().to_string())
            .collect();
        for j in self.jobs.iter().filter(|j| !j.is_done()) {
            done.remove(j.name());
        }
        self.completed = done;
    }

    fn retire_job(&mut self, name: &str) {
        let Some(i) = self.live_slots(name).next() else {
            return;
        };
        let now = Instant::now();
        let world = world_at(now, &self.completed, self.cfg.stop_timeout);
        let acts = self.jobs[i].retire(&world);
        self.execute(i, acts, now);
    }

    /// A heartbeat tick does something only if there is a check to run or a
    /// catalog to heartbeat to.
    fn heartbeat_matters(&self, job: usize) -> bool {
        let has_check = self.jobs[job]
            .cfg
            .health
            .as_ref()
            .is_some_and(|h| h.exec.is_some() || h.native.is_some());
        has_check || self.catalog.client.is_some()
    }

    /// Arm heartbeats skipped while there was no catalog (a reload added one).
    fn arm_missing_heartbeats(&mut self, now: Instant) {
        for i in 0..self.jobs.len() {
            let key = TimerKey::Job(i, JobTimer::Heartbeat);
            if self.jobs[i].is_done() || self.timers.is_armed(key) {
                continue;
            }
            if let Some(h) = &self.jobs[i].cfg.health {
                if self.heartbeat_matters(i) {
                    self.timers.arm(key, now, h.interval, true);
                }
            }
        }
    }

    /// Start a job's exec or check. On failure the job hears about it right away,
    /// as an exit; the returned actions are its reaction.
    fn spawn(&mut self, job: usize, kind: ProcKind, now: Instant) -> Option<Vec<Action>> {
        let j = &self.jobs[job];
        let (argv, timeout, raw, name) = match kind {
            ProcKind::Exec => (
                j.cfg.exec.clone()?,
                j.cfg.timeout,
                j.cfg.raw,
                j.name().to_string(),
            ),
            ProcKind::Check => {
                let h = j.cfg.health.as_ref()?;
                if h.native.is_some() {
                    return self.start_probe(job, now);
                }
                (h.exec.clone()?, Some(h.timeout), h.raw, j.check_name())
            }
        };
        let user = self.jobs[job].cfg.user.as_ref();
        match crate::process::spawn(&argv, &self.env, raw, user) {
            Ok(sp) => {
                log::debug!("{name}.Run start: {}", argv.join(" "));
                self.jobs[job].spawned(kind, sp.pid);
                self.groups.insert((job, kind), sp.pid);
                self.env.insert(
                    format!("CONTAINERPILOT_{}_PID", crate::process::env_name(&name)),
                    sp.pid.to_string(),
                );
                if let Some(t) = timeout {
                    self.timers
                        .arm(TimerKey::ProcTimeout(sp.pid), now, t, false);
                }
                let label = match kind {
                    ProcKind::Exec => pipes::Label::Job(name.clone()),
                    ProcKind::Check => pipes::Label::Check(name.clone()),
                };
                let stdout_label = match (kind, &self.jobs[job].cfg.sensor) {
                    (ProcKind::Exec, Some(metric)) => pipes::Label::Sensor {
                        metric: metric.clone(),
                    },
                    _ => label.clone(),
                };
                for (fd, l) in [(sp.stdout, stdout_label), (sp.stderr, label)] {
                    let Some(fd) = fd else { continue };
                    if let Err(e) = self.pipes.add(self.poll.registry(), fd, l, sp.pid) {
                        log::warn!("{name}: cannot read output: {e}");
                    }
                }
                self.spawn_seq += 1;
                self.procs.insert(
                    sp.pid,
                    Proc {
                        job,
                        kind,
                        name,
                        timed_out: false,
                        seq: self.spawn_seq,
                    },
                );
                None
            }
            Err(e) => {
                log::error!("unable to start {name}: {e}");
                self.note_exit(job, kind, 127);
                let world = world_at(Instant::now(), &self.completed, self.cfg.stop_timeout);
                Some(self.jobs[job].on_exit(kind, Some(e.0), &world))
            }
        }
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap(),
                SIGTERM | SIGINT => self.begin_shutdown(),
                SIGHUP if self.cfg.compat == crate::config::types::Compat::V2 => {
                    // 2.x: SIGHUP reloads the config; the application keeps running.
                    let resp = self.reload_from_file();
                    if resp.status != 200 {
                        log::error!(
                            "reload on SIGHUP failed: {}",
                            String::from_utf8_lossy(&resp.body).trim_end()
                        );
                    }
                }
                SIGUSR1 if self.cfg.compat == crate::config::types::Compat::V2 => {
                    // 2.x: SIGUSR1 toggles maintenance.
                    let on = !self.maintenance;
                    self.set_maintenance(on);
                }
                SIGHUP => self.bus.publish(Event::new(EventCode::Signal, "SIGHUP")),
                SIGUSR2 => self.bus.publish(Event::new(EventCode::Signal, "SIGUSR2")),
                SIGUSR1 => {
                    if let Err(e) = logging::reopen() {
                        log::error!("{e}");
                    }
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        for (pid, status) in reaper::reap_all() {
            let Some(p) = self.procs.remove(&pid) else {
                continue; // an orphan: reaping it was the whole job
            };
            // Log what the process wrote before we report its exit.
            self.pipes.drain_pid(pid);
            self.timers.cancel(TimerKey::ProcTimeout(pid));
            self.refresh_pid_var(&p.name);
            self.note_exit(p.job, p.kind, crate::process::exit_code(status));
            let mut error = crate::process::exit_error(status);
            if p.timed_out {
                error = Some("signal: killed".into());
            }
            match &error {
                Some(e) => log::error!("{} exited with error: {e}", p.name),
                None => log::debug!("{} exited without error", p.name),
            }
            // Clean up whatever the process left behind in its group (3.8 does too).
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
            let now = Instant::now();
            let world = world_at(now, &self.completed, self.cfg.stop_timeout);
            let acts = self.jobs[p.job].on_exit(p.kind, error, &world);
            self.execute(p.job, acts, now);
        }
    }

    /// `CONTAINERPILOT_<NAME>_PID` names the latest process started under that
    /// variable that still runs (jobs sharing a name, and every check, share
    /// one variable); it goes away with the last of them.
    fn refresh_pid_var(&mut self, name: &str) {
        let var = crate::process::env_name(name);
        let latest = self
            .procs
            .iter()
            .filter(|(_, p)| crate::process::env_name(&p.name) == var)
            .max_by_key(|(_, p)| p.seq)
            .map(|(pid, _)| *pid);
        let key = format!("CONTAINERPILOT_{var}_PID");
        match latest {
            Some(pid) => {
                self.env.insert(key, pid.to_string());
            }
            None => {
                self.env.remove(&key);
            }
        }
    }

    fn drain_pipes(&mut self) {
        self.pipes.service();
        self.apply_sensor_values();
    }

    /// 2.x sensors: each stdout line of a sensor job is a value for its metric.
    fn apply_sensor_values(&mut self) {
        for (metric, value) in self.pipes.take_sensor_values() {
            let update = [(metric.clone(), serde_json::Value::String(value.clone()))];
            match self.metrics.apply(&update) {
                Ok(()) => self
                    .bus
                    .publish(Event::new(EventCode::Metric, format!("{metric}|{value}"))),
                Err(e) => log::error!("sensor {metric}: {e}"),
            }
        }
    }

    /// Shim mode: the application's exit decides the daemon's exit code and ends
    /// the run; a failing preStart ends it before the application starts; a
    /// failing postStop's code wins.
    fn note_exit(&mut self, job: usize, kind: ProcKind, code: i32) {
        if kind != ProcKind::Exec {
            return;
        }
        let Some(policy) = &self.cfg.exit_policy else {
            return;
        };
        let name = self.jobs[job].name();
        let ends_run = if name == policy.main {
            log::info!("application {name} exited with code {code}");
            self.exit_code = code;
            if !self.shutting_down && self.cfg.compat == crate::config::types::Compat::V2 {
                // 2.x ran preStop only on SIGTERM, never after the app exited by itself.
                self.retire_job(crate::config::v2::PRE_STOP_JOB);
            }
            true
        } else if policy.pre_start.as_deref() == Some(name) && code != 0 {
            log::error!("{name} failed with code {code}: not starting the application");
            self.exit_code = code;
            true
        } else {
            if policy.post_stop.as_deref() == Some(name) && code != 0 {
                self.exit_code = code;
            }
            false
        };
        if ends_run && !self.shutting_down {
            self.begin_shutdown();
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Job(i, timer) => {
                    if timer == JobTimer::Heartbeat && self.jobs[i].cfg.always_healthy {
                        // 3.8 does not log the telemetry service's ticks
                    } else {
                        log::debug!(
                            "timer: {{TimerExpired {}.{:?}}}",
                            self.jobs[i].name(),
                            timer
                        );
                    }
                    let world = world_at(now, &self.completed, self.cfg.stop_timeout);
                    let acts = self.jobs[i].on_timer(timer, &world);
                    self.execute(i, acts, now);
                }
                TimerKey::ProcTimeout(pid) => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.timed_out = true;
                        let j = &self.jobs[p.job];
                        let (dur, argv) = match p.kind {
                            ProcKind::Exec => (j.cfg.timeout, j.cfg.exec.clone()),
                            ProcKind::Check => (
                                j.cfg.health.as_ref().map(|h| h.timeout),
                                j.cfg.health.as_ref().and_then(|h| h.exec.clone()),
                            ),
                        };
                        log::warn!(
                            "{} timeout after {}: '{}'",
                            p.name,
                            dur.map(crate::config::duration::format).unwrap_or_default(),
                            argv.map(|a| a.join(" ")).unwrap_or_default()
                        );
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                TimerKey::Watch(i) => self.query_watch(i, now),
                TimerKey::DeregisterWait => self.deregister_wait_expired(),
                TimerKey::Probe(job) => self.probe_timed_out(job),
                TimerKey::FinalKill => {
                    for pid in self.procs.keys() {
                        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }

    fn exit_cleanup(&mut self) {
        self.close_catalog();
        for pgid in self.groups.values() {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
        self.pipes.close_all(self.poll.registry());
        self.probes.close_all(self.poll.registry());
        // Removes the socket file only if it is still the one we bound.
        if let Some(mut c) = self.control.take() {
            c.deregister(self.poll.registry());
        }
        if let Some(mut t) = self.telemetry.take() {
            t.deregister(self.poll.registry());
        }
    }
}
