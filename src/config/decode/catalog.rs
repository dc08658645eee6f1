//! `consul` and `etcd`: which catalog, where, and with what credentials. The
//! environment fills what the file leaves empty (Consul's client defaults), and
//! ContainerPilot's own variables override the file (reference §2.13).

use crate::config::json5::{Spanned, Value};
use crate::config::reader::{parse_go_bool, split_scheme, Dialect, Reader};
use crate::config::types::{ConsulConfig, EtcdConfig, TlsConfig};

const DEFAULT_CONSUL_ADDRESS: &str = "127.0.0.1:8500";
const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
pub(in crate::config) const DEFAULT_ETCD_PREFIX: &str = "/containerpilot";
pub(super) const CONSUL_TLS_KEYS: [&str; 6] = [
    "cafile",
    "capath",
    "clientcert",
    "clientkey",
    "servername",
    "verify",
];
const ETCD_TLS_KEYS: [&str; 4] = ["cafile", "clientcert", "clientkey", "verify"];

/// An etcd endpoint as a base URL: `http://` is assumed when no scheme is given;
/// any path is refused because the gateway paths are fixed.
pub(super) fn etcd_endpoint(raw: &str) -> Result<String, String> {
    let text = raw.trim();
    let (scheme, rest) = match split_scheme(text) {
        (Some(s), rest) => (s, rest),
        (None, rest) if rest.contains("://") => {
            return Err(format!("'{text}' must be an http:// or https:// URL"));
        }
        (None, rest) => ("http", rest),
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!(
            "'{text}' is not a valid endpoint (want scheme://host:port)"
        ));
    }
    Ok(format!("{scheme}://{host}"))
}

impl Reader<'_, '_> {
    /// `consul`: `"host:port"` (optionally with a scheme) or `{address, scheme,
    /// token, tls}`. 2.x had no `tls` block and no TLS variables but `verify`.
    pub(in crate::config) fn consul(&mut self, v: &Spanned) -> Option<ConsulConfig> {
        let v3 = self.dialect == Dialect::V3;
        let mut scheme = String::new();
        let mut token = None;
        let mut tls = TlsConfig::default();
        let address = match &v.value {
            Value::String(s) => s.clone(),
            Value::Object(_) => {
                let keys: &[&'static str] = if v3 {
                    &["address", "scheme", "token", "tls"]
                } else {
                    &["address", "scheme", "token"]
                };
                let f = self.fields(v, "consul", keys)?;
                scheme = self.string_field(&f, "scheme").unwrap_or_default();
                token = self.text_field(&f, "token");
                if let Some(t) = f.get("tls") {
                    tls = self
                        .tls(t, "consul.tls", &CONSUL_TLS_KEYS)
                        .unwrap_or_default();
                }
                if !scheme.is_empty() {
                    scheme = scheme.to_lowercase();
                    if scheme != "http" && scheme != "https" {
                        let line = f.line_of("scheme");
                        self.err("consul.scheme", line, "must be 'http' or 'https'");
                    }
                }
                self.string_field(&f, "address").unwrap_or_default()
            }
            _ if v3 => {
                self.expected("consul", v, "a string or an object");
                return None;
            }
            _ => {
                let got = crate::config::reader::type_name(&v.value);
                let msg = format!(
                    "unexpected Consul config structure: expected a string or an object, got {got}"
                );
                self.err("consul", v.line, msg);
                return None;
            }
        };

        let (prefix_scheme, rest) = split_scheme(&address);
        let mut address = rest.to_string();
        if let Some(s) = prefix_scheme {
            scheme = s.to_string();
        }
        // The Consul library's own defaults fill only what the config left empty.
        if address.is_empty() {
            let from_env = self.env_var("CONSUL_HTTP_ADDR");
            let env_addr = from_env.as_deref().unwrap_or(DEFAULT_CONSUL_ADDRESS);
            let (env_scheme, rest) = split_scheme(env_addr);
            address = rest.to_string();
            if scheme.is_empty() {
                scheme = env_scheme.unwrap_or_default().to_string();
            }
        }
        if scheme.is_empty() {
            let ssl = self.env_var("CONSUL_HTTP_SSL");
            let https = ssl.as_deref().and_then(parse_go_bool).unwrap_or(false);
            scheme = if https { "https" } else { "http" }.to_string();
        }

        // CP's own overrides: the environment wins when set and non-empty.
        if let Some(t) = self.env_var("CONSUL_HTTP_TOKEN") {
            token = Some(t);
        }
        if v3 {
            let overrides = [
                ("CONSUL_CACERT", &mut tls.cafile),
                ("CONSUL_CAPATH", &mut tls.capath),
                ("CONSUL_CLIENT_CERT", &mut tls.clientcert),
                ("CONSUL_CLIENT_KEY", &mut tls.clientkey),
                ("CONSUL_TLS_SERVER_NAME", &mut tls.servername),
            ];
            for (key, slot) in overrides {
                if let Some(val) = self.env.env.get(key).filter(|v| !v.is_empty()) {
                    *slot = Some(val.clone());
                }
            }
        }
        if let Some(verify) = self.env_var("CONSUL_HTTP_SSL_VERIFY") {
            match verify.to_lowercase().as_str() {
                "1" | "true" => tls.verify = Some(true),
                "0" | "false" => tls.verify = Some(false),
                _ => {}
            }
        }
        Some(ConsulConfig {
            address,
            scheme,
            token,
            tls,
        })
    }

    /// `etcd: {endpoints, prefix, username, password, tls}`; `ETCD_ENDPOINTS`
    /// (comma-separated) replaces the configured endpoints when set.
    pub(super) fn etcd(&mut self, v: &Spanned) -> Option<EtcdConfig> {
        let keys = ["endpoints", "prefix", "username", "password", "tls"];
        let f = self.fields(v, "etcd", &keys)?;
        let mut endpoints = self.strings_field(&f, "endpoints", true);
        let mut line = f.line_of("endpoints");
        let mut origin = "";
        if let Some(list) = self.env_var("ETCD_ENDPOINTS") {
            endpoints = list
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            line = v.line;
            origin = " (from ETCD_ENDPOINTS)";
        }
        let mut urls = Vec::new();
        for (i, e) in endpoints.iter().enumerate() {
            match etcd_endpoint(e) {
                Ok(url) => urls.push(url),
                Err(msg) => {
                    let path = format!("{}[{i}]", f.path("endpoints"));
                    self.err(&path, line, format!("{msg}{origin}"));
                }
            }
        }
        if urls.is_empty() && endpoints.is_empty() {
            urls.push(DEFAULT_ETCD_ENDPOINT.to_string());
        }
        let prefix = match self.string_field(&f, "prefix") {
            Some(p) if !p.trim_end_matches('/').is_empty() => p.trim_end_matches('/').to_string(),
            Some(p) if !p.is_empty() => String::new(),
            _ => DEFAULT_ETCD_PREFIX.to_string(),
        };
        let username = self.text_field(&f, "username");
        let password = self.text_field(&f, "password");
        if username.is_some() != password.is_some() {
            let (name, other) = if username.is_some() {
                ("password", "username")
            } else {
                ("username", "password")
            };
            let msg = format!("must be set when '{other}' is set");
            self.err(&f.path(name), f.line_of(other), msg);
        }
        let tls = match f.get("tls") {
            Some(t) => self.tls(t, "etcd.tls", &ETCD_TLS_KEYS).unwrap_or_default(),
            None => TlsConfig::default(),
        };
        Some(EtcdConfig {
            endpoints: urls,
            prefix,
            username,
            password,
            tls,
        })
    }

    pub(super) fn tls(
        &mut self,
        v: &Spanned,
        path: &str,
        keys: &[&'static str],
    ) -> Option<TlsConfig> {
        let f = self.fields(v, path, keys)?;
        Some(TlsConfig {
            cafile: self.text_field(&f, "cafile"),
            capath: self.text_field(&f, "capath"),
            clientcert: self.text_field(&f, "clientcert"),
            clientkey: self.text_field(&f, "clientkey"),
            servername: self.text_field(&f, "servername"),
            verify: self.bool_field(&f, "verify"),
        })
    }
}
