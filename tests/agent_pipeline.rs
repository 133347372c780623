//! The agent walks the node's pull path exactly as `check --host-root` does (one pipeline):
//! a systemd-resolved resolv.conf symlink resolved inside the host root, the credential
//! provider the kubelet's unit names, and Go's resolver rules without a resolv.conf — each
//! against real servers (distribution registry, unbound) and checked through both the agent's
//! `/status` and `pullprobe check`.

mod agent_proc;
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::agent_proc::{get_json, status_targets, wait_for, write_file, AgentProc};
use crate::harness::runner::{json_lines, run_pullprobe};
use crate::harness::{Dns, OciImage, Pki, PushOpts, Registry};

fn agent_config(image: &str) -> String {
    format!(
        "interval: 1s\njitter: 0\nfleet:\n  node_count: 1\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n  - \"{image}\"\n"
    )
}

/// The agent's latest image-check result for `image` (waits for the first).
fn image_target(agent: &mut AgentProc, image: &str) -> Value {
    agent.wait_ready(Duration::from_secs(20));
    let tail = image.split('/').next_back().unwrap_or(image).to_string();
    wait_for(
        Duration::from_secs(20),
        "the image target on /status",
        || {
            status_targets(&get_json(agent.port, "/status"))
                .into_iter()
                .find(|(k, _)| k.starts_with("image ") && k.contains(&tail))
                .map(|(_, v)| v)
        },
    )
}

fn spawn_agent(root: &Path, image: &str) -> AgentProc {
    let cfg = write_file(root, "agent.yaml", &agent_config(image));
    AgentProc::spawn(&[
        "--standalone",
        "--node-name",
        "pipeline-node",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        root.to_str().unwrap(),
    ])
}

/// Write `text` at `rel` under `root`, creating directories.
fn put(root: &Path, rel: &str, text: &str) -> std::path::PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn check_host_root(root: &Path, image: &str) -> Value {
    let out = run_pullprobe(
        &[
            "check",
            "--json",
            "--host-root",
            root.to_str().unwrap(),
            image,
        ],
        None,
    );
    json_lines(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no check output: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_systemd_resolved_symlink_is_resolved_inside_the_host_root() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::insecure());
    let dns = Dns::builder().record("reg.sym.test", "127.0.0.1").start();
    let host = format!("reg.sym.test:{}", reg.port());
    let image = format!("{host}/team/app:v1");

    let root = agent_proc::host_root();
    let r = root.path();
    std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
    std::fs::create_dir_all(r.join("run/systemd/resolve")).unwrap();
    std::fs::write(
        r.join("run/systemd/resolve/stub-resolv.conf"),
        format!("nameserver {}\noptions timeout:1 attempts:1\n", dns.ip()),
    )
    .unwrap();
    // Absolute, as systemd-resolved installs it: outside the host root it points nowhere.
    std::os::unix::fs::symlink(
        "/run/systemd/resolve/stub-resolv.conf",
        r.join("etc/resolv.conf"),
    )
    .unwrap();
    let certs = r.join("etc/containerd/certs.d").join(&host);
    std::fs::create_dir_all(&certs).unwrap();
    write_file(
        &r.join("etc/containerd"),
        "config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    );
    write_file(
        &certs,
        "hosts.toml",
        &format!("server = \"http://{host}\"\n"),
    );

    let c = check_host_root(r, &image);
    assert_eq!(c["verdict"], "ready", "check --host-root: {c}");
    let mut agent = spawn_agent(r, &image);
    let t = image_target(&mut agent, &image);
    assert_eq!(t["verdict"], "ready", "the agent on the same tree: {t}");
    assert_ne!(t["reason"], "DNSConfigInvalid", "{t}");
}

const PROVIDER: &str = r#"#!/bin/sh
# A kubelet credential provider: reads the request, answers credentials for the registry.
cat >/dev/null
echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{"REGISTRY":{"username":"plugin","password":"pluginpass"}}}'
"#;

#[test]
fn the_agent_runs_the_credential_provider_the_kubelet_unit_names() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("plugin", "pluginpass")])
        .start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::tls(&pki).creds("plugin", "pluginpass"),
    );
    let hp = reg.host_port();
    let image = format!("{hp}/team/app:v1");

    let root = agent_proc::host_root();
    let r = root.path();
    agent_proc::trust_in_hosts_toml(r, &hp, &pki.ca_cert);
    // The kubelet's unit names the provider config and bin dir; nothing is passed to pullprobe.
    put(
        r,
        "etc/systemd/system/kubelet.service",
        "[Service]\nEnvironmentFile=-/etc/default/kubelet\nExecStart=/usr/bin/kubelet $KUBELET_EXTRA_ARGS\n",
    );
    put(
        r,
        "etc/default/kubelet",
        "KUBELET_EXTRA_ARGS=\"--image-credential-provider-config=/etc/kubernetes/cp.yaml --image-credential-provider-bin-dir=/opt/cp/bin\"\n",
    );
    put(
        r,
        "etc/kubernetes/cp.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: test-provider\n    matchImages: [\"{hp}\"]\n    defaultCacheDuration: 1m\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
        ),
    );
    let plugin = put(
        r,
        "opt/cp/bin/test-provider",
        &PROVIDER.replace("REGISTRY", &hp),
    );
    Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();

    let c = check_host_root(r, &image);
    assert_eq!(c["verdict"], "ready", "check --host-root: {c}");
    assert_eq!(
        c["credential_source"],
        format!("plugin:test-provider#{hp}"),
        "{c}"
    );
    let mut agent = spawn_agent(r, &image);
    let t = image_target(&mut agent, &image);
    assert_eq!(t["verdict"], "ready", "{t}");
    assert_eq!(
        t["credential_source"],
        format!("plugin:test-provider#{hp}"),
        "{t}"
    );
    let st = get_json(agent.port, "/status");
    let k = &st["node_config"]["kubelet"];
    assert_eq!(
        k["credential_provider_config"]["value"], "/etc/kubernetes/cp.yaml",
        "{st}"
    );
    assert_eq!(
        k["credential_provider_config"]["source"]["from"], "unit",
        "{st}"
    );
    assert_eq!(
        k["credential_provider_config"]["source"]["defined_in"], "/etc/default/kubelet",
        "{st}"
    );
}

/// Runs `pullprobe ARGS` inside a fresh network namespace with only `lo` up: nothing else
/// is reachable, and nothing listens on 127.0.0.1:53 there.
fn in_empty_netns(args: &[&str]) -> Value {
    let ns = format!("pp-nores-{}", std::process::id());
    let ip = |a: &[&str]| {
        Command::new("ip")
            .args(a)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(ip(&["netns", "add", &ns]), "ip netns add (needs root)");
    ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_pullprobe")])
        .args(args)
        .output()
        .expect("run pullprobe in the netns");
    ip(&["netns", "del", &ns]);
    json_lines(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn without_a_resolv_conf_go_asks_localhost_and_ip_literals_need_no_dns() {
    let root = agent_proc::host_root();
    let r = root.path();
    std::fs::remove_file(r.join("etc/resolv.conf")).unwrap();
    let root_arg = r.to_str().unwrap();
    let base = [
        "check",
        "--json",
        "--timeout-dns",
        "2s",
        "--host-root",
        root_arg,
    ];
    // An IP literal is dialled at once: nothing listens, so the connect phase fails.
    let mut args = base.to_vec();
    args.push("127.0.0.1:5999/team/app:v1");
    let lit = in_empty_netns(&args);
    assert_eq!(lit["phase"], "connect", "{lit}");
    assert_eq!(lit["reason"], "ConnectRefused", "{lit}");
    // A name goes to Go's default servers, 127.0.0.1:53 and [::1]:53: a DNS failure, not a
    // configuration error.
    let mut args = base.to_vec();
    args.push("reg.example.test/team/app:v1");
    let name = in_empty_netns(&args);
    assert_eq!(name["phase"], "dns", "{name}");
    assert_ne!(name["reason"], "DNSConfigInvalid", "{name}");
}

/// One kubelet pull record (pkg/kubelet/images/pullmanager `ImagePulledRecord`, as the kubelet
/// writes it under `<root-dir>/image_manager/pulled/`), for `name` with `creds`.
fn pull_record(image_ref: &str, name: &str, creds: &str) -> String {
    format!(
        "{{\"kind\":\"ImagePulledRecord\",\"apiVersion\":\"kubelet.config.k8s.io/v1alpha1\",\
         \"lastUpdatedTime\":\"2026-11-01T10:00:00Z\",\"imageRef\":\"{image_ref}\",\
         \"credentialMapping\":{{\"{name}\":{creds}}}}}"
    )
}

/// KEP-2535 (ensure secret pulled images): the gate from the kubelet's `--feature-gates`, the
/// policy from a `--config-dir` drop-in over `--config`, the kubelet's pull records under its
/// `--root-dir`; `plan` and the agent's `/status` say per image whether a cached copy is
/// re-verified for a pod whose credentials were not recorded.
#[test]
fn cached_image_reverification_on_plan_and_status() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::insecure());
    OciImage::single("v1").push(&reg, "team/private", &PushOpts::insecure());
    let hp = reg.host_port();
    let (public, private) = (format!("{hp}/team/app:v1"), format!("{hp}/team/private:v1"));
    let root = agent_proc::host_root();
    let r = root.path();
    put(
        r,
        "etc/systemd/system/kubelet.service",
        "[Service]\nExecStart=/usr/bin/kubelet --root-dir=/data/kubelet --config=/etc/kubernetes/kubelet.yaml --config-dir=/etc/kubernetes/kubelet.conf.d --feature-gates=KubeletEnsureSecretPulledImages=true\n",
    );
    put(
        r,
        "etc/kubernetes/kubelet.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimagePullCredentialsVerificationPolicy: NeverVerify\n",
    );
    put(
        r,
        "etc/kubernetes/kubelet.conf.d/50-verify.conf",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimagePullCredentialsVerificationPolicy: NeverVerifyPreloadedImages\n",
    );
    let records = "data/kubelet/image_manager/pulled";
    put(
        r,
        &format!("{records}/sha256-1"),
        &pull_record(
            "sha256:1",
            &format!("{hp}/team/app"),
            r#"{"nodePodsAccessible":true}"#,
        ),
    );
    put(
        r,
        &format!("{records}/sha256-2"),
        &pull_record(
            "sha256:2",
            &format!("{hp}/team/private"),
            r#"{"kubernetesSecrets":[{"uid":"u","namespace":"a","name":"s","credentialHash":"h"}]}"#,
        ),
    );

    let out = run_pullprobe(
        &[
            "plan",
            "--host-root",
            r.to_str().unwrap(),
            &public,
            &private,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("imagePullCredentialsVerificationPolicy: NeverVerifyPreloadedImages (/etc/kubernetes/kubelet.conf.d/50-verify.conf")
            && text.contains("KubeletEnsureSecretPulledImages: on")
            && text.contains("pull records: 2 read in /data/kubelet/image_manager/pulled"),
        "{text}"
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cached copy (KEP-2535)"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("used by any pod"), "{}", lines[0]);
    assert!(lines[1].contains("re-verified"), "{}", lines[1]);

    let cfg = write_file(
        r,
        "agent.yaml",
        &format!(
            "interval: 1s\njitter: 0\nfleet:\n  node_count: 1\nimages:\n  - \"{public}\"\n  - \"{private}\"\n"
        ),
    );
    let mut agent = AgentProc::spawn(&[
        "--standalone",
        "--node-name",
        "kep2535-node",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        r.to_str().unwrap(),
    ]);
    let pub_row = image_target(&mut agent, &public);
    let priv_row = image_target(&mut agent, &private);
    assert_eq!(pub_row["verdict"], "ready", "{pub_row}");
    assert_eq!(pub_row["cached_image"]["reverified"], false, "{pub_row}");
    assert_eq!(priv_row["cached_image"]["reverified"], true, "{priv_row}");
    assert!(
        priv_row["cached_image"]["why"]
            .as_str()
            .unwrap()
            .contains("pull secrets or a service account"),
        "{priv_row}"
    );
    assert!(priv_row["cached_image"]["assumes"].is_null(), "{priv_row}");
}
