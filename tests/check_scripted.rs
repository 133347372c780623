//! Responses a real registry cannot be made to give on demand, from a small scripted
//! HTTP server (tests/harness/scripted.rs): 429 with Retry-After, malformed challenges
//! and token JSON, stalls, oversized manifests, redirect loops, HTML pages.

mod harness;

use harness::*;
use serde_json::Value;

fn check(args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = run_pullprobe(&all, None);
    (out.status.code().unwrap_or(-1), json_lines(&out.stdout))
}

fn assert_failure(v: &Value, phase: &str, reason: &str) {
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["phase"], phase, "{v:#}");
    assert_eq!(v["reason"], reason, "{v:#}");
}

fn image(s: &ScriptedServer) -> String {
    format!("{}/demo/app:v1", s.host_port())
}

#[test]
fn rate_limited_with_retry_after() {
    let s = ScriptedServer::canned(vec![Reply::too_many_requests("7")]);
    let (code, lines) = check(&[&image(&s), "--plain-http"]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "manifest", "RateLimited");
    assert_eq!(lines[0]["retry_after_s"], 7);
}

#[test]
fn docker_hub_rate_limit_headers_are_recorded_from_head() {
    let (body, digest, _) = small_manifest();
    let s = ScriptedServer::start(move |_| {
        manifest_reply(&body, &digest)
            .header("ratelimit-limit", "100;w=21600")
            .header("ratelimit-remaining", "76;w=21600")
            .header("docker-ratelimit-source", "203.0.113.7")
    });
    let (code, lines) = check(&[&image(&s), "--plain-http", "--no-blob"]);
    assert_eq!(code, 0, "{lines:?}");
    let rl = &lines[0]["ratelimit"];
    assert_eq!(rl["limit"], 100);
    assert_eq!(rl["remaining"], 76);
    assert_eq!(rl["window_s"], 21600);
    // HEAD only: Docker Hub does not count HEAD against the pull quota.
    assert!(s.requests().iter().all(|r| r.method == "HEAD"));
}

#[test]
fn malformed_challenge() {
    let s = ScriptedServer::canned(vec![Reply::malformed_www_authenticate()]);
    let (code, lines) = check(&[&image(&s), "--plain-http"]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthChallengeMalformed");
}

fn token_server(token_reply: Reply) -> ScriptedServer {
    let port_cell = std::sync::Arc::new(std::sync::Mutex::new(0u16));
    let pc = port_cell.clone();
    let s = ScriptedServer::start(move |r| {
        if r.path.starts_with("/token") {
            return token_reply.clone();
        }
        let port = *pc.lock().unwrap();
        Reply::bearer_challenge(
            &format!("http://127.0.0.1:{port}/token"),
            "scripted",
            Some("repository:demo/app:pull"),
        )
    });
    *port_cell.lock().unwrap() = s.port();
    s
}

#[test]
fn malformed_token_responses() {
    let s = token_server(Reply::malformed_token_json());
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "auth", "AuthTokenMalformed");
    let s = token_server(Reply::token_json_without_token());
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "auth", "AuthTokenMalformed");
    let s = token_server(Reply::status(500));
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "auth", "AuthTokenEndpointError");
}

#[test]
fn server_stalling_mid_body_times_out() {
    let s = ScriptedServer::start(|r| {
        if r.path == "/v2/" {
            Reply::v2_ok()
        } else {
            Reply::stall_mid_body(200, "application/vnd.oci.image.manifest.v1+json", 4096, 100)
        }
    });
    let (code, lines) = check(&[
        &image(&s),
        "--plain-http",
        "--runtime",
        "crio",
        "--timeout-http",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "manifest", "ResponseTimeout");
}

#[test]
fn oversized_manifest_is_rejected() {
    let s = ScriptedServer::start(|r| {
        if r.path == "/v2/" {
            Reply::v2_ok()
        } else {
            Reply::big_manifest(10 * 1024 * 1024)
        }
    });
    // containerd: the HEAD announces 10 MB.
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "manifest", "ManifestTooLarge");
    // CRI-O: the GET is refused from its Content-Length, without reading 10 MB.
    let (_, lines) = check(&[&image(&s), "--plain-http", "--runtime", "crio"]);
    assert_failure(&lines[0], "manifest", "ManifestTooLarge");
}

#[test]
fn blob_redirect_loop_and_too_many_redirects() {
    let (body, digest, config) = small_manifest();
    let blob_path = format!("/v2/demo/app/blobs/{config}");
    let (b, d, bp) = (body.clone(), digest.clone(), blob_path.clone());
    let s = ScriptedServer::start(move |r| {
        if r.path == bp {
            Reply::redirect(307, "/elsewhere")
        } else if r.path == "/elsewhere" {
            Reply::redirect(307, &bp)
        } else {
            manifest_reply(&b, &d)
        }
    });
    let (code, lines) = check(&[&image(&s), "--plain-http"]);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "blob", "BlobRedirectLoop");

    let s = ScriptedServer::start(move |r| {
        if let Some(n) = r.path.strip_prefix("/hop/") {
            let n: u32 = n.parse().unwrap_or(0);
            Reply::redirect(302, &format!("/hop/{}", n + 1))
        } else if r.path == blob_path {
            Reply::redirect(302, "/hop/1")
        } else {
            manifest_reply(&body, &digest)
        }
    });
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "blob", "BlobTooManyRedirects");
}

#[test]
fn html_pages_are_not_a_registry() {
    // A web server that is not a registry: 404 HTML everywhere.
    let s = ScriptedServer::start(|_| {
        Reply::status(404)
            .header("Content-Type", "text/html")
            .body("<html><body>Not Found</body></html>")
    });
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "auth", "AuthNotRegistry");
    let (_, lines) = check(&[&image(&s), "--plain-http", "--runtime", "crio"]);
    assert_failure(&lines[0], "auth", "AuthNotRegistry");
    // A captive portal answering 200 with a login page.
    let portal = ScriptedServer::start(|_| Reply::html_page());
    let (_, lines) = check(&[&image(&portal), "--plain-http"]);
    assert_failure(&lines[0], "auth", "AuthNotRegistry");
}

#[test]
fn server_errors() {
    let s = ScriptedServer::canned(vec![Reply::status(503)]);
    let (_, lines) = check(&[&image(&s), "--plain-http"]);
    assert_failure(&lines[0], "manifest", "RegistryServerError");
}

#[test]
fn head_405_falls_back_to_get_like_containerd() {
    let (body, digest, _) = small_manifest();
    let s = ScriptedServer::start(move |r| {
        if r.method == "HEAD" {
            Reply::status(405)
        } else {
            manifest_reply(&body, &digest)
        }
    });
    let (code, lines) = check(&[&image(&s), "--plain-http", "--no-blob"]);
    assert_eq!(code, 0, "{lines:?}");
    let methods: Vec<String> = s.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[test]
fn accept_header_matches_the_runtime() {
    let (body, digest, _) = small_manifest();
    let s = ScriptedServer::start(move |_| manifest_reply(&body, &digest));
    check(&[&image(&s), "--plain-http", "--no-blob"]);
    let first = &s.requests()[0];
    assert_eq!(
        first.header("accept"),
        Some("application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*")
    );
    assert_eq!(first.method, "HEAD");
    assert_eq!(first.path, "/v2/demo/app/manifests/v1");
}

#[test]
fn malformed_manifests() {
    // The announced digest does not match the body.
    let (body, _, _) = small_manifest();
    let wrong = format!("sha256:{}", "b".repeat(64));
    let b = body.clone();
    let s = ScriptedServer::start(move |r| {
        if r.path == "/v2/" {
            Reply::v2_ok()
        } else {
            manifest_reply(&b, &wrong)
        }
    });
    let (_, lines) = check(&[&image(&s), "--plain-http", "--runtime", "crio"]);
    assert_failure(&lines[0], "manifest", "ManifestMalformed");
    // A body that is not JSON, served as a manifest.
    let s = ScriptedServer::start(|r| {
        if r.path == "/v2/" {
            return Reply::v2_ok();
        }
        let junk = b"\x00\x01 not json".to_vec();
        let digest = sha256_digest(&junk);
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &digest)
            .body(junk)
    });
    let (_, lines) = check(&[&image(&s), "--plain-http", "--runtime", "crio"]);
    assert_eq!(lines[0]["reason"], "ManifestMalformed", "{:#}", lines[0]);
}
