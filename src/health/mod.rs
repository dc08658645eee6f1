//! Native health checks (`health.http`, `health.tcp`): what to probe and how
//! one probe goes, without a process. This module is sans-I/O: `Exchange` is
//! driven over whatever connected byte stream the loop hands it
//! (`runtime::checks` owns the sockets and timers); targets are plain data from
//! the config.

mod exchange;

pub use exchange::{short_error, Exchange, Finish, Outcome};

use crate::config::types::TlsConfig;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// What a native check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Http(Box<HttpTarget>),
    Tcp(TcpTarget),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as written (for messages).
    pub url: String,
    pub https: bool,
    /// Host as written in the URL (SNI and certificate name for https).
    pub host: String,
    pub addr: SocketAddr,
    /// Path and query sent in the request line.
    pub path: String,
    /// Extra request headers; a `Host` here replaces the default one.
    pub headers: Vec<(String, String)>,
    /// The status that passes; `None` = any 2xx.
    pub status: Option<u16>,
    /// For https: CA file/dir, verification, server name (as for Consul).
    pub tls: TlsConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTarget {
    /// `host:port` as written.
    pub spec: String,
    pub addr: SocketAddr,
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Http(h) => h.addr,
            Target::Tcp(t) => t.addr,
        }
    }

    /// For log lines: `GET http://...` or `tcp 127.0.0.1:5432`.
    pub fn describe(&self) -> String {
        match self {
            Target::Http(h) => format!("GET {}", h.url),
            Target::Tcp(t) => format!("tcp {}", t.spec),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError(pub String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

/// `host:port` or `[v6]:port` into host text and port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => None, // a bare IPv6 address needs brackets
        None => Some((s, None)),
    }
}

/// The address to connect to. Names are looked up now, once, when the config
/// is loaded: a lookup can block, and the loop never does.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, TargetError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| TargetError(format!("cannot resolve {host:?}: {e}")))?;
    // Prefer IPv4 as most health endpoints listen on 127.0.0.1.
    let all: Vec<SocketAddr> = addrs.by_ref().collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| TargetError(format!("{host:?} has no address")))
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

impl TcpTarget {
    pub fn parse(spec: &str) -> Result<TcpTarget, TargetError> {
        let bad = || TargetError(format!("{spec:?} is not host:port"));
        let (host, port) = split_host_port(spec.trim()).ok_or_else(bad)?;
        let port = port.filter(|p| *p != 0).ok_or_else(bad)?;
        if !valid_host(host) {
            return Err(bad());
        }
        Ok(TcpTarget {
            spec: spec.trim().to_string(),
            addr: resolve(host, port)?,
        })
    }
}

impl HttpTarget {
    /// An `http://` or `https://` URL; headers, status and TLS are set after.
    pub fn parse(url: &str) -> Result<HttpTarget, TargetError> {
        let url = url.trim();
        let bad = |why: &str| TargetError(format!("{url:?}: {why}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let rest = rest.split('#').next().unwrap_or("");
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if !valid_host(host) {
            return Err(bad("bad host"));
        }
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad(
                "the path must not contain spaces or control characters",
            ));
        }
        let port = match port {
            Some(0) => return Err(bad("port 0")),
            Some(p) => p,
            None if https => 443,
            None => 80,
        };
        Ok(HttpTarget {
            url: url.to_string(),
            https,
            host: host.to_string(),
            addr: resolve(host, port)?,
            path,
            headers: Vec::new(),
            status: None,
            tls: TlsConfig::default(),
        })
    }

    /// The `Host` header value: host, with the port when it is not the default.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.addr.port() == default {
            host
        } else {
            format!("{host}:{}", self.addr.port())
        }
    }

    /// The request bytes: GET with Host and our User-Agent, then the
    /// configured headers (which may replace Host or User-Agent). No
    /// `Connection: close`: the connection is kept for the next probe.
    pub fn request(&self) -> Vec<u8> {
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let mut out = format!("GET {} HTTP/1.1\r\n", self.path);
        if !has("host") {
            out.push_str(&format!("Host: {}\r\n", self.host_header()));
        }
        if !has("user-agent") {
            out.push_str(&format!(
                "User-Agent: containerpilot/{}\r\n",
                crate::VERSION
            ));
        }
        out.push_str("Accept: */*\r\n");
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A header a user may add: a token name and a value without line breaks.
pub fn check_header(name: &str, value: &str) -> Result<(), TargetError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(TargetError(format!("{name:?} is not a valid header name")));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(TargetError(format!(
            "header {name:?}: the value must not contain line breaks"
        )));
    }
    if name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
    {
        return Err(TargetError(format!(
            "header {name:?} is set by containerpilot"
        )));
    }
    Ok(())
}

/// The rustls client set-up for an https target (CA, verification, server
/// name as for the catalog), built once per distinct TLS block.
pub fn tls_client_config(
    t: &TlsConfig,
) -> Result<std::sync::Arc<rustls::ClientConfig>, TargetError> {
    crate::catalog::tls::client_config(t).map_err(|e| TargetError(e.to_string()))
}

/// The name rustls checks the certificate against: `tls.servername`, else the
/// URL's host.
pub fn server_name(t: &HttpTarget) -> Result<rustls::pki_types::ServerName<'static>, TargetError> {
    let name = t
        .tls
        .servername
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| t.host.clone());
    rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| TargetError(format!("server name {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/health?x=1");
        assert!(!t.https);
        let t = HttpTarget::parse("https://[::1]").unwrap();
        assert_eq!(t.addr, "[::1]:443".parse().unwrap());
        assert_eq!(t.path, "/");
        assert_eq!(t.host_header(), "[::1]");
        let t = HttpTarget::parse("http://localhost:81?ready#frag").unwrap();
        assert_eq!(t.path, "/?ready");
        assert_eq!(t.host_header(), "localhost:81");
        assert!(t.addr.ip().is_loopback());
        for bad in [
            "ftp://x/",
            "http://",
            "http://a b/",
            "http://u:p@host/",
            "http://h:0/",
            "http://h:99999/",
            "http://::1/",
            "http://h/a b",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_specs() {
        let t = TcpTarget::parse("127.0.0.1:5432").unwrap();
        assert_eq!(t.addr.port(), 5432);
        assert!(TcpTarget::parse("127.0.0.1").is_err());
        assert!(TcpTarget::parse("[::1]:22").is_ok());
        assert!(TcpTarget::parse("h:0").is_err());
    }

    #[test]
    fn request_bytes() {
        let mut t = HttpTarget::parse("http://127.0.0.1:8080/health").unwrap();
        t.headers = vec![("X-Probe".into(), "1".into())];
        let r = String::from_utf8(t.request()).unwrap();
        assert!(r.starts_with(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: containerpilot/"
        ));
        assert!(r.ends_with("Accept: */*\r\nX-Probe: 1\r\n\r\n"), "{r}");
        t.headers = vec![("host".into(), "app.example".into())];
        let r = String::from_utf8(t.request()).unwrap();
        assert_eq!(r.matches("ost: ").count(), 1, "{r}");
        assert!(r.contains("host: app.example\r\n"));
    }

    #[test]
    fn header_rules() {
        assert!(check_header("X-Token", "abc def").is_ok());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("X", "a\r\nInjected: 1").is_err());
        assert!(check_header("Content-Length", "5").is_err());
    }
}
