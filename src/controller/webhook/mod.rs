//! The rollout guard's admission webhook: `POST /validate` on :8443 over TLS answers
//! `admission.k8s.io/v1` AdmissionReviews for apps/v1 Deployment, StatefulSet, DaemonSet and
//! batch/v1 CronJob CREATEs and image-changing UPDATEs in namespaces labelled
//! `pullprobe.io/rollout-guard`. It answers from the fleet's caches only (never a request per
//! review), well within the API server's 1 s deadline: `allowed: true` with a warning per
//! image some candidate node cannot pull (`kubectl apply` prints them), and a denial only
//! in namespaces labelled `enforce`. ValidatingWebhookConfiguration `pullprobe-rollout-guard`
//! has `failurePolicy: Ignore`: when no replica answers, writes go through.
//!
//! ```text
//!  leader: cert::keep ──▶ Secret pullprobe-webhook-tls ──get──▶ every replica: cert::follow ──▶ CertSlot
//!          └──────────▶ caBundle of pullprobe-rollout-guard        API server ──TLS──▶ server ──▶ review
//!                                                      fleet caches (Nodes, NodePullStatus) ──┘   ▲
//!                                                      labelled Namespaces (stores) ─────────────┘
//! ```

pub mod assess;
pub mod cert;
pub mod review;
pub mod server;
pub mod stores;
pub mod view;
pub mod warn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use cert::{CertConfig, CertError};
pub use review::{Mode, Namespaces, GUARD_LABEL};
pub use view::{Candidate, Candidates, FleetView};

/// Secret holding the serving certificate.
pub const SECRET: &str = "pullprobe-webhook-tls";
/// Service in front of the replicas (port 443 → 8443).
pub const SERVICE: &str = "pullprobe-webhook";
/// The ValidatingWebhookConfiguration whose `caBundle` the leader keeps.
pub const WEBHOOK_CONFIG: &str = "pullprobe-rollout-guard";
/// The port the replicas listen on.
pub const PORT: u16 = 8443;
/// Lifetime of the certificate (rotated at 2/3 of it).
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Everything the webhook needs to run.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub cert: CertConfig,
}

impl WebhookConfig {
    /// The shipped names in `namespace`, listening on `[::]:8443`.
    pub fn new(namespace: &str) -> WebhookConfig {
        WebhookConfig {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, PORT)),
            cert: CertConfig {
                namespace: namespace.to_string(),
                service: SERVICE.to_string(),
                secret: SECRET.to_string(),
                webhook_config: WEBHOOK_CONFIG.to_string(),
                lifetime: CERT_LIFETIME,
                extra_names: Vec::new(),
                poll: Duration::from_secs(10),
                resync: Duration::from_secs(60),
            },
        }
    }
}

/// Why the webhook cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook listener: {0}")]
    Listen(#[from] crate::agent::serve::HttpError),
    #[error("webhook TLS: {0}")]
    Tls(String),
}

/// A running webhook (tasks end when it is dropped).
pub struct Webhook {
    pub addr: SocketAddr,
    pub slot: Arc<cert::CertSlot>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhook {
    /// Waits until the listener stops (it does not, unless its task panics).
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.pop() {
            let _ = server.await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the webhook inside the controller: certificate upkeep while `leader` is true,
/// every replica following the Secret, the namespace cache, and the listener on
/// `cfg.listen`, answering from `fleet`. Call inside a tokio runtime.
pub async fn start(
    client: kube::Client,
    fleet: Arc<dyn FleetView>,
    cfg: WebhookConfig,
    leader: watch::Receiver<bool>,
) -> Result<Webhook, WebhookError> {
    let slot = Arc::new(cert::CertSlot::default());
    let namespaces: Arc<dyn Namespaces> =
        Arc::new(stores::GuardedNamespaces::start(client.clone()));
    let mut tasks = vec![
        tokio::spawn(cert::keep(client.clone(), cfg.cert.clone(), leader)),
        tokio::spawn(cert::follow(client, cfg.cert.clone(), slot.clone())),
    ];
    let (addr, server) = server::serve(cfg.listen, slot.clone(), fleet, namespaces).await?;
    tasks.push(server);
    Ok(Webhook { addr, slot, tasks })
}

/// [`start`], then serve until the listener stops: `run_controller`'s entry point.
pub async fn run(
    client: kube::Client,
    fleet: Arc<dyn FleetView>,
    cfg: WebhookConfig,
    leader: watch::Receiver<bool>,
) -> Result<(), WebhookError> {
    start(client, fleet, cfg, leader).await?.wait().await;
    Ok(())
}
