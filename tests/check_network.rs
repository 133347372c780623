//! Resolver, TCP and TLS failures, each produced by a real component: unbound for DNS
//! answers, closed ports and iptables for TCP, real registries with generated
//! certificates for TLS.

mod harness;

use harness::*;
use serde_json::Value;

fn check(args: &[&str], stdin: Option<&str>) -> (i32, Vec<Value>) {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = run_pullprobe(&all, stdin);
    (out.status.code().unwrap_or(-1), json_lines(&out.stdout))
}

fn assert_failure(v: &Value, phase: &str, reason: &str) {
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["phase"], phase, "{v:#}");
    assert_eq!(v["reason"], reason, "{v:#}");
}

/// Resolver files where only the hosts file answers: `hosts_text` as the hosts file and a
/// resolv.conf naming a nameserver where nothing listens.
fn hosts_only(dir: &std::path::Path, hosts_text: &str) -> (String, String) {
    let hosts = dir.join("hosts-only");
    std::fs::write(&hosts, hosts_text).unwrap();
    let resolv = dir.join("resolv-dead");
    std::fs::write(
        &resolv,
        "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    (
        hosts.to_str().unwrap().to_string(),
        resolv.to_str().unwrap().to_string(),
    )
}

fn empty_hosts(dir: &std::path::Path) -> String {
    let p = dir.join("hosts");
    std::fs::write(&p, "127.0.0.1 localhost\n").unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn dns_answers_and_failures_from_a_real_resolver() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::tls(&pki));
    let dns = Dns::start_default();
    let resolv = dns.resolv_conf();
    let hosts = empty_hosts(dns.dir());
    let port = reg.port();
    let ca = pki.ca_cert.to_str().unwrap();
    let images: Vec<String> = [
        "registry.test",
        "nxdomain.test",
        "norecords.test",
        "servfail.test",
        "refused.test",
    ]
    .iter()
    .map(|h| format!("{h}:{port}/demo/app:v1"))
    .collect();
    let mut args: Vec<&str> = images.iter().map(String::as_str).collect();
    args.extend([
        "--resolv-conf",
        resolv.to_str().unwrap(),
        "--hosts-file",
        &hosts,
        "--ca-file",
        ca,
    ]);
    let (code, lines) = check(&args, None);
    assert_eq!(code, 1);
    assert_eq!(lines[0]["verdict"], "ready", "{:#}", lines[0]);
    let dns_phase = &lines[0]["phases"][0];
    assert_eq!(dns_phase["name"], "dns");
    assert_eq!(dns_phase["detail"], "127.0.0.1");
    assert_failure(&lines[1], "dns", "DNSNameNotFound");
    assert_failure(&lines[2], "dns", "DNSNoRecords");
    assert_failure(&lines[3], "dns", "DNSServerFailure");
    assert_failure(&lines[4], "dns", "DNSRefused");
}

#[test]
fn dns_timeout_when_the_nameserver_drops_queries() {
    let dns = Dns::start_default();
    let resolv = dns.resolv_conf();
    let hosts = empty_hosts(dns.dir());
    let (code, lines) = check(
        &[
            "drop.test:5000/demo/app:v1",
            "--resolv-conf",
            resolv.to_str().unwrap(),
            "--hosts-file",
            &hosts,
            "--timeout-dns",
            "2s",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_failure(&lines[0], "dns", "DNSTimeout");
}

#[test]
fn hosts_file_entries_win_over_dns() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::tls(&pki));
    let dir = tempfile::tempdir().unwrap();
    // Only the hosts file can answer (the nameserver is dead).
    let (hosts, resolv) = hosts_only(dir.path(), "127.0.0.1 registry.test\n");
    let image = format!("registry.test:{}/demo/app:v1", reg.port());
    let (code, lines) = check(
        &[
            &image,
            "--resolv-conf",
            &resolv,
            "--hosts-file",
            &hosts,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{lines:?}");
}

#[test]
fn connect_refused_on_a_closed_port() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let image = format!("127.0.0.1:{port}/demo/app:v1");
    let (code, lines) = check(&[&image, "--plain-http"], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "connect", "ConnectRefused");
}

/// A port blackholed with iptables (DROP on loopback): SYNs vanish, connect times out.
#[test]
fn connect_timeout_when_blackholed() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let rule = [
        "INPUT", "-i", "lo", "-p", "tcp", "--dport", &port, "-j", "DROP",
    ];
    let added = std::process::Command::new("iptables")
        .arg("-I")
        .args(rule)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        added,
        "iptables is required for the blackhole case (run as root)"
    );
    let image = format!("127.0.0.1:{port}/demo/app:v1");
    let (code, lines) = check(&[&image, "--plain-http", "--timeout-connect", "1s"], None);
    let _ = std::process::Command::new("iptables")
        .arg("-D")
        .args(rule)
        .status();
    drop(l);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "connect", "ConnectTimeout");
}

#[test]
fn tls_failures_are_classified() {
    let pki = Pki::new();
    let dns = Dns::start_default();
    let resolv = dns.resolv_conf();
    let hosts = empty_hosts(dns.dir());
    let ca = pki.ca_cert.to_str().unwrap();
    let run = |reg: &Registry, extra: &[&str]| -> Value {
        let image = format!("registry.test:{}/demo/app:v1", reg.port());
        let mut args = vec![
            image.as_str(),
            "--resolv-conf",
            resolv.to_str().unwrap(),
            "--hosts-file",
            &hosts,
        ];
        args.extend_from_slice(extra);
        let (_, lines) = check(&args, None);
        lines.into_iter().next().unwrap()
    };
    let good = Registry::builder().tls(&pki.server).start();
    let unknown = run(&good, &[]);
    assert_failure(&unknown, "tls", "TLSUnknownAuthority");
    // Words, and what the server presented, not rustls internals.
    let m = unknown["message"].as_str().unwrap();
    assert!(
        m.contains("is signed by") && m.contains("an authority the node does not trust"),
        "{m}"
    );
    assert!(!m.contains("UnknownIssuer"), "{m}");
    assert!(
        unknown["tls"]["issuer"]
            .as_str()
            .is_some_and(|i| !i.is_empty()),
        "{unknown:#}"
    );
    assert!(
        unknown["tls"]["sans"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{unknown:#}"
    );
    // Trusted: the handshake passes and the (empty) registry answers.
    assert_eq!(
        run(&good, &["--ca-file", ca])["reason"],
        "RepositoryNotFound"
    );
    assert_eq!(
        run(&good, &["--insecure-skip-verify"])["reason"],
        "RepositoryNotFound"
    );
    let expired = Registry::builder().tls(&pki.expired).start();
    // With verification skipped the expired certificate is accepted, and the row says so.
    let skipped = run(&expired, &["--insecure-skip-verify"]);
    let tls_row = skipped["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tls")
        .cloned()
        .unwrap();
    assert!(
        tls_row["detail"]
            .as_str()
            .unwrap()
            .contains("was accepted: verification is skipped for this host"),
        "{skipped:#}"
    );
    let exp = run(&expired, &["--ca-file", ca]);
    assert_failure(&exp, "tls", "TLSCertificateExpired");
    let m = exp["message"].as_str().unwrap();
    assert!(
        m.contains(" expired ") && m.contains(" days ago; issuer "),
        "{m}"
    );
    assert!(
        !m.contains("ExpiredContext") && !m.contains("UnixTime"),
        "{m}"
    );
    let not_after = exp["tls"]["not_after"].as_str().unwrap();
    assert!(
        not_after.ends_with('Z') && not_after.contains('T'),
        "RFC 3339: {not_after}"
    );
    assert!(
        exp["tls"]["days_to_expiry"].as_i64().unwrap() < 0,
        "{exp:#}"
    );
    let early = Registry::builder().tls(&pki.not_yet_valid).start();
    assert_failure(
        &run(&early, &["--ca-file", ca]),
        "tls",
        "TLSCertificateNotYetValid",
    );
    let wrong = Registry::builder().tls(&pki.wrong_name).start();
    assert_failure(&run(&wrong, &["--ca-file", ca]), "tls", "TLSNameMismatch");
    let plain = Registry::plain();
    assert_failure(&run(&plain, &["--ca-file", ca]), "tls", "TLSPlainHTTP");
    // A flag naming a missing file is a configuration error (exit 2) before any probe,
    // never a TLS verdict.
    let image = format!("registry.test:{}/demo/app:v1", good.port());
    let out = run_pullprobe(&["check", &image, "--ca-file", "/nonexistent/ca.pem"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ca-file /nonexistent/ca.pem: no such file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn client_certificate_required_by_the_registry() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .client_ca(&pki.client_ca_cert)
        .start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::mtls(&pki));
    let image = format!("{}/demo/app:v1", reg.host_port());
    let ca = pki.ca_cert.to_str().unwrap();
    let (code, lines) = check(&[&image, "--ca-file", ca], None);
    assert_eq!(code, 1);
    assert_failure(&lines[0], "tls", "TLSClientCertRequired");
    let (code, lines) = check(
        &[
            &image,
            "--ca-file",
            ca,
            "--cert",
            pki.client.cert.to_str().unwrap(),
            "--key",
            pki.client.key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{lines:?}");
}

#[test]
fn token_realm_on_an_unresolvable_host_is_an_auth_failure() {
    let pki = Pki::new();
    let issuer = TokenIssuer::builder(&pki)
        .realm_host("nxdomain.test")
        .anonymous_allow("demo/app")
        .start();
    let reg = Registry::builder()
        .tls(&pki.server)
        .token_auth(&issuer)
        .start();
    let dns = Dns::start_default();
    let resolv = dns.resolv_conf();
    let hosts = empty_hosts(dns.dir());
    let image = format!("{}/demo/app:v1", reg.host_port());
    let (code, lines) = check(
        &[
            &image,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
            "--resolv-conf",
            resolv.to_str().unwrap(),
            "--hosts-file",
            &hosts,
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_failure(&lines[0], "auth", "AuthTokenEndpointUnreachable");
    // The realm host's own dns phase is recorded.
    let phases = lines[0]["phases"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["name"] == "dns"
        && p["ok"] == false
        && p["host"].as_str().unwrap().starts_with("nxdomain.test")));
}

#[test]
fn tls_handshake_timeout_and_reset() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    let target: std::net::SocketAddr = reg.host_port().parse().unwrap();
    // A non-loopback name, so the endpoint is https only (no containerd HTTP fallback).
    let dir = tempfile::tempdir().unwrap();
    let (hosts, resolv) = hosts_only(dir.path(), "127.0.0.1 registry.test\n");
    let run = |port: u16, extra: &[&str]| -> Value {
        let image = format!("registry.test:{port}/demo/app:v1");
        let mut args = vec![
            image.as_str(),
            "--hosts-file",
            &hosts,
            "--resolv-conf",
            &resolv,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        check(&args, None).1.into_iter().next().unwrap()
    };
    let hang = DelayProxy::start(target, ProxyMode::Hang);
    assert_failure(
        &run(hang.port(), &["--timeout-tls", "1s"]),
        "tls",
        "TLSHandshakeTimeout",
    );
    let reset = DelayProxy::start(target, ProxyMode::Reset);
    assert_failure(&run(reset.port(), &[]), "tls", "TLSHandshakeFailed");
}

#[test]
fn connect_falls_back_across_resolved_addresses() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::tls(&pki));
    let dir = tempfile::tempdir().unwrap();
    // First address: nothing listens on 127.0.0.2 at that port (refused); second works.
    let (hosts, resolv) = hosts_only(
        dir.path(),
        "127.0.0.2 registry.test\n127.0.0.1 registry.test\n",
    );
    let image = format!("registry.test:{}/demo/app:v1", reg.port());
    let (code, lines) = check(
        &[
            &image,
            "--hosts-file",
            &hosts,
            "--resolv-conf",
            &resolv,
            "--ca-file",
            pki.ca_cert.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{lines:?}");
    let phases = lines[0]["phases"].as_array().unwrap();
    let dns = phases.iter().find(|p| p["name"] == "dns").unwrap();
    assert_eq!(dns["detail"], "127.0.0.2,127.0.0.1", "{dns}");
    let connect = phases.iter().find(|p| p["name"] == "connect").unwrap();
    assert_eq!(connect["detail"], format!("127.0.0.1:{}", reg.port()));
}

#[test]
fn ipv6_registry_literal() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::tls(&pki));
    let v6 = Registry::builder()
        .tls(&pki.server)
        .ipv6()
        .storage(reg.storage())
        .start();
    let image = format!("[::1]:{}/demo/app:v1", v6.port());
    let (code, lines) = check(&[&image, "--ca-file", pki.ca_cert.to_str().unwrap()], None);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["reference"], image);
}
