//! KEP-4412 (credential providers with `tokenAttributes`, beta in 1.34) against a REAL
//! kube-apiserver (tests/kube) and REAL registries: the opt-in component
//! `manifests/components/provider-sa-tokens` applied as shipped, the agent minting tokens with
//! TokenRequest as the project's ServiceAccount, and a real plugin (python3) that accepts a token
//! only when the API server's TokenReview authenticates it for the provider's audience as the
//! named ServiceAccount, with the required annotation passed along — as a cloud provider's STS
//! would check it.
//!
//! - provider `sa-provider` (its ServiceAccount named in the agent config, granted by the
//!   component): the agent's image check is `ready` with the plugin's credentials;
//! - provider `forbidden-provider` (named to a ServiceAccount the component does not cover): the
//!   API server refuses the token (403), the image is `ServiceAccountTokenNotReproduced`, and no
//!   Node condition turns True (`fail_after: 1`);
//! - `check --host-root` (no cluster, no tokens) on the same node tree: the provider is "needs a
//!   service-account token: not reproduced".

mod agent_proc;
mod harness;
mod kube;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::agent_proc::{get_json, metric_sum, status_targets, wait_for, write_file, AgentProc};
use crate::harness::runner::{json_lines, run_pullprobe};
use crate::harness::{OciImage, Pki, PushOpts, Registry};
use crate::kube::KubeApiServer;

const NODE: &str = "sa-node";
const AUDIENCE: &str = "registry.test/pullprobe-e2e";
const ANNOTATION: &str = "registry.test/identity";
const SA: &str = "pullprobe-registry-credentials";

/// A credential provider that checks the token as a registry's identity federation would: a
/// TokenReview for its audience must authenticate it as the expected account. Writes each token it
/// accepted to `out` (for the test's own TokenReview).
const PLUGIN: &str = r#"#!/usr/bin/env python3
import json, ssl, sys, urllib.request
cfg = json.load(open(sys.argv[1]))
req = json.load(sys.stdin)
tok = req.get("serviceAccountToken", "")
ann = req.get("serviceAccountAnnotations", {})
review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
          "spec": {"token": tok, "audiences": [cfg["audience"]]}}
r = urllib.request.Request(cfg["api"] + "/apis/authentication.k8s.io/v1/tokenreviews",
    data=json.dumps(review).encode(), method="POST",
    headers={"Authorization": "Bearer " + cfg["admin"], "Content-Type": "application/json"})
st = json.load(urllib.request.urlopen(r, context=ssl.create_default_context(cafile=cfg["ca"])))["status"]
if (not st.get("authenticated") or cfg["audience"] not in st.get("audiences", [])
        or st["user"]["username"] != cfg["username"] or ann.get(cfg["annotation"]) != cfg["value"]):
    sys.stderr.write("token refused\n")
    sys.exit(1)
with open(cfg["out"], "a") as f:
    f.write(tok + "\n")
print(json.dumps({"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
    "kind": "CredentialProviderResponse", "cacheKeyType": "Registry", "cacheDuration": "0s",
    "auth": {cfg["registry"]: {"username": cfg["user"], "password": cfg["password"]}}}))
"#;

fn put(root: &Path, rel: &str, text: &str) -> std::path::PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A TLS registry with basic auth holding `team/app:v1`, trusted by the node tree's certs.d.
fn registry(pki: &Pki, root: &Path, user: &str, pass: &str) -> (Registry, String) {
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[(user, pass)])
        .start();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::tls(pki).creds(user, pass));
    let hp = reg.host_port();
    let certs = root.join("etc/containerd/certs.d").join(&hp);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&pki.ca_cert, certs.join("ca.crt")).unwrap();
    write_file(
        &certs,
        "hosts.toml",
        &format!("server = \"https://{hp}\"\nca = \"/etc/containerd/certs.d/{hp}/ca.crt\"\n"),
    );
    (reg, hp)
}

/// One `tokenAttributes` provider entry of the kubelet's CredentialProviderConfig.
fn provider(name: &str, host: &str, args: &Path) -> String {
    format!(
        "  - name: {name}\n    matchImages: [\"{host}\"]\n    defaultCacheDuration: 1m\n    \
         apiVersion: credentialprovider.kubelet.k8s.io/v1\n    args: [\"{}\"]\n    \
         tokenAttributes:\n      serviceAccountTokenAudience: {AUDIENCE}\n      \
         cacheType: ServiceAccount\n      requireServiceAccount: true\n      \
         requiredServiceAccountAnnotationKeys: [\"{ANNOTATION}\"]\n",
        args.display()
    )
}

/// A TokenReview of `token` for `audience`, as the cluster admin: (authenticated, username).
fn review(api: &KubeApiServer, token: &str, audience: &str) -> (bool, String) {
    let v = api.must(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        api.admin_token(),
        Some(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                     "spec": {"token": token, "audiences": [audience]}}),
        ),
    );
    (
        v["status"]["authenticated"] == true,
        v["status"]["user"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn image_row(port: u16, hp: &str) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("the image check of {hp} on /status"),
        || {
            status_targets(&get_json(port, "/status"))
                .into_iter()
                .find(|(k, v)| {
                    k.starts_with("image ") && k.contains(hp) && v["verdict"] != "unknown"
                })
                .map(|(_, v)| v)
        },
    )
}

#[test]
fn provider_tokens_minted_for_the_named_account_only() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let agent_token = api.apply_project_rbac();
    // The component, as shipped (its resources; tests/manifests.rs renders it with kustomize).
    api.apply_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/components/provider-sa-tokens/sa-tokens.yaml"),
    );
    // The operator trusts the account in the registry's federation: the annotation it requires.
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/namespaces/pullprobe/serviceaccounts/{SA}"),
            &admin,
            "application/merge-patch+json",
            Some(&json!({"metadata": {"annotations": {ANNOTATION: "pullprobe-e2e"}}}).to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // A workload's account, which the component must not let the agent act as.
    api.create_service_account("apps", "builder");
    // Least privilege, on the real server: a token for the named account, none for any other.
    let token_for = |ns: &str, name: &str| {
        api.request(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
            &agent_token,
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"audiences": [AUDIENCE], "expirationSeconds": 600}}),
            ),
        )
        .unwrap()
        .status
    };
    assert_eq!(token_for("pullprobe", SA), 201);
    assert_eq!(token_for("pullprobe", "pullprobe"), 403);
    assert_eq!(token_for("apps", "builder"), 403);
    assert_eq!(token_for("apps", "default"), 403);
    api.must(
        "POST",
        "/api/v1/nodes",
        &admin,
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );

    // The node: two registries, each served by a tokenAttributes provider.
    let pki = Pki::new();
    let root = agent_proc::host_root();
    let r = root.path();
    put(
        r,
        "etc/containerd/config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    );
    let (_reg_a, hp_a) = registry(&pki, r, "fed-a", "pass-a");
    let (_reg_b, hp_b) = registry(&pki, r, "fed-b", "pass-b");
    let accepted = r.join("accepted-tokens");
    let plugin_cfg = |host: &str, user: &str, pass: &str| {
        let p = r.join(format!("plugin-{user}.json"));
        std::fs::write(
            &p,
            json!({"api": api.url(), "ca": api.ca_path(), "admin": admin, "audience": AUDIENCE,
                   "username": format!("system:serviceaccount:pullprobe:{SA}"),
                   "annotation": ANNOTATION, "value": "pullprobe-e2e", "out": accepted,
                   "registry": host, "user": user, "password": pass})
            .to_string(),
        )
        .unwrap();
        p
    };
    let cfg_a = plugin_cfg(&hp_a, "fed-a", "pass-a");
    let cfg_b = plugin_cfg(&hp_b, "fed-b", "pass-b");
    put(
        r,
        "etc/systemd/system/kubelet.service",
        "[Service]\nExecStart=/usr/bin/kubelet --image-credential-provider-config=/etc/kubernetes/cp.yaml --image-credential-provider-bin-dir=/opt/cp/bin\n",
    );
    put(
        r,
        "etc/kubernetes/cp.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n{}{}",
            provider("sa-provider", &hp_a, &cfg_a),
            provider("forbidden-provider", &hp_b, &cfg_b)
        ),
    );
    for name in ["sa-provider", "forbidden-provider"] {
        let p = put(r, &format!("opt/cp/bin/{name}"), PLUGIN);
        Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    }
    let image_a = format!("{hp_a}/team/app:v1");
    let image_b = format!("{hp_b}/team/app:v1");

    // Without a cluster nothing mints tokens: not reproduced, named as such.
    let out = run_pullprobe(
        &[
            "check",
            "--json",
            "--host-root",
            r.to_str().unwrap(),
            &image_a,
        ],
        None,
    );
    let c = json_lines(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no check output: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(c["reason"], "ServiceAccountTokenNotReproduced", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("needs a service-account token"),
        "{c}"
    );
    assert!(!accepted.exists(), "the plugin ran without a token");

    // The agent, as the project's ServiceAccount, naming an account for each provider.
    let cfg = write_file(
        r,
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nfail_after: 1\nrecover_after: 1\nfleet:\n  node_count: 1\n  \
             period: 10s\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n  - \"{image_a}\"\n  - \
             \"{image_b}\"\nnode:\n  credential_provider_service_accounts:\n    sa-provider: \
             {{namespace: pullprobe, name: {SA}}}\n    forbidden-provider: {{namespace: apps, \
             name: builder}}\n"
        ),
    );
    let kubeconfig = api.write_kubeconfig(&agent_token);
    let mut agent = AgentProc::spawn(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        r.to_str().unwrap(),
    ]);
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    agent.wait_ready(Duration::from_secs(30));
    let port = agent.port;

    let a = image_row(port, &hp_a);
    assert_eq!(a["verdict"], "ready", "{a}");
    assert_eq!(
        a["credential_source"],
        format!("plugin:sa-provider#{hp_a}"),
        "{a}"
    );
    // What the plugin accepted is a real token of the named account for the audience only.
    let tokens = std::fs::read_to_string(&accepted).unwrap();
    let token = tokens.lines().next().unwrap();
    let user = format!("system:serviceaccount:pullprobe:{SA}");
    assert_eq!(review(&api, token, AUDIENCE), (true, user));
    assert!(!review(&api, token, "some-other-audience").0);

    let b = image_row(port, &hp_b);
    assert_eq!(b["reason"], "ServiceAccountTokenNotReproduced", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("apps/builder"),
        "{b}"
    );
    // Two more cycles with B not reproduced: no Node condition turns True for it.
    let cycles = |port| {
        metric_sum(
            &agent_proc::http_get(port, "/metrics").unwrap().1,
            "pullprobe_cycles_total",
        )
    };
    let seen = cycles(port);
    wait_for(Duration::from_secs(20), "two more cycles", || {
        (cycles(port) >= seen + 2.0).then_some(())
    });
    let node = api.must("GET", &format!("/api/v1/nodes/{NODE}"), &admin, None);
    for c in node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(c["status"], "False", "{c}");
    }
    assert!(
        node["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "RegistryAuthFailing")),
        "{node}"
    );
    // The token never leaves through the agent's channels.
    let status = get_json(port, "/status").to_string();
    let metrics = agent_proc::http_get(port, "/metrics").unwrap().1;
    for (what, text) in [
        ("/status", status),
        ("/metrics", metrics),
        ("log", agent.log_text()),
    ] {
        assert!(!text.contains(token), "the token leaked through {what}");
    }
}
