//! The controller's view of the fleet: reflector caches of every Node and every
//! NodePullStatus (one watch each, shared by the pre-flight reconciler, the rollout guard
//! and the admission webhook), the freshness rules of `NodePullStatus`, and the candidate
//! nodes of a pod template by today's scheduling rules ([`crate::preflight::select`]).
//!
//! Freshness (ISSUE16 contract): an agent is live while its `heartbeatTime` is within
//! 2 × `intervalSeconds` of now; a registry path is fresh while its `checkedAt` is within
//! 1.5 × `intervalSeconds`. Both are read from objects the agents wrote, so every time is
//! parsed defensively (unparsable: stale).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PodSpec};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::watch;

use crate::api::{
    ImagePreflight, NodePullStatus, NodePullStatusStatus, NodeSelection, RegistryPath,
};
use crate::preflight::matrix::ExcludedNode;
use crate::preflight::select;

/// Why the fleet caches could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the {0} watch stopped before its first list")]
    NotSynced(&'static str),
}

/// Reflector caches of Nodes and NodePullStatus objects (and a change counter that the
/// NodePullStatus watch bumps on every event, so waiters wake on new answers).
#[derive(Clone)]
pub struct Fleet {
    nodes: Store<Node>,
    statuses: Store<NodePullStatus>,
    changed: watch::Receiver<u64>,
}

impl Fleet {
    /// Starts both watches on `client` (tasks on the current runtime, forever, retried with
    /// kube's default backoff) and returns once each has listed once.
    pub async fn start(client: kube::Client) -> Result<Fleet, FleetError> {
        let (nodes, node_writer) = reflector::store::<Node>();
        let (statuses, status_writer) = reflector::store::<NodePullStatus>();
        let (tx, changed) = watch::channel(0u64);
        let node_api: Api<Node> = Api::all(client.clone());
        // Nodes: only what scheduling reads matters; the status's images list is the
        // bulk of a Node and is dropped before it is cached.
        let node_stream = watcher::watcher(node_api, watcher::Config::default())
            .default_backoff()
            .modify(|n: &mut Node| {
                if let Some(s) = n.status.as_mut() {
                    s.images = None;
                    s.volumes_attached = None;
                    s.volumes_in_use = None;
                }
                n.metadata.managed_fields = None;
            })
            .reflect(node_writer)
            .for_each(|_| futures::future::ready(()));
        tokio::spawn(node_stream);
        let status_api: Api<NodePullStatus> = Api::all(client);
        let status_stream = watcher::watcher(status_api, watcher::Config::default())
            .default_backoff()
            .modify(|s: &mut NodePullStatus| s.metadata.managed_fields = None)
            .reflect(status_writer)
            .for_each(move |_| {
                tx.send_modify(|n| *n = n.wrapping_add(1));
                futures::future::ready(())
            });
        tokio::spawn(status_stream);
        nodes
            .wait_until_ready()
            .await
            .map_err(|_| FleetError::NotSynced("Node"))?;
        statuses
            .wait_until_ready()
            .await
            .map_err(|_| FleetError::NotSynced("NodePullStatus"))?;
        Ok(Fleet {
            nodes,
            statuses,
            changed,
        })
    }

    /// Every Node in the cache.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    /// The NodePullStatus of `node`, if its agent ever wrote one.
    pub fn status(&self, node: &str) -> Option<Arc<NodePullStatus>> {
        self.statuses.get(&ObjectRef::new(node))
    }

    /// Every NodePullStatus in the cache.
    pub fn statuses(&self) -> Vec<Arc<NodePullStatus>> {
        self.statuses.state()
    }

    /// A receiver that changes whenever any NodePullStatus does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// The candidate nodes of a pod template ([`candidates`]) from the cache.
    pub fn candidates(
        &self,
        spec: &PodSpec,
        daemonset: bool,
        selection: &NodeSelection,
    ) -> Result<Candidates, SelectorError> {
        candidates(&self.nodes(), spec, daemonset, selection)
    }
}

/// Where a pod template can land.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// Node names, sorted.
    pub nodes: Vec<String>,
    /// Nodes the selection kept but the template cannot land on, and why.
    pub excluded: Vec<ExcludedNode>,
    /// Why the template lands on none of the selected nodes (the distinct constraints and
    /// how many nodes each excluded), when it lands nowhere.
    pub nowhere: Option<String>,
}

/// The nodes `selection` keeps (its label selector) on which a pod with `spec` (of a
/// DaemonSet when `daemonset`) may land ([`select::can_land`]; `selection.all` skips the
/// template's constraints).
pub fn candidates(
    nodes: &[Arc<Node>],
    spec: &PodSpec,
    daemonset: bool,
    selection: &NodeSelection,
) -> Result<Candidates, SelectorError> {
    let selector = match selection.selector.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(LabelSelector::parse(s)?),
        _ => None,
    };
    let empty = BTreeMap::new();
    let mut out = Candidates::default();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut selected = 0usize;
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let labels = n.metadata.labels.as_ref().unwrap_or(&empty);
        if selector.as_ref().is_some_and(|s| !s.matches(labels)) {
            continue;
        }
        selected += 1;
        match (selection.all, select::can_land(spec, daemonset, n)) {
            (true, _) | (false, Ok(())) => out.nodes.push(name),
            (false, Err(e)) => {
                let why = why_not(spec, &e);
                *refused.entry(why.clone()).or_default() += 1;
                out.excluded.push(ExcludedNode { node: name, why });
            }
        }
    }
    out.nodes.sort();
    out.excluded.sort_by(|a, b| a.node.cmp(&b.node));
    if out.nodes.is_empty() && selected > 0 {
        let parts: Vec<String> = refused
            .into_iter()
            .map(|(r, n)| format!("{r} on {n} {}", if n == 1 { "node" } else { "nodes" }))
            .collect();
        out.nowhere = Some(parts.join("; "));
    }
    Ok(out)
}

/// Why the template cannot land, naming the nodeSelector's value.
fn why_not(spec: &PodSpec, e: &select::Excluded) -> String {
    match e {
        select::Excluded::NodeSelector => {
            let sel: Vec<String> = spec
                .node_selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("nodeSelector {} does not match", sel.join(","))
        }
        other => other.to_string(),
    }
}

/// A label selector string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.nodes.selector: {0}")]
pub struct SelectorError(String);

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
/// `!k`, comma-separated, all ANDed), as `kubectl -l` and `labels.Parse` read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Longest selector read (the CRD's own bound).
const MAX_SELECTOR_LEN: usize = 1024;

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError(format!(
                "longer than {MAX_SELECTOR_LEN} bytes"
            )));
        }
        let mut out = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError("an empty requirement".into()));
            }
            out.push(requirement(part)?);
        }
        Ok(LabelSelector(out))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn label_token(s: &str) -> Result<String, SelectorError> {
    let ok = !s.is_empty()
        && s.len() <= 317
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(SelectorError("a key or value is not a label name".into()))
    }
}

fn value_token(s: &str) -> Result<String, SelectorError> {
    if s.is_empty() {
        return Ok(String::new());
    }
    label_token(s)
}

fn requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(label_token(k.trim())?));
    }
    for (op, ne) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (label_token(k.trim())?, value_token(v.trim())?);
            return Ok(if ne {
                Requirement::NotEq(k, v)
            } else {
                Requirement::Eq(k, v)
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [k] => Ok(Requirement::Exists(label_token(k)?)),
        [k, rest] => {
            let rest = rest.trim();
            let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
                ("notin", l)
            } else if let Some(l) = rest.strip_prefix("in") {
                ("in", l)
            } else {
                return Err(SelectorError("an unknown operator".into()));
            };
            let inner = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| SelectorError(format!("`{op}` needs a (list)")))?;
            let values = inner
                .split(',')
                .map(|v| value_token(v.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            let k = label_token(k)?;
            Ok(if op == "in" {
                Requirement::In(k, values)
            } else {
                Requirement::NotIn(k, values)
            })
        }
        _ => Err(SelectorError("an empty requirement".into())),
    }
}

/// An RFC 3339 time from an object, or `None`.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// `t` in RFC 3339 (UTC, seconds).
pub fn format_time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.round(jiff::Unit::Second).unwrap_or(ts).to_string())
        .unwrap_or_default()
}

/// What the controller may read of a node's agent.
#[derive(Clone, Copy, Debug)]
pub enum Agent<'a> {
    /// No NodePullStatus: no agent ever ran on the node (or it cannot write).
    None,
    /// The agent stopped writing: its heartbeat is older than 2 × its interval.
    Silent { heartbeat: Option<&'a str> },
    /// The agent is writing; its status can be read and it answers assignments.
    Live(&'a NodePullStatusStatus),
}

/// The agent's interval, with a floor (an agent that says 0 is treated as 10 s).
fn interval(st: &NodePullStatusStatus) -> Duration {
    Duration::from_secs(u64::from(st.interval_seconds.max(10)))
}

/// Whether `at` (RFC 3339) is within `limit` of `now` (times in the future count as fresh:
/// clocks differ between nodes).
fn within(at: Option<&str>, limit: Duration, now: SystemTime) -> bool {
    at.and_then(parse_time).is_some_and(|t| {
        now.duration_since(t)
            .map(|age| age <= limit)
            .unwrap_or(true)
    })
}

/// The state of a node's agent from its NodePullStatus.
pub fn agent(nps: Option<&NodePullStatus>, now: SystemTime) -> Agent<'_> {
    let Some(st) = nps.and_then(|n| n.status.as_ref()) else {
        return Agent::None;
    };
    let heartbeat = st.heartbeat_time.as_deref();
    if within(heartbeat, interval(st) * 2, now) {
        Agent::Live(st)
    } else {
        Agent::Silent { heartbeat }
    }
}

/// The fresh path state of `registry` on a live agent's node, if it has one.
pub fn fresh_path<'a>(
    st: &'a NodePullStatusStatus,
    registry: &str,
    now: SystemTime,
) -> Option<&'a RegistryPath> {
    let limit = interval(st).mul_f64(1.5);
    st.registries
        .iter()
        .find(|r| r.registry == registry)
        .filter(|r| within(Some(&r.checked_at), limit, now))
}

/// `namespace/name` of an ImagePreflight, for logs.
pub fn key(p: &ImagePreflight) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_parse_as_kubectl_reads_them() {
        let s = LabelSelector::parse("pool=gpu, zone in (a,b),!spot,tier notin (x),env!=dev,rack")
            .unwrap();
        let l = labels(&[("pool", "gpu"), ("zone", "b"), ("tier", "y"), ("rack", "1")]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("spot".into(), "1".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("zone".into(), "c".into());
        assert!(!s.matches(&l3));
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
        assert!(LabelSelector::parse("a=<script>").is_err());
        assert!(LabelSelector::parse(&"a".repeat(2000)).is_err());
    }

    fn node(name: &str, kv: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels(kv)}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn candidates_follow_the_selection_then_the_template() {
        let nodes = [
            node("a", &[("pool", "web")]),
            node("b", &[("pool", "db")]),
            node("c", &[("pool", "web"), ("zone", "z")]),
        ];
        let spec: PodSpec = serde_json::from_value(
            serde_json::json!({"containers": [], "nodeSelector": {"pool": "web"}}),
        )
        .unwrap();
        let c = candidates(&nodes, &spec, false, &NodeSelection::default()).unwrap();
        assert_eq!(c.nodes, ["a", "c"]);
        assert_eq!(c.excluded[0].node, "b");
        assert_eq!(c.excluded[0].why, "nodeSelector pool=web does not match");
        let sel = NodeSelection {
            selector: Some("zone=z".into()),
            all: false,
        };
        assert_eq!(candidates(&nodes, &spec, false, &sel).unwrap().nodes, ["c"]);
        let all = NodeSelection {
            selector: None,
            all: true,
        };
        assert_eq!(
            candidates(&nodes, &spec, false, &all).unwrap().nodes.len(),
            3
        );
        let none: PodSpec = serde_json::from_value(
            serde_json::json!({"containers": [], "nodeSelector": {"pool": "x"}}),
        )
        .unwrap();
        let c = candidates(&nodes, &none, false, &NodeSelection::default()).unwrap();
        assert_eq!(
            c.nowhere.as_deref(),
            Some("nodeSelector pool=x does not match on 3 nodes")
        );
    }

    #[test]
    fn freshness_follows_the_interval() {
        let now = parse_time("2026-01-01T00:10:00Z").unwrap();
        let nps = |hb: &str, checked: &str| NodePullStatus {
            metadata: Default::default(),
            spec: Default::default(),
            status: Some(NodePullStatusStatus {
                heartbeat_time: Some(hb.into()),
                interval_seconds: 60,
                registries: vec![RegistryPath {
                    registry: "r.example".into(),
                    checked_at: checked.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let live = nps("2026-01-01T00:08:30Z", "2026-01-01T00:08:31Z");
        let Agent::Live(st) = agent(Some(&live), now) else {
            panic!("live")
        };
        assert!(fresh_path(st, "r.example", now).is_some());
        assert!(fresh_path(st, "other", now).is_none());
        let stale_path = nps("2026-01-01T00:09:00Z", "2026-01-01T00:08:29Z");
        let Agent::Live(st) = agent(Some(&stale_path), now) else {
            panic!("live")
        };
        assert!(fresh_path(st, "r.example", now).is_none());
        let silent = nps("2026-01-01T00:07:59Z", "x");
        assert!(matches!(agent(Some(&silent), now), Agent::Silent { .. }));
        assert!(matches!(agent(None, now), Agent::None));
        let garbage = nps("yesterday", "x");
        assert!(matches!(agent(Some(&garbage), now), Agent::Silent { .. }));
    }
}
