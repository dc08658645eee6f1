//! The socket subcommands (`-putenv`, `-putmetric`, `-reload`, `-maintenance`,
//! `-ping`, `-status`, `-signal`): one HTTP request to a running daemon.

use crate::http::{request_unix, ClientResponse};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct SubcommandError(pub String);

impl std::fmt::Display for SubcommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn call(
    socket: &Path,
    flag: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<ClientResponse, SubcommandError> {
    let b = body.as_ref().map(|b| ("application/json", b.as_bytes()));
    let resp = request_unix(socket, method, path, b, TIMEOUT)
        .map_err(|e| SubcommandError(format!("{flag}: failed to run subcommand: {e}")))?;
    if resp.status >= 400 {
        let text = String::from_utf8_lossy(&resp.body);
        return Err(SubcommandError(format!(
            "{flag}: failed to run subcommand: {} {}",
            resp.status,
            text.trim_end()
        )));
    }
    Ok(resp)
}

pub fn ping(socket: &Path) -> Result<String, SubcommandError> {
    call(socket, "-ping", "GET", "/v3/ping", None)?;
    Ok("ok".into())
}

pub fn reload(socket: &Path) -> Result<String, SubcommandError> {
    call(socket, "-reload", "POST", "/v3/reload", None)?;
    Ok(String::new())
}

pub fn maintenance(socket: &Path, enable: bool) -> Result<String, SubcommandError> {
    let path = if enable {
        "/v3/maintenance/enable"
    } else {
        "/v3/maintenance/disable"
    };
    call(socket, "-maintenance", "POST", path, None)?;
    Ok(String::new())
}

pub fn putenv(
    socket: &Path,
    pairs: &[(String, Option<String>)],
) -> Result<String, SubcommandError> {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        m.insert(
            k.clone(),
            v.clone()
                .map(serde_json::Value::String)
                .unwrap_or(serde_json::Value::Null),
        );
    }
    call(
        socket,
        "-putenv",
        "POST",
        "/v3/environ",
        Some(serde_json::Value::Object(m).to_string()),
    )?;
    Ok(String::new())
}

pub fn putmetric(socket: &Path, pairs: &[(String, String)]) -> Result<String, SubcommandError> {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        m.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    call(
        socket,
        "-putmetric",
        "POST",
        "/v3/metric",
        Some(serde_json::Value::Object(m).to_string()),
    )?;
    Ok(String::new())
}

pub fn signal(socket: &Path, job: &str, sig: &str) -> Result<String, SubcommandError> {
    let body = serde_json::json!({ "signal": sig }).to_string();
    call(
        socket,
        "-signal",
        "POST",
        &format!("/v3/signal/{job}"),
        Some(body),
    )?;
    Ok(String::new())
}

/// The raw `/v3/status` JSON.
pub fn status(socket: &Path) -> Result<serde_json::Value, SubcommandError> {
    let resp = call(socket, "-status", "GET", "/v3/status", None)?;
    serde_json::from_slice(&resp.body)
        .map_err(|e| SubcommandError(format!("-status: daemon sent invalid JSON: {e}")))
}
