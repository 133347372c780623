//! kstatus conditions (the shape of `metav1.Condition`), which `kubectl wait
//! --for=condition=Ready`, Flux's health checks (kstatus) and Argo CD read.
//!
//! kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status/core.go, `checkGenericProperties`):
//! a resource is *InProgress* while `Reconciling` is True or `observedGeneration` lags
//! `metadata.generation`, *Failed* when `Stalled` or `Failed` is True, *Current* otherwise —
//! so a finished pre-flight sets `Reconciling` False and `observedGeneration`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Failed` or `Reconciling`.
    #[serde(rename = "type")]
    #[schemars(length(max = 64))]
    pub type_: String,
    pub status: ConditionStatus,
    /// CamelCase, e.g. `AllNodesCanPull`, `NodesCannotPull`, `Checking`.
    #[schemars(length(max = 128))]
    pub reason: String,
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub message: String,
    /// RFC 3339, changed only when `status` changes.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The condition of `type_` in `list`, if any.
pub fn find<'a>(list: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    list.iter().find(|c| c.type_ == type_)
}

/// True when `list` has `type_` with status True.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    find(list, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Sets `new` in `list`, keeping `lastTransitionTime` when the status did not change
/// (as `meta.SetStatusCondition` does).
pub fn set(list: &mut Vec<Condition>, mut new: Condition) {
    match list.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => list.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(t: &str, s: ConditionStatus, at: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: s,
            reason: "R".into(),
            message: String::new(),
            last_transition_time: at.into(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn set_keeps_transition_time_unless_status_changes() {
        let mut l = vec![cond("Ready", ConditionStatus::False, "t0")];
        set(&mut l, cond("Ready", ConditionStatus::False, "t1"));
        assert_eq!(l[0].last_transition_time, "t0");
        set(&mut l, cond("Ready", ConditionStatus::True, "t2"));
        assert_eq!(l[0].last_transition_time, "t2");
        set(&mut l, cond("Failed", ConditionStatus::False, "t3"));
        assert_eq!(l.len(), 2);
        assert!(is_true(&l, "Ready"));
        assert!(!is_true(&l, "Failed"));
    }
}
