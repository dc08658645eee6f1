//! `FROM scratch` without Docker: an empty root holding only the static binary, a
//! config and a static helper job, entered with `unshare --pid --fork` + `chroot`,
//! so the daemon is PID 1 with no libc, no shell and no /etc beyond what we write.
//! The binary must be static: a dynamic one fails this test (it could not start in
//! such an image). It runs the shipped static musl build;
//! `CONTAINERPILOT_SCRATCH_BIN` points the test at another binary, to check exactly
//! that a dynamic one fails.

mod common;
mod ns;
use common::*;
use ns::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);

fn install(src: &Path, dst: &Path) {
    std::fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Full path of a host tool, since the daemon's environment is emptied.
fn in_path(tool: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not found"))
}

/// A container runtime gives even a `FROM scratch` image a /dev with the usual
/// device nodes; jobs get /dev/null as stdin, so the root needs it too.
fn make_dev_null(root: &Path) {
    std::fs::create_dir_all(root.join("dev")).expect("mkdir dev");
    let path = std::ffi::CString::new(root.join("dev/null").into_os_string().into_encoded_bytes())
        .expect("path without NUL");
    // SAFETY: mknod(2) with a valid C string; (1, 3) is the null device.
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod dev/null: {}", std::io::Error::last_os_error());
    std::fs::set_permissions(
        root.join("dev/null"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod dev/null");
}

#[test]
fn elf_check_tells_static_from_dynamic() {
    // /bin/sh is dynamic on every distribution this runs on; the helper is static.
    assert_eq!(elf_interpreter(Path::new("/bin/sh")), Ok(true));
    let d = TempDir::new("elf");
    let helper = build_helper(&d.0);
    assert_eq!(elf_interpreter(&helper), Ok(false));
    let txt = d.write("x", "not elf");
    assert!(elf_interpreter(&txt).unwrap_err().contains("not a 64-bit"));
}

#[test]
fn shipped_binary_is_static_with_tls_and_at_most_3_000_000_bytes() {
    let bin = musl_bin();
    let size = std::fs::metadata(&bin).expect("musl binary").len();
    eprintln!("{}: {size} bytes", bin.display());
    assert!(size <= 3_000_000, "{}: {size} bytes", bin.display());
    assert_eq!(
        elf_interpreter(&bin),
        Ok(false),
        "{} is dynamic",
        bin.display()
    );
    // TLS is in every build: the webpki roots are compiled in.
    let bytes = std::fs::read(&bin).expect("read binary");
    let needle = b"ISRG Root X1";
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle),
        "no webpki roots in {}",
        bin.display()
    );
}

#[test]
fn scratch_root_runs_jobs_control_telemetry_reaps_and_stops_fast() {
    if let Some(why) = unshare_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let bin = std::env::var_os("CONTAINERPILOT_SCRATCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(musl_bin);
    let bin = bin.as_path();
    match elf_interpreter(bin) {
        Ok(false) => {}
        Ok(true) => panic!(
            "{} is dynamically linked (it has a program interpreter); a FROM scratch \
             image has no loader or libc, so it must be built static (.cargo/config.toml)",
            bin.display()
        ),
        Err(e) => panic!("{e}"),
    }

    let work = TempDir::new("scratch");
    let root = work.path("root");
    for dir in ["etc", "proc", "out"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    make_dev_null(&root);
    install(bin, &root.join("containerpilot"));
    install(&build_helper(&work.0), &root.join("cp_helper"));
    let port = loopback_port();
    std::fs::write(
        root.join("etc/cp.json5"),
        format!(
            r#"{{
  control: {{ socket: "/cp.sock" }},
  telemetry: {{ port: {port}, interfaces: ["lo"] }},
  jobs: [
    {{ name: "app", exec: ["/cp_helper", "sleep", "60"] }},
    {{ name: "pid", exec: ["/cp_helper", "env", "CONTAINERPILOT_PID", "/out/pid"] }},
    // the binary itself as a job: a control-plane client from inside the root
    {{ name: "setenv", exec: ["/containerpilot", "-config", "/etc/cp.json5", "-putenv", "FROM_JOB=1"] }},
    {{ name: "after", exec: ["/cp_helper", "env", "FROM_JOB", "/out/from_job"],
       when: {{ source: "setenv", once: "exitSuccess" }} }},
    // 200 orphans that outlive their parent by 1 s in their own sessions
    {{ name: "orphans", exec: ["/cp_helper", "orphans", "200", "1000"],
       when: {{ source: "after", once: "exitSuccess" }} }},
  ],
}}"#
        ),
    )
    .expect("write config");

    let mut proc_opt = std::ffi::OsString::from("--mount-proc=");
    proc_opt.push(root.join("proc"));
    let mut cp = Daemon::start_with(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(proc_opt)
            .arg(in_path("chroot"))
            .arg(&root)
            .args(["/containerpilot", "-config", "/etc/cp.json5"])
            .env_clear(),
    );
    let pid = daemon_pid(&mut cp);
    let read = |f: &str| std::fs::read_to_string(root.join("out").join(f)).unwrap_or_default();

    // Jobs start, see the daemon as PID 1, and one job changed the environment of
    // the next through the control socket.
    assert!(
        wait_until(10 * SEC, || read("pid") == "1" && read("from_job") == "1"),
        "pid={:?} from_job={:?}; log:\n{}",
        read("pid"),
        read("from_job"),
        cp.log()
    );

    // The control socket answers the host through the file inside the root.
    let ping =
        containerpilot::http::request_unix(&root.join("cp.sock"), "GET", "/v3/ping", None, 3 * SEC)
            .unwrap_or_else(|e| panic!("ping: {e}; log:\n{}", cp.log()));
    assert_eq!((ping.status, ping.body.as_slice()), (200, &b"ok"[..]));

    // Telemetry on loopback.
    let metrics =
        http_get(port, "/metrics").unwrap_or_else(|e| panic!("metrics: {e}; log:\n{}", cp.log()));
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(metrics.status, 200, "{text}");
    assert!(text.contains("containerpilot_events"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    let status = http_get(port, "/status").unwrap_or_else(|e| panic!("status: {e}"));
    assert_eq!(status.status, 200);
    assert!(String::from_utf8_lossy(&status.body).contains("\"app\""));

    // The orphans are re-parented to the daemon, live a second, and are reaped.
    let mut most = 0;
    assert!(
        wait_until(10 * SEC, || {
            most = most.max(children(pid).len());
            most > 200
        }),
        "the orphans never became the daemon's children (most seen: {most}); log:\n{}",
        cp.log()
    );
    assert!(
        wait_until(10 * SEC, || zombies_of(pid) == 0
            && children(pid).len() == 1),
        "{} zombies and {} children left; log:\n{}",
        zombies_of(pid),
        children(pid).len(),
        cp.log()
    );

    // SIGTERM stops everything and exits 0 in under a second.
    let t = Instant::now();
    kill(pid, SIGTERM);
    let st = cp.wait_exit(10 * SEC);
    let took = t.elapsed();
    assert_eq!(st.and_then(|s| s.code()), Some(0), "log:\n{}", cp.log());
    assert!(took < SEC, "took {took:?}; log:\n{}", cp.log());
    assert!(!root.join("cp.sock").exists(), "control socket left behind");
}
