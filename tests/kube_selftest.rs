//! Self-tests of the real Kubernetes API server harness (tests/kube): what the agent's tests rely on.

mod kube;

use crate::kube::KubeApiServer;
use serde_json::json;

const SMP: &str = "application/strategic-merge-patch+json";

fn node(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn condition(kind: &str, status: &str, reason: &str) -> serde_json::Value {
    json!({"type": kind, "status": status, "reason": reason, "message": "selftest",
           "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
fn node_status_patch_respects_node_restriction() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    assert!(api.url().starts_with("https://127.0.0.1:"));
    assert!(api.ca_pem().contains("BEGIN CERTIFICATE"));

    let v = api.must("GET", "/version", &admin, None);
    assert_eq!(v["gitVersion"], crate::kube::KUBE_VERSION);

    api.must("POST", "/api/v1/nodes", &admin, Some(&node("node-a")));
    api.must("POST", "/api/v1/nodes", &admin, Some(&node("node-b")));

    // Another writer's condition first (as node-a itself, like the kubelet would).
    let other = json!({"status": {"conditions": [condition("Ready", "True", "KubeletReady")]}});
    let r = api
        .request_with(
            "PATCH",
            "/api/v1/nodes/node-a/status",
            api.node_token("node-a"),
            SMP,
            Some(&other.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // Our condition as node-a: strategic merge merges `conditions` by `type`.
    let ours =
        json!({"status": {"conditions": [condition("RegistryUnreachable", "True", "DNSFailure")]}});
    let r = api
        .request_with(
            "PATCH",
            "/api/v1/nodes/node-a/status",
            api.node_token("node-a"),
            SMP,
            Some(&ours.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let n = api.must("GET", "/api/v1/nodes/node-a", &admin, None);
    let mut types: Vec<String> = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["Ready", "RegistryUnreachable"]);

    // node-b's identity may not touch node-a's status (NodeRestriction + Node authorizer).
    let r = api
        .request_with(
            "PATCH",
            "/api/v1/nodes/node-a/status",
            api.node_token("node-b"),
            SMP,
            Some(&ours.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 403, "{r:?}");

    // Audit log records each write with the user and the subresource.
    // The log backend may write just after the response: wait until the last request (the 403)
    // is in, so the count below is exact.
    let ev = api.wait_for_audit(std::time::Duration::from_secs(5), |ev| {
        ev.iter().any(|e| {
            e["user"]["username"] == "system:node:node-b" && e["responseStatus"]["code"] == 403
        })
    });
    assert!(
        ev.iter()
            .any(|e| e["user"]["username"] == "system:node:node-b"),
        "denied request not audited"
    );
    let writes = api.audit_writes_by("system:node:node-a");
    let status_patches = writes
        .iter()
        .filter(|e| e["verb"] == "patch" && e["objectRef"]["subresource"] == "status")
        .count();
    assert_eq!(status_patches, 2, "{writes:#?}");
}

#[test]
fn service_account_tokens_kube_client_and_restart() {
    let mut api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let sa = api.create_service_account("selftest", "agent");
    assert!(sa.split('.').count() == 3, "a JWT");

    // The SA authenticates as itself and has no rights without bindings.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": sa}});
    let v = api.must(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &admin,
        Some(&review),
    );
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:selftest:agent"
    );
    let r = api.request("GET", "/api/v1/nodes", &sa, None).unwrap();
    assert_eq!(r.status, 403, "{r:?}");

    // kube::Client (ring TLS) works against it.
    api.must("POST", "/api/v1/nodes", &admin, Some(&node("node-c")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = rt.block_on(async {
        let client = api.client(&admin);
        let nodes: ::kube::Api<k8s_openapi::api::core::v1::Node> = ::kube::Api::all(client);
        nodes.get("node-c").await.unwrap().metadata.name.unwrap()
    });
    assert_eq!(name, "node-c");

    // Kubeconfig file for child processes: kube's own loader (what `Config::infer()` uses with
    // KUBECONFIG) accepts it, and the SA token in it authenticates.
    let kc = api.write_kubeconfig(&sa);
    let user = rt.block_on(async {
        let file = ::kube::config::Kubeconfig::read_from(&kc).unwrap();
        let cfg = ::kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        let client = ::kube::Client::try_from(cfg).unwrap();
        let nodes: ::kube::Api<k8s_openapi::api::core::v1::Node> = ::kube::Api::all(client);
        match nodes.get("node-c").await {
            Err(::kube::Error::Api(s)) => s.message,
            other => panic!("expected 403 for the unbound SA, got {other:?}"),
        }
    });
    assert!(
        user.contains("system:serviceaccount:selftest:agent"),
        "{user}"
    );

    // Stop and restart: same URL, state kept in etcd.
    let url = api.url();
    api.stop_apiserver();
    assert!(api.request("GET", "/readyz", &admin, None).is_err());
    api.start_apiserver();
    assert_eq!(api.url(), url);
    api.must("GET", "/api/v1/nodes/node-c", &admin, None);
    // A TokenRequest token survives the restart (same signing key).
    let r = api
        .request("GET", "/apis/authorization.k8s.io/v1", &sa, None)
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}
