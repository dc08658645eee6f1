//! Watches (reference §4, done with blocking queries), pure: one state machine
//! per watch. The runtime asks it for the next query (`start`), hands it the
//! catalog's answer (`on_answer`), publishes the events, writes the log line and
//! arms a timer for the delay that comes back. No I/O, no clock of its own.
//!
//! The query cycle: the first query reads the current state at once; every
//! later one is a blocking query that the catalog holds until something changes
//! after the last index or about [`WAIT`] passes. `interval` is the least time
//! between the starts of two queries of one watch, so a change is seen the
//! moment it happens when the previous query started at least `interval` ago,
//! and a flapping service costs at most one query per `interval`. An index that
//! goes backwards (a restored or wiped catalog) resets the cycle to a plain
//! read; an index of 0 is taken as 1, as Consul's blocking-query notes ask.
//! Errors back off: 1 s, 2 s, 4 s … doubling up to 60 s, never sooner than
//! `interval` after the failed query started; the first failure is logged at
//! WARN, repeats at DEBUG, the recovery at INFO.
//!
//! Service watches keep the passing instances sorted by ID (then address,
//! port, tags); a change is any difference in ID, address, port or tags. Key
//! watches keep the value and its modify index; a change is a different value,
//! the key appearing, or the key going away. The start state is "no instances"
//! / "no key", so a first answer finding nothing is not a change.

use crate::catalog::{Instance, KeyValue, Observation, Snapshot, Target};
use crate::config::types::{LogLevel, WatchConfig};
use crate::events::{Event, EventCode};
use std::time::{Duration, Instant, SystemTime};

/// How long a blocking query may be held (Consul's default; at most this, less
/// a random part of up to [`WAIT_JITTER`] so that many containers started
/// together do not come back together).
pub const WAIT: Duration = Duration::from_secs(300);
pub const WAIT_JITTER: Duration = Duration::from_secs(30);
/// First error back-off, doubled per consecutive error up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The catalog query a watch wants sent now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// 0: a plain read of the current state.
    pub index: u64,
    /// How long the catalog may hold the query; `None` with index 0.
    pub wait: Option<Duration>,
}

/// What an answer leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// In publish order.
    pub events: Vec<Event>,
    /// When to start the next query, from now.
    pub next_in: Duration,
    pub log: Option<(LogLevel, String)>,
}

#[derive(Clone, Debug)]
pub struct WatchState {
    name: String,
    source: String,
    target: Target,
    interval: Duration,
    /// Where the next blocking query waits from; 0 = read without blocking.
    index: u64,
    /// When the last query started.
    started: Option<Instant>,
    in_flight: bool,
    /// Consecutive failed queries.
    failures: u32,
    rng: u64,
    /// Passing instances (service watch), sorted.
    instances: Vec<Instance>,
    /// The key's value (key watch), `None` while it does not exist.
    value: Option<KeyValue>,
    last_change: Option<SystemTime>,
}

/// What a watch config looks at.
pub fn target_of(w: &WatchConfig) -> Target {
    match &w.key {
        Some(key) => Target::Key {
            key: key.clone(),
            dc: w.dc.clone(),
        },
        None => Target::Service {
            name: w.name.clone(),
            tag: w.tag.clone(),
            dc: w.dc.clone(),
        },
    }
}

impl WatchState {
    /// `seed` varies the jitter between watches and runs.
    pub fn new(cfg: &WatchConfig, seed: u64) -> Self {
        WatchState::with_target(&cfg.name, target_of(cfg), cfg.interval, seed)
    }

    pub fn with_target(name: &str, target: Target, interval: Duration, seed: u64) -> Self {
        WatchState {
            name: name.to_string(),
            source: format!("watch.{name}"),
            target,
            interval,
            index: 0,
            started: None,
            in_flight: false,
            failures: 0,
            // xorshift needs a non-zero state
            rng: seed | 1,
            instances: Vec::new(),
            value: None,
            last_change: None,
        }
    }

    /// Whether this state follows what `cfg` describes (a reload keeps it then).
    pub fn watches_same(&self, cfg: &WatchConfig) -> bool {
        self.name == cfg.name && self.target == target_of(cfg) && self.interval == cfg.interval
    }

    /// Its query on the wire was abandoned (a reload): the next `start` sends a
    /// new one, from the index and instances it already knows.
    pub fn abandoned(&mut self) {
        self.in_flight = false;
    }

    /// The query to send now, or `None` while the previous one is on the wire.
    pub fn start(&mut self, now: Instant) -> Option<Query> {
        if self.in_flight {
            return None;
        }
        self.in_flight = true;
        self.started = Some(now);
        let wait = (self.index > 0).then(|| self.next_wait());
        Some(Query {
            index: self.index,
            wait,
        })
    }

    /// The answer to the query on the wire (`wall` stamps a change).
    pub fn on_answer(
        &mut self,
        now: Instant,
        wall: SystemTime,
        result: Result<Observation, String>,
    ) -> Outcome {
        self.in_flight = false;
        let ran = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let rate_limit = self.interval.saturating_sub(ran);
        match result {
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let level = if self.failures == 1 {
                    LogLevel::Warn
                } else {
                    LogLevel::Debug
                };
                Outcome {
                    events: Vec::new(),
                    next_in: rate_limit.max(backoff(self.failures)),
                    log: Some((level, format!("failed to query {}: {e}", self.name))),
                }
            }
            Ok(obs) => {
                let log = (self.failures > 0).then(|| {
                    (
                        LogLevel::Info,
                        format!("watch {}: the catalog answers again", self.name),
                    )
                });
                self.failures = 0;
                self.index = next_index(self.index, obs.index);
                let events = match obs.snapshot {
                    Some(s) => self.apply(s, wall),
                    None => Vec::new(),
                };
                Outcome {
                    events,
                    next_in: rate_limit,
                    log,
                }
            }
        }
    }

    fn apply(&mut self, snapshot: Snapshot, wall: SystemTime) -> Vec<Event> {
        match (snapshot, &self.target) {
            (Snapshot::Instances(mut list), Target::Service { .. }) => {
                list.sort();
                if list == self.instances {
                    return Vec::new();
                }
                self.instances = list;
                self.last_change = Some(wall);
                let status = if self.instances.is_empty() {
                    EventCode::StatusUnhealthy
                } else {
                    EventCode::StatusHealthy
                };
                vec![
                    Event::new(EventCode::StatusChanged, self.source.clone()),
                    Event::new(status, self.source.clone()),
                ]
            }
            (Snapshot::Key(kv), Target::Key { .. }) => {
                let changed =
                    kv.as_ref().map(|k| &k.value) != self.value.as_ref().map(|k| &k.value);
                self.value = kv;
                if !changed {
                    return Vec::new();
                }
                self.last_change = Some(wall);
                vec![Event::new(EventCode::StatusChanged, self.source.clone())]
            }
            // An answer of the other kind cannot come from this watch's lane.
            _ => Vec::new(),
        }
    }

    /// WAIT less a random part of WAIT_JITTER, in whole seconds.
    fn next_wait(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_secs(WAIT.as_secs() - self.rng % WAIT_JITTER.as_secs())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `service` or `key`.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Service { .. } => "service",
            Target::Key { .. } => "key",
        }
    }

    /// The index the next blocking query waits from (0 before the first answer).
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn last_change(&self) -> Option<SystemTime> {
        self.last_change
    }

    /// The passing instances last seen, sorted by ID (service watches).
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn count(&self) -> usize {
        self.instances.len()
    }

    /// The key's current value and modify index (key watches).
    pub fn value(&self) -> Option<&KeyValue> {
        self.value.as_ref()
    }

    /// True while the last query failed.
    pub fn failing(&self) -> bool {
        self.failures > 0
    }
}

/// Consul's rules for the next index: backwards resets to a plain read, 0 is 1.
fn next_index(old: u64, new: u64) -> u64 {
    if new < old {
        0
    } else {
        new.max(1)
    }
}

/// Delay after the `n`th consecutive error (n ≥ 1).
pub fn backoff(n: u32) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1 << n.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn cfg(name: &str, interval: u64) -> WatchConfig {
        WatchConfig {
            name: name.to_string(),
            interval: Duration::from_secs(interval),
            tag: None,
            dc: None,
            key: None,
        }
    }

    fn inst(id: &str, address: &str, port: u16) -> Instance {
        Instance {
            id: id.to_string(),
            name: "db".to_string(),
            address: address.to_string(),
            port,
            tags: Vec::new(),
        }
    }

    fn seen(index: u64, list: Vec<Instance>) -> Result<Observation, String> {
        Ok(Observation {
            index,
            snapshot: Some(Snapshot::Instances(list)),
        })
    }

    fn changed(code: EventCode) -> Vec<Event> {
        vec![
            Event::new(EventCode::StatusChanged, "watch.db"),
            Event::new(code, "watch.db"),
        ]
    }

    fn two() -> Vec<Instance> {
        vec![
            inst("db-a", "10.0.0.1", 5432),
            inst("db-b", "10.0.0.2", 5432),
        ]
    }

    /// A watch and a clock: `answer` runs one query that the catalog answers
    /// after `took`.
    struct Run {
        w: WatchState,
        now: Instant,
    }

    impl Run {
        fn new(interval: u64) -> Run {
            Run {
                w: WatchState::new(&cfg("db", interval), 42),
                now: Instant::now(),
            }
        }

        fn answer(&mut self, took: Duration, r: Result<Observation, String>) -> (Query, Outcome) {
            let q = self.w.start(self.now).expect("no query on the wire");
            self.now += took;
            let out = self.w.on_answer(self.now, SystemTime::UNIX_EPOCH, r);
            (q, out)
        }

        /// As the runtime does: wait for the delay the last outcome asked for.
        fn wait(&mut self, out: &Outcome) {
            self.now += out.next_in;
        }
    }

    #[test]
    fn first_read_is_plain_then_queries_block_from_the_index() {
        let mut r = Run::new(10);
        let (q, out) = r.answer(SEC / 100, seen(7, vec![]));
        assert_eq!(
            q,
            Query {
                index: 0,
                wait: None
            }
        );
        assert_eq!(out.events, vec![], "finding nothing first is not a change");
        assert_eq!(out.next_in, 10 * SEC - SEC / 100, "interval from the start");
        r.wait(&out);
        let (q, _) = r.answer(WAIT, seen(7, vec![]));
        assert_eq!(q.index, 7);
        let wait = q.wait.expect("blocking");
        assert!(wait <= WAIT && wait > WAIT - WAIT_JITTER, "{wait:?}");
        assert_eq!(wait.subsec_nanos(), 0);
        assert_eq!(r.w.index(), 7);
        assert_eq!(r.w.kind(), "service");
    }

    #[test]
    fn jitter_varies_the_wait() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(3, vec![]));
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let (q, _) = r.answer(2 * SEC, seen(3, vec![]));
            waits.insert(q.wait.expect("blocking"));
        }
        assert!(waits.len() > 5, "{waits:?}");
    }

    #[test]
    fn a_long_held_query_that_returns_a_change_is_followed_at_once() {
        let mut r = Run::new(10);
        r.answer(SEC / 100, seen(7, vec![]));
        r.now += 10 * SEC;
        let (_, out) = r.answer(42 * SEC, seen(9, two()));
        assert_eq!(out.events, changed(EventCode::StatusHealthy));
        assert_eq!(out.next_in, Duration::ZERO);
        assert_eq!(r.w.count(), 2);
        assert_eq!(r.w.last_change(), Some(SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn changes_in_quick_succession_are_rate_limited_by_interval() {
        let mut r = Run::new(10);
        r.answer(SEC / 100, seen(7, vec![]));
        r.now += 10 * SEC;
        let (_, out) = r.answer(60 * SEC, seen(8, two()));
        assert_eq!(out.next_in, Duration::ZERO);
        // the next change comes 1 s into the following query: the one after
        // that starts no sooner than 10 s after this one started
        let (_, out) = r.answer(SEC, seen(9, vec![inst("db-a", "10.0.0.1", 5432)]));
        assert_eq!(out.events, changed(EventCode::StatusHealthy));
        assert_eq!(out.next_in, 9 * SEC);
    }

    #[test]
    fn same_instances_in_another_order_are_no_change() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(2, two()));
        let mut reversed = two();
        reversed.reverse();
        let (_, out) = r.answer(SEC, seen(3, reversed));
        assert_eq!(out.events, vec![]);
    }

    #[test]
    fn address_port_id_and_tag_changes_are_changes() {
        let variants = [
            vec![
                inst("db-a", "10.0.0.9", 5432),
                inst("db-b", "10.0.0.2", 5432),
            ],
            vec![
                inst("db-a", "10.0.0.1", 5432),
                inst("db-b", "10.0.0.2", 5433),
            ],
            vec![
                inst("db-a", "10.0.0.1", 5432),
                inst("db-c", "10.0.0.2", 5432),
            ],
            {
                let mut t = two();
                t[1].tags = vec!["primary".into()];
                t
            },
            vec![inst("db-a", "10.0.0.1", 5432)],
        ];
        for v in variants {
            let mut r = Run::new(1);
            r.answer(SEC, seen(2, two()));
            let (_, out) = r.answer(SEC, seen(3, v.clone()));
            assert_eq!(out.events, changed(EventCode::StatusHealthy), "{v:?}");
            assert_eq!(
                r.w.instances(),
                &{
                    let mut s = v;
                    s.sort();
                    s
                }[..]
            );
        }
    }

    #[test]
    fn all_gone_is_changed_unhealthy_then_silent() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(2, two()));
        let (_, out) = r.answer(SEC, seen(3, vec![]));
        assert_eq!(out.events, changed(EventCode::StatusUnhealthy));
        let (_, out) = r.answer(SEC, seen(4, vec![]));
        assert_eq!(out.events, vec![]);
    }

    #[test]
    fn index_going_backwards_resets_to_a_plain_read() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(100, two()));
        let (_, out) = r.answer(SEC, seen(5, two()));
        assert_eq!(out.events, vec![], "the state itself did not change");
        assert_eq!(r.w.index(), 0);
        let (q, _) = r.answer(SEC, seen(6, two()));
        assert_eq!(
            q,
            Query {
                index: 0,
                wait: None
            }
        );
        let (q, _) = r.answer(SEC, seen(6, two()));
        assert_eq!(q.index, 6);
    }

    #[test]
    fn index_zero_is_taken_as_one() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(0, vec![]));
        assert_eq!(r.w.index(), 1);
        let (q, _) = r.answer(SEC, seen(0, vec![]));
        assert_eq!(q.index, 1);
        assert!(q.wait.is_some());
    }

    #[test]
    fn a_quiet_wait_keeps_state_and_index() {
        let mut r = Run::new(1);
        r.answer(SEC, seen(4, two()));
        let (_, out) = r.answer(
            WAIT,
            Ok(Observation {
                index: 4,
                snapshot: None,
            }),
        );
        assert_eq!(out.events, vec![]);
        assert_eq!(out.next_in, Duration::ZERO);
        assert_eq!(r.w.index(), 4);
        assert_eq!(r.w.count(), 2);
    }

    #[test]
    fn one_query_at_a_time() {
        let mut w = WatchState::new(&cfg("db", 1), 1);
        let now = Instant::now();
        assert!(w.start(now).is_some());
        assert_eq!(w.start(now), None);
        w.on_answer(now, SystemTime::UNIX_EPOCH, Err("x".into()));
        assert!(w.start(now).is_some());
    }

    #[test]
    fn errors_back_off_and_log_once_per_state_change() {
        let mut r = Run::new(1);
        r.answer(SEC / 10, seen(4, two()));
        r.now += SEC;
        let mut delays = Vec::new();
        let mut levels = Vec::new();
        for _ in 0..9 {
            let (q, out) = r.answer(SEC / 100, Err("connection refused".into()));
            assert_eq!(q.index, 4, "the index survives errors");
            assert!(out.events.is_empty());
            let (level, text) = out.log.clone().expect("logged");
            assert_eq!(text, "failed to query db: connection refused");
            levels.push(level);
            delays.push(out.next_in.as_secs());
            r.wait(&out);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(levels[0], LogLevel::Warn);
        assert!(levels[1..].iter().all(|l| *l == LogLevel::Debug));
        assert!(r.w.failing());
        let (_, out) = r.answer(SEC / 100, seen(4, two()));
        assert_eq!(
            out.log,
            Some((LogLevel::Info, "watch db: the catalog answers again".into()))
        );
        assert!(out.events.is_empty(), "nothing changed meanwhile");
        assert!(!r.w.failing());
        let (_, out) = r.answer(SEC / 100, seen(5, two()));
        assert_eq!(out.log, None);
    }

    #[test]
    fn back_off_never_beats_the_interval() {
        let mut r = Run::new(10);
        let (_, out) = r.answer(SEC / 100, Err("refused".into()));
        assert_eq!(out.next_in, 10 * SEC - SEC / 100);
        assert_eq!(backoff(1), SEC);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    fn key_run() -> Run {
        let target = Target::Key {
            key: "app/config".into(),
            dc: None,
        };
        Run {
            w: WatchState::with_target("cfg", target, SEC, 9),
            now: Instant::now(),
        }
    }

    fn key(index: u64, v: Option<(&str, u64)>) -> Result<Observation, String> {
        Ok(Observation {
            index,
            snapshot: Some(Snapshot::Key(v.map(|(value, m)| KeyValue {
                value: value.as_bytes().to_vec(),
                modify_index: m,
            }))),
        })
    }

    #[test]
    fn key_set_changed_rewritten_and_deleted() {
        let mut r = key_run();
        let only_changed = vec![Event::new(EventCode::StatusChanged, "watch.cfg")];
        let (_, out) = r.answer(SEC, key(3, None));
        assert_eq!(out.events, vec![], "absent at first is no change");
        assert_eq!(r.w.kind(), "key");
        let (_, out) = r.answer(SEC, key(5, Some(("a=1", 5))));
        assert_eq!(out.events, only_changed, "created");
        assert_eq!(r.w.value().map(|v| v.modify_index), Some(5));
        let (_, out) = r.answer(SEC, key(6, Some(("a=2", 6))));
        assert_eq!(out.events, only_changed, "changed");
        let (_, out) = r.answer(SEC, key(7, Some(("a=2", 7))));
        assert_eq!(out.events, vec![], "same value written again");
        assert_eq!(r.w.value().map(|v| v.modify_index), Some(7));
        let (_, out) = r.answer(SEC, key(9, None));
        assert_eq!(out.events, only_changed, "deleted");
        assert_eq!(r.w.value(), None);
        let (_, out) = r.answer(SEC, key(9, Some(("", 10))));
        assert_eq!(out.events, only_changed, "an empty value is a value");
    }

    #[test]
    fn watches_keep_their_own_state() {
        // Same service, two watches (say different tags): each sees its own history.
        let now = Instant::now();
        let t = SystemTime::UNIX_EPOCH;
        let mut a = WatchState::new(&cfg("db", 1), 1);
        let mut b = WatchState::new(&cfg("db-primary", 1), 2);
        a.start(now);
        b.start(now);
        assert_eq!(
            a.on_answer(now, t, seen(3, two())).events,
            changed(EventCode::StatusHealthy)
        );
        let ev = b.on_answer(now, t, seen(3, vec![inst("db-a", "10.0.0.1", 5432)]));
        assert_eq!(ev.events[0].source, "watch.db-primary");
        assert_eq!(b.count(), 1);
        assert_eq!(a.count(), 2);
    }
}
