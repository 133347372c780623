//! Pre-flight's RBAC on a REAL kube-apiserver (tests/kube) with the real CLI binary: the
//! CRDs and the shipped roles applied, kube-controller-manager's ClusterRole aggregation
//! controller running (the only controller here), so the built-in `edit`, `admin` and `view`
//! get pullprobe's rules as they would in a cluster.
//!
//! - a user with only `edit` in a namespace creates an ImagePreflight with `pullprobe
//!   preflight` (images, `-f` manifests with their scheduling constraints, `--workload`); with
//!   no controller running it times out with exit 3 naming the object; when the object's
//!   status is written (as the controller would) the CLI prints the matrix and exits as
//!   today, and deletes the object;
//! - a user without gets the clear error and exit 2;
//! - `view` reads the results and `pullprobe status` works with it (NodePullStatus);
//! - end to end with the shipped roles only: `pullprobe controller` as its ServiceAccount
//!   (manifests/controller-rbac.yaml) answers an `edit` user's `pullprobe preflight` from a
//!   simulated fleet (tests/harness/fleetsim.rs), and the API server refuses none of the
//!   controller's calls.
//!
//! No pod proxy: nothing here reaches a node through the API server.

mod harness;
mod kube;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kube::{kube_binary_path, KubeApiServer};

const NS: &str = "team-a";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kube-controller-manager with only the ClusterRole aggregation controller; killed on drop.
struct Aggregator(std::process::Child);

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The API server with users alice, bob and vera (no bindings yet), the CRDs, the agent's and
/// the users' roles applied, and the aggregation controller running.
fn cluster() -> (KubeApiServer, Aggregator) {
    let api = KubeApiServer::builder()
        .user("alice", &[])
        .user("bob", &[])
        .user("vera", &[])
        .start();
    for f in [
        "crds/pullprobe.io.yaml",
        "namespace.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "user-roles.yaml",
    ] {
        api.apply_file(&repo().join("manifests").join(f));
    }
    for ns in [NS, "team-b"] {
        api.create_namespace(ns);
    }
    let kc = api.write_kubeconfig(api.admin_token());
    let log = std::fs::File::create(api.dir().join("kube-controller-manager.log")).unwrap();
    let child = Command::new(kube_binary_path("kube-controller-manager"))
        .arg(format!("--kubeconfig={}", kc.display()))
        .args([
            "--controllers=clusterrole-aggregation",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn kube-controller-manager");
    let agg = Aggregator(child);
    wait_until(
        Duration::from_secs(60),
        "edit, admin and view aggregated",
        || {
            ["edit", "admin", "view"]
                .iter()
                .all(|r| !rules_for(&api, r, "imagepreflights").is_empty())
        },
    );
    (api, agg)
}

/// Polls `done` every 100 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The verbs ClusterRole `role` grants on pullprobe.io `resource`.
fn rules_for(api: &KubeApiServer, role: &str, resource: &str) -> Vec<String> {
    let r = api.must(
        "GET",
        &format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}"),
        api.admin_token(),
        None,
    );
    r["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| {
            rule["apiGroups"]
                .as_array()
                .is_some_and(|g| g.contains(&json!("pullprobe.io")))
                && rule["resources"]
                    .as_array()
                    .is_some_and(|x| x.contains(&json!(resource)))
        })
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn bind(api: &KubeApiServer, user: &str, role: &str, ns: Option<&str>) {
    let (kind, path, meta) = match ns {
        Some(ns) => (
            "RoleBinding",
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            json!({"name": format!("{user}-{role}"), "namespace": ns}),
        ),
        None => (
            "ClusterRoleBinding",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".to_string(),
            json!({"name": format!("{user}-{role}")}),
        ),
    };
    api.must(
        "POST",
        &path,
        api.admin_token(),
        Some(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})),
    );
}

fn pullprobe(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run pullprobe")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The ImagePreflights in `ns`, as the admin lists them.
fn preflights(api: &KubeApiServer, ns: &str) -> Vec<Value> {
    api.must(
        "GET",
        &format!("/apis/pullprobe.io/v1alpha1/namespaces/{ns}/imagepreflights"),
        api.admin_token(),
        None,
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn edit_admin_and_view_get_the_pullprobe_rules() {
    let (api, _agg) = cluster();
    for role in ["edit", "admin"] {
        let mut verbs = rules_for(&api, role, "imagepreflights");
        verbs.sort();
        verbs.dedup();
        for v in ["create", "delete", "get", "list", "watch"] {
            assert!(verbs.contains(&v.to_string()), "{role}: {verbs:?}");
        }
        assert!(!verbs.contains(&"update".to_string()), "{role}: {verbs:?}");
    }
    let view = rules_for(&api, "view", "imagepreflights");
    assert!(
        view.contains(&"list".to_string()) && !view.contains(&"create".to_string()),
        "{view:?}"
    );
    let nps = rules_for(&api, "view", "nodepullstatuses");
    assert!(
        nps.contains(&"list".to_string()) && !nps.contains(&"patch".to_string()),
        "{nps:?}"
    );
    assert!(rules_for(&api, "edit", "nodepullstatuses")
        .iter()
        .all(|v| ["get", "list", "watch"].contains(&v.as_str())));
}

/// alice has `edit` in team-a and nothing else; bob has nothing.
#[test]
fn an_edit_user_runs_a_preflight_and_others_get_a_clear_error() {
    let (api, _agg) = cluster();
    bind(&api, "alice", "edit", Some(NS));
    let alice = api.write_kubeconfig(api.user_token("alice"));
    let bob = api.write_kubeconfig(api.user_token("bob"));

    // No controller runs: the object is created, the wait times out, exit 3 naming it.
    let out = pullprobe(
        &alice,
        &[
            "preflight",
            "registry.example/app:1",
            "-n",
            NS,
            "--timeout",
            "2s",
            "--keep",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let items = preflights(&api, NS);
    assert_eq!(items.len(), 1, "{items:?}");
    let name = items[0]["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("preflight-"), "{name}");
    assert!(
        err.contains(&format!(
            "timed out after 2s waiting for imagepreflight/{name} in namespace {NS}"
        )),
        "{err}"
    );
    assert!(err.contains("pullprobe controller"), "{err}");
    assert_eq!(
        items[0]["spec"]["images"],
        json!(["registry.example/app:1"])
    );
    assert_eq!(
        items[0]["metadata"]["labels"]["pullprobe.io/created-by"],
        "cli"
    );

    // Without --keep the object goes away after the timeout too; -f copies the workload's
    // scheduling constraints; --workload becomes a workloadRef.
    let manifest = api.dir().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      nodeSelector: {pool: apps}\n      containers: [{name: web, image: registry.example/web:2}]\n",
    )
    .unwrap();
    let out = pullprobe(
        &alice,
        &[
            "preflight",
            "-f",
            manifest.to_str().unwrap(),
            "--workload",
            "deploy/web",
            "-n",
            NS,
            "--timeout",
            "2s",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(
        err.matches("timed out after 2s waiting for imagepreflight/")
            .count(),
        2,
        "{err}"
    );
    assert_eq!(
        preflights(&api, NS).len(),
        1,
        "the two new ones deleted: {err}"
    );
    let created: Vec<Value> = api
        .audit_events()
        .into_iter()
        .filter(|e| {
            e["user"]["username"] == "alice"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "imagepreflights"
        })
        .collect();
    assert_eq!(created.len(), 3, "every object created by alice herself");
    assert!(
        created.iter().all(|e| e["responseStatus"]["code"] == 201),
        "{created:?}"
    );

    // bob may not create them: the clear error, exit 2; nothing created.
    let out = pullprobe(
        &bob,
        &[
            "preflight",
            "registry.example/app:1",
            "-n",
            NS,
            "--timeout",
            "2s",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("you need `create imagepreflights.pullprobe.io` in namespace {NS} (the edit role has it)")),
        "{err}"
    );
    // alice in a namespace where she has no role: the same.
    let out = pullprobe(
        &alice,
        &["preflight", "registry.example/app:1", "-n", "team-b"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("in namespace team-b (the edit role has it)"));
    assert_eq!(preflights(&api, NS).len(), 1);
    assert!(preflights(&api, "team-b").is_empty());
}

/// The status, written as the controller writes it while alice's CLI waits: the CLI sees it
/// through its watch, prints the matrix, exits 1 (a node cannot pull) and deletes the object.
#[test]
fn the_cli_waits_for_the_status_and_prints_the_matrix() {
    let (api, _agg) = cluster();
    bind(&api, "alice", "edit", Some(NS));
    let alice = api.write_kubeconfig(api.user_token("alice"));
    let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args([
            "preflight",
            "registry.example/app:1",
            "-n",
            NS,
            "--timeout",
            "60s",
            "-o",
            "wide",
        ])
        .arg("--kubeconfig")
        .arg(&alice)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut name = String::new();
    wait_until(
        Duration::from_secs(30),
        "the CLI's object",
        || match preflights(&api, NS).first() {
            Some(o) => {
                name = o["metadata"]["name"].as_str().unwrap().to_string();
                true
            }
            None => false,
        },
    );
    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": "m",
               "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
    };
    let status = json!({"status": {
        "observedGeneration": 1,
        "conditions": [cond("Ready", "False", "NodesCannotPull"), cond("Failed", "True", "NodesCannotPull"),
                       cond("Reconciling", "False", "Done")],
        "images": ["registry.example/app:1"],
        "rows": [
            {"nodes": ["node-a", "node-b"], "cells": [{"verdict": "ready", "message": "ok"}]},
            {"nodes": ["node-c"], "cells": [{"verdict": "not_ready", "phase": "manifest",
              "reason": "ManifestUnknown", "host": "registry.example", "message": "tag 1 not found"}]}],
        "finishedAt": "2026-01-01T00:00:01Z"}});
    let r = api
        .request_with(
            "PATCH",
            &format!("/apis/pullprobe.io/v1alpha1/namespaces/{NS}/imagepreflights/{name}/status"),
            api.admin_token(),
            "application/merge-patch+json",
            Some(&status.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("node-c") && stdout.contains("ManifestUnknown at registry.example"),
        "{stdout}"
    );
    assert!(
        stdout.contains("node-a,node-b"),
        "-o wide names every node: {stdout}"
    );
    assert!(
        stdout
            .trim_end()
            .ends_with("2/3 nodes ready; 1 node: ManifestUnknown at registry.example"),
        "{stdout}"
    );
    assert!(preflights(&api, NS).is_empty(), "deleted after printing");
}

/// `view` bound cluster-wide reads the NodePullStatus objects: `pullprobe status` works
/// without `list nodes` (it says what it cannot show) and exits 1 for a failing node.
#[test]
fn status_reads_the_node_pull_statuses_with_view() {
    let (api, _agg) = cluster();
    bind(&api, "vera", "view", None);
    let vera = api.write_kubeconfig(api.user_token("vera"));
    let now = jiff::Timestamp::now().to_string();
    for (node, state) in [("node-a", "ok"), ("node-b", "failing")] {
        api.must(
            "POST",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
            api.admin_token(),
            Some(
                &json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                "metadata": {"name": node}, "spec": {"assignments": []}}),
            ),
        );
        let st = json!({"status": {"heartbeatTime": now, "intervalSeconds": 60, "registriesTotal": 1,
            "registries": [{"registry": "registry.example", "fingerprint": "f", "state": state,
                "checkedAt": now, "cell": {"verdict": "not_ready", "phase": "tls",
                "reason": "TLSUnknownAuthority", "message": "m"}}]}});
        let r = api
            .request_with(
                "PATCH",
                &format!("/apis/pullprobe.io/v1alpha1/nodepullstatuses/{node}/status"),
                api.admin_token(),
                "application/merge-patch+json",
                Some(&st.to_string()),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let out = pullprobe(&vera, &["status", "-o", "json"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["failing"], json!(["node-b"]));
    assert_eq!(f["problems"][0]["reason"], "TLSUnknownAuthority");
    assert_eq!(f["problems"][0]["condition"], "RegistryUnreachable");
    assert!(err.contains("nodes without a report not shown"), "{err}");
    // Without a grant: exit 2 naming the call.
    let bob = api.write_kubeconfig(api.user_token("bob"));
    let out = pullprobe(&bob, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("list nodepullstatuses"),
        "{}",
        text(&out.stderr)
    );
}

/// examples/imagepreflight.yaml is valid for the CRD (the real API server validates it), and
/// `kubectl wait --for=condition=Ready` (the project's kubectl) returns once the controller's
/// status says Ready — and not before: on an object still reconciling it times out.
#[test]
fn the_example_object_applies_and_kubectl_wait_waits_on_it() {
    let (api, _agg) = cluster();
    api.create_namespace("shop");
    let obj = &serde_saphyr::from_multiple::<Value>(
        &std::fs::read_to_string(repo().join("examples/imagepreflight.yaml")).unwrap(),
    )
    .unwrap()[0];
    let stored = api.must(
        "POST",
        "/apis/pullprobe.io/v1alpha1/namespaces/shop/imagepreflights",
        api.admin_token(),
        Some(obj),
    );
    assert_eq!(
        stored["spec"], obj["spec"],
        "nothing pruned: every field is the CRD's"
    );
    let kc = api.write_kubeconfig(api.admin_token());
    let wait = |timeout: &str| {
        Command::new(kube_binary_path("kubectl"))
            .arg(format!("--kubeconfig={}", kc.display()))
            .args(["-n", "shop", "wait", "--for=condition=Ready"])
            .arg("imagepreflight/shop-web-images")
            .arg(format!("--timeout={timeout}"))
            .output()
            .unwrap()
    };
    let status = |ready: &str, reconciling: &str| {
        let c = |t: &str, s: &str| {
            json!({"type": t, "status": s, "reason": "R", "message": "m",
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
        };
        json!({"status": {"observedGeneration": 1,
            "conditions": [c("Ready", ready), c("Reconciling", reconciling)]}})
        .to_string()
    };
    let path = "/apis/pullprobe.io/v1alpha1/namespaces/shop/imagepreflights/shop-web-images/status";
    let patch = |body: String| {
        let r = api
            .request_with(
                "PATCH",
                path,
                api.admin_token(),
                "application/merge-patch+json",
                Some(&body),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    };
    patch(status("False", "True"));
    let out = wait("2s");
    assert_ne!(
        out.status.code(),
        Some(0),
        "not Ready yet: {}",
        text(&out.stdout)
    );
    patch(status("True", "False"));
    let out = wait("30s");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("condition met"),
        "{}",
        text(&out.stdout)
    );
}

/// Interrupted while waiting (SIGINT), the CLI deletes what it created and exits 130.
#[test]
fn an_interrupted_preflight_removes_its_object() {
    let (api, _agg) = cluster();
    bind(&api, "alice", "edit", Some(NS));
    let alice = api.write_kubeconfig(api.user_token("alice"));
    let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args([
            "preflight",
            "registry.example/app:1",
            "-n",
            NS,
            "--timeout",
            "60s",
        ])
        .arg("--kubeconfig")
        .arg(&alice)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "the CLI's object", || {
        !preflights(&api, NS).is_empty()
    });
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(preflights(&api, NS).is_empty(), "deleted on the way out");
}

/// The controller's calls the audit log saw refused (4xx other than 404/409), as `user`.
fn refused_calls(api: &KubeApiServer, user: &str) -> Vec<String> {
    api.audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .filter(|e| {
            let code = e["responseStatus"]["code"].as_u64().unwrap_or(0);
            (400..500).contains(&code) && code != 404 && code != 409
        })
        .map(|e| {
            format!(
                "{} {} {}/{} -> {}",
                e["verb"],
                e["objectRef"]["apiGroup"],
                e["objectRef"]["resource"],
                e["objectRef"]["subresource"],
                e["responseStatus"]["code"]
            )
        })
        .collect()
}

/// Everything with the shipped roles: the controller as ServiceAccount pullprobe-controller,
/// alice with `edit`. Four simulated nodes, two fingerprints; `app:2` is missing from the
/// registry: alice's pre-flight prints every node unable to pull it and exits 1.
#[test]
fn the_controller_answers_an_edit_user_with_the_shipped_roles_only() {
    use harness::{FleetSim, SimAgent, SimCell, SimPath};
    let (api, _agg) = cluster();
    for f in ["controller-rbac.yaml", "controller.yaml", "webhook.yaml"] {
        api.apply_file(&repo().join("manifests").join(f));
    }
    bind(&api, "alice", "edit", Some(NS));
    let sim = FleetSim::builder(api.kube_config(api.admin_token()))
        .nodes(4)
        .labels(|i| {
            let pool = if i < 2 { "a" } else { "b" };
            std::collections::BTreeMap::from([("pool".to_string(), pool.to_string())])
        })
        .registry("r.example", |i| {
            SimPath::ok(if i < 2 { "fpA" } else { "fpB" })
        })
        .agent(|_| SimAgent::Live)
        .image_verdict(
            "r.example/app:2",
            SimCell::not_ready("ManifestUnknown", "r.example"),
        )
        .start();
    let token = api.service_account_token("pullprobe", "pullprobe-controller", 3600);
    let log = api.dir().join("controller.log");
    let kc = api.write_kubeconfig(&token);
    let mut controller = Aggregator(
        Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args(["controller", "--kubeconfig"])
            .arg(&kc)
            .args([
                "--identity",
                "c1",
                "--answer-timeout",
                "10s",
                "--log-format",
                "text",
            ])
            .args(["--webhook-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alice = api.write_kubeconfig(api.user_token("alice"));
    let out = pullprobe(
        &alice,
        &[
            "preflight",
            "r.example/app:1",
            "r.example/app:2",
            "-n",
            NS,
            "--timeout",
            "90s",
            "-o",
            "json",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{stderr}\n{}",
        log_text()
    );
    let m: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(m["summary"]["nodes"], 4, "{stdout}");
    assert_eq!(m["summary"]["not_ready"], 4, "{stdout}");
    for row in m["rows"].as_array().unwrap() {
        assert_eq!(row["cells"][0]["verdict"], "ready", "{row}");
        assert_eq!(row["cells"][1]["reason"], "ManifestUnknown", "{row}");
    }
    assert_eq!(sim.nodes().len(), 4);
    assert!(preflights(&api, NS).is_empty(), "deleted after printing");
    // -f: the workload's nodeSelector travels in spec.scheduling; the controller checks only
    // the nodes it selects and lists the others as excluded.
    let manifest = api.dir().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      nodeSelector: {pool: a}\n      containers: [{name: web, image: r.example/app:1}]\n",
    )
    .unwrap();
    let out = pullprobe(
        &alice,
        &[
            "preflight",
            "-f",
            manifest.to_str().unwrap(),
            "-n",
            NS,
            "--timeout",
            "90s",
            "-o",
            "json",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}\n{}",
        text(&out.stderr),
        log_text()
    );
    let m: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(m["summary"]["nodes"], 2, "{stdout}");
    assert_eq!(m["summary"]["ready"], 2, "{stdout}");
    assert_eq!(m["excluded"].as_array().map(Vec::len), Some(2), "{stdout}");
    let me = "system:serviceaccount:pullprobe:pullprobe-controller";
    let wrote = |resource: &str, sub: &str| {
        api.audit_events().iter().any(|e| {
            e["user"]["username"] == me
                && e["verb"] == "patch"
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].as_str().unwrap_or("") == sub
                && e["responseStatus"]["code"] == 200
        })
    };
    assert!(
        wrote("imagepreflights", "status"),
        "the controller wrote the status itself"
    );
    assert!(wrote("nodepullstatuses", ""), "and the assignments");
    let refused = refused_calls(&api, me);
    let _ = controller.0.kill();
    assert!(
        refused.is_empty(),
        "the shipped RBAC refused: {refused:#?}\n{}",
        log_text()
    );
}

/// On a cluster without pullprobe's CRDs the CLI says what to install (exit 2).
#[test]
fn without_the_crds_the_cli_says_what_to_install() {
    let api = KubeApiServer::start();
    let admin = api.write_kubeconfig(api.admin_token());
    let out = pullprobe(&admin, &["preflight", "registry.example/app:1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("does not serve imagepreflights.pullprobe.io")
            && err.contains("kubectl apply -k manifests/"),
        "{err}"
    );
}
