//! Starting job processes and turning their output into log lines. Policy (when,
//! what, how often) lives in `jobs`; this module only does the OS work.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::users::Identity;

pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

#[derive(Debug)]
pub struct SpawnError(pub String);

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpawnError {}

/// Start `argv` in a new process group with stdin from /dev/null and exactly `env`.
/// With `raw`, the child writes straight to our stdout/stderr; otherwise both
/// streams come back as non-blocking pipes. With `user`, the child runs with
/// that uid, gid and supplementary groups, and `HOME` (and `USER`/`LOGNAME`
/// when the user has a name) from its passwd entry.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    raw: bool,
    user: Option<&Identity>,
) -> Result<Spawned, SpawnError> {
    let Some(prog) = argv.first() else {
        return Err(SpawnError("received zero-length argument".into()));
    };
    let mut cmd = Command::new(prog);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(empty_stdin()?)
        .process_group(0);
    if let Some(id) = user {
        switch_user(&mut cmd, id);
    }
    if raw {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(prog, &e))?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    for fd in stdout.iter().chain(stderr.iter()) {
        set_nonblocking(fd).map_err(|e| SpawnError(format!("{prog}: {e}")))?;
    }
    // Dropping `child` neither waits nor kills: the loop reaps every pid itself.
    drop(child);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// Drop to `id` in the child between fork and exec. Done by hand because the
/// standard library cannot set supplementary groups, and groups must be set
/// while the child is still root.
fn switch_user(cmd: &mut Command, id: &Identity) {
    cmd.env("HOME", id.home.as_deref().unwrap_or("/"));
    if let Some(name) = &id.name {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    let groups: Vec<libc::gid_t> = id.groups.clone();
    let (uid, gid) = (id.uid, id.gid);
    // SAFETY: the closure runs in the forked child and only makes the
    // async-signal-safe calls setgroups, setgid and setuid on data prepared
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// stdin for a job: /dev/null, or, in a root without /dev (a bare scratch
/// image), an empty pipe, which reads as end-of-file just the same.
fn empty_stdin() -> Result<Stdio, SpawnError> {
    if std::path::Path::new("/dev/null").exists() {
        return Ok(Stdio::null());
    }
    let (r, w) =
        nix::unistd::pipe().map_err(|e| SpawnError(format!("cannot create stdin pipe: {e}")))?;
    drop(w);
    Ok(Stdio::from(r))
}

/// Go's wording, which 3.8 users see in `error` events and logs.
fn spawn_error(prog: &str, e: &io::Error) -> SpawnError {
    if e.kind() == io::ErrorKind::NotFound {
        if prog.contains('/') {
            SpawnError(format!("fork/exec {prog}: no such file or directory"))
        } else {
            SpawnError(format!(
                "exec: \"{prog}\": executable file not found in $PATH"
            ))
        }
    } else if e.kind() == io::ErrorKind::PermissionDenied {
        SpawnError(format!("fork/exec {prog}: permission denied"))
    } else {
        SpawnError(format!("fork/exec {prog}: {e}"))
    }
}

/// Mark every descriptor we inherited above stderr close-on-exec, so jobs do not
/// receive whatever our parent left open (a lock file, a socket). Go's runtime,
/// which 3.8 used, never passed them on either.
pub fn cloexec_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: walk the usual range instead.
    for fd in 3..4096 {
        // SAFETY: fcntl on a descriptor number; EBADF for unused ones is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CONTAINERPILOT_<NAME>_PID` name part: basename, extension dropped,
/// non-alphanumerics to `_`, runs of `_` collapsed, upper case.
pub fn env_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = match base.rfind('.') {
        Some(i) if i > 0 => &base[..i],
        _ => base,
    };
    let mut out = String::with_capacity(stem.len());
    for c in stem.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// How a reaped process ended, in Go's `exec.ExitError` words; `None` = success.
pub fn exit_error(status: nix::sys::wait::WaitStatus) -> Option<String> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, 0) => None,
        WaitStatus::Exited(_, c) => Some(format!("exit status {c}")),
        WaitStatus::Signaled(_, sig, _) => Some(format!("signal: {}", signal_words(sig))),
        _ => Some("exit status -1".into()),
    }
}

/// The shell's convention for a process's exit code: N, or 128+N for signal N.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> i32 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    }
}

fn signal_words(sig: nix::sys::signal::Signal) -> &'static str {
    use nix::sys::signal::Signal::*;
    match sig {
        SIGKILL => "killed",
        SIGTERM => "terminated",
        SIGINT => "interrupt",
        SIGHUP => "hangup",
        SIGQUIT => "quit",
        SIGABRT => "aborted",
        SIGSEGV => "segmentation fault",
        SIGPIPE => "broken pipe",
        SIGUSR1 => "user defined signal 1",
        SIGUSR2 => "user defined signal 2",
        SIGBUS => "bus error",
        SIGFPE => "floating point exception",
        SIGILL => "illegal instruction",
        SIGALRM => "alarm clock",
        _ => "unknown signal",
    }
}

/// Longest line we log in one piece; longer lines are split, never dropped.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines (without the newline). Bytes that are not
/// UTF-8 are replaced, so one bad byte never loses a line.
#[derive(Default, Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8], out: &mut Vec<String>) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            self.emit(out);
            rest = &rest[i + 1..];
        }
        self.buf.extend_from_slice(rest);
        while self.buf.len() >= MAX_LINE {
            let tail = self.buf.split_off(MAX_LINE);
            self.emit(out);
            self.buf = tail;
        }
    }

    /// End of stream: the last line counts even without a newline.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            self.emit(out);
        }
    }

    fn emit(&mut self, out: &mut Vec<String>) {
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if line.ends_with('\r') {
            line.pop();
        }
        out.push(line);
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_3_8() {
        assert_eq!(env_name("consul-agent"), "CONSUL_AGENT");
        assert_eq!(env_name("check.app"), "CHECK");
        assert_eq!(env_name("/usr/bin/my--Tool.sh"), "MY_TOOL");
        assert_eq!(env_name("MixedCase"), "MIXEDCASE");
        assert_eq!(env_name("a b--c"), "A_B_C");
    }

    #[test]
    fn splitter_keeps_every_byte() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"one\ntw", &mut out);
        s.push(b"o\r\nthree", &mut out);
        assert_eq!(out, ["one", "two"]);
        s.finish(&mut out);
        assert_eq!(out, ["one", "two", "three"]);
    }

    #[test]
    fn long_lines_are_split_not_lost() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_LINE * 2 + 10];
        s.push(&big, &mut out);
        s.push(b"\n", &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter().map(|l| l.len()).sum::<usize>(),
            MAX_LINE * 2 + 10
        );
    }

    #[test]
    fn spawn_as_another_user() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let id = Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
            name: Some("nobody".into()),
            home: None,
        };
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), "/usr/bin:/bin".to_string());
        env.insert("HOME".to_string(), "/root".to_string());
        let argv: Vec<String> = ["sh", "-c", "echo $(id -u) $(id -g) $(id -G) $HOME $USER"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sp = spawn(&argv, &env, false, Some(&id)).unwrap();
        // The line fits the pipe, so the child exits before we read.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(sp.pid), None);
        let mut out = String::new();
        let mut f = std::fs::File::from(sp.stdout.unwrap());
        let _ = std::io::Read::read_to_string(&mut f, &mut out);
        assert_eq!(out.trim(), "65534 65534 65534 4242 / nobody");
    }

    #[test]
    fn spawn_reports_missing_binaries_like_go() {
        let env = BTreeMap::new();
        let e = spawn(&["/nonexistent/x".into()], &env, false, None)
            .err()
            .map(|e| e.0);
        assert_eq!(
            e.as_deref(),
            Some("fork/exec /nonexistent/x: no such file or directory")
        );
        let e = spawn(&["no-such-prog-xyz".into()], &env, false, None)
            .err()
            .map(|e| e.0);
        assert_eq!(
            e.as_deref(),
            Some("exec: \"no-such-prog-xyz\": executable file not found in $PATH")
        );
    }
}
