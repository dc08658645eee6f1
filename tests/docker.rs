//! The image users run, under a real Docker daemon. Each test builds the image as
//! `make image` does (Dockerfile.scratch's `prebuilt` stage: the host-built static
//! musl binary in `FROM scratch`, no network) and, where a job needs a shell, a
//! layer on top with Debian's busybox-static, the static test helper and a config.
//!
//! Skipping: with no Docker daemon answering, the tests start `dockerd` themselves
//! when it is installed, we are root and DOCKER_HOST is not set (.ci/run starts it
//! first). If there is
//! still none, each test prints "skipped: <why>" and passes — unless
//! `CONTAINERPILOT_REQUIRE_DOCKER=1` (.ci/run sets it) or `CI` is set to anything
//! but `false`/`0`, when it fails with that reason: CI never skips them.

mod common;
mod ns;
use common::*;
use ns::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// `docker ARGS` with a time bound: (exit code, stdout, stderr); -1 when it was
/// killed at the bound or could not run.
fn docker(args: &[&str], limit: Duration) -> (i32, String, String) {
    let child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (-1, String::new(), format!("cannot run docker: {e}")),
    };
    let collect = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = collect(child.stdout.take().map(|r| Box::new(r) as _));
    let err = collect(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code().unwrap_or(-1),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
        }
    };
    let mut err = err.join().unwrap_or_default();
    if code == -1 && start.elapsed() >= limit {
        err.push_str(&format!("\n(docker {args:?} killed after {limit:?})"));
    }
    (code, out.join().unwrap_or_default(), err)
}

/// `docker ARGS` that must succeed; its trimmed stdout.
fn docker_ok(args: &[&str]) -> String {
    let (code, out, err) = docker(args, 120 * SEC);
    assert_eq!(code, 0, "docker {args:?} failed:\n{out}{err}");
    out.trim().to_string()
}

fn daemon_answers() -> Result<(), String> {
    match docker(&["version", "--format", "{{.Server.Version}}"], 20 * SEC) {
        (0, _, _) => Ok(()),
        (_, out, err) => Err(format!("{}{}", out.trim(), err.trim())),
    }
}

fn in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether a Docker daemon answers, starting one if we can; the reason if not.
fn docker_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            if in_path("docker").is_none() {
                return Err("no `docker` command (Debian: apt-get install docker.io)".into());
            }
            let first = match daemon_answers() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(host) = std::env::var_os("DOCKER_HOST").filter(|h| !h.is_empty()) {
                return Err(format!(
                    "no Docker daemon answers at DOCKER_HOST={} ({first})",
                    host.to_string_lossy()
                ));
            }
            let Some(dockerd) = in_path("dockerd") else {
                return Err(format!(
                    "no Docker daemon answers ({first}) and dockerd is not installed"
                ));
            };
            // SAFETY: geteuid(2) has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err(format!(
                    "no Docker daemon answers ({first}) and starting dockerd needs root"
                ));
            }
            let log = std::env::temp_dir().join("containerpilot-tests-dockerd.log");
            eprintln!(
                "no Docker daemon answers; starting {} (log: {})",
                dockerd.display(),
                log.display()
            );
            let spawned = std::fs::File::create(&log).and_then(|f| {
                let f2 = f.try_clone()?;
                // Its own process group: it outlives this test process on purpose,
                // as a system daemon would.
                Command::new(&dockerd)
                    .stdin(Stdio::null())
                    .stdout(f)
                    .stderr(f2)
                    .process_group(0)
                    .spawn()
            });
            if let Err(e) = spawned {
                return Err(format!(
                    "no Docker daemon answers ({first}); cannot start dockerd: {e}"
                ));
            }
            let mut last = first;
            let start = Instant::now();
            while start.elapsed() < 60 * SEC {
                match daemon_answers() {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            Err(format!(
                "dockerd was started but does not answer ({last}); its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        })
        .clone()
}

fn required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CONTAINERPILOT_REQUIRE_DOCKER") || set("CI")
}

/// True when the test can go on; otherwise says why it is skipped, or fails when
/// Docker is required.
fn docker_or_skip() -> bool {
    match docker_ready() {
        Ok(()) => true,
        Err(why) if required() => {
            panic!("Docker is required here (CONTAINERPILOT_REQUIRE_DOCKER or CI) but: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Images and containers of one test, removed on drop. Images are built with
/// --no-cache so that no two tests share a layer: removing one test's image
/// must not pull a cached parent from under another test's build.
struct Scene {
    dir: TempDir,
    tag: String,
    images: Vec<String>,
    containers: Vec<String>,
}

impl Scene {
    fn new(name: &str) -> Scene {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Scene {
            dir: TempDir::new(&format!("docker-{name}")),
            tag: format!("containerpilot-test-{name}-{}-{n}", std::process::id()),
            images: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// The shipped image: Dockerfile.scratch's `prebuilt` stage, from a context
    /// laid out like the repository (with its .dockerignore).
    fn shipped_image(&mut self) -> String {
        let ctx = self.dir.path("ctx");
        let put = |rel: &str, from: &Path| {
            let to = ctx.join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
        };
        let repo = Path::new(MANIFEST);
        put("Dockerfile.scratch", &repo.join("Dockerfile.scratch"));
        put(".dockerignore", &repo.join(".dockerignore"));
        put(
            "tests/fixtures/scratch.json5",
            &repo.join("tests/fixtures/scratch.json5"),
        );
        put(
            &format!("target/{MUSL}/release/containerpilot"),
            &musl_bin(),
        );
        let tag = format!("{}-shipped", self.tag);
        let ctx = ctx.display().to_string();
        docker_ok(&[
            "build",
            "-q",
            "--no-cache",
            "-f",
            &format!("{ctx}/Dockerfile.scratch"),
            "--target",
            "prebuilt",
            "-t",
            &tag,
            &ctx,
        ]);
        self.images.push(tag.clone());
        tag
    }

    /// The shipped image plus /bin/busybox (Debian's busybox-static), /cp_helper
    /// and `config` as /etc/containerpilot.json5.
    fn image_with_shell(&mut self, config: &str) -> String {
        let base = self.shipped_image();
        let ctx = self.dir.path("ctx2");
        std::fs::create_dir_all(&ctx).expect("mkdir");
        let busybox = in_path("busybox")
            .expect("busybox is needed in the image (Debian: apt-get install busybox-static)");
        assert_eq!(
            elf_interpreter(&busybox),
            Ok(false),
            "{} is dynamic: install busybox-static, a FROM scratch image has no libc",
            busybox.display()
        );
        std::fs::copy(&busybox, ctx.join("busybox")).expect("copy busybox");
        build_helper(&ctx);
        std::fs::write(ctx.join("cp.json5"), config).expect("write config");
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {base}\nCOPY busybox /bin/busybox\nCOPY cp_helper /cp_helper\n\
                 COPY cp.json5 /etc/containerpilot.json5\n"
            ),
        )
        .expect("write Dockerfile");
        let tag = format!("{}-shell", self.tag);
        docker_ok(&[
            "build",
            "-q",
            "--no-cache",
            "-t",
            &tag,
            &ctx.display().to_string(),
        ]);
        self.images.push(tag.clone());
        tag
    }

    /// `docker run -d` with `args` after the image; the container id.
    fn run(&mut self, image: &str, args: &[&str]) -> String {
        let mut all = vec!["run", "-d", image];
        all.extend_from_slice(args);
        let id = docker_ok(&all);
        self.containers.push(id.clone());
        id
    }

    fn logs(&self, id: &str) -> String {
        let (_, out, err) = docker(&["logs", id], 30 * SEC);
        out + &err
    }

    fn expect_logs(&self, id: &str, needle: &str, within: Duration) {
        if !wait_until(within, || self.logs(id).contains(needle)) {
            panic!("{needle:?} never reached `docker logs`:\n{}", self.logs(id));
        }
    }

    /// `docker exec id /containerpilot ARGS`: (code, stdout + stderr).
    fn cp(&self, id: &str, args: &[&str]) -> (i32, String) {
        let mut all = vec!["exec", id, "/containerpilot"];
        all.extend_from_slice(args);
        let (code, out, err) = docker(&all, 30 * SEC);
        (code, out + &err)
    }

    fn inspect(&self, id: &str, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, id])
    }

    /// The exit code once the container has stopped (`docker wait`).
    fn wait(&self, id: &str) -> i32 {
        let code = docker_ok(&["wait", id]);
        code.parse()
            .unwrap_or_else(|_| panic!("docker wait said {code:?}"))
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c], 30 * SEC);
        }
        for i in self.images.iter().rev() {
            let _ = docker(&["rmi", "-f", i], 30 * SEC);
        }
    }
}

#[test]
fn shipped_image_runs_and_answers_docker_exec() {
    if !docker_or_skip() {
        return;
    }
    let mut s = Scene::new("shipped");
    let image = s.shipped_image();
    assert!(
        s.inspect(&image, "{{json .Config.Env}}")
            .contains("CONTAINERPILOT=/etc/containerpilot.json5"),
        "image environment lacks CONTAINERPILOT"
    );
    let id = s.run(&image, &[]);
    s.expect_logs(
        &id,
        "control: serving at /var/run/containerpilot.socket",
        10 * SEC,
    );

    // No -config: the image's CONTAINERPILOT names it, as its comment promises.
    assert_eq!(s.cp(&id, &["-ping"]), (0, "ok\n".to_string()));
    let (code, status) = s.cp(&id, &["-status"]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("heartbeat"), "{status}");
    let (code, out) = s.cp(&id, &["-putenv", "FROM_EXEC=1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.inspect(&id, "{{.State.Running}}"), "true");

    let t = Instant::now();
    docker_ok(&["stop", &id]);
    let took = t.elapsed();
    assert_eq!(
        s.inspect(&id, "{{.State.ExitCode}}"),
        "0",
        "{}",
        s.logs(&id)
    );
    assert!(took < 2 * SEC, "docker stop took {took:?}");
    eprintln!("docker stop took {took:?}");
}

#[test]
fn job_output_putenv_and_stop_hooks_under_docker() {
    if !docker_or_skip() {
        return;
    }
    let mut s = Scene::new("jobs");
    let image = s.image_with_shell(
        r#"{
  control: { socket: "/var/run/containerpilot.socket" },
  stopTimeout: 5,
  jobs: [
    { name: "app",
      exec: ["/bin/busybox", "sh", "-c",
             "echo app is up; trap 'echo app got SIGTERM; exit 0' TERM; while true; do /bin/busybox sleep 1 & wait $!; done"] },
    { name: "printer", exec: ["/bin/busybox", "sh", "-c", "echo GREETING is ${GREETING:-unset}"],
      when: { interval: "1s" } },
    { name: "goodbye", exec: ["/bin/busybox", "sh", "-c", "echo stop hook ran"],
      when: { source: "app", once: "stopping" } },
  ],
}"#,
    );
    let id = s.run(&image, &[]);
    // Job output reaches `docker logs` as `<time> <job> <pid> <line>`.
    s.expect_logs(&id, "GREETING is unset", 10 * SEC);
    let logs = s.logs(&id);
    let line = logs
        .lines()
        .find(|l| l.ends_with(" app is up"))
        .unwrap_or_else(|| panic!("no app line:\n{logs}"));
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[1], "app", "{line}");
    assert!(f[2].parse::<u32>().is_ok(), "{line}");

    let (code, out) = s.cp(&id, &["-putenv", "GREETING=hello"]);
    assert_eq!(code, 0, "{out}");
    s.expect_logs(&id, "GREETING is hello", 10 * SEC);

    let t = Instant::now();
    docker_ok(&["stop", &id]);
    let took = t.elapsed();
    let logs = s.logs(&id);
    assert_eq!(s.inspect(&id, "{{.State.ExitCode}}"), "0", "{logs}");
    assert!(took < 2 * SEC, "docker stop took {took:?}\n{logs}");
    assert!(
        logs.contains("goodbye") && logs.contains("stop hook ran"),
        "{logs}"
    );
    assert!(logs.contains("app got SIGTERM"), "{logs}");
    // The hook ran before the application was stopped.
    let hook = logs.find("stop hook ran").unwrap_or(0);
    let term = logs.find("app got SIGTERM").unwrap_or(0);
    assert!(hook < term, "{logs}");
}

#[test]
fn shim_exit_codes_reach_docker_inspect() {
    if !docker_or_skip() {
        return;
    }
    let mut s = Scene::new("shim");
    let image = s.image_with_shell(
        r#"{ control: { socket: "/var/run/containerpilot.socket" },
             jobs: [ { name: "side", exec: ["/bin/busybox", "sleep", "60"] } ] }"#,
    );
    for (script, want) in [("exit 3", 3), ("kill -9 $$", 137), ("exit 0", 0)] {
        let id = s.run(
            &image,
            &[
                "/bin/busybox",
                "sh",
                "-c",
                &format!("/bin/busybox sleep 1; {script}"),
            ],
        );
        let code = s.wait(&id);
        assert_eq!(code, want, "{script}:\n{}", s.logs(&id));
        assert_eq!(s.inspect(&id, "{{.State.ExitCode}}"), want.to_string());
    }
}

#[test]
fn orphans_are_reaped_in_the_container() {
    if !docker_or_skip() {
        return;
    }
    let mut s = Scene::new("orphans");
    let image = s.image_with_shell(
        r#"{ control: { socket: "/var/run/containerpilot.socket" },
             jobs: [
               { name: "app", exec: ["/bin/busybox", "sleep", "600"] },
               // 100 orphans in their own sessions that outlive their parent by 1 s
               { name: "orphans", exec: ["/cp_helper", "orphans", "100", "1000"] },
             ] }"#,
    );
    let id = s.run(&image, &[]);
    let pid: i32 = s
        .inspect(&id, "{{.State.Pid}}")
        .parse()
        .expect("container pid");
    // From the host: the orphans become children of the daemon (the container's
    // PID 1), then no zombie is left and only the app remains.
    let mut most = 0;
    assert!(
        wait_until(10 * SEC, || {
            most = most.max(children(pid).len());
            most > 100
        }),
        "the orphans never became the daemon's children (most seen: {most}):\n{}",
        s.logs(&id)
    );
    assert!(
        wait_until(10 * SEC, || zombies_of(pid) == 0
            && children(pid).len() == 1),
        "{} zombies and {} children left:\n{}",
        zombies_of(pid),
        children(pid).len(),
        s.logs(&id)
    );
    // And from inside: no process in state Z.
    let (code, ps, _) = docker(
        &["exec", &id, "/bin/busybox", "ps", "-o", "pid,stat,comm"],
        30 * SEC,
    );
    assert_eq!(code, 0, "{ps}");
    assert!(
        !ps.lines().skip(1).any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|st| st.starts_with('Z'))),
        "{ps}"
    );
    docker_ok(&["stop", &id]);
    assert_eq!(s.inspect(&id, "{{.State.ExitCode}}"), "0");
}
