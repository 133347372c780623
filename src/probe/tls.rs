//! tls phase: handshake with rustls using the node's CA pool plus the endpoint's own CAs
//! and client certificate, record what the server presented, and classify failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::outcome::{Failure, Reason, TlsInfo};
use crate::endpoint::{ClientCert, TlsSettings};

/// Where Linux distributions keep the system CA bundle (Debian/Ubuntu, RHEL/Fedora,
/// SUSE, Alpine), the same list Go's crypto/x509 root_linux.go searches.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A TLS settings problem (a CA, cert or key file). Reported as `TLSConfigInvalid`.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("no CA bundle found (looked in {searched})")]
    NoBundle { searched: String },
    #[error("client certificate {path}: {message}")]
    ClientCert { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, TlsConfigError> {
    let bytes = std::fs::read(path).map_err(|e| TlsConfigError::CaFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsConfigError::CaFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // A bundle may hold certificates webpki cannot use; skip them like Go does.
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(TlsConfigError::CaFile {
            path: path.to_path_buf(),
            message: "no usable PEM certificate in file".to_string(),
        });
    }
    Ok(added)
}

/// Build the rustls config for one endpoint's TLS settings.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(server_verifier(settings)?);
    let mut config = match settings.client_certs.first() {
        None => builder.with_no_client_auth(),
        Some(cc) => {
            let (chain, key) = client_identity(cc)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsConfigError::ClientCert {
                    path: cc.cert.clone(),
                    message: e.to_string(),
                })?
        }
    };
    // The registry API is HTTP/1.1 here (hyper http1 client).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How the server's certificate is checked: not at all with `skip_verify`, else with
/// webpki over the node's roots (recording what was presented).
fn server_verifier(settings: &TlsSettings) -> Result<Arc<dyn ServerCertVerifier>, TlsConfigError> {
    if settings.skip_verify {
        return Ok(Arc::new(NodeVerifier(Trust::Any, provider())));
    }
    let roots = trust_roots(settings)?;
    // An empty pool (a node without a bundle and no endpoint CA) trusts nothing.
    let inner = if roots.is_empty() {
        None
    } else {
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?,
        )
    };
    Ok(Arc::new(NodeVerifier(Trust::Recording(inner), provider())))
}

/// The node's CA bundle (the given one, else the first system bundle found, none with
/// `no_system_pool`), plus the endpoint's own CA files.
fn trust_roots(settings: &TlsSettings) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    match &settings.ca_bundle {
        None if settings.no_system_pool => {}
        Some(path) => {
            add_pem_file(&mut roots, path)?;
        }
        None => {
            let found = SYSTEM_CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .ok_or_else(|| TlsConfigError::NoBundle {
                    searched: SYSTEM_CA_BUNDLES.join(", "),
                })?;
            add_pem_file(&mut roots, found)?;
        }
    }
    // Endpoint CAs are appended to the system pool, as containerd does (hosts.go `ca`).
    for extra in &settings.extra_ca_files {
        add_pem_file(&mut roots, extra)?;
    }
    Ok(roots)
}

/// A client certificate chain and its private key, read from the PEM files.
fn client_identity(
    cc: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let cert_bytes = std::fs::read(&cc.cert).map_err(|e| TlsConfigError::ClientCert {
        path: cc.cert.clone(),
        message: e.to_string(),
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError::ClientCert {
            path: cc.cert.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsConfigError::ClientCert {
            path: cc.cert.clone(),
            message: "no PEM certificate in file".to_string(),
        });
    }
    // A missing key file means the key is inside the cert file (containerd `client`).
    let key_path = cc.key.clone().unwrap_or_else(|| cc.cert.clone());
    let key_bytes = std::fs::read(&key_path).map_err(|e| TlsConfigError::ClientCert {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsConfigError::ClientCert {
            path: key_path.clone(),
            message: format!("no usable private key: {e}"),
        })?;
    Ok((chain, key))
}

tokio::task_local! {
    /// The leaf certificate the server presented in this task's handshake, recorded by
    /// [`Trust::Recording`] so a failed handshake can still say what was presented.
    static PRESENTED: std::cell::RefCell<Option<CertificateDer<'static>>>;
}

/// How the node checks a server certificate. Handshake signatures are checked either way.
#[derive(Debug)]
enum Trust {
    /// `skip_verify`: any server certificate is accepted.
    Any,
    /// webpki with the node's roots (`None` = no roots, nothing is trusted), recording
    /// what the server presented.
    Recording(Option<Arc<rustls::client::WebPkiServerVerifier>>),
}

/// The node's verification: its [`Trust`] with the crypto provider's signature checks.
#[derive(Debug)]
struct NodeVerifier(Trust, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let inner = match &self.0 {
            Trust::Any => return Ok(ServerCertVerified::assertion()),
            Trust::Recording(inner) => inner,
        };
        let _ = PRESENTED.try_with(|p| *p.borrow_mut() = Some(end_entity.clone().into_owned()));
        match inner {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }
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
            &self.1.signature_verification_algorithms,
        )
    }
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
            &self.1.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// Handshake over `tcp` for `host` (SNI; IP literals get no SNI, as in Go).
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, TlsInfo), Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string()).map_err(|e| {
        Failure::new(
            Reason::TLSConfigInvalid,
            format!("{bare} is not a valid TLS server name: {e}"),
        )
    })?;
    let connector = TlsConnector::from(config);
    let attempt = PRESENTED.scope(std::cell::RefCell::new(None), async {
        let r = tokio::time::timeout(timeout, connector.connect(name, tcp)).await;
        let presented = PRESENTED.with(|p| p.borrow_mut().take());
        (r, presented)
    });
    let stream = match attempt.await {
        (Err(_), _) => {
            return Err(Failure::new(
                Reason::TLSHandshakeTimeout,
                format!(
                    "TLS handshake with {host} did not finish within {}",
                    crate::text::human_duration(timeout)
                ),
            ))
        }
        (Ok(Err(e)), presented) => {
            let leaf = presented.map(|der| leaf_info(host, der.as_ref()));
            let mut f = classify(host, &e, leaf.as_ref());
            f.tls = leaf.map(Box::new);
            return Err(f);
        }
        (Ok(Ok(s)), _) => s,
    };
    let info = describe(host, &stream);
    Ok((stream, info))
}

/// A TLS alert anywhere in an error's source chain (e.g. a hyper error wrapping the
/// rustls error that ended the connection after the handshake).
pub fn alert_in_chain(host: &str, err: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some()
            {
                return Some(classify(host, io, None));
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            let io = std::io::Error::other(tls.clone());
            return Some(classify(host, &io, None));
        }
        cur = e.source();
    }
    None
}

/// A handshake failure in words: what the presented certificate says (dates, issuer,
/// names) when one was seen, never a Rust debug form.
fn classify(host: &str, err: &std::io::Error, leaf: Option<&TlsInfo>) -> Failure {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return Failure::new(
            Reason::TLSHandshakeFailed,
            format!(
                "TLS handshake with {host} failed: {}",
                crate::text::io_words(err)
            ),
        );
    };
    use rustls::Error as E;
    match tls {
        E::InvalidCertificate(ce) => certificate_failure(host, ce, leaf),
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => Failure::new(
            Reason::TLSPlainHTTP,
            format!(
                "{host} answered the TLS handshake in plain HTTP: the endpoint should be http://"
            ),
        ),
        E::AlertReceived(a @ (AlertDescription::CertificateRequired
        | AlertDescription::BadCertificate
        | AlertDescription::UnknownCA)) => Failure::new(
            Reason::TLSClientCertRequired,
            format!(
                "{host} requires a client certificate that was not offered or not accepted (alert: {})",
                alert_words(*a)
            ),
        ),
        E::AlertReceived(a) => Failure::new(
            Reason::TLSHandshakeFailed,
            format!("TLS handshake with {host} failed: the server sent the alert {}", alert_words(*a)),
        ),
        other => Failure::new(
            Reason::TLSHandshakeFailed,
            format!("TLS handshake with {host} failed: {other}"),
        ),
    }
}

/// `HandshakeFailure` → `handshake failure`.
fn alert_words(a: AlertDescription) -> String {
    let name = format!("{a:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn certificate_failure(host: &str, ce: &CertificateError, leaf: Option<&TlsInfo>) -> Failure {
    let issuer = leaf
        .map(|l| format!("; issuer {}", l.issuer))
        .unwrap_or_default();
    let dates = leaf.map(|l| (l.not_after.clone(), l.days_to_expiry));
    let (reason, what) = match ce {
        CertificateError::UnknownIssuer => (
            Reason::TLSUnknownAuthority,
            match leaf {
                Some(l) => format!(
                    "is signed by {}, an authority the node does not trust",
                    l.issuer
                ),
                None => "is signed by an authority the node does not trust".to_string(),
            },
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
            Reason::TLSCertificateExpired,
            match dates {
                Some((d, days)) => format!(
                    "expired {}, {} days ago{issuer}",
                    d.get(..10).unwrap_or(&d),
                    crate::text::thousands(days.unsigned_abs())
                ),
                None => "has expired".to_string(),
            },
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
            Reason::TLSCertificateNotYetValid,
            format!("is not valid yet{issuer}"),
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
            Reason::TLSNameMismatch,
            match leaf {
                Some(l) if !l.sans.is_empty() => {
                    format!(
                        "is for {}, not {host}",
                        crate::redact::list(&l.sans, crate::redact::LIST_FIRST, ", ")
                    )
                }
                _ => "is not valid for this name".to_string(),
            },
        ),
        other => (
            Reason::TLSHandshakeFailed,
            format!("was rejected ({other})"),
        ),
    };
    Failure::new(reason, format!("the certificate of {host} {what}"))
}

fn describe(host: &str, stream: &TlsStream<TcpStream>) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    let mut info = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| leaf_info(host, leaf.as_ref()))
        .unwrap_or_else(|| TlsInfo {
            host: host.to_string(),
            ..TlsInfo::default()
        });
    info.version = conn
        .protocol_version()
        .map(|v| format!("{v:?}").replace('_', "."))
        .unwrap_or_default();
    info.cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    info
}

/// What a leaf certificate says: subject, issuer, names, expiry (RFC 3339) and days left.
fn leaf_info(host: &str, der: &[u8]) -> TlsInfo {
    let mut info = TlsInfo {
        host: host.to_string(),
        ..TlsInfo::default()
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return info;
    };
    // The server's text, shown in messages and conditions: sanitized and short.
    info.subject = crate::redact::text_max(&cert.subject().to_string(), 128);
    info.issuer = crate::redact::text_max(&cert.issuer().to_string(), 128);
    let not_after = cert.validity().not_after;
    info.not_after_unix = not_after.timestamp();
    info.not_after = jiff::Timestamp::from_second(info.not_after_unix)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    info.days_to_expiry = info.not_after_unix.saturating_sub(now).div_euclid(86_400);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        info.sans = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                x509_parser::extensions::GeneralName::IPAddress(b) => ip_from_bytes(b),
                other => other.to_string(),
            })
            .take(16)
            .map(|n| crate::redact::text_max(&n, 128))
            .collect();
    }
    info
}

fn ip_from_bytes(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => hex::encode(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_without_a_bundle_trusts_nothing_but_its_extra_cas() {
        let s = TlsSettings {
            no_system_pool: true,
            ..TlsSettings::default()
        };
        // Builds (an empty pool is a valid, if unforgiving, configuration).
        assert!(client_config(&s).is_ok());
        let missing = TlsSettings {
            extra_ca_files: vec!["/nonexistent/ca.pem".into()],
            no_system_pool: true,
            ..TlsSettings::default()
        };
        let e = client_config(&missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
