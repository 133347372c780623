//! Integration-test harness: REAL servers on loopback, one set per test (own ports, own temp dirs),
//! all stopped on Drop (child processes are killed and reaped).
//!
//! Every Rust server here runs on its own thread with its own tokio runtime, so the API is plain
//! synchronous calls that work from `#[test]` and from `#[tokio::test]` alike (a test may block on
//! `run_pullprobe` without starving the servers).
//!
//! ```ignore
//! mod harness;
//! use harness::*;
//!
//! #[test]
//! fn pulls_through_token_auth() {
//!     let pki = Pki::new();
//!     // Token issuer trusted by the registry (realm on plain HTTP here; `.tls(&pki.server)` for HTTPS).
//!     let issuer = TokenIssuer::builder(&pki)
//!         .user("alice", "s3cret")
//!         .allow("alice", "team/app")        // alice may pull team/app; others get empty actions
//!         .anonymous_allow("public/app")     // anonymous pull of public/app
//!         .start();
//!     let reg = Registry::builder()
//!         .tls(&pki.server)                  // or nothing for plain HTTP
//!         .token_auth(&issuer)               // or .htpasswd(&[("u", "p")]) / nothing
//!         .start();
//!     // Push an OCI index (linux/amd64 + linux/arm64) with skopeo, authenticated via the issuer.
//!     let img = OciImage::multi_platform("v1", &[("linux", "amd64"), ("linux", "arm64")]);
//!     let pushed = img.push(&reg, "team/app", &PushOpts::tls(&pki).creds("alice", "s3cret"));
//!     // pushed.digest = index digest; img.manifests[i].{digest, config_digest, layer_digest}
//!     let out = run_pullprobe(&["check", &format!("{}/team/app:v1", reg.host_port()), "--json"], None);
//!     let lines = json_lines(&out.stdout);
//!     assert_eq!(issuer.post_count(), 1);
//! }
//! ```
//!
//! Other set-ups, in short:
//!
//! ```ignore
//! let reg = Registry::builder().tls(&pki.server).client_ca(&pki.client_ca_cert).start(); // mTLS
//! let reg = Registry::builder().htpasswd(&[("u", "p")]).start();                        // Basic
//! let v6 = Registry::builder().ipv6().storage(reg.storage()).start();                  // [::1], same blobs
//! let blobs = BlobHost::start(reg.storage_dir());                                      // "CDN"
//! let cdn = Registry::builder().storage(reg.storage()).redirect(&blobs.url()).start(); // 307 → blobs
//! let dead = Registry::builder().storage(reg.storage()).redirect(&blob_host_down_url()).start();
//! assert!(!blobs.saw_authorization());
//! let dns = Dns::start_default();            // unbound on 127.0.53.N:53, zone `test.`
//! let resolv = dns.resolv_conf();            // "nameserver 127.0.53.N\noptions timeout:1 attempts:1"
//! let url = reg.url_with_host("registry.test");
//! let s = ScriptedServer::canned(vec![Reply::too_many_requests("1"), Reply::v2_ok()]);
//! let slow = DelayProxy::start(reg.host_port().parse().unwrap(), ProxyMode::Delay(ms(25)));
//! issuer.set_realm_port(realm_proxy.port()); // challenges name a proxy in front of the realm
//! ```
//!
//! Notes:
//! - Constructors block until the server answers (registry ~0.1 s, unbound ~50 ms); call them from
//!   sync or async tests alike. Nothing runs on the test's own runtime.
//! - Logs: the registry's log (`reg.log()`, `reg.log_path()`) and unbound's (`dns.log()`) are
//!   printed to stderr when a test panics with the server alive.
//! - distribution 2.8 answers 404 for an OCI manifest unless `Accept` lists the OCI media types.
//! - Token policy: users get what they request on repos allowed to them (no `allow` rule = all
//!   repos); anonymous (if enabled) gets `pull` on `anonymous_allow` repos; everything else is granted
//!   empty actions, so the registry answers 401 `insufficient_scope`. Wrong password → 401.
//!
//! Pieces (see each module's docs):
//! - [`pki`]: `Pki::new()` — CA + leaf for localhost/registry.test/127.0.0.1/::1, expired, not-yet-valid,
//!   wrong-name, unknown-CA leaf, client CA + client cert, token CA + signing leaf (PEM paths).
//! - [`registry`]: `Registry::builder()…start()` — real `docker-registry serve` (distribution 2.8.2):
//!   plain/TLS, auth none/htpasswd/token, clientcas, redirect middleware, shared storage.
//! - [`token_issuer`]: `TokenIssuer::builder(&pki)…start()` — GET + OAuth2 POST realm, ES256 JWT with x5c.
//! - [`images`]: `OciImage::single(tag)` / `multi_platform(tag, plats)`, `.push(&reg, repo, &opts)`,
//!   `skopeo_inspect_raw(..)`.
//! - [`blob_host`]: `BlobHost::start(reg.storage_dir())` — the redirect target ("CDN"); `blob_host_down_url()`.
//! - [`dns`]: `Dns::builder()…start()` — unbound on 127.0.53.N:53 with zone `test.` and failure names;
//!   `dns.resolv_conf()`; `write_hosts_file(..)`; `dns_query(..)` raw client.
//! - [`scripted`]: `ScriptedServer` — scripted HTTP/1.1 responses a real registry cannot give.
//! - [`delay_proxy`]: `DelayProxy::start(target, ProxyMode::Delay(d))` — latency / hang / reset.
//! - [`runner`]: `run_pullprobe(args, stdin)`, `json_lines(bytes)`.
//! - [`netns`]: `NetNs::create()` — a network namespace and veth pair of the test's own.
//! - [`fleetsim`]: `FleetSim::builder(config)…start()` — N simulated nodes' NodePullStatus answering
//!   the controller's assignments through a real kube-apiserver (one client, one watch).
#![allow(dead_code, unused_imports)]
#![allow(clippy::new_without_default)]

pub mod blob_host;
pub mod containerd;
pub mod delay_proxy;
pub mod dns;
pub mod fleet;
pub mod fleetsim;
pub mod images;
pub mod netns;
pub mod pki;
pub mod registry;
pub mod runner;
pub mod scripted;
pub mod token_issuer;

pub use blob_host::{blob_host_down_url, BlobHost};
pub use containerd::{Containerd, CtrOutput, Series};
pub use delay_proxy::{DelayProxy, ProxyMode};
pub use dns::{dns_query, write_hosts_file, Dns, DnsReply};
pub use fleet::ScriptedFleet;
pub use fleetsim::{FleetSim, Seen, SimAgent, SimCell, SimPath};
pub use images::{
    huge_index, skopeo_inspect_raw, ImageFile, InspectOpts, OciImage, PlatformManifest, PushOpts,
    Pushed,
};
pub use netns::NetNs;
pub use pki::{CertKey, Pki, Usage, Validity};
pub use registry::{Registry, RegistryAuth, Storage};
pub use runner::{json_lines, run_pullprobe, run_pullprobe_env};
pub use scripted::{manifest_reply, small_manifest, Reply, Request, ScriptedServer};
pub use token_issuer::TokenIssuer;

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::io::{AsyncRead, AsyncWrite};

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released). Only for servers we
/// cannot hand a listener to (child processes); racy by nature, so callers retry on bind failure.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Copies the directory tree `from` to `to` (files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// sha256 of `data` as `sha256:<hex>`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A byte stream, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// rustls server config (ring provider) from PEM files; `client_ca` requires client certificates.
pub fn tls_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("open cert")
        .collect::<Result<_, _>>()
        .expect("parse cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("parse key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("open client ca") {
                roots
                    .add(c.expect("parse client ca"))
                    .expect("add client ca");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .expect("server cert/key");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A server running on its own thread and tokio runtime; stopped (runtime dropped, all its tasks
/// cancelled, listener closed) on Drop.
pub struct BgServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BgServer {
    /// Binds `bind` (use port 0) and runs `serve(listener)` until Drop.
    pub fn start<F, Fut>(bind: SocketAddr, serve: F) -> BgServer
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let std_listener = StdListener::bind(bind).expect("bind server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local_addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("harness-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("from_std");
                    tokio::select! {
                        _ = serve(listener) => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        BgServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for BgServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request as seen by the hyper-based harness servers (body fully read).
pub type HttpRequest = http::Request<bytes::Bytes>;
/// A response of the hyper-based harness servers.
pub type HttpResponse = http::Response<http_body_util::Full<bytes::Bytes>>;
/// Synchronous request handler shared by the token issuer and the blob host.
pub type HttpHandler = Arc<dyn Fn(HttpRequest) -> HttpResponse + Send + Sync>;

/// Accept loop: HTTP/1.1 (keep-alive) with hyper, over plain TCP or TLS.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: HttpHandler,
) {
    use http_body_util::BodyExt;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        // Like Go's net/http (the real registry): no Nagle, so a response written in two
        // pieces is not held for the client's delayed ACK (a 40 ms stall on loopback).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(tcp),
                Some(a) => match a.accept(tcp).await {
                    Ok(s) => Box::new(s),
                    Err(_) => return,
                },
            };
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = match body.collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(e) => return Err(e),
                        };
                        Ok::<_, hyper::Error>(handler(http::Request::from_parts(parts, body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                .await;
        });
    }
}

/// Builds a response (test helper; never fails for valid status codes).
pub fn http_response(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> HttpResponse {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(http_body_util::Full::new(body.into()))
        .expect("build response")
}
