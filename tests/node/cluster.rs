//! Bring-up and teardown of a [`Node`]: the order matters both ways.
//!
//! Up: lock → network namespace → holder (mount namespace) → this thread joins the network →
//! unbound → the node's registry (pause image) → node files → containerd → etcd +
//! kube-apiserver → kubelet files → controller-manager, scheduler, kubelet → Node registered
//! and Ready → `default` ServiceAccount (pods are admitted only once it exists).
//!
//! Down (also when a test panics, from Drop): kubelet first (or it restarts what is killed) →
//! every task of every containerd namespace killed and deleted → containerd → any process left
//! in the node's mount namespace (shims, pods) → kubelet tmpfs volumes unmounted → scheduler,
//! controller-manager → kube-apiserver + etcd → registry, unbound → the thread leaves the
//! namespace → holder → veth + namespace → the scratch dir (etcd data included).

use std::time::{Duration, Instant};

use super::*;

impl Node {
    pub(super) fn start_with(b: NodeBuilder) -> Node {
        let lock = ClusterLock::acquire();
        let t0 = Instant::now();
        netns::remove_stale();
        remove_stale_scratch_dirs();
        remove_pod_cgroups();
        for bin in [
            "kubelet",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
        ] {
            control::kube_binary(bin);
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-", netns::NETNS_PREFIX, std::process::id()))
            .tempdir_in("/tmp")
            .expect("node scratch dir");
        let netns = Netns::create();
        let mut holder = Holder::start(&netns.path(), dir.path(), &b.kubelet_root_dir);
        if let Some(d) = &b.containerd_bin_dir {
            holder.set_bin_dir(d);
        }
        let on_node_net = netns.enter();
        let name = b.name.clone().unwrap_or_else(|| {
            let suffix = netns.name().rsplit('-').next().unwrap_or("0");
            format!("pp-node-{suffix}")
        });
        let mut node = Node {
            name,
            times: StartTimes::default(),
            kubelet: None,
            scheduler: None,
            controller_manager: None,
            containerd: None,
            pause_image: String::new(),
            kubelet_root_dir: b.kubelet_root_dir.clone(),
            api: None,
            registry: None,
            dns: None,
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            kubelet_args: Vec::new(),
            credential_providers: None,
            on_node_net: Some(on_node_net),
            holder: Some(holder),
            netns: Some(netns),
            dir: Some(dir),
            agent_token: std::sync::OnceLock::new(),
            _lock: lock,
        };
        node.bring_up(b, t0);
        node
    }

    fn bring_up(&mut self, mut b: NodeBuilder, t0: Instant) {
        self.dns = Some(std::mem::replace(&mut b.dns, Dns::builder()).start());
        let registry = Registry::plain();
        let pause = images::pause_image(PAUSE_TAG).push(&registry, "pause", &PushOpts::insecure());
        self.registry = Some(registry);
        self.write_base_files(&pause.reference, &b.containerd_extra);
        for (path, data, mode) in &b.files {
            self.holder().write_file(path, data, *mode);
        }
        if let Some(d) = &b.containerd_bin_dir {
            self.write_dpkg_status_for(d);
        }
        self.containerd = Some(runtime::start(
            self.holder(),
            &self.scratch().join("containerd.log"),
        ));
        let t_api = Instant::now();
        self.api = Some(KubeApiServer::builder().node(&self.name).start());
        self.times.apiserver = t_api.elapsed();
        self.write_kubeconfigs();
        self.kubelet_args = b.kubelet_args.clone();
        self.prepull(&pause.reference);
        self.pause_image = pause.reference.clone();
        self.start_daemons(&b);
        self.wait_registered_and_ready(t0);
        self.times.total = t0.elapsed();
        eprintln!(
            "node {}: up in {:.1?} (kube-apiserver {:.1?}, kubelet registered at {:.1?}, Ready at {:.1?})",
            self.name,
            self.times.total,
            self.times.apiserver,
            self.times.kubelet_registered,
            self.times.node_ready
        );
    }

    /// The node's dpkg status names the containerd release it runs (what `check --host-root /`
    /// reads when no version is given), as on a node where that package is installed.
    fn write_dpkg_status_for(&self, bin_dir: &Path) {
        let out = std::process::Command::new(bin_dir.join("containerd"))
            .arg("--version")
            .output()
            .expect("containerd --version");
        // "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1"
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let version = text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap_or_default();
        let stanzas: Vec<String> = status
            .split("\n\n")
            .map(|st| {
                if st.lines().any(|l| l == "Package: containerd") {
                    st.lines()
                        .map(|l| match l.starts_with("Version: ") {
                            true => format!("Version: {version}"),
                            false => l.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    st.to_string()
                }
            })
            .collect();
        self.holder().write_file(
            "/var/lib/dpkg/status",
            stanzas.join("\n\n").as_bytes(),
            0o644,
        );
    }

    /// resolv.conf, hosts, CNI config and containerd's config.toml in the node's /etc.
    fn write_base_files(&self, sandbox_image: &str, containerd_extra: &str) {
        let h = self.holder();
        let resolv = std::fs::read(self.dns().resolv_conf()).expect("read unbound resolv.conf");
        h.write_file("/etc/resolv.conf", &resolv, 0o644);
        let ip = self.netns().node_ip();
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{}\n",
            self.name
        );
        h.write_file("/etc/hosts", hosts.as_bytes(), 0o644);
        let cni_bin = self.scratch().join("cni-bin");
        std::fs::create_dir_all(&cni_bin).expect("mkdir cni-bin");
        std::fs::copy("/usr/lib/cni/loopback", cni_bin.join("loopback"))
            .expect("copy /usr/lib/cni/loopback (Debian containernetworking-plugins)");
        h.write_file(
            &format!("{}/10-loopback.conflist", runtime::CNI_CONF_DIR),
            runtime::LOOPBACK_CONFLIST.as_bytes(),
            0o644,
        );
        let cfg = runtime::default_config(sandbox_image, &cni_bin, containerd_extra);
        h.write_file(runtime::CONFIG, cfg.as_bytes(), 0o644);
        h.mkdir(runtime::CERTS_D);
    }

    fn write_kubeconfigs(&self) {
        let api = self.api();
        std::fs::write(
            &self.admin_kubeconfig,
            api.kubeconfig_yaml(api.admin_token()),
        )
        .expect("write admin kubeconfig");
        let node_kubeconfig = api.kubeconfig_yaml(api.node_token(&self.name));
        kubelet::write_files(self.holder(), &node_kubeconfig);
    }

    /// The sandbox image into containerd's k8s.io namespace before any pod needs it, so that a
    /// scenario's registry config can never break pod sandboxes.
    fn prepull(&self, reference: &str) {
        let out = runtime::ctr(
            self.holder(),
            &["images", "pull", "--plain-http", reference],
        );
        assert!(
            out.status.success(),
            "pre-pull of the pause image {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_daemons(&mut self, b: &NodeBuilder) {
        let d = self.scratch().to_path_buf();
        self.controller_manager = Some(control::start_controller_manager(
            self.holder(),
            self.api(),
            &self.admin_kubeconfig,
            d.join("kube-controller-manager.log"),
        ));
        self.scheduler = Some(control::start_scheduler(
            self.holder(),
            &self.admin_kubeconfig,
            d.join("kube-scheduler.log"),
        ));
        self.start_kubelet(b.credential_providers.as_ref());
    }

    /// Writes the credential-provider files (or removes them) and starts the kubelet.
    pub(super) fn start_kubelet(&mut self, creds: Option<&CredentialProviders>) {
        kubelet::write_credential_providers(self.holder(), creds);
        self.credential_providers = creds.cloned();
        let ip = self.netns().node_ip().to_string();
        let flags = kubelet::Flags::new(
            &self.name,
            &ip,
            &self.kubelet_root_dir,
            creds,
            &self.kubelet_args,
        );
        let bin = control::kube_binary("kubelet");
        kubelet::write_service_layout(self.holder(), &bin, &flags);
        self.kubelet = Some(kubelet::start(
            self.holder(),
            &bin,
            &flags.all(),
            self.scratch().join("kubelet.log"),
        ));
    }

    fn wait_registered_and_ready(&mut self, t0: Instant) {
        let path = format!("/api/v1/nodes/{}", self.name);
        let registered = poll(Duration::from_secs(60), || {
            self.assert_daemons_running();
            self.api()
                .request("GET", &path, self.api().admin_token(), None)
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
        assert!(registered, "the kubelet did not register its Node in 60 s");
        self.times.kubelet_registered = t0.elapsed();
        let ready = poll(Duration::from_secs(60), || {
            self.assert_daemons_running();
            self.node_condition("Ready")
                .is_some_and(|c| c["status"] == "True")
        });
        assert!(
            ready,
            "Node {} not Ready in 60 s: {:#}",
            self.name,
            self.node_object()["status"]["conditions"]
        );
        self.times.node_ready = t0.elapsed();
        let sa = "/api/v1/namespaces/default/serviceaccounts/default";
        let has_sa = poll(Duration::from_secs(30), || {
            self.api()
                .request("GET", sa, self.api().admin_token(), None)
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
        assert!(
            has_sa,
            "no default ServiceAccount after 30 s (controller-manager)"
        );
    }

    /// Panics with the log tail of a node daemon that has exited.
    pub fn assert_daemons_running(&mut self) {
        for p in [
            self.containerd.as_mut(),
            self.kubelet.as_mut(),
            self.controller_manager.as_mut(),
            self.scheduler.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            p.assert_running();
        }
    }

    fn print_logs(&self) {
        for p in [
            &self.kubelet,
            &self.containerd,
            &self.controller_manager,
            &self.scheduler,
        ]
        .into_iter()
        .flatten()
        {
            eprintln!(
                "---- {} (tail):\n{}",
                p.log_path().display(),
                p.log_tail(40)
            );
        }
    }

    fn teardown(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(2));
        }
        if let (Some(h), true) = (self.holder.as_ref(), self.containerd.is_some()) {
            runtime::kill_all_tasks(h);
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop(Duration::from_secs(5));
        }
        if let Some(h) = self.holder.as_ref() {
            h.kill_all_processes();
            h.unmount_kubelet_volumes(&self.kubelet_root_dir);
        }
        remove_pod_cgroups();
        self.scheduler = None;
        self.controller_manager = None;
        self.api = None;
        self.registry = None;
        self.dns = None;
        self.on_node_net = None;
        self.holder = None;
        self.netns = None;
        self.keep_logs();
        self.dir = None;
    }

    /// With `PULLPROBE_NODE_LOGS=DIR`, copies the daemons' logs to `DIR/<node name>/` before
    /// the scratch dir goes.
    fn keep_logs(&self) {
        let (Some(root), Some(dir)) = (std::env::var_os("PULLPROBE_NODE_LOGS"), &self.dir) else {
            return;
        };
        let dest = Path::new(&root).join(&self.name);
        if std::fs::create_dir_all(&dest).is_err() {
            return;
        }
        for e in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), dest.join(e.file_name()));
            }
        }
        eprintln!("node {}: logs kept in {}", self.name, dest.display());
    }
}

/// Scratch dirs `/tmp/ppnode-<pid>-*` of harness processes that no longer run (killed before
/// their Drop): their mounts died with their namespaces, so only files are left.
fn remove_stale_scratch_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(netns::NETNS_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        let dead = !owner.is_empty()
            && owner.chars().all(|c| c.is_ascii_digit())
            && !Path::new("/proc").join(owner).exists();
        if dead && e.path().is_dir() {
            eprintln!("node harness: removing stale {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The cgroup v1 dirs runc created for the CRI's containers (`/k8s.io/<id>` under each
/// controller: containerd's default cgroups path is `/<namespace>/<id>`), children first, then
/// the `/k8s.io` parents.
pub fn pod_cgroup_dirs() -> Vec<PathBuf> {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let parents: Vec<PathBuf> = controllers
        .flatten()
        .map(|c| c.path().join(runtime::K8S_NAMESPACE))
        .filter(|p| p.is_dir())
        .collect();
    let mut dirs: Vec<PathBuf> = parents
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.extend(parents);
    dirs
}

/// Removes the pod cgroups ([`pod_cgroup_dirs`]), waiting (≤ 10 s) until they are gone: the
/// kernel refuses `rmdir` (EBUSY) while a task is still in one — a container process still
/// exiting after its SIGKILL, which under load can outlast the teardown's first attempt (a cold
/// CI run found `/sys/fs/cgroup/memory/k8s.io` left). Whatever is still in them is killed again.
/// Called with the cluster lock held, so every such cgroup is this node's.
fn remove_pod_cgroups() {
    let gone = poll(Duration::from_secs(10), || {
        let dirs = pod_cgroup_dirs();
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
            let _ = std::fs::remove_dir(d);
        }
        dirs.is_empty() || pod_cgroup_dirs().is_empty()
    });
    if !gone {
        eprintln!(
            "node harness: pod cgroups still there after 10 s: {:?}",
            pod_cgroup_dirs()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        self.teardown();
    }
}
