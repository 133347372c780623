use super::*;
use crate::endpoint::SchemePolicy;
use crate::nodeconfig::{NodeConfig, NodeConfigOptions, Runtime};

const TLS_AUTH: &str = include_str!(
    "../../../tests/fixtures/corpus/k3s-registries-yaml/k3s-docs-tls-auth-registries.yaml"
);
const WILDCARD: &str = include_str!(
    "../../../tests/fixtures/corpus/k3s-registries-yaml/k3s-docs-wildcard-registries.yaml"
);

fn reg(text: &str) -> Registries {
    let (r, p) = parse(Path::new("/etc/rancher/k3s/registries.yaml"), text);
    assert!(p.is_empty(), "{p:?}");
    r
}

/// A host root holding only `registries.yaml` (k3s not started).
fn node(text: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, NodeConfig) {
    let d = tempfile::tempdir().unwrap();
    let mut files = vec![("etc/rancher/k3s/registries.yaml", text)];
    files.extend_from_slice(extra);
    for (p, c) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: d.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    (d, nc)
}

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn urls(p: &Plan) -> Vec<String> {
    p.endpoints.iter().map(|e| e.api_root.to_string()).collect()
}

#[test]
fn parses_docs_tls_auth_file() {
    let r = reg(TLS_AUTH);
    assert_eq!(
        r.mirrors["docker.io"].endpoints,
        vec!["https://registry.example.com:5000"]
    );
    let c = &r.configs["registry.example.com:5000"];
    let a = c.auth.as_ref().unwrap();
    assert_eq!(a.username, "xxxxxx");
    assert_eq!(a.password.expose(), "xxxxxx");
    // `tls:` with only null fields is still a present (non-nil) TLS block.
    assert_eq!(c.tls, Some(TlsConfig::default()));
    // Secrets stay out of Debug.
    let r2 = reg(
        "configs:\n  r.example:\n    auth:\n      username: u\n      password: hunter2-secret\n",
    );
    assert!(!format!("{r2:?}").contains("hunter2-secret"));
}

#[test]
fn null_config_value_is_an_empty_config() {
    let r = reg(WILDCARD);
    assert_eq!(r.configs["docker.io"], RegistryConfig::default());
    assert!(r.configs["*"].tls.as_ref().unwrap().insecure_skip_verify);
    assert_eq!(
        r.mirrors["*"].endpoints,
        vec!["https://registry.example.com:5000"]
    );
}

#[test]
fn renders_host_dirs_like_get_host_configs() {
    let (files, warnings) = render(Distro::K3s, &reg(TLS_AUTH));
    assert!(warnings.is_empty());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["docker.io", "registry.example.com:5000"]
    );
    let d = &files["docker.io"];
    assert!(
        d.contains("server = \"https://registry-1.docker.io/v2\""),
        "{d}"
    );
    assert!(
        d.contains("[host.\"https://registry.example.com:5000/v2\"]"),
        "{d}"
    );
    // Null TLS fields render nothing.
    assert!(!d.contains("ca =") && !d.contains("client =") && !d.contains("skip_verify"));

    // Wildcard: "_default" with the mirror and an empty server; docker.io's null config
    // leaves only defaults, so its directory is removed by the clean-up.
    let (files, _) = render(Distro::K3s, &reg(WILDCARD));
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["_default"]);
    assert!(files["_default"].contains("server = \"\""));
    assert!(!files["_default"].contains("skip_verify"));
}

#[test]
fn normalizes_endpoints_like_k3s_tests() {
    // Cases from k3s pkg/agent/containerd/config_test.go Test_UnitGetHostConfigs.
    let n = |e: &str| normalize_endpoint(e).unwrap();
    assert_eq!(
        n("registry.example.com"),
        (
            "registry.example.com".into(),
            "https://registry.example.com/v2".into(),
            false
        )
    );
    assert_eq!(
        n("registry.example.com/prefix/v2").1,
        "https://registry.example.com/prefix/v2"
    );
    assert!(n("registry.example.com/prefix/v2").2);
    assert_eq!(
        n("https://registry.example.com/v2").1,
        "https://registry.example.com/v2"
    );
    assert_eq!(
        n("registry.example.com:443").1,
        "https://registry.example.com:443/v2"
    );
    assert_eq!(n("1.2.3.4").1, "https://1.2.3.4/v2");
    assert_eq!(n("localhost:5000").1, "http://localhost:5000/v2");
    assert_eq!(n("127.0.0.1:5000").1, "http://127.0.0.1:5000/v2");
    assert_eq!(n("https://localhost:5000").1, "https://localhost:5000/v2");
    assert_eq!(
        n("docker.io"),
        (
            "docker.io".into(),
            "https://registry-1.docker.io/v2".into(),
            false
        )
    );
    assert!(normalize_endpoint("registry.example.com:abc").is_err());
}

#[test]
fn duplicates_dropped_and_last_default_endpoint_moved() {
    let r = reg("mirrors:\n  docker.io:\n    endpoint:\n      - registry.example.com\n      - https://registry.example.com\n      - https://registry.example.com/v2\n      - docker.io\n");
    let (hosts, warnings) = get_host_configs(&r, false);
    let c = &hosts["docker.io"];
    let eps: Vec<_> = c.endpoints.iter().map(|e| e.url.clone().unwrap()).collect();
    assert_eq!(eps, vec!["https://registry.example.com/v2"]);
    assert_eq!(
        c.default.as_ref().unwrap().url.as_deref(),
        Some("https://registry-1.docker.io/v2")
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    // Only the default, no config: no directory (k3s test "registry with default endpoint").
    let (hosts, _) = get_host_configs(&reg("mirrors:\n  docker.io:\n"), false);
    assert!(hosts.is_empty());
}

#[test]
fn plan_tls_auth_docker_io_goes_to_mirror_then_hub() {
    let (_d, nc) = node(TLS_AUTH, &[]);
    assert_eq!(nc.runtime(), Runtime::Containerd);
    let p = nc.plan(&img("nginx"));
    assert_eq!(
        urls(&p),
        vec![
            "https://registry.example.com:5000/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    let m = &p.endpoints[0];
    assert!(!m.is_upstream);
    assert_eq!(m.namespace.as_deref(), Some("docker.io"));
    assert_eq!(m.scheme, SchemePolicy::Https);
    assert_eq!(
        m.own_credential
            .as_ref()
            .and_then(|c| c.credential.username()),
        Some("xxxxxx")
    );
    assert!(!m.tls.skip_verify && m.tls.extra_ca_files.is_empty() && m.tls.client_certs.is_empty());
    assert!(p.endpoints[1].is_upstream);
    assert!(p.endpoints[1].own_credential.is_none());
    assert!(p.runtime_error.is_none(), "{:?}", p.runtime_error);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Assumption && f.message.contains("registries.yaml")));
    // The mirror itself, pulled directly, is its own upstream with its auth.
    let p = nc.plan(&img("registry.example.com:5000/team/app:1"));
    assert_eq!(urls(&p), vec!["https://registry.example.com:5000/v2"]);
    assert!(p.endpoints[0].own_credential.is_some());
}

#[test]
fn plan_wildcard_mirror_for_every_registry() {
    let (_d, nc) = node(WILDCARD, &[]);
    for (image, upstream) in [
        ("quay.io/a/b:1", "https://quay.io/v2"),
        ("nginx", "https://registry-1.docker.io/v2"),
        ("ghcr.io/o/r:2", "https://ghcr.io/v2"),
    ] {
        let p = nc.plan(&img(image));
        assert_eq!(
            urls(&p),
            vec!["https://registry.example.com:5000/v2", upstream],
            "{image}"
        );
        assert!(p.host_dir.as_ref().unwrap().ends_with("certs.d/_default"));
        // k3s drops configs."*" when mirrors."*" is set: no skip_verify anywhere.
        assert!(p.endpoints.iter().all(|e| !e.tls.skip_verify), "{image}");
    }
    let p = nc.plan(&img("quay.io/a/b:1"));
    assert!(p
        .findings
        .iter()
        .any(|f| f.message.contains("configs.\"*\" is dropped")));
}

#[test]
fn plan_wildcard_config_alone_sets_default_tls() {
    // Without a "*" mirror, configs."*" becomes _default/hosts.toml with top-level
    // skip_verify; docker.io's null config leaves only defaults and is removed, so
    // docker.io also falls back to _default.
    let (_d, nc) = node(
        "configs:\n  \"docker.io\":\n  \"*\":\n    tls:\n      insecure_skip_verify: true\n",
        &[],
    );
    let p = nc.plan(&img("quay.io/a/b:1"));
    assert_eq!(urls(&p), vec!["https://quay.io/v2"]);
    assert!(p.endpoints[0].tls.skip_verify);
    let p = nc.plan(&img("nginx"));
    assert_eq!(urls(&p), vec!["https://registry-1.docker.io/v2"]);
    assert!(p.endpoints[0].tls.skip_verify);
}

#[test]
fn plan_tls_files_and_insecure_per_host() {
    let yaml = "mirrors:\n  registry.internal:\n    endpoint:\n      - https://mirror.internal:5443\nconfigs:\n  mirror.internal:5443:\n    tls:\n      ca_file: /etc/k3s-certs/ca.crt\n      cert_file: /etc/k3s-certs/client.crt\n      key_file: /etc/k3s-certs/client.key\n  registry.internal:\n    tls:\n      insecure_skip_verify: true\n";
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (_d, nc) = node(
        yaml,
        &[
            ("etc/k3s-certs/ca.crt", ca),
            ("etc/k3s-certs/client.crt", "cert"),
            ("etc/k3s-certs/client.key", "key"),
        ],
    );
    let p = nc.plan(&img("registry.internal/app:1"));
    assert_eq!(
        urls(&p),
        vec![
            "https://mirror.internal:5443/v2",
            "https://registry.internal/v2"
        ]
    );
    let m = &p.endpoints[0];
    assert_eq!(m.tls.extra_ca_files.len(), 1);
    assert!(m.tls.extra_ca_files[0].ends_with("etc/k3s-certs/ca.crt"));
    assert_eq!(m.tls.client_certs.len(), 1);
    assert!(!m.tls.skip_verify);
    assert!(p.endpoints[1].tls.skip_verify);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

#[test]
fn plan_missing_ca_file_fails_like_containerd() {
    let yaml = "configs:\n  registry.internal:\n    tls:\n      ca_file: /nope/ca.crt\n";
    let (_d, nc) = node(yaml, &[]);
    let p = nc.plan(&img("registry.internal/app:1"));
    assert!(p.runtime_error.is_some());
    assert!(p
        .problems
        .iter()
        .any(|x| x.kind == ProblemKind::MissingReference));
}

#[test]
fn plan_rewrites_repository_at_mirror_only() {
    let yaml = "mirrors:\n  docker.io:\n    endpoint:\n      - \"https://registry.example.com:5000\"\n    rewrite:\n      \"^rancher/(.*)\": \"mirrorproject/rancher-images/$1\"\n";
    let (_d, nc) = node(yaml, &[]);
    let p = nc.plan(&img("docker.io/rancher/mirrored-pause:3.6"));
    assert_eq!(
        p.endpoints[0].repository.as_deref(),
        Some("mirrorproject/rancher-images/mirrored-pause")
    );
    assert_eq!(p.endpoints[1].repository, None);
    // Not matching: unchanged.
    let p = nc.plan(&img("nginx"));
    assert_eq!(p.endpoints[0].repository, None);
}

#[test]
fn auth_variants_become_runtime_credentials() {
    let yaml = "mirrors:\n  docker.io:\n    endpoint: [a.example, b.example, c.example]\nconfigs:\n  a.example:\n    auth:\n      auth: dXNlcjpwYXNz\n  b.example:\n    auth:\n      identity_token: tok-secret\n  c.example:\n    auth:\n      auth: \"!!notbase64\"\n";
    let (_d, nc) = node(yaml, &[]);
    let p = nc.plan(&img("nginx"));
    assert_eq!(
        p.endpoints[0]
            .own_credential
            .as_ref()
            .and_then(|c| c.credential.username()),
        Some("user")
    );
    assert!(matches!(
        p.endpoints[1]
            .own_credential
            .as_ref()
            .map(|c| &c.credential),
        Some(Credential::IdentityToken(_))
    ));
    assert!(p.endpoints[2].own_credential.is_none());
    let bad = p
        .problems
        .iter()
        .find(|x| x.field.as_deref() == Some("configs.\"c.example\".auth.auth"))
        .unwrap();
    assert!(bad.file.ends_with("registries.yaml"));
    assert!(!format!("{p:?}").contains("tok-secret"));
    assert!(!crate::nodeconfig::render_plan_text(&p).contains("pass"));
}

#[test]
fn malformed_yaml_names_file_and_field() {
    let f = Path::new("/etc/rancher/k3s/registries.yaml");
    let (_, p) = parse(f, "mirrors:\n  docker.io:\n    endpoint: [unclosed\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].file, f);
    assert_eq!(p[0].field.as_deref(), Some("(syntax)"));

    let (r, p) = parse(f, "mirrors:\n  docker.io:\n    endpoint: registry.example.com\n  quay.io:\n    endpoint: [q.example]\n");
    assert_eq!(
        p[0].field.as_deref(),
        Some("mirrors.\"docker.io\".endpoint")
    );
    assert!(p[0].message.contains("list"));
    assert!(r.mirrors.contains_key("quay.io") && !r.mirrors.contains_key("docker.io"));

    let (_, p) = parse(
        f,
        "configs:\n  r.example:\n    tls:\n      insecure_skip_verify: maybe\n",
    );
    assert_eq!(
        p[0].field.as_deref(),
        Some("configs.\"r.example\".tls.insecure_skip_verify")
    );
    assert_eq!(p[0].kind, ProblemKind::Invalid);

    let (_, p) = parse(f, "mirrors: [a, b]\n");
    assert_eq!(p[0].field.as_deref(), Some("mirrors"));

    let (_, p) = parse(f, "");
    assert!(p.is_empty());

    // Through the node: the syntax error is a problem and a finding that k3s would not start.
    let (_d, nc) = node("mirrors: {docker.io: [\n", &[]);
    assert!(nc
        .problems
        .iter()
        .any(|p| p.file == f && p.field.as_deref() == Some("(syntax)")));
    let plan = nc.plan(&img("nginx"));
    assert_eq!(urls(&plan), vec!["https://registry-1.docker.io/v2"]);
    assert!(plan
        .findings
        .iter()
        .any(|x| x.kind == FindingKind::RuntimeWouldFail));
}

#[test]
fn rke2_paths_and_detection() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("etc/rancher/rke2/registries.yaml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, TLS_AUTH).unwrap();
    let hr = HostRoot::new(d.path()).unwrap();
    let n = detect(&hr).unwrap();
    assert_eq!(n.distro, Distro::Rke2);
    assert_eq!(n.rendered_config, None);
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: d.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert!(nc.runtime_reason.contains("rke2"));
    let plan = nc.plan(&img("nginx"));
    assert!(plan
        .host_dir
        .unwrap()
        .starts_with("/var/lib/rancher/rke2/agent/etc/containerd/certs.d"));
    assert_eq!(plan.endpoints.len(), 2);
}

#[test]
fn non_k3s_node_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let hr = HostRoot::new(d.path()).unwrap();
    assert!(detect(&hr).is_none());
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: d.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert!(nc.k3s.is_none());
}
