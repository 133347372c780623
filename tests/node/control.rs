//! kube-controller-manager and kube-scheduler v1.20.2 next to the kube-apiserver of
//! `tests/kube` (flags from /work/shared/test-infra.md "A real one-node cluster"). The
//! controller-manager runs the token controller (ServiceAccount token Secrets for pods), the
//! DaemonSet controller, namespace deletion and the rest, except what needs a cloud or pod
//! networking.

use std::path::{Path, PathBuf};

use super::holder::Holder;
use super::proc::NodeProc;
use crate::kube::KubeApiServer;

/// Path of a cached Kubernetes binary ([`crate::kube::kube_binary_path`]); panics with build
/// instructions when it is missing.
pub fn kube_binary(name: &str) -> PathBuf {
    let bin = crate::kube::kube_binary_path(name);
    assert!(
        bin.is_file(),
        "{name} {} not found at {}: build it once with .ci/build-kubernetes.sh (about 10 min \
         cold, cached outside the clone; PULLPROBE_CACHE=DIR for another cache root)",
        crate::kube::KUBE_VERSION,
        bin.display()
    );
    bin
}

/// Starts kube-controller-manager inside the node.
pub fn start_controller_manager(
    holder: &Holder,
    api: &KubeApiServer,
    admin_kubeconfig: &Path,
    log: PathBuf,
) -> NodeProc {
    let mut cmd = holder.command(&kube_binary("kube-controller-manager").display().to_string());
    cmd.arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
        .arg(format!(
            "--service-account-private-key-file={}",
            api.service_account_key_path().display()
        ))
        .arg(format!("--root-ca-file={}", api.ca_path().display()))
        .args([
            "--use-service-account-credentials",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--port=0",
            "--controllers=*,-nodeipam,-service,-route,-cloud-node-lifecycle",
        ]);
    NodeProc::spawn("kube-controller-manager", cmd, log)
}

/// Starts kube-scheduler inside the node.
pub fn start_scheduler(holder: &Holder, admin_kubeconfig: &Path, log: PathBuf) -> NodeProc {
    let mut cmd = holder.command(&kube_binary("kube-scheduler").display().to_string());
    cmd.arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
        .args([
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--port=0",
        ]);
    NodeProc::spawn("kube-scheduler", cmd, log)
}
