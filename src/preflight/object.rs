//! The matrix as an `ImagePreflight` status and back: the controller writes
//! [`to_status`], the CLI (and anything else reading the object) renders
//! [`to_matrix`] with the one renderer ([`super::render`], [`super::html`]).
//!
//! Whatever comes from an object is untrusted (another process, maybe another version,
//! or a person's `kubectl edit`): every text is cut and stripped of control characters,
//! reasons must look like reasons, and the status written stays under [`MAX_STATUS_BYTES`].

use crate::api;

use super::matrix::{Cell, CellVerdict, ExcludedNode, Matrix, NodeRow, Unplaced};

/// Largest status written (etcd's default request limit is 1.5 MiB for the whole object).
pub const MAX_STATUS_BYTES: usize = 1024 * 1024;
/// Longest message kept in a status cell.
pub const MAX_CELL_MESSAGE: usize = 512;
/// Excluded nodes listed by name (the rest are counted in a warning).
pub const MAX_EXCLUDED: usize = 200;

/// Printable, bounded text.
pub fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A reason code (CamelCase, short); anything else is not shown.
pub fn reason(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| s.to_string())
}

/// A matrix cell as the object keeps it.
pub fn cell_to_api(c: &Cell) -> api::Cell {
    api::Cell {
        verdict: c.verdict.as_str().to_string(),
        phase: c.phase.clone(),
        reason: c.reason.clone(),
        host: c.host.clone(),
        message: clean(&c.message, MAX_CELL_MESSAGE),
        checked_on: c.checked_on.clone(),
        source: c.source.clone(),
    }
}

/// An object's cell as a matrix cell, sanitized.
pub fn cell_from_api(c: &api::Cell) -> Cell {
    let verdict = match c.verdict.as_str() {
        "-" => CellVerdict::NotScheduled,
        v => CellVerdict::from_wire(v),
    };
    let word = |s: &Option<String>| s.as_deref().and_then(reason);
    Cell {
        verdict,
        phase: c.phase.as_deref().map(|p| clean(p, 32)),
        reason: word(&c.reason),
        host: c.host.as_deref().map(|h| clean(h, 253)),
        message: clean(&c.message, api::MAX_MESSAGE_LEN),
        checked_on: c.checked_on.as_deref().map(|n| clean(n, 253)),
        source: word(&c.source),
        report: None,
    }
}

/// The status parts of a matrix: images, summary, rows (groups), excluded, unplaced,
/// warnings. Conditions, `observedGeneration` and `finishedAt` are the caller's.
pub fn to_status(m: &Matrix) -> api::ImagePreflightStatus {
    let mut warnings = m.warnings.clone();
    let mut rows: Vec<api::Row> = m
        .groups
        .iter()
        .map(|g| api::Row {
            nodes: g.nodes.clone(),
            cells: g.cells.iter().map(cell_to_api).collect(),
        })
        .collect();
    let mut excluded: Vec<api::Excluded> = m
        .excluded
        .iter()
        .map(|e| api::Excluded {
            node: e.node.clone(),
            why: clean(&e.why, 256),
        })
        .collect();
    if excluded.len() > MAX_EXCLUDED {
        warnings.push(format!(
            "{} more nodes excluded, not listed",
            excluded.len() - MAX_EXCLUDED
        ));
        excluded.truncate(MAX_EXCLUDED);
    }
    fit_rows(&mut rows, &mut warnings);
    api::ImagePreflightStatus {
        images: m.images.clone(),
        summary: Some(summary_to_api(m)),
        rows,
        excluded,
        unplaced: m
            .unplaced
            .iter()
            .map(|u| api::Unplaced {
                workload: u.workload.clone(),
                images: u.images.clone(),
                why: u.why.clone(),
            })
            .collect(),
        warnings,
        ..Default::default()
    }
}

fn summary_to_api(m: &Matrix) -> api::Summary {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let s = &m.summary;
    api::Summary {
        nodes: n(s.nodes),
        ready: n(s.ready),
        degraded: n(s.degraded),
        not_ready: n(s.not_ready),
        unknown: n(s.unknown),
        unplaced: n(s.unplaced),
        strict: s.strict,
        line: clean(&s.line, api::MAX_MESSAGE_LEN),
    }
}

/// Drops the smallest groups (last: groups are sorted failing first, then by size) until
/// the rows fit [`MAX_STATUS_BYTES`], counting the nodes left out in a warning.
fn fit_rows(rows: &mut Vec<api::Row>, warnings: &mut Vec<String>) {
    let size = |r: &api::Row| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(usize::MAX);
    let mut total: usize = rows.iter().map(size).fold(0, usize::saturating_add);
    let mut dropped_nodes = 0usize;
    while total > MAX_STATUS_BYTES {
        let Some(r) = rows.pop() else { break };
        total = total.saturating_sub(size(&r));
        dropped_nodes = dropped_nodes.saturating_add(r.nodes.len());
    }
    if dropped_nodes > 0 {
        warnings.push(format!(
            "{dropped_nodes} nodes in smaller groups are counted in the summary but not listed (the status is limited to {} KiB)",
            MAX_STATUS_BYTES / 1024
        ));
    }
}

/// The matrix of a status (rows re-expanded per node), for the one renderer. The summary
/// is recomputed from the rows, so an edited or truncated status cannot contradict them;
/// `strict` is the object's `degradedFails`.
pub fn to_matrix(s: &api::ImagePreflightStatus, strict: bool) -> Matrix {
    let images: Vec<String> = s
        .images
        .iter()
        .map(|i| clean(i, api::MAX_IMAGE_LEN))
        .collect();
    let mut rows = Vec::new();
    for r in &s.rows {
        let mut cells: Vec<Cell> = r.cells.iter().map(cell_from_api).collect();
        // A row must have one cell per image; a short one is padded as unknown.
        cells.truncate(images.len());
        while cells.len() < images.len() {
            cells.push(Cell::unknown(
                super::matrix::UnknownReason::AgentReplyInvalid,
                "no answer for this image in the status",
            ));
        }
        for node in &r.nodes {
            rows.push(NodeRow {
                node: clean(node, 253),
                agent: None,
                cells: cells.clone(),
            });
        }
    }
    let excluded = s
        .excluded
        .iter()
        .map(|e| ExcludedNode {
            node: clean(&e.node, 253),
            why: clean(&e.why, 256),
        })
        .collect();
    let warnings = s.warnings.iter().map(|w| clean(w, 512)).collect();
    let unplaced = s
        .unplaced
        .iter()
        .map(|u| Unplaced {
            workload: clean(&u.workload, 512),
            images: u
                .images
                .iter()
                .map(|i| clean(i, api::MAX_IMAGE_LEN))
                .collect(),
            why: clean(&u.why, 256),
        })
        .collect();
    Matrix::new(images, rows, excluded, warnings, strict).with_unplaced(unplaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::matrix::UnknownReason;

    fn cell(v: CellVerdict, reason: Option<&str>, host: Option<&str>) -> Cell {
        Cell {
            verdict: v,
            phase: reason.map(|_| "manifest".into()),
            reason: reason.map(String::from),
            host: host.map(String::from),
            message: "m".into(),
            checked_on: None,
            source: Some("probe".into()),
            report: None,
        }
    }

    fn sample() -> Matrix {
        let ok = cell(CellVerdict::Ready, None, None);
        let missing = cell(
            CellVerdict::NotReady,
            Some("ManifestUnknown"),
            Some("reg:5000"),
        );
        let rows = vec![
            NodeRow {
                node: "a".into(),
                agent: None,
                cells: vec![ok.clone(), ok.clone()],
            },
            NodeRow {
                node: "b".into(),
                agent: None,
                cells: vec![ok.clone(), missing.clone()],
            },
            NodeRow {
                node: "c".into(),
                agent: None,
                cells: vec![ok.clone(), missing],
            },
            NodeRow {
                node: "d".into(),
                agent: None,
                cells: vec![ok, Cell::unknown(UnknownReason::NoAgent, "no agent")],
            },
        ];
        let excluded = vec![ExcludedNode {
            node: "e".into(),
            why: "taint".into(),
        }];
        Matrix::new(
            vec!["x:1".into(), "y:2".into()],
            rows,
            excluded,
            vec![],
            false,
        )
    }

    #[test]
    fn status_round_trips_to_the_same_matrix() {
        let m = sample();
        let s = to_status(&m);
        assert_eq!(
            s.summary
                .as_ref()
                .map(|s| (s.nodes, s.ready, s.not_ready, s.unknown)),
            Some((4, 1, 2, 1))
        );
        assert_eq!(s.rows.len(), 3, "groups of identical nodes");
        assert_eq!(s.rows[0].nodes, vec!["b", "c"], "failing group first");
        let back = to_matrix(&s, false);
        assert_eq!(back.rows, m.rows);
        assert_eq!(back.summary.line, m.summary.line);
        assert_eq!(back.exit_code(), 1);
    }

    #[test]
    fn hostile_status_is_cleaned_and_bounded() {
        let mut s = to_status(&sample());
        s.rows[0].cells[1].reason = Some("Not a reason\n\u{1b}[31m".into());
        s.rows[0].cells[1].message = "x\u{7}".repeat(10_000);
        let a_row = s.rows.iter().position(|r| r.nodes == ["a"]).unwrap();
        s.rows[a_row].cells.clear();
        let m = to_matrix(&s, false);
        let b = m.rows.iter().find(|r| r.node == "b").unwrap();
        assert_eq!(b.cells[1].reason, None);
        assert!(b.cells[1].message.len() <= api::MAX_MESSAGE_LEN);
        assert!(!b.cells[1].message.contains('\u{7}'));
        let a = m.rows.iter().find(|r| r.node == "a").unwrap();
        assert_eq!(a.cells.len(), 2, "a short row is padded");
        assert_eq!(a.cells[0].verdict, CellVerdict::Unknown);
    }

    #[test]
    fn a_huge_matrix_fits_the_object() {
        // 5,000 nodes all different (a distinct failing host each): the status stays under
        // the limit, the summary still counts every node.
        let rows: Vec<NodeRow> = (0..5000)
            .map(|i| NodeRow {
                node: format!("node-{i:05}"),
                agent: None,
                cells: vec![Cell {
                    message: "y".repeat(400),
                    ..cell(
                        CellVerdict::NotReady,
                        Some("DnsNxDomain"),
                        Some(&format!("h{i}.example")),
                    )
                }],
            })
            .collect();
        let m = Matrix::new(vec!["x:1".into()], rows, vec![], vec![], false);
        let s = to_status(&m);
        assert!(serde_json::to_vec(&s).unwrap().len() <= MAX_STATUS_BYTES + 64 * 1024);
        assert_eq!(s.summary.as_ref().map(|s| s.not_ready), Some(5000));
        assert!(s.rows.len() < 5000);
        assert!(s.warnings.iter().any(|w| w.contains("not listed")));
    }
}
