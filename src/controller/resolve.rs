//! What an `ImagePreflight` asks about: its images, the pod template whose scheduling
//! constraints pick the candidate nodes, and the credentials context — all from the
//! object's own namespace (its `workloadRef` is read there, its pull secrets are named
//! there, and the service account's `imagePullSecrets` are added as admission does).

use k8s_openapi::api::core::v1::{Affinity, PodSpec, Toleration};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use crate::api::{ImagePreflight, Scheduling, WorkloadKind, MAX_IMAGES, MAX_PULL_SECRETS};
use crate::k8s::K8sError;
use crate::preflight::manifests::{self, Loaded};

/// The resolved question.
#[derive(Clone, Debug)]
pub struct Target {
    /// `Kind namespace/name` of the workload, or `spec.images`.
    pub source: String,
    pub images: Vec<String>,
    pub spec: PodSpec,
    pub daemonset: bool,
    pub namespace: String,
    pub pull_secrets: Vec<String>,
    pub service_account: String,
    pub warnings: Vec<String>,
}

/// Why the spec cannot be checked (the object finishes with this reason, no retry).
#[derive(Debug, thiserror::Error)]
pub enum Unresolvable {
    #[error("{kind} {name} does not exist in this namespace")]
    WorkloadNotFound { kind: &'static str, name: String },
    #[error("{0}")]
    InvalidSpec(String),
}

impl Unresolvable {
    pub fn reason(&self) -> &'static str {
        match self {
            Unresolvable::WorkloadNotFound { .. } => "WorkloadNotFound",
            Unresolvable::InvalidSpec(_) => "InvalidSpec",
        }
    }
}

/// The API resource of a workload kind (`CronJob` in `batch/v1beta1` before 1.21).
pub fn resource(kind: WorkloadKind, cronjob_v1: bool) -> ApiResource {
    let (group, version, plural) = match kind {
        WorkloadKind::Deployment => ("apps", "v1", "deployments"),
        WorkloadKind::StatefulSet => ("apps", "v1", "statefulsets"),
        WorkloadKind::DaemonSet => ("apps", "v1", "daemonsets"),
        WorkloadKind::ReplicaSet => ("apps", "v1", "replicasets"),
        WorkloadKind::Job => ("batch", "v1", "jobs"),
        WorkloadKind::CronJob if cronjob_v1 => ("batch", "v1", "cronjobs"),
        WorkloadKind::CronJob => ("batch", "v1beta1", "cronjobs"),
        WorkloadKind::Pod => ("", "v1", "pods"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// The workload object as JSON, or `None` when it does not exist.
async fn fetch(
    client: &kube::Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Option<serde_json::Value>, K8sError> {
    for v1 in [true, false] {
        let ar = resource(kind, v1);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        match api.get_opt(name).await {
            Ok(Some(o)) => {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                v["kind"] = serde_json::Value::String(kind.as_str().into());
                return Ok(Some(v));
            }
            Ok(None) => return Ok(None),
            // No batch/v1 CronJob on this server: try v1beta1.
            Err(kube::Error::Api(s)) if s.code == 404 && v1 && kind == WorkloadKind::CronJob => {}
            Err(e) => {
                return Err(K8sError::Api {
                    op: "get workload",
                    source: e,
                })
            }
        }
    }
    Ok(None)
}

/// The workload's pod template as a [`manifests::Workload`].
async fn workload(
    client: &kube::Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
) -> Result<Result<manifests::Workload, Unresolvable>, K8sError> {
    let Some(obj) = fetch(client, ns, kind, name).await? else {
        return Ok(Err(Unresolvable::WorkloadNotFound {
            kind: kind.as_str(),
            name: manifests::sanitize(name),
        }));
    };
    let mut loaded = Loaded::default();
    let mut count = 0;
    let text = serde_json::to_string(&obj).unwrap_or_default();
    if let Err(e) = manifests::parse_text("workloadRef", &text, ns, &mut loaded, &mut count) {
        return Ok(Err(Unresolvable::InvalidSpec(e.to_string())));
    }
    Ok(loaded
        .workloads
        .into_iter()
        .next()
        .ok_or_else(|| Unresolvable::InvalidSpec("the workload has no pod template".into())))
}

/// A pod spec with only the scheduling constraints of `spec.scheduling`.
fn scheduling_spec(s: Option<&Scheduling>) -> Result<PodSpec, Unresolvable> {
    let Some(s) = s else {
        return Ok(PodSpec::default());
    };
    let tolerations = s
        .tolerations
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::from_value::<Toleration>(t.0.clone()).map_err(|_| {
                Unresolvable::InvalidSpec(format!(
                    "spec.scheduling.tolerations[{i}] is not a toleration"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let affinity = match &s.affinity {
        None => None,
        Some(a) => Some(
            serde_json::from_value::<Affinity>(a.0.clone()).map_err(|_| {
                Unresolvable::InvalidSpec("spec.scheduling.affinity is not a pod affinity".into())
            })?,
        ),
    };
    Ok(PodSpec {
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        affinity,
        ..Default::default()
    })
}

/// Adds `items` to `list` once each, in order.
fn extend_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The object's question, or why it cannot be asked.
pub async fn target(
    client: &kube::Client,
    p: &ImagePreflight,
) -> Result<Result<Target, Unresolvable>, K8sError> {
    let ns = p
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut t = Target {
        source: "spec.images".into(),
        images: Vec::new(),
        spec: PodSpec::default(),
        daemonset: false,
        namespace: ns.clone(),
        pull_secrets: p.spec.image_pull_secrets.clone(),
        service_account: p
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        warnings: Vec::new(),
    };
    if let Some(w) = &p.spec.workload_ref {
        let wl = match workload(client, &ns, w.kind, &w.name).await? {
            Ok(wl) => wl,
            Err(e) => return Ok(Err(e)),
        };
        t.source = format!("{} {ns}/{}", w.kind.as_str(), manifests::sanitize(&w.name));
        t.daemonset = wl.is_daemonset();
        extend_unique(&mut t.images, wl.images.iter().map(|c| c.image.clone()));
        extend_unique(&mut t.pull_secrets, wl.pull_secrets.clone());
        if p.spec.service_account_name.is_none() {
            t.service_account = wl.service_account.clone();
        }
        t.spec = wl.spec;
    } else {
        t.spec = match scheduling_spec(p.spec.scheduling.as_ref()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
    }
    extend_unique(&mut t.images, p.spec.images.iter().cloned());
    if let Err(e) = check_images(&t.images) {
        return Ok(Err(e));
    }
    add_service_account_secrets(client, &mut t).await?;
    Ok(Ok(t))
}

fn check_images(images: &[String]) -> Result<(), Unresolvable> {
    if images.is_empty() {
        return Err(Unresolvable::InvalidSpec(
            "no images: set spec.images or a spec.workloadRef with containers".into(),
        ));
    }
    if images.len() > MAX_IMAGES {
        return Err(Unresolvable::InvalidSpec(format!(
            "{} images: at most {MAX_IMAGES} per pre-flight",
            images.len()
        )));
    }
    for (i, img) in images.iter().enumerate() {
        if img.len() > crate::api::MAX_IMAGE_LEN || crate::reference::ImageRef::parse(img).is_err()
        {
            return Err(Unresolvable::InvalidSpec(format!(
                "image {} of the pre-flight is not a valid image reference",
                i + 1
            )));
        }
    }
    Ok(())
}

/// The service account's `imagePullSecrets` (as the ServiceAccount admission plugin adds
/// them to pods), bounded to what an assignment carries.
async fn add_service_account_secrets(
    client: &kube::Client,
    t: &mut Target,
) -> Result<(), K8sError> {
    match crate::k8s::nodes::service_account_pull_secrets(client, &t.namespace, &t.service_account).await {
        Ok(Some(s)) => extend_unique(&mut t.pull_secrets, s),
        Ok(None) => t.warnings.push(format!(
            "service account {} does not exist in namespace {}: pods would not be created",
            manifests::sanitize(&t.service_account),
            t.namespace
        )),
        // Not allowed to read it: check with the secrets named in the object only.
        Err(e) if e.status() == Some(403) => t.warnings.push(
            "the controller may not read service accounts here: their imagePullSecrets are not used".into(),
        ),
        Err(e) => return Err(e),
    }
    if t.pull_secrets.len() > MAX_PULL_SECRETS {
        t.warnings.push(format!(
            "{} pull secrets: only the first {MAX_PULL_SECRETS} are used",
            t.pull_secrets.len()
        ));
        t.pull_secrets.truncate(MAX_PULL_SECRETS);
    }
    Ok(())
}
