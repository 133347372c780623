//! One cycle's outcome: the checks made, what they proved about the node's path to each
//! registry, the workload problems of pods, and the conditions after hysteresis. Plain
//! data: every exporter (conditions/events, metrics, logs, `/status`) reads this one value.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::credentials::CredentialSource;
use crate::pipeline::{Checked, CredentialProblem};
use crate::probe::outcome::EndpointAttempt;
use crate::probe::verdict::PathState;
use crate::probe::Reason;
use crate::reference::ImageRef;

use super::conditions::{condition_reason, Change, Problem};
use super::scope::Scope;
use super::targets::{CredRef, InvalidImage, PodRef, TargetSet};
use crate::report::records::ConditionRecord;

/// Which check a probe is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Per-node path check of a registry: DNS, TCP, TLS, auth, manifest HEAD.
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

/// What a check is of: the job that makes it and the record of what it found share it.
#[derive(Clone, Debug)]
pub struct CheckTarget {
    pub kind: CheckKind,
    /// Stable identity of the target (`/status`, dedup of Events).
    pub key: String,
    /// The registry as written in references: metrics label, condition subject.
    pub registry: String,
    /// The plan key: registry host plus mirrors.
    pub plan: String,
    pub cred: CredRef,
    pub image: ImageRef,
    pub pods: Vec<PodRef>,
    /// The pull secrets of `cred` the API server would not give the agent (403).
    pub unreadable_secrets: Vec<String>,
}

/// One check made this cycle.
#[derive(Clone, Debug)]
pub struct CheckRecord {
    pub target: CheckTarget,
    pub checked: Checked,
    /// What the attempts proved about the path (for image checks too).
    pub state: PathState,
    pub at: SystemTime,
}

impl CheckRecord {
    /// What the check says: an image check's verdict and reason, or a path check's state and
    /// reason (a 404 for the representative image still proves the path).
    pub fn says(&self) -> (&'static str, Option<Reason>) {
        let r = &self.checked.report;
        match self.target.kind {
            CheckKind::Path => (self.state.as_str(), self.state.reason()),
            CheckKind::Image => (r.verdict.as_str(), r.reason),
        }
    }

    /// Did the check find a problem: a path not shown reachable, an image that would not pull.
    pub fn failing(&self) -> bool {
        match self.target.kind {
            CheckKind::Path => self.state.reason().is_some(),
            CheckKind::Image => !self.checked.report.verdict.pulls(),
        }
    }
}

/// The node's path to one registry plan, from its latest path check.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryPath {
    pub registry: String,
    pub plan: String,
    pub state: PathState,
    /// The endpoint whose answer (or failure) decided the state.
    pub endpoint: String,
    /// The credential that attempt sent (its source's name), if any.
    pub credential: Option<String>,
    /// A credential-provider plugin failed for this registry (the node's credentials).
    pub provider_failed: Option<String>,
    /// An endpoint answered only after earlier ones failed.
    pub degraded: bool,
    /// Whose problem a failure is: the node's (conditions) or the pods' (Events).
    #[serde(flatten)]
    pub scope: Scope,
    #[serde(serialize_with = "super::export::status::ser_time")]
    pub since: SystemTime,
    #[serde(serialize_with = "super::export::status::ser_time")]
    pub checked_at: SystemTime,
}

/// A path that works only after earlier endpoints failed (a mirror down, the upstream
/// answering): the first attempt failed without proving the path.
pub fn degraded(state: PathState, attempts: &[EndpointAttempt]) -> bool {
    state == PathState::Reachable
        && attempts
            .first()
            .is_some_and(|a| !a.ok && !crate::probe::verdict::proves_path(a))
}

/// Why a pod's image would not pull although the node's path works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// The image check failed for a reason of the image (tag, platform, access…).
    Image(Reason),
    /// A pull secret cannot be used.
    PullSecretInvalid,
    /// A pull secret was rejected by the registry (the kubelet goes on without it).
    PullSecretRejected,
    /// The pod names a pull secret the agent may not read, and the check without it
    /// failed on access: the agent cannot tell what the kubelet, which reads it, will see.
    PullSecretUnreadable,
    /// The image reference does not parse.
    ReferenceInvalid,
    /// The node cannot reach a registry only tenants use (`scope.rs`): the pods' problem.
    Path(Reason),
    /// A tenancy cap left images of the pod unchecked.
    NotChecked,
}

impl WorkloadKind {
    /// The Event reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkloadKind::Image(r) => r.as_str(),
            WorkloadKind::PullSecretInvalid => "PullSecretInvalid",
            WorkloadKind::PullSecretRejected => "PullSecretRejected",
            WorkloadKind::PullSecretUnreadable => "PullSecretUnreadable",
            WorkloadKind::ReferenceInvalid => "ReferenceInvalid",
            WorkloadKind::Path(r) => r.as_str(),
            WorkloadKind::NotChecked => "TargetLimitExceeded",
        }
    }
}

/// A problem of one pod (an Event on the Pod, never a node condition).
#[derive(Clone, Debug)]
pub struct WorkloadProblem {
    pub pod: PodRef,
    pub kind: WorkloadKind,
    pub image: String,
    pub message: String,
}

/// A condition after this cycle, with its hysteresis progress.
#[derive(Clone, Debug)]
pub struct ConditionState {
    pub record: ConditionRecord,
    pub progress: String,
}

/// How many targets the cycle had.
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetCounts {
    pub images: usize,
    pub paths: usize,
    pub pods: usize,
    /// Plans never seen before left for later cycles (`tenancy.max_new_hosts_per_cycle`).
    pub deferred: usize,
    /// Checks still running when the cycle's budget ended (reported by a later cycle).
    pub in_flight: usize,
}

/// What the agent found on its node (shown on `/status`): the runtime and why, the
/// kubelet settings and where each came from, files that could not be used.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub runtime: crate::runtime::Runtime,
    pub runtime_reason: String,
    pub kubelet: crate::nodeconfig::kubelet::KubeletSettings,
    pub problems: Vec<String>,
    /// What the token, challenge and plugin-answer caches hold, against their bounds.
    pub caches: Option<crate::pipeline::CacheView>,
}

impl NodeView {
    pub fn of(
        nc: &crate::nodeconfig::NodeConfig,
        caches: Option<crate::pipeline::CacheView>,
    ) -> NodeView {
        NodeView {
            runtime: nc.runtime,
            runtime_reason: nc.runtime_reason.clone(),
            kubelet: nc.kubelet.clone(),
            problems: nc.problems.iter().map(|p| p.to_string()).collect(),
            caches,
        }
    }
}

/// Everything one cycle produced.
#[derive(Clone, Debug)]
pub struct CycleOutcome {
    pub node: String,
    pub at: SystemTime,
    pub duration: Duration,
    pub checks: Vec<CheckRecord>,
    /// Every registry plan in use, from its latest path check (kept across cycles).
    pub paths: Vec<RegistryPath>,
    pub workload: Vec<WorkloadProblem>,
    pub conditions: Vec<ConditionState>,
    pub changes: Vec<Change>,
    pub counts: TargetCounts,
    /// Keys of the current targets (results of others are forgotten).
    pub live_keys: BTreeSet<String>,
    /// Uids of the node and of pods in use (Event dedup of others is forgotten).
    pub live_uids: HashSet<String>,
    /// The node's configuration as loaded (`None` in unit tests).
    pub node_config: Option<NodeView>,
}

/// The attempt an attempt list's state is about: the first attempt with the state's
/// reason, else the first that answered.
pub fn decisive_attempt(
    state: PathState,
    attempts: &[EndpointAttempt],
) -> Option<&EndpointAttempt> {
    let reason = match state {
        PathState::AuthFailing(r) | PathState::Unreachable(r) | PathState::Inconclusive(r) => {
            Some(r)
        }
        PathState::Reachable => None,
    };
    attempts
        .iter()
        .find(|a| match reason {
            Some(r) => a.reason == Some(r),
            None => a.ok || a.phase.is_some_and(|p| p >= crate::probe::Phase::Auth),
        })
        .or(attempts.first())
}

/// The problems of the pods this cycle's image checks and invalid references name.
/// `reads_secrets`: the agent reads pods' pull secrets (`pull_secrets: true`); without it,
/// or where the API server answered 403 (`CheckRecord::unreadable_secrets`), it checks
/// without them.
pub fn workload_problems(
    checks: &[CheckRecord],
    invalid: &[InvalidImage],
    reads_secrets: bool,
) -> Vec<WorkloadProblem> {
    let mut out = Vec::new();
    for c in checks.iter().filter(|c| c.target.kind == CheckKind::Image) {
        let problems = image_problems(c);
        for pod in &c.target.pods {
            let unread = unread_secret_problem(c, pod, reads_secrets);
            let own = problems
                .iter()
                .filter(|(k, _)| unread.is_none() || !matches!(k, WorkloadKind::Image(_)));
            out.extend(
                unread
                    .iter()
                    .chain(own)
                    .map(|(kind, message)| WorkloadProblem {
                        pod: pod.clone(),
                        kind: kind.clone(),
                        image: c.checked.report.image.clone(),
                        message: message.clone(),
                    }),
            );
        }
    }
    for inv in invalid {
        if let Some(p) = &inv.pod {
            out.push(WorkloadProblem {
                pod: p.clone(),
                kind: WorkloadKind::ReferenceInvalid,
                image: inv.image.clone(),
                message: inv.error.clone(),
            });
        }
    }
    out
}

/// A pod's problems in one image check: its own pull secrets, then the image itself
/// when the registry answered (a path failure is the node's, reported by conditions).
fn image_problems(c: &CheckRecord) -> Vec<(WorkloadKind, String)> {
    let mut out = Vec::new();
    for p in &c.checked.problems {
        if let CredentialProblem::PullSecretInvalid(e) = p {
            out.push((WorkloadKind::PullSecretInvalid, e.to_string()));
        }
    }
    let rejected = c
        .checked
        .report
        .attempts
        .iter()
        .find_map(|a| match &a.credential_source {
            Some(src @ CredentialSource::PullSecret { .. })
                if matches!(
                    a.reason,
                    Some(Reason::AuthCredentialsRejected | Reason::AuthDenied)
                ) =>
            {
                Some(src.to_string())
            }
            _ => None,
        });
    if let Some(src) = rejected {
        out.push((
            WorkloadKind::PullSecretRejected,
            format!("{src} was rejected by the registry"),
        ));
    }
    let r = &c.checked.report;
    // Needing an unreproduced service-account token (KEP-4412) is pullprobe's gap, not
    // the pod's problem: no Event.
    let reason = r
        .reason
        .filter(|r| *r != Reason::ServiceAccountTokenNotReproduced);
    if let (false, Some(reason), PathState::Reachable) = (r.verdict.pulls(), reason, c.state) {
        out.push((WorkloadKind::Image(reason), r.message.clone()));
    }
    out
}

/// Problems of pods from registries that are not the node's concern (`scope.rs`): a
/// failing path is a Warning Event on every pod whose images use that plan, never a
/// condition. Also the pods a tenancy cap left partly unchecked.
pub fn tenant_problems(
    paths: &[RegistryPath],
    set: &TargetSet,
    node: &str,
) -> Vec<WorkloadProblem> {
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| !p.scope.is_node()) {
        let reason = match p.state {
            PathState::Unreachable(r) | PathState::AuthFailing(r) => r,
            PathState::Reachable | PathState::Inconclusive(_) => continue,
        };
        let message = format!(
            "node {node} cannot pull from {}: {} at {}. This is reported to the pods that use the registry, not as a node condition: the agent's config does not name it, no trusted namespace uses it, and this node has not reached it before",
            p.registry, reason, p.endpoint
        );
        for t in set.images.values().filter(|t| t.key.plan == p.plan) {
            out.extend(t.pods.iter().map(|pod| WorkloadProblem {
                pod: pod.clone(),
                kind: WorkloadKind::Path(reason),
                image: t.image.to_string(),
                message: message.clone(),
            }));
        }
    }
    for o in &set.over_limit {
        out.push(WorkloadProblem {
            pod: o.pod.clone(),
            kind: WorkloadKind::NotChecked,
            image: String::new(),
            message: format!(
                "pullprobe did not check {} of this pod's images on node {node}: {}",
                o.images, o.limit
            ),
        });
    }
    out
}

/// A pod whose image check failed on access (a credential missing, rejected or without
/// pull access, or a repository hidden without it) while it names pull secrets the agent
/// could not read: the secret is the likely answer, so say that instead of blaming a
/// missing credential the kubelet does have.
fn unread_secret_problem(
    c: &CheckRecord,
    pod: &PodRef,
    reads_secrets: bool,
) -> Option<(WorkloadKind, String)> {
    let r = &c.checked.report;
    let on_access = matches!(
        r.reason,
        Some(
            Reason::AuthCredentialsRequired
                | Reason::AuthCredentialsRejected
                | Reason::AuthDenied
                | Reason::RepositoryNotFound
        )
    );
    let unread: Vec<&str> = pod
        .pull_secrets
        .iter()
        .filter(|n| !reads_secrets || c.target.unreadable_secrets.contains(n))
        .map(String::as_str)
        .collect();
    if r.verdict.pulls() || !on_access || unread.is_empty() {
        return None;
    }
    let reason = r.reason.map(|x| x.as_str()).unwrap_or_default();
    let (noun, names) = match unread.as_slice() {
        [one] => ("secret", format!("{}/{one}", pod.namespace)),
        many => ("secrets", format!("{}/{}", pod.namespace, many.join(", "))),
    };
    // With `pull_secrets` on, a refusal means the namespace has no RoleBinding
    // (components/pull-secrets grants per namespace); off, the component is not installed.
    let grant = match reads_secrets {
        true => format!(
            "bind pullprobe-pull-secrets-reader in namespace {}: docs/operate.md \"Pod pull secrets\"",
            pod.namespace
        ),
        false => "install components/pull-secrets".to_string(),
    };
    let message = format!(
        "the pod names {noun} {names}, which the agent is not allowed to read ({grant}); checked without it, the registry answers {reason}"
    );
    Some((WorkloadKind::PullSecretUnreadable, message))
}

/// The problems behind each condition, from the paths of every registry in use that is
/// the node's concern (the others are the pods' problems: [`tenant_problems`]).
pub fn condition_problems(paths: &[RegistryPath]) -> (Vec<Problem>, Vec<Problem>) {
    let mut unreachable = Vec::new();
    let mut auth = Vec::new();
    for p in paths.iter().filter(|p| p.scope.is_node()) {
        let problem = |reason, credential: Option<&String>| Problem {
            registry: p.registry.clone(),
            endpoint: p.endpoint.clone(),
            reason,
            credential: credential.cloned(),
        };
        if p.provider_failed.is_some() {
            auth.push(problem("CredentialProviderFailed", None));
        }
        match p.state {
            PathState::Unreachable(r) => unreachable.push(problem(condition_reason(r), None)),
            PathState::AuthFailing(r) => auth.push(problem(r.as_str(), p.credential.as_ref())),
            PathState::Reachable | PathState::Inconclusive(_) => {}
        }
    }
    (unreachable, auth)
}
