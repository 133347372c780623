//! The kubelet is the oracle. On a REAL one-node cluster (kubelet v1.20.2 on containerd's CRI,
//! tests/node), with the DaemonSet from `manifests/` deployed for real, every scenario of the
//! table below is set up on the node and then judged three times, once per runtime flavour:
//! containerd 1.6.20 (Debian bookworm's) and 1.7.x (trixie's, from `.ci/cache-containerd.sh`;
//! it still serves the CRI `v1alpha2` kubelet 1.20 speaks), one test each:
//!
//! 1. the kubelet: a hostNetwork pod with `imagePullPolicy: Always`, its `Pulled` or
//!    `ErrImagePull` Event (containerd's own error text);
//! 2. the agent: its verdict and reason for that pod's image on `/status`, and the two Node
//!    conditions it writes to the kubelet's Node (set only when the node's path is at fault);
//! 3. `pullprobe check --host-root /` run on the node.
//!
//! They must agree: the kubelet pulls ⇔ the agent and `check` say ready/degraded; the agent's
//! and `check`'s reasons are the same and the expected one; containerd's text says the same
//! thing (a per-reason fragment); the conditions name the scenario's registry exactly when
//! the node's path is broken. The table is printed (and kept in the README, one agent column
//! per containerd release).

mod harness;
mod kube;
mod node;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{OciImage, Pki, PushOpts, Registry, Series};
use crate::node::{Agent, AgentDeploy, CredentialProviders, Node, PodSpec, PullVerdict};

const INTERVAL: &str = "2s";
const AGENT_WAIT: Duration = Duration::from_secs(60);
/// A kubelet config.json with no credentials (the node's "none").
const NO_AUTHS: &str = "{\"auths\": {}}\n";

/// What a scenario expects.
struct Expect {
    /// `Some(reason)` when the pull fails (and the agent's reason), `None` when it pulls.
    reason: Option<&'static str>,
    /// The agent's verdict when the pull works (`ready` or `degraded`).
    verdict: &'static str,
    /// A fragment of containerd's error text (the kubelet's Event) when the pull fails.
    kubelet_says: &'static str,
    /// Which condition names the registry: `RegistryUnreachable`, `RegistryAuthFailing`, or none.
    condition: Option<&'static str>,
}

const fn fails(
    reason: &'static str,
    kubelet_says: &'static str,
    condition: Option<&'static str>,
) -> Expect {
    Expect {
        reason: Some(reason),
        verdict: "not_ready",
        kubelet_says,
        condition,
    }
}

const PULLS: Expect = Expect {
    reason: None,
    verdict: "ready",
    kubelet_says: "",
    condition: None,
};

const UNREACHABLE: Option<&str> = Some("RegistryUnreachable");
const AUTH: Option<&str> = Some("RegistryAuthFailing");

/// One row of the printed table.
struct Row {
    scenario: &'static str,
    kubelet: String,
    agent: String,
    check: String,
    conditions: String,
}

/// The scenario's image on the node, judged by all three; returns the row.
struct Judge<'a> {
    node: &'a Node,
    series: Series,
    rows: Vec<Row>,
    pod_no: usize,
}

fn short(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The registry part of an image reference (`reg.test:5000`).
fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or(image)
}

impl Judge<'_> {
    fn agent_target(&self, image: &str, created: jiff::Timestamp) -> Value {
        let deadline = Instant::now() + AGENT_WAIT;
        // Second precision on /status: a check in the pod's second or later.
        let not_before = created - jiff::SignedDuration::from_secs(1);
        let elapsed_ok = |t: &Value| {
            t["kind"] == "image"
                && t["image"] == image
                && t["checked_at"]
                    .as_str()
                    .and_then(|c| c.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|c| c >= not_before)
        };
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let (code, body) = self.node.agent_get("/status");
            if code == 200 {
                if let Ok(st) = serde_json::from_str::<Value>(&body) {
                    last = st.clone();
                    let found = st["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|t| elapsed_ok(t))
                        .cloned();
                    if let Some(t) = found {
                        return t;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("the agent never checked {image}: /status {last:#}")
    }

    /// `check --host-root /` on the node; a pod's pull secret is given as the credential
    /// (`--username … --password-stdin`), as the kubelet passes it to the runtime.
    fn check_on_node(&self, image: &str, secret: Option<&(String, String, String)>) -> Value {
        use std::io::Write as _;
        let mut cmd = self.node.command(env!("CARGO_BIN_EXE_pullprobe"));
        cmd.args(["check", "--json", "--host-root", "/", image]);
        if let Some((_, user, _)) = secret {
            cmd.args(["--username", user, "--password-stdin"]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run check on the node");
        if let (Some((_, _, pass)), Some(mut stdin)) = (secret, child.stdin.take()) {
            let _ = stdin.write_all(pass.as_bytes());
        }
        let out = child.wait_with_output().expect("check on the node");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap_or_else(|e| {
            panic!(
                "check on the node: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The conditions naming `registry` (True ones only), waited for until they match.
    fn conditions_for(&self, registry: &str, want: Option<&str>) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let naming: Vec<String> = self
                .node
                .conditions()
                .iter()
                .filter(|c| c["status"] == "True")
                .filter(|c| {
                    c["message"].as_str().is_some_and(|m| {
                        m.split("; ")
                            .any(|p| p.starts_with(&format!("{registry}: ")))
                    })
                })
                .filter_map(|c| c["type"].as_str().map(str::to_string))
                .collect();
            let matches = match want {
                Some(w) => naming == [w.to_string()],
                None => naming.is_empty(),
            };
            if matches || Instant::now() > deadline {
                return naming;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn run(&mut self, scenario: &'static str, image: &str, pod: PodSpec, e: Expect) {
        self.pod_no += 1;
        let since = jiff::Timestamp::now();
        let (created, kubelet) = self.node.start_pull(&pod, Duration::from_secs(90));
        let kubelet = kubelet.unwrap_or_else(|m| panic!("{scenario}: no kubelet verdict: {m}"));
        let agent = self.agent_target(image, since);
        let check = self.check_on_node(image, pod.pull_secret.as_ref());
        let conditions = self.conditions_for(registry_of(image), e.condition);
        self.node.delete_pod(&created);
        let ctx = format!(
            "scenario {scenario}: {image}\nkubelet: {kubelet:?}\nagent: {agent:#}\ncheck: {check:#}\nconditions naming the registry: {conditions:?}"
        );
        self.assert_row(&e, &kubelet, &agent, &check, &conditions, &ctx);
        self.rows.push(Row {
            scenario,
            kubelet: match &kubelet {
                PullVerdict::Pulled { .. } => "Pulled".into(),
                other => format!(
                    "ErrImagePull: {}",
                    short(kubelet_error(other.message()), 140)
                ),
            },
            agent: format!(
                "{} {}",
                agent["verdict"].as_str().unwrap_or("?"),
                agent["reason"].as_str().unwrap_or("")
            )
            .trim()
            .to_string(),
            check: format!(
                "{} {}",
                check["verdict"].as_str().unwrap_or("?"),
                check["reason"].as_str().unwrap_or("")
            )
            .trim()
            .to_string(),
            conditions: if conditions.is_empty() {
                "—".into()
            } else {
                conditions.join(", ")
            },
        });
    }

    fn assert_row(
        &self,
        e: &Expect,
        kubelet: &PullVerdict,
        agent: &Value,
        check: &Value,
        conditions: &[String],
        ctx: &str,
    ) {
        let pulls = |v: &Value| matches!(v["verdict"].as_str(), Some("ready" | "degraded"));
        assert_eq!(
            kubelet.is_pulled(),
            e.reason.is_none(),
            "kubelet verdict\n{ctx}"
        );
        assert_eq!(pulls(agent), kubelet.is_pulled(), "agent vs kubelet\n{ctx}");
        assert_eq!(pulls(check), kubelet.is_pulled(), "check vs kubelet\n{ctx}");
        assert_eq!(agent["reason"], check["reason"], "agent vs check\n{ctx}");
        assert_eq!(agent["verdict"], check["verdict"], "agent vs check\n{ctx}");
        match e.reason {
            Some(r) => {
                assert_eq!(agent["reason"], r, "{ctx}");
                let says = says_on(self.series, r, e.kubelet_says);
                assert!(
                    kubelet.message().contains(says),
                    "containerd {}'s text should say {says:?}\n{ctx}",
                    self.series.version()
                );
            }
            None => assert_eq!(agent["verdict"], e.verdict, "{ctx}"),
        }
        let want: Vec<String> = e.condition.into_iter().map(str::to_string).collect();
        assert_eq!(
            conditions, want,
            "Node conditions naming the registry\n{ctx}"
        );
    }
}

/// What containerd's error says for `reason` on `series`, where the releases word it
/// differently: 1.7 refuses a Basic challenge without credentials before retrying
/// (v1.7.24 remotes/docker/authorizer.go `AddResponses`: "no basic auth credentials",
/// wrapped by resolver.go as "pull access denied, repository does not exist or may require
/// authorization"), where 1.6.20 reports the registry's 401.
fn says_on(series: Series, reason: &str, fragment: &'static str) -> &'static str {
    match (series, reason) {
        (Series::V1_7, "AuthCredentialsRequired") => "no basic auth credentials",
        _ => fragment,
    }
}

/// containerd's error, without the kubelet's "Failed to pull image …: rpc error: …" wrapper
/// and containerd's own "failed to pull and unpack image …: failed to resolve reference …"
/// prefixes: the part that says what went wrong.
fn kubelet_error(message: &str) -> &str {
    let mut m = message.rsplit("desc = ").next().unwrap_or(message);
    for prefix in [
        "failed to pull and unpack image ",
        "failed to resolve reference ",
    ] {
        if let Some(rest) = m.strip_prefix(prefix) {
            // Skip the quoted reference and its ": ".
            m = rest.split_once("\": ").map(|(_, r)| r).unwrap_or(rest);
        }
    }
    m
}

/// A hosts.toml for `host` (containerd 1.6.20 needs a `[host]` table, else it ignores it).
fn hosts_toml(node: &Node, host: &str, body: &str) {
    node.write_file(&format!("/etc/containerd/certs.d/{host}/hosts.toml"), body);
}

fn plain_host(node: &Node, host: &str) {
    hosts_toml(
        node,
        host,
        &format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\n"),
    );
}

fn tls_host(node: &Node, host: &str, pki: &Pki, trusted: bool) {
    let ca = format!("/etc/containerd/certs.d/{host}/ca.crt");
    node.write_file(&ca, &std::fs::read_to_string(&pki.ca_cert).unwrap());
    let ca_line = if trusted {
        format!("  ca = \"{ca}\"\n")
    } else {
        String::new()
    };
    hosts_toml(
        node,
        host,
        &format!("server = \"https://{host}\"\n[host.\"https://{host}\"]\n{ca_line}"),
    );
}

/// A static credential-provider plugin (the agent's image has no shell): answers `user:pass`
/// for every image, or exits 1 when `user` is empty. Built with gcc -static.
fn provider_plugin(dir: &std::path::Path, registry: &str, user: &str, pass: &str) -> Vec<u8> {
    let body = if user.is_empty() {
        "fputs(\"no credentials today\\n\", stderr); return 1;".to_string()
    } else {
        format!(
            "char buf[65536]; while (fread(buf, 1, sizeof buf, stdin) > 0) {{}} \
             printf(\"{{\\\"apiVersion\\\":\\\"credentialprovider.kubelet.k8s.io/v1alpha1\\\",\\\"kind\\\":\\\"CredentialProviderResponse\\\",\\\"cacheKeyType\\\":\\\"Registry\\\",\\\"cacheDuration\\\":\\\"1s\\\",\\\"auth\\\":{{\\\"{registry}\\\":{{\\\"username\\\":\\\"{user}\\\",\\\"password\\\":\\\"{pass}\\\"}}}}}}\\n\"); return 0;"
        )
    };
    let src = dir.join("plugin.c");
    std::fs::write(
        &src,
        format!("#include <stdio.h>\nint main(void) {{ {body} }}\n"),
    )
    .unwrap();
    let bin = dir.join("plugin");
    let st = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc -static");
    std::fs::read(bin).unwrap()
}

fn providers(dir: &std::path::Path, registry: &str, user: &str, pass: &str) -> CredentialProviders {
    CredentialProviders {
        // matchImages must parse as a URL: no wildcard in the port (kubelet validation).
        config: format!("apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: CredentialProviderConfig\nproviders:\n  - name: test-provider\n    matchImages: [\"{registry}\"]\n    defaultCacheDuration: 1s\n    apiVersion: credentialprovider.kubelet.k8s.io/v1alpha1\n"),
        plugins: vec![("test-provider".into(), provider_plugin(dir, registry, user, pass))],
    }
}

fn print_table(series: Series, rows: &[Row]) {
    println!("\n| scenario (containerd {}) | kubelet (containerd's Event) | agent | check --host-root / | Node condition naming the registry |", series.version());
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.scenario,
            r.kubelet.replace('|', "\\|"),
            r.agent,
            r.check,
            r.conditions
        );
    }
}

/// The README's table is this run's: the same scenarios in the same order, each with the verdict
/// the agent and `check` gave on this containerd release (its own column, headed
/// `… containerd VERSION`) and the condition that named the registry (the kubelet column is
/// the README's own shortening of containerd's text, so only `Pulled` is compared there).
fn readme_table_matches(series: Series, rows: &[Row]) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| scenario | kubelet's Event"));
    let header = cells(lines.next().unwrap_or_default());
    let column = header
        .iter()
        .position(|h| h.ends_with(&format!("containerd {}", series.version())))
        .unwrap_or_else(|| {
            panic!(
                "no README column for containerd {}: {header:?}",
                series.version()
            )
        });
    let conditions = header.len() - 1;
    let table: Vec<Vec<String>> = lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect();
    let names: Vec<&str> = table.iter().map(|r| r[0].as_str()).collect();
    let ran: Vec<&str> = rows.iter().map(|r| r.scenario).collect();
    assert_eq!(names, ran, "the README's scenarios are not this run's");
    for (r, t) in rows.iter().zip(&table) {
        assert_eq!(r.agent, r.check, "{}", r.scenario);
        assert_eq!(t[column], r.agent, "README row {:?}: agent and check", t[0]);
        assert!(
            t[conditions].starts_with(&r.conditions),
            "README row {:?}: conditions {:?}, this run {:?}",
            t[0],
            t[conditions],
            r.conditions
        );
        assert_eq!(
            t[1] == "Pulled",
            r.kubelet == "Pulled",
            "README row {:?}: kubelet",
            t[0]
        );
    }
}

#[test]
fn the_kubelet_and_the_agent_agree_on_every_scenario() {
    every_scenario(Series::V1_6);
}

/// The same table on containerd 1.7.x: the runtime most clusters run (the Node says
/// `containerd://1.7.x`, the agent takes its rules from that, `check` from the dpkg status).
#[test]
fn the_kubelet_and_the_agent_agree_on_containerd_1_7() {
    every_scenario(Series::V1_7);
}

fn every_scenario(series: Series) {
    let t0 = Instant::now();
    let mut node = match series {
        Series::V1_6 => Node::start(),
        s => Node::builder().containerd_bin_dir(&s.bin_dir()).start(),
    };
    let runs = node
        .command("containerd")
        .arg("--version")
        .output()
        .expect("containerd --version");
    assert!(
        String::from_utf8_lossy(&runs.stdout).contains(series.version()),
        "the node runs {}",
        String::from_utf8_lossy(&runs.stdout)
    );
    let scratch = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    // busybox sleeping: a pod that pulled keeps running, so the agent sees it.
    let img = node::images::pause_image("v1");

    // Registries on the node's loopback, each its own registry name in references.
    let plain = Registry::plain();
    img.push(&plain, "app", &PushOpts::insecure());
    OciImage::multi_platform("v1", &[("linux", "s390x")]).push(
        &plain,
        "s390x-only",
        &PushOpts::insecure(),
    );
    let ph = format!("reg.test:{}", plain.port());
    plain_host(&node, &ph);

    let auth = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("node", "nodepass")])
        .start();
    // One repository per scenario: each is a new image to the agent, checked at once.
    for repo in [
        "no-creds",
        "secret-ok",
        "secret-bad",
        "cfg-bad",
        "cfg-ok",
        "provider-0",
        "provider-1",
        "provider-2",
    ] {
        img.push(&auth, repo, &PushOpts::tls(&pki).creds("node", "nodepass"));
    }
    let ah = format!("registry.test:{}", auth.port());
    tls_host(&node, &ah, &pki, true);

    // The node keeps registry credentials in the kubelet's config.json (none yet: every node
    // of a cluster with components/kubelet-config-json has the file), and its
    // CredentialProviderConfig in a directory of its own, mounted as docs/operate.md shows.
    node.write_file(node::kubelet::DOCKER_CONFIG_JSON, NO_AUTHS);
    let mut agent = node.deploy_agent(
        &AgentDeploy::new()
            .set("interval", INTERVAL)
            .set("jitter", "0")
            .set("reload_interval", "1s")
            .set("pull_secrets", "true")
            // The scenarios' pods stand for the node's own: their registries are the node's
            // concern (src/agent/scope.rs), so a broken path moves a Node condition.
            .set("tenancy", "{trusted_namespaces: [default]}")
            .component("pull-secrets")
            .component("kubeadm")
            .component("kubelet-config-json")
            .patch(&node::agent::host_mount_patch(
                "host-credential-provider-config",
                node::kubelet::CREDENTIAL_PROVIDER_DIR,
                "DirectoryOrCreate",
            )),
    );
    eprintln!("[{:?}] cluster up, agent ready", t0.elapsed());
    let mut rows = Vec::new();
    let i = format!("{ph}/app:v1");
    let a = |repo: &str| format!("{ah}/{repo}:v1");
    rows = judged(&node, series, rows, |j| {
        let pod = |n: &str, image: &str| PodSpec::new(n, image);
        j.run("image exists", &i, pod("ok", &i), PULLS);
        let m = format!("{ph}/app:missing");
        j.run(
            "missing tag",
            &m,
            pod("missing-tag", &m),
            fails("ManifestNotFound", "not found", None),
        );
        let p = format!("{ph}/s390x-only:v1");
        j.run(
            "missing platform",
            &p,
            pod("no-platform", &p),
            fails("PlatformMissing", "no match for platform", None),
        );
        let x = a("no-creds");
        j.run(
            "no credentials",
            &x,
            pod("no-creds", &x),
            fails("AuthCredentialsRequired", "401 Unauthorized", None),
        );
        let y = a("secret-ok");
        j.run(
            "pod pull secret, right",
            &y,
            pod("secret-ok", &y).pull_secret(&ah, "node", "nodepass"),
            PULLS,
        );
        let z = a("secret-bad");
        j.run(
            "pod pull secret, wrong",
            &z,
            pod("secret-bad", &z).pull_secret(&ah, "node", "wrong"),
            fails("AuthCredentialsRejected", "401 Unauthorized", None),
        );
    });

    // The node's config.json (the kubelet caches it: restart it after each change).
    let auth_entry = |user: &str, pass: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("{{\"auths\":{{\"{ah}\":{{\"auth\":\"{b}\"}}}}}}")
    };
    node.write_file(
        node::kubelet::DOCKER_CONFIG_JSON,
        &auth_entry("node", "wrong"),
    );
    node.restart_kubelet();
    rows = judged(&node, series, rows, |j| {
        let b = a("cfg-bad");
        j.run(
            "node config.json, wrong",
            &b,
            PodSpec::new("cfg-bad", &b),
            fails("AuthCredentialsRejected", "401 Unauthorized", AUTH),
        );
        // The CA only on [host."https://…"], `server` without it: the host answers 401 to the
        // node's credential, the server fails TLS; containerd reports the first (the 401).
        hosts_toml(
            &node,
            &ah,
            &format!("server = \"https://{ah}\"\n[host.\"https://{ah}\"]\n  ca = \"/etc/containerd/certs.d/{ah}/ca.crt\"\n"),
        );
        let v2 = format!("{ah}/app:v2");
        j.run(
            "CA on `[host]` only, `server` without it, credential rejected",
            &v2,
            PodSpec::new("ca-host-only", &v2),
            fails("AuthCredentialsRejected", "401 Unauthorized", AUTH),
        );
        tls_host(&node, &ah, &pki, true);
    });
    node.write_file(
        node::kubelet::DOCKER_CONFIG_JSON,
        &auth_entry("node", "nodepass"),
    );
    node.restart_kubelet();
    rows = judged(&node, series, rows, |j| {
        let c = a("cfg-ok");
        j.run(
            "node config.json, right",
            &c,
            PodSpec::new("cfg-ok", &c),
            PULLS,
        )
    });
    // "No config.json" without removing the file the agent has mounted: no credentials in it.
    node.write_file(node::kubelet::DOCKER_CONFIG_JSON, NO_AUTHS);
    node.restart_kubelet();

    // Credential-provider plugins (kubelet 1.20: v1alpha1 and the feature gate).
    for (k, (name, user, pass, e)) in [
        (
            "credential provider returns the right credentials",
            "node",
            "nodepass",
            PULLS,
        ),
        (
            "credential provider fails",
            "",
            "",
            fails("AuthCredentialsRequired", "401 Unauthorized", AUTH),
        ),
        (
            "credential provider returns wrong credentials",
            "node",
            "wrong",
            fails("AuthCredentialsRejected", "401 Unauthorized", AUTH),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        node.set_credential_providers(Some(providers(scratch.path(), &ah, user, pass)));
        let repo = format!("provider-{k}");
        let image = a(&repo);
        rows = judged(&node, series, rows, |j| {
            j.run(name, &image, PodSpec::new(&repo, &image), e)
        });
    }
    node.set_credential_providers(None);

    rows = judged(&node, series, rows, |j| {
        path_scenarios(j, &node, &mut agent, &pki, &img, &plain)
    });
    print_table(series, &rows);
    readme_table_matches(series, &rows);
    drop(agent);
    eprintln!("[{:?}] {} scenarios", t0.elapsed(), rows.len());
}

/// Runs `f` with a judge over `node`, appending its rows to `rows`.
fn judged(node: &Node, series: Series, rows: Vec<Row>, f: impl FnOnce(&mut Judge)) -> Vec<Row> {
    let mut j = Judge {
        node,
        series,
        rows,
        pod_no: 0,
    };
    f(&mut j);
    j.rows
}

/// Scenarios of the node's path: mirrors, trust, DNS, the blob host, resolv.conf.
fn path_scenarios(
    j: &mut Judge,
    node: &Node,
    agent: &mut Agent,
    pki: &Pki,
    img: &OciImage,
    plain: &Registry,
) {
    let pod = |n: &str, image: &str| PodSpec::new(n, image);
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A dead mirror before a working upstream: the pull works, degraded.
    let up = Registry::plain();
    img.push(&up, "app", &PushOpts::insecure());
    img.push(&up, "resolved", &PushOpts::insecure());
    let uh = format!("reg.test:{}", up.port());
    let dead_mirror = format!("mirror.test:{}", dead());
    hosts_toml(node, &uh, &format!("server = \"http://{uh}\"\n[host.\"http://{dead_mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"));
    let i = format!("{uh}/app:v1");
    j.run(
        "mirror down, upstream works",
        &i,
        pod("mirror-down", &i),
        Expect {
            verdict: "degraded",
            ..PULLS
        },
    );

    // A dead mirror before an untrusted upstream: containerd reports the mirror's refusal.
    let tls = Registry::builder().tls(&pki.server).start();
    img.push(&tls, "app", &PushOpts::tls(pki));
    let th = format!("registry.test:{}", tls.port());
    let dead_mirror = format!("mirror.test:{}", dead());
    hosts_toml(node, &th, &format!("server = \"https://{th}\"\n[host.\"http://{dead_mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"));
    let i = format!("{th}/app:v1");
    j.run(
        "mirror down, upstream untrusted",
        &i,
        pod("mirror-dead-untrusted", &i),
        fails("ConnectRefused", "connection refused", UNREACHABLE),
    );

    // Untrusted CA.
    let untrusted = Registry::builder().tls(&pki.server).start();
    img.push(&untrusted, "app", &PushOpts::tls(pki));
    let xh = format!("registry.test:{}", untrusted.port());
    tls_host(node, &xh, pki, false);
    let i = format!("{xh}/app:v1");
    j.run(
        "untrusted CA",
        &i,
        pod("untrusted", &i),
        fails(
            "TLSUnknownAuthority",
            "x509: certificate signed by unknown authority",
            UNREACHABLE,
        ),
    );

    // A tag missing on a mirror that works, the upstream untrusted: containerd skips the 404
    // and reports the TLS error; the node's path to the registry works (no condition).
    let mirror = Registry::plain();
    let mh = format!("mirror.test:{}", mirror.port());
    hosts_toml(node, &xh, &format!("server = \"https://{xh}\"\n[host.\"http://{mh}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"));
    let i = format!("{xh}/app:not-on-mirror");
    j.run(
        "tag missing on the mirror, upstream untrusted",
        &i,
        pod("mirror-404", &i),
        fails(
            "TLSUnknownAuthority",
            "x509: certificate signed by unknown authority",
            None,
        ),
    );

    // Expired certificate.
    let expired = Registry::builder().tls(&pki.expired).start();
    let eh = format!("registry.test:{}", expired.port());
    tls_host(node, &eh, pki, true);
    let i = format!("{eh}/app:v1");
    j.run(
        "expired certificate",
        &i,
        pod("expired", &i),
        fails(
            "TLSCertificateExpired",
            "x509: certificate has expired",
            UNREACHABLE,
        ),
    );

    // NXDOMAIN (the node's own unbound answers).
    let i = "nxdomain.test/app:v1".to_string();
    j.run(
        "NXDOMAIN",
        &i,
        pod("nxdomain", &i),
        fails("DNSNameNotFound", "no such host", UNREACHABLE),
    );

    // Blob host down: the registry redirects blobs to a port where nothing listens. The image's
    // content must be new to the node: containerd fetches only blobs its content store lacks
    // (an image whose blobs are all cached pulls without the blob host).
    let unique = OciImage::from_files(
        "v1",
        &[crate::harness::ImageFile {
            path: "/blob-host-down".into(),
            data: format!("{:?}", std::time::SystemTime::now()).into_bytes(),
            mode: 0o644,
        }],
        &["/blob-host-down"],
    );
    unique.push(plain, "unique", &PushOpts::insecure());
    let cdn_down = format!("http://127.0.0.1:{}/", dead());
    let redirecting = Registry::builder()
        .storage(plain.storage())
        .redirect(&cdn_down)
        .start();
    let bh = format!("reg.test:{}", redirecting.port());
    plain_host(node, &bh);
    let i = format!("{bh}/unique:v1");
    j.run(
        "blob host down",
        &i,
        pod("blob-down", &i),
        fails("BlobHostUnreachable", "connection refused", UNREACHABLE),
    );

    // systemd-resolved: /etc/resolv.conf an absolute symlink into /run/systemd/resolve.
    let resolv = node.read_file("/etc/resolv.conf").unwrap_or_default();
    node.write_file("/run/systemd/resolve/stub-resolv.conf", &resolv);
    node.remove("/etc/resolv.conf");
    node.symlink("/run/systemd/resolve/stub-resolv.conf", "/etc/resolv.conf");
    // The DaemonSet mounts /etc/resolv.conf alone, bound when the container starts: through the
    // new symlink from the agent's next start on.
    *agent = node.restart_agent(agent);
    let i = format!("{uh}/resolved:v1");
    plain_host(node, &uh);
    j.run(
        "`/etc/resolv.conf` a systemd-resolved symlink",
        &i,
        pod("resolved", &i),
        PULLS,
    );
}
