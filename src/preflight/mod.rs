//! Pre-flight before a rollout: "can every node where this could land pull these
//! images, now?" — answered by each node's own agent over its node's pull path (the one
//! [`Pipeline`](crate::pipeline::Pipeline)), through API objects only:
//!
//! ```text
//!  images / -f manifests ─▶ workloads ─▶ ImagePreflight ─▶ controller: nodes they can land on,
//!  (manifests)                            (cli)             NodePullStatus answers (select)
//!        ─▶ status rows ─▶ matrix ─▶ output
//!           (object)       (matrix)  (render, html)
//! ```
//!
//! Nobody's token travels to a node and no role needs `pods/proxy`: the CLI creates an
//! `ImagePreflight` (`create imagepreflights`, aggregated into `edit`), the controller hands
//! the checks to the agents through their own `NodePullStatus`, and the CLI renders the
//! object's status. See `docs/preflight.md` for the RBAC and the security notes.

pub mod fleet;
pub mod html;
pub mod manifests;
pub mod matrix;
pub mod object;
pub mod render;
pub mod select;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Node;

use self::manifests::{ManifestError, Workload};
use self::matrix::{AgentInfo, Cell, ExcludedNode, NodeRow, UnknownReason, Unplaced};

/// Default namespace and label selector of the agents (manifests/).
pub const AGENT_NAMESPACE: &str = "pullprobe";
pub const AGENT_SELECTOR: &str =
    "app.kubernetes.io/name=pullprobe,app.kubernetes.io/component=agent";
/// The audience the agents accept (their own; never the API server's).
pub const AGENT_AUDIENCE: &str = "pullprobe";

/// What to check, independent of the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub images: Vec<String>,
    pub files: Vec<String>,
    pub namespace: String,
    pub pull_secrets: Vec<String>,
    pub service_account: Option<String>,
}

/// The credentials context of a check: the pods' namespace, pull secrets, service account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredCtx {
    pub namespace: String,
    pub pull_secrets: Vec<String>,
    pub service_account: String,
}

/// One node's answers: its agent, and a cell per (context, image).
#[derive(Clone, Debug, Default)]
pub struct NodeAnswers {
    pub agent: Option<AgentInfo>,
    pub cells: HashMap<(CredCtx, String), Cell>,
}

/// Why a pre-flight could not run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("no images: give images as arguments or manifests with -f")]
    NoImages,
    #[error("invalid image reference in {source_}: {error}")]
    Reference { source_: String, error: String },
}

/// The workloads of the command line's images (no scheduling constraints).
fn cli_workload(o: &Options) -> Option<Workload> {
    if o.images.is_empty() {
        return None;
    }
    let spec = k8s_openapi::api::core::v1::PodSpec::default();
    Some(Workload {
        source: "command line".into(),
        kind: "Pod".into(),
        namespace: o.namespace.clone(),
        images: o
            .images
            .iter()
            .map(|i| manifests::ContainerImage {
                container: String::new(),
                kind: manifests::ContainerKind::Container,
                image: i.clone(),
            })
            .collect(),
        pull_secrets: o.pull_secrets.clone(),
        service_account: o
            .service_account
            .clone()
            .unwrap_or_else(|| "default".into()),
        spec,
    })
}

/// Read the workloads; every image reference must parse (the kubelet would refuse it).
pub fn workloads(o: &Options) -> Result<(Vec<Workload>, Vec<String>), PreflightError> {
    let loaded = manifests::load(&o.files, &o.namespace)?;
    let mut all: Vec<Workload> = cli_workload(o).into_iter().collect();
    all.extend(loaded.workloads);
    if all.iter().all(|w| w.images.is_empty()) {
        return Err(PreflightError::NoImages);
    }
    for w in &all {
        for c in &w.images {
            if let Err(e) = crate::reference::ImageRef::parse(&c.image) {
                return Err(PreflightError::Reference {
                    source_: w.source.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    Ok((all, loaded.warnings))
}

/// For each node, the images to ask about in each credentials context.
pub type PerNode = BTreeMap<String, BTreeMap<CredCtx, BTreeSet<String>>>;

/// Where the workloads land.
#[derive(Debug, Default)]
pub struct Placement {
    /// Per node, the images to ask about in each credentials context.
    pub per_node: PerNode,
    /// Nodes no workload can land on, and why.
    pub excluded: Vec<ExcludedNode>,
    /// node → image → why none of the image's workloads can land on that node.
    pub not_here: BTreeMap<String, BTreeMap<String, String>>,
    /// Workloads that land on no node at all.
    pub unplaced: Vec<Unplaced>,
}

/// Why `w`'s pods cannot land on a node, naming the constraint's value where it has one
/// (`nodeSelector pool=none does not match`).
fn why_not(w: &Workload, e: &select::Excluded) -> String {
    let sel = || {
        w.spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match e {
        select::Excluded::NodeSelector => format!("nodeSelector {} does not match", sel()),
        other => other.to_string(),
    }
}

/// The constraints that kept a workload off every node: each distinct one, with how many
/// nodes it excluded (`nodeSelector pool=none does not match on 3 nodes`).
fn nowhere_why(reasons: &[String]) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *count.entry(r.as_str()).or_default() += 1;
    }
    count
        .into_iter()
        .map(|(r, n)| {
            let noun = if n == 1 { "node" } else { "nodes" };
            format!("{r} on {n} {noun}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn plan_asks(
    workloads: &[Workload],
    contexts: &HashMap<usize, CredCtx>,
    nodes: &[Node],
    all_nodes: bool,
) -> Placement {
    let mut p = Placement::default();
    // Per workload, why each node refused it.
    let mut refused: Vec<Vec<String>> = vec![Vec::new(); workloads.len()];
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let mut why = Vec::new();
        let mut here: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, w) in workloads.iter().enumerate() {
            let fits = match (all_nodes, select::can_land(&w.spec, w.is_daemonset(), n)) {
                (true, _) | (false, Ok(())) => true,
                (false, Err(e)) => {
                    let reason = why_not(w, &e);
                    why.push(format!("{}: {reason}", w.source));
                    for c in &w.images {
                        here.entry(c.image.clone())
                            .or_default()
                            .push(format!("{}: {reason}", w.source));
                    }
                    if let Some(r) = refused.get_mut(i) {
                        r.push(reason);
                    }
                    false
                }
            };
            if !fits {
                continue;
            }
            let ctx = contexts.get(&i).cloned().unwrap_or_default();
            let set = p
                .per_node
                .entry(name.clone())
                .or_default()
                .entry(ctx)
                .or_default();
            set.extend(w.images.iter().map(|c| c.image.clone()));
        }
        let asked: BTreeSet<&String> = p
            .per_node
            .get(&name)
            .into_iter()
            .flat_map(|ctxs| ctxs.values().flatten())
            .collect();
        let not_here: BTreeMap<String, String> = here
            .into_iter()
            .filter(|(img, _)| !asked.contains(img))
            .map(|(img, whys)| (img, whys.join("; ")))
            .collect();
        if !p.per_node.contains_key(&name) {
            p.excluded.push(ExcludedNode {
                node: name.clone(),
                why: why.join("; "),
            });
        }
        p.not_here.insert(name, not_here);
    }
    for (w, reasons) in workloads.iter().zip(&refused) {
        if !nodes.is_empty() && reasons.len() == nodes.len() {
            p.unplaced.push(Unplaced {
                workload: w.source.clone(),
                images: w.images.iter().map(|c| c.image.clone()).collect(),
                why: nowhere_why(reasons),
            });
        }
    }
    p
}

/// Rows of the matrix from the answers: every node asked, every image in the column order.
pub fn rows(
    images: &[String],
    placement: &Placement,
    answers: &BTreeMap<String, NodeAnswers>,
) -> Vec<NodeRow> {
    placement
        .per_node
        .iter()
        .map(|(node, ctxs)| {
            let a = answers.get(node);
            let cells = images
                .iter()
                .map(|img| {
                    // The worst answer over the contexts this image is used in on this node.
                    let mut found: Vec<Cell> = ctxs
                        .iter()
                        .filter(|(_, set)| set.contains(img))
                        .filter_map(|(ctx, _)| {
                            a.and_then(|a| a.cells.get(&(ctx.clone(), img.clone())))
                                .cloned()
                        })
                        .collect();
                    found.sort_by_key(|c| std::cmp::Reverse(severity(c)));
                    match (
                        found.into_iter().next(),
                        ctxs.values().any(|s| s.contains(img)),
                    ) {
                        (Some(c), _) => c,
                        (None, true) => {
                            Cell::unknown(UnknownReason::AgentError, "no answer for this image")
                        }
                        (None, false) => Cell::not_scheduled(
                            placement
                                .not_here
                                .get(node)
                                .and_then(|m| m.get(img))
                                .cloned()
                                .unwrap_or_default(),
                        ),
                    }
                })
                .collect();
            NodeRow {
                node: node.clone(),
                agent: a.and_then(|a| a.agent.clone()),
                cells,
            }
        })
        .collect()
}

fn severity(c: &Cell) -> u8 {
    use matrix::CellVerdict::*;
    match c.verdict {
        NotReady | Blocked => 4,
        Unknown => 3,
        Degraded => 2,
        Ready => 1,
        NotScheduled => 0,
    }
}

/// Each workload's credentials context: its pull secrets, or — when it names none — its
/// service account's, as the ServiceAccount admission plugin fills them in
/// (kubernetes v1.20 `plugin/pkg/admission/serviceaccount/admission.go`: "If the pod does
/// not contain any ImagePullSecrets, the ImagePullSecrets of the service account are added").
pub async fn contexts(
    client: &kube::Client,
    workloads: &[Workload],
    warnings: &mut Vec<String>,
) -> HashMap<usize, CredCtx> {
    let mut sa_cache: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut out = HashMap::new();
    for (i, w) in workloads.iter().enumerate() {
        let mut secrets = w.pull_secrets.clone();
        if secrets.is_empty() {
            let key = (w.namespace.clone(), w.service_account.clone());
            if !sa_cache.contains_key(&key) {
                let got = match crate::k8s::nodes::service_account_pull_secrets(
                    client, &key.0, &key.1,
                )
                .await
                {
                    Ok(s) => s.unwrap_or_default(),
                    Err(e) => {
                        warnings.push(format!(
                            "cannot read ServiceAccount {}/{} ({}): its imagePullSecrets are not used",
                            key.0,
                            key.1,
                            e.status().map(|s| format!("HTTP {s}")).unwrap_or_else(|| "API error".into())
                        ));
                        Vec::new()
                    }
                };
                sa_cache.insert(key.clone(), got);
            }
            secrets = sa_cache.get(&key).cloned().unwrap_or_default();
        }
        out.insert(
            i,
            CredCtx {
                namespace: w.namespace.clone(),
                pull_secrets: secrets,
                service_account: w.service_account.clone(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap()
    }

    fn workload(source: &str, image: &str, selector: serde_json::Value) -> Workload {
        Workload {
            source: source.into(),
            kind: "CronJob".into(),
            namespace: "apps".into(),
            images: vec![manifests::ContainerImage {
                container: "c".into(),
                kind: manifests::ContainerKind::Container,
                image: image.into(),
            }],
            pull_secrets: Vec::new(),
            service_account: "default".into(),
            spec: serde_json::from_value(
                serde_json::json!({"containers": [], "nodeSelector": selector}),
            )
            .unwrap(),
        }
    }

    /// Issue 17 item 10: a workload whose nodeSelector matches no node: its cells say which
    /// constraint kept it off each node, and it is counted and named in the summary.
    #[test]
    fn a_workload_that_lands_nowhere_is_named_with_its_constraint() {
        let nodes = [
            node("a", serde_json::json!({"pool": "apps"})),
            node("b", serde_json::json!({"pool": "apps"})),
        ];
        let w = [
            workload(
                "app.yaml#1 Deployment apps/web",
                "reg/web:1",
                serde_json::json!({"pool": "apps"}),
            ),
            workload(
                "app.yaml#2 CronJob apps/nightly",
                "reg/job:1",
                serde_json::json!({"disk": "ssd"}),
            ),
        ];
        let p = plan_asks(&w, &HashMap::new(), &nodes, false);
        assert_eq!(
            p.unplaced,
            [Unplaced {
                workload: "app.yaml#2 CronJob apps/nightly".into(),
                images: vec!["reg/job:1".into()],
                why: "nodeSelector disk=ssd does not match on 2 nodes".into(),
            }]
        );
        assert_eq!(
            p.not_here["a"]["reg/job:1"],
            "app.yaml#2 CronJob apps/nightly: nodeSelector disk=ssd does not match"
        );
        let images = vec!["reg/web:1".to_string(), "reg/job:1".to_string()];
        let rows = rows(&images, &p, &BTreeMap::new());
        assert_eq!(rows[0].cells[1].verdict, matrix::CellVerdict::NotScheduled);
        assert!(rows[0].cells[1].message.contains("nodeSelector disk=ssd"));
        let m = matrix::Matrix::new(images, rows, p.excluded, Vec::new(), false)
            .with_unplaced(p.unplaced);
        assert_eq!(m.summary.unplaced, 1);
        assert!(
            m.summary.line.ends_with("; 1 workload lands on no node: app.yaml#2 CronJob apps/nightly (nodeSelector disk=ssd does not match on 2 nodes)"),
            "{}",
            m.summary.line
        );
    }
}
