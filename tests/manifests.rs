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

use crate::kube::KubeApiServer;
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
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));

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
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let cfg_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/pullprobe")
        .unwrap();
    let cfg_vol = volumes
        .iter()
        .find(|v| v["name"] == cfg_mount["name"])
        .unwrap();
    let cm_name = cfg_vol["configMap"]["name"].as_str().unwrap();
    let cm = find(&all, "ConfigMap", cm_name);
    let cfg_text = cm["data"]["pullprobe.yaml"]
        .as_str()
        .expect("pullprobe.yaml key");

    // The ConfigMap's config is accepted by the agent's own parser, and its port is the probes'.
    let cfg = pullprobe::agent::config::AgentConfig::parse(
        cfg_text,
        pullprobe::agent::config::ConfigFormat::Yaml,
        Path::new("configmap.yaml:pullprobe.yaml"),
    )
    .expect("default config in the ConfigMap is valid");
    assert_eq!(cfg.interval.as_secs(), 60);
    assert_eq!(cfg.heartbeat.as_secs(), 300);
    assert_eq!((cfg.fail_after, cfg.recover_after), (2, 1));
    assert!(cfg.images.is_empty());
    assert!(!cfg.pull_secrets, "Secret reading is opt-in");
    let port = cfg.listen.port();
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);

    // NODE_NAME from the downward API.
    let env = c["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    // Hardening and resources.
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

    // Every hostPath is mounted read-only, under the --host-root, at its node path.
    let mut host_paths = BTreeSet::new();
    for v in volumes.iter().filter(|v| !v["hostPath"].is_null()) {
        let path = v["hostPath"]["path"].as_str().unwrap();
        host_paths.insert(path.to_string());
        let m = mounts
            .iter()
            .find(|m| m["name"] == v["name"])
            .unwrap_or_else(|| panic!("hostPath volume {} not mounted", v["name"]));
        assert_eq!(m["readOnly"], true, "{m}");
        assert_eq!(m["mountPath"], format!("/host{path}"), "{m}");
    }
    for needed in ["/etc", "/var/lib/kubelet"] {
        assert!(
            host_paths.contains(needed),
            "{needed} not mounted: {host_paths:?}"
        );
    }
    // Nothing under /host is writable; no other volume types sneak in.
    for m in mounts {
        assert_eq!(m["readOnly"], true, "{m}");
    }
}

// ---------------------------------------------------------------------------------------------
// (b) RBAC against a real API server

/// Map a manifest to its collection URL on the API server.
fn collection(doc: &Value) -> String {
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    match doc["kind"].as_str().unwrap() {
        "Namespace" => "/api/v1/namespaces".into(),
        "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        "ConfigMap" => format!("/api/v1/namespaces/{ns}/configmaps"),
        "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
        "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
        "PriorityClass" => "/apis/scheduling.k8s.io/v1/priorityclasses".into(),
        "DaemonSet" => format!("/apis/apps/v1/namespaces/{ns}/daemonsets"),
        k => panic!("no collection known for kind {k}"),
    }
}

fn apply(api: &KubeApiServer, doc: &Value) {
    let r = api
        .request("POST", &collection(doc), api.admin_token(), Some(doc))
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
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
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
    let admin = api.admin_token().to_string();
    // Apply everything the kustomization deploys, in order (a real 1.20 server validates the
    // DaemonSet, PriorityClass, ConfigMap, … server-side too).
    for d in kustomized() {
        apply(&api, &d);
    }
    api.create_namespace("team-a");
    let token = api.service_account_token(NS, SA, 3600);

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
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                        "spec": {"namespace": "team-a"}});
    let v = api.must(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        &token,
        Some(&review),
    );
    let mut granted = BTreeSet::new();
    for rule in v["status"]["resourceRules"].as_array().unwrap() {
        assert!(
            rule["resourceNames"].is_null(),
            "unexpected resourceNames: {rule}"
        );
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                let (g, r) = (g.as_str().unwrap(), r.as_str().unwrap());
                if is_default_rule(g, r) {
                    continue;
                }
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!("{verb} {g}/{r}", verb = verb.as_str().unwrap()));
                }
            }
        }
    }
    let expected: BTreeSet<String> = USED
        .iter()
        .map(|(verb, g, r, _)| format!("{verb} {g}/{r}"))
        .collect();
    assert_eq!(granted, expected, "rules review: {v}");

    // And the real calls work with the ServiceAccount's token (not only the reviews).
    api.must(
        "POST",
        "/api/v1/nodes",
        &admin,
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})),
    );
    let ok = |method: &str, path: &str, ct: &str, body: Option<&str>| {
        let r = api.request_with(method, path, &token, ct, body).unwrap();
        assert!((200..300).contains(&r.status), "{method} {path}: {r:?}");
        r
    };
    ok("GET", "/api/v1/nodes/node-a", "", None);
    let cond = json!({"status": {"conditions": [{"type": "RegistryUnreachable", "status": "False",
        "reason": "RegistriesReachable", "message": "ok",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    ok(
        "PATCH",
        "/api/v1/nodes/node-a/status",
        "application/strategic-merge-patch+json",
        Some(&cond.to_string()),
    );
    ok(
        "GET",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a",
        "",
        None,
    );
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "node-a.pullprobe.1", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "node-a", "uid": "node-a"},
        "reason": "RegistryUnreachable", "message": "m", "type": "Warning", "count": 1,
        "source": {"component": "pullprobe", "host": "node-a"}});
    ok(
        "POST",
        "/api/v1/namespaces/default/events",
        "application/json",
        Some(&event.to_string()),
    );
    ok(
        "PATCH",
        "/api/v1/namespaces/default/events/node-a.pullprobe.1",
        "application/merge-patch+json",
        Some(r#"{"count": 2}"#),
    );
    let denied = |method: &str, path: &str| {
        let r = api.request(method, path, &token, None).unwrap();
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    };
    denied("GET", "/api/v1/namespaces/team-a/secrets");
    denied(
        "GET",
        "/api/v1/namespaces/pullprobe/configmaps/pullprobe-config",
    );
    denied("DELETE", "/api/v1/nodes/node-a");
}

#[test]
fn optional_secrets_reader_grants_get_secrets_only() {
    let api = KubeApiServer::start();
    for d in kustomized() {
        apply(&api, &d);
    }
    api.create_namespace("team-a");
    let token = api.service_account_token(NS, SA, 3600);
    assert!(!can(&api, &token, "get", "", "secrets", Some("team-a")));
    for d in docs(&repo().join("manifests/optional/secrets-reader.yaml")) {
        apply(&api, &d);
    }
    assert!(can(&api, &token, "get", "", "secrets", Some("team-a")));
    for verb in ["list", "watch", "create", "update", "patch", "delete"] {
        assert!(
            !can(&api, &token, verb, "", "secrets", Some("team-a")),
            "{verb} secrets must stay denied"
        );
    }
    // A real read of a pull secret works.
    api.must(
        "POST",
        "/api/v1/namespaces/team-a/secrets",
        api.admin_token(),
        Some(&json!({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "regcred", "namespace": "team-a"},
                     "type": "kubernetes.io/dockerconfigjson",
                     "data": {".dockerconfigjson": "e30="}})),
    );
    let r = api
        .request(
            "GET",
            "/api/v1/namespaces/team-a/secrets/regcred",
            &token,
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// examples/

/// A minimal CRD for NodeReadinessRule (readiness.node.x-k8s.io/v1alpha1), written here from the
/// controller's documented API: the fields our example uses, with their enums and required
/// lists, so the real API server validates the example structurally. The controller's webhook
/// rules (non-empty nodeSelector, known enforcementMode) are asserted separately.
fn node_readiness_rule_crd() -> Value {
    json!({
      "apiVersion": "apiextensions.k8s.io/v1",
      "kind": "CustomResourceDefinition",
      "metadata": {"name": "nodereadinessrules.readiness.node.x-k8s.io"},
      "spec": {
        "group": "readiness.node.x-k8s.io",
        "scope": "Cluster",
        "names": {"kind": "NodeReadinessRule", "listKind": "NodeReadinessRuleList",
                  "plural": "nodereadinessrules", "singular": "nodereadinessrule"},
        "versions": [{
          "name": "v1alpha1", "served": true, "storage": true,
          "schema": {"openAPIV3Schema": {
            "type": "object", "required": ["spec"],
            "properties": {
              "apiVersion": {"type": "string"}, "kind": {"type": "string"},
              "metadata": {"type": "object"},
              "spec": {
                "type": "object", "required": ["conditions", "nodeSelector", "taint"],
                "properties": {
                  "conditions": {"type": "array", "minItems": 1, "maxItems": 32, "items": {
                    "type": "object", "required": ["type", "requiredStatus"],
                    "properties": {
                      "type": {"type": "string", "minLength": 1, "maxLength": 316},
                      "requiredStatus": {"type": "string", "enum": ["True", "False", "Unknown"]}}}},
                  "dryRun": {"type": "boolean"},
                  "enforcementMode": {"type": "string", "enum": ["bootstrap-only", "continuous"]},
                  "nodeSelector": {"type": "object", "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "matchExpressions": {"type": "array", "items": {
                      "type": "object", "required": ["key", "operator"],
                      "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                                     "values": {"type": "array", "items": {"type": "string"}}}}}}},
                  "taint": {"type": "object", "required": ["key", "effect"], "properties": {
                    "key": {"type": "string"}, "value": {"type": "string"},
                    "effect": {"type": "string",
                               "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}}}}}}}
        }]
      }
    })
}

#[test]
fn node_readiness_rule_example_is_accepted_by_a_real_apiserver() {
    let path = repo().join("examples/node-readiness-rule.yaml");
    let d = docs(&path);
    assert_eq!(d.len(), 1);
    let rule = &d[0];
    assert_eq!(rule["apiVersion"], "readiness.node.x-k8s.io/v1alpha1");
    assert_eq!(rule["kind"], "NodeReadinessRule");
    // Our conditions, True = problem, so the rule requires False for both.
    let conds: BTreeSet<(String, String)> = rule["spec"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["requiredStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = pullprobe::agent::conditions::ConditionKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), "False".to_string()))
        .collect();
    assert_eq!(conds, expected);
    // The controller's admission webhook rules.
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
    assert!(matches!(
        rule["spec"]["enforcementMode"].as_str(),
        Some("bootstrap-only" | "continuous")
    ));

    // Structural validation by a real API server.
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    api.must(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &admin,
        Some(&node_readiness_rule_crd()),
    );
    let coll = "/apis/readiness.node.x-k8s.io/v1alpha1/nodereadinessrules";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let created = loop {
        let r = api.request("POST", coll, &admin, Some(rule)).unwrap();
        if r.status == 201 || std::time::Instant::now() > deadline {
            break r;
        }
        assert!(r.status == 404 || r.status == 503, "{r:?}"); // CRD not established yet
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(created.status, 201, "{created:?}");
    // Nothing was pruned: the stored spec is the example's spec.
    assert_eq!(created.json()["spec"], rule["spec"]);
    // And the schema really bites (a bad requiredStatus is rejected).
    let mut bad = rule.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["conditions"][0]["requiredStatus"] = json!("false");
    let r = api.request("POST", coll, &admin, Some(&bad)).unwrap();
    assert_eq!(r.status, 422, "{r:?}");
}

/// Metric names in the alert example must be ones the agent really exports.
#[test]
fn alert_example_uses_only_exported_metrics() {
    let path = repo().join("examples/npd-alert.yaml");
    let d = docs(&path);
    let rule = d
        .iter()
        .find(|x| x["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    assert!(d.iter().any(|x| x["kind"] == "PodMonitor"));
    // Metric families the agent registers (src/agent/metrics.rs, prefix `pullprobe`): an empty
    // family is not in the exposition until it has samples, so read the registrations. Counters are
    // exposed as NAME_total and histograms as NAME_bucket/_sum/_count.
    let src = std::fs::read_to_string(repo().join("src/agent/metrics.rs")).unwrap();
    let mut exported = BTreeSet::new();
    for (i, _) in src.match_indices("register(") {
        let rest = src[i + "register(".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('"') else {
            continue;
        };
        let name = format!("pullprobe_{}", &rest[..rest.find('"').unwrap()]);
        for s in ["", "_total", "_bucket", "_sum", "_count"] {
            exported.insert(format!("{name}{s}"));
        }
    }
    // Sanity: the registrations seen include what a fresh registry really exposes.
    for l in pullprobe::agent::metrics::Metrics::new()
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
    {
        let name = l.split_whitespace().next().unwrap();
        assert!(exported.contains(name), "{name} missing from {exported:?}");
    }
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            alerts += 1;
            let expr = r["expr"].as_str().unwrap();
            let mut used = 0;
            for (i, _) in expr.match_indices("pullprobe_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "alert {} uses {name}, not exported; exported: {exported:?}",
                    r["alert"]
                );
                used += 1;
            }
            assert!(used > 0, "alert {} uses no pullprobe metric", r["alert"]);
            // Condition labels are the agent's condition types.
            for (i, _) in expr.match_indices("condition=\"") {
                let v: String = expr[i + 11..].chars().take_while(|c| *c != '"').collect();
                assert!(
                    pullprobe::agent::conditions::ConditionKind::from_type(&v).is_some(),
                    "unknown condition {v}"
                );
            }
        }
    }
    assert!(alerts >= 2);
}
