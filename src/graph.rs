//! The dependency graph of a config: which event sources exist, sources that
//! name nothing (with the closest existing name), jobs that wait on each other
//! in a cycle and so can never start, and the Graphviz DOT text of `-graph`.
//! Pure functions of a `Config`.

use crate::config::types::{Config, JobConfig, Trigger};
use crate::events::{EventCode, GLOBAL};
use std::collections::BTreeSet;

/// A dependency problem, found on job `job` (its name) at its `when.source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub job: String,
    /// The job's config line (for messages).
    pub line: u32,
    pub msg: String,
}

fn has_check(j: &JobConfig) -> bool {
    j.health
        .as_ref()
        .is_some_and(|h| h.exec.is_some() || h.native.is_some())
}

/// Every source name an event can come from in this config.
fn known_sources(cfg: &Config) -> Vec<String> {
    let mut out = vec![GLOBAL.to_string()];
    for j in &cfg.jobs {
        out.push(j.name.clone());
        if has_check(j) {
            out.push(format!("check.{}", j.name));
        }
    }
    out.extend(cfg.watches.iter().map(|w| w.source()));
    out
}

/// Edit distance with adjacent transpositions counted as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (d[(i - 1) * w + j] + 1)
                    .min(d[i * w + j - 1] + 1)
                    .min(d[(i - 1) * w + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(d[(i - 2) * w + j - 2] + 1);
                }
                v
            };
        }
    }
    d[a.len() * w + b.len()]
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    known
        .iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// The events whose arrival needs the source job to have started: a job
/// waiting for one of these from a job that waits for it never starts.
fn needs_start(code: EventCode) -> bool {
    !matches!(
        code,
        EventCode::Stopping | EventCode::Stopped | EventCode::TimerExpired
    )
}

/// The job a source belongs to: `db` and `check.db` both mean job `db`.
fn source_job(source: &str) -> &str {
    source.strip_prefix("check.").unwrap_or(source)
}

fn unknown_source(cfg: &Config, known: &[String], source: &str) -> String {
    if source.is_empty() {
        return "is missing: 'once' and 'each' need a source (global events like startup come from \"global\")".into();
    }
    if let Some(job) = source.strip_prefix("check.") {
        if cfg.jobs.iter().any(|j| j.name == job) {
            return format!(
                "{source:?}: job {job:?} has no health check (exec, http or tcp), so it sends no check events"
            );
        }
    }
    let mut msg = format!(
        "unknown source {source:?}: no job, watch (watch.<name>), health check (check.<job>) or \"global\" has that name"
    );
    if let Some(near) = closest(source, known) {
        msg.push_str(&format!("; did you mean {near:?}?"));
    }
    msg
}

/// Every dependency problem of a config: unknown sources, and cycles of jobs
/// that each wait for another to have started.
pub fn check(cfg: &Config) -> Vec<Problem> {
    let known = known_sources(cfg);
    let mut out = Vec::new();
    for j in &cfg.jobs {
        let Trigger::Event { sources, .. } = &j.when.trigger else {
            continue;
        };
        for s in sources {
            if !known.contains(s) {
                out.push(Problem {
                    job: j.name.clone(),
                    line: j.line,
                    msg: unknown_source(cfg, &known, s),
                });
            }
        }
    }
    for cycle in cycles(cfg) {
        let first = &cfg.jobs[cycle[0]];
        let mut names: Vec<&str> = cycle.iter().map(|&i| cfg.jobs[i].name.as_str()).collect();
        names.push(&first.name);
        out.push(Problem {
            job: first.name.clone(),
            line: first.line,
            msg: format!(
                "jobs wait for each other and can never start: {}",
                names.join(" -> ")
            ),
        });
    }
    out
}

/// Job indexes `i -> k` where job i cannot start before job k has started.
fn start_edges(cfg: &Config) -> Vec<Vec<usize>> {
    cfg.jobs
        .iter()
        .map(|j| match &j.when.trigger {
            Trigger::Event { code, sources, .. } if needs_start(*code) => sources
                .iter()
                .filter_map(|s| cfg.jobs.iter().position(|k| k.name == source_job(s)))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Each cycle of start dependencies once, as job indexes starting from its
/// lowest index, in the order the jobs wait on each other.
fn cycles(cfg: &Config) -> Vec<Vec<usize>> {
    let edges = start_edges(cfg);
    let mut found: Vec<Vec<usize>> = Vec::new();
    let mut in_cycle = BTreeSet::new();
    for start in 0..edges.len() {
        if in_cycle.contains(&start) {
            continue;
        }
        // Depth-first search for a path back to `start` through higher indexes
        // only, so each cycle is reported from its lowest member.
        let mut stack = vec![(start, 0usize)];
        let mut path = vec![start];
        let mut seen = BTreeSet::from([start]);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            let Some(&to) = edges[node].get(*next) else {
                stack.pop();
                path.pop();
                continue;
            };
            *next += 1;
            if to == start {
                in_cycle.extend(path.iter().copied());
                found.push(path.clone());
                break;
            }
            if to > start && seen.insert(to) {
                stack.push((to, 0));
                path.push(to);
            }
        }
    }
    found
}

fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `-graph`: jobs (boxes), watches (ellipses), global sources and signals
/// (diamonds); an edge from each source to the job it starts, labelled with
/// `once`/`each` and the event. Health-check sources hang off their job.
pub fn dot(cfg: &Config) -> String {
    let mut out = String::from("digraph containerpilot {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut extra: BTreeSet<String> = BTreeSet::new();
    let mut checks: BTreeSet<String> = BTreeSet::new();
    for w in &cfg.watches {
        out.push_str(&format!("  {} [shape=ellipse];\n", q(&w.source())));
    }
    for j in &cfg.jobs {
        let label = match &j.when.trigger {
            Trigger::Cron(c) => format!("{}\ncron {}", j.name, c.schedule.text),
            Trigger::Interval(d) => {
                format!("{}\nevery {}", j.name, crate::config::duration::format(*d))
            }
            _ => j.name.clone(),
        };
        out.push_str(&format!("  {} [label={}];\n", q(&j.name), q(&label)));
    }
    let mut edges = String::new();
    for j in &cfg.jobs {
        let mut edge = |from: &str, label: String| {
            edges.push_str(&format!(
                "  {} -> {} [label={}];\n",
                q(from),
                q(&j.name),
                q(&label)
            ));
        };
        match &j.when.trigger {
            Trigger::Startup | Trigger::Interval(_) => {
                extra.insert(GLOBAL.into());
                edge(GLOBAL, "once startup".into());
            }
            Trigger::Event {
                code,
                sources,
                each,
            } => {
                let kind = if *each { "each" } else { "once" };
                for s in sources {
                    if s.starts_with("check.") {
                        checks.insert(s.clone());
                    } else if !cfg.jobs.iter().any(|k| k.name == *s)
                        && !cfg.watches.iter().any(|w| w.source() == *s)
                    {
                        extra.insert(s.clone());
                    }
                    edge(s, format!("{kind} {}", code.config_name()));
                }
            }
            Trigger::Signal(sig) => {
                extra.insert(sig.as_str().into());
                edge(sig.as_str(), "each signal".into());
            }
            Trigger::Cron(_) | Trigger::Never => {}
        }
    }
    for e in &extra {
        out.push_str(&format!("  {} [shape=diamond];\n", q(e)));
    }
    for c in &checks {
        out.push_str(&format!("  {} [shape=ellipse, style=dashed];\n", q(c)));
        let job = source_job(c);
        if cfg.jobs.iter().any(|j| j.name == job) {
            out.push_str(&format!(
                "  {} -> {} [style=dashed, label=\"health check\"];\n",
                q(job),
                q(c)
            ));
        }
    }
    out.push_str(&edges);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{JobConfig, WatchConfig, WhenConfig};
    use std::time::Duration;

    fn job(name: &str, sources: &[&str], code: EventCode) -> JobConfig {
        let mut j = JobConfig::new(name, Some(vec!["true".into()]));
        j.when = WhenConfig {
            trigger: Trigger::Event {
                code,
                sources: sources.iter().map(|s| s.to_string()).collect(),
                each: false,
            },
            timeout: None,
        };
        j
    }

    fn config(jobs: Vec<JobConfig>) -> Config {
        let mut c = Config::empty(crate::config::types::Compat::V3, Duration::from_secs(5));
        c.jobs = jobs;
        c.watches = vec![WatchConfig {
            name: "consul".into(),
            interval: Duration::from_secs(1),
            tag: None,
            dc: None,
            key: None,
        }];
        c
    }

    #[test]
    fn typos_get_a_suggestion() {
        let c = config(vec![
            JobConfig::new("database", Some(vec!["db".into()])),
            job("app", &["databse", "watch.consl"], EventCode::StatusHealthy),
            job("hook", &["global"], EventCode::Startup),
        ]);
        let p = check(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].msg.starts_with("unknown source \"databse\""),
            "{}",
            p[0].msg
        );
        assert!(
            p[0].msg.ends_with("did you mean \"database\"?"),
            "{}",
            p[0].msg
        );
        assert!(
            p[1].msg.ends_with("did you mean \"watch.consul\"?"),
            "{}",
            p[1].msg
        );
        let far = check(&config(vec![job("a", &["zzzzzz"], EventCode::Stopped)]));
        assert!(!far[0].msg.contains("did you mean"), "{}", far[0].msg);
        let nocheck = check(&config(vec![
            JobConfig::new("db", None),
            job("a", &["check.db"], EventCode::ExitSuccess),
        ]));
        assert!(
            nocheck[0].msg.contains("has no health check"),
            "{:?}",
            nocheck
        );
        let empty = check(&config(vec![job("a", &[""], EventCode::Startup)]));
        assert!(empty[0].msg.contains("is missing"), "{:?}", empty);
    }

    #[test]
    fn cycles_that_can_never_start() {
        let c = config(vec![
            job("a", &["c"], EventCode::StatusHealthy),
            job("b", &["a"], EventCode::ExitSuccess),
            job("c", &["b", "global"], EventCode::ExitSuccess),
            job("self", &["self"], EventCode::ExitFailed),
            // stop hooks wait on `stopping`, which comes without a start
            job("h1", &["h2"], EventCode::Stopping),
            job("h2", &["h1"], EventCode::ExitSuccess),
        ]);
        let p = check(&c);
        let msgs: Vec<&str> = p.iter().map(|p| p.msg.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "jobs wait for each other and can never start: a -> c -> b -> a",
                "jobs wait for each other and can never start: self -> self",
            ]
        );
    }

    #[test]
    fn distance_counts_transpositions_once() {
        assert_eq!(distance("wtach", "watch"), 1);
        assert_eq!(distance("db", "dbb"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn dot_output() {
        let mut web = job("web", &["db", "check.db"], EventCode::StatusHealthy);
        web.when.trigger = match web.when.trigger {
            Trigger::Event { code, sources, .. } => Trigger::Event {
                code,
                sources,
                each: true,
            },
            t => t,
        };
        let c = config(vec![
            JobConfig::new("db", Some(vec!["db".into()])),
            web,
            job("say \"hi\"", &["watch.consul"], EventCode::StatusChanged),
        ]);
        let d = dot(&c);
        assert!(d.starts_with("digraph containerpilot {\n"), "{d}");
        assert!(
            d.contains("  \"global\" -> \"db\" [label=\"once startup\"];\n"),
            "{d}"
        );
        assert!(
            d.contains("  \"db\" -> \"web\" [label=\"each healthy\"];\n"),
            "{d}"
        );
        assert!(
            d.contains("  \"check.db\" -> \"web\" [label=\"each healthy\"];\n"),
            "{d}"
        );
        assert!(d.contains("  \"db\" -> \"check.db\" [style=dashed"), "{d}");
        assert!(
            d.contains("  \"watch.consul\" -> \"say \\\"hi\\\"\" [label=\"once changed\"];\n"),
            "{d}"
        );
        assert!(d.ends_with("}\n"));
    }
}
