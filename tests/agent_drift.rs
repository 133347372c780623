//! Drift: the node's files change under a running agent, and the next cycles reflect it
//! without a restart — the CA file rotated, a mirror added then gone, hosts.toml pointing
//! at a dead server, the kubelet's `config.json` credential rotated, the credential
//! provider plugin starting to fail, resolv.conf replaced. Each break turns a condition
//! True on the Node (a REAL kube-apiserver v1.20.2, tests/kube) within two cycles of the
//! agent re-reading the files (`reload_interval: 1s`, `fail_after: 1`), and each fix turns
//! it back. Registries (distribution 2.8, TLS, htpasswd) and the resolver (unbound) are real.

mod agent_proc;
mod harness;
mod kube;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::agent_proc::{
    docker_config_json, get_json, http_get, metric_sum, status_condition, status_targets, wait_for,
    write_file, AgentProc,
};
use crate::harness::{Dns, OciImage, Pki, PushOpts, Registry};
use crate::kube::KubeApiServer;

const NODE: &str = "node-b";
const UNREACHABLE: &str = "RegistryUnreachable";
const AUTH: &str = "RegistryAuthFailing";
/// Cycles between a file change and the flip seen on `/status`: the cycle in flight when
/// the file changed (it may have re-read the files just before), then the one that reads
/// the change and, with `fail_after: 1`, flips — plus one when the failing check outlives
/// the cycle budget (half the 1 s interval here; a dead nameserver takes the resolver's
/// 1 s timeout) and so reports in the next cycle instead of holding this one.
const FLIP_WITHIN_CYCLES: f64 = 3.0;

/// A credential provider that answers bob's credentials for `REGISTRY` while the file
/// `MODE` says `ok`, and fails (exit 1) otherwise.
const PROVIDER: &str = r#"#!/bin/sh
cat >/dev/null
if [ "$(cat MODE)" != ok ]; then echo "provider backend unavailable" >&2; exit 1; fi
echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"0s","auth":{"REGISTRY":{"username":"bob","password":"bob-pw"}}}'
"#;

/// The node under the agent: its files, the servers it reaches, and the agent.
struct Node {
    api: KubeApiServer,
    /// Started once the files are written.
    agent: Option<AgentProc>,
    root: tempfile::TempDir,
    pki: Pki,
    dns: Dns,
    /// Anonymous TLS registry (CA and hosts.toml drift).
    a: Registry,
    /// htpasswd alice (config.json drift).
    b: Registry,
    /// htpasswd bob (credential provider drift).
    c: Registry,
    mode: PathBuf,
}

fn host(r: &Registry) -> String {
    format!("registry.test:{}", r.port())
}

impl Node {
    fn agent(&self) -> &AgentProc {
        self.agent.as_ref().expect("agent started")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
    fn put(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_file(
            p.parent().unwrap(),
            p.file_name().unwrap().to_str().unwrap(),
            text,
        );
    }
    fn hosts_toml(&self, r: &Registry, server_port: u16, mirror: Option<u16>) {
        let h = host(r);
        let ca = format!("/etc/containerd/certs.d/{h}/ca.crt");
        let mut t = format!("server = \"https://registry.test:{server_port}\"\nca = \"{ca}\"\n");
        if let Some(m) = mirror {
            t += &format!(
                "\n[host.\"https://registry.test:{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n"
            );
        }
        self.put(&format!("etc/containerd/certs.d/{h}/hosts.toml"), &t);
    }
    fn ca_file(&self, r: &Registry, pem_path: &Path) {
        let pem = std::fs::read_to_string(pem_path).unwrap();
        self.put(&format!("etc/containerd/certs.d/{}/ca.crt", host(r)), &pem);
    }
    fn cycles(&self) -> f64 {
        let m = http_get(self.agent().port, "/metrics").expect("/metrics").1;
        metric_sum(&m, "pullprobe_cycles_total")
    }
    fn local(&self, kind: &str) -> Value {
        status_condition(&get_json(self.agent().port, "/status"), kind)
    }
    fn on_node(&self, kind: &str) -> Option<Value> {
        self.api.node_condition(NODE, kind)
    }

    /// Apply `change` to the node's files, then: the condition `kind` reaches `status` on
    /// `/status` within [`FLIP_WITHIN_CYCLES`] cycles, and on the Node (the writer's 1 s
    /// tick later). Returns the Node's condition.
    fn drift(&self, what: &str, kind: &str, status: &str, change: impl FnOnce(&Node)) -> Value {
        let before = self.cycles();
        change(self);
        let at = wait_for(
            Duration::from_secs(20),
            &format!("{what}: {kind}={status} on /status"),
            || (self.local(kind)["status"] == status).then(|| self.cycles()),
        );
        assert!(
            at - before <= FLIP_WITHIN_CYCLES,
            "{what}: {kind}={status} after {} cycles",
            at - before
        );
        let c = wait_for(
            Duration::from_secs(10),
            &format!("{what}: {kind}={status} on the Node"),
            || self.on_node(kind).filter(|c| c["status"] == status),
        );
        eprintln!(
            "{what}: {kind}={status} ({}) after {} cycle(s)",
            c["reason"],
            at - before
        );
        c
    }

    /// The agent's latest result for the image on registry `r`.
    fn target(&self, r: &Registry) -> Value {
        let h = host(r);
        status_targets(&get_json(self.agent().port, "/status"))
            .into_iter()
            .find(|(k, _)| k.starts_with("image ") && k.contains(&h))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no image target for {h}"))
    }
}

fn setup() -> Node {
    let api = KubeApiServer::start();
    let token = api.apply_project_rbac();
    api.must(
        "POST",
        "/api/v1/nodes",
        api.admin_token(),
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );
    let kubeconfig = api.write_kubeconfig(&token);
    let pki = Pki::new();
    let a = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&a, "team/app", &PushOpts::tls(&pki));
    let b = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "alice-pw")])
        .storage(a.storage())
        .start();
    let c = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("bob", "bob-pw")])
        .storage(a.storage())
        .start();
    let dns = Dns::start_default();
    let root = agent_proc::host_root();
    let mode = root.path().join("provider-mode");
    std::fs::write(&mode, "ok").unwrap();
    let mut node = Node {
        agent: None,
        api,
        root,
        pki,
        dns,
        a,
        b,
        c,
        mode,
    };
    node.write_files();
    // Every image checked every cycle (period = interval), so image targets track drift
    // as closely as the per-registry path checks do.
    let images: Vec<String> = [&node.a, &node.b, &node.c]
        .iter()
        .map(|r| format!("  - \"{}/team/app:v1\"", host(r)))
        .collect();
    let cfg = write_file(
        node.root.path(),
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 60s\nfail_after: 1\nrecover_after: 1\n\
             reload_interval: 1s\nfleet:\n  node_count: 1\n  period: 1s\n  checks_per_period: 1\nbackoff:\n  initial: 1s\n  max: 1s\n\
             images:\n{}\n",
            images.join("\n")
        ),
    );
    let how = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--image-credential-provider-config",
        "/etc/kubernetes/credential-providers.yaml",
        "--image-credential-provider-bin-dir",
        "/opt/credential-providers",
    ];
    node.agent = Some(agent_proc::spawn_for_node(
        &how,
        NODE,
        &cfg,
        node.root.path(),
    ));
    // The main listener reviews every caller (TokenReview + SubjectAccessReview).
    let port = node.agent().port;
    agent_proc::authorize(port, &node.api.agent_caller_token());
    node
}

impl Node {
    /// The healthy node: resolv.conf naming unbound, containerd's certs.d with each
    /// registry's CA, alice in the kubelet's config.json, the provider for bob.
    fn write_files(&self) {
        let resolv = std::fs::read_to_string(self.dns.resolv_conf()).unwrap();
        self.put("etc/resolv.conf", &resolv);
        self.put(
            "etc/containerd/config.toml",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
        );
        for r in [&self.a, &self.b, &self.c] {
            self.hosts_toml(r, r.port(), None);
            self.ca_file(r, &self.pki.ca_cert);
        }
        self.put(
            "var/lib/kubelet/config.json",
            &docker_config_json(&host(&self.b), "alice", "alice-pw"),
        );
        self.put(
            "etc/kubernetes/credential-providers.yaml",
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  \
                 - name: drift-provider\n    matchImages: [\"{}\"]\n    defaultCacheDuration: 1s\n    \
                 apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
                host(&self.c)
            ),
        );
        let script = PROVIDER
            .replace("REGISTRY", &host(&self.c))
            .replace("MODE", self.mode.to_str().unwrap());
        self.put("opt/credential-providers/drift-provider", &script);
        let plugin = self.path("opt/credential-providers/drift-provider");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The CA file rotated to a CA the registry's certificate does not chain to, and back.
fn ca_rotated(n: &Node) {
    let c = n.drift("CA rotated", UNREACHABLE, "True", |n| {
        n.ca_file(&n.a, &n.pki.unknown_ca_cert)
    });
    assert_eq!(c["reason"], "TLSUnknownAuthority", "{c}");
    assert!(c["message"].as_str().unwrap().contains(&host(&n.a)), "{c}");
    n.drift("CA restored", UNREACHABLE, "False", |n| {
        n.ca_file(&n.a, &n.pki.ca_cert)
    });
}

/// A mirror added to hosts.toml, then gone; then hosts.toml pointing at a dead server, and back.
fn mirror_added_gone_and_hosts_toml_broken(n: &Node) {
    let mirror = Registry::builder()
        .tls(&n.pki.server)
        .storage(n.a.storage())
        .start();
    let mirror_port = mirror.port();
    n.hosts_toml(&n.a, n.a.port(), Some(mirror_port));
    let endpoint = format!("https://registry.test:{mirror_port}");
    let t = wait_for(Duration::from_secs(15), "the mirror in use", || {
        let t = n.target(&n.a);
        t["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(&endpoint))
            .then_some(t)
    });
    assert_eq!(t["verdict"], "ready", "{t}");
    // The mirror goes away: containerd falls back to the registry, so pulls still work
    // (degraded), and the node condition stays False.
    drop(mirror);
    let t = wait_for(
        Duration::from_secs(15),
        "fallback past the dead mirror",
        || {
            let t = n.target(&n.a);
            (t["verdict"] == "degraded").then_some(t)
        },
    );
    assert!(
        t["endpoint"]
            .as_str()
            .unwrap()
            .contains(&n.a.port().to_string()),
        "{t}"
    );
    assert_eq!(n.local(UNREACHABLE)["status"], "False");
    // hosts.toml now sends every pull to a server that is gone.
    let dead = agent_proc::free_port();
    let c = n.drift("hosts.toml broken", UNREACHABLE, "True", |n| {
        n.hosts_toml(&n.a, dead, None)
    });
    assert_eq!(c["reason"], "ConnectRefused", "{c}");
    n.drift("hosts.toml fixed", UNREACHABLE, "False", |n| {
        n.hosts_toml(&n.a, n.a.port(), None)
    });
}

/// The kubelet's config.json rotated to a password the registry refuses, and back.
fn config_json_rotated(n: &Node) {
    let c = n.drift("config.json rotated", AUTH, "True", |n| {
        n.put(
            "var/lib/kubelet/config.json",
            &docker_config_json(&host(&n.b), "alice", "stale-pw"),
        )
    });
    assert_eq!(c["reason"], "AuthCredentialsRejected", "{c}");
    assert!(c["message"].as_str().unwrap().contains(&host(&n.b)), "{c}");
    n.drift("config.json fixed", AUTH, "False", |n| {
        n.put(
            "var/lib/kubelet/config.json",
            &docker_config_json(&host(&n.b), "alice", "alice-pw"),
        )
    });
}

/// The credential provider starts failing, and recovers.
fn provider_failing(n: &Node) {
    let c = n.drift("provider failing", AUTH, "True", |n| {
        std::fs::write(&n.mode, "broken").unwrap()
    });
    assert_eq!(c["reason"], "CredentialProviderFailed", "{c}");
    assert!(c["message"].as_str().unwrap().contains(&host(&n.c)), "{c}");
    n.drift("provider back", AUTH, "False", |n| {
        std::fs::write(&n.mode, "ok").unwrap()
    });
}

/// resolv.conf replaced by one whose nameserver does not answer, and restored.
fn resolv_conf_replaced(n: &Node) {
    let c = n.drift("resolv.conf replaced", UNREACHABLE, "True", |n| {
        n.put(
            "etc/resolv.conf",
            "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
        )
    });
    assert_eq!(c["reason"], "DNSFailure", "{c}");
    n.drift("resolv.conf restored", UNREACHABLE, "False", |n| {
        let resolv = std::fs::read_to_string(n.dns.resolv_conf()).unwrap();
        n.put("etc/resolv.conf", &resolv)
    });
}

#[test]
fn node_file_drift_is_picked_up_without_a_restart() {
    let mut n = setup();
    n.agent
        .as_mut()
        .unwrap()
        .wait_ready(Duration::from_secs(30));
    for kind in [UNREACHABLE, AUTH] {
        wait_for(
            Duration::from_secs(15),
            &format!("{kind}=False on the Node"),
            || n.on_node(kind).filter(|c| c["status"] == "False"),
        );
    }
    for r in [&n.a, &n.b, &n.c] {
        assert_eq!(n.target(r)["verdict"], "ready", "{}", n.target(r));
    }
    let pid = n.agent().pid();
    ca_rotated(&n);
    mirror_added_gone_and_hosts_toml_broken(&n);
    config_json_rotated(&n);
    provider_failing(&n);
    resolv_conf_replaced(&n);
    // All of it without a restart.
    assert!(
        n.agent.as_mut().unwrap().try_wait().is_none(),
        "the agent exited"
    );
    assert_eq!(n.agent().pid(), pid);
    for r in [&n.a, &n.b, &n.c] {
        assert_eq!(n.target(r)["verdict"], "ready", "{}", n.target(r));
    }
}
