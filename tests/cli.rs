//! Command-line behaviour: exit codes, usage errors, the table, auth files.

mod harness;

use base64::Engine as _;
use harness::*;

#[test]
fn invalid_reference_is_a_usage_error() {
    let out = run_pullprobe(&["check", "Registry.Example/UPPER:tag"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid image reference"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = run_pullprobe(&["check", "nginx", "--platform", "linux"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run_pullprobe(&["check"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run_pullprobe(
        &["check", "x", "--auth-file", "/nonexistent/config.json"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.json"));
    let out = run_pullprobe(&["check", "x", "--timeout-dns", "soon"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn table_output_and_exit_codes() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let good = format!("{}/demo/app:v1", reg.host_port());
    let bad = format!("{}/demo/app:v2", reg.host_port());
    let out = run_pullprobe(&["check", &good, "--plain-http"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("IMAGE"), "{text}");
    assert!(text.contains(&good) && text.contains("ready"));
    let out = run_pullprobe(&["check", &good, &bad, "--plain-http", "-v"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ManifestNotFound"), "{text}");
    // -v lists every phase.
    for phase in ["dns", "connect", "auth", "manifest", "blob"] {
        assert!(
            text.contains(&format!("    {phase}")),
            "missing {phase}: {text}"
        );
    }
}

#[test]
fn credentials_from_an_auth_file() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "pw-from-file")])
        .start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::tls(&pki).creds("alice", "pw-from-file"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:pw-from-file");
    std::fs::write(
        &path,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            reg.host_port()
        ),
    )
    .unwrap();
    let image = format!("{}/team/app:v1", reg.host_port());
    let out = run_pullprobe(
        &[
            "check",
            "--json",
            &image,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
            "--auth-file",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = &json_lines(&out.stdout)[0];
    let src = v["credential_source"].as_str().unwrap();
    assert!(
        src.starts_with("auth-file:") && src.contains("config.json"),
        "{src}"
    );
    // $DOCKER_CONFIG is honoured when no --auth-file is given.
    let out = run_pullprobe_env(
        &[
            "check",
            "--json",
            &image,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
        ],
        None,
        &[("DOCKER_CONFIG", dir.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0));
}
