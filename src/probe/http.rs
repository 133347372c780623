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
use super::guard::Guard;
use super::outcome::{Failure, Phase, PhaseRecord, Reason, TlsInfo};
use super::tls;
use super::Timeouts;
use crate::endpoint::SchemePolicy;
use crate::redact::{self, SafeUrl};

/// How many redirects a request may follow (Go's http.Client stops after 10).
pub const MAX_REDIRECTS: usize = 10;

/// Longest `host:port` of a phase row (a DNS name is at most 253 characters).
const MAX_RECORD_HOST_CHARS: usize = 262;

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
///
/// `Debug` is written by hand: the body of a token POST holds a password or refresh
/// token, the headers an `Authorization`, and the URL maybe a presigned query.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Send the endpoint's own headers (hosts.toml `[header]`) with this request: always
    /// for the registry's, per runtime release for a token request (auth.rs).
    pub endpoint_headers: bool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .keys()
            .map(|k| format!("{k}: {}", redact::REDACTED))
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &redact::url(&self.url))
            .field("headers", &headers)
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .finish()
    }
}

impl Request {
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            endpoint_headers: true,
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
    /// The endpoint's host (as in its URL): every other host a registry's answer names
    /// is dialled only where [`guard`] allows; `None` = no such check.
    pub endpoint_host: Option<String>,
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
    /// Which addresses a registry's answer may send this attempt to.
    guard: Guard,
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
            guard: Guard::default(),
        }
    }

    /// Record a phase row. Host and detail are bounded here ([`redact::message`]): a
    /// redirect's host or a server's text cannot make a row long.
    pub fn record(&mut self, name: Phase, host: &str, ok: bool, started: Instant, detail: String) {
        self.record_ms(name, host, ok, ms(started.elapsed()), detail);
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
            host: redact::text_max(host, MAX_RECORD_HOST_CHARS),
            ok,
            duration_ms,
            detail: redact::message(&detail),
        });
    }

    /// The failed TLS row of an HTTPS-then-HTTP host becomes one labelled fallback row:
    /// the runtime meant to fall back (containerd `NewHTTPFallback` for `http://` hosts
    /// with TLS settings and loopback registries), so it is not a failure of the pull.
    fn label_fallback(&mut self, host: &str, f: &Failure) {
        if let Some(r) = self
            .records
            .iter_mut()
            .rev()
            .find(|r| r.host == host && !r.ok && matches!(r.name, Phase::Tls | Phase::Connect))
        {
            r.name = Phase::Tls;
            r.ok = true;
            r.detail = format!(
                "https→http: HTTPS failed ({}), plain HTTP as containerd falls back for this host",
                f.reason
            );
        }
    }

    /// Whether the HTTPS-then-HTTP fallback to plain HTTP happened on any host.
    pub fn fell_back_to_http(&self) -> bool {
        !self.plain_fallback.is_empty()
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
        let tcp = self.dial(&origin.host, origin.port, &hp, None).await?;
        let sender = self.finish_connection(origin, tcp).await?;
        Ok((sender, Route::Direct))
    }

    /// DNS and TCP connect to `host:port`, each recorded under `hp`. For a proxy hop,
    /// `proxy` is the proxy's `host:port`: it prefixes the details and failures.
    async fn dial(
        &mut self,
        host: &str,
        port: u16,
        hp: &str,
        proxy: Option<&str>,
    ) -> Result<tokio::net::TcpStream, Failure> {
        let detail = |d: String| match proxy {
            Some(_) => format!("proxy {d}"),
            None => d,
        };
        let via = |f: Failure| match proxy {
            Some(php) => Failure {
                message: format!("proxy {php}: {}", f.message),
                ..f
            },
            None => f,
        };
        let t = Instant::now();
        let addrs = match self.ctx.resolver.resolve(host, self.ctx.timeouts.dns).await {
            Ok(a) => {
                // A zone the registry controls can answer with any number of addresses.
                let ips = redact::list(a.iter().map(|i| i.to_string()), redact::LIST_FIRST, ",");
                self.record(Phase::Dns, hp, true, t, detail(ips));
                a
            }
            Err(f) => return Err(self.record_failure(Phase::Dns, hp, t, via(f))),
        };
        // A proxy is the node's own choice; every other host is screened.
        let addrs = match proxy {
            Some(_) => addrs,
            None => match self.screen(host, addrs) {
                Ok(a) => a,
                Err(f) => return Err(self.record_failure(Phase::Connect, hp, Instant::now(), f)),
            },
        };
        let t = Instant::now();
        let (tcp, peer) = match connect::connect(&addrs, port, self.ctx.timeouts.connect).await {
            Ok(c) => c,
            Err(f) => return Err(self.record_failure(Phase::Connect, hp, t, via(f))),
        };
        self.record(Phase::Connect, hp, true, t, detail(peer.to_string()));
        Ok(tcp)
    }

    /// The addresses of `host` that may be dialled: all of the endpoint's own (their
    /// classes become allowed), of any other host only those [`Guard::screen`] allows.
    fn screen(
        &mut self,
        host: &str,
        addrs: Vec<std::net::IpAddr>,
    ) -> Result<Vec<std::net::IpAddr>, Failure> {
        match &self.ctx.endpoint_host {
            None => Ok(addrs),
            Some(ep) if ep.eq_ignore_ascii_case(host) => {
                self.guard.endpoint_resolved(&addrs);
                Ok(addrs)
            }
            Some(_) => self.guard.screen(host, addrs),
        }
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
                        "{} {} subject={} issuer={} days_to_expiry={}",
                        info.version,
                        info.cipher,
                        // Certificate names are the server's text.
                        redact::text_max(&info.subject, 128),
                        redact::text_max(&info.issuer, 128),
                        info.days_to_expiry
                    );
                    // A handshake that passed with an expired certificate skipped
                    // verification: say so, that is what the runtime does here too.
                    let detail = if info.days_to_expiry < 0 {
                        format!(
                            "{detail}; the certificate expired {} days ago and was accepted: verification is skipped for this host (skip_verify)",
                            info.days_to_expiry.unsigned_abs()
                        )
                    } else {
                        detail
                    };
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
        let mut tcp = self.dial(&proxy_host, proxy_port, &php, Some(&php)).await?;
        let auth = proxy_authorization(proxy);
        if !origin.https {
            let sender = handshake_http(tcp).await?;
            return Ok((sender, Route::ProxyForward));
        }
        let hp = origin.host_port();
        let t = Instant::now();
        if let Err(f) = connect_tunnel(
            &mut tcp,
            &hp,
            &php,
            auth.as_ref(),
            self.ctx.timeouts.connect,
        )
        .await
        {
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
        self.send_hop(req, max_body, false).await
    }

    /// [`Session::send`] for one hop of a redirect chain: `strip_sensitive` leaves the
    /// sensitive ones among the endpoint's own headers (hosts.toml `[header]`) off.
    async fn send_hop(
        &mut self,
        req: &Request,
        max_body: usize,
        strip_sensitive: bool,
    ) -> Result<Response, Failure> {
        let mut url = req.url.clone();
        // containerd's HTTPS-then-HTTP fallback: only for hosts configured that way.
        let fallback_allowed = self.ctx.scheme == SchemePolicy::HttpsThenHttp;
        if self.uses_plain_http(&url) {
            let _ = url.set_scheme("http");
        }
        let origin = Origin::of(&url).ok_or_else(|| {
            Failure::new(
                Reason::ManifestMalformed,
                format!("cannot request {}: no host", redact::url(&url)),
            )
        })?;
        let ((sender, route), used) = match self.connection(&origin).await {
            Ok(s) => (s, origin),
            Err(f) if origin.https && fallback_allowed && is_tls_or_port_failure(&f) => {
                // NewHTTPFallback: retry the same host:port over plain HTTP.
                self.plain_fallback
                    .insert((origin.host.clone(), origin.port));
                self.label_fallback(&origin.host_port(), &f);
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
                strip_sensitive,
            )
            .await;
        // Keep the connection for the next request to this origin unless it broke.
        if result.is_ok() && !sender.is_closed() {
            self.conns.insert(used, (sender, route));
        }
        result
    }

    /// The hyper request for `req` at `url`: origin- or absolute-form target, `Host`,
    /// `User-Agent`, the endpoint's own headers (less the sensitive ones on a cross-domain
    /// redirect hop), then the request's headers, which win.
    fn build_request(
        &self,
        req: &Request,
        url: &Url,
        absolute_form: bool,
        strip_sensitive: bool,
    ) -> Result<http::Request<Full<Bytes>>, Failure> {
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
        let own_headers = if req.endpoint_headers {
            self.ctx.extra_headers.as_slice()
        } else {
            &[]
        };
        for (k, v) in own_headers {
            if strip_sensitive && is_sensitive_on_redirect(k) {
                continue;
            }
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
        Ok(request)
    }

    async fn request_on(
        &mut self,
        sender: &mut SendRequest<Full<Bytes>>,
        req: &Request,
        url: Url,
        max_body: usize,
        absolute_form: bool,
        strip_sensitive: bool,
    ) -> Result<Response, Failure> {
        let request = self.build_request(req, &url, absolute_form, strip_sensitive)?;
        let timeout = self.ctx.timeouts.http;
        let response = match tokio::time::timeout(timeout, sender.send_request(request)).await {
            Err(_) => {
                return Err(Failure::new(
                    Reason::ResponseTimeout,
                    format!("no response from {} within {timeout:?}", redact::url(&url)),
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
                    format!(
                        "{} {}: connection failed: {e}",
                        req.method,
                        redact::url(&url)
                    ),
                ));
            }
            Ok(Ok(r)) => r,
        };
        let (parts, body) = response.into_parts();
        let body = read_body(&req.method, &parts.headers, body, &url, max_body, timeout).await?;
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            url,
        })
    }

    /// Send and follow redirects, the way Go's `http.Client` (and so containerd) does:
    /// at most [`MAX_REDIRECTS`], http/https targets only, and the endpoint's own headers
    /// (hosts.toml `[header]`) copied to every hop except the sensitive ones once a hop
    /// has left the initial host's domain (sticky since Go 1.23.5, CVE-2024-45336: net/http client.go
    /// `stripSensitiveHeaders`, `shouldCopyHeaderOnRedirect`). The per-request
    /// `Authorization` is stricter than Go: only ever sent to the origin (scheme, host,
    /// port) it was meant for — the spec's "must not forward Authorization across hosts";
    /// containerd's `CheckRedirect` re-authorizes a redirect only for hosts it holds a
    /// token for. `redirect_phase` is the phase that failures on a redirected-to host are
    /// reported under (blob hosts → `blob`).
    pub async fn send_following(
        &mut self,
        req: &Request,
        max_body: usize,
        redirect_phase: Phase,
    ) -> Result<Response, RedirectFailure> {
        let first_origin = Origin::of(&req.url);
        let initial = req.url.clone();
        let mut current = req.clone();
        let mut strip_sensitive = false;
        let mut seen: HashSet<String> = HashSet::new();
        seen.insert(current.url.to_string());
        for hop in 0..=MAX_REDIRECTS {
            let resp = self
                .send_hop(&current, max_body, strip_sensitive)
                .await
                .map_err(|f| RedirectFailure::Hop {
                    hop,
                    url: SafeUrl(current.url.clone()),
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
            let next = next_hop(&current.url, location, redirect_phase).map_err(|failure| {
                RedirectFailure::Hop {
                    hop,
                    url: SafeUrl(current.url.clone()),
                    failure,
                }
            })?;
            if !seen.insert(next.to_string()) {
                return Err(RedirectFailure::Loop { url: SafeUrl(next) });
            }
            // Go compares `reqs[0].URL.Host != req.URL.Host` (host and port as written)
            // before the domain check, and never un-strips.
            if !strip_sensitive
                && host_and_port(&initial) != host_and_port(&next)
                && !is_domain_or_subdomain(
                    next.host_str().unwrap_or_default(),
                    initial.host_str().unwrap_or_default(),
                )
            {
                strip_sensitive = true;
            }
            // 303 and (for POST) 301/302 turn into GET in Go; we only redirect HEAD/GET.
            current.url = next;
            if Origin::of(&current.url) != first_origin {
                current.headers.remove(http::header::AUTHORIZATION);
            }
        }
        Err(RedirectFailure::TooMany {
            url: SafeUrl(current.url),
            max: MAX_REDIRECTS,
        })
    }
}

/// `host[:port]` as in Go's `URL.Host` (the port only when written).
fn host_and_port(u: &Url) -> (Option<&str>, Option<u16>) {
    (u.host_str(), u.port())
}

/// The URL a `Location` sends the request to: resolved against the current one and
/// limited to http/https, as Go's transport allows (`unsupported protocol scheme`).
/// Neither the header nor the URL is quoted in the failure (presigned URLs).
fn next_hop(current: &Url, location: &str, phase: Phase) -> Result<Url, Failure> {
    let reason = if phase == Phase::Blob {
        Reason::BlobUnexpectedStatus
    } else {
        Reason::ManifestUnexpectedStatus
    };
    let next = current.join(location).map_err(|e| {
        Failure::new(
            Reason::ManifestMalformed,
            format!("bad redirect Location ({} bytes): {e}", location.len()),
        )
        .in_phase(phase)
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(Failure::new(
            reason,
            format!(
                "redirect to an unsupported scheme {}:// (only http and https are followed)",
                redact::text_max(next.scheme(), 16)
            ),
        )
        .in_phase(phase));
    }
    if next.host_str().is_none_or(str::is_empty) {
        return Err(Failure::new(reason, "redirect to a URL without a host").in_phase(phase));
    }
    Ok(next)
}

/// The CONNECT exchange on an open connection to an HTTP proxy: the request (with
/// `Proxy-Authorization` from the proxy URL's userinfo, wiped after use), then the answer's
/// head read byte by byte (the TLS handshake follows on the same stream), bounded by
/// `timeout` and 8 KiB. A non-2xx status line is shown sanitized.
async fn connect_tunnel(
    tcp: &mut tokio::net::TcpStream,
    hp: &str,
    php: &str,
    auth: Option<&crate::credentials::Secret>,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut head = zeroize::Zeroizing::new(format!("CONNECT {hp} HTTP/1.1\r\nHost: {hp}\r\n"));
    if let Some(a) = auth {
        // Pieces, not format!: no unwiped copy of the credential.
        head.push_str("Proxy-Authorization: ");
        head.push_str(a.expose());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let answer = tokio::time::timeout(timeout, async {
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
                    timeout
                ),
            );
            return Err(f);
        }
        Ok(Err(e)) => {
            let f = Failure::new(
                Reason::ProxyConnectFailed,
                format!("proxy {php}: CONNECT {hp} failed: {e}"),
            );
            return Err(f);
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
            format!(
                "proxy {php} refused CONNECT {hp}: {}",
                redact::text_max(status_line.trim(), 100)
            ),
        );
        return Err(f);
    }
    Ok(())
}

/// Why following redirects failed.
#[derive(Debug)]
pub enum RedirectFailure {
    /// A hop failed (hop 0 = the original request). URLs are [`SafeUrl`]s: formatting
    /// one never shows a presigned query or userinfo.
    Hop {
        hop: usize,
        url: SafeUrl,
        failure: Failure,
    },
    Loop {
        url: SafeUrl,
    },
    TooMany {
        url: SafeUrl,
        max: usize,
    },
}

fn too_large(url: &Url, len: u64, max: usize) -> Failure {
    Failure::new(
        Reason::ManifestTooLarge,
        format!(
            "{}: response of {len} bytes exceeds the {max}-byte limit",
            redact::url(url)
        ),
    )
}

/// Reads a response body: refused up front when `Content-Length` says it is over
/// `max_body` (not for HEAD), cut off when it grows past it, and bounded in time.
async fn read_body(
    method: &Method,
    headers: &HeaderMap,
    body: hyper::body::Incoming,
    url: &Url,
    max_body: usize,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if *method != Method::HEAD && len > max_body as u64 {
            return Err(too_large(url, len, max_body));
        }
    }
    match tokio::time::timeout(timeout, Limited::new(body, max_body).collect()).await {
        Err(_) => Err(Failure::new(
            Reason::ResponseTimeout,
            format!(
                "{}: the server stopped sending the body (stalled > {timeout:?})",
                redact::url(url)
            ),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(url, max_body as u64 + 1, max_body))
        }
        Ok(Err(e)) => Err(Failure::new(
            Reason::ConnectionLost,
            format!("{}: body read failed: {e}", redact::url(url)),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Headers Go's client drops on a redirect that leaves the initial host's domain
/// (net/http client.go `makeHeadersCopier`: Authorization, Www-Authenticate, Cookie,
/// Cookie2), plus Proxy-Authorization, a proxy credential no registry or blob host
/// should see.
fn is_sensitive_on_redirect(name: &str) -> bool {
    [
        "authorization",
        "www-authenticate",
        "cookie",
        "cookie2",
        "proxy-authorization",
    ]
    .iter()
    .any(|s| name.eq_ignore_ascii_case(s))
}

/// Go's `shouldCopyHeaderOnRedirect(initial, dest)` → `isDomainOrSubdomain(dest, initial)`
/// on the host names (net/http client.go; the `:`/`%` guard is Go ≥ 1.22.1, CVE-2023-45289): equal, or `dest` ends in
/// `"." + initial`; never for an IPv6 literal or zone (`:` or `%` in `dest`).
pub fn is_domain_or_subdomain(sub: &str, parent: &str) -> bool {
    let sub = sub.trim_start_matches('[').trim_end_matches(']');
    let parent = parent.trim_start_matches('[').trim_end_matches(']');
    if sub.eq_ignore_ascii_case(parent) {
        return true;
    }
    if sub.contains([':', '%']) || sub.len() <= parent.len() {
        return false;
    }
    let cut = sub.len() - parent.len();
    match (sub.get(..cut), sub.get(cut..)) {
        (Some(head), Some(tail)) => tail.eq_ignore_ascii_case(parent) && head.ends_with('.'),
        _ => false,
    }
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
    let plain = zeroize::Zeroizing::new(format!(
        "{}:{}",
        decode(proxy.username()),
        proxy.password().map(decode).unwrap_or_default()
    ));
    Some(crate::credentials::Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(plain.as_bytes())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_debug_never_shows_secrets() {
        let mut r = Request::new(
            Method::POST,
            Url::parse("https://u:canary-a@auth.example/token?sig=canary-b").unwrap(),
        );
        r.headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic canary-c"),
        );
        r.body = Some(Bytes::from_static(b"grant_type=password&password=canary-d"));
        let d = format!("{r:?}");
        assert!(!d.contains("canary"), "{d}");
        assert!(
            d.contains("https://auth.example/token") && d.contains("authorization"),
            "{d}"
        );
        assert!(d.contains("<37 bytes>"), "{d}");
    }

    /// net/http client_test.go `TestShouldCopyHeaderOnRedirect` cases, on host names.
    #[test]
    fn domain_or_subdomain_like_go() {
        for (sub, parent, want) in [
            ("foo.com", "foo.com", true),
            ("sub.foo.com", "foo.com", true),
            ("a.b.foo.com", "foo.com", true),
            ("FOO.com", "foo.com", true),
            ("bar.com", "foo.com", false),
            ("notfoo.com", "foo.com", false),
            ("foo.com", "sub.foo.com", false),
            ("[::1]", "[::1]", true),
            ("::1%.www.example.com", "www.example.com", false),
            ("é.foo.com", "foo.com", true),
            ("x", "é", false),
            ("", "foo.com", false),
        ] {
            assert_eq!(
                is_domain_or_subdomain(sub, parent),
                want,
                "{sub} vs {parent}"
            );
        }
    }

    #[test]
    fn next_hop_allows_only_http_and_https() {
        let base = Url::parse("https://reg.example/v2/a/blobs/x").unwrap();
        assert_eq!(
            next_hop(&base, "/other", Phase::Blob).unwrap().as_str(),
            "https://reg.example/other"
        );
        assert!(next_hop(&base, "http://cdn.example/x?sig=1", Phase::Blob).is_ok());
        for bad in [
            "ftp://cdn/x",
            "file:///etc/passwd",
            "data:,x",
            "javascript:alert(1)",
            "http://",
        ] {
            let f = next_hop(&base, bad, Phase::Blob).unwrap_err();
            assert_eq!(f.phase, Phase::Blob, "{bad}");
            assert!(!f.message.contains("passwd"), "{}", f.message);
        }
    }
}
