//! The node's kubelet v1.20.2 on containerd's CRI, laid out like a kubeadm node: its
//! KubeletConfiguration in `/var/lib/kubelet/config.yaml`, its kubeconfig (a
//! `system:node:NAME` token, so the Node authorizer and NodeRestriction apply) in
//! `/etc/kubernetes/kubelet.conf`, root dir `/var/lib/kubelet` — all node paths.
//!
//! Flags and configuration follow /work/shared/test-infra.md "A real one-node cluster" (cgroupfs
//! on cgroup v1 without systemd, no QoS cgroups, low eviction thresholds, no image GC).

use std::path::PathBuf;

use super::holder::Holder;
use super::proc::NodeProc;
use super::runtime::SOCKET;

pub const ROOT_DIR: &str = "/var/lib/kubelet";
pub const CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub const KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
/// Where the kubelet reads node-wide registry credentials (`<root-dir>/config.json`).
pub const DOCKER_CONFIG_JSON: &str = "/var/lib/kubelet/config.json";
/// The credential-provider bin dir the DaemonSet in manifests/ mounts.
pub const CREDENTIAL_PROVIDER_BIN_DIR: &str =
    "/usr/libexec/kubernetes/kubelet-plugins/credential-provider/exec";
/// Where the harness writes the CredentialProviderConfig when one is given.
pub const CREDENTIAL_PROVIDER_CONFIG: &str = "/etc/kubernetes/credential-provider.yaml";

/// Credential providers for the kubelet (`kubelet.config.k8s.io/v1alpha1`, feature gate
/// `KubeletCredentialProviders`, both needed by kubelet 1.20).
#[derive(Clone, Debug, Default)]
pub struct CredentialProviders {
    /// The CredentialProviderConfig YAML.
    pub config: String,
    /// Plugins written to [`CREDENTIAL_PROVIDER_BIN_DIR`] (name, content; mode 0755) before the
    /// kubelet starts (it refuses to start when a configured plugin is missing).
    pub plugins: Vec<(String, Vec<u8>)>,
}

/// The KubeletConfiguration file.
pub fn config_yaml() -> String {
    r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
evictionHard:
  nodefs.available: "1%"
  imagefs.available: "1%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
nodeStatusUpdateFrequency: 2s
resolvConf: /etc/resolv.conf
"#
    .to_string()
}

/// The kubelet's command-line flags. The credential-provider ones are also written to
/// `/etc/default/kubelet` as `KUBELET_EXTRA_ARGS`, where kubeadm nodes keep them.
pub fn flags(name: &str, node_ip: &str, creds: Option<&CredentialProviders>) -> Vec<String> {
    let mut f = vec![
        "--container-runtime=remote".to_string(),
        format!("--container-runtime-endpoint=unix://{SOCKET}"),
        format!("--kubeconfig={KUBECONFIG}"),
        format!("--config={CONFIG}"),
        format!("--root-dir={ROOT_DIR}"),
        format!("--cert-dir={ROOT_DIR}/pki"),
        format!("--hostname-override={name}"),
        format!("--node-ip={node_ip}"),
        "--v=2".to_string(),
    ];
    if creds.is_some() {
        f.push("--feature-gates=KubeletCredentialProviders=true".into());
        f.push(format!(
            "--image-credential-provider-config={CREDENTIAL_PROVIDER_CONFIG}"
        ));
        f.push(format!(
            "--image-credential-provider-bin-dir={CREDENTIAL_PROVIDER_BIN_DIR}"
        ));
    }
    f
}

/// Writes the kubelet's files into the node (config, kubeconfig).
pub fn write_files(holder: &Holder, kubeconfig: &str) {
    holder.write_file(CONFIG, config_yaml().as_bytes(), 0o644);
    holder.write_file(KUBECONFIG, kubeconfig.as_bytes(), 0o600);
    holder.mkdir(CREDENTIAL_PROVIDER_BIN_DIR);
}

/// Writes (or, for `None`, removes) the credential-provider config, its plugins and
/// `/etc/default/kubelet`.
pub fn write_credential_providers(holder: &Holder, creds: Option<&CredentialProviders>) {
    let Some(c) = creds else {
        holder.remove(CREDENTIAL_PROVIDER_CONFIG);
        holder.remove("/etc/default/kubelet");
        return;
    };
    holder.write_file(CREDENTIAL_PROVIDER_CONFIG, c.config.as_bytes(), 0o644);
    for (name, data) in &c.plugins {
        holder.write_file(
            &format!("{CREDENTIAL_PROVIDER_BIN_DIR}/{name}"),
            data,
            0o755,
        );
    }
    let extra: Vec<String> = flags("", "", Some(c))
        .into_iter()
        .filter(|f| f.contains("credential") || f.contains("feature-gates"))
        .collect();
    let env = format!("KUBELET_EXTRA_ARGS=\"{}\"\n", extra.join(" "));
    holder.write_file("/etc/default/kubelet", env.as_bytes(), 0o644);
}

/// Starts the kubelet inside the node with `flags`.
pub fn start(holder: &Holder, bin: &std::path::Path, flags: &[String], log: PathBuf) -> NodeProc {
    let mut cmd = holder.command(&bin.display().to_string());
    cmd.args(flags);
    NodeProc::spawn("kubelet", cmd, log)
}
