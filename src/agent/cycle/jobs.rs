//! Checks in flight. A cycle launches the checks that are due as tasks and waits for them
//! only up to its budget; a check still running then (a registry that accepts TCP and
//! never answers) goes on in the background, holding its permits, and its result is
//! collected by a later cycle. A target whose check is in flight is not launched again.
//!
//! Permits, so that one registry or one tenant never starves the others:
//! - each registry plan has its own semaphore (`per_host_concurrency`), taken first, so a
//!   slow host cannot hold overall permits while it waits for its own;
//! - registries that are the node's concern (`scope.rs`) take only the overall permits
//!   (`concurrency`); the others first take one of at most half of them, so checks of
//!   registries only tenants use can never hold more than half of the overall budget;
//! - a tenant's registry whose last path check failed (a tarpit, a typo) first takes one of
//!   a quarter of the overall permits, so hosts that keep failing slowly cannot hold the
//!   tenant permits that working registries need;
//! - pre-flight requests have permits of their own (`ondemand.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::credentials::node::PullSecretData;
use crate::pipeline::Creds;
use crate::probe::Depth;

use crate::agent::conditions::Clock;
use crate::agent::outcome::{CheckKind, CheckRecord, CheckTarget};
use crate::agent::path::PullPath;
use crate::agent::targets::CredRef;

/// One check to make.
pub struct Job {
    pub target: CheckTarget,
    /// The registry is the node's concern (takes only the overall permits).
    pub node_scope: bool,
    /// The pull secrets the check uses (fetched before launch).
    pub secrets: Vec<PullSecretData>,
    /// The registry's last path check failed.
    pub failing: bool,
}

/// How long a cycle still waits for tenants' checks once the node's own are done.
pub const TENANT_GRACE: Duration = Duration::from_secs(1);

/// The checks in flight and the permits they take.
pub struct InFlight {
    tasks: JoinSet<CheckRecord>,
    keys: HashMap<tokio::task::Id, String>,
    busy: HashSet<String>,
    /// The keys in `busy` of checks of the node's own registries.
    node_busy: HashSet<String>,
    overall: Arc<Semaphore>,
    tenant: Arc<Semaphore>,
    failing: Arc<Semaphore>,
    per_host: HashMap<String, Arc<Semaphore>>,
}

impl InFlight {
    pub fn new(concurrency: usize) -> InFlight {
        let concurrency = concurrency.max(1);
        InFlight {
            tasks: JoinSet::new(),
            keys: HashMap::new(),
            busy: HashSet::new(),
            node_busy: HashSet::new(),
            overall: Arc::new(Semaphore::new(concurrency)),
            tenant: Arc::new(Semaphore::new((concurrency / 2).max(1))),
            failing: Arc::new(Semaphore::new((concurrency / 4).max(1))),
            per_host: HashMap::new(),
        }
    }

    /// Is the check `key` running (or waiting for its permits)?
    pub fn busy(&self, key: &str) -> bool {
        self.busy.contains(key)
    }

    /// How many checks are running or waiting for permits.
    pub fn running(&self) -> usize {
        self.busy.len()
    }

    /// Forget the semaphores of plans no longer in use (their tasks keep their own `Arc`).
    pub fn retain_hosts(&mut self, live: &dyn Fn(&str) -> bool) {
        self.per_host.retain(|plan, _| live(plan));
    }

    /// Start `job`; its host semaphore allows `per_host` checks at once.
    pub fn launch(
        &mut self,
        job: Job,
        per_host: usize,
        path: Arc<dyn PullPath>,
        clock: Arc<dyn Clock>,
    ) {
        let host = self
            .per_host
            .entry(job.target.plan.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(per_host.max(1))))
            .clone();
        let overall = self.overall.clone();
        let tenant = (!job.node_scope).then(|| self.tenant.clone());
        let failing = (!job.node_scope && job.failing).then(|| self.failing.clone());
        let key = job.target.key.clone();
        let node_scope = job.node_scope;
        let handle = self.tasks.spawn(async move {
            let _h = host.acquire_owned().await.ok();
            let _f = match failing {
                Some(f) => f.acquire_owned().await.ok(),
                None => None,
            };
            let _t = match tenant {
                Some(t) => t.acquire_owned().await.ok(),
                None => None,
            };
            let _o = overall.acquire_owned().await.ok();
            run(job, path, clock).await
        });
        self.keys.insert(handle.id(), key.clone());
        if node_scope {
            self.node_busy.insert(key.clone());
        }
        self.busy.insert(key);
    }

    /// The checks that finish within `budget` (all of them when `None`), and those that
    /// finished since the last collection. Calls `progress` for each. Once no check of the
    /// node's own registries is in flight, tenants' checks get at most [`TENANT_GRACE`]
    /// more: the node's verdict is not held back by a tenant's slow host (its check goes
    /// on, and a later cycle collects it).
    pub async fn collect(
        &mut self,
        budget: Option<Duration>,
        progress: &dyn Fn(),
    ) -> Vec<CheckRecord> {
        let mut deadline = budget.map(|b| tokio::time::Instant::now() + b);
        let mut out = Vec::new();
        loop {
            if self.node_busy.is_empty() {
                let grace = tokio::time::Instant::now() + TENANT_GRACE;
                deadline = deadline.map(|d| d.min(grace));
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.tasks.join_next_with_id()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => self.tasks.join_next_with_id().await,
            };
            let id = match next {
                None => break,
                Some(Ok((id, record))) => {
                    out.push(record);
                    id
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "a check task failed");
                    e.id()
                }
            };
            if let Some(k) = self.keys.remove(&id) {
                self.node_busy.remove(&k);
                self.busy.remove(&k);
            }
            progress();
        }
        out
    }
}

/// One check through the pull path.
async fn run(j: Job, path: Arc<dyn PullPath>, clock: Arc<dyn Clock>) -> CheckRecord {
    let creds = match &j.target.cred {
        CredRef::Node => Creds::Node,
        CredRef::PullSecrets { .. } => Creds::PullSecrets(&j.secrets),
    };
    let depth = match j.target.kind {
        CheckKind::Path => Depth::Path,
        CheckKind::Image => Depth::Image,
    };
    let given = j.target.image.normalized();
    let checked = path.check(&j.target.image, &given, creds, depth).await;
    let state = checked.path_state(path.rules());
    CheckRecord {
        target: j.target,
        checked,
        state,
        at: clock.now(),
    }
}
