//! One attempt's request flow (one endpoint, one credential): the runtime's sequence —
//! containerd's HEAD-first resolve reacting to the 401, or CRI-O's `/v2/` ping then GET —
//! then the platform and blob phases, recording each phase on the session.

use std::time::Instant;

use http::{HeaderValue, Method, StatusCode};
use url::Url;

use super::auth::TokenCache;
use super::auth::{self, Authorization, CredentialRef};
use super::blob;
use super::challenge::parse_challenges;
use super::http::{RedirectFailure, Request, Response, Session};
use super::manifest::{self, MAX_MANIFEST_SIZE};
use super::options::{Depth, ProbeOptions};
use super::outcome::{Failure, ManifestInfo, Phase, RateLimit, Reason};
use super::platform;
use crate::endpoint::{Endpoint, SchemePolicy};
use crate::redact;
use crate::reference::ImageRef;
use crate::runtime::Runtime;

/// A successful manifest answer at the resolve step.
struct Resolved {
    resp: Response,
    /// HEAD, or GET when the runtime GETs or the registry refused HEAD.
    method: Method,
    url: Url,
    /// When the manifest request (after any auth round trip) started.
    started: Instant,
}

/// `Content-Type` without parameters.
fn content_type(resp: &Response) -> String {
    // The server's text: it reaches messages and details, so sanitized and short.
    resp.header("content-type")
        .map(|c| redact::text_max(c.split(';').next().unwrap_or(c).trim(), 128))
        .unwrap_or_default()
}

/// dns/connect/handshake failures were recorded when the connection was opened;
/// anything later (a post-handshake TLS alert, a stalled or broken response) gets its
/// own row here.
fn record_late_failure(session: &mut Session<'_>, host: &str, t: Instant, f: Failure) -> Failure {
    let recorded_on_connect = matches!(f.phase, Phase::Dns | Phase::Connect)
        || (f.phase == Phase::Tls && f.reason != Reason::TLSClientCertRequired);
    if !recorded_on_connect {
        session.record(f.phase, host, false, t, f.message.clone());
    }
    f
}

/// The per-attempt request flow.
pub(super) struct Flow<'a> {
    pub(super) options: &'a ProbeOptions,
    pub(super) tokens: &'a TokenCache,
    pub(super) image: &'a ImageRef,
    pub(super) ep: &'a Endpoint,
    pub(super) cred: Option<&'a CredentialRef<'a>>,
    pub(super) authorization: Option<Authorization>,
    pub(super) ratelimit: Option<RateLimit>,
}

impl Flow<'_> {
    /// The API root as a string, with the scheme the endpoint is configured for.
    fn api_base(&self) -> String {
        let mut root = self.ep.api_root.clone();
        if self.ep.scheme == SchemePolicy::Http {
            let _ = root.set_scheme("http");
        }
        root.as_str().trim_end_matches('/').to_string()
    }

    /// The repository path at this endpoint: CRI-O's `location` may rewrite it.
    fn repo(&self) -> &str {
        self.ep.repository.as_deref().unwrap_or(&self.image.path)
    }

    fn url(&self, suffix: &str) -> Result<Url, Failure> {
        let base = self.api_base();
        let mut u = Url::parse(&format!("{base}/{}/{suffix}", self.repo())).map_err(|e| {
            Failure::new(
                Reason::NoUsableEndpoint,
                format!("cannot build a URL from {}: {e}", redact::url_text(&base)),
            )
        })?;
        if let Some(ns) = &self.ep.namespace {
            u.query_pairs_mut().append_pair("ns", ns);
        }
        Ok(u)
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repo())
    }

    fn registry_host(&self) -> String {
        let u = &self.ep.api_root;
        format!(
            "{}:{}",
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        )
    }

    fn auth_header(&self) -> Option<HeaderValue> {
        self.authorization.as_ref().and_then(|a| a.header_value())
    }

    /// The attempt: resolve the reference (the runtime's request sequence), describe the
    /// manifest, then (for image checks) the platform and blob phases.
    pub(super) async fn run(&mut self, session: &mut Session<'_>) -> Result<ManifestInfo, Failure> {
        let host = self.registry_host();
        let scope = self.scope();
        self.authorization = self.tokens.cached_authorization(&host, &scope, self.cred);
        let resolved = self.resolve(session, &host).await?;
        let (mut info, body) = self.describe(session, &host, resolved).await?;
        if self.options.depth == Depth::Path {
            return Ok(info);
        }
        let Some(manifest_body) = self.platform_phase(session, &host, &mut info, body).await?
        else {
            return Ok(info);
        };
        if self.options.no_blob {
            return Ok(info);
        }
        self.blob_phase(session, &host, &mut info, manifest_body)
            .await?;
        Ok(info)
    }

    /// Resolve: containerd HEADs the manifest and reacts to the 401 (GET on 405); CRI-O
    /// pings `/v2/` and GETs it. Records the auth row and returns the answer.
    async fn resolve(
        &mut self,
        session: &mut Session<'_>,
        host: &str,
    ) -> Result<Resolved, Failure> {
        let runtime = self.options.runtime;
        let mut auth_recorded = false;
        if runtime == Runtime::Crio {
            self.ping(session).await?;
            auth_recorded = true;
        }
        let mut method = match runtime {
            Runtime::Containerd => Method::HEAD,
            Runtime::Crio => Method::GET,
        };
        let url = self.url(&format!("manifests/{}", self.image.reference()))?;
        let mut authorized_once = false;
        let mut t = Instant::now();
        loop {
            let req = self.manifest_request(method.clone(), &url);
            let resp = match self.send_manifest(session, &req).await {
                Ok(r) => r,
                Err(f) => return Err(record_late_failure(session, host, t, f)),
            };
            if let Some(rl) = manifest::rate_limit(&resp) {
                self.ratelimit = Some(rl);
            }
            match resp.status {
                StatusCode::UNAUTHORIZED => {
                    if authorized_once {
                        let f = self.rejected_after_auth(&resp);
                        return Err(session.record_failure(Phase::Auth, host, t, f));
                    }
                    authorized_once = true;
                    match self.challenge(session, &resp).await {
                        Ok((detail, auth_host)) => {
                            session.record(Phase::Auth, &auth_host, true, t, detail);
                            auth_recorded = true;
                        }
                        Err(f) => return Err(session.record_failure(Phase::Auth, host, t, f)),
                    }
                    t = Instant::now();
                }
                StatusCode::METHOD_NOT_ALLOWED if method == Method::HEAD => method = Method::GET,
                s if s.is_success() => {
                    if !auth_recorded {
                        self.record_unchallenged(session, host);
                    }
                    return Ok(Resolved {
                        resp,
                        method,
                        url,
                        started: t,
                    });
                }
                _ => {
                    if !auth_recorded {
                        self.record_unchallenged(session, host);
                    }
                    let f = self.manifest_failure(session, &req, resp).await;
                    return Err(session.record_failure(f.phase, host, t, f));
                }
            }
        }
    }

    fn manifest_request(&self, method: Method, url: &Url) -> Request {
        let mut req = Request::new(method, url.clone());
        req.headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static(manifest::accept(self.options.runtime)),
        );
        if let Some(a) = self.auth_header() {
            req.headers.insert(http::header::AUTHORIZATION, a);
        }
        req
    }

    /// The resolved manifest's digest, media type and size — a HEAD without a digest or
    /// length cannot be trusted: GET and hash it (resolver.go) — checked against the
    /// reference's digest, containerd's size limit and the media type. Returns the body
    /// when one was fetched.
    async fn describe(
        &mut self,
        session: &mut Session<'_>,
        host: &str,
        r: Resolved,
    ) -> Result<(ManifestInfo, Option<bytes::Bytes>), Failure> {
        let t = r.started;
        let fail = |session: &mut Session<'_>, f: Failure| {
            Err(session.record_failure(Phase::Manifest, host, t, f))
        };
        let has_len = r.resp.header("content-length").is_some();
        let announced = match announced_digest(&r.resp, has_len) {
            Ok(a) => a,
            Err(f) => return fail(session, f),
        };
        let mut media_type = content_type(&r.resp);
        let mut size = r
            .resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        let mut body = None;
        let digest = if r.method == Method::GET {
            let d = manifest::sha256_digest(&r.resp.body);
            if let Some(a) = announced
                .as_ref()
                .filter(|a| a.starts_with("sha256:") && **a != d)
            {
                let f = Failure::new(
                    Reason::ManifestMalformed,
                    format!("Docker-Content-Digest {a} does not match the body ({d})"),
                );
                return fail(session, f);
            }
            size = r.resp.body.len() as u64;
            body = Some(r.resp.body.clone());
            d
        } else if let (Some(d), true) = (announced, has_len) {
            d
        } else {
            let b = match self.get_manifest(session, &r.url, None).await {
                Ok(b) => b,
                Err(f) => return fail(session, f),
            };
            if b.header("content-type").is_some() {
                media_type = content_type(&b);
            }
            size = b.body.len() as u64;
            body = Some(b.body.clone());
            manifest::sha256_digest(&b.body)
        };
        if let Some(f) = self.manifest_problem(host, &digest, size, &media_type) {
            return fail(session, f);
        }
        let rl = self
            .ratelimit
            .as_ref()
            .and_then(|r| r.remaining)
            .map(|r| format!(" ratelimit-remaining={r}"))
            .unwrap_or_default();
        let detail = format!("{digest} {media_type} {size} bytes{rl}");
        session.record(Phase::Manifest, host, true, t, detail);
        let info = ManifestInfo {
            digest,
            media_type,
            size,
            platform_digest: None,
            config_digest: None,
        };
        Ok((info, body))
    }

    /// A digest other than the reference's, a manifest over containerd's limit, or an
    /// answer that is not a manifest.
    fn manifest_problem(
        &self,
        host: &str,
        digest: &str,
        size: u64,
        media_type: &str,
    ) -> Option<Failure> {
        if let Some(d) = &self.image.digest {
            if d != digest && digest.starts_with(d.split(':').next().unwrap_or("")) {
                return Some(Failure::new(
                    Reason::ManifestMalformed,
                    format!("registry returned digest {digest} for {d}"),
                ));
            }
        }
        if manifest::is_schema1(media_type) && manifest::refuses_schema1(self.options.rules()) {
            return Some(Failure::new(
                Reason::ManifestMalformed,
                format!("{host} serves a schema 1 manifest ({media_type}): containerd 2.x no longer pulls these; rebuild or copy the image as Docker schema 2 or OCI"),
            ));
        }
        if size > MAX_MANIFEST_SIZE as u64 {
            return Some(Failure::new(
                Reason::ManifestTooLarge,
                format!(
                    "manifest of {size} bytes exceeds containerd's {MAX_MANIFEST_SIZE}-byte limit"
                ),
            ));
        }
        if media_type.is_empty() || media_type.contains("json") || manifest::is_schema1(media_type)
        {
            return None;
        }
        Some(if media_type.starts_with("text/html") {
            Failure::new(
                Reason::AuthNotRegistry,
                format!("{host} answered the manifest request with an HTML page: not a registry API (a proxy login or captive portal?)"),
            )
        } else {
            Failure::new(
                Reason::ManifestMalformed,
                format!("{host} answered with Content-Type {media_type}, not a manifest"),
            )
        })
    }

    /// platform: an index must hold the node's platform; returns the platform manifest's
    /// body (or the manifest's own), `None` when the blob phase is skipped.
    async fn platform_phase(
        &mut self,
        session: &mut Session<'_>,
        host: &str,
        info: &mut ManifestInfo,
        body: Option<bytes::Bytes>,
    ) -> Result<Option<Option<bytes::Bytes>>, Failure> {
        let opts = self.options;
        if !(manifest::is_index(&info.media_type) || info.media_type.is_empty()) {
            return Ok(Some(body));
        }
        let t = Instant::now();
        let in_platform = |session: &mut Session<'_>, f: Failure| {
            Err(session
                .record_failure(Phase::Platform, host, t, f)
                .in_phase(Phase::Platform))
        };
        let index_body = match body {
            Some(b) => b,
            None => match self
                .fetch_by_digest(session, &info.digest, &info.media_type)
                .await
            {
                Ok(b) => b,
                Err(f) => return in_platform(session, f),
            },
        };
        let parsed = match manifest::parse_body(&index_body) {
            Ok(p) => p,
            Err(f) => return Err(session.record_failure(Phase::Platform, host, t, f)),
        };
        if parsed.manifests.is_empty() && !manifest::is_index(&info.media_type) {
            return Ok(Some(Some(index_body)));
        }
        let Some(entry) = platform::select(&opts.platform, &parsed.manifests) else {
            let f = Failure::new(
                Reason::PlatformMissing,
                format!(
                    "the index has no manifest for {} (it has: {})",
                    opts.platform,
                    platform::list(&parsed.manifests)
                ),
            );
            return Err(session.record_failure(Phase::Platform, "", t, f));
        };
        info.platform_digest = Some(entry.digest.clone());
        let chosen = format!("{} → {}", opts.platform, entry.digest);
        if opts.no_blob {
            session.record(Phase::Platform, "", true, t, chosen);
            return Ok(None);
        }
        let mt = entry
            .media_type
            .clone()
            .unwrap_or_else(|| manifest::MEDIA_OCI_MANIFEST.to_string());
        let b = match self.fetch_by_digest(session, &entry.digest, &mt).await {
            Ok(b) => b,
            Err(f) => return in_platform(session, f),
        };
        session.record(Phase::Platform, "", true, t, chosen);
        Ok(Some(Some(b)))
    }

    /// blob: HEAD the config blob, following redirects across hosts.
    async fn blob_phase(
        &mut self,
        session: &mut Session<'_>,
        host: &str,
        info: &mut ManifestInfo,
        manifest_body: Option<bytes::Bytes>,
    ) -> Result<(), Failure> {
        let t = Instant::now();
        let in_blob = |session: &mut Session<'_>, f: Failure| {
            Err(session
                .record_failure(Phase::Blob, host, t, f)
                .in_phase(Phase::Blob))
        };
        let body = match manifest_body {
            Some(b) => b,
            None => match self
                .fetch_by_digest(session, &info.digest, &info.media_type)
                .await
            {
                Ok(b) => b,
                Err(f) => return in_blob(session, f),
            },
        };
        let config = match manifest::parse_body(&body).map(|m| m.config_digest) {
            Ok(Some(c)) => c,
            Ok(None) => {
                let f = Failure::new(
                    Reason::ManifestMalformed,
                    "the image manifest names no config blob",
                );
                return in_blob(session, f);
            }
            Err(f) => return in_blob(session, f),
        };
        info.config_digest = Some(config.clone());
        let url = self.url(&format!("blobs/{config}"))?;
        match blob::check(session, url, self.auth_header()).await {
            Ok((detail, blob_host)) => {
                session.record(
                    Phase::Blob,
                    &blob_host,
                    true,
                    t,
                    format!("{config} {detail}"),
                );
                Ok(())
            }
            Err(f) => in_blob(session, f),
        }
    }

    /// The registry answered without a challenge: an auth row of zero time (the request
    /// itself belongs to the manifest phase).
    fn record_unchallenged(&self, session: &mut Session<'_>, host: &str) {
        session.record_ms(
            Phase::Auth,
            host,
            true,
            0.0,
            auth_detail(self.authorization.as_ref()),
        );
    }

    /// CRI-O's `GET /v2/` ping (containers/image docker_client.go `detectProperties`).
    async fn ping(&mut self, session: &mut Session<'_>) -> Result<(), Failure> {
        let host = self.registry_host();
        let t = Instant::now();
        let base = self.api_base();
        let url = Url::parse(&format!("{base}/")).map_err(|e| {
            Failure::new(
                Reason::NoUsableEndpoint,
                format!("bad endpoint {}: {e}", redact::url_text(&base)),
            )
        })?;
        let mut req = Request::new(Method::GET, url);
        if let Some(a) = self.auth_header() {
            req.headers.insert(http::header::AUTHORIZATION, a);
        }
        let resp = session.send(&req, 64 * 1024).await?;
        match resp.status.as_u16() {
            200..=299 => {
                session.record(
                    Phase::Auth,
                    &host,
                    true,
                    t,
                    "ping: no authentication required".into(),
                );
                Ok(())
            }
            401 => match self.challenge(session, &resp).await {
                Ok((detail, auth_host)) => {
                    session.record(Phase::Auth, &auth_host, true, t, format!("ping: {detail}"));
                    Ok(())
                }
                Err(f) => Err(session.record_failure(Phase::Auth, &host, t, f)),
            },
            _ => {
                let f = https_required(&resp).unwrap_or_else(|| not_registry(&resp));
                Err(session.record_failure(f.phase, &host, t, f))
            }
        }
    }

    async fn send_manifest(
        &self,
        session: &mut Session<'_>,
        req: &Request,
    ) -> Result<Response, Failure> {
        session
            .send_following(req, MAX_MANIFEST_SIZE, Phase::Manifest)
            .await
            .map_err(|e| match e {
                RedirectFailure::Hop { failure, .. } => failure,
                RedirectFailure::Loop { url } => Failure::new(
                    Reason::ManifestUnexpectedStatus,
                    format!("manifest redirects loop at {url}"),
                ),
                RedirectFailure::TooMany { url, max } => Failure::new(
                    Reason::ManifestUnexpectedStatus,
                    format!("manifest redirected more than {max} times (last {url})"),
                ),
            })
    }

    /// Handle a 401: parse the challenge and obtain an authorisation.
    async fn challenge(
        &mut self,
        session: &mut Session<'_>,
        resp: &Response,
    ) -> Result<(String, String), Failure> {
        let values = resp.header_values(http::header::WWW_AUTHENTICATE);
        let challenges = parse_challenges(&values).map_err(|e| {
            Failure::new(
                Reason::AuthChallengeMalformed,
                format!("cannot use the registry's 401 challenge: {e}"),
            )
        })?;
        let chosen = auth::pick_challenge(&challenges, self.cred.is_some())?;
        let host = self.registry_host();
        let out = auth::authorize(
            session,
            self.tokens,
            self.options.rules(),
            &host,
            chosen,
            &self.scope(),
            self.cred,
        )
        .await?;
        self.authorization = Some(out.authorization);
        Ok((out.detail, out.host))
    }

    /// A 401 after authorising: the credential (or the anonymous token) is not enough.
    fn rejected_after_auth(&self, resp: &Response) -> Failure {
        let values = resp.header_values(http::header::WWW_AUTHENTICATE);
        let insufficient = parse_challenges(&values)
            .ok()
            .and_then(|c| c.into_iter().find_map(|c| c.error().map(str::to_string)))
            .is_some_and(|e| e == "insufficient_scope");
        let basic = matches!(self.authorization, Some(Authorization::Basic(_)));
        match (self.cred.is_some(), insufficient, basic) {
            (true, _, true) => Failure::new(
                Reason::AuthCredentialsRejected,
                "the registry rejected the credentials (401 to Basic auth)",
            ),
            (true, true, _) => Failure::new(
                Reason::AuthDenied,
                format!(
                    "authenticated, but the token does not grant {} (insufficient_scope)",
                    self.scope()
                ),
            ),
            (true, false, _) => Failure::new(
                Reason::AuthCredentialsRejected,
                "the registry rejected the token obtained with the credentials (401)",
            ),
            (false, _, _) => Failure::new(
                Reason::AuthCredentialsRequired,
                format!(
                    "anonymous access to {} is not allowed: the repository does not exist or needs credentials",
                    self.repo()
                ),
            ),
        }
    }

    /// Classify a failing manifest response precisely (HEAD carries no error body, so
    /// GET it once, as containerd does for 403; and tell a non-registry apart).
    async fn manifest_failure(
        &self,
        session: &mut Session<'_>,
        req: &Request,
        resp: Response,
    ) -> Failure {
        let what = format!("{}:{}", self.repo(), self.image.reference());
        let mut resp = resp;
        if req.method == Method::HEAD && matches!(resp.status.as_u16(), 400 | 403 | 404) {
            let mut get = req.clone();
            get.method = Method::GET;
            if let Ok(r) = self.send_manifest(session, &get).await {
                if r.status == resp.status {
                    resp = r;
                }
            }
        }
        if let Some(f) = https_required(&resp) {
            return f;
        }
        if resp.status == StatusCode::NOT_FOUND
            && manifest::error_code(&resp.body).is_none()
            && resp.header("docker-distribution-api-version").is_none()
        {
            // Not a distribution error: is this a registry at all?
            let base = self.api_base();
            if let Ok(u) = Url::parse(&format!("{base}/")) {
                let ping = Request::new(Method::GET, u);
                if let Ok(p) = session.send(&ping, 64 * 1024).await {
                    if !matches!(p.status.as_u16(), 200 | 401) {
                        return not_registry(&p);
                    }
                }
            }
        }
        let f = manifest::status_failure(&resp, &what);
        if f.reason == Reason::ManifestNotFound {
            // distribution answers MANIFEST_UNKNOWN even for a repository that does not
            // exist; the tags list tells the two apart (NAME_UNKNOWN). Diagnosis only.
            if let Ok(mut u) = self.url("tags/list") {
                u.query_pairs_mut().append_pair("n", "1");
                let mut tags = Request::new(Method::GET, u);
                if let Some(a) = self.auth_header() {
                    tags.headers.insert(http::header::AUTHORIZATION, a);
                }
                if let Ok(r) = session.send(&tags, 64 * 1024).await {
                    if r.status == StatusCode::NOT_FOUND
                        && manifest::error_code(&r.body).as_deref() == Some("NAME_UNKNOWN")
                    {
                        return Failure::new(
                            Reason::RepositoryNotFound,
                            format!(
                                "repository {} does not exist on {}",
                                self.repo(),
                                self.registry_host()
                            ),
                        );
                    }
                }
            }
        }
        f
    }

    async fn get_manifest(
        &self,
        session: &mut Session<'_>,
        url: &Url,
        media_type: Option<&str>,
    ) -> Result<Response, Failure> {
        let mut req = Request::new(Method::GET, url.clone());
        let accept = match media_type {
            Some(mt) if !mt.is_empty() => HeaderValue::from_str(&format!("{mt}, */*"))
                .unwrap_or(HeaderValue::from_static("*/*")),
            _ => HeaderValue::from_static(manifest::accept(self.options.runtime)),
        };
        req.headers.insert(http::header::ACCEPT, accept);
        if let Some(a) = self.auth_header() {
            req.headers.insert(http::header::AUTHORIZATION, a);
        }
        let resp = self.send_manifest(session, &req).await?;
        if !resp.status.is_success() {
            return Err(manifest::status_failure(&resp, url.path()));
        }
        Ok(resp)
    }

    /// containerd's fetcher: `GET manifests/<digest>` with `Accept: <mediaType>, */*`,
    /// verifying the digest. Not for schema 1: 1.6 and 1.7 hand it to the schema 1
    /// converter, which reads the body and strips its signatures without checking the
    /// digest (v1.7.24 remotes/docker/schema1/converter.go `fetchManifest`); a signed
    /// manifest's digest is the registry's over the unsigned payload, not over the body.
    async fn fetch_by_digest(
        &self,
        session: &mut Session<'_>,
        digest: &str,
        media_type: &str,
    ) -> Result<bytes::Bytes, Failure> {
        let url = self.url(&format!("manifests/{digest}"))?;
        let resp = self.get_manifest(session, &url, Some(media_type)).await?;
        if !manifest::is_schema1(media_type) {
            manifest::verify_digest(&resp.body, digest)?;
        }
        Ok(resp.body)
    }
}

/// The `Docker-Content-Digest` header, validated as an OCI digest before anything uses or
/// shows it. containerd (core/remotes/docker/resolver.go, `Resolve`) validates it when the
/// answer has a length (`dgstHeader != "" && size != -1`) and fails the pull on an invalid
/// one ("in header not a valid digest"); without a length it ignores the header and hashes
/// the body. The failure names the header and its size, never its text.
fn announced_digest(resp: &Response, has_len: bool) -> Result<Option<String>, Failure> {
    let Some(v) = resp.headers.get("docker-content-digest") else {
        return Ok(None);
    };
    if v.is_empty() || !has_len {
        return Ok(None);
    }
    match v.to_str() {
        Ok(d) if manifest::is_valid_digest(d) => Ok(Some(d.to_string())),
        _ => Err(Failure::new(
            Reason::ManifestMalformed,
            format!(
                "the Docker-Content-Digest header is not a valid digest ({} bytes, not shown): containerd refuses the manifest",
                crate::text::thousands(v.len() as u64)
            ),
        )),
    }
}

fn auth_detail(a: Option<&Authorization>) -> String {
    match a {
        None => "no authentication required".to_string(),
        Some(Authorization::Basic(_)) => "basic (remembered challenge)".to_string(),
        Some(Authorization::Bearer(_)) => "bearer token from cache".to_string(),
    }
}

/// Go's TLS server answers a plain-HTTP request with `400 Client sent an HTTP request
/// to an HTTPS server.`: the endpoint is configured http:// but speaks TLS.
fn https_required(resp: &Response) -> Option<Failure> {
    let body = String::from_utf8_lossy(&resp.body);
    (resp.status == StatusCode::BAD_REQUEST && body.contains("HTTP request to an HTTPS server"))
        .then(|| {
            Failure::new(
                Reason::TLSServerExpectsHTTPS,
                format!(
                    "{} speaks TLS but the runtime talks plain HTTP to it (400: {}); configure it as https:// (hosts.toml `server`/`[host]`) with its CA",
                    resp.url.host_str().unwrap_or_default(),
                    redact::text_max(body.trim(), 100)
                ),
            )
        })
}

fn not_registry(resp: &Response) -> Failure {
    let ct = redact::text_max(resp.header("content-type").unwrap_or(""), 64);
    Failure::new(
        Reason::AuthNotRegistry,
        format!(
            "{} is not a registry API: GET /v2/ answered {}{}",
            resp.url.host_str().unwrap_or_default(),
            resp.status,
            if ct.is_empty() {
                String::new()
            } else {
                format!(" ({ct})")
            }
        ),
    )
}
