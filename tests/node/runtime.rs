//! The node's containerd 1.6.20 with its CRI plugin, configured the way a kubeadm node is: it
//! reads `/etc/containerd/config.toml` (node view) whose CRI registry section names
//! `config_path = "/etc/containerd/certs.d"`, so `certs.d/<host>/hosts.toml` is read per pull.

use std::path::Path;
use std::time::Duration;

use super::holder::Holder;
use super::proc::{poll, NodeProc};

/// containerd's socket (node view).
pub const SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd's config file (node view).
pub const CONFIG: &str = "/etc/containerd/config.toml";
/// hosts.toml root (node view).
pub const CERTS_D: &str = "/etc/containerd/certs.d";
/// CNI config dir (node view).
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The CRI's containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// The default `/etc/containerd/config.toml` of the node. `cni_bin` is a dir holding Debian's
/// `loopback` plugin; `extra` is appended verbatim (more `[plugins…]` tables).
pub fn default_config(sandbox_image: &str, cni_bin: &Path, extra: &str) -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{SOCKET}"

[ttrpc]
  address = "{SOCKET}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This sandbox lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj (the kubelet asks
  # -998 for every sandbox). containerd clamps pod and sandbox scores to its own when this is set
  # (pkg/cri/opts/spec_linux.go WithOOMScoreAdj / WithPodOOMScoreAdj, restrictOOMScoreAdj).
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{CNI_CONF_DIR}"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "{CERTS_D}"
{extra}
"#,
        cni_bin = cni_bin.display()
    )
}

/// A CNI conflist with only the `loopback` plugin: enough for the CRI to report the network
/// ready (the node turns Ready), and all pods here are hostNetwork anyway.
pub const LOOPBACK_CONFLIST: &str =
    r#"{"cniVersion": "0.4.0", "name": "pullprobe-lo", "plugins": [{"type": "loopback"}]}"#;

/// Starts containerd inside the node and waits (≤ 20 s) until `ctr version` answers.
pub fn start(holder: &Holder, log: &Path) -> NodeProc {
    let mut cmd = holder.command("containerd");
    cmd.args(["--config", CONFIG]);
    let mut p = NodeProc::spawn("containerd", cmd, log.to_path_buf());
    let up = poll(Duration::from_secs(20), || {
        p.assert_running();
        ctr(holder, &["version"]).status.success()
    });
    assert!(up, "containerd did not answer:\n{}", p.log_tail(40));
    p
}

/// `ctr --address SOCKET --namespace k8s.io ARGS…` inside the node.
pub fn ctr(holder: &Holder, args: &[&str]) -> std::process::Output {
    ctr_ns(holder, K8S_NAMESPACE, args)
}

/// `ctr` in another containerd namespace.
pub fn ctr_ns(holder: &Holder, namespace: &str, args: &[&str]) -> std::process::Output {
    holder
        .command("ctr")
        .args([
            "--address",
            SOCKET,
            "--namespace",
            namespace,
            "--timeout",
            "20s",
        ])
        .args(args)
        .output()
        .expect("run ctr")
}

fn lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Kills and deletes every task and container in every containerd namespace (a busybox
/// `sleep` as PID 1 ignores SIGTERM, so SIGKILL), so no shim outlives containerd.
pub fn kill_all_tasks(holder: &Holder) {
    for ns in lines(&ctr_ns(holder, "default", &["namespaces", "ls", "-q"])) {
        let tasks = lines(&ctr_ns(holder, &ns, &["tasks", "ls", "-q"]));
        for t in &tasks {
            let _ = ctr_ns(holder, &ns, &["tasks", "kill", "--all", "-s", "SIGKILL", t]);
        }
        for t in &tasks {
            poll(Duration::from_secs(5), || {
                ctr_ns(holder, &ns, &["tasks", "delete", "-f", t])
                    .status
                    .success()
                    || !lines(&ctr_ns(holder, &ns, &["tasks", "ls", "-q"])).contains(t)
            });
        }
        for c in lines(&ctr_ns(holder, &ns, &["containers", "ls", "-q"])) {
            let _ = ctr_ns(holder, &ns, &["containers", "rm", &c]);
        }
    }
}
