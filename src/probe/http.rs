//! One probe's HTTP session: one connection per origin (scheme, host, port), opened
//! phase by phase (dns → connect → tls) with each step timed and recorded, then
//! HTTP/1.1 requests over hyper's client connection API.
//!
//! A pooled client (reqwest, Go's http.Client) hides which step failed and how long
//! each took; owning the connection is what makes per-phase timing exact.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use url::Url;

use super::connect;
use super::dns::NodeResolver;
use super::outcome::{Failure, Phase, PhaseRecord, Reason, TlsInfo};
use super::tls;
use super::Timeouts;
use crate::endpoint::SchemePolicy;

/// How many redirects a request may follow (Go's http.Client stops after 10).
pub const MAX_REDIRECTS: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &Url) -> Option<Origin> {
        let https = url.scheme() == "https";
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        Some(Origin { https, host, port })
    }
    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A request to send; bodies are small (token forms) or empty.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

/// A response with its body read (up to a limit).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that finally answered (after redirects).
    pub url: Url,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a repeatable header (e.g. several `WWW-Authenticate`).
    pub fn header_values(&self, name: http::header::HeaderName) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// Per-run state shared by sessions: resolver, timeouts, TLS config.
pub struct SessionContext {
    pub resolver: NodeResolver,
    pub timeouts: Timeouts,
    pub tls: Result<Arc<ClientConfig>, String>,
    pub scheme: SchemePolicy,
    /// Headers added to every request of this endpoint (hosts.toml `[header]`).
    pub extra_headers: Vec<(String, String)>,
    pub user_agent: String,
    /// Which proxy a request URL goes through (Go's `http.ProxyFromEnvironment` as the
    /// runtime's service environment sets it); `None` = direct.
    pub proxy: Option<ProxyFn>,
}

/// Decides the proxy per request URL (the registry, a token realm and a blob host can
/// each be proxied or not, by `NO_PROXY`).
pub type ProxyFn = Arc<dyn Fn(&Url) -> Option<Url> + Send + Sync>;

/// How a connection reaches its origin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    /// Plain-HTTP origin through a proxy: absolute-form requests to the proxy.
    ProxyForward,
}

/// Connections and phase records of one attempt (one endpoint, one credential).
pub struct Session<'a> {
    ctx: &'a SessionContext,
    conns: HashMap<Origin, (SendRequest<Full<Bytes>>, Route)>,
    /// Origins for which HTTPS failed and plain HTTP is used instead (containerd fallback).
    plain_fallback: HashSet<(String, u16)>,
    pub records: Vec<PhaseRecord>,
    /// TLS details per host, first handshake wins.
    pub tls_seen: Vec<TlsInfo>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

impl<'a> Session<'a> {
    pub fn new(ctx: &'a SessionContext) -> Session<'a> {
        Session {
            ctx,
            conns: HashMap::new(),
            plain_fallback: HashSet::new(),
            records: Vec::new(),
            tls_seen: Vec::new(),
        }
    }

    pub fn record(&mut self, name: Phase, host: &str, ok: bool, started: Instant, detail: String) {
        self.records.push(PhaseRecord {
            name,
            host: host.to_string(),
            ok,
            duration_ms: ms(started.elapsed()),
            detail,
        });
    }

    /// Record a failing row for `f` (its message as the detail) and hand `f` back.
    pub fn record_failure(
        &mut self,
        name: Phase,
        host: &str,
        started: Instant,
        f: Failure,
    ) -> Failure {
        self.record(name, host, false, started, f.message.clone());
        f
    }

    pub fn record_ms(
        &mut self,
        name: Phase,
        host: &str,
        ok: bool,
        duration_ms: f64,
        detail: String,
    ) {
        self.records.push(PhaseRecord {
            name,
            host: host.to_string(),
            ok,
            duration_ms,
            detail,
        });
    }

    /// Whether plain HTTP replaced HTTPS for this host (fallback happened).
    pub fn uses_plain_http(&self, url: &Url) -> bool {
        match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => self.plain_fallback.contains(&(h.to_string(), p)),
            _ => false,
        }
    }

    /// Open (or reuse) the connection to `origin`, recording dns/connect/tls. The
    /// returned failure carries the dns/connect/tls phase; callers re-home it.
    async fn connection(
        &mut self,
        origin: &Origin,
    ) -> Result<(SendRequest<Full<Bytes>>, Route), Failure> {
        // Checked out of the map while in use; `send` puts it back afterwards.
        if let Some((mut sender, route)) = self.conns.remove(origin) {
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok((sender, route));
            }
        }
        let target = Url::parse(&format!(
            "{}://{}",
            if origin.https { "https" } else { "http" },
            origin.host_port()
        ))
        .ok();
        let proxy = match (&self.ctx.proxy, &target) {
            (Some(f), Some(t)) => f(t),
            _ => None,
        };
        if let Some(proxy) = proxy {
            return self.connection_via_proxy(origin, &proxy).await;
        }
        let hp = origin.host_port();
        let t = Instant::now();
        let addrs = match self
            .ctx
            .resolver
            .resolve(&origin.host, self.ctx.timeouts.dns)
            .await
        {
            Ok(a) => {
                let detail = a
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                self.record(Phase::Dns, &hp, true, t, detail);
                a
            }
            Err(f) => {
                return Err(self.record_failure(Phase::Dns, &hp, t, f));
            }
        };
        let t = Instant::now();
        let (tcp, peer) =
            match connect::connect(&addrs, origin.port, self.ctx.timeouts.connect).await {
                Ok(c) => c,
                Err(f) => {
                    return Err(self.record_failure(Phase::Connect, &hp, t, f));
                }
            };
        self.record(Phase::Connect, &hp, true, t, peer.to_string());
        let sender = self.finish_connection(origin, tcp).await?;
        Ok((sender, Route::Direct))
    }

    /// TLS (for https origins) and the HTTP/1.1 handshake over an open stream.
    async fn finish_connection(
        &mut self,
        origin: &Origin,
        tcp: tokio::net::TcpStream,
    ) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let hp = origin.host_port();
        let sender = if origin.https {
            let config = match &self.ctx.tls {
                Ok(c) => c.clone(),
                Err(msg) => {
                    let f = Failure::new(Reason::TLSConfigInvalid, msg.clone());
                    return Err(self.record_failure(Phase::Tls, &hp, Instant::now(), f));
                }
            };
            let t = Instant::now();
            match tls::handshake(tcp, &origin.host, config, self.ctx.timeouts.tls).await {
                Ok((stream, info)) => {
                    let detail = format!(
                        "{} {} subject={} issuer={} expires_in_days={}",
                        info.version, info.cipher, info.subject, info.issuer, info.days_to_expiry
                    );
                    self.record(Phase::Tls, &hp, true, t, detail);
                    if !self.tls_seen.iter().any(|i| i.host == info.host) {
                        self.tls_seen.push(info);
                    }
                    handshake_http(stream).await?
                }
                Err(f) => {
                    return Err(self.record_failure(Phase::Tls, &hp, t, f));
                }
            }
        } else {
            handshake_http(tcp).await?
        };
        Ok(sender)
    }

    /// Reach `origin` through an HTTP proxy: the proxy is its own hop (dns, connect),
    /// then a CONNECT tunnel for https origins (Go's transport), or absolute-form
    /// requests for plain-http ones.
    async fn connection_via_proxy(
        &mut self,
        origin: &Origin,
        proxy: &Url,
    ) -> Result<(SendRequest<Full<Bytes>>, Route), Failure> {
        let proxy_host = proxy.host_str().unwrap_or_default().to_string();
        let proxy_port = proxy.port_or_known_default().unwrap_or(80);
        let php = format!("{proxy_host}:{proxy_port}");
        let via = |f: Failure| Failure {
            message: format!("proxy {php}: {}", f.message),
            ..f
        };
        if proxy.scheme() != "http" {
            let f = Failure::new(
                Reason::ProxyConnectFailed,
                format!(
                    "proxy {php}: only http:// proxies are supported (got {}://)",
                    proxy.scheme()
                ),
            );
            return Err(self.record_failure(Phase::Connect, &php, Instant::now(), f));
        }
        let t = Instant::now();
        let addrs = match self
            .ctx
            .resolver
            .resolve(&proxy_host, self.ctx.timeouts.dns)
            .await
        {
            Ok(a) => {
                let detail = a
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                self.record(Phase::Dns, &php, true, t, format!("proxy {detail}"));
                a
            }
            Err(f) => {
                let f = via(f);
                return Err(self.record_failure(Phase::Dns, &php, t, f));
            }
        };
        let t = Instant::now();
        let (mut tcp, peer) =
            match connect::connect(&addrs, proxy_port, self.ctx.timeouts.connect).await {
                Ok(c) => c,
                Err(f) => {
                    let f = via(f);
                    return Err(self.record_failure(Phase::Connect, &php, t, f));
                }
            };
        self.record(Phase::Connect, &php, true, t, format!("proxy {peer}"));
        let auth = proxy_authorization(proxy);
        if !origin.https {
            let sender = handshake_http(tcp).await?;
            return Ok((sender, Route::ProxyForward));
        }
        let hp = origin.host_port();
        let t = Instant::now();
        let mut head = format!("CONNECT {hp} HTTP/1.1\r\nHost: {hp}\r\n");
        if let Some(a) = &auth {
            head.push_str(&format!("Proxy-Authorization: {}\r\n", a.expose()));
        }
        head.push_str("\r\n");
        let answer = tokio::time::timeout(self.ctx.timeouts.connect, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tcp.write_all(head.as_bytes()).await?;
            // Read the response head byte by byte: nothing after it may be consumed,
            // the TLS handshake follows on the same stream.
            let mut buf = Vec::with_capacity(256);
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") && buf.len() < 8192 {
                if tcp.read(&mut byte).await? == 0 {
                    break;
                }
                buf.push(byte[0]);
            }
            Ok::<Vec<u8>, std::io::Error>(buf)
        })
        .await;
        let status_line = match answer {
            Err(_) => {
                let f = Failure::new(
                    Reason::ProxyConnectFailed,
                    format!(
                        "proxy {php}: no answer to CONNECT {hp} within {:?}",
                        self.ctx.timeouts.connect
                    ),
                );
                return Err(self.record_failure(Phase::Connect, &hp, t, f));
            }
            Ok(Err(e)) => {
                let f = Failure::new(
                    Reason::ProxyConnectFailed,
                    format!("proxy {php}: CONNECT {hp} failed: {e}"),
                );
                return Err(self.record_failure(Phase::Connect, &hp, t, f));
            }
            Ok(Ok(buf)) => String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if !code.starts_with('2') {
            let f = Failure::new(
                Reason::ProxyConnectFailed,
                format!("proxy {php} refused CONNECT {hp}: {}", status_line.trim()),
            );
            return Err(self.record_failure(Phase::Connect, &hp, t, f));
        }
        self.record(
            Phase::Connect,
            &hp,
            true,
            t,
            format!("tunnel via proxy {php}"),
        );
        let sender = self.finish_connection(origin, tcp).await?;
        Ok((sender, Route::Direct))
    }

    /// Send one request (no redirect handling). Connection failures come back with
    /// their dns/connect/tls phase; HTTP-level failures as `ResponseTimeout`/`ConnectionLost`.
    pub async fn send(&mut self, req: &Request, max_body: usize) -> Result<Response, Failure> {
        let mut url = req.url.clone();
        // containerd's HTTPS-then-HTTP fallback: only for hosts configured that way.
        let fallback_allowed = self.ctx.scheme == SchemePolicy::HttpsThenHttp;
        if self.uses_plain_http(&url) {
            let _ = url.set_scheme("http");
        }
        let origin = Origin::of(&url).ok_or_else(|| {
            Failure::new(
                Reason::ManifestMalformed,
                format!("cannot request {url}: no host"),
            )
        })?;
        let ((sender, route), used) = match self.connection(&origin).await {
            Ok(s) => (s, origin),
            Err(f) if origin.https && fallback_allowed && is_tls_or_port_failure(&f) => {
                // NewHTTPFallback: retry the same host:port over plain HTTP.
                self.plain_fallback
                    .insert((origin.host.clone(), origin.port));
                let _ = url.set_scheme("http");
                let plain = Origin {
                    https: false,
                    ..origin.clone()
                };
                (self.connection(&plain).await?, plain)
            }
            Err(f) => return Err(f),
        };
        let mut sender = sender;
        let result = self
            .request_on(
                &mut sender,
                req,
                url,
                max_body,
                route == Route::ProxyForward,
            )
            .await;
        // Keep the connection for the next request to this origin unless it broke.
        if result.is_ok() && !sender.is_closed() {
            self.conns.insert(used, (sender, route));
        }
        result
    }

    async fn request_on(
        &mut self,
        sender: &mut SendRequest<Full<Bytes>>,
        req: &Request,
        url: Url,
        max_body: usize,
        absolute_form: bool,
    ) -> Result<Response, Failure> {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        // Through a forward proxy, plain-HTTP requests name the whole URL.
        let path_and_query = if absolute_form {
            url.as_str().to_string()
        } else {
            path_and_query
        };
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(path_and_query);
        let host_header = match url.port() {
            Some(p) => format!("{}:{}", url.host_str().unwrap_or(""), p),
            None => url.host_str().unwrap_or("").to_string(),
        };
        builder = builder.header(http::header::HOST, host_header);
        builder = builder.header(http::header::USER_AGENT, self.ctx.user_agent.as_str());
        for (k, v) in &self.ctx.extra_headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let mut request = builder
            .body(Full::new(req.body.clone().unwrap_or_default()))
            .map_err(|e| {
                Failure::new(
                    Reason::ManifestMalformed,
                    format!("cannot build request: {e}"),
                )
            })?;
        for (k, v) in req.headers.iter() {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        let timeout = self.ctx.timeouts.http;
        let response = match tokio::time::timeout(timeout, sender.send_request(request)).await {
            Err(_) => {
                return Err(Failure::new(
                    Reason::ResponseTimeout,
                    format!("no response from {url} within {timeout:?}"),
                ))
            }
            Ok(Err(e)) => {
                // With TLS 1.3 the server rejects a missing client certificate only after
                // the client's handshake has finished, so the alert surfaces here.
                if let Some(f) = tls::alert_in_chain(url.host_str().unwrap_or_default(), &e) {
                    return Err(f);
                }
                return Err(Failure::new(
                    Reason::ConnectionLost,
                    format!("{} {url}: connection failed: {e}", req.method),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        if let Some(len) = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if req.method != Method::HEAD && len > max_body as u64 {
                return Err(too_large(&url, len, max_body));
            }
        }
        let collected = tokio::time::timeout(timeout, Limited::new(body, max_body).collect()).await;
        let body = match collected {
            Err(_) => {
                return Err(Failure::new(
                    Reason::ResponseTimeout,
                    format!("{url}: the server stopped sending the body (stalled > {timeout:?})"),
                ))
            }
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return Err(too_large(&url, max_body as u64 + 1, max_body));
                }
                return Err(Failure::new(
                    Reason::ConnectionLost,
                    format!("{url}: body read failed: {e}"),
                ));
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            url,
        })
    }

    /// Send and follow redirects. `Authorization` is only ever sent to the origin it
    /// was meant for (the spec's "must not forward Authorization across hosts").
    /// `on_new_host` is the phase that connection failures on a redirected-to host are
    /// reported under (blob hosts → `blob`).
    pub async fn send_following(
        &mut self,
        req: &Request,
        max_body: usize,
        redirect_phase: Phase,
    ) -> Result<Response, RedirectFailure> {
        let first_origin = Origin::of(&req.url);
        let mut current = req.clone();
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(current.url.to_string());
        for hop in 0..=MAX_REDIRECTS {
            let resp = self
                .send(&current, max_body)
                .await
                .map_err(|f| RedirectFailure::Hop {
                    hop,
                    url: current.url.clone(),
                    failure: if hop == 0 {
                        f
                    } else {
                        f.in_phase(redirect_phase)
                    },
                })?;
            if !resp.status.is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.header("location") else {
                return Ok(resp);
            };
            let next = current
                .url
                .join(location)
                .map_err(|e| RedirectFailure::Hop {
                    hop,
                    url: current.url.clone(),
                    failure: Failure::new(
                        Reason::ManifestMalformed,
                        format!("bad redirect Location {location:?}: {e}"),
                    )
                    .in_phase(redirect_phase),
                })?;
            if !seen.insert(next.to_string()) {
                return Err(RedirectFailure::Loop { url: next });
            }
            // 303 and (for POST) 301/302 turn into GET in Go; we only redirect HEAD/GET.
            current.url = next;
            if Origin::of(&current.url) != first_origin {
                current.headers.remove(http::header::AUTHORIZATION);
            }
        }
        Err(RedirectFailure::TooMany {
            url: current.url,
            max: MAX_REDIRECTS,
        })
    }
}

/// Why following redirects failed.
#[derive(Debug)]
pub enum RedirectFailure {
    /// A hop failed (hop 0 = the original request).
    Hop {
        hop: usize,
        url: Url,
        failure: Failure,
    },
    Loop {
        url: Url,
    },
    TooMany {
        url: Url,
        max: usize,
    },
}

fn too_large(url: &Url, len: u64, max: usize) -> Failure {
    Failure::new(
        Reason::ManifestTooLarge,
        format!("{url}: response of {len} bytes exceeds the {max}-byte limit"),
    )
}

fn is_tls_or_port_failure(f: &Failure) -> bool {
    f.phase == Phase::Tls || f.reason == Reason::ConnectRefused
}

async fn handshake_http<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            Failure::new(
                Reason::ConnectionLost,
                format!("HTTP/1.1 handshake failed: {e}"),
            )
        })?;
    // The connection task ends when the session drops its senders.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A header value from text that came from configuration or a server.
pub fn header_value(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}

/// An empty body type for callers that need one.
pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

/// `Proxy-Authorization` from the proxy URL's userinfo (never logged).
fn proxy_authorization(proxy: &Url) -> Option<crate::credentials::Secret> {
    use base64::Engine as _;
    if proxy.username().is_empty() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(proxy.username());
    let pass = proxy.password().map(decode).unwrap_or_default();
    Some(crate::credentials::Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )))
}
