//! Self-tests of the integration-test harness against the real servers.
mod harness;

use harness::images::{skopeo_inspect_raw_result, OCI_INDEX, OCI_MANIFEST};
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
