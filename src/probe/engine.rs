//! The pipeline: for each credential (kubelet order) and each endpoint (runtime order),
//! walk dns → connect → tls → auth → manifest → platform → blob, and decide a verdict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use url::Url;

use super::auth::{CredentialRef, TokenCache};
use super::dns::NodeResolver;
use super::flow::Flow;
use super::http::{Session, SessionContext};
pub use super::options::{Depth, ProbeOptions, ProbeTarget, Timeouts};
use super::outcome::{
    EndpointAttempt, Failure, ManifestInfo, ProbeReport, RateLimit, Reason, TlsInfo, Verdict,
};
use super::tls;
use super::verdict;
use crate::credentials::{CredentialSource, SourcedCredential};
use crate::endpoint::{Endpoint, SchemePolicy, TlsSettings};
use crate::reference::ImageRef;
pub use crate::runtime::{Platform, Runtime};

/// Runs probes. Holds the token cache and TLS configs, so one `Prober` should live for a
/// whole run (or the agent's lifetime). DNS answers and connections are never reused
/// across probes: each probe sees what a new pull would see.
pub struct Prober {
    options: ProbeOptions,
    resolver: NodeResolver,
    tokens: Arc<TokenCache>,
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
        Prober::with_tokens(options, Arc::new(TokenCache::default()))
    }

    /// A prober sharing `tokens` with others (a path and an image prober of one node;
    /// a reloaded node config keeps its tokens).
    pub fn with_tokens(options: ProbeOptions, tokens: Arc<TokenCache>) -> Prober {
        let resolver = NodeResolver::from_files(
            &options.resolv_conf,
            &options.hosts_file,
            options.timeouts.dns,
        );
        Prober {
            options,
            resolver,
            tokens,
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
        let results = self
            .walk(&image, &usable, &target.credentials, started)
            .await;
        build_report(&self.options, &target.image, &image, results, started)
    }

    /// The kubelet's pulls (kuberuntime_image.go: one per credential in order, no
    /// anonymous retry once any matched), each walking the endpoints as the runtime does
    /// ([`verdict::walks_on`]) — or, for a path check, until one proves the path. One
    /// inner list per credential.
    async fn walk(
        &self,
        image: &ImageRef,
        usable: &[&Endpoint],
        credentials: &[SourcedCredential],
        started: Instant,
    ) -> Vec<Vec<AttemptResult>> {
        let mut results = Vec::new();
        let deadline = started + self.options.timeouts.overall;
        let creds: Vec<Option<&SourcedCredential>> = if credentials.is_empty() {
            vec![None]
        } else {
            credentials.iter().map(Some).collect()
        };
        let (rules, depth) = (self.options.rules(), self.options.depth);
        for cred in creds {
            let mut pull = Vec::new();
            let mut settled = false;
            for (i, ep) in usable.iter().enumerate() {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut res = match tokio::time::timeout(left, self.attempt(image, ep, cred)).await
                {
                    Ok(r) => r,
                    Err(_) => deadline_result(ep, cred, self.options.timeouts.overall),
                };
                res.attempt.role = role(usable, i);
                let done = match (&res.failure, depth) {
                    (None, _) => true,
                    (Some(_), Depth::Path) => verdict::proves_path(&res.attempt),
                    (Some(f), Depth::Image) => !verdict::walks_on(rules, f),
                };
                settled = res.failure.is_none() || (done && depth == Depth::Path);
                pull.push(res);
                if done || Instant::now() >= deadline {
                    break;
                }
            }
            results.push(pull);
            if settled || Instant::now() >= deadline {
                break;
            }
        }
        results
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
        let used: Option<&SourcedCredential> = match cred {
            Some(c) if ep.send_credentials => Some(c),
            _ => ep.own_credential.as_ref(),
        };
        // The source's name alone could be shared by two credentials (keys that differ
        // only in redacted userinfo): the credential's fingerprint keeps their tokens apart.
        let identity = used.map(|c| format!("{}#{}", c.source, c.credential.fingerprint()));
        let cred_ref: Option<CredentialRef<'_>> =
            used.zip(identity.as_deref())
                .map(|(c, identity)| CredentialRef {
                    credential: &c.credential,
                    identity,
                });
        let source = used.map(|c| c.source.clone());
        let ctx = SessionContext {
            resolver: self.resolver.clone(),
            timeouts: self.options.timeouts,
            tls: self.tls_config(&ep.tls),
            scheme: ep.scheme,
            extra_headers: ep.headers.clone(),
            user_agent: USER_AGENT.to_string(),
            proxy: proxy_fn(ep, self.options.proxy_env.clone()),
            endpoint_host: ep.api_root.host_str().map(str::to_string),
        };
        let mut timeouts = ctx.timeouts;
        if let Some(d) = ep.dial_timeout {
            timeouts.connect = d;
        }
        let ctx = SessionContext { timeouts, ..ctx };
        let mut session = Session::new(&ctx);
        let mut flow = Flow {
            options: &self.options,
            tokens: &self.tokens,
            image,
            ep,
            cred: cred_ref.as_ref(),
            authorization: None,
            ratelimit: None,
        };
        let outcome = flow.run(&mut session).await;
        let ratelimit = flow.ratelimit.take();
        let fell_back = session.fell_back_to_http();
        let tls = session.tls_seen.first().cloned();
        let records = std::mem::take(&mut session.records);
        let mut result = match outcome {
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
            Err(f) => {
                // A failed handshake still says what the server presented.
                let tls = tls.or_else(|| f.tls.as_deref().cloned());
                finish(ep, source, started, records, Some(f), None, tls, ratelimit)
            }
        };
        result.attempt.https_to_http = fell_back;
        result
    }
}

/// `mirror N` (counting mirrors in the runtime's order), `server`, or `default`.
fn role(eps: &[&Endpoint], i: usize) -> String {
    let ep = eps[i.min(eps.len().saturating_sub(1))];
    if !ep.is_upstream {
        let n = eps[..=i.min(eps.len() - 1)]
            .iter()
            .filter(|e| !e.is_upstream)
            .count();
        format!("mirror {n}")
    } else if ep.origin.starts_with("default") {
        "default".to_string()
    } else {
        "server".to_string()
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
    source: Option<CredentialSource>,
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
            role: String::new(),
            origin: ep.origin.clone(),
            https_to_http: false,
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
        format!(
            "the probe did not finish within its {} deadline",
            crate::text::human_duration(overall)
        ),
    );
    finish(
        ep,
        cred.map(|c| c.source.clone()),
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
        // Filled by the pipeline, which knows where the check runs (hints::HintEnv).
        hint: None,
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
        warnings: Vec::new(),
    }
}

/// The report of one probe: the verdict from the first attempt that pulled, else the
/// failure the runtime reports ([`verdict::reported_failure`]) of the first credential's
/// pull — the first of the kubelet's aggregated errors. Every attempt stays listed.
fn build_report(
    options: &ProbeOptions,
    image: &str,
    parsed: &ImageRef,
    pulls: Vec<Vec<AttemptResult>>,
    started: Instant,
) -> ProbeReport {
    let first_pull_len = pulls.first().map(Vec::len).unwrap_or(0);
    let mut results: Vec<AttemptResult> = pulls.into_iter().flatten().collect();
    let success = results.iter().position(|r| r.failure.is_none());
    let first_pull: Vec<&EndpointAttempt> = results[..first_pull_len.min(results.len())]
        .iter()
        .map(|r| &r.attempt)
        .collect();
    let decisive_index = success
        .or_else(|| verdict::reported_failure(options.rules(), &first_pull))
        .unwrap_or(0);
    let verdict = match success {
        Some(0) => Verdict::Ready,
        Some(_) => Verdict::Degraded,
        None => Verdict::NotReady,
    };
    let attempts: Vec<EndpointAttempt> = results.iter().map(|r| r.attempt.clone()).collect();
    if results.is_empty() {
        let f = Failure::new(Reason::NoUsableEndpoint, "no endpoint was tried");
        return failed_report(image, Some(parsed), f, started);
    }
    let decisive = results.swap_remove(decisive_index.min(results.len() - 1));
    let message = match (&decisive.failure, verdict) {
        (Some(f), _) => f.message.clone(),
        (None, Verdict::Degraded) => degraded_message(&decisive.attempt.endpoint, &attempts),
        (None, _) => "pull would succeed".to_string(),
    };
    ProbeReport {
        image: image.to_string(),
        reference: Some(parsed.normalized()),
        endpoint: Some(decisive.attempt.endpoint.clone()),
        hint: None,
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
        warnings: Vec::new(),
    }
}

fn degraded_message(via: &str, attempts: &[EndpointAttempt]) -> String {
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
        "pull would succeed via {via} only after earlier endpoints failed: {}",
        failed.join("; ")
    )
}
