//! The node's kubelet v1.20.2 on containerd's CRI, laid out like a kubeadm node: its
//! KubeletConfiguration in `/var/lib/kubelet/config.yaml`, its kubeconfig (a
//! `system:node:NAME` token, so the Node authorizer and NodeRestriction apply) in
//! `/etc/kubernetes/kubelet.conf`, root dir `/var/lib/kubelet`, and its command line in the
//! kubeadm systemd unit, drop-in and environment files (see [`write_service_layout`]) — all
//! node paths. There is no systemd here: the harness runs exactly that command line itself.
//!
//! Flags and configuration follow /work/shared/test-infra.md "A real one-node cluster" (cgroupfs
//! on cgroup v1 without systemd, no QoS cgroups, low eviction thresholds, no image GC).

use std::path::{Path, PathBuf};

use super::holder::Holder;
use super::proc::NodeProc;
use super::runtime::SOCKET;

/// The kubelet's default `--root-dir` (a test may run it elsewhere: `NodeBuilder::kubelet_root_dir`).
pub const ROOT_DIR: &str = "/var/lib/kubelet";
/// kubeadm's files for the kubelet stay in `/var/lib/kubelet` whatever the root dir
/// (kubeadm's `KubeletRunDirectory`).
pub const CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub const KUBEADM_FLAGS: &str = "/var/lib/kubelet/kubeadm-flags.env";
pub const KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
/// Where the kubelet reads node-wide registry credentials (`<root-dir>/config.json`) with the
/// default root dir.
pub const DOCKER_CONFIG_JSON: &str = "/var/lib/kubelet/config.json";
/// The credential-provider bin dir the DaemonSet in manifests/ mounts.
pub const CREDENTIAL_PROVIDER_BIN_DIR: &str =
    "/usr/libexec/kubernetes/kubelet-plugins/credential-provider/exec";
/// The directory the harness keeps the CredentialProviderConfig in (a directory of its own, as
/// docs/operate.md recommends, so the DaemonSet can mount it: [`CREDENTIAL_PROVIDER_MOUNT`]).
pub const CREDENTIAL_PROVIDER_DIR: &str = "/etc/kubernetes/credential-provider";
/// Where the harness writes the CredentialProviderConfig when one is given.
pub const CREDENTIAL_PROVIDER_CONFIG: &str = "/etc/kubernetes/credential-provider/config.yaml";

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
# Absolute: the machine's disk is shared by every build on it, and 1% of its size is GBs
# (a DiskPressure taint would stop the scenarios' pods from being scheduled).
evictionHard:
  nodefs.available: "200Mi"
  imagefs.available: "200Mi"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
nodeStatusUpdateFrequency: 2s
resolvConf: /etc/resolv.conf
"#
    .to_string()
}

/// The kubelet's command line, grouped the way a kubeadm node keeps it (the variables of
/// `10-kubeadm.conf`).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `KUBELET_KUBECONFIG_ARGS` and `KUBELET_CONFIG_ARGS` (in the drop-in).
    pub kubeconfig: Vec<String>,
    pub config: Vec<String>,
    /// `KUBELET_KUBEADM_ARGS` (`/var/lib/kubelet/kubeadm-flags.env`).
    pub kubeadm: Vec<String>,
    /// `KUBELET_EXTRA_ARGS` (`/etc/default/kubelet`): credential providers, test extras.
    pub extra: Vec<String>,
}

impl Flags {
    /// The flags for node `name` at `node_ip` with root dir `root_dir` (its client certificates
    /// in `<root_dir>/pki`), with `creds` and `extra` flags.
    pub fn new(
        name: &str,
        node_ip: &str,
        root_dir: &str,
        creds: Option<&CredentialProviders>,
        extra: &[String],
    ) -> Flags {
        let mut f = Flags {
            kubeconfig: vec![format!("--kubeconfig={KUBECONFIG}")],
            config: vec![format!("--config={CONFIG}")],
            kubeadm: vec![
                "--container-runtime=remote".to_string(),
                format!("--container-runtime-endpoint=unix://{SOCKET}"),
                format!("--root-dir={root_dir}"),
                format!("--cert-dir={root_dir}/pki"),
                format!("--hostname-override={name}"),
                format!("--node-ip={node_ip}"),
                "--v=2".to_string(),
            ],
            extra: Vec::new(),
        };
        if creds.is_some() {
            f.extra.extend([
                "--feature-gates=KubeletCredentialProviders=true".to_string(),
                format!("--image-credential-provider-config={CREDENTIAL_PROVIDER_CONFIG}"),
                format!("--image-credential-provider-bin-dir={CREDENTIAL_PROVIDER_BIN_DIR}"),
            ]);
        }
        f.extra.extend(extra.iter().cloned());
        f
    }

    /// The command line systemd would run (`ExecStart` of the drop-in, variables expanded).
    pub fn all(&self) -> Vec<String> {
        [&self.kubeconfig, &self.config, &self.kubeadm, &self.extra]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Writes the kubelet's files into the node (config, kubeconfig).
pub fn write_files(holder: &Holder, kubeconfig: &str) {
    holder.write_file(CONFIG, config_yaml().as_bytes(), 0o644);
    holder.write_file(KUBECONFIG, kubeconfig.as_bytes(), 0o600);
    holder.mkdir(CREDENTIAL_PROVIDER_BIN_DIR);
}

/// The kubeadm layout of the kubelet's service, describing exactly the command line the harness
/// runs: `/etc/systemd/system/kubelet.service`, its drop-in `kubelet.service.d/10-kubeadm.conf`,
/// `/var/lib/kubelet/kubeadm-flags.env` and `/etc/default/kubelet` (node discovery reads them).
pub fn write_service_layout(holder: &Holder, bin: &Path, f: &Flags) {
    let bin = bin.display();
    let unit = format!(
        "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\n\n[Service]\nExecStart={bin}\n\
         Restart=always\n\n[Install]\nWantedBy=multi-user.target\n"
    );
    holder.write_file(
        "/etc/systemd/system/kubelet.service",
        unit.as_bytes(),
        0o644,
    );
    let drop_in = format!(
        "[Service]\nEnvironment=\"KUBELET_KUBECONFIG_ARGS={}\"\nEnvironment=\"KUBELET_CONFIG_ARGS={}\"\n\
         EnvironmentFile=-{KUBEADM_FLAGS}\nEnvironmentFile=-/etc/default/kubelet\n\
         ExecStart=\nExecStart={bin} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS \
         $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
        f.kubeconfig.join(" "),
        f.config.join(" ")
    );
    holder.write_file(
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
        drop_in.as_bytes(),
        0o644,
    );
    let kubeadm = format!("KUBELET_KUBEADM_ARGS=\"{}\"\n", f.kubeadm.join(" "));
    holder.write_file(KUBEADM_FLAGS, kubeadm.as_bytes(), 0o644);
    let extra = format!("KUBELET_EXTRA_ARGS=\"{}\"\n", f.extra.join(" "));
    holder.write_file("/etc/default/kubelet", extra.as_bytes(), 0o644);
}

/// Writes (or, for `None`, removes) the credential-provider config and its plugins.
pub fn write_credential_providers(holder: &Holder, creds: Option<&CredentialProviders>) {
    let Some(c) = creds else {
        holder.remove(CREDENTIAL_PROVIDER_CONFIG);
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
}

/// Starts the kubelet inside the node with `flags`.
pub fn start(holder: &Holder, bin: &Path, flags: &[String], log: PathBuf) -> NodeProc {
    let mut cmd = holder.command(&bin.display().to_string());
    cmd.args(flags);
    NodeProc::spawn("kubelet", cmd, log)
}
