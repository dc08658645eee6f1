//! Reaping: on every SIGCHLD collect every exited child, ours or orphaned, until the
//! kernel has none left. One place owns `waitpid`, so no exit status is lost.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Collect every exited child without blocking.
pub fn reap_all() -> Vec<(i32, WaitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(st) => {
                if let Some(pid) = st.pid() {
                    if matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        out.push((pid.as_raw(), st));
                    }
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left
        }
    }
    out
}

/// Outside PID 1, orphans of our jobs would go to the host's init; becoming a
/// subreaper keeps them ours so they are reaped too (SPEC §2.1).
pub fn become_subreaper() {
    if std::process::id() != 1 {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            log::warn!("could not become a child subreaper: {e}");
        }
    }
}
