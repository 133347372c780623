//! Test PKI built with rcgen: a server CA with leaf variants, an unknown CA, a client CA with a client
//! cert, and a token-signing CA + leaf for the registry's `auth.token.rootcertbundle`.
//!
//! rustls rejects a self-signed CA presented as the server's own certificate (`CaUsedAsEndEntity`),
//! so every server certificate here is a leaf signed by a separate CA.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// SANs of the default server leaf.
pub const SERVER_SANS: &[&str] = &["localhost", "registry.test", "127.0.0.1", "::1"];

/// A certificate file and its private key file (PEM, PKCS#8 key).
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertKey {
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read cert pem")
    }
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).expect("read key pem")
    }
}

/// All PEM files live in `dir()`, removed on Drop.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Server CA (trust this to verify `server` and the variants below).
    pub ca_cert: PathBuf,
    /// Leaf for `SERVER_SANS`, valid 1975..4096.
    pub server: CertKey,
    /// Leaf for `SERVER_SANS`, valid 2020-01-01..2021-01-01.
    pub expired: CertKey,
    /// Leaf for `SERVER_SANS`, valid from 2090.
    pub not_yet_valid: CertKey,
    /// Leaf for `wrong.test` only.
    pub wrong_name: CertKey,
    /// A second CA nobody trusts, and a leaf for `SERVER_SANS` it signed.
    pub unknown_ca_cert: PathBuf,
    pub unknown_ca_leaf: CertKey,
    /// CA for client certificates (`http.tls.clientcas`), and a client cert (EKU clientAuth).
    pub client_ca_cert: PathBuf,
    pub client: CertKey,
    /// Token signing: CA (registry `rootcertbundle`) and the signing leaf (ES256 key, goes in `x5c`).
    pub token_ca_cert: PathBuf,
    pub token_signing: CertKey,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().expect("keygen"))
        .expect("self-sign CA")
}

/// Validity window of a leaf.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    Valid,
    Expired,
    NotYetValid,
}

/// Which extended key usage a leaf carries.
#[derive(Clone, Copy, Debug)]
pub enum Usage {
    Server,
    Client,
    /// No EKU (token signing).
    Any,
}

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write pem");
    p
}

fn issue(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    validity: Validity,
    usage: Usage,
) -> CertKey {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    match usage {
        Usage::Server => p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Any => {}
    }
    match validity {
        Validity::Valid => {}
        Validity::Expired => {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        Validity::NotYetValid => {
            p.not_before = date_time_ymd(2090, 1, 1);
            p.not_after = date_time_ymd(2091, 1, 1);
        }
    }
    let key = KeyPair::generate().expect("keygen");
    let cert = p.signed_by(&key, issuer).expect("sign leaf");
    CertKey {
        cert: write(dir, &format!("{name}.crt"), &cert.pem()),
        key: write(dir, &format!("{name}.key"), &key.serialize_pem()),
    }
}

impl Pki {
    /// Generates everything (ECDSA P-256 keys; ~10 ms).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("pki-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let ca = new_ca("pullprobe test CA");
        let ca_cert = write(d, "ca.crt", &ca.pem());
        let server = issue(
            d,
            &ca,
            "server",
            SERVER_SANS,
            Validity::Valid,
            Usage::Server,
        );
        let expired = issue(
            d,
            &ca,
            "expired",
            SERVER_SANS,
            Validity::Expired,
            Usage::Server,
        );
        let not_yet_valid = issue(
            d,
            &ca,
            "not-yet-valid",
            SERVER_SANS,
            Validity::NotYetValid,
            Usage::Server,
        );
        let wrong_name = issue(
            d,
            &ca,
            "wrong-name",
            &["wrong.test"],
            Validity::Valid,
            Usage::Server,
        );
        let unknown = new_ca("unknown test CA");
        let unknown_ca_cert = write(d, "unknown-ca.crt", &unknown.pem());
        let unknown_ca_leaf = issue(
            d,
            &unknown,
            "unknown-ca-leaf",
            SERVER_SANS,
            Validity::Valid,
            Usage::Server,
        );
        let client_ca = new_ca("pullprobe client CA");
        let client_ca_cert = write(d, "client-ca.crt", &client_ca.pem());
        let client = issue(
            d,
            &client_ca,
            "client",
            &["client.test"],
            Validity::Valid,
            Usage::Client,
        );
        let token_ca = new_ca("pullprobe token CA");
        let token_ca_cert = write(d, "token-ca.crt", &token_ca.pem());
        let token_signing = issue(
            d,
            &token_ca,
            "token-signing",
            &["auth.test"],
            Validity::Valid,
            Usage::Any,
        );
        Pki {
            dir,
            ca,
            ca_cert,
            server,
            expired,
            not_yet_valid,
            wrong_name,
            unknown_ca_cert,
            unknown_ca_leaf,
            client_ca_cert,
            client,
            token_ca_cert,
            token_signing,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Another leaf from the server CA (file stem `name`).
    pub fn leaf(&self, name: &str, sans: &[&str], validity: Validity, usage: Usage) -> CertKey {
        issue(self.dir.path(), &self.ca, name, sans, validity, usage)
    }

    /// A `certs.d`-style directory for skopeo's `--cert-dir` / containerd-like layouts:
    /// `ca.crt` (server CA) and, with `client`, `client.cert` + `client.key`.
    pub fn skopeo_cert_dir(&self, client: bool) -> PathBuf {
        let name = if client { "certdir-client" } else { "certdir" };
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir certdir");
        std::fs::copy(&self.ca_cert, d.join("ca.crt")).expect("copy ca");
        if client {
            std::fs::copy(&self.client.cert, d.join("client.cert")).expect("copy client cert");
            std::fs::copy(&self.client.key, d.join("client.key")).expect("copy client key");
        }
        d
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
