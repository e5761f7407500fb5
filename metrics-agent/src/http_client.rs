//! HTTP clients built from Prometheus' client settings (`tls_config`, `proxy_url`,
//! `follow_redirects`, ...). TLS is rustls: the system roots by default, only `ca`/`ca_file`
//! when given, a client certificate, `server_name` (the name the certificate is checked
//! against) and `insecure_skip_verify`.

use crate::config::{HttpClient, Tls, TlsVersion};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tls_config: {0}")]
    Tls(String),
    #[error("proxy_url: {0}")]
    Proxy(String),
    #[error("HTTP client: {0}")]
    Build(String),
}

/// A client for scrapes or remote writes with `settings`.
pub fn build(
    settings: &HttpClient,
    base: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    let mut b = base.redirect(if settings.follow_redirects {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    });
    match &settings.proxy_url {
        Some(u) => {
            let mut p = reqwest::Proxy::all(u).map_err(|e| ClientError::Proxy(e.to_string()))?;
            if let Some(np) = &settings.no_proxy {
                p = p.no_proxy(reqwest::NoProxy::from_string(np));
            }
            b = b.proxy(p);
        }
        // Prometheus uses no proxy unless told to; reqwest would read HTTP_PROXY.
        None if !settings.proxy_from_environment => b = b.no_proxy(),
        None => {}
    }
    if !settings.tls.is_default() {
        b = b.tls_backend_preconfigured(rustls_config(&settings.tls)?);
    }
    b.build().map_err(|e| ClientError::Build(e.to_string()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls configuration of a `tls_config`.
pub fn rustls_config(t: &Tls) -> Result<rustls::ClientConfig, ClientError> {
    let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let provider = provider();
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| {
        t.min_version.is_none_or(|m| *v as u8 >= m as u8)
            && t.max_version.is_none_or(|m| *v as u8 <= m as u8)
    })
    .map(|(_, p)| p)
    .collect();
    let mut verifier: Arc<dyn ServerCertVerifier> = if t.insecure_skip_verify {
        Arc::new(NoVerify(provider.clone()))
    } else if let Some(ca) = &t.ca_pem {
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(ca) {
            roots
                .add(c.map_err(|e| tls(&format!("ca: {e}")))?)
                .map_err(|e| tls(&format!("ca: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(ClientError::Tls(
                "ca: no certificate in the PEM data".into(),
            ));
        }
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls(&e))?
    } else {
        Arc::new(rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| tls(&e))?)
    };
    if let Some(name) = &t.server_name
        && !t.insecure_skip_verify
    {
        let name = ServerName::try_from(name.clone()).map_err(|e| tls(&e))?;
        verifier = Arc::new(NameOverride {
            inner: verifier,
            name,
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| tls(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&t.cert_pem, &t.key_pem) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| tls(&format!("cert: {e}")))?;
            if chain.is_empty() {
                return Err(ClientError::Tls(
                    "cert: no certificate in the PEM data".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls(&format!("key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls(&e))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Checks the certificate against a fixed name (`server_name`) instead of the URL's host.
#[derive(Debug)]
struct NameOverride {
    inner: Arc<dyn ServerCertVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
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
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Any certificate is accepted (`insecure_skip_verify`; the PostgreSQL collector's
/// `sslmode=prefer`/`require`). Handshake signatures are still checked, so the peer holds
/// the key of the certificate it shows.
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<CryptoProvider>);

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
    // dup: alike in shape only (other types and fields); kept apart on purpose.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    // dup: alike in shape only (other types and fields); kept apart on purpose.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki() -> (String, String, String) {
        let ca = test_support::tls::TestCa::new();
        let leaf = ca.sign(&["client.test"]);
        (ca.pem(), leaf.cert_pem(), leaf.key_pem())
    }

    #[test]
    fn builds_every_tls_variant() {
        let (ca, cert, key) = pki();
        let variants = [
            Tls {
                ca_pem: Some(ca.clone().into_bytes()),
                cert_pem: Some(cert.clone().into_bytes()),
                key_pem: Some(key.clone().into_bytes()),
                server_name: Some("metrics.test".into()),
                ..Tls::default()
            },
            Tls {
                insecure_skip_verify: true,
                min_version: Some(TlsVersion::Tls12),
                ..Tls::default()
            },
            Tls {
                cert_pem: Some(cert.into_bytes()),
                key_pem: Some(key.into_bytes()),
                server_name: Some("metrics.test".into()),
                ..Tls::default()
            },
            Tls {
                min_version: Some(TlsVersion::Tls13),
                ..Tls::default()
            },
        ];
        for (i, t) in variants.iter().enumerate() {
            let s = HttpClient {
                tls: t.clone(),
                ..HttpClient::default()
            };
            if let Err(e) = build(&s, reqwest::Client::builder()) {
                panic!("variant {i}: {e}");
            }
        }
        let bad = Tls {
            ca_pem: Some(b"not pem".to_vec()),
            ..Tls::default()
        };
        assert!(rustls_config(&bad).is_err());
    }
}
