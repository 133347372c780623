//! The rollout guard's webhook as tests and the bench run it on the REAL kube-apiserver:
//! the CRDs applied, the webhook started in-process on its own runtime exactly as
//! `pullprobe controller` starts it (`webhook::start` with the controller's [`Fleet`]
//! caches), and a ValidatingWebhookConfiguration as shipped but reaching it by URL on
//! 127.0.0.1 (its certificate also names that address).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::kube::KubeApiServer;
use pullprobe::controller::fleet::Fleet;
use pullprobe::controller::webhook::{self, FleetView, WebhookConfig};

/// The controller's namespace.
pub const NS: &str = "pullprobe";

/// The webhook configuration as shipped (failurePolicy Ignore, 1 s, no side effects), but
/// reaching the in-process webhook by URL; its caBundle is the controller's to fill.
pub fn create_webhook_config(api: &KubeApiServer, port: u16) {
    let rules = json!([
        {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments", "statefulsets", "daemonsets"], "operations": ["CREATE", "UPDATE"]},
        {"apiGroups": ["batch"], "apiVersions": ["v1", "v1beta1"], "resources": ["cronjobs"], "operations": ["CREATE", "UPDATE"]}]);
    let vwc = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": webhook::WEBHOOK_CONFIG},
        "webhooks": [{"name": "rollout-guard.pullprobe.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "failurePolicy": "Ignore", "timeoutSeconds": 1, "rules": rules,
                      "namespaceSelector": {"matchExpressions": [{"key": "pullprobe.io/rollout-guard", "operator": "Exists"}]},
                      "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")}}]});
    api.create_if_missing(
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        &vwc,
        api.admin_token(),
    );
}

/// The webhook on its own runtime (dropping the runtime stops it: the controller gone).
pub struct Controller {
    rt: tokio::runtime::Runtime,
    hook: Option<webhook::Webhook>,
    _leader: tokio::sync::watch::Sender<bool>,
}

impl Controller {
    /// The webhook with `token`'s identity (see [`controller_token`]).
    pub fn start(api: &KubeApiServer, token: &str, lifetime: Duration) -> Controller {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = api.kube_config(token);
        let (tx, leader) = tokio::sync::watch::channel(true);
        let hook = rt.block_on(async move {
            let client = ::kube::Client::try_from(config).unwrap();
            let fleet: Arc<dyn FleetView> = Arc::new(Fleet::start(client.clone()).await.unwrap());
            let mut cfg = WebhookConfig::new(NS);
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            cfg.cert.lifetime = lifetime;
            cfg.cert.poll = Duration::from_millis(200);
            cfg.cert.resync = Duration::from_secs(1);
            cfg.cert.extra_names = vec!["127.0.0.1".into()];
            webhook::start(client, fleet, cfg, leader).await.unwrap()
        });
        Controller {
            rt,
            hook: Some(hook),
            _leader: tx,
        }
    }

    pub fn port(&self) -> u16 {
        self.hook.as_ref().unwrap().addr.port()
    }

    pub fn stop(mut self) {
        drop(self.hook.take());
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A token of ServiceAccount `pullprobe-controller` bound by the shipped
/// `manifests/controller-rbac.yaml`, and the shipped Secret (no data), as installed.
pub fn controller_token(api: &KubeApiServer) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.create_namespace(NS);
    api.apply_file(&root.join("controller-rbac.yaml"));
    api.create_if_missing(
        &format!("/api/v1/namespaces/{NS}/secrets"),
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": webhook::SECRET, "namespace": NS}}),
        api.admin_token(),
    );
    api.create_service_account(NS, "pullprobe-controller")
}

/// Namespaces `guarded` (label `pullprobe.io/rollout-guard: warn`), `strict` (`enforce`) and
/// `plain` (no label).
pub fn create_guarded_namespaces(api: &KubeApiServer) {
    for (ns, label) in [
        ("guarded", Some("warn")),
        ("strict", Some("enforce")),
        ("plain", None),
    ] {
        let mut meta = json!({"name": ns});
        if let Some(l) = label {
            meta["labels"] = json!({"pullprobe.io/rollout-guard": l});
        }
        api.create_if_missing(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}),
            api.admin_token(),
        );
    }
}
