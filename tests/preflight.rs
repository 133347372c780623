//! Pre-flight, fleet status and the rollout guard end to end on API objects: a real
//! kube-apiserver (tests/kube), **50 real `pullprobe agent`s**, each in its own network
//! namespace with its own node root (healthy, a dead mirror tried first, no credentials),
//! a Node with no agent, a real registry (htpasswd), the real `pullprobe controller` and
//! the real CLI as users of the shipped roles. Nothing reaches an agent: the agents and the
//! controller talk only to the API server, through objects the API server authorizes.
//!
//! 1. Every agent keeps its node's `NodePullStatus`.
//! 2. `pullprobe preflight` as a user with only `edit` in the namespace: the matrix, exit 1,
//!    the registry asked per fingerprint, not per node; a user without gets exit 2 and the
//!    role to ask for; `pullprobe status` reads the per-node objects.
//! 3. The rollout guard: `kubectl apply` of a Deployment with a missing tag in an opted-in
//!    namespace prints the webhook's warning (counts from the fleet's cached state), and the
//!    controller's owned `ImagePreflight` ends in a Warning Event on the Deployment.

mod harness;
mod kube;
mod preflight_lab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use harness::{OciImage, PushOpts, Registry};
use preflight_lab::{kubeconfig, node_root, register_with, write, Lab, NS};
use serde_json::{json, Value};

use crate::kube::{ControllerManager, KubeApiServer};

/// Real agents: healthy, a dead mirror first (degraded), no credentials (not_ready).
const HEALTHY: usize = 44;
const MIRROR: usize = 3;
const NOCREDS: usize = 3;
const AGENTS: usize = HEALTHY + MIRROR + NOCREDS;

fn node_name(i: usize) -> String {
    match i {
        i if i < HEALTHY => format!("healthy-{i:02}"),
        i if i < HEALTHY + MIRROR => format!("mirror-{}", i - HEALTHY),
        i => format!("nocreds-{}", i - HEALTHY - MIRROR),
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn texts(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pullprobe(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .arg(args[0])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(&args[1..])
        .output()
        .unwrap();
    texts(out)
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    texts(crate::kube::kubectl(kubeconfig, args, stdin))
}

/// Manifest requests (GET or HEAD) for `repo` in the registry's access log.
fn manifest_requests(reg: &Registry, repo: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| {
            (l.contains(&format!("\"GET /v2/{repo}/manifests/"))
                || l.contains(&format!("\"HEAD /v2/{repo}/manifests/")))
                && !l.contains("\" 401 ")
        })
        .count()
}

struct Fixture {
    api: KubeApiServer,
    _lab: Lab,
    reg: Registry,
    reg_host: String,
    dir: tempfile::TempDir,
    controller: Child,
    _kcm: ControllerManager,
    webhook_port: u16,
    _roots: Vec<tempfile::TempDir>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

/// The user's RoleBinding to a built-in role in `ns`.
fn bind(api: &KubeApiServer, user: &str, role: &str, ns: &str) {
    api.create_if_missing(
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        api.admin_token(),
    );
}

/// True once ClusterRole `role` grants something on pullprobe.io (the real
/// controller-manager's aggregation controller copied `manifests/user-roles.yaml` into it).
fn aggregated(api: &KubeApiServer, role: &str) -> bool {
    let r = api.must(
        "GET",
        &format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}"),
        api.admin_token(),
        None,
    );
    r["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            r["apiGroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "pullprobe.io"))
        })
    })
}

fn setup() -> Fixture {
    let api = KubeApiServer::builder()
        .user("alice", &[])
        .user("bob", &[])
        .start();
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.apply_file(&repo.join("crds/pullprobe.io.yaml"));
    api.create_namespace(NS);
    for f in [
        "serviceaccount.yaml",
        "rbac.yaml",
        "controller-rbac.yaml",
        "controller.yaml",
        "user-roles.yaml",
    ] {
        api.apply_file(&repo.join(f));
    }
    // The real controller-manager: role aggregation, and the garbage collector that removes
    // a workload's owned ImagePreflight with it.
    let kcm = ControllerManager::start(&api, "clusterrole-aggregation,garbagecollector");
    wait_for("edit aggregated", Duration::from_secs(60), || {
        aggregated(&api, "edit")
    });
    api.create_namespace("team");
    bind(&api, "alice", "edit", "team");

    let reg = Registry::builder()
        .htpasswd(&[("puller", "s3cret-canary")])
        .start();
    let creds = PushOpts::insecure().creds("puller", "s3cret-canary");
    OciImage::single("v1").push(&reg, "team/app", &creds);
    OciImage::single("v1").push(&reg, "team/web", &creds);

    let mut lab = Lab::new(AGENTS);
    let api_fwd = lab.expose(api.addr());
    let reg_fwd = lab.expose(format!("127.0.0.1:{}", reg.port()).parse().unwrap());
    let dead = lab.dead_port().to_string();
    let reg_host = reg_fwd.to_string();
    let sa = api.service_account_token(NS, "pullprobe", 3600);
    let agent_kc = kubeconfig(
        &api,
        &format!("https://{api_fwd}"),
        &sa,
        dir.path(),
        "agent.kc",
    );
    let cfg = write(
        dir.path(),
        "agent.yaml",
        "interval: 60s\nfleet:\n  node_count: 50\n",
    );
    // Each node runs one pod from the registry, so its agent checks that registry's path on
    // its own schedule and round 1 is answered from the NodePullStatus objects.
    let pod_image = format!("{reg_host}/team/web:v1");
    let good = Some(("puller", "s3cret-canary"));
    let mut roots = Vec::new();
    for i in 0..AGENTS {
        let node = node_name(i);
        let (mirror, creds) = match i {
            i if i < HEALTHY => (None, good),
            i if i < HEALTHY + MIRROR => (Some(dead.as_str()), good),
            _ => (None, None),
        };
        let root = node_root(&reg_host, mirror, creds);
        let pool = if i % 2 == 0 { "apps" } else { "batch" };
        register_with(
            &api,
            &node,
            Some(&lab.slots[i].addr.to_string()),
            &pod_image,
            &json!({"pool": pool}),
        );
        let args: Vec<String> = [
            "agent",
            "--kubeconfig",
            agent_kc.to_str().unwrap(),
            "--node-name",
            &node,
            "--config",
            cfg.to_str().unwrap(),
            "--host-root",
            root.path().to_str().unwrap(),
            "--listen",
            &format!("{}:9808", lab.slots[i].addr),
            "--log-format",
            "text",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.path().join(format!("{node}.log"));
        lab.spawn_args(
            i,
            env!("CARGO_BIN_EXE_pullprobe"),
            &args,
            &[("RUST_LOG", "info")],
            &log,
        );
        roots.push(root);
    }
    register_with(&api, "noagent", None, &pod_image, &json!({"pool": "apps"}));

    // The controller as its shipped ServiceAccount, with the webhook on loopback.
    let ctl_token = api.service_account_token(NS, "pullprobe-controller", 3600);
    let ctl_kc = api.write_kubeconfig(&ctl_token);
    let webhook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let controller = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args([
            "controller",
            "--kubeconfig",
            ctl_kc.to_str().unwrap(),
            "--namespace",
            NS,
        ])
        .args(["--identity", "ctl-0", "--log-format", "text"])
        .args(["--webhook-listen", &format!("127.0.0.1:{webhook_port}")])
        .args(["--webhook-cert-name", "127.0.0.1"])
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.path().join("controller.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("controller.err")).unwrap())
        .spawn()
        .unwrap();
    Fixture {
        api,
        _lab: lab,
        reg,
        reg_host,
        dir,
        controller,
        _kcm: kcm,
        webhook_port,
        _roots: roots,
    }
}

impl Fixture {
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn statuses(&self) -> Vec<Value> {
        let v = self.api.must(
            "GET",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
            self.api.admin_token(),
            None,
        );
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every agent's object names the registry its pod uses.
    fn wait_for_fleet(&self) {
        wait_for(
            "50 NodePullStatus with the registry's path",
            Duration::from_secs(120),
            || {
                let with_path = self
                    .statuses()
                    .iter()
                    .filter(|s| {
                        s["status"]["registries"].as_array().is_some_and(|r| {
                            r.iter().any(|r| r["registry"] == self.reg_host.as_str())
                        })
                    })
                    .count();
                with_path == AGENTS
            },
        );
    }
}

fn cell<'a>(m: &'a Value, node: &str, image: usize) -> &'a Value {
    let row = m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no row {node}: {m}"));
    &row["cells"][image]
}

#[test]
fn fifty_agents_preflight_status_and_rollout_guard_on_objects() {
    let t0 = Instant::now();
    let f = setup();
    f.wait_for_fleet();
    eprintln!("[{:?}] 50 agents keep their NodePullStatus", t0.elapsed());
    let api = &f.api;
    let alice = api.write_kubeconfig(api.user_token("alice"));
    let bob = api.write_kubeconfig(api.user_token("bob"));
    let (v1, v2) = (
        format!("{}/team/app:v1", f.reg_host),
        format!("{}/team/app:v2", f.reg_host),
    );

    // 2. Pre-flight as a user with only `edit` in `team`.
    let before = manifest_requests(&f.reg, "team/app");
    let (code, out, err) = pullprobe(
        &alice,
        &[
            "preflight",
            &v1,
            &v2,
            "-n",
            "team",
            "-o",
            "json",
            "--timeout",
            "90s",
        ],
    );
    assert_eq!(
        code,
        1,
        "stdout:\n{out}\nstderr:\n{err}\ncontroller:\n{}",
        f.log("controller.err")
    );
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for i in 0..HEALTHY {
        let n = node_name(i);
        let line = &m["summary"]["line"];
        assert_eq!(cell(&m, &n, 0)["verdict"], "ready", "{n}: {line}");
        assert_eq!(cell(&m, &n, 1)["verdict"], "not_ready", "{n}: {line}");
        assert_eq!(cell(&m, &n, 1)["reason"], "ManifestNotFound", "{n}: {line}");
    }
    let line = &m["summary"]["line"];
    assert_eq!(cell(&m, "mirror-0", 0)["verdict"], "degraded", "{line}");
    assert_eq!(
        cell(&m, "nocreds-0", 0)["reason"],
        "AuthCredentialsRequired",
        "{line}"
    );
    assert_eq!(cell(&m, "noagent", 0)["reason"], "NoAgent", "{line}");
    assert_eq!(m["summary"]["nodes"], AGENTS + 1, "{line}");
    assert_eq!(m["summary"]["not_ready"], AGENTS, "{line}");
    // Shared image checks name the node that made them.
    assert!(
        cell(&m, "healthy-00", 1)["checked_on"]
            .as_str()
            .is_some_and(|n| n.starts_with("healthy-")),
        "{line}"
    );
    // Registry load per fingerprint (healthy, mirror, nocreds: three node kinds), not per
    // node: at most a few manifest requests per image per kind, far below 50.
    let asked = manifest_requests(&f.reg, "team/app") - before;
    eprintln!(
        "[{:?}] pre-flight done; {asked} manifest requests for 2 images on 51 nodes",
        t0.elapsed()
    );
    assert!(
        asked <= 2 * 3 * 4,
        "{asked} manifest requests: the image checks were not shared"
    );

    // A user without a role in `team`: exit 2 and what to ask for.
    let (code, out, err) = pullprobe(&bob, &["preflight", &v1, "-n", "team"]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("imagepreflights") && err.contains("team"),
        "{err}"
    );

    // `pullprobe status` from the per-node objects (one list, no agent asked).
    let admin = api.write_kubeconfig(api.admin_token());
    let (code, out, err) = pullprobe(&admin, &["status", "-o", "json"]);
    assert!(code == 0 || code == 1, "status: {code}\n{out}\n{err}");
    for n in ["healthy-00", "mirror-0", "nocreds-0"] {
        assert!(out.contains(n), "status lacks {n}:\n{out}");
    }

    // 3. The rollout guard in `team`: the webhook's warning at apply time, then the Event.
    f.rollout_guard(&alice, &v2);
    eprintln!(
        "[{:?}] rollout guard warned and posted its Event",
        t0.elapsed()
    );
    for i in [0, HEALTHY, HEALTHY + MIRROR] {
        let log = f.log(&format!("{}.log", node_name(i)));
        assert!(
            !log.contains("s3cret-canary"),
            "the agent logged the credential"
        );
    }
    assert!(!f.log("controller.err").contains("s3cret-canary"));
}

impl Fixture {
    fn rollout_guard(&self, user: &Path, missing: &str) {
        let api = &self.api;
        let r = api
            .request_with(
                "PATCH",
                "/api/v1/namespaces/team",
                api.admin_token(),
                "application/merge-patch+json",
                Some(r#"{"metadata":{"labels":{"pullprobe.io/rollout-guard":"warn"}}}"#),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let port = self.webhook_port;
        api.create_if_missing(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "pullprobe-rollout-guard"},
                "webhooks": [{"name": "rollout-guard.pullprobe.io",
                    "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
                    "namespaceSelector": {"matchExpressions": [{"key": "pullprobe.io/rollout-guard", "operator": "In", "values": ["warn", "enforce"]}]},
                    "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                               "resources": ["deployments", "statefulsets", "daemonsets"]}],
                    "failurePolicy": "Ignore", "timeoutSeconds": 1, "sideEffects": "None",
                    "admissionReviewVersions": ["v1"]}]}),
            api.admin_token(),
        );
        // The controller fills the caBundle; until then the API server cannot call it.
        wait_for("the controller's caBundle", Duration::from_secs(60), || {
            let v = api.must(
                "GET",
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/pullprobe-rollout-guard",
                api.admin_token(),
                None,
            );
            v["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|b| !b.is_empty())
        });
        let deployment = |name: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "team"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": missing}]}}}})
            .to_string()
        };
        // The API server calls the webhook as soon as it has the caBundle's informer update;
        // apply (server-side dry runs) until a warning comes back, then for real.
        wait_for(
            "the webhook's warning in kubectl output",
            Duration::from_secs(60),
            || {
                let (code, o, e) = kubectl(
                    user,
                    &["apply", "--dry-run=server", "-f", "-"],
                    &deployment("web"),
                );
                assert_eq!(code, 0, "{o}\n{e}");
                e.contains("Warning: pullprobe:")
            },
        );
        let (code, o, e) = kubectl(user, &["apply", "-f", "-"], &deployment("web"));
        assert_eq!(code, 0, "{o}\n{e}");
        // The first apply of a tag nobody checked: said so, and the guard checks it now.
        assert!(
            e.contains(&format!(
                "Warning: pullprobe: {missing} is not checked yet; the rollout guard checks it now"
            )),
            "{e}"
        );
        // The guard's owned pre-flight, and its Warning Event on the Deployment.
        wait_for(
            "the guard's Event on the Deployment",
            Duration::from_secs(120),
            || {
                let ev = api.must(
                "GET",
                "/api/v1/namespaces/team/events?fieldSelector=involvedObject.kind%3DDeployment,involvedObject.name%3Dweb",
                api.admin_token(),
                None,
            );
                ev["items"].as_array().is_some_and(|items| {
                    items.iter().any(|e| {
                        e["type"] == "Warning"
                            && e["reason"] == "ImagesCannotBePulled"
                            && e["message"].as_str().is_some_and(|m| m.contains(missing))
                    })
                })
            },
        );
        let ipf = api.must(
            "GET",
            "/apis/pullprobe.io/v1alpha1/namespaces/team/imagepreflights/deployment-web",
            api.admin_token(),
            None,
        );
        assert_eq!(
            ipf["metadata"]["ownerReferences"][0]["kind"], "Deployment",
            "{ipf}"
        );
        assert_eq!(ipf["status"]["summary"]["notReady"], AGENTS, "{ipf}");
        // The next rollout of the same tag (another Deployment, seconds later): the webhook
        // answers from the checks the guard's pre-flight left in the NodePullStatus objects.
        let (code, o, e) = kubectl(user, &["apply", "-f", "-"], &deployment("web2"));
        assert_eq!(code, 0, "{o}\n{e}");
        eprintln!("kubectl apply printed:\n{e}");
        assert!(
            e.contains(&format!(
                "Warning: pullprobe: {AGENTS} of {} nodes cannot pull {missing}",
                AGENTS + 1
            )),
            "{e}"
        );
        assert!(o.contains("deployment.apps/web2 created"), "{o}");
        // Deleting the Deployment takes its pre-flight with it (the real garbage collector).
        api.must(
            "DELETE",
            "/apis/apps/v1/namespaces/team/deployments/web",
            api.admin_token(),
            None,
        );
        wait_for(
            "the owned ImagePreflight collected",
            Duration::from_secs(60),
            || {
                let r = api
                .request("GET", "/apis/pullprobe.io/v1alpha1/namespaces/team/imagepreflights/deployment-web", api.admin_token(), None)
                .unwrap();
                r.status == 404
            },
        );
    }
}
