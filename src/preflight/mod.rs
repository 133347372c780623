//! Pre-flight before a rollout: "can every node where this could land pull these
//! images, now?" — asked of each node's own agent, which probes over its node's pull
//! path (the one [`Pipeline`](crate::pipeline::Pipeline), through its `PullPath`):
//!
//! ```text
//! images / -f manifests ─▶ workloads ─▶ nodes they can land on ─▶ ask each agent ─▶ matrix ─▶ output
//!  (manifests)                           (select)                  (ask, wire)        (matrix) (render, html)
//! ```
//!
//! The agents are reached through the API server's pod proxy with the user's kubeconfig
//! (`create pods/proxy` in the agent namespace), so no new exposure is needed; each agent
//! then checks the caller's token itself (`create nodes/preflight` of `pullprobe.io`).
//! See `docs/preflight.md` for the RBAC and the security notes.

pub mod ask;
pub mod fleet;
pub mod html;
pub mod manifests;
pub mod matrix;
pub mod object;
pub mod render;
pub mod select;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};

use self::ask::{Asker, CredCtx, NodeAsk};
use self::manifests::{ManifestError, Workload};
use self::matrix::{Cell, ExcludedNode, Matrix, NodeRow, UnknownReason, Unplaced};
use crate::k8s::nodes::AgentAddr;
use crate::k8s::K8sError;

/// Default namespace and label selector of the agents (manifests/).
pub const AGENT_NAMESPACE: &str = "pullprobe";
pub const AGENT_SELECTOR: &str =
    "app.kubernetes.io/name=pullprobe,app.kubernetes.io/component=agent";
/// The audience of tokens minted for agents (`--agent-service-account`).
pub const AGENT_AUDIENCE: &str = "pullprobe";

/// Where the token the agents check comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// The kubeconfig's own bearer token (token, tokenFile, in-cluster).
    Kubeconfig,
    /// A file (e.g. a projected ServiceAccount token with `audience: pullprobe`).
    File(std::path::PathBuf),
    /// TokenRequest for this ServiceAccount, audience `pullprobe`, 10 minutes.
    ServiceAccount { namespace: String, name: String },
}

/// Everything a pre-flight needs, independent of the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub images: Vec<String>,
    pub files: Vec<String>,
    pub namespace: String,
    pub pull_secrets: Vec<String>,
    pub service_account: Option<String>,
    pub selector: Option<String>,
    pub all_nodes: bool,
    pub agent_namespace: String,
    pub agent_selector: String,
    pub agent_port: u16,
    pub token: TokenSource,
    pub kubeconfig: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub strict: bool,
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
    #[error(transparent)]
    Kube(#[from] K8sError),
    #[error("{0}")]
    Token(String),
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

/// The agent on each node: a running Pod with an address, and its port.
pub fn agents(pods: &[Pod], port: u16) -> HashMap<String, Result<AgentAddr, Box<Cell>>> {
    let mut out: HashMap<String, Result<AgentAddr, Box<Cell>>> = HashMap::new();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let status = p.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let ip = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|i| !i.is_empty());
        let pod = p.metadata.name.as_deref().unwrap_or("");
        let addr = match (phase, ip) {
            ("Running", Some(_)) => Ok(agent_addr(p, port)),
            ("Running", None) => Err(Box::new(Cell::unknown(
                UnknownReason::AgentNotRunning,
                format!("the agent Pod {pod} is Running but has no status.podIP yet: the API server cannot proxy to it until the kubelet reports its address"),
            ))),
            (phase, _) => Err(Box::new(Cell::unknown(
                UnknownReason::AgentNotRunning,
                format!(
                    "the agent Pod {pod} is {}, not Running",
                    if phase.is_empty() { "without a phase" } else { phase }
                ),
            ))),
        };
        // A running agent wins over one that is not (rolling updates).
        match out.get(&node) {
            Some(Ok(_)) => {}
            _ => {
                out.insert(node, addr);
            }
        }
    }
    out
}

fn agent_addr(p: &Pod, default_port: u16) -> AgentAddr {
    let ports = p
        .spec
        .as_ref()
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten());
    let named = ports
        .filter_map(|cp| Some((cp.name.clone()?, cp.container_port)))
        .find(|(n, _)| {
            matches!(
                n.as_str(),
                "https-main" | "http-main" | "http-metrics" | "https-metrics"
            )
        });
    let (scheme, port) = match named {
        Some((n, p)) => (
            if n.starts_with("https") {
                "https"
            } else {
                "http"
            },
            u16::try_from(p).unwrap_or(default_port),
        ),
        None => ("http", default_port),
    };
    AgentAddr {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        pod: p.metadata.name.clone().unwrap_or_default(),
        scheme: scheme.into(),
        port,
    }
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
    answers: &BTreeMap<String, ask::NodeAnswers>,
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

/// The agents' token, per [`TokenSource`]. Never printed.
async fn agent_token(
    o: &Options,
    cfg: &kube::Config,
    client: &kube::Client,
) -> Result<Option<String>, PreflightError> {
    use secrecy::ExposeSecret;
    match &o.token {
        TokenSource::File(p) => std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| PreflightError::Token(format!("--agent-token-file {}: {e}", p.display()))),
        TokenSource::ServiceAccount { namespace, name } => {
            let t = crate::k8s::nodes::token_request(client, namespace, name, AGENT_AUDIENCE, 600)
                .await?;
            Ok(Some(t))
        }
        TokenSource::Kubeconfig => {
            if let Some(t) = &cfg.auth_info.token {
                return Ok(Some(t.expose_secret().to_string()));
            }
            if let Some(f) = &cfg.auth_info.token_file {
                let t = std::fs::read_to_string(f).map_err(|e| {
                    PreflightError::Token(format!("the kubeconfig's tokenFile: {e}"))
                })?;
                return Ok(Some(t.trim().to_string()));
            }
            Err(PreflightError::Token(
                "the kubeconfig authenticates without a bearer token (client certificate or exec plugin): pass --agent-service-account NS/NAME (an audience-bound token is requested for it) or --agent-token-file FILE".into(),
            ))
        }
    }
}

/// Each workload's credentials context: its pull secrets, or — when it names none — its
/// service account's, as the ServiceAccount admission plugin fills them in
/// (kubernetes v1.20 `plugin/pkg/admission/serviceaccount/admission.go`: "If the pod does
/// not contain any ImagePullSecrets, the ImagePullSecrets of the service account are added").
async fn contexts(
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

/// Run a pre-flight.
pub async fn run(o: &Options) -> Result<Matrix, PreflightError> {
    let (workloads, mut warnings) = workloads(o)?;
    let cfg = crate::k8s::config(o.kubeconfig.as_deref()).await?;
    let client =
        kube::Client::try_from(cfg.clone()).map_err(|e| K8sError::Client(e.to_string()))?;
    let token = agent_token(o, &cfg, &client).await?;
    let nodes = crate::k8s::nodes::list_nodes(&client, o.selector.as_deref()).await?;
    let pods = crate::k8s::nodes::list_pods(&client, &o.agent_namespace, &o.agent_selector).await?;
    let contexts = contexts(&client, &workloads, &mut warnings).await;
    let placement = plan_asks(&workloads, &contexts, &nodes, o.all_nodes);
    let agents = agents(&pods, o.agent_port);
    let asks: Vec<NodeAsk> = placement
        .per_node
        .iter()
        .map(|(node, ctxs)| NodeAsk {
            node: node.clone(),
            agent: agents.get(node).cloned().unwrap_or_else(|| {
                Err(Box::new(Cell::unknown(
                    UnknownReason::NoAgent,
                    format!(
                        "no agent Pod ({}) on this node in namespace {}",
                        o.agent_selector, o.agent_namespace
                    ),
                )))
            }),
            work: ctxs
                .iter()
                .map(|(c, set)| (c.clone(), set.iter().cloned().collect()))
                .collect(),
        })
        .collect();
    let asker = Asker {
        client,
        token,
        timeout: o.timeout,
        concurrency: o.concurrency,
    };
    let answers = asker.run(&asks).await;
    let mut images: Vec<String> = Vec::new();
    for w in &workloads {
        for c in &w.images {
            if !images.contains(&c.image) {
                images.push(c.image.clone());
            }
        }
    }
    let rows = rows(&images, &placement, &answers);
    let Placement {
        excluded, unplaced, ..
    } = placement;
    Ok(Matrix::new(images, rows, excluded, warnings, o.strict).with_unplaced(unplaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    /// Issue 17 item 11: a Running agent Pod without `status.podIP` says exactly that.
    #[test]
    fn a_running_agent_without_an_address_says_so() {
        let p = |phase: &str, ip: Option<&str>| {
            pod(serde_json::json!({
                "metadata": {"name": "pullprobe-x", "namespace": "pullprobe"},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": phase, "podIP": ip},
            }))
        };
        let message = |pods: &[Pod]| match agents(pods, 9808).remove("n1") {
            Some(Err(c)) => (c.reason.clone().unwrap_or_default(), c.message.clone()),
            other => panic!("{other:?}"),
        };
        let (reason, m) = message(&[p("Running", None)]);
        assert_eq!(reason, "AgentNotRunning");
        assert_eq!(m, "the agent Pod pullprobe-x is Running but has no status.podIP yet: the API server cannot proxy to it until the kubelet reports its address");
        let (_, m) = message(&[p("Pending", None)]);
        assert_eq!(m, "the agent Pod pullprobe-x is Pending, not Running");
        assert!(agents(&[p("Running", Some("10.0.0.7"))], 9808)["n1"].is_ok());
    }

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
        let m = Matrix::new(images, rows, p.excluded, Vec::new(), false).with_unplaced(p.unplaced);
        assert_eq!(m.summary.unplaced, 1);
        assert!(
            m.summary.line.ends_with("; 1 workload lands on no node: app.yaml#2 CronJob apps/nightly (nodeSelector disk=ssd does not match on 2 nodes)"),
            "{}",
            m.summary.line
        );
    }
}
