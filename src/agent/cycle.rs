//! The agent loop, one way through: targets (pods + config images) → what is due →
//! checks through the one pipeline → what they proved ([`outcome`](super::outcome)) →
//! conditions after hysteresis → every exporter. Ownership: the loop task owns the
//! `Agent`; the condition manager is shared with the condition writer behind one mutex,
//! held only for an observation or to take a pending write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use crate::credentials::node::PullSecretData;
use crate::pipeline::Creds;
use crate::probe::verdict::PathState;
use crate::probe::{Depth, Reason};
use crate::reference::ImageRef;

use super::conditions::{summarize, Clock, ConditionKind, ConditionManager};
use super::config::{AgentConfig, ConfigWatcher, Reload};
use super::export::Exporter;
use super::http::AgentState;
use super::ondemand::{PathResult, ProbeShare};
use super::outcome::{
    condition_problems, decisive_endpoint, workload_problems, CheckKind, CheckRecord,
    ConditionState, CycleOutcome, NodeView, RegistryPath, TargetCounts,
};
use super::path::PullPath;
use super::schedule::{cycles_per_period, image_checks_per_period, image_due, Backoff, Jitter};
use super::targets::{CredRef, PodInfo, PodRef, TargetKey, TargetSet};

/// Pull secrets fetched this cycle, by (namespace, name).
pub type SecretCache = HashMap<(String, String), PullSecretData>;

/// The cluster side of the loop; `None` in standalone mode.
#[derive(Clone)]
pub struct ClusterCtx {
    pub client: kube::Client,
    pub node_uid: String,
    pub pods: crate::k8s::pods::PodStore,
}

/// One check to make this cycle.
struct Job {
    kind: CheckKind,
    key: String,
    registry: String,
    plan: String,
    cred: CredRef,
    image: ImageRef,
    pods: Vec<PodRef>,
}

/// State carried from cycle to cycle.
pub struct Agent {
    pub cfg: AgentConfig,
    pub watcher: Option<ConfigWatcher>,
    pub node: String,
    pub state: Arc<AgentState>,
    pub path: Arc<dyn PullPath>,
    pub cluster: Option<ClusterCtx>,
    pub manager: Arc<Mutex<ConditionManager>>,
    pub clock: Arc<dyn Clock>,
    pub node_count: u64,
    pub exporters: Vec<Box<dyn Exporter>>,
    /// Shared with the on-demand endpoint: the probe permits, the current pull path and
    /// the latest path check of every plan.
    pub share: Arc<ProbeShare>,
    reloaded_at: Instant,
    backoff: HashMap<String, Backoff>,
    seen: HashSet<TargetKey>,
    /// The latest path check of every plan in use.
    last_path: BTreeMap<String, RegistryPath>,
    /// Registries whose blob host an image check could not reach (cleared by one that can).
    blob_failures: BTreeMap<String, RegistryPath>,
    jitter: Jitter,
    started: Instant,
    cycle_no: u64,
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        node: String,
        state: Arc<AgentState>,
        path: Arc<dyn PullPath>,
        clock: Arc<dyn Clock>,
    ) -> Agent {
        let manager = ConditionManager::new(
            cfg.fail_after,
            cfg.recover_after,
            cfg.heartbeat,
            Jitter::from_node(&format!("{node}/heartbeat")),
            clock.now(),
        );
        let share = Arc::new(ProbeShare::new(cfg.concurrency, cfg.interval));
        share.set_path(path.clone());
        Agent {
            share,
            jitter: Jitter::from_node(&node),
            node_count: cfg.fleet.node_count.unwrap_or(1).max(1),
            cfg,
            watcher: None,
            node,
            state,
            path,
            cluster: None,
            manager: Arc::new(Mutex::new(manager)),
            clock,
            exporters: Vec::new(),
            reloaded_at: Instant::now(),
            backoff: HashMap::new(),
            seen: HashSet::new(),
            last_path: BTreeMap::new(),
            blob_failures: BTreeMap::new(),
            started: Instant::now(),
            cycle_no: 0,
        }
    }

    /// Time to sleep before the next cycle.
    pub fn next_delay(&mut self) -> Duration {
        self.jitter.around(self.cfg.interval, self.cfg.jitter)
    }

    fn reload_config(&mut self) {
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
                if let Ok(mut i) = self.share.interval.lock() {
                    *i = cfg.interval;
                }
                self.state.metrics.config_reload_ok.set(1);
                self.cfg = *cfg;
            }
            Reload::Rejected(e) => {
                self.state.metrics.config_reload_ok.set(0);
                tracing::error!(target: "pullprobe::config", node = %self.node, error = %e, "config rejected, keeping the previous one");
            }
        }
    }

    /// Re-read the node's files (hosts.toml, registries.conf, CA bundle, resolv.conf,
    /// config.json, plugin config) so edits show up without a restart.
    fn reload_node(&mut self) {
        if self.reloaded_at.elapsed() < self.cfg.reload_interval {
            return;
        }
        self.reloaded_at = Instant::now();
        match self.path.reload() {
            Some(Ok(p)) => {
                self.path = Arc::new(p);
                self.share.set_path(self.path.clone());
            }
            Some(Err(e)) => {
                tracing::error!(node = %self.node, error = %e, "cannot reload the node's config, keeping the previous one")
            }
            None => {}
        }
    }

    fn monotonic(&self) -> Duration {
        self.started.elapsed()
    }

    fn pods(&self) -> Vec<PodInfo> {
        match &self.cluster {
            Some(c) => c
                .pods
                .lock()
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// One cycle.
    pub async fn cycle(&mut self) {
        let started = Instant::now();
        self.reload_config();
        self.reload_node();
        let pods = self.pods();
        let path = self.path.clone();
        let set = TargetSet::build(
            &pods,
            &self.cfg.images,
            self.cfg.pull_secrets && self.cluster.is_some(),
            &|i: &ImageRef| path.plan_key(i),
        );
        let jobs = self.pick_jobs(&set);
        let secrets = self.fetch_secrets(&jobs).await;
        let checks = self.run_jobs(jobs, &secrets).await;
        self.learn(&checks);
        let outcome = self.outcome(&set, checks, pods.len(), started.elapsed());
        for e in &mut self.exporters {
            e.export(&outcome);
        }
        self.cycle_no += 1;
    }

    fn path_job(&self, plan: &str, h: &super::targets::HostCheck) -> Option<Job> {
        let now = self.monotonic();
        if !self.backoff.get(plan).is_none_or(|b| b.allows(now)) {
            return None;
        }
        let every = self
            .cfg
            .budget(&h.registry)
            .path_interval
            .unwrap_or(self.cfg.interval);
        let last = self.last_path.get(plan).map(|r| r.checked_at);
        let elapsed = last.and_then(|t| self.clock.now().duration_since(t).ok());
        // Half an interval of slack so jitter never skips a due check.
        if elapsed.is_some_and(|e| e + self.cfg.interval / 2 < every) {
            return None;
        }
        Some(Job {
            kind: CheckKind::Path,
            key: format!("path {plan}"),
            registry: h.registry.clone(),
            plan: plan.to_string(),
            cred: CredRef::Node,
            image: h.image.clone(),
            pods: Vec::new(),
        })
    }

    fn pick_jobs(&mut self, set: &TargetSet) -> Vec<Job> {
        let mut jobs: Vec<Job> = set
            .hosts
            .iter()
            .filter_map(|(plan, h)| self.path_job(plan, h))
            .collect();
        let cpp = cycles_per_period(self.cfg.fleet.period, self.cfg.interval);
        let unix_cycle = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() / self.cfg.interval.as_secs().max(1))
            .unwrap_or(self.cycle_no);
        let now = self.monotonic();
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
                plan: key.plan.clone(),
                cred: key.cred.clone(),
                image: t.image.clone(),
                pods: t.pods.clone(),
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
            .flat_map(|j| match &j.cred {
                CredRef::PullSecrets { namespace, names } => names
                    .iter()
                    .map(|n| (namespace.clone(), n.clone()))
                    .collect::<Vec<_>>(),
                CredRef::Node => Vec::new(),
            })
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

    async fn run_jobs(&self, jobs: Vec<Job>, secrets: &SecretCache) -> Vec<CheckRecord> {
        // One budget with the on-demand endpoint: pre-flight requests never add to it.
        let global = self.share.permits.clone();
        let mut per_host: HashMap<String, Arc<Semaphore>> = HashMap::new();
        for j in &jobs {
            per_host.entry(j.plan.clone()).or_insert_with(|| {
                let n = self
                    .cfg
                    .budget(&j.registry)
                    .concurrency
                    .unwrap_or(self.cfg.per_host_concurrency);
                Arc::new(Semaphore::new(n.max(1)))
            });
        }
        let runtime = self.path.runtime();
        let futs = jobs.into_iter().map(|j| {
            let global = global.clone();
            let host = per_host.get(&j.plan).cloned();
            let path = self.path.clone();
            let clock = self.clock.clone();
            async move {
                // Host first, then global: a slow host cannot hold global permits while
                // it waits for its own.
                let _h = match host {
                    Some(s) => s.acquire_owned().await.ok(),
                    None => None,
                };
                let _g = global.acquire_owned().await.ok();
                let data: Vec<PullSecretData> = match &j.cred {
                    CredRef::Node => Vec::new(),
                    CredRef::PullSecrets { namespace, names } => names
                        .iter()
                        .filter_map(|n| secrets.get(&(namespace.clone(), n.clone())).cloned())
                        .collect(),
                };
                let creds = match &j.cred {
                    CredRef::Node => Creds::Node,
                    CredRef::PullSecrets { .. } => Creds::PullSecrets(&data),
                };
                let depth = match j.kind {
                    CheckKind::Path => Depth::Path,
                    CheckKind::Image => Depth::Image,
                };
                let given = j.image.normalized();
                let checked = path.check(&j.image, &given, creds, depth).await;
                let state = checked.path_state(runtime);
                CheckRecord {
                    kind: j.kind,
                    key: j.key,
                    registry: j.registry,
                    plan: j.plan,
                    cred: j.cred,
                    image: j.image,
                    pods: j.pods,
                    checked,
                    state,
                    at: clock.now(),
                }
            }
        });
        futures::future::join_all(futs).await
    }

    /// Backoff, the latest path of each plan, and blob-host failures, from this cycle.
    fn learn(&mut self, checks: &[CheckRecord]) {
        let mono = self.monotonic();
        for c in checks {
            let backoff = self.backoff.entry(c.plan.clone()).or_default();
            match c.state {
                PathState::Unreachable(_) | PathState::Inconclusive(_) => {
                    let ra = c.checked.report.retry_after_s.map(Duration::from_secs);
                    backoff.on_failure_with(
                        mono,
                        ra,
                        self.cfg.backoff.initial,
                        self.cfg.backoff.max,
                    );
                }
                PathState::Reachable => backoff.on_success(),
                PathState::AuthFailing(_) => {}
            }
            match c.kind {
                CheckKind::Path => self.learn_path(c),
                CheckKind::Image => self.learn_blob(c),
            }
        }
    }

    fn registry_path(c: &CheckRecord, state: PathState, since: SystemTime) -> RegistryPath {
        let attempts = &c.checked.report.attempts;
        RegistryPath {
            registry: c.registry.clone(),
            plan: c.plan.clone(),
            state,
            endpoint: decisive_endpoint(state, attempts),
            provider_failed: c
                .checked
                .problems
                .iter()
                .find(|p| p.is_node())
                .map(|p| p.to_string()),
            degraded: state == PathState::Reachable
                && attempts
                    .first()
                    .is_some_and(|a| !a.ok && !crate::probe::verdict::proves_path(a)),
            since,
            checked_at: c.at,
        }
    }

    fn learn_path(&mut self, c: &CheckRecord) {
        let since = match self.last_path.get(&c.plan) {
            Some(p) if p.state == c.state => p.since,
            _ => c.at,
        };
        for p in c.checked.problems.iter().filter(|p| p.is_node()) {
            tracing::warn!(node = %self.node, registry = %c.registry, problem = %p, "credential provider failed");
        }
        self.last_path
            .insert(c.plan.clone(), Self::registry_path(c, c.state, since));
        if let Ok(mut paths) = self.share.paths.lock() {
            paths.insert(
                c.plan.clone(),
                PathResult {
                    registry: c.registry.clone(),
                    state: c.state,
                    report: c.checked.report.clone(),
                    at: c.at,
                },
            );
        }
    }

    /// An image check that failed reaching its blob host marks the registry's blob path
    /// failing (the CDN is part of the node's path); one that passed the blob phase clears it.
    fn learn_blob(&mut self, c: &CheckRecord) {
        let r = &c.checked.report;
        let blob_host_down = matches!(c.state, PathState::Unreachable(Reason::BlobHostUnreachable));
        if blob_host_down {
            let since = self
                .blob_failures
                .get(&c.registry)
                .map(|p| p.since)
                .unwrap_or(c.at);
            let p = Self::registry_path(c, c.state, since);
            self.blob_failures.insert(c.registry.clone(), p);
        } else if r.verdict.pulls()
            && r.manifest
                .as_ref()
                .is_some_and(|m| m.config_digest.is_some())
        {
            self.blob_failures.remove(&c.registry);
        }
    }

    fn outcome(
        &mut self,
        set: &TargetSet,
        checks: Vec<CheckRecord>,
        pods: usize,
        duration: Duration,
    ) -> CycleOutcome {
        self.last_path
            .retain(|plan, _| set.hosts.contains_key(plan));
        if let Ok(mut paths) = self.share.paths.lock() {
            paths.retain(|plan, _| set.hosts.contains_key(plan));
        }
        let registries: HashSet<&str> = set.hosts.values().map(|h| h.registry.as_str()).collect();
        self.blob_failures
            .retain(|r, _| registries.contains(r.as_str()));
        let mut paths: Vec<RegistryPath> = self.last_path.values().cloned().collect();
        paths.extend(self.blob_failures.values().cloned());
        let now = self.clock.now();
        let (conditions, changes) = self.observe(&paths, now);
        let live_keys = set
            .hosts
            .keys()
            .map(|p| format!("path {p}"))
            .chain(set.images.keys().map(|k| format!("image {k}")))
            .collect();
        let mut live_uids: HashSet<String> = set
            .images
            .values()
            .flat_map(|t| t.pods.iter().map(|p| p.uid.clone()))
            .collect();
        if let Some(c) = &self.cluster {
            live_uids.insert(c.node_uid.clone());
        }
        CycleOutcome {
            node: self.node.clone(),
            at: now,
            duration,
            workload: workload_problems(&checks, &set.invalid),
            checks,
            paths,
            conditions,
            changes,
            counts: TargetCounts {
                images: set.images.len(),
                paths: set.hosts.len(),
                pods,
            },
            live_keys,
            live_uids,
            node_config: self
                .path
                .node()
                .map(|nc| NodeView::of(nc, self.path.caches())),
        }
    }

    /// Conditions after this cycle's observation (hysteresis in the manager).
    fn observe(
        &self,
        paths: &[RegistryPath],
        now: SystemTime,
    ) -> (Vec<ConditionState>, Vec<super::conditions::Change>) {
        let (unreachable, auth) = condition_problems(paths);
        let Ok(mut m) = self.manager.lock() else {
            return (Vec::new(), Vec::new());
        };
        let mut changes = Vec::new();
        changes.extend(m.observe(
            ConditionKind::RegistryUnreachable,
            summarize(unreachable),
            now,
        ));
        changes.extend(m.observe(ConditionKind::RegistryAuthFailing, summarize(auth), now));
        let conditions = m
            .records(now)
            .into_iter()
            .map(|record| ConditionState {
                progress: m.progress(record.kind).unwrap_or_default(),
                record,
            })
            .collect();
        (conditions, changes)
    }
}

#[cfg(test)]
mod tests;
