//! CRI-O's pull path through `pullprobe plan --runtime crio` / `pullprobe check --runtime crio`.
//!
//! No CRI-O daemon exists on this machine, so the plans are checked against the rules of
//! containers-registries.conf(5) v2 (containers/image pkg/sysregistriesv2, reproduced in
//! ../shared/pull-path.md §2): mirrors in file order then the location, longest prefix,
//! `*.domain`, digest-only mirrors, `blocked`, `insecure`, drop-ins. Where a rule shows on the
//! wire, the same `registries.conf` is given to `skopeo inspect --raw --registries-conf FILE`
//! (skopeo 1.9 uses the same containers/image code as CRI-O) against real registries, and
//! skopeo's success/failure must agree with pullprobe's verdict.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use harness::*;
use serde_json::Value;

const REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

/// A CRI-O node tree under a temp dir.
struct CrioTree {
    dir: tempfile::TempDir,
}

impl CrioTree {
    fn new(registries_conf: &str) -> CrioTree {
        let dir = tempfile::Builder::new()
            .prefix("crio-node-")
            .tempdir()
            .expect("tempdir");
        let t = CrioTree { dir };
        t.write(REGISTRIES_CONF, registries_conf);
        t.write("/etc/crio/crio.conf", "[crio.image]\n");
        t.write("/etc/hosts", "127.0.0.1 localhost\n");
        t.write(
            "/etc/resolv.conf",
            "nameserver 127.0.99.99\noptions timeout:1 attempts:1\n",
        );
        t
    }

    fn root(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn real(&self, node_path: &str) -> PathBuf {
        self.dir.path().join(node_path.trim_start_matches('/'))
    }

    fn write(&self, node_path: &str, content: &str) -> PathBuf {
        let p = self.real(node_path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write node file");
        p
    }

    /// Real path of the node's registries.conf (for skopeo's `--registries-conf`).
    fn registries_conf(&self) -> PathBuf {
        self.real(REGISTRIES_CONF)
    }

    /// `pullprobe plan --runtime crio --host-root T --json IMAGE`.
    fn plan(&self, image: &str) -> Plan {
        let root = self.root();
        let out = run_pullprobe(
            &[
                "plan",
                "--runtime",
                "crio",
                "--host-root",
                &root,
                "--json",
                image,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "plan {image}: {stderr}");
        Plan(lines.into_iter().next().expect("line"))
    }

    /// `pullprobe check --runtime crio --host-root T --json IMAGE`.
    fn check(&self, image: &str) -> Value {
        let root = self.root();
        let out = run_pullprobe(
            &[
                "check",
                "--runtime",
                "crio",
                "--host-root",
                &root,
                "--json",
                "--timeout",
                "20s",
                image,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines = json_lines(&out.stdout);
        assert_eq!(lines.len(), 1, "check {image}: {stderr}");
        lines.into_iter().next().expect("line")
    }
}

struct Plan(Value);

impl Plan {
    fn endpoints(&self) -> Vec<Value> {
        self.0["endpoints"].as_array().cloned().unwrap_or_default()
    }
    /// (host of api_root, repository it is asked for, is_upstream) per endpoint.
    fn order(&self) -> Vec<(String, String, bool)> {
        let image_path = self.image_path();
        self.endpoints()
            .iter()
            .map(|e| {
                let root = e["api_root"].as_str().unwrap_or_default();
                let host = root
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches("/v2")
                    .to_string();
                let repo = e["repository"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| image_path.clone());
                (host, repo, e["is_upstream"].as_bool().unwrap_or(false))
            })
            .collect()
    }
    /// The image's path (without domain and tag) as the plan prints it.
    fn image_path(&self) -> String {
        let img = self.0["image"].as_str().unwrap_or_default();
        let no_digest = img.split('@').next().unwrap_or(img);
        let (domain_and_path, _) = match no_digest.rsplit_once(':') {
            Some((a, t)) if !t.contains('/') => (a, t),
            _ => (no_digest, ""),
        };
        domain_and_path
            .split_once('/')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default()
    }
    fn blocked(&self) -> bool {
        self.0["blocked"].as_bool().unwrap_or(false)
    }
}

fn o(host: &str, repo: &str, upstream: bool) -> (String, String, bool) {
    (host.to_string(), repo.to_string(), upstream)
}

// ---------------------------------------------------------------------------------------------
// Rules (plan only)

#[test]
fn mirrors_in_file_order_then_location_with_rewrites() {
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"

[[registry.mirror]]
location = "mirror-1.example.net/m1"

[[registry.mirror]]
location = "mirror-2.example.net"
insecure = true
"#,
    );
    let p = t.plan("example.com/foo/app:v1");
    assert_eq!(
        p.order(),
        vec![
            o("mirror-1.example.net", "m1/app", false),
            o("mirror-2.example.net", "app", false),
            o("internal.example.com", "bar/app", true),
        ],
        "{:#}",
        p.0
    );
    let eps = p.endpoints();
    // insecure: https first, then plain http, without verification.
    assert_eq!(eps[1]["scheme"], "https_then_http", "{:#}", p.0);
    assert_eq!(eps[1]["tls"]["skip_verify"], true);
    assert_eq!(eps[0]["scheme"], "https");
    assert_eq!(eps[0]["tls"]["skip_verify"], false);
    // docker_image_src.go: the kubelet's credentials are dropped for every source whose
    // domain differs from the reference's (example.com) — the rewritten location included.
    for e in &eps {
        assert_eq!(e["send_credentials"], false, "{e:#}");
    }
    // containers/image never adds containerd's ?ns=.
    assert!(eps.iter().all(|e| e["namespace"].is_null()));
}

#[test]
fn credentials_kept_for_same_domain_sources() {
    let t = CrioTree::new(
        r#"
[[registry]]
location = "registry.example.com"
[[registry.mirror]]
location = "registry.example.com/cache"
[[registry.mirror]]
location = "other.example.com"
"#,
    );
    let p = t.plan("registry.example.com/team/app:v1");
    assert_eq!(
        p.order(),
        vec![
            o("registry.example.com", "cache/team/app", false),
            o("other.example.com", "team/app", false),
            o("registry.example.com", "team/app", true),
        ]
    );
    let sends: Vec<bool> = p
        .endpoints()
        .iter()
        .map(|e| e["send_credentials"].as_bool().unwrap())
        .collect();
    assert_eq!(sends, vec![true, false, true], "{:#}", p.0);
}

#[test]
fn longest_prefix_wins_on_path_segment_boundaries() {
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "example.com"
location = "short.example.net"

[[registry]]
prefix = "example.com/foo"
location = "long.example.net/foo"
"#,
    );
    assert_eq!(
        t.plan("example.com/foo/app:v1").order(),
        vec![o("long.example.net", "foo/app", true)]
    );
    // `example.com/foo` does not match `example.com/foobar/...` (the next character must be
    // `/`, `:` or `@`), so the shorter prefix applies.
    assert_eq!(
        t.plan("example.com/foobar/app:v1").order(),
        vec![o("short.example.net", "foobar/app", true)]
    );
    // No [[registry]] matches: the reference's own host.
    assert_eq!(
        t.plan("unrelated.example.org/x/y:v1").order(),
        vec![o("unrelated.example.org", "x/y", true)]
    );
}

#[test]
fn wildcard_subdomain_prefix() {
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "*.example.com"
[[registry.mirror]]
location = "mirror.example.net"

[[registry]]
prefix = "blocked-not.example.org"
location = "x.example.org"
"#,
    );
    // Any number of subdomain levels; no location = no rewrite of the primary.
    assert_eq!(
        t.plan("a.b.example.com/team/app:v1").order(),
        vec![
            o("mirror.example.net", "team/app", false),
            o("a.b.example.com", "team/app", true),
        ]
    );
    // The bare domain is not a subdomain.
    assert_eq!(
        t.plan("example.com/team/app:v1").order(),
        vec![o("example.com", "team/app", true)]
    );
    // `*.example.com` must sit in the host part.
    assert_eq!(
        t.plan("other.org/x.example.com/app:v1").order(),
        vec![o("other.org", "x.example.com/app", true)]
    );
}

#[test]
fn wildcard_loses_to_a_longer_prefix_string() {
    // findRegistryWithParsedConfig compares len(r.Prefix): "*.example.com" (13) loses to
    // "registry.example.com" (20) for registry.example.com/... even though both match.
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "*.example.com"
location = ""
[[registry.mirror]]
location = "wild-mirror.example.net"

[[registry]]
prefix = "registry.example.com"
location = "registry.example.com"
[[registry.mirror]]
location = "exact-mirror.example.net"
"#,
    );
    assert_eq!(
        t.plan("registry.example.com/app:v1").order()[0].0,
        "exact-mirror.example.net"
    );
    assert_eq!(
        t.plan("x.example.com/app:v1").order()[0].0,
        "wild-mirror.example.net"
    );
}

#[test]
fn mirror_by_digest_only_and_pull_from_mirror() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let t = CrioTree::new(
        r#"
[[registry]]
location = "digest.example.com"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.example.net"

[[registry]]
location = "split.example.com"
[[registry.mirror]]
location = "tags.example.net"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "digests.example.net"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "all.example.net"
"#,
    );
    assert_eq!(
        t.plan("digest.example.com/app:v1").order(),
        vec![o("digest.example.com", "app", true)],
        "tags never go to digest-only mirrors"
    );
    assert_eq!(
        t.plan(&format!("digest.example.com/app@{digest}")).order(),
        vec![
            o("m.example.net", "app", false),
            o("digest.example.com", "app", true)
        ]
    );
    assert_eq!(
        t.plan("split.example.com/app:v1").order(),
        vec![
            o("tags.example.net", "app", false),
            o("all.example.net", "app", false),
            o("split.example.com", "app", true),
        ]
    );
    assert_eq!(
        t.plan(&format!("split.example.com/app@{digest}")).order(),
        vec![
            o("digests.example.net", "app", false),
            o("all.example.net", "app", false),
            o("split.example.com", "app", true),
        ]
    );
}

#[test]
fn docker_hub_prefixes_spell_out_library() {
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "docker.io/library/nginx"
location = "docker.io/library/nginx"
[[registry.mirror]]
location = "hub-mirror.example.net/library/nginx"

[[registry]]
prefix = "docker.io/nginx"
location = "wrong.example.net"
"#,
    );
    let p = t.plan("nginx");
    assert_eq!(
        p.order(),
        vec![
            o("hub-mirror.example.net", "library/nginx", false),
            // docker_client.go: docker.io is served by registry-1.docker.io.
            o("registry-1.docker.io", "library/nginx", true),
        ],
        "{:#}",
        p.0
    );
}

#[test]
fn drop_ins_override_the_same_prefix_in_name_order() {
    let t = CrioTree::new(
        r#"
[[registry]]
location = "example.com"
[[registry.mirror]]
location = "from-main.example.net"
"#,
    );
    t.write(
        "/etc/containers/registries.conf.d/50-a.conf",
        "[[registry]]\nlocation = \"example.com\"\n[[registry.mirror]]\nlocation = \"from-50.example.net\"\n",
    );
    t.write(
        "/etc/containers/registries.conf.d/90-b.conf",
        "[[registry]]\nlocation = \"example.com\"\n[[registry.mirror]]\nlocation = \"from-90.example.net\"\n",
    );
    // Not a .conf file: ignored.
    t.write(
        "/etc/containers/registries.conf.d/99-c.conf.bak",
        "[[registry]]\nlocation = \"example.com\"\nblocked = true\n",
    );
    let p = t.plan("example.com/app:v1");
    assert_eq!(
        p.order(),
        vec![
            o("from-90.example.net", "app", false),
            o("example.com", "app", true)
        ]
    );
    assert!(!p.blocked());
}

#[test]
fn blocked_registry_plan_and_check_verdict() {
    let t = CrioTree::new(
        r#"
[[registry]]
prefix = "blocked.example.com"
location = "blocked.example.com"
blocked = true
"#,
    );
    let p = t.plan("blocked.example.com/app:v1");
    assert!(p.blocked(), "{:#}", p.0);
    // check refuses before any network: verdict `blocked`, nothing resolved.
    let v = t.check("blocked.example.com/app:v1");
    assert_eq!(v["verdict"], "blocked", "{v:#}");
    assert_eq!(v["reason"], "RegistryBlocked", "{v:#}");
    assert!(
        v["attempts"].as_array().is_none_or(|a| a.is_empty()),
        "{v:#}"
    );
}

#[test]
fn certs_d_directory_uses_host_colon_port() {
    let pki = Pki::new();
    let t = CrioTree::new("");
    let ca = std::fs::read_to_string(&pki.ca_cert).expect("ca");
    // containers-certs.d: `host:port` (no `host_port_` form); /etc/containers/certs.d before
    // /etc/docker/certs.d, first existing directory wins.
    t.write("/etc/containers/certs.d/reg.example.com:5000/ca.crt", &ca);
    t.write("/etc/docker/certs.d/reg.example.com:5000/other.crt", &ca);
    t.write(
        "/etc/containers/certs.d/reg.example.com_5000_/ignored.crt",
        &ca,
    );
    let p = t.plan("reg.example.com:5000/app:v1");
    let e = &p.endpoints()[0];
    let cas: Vec<String> = e["tls"]["extra_ca_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(cas.len(), 1, "{e:#}");
    assert!(
        cas[0].ends_with("/etc/containers/certs.d/reg.example.com:5000/ca.crt"),
        "{cas:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the wire: skopeo (containers/image) with the same registries.conf

/// `skopeo inspect --raw --registries-conf FILE docker://REF` (no credentials).
fn skopeo(conf: &Path, reference: &str) -> Result<(), String> {
    skopeo_creds(conf, reference, None)
}

/// Like `skopeo`, with `--creds u:p` (containers/image's `DockerAuthConfig`, which is what CRI-O
/// makes of the kubelet's AuthConfig) and an empty auth file (no other credential source).
fn skopeo_creds(conf: &Path, reference: &str, creds: Option<&str>) -> Result<(), String> {
    let empty_auth = tempfile::NamedTempFile::new().expect("auth file");
    std::fs::write(empty_auth.path(), "{}").expect("write auth file");
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "--registries-conf"])
        .arg(conf)
        .args(["inspect", "--raw", "--retry-times", "0"]);
    match creds {
        Some(c) => {
            cmd.arg("--creds").arg(c);
        }
        None => {
            cmd.arg("--no-creds");
        }
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .env_remove("CONTAINERS_REGISTRIES_CONF")
        .env("REGISTRY_AUTH_FILE", empty_auth.path())
        .output()
        .expect("run skopeo");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs both; asserts skopeo succeeds ⟺ pullprobe says ready/degraded; returns pullprobe's line.
fn agree(name: &str, t: &CrioTree, image: &str) -> (Value, Result<(), String>) {
    let t0 = Instant::now();
    let v = t.check(image);
    let pp_ms = t0.elapsed().as_millis();
    let t0 = Instant::now();
    let s = skopeo(&t.registries_conf(), image);
    let sk_ms = t0.elapsed().as_millis();
    eprintln!(
        "CRIO | {name:<32} | pullprobe {:<9} {:<24} {pp_ms:>5} ms | skopeo {:<6} {sk_ms:>5} ms | {}",
        v["verdict"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or("-"),
        if s.is_ok() { "ok" } else { "failed" },
        s.as_ref()
            .err()
            .map(|e| e.chars().take(120).collect::<String>())
            .unwrap_or_default()
    );
    let pulls = matches!(v["verdict"].as_str(), Some("ready" | "degraded"));
    assert_eq!(
        pulls,
        s.is_ok(),
        "DISAGREEMENT with skopeo (containers/image) in {name}: skopeo {s:?}, pullprobe {v:#}"
    );
    (v, s)
}

fn attempt_endpoints(v: &Value) -> Vec<String> {
    v["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| a["endpoint"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn wire_mirror_ok_broken_mirror_all_down() {
    let good = Registry::plain();
    let img = OciImage::single("v1");
    let pushed = img.push(&good, "team/app", &PushOpts::insecure());
    let dead = format!("127.0.0.1:{}", free_port());
    let dead2 = format!("127.0.0.1:{}", free_port());
    let gh = good.host_port();

    // Mirror works (location is down): ready from the mirror.
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{dead}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{gh}\"\ninsecure = true\n"
    ));
    let (v, _) = agree("mirror ok", &t, &format!("{dead}/team/app:v1"));
    assert_eq!(v["verdict"], "ready", "{v:#}");
    assert_eq!(v["manifest"]["digest"], pushed.digest, "{v:#}");

    // Mirror down, location works: degraded.
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{gh}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{dead}\"\ninsecure = true\n"
    ));
    let (v, _) = agree("broken mirror → location", &t, &format!("{gh}/team/app:v1"));
    assert_eq!(v["verdict"], "degraded", "{v:#}");
    let eps = attempt_endpoints(&v);
    assert_eq!(eps.len(), 2, "{v:#}");
    assert!(eps[0].contains(&dead) && eps[1].contains(&gh), "{eps:?}");

    // Everything down.
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{dead2}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{dead}\"\ninsecure = true\n"
    ));
    let (v, _) = agree("all down", &t, &format!("{dead2}/team/app:v1"));
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["reason"], "ConnectRefused", "{v:#}");
}

#[test]
fn wire_rewritten_location_and_digest_only_mirror() {
    let good = Registry::plain();
    let img = OciImage::single("v1");
    let pushed = img.push(&good, "mirrored/team/app", &PushOpts::insecure());
    let gh = good.host_port();
    let dead = format!("127.0.0.1:{}", free_port());

    // The mirror serves the image under a rewritten path; digest-only: tags skip it.
    let t = CrioTree::new(&format!(
        "[[registry]]\nprefix = \"{dead}/team\"\nlocation = \"{dead}/team\"\ninsecure = true\n\
         mirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"{gh}/mirrored/team\"\ninsecure = true\n"
    ));
    let (v, _) = agree(
        "digest-only mirror, tag",
        &t,
        &format!("{dead}/team/app:v1"),
    );
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(attempt_endpoints(&v).len(), 1, "{v:#}");

    let by_digest = format!("{dead}/team/app@{}", pushed.digest);
    let (v, _) = agree("digest-only mirror, digest", &t, &by_digest);
    assert_eq!(v["verdict"], "ready", "{v:#}");
}

#[test]
fn wire_insecure_false_plain_http_mirror_is_skipped() {
    let good = Registry::plain();
    OciImage::single("v1").push(&good, "team/app", &PushOpts::insecure());
    let gh = good.host_port();
    let other = Registry::plain();
    OciImage::single("v1").push(&other, "team/app", &PushOpts::insecure());
    let oh = other.host_port();
    // The mirror is plain HTTP but not `insecure`: TLS only, so it fails; the location is
    // insecure and works → degraded.
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{oh}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{gh}\"\n"
    ));
    let (v, _) = agree(
        "secure mirror on plain http",
        &t,
        &format!("{oh}/team/app:v1"),
    );
    assert_eq!(v["verdict"], "degraded", "{v:#}");
    let first = &v["attempts"][0];
    assert_eq!(first["phase"], "tls", "{v:#}");
}

#[test]
fn wire_blocked_registry() {
    let good = Registry::plain();
    OciImage::single("v1").push(&good, "team/app", &PushOpts::insecure());
    let gh = good.host_port();
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{gh}\"\ninsecure = true\nblocked = true\n"
    ));
    let image = format!("{gh}/team/app:v1");
    let v = t.check(&image);
    assert_eq!(v["verdict"], "blocked", "{v:#}");
    let s = skopeo(&t.registries_conf(), &image);
    assert!(
        s.as_ref().is_err_and(|e| e.contains("blocked")),
        "skopeo must refuse a blocked registry: {s:?}"
    );
}

#[test]
fn wire_kubelet_credentials_not_sent_to_a_mirror_on_another_domain() {
    // docker_image_src.go: the kubelet's AuthConfig (skopeo --creds) is cleared for a pull
    // source whose domain differs from the reference's: a mirror needing those credentials
    // fails; a mirror on the same domain gets them.
    let reg = Registry::builder()
        .htpasswd(&[("puller", "s3cret")])
        .start();
    let creds = PushOpts::insecure().creds("puller", "s3cret");
    let img = OciImage::single("v1");
    img.push(&reg, "team/app", &creds);
    img.push(&reg, "cache/team/app", &creds);
    let rh = reg.host_port();
    let dead = format!("127.0.0.1:{}", free_port());

    // Mirror on another domain (the registry), location down.
    let t = CrioTree::new(&format!(
        "[[registry]]\nlocation = \"{dead}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{rh}\"\ninsecure = true\n"
    ));
    t.write(
        "/var/lib/kubelet/config.json",
        &serde_json::json!({"auths": {dead.as_str(): {"username": "puller", "password": "s3cret"}}})
            .to_string(),
    );
    let image = format!("{dead}/team/app:v1");
    let v = t.check(&image);
    let s = skopeo_creds(&t.registries_conf(), &image, Some("puller:s3cret"));
    eprintln!(
        "CRIO | creds, mirror on other domain | pullprobe {} {} | skopeo {:?}",
        v["verdict"],
        v["reason"],
        s.as_ref().map(|_| ())
    );
    assert!(
        s.is_err(),
        "skopeo must not send --creds to the mirror: {s:?}"
    );
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(
        v["attempts"][0]["reason"], "AuthCredentialsRequired",
        "{v:#}"
    );

    // Mirror on the same domain as the reference (a path on the registry itself).
    let t = CrioTree::new(&format!(
        "[[registry]]\nprefix = \"{rh}/team\"\nlocation = \"{rh}/team\"\ninsecure = true\n\
         [[registry.mirror]]\nlocation = \"{rh}/cache/team\"\ninsecure = true\n"
    ));
    t.write(
        "/var/lib/kubelet/config.json",
        &serde_json::json!({"auths": {rh.as_str(): {"username": "puller", "password": "s3cret"}}})
            .to_string(),
    );
    let image = format!("{rh}/team/app:v1");
    let v = t.check(&image);
    let s = skopeo_creds(&t.registries_conf(), &image, Some("puller:s3cret"));
    eprintln!(
        "CRIO | creds, same-domain mirror     | pullprobe {} {} | skopeo {:?}",
        v["verdict"],
        v["reason"],
        s.as_ref().map(|_| ())
    );
    assert!(s.is_ok(), "{s:?}");
    assert_eq!(v["verdict"], "ready", "{v:#}");
    assert!(
        v["endpoint"].as_str().is_some_and(|e| e.contains(&rh)),
        "{v:#}"
    );
}

/// CRI-O 1.34+ `short_name_mode` (crio.conf `[crio.image]`, drop-ins in crio.conf.d): enforcing
/// (the default) refuses a short name with two unqualified-search registries before any network
/// (CRI-O's `short name mode is enforcing, but image name … returns ambiguous list`); a drop-in
/// with `disabled` makes CRI-O try `a/NAME` then `b/NAME` in order. Oracle: skopeo (the same
/// containers/image) on each fully qualified candidate agrees with pullprobe's attempt on it.
#[test]
fn wire_crio_short_name_mode_enforcing_and_disabled() {
    let a = Registry::plain();
    let b = Registry::plain();
    let img = OciImage::single("v1");
    let pushed = img.push(&b, "team/app", &PushOpts::insecure());
    let (ah, bh) = (a.host_port(), b.host_port());
    let t = CrioTree::new(&format!(
        "unqualified-search-registries = [\"{ah}\", \"{bh}\"]\n\
         [[registry]]\nlocation = \"{ah}\"\ninsecure = true\n\
         [[registry]]\nlocation = \"{bh}\"\ninsecure = true\n"
    ));
    let v = t.check("team/app:v1");
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["reason"], "ShortNameUnresolved", "{v:#}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ambiguous"),
        "{v:#}"
    );
    assert!(attempt_endpoints(&v).is_empty(), "nothing sent: {v:#}");
    let p = t.plan("team/app:v1");
    assert!(
        p.0["crio_short_name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fails:"),
        "{:#}",
        p.0
    );

    // A drop-in turns it off; CRI-O's mode overrides registries.conf's.
    t.write(
        "/etc/crio/crio.conf.d/10-short-names.conf",
        "[crio.image]\nshort_name_mode = \"disabled\"\npull_progress_timeout = \"30s\"\n",
    );
    let v = t.check("team/app:v1");
    assert_eq!(v["verdict"], "degraded", "{v:#}");
    assert_eq!(v["manifest"]["digest"], pushed.digest, "{v:#}");
    let eps = attempt_endpoints(&v);
    assert_eq!(eps.len(), 2, "{v:#}");
    assert!(eps[0].contains(&ah) && eps[1].contains(&bh), "{eps:?}");
    let conf = t.registries_conf();
    assert!(skopeo(&conf, &format!("{ah}/team/app:v1")).is_err());
    assert!(skopeo(&conf, &format!("{bh}/team/app:v1")).is_ok());
    let p = t.plan("team/app:v1");
    assert_eq!(
        p.0["crio_short_name"],
        format!("tried in order: {ah}/team/app, {bh}/team/app"),
        "{:#}",
        p.0
    );
    let findings = p.0["findings"].to_string();
    assert!(
        findings.contains("short_name_mode: disabled (/etc/crio/crio.conf.d/10-short-names.conf")
            && findings.contains("pull_progress_timeout: 30s"),
        "{findings}"
    );

    // An invalid mode: a problem naming the file and field; CRI-O's default stands.
    t.write(
        "/etc/crio/crio.conf.d/10-short-names.conf",
        "[crio.image]\nshort_name_mode = \"permissive\"\n",
    );
    let p = t.plan("team/app:v1");
    let problems = p.0["problems"].to_string();
    assert!(
        problems.contains("10-short-names.conf") && problems.contains("crio.image.short_name_mode"),
        "{:#}",
        p.0
    );
    assert!(
        p.0["crio_short_name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fails:"),
        "{:#}",
        p.0
    );
}
