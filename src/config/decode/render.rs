//! `jobs[].render` and `jobs[].signal`: jobs that run inside the loop instead
//! of starting a process. A render job's template is read and parsed here, so
//! `-validate` reports a missing file, a syntax error, or a `service`/`key`
//! that no watch provides, with the template's file and line; a signal job
//! must name a job that has a process to signal.

use super::control::parse_mode;
use crate::config::json5::Spanned;
use crate::config::reader::{Fields, Reader, NUL_RULE};
use crate::config::template::{self, RefKind, RENDER_MAX_SOURCE};
use crate::config::types::{JobConfig, RenderConfig, RenderRead, SignalJobConfig, WatchConfig};
use std::path::{Path, PathBuf};

const DEFAULT_MODE: u32 = 0o644;

/// A template file, bounded before it is read.
fn read_template(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(RENDER_MAX_SOURCE as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|e| format!("cannot read template {}: {e}", path.display()))?;
    if text.len() > RENDER_MAX_SOURCE {
        return Err(format!(
            "template {} is larger than {RENDER_MAX_SOURCE} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// Why `dest` cannot be written, if it cannot: it must not be a directory, and
/// its directory must exist or be creatable (the nearest existing ancestor is
/// a directory we may write to).
fn dest_problem(dest: &Path) -> Option<String> {
    if dest.is_dir() {
        return Some("is a directory".to_string());
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Some(format!(
                    "its directory cannot be created: {} is not a directory",
                    probe.display()
                ))
            }
            Err(_) => match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => {
                    probe = Path::new(".");
                    break;
                }
            },
        }
    }
    let writable = nix::unistd::access(probe, nix::unistd::AccessFlags::W_OK).is_ok();
    if !writable {
        let what = if probe == dir {
            "its directory".to_string()
        } else {
            format!("{} (to create its directory in)", probe.display())
        };
        return Some(format!("{what} is not writable"));
    }
    None
}

/// The watch that provides `r`: a service watch by name (or consul-template's
/// `tag.name@dc` matched against a watch's name, tag and dc), a key watch by
/// key (on Consul a leading `/` does not count, as for the watch itself).
fn providing_watch<'w>(
    r: &RenderRead,
    watches: &'w [WatchConfig],
    etcd: bool,
) -> Option<&'w WatchConfig> {
    let key_of = |k: &'w str| if etcd { k } else { k.trim_start_matches('/') };
    match r.kind {
        RefKind::Key => {
            let want = if etcd {
                r.name.as_str()
            } else {
                r.name.trim_start_matches('/')
            };
            watches
                .iter()
                .find(|w| w.key.as_deref().map(key_of) == Some(want))
        }
        RefKind::Service => {
            let services = || watches.iter().filter(|w| w.key.is_none());
            if let Some(w) = services().find(|w| w.name == r.name) {
                return Some(w);
            }
            let (rest, dc) = match r.name.split_once('@') {
                Some((rest, dc)) => (rest, Some(dc)),
                None => (r.name.as_str(), None),
            };
            let (tag, name) = match rest.split_once('.') {
                Some((tag, name)) => (Some(tag), name),
                None => (None, rest),
            };
            services().find(|w| w.name == name && w.tag.as_deref() == tag && w.dc.as_deref() == dc)
        }
    }
}

impl Reader<'_, '_> {
    /// `render: {template, dest, mode}`; what the template reads is resolved
    /// later, against the watches ([`Reader::resolve_render_reads`]).
    pub(super) fn render(&mut self, v: &Spanned, path: &str) -> Option<RenderConfig> {
        let f = self.fields(v, path, &["template", "dest", "mode"])?;
        let template = self.path_field(&f, "template");
        let dest = self.path_field(&f, "dest");
        if let Some(d) = &dest {
            if let Some(problem) = dest_problem(d) {
                let msg = format!("cannot write {}: {problem}", d.display());
                self.err(&f.path("dest"), f.line_of("dest"), msg);
            }
        }
        let mut mode = DEFAULT_MODE;
        if let Some(text) = self.string_field(&f, "mode") {
            match parse_mode(&text) {
                Some(m) => mode = m,
                None => {
                    let msg = format!(
                        "invalid mode '{text}': must be octal digits no greater than 0777, like \"0644\""
                    );
                    self.err(&f.path("mode"), f.line_of("mode"), msg);
                }
            }
        }
        let template = template?;
        let at = (f.path("template"), f.line_of("template"));
        let source = match read_template(&template) {
            Ok(s) => s,
            Err(e) => {
                self.err(&at.0, at.1, e);
                return None;
            }
        };
        let refs = match template::catalog_refs(&source) {
            Ok(refs) => refs,
            Err(e) => {
                let msg = format!("{}:{}:{}: {}", template.display(), e.line, e.col, e.msg);
                self.err(&at.0, at.1, msg);
                return None;
            }
        };
        // The watches are bound once they are known.
        let reads = refs
            .into_iter()
            .map(|r| RenderRead {
                kind: r.kind,
                name: r.name,
                line: r.line,
                watch: String::new(),
            })
            .collect();
        Some(RenderConfig {
            template,
            dest: dest?,
            mode,
            source,
            reads,
        })
    }

    /// A required, non-empty path without NUL bytes.
    fn path_field(&mut self, f: &Fields, name: &str) -> Option<PathBuf> {
        let Some(text) = self.string_field(f, name) else {
            if f.get(name).is_none() {
                self.err(&f.path(name), f.line, "is required");
            }
            return None;
        };
        if text.trim().is_empty() {
            self.err(&f.path(name), f.line_of(name), "must not be blank");
            return None;
        }
        if text.contains('\0') {
            self.err(&f.path(name), f.line_of(name), NUL_RULE);
            return None;
        }
        Some(PathBuf::from(text))
    }

    /// `signal: {job, signal}`; the job is checked once every job is known
    /// ([`Reader::check_signal_targets`]).
    pub(super) fn signal_job(&mut self, v: &Spanned, path: &str) -> Option<SignalJobConfig> {
        let f = self.fields(v, path, &["job", "signal"])?;
        let job = self.string_field(&f, "job").unwrap_or_default();
        if job.trim().is_empty() {
            self.err(
                &f.path("job"),
                f.line_of("job"),
                "must name the job to signal",
            );
        }
        let name = self.string_field(&f, "signal").unwrap_or_default();
        let signal = match crate::control::parse_signal(&name) {
            Some(s) => Some(s),
            None if name.is_empty() => {
                self.err(&f.path("signal"), f.line_of("signal"), "is required");
                None
            }
            None => {
                let msg = format!(
                    "unknown signal '{name}' (use SIGHUP, SIGUSR1, SIGUSR2, SIGINT, SIGQUIT, SIGTERM, SIGKILL, SIGALRM, SIGCONT, SIGSTOP, SIGTSTP or SIGWINCH)"
                );
                self.err(&f.path("signal"), f.line_of("signal"), msg);
                None
            }
        };
        if job.trim().is_empty() {
            return None;
        }
        Some(SignalJobConfig {
            job,
            signal: signal?,
        })
    }

    /// Every signal job names another job of this config that runs a process.
    /// `paths[i]` is where `jobs[i]` was read.
    pub(super) fn check_signal_targets(&mut self, jobs: &[JobConfig], paths: &[String]) {
        for (job, path) in jobs.iter().zip(paths) {
            let Some(s) = &job.signal else { continue };
            let problem = match jobs.iter().find(|j| j.name == s.job) {
                None => format!("job '{}' does not exist", s.job),
                Some(t) if t.name == job.name => "a signal job cannot signal itself".to_string(),
                Some(t) if t.exec.is_none() => {
                    format!(
                        "job '{}' has no exec: there is no process to signal",
                        t.name
                    )
                }
                Some(_) => continue,
            };
            self.err(&format!("{path}.signal.job"), job.line, problem);
        }
    }

    /// Binds every `service`/`key` a render template reads to the watch that
    /// provides it (`etcd`: the catalog is etcd, where keys are byte-exact); one no watch provides is an error naming the template's
    /// file and line. `paths[i]` is where `jobs[i]` was read.
    pub(super) fn resolve_render_reads(
        &mut self,
        jobs: &mut [JobConfig],
        paths: &[String],
        watches: &[WatchConfig],
        etcd: bool,
    ) {
        for (job, path) in jobs.iter_mut().zip(paths) {
            let line = job.line;
            let Some(r) = &mut job.render else { continue };
            for read in &mut r.reads {
                match providing_watch(read, watches, etcd) {
                    Some(w) => read.watch = w.name.clone(),
                    None => {
                        let hint = match read.kind {
                            RefKind::Service => format!("add a watch named '{}'", read.name),
                            RefKind::Key => format!("add a watch with key '{}'", read.name),
                        };
                        let msg = format!(
                            "{}:{}: {} \"{}\" is not watched ({hint})",
                            r.template.display(),
                            read.line,
                            read.kind.as_str(),
                            read.name,
                        );
                        self.errors.push(crate::config::reader::ConfigError {
                            path: format!("{path}.render.template"),
                            line: Some(line),
                            msg,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode, LoadEnv};
    use crate::config::json5;
    use crate::config::types::Config;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p =
                std::env::temp_dir().join(format!("cp-render-decode-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn file(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(src: &str) -> Result<Config, Vec<String>> {
        let root = json5::parse(src).unwrap_or_else(|e| panic!("{}", e.render(src)));
        let env = HashMap::new();
        let resolve = |_: &[String]| Err("no interfaces in tests".to_string());
        decode(
            &root,
            &LoadEnv {
                env: &env,
                resolve_ip: &resolve,
            },
        )
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_render_job_reads_its_template_and_binds_its_watches() {
        let d = Dir::new("ok");
        let t = d.file(
            "lb.tmpl",
            "{{ range service \"app\" }}{{ .Address }}{{ end }}\n{{ keyOrDefault \"cfg/lb\" \"\" }}\n{{ service \"primary.db\" }}",
        );
        let dest = d.path("out/conf/lb.conf");
        let c = load(&format!(
            r#"{{
  jobs: [
    {{ name: "lb-conf", render: {{ template: {t:?}, dest: {dest:?}, mode: "0600" }},
       when: {{ source: "watch.app", each: "changed" }} }},
    {{ name: "nginx", exec: "nginx" }},
    {{ name: "reload", signal: {{ job: "nginx", signal: "hup" }} }},
  ],
  watches: [
    {{ name: "app", interval: 5 }},
    {{ name: "lbcfg", key: "cfg/lb", interval: 5 }},
    {{ name: "db", tag: "primary", interval: 5 }},
  ],
}}"#
        ))
        .unwrap();
        let r = c.jobs[0].render.as_ref().unwrap();
        assert_eq!(r.template, Path::new(&t));
        assert_eq!(r.dest, Path::new(&dest));
        assert_eq!(r.mode, 0o600);
        assert!(r.source.starts_with("{{ range service"));
        let reads: Vec<(&str, &str, usize)> = r
            .reads
            .iter()
            .map(|x| (x.name.as_str(), x.watch.as_str(), x.line))
            .collect();
        assert_eq!(
            reads,
            [
                ("app", "app", 1),
                ("cfg/lb", "lbcfg", 2),
                ("primary.db", "db", 3)
            ]
        );
        assert!(c.jobs[0].exec.is_none() && c.jobs[0].runs_in_loop());
        let s = c.jobs[2].signal.as_ref().unwrap();
        assert_eq!(s.job, "nginx");
        assert_eq!(s.signal, nix::sys::signal::Signal::SIGHUP);
        assert!(c.jobs[2].has_work() && !c.jobs[1].runs_in_loop());
        // mode defaults to 0644
        let c = load(&format!(
            r#"{{ jobs: [ {{ name: "x", render: {{ template: {t:?}, dest: {dest:?} }} }} ],
                watches: [ {{ name: "app", interval: 1 }}, {{ name: "lbcfg", key: "cfg/lb", interval: 1 }}, {{ name: "db", tag: "primary", interval: 1 }} ] }}"#
        ))
        .unwrap();
        assert_eq!(c.jobs[0].render.as_ref().unwrap().mode, 0o644);
        // Consul drops a leading `/` from a watched key; etcd keys are exact
        let t2 = d.file("k.tmpl", "{{ key \"/cfg/lb\" }}");
        let src = |catalog: &str| {
            format!(
                r#"{{ {catalog} jobs: [ {{ name: "x", render: {{ template: {t2:?}, dest: {dest:?} }} }} ],
                    watches: [ {{ name: "lbcfg", key: "cfg/lb", interval: 1 }} ] }}"#
            )
        };
        let c = load(&src("consul: \"localhost:8500\",")).unwrap();
        assert_eq!(c.jobs[0].render.as_ref().unwrap().reads[0].watch, "lbcfg");
        let errs = load(&src("etcd: { endpoints: [\"http://127.0.0.1:2379\"] },")).unwrap_err();
        assert!(
            errs[0].contains("key \"/cfg/lb\" is not watched"),
            "{errs:?}"
        );
    }

    #[test]
    fn unwatched_reads_name_the_template_file_and_line() {
        let d = Dir::new("unwatched");
        let t = d.file(
            "t.tmpl",
            "# header\n{{ range service \"app\" }}{{ end }}\n\n{{ key \"cfg/x\" }}",
        );
        let dest = d.path("out.conf");
        let errs = load(&format!(
            "{{\n jobs: [\n {{ name: \"r\",\n render: {{ template: {t:?}, dest: {dest:?} }} }} ],\n watches: [ {{ name: \"other\", interval: 1 }}, {{ name: \"app-key\", key: \"app\", interval: 1 }} ] }}"
        ))
        .unwrap_err();
        assert_eq!(
            errs,
            [
                format!("line 3: jobs[0].render.template: {t}:2: service \"app\" is not watched (add a watch named 'app')"),
                format!("line 3: jobs[0].render.template: {t}:4: key \"cfg/x\" is not watched (add a watch with key 'cfg/x')"),
            ]
        );
    }

    #[test]
    fn template_problems_are_reported_with_their_place() {
        let d = Dir::new("bad");
        let dest = d.path("out.conf");
        let missing = d.path("nope.tmpl");
        let errs = load(&format!(
            "{{ jobs: [ {{ name: \"r\", render: {{ template: {missing:?}, dest: {dest:?} }} }} ] }}"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(&format!(
                "line 1: jobs[0].render.template: cannot read template {missing}: No such file"
            )),
            "{errs:?}"
        );
        let t = d.file("bad.tmpl", "ok\n  {{ if }}\n");
        let errs = load(&format!(
            "{{ jobs: [ {{ name: \"r\", render: {{ template: {t:?}, dest: {dest:?} }} }} ] }}"
        ))
        .unwrap_err();
        assert_eq!(
            errs,
            [format!(
                "line 1: jobs[0].render.template: {t}:2:3: missing value for if"
            )]
        );
        let big = d.file("big.tmpl", &"x".repeat(64 * 1024 + 1));
        let errs = load(&format!(
            "{{ jobs: [ {{ name: \"r\", render: {{ template: {big:?}, dest: {dest:?} }} }} ] }}"
        ))
        .unwrap_err();
        assert!(errs[0].contains("is larger than 65536 bytes"), "{errs:?}");
    }

    #[test]
    fn dest_and_fields_are_checked() {
        let d = Dir::new("dest");
        let t = d.file("t.tmpl", "static\n");
        let file = d.file("plain", "");
        let cases = [
            (
                format!(
                    "render: {{ template: {t:?}, dest: {:?} }}",
                    d.0.display().to_string()
                ),
                "jobs[0].render.dest: cannot write",
                "is a directory",
            ),
            (
                format!(
                    "render: {{ template: {t:?}, dest: {:?} }}",
                    format!("{file}/sub/x.conf")
                ),
                "jobs[0].render.dest: cannot write",
                "is not a directory",
            ),
            (
                format!("render: {{ template: {t:?} }}"),
                "jobs[0].render.dest: is required",
                "",
            ),
            (
                format!("render: {{ dest: {:?} }}", d.path("x")),
                "jobs[0].render.template: is required",
                "",
            ),
            (
                format!(
                    "render: {{ template: {t:?}, dest: {:?}, mode: \"0999\" }}",
                    d.path("x")
                ),
                "jobs[0].render.mode: invalid mode '0999'",
                "",
            ),
            (
                format!(
                    "render: {{ template: {t:?}, dest: {:?}, oops: 1 }}",
                    d.path("x")
                ),
                "jobs[0].render: has invalid keys: oops",
                "",
            ),
            (
                format!(
                    "exec: \"true\", render: {{ template: {t:?}, dest: {:?} }}",
                    d.path("x")
                ),
                "jobs[0]: can have only one of 'exec', 'render' or 'signal'",
                "",
            ),
            (
                "exec: \"true\", signal: { job: \"a\", signal: \"SIGHUP\" }".to_string(),
                "jobs[0]: can have only one of 'exec', 'render' or 'signal'",
                "",
            ),
        ];
        for (body, want, also) in cases {
            let errs = load(&format!(
                "{{ jobs: [ {{ name: \"r\", {body} }}, {{ name: \"a\", exec: \"x\" }} ] }}"
            ))
            .unwrap_err();
            assert!(
                errs.iter().any(|e| e.contains(want) && e.contains(also)),
                "{body}: {errs:?}"
            );
        }
        // a directory that does not exist yet is fine: it is created at render time
        let ok = load(&format!(
            "{{ jobs: [ {{ name: \"r\", render: {{ template: {t:?}, dest: {:?} }} }} ] }}",
            d.path("a/b/c/x.conf")
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn signal_jobs_name_a_job_with_a_process() {
        let cases = [
            (
                "{ job: \"ghost\", signal: \"SIGHUP\" }",
                "jobs[0].signal.job: job 'ghost' does not exist",
            ),
            (
                "{ job: \"s\", signal: \"SIGHUP\" }",
                "jobs[0].signal.job: a signal job cannot signal itself",
            ),
            (
                "{ job: \"idle\", signal: \"SIGHUP\" }",
                "jobs[0].signal.job: job 'idle' has no exec: there is no process to signal",
            ),
            (
                "{ job: \"app\", signal: \"SIGBOGUS\" }",
                "jobs[0].signal.signal: unknown signal 'SIGBOGUS'",
            ),
            ("{ job: \"app\" }", "jobs[0].signal.signal: is required"),
            (
                "{ signal: \"SIGHUP\" }",
                "jobs[0].signal.job: must name the job to signal",
            ),
        ];
        for (sig, want) in cases {
            let errs = load(&format!(
                "{{ jobs: [ {{ name: \"s\", signal: {sig} }}, {{ name: \"app\", exec: \"x\" }}, {{ name: \"idle\", when: {{}} }} ] }}"
            ))
            .unwrap_err();
            assert!(errs.iter().any(|e| e.contains(want)), "{sig}: {errs:?}");
        }
        let c = load(
            "{ jobs: [ { name: \"s\", signal: { job: \"app\", signal: \"SIGUSR1\" } }, { name: \"app\", exec: \"x\" } ] }",
        )
        .unwrap();
        assert_eq!(
            c.jobs[0].signal.as_ref().unwrap().signal,
            nix::sys::signal::Signal::SIGUSR1
        );
    }
}
