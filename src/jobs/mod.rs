//! The job state machine of ContainerPilot 3 (reference §3.5–§3.7), as pure logic:
//! inputs are bus events, timer expiries and process outcomes; outputs are
//! `Action`s that the runtime carries out. Nothing here touches the OS, so every
//! rule is unit-tested by feeding inputs and reading the actions.

mod backoff;
mod past;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use past::Past;

use crate::config::types::{CheckStatus, CronTrigger, JobConfig, Restarts, SignalName, Trigger};
use crate::events::{Event, EventCode, GLOBAL};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Which of a job's two commands a process belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcKind {
    Exec,
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobTimer {
    /// Every `health.interval`: run the check or send a heartbeat.
    Heartbeat,
    /// Every `when.interval`.
    Interval,
    /// `when.timeout`: give up waiting for the start event.
    WaitTimeout,
    /// Restart back-off (SPEC §2.14).
    Restart,
    /// Upper bound on waiting for the stop hook (SPEC §2.2).
    StopHook,
    /// The job's processes got SIGTERM this long ago and are still there: SIGKILL.
    Kill,
    /// The next `when.cron` minute (re-armed at most an hour ahead, so the
    /// wall clock is checked again before firing).
    Cron,
}

impl JobTimer {
    /// Every timer a job may have armed, for tearing a job down.
    pub const ALL: [JobTimer; 7] = [
        JobTimer::Heartbeat,
        JobTimer::Interval,
        JobTimer::WaitTimeout,
        JobTimer::Restart,
        JobTimer::StopHook,
        JobTimer::Kill,
        JobTimer::Cron,
    ];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Publish(Event),
    /// Run the exec, or the health check (a process, or a native probe).
    Spawn(ProcKind),
    /// Abandon the native probe in flight and close the check's kept
    /// connection (the job is ending).
    StopProbe,
    /// Run the job's render or signal now, inside the loop; the runtime
    /// reports how it went with [`Job::on_run_done`] before anything else.
    RunInLoop,
    /// SIGTERM to the process group of the running process of that kind.
    Terminate(ProcKind),
    /// SIGKILL to the process group of the running process of that kind.
    Kill(ProcKind),
    /// Arm (or re-arm) a timer; `repeat` keeps it firing every `after`.
    Arm {
        timer: JobTimer,
        after: Duration,
        repeat: bool,
    },
    Cancel(JobTimer),
    /// Register the service with this check status.
    Register(CheckStatus),
    /// Passing TTL update (registers first if needed).
    Heartbeat,
    Deregister,
    Log(crate::config::types::LogLevel, String),
    /// The job has finished its end sequence; it will never act again.
    Completed,
}

/// How a run inside the loop (a render or a signal job) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Did its work (wrote the file, sent the signal): an `exitSuccess`.
    Done,
    /// A render whose output equals what it last wrote: nothing was written
    /// and nothing is published, so nothing downstream reacts.
    Unchanged,
    /// An `exitFailed` and an `error` with this reason.
    Failed(String),
}

/// `status` of 3.8; what `/status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Idle,
    Unknown,
    Healthy,
    Unhealthy,
    Maintenance,
    AlwaysHealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle | Status::Unknown => "unknown",
            Status::Healthy | Status::AlwaysHealthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Maintenance => "maintenance",
        }
    }
}

/// A count that may be unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    Unlimited,
    Left(u32),
}

impl Budget {
    fn permits(self) -> bool {
        !matches!(self, Budget::Left(0))
    }
    /// Use one; returns false when none was left.
    fn take(&mut self) -> bool {
        match self {
            Budget::Unlimited => true,
            Budget::Left(0) => false,
            Budget::Left(n) => {
                *n -= 1;
                true
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Active,
    /// Stopping{job} was published; waiting for Stopped{hook}.
    AwaitingHook(String),
    /// Our processes got SIGTERM; `stopped` is published once they are gone, so a
    /// `stopped` hook really runs after the job has stopped.
    Terminating,
    Done,
}

/// What the runtime knows that a job needs for its decisions.
pub struct World<'a> {
    pub now: Instant,
    /// Names of jobs that have completed their end sequence.
    pub completed: &'a HashSet<String>,
    /// Top-level stopTimeout, the default bound on waiting for a stop hook.
    pub stop_timeout: Duration,
    /// The wall clock (ms since the Unix epoch), for cron schedules.
    pub wall_ms: i64,
}

#[derive(Debug)]
pub struct Job {
    pub cfg: JobConfig,
    pub status: Status,
    /// The global event that starts a job without `when` or with an interval.
    start_event: Option<Event>,
    /// Which of `when.source` have sent the event in the current round.
    arrived: Vec<bool>,
    starts_remain: Budget,
    pub restarts_remain: Budget,
    listening: bool,
    phase: Phase,
    /// The job that runs on our `stopping` event (last one in config order).
    hook: Option<String>,
    pub exec_pid: Option<i32>,
    pub check_pid: Option<i32>,
    /// A native health probe is in flight.
    probe_running: bool,
    /// Unix seconds of the next cron run, and the local wall time of the
    /// last one (so a repeated DST hour does not run twice).
    pub next_run: Option<i64>,
    last_cron_local: Option<i64>,
    /// Starts that arrived while the exec was still running (never two runs at once).
    queued_starts: u32,
    started_at: Option<Instant>,
    backoff: Backoff,
    /// A restart is waiting for its back-off timer.
    restart_pending: bool,
    /// Registered at least once with `initial_status` (or by a heartbeat).
    pub was_started: bool,
    /// When this job last asked for a passing TTL update (see `beat`).
    last_beat: Option<Instant>,
    /// Every `when.source` names a job of the current config.
    source_exists: bool,
}

/// Longest a cron timer sleeps before it looks at the wall clock again.
const CRON_RESYNC: Duration = Duration::from_secs(3600);

const MAX_QUEUED_STARTS: u32 = 1000;

/// The stop hook of job `name`: the last job (in config order) with an exec that
/// starts on `name`'s `stopping` event.
pub fn hook_for(name: &str, all: &[JobConfig]) -> Option<String> {
    all.iter()
        .filter(|o| {
            matches!(&o.when.trigger, Trigger::Event { code: EventCode::Stopping, sources, .. } if sources.iter().any(|s| s == name))
                && o.name != name
                && o.has_work()
        })
        .map(|o| o.name.clone())
        .next_back()
}

fn source_in(cfg: &JobConfig, all: &[JobConfig]) -> bool {
    match &cfg.when.trigger {
        Trigger::Event { sources, .. } => sources
            .iter()
            .all(|source| all.iter().any(|o| o.name == *source)),
        _ => false,
    }
}

impl Job {
    /// `all` is the whole job list, used to find this job's stop hook.
    pub fn new(cfg: JobConfig, all: &[JobConfig]) -> Job {
        let hook = hook_for(&cfg.name, all);
        let source_exists = source_in(&cfg, all);
        let (start_event, starts) = match &cfg.when.trigger {
            Trigger::Startup => (Some(Event::global(EventCode::Startup)), Budget::Left(1)),
            Trigger::Interval(_) => (Some(Event::global(EventCode::Startup)), Budget::Left(1)),
            Trigger::Event { each: true, .. } => (None, Budget::Unlimited),
            Trigger::Event { each: false, .. } => (None, Budget::Left(1)),
            Trigger::Signal(_) | Trigger::Cron(_) => (None, Budget::Unlimited),
            Trigger::Never => (None, Budget::Left(1)),
        };
        let arrived = match &cfg.when.trigger {
            Trigger::Event { sources, .. } => vec![false; sources.len()],
            _ => Vec::new(),
        };
        let restarts = match cfg.restarts {
            Restarts::Unlimited => Budget::Unlimited,
            Restarts::Count(n) => Budget::Left(n),
        };
        let status = if cfg.always_healthy {
            Status::AlwaysHealthy
        } else {
            Status::Idle
        };
        Job {
            cfg,
            status,
            start_event,
            arrived,
            starts_remain: starts,
            restarts_remain: restarts,
            listening: true,
            phase: Phase::Active,
            hook,
            exec_pid: None,
            check_pid: None,
            probe_running: false,
            next_run: None,
            last_cron_local: None,
            queued_starts: 0,
            started_at: None,
            backoff: Backoff::default(),
            restart_pending: false,
            was_started: false,
            last_beat: None,
            source_exists,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn check_name(&self) -> String {
        format!("check.{}", self.cfg.name)
    }

    /// The `when.source`s this job depends on (for `/status` DependsOn).
    pub fn depends_on(&self) -> Vec<&str> {
        match &self.cfg.when.trigger {
            Trigger::Event { sources, .. } => sources
                .iter()
                .filter(|s| *s != GLOBAL)
                .map(String::as_str)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The sources whose event has not come yet in the current round, while
    /// the job still listens for its trigger (for `/status` WaitingFor).
    pub fn waiting_for(&self) -> Vec<&str> {
        match &self.cfg.when.trigger {
            Trigger::Event { sources, .. } if self.listening && self.phase == Phase::Active => {
                sources
                    .iter()
                    .zip(&self.arrived)
                    .filter(|(_, a)| !**a)
                    .map(|(s, _)| s.as_str())
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// A check runs (a process or a native probe).
    fn check_busy(&self) -> bool {
        self.check_pid.is_some() || self.probe_running
    }

    /// Does this event complete the start trigger? Records one source's event
    /// of an all-of trigger; when the last missing one arrives the round is
    /// complete and the next round starts empty, so an `each` job needs a
    /// fresh event from every source for each start.
    fn trigger_fires(&mut self, ev: &Event) -> bool {
        if let Some(start) = &self.start_event {
            return start == ev;
        }
        let Trigger::Event { code, sources, .. } = &self.cfg.when.trigger else {
            return false;
        };
        if ev.code != *code {
            return false;
        }
        let Some(i) = sources.iter().position(|s| *s == ev.source) else {
            return false;
        };
        self.arrived[i] = true;
        if self.arrived.iter().all(|a| *a) {
            self.arrived.fill(false);
            true
        } else {
            false
        }
    }

    fn is_stop_hook(&self) -> bool {
        matches!(
            &self.cfg.when.trigger,
            Trigger::Event {
                code: EventCode::Stopping | EventCode::Stopped,
                ..
            }
        ) && self.cfg.has_work()
    }

    /// Called once when the run begins, before `Startup` is published: arm tickers
    /// and register with `initial_status`.
    pub fn begin(&mut self, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        self.schedule_cron(world, None, &mut out);
        if let Trigger::Interval(every) = self.cfg.when.trigger {
            out.push(Action::Arm {
                timer: JobTimer::Interval,
                after: every,
                repeat: true,
            });
        }
        if let Some(h) = &self.cfg.health {
            out.push(Action::Arm {
                timer: JobTimer::Heartbeat,
                after: h.interval,
                repeat: true,
            });
        }
        if let Some(t) = self.cfg.when.timeout {
            out.push(Action::Arm {
                timer: JobTimer::WaitTimeout,
                after: t,
                repeat: false,
            });
        }
        if self.cfg.is_advertised() {
            if let Some(s) = self.cfg.initial_status {
                out.push(Action::Register(s));
            }
        }
        out
    }

    pub fn on_timer(&mut self, timer: JobTimer, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Done {
            return out;
        }
        match timer {
            JobTimer::Heartbeat => {
                if self.phase != Phase::Active {
                    return out;
                }
                if matches!(self.status, Status::Idle | Status::Maintenance) {
                    return out;
                }
                let has_check = self
                    .cfg
                    .health
                    .as_ref()
                    .is_some_and(|h| h.exec.is_some() || h.native.is_some());
                if has_check {
                    if !self.check_busy() {
                        out.push(Action::Spawn(ProcKind::Check));
                    } else {
                        out.push(Action::Log(
                            crate::config::types::LogLevel::Debug,
                            format!(
                                "{}: previous check still running, skipped",
                                self.check_name()
                            ),
                        ));
                    }
                } else if self.cfg.is_advertised() {
                    self.beat(world.now, true, &mut out);
                }
            }
            JobTimer::WaitTimeout => {
                if !self.was_started && self.phase == Phase::Active {
                    out.push(Action::Publish(Event::new(
                        EventCode::TimerExpired,
                        self.cfg.name.clone(),
                    )));
                    self.end(world, &mut out);
                }
            }
            JobTimer::Interval => {
                if self.phase != Phase::Active {
                    return out;
                }
                if self.restarts_remain.take() {
                    self.start(world, &mut out);
                } else {
                    self.end(world, &mut out);
                }
            }
            JobTimer::Cron => {
                if self.phase != Phase::Active || !self.listening {
                    return out;
                }
                let Some(due) = self.next_run else {
                    return out;
                };
                if world.wall_ms < due.saturating_mul(1000) {
                    // Woken early (a resync, or the clocks drifted): not yet.
                    self.schedule_cron(world, Some(due), &mut out);
                    return out;
                }
                if let Trigger::Cron(c) = &self.cfg.when.trigger {
                    self.last_cron_local = Some(due + c.zone.offset_at(due) as i64);
                }
                self.next_run = None;
                self.start(world, &mut out);
                let after = due.max(world.wall_ms.div_euclid(1000));
                self.schedule_cron(world, Some(after), &mut out);
            }
            JobTimer::Restart => {
                if self.restart_pending && self.phase == Phase::Active {
                    self.restart_pending = false;
                    self.start(world, &mut out);
                }
            }
            JobTimer::Kill => {
                if self.phase == Phase::Terminating {
                    if self.exec_pid.is_some() {
                        out.push(Action::Kill(ProcKind::Exec));
                    }
                    if self.check_pid.is_some() {
                        out.push(Action::Kill(ProcKind::Check));
                    }
                }
            }
            JobTimer::StopHook => {
                if let Phase::AwaitingHook(h) = &self.phase {
                    out.push(Action::Log(
                        crate::config::types::LogLevel::Warn,
                        format!(
                            "{}: stop hook {} did not finish within the stop timeout, stopping anyway",
                            self.cfg.name, h
                        ),
                    ));
                    self.finish(world, &mut out);
                }
            }
        }
        out
    }

    /// One bus event, in the dispatch order of reference §3.5.
    pub fn on_event(&mut self, ev: &Event, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        match &self.phase {
            Phase::Done | Phase::Terminating => return out,
            Phase::AwaitingHook(h) => {
                // A `once` hook ends (Stopped); an `each` hook only exits, so its
                // exit is the end of its run too (3.8 could wait forever here).
                let hook_done = matches!(
                    ev.code,
                    EventCode::Stopped | EventCode::ExitSuccess | EventCode::ExitFailed
                );
                if hook_done && ev.source == *h {
                    self.finish(world, &mut out);
                }
                return out;
            }
            Phase::Active => {}
        }
        let name = self.cfg.name.as_str();
        let is_check = ev.source.strip_prefix("check.") == Some(name);
        match ev.code {
            // Our own processes' outcomes were handled in `on_exit`; one on the
            // bus under our name may be another job's with the same name.
            EventCode::ExitSuccess | EventCode::ExitFailed if is_check || ev.source == name => {}
            EventCode::Quit | EventCode::Shutdown
                if ev.code == EventCode::Shutdown && ev.source == GLOBAL || ev.source == name =>
            {
                self.restarts_remain = Budget::Left(0);
                self.restart_pending = false;
                // A stop hook stays for its trigger unless that can no longer
                // come: its source is not a job, or has stopped and we already
                // ran for it. (A source that completed a moment ago still has
                // its event on the bus, so it is not "gone" for a hook that has
                // not run yet.)
                let trigger_pending = match &self.cfg.when.trigger {
                    Trigger::Event { sources, .. } => {
                        self.source_exists
                            && !(self.was_started
                                && sources.iter().any(|s| world.completed.contains(s)))
                    }
                    _ => false,
                };
                if self.is_stop_hook() && trigger_pending {
                    if self.starts_remain == Budget::Unlimited {
                        self.starts_remain = Budget::Left(1);
                    }
                    if self.exec_pid.is_none() && self.starts_remain == Budget::Left(0) {
                        self.end(world, &mut out);
                    }
                } else {
                    self.starts_remain = Budget::Left(0);
                    self.end(world, &mut out);
                }
            }
            EventCode::EnterMaintenance if ev.source == GLOBAL => {
                self.status = Status::Maintenance;
                if self.cfg.is_advertised() {
                    out.push(Action::Deregister);
                }
                if self.listening && self.trigger_fires(ev) {
                    self.on_start_event(world, &mut out);
                }
            }
            EventCode::ExitMaintenance if ev.source == GLOBAL => {
                if self.status == Status::Maintenance {
                    self.status = if self.cfg.always_healthy {
                        Status::AlwaysHealthy
                    } else if self.was_started {
                        Status::Unknown
                    } else {
                        Status::Idle
                    };
                    if self.cfg.is_advertised()
                        && (self.was_started || self.cfg.initial_status.is_some())
                    {
                        // SPEC §2.7: back in the catalog at once, not after the next TTL.
                        let s = if self.status == Status::AlwaysHealthy {
                            CheckStatus::Passing
                        } else {
                            self.cfg.initial_status.unwrap_or(CheckStatus::Passing)
                        };
                        out.push(Action::Register(s));
                    }
                }
                if self.listening && self.trigger_fires(ev) {
                    self.on_start_event(world, &mut out);
                }
            }
            EventCode::Signal => {
                if let Trigger::Signal(s) = self.cfg.when.trigger {
                    if ev.source == s.as_str() {
                        self.start(world, &mut out);
                    }
                }
            }
            _ => {
                if self.listening && self.trigger_fires(ev) {
                    self.on_start_event(world, &mut out);
                }
            }
        }
        out
    }

    /// A run of ours is over (reference §3.5 rule 9; handled where the run
    /// ends, not when its exit event comes back on the bus, where a job of the
    /// same name could have sent it): restart, wait for the next trigger, or end.
    fn after_run(&mut self, world: &World, out: &mut Vec<Action>) {
        if matches!(self.cfg.when.trigger, Trigger::Interval(_)) {
            return;
        }
        if self.restarts_remain.take() {
            self.schedule_restart(world, out);
        } else if self.starts_remain.permits() && self.listening {
            // each/signal jobs wait for their next trigger
        } else if self.exec_pid.is_none() && self.queued_starts == 0 {
            if self.status != Status::AlwaysHealthy && self.status != Status::Maintenance {
                self.status = Status::Unknown;
            }
            self.end(world, out);
        }
    }

    fn on_start_event(&mut self, world: &World, out: &mut Vec<Action>) {
        if !self.listening {
            return;
        }
        if self.starts_remain == Budget::Left(0) {
            self.end(world, out);
            return;
        }
        if let Budget::Left(n) = &mut self.starts_remain {
            *n -= 1;
            if *n == 0 || self.restarts_remain == Budget::Left(0) {
                self.listening = false;
            }
        }
        self.start(world, out);
    }

    fn schedule_restart(&mut self, world: &World, out: &mut Vec<Action>) {
        let ran = self
            .started_at
            .map(|s| world.now.saturating_duration_since(s))
            .unwrap_or_default();
        match self.backoff.after_run(ran) {
            None => self.start(world, out),
            Some(delay) => {
                self.restart_pending = true;
                out.push(Action::Log(
                    crate::config::types::LogLevel::Info,
                    format!(
                        "{} exited after {}, restarting in {}",
                        self.cfg.name,
                        crate::config::duration::format(ran),
                        crate::config::duration::format(delay)
                    ),
                ));
                out.push(Action::Arm {
                    timer: JobTimer::Restart,
                    after: delay,
                    repeat: false,
                });
            }
        }
    }

    /// "Start exec": health checks become possible, then the process is spawned
    /// unless one is still running, in which case the run waits its turn.
    fn start(&mut self, world: &World, out: &mut Vec<Action>) {
        if self.status != Status::AlwaysHealthy && self.status != Status::Maintenance {
            self.status = Status::Unknown;
        }
        if !self.was_started {
            self.was_started = true;
            if self.cfg.when.timeout.is_some() {
                out.push(Action::Cancel(JobTimer::WaitTimeout));
            }
        }
        if self.cfg.runs_in_loop() {
            // Over before anything else happens: never two runs at once.
            self.started_at = Some(world.now);
            out.push(Action::RunInLoop);
            return;
        }
        if self.cfg.exec.is_none() {
            return;
        }
        if self.exec_pid.is_some() {
            if self.queued_starts < MAX_QUEUED_STARTS {
                self.queued_starts += 1;
            }
            return;
        }
        self.started_at = Some(world.now);
        out.push(Action::Spawn(ProcKind::Exec));
    }

    /// The job's end sequence (reference §3.6) up to waiting for the stop hook.
    fn end(&mut self, world: &World, out: &mut Vec<Action>) {
        if self.phase != Phase::Active {
            return;
        }
        self.listening = false;
        self.queued_starts = 0;
        out.push(Action::Cancel(JobTimer::Interval));
        out.push(Action::Cancel(JobTimer::Cron));
        self.next_run = None;
        out.push(Action::Cancel(JobTimer::WaitTimeout));
        out.push(Action::Cancel(JobTimer::Restart));
        out.push(Action::Publish(Event::new(
            EventCode::Stopping,
            self.cfg.name.clone(),
        )));
        match &self.hook {
            Some(h) if !world.completed.contains(h) => {
                self.phase = Phase::AwaitingHook(h.clone());
                out.push(Action::Arm {
                    timer: JobTimer::StopHook,
                    after: self.cfg.stop_timeout.unwrap_or(world.stop_timeout),
                    repeat: false,
                });
            }
            _ => self.finish(world, out),
        }
    }

    fn finish(&mut self, world: &World, out: &mut Vec<Action>) {
        out.push(Action::Cancel(JobTimer::StopHook));
        out.push(Action::Cancel(JobTimer::Heartbeat));
        if self.cfg.is_advertised() {
            out.push(Action::Deregister);
        }
        if self.exec_pid.is_some() {
            out.push(Action::Terminate(ProcKind::Exec));
        }
        if self.check_pid.is_some() {
            out.push(Action::Terminate(ProcKind::Check));
        }
        // Also when no probe runs: the kept connection of the check goes too.
        if self.cfg.health.as_ref().is_some_and(|h| h.native.is_some()) {
            self.probe_running = false;
            out.push(Action::StopProbe);
        }
        if self.exec_pid.is_some() || self.check_pid.is_some() {
            self.phase = Phase::Terminating;
            out.push(Action::Arm {
                timer: JobTimer::Kill,
                after: world.stop_timeout,
                repeat: false,
            });
        } else {
            self.complete(out);
        }
    }

    fn complete(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        out.push(Action::Cancel(JobTimer::Kill));
        out.push(Action::Publish(Event::new(
            EventCode::Stopped,
            self.cfg.name.clone(),
        )));
        out.push(Action::Completed);
    }

    /// After a reload: the stop hook and the trigger's source may have changed.
    pub fn relink(&mut self, all: &[JobConfig]) {
        self.hook = hook_for(&self.cfg.name, all);
        self.source_exists = source_in(&self.cfg, all);
    }

    /// A reload removed or changed this job: end it now, as a plain job, even if
    /// it is a stop hook (its replacement, if any, takes over).
    pub fn retire(&mut self, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        self.restarts_remain = Budget::Left(0);
        self.starts_remain = Budget::Left(0);
        self.restart_pending = false;
        self.end(world, &mut out);
        out
    }

    /// The runtime spawned a process for us.
    pub fn spawned(&mut self, kind: ProcKind, pid: i32) {
        match kind {
            ProcKind::Exec => self.exec_pid = Some(pid),
            ProcKind::Check => self.check_pid = Some(pid),
        }
    }

    /// The runtime started the native probe of our health check.
    pub fn probe_started(&mut self) {
        self.probe_running = true;
    }

    /// The native probe ended: a pass or a failure reason. It publishes what
    /// an exec check's exit publishes, so both kinds of check look the same
    /// to other jobs, to the heartbeat and to telemetry.
    pub fn probe_done(&mut self, error: Option<String>, world: &World) -> Vec<Action> {
        if !self.probe_running {
            return Vec::new(); // stopped while the result was on its way
        }
        self.probe_running = false;
        self.on_exit(ProcKind::Check, error, world)
    }

    /// Arm the cron timer for the pending run, or for the first matching minute
    /// after `after` (Unix seconds; `None` = now), at most `CRON_RESYNC` ahead.
    fn schedule_cron(&mut self, world: &World, after: Option<i64>, out: &mut Vec<Action>) {
        let Trigger::Cron(CronTrigger { schedule, zone }) = &self.cfg.when.trigger else {
            return;
        };
        let due = match self.next_run {
            Some(due) => due,
            None => {
                let from = after.unwrap_or(world.wall_ms.div_euclid(1000));
                match schedule.next_after(zone, from, self.last_cron_local) {
                    Some(t) => t,
                    None => {
                        out.push(Action::Log(
                            crate::config::types::LogLevel::Warn,
                            format!(
                                "{}: cron {:?} has no next run",
                                self.cfg.name, schedule.text
                            ),
                        ));
                        return;
                    }
                }
            }
        };
        self.next_run = Some(due);
        let wait_ms = due
            .saturating_mul(1000)
            .saturating_sub(world.wall_ms)
            .max(0) as u64;
        out.push(Action::Arm {
            timer: JobTimer::Cron,
            after: Duration::from_millis(wait_ms).min(CRON_RESYNC),
            repeat: false,
        });
    }

    /// A process of ours ended (or could not be started: `pid` None). `error` is the
    /// Go-style reason for a failure (`exit status 1`, `signal: killed`, ...).
    pub fn on_exit(&mut self, kind: ProcKind, error: Option<String>, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        let source = match kind {
            ProcKind::Exec => {
                self.exec_pid = None;
                self.cfg.name.clone()
            }
            ProcKind::Check => {
                self.check_pid = None;
                self.check_name()
            }
        };
        match self.phase {
            Phase::Done => return out,
            Phase::Terminating => {
                if self.exec_pid.is_none() && self.check_pid.is_none() {
                    self.complete(&mut out);
                }
                return out;
            }
            _ => {}
        }
        let passed = error.is_none();
        match error {
            None => out.push(Action::Publish(Event::new(EventCode::ExitSuccess, source))),
            Some(e) => {
                out.push(Action::Publish(Event::new(
                    EventCode::ExitFailed,
                    source.clone(),
                )));
                out.push(Action::Publish(Event::new(
                    EventCode::Error,
                    format!("{source}: {e}"),
                )));
            }
        }
        if self.phase != Phase::Active {
            return out;
        }
        match kind {
            ProcKind::Check => self.checked(passed, world.now, &mut out),
            ProcKind::Exec => {
                if self.queued_starts > 0 {
                    self.queued_starts -= 1;
                    self.started_at = Some(world.now);
                    out.push(Action::Spawn(ProcKind::Exec));
                }
                self.after_run(world, &mut out);
            }
        }
        out
    }

    /// Our health check's result (reference §3.5 rules 4 and 5).
    fn checked(&mut self, passed: bool, now: Instant, out: &mut Vec<Action>) {
        if passed {
            if self.status != Status::Maintenance {
                let steady = matches!(self.status, Status::Healthy | Status::AlwaysHealthy);
                if self.status != Status::AlwaysHealthy {
                    self.status = Status::Healthy;
                }
                let name = self.cfg.name.as_str();
                out.push(Action::Publish(Event::new(EventCode::StatusHealthy, name)));
                if self.cfg.is_advertised() {
                    self.beat(now, steady, out);
                }
            }
        } else if self.status != Status::Maintenance && self.status != Status::AlwaysHealthy {
            let name = self.cfg.name.as_str();
            self.status = Status::Unhealthy;
            out.push(Action::Publish(Event::new(
                EventCode::StatusUnhealthy,
                name,
            )));
        }
    }

    /// Ask for a passing TTL update, as 3.8 did after every passing check, but
    /// not while the last one is younger than a quarter of the TTL and the job
    /// stayed healthy (`steady`) since: the agent keeps the check passing for
    /// the whole TTL, so the margin never drops below three quarters of it,
    /// while a job checking every second against a 5 s TTL sends half the
    /// updates. Where the interval is at least a quarter of the TTL (as in
    /// the usual configs) every passing check still sends one.
    fn beat(&mut self, now: Instant, steady: bool, out: &mut Vec<Action>) {
        let ttl = self.cfg.health.as_ref().map_or(0, |h| h.ttl);
        let quarter = Duration::from_secs(u64::from(ttl)) / 4;
        let recent = self
            .last_beat
            .is_some_and(|t| now.saturating_duration_since(t) < quarter);
        if steady && recent {
            return;
        }
        self.last_beat = Some(now);
        out.push(Action::Heartbeat);
    }

    /// A job that a reload adds: when the event its `once` waits for already
    /// happened and still holds (`past`), it starts now instead of waiting for
    /// an event that will not come again; with several sources, those that
    /// already sent it count. `each` and signal jobs wait as usual.
    pub fn catch_up(&mut self, past: &Past, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        let once = self.starts_remain == Budget::Left(1);
        if self.phase != Phase::Active || !once {
            return out;
        }
        let waited: Vec<Event> = match (&self.start_event, &self.cfg.when.trigger) {
            (Some(ev), _) => vec![ev.clone()],
            (None, Trigger::Event { code, sources, .. }) => sources
                .iter()
                .map(|s| Event::new(*code, s.clone()))
                .collect(),
            _ => Vec::new(),
        };
        for ev in waited.iter().filter(|ev| past.holds(ev)) {
            if self.listening && self.trigger_fires(ev) {
                self.on_start_event(world, &mut out);
            }
        }
        out
    }

    /// How the run the runtime just did for [`Action::RunInLoop`] went: the
    /// events a process exit would publish, or for an unchanged render none
    /// at all (the job still moves on as after any run).
    pub fn on_run_done(&mut self, outcome: RunOutcome, world: &World) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase != Phase::Active && !matches!(self.phase, Phase::AwaitingHook(_)) {
            return out;
        }
        let name = self.cfg.name.clone();
        match outcome {
            RunOutcome::Done => out.push(Action::Publish(Event::new(EventCode::ExitSuccess, name))),
            RunOutcome::Failed(e) => {
                out.push(Action::Publish(Event::new(
                    EventCode::ExitFailed,
                    name.clone(),
                )));
                out.push(Action::Publish(Event::new(
                    EventCode::Error,
                    format!("{name}: {e}"),
                )));
            }
            RunOutcome::Unchanged => {}
        }
        if self.phase == Phase::Active {
            self.after_run(world, &mut out);
        }
        out
    }

    /// Signal names a job may be sent through the control plane map to
    /// `SignalName` elsewhere; this is only for `/status`.
    pub fn pid(&self) -> Option<i32> {
        self.exec_pid
    }
}

impl SignalName {
    pub fn from_str_opt(s: &str) -> Option<SignalName> {
        match s {
            "SIGHUP" => Some(SignalName::Sighup),
            "SIGUSR2" => Some(SignalName::Sigusr2),
            _ => None,
        }
    }
}
