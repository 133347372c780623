//! One matrix from the statuses of several `ImagePreflight`s (one per workload of the `-f`
//! manifests, one for the images given as arguments): the images of all of them as the
//! columns, every node any of them checked as a row. A node one workload cannot land on
//! shows `-` for that workload's images, with that object's reason — as one pre-flight over
//! all the workloads always printed it.

use std::collections::{BTreeMap, BTreeSet};

use crate::preflight::matrix::{Cell, CellVerdict, ExcludedNode, Matrix, NodeRow};

/// Worse answers win when two objects checked the same image on the same node.
fn severity(v: CellVerdict) -> u8 {
    match v {
        CellVerdict::NotReady | CellVerdict::Blocked => 4,
        CellVerdict::Unknown => 3,
        CellVerdict::Degraded => 2,
        CellVerdict::Ready => 1,
        CellVerdict::NotScheduled => 0,
    }
}

/// The merged matrix; `strict` as the objects' `degradedFails`.
pub fn merge(parts: Vec<Matrix>, strict: bool) -> Matrix {
    if parts.len() == 1 {
        if let Some(m) = parts.into_iter().next() {
            return m;
        }
        return Matrix::new(Vec::new(), Vec::new(), Vec::new(), Vec::new(), strict);
    }
    let mut images: Vec<String> = Vec::new();
    for m in &parts {
        for i in &m.images {
            if !images.contains(i) {
                images.push(i.clone());
            }
        }
    }
    let nodes: BTreeSet<&str> = parts
        .iter()
        .flat_map(|m| m.rows.iter().map(|r| r.node.as_str()))
        .collect();
    let rows = nodes
        .iter()
        .map(|node| NodeRow {
            node: node.to_string(),
            agent: parts
                .iter()
                .flat_map(|m| m.rows.iter())
                .find(|r| r.node == *node)
                .and_then(|r| r.agent.clone()),
            cells: images.iter().map(|img| cell(&parts, node, img)).collect(),
        })
        .collect();
    // Left out only when every object left the node out.
    let mut why: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in parts.iter().flat_map(|m| m.excluded.iter()) {
        if !nodes.contains(e.node.as_str()) {
            why.entry(e.node.clone()).or_default().push(e.why.clone());
        }
    }
    let excluded = why
        .into_iter()
        .map(|(node, mut whys)| {
            whys.dedup();
            ExcludedNode {
                node,
                why: whys.join("; "),
            }
        })
        .collect();
    let mut warnings: Vec<String> = Vec::new();
    let mut unplaced = Vec::new();
    for m in parts {
        for w in m.warnings {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        unplaced.extend(m.unplaced);
    }
    Matrix::new(images, rows, excluded, warnings, strict).with_unplaced(unplaced)
}

/// The worst answer for (`node`, `img`) among the objects that checked `img` there; `-`
/// with the reason when none of the image's objects selected the node.
fn cell(parts: &[Matrix], node: &str, img: &str) -> Cell {
    let mut found: Option<Cell> = None;
    let mut not_here: Vec<String> = Vec::new();
    for m in parts {
        let Some(col) = m.images.iter().position(|i| i == img) else {
            continue;
        };
        match m.rows.iter().find(|r| r.node == node) {
            Some(r) => {
                if let Some(c) = r.cells.get(col) {
                    if found
                        .as_ref()
                        .is_none_or(|f| severity(c.verdict) > severity(f.verdict))
                    {
                        found = Some(c.clone());
                    }
                }
            }
            None => not_here.extend(
                m.excluded
                    .iter()
                    .filter(|e| e.node == node)
                    .map(|e| e.why.clone()),
            ),
        }
    }
    match found {
        Some(c) if c.verdict != CellVerdict::NotScheduled || not_here.is_empty() => c,
        _ => Cell::not_scheduled(not_here.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::matrix::UnknownReason;

    fn ready() -> Cell {
        Cell {
            verdict: CellVerdict::Ready,
            phase: None,
            reason: None,
            host: None,
            message: String::new(),
            checked_on: None,
            source: None,
            report: None,
        }
    }

    fn part(images: &[&str], rows: &[(&str, Vec<Cell>)], excluded: &[(&str, &str)]) -> Matrix {
        Matrix::new(
            images.iter().map(|s| s.to_string()).collect(),
            rows.iter()
                .map(|(n, c)| NodeRow {
                    node: n.to_string(),
                    agent: None,
                    cells: c.clone(),
                })
                .collect(),
            excluded
                .iter()
                .map(|(n, w)| ExcludedNode {
                    node: n.to_string(),
                    why: w.to_string(),
                })
                .collect(),
            Vec::new(),
            false,
        )
    }

    /// Two workloads: web everywhere, a GPU job only on g1. The job's image on a and b is
    /// `-` with the job's reason; a shared image takes the worse answer.
    #[test]
    fn workloads_merge_into_one_matrix() {
        let missing = Cell::unknown(UnknownReason::AgentTimeout, "no answer");
        let web = part(
            &["reg/web:1", "reg/base:1"],
            &[
                ("a", vec![ready(), ready()]),
                ("b", vec![ready(), ready()]),
                ("g1", vec![ready(), ready()]),
            ],
            &[],
        );
        let job = part(
            &["reg/job:1", "reg/base:1"],
            &[("g1", vec![ready(), missing.clone()])],
            &[
                ("a", "nodeSelector pool=gpu does not match"),
                ("b", "nodeSelector pool=gpu does not match"),
            ],
        );
        let m = merge(vec![web, job], false);
        assert_eq!(m.images, ["reg/web:1", "reg/base:1", "reg/job:1"]);
        let row = |n: &str| m.rows.iter().find(|r| r.node == n).unwrap();
        assert_eq!(row("a").cells[2].verdict, CellVerdict::NotScheduled);
        assert_eq!(
            row("a").cells[2].message,
            "nodeSelector pool=gpu does not match"
        );
        assert_eq!(
            row("a").cells[1].verdict,
            CellVerdict::Ready,
            "web checked base on a"
        );
        assert_eq!(
            row("g1").cells[1].verdict,
            CellVerdict::Unknown,
            "the worse answer"
        );
        assert!(m.excluded.is_empty(), "a and b are web's nodes");
        assert_eq!(m.exit_code(), 3);
        assert_eq!(m.summary.nodes, 3);
    }
}
