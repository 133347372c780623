//! Every real node-side config file in the corpus (tests/fixtures/corpus, copied from
//! ../shared/corpus; see its SOURCES.md) loads, or is rejected with an error naming the
//! file and the field — none panics — and the valid ones give the plan their source
//! describes.

use std::path::{Path, PathBuf};

use pullprobe::credentials::docker_config::DockerConfig;
use pullprobe::credentials::provider::CredentialProviderConfig;
use pullprobe::endpoint::SchemePolicy;
use pullprobe::nodeconfig::hosts_toml::{parse_hosts_file, HostsTomlQuirks};
use pullprobe::nodeconfig::k3s;
use pullprobe::nodeconfig::plan::PullMode;
use pullprobe::nodeconfig::{FindingKind, NodeConfig, NodeConfigOptions, Runtime};
use pullprobe::pipeline::credentials::kubelet_credentials;
use pullprobe::pipeline::Creds;
use pullprobe::reference::ImageRef;

fn corpus_dirs() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![repo.join("tests/fixtures/corpus")];
    // CI checks out shared/ beside the clone: test anything new there too.
    let shared = repo.join("../shared/corpus");
    if shared.is_dir() {
        dirs.push(shared);
    }
    dirs
}

fn files_of(kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in corpus_dirs() {
        let dir = d.join(kind);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let h = p.join("hosts.toml");
                if h.is_file() {
                    out.push(h);
                }
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no corpus files of kind {kind}");
    out
}

fn fixture(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/corpus")
            .join(rel),
    )
    .unwrap()
}

/// A host root with `files` (node path, content).
fn tree(files: &[(&str, String)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    d
}

fn load(root: &Path, runtime: Runtime, version: Option<&str>) -> NodeConfig {
    NodeConfig::load(&NodeConfigOptions {
        host_root: root.to_path_buf(),
        runtime: Some(runtime),
        containerd_version: version.map(pullprobe::nodeconfig::GivenVersion::flag),
        ..Default::default()
    })
    .unwrap()
}

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn hosts(plan: &pullprobe::nodeconfig::Plan) -> Vec<String> {
    plan.endpoints
        .iter()
        .map(|e| {
            let ns = e
                .namespace
                .as_deref()
                .map(|n| format!("?ns={n}"))
                .unwrap_or_default();
            format!("{}{ns}", e.display_url())
        })
        .collect()
}

#[test]
fn every_containerd_config_loads_or_names_file_and_field() {
    for f in files_of("containerd") {
        let t = tree(&[(
            "/etc/containerd/config.toml",
            std::fs::read_to_string(&f).unwrap(),
        )]);
        for v in [
            None,
            Some("1.6.20"),
            Some("1.7.27"),
            Some("2.1.4"),
            Some("2.2.0"),
        ] {
            let nc = load(t.path(), Runtime::Containerd, v);
            for p in &nc.problems {
                assert!(
                    !p.file.as_os_str().is_empty() && p.field.is_some(),
                    "{}: {p}",
                    f.display()
                );
            }
            for i in [
                "nginx",
                "registry.k8s.io/pause:3.9",
                "localhost:5000/x",
                "some.host:123/x",
            ] {
                let plan = nc.plan(&img(i));
                assert!(
                    !plan.endpoints.is_empty() || plan.runtime_error.is_some(),
                    "{} {i}",
                    f.display()
                );
                let _ = pullprobe::nodeconfig::render_plan_text(&plan);
                serde_json::to_string(&plan).unwrap();
            }
        }
    }
}

#[test]
fn containerd_configs_give_the_plan_their_source_describes() {
    let certs = (
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        "[host.\"https://mirror.example\"]\n".to_string(),
    );
    // docs v3: a single config_path root.
    let t = tree(&[
        (
            "/etc/containerd/config.toml",
            fixture("containerd/containerd-docs-hosts-v3-config_path.toml"),
        ),
        certs.clone(),
    ]);
    let nc = load(t.path(), Runtime::Containerd, Some("2.1.4"));
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    let p = nc.plan(&img("nginx"));
    assert_eq!(p.mode, PullMode::TransferService);
    assert_eq!(
        hosts(&p),
        [
            "https://mirror.example/v2?ns=docker.io",
            "https://registry-1.docker.io/v2"
        ]
    );

    // EKS AL2 (v2 and v3): multi-root config_path, but discard_unpacked_layers forces the
    // local pull, so the roots are walked even on 2.1+.
    for f in [
        "containerd/eks-al2-containerd-config-v2.toml",
        "containerd/eks-al2-containerd-config2-v3.toml",
    ] {
        let t = tree(&[("/etc/containerd/config.toml", fixture(f)), certs.clone()]);
        let nc = load(t.path(), Runtime::Containerd, Some("2.1.4"));
        assert!(nc.problems.is_empty(), "{f}: {:?}", nc.problems);
        let p = nc.plan(&img("nginx"));
        assert_eq!(p.mode, PullMode::LocalPull, "{f}");
        assert_eq!(
            hosts(&p),
            [
                "https://mirror.example/v2?ns=docker.io",
                "https://registry-1.docker.io/v2"
            ],
            "{f}"
        );
        assert!(!p
            .findings
            .iter()
            .any(|x| x.kind == FindingKind::MultiRootConfigPathIgnored));
    }

    // nodeadm v3 full dump: discard_unpacked_layers = false, multi-root, decoy
    // config_path under the transfer plugin. On 2.1+ the transfer service ignores it.
    let t = tree(&[
        (
            "/etc/containerd/config.toml",
            fixture("containerd/eks-nodeadm-e2e-expected-v3-full-dump.toml"),
        ),
        certs.clone(),
    ]);
    let nc = load(t.path(), Runtime::Containerd, Some("2.1.4"));
    assert_eq!(
        nc.containerd.config.config_path.as_deref(),
        Some("/etc/containerd/certs.d:/etc/docker/certs.d")
    );
    let p = nc.plan(&img("nginx"));
    assert_eq!(hosts(&p), ["https://registry-1.docker.io/v2"]);
    assert!(p
        .findings
        .iter()
        .any(|x| x.kind == FindingKind::MultiRootConfigPathIgnored));
    // …and on 2.0 (no transfer-service CRI pull) the mirror is used.
    let p = load(t.path(), Runtime::Containerd, Some("2.0.5")).plan(&img("nginx"));
    assert_eq!(hosts(&p)[0], "https://mirror.example/v2?ns=docker.io");

    // nodeadm v2, single-quoted: same config_path.
    let t = tree(&[(
        "/etc/containerd/config.toml",
        fixture("containerd/eks-nodeadm-e2e-expected-v2-single-quoted.toml"),
    )]);
    let nc = load(t.path(), Runtime::Containerd, None);
    assert_eq!(
        nc.containerd.config.config_path.as_deref(),
        Some("/etc/containerd/certs.d:/etc/docker/certs.d")
    );

    // kind: legacy mirrors for k8s.gcr.io (trailing comma in the array).
    let t = tree(&[(
        "/etc/containerd/config.toml",
        fixture("containerd/kind-base-config-v2-legacy-mirrors.toml"),
    )]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("k8s.gcr.io/pause:3.9"));
    assert_eq!(
        hosts(&p),
        [
            "https://registry.k8s.io/v2?ns=k8s.gcr.io",
            "https://k8s.gcr.io/v2"
        ]
    );
    assert!(p
        .findings
        .iter()
        .any(|x| x.kind == FindingKind::LegacyRegistryConfig));

    // minikube v1 (`plugins.cri`): docker.io mirrored to registry-1.docker.io, so the
    // upstream is appended again (registryEndpoints compares with "docker.io").
    let t = tree(&[(
        "/etc/containerd/config.toml",
        fixture("containerd/minikube-iso-config-v1-plugins.cri.toml"),
    )]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("nginx"));
    assert_eq!(
        hosts(&p),
        [
            "https://registry-1.docker.io/v2",
            "https://registry-1.docker.io/v2"
        ]
    );

    // Talos: config_path plus configs auth for some.host:123.
    let t = tree(&[(
        "/etc/containerd/config.toml",
        fixture("containerd/talos-testdata-cri-no-version-config_path-plus-auth.toml"),
    )]);
    let nc = load(t.path(), Runtime::Containerd, None);
    assert_eq!(
        nc.containerd.config.config_path.as_deref(),
        Some("/etc/cri/conf.d/hosts")
    );
    let p = nc.plan(&img("some.host:123/x"));
    assert_eq!(hosts(&p), ["https://some.host:123/v2"]);
    assert!(p.endpoints[0].own_credential.is_some());

    // Dragonfly fragment: configs auth keyed by 127.0.0.1:4001.
    let t = tree(&[(
        "/etc/containerd/config.toml",
        fixture("containerd/dragonfly-docs-v2-legacy-configs-auth.toml"),
    )]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("127.0.0.1:4001/x"));
    assert_eq!(hosts(&p), ["http://127.0.0.1:4001/v2"]);
    assert!(p.endpoints[0].own_credential.is_some());
}

#[test]
fn every_hosts_toml_parses_or_names_the_field() {
    for f in files_of("hosts-toml") {
        let text = std::fs::read_to_string(&f).unwrap();
        for q in [
            HostsTomlQuirks::default(),
            HostsTomlQuirks {
                reject_top_level_only: true,
                ..Default::default()
            },
        ] {
            match parse_hosts_file(Path::new("/etc/containerd/certs.d/x"), &text, q) {
                Ok(h) => assert!(!h.is_empty()),
                Err(e) => assert!(!e.field.is_empty(), "{}: {e}", f.display()),
            }
        }
    }
    // kind's `server` array is rejected on `server`.
    let e = parse_hosts_file(
        Path::new("/d"),
        &fixture("hosts-toml/kind-base-certs.d-root-server-array/hosts.toml"),
        HostsTomlQuirks::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "server");
}

#[test]
fn hosts_toml_corpus_plans() {
    let cfg = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n".to_string();
    // docs local mirror: order, caps, relative CA (missing here → containerd fails).
    let t = tree(&[
        ("/etc/containerd/config.toml", cfg.clone()),
        (
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            fixture("hosts-toml/containerd-docs-docker.io-local-mirror/hosts.toml"),
        ),
    ]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("nginx"));
    assert_eq!(
        hosts(&p),
        [
            "https://public-mirror.example.com/v2?ns=docker.io",
            "https://docker-mirror.internal/v2?ns=docker.io",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert!(!p.endpoints[0].capabilities.resolve && p.endpoints[1].capabilities.resolve);
    let prob = p
        .problems
        .iter()
        .find(|x| x.field.as_deref() == Some("ca"))
        .unwrap();
    assert!(
        prob.message
            .contains("/etc/containerd/certs.d/docker.io/docker-mirror.crt"),
        "{prob}"
    );
    assert!(p.runtime_error.is_some());

    // _default: mirror then the image's own host.
    let t = tree(&[
        ("/etc/containerd/config.toml", cfg.clone()),
        (
            "/etc/containerd/certs.d/_default/hosts.toml",
            fixture("hosts-toml/containerd-docs-_default/hosts.toml"),
        ),
    ]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("quay.io/a/b"));
    assert_eq!(
        hosts(&p),
        [
            "https://registry.example.com/v2?ns=quay.io",
            "https://quay.io/v2"
        ]
    );

    // Dragonfly: plain-http P2P proxy with a header, then index.docker.io (ns kept:
    // only registry-1.docker.io is exempt).
    let t = tree(&[
        ("/etc/containerd/config.toml", cfg.clone()),
        (
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            fixture("hosts-toml/dragonfly-docs-docker.io/hosts.toml"),
        ),
    ]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("nginx"));
    assert_eq!(
        hosts(&p),
        [
            "http://127.0.0.1:4001/v2?ns=docker.io",
            "https://index.docker.io/v2?ns=docker.io"
        ]
    );
    assert_eq!(p.endpoints[0].scheme, SchemePolicy::Http);
    assert_eq!(
        p.endpoints[0].headers,
        vec![(
            "X-Dragonfly-Registry".to_string(),
            "https://index.docker.io".to_string()
        )]
    );

    // Tricky docs file: override_path, pull-only hosts; http host without TLS stays http.
    let t = tree(&[
        ("/etc/containerd/config.toml", cfg.clone()),
        (
            "/etc/containerd/certs.d/reg.io/hosts.toml",
            fixture("hosts-toml/containerd-docs-mirror-namespaces-tricky/hosts.toml"),
        ),
    ]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img(
        "reg.io/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ));
    let h = hosts(&p);
    assert_eq!(h[0], "https://mirror.registry/v2?ns=reg.io");
    assert_eq!(h[1], "https://mirror-bak.registry/us/v2?ns=reg.io");
    assert_eq!(h[2], "http://mirror.registry/v2?ns=reg.io");
    assert_eq!(
        h[6],
        "https://non-compliant-mirror.registry/v2/upstream?ns=reg.io"
    );
    assert_eq!(h.last().unwrap(), "https://reg.io/v2");

    // nydus tabs in _default: http mirror with an array header, then the server.
    let t = tree(&[
        ("/etc/containerd/config.toml", cfg),
        (
            "/etc/containerd/certs.d/_default/hosts.toml",
            fixture("hosts-toml/nydus-snapshotter-test-_default-tabs/hosts.toml"),
        ),
    ]);
    let p = load(t.path(), Runtime::Containerd, None).plan(&img("nginx"));
    assert_eq!(
        hosts(&p),
        [
            "http://default-p2p-mirror1:65001/v2?ns=docker.io",
            "https://default-docker.hub.com/v2?ns=docker.io"
        ]
    );
}

#[test]
fn every_registries_conf_loads_or_names_file_and_field() {
    for f in files_of("registries-conf")
        .into_iter()
        .chain(files_of("registries-conf-d"))
    {
        let text = std::fs::read_to_string(&f).unwrap();
        for place in [
            "/etc/containers/registries.conf",
            "/etc/containers/registries.conf.d/50-x.conf",
        ] {
            let t = tree(&[(place, text.clone())]);
            let nc = load(t.path(), Runtime::Crio, None);
            for p in &nc.problems {
                assert!(p.field.is_some(), "{}: {p}", f.display());
            }
            for i in ["nginx", "registry-a.com/foo/x", "a.so.simple-prefix.com/x", "quay.io/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"] {
                let _ = nc.plan(&img(i));
            }
        }
    }
}

#[test]
fn registries_conf_corpus_plans() {
    let t = tree(&[
        (
            "/etc/containers/registries.conf",
            fixture("registries-conf/containers-image-find-registry.conf"),
        ),
        (
            "/etc/containers/registries.conf.d/subdomain-override-1.conf",
            fixture("registries-conf-d/containers-image-subdomain-override-1.conf"),
        ),
    ]);
    let nc = load(t.path(), Runtime::Crio, None);
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    let loc = |i: &str| {
        nc.plan(&img(i))
            .endpoints
            .iter()
            .map(|e| e.host_port())
            .collect::<Vec<_>>()
    };
    assert_eq!(loc("simple-prefix.com/x"), ["registry.com:5000"]);
    assert_eq!(loc("a.so.simple-prefix.com/x"), ["subdomain-prefix.com"]);
    assert_eq!(loc("b.simple-prefix.com/x"), ["subdomain-prefix-2.com"]);
    assert_eq!(
        loc("foo.bar.example.com:5000/x"),
        ["subdomain-prefix-5.com"]
    );
    assert_eq!(
        loc("x.internal.registry.com/y"),
        ["x.internal.registry.com"]
    );

    let t = tree(&[(
        "/etc/containers/registries.conf",
        fixture("registries-conf/containers-image-pull-sources-mirror-reference.conf"),
    )]);
    let nc = load(t.path(), Runtime::Crio, None);
    let p = nc.plan(&img("registry-a.com/foo/image:latest"));
    let got: Vec<(String, Option<String>)> = p
        .endpoints
        .iter()
        .map(|e| (e.host_port(), e.repository.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "mirror-1.registry-a.com".to_string(),
                Some("image".to_string())
            ),
            (
                "mirror-2.registry-a.com".to_string(),
                Some("image".to_string())
            ),
            ("registry-a.com".to_string(), Some("bar/image".to_string())),
        ]
    );
    assert_eq!(p.endpoints[1].scheme, SchemePolicy::HttpsThenHttp);
    let d = "registry-d.com/foo/image@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(nc.plan(&img(d)).endpoints.len(), 3);
    assert_eq!(
        nc.plan(&img("registry-d.com/foo/image:tag"))
            .endpoints
            .len(),
        1
    );

    // Commented-out [[registry]] header: top-level prefix/location are not a registry.
    let t = tree(&[(
        "/etc/containers/registries.conf",
        fixture("registries-conf/containers-common-libimage-commented-header.conf"),
    )]);
    let nc = load(t.path(), Runtime::Crio, None);
    assert!(nc.crio.registries.is_empty());
}

#[test]
fn every_credential_provider_config_parses_or_names_the_field() {
    for f in files_of("credential-provider") {
        let text = std::fs::read_to_string(&f).unwrap();
        match CredentialProviderConfig::parse(&f, &text) {
            Ok((c, problems)) => {
                for p in &problems {
                    assert!(p.field.starts_with("providers["), "{p}");
                }
                assert!(
                    !c.providers.is_empty() || !problems.is_empty(),
                    "{}",
                    f.display()
                );
            }
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    let (c, p) = CredentialProviderConfig::parse(
        Path::new("gcp"),
        &fixture("credential-provider/gcp-cri-auth-config-missing-provider-apiversion.yaml"),
    )
    .unwrap();
    assert!(c.providers.is_empty());
    assert_eq!(p[0].field, "providers[0].apiVersion");
    let (c, p) = CredentialProviderConfig::parse(
        Path::new("ecr"),
        &fixture("credential-provider/eks-al2-ecr-credential-provider-config.json"),
    )
    .unwrap();
    assert!(p.is_empty());
    assert_eq!(c.providers[0].name, "ecr-credential-provider");
    assert_eq!(c.providers[0].match_images.len(), 7);
    let (c, p) = CredentialProviderConfig::parse(
        Path::new("docs"),
        &fixture("credential-provider/k8s-website-ecr-commented-credential-provider-config.yaml"),
    )
    .unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert!(c.providers[0]
        .match_images
        .iter()
        .all(|m| !m.starts_with('-')));
}

#[test]
fn every_docker_config_parses_or_names_the_field() {
    for f in files_of("docker-config-json") {
        let bytes = std::fs::read(&f).unwrap();
        if let Err(e) = DockerConfig::parse(&f, &bytes) {
            assert!(e.to_string().contains(&f.display().to_string()), "{e}");
        }
    }
    let t = tree(&[(
        "/var/lib/kubelet/config.json",
        fixture("docker-config-json/kind-docs-plain-auths-config.json"),
    )]);
    let nc = load(t.path(), Runtime::Containerd, None);
    assert!(nc.node_docker_config.is_some());
}

#[test]
fn k3s_registries_yaml_parses_or_names_the_field() {
    // k3s renders registries.yaml into hosts.toml (nodeconfig::k3s): every corpus file
    // parses without problems, or each problem names the file and a field.
    for f in files_of("k3s-registries-yaml") {
        let text = std::fs::read_to_string(&f).unwrap();
        let (reg, problems) = k3s::parse(&f, &text);
        for p in &problems {
            assert_eq!(p.file, f);
            assert!(p.field.is_some(), "{p}");
        }
        assert!(
            !reg.mirrors.is_empty() || !reg.configs.is_empty() || !problems.is_empty(),
            "{}",
            f.display()
        );
    }
}

/// A k3s node with only `registries.yaml` (k3s not started yet).
fn k3s_node(corpus_file: &str) -> (tempfile::TempDir, NodeConfig) {
    let t = tree(&[("/etc/rancher/k3s/registries.yaml", fixture(corpus_file))]);
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: t.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    (t, nc)
}

#[test]
fn k3s_docs_tls_auth_plan() {
    // Source: docker.io mirrored to registry.example.com:5000, with that host's auth
    // and (empty) TLS block; the default endpoint is tried last.
    let (_t, nc) = k3s_node("k3s-registries-yaml/k3s-docs-tls-auth-registries.yaml");
    assert_eq!(nc.runtime(), Runtime::Containerd);
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    let p = nc.plan(&img("docker.io/rancher/mirrored-pause:3.6"));
    let urls: Vec<String> = p.endpoints.iter().map(|e| e.api_root.to_string()).collect();
    assert_eq!(
        urls,
        vec![
            "https://registry.example.com:5000/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(
        p.host_dir.as_deref(),
        Some(Path::new(
            "/var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io"
        ))
    );
    let mirror = &p.endpoints[0];
    assert_eq!(mirror.namespace.as_deref(), Some("docker.io"));
    assert_eq!(mirror.scheme, SchemePolicy::Https);
    assert_eq!(
        mirror
            .own_credential
            .as_ref()
            .and_then(|c| c.credential.username()),
        Some("xxxxxx")
    );
    assert!(!mirror.tls.skip_verify);
    assert!(mirror.tls.extra_ca_files.is_empty() && mirror.tls.client_certs.is_empty());
    assert!(p.endpoints[1].is_upstream && p.endpoints[1].own_credential.is_none());
    assert!(p.runtime_error.is_none());
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Assumption && f.message.contains("registries.yaml")));
}

#[test]
fn k3s_docs_wildcard_plan() {
    // Source: the "*" mirror serves every registry. Its configs."*" TLS setting is
    // described by the docs as applying to all registries but docker.io; k3s's
    // getHostConfigs (pkg/agent/containerd/config.go) replaces the `_default` entry
    // built from configs."*" when mirrors."*" is set, so no endpoint skips
    // verification — the plan says so in a finding.
    let (_t, nc) = k3s_node("k3s-registries-yaml/k3s-docs-wildcard-registries.yaml");
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    for (image, upstream) in [
        ("quay.io/org/app:1", "https://quay.io/v2"),
        ("nginx", "https://registry-1.docker.io/v2"),
        ("registry.k8s.io/pause:3.10", "https://registry.k8s.io/v2"),
    ] {
        let p = nc.plan(&img(image));
        let urls: Vec<String> = p.endpoints.iter().map(|e| e.api_root.to_string()).collect();
        assert_eq!(
            urls,
            vec!["https://registry.example.com:5000/v2", upstream],
            "{image}"
        );
        assert_eq!(
            p.host_dir.as_deref(),
            Some(Path::new(
                "/var/lib/rancher/k3s/agent/etc/containerd/certs.d/_default"
            ))
        );
        assert_eq!(
            p.endpoints[0].namespace.as_deref(),
            Some(img(image).domain.as_str())
        );
        assert!(p.endpoints.iter().all(|e| !e.tls.skip_verify), "{image}");
        assert!(p
            .findings
            .iter()
            .any(|f| f.message.contains("configs.\"*\" is dropped")));
    }
}

fn hostroot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostroots")
        .join(name)
}

#[tokio::test]
async fn hostroot_containerd_mirror() {
    let root = hostroot("containerd-mirror");
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: root.clone(),
        runtime: None,
        credential_provider_config: Some("/etc/kubernetes/credential-provider.yaml".into()),
        credential_provider_bin_dir: Some("/usr/local/libexec/kubelet-plugins".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(nc.runtime(), Runtime::Containerd);
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    assert_eq!(
        nc.resolv_conf(),
        root.join("run/systemd/resolve/stub-resolv.conf")
    );
    assert_eq!(nc.hosts_file(), root.join("etc/hosts"));
    assert_eq!(
        nc.ca_bundle(),
        Some(root.join("etc/ssl/certs/ca-certificates.crt"))
    );

    let p = nc.plan(&img("nginx:1.27"));
    assert_eq!(
        hosts(&p),
        [
            "https://mirror.example:5000/v2?ns=docker.io",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(
        p.endpoints[0].tls.extra_ca_files,
        [root.join("etc/containerd/certs.d/docker.io/mirror-ca.crt")]
    );
    assert!(p.endpoints[0].proxy.is_none(), "NO_PROXY lists the mirror");
    assert_eq!(
        p.endpoints[1].proxy.as_ref().map(|u| u.as_str()),
        Some("http://proxy.corp:3128/")
    );
    assert_eq!(
        p.endpoints[0].headers,
        [("X-Mirror-Token".to_string(), "not-a-secret".to_string())]
    );

    let p = nc.plan(&img("registry.internal:5443/team/app:v1"));
    assert_eq!(hosts(&p), ["https://registry.internal:5443/v2"]);
    let e = &p.endpoints[0];
    assert!(e.tls.skip_verify && e.namespace.is_none() && e.proxy.is_none());
    assert_eq!(e.tls.client_certs.len(), 1);
    assert_eq!(e.dial_timeout, Some(std::time::Duration::from_secs(5)));
    let text = pullprobe::nodeconfig::render_plan_text(&p);
    assert!(
        text.contains("client cert:") && text.contains("dial_timeout: 5s"),
        "{text}"
    );

    // Credentials: node config.json, then the plugin (kubelet order), sources named.
    let (creds, problems) = kubelet_credentials(
        &nc,
        &img("registry.internal:5443/team/app:v1"),
        Creds::Node,
        None,
    )
    .await;
    assert!(problems.is_empty(), "{problems:?}");
    let srcs: Vec<String> = creds.iter().map(|c| c.source.to_string()).collect();
    assert_eq!(
        srcs,
        [
            "auth-file:/var/lib/kubelet/config.json#registry.internal:5443",
            "plugin:fake-provider#registry.internal:5443"
        ]
    );
    assert_eq!(creds[1].credential.username(), Some("plugin"));
    // Pull secrets come first.
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        ".dockerconfigjson".to_string(),
        br#"{"auths":{"registry.internal:5443/team":{"username":"sec","password":"x"}}}"#.to_vec(),
    );
    let secret = pullprobe::credentials::node::PullSecretData {
        namespace: "default".into(),
        name: "regcred".into(),
        secret_type: "kubernetes.io/dockerconfigjson".into(),
        data,
    };
    let secrets = [secret];
    let (creds, _) = kubelet_credentials(
        &nc,
        &img("registry.internal:5443/team/app:v1"),
        Creds::PullSecrets(&secrets),
        None,
    )
    .await;
    assert_eq!(
        creds[0].source.to_string(),
        "pull-secret:default/regcred#registry.internal:5443/team"
    );
    assert_eq!(creds.len(), 3);
}

#[test]
fn hostroot_crio_mirrors() {
    let root = hostroot("crio-mirrors");
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: root.clone(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(nc.runtime(), Runtime::Crio);
    assert!(nc.problems.is_empty(), "{:?}", nc.problems);
    let p = nc.plan(&img("nginx"));
    assert_eq!(
        hosts(&p),
        [
            "https://mirror.corp:5000/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(p.endpoints[0].repository.as_deref(), Some("hub/nginx"));
    assert!(!p.endpoints[0].send_credentials && p.endpoints[1].send_credentials);
    assert_eq!(
        p.endpoints[0].tls.extra_ca_files,
        [root.join("etc/containers/certs.d/mirror.corp:5000/ca.crt")]
    );
    let p = nc.plan(&img("blocked.example/x"));
    assert!(p.blocked && p.runtime_error.is_some());
    let p = nc.plan(&img("insecure.example:5000/x"));
    assert_eq!(p.endpoints[0].scheme, SchemePolicy::HttpsThenHttp);
    use pullprobe::nodeconfig::crio::ShortName;
    assert!(
        matches!(
            nc.crio_short_name("nginx:latest"),
            Some(ShortName::Error(_))
        ),
        "two search registries, enforcing"
    );
    assert_eq!(
        nc.crio_short_name("fedora:39"),
        Some(ShortName::Alias("registry.fedoraproject.org/fedora".into()))
    );
    assert_eq!(
        nc.crio_short_name("quay.io/x/y"),
        Some(ShortName::Qualified)
    );
}
