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

// ---------------------------------------------------------------------------------------
// Canaries in every input, checked in every output channel.
// ---------------------------------------------------------------------------------------

mod agent_proc;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

/// The registry password (kubelet config.json `auth`, pushed with skopeo).
const C_PW: &str = "canary-kubelet-pw-31ab";
/// containerd config.toml `registry.configs."…".auth.auth` (base64 of bob:C_CT).
const C_CT: &str = "canary-configtoml-77c0";
/// hosts.toml `[header]` values.
const C_HDR: &str = "canary-hoststoml-hdr-5e0d";
/// hosts.toml mirror `https://mirroruser:C_UI@mirror.test:PORT`.
const C_UI: &str = "canary-hostuserinfo-90fa";
/// containerd.service `HTTPS_PROXY=http://proxyuser:C_PX@…`.
const C_PX: &str = "canary-proxy-pw-1c2d";
/// k3s registries.yaml `password` (a real user of the issuer).
const C_K3S: &str = "canary-k3s-pw-4f61";
/// A credential-provider plugin's password (stdout) and its stderr chatter.
const C_PLUGIN_PW: &str = "canary-plugin-pw-e1e1";
const C_PLUGIN_ERR: &str = "canary-plugin-stderr-d00d";
const C_PLUGIN_OUT: &str = "canary-plugin-stdout-beef";
/// Presigned blob URL query.
const C_SIG: &str = "canary-x-amz-signature-a5a5";
/// Userinfo in the kubelet config.json's key (`https://keyuser:C_KEY@registry.test:PORT/team`).
const C_KEY: &str = "canary-key-userinfo-6b7c";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every canary plus its base64 forms, and the JWT prefix every issued token starts with.
fn all_canaries(extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        C_PW,
        C_CT,
        C_HDR,
        C_UI,
        C_PX,
        C_K3S,
        C_PLUGIN_PW,
        C_PLUGIN_ERR,
        C_PLUGIN_OUT,
        C_SIG,
        C_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (u, p) in [
        ("alice", C_PW),
        ("bob", C_CT),
        ("k3suser", C_K3S),
        ("puser", C_PLUGIN_PW),
        ("proxyuser", C_PX),
        ("keyuser", C_KEY),
    ] {
        v.push(b64(&format!("{u}:{p}")));
    }
    // Bearer tokens from the issuer are ES256 JWTs: `{"alg":…` → `eyJ`.
    v.push("eyJ".to_string());
    v.extend(extra.iter().cloned());
    v
}

fn assert_no_canary(channel: &str, text: &str, canaries: &[String]) {
    for c in canaries {
        assert!(
            !text.contains(c.as_str()),
            "{channel}: secret {c:?} leaked:\n{text}"
        );
    }
}

/// `GET` a token with the password grant from the (plain-HTTP) issuer and return its
/// `refresh_token`: the identity token config.json's `identitytoken` will carry.
fn refresh_token(issuer: &TokenIssuer, user: &str, pw: &str) -> String {
    let body = format!(
        "grant_type=password&username={user}&password={pw}&service={}&scope=repository:team/app:pull&client_id=canary-test&access_type=offline",
        issuer.service()
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", issuer.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {resp}"));
    v["refresh_token"].as_str().unwrap().to_string()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn exec(root: &Path, rel: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(root, rel, &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Servers of the canary scenarios: a TLS registry with token auth (real distribution +
/// the harness issuer), a scripted plain-HTTP registry whose blobs redirect to presigned
/// URLs, and its "CDN".
struct World {
    pki: Pki,
    issuer: TokenIssuer,
    reg: Registry,
    presigned: ScriptedServer,
    cdn: ScriptedServer,
}

impl World {
    fn start() -> World {
        let pki = Pki::new();
        let issuer = TokenIssuer::builder(&pki)
            .user("alice", C_PW)
            .user("k3suser", C_K3S)
            .user("puser", C_PLUGIN_PW)
            .start();
        let reg = Registry::builder()
            .tls(&pki.server)
            .token_auth(&issuer)
            .start();
        let opts = PushOpts::tls(&pki).creds("alice", C_PW);
        OciImage::single("v1").push(&reg, "team/app", &opts);
        OciImage::single("v1").push(&reg, "other/app", &opts);
        let cdn = ScriptedServer::start(|_| Reply::status(200));
        let cdn_port = cdn.port();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = sha256_digest(config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": []
        })
        .to_string();
        let dead = free_port();
        let presigned = ScriptedServer::start(move |r| {
            if r.path.contains("/manifests/") {
                Reply::status(200)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .header("Docker-Distribution-API-Version", "registry/2.0")
                    .body(if r.method == "HEAD" {
                        Vec::new()
                    } else {
                        manifest.clone().into_bytes()
                    })
            } else if r.path.contains("/blobs/") {
                // A blob host that answers, and one that is down: both presigned.
                let port = if r.path.contains("/dead/") {
                    dead
                } else {
                    cdn_port
                };
                Reply::redirect(
                    307,
                    &format!(
                        "http://cdn.other.test:{port}/blobs/{config_digest}/data?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token={C_SIG}&X-Amz-Signature={C_SIG}"
                    ),
                )
            } else {
                Reply::v2_ok()
            }
        });
        World {
            pki,
            issuer,
            reg,
            presigned,
            cdn,
        }
    }

    fn images(&self) -> Vec<String> {
        let p = self.reg.port();
        let s = self.presigned.port();
        vec![
            format!("registry.test:{p}/team/app:v1"),
            format!("registry.test:{p}/other/app:v1"),
            format!("presigned.test:{s}/demo/app:v1"),
            format!("presigned.test:{s}/dead/app:v1"),
        ]
    }

    /// A containerd node with a canary in every file that can hold one.
    fn containerd_node(&self) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let p = self.reg.port();
        let s = self.presigned.port();
        let mirror_port = free_port();
        let proxy_port = free_port();
        write(
            r,
            "etc/hosts",
            "127.0.0.1 localhost registry.test mirror.test presigned.test cdn.other.test\n",
        );
        write(
            r,
            "etc/resolv.conf",
            "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
        );
        write(
            r,
            "etc/containerd/config.toml",
            &format!(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"registry.test:{p}\".auth]\n  auth = \"{}\"\n",
                b64(&format!("bob:{C_CT}"))
            ),
        );
        let certs = format!("etc/containerd/certs.d/registry.test:{p}");
        std::fs::create_dir_all(r.join(&certs)).unwrap();
        std::fs::copy(&self.pki.ca_cert, r.join(&certs).join("ca.crt")).unwrap();
        write(
            r,
            &format!("{certs}/hosts.toml"),
            &format!(
                "server = \"https://registry.test:{p}\"\nca = \"ca.crt\"\n[header]\n  X-Registry-Key = \"{C_HDR}\"\n\n[host.\"https://mirroruser:{C_UI}@mirror.test:{mirror_port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.crt\"\n  [host.\"https://mirroruser:{C_UI}@mirror.test:{mirror_port}\".header]\n    Authorization = \"Bearer {C_HDR}\"\n"
            ),
        );
        write(
            r,
            &format!("etc/containerd/certs.d/presigned.test:{s}/hosts.toml"),
            &format!(
                "server = \"http://presigned.test:{s}\"\n[header]\n  Authorization = \"Bearer {C_HDR}\"\n  X-Registry-Key = \"{C_HDR}\"\n"
            ),
        );
        // The mirror goes through a proxy (down) with a password; everything else is direct.
        write(
            r,
            "etc/systemd/system/containerd.service.d/http-proxy.conf",
            &format!(
                "[Service]\nEnvironment=\"HTTPS_PROXY=http://proxyuser:{C_PX}@127.0.0.1:{proxy_port}\" \"NO_PROXY=registry.test,presigned.test,cdn.other.test,127.0.0.1,localhost\"\n"
            ),
        );
        // The kubelet's config.json: credentials for team/* only (other/app falls back to
        // the config.toml credential), under a key with userinfo (the keyring ignores it).
        write(
            r,
            "var/lib/kubelet/config.json",
            &serde_json::json!({"auths": {format!("https://keyuser:{C_KEY}@registry.test:{p}/team"): {"auth": b64(&format!("alice:{C_PW}"))}}})
                .to_string(),
        );
        root
    }

    /// CredentialProviderConfig and two plugins: one leaks on stderr/stdout and fails, one
    /// answers with a password.
    /// (Node paths under the host root, as the kubelet's flags name them.)
    fn plugins(&self, root: &Path) -> (String, String) {
        let dir = &root.join("etc/kubernetes/credential-provider");
        let p = self.reg.port();
        exec(
            dir,
            "bin/leaky",
            &format!(
                "cat >/dev/null; echo 'token={C_PLUGIN_ERR}' >&2; echo '{C_PLUGIN_OUT}'; exit 3"
            ),
        );
        exec(
            dir,
            "bin/good",
            &format!(
                r#"cat >/dev/null; echo '{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","auth":{{"registry.test:{p}":{{"username":"puser","password":"{C_PLUGIN_PW}"}}}}}}'"#
            ),
        );
        write(
            dir,
            "cp.yaml",
            &format!(
                "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: leaky\n  matchImages: [\"registry.test:{p}\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  env:\n  - name: PLUGIN_TOKEN\n    value: {C_PLUGIN_ERR}\n- name: good\n  matchImages: [\"registry.test:{p}\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
            ),
        );
        (
            "/etc/kubernetes/credential-provider/cp.yaml".to_string(),
            "/etc/kubernetes/credential-provider/bin".to_string(),
        )
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn canaries_never_leave_through_check_plan_logs_or_the_agent() {
    let w = World::start();
    let root = w.containerd_node();
    let r = root.path().to_str().unwrap().to_string();
    let (cp, bin) = w.plugins(root.path());
    let images = w.images();
    let canaries = all_canaries(&[]);
    let node: Vec<&str> = vec![
        "--host-root",
        &r,
        "--runtime",
        "containerd",
        "--image-credential-provider-config",
        &cp,
        "--image-credential-provider-bin-dir",
        &bin,
    ];
    let trace = [("RUST_LOG", "trace")];
    let mut json_out = None;
    for mode in [
        &["check", "--json"][..],
        &["check", "-v"],
        &["plan"],
        &["plan", "--json"],
    ] {
        let mut args: Vec<&str> = mode.to_vec();
        args.extend(&node);
        args.extend(images.iter().map(String::as_str));
        let out = run_pullprobe_env(&args, None, &trace);
        let text = output_text(&out);
        assert_no_canary(&format!("{mode:?}"), &text, &canaries);
        if mode == ["check", "--json"] {
            json_out = Some(json_lines(&out.stdout));
        }
        if mode[0] == "plan" {
            // The plan really lists what holds the secrets (so the check is meaningful).
            assert!(
                text.contains("X-Registry-Key") && text.contains("mirror.test"),
                "{text}"
            );
        }
    }
    // Positive controls: the credentials, headers and redirects were really used.
    let lines = json_out.unwrap();
    assert_eq!(
        lines[0]["verdict"], "degraded",
        "team/app pulls after the mirror fails: {:#}",
        lines[0]
    );
    assert_eq!(lines[2]["verdict"], "ready", "{:#}", lines[2]);
    assert_eq!(lines[3]["reason"], "BlobHostUnreachable", "{:#}", lines[3]);
    assert!(w
        .issuer
        .requests()
        .iter()
        .any(|q| q.user.as_deref() == Some("alice") && q.status == 200));
    assert!(
        w.issuer
            .requests()
            .iter()
            .any(|q| q.user.as_deref() == Some("puser")),
        "{:#} {:?}",
        lines[1],
        w.issuer.requests()
    );
    assert!(w
        .presigned
        .requests()
        .iter()
        .any(|q| q.header("x-registry-key") == Some(C_HDR)));
    assert!(w.cdn.requests().iter().any(|q| q.path.contains(C_SIG)));
    let mirror_tried = lines[0]["attempts"].to_string();
    assert!(mirror_tried.contains("mirror.test"), "{mirror_tried}");
    // The config.json key with userinfo is the credential used, named without it.
    let source = lines[0]["credential_source"].as_str().unwrap_or_default();
    assert!(
        source.ends_with(&format!(
            "config.json#https://registry.test:{}/team",
            w.reg.port()
        )),
        "{source}"
    );

    // The standalone agent on the same node: /status, /metrics and its logs.
    let imgs: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    let cfg = agent_proc::write_file(
        root.path(),
        "agent.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 5s\nfleet:\n  node_count: 1\n  period: 10s\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n{}\n",
            imgs.join("\n")
        ),
    );
    let mut agent = agent_proc::AgentProc::spawn(&[
        "--standalone",
        "--node-name",
        "canary-node",
        "--config",
        cfg.to_str().unwrap(),
        "--host-root",
        &r,
        "--image-credential-provider-config",
        &cp,
        "--image-credential-provider-bin-dir",
        &bin,
    ]);
    agent.wait_ready(Duration::from_secs(30));
    let status = agent_proc::wait_for(Duration::from_secs(60), "results for every image", || {
        let st = agent_proc::get_json(agent.port, "/status");
        let done = agent_proc::status_targets(&st)
            .iter()
            .filter(|(k, v)| k.starts_with("image ") && v["verdict"].is_string())
            .count();
        (done >= images.len()).then_some(st)
    });
    let st = status.to_string();
    assert_no_canary("/status", &st, &canaries);
    assert!(
        st.contains("BlobHostUnreachable")
            && st.contains("mirror.test")
            && st.contains(&format!(
                "config.json#https://registry.test:{}/team",
                w.reg.port()
            )),
        "{st}"
    );
    let (_, metrics) = agent_proc::http_get(agent.port, "/metrics").unwrap();
    assert_no_canary("/metrics", &metrics, &canaries);
    assert_no_canary("agent log", &agent.log_text(), &canaries);
}

#[test]
fn identity_token_and_crio_flows_never_print_tokens() {
    let w = World::start();
    let rt = refresh_token(&w.issuer, "alice", C_PW);
    let dir = tempfile::tempdir().unwrap();
    let p = w.reg.port();
    let auth_file = dir.path().join("config.json");
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {
            format!("127.0.0.1:{p}"): {"identitytoken": rt},
        }})
        .to_string(),
    )
    .unwrap();
    let image = format!("127.0.0.1:{p}/team/app:v1");
    let ca = w.pki.ca_cert.to_str().unwrap();
    let canaries = all_canaries(std::slice::from_ref(&rt));
    for runtime in ["containerd", "crio"] {
        for extra in [&["--json"][..], &["-v"]] {
            let mut args = vec![
                "check",
                &image,
                "--runtime",
                runtime,
                "--ca-file",
                ca,
                "--auth-file",
                auth_file.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let out = run_pullprobe_env(&args, None, &[("RUST_LOG", "trace")]);
            let text = output_text(&out);
            assert_no_canary(&format!("{runtime} {extra:?}"), &text, &canaries);
            assert_eq!(out.status.code(), Some(0), "{runtime}: {text}");
        }
    }
    // Both runtimes used the identity token as an OAuth2 refresh token.
    let refreshes = w
        .issuer
        .requests()
        .iter()
        .filter(|q| q.grant_type.as_deref() == Some("refresh_token") && q.status == 200)
        .count();
    assert!(refreshes >= 2, "{:?}", w.issuer.requests());
}

#[test]
fn k3s_registries_yaml_password_never_printed() {
    let w = World::start();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let p = w.reg.port();
    let dead = free_port();
    write(
        r,
        "etc/hosts",
        "127.0.0.1 localhost registry.test mirror.test\n",
    );
    write(
        r,
        "etc/resolv.conf",
        "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
    );
    let ca = r.join("etc/rancher/ca.crt");
    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
    std::fs::copy(&w.pki.ca_cert, &ca).unwrap();
    write(
        r,
        "etc/rancher/k3s/registries.yaml",
        &format!(
            "mirrors:\n  \"registry.test:{p}\":\n    endpoint:\n      - \"https://mirroruser:{C_UI}@mirror.test:{dead}\"\n      - \"https://registry.test:{p}\"\nconfigs:\n  \"registry.test:{p}\":\n    auth:\n      username: k3suser\n      password: \"{C_K3S}\"\n    tls:\n      ca_file: /etc/rancher/ca.crt\n"
        ),
    );
    let image = format!("registry.test:{p}/team/app:v1");
    let rs = r.to_str().unwrap();
    let canaries = all_canaries(&[]);
    for mode in [
        &["check", "--json"][..],
        &["check", "-v"],
        &["plan"],
        &["plan", "--json"],
    ] {
        let mut args: Vec<&str> = mode.to_vec();
        args.extend(["--host-root", rs, &image]);
        let out = run_pullprobe_env(&args, None, &[("RUST_LOG", "trace")]);
        assert_no_canary(&format!("k3s {mode:?}"), &output_text(&out), &canaries);
    }
    assert!(
        w.issuer
            .requests()
            .iter()
            .any(|q| q.user.as_deref() == Some("k3suser") && q.status == 200),
        "the registries.yaml credential was used: {:?}",
        w.issuer.requests()
    );
}
