//! The agent loop: build targets, pick what is due, probe with bounded concurrency,
//! then report to metrics, logs, `/status`, Node conditions and Events.
//!
//! Condition writes run in their own task ([`sync_conditions`]), so an API server
//! outage delays writes (retried with backoff) but never probing or local reporting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::credentials::node::PullSecretData;
use crate::nodeconfig::{ConfigProblem, NodeConfig, NodeConfigOptions, ProblemKind};
use crate::probe::{
    Failure, Platform, ProbeOptions, ProbeReport, ProbeTarget, Prober, Reason, Timeouts,
};
use crate::reference::ImageRef;

use super::conditions::{
    classify, condition_reason, summarize, Class, Clock, ConditionKind, ConditionManager, Problem,
};
use super::config::{AgentConfig, ConfigWatcher, Reload};
use super::events::{EventDeduper, EventRecord, InvolvedObject};
use super::http::{AgentState, StatusEntry};
use super::logs;
use super::schedule::{cycles_per_period, image_checks_per_period, image_due, Backoff, Jitter};
use super::targets::{plan_key, plan_key_of, CredRef, PodInfo, TargetKey, TargetSet};

/// Which check a probe is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Per-node path check of a registry host: DNS, TCP, TLS, auth, manifest HEAD.
    Path,
    /// Per-image check (shared over the fleet): tag, platform, blob.
    Image,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Path => "path",
            CheckKind::Image => "image",
        }
    }
}

/// The probe call, behind a trait so tests inject results.
pub trait ProbeRunner: Send + Sync {
    fn probe<'a>(&'a self, target: &'a ProbeTarget, kind: CheckKind) -> BoxFuture<'a, ProbeReport>;
}

/// The real engine: one [`Prober`] per check kind, each living for the agent's lifetime
/// (they hold the token caches).
pub struct EngineRunner {
    path: Prober,
    image: Prober,
}

impl EngineRunner {
    /// `node_config` supplies the runtime's proxy environment (the resolver files are
    /// the host root's either way).
    pub fn new(
        cfg: &AgentConfig,
        host_root: &std::path::Path,
        node_config: Option<&NodeConfig>,
    ) -> EngineRunner {
        let base = ProbeOptions {
            runtime: cfg.runtime,
            timeouts: Timeouts::default(),
            platform: Platform::host(),
            no_blob: false,
            depth: crate::probe::Depth::Image,
            resolv_conf: host_root.join("etc/resolv.conf"),
            hosts_file: host_root.join("etc/hosts"),
            proxy_env: node_config.map(|n| n.proxy.clone()),
        };
        let path = ProbeOptions {
            depth: crate::probe::Depth::Path,
            no_blob: true,
            ..base.clone()
        };
        EngineRunner {
            path: Prober::new(path),
            image: Prober::new(base),
        }
    }
}

impl ProbeRunner for EngineRunner {
    fn probe<'a>(&'a self, target: &'a ProbeTarget, kind: CheckKind) -> BoxFuture<'a, ProbeReport> {
        Box::pin(async move {
            match kind {
                CheckKind::Path => self.path.probe(target).await,
                CheckKind::Image => self.image.probe(target).await,
            }
        })
    }
}

/// Pull secrets fetched this cycle, by (namespace, name).
pub type SecretCache = HashMap<(String, String), PullSecretData>;

/// Endpoints and credentials for one image and credential source, as the node would use
/// them: the node's plan (hosts.toml / registries.conf under the host root; a blocked
/// registry or an unusable hosts directory becomes the target's refusal, as in
/// `pullprobe check`) and the kubelet's credentials in its order (the pod's pull
/// secrets for a `PullSecrets` source, then the node's config.json, then
/// credential-provider plugins). Without a node config (unit tests) the engine derives
/// the default upstream endpoint and probes anonymously. Credential problems (a bad
/// secret, a failed plugin) come back alongside.
pub async fn probe_target(
    node_config: Option<&NodeConfig>,
    image: &ImageRef,
    cred: &CredRef,
    secrets: &SecretCache,
) -> (ProbeTarget, Vec<ConfigProblem>) {
    let mut target = ProbeTarget::new(image.normalized());
    let Some(nc) = node_config else {
        return (target, Vec::new());
    };
    let plan = nc.plan(image);
    target.endpoints = plan.endpoints;
    if plan.blocked {
        target.refusal = Some(Failure::new(
            Reason::RegistryBlocked,
            format!(
                "{} is blocked by the runtime's registries.conf",
                image.domain
            ),
        ));
    } else if let Some(err) = plan.runtime_error {
        target.refusal = Some(Failure::new(Reason::NoUsableEndpoint, err));
    }
    let data: Vec<PullSecretData> = match cred {
        CredRef::Node => Vec::new(),
        CredRef::PullSecrets { namespace, names } => names
            .iter()
            .filter_map(|n| secrets.get(&(namespace.clone(), n.clone())).cloned())
            .collect(),
    };
    let (credentials, problems) = nc.credentials(image, &data).await;
    target.credentials = credentials;
    (target, problems)
}

/// A pod's own pull secret was rejected in one of the report's attempts (the kubelet
/// then goes on with the node's credentials, so the verdict may still be a pass).
fn pull_secret_rejected(report: &ProbeReport) -> Option<String> {
    report.attempts.iter().find_map(|a| {
        let src = a.credential_source.as_ref()?;
        (matches!(src, crate::credentials::CredentialSource::PullSecret { .. })
            && matches!(
                a.reason,
                Some(Reason::AuthCredentialsRejected | Reason::AuthDenied)
            ))
        .then(|| src.to_string())
    })
}

/// The cluster side; `None` in standalone mode.
#[derive(Clone)]
pub struct ClusterCtx {
    pub client: kube::Client,
    pub node_uid: String,
    pub pods: Arc<Mutex<BTreeMap<String, PodInfo>>>,
}

struct Job {
    kind: CheckKind,
    key: String,
    registry: String,
    host: String,
    cred: CredRef,
    image: ImageRef,
    pods: Vec<String>,
    pod_refs: Vec<super::targets::PodRef>,
}

/// The latest path check of one (plan, credential source).
#[derive(Clone, Debug)]
struct PathResult {
    at: Instant,
    class: Class,
    endpoint: String,
    /// A credential-provider plugin failed for this registry (node credentials only).
    provider_failed: bool,
}

/// State carried from cycle to cycle.
pub struct Agent {
    pub cfg: AgentConfig,
    pub watcher: Option<ConfigWatcher>,
    pub node: String,
    pub host_root: PathBuf,
    pub state: Arc<AgentState>,
    pub runner: Arc<dyn ProbeRunner>,
    pub cluster: Option<ClusterCtx>,
    pub manager: Arc<Mutex<ConditionManager>>,
    pub clock: Arc<dyn Clock>,
    pub node_count: u64,
    /// The node's pull path; `None` = default endpoints, anonymous (unit tests).
    pub node_config: Option<Arc<NodeConfig>>,
    node_config_opts: Option<NodeConfigOptions>,
    node_config_at: Instant,
    backoff: HashMap<String, Backoff>,
    seen: HashSet<TargetKey>,
    last_path: HashMap<(String, CredRef), PathResult>,
    events: EventDeduper,
    jitter: Jitter,
    started: Instant,
    cycle_no: u64,
}

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AgentConfig,
        watcher: Option<ConfigWatcher>,
        node: String,
        host_root: PathBuf,
        state: Arc<AgentState>,
        runner: Arc<dyn ProbeRunner>,
        cluster: Option<ClusterCtx>,
        clock: Arc<dyn Clock>,
        node_count: u64,
    ) -> Agent {
        let jitter = Jitter::from_node(&node);
        let manager = ConditionManager::new(
            cfg.fail_after,
            cfg.recover_after,
            cfg.heartbeat,
            Jitter::from_node(&format!("{node}/heartbeat")),
            clock.now(),
        );
        Agent {
            cfg,
            watcher,
            node,
            host_root,
            state,
            runner,
            cluster,
            manager: Arc::new(Mutex::new(manager)),
            clock,
            node_count: node_count.max(1),
            node_config: None,
            node_config_opts: None,
            node_config_at: Instant::now(),
            backoff: HashMap::new(),
            seen: HashSet::new(),
            last_path: HashMap::new(),
            events: EventDeduper::new(Duration::from_secs(3600)),
            jitter,
            started: Instant::now(),
            cycle_no: 0,
        }
    }

    /// Use the node's pull path (loaded with `opts`, reloaded every `reload_interval`).
    pub fn with_node_config(mut self, opts: NodeConfigOptions, nc: Arc<NodeConfig>) -> Agent {
        self.node_config = Some(nc);
        self.node_config_opts = Some(opts);
        self.node_config_at = Instant::now();
        self
    }

    /// Re-read the node's runtime and kubelet config (hosts.toml, registries.conf,
    /// config.json, plugin config) so edits on the node show up without a restart.
    fn reload_node_config(&mut self) {
        let Some(opts) = &self.node_config_opts else {
            return;
        };
        if self.node_config_at.elapsed() < self.cfg.reload_interval {
            return;
        }
        self.node_config_at = Instant::now();
        match NodeConfig::load(opts) {
            Ok(nc) => self.node_config = Some(Arc::new(nc)),
            Err(e) => {
                tracing::error!(node = %self.node, error = %e, "cannot reload the node's config, keeping the previous one")
            }
        }
    }

    /// Time to sleep before the next cycle.
    pub fn next_delay(&mut self) -> Duration {
        self.jitter.around(self.cfg.interval, self.cfg.jitter)
    }

    fn reload(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.check() {
            Reload::Unchanged => {}
            Reload::Changed(cfg) => {
                tracing::info!(target: "pullprobe::config", node = %self.node, "config reloaded");
                if let Ok(mut m) = self.manager.lock() {
                    m.reconfigure(cfg.fail_after, cfg.recover_after, cfg.heartbeat);
                }
                self.state.set_interval(cfg.interval);
                self.state.metrics.config_reload_ok.set(1);
                self.cfg = *cfg;
            }
            Reload::Rejected(e) => {
                self.state.metrics.config_reload_ok.set(0);
                tracing::error!(target: "pullprobe::config", node = %self.node, error = %e, "config rejected, keeping the previous one");
            }
        }
    }

    fn monotonic(&self) -> Duration {
        self.started.elapsed()
    }

    /// One cycle.
    pub async fn cycle(&mut self) {
        let cycle_start = Instant::now();
        self.reload();
        self.reload_node_config();
        let pods: Vec<PodInfo> = match &self.cluster {
            Some(c) => c
                .pods
                .lock()
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let nc = self.node_config.clone();
        let key = |i: &ImageRef| match &nc {
            Some(nc) => plan_key_of(i, &nc.plan(i).endpoints),
            None => plan_key(i),
        };
        let set = TargetSet::build(
            &pods,
            &self.cfg.images,
            self.cfg.pull_secrets && self.cluster.is_some(),
            &key,
        );
        let m = &self.state.metrics;
        m.set_targets("image", set.images.len());
        m.set_targets("path", set.hosts.len());
        m.set_targets("pod", pods.len());

        let jobs = self.pick_jobs(&set);
        let secrets = self.fetch_secrets(&jobs).await;
        let reports = self.run_jobs(&jobs, &secrets).await;
        self.report(&set, &jobs, reports);

        self.cycle_no += 1;
        self.state.metrics.cycles.inc();
        self.state
            .metrics
            .cycle_duration
            .observe(cycle_start.elapsed().as_secs_f64());
        self.state.cycle_done();
    }

    fn pick_jobs(&mut self, set: &TargetSet) -> Vec<Job> {
        let now = self.monotonic();
        let mut jobs = Vec::new();
        for ((host, cred), h) in &set.hosts {
            if !self.backoff.get(host).is_none_or(|b| b.allows(now)) {
                continue;
            }
            let every = self
                .cfg
                .budget(&h.registry)
                .path_interval
                .unwrap_or(self.cfg.interval);
            let last = self
                .last_path
                .get(&(host.clone(), cred.clone()))
                .map(|r| r.at);
            // Half an interval of slack so jitter never skips a due check.
            if last
                .as_ref()
                .is_some_and(|t| t.elapsed() + self.cfg.interval / 2 < every)
            {
                continue;
            }
            jobs.push(Job {
                kind: CheckKind::Path,
                key: format!("path {host} [{cred}]"),
                registry: h.registry.clone(),
                host: host.clone(),
                cred: cred.clone(),
                image: h.image.clone(),
                pods: Vec::new(),
                pod_refs: Vec::new(),
            });
        }
        let cpp = cycles_per_period(self.cfg.fleet.period, self.cfg.interval);
        let unix_cycle = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() / self.cfg.interval.as_secs().max(1))
            .unwrap_or(self.cycle_no);
        for (key, t) in &set.images {
            if !self.backoff.get(&key.plan).is_none_or(|b| b.allows(now)) {
                continue;
            }
            let fresh = self.seen.insert(key.clone());
            let name = key.to_string();
            let k = self
                .cfg
                .budget(&t.registry)
                .checks_per_period
                .unwrap_or(self.cfg.fleet.checks_per_period);
            let per_period = image_checks_per_period(&name, &self.node, self.node_count, k);
            if !fresh && !image_due(&name, &self.node, per_period, cpp, unix_cycle) {
                continue;
            }
            jobs.push(Job {
                kind: CheckKind::Image,
                key: format!("image {name}"),
                registry: t.registry.clone(),
                host: key.plan.clone(),
                cred: key.cred.clone(),
                image: t.image.clone(),
                pods: t
                    .pods
                    .iter()
                    .take(10)
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect(),
                pod_refs: t.pods.clone(),
            });
        }
        // Forget images no longer in use, so one coming back counts as new.
        self.seen.retain(|k| set.images.contains_key(k));
        jobs
    }

    /// The pull secrets this cycle's jobs name, fetched once each. A secret that cannot
    /// be read (no `get secrets` grant, API down) is left out, as the kubelet leaves out
    /// a missing one; the probe then uses the node's credentials.
    async fn fetch_secrets(&self, jobs: &[Job]) -> SecretCache {
        let mut out = SecretCache::new();
        let Some(c) = &self.cluster else {
            return out;
        };
        let mut wanted: Vec<(String, String)> = jobs
            .iter()
            .filter_map(|j| match &j.cred {
                CredRef::PullSecrets { namespace, names } => Some(
                    names
                        .iter()
                        .map(|n| (namespace.clone(), n.clone()))
                        .collect::<Vec<_>>(),
                ),
                CredRef::Node => None,
            })
            .flatten()
            .collect();
        wanted.sort();
        wanted.dedup();
        for (ns, name) in wanted {
            match crate::k8s::secrets::fetch(&c.client, &ns, &name).await {
                Ok(Some(d)) => {
                    out.insert((ns, name), d);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(node = %self.node, secret = %format!("{ns}/{name}"), error = %e, "cannot read a pull secret")
                }
            }
        }
        out
    }

    async fn run_jobs(
        &self,
        jobs: &[Job],
        secrets: &SecretCache,
    ) -> Vec<(ProbeReport, Vec<ConfigProblem>)> {
        let global = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut per_host: HashMap<&str, Arc<Semaphore>> = HashMap::new();
        for j in jobs {
            per_host.entry(j.host.as_str()).or_insert_with(|| {
                let n = self
                    .cfg
                    .budget(&j.registry)
                    .concurrency
                    .unwrap_or(self.cfg.per_host_concurrency);
                Arc::new(Semaphore::new(n))
            });
        }
        let futs = jobs.iter().map(|j| {
            let global = global.clone();
            let host = per_host.get(j.host.as_str()).cloned();
            let runner = self.runner.clone();
            let nc = self.node_config.clone();
            async move {
                // Host first, then global: a slow host cannot hold global permits while
                // it waits for its own.
                let _h = match &host {
                    Some(s) => s.clone().acquire_owned().await.ok(),
                    None => None,
                };
                let _g = global.acquire_owned().await.ok();
                let (target, problems) =
                    probe_target(nc.as_deref(), &j.image, &j.cred, secrets).await;
                (runner.probe(&target, j.kind).await, problems)
            }
        });
        futures::future::join_all(futs).await
    }

    fn report(
        &mut self,
        set: &TargetSet,
        jobs: &[Job],
        reports: Vec<(ProbeReport, Vec<ConfigProblem>)>,
    ) {
        let now_sys = self.clock.now();
        let now_unix = now_sys
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let checked_at = jiff::Timestamp::try_from(now_sys)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mono = self.monotonic();
        let mut workload: Vec<(InvolvedObject, String, String, String)> = Vec::new();
        for (job, (report, problems)) in jobs.iter().zip(reports) {
            let cred = job.cred.to_string();
            self.state
                .metrics
                .record_probe(&job.registry, job.kind.as_str(), &report, now_unix);
            logs::probe(&self.node, job.kind.as_str(), &job.registry, &cred, &report);
            let class = classify(&report, job.cred.is_node());
            let backoff = self.backoff.entry(job.host.clone()).or_default();
            match class {
                Class::Unreachable(_) | Class::Inconclusive(_) => {
                    let ra = report.retry_after_s.map(Duration::from_secs);
                    backoff.on_failure_with(
                        mono,
                        ra,
                        self.cfg.backoff.initial,
                        self.cfg.backoff.max,
                    );
                }
                Class::Ok => backoff.on_success(),
                Class::NodeAuth(_) | Class::Workload(_) => {}
            }
            let endpoint = report.endpoint.clone().unwrap_or_else(|| job.host.clone());
            if job.kind == CheckKind::Path {
                let provider_failed =
                    job.cred.is_node() && problems.iter().any(|p| p.kind == ProblemKind::Plugin);
                for p in problems.iter().filter(|p| p.kind == ProblemKind::Plugin) {
                    tracing::warn!(node = %self.node, registry = %job.registry, problem = %p, "credential provider failed");
                }
                self.last_path.insert(
                    (job.host.clone(), job.cred.clone()),
                    PathResult {
                        at: Instant::now(),
                        class,
                        endpoint: endpoint.clone(),
                        provider_failed,
                    },
                );
            }
            // A pod's own pull secret that is unusable or rejected is the pod's problem:
            // an Event on the Pod, never a node condition.
            if !job.cred.is_node() {
                let bad_secret = problems
                    .iter()
                    .find(|p| p.file.to_string_lossy().starts_with("secret:"))
                    .map(|p| ("PullSecretInvalid", p.to_string()))
                    .or_else(|| {
                        pull_secret_rejected(&report).map(|src| {
                            (
                                "PullSecretRejected",
                                format!("{src} was rejected by the registry"),
                            )
                        })
                    });
                if let Some((reason, msg)) = bad_secret {
                    for p in &job.pod_refs {
                        workload.push((
                            InvolvedObject::Pod {
                                namespace: p.namespace.clone(),
                                name: p.name.clone(),
                                uid: p.uid.clone(),
                            },
                            reason.to_string(),
                            format!("image {}: {msg}", report.image),
                            format!("{reason} {}", report.image),
                        ));
                    }
                }
            }
            if let Class::Workload(reason) = class {
                for p in &job.pod_refs {
                    workload.push((
                        InvolvedObject::Pod {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            uid: p.uid.clone(),
                        },
                        reason.as_str().to_string(),
                        format!("image {}: {}", report.image, report.message),
                        report.image.clone(),
                    ));
                }
            }
            let entry = StatusEntry {
                kind: job.kind.as_str(),
                image: report.image.clone(),
                registry: job.registry.clone(),
                credential: cred,
                endpoint: report.endpoint.clone(),
                verdict: report.verdict.as_str(),
                phase: report.phase.map(|p| p.as_str()),
                reason: report.reason.map(|r| r.as_str()),
                message: report.message.clone(),
                duration_ms: report.duration_ms,
                checked_at: checked_at.clone(),
                pods: job.pods.clone(),
            };
            if let Ok(mut s) = self.state.status.lock() {
                s.insert(job.key.clone(), entry);
            }
        }
        for inv in &set.invalid {
            if let Some(p) = &inv.pod {
                workload.push((
                    InvolvedObject::Pod {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                    },
                    "ReferenceInvalid".to_string(),
                    format!("image {:?}: {}", inv.image, inv.error),
                    inv.image.clone(),
                ));
            }
        }
        // Keep /status to current targets.
        let live: HashSet<String> = set
            .hosts
            .iter()
            .map(|((h, c), _)| format!("path {h} [{c}]"))
            .chain(set.images.keys().map(|k| format!("image {k}")))
            .collect();
        if let Ok(mut s) = self.state.status.lock() {
            s.retain(|k, _| live.contains(k));
        }
        self.last_path.retain(|k, _| set.hosts.contains_key(k));

        // Conditions from the latest path check of every host in use (a host in backoff
        // keeps its last result, so backing off does not look like recovery).
        let mut unreachable = Vec::new();
        let mut auth = Vec::new();
        for ((host, _), r) in &self.last_path {
            let endpoint = &r.endpoint;
            if r.provider_failed {
                auth.push(Problem {
                    registry: host.clone(),
                    endpoint: endpoint.clone(),
                    reason: "CredentialProviderFailed",
                });
            }
            match &r.class {
                Class::Unreachable(r) => unreachable.push(Problem {
                    registry: host.clone(),
                    endpoint: endpoint.clone(),
                    reason: condition_reason(*r),
                }),
                Class::NodeAuth(r) => auth.push(Problem {
                    registry: host.clone(),
                    endpoint: endpoint.clone(),
                    reason: r.as_str(),
                }),
                _ => {}
            }
        }
        let mut changes = Vec::new();
        if let Ok(mut m) = self.manager.lock() {
            changes.extend(m.observe(
                ConditionKind::RegistryUnreachable,
                summarize(unreachable),
                now_sys,
            ));
            changes.extend(m.observe(ConditionKind::RegistryAuthFailing, summarize(auth), now_sys));
            for k in ConditionKind::ALL {
                self.state.metrics.set_condition(k, m.status(k));
            }
            if let Ok(mut c) = self.state.conditions.lock() {
                for r in m.records(now_sys) {
                    c.insert(r.kind, (r.status, r.reason));
                }
            }
        }
        let mut to_post: Vec<EventRecord> = Vec::new();
        for ch in &changes {
            logs::condition_change(&self.node, ch);
            if ch.transition {
                if let Some(c) = &self.cluster {
                    let obj = InvolvedObject::Node {
                        name: self.node.clone(),
                        uid: c.node_uid.clone(),
                    };
                    let reason = format!(
                        "{}{}",
                        ch.kind.as_str(),
                        if ch.status { "" } else { "Resolved" }
                    );
                    let ty = if ch.status { "Warning" } else { "Normal" };
                    // A transition is always news: key on its time so it is never deduplicated away.
                    let key = format!("{now_unix}");
                    to_post.extend(self.events.emit(
                        obj,
                        ty,
                        &reason,
                        &format!("{}: {}", ch.reason, ch.message),
                        &key,
                        now_sys,
                    ));
                }
            }
        }
        if self.cluster.is_some() {
            for (obj, reason, message, key) in workload {
                to_post.extend(
                    self.events
                        .emit(obj, "Warning", &reason, &message, &key, now_sys),
                );
            }
            let live_uids: HashSet<String> = set
                .images
                .values()
                .flat_map(|t| t.pods.iter().map(|p| p.uid.clone()))
                .chain(std::iter::once(
                    self.cluster
                        .as_ref()
                        .map(|c| c.node_uid.clone())
                        .unwrap_or_default(),
                ))
                .collect();
            self.events.retain_uids(&live_uids);
        }
        if let Some(c) = &self.cluster {
            for ev in to_post {
                let client = c.client.clone();
                let node = self.node.clone();
                let state = self.state.clone();
                tokio::spawn(async move {
                    let r = crate::k8s::events::post(&client, &node, &ev).await;
                    state.metrics.api_write("event", r.is_ok());
                    if let Err(e) = r {
                        tracing::warn!(error = %e, event = %ev.name, "cannot post event");
                    }
                });
            }
        }
    }
}

/// Write conditions when due, forever (cluster mode), ticking every second.
pub async fn sync_conditions(
    client: kube::Client,
    node: String,
    manager: Arc<Mutex<ConditionManager>>,
    clock: Arc<dyn Clock>,
    state: Arc<AgentState>,
) {
    loop {
        sync_once(&client, &node, &manager, clock.as_ref(), &state).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One write attempt if one is due. Returns true if a write was made and succeeded.
pub async fn sync_once(
    client: &kube::Client,
    node: &str,
    manager: &Mutex<ConditionManager>,
    clock: &dyn Clock,
    state: &AgentState,
) -> bool {
    let now = clock.now();
    let pending = manager.lock().ok().and_then(|m| m.pending_write(now));
    let Some(records) = pending else { return false };
    let r = crate::k8s::node::patch_conditions(client, node, &records).await;
    state.metrics.api_write("node_status", r.is_ok());
    let Ok(mut m) = manager.lock() else {
        return false;
    };
    match r {
        Ok(()) => {
            m.write_succeeded(now);
            true
        }
        Err(e) => {
            let d = m.write_failed(now);
            tracing::warn!(node, error = %e, retry_in_s = d.as_secs(), "cannot write node conditions");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::conditions::FakeClock;
    use crate::agent::metrics::tests::report;
    use crate::probe::{Reason, Verdict};

    /// Answers from a table keyed by image; counts calls per kind.
    struct Fake {
        answers: Mutex<HashMap<String, (Verdict, Option<Reason>)>>,
        calls: Mutex<Vec<(String, CheckKind)>>,
    }

    impl ProbeRunner for Fake {
        fn probe<'a>(&'a self, t: &'a ProbeTarget, kind: CheckKind) -> BoxFuture<'a, ProbeReport> {
            Box::pin(async move {
                self.calls.lock().unwrap().push((t.image.clone(), kind));
                let (v, r) = self
                    .answers
                    .lock()
                    .unwrap()
                    .get(&t.image)
                    .cloned()
                    .unwrap_or((Verdict::Ready, None));
                let mut rep = report(v, r);
                rep.image = t.image.clone();
                rep
            })
        }
    }

    fn agent(images: &[&str], fake: Arc<Fake>) -> Agent {
        let cfg = AgentConfig {
            images: images.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let state = Arc::new(AgentState::new("node-1".into(), cfg.interval));
        let clock = Arc::new(FakeClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        Agent::new(
            cfg,
            None,
            "node-1".into(),
            "/".into(),
            state,
            fake,
            None,
            clock,
            5000,
        )
    }

    #[tokio::test]
    async fn standalone_cycles_flip_conditions_with_hysteresis() {
        let fake = Arc::new(Fake {
            answers: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
        });
        let mut a = agent(
            &["r.example/a:1", "r.example/b:1", "q.example/c:1"],
            fake.clone(),
        );
        a.cycle().await;
        {
            let calls = fake.calls.lock().unwrap();
            // Two hosts → two path checks; three new images → three image checks at once.
            assert_eq!(calls.iter().filter(|c| c.1 == CheckKind::Path).count(), 2);
            assert_eq!(calls.iter().filter(|c| c.1 == CheckKind::Image).count(), 3);
        }
        assert!(a.state.ready());
        fake.answers.lock().unwrap().insert(
            "r.example/a:1".into(),
            (Verdict::NotReady, Some(Reason::ConnectTimeout)),
        );
        fake.calls.lock().unwrap().clear();
        // Force the path checks due again (no real waiting in tests).
        a.last_path
            .values_mut()
            .for_each(|v| v.at = Instant::now() - Duration::from_secs(3600));
        a.cycle().await;
        assert!(
            !a.manager
                .lock()
                .unwrap()
                .status(ConditionKind::RegistryUnreachable),
            "one failing cycle is a blip"
        );
        // The host is now backed off: the next cycle does not probe it but keeps its failure.
        a.cycle().await;
        assert!(a
            .manager
            .lock()
            .unwrap()
            .status(ConditionKind::RegistryUnreachable));
        let st = a.state.status.lock().unwrap();
        assert!(st.keys().any(|k| k.starts_with("path r.example")));
        // At 5000 nodes, known images are rarely due on one node.
        let image_calls = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == CheckKind::Image)
            .count();
        assert!(image_calls <= 1, "{image_calls}");
    }
}
