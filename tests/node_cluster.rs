//! Self-test of the one-node cluster harness (tests/node): the kubelet's own verdicts through
//! containerd's hosts.toml and the node's hermetic resolver, a clean teardown, and the DaemonSet
//! from manifests/ deployed for real. Each test brings a whole cluster up once (slow: run only
//! what you need, `cargo test --test node_cluster NAME`).

mod harness;
mod kube;
mod node;

use std::time::{Duration, Instant};

use harness::{OciImage, PushOpts, Registry};
use node::{AgentDeploy, Node, PodSpec, PullVerdict};

/// `certs.d/HOST:PORT/hosts.toml`: plain-HTTP `server`, tried after `hosts` (URLs). containerd
/// 1.6.20 rejects a file without any `[host]` table ("invalid `host` tree", then it falls back
/// to https), so the server gets one of its own when there is no other.
fn hosts_toml(node: &Node, host: &str, port: u16, hosts: &[String]) {
    let server = format!("http://{host}:{port}");
    let mut toml = format!("server = \"{server}\"\n");
    let tried = if hosts.is_empty() {
        vec![server.clone()]
    } else {
        hosts.to_vec()
    };
    for h in tried {
        toml += &format!("[host.\"{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    }
    node.write_file(
        &format!("/etc/containerd/certs.d/{host}:{port}/hosts.toml"),
        &toml,
    );
}

/// A `credentialprovider.kubelet.k8s.io/v1alpha1` plugin (shell: it runs in the kubelet's
/// mount namespace) answering `user:password` for `registry`.
fn credential_provider(registry: &str, user: &str, password: &str) -> node::CredentialProviders {
    let response = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1alpha1",
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "auth": {registry: {"username": user, "password": password}},
    });
    node::CredentialProviders {
        config: format!(
            "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: CredentialProviderConfig\n\
             providers:\n- name: test-plugin\n  matchImages: [\"{registry}\"]\n  \
             defaultCacheDuration: 1s\n  apiVersion: credentialprovider.kubelet.k8s.io/v1alpha1\n"
        ),
        plugins: vec![(
            "test-plugin".into(),
            format!("#!/bin/sh\ncat >/dev/null\necho '{response}'\n").into_bytes(),
        )],
    }
}

/// Everything that must be gone after a Node is dropped.
struct Leftovers {
    netns: String,
    pids: Vec<u32>,
    dir: std::path::PathBuf,
    /// The node's pod cgroups (`/sys/fs/cgroup/*/k8s.io/<container id>`), taken while it holds
    /// the machine's cluster lock; the `k8s.io` parents themselves are not checked afterwards:
    /// the next cluster (another test, another worktree) may make them again as soon as this
    /// one's lock is released.
    cgroups: Vec<std::path::PathBuf>,
}

fn leftovers_of(node: &Node) -> Leftovers {
    let mut pids = node::holder::Holder::processes_of(node.holder_pid());
    pids.push(node.holder_pid());
    Leftovers {
        netns: node.netns_name().to_string(),
        pids,
        dir: node.dir().to_path_buf(),
        cgroups: node::pod_cgroup_dirs()
            .into_iter()
            .filter(|d| !d.ends_with(node::runtime::K8S_NAMESPACE))
            .collect(),
    }
}

fn assert_nothing_left(l: &Leftovers) {
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&l.netns), "netns {} left: {list}", l.netns);
    // Killed processes reparented to init may stay zombies for a moment (init reaps them).
    let alive = || -> Vec<String> {
        l.pids
            .iter()
            .filter_map(|p| {
                let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
                let state = status.lines().find(|l| l.starts_with("State:"))?;
                let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
                (!state.contains("zombie")).then(|| format!("{p} {}", cmd.replace('\0', " ")))
            })
            .collect()
    };
    node::proc::poll(Duration::from_secs(10), || alive().is_empty());
    let alive = alive();
    assert!(alive.is_empty(), "node processes still alive: {alive:?}");
    assert!(!l.dir.exists(), "{} left", l.dir.display());
    assert!(
        !l.cgroups.is_empty(),
        "the node ran no container: nothing to check"
    );
    let left: Vec<_> = l.cgroups.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "pod cgroups left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&l.dir.display().to_string()),
        "mounts of the node left in the machine's namespace"
    );
}

fn expect_err_image_pull(v: &PullVerdict, needles: &[&str]) {
    match v {
        PullVerdict::ErrImagePull { message } => {
            for n in needles {
                assert!(message.contains(n), "no {n:?} in: {message}");
            }
        }
        other => panic!("expected ErrImagePull, got {other:?}"),
    }
}

/// A good image pulls, a missing tag fails with containerd's own "not found", and a mirror
/// added to hosts.toml afterwards serves a tag only it has (hosts.toml is read per pull).
fn step_hosts_toml(node: &Node, reg: &Registry) {
    let mirror = Registry::plain();
    OciImage::single("v1").push(reg, "app", &PushOpts::insecure());
    OciImage::build("only-mirror", &[("linux", "amd64")], false, "m", 0).push(
        &mirror,
        "app",
        &PushOpts::insecure(),
    );
    let rp = reg.port();
    hosts_toml(node, "reg.test", rp, &[]);
    let v = node.pull(&PodSpec::new("good", &format!("reg.test:{rp}/app:v1")));
    assert!(v.is_pulled(), "{v:?}");
    let v = node.pull(&PodSpec::new("missing", &format!("reg.test:{rp}/app:nope")));
    expect_err_image_pull(&v, &["not found"]);
    let mirror_url = format!("http://mirror.test:{}", mirror.port());
    hosts_toml(node, "reg.test", rp, &[mirror_url]);
    let v = node.pull(&PodSpec::new(
        "mirrored",
        &format!("reg.test:{rp}/app:only-mirror"),
    ));
    assert!(v.is_pulled(), "{v:?}");
    assert!(
        mirror.log().contains("/v2/app/manifests/only-mirror"),
        "the mirror's log shows no request:\n{}",
        mirror.log()
    );
}

/// NXDOMAIN comes from the node's own unbound; a systemd-resolved style symlinked resolv.conf
/// is made inside the node only, and names still resolve through it.
fn step_resolver(node: &Node, reg: &Registry) {
    let v = node.pull(&PodSpec::new("nx", "nxdomain.test:5000/app:v1"));
    let unbound = node.dns().ip().to_string();
    expect_err_image_pull(&v, &["no such host", &unbound]);
    let resolv = node
        .read_file("/etc/resolv.conf")
        .expect("node resolv.conf");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    node.write_file("/run/systemd/resolve/stub-resolv.conf", &resolv);
    node.symlink("/run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf");
    assert_eq!(
        node.read_file("/etc/resolv.conf").as_deref(),
        Some(resolv.as_str())
    );
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").ok(),
        host_resolv
    );
    let image = format!("reg.test:{}/app:v1", reg.port());
    let v = node.pull(&PodSpec::new("via-symlink", &image));
    assert!(v.is_pulled(), "{v:?}");
}

/// Refused without credentials; pulled with a pod pull secret; pulled once the kubelet runs a
/// credential-provider plugin.
fn step_credentials(node: &mut Node) {
    let locked = Registry::builder().htpasswd(&[("u", "s3cret")]).start();
    OciImage::single("v1").push(&locked, "app", &PushOpts::insecure().creds("u", "s3cret"));
    let host = format!("reg.test:{}", locked.port());
    hosts_toml(node, "reg.test", locked.port(), &[]);
    let image = format!("{host}/app:v1");
    let v = node.pull(&PodSpec::new("no-creds", &image));
    expect_err_image_pull(&v, &["401 Unauthorized"]);
    let v = node.pull(&PodSpec::new("secret", &image).pull_secret(&host, "u", "s3cret"));
    assert!(v.is_pulled(), "{v:?}");
    node.set_credential_providers(Some(credential_provider(&host, "u", "s3cret")));
    let v = node.pull(&PodSpec::new("plugin-creds", &image));
    assert!(v.is_pulled(), "{v:?}");
}

/// config.toml is read when containerd starts: another `config_path` (no hosts.toml there, so
/// https) breaks the next pull.
fn step_config_toml(node: &mut Node, reg: &Registry) {
    let config = node
        .read_file("/etc/containerd/config.toml")
        .expect("config.toml");
    let moved = config.replace("/etc/containerd/certs.d", "/etc/containerd/elsewhere.d");
    node.write_file("/etc/containerd/config.toml", &moved);
    node.restart_containerd();
    let image = format!("reg.test:{}/app:v1", reg.port());
    let v = node.pull(&PodSpec::new("moved-config", &image));
    expect_err_image_pull(&v, &["server gave HTTP response to HTTPS client"]);
}

/// With a pod running (busybox sleep as PID 1 ignores SIGTERM), dropping the node leaves
/// nothing behind.
fn step_teardown(node: Node) {
    let pause = format!("{}/pause:{}", node.registry().host_port(), node::PAUSE_TAG);
    let pod = node.create_pod(&PodSpec::new("sleeper", &pause));
    let pulled = node.wait_pull(&pod, node::PULL_TIMEOUT);
    assert!(
        pulled.as_ref().is_ok_and(PullVerdict::is_pulled),
        "{pulled:?}"
    );
    // `ctr tasks ls`: a header, the pod sandbox and the sleeper container.
    let running = node::proc::poll(Duration::from_secs(30), || {
        let out = node.ctr(&["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("RUNNING"))
            .count()
            >= 2
    });
    assert!(running, "the sleeper pod's tasks never showed up");
    let left = leftovers_of(&node);
    let t = Instant::now();
    drop(node);
    eprintln!("teardown in {:.1?}", t.elapsed());
    assert_nothing_left(&left);
}

#[test]
fn kubelet_verdicts_follow_hosts_toml_and_the_nodes_own_resolver() {
    let t = Instant::now();
    let mut node = Node::start();
    let reg = Registry::plain();
    step_hosts_toml(&node, &reg);
    step_resolver(&node, &reg);
    step_credentials(&mut node);
    step_config_toml(&mut node, &reg);
    step_teardown(node);
    eprintln!("whole test in {:.1?}", t.elapsed());
}

/// The kubelet's root dir in the DaemonSet test: not `/var/lib/kubelet`, which then holds only
/// kubeadm's two files (no `pods/`, no `pki/`: the masks of the old manifests could not be
/// mounted there and the pod never started).
const ELSEWHERE: &str = "/var/lib/kubelet-elsewhere";

/// The DaemonSet as docs/operate.md installs it on a kubeadm node whose kubelet runs with
/// `--root-dir` elsewhere (components kubeadm + kubelet-config-json with its root-dir patch),
/// as non-root (components/non-root: the node's files are all world-readable here): it starts,
/// turns Ready, writes its conditions, and sees exactly the node paths it mounts, live — not
/// /etc/shadow, the kubelet's kubeconfig, its client key or other pods' volumes.
#[test]
fn daemonset_from_manifests_deploys_and_writes_its_conditions_to_the_node() {
    let t = Instant::now();
    let node = Node::builder().kubelet_root_dir(ELSEWHERE).start();
    let config_json = format!("{ELSEWHERE}/config.json");
    node.write_file(&config_json, "{\"auths\": {}}\n");
    let exists = |p: &str| {
        node.command("test")
            .args(["-e", p])
            .status()
            .unwrap()
            .success()
    };
    assert!(!exists("/var/lib/kubelet/pki") && exists(node::kubelet::KUBEADM_FLAGS));
    let agent = node.deploy_agent(
        &AgentDeploy::new()
            .set("interval", "5s")
            .component("kubeadm")
            .component("kubelet-config-json")
            .component("non-root")
            .patch(&node::agent::kubelet_config_json_patch(ELSEWHERE)),
    );
    let pod = node.agent_pod().expect("agent pod");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
    let token_volume = pod["spec"]["volumes"].as_array().is_some_and(|vs| {
        vs.iter().any(|v| {
            v["secret"]["secretName"]
                .as_str()
                .is_some_and(|s| s.starts_with("pullprobe-token-"))
        })
    });
    assert!(
        token_volume,
        "no ServiceAccount token Secret volume: {pod:#}"
    );
    let pid = node.agent_pid().expect("the agent's process");
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap();
    assert_eq!(uid, "65532", "the agent's real uid");

    let t_cond = Instant::now();
    let conds = node.wait_conditions(
        &["RegistryUnreachable", "RegistryAuthFailing"],
        Duration::from_secs(90),
    );
    eprintln!("conditions after {:.1?}: {conds:#?}", t_cond.elapsed());
    for cond in &conds {
        assert!(
            cond["status"] == "True" || cond["status"] == "False",
            "{cond}"
        );
        assert!(
            cond["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{cond}"
        );
    }
    // Its one writable mount: the state it keeps across container restarts (`state_dir`,
    // saved after each cycle), written as UID 65532.
    let state = format!("/proc/{pid}/root/var/lib/pullprobe/state.json");
    let saved = node::proc::poll(Duration::from_secs(30), || {
        std::fs::metadata(&state).is_ok()
    });
    assert!(saved, "no {state}: {}", node.agent_log(&agent));
    let writes = node
        .api()
        .audit_writes_by("system:serviceaccount:pullprobe:pullprobe");
    assert!(
        writes
            .iter()
            .any(|e| e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["name"] == node.name()),
        "no nodes/status write by the agent's ServiceAccount"
    );

    let (code, status) = node.agent_get("/status");
    assert_eq!(code, 200, "{status}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("/status is JSON");
    // The kubelet's root dir, found in kubeadm-flags.env (components/kubeadm).
    assert!(
        status.to_string().contains(&format!("\"{ELSEWHERE}\"")),
        "the root dir from kubeadm-flags.env on /status: {status:#}"
    );
    let (code, metrics) = node.agent_get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("pullprobe_"), "{metrics}");
    // The DaemonSet's hostPath mounts show the node's own files, live ...
    for path in [
        "/etc/containerd/config.toml",
        "/etc/resolv.conf",
        "/etc/hosts",
        "/etc/default/kubelet",
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
        node::kubelet::KUBEADM_FLAGS,
        node::kubelet::CONFIG,
        &config_json,
    ] {
        assert!(node.read_file(path).is_some(), "{path} on the node");
        assert_eq!(
            node.agent_host_file(path),
            node.read_file(path),
            "{path} seen by the agent"
        );
    }
    let marker = "/etc/containerd/certs.d/marker.test/hosts.toml";
    node.write_file(marker, "server = \"https://marker.test\"\n");
    assert_eq!(
        node.agent_host_file(marker).as_deref(),
        Some("server = \"https://marker.test\"\n")
    );
    node.write_file(&config_json, "{\"auths\": {\"marker.test\": {}}}\n");
    assert_eq!(
        node.agent_host_file(&config_json),
        node.read_file(&config_json),
        "config.json written in place is seen"
    );
    // ... and nothing else of the node.
    for hidden in [
        "/etc/shadow",
        "/etc/passwd",
        node::kubelet::KUBECONFIG,
        &format!("{ELSEWHERE}/pki/kubelet-client-current.pem"),
        &format!("{ELSEWHERE}/pods"),
        "/var/lib/kubelet/pki",
        "/run/containerd/containerd.sock",
    ] {
        assert!(
            node.agent_host_exists(hidden) == Some(false),
            "{hidden} is visible to the agent"
        );
    }
    let log = node.agent_log(&agent);
    assert!(!log.trim().is_empty(), "empty agent log");
    eprintln!(
        "agent image {}; whole test in {:.1?}",
        agent.image,
        t.elapsed()
    );
}

/// Issue 17 item 2 on the real node: the base install (no `pull-secrets` component, so
/// `pull_secrets: false`) and a pod whose pull secret is wrong. The kubelet reads the secret
/// and gets a 401; the agent, which may not read it, names the secret the pod gives and that
/// it cannot read it, instead of blaming a missing credential (it said
/// `AuthCredentialsRequired … no credential is configured for it` before).
#[test]
fn a_wrong_pull_secret_on_the_base_install_is_named_not_blamed_on_a_missing_credential() {
    let node = Node::start();
    let agent = node.deploy_agent(&AgentDeploy::new().set("interval", "2s").set("jitter", "0"));
    let reg = Registry::builder()
        .htpasswd(&[("node", "nodepass")])
        .start();
    node::images::pause_image("v1").push(
        &reg,
        "app",
        &PushOpts::insecure().creds("node", "nodepass"),
    );
    let rp = reg.port();
    hosts_toml(&node, "reg.test", rp, &[]);
    let image = format!("reg.test:{rp}/app:v1");
    let spec =
        PodSpec::new("secret-bad", &image).pull_secret(&format!("reg.test:{rp}"), "node", "wrong");
    let (pod, kubelet) = node.start_pull(&spec, Duration::from_secs(90));
    expect_err_image_pull(
        &kubelet.expect("the kubelet's verdict"),
        &["401 Unauthorized"],
    );
    let (event, all) = node::proc::poll_some(Duration::from_secs(60), || {
        let evs = node.pod_events(&pod);
        let e = evs
            .iter()
            .find(|e| e["reason"] == "PullSecretUnreadable")?
            .clone();
        Some((e, evs))
    })
    .unwrap_or_else(|| {
        panic!(
            "no PullSecretUnreadable Event on the pod: {:#?}\n{}",
            node.pod_events(&pod),
            node.agent_log(&agent)
        )
    });
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "image {image}: the pod names secret default/secret-bad-pull, which the agent is not allowed to read (install components/pull-secrets)"
        )),
        "{message}"
    );
    assert!(
        !all.iter().any(|e| e["reason"] == "AuthCredentialsRequired"),
        "still blamed on a missing credential: {all:#?}"
    );
    node.delete_pod(&pod);
}
