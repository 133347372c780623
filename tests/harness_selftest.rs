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
    use rustls_pki_types::pem::PemObject;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca_cert).expect("ca"))
        .expect("add ca");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
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
    let err = |r: Result<_, rustls::Error>| format!("{:?}", r.err().expect("must fail"));
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
        assert_eq!(manifest_json(&raw)["config"]["digest"], m.config_digest.as_str());
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
    assert_eq!(sha256_digest(&skopeo_inspect_raw(&p.reference, &PushOpts::mtls(&pki))), img.digest);
    skopeo_inspect_raw_result(&p.reference, &PushOpts::tls(&pki)).expect_err("no client cert");
    // A second, plain instance on the same storage sees the push.
    let plain = Registry::builder().storage(reg.storage()).start();
    let r = format!("{}/m/app:v1", plain.host_port());
    assert_eq!(sha256_digest(&skopeo_inspect_raw(&r, &PushOpts::insecure())), img.digest);
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
    assert_eq!(sha256_digest(&skopeo_inspect_raw(&at("team/app"), &alice)), img.digest);
    skopeo_inspect_raw_result(&at("team/other"), &alice).expect_err("alice not allowed");
    // Anonymous: public/* only.
    let anon = PushOpts::insecure();
    assert_eq!(sha256_digest(&skopeo_inspect_raw(&at("public/app"), &anon)), img.digest);
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
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let form = "grant_type=password&username=alice&password=a-pw&service=registry.test&client_id=t&access_type=offline&scope=repository%3Ateam%2Fapp%3Apull%2Cpush";
    let v: serde_json::Value =
        serde_json::from_slice(&curl(&["-X", "POST", "-d", form, &issuer.realm_url()])).expect("json");
    assert!(v["expires_in"].as_u64().is_some() && v["issued_at"].is_string());
    let rt = v["refresh_token"].as_str().expect("refresh_token").to_string();
    let form = format!("grant_type=refresh_token&refresh_token={rt}&service=registry.test&scope=repository%3Ateam%2Fapp%3Apull%2Cpush");
    let v: serde_json::Value =
        serde_json::from_slice(&curl(&["-X", "POST", "-d", &form, &issuer.realm_url()])).expect("json");
    let token = v["access_token"].as_str().expect("access_token").to_string();
    assert_eq!(issuer.post_count(), 2);
    assert_eq!(issuer.get_count(), 0);
    // The registry accepts the token: push (via skopeo with its own flow) then GET the manifest.
    img.push(&reg, "team/app", &PushOpts::insecure().creds("alice", "a-pw"));
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
