//! Oracle pods: a hostNetwork pod with `imagePullPolicy: Always` (containerd keeps images between
//! pods; with `IfNotPresent` the kubelet would report no pull at all), scheduled by the real
//! scheduler onto the node, and the kubelet's verdict read from its own Events
//! (`pkg/kubelet/images/image_manager.go` of 1.20: `Pulled` "Successfully pulled image …",
//! `Failed` "Failed to pull image \"…\": rpc error: … desc = <containerd's error>", then
//! `Failed` "Error: ErrImagePull").

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::kube::KubeApiServer;

/// A pod to create on the node.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub image: String,
    /// `(registry host, user, password)`: a `kubernetes.io/dockerconfigjson` Secret named
    /// `<pod>-pull` is created and listed in `imagePullSecrets`.
    pub pull_secret: Option<(String, String, String)>,
    /// Container command (`command:`); the image's entrypoint when `None`.
    pub command: Option<Vec<String>>,
}

impl PodSpec {
    /// `default/NAME` running `IMAGE`.
    pub fn new(name: &str, image: &str) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: "default".into(),
            image: image.into(),
            pull_secret: None,
            command: None,
        }
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Pull with a pod pull secret for `registry` (`HOST[:PORT]`, as in the image reference).
    pub fn pull_secret(mut self, registry: &str, user: &str, password: &str) -> Self {
        self.pull_secret = Some((registry.into(), user.into(), password.into()));
        self
    }

    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = Some(argv.iter().map(|s| s.to_string()).collect());
        self
    }

    /// What the kubelet (1.20, `kubelet_pods.go`) logs when it cannot read this pod's pull
    /// secret and pulls without it.
    pub fn secret_not_retrieved_line(&self) -> String {
        let ns = &self.namespace;
        format!(
            "Unable to retrieve pull secret {ns}/{} for {ns}/{}",
            self.secret_name(),
            self.name
        )
    }

    pub fn secret_name(&self) -> String {
        format!("{}-pull", self.name)
    }

    fn manifest(&self) -> Value {
        let mut c = json!({"name": "c", "image": self.image, "imagePullPolicy": "Always"});
        if let Some(cmd) = &self.command {
            c["command"] = json!(cmd);
        }
        let mut spec = json!({
            "hostNetwork": true,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [c],
        });
        if self.pull_secret.is_some() {
            spec["imagePullSecrets"] = json!([{"name": self.secret_name()}]);
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec})
    }

    fn secret(&self) -> Option<Value> {
        let (reg, user, pass) = self.pull_secret.as_ref()?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let auth = b64.encode(format!("{user}:{pass}"));
        let cfg = json!({"auths": {reg: {"auth": auth}}}).to_string();
        Some(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": self.namespace},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64.encode(cfg)}}))
    }
}

/// A pod the API server accepted.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// The kubelet's verdict on one pull, from its Events on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullVerdict {
    /// `Pulled`: "Successfully pulled image … in …".
    Pulled { message: String },
    /// `Failed` "Failed to pull image \"…\": …" (the container then waits in `ErrImagePull`);
    /// `message` carries containerd's error text.
    ErrImagePull { message: String },
    /// Another kubelet warning that ends the pull attempt: `InspectFailed` (invalid reference),
    /// `ErrImageNeverPull`, `FailedCreatePodSandBox`, …
    Failed { reason: String, message: String },
}

impl PullVerdict {
    pub fn is_pulled(&self) -> bool {
        matches!(self, PullVerdict::Pulled { .. })
    }

    pub fn message(&self) -> &str {
        match self {
            PullVerdict::Pulled { message }
            | PullVerdict::ErrImagePull { message }
            | PullVerdict::Failed { message, .. } => message,
        }
    }
}

/// Creates the pod's pull Secret, if it has one, as admin.
pub fn create_secret(api: &KubeApiServer, spec: &PodSpec) {
    if let Some(secret) = spec.secret() {
        let ns = &spec.namespace;
        api.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            api.admin_token(),
            Some(&secret),
        );
    }
}

/// Creates the pod itself as admin (its pull Secret must exist already: [`create_secret`]).
pub fn create_pod(api: &KubeApiServer, spec: &PodSpec) -> Pod {
    let ns = &spec.namespace;
    let v = api.must(
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods"),
        api.admin_token(),
        Some(&spec.manifest()),
    );
    Pod {
        name: spec.name.clone(),
        namespace: ns.clone(),
        uid: v["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Creates the pod and its pull Secret as admin.
pub fn create(api: &KubeApiServer, spec: &PodSpec) -> Pod {
    create_secret(api, spec);
    create_pod(api, spec)
}

/// The name of the pod that proves the node can read `spec`'s pull Secret
/// ([`secret_reader_manifest`]).
pub fn secret_reader_name(spec: &PodSpec) -> String {
    format!("{}-reader", spec.secret_name())
}

/// A pod bound to `node` (no scheduler) that runs `image` (already on the node) with the pull
/// Secret of `spec` as an environment variable: the kubelet starts its container only once it
/// has read that Secret. The kubelet reads pull secrets through the same per-Secret cache (a
/// watch, `configMapAndSecretChangeDetectionStrategy: Watch`), kept while any pod on the node
/// refers to the Secret, and the API server's Node authorizer lets the node read the Secret
/// because this pod is bound to it. So while this pod runs, a new pod with the same pull Secret
/// gets it on its first pull — without it, the kubelet can see the new pod before the Node
/// authorizer has linked it to its Secret, and pulls without it ("Unable to retrieve pull secret").
pub fn secret_reader_manifest(spec: &PodSpec, node: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": secret_reader_name(spec), "namespace": spec.namespace},
    "spec": {
        "nodeName": node,
        "hostNetwork": true,
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "PULL_SECRET", "valueFrom": {"secretKeyRef": {
                "name": spec.secret_name(), "key": ".dockerconfigjson"}}}],
        }],
    }})
}

/// Is the pod's first container running (Pod JSON)?
pub fn is_running(pod: &Value) -> bool {
    !pod["status"]["containerStatuses"][0]["state"]["running"].is_null()
}

/// core/v1 Events about `pod` (this incarnation: matched by uid), oldest first.
pub fn events(api: &KubeApiServer, pod: &Pod) -> Vec<Value> {
    let path = format!(
        "/api/v1/namespaces/{}/events?fieldSelector=involvedObject.uid%3D{}",
        pod.namespace, pod.uid
    );
    let v = api.must("GET", &path, api.admin_token(), None);
    let mut items = v["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| e["firstTimestamp"].as_str().unwrap_or_default().to_string());
    items
}

/// The verdict among `events` (oldest first), if any: the first pull outcome (`Pulled`, or
/// `Failed` "Failed to pull image …"), else the first warning that ends the attempt without a
/// pull. The kubelet's `Failed` "Error: ErrImagePull" / "Error: …" summaries that follow a pull
/// or a container start are never a verdict of their own.
pub fn verdict_of(events: &[Value]) -> Option<PullVerdict> {
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    let pull = events.iter().find_map(|e| {
        let (reason, message) = (text(e, "reason"), text(e, "message"));
        match reason.as_str() {
            "Pulled" => Some(PullVerdict::Pulled { message }),
            "Failed" if message.starts_with("Failed to pull image") => {
                Some(PullVerdict::ErrImagePull { message })
            }
            _ => None,
        }
    });
    pull.or_else(|| {
        events.iter().find_map(|e| {
            let (reason, message) = (text(e, "reason"), text(e, "message"));
            let ends = matches!(
                reason.as_str(),
                "InspectFailed" | "ErrImageNeverPull" | "FailedCreatePodSandBox"
            ) || (reason == "Failed" && !message.starts_with("Error: "));
            ends.then_some(PullVerdict::Failed { reason, message })
        })
    })
}

/// Waits (bounded) for the kubelet's verdict; `Err` lists the events seen when none came.
pub fn wait_verdict(
    api: &KubeApiServer,
    pod: &Pod,
    timeout: Duration,
) -> Result<PullVerdict, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let ev = events(api, pod);
        if let Some(v) = verdict_of(&ev) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = ev
                .iter()
                .map(|e| format!("{}: {}", e["reason"], e["message"]))
                .collect();
            return Err(format!(
                "no pull verdict for pod {}/{} within {timeout:?}; events: {seen:#?}",
                pod.namespace, pod.name
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes the pod at once (grace 0), its pull Secret and the Secret's reader pod, and waits
/// (≤ 30 s) until the pods are gone.
pub fn delete(api: &KubeApiServer, namespace: &str, name: &str) {
    let admin = api.admin_token();
    let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let pods = [name.to_string(), format!("{name}-pull-reader")];
    for pod in &pods {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}");
        let _ = api.request("DELETE", &path, admin, Some(&body));
    }
    let _ = api.request(
        "DELETE",
        &format!("/api/v1/namespaces/{namespace}/secrets/{name}-pull"),
        admin,
        None,
    );
    for pod in &pods {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}");
        let gone = super::proc::poll(Duration::from_secs(30), || {
            api.request("GET", &path, admin, None)
                .map(|r| r.status == 404)
                .unwrap_or(false)
        });
        assert!(
            gone,
            "pod {namespace}/{pod} still exists 30 s after deletion"
        );
    }
}
