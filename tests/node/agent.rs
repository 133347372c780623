//! Deploying the agent for real: the release binary in a one-layer image pushed to the node's
//! registry, and a kustomize overlay of `manifests/` with the components a test names, rendered
//! with the hermetic kubectl of `.ci/install-kustomize.sh` (kustomize v5: components; the cached
//! kubectl v1.20.2 embeds kustomize 2.0, which has none) and applied with kubectl v1.20.2. The
//! overlay only sets the image, adds `KUBERNETES_SERVICE_HOST/PORT` (no kube-proxy here, so the
//! `kubernetes` Service IP leads nowhere), optionally overrides keys of the ConfigMap's
//! `pullprobe.yaml` and adds a test's own patches (e.g. a mount docs/operate.md shows);
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
/// The agent's pods (the base also runs the controller's, `component: controller`).
pub const LABEL_SELECTOR: &str =
    "app.kubernetes.io/name=pullprobe,app.kubernetes.io/component=agent";
/// The `listen` port of the manifests' ConfigMap (hostNetwork: the node's port).
pub const PORT: u16 = 9808;

/// What to change in the deployment (nothing by default).
#[derive(Clone, Debug, Default)]
pub struct AgentDeploy {
    /// Top-level keys of `pullprobe.yaml` to set (`("interval", "5s")`), the rest of the
    /// manifests' file kept.
    pub config: Vec<(String, String)>,
    /// Extra manifests added to the overlay as resources.
    pub resources: Vec<PathBuf>,
    /// Components of `manifests/components/` (by directory name).
    pub components: Vec<String>,
    /// Strategic-merge patches (YAML documents) applied after the components.
    pub patches: Vec<String>,
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

    /// Adds a component of `manifests/components/` (`"pull-secrets"`, `"kubeadm"`, …).
    pub fn component(mut self, name: &str) -> Self {
        self.components.push(name.into());
        self
    }

    /// Adds a strategic-merge patch (a YAML document naming its object).
    pub fn patch(mut self, yaml: &str) -> Self {
        self.patches.push(yaml.into());
        self
    }
}

/// A strategic-merge patch of the DaemonSet mounting node path `path` (a directory, created
/// when missing, or a file that must exist) read-only at `/host<path>`, as docs/operate.md
/// shows for the node layouts' own paths.
pub fn host_mount_patch(volume: &str, path: &str, kind: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: pullprobe\n  namespace: {NAMESPACE}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - name: agent\n        volumeMounts:\n\
         \x20       - name: {volume}\n          mountPath: /host{path}\n          readOnly: true\n\
         \x20     volumes:\n      - name: {volume}\n        hostPath:\n          path: {path}\n          type: {kind}\n"
    )
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
        match lines.iter().position(|l| l.starts_with(&format!("{k}:"))) {
            Some(i) => {
                // A block key (`tenancy:` and its indented lines) is replaced whole.
                let end = (i + 1..lines.len())
                    .find(|&j| !lines[j].starts_with(' '))
                    .unwrap_or(lines.len());
                lines.splice(i..end, [new]);
            }
            None => lines.push(new),
        }
    }
    lines.join("\n") + "\n"
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect::<String>()
}

/// The overlay patch docs/operate.md shows for components/kubelet-config-json on a kubelet
/// whose `--root-dir` is `root_dir`: the component's mount moved to `<root_dir>/config.json`
/// (a container's mounts are keyed by mountPath, so the old one is deleted).
pub fn kubelet_config_json_patch(root_dir: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: pullprobe\n  namespace: {NAMESPACE}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - name: agent\n        volumeMounts:\n\
         \x20       - mountPath: /host/var/lib/kubelet/config.json\n          $patch: delete\n\
         \x20       - name: host-kubelet-config-json\n          mountPath: /host{root_dir}/config.json\n          readOnly: true\n\
         \x20     volumes:\n      - name: host-kubelet-config-json\n        hostPath:\n          path: {root_dir}/config.json\n"
    )
}

/// Writes the overlay into `dir` (which must be on the same filesystem tree as the repo, for
/// the relative paths kustomize wants).
pub fn write_overlay(dir: &Path, image: &str, api_port: u16, d: &AgentDeploy) {
    let (name, tag) = image.rsplit_once(':').expect("image NAME:TAG");
    let base = relative_path(dir, &manifests_dir());
    let mut k = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- {base}\n"
    );
    for (i, r) in d.resources.iter().enumerate() {
        let name = format!("extra-{i}.yaml");
        std::fs::copy(r, dir.join(&name)).expect("copy an extra resource");
        k += &format!("- {name}\n");
    }
    if !d.components.is_empty() {
        k += "components:\n";
        for c in &d.components {
            k += &format!("- {base}/components/{c}\n");
        }
    }
    k += &format!("images:\n- name: pullprobe\n  newName: {name}\n  newTag: {tag}\npatches:\n- path: daemonset-env.yaml\n");
    let env = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: pullprobe\n  namespace: {NAMESPACE}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - name: agent\n        env:\n\
         \x20       - name: KUBERNETES_SERVICE_HOST\n          value: \"127.0.0.1\"\n\
         \x20       - name: KUBERNETES_SERVICE_PORT\n          value: \"{api_port}\"\n"
    );
    std::fs::write(dir.join("daemonset-env.yaml"), env).expect("write overlay patch");
    if !d.config.is_empty() {
        k += "- path: configmap.yaml\n";
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pullprobe-config\n  namespace: {NAMESPACE}\n\
             data:\n  pullprobe.yaml: |\n{}",
            indent(&config_with(&d.config), 4)
        );
        std::fs::write(dir.join("configmap.yaml"), cm).expect("write overlay configmap");
    }
    for (i, p) in d.patches.iter().enumerate() {
        let name = format!("patch-{i}.yaml");
        std::fs::write(dir.join(&name), p).expect("write an overlay patch");
        k += &format!("- path: {name}\n");
    }
    std::fs::write(dir.join("kustomization.yaml"), k).expect("write kustomization.yaml");
}

/// kubectl with kustomize v5 (`.ci/install-kustomize.sh`, cached; `PULLPROBE_KUBECTL` overrides).
pub fn kustomize_kubectl() -> PathBuf {
    if let Ok(p) = std::env::var("PULLPROBE_KUBECTL") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-kustomize.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("run .ci/install-kustomize.sh");
    assert!(
        out.status.success(),
        "kustomize components need kubectl >= 1.21: .ci/install-kustomize.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `kubectl kustomize DIR` into `DIR/rendered.yaml`; returns that path.
pub fn render_overlay(dir: &Path) -> PathBuf {
    let out = std::process::Command::new(kustomize_kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = dir.join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).expect("write the rendered overlay");
    rendered
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
        let rendered = render_overlay(overlay.path());
        let out = self.kubectl(&["apply", "-f", &rendered.display().to_string()]);
        assert!(
            out.status.success(),
            "kubectl apply (overlay of manifests/) failed: {}{}",
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

    /// Deletes the agent's pod and waits until the DaemonSet's new one is Ready (its hostPath
    /// mounts made again: a single-file mount shows the file the node has now).
    pub fn restart_agent(&self, agent: &Agent) -> Agent {
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/pods/{}?gracePeriodSeconds=0",
            agent.pod.name
        );
        self.api()
            .must("DELETE", &path, self.api().admin_token(), None);
        let new = super::proc::poll_some(READY_TIMEOUT, || {
            self.agent_pod()
                .filter(|p| p["metadata"]["uid"] != agent.pod.uid.as_str() && is_ready(p))
        });
        let Some(p) = new else {
            self.panic_agent_not_ready(READY_TIMEOUT);
        };
        Agent {
            pod: Pod {
                name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                namespace: NAMESPACE.into(),
                uid: p["metadata"]["uid"].as_str().unwrap_or_default().into(),
            },
            image: agent.image.clone(),
        }
    }

    /// The agent's pod on this node (Pod JSON), if the DaemonSet has created it (one being
    /// deleted does not count).
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
            .find(|p| {
                p["spec"]["nodeName"] == self.name() && p["metadata"]["deletionTimestamp"].is_null()
            })
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
        // The main listener authenticates every caller (TokenReview + SubjectAccessReview)
        // and accepts only its own audience: ask with a `pullprobe`-audience token of a
        // cluster-admin ServiceAccount (one token, so the agent's review cache serves it).
        let token = self
            .agent_token
            .get_or_init(|| self.api().agent_caller_token())
            .clone();
        http_get_as(addr, path, Some(&token)).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
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

    /// Whether `/host<path>` exists in the agent container's view (`None`: no agent process).
    pub fn agent_host_exists(&self, path: &str) -> Option<bool> {
        let pid = self.agent_pid()?;
        Some(std::fs::symlink_metadata(format!("/proc/{pid}/root/host{path}")).is_ok())
    }
}
