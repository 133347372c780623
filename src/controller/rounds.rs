//! The two rounds of a pre-flight, as pure functions over the fleet's NodePullStatus
//! objects (the reconciler does the I/O):
//!
//! 1. **Path.** Each candidate node's answer for each image's registry comes from its
//!    agent's own NodePullStatus when fresh (no request at all); only a live agent whose
//!    path for some registry is missing or stale gets a `Path` assignment. Nodes without a
//!    NodePullStatus are `unknown` `NoAgent`, those whose agent stopped its heartbeat
//!    `unknown` `AgentNotRunning`; an assignment not answered in time: `AgentTimeout`.
//! 2. **Image.** Nodes whose path works are grouped by the registry path's fingerprint
//!    (equal on nodes whose image facts must be equal); per fingerprint one node, chosen by
//!    a stable hash (rendezvous: the same node every time while the group is the same),
//!    checks the images — batched, one `Image` assignment per chosen node — and its answer
//!    is shared with the group (`checkedOn`), each member keeping its own path's verdict
//!    when the image pulls (degraded stays degraded).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::fleet::{self, Agent};
use crate::api::{self, Answer, NodePullStatus};
use crate::preflight::matrix::{AgentInfo, Cell, CellVerdict, NodeRow, UnknownReason};
use crate::preflight::object::{cell_from_api, clean};

/// What one (node, image) is waiting for.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot {
    /// Decided.
    Final(Cell),
    /// Round 1 must ask the node for a fresh path answer.
    NeedPath,
    /// The path works (`cell` is its verdict: ready or degraded); round 2 checks the image
    /// once per `fingerprint`.
    PathOk { fingerprint: String, cell: Cell },
}

/// One candidate node's cells in progress.
#[derive(Clone, Debug)]
pub struct NodeWork {
    pub node: String,
    pub agent: Option<AgentInfo>,
    /// One per image.
    pub slots: Vec<Slot>,
}

/// The registry of each image as the agents key their paths (the domain as written).
pub fn registries(images: &[String]) -> Vec<String> {
    images
        .iter()
        .map(|i| {
            crate::reference::ImageRef::parse(i)
                .map(|r| r.domain)
                .unwrap_or_default()
        })
        .collect()
}

fn agent_info(st: &api::NodePullStatusStatus) -> AgentInfo {
    AgentInfo {
        version: clean(&st.agent_version, 64),
        runtime: clean(&st.runtime, 32),
        platform: clean(&st.platform, 64),
        pull_secrets: String::new(),
    }
}

/// A path state from an object: `ok`, `degraded` (the path works), anything else fails.
fn path_works(state: &str) -> bool {
    matches!(state, "ok" | "degraded")
}

/// Round 1 from the caches: every candidate's slots.
pub fn round1(
    nodes: &[String],
    registries: &[String],
    status_of: impl Fn(&str) -> Option<Arc<NodePullStatus>>,
    now: SystemTime,
) -> Vec<NodeWork> {
    nodes
        .iter()
        .map(|node| {
            let nps = status_of(node);
            let all = |c: Cell| vec![Slot::Final(c); registries.len()];
            let (agent, slots) = match fleet::agent(nps.as_deref(), now) {
                Agent::None => (
                    None,
                    all(Cell::unknown(
                        UnknownReason::NoAgent,
                        "no NodePullStatus for this node: no pullprobe agent runs on it",
                    )),
                ),
                Agent::Silent { heartbeat } => (
                    None,
                    all(Cell::unknown(
                        UnknownReason::AgentNotRunning,
                        format!(
                            "the node's agent stopped writing its NodePullStatus (last heartbeat {})",
                            clean(heartbeat.unwrap_or("never"), 40)
                        ),
                    )),
                ),
                Agent::Live(st) => (
                    Some(agent_info(st)),
                    registries
                        .iter()
                        .map(|r| match fleet::fresh_path(st, r, now) {
                            None => Slot::NeedPath,
                            Some(p) => path_slot(&p.state, &p.fingerprint, &p.cell, "schedule"),
                        })
                        .collect(),
                ),
            };
            NodeWork {
                node: node.clone(),
                agent,
                slots,
            }
        })
        .collect()
}

fn path_slot(state: &str, fingerprint: &str, cell: &api::Cell, source: &str) -> Slot {
    let mut c = cell_from_api(cell);
    c.source.get_or_insert_with(|| source.to_string());
    if path_works(state) && !fingerprint.is_empty() {
        if c.verdict != CellVerdict::Degraded {
            c.verdict = CellVerdict::Ready;
        }
        Slot::PathOk {
            fingerprint: clean(fingerprint, 64),
            cell: c,
        }
    } else if path_works(state) {
        Slot::Final(Cell::unknown(
            UnknownReason::AgentReplyInvalid,
            "the agent's path answer has no fingerprint",
        ))
    } else {
        Slot::Final(c)
    }
}

/// The images each node must be asked about in round 1.
pub fn path_asks(work: &[NodeWork], images: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for w in work {
        let need: Vec<String> = w
            .slots
            .iter()
            .zip(images)
            .filter(|(s, _)| **s == Slot::NeedPath)
            .map(|(_, i)| i.clone())
            .collect();
        if !need.is_empty() {
            out.insert(w.node.clone(), need);
        }
    }
    out
}

/// The cell for an assignment the agent refused.
fn refused(why: &str) -> Cell {
    Cell::unknown(
        UnknownReason::AgentError,
        format!("the agent refused the check: {}", clean(why, 300)),
    )
}

/// A `Path` answer into the node's waiting slots.
pub fn apply_path_answer(w: &mut NodeWork, images: &[String], a: &Answer) {
    if let (Some(agent), false) = (w.agent.as_mut(), a.pull_secrets_note.is_empty()) {
        agent.pull_secrets = clean(&a.pull_secrets_note, 512);
    }
    for (slot, image) in w.slots.iter_mut().zip(images) {
        if *slot != Slot::NeedPath {
            continue;
        }
        *slot = match (&a.refused, a.results.iter().find(|r| r.image == *image)) {
            (Some(why), _) => Slot::Final(refused(why)),
            (None, Some(r)) => path_slot(&r.path_state, &r.fingerprint, &r.cell, "probe"),
            (None, None) => Slot::Final(Cell::unknown(
                UnknownReason::AgentError,
                "the agent's answer lacks this image",
            )),
        };
    }
}

/// Slots still waiting when the round's time is up become `unknown` `AgentTimeout`.
pub fn time_out(w: &mut NodeWork, waited: std::time::Duration) {
    for slot in &mut w.slots {
        if matches!(slot, Slot::NeedPath) {
            *slot = Slot::Final(Cell::unknown(
                UnknownReason::AgentTimeout,
                format!(
                    "the node's agent did not answer within {}",
                    humantime::format_duration(waited)
                ),
            ));
        }
    }
}

/// Round 2's plan: which node checks which images, and who shares each answer.
#[derive(Debug, Default)]
pub struct ImagePlan {
    /// Chosen node → indexes of the images it checks.
    pub asks: BTreeMap<String, Vec<usize>>,
    /// (image index, fingerprint) → (the chosen node, indexes into the work list of the
    /// members).
    pub groups: BTreeMap<(usize, String), (String, Vec<usize>)>,
}

/// Rendezvous hash: the member with the smallest hash of (fingerprint, node) checks.
fn rank(fingerprint: &str, node: &str) -> [u8; 32] {
    Sha256::digest(format!("{fingerprint}\0{node}").as_bytes()).into()
}

/// Groups the nodes whose path works by (image, fingerprint) and picks one node per
/// fingerprint (the same for every image of that fingerprint, so images are batched).
pub fn plan_images(work: &[NodeWork]) -> ImagePlan {
    let mut members: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    for (wi, w) in work.iter().enumerate() {
        for (ii, s) in w.slots.iter().enumerate() {
            if let Slot::PathOk { fingerprint, .. } = s {
                members
                    .entry((ii, fingerprint.clone()))
                    .or_default()
                    .push(wi);
            }
        }
    }
    let mut plan = ImagePlan::default();
    for ((ii, fp), m) in members {
        let Some(rep) = m
            .iter()
            .min_by_key(|wi| work.get(**wi).map(|w| rank(&fp, &w.node)))
            .and_then(|wi| work.get(*wi))
            .map(|w| w.node.clone())
        else {
            continue;
        };
        plan.asks.entry(rep.clone()).or_default().push(ii);
        plan.groups.insert((ii, fp), (rep, m));
    }
    plan
}

/// A member's cell from the shared image fact and its own path.
fn combine(node: &str, rep: &str, fact: &Cell, own_path: &Cell) -> Cell {
    let mut c = fact.clone();
    if node != rep {
        c.checked_on = Some(rep.to_string());
    }
    if fact.verdict.pulls(false) && own_path.verdict == CellVerdict::Degraded {
        // The image pulls; this node gets there only after earlier endpoints failed.
        c.verdict = CellVerdict::Degraded;
        c.host = own_path.host.clone();
        c.message = own_path.message.clone();
    } else if fact.verdict.pulls(false) && node != rep {
        c.verdict = CellVerdict::Ready;
    }
    c
}

/// Round 2's answers (chosen node → its answer, if any) into every member's slots; a
/// group whose chosen node did not answer is `unknown`.
pub fn apply_image_answers(
    work: &mut [NodeWork],
    images: &[String],
    plan: &ImagePlan,
    answers: &BTreeMap<String, Answer>,
    waited: std::time::Duration,
) {
    for ((ii, _), (rep, members)) in &plan.groups {
        let Some(image) = images.get(*ii) else {
            continue;
        };
        let fact = match answers.get(rep) {
            None => Cell::unknown(
                UnknownReason::AgentTimeout,
                format!(
                    "{rep}, checking this image for the nodes like it, did not answer within {}",
                    humantime::format_duration(waited)
                ),
            ),
            Some(a) => match (&a.refused, a.results.iter().find(|r| r.image == *image)) {
                (Some(why), _) => refused(why),
                (None, Some(r)) => {
                    let mut c = cell_from_api(&r.cell);
                    c.source.get_or_insert_with(|| "probe".to_string());
                    c
                }
                (None, None) => Cell::unknown(
                    UnknownReason::ImageCheckFailed,
                    format!("{rep}'s answer lacks this image"),
                ),
            },
        };
        for wi in members {
            let Some(w) = work.get_mut(*wi) else { continue };
            let Some(slot) = w.slots.get_mut(*ii) else {
                continue;
            };
            if let Slot::PathOk { cell, .. } = slot {
                let c = combine(&w.node, rep, &fact, cell);
                *slot = Slot::Final(c);
            }
        }
    }
}

/// The matrix rows; anything still open is `unknown`.
pub fn rows(work: Vec<NodeWork>) -> Vec<NodeRow> {
    work.into_iter()
        .map(|w| NodeRow {
            node: w.node,
            agent: w.agent,
            cells: w
                .slots
                .into_iter()
                .map(|s| match s {
                    Slot::Final(c) => c,
                    _ => Cell::unknown(UnknownReason::AgentError, "no answer for this image"),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageAnswer, NodePullStatusStatus, RegistryPath};

    fn now() -> SystemTime {
        fleet::parse_time("2026-01-01T00:10:00Z").unwrap()
    }

    fn api_cell(v: &str, reason: Option<&str>) -> api::Cell {
        api::Cell {
            verdict: v.into(),
            reason: reason.map(String::from),
            ..Default::default()
        }
    }

    fn nps(name: &str, paths: &[(&str, &str, &str, &str)]) -> Arc<NodePullStatus> {
        let mut n = NodePullStatus::new(name, Default::default());
        n.status = Some(NodePullStatusStatus {
            heartbeat_time: Some("2026-01-01T00:09:50Z".into()),
            interval_seconds: 60,
            registries: paths
                .iter()
                .map(|(reg, fp, state, at)| RegistryPath {
                    registry: reg.to_string(),
                    fingerprint: fp.to_string(),
                    state: state.to_string(),
                    cell: api_cell(if *state == "ok" { "ready" } else { "not_ready" }, None),
                    checked_at: at.to_string(),
                })
                .collect(),
            ..Default::default()
        });
        Arc::new(n)
    }

    /// Fresh paths answer round 1 with no assignment; stale ones, and only those, are
    /// asked; nodes without an agent are unknown; one node per fingerprint checks images.
    #[test]
    fn round_one_from_the_caches_and_one_check_per_fingerprint() {
        let images = vec!["r.example/a:1".to_string(), "r.example/b:1".to_string()];
        let regs = registries(&images);
        assert_eq!(regs, ["r.example", "r.example"]);
        let fresh = "2026-01-01T00:09:30Z";
        let statuses: BTreeMap<&str, Arc<NodePullStatus>> = [
            ("n1", nps("n1", &[("r.example", "fpA", "ok", fresh)])),
            ("n2", nps("n2", &[("r.example", "fpA", "ok", fresh)])),
            ("n3", nps("n3", &[("r.example", "fpB", "ok", fresh)])),
            (
                "n4",
                nps("n4", &[("r.example", "fpA", "ok", "2026-01-01T00:00:00Z")]),
            ),
            ("n5", nps("n5", &[("r.example", "fpA", "failing", fresh)])),
        ]
        .into_iter()
        .collect();
        let nodes: Vec<String> = ["n1", "n2", "n3", "n4", "n5", "n6"]
            .map(String::from)
            .to_vec();
        let mut work = round1(&nodes, &regs, |n| statuses.get(n).cloned(), now());
        assert_eq!(
            path_asks(&work, &images).keys().collect::<Vec<_>>(),
            ["n4"],
            "only the stale node is asked"
        );
        let Slot::Final(c) = &work[5].slots[0] else {
            panic!()
        };
        assert_eq!(c.reason.as_deref(), Some("NoAgent"));
        assert!(matches!(&work[4].slots[0], Slot::Final(c) if c.verdict == CellVerdict::NotReady));
        let answer = Answer {
            id: "x".into(),
            results: images
                .iter()
                .map(|i| ImageAnswer {
                    image: i.clone(),
                    fingerprint: "fpA".into(),
                    path_state: "ok".into(),
                    cell: api_cell("ready", None),
                })
                .collect(),
            ..Default::default()
        };
        let w4 = &mut work[3];
        apply_path_answer(w4, &images, &answer);
        assert!(matches!(&w4.slots[0], Slot::PathOk { fingerprint, .. } if fingerprint == "fpA"));
        let plan = plan_images(&work);
        assert_eq!(plan.asks.len(), 2, "one node per fingerprint: {plan:?}");
        assert!(plan.asks.values().all(|v| v == &[0, 1]), "images batched");
        let rep_a = plan.groups[&(0, "fpA".to_string())].0.clone();
        assert!(["n1", "n2", "n4"].contains(&rep_a.as_str()));
        assert_eq!(
            plan_images(&work).groups[&(0, "fpA".to_string())].0,
            rep_a,
            "stable"
        );
        let mut answers = BTreeMap::new();
        answers.insert(
            rep_a.clone(),
            Answer {
                results: vec![
                    ImageAnswer {
                        image: images[0].clone(),
                        path_state: "ok".into(),
                        cell: api_cell("ready", None),
                        ..Default::default()
                    },
                    ImageAnswer {
                        image: images[1].clone(),
                        path_state: "ok".into(),
                        cell: api_cell("not_ready", Some("ManifestUnknown")),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        apply_image_answers(
            &mut work,
            &images,
            &plan,
            &answers,
            std::time::Duration::from_secs(30),
        );
        let rows = rows(work);
        let n2 = &rows[1];
        assert_eq!(n2.cells[0].verdict, CellVerdict::Ready);
        assert_eq!(n2.cells[1].reason.as_deref(), Some("ManifestUnknown"));
        if n2.node != rep_a {
            assert_eq!(n2.cells[1].checked_on.as_deref(), Some(rep_a.as_str()));
        }
        // fpB's chosen node (n3) never answered.
        assert_eq!(rows[2].cells[0].reason.as_deref(), Some("AgentTimeout"));
    }

    #[test]
    fn a_degraded_path_stays_degraded_when_the_image_pulls() {
        let ready = Cell::unknown(UnknownReason::AgentError, "");
        let mut fact = ready.clone();
        fact.verdict = CellVerdict::Ready;
        let mut deg = fact.clone();
        deg.verdict = CellVerdict::Degraded;
        assert_eq!(
            combine("b", "a", &fact, &deg).verdict,
            CellVerdict::Degraded
        );
        assert_eq!(combine("b", "a", &deg, &fact).verdict, CellVerdict::Ready);
        assert_eq!(combine("a", "a", &deg, &deg).verdict, CellVerdict::Degraded);
    }
}
