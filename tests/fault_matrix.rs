//! The fault matrix: every way the pull path can break, one row each, through the one
//! pipeline (`pullprobe check --json`), against real servers wherever a real server can
//! produce the fault — distribution 2.8 (TLS, htpasswd, token auth, redirect middleware),
//! unbound, the token issuer, the delaying proxy — and kernel packet filters (iptables, nft)
//! inside a network namespace this test creates. The scripted server answers only what no
//! real server can be made to say on demand (429, malformed headers, stalls, garbage).
//!
//! Each row asserts the verdict, phase and reason, that the process exited normally (0 or
//! 1: no panic, no signal), and that it finished within a bound derived from the configured
//! timeouts ("did not hang", not a performance check). `docs/faults.md` is this table in
//! prose; `the_docs_table_is_this_table` keeps the two identical.
//!
//! Other tests (tests/check_*.rs, tests/redirects.rs) look deeper at some of these rows;
//! this file is the one place that lists them all.

mod harness;

use std::any::Any;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{json, Value};

/// Per-phase timeouts given to every row, and the overall probe deadline.
const PHASE_TIMEOUT: &str = "2s";
const DEADLINE: Duration = Duration::from_secs(12);
/// Process start, a few round trips, and a loaded 2-core machine on top of the deadline.
const SLACK: Duration = Duration::from_secs(8);

/// What a row expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `verdict: ready`, no failing phase.
    Ready,
    /// `verdict: not_ready` with this phase and reason.
    Fail(&'static str, &'static str),
}

/// One fault: what breaks, how it is produced, what pullprobe must say.
struct Row {
    group: &'static str,
    fault: &'static str,
    /// How the fault is produced (for the docs table).
    how: &'static str,
    expect: Expect,
    setup: fn(&Env) -> Case,
}

/// A prepared row: the image and extra flags, the servers kept alive while it runs, and
/// the network namespace to run it in (if any).
struct Case {
    args: Vec<String>,
    stdin: Option<String>,
    netns: Option<String>,
    keep: Vec<Box<dyn Any>>,
}

impl Case {
    fn new(image: impl Into<String>) -> Case {
        Case {
            args: vec![image.into()],
            stdin: None,
            netns: None,
            keep: Vec::new(),
        }
    }
    fn arg(mut self, a: impl Into<String>) -> Case {
        self.args.push(a.into());
        self
    }
    fn args(mut self, a: &[&str]) -> Case {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    fn keep(mut self, k: impl Any) -> Case {
        self.keep.push(Box::new(k));
        self
    }
    fn stdin(mut self, s: &str) -> Case {
        self.stdin = Some(s.to_string());
        self
    }
    fn in_netns(mut self, ns: &NetNs) -> Case {
        self.netns = Some(ns.name.clone());
        self
    }
}

/// Servers shared by the rows: the CA, a resolver and hosts file, a TLS registry holding
/// `demo/app:v1`, and a network namespace with its own packet filter.
struct Env {
    pki: Pki,
    dns: Dns,
    hosts: PathBuf,
    good: Registry,
    netns: NetNs,
}

impl Env {
    fn start() -> Env {
        let pki = Pki::new();
        let good = Registry::builder().tls(&pki.server).start();
        OciImage::single("v1").push(&good, "demo/app", &PushOpts::tls(&pki));
        let dns = Dns::start_default();
        let hosts = dns.dir().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
        Env {
            pki,
            dns,
            hosts,
            good,
            netns: NetNs::create(),
        }
    }
    fn ca(&self) -> String {
        self.pki.ca_cert.display().to_string()
    }
    /// `registry.test:PORT/demo/app:v1` (https only: not a localhost name).
    fn named(&self, port: u16) -> String {
        format!("registry.test:{port}/demo/app:v1")
    }
    /// A TLS registry with `cert` and the shared storage (it holds demo/app:v1).
    fn tls_registry(&self, cert: &CertKey) -> Registry {
        Registry::builder()
            .tls(cert)
            .storage(self.good.storage())
            .start()
    }
}

// === Scripted servers (only what a real server cannot say) ===

/// `127.0.0.1:PORT/demo/app:v1` over plain HTTP.
fn scripted(s: ScriptedServer) -> Case {
    Case::new(format!("{}/demo/app:v1", s.host_port()))
        .arg("--plain-http")
        .keep(s)
}

/// Manifests answered by `manifest`, `/v2/` with 200, anything else (blobs) by `other`.
fn registry_like(
    manifest: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    other: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> ScriptedServer {
    registry_like_on("127.0.0.1:0".parse().expect("addr"), manifest, other)
}

/// A scripted registry on this side of the namespace's veth pair (10.253.N.1: not loopback,
/// link-local or an address of the namespace), checked from inside the namespace: whatever
/// it redirects to is the namespace's, so a refusal that failed would still stay there.
fn in_netns_registry(
    e: &Env,
    manifest: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    other: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> Case {
    let s = registry_like_on(SocketAddr::from((e.netns.host_ip, 0)), manifest, other);
    Case::new(format!("{}/demo/app:v1", s.host_port()))
        .arg("--plain-http")
        .in_netns(&e.netns)
        .keep(s)
}

fn registry_like_on(
    addr: SocketAddr,
    manifest: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    other: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> ScriptedServer {
    ScriptedServer::start_on(addr, move |r| {
        if r.path == "/v2/" {
            Reply::v2_ok()
        } else if r.path.contains("/manifests/") {
            manifest(r)
        } else {
            other(r)
        }
    })
}

/// A registry whose Bearer challenge names a token endpoint on the same server answering
/// `token`; with a Bearer header the manifest is served.
fn token_server(token: Reply) -> ScriptedServer {
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    let (body, digest, _) = small_manifest();
    let s = ScriptedServer::start(move |r| {
        if r.path.starts_with("/token") {
            return token.clone();
        }
        if r.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
        {
            return manifest_reply(&body, &digest);
        }
        let port = *p.lock().expect("lock");
        Reply::bearer_challenge(
            &format!("http://127.0.0.1:{port}/token"),
            "scripted",
            Some("repository:demo/app:pull"),
        )
    });
    *port.lock().expect("lock") = s.port();
    s
}

/// A real token-auth registry whose challenge names `realm_port` instead of the issuer's.
fn token_registry(env: &Env, realm_port: Option<u16>) -> (TokenIssuer, Registry) {
    let mut issuer = TokenIssuer::builder(&env.pki)
        .anonymous_allow("demo/app")
        .start();
    if let Some(p) = realm_port {
        issuer.set_realm_port(p);
    }
    let reg = Registry::builder()
        .tls(&env.pki.server)
        .token_auth(&issuer)
        .storage(env.good.storage())
        .start();
    (issuer, reg)
}

fn tls_case(env: &Env, reg: &Registry) -> Case {
    Case::new(env.named(reg.port())).args(&["--ca-file", &env.ca()])
}

// === The rows ===

fn dns_row(name: &'static str) -> fn(&Env) -> Case {
    match name {
        "nxdomain" => |e| Case::new(format!("nxdomain.test:{}/demo/app:v1", e.good.port())),
        "norecords" => |e| Case::new(format!("norecords.test:{}/demo/app:v1", e.good.port())),
        "servfail" => |e| Case::new(format!("servfail.test:{}/demo/app:v1", e.good.port())),
        "refused" => |e| Case::new(format!("refused.test:{}/demo/app:v1", e.good.port())),
        _ => |e| Case::new(format!("drop.test:{}/demo/app:v1", e.good.port())),
    }
}

fn rows() -> Vec<Row> {
    let mut v = dns_rows();
    v.extend(tcp_rows());
    v.extend(tls_rows());
    v.extend(auth_rows());
    v.extend(challenge_rows());
    v.extend(token_rows());
    v.extend(manifest_rows());
    v.extend(body_rows());
    v.extend(blob_rows());
    v.extend(blob_host_rows());
    v
}

fn dns_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "DNS",
            fault: "NXDOMAIN",
            how: "unbound `local-zone static`",
            expect: Fail("dns", "DNSNameNotFound"),
            setup: dns_row("nxdomain"),
        },
        Row {
            group: "DNS",
            fault: "name without A/AAAA records",
            how: "unbound, TXT record only",
            expect: Fail("dns", "DNSNoRecords"),
            setup: dns_row("norecords"),
        },
        Row {
            group: "DNS",
            fault: "SERVFAIL",
            how: "unbound stub zone with an unusable server",
            expect: Fail("dns", "DNSServerFailure"),
            setup: dns_row("servfail"),
        },
        Row {
            group: "DNS",
            fault: "REFUSED",
            how: "unbound `local-zone refuse`",
            expect: Fail("dns", "DNSRefused"),
            setup: dns_row("refused"),
        },
        Row {
            group: "DNS",
            fault: "no answer (timeout)",
            how: "unbound `local-zone deny` drops the query",
            expect: Fail("dns", "DNSTimeout"),
            setup: dns_row("drop"),
        },
    ]
}

fn tcp_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "TCP",
            fault: "connection refused",
            how: "closed port (kernel RST to the SYN)",
            expect: Fail("connect", "ConnectRefused"),
            setup: |_| {
                let port = free_port();
                Case::new(format!("127.0.0.1:{port}/demo/app:v1")).arg("--plain-http")
            },
        },
        Row {
            group: "TCP",
            fault: "blackhole",
            how: "nft `drop` in the test's network namespace",
            expect: Fail("connect", "ConnectTimeout"),
            setup: |e| {
                let ns = &e.netns;
                let port = ns.free_port();
                ns.nft_output(&format!("ip daddr {} tcp dport {port} drop", ns.host_ip));
                Case::new(ns.image(port)).in_netns(ns)
            },
        },
        Row {
            group: "TCP",
            fault: "host unreachable",
            how: "iptables `REJECT --reject-with icmp-host-unreachable` in the namespace",
            expect: Fail("connect", "ConnectUnreachable"),
            setup: |e| {
                let ns = &e.netns;
                let port = ns.free_port();
                let (ip, p) = (ns.host_ip.to_string(), port.to_string());
                ns.iptables_output(&[
                    "-d", &ip, "-p", "tcp", "--dport", &p, "-j", "REJECT",
                    "--reject-with", "icmp-host-unreachable",
                ]);
                Case::new(ns.image(port)).in_netns(ns)
            },
        },
        Row {
            group: "TCP",
            fault: "reset mid-handshake",
            how: "iptables `REJECT --reject-with tcp-reset` on the ClientHello (first PSH segment) in the namespace",
            expect: Fail("tls", "TLSHandshakeFailed"),
            setup: |e| {
                let ns = &e.netns;
                let l = ns.listener();
                let port = l.local_addr().expect("addr").port();
                let (ip, p) = (ns.host_ip.to_string(), port.to_string());
                ns.iptables_output(&[
                    "-d", &ip, "-p", "tcp", "--dport", &p, "--tcp-flags", "PSH", "PSH", "-j",
                    "REJECT", "--reject-with", "tcp-reset",
                ]);
                Case::new(ns.image(port)).in_netns(ns).keep(l)
            },
        },
        Row {
            group: "TCP",
            fault: "accepted, then reset",
            how: "delay proxy in `Reset` mode (SO_LINGER 0) in front of the registry",
            expect: Fail("tls", "TLSHandshakeFailed"),
            setup: |e| {
                let p = DelayProxy::start(e.good.host_port().parse().expect("addr"), ProxyMode::Reset);
                Case::new(e.named(p.port())).args(&["--ca-file", &e.ca()]).keep(p)
            },
        },
    ]
}

fn tls_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "TLS",
            fault: "unknown CA",
            how: "registry certificate from a CA the node does not trust",
            expect: Fail("tls", "TLSUnknownAuthority"),
            setup: |e| Case::new(e.named(e.good.port())),
        },
        Row {
            group: "TLS",
            fault: "certificate expired",
            how: "registry with an expired leaf",
            expect: Fail("tls", "TLSCertificateExpired"),
            setup: |e| {
                let r = e.tls_registry(&e.pki.expired);
                tls_case(e, &r).keep(r)
            },
        },
        Row {
            group: "TLS",
            fault: "certificate not yet valid",
            how: "registry with a leaf valid from next year",
            expect: Fail("tls", "TLSCertificateNotYetValid"),
            setup: |e| {
                let r = e.tls_registry(&e.pki.not_yet_valid);
                tls_case(e, &r).keep(r)
            },
        },
        Row {
            group: "TLS",
            fault: "wrong name",
            how: "registry with a leaf for another name",
            expect: Fail("tls", "TLSNameMismatch"),
            setup: |e| {
                let r = e.tls_registry(&e.pki.wrong_name);
                tls_case(e, &r).keep(r)
            },
        },
        Row {
            group: "TLS",
            fault: "plain HTTP server",
            how: "plain-HTTP registry on an https-only endpoint",
            expect: Fail("tls", "TLSPlainHTTP"),
            setup: |e| {
                let r = Registry::builder().storage(e.good.storage()).start();
                tls_case(e, &r).keep(r)
            },
        },
        Row {
            group: "TLS",
            fault: "handshake stalls",
            how: "delay proxy in `Hang` mode: accepts, never answers",
            expect: Fail("tls", "TLSHandshakeTimeout"),
            setup: |e| {
                let p =
                    DelayProxy::start(e.good.host_port().parse().expect("addr"), ProxyMode::Hang);
                Case::new(e.named(p.port()))
                    .args(&["--ca-file", &e.ca()])
                    .keep(p)
            },
        },
        Row {
            group: "TLS",
            fault: "client certificate required",
            how: "registry with `http.tls.clientcas`, no client certificate offered",
            expect: Fail("tls", "TLSClientCertRequired"),
            setup: |e| {
                let r = Registry::builder()
                    .tls(&e.pki.server)
                    .client_ca(&e.pki.client_ca_cert)
                    .storage(e.good.storage())
                    .start();
                tls_case(e, &r).keep(r)
            },
        },
    ]
}

fn htpasswd_registry(e: &Env) -> Registry {
    Registry::builder()
        .tls(&e.pki.server)
        .htpasswd(&[("alice", "right-pw")])
        .storage(e.good.storage())
        .start()
}

fn auth_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "HTTP",
            fault: "401, no credentials",
            how: "htpasswd registry",
            expect: Fail("auth", "AuthCredentialsRequired"),
            setup: |e| {
                let r = htpasswd_registry(e);
                tls_case(e, &r).keep(r)
            },
        },
        Row {
            group: "HTTP",
            fault: "401, wrong credentials",
            how: "htpasswd registry, wrong password",
            expect: Fail("auth", "AuthCredentialsRejected"),
            setup: |e| {
                let r = htpasswd_registry(e);
                tls_case(e, &r)
                    .args(&["--username", "alice", "--password-stdin"])
                    .stdin("wrong-pw\n")
                    .keep(r)
            },
        },
        Row {
            group: "HTTP",
            fault: "401 insufficient_scope",
            how: "token issuer: alice may pull `demo/app` only, asks for `other/app`",
            expect: Fail("auth", "AuthDenied"),
            setup: |e| {
                let i = TokenIssuer::builder(&e.pki)
                    .user("alice", "right-pw")
                    .allow("alice", "demo/app")
                    .start();
                let r = Registry::builder()
                    .tls(&e.pki.server)
                    .token_auth(&i)
                    .storage(e.good.storage())
                    .start();
                Case::new(format!("registry.test:{}/other/app:v1", r.port()))
                    .args(&[
                        "--ca-file",
                        &e.ca(),
                        "--username",
                        "alice",
                        "--password-stdin",
                    ])
                    .stdin("right-pw\n")
                    .keep(i)
                    .keep(r)
            },
        },
    ]
}

/// Access refused after authentication, and challenges the runtime cannot use.
fn challenge_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "HTTP",
            fault: "403",
            how: "scripted: 403 `DENIED` on the manifest",
            expect: Fail("auth", "AuthDenied"),
            setup: |_| {
                scripted(registry_like(
                    |_| Reply::json(403, &json!({"errors":[{"code":"DENIED","message":"no"}]})),
                    |_| Reply::status(404),
                ))
            },
        },
        Row {
            group: "HTTP",
            fault: "malformed WWW-Authenticate",
            how: "scripted: unterminated quote, no realm",
            expect: Fail("auth", "AuthChallengeMalformed"),
            setup: |_| {
                scripted(ScriptedServer::canned(vec![
                    Reply::malformed_www_authenticate(),
                ]))
            },
        },
        Row {
            group: "HTTP",
            fault: "auth scheme the runtime does not speak",
            how: "scripted: `WWW-Authenticate: Negotiate`",
            expect: Fail("auth", "AuthUnsupportedScheme"),
            setup: |_| {
                scripted(ScriptedServer::canned(vec![Reply::status(401)
                    .header("WWW-Authenticate", "Negotiate")
                    .header("Docker-Distribution-API-Version", "registry/2.0")]))
            },
        },
    ]
}

fn token_rows() -> Vec<Row> {
    use Expect::{Fail, Ready};
    vec![
        Row {
            group: "Token server",
            fault: "down",
            how: "the challenge names a realm port where nothing listens",
            expect: Fail("auth", "AuthTokenEndpointUnreachable"),
            setup: |e| {
                let (i, r) = token_registry(e, Some(free_port()));
                tls_case(e, &r).keep(i).keep(r)
            },
        },
        Row {
            group: "Token server",
            fault: "slow (never answers)",
            how: "delay proxy in `Hang` mode in front of the real issuer",
            expect: Fail("auth", "AuthTokenEndpointUnreachable"),
            setup: |e| {
                let mut issuer = TokenIssuer::builder(&e.pki)
                    .anonymous_allow("demo/app")
                    .start();
                let target = SocketAddr::from(([127, 0, 0, 1], issuer.port()));
                let hang = DelayProxy::start(target, ProxyMode::Hang);
                issuer.set_realm_port(hang.port());
                let r = Registry::builder()
                    .tls(&e.pki.server)
                    .token_auth(&issuer)
                    .storage(e.good.storage())
                    .start();
                tls_case(e, &r).keep(issuer).keep(hang).keep(r)
            },
        },
        Row {
            group: "Token server",
            fault: "garbage answer",
            how: "scripted: truncated JSON",
            expect: Fail("auth", "AuthTokenMalformed"),
            setup: |_| scripted(token_server(Reply::malformed_token_json())),
        },
        Row {
            group: "Token server",
            fault: "answer without a token",
            how: "scripted: JSON without `token`/`access_token`",
            expect: Fail("auth", "AuthTokenMalformed"),
            setup: |_| scripted(token_server(Reply::token_json_without_token())),
        },
        Row {
            group: "Token server",
            fault: "500",
            how: "scripted: 500 from the realm",
            expect: Fail("auth", "AuthTokenEndpointError"),
            setup: |_| scripted(token_server(Reply::status(500))),
        },
        Row {
            group: "Token server",
            fault: "huge `expires_in`",
            how: "scripted: `expires_in` = 2^63-1 (capped; the token is used)",
            expect: Ready,
            setup: |_| {
                let t = Reply::status(200)
                    .header("Content-Type", "application/json")
                    .body(r#"{"token":"fm-token","expires_in":9223372036854775807}"#);
                scripted(token_server(t)).arg("--no-blob")
            },
        },
        Row {
            group: "Token server",
            fault: "1 MB token",
            how: "scripted: the realm answers a 1 MB token (over the 32 KiB limit: not used, not cached)",
            expect: Fail("auth", "AuthTokenTooLarge"),
            setup: |_| {
                let t = Reply::json(200, &json!({"token": "t".repeat(1 << 20), "expires_in": 300}));
                scripted(token_server(t))
            },
        },
        Row {
            group: "Token server",
            fault: "realm on loopback, registry elsewhere",
            how: "in the namespace: a registry on 10.253.N.1 names a realm on 127.0.0.1",
            expect: Fail("auth", "AuthRealmRefused"),
            setup: |e| {
                in_netns_registry(
                    e,
                    |_| Reply::bearer_challenge("http://127.0.0.1:9/token", "fm", None),
                    |_| Reply::status(404),
                )
            },
        },
        Row {
            group: "Token server",
            fault: "realm on link-local (169.254.169.254)",
            how: "in the namespace: a registry on 10.253.N.1 names a realm on the metadata address",
            expect: Fail("auth", "AuthRealmRefused"),
            setup: |e| {
                in_netns_registry(
                    e,
                    |_| Reply::bearer_challenge("http://169.254.169.254/token", "fm", None),
                    |_| Reply::status(404),
                )
            },
        },
    ]
}

fn status_rows() -> Vec<Row> {
    use Expect::{Fail, Ready};
    vec![
        Row {
            group: "HTTP",
            fault: "404, tag missing",
            how: "real registry, unknown tag",
            expect: Fail("manifest", "ManifestNotFound"),
            setup: |e| {
                Case::new(format!("registry.test:{}/demo/app:missing", e.good.port()))
                    .args(&["--ca-file", &e.ca()])
            },
        },
        Row {
            group: "HTTP",
            fault: "404, repository missing",
            how: "real registry, unknown repository (`NAME_UNKNOWN`)",
            expect: Fail("manifest", "RepositoryNotFound"),
            setup: |e| {
                Case::new(format!("registry.test:{}/nope/app:v1", e.good.port()))
                    .args(&["--ca-file", &e.ca()])
            },
        },
        Row {
            group: "HTTP",
            fault: "405 on HEAD",
            how: "scripted: HEAD 405, GET 200 (containerd falls back to GET)",
            expect: Ready,
            setup: |_| {
                let (body, digest, _) = small_manifest();
                let s = ScriptedServer::start(move |r| match r.method.as_str() {
                    "HEAD" => Reply::status(405),
                    _ => manifest_reply(&body, &digest),
                });
                scripted(s).arg("--no-blob")
            },
        },
        Row {
            group: "HTTP",
            fault: "405 on every method",
            how: "scripted: 405 everywhere but `/v2/`",
            expect: Fail("manifest", "ManifestUnexpectedStatus"),
            setup: |_| {
                scripted(registry_like(
                    |_| Reply::status(405),
                    |_| Reply::status(405),
                ))
            },
        },
        Row {
            group: "HTTP",
            fault: "429 with Retry-After",
            how: "scripted: 429 `TOOMANYREQUESTS`, `Retry-After: 7`",
            expect: Fail("manifest", "RateLimited"),
            setup: |_| scripted(ScriptedServer::canned(vec![Reply::too_many_requests("7")])),
        },
        Row {
            group: "HTTP",
            fault: "500",
            how: "scripted: 500 on the manifest",
            expect: Fail("manifest", "RegistryServerError"),
            setup: |_| {
                scripted(registry_like(
                    |_| Reply::status(500),
                    |_| Reply::status(500),
                ))
            },
        },
        Row {
            group: "HTTP",
            fault: "503",
            how: "scripted: 503 everywhere",
            expect: Fail("manifest", "RegistryServerError"),
            setup: |_| scripted(ScriptedServer::canned(vec![Reply::status(503)])),
        },
    ]
}

fn manifest_rows() -> Vec<Row> {
    use Expect::Fail;
    let mut v = status_rows();
    v.extend([
        Row {
            group: "Headers",
            fault: "malformed `Docker-Content-Digest`",
            how: "scripted: digest header that is not a digest",
            expect: Fail("manifest", "ManifestMalformed"),
            setup: |_| {
                let (body, _, _) = small_manifest();
                scripted(registry_like(
                    move |_| manifest_reply(&body, "sha256:not-hex!"),
                    |_| Reply::status(404),
                ))
                .args(&["--runtime", "crio"])
            },
        },
        Row {
            group: "Headers",
            fault: "200 KB `Docker-Content-Digest`",
            how: "scripted: HEAD answer whose digest header is `sha256:` and 200,000 hex digits (neither used nor shown)",
            expect: Fail("manifest", "ManifestMalformed"),
            setup: |_| {
                let (body, _, _) = small_manifest();
                let huge = format!("sha256:{}", "f".repeat(200_000));
                scripted(registry_like(
                    move |_| manifest_reply(&body, &huge),
                    |_| Reply::status(404),
                ))
            },
        },
        Row {
            group: "Headers",
            fault: "malformed `Content-Length`",
            how: "scripted raw response: `Content-Length: many`",
            expect: Fail("manifest", "ConnectionLost"),
            setup: |_| {
                scripted(ScriptedServer::canned(vec![Reply::Raw(
                    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}".to_vec(),
                )]))
            },
        },
        Row {
            group: "Headers",
            fault: "garbage status line",
            how: "scripted raw response: not HTTP",
            expect: Fail("manifest", "ConnectionLost"),
            setup: |_| {
                scripted(ScriptedServer::canned(vec![Reply::Raw(
                    b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
                )]))
            },
        },
        Row {
            group: "Headers",
            fault: "response headers never come",
            how: "scripted: request read, no answer",
            expect: Fail("manifest", "ResponseTimeout"),
            setup: |_| scripted(ScriptedServer::canned(vec![Reply::Hang])),
        },
    ]);
    v
}

fn body_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "Bodies",
            fault: "body stalls",
            how: "scripted: 100 of 4096 announced bytes, then silence",
            expect: Fail("manifest", "ResponseTimeout"),
            setup: |_| {
                scripted(registry_like(
                    |_| {
                        Reply::stall_mid_body(
                            200,
                            "application/vnd.oci.image.manifest.v1+json",
                            4096,
                            100,
                        )
                    },
                    |_| Reply::status(404),
                ))
                .args(&["--runtime", "crio"])
            },
        },
        Row {
            group: "Bodies",
            fault: "body truncated",
            how: "scripted raw response: 100 of 4096 announced bytes, then close",
            expect: Fail("manifest", "ConnectionLost"),
            setup: |_| {
                let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 4096\r\n\r\n".to_vec();
                raw.extend_from_slice(&[b'x'; 100]);
                scripted(registry_like(
                    move |_| Reply::Raw(raw.clone()),
                    |_| Reply::status(404),
                ))
                .args(&["--runtime", "crio"])
            },
        },
        Row {
            group: "Bodies",
            fault: "connection cut mid-response",
            how: "delay proxy `TruncateAfter(40)` in front of the real registry",
            expect: Fail("manifest", "ConnectionLost"),
            setup: |e| {
                let plain = Registry::builder().storage(e.good.storage()).start();
                let p = DelayProxy::start(
                    plain.host_port().parse().expect("addr"),
                    ProxyMode::TruncateAfter(40),
                );
                Case::new(format!("{}/demo/app:v1", p.host_port()))
                    .arg("--plain-http")
                    .keep(p)
                    .keep(plain)
            },
        },
        Row {
            group: "Bodies",
            fault: "10 MB manifest",
            how: "scripted: a valid manifest padded to 10 MiB",
            expect: Fail("manifest", "ManifestTooLarge"),
            setup: |_| {
                scripted(registry_like(
                    |_| Reply::big_manifest(10 * 1024 * 1024),
                    |_| Reply::status(404),
                ))
            },
        },
        Row {
            group: "Bodies",
            fault: "index of 10,000 entries, none for the node",
            how: "real registry: a 1.9 MB index PUT by the test (the message lists \"10,000 entries, first 8\")",
            expect: Fail("platform", "PlatformMissing"),
            setup: |_| {
                let reg = Registry::plain();
                let base = OciImage::single("base");
                base.push(&reg, "demo/app", &PushOpts::insecure());
                let idx = huge_index(&base.manifests[0], 10_000, 0);
                let st = reg.put_manifest("demo/app", "v1", "application/vnd.oci.image.index.v1+json", &idx);
                assert_eq!(st, 201, "PUT of the 10,000-entry index");
                Case::new(format!("{}/demo/app:v1", reg.host_port()))
                    .arg("--plain-http")
                    .keep(reg)
            },
        },
    ]
}

fn blob_rows() -> Vec<Row> {
    use Expect::Fail;
    vec![
        Row {
            group: "Redirects",
            fault: "blob redirect loop",
            how: "scripted: blob → /elsewhere → blob",
            expect: Fail("blob", "BlobRedirectLoop"),
            setup: |_| {
                let (body, digest, config) = small_manifest();
                let blob = format!("/v2/demo/app/blobs/{config}");
                scripted(registry_like(
                    move |_| manifest_reply(&body, &digest),
                    move |r| match r.path == blob {
                        true => Reply::redirect(307, "/elsewhere"),
                        false => Reply::redirect(307, &blob),
                    },
                ))
            },
        },
        Row {
            group: "Redirects",
            fault: "too many blob redirects",
            how: "scripted: /hop/N → /hop/N+1 forever",
            expect: Fail("blob", "BlobTooManyRedirects"),
            setup: |_| {
                let (body, digest, _) = small_manifest();
                scripted(registry_like(
                    move |_| manifest_reply(&body, &digest),
                    |r| {
                        let n: u32 = r
                            .path
                            .strip_prefix("/hop/")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        Reply::redirect(302, &format!("/hop/{}", n + 1))
                    },
                ))
            },
        },
        Row {
            group: "Redirects",
            fault: "cross-scheme redirect (ftp://)",
            how: "scripted: blob 307 to `ftp://` (Go follows http and https only)",
            expect: Fail("blob", "BlobUnexpectedStatus"),
            setup: |_| {
                let (body, digest, _) = small_manifest();
                scripted(registry_like(
                    move |_| manifest_reply(&body, &digest),
                    |_| Reply::redirect(307, "ftp://127.0.0.1:21/blob"),
                ))
            },
        },
        Row {
            group: "Redirects",
            fault: "blob redirect into loopback, registry elsewhere",
            how: "in the namespace: a registry on 10.253.N.1 redirects the config blob to 127.0.0.1",
            expect: Fail("blob", "RedirectRefused"),
            setup: |e| {
                let (body, digest, _) = small_manifest();
                in_netns_registry(
                    e,
                    move |_| manifest_reply(&body, &digest),
                    |_| Reply::redirect(307, "http://127.0.0.1:9/blob"),
                )
            },
        },
        Row {
            group: "Redirects",
            fault: "blob redirect to a name on loopback",
            how: "in the namespace: the redirect names `localhost` (checked on the address it resolves to)",
            expect: Fail("blob", "RedirectRefused"),
            setup: |e| {
                let (body, digest, _) = small_manifest();
                in_netns_registry(
                    e,
                    move |_| manifest_reply(&body, &digest),
                    |_| Reply::redirect(307, "http://localhost:9/blob"),
                )
            },
        },
        Row {
            group: "Redirects",
            fault: "blob redirect to the node's own address",
            how: "in the namespace: a registry on 10.253.N.1 redirects the config blob to the namespace's 10.253.N.2",
            expect: Fail("blob", "RedirectRefused"),
            setup: |e| {
                let (body, digest, _) = small_manifest();
                let own = format!("http://{}:9/blob", e.netns.ns_ip);
                in_netns_registry(
                    e,
                    move |_| manifest_reply(&body, &digest),
                    move |_| Reply::redirect(307, &own),
                )
            },
        },
        Row {
            group: "Redirects",
            fault: "manifest redirect to link-local (169.254.169.254)",
            how: "in the namespace: a registry on 10.253.N.1 redirects the manifest to the metadata address",
            expect: Fail("manifest", "RedirectRefused"),
            setup: |e| {
                in_netns_registry(
                    e,
                    |_| Reply::redirect(307, "http://169.254.169.254/latest/meta-data/"),
                    |_| Reply::status(404),
                )
            },
        },
    ]
}

/// Blob hosts behind the registry's redirect middleware.
fn blob_host_rows() -> Vec<Row> {
    use Expect::{Fail, Ready};
    vec![
        Row {
            group: "Redirects",
            fault: "https registry → http blob host",
            how: "real redirect middleware to a plain-HTTP blob host (Go follows it)",
            expect: Ready,
            setup: |e| {
                let blobs = BlobHost::start(e.good.storage_dir());
                let r = Registry::builder()
                    .tls(&e.pki.server)
                    .storage(e.good.storage())
                    .redirect(&blobs.url())
                    .start();
                tls_case(e, &r).keep(blobs).keep(r)
            },
        },
        Row {
            group: "Blob host",
            fault: "blob host down",
            how: "real redirect middleware to a port where nothing listens",
            expect: Fail("blob", "BlobHostUnreachable"),
            setup: |e| {
                let r = Registry::builder()
                    .tls(&e.pki.server)
                    .storage(e.good.storage())
                    .redirect(&blob_host_down_url())
                    .start();
                tls_case(e, &r).keep(r)
            },
        },
    ]
}

// === Running a row ===

/// What one row produced.
struct Outcome {
    line: Option<Value>,
    code: Option<i32>,
    elapsed: Duration,
    stderr: String,
}

fn base_args(env: &Env) -> Vec<String> {
    let resolv = env.dns.resolv_conf().display().to_string();
    let hosts = env.hosts.display().to_string();
    let deadline = format!("{}s", DEADLINE.as_secs());
    [
        "check",
        "--json",
        "--timeout-dns",
        PHASE_TIMEOUT,
        "--timeout-connect",
        PHASE_TIMEOUT,
        "--timeout-tls",
        PHASE_TIMEOUT,
        "--timeout-http",
        PHASE_TIMEOUT,
        "--timeout",
        &deadline,
        "--resolv-conf",
        &resolv,
        "--hosts-file",
        &hosts,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the check, killing it if it outlives the bound (a hang is a failed row, not a
/// hung test).
fn run(env: &Env, case: &Case) -> Outcome {
    let bin = env!("CARGO_BIN_EXE_pullprobe");
    let mut cmd = match &case.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(base_args(env))
        .args(&case.args)
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn pullprobe");
    if let (Some(text), Some(mut si)) = (&case.stdin, child.stdin.take()) {
        let _ = si.write_all(text.as_bytes());
    }
    let bound = DEADLINE + SLACK;
    let hung = loop {
        if child.try_wait().ok().flatten().is_some() {
            break false;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("wait pullprobe");
    let elapsed = started.elapsed();
    Outcome {
        line: (!hung)
            .then(|| json_lines(&out.stdout).into_iter().next())
            .flatten(),
        code: if hung { None } else { out.status.code() },
        elapsed,
        stderr: String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(2000)
            .collect(),
    }
}

/// Why a row's outcome does not match, if it does not.
fn mismatch(row: &Row, o: &Outcome) -> Option<String> {
    let Some(code) = o.code else {
        return Some(format!("did not finish within {:?}", DEADLINE + SLACK));
    };
    let Some(line) = &o.line else {
        return Some(format!("exit {code}, no JSON line; stderr: {}", o.stderr));
    };
    let (want_verdict, want_code) = match row.expect {
        Expect::Ready => ("ready", 0),
        Expect::Fail(..) => ("not_ready", 1),
    };
    let (phase, reason) = match row.expect {
        Expect::Ready => (Value::Null, Value::Null),
        Expect::Fail(p, r) => (json!(p), json!(r)),
    };
    let ok = line["verdict"] == want_verdict
        && line["phase"] == phase
        && line["reason"] == reason
        && code == want_code;
    (!ok).then(|| {
        format!(
            "exit {code}, verdict {}, phase {}, reason {}: {}",
            line["verdict"], line["phase"], line["reason"], line["message"]
        )
    })
}

fn expect_cells(e: Expect) -> (&'static str, &'static str) {
    match e {
        Expect::Ready => ("—", "— (ready)"),
        Expect::Fail(p, r) => (p, r),
    }
}

#[test]
fn every_fault_gives_its_phase_and_reason_without_hanging() {
    let env = Env::start();
    let only = std::env::var("FAULT_MATRIX_ONLY").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for row in rows() {
        if only.as_deref().is_some_and(|o| !row.fault.contains(o)) {
            continue;
        }
        let case = (row.setup)(&env);
        let o = run(&env, &case);
        drop(case);
        ran += 1;
        let (phase, reason) = expect_cells(row.expect);
        let verdict = mismatch(&row, &o);
        eprintln!(
            "{:<13} {:<40} {:<9} {:<30} {:>6} ms  {}",
            row.group,
            row.fault,
            phase,
            reason,
            o.elapsed.as_millis(),
            verdict.as_deref().unwrap_or("ok")
        );
        if let Some(v) = verdict {
            failures.push(format!("{} / {}: {v}", row.group, row.fault));
        }
    }
    assert!(ran > 0, "no row ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `docs/faults.md` holds this table, row for row: `| group | fault | phase | reason | how |`.
#[test]
fn the_docs_table_is_this_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/faults.md");
    let doc = std::fs::read_to_string(&path).expect("docs/faults.md");
    let in_doc: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| group") && !l.starts_with("|---"))
        .map(str::to_string)
        .collect();
    let want: Vec<String> = rows().iter().map(doc_line).collect();
    assert_eq!(
        in_doc,
        want,
        "docs/faults.md is out of date; its table should read:\n{}",
        want.join("\n")
    );
}

fn doc_line(r: &Row) -> String {
    let (phase, reason) = expect_cells(r.expect);
    let code = |s: &str| {
        if s.starts_with('—') {
            s.to_string()
        } else {
            format!("`{s}`")
        }
    };
    format!(
        "| {} | {} | {} | {} | {} |",
        r.group,
        r.fault,
        code(phase),
        code(reason),
        r.how
    )
}
