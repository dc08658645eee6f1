//! The job state machine driven without processes: a tiny simulator plays the
//! runtime (bus, timers, process exits) and the tests read what happened.

use super::*;
use crate::config::types::{HealthConfig, WhenConfig};
use std::collections::{HashMap, VecDeque};

fn job(name: &str) -> JobConfig {
    JobConfig::new(name, Some(vec!["true".into()]))
}

fn when(source: &str, code: EventCode, each: bool) -> WhenConfig {
    when_all(&[source], code, each)
}

fn when_all(sources: &[&str], code: EventCode, each: bool) -> WhenConfig {
    WhenConfig {
        trigger: Trigger::Event {
            code,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            each,
        },
        timeout: None,
    }
}

struct Sim {
    jobs: Vec<Job>,
    completed: HashSet<String>,
    bus: VecDeque<Event>,
    published: Vec<Event>,
    spawns: Vec<(String, ProcKind)>,
    terminated: Vec<(String, ProcKind)>,
    killed: Vec<(String, ProcKind)>,
    catalog: Vec<(String, Action)>,
    timers: HashMap<(usize, JobTimer), Duration>,
    now: Instant,
    /// Wall clock in ms; moves with `now`.
    wall_ms: i64,
    next_pid: i32,
    /// Native probes started / stopped, by job name.
    probes: Vec<String>,
    stopped_probes: Vec<String>,
    /// Runs inside the loop (render/signal jobs), by job name.
    in_loop: Vec<String>,
    /// How the next in-loop runs go (`Done` once this is empty).
    outcomes: VecDeque<RunOutcome>,
}

impl Sim {
    fn new(cfgs: Vec<JobConfig>) -> Sim {
        let jobs = cfgs.iter().map(|c| Job::new(c.clone(), &cfgs)).collect();
        let mut s = Sim {
            jobs,
            completed: HashSet::new(),
            bus: VecDeque::new(),
            published: vec![],
            spawns: vec![],
            terminated: vec![],
            killed: vec![],
            catalog: vec![],
            timers: HashMap::new(),
            now: Instant::now(),
            wall_ms: 1_796_497_600_000,
            next_pid: 100,
            probes: vec![],
            stopped_probes: vec![],
            in_loop: vec![],
            outcomes: VecDeque::new(),
        };
        for i in 0..s.jobs.len() {
            let a = s.drive(i, |j, w| j.begin(w));
            s.apply(i, a);
        }
        s
    }

    /// Call job `i` with the current world.
    fn drive(&mut self, i: usize, f: impl FnOnce(&mut Job, &World) -> Vec<Action>) -> Vec<Action> {
        let w = World {
            now: self.now,
            completed: &self.completed,
            stop_timeout: Duration::from_secs(5),
            wall_ms: self.wall_ms,
        };
        f(&mut self.jobs[i], &w)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall_ms += d.as_millis() as i64;
    }

    fn idx(&self, name: &str) -> usize {
        self.jobs
            .iter()
            .position(|j| j.name() == name)
            .expect("job in sim")
    }

    fn apply(&mut self, i: usize, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Publish(ev) => {
                    self.published.push(ev.clone());
                    self.bus.push_back(ev);
                }
                Action::Spawn(kind) => {
                    let native = self.jobs[i]
                        .cfg
                        .health
                        .as_ref()
                        .is_some_and(|h| h.native.is_some());
                    if kind == ProcKind::Check && native {
                        self.jobs[i].probe_started();
                        self.probes.push(self.jobs[i].name().into());
                        continue;
                    }
                    self.next_pid += 1;
                    self.jobs[i].spawned(kind, self.next_pid);
                    self.spawns.push((self.jobs[i].name().into(), kind));
                }
                Action::StopProbe => self.stopped_probes.push(self.jobs[i].name().into()),
                Action::Terminate(kind) => self.terminated.push((self.jobs[i].name().into(), kind)),
                Action::Kill(kind) => self.killed.push((self.jobs[i].name().into(), kind)),
                Action::Arm { timer, after, .. } => {
                    self.timers.insert((i, timer), after);
                }
                Action::Cancel(timer) => {
                    self.timers.remove(&(i, timer));
                }
                Action::Completed => {
                    self.completed.insert(self.jobs[i].name().into());
                }
                Action::Register(_) | Action::Heartbeat | Action::Deregister => {
                    self.catalog.push((self.jobs[i].name().into(), a))
                }
                Action::Log(..) => {}
                Action::RunInLoop => {
                    self.in_loop.push(self.jobs[i].name().into());
                    let outcome = self.outcomes.pop_front().unwrap_or(RunOutcome::Done);
                    let acts = self.drive(i, |j, w| j.on_run_done(outcome, w));
                    self.apply(i, acts);
                }
            }
        }
    }

    fn publish(&mut self, ev: Event) {
        self.bus.push_back(ev);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(ev) = self.bus.pop_front() {
            for i in 0..self.jobs.len() {
                let acts = self.drive(i, |j, w| j.on_event(&ev, w));
                self.apply(i, acts);
            }
        }
    }

    fn startup(&mut self) {
        self.publish(Event::global(EventCode::Startup));
    }

    /// The job's running process of `kind` exits after `ran`.
    fn exit(&mut self, name: &str, kind: ProcKind, ok: bool, ran: Duration) {
        self.advance(ran);
        let i = self.idx(name);
        let err = (!ok).then(|| "exit status 1".to_string());
        let acts = self.drive(i, |j, w| j.on_exit(kind, err, w));
        self.apply(i, acts);
        self.pump();
    }

    fn fire(&mut self, name: &str, timer: JobTimer) {
        let i = self.idx(name);
        if let Some(d) = self.timers.get(&(i, timer)).copied() {
            self.advance(d);
        }
        let acts = self.drive(i, |j, w| j.on_timer(timer, w));
        self.apply(i, acts);
        self.pump();
    }

    fn runs(&self, name: &str) -> usize {
        self.spawns
            .iter()
            .filter(|(n, k)| n == name && *k == ProcKind::Exec)
            .count()
    }

    fn saw(&self, code: EventCode, source: &str) -> usize {
        self.published
            .iter()
            .filter(|e| e.code == code && e.source == source)
            .count()
    }

    /// The native probe of `name` ends: `None` = pass, else the reason.
    fn probe(&mut self, name: &str, error: Option<&str>) {
        let i = self.idx(name);
        let acts = self.drive(i, |j, w| j.probe_done(error.map(String::from), w));
        self.apply(i, acts);
        self.pump();
    }

    fn running(&self, name: &str) -> bool {
        self.jobs[self.idx(name)].exec_pid.is_some()
    }

    /// Let the job's process exit (after a long run, so no back-off) until it
    /// stops restarting; returns the number of runs.
    fn run_to_end(&mut self, name: &str) -> usize {
        for _ in 0..100 {
            if !self.running(name) {
                break;
            }
            self.exit(name, ProcKind::Exec, true, Duration::from_secs(20));
        }
        self.runs(name)
    }
}

#[test]
fn restarts_count_gives_one_more_run_than_restarts() {
    for (restarts, runs) in [
        (Restarts::Count(3), 4),
        (Restarts::Count(1), 2),
        (Restarts::Count(0), 1),
    ] {
        let mut c = job("app");
        c.restarts = restarts;
        let mut s = Sim::new(vec![c]);
        s.startup();
        assert_eq!(s.run_to_end("app"), runs, "{restarts:?}");
        assert!(s.jobs[0].is_done());
        assert_eq!(s.saw(EventCode::Stopping, "app"), 1);
        assert_eq!(s.saw(EventCode::Stopped, "app"), 1);
    }
}

#[test]
fn unlimited_restarts_never_end() {
    let mut c = job("app");
    c.restarts = Restarts::Unlimited;
    let mut s = Sim::new(vec![c]);
    s.startup();
    for _ in 0..50 {
        s.exit("app", ProcKind::Exec, false, Duration::from_secs(20));
    }
    assert_eq!(s.runs("app"), 51);
    assert!(!s.jobs[0].is_done());
}

#[test]
fn once_job_ignores_a_second_trigger_while_running() {
    let mut c = job("app");
    c.when = when("pre", EventCode::ExitSuccess, false);
    let mut s = Sim::new(vec![c]);
    s.startup();
    assert_eq!(s.runs("app"), 0);
    s.publish(Event::new(EventCode::ExitSuccess, "pre"));
    s.publish(Event::new(EventCode::ExitSuccess, "pre"));
    assert_eq!(s.runs("app"), 1);
    s.exit("app", ProcKind::Exec, true, Duration::from_secs(2));
    assert!(s.jobs[0].is_done());
    s.publish(Event::new(EventCode::ExitSuccess, "pre"));
    assert_eq!(s.runs("app"), 1);
}

#[test]
fn each_job_runs_once_per_trigger_and_never_ends() {
    let mut c = job("onchange");
    c.when = when("watch.db", EventCode::StatusChanged, true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    for n in 1..=3 {
        s.publish(Event::new(EventCode::StatusChanged, "watch.db"));
        s.exit("onchange", ProcKind::Exec, n != 2, Duration::from_secs(2));
    }
    assert_eq!(s.runs("onchange"), 3);
    assert!(!s.jobs[0].is_done());
}

#[test]
fn each_job_queues_a_trigger_that_arrives_while_running() {
    let mut c = job("onchange");
    c.when = when("watch.db", EventCode::StatusChanged, true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.publish(Event::new(EventCode::StatusChanged, "watch.db"));
    s.publish(Event::new(EventCode::StatusChanged, "watch.db"));
    assert_eq!(s.runs("onchange"), 1, "never two runs at once");
    s.exit("onchange", ProcKind::Exec, true, Duration::from_secs(2));
    assert_eq!(
        s.runs("onchange"),
        2,
        "queued run starts after the first exits"
    );
    s.exit("onchange", ProcKind::Exec, true, Duration::from_secs(2));
    assert_eq!(s.runs("onchange"), 2);
}

#[test]
fn each_with_restarts_shares_one_budget() {
    let mut c = job("w");
    c.when = when("watch.x", EventCode::StatusChanged, true);
    c.restarts = Restarts::Count(2);
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.publish(Event::new(EventCode::StatusChanged, "watch.x"));
    // exits consume the shared budget: run, restart, restart, then wait
    for _ in 0..3 {
        s.exit("w", ProcKind::Exec, true, Duration::from_secs(2));
    }
    assert_eq!(s.runs("w"), 3);
    assert!(!s.running("w"));
    s.publish(Event::new(EventCode::StatusChanged, "watch.x"));
    assert_eq!(s.runs("w"), 4);
    assert!(!s.jobs[0].is_done());
}

#[test]
fn a_job_whose_when_names_its_own_exit_never_triggers_that_way() {
    let mut c = job("loop");
    c.when = when("loop", EventCode::ExitSuccess, true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.publish(Event::new(EventCode::ExitSuccess, "loop"));
    assert_eq!(s.runs("loop"), 0);
}

#[test]
fn interval_500ms_with_restarts_5_runs_exactly_6_times() {
    let mut c = job("task");
    c.when = WhenConfig {
        trigger: Trigger::Interval(Duration::from_millis(500)),
        timeout: None,
    };
    c.timeout = Some(Duration::from_millis(500));
    c.restarts = Restarts::Count(5);
    let mut s = Sim::new(vec![c]);
    s.startup();
    for _ in 0..12 {
        if s.running("task") {
            s.exit("task", ProcKind::Exec, true, Duration::from_millis(10));
        }
        s.fire("task", JobTimer::Interval);
    }
    assert_eq!(s.runs("task"), 6);
    assert!(s.jobs[0].is_done());
}

#[test]
fn interval_jobs_ignore_their_own_exits() {
    let mut c = job("task");
    c.when = WhenConfig {
        trigger: Trigger::Interval(Duration::from_secs(1)),
        timeout: None,
    };
    c.restarts = Restarts::Unlimited;
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.exit("task", ProcKind::Exec, false, Duration::from_millis(1));
    assert_eq!(s.runs("task"), 1, "no restart on exit");
    s.fire("task", JobTimer::Interval);
    assert_eq!(s.runs("task"), 2);
}

#[test]
fn when_timeout_expires_without_a_run() {
    let mut c = job("late");
    c.when = when("never-comes", EventCode::StatusHealthy, false);
    c.when.timeout = Some(Duration::from_secs(2));
    let mut s = Sim::new(vec![c]);
    assert!(s.timers.contains_key(&(0, JobTimer::WaitTimeout)));
    s.startup();
    s.fire("late", JobTimer::WaitTimeout);
    assert_eq!(s.saw(EventCode::TimerExpired, "late"), 1);
    assert_eq!(s.runs("late"), 0);
    assert!(s.jobs[0].is_done());
    assert_eq!(s.saw(EventCode::Stopped, "late"), 1);
}

#[test]
fn when_timeout_is_cancelled_once_started() {
    let mut c = job("ontime");
    c.when = when("pre", EventCode::ExitSuccess, false);
    c.when.timeout = Some(Duration::from_secs(2));
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.publish(Event::new(EventCode::ExitSuccess, "pre"));
    assert!(!s.timers.contains_key(&(0, JobTimer::WaitTimeout)));
    s.fire("ontime", JobTimer::WaitTimeout);
    assert_eq!(s.saw(EventCode::TimerExpired, "ontime"), 0);
}

#[test]
fn chain_b_after_a_exit_success() {
    let a = job("a");
    let mut b = job("b");
    b.when = when("a", EventCode::ExitSuccess, false);
    let mut s = Sim::new(vec![a, b]);
    s.startup();
    assert_eq!((s.runs("a"), s.runs("b")), (1, 0));
    s.exit("a", ProcKind::Exec, true, Duration::from_secs(1));
    assert_eq!(s.runs("b"), 1);
}

#[test]
fn chain_does_not_fire_on_failure() {
    let a = job("a");
    let mut b = job("b");
    b.when = when("a", EventCode::ExitSuccess, false);
    let mut s = Sim::new(vec![a, b]);
    s.startup();
    s.exit("a", ProcKind::Exec, false, Duration::from_secs(1));
    assert_eq!(s.runs("b"), 0);
    assert_eq!(s.saw(EventCode::ExitFailed, "a"), 1);
    assert_eq!(s.saw(EventCode::Error, "a: exit status 1"), 1);
}

#[test]
fn quick_exits_back_off_instead_of_spinning() {
    let mut c = job("crash");
    c.restarts = Restarts::Unlimited;
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.exit("crash", ProcKind::Exec, false, Duration::from_millis(5));
    assert_eq!(s.runs("crash"), 1, "no immediate restart");
    assert_eq!(
        s.timers.get(&(0, JobTimer::Restart)),
        Some(&Duration::from_millis(100))
    );
    s.fire("crash", JobTimer::Restart);
    assert_eq!(s.runs("crash"), 2);
    s.exit("crash", ProcKind::Exec, false, Duration::from_millis(5));
    assert_eq!(
        s.timers.get(&(0, JobTimer::Restart)),
        Some(&Duration::from_millis(200))
    );
}

fn health(exec: bool) -> Option<HealthConfig> {
    Some(HealthConfig {
        exec: exec.then(|| vec!["check".into()]),
        native: None,
        interval: Duration::from_secs(1),
        ttl: 5,
        timeout: Duration::from_secs(1),
        raw: false,
    })
}

#[test]
fn health_checks_never_run_before_first_start_nor_twice_at_once() {
    let mut c = job("app");
    c.when = when("pre", EventCode::ExitSuccess, false);
    c.health = health(true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    let checks = |s: &Sim| {
        s.spawns
            .iter()
            .filter(|(_, k)| *k == ProcKind::Check)
            .count()
    };
    assert_eq!(checks(&s), 0, "no check before the job started");
    s.publish(Event::new(EventCode::ExitSuccess, "pre"));
    s.fire("app", JobTimer::Heartbeat);
    assert_eq!(checks(&s), 1);
    s.fire("app", JobTimer::Heartbeat);
    assert_eq!(checks(&s), 1, "previous check still running");
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.saw(EventCode::ExitSuccess, "check.app"), 1);
    assert_eq!(s.saw(EventCode::StatusHealthy, "app"), 1);
    assert_eq!(s.jobs[0].status, Status::Healthy);
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, false, Duration::from_millis(1));
    assert_eq!(s.saw(EventCode::StatusUnhealthy, "app"), 1);
    assert_eq!(s.jobs[0].status, Status::Unhealthy);
}

#[test]
fn healthy_event_triggers_a_dependent_job() {
    let mut app = job("app");
    app.health = health(true);
    let mut dep = job("dep");
    dep.when = when("app", EventCode::StatusHealthy, false);
    let mut s = Sim::new(vec![app, dep]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.runs("dep"), 1);
}

#[test]
fn advertised_jobs_heartbeat_after_passing_checks_only() {
    let mut app = job("app");
    app.port = 80;
    app.health = health(true);
    let mut s = Sim::new(vec![app]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, false, Duration::from_millis(1));
    assert!(s.catalog.is_empty(), "failing checks send nothing");
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.catalog, vec![("app".to_string(), Action::Heartbeat)]);
}

#[test]
fn advertised_job_without_check_exec_heartbeats_every_interval() {
    let mut app = job("app");
    app.port = 80;
    app.health = health(false);
    // A TTL of up to four intervals: every tick sends its update, as in 3.8.
    if let Some(h) = app.health.as_mut() {
        h.ttl = 4;
    }
    let mut s = Sim::new(vec![app]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    s.fire("app", JobTimer::Heartbeat);
    assert_eq!(s.catalog.len(), 2);
}

#[test]
fn a_long_ttl_spares_updates_but_the_first_pass_after_a_failure_goes_at_once() {
    let mut app = job("app");
    app.port = 80;
    app.health = health(true);
    if let Some(h) = app.health.as_mut() {
        h.ttl = 8; // checks every second: an update at most every 2 s
    }
    let mut s = Sim::new(vec![app]);
    s.startup();
    let beats = |s: &Sim| {
        s.catalog
            .iter()
            .filter(|(_, a)| *a == Action::Heartbeat)
            .count()
    };
    let mut sent_at = Vec::new();
    for tick in 1..=6 {
        let before = beats(&s);
        s.fire("app", JobTimer::Heartbeat);
        s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
        if beats(&s) > before {
            sent_at.push(tick);
        }
    }
    // Never more than a quarter of the TTL (plus one interval) without an update.
    assert_eq!(sent_at, vec![1, 3, 5]);
    let healthy = s
        .published
        .iter()
        .filter(|e| **e == Event::new(EventCode::StatusHealthy, "app"))
        .count();
    assert_eq!(healthy, 6, "every passing check is still published");
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, false, Duration::from_millis(1));
    assert_eq!(beats(&s), 3, "failing checks send nothing");
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(beats(&s), 4, "healthy again: the update goes at once");
}

#[test]
fn initial_status_registers_before_startup() {
    let mut app = job("app");
    app.port = 80;
    app.health = health(true);
    app.initial_status = Some(CheckStatus::Warning);
    let s = Sim::new(vec![app]);
    assert_eq!(
        s.catalog,
        vec![("app".to_string(), Action::Register(CheckStatus::Warning))]
    );
}

#[test]
fn maintenance_transitions() {
    let mut app = job("app");
    app.port = 80;
    app.health = health(true);
    let mut s = Sim::new(vec![app]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.jobs[0].status, Status::Healthy);
    s.catalog.clear();

    s.publish(Event::global(EventCode::EnterMaintenance));
    assert_eq!(s.jobs[0].status, Status::Maintenance);
    assert_eq!(s.catalog, vec![("app".to_string(), Action::Deregister)]);
    // no checks in maintenance; results of a running one are ignored
    let checks_before = s.spawns.len();
    s.fire("app", JobTimer::Heartbeat);
    assert_eq!(s.spawns.len(), checks_before);

    s.catalog.clear();
    s.publish(Event::global(EventCode::ExitMaintenance));
    assert_eq!(s.jobs[0].status, Status::Unknown);
    assert_eq!(
        s.catalog,
        vec![("app".to_string(), Action::Register(CheckStatus::Passing))]
    );
    s.fire("app", JobTimer::Heartbeat);
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.jobs[0].status, Status::Healthy);
}

#[test]
fn check_result_during_maintenance_is_ignored() {
    let mut app = job("app");
    app.health = health(true);
    let mut s = Sim::new(vec![app]);
    s.startup();
    s.fire("app", JobTimer::Heartbeat);
    s.publish(Event::global(EventCode::EnterMaintenance));
    s.exit("app", ProcKind::Check, true, Duration::from_millis(1));
    assert_eq!(s.jobs[0].status, Status::Maintenance);
    assert_eq!(s.saw(EventCode::StatusHealthy, "app"), 0);
}

#[test]
fn maintenance_events_can_start_jobs() {
    let mut c = job("on-maint");
    c.when = when("global", EventCode::EnterMaintenance, true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    s.publish(Event::global(EventCode::EnterMaintenance));
    assert_eq!(s.runs("on-maint"), 1);
}

#[test]
fn signal_jobs_run_on_every_signal() {
    let mut c = job("on-hup");
    c.when = WhenConfig {
        trigger: Trigger::Signal(SignalName::Sighup),
        timeout: None,
    };
    let mut s = Sim::new(vec![c]);
    s.startup();
    assert_eq!(s.runs("on-hup"), 0);
    for _ in 0..3 {
        s.publish(Event::new(EventCode::Signal, "SIGHUP"));
        s.exit("on-hup", ProcKind::Exec, true, Duration::from_secs(1));
    }
    s.publish(Event::new(EventCode::Signal, "SIGUSR2"));
    assert_eq!(s.runs("on-hup"), 3);
    assert!(!s.jobs[0].is_done());
}

#[test]
fn shutdown_runs_stopping_hook_before_terminating_and_stopped_hook_after() {
    let mut app = job("app");
    app.restarts = Restarts::Unlimited;
    let mut pre = job("prestop");
    pre.when = when("app", EventCode::Stopping, false);
    let mut post = job("poststop");
    post.when = when("app", EventCode::Stopped, false);
    let mut s = Sim::new(vec![app, pre, post]);
    s.startup();
    assert!(s.running("app"));
    s.publish(Event::global(EventCode::Shutdown));
    // app announced stopping and waits for its hook; it has not been signalled
    assert_eq!(s.saw(EventCode::Stopping, "app"), 1);
    assert_eq!(s.runs("prestop"), 1);
    assert!(s.terminated.is_empty());
    assert_eq!(s.runs("poststop"), 0);
    s.exit("prestop", ProcKind::Exec, true, Duration::from_millis(50));
    assert_eq!(s.terminated, vec![("app".to_string(), ProcKind::Exec)]);
    // `stopped` means stopped: published once app's process is gone
    assert_eq!(s.saw(EventCode::Stopped, "app"), 0);
    assert_eq!(s.runs("poststop"), 0);
    s.exit("app", ProcKind::Exec, false, Duration::from_millis(50));
    assert_eq!(s.saw(EventCode::Stopped, "app"), 1);
    assert_eq!(
        s.saw(EventCode::ExitFailed, "app"),
        0,
        "a stop is not a failure"
    );
    assert_eq!(s.runs("poststop"), 1);
    s.exit("poststop", ProcKind::Exec, true, Duration::from_millis(50));
    assert!(s.jobs.iter().all(|j| j.is_done()), "everything ends");
    assert_eq!(s.runs("app"), 1, "no restart during shutdown");
}

#[test]
fn stop_hook_wait_is_bounded_by_stop_timeout() {
    let mut app = job("app");
    app.stop_timeout = Some(Duration::from_secs(2));
    let mut pre = job("prestop");
    pre.when = when("app", EventCode::Stopping, false);
    let mut s = Sim::new(vec![app, pre]);
    s.startup();
    s.publish(Event::global(EventCode::Shutdown));
    assert_eq!(
        s.timers.get(&(0, JobTimer::StopHook)),
        Some(&Duration::from_secs(2))
    );
    assert!(!s.jobs[0].is_done());
    s.fire("app", JobTimer::StopHook);
    assert_eq!(s.terminated, vec![("app".to_string(), ProcKind::Exec)]);
    assert!(!s.jobs[0].is_done(), "waits for its process");
    // the process ignores SIGTERM: after the stop timeout it is killed
    assert_eq!(
        s.timers.get(&(0, JobTimer::Kill)),
        Some(&Duration::from_secs(5))
    );
    s.fire("app", JobTimer::Kill);
    assert_eq!(s.killed, vec![("app".to_string(), ProcKind::Exec)]);
    s.exit("app", ProcKind::Exec, false, Duration::from_millis(1));
    assert!(s.jobs[0].is_done());
}

#[test]
fn hook_of_an_already_finished_job_does_not_block_shutdown() {
    let app = job("app");
    let mut pre = job("prestop");
    pre.when = when("app", EventCode::Stopping, true);
    let mut s = Sim::new(vec![app, pre]);
    s.startup();
    s.exit("app", ProcKind::Exec, true, Duration::from_secs(1));
    s.exit("prestop", ProcKind::Exec, true, Duration::from_secs(1));
    assert!(s.jobs[0].is_done());
    s.publish(Event::global(EventCode::Shutdown));
    assert!(s.jobs[1].is_done());
}

#[test]
fn job_without_exec_never_ends_on_its_own_but_stops_on_shutdown() {
    let mut c = job("idle");
    c.exec = None;
    let mut s = Sim::new(vec![c]);
    s.startup();
    assert!(!s.jobs[0].is_done());
    s.publish(Event::global(EventCode::Shutdown));
    assert!(s.jobs[0].is_done());
}

#[test]
fn always_healthy_service_stays_healthy() {
    let mut c = job("containerpilot");
    c.exec = None;
    c.port = 9090;
    c.always_healthy = true;
    c.health = health(false);
    let mut s = Sim::new(vec![c]);
    s.startup();
    assert_eq!(s.jobs[0].status.as_str(), "healthy");
    s.fire("containerpilot", JobTimer::Heartbeat);
    assert_eq!(
        s.catalog,
        vec![("containerpilot".to_string(), Action::Heartbeat)]
    );
    s.publish(Event::global(EventCode::EnterMaintenance));
    s.publish(Event::global(EventCode::ExitMaintenance));
    assert_eq!(s.jobs[0].status.as_str(), "healthy");
}

#[test]
fn all_of_sources_start_once_every_one_has_sent_the_event() {
    let mut c = job("app");
    c.when = when_all(&["db", "cache"], EventCode::StatusHealthy, false);
    let mut s = Sim::new(vec![c]);
    s.startup();
    assert_eq!(s.jobs[0].waiting_for(), ["db", "cache"]);
    s.publish(Event::new(EventCode::StatusHealthy, "cache"));
    s.publish(Event::new(EventCode::StatusUnhealthy, "db"));
    s.publish(Event::new(EventCode::StatusHealthy, "cache"));
    assert_eq!(s.runs("app"), 0, "db has not been healthy yet");
    assert_eq!(s.jobs[0].waiting_for(), ["db"]);
    s.publish(Event::new(EventCode::StatusHealthy, "db"));
    assert_eq!(s.runs("app"), 1);
    assert!(
        s.jobs[0].waiting_for().is_empty(),
        "a started once job waits for nothing"
    );
    s.publish(Event::new(EventCode::StatusHealthy, "db"));
    s.publish(Event::new(EventCode::StatusHealthy, "cache"));
    assert_eq!(s.runs("app"), 1);
    assert_eq!(s.jobs[0].depends_on(), ["db", "cache"]);
}

#[test]
fn all_of_each_needs_a_fresh_event_from_every_source_per_start() {
    let mut c = job("render");
    c.when = when_all(&["watch.a", "watch.b"], EventCode::StatusChanged, true);
    let mut s = Sim::new(vec![c]);
    s.startup();
    let changed = |src: &str| Event::new(EventCode::StatusChanged, src);
    s.publish(changed("watch.a"));
    s.publish(changed("watch.a"));
    assert_eq!(s.runs("render"), 0);
    s.publish(changed("watch.b"));
    assert_eq!(
        s.runs("render"),
        1,
        "the last missing one completes the round"
    );
    s.exit("render", ProcKind::Exec, true, Duration::from_secs(1));
    assert_eq!(
        s.jobs[0].waiting_for(),
        ["watch.a", "watch.b"],
        "a new round"
    );
    s.publish(changed("watch.b"));
    assert_eq!(s.runs("render"), 1);
    s.publish(changed("watch.a"));
    assert_eq!(s.runs("render"), 2);
    assert!(!s.jobs[0].is_done());
}

#[test]
fn a_stop_hook_on_several_jobs_runs_when_all_are_stopping() {
    let mut hook = job("cleanup");
    hook.when = when_all(&["a", "b"], EventCode::Stopping, false);
    let mut s = Sim::new(vec![job("a"), job("b"), hook]);
    s.startup();
    assert_eq!(s.jobs[0].hook.as_deref(), Some("cleanup"));
    assert_eq!(s.jobs[1].hook.as_deref(), Some("cleanup"));
    s.publish(Event::global(EventCode::Shutdown));
    assert_eq!(s.runs("cleanup"), 1);
    s.exit("cleanup", ProcKind::Exec, true, Duration::from_secs(1));
    assert!(s.jobs.iter().all(|j| j.is_done()) || s.running("a") || s.running("b"));
    assert_eq!(s.saw(EventCode::Stopped, "cleanup"), 1);
}

fn cron_job(name: &str, spec: &str) -> JobConfig {
    let mut c = job(name);
    c.when = WhenConfig {
        trigger: Trigger::Cron(CronTrigger {
            schedule: crate::cron::Schedule::parse(spec).unwrap(),
            zone: std::sync::Arc::new(crate::cron::Zone::Utc),
        }),
        timeout: None,
    };
    c
}

#[test]
fn cron_runs_on_the_minute_and_shows_the_next_run() {
    // wall clock starts at 1_796_497_600 s = 2026-12-05T19:06:40Z
    let mut s = Sim::new(vec![cron_job("tick", "*/15 * * * *")]);
    s.startup();
    assert_eq!(s.runs("tick"), 0, "cron jobs do not run at start-up");
    let due = s.jobs[0].next_run.unwrap();
    assert_eq!(crate::cron::rfc3339_utc(due), "2026-12-05T19:15:00Z");
    assert_eq!(
        s.timers.get(&(0, JobTimer::Cron)),
        Some(&Duration::from_millis(500_000))
    );
    // A timer that fires a little early is re-armed for the rest.
    s.wall_ms -= 20;
    s.fire("tick", JobTimer::Cron);
    assert_eq!(s.runs("tick"), 0);
    assert_eq!(
        s.timers.get(&(0, JobTimer::Cron)),
        Some(&Duration::from_millis(20))
    );
    s.fire("tick", JobTimer::Cron);
    assert_eq!(s.runs("tick"), 1);
    assert_eq!(
        crate::cron::rfc3339_utc(s.jobs[0].next_run.unwrap()),
        "2026-12-05T19:30:00Z"
    );
    s.exit("tick", ProcKind::Exec, true, Duration::from_secs(3));
    assert!(!s.jobs[0].is_done(), "a cron job waits for its next minute");
    s.fire("tick", JobTimer::Cron);
    assert_eq!(s.runs("tick"), 2);
    s.publish(Event::global(EventCode::Shutdown));
    assert!(s.jobs[0].next_run.is_none());
    assert!(!s.timers.contains_key(&(0, JobTimer::Cron)));
}

#[test]
fn far_cron_runs_wake_up_hourly_to_recheck_the_clock() {
    let mut s = Sim::new(vec![cron_job("yearly", "@yearly")]);
    assert_eq!(s.timers.get(&(0, JobTimer::Cron)), Some(&CRON_RESYNC));
    s.fire("yearly", JobTimer::Cron);
    assert_eq!(s.runs("yearly"), 0);
    assert_eq!(s.timers.get(&(0, JobTimer::Cron)), Some(&CRON_RESYNC));
}

fn native(mut c: JobConfig) -> JobConfig {
    let mut h = health(false).unwrap();
    h.native = Some(crate::health::Target::Tcp(
        crate::health::TcpTarget::parse("127.0.0.1:9").unwrap(),
    ));
    c.health = Some(h);
    c.port = 8080;
    c
}

#[test]
fn native_checks_publish_what_exec_checks_publish() {
    let mut s = Sim::new(vec![native(job("web"))]);
    s.startup();
    s.fire("web", JobTimer::Heartbeat);
    assert_eq!(s.probes, ["web"]);
    s.fire("web", JobTimer::Heartbeat);
    assert_eq!(s.probes.len(), 1, "never two probes at once");
    s.probe("web", None);
    assert_eq!(s.saw(EventCode::ExitSuccess, "check.web"), 1);
    assert_eq!(s.saw(EventCode::StatusHealthy, "web"), 1);
    assert!(s
        .catalog
        .iter()
        .any(|(n, a)| n == "web" && *a == Action::Heartbeat));
    s.fire("web", JobTimer::Heartbeat);
    s.probe("web", Some("HTTP 500 Internal Server Error"));
    assert_eq!(s.saw(EventCode::ExitFailed, "check.web"), 1);
    assert_eq!(
        s.saw(
            EventCode::Error,
            "check.web: HTTP 500 Internal Server Error"
        ),
        1
    );
    assert_eq!(s.saw(EventCode::StatusUnhealthy, "web"), 1);
    assert_eq!(s.jobs[0].status, Status::Unhealthy);
}

#[test]
fn ending_a_job_drops_its_probe_without_waiting() {
    let mut s = Sim::new(vec![native(job("web"))]);
    s.startup();
    s.fire("web", JobTimer::Heartbeat);
    s.publish(Event::global(EventCode::Shutdown));
    assert_eq!(s.stopped_probes, ["web"]);
    // the exec still runs; once it is gone the job completes
    s.exit("web", ProcKind::Exec, true, Duration::from_secs(1));
    assert!(s.jobs[0].is_done());
    // a late result changes nothing
    s.probe("web", None);
    assert_eq!(s.saw(EventCode::ExitSuccess, "check.web"), 0);
}

fn render_job(name: &str) -> JobConfig {
    let mut c = JobConfig::new(name, None);
    c.render = Some(crate::config::types::RenderConfig {
        template: "t.tmpl".into(),
        dest: "out.conf".into(),
        mode: 0o644,
        source: String::new(),
        reads: vec![],
    });
    c
}

fn signal_job(name: &str, target: &str) -> JobConfig {
    let mut c = JobConfig::new(name, None);
    c.signal = Some(crate::config::types::SignalJobConfig {
        job: target.into(),
        signal: nix::sys::signal::Signal::SIGHUP,
    });
    c
}

#[test]
fn a_render_job_runs_in_the_loop_and_publishes_like_a_process() {
    let mut r = render_job("conf");
    r.when = when("watch.app", EventCode::StatusChanged, true);
    let mut sig = signal_job("reload", "nginx");
    sig.when = when("conf", EventCode::ExitSuccess, true);
    let mut nginx = job("nginx");
    nginx.when = when("conf", EventCode::ExitSuccess, false);
    let mut s = Sim::new(vec![r, sig, nginx]);
    s.startup();
    assert!(s.in_loop.is_empty(), "waits for its trigger");
    // a change: the file is written, the chain runs
    s.publish(Event::new(EventCode::StatusChanged, "watch.app"));
    assert_eq!(s.in_loop, ["conf", "reload"]);
    assert_eq!(s.saw(EventCode::ExitSuccess, "conf"), 1);
    assert_eq!(s.saw(EventCode::ExitSuccess, "reload"), 1);
    assert_eq!(s.runs("nginx"), 1);
    assert!(
        s.spawns.iter().all(|(n, _)| n == "nginx"),
        "no process for render or signal jobs"
    );
    // the same content: nothing published, nothing downstream runs
    s.outcomes.push_back(RunOutcome::Unchanged);
    let before = s.published.len();
    s.publish(Event::new(EventCode::StatusChanged, "watch.app"));
    assert_eq!(s.in_loop, ["conf", "reload", "conf"]);
    assert_eq!(s.published.len(), before, "{:?}", &s.published[before..]);
    // a failure: exitFailed and an error naming the template's place
    s.outcomes.push_back(RunOutcome::Failed(
        "template t.tmpl:3:7: error calling key: boom".into(),
    ));
    s.publish(Event::new(EventCode::StatusChanged, "watch.app"));
    assert_eq!(s.saw(EventCode::ExitFailed, "conf"), 1);
    assert_eq!(
        s.saw(
            EventCode::Error,
            "conf: template t.tmpl:3:7: error calling key: boom"
        ),
        1
    );
    assert_eq!(s.in_loop.len(), 4, "no signal after a failed render");
    // each job keeps waiting for the next change
    assert!(!s.jobs[0].is_done() && !s.jobs[1].is_done());
}

#[test]
fn a_once_render_job_ends_after_its_run_and_can_be_a_stop_hook() {
    let mut app = job("app");
    app.exec = Some(vec!["sleep".into()]);
    let mut hook = render_job("farewell");
    hook.when = when("app", EventCode::Stopping, false);
    let mut s = Sim::new(vec![app, hook]);
    assert_eq!(s.jobs[0].hook.as_deref(), Some("farewell"));
    s.startup();
    assert!(s.running("app"));
    s.publish(Event::new(EventCode::Quit, "app"));
    assert_eq!(s.in_loop, ["farewell"]);
    assert!(s.jobs[1].is_done());
    assert_eq!(s.terminated, [("app".to_string(), ProcKind::Exec)]);

    // a startup render job with restarts and unchanged output still uses them up
    let mut r = render_job("conf");
    r.restarts = Restarts::Count(2);
    let mut s = Sim::new(vec![r]);
    s.outcomes.extend([RunOutcome::Done, RunOutcome::Unchanged]);
    s.startup();
    s.fire("conf", JobTimer::Restart);
    s.fire("conf", JobTimer::Restart);
    assert_eq!(s.in_loop.len(), 3);
    assert_eq!(s.saw(EventCode::ExitSuccess, "conf"), 2);
    assert!(s.jobs[0].is_done(), "it ends as a process job would");
    assert_eq!(s.saw(EventCode::Stopped, "conf"), 1);
}

#[test]
fn a_signal_job_without_a_target_process_fails() {
    let mut sig = signal_job("reload", "nginx");
    sig.when = when("SIGHUP", EventCode::Signal, true);
    sig.when.trigger = Trigger::Signal(SignalName::Sighup);
    let mut s = Sim::new(vec![sig]);
    s.startup();
    s.outcomes.push_back(RunOutcome::Failed(
        "job \"nginx\" has no running process".into(),
    ));
    s.publish(Event::new(EventCode::Signal, "SIGHUP"));
    assert_eq!(s.saw(EventCode::ExitFailed, "reload"), 1);
    assert_eq!(
        s.saw(
            EventCode::Error,
            "reload: job \"nginx\" has no running process"
        ),
        1
    );
    s.publish(Event::new(EventCode::Signal, "SIGHUP"));
    assert_eq!(s.saw(EventCode::ExitSuccess, "reload"), 1);
}

// ----- two jobs with one name (issue 20) -----

#[test]
fn jobs_sharing_a_name_keep_their_own_health_and_restarts() {
    let mut a = job("web");
    a.health = health(true);
    a.restarts = Restarts::Count(1);
    let mut b = job("web");
    b.health = health(true);
    let mut dep = job("dep");
    dep.when = when("web", EventCode::StatusHealthy, true);
    let mut s = Sim::new(vec![a, b, dep]);
    s.startup();
    assert_eq!(s.runs("web"), 2);
    // the second job's check passes: only it turns healthy; a dependent hears it
    let acts = {
        let w = World {
            now: s.now,
            completed: &s.completed,
            stop_timeout: Duration::from_secs(5),
            wall_ms: s.wall_ms,
        };
        s.jobs[1].spawned(ProcKind::Check, 500);
        s.jobs[1].on_exit(ProcKind::Check, None, &w)
    };
    s.apply(1, acts);
    s.pump();
    assert_eq!(s.jobs[1].status, Status::Healthy);
    assert_eq!(s.jobs[0].status, Status::Unknown);
    assert_eq!(s.saw(EventCode::StatusHealthy, "web"), 1);
    assert_eq!(s.runs("dep"), 1);
    // the second job's exec exits: the first one (restarts 1) is not restarted
    // by it, and the second (restarts 0) ends on its own
    let acts = {
        let w = World {
            now: s.now + Duration::from_secs(20),
            completed: &s.completed,
            stop_timeout: Duration::from_secs(5),
            wall_ms: s.wall_ms,
        };
        s.jobs[1].on_exit(ProcKind::Exec, None, &w)
    };
    s.apply(1, acts);
    s.pump();
    assert_eq!(s.runs("web"), 2);
    assert!(s.jobs[1].is_done());
    assert!(!s.jobs[0].is_done());
    assert!(s.jobs[0].exec_pid.is_some());
}

// ----- a job added by a reload (issue 15) -----

fn catch_up(s: &mut Sim, i: usize, past: &Past) {
    let acts = {
        let w = World {
            now: s.now,
            completed: &s.completed,
            stop_timeout: Duration::from_secs(5),
            wall_ms: s.wall_ms,
        };
        s.jobs[i].catch_up(past, &w)
    };
    s.apply(i, acts);
    s.pump();
}

#[test]
fn a_new_once_job_whose_event_already_happened_starts_at_once() {
    let mut past = Past::default();
    past.observe(&Event::new(EventCode::ExitSuccess, "setup"));
    past.observe(&Event::new(EventCode::StatusHealthy, "db"));
    let mut after_setup = job("after-setup");
    after_setup.when = when("setup", EventCode::ExitSuccess, false);
    let mut on_fail = job("on-fail");
    on_fail.when = when("setup", EventCode::ExitFailed, false);
    let mut each = job("each");
    each.when = when("setup", EventCode::ExitSuccess, true);
    let mut after_db = job("after-db");
    after_db.when = when("db", EventCode::StatusHealthy, false);
    let plain = job("plain");
    let mut both = job("both");
    both.when = when_all(&["setup", "cache"], EventCode::ExitSuccess, false);
    let mut s = Sim::new(vec![after_setup, on_fail, each, after_db, plain, both]);
    for i in 0..s.jobs.len() {
        catch_up(&mut s, i, &past);
        // a second catch-up (or the real event later) does not start it again
        catch_up(&mut s, i, &past);
    }
    assert_eq!(s.runs("after-setup"), 1);
    assert_eq!(s.runs("on-fail"), 0);
    assert_eq!(s.runs("each"), 0, "each jobs wait for the next event");
    assert_eq!(s.runs("after-db"), 1);
    assert_eq!(s.runs("plain"), 1, "no when: startup has happened");
    assert_eq!(s.runs("both"), 0, "cache has not succeeded yet");
    s.publish(Event::new(EventCode::ExitSuccess, "setup"));
    assert_eq!(s.runs("after-setup"), 1);
    assert_eq!(s.runs("each"), 1);
    // setup's past success counted for the all-of job: cache completes it
    s.publish(Event::new(EventCode::ExitSuccess, "cache"));
    assert_eq!(s.runs("both"), 1);
}
