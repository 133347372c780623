//! manifests/crds/pullprobe.io.yaml on the real kube-apiserver: the CRDs apply and become
//! Established, their schemas accept what pullprobe writes and refuse what they bound
//! (too many images, an unknown workload kind, an over-long reference), the status is a
//! subresource (a spec write cannot set it), and the printer columns show the summary.

mod kube;

use std::process::Command;

use serde_json::json;

use crate::kube::{kube_binary_path, KubeApiServer};

const IPF: &str = "/apis/pullprobe.io/v1alpha1/namespaces/team/imagepreflights";
const NPS: &str = "/apis/pullprobe.io/v1alpha1/nodepullstatuses";

fn preflight(name: &str, images: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "ImagePreflight",
           "metadata": {"name": name, "namespace": "team"},
           "spec": {"images": images}})
}

#[test]
fn crds_apply_validate_and_print() {
    let api = KubeApiServer::start();
    api.apply_crds();
    api.create_namespace("team");
    let admin = api.admin_token();

    // What the CLI writes is accepted; a status in a create is dropped (subresource).
    let mut ok = preflight("ok", json!(["registry.example/app:v2"]));
    ok["status"] =
        json!({"summary": {"nodes": 9, "ready": 9, "degraded": 0, "notReady": 0, "unknown": 0}});
    let created = api.must("POST", IPF, admin, Some(&ok));
    assert!(
        created
            .get("status")
            .is_none_or(|s| s.get("summary").is_none()),
        "{created}"
    );

    // Bounds in the schema: 101 images, a 600-character reference, an unknown kind.
    let many: Vec<String> = (0..101).map(|i| format!("r.example/a:{i}")).collect();
    for (name, body) in [
        ("many", preflight("many", json!(many))),
        (
            "long",
            preflight("long", json!([format!("r.example/{}", "a".repeat(600))])),
        ),
        ("kind", {
            let mut b = preflight("kind", json!([]));
            b["spec"]["workloadRef"] = json!({"kind": "Secret", "name": "x"});
            b
        }),
    ] {
        let r = api.request("POST", IPF, admin, Some(&body)).unwrap();
        assert_eq!(r.status, 422, "{name}: {}", r.body);
    }

    // The controller's status write through the subresource, shown by the printer columns.
    let status = json!({"status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "NodesCannotPull",
                        "message": "12 of 40 nodes cannot pull", "lastTransitionTime": "2026-12-07T10:00:00Z"}],
        "images": ["registry.example/app:v2"],
        "summary": {"nodes": 40, "ready": 28, "degraded": 0, "notReady": 12, "unknown": 0},
        "rows": [{"nodes": ["n1"], "cells": [{"verdict": "not_ready", "reason": "ManifestUnknown", "message": "m"}]}]
    }});
    let r = api
        .request_with(
            "PATCH",
            &format!("{IPF}/ok/status"),
            admin,
            "application/merge-patch+json",
            Some(&status.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let kubeconfig = api.write_kubeconfig(admin);
    let out = Command::new(kube_binary_path("kubectl"))
        .args(["get", "imagepreflights", "-n", "team"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = table.lines().next().unwrap_or_default();
    for col in ["READY", "NODES", "CANNOT-PULL", "UNKNOWN", "REASON", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("False")
            && row.contains("40")
            && row.contains("12")
            && row.contains("NodesCannotPull"),
        "{table}"
    );

    // NodePullStatus: cluster-scoped, named after the node; status only via the subresource.
    let nps = json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
        "metadata": {"name": "node-a"},
        "spec": {"assignments": [{"id": "a1", "depth": "Image", "images": ["r.example/a:1"],
                                   "namespace": "team", "issuedAt": "2026-12-07T10:00:00Z"}]}});
    api.must("POST", NPS, admin, Some(&nps));
    let bad = json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
        "metadata": {"name": "node-b"},
        "spec": {"assignments": [{"id": "a1", "depth": "Everything", "images": ["r.example/a:1"],
                                   "namespace": "team", "issuedAt": "x"}]}});
    assert_eq!(
        api.request("POST", NPS, admin, Some(&bad)).unwrap().status,
        422
    );
    let agent_status = json!({"status": {"agentVersion": "0.1.0", "runtime": "containerd 1.7.24",
        "intervalSeconds": 60, "registriesTotal": 1, "registriesFailing": 1,
        "heartbeatTime": "2026-12-07T10:00:00Z",
        "registries": [{"registry": "r.example", "fingerprint": "f1", "state": "failing",
                        "cell": {"verdict": "not_ready", "reason": "DnsNxDomain", "message": "m"},
                        "checkedAt": "2026-12-07T10:00:00Z"}]}});
    let r = api
        .request_with(
            "PATCH",
            &format!("{NPS}/node-a/status"),
            admin,
            "application/merge-patch+json",
            Some(&agent_status.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let out = Command::new(kube_binary_path("kubectl"))
        .args(["get", "nodepullstatuses"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("FAILING") && table.contains("containerd 1.7.24"),
        "{table}"
    );
}
