//! `pullprobe check` against the real CNCF distribution registry in its three set-ups
//! (plain HTTP, TLS + htpasswd, TLS + token auth), real skopeo pushes, and the redirect
//! middleware sending blobs to another host.

mod harness;

use harness::*;
use serde_json::Value;

/// Run `pullprobe check --json ARGS`, return (exit code, the JSON objects).
fn check(args: &[&str], stdin: Option<&str>) -> (i32, Vec<Value>, String) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = run_pullprobe(&all, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        out.status.code().unwrap_or(-1),
        json_lines(&out.stdout),
        stderr,
    )
}

fn phase_names(v: &Value) -> Vec<String> {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// `check` as `user`, the password on stdin, trusting `ca`.
fn check_as(
    image: &str,
    ca: &str,
    user: &str,
    password: &str,
    extra: &[&str],
) -> (i32, Vec<Value>, String) {
    let mut args = vec![
        image,
        "--ca-file",
        ca,
        "--username",
        user,
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    check(&args, Some(password))
}

/// The first phase record called `name`.
fn phase<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} phase: {v:#}"))
}

fn assert_failure(v: &Value, phase: &str, reason: &str) {
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["phase"], phase, "{v:#}");
    assert_eq!(v["reason"], reason, "{v:#}");
}

#[test]
fn plain_http_anonymous_single_image() {
    let reg = Registry::plain();
    let img = OciImage::single("v1");
    let pushed = img.push(&reg, "demo/app", &PushOpts::insecure());
    let image = format!("{}/demo/app:v1", reg.host_port());
    let (code, lines, err) = check(&[&image, "--plain-http"], None);
    assert_eq!(code, 0, "{err} {lines:?}");
    let v = &lines[0];
    assert_eq!(v["verdict"], "ready");
    assert_eq!(v["image"], image);
    assert_eq!(v["reference"], image);
    assert!(v["phase"].is_null() && v["reason"].is_null());
    assert_eq!(v["manifest"]["digest"], pushed.digest);
    assert_eq!(
        v["manifest"]["config_digest"],
        img.manifests[0].config_digest.as_str()
    );
    assert_eq!(
        phase_names(v),
        ["dns", "connect", "auth", "manifest", "blob"],
        "{v:#}"
    );
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn localhost_default_tries_https_then_plain_http_like_containerd() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let image = format!("{}/demo/app:v1", reg.host_port());
    let (code, lines, _) = check(&[&image], None);
    assert_eq!(code, 0, "{lines:?}");
    let v = &lines[0];
    assert_eq!(v["endpoint"], format!("http://{}/v2", reg.host_port()));
    // The HTTPS try is one labelled fallback row, not a failure inside a ready result.
    let phases = v["phases"].as_array().unwrap();
    let tls = phases
        .iter()
        .find(|p| p["name"] == "tls")
        .expect("tls attempt recorded");
    assert_eq!(tls["ok"], true, "{v:#}");
    assert!(
        tls["detail"].as_str().unwrap().starts_with("https→http: "),
        "{v:#}"
    );
    assert!(phases.iter().all(|p| p["ok"] == true), "{v:#}");
    assert_eq!(v["attempts"][0]["https_to_http"], true, "{v:#}");
    // The table says so on the endpoint line.
    let out = run_pullprobe(&["check", "-v", &image], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(https→http fallback)"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn tag_and_repository_missing_are_told_apart() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let hp = reg.host_port();
    let (code, lines, _) = check(
        &[
            &format!("{hp}/demo/app:nope"),
            &format!("{hp}/demo/absent:v1"),
            &format!("{hp}/demo/app:v1"),
            "--plain-http",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_failure(&lines[0], "manifest", "ManifestNotFound");
    assert_failure(&lines[1], "manifest", "RepositoryNotFound");
    assert_eq!(lines[2]["verdict"], "ready");
}

#[test]
fn multi_platform_index_selects_platform_or_reports_it_missing() {
    let reg = Registry::plain();
    let img = OciImage::multi_platform("v1", &[("linux", "amd64"), ("linux", "arm64")]);
    let pushed = img.push(&reg, "multi/app", &PushOpts::insecure());
    let image = format!("{}/multi/app:v1", reg.host_port());
    let arm = img
        .manifests
        .iter()
        .find(|m| m.architecture == "arm64")
        .unwrap();
    let (code, lines, _) = check(&[&image, "--plain-http", "--platform", "linux/arm64"], None);
    assert_eq!(code, 0, "{lines:?}");
    let v = &lines[0];
    assert_eq!(v["manifest"]["digest"], pushed.digest);
    assert_eq!(v["manifest"]["platform_digest"], arm.digest.as_str());
    assert_eq!(v["manifest"]["config_digest"], arm.config_digest.as_str());
    assert!(phase_names(v).contains(&"platform".to_string()));

    let (code, lines, _) = check(&[&image, "--plain-http", "--platform", "linux/s390x"], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "platform", "PlatformMissing");
    let msg = lines[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("linux/amd64") && msg.contains("linux/arm64"),
        "{msg}"
    );
}

#[test]
fn digest_reference_resolves_by_digest() {
    let reg = Registry::plain();
    let img = OciImage::single("v1");
    let pushed = img.push(&reg, "demo/app", &PushOpts::insecure());
    let image = format!("{}/demo/app@{}", reg.host_port(), pushed.digest);
    let (code, lines, _) = check(&[&image, "--plain-http"], None);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["manifest"]["digest"], pushed.digest);
    let missing = format!("{}/demo/app@sha256:{}", reg.host_port(), "0".repeat(64));
    let (code, lines, _) = check(&[&missing, "--plain-http"], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "manifest", "ManifestNotFound");
}

#[test]
fn tls_basic_auth_success_wrong_password_and_missing_credentials() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "right-pw")])
        .start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::tls(&pki).creds("alice", "right-pw"),
    );
    let image = format!("{}/team/app:v1", reg.host_port());
    let ca = pki.ca_cert.to_str().unwrap();
    let (code, lines, err) = check_as(&image, ca, "alice", "right-pw\n", &[]);
    assert_eq!(code, 0, "{err} {lines:?}");
    let v = &lines[0];
    assert_eq!(v["credential_source"], "command-line");
    assert_eq!(v["tls"]["version"], "TLSv1.3");
    assert!(v["tls"]["days_to_expiry"].as_i64().unwrap() > 0);
    assert!(v["tls"]["sans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "127.0.0.1"));
    let auth = phase(v, "auth");
    assert_eq!(auth["detail"], "basic");

    let (code, lines, _) = check_as(&image, ca, "alice", "wrong-pw\n", &[]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthCredentialsRejected");

    let (code, lines, _) = check(&[&image, "--ca-file", ca], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthCredentialsRequired");
}

fn token_setup(pki: &Pki) -> (TokenIssuer, Registry) {
    let issuer = TokenIssuer::builder(pki)
        .user("alice", "alice-pw")
        .user("bob", "bob-pw")
        .allow("alice", "team/app")
        .allow("alice", "public/app")
        .allow("bob", "other/app")
        .anonymous_allow("public/app")
        .start();
    let reg = Registry::builder()
        .tls(&pki.server)
        .token_auth(&issuer)
        .start();
    let opts = PushOpts::tls(pki).creds("alice", "alice-pw");
    OciImage::single("v1").push(&reg, "team/app", &opts);
    (issuer, reg)
}

#[test]
fn bearer_token_oauth_post_then_cached_scope_denied_and_wrong_password() {
    let pki = Pki::new();
    let (issuer, reg) = token_setup(&pki);
    let image = format!("{}/team/app:v1", reg.host_port());
    let ca = pki.ca_cert.to_str().unwrap();
    issuer.reset_counts();
    let (code, lines, err) = check_as(&image, ca, "alice", "alice-pw", &[]);
    assert_eq!(code, 0, "{err} {lines:?}");
    // containerd with a secret: OAuth2 POST, no GET fallback needed.
    assert_eq!(issuer.post_count(), 1);
    assert_eq!(issuer.get_count(), 0);
    let auth = phase(&lines[0], "auth").clone();
    assert!(
        auth["detail"].as_str().unwrap().contains("OAuth2 POST"),
        "{auth}"
    );

    // Two images of the same repository in one run share the cached token.
    issuer.reset_counts();
    let (code, _, _) = check(
        &[
            &image,
            &image,
            "--ca-file",
            ca,
            "--username",
            "alice",
            "--password-stdin",
            "--concurrency",
            "1",
        ],
        Some("alice-pw"),
    );
    assert_eq!(code, 0);
    assert_eq!(
        issuer.post_count(),
        1,
        "token cached per (realm, service, scope)"
    );

    // bob authenticates but may not pull team/app: insufficient scope.
    let (code, lines, _) = check_as(&image, ca, "bob", "bob-pw", &[]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthDenied");

    let (code, lines, _) = check_as(&image, ca, "alice", "not-her-pw", &[]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthCredentialsRejected");

    // Anonymous: the issuer grants nothing on team/app.
    let (code, lines, _) = check(&[&image, "--ca-file", ca], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthCredentialsRequired");
}

#[test]
fn bearer_token_anonymous_get_for_public_repository() {
    let pki = Pki::new();
    let (issuer, reg) = token_setup(&pki);
    let opts = PushOpts::tls(&pki).creds("alice", "alice-pw");
    OciImage::single("v1").push(&reg, "public/app", &opts);
    issuer.reset_counts();
    let image = format!("{}/public/app:v1", reg.host_port());
    let (code, lines, _) = check(&[&image, "--ca-file", pki.ca_cert.to_str().unwrap()], None);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(issuer.post_count(), 0);
    assert!(issuer.get_count() >= 1);
    assert!(lines[0]["credential_source"].is_null());
}

#[test]
fn crio_profile_pings_v2_first_and_uses_get() {
    let pki = Pki::new();
    let (_issuer, reg) = token_setup(&pki);
    let image = format!("{}/team/app:v1", reg.host_port());
    let (code, lines, err) = check(
        &[
            &image,
            "--runtime",
            "crio",
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
            "--username",
            "alice",
            "--password-stdin",
        ],
        Some("alice-pw"),
    );
    assert_eq!(code, 0, "{err} {lines:?}");
    let auth = phase(&lines[0], "auth").clone();
    let detail = auth["detail"].as_str().unwrap();
    assert!(detail.starts_with("ping:"), "{detail}");
    assert!(detail.contains("GET with Basic"), "{detail}");
}

#[test]
fn blob_redirect_to_another_host_is_followed_without_authorization() {
    let pki = Pki::new();
    let (_issuer, reg) = token_setup(&pki);
    let blobs = BlobHost::start(reg.storage_dir());
    let cdn_reg = Registry::builder()
        .tls(&pki.server)
        .token_auth(&_issuer)
        .storage(reg.storage())
        .redirect(&blobs.url())
        .start();
    let image = format!("{}/team/app:v1", cdn_reg.host_port());
    let (code, lines, err) = check_as(
        &image,
        pki.ca_cert.to_str().unwrap(),
        "alice",
        "alice-pw",
        &[],
    );
    assert_eq!(code, 0, "{err} {lines:?}");
    assert!(blobs.request_count() >= 1);
    assert!(
        !blobs.saw_authorization(),
        "Authorization leaked to the blob host"
    );
    let v = &lines[0];
    let blob = phase(v, "blob").clone();
    assert_eq!(blob["host"], format!("127.0.0.1:{}", blobs.port()));
    // The blob host got its own dns/connect phases.
    let connects = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "connect")
        .count();
    assert!(connects >= 2, "{v:#}");

    // Same registry, blob host down: the node reaches the registry but cannot pull.
    let dead_reg = Registry::builder()
        .tls(&pki.server)
        .token_auth(&_issuer)
        .storage(reg.storage())
        .redirect(&blob_host_down_url())
        .start();
    let image = format!("{}/team/app:v1", dead_reg.host_port());
    let (code, lines, _) = check_as(
        &image,
        pki.ca_cert.to_str().unwrap(),
        "alice",
        "alice-pw",
        &[],
    );
    assert_eq!(code, 1);
    assert_failure(&lines[0], "blob", "BlobHostUnreachable");
    assert!(lines[0]["message"].as_str().unwrap().contains("connect"));

    // --no-blob skips the phase.
    let (code, lines, _) = check_as(
        &image,
        pki.ca_cert.to_str().unwrap(),
        "alice",
        "alice-pw",
        &["--no-blob"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert!(!phase_names(&lines[0]).contains(&"blob".to_string()));
}

#[test]
fn mirror_before_upstream_degraded_when_mirror_is_broken() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let mirror = Registry::builder().storage(reg.storage()).start();
    let image = format!("{}/demo/app:v1", reg.host_port());
    // Working mirror first: ready through the mirror, with ?ns= naming the registry.
    let (code, lines, _) = check(
        &[
            &image,
            "--plain-http",
            "--mirror",
            &format!("http://{}", mirror.host_port()),
        ],
        None,
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "ready");
    assert_eq!(
        lines[0]["endpoint"],
        format!("http://{}/v2", mirror.host_port())
    );
    // A dead mirror: the upstream still works, so the image is degraded, not broken.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let (code, lines, _) = check(
        &[
            &image,
            "--plain-http",
            "--mirror",
            &format!("http://127.0.0.1:{dead_port}"),
        ],
        None,
    );
    assert_eq!(code, 0, "degraded counts as ready");
    assert_eq!(lines[0]["verdict"], "degraded");
    let attempts = lines[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["reason"], "ConnectRefused");
    assert_eq!(attempts[1]["ok"], true);
    let (code, _, _) = check(
        &[
            &image,
            "--plain-http",
            "--strict",
            "--mirror",
            &format!("http://127.0.0.1:{dead_port}"),
        ],
        None,
    );
    assert_eq!(code, 1, "--strict counts degraded as not ready");
}

#[test]
fn config_blob_missing_from_storage() {
    let reg = Registry::plain();
    let img = OciImage::single("v1");
    img.push(&reg, "demo/app", &PushOpts::insecure());
    // Remove the config blob's data behind the registry's back (a half-synced mirror).
    let hex = img.manifests[0]
        .config_digest
        .trim_start_matches("sha256:")
        .to_string();
    let data = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    std::fs::remove_file(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let image = format!("{}/demo/app:v1", reg.host_port());
    let (code, lines, _) = check(&[&image, "--plain-http"], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "blob", "BlobNotFound");
}
