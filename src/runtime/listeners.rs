//! Creating the control socket and the telemetry listener.

use super::server::Listener;
use crate::config::types::{ControlConfig, TelemetryConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// Bind the control socket: a stale socket file is replaced, and the file gets
/// `control.mode` (0600 unless configured) before anyone can connect through a
/// wider umask default.
pub fn bind_control(cfg: &ControlConfig) -> Result<Listener, String> {
    let path = &cfg.socket;
    remove_stale(path)?;
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .map_err(|e| format!("cannot set mode of control socket {}: {e}", path.display()))?;
    Ok(Listener::Unix(l))
}

fn remove_stale(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale control socket {}: {e}", path.display())),
        Ok(_) => Err(format!(
            "control socket path {} exists and is not a socket",
            path.display()
        )),
        Err(_) => Ok(()),
    }
}

pub fn remove_control(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
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
