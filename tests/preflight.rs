//! Pre-flight against a real cluster of tests: a real kube-apiserver (tests/kube), real
//! `pullprobe agent`s — each in its own network namespace with a private address,
//! registered as its node's agent Pod (the API server refuses to proxy to loopback) — with
//! different node roots (healthy ×2, a broken mirror, no credentials), one agent that never
//! answers, one of an older version, one answering garbage, a node without an agent, a
//! real registry (htpasswd) and the CLI reaching the agents through the API server's pod
//! proxy with the user's kubeconfig. RBAC is checked both ways on the real server.

mod harness;
mod kube;
mod preflight_lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{OciImage, PushOpts, Registry};
use preflight_lab::{http, kubeconfig, node_root, register, register_port, write, Lab};
use serde_json::{json, Value};

use crate::kube::KubeApiServer;

use preflight_lab::NS;

fn bind_user(
    api: &KubeApiServer,
    user: &str,
    cluster_role: Option<&str>,
    role_ns: Option<(&str, &str)>,
) {
    let admin = api.admin_token();
    if let Some(cr) = cluster_role {
        api.create_if_missing(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("{user}-{cr}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
            admin,
        );
    }
    if let Some((ns, role)) = role_ns {
        api.create_if_missing(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
            admin,
        );
    }
}

fn preflight(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .arg("preflight")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn row<'a>(m: &'a Value, node: &str) -> &'a Value {
    m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no row {node}: {m}"))
}

/// Successful manifest GETs of `repo` in the registry's access log.
fn manifest_gets(reg: &Registry, repo: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repo}/manifests/")) && l.contains("\" 200 "))
        .count()
}

const FAKE_AGENT: &str = r#"
import http.server, sys, json
mode = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', 0)); self.rfile.read(n)
        if mode == 'old':
            self.send_response(404); self.end_headers(); self.wfile.write(b'404 page not found\n')
        elif mode == 'huge':
            self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()
            self.wfile.write(b'{"apiVersion": "pullprobe.io/v1", "node": "' + b'x' * (9 << 20) + b'"}')
        else:
            self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()
            self.wfile.write(b'{"apiVersion": "pullprobe.io/v1", "node": ' + b'[' * 10 + b'\n')
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[2], 9808), H).serve_forever()
"#;

struct Fixture {
    api: KubeApiServer,
    lab: Lab,
    reg: Registry,
    reg_host: String,
    dir: tempfile::TempDir,
    _roots: Vec<tempfile::TempDir>,
}

fn setup() -> Fixture {
    let api = KubeApiServer::builder()
        .user("alice", &[])
        .user("bob", &[])
        .user("carol", &[])
        .user("dave", &[])
        .start();
    let dir = tempfile::tempdir().unwrap();
    api.create_namespace(NS);
    // The agents' ServiceAccount and ClusterRole exactly as shipped.
    let sa = api.create_service_account(NS, "pullprobe");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rbac = std::fs::read_to_string(repo.join("manifests/rbac.yaml")).unwrap();
    for d in serde_saphyr::from_multiple::<Value>(&rbac)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
    {
        let coll = match d["kind"].as_str().unwrap() {
            "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            _ => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        };
        api.create_if_missing(coll, &d, api.admin_token());
    }
    api.apply_file(&repo.join("examples/gates/rbac.yaml"));

    let reg = Registry::builder()
        .htpasswd(&[("puller", "s3cret-canary")])
        .start();
    let creds = PushOpts::insecure().creds("puller", "s3cret-canary");
    OciImage::single("v1").push(&reg, "team/app", &creds);
    OciImage::single("v1").push(&reg, "team/web", &creds);

    let mut lab = Lab::new(8);
    let api_fwd = lab.expose(api.addr());
    let reg_fwd = lab.expose(format!("127.0.0.1:{}", reg.port()).parse().unwrap());
    let dead = lab.dead_port();
    let reg_host = reg_fwd.to_string();
    let agent_kc = kubeconfig(
        &api,
        &format!("https://{api_fwd}"),
        &sa,
        dir.path(),
        "agent.kubeconfig",
    );
    let cfg = write(
        dir.path(),
        "agent.yaml",
        "interval: 60s\nfleet:\n  node_count: 1\n",
    );
    let tls_cfg = write(
        dir.path(),
        "agent-tls.yaml",
        "interval: 60s\nfleet:\n  node_count: 1\ntls:\n  mode: self_signed\n",
    );
    let good = Some(("puller", "s3cret-canary"));
    let dead_s = dead.to_string();
    type NodeSpec<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a str)>);
    let nodes: [NodeSpec; 4] = [
        ("healthy-a", None, good),
        ("healthy-b", None, good),
        ("mirror", Some(dead_s.as_str()), good),
        ("nocreds", None, None),
    ];
    let agent_image = format!("{reg_host}/pullprobe/agent:test");
    let mut roots = Vec::new();
    for (i, (node, mirror, creds)) in nodes.iter().enumerate() {
        let root = node_root(&reg_host, *mirror, *creds);
        let ip = lab.slots[i].addr.to_string();
        // healthy-b speaks TLS (a self-signed certificate): its Pod names the port
        // `https-metrics`, so the CLI asks through `pods/https:NAME:9808/proxy`.
        let tls = *node == "healthy-b";
        let port_name = if tls { "https-metrics" } else { "http-metrics" };
        let labels = json!({"pool": "apps"});
        register_port(&api, node, Some(&ip), &agent_image, &labels, port_name);
        let node_cfg = if tls { &tls_cfg } else { &cfg };
        let mut args: Vec<String> = [
            "agent",
            "--kubeconfig",
            agent_kc.to_str().unwrap(),
            "--node-name",
            node,
            "--config",
            node_cfg.to_str().unwrap(),
            "--host-root",
            root.path().to_str().unwrap(),
            "--listen",
            &format!("{ip}:9808"),
            "--log-format",
            "text",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if tls {
            args.extend(["--health-listen".to_string(), format!("{ip}:9809")]);
        }
        lab.spawn_args(
            i,
            env!("CARGO_BIN_EXE_pullprobe"),
            &args,
            &[("RUST_LOG", "info")],
            &dir.path().join(format!("{node}.log")),
        );
        roots.push(root);
    }
    // Never answers; an agent from before pre-flight (404); one answering garbage.
    let (silent, old, garbage) = (
        lab.slots[4].addr.to_string(),
        lab.slots[5].addr.to_string(),
        lab.slots[6].addr.to_string(),
    );
    lab.silent_listener(4, 9808, &dir.path().join("silent.log"));
    register(&api, "silent", Some(&silent), &agent_image);
    lab.spawn_args(
        5,
        "python3",
        &["-c".into(), FAKE_AGENT.into(), "old".into(), old.clone()],
        &[],
        &dir.path().join("old.log"),
    );
    register(&api, "old", Some(&old), &agent_image);
    lab.spawn_args(
        6,
        "python3",
        &[
            "-c".into(),
            FAKE_AGENT.into(),
            "garbage".into(),
            garbage.clone(),
        ],
        &[],
        &dir.path().join("garbage.log"),
    );
    register(&api, "garbage", Some(&garbage), &agent_image);
    let huge = lab.slots[7].addr.to_string();
    let args = ["-c".into(), FAKE_AGENT.into(), "huge".into(), huge.clone()];
    lab.spawn_args(7, "python3", &args, &[], &dir.path().join("huge.log"));
    register(&api, "huge", Some(&huge), &agent_image);
    register(&api, "noagent", None, &agent_image);

    // Every real agent ready (its first cycle done), asked as the kubelet's probes ask: on the
    // health listener, port 9809, unauthenticated. Only healthy-b names it (`--health-listen`);
    // the others get it as the default of an agent in a cluster.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (node, _, _)) in nodes.iter().enumerate() {
        let addr = format!("{}:9809", lab.slots[i].addr);
        while http(&addr, "GET", "/readyz", None).map(|r| r.0) != Some(200) {
            let log =
                std::fs::read_to_string(dir.path().join(format!("{node}.log"))).unwrap_or_default();
            assert!(Instant::now() < deadline, "agent {node} not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for i in 4..8 {
        let addr = std::net::SocketAddr::from((lab.slots[i].addr, 9808));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "fake agent {i} not listening");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Fixture {
        api,
        lab,
        reg,
        reg_host,
        dir,
        _roots: roots,
    }
}

#[test]
#[ignore = "the pod-proxy path is gone (issue 16): pre-flight runs on ImagePreflight objects; the lead rewrites this end to end with the controller"]
fn preflight_through_the_pod_proxy_against_agents_in_namespaces() {
    let t0 = Instant::now();
    let f = setup();
    eprintln!("[{:?}] cluster, registry and 4 agents ready", t0.elapsed());
    let (api, reg) = (&f.api, &f.reg);
    let alice = kubeconfig(
        api,
        &api.url(),
        api.user_token("alice"),
        f.dir.path(),
        "alice.kubeconfig",
    );
    bind_user(
        api,
        "alice",
        Some("pullprobe-preflight"),
        Some((NS, "pullprobe-preflight")),
    );
    let app = format!("{}/team/app:v1", f.reg_host);
    let web = format!("{}/team/web:v1", f.reg_host);
    let gets_before = manifest_gets(reg, "team/app");

    let started = Instant::now();
    let (code, out, err) = preflight(&alice, &[&app, &web, "--timeout", "4s", "-o", "json"]);
    let took = started.elapsed();
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    eprintln!(
        "[{:?}] pre-flight of 2 images over 8 nodes in {took:?}: {}",
        t0.elapsed(),
        m["summary"]["line"]
    );
    assert_eq!(code, 1, "a node cannot pull: exit 1\n{out}\n{err}");
    let cell = |node: &str, i: usize| row(&m, node)["cells"][i].clone();
    for n in ["healthy-a", "healthy-b"] {
        for i in 0..2 {
            assert_eq!(cell(n, i)["verdict"], "ready", "{n}: {}", cell(n, i));
        }
    }
    // healthy-b answered over TLS through the proxy; its main port speaks no plain HTTP.
    let tls_addr = format!("{}:9808", f.lab.slots[1].addr);
    let plain = http(&tls_addr, "GET", "/metrics", Some(api.admin_token()));
    assert!(
        plain.as_ref().is_none_or(|(st, _)| *st == 400),
        "plain HTTP to a TLS listener: {plain:?}"
    );
    // The two identical nodes share one image check: exactly one of them was the checker.
    let shared: Vec<Value> = ["healthy-a", "healthy-b"]
        .iter()
        .map(|n| cell(n, 0)["checked_on"].clone())
        .collect();
    assert_eq!(
        shared.iter().filter(|c| c.is_null()).count(),
        1,
        "{shared:?}"
    );
    assert_eq!(
        cell("mirror", 0)["verdict"],
        "degraded",
        "{}",
        cell("mirror", 0)
    );
    assert_eq!(cell("nocreds", 0)["verdict"], "not_ready");
    assert_eq!(cell("nocreds", 0)["reason"], "AuthCredentialsRequired");
    assert_eq!(cell("nocreds", 0)["host"], f.reg_host.as_str());
    assert_eq!(cell("silent", 0)["verdict"], "unknown");
    assert_eq!(cell("silent", 0)["reason"], "AgentTimeout");
    assert_eq!(cell("noagent", 1)["reason"], "NoAgent");
    assert_eq!(cell("old", 0)["reason"], "AgentTooOld");
    assert_eq!(cell("garbage", 0)["reason"], "AgentReplyInvalid");
    assert_eq!(cell("huge", 0)["reason"], "AgentReplyInvalid");
    assert!(
        cell("huge", 0)["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{}",
        cell("huge", 0)
    );
    // Registries in use are answered from the agents' own schedule, the rest probed once.
    let sources: Vec<Value> = ["healthy-a", "healthy-b"]
        .iter()
        .map(|n| cell(n, 0)["source"].clone())
        .collect();
    assert!(
        sources
            .iter()
            .all(|s| s == "schedule" || s == "probe" || s == "cache"),
        "{sources:?}"
    );
    assert_eq!(
        m["rows"].as_array().unwrap().len(),
        9,
        "every node is a row, none skipped"
    );
    assert_eq!(m["summary"]["nodes"], 9);
    assert_eq!(m["summary"]["ready"], 3, "{}", m["summary"]);
    let line = m["summary"]["line"].as_str().unwrap();
    assert!(
        line.starts_with("3/9 nodes ready (1 degraded); 1 node: AuthCredentialsRequired at "),
        "{line}"
    );
    // Image checks: one for the two healthy nodes, one for the mirror node (its own plan).
    let gets = manifest_gets(reg, "team/app") - gets_before;
    assert_eq!(
        gets, 2,
        "successful manifest GETs of team/app during pre-flight"
    );
    // No credential value in any output.
    assert!(!out.contains("s3cret-canary") && !err.contains("s3cret-canary"));
    assert!(
        !out.contains(api.user_token("alice")),
        "the token never appears in output"
    );

    // The table groups identical rows and ends with the summary line.
    let (_, table, _) = preflight(&alice, &[&app, &web, "--timeout", "4s"]);
    assert!(table.contains("healthy-a (+1 more)"), "{table}");
    assert!(table.trim_end().ends_with(line), "{table}");

    // -f - (helm template | …) and -o yaml: the same matrix.
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: apps}}\nspec:\n  template:\n    spec:\n      nodeSelector: {{pool: apps}}\n      containers: [{{name: w, image: \"{app}\"}}]\n"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args([
            "preflight",
            "-f",
            "-",
            "-o",
            "yaml",
            "--timeout",
            "4s",
            "--kubeconfig",
        ])
        .arg(&alice)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let y: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(y["images"], json!([app]));
    assert_eq!(y["rows"].as_array().unwrap().len(), 9, "{y}");
    assert_eq!(row(&y, "healthy-a")["cells"][0]["verdict"], "ready");

    // A second run within the cache window: no new image check at the registry.
    let (_, _, _) = preflight(&alice, &[&app, "--timeout", "4s", "-o", "json"]);
    assert_eq!(
        manifest_gets(reg, "team/app") - gets_before,
        2,
        "answered from the agents' caches"
    );

    // -f manifests with scheduling: only nodes with pool=apps... and a nodeSelector nobody has.
    let manifest = write(f.dir.path(), "deploy.yaml", &format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: apps}}\nspec:\n  template:\n    spec:\n      nodeSelector: {{pool: none}}\n      containers: [{{name: w, image: \"{web}\"}}]\n---\nkind: ConfigMap\napiVersion: v1\nmetadata: {{name: x}}\n"
    ));
    let (code, out, err) = preflight(
        &alice,
        &[
            "-f",
            manifest.to_str().unwrap(),
            "-o",
            "json",
            "--timeout",
            "4s",
        ],
    );
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(m["rows"].as_array().unwrap().len(), 0, "{m}");
    assert_eq!(m["excluded"].as_array().unwrap().len(), 9);
    assert!(m["warnings"].to_string().contains("ConfigMap"), "{m}");
    assert_eq!(code, 0);

    // -f with image volumes (KEP-4639): the kubelet pulls `volumes[].image.reference` like a
    // container image, with the pod's pull secrets; `pullPolicy: Never` is never pulled. (The
    // 1.20 API server here would drop the field from a created Pod: the manifest path is
    // where a real cluster's image volumes are tested end to end.)
    let manifest = write(f.dir.path(), "image-volumes.yaml", &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: model, namespace: apps}}\nspec:\n  nodeSelector: {{pool: apps}}\n  containers: [{{name: s, image: \"{app}\", volumeMounts: [{{name: weights, mountPath: /w}}]}}]\n  volumes:\n  - {{name: weights, image: {{reference: \"{web}\", pullPolicy: IfNotPresent}}}}\n  - {{name: local, image: {{reference: \"{}/team/never-pulled:1\", pullPolicy: Never}}}}\n",
        f.reg_host
    ));
    let (_, out, err) = preflight(
        &alice,
        &[
            "-f",
            manifest.to_str().unwrap(),
            "-o",
            "json",
            "--timeout",
            "4s",
        ],
    );
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(m["images"], json!([app, web]), "{m}");
    for i in 0..2 {
        assert_eq!(row(&m, "healthy-a")["cells"][i]["verdict"], "ready", "{m}");
    }
    assert_eq!(
        row(&m, "nocreds")["cells"][1]["reason"],
        "AuthCredentialsRequired"
    );

    // pullprobe status: the fleet from the Node conditions (two nodes made failing here as
    // an agent would write it), grouped by condition, registry and reason; exit 1.
    let msg = format!(
        "{}: TLSUnknownAuthority at https://{}/v2",
        f.reg_host, f.reg_host
    );
    // Failing since long ago, renewed just now (an older heartbeat would make them unknown).
    let beat = jiff::Timestamp::now().to_string();
    for (n, t) in [
        ("old", "2026-01-02T00:00:00Z"),
        ("garbage", "2026-01-01T00:00:00Z"),
    ] {
        let body = json!({"status": {"conditions": [{"type": "RegistryUnreachable", "status": "True",
            "reason": "TLSUnknownAuthority", "message": msg, "lastTransitionTime": t, "lastHeartbeatTime": beat}]}});
        let r = api
            .request_with(
                "PATCH",
                &format!("/api/v1/nodes/{n}/status"),
                api.admin_token(),
                "application/strategic-merge-patch+json",
                Some(&body.to_string()),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    let admin = kubeconfig(
        api,
        &api.url(),
        api.admin_token(),
        f.dir.path(),
        "admin.kubeconfig",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(["status", "-o", "json", "--kubeconfig"])
        .arg(&admin)
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "a node is failing: exit 1");
    assert_eq!(st["failing"], json!(["garbage", "old"]));
    let p = &st["problems"][0];
    assert_eq!(
        (p["reason"].as_str(), p["registry"].as_str()),
        (Some("TLSUnknownAuthority"), Some(f.reg_host.as_str()))
    );
    assert_eq!(p["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(p["since"], "2026-01-01T00:00:00Z");
    let unreported = st["unreported"].to_string();
    assert!(
        unreported.contains("noagent") && unreported.contains("silent"),
        "{st}"
    );
    assert!(
        !unreported.contains("healthy-a"),
        "the real agents wrote their conditions: {st}"
    );
    eprintln!("[{:?}] done", t0.elapsed());
}

#[test]
#[ignore = "the pod-proxy path is gone (issue 16): pre-flight runs on ImagePreflight objects; the lead rewrites this end to end with the controller"]
fn rbac_both_ways_on_the_real_apiserver() {
    let f = setup();
    let api = &f.api;
    let app = format!("{}/team/app:v1", f.reg_host);
    // bob may reach the agents (pods/proxy) but not run pre-flight (nodes/preflight): the
    // agent refuses (SubjectAccessReview).
    api.create_if_missing(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "list-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
        api.admin_token(),
    );
    bind_user(
        api,
        "bob",
        Some("list-nodes"),
        Some((NS, "pullprobe-preflight")),
    );
    let bob = kubeconfig(
        api,
        &api.url(),
        api.user_token("bob"),
        f.dir.path(),
        "bob.kubeconfig",
    );
    let (code, out, err) = preflight(
        &bob,
        &[&app, "-o", "json", "--timeout", "4s", "-l", "pool=apps"],
    );
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let c = &row(&m, "healthy-a")["cells"][0];
    assert_eq!(c["reason"], "Forbidden", "{c}");
    assert!(
        c["message"].as_str().unwrap().contains(
            "forbidden by the agent: bob may not create nodes.pullprobe.io/preflight healthy-a"
        ),
        "{c}"
    );
    assert_eq!(code, 3, "nothing failed, but nothing is known");
    // carol may run pre-flight and list, but not use the pod proxy: the API server refuses.
    api.create_if_missing(
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles"),
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "list-pods", "namespace": NS},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        api.admin_token(),
    );
    bind_user(
        api,
        "carol",
        Some("pullprobe-preflight"),
        Some((NS, "list-pods")),
    );
    let carol = kubeconfig(
        api,
        &api.url(),
        api.user_token("carol"),
        f.dir.path(),
        "carol.kubeconfig",
    );
    let (_, out, _) = preflight(&carol, &[&app, "-o", "json", "--timeout", "4s"]);
    let m: Value = serde_json::from_str(&out).unwrap();
    let c = &row(&m, "healthy-a")["cells"][0];
    assert_eq!(c["reason"], "Forbidden", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("forbidden by the API server")
            && c["message"].as_str().unwrap().contains("pods/proxy"),
        "{c}"
    );
    // dave has nothing: a clear error naming the call, exit 2.
    let dave = kubeconfig(
        api,
        &api.url(),
        api.user_token("dave"),
        f.dir.path(),
        "dave.kubeconfig",
    );
    let (code, out, err) = preflight(&dave, &[&app]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("list nodes") && err.contains("forbidden"),
        "{err}"
    );

    // The agent's endpoints directly (hostNetwork: the node's address): no token 401, a
    // token without the grant 403, the grant 200; /metrics by the non-resource URL rule.
    let addr = format!("{}:9808", f.lab.slots[0].addr);
    assert_eq!(http(&addr, "GET", "/status", None).unwrap().0, 401);
    assert_eq!(
        http(&addr, "GET", "/status", Some("not-a-real-token"))
            .unwrap()
            .0,
        401
    );
    let (st, body) = http(&addr, "GET", "/status", Some(api.user_token("bob"))).unwrap();
    assert_eq!(st, 403, "{body}");
    assert!(
        body.contains("bob may not get nodes.pullprobe.io/status healthy-a"),
        "{body}"
    );
    assert_eq!(
        http(&addr, "GET", "/metrics", Some(api.user_token("bob")))
            .unwrap()
            .0,
        403
    );
    api.create_if_missing(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "scrape"},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
                      {"apiGroups": ["pullprobe.io"], "resources": ["nodes/status"], "verbs": ["get"]}]}),
        api.admin_token(),
    );
    bind_user(api, "dave", Some("scrape"), None);
    let (st, body) = http(&addr, "GET", "/metrics", Some(api.user_token("dave"))).unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("pullprobe_"), "{body}");
    let (st, body) = http(&addr, "GET", "/status", Some(api.user_token("dave"))).unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(!body.contains("s3cret-canary"));

    // An audience-bound token (TokenRequest, audience pullprobe) works for the agents, and
    // the API server itself rejects it.
    let (code, out, err) = preflight(&carol, &[]);
    assert_eq!(code, 2, "no images: usage error\n{out}{err}");
    assert!(err.contains("no images"), "{err}");
    api.create_service_account(NS, "pullprobe-preflight");
    let admin_kc = kubeconfig(
        api,
        &api.url(),
        api.admin_token(),
        f.dir.path(),
        "admin.kubeconfig",
    );
    let (code, out, err) = preflight(
        &admin_kc,
        &[
            &app,
            "-o",
            "json",
            "--timeout",
            "4s",
            "-l",
            "pool=apps",
            "--agent-service-account",
            "pullprobe/pullprobe-preflight",
        ],
    );
    let m: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(row(&m, "healthy-a")["cells"][0]["verdict"], "ready", "{m}");
    assert_eq!(code, 1, "nocreds still cannot pull");
}
