//! The agent loop, one way through: targets (pods + config images) → what is due →
//! checks through the one pipeline → what they proved ([`outcome`](super::outcome)) →
//! conditions after hysteresis → every exporter. Ownership: the loop task owns the
//! `Agent`; the condition manager is shared with the condition writer behind one mutex,
//! held only for an observation or to take a pending write.

mod jobs;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::credentials::node::PullSecretData;
use crate::probe::verdict::PathState;
use crate::probe::Reason;
use crate::reference::ImageRef;

use self::jobs::{InFlight, Job};

use super::conditions::{summarize, Clock, ConditionKind, ConditionManager};
use super::config::{AgentConfig, ConfigWatcher, Reload};
use super::export::Exporter;
use super::ondemand::{PathResult, ProbeShare};
use super::outcome::{
    condition_problems, decisive_attempt, tenant_problems, workload_problems, CheckKind,
    CheckRecord, CheckTarget, ConditionState, CycleOutcome, NodeView, RegistryPath, TargetCounts,
};
use super::path::PullPath;
use super::persist::{from_unix, unix, Saved, SavedBackoff, Store};
use super::schedule::{cycles_per_period, image_checks_per_period, image_due, Backoff, Jitter};
use super::scope::{ReachedBefore, Scope, ScopeRule};
use super::state::AgentState;
use super::targets::{CredRef, Limits, PodInfo, TargetKey, TargetSet};

/// Pull secrets fetched this cycle, by (namespace, name), and those the API server
/// refused to give (403: no `get secrets` in that namespace).
#[derive(Default)]
pub struct SecretCache {
    pub found: HashMap<(String, String), PullSecretData>,
    pub forbidden: HashSet<(String, String)>,
}

/// The cluster side of the loop; `None` in standalone mode.
#[derive(Clone)]
pub struct ClusterCtx {
    pub client: kube::Client,
    pub node_uid: String,
    pub pods: crate::k8s::pods::PodStore,
}

/// State carried from cycle to cycle.
pub struct Agent {
    pub cfg: AgentConfig,
    pub watcher: Option<ConfigWatcher>,
    pub node: String,
    /// The agent's own namespace: always trusted (`scope.rs`).
    pub namespace: Option<String>,
    pub state: Arc<AgentState>,
    pub path: Arc<dyn PullPath>,
    pub cluster: Option<ClusterCtx>,
    /// The node's pods (the cluster's watch; set by tests without a cluster).
    pub pods: Option<crate::k8s::pods::PodStore>,
    pub manager: Arc<Mutex<ConditionManager>>,
    pub clock: Arc<dyn Clock>,
    pub node_count: u64,
    pub exporters: Vec<Box<dyn Exporter>>,
    /// Shared with the on-demand endpoint: its own probe permits, the current pull path
    /// and the latest path check of every plan.
    pub share: Arc<ProbeShare>,
    reloaded_at: Instant,
    backoff: HashMap<String, Backoff>,
    seen: HashSet<TargetKey>,
    /// The latest path check of every plan in use.
    last_path: BTreeMap<String, RegistryPath>,
    /// Registries whose blob host an image check could not reach (cleared by one that can).
    blob_failures: BTreeMap<String, RegistryPath>,
    /// Checks running (or waiting for permits), carried across cycles.
    inflight: InFlight,
    /// Plans whose path check was ever launched (the new-hosts-per-cycle cap).
    known_plans: HashSet<String>,
    /// Registries reached from this node before (kept across restarts).
    reached: ReachedBefore,
    store: Option<Store>,
    jitter: Jitter,
    started: Instant,
    cycle_no: u64,
}

/// Everything an [`Agent`] is built from (`mod.rs` wires these; tests use [`Agent::new`]).
pub struct Parts {
    pub cfg: AgentConfig,
    pub node: String,
    pub state: Arc<AgentState>,
    pub path: Arc<dyn PullPath>,
    pub clock: Arc<dyn Clock>,
    /// Shared with the assignment answerer ([`ProbeShare`]); [`Parts::share_for`] builds it.
    pub share: Arc<ProbeShare>,
    pub watcher: Option<ConfigWatcher>,
    pub namespace: Option<String>,
    pub cluster: Option<ClusterCtx>,
    pub exporters: Vec<Box<dyn Exporter>>,
    /// Our conditions as the Node has them (a restart neither flips nor rewrites them).
    pub seed: Vec<crate::report::records::ConditionRecord>,
}

impl Parts {
    /// The probe share of an agent with `cfg` on `path`.
    pub fn share_for(
        cfg: &AgentConfig,
        path: Arc<dyn PullPath>,
        platform: String,
    ) -> Arc<ProbeShare> {
        let share =
            ProbeShare::new(cfg.preflight.concurrency, cfg.interval).with_platform(platform);
        share.set_path(path);
        Arc::new(share)
    }
}

impl Agent {
    /// An agent with no cluster, no config watcher and no exporters (tests).
    pub fn new(
        cfg: AgentConfig,
        node: String,
        state: Arc<AgentState>,
        path: Arc<dyn PullPath>,
        clock: Arc<dyn Clock>,
    ) -> Agent {
        let share = Parts::share_for(&cfg, path.clone(), String::new());
        Agent::from_parts(Parts {
            cfg,
            node,
            state,
            path,
            clock,
            share,
            watcher: None,
            namespace: None,
            cluster: None,
            exporters: Vec::new(),
            seed: Vec::new(),
        })
    }

    /// The agent, with its saved state restored (`state_dir`).
    pub fn from_parts(p: Parts) -> Agent {
        let Parts {
            cfg,
            node,
            state,
            path,
            clock,
            share,
            watcher,
            namespace,
            cluster,
            exporters,
            seed,
        } = p;
        let mut manager = ConditionManager::new(
            cfg.fail_after,
            cfg.recover_after,
            cfg.heartbeat,
            Jitter::from_node(&format!("{node}/heartbeat")),
            clock.now(),
        );
        manager.seed(&seed, clock.now());
        let store = cfg.state_dir.as_deref().map(Store::new);
        let mut agent = Agent {
            share,
            jitter: Jitter::from_node(&node),
            node_count: cfg.fleet.node_count.unwrap_or(1).max(1),
            inflight: InFlight::new(cfg.concurrency),
            cfg,
            watcher,
            node,
            namespace: namespace.filter(|n| !n.is_empty()),
            state,
            path,
            pods: cluster.as_ref().map(|c| c.pods.clone()),
            cluster,
            manager: Arc::new(Mutex::new(manager)),
            clock,
            exporters,
            reloaded_at: Instant::now(),
            backoff: HashMap::new(),
            seen: HashSet::new(),
            last_path: BTreeMap::new(),
            blob_failures: BTreeMap::new(),
            known_plans: HashSet::new(),
            reached: ReachedBefore::default(),
            store,
            started: Instant::now(),
            cycle_no: 0,
        };
        agent.restore();
        agent
    }

    /// Time to sleep before the next cycle: the jittered interval from the start of the
    /// one that just ended, so cycles keep their period whatever a cycle waited for.
    pub fn next_delay(&mut self, cycle_took: Duration) -> Duration {
        self.jitter
            .around(self.cfg.interval, self.cfg.jitter)
            .saturating_sub(cycle_took)
    }

    /// Restore what the state file kept (backoff, registries reached before); a file that
    /// cannot be used is reported and replaced at the next save.
    fn restore(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let now = self.clock.now();
        let saved = match store.load(now) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "agent state not restored");
                return;
            }
        };
        let mono = self.started.elapsed();
        for (plan, b) in saved.backoff {
            let left = from_unix(b.until).duration_since(now).unwrap_or_default();
            self.backoff
                .insert(plan, Backoff::restored(b.failures, mono + left));
        }
        self.reached = saved.reached;
        tracing::info!(node = %self.node, backoffs = self.backoff.len(), reached = self.reached.len(), "agent state restored");
    }

    /// Save what must survive a restart, when it changed.
    fn save(&mut self) {
        let now = self.clock.now();
        let mono = self.monotonic();
        let backoff = self
            .backoff
            .iter()
            .filter_map(|(plan, b)| {
                let until = b.until()?.checked_sub(mono)?;
                Some((
                    plan.clone(),
                    SavedBackoff {
                        failures: b.failures(),
                        until: unix(now + until),
                    },
                ))
            })
            .collect();
        let saved = Saved {
            version: 0,
            backoff,
            reached: self.reached.clone(),
        }
        .bounded(now);
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = store.save(&saved) {
            tracing::warn!(node = %self.node, error = %e, "agent state not saved");
        }
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
        match &self.pods {
            Some(p) => p
                .lock()
                .map(|p| p.values().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Namespaces whose pods' registries are the node's concern.
    fn trusted_namespaces(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .cfg
            .tenancy
            .trusted_namespaces
            .iter()
            .cloned()
            .collect();
        out.extend(self.namespace.clone());
        out
    }

    /// This cycle's targets, with the tenancy caps applied.
    fn targets(&self, pods: &[PodInfo]) -> TargetSet {
        let t = &self.cfg.tenancy;
        let limits = Limits {
            images_per_pod: t.max_images_per_pod,
            targets_per_namespace: t.max_targets_per_namespace,
            trusted_namespaces: self.trusted_namespaces(),
        };
        let path = self.path.clone();
        TargetSet::build_limited(
            pods,
            &self.cfg.images,
            self.cfg.pull_secrets && self.cluster.is_some(),
            &|i: &ImageRef| path.plan_key(i),
            &limits,
        )
    }

    fn scope_rule(&self, set: &TargetSet) -> ScopeRule {
        ScopeRule {
            named: self.cfg.named_registries(),
            trusted_use: set.trusted_registries.clone(),
            drift_min_age: self.cfg.tenancy.drift_min_age,
        }
    }

    fn scope_of(&self, rule: &ScopeRule, registry: &str) -> Scope {
        rule.scope(registry, &self.reached, self.clock.now())
    }

    /// One cycle: launch what is due, wait for checks up to the cycle budget (all of them
    /// with `wait_all`), then learn, decide and export what finished.
    pub async fn cycle_with(&mut self, wait_all: bool) {
        let started = Instant::now();
        self.state.progress();
        self.reload_config();
        self.reload_node();
        let pods = self.pods();
        let set = self.targets(&pods);
        let rule = self.scope_rule(&set);
        let (jobs, deferred) = self.pick_jobs(&set, &rule);
        let jobs = self.with_secrets(jobs).await;
        let per_host = self.cfg.per_host_concurrency;
        for j in jobs {
            let n = self
                .cfg
                .budget(&j.target.registry)
                .concurrency
                .unwrap_or(per_host);
            self.inflight
                .launch(j, n, self.path.clone(), self.clock.clone());
        }
        let budget = (!wait_all).then(|| self.cfg.cycle_budget());
        let state = self.state.clone();
        let checks = self.inflight.collect(budget, &|| state.progress()).await;
        self.learn(&checks);
        let mut outcome = self.outcome(&set, &rule, checks, pods.len(), started.elapsed());
        outcome.counts.deferred = deferred;
        outcome.counts.in_flight = self.inflight.running();
        for e in &mut self.exporters {
            e.export(&outcome);
        }
        self.save();
        // The loop, not an exporter, says the agent is ready: from the first cycle on.
        self.state.cycle_done();
        self.cycle_no += 1;
    }

    /// One cycle within the cycle budget.
    pub async fn cycle(&mut self) {
        self.cycle_with(false).await
    }

    fn path_job(&self, plan: &str, h: &super::targets::HostCheck, rule: &ScopeRule) -> Option<Job> {
        let now = self.monotonic();
        let key = format!("path {plan}");
        if self.inflight.busy(&key) || !self.backoff.get(plan).is_none_or(|b| b.allows(now)) {
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
            target: CheckTarget {
                kind: CheckKind::Path,
                key,
                registry: h.registry.clone(),
                plan: plan.to_string(),
                cred: CredRef::Node,
                image: h.image.clone(),
                pods: Vec::new(),
                unreadable_secrets: Vec::new(),
            },
            node_scope: self.scope_of(rule, &h.registry).is_node(),
            secrets: Vec::new(),
            failing: self.last_path.contains_key(plan) && !self.path_answered(plan),
        })
    }

    /// Plans this cycle may check: those known, and at most
    /// `tenancy.max_new_hosts_per_cycle` new ones (the rest wait; returned as a count).
    fn admitted_plans(&mut self, set: &TargetSet) -> (HashSet<String>, usize) {
        self.known_plans.retain(|p| set.hosts.contains_key(p));
        let mut admitted = HashSet::new();
        let mut new = 0usize;
        let mut deferred = 0usize;
        // Node-scope registries first, so a tenant's flood of new hosts cannot delay them.
        let named = self.cfg.named_registries();
        let mut plans: Vec<(&String, &super::targets::HostCheck)> = set.hosts.iter().collect();
        plans.sort_by_key(|(plan, h)| {
            let node = named.contains(&h.registry) || set.trusted_registries.contains(&h.registry);
            (!node, *plan)
        });
        for (plan, _) in plans {
            if self.known_plans.contains(plan) {
                admitted.insert(plan.clone());
            } else if new < self.cfg.tenancy.max_new_hosts_per_cycle {
                new += 1;
                self.known_plans.insert(plan.clone());
                admitted.insert(plan.clone());
            } else {
                deferred += 1;
            }
        }
        (admitted, deferred)
    }

    fn pick_jobs(&mut self, set: &TargetSet, rule: &ScopeRule) -> (Vec<Job>, usize) {
        let (admitted, deferred) = self.admitted_plans(set);
        let mut jobs: Vec<Job> = set
            .hosts
            .iter()
            .filter(|(plan, _)| admitted.contains(*plan))
            .filter_map(|(plan, h)| self.path_job(plan, h, rule))
            .collect();
        let cpp = cycles_per_period(self.cfg.fleet.period, self.cfg.interval);
        let unix_cycle = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() / self.cfg.interval.as_secs().max(1))
            .unwrap_or(self.cycle_no);
        let now = self.monotonic();
        for (key, t) in &set.images {
            let job_key = format!("image {key}");
            if !admitted.contains(&key.plan)
                || self.inflight.busy(&job_key)
                || !self.backoff.get(&key.plan).is_none_or(|b| b.allows(now))
            {
                continue;
            }
            let node_scope = self.scope_of(rule, &t.registry).is_node();
            if !node_scope && !self.path_answered(&key.plan) {
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
                target: CheckTarget {
                    kind: CheckKind::Image,
                    key: job_key,
                    registry: t.registry.clone(),
                    plan: key.plan.clone(),
                    cred: key.cred.clone(),
                    image: t.image.clone(),
                    pods: t.pods.clone(),
                    unreadable_secrets: Vec::new(),
                },
                node_scope,
                secrets: Vec::new(),
                failing: false,
            });
        }
        // Forget images no longer in use, so one coming back counts as new.
        self.seen.retain(|k| set.images.contains_key(k));
        self.inflight
            .retain_hosts(&|plan: &str| set.hosts.contains_key(plan));
        (Self::fair_order(jobs, &self.last_path), deferred)
    }

    /// Whether the registry of `plan` answered its last path check. A tenant's image checks
    /// wait for that: a host that never answers (a tarpit, a typo) costs one path check per
    /// backoff, not one per image, and its verdict goes to the pods as a workload problem.
    fn path_answered(&self, plan: &str) -> bool {
        self.last_path
            .get(plan)
            .is_some_and(|p| matches!(p.state, PathState::Reachable | PathState::AuthFailing(_)))
    }

    /// Launch order: node-scope checks first; then plans whose last path check worked or
    /// that were never checked before failing ones, so a host that keeps timing out
    /// queues behind the others for its permits.
    fn fair_order(mut jobs: Vec<Job>, last: &BTreeMap<String, RegistryPath>) -> Vec<Job> {
        jobs.sort_by_key(|j| {
            let failing = last
                .get(&j.target.plan)
                .is_some_and(|p| p.state != PathState::Reachable);
            (!j.node_scope, failing)
        });
        jobs
    }

    /// The jobs with the pull secrets they name, fetched once each. A secret that cannot
    /// be read (no `get secrets` grant, API down) is left out, as the kubelet leaves out
    /// a missing one; the probe then uses the node's credentials.
    async fn with_secrets(&self, mut jobs: Vec<Job>) -> Vec<Job> {
        let secrets = self.fetch_secrets(&jobs).await;
        for j in &mut jobs {
            if let CredRef::PullSecrets { namespace, names } = &j.target.cred {
                j.secrets = names
                    .iter()
                    .filter_map(|n| secrets.found.get(&(namespace.clone(), n.clone())).cloned())
                    .collect();
                j.target.unreadable_secrets = names
                    .iter()
                    .filter(|n| {
                        secrets
                            .forbidden
                            .contains(&(namespace.clone(), (*n).clone()))
                    })
                    .cloned()
                    .collect();
            }
        }
        jobs
    }

    async fn fetch_secrets(&self, jobs: &[Job]) -> SecretCache {
        let mut out = SecretCache::default();
        let Some(c) = &self.cluster else {
            return out;
        };
        let mut wanted: Vec<(String, String)> = jobs
            .iter()
            .flat_map(|j| match &j.target.cred {
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
                    out.found.insert((ns, name), d);
                }
                Ok(None) => {}
                Err(e) if e.status() == Some(403) => {
                    out.forbidden.insert((ns, name));
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, secret = %format!("{ns}/{name}"), error = %e, "cannot read a pull secret")
                }
            }
        }
        out
    }

    /// Backoff, the latest path of each plan, and blob-host failures, from this cycle.
    fn learn(&mut self, checks: &[CheckRecord]) {
        let mono = self.monotonic();
        for c in checks {
            let backoff = self.backoff.entry(c.target.plan.clone()).or_default();
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
            match c.target.kind {
                CheckKind::Path => self.learn_path(c),
                CheckKind::Image => self.learn_blob(c),
            }
        }
    }

    fn registry_path(c: &CheckRecord, state: PathState, since: SystemTime) -> RegistryPath {
        let attempts = &c.checked.report.attempts;
        let decisive = decisive_attempt(state, attempts);
        RegistryPath {
            registry: c.target.registry.clone(),
            plan: c.target.plan.clone(),
            state,
            endpoint: decisive.map(|a| a.endpoint.clone()).unwrap_or_default(),
            credential: decisive
                .and_then(|a| a.credential_source.as_ref())
                .map(|s| s.to_string()),
            provider_failed: c
                .checked
                .problems
                .iter()
                .find(|p| p.is_node())
                .map(|p| p.to_string()),
            degraded: super::outcome::degraded(state, attempts),
            // Decided each cycle by the rule of the day (`outcome`).
            scope: Scope::Workload,
            since,
            checked_at: c.at,
        }
    }

    fn learn_path(&mut self, c: &CheckRecord) {
        let since = match self.last_path.get(&c.target.plan) {
            Some(p) if p.state == c.state => p.since,
            _ => c.at,
        };
        for p in c.checked.problems.iter().filter(|p| p.is_node()) {
            tracing::warn!(node = %self.node, registry = %c.target.registry, problem = %p, "credential provider failed");
        }
        if c.state == PathState::Reachable && self.reached.reached(&c.target.registry, c.at) {
            tracing::info!(node = %self.node, registry = %c.target.registry, "registry reached from this node for the first time");
        }
        self.last_path.insert(
            c.target.plan.clone(),
            Self::registry_path(c, c.state, since),
        );
        if let Ok(mut paths) = self.share.paths.lock() {
            let node_scope = paths.get(&c.target.plan).is_some_and(|p| p.node_scope);
            paths.insert(
                c.target.plan.clone(),
                PathResult {
                    registry: c.target.registry.clone(),
                    state: c.state,
                    report: c.checked.report.clone(),
                    at: c.at,
                    node_scope,
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
                .get(&c.target.registry)
                .map(|p| p.since)
                .unwrap_or(c.at);
            let p = Self::registry_path(c, c.state, since);
            self.blob_failures.insert(c.target.registry.clone(), p);
        } else if r.verdict.pulls()
            && r.manifest
                .as_ref()
                .is_some_and(|m| m.config_digest.is_some())
        {
            self.blob_failures.remove(&c.target.registry);
        }
    }

    fn outcome(
        &mut self,
        set: &TargetSet,
        rule: &ScopeRule,
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
        for p in &mut paths {
            p.scope = self.scope_of(rule, &p.registry);
        }
        if let Ok(mut shared) = self.share.paths.lock() {
            for p in &paths {
                if let Some(s) = shared.get_mut(&p.plan) {
                    s.node_scope = p.scope.is_node();
                }
            }
        }
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
        let mut workload = workload_problems(&checks, &set.invalid, self.cfg.pull_secrets);
        workload.extend(tenant_problems(&paths, set, &self.node));
        CycleOutcome {
            node: self.node.clone(),
            at: now,
            duration,
            workload,
            checks,
            paths,
            conditions,
            changes,
            counts: TargetCounts {
                images: set.images.len(),
                paths: set.hosts.len(),
                pods,
                ..TargetCounts::default()
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
