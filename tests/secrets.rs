//! Credentials and tokens never appear in any output, error or log — checked with
//! canary values against real and scripted servers, with trace logging on.

mod harness;

use base64::Engine as _;
use harness::*;

const CANARY_PW: &str = "canary-pw-5e1f0c";
const CANARY_TOKEN: &str = "canary-token-9d2b77";

fn assert_clean(out: &std::process::Output, canaries: &[&str]) {
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for c in canaries {
        assert!(!all.contains(c), "secret {c:?} leaked into output:\n{all}");
    }
}

#[test]
fn password_never_printed_with_trace_logging() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "the-real-one")])
        .start();
    let image = format!("{}/team/app:v1", reg.host_port());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{CANARY_PW}"));
    for extra in [&["--json"][..], &["-v"][..]] {
        let mut args = vec![
            "check",
            &image,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
            "--username",
            "alice",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        let out = run_pullprobe_env(&args, Some(CANARY_PW), &[("RUST_LOG", "trace")]);
        assert_eq!(out.status.code(), Some(1));
        assert_clean(&out, &[CANARY_PW, &basic]);
    }
}

#[test]
fn token_never_printed_even_when_rejected() {
    let cell = std::sync::Arc::new(std::sync::Mutex::new(0u16));
    let c2 = cell.clone();
    let s = ScriptedServer::start(move |r| {
        if r.path.starts_with("/token") {
            return Reply::json(
                200,
                &serde_json::json!({"token": CANARY_TOKEN, "expires_in": 300}),
            );
        }
        let port = *c2.lock().unwrap();
        Reply::bearer_challenge(&format!("http://127.0.0.1:{port}/token"), "svc", None)
    });
    *cell.lock().unwrap() = s.port();
    let image = format!("{}/demo/app:v1", s.host_port());
    for extra in [&["--json"][..], &["-v"][..]] {
        let mut args = vec![
            "check",
            &image,
            "--plain-http",
            "--username",
            "u",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        let out = run_pullprobe_env(&args, Some(CANARY_PW), &[("RUST_LOG", "trace")]);
        assert_eq!(out.status.code(), Some(1));
        assert_clean(&out, &[CANARY_TOKEN, CANARY_PW]);
    }
    // The token really was sent (so the check above is meaningful).
    assert!(s
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {CANARY_TOKEN}"))));
}

#[test]
fn auth_file_errors_do_not_echo_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    // Valid JSON, but `auth` is not base64 and carries the canary.
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"!!{CANARY_PW}!!"}}}}}}"#),
    )
    .unwrap();
    let out = run_pullprobe(
        &[
            "check",
            "127.0.0.1:5000/x:v1",
            "--auth-file",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "error names the file: {err}");
    assert_clean(&out, &[CANARY_PW]);
}
