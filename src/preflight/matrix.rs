//! The node × image matrix: one cell per (node, image) — the verdict, failing phase,
//! reason, host and message — grouped into rows of nodes that answered the same, and the
//! summary line. Built from the agents' answers (by the controller) or from an
//! `ImagePreflight`'s status ([`super::object`]); every node selected is a row, those
//! without an answer as `unknown`.

use std::collections::BTreeMap;

use serde::Serialize;

/// A cell's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellVerdict {
    Ready,
    Degraded,
    NotReady,
    Blocked,
    /// No agent, no answer, or an answer that cannot be used.
    Unknown,
    /// The image's workloads cannot land on this node.
    NotScheduled,
}

impl CellVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            CellVerdict::Ready => "ready",
            CellVerdict::Degraded => "degraded",
            CellVerdict::NotReady => "not_ready",
            CellVerdict::Blocked => "blocked",
            CellVerdict::Unknown => "unknown",
            CellVerdict::NotScheduled => "-",
        }
    }

    /// What the verdict means, for a legend.
    pub fn meaning(self) -> &'static str {
        match self {
            CellVerdict::Ready => "ready: the node would pull it",
            CellVerdict::Degraded => "degraded: pulls only after earlier endpoints failed",
            CellVerdict::NotReady => "not_ready: the node would not pull it",
            CellVerdict::Blocked => "blocked: the runtime's config refuses the registry",
            CellVerdict::Unknown => "unknown: no usable answer from the node's agent",
            CellVerdict::NotScheduled => {
                "- not scheduled: the image's workloads cannot land on this node"
            }
        }
    }

    pub fn from_wire(s: &str) -> CellVerdict {
        match s {
            "ready" => CellVerdict::Ready,
            "degraded" => CellVerdict::Degraded,
            "not_ready" => CellVerdict::NotReady,
            "blocked" => CellVerdict::Blocked,
            _ => CellVerdict::Unknown,
        }
    }

    /// Counts as "can pull" (`strict`: degraded does not).
    pub fn pulls(self, strict: bool) -> bool {
        match self {
            CellVerdict::Ready | CellVerdict::NotScheduled => true,
            CellVerdict::Degraded => !strict,
            _ => false,
        }
    }
}

/// Why a cell is unknown (the CLI's own reasons; the agents' are the probe's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UnknownReason {
    /// No agent Pod runs on the node.
    NoAgent,
    /// The agent Pod is not running or has no address yet.
    AgentNotRunning,
    /// No answer within the per-node timeout.
    AgentTimeout,
    /// The API server could not reach the agent (proxy error).
    AgentUnreachable,
    /// 401 from the agent: it did not accept the token.
    AgentUnauthorized,
    /// 403: the API server refused a read the answer needed.
    Forbidden,
    /// The agent does not serve pre-flight (older version) or speaks another API version.
    AgentTooOld,
    /// The reply is malformed or too large.
    AgentReplyInvalid,
    /// 429 from the agent (rate limit).
    AgentBusy,
    /// Any other answer.
    AgentError,
    /// The image check on the nodes sharing this node's answer failed.
    ImageCheckFailed,
}

impl UnknownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownReason::NoAgent => "NoAgent",
            UnknownReason::AgentNotRunning => "AgentNotRunning",
            UnknownReason::AgentTimeout => "AgentTimeout",
            UnknownReason::AgentUnreachable => "AgentUnreachable",
            UnknownReason::AgentUnauthorized => "AgentUnauthorized",
            UnknownReason::Forbidden => "Forbidden",
            UnknownReason::AgentTooOld => "AgentTooOld",
            UnknownReason::AgentReplyInvalid => "AgentReplyInvalid",
            UnknownReason::AgentBusy => "AgentBusy",
            UnknownReason::AgentError => "AgentError",
            UnknownReason::ImageCheckFailed => "ImageCheckFailed",
        }
    }
}

/// One (node, image) answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub verdict: CellVerdict,
    pub phase: Option<String>,
    pub reason: Option<String>,
    /// The host whose failure decided it (`mirror.internal:5000`).
    pub host: Option<String>,
    pub message: String,
    /// The node whose image check is shared into this cell (`None`: this node's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_on: Option<String>,
    /// Where the agent's answer came from: `schedule` (its own path check within the
    /// interval), `cache` (an earlier request's probe), `probe` (made for this request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The agent's `check --json` object for this cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Cell {
    pub fn unknown(reason: UnknownReason, message: impl Into<String>) -> Cell {
        Cell {
            verdict: CellVerdict::Unknown,
            phase: None,
            reason: Some(reason.as_str().to_string()),
            host: None,
            message: message.into(),
            checked_on: None,
            source: None,
            report: None,
        }
    }

    /// `-`: none of the image's workloads can land on this node, and `why` not.
    pub fn not_scheduled(why: impl Into<String>) -> Cell {
        Cell {
            verdict: CellVerdict::NotScheduled,
            phase: None,
            reason: None,
            host: None,
            message: why.into(),
            checked_on: None,
            source: None,
            report: None,
        }
    }

    /// What makes two cells read the same in a grouped row.
    fn key(&self) -> (CellVerdict, Option<String>, Option<String>, Option<String>) {
        (
            self.verdict,
            self.phase.clone(),
            self.reason.clone(),
            self.host.clone(),
        )
    }

    /// `TLSUnknownAuthority at mirror.internal` (failures), else the verdict.
    pub fn short(&self) -> String {
        match (&self.reason, &self.host) {
            (Some(r), Some(h)) if self.verdict != CellVerdict::Ready => format!("{r} at {h}"),
            (Some(r), None) if self.verdict != CellVerdict::Ready => r.clone(),
            _ => self.verdict.as_str().to_string(),
        }
    }
}

/// What a node's agent told about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentInfo {
    pub version: String,
    pub runtime: String,
    pub platform: String,
    /// How the agent treated pull secrets (its note), when any were requested.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pull_secrets: String,
}

/// One node's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRow {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
    pub cells: Vec<Cell>,
}

impl NodeRow {
    pub fn ready(&self, strict: bool) -> bool {
        self.cells.iter().all(|c| c.verdict.pulls(strict))
    }
}

/// Nodes that answered the same for every image.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub nodes: Vec<String>,
    /// The cells of the first node (messages may differ in detail between nodes).
    pub cells: Vec<Cell>,
}

/// A node no workload can land on, and why.
#[derive(Clone, Debug, Serialize)]
pub struct ExcludedNode {
    pub node: String,
    pub why: String,
}

/// A workload whose pods can land on none of the nodes, and the constraint that matched
/// none (`nodeSelector pool=none`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Unplaced {
    /// `FILE#N Kind namespace/name`.
    pub workload: String,
    pub images: Vec<String>,
    pub why: String,
}

/// The summary.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub nodes: usize,
    pub ready: usize,
    pub degraded: usize,
    pub not_ready: usize,
    pub unknown: usize,
    /// Workloads that can land on no node (their cells are `-` everywhere).
    pub unplaced: usize,
    pub strict: bool,
    /// `N nodes: Reason at host`, most nodes first.
    pub problems: Vec<Problem>,
    pub line: String,
}

/// Nodes failing for one (reason, host).
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub reason: String,
    pub host: Option<String>,
    pub nodes: usize,
    pub unknown: bool,
}

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    pub images: Vec<String>,
    pub rows: Vec<NodeRow>,
    pub groups: Vec<Group>,
    pub excluded: Vec<ExcludedNode>,
    /// Workloads that land on no node.
    pub unplaced: Vec<Unplaced>,
    pub warnings: Vec<String>,
    pub summary: Summary,
}

impl Matrix {
    pub fn new(
        images: Vec<String>,
        mut rows: Vec<NodeRow>,
        excluded: Vec<ExcludedNode>,
        warnings: Vec<String>,
        strict: bool,
    ) -> Matrix {
        rows.sort_by(|a, b| a.node.cmp(&b.node));
        let groups = group(&rows);
        let summary = summarize(&rows, strict);
        Matrix {
            images,
            rows,
            groups,
            excluded,
            unplaced: Vec::new(),
            warnings,
            summary,
        }
    }

    /// The workloads that land on no node, counted in the summary and named in its line.
    pub fn with_unplaced(mut self, unplaced: Vec<Unplaced>) -> Matrix {
        self.summary.unplaced = unplaced.len();
        match unplaced.as_slice() {
            [] => {}
            [one] => self.summary.line.push_str(&format!(
                "; 1 workload lands on no node: {} ({})",
                one.workload, one.why
            )),
            many => self.summary.line.push_str(&format!(
                "; {} workloads land on no node: {} ({}), …",
                many.len(),
                many[0].workload,
                many[0].why
            )),
        }
        self.unplaced = unplaced;
        self
    }

    /// 0 every node can pull every image; 1 some cannot; 3 none failed but some unknown.
    pub fn exit_code(&self) -> i32 {
        let s = &self.summary;
        if s.not_ready > 0 || (s.strict && s.degraded > 0) {
            1
        } else if s.unknown > 0 {
            3
        } else {
            0
        }
    }
}

/// Rows with identical cells (verdict, phase, reason, host) together, largest first.
pub fn group(rows: &[NodeRow]) -> Vec<Group> {
    type Key = Vec<(CellVerdict, Option<String>, Option<String>, Option<String>)>;
    let mut by: BTreeMap<Key, Group> = BTreeMap::new();
    for r in rows {
        let key: Key = r.cells.iter().map(Cell::key).collect();
        by.entry(key)
            .or_insert_with(|| Group {
                nodes: Vec::new(),
                cells: r.cells.clone(),
            })
            .nodes
            .push(r.node.clone());
    }
    let mut groups: Vec<Group> = by.into_values().collect();
    // Failing groups first, then by size.
    groups.sort_by_key(|g| {
        let worst = g.cells.iter().map(|c| rank(c.verdict)).max().unwrap_or(0);
        (
            std::cmp::Reverse(worst),
            std::cmp::Reverse(g.nodes.len()),
            g.nodes.first().cloned(),
        )
    });
    groups
}

fn rank(v: CellVerdict) -> u8 {
    match v {
        CellVerdict::NotScheduled | CellVerdict::Ready => 0,
        CellVerdict::Degraded => 1,
        CellVerdict::Unknown => 2,
        CellVerdict::NotReady | CellVerdict::Blocked => 3,
    }
}

fn summarize(rows: &[NodeRow], strict: bool) -> Summary {
    let (mut ready, mut degraded, mut not_ready, mut unknown) = (0, 0, 0, 0);
    let mut problems: BTreeMap<(String, Option<String>, bool), usize> = BTreeMap::new();
    for r in rows {
        let worst = r.cells.iter().map(|c| rank(c.verdict)).max().unwrap_or(0);
        let fails = r
            .cells
            .iter()
            .any(|c| !c.verdict.pulls(strict) && c.verdict != CellVerdict::Unknown);
        match (worst, fails) {
            (_, true) => not_ready += 1,
            (2, false) => unknown += 1,
            (1, false) => degraded += 1,
            _ => {}
        }
        if r.ready(strict) {
            ready += 1;
        }
        // One problem per (reason, host) per node.
        let mut seen = std::collections::BTreeSet::new();
        for c in r.cells.iter().filter(|c| !c.verdict.pulls(strict)) {
            let reason = c
                .reason
                .clone()
                .unwrap_or_else(|| c.verdict.as_str().to_string());
            let key = (reason, c.host.clone(), c.verdict == CellVerdict::Unknown);
            if seen.insert(key.clone()) {
                *problems.entry(key).or_default() += 1;
            }
        }
    }
    let mut problems: Vec<Problem> = problems
        .into_iter()
        .map(|((reason, host, unknown), nodes)| Problem {
            reason,
            host,
            nodes,
            unknown,
        })
        .collect();
    problems.sort_by_key(|p| (p.unknown, std::cmp::Reverse(p.nodes), p.reason.clone()));
    let mut line = format!("{ready}/{} nodes ready", rows.len());
    if degraded > 0 && !strict {
        line.push_str(&format!(" ({degraded} degraded)"));
    }
    for p in problems.iter().take(5) {
        let what = match (&p.host, p.unknown) {
            (_, true) => format!("unknown ({})", p.reason),
            (Some(h), false) => format!("{} at {h}", p.reason),
            (None, false) => p.reason.clone(),
        };
        line.push_str(&format!(
            "; {} {}: {what}",
            p.nodes,
            if p.nodes == 1 { "node" } else { "nodes" }
        ));
    }
    if problems.len() > 5 {
        line.push_str(&format!("; {} more", problems.len() - 5));
    }
    Summary {
        nodes: rows.len(),
        ready,
        degraded,
        not_ready,
        unknown,
        unplaced: 0,
        strict,
        problems,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: CellVerdict, reason: Option<&str>, host: Option<&str>) -> Cell {
        Cell {
            verdict: v,
            phase: None,
            reason: reason.map(String::from),
            host: host.map(String::from),
            message: String::new(),
            checked_on: None,
            source: None,
            report: None,
        }
    }

    fn row(n: &str, cells: Vec<Cell>) -> NodeRow {
        NodeRow {
            node: n.into(),
            agent: None,
            cells,
        }
    }

    #[test]
    fn identical_rows_group_and_the_summary_names_reason_and_host() {
        use CellVerdict::*;
        let mut rows: Vec<NodeRow> = (0..37)
            .map(|i| row(&format!("ok-{i:02}"), vec![cell(Ready, None, None)]))
            .collect();
        for i in 0..3 {
            rows.push(row(
                &format!("bad-{i}"),
                vec![cell(
                    NotReady,
                    Some("TLSUnknownAuthority"),
                    Some("mirror.internal"),
                )],
            ));
        }
        let m = Matrix::new(vec!["img".into()], rows, Vec::new(), Vec::new(), false);
        assert_eq!(m.groups.len(), 2);
        assert_eq!(m.groups[0].nodes.len(), 3, "failing group first");
        assert_eq!(
            m.summary.line,
            "37/40 nodes ready; 3 nodes: TLSUnknownAuthority at mirror.internal"
        );
        assert_eq!(m.exit_code(), 1);
    }

    #[test]
    fn unknown_never_counts_as_ready_and_strict_counts_degraded() {
        use CellVerdict::*;
        let rows = vec![
            row("a", vec![cell(Degraded, None, None)]),
            row("b", vec![cell(Unknown, Some("AgentTimeout"), None)]),
            row("c", vec![cell(NotScheduled, None, None)]),
        ];
        let m = Matrix::new(
            vec!["img".into()],
            rows.clone(),
            Vec::new(),
            Vec::new(),
            false,
        );
        assert_eq!(
            m.summary.line,
            "2/3 nodes ready (1 degraded); 1 node: unknown (AgentTimeout)"
        );
        assert_eq!(m.exit_code(), 3);
        let s = Matrix::new(vec!["img".into()], rows, Vec::new(), Vec::new(), true);
        assert_eq!(s.summary.ready, 1);
        assert_eq!(s.exit_code(), 1);
    }
}
