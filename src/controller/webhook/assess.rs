//! Can the candidate nodes pull these images, by the fleet's cached state only: each node's
//! registry path states (fresh ones) and the image checks of `status.answers`, shared by
//! fingerprint as round 2 of a pre-flight shares them. Never asks anyone.
//!
//! Freshness is the fleet's ([`crate::controller::fleet::agent`], `fresh_path`): a registry
//! path counts when its `checkedAt` is within 1.5 × `intervalSeconds` of now and the node's
//! heartbeat within 2 × interval.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use super::view::Candidate;
use crate::api::{Cell, ImageAnswer, NodePullStatus};
use crate::preflight::matrix::CellVerdict;
use crate::reference::ImageRef;

/// What the cache says about one image on the candidate nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub image: String,
    /// Candidate nodes.
    pub nodes: usize,
    /// Nodes whose cached state says they cannot pull it.
    pub cannot: usize,
    /// Nodes with no usable cached answer (no agent, stale path, image not checked).
    pub unchecked: usize,
    /// The most common (reason, host) among the nodes that cannot.
    pub problem: Option<Problem>,
}

/// Why nodes cannot pull: the cell's reason and the host that decided it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub reason: String,
    pub host: Option<String>,
}

/// What one node's cache says about one image.
enum NodeSays {
    Pulls,
    Cannot(Problem),
    Unchecked,
}

/// The findings for `images` (in their order) on `candidates` at `now`.
pub fn assess(images: &[String], candidates: &[Candidate], now: Timestamp) -> Vec<Finding> {
    let wanted: Vec<Wanted> = images.iter().map(|i| Wanted::new(i)).collect();
    let shared = SharedAnswers::index(&wanted, candidates);
    wanted
        .iter()
        .map(|w| {
            let mut f = Finding {
                image: w.text.clone(),
                nodes: candidates.len(),
                cannot: 0,
                unchecked: 0,
                problem: None,
            };
            let mut problems: BTreeMap<Problem, usize> = BTreeMap::new();
            for c in candidates {
                match node_says(w, c, &shared, now) {
                    NodeSays::Pulls => {}
                    NodeSays::Unchecked => f.unchecked += 1,
                    NodeSays::Cannot(p) => {
                        f.cannot += 1;
                        *problems.entry(p).or_default() += 1;
                    }
                }
            }
            // Most nodes first; ties by name, so the answer is stable.
            f.problem = problems
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(p, _)| p);
            f
        })
        .collect()
}

/// An image as the template writes it, and the forms answers are matched on.
struct Wanted {
    text: String,
    parsed: Option<ImageRef>,
    /// `normalized()` when it parses, else the text.
    key: String,
}

impl Wanted {
    fn new(text: &str) -> Wanted {
        let parsed = ImageRef::parse(text).ok();
        let key = parsed
            .as_ref()
            .map(ImageRef::normalized)
            .unwrap_or_else(|| text.to_string());
        Wanted {
            text: text.to_string(),
            parsed,
            key,
        }
    }
}

fn image_key(image: &str) -> String {
    ImageRef::parse(image)
        .map(|r| r.normalized())
        .unwrap_or_else(|_| image.to_string())
}

/// The newest image check per (fingerprint, image) among the candidates' answers; an
/// answer without a fingerprint counts only for its own node.
struct SharedAnswers<'a> {
    by: HashMap<(String, String), (&'a str, &'a ImageAnswer)>,
}

impl<'a> SharedAnswers<'a> {
    fn index(wanted: &[Wanted], candidates: &'a [Candidate]) -> SharedAnswers<'a> {
        let keys: std::collections::HashSet<&str> = wanted.iter().map(|w| w.key.as_str()).collect();
        let mut by: HashMap<(String, String), (&'a str, &'a ImageAnswer)> = HashMap::new();
        for c in candidates {
            let Some(st) = c.status.as_ref().and_then(|s| s.status.as_ref()) else {
                continue;
            };
            for a in st.answers.iter().filter(|a| a.refused.is_none()) {
                for r in &a.results {
                    let key = image_key(&r.image);
                    if !keys.contains(key.as_str()) {
                        continue;
                    }
                    let fp = if r.fingerprint.is_empty() {
                        format!("node/{}", c.node)
                    } else {
                        r.fingerprint.clone()
                    };
                    let at = a.answered_at.as_str();
                    let e = by.entry((fp, key)).or_insert((at, r));
                    if newer(at, e.0) {
                        *e = (at, r);
                    }
                }
            }
        }
        SharedAnswers { by }
    }

    fn get(&self, fingerprint: &str, node: &str, key: &str) -> Option<&'a ImageAnswer> {
        let fp = if fingerprint.is_empty() {
            format!("node/{node}")
        } else {
            fingerprint.to_string()
        };
        self.by.get(&(fp, key.to_string())).map(|(_, r)| *r)
    }
}

/// RFC 3339 `a` later than `b` (unparsable times are never newer).
fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<Timestamp>(), b.parse::<Timestamp>()) {
        (Ok(a), Ok(b)) => a > b,
        (Ok(_), Err(_)) => true,
        _ => false,
    }
}

fn node_says(w: &Wanted, c: &Candidate, shared: &SharedAnswers, now: Timestamp) -> NodeSays {
    let Some(parsed) = &w.parsed else {
        // The kubelet refuses it on every node (InvalidImageName).
        return NodeSays::Cannot(Problem {
            reason: "ReferenceInvalid".into(),
            host: None,
        });
    };
    let Some(obj) = c.status.as_deref() else {
        return NodeSays::Unchecked;
    };
    let Some(path) = fresh_path(obj, parsed, now) else {
        return NodeSays::Unchecked;
    };
    if let Some(p) = cannot(&path.cell) {
        return NodeSays::Cannot(p);
    }
    match shared.get(&path.fingerprint, &c.node, &w.key) {
        None => NodeSays::Unchecked,
        Some(r) => match cannot(&r.cell) {
            Some(p) => NodeSays::Cannot(p),
            None if CellVerdict::from_wire(&r.cell.verdict) == CellVerdict::Unknown => {
                NodeSays::Unchecked
            }
            None => NodeSays::Pulls,
        },
    }
}

/// The cell's problem when it says the node would not pull (unknown is not a "cannot").
fn cannot(cell: &Cell) -> Option<Problem> {
    let v = CellVerdict::from_wire(&cell.verdict);
    if v.pulls(false) || v == CellVerdict::Unknown {
        return None;
    }
    Some(Problem {
        reason: cell
            .reason
            .clone()
            .unwrap_or_else(|| v.as_str().to_string()),
        host: cell.host.clone(),
    })
}

/// The node's path to the image's registry, when its agent is live and checked it recently
/// enough (the fleet's freshness rules, as round 1 of a pre-flight reads them).
fn fresh_path<'a>(
    obj: &'a NodePullStatus,
    image: &ImageRef,
    now: Timestamp,
) -> Option<&'a crate::api::RegistryPath> {
    use crate::controller::fleet::{agent, fresh_path, Agent};
    let now = std::time::SystemTime::from(now);
    let Agent::Live(st) = agent(Some(obj), now) else {
        return None;
    };
    fresh_path(st, &image.domain, now).or_else(|| fresh_path(st, &image.registry_host(), now))
}
