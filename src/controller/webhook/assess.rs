//! Can the candidate nodes pull these images, by the fleet's cached state only: each node's
//! registry path states (fresh ones) and the image checks of `status.answers`, shared by
//! fingerprint as round 2 of a pre-flight shares them. Never asks anyone.
//!
//! Freshness is the fleet's ([`crate::controller::fleet::agent`], `fresh_path`): a registry
//! path counts when its `checkedAt` is within 1.5 × `intervalSeconds` of now and the node's
//! heartbeat within 2 × interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use jiff::Timestamp;

use super::view::Candidate;
use crate::api::{Cell, ImageAnswer, RegistryPath};
use crate::controller::fleet::{agent, fresh_path, Agent};
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

/// The findings for `images` (in their order) on `candidates` at `now`. One pass over the
/// nodes: each node's freshness is read once, each registry's path once per node.
pub fn assess(images: &[String], candidates: &[Candidate], now: Timestamp) -> Vec<Finding> {
    let now = SystemTime::from(now);
    let wanted: Vec<Wanted> = images.iter().map(|i| Wanted::new(i)).collect();
    let registries = Registries::of(&wanted);
    let shared = SharedAnswers::index(&wanted, candidates);
    let mut tally: Vec<(usize, usize, BTreeMap<Problem, usize>)> =
        wanted.iter().map(|_| (0, 0, BTreeMap::new())).collect();
    let mut paths: Vec<Option<&RegistryPath>> = Vec::with_capacity(registries.hosts.len());
    for c in candidates {
        let live = c.status.as_deref().and_then(|o| match agent(Some(o), now) {
            Agent::Live(st) => Some(st),
            _ => None,
        });
        paths.clear();
        paths.extend(registries.hosts.iter().map(|(domain, host)| {
            let st = live?;
            fresh_path(st, domain, now).or_else(|| fresh_path(st, host, now))
        }));
        for (k, w) in wanted.iter().enumerate() {
            let path = registries.of[k].and_then(|r| paths[r]);
            match node_says(w, &c.node, path, &shared) {
                NodeSays::Pulls => {}
                NodeSays::Unchecked => tally[k].1 += 1,
                NodeSays::Cannot(p) => {
                    tally[k].0 += 1;
                    *tally[k].2.entry(p).or_default() += 1;
                }
            }
        }
    }
    wanted
        .iter()
        .zip(tally)
        .map(|(w, (cannot, unchecked, problems))| Finding {
            image: w.text.clone(),
            nodes: candidates.len(),
            cannot,
            unchecked,
            // Most nodes first; ties by name, so the answer is stable.
            problem: problems
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(p, _)| p),
        })
        .collect()
}

/// The distinct registries of the wanted images (as written, and the host the runtime
/// contacts), and which one each image is on (`None`: the reference does not parse).
struct Registries {
    hosts: Vec<(String, String)>,
    of: Vec<Option<usize>>,
}

impl Registries {
    fn of(wanted: &[Wanted]) -> Registries {
        let mut hosts: Vec<(String, String)> = Vec::new();
        let of = wanted
            .iter()
            .map(|w| {
                let r = w.parsed.as_ref()?;
                let key = (r.domain.clone(), r.registry_host());
                Some(match hosts.iter().position(|h| *h == key) {
                    Some(i) => i,
                    None => {
                        hosts.push(key);
                        hosts.len() - 1
                    }
                })
            })
            .collect();
        Registries { hosts, of }
    }
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
    by: HashMap<String, HashMap<String, (&'a str, &'a ImageAnswer)>>,
}

/// The sharing key of a fingerprint (`node/NAME` when the agent gave none).
fn group(fingerprint: &str, node: &str) -> String {
    if fingerprint.is_empty() {
        format!("node/{node}")
    } else {
        fingerprint.to_string()
    }
}

impl<'a> SharedAnswers<'a> {
    fn index(wanted: &[Wanted], candidates: &'a [Candidate]) -> SharedAnswers<'a> {
        let keys: HashSet<&str> = wanted.iter().map(|w| w.key.as_str()).collect();
        let mut by: HashMap<String, HashMap<String, (&'a str, &'a ImageAnswer)>> = HashMap::new();
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
                    let at = a.answered_at.as_str();
                    let e = by
                        .entry(group(&r.fingerprint, &c.node))
                        .or_default()
                        .entry(key)
                        .or_insert((at, r));
                    if newer(at, e.0) {
                        *e = (at, r);
                    }
                }
            }
        }
        SharedAnswers { by }
    }

    fn get(&self, fingerprint: &str, node: &str, key: &str) -> Option<&'a ImageAnswer> {
        let answers = if fingerprint.is_empty() {
            self.by.get(&group(fingerprint, node))
        } else {
            self.by.get(fingerprint)
        };
        answers?.get(key).map(|(_, r)| *r)
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

fn node_says(
    w: &Wanted,
    node: &str,
    path: Option<&RegistryPath>,
    shared: &SharedAnswers,
) -> NodeSays {
    if w.parsed.is_none() {
        // The kubelet refuses it on every node (InvalidImageName).
        return NodeSays::Cannot(Problem {
            reason: "ReferenceInvalid".into(),
            host: None,
        });
    }
    // No agent, a silent one, or no fresh path to the registry: the guard checks it now.
    let Some(path) = path else {
        return NodeSays::Unchecked;
    };
    if let Some(p) = cannot(&path.cell) {
        return NodeSays::Cannot(p);
    }
    match shared.get(&path.fingerprint, node, &w.key) {
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
