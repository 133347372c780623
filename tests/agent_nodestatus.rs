//! The agent's `NodePullStatus` (issue 16) against a REAL kube-apiserver v1.20.2 (tests/kube)
//! with the shipped CRDs and the project's own RBAC, and a REAL docker-registry
//! (tests/harness) behind a switch, on a compressed schedule (1 s cycles, 4 s heartbeat).
//!
//! The agent keeps its node's object: it appears with the registry's path state and flips
//! when the registry goes away; assignments written into the spec (as the controller does,
//! here with an admin token) are answered in the status — a missing tag `not_ready`
//! `ManifestNotFound`, an existing image `ready`, pull secrets on an agent that reads none
//! refused — and an assignment issued long ago is never answered. The node's credential
//! (a canary password) never appears in the object. Its main listener takes only tokens
//! for its own audience.

mod agent_proc;
mod harness;
mod kube;

use std::time::Duration;

use serde_json::{json, Value};

use crate::agent_proc::{docker_config_json, status_as, wait_for, write_file, Switch};
use crate::harness::{OciImage, PushOpts, Registry};
use crate::kube::KubeApiServer;

const NODE: &str = "node-nps";
const NPS: &str = "/apis/pullprobe.io/v1alpha1/nodepullstatuses";
const CANARY: &str = "canary-Pw-9f3c1e7a";
const MERGE: &str = "application/merge-patch+json";

fn object(api: &KubeApiServer) -> Option<Value> {
    let r = api
        .request("GET", &format!("{NPS}/{NODE}"), api.admin_token(), None)
        .ok()?;
    (r.status == 200).then(|| r.json())
}

fn registry_of(obj: &Value, host: &str) -> Option<Value> {
    obj["status"]["registries"]
        .as_array()?
        .iter()
        .find(|r| r["registry"] == host)
        .cloned()
}

fn answer_of(obj: &Value, id: &str) -> Option<Value> {
    obj["status"]["answers"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)
        .cloned()
}

fn wait_registry_state(api: &KubeApiServer, host: &str, state: &str) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("{host} {state} in the NodePullStatus"),
        || object(api).filter(|o| registry_of(o, host).is_some_and(|r| r["state"] == state)),
    )
}

fn rfc3339_ago(ago: Duration) -> String {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap();
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn assignment(id: &str, depth: &str, images: &[String], issued: &str) -> Value {
    json!({"id": id, "depth": depth, "images": images, "namespace": "apps", "issuedAt": issued})
}

/// A node (host root) whose kubelet config.json holds `alice`'s canary password for `hp`.
fn node_root(hp: &str, images: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let root = agent_proc::host_root();
    let kubelet = root.path().join("var/lib/kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    write_file(
        &kubelet,
        "config.json",
        &docker_config_json(hp, "alice", CANARY),
    );
    let imgs: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    let cfg = write_file(
        root.path(),
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 4s\nfail_after: 2\nrecover_after: 1\n\
             fleet:\n  node_count: 1\nbackoff:\n  initial: 1s\n  max: 1s\nreload_interval: 1s\n\
             preflight:\n  cache_ttl: 60s\nimages:\n{}\n",
            imgs.join("\n")
        ),
    );
    (root, cfg)
}

#[test]
fn the_agent_keeps_its_node_pull_status_and_answers_assignments() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    api.apply_crds();
    let kubeconfig = api.write_kubeconfig(&token);
    api.must(
        "POST",
        "/api/v1/nodes",
        &admin,
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );

    // A real registry that wants alice's (canary) password, behind a switch.
    let reg = Registry::builder().htpasswd(&[("alice", CANARY)]).start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::insecure().creds("alice", CANARY),
    );
    let switch = Switch::start(reg.host_port().parse().unwrap());
    let hp = switch.host_port();
    let image = format!("{hp}/team/app:v1");
    let missing = format!("{hp}/team/app:missing");
    let (root, cfg) = node_root(&hp, &[&image]);
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    let started = std::time::Instant::now();
    let caller = api.agent_caller_token();
    agent_proc::authorize(agent.port, &caller);
    agent.wait_ready(Duration::from_secs(20));

    // 1. The object appears, named after the node, with the registry's path.
    let obj = wait_registry_state(&api, &hp, "ok");
    let st = &obj["status"];
    assert_eq!(st["agentVersion"], env!("CARGO_PKG_VERSION"), "{st}");
    assert_eq!(st["intervalSeconds"], 1, "{st}");
    assert!(
        st["platform"]
            .as_str()
            .is_some_and(|p| p.starts_with("linux/")),
        "{st}"
    );
    assert!(!st["runtime"].as_str().unwrap_or("").is_empty(), "{st}");
    assert!(st["heartbeatTime"].is_string(), "{st}");
    assert_eq!(st["registriesTotal"], 1, "{st}");
    assert_eq!(st["registriesFailing"], 0, "{st}");
    let path = registry_of(&obj, &hp).unwrap();
    assert_eq!(path["cell"]["verdict"], "ready", "{path}");
    assert_eq!(
        path["fingerprint"].as_str().map(str::len),
        Some(16),
        "{path}"
    );
    assert_eq!(
        obj["spec"],
        json!({}),
        "the spec is the controller's: created empty"
    );
    let managers: Vec<&Value> = obj["metadata"]["managedFields"]
        .as_array()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "pullprobe-agent" && m["operation"] == "Apply"),
        "server-side apply as pullprobe-agent: {managers:?}"
    );

    // 2. Assignments, written into the spec as the controller does.
    let now = rfc3339_ago(Duration::ZERO);
    let mut with_secrets = assignment("a-secrets", "Image", std::slice::from_ref(&image), &now);
    with_secrets["pullSecrets"] = json!(["regcred"]);
    let spec = json!({"spec": {"assignments": [
        assignment("a-image", "Image", &[image.clone(), missing.clone()], &now),
        assignment("a-path", "Path", std::slice::from_ref(&missing), &now),
        assignment("a-old", "Image", std::slice::from_ref(&image), &rfc3339_ago(Duration::from_secs(3600))),
        with_secrets,
    ]}});
    let r = api
        .request_with(
            "PATCH",
            &format!("{NPS}/{NODE}"),
            &admin,
            MERGE,
            Some(&spec.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let obj = wait_for(Duration::from_secs(30), "the assignments answered", || {
        object(&api).filter(|o| {
            ["a-image", "a-path", "a-secrets"]
                .iter()
                .all(|id| answer_of(o, id).is_some())
        })
    });
    let a = answer_of(&obj, "a-image").unwrap();
    assert_eq!(a["depth"], "Image");
    assert!(a.get("refused").is_none(), "{a}");
    let results = a["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{a}");
    assert_eq!(results[0]["image"], image.as_str());
    assert_eq!(results[0]["cell"]["verdict"], "ready", "{a}");
    assert_eq!(results[0]["pathState"], "ok", "{a}");
    assert_eq!(results[1]["image"], missing.as_str());
    assert_eq!(results[1]["cell"]["verdict"], "not_ready", "{a}");
    assert_eq!(results[1]["cell"]["reason"], "ManifestNotFound", "{a}");
    assert_eq!(results[1]["cell"]["phase"], "manifest", "{a}");
    assert_eq!(
        results[1]["pathState"], "ok",
        "the path works; the tag is missing: {a}"
    );
    // The answer's fingerprint is the registry path's: the controller shares it by that.
    assert_eq!(results[0]["fingerprint"], path["fingerprint"], "{a} {path}");
    // A path check says the path works, whatever the tag.
    let p = answer_of(&obj, "a-path").unwrap();
    assert_eq!(p["results"][0]["cell"]["verdict"], "ready", "{p}");
    let s = answer_of(&obj, "a-secrets").unwrap();
    assert!(
        s["refused"]
            .as_str()
            .is_some_and(|r| r.contains("pull_secrets: false")),
        "{s}"
    );
    assert!(s["results"].as_array().is_none_or(|r| r.is_empty()), "{s}");

    // 3. The old assignment is never answered: not in any write after the others were.
    let answered_at = obj["status"]["heartbeatTime"].as_str().unwrap().to_string();
    let later = wait_for(Duration::from_secs(20), "a later status write", || {
        object(&api).filter(|o| o["status"]["heartbeatTime"].as_str() > Some(answered_at.as_str()))
    });
    assert!(answer_of(&later, "a-old").is_none(), "{}", later["status"]);

    // 4. The registry goes away: its path turns failing, then ok again.
    switch.set_up(false);
    let down = wait_registry_state(&api, &hp, "failing");
    let cell = &registry_of(&down, &hp).unwrap()["cell"];
    assert_eq!(cell["verdict"], "not_ready", "{cell}");
    assert!(
        cell["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Connect")),
        "{cell}"
    );
    assert_eq!(down["status"]["registriesFailing"], 1);
    switch.set_up(true);
    let up = wait_registry_state(&api, &hp, "ok");

    // 5. The node's credential is nowhere in the object, as written or base64-encoded.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("alice:{CANARY}"));
    for o in [&obj, &later, &down, &up] {
        let text = o.to_string();
        assert!(
            !text.contains(CANARY) && !text.contains(&b64),
            "canary in {text}"
        );
    }

    // 6. The main listener: the agent's own audience only.
    assert_eq!(status_as(agent.port, "/status", &caller), 200);
    assert_eq!(
        status_as(agent.port, "/status", &admin),
        401,
        "an API-server token"
    );
    let api_audience = api.service_account_token("pullprobe", "agent-caller", 3600);
    assert_eq!(status_as(agent.port, "/status", &api_audience), 401);
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    // The writes, from the audit log: status applies only (one create), none refused.
    let writes = api.audit_writes_by("system:serviceaccount:pullprobe:pullprobe");
    let nps: Vec<&Value> = writes
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "nodepullstatuses")
        .collect();
    let creates = nps.iter().filter(|e| e["verb"] == "create").count();
    let applies = nps
        .iter()
        .filter(|e| e["verb"] == "patch" && e["objectRef"]["subresource"] == "status")
        .count();
    assert_eq!(creates, 1, "{nps:?}");
    assert_eq!(creates + applies, nps.len(), "{nps:?}");
    assert!(
        nps.iter()
            .all(|e| e["responseStatus"]["code"].as_i64() < Some(300)),
        "{nps:?}"
    );
    eprintln!(
        "NodePullStatus writes: 1 create + {applies} status applies in {:.1} s (1 s interval)",
        started.elapsed().as_secs_f64()
    );
}
