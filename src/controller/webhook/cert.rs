//! The webhook's serving certificate: made, kept and rotated by the controller leader, served
//! by every replica.
//!
//! - The leader keeps Secret `pullprobe-webhook-tls` (type `kubernetes.io/tls`): `tls.crt`,
//!   `tls.key` and `ca.crt` — the CA that signed `tls.crt` first, the previous CA after it
//!   while certificates it signed may still be served. A CA signs one serving certificate
//!   and its key is dropped at once: no CA key is stored anywhere.
//! - It writes `ca.crt` into the `caBundle` of every webhook of ValidatingWebhookConfiguration
//!   `pullprobe-rollout-guard`, and again within a minute when a re-applied config lost it.
//! - At 2/3 of the certificate's lifetime it makes a new CA and certificate: first the
//!   `caBundle` (new and old CA: the API server trusts both), then the Secret. Every replica
//!   reads the Secret every few seconds and serves a new certificate from the next
//!   handshake on, no restart.
//! - Only `get`, `update` and `patch` of those two named objects: the RBAC names them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// Why the certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret {secret}: {what}")]
    Stored { secret: String, what: &'static str },
    #[error("{verb} {what}: {source}")]
    Api {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the certificate lives and how long it lasts.
#[derive(Clone, Debug)]
pub struct CertConfig {
    /// The controller's namespace (the Secret's, and the Service's in the certificate name).
    pub namespace: String,
    /// Service in front of the webhook: the certificate names `SERVICE.NAMESPACE.svc`.
    pub service: String,
    pub secret: String,
    /// ValidatingWebhookConfiguration whose `caBundle`s the leader keeps.
    pub webhook_config: String,
    /// Lifetime of each CA and certificate; rotated at 2/3 of it.
    pub lifetime: Duration,
    /// More names (or IP addresses) for the certificate, e.g. `127.0.0.1` in tests.
    pub extra_names: Vec<String>,
    /// How often every replica reads the Secret.
    pub poll: Duration,
    /// How often the leader checks the Secret and the caBundle (besides rotation times).
    pub resync: Duration,
}

/// After a failed API call.
const RETRY: Duration = Duration::from_secs(5);

/// A certificate, its key and the CA bundle that verifies it (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_bundle_pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Material {
    /// When the leader replaces it: 2/3 of the way from `not_before` to `not_after`.
    pub fn rotate_at(&self) -> Timestamp {
        let life = self.not_after.duration_since(self.not_before);
        self.not_before
            .checked_add(life / 3 * 2)
            .unwrap_or(self.not_before)
    }

    /// The first certificate of the bundle (the CA that signed `cert_pem`).
    fn current_ca(&self) -> Option<String> {
        pems(&self.ca_bundle_pem).into_iter().next()
    }
}

/// A new CA and a serving certificate it signs, valid for `lifetime` from just before `now`.
pub fn generate(
    names: &[String],
    lifetime: Duration,
    now: Timestamp,
) -> Result<Material, CertError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // Valid from a little before now (clocks differ): a minute, a quarter of a short lifetime.
    let back = lifetime.as_secs().min(240) / 4;
    let start = now
        .as_second()
        .saturating_sub(i64::try_from(back).unwrap_or(0))
        .max(0)
        .unsigned_abs();
    let not_before = epoch + Duration::from_secs(start);
    let not_after = not_before + lifetime;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pullprobe-webhook-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("pullprobe-webhook"),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    (leaf.not_before, leaf.not_after) = (not_before, not_after);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    let secs = |s: u64| Timestamp::from_second(i64::try_from(s).unwrap_or(i64::MAX)).unwrap_or(now);
    Ok(Material {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_bundle_pem: ca.pem(),
        not_before: secs(start),
        not_after: secs(start.saturating_add(lifetime.as_secs())),
    })
}

/// The certificate's names: `SERVICE.NAMESPACE.svc` (what the API server checks for a
/// `service` client config), its `.cluster.local` form, and `extra_names`.
pub fn names(cfg: &CertConfig) -> Vec<String> {
    let svc = format!("{}.{}.svc", cfg.service, cfg.namespace);
    let mut out = vec![svc.clone(), format!("{svc}.cluster.local")];
    out.extend(cfg.extra_names.iter().cloned());
    out
}

/// The PEM blocks of a bundle, each as its own PEM text.
fn pems(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The validity of the first certificate in `pem`.
fn validity(pem: &str) -> Option<(Timestamp, Timestamp)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    let v = cert.validity();
    Some((
        Timestamp::from_second(v.not_before.timestamp()).ok()?,
        Timestamp::from_second(v.not_after.timestamp()).ok()?,
    ))
}

/// What the Secret holds, if it is complete and its certificate parses.
pub fn from_secret(s: &Secret) -> Option<Material> {
    let data = s.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|t| !t.is_empty())
    };
    let cert_pem = text("tls.crt")?;
    let (not_before, not_after) = validity(&cert_pem)?;
    Some(Material {
        key_pem: text("tls.key")?,
        ca_bundle_pem: text("ca.crt")?,
        cert_pem,
        not_before,
        not_after,
    })
}

/// The Secret's `data`: the certificate, its key and the CA bundle.
fn secret_data(m: &Material) -> std::collections::BTreeMap<String, ByteString> {
    let b = |s: &str| ByteString(s.as_bytes().to_vec());
    [
        ("tls.crt".to_string(), b(&m.cert_pem)),
        ("tls.key".to_string(), b(&m.key_pem)),
        ("ca.crt".to_string(), b(&m.ca_bundle_pem)),
    ]
    .into()
}

/// A new Secret (when the manifests did not ship one).
fn new_secret(cfg: &CertConfig, m: &Material) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(cfg.secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_string(),
                    "pullprobe".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(secret_data(m)),
        ..Default::default()
    }
}

fn api_err(verb: &'static str, what: impl Into<String>) -> impl FnOnce(kube::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Api { verb, what, source }
}

/// One pass of the leader: the Secret current (made or rotated when due) and every
/// `caBundle` equal to its `ca.crt`. Returns when the next rotation is due.
pub async fn reconcile(
    client: &kube::Client,
    cfg: &CertConfig,
    now: Timestamp,
) -> Result<Timestamp, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let what = format!("secret {}/{}", cfg.namespace, cfg.secret);
    let stored = secrets
        .get_opt(&cfg.secret)
        .await
        .map_err(api_err("get", what.clone()))?;
    let current = stored.as_ref().and_then(from_secret);
    if let Some(m) = current.as_ref().filter(|m| now < m.rotate_at()) {
        ensure_ca_bundle(client, cfg, &m.ca_bundle_pem).await?;
        return Ok(m.rotate_at());
    }
    let mut new = generate(&names(cfg), cfg.lifetime, now)?;
    // Certificates of the old CA may still be served until every replica has the new one.
    if let Some(old_ca) = current
        .as_ref()
        .filter(|m| now < m.not_after)
        .and_then(Material::current_ca)
    {
        new.ca_bundle_pem.push_str(&old_ca);
    }
    ensure_ca_bundle(client, cfg, &new.ca_bundle_pem).await?;
    // The shipped Secret (type, labels) is kept; only its data changes. The update carries
    // the resourceVersion it was read at: a concurrent writer makes it fail, not overwrite.
    match stored {
        Some(mut secret) => {
            secret.data = Some(secret_data(&new));
            secret.string_data = None;
            secrets
                .replace(&cfg.secret, &PostParams::default(), &secret)
                .await
                .map_err(api_err("update", what))?
        }
        None => secrets
            .create(&PostParams::default(), &new_secret(cfg, &new))
            .await
            .map_err(api_err("create", what))?,
    };
    tracing::info!(target: "pullprobe::webhook", not_after = %new.not_after, "webhook certificate made");
    Ok(new.rotate_at())
}

/// Every webhook of the configuration trusts `bundle` (a JSON patch guarded by the
/// resourceVersion it was read at). A missing configuration is not an error: nothing calls
/// the webhook then.
async fn ensure_ca_bundle(
    client: &kube::Client,
    cfg: &CertConfig,
    bundle: &str,
) -> Result<(), CertError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("validatingwebhookconfiguration {}", cfg.webhook_config);
    let Some(vwc) = api
        .get_opt(&cfg.webhook_config)
        .await
        .map_err(api_err("get", what.clone()))?
    else {
        tracing::debug!(target: "pullprobe::webhook", "{what} not found: no caBundle to write");
        return Ok(());
    };
    let want = ByteString(bundle.as_bytes().to_vec());
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion",
        "value": vwc.metadata.resource_version.clone().unwrap_or_default(),
    })];
    for (i, w) in vwc.webhooks.iter().flatten().enumerate() {
        if w.client_config.ca_bundle.as_ref() != Some(&want) {
            ops.push(serde_json::json!({
                "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": base64::engine::general_purpose::STANDARD.encode(bundle),
            }));
        }
    }
    if ops.len() == 1 {
        return Ok(());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|_| CertError::Stored {
            secret: cfg.secret.clone(),
            what: "caBundle patch",
        })?;
    api.patch(
        &cfg.webhook_config,
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(api_err("patch", what))?;
    Ok(())
}

/// The leader's loop: [`reconcile`] while `leader` is true, again at the rotation time and
/// every `cfg.resync` (a re-applied configuration gets its caBundle back then). Returns when
/// `leader`'s sender is gone. Reads by name only (`get`): the shipped RBAC names the Secret
/// and the configuration and grants no list or watch.
pub async fn keep(client: kube::Client, cfg: CertConfig, mut leader: watch::Receiver<bool>) {
    loop {
        if !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let wait = match reconcile(&client, &cfg, Timestamp::now()).await {
            Ok(next) => {
                let left = next.duration_since(Timestamp::now()).unsigned_abs();
                left.min(cfg.resync).max(Duration::from_millis(100))
            }
            Err(e) => {
                tracing::warn!(target: "pullprobe::webhook", error = %e, "webhook certificate");
                RETRY.min(cfg.resync)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = leader.changed() => if r.is_err() { return },
        }
    }
}

/// The certificate every handshake gets: the latest one read from the Secret.
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertSlot {
    /// Serve `m` from the next handshake on.
    pub fn set(&self, m: &Material) -> Result<(), CertError> {
        let key = certified_key(m).ok_or(CertError::Stored {
            secret: String::new(),
            what: "tls.crt or tls.key is not a PEM certificate and key",
        })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
        Ok(())
    }

    /// True once a certificate is loaded.
    pub fn loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

fn certified_key(m: &Material) -> Option<CertifiedKey> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).ok()?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    (!certs.is_empty()).then(|| CertifiedKey::new(certs, signer))
}

/// Every replica: serve what the Secret holds, read every `cfg.poll` (a rotation leaves
/// months before the old certificate expires, and the caBundle trusts both CAs meanwhile).
pub async fn follow(client: kube::Client, cfg: CertConfig, slot: Arc<CertSlot>) {
    let api: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let mut served: Option<String> = None;
    loop {
        match api.get_opt(&cfg.secret).await {
            Ok(found) => {
                let m = found.as_ref().and_then(from_secret);
                match m {
                    Some(m) if served.as_deref() != Some(m.cert_pem.as_str()) => {
                        match slot.set(&m) {
                            Ok(()) => served = Some(m.cert_pem),
                            Err(e) => {
                                tracing::warn!(target: "pullprobe::webhook", error = %e, "webhook Secret")
                            }
                        }
                    }
                    Some(_) => {}
                    None => {
                        tracing::debug!(target: "pullprobe::webhook", secret = %cfg.secret, "no certificate in the webhook Secret yet")
                    }
                }
            }
            Err(e) => {
                tracing::debug!(target: "pullprobe::webhook", error = %e, "reading the webhook Secret")
            }
        }
        tokio::time::sleep(cfg.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_certificates_verify_and_rotate_at_two_thirds() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let m = generate(
            &["svc.ns.svc".into(), "127.0.0.1".into()],
            Duration::from_secs(3000),
            now,
        )
        .unwrap();
        assert_eq!(m.not_after.duration_since(m.not_before).as_secs(), 3000);
        assert_eq!(m.rotate_at().duration_since(m.not_before).as_secs(), 2000);
        let (nb, na) = validity(&m.cert_pem).unwrap();
        assert_eq!(
            (nb, na),
            (m.not_before, m.not_after),
            "what the Secret's reader sees"
        );
        assert!(certified_key(&m).is_some());
        let s = new_secret(
            &CertConfig {
                namespace: "ns".into(),
                service: "svc".into(),
                secret: "s".into(),
                webhook_config: "w".into(),
                lifetime: Duration::from_secs(3000),
                extra_names: vec![],
                poll: Duration::from_secs(1),
                resync: Duration::from_secs(1),
            },
            &m,
        );
        assert_eq!(from_secret(&s), Some(m.clone()));
        // The leaf verifies against the bundle, as the API server checks it.
        let ca = rustls_pki_types::CertificateDer::from(
            x509_parser::pem::parse_x509_pem(m.ca_bundle_pem.as_bytes())
                .unwrap()
                .1
                .contents,
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let leaf = x509_parser::pem::parse_x509_pem(m.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let leaf = rustls_pki_types::CertificateDer::from(leaf);
        let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let t = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            now.as_second() as u64
        ));
        ee.verify_for_usage(
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
            &roots.roots,
            &[],
            t,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        ee.verify_is_valid_for_subject_name(
            &rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn bundles_split_into_certificates() {
        let a = "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n";
        let b = "-----BEGIN CERTIFICATE-----\nBB\n-----END CERTIFICATE-----\n";
        assert_eq!(pems(&format!("{a}{b}")), vec![a.to_string(), b.to_string()]);
    }
}
