//! SCRIPTED HTTP/1.1 server — only for responses a real registry cannot be made to give (429 with
//! Retry-After, malformed challenges or token JSON, stalls mid-body, huge manifests, redirect loops,
//! an HTML captive page at /v2/, …). Everything a real registry can do is tested against
//! `docker-registry` instead.
//!
//! A handler closure (or a list of canned replies) decides each answer; every request is recorded
//! (method, path with query, headers, body) for asserts. Plain TCP or TLS; keep-alive supported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pki::CertKey;
use super::{tls_server_config, BgServer, Io};

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A complete response; `Content-Length` is added unless present in `headers`.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Status line and headers with `Content-Length: declared_len`, then `body_prefix`, then nothing
    /// more while the connection stays open.
    StallMidBody {
        status: u16,
        headers: Vec<(String, String)>,
        declared_len: usize,
        body_prefix: Vec<u8>,
    },
    /// These bytes verbatim, then close.
    Raw(Vec<u8>),
    /// Close the connection without answering.
    Close,
    /// Never answer; keep the connection open.
    Hang,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    /// Adds a header (Full and StallMidBody).
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        match &mut self {
            Reply::Full { headers, .. } | Reply::StallMidBody { headers, .. } => {
                headers.push((k.into(), v.into()))
            }
            _ => {}
        }
        self
    }
    /// Sets the body (Full).
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Reply {
        if let Reply::Full { body, .. } = &mut self {
            *body = b.into();
        }
        self
    }
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply::status(status)
            .header("Content-Type", "application/json")
            .body(v.to_string())
    }
    /// A well-formed `/v2/` answer of a registry without auth.
    pub fn v2_ok() -> Reply {
        Reply::json(200, &serde_json::json!({}))
            .header("Docker-Distribution-API-Version", "registry/2.0")
    }
    /// 401 with a Bearer challenge.
    pub fn bearer_challenge(realm: &str, service: &str, scope: Option<&str>) -> Reply {
        let mut c = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
        if let Some(s) = scope {
            c += &format!(",scope=\"{s}\"");
        }
        Reply::json(
            401,
            &serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}),
        )
        .header("WWW-Authenticate", &c)
        .header("Docker-Distribution-API-Version", "registry/2.0")
    }
    /// 429 with `Retry-After` (seconds or an HTTP date).
    pub fn too_many_requests(retry_after: &str) -> Reply {
        Reply::json(
            429,
            &serde_json::json!({"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited"}]}),
        )
        .header("Retry-After", retry_after)
    }
    /// 401 whose `WWW-Authenticate` cannot be parsed (unterminated quote, no realm).
    pub fn malformed_www_authenticate() -> Reply {
        Reply::status(401)
            .header(
                "WWW-Authenticate",
                "Bearer realm=\"http://127.0.0.1:1/token,service",
            )
            .header("Docker-Distribution-API-Version", "registry/2.0")
    }
    /// 200 `application/json` that is not valid JSON (a token endpoint's broken answer).
    pub fn malformed_token_json() -> Reply {
        Reply::status(200)
            .header("Content-Type", "application/json")
            .body("{\"token\": \"abc\", \"expires_in\": ")
    }
    /// 200 JSON without `token`/`access_token`.
    pub fn token_json_without_token() -> Reply {
        Reply::json(200, &serde_json::json!({"expires_in": 300}))
    }
    /// Headers announce `declared_len` bytes, `sent` bytes of `x` follow, then a stall.
    pub fn stall_mid_body(
        status: u16,
        content_type: &str,
        declared_len: usize,
        sent: usize,
    ) -> Reply {
        Reply::StallMidBody {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            declared_len,
            body_prefix: vec![b'x'; sent.min(declared_len)],
        }
    }
    /// A syntactically valid OCI manifest padded with an annotation to `size` bytes (e.g. 10 MB).
    pub fn big_manifest(size: usize) -> Reply {
        let head = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\",\"size\":2},\"layers\":[],\"annotations\":{\"pad\":\"";
        let tail = "\"}}";
        let pad = size.saturating_sub(head.len() + tail.len());
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(head.as_bytes());
        body.resize(head.len() + pad, b'a');
        body.extend_from_slice(tail.as_bytes());
        let digest = super::sha256_digest(&body);
        Reply::status(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &digest)
            .body(body)
    }
    /// A redirect (`status` 301/302/307/308) to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::status(status).header("Location", location)
    }
    /// A captive-portal style HTML page.
    pub fn html_page() -> Reply {
        Reply::status(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .body("<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Please sign in</h1></body></html>")
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

pub struct ScriptedServer {
    server: BgServer,
    log: Arc<Mutex<Vec<Request>>>,
    tls: bool,
}

impl ScriptedServer {
    /// Plain HTTP; `handler` decides every answer.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> ScriptedServer {
        Self::start_inner(None, Arc::new(handler))
    }
    /// HTTPS with `cert` (e.g. `pki.server`).
    pub fn start_tls(
        cert: &CertKey,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        Self::start_inner(
            Some(tls_server_config(&cert.cert, &cert.key, None)),
            Arc::new(handler),
        )
    }
    /// The n-th request gets `replies[n]`; the last reply repeats.
    pub fn canned(replies: Vec<Reply>) -> ScriptedServer {
        assert!(!replies.is_empty(), "at least one reply");
        let n = AtomicUsize::new(0);
        Self::start(move |_| {
            let i = n.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
            replies[i].clone()
        })
    }
    /// `/v2/` answers 200 with an HTML page (captive portal / wrong server), other paths 404.
    pub fn html_v2() -> ScriptedServer {
        Self::start(|r| {
            if r.path == "/v2/" || r.path == "/v2" {
                Reply::html_page()
            } else {
                Reply::status(404)
                    .header("Content-Type", "text/html")
                    .body("<html>404</html>")
            }
        })
    }
    /// Every request is redirected (307) to `/loop/<n+1>` on the same server, forever.
    pub fn redirect_loop() -> ScriptedServer {
        Self::start(|r| {
            let n: u64 = r
                .path
                .strip_prefix("/loop/")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Reply::redirect(307, &format!("/loop/{}", n + 1))
        })
    }

    /// Plain HTTP on `addr` (e.g. an address of a network namespace's veth pair).
    pub fn start_on(
        addr: std::net::SocketAddr,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        Self::start_at(addr, None, Arc::new(handler))
    }

    /// A registry that answers every 401 challenge with a fresh `service=`, its realm on
    /// the host name the request named, and tokens of `token_bytes(host)` bytes; the latest
    /// token of its host is good for 4 requests (one check), then the next challenge comes
    /// with a new service, so every check caches a new token. With a good token the
    /// manifest (a tiny image) is served. The token flood of issue 14.
    pub fn fresh_service_tokens(
        token_bytes: impl Fn(&str) -> usize + Send + Sync + 'static,
    ) -> ScriptedServer {
        let current: Mutex<std::collections::HashMap<String, String>> = Mutex::default();
        let uses: Mutex<std::collections::HashMap<String, usize>> = Mutex::default();
        let n = AtomicUsize::new(0);
        let (body, digest, _) = small_manifest();
        Self::start(move |r| {
            let host = r.header("host").unwrap_or("unknown").to_string();
            if let Some(q) = r.path.strip_prefix("/token?") {
                let service = q
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("service="))
                    .unwrap_or_default();
                let mut token = format!("{service}.");
                token.extend(std::iter::repeat_n('x', token_bytes(&host)));
                return Reply::json(200, &serde_json::json!({"token": token, "expires_in": 300}));
            }
            let latest = current.lock().expect("lock").get(&host).cloned();
            let presented = r
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| t.split('.').next());
            let fresh = presented.is_some() && presented == latest.as_deref() && {
                let mut u = uses.lock().expect("lock");
                let n = u.entry(host.clone()).or_insert(0);
                *n += 1;
                *n <= 4
            };
            if fresh && r.path.contains("/blobs/") {
                return Reply::status(200);
            }
            if fresh && r.path.contains("/manifests/") {
                return manifest_reply(&body, &digest);
            }
            let service = format!("svc-{}", n.fetch_add(1, Ordering::SeqCst));
            current
                .lock()
                .expect("lock")
                .insert(host.clone(), service.clone());
            uses.lock().expect("lock").insert(host.clone(), 0);
            Reply::bearer_challenge(&format!("http://{host}/token"), &service, None)
        })
    }

    fn start_inner(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> ScriptedServer {
        Self::start_at("127.0.0.1:0".parse().expect("addr"), tls, handler)
    }

    fn start_at(
        addr: std::net::SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> ScriptedServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let lg = log.clone();
        let is_tls = tls.is_some();
        let server = BgServer::start(addr, move |l| async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let (acceptor, handler, lg) = (acceptor.clone(), handler.clone(), lg.clone());
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        None => Box::new(tcp),
                        Some(a) => match a.accept(tcp).await {
                            Ok(s) => Box::new(s),
                            Err(_) => return,
                        },
                    };
                    serve_conn(io, handler, lg).await;
                });
            }
        });
        ScriptedServer {
            server,
            log,
            tls: is_tls,
        }
    }

    /// `http(s)://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.host_port()
        )
    }
    /// `ADDR:PORT` (`127.0.0.1:PORT` unless started elsewhere).
    pub fn host_port(&self) -> String {
        self.server.addr().to_string()
    }
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("lock").clone()
    }
    pub fn request_count(&self) -> usize {
        self.log.lock().expect("lock").len()
    }
}

/// Reads one request head + Content-Length body. None on EOF/garbage.
async fn read_request(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        let mut chunk = [0u8; 8192];
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn head_bytes(status: u16, headers: &[(String, String)], len: usize) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        h += &format!("{k}: {v}\r\n");
    }
    if !has_len {
        h += &format!("Content-Length: {len}\r\n");
    }
    h += "\r\n";
    h.into_bytes()
}

pub(crate) async fn serve_conn(
    mut io: Box<dyn Io>,
    handler: Handler,
    log: Arc<Mutex<Vec<Request>>>,
) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut io, &mut buf).await {
        log.lock().expect("lock").push(req.clone());
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let is_head = req.method == "HEAD";
        match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = head_bytes(status, &headers, body.len());
                if !is_head {
                    out.extend_from_slice(&body);
                }
                if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                    return;
                }
                if close {
                    let _ = io.shutdown().await;
                    return;
                }
            }
            Reply::StallMidBody {
                status,
                headers,
                declared_len,
                body_prefix,
            } => {
                let mut out = head_bytes(status, &headers, declared_len);
                out.extend_from_slice(&body_prefix);
                let _ = io.write_all(&out).await;
                let _ = io.flush().await;
                std::future::pending::<()>().await;
            }
            Reply::Raw(bytes) => {
                let _ = io.write_all(&bytes).await;
                let _ = io.shutdown().await;
                return;
            }
            Reply::Close => return,
            Reply::Hang => std::future::pending::<()>().await,
        }
    }
}

/// A tiny valid image: manifest JSON and its digest, config digest.
pub fn small_manifest() -> (String, String, String) {
    let config = "sha256:".to_string() + &"a".repeat(64);
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": []
    })
    .to_string();
    let digest = super::sha256_digest(body.as_bytes());
    (body, digest, config)
}

/// A 200 answer with `body` as an OCI image manifest of `digest`.
pub fn manifest_reply(body: &str, digest: &str) -> Reply {
    Reply::status(200)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .header("Docker-Content-Digest", digest)
        .body(body.to_string())
}
