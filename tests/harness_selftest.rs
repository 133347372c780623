//! Self-tests of the integration-test harness against the real servers.
mod harness;

use harness::images::{skopeo_inspect_raw_result, OCI_INDEX, OCI_MANIFEST};
use harness::token_issuer::TokenIssuer;
use harness::*;

fn manifest_json(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).expect("manifest json")
}

#[test]
fn pki_files_exist_and_parse() {
    let pki = Pki::new();
    for p in [
        &pki.ca_cert,
        &pki.server.cert,
        &pki.server.key,
        &pki.expired.cert,
        &pki.not_yet_valid.cert,
        &pki.wrong_name.cert,
        &pki.unknown_ca_cert,
        &pki.unknown_ca_leaf.cert,
        &pki.client_ca_cert,
        &pki.client.cert,
        &pki.client.key,
        &pki.token_ca_cert,
        &pki.token_signing.cert,
    ] {
        let s = std::fs::read_to_string(p).expect("pem");
        assert!(s.starts_with("-----BEGIN"), "{}", p.display());
    }
    // The server leaf verifies against the CA with rustls for every SAN; the variants fail as intended.
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca_cert).expect("ca"))
        .expect("add ca");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .expect("verifier");
    let check = |ck: &CertKey, name: &str| {
        let leaf = CertificateDer::from_pem_file(&ck.cert).expect("leaf");
        verifier.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
    };
    for san in ["localhost", "registry.test", "127.0.0.1", "::1"] {
        check(&pki.server, san).unwrap_or_else(|e| panic!("{san}: {e}"));
    }
    let err = |r: Result<rustls::client::danger::ServerCertVerified, rustls::Error>| {
        format!("{:?}", r.expect_err("must fail"))
    };
    assert!(err(check(&pki.expired, "localhost")).contains("Expired"));
    assert!(err(check(&pki.not_yet_valid, "localhost")).contains("NotValidYet"));
    assert!(err(check(&pki.wrong_name, "localhost")).contains("NotValidForName"));
    assert!(err(check(&pki.unknown_ca_leaf, "localhost")).contains("UnknownIssuer"));
}

#[test]
fn registry_plain_single_and_multi() {
    let reg = Registry::plain();
    let single = OciImage::single("v1");
    let p = single.push(&reg, "lib/single", &PushOpts::insecure());
    let raw = skopeo_inspect_raw(&p.reference, &PushOpts::insecure());
    assert_eq!(sha256_digest(&raw), single.digest);
    assert_eq!(manifest_json(&raw)["mediaType"], OCI_MANIFEST);

    let multi = OciImage::multi_platform("v2", &[("linux", "amd64"), ("linux", "arm64")]);
    let p = multi.push(&reg, "lib/multi", &PushOpts::insecure());
    let raw = skopeo_inspect_raw(&p.reference, &PushOpts::insecure());
    assert_eq!(sha256_digest(&raw), multi.digest);
    let idx = manifest_json(&raw);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    assert_eq!(idx["manifests"].as_array().map(|a| a.len()), Some(2));
    for m in &multi.manifests {
        let r = format!("{}/lib/multi@{}", reg.host_port(), m.digest);
        let raw = skopeo_inspect_raw(&r, &PushOpts::insecure());
        assert_eq!(sha256_digest(&raw), m.digest);
        assert_eq!(
            manifest_json(&raw)["config"]["digest"],
            m.config_digest.as_str()
        );
    }
}

#[test]
fn registry_tls_htpasswd() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "s3cret")])
        .start();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let img = OciImage::multi_platform("v1", &[("linux", "amd64"), ("linux", "arm64")]);
    let opts = PushOpts::tls(&pki).creds("alice", "s3cret");
    let p = img.push(&reg, "team/app", &opts);
    let raw = skopeo_inspect_raw(&p.reference, &opts);
    assert_eq!(sha256_digest(&raw), img.digest);
    // Wrong password and no credentials are refused.
    let e = skopeo_inspect_raw_result(&p.reference, &PushOpts::tls(&pki).creds("alice", "nope"))
        .expect_err("wrong password");
    assert!(e.contains("unauthorized") || e.contains("401"), "{e}");
    skopeo_inspect_raw_result(&p.reference, &PushOpts::tls(&pki)).expect_err("anonymous");
    // Without the CA, verification fails.
    let e = skopeo_inspect_raw_result(
        &p.reference,
        &PushOpts {
            tls_verify: true,
            ..PushOpts::insecure().creds("alice", "s3cret")
        },
    )
    .expect_err("unknown CA");
    assert!(e.contains("certificate"), "{e}");
}

#[test]
fn registry_mtls_and_shared_storage() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .client_ca(&pki.client_ca_cert)
        .start();
    let img = OciImage::single("v1");
    let p = img.push(&reg, "m/app", &PushOpts::mtls(&pki));
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&p.reference, &PushOpts::mtls(&pki))),
        img.digest
    );
    skopeo_inspect_raw_result(&p.reference, &PushOpts::tls(&pki)).expect_err("no client cert");
    // A second, plain instance on the same storage sees the push.
    let plain = Registry::builder().storage(reg.storage()).start();
    let r = format!("{}/m/app:v1", plain.host_port());
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&r, &PushOpts::insecure())),
        img.digest
    );
}

#[test]
fn token_issuer_with_real_registry() {
    let pki = Pki::new();
    let issuer = TokenIssuer::builder(&pki)
        .user("pusher", "pw")
        .user("alice", "a-pw")
        .allow("alice", "team/app")
        .anonymous_allow("public/*")
        .start();
    let reg = Registry::builder().token_auth(&issuer).start();
    let img = OciImage::single("v1");
    let push = PushOpts::insecure().creds("pusher", "pw");
    img.push(&reg, "team/app", &push);
    img.push(&reg, "team/other", &push);
    img.push(&reg, "public/app", &push);
    let at = |repo: &str| format!("{}/{repo}:v1", reg.host_port());

    // alice: allowed repo works, other repo refused.
    let alice = PushOpts::insecure().creds("alice", "a-pw");
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&at("team/app"), &alice)),
        img.digest
    );
    skopeo_inspect_raw_result(&at("team/other"), &alice).expect_err("alice not allowed");
    // Anonymous: public/* only.
    let anon = PushOpts::insecure();
    assert_eq!(
        sha256_digest(&skopeo_inspect_raw(&at("public/app"), &anon)),
        img.digest
    );
    skopeo_inspect_raw_result(&at("team/app"), &anon).expect_err("anonymous not allowed");
    // Wrong password: the issuer answers 401.
    let before = issuer.requests().len();
    skopeo_inspect_raw_result(&at("team/app"), &PushOpts::insecure().creds("alice", "bad"))
        .expect_err("bad password");
    assert!(issuer.requests()[before..].iter().any(|r| r.status == 401));
    assert!(issuer.get_count() > 0);
}

#[test]
fn token_issuer_post_and_refresh_flow() {
    // Raw HTTP against the issuer: POST password grant → refresh token → POST refresh grant, then
    // the token is accepted by the real registry.
    let pki = Pki::new();
    let issuer = TokenIssuer::builder(&pki)
        .user("alice", "a-pw")
        .allow("alice", "team/app")
        .tls(&pki.server)
        .realm_host("localhost")
        .start();
    let reg = Registry::builder().token_auth(&issuer).start();
    let img = OciImage::single("v1");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&pki.ca_cert)
            .args(args)
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let form = "grant_type=password&username=alice&password=a-pw&service=registry.test&client_id=t&access_type=offline&scope=repository%3Ateam%2Fapp%3Apull%2Cpush";
    let v: serde_json::Value =
        serde_json::from_slice(&curl(&["-X", "POST", "-d", form, &issuer.realm_url()]))
            .expect("json");
    assert!(v["expires_in"].as_u64().is_some() && v["issued_at"].is_string());
    let rt = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let form = format!("grant_type=refresh_token&refresh_token={rt}&service=registry.test&scope=repository%3Ateam%2Fapp%3Apull%2Cpush");
    let v: serde_json::Value =
        serde_json::from_slice(&curl(&["-X", "POST", "-d", &form, &issuer.realm_url()]))
            .expect("json");
    let token = v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    assert_eq!(issuer.post_count(), 2);
    assert_eq!(issuer.get_count(), 0);
    // The registry accepts the token: push (via skopeo with its own flow) then GET the manifest.
    img.push(
        &reg,
        "team/app",
        &PushOpts::insecure().creds("alice", "a-pw"),
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", &format!("Accept: {OCI_MANIFEST}")])
        .arg(format!("{}/v2/team/app/manifests/v1", reg.url()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // Same token on another repository: insufficient scope.
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/v2/team/other/manifests/v1", reg.url()))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("insufficient_scope"), "{head}");
}

#[test]
fn redirect_middleware_and_blob_host() {
    let storage = Storage::new();
    let blobs = BlobHost::start(storage.path());
    let reg = Registry::builder()
        .storage(storage.clone())
        .redirect(&blobs.url())
        .htpasswd(&[("u", "p")])
        .start();
    let img = OciImage::single("v1");
    img.push(&reg, "r/app", &PushOpts::insecure().creds("u", "p"));
    let m = &img.manifests[0];
    // The registry redirects the blob GET to the blob host, which serves the right bytes; curl
    // (like a correct client) does not forward credentials to another host.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-L",
            "-u",
            "u:p",
            "-w",
            "\n%{http_code} %{num_redirects}",
        ])
        .arg(format!("{}/v2/r/app/blobs/{}", reg.url(), m.config_digest))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    assert_eq!(status, "200 1", "{text}");
    assert_eq!(sha256_digest(body.as_bytes()), m.config_digest);
    assert_eq!(blobs.request_count(), 1);
    assert!(!blobs.saw_authorization());
    let hex = m.config_digest.trim_start_matches("sha256:");
    assert_eq!(
        blobs.paths(),
        vec![format!(
            "/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        )]
    );
    // Sending Authorization to it is recorded.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Basic eDp5",
        ])
        .arg(format!(
            "{}docker/registry/v2/blobs/sha256/{}/{hex}/data",
            blobs.url(),
            &hex[..2]
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert!(blobs.saw_authorization());

    // Blob host down: the 307 points at a dead port.
    let down = blob_host_down_url();
    let reg2 = Registry::builder().storage(storage).redirect(&down).start();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-"])
        .arg(format!("{}/v2/r/app/blobs/{}", reg2.url(), m.layer_digest))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 307"), "{head}");
    assert!(
        head.contains(&format!("location: {down}docker/registry/v2/blobs/")),
        "{head}"
    );
}

#[test]
fn unbound_answers_and_failures() {
    use harness::dns::*;
    use std::time::{Duration, Instant};
    let dns = Dns::builder().record("v6.test", "::1").start();
    let r = dns.query("registry.test", QTYPE_A).expect("registry.test");
    assert_eq!(
        (r.rcode, r.addrs.clone()),
        (RCODE_NOERROR, vec!["127.0.0.1".parse().expect("ip")])
    );
    let r = dns.query("v6.test", QTYPE_AAAA).expect("v6.test");
    assert_eq!(
        r.addrs,
        vec!["::1".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(
        dns.query("nxdomain.test", QTYPE_A).expect("nx").rcode,
        RCODE_NXDOMAIN
    );
    let r = dns.query("norecords.test", QTYPE_A).expect("norecords");
    assert_eq!((r.rcode, r.answer_count), (RCODE_NOERROR, 0));
    assert_eq!(
        dns.query("refused.test", QTYPE_A).expect("refused").rcode,
        RCODE_REFUSED
    );
    assert_eq!(
        dns.query("example.com", QTYPE_A).expect("outside").rcode,
        RCODE_REFUSED
    );
    let t = Instant::now();
    let r = dns.query("servfail.test", QTYPE_A).expect("servfail");
    assert_eq!(r.rcode, RCODE_SERVFAIL);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let e = dns_query(
        dns.socket_addr(),
        "drop.test",
        QTYPE_A,
        Duration::from_millis(500),
    )
    .expect_err("drop.test must time out");
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    let rc = std::fs::read_to_string(dns.resolv_conf()).expect("resolv.conf");
    assert!(
        rc.contains(&format!("nameserver {}", dns.ip())) && rc.contains("timeout:1 attempts:1")
    );
    // Two servers side by side get distinct addresses.
    let other = Dns::start_default();
    assert_ne!(other.ip(), dns.ip());
    let hosts = write_hosts_file(
        &dns.dir().join("hosts"),
        &[("127.0.0.1", &["registry.test", "auth.test"])],
    );
    assert!(std::fs::read_to_string(hosts)
        .expect("hosts")
        .contains("127.0.0.1\tregistry.test auth.test"));
}

#[test]
fn scripted_server_replies() {
    use std::io::{Read, Write};
    let srv = ScriptedServer::canned(vec![
        Reply::too_many_requests("2"),
        Reply::malformed_www_authenticate(),
        Reply::stall_mid_body(200, "application/json", 1000, 10),
    ]);
    let raw = |path: &str| {
        let mut s = std::net::TcpStream::connect(srv.host_port()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), r.is_err())
    };
    let (a, _) = raw("/v2/");
    assert!(
        a.starts_with("HTTP/1.1 429") && a.contains("Retry-After: 2"),
        "{a}"
    );
    let (b, _) = raw("/v2/");
    assert!(
        b.starts_with("HTTP/1.1 401") && b.contains("WWW-Authenticate: Bearer realm=\""),
        "{b}"
    );
    let (c, timed_out) = raw("/v2/x/manifests/y");
    assert!(
        timed_out && c.contains("Content-Length: 1000") && c.ends_with("xxxxxxxxxx"),
        "{c}"
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].path, "/v2/x/manifests/y");
    assert_eq!(reqs[0].header("host"), Some("x"));

    // 10 MB manifest, redirect loop, HTML at /v2/, over curl.
    let big = ScriptedServer::start(|_| Reply::big_manifest(10 * 1024 * 1024));
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("{}/v2/a/manifests/b", big.url()))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        (10 * 1024 * 1024).to_string()
    );
    let lp = ScriptedServer::redirect_loop();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-L",
            "--max-redirs",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{num_redirects}",
        ])
        .arg(format!("{}/v2/", lp.url()))
        .output()
        .expect("curl");
    assert_eq!(out.status.code(), Some(47), "curl: too many redirects");
    assert_eq!(lp.request_count(), 6);
    let html = ScriptedServer::html_v2();
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-"])
        .arg(format!("{}/v2/", html.url()))
        .output()
        .expect("curl");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("text/html") && t.contains("<html>"), "{t}");

    // TLS variant.
    let pki = Pki::new();
    let tls = ScriptedServer::start_tls(&pki.server, |_| Reply::v2_ok());
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&pki.ca_cert)
        .arg(format!("https://localhost:{}/v2/", tls.port()))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn delay_proxy_modes() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let reg = Registry::plain();
    let target: std::net::SocketAddr = reg.host_port().parse().expect("addr");
    let get = |hp: &str| {
        let mut s = std::net::TcpStream::connect(hp).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(800)))
            .expect("timeout");
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), r)
    };
    let slow = DelayProxy::start(target, ProxyMode::Delay(Duration::from_millis(100)));
    let t = Instant::now();
    let (body, _) = get(&slow.host_port());
    let el = t.elapsed();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        el >= Duration::from_millis(200) && el < Duration::from_millis(700),
        "{el:?}"
    );
    let hang = DelayProxy::start(target, ProxyMode::Hang);
    let (body, r) = get(&hang.host_port());
    assert!(body.is_empty() && r.is_err());
    let reset = DelayProxy::start(target, ProxyMode::Reset);
    let (_, r) = get(&reset.host_port());
    assert_eq!(
        r.expect_err("reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let trunc = DelayProxy::start(target, ProxyMode::TruncateAfter(12));
    let (body, _) = get(&trunc.host_port());
    assert_eq!(body, "HTTP/1.1 200");
}

#[test]
fn docker_schema2_push_and_oci_accept_trap() {
    let reg = Registry::plain();
    let img = OciImage::single("d1");
    let p = img.push(&reg, "lib/docker", &PushOpts::insecure().docker_format());
    assert_eq!(p.media_type, harness::images::DOCKER_MANIFEST);
    assert_ne!(p.digest, img.digest);
    // distribution 2.8 trap: an OCI manifest is 404 unless Accept lists the OCI type.
    img.push(&reg, "lib/oci", &PushOpts::insecure());
    let code = |accept: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Accept: {accept}"))
            .arg(format!("{}/v2/lib/oci/manifests/d1", reg.url()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(harness::images::DOCKER_MANIFEST), "404");
    assert_eq!(code(OCI_MANIFEST), "200");
}

#[test]
fn runner_spawns_binary_and_parses_json_lines() {
    let out = run_pullprobe(&[], Some("ignored stdin"));
    assert!(out.status.code().is_some());
    let v = json_lines(b"{\"phase\":\"dns\"}\n\n{\"phase\":\"tcp\",\"ok\":true}\n");
    assert_eq!(v.len(), 2);
    assert_eq!(v[1]["ok"], true);
}

#[test]
fn token_issuer_reject_post_mode() {
    let pki = Pki::new();
    let issuer = TokenIssuer::builder(&pki)
        .user("alice", "a-pw")
        .reject_post(404)
        .start();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d"])
        .arg("grant_type=password&username=alice&password=a-pw&service=registry.test")
        .arg(issuer.realm_url())
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let out = std::process::Command::new("curl")
        .args(["-s", "-u", "alice:a-pw"])
        .arg(format!(
            "{}?service=registry.test&scope=repository:a/b:pull",
            issuer.realm_url()
        ))
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["token"].is_string());
    assert_eq!((issuer.post_count(), issuer.get_count()), (1, 1));
    let reqs = issuer.requests();
    assert_eq!(reqs[1].user.as_deref(), Some("alice"));
    assert_eq!(reqs[1].scopes, vec!["repository:a/b:pull".to_string()]);
}
