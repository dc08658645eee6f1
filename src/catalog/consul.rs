//! Consul agent HTTP calls (reference §5), blocking, each bounded by the client's
//! timeout. Only the catalog worker thread calls these.

use super::{CatalogError, Instance, Service};
use crate::config::types::{CheckStatus, ConsulConfig};
use serde_json::{json, Map, Value};
use std::time::Duration;

pub struct ConsulClient {
    agent: ureq::Agent,
    /// `scheme://host:port`, no trailing slash.
    base: String,
    token: Option<String>,
    /// 2.x style (a translated 2.x config): the service is registered without an
    /// inline check, the TTL check is registered on its own with the service ID as
    /// its ID, and heartbeats use the legacy pass endpoint.
    legacy_checks: bool,
}

impl ConsulClient {
    pub fn new(cfg: &ConsulConfig, timeout: Duration) -> Result<ConsulClient, CatalogError> {
        let builder = ureq::AgentBuilder::new()
            .timeout(timeout)
            .timeout_connect(timeout)
            .redirects(0)
            .user_agent(concat!("containerpilot/", env!("CARGO_PKG_VERSION")));
        let https = cfg.scheme.eq_ignore_ascii_case("https");
        let builder = if https {
            with_tls(builder, cfg)?
        } else {
            builder
        };
        let scheme = if https { "https" } else { "http" };
        Ok(ConsulClient {
            agent: builder.build(),
            base: format!("{scheme}://{}", cfg.address.trim_end_matches('/')),
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            legacy_checks: false,
        })
    }

    /// Switch to 2.x-style checks (see `legacy_checks`).
    pub fn with_legacy_checks(mut self, on: bool) -> ConsulClient {
        self.legacy_checks = on;
        self
    }

    pub fn register(&self, s: &Service, status: CheckStatus) -> Result<(), CatalogError> {
        if self.legacy_checks {
            let mut body = registration_payload(s, status);
            if let Some(o) = body.as_object_mut() {
                o.remove("Check");
            }
            let req = self.request("PUT", "/v1/agent/service/register");
            send(req, Some(&body.to_string()))?;
            let check = legacy_check_payload(s).to_string();
            let req = self.request("PUT", "/v1/agent/check/register");
            return send(req, Some(&check)).map(drop);
        }
        let body = registration_payload(s, status).to_string();
        let req = self.request("PUT", "/v1/agent/service/register");
        send(req, Some(&body)).map(drop)
    }

    /// Marks the TTL check `service:<id>` passing.
    pub fn pass_ttl(&self, id: &str) -> Result<(), CatalogError> {
        if self.legacy_checks {
            let path = format!("/v1/agent/check/pass/{}?note=ok", escape(id));
            return send(self.request("PUT", &path), None).map(drop);
        }
        let path = format!(
            "/v1/agent/check/update/{}",
            escape(&format!("service:{id}"))
        );
        let body = r#"{"Status":"passing","Output":"ok"}"#;
        send(self.request("PUT", &path), Some(body)).map(drop)
    }

    /// A service the agent does not know (404) counts as deregistered: that is the
    /// state we wanted.
    pub fn deregister(&self, id: &str) -> Result<(), CatalogError> {
        let path = format!("/v1/agent/service/deregister/{}", escape(id));
        match send(self.request("PUT", &path), None) {
            Ok(_) | Err(CatalogError::Status { code: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Passing instances of `name` (no blocking index: a plain poll, as 3.8).
    pub fn query(
        &self,
        name: &str,
        tag: Option<&str>,
        dc: Option<&str>,
    ) -> Result<Vec<Instance>, CatalogError> {
        let path = format!("/v1/health/service/{}", escape(name));
        let mut req = self.request("GET", &path).query("passing", "1");
        if let Some(tag) = tag.filter(|t| !t.is_empty()) {
            req = req.query("tag", tag);
        }
        if let Some(dc) = dc.filter(|d| !d.is_empty()) {
            req = req.query("dc", dc);
        }
        let text = send(req, None)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| CatalogError::Decode(format!("health entries: {e}")))?;
        parse_health_entries(&value)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.set("X-Consul-Token", t),
            None => req,
        }
    }
}

/// Performs the call and returns the body of a 2xx answer.
fn send(req: ureq::Request, body: Option<&str>) -> Result<String, CatalogError> {
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match result {
        Ok(resp) => resp
            .into_string()
            .map_err(|e| CatalogError::Transport(format!("reading response: {e}"))),
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            Err(CatalogError::Status {
                code,
                body: body.trim().to_string(),
            })
        }
        Err(ureq::Error::Transport(t)) => Err(CatalogError::Transport(t.to_string())),
    }
}

/// The registration body, field order as the Consul Go client sends it (reference §5.2).
pub fn registration_payload(s: &Service, status: CheckStatus) -> Value {
    let mut check = Map::new();
    check.insert("TTL".into(), json!(format!("{}s", s.ttl_secs)));
    check.insert("Status".into(), json!(status.as_str()));
    check.insert(
        "Notes".into(),
        json!(format!("TTL for {} set by containerpilot", s.name)),
    );
    if let Some(after) = &s.deregister_critical_service_after {
        check.insert("DeregisterCriticalServiceAfter".into(), json!(after));
    }
    let mut body = Map::new();
    body.insert("ID".into(), json!(s.id));
    body.insert("Name".into(), json!(s.name));
    if !s.tags.is_empty() {
        body.insert("Tags".into(), json!(s.tags));
    }
    body.insert("Port".into(), json!(s.port));
    body.insert("Address".into(), json!(s.address));
    if s.enable_tag_override {
        body.insert("EnableTagOverride".into(), json!(true));
    }
    body.insert("Check".into(), Value::Object(check));
    Value::Object(body)
}

/// 2.x's separately registered TTL check: ID and Name are the service ID, no
/// initial status (Consul starts it critical until the first pass).
pub fn legacy_check_payload(s: &Service) -> Value {
    let mut check = Map::new();
    check.insert("ID".into(), json!(s.id));
    check.insert("Name".into(), json!(s.id));
    check.insert(
        "Notes".into(),
        json!(format!("TTL for {} set by containerpilot", s.name)),
    );
    check.insert("ServiceID".into(), json!(s.id));
    check.insert("TTL".into(), json!(format!("{}s", s.ttl_secs)));
    if let Some(after) = &s.deregister_critical_service_after {
        check.insert("DeregisterCriticalServiceAfter".into(), json!(after));
    }
    Value::Object(check)
}

/// Reads `[{"Service": {"ID", "Address", "Port"}, ...}]`, the documented shape of
/// `/v1/health/service/<name>`; other fields are ignored.
pub fn parse_health_entries(v: &Value) -> Result<Vec<Instance>, CatalogError> {
    let entries = match v {
        Value::Array(a) => a,
        // Consul answers `null` for an unknown service in some versions.
        Value::Null => return Ok(Vec::new()),
        _ => {
            return Err(CatalogError::Decode(
                "health entries: not a JSON array".into(),
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let svc = e.get("Service").and_then(Value::as_object).ok_or_else(|| {
                CatalogError::Decode(format!("health entry {i}: no Service object"))
            })?;
            let text = |k: &str| svc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let port = match svc.get("Port") {
                None | Some(Value::Null) => 0,
                Some(p) => p
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| {
                        CatalogError::Decode(format!("health entry {i}: bad Port {p}"))
                    })?,
            };
            Ok(Instance {
                id: text("ID"),
                address: text("Address"),
                port,
            })
        })
        .collect()
}

/// Percent-encodes a path segment, keeping what Go's URL encoder keeps in a
/// path (so `service:<id>` goes out with its colon, as 3.8 sent it).
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_tls(
    builder: ureq::AgentBuilder,
    cfg: &ConsulConfig,
) -> Result<ureq::AgentBuilder, CatalogError> {
    Ok(builder.tls_config(tls::client_config(&cfg.tls)?))
}

pub(super) mod tls {
    //! rustls set-up for https agents: CA file/dir, client certificate, server
    //! name override, and `verify: false` (SPEC §2.13: verification is on unless
    //! turned off).

    use super::CatalogError;
    use crate::config::types::TlsConfig;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use std::sync::Arc;

    pub fn client_config(t: &TlsConfig) -> Result<Arc<ClientConfig>, CatalogError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if t.verify == Some(false) {
            Arc::new(NoVerify(provider.clone()))
        } else {
            let roots = Arc::new(roots(t)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| CatalogError::TlsSetup(e.to_string()))?;
            match t.servername.as_deref().filter(|s| !s.is_empty()) {
                Some(name) => {
                    let name = ServerName::try_from(name.to_string())
                        .map_err(|e| CatalogError::TlsSetup(format!("servername {name:?}: {e}")))?;
                    Arc::new(NamedVerify { inner, name })
                }
                None => inner,
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CatalogError::TlsSetup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&t.clientcert, &t.clientkey) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| CatalogError::Tls {
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| CatalogError::TlsSetup(format!("client certificate: {e}")))?
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(CatalogError::TlsSetup(
                    "clientcert and clientkey must be set together".into(),
                ))
            }
            (None, None) => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// `cafile` and every file of `capath`; the public web roots when neither is set.
    fn roots(t: &TlsConfig) -> Result<RootCertStore, CatalogError> {
        let mut store = RootCertStore::empty();
        let mut files = Vec::new();
        if let Some(f) = t.cafile.as_ref().filter(|f| !f.is_empty()) {
            files.push(f.clone());
        }
        if let Some(dir) = t.capath.as_ref().filter(|d| !d.is_empty()) {
            let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::Tls {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            let mut found: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            found.sort();
            files.extend(found);
        }
        if files.is_empty() {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(store);
        }
        for f in files {
            for cert in certs(&f)? {
                store.add(cert).map_err(|e| CatalogError::Tls {
                    path: f.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(store)
    }

    fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, CatalogError> {
        let err = |reason: String| CatalogError::Tls {
            path: path.to_string(),
            reason,
        };
        let list = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if list.is_empty() {
            return Err(err("no PEM certificates found".to_string()));
        }
        Ok(list)
    }

    /// Checks the certificate against `tls.servername` instead of the URL host.
    #[derive(Debug)]
    struct NamedVerify {
        inner: Arc<WebPkiServerVerifier>,
        name: ServerName<'static>,
    }

    impl ServerCertVerifier for NamedVerify {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.inner
                .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    /// `verify: false`: any certificate is accepted, but handshake signatures are
    /// still checked so the session keys belong to the presented certificate.
    #[derive(Debug)]
    struct NoVerify(Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Service {
        Service {
            id: "app-host1".into(),
            name: "app".into(),
            address: "10.0.0.2".into(),
            port: 8080,
            tags: vec!["web".into(), "v1".into()],
            enable_tag_override: false,
            ttl_secs: 10,
            deregister_critical_service_after: None,
        }
    }

    #[test]
    fn payload_exact_with_tags_and_defaults_omitted() {
        let body = registration_payload(&sample(), CheckStatus::Passing).to_string();
        assert_eq!(
            body,
            concat!(
                r#"{"ID":"app-host1","Name":"app","Tags":["web","v1"],"Port":8080,"#,
                r#""Address":"10.0.0.2","Check":{"TTL":"10s","Status":"passing","#,
                r#""Notes":"TTL for app set by containerpilot"}}"#
            )
        );
    }

    #[test]
    fn payload_exact_with_extras_and_warning() {
        let mut s = sample();
        s.tags.clear();
        s.enable_tag_override = true;
        s.deregister_critical_service_after = Some("90m".into());
        let body = registration_payload(&s, CheckStatus::Warning).to_string();
        assert_eq!(
            body,
            concat!(
                r#"{"ID":"app-host1","Name":"app","Port":8080,"Address":"10.0.0.2","#,
                r#""EnableTagOverride":true,"Check":{"TTL":"10s","Status":"warning","#,
                r#""Notes":"TTL for app set by containerpilot","#,
                r#""DeregisterCriticalServiceAfter":"90m"}}"#
            )
        );
    }

    #[test]
    fn payload_status_critical() {
        let v = registration_payload(&sample(), CheckStatus::Critical);
        assert_eq!(v["Check"]["Status"], "critical");
    }

    #[test]
    fn health_entries_parse() {
        let v: Value = serde_json::from_str(
            r#"[{"Node":{"Node":"n1","Address":"10.1.1.1"},
                 "Service":{"ID":"db-a","Service":"db","Tags":["x"],"Address":"10.0.0.5","Port":5432},
                 "Checks":[]},
                {"Service":{"ID":"db-b","Service":"db","Port":5433}}]"#,
        )
        .expect("json");
        assert_eq!(
            parse_health_entries(&v).expect("entries"),
            vec![
                Instance {
                    id: "db-a".into(),
                    address: "10.0.0.5".into(),
                    port: 5432
                },
                Instance {
                    id: "db-b".into(),
                    address: "".into(),
                    port: 5433
                },
            ]
        );
        assert_eq!(parse_health_entries(&Value::Null).expect("null"), vec![]);
    }

    #[test]
    fn health_entries_errors() {
        let e = parse_health_entries(&json!({"a": 1})).expect_err("object");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entries: not a JSON array"
        );
        let e = parse_health_entries(&json!([{"Node": {}}])).expect_err("no service");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entry 0: no Service object"
        );
        let e = parse_health_entries(&json!([{"Service": {"ID": "a", "Port": 70000}}]))
            .expect_err("port");
        assert_eq!(
            e.to_string(),
            "unexpected catalog response: health entry 0: bad Port 70000"
        );
    }

    #[test]
    fn escape_keeps_colon_and_encodes_the_rest() {
        assert_eq!(escape("service:app-host1"), "service:app-host1");
        assert_eq!(escape("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }
}
