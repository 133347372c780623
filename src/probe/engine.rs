//! The pipeline: for each credential (kubelet order) and each endpoint (runtime order),
//! walk dns → connect → tls → auth → manifest → platform → blob, and decide a verdict.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};
use rustls::ClientConfig;
use url::Url;

use super::auth::{self, Authorization, CredentialRef, TokenCache};
use super::blob;
use super::challenge::parse_challenges;
use super::dns::NodeResolver;
use super::http::{RedirectFailure, Request, Response, Session, SessionContext};
use super::manifest::{self, MAX_MANIFEST_SIZE};
use super::outcome::{
    EndpointAttempt, Failure, ManifestInfo, Phase, ProbeReport, RateLimit, Reason, TlsInfo, Verdict,
};
use super::platform;
use super::tls;
use crate::credentials::SourcedCredential;
use crate::endpoint::{Endpoint, SchemePolicy, TlsSettings};
use crate::reference::ImageRef;

/// Which runtime's request sequence to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeProfile {
    /// HEAD the manifest first and react to the 401; OAuth2 POST for tokens with credentials.
    #[default]
    Containerd,
    /// containers/image: `GET /v2/` ping first, GET manifests.
    Crio,
}

/// Per-phase timeouts plus an overall deadline.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Duration,
    /// One HTTP request/response (headers and body).
    pub http: Duration,
    /// The whole probe of one image.
    pub overall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            tls: Duration::from_secs(5),
            http: Duration::from_secs(10),
            overall: Duration::from_secs(30),
        }
    }
}

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Settings shared by every probe of a run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub runtime: RuntimeProfile,
    pub timeouts: Timeouts,
    pub platform: Platform,
    /// Skip the blob phase.
    pub no_blob: bool,
    /// Skip the platform phase and stop after the manifest HEAD (agent's cheap check).
    pub head_only: bool,
    /// The node's resolv.conf.
    pub resolv_conf: PathBuf,
    /// The node's hosts file.
    pub hosts_file: PathBuf,
    /// The runtime service's proxy environment (`HTTP(S)_PROXY`, `NO_PROXY`), applied per
    /// request URL like Go's `http.ProxyFromEnvironment`; `None` = direct.
    pub proxy_env: Option<crate::nodeconfig::proxy::ProxyEnv>,
}

/// One image and how the node would pull it.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The image as given (before normalisation).
    pub image: String,
    /// Endpoints in the runtime's order (mirrors first, upstream last). Empty = derive the
    /// default upstream endpoint from the reference.
    pub endpoints: Vec<Endpoint>,
    /// Credentials in the kubelet's order; each is a separate full attempt. Empty = anonymous.
    pub credentials: Vec<SourcedCredential>,
    /// Set when the runtime would refuse before sending anything (a CRI-O blocked
    /// registry, an unusable hosts directory); reported as the verdict without probing.
    pub refusal: Option<Failure>,
}

impl ProbeTarget {
    /// A target probed over the default endpoint, anonymously.
    pub fn new(image: impl Into<String>) -> ProbeTarget {
        ProbeTarget {
            image: image.into(),
            endpoints: Vec::new(),
            credentials: Vec::new(),
            refusal: None,
        }
    }
}

/// Runs probes. Holds the token cache and TLS configs, so one `Prober` should live for a
/// whole run (or the agent's lifetime). DNS answers and connections are never reused
/// across probes: each probe sees what a new pull would see.
pub struct Prober {
    options: ProbeOptions,
    resolver: Result<NodeResolver, String>,
    tokens: TokenCache,
    tls_configs: Mutex<HashMap<String, Result<Arc<ClientConfig>, String>>>,
}

/// The result of one attempt (one endpoint, one credential).
struct AttemptResult {
    attempt: EndpointAttempt,
    failure: Option<Failure>,
    manifest: Option<ManifestInfo>,
    tls: Option<TlsInfo>,
    ratelimit: Option<RateLimit>,
}

const USER_AGENT: &str = concat!("pullprobe/", env!("CARGO_PKG_VERSION"));

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Prober {
    pub fn new(options: ProbeOptions) -> Prober {
        let resolver = NodeResolver::from_files(
            &options.resolv_conf,
            &options.hosts_file,
            options.timeouts.dns,
        )
        .map_err(|e| e.to_string());
        Prober {
            options,
            resolver,
            tokens: TokenCache::default(),
            tls_configs: Mutex::new(HashMap::new()),
        }
    }

    pub fn options(&self) -> &ProbeOptions {
        &self.options
    }

    /// The token cache (the agent reports its size).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    fn tls_config(&self, settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
        // TlsSettings holds paths and flags only, so its Debug form is a safe key.
        let key = format!("{settings:?}");
        if let Ok(map) = self.tls_configs.lock() {
            if let Some(c) = map.get(&key) {
                return c.clone();
            }
        }
        let built = tls::client_config(settings).map_err(|e| e.to_string());
        if let Ok(mut map) = self.tls_configs.lock() {
            map.insert(key, built.clone());
        }
        built
    }

    /// Probe one image. Never fails: every problem becomes a verdict with a reason.
    pub async fn probe(&self, target: &ProbeTarget) -> ProbeReport {
        let started = Instant::now();
        let image = match ImageRef::parse(&target.image) {
            Ok(i) => i,
            Err(e) => {
                let f = Failure::new(
                    Reason::ReferenceInvalid,
                    format!("invalid image reference {:?}: {e}", target.image),
                );
                return failed_report(&target.image, None, f, started);
            }
        };
        if let Some(f) = &target.refusal {
            let mut r = failed_report(&target.image, Some(&image), f.clone(), started);
            if f.reason == Reason::RegistryBlocked {
                r.verdict = Verdict::Blocked;
            }
            return r;
        }
        let endpoints = if target.endpoints.is_empty() {
            match default_endpoint(&image) {
                Ok(e) => vec![e],
                Err(f) => return failed_report(&target.image, Some(&image), f, started),
            }
        } else {
            target.endpoints.clone()
        };
        // containerd resolver.go: tags resolve only on hosts with pull+resolve;
        // digests on hosts with pull.
        let usable: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| e.capabilities.pull && (image.digest.is_some() || e.capabilities.resolve))
            .collect();
        if usable.is_empty() {
            let f = Failure::new(
                Reason::NoUsableEndpoint,
                "no endpoint has the pull/resolve capabilities this reference needs",
            );
            return failed_report(&target.image, Some(&image), f, started);
        }
        let mut results: Vec<AttemptResult> = Vec::new();
        let deadline = started + self.options.timeouts.overall;
        // kubelet kuberuntime_image.go: one pull per credential in order (no anonymous
        // retry once any matched); within a pull the runtime walks its endpoints.
        let creds: Vec<Option<&SourcedCredential>> = if target.credentials.is_empty() {
            vec![None]
        } else {
            target.credentials.iter().map(Some).collect()
        };
        'outer: for cred in creds {
            for ep in &usable {
                let left = deadline.saturating_duration_since(Instant::now());
                let res = match tokio::time::timeout(left, self.attempt(&image, ep, cred)).await {
                    Ok(r) => r,
                    Err(_) => deadline_result(ep, cred, self.options.timeouts.overall),
                };
                let ok = res.failure.is_none();
                results.push(res);
                if ok {
                    break 'outer;
                }
                if Instant::now() >= deadline {
                    break 'outer;
                }
            }
        }
        build_report(&target.image, &image, results, started)
    }

    async fn attempt(
        &self,
        image: &ImageRef,
        ep: &Endpoint,
        cred: Option<&SourcedCredential>,
    ) -> AttemptResult {
        let started = Instant::now();
        // CRI-O does not send the kubelet's credential to a mirror on another domain;
        // containerd does. Endpoints carry that policy. A runtime-configured credential
        // for the host applies when the kubelet gives none.
        let identity;
        let own;
        let cred_ref: Option<CredentialRef<'_>> = match cred {
            Some(c) if ep.send_credentials => {
                identity = c.source.to_string();
                Some(CredentialRef {
                    credential: &c.credential,
                    identity: &identity,
                })
            }
            _ => match &ep.own_credential {
                Some(oc) => {
                    own = format!("runtime-config:{}", ep.host_port());
                    Some(CredentialRef {
                        credential: oc,
                        identity: &own,
                    })
                }
                None => None,
            },
        };
        let source = cred_ref.as_ref().map(|c| c.identity.to_string());
        let ctx = SessionContext {
            resolver: match &self.resolver {
                Ok(r) => r.clone(),
                Err(msg) => {
                    let f = Failure::new(Reason::DNSConfigInvalid, msg.clone());
                    return finish(ep, source, started, Vec::new(), Some(f), None, None, None);
                }
            },
            timeouts: self.options.timeouts,
            tls: self.tls_config(&ep.tls),
            scheme: ep.scheme,
            extra_headers: ep.headers.clone(),
            user_agent: USER_AGENT.to_string(),
            proxy: proxy_fn(ep, self.options.proxy_env.clone()),
        };
        let mut timeouts = ctx.timeouts;
        if let Some(d) = ep.dial_timeout {
            timeouts.connect = d;
        }
        let ctx = SessionContext { timeouts, ..ctx };
        let mut session = Session::new(&ctx);
        let mut flow = Flow {
            prober: self,
            image,
            ep,
            cred: cred_ref.as_ref(),
            authorization: None,
            ratelimit: None,
        };
        let outcome = flow.run(&mut session).await;
        let ratelimit = flow.ratelimit.take();
        let tls = session.tls_seen.first().cloned();
        let records = std::mem::take(&mut session.records);
        match outcome {
            Ok(info) => finish(
                ep,
                source,
                started,
                records,
                None,
                Some(info),
                tls,
                ratelimit,
            ),
            Err(f) => finish(ep, source, started, records, Some(f), None, tls, ratelimit),
        }
    }
}

/// The proxy decision per request URL: the plan's choice for the endpoint's own host,
/// the runtime's environment rules for every other host (token realm, blob host).
fn proxy_fn(
    ep: &Endpoint,
    env: Option<crate::nodeconfig::proxy::ProxyEnv>,
) -> Option<super::http::ProxyFn> {
    if ep.proxy.is_none() && env.is_none() {
        return None;
    }
    let ep_host = ep.api_root.host_str().map(str::to_string);
    let ep_port = ep.api_root.port_or_known_default();
    let ep_proxy = ep.proxy.clone();
    Some(Arc::new(move |url: &Url| {
        if url.host_str().map(str::to_string) == ep_host && url.port_or_known_default() == ep_port {
            return ep_proxy.clone();
        }
        env.as_ref().and_then(|e| e.proxy_for(url))
    }))
}

/// The per-attempt request flow.
struct Flow<'a> {
    prober: &'a Prober,
    image: &'a ImageRef,
    ep: &'a Endpoint,
    cred: Option<&'a CredentialRef<'a>>,
    authorization: Option<Authorization>,
    ratelimit: Option<RateLimit>,
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
                format!("cannot build a URL from {base}: {e}"),
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

    async fn run(&mut self, session: &mut Session<'_>) -> Result<ManifestInfo, Failure> {
        let host = self.registry_host();
        let scope = self.scope();
        self.authorization = self
            .prober
            .tokens
            .cached_authorization(&host, &scope, self.cred);
        let runtime = self.prober.options.runtime;
        let mut auth_recorded = false;
        if runtime == RuntimeProfile::Crio {
            self.ping(session).await?;
            auth_recorded = true;
        }
        // Resolve: containerd HEADs the manifest and reacts to 401; CRI-O GETs it.
        let mut method = match runtime {
            RuntimeProfile::Containerd => Method::HEAD,
            RuntimeProfile::Crio => Method::GET,
        };
        let url = self.url(&format!("manifests/{}", self.image.reference()))?;
        let mut authorized_once = false;
        let mut t = Instant::now();
        let resolved: Response = loop {
            let mut req = Request::new(method.clone(), url.clone());
            req.headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static(manifest::accept(runtime)),
            );
            if let Some(a) = self.auth_header() {
                req.headers.insert(http::header::AUTHORIZATION, a);
            }
            let resp = match self.send_manifest(session, &req).await {
                Ok(r) => r,
                Err(f) => {
                    // dns/connect/handshake failures were recorded when the connection
                    // was opened; anything later (a post-handshake TLS alert, a stalled
                    // or broken response) gets its own row here.
                    let recorded_on_connect = matches!(f.phase, Phase::Dns | Phase::Connect)
                        || (f.phase == Phase::Tls && f.reason != Reason::TLSClientCertRequired);
                    if !recorded_on_connect {
                        session.record(f.phase, &host, false, t, f.message.clone());
                    }
                    return Err(f);
                }
            };
            if let Some(rl) = manifest::rate_limit(&resp) {
                self.ratelimit = Some(rl);
            }
            match resp.status {
                StatusCode::UNAUTHORIZED => {
                    if authorized_once {
                        let f = self.rejected_after_auth(&resp);
                        session.record(Phase::Auth, &host, false, t, f.message.clone());
                        return Err(f);
                    }
                    authorized_once = true;
                    let outcome = self.challenge(session, &resp).await;
                    match outcome {
                        Ok((detail, auth_host)) => {
                            session.record(Phase::Auth, &auth_host, true, t, detail);
                            auth_recorded = true;
                        }
                        Err(f) => {
                            session.record(Phase::Auth, &host, false, t, f.message.clone());
                            return Err(f);
                        }
                    }
                    t = Instant::now();
                }
                StatusCode::METHOD_NOT_ALLOWED if method == Method::HEAD => {
                    method = Method::GET;
                }
                s if s.is_success() => break resp,
                _ => {
                    if !auth_recorded {
                        self.record_unchallenged(session, &host);
                    }
                    let f = self.manifest_failure(session, &req, resp).await;
                    session.record(f.phase, &host, false, t, f.message.clone());
                    return Err(f);
                }
            }
        };
        if !auth_recorded {
            self.record_unchallenged(session, &host);
        }
        // A HEAD without a digest or length cannot be trusted: GET and hash it (resolver.go).
        let mut body: Option<bytes::Bytes> = None;
        let announced = resolved
            .header("docker-content-digest")
            .map(str::to_string)
            .filter(|d| d.contains(':'));
        let has_len = resolved.header("content-length").is_some();
        let mut media_type = resolved
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .unwrap_or_default();
        let mut size = resolved
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        let digest = if method == Method::GET {
            let d = manifest::sha256_digest(&resolved.body);
            if let Some(a) = &announced {
                if a.starts_with("sha256:") && *a != d {
                    let f = Failure::new(
                        Reason::ManifestMalformed,
                        format!("Docker-Content-Digest {a} does not match the body ({d})"),
                    );
                    session.record(Phase::Manifest, &host, false, t, f.message.clone());
                    return Err(f);
                }
            }
            size = resolved.body.len() as u64;
            body = Some(resolved.body.clone());
            d
        } else if let (Some(d), true) = (announced.clone(), has_len) {
            d
        } else {
            let b = match self.get_manifest(session, &url, None).await {
                Ok(r) => r,
                Err(f) => {
                    session.record(Phase::Manifest, &host, false, t, f.message.clone());
                    return Err(f);
                }
            };
            if let Some(ct) = b.header("content-type") {
                media_type = ct.split(';').next().unwrap_or(ct).trim().to_string();
            }
            size = b.body.len() as u64;
            body = Some(b.body.clone());
            manifest::sha256_digest(&b.body)
        };
        if let Some(d) = &self.image.digest {
            if *d != digest && digest.starts_with(d.split(':').next().unwrap_or("")) {
                let f = Failure::new(
                    Reason::ManifestMalformed,
                    format!("registry returned digest {digest} for {d}"),
                );
                session.record(Phase::Manifest, &host, false, t, f.message.clone());
                return Err(f);
            }
        }
        if size > MAX_MANIFEST_SIZE as u64 {
            let f = Failure::new(
                Reason::ManifestTooLarge,
                format!(
                    "manifest of {size} bytes exceeds containerd's {MAX_MANIFEST_SIZE}-byte limit"
                ),
            );
            session.record(Phase::Manifest, &host, false, t, f.message.clone());
            return Err(f);
        }
        if !media_type.is_empty() && !media_type.contains("json") {
            let f = if media_type.starts_with("text/html") {
                Failure::new(
                    Reason::AuthNotRegistry,
                    format!("{host} answered the manifest request with an HTML page: not a registry API (a proxy login or captive portal?)"),
                )
            } else {
                Failure::new(
                    Reason::ManifestMalformed,
                    format!("{host} answered with Content-Type {media_type}, not a manifest"),
                )
            };
            session.record(Phase::Manifest, &host, false, t, f.message.clone());
            return Err(f);
        }
        let mut info = ManifestInfo {
            digest: digest.clone(),
            media_type: media_type.clone(),
            size,
            platform_digest: None,
            config_digest: None,
        };
        let rl = self
            .ratelimit
            .as_ref()
            .and_then(|r| r.remaining)
            .map(|r| format!(" ratelimit-remaining={r}"))
            .unwrap_or_default();
        session.record(
            Phase::Manifest,
            &host,
            true,
            t,
            format!("{digest} {media_type} {size} bytes{rl}"),
        );
        if self.prober.options.head_only {
            return Ok(info);
        }
        let opts = &self.prober.options;
        // platform: an index must hold the node's platform.
        let manifest_body;
        if manifest::is_index(&media_type) || media_type.is_empty() {
            let t = Instant::now();
            let index_body = match body.take() {
                Some(b) => b,
                None => match self.fetch_by_digest(session, &digest, &media_type).await {
                    Ok(b) => b,
                    Err(f) => {
                        session.record(Phase::Platform, &host, false, t, f.message.clone());
                        return Err(f.in_phase(Phase::Platform));
                    }
                },
            };
            let parsed = match manifest::parse_body(&index_body) {
                Ok(p) => p,
                Err(f) => {
                    session.record(Phase::Platform, &host, false, t, f.message.clone());
                    return Err(f);
                }
            };
            if !parsed.manifests.is_empty() || manifest::is_index(&media_type) {
                let Some(entry) = platform::select(&opts.platform, &parsed.manifests) else {
                    let f = Failure::new(
                        Reason::PlatformMissing,
                        format!(
                            "the index has no manifest for {} (it has: {})",
                            opts.platform,
                            platform::list(&parsed.manifests)
                        ),
                    );
                    session.record(Phase::Platform, "", false, t, f.message.clone());
                    return Err(f);
                };
                info.platform_digest = Some(entry.digest.clone());
                if opts.no_blob {
                    session.record(
                        Phase::Platform,
                        "",
                        true,
                        t,
                        format!("{} → {}", opts.platform, entry.digest),
                    );
                    return Ok(info);
                }
                let mt = entry
                    .media_type
                    .clone()
                    .unwrap_or_else(|| manifest::MEDIA_OCI_MANIFEST.to_string());
                match self.fetch_by_digest(session, &entry.digest, &mt).await {
                    Ok(b) => manifest_body = Some(b),
                    Err(f) => {
                        session.record(Phase::Platform, &host, false, t, f.message.clone());
                        return Err(f.in_phase(Phase::Platform));
                    }
                }
                session.record(
                    Phase::Platform,
                    "",
                    true,
                    t,
                    format!("{} → {}", opts.platform, entry.digest),
                );
            } else {
                manifest_body = Some(index_body);
            }
        } else {
            manifest_body = body;
        }
        if opts.no_blob {
            return Ok(info);
        }
        // blob: HEAD the config blob, following redirects across hosts.
        let t = Instant::now();
        let body = match manifest_body {
            Some(b) => b,
            None => match self.fetch_by_digest(session, &digest, &media_type).await {
                Ok(b) => b,
                Err(f) => {
                    session.record(Phase::Blob, &host, false, t, f.message.clone());
                    return Err(f.in_phase(Phase::Blob));
                }
            },
        };
        let config = match manifest::parse_body(&body).map(|m| m.config_digest) {
            Ok(Some(c)) => c,
            Ok(None) => {
                let f = Failure::new(
                    Reason::ManifestMalformed,
                    "the image manifest names no config blob",
                );
                session.record(Phase::Blob, &host, false, t, f.message.clone());
                return Err(f.in_phase(Phase::Blob));
            }
            Err(f) => {
                session.record(Phase::Blob, &host, false, t, f.message.clone());
                return Err(f.in_phase(Phase::Blob));
            }
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
                Ok(info)
            }
            Err(f) => {
                session.record(Phase::Blob, &host, false, t, f.message.clone());
                Err(f.in_phase(Phase::Blob))
            }
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
                format!("bad endpoint {base}: {e}"),
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
                Err(f) => {
                    session.record(Phase::Auth, &host, false, t, f.message.clone());
                    Err(f)
                }
            },
            _ => {
                let f = https_required(&resp).unwrap_or_else(|| not_registry(&resp));
                session.record(f.phase, &host, false, t, f.message.clone());
                Err(f)
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
        let values: Vec<&str> = resp
            .headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
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
            &self.prober.tokens,
            self.prober.options.runtime,
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
        let values: Vec<&str> = resp
            .headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
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
            _ => HeaderValue::from_static(manifest::accept(self.prober.options.runtime)),
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
    /// verifying the digest.
    async fn fetch_by_digest(
        &self,
        session: &mut Session<'_>,
        digest: &str,
        media_type: &str,
    ) -> Result<bytes::Bytes, Failure> {
        let url = self.url(&format!("manifests/{digest}"))?;
        let resp = self.get_manifest(session, &url, Some(media_type)).await?;
        manifest::verify_digest(&resp.body, digest)?;
        Ok(resp.body)
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
                    body.trim()
                ),
            )
        })
}

fn not_registry(resp: &Response) -> Failure {
    let ct = resp.header("content-type").unwrap_or("").to_string();
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

/// The endpoint containerd uses when no hosts configuration exists
/// (core/remotes/docker/config/hosts.go `ConfigureHosts` defaults).
pub fn default_endpoint(image: &ImageRef) -> Result<Endpoint, Failure> {
    let host = image.registry_host();
    let scheme = if image.is_localhost() {
        match image.port() {
            None | Some(443) => SchemePolicy::Https,
            Some(80) => SchemePolicy::Http,
            // Other loopback ports: http with skip_verify → HTTPS first, then HTTP.
            Some(_) => SchemePolicy::HttpsThenHttp,
        }
    } else {
        SchemePolicy::Https
    };
    let mut ep = Endpoint::upstream(&host, scheme).map_err(|e| {
        Failure::new(
            Reason::ReferenceInvalid,
            format!("cannot build an endpoint for {host}: {e}"),
        )
    })?;
    if scheme == SchemePolicy::HttpsThenHttp {
        ep.tls.skip_verify = true;
    }
    ep.origin = "default (no hosts configuration)".to_string();
    Ok(ep)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    ep: &Endpoint,
    source: Option<String>,
    started: Instant,
    phases: Vec<super::outcome::PhaseRecord>,
    failure: Option<Failure>,
    manifest: Option<ManifestInfo>,
    tls: Option<TlsInfo>,
    ratelimit: Option<RateLimit>,
) -> AttemptResult {
    AttemptResult {
        attempt: EndpointAttempt {
            endpoint: ep.display_url(),
            is_upstream: ep.is_upstream,
            credential_source: source,
            ok: failure.is_none(),
            phase: failure.as_ref().map(|f| f.phase),
            reason: failure.as_ref().map(|f| f.reason),
            message: failure
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_else(|| "pull would succeed".to_string()),
            duration_ms: ms(started.elapsed()),
            phases,
        },
        failure,
        manifest,
        tls,
        ratelimit,
    }
}

fn deadline_result(
    ep: &Endpoint,
    cred: Option<&SourcedCredential>,
    overall: Duration,
) -> AttemptResult {
    let f = Failure::new(
        Reason::ProbeDeadlineExceeded,
        format!("the probe did not finish within its {overall:?} deadline"),
    );
    finish(
        ep,
        cred.map(|c| c.source.to_string()),
        Instant::now(),
        Vec::new(),
        Some(f),
        None,
        None,
        None,
    )
}

fn failed_report(
    image: &str,
    parsed: Option<&ImageRef>,
    f: Failure,
    started: Instant,
) -> ProbeReport {
    ProbeReport {
        image: image.to_string(),
        reference: parsed.map(|p| p.normalized()),
        endpoint: None,
        verdict: Verdict::NotReady,
        phase: Some(f.phase),
        reason: Some(f.reason),
        message: f.message.clone(),
        duration_ms: ms(started.elapsed()),
        phases: vec![super::outcome::PhaseRecord {
            name: f.phase,
            host: String::new(),
            ok: false,
            duration_ms: 0.0,
            detail: f.message,
        }],
        credential_source: None,
        manifest: None,
        tls: None,
        ratelimit: None,
        retry_after_s: None,
        attempts: Vec::new(),
    }
}

fn build_report(
    image: &str,
    parsed: &ImageRef,
    mut results: Vec<AttemptResult>,
    started: Instant,
) -> ProbeReport {
    let success = results.iter().position(|r| r.failure.is_none());
    let decisive_index = success.unwrap_or(results.len().saturating_sub(1));
    let verdict = match success {
        Some(0) => Verdict::Ready,
        Some(_) => Verdict::Degraded,
        None => Verdict::NotReady,
    };
    let attempts: Vec<EndpointAttempt> = results.iter().map(|r| r.attempt.clone()).collect();
    let decisive = results.swap_remove(decisive_index);
    let message = match (&decisive.failure, verdict) {
        (Some(f), _) => f.message.clone(),
        (None, Verdict::Degraded) => {
            let failed: Vec<String> = attempts
                .iter()
                .filter(|a| !a.ok)
                .map(|a| {
                    format!(
                        "{} {}",
                        a.endpoint,
                        a.reason.map(|r| r.as_str()).unwrap_or("failed")
                    )
                })
                .collect();
            format!(
                "pull would succeed via {} only after earlier endpoints failed: {}",
                decisive.attempt.endpoint,
                failed.join("; ")
            )
        }
        (None, _) => "pull would succeed".to_string(),
    };
    ProbeReport {
        image: image.to_string(),
        reference: Some(parsed.normalized()),
        endpoint: Some(decisive.attempt.endpoint.clone()),
        verdict,
        phase: decisive.failure.as_ref().map(|f| f.phase),
        reason: decisive.failure.as_ref().map(|f| f.reason),
        message,
        duration_ms: ms(started.elapsed()),
        phases: decisive.attempt.phases.clone(),
        credential_source: decisive.attempt.credential_source.clone(),
        manifest: decisive.manifest,
        tls: decisive.tls,
        ratelimit: decisive.ratelimit,
        retry_after_s: decisive.failure.as_ref().and_then(|f| f.retry_after_s),
        attempts,
    }
}
