//! What tests do with a running [`Node`]: its files, containerd, oracle pods, the Node object.

use std::process::Output;
use std::time::{Duration, Instant};

use super::*;

impl Node {
    pub(super) fn holder(&self) -> &Holder {
        self.holder.as_ref().expect("node holder")
    }

    pub(super) fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("node netns")
    }

    pub(super) fn scratch(&self) -> &Path {
        self.dir.as_ref().expect("node dir").path()
    }

    /// The Node's name (as registered by the kubelet).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long [`Node::start`] took, by phase.
    pub fn start_times(&self) -> &StartTimes {
        &self.times
    }

    /// The node's address (`eth0`, the kubelet's `--node-ip`; the pods' hostNetwork IP).
    pub fn node_ip(&self) -> std::net::Ipv4Addr {
        self.netns().node_ip()
    }

    /// The network namespace's name (`ip netns exec NAME …`).
    pub fn netns_name(&self) -> &str {
        self.netns().name()
    }

    /// The cluster's kube-apiserver (on the node's 127.0.0.1).
    pub fn api(&self) -> &KubeApiServer {
        self.api.as_ref().expect("node api server")
    }

    /// The node's unbound (its `/etc/resolv.conf` names it).
    pub fn dns(&self) -> &Dns {
        self.dns.as_ref().expect("node dns")
    }

    /// The node's own plain-HTTP registry (pause and agent images; free for tests to use).
    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().expect("node registry")
    }

    /// A kubeconfig file for `system:masters` (for kubectl).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The holder's PID (its `/proc/PID/ns/{mnt,net}` are the node's namespaces).
    pub fn holder_pid(&self) -> u32 {
        self.holder().pid()
    }

    /// Scratch dir of the cluster (daemon logs: `kubelet.log`, `containerd.log`, …).
    pub fn dir(&self) -> &Path {
        self.scratch()
    }

    // ---- node files --------------------------------------------------------------------

    /// Creates or replaces a file of the node (mode 0644), parents created.
    pub fn write_file(&self, path: &str, contents: &str) {
        self.holder().write_file(path, contents.as_bytes(), 0o644);
    }

    /// Like [`Node::write_file`] with bytes and a mode (a plugin script: 0o755).
    pub fn write_file_mode(&self, path: &str, contents: &[u8], mode: u32) {
        self.holder().write_file(path, contents, mode);
    }

    /// `ln -s TARGET LINK` in the node, replacing `LINK`.
    pub fn symlink(&self, target: &str, link: &str) {
        self.holder().symlink(target, link);
    }

    /// `rm -rf PATH` in the node.
    pub fn remove(&self, path: &str) {
        self.holder().remove(path);
    }

    /// `mkdir -p PATH` in the node.
    pub fn mkdir(&self, path: &str) {
        self.holder().mkdir(path);
    }

    /// A node file's content (symlinks followed inside the node), `None` if unreadable.
    pub fn read_file(&self, path: &str) -> Option<String> {
        self.holder()
            .read_file(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// A command run inside the node (its mount and network namespaces), e.g.
    /// `node.command(pullprobe).args(["check", "--host-root", "/", img])`.
    pub fn command(&self, program: &str) -> Command {
        self.holder().command(program)
    }

    // ---- containerd --------------------------------------------------------------------

    /// `ctr -n k8s.io ARGS…` against the node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        runtime::ctr(self.holder(), args)
    }

    /// Restarts containerd (after a change to `/etc/containerd/config.toml`), and the kubelet
    /// with it: the kubelet's gRPC connection to a restarted runtime stays in back-off for a
    /// while and fails sandboxes ("Error while dialing … containerd.sock"), so it is restarted
    /// too (same flags). Running pods keep running (their shims outlive containerd).
    pub fn restart_containerd(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(5));
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop(Duration::from_secs(10));
        }
        self.containerd = Some(runtime::start(
            self.holder(),
            &self.scratch().join("containerd.log"),
        ));
        self.restart_kubelet();
    }

    /// Restarts the kubelet with the same flags, and waits (≤ 30 s) until its `/healthz`
    /// answers `ok`. Needed after changing `/var/lib/kubelet/config.json`: the kubelet caches
    /// it for 5 minutes (`pkg/credentialprovider/provider.go`: the `.dockercfg` provider is a
    /// `CachingDockerConfigProvider` with `Lifetime: 5 * time.Minute`).
    pub fn restart_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(5));
        }
        let creds = self.credential_providers.clone();
        self.start_kubelet(creds.as_ref());
        let healthz = std::net::SocketAddr::from(([127, 0, 0, 1], 10248));
        let up = poll(Duration::from_secs(30), || {
            self.assert_daemons_running();
            agent::http_get(healthz, "/healthz").is_ok_and(|(c, b)| c == 200 && b == "ok")
        });
        assert!(up, "the kubelet's /healthz did not answer after a restart");
    }

    /// Runs the kubelet from now on with (`Some`) or without (`None`) credential-provider
    /// plugins, e.g. once a scenario's registry port is known: writes or removes their files and
    /// restarts the kubelet.
    pub fn set_credential_providers(&mut self, creds: Option<CredentialProviders>) {
        self.credential_providers = creds;
        self.restart_kubelet();
    }

    /// Tails of the node daemons' logs.
    pub fn kubelet_log(&self) -> String {
        proc::tail(&self.scratch().join("kubelet.log"), 200)
    }

    /// The kubelet log's length in bytes (an offset for [`Node::kubelet_log_since`]).
    pub fn kubelet_log_len(&self) -> u64 {
        std::fs::metadata(self.scratch().join("kubelet.log")).map_or(0, |m| m.len())
    }

    /// What the kubelet logged after `offset` (bytes; [`Node::kubelet_log_len`]), lossy UTF-8.
    pub fn kubelet_log_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.scratch().join("kubelet.log")) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut out);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn containerd_log(&self) -> String {
        proc::tail(&self.scratch().join("containerd.log"), 200)
    }

    // ---- the Node object ---------------------------------------------------------------

    /// `GET /api/v1/nodes/NAME` (the whole object).
    pub fn node_object(&self) -> Value {
        let path = format!("/api/v1/nodes/{}", self.name);
        self.api()
            .must("GET", &path, self.api().admin_token(), None)
    }

    /// The Node's `status.conditions`.
    pub fn conditions(&self) -> Vec<Value> {
        self.node_object()["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The Node condition of type `kind`, if present.
    pub fn node_condition(&self, kind: &str) -> Option<Value> {
        self.conditions().into_iter().find(|c| c["type"] == kind)
    }

    /// Waits (bounded) until every condition type in `kinds` is on the Node; returns them in
    /// that order. Panics with the conditions seen on timeout.
    pub fn wait_conditions(&self, kinds: &[&str], timeout: Duration) -> Vec<Value> {
        let got = poll_some(timeout, || {
            let cs = self.conditions();
            kinds
                .iter()
                .map(|k| cs.iter().find(|c| c["type"] == *k).cloned())
                .collect::<Option<Vec<_>>>()
        });
        got.unwrap_or_else(|| {
            panic!(
                "Node conditions {kinds:?} not all present after {timeout:?}: {:#}",
                Value::Array(self.conditions())
            )
        })
    }

    // ---- oracle pods -------------------------------------------------------------------

    /// Creates a pod (see [`PodSpec`]).
    pub fn create_pod(&self, spec: &PodSpec) -> Pod {
        pods::create(self.api(), spec)
    }

    /// The kubelet's verdict on the pod's pull, waited for up to `timeout`.
    pub fn wait_pull(&self, pod: &Pod, timeout: Duration) -> Result<PullVerdict, String> {
        pods::wait_verdict(self.api(), pod, timeout)
    }

    /// Creates the pod and waits (≤ `timeout`) for the kubelet's verdict; the pod stays.
    ///
    /// A pod with a pull secret is created only once the node can read that Secret: the Secret
    /// first, then a reader pod bound to the node that needs it ([`pods::secret_reader_manifest`]),
    /// and the pod once the reader runs (the kubelet has read the Secret). The reader is deleted
    /// once the verdict is in. Should the kubelet still log that it could not read the Secret for
    /// this pod, the verdict is an `Err` saying so (never a silent pull without it).
    pub fn start_pull(
        &self,
        spec: &PodSpec,
        timeout: Duration,
    ) -> (Pod, Result<PullVerdict, String>) {
        let log_start = self.kubelet_log_len();
        pods::create_secret(self.api(), spec);
        let reader = spec
            .pull_secret
            .is_some()
            .then(|| self.wait_secret_readable(spec, timeout));
        let pod = pods::create_pod(self.api(), spec);
        let mut v = self.wait_pull(&pod, timeout);
        if reader.is_some() {
            self.delete_reader(spec);
            let missed = self
                .kubelet_log_since(log_start)
                .contains(&spec.secret_not_retrieved_line());
            if missed {
                v = Err(format!(
                    "the kubelet pulled for {} without its pull secret although it had read it \
                     for the reader pod: {v:?}\nkubelet log:\n{}",
                    spec.name,
                    self.kubelet_log()
                ));
            }
        }
        (pod, v)
    }

    /// Creates the reader pod of `spec`'s pull Secret and waits until it runs (the kubelet has
    /// read the Secret with the node's own credentials). Panics with its status and events when
    /// it does not run within `timeout`.
    fn wait_secret_readable(&self, spec: &PodSpec, timeout: Duration) -> String {
        let manifest = pods::secret_reader_manifest(spec, &self.name, &self.pause_image);
        let ns = &spec.namespace;
        let api = self.api();
        let created = api.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            api.admin_token(),
            Some(&manifest),
        );
        let name = pods::secret_reader_name(spec);
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let running = poll(timeout, || {
            api.request("GET", &path, api.admin_token(), None)
                .is_ok_and(|r| r.status == 200 && pods::is_running(&r.json()))
        });
        if !running {
            let pod = Pod {
                name: name.clone(),
                namespace: ns.clone(),
                uid: created["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            };
            let status = api.must("GET", &path, api.admin_token(), None)["status"].clone();
            panic!(
                "the node could not read pull secret {ns}/{} within {timeout:?}: reader pod \
                 status {status:#}\nevents: {:#?}",
                spec.secret_name(),
                self.pod_events(&pod)
            );
        }
        name
    }

    /// Deletes the reader pod of `spec`'s pull Secret (grace 0), without waiting.
    fn delete_reader(&self, spec: &PodSpec) {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            spec.namespace,
            pods::secret_reader_name(spec)
        );
        let _ = self
            .api()
            .request("DELETE", &path, self.api().admin_token(), Some(&body));
    }

    /// [`Node::start_pull`] (≤ [`PULL_TIMEOUT`], panics past it), then deletes the pod again and
    /// prints how long the verdict took.
    pub fn pull(&self, spec: &PodSpec) -> PullVerdict {
        let t = Instant::now();
        let (pod, v) = self.start_pull(spec, PULL_TIMEOUT);
        eprintln!(
            "node {}: pull verdict for {} in {:.1?}: {v:?}",
            self.name,
            spec.image,
            t.elapsed()
        );
        self.delete_pod(&pod);
        v.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Events about the pod, oldest first.
    pub fn pod_events(&self, pod: &Pod) -> Vec<Value> {
        pods::events(self.api(), pod)
    }

    /// Deletes the pod (grace 0) and its pull Secret; waits until it is gone.
    pub fn delete_pod(&self, pod: &Pod) {
        pods::delete(self.api(), &pod.namespace, &pod.name);
    }
}
