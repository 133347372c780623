//! `pullprobe plan --host-root` on k3s nodes: a node where k3s has rendered its
//! containerd files (fixture tests/fixtures/hostroots/k3s-node), and a node with only
//! `registries.yaml` (k3s not started), where the plan comes from k3s's translation.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostroots/k3s-node")
}

fn plan(root: &Path, image: &str, json: bool) -> (String, bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullprobe"));
    cmd.args(["plan", "--host-root"]).arg(root).arg(image);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    let mut s = String::from_utf8(out.stdout).unwrap();
    s.push_str(&String::from_utf8(out.stderr).unwrap());
    (s, out.status.success())
}

fn endpoints(json: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["endpoints"].as_array().unwrap().clone()
}

#[test]
fn rendered_k3s_node_uses_rendered_files() {
    let root = fixture_root();
    let (out, ok) = plan(&root, "docker.io/rancher/mirrored-pause:3.6", true);
    assert!(ok, "{out}");
    assert!(!out.contains("fixture-password-never-printed"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["host_dir"],
        "/var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io"
    );
    assert!(v["runtime_error"].is_null(), "{out}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{out}");
    let eps = endpoints(&out);
    assert_eq!(eps.len(), 2, "{out}");
    assert_eq!(eps[0]["api_root"], "https://registry.example.com:5000/v2");
    assert_eq!(eps[0]["namespace"], "docker.io");
    assert_eq!(eps[0]["tls"]["skip_verify"], true);
    assert_eq!(
        eps[0]["repository"],
        "mirrorproject/rancher-images/mirrored-pause"
    );
    assert_eq!(eps[1]["api_root"], "https://registry-1.docker.io/v2");
    assert_eq!(eps[1]["is_upstream"], true);
    assert!(eps[1]["repository"].is_null());
    let findings = v["findings"].to_string();
    assert!(findings.contains("k3s rendered"), "{findings}");
    // k3s's containerd honours `rewrite`: no "containerd ignores" note for it.
    assert!(!findings.contains("ignores these keys"), "{findings}");

    // Text output names the runtime credential's user, never its password.
    let (text, ok) = plan(&root, "docker.io/rancher/mirrored-pause:3.6", false);
    assert!(ok, "{text}");
    assert!(text.contains("runtime credential: mirror-user"), "{text}");
    assert!(!text.contains("fixture-password-never-printed"));
}

#[test]
fn registries_yaml_only_node_is_translated() {
    let d = tempfile::tempdir().unwrap();
    let reg = d.path().join("etc/rancher/k3s/registries.yaml");
    std::fs::create_dir_all(reg.parent().unwrap()).unwrap();
    std::fs::copy(fixture_root().join("etc/rancher/k3s/registries.yaml"), &reg).unwrap();
    let (out, ok) = plan(d.path(), "docker.io/rancher/mirrored-pause:3.6", true);
    assert!(ok, "{out}");
    assert!(!out.contains("fixture-password-never-printed"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Same plan as the rendered node.
    let eps = endpoints(&out);
    assert_eq!(eps.len(), 2, "{out}");
    assert_eq!(eps[0]["api_root"], "https://registry.example.com:5000/v2");
    assert_eq!(eps[0]["tls"]["skip_verify"], true);
    assert_eq!(
        eps[0]["repository"],
        "mirrorproject/rancher-images/mirrored-pause"
    );
    assert_eq!(eps[1]["api_root"], "https://registry-1.docker.io/v2");
    let findings = v["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["kind"] == "assumption"
            && f["message"]
                .as_str()
                .unwrap()
                .contains("has not rendered its containerd config")),
        "{out}"
    );
    let (text, _) = plan(d.path(), "nginx", false);
    assert!(text.contains("runtime credential: mirror-user"), "{text}");
}
