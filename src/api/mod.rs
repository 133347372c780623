//! The wire contract between the agents, the controller and the CLI: the `pullprobe.io`
//! custom resources. Agent, controller and CLI depend on this module; it depends on none
//! of them (nor on anything else in the crate).
//!
//! ```text
//!  CLI / GitOps / rollout guard ──create──▶ ImagePreflight (namespaced) ◀──status── controller
//!                                                                                   │  ▲
//!                      spec.assignments (round 1 when stale, round 2 per fingerprint)│  │ status.registries,
//!                                                                                   ▼  │ status.answers
//!                                               NodePullStatus (one per node) ◀── that node's agent
//! ```
//!
//! - [`ImagePreflight`]: "can the nodes this could land on pull these images, now?" Its
//!   status is the node × image matrix grouped into rows of identical nodes, a summary and
//!   kstatus conditions (`Ready`, `Failed`, `Reconciling`) that `kubectl wait`, Flux, Argo CD
//!   and Argo Rollouts consume.
//! - [`NodePullStatus`]: named after its node. The agent of that node keeps its registry
//!   path states in `status` (on change and at each heartbeat) and answers the controller's
//!   `spec.assignments` in `status.answers`. Nothing else writes its status; nobody's token
//!   travels to a node.
//!
//! Every list and string has a bound in the schema, so the API server refuses an oversized
//! object before any reader sees it; readers still treat what they read as untrusted.

pub mod condition;
pub mod nodestatus;
pub mod preflight;

pub use condition::{Condition, ConditionStatus};
pub use nodestatus::{
    Answer, Assignment, AssignmentDepth, ImageAnswer, NodePullStatus, NodePullStatusSpec,
    NodePullStatusStatus, RegistryPath,
};
pub use preflight::{
    Cell, Excluded, ImagePreflight, ImagePreflightSpec, ImagePreflightStatus, NodeSelection, Row,
    Scheduling, Summary, Unplaced, WorkloadKind, WorkloadRef,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every pullprobe resource.
pub const GROUP: &str = "pullprobe.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the objects.
pub const API_VERSION: &str = "pullprobe.io/v1alpha1";

/// Longest image reference in any list (the agent's own limit).
pub const MAX_IMAGE_LEN: usize = 512;
/// Images in one pre-flight or one assignment.
pub const MAX_IMAGES: usize = 100;
/// Pull secrets one pre-flight may name (the agent's own limit).
pub const MAX_PULL_SECRETS: usize = 16;
/// Longest message kept in a cell or a condition.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The CRDs, as `manifests/crds/` ships them (a test keeps the files equal to these).
///
/// The schemas carry no `default`s: schemars writes one for every `#[serde(default)]`
/// field, which would make the API server store empty lists and strings in every object
/// (and `default: ""` is refused by some YAML readers as null). Readers default instead.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [ImagePreflight::crd(), NodePullStatus::crd()]
        .into_iter()
        .map(|crd| {
            let mut v = serde_json::to_value(&crd).unwrap_or_default();
            strip_defaults(&mut v);
            serde_json::from_value(v).unwrap_or(crd)
        })
        .collect()
}

/// Drops every empty string from a JSON value to be written: kube-apiserver 1.20 refuses
/// `""` in a custom resource's string field ("must be of type string: \"null\""), and every
/// such field of these types reads as empty when absent (`serde(default)`). For values
/// whose objects are written whole (or sit in lists a merge patch replaces whole).
pub fn drop_empty_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| x.as_str() != Some(""));
            m.values_mut().for_each(drop_empty_strings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_empty_strings),
        _ => {}
    }
}

/// Removes every `default` keyword under `openAPIV3Schema`.
fn strip_defaults(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if m.contains_key("type") || m.contains_key("properties") || m.contains_key("items") {
                m.remove("default");
            }
            m.values_mut().for_each(strip_defaults);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

/// The CRDs as one YAML stream (`---` between documents).
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `manifests/crds/pullprobe.io.yaml` is exactly what the types generate. Run with
    /// `PULLPROBE_WRITE_CRDS=1` to rewrite it after changing a type.
    #[test]
    fn shipped_crds_match_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/crds/pullprobe.io.yaml"
        );
        let want = format!(
            "# Generated from src/api (cargo test --lib api:: with PULLPROBE_WRITE_CRDS=1); do not edit.\n{}",
            crds_yaml().unwrap()
        );
        if std::env::var_os("PULLPROBE_WRITE_CRDS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is out of date: run with PULLPROBE_WRITE_CRDS=1"
        );
    }

    #[test]
    fn empty_strings_are_dropped_at_every_depth() {
        let mut v = serde_json::json!({"a": "", "b": "x", "rows": [{"cells": [{"verdict": "ready", "message": ""}]}], "n": null});
        drop_empty_strings(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"b": "x", "rows": [{"cells": [{"verdict": "ready"}]}], "n": null})
        );
    }

    #[test]
    fn crds_are_versioned_with_status_and_bounds() {
        let y = crds_yaml().unwrap();
        for want in [
            "name: imagepreflights.pullprobe.io",
            "name: nodepullstatuses.pullprobe.io",
            "scope: Namespaced",
            "scope: Cluster",
            "name: v1alpha1",
            "status: {}",
            "maxItems: 100",
            "maxLength: 512",
            "x-kubernetes-preserve-unknown-fields: true",
            "jsonPath: .status.summary.notReady",
        ] {
            assert!(y.contains(want), "CRDs lack {want:?}");
        }
    }
}
