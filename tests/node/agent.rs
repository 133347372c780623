//! Deploying the agent for real: the release binary in a one-layer image pushed to the node's
//! registry, and a kustomize overlay of `manifests/` applied with the cached kubectl v1.20.2
//! (its embedded kustomize 2.0 wants `bases:` with a relative path). The overlay only sets the
//! image, adds `KUBERNETES_SERVICE_HOST/PORT` (no kube-proxy here, so the `kubernetes` Service
//! IP leads nowhere) and optionally overrides keys of the ConfigMap's `pullprobe.yaml`;
//! everything else — securityContext, hostPath mounts, probes, RBAC, the ServiceAccount token
//! from the token controller — is the manifests' own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pods::Pod;

/// The agent's namespace and labels in manifests/.
pub const NAMESPACE: &str = "pullprobe";
pub const LABEL_SELECTOR: &str = "app.kubernetes.io/name=pullprobe";
/// The `listen` port of the manifests' ConfigMap (hostNetwork: the node's port).
pub const PORT: u16 = 9808;

/// What to change in the deployment (nothing by default).
#[derive(Clone, Debug, Default)]
pub struct AgentDeploy {
    /// Top-level keys of `pullprobe.yaml` to set (`("interval", "5s")`), the rest of the
    /// manifests' file kept.
    pub config: Vec<(String, String)>,
    /// Extra manifests added to the overlay as resources (e.g. a component's RBAC file:
    /// kubectl 1.20's kustomize has no `components:`).
    pub resources: Vec<PathBuf>,
}

impl AgentDeploy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets top-level key `key` of the agent's config to the YAML value `value`.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Adds a manifest file to the overlay's resources.
    pub fn resource(mut self, path: &Path) -> Self {
        self.resources.push(path.to_path_buf());
        self
    }
}

/// The repository's `manifests/` dir.
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// The manifests' `pullprobe.yaml` with `overrides` applied line by line.
pub fn config_with(overrides: &[(String, String)]) -> String {
    let path = manifests_dir().join("configmap.yaml");
    let text = std::fs::read_to_string(&path).expect("read manifests/configmap.yaml");
    let cm: Value = serde_saphyr::from_str(&text).expect("parse manifests/configmap.yaml");
    let base = cm["data"]["pullprobe.yaml"]
        .as_str()
        .expect("configmap.yaml has data.pullprobe.yaml");
    let mut lines: Vec<String> = base.lines().map(String::from).collect();
    for (k, v) in overrides {
        let new = format!("{k}: {v}");
        match lines.iter_mut().find(|l| l.starts_with(&format!("{k}:"))) {
            Some(l) => *l = new,
            None => lines.push(new),
        }
    }
    lines.join("\n") + "\n"
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect::<String>()
}

/// Writes the overlay into `dir` (which must be on the same filesystem tree as the repo, for
/// the relative `bases:` path).
pub fn write_overlay(dir: &Path, image: &str, api_port: u16, d: &AgentDeploy) {
    let (name, tag) = image.rsplit_once(':').expect("image NAME:TAG");
    let base = relative_path(dir, &manifests_dir());
    let mut k = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nbases:\n- {base}\n\
         images:\n- name: pullprobe\n  newName: {name}\n  newTag: {tag}\n\
         patchesStrategicMerge:\n- daemonset-env.yaml\n"
    );
    let env = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: pullprobe\n  namespace: {NAMESPACE}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - name: agent\n        env:\n\
         \x20       - name: KUBERNETES_SERVICE_HOST\n          value: \"127.0.0.1\"\n\
         \x20       - name: KUBERNETES_SERVICE_PORT\n          value: \"{api_port}\"\n"
    );
    std::fs::write(dir.join("daemonset-env.yaml"), env).expect("write overlay patch");
    if !d.config.is_empty() {
        k += "- configmap.yaml\n";
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pullprobe-config\n  namespace: {NAMESPACE}\n\
             data:\n  pullprobe.yaml: |\n{}",
            indent(&config_with(&d.config), 4)
        );
        std::fs::write(dir.join("configmap.yaml"), cm).expect("write overlay configmap");
    }
    if !d.resources.is_empty() {
        k += "resources:\n";
        for (i, r) in d.resources.iter().enumerate() {
            // kustomize 2.0 reads resources only from inside the overlay.
            let name = format!("extra-{i}.yaml");
            std::fs::copy(r, dir.join(&name)).expect("copy an extra resource");
            k += &format!("- {name}\n");
        }
    }
    std::fs::write(dir.join("kustomization.yaml"), k).expect("write kustomization.yaml");
}

/// `to` relative to `from` (both absolute).
fn relative_path(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// The agent's pod on the node, once it is Ready.
#[derive(Clone, Debug)]
pub struct Agent {
    pub pod: Pod,
    /// The image reference the DaemonSet runs.
    pub image: String,
}

/// Is `pod` (a Pod JSON) Ready?
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Container log lines of a CRI log file (`<time> <stream> <P|F> <text>`), text only.
pub fn cri_log_text(raw: &str) -> String {
    raw.lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A blocking HTTP/1.0 GET on `addr` (the agent's `/status`, `/metrics`): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with a bearer token (the agent's main listener reviews every caller).
pub fn http_get_as(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut raw = Vec::new();
    s.take(16 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// How long [`super::Node::deploy_agent`] waits for the DaemonSet pod to be Ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

impl super::Node {
    /// `kubectl --kubeconfig ADMIN ARGS…` with the cached kubectl v1.20.2, inside the node.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let bin = super::control::kube_binary("kubectl");
        self.command(&bin.display().to_string())
            .arg(format!(
                "--kubeconfig={}",
                self.admin_kubeconfig().display()
            ))
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Builds the agent image from the release binary, pushes it to the node's registry,
    /// `kubectl apply -k` an overlay of `manifests/`, and waits until the DaemonSet's pod on this
    /// node is Running and Ready (its own probes). Panics with the pod, its events and its log
    /// when it is not Ready within [`READY_TIMEOUT`].
    pub fn deploy_agent(&self, d: &AgentDeploy) -> Agent {
        let t = Instant::now();
        let tag = format!("test-{}", std::process::id());
        let pushed = super::images::agent_image(&tag).push(
            self.registry(),
            "pullprobe",
            &crate::harness::PushOpts::insecure(),
        );
        let overlay = tempfile::Builder::new()
            .prefix("pullprobe-overlay-")
            .tempdir_in(self.dir())
            .expect("overlay dir");
        write_overlay(
            overlay.path(),
            &pushed.reference,
            self.api().addr().port(),
            d,
        );
        let out = self.kubectl(&["apply", "-k", &overlay.path().display().to_string()]);
        assert!(
            out.status.success(),
            "kubectl apply -k (overlay of manifests/) failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pod = self.wait_agent_ready(READY_TIMEOUT);
        eprintln!(
            "node {}: agent {} Ready in {:.1?} (image build + push + apply + pull + probes)",
            self.name(),
            pod.name,
            t.elapsed()
        );
        Agent {
            pod,
            image: pushed.reference,
        }
    }

    /// The agent's pod on this node (Pod JSON), if the DaemonSet has created it.
    pub fn agent_pod(&self) -> Option<Value> {
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={}",
            LABEL_SELECTOR.replace('=', "%3D")
        );
        let v = self
            .api()
            .must("GET", &path, self.api().admin_token(), None);
        v["items"]
            .as_array()?
            .iter()
            .find(|p| p["spec"]["nodeName"] == self.name())
            .cloned()
    }

    fn wait_agent_ready(&self, timeout: Duration) -> Pod {
        let ready = super::proc::poll_some(timeout, || self.agent_pod().filter(is_ready));
        let Some(p) = ready else {
            self.panic_agent_not_ready(timeout);
        };
        Pod {
            name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
            namespace: NAMESPACE.into(),
            uid: p["metadata"]["uid"].as_str().unwrap_or_default().into(),
        }
    }

    fn panic_agent_not_ready(&self, timeout: Duration) -> ! {
        let pod = self.agent_pod();
        let (events, log) = match &pod {
            Some(p) => {
                let pod = Pod {
                    name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                    namespace: NAMESPACE.into(),
                    uid: p["metadata"]["uid"].as_str().unwrap_or_default().into(),
                };
                let ev: Vec<String> = self
                    .pod_events(&pod)
                    .iter()
                    .map(|e| format!("{}: {}", e["reason"], e["message"]))
                    .collect();
                (ev, self.container_log(&pod, "agent"))
            }
            None => (Vec::new(), String::new()),
        };
        let ds = self.kubectl(&["-n", NAMESPACE, "describe", "daemonset", "pullprobe"]);
        panic!(
            "the agent's DaemonSet pod was not Ready within {timeout:?}\npod status: {:#}\n\
             events: {events:#?}\nlog:\n{log}\ndaemonset:\n{}",
            pod.map(|p| p["status"].clone()).unwrap_or(Value::Null),
            String::from_utf8_lossy(&ds.stdout)
        );
    }

    /// A container's log as the kubelet wrote it (`/var/log/pods/NS_POD_UID/CONTAINER/*.log`,
    /// every restart, CRI prefixes stripped).
    pub fn container_log(&self, pod: &Pod, container: &str) -> String {
        let dir = format!(
            "/var/log/pods/{}_{}_{}/{container}",
            pod.namespace, pod.name, pod.uid
        );
        let out = self
            .holder()
            .sh(r#"cat "$1"/*.log 2>/dev/null"#, &[&dir], b"");
        cri_log_text(&String::from_utf8_lossy(&out.stdout))
    }

    /// The agent's container log.
    pub fn agent_log(&self, agent: &Agent) -> String {
        self.container_log(&agent.pod, "agent")
    }

    /// GET on the agent's hostNetwork port (`/status`, `/metrics`, `/healthz`): `(status, body)`.
    pub fn agent_get(&self, path: &str) -> (u16, String) {
        let addr = SocketAddr::from((self.node_ip(), PORT));
        // The main listener authenticates every caller (TokenReview + SubjectAccessReview):
        // ask as the cluster admin.
        let admin = self.api().admin_token().to_string();
        http_get_as(addr, path, Some(&admin)).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
    }
}

impl super::Node {
    /// PID (in the machine's PID namespace) of the agent container's main process.
    pub fn agent_pid(&self) -> Option<u32> {
        let pod = self.agent_pod()?;
        let id = pod["status"]["containerStatuses"][0]["containerID"].as_str()?;
        let id = id.strip_prefix("containerd://")?;
        let out = self.ctr(&["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// A file as the agent container sees it at `/host<path>` (through
    /// `/proc/PID/root`, i.e. the container's own mounts): proof that the DaemonSet's hostPath
    /// mounts show the node's files.
    pub fn agent_host_file(&self, path: &str) -> Option<String> {
        let pid = self.agent_pid()?;
        std::fs::read_to_string(format!("/proc/{pid}/root/host{path}")).ok()
    }
}
