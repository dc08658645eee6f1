//! The loop's side of render and signal jobs: runs that happen inside the
//! loop, without a process. A render job renders its template over the
//! environment and what its watches last saw, and writes the file only when
//! the output differs from what it last wrote (the first render after the
//! job starts always writes); a signal job signals another job's process
//! group. The outcome goes back to the job as a [`RunOutcome`].
//!
//! Bounded work: the template is at most 64 KiB and parsed at load, a render
//! runs within `template::Limits::RENDER` (1 MiB of output, 200k steps), and
//! the write is one file of that size plus an fsync.

use super::Runtime;
use crate::catalog::Instance;
use crate::config::template::{self, CatalogData, RefKind, ServiceEntry};
use crate::config::types::RenderConfig;
use crate::jobs::RunOutcome;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// What the last render of a job did (for `/v3/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RenderResult {
    Written,
    Unchanged,
    Failed(String),
}

/// A render job's memory: what it last wrote and how the last run went.
#[derive(Clone, Debug, Default)]
pub(crate) struct RenderMemo {
    /// FNV-1a 64 of the content last written; `None` until the first write,
    /// so the first render after the job starts always counts as a change.
    pub written: Option<u64>,
    pub last: Option<(SystemTime, RenderResult)>,
}

/// FNV-1a, 64 bits: a small, stable content hash (it only tells "same output
/// as last time"; it is not a defence against anyone).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a render came to, before anything is written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// New content (or the job's first render): write it.
    Write { text: String, hash: u64 },
    /// The same content as last written.
    Unchanged,
    /// Why it failed, naming the template's file, line and column.
    Failed(String),
}

/// Renders `r`'s template; `written` is the hash of what the job last wrote.
pub(crate) fn render_step(
    r: &RenderConfig,
    env: &HashMap<String, String>,
    data: &CatalogData,
    written: Option<u64>,
) -> Rendered {
    match template::render_catalog(&r.source, env, data) {
        Err(e) => Rendered::Failed(format!(
            "template {}:{}:{}: {}",
            r.template.display(),
            e.line,
            e.col,
            e.msg
        )),
        Ok(text) => {
            let hash = fnv1a64(text.as_bytes());
            if written == Some(hash) {
                Rendered::Unchanged
            } else {
                Rendered::Write { text, hash }
            }
        }
    }
}

/// Why a signal could not be delivered to a job.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SignalFailure {
    /// No running job of that name.
    NoJob,
    /// The job exists but has no process right now.
    NoProcess,
    Os(nix::Error),
}

/// One instance as a template reads it.
fn entry(i: &Instance) -> ServiceEntry {
    ServiceEntry {
        id: i.id.clone(),
        name: i.name.clone(),
        address: i.address.clone(),
        port: i.port,
        tags: i.tags.clone(),
    }
}

/// Writes `content` to `dest` so that a reader sees the old file or the new
/// one, never a part: a temporary file in the same directory, written and
/// fsynced, then renamed over `dest` (and the directory fsynced, so the
/// rename survives a crash). The directory is created when missing.
pub(crate) fn write_atomic(dest: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    fs::create_dir_all(&dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".cp-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover from a crash of an earlier run of ours is stale.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        // The umask may have taken bits away from `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Runtime {
    /// The catalog data `r`'s template reads, from the watches it names.
    fn catalog_data(&self, r: &RenderConfig) -> CatalogData {
        let mut data = CatalogData::default();
        for read in &r.reads {
            let state = self.watch_state(&read.watch);
            match read.kind {
                RefKind::Service => {
                    let list = state.map(|w| w.instances().iter().map(entry).collect());
                    data.services
                        .insert(read.name.clone(), list.unwrap_or_default());
                }
                RefKind::Key => {
                    let value = state
                        .and_then(|w| w.value())
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                    data.keys.insert(read.name.clone(), value);
                }
            }
        }
        data
    }

    /// Renders job `job`'s template and writes it if it changed.
    fn run_render(&mut self, job: usize, r: &RenderConfig) -> RunOutcome {
        let name = self.jobs[job].name().to_string();
        let env: HashMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let data = self.catalog_data(r);
        let started = Instant::now();
        let memo = self.renders.entry(job).or_default();
        let step = render_step(r, &env, &data, memo.written);
        let step = match step {
            Rendered::Write { text, hash } => {
                match write_atomic(&r.dest, text.as_bytes(), r.mode) {
                    Ok(()) => {
                        memo.written = Some(hash);
                        log::info!(
                            "{name}: wrote {} ({} bytes, fnv1a64 {hash:016x}) in {:?}",
                            r.dest.display(),
                            text.len(),
                            started.elapsed()
                        );
                        Rendered::Write { text, hash }
                    }
                    Err(e) => Rendered::Failed(format!("cannot write {}: {e}", r.dest.display())),
                }
            }
            other => other,
        };
        let (outcome, result) = match step {
            Rendered::Write { .. } => (RunOutcome::Done, RenderResult::Written),
            Rendered::Unchanged => {
                log::debug!("{name}: {} unchanged", r.dest.display());
                (RunOutcome::Unchanged, RenderResult::Unchanged)
            }
            Rendered::Failed(msg) => {
                log::error!("{name} exited with error: {msg}");
                (RunOutcome::Failed(msg.clone()), RenderResult::Failed(msg))
            }
        };
        memo.last = Some((SystemTime::now(), result));
        outcome
    }

    /// Sends `sig` to the process group of job `name`'s running process (what
    /// `POST /v3/signal/<job>` and signal jobs do).
    /// Every job of that name that has not finished is signalled (jobs may
    /// share a name); it fails only when none of them has a process.
    pub(super) fn signal_job(&self, name: &str, sig: Signal) -> Result<(), SignalFailure> {
        let slots: Vec<usize> = self.live_slots(name).collect();
        if slots.is_empty() {
            return Err(SignalFailure::NoJob);
        }
        let pids: Vec<i32> = slots
            .iter()
            .filter_map(|&i| self.jobs[i].exec_pid)
            .collect();
        if pids.is_empty() {
            return Err(SignalFailure::NoProcess);
        }
        for pid in pids {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig)
                .map_err(SignalFailure::Os)?;
        }
        Ok(())
    }

    /// Carries out [`crate::jobs::Action::RunInLoop`] for job `job` and hands
    /// the outcome back to it; returns the job's reaction.
    pub(super) fn run_in_loop(&mut self, job: usize) -> Vec<crate::jobs::Action> {
        let cfg = &self.jobs[job].cfg;
        let outcome = if let Some(r) = cfg.render.clone() {
            self.run_render(job, &r)
        } else if let Some(s) = cfg.signal.clone() {
            let name = self.jobs[job].name().to_string();
            match self.signal_job(&s.job, s.signal) {
                Ok(()) => {
                    log::debug!("{name}: sent {} to {}", s.signal.as_str(), s.job);
                    RunOutcome::Done
                }
                Err(f) => {
                    let why = match f {
                        SignalFailure::NoJob | SignalFailure::NoProcess => {
                            format!("job {:?} has no running process", s.job)
                        }
                        SignalFailure::Os(e) => format!("cannot signal job {:?}: {e}", s.job),
                    };
                    log::error!("{name} exited with error: {why}");
                    RunOutcome::Failed(why)
                }
            }
        } else {
            return Vec::new();
        };
        let world = super::world_at(Instant::now(), &self.completed, self.cfg.stop_timeout);
        self.jobs[job].on_run_done(outcome, &world)
    }

    /// A job (re)installed by a reload starts with no render memory.
    pub(super) fn forget_render(&mut self, job: usize) {
        self.renders.remove(&job);
    }

    /// `/v3/status` details of a render job.
    pub(super) fn render_status(&self, job: usize) -> Option<crate::telemetry::RenderStatus> {
        let r = self.jobs[job].cfg.render.as_ref()?;
        let memo = self.renders.get(&job);
        let last = memo.and_then(|m| m.last.as_ref());
        Some(crate::telemetry::RenderStatus {
            dest: r.dest.display().to_string(),
            last_render: last.map(|(t, _)| {
                let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                crate::logging::rfc3339nano(d.as_secs() as i64, d.subsec_nanos())
            }),
            result: last.map(|(_, r)| match r {
                RenderResult::Written => "written",
                RenderResult::Unchanged => "unchanged",
                RenderResult::Failed(_) => "failed",
            }),
            error: last.and_then(|(_, r)| match r {
                RenderResult::Failed(e) => Some(e.clone()),
                _ => None,
            }),
            hash: memo
                .and_then(|m| m.written)
                .map(|h| format!("fnv1a64:{h:016x}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn temp_dir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cp-render-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn cfg(source: &str) -> RenderConfig {
        RenderConfig {
            template: PathBuf::from("/etc/lb.tmpl"),
            dest: PathBuf::from("/etc/lb.conf"),
            mode: 0o644,
            source: source.to_string(),
            reads: Vec::new(),
        }
    }

    fn app(ports: &[u16]) -> CatalogData {
        let mut d = CatalogData::default();
        let list = ports
            .iter()
            .map(|p| ServiceEntry {
                id: format!("app-{p}"),
                name: "app".into(),
                address: "10.0.0.1".into(),
                port: *p,
                tags: vec![],
            })
            .collect();
        d.services.insert("app".into(), list);
        d.keys.insert("cfg/lb".into(), None);
        d
    }

    /// Render steps fed into a render job: what it publishes each time.
    #[test]
    fn render_job_events() {
        use crate::config::types::JobConfig;
        use crate::events::EventCode;
        use crate::jobs::{Action, Job, World};
        let r = cfg("upstream app {\n{{ range service \"app\" }}  server {{ .Address }}:{{ .Port }};\n{{ end }}}\n{{ if eq (len (service \"app\")) 0 }}\n  {{ key \"cfg/lb\" }}{{ end }}\n");
        let mut job_cfg = JobConfig::new("lb-conf", None);
        job_cfg.render = Some(r.clone());
        let mut job = Job::new(job_cfg.clone(), &[job_cfg]);
        let completed = Default::default();
        let world = World {
            now: Instant::now(),
            completed: &completed,
            stop_timeout: std::time::Duration::from_secs(5),
            wall_ms: 0,
        };
        let env = HashMap::new();
        let mut written = None;
        let mut run = |data: &CatalogData, job: &mut Job| -> Vec<Action> {
            let outcome = match render_step(&r, &env, data, written) {
                Rendered::Write { hash, .. } => {
                    written = Some(hash);
                    RunOutcome::Done
                }
                Rendered::Unchanged => RunOutcome::Unchanged,
                Rendered::Failed(e) => RunOutcome::Failed(e),
            };
            job.on_run_done(outcome, &world)
        };
        let published = |acts: &[Action]| -> Vec<(EventCode, String)> {
            acts.iter()
                .filter_map(|a| match a {
                    Action::Publish(e) => Some((e.code, e.source.clone())),
                    _ => None,
                })
                .collect()
        };
        // the first render after start always counts as a change
        let acts = run(&app(&[8080, 8081]), &mut job);
        assert_eq!(
            published(&acts),
            [(EventCode::ExitSuccess, "lb-conf".to_string())]
        );
        // same instances: no event at all
        let acts = run(&app(&[8080, 8081]), &mut job);
        assert_eq!(published(&acts), []);
        // one gone: a change
        let acts = run(&app(&[8081]), &mut job);
        assert_eq!(
            published(&acts),
            [(EventCode::ExitSuccess, "lb-conf".to_string())]
        );
        // all gone, and the key the template then needs is missing: exitFailed
        // and an error naming the template file, line and column
        let acts = run(&app(&[]), &mut job);
        assert_eq!(
            published(&acts),
            [
                (EventCode::ExitFailed, "lb-conf".to_string()),
                (
                    EventCode::Error,
                    "lb-conf: template /etc/lb.tmpl:5:3: error calling key: key \"cfg/lb\" does not exist (keyOrDefault gives a value for that case)".to_string()
                ),
            ]
        );
        // a failure does not count as written: the same good content again is
        // unchanged, since the file still holds it
        let acts = run(&app(&[8081]), &mut job);
        assert_eq!(published(&acts), []);
    }

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn atomic_write_sets_mode_creates_the_directory_and_leaves_no_temp_file() {
        let d = temp_dir("mode");
        let dest = d.join("sub/dir/out.conf");
        write_atomic(&dest, b"one\n", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "one\n");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&dest, b"two\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "two\n");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let left: Vec<_> = fs::read_dir(d.join("sub/dir")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file itself: {left:?}");
        // a failed write leaves the old file and no temporary behind
        let err = write_atomic(&d.join("sub/dir/out.conf/x"), b"y", 0o644);
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "two\n");
        let _ = fs::remove_dir_all(&d);
    }

    /// A reader that opens the file while it is being replaced again and again
    /// sees one whole version each time, never a mix or a truncated file.
    #[test]
    fn a_concurrent_reader_never_sees_a_partial_file() {
        let d = temp_dir("atomic");
        let dest = d.join("out.conf");
        let versions: Vec<Vec<u8>> = (0..8u8)
            .map(|v| {
                let mut text = vec![b'a' + v; 256 * 1024 + usize::from(v) * 4099];
                text.push(b'\n');
                text
            })
            .collect();
        write_atomic(&dest, &versions[0], 0o644).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dest, stop, versions) = (dest.clone(), stop.clone(), versions.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let got = fs::read(&dest).expect("the file is always there");
                    assert!(
                        versions.contains(&got),
                        "read {} bytes that are no whole version",
                        got.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for round in 0..200 {
            write_atomic(&dest, &versions[round % versions.len()], 0o644).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let reads = reader.join().expect("reader saw only whole files");
        assert!(reads > 10, "the reader ran alongside ({reads} reads)");
        let _ = fs::remove_dir_all(&d);
    }
}
