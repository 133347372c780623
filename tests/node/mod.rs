//! A REAL one-node Kubernetes cluster for integration tests: etcd, kube-apiserver (`tests/kube`),
//! kube-controller-manager, kube-scheduler, containerd 1.6.20 with its CRI plugin and the kubelet
//! v1.20.2, all inside a network namespace the harness creates (`lo`, a veth pair with private
//! addresses, no default route) whose resolver is the tests' own unbound, so no name lookup and
//! no packet leaves the machine. The kubelet's `Pulled` / `ErrImagePull` Events are the oracle
//! for the agent, and the DaemonSet from `manifests/` is deployed on it for real.
//!
//! ```ignore
//! mod harness;                 // tests/node uses tests/harness and tests/kube:
//! mod kube;                    //   declare all three in the test file
//! mod node;
//! use harness::*;
//! use node::{AgentDeploy, CredentialProviders, Node, PodSpec, PullVerdict};
//!
//! #[test]
//! fn example() {
//!     // ~15-20 s. From here on THIS THREAD (and every thread and process it starts) is on the
//!     // node's network: 127.0.0.1 is the node's loopback, names resolve through its unbound
//!     // (`reg.test`, `mirror.test` → 127.0.0.1 by default; `nxdomain.test` & co. fail).
//!     let mut node = Node::builder().dns_record("cdn.test", "127.0.0.1").start();
//!     let reg = Registry::plain();                 // on the node's 127.0.0.1
//!     OciImage::single("v1").push(&reg, "app", &PushOpts::insecure());
//!     let image = format!("reg.test:{}/app:v1", reg.port());
//!     // The node's /etc as containerd reads it. containerd 1.6.20 rejects a hosts.toml without
//!     // any [host] table ("invalid `host` tree") and falls back to https://HOST.
//!     node.write_file(
//!         &format!("/etc/containerd/certs.d/reg.test:{}/hosts.toml", reg.port()),
//!         &format!("server = \"http://reg.test:{p}\"\n[host.\"http://reg.test:{p}\"]\n",
//!                  p = reg.port()),
//!     );
//!     let v = node.pull(&PodSpec::new("p1", &image));     // the kubelet's verdict (≈0.4 s)
//!     assert!(v.is_pulled(), "{v:?}");
//!     let v = node.pull(&PodSpec::new("p2", &format!("{image}-missing")));
//!     assert!(matches!(v, PullVerdict::ErrImagePull { .. }), "{v:?}");  // message: containerd's
//!     let v = node.pull(&PodSpec::new("p3", &image).pull_secret("reg.test:PORT", "u", "p"));
//!     node.write_file("/var/lib/kubelet/config.json", r#"{"auths": {}}"#);
//!     node.restart_kubelet();                      // the kubelet caches config.json 5 min (≈6 s)
//!     node.set_credential_providers(Some(CredentialProviders { config, plugins })); // restarts
//!     node.restart_containerd();                   // after editing config.toml (≈8 s)
//!     let agent = node.deploy_agent(&AgentDeploy::new().set("interval", "5s")); // Ready, ≈10 s
//!     let conds = node.wait_conditions(&["RegistryUnreachable"], Duration::from_secs(60));
//!     let (code, status) = node.agent_get("/status");     // hostNetwork port 9808
//!     let log = node.agent_log(&agent);            // /var/log/pods/…/agent/0.log
//!     let seen = node.agent_host_file("/etc/containerd/config.toml"); // the pod's /host view
//!     let pp = env!("CARGO_BIN_EXE_pullprobe");   // visible inside the node too
//!     let out = node.command(pp).args(["check", "--host-root", "/", &image]).output();
//! }                                                // teardown: nothing is left behind
//! ```
//!
//! Node files: [`Node::write_file`], [`Node::symlink`], [`Node::remove`], [`Node::read_file`]
//! act on the node's own view (`/etc`, `/var`, `/usr/libexec` are overlays of the machine's,
//! `/run` is fresh: see [`holder`]) and never touch the machine's; the DaemonSet's hostPath
//! mounts see the same files, live. containerd reads `hosts.toml` per pull; after changing
//! `/etc/containerd/config.toml` call [`Node::restart_containerd`]. A command "on the node"
//! (`pullprobe check --host-root /`, `ctr`, `kubectl`): [`Node::command`], [`Node::ctr`],
//! [`Node::kubectl`].
//!
//! Logs: daemon log tails are printed when a test panics; `PULLPROBE_NODE_LOGS=DIR` keeps the
//! whole kubelet, containerd, controller-manager and scheduler logs in `DIR/<node>/`.
//!
//! Caches to know about: the kubelet keeps `/var/lib/kubelet/config.json` for 5 minutes (use
//! [`Node::restart_kubelet`] after changing it); containerd (Go) loads the node's CA bundle
//! (`/etc/ssl/certs/ca-certificates.crt`) once per process (restart it after changing the
//! bundle); `hosts.toml` and the `ca` files it names are read per pull.
//!
//! Credential-provider plugins run in the kubelet's mount namespace, where `/bin/sh` exists; the
//! agent's image has no shell, so a plugin the agent must execute too has to be a static binary.
//!
//! Rules: one cluster at a time per machine (a file lock, [`lock`]; a cluster left by a killed
//! test is removed by the next one, [`netns::remove_stale`]); use the node from the thread that
//! started it, or threads it spawned (a `#[tokio::test]` must use the `current_thread` flavour,
//! or start the node before building a multi-thread runtime); pods are hostNetwork only
//! (nothing may send traffic to pod or service IPs). Binaries: `.ci/build-kubernetes.sh`
//! (cached in `$PULLPROBE_CACHE/kubernetes`), and for the agent image the release binary, which
//! the harness brings up to date itself (`cargo build --release`, a no-op after `.ci/test.sh`).
#![allow(dead_code, unused_imports)]

pub mod agent;
mod cluster;
pub mod control;
pub mod holder;
pub mod images;
pub mod kubelet;
pub mod lock;
pub mod netns;
mod ops;
pub mod pods;
pub mod proc;
pub mod runtime;

pub use agent::{Agent, AgentDeploy};
pub use cluster::pod_cgroup_dirs;
pub use kubelet::CredentialProviders;
pub use pods::{Pod, PodSpec, PullVerdict};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::harness::dns::DnsBuilder;
use crate::harness::{Dns, PushOpts, Registry};
use crate::kube::KubeApiServer;
use holder::Holder;
use lock::ClusterLock;
use netns::{Netns, ThreadNetns};
use proc::{poll, poll_some, NodeProc};

/// The sandbox image's tag (`<node registry>/pause:TAG`).
pub const PAUSE_TAG: &str = "3.2";
/// How long [`Node::pull`] waits for the kubelet's verdict.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(90);

/// Options of a [`Node`].
pub struct NodeBuilder {
    name: Option<String>,
    dns: DnsBuilder,
    credential_providers: Option<CredentialProviders>,
    containerd_extra: String,
    containerd_bin_dir: Option<PathBuf>,
    kubelet_args: Vec<String>,
    kubelet_root_dir: String,
    files: Vec<(String, Vec<u8>, u32)>,
}

impl NodeBuilder {
    /// The Node's name (default `pp-node-<k>`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// An A/AAAA record in the node's unbound (zone `test.`). By default `reg.test`,
    /// `mirror.test` and the harness's `registry.test`, `auth.test`, `blobs.test` (the names in
    /// `Pki`'s server certificate) are 127.0.0.1, and the failure names of `tests/harness/dns.rs`
    /// (`nxdomain.test`, `servfail.test`, `refused.test`, `drop.test`, …) fail as described there.
    pub fn dns_record(mut self, name: &str, ip: &str) -> Self {
        self.dns = self.dns.record(name, ip);
        self
    }

    /// Raw unbound `local-data` for the node's resolver.
    pub fn dns_local_data(mut self, rr: &str) -> Self {
        self.dns = self.dns.local_data(rr);
        self
    }

    /// Runs the kubelet with credential-provider plugins (config + bin dir + feature gate).
    pub fn credential_providers(mut self, c: CredentialProviders) -> Self {
        self.credential_providers = Some(c);
        self
    }

    /// TOML appended to the default `/etc/containerd/config.toml`.
    pub fn containerd_extra(mut self, toml: &str) -> Self {
        self.containerd_extra = toml.into();
        self
    }

    /// The node runs the containerd release whose `containerd`, `ctr` and shims are in `dir`
    /// (e.g. 1.7.x from `.ci/cache-containerd.sh`: `harness::Series::V1_7.bin_dir()`), with the
    /// same config; its dpkg status names that release. Default: the machine's 1.6.20.
    pub fn containerd_bin_dir(mut self, dir: &Path) -> Self {
        self.containerd_bin_dir = Some(dir.to_path_buf());
        self
    }

    /// The kubelet's `--root-dir` (its client certificates go to `DIR/pki`); default
    /// `/var/lib/kubelet`. kubeadm's own files (`kubeadm-flags.env`, `config.yaml`) stay in
    /// `/var/lib/kubelet`, as kubeadm keeps them.
    pub fn kubelet_root_dir(mut self, dir: &str) -> Self {
        self.kubelet_root_dir = dir.into();
        self
    }

    /// An extra kubelet flag.
    pub fn kubelet_arg(mut self, flag: &str) -> Self {
        self.kubelet_args.push(flag.into());
        self
    }

    /// A node file written before containerd and the kubelet start (e.g. the kubelet's
    /// `/var/lib/kubelet/config.json`), mode 0644.
    pub fn file(mut self, path: &str, contents: &str) -> Self {
        self.files
            .push((path.into(), contents.as_bytes().to_vec(), 0o644));
        self
    }

    /// Brings the node up (see [`Node`]).
    pub fn start(self) -> Node {
        Node::start_with(self)
    }
}

/// Phases of [`Node::start`], for the test output.
#[derive(Clone, Debug, Default)]
pub struct StartTimes {
    pub apiserver: Duration,
    pub kubelet_registered: Duration,
    pub node_ready: Duration,
    pub total: Duration,
}

/// A running one-node cluster. See the module docs.
pub struct Node {
    name: String,
    times: StartTimes,
    kubelet: Option<NodeProc>,
    scheduler: Option<NodeProc>,
    controller_manager: Option<NodeProc>,
    containerd: Option<NodeProc>,
    api: Option<KubeApiServer>,
    registry: Option<Registry>,
    /// The sandbox image (`<node registry>/pause:TAG`), pre-pulled into containerd.
    pause_image: String,
    /// The kubelet's `--root-dir`.
    kubelet_root_dir: String,
    dns: Option<Dns>,
    admin_kubeconfig: PathBuf,
    kubelet_args: Vec<String>,
    credential_providers: Option<CredentialProviders>,
    on_node_net: Option<ThreadNetns>,
    holder: Option<Holder>,
    netns: Option<Netns>,
    dir: Option<TempDir>,
    /// A token the agent's listener accepts (audience `pullprobe`), made once.
    agent_token: std::sync::OnceLock<String>,
    _lock: ClusterLock,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            name: None,
            dns: Dns::builder()
                .record("reg.test", "127.0.0.1")
                .record("mirror.test", "127.0.0.1"),
            credential_providers: None,
            containerd_extra: String::new(),
            containerd_bin_dir: None,
            kubelet_args: Vec::new(),
            kubelet_root_dir: kubelet::ROOT_DIR.into(),
            files: Vec::new(),
        }
    }

    /// A node with the default options.
    pub fn start() -> Node {
        Self::builder().start()
    }
}
