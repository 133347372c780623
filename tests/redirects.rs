//! Redirects the way Go's `http.Client` (and so containerd) follows them, over real
//! sockets: hosts.toml `[header]` values reach every hop, except the sensitive ones
//! (Authorization, Cookie, …) once a hop leaves the registry's domain; only http and
//! https targets; presigned blob URLs never appear in any output.

mod harness;

use std::sync::{Arc, Mutex};

use harness::*;
use serde_json::Value;

const SIGNATURE: &str = "canary-sig-5aa1";
const HEADER_TOKEN: &str = "canary-hdr-c0ffee";

/// A registry (plain HTTP) serving one OCI manifest whose config blob redirects to
/// `location(config_digest)`.
fn registry(location: impl Fn(&str) -> String + Send + Sync + 'static) -> ScriptedServer {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = sha256_digest(config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": []
    })
    .to_string();
    ScriptedServer::start(move |r| {
        if r.path.contains("/manifests/") {
            Reply::status(200)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Distribution-API-Version", "registry/2.0")
                .body(if r.method == "HEAD" {
                    Vec::new()
                } else {
                    manifest.clone().into_bytes()
                })
        } else if r.path.contains("/blobs/") {
            Reply::redirect(307, &location(&config_digest))
        } else {
            Reply::v2_ok()
        }
    })
}

/// A node whose hosts.toml for `registry.test:PORT` sets three headers, with every test
/// name resolving to loopback through the node's /etc/hosts.
fn host_root(reg_port: u16) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let certs = r.join(format!("etc/containerd/certs.d/registry.test:{reg_port}"));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        r.join("etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    std::fs::write(
        certs.join("hosts.toml"),
        format!(
            "server = \"http://registry.test:{reg_port}\"\n[header]\n  X-Mirror-Tenant = \"team-a\"\n  Authorization = \"Bearer {HEADER_TOKEN}\"\n  Cookie = \"session={HEADER_TOKEN}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        r.join("etc/hosts"),
        "127.0.0.1 localhost registry.test cdn.registry.test cdn.other.test\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/resolv.conf"),
        "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    root
}

fn check(reg: &ScriptedServer) -> (Value, String) {
    let root = host_root(reg.port());
    let image = format!("registry.test:{}/demo/app:v1", reg.port());
    let out = run_pullprobe_env(
        &[
            "check",
            "--json",
            "-v",
            "--host-root",
            root.path().to_str().unwrap(),
            "--runtime",
            "containerd",
            "--platform",
            "linux/amd64",
            &image,
        ],
        None,
        &[("RUST_LOG", "trace")],
    );
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SIGNATURE), "presigned URL leaked:\n{all}");
    assert!(
        !all.contains(HEADER_TOKEN),
        "hosts.toml header leaked:\n{all}"
    );
    let line = json_lines(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no JSON line:\n{all}"));
    (line, all)
}

/// Which of the hosts.toml headers the blob host received.
fn seen_headers(cdn: &ScriptedServer) -> Vec<&'static str> {
    let reqs = cdn.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    let mut out = Vec::new();
    if r.header("x-mirror-tenant") == Some("team-a") {
        out.push("X-Mirror-Tenant");
    }
    if r.header("authorization") == Some(&format!("Bearer {HEADER_TOKEN}")) {
        out.push("Authorization");
    }
    if r.header("cookie") == Some(&format!("session={HEADER_TOKEN}")) {
        out.push("Cookie");
    }
    out
}

#[test]
fn hosts_toml_headers_follow_redirects_like_go() {
    for (target, want) in [
        // Another domain: Go drops Authorization / Cookie, keeps the rest.
        ("cdn.other.test", vec!["X-Mirror-Tenant"]),
        // A subdomain of the registry's host, and the same host on another port: copied.
        (
            "cdn.registry.test",
            vec!["X-Mirror-Tenant", "Authorization", "Cookie"],
        ),
        (
            "registry.test",
            vec!["X-Mirror-Tenant", "Authorization", "Cookie"],
        ),
    ] {
        let cdn = ScriptedServer::start(|_| Reply::status(200));
        let cdn_port = cdn.port();
        let reg = registry(move |d| {
            format!(
                "http://{target}:{cdn_port}/blobs/{d}?X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={SIGNATURE}"
            )
        });
        let (line, _) = check(&reg);
        assert_eq!(line["verdict"], "ready", "{target}: {line:#}");
        assert_eq!(seen_headers(&cdn), want, "{target}");
        assert!(
            cdn.requests()[0].path.contains(SIGNATURE),
            "the presigned query is really sent"
        );
    }
}

/// Once a hop has left the domain, sensitive headers stay off even when a later hop
/// comes back to it (Go 1.23.5+, CVE-2024-45336).
#[test]
fn stripping_is_sticky_across_hops() {
    let cdn = ScriptedServer::start(|_| Reply::status(200));
    let cdn_port = cdn.port();
    let hop_port = Arc::new(Mutex::new(0u16));
    let hp = hop_port.clone();
    // registry → cdn.other.test (bounce) → cdn.registry.test (final).
    let bounce = ScriptedServer::start(move |r| {
        Reply::redirect(
            307,
            &format!(
                "http://cdn.registry.test:{cdn_port}{}",
                r.path.replace("/bounce", "")
            ),
        )
    });
    *hp.lock().unwrap() = bounce.port();
    let reg = registry(move |d| {
        format!(
            "http://cdn.other.test:{}/bounce/blobs/{d}?sig={SIGNATURE}",
            *hop_port.lock().unwrap()
        )
    });
    let (line, _) = check(&reg);
    assert_eq!(line["verdict"], "ready", "{line:#}");
    assert_eq!(seen_headers(&cdn), ["X-Mirror-Tenant"]);
    assert_eq!(bounce.requests().len(), 1);
}

#[test]
fn redirects_to_other_schemes_are_refused() {
    for location in [
        format!("ftp://cdn.other.test/blob?sig={SIGNATURE}"),
        format!("file:///etc/passwd?sig={SIGNATURE}"),
        format!("gopher://cdn.other.test:70/x?sig={SIGNATURE}"),
    ] {
        let loc = location.clone();
        let reg = registry(move |_| loc.clone());
        let (line, all) = check(&reg);
        assert_eq!(line["verdict"], "not_ready", "{location}: {line:#}");
        assert_eq!(line["phase"], "blob", "{location}: {line:#}");
        assert_eq!(
            line["reason"], "BlobUnexpectedStatus",
            "{location}: {line:#}"
        );
        let msg = line["message"].as_str().unwrap_or_default();
        assert!(msg.contains("unsupported scheme"), "{msg}");
        assert!(!all.contains("/etc/passwd"), "{all}");
    }
}
