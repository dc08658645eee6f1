//! The job state machine of ContainerPilot 3 (reference §3.5–§3.7), as pure logic:
//! inputs are bus events, timer expiries and process outcomes; outputs are
//! `Action`s that the runtime carries out. Nothing here touches the OS, so every
//! rule is unit-tested by feeding inputs and reading the actions.

mod backoff;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;

use crate::config::types::{CheckStatus, JobConfig, Restarts, SignalName, Trigger};
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Publish(Event),
    Spawn(ProcKind),
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
}

#[derive(Debug)]
pub struct Job {
    pub cfg: JobConfig,
    pub status: Status,
    start_event: Option<Event>,
    starts_remain: Budget,
    pub restarts_remain: Budget,
    listening: bool,
    phase: Phase,
    /// The job that runs on our `stopping` event (last one in config order).
    hook: Option<String>,
    pub exec_pid: Option<i32>,
    pub check_pid: Option<i32>,
    /// Starts that arrived while the exec was still running (never two runs at once).
    queued_starts: u32,
    started_at: Option<Instant>,
    backoff: Backoff,
    /// A restart is waiting for its back-off timer.
    restart_pending: bool,
    /// Registered at least once with `initial_status` (or by a heartbeat).
    pub was_started: bool,
    /// Our `when.source` names a job of the current config.
    source_exists: bool,
}

const MAX_QUEUED_STARTS: u32 = 1000;

/// The stop hook of job `name`: the last job (in config order) with an exec that
/// starts on `name`'s `stopping` event.
pub fn hook_for(name: &str, all: &[JobConfig]) -> Option<String> {
    all.iter()
        .filter(|o| {
            matches!(&o.when.trigger, Trigger::Event { code: EventCode::Stopping, source, .. } if source == name)
                && o.name != name
                && o.exec.is_some()
        })
        .map(|o| o.name.clone())
        .next_back()
}

fn source_in(cfg: &JobConfig, all: &[JobConfig]) -> bool {
    match &cfg.when.trigger {
        Trigger::Event { source, .. } => all.iter().any(|o| o.name == *source),
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
            Trigger::Event { code, source, each } => (
                Some(Event::new(*code, source.clone())),
                if *each {
                    Budget::Unlimited
                } else {
                    Budget::Left(1)
                },
            ),
            Trigger::Signal(s) => (
                Some(Event::new(EventCode::Signal, s.as_str())),
                Budget::Unlimited,
            ),
            Trigger::Never => (None, Budget::Left(1)),
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
            starts_remain: starts,
            restarts_remain: restarts,
            listening: true,
            phase: Phase::Active,
            hook,
            exec_pid: None,
            check_pid: None,
            queued_starts: 0,
            started_at: None,
            backoff: Backoff::default(),
            restart_pending: false,
            was_started: false,
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

    /// The `when.source` this job waits on (for `/status` DependsOn).
    pub fn depends_on(&self) -> Option<&str> {
        match &self.cfg.when.trigger {
            Trigger::Event { source, .. } if source != GLOBAL => Some(source),
            _ => None,
        }
    }

    fn is_stop_hook(&self) -> bool {
        matches!(
            &self.cfg.when.trigger,
            Trigger::Event {
                code: EventCode::Stopping | EventCode::Stopped,
                ..
            }
        ) && self.cfg.exec.is_some()
    }

    /// Called once when the run begins, before `Startup` is published: arm tickers
    /// and register with `initial_status`.
    pub fn begin(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
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
                let has_check = self.cfg.health.as_ref().is_some_and(|h| h.exec.is_some());
                if has_check {
                    if self.check_pid.is_none() {
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
                    out.push(Action::Heartbeat);
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
            EventCode::ExitFailed if is_check => {
                if self.status != Status::Maintenance && self.status != Status::AlwaysHealthy {
                    self.status = Status::Unhealthy;
                    out.push(Action::Publish(Event::new(
                        EventCode::StatusUnhealthy,
                        name,
                    )));
                }
            }
            EventCode::ExitSuccess if is_check => {
                if self.status != Status::Maintenance {
                    if self.status != Status::AlwaysHealthy {
                        self.status = Status::Healthy;
                    }
                    out.push(Action::Publish(Event::new(EventCode::StatusHealthy, name)));
                    if self.cfg.is_advertised() {
                        out.push(Action::Heartbeat);
                    }
                }
            }
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
                    Trigger::Event { source, .. } => {
                        self.source_exists
                            && !(world.completed.contains(source) && self.was_started)
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
                if self.start_event.as_ref() == Some(ev) {
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
                if self.start_event.as_ref() == Some(ev) {
                    self.on_start_event(world, &mut out);
                }
            }
            EventCode::ExitSuccess | EventCode::ExitFailed if ev.source == name => {
                if matches!(self.cfg.when.trigger, Trigger::Interval(_)) {
                    return out;
                }
                if self.restarts_remain.take() {
                    self.schedule_restart(world, &mut out);
                } else if self.starts_remain.permits() && self.listening {
                    // each/signal jobs wait for their next trigger
                } else if self.exec_pid.is_none() && self.queued_starts == 0 {
                    if self.status != Status::AlwaysHealthy && self.status != Status::Maintenance {
                        self.status = Status::Unknown;
                    }
                    self.end(world, &mut out);
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
                if self.listening && self.start_event.as_ref() == Some(ev) {
                    self.on_start_event(world, &mut out);
                }
            }
        }
        out
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
        if kind == ProcKind::Exec && self.queued_starts > 0 && self.phase == Phase::Active {
            self.queued_starts -= 1;
            self.started_at = Some(world.now);
            out.push(Action::Spawn(ProcKind::Exec));
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
