//! `pullprobe controller` as a process against a REAL kube-apiserver with the CRDs
//! applied, answering ImagePreflight objects from a simulated fleet (tests/harness/
//! fleetsim.rs: NodePullStatus objects and assignment answers through the same API
//! server). Every wait is on the state wanted (polled), never a sleep.

mod harness;
mod kube;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{FleetSim, SimAgent, SimCell, SimPath};
use pullprobe::api::AssignmentDepth;
use serde_json::{json, Value};

use crate::kube::KubeApiServer;

const NS: &str = "team";
const REG: &str = "r.example";

fn ipf_path(ns: &str, name: &str) -> String {
    format!("/apis/pullprobe.io/v1alpha1/namespaces/{ns}/imagepreflights/{name}")
}

/// A controller replica (killed on Drop; its log printed when the test failed).
struct Replica {
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(api: &KubeApiServer, token: &str, name: &str, extra: &[&str]) -> Replica {
        let kc = api.write_kubeconfig(token);
        let log = api.dir().join(format!("controller-{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = vec![
            "controller".to_string(),
            "--kubeconfig".into(),
            kc.display().to_string(),
            "--identity".into(),
            name.into(),
            "--answer-timeout".into(),
            "5s".into(),
            "--log-format".into(),
            "text".into(),
            "--webhook-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Replica { child, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A server with the CRDs, the namespaces, and users `controller` and `fleet`.
fn server() -> KubeApiServer {
    let api = KubeApiServer::builder()
        .user("controller", &["system:masters"])
        .user("fleet", &["system:masters"])
        .start();
    api.apply_crds();
    api.create_namespace("pullprobe");
    api.create_namespace(NS);
    api
}

/// Polls `f` every 100 ms until it gives `Some`, for up to `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_ipf(api: &KubeApiServer, name: &str, spec: Value) {
    let body = json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "ImagePreflight",
        "metadata": {"name": name, "namespace": NS}, "spec": spec});
    let r = api
        .request(
            "POST",
            &format!("/apis/pullprobe.io/v1alpha1/namespaces/{NS}/imagepreflights"),
            api.admin_token(),
            Some(&body),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// The object once its current generation finished (Reconciling False, observedGeneration).
fn finished(api: &KubeApiServer, name: &str) -> Value {
    wait_for(
        Duration::from_secs(60),
        &format!("{name} to finish"),
        || {
            let r = api
                .request("GET", &ipf_path(NS, name), api.admin_token(), None)
                .ok()?;
            let v = r.json();
            let done = condition(&v, "Reconciling").is_some_and(|c| c["status"] == "False")
                && v["status"]["observedGeneration"] == v["metadata"]["generation"];
            done.then_some(v)
        },
    )
}

/// Node name → its cells (verdict or reason, per image) from the status rows.
fn cells(v: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for row in v["status"]["rows"].as_array().unwrap() {
        let cells: Vec<String> = row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["reason"]
                    .as_str()
                    .unwrap_or(c["verdict"].as_str().unwrap())
                    .to_string()
            })
            .collect();
        for n in row["nodes"].as_array().unwrap() {
            out.insert(n.as_str().unwrap().to_string(), cells.clone());
        }
    }
    out
}

/// Six nodes: 0-3 `pool=good` (0,1 fingerprint fpA; 2,3 fpB), 4 whose path fails, 5
/// without an agent; `app:2` is missing from the registry.
fn fleet(api: &KubeApiServer) -> FleetSim {
    FleetSim::builder(api.kube_config(api.user_token("fleet")))
        .nodes(6)
        .labels(|i| {
            let mut l = BTreeMap::new();
            l.insert(
                "pool".to_string(),
                if i < 4 { "good" } else { "other" }.to_string(),
            );
            l
        })
        .registry(REG, |i| match i {
            0 | 1 => SimPath::ok("fpA"),
            4 => SimPath::failing("fpA", "ConnectRefused"),
            _ => SimPath::ok("fpB"),
        })
        .agent(|i| {
            if i == 5 {
                SimAgent::None
            } else {
                SimAgent::Live
            }
        })
        .image_verdict(
            "r.example/app:2",
            SimCell::not_ready("ManifestUnknown", REG),
        )
        .start()
}

/// A pre-flight turns Ready (every candidate can pull) or Failed (with the right rows and
/// counts); round 1 comes from the NodePullStatus caches (no Path assignment for fresh
/// nodes) and round 2 costs one Image assignment per fingerprint, images batched.
#[test]
fn preflights_turn_ready_or_failed_from_caches_and_one_check_per_fingerprint() {
    let api = server();
    let sim = fleet(&api);
    let _c = Replica::start(&api, api.user_token("controller"), "c1", &[]);

    create_ipf(
        &api,
        "good",
        json!({"images": ["r.example/app:1"], "nodes": {"selector": "pool=good"}}),
    );
    let v = finished(&api, "good");
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "True", "{v}");
    assert_eq!(condition(&v, "Ready").unwrap()["reason"], "AllNodesCanPull");
    assert_eq!(condition(&v, "Failed").unwrap()["status"], "False");
    assert_eq!(v["status"]["summary"]["nodes"], 4);
    assert_eq!(v["status"]["summary"]["ready"], 4);
    assert!(v["status"]["finishedAt"].is_string());
    let seen = sim.assignments();
    assert!(
        seen.iter().all(|s| s.depth == AssignmentDepth::Image),
        "fresh paths need no Path assignment: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        2,
        "one image check per fingerprint (fpA, fpB): {seen:?}"
    );

    create_ipf(
        &api,
        "bad",
        json!({"images": ["r.example/app:1", "r.example/app:2"], "imagePullSecrets": ["regcred"]}),
    );
    let v = finished(&api, "bad");
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "False", "{v}");
    assert_eq!(condition(&v, "Ready").unwrap()["reason"], "NodesCannotPull");
    assert_eq!(condition(&v, "Failed").unwrap()["status"], "True");
    let s = &v["status"]["summary"];
    assert_eq!(
        (
            s["nodes"].as_u64(),
            s["notReady"].as_u64(),
            s["unknown"].as_u64()
        ),
        (Some(6), Some(5), Some(1)),
        "{s}"
    );
    let c = cells(&v);
    assert_eq!(c["sim-00000"], ["ready", "ManifestUnknown"]);
    assert_eq!(c["sim-00003"], ["ready", "ManifestUnknown"]);
    assert_eq!(c["sim-00004"], ["ConnectRefused", "ConnectRefused"]);
    assert_eq!(c["sim-00005"], ["NoAgent", "NoAgent"]);
    let checks: Vec<_> = sim.assignments().into_iter().skip(2).collect();
    assert_eq!(checks.len(), 2, "{checks:?}");
    for a in &checks {
        assert_eq!(a.depth, AssignmentDepth::Image);
        assert_eq!(a.images, ["r.example/app:1", "r.example/app:2"], "batched");
        // Pull secrets are named in the pre-flight's own namespace only.
        assert_eq!(
            (a.namespace.as_str(), a.pull_secrets.as_slice()),
            (NS, &["regcred".to_string()][..])
        );
    }
    // One write per node asked, none to take the answered assignments away: the two
    // pre-flights asked 2 + 2 nodes (one per fingerprint), so the controller patched
    // NodePullStatus 4 times (the answered ones leave with the next write to each node).
    let patches = |ev: &[serde_json::Value]| {
        ev.iter()
            .filter(|e| {
                e["user"]["username"] == "controller"
                    && e["verb"] == "patch"
                    && e["objectRef"]["resource"] == "nodepullstatuses"
                    && e["objectRef"]["subresource"].is_null()
            })
            .count()
    };
    let ev = api.wait_for_audit(Duration::from_secs(10), |ev| patches(ev) >= 4);
    assert_eq!(patches(&ev), 4, "assignment writes");
    // The second pre-flight's writes left out the first one's answered assignments.
    let r = api
        .request(
            "GET",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
            api.admin_token(),
            None,
        )
        .unwrap();
    let left: usize = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["assignments"].as_array().map_or(0, |a| a.len()))
        .sum();
    assert!(left <= 4, "{left} assignments left in the objects");
}

/// A node whose cached path is stale gets one Path assignment (and only it); a node whose
/// agent never answers is `unknown` `AgentTimeout` after the answer timeout, one whose
/// heartbeat stopped `AgentNotRunning`.
#[test]
fn stale_paths_are_asked_and_silent_agents_time_out() {
    let api = server();
    let sim = FleetSim::builder(api.kube_config(api.user_token("fleet")))
        .nodes(4)
        .registry(REG, |i| match i {
            1 => SimPath::stale("fpA"),
            2 => SimPath::ok("fpM"),
            _ => SimPath::ok("fpA"),
        })
        .agent(|i| match i {
            2 => SimAgent::Mute,
            3 => SimAgent::Silent,
            _ => SimAgent::Live,
        })
        .start();
    let _c = Replica::start(&api, api.user_token("controller"), "c1", &[]);
    create_ipf(&api, "p", json!({"images": ["r.example/app:1"]}));
    let v = finished(&api, "p");
    let paths: Vec<_> = sim
        .assignments()
        .into_iter()
        .filter(|a| a.depth == AssignmentDepth::Path)
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(paths[0].node, "sim-00001");
    let c = cells(&v);
    assert_eq!(c["sim-00001"], ["ready"]);
    assert_eq!(c["sim-00003"], ["AgentNotRunning"]);
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "False");
    assert_eq!(c["sim-00000"], ["ready"]);
    // sim-00002 heartbeats with fresh paths but never answers its image check.
    assert_eq!(c["sim-00002"], ["AgentTimeout"]);
}

/// `workloadRef` to a Deployment whose nodeSelector matches 4 of 6 nodes: only those are
/// candidates; the others are listed as excluded with the constraint.
#[test]
fn a_workload_refs_node_selector_limits_the_candidates() {
    let api = server();
    let _sim = fleet(&api);
    let _c = Replica::start(&api, api.user_token("controller"), "c1", &[]);
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"nodeSelector": {"pool": "good"}, "containers": [{"name": "web", "image": "r.example/app:1"}]}}}});
    api.create_if_missing(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        &dep,
        api.admin_token(),
    );
    create_ipf(
        &api,
        "web",
        json!({"workloadRef": {"kind": "Deployment", "name": "web"}}),
    );
    let v = finished(&api, "web");
    assert_eq!(v["status"]["summary"]["nodes"], 4, "{v}");
    assert_eq!(v["status"]["images"], json!(["r.example/app:1"]));
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "True");
    let excluded: Vec<&str> = v["status"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].as_str().unwrap())
        .collect();
    assert_eq!(excluded, ["sim-00004", "sim-00005"]);
    assert!(v["status"]["excluded"][0]["why"]
        .as_str()
        .unwrap()
        .contains("nodeSelector pool=good"));
}

fn lease_holder(api: &KubeApiServer) -> Option<String> {
    let r = api
        .request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/pullprobe/leases/pullprobe-controller",
            api.admin_token(),
            None,
        )
        .ok()?;
    (r.status == 200).then(|| {
        r.json()["spec"]["holderIdentity"]
            .as_str()
            .map(String::from)
    })?
}

/// Two replicas: one holds the Lease and answers; killed, the other takes the Lease once
/// it expires and finishes a new pre-flight.
#[test]
fn the_controller_fails_over_between_two_replicas() {
    let api = server();
    let _sim = fleet(&api);
    let fast = [
        "--lease-duration",
        "3s",
        "--renew-deadline",
        "2s",
        "--retry-period",
        "500ms",
    ];
    let token = api.user_token("controller").to_string();
    let mut a = Replica::start(&api, &token, "a", &fast);
    let mut b = Replica::start(&api, &token, "b", &fast);
    let first = wait_for(Duration::from_secs(30), "a leader", || {
        lease_holder(&api).filter(|h| !h.is_empty())
    });
    create_ipf(
        &api,
        "one",
        json!({"images": ["r.example/app:1"], "nodes": {"selector": "pool=good"}}),
    );
    assert_eq!(
        condition(&finished(&api, "one"), "Ready").unwrap()["status"],
        "True"
    );
    // Only the holder of the Lease leads (and answers): the other one is a candidate.
    let leading: Vec<bool> = [&a.log, &b.log]
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap()
                .contains("leading identity")
        })
        .collect();
    assert_eq!(leading.iter().filter(|l| **l).count(), 1, "{leading:?}");
    let (leader, other) = if first.starts_with("a_") {
        (&mut a, "b_")
    } else {
        (&mut b, "a_")
    };
    leader.kill();
    create_ipf(
        &api,
        "two",
        json!({"images": ["r.example/app:1"], "nodes": {"selector": "pool=good"}}),
    );
    let v = finished(&api, "two");
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "True", "{v}");
    let holder = lease_holder(&api).unwrap();
    assert!(holder.starts_with(other), "{first} → {holder}");
}

/// A finished object with `ttlSecondsAfterFinished: 1` is deleted; one with 0 is kept.
#[test]
fn expired_objects_are_removed() {
    let api = server();
    let _sim = fleet(&api);
    let _c = Replica::start(&api, api.user_token("controller"), "c1", &[]);
    create_ipf(
        &api,
        "keep",
        json!({"images": ["r.example/app:1"], "ttlSecondsAfterFinished": 0}),
    );
    create_ipf(
        &api,
        "short",
        json!({"images": ["r.example/app:1"], "ttlSecondsAfterFinished": 1}),
    );
    finished(&api, "keep");
    wait_for(Duration::from_secs(30), "short to be deleted", || {
        let r = api
            .request("GET", &ipf_path(NS, "short"), api.admin_token(), None)
            .ok()?;
        (r.status == 404).then_some(())
    });
    let r = api
        .request("GET", &ipf_path(NS, "keep"), api.admin_token(), None)
        .unwrap();
    assert_eq!(r.status, 200, "ttl 0 keeps the object");
}

/// In a namespace labelled `pullprobe.io/rollout-guard: warn`, a Deployment's images get an
/// ImagePreflight owned by it; when nodes cannot pull, a Warning Event on the Deployment
/// names the image, the count, the reason and the fix; a new image in the template is a new
/// generation of the pre-flight, which runs again. The controller runs as the shipped
/// ServiceAccount with the shipped RBAC (manifests/controller*.yaml): its verbs suffice.
#[test]
fn the_rollout_guard_creates_the_owned_preflight_and_a_warning_event() {
    let api = server();
    let _sim = fleet(&api);
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}"),
            api.admin_token(),
            "application/merge-patch+json",
            Some(
                &json!({"metadata": {"labels": {"pullprobe.io/rollout-guard": "warn"}}})
                    .to_string(),
            ),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // As shipped: the controller's ServiceAccount, Lease and RBAC from manifests/.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.apply_file(&root.join("controller.yaml"));
    api.apply_file(&root.join("controller-rbac.yaml"));
    let token = api.service_account_token("pullprobe", "pullprobe-controller", 3600);
    let _c = Replica::start(&api, &token, "c1", &[]);
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "shop"}},
            "template": {"metadata": {"labels": {"app": "shop"}},
                "spec": {"nodeSelector": {"pool": "good"}, "containers": [{"name": "shop", "image": "r.example/app:2"}]}}}});
    let r = api
        .request(
            "POST",
            &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            api.admin_token(),
            Some(&dep),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();
    let v = finished(&api, "deployment-shop");
    assert_eq!(
        v["metadata"]["labels"]["pullprobe.io/created-by"],
        "rollout-guard"
    );
    assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(v["spec"]["workloadRef"]["name"], "shop");
    assert_eq!(condition(&v, "Failed").unwrap()["status"], "True", "{v}");
    let ev = wait_for(Duration::from_secs(30), "the Warning Event", || {
        let r = api
            .request(
                "GET",
                &format!("/api/v1/namespaces/{NS}/events"),
                api.admin_token(),
                None,
            )
            .ok()?;
        r.json()["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "ImagesCannotBePulled")
            .cloned()
    });
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["uid"], uid.as_str());
    let msg = ev["message"].as_str().unwrap();
    for want in [
        "4 of 4 nodes cannot pull r.example/app:2",
        "ManifestUnknown at r.example",
        "Fix: ",
        "kubectl -n team get imagepreflight deployment-shop",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    // The template's image changes: the guard updates the pre-flight's images (a new
    // generation), and the controller runs it again.
    let fix = json!({"spec": {"template": {"spec": {"containers": [{"name": "shop", "image": "r.example/app:1"}]}}}});
    let r = api
        .request_with(
            "PATCH",
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/shop"),
            api.admin_token(),
            "application/strategic-merge-patch+json",
            Some(&fix.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_for(Duration::from_secs(60), "the second generation", || {
        let v = finished(&api, "deployment-shop");
        (v["metadata"]["generation"] == 2).then_some(v)
    });
    assert_eq!(v["spec"]["images"], json!(["r.example/app:1"]));
    assert_eq!(v["status"]["images"], json!(["r.example/app:1"]));
    assert_eq!(condition(&v, "Ready").unwrap()["status"], "True", "{v}");
}
