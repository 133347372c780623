//! On-demand checks: probe images now over this node's pull path — the agent's own
//! [`PullPath`], the one pipeline the schedule uses — and answer per image in the
//! `check --json` shape, plus the node's name, runtime, platform and agent version. The
//! controller's assignments in the node's `NodePullStatus` come here
//! ([`super::nodestatus`]); no HTTP caller does.
//!
//! Load on the registries stays bounded however many callers ask:
//! - `depth: path` answers from the schedule's latest path check of the image's plan when
//!   it is younger than the interval; otherwise one path check per plan (cached).
//! - every probe's result is kept `preflight.cache_ttl` for any caller, and callers asking
//!   the same at the same time share one probe (in flight);
//! - probes take permits of their own (`preflight.concurrency`), never the schedule's;
//! - requests are rate limited, and bounded in images, body size and time.
//!
//! No credential value is in any reply: credential *sources* are names. Pull secrets a
//! request names are read only when the agent config allows it (`pull_secrets: true`),
//! and only where the agent's RBAC lets it read Secrets (per namespace). Requests come
//! only from the controller, the one writer of `NodePullStatus` spec (RBAC enforces it),
//! which takes them from `ImagePreflight` objects whose pull secrets are in their own
//! namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::config::PreflightConfig;
use super::export::status::rfc3339;
use super::path::PullPath;
use super::serve::auth::{RateLimit, TtlCache};
use crate::credentials::node::PullSecretData;
use crate::pipeline::{Checked, Creds};
use crate::probe::verdict::PathState;
use crate::probe::{Depth, Phase, ProbeReport, Reason, Verdict};
use crate::reference::ImageRef;

/// The reply's `apiVersion`; a CLI refuses a major it does not know.
pub const API_VERSION: &str = "pullprobe.io/v1";
/// Longest image reference accepted in a request.
pub const MAX_IMAGE_LEN: usize = 512;
/// Pull secrets one request may name.
pub const MAX_PULL_SECRETS: usize = 16;

/// The latest path check of one plan, as the schedule made it.
#[derive(Clone, Debug)]
pub struct PathResult {
    pub registry: String,
    pub state: PathState,
    pub report: ProbeReport,
    pub at: SystemTime,
    /// The registry is the node's concern (`scope.rs`), as the last cycle decided.
    pub node_scope: bool,
}

/// What the schedule shares with the endpoint: the endpoint's own probe permits
/// (`preflight.concurrency`, apart from the schedule's, so requests never starve the
/// node's own checks), the current pull path (replaced when the node's files are re-read), the latest path
/// check of every plan in use, and the interval that makes one fresh.
pub struct ProbeShare {
    pub permits: Arc<Semaphore>,
    pub path: RwLock<Option<Arc<dyn PullPath>>>,
    pub paths: Mutex<BTreeMap<String, PathResult>>,
    pub interval: Mutex<Duration>,
    pub platform: RwLock<String>,
}

impl ProbeShare {
    pub fn new(concurrency: usize, interval: Duration) -> ProbeShare {
        ProbeShare {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            path: RwLock::new(None),
            paths: Mutex::new(BTreeMap::new()),
            interval: Mutex::new(interval),
            platform: RwLock::new(String::new()),
        }
    }

    /// The node's platform (`linux/amd64`), as answers report it.
    pub fn with_platform(self, platform: String) -> ProbeShare {
        ProbeShare {
            platform: RwLock::new(platform),
            ..self
        }
    }

    pub fn set_path(&self, p: Arc<dyn PullPath>) {
        if let Ok(mut g) = self.path.write() {
            *g = Some(p);
        }
    }

    pub fn current(&self) -> Option<Arc<dyn PullPath>> {
        self.path.read().ok().and_then(|g| g.clone())
    }

    /// The schedule's path check of `plan` if it is younger than the interval.
    fn fresh_path(&self, plan: &str) -> Option<PathResult> {
        let interval = self.interval.lock().map(|i| *i).ok()?;
        let p = self.paths.lock().ok()?.get(plan).cloned()?;
        let age = SystemTime::now().duration_since(p.at).ok()?;
        (age <= interval).then_some(p)
    }
}

/// What to check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestDepth {
    /// The node's path to each image's registry (DNS, TCP, TLS, auth, manifest HEAD).
    Path,
    /// The image itself too (tag, platform, config blob).
    #[default]
    Image,
}

/// A pre-flight request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PreflightRequest {
    pub images: Vec<String>,
    pub depth: RequestDepth,
    /// The namespace of the pod the images are for (its pull secrets live there).
    pub namespace: Option<String>,
    /// The pod's `imagePullSecrets` (the CLI adds its service account's, as admission does).
    pub pull_secrets: Vec<String>,
    /// The pod's service account (recorded in the reply).
    pub service_account: Option<String>,
}

/// How the agent treated a request's pull secrets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SecretsUse {
    pub requested: Vec<String>,
    /// True when the checks used them (then the node's credentials as the kubelet does).
    pub used: bool,
    /// Why not, or which could not be read; empty when all were used.
    pub note: String,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The schedule's own path check of the plan, within the interval.
    Schedule,
    /// A probe made for an earlier request, within `preflight.cache_ttl`.
    Cache,
    /// Probed for this request.
    Probe,
}

/// The answer for one image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub depth: RequestDepth,
    pub source: Source,
    pub checked_at: String,
    /// Equal on nodes whose answer for this image's facts (tag, platform, blob) must be
    /// equal: same runtime, platform, endpoint list and credential sources. A pre-flight
    /// of a fleet checks the image once per fingerprint, not once per node.
    pub fingerprint: String,
    pub path_state: PathState,
    /// The `check --json` object.
    pub report: ProbeReport,
}

/// The reply.
#[derive(Clone, Debug, Serialize)]
pub struct PreflightReply {
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub node: String,
    pub agent_version: &'static str,
    pub runtime: String,
    pub platform: String,
    pub pull_secrets: SecretsUse,
    pub service_account: Option<String>,
    pub results: Vec<ImageResult>,
}

/// Why a request is refused (4xx/5xx); the message never quotes the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body: {0}")]
    Body(String),
    #[error("request field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("too many pre-flight requests; retry later")]
    RateLimited,
    #[error("pre-flight is disabled on this agent (preflight.enabled: false)")]
    Disabled,
    #[error("the agent has no pull path loaded yet")]
    NotReady,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Body(_) | RequestError::Field { .. } => 400,
            RequestError::RateLimited => 429,
            RequestError::Disabled => 404,
            RequestError::NotReady => 503,
        }
    }
}

type Probe = Shared<BoxFuture<'static, Checked>>;

/// The endpoint's state.
pub struct OnDemand {
    cfg: PreflightConfig,
    node: String,
    share: Arc<ProbeShare>,
    client: Option<kube::Client>,
    pull_secrets: bool,
    results: Mutex<TtlCache<String, (Checked, SystemTime)>>,
    inflight: Mutex<HashMap<String, Probe>>,
    limit: Mutex<RateLimit>,
}

/// Checks a request before anything is probed.
pub fn parse_request(body: &[u8], max_images: usize) -> Result<PreflightRequest, RequestError> {
    let req: PreflightRequest = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message can quote the offending value: report its place only.
        RequestError::Body(format!(
            "not the expected JSON (line {}, column {}, {:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    validate_request(&req, max_images)?;
    Ok(req)
}

/// The bounds and name rules every request must meet (the same for a JSON body and an
/// assignment read from the API).
pub fn validate_request(req: &PreflightRequest, max_images: usize) -> Result<(), RequestError> {
    let field = |field: &str, message: String| RequestError::Field {
        field: field.to_string(),
        message,
    };
    if req.images.is_empty() {
        return Err(field("images", "must name at least one image".into()));
    }
    if req.images.len() > max_images {
        return Err(field(
            "images",
            format!(
                "at most {max_images} images per request (got {})",
                req.images.len()
            ),
        ));
    }
    if let Some(i) = req.images.iter().position(|i| i.len() > MAX_IMAGE_LEN) {
        return Err(field(
            &format!("images[{i}]"),
            format!("longer than {MAX_IMAGE_LEN} bytes"),
        ));
    }
    if req.pull_secrets.len() > MAX_PULL_SECRETS {
        return Err(field(
            "pull_secrets",
            format!("at most {MAX_PULL_SECRETS} names"),
        ));
    }
    for (i, n) in req.pull_secrets.iter().enumerate() {
        if !is_dns_subdomain(n) {
            return Err(field(
                &format!("pull_secrets[{i}]"),
                "not a Secret name".into(),
            ));
        }
    }
    if let Some(ns) = &req.namespace {
        if !is_dns_label(ns) {
            return Err(field("namespace", "not a namespace name".into()));
        }
    }
    if let Some(sa) = &req.service_account {
        if !is_dns_subdomain(sa) {
            return Err(field("service_account", "not a ServiceAccount name".into()));
        }
    }
    if !req.pull_secrets.is_empty() && req.namespace.is_none() {
        return Err(field("namespace", "required with pull_secrets".into()));
    }
    Ok(())
}

/// RFC 1123 label (namespaces): at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain (Secret, ServiceAccount names): dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A stable short hash of the facts that make two nodes' image answers equal.
pub fn fingerprint(
    runtime: &str,
    platform: &str,
    plan: &str,
    creds: &str,
    report: &ProbeReport,
) -> String {
    let mut sources: Vec<String> = report
        .attempts
        .iter()
        .filter_map(|a| a.credential_source.as_ref().map(|s| s.to_string()))
        .collect();
    sources.sort();
    sources.dedup();
    let mut h = Sha256::new();
    for part in [API_VERSION, runtime, platform, plan, creds] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for s in &sources {
        h.update(s.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The report of an image whose reference does not parse (no probe needed).
pub(crate) fn invalid_report(given: &str, e: &crate::reference::ReferenceError) -> ProbeReport {
    ProbeReport {
        image: given.to_string(),
        reference: None,
        endpoint: None,
        verdict: Verdict::NotReady,
        phase: Some(Phase::Reference),
        reason: Some(Reason::ReferenceInvalid),
        message: format!("invalid image reference: {e}"),
        hint: None,
        duration_ms: 0.0,
        phases: Vec::new(),
        credential_source: None,
        manifest: None,
        tls: None,
        ratelimit: None,
        retry_after_s: None,
        attempts: Vec::new(),
        warnings: Vec::new(),
    }
}

/// A report that ran out of the request's time.
fn timed_out(given: &str, timeout: Duration) -> Checked {
    let mut r = invalid_report(given, &crate::reference::ReferenceError::Empty);
    r.phase = Some(Phase::Manifest);
    r.reason = Some(Reason::ProbeDeadlineExceeded);
    r.message = format!(
        "the agent's pre-flight timeout ({}) passed before the probe finished",
        humantime::format_duration(timeout)
    );
    Checked {
        report: r,
        problems: Vec::new(),
        depth: Depth::Image,
    }
}

impl OnDemand {
    pub fn new(
        cfg: PreflightConfig,
        node: String,
        share: Arc<ProbeShare>,
        client: Option<kube::Client>,
        pull_secrets: bool,
    ) -> OnDemand {
        OnDemand {
            limit: Mutex::new(RateLimit::new(cfg.requests_per_second, cfg.burst)),
            results: Mutex::new(TtlCache::new(cfg.cache_ttl, cfg.cache_entries)),
            inflight: Mutex::new(HashMap::new()),
            cfg,
            node,
            share,
            client,
            pull_secrets,
        }
    }

    /// The answer cache's TTL: assignments older than this are not answered, answers are
    /// kept this long.
    pub fn cache_ttl(&self) -> Duration {
        self.cfg.cache_ttl
    }

    /// Images one request may name.
    pub fn max_images(&self) -> usize {
        self.cfg.max_images
    }

    /// Whether requests' pull secrets are read at all (`pull_secrets: true`, in a cluster).
    pub fn reads_pull_secrets(&self) -> bool {
        self.pull_secrets && self.client.is_some()
    }

    /// Answer one request, checked against [`validate_request`] first.
    pub async fn answer_request(
        &self,
        req: &PreflightRequest,
    ) -> Result<PreflightReply, RequestError> {
        if !self.cfg.enabled {
            return Err(RequestError::Disabled);
        }
        let allowed = self.limit.lock().map(|mut l| l.try_take()).unwrap_or(false);
        if !allowed {
            return Err(RequestError::RateLimited);
        }
        validate_request(req, self.cfg.max_images)?;
        let path = self.share.current().ok_or(RequestError::NotReady)?;
        let (secrets, use_) = self.secrets(req).await;
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let futs = req
            .images
            .iter()
            .map(|given| self.answer(path.clone(), given, req.depth, &secrets, deadline));
        let results = futures::future::join_all(futs).await;
        Ok(PreflightReply {
            api_version: API_VERSION,
            node: self.node.clone(),
            agent_version: env!("CARGO_PKG_VERSION"),
            runtime: path.runtime().as_str().to_string(),
            platform: self
                .share
                .platform
                .read()
                .map(|p| p.clone())
                .unwrap_or_default(),
            pull_secrets: use_,
            service_account: req.service_account.clone(),
            results,
        })
    }

    /// The request's pull secrets, if the agent may read them; and what the reply says
    /// about them.
    async fn secrets(&self, req: &PreflightRequest) -> (Arc<Vec<PullSecretData>>, SecretsUse) {
        let mut use_ = SecretsUse {
            requested: req.pull_secrets.clone(),
            ..Default::default()
        };
        let empty = Arc::new(Vec::new());
        let Some(ns) = req
            .namespace
            .as_deref()
            .filter(|_| !req.pull_secrets.is_empty())
        else {
            return (empty, use_);
        };
        let (Some(client), true) = (&self.client, self.pull_secrets) else {
            use_.note = "not read: this agent does not read Secrets (pull_secrets: false); checked with the node's credentials only".into();
            return (empty, use_);
        };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in &req.pull_secrets {
            match crate::k8s::secrets::fetch(client, ns, name).await {
                Ok(Some(d)) => found.push(d),
                Ok(None) => missing.push(format!("{name} (not found)")),
                Err(e) => missing.push(format!(
                    "{name} ({})",
                    e.status()
                        .map(|s| format!("HTTP {s}"))
                        .unwrap_or_else(|| "API error".into())
                )),
            }
        }
        use_.used = !found.is_empty();
        if !missing.is_empty() {
            use_.note = format!(
                "left out, as the kubelet leaves out a missing secret: {}",
                missing.join(", ")
            );
        }
        (Arc::new(found), use_)
    }

    async fn answer(
        &self,
        path: Arc<dyn PullPath>,
        given: &str,
        depth: RequestDepth,
        secrets: &Arc<Vec<PullSecretData>>,
        deadline: tokio::time::Instant,
    ) -> ImageResult {
        let runtime = path.runtime().as_str();
        let platform = self
            .share
            .platform
            .read()
            .map(|p| p.clone())
            .unwrap_or_default();
        let image = match ImageRef::parse(given) {
            Ok(i) => i,
            Err(e) => {
                let report = invalid_report(given, &e);
                return ImageResult {
                    image: given.to_string(),
                    depth,
                    source: Source::Probe,
                    checked_at: rfc3339(SystemTime::now()),
                    fingerprint: fingerprint(runtime, &platform, "", "", &report),
                    path_state: PathState::Unreachable(Reason::ReferenceInvalid),
                    report,
                };
            }
        };
        let plan = path.plan_key(&image);
        let creds_id = match secrets.is_empty() {
            true => "node".to_string(),
            false => {
                let names: Vec<String> = secrets
                    .iter()
                    .map(|s| format!("{}/{}", s.namespace, s.name))
                    .collect();
                format!("pull-secrets:{}", names.join(","))
            }
        };
        let (mut checked, source, at, path_report) = match depth {
            RequestDepth::Path => self.path_answer(&path, &image, &plan, deadline).await,
            RequestDepth::Image => {
                let (c, s, at) = self
                    .probe(&path, &image, &creds_id, secrets, Depth::Image, deadline)
                    .await;
                (c.clone(), s, at, c.report)
            }
        };
        checked.report.image = given.to_string();
        let path_state = verdict_path_state(path.rules(), &checked, &path_report);
        ImageResult {
            image: given.to_string(),
            depth,
            source,
            checked_at: rfc3339(at),
            fingerprint: fingerprint(runtime, &platform, &plan, &creds_id, &path_report),
            path_state,
            // The caller chose the registry, the registry chose any other host reached.
            report: checked.report.confined_to_registries(),
        }
    }

    /// The plan's path: the schedule's if fresh, else a (cached, shared) path check.
    async fn path_answer(
        &self,
        path: &Arc<dyn PullPath>,
        image: &ImageRef,
        plan: &str,
        deadline: tokio::time::Instant,
    ) -> (Checked, Source, SystemTime, ProbeReport) {
        if let Some(p) = self.share.fresh_path(plan) {
            let mut report = p.report.clone();
            report.reference = Some(image.normalized());
            let checked = Checked {
                report: report.clone(),
                problems: Vec::new(),
                depth: Depth::Path,
            };
            return (checked, Source::Schedule, p.at, report);
        }
        let key_image = image.clone();
        let (c, s, at) = self
            .probe_keyed(
                path,
                &key_image,
                format!("path {plan}"),
                Arc::new(Vec::new()),
                Depth::Path,
                deadline,
            )
            .await;
        let report = c.report.clone();
        (c, s, at, report)
    }

    async fn probe(
        &self,
        path: &Arc<dyn PullPath>,
        image: &ImageRef,
        creds_id: &str,
        secrets: &Arc<Vec<PullSecretData>>,
        depth: Depth,
        deadline: tokio::time::Instant,
    ) -> (Checked, Source, SystemTime) {
        let key = format!(
            "image {} {} [{creds_id}]",
            path.plan_key(image),
            image.normalized()
        );
        self.probe_keyed(path, image, key, secrets.clone(), depth, deadline)
            .await
    }

    /// One probe per key at a time, its result cached for everyone.
    async fn probe_keyed(
        &self,
        path: &Arc<dyn PullPath>,
        image: &ImageRef,
        key: String,
        secrets: Arc<Vec<PullSecretData>>,
        depth: Depth,
        deadline: tokio::time::Instant,
    ) -> (Checked, Source, SystemTime) {
        if let Some((c, at)) = self.results.lock().ok().and_then(|r| r.get(&key)) {
            return (c, Source::Cache, at);
        }
        let fut = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return (
                    timed_out(&image.normalized(), self.cfg.timeout),
                    Source::Probe,
                    SystemTime::now(),
                );
            };
            inflight
                .entry(key.clone())
                .or_insert_with(|| {
                    start_probe(
                        path.clone(),
                        image.clone(),
                        secrets,
                        depth,
                        self.share.permits.clone(),
                    )
                })
                .clone()
        };
        let out = tokio::time::timeout_at(deadline, fut).await;
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
        match out {
            Ok(c) => {
                let at = SystemTime::now();
                if let Ok(mut r) = self.results.lock() {
                    r.insert(key, (c.clone(), at));
                }
                (c, Source::Probe, at)
            }
            Err(_) => (
                timed_out(&image.normalized(), self.cfg.timeout),
                Source::Probe,
                SystemTime::now(),
            ),
        }
    }
}

/// The path state an answer proves: of its path report (for an image check, the same).
fn verdict_path_state(
    rules: crate::runtime::RuntimeRules,
    c: &Checked,
    path_report: &ProbeReport,
) -> PathState {
    if c.report.reason == Some(Reason::ProbeDeadlineExceeded) && c.report.attempts.is_empty() {
        return PathState::Inconclusive(Reason::ProbeDeadlineExceeded);
    }
    crate::probe::verdict::path_state(rules, &path_report.attempts)
}

/// The probe as a shareable future: takes a permit of the shared budget first.
fn start_probe(
    path: Arc<dyn PullPath>,
    image: ImageRef,
    secrets: Arc<Vec<PullSecretData>>,
    depth: Depth,
    permits: Arc<Semaphore>,
) -> Probe {
    async move {
        let _permit = permits.acquire_owned().await.ok();
        let given = image.normalized();
        let creds = if secrets.is_empty() {
            Creds::Node
        } else {
            Creds::PullSecrets(secrets.as_slice())
        };
        path.check(&image, &given, creds, depth).await
    }
    .boxed()
    .shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::outcome::EndpointAttempt;
    use crate::runtime::Runtime;

    /// Answers every check after `delay`: ready, or ManifestNotFound for tag `missing`;
    /// counts calls by depth.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<(String, Depth)>>,
        delay: Duration,
    }

    fn report(given: &str, reason: Option<Reason>) -> ProbeReport {
        let mut r = invalid_report(given, &crate::reference::ReferenceError::Empty);
        r.reference = Some(given.to_string());
        r.verdict = if reason.is_some() {
            Verdict::NotReady
        } else {
            Verdict::Ready
        };
        r.phase = reason.map(|x| x.phase());
        r.reason = reason;
        r.message = String::new();
        r.attempts = vec![EndpointAttempt {
            endpoint: "https://reg.example/v2".into(),
            role: "server".into(),
            origin: "test".into(),
            https_to_http: false,
            is_upstream: true,
            credential_source: None,
            ok: reason.is_none(),
            phase: reason.map(|x| x.phase()),
            reason,
            message: String::new(),
            duration_ms: 1.0,
            phases: Vec::new(),
        }];
        r
    }

    impl PullPath for Fake {
        fn runtime(&self) -> Runtime {
            Runtime::Containerd
        }
        fn plan_key(&self, image: &ImageRef) -> String {
            image.registry_host()
        }
        fn check<'a>(
            &'a self,
            image: &'a ImageRef,
            given: &'a str,
            _c: Creds<'a>,
            depth: Depth,
        ) -> BoxFuture<'a, Checked> {
            Box::pin(async move {
                self.calls.lock().unwrap().push((image.normalized(), depth));
                tokio::time::sleep(self.delay).await;
                let missing = image.normalized().ends_with(":missing");
                Checked {
                    report: report(given, missing.then_some(Reason::ManifestNotFound)),
                    problems: Vec::new(),
                    depth,
                }
            })
        }
    }

    fn endpoint(fake: Arc<Fake>, cfg: PreflightConfig) -> (OnDemand, Arc<ProbeShare>) {
        let share = Arc::new(ProbeShare::new(4, Duration::from_secs(60)));
        share.set_path(fake);
        (
            OnDemand::new(cfg, "n1".into(), share.clone(), None, false),
            share,
        )
    }

    impl OnDemand {
        /// A JSON request, as the tests write them.
        /// (Bounds are checked by `answer_request`, after the rate limit.)
        async fn handle(&self, body: &[u8]) -> Result<PreflightReply, RequestError> {
            let Ok(req) = serde_json::from_slice::<PreflightRequest>(body) else {
                return Err(parse_request(body, self.cfg.max_images).unwrap_err());
            };
            self.answer_request(&req).await
        }
    }

    fn body(images: &[&str], depth: &str) -> Vec<u8> {
        serde_json::json!({"images": images, "depth": depth})
            .to_string()
            .into_bytes()
    }

    #[tokio::test]
    async fn path_answers_come_from_the_schedule_then_from_one_cached_probe() {
        let fake = Arc::new(Fake::default());
        let (od, share) = endpoint(fake.clone(), PreflightConfig::default());
        share.paths.lock().unwrap().insert(
            "reg.example".into(),
            PathResult {
                registry: "reg.example".into(),
                state: PathState::Reachable,
                report: report("reg.example/agent:1", None),
                at: SystemTime::now(),
                node_scope: true,
            },
        );
        let r = od
            .handle(&body(&["reg.example/a:1", "other.example/b:1"], "path"))
            .await
            .unwrap();
        assert_eq!(r.results[0].source, Source::Schedule);
        assert_eq!(
            r.results[0].report.image, "reg.example/a:1",
            "answered for the image asked"
        );
        assert_eq!(r.results[1].source, Source::Probe);
        assert_eq!(r.results[1].path_state, PathState::Reachable);
        let again = od
            .handle(&body(&["other.example/c:2"], "path"))
            .await
            .unwrap();
        assert_eq!(
            again.results[0].source,
            Source::Cache,
            "one path check per plan"
        );
        assert_eq!(fake.calls.lock().unwrap().len(), 1);
        // Nodes with the same runtime, platform, plan and credential sources share a fingerprint.
        assert_eq!(r.results[1].fingerprint, again.results[0].fingerprint);
        assert_ne!(r.results[0].fingerprint, r.results[1].fingerprint);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_probe_and_its_result() {
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(100),
            ..Default::default()
        });
        let (od, _) = endpoint(fake.clone(), PreflightConfig::default());
        let b = body(&["reg.example/app:missing"], "image");
        let (x, y) = tokio::join!(od.handle(&b), od.handle(&b));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            1,
            "one probe for both callers"
        );
        assert_eq!(x.results[0].report.reason, Some(Reason::ManifestNotFound));
        assert_eq!(y.results[0].report.reason, Some(Reason::ManifestNotFound));
        let z = od.handle(&b).await.unwrap();
        assert_eq!(z.results[0].source, Source::Cache);
        assert_eq!(fake.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn requests_are_bounded_and_never_echoed() {
        let fake = Arc::new(Fake::default());
        let cfg = PreflightConfig {
            max_images: 2,
            burst: 1,
            requests_per_second: 1,
            ..Default::default()
        };
        let (od, _) = endpoint(fake.clone(), cfg);
        let e = od
            .handle(br#"{"images": "s3cret-canary"}"#)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = od
            .handle(&body(&["a/b:1", "a/c:1", "a/d:1"], "image"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at most 2 images"), "{e}");
        // The burst (one) is spent by the request with too many images: the next is
        // refused without a probe.
        assert_eq!(
            od.handle(&body(&["a/b:1"], "image")).await.unwrap_err(),
            RequestError::RateLimited
        );
        assert!(fake.calls.lock().unwrap().is_empty());
        let bad = parse_request(
            br#"{"images": ["a"], "pull_secrets": ["Not_A_Name"], "namespace": "x"}"#,
            10,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("pull_secrets[0]"), "{bad}");
        let no_ns = parse_request(br#"{"images": ["a"], "pull_secrets": ["s"]}"#, 10).unwrap_err();
        assert!(no_ns.to_string().contains("namespace"), "{no_ns}");
    }

    #[tokio::test]
    async fn secrets_are_not_read_unless_the_agent_may_and_bad_references_need_no_probe() {
        let fake = Arc::new(Fake::default());
        let (od, _) = endpoint(fake.clone(), PreflightConfig::default());
        let req = br#"{"images": ["reg.example/a:1", "UPPER/Case::x"], "namespace": "apps", "pull_secrets": ["regcred"]}"#;
        let r = od.handle(req).await.unwrap();
        assert!(!r.pull_secrets.used);
        assert!(
            r.pull_secrets.note.contains("pull_secrets: false"),
            "{}",
            r.pull_secrets.note
        );
        assert_eq!(r.results[1].report.reason, Some(Reason::ReferenceInvalid));
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            1,
            "only the valid reference is probed"
        );
        assert_eq!(r.api_version, API_VERSION);
        assert_eq!(r.node, "n1");
    }
}
