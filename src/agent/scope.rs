//! Whose problem a registry's failure is: the node's (a Node condition, which feeds
//! node-readiness rules and the fleet's paging alerts) or a workload's (a Warning Event on
//! the pods that use the registry, which their owners see).
//!
//! Anyone who can create a pod picks the images this agent probes, so a registry moves a
//! node condition only when the node is expected to reach it, that is when one holds:
//! 1. the agent config names it (`images`, `registries`);
//! 2. pods of a trusted namespace use it (`tenancy.trusted_namespaces`, default
//!    `kube-system`, plus the agent's own namespace);
//! 3. it was first reached from this node at least `tenancy.drift_min_age` ago and is
//!    failing now (drift: the node's path changed under a registry it used to reach).
//!
//! Everything else, a tenant's typo (`nx.invalid/team/app`), a tenant's registry that
//! is down or slow, is a workload problem. The memory of registries reached before is
//! bounded ([`MAX_REMEMBERED`]) and kept across restarts by `persist.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Registries remembered as reached before, at most; the least recently reached go first.
pub const MAX_REMEMBERED: usize = 512;
/// A registry not reached for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a registry's failures are the node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeReason {
    /// Named in the agent config.
    Config,
    /// Used by pods of a trusted namespace.
    TrustedNamespace,
    /// Reached from this node before (drift).
    ReachedBefore,
}

/// Whose problem a registry's failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "scope", content = "because", rename_all = "snake_case")]
pub enum Scope {
    /// The node's: may move a node condition.
    Node(NodeReason),
    /// The pods': Warning Events on them, never a node condition.
    Workload,
}

impl Scope {
    pub fn is_node(self) -> bool {
        matches!(self, Scope::Node(_))
    }

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Node(_) => "node",
            Scope::Workload => "workload",
        }
    }
}

/// When a registry was first and last reached from this node (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reached {
    pub first: u64,
    pub last: u64,
}

/// Registries reached from this node before, bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReachedBefore(BTreeMap<String, Reached>);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ReachedBefore {
    /// Note that `registry` was reached at `now`; returns whether anything new was learnt
    /// (a registry not known before), so the caller knows when to save.
    pub fn reached(&mut self, registry: &str, now: SystemTime) -> bool {
        let t = unix(now);
        if let Some(r) = self.0.get_mut(registry) {
            r.last = r.last.max(t);
            return false;
        }
        self.0
            .insert(registry.to_string(), Reached { first: t, last: t });
        self.bound(now);
        true
    }

    /// Drop registries not reached for [`FORGET_AFTER`], then the least recently reached
    /// beyond [`MAX_REMEMBERED`].
    pub fn bound(&mut self, now: SystemTime) {
        let cutoff = unix(now).saturating_sub(FORGET_AFTER.as_secs());
        self.0.retain(|_, r| r.last >= cutoff);
        while self.0.len() > MAX_REMEMBERED {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(name, r)| (r.last, (*name).clone()))
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => self.0.remove(&name),
                None => break,
            };
        }
    }

    /// Was `registry` first reached at least `min_age` before `now`?
    pub fn qualifies(&self, registry: &str, now: SystemTime, min_age: Duration) -> bool {
        self.0
            .get(registry)
            .is_some_and(|r| unix(now).saturating_sub(r.first) >= min_age.as_secs())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The inputs of the rule for one cycle.
#[derive(Clone, Debug, Default)]
pub struct ScopeRule {
    /// Registry domains the config names.
    pub named: BTreeSet<String>,
    /// Registry domains pods of trusted namespaces use this cycle.
    pub trusted_use: BTreeSet<String>,
    pub drift_min_age: Duration,
}

impl ScopeRule {
    /// The scope of `registry` (a domain as written in references) at `now`.
    pub fn scope(&self, registry: &str, reached: &ReachedBefore, now: SystemTime) -> Scope {
        if self.named.contains(registry) {
            Scope::Node(NodeReason::Config)
        } else if self.trusted_use.contains(registry) {
            Scope::Node(NodeReason::TrustedNamespace)
        } else if reached.qualifies(registry, now, self.drift_min_age) {
            Scope::Node(NodeReason::ReachedBefore)
        } else {
            Scope::Workload
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn rule(named: &[&str], trusted: &[&str], min_age: u64) -> ScopeRule {
        ScopeRule {
            named: named.iter().map(|s| s.to_string()).collect(),
            trusted_use: trusted.iter().map(|s| s.to_string()).collect(),
            drift_min_age: Duration::from_secs(min_age),
        }
    }

    #[test]
    fn config_then_trusted_namespace_then_drift_else_workload() {
        let mut reached = ReachedBefore::default();
        let r = rule(&["reg.config"], &["reg.system"], 3600);
        let now = at(10_000);
        assert_eq!(
            r.scope("reg.config", &reached, now),
            Scope::Node(NodeReason::Config)
        );
        assert_eq!(
            r.scope("reg.system", &reached, now),
            Scope::Node(NodeReason::TrustedNamespace)
        );
        // A tenant's typo never reached: the pods' problem.
        assert_eq!(r.scope("nx.invalid", &reached, now), Scope::Workload);
        // Reached once, but not long enough ago: still the pods'.
        reached.reached("reg.tenant", at(9_000));
        assert_eq!(r.scope("reg.tenant", &reached, now), Scope::Workload);
        // First reached over an hour before: drift, the node's.
        assert_eq!(
            r.scope("reg.tenant", &reached, at(12_600)),
            Scope::Node(NodeReason::ReachedBefore)
        );
    }

    #[test]
    fn first_reach_is_kept_and_only_news_asks_for_a_save() {
        let mut reached = ReachedBefore::default();
        assert!(reached.reached("a", at(100)));
        assert!(!reached.reached("a", at(200)));
        assert!(reached.qualifies("a", at(160), Duration::from_secs(60)));
        assert!(!reached.qualifies("a", at(150), Duration::from_secs(60)));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_long_unreached() {
        let mut reached = ReachedBefore::default();
        for i in 0..(MAX_REMEMBERED as u64 + 50) {
            reached.reached(&format!("r{i}"), at(1_000_000 + i));
        }
        assert_eq!(reached.len(), MAX_REMEMBERED);
        // The least recently reached went first.
        assert!(!reached.qualifies("r0", at(2_000_000), Duration::ZERO));
        assert!(reached.qualifies("r100", at(2_000_000), Duration::ZERO));
        reached.bound(at(1_000_000 + FORGET_AFTER.as_secs() + 10_000));
        assert!(reached.is_empty());
    }
}
