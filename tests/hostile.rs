//! Hostile input to the parsers and to the arithmetic on values from outside: nothing
//! panics, nothing hangs, and no error quotes the text it failed on (secrets live in
//! those files: `config.toml` `auth`, hosts.toml `[header] Authorization`, registries.yaml
//! `password`, config.json `auth`, a provider's `env`).

use std::path::Path;

use pullprobe::agent::config::{AgentConfig, ConfigFormat};
use pullprobe::credentials::docker_config::DockerConfig;
use pullprobe::credentials::provider::CredentialProviderConfig;
use pullprobe::hostroot::HostRoot;
use pullprobe::nodeconfig::hosts_toml::{parse_hosts_file, HostsTomlQuirks};
use pullprobe::nodeconfig::{containerd, crio, k3s};

const CANARY: &str = "canary-parse-4b1d";

/// Files under a temporary host root.
fn host_root(files: &[(&str, String)]) -> (tempfile::TempDir, HostRoot) {
    let d = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let path = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let hr = HostRoot::new(d.path()).unwrap();
    (d, hr)
}

/// Each message must name a line and never hold the canary.
fn assert_safe(what: &str, messages: &[String]) {
    assert!(!messages.is_empty(), "{what}: expected an error");
    for m in messages {
        assert!(!m.contains(CANARY), "{what}: secret leaked: {m}");
        assert!(m.contains("line "), "{what}: no position in: {m}");
    }
}

#[test]
fn containerd_config_toml_syntax_error_shows_position_not_auth() {
    let text = format!(
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r.io\".auth]\nauth = \"{CANARY}\nusername = \"u\"\n"
    );
    let (_d, hr) = host_root(&[("/etc/containerd/config.toml", text)]);
    let mut problems = Vec::new();
    containerd::load(&hr, Path::new("/etc/containerd/config.toml"), &mut problems);
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_safe("config.toml", &msgs);
    assert!(msgs[0].contains("line 3"), "{msgs:?}");
}

#[test]
fn hosts_toml_syntax_error_shows_position_not_header() {
    let text = format!(
        "server = \"https://r.io\"\n[host.\"https://m.io\".header]\nAuthorization = \"Bearer {CANARY}\n"
    );
    let e = parse_hosts_file(
        Path::new("/etc/containerd/certs.d/r.io"),
        &text,
        HostsTomlQuirks::default(),
    )
    .unwrap_err();
    assert_safe("hosts.toml", &[e.to_string()]);
}

#[test]
fn registries_conf_syntax_error_shows_position_only() {
    let text = format!(
        "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"{CANARY}@m.io\n"
    );
    let (_d, hr) = host_root(&[("/etc/containers/registries.conf", text)]);
    let mut problems = Vec::new();
    crio::load(&hr, &mut problems);
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_safe("registries.conf", &msgs);
}

/// crio.conf(.d) and the kubelet's KubeletConfiguration (read for CRI-O's `[crio.image]` and
/// KEP-2535): a syntax error or a bad value is named by file and field, never quoted.
#[test]
fn crio_conf_and_kubelet_config_errors_show_position_only() {
    let (_d, hr) = host_root(&[
        (
            "/etc/crio/crio.conf",
            format!("[crio.image]\nglobal_auth_file = \"{CANARY}\nshort_name_mode = \"x\"\n"),
        ),
        (
            "/etc/crio/crio.conf.d/10.conf",
            format!("[crio.image]\npull_progress_timeout = \"{CANARY}\"\n"),
        ),
    ]);
    let mut problems = Vec::new();
    crio::load(&hr, &mut problems);
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_safe("crio.conf", &msgs[..1]);
    assert_field_only(&msgs[1], "crio.image.pull_progress_timeout");
    let (_d, hr) = host_root(&[
        (
            "/etc/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet --config /k.yaml\n".to_string(),
        ),
        (
            "/k.yaml",
            format!("imagePullCredentialsVerificationPolicy: {CANARY}\npreloadedImagesVerificationAllowlist: [\"{CANARY}*\"]\n"),
        ),
    ]);
    let mut problems = Vec::new();
    pullprobe::nodeconfig::kubelet::discover(&hr, &mut problems);
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_field_only(&msgs[0], "imagePullCredentialsVerificationPolicy");
    assert_field_only(&msgs[1], "preloadedImagesVerificationAllowlist[0]");
}

/// A bad value: named by its field, never quoted.
fn assert_field_only(m: &str, field: &str) {
    assert!(!m.contains(CANARY), "secret leaked: {m}");
    assert!(m.contains(field), "no field {field} in: {m}");
}

#[test]
fn k3s_registries_yaml_syntax_error_shows_position_not_password() {
    for text in [
        format!("configs:\n  r.io:\n    auth:\n      username: u\n      password: \"{CANARY}\n"),
        format!("configs:\n  r.io:\n    auth:\n      password: {CANARY}\n     bad: indent\n"),
    ] {
        let (_r, problems) = k3s::parse(Path::new("/etc/rancher/k3s/registries.yaml"), &text);
        let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_safe("registries.yaml", &msgs);
    }
}

#[test]
fn docker_config_json_errors_show_position_not_auth() {
    for text in [
        format!(r#"{{"auths": {{"r.io": {{"auth": "{CANARY}" "#),
        format!(r#"{{"auths": {{"r.io": {{"auth": "{CANARY}", }}}}}}"#),
        format!("{{\"auths\": {{\"r.io\": {{\"auth\": \"{CANARY}\u{1}\"}}}}}}"),
    ] {
        let e = DockerConfig::parse(Path::new("/var/lib/kubelet/config.json"), text.as_bytes())
            .unwrap_err();
        assert_safe("config.json", &[e.to_string()]);
    }
}

#[test]
fn credential_provider_config_errors_show_position_not_env() {
    let yaml = format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: p\n  env:\n  - name: TOKEN\n    value: \"{CANARY}\n"
    );
    let json = format!(r#"{{"providers": [{{"env": [{{"name": "T", "value": "{CANARY}"}}]]"#);
    for text in [yaml, json] {
        let e = CredentialProviderConfig::parse(Path::new("/etc/kubernetes/cp.yaml"), &text)
            .unwrap_err();
        assert_safe("CredentialProviderConfig", &[e.to_string()]);
    }
}

#[test]
fn agent_config_errors_show_position_and_field_only() {
    for (text, format, field) in [
        (
            format!("interval: 60s\nimages: [\"{CANARY}\"\n"),
            ConfigFormat::Yaml,
            None,
        ),
        (
            format!("interval = \"{CANARY}\"\n"),
            ConfigFormat::Toml,
            None,
        ),
        (
            format!("interval: \"{CANARY}\"\n"),
            ConfigFormat::Yaml,
            None,
        ),
        (
            format!("listen = [\"{CANARY}\"]\n"),
            ConfigFormat::Toml,
            None,
        ),
        (
            "intervall: 60s\n".to_string(),
            ConfigFormat::Yaml,
            Some("intervall"),
        ),
        (
            "intervall = \"60s\"\n".to_string(),
            ConfigFormat::Toml,
            Some("intervall"),
        ),
    ] {
        let e = AgentConfig::parse(&text, format, Path::new("/etc/pullprobe/config"))
            .unwrap_err()
            .to_string();
        assert_safe("agent config", std::slice::from_ref(&e));
        if let Some(f) = field {
            assert!(e.contains(&format!("unknown field `{f}`")), "{e}");
        }
    }
}

/// Durations from a config or flag are added to the clock: centuries used to overflow
/// `Instant + Duration` (a panic, and the release build aborts). They are rejected at parse
/// time, naming the field, never quoting the value.
#[test]
fn absurd_durations_are_rejected_not_overflowed() {
    for (text, format) in [
        ("interval: 500000000000y\n", ConfigFormat::Yaml),
        ("heartbeat: 18446744073709551615\n", ConfigFormat::Yaml),
        ("interval = \"500000000000y\"\n", ConfigFormat::Toml),
        (
            "[fleet]\nperiod = 9223372036854775807\n",
            ConfigFormat::Toml,
        ),
    ] {
        let e = AgentConfig::parse(text, format, Path::new("/etc/pullprobe/config"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 366 days"), "{e}");
        assert!(!e.contains("500000000000"), "{e}");
    }
    let ok = AgentConfig::parse(
        "interval: 366d\nheartbeat: 366d\nfleet:\n  period: 366d\n",
        ConfigFormat::Yaml,
        Path::new("/c.yaml"),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn absurd_cli_timeouts_are_usage_errors() {
    for t in ["500000000000y", "18446744073709551615", "25h"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args(["check", "--timeout", t, "127.0.0.1:1/x:y"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("at most 24h"),
            "{t}"
        );
    }
}
