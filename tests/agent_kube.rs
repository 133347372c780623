//! `pullprobe agent` against a REAL kube-apiserver v1.20.2 (tests/kube) and REAL registries
//! (tests/harness), on a compressed schedule (1 s cycles, 4 s heartbeat).
//!
//! The agent runs as the project's own ServiceAccount with the project's own RBAC from
//! `manifests/` (Namespace, ServiceAccount, ClusterRole + Binding applied as shipped), so a verb
//! missing from the ClusterRole fails here for real. API writes are counted from the apiserver's
//! audit log. No kubelet, scheduler or controller-manager runs: pods get `spec.nodeName` directly.

mod agent_proc;
mod harness;
mod kube;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent_proc::{
    docker_config_json, get_json, http_get, metric_sum, status_as, status_condition,
    status_targets, wait_for, write_file, AgentProc, Switch,
};
use crate::harness::{OciImage, PushOpts, Registry};
use crate::kube::KubeApiServer;

const NODE: &str = "node-a";
const SA_USER: &str = "system:serviceaccount:pullprobe:pullprobe";
const SMP: &str = "application/strategic-merge-patch+json";
const HEARTBEAT: Duration = Duration::from_secs(4);

fn node_conditions(api: &KubeApiServer) -> Vec<Value> {
    api.node_conditions(NODE)
}

fn condition(api: &KubeApiServer, kind: &str) -> Option<Value> {
    api.node_condition(NODE, kind)
}

fn wait_condition(api: &KubeApiServer, kind: &str, status: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("{kind}={status} on the Node"), || {
        condition(api, kind).filter(|c| c["status"] == status)
    })
}

/// Times (Unix seconds) of the agent's PATCHes of nodes/status, from the audit log.
fn status_writes(api: &KubeApiServer) -> Vec<f64> {
    api.audit_writes_by(SA_USER)
        .iter()
        .filter(|e| {
            e["verb"] == "patch"
                && e["objectRef"]["resource"] == "nodes"
                && e["objectRef"]["subresource"] == "status"
                && e["responseStatus"]["code"] == 200
        })
        .map(|e| ts(&e["requestReceivedTimestamp"]))
        .collect()
}

fn ts(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("no timestamp in {v}"));
    let t: jiff::Timestamp = s.parse().unwrap_or_else(|e| panic!("timestamp {s}: {e}"));
    t.as_millisecond() as f64 / 1000.0
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn events(api: &KubeApiServer, ns: &str) -> Vec<Value> {
    api.must(
        "GET",
        &format!("/api/v1/namespaces/{ns}/events"),
        api.admin_token(),
        None,
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `condition changed` log lines of the agent: (time, condition, status, reason, transition).
fn changes(agent: &AgentProc) -> Vec<(f64, String, String, String, bool)> {
    agent
        .logs_with("condition changed")
        .iter()
        .map(|l| {
            (
                ts(&l["timestamp"]),
                l["condition"].as_str().unwrap_or("").to_string(),
                l["status"].as_str().unwrap_or("").to_string(),
                l["reason"].as_str().unwrap_or("").to_string(),
                l["transition"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn agent_config(dir: &Path, images: &[String]) -> std::path::PathBuf {
    let imgs: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    write_file(
        dir,
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: {}s\nfail_after: 2\nrecover_after: 1\n\
             fleet:\n  node_count: 1\n  period: 10s\nbackoff:\n  initial: 1s\n  max: 1s\n\
             reload_interval: 1s\nimages:\n{}\n",
            HEARTBEAT.as_secs(),
            imgs.join("\n")
        ),
    )
}

/// The Node `name`, created as the cluster admin.
fn create_node(api: &KubeApiServer, admin: &str, name: &str) {
    api.must(
        "POST",
        "/api/v1/nodes",
        admin,
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})),
    );
}

/// A registry that wants `alice`/`right-pw`, with `team/app:v1` pushed.
fn alice_registry() -> Registry {
    let reg = Registry::builder()
        .htpasswd(&[("alice", "right-pw")])
        .start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::insecure().creds("alice", "right-pw"),
    );
    reg
}

#[test]
fn agent_against_real_apiserver_and_registry() {
    let t0 = Instant::now();
    let mut api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    api.apply_crds();
    let kubeconfig = api.write_kubeconfig(&token);

    // The Node, with another writer's condition on it (as the kubelet would have).
    create_node(&api, &admin, NODE);
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/nodes/{NODE}/status"),
            &admin,
            SMP,
            Some(&ready.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let ready_before = condition(&api, "Ready").expect("Ready condition");

    // A real registry behind a switch (the "registry host" the node reaches).
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::insecure());
    let switch = Switch::start(reg.host_port().parse().unwrap());
    let image = format!("{}/team/app:v1", switch.host_port());

    let root = agent_proc::host_root();
    let cfg = agent_config(root.path(), std::slice::from_ref(&image));
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    // The main listener reviews every caller: ask as the cluster admin.
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    agent.wait_ready(Duration::from_secs(20));
    let port = agent.port;
    eprintln!("[{:?}] agent ready", t0.elapsed());

    // 1. First write: both conditions False, next to the kubelet's untouched Ready.
    let c = wait_condition(&api, "RegistryUnreachable", "False", Duration::from_secs(5));
    assert_eq!(c["reason"], "RegistriesReachable");
    let auth = wait_condition(&api, "RegistryAuthFailing", "False", Duration::from_secs(5));
    assert_eq!(auth["reason"], "RegistryCredentialsAccepted");
    let first_transition = c["lastTransitionTime"].clone();
    assert_eq!(condition(&api, "Ready").unwrap(), ready_before);
    let steady_from = now();

    // 2. Pods on the node change the target set; a missing tag gives an Event on the Pod.
    api.create_namespace("apps");
    let missing = format!("{}/team/app:missing", switch.host_port());
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p1", "namespace": "apps"},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": missing}]}});
    api.must("POST", "/api/v1/namespaces/apps/pods", &admin, Some(&pod));
    let key_missing = wait_for(
        Duration::from_secs(10),
        "the pod's image on /status",
        || {
            let st = get_json(port, "/status");
            status_targets(&st)
                .into_iter()
                .find(|(k, v)| k.contains("team/app:missing") && v["pods"] == json!(["apps/p1"]))
                .map(|(k, v)| {
                    assert_eq!(v["reason"], "ManifestNotFound", "{v}");
                    k
                })
        },
    );
    let ev = wait_for(Duration::from_secs(10), "an Event on the Pod", || {
        events(&api, "apps")
            .into_iter()
            .find(|e| e["involvedObject"]["kind"] == "Pod" && e["involvedObject"]["name"] == "p1")
    });
    assert_eq!(ev["reason"], "ManifestNotFound", "{ev}");
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"].as_str().unwrap().contains("team/app:missing"),
        "{ev}"
    );
    // A workload problem is not a node problem.
    assert_eq!(
        condition(&api, "RegistryUnreachable").unwrap()["status"],
        "False"
    );
    let metrics = http_get(port, "/metrics").unwrap().1;
    assert_eq!(metric_sum(&metrics, "pullprobe_targets{kind=\"pod\"}"), 1.0);
    let r = api
        .request(
            "DELETE",
            "/api/v1/namespaces/apps/pods/p1?gracePeriodSeconds=0",
            &admin,
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    wait_for(
        Duration::from_secs(10),
        "the pod's image to leave /status",
        || {
            let st = get_json(port, "/status");
            (!status_targets(&st).contains_key(&key_missing)).then_some(())
        },
    );
    eprintln!("[{:?}] pods done", t0.elapsed());

    // 3. Steady state: nothing changes, so the only writes are heartbeats.
    let steady_for = HEARTBEAT.as_secs_f64() * 2.2;
    let left = steady_from + steady_for - now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
    let steady_to = now();
    let writes = status_writes(&api);
    let steady: Vec<f64> = writes
        .iter()
        .copied()
        .filter(|t| *t > steady_from && *t <= steady_to)
        .collect();
    // Heartbeats come every 0.9–1.0 × heartbeat (jitter only makes them earlier), checked on a
    // 1 s tick: over 2.2 heartbeats that is exactly 2.
    assert_eq!(
        steady.len(),
        2,
        "heartbeat writes in steady state: {writes:?}"
    );
    let mut prev = writes[0];
    for t in &steady {
        let gap = t - prev;
        assert!(
            gap >= HEARTBEAT.as_secs_f64() * 0.9 - 0.3,
            "a write {gap:.2}s after the previous one while nothing changed: {writes:?}"
        );
        prev = *t;
    }
    let c = condition(&api, "RegistryUnreachable").unwrap();
    assert_eq!(c["lastTransitionTime"], first_transition, "no transition");
    assert_ne!(c["lastHeartbeatTime"], first_transition, "heartbeat moved");
    eprintln!("[{:?}] steady done", t0.elapsed());

    // 4. The registry host goes away: True after fail_after (2) failing cycles, with a phase reason.
    let down_at = now();
    switch.set_up(false);
    let c = wait_condition(&api, "RegistryUnreachable", "True", Duration::from_secs(10));
    assert_eq!(c["reason"], "ConnectRefused", "{c}");
    let msg = c["message"].as_str().unwrap();
    assert!(msg.contains(&switch.host_port()), "{msg}");
    let failing_paths: Vec<f64> = agent
        .logs_of("pullprobe::probe")
        .iter()
        .filter(|l| l["kind"] == "path" && l["verdict"] != "ready" && ts(&l["timestamp"]) > down_at)
        .map(|l| ts(&l["timestamp"]))
        .collect();
    let ch = changes(&agent);
    let to_true = ch
        .iter()
        .find(|c| c.1 == "RegistryUnreachable" && c.2 == "True")
        .expect("a change to True in the log")
        .0;
    assert!(
        !failing_paths.is_empty() && to_true - failing_paths[0] >= 0.8,
        "one failing cycle must not flip the condition: first failure {failing_paths:?}, flip {to_true}"
    );
    let ev = wait_for(
        Duration::from_secs(10),
        "a Warning Event on the Node",
        || {
            events(&api, "default").into_iter().find(|e| {
                e["involvedObject"]["kind"] == "Node" && e["reason"] == "RegistryUnreachable"
            })
        },
    );
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["name"], NODE);
    assert!(
        ev["message"].as_str().unwrap().contains("ConnectRefused"),
        "{ev}"
    );

    // 5. Back: False after recover_after (1) passing cycle, and a Normal Event.
    switch.set_up(true);
    let c = wait_condition(
        &api,
        "RegistryUnreachable",
        "False",
        Duration::from_secs(10),
    );
    assert_eq!(c["reason"], "RegistriesReachable");
    wait_for(
        Duration::from_secs(10),
        "a Normal Event on the Node",
        || {
            events(&api, "default")
                .into_iter()
                .find(|e| e["reason"] == "RegistryUnreachableResolved" && e["type"] == "Normal")
        },
    );
    assert_eq!(condition(&api, "Ready").unwrap(), ready_before);
    eprintln!("[{:?}] flip and back done", t0.elapsed());

    // Exactly one write per transition: each status/reason change is followed by one write
    // within 2.5 s, and (heartbeats aside, ≥ 0.9 × heartbeat apart) by no other.
    std::thread::sleep(Duration::from_millis(1500));
    let writes = status_writes(&api);
    let ch: Vec<_> = changes(&agent)
        .into_iter()
        .filter(|c| c.0 > down_at)
        .collect();
    assert_eq!(ch.len(), 2, "two transitions: {ch:?}");
    // A problem is a warning; its clearing is news, not a warning (issue 17).
    for l in agent.logs_with("condition changed") {
        let want = if l["status"] == "True" {
            "WARN"
        } else {
            "INFO"
        };
        assert_eq!(l["level"], want, "{l}");
    }
    for (i, c) in ch.iter().enumerate() {
        // The window ends at the next change, which has its own write.
        let end = ch.get(i + 1).map_or(c.0 + 2.5, |n| n.0.min(c.0 + 2.5));
        let n = writes.iter().filter(|t| **t >= c.0 && **t < end).count();
        assert_eq!(n, 1, "writes after change {c:?}: {writes:?}");
    }
    let mut prev = steady_to;
    for t in writes.iter().filter(|t| **t > steady_to) {
        let after_change = ch.iter().any(|c| *t >= c.0 && *t < c.0 + 2.5);
        assert!(
            after_change || t - prev >= HEARTBEAT.as_secs_f64() * 0.9 - 0.3,
            "write at {t} is neither a transition nor a heartbeat: {writes:?} changes {ch:?}"
        );
        prev = *t;
    }
    let metrics = http_get(port, "/metrics").unwrap().1;
    let counted = metric_sum(
        &metrics,
        "pullprobe_api_writes_total{kind=\"node_status\",result=\"ok\"}",
    );
    assert_eq!(counted as usize, writes.len(), "metric vs audit log");

    // 6. API server outage: probing, /status and /metrics go on; the write lands after restart.
    let stop_unix = now();
    api.stop_apiserver();
    let stopped = Instant::now();
    switch.set_up(false);
    let cycles_before = metric_sum(
        &http_get(port, "/metrics").unwrap().1,
        "pullprobe_cycles_total",
    );
    wait_for(
        Duration::from_secs(10),
        "the condition to flip locally",
        || {
            let st = get_json(port, "/status");
            (status_condition(&st, "RegistryUnreachable")["status"] == "True").then_some(())
        },
    );
    let m = http_get(port, "/metrics").unwrap();
    assert_eq!(m.0, 200);
    assert!(metric_sum(&m.1, "pullprobe_cycles_total") > cycles_before);
    assert_eq!(
        metric_sum(
            &m.1,
            "pullprobe_condition_status{condition=\"RegistryUnreachable\"}"
        ),
        1.0
    );
    wait_for(
        Duration::from_secs(10),
        "a failed write to be counted",
        || {
            let m = http_get(port, "/metrics")?.1;
            (metric_sum(
                &m,
                "pullprobe_api_writes_total{kind=\"node_status\",result=\"error\"}",
            ) >= 1.0)
                .then_some(())
        },
    );
    assert!(matches!(http_get(port, "/healthz"), Some((200, _))));
    api.start_apiserver();
    let restarted = now();
    eprintln!(
        "[{:?}] apiserver back after {:?}",
        t0.elapsed(),
        stopped.elapsed()
    );
    let c = wait_condition(
        &api,
        "RegistryUnreachable",
        "True",
        Duration::from_secs(HEARTBEAT.as_secs() + 6),
    );
    assert_eq!(c["reason"], "ConnectRefused");
    assert_eq!(condition(&api, "Ready").unwrap(), ready_before);
    // The pod watch came back too: a pod created after the restart is seen.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p3", "namespace": "apps"},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": image}]}});
    api.must("POST", "/api/v1/namespaces/apps/pods", &admin, Some(&pod));
    wait_for(Duration::from_secs(15), "the new pod on /status", || {
        let st = get_json(port, "/status");
        status_targets(&st)
            .values()
            .any(|v| v["pods"] == json!(["apps/p3"]))
            .then_some(())
    });
    pod_watch_back_within_its_bound(&api, stop_unix);

    // 7. SIGTERM: a graceful stop, exit 0.
    agent.sigterm();
    let st = agent.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit after SIGTERM: {st}");
    assert!(!agent.logs_with("agent stopping").is_empty());

    // Every call the agent made was allowed by the shipped ClusterRole, and it made no others.
    // (A restarting apiserver serves requests before its RBAC informers have synced and denies
    // for a moment, until shortly after /readyz; the agent retried those, as asserted above.)
    let mut used: Vec<String> = api
        .audit_events()
        .iter()
        .filter(|e| e["user"]["username"] == SA_USER)
        .map(|e| {
            let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
            let t = ts(&e["requestReceivedTimestamp"]);
            let just_restarted = (stop_unix..restarted + 5.0).contains(&t);
            assert!(
                just_restarted || (code != 401 && code != 403),
                "denied: {e}"
            );
            format!(
                "{} {}{}",
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or(""),
                e["objectRef"]["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    used.sort();
    used.dedup();
    for u in &used {
        assert!(
            [
                "get nodes",
                "patch nodes/status",
                "list pods",
                "watch pods",
                "create events",
                "patch events",
                // Its node's NodePullStatus: created, status applied, assignments watched.
                "get nodepullstatuses",
                "create nodepullstatuses",
                "list nodepullstatuses",
                "watch nodepullstatuses",
                "patch nodepullstatuses/status",
                // The test's own calls to /status and /metrics, reviewed by the agent.
                "create tokenreviews",
                "create subjectaccessreviews"
            ]
            .contains(&u.as_str()),
            "unexpected API call {u}: {used:?}"
        );
    }
    eprintln!("[{:?}] done; calls used: {used:?}", t0.elapsed());
}

/// After the API server's restart, the agent's pod watch re-listed within its backoff bound
/// (`pullprobe::k8s::pods::max_backoff` of the 1 s interval) of the server answering the agent
/// again, measured in the server's own audit times: the first 2xx answer to any of the agent's
/// calls after the outage, and its first 2xx `list pods`. kube's default watcher backoff (up to
/// 12.8 s after a 5 s outage, longer if an attempt meets the restarted server's 403s before its
/// RBAC caches sync) left a pod created then unseen for more than a cycle. The margin covers
/// the agent's timers and audit timestamps on a loaded machine, not the backoff.
fn pod_watch_back_within_its_bound(api: &KubeApiServer, stop_unix: f64) {
    let bound = pullprobe::k8s::pods::max_backoff(Duration::from_secs(1)).as_secs_f64();
    let after: Vec<(f64, String, i64)> = api
        .audit_events()
        .iter()
        .filter(|e| e["user"]["username"] == SA_USER)
        .map(|e| {
            (
                ts(&e["requestReceivedTimestamp"]),
                format!(
                    "{} {}",
                    e["verb"].as_str().unwrap_or(""),
                    e["objectRef"]["resource"].as_str().unwrap_or("")
                ),
                e["responseStatus"]["code"].as_i64().unwrap_or(0),
            )
        })
        .filter(|(t, _, code)| *t > stop_unix && (200..300).contains(code))
        .collect();
    let back = after.iter().map(|(t, ..)| *t).fold(f64::INFINITY, f64::min);
    let listed = after
        .iter()
        .filter(|(_, call, _)| call == "list pods")
        .map(|(t, ..)| *t)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "pod watch re-listed {:.2} s after the API server answered the agent again (bound {bound} s)",
        listed - back
    );
    assert!(
        listed.is_finite() && listed - back <= bound + 2.0,
        "the pod watch re-listed {:.1} s after the API server answered the agent again (bound \
         {bound} s + 2 s margin); the agent's calls after the outage: {after:?}",
        listed - back
    );
}

#[test]
fn malformed_config_is_rejected_at_start() {
    let root = agent_proc::host_root();
    for (text, field) in [
        ("interval: 0s\n", "interval"),
        ("fleet:\n  node_count: 0\n", "fleet.node_count"),
        ("heartbeat: 1s\ninterval: 10s\n", "heartbeat"),
        ("images: [\"Bad Image!\"]\n", "images[0]"),
    ] {
        let cfg = write_file(root.path(), "bad.yaml", text);
        let (st, log) = agent_proc::run_agent_to_exit(
            &[
                "--kubeconfig",
                "/nonexistent/kubeconfig",
                "--node-name",
                NODE,
                "--config",
                cfg.to_str().unwrap(),
            ],
            Duration::from_secs(10),
        );
        assert!(!st.success(), "{text:?} accepted: {log}");
        assert!(log.contains(&format!("`{field}`")), "{text:?}: {log}");
    }
    // A typo is an unknown field, never a silent default.
    let cfg = write_file(root.path(), "typo.yaml", "intervall: 5s\n");
    let (st, log) = agent_proc::run_agent_to_exit(
        &["--standalone", "--config", cfg.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(!st.success());
    assert!(log.contains("intervall"), "{log}");
}

/// Node-level credentials (kubelet config.json under the host root) rejected →
/// `RegistryAuthFailing`; fixed on the node → False again. A pod's own pull secret rejected
/// (opt-in `pull_secrets`, with manifests/components/pull-secrets/secrets-reader.yaml applied and
/// the pod's namespace bound as docs/operate.md "Pod pull secrets" shows) → an Event on that Pod
/// only, while the node's credentials keep the condition False.
#[test]
fn node_credentials_and_pod_pull_secrets() {
    const NODE_B: &str = "node-b";
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    api.apply_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/components/pull-secrets/secrets-reader.yaml"),
    );
    // The component binds `default` only: the pods' namespace gets its own RoleBinding.
    api.create_namespace("apps");
    api.create_if_missing(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "pullprobe-pull-secrets-reader", "namespace": "apps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "pullprobe-pull-secrets-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "pullprobe", "namespace": "pullprobe"}]}),
        &admin,
    );
    let kubeconfig = api.write_kubeconfig(&token);
    create_node(&api, &admin, NODE_B);

    let reg = alice_registry();
    let hp = reg.host_port();
    let image = format!("{hp}/team/app:v1");

    // The kubelet's node config.json, with a wrong password at first.
    let root = agent_proc::host_root();
    let kubelet = root.path().join("var/lib/kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    write_file(
        &kubelet,
        "config.json",
        &docker_config_json(&hp, "alice", "wrong-pw"),
    );
    let cfg = write_file(
        root.path(),
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 30s\nfail_after: 2\nrecover_after: 1\n\
             fleet:\n  node_count: 1\nbackoff:\n  initial: 1s\n  max: 1s\nreload_interval: 1s\n\
             pull_secrets: true\nimages:\n  - \"{image}\"\n"
        ),
    );
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE_B,
        &cfg,
        root.path(),
    );
    // The main listener reviews every caller: ask as the cluster admin.
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    agent.wait_ready(Duration::from_secs(20));
    let port = agent.port;
    let cond = |kind: &str| {
        let n = api.must("GET", &format!("/api/v1/nodes/{NODE_B}"), &admin, None);
        n["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == kind).cloned())
    };
    let c = wait_for(Duration::from_secs(10), "RegistryAuthFailing=True", || {
        cond("RegistryAuthFailing").filter(|c| c["status"] == "True")
    });
    assert_eq!(c["reason"], "AuthCredentialsRejected", "{c}");
    assert!(c["message"].as_str().unwrap().contains(&hp), "{c}");
    // Credentials rejected is not "unreachable".
    assert_eq!(cond("RegistryUnreachable").unwrap()["status"], "False");

    // Fixed on the node: picked up without a restart (node config reload), False again.
    write_file(
        &kubelet,
        "config.json",
        &docker_config_json(&hp, "alice", "right-pw"),
    );
    let c = wait_for(Duration::from_secs(10), "RegistryAuthFailing=False", || {
        cond("RegistryAuthFailing").filter(|c| c["status"] == "False")
    });
    assert_eq!(c["reason"], "RegistryCredentialsAccepted");

    // A pod whose own pull secret is wrong: the kubelet tries it first, then the node's.
    api.create_namespace("apps");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "stale", "namespace": "apps"},
        "stringData": {".dockerconfigjson": docker_config_json(&hp, "alice", "old-pw")}});
    api.must(
        "POST",
        "/api/v1/namespaces/apps/secrets",
        &admin,
        Some(&secret),
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p2", "namespace": "apps"},
        "spec": {"nodeName": NODE_B, "automountServiceAccountToken": false,
                 "imagePullSecrets": [{"name": "stale"}],
                 "containers": [{"name": "c", "image": image}]}});
    api.must("POST", "/api/v1/namespaces/apps/pods", &admin, Some(&pod));
    let ev = wait_for(
        Duration::from_secs(10),
        "a PullSecretRejected Event on the Pod",
        || {
            events(&api, "apps").into_iter().find(|e| {
                e["involvedObject"]["name"] == "p2" && e["reason"] == "PullSecretRejected"
            })
        },
    );
    assert!(
        ev["message"].as_str().unwrap().contains("apps/stale"),
        "{ev}"
    );
    assert!(!ev["message"].as_str().unwrap().contains("old-pw"), "{ev}");
    // The pod's target is checked with its own credential source, and passes via the node's.
    let st = get_json(port, "/status");
    let t = status_targets(&st)
        .into_iter()
        .find(|(k, _)| k.contains("pull-secrets:apps/stale"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no pull-secret target: {st}"));
    assert_eq!(t["pods"], json!(["apps/p2"]));
    // Pulls, but only after the secret's attempt failed: `degraded`.
    assert_eq!(t["verdict"], "degraded", "{t}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cond("RegistryAuthFailing").unwrap()["status"], "False");
    assert!(!agent.log_text().contains("old-pw") && !agent.log_text().contains("right-pw"));
    // The secret was read with the opt-in grant, never denied.
    let gets: Vec<_> = api
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == SA_USER && e["objectRef"]["resource"] == "secrets")
        .collect();
    assert!(!gets.is_empty());
    assert!(gets
        .iter()
        .all(|e| e["verb"] == "get" && e["responseStatus"]["code"] == 200));
}

/// `pullprobe status` against the real API server, as a cron alert would run it.
fn fleet_status(kubeconfig: &Path, extra: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(["status", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run pullprobe status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An agent for `NODE` (created here) as `kubeconfig`, probing `team/app:v1` on a plain
/// registry of its own, Ready: (registry, host root, agent), to keep alive together.
fn agent_on_a_plain_registry(
    api: &KubeApiServer,
    admin: &str,
    kubeconfig: &Path,
) -> (Registry, tempfile::TempDir, AgentProc) {
    api.apply_crds();
    create_node(api, admin, NODE);
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::insecure());
    let root = agent_proc::host_root();
    let cfg = agent_config(root.path(), &[format!("{}/team/app:v1", reg.host_port())]);
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    agent.wait_ready(Duration::from_secs(20));
    (reg, root, agent)
}

/// Issue 17 item 1 (issue 16: `pullprobe status` reads the NodePullStatus objects): a stopped
/// agent leaves its report behind, its heartbeat frozen. Past twice its interval `pullprobe
/// status` shows the node as unknown and exits 1 — never "No node reports a registry problem".
#[test]
fn status_calls_a_stopped_agents_conditions_unknown() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    let kubeconfig = api.write_kubeconfig(&token);
    let admin_kubeconfig = api.dir().join("admin-status.kubeconfig");
    std::fs::write(&admin_kubeconfig, api.kubeconfig_yaml(&admin)).unwrap();
    let (_reg, _root, mut agent) = agent_on_a_plain_registry(&api, &admin, &kubeconfig);
    let nps = format!("/apis/pullprobe.io/v1alpha1/nodepullstatuses/{NODE}");
    let report = || {
        let r = api.request("GET", &nps, &admin, None).ok()?;
        (r.status == 200).then(|| r.json()["status"].clone())
    };
    wait_for(Duration::from_secs(20), "the node's report, ok", || {
        report().filter(|st| st["registriesTotal"] == 1 && st["registriesFailing"] == 0)
    });
    let (code, out) = fleet_status(&admin_kubeconfig, &["-o", "json"]);
    let fresh: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((code, fresh["stale"].clone()), (0, json!([])), "{out}");

    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    let frozen = report().expect("the report stays");
    // Twice the interval (1 s) passes: the node turns unknown.
    let stale = wait_for(
        Duration::from_secs(60),
        "status to call the node unknown",
        || {
            let (code, out) = fleet_status(&admin_kubeconfig, &["-o", "json"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            (v["stale"].as_array().is_some_and(|s| !s.is_empty())).then_some((code, v))
        },
    );
    assert_eq!(stale.0, 1, "a stale node fails the cron check: {}", stale.1);
    assert_eq!(stale.1["stale"][0]["node"], NODE);
    assert_eq!(
        stale.1["stale"][0]["last_heartbeat"], frozen["heartbeatTime"],
        "{}",
        stale.1
    );
    assert!(stale.1["failing"].as_array().unwrap().is_empty());
    let (code, text) = fleet_status(&admin_kubeconfig, &[]);
    assert_eq!(code, 1);
    assert!(
        !text.contains("No node reports a registry problem"),
        "{text}"
    );
    assert!(
        text.contains("UNKNOWN: no heartbeat from the agent") && text.contains(NODE),
        "{text}"
    );
}

/// Issue 17 item 2: a pod names a pull secret the agent may not read, and the registry wants
/// credentials. Without the grant the agent would check with the node's credentials alone and
/// blame a missing credential (`AuthCredentialsRequired`, "no credential is configured"), while
/// the kubelet, which reads the secret, gets a 401 for it. Say what is true instead, both with
/// `pull_secrets: true` but no `get secrets` in the namespace (403) and on the base install.
#[test]
fn a_pull_secret_the_agent_cannot_read_is_named() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac(); // the base install: no secrets-reader
    let kubeconfig = api.write_kubeconfig(&token);
    create_node(&api, &admin, NODE);
    let reg = alice_registry();
    let image = format!("{}/team/app:v1", reg.host_port());
    api.create_namespace("apps");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": "apps"},
        "stringData": {".dockerconfigjson": docker_config_json(&reg.host_port(), "alice", "wrong-pw")}});
    api.must(
        "POST",
        "/api/v1/namespaces/apps/secrets",
        &admin,
        Some(&secret),
    );
    let root = agent_proc::host_root();
    let config = |pull_secrets: bool| {
        format!(
            "interval: 1s\njitter: 0\nheartbeat: 30s\nfleet:\n  node_count: 1\n\
             backoff:\n  initial: 1s\n  max: 1s\nreload_interval: 1s\npull_secrets: {pull_secrets}\n"
        )
    };
    let cfg = write_file(root.path(), "pullprobe.yaml", &config(true));
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    agent.wait_ready(Duration::from_secs(20));
    // A pod naming `regcred` for `image`: its pullprobe Event's message, and never one that
    // blames a missing credential.
    let pod_event = |pod: &str, image: &str| {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "apps"},
            "spec": {"nodeName": NODE, "automountServiceAccountToken": false,
                     "imagePullSecrets": [{"name": "regcred"}],
                     "containers": [{"name": "c", "image": image}]}});
        api.must("POST", "/api/v1/namespaces/apps/pods", &admin, Some(&p));
        let ev = wait_for(Duration::from_secs(20), "the pod's pullprobe Event", || {
            events(&api, "apps").into_iter().find(|e| {
                e["involvedObject"]["name"] == pod && e["reason"] == "PullSecretUnreadable"
            })
        });
        let others: Vec<Value> = events(&api, "apps")
            .into_iter()
            .filter(|e| {
                e["involvedObject"]["name"] == pod && e["reason"] == "AuthCredentialsRequired"
            })
            .collect();
        assert!(
            others.is_empty(),
            "still blamed on a missing credential: {others:?}"
        );
        ev["message"].as_str().unwrap_or_default().to_string()
    };
    let says = |image: &str, grant: &str| {
        format!("image {image}: the pod names secret apps/regcred, which the agent is not allowed to read ({grant})")
    };
    // `pull_secrets: true`, but the API server answers 403 for the secret: the namespace has no
    // RoleBinding (components/pull-secrets grants per namespace).
    let m = pod_event("p1", &image);
    let bind = "bind pullprobe-pull-secrets-reader in namespace apps: docs/operate.md \"Pod pull secrets\"";
    assert!(m.starts_with(&says(&image, bind)), "{m}");
    assert!(
        m.ends_with("the registry answers AuthCredentialsRequired"),
        "{m}"
    );
    // `/status` gives the same fix for the target, not "give the pod an imagePullSecret".
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    let hint = wait_for(Duration::from_secs(10), "the target's hint", || {
        let st = get_json(agent.port, "/status");
        status_targets(&st)
            .values()
            .find(|t| t["kind"] == "image" && t["image"] == image.as_str())
            .and_then(|t| t["hint"].as_str().map(str::to_string))
    });
    assert!(
        hint.contains("pod apps/p1")
            && hint.ends_with("install components/pull-secrets to check with them"),
        "{hint}"
    );
    let denied = api
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == SA_USER && e["objectRef"]["resource"] == "secrets")
        .collect::<Vec<_>>();
    assert!(
        !denied.is_empty() && denied.iter().all(|e| e["responseStatus"]["code"] == 403),
        "{denied:?}"
    );
    // The base install's config: the agent reads no Secret at all, and says to install the
    // component. A new tag, so its check is new rather than one of `image` (checked again
    // only when due).
    write_file(root.path(), "pullprobe.yaml", &config(false));
    wait_for(Duration::from_secs(10), "the config reload", || {
        (!agent.logs_with("config reloaded").is_empty()).then_some(())
    });
    let image2 = format!("{}/team/app:v2", reg.host_port());
    let m = pod_event("p2", &image2);
    assert!(
        m.starts_with(&says(&image2, "install components/pull-secrets")),
        "{m}"
    );
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
}

/// The `n`-th ```sh block after the heading `heading` of docs/operate.md.
fn operate_doc_block(heading: &str, n: usize) -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operate.md"))
            .expect("docs/operate.md");
    let after = doc
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading} in docs/operate.md"))
        .1;
    after
        .split("```sh\n")
        .nth(n + 1)
        .and_then(|b| b.split_once("```"))
        .map(|(b, _)| b.to_string())
        .unwrap_or_else(|| panic!("no sh block {n} after {heading}"))
}

/// A directory whose `kubectl` is `real` with `--kubeconfig=kubeconfig` (for the docs' commands).
fn kubectl_on_path(dir: &Path, real: &Path, kubeconfig: &Path) -> String {
    let w = dir.join("kubectl");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\nexec '{}' --kubeconfig='{}' \"$@\"\n",
            real.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `bash -c script` with `path` as PATH: (success, stdout, stderr).
fn run_doc(script: &str, path: &str) -> (bool, String, String) {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path)
        .output()
        .expect("run bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// docs/operate.md, run as written against a real API server and a real agent: the three
/// commands of "Read one agent" give a fresh ServiceAccount `/status` (403 before, 200 after;
/// `/metrics` likewise with pullprobe-metrics-reader), and both uninstall commands (kubectl 1.32
/// with `--subresource`, kubectl 1.20 through `kubectl proxy`) remove the agent's two Node
/// conditions of a stopped agent and nothing else.
#[test]
fn doc_commands_read_an_agent_and_uninstall_its_conditions() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.apply_file(&manifests.join("readers.yaml"));
    let kubeconfig = api.write_kubeconfig(&token);
    let admin_kubeconfig = api.write_kubeconfig(&admin);
    let (_reg, _root, mut agent) = agent_on_a_plain_registry(&api, &admin, &kubeconfig);
    // The kubelet's own condition, which the uninstall must leave alone.
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    .to_string();
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/nodes/{NODE}/status"),
            &admin,
            SMP,
            Some(&ready),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let port = agent.port;
    for kind in ["RegistryUnreachable", "RegistryAuthFailing"] {
        wait_condition(&api, kind, "False", Duration::from_secs(10));
    }

    // Read one agent: the three commands (the agent's port for NODE:9808).
    let bin = tempfile::tempdir().unwrap();
    let kubectl_new = std::path::PathBuf::from(
        String::from_utf8(
            std::process::Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-kustomize.sh"))
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let path = kubectl_on_path(bin.path(), &kubectl_new, &admin_kubeconfig);
    let block = operate_doc_block("### Read one agent", 0)
        .replace("http://NODE:9808", &format!("http://127.0.0.1:{port}"));
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "three commands: {block}");
    let (ok, _, err) = run_doc(lines[0], &path);
    assert!(ok, "{}: {err}", lines[0]);
    let fresh = || {
        let (ok, out, err) = run_doc(
            "kubectl -n pullprobe create token status-reader --audience=pullprobe",
            &path,
        );
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let before = fresh();
    assert_eq!(status_as(port, "/status", &before), 403);
    assert_eq!(status_as(port, "/metrics", &before), 403);
    // The same account's token for the API server's audience is not the agent's: 401.
    let (ok, api_audience, err) = run_doc("kubectl -n pullprobe create token status-reader", &path);
    assert!(ok, "{err}");
    assert_eq!(status_as(port, "/status", api_audience.trim()), 401);
    assert_eq!(
        status_as(port, "/status", &admin),
        401,
        "the admin's token neither"
    );
    let (ok, _, err) = run_doc(lines[1], &path);
    assert!(ok, "{}: {err}", lines[1]);
    let (ok, out, err) = run_doc(lines[2], &path);
    assert!(ok, "{}: {err}", lines[2]);
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(status.to_string().contains(NODE), "{status}");
    let metrics_binding = lines[1]
        .replace("status-reader --", "metrics-reader --")
        .replace(
            "--clusterrole=pullprobe-status-reader",
            "--clusterrole=pullprobe-metrics-reader",
        );
    assert!(
        metrics_binding.contains("pullprobe-metrics-reader --clusterrole=pullprobe-metrics-reader")
    );
    let (ok, _, err) = run_doc(&metrics_binding, &path);
    assert!(ok, "{metrics_binding}: {err}");
    let after = fresh();
    assert_eq!(status_as(port, "/metrics", &after), 200);

    // Uninstall: the agent stopped, its conditions stay until removed.
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    let ours = |api: &KubeApiServer| {
        node_conditions(api)
            .iter()
            .filter(|c| c["type"] == "RegistryUnreachable" || c["type"] == "RegistryAuthFailing")
            .count()
    };
    assert_eq!(ours(&api), 2);
    let ready_before = condition(&api, "Ready").unwrap();
    let kubectl_old = crate::kube::kube_binary_path("kubectl");
    let bin_old = tempfile::tempdir().unwrap();
    let path_old = kubectl_on_path(bin_old.path(), &kubectl_old, &admin_kubeconfig);
    let proxy_port = agent_proc::free_port().to_string();
    for (n, path) in [(1, &path), (2, &path_old)] {
        if ours(&api) == 0 {
            // Put them back as the agent writes them, for the second command.
            let back = json!({"status": {"conditions": [
                {"type": "RegistryUnreachable", "status": "False", "reason": "RegistriesReachable",
                 "message": "m", "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "RegistryAuthFailing", "status": "False", "reason": "RegistryCredentialsAccepted",
                 "message": "m", "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
            .to_string();
            let r = api
                .request_with(
                    "PATCH",
                    &format!("/api/v1/nodes/{NODE}/status"),
                    &admin,
                    SMP,
                    Some(&back),
                )
                .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(ours(&api), 2);
        }
        let script = operate_doc_block("### Uninstall", n).replace("8001", &proxy_port);
        let (ok, out, err) = run_doc(&script, path);
        assert!(ok, "uninstall command {n}:\n{script}\n{out}\n{err}");
        assert_eq!(
            ours(&api),
            0,
            "command {n} left our conditions: {:#?}",
            node_conditions(&api)
        );
        assert_eq!(
            condition(&api, "Ready").unwrap(),
            ready_before,
            "command {n}"
        );
    }
}
