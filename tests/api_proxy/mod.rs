//! A fault-injecting proxy in front of the REAL kube-apiserver (tests/kube): it terminates
//! TLS with the harness PKI's server certificate, forwards every request over TLS to the
//! real server (streaming, so watches work), and — on demand — answers the agent's
//! `PATCH nodes/NAME/status` itself with a status code and `Retry-After` (what an
//! overloaded or failing API server sends), holds those writes forever, or delays every
//! request (a slow server). Every request is logged with its time and what was answered.
//!
//! A real API server cannot be told to answer 429 or 500 on demand; everything else the
//! agent sees (authn, RBAC, the Node, the audit log) is the real server's.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;

use crate::harness::{tls_server_config, BgServer, CertKey};

/// What the proxy does to the agent's node-status writes (and, for `Delay`, to everything).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Answer node-status PATCHes with these codes in turn (the first, the second, …,
    /// round again), a Status body, and `Retry-After` if given.
    Status {
        codes: Vec<u16>,
        retry_after: Option<u64>,
    },
    /// Hold node-status PATCHes without answering.
    Hang,
    /// Forward every request after this delay (a slow API server).
    Delay(Duration),
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Unix seconds.
    pub at: f64,
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The status answered (0: no answer, connection failed upstream or held).
    pub status: u16,
    /// Answered by the proxy itself (a fault), not the API server.
    pub injected: bool,
}

impl Seen {
    pub fn is_status_write(&self) -> bool {
        self.method == "PATCH"
            && self.path.starts_with("/api/v1/nodes/")
            && self.path.ends_with("/status")
    }
}

struct State {
    fault: Mutex<Fault>,
    log: Mutex<Vec<Seen>>,
    upstream: SocketAddr,
    upstream_tls: Arc<rustls::ClientConfig>,
}

pub struct ApiProxy {
    state: Arc<State>,
    server: BgServer,
}

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = hyper::client::conn::http1::SendRequest<Incoming>;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ApiProxy {
    /// Listens on 127.0.0.1:random with `cert` (e.g. `pki.server`), forwarding to `upstream`
    /// whose certificate chains to `upstream_ca_pem`.
    pub fn start(cert: &CertKey, upstream: SocketAddr, upstream_ca_pem: &str) -> ApiProxy {
        let state = Arc::new(State {
            fault: Mutex::new(Fault::None),
            log: Mutex::new(Vec::new()),
            upstream,
            upstream_tls: client_tls(upstream_ca_pem),
        });
        let tls = tls_server_config(&cert.cert, &cert.key, None);
        let st = state.clone();
        let server = BgServer::start("127.0.0.1:0".parse().expect("addr"), move |l| {
            accept_loop(l, tokio_rustls::TlsAcceptor::from(tls), st)
        });
        ApiProxy { state, server }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.addr().port())
    }

    pub fn set_fault(&self, f: Fault) {
        *self.state.fault.lock().expect("lock") = f;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.log.lock().expect("lock").clone()
    }

    /// The node-status writes seen since `since` (Unix seconds).
    pub fn status_writes_since(&self, since: f64) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.is_status_write() && s.at >= since)
            .collect()
    }
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn accept_loop(
    l: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            // One upstream connection per client connection (HTTP/1.1 serves one request
            // at a time on a connection), opened lazily and again after it breaks.
            let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> = Arc::default();
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                handle(req, state.clone(), upstream.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn log(state: &State, method: &str, path: &str, status: u16, injected: bool) {
    state.log.lock().expect("lock").push(Seen {
        at: now(),
        method: method.to_string(),
        path: path.to_string(),
        status,
        injected,
    });
}

/// A Status body like the API server's own (`NewTooManyRequests`, `NewInternalError`).
fn status_reply(code: u16, retry_after: Option<u64>) -> http::Response<Body> {
    let reason = match code {
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    };
    let mut status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "injected by the test proxy", "reason": reason, "code": code});
    if let Some(s) = retry_after {
        status["details"] = serde_json::json!({"retryAfterSeconds": s});
    }
    let mut b = http::Response::builder()
        .status(code)
        .header("Content-Type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("Retry-After", s.to_string());
    }
    b.body(
        Full::new(Bytes::from(status.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .expect("response")
}

async fn handle(
    req: http::Request<Incoming>,
    state: Arc<State>,
    upstream: Arc<tokio::sync::Mutex<Option<Upstream>>>,
) -> Result<http::Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let is_write =
        method == "PATCH" && path.starts_with("/api/v1/nodes/") && path.ends_with("/status");
    let fault = state.fault.lock().expect("lock").clone();
    match (&fault, is_write) {
        (Fault::Status { codes, retry_after }, true) => {
            let n = state
                .log
                .lock()
                .expect("lock")
                .iter()
                .filter(|s| s.injected)
                .count();
            let code = codes.get(n % codes.len().max(1)).copied().unwrap_or(500);
            log(&state, &method, &path, code, true);
            return Ok(status_reply(code, *retry_after));
        }
        (Fault::Hang, true) => {
            log(&state, &method, &path, 0, true);
            std::future::pending::<()>().await;
        }
        (Fault::Delay(d), _) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let mut guard = upstream.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        match connect(&state).await {
            Ok(s) => *guard = Some(s),
            Err(e) => {
                log(&state, &method, &path, 0, false);
                return Err(e);
            }
        }
    }
    let sender = guard.as_mut().expect("connected");
    match sender.send_request(req).await {
        Ok(resp) => {
            log(&state, &method, &path, resp.status().as_u16(), false);
            Ok(resp.map(|b| b.boxed()))
        }
        Err(e) => {
            *guard = None;
            log(&state, &method, &path, 0, false);
            Err(Box::new(e))
        }
    }
}

async fn connect(state: &State) -> Result<Upstream, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::net::TcpStream::connect(state.upstream).await?;
    let name = rustls_pki_types::ServerName::IpAddress(state.upstream.ip().into());
    let tls = tokio_rustls::TlsConnector::from(state.upstream_tls.clone())
        .connect(name, tcp)
        .await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
