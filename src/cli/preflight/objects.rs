//! The `ImagePreflight` objects a command line asks for: one for the images given as
//! arguments, one per workload of the `-f` manifests (its scheduling constraints copied into
//! `spec.scheduling`, so the controller picks the nodes that workload could land on), one for
//! `--workload KIND/NAME` (a `workloadRef`: the controller reads the pod template itself).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};
use kube::api::ObjectMeta;

use crate::api::preflight::Untyped;
use crate::api::{
    ImagePreflight, ImagePreflightSpec, NodeSelection, Scheduling, WorkloadKind, WorkloadRef,
    MAX_IMAGES, MAX_PULL_SECRETS,
};
use crate::preflight::manifests::Workload;
use crate::preflight::select;

/// The label on objects the CLI creates.
pub const CREATED_BY: &str = "pullprobe.io/created-by";
/// Where an object's checks come from (`FILE#N Kind ns/name`, `command line`), shown in
/// errors and kept on the object for people reading it later.
pub const SOURCE_ANNOTATION: &str = "pullprobe.io/source";

/// One object to create, and where in the input it comes from.
#[derive(Clone, Debug)]
pub struct Planned {
    pub source: String,
    pub namespace: String,
    pub object: ImagePreflight,
}

/// What the command line chose besides the workloads.
#[derive(Clone, Debug, Default)]
pub struct Common {
    pub selector: Option<String>,
    pub all_nodes: bool,
    pub strict: bool,
    pub ttl: Option<u32>,
}

/// A command-line input that cannot become an object (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{source_}: {count} images, at most {MAX_IMAGES} per pre-flight: split the workload")]
    TooManyImages { source_: String, count: usize },
    #[error("{source_}: {count} pull secrets, at most {MAX_PULL_SECRETS}")]
    TooManySecrets { source_: String, count: usize },
    #[error("--workload {given:?}: expected KIND/NAME with KIND one of deployment, statefulset, daemonset, replicaset, job, cronjob, pod")]
    Workload { given: String },
}

fn meta(namespace: &str, source: &str) -> ObjectMeta {
    ObjectMeta {
        generate_name: Some("preflight-".into()),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            CREATED_BY.to_string(),
            "cli".to_string(),
        )])),
        annotations: Some(BTreeMap::from([(
            SOURCE_ANNOTATION.to_string(),
            source
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect(),
        )])),
        ..Default::default()
    }
}

fn spec(c: &Common) -> ImagePreflightSpec {
    ImagePreflightSpec {
        nodes: NodeSelection {
            selector: c.selector.clone(),
            all: c.all_nodes,
        },
        degraded_fails: c.strict,
        ttl_seconds_after_finished: c.ttl,
        ..Default::default()
    }
}

/// The object checking `w`'s images on the nodes `w` could land on.
pub fn for_workload(w: &Workload, c: &Common) -> Result<Planned, ObjectError> {
    let mut images: Vec<String> = Vec::new();
    for i in &w.images {
        if !images.contains(&i.image) {
            images.push(i.image.clone());
        }
    }
    if images.len() > MAX_IMAGES {
        return Err(ObjectError::TooManyImages {
            source_: w.source.clone(),
            count: images.len(),
        });
    }
    if w.pull_secrets.len() > MAX_PULL_SECRETS {
        return Err(ObjectError::TooManySecrets {
            source_: w.source.clone(),
            count: w.pull_secrets.len(),
        });
    }
    let spec = ImagePreflightSpec {
        images,
        scheduling: scheduling(&w.spec, w.is_daemonset()),
        image_pull_secrets: w.pull_secrets.clone(),
        service_account_name: Some(w.service_account.clone()).filter(|s| !s.is_empty()),
        ..spec(c)
    };
    let mut object = ImagePreflight::new("", spec);
    object.metadata = meta(&w.namespace, &w.source);
    Ok(Planned {
        source: w.source.clone(),
        namespace: w.namespace.clone(),
        object,
    })
}

/// The object for `--workload KIND/NAME` in `namespace`.
pub fn for_workload_ref(given: &str, namespace: &str, c: &Common) -> Result<Planned, ObjectError> {
    let err = || ObjectError::Workload {
        given: given
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
    };
    let (kind, name) = given.split_once('/').ok_or_else(err)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => WorkloadKind::Deployment,
        "statefulset" | "statefulsets" | "sts" => WorkloadKind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => WorkloadKind::DaemonSet,
        "replicaset" | "replicasets" | "rs" => WorkloadKind::ReplicaSet,
        "job" | "jobs" => WorkloadKind::Job,
        "cronjob" | "cronjobs" | "cj" => WorkloadKind::CronJob,
        "pod" | "pods" | "po" => WorkloadKind::Pod,
        _ => return Err(err()),
    };
    if name.is_empty() || name.len() > 253 || name.contains('/') {
        return Err(err());
    }
    let source = format!("{} {namespace}/{name}", kind.as_str());
    let spec = ImagePreflightSpec {
        workload_ref: Some(WorkloadRef {
            kind,
            name: name.to_string(),
        }),
        ..spec(c)
    };
    let mut object = ImagePreflight::new("", spec);
    object.metadata = meta(namespace, &source);
    Ok(Planned {
        source,
        namespace: namespace.to_string(),
        object,
    })
}

/// The pod spec's scheduling constraints as the object keeps them; `None` when it has none.
/// A DaemonSet's pods get the DaemonSet controller's tolerations, and a pod bound by
/// `nodeName` a required `metadata.name` field term (as the DaemonSet controller binds its
/// pods), so the controller's scheduling rules see what the scheduler would.
pub fn scheduling(spec: &PodSpec, daemonset: bool) -> Option<Scheduling> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    if daemonset {
        tolerations.extend(select::daemonset_tolerations(
            spec.host_network == Some(true),
        ));
    }
    let mut affinity = spec.affinity.clone();
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        affinity = Some(bind_to_node(affinity.unwrap_or_default(), node));
    }
    let s = Scheduling {
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        tolerations: tolerations
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .map(Untyped)
            .collect(),
        affinity: affinity
            .and_then(|a| serde_json::to_value(a).ok())
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .map(Untyped),
    };
    let empty = s.node_selector.is_empty() && s.tolerations.is_empty() && s.affinity.is_none();
    (!empty).then_some(s)
}

/// `affinity` with every required node selector term also requiring `metadata.name = node`.
fn bind_to_node(mut affinity: Affinity, node: &str) -> Affinity {
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for t in &mut required.node_selector_terms {
        t.match_fields
            .get_or_insert_with(Vec::new)
            .push(field.clone());
    }
    affinity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::manifests::{ContainerImage, ContainerKind};
    use k8s_openapi::api::core::v1::Node;

    fn workload(kind: &str, spec: serde_json::Value) -> Workload {
        Workload {
            source: format!("app.yaml#1 {kind} team-a/web"),
            kind: kind.into(),
            namespace: "team-a".into(),
            images: ["reg/web:1", "reg/side:2", "reg/web:1"]
                .iter()
                .map(|i| ContainerImage {
                    container: "c".into(),
                    kind: ContainerKind::Container,
                    image: (*i).into(),
                })
                .collect(),
            pull_secrets: vec!["regcred".into()],
            service_account: "web".into(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    /// The spec the object carries, read back as a pod spec, lands where the workload does.
    fn as_pod_spec(s: &Scheduling) -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [],
            "nodeSelector": s.node_selector,
            "tolerations": s.tolerations,
            "affinity": s.affinity,
        }))
        .unwrap()
    }

    #[test]
    fn a_workload_becomes_one_object_with_its_constraints() {
        let w = workload(
            "Deployment",
            serde_json::json!({"containers": [], "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let c = Common {
            selector: Some("zone=a".into()),
            strict: true,
            ..Default::default()
        };
        let p = for_workload(&w, &c).unwrap();
        let o = &p.object;
        assert_eq!(p.namespace, "team-a");
        assert_eq!(o.metadata.generate_name.as_deref(), Some("preflight-"));
        assert_eq!(o.metadata.name, None);
        assert_eq!(
            o.spec.images,
            ["reg/web:1", "reg/side:2"],
            "deduplicated, in order"
        );
        assert_eq!(o.spec.image_pull_secrets, ["regcred"]);
        assert_eq!(o.spec.service_account_name.as_deref(), Some("web"));
        assert_eq!(o.spec.nodes.selector.as_deref(), Some("zone=a"));
        assert!(o.spec.degraded_fails);
        let s = o.spec.scheduling.as_ref().unwrap();
        assert_eq!(s.node_selector["pool"], "gpu");
        let tainted = node(
            serde_json::json!({"metadata": {"name": "g1", "labels": {"pool": "gpu"}},
            "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(select::can_land(&as_pod_spec(s), false, &tainted).is_ok());
        // The JSON the API server gets has the pod spec's own field names.
        let v = serde_json::to_value(o).unwrap();
        assert_eq!(
            v["spec"]["scheduling"]["tolerations"][0]["operator"],
            "Exists"
        );
    }

    #[test]
    fn daemonsets_and_bound_pods_keep_what_the_scheduler_would_see() {
        let ds = workload("DaemonSet", serde_json::json!({"containers": []}));
        let s = for_workload(&ds, &Common::default())
            .unwrap()
            .object
            .spec
            .scheduling
            .unwrap();
        let not_ready = node(serde_json::json!({"metadata": {"name": "n1"},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}));
        assert!(select::can_land(&as_pod_spec(&s), false, &not_ready).is_ok());
        let pod = workload(
            "Pod",
            serde_json::json!({"containers": [], "nodeName": "n2"}),
        );
        let s = for_workload(&pod, &Common::default())
            .unwrap()
            .object
            .spec
            .scheduling
            .unwrap();
        let spec = as_pod_spec(&s);
        assert!(select::can_land(
            &spec,
            false,
            &node(serde_json::json!({"metadata": {"name": "n2"}}))
        )
        .is_ok());
        assert!(select::can_land(&spec, false, &not_ready).is_err());
        let plain = workload("Deployment", serde_json::json!({"containers": []}));
        assert!(for_workload(&plain, &Common::default())
            .unwrap()
            .object
            .spec
            .scheduling
            .is_none());
    }

    #[test]
    fn workload_refs_and_their_errors() {
        let p = for_workload_ref("deploy/web", "team-a", &Common::default()).unwrap();
        let r = p.object.spec.workload_ref.unwrap();
        assert_eq!((r.kind, r.name.as_str()), (WorkloadKind::Deployment, "web"));
        assert_eq!(p.source, "Deployment team-a/web");
        for bad in ["web", "widget/web", "deploy/", "deploy/a/b"] {
            let e = for_workload_ref(bad, "team-a", &Common::default()).unwrap_err();
            assert!(e.to_string().starts_with("--workload"), "{e}");
        }
        let mut w = workload("Deployment", serde_json::json!({"containers": []}));
        w.images = (0..101)
            .map(|i| ContainerImage {
                container: "c".into(),
                kind: ContainerKind::Container,
                image: format!("reg/i:{i}"),
            })
            .collect();
        let e = for_workload(&w, &Common::default()).unwrap_err();
        assert!(e.to_string().contains("101 images, at most 100"), "{e}");
    }
}
