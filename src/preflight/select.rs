//! Where a workload's pods could land: the scheduler's filters that depend only on the
//! pod spec and the Node — `spec.nodeName`, `nodeSelector`, required node affinity
//! (`NodeMatchesNodeAffinity`: terms ORed, expressions ANDed, `matchFields` on
//! `metadata.name`), taints with effect NoSchedule/NoExecute against tolerations
//! (`TaintToleration.Filter`, `Toleration.ToleratesTaint`), and `spec.unschedulable`
//! (`NodeUnschedulable.Filter`). DaemonSet pods get the DaemonSet controller's own
//! tolerations (`daemon/util.AddOrUpdateDaemonPodTolerations`). Sources: kubernetes
//! v1.20 `pkg/scheduler/framework/plugins/{helper/node_affinity.go,tainttoleration,
//! nodeunschedulable}`, `component-helpers/scheduling/corev1/nodeaffinity`,
//! `api/core/v1/toleration.go`. Resources, ports and pod (anti-)affinity are not
//! considered: they change from minute to minute; a node they exclude is still one the
//! workload may land on later.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

/// Why a node is not a candidate (for `-o wide` and JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Excluded {
    NodeName,
    NodeSelector,
    NodeAffinity,
    Taint(String),
    Unschedulable,
}

impl std::fmt::Display for Excluded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Excluded::NodeName => f.write_str("spec.nodeName names another node"),
            Excluded::NodeSelector => f.write_str("nodeSelector does not match"),
            Excluded::NodeAffinity => f.write_str("required node affinity does not match"),
            Excluded::Taint(t) => write!(f, "untolerated taint {t}"),
            Excluded::Unschedulable => f.write_str("node is cordoned (unschedulable)"),
        }
    }
}

/// May a pod with `spec` (of a DaemonSet when `daemonset`) land on `node`?
pub fn can_land(spec: &PodSpec, daemonset: bool, node: &Node) -> Result<(), Excluded> {
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        // A pod bound by name skips the scheduler entirely.
        return if n == name {
            Ok(())
        } else {
            Err(Excluded::NodeName)
        };
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return Err(Excluded::NodeSelector);
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(ns) = required {
        if !ns
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, name))
        {
            return Err(Excluded::NodeAffinity);
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    if daemonset {
        tolerations.extend(daemonset_tolerations(spec.host_network == Some(true)));
    }
    let node_spec = node.spec.as_ref();
    for t in node_spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        let blocks = t.effect == "NoSchedule" || t.effect == "NoExecute";
        if blocks && !tolerations.iter().any(|tol| tolerates(tol, t)) {
            let v = t
                .value
                .as_deref()
                .map(|v| format!("={v}"))
                .unwrap_or_default();
            return Err(Excluded::Taint(format!("{}{v}:{}", t.key, t.effect)));
        }
    }
    if node_spec.and_then(|s| s.unschedulable) == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|tol| tolerates(tol, &taint)) {
            return Err(Excluded::Unschedulable);
        }
    }
    Ok(())
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The tolerations the DaemonSet controller adds to its pods (`util.AddOrUpdateDaemonPodTolerations`).
pub fn daemonset_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// One node selector term: empty matches nothing; expressions and fields ANDed.
fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| label_matches(r, labels)) && fields.iter().all(|r| field_matches(r, name))
}

/// `labels.Requirement.Matches` for the node selector operators.
fn label_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let have = labels.get(&r.key);
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|v| values.contains(v)),
        "NotIn" => have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(h), [one]) = (have.and_then(|v| int(v)), values) else {
                return false;
            };
            let Some(bound) = int(one) else { return false };
            if r.operator == "Gt" {
                h > bound
            } else {
                h < bound
            }
        }
        // An invalid operator fails the term (the API server rejects such pods anyway).
        _ => false,
    }
}

/// `matchFields`: only `metadata.name`, operators In/NotIn with exactly one value.
fn field_matches(r: &NodeSelectorRequirement, name: &str) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match (r.key.as_str(), r.operator.as_str(), values) {
        ("metadata.name", "In", [v]) => v == name,
        ("metadata.name", "NotIn", [v]) => v != name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        labels: &[(&str, &str)],
        taints: &[(&str, &str, &str)],
        cordoned: bool,
    ) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_,_>>()},
            "spec": {"unschedulable": cordoned, "taints": taints.iter().map(|(k, v, e)| serde_json::json!({"key": k, "value": v, "effect": e})).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = serde_json::json!([{"name": "a", "image": "x"}]);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_selector_and_affinity() {
        let ssd = node("n1", &[("disk", "ssd"), ("cores", "8")], &[], false);
        let hdd = node("n2", &[("disk", "hdd")], &[], false);
        let s = spec(serde_json::json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(can_land(&s, false, &ssd), Ok(()));
        assert_eq!(can_land(&s, false, &hdd), Err(Excluded::NodeSelector));
        let aff = |terms: serde_json::Value| {
            spec(
                serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            )
        };
        // Terms ORed, expressions ANDed.
        let a = aff(serde_json::json!([
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
            {"matchExpressions": [{"key": "disk", "operator": "Exists"}, {"key": "cores", "operator": "Gt", "values": ["4"]}]}
        ]));
        assert_eq!(can_land(&a, false, &ssd), Ok(()));
        assert_eq!(can_land(&a, false, &hdd), Err(Excluded::NodeAffinity));
        let notin = aff(
            serde_json::json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
        );
        assert_eq!(
            can_land(&notin, false, &hdd),
            Ok(()),
            "NotIn matches a missing label"
        );
        let by_name = aff(
            serde_json::json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]),
        );
        assert_eq!(can_land(&by_name, false, &hdd), Ok(()));
        assert_eq!(can_land(&by_name, false, &ssd), Err(Excluded::NodeAffinity));
        let empty = aff(serde_json::json!([{}]));
        assert_eq!(
            can_land(&empty, false, &ssd),
            Err(Excluded::NodeAffinity),
            "an empty term matches nothing"
        );
        let lt_bad = aff(
            serde_json::json!([{"matchExpressions": [{"key": "disk", "operator": "Lt", "values": ["3"]}]}]),
        );
        assert_eq!(
            can_land(&lt_bad, false, &ssd),
            Err(Excluded::NodeAffinity),
            "Lt on a non-integer label"
        );
    }

    #[test]
    fn taints_tolerations_and_cordons() {
        let gpu = node(
            "g",
            &[],
            &[
                ("dedicated", "gpu", "NoSchedule"),
                ("soft", "", "PreferNoSchedule"),
            ],
            false,
        );
        let plain = spec(serde_json::json!({}));
        assert_eq!(
            can_land(&plain, false, &gpu),
            Err(Excluded::Taint("dedicated=gpu:NoSchedule".into()))
        );
        let tol = spec(serde_json::json!({"tolerations": [{"key": "dedicated", "value": "gpu"}]}));
        assert_eq!(
            can_land(&tol, false, &gpu),
            Ok(()),
            "empty effect and operator Equal match; PreferNoSchedule never blocks"
        );
        let wrong = spec(
            serde_json::json!({"tolerations": [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]}),
        );
        assert!(can_land(&wrong, false, &gpu).is_err());
        let all = spec(serde_json::json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(can_land(&all, false, &gpu), Ok(()));
        let cordoned = node("c", &[], &[], true);
        assert_eq!(
            can_land(&plain, false, &cordoned),
            Err(Excluded::Unschedulable)
        );
        // DaemonSet pods tolerate the cordon and not-ready, as the DaemonSet controller adds.
        assert_eq!(can_land(&plain, true, &cordoned), Ok(()));
        let notready = node(
            "nr",
            &[],
            &[("node.kubernetes.io/not-ready", "", "NoExecute")],
            false,
        );
        assert_eq!(can_land(&plain, true, &notready), Ok(()));
        assert!(can_land(&plain, false, &notready).is_err());
        let pinned = spec(serde_json::json!({"nodeName": "g"}));
        assert_eq!(
            can_land(&pinned, false, &gpu),
            Ok(()),
            "nodeName skips the scheduler's filters"
        );
        assert_eq!(can_land(&pinned, false, &cordoned), Err(Excluded::NodeName));
    }
}
