//! Creating the control socket and the telemetry listener.

use super::server::Listener;
use crate::config::types::{ControlConfig, TelemetryConfig};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The socket file a daemon created, so that it removes that file and nothing
/// else: another process may have put its own socket at the path meanwhile.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the file if it is still the one we created.
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Bind the control socket. Whatever a previous run left at the path (a dead
/// socket, a regular file, a symlink) is replaced, as 3.8 did; a socket some
/// process still listens on is not: that is another daemon's control plane. The
/// file gets `control.mode` (0600 unless configured) before anyone can connect
/// through a wider umask default.
pub fn bind_control(cfg: &ControlConfig) -> Result<Listener, String> {
    let path = &cfg.socket;
    clear_path(path)?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create directory for control socket {}: {e}",
                    path.display()
                )
            })?;
        }
    }
    // SAFETY: umask only changes this process's file-creation mask; we restore it.
    let old = unsafe { libc::umask(0o177) };
    let bound = mio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l =
        bound.map_err(|e| format!("cannot listen on control socket {}: {e}", path.display()))?;
    let file = std::fs::symlink_metadata(path)
        .map(|m| SocketFile {
            path: path.clone(),
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(|e| format!("cannot stat control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .map_err(|e| format!("cannot set mode of control socket {}: {e}", path.display()))?;
    Ok(Listener::Unix(l, file))
}

fn clear_path(path: &Path) -> Result<(), String> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot inspect control socket path {}: {e}",
                path.display()
            ))
        }
    };
    if m.is_dir() {
        return Err(format!(
            "control socket path {} is a directory",
            path.display()
        ));
    }
    if m.file_type().is_socket() && listening(path)? {
        return Err(format!(
            "control socket {} is in use: a process is listening on it (another \
             containerpilot?); stop it or set another control.socket",
            path.display()
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!(
            "cannot replace leftover file at control socket path {}: {e}",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Whether some process accepts connections on the socket at `path`. The connect
/// does not block: a listener whose backlog is full is still a listener.
fn listening(path: &Path) -> Result<bool, String> {
    match mio::net::UnixStream::connect(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(format!(
            "cannot tell whether control socket {} is in use: {e}",
            path.display()
        )),
    }
}

/// The telemetry listener binds the resolved address only, as 3.8 did.
pub fn bind_telemetry(cfg: &TelemetryConfig) -> Result<Listener, String> {
    let ip = cfg.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addr = SocketAddr::new(ip, cfg.port);
    let l = mio::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen for telemetry on {addr}: {e}"))?;
    Ok(Listener::Tcp(l))
}
