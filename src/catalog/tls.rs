//! rustls set-up for https catalogs (Consul and etcd): CA file/dir, client
//! certificate, server name override, and `verify: false` (SPEC §2.13:
//! verification is on unless turned off).

use super::CatalogError;
use crate::config::types::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

pub fn client_config(t: &TlsConfig) -> Result<Arc<ClientConfig>, CatalogError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = if t.verify == Some(false) {
        None
    } else {
        let roots = Arc::new(roots(t)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| CatalogError::TlsSetup(e.to_string()))?;
        let name = match t.servername.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => Some(
                ServerName::try_from(name.to_string())
                    .map_err(|e| CatalogError::TlsSetup(format!("servername {name:?}: {e}")))?,
            ),
            None => None,
        };
        Some((webpki, name))
    };
    let verifier = Arc::new(Verifier {
        chain,
        algorithms: provider.signature_verification_algorithms,
    });
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

/// The one server verifier for every TLS setting. Handshake signatures are
/// always checked, so the session keys belong to the presented certificate even
/// with `verify: false`; the certificate chain is checked against the roots
/// unless verification is off, and against `tls.servername` instead of the URL
/// host when that is set.
#[derive(Debug)]
struct Verifier {
    /// `None` with `verify: false`.
    chain: Option<(Arc<WebPkiServerVerifier>, Option<ServerName<'static>>)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.chain {
            None => Ok(ServerCertVerified::assertion()),
            Some((webpki, name)) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                name.as_ref().unwrap_or(server_name),
                ocsp,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
