//! Proof against the real runtimes: for each scenario, a node host-root tree is generated
//! (`etc/containerd/config.toml` with `config_path`, `certs.d/*/hosts.toml`, kubelet
//! `config.json`, credential-provider config + plugin script), real registries are started, and
//! BOTH `pullprobe check --host-root TREE --containerd-version V` and Debian's containerd V pull
//! the image, for every V the tests run (`Series`: 1.6.20, 1.7.x, 2.x; side by side, one shared
//! daemon per version: tests/harness/containerd.rs). Their verdicts must agree (containerd pulls
//! ↔ ready/degraded; fails ↔ not_ready), and pullprobe's reason/phase are checked precisely.
//!
//! Each version reads a config of its era: the tree holds `config.toml` (`version = 2`, read
//! for 1.x) and `config-v3.toml` (`version = 3`, given to pullprobe with `--containerd-config`
//! for 2.x); the CRI scenarios start a daemon with the same tables.
//!
//! Hermetic by construction: every registry name is a loopback IP (containerd resolves with the
//! machine's real resolver, so no name here may need DNS).
//!
//! ctr passes `--user` to every host, as the CRI plugin does with the kubelet's AuthConfig
//! (`ParseAuth` with no ServerAddress), so `--user` stands in for the kubelet credential.
//!
//! Every comparison prints one `ORACLE |` line (version, scenario, both answers): the per-version
//! agreement counts in the README come from them.

mod harness;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

const CERTS_D: &str = "/etc/containerd/certs.d";
/// The 2.x node's config (version 3), beside the 1.x one.
const CONFIG_V3: &str = "/etc/containerd/config-v3.toml";

/// Runs `body` once per containerd series, side by side; a failure names its series.
fn each_series(body: impl Fn(Series) + Sync) {
    let failed: Vec<String> = std::thread::scope(|sc| {
        let runs: Vec<_> = Series::ALL
            .iter()
            .map(|&s| {
                (
                    s,
                    sc.spawn({
                        let body = &body;
                        move || body(s)
                    }),
                )
            })
            .collect();
        runs.into_iter()
            .filter_map(|(s, h)| {
                h.join()
                    .is_err()
                    .then(|| format!("containerd {}", s.version()))
            })
            .collect()
    });
    assert!(
        failed.is_empty(),
        "failed against {} (see above)",
        failed.join(", ")
    );
}

/// The node config of `series`' era with `registry_body` as its CRI registry table (node paths;
/// sub-tables written with the 1.x names are renamed for 2.x).
fn era_config(series: Series, registry_body: &str) -> String {
    let table = series.registry_table();
    format!(
        "version = {}\n[{table}]\n{}",
        series.config_version(),
        registry_body.replace("plugins.\"io.containerd.grpc.v1.cri\".registry", &table)
    )
}

/// `--containerd-version V` and, for 2.x, the config of its era.
fn version_args(series: Series) -> Vec<&'static str> {
    let mut a = vec!["--containerd-version", series.version()];
    if series == Series::V2 {
        a.extend(["--containerd-config", CONFIG_V3]);
    }
    a
}

/// A node's filesystem as mounted under `--host-root`.
struct NodeTree {
    dir: tempfile::TempDir,
}

impl NodeTree {
    /// containerd 1.x config (`version = 2`) with `config_path = /etc/containerd/certs.d` (a
    /// NODE path), `/etc/hosts` naming only localhost, and a resolv.conf that must never be used.
    fn new() -> NodeTree {
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir()
            .expect("tempdir");
        let t = NodeTree { dir };
        let body = format!("  config_path = \"{CERTS_D}\"\n");
        t.write(
            "/etc/containerd/config.toml",
            &era_config(Series::V1_6, &body),
        );
        t.write(CONFIG_V3, &era_config(Series::V2, &body));
        t.write("/etc/hosts", "127.0.0.1 localhost\n");
        // Loopback port 53 on an address nothing listens on: a lookup would fail fast.
        t.write(
            "/etc/resolv.conf",
            "nameserver 127.0.99.99\noptions timeout:1 attempts:1\n",
        );
        std::fs::create_dir_all(t.real(CERTS_D)).expect("mkdir certs.d");
        t
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Real path of a node path.
    fn real(&self, node_path: &str) -> PathBuf {
        self.dir.path().join(node_path.trim_start_matches('/'))
    }

    fn write(&self, node_path: &str, content: &str) -> PathBuf {
        let p = self.real(node_path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write node file");
        p
    }

    fn copy(&self, from: &Path, node_path: &str) {
        let p = self.real(node_path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &p).expect("copy into node tree");
    }

    /// `certs.d/<dir_name>/hosts.toml`.
    fn hosts_toml(&self, dir_name: &str, content: &str) {
        self.write(&format!("{CERTS_D}/{dir_name}/hosts.toml"), content);
    }

    /// The real certs.d directory (ctr's `--hosts-dir`).
    fn certs_d(&self) -> PathBuf {
        self.real(CERTS_D)
    }

    /// The kubelet's node `config.json` (`--root-dir` default `/var/lib/kubelet`).
    fn kubelet_config_json(&self, registry: &str, user: &str, pass: &str) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        self.write(
            "/var/lib/kubelet/config.json",
            &serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
        );
    }
}

/// `host:port` → containerd's `host_port_` directory form.
fn underscore_dir(host_port: &str) -> String {
    let (h, p) = host_port.rsplit_once(':').expect("host:port");
    format!("{h}_{p}_")
}

/// A loopback `127.0.0.1:PORT` where nothing listens (connection refused).
fn dead_host() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// What both tools said for one scenario.
struct Both {
    series: Series,
    name: &'static str,
    image: String,
    pp: Value,
    pp_stderr: String,
    pp_ms: u128,
    ctr: Result<(), String>,
    ctr_ms: u128,
}

impl Both {
    fn verdict(&self) -> &str {
        self.pp["verdict"].as_str().unwrap_or("?")
    }
    fn reason(&self) -> Option<&str> {
        self.pp["reason"].as_str()
    }
    fn phase(&self) -> Option<&str> {
        self.pp["phase"].as_str()
    }
    fn attempts(&self) -> Vec<Value> {
        self.pp["attempts"].as_array().cloned().unwrap_or_default()
    }
    fn ctx(&self) -> String {
        format!(
            "containerd {}, scenario {}: image {}\ncontainerd: {:?}\npullprobe: {:#}\npullprobe stderr: {}",
            self.series.version(), self.name, self.image, self.ctr, self.pp, self.pp_stderr
        )
    }

    /// The core oracle assertion: containerd pulls ⟺ pullprobe says ready/degraded.
    fn assert_agree(&self) {
        let pp_pulls = matches!(self.verdict(), "ready" | "degraded");
        assert_eq!(
            pp_pulls,
            self.ctr.is_ok(),
            "DISAGREEMENT with containerd {}: it {} but pullprobe says {}\n{}",
            self.series.version(),
            if self.ctr.is_ok() { "pulled" } else { "failed" },
            self.verdict(),
            self.ctx()
        );
    }

    /// Agreement plus pullprobe's exact verdict and (for failures) phase/reason.
    fn expect(&self, verdict: &str, phase_reason: Option<(&str, &str)>) {
        self.assert_agree();
        assert_eq!(self.verdict(), verdict, "{}", self.ctx());
        match phase_reason {
            Some((phase, reason)) => {
                assert_eq!(self.phase(), Some(phase), "{}", self.ctx());
                assert_eq!(self.reason(), Some(reason), "{}", self.ctx());
            }
            None if verdict == "ready" => {
                assert!(self.reason().is_none(), "{}", self.ctx());
            }
            None => {}
        }
    }

    /// The endpoints pullprobe tried, in order, with (ok, reason).
    fn tried(&self) -> Vec<(String, bool, Option<String>)> {
        self.attempts()
            .iter()
            .map(|a| {
                (
                    a["endpoint"].as_str().unwrap_or_default().to_string(),
                    a["ok"].as_bool().unwrap_or(false),
                    a["reason"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn report(&self) {
        eprintln!(
            "ORACLE | {:<7} | {:<34} | pullprobe {:<9} {:<28} {:>5} ms | containerd {:<6} {:>5} ms | {}",
            self.series.version(),
            self.name,
            self.verdict(),
            self.reason().unwrap_or("-"),
            self.pp_ms,
            if self.ctr.is_ok() { "pulled" } else { "failed" },
            self.ctr_ms,
            match &self.ctr {
                Ok(()) => String::new(),
                Err(e) => e
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .chars()
                    .take(140)
                    .collect(),
            }
        );
    }
}

/// Runs both tools on `image`. `pp_args` are extra pullprobe flags; `ctr_args` extra ctr flags.
fn run_both(
    name: &'static str,
    ctrd: &Containerd,
    tree: &NodeTree,
    image: &str,
    pp_args: &[&str],
    ctr_args: &[&str],
) -> Both {
    run_both_observed(name, ctrd, tree, image, pp_args, ctr_args, || ()).0
}

/// [`run_both`], calling `between` after pullprobe and before containerd (to tell their
/// requests apart on a server that sees both).
fn run_both_observed<T>(
    name: &'static str,
    ctrd: &Containerd,
    tree: &NodeTree,
    image: &str,
    pp_args: &[&str],
    ctr_args: &[&str],
    between: impl FnOnce() -> T,
) -> (Both, T) {
    let root = tree.root().display().to_string();
    let mut args = vec!["check", "--json", "--host-root", &root, "--timeout", "20s"];
    args.extend(version_args(ctrd.series()));
    args.extend_from_slice(pp_args);
    args.push(image);
    let t = Instant::now();
    let out = run_pullprobe(&args, None);
    let pp_ms = t.elapsed().as_millis();
    let pp_stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = json_lines(&out.stdout);
    assert_eq!(
        lines.len(),
        1,
        "scenario {name}: pullprobe printed no JSON line (exit {:?}): {pp_stderr}",
        out.status.code()
    );
    let observed = between();
    let t = Instant::now();
    let ctr = ctrd.ctr_pull(image, Some(&tree.certs_d()), ctr_args);
    let ctr_ms = t.elapsed().as_millis();
    let both = Both {
        series: ctrd.series(),
        name,
        image: image.to_string(),
        pp: lines.into_iter().next().expect("one line"),
        pp_stderr,
        pp_ms,
        ctr,
        ctr_ms,
    };
    both.report();
    (both, observed)
}

/// `pullprobe plan --json` for the tree: the kinds of its findings.
fn plan_finding_kinds(tree: &NodeTree, image: &str, series: Series) -> Vec<String> {
    let root = tree.root().display().to_string();
    let mut args = vec!["plan", "--json", "--host-root", &root];
    args.extend(version_args(series));
    args.push(image);
    let out = run_pullprobe(&args, None);
    let lines = json_lines(&out.stdout);
    lines[0]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A registry from `builder` holding `team/app:v1` pushed with `opts`: (registry, host, image).
fn registry_with_image(
    builder: harness::registry::RegistryBuilder,
    opts: &PushOpts,
) -> (Registry, String, String) {
    let reg = builder.start();
    OciImage::single("v1").push(&reg, "team/app", opts);
    let host = reg.host_port();
    let image = format!("{host}/team/app:v1");
    (reg, host, image)
}

fn plain_registry_with_image(repo: &str) -> (Registry, String) {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, repo, &PushOpts::insecure());
    let host = reg.host_port();
    (reg, host)
}

// ---------------------------------------------------------------------------------------------
// Endpoint selection

#[test]
fn direct_upstream_no_host_dir() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_reg, host) = plain_registry_with_image("team/app");
        let tree = NodeTree::new();
        let image = format!("{host}/team/app:v1");
        let b = run_both("direct", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        // 1.6: a loopback registry without hosts.toml is plain http (no https attempt); 1.7 and
        // later try HTTPS first and fall back to HTTP on the same attempt.
        if s == Series::V1_6 {
            assert_eq!(b.tried(), vec![(format!("http://{host}/v2"), true, None)]);
        } else {
            assert_eq!(b.tried().len(), 1, "{}", b.ctx());
        }

        // A missing tag: both fail, pullprobe names the manifest.
        let missing = format!("{host}/team/app:nope");
        let b = run_both("direct, missing tag", ctrd, &tree, &missing, &[], &[]);
        b.expect("not_ready", Some(("manifest", "ManifestNotFound")));
    });
}

#[test]
fn mirror_ok_upstream_down() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("mirror ok (upstream down)", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        let tried = b.tried();
        assert_eq!(tried.len(), 1, "{}", b.ctx());
        assert_eq!(tried[0].0, format!("http://{mhost}/v2"), "{}", b.ctx());
    });
}

#[test]
fn broken_mirrors_then_upstream_is_degraded() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_up, uhost) = plain_registry_with_image("team/app");
        let dead = dead_host();
        let empty = Registry::plain(); // answers 404 for everything
        let tree = NodeTree::new();
        tree.hosts_toml(
            &uhost,
            &format!(
                "[host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                empty.host_port()
            ),
        );
        let image = format!("{uhost}/team/app:v1");
        let b = run_both("broken mirrors → upstream", ctrd, &tree, &image, &[], &[]);
        b.expect("degraded", None);
        let tried = b.tried();
        assert_eq!(tried.len(), 3, "{}", b.ctx());
        assert_eq!(
            (tried[0].0.as_str(), tried[0].2.as_deref()),
            (format!("http://{dead}/v2").as_str(), Some("ConnectRefused")),
            "{}",
            b.ctx()
        );
        assert_eq!(
            tried[1].0,
            format!("http://{}/v2", empty.host_port()),
            "{}",
            b.ctx()
        );
        assert!(
            matches!(
                tried[1].2.as_deref(),
                Some("ManifestNotFound" | "RepositoryNotFound")
            ),
            "{}",
            b.ctx()
        );
        assert_eq!(tried[2], (format!("http://{uhost}/v2"), true, None));
    });
}

#[test]
fn all_endpoints_failing() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let dead_mirror = dead_host();
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{dead_mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("all endpoints down", ctrd, &tree, &image, &[], &[]);
        // containerd reports its first non-404 error (resolver.go `firstErr`): the mirror's,
        // and says so in its own error text.
        b.expect("not_ready", Some(("connect", "ConnectRefused")));
        assert_eq!(b.tried().len(), 2, "{}", b.ctx());
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{dead_mirror}/v2"),
            "{}",
            b.ctx()
        );
        // ctr's own error (its last line; the lines before are "trying next host" logs).
        let ctr_err = b.ctr.as_ref().err().cloned().unwrap_or_default();
        let last = ctr_err.lines().last().unwrap_or_default();
        let dialed = format!("dial tcp {dead_mirror}");
        assert!(
            last.contains(&dialed),
            "containerd reports the mirror: {}",
            b.ctx()
        );
    });
}

#[test]
fn server_override_never_contacts_upstream() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        // The upstream records every request; it must see none.
        let upstream = ScriptedServer::start(|_| Reply::status(500));
        let up = upstream.host_port();
        let tree = NodeTree::new();
        // containerd 1.6.20 needs a [host] table next to `server` (see the top-level-only test).
        tree.hosts_toml(
        &up,
        &format!(
            "server = \"http://{mhost}\"\n[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    );
        let image = format!("{up}/team/app:v1");
        let b = run_both("server override", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert!(
            b.tried().iter().all(|t| t.0.contains(&mhost)),
            "{}",
            b.ctx()
        );

        let missing = format!("{up}/team/other:v1");
        let b = run_both(
            "server override, not on mirror",
            ctrd,
            &tree,
            &missing,
            &[],
            &[],
        );
        b.expect("not_ready", Some(("manifest", "RepositoryNotFound")));
        assert!(
            b.tried().iter().all(|t| t.0.contains(&mhost)),
            "{}",
            b.ctx()
        );
        assert_eq!(
            upstream.request_count(),
            0,
            "with `server` set, neither containerd nor pullprobe may contact the upstream"
        );
    });
}

#[test]
fn top_level_only_hosts_toml_is_ignored_by_containerd_1_x() {
    each_series(|s| {
        // Version trap (pull-path.md §1): 1.6.20 and 1.7.24 (go-toml v1, `getSortedHosts`)
        // fail to decode a hosts.toml without [host] tables and pull with their defaults,
        // i.e. straight from the upstream; 2.x reads the file.
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let upstream = upstream_without_manifests();
        let up = upstream.host_port();
        let tree = NodeTree::new();
        tree.hosts_toml(&up, &format!("server = \"http://{mhost}\"\n"));
        let image = format!("{up}/team/app:v1");
        let b = run_both("top-level-only hosts.toml", ctrd, &tree, &image, &[], &[]);
        if s == Series::V2 {
            // `server` is the mirror.
            b.expect("ready", None);
            assert_eq!(
                b.pp["endpoint"],
                format!("http://{mhost}/v2"),
                "{}",
                b.ctx()
            );
            return;
        }
        b.expect("not_ready", Some(("manifest", "ManifestNotFound")));
        assert!(
            upstream
                .requests()
                .iter()
                .any(|r| r.method == "HEAD" && r.path == "/v2/team/app/manifests/v1"),
            "containerd {} ignores the file and goes to the upstream: {:?}",
            s.version(),
            upstream.requests()
        );
        // 1.6: plain http to a loopback port; 1.7: HTTPS first, then http.
        assert_eq!(b.pp["endpoint"], format!("http://{up}/v2"), "{}", b.ctx());
        assert!(plan_finding_kinds(&tree, &image, s).contains(&"hosts_toml_ignored".to_string()));
    });
}

// ---------------------------------------------------------------------------------------------
// Host directory lookup

#[test]
fn default_directory_applies_to_any_host() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            "_default",
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("_default directory", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{mhost}/v2"),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn host_port_underscore_directory_wins_over_colon_form() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let dead_mirror = dead_host();
        let tree = NodeTree::new();
        // `host_port_` is looked up first; the `host:port` directory (a dead mirror) and
        // `_default` must then be ignored.
        tree.hosts_toml(
            &underscore_dir(&up),
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        );
        tree.hosts_toml(
            &up,
            &format!("server = \"http://{dead_mirror}\"\n[host.\"http://{dead_mirror}\"]\n"),
        );
        tree.hosts_toml(
            "_default",
            &format!("server = \"http://{dead_mirror}\"\n[host.\"http://{dead_mirror}\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("host_port_ directory", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{mhost}/v2"),
            "{}",
            b.ctx()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// override_path

/// A path-rewriting HTTP proxy standing in for a mirror whose API root is a path prefix
/// (distribution cannot serve under a prefix): `GET /PREFIX/<rest>` → backend `GET /v2/<rest>`;
/// any other path → 404. One request per connection (`Connection: close` is forced).
struct PathRewriteProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl PathRewriteProxy {
    fn start(prefix: &str, backend: &str) -> PathRewriteProxy {
        Self::start_gated(prefix, backend, None)
    }

    /// Like `start`, answering 403 unless the request carries header `name: value`.
    fn start_gated(
        prefix: &str,
        backend: &str,
        required: Option<(&str, &str)>,
    ) -> PathRewriteProxy {
        let required: Option<(String, String)> =
            required.map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()));
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (prefix, backend) = (prefix.to_string(), backend.to_string());
        let (stop2, req2) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                req2.fetch_add(1, Ordering::SeqCst);
                let (prefix, backend, required) =
                    (prefix.clone(), backend.clone(), required.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(c, &prefix, &backend, required.as_ref());
                });
            }
        });
        PathRewriteProxy {
            port,
            stop,
            requests,
        }
    }

    fn serve(
        mut c: TcpStream,
        prefix: &str,
        backend: &str,
        required: Option<&(String, String)>,
    ) -> std::io::Result<()> {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if c.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut parts = first.splitn(3, ' ');
        let (method, path, version) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let Some(rest) = path.strip_prefix(&format!("{prefix}/")) else {
            c.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        if let Some((name, value)) = required {
            let present = text.split("\r\n").skip(1).any(|l| {
                l.split_once(':')
                    .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(name) && v.trim() == value)
            });
            if !present {
                c.write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
        }
        let mut out = format!("{method} /v2/{rest} {version}\r\n");
        for l in lines.filter(|l| !l.is_empty()) {
            if !l.to_ascii_lowercase().starts_with("connection:") {
                out += l;
                out += "\r\n";
            }
        }
        out += "Connection: close\r\n\r\n";
        let mut b = TcpStream::connect(backend)?;
        b.write_all(out.as_bytes())?;
        std::io::copy(&mut b, &mut c)?;
        Ok(())
    }
}

impl Drop for PathRewriteProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn override_path_mirror_under_a_path_prefix() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_reg, rhost) = plain_registry_with_image("team/app");
        let proxy = PathRewriteProxy::start("/api/mirror", &rhost);
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
        &up,
        &format!(
            "[host.\"http://127.0.0.1:{}/api/mirror\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
            proxy.port
        ),
    );
        let image = format!("{up}/team/app:v1");
        let b = run_both("override_path", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://127.0.0.1:{}/api/mirror", proxy.port),
            "{}",
            b.ctx()
        );
        assert!(proxy.requests.load(Ordering::SeqCst) > 0);

        // Without override_path, `/v2` is appended: the proxy answers 404, the upstream is down.
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!(
            "[host.\"http://127.0.0.1:{}/api/mirror\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            proxy.port
        ),
        );
        let b = run_both("no override_path", ctrd, &tree, &image, &[], &[]);
        if s == Series::V2 {
            // 2.x reports the most relevant error: the mirror's 404 (verdict.rs).
            b.assert_agree();
            assert!(
                matches!(b.reason(), Some("ManifestNotFound" | "RepositoryNotFound")),
                "{}",
                b.ctx()
            );
        } else {
            b.expect("not_ready", Some(("connect", "ConnectRefused")));
        }
        assert_eq!(
            b.tried()[0].0,
            format!("http://127.0.0.1:{}/api/mirror/v2", proxy.port),
            "{}",
            b.ctx()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// TLS

/// `server` + one `[host]` table for the same TLS registry, both with `extra` keys.
fn tls_hosts_toml(host: &str, extra: &str) -> String {
    format!("server = \"https://{host}\"\n{extra}\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{extra}\n")
}

#[test]
fn ca_from_hosts_toml_relative_path() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let (_reg, host, image) =
            registry_with_image(Registry::builder().tls(&pki.server), &PushOpts::tls(&pki));

        let tree = NodeTree::new();
        tree.copy(&pki.ca_cert, &format!("{CERTS_D}/{host}/ca.pem"));
        tree.hosts_toml(&host, &tls_hosts_toml(&host, "ca = \"ca.pem\""));
        let b = run_both("ca from hosts.toml", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("https://{host}/v2"),
            "{}",
            b.ctx()
        );

        let tree = NodeTree::new();
        tree.hosts_toml(&host, &tls_hosts_toml(&host, ""));
        let b = run_both("no ca", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("tls", "TLSUnknownAuthority")));
    });
}

#[test]
fn client_certificate_from_hosts_toml() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let (_reg, host, image) = registry_with_image(
            Registry::builder()
                .tls(&pki.server)
                .client_ca(&pki.client_ca_cert),
            &PushOpts::mtls(&pki),
        );

        let tree = NodeTree::new();
        let d = format!("{CERTS_D}/{host}");
        tree.copy(&pki.ca_cert, &format!("{d}/ca.pem"));
        tree.copy(&pki.client.cert, &format!("{d}/client.cert"));
        tree.copy(&pki.client.key, &format!("{d}/client.key"));
        tree.hosts_toml(
            &host,
            &tls_hosts_toml(
                &host,
                "ca = \"ca.pem\"\nclient = [[\"client.cert\", \"client.key\"]]",
            ),
        );
        let b = run_both("client cert", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);

        let tree = NodeTree::new();
        tree.copy(&pki.ca_cert, &format!("{d}/ca.pem"));
        tree.hosts_toml(&host, &tls_hosts_toml(&host, "ca = \"ca.pem\""));
        let b = run_both("client cert missing", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("tls", "TLSClientCertRequired")));
    });
}

#[test]
fn skip_verify_from_hosts_toml() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let (_reg, host, image) = registry_with_image(
            Registry::builder().tls(&pki.unknown_ca_leaf),
            &PushOpts::insecure(),
        );

        let tree = NodeTree::new();
        tree.hosts_toml(&host, &tls_hosts_toml(&host, "skip_verify = true"));
        let b = run_both("skip_verify", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);

        let tree = NodeTree::new();
        tree.hosts_toml(&host, &tls_hosts_toml(&host, "skip_verify = false"));
        let b = run_both("skip_verify = false", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("tls", "TLSUnknownAuthority")));
    });
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[test]
fn credentials_from_kubelet_config_json() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_reg, host, image) = registry_with_image(
            Registry::builder().htpasswd(&[("puller", "s3cret")]),
            &PushOpts::insecure().creds("puller", "s3cret"),
        );

        let tree = NodeTree::new();
        tree.kubelet_config_json(&host, "puller", "s3cret");
        let b = run_both(
            "config.json credentials",
            ctrd,
            &tree,
            &image,
            &[],
            &["--user", "puller:s3cret"],
        );
        b.expect("ready", None);
        assert!(
            b.pp["credential_source"]
                .as_str()
                .is_some_and(|s| s.contains("config.json")),
            "{}",
            b.ctx()
        );
        assert!(!b.pp.to_string().contains("s3cret"), "secret leaked");

        let tree = NodeTree::new();
        let b = run_both("no credentials", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("auth", "AuthCredentialsRequired")));
    });
}

#[test]
fn wrong_credentials() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_reg, host, image) = registry_with_image(
            Registry::builder().htpasswd(&[("puller", "s3cret")]),
            &PushOpts::insecure().creds("puller", "s3cret"),
        );
        let tree = NodeTree::new();
        tree.kubelet_config_json(&host, "puller", "wrong-password");
        let b = run_both(
            "wrong credentials",
            ctrd,
            &tree,
            &image,
            &[],
            &["--user", "puller:wrong-password"],
        );
        b.expect("not_ready", Some(("auth", "AuthCredentialsRejected")));
        assert!(
            !b.pp.to_string().contains("wrong-password"),
            "secret leaked"
        );
    });
}

#[test]
fn credentials_from_credential_provider_plugin() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let issuer = TokenIssuer::builder(&pki)
            .user("alice", "plugin-s3cret")
            .allow("alice", "team/app")
            .start();
        let (_reg, host, image) = registry_with_image(
            Registry::builder().token_auth(&issuer),
            &PushOpts::insecure().creds("alice", "plugin-s3cret"),
        );

        let tree = NodeTree::new();
        let bin_dir = "/usr/libexec/kubernetes/kubelet-plugins/credential-provider/exec";
        let cfg = "/etc/kubernetes/image-credential-provider-config.yaml";
        let script = tree.write(
            &format!("{bin_dir}/test-provider"),
            &format!(
                "#!/bin/sh\ncat >/dev/null\nprintf '%s' '{}'\n",
                serde_json::json!({
                    "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                    "kind": "CredentialProviderResponse",
                    "cacheKeyType": "Registry",
                    "cacheDuration": "0s",
                    "auth": {host.as_str(): {"username": "alice", "password": "plugin-s3cret"}}
                })
            ),
        );
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod plugin");
        }
        tree.write(
            cfg,
            &format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: test-provider\n  matchImages: [\"{host}\"]\n  defaultCacheDuration: \"1m\"\n\
             \x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
        ),
        );
        let b = run_both(
            "credential-provider plugin",
            ctrd,
            &tree,
            &image,
            &[
                "--image-credential-provider-config",
                cfg,
                "--image-credential-provider-bin-dir",
                bin_dir,
            ],
            &["--user", "alice:plugin-s3cret"],
        );
        b.expect("ready", None);
        assert!(
            b.pp["credential_source"]
                .as_str()
                .is_some_and(|s| s.contains("test-provider")),
            "{}",
            b.ctx()
        );
        assert!(!b.pp.to_string().contains("plugin-s3cret"), "secret leaked");
        // containerd holds credentials, so it uses the OAuth2 POST form; so must pullprobe.
        assert!(issuer.post_count() >= 2, "both tools POST to the realm");
    });
}

// ---------------------------------------------------------------------------------------------
// Capabilities, version traps, hostile hosts.toml

#[test]
fn pull_only_mirror_serves_digests_not_tags() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let mirror = Registry::plain();
        let pushed = OciImage::single("v1").push(&mirror, "team/app", &PushOpts::insecure());
        let mhost = mirror.host_port();
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\"]\n"),
        );
        // resolver.go: a tag is resolved only through hosts with pull AND resolve.
        let image = format!("{up}/team/app:v1");
        let b = run_both("pull-only mirror, tag", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("connect", "ConnectRefused")));
        assert!(
            b.tried().iter().all(|t| !t.0.contains(&mhost)),
            "{}",
            b.ctx()
        );
        // A digest goes through hosts with pull.
        let by_digest = format!("{up}/team/app@{}", pushed.digest);
        let b = run_both(
            "pull-only mirror, digest",
            ctrd,
            &tree,
            &by_digest,
            &[],
            &[],
        );
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{mhost}/v2"),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn tls_upstream_without_hosts_toml_is_plain_http_on_1_6() {
    each_series(|s| {
        // Version trap: 1.6 talks plain http to a loopback registry on a port ≠ 443 when no
        // hosts.toml applies, even with a Docker-style `ca.crt` in its directory; a TLS registry
        // answers 400.
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let (_reg, host, image) =
            registry_with_image(Registry::builder().tls(&pki.server), &PushOpts::tls(&pki));
        let tree = NodeTree::new();
        let b = run_both("TLS upstream, no hosts dir", ctrd, &tree, &image, &[], &[]);
        if s != Series::V1_6 {
            // 1.7 and later: a loopback registry gets HTTPS first, unverified, then HTTP.
            b.expect("ready", None);
            return;
        }
        // The TLS server answers the plain request with 400 (ctr: "status code [manifests v1]: 400").
        b.expect("not_ready", Some(("tls", "TLSServerExpectsHTTPS")));
        assert_eq!(b.pp["endpoint"], format!("http://{host}/v2"), "{}", b.ctx());

        let tree = NodeTree::new();
        tree.copy(&pki.ca_cert, &format!("{CERTS_D}/{host}/ca.crt"));
        let b = run_both(
            "TLS upstream, docker ca.crt (1.6)",
            ctrd,
            &tree,
            &image,
            &[],
            &[],
        );
        b.expect("not_ready", Some(("tls", "TLSServerExpectsHTTPS")));
    });
}

#[test]
fn http_host_with_ca_has_no_https_fallback_on_1_6() {
    each_series(|s| {
        // `http://` + TLS settings: ≥ 1.7 tries HTTPS first (NewHTTPFallback); 1.6 stays on http.
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let (_reg, host, image) =
            registry_with_image(Registry::builder().tls(&pki.server), &PushOpts::tls(&pki));
        let tree = NodeTree::new();
        tree.copy(&pki.ca_cert, &format!("{CERTS_D}/{host}/ca.pem"));
        tree.hosts_toml(
        &host,
        &format!(
            "server = \"http://{host}\"\nca = \"ca.pem\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.pem\"\n"
        ),
    );
        let b = run_both("http:// host + ca", ctrd, &tree, &image, &[], &[]);
        if s != Series::V1_6 {
            b.expect("ready", None);
            return;
        }
        b.expect("not_ready", Some(("tls", "TLSServerExpectsHTTPS")));
        assert!(
            b.tried().iter().all(|t| t.0.starts_with("http://")),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn localhost_name_reference() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (reg, _) = plain_registry_with_image("team/app");
        let tree = NodeTree::new();
        let image = format!("localhost:{}/team/app:v1", reg.port());
        let b = run_both("localhost:PORT direct", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
    });
}

#[test]
fn hosts_toml_that_containerd_cannot_parse_is_ignored() {
    each_series(|s| {
        // loadHostDir: a decode error (syntax, unknown capability) is logged and the directory is
        // treated as a Docker cert dir: the upstream with defaults.
        let ctrd = Containerd::shared(s);
        let (_up, uhost) = plain_registry_with_image("team/app");
        let dead = dead_host();
        let image = format!("{uhost}/team/app:v1");
        for (name, body) in [
        (
            "malformed hosts.toml",
            format!("[host.\"http://{dead}\"\n  capabilities = [\"pull\"\n"),
        ),
        (
            "unknown capability",
            format!("[host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\", \"teleport\"]\n"),
        ),
    ] {
        let tree = NodeTree::new();
        tree.hosts_toml(&uhost, &body);
        let b = run_both(
            if name.starts_with("malformed") {
                "malformed hosts.toml"
            } else {
                "unknown capability"
            },
            ctrd,
            &tree,
            &image,
            &[],
            &[],
        );
        b.expect("ready", None);
        assert_eq!(b.tried().len(), 1, "{}", b.ctx());
        assert!(
            plan_finding_kinds(&tree, &image, s).contains(&"hosts_toml_ignored".to_string()),
            "{name}: the plan must say containerd ignores the file"
        );
    }
    });
}

#[test]
fn missing_ca_file_fails_the_whole_pull() {
    each_series(|s| {
        // ConfigureHosts: "unable to read CA cert" fails the resolver before any request, even
        // though a later host would work.
        let ctrd = Containerd::shared(s);
        let (_up, uhost) = plain_registry_with_image("team/app");
        let tree = NodeTree::new();
        tree.hosts_toml(
        &uhost,
        &format!(
            "[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"missing-ca.pem\"\n",
            dead_host()
        ),
    );
        let image = format!("{uhost}/team/app:v1");
        let b = run_both("missing CA file", ctrd, &tree, &image, &[], &[]);
        b.assert_agree();
        assert_eq!(b.verdict(), "not_ready", "{}", b.ctx());
        assert!(
            b.ctr.as_ref().is_err_and(|e| e.contains("missing-ca.pem")),
            "{:?}",
            b.ctr
        );
    });
}

/// A registry-like upstream that knows no manifest (records every request).
fn upstream_without_manifests() -> ScriptedServer {
    ScriptedServer::start(|r| {
        if r.path == "/v2/" {
            Reply::v2_ok()
        } else {
            Reply::json(
                404,
                &serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
            )
        }
    })
}

#[test]
fn per_host_headers_from_hosts_toml() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_reg, rhost) = plain_registry_with_image("team/app");
        let proxy = PathRewriteProxy::start_gated("/gated", &rhost, Some(("X-Mirror-Key", "k1")));
        let upstream = upstream_without_manifests();
        let up = upstream.host_port();
        let mirror = format!("http://127.0.0.1:{}/gated", proxy.port);
        let hosts = |value: &str| {
            format!(
            "[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  [host.\"{mirror}\".header]\n    X-Mirror-Key = \"{value}\"\n"
        )
        };
        let image = format!("{up}/team/app:v1");

        let tree = NodeTree::new();
        tree.hosts_toml(&up, &hosts("k1"));
        let b = run_both("header sent", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(upstream.request_count(), 0);

        // Wrong header: the mirror answers 403, both move on to the upstream, which has no such
        // manifest. containerd's error names the FIRST non-404 failure (resolver.go `firstErr`:
        // the mirror's 403), and so does pullprobe's verdict; the upstream's 404 is in `attempts`.
        let tree = NodeTree::new();
        tree.hosts_toml(&up, &hosts("k2"));
        let b = run_both("wrong header (mirror 403)", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("auth", "AuthDenied")));
        assert_eq!(b.pp["endpoint"], mirror, "{}", b.ctx());
        let tried = b.tried();
        assert_eq!(tried.len(), 2, "{}", b.ctx());
        assert_eq!(tried[0].0, mirror, "{}", b.ctx());
        // Each attempt names its role and where it came from.
        let atts = b.attempts();
        assert_eq!(atts[0]["role"], "mirror 1", "{}", b.ctx());
        assert_eq!(atts[1]["role"], "server", "{}", b.ctx());
        assert!(
            atts[0]["origin"]
                .as_str()
                .is_some_and(|o| o.contains("hosts.toml [host.")),
            "{}",
            b.ctx()
        );
        assert_eq!(
            tried[1].2.as_deref(),
            Some("ManifestNotFound"),
            "{}",
            b.ctx()
        );
        assert!(
            b.ctr.as_ref().is_err_and(|e| e.contains("403")),
            "containerd reports the mirror's 403: {:?}",
            b.ctr
        );
        let agents: Vec<String> = upstream
            .requests()
            .iter()
            .filter_map(|r| r.header("user-agent").map(str::to_string))
            .collect();
        assert!(
            agents.iter().any(|a| a.starts_with("containerd/")),
            "containerd went on to the upstream after the 403: {agents:?}"
        );
        assert!(
            agents.iter().any(|a| a.starts_with("pullprobe/")),
            "{agents:?}"
        );
    });
}

#[test]
fn blob_redirect_to_a_blob_host() {
    each_series(|s| {
        // ctr images pull downloads every layer; the blob host is part of the pull path.
        let ctrd = Containerd::shared(s);
        let (origin, _) = plain_registry_with_image("team/app");
        let blobs = BlobHost::start(origin.storage_dir());
        let cdn = Registry::builder()
            .storage(origin.storage())
            .redirect(&blobs.url())
            .start();
        let dead_cdn = Registry::builder()
            .storage(origin.storage())
            .redirect(&blob_host_down_url())
            .start();
        let tree = NodeTree::new();
        let image = format!("{}/team/app:v1", cdn.host_port());
        let b = run_both("blob host up", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        let image = format!("{}/team/app:v1", dead_cdn.host_port());
        let b = run_both("blob host down", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("blob", "BlobHostUnreachable")));
    });
}

// ---------------------------------------------------------------------------------------------
// The kubelet's exact path: CRI PullImage, the daemon reading the node's config.toml.

/// Writes the node's `config.toml` with `registry_body` as the CRI registry table (node paths),
/// starts a CRI daemon whose registry table is the same text with node paths under
/// `/etc/` made real (so the daemon reads exactly the node's settings), then runs
/// `pullprobe check` and CRI `PullImage` with `kubelet_auth` (what the kubelet would pass after
/// reading the same `config.json`).
fn run_cri_both(
    series: Series,
    name: &'static str,
    tree: &NodeTree,
    registry_body: &str,
    image: &str,
    kubelet_auth: Option<(&str, &str)>,
) -> Both {
    // Each series' own node file, so the three can run side by side on one tree.
    let config = format!("/etc/containerd/config-{}.toml", series.version());
    let node_config = era_config(series, registry_body);
    tree.write(&config, &node_config);
    let root = tree.root().display().to_string();
    let real_tables = node_config
        .split_once('\n')
        .map(|(_, tables)| tables)
        .unwrap_or_default()
        .replace("\"/etc/", &format!("\"{root}/etc/"))
        .replace(":/etc/", &format!(":{root}/etc/"));
    let cri = Containerd::start_cri(series, &real_tables);
    let mut args = vec!["check", "--json", "--host-root", &root, "--timeout", "20s"];
    args.extend(["--containerd-version", series.version()]);
    args.extend(["--containerd-config", &config, image]);
    let t = Instant::now();
    let out = run_pullprobe(&args, None);
    let pp_ms = t.elapsed().as_millis();
    let pp_stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "scenario {name}: {pp_stderr}");
    let t = Instant::now();
    let r = cri.cri_pull(image, kubelet_auth).map(|_| ());
    let ctr_ms = t.elapsed().as_millis();
    let both = Both {
        series,
        name,
        image: image.to_string(),
        pp: lines.into_iter().next().expect("one line"),
        pp_stderr,
        pp_ms,
        ctr: r,
        ctr_ms,
    };
    both.report();
    both
}

#[test]
fn cri_kubelet_credentials_go_to_the_mirror() {
    each_series(|s| {
        // ParseAuth: the kubelet's AuthConfig has no ServerAddress, so containerd sends it to the
        // mirror that answers 401; pullprobe must do the same with the config.json credential
        // that matched the upstream name.
        let mirror = Registry::builder()
            .htpasswd(&[("puller", "s3cret")])
            .start();
        OciImage::single("v1").push(
            &mirror,
            "team/app",
            &PushOpts::insecure().creds("puller", "s3cret"),
        );
        let mhost = mirror.host_port();
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        );
        tree.kubelet_config_json(&up, "puller", "s3cret");
        let image = format!("{up}/team/app:v1");
        let body = format!("  config_path = \"{CERTS_D}\"\n");
        let b = run_cri_both(
            s,
            "CRI: kubelet creds → mirror",
            &tree,
            &body,
            &image,
            Some(("puller", "s3cret")),
        );
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{mhost}/v2"),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn cri_multi_root_config_path_default_dir_of_first_root_wins() {
    each_series(|s| {
        // hostDirFromRoots: each root is searched for host_port_, host:port, _default before the
        // next root, so `_default` in root 1 beats the exact directory in root 2.
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let dead_mirror = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            "_default",
            &format!("server = \"http://{mhost}\"\n[host.\"http://{mhost}\"]\n"),
        );
        tree.write(
            &format!("/etc/docker/certs.d/{up}/hosts.toml"),
            &format!("server = \"http://{dead_mirror}\"\n[host.\"http://{dead_mirror}\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let body = format!("  config_path = \"{CERTS_D}:/etc/docker/certs.d\"\n");
        let b = run_cri_both(s, "CRI: multi-root config_path", &tree, &body, &image, None);
        if s == Series::V2 {
            // 2.1's transfer-service pull does not split config_path: no hosts.toml applies.
            b.expect("not_ready", Some(("connect", "ConnectRefused")));
            return;
        }
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{mhost}/v2"),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn cri_legacy_registry_mirrors() {
    each_series(|s| {
        // Deprecated `registry.mirrors` without config_path: endpoints in order, then the
        // upstream (http for a loopback host).
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let dead_mirror = dead_host();
        let up = dead_host();
        let tree = NodeTree::new();
        let image = format!("{up}/team/app:v1");
        let body = format!(
        "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{up}\"]\n    endpoint = [\"http://{dead_mirror}\", \"http://{mhost}\"]\n"
    );
        let b = run_cri_both(
            s,
            "CRI: legacy registry.mirrors",
            &tree,
            &body,
            &image,
            None,
        );
        b.expect("degraded", None);
        let tried = b.tried();
        assert_eq!(tried.len(), 2, "{}", b.ctx());
        assert_eq!(tried[1].0, format!("http://{mhost}/v2"), "{}", b.ctx());

        // The wildcard key applies to any registry.
        let body = format!(
        "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"*\"]\n    endpoint = [\"http://{mhost}\"]\n"
    );
        let b = run_cri_both(s, "CRI: legacy mirrors \"*\"", &tree, &body, &image, None);
        b.expect("ready", None);
    });
}

#[test]
fn cri_registry_configs_auth_is_the_runtime_credential() {
    each_series(|s| {
        // registry.configs."host".auth is used when the kubelet passes no AuthConfig (with
        // config_path set, as on most nodes).
        let (_reg, host, image) = registry_with_image(
            Registry::builder().htpasswd(&[("node", "rt-s3cret")]),
            &PushOpts::insecure().creds("node", "rt-s3cret"),
        );
        let tree = NodeTree::new();
        let body = format!(
        "  config_path = \"{CERTS_D}\"\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".auth]\n    username = \"node\"\n    password = \"rt-s3cret\"\n"
    );
        let b = run_cri_both(s, "CRI: registry.configs auth", &tree, &body, &image, None);
        b.expect("ready", None);
        assert!(!b.pp.to_string().contains("rt-s3cret"), "secret leaked");

        let body = format!(
        "  config_path = \"{CERTS_D}\"\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".auth]\n    username = \"node\"\n    password = \"wrong\"\n"
    );
        let b = run_cri_both(
            s,
            "CRI: registry.configs wrong auth",
            &tree,
            &body,
            &image,
            None,
        );
        b.expect("not_ready", Some(("auth", "AuthCredentialsRejected")));
    });
}

#[test]
fn cri_registry_configs_tls_legacy_path() {
    each_series(|s| {
        let pki = Pki::new();
        let (_reg, host, image) =
            registry_with_image(Registry::builder().tls(&pki.server), &PushOpts::tls(&pki));
        let tree = NodeTree::new();
        tree.copy(&pki.ca_cert, "/etc/containerd/registry-ca.pem");
        // Legacy path (no config_path): an https mirror endpoint for the host, verified with
        // configs.tls.ca_file.
        let body = format!(
        "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n    endpoint = [\"https://{host}\"]\n  \
         [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".tls]\n    ca_file = \"/etc/containerd/registry-ca.pem\"\n"
    );
        let b = run_cri_both(s, "CRI: configs.tls (legacy)", &tree, &body, &image, None);
        if s == Series::V2 {
            // 2.0 removed configs.tls: the endpoint is verified against the system CAs.
            b.expect("not_ready", Some(("tls", "TLSUnknownAuthority")));
            return;
        }
        b.expect("ready", None);
    });
}

/// containerd's CRI plugin refuses some configs (`ValidatePluginConfig`, pkg/cri/config/
/// config.go): the plugin does not load, so the kubelet's PullImage fails for EVERY image
/// ("unknown service runtime.v1.ImageService"), even though the hosts.toml alone would work.
/// pullprobe must then say not_ready (a refusal, NoUsableEndpoint), not probe the endpoints.
/// `refused = false`: this release accepts the config, and both pull.
fn cri_plugin_refuses(
    s: Series,
    name: &'static str,
    refused: bool,
    extra: impl Fn(&str) -> String,
) {
    let pki = Pki::new();
    let (_reg, host, image) =
        registry_with_image(Registry::builder().tls(&pki.server), &PushOpts::tls(&pki));
    let tree = NodeTree::new();
    tree.copy(&pki.ca_cert, &format!("{CERTS_D}/{host}/ca.pem"));
    tree.copy(&pki.ca_cert, "/etc/containerd/registry-ca.pem");
    tree.hosts_toml(&host, &tls_hosts_toml(&host, "ca = \"ca.pem\""));
    let body = format!("  config_path = \"{CERTS_D}\"\n{}", extra(&host));
    let b = run_cri_both(s, name, &tree, &body, &image, None);
    if !refused {
        b.expect("ready", None);
        return;
    }
    assert!(
        b.ctr
            .as_ref()
            .is_err_and(|e| e.contains("unknown service runtime.v1.ImageService")),
        "{name}: containerd's CRI plugin must refuse this config: {:?}",
        b.ctr
    );
    b.assert_agree();
    assert_eq!(b.reason(), Some("NoUsableEndpoint"), "{}", b.ctx());
}

#[test]
fn cri_plugin_refuses_config_path_with_configs_tls() {
    each_series(|s| {
        // 1.6 and 1.7 refuse it; 2.x checks `mirrors` only.
        cri_plugin_refuses(
            s,
            "CRI: config_path + configs.tls",
            s != Series::V2,
            |host| {
                format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".tls]\n    ca_file = \"/etc/containerd/registry-ca.pem\"\n"
        )
            },
        );
    });
}

#[test]
fn cri_plugin_refuses_config_path_with_mirrors() {
    each_series(|s| {
        cri_plugin_refuses(s, "CRI: config_path + mirrors", true, |host| {
            format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n    endpoint = [\"https://{host}\"]\n"
        )
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Mirror failure modes (containerd moves on to the next host)

#[test]
fn mirror_error_statuses_fall_through_to_upstream() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_up, uhost) = plain_registry_with_image("team/app");
        let image = format!("{uhost}/team/app:v1");
        for (name, status, reason) in [
            ("mirror 500", 500u16, "RegistryServerError"),
            ("mirror 429", 429, "RateLimited"),
            ("mirror 403", 403, "AuthDenied"),
        ] {
            let mirror = ScriptedServer::start(move |r| {
                if r.path == "/v2/" {
                    Reply::v2_ok()
                } else {
                    Reply::status(status).header("Retry-After", "0")
                }
            });
            let tree = NodeTree::new();
            tree.hosts_toml(
                &uhost,
                &format!(
                    "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    mirror.host_port()
                ),
            );
            let b = run_both(name, ctrd, &tree, &image, &[], &[]);
            b.expect("degraded", None);
            let tried = b.tried();
            assert_eq!(tried.len(), 2, "{}", b.ctx());
            assert_eq!(tried[0].2.as_deref(), Some(reason), "{}", b.ctx());
        }
    });
}

#[test]
fn mirror_requiring_credentials_without_any_falls_through() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_up, uhost) = plain_registry_with_image("team/app");
        let mirror = Registry::builder().htpasswd(&[("m", "mpass")]).start();
        OciImage::single("v1").push(
            &mirror,
            "team/app",
            &PushOpts::insecure().creds("m", "mpass"),
        );
        let tree = NodeTree::new();
        tree.hosts_toml(
            &uhost,
            &format!(
                "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                mirror.host_port()
            ),
        );
        let image = format!("{uhost}/team/app:v1");
        let b = run_both("mirror needs auth, none", ctrd, &tree, &image, &[], &[]);
        b.expect("degraded", None);
        assert_eq!(
            b.tried()[0].2.as_deref(),
            Some("AuthCredentialsRequired"),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn ipv6_loopback_registry_and_host_dir() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (v4, _) = plain_registry_with_image("team/app");
        let v6 = Registry::builder().ipv6().storage(v4.storage()).start();
        let host = format!("[::1]:{}", v6.port());
        let tree = NodeTree::new();
        let image = format!("{host}/team/app:v1");
        let b = run_both("IPv6 direct", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);

        // `[::1]:PORT` → directory `[::1]_PORT_`, a mirror in it; the upstream is another port.
        let up = format!("[::1]:{}", free_port());
        tree.hosts_toml(
            &underscore_dir(&up),
            &format!(
                "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                v4.host_port()
            ),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("IPv6 host_port_ dir", ctrd, &tree, &image, &[], &[]);
        b.expect("ready", None);
        assert_eq!(
            b.pp["endpoint"],
            format!("http://{}/v2", v4.host_port()),
            "{}",
            b.ctx()
        );
    });
}

#[test]
fn platform_missing_from_the_index() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let reg = Registry::plain();
        OciImage::multi_platform("v1", &[("linux", "arm64"), ("linux", "s390x")]).push(
            &reg,
            "team/app",
            &PushOpts::insecure(),
        );
        OciImage::multi_platform("v2", &[("linux", "amd64"), ("linux", "arm64")]).push(
            &reg,
            "team/app",
            &PushOpts::insecure(),
        );
        let tree = NodeTree::new();
        let host = reg.host_port();
        // Both tools pick linux/amd64 (this machine); say so explicitly to both.
        let plat = ["--platform", "linux/amd64"];
        let image = format!("{host}/team/app:v1");
        let b = if s == Series::V2 {
            // 2.x's `ctr images pull` goes through the transfer service, which stores an
            // index without a matching manifest and reports success; the kubelet's CRI pull
            // of the same image fails. The CRI pull is the oracle here (the host platform:
            // linux/amd64 on this machine).
            let body = format!("  config_path = \"{CERTS_D}\"\n");
            run_cri_both(
                s,
                "CRI: index without linux/amd64",
                &tree,
                &body,
                &image,
                None,
            )
        } else {
            run_both(
                "index without linux/amd64",
                ctrd,
                &tree,
                &image,
                &plat,
                &plat,
            )
        };
        b.expect("not_ready", Some(("platform", "PlatformMissing")));
        let image = format!("{host}/team/app:v2");
        let b = run_both("index with linux/amd64", ctrd, &tree, &image, &plat, &plat);
        b.expect("ready", None);
        // `ctr content fetch` (no unpack) agrees too.
        assert_eq!(
            ctrd.ctr_fetch(&image, Some(&tree.certs_d()), &plat),
            Ok(()),
            "ctr content fetch"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Rules that differ by release (each read from that release's code, cited where pullprobe
// implements it)

/// An upstream with an untrusted certificate behind `mirror` (a `[host]` URL that answers
/// 404 for the image). No host resolves the reference: 1.6/1.7 report the first non-404
/// error (the upstream's certificate), 2.x the most relevant one (the mirror's 404, "not
/// found"): src/probe/verdict.rs.
fn untrusted_upstream_behind(s: Series, name: &'static str, mirror: &str) {
    let pki = Pki::new();
    let (_up, uhost, image) = registry_with_image(
        Registry::builder().tls(&pki.unknown_ca_leaf),
        &PushOpts::insecure(),
    );
    let tree = NodeTree::new();
    tree.hosts_toml(
        &uhost,
        &format!(
            "server = \"https://{uhost}\"\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    );
    let b = run_both(name, Containerd::shared(s), &tree, &image, &[], &[]);
    b.assert_agree();
    assert_eq!(b.verdict(), "not_ready", "{}", b.ctx());
    let err = b.ctr.as_ref().err().cloned().unwrap_or_default();
    let last = err.lines().last().unwrap_or_default().to_string();
    if s == Series::V2 {
        assert!(
            matches!(b.reason(), Some("ManifestNotFound" | "RepositoryNotFound")),
            "{}",
            b.ctx()
        );
        assert!(
            last.contains("not found"),
            "2.x reports the mirror's 404: {}",
            b.ctx()
        );
    } else {
        assert_eq!(b.reason(), Some("TLSUnknownAuthority"), "{}", b.ctx());
        assert!(
            last.contains("x509") || last.contains("certificate"),
            "1.x reports the upstream's certificate: {}",
            b.ctx()
        );
    }
}

#[test]
fn mirror_404_then_untrusted_upstream() {
    each_series(|s| {
        let empty = Registry::plain();
        let mirror = format!("http://{}", empty.host_port());
        untrusted_upstream_behind(s, "mirror 404, untrusted upstream", &mirror);
    });
}

#[test]
fn mirror_path_without_override_path_then_untrusted_upstream() {
    each_series(|s| {
        let (_reg, rhost) = plain_registry_with_image("team/app");
        // Without override_path containerd appends /v2: the proxy's backend answers 404.
        let proxy = PathRewriteProxy::start("/api/mirror", &rhost);
        let mirror = format!("http://127.0.0.1:{}/api/mirror", proxy.port);
        untrusted_upstream_behind(
            s,
            "mirror path w/o override_path, untrusted upstream",
            &mirror,
        );
    });
}

#[test]
fn hosts_toml_headers_reach_the_token_realm_from_2_1() {
    // 1.6 and 1.7 build the authorizer without the host's headers; 2.1 adds them
    // (src/probe/auth.rs). The realm is on its own port: another host.
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let pki = Pki::new();
        let issuer = TokenIssuer::builder(&pki)
            .user("pusher", "push-s3cret")
            .allow("pusher", "team/app")
            .anonymous_allow("team/app")
            .start();
        let (_reg, host, image) = registry_with_image(
            Registry::builder().token_auth(&issuer),
            &PushOpts::insecure().creds("pusher", "push-s3cret"),
        );
        let tree = NodeTree::new();
        tree.hosts_toml(
            &host,
            &format!(
                "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://{host}\".header]\n    X-Node-Canary = \"hdr-canary\"\n"
            ),
        );
        let before = issuer.requests().len();
        let (b, after_pp) = run_both_observed(
            "header → token realm",
            ctrd,
            &tree,
            &image,
            &[],
            &[],
            || issuer.requests().len(),
        );
        b.expect("ready", None);
        let reqs = issuer.requests();
        assert!(
            after_pp > before && reqs.len() > after_pp,
            "both tools fetch a token: {before} {after_pp} {}",
            reqs.len()
        );
        let sent = |rs: &[harness::token_issuer::TokenRequest]| {
            rs.iter()
                .any(|r| r.header("x-node-canary") == Some("hdr-canary"))
        };
        let (pp_sent, ctrd_sent) = (sent(&reqs[before..after_pp]), sent(&reqs[after_pp..]));
        assert_eq!(
            ctrd_sent,
            s == Series::V2,
            "containerd {} {} the header to the realm",
            s.version(),
            if ctrd_sent { "sent" } else { "did not send" }
        );
        assert_eq!(
            pp_sent,
            ctrd_sent,
            "pullprobe must do as containerd {}",
            s.version()
        );
    });
}

#[test]
fn dial_timeout_is_a_key_from_2_1() {
    // Before 2.1 the key does not exist (ignored, whatever its value); from 2.1 a value
    // that is not a duration makes containerd ignore the whole file.
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"soon\"\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("dial_timeout = \"soon\"", ctrd, &tree, &image, &[], &[]);
        let kinds = plan_finding_kinds(&tree, &image, s);
        if s == Series::V2 {
            b.expect("not_ready", Some(("connect", "ConnectRefused")));
            assert!(
                kinds.contains(&"hosts_toml_ignored".to_string()),
                "{kinds:?}"
            );
        } else {
            b.expect("ready", None);
            assert!(
                !kinds.contains(&"hosts_toml_ignored".to_string()),
                "{kinds:?}"
            );
        }
    });
}

#[test]
fn referrers_capability_before_2_2_voids_the_file() {
    // `referrers` is a capability from 2.2; 1.6, 1.7 and 2.1 reject it as unknown and
    // ignore the whole hosts.toml (the mirror is never used).
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let (_mirror, mhost) = plain_registry_with_image("team/app");
        let up = dead_host();
        let tree = NodeTree::new();
        tree.hosts_toml(
            &up,
            &format!("[host.\"http://{mhost}\"]\n  capabilities = [\"pull\", \"resolve\", \"referrers\"]\n"),
        );
        let image = format!("{up}/team/app:v1");
        let b = run_both("referrers capability", ctrd, &tree, &image, &[], &[]);
        b.expect("not_ready", Some(("connect", "ConnectRefused")));
        assert!(plan_finding_kinds(&tree, &image, s).contains(&"hosts_toml_ignored".to_string()));
    });
}

#[test]
fn schema1_manifest_is_refused_from_2_x() {
    each_series(|s| {
        let ctrd = Containerd::shared(s);
        let reg = Registry::builder().schema1().start();
        let img = OciImage::single("v1");
        let reference = format!("{}/team/app:v1", reg.host_port());
        let out = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--format", "v2s1"])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci:{}:v1", img.layout_dir().display()))
            .arg(format!("docker://{reference}"))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = NodeTree::new();
        let b = run_both("schema 1 manifest", ctrd, &tree, &reference, &[], &[]);
        if s == Series::V2 {
            b.expect("not_ready", Some(("manifest", "ManifestMalformed")));
            assert!(
                b.ctr
                    .as_ref()
                    .is_err_and(|e| e.contains("no longer supported")),
                "{}",
                b.ctx()
            );
        } else {
            b.expect("ready", None);
        }
    });
}

#[test]
fn cri_2_1_transfer_service_and_use_local_image_pull() {
    // 2.1's CRI pulls through the transfer service, which takes a two-root config_path as
    // one directory (every hosts.toml ignored); `use_local_image_pull = true` (or any
    // setting in containerd.rs `local_pull_reasons`) restores the local pull, which splits it.
    let (_mirror, mhost) = plain_registry_with_image("team/app");
    let up = dead_host();
    let tree = NodeTree::new();
    tree.hosts_toml(
        &up,
        &format!("server = \"http://{mhost}\"\n[host.\"http://{mhost}\"]\n"),
    );
    let image = format!("{up}/team/app:v1");
    let roots = format!("  config_path = \"{CERTS_D}:/etc/docker/certs.d\"\n");
    let s = Series::V2;
    let b = run_cri_both(
        s,
        "CRI 2.x: transfer service, two roots",
        &tree,
        &roots,
        &image,
        None,
    );
    b.expect("not_ready", Some(("connect", "ConnectRefused")));
    let local = format!(
        "{roots}[{}]\n  use_local_image_pull = true\n",
        s.images_table()
    );
    let b = run_cri_both(
        s,
        "CRI 2.x: use_local_image_pull",
        &tree,
        &local,
        &image,
        None,
    );
    b.expect("ready", None);
    assert_eq!(
        b.pp["endpoint"],
        format!("http://{mhost}/v2"),
        "{}",
        b.ctx()
    );
}
