//! `/status`: the node's summary first (each condition, why, and its hysteresis
//! progress; the runtime and kubelet settings found and where), then every registry path,
//! then every target — lists, not composite-string keys. No credential value is ever
//! here: credential sources are names (`pull-secret:ns/name#key`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::Exporter;
use crate::agent::state::AgentState;
use std::sync::Arc;

use crate::agent::outcome::{
    CheckKind, CheckRecord, CycleOutcome, NodeView, RegistryPath, WorkloadKind, WorkloadProblem,
};
use crate::probe::verdict::PathState;

/// RFC 3339, second precision.
pub fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

pub fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The `/status` document (the HTTP handler adds `ready`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusDoc {
    pub node: String,
    pub ready: bool,
    /// When the last cycle finished (RFC 3339).
    pub last_cycle: Option<String>,
    /// The node's two conditions, why, and since when.
    pub summary: Vec<ConditionView>,
    pub node_config: Option<NodeView>,
    pub registries: Vec<RegistryPath>,
    pub targets: Vec<TargetView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub since: String,
    /// `failing 1/2 cycles` (False) or `passing 0/1 cycles` (True).
    pub progress: String,
}

/// The latest result of one target.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TargetView {
    /// `path` (per-node registry path check) or `image`.
    pub kind: &'static str,
    pub key: String,
    pub image: String,
    pub registry: String,
    /// `node` or `pull-secrets:ns/a,b`.
    pub credential: String,
    /// The credential the deciding attempt sent (its source's name, never its value).
    pub credential_source: Option<String>,
    pub endpoint: Option<String>,
    /// An image check's verdict (`ready`, `degraded`, `not_ready`, `blocked`), or a path
    /// check's state (`reachable`, `auth_failing`, `unreachable`, `inconclusive`).
    pub verdict: &'static str,
    pub phase: Option<&'static str>,
    pub reason: Option<&'static str>,
    pub message: String,
    /// What to do about a failing check (`null` when it passes), as `check` prints it.
    pub hint: Option<String>,
    pub duration_ms: f64,
    pub checked_at: String,
    /// Since when the verdict and reason have been what they are.
    pub since: String,
    /// Pods using the image (`namespace/name`), at most 10.
    pub pods: Vec<String>,
    /// Image checks: whether the kubelet re-verifies a cached copy for a pod whose
    /// credentials it has not recorded (KEP-2535), which decides whether a registry outage
    /// fails such a pod although the image is on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_image: Option<crate::nodeconfig::kubelet::CachedImage>,
}

/// The fix for a failing check: the report's own hint when it is about the reason the
/// check says (a path check's state can come from another attempt than the report's), else
/// the reason's hint naming the registry. When the check's pods name pull secrets the
/// agent may not read (`PullSecretUnreadable`), that is the fix: the report's own hint would
/// ask for a secret the pods already give.
fn hint_of(c: &CheckRecord, workload: &[WorkloadProblem]) -> Option<String> {
    let (_, reason) = c.says();
    let reason = reason.filter(|_| c.failing())?;
    let unread = workload.iter().find(|w| {
        w.kind == WorkloadKind::PullSecretUnreadable
            && w.image == c.checked.report.image
            && c.target.pods.contains(&w.pod)
    });
    if let Some(w) = unread {
        return Some(format!(
            "the agent may not read the pull secrets pod {}/{} names, so it checked without them: install components/pull-secrets to check with them",
            w.pod.namespace, w.pod.name
        ));
    }
    let r = &c.checked.report;
    if r.reason == Some(reason) && r.hint.is_some() {
        return r.hint.clone();
    }
    let ctx = crate::probe::hints::HintContext {
        host: c.target.registry.clone(),
        repository: c.target.image.repository(),
        ..crate::probe::hints::HintContext::generic()
    };
    Some(crate::probe::hints::hint(reason, &ctx))
}

/// What a target's row says: an image check's verdict, or a path check's state (a 404 for
/// the representative image still proves the path: `reachable`).
fn verdict_of(c: &CheckRecord) -> (&'static str, Option<&'static str>, String) {
    let r = &c.checked.report;
    let (verdict, reason) = c.says();
    let message = match (c.target.kind, c.state, r.reason) {
        (CheckKind::Path, PathState::Reachable, Some(why)) => format!(
            "the registry answered over the node's path ({why} for the representative image {})",
            r.image
        ),
        (CheckKind::Path, PathState::Reachable, None) => {
            "the registry answered over the node's path".into()
        }
        _ => r.message.clone(),
    };
    (verdict, reason.map(|x| x.as_str()), message)
}

fn target_view(
    c: &CheckRecord,
    since: SystemTime,
    node: Option<&NodeView>,
    workload: &[WorkloadProblem],
) -> TargetView {
    let r = &c.checked.report;
    let (verdict, reason, message) = verdict_of(c);
    TargetView {
        kind: c.target.kind.as_str(),
        key: c.target.key.clone(),
        image: r.image.clone(),
        registry: c.target.registry.clone(),
        credential: c.target.cred.to_string(),
        credential_source: r.credential_source.as_ref().map(|s| s.to_string()),
        endpoint: r.endpoint.clone(),
        verdict,
        phase: reason.and(r.phase.map(|p| p.as_str())),
        reason,
        message,
        hint: hint_of(c, workload),
        duration_ms: r.duration_ms,
        checked_at: rfc3339(c.at),
        since: rfc3339(since),
        pods: c
            .target
            .pods
            .iter()
            .take(10)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect(),
        cached_image: node
            .filter(|_| c.target.kind == CheckKind::Image)
            .map(|n| n.kubelet.cached_images.cached_image(&c.target.image)),
    }
}

/// A verdict and reason: when either changes, a target's `since` moves.
type Outcome = (String, Option<&'static str>);

/// Keeps the latest result of every live target and builds the document.
#[derive(Debug, Default)]
pub struct StatusBook {
    targets: BTreeMap<String, (TargetView, Outcome, SystemTime)>,
}

impl StatusBook {
    /// Fold one cycle in and return the new document.
    pub fn update(&mut self, o: &CycleOutcome) -> StatusDoc {
        for c in &o.checks {
            let (v, reason, _) = verdict_of(c);
            let verdict = (v.to_string(), reason);
            let since = match self.targets.get(&c.target.key) {
                Some((_, v, since)) if *v == verdict => *since,
                _ => c.at,
            };
            self.targets.insert(
                c.target.key.clone(),
                (
                    target_view(c, since, o.node_config.as_ref(), &o.workload),
                    verdict,
                    since,
                ),
            );
        }
        self.targets.retain(|k, _| o.live_keys.contains(k));
        StatusDoc {
            node: o.node.clone(),
            ready: true,
            last_cycle: Some(rfc3339(o.at)),
            summary: o
                .conditions
                .iter()
                .map(|c| ConditionView {
                    type_: c.record.kind.as_str(),
                    status: if c.record.status { "True" } else { "False" },
                    reason: c.record.reason.clone(),
                    message: c.record.message.clone(),
                    since: rfc3339(c.record.last_transition),
                    progress: c.progress.clone(),
                })
                .collect(),
            node_config: o.node_config.clone(),
            registries: o.paths.clone(),
            targets: self.targets.values().map(|(v, _, _)| v.clone()).collect(),
        }
    }
}

/// The `/status` document.
pub struct StatusExporter {
    pub state: Arc<AgentState>,
    pub book: StatusBook,
}

impl Exporter for StatusExporter {
    fn export(&mut self, o: &CycleOutcome) {
        let doc = self.book.update(o);
        if let Ok(mut s) = self.state.status.lock() {
            *s = doc;
        }
    }
}
