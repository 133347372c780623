//! The human formats of `check`, as snapshots: `-o table` (default), `-o wide`, `-v`,
//! `--no-headers`, `-o name`, and the fields of `-o yaml` / `-o json`, against a real
//! registry. Ports, digests and timings are normalised (`PORT`, `sha256:…`, `N ms`); the
//! rest must match `tests/fixtures/snapshots/*.txt` exactly. `PULLPROBE_UPDATE_SNAPSHOTS=1`
//! rewrites them (then review the diff).

mod harness;

use harness::*;

fn normalise(text: &str, port: u16) -> String {
    let text = if port == 0 {
        text.to_string()
    } else {
        text.replace(&port.to_string(), "PORT")
    };
    let digest = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let time = regex::Regex::new(r"\b\d+(\.\d+)? (ms|s)\b").unwrap();
    let text = digest.replace_all(&text, "sha256:…");
    let text = time.replace_all(&text, "N ms");
    // Re-align the padding the normalisation shortened: compare columns, not spaces.
    let spaces = regex::Regex::new(r" {2,}").unwrap();
    text.lines()
        .map(|l| spaces.replace_all(l.trim_end(), "  ").to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn snapshot(name: &str, actual: &str) {
    let path = format!(
        "{}/tests/fixtures/snapshots/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("PULLPROBE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (PULLPROBE_UPDATE_SNAPSHOTS=1 writes it)"));
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (PULLPROBE_UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

#[test]
fn human_formats_match_their_snapshots() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let port = reg.port();
    let good = format!("{}/demo/app:v1", reg.host_port());
    let bad = format!("{}/demo/app:missing", reg.host_port());
    let run = |extra: &[&str]| {
        let mut args = vec!["check", &good, &bad];
        args.extend_from_slice(extra);
        let out = run_pullprobe(&args, None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalise(&String::from_utf8_lossy(&out.stdout), port)
    };
    snapshot("table", &run(&[]));
    snapshot("wide", &run(&["-o", "wide"]));
    snapshot("no-headers", &run(&["--no-headers"]));
    snapshot("verbose", &run(&["-v"]));
    snapshot("name", &run(&["-o", "name"]));
    // Piped output never has colour, whatever the terminal would get.
    assert!(!run(&[]).contains('\u{1b}'));

    // YAML and JSON carry the same fields, with the hint.
    let yaml = run_pullprobe(&["check", &bad, "-o", "yaml"], None);
    let docs: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    let json = run_pullprobe(&["check", &bad, "--json"], None);
    let line = json_lines(&json.stdout).remove(0);
    assert_eq!(docs[0]["reason"], line["reason"]);
    assert_eq!(docs[0]["hint"], line["hint"]);
    assert!(line["hint"]
        .as_str()
        .unwrap()
        .contains("push it, or fix the reference"));
    // -o and --json are one choice.
    let both = run_pullprobe(&["check", &bad, "--json", "-o", "yaml"], None);
    assert_eq!(both.status.code(), Some(2));
}

/// `normalise` for several registries: each port its own placeholder, the days a fresh
/// certificate has left, and a temp dir's path.
fn normalise_all(text: &str, ports: &[(u16, &str)], dirs: &[(&std::path::Path, &str)]) -> String {
    let mut text = text.to_string();
    for (d, name) in dirs {
        text = text.replace(&d.display().to_string(), name);
    }
    for (p, name) in ports {
        text = text.replace(&format!(":{p}"), &format!(":{name}"));
    }
    let days = regex::Regex::new(r"days_to_expiry=-?\d+").unwrap();
    let text = days.replace_all(&text, "days_to_expiry=N");
    normalise(&text, 0)
}

/// A node's host root: containerd's config with `config_path` at `/srv/certs.d` (not the
/// default directory), its resolv.conf and hosts file.
fn node_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/containerd")).unwrap();
    std::fs::write(
        d.path().join("etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/srv/certs.d\"\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("etc/resolv.conf"),
        "nameserver 127.0.53.254\n",
    )
    .unwrap();
    std::fs::write(d.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    d
}

fn hosts_toml(root: &std::path::Path, host: &str, text: &str) -> std::path::PathBuf {
    let dir = root.join("srv/certs.d").join(host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), text).unwrap();
    dir
}

/// Issue 17, items 4–9: the fix lines fit the case — where the check runs, the credential
/// that was sent, the file and entry the plan used — and what the plan finds that changes
/// the path is under the row. One snapshot of every case (`fixes.txt`).
#[test]
fn fix_lines_and_warnings_fit_the_case() {
    let pki = Pki::new();
    let auth = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "right-pw")])
        .start();
    OciImage::single("v1").push(
        &auth,
        "demo/app",
        &PushOpts::tls(&pki).creds("alice", "right-pw"),
    );
    let tls = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&tls, "demo/app", &PushOpts::tls(&pki));
    let plain = Registry::plain();
    OciImage::single("v1").push(&plain, "demo/app", &PushOpts::insecure());
    let root = node_root();
    let no_docker_config = tempfile::tempdir().unwrap();
    let env = [("DOCKER_CONFIG", no_docker_config.path().to_str().unwrap())];
    let ca = pki.ca_cert.to_str().unwrap();
    let ports = [
        (auth.port(), "AUTH"),
        (tls.port(), "TLS"),
        (plain.port(), "PLAIN"),
    ];
    let dirs = [(root.path(), "ROOT"), (pki.dir(), "PKI")];
    let mut snap = String::new();
    let mut case = |title: &str, args: &[&str], stdin: Option<&str>| {
        let out = run_pullprobe_env(args, stdin, &env);
        let text = String::from_utf8_lossy(&out.stdout);
        snap.push_str(&format!("## {title}\n"));
        snap.push_str(&normalise_all(&text, &ports, &dirs));
        snap.push('\n');
        text.to_string()
    };

    // 7: a workstation without credentials gets the command's flags, not node advice.
    let a = format!("{}/demo/app:v1", auth.host_port());
    case(
        "workstation, no credentials",
        &["check", &a, "--ca-file", ca],
        None,
    );
    // 7, 8: the credential given on the command line, rejected, named as such.
    case(
        "workstation, wrong --username/--password-stdin",
        &[
            "check",
            &a,
            "--ca-file",
            ca,
            "--username",
            "alice",
            "--password-stdin",
        ],
        Some("wrong-pw"),
    );

    // 5: containerd's localhost rule, named; the scheme used is https.
    let t = format!("{}/demo/app:v1", tls.host_port());
    let out = case(
        "workstation, localhost TLS registry without a CA",
        &["check", &t, "-v"],
        None,
    );
    assert!(
        out.contains(&format!("endpoint    https://{}/v2", tls.host_port())),
        "{out}"
    );

    // 6: the CA is on the [host] entry, not on `server`: the fix names `server` in the
    // file the plan read (config_path /srv/certs.d), and the CA the other entry uses.
    let th = tls.host_port();
    let dir = hosts_toml(
        root.path(),
        &th,
        &format!("server = \"https://{th}\"\n[host.\"https://{th}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/srv/certs.d/{th}/ca.crt\"\n"),
    );
    std::fs::copy(&pki.ca_cert, dir.join("ca.crt")).unwrap();
    let missing = format!("{th}/demo/app:missing");
    let r = root.path().to_str().unwrap();
    let out = case(
        "node, CA on [host] only, the tag missing there: server is untrusted",
        &["check", "--host-root", r, &missing],
        None,
    );
    assert!(
        out.contains(&format!("at the top level of /srv/certs.d/{th}/hosts.toml")),
        "{out}"
    );
    assert!(!out.contains("/etc/containerd/certs.d"), "{out}");

    // 4: a hosts.toml containerd ignores ("reslove"): ready, and the row says why the
    // mirror dropped out; JSON has it in `warnings`.
    let ph = plain.host_port();
    hosts_toml(
        root.path(),
        &ph,
        &format!("server = \"http://{ph}\"\n[host.\"http://{th}\"]\n  capabilities = [\"pull\", \"reslove\"]\n"),
    );
    let p = format!("{ph}/demo/app:v1");
    let out = case(
        "node, a hosts.toml containerd ignores",
        &["check", "--host-root", r, &p],
        None,
    );
    assert!(out.contains("warning: containerd ignores"), "{out}");
    let json = run_pullprobe_env(&["check", "--host-root", r, &p, "--json"], None, &env);
    let line = json_lines(&json.stdout).remove(0);
    assert!(
        line["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("unknown capability \"reslove\"")),
        "{line}"
    );
    snapshot("fixes", &snap);
}

/// Issue 17, item 9: a host root without resolv.conf: the fix says the file is missing and
/// what the runtime does instead; `plan` and `check` warn about it (whatever answers, or
/// does not, on 127.0.0.1:53).
#[test]
fn a_missing_resolv_conf_is_named() {
    let root = node_root();
    std::fs::remove_file(root.path().join("etc/resolv.conf")).unwrap();
    std::fs::remove_file(root.path().join("etc/hosts")).unwrap();
    let r = root.path().to_str().unwrap();
    let img = "registry.invalid/demo/app:v1";
    let out = run_pullprobe(
        &[
            "check",
            "--host-root",
            r,
            img,
            "--json",
            "--timeout-dns",
            "1s",
        ],
        None,
    );
    let line = json_lines(&out.stdout).remove(0);
    assert_eq!(line["phase"], "dns", "{line}");
    let hint = line["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("/etc/resolv.conf does not exist, so the runtime asks 127.0.0.1:53 and [::1]:53 for registry.invalid"),
        "{hint}"
    );
    let warnings = line["warnings"].to_string();
    assert!(
        warnings.contains("/etc/resolv.conf does not exist")
            && warnings.contains("/etc/hosts does not exist"),
        "{warnings}"
    );
    let plan = run_pullprobe(&["plan", "--host-root", r, img], None);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("finding: /etc/resolv.conf does not exist: the runtime's resolver asks 127.0.0.1:53 and [::1]:53 instead"),
        "{text}"
    );
    assert!(
        text.contains("finding: /etc/hosts does not exist"),
        "{text}"
    );
}

/// Issue 17 item 16: `plan --host-root` shows the files an endpoint uses (`ca:`, `client
/// cert:`, the system CA bundle) as the node sees them, like its `from:` lines, never under
/// this machine's copy of the root.
#[test]
fn plan_shows_file_paths_as_the_node_sees_them() {
    let root = node_root();
    let r = root.path();
    let dir = hosts_toml(
        r,
        "reg.example",
        "server = \"https://reg.example\"\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.crt\"\n  client = [[\"client.cert\", \"client.key\"]]\n",
    );
    let pki = Pki::new();
    for (from, to) in [
        (&pki.ca_cert, "ca.crt"),
        (&pki.client.cert, "client.cert"),
        (&pki.client.key, "client.key"),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    std::fs::create_dir_all(r.join("etc/ssl/certs")).unwrap();
    std::fs::copy(&pki.ca_cert, r.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let out = run_pullprobe(
        &[
            "plan",
            "--host-root",
            r.to_str().unwrap(),
            "reg.example/app:v1",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "     ca: /srv/certs.d/reg.example/ca.crt\n",
        "     client cert: /srv/certs.d/reg.example/client.cert\n",
        "system CA bundle: /etc/ssl/certs/ca-certificates.crt\n",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(!text.contains(r.to_str().unwrap()), "{text}");
}

/// Issue 17 item 10: the pre-flight table of one node that pulls one image and cannot run
/// the other's workload (`-`): the default table explains `-` and names the workload that
/// lands nowhere; `-o wide` adds each cell's answer and the agent, so it always differs; the
/// HTML legend names every colour, `-` included, and writes reasons whole.
#[test]
fn preflight_tables_say_why_a_cell_is_not_scheduled() {
    use pullprobe::preflight::matrix::{AgentInfo, Cell, CellVerdict, Matrix, NodeRow, Unplaced};
    use pullprobe::preflight::render::{render, Format};
    let ready = Cell {
        verdict: CellVerdict::Ready,
        phase: None,
        reason: None,
        host: None,
        message: "pull would succeed".into(),
        checked_on: None,
        source: Some("schedule".into()),
        report: None,
    };
    let why = "app.yaml#2 CronJob apps/nightly: nodeSelector disk=ssd does not match";
    let row = |n: &str| NodeRow {
        node: n.into(),
        agent: Some(AgentInfo {
            version: "0.1.0".into(),
            runtime: "containerd".into(),
            platform: "linux/amd64".into(),
            pull_secrets: String::new(),
        }),
        cells: vec![ready.clone(), Cell::not_scheduled(why)],
    };
    let unknown = Cell::unknown(
        pullprobe::preflight::matrix::UnknownReason::AgentNotRunning,
        "the agent Pod pullprobe-x is Running but has no status.podIP yet",
    );
    let silent = NodeRow {
        node: "n3".into(),
        agent: None,
        cells: vec![unknown, Cell::not_scheduled(why)],
    };
    let m = Matrix::new(
        vec!["reg/web:1".into(), "reg/job:1".into()],
        vec![row("n1"), row("n2"), silent],
        Vec::new(),
        Vec::new(),
        false,
    )
    .with_unplaced(vec![Unplaced {
        workload: "app.yaml#2 CronJob apps/nightly".into(),
        images: vec!["reg/job:1".into()],
        why: "nodeSelector disk=ssd does not match on 3 nodes".into(),
    }]);
    let table = render(&m, Format::Table);
    let wide = render(&m, Format::Wide);
    assert_ne!(table, wide, "-o wide must say more than the table");
    snapshot("preflight-table", &table);
    snapshot("preflight-wide", &wide);
    let html = render(&m, Format::Html);
    assert!(
        html.contains("not scheduled: the image&#39;s workloads cannot land on this node"),
        "{html}"
    );
    assert!(
        html.contains(">AgentNotRunning</td>"),
        "reasons are not clipped: {html}"
    );
    assert!(html.contains("id=\"unplaced\""), "{html}");
}
