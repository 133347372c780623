use super::*;
use crate::nodeconfig::{NodeConfig, NodeConfigOptions, Runtime};

struct Tree(tempfile::TempDir);

impl Tree {
    fn new(files: &[(&str, &str)]) -> Tree {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = d.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        Tree(d)
    }
    fn load(&self, runtime: Runtime, version: Option<&str>) -> NodeConfig {
        NodeConfig::load(&NodeConfigOptions {
            host_root: self.0.path().to_path_buf(),
            runtime: Some(runtime),
            containerd_version: version.map(crate::nodeconfig::GivenVersion::flag),
            ..Default::default()
        })
        .unwrap()
    }
}

const CP: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n";
/// A real (throwaway, self-signed) certificate: upstream checks that CA files hold PEM certificates.
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBbDCCAROgAwIBAgIUCSTpZRYB2w+K8rcxm9+P2zoT1lIwCgYIKoZIzj0EAwIw\nDDEKMAgGA1UEAwwBdDAeFw0yNjExMjUyMzMxMThaFw0zNjExMjIyMzMxMThaMAwx\nCjAIBgNVBAMMAXQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASaa4q3mfSUNB56\nK4YCfjrVlAq0gs8bqFg/Xmb4V7qK3GPBQfHfOEdwfC8c7SRJKg/dGQASPfroFSH6\nzMTISIr9o1MwUTAdBgNVHQ4EFgQU7/GX3WmHPLi9fa0H3ibNBJBS8dQwHwYDVR0j\nBBgwFoAU7/GX3WmHPLi9fa0H3ibNBJBS8dQwDwYDVR0TAQH/BAUwAwEB/zAKBggq\nhkjOPQQDAgNHADBEAiBjO0myEdmM/0c56oW79NPD2m4cDqgMHBn9ImwPdqxL2wIg\nZYwZ8FNxitoRP5rACmfmz84uRMKQiiim2mWE5rjszZY=\n-----END CERTIFICATE-----\n";

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn urls(p: &Plan) -> Vec<String> {
    p.endpoints
        .iter()
        .map(|e| {
            let scheme = match e.scheme {
                SchemePolicy::Https => "https",
                SchemePolicy::Http => "http",
                SchemePolicy::HttpsThenHttp => "https>http",
            };
            let ns = e
                .namespace
                .as_deref()
                .map(|n| format!("?ns={n}"))
                .unwrap_or_default();
            format!("{scheme} {}{}{ns}", e.host_port(), e.api_root.path())
        })
        .collect()
}

#[test]
fn defaults_without_config() {
    let t = Tree::new(&[]);
    // Without config_path the CRI local pull uses the deprecated registryEndpoints path
    // (localhost = plain http); the 2.1+ transfer service uses ConfigureHosts' defaults.
    for (image, version, want) in [
        ("nginx", None, "https registry-1.docker.io/v2"),
        ("reg.example/x", None, "https reg.example/v2"),
        ("localhost:5000/x", None, "http localhost:5000/v2"),
        ("localhost/x", None, "http localhost/v2"),
        ("localhost:5000/x", Some("1.6.20"), "http localhost:5000/v2"),
        (
            "localhost:5000/x",
            Some("2.1.4"),
            "https>http localhost:5000/v2",
        ),
        ("localhost/x", Some("2.1.4"), "https localhost/v2"),
        // (the URL type drops the default port; the ns comparison uses the written host)
        ("localhost:443/x", Some("2.1.4"), "https localhost/v2"),
        ("127.0.0.1:80/x", Some("2.1.4"), "http 127.0.0.1/v2"),
        ("nginx", Some("2.1.4"), "https registry-1.docker.io/v2"),
    ] {
        let nc = t.load(Runtime::Containerd, version);
        let p = nc.plan(&img(image));
        assert_eq!(urls(&p), vec![want.to_string()], "{image} {version:?}");
        assert!(p.runtime_error.is_none());
    }
    let nc = t.load(Runtime::Containerd, Some("2.1.4"));
    let p = nc.plan(&img("localhost:5000/x"));
    assert!(
        p.endpoints[0].tls.skip_verify,
        "localhost non-443 skips verification"
    );
}

#[test]
fn host_dir_lookup_order_and_multi_root() {
    let cfg = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/r1:/r2\"\n";
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", cfg),
        (
            "/r1/_default/hosts.toml",
            "server = \"https://default-r1\"\n",
        ),
        ("/r2/reg:5000/hosts.toml", "server = \"https://colon-r2\"\n"),
        (
            "/r1/other_5000_/hosts.toml",
            "server = \"https://underscore\"\n",
        ),
        ("/r1/other:5000/hosts.toml", "server = \"https://colon\"\n"),
    ]);
    // 2.0: reads top-level-only files (1.x ignores them) and pulls locally.
    let nc = t.load(Runtime::Containerd, Some("2.0.0"));
    // _default in root 1 beats an exact directory in root 2.
    let p = nc.plan(&img("reg:5000/x"));
    assert_eq!(urls(&p), vec!["https default-r1/v2?ns=reg:5000"]);
    assert_eq!(p.host_dir.as_deref(), Some(Path::new("/r1/_default")));
    // host_port_ beats host:port.
    let p = nc.plan(&img("other:5000/x"));
    assert_eq!(urls(&p), vec!["https underscore/v2?ns=other:5000"]);
    // Transfer service (2.1+) ignores the multi-root path.
    let nc = t.load(Runtime::Containerd, Some("2.1.4"));
    let p = nc.plan(&img("reg:5000/x"));
    assert_eq!(p.mode, PullMode::TransferService);
    assert_eq!(urls(&p), vec!["https reg:5000/v2"]);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::MultiRootConfigPathIgnored));
}

#[test]
fn hosts_toml_order_caps_ns_and_docker_hub_exception() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            r#"server = "https://registry-1.docker.io"
[host."https://pull-only.mirror"]
  capabilities = ["pull"]
[host."http://mirror.local:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  dial_timeout = "3s"
[host."https://push.only"]
  capabilities = ["push"]
"#,
        ),
    ]);
    let nc = t.load(Runtime::Containerd, None);
    let p = nc.plan(&img("nginx:1.25"));
    assert_eq!(
        urls(&p),
        vec![
            "https pull-only.mirror/v2?ns=docker.io",
            "https>http mirror.local:5000/v2?ns=docker.io",
            "https registry-1.docker.io/v2",
        ]
    );
    assert!(!p.endpoints[0].capabilities.resolve);
    assert_eq!(
        p.endpoints[1].dial_timeout,
        Some(std::time::Duration::from_secs(3))
    );
    assert!(p.endpoints[2].is_upstream && !p.endpoints[0].is_upstream);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::EndpointSkipped));
}

#[test]
fn server_override_path_relative_ca_and_headers() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        ("/etc/ssl/certs/ca-certificates.crt", PEM),
        ("/etc/containerd/certs.d/reg.example/ca.crt", PEM),
        (
            "/etc/containerd/certs.d/reg.example/hosts.toml",
            "server = \"https://mirror.example/v2/upstream\"\noverride_path = true\nca = \"ca.crt\"\n[header]\n  X-A = [\"1\", \"2\"]\n",
        ),
    ]);
    let nc = t.load(Runtime::Containerd, None);
    let p = nc.plan(&img("reg.example/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
    assert_eq!(
        urls(&p),
        vec!["https mirror.example/v2/upstream?ns=reg.example"]
    );
    let e = &p.endpoints[0];
    assert_eq!(
        e.tls.extra_ca_files,
        vec![t.0.path().join("etc/containerd/certs.d/reg.example/ca.crt")]
    );
    assert_eq!(
        e.tls.ca_bundle,
        Some(t.0.path().join("etc/ssl/certs/ca-certificates.crt"))
    );
    assert_eq!(
        e.headers,
        vec![
            ("X-A".to_string(), "1".to_string()),
            ("X-A".to_string(), "2".to_string())
        ]
    );
    assert!(
        p.problems.is_empty() && p.runtime_error.is_none(),
        "{:?}",
        p.problems
    );
}

#[test]
fn missing_ca_fails_the_runtime_and_names_the_file() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/reg.example/hosts.toml",
            "[host.\"https://m\"]\n  ca = \"/nope/ca.pem\"\n",
        ),
    ]);
    let p = t
        .load(Runtime::Containerd, None)
        .plan(&img("reg.example/x"));
    assert!(p
        .runtime_error
        .as_deref()
        .unwrap()
        .contains("unable to read CA cert"));
    let prob = &p.problems[0];
    assert_eq!(prob.field.as_deref(), Some("ca"));
    assert_eq!(
        prob.file,
        Path::new("/etc/containerd/certs.d/reg.example/hosts.toml")
    );
}

#[test]
fn broken_hosts_toml_falls_back_to_docker_cert_layout() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/reg.example/hosts.toml",
            "[host.\"https://m\"]\ncapabilities = [\"teleport\"]\n",
        ),
        ("/etc/containerd/certs.d/reg.example/extra.crt", PEM),
        ("/etc/containerd/certs.d/reg.example/client.cert", "c"),
        ("/etc/containerd/certs.d/reg.example/client.key", "k"),
    ]);
    let p = t
        .load(Runtime::Containerd, None)
        .plan(&img("reg.example/x"));
    assert_eq!(urls(&p), vec!["https reg.example/v2"]);
    assert_eq!(
        p.endpoints[0].tls.extra_ca_files.len(),
        1,
        "{:?}",
        p.problems
    );
    assert_eq!(p.endpoints[0].tls.client_certs.len(), 1);
    assert!(p.endpoints[0].tls.client_certs[0].key.is_some());
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::HostsTomlIgnored));
    assert_eq!(
        p.problems[0].field.as_deref(),
        Some("host.\"https://m\".capabilities")
    );
}

#[test]
fn containerd_1_x_ignores_top_level_only_hosts_toml() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/127.0.0.1:5000/hosts.toml",
            "server = \"https://127.0.0.1:5000\"\nskip_verify = true\n",
        ),
    ]);
    let p = t
        .load(Runtime::Containerd, Some("1.6.20"))
        .plan(&img("127.0.0.1:5000/x"));
    assert_eq!(urls(&p), vec!["http 127.0.0.1:5000/v2"]);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::HostsTomlIgnored));
    // 1.7 too (the same go-toml v1 code); 2.0 reads the file.
    let p = t
        .load(Runtime::Containerd, Some("1.7.27"))
        .plan(&img("127.0.0.1:5000/x"));
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::HostsTomlIgnored));
    let p = t
        .load(Runtime::Containerd, Some("2.0.0"))
        .plan(&img("127.0.0.1:5000/x"));
    assert_eq!(urls(&p), vec!["https 127.0.0.1:5000/v2"]);
    assert!(p.endpoints[0].tls.skip_verify);
}

#[test]
fn legacy_mirrors_and_configs() {
    let t = Tree::new(&[(
        "/etc/containerd/config.toml",
        r#"version = 2
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://m1.example", "m2.example:5000/path"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
  endpoint = ["https://star.mirror"]
[plugins."io.containerd.grpc.v1.cri".registry.mirrors."upstream.io"]
  endpoint = ["https://upstream.io", "https://after"]
[plugins."io.containerd.grpc.v1.cri".registry.configs."m1.example".auth]
  username = "u"
  password = "p"
"#,
    )]);
    let nc = t.load(Runtime::Containerd, None);
    let p = nc.plan(&img("nginx"));
    assert_eq!(
        urls(&p),
        vec![
            "https m1.example/v2?ns=docker.io",
            "https m2.example:5000/path?ns=docker.io",
            "https registry-1.docker.io/v2",
        ]
    );
    assert_eq!(
        p.endpoints[0]
            .own_credential
            .as_ref()
            .and_then(|c| c.credential.username()),
        Some("u")
    );
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::LegacyRegistryConfig));
    assert_eq!(
        urls(&nc.plan(&img("other.io/x"))),
        vec!["https star.mirror/v2?ns=other.io", "https other.io/v2"]
    );
    // An endpoint already on the upstream host: nothing is appended (the list is kept).
    assert_eq!(
        urls(&nc.plan(&img("upstream.io/x"))),
        vec!["https upstream.io/v2", "https after/v2?ns=upstream.io"]
    );
    // Localhost upstream defaults to plain http in the legacy path.
    assert_eq!(
        urls(&nc.plan(&img("localhost:5000/x"))),
        vec![
            "https star.mirror/v2?ns=localhost:5000",
            "http localhost:5000/v2"
        ]
    );
}

#[test]
fn proxy_applies_per_endpoint() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        ("/etc/systemd/system/containerd.service.d/http-proxy.conf", "[Service]\nEnvironment=\"HTTPS_PROXY=http://proxy.corp:3128\" \"NO_PROXY=mirror.internal\"\n"),
        ("/etc/containerd/certs.d/docker.io/hosts.toml", "[host.\"https://mirror.internal\"]\n"),
    ]);
    let p = t.load(Runtime::Containerd, None).plan(&img("nginx"));
    assert!(p.endpoints[0].proxy.is_none());
    assert_eq!(
        p.endpoints[1].proxy.as_ref().map(|u| u.as_str()),
        Some("http://proxy.corp:3128/")
    );
}

#[test]
fn crio_prefix_mirrors_blocked_and_credentials() {
    let t = Tree::new(&[
        (
            "/etc/containers/registries.conf",
            r#"unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
[[registry.mirror]]
location = "mirror.corp/hub"
[[registry.mirror]]
location = "docker.io/library"
[[registry]]
prefix = "bad.io"
location = "bad.io"
blocked = true
[[registry]]
prefix = "ins.io"
location = "ins.io"
insecure = true
"#,
        ),
        ("/etc/containers/registries.conf.d/10-digest.conf", "[[registry]]\nprefix = \"*.quay.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"dmirror\"\n"),
        ("/etc/docker/certs.d/mirror.corp/ca.crt", PEM),
    ]);
    let nc = t.load(Runtime::Crio, None);
    let p = nc.plan(&img("nginx"));
    assert_eq!(p.mode, PullMode::ContainersImage);
    assert_eq!(
        urls(&p),
        vec![
            "https mirror.corp/v2",
            "https registry-1.docker.io/v2",
            "https registry-1.docker.io/v2"
        ]
    );
    assert_eq!(p.endpoints[0].repository.as_deref(), Some("hub/nginx"));
    assert!(
        !p.endpoints[0].send_credentials,
        "another domain: no kubelet credentials"
    );
    assert!(p.endpoints[1].send_credentials);
    assert_eq!(
        p.endpoints[0].tls.extra_ca_files.len(),
        1,
        "{:?}",
        p.problems
    );
    let p = nc.plan(&img("bad.io/x"));
    assert!(p.blocked && p.endpoints.is_empty());
    let p = nc.plan(&img("ins.io/x"));
    assert_eq!(urls(&p), vec!["https>http ins.io/v2"]);
    assert!(p.endpoints[0].tls.skip_verify);
    assert_eq!(
        urls(&nc.plan(&img("a.quay.io/x:tag"))),
        vec!["https a.quay.io/v2"]
    );
    let dig = "a.quay.io/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(
        urls(&nc.plan(&img(dig))),
        vec!["https dmirror/v2", "https a.quay.io/v2"]
    );
}

#[test]
fn hostile_inputs_never_stop_loading() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", "version = 2\n[plugins\n"),
        (
            "/etc/systemd/system/containerd.service.d/x.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://p:1\n",
        ),
    ]);
    std::os::unix::fs::symlink("loop2", t.0.path().join("etc/loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", t.0.path().join("etc/loop2")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/loop1",
        t.0.path()
            .join("etc/systemd/system/containerd.service.d/y.conf"),
    )
    .unwrap();
    let nc = t.load(Runtime::Containerd, None);
    assert!(nc
        .problems
        .iter()
        .any(|p| p.file == Path::new("/etc/containerd/config.toml")
            && p.field.as_deref() == Some("(syntax)")));
    assert_eq!(nc.proxy.https_proxy.as_deref(), Some("http://p:1"));
    let p = nc.plan(&img("nginx"));
    assert_eq!(urls(&p), vec!["https registry-1.docker.io/v2"]);
    let text = render_plan_text(&p);
    assert!(text.contains("registry-1.docker.io"), "{text}");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["image"], "docker.io/library/nginx:latest");
}

#[test]
fn unusable_host_root_is_the_only_fatal_error() {
    let r = NodeConfig::load(&NodeConfigOptions {
        host_root: "/definitely/not/here".into(),
        ..Default::default()
    });
    assert!(r.is_err());
}

#[test]
fn containerd_version_from_dpkg_status() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/var/lib/dpkg/status",
            "Package: runc\nStatus: install ok installed\nVersion: 1.1.5\n\nPackage: containerd\nStatus: install ok installed\nVersion: 1.6.20~ds1-1+deb12u3\n",
        ),
        ("/etc/containerd/certs.d/localhost:5000/hosts.toml", "server = \"https://localhost:5000\"\n"),
    ]);
    let nc = t.load(Runtime::Containerd, None);
    assert_eq!(
        nc.containerd.version.map(|v| (v.major, v.minor, v.patch)),
        Some((1, 6, 20))
    );
    assert!(nc
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Assumption));
    // 1.6 rejects the top-level-only file and talks plain http to localhost.
    assert_eq!(
        urls(&nc.plan(&img("localhost:5000/x"))),
        vec!["http localhost:5000/v2"]
    );
}

#[test]
fn plan_names_the_version_and_where_it_came_from() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/var/lib/dpkg/status",
            "Package: containerd\nStatus: install ok installed\nVersion: 1.7.24~ds1-6\n",
        ),
    ]);
    let p = t
        .load(Runtime::Containerd, Some("2.1.9"))
        .plan(&img("r.example/x"));
    let v = p.containerd.clone().unwrap();
    assert_eq!(
        (v.version.as_deref(), v.source),
        (Some("2.1.9"), Some(VersionSource::Flag))
    );
    assert!(render_plan_text(&p).contains("containerd 2.1.9 (from --containerd-version)"));
    let p = t.load(Runtime::Containerd, None).plan(&img("r.example/x"));
    assert!(render_plan_text(&p).contains("containerd 1.7.24 (from the node's dpkg status)"));
    let bare = Tree::new(&[("/etc/containerd/config.toml", CP)]);
    let p = bare
        .load(Runtime::Containerd, None)
        .plan(&img("r.example/x"));
    assert_eq!(p.containerd.as_ref().unwrap().version, None);
    assert!(render_plan_text(&p).contains("version unknown: assumed 1.x rules"));
    let nc = NodeConfig::load(&NodeConfigOptions {
        host_root: bare.0.path().to_path_buf(),
        runtime: Some(Runtime::Containerd),
        containerd_version: Some(crate::nodeconfig::GivenVersion::node_status(
            "containerd://1.7.24",
        )),
        ..Default::default()
    })
    .unwrap();
    assert!(render_plan_text(&nc.plan(&img("r.example/x")))
        .contains("containerd 1.7.24 (from the Node's containerRuntimeVersion)"));
}

#[test]
fn config_path_defaults_from_2_2_unless_legacy_mirrors() {
    let no_cp = "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n";
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", no_cp),
        (
            "/etc/docker/certs.d/r.example/hosts.toml",
            "[host.\"https://m.example\"]\n",
        ),
    ]);
    let plan_of = |v| {
        t.load(Runtime::Containerd, Some(v))
            .plan(&img("r.example/x"))
    };
    // 2.2's default has two roots, which its transfer-service pull does not split.
    let p = plan_of("2.2.0");
    assert_eq!(urls(&p), vec!["https r.example/v2"]);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::MultiRootConfigPathIgnored));
    assert_eq!(urls(&plan_of("2.1.9")), vec!["https r.example/v2"]);
    let local = Tree::new(&[
        (
            "/etc/containerd/config.toml",
            "version = 3\n[plugins.'io.containerd.cri.v1.images']\nuse_local_image_pull = true\n[plugins.'io.containerd.cri.v1.images'.registry]\n",
        ),
        (
            "/etc/docker/certs.d/r.example/hosts.toml",
            "[host.\"https://m.example\"]\n",
        ),
    ]);
    let p = local
        .load(Runtime::Containerd, Some("2.2.0"))
        .plan(&img("r.example/x"));
    assert_eq!(
        urls(&p),
        vec!["https m.example/v2?ns=r.example", "https r.example/v2"]
    );
    let p = local
        .load(Runtime::Containerd, Some("2.1.9"))
        .plan(&img("r.example/x"));
    assert_eq!(urls(&p), vec!["https r.example/v2"]);
    let legacy = Tree::new(&[(
        "/etc/containerd/config.toml",
        "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'r.example']\nendpoint = ['https://legacy.example']\n",
    )]);
    let p = legacy
        .load(Runtime::Containerd, Some("2.2.0"))
        .plan(&img("r.example/x"));
    assert_eq!(urls(&p)[0], "https legacy.example/v2?ns=r.example");
}

#[test]
fn hosts_toml_keys_by_release() {
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/r.example/hosts.toml",
            "[host.\"https://m.example\"]\n  dial_timeout = \"2s\"\n[host.\"https://n.example\"]\n  capabilities = [\"pull\", \"resolve\", \"referrers\"]\n",
        ),
    ]);
    let plan_of = |v| {
        t.load(Runtime::Containerd, Some(v))
            .plan(&img("r.example/x"))
    };
    // < 2.2: `referrers` is an unknown capability, the whole file is ignored.
    for v in ["1.7.24", "2.1.9"] {
        let p = plan_of(v);
        assert_eq!(urls(&p), vec!["https r.example/v2"], "{v}");
        assert!(p
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::HostsTomlIgnored));
    }
    // 2.2 reads both keys.
    let p = plan_of("2.2.0");
    assert_eq!(
        p.endpoints[0].dial_timeout,
        Some(std::time::Duration::from_secs(2))
    );
    assert!(p.endpoints[1].capabilities.referrers);
    // dial_timeout before 2.1: an unknown key, noted, never applied.
    let t = Tree::new(&[
        ("/etc/containerd/config.toml", CP),
        (
            "/etc/containerd/certs.d/r.example/hosts.toml",
            "[host.\"https://m.example\"]\n  dial_timeout = \"2s\"\n",
        ),
    ]);
    let p = t
        .load(Runtime::Containerd, Some("1.7.24"))
        .plan(&img("r.example/x"));
    assert_eq!(p.endpoints[0].dial_timeout, None);
    assert!(p
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Note && f.message.contains("dial_timeout")));
}
