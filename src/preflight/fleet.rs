//! `pullprobe status`: the fleet as the agents keep it in their `NodePullStatus` objects
//! (one per node, one list call): the registries whose path is `failing`, grouped by the
//! Node condition they move (`RegistryUnreachable`, `RegistryAuthFailing`), registry and
//! reason, with when they were last checked; nodes whose agent stopped writing, and
//! nodes without any report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::html::{colour, escape};
use super::matrix::CellVerdict;
use super::object::clean;
use crate::api::{NodePullStatus, NodePullStatusStatus, RegistryPath};
use crate::report::records::ConditionKind;

/// Nodes failing for one (condition, registry, reason).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FleetProblem {
    pub condition: String,
    pub registry: String,
    pub reason: String,
    pub nodes: Vec<String>,
    /// The newest check that found it failing among those nodes (RFC 3339).
    pub checked: String,
}

/// The fleet view.
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub nodes: usize,
    pub failing: Vec<String>,
    /// Nodes whose report was not renewed within twice their agent's interval: no agent
    /// runs there any more, or it cannot write. Their paths are unknown, whatever the
    /// report still says.
    pub stale: Vec<StaleNode>,
    /// Nodes without a `NodePullStatus` (or one without status): no agent has reported
    /// there (yet).
    pub unreported: Vec<String>,
    pub problems: Vec<FleetProblem>,
    pub registries: Vec<String>,
    /// node → failing registries (for the heatmap).
    pub failing_registries: BTreeMap<String, BTreeMap<String, String>>,
    pub summary: String,
}

/// A node whose report went unrenewed past twice its interval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StaleNode {
    pub node: String,
    /// Its `heartbeatTime` (RFC 3339; empty when none).
    pub last_heartbeat: String,
    /// Seconds since then.
    pub age_s: u64,
}

/// When a report counts as stale: its heartbeat older than twice its agent's interval
/// (the freshness rule the controller applies too).
#[derive(Clone, Copy, Debug)]
pub struct Staleness {
    pub now: SystemTime,
    /// The interval assumed for a report that states none.
    pub default_interval: Duration,
}

impl Staleness {
    pub fn limit(&self, interval_seconds: u32) -> Duration {
        let interval = match interval_seconds {
            0 => self.default_interval,
            s => Duration::from_secs(u64::from(s)),
        };
        interval * 2
    }
}

impl Fleet {
    /// Non-zero when any node is failing or its report is stale (for a cron alert: a dead
    /// agent leaves its last conditions behind, and they must not read as healthy).
    pub fn exit_code(&self) -> i32 {
        if self.failing.is_empty() && self.stale.is_empty() {
            0
        } else {
            1
        }
    }
}

/// The heartbeat of a report and its age, when that age is past the limit (or unreadable).
fn staleness(st: &NodePullStatusStatus, s: &Staleness) -> Option<(String, u64)> {
    let shown = st
        .heartbeat_time
        .as_deref()
        .map(|t| clean(t, 40))
        .unwrap_or_default();
    let at = st
        .heartbeat_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from);
    let age = at.map(|t| s.now.duration_since(t).unwrap_or_default());
    match age {
        Some(a) if a <= s.limit(st.interval_seconds) => None,
        _ => Some((shown, age.map(|a| a.as_secs()).unwrap_or(0))),
    }
}

/// The condition a failing path moves on the Node: an auth failure `RegistryAuthFailing`,
/// anything else `RegistryUnreachable` (as the agent's condition manager sorts them).
fn condition_of(p: &RegistryPath) -> &'static str {
    match p.cell.phase.as_deref() {
        Some("auth") => ConditionKind::RegistryAuthFailing.as_str(),
        _ => ConditionKind::RegistryUnreachable.as_str(),
    }
}

/// Build the view from the Nodes' names and their `NodePullStatus` objects (named after
/// them): the registries whose path is `failing`, grouped by condition, registry and reason.
pub fn build(nodes: &[String], statuses: &[NodePullStatus], stale_when: &Staleness) -> Fleet {
    let by_node: BTreeMap<&str, &NodePullStatusStatus> = statuses
        .iter()
        .filter_map(|o| Some((o.metadata.name.as_deref()?, o.status.as_ref()?)))
        .collect();
    let mut problems: BTreeMap<(String, String, String), FleetProblem> = BTreeMap::new();
    let (mut failing, mut unreported) = (BTreeSet::new(), Vec::new());
    let mut stale = Vec::new();
    let mut heat: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut registries = BTreeSet::new();
    for name in nodes {
        let Some(st) = by_node.get(name.as_str()) else {
            unreported.push(name.clone());
            continue;
        };
        if let Some((last_heartbeat, age_s)) = staleness(st, stale_when) {
            stale.push(StaleNode {
                node: name.clone(),
                last_heartbeat,
                age_s,
            });
            continue;
        }
        heat.entry(name.clone()).or_default();
        for p in st.registries.iter().filter(|p| p.state == "failing") {
            failing.insert(name.clone());
            let registry = clean(&p.registry, 255);
            let reason = p
                .cell
                .reason
                .as_deref()
                .and_then(super::object::reason)
                .unwrap_or_else(|| "Failing".into());
            let checked = clean(&p.checked_at, 40);
            let condition = condition_of(p).to_string();
            registries.insert(registry.clone());
            heat.entry(name.clone())
                .or_default()
                .insert(registry.clone(), reason.clone());
            let e = problems
                .entry((condition.clone(), registry.clone(), reason.clone()))
                .or_insert_with(|| FleetProblem {
                    condition,
                    registry,
                    reason,
                    nodes: Vec::new(),
                    checked: checked.clone(),
                });
            e.nodes.push(name.clone());
            if checked > e.checked {
                e.checked = checked;
            }
        }
    }
    let mut problems: Vec<FleetProblem> = problems.into_values().collect();
    problems.sort_by_key(|p| {
        (
            std::cmp::Reverse(p.nodes.len()),
            p.condition.clone(),
            p.registry.clone(),
        )
    });
    let failing: Vec<String> = failing.into_iter().collect();
    let summary = summary_line(
        failing.len(),
        nodes.len(),
        &problems,
        stale.len(),
        unreported.len(),
    );
    Fleet {
        nodes: nodes.len(),
        failing,
        stale,
        unreported,
        problems,
        registries: registries.into_iter().collect(),
        failing_registries: heat,
        summary,
    }
}

/// `2/40 nodes failing; 2 nodes: RegistryUnreachable TLSUnknownAuthority at mirror.internal`.
fn summary_line(
    failing: usize,
    nodes: usize,
    problems: &[FleetProblem],
    stale: usize,
    unreported: usize,
) -> String {
    let mut summary = format!("{failing}/{nodes} nodes failing");
    for p in problems.iter().take(5) {
        let n = p.nodes.len();
        let noun = if n == 1 { "node" } else { "nodes" };
        summary.push_str(&format!(
            "; {n} {noun}: {} {} at {}",
            p.condition, p.reason, p.registry
        ));
    }
    if stale > 0 {
        let noun = if stale == 1 { "node" } else { "nodes" };
        summary.push_str(&format!(
            "; {stale} {noun} unknown: no heartbeat for over twice the agent's interval (is the agent running?)"
        ));
    }
    if unreported > 0 {
        summary.push_str(&format!("; {unreported} without a pullprobe report"));
    }
    summary
}

/// Columns padded to their widest cell, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let mut w = vec![0usize; rows.iter().map(Vec::len).max().unwrap_or(0)];
    for r in rows {
        for (w, c) in w.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// How long ago, for a person: `6m 12s`.
fn ago(secs: u64) -> String {
    crate::text::human_duration(Duration::from_secs(secs))
}

/// The text view.
pub fn text(f: &Fleet) -> String {
    let mut out = String::new();
    if f.problems.is_empty() && f.stale.is_empty() {
        out.push_str("No node reports a registry problem.\n");
    }
    if !f.problems.is_empty() {
        let mut rows = vec![["CONDITION", "REGISTRY", "REASON", "NODES", "CHECKED"]
            .map(String::from)
            .to_vec()];
        rows.extend(f.problems.iter().map(|p| {
            let nodes = match p.nodes.len() {
                1 => p.nodes[0].clone(),
                n => format!("{n} ({} …)", p.nodes[0]),
            };
            vec![
                p.condition.clone(),
                p.registry.clone(),
                p.reason.clone(),
                nodes,
                p.checked.clone(),
            ]
        }));
        out.push_str(&aligned(&rows));
    }
    if !f.stale.is_empty() {
        if !f.problems.is_empty() {
            out.push('\n');
        }
        out.push_str("UNKNOWN: no heartbeat from the agent, its report is stale\n");
        let mut rows = vec![["NODE", "LAST HEARTBEAT", "AGO"].map(String::from).to_vec()];
        rows.extend(f.stale.iter().map(|s| {
            let when = if s.last_heartbeat.is_empty() {
                "never".to_string()
            } else {
                s.last_heartbeat.clone()
            };
            vec![s.node.clone(), when, ago(s.age_s)]
        }));
        out.push_str(&aligned(&rows));
    }
    out.push('\n');
    out.push_str(&f.summary);
    out.push('\n');
    out
}

/// What a heatmap row knows of its nodes.
#[derive(Clone, Copy)]
enum Report<'a> {
    /// The failing registries (empty: healthy).
    Fresh(&'a Failing),
    /// A report past twice its interval: unknown.
    Stale,
    /// No report at all.
    None,
}

/// The legend: what each colour means, as the cells write it.
const LEGEND: [(CellVerdict, &str); 3] = [
    (
        CellVerdict::Ready,
        "ok: the agent reports the registry reachable",
    ),
    (
        CellVerdict::NotReady,
        "failing: the path's reason is in the cell, when it was checked below",
    ),
    (
        CellVerdict::Unknown,
        "unknown: no heartbeat from the agent past its period, or no report at all",
    ),
];

/// The HTML view: a node × registry heatmap (as goldpinger's graph), a legend, and the
/// problems with when they were checked. Nodes that failed alike share a row ("37 nodes", their names on
/// hover), failing groups first, then the healthy ones, then the nodes whose agent stopped
/// renewing its conditions and those no agent reported for (grey: unknown, never left out).
/// The last column is every registry no condition names: ok wherever an agent reported.
pub fn html(f: &Fleet) -> String {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pullprobe status</title><style>body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:separate;border-spacing:3px}td.c{min-width:90px;height:28px;border-radius:4px;color:#fff;font-size:10px;text-align:center;padding:0 4px;white-space:nowrap}th{font-size:12px;text-align:left}.legend span{display:inline-block;margin-right:14px;font-size:13px}.legend i{display:inline-block;width:14px;height:14px;border-radius:3px;margin-right:4px;vertical-align:-2px}table.p td{font-size:13px;padding:2px 8px}</style></head><body>\n");
    h.push_str(&format!(
        "<h1>pullprobe status</h1><p id=\"summary\">{}</p>\n<div class=\"legend\">",
        escape(&f.summary)
    ));
    for (v, text) in LEGEND {
        h.push_str(&format!(
            "<span><i style=\"background:{}\"></i>{}</span>",
            colour(v),
            escape(text)
        ));
    }
    h.push_str("</div>\n<table id=\"heatmap\"><tr><th>nodes</th>");
    for r in &f.registries {
        h.push_str(&format!("<th>{}</th>", escape(r)));
    }
    h.push_str("<th>other registries</th></tr>\n");
    for (nodes, report) in heat_rows(f) {
        h.push_str(&heat_row(&f.registries, &nodes, report));
    }
    h.push_str("</table>\n");
    h.push_str(&problems_table(f));
    h.push_str("</body></html>\n");
    h
}

/// The problems with their nodes and when they were checked, and the stale nodes with their last
/// heartbeat.
fn problems_table(f: &Fleet) -> String {
    let mut h = String::new();
    if !f.problems.is_empty() {
        h.push_str("<h2>Problems</h2><table class=\"p\" id=\"problems\"><tr><th>condition</th><th>registry</th><th>reason</th><th>nodes</th><th>checked</th></tr>\n");
        for p in &f.problems {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td></tr>\n",
                escape(&p.condition),
                escape(&p.registry),
                escape(&p.reason),
                escape(&p.nodes.join(", ")),
                p.nodes.len(),
                escape(&p.checked)
            ));
        }
        h.push_str("</table>\n");
    }
    if !f.stale.is_empty() {
        h.push_str("<h2>No heartbeat</h2><table class=\"p\" id=\"stale\"><tr><th>node</th><th>last heartbeat</th><th>ago</th></tr>\n");
        for s in &f.stale {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&s.node),
                escape(&s.last_heartbeat),
                escape(&ago(s.age_s))
            ));
        }
        h.push_str("</table>\n");
    }
    h
}

/// registry → reason, of the registries failing on a node.
type Failing = BTreeMap<String, String>;

/// The heatmap's rows: nodes and what they report.
fn heat_rows(f: &Fleet) -> Vec<(Vec<&str>, Report<'_>)> {
    let mut groups: BTreeMap<&Failing, Vec<&str>> = BTreeMap::new();
    for (node, failing) in &f.failing_registries {
        groups.entry(failing).or_default().push(node);
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    // Failing groups first, the largest first; the healthy group (nothing failing) after.
    rows.sort_by_key(|(m, n)| (m.is_empty(), std::cmp::Reverse(n.len())));
    let mut rows: Vec<(Vec<&str>, Report<'_>)> = rows
        .into_iter()
        .map(|(m, n)| (n, Report::Fresh(m)))
        .collect();
    if !f.stale.is_empty() {
        rows.push((
            f.stale.iter().map(|s| s.node.as_str()).collect(),
            Report::Stale,
        ));
    }
    if !f.unreported.is_empty() {
        rows.push((
            f.unreported.iter().map(String::as_str).collect(),
            Report::None,
        ));
    }
    rows
}

/// One heatmap row: a label (the node, or "N nodes" with up to 20 names on hover) and a cell
/// per registry plus the "other registries" cell.
fn heat_row(registries: &[String], nodes: &[&str], report: Report<'_>) -> String {
    let label = match nodes {
        [one] => (*one).to_string(),
        many => format!("{} nodes", many.len()),
    };
    let mut names = nodes
        .iter()
        .take(20)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > 20 {
        names.push_str(", …");
    }
    let mut h = format!(
        "<tr><td title=\"{}\">{}</td>",
        escape(&names),
        escape(&label)
    );
    let cells = registries.iter().map(Some).chain([None]);
    for r in cells {
        let (v, text) = match (report, r) {
            (Report::None, _) => (CellVerdict::Unknown, "no report"),
            (Report::Stale, _) => (CellVerdict::Unknown, "no heartbeat"),
            (Report::Fresh(m), Some(r)) => match m.get(r) {
                Some(reason) => (CellVerdict::NotReady, reason.as_str()),
                None => (CellVerdict::Ready, ""),
            },
            (Report::Fresh(_), None) => (CellVerdict::Ready, ""),
        };
        let what = r.map(String::as_str).unwrap_or("other registries");
        let hover = format!(
            "{label} · {what} · {}",
            if text.is_empty() { "ok" } else { text }
        );
        h.push_str(&format!(
            "<td class=\"c\" style=\"background:{}\" title=\"{}\">{}</td>",
            colour(v),
            escape(&hover),
            escape(text)
        ));
    }
    h.push_str("</tr>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Now is 2026-01-03T00:00:00Z; agents check every 60 s.
    fn fresh() -> Staleness {
        Staleness {
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_398_400),
            default_interval: Duration::from_secs(60),
        }
    }

    fn report(name: &str, heartbeat: &str, registries: serde_json::Value) -> NodePullStatus {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
            "metadata": {"name": name}, "spec": {"assignments": []},
            "status": {"heartbeatTime": heartbeat, "intervalSeconds": 60, "registries": registries}}))
        .unwrap()
    }

    fn path(registry: &str, state: &str, phase: &str, reason: &str, at: &str) -> serde_json::Value {
        serde_json::json!({"registry": registry, "fingerprint": "f", "state": state, "checkedAt": at,
            "cell": {"verdict": if state == "ok" { "ready" } else { "not_ready" }, "phase": phase,
                     "reason": reason, "message": "m"}})
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// A dead agent leaves its report behind with a frozen heartbeat: past twice its
    /// interval it is unknown, counted in the exit code, never "no problem".
    #[test]
    fn reports_past_twice_their_interval_are_unknown() {
        let s = fresh();
        assert_eq!(s.limit(60), Duration::from_secs(120));
        assert_eq!(s.limit(0), Duration::from_secs(120));
        let ok = serde_json::json!([]);
        let f = build(
            &names(&["alive", "dead", "odd"]),
            &[
                report("alive", "2026-01-02T23:59:00Z", ok.clone()),
                report("dead", "2026-01-02T23:54:00Z", ok.clone()),
                report("odd", "yesterday", ok),
            ],
            &s,
        );
        assert!(f.failing.is_empty());
        let stale: Vec<(&str, u64)> = f.stale.iter().map(|n| (n.node.as_str(), n.age_s)).collect();
        assert_eq!(stale, [("dead", 360), ("odd", 0)]);
        assert_eq!(f.stale[0].last_heartbeat, "2026-01-02T23:54:00Z");
        assert_eq!(f.exit_code(), 1);
        assert!(
            f.summary
                .contains("2 nodes unknown: no heartbeat for over twice the agent's interval"),
            "{}",
            f.summary
        );
        let t = text(&f);
        assert!(!t.contains("No node reports a registry problem"), "{t}");
        assert!(
            t.contains("dead") && t.contains("2026-01-02T23:54:00Z"),
            "{t}"
        );
        let page = html(&f);
        assert!(
            page.contains(">no heartbeat</td>") && page.contains("id=\"stale\""),
            "{page}"
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["stale"][0]["node"], "dead");
    }

    #[test]
    fn problems_group_by_condition_registry_and_reason() {
        let bad = |n: &str, at: &str| {
            report(
                n,
                "2026-01-02T23:59:30Z",
                serde_json::json!([
                    path(
                        "mirror.internal",
                        "failing",
                        "tls",
                        "TLSUnknownAuthority",
                        at
                    ),
                    path("docker.io", "failing", "auth", "AuthUnauthorized", at),
                    path("quay.io", "degraded", "connect", "ConnectTimeout", at),
                ]),
            )
        };
        let ok = report(
            "ok",
            "2026-01-02T23:59:30Z",
            serde_json::json!([path(
                "mirror.internal",
                "ok",
                "",
                "",
                "2026-01-02T23:59:00Z"
            )]),
        );
        let f = build(
            &names(&["a", "b", "ok", "silent"]),
            &[
                bad("a", "2026-01-02T00:00:00Z"),
                bad("b", "2026-01-01T00:00:00Z"),
                ok,
                report("elsewhere", "2026-01-02T23:59:30Z", serde_json::json!([])),
            ],
            &fresh(),
        );
        assert_eq!(f.failing, ["a", "b"]);
        assert_eq!(f.unreported, ["silent"]);
        assert_eq!(f.nodes, 4, "only the nodes listed count");
        assert_eq!(
            f.problems.len(),
            2,
            "degraded is not failing: {:?}",
            f.problems
        );
        let tls = f
            .problems
            .iter()
            .find(|p| p.reason == "TLSUnknownAuthority")
            .unwrap();
        assert_eq!(
            (
                tls.condition.as_str(),
                tls.registry.as_str(),
                tls.nodes.len(),
                tls.checked.as_str()
            ),
            (
                "RegistryUnreachable",
                "mirror.internal",
                2,
                "2026-01-02T00:00:00Z"
            )
        );
        let auth = f
            .problems
            .iter()
            .find(|p| p.registry == "docker.io")
            .unwrap();
        assert_eq!(auth.condition, "RegistryAuthFailing");
        assert_eq!(f.exit_code(), 1);
        assert!(f.summary.starts_with("2/4 nodes failing"), "{}", f.summary);
        let page = html(&f);
        assert!(page.contains("TLSUnknownAuthority"));
        assert!(page.contains(">2 nodes</td>"), "{page}");
        assert!(page.contains("title=\"a, b\""), "{page}");
        assert!(
            page.contains(">ok</td>") && page.contains(">silent</td>"),
            "{page}"
        );
        let (a, ok, silent) = (
            page.find(">2 nodes<").unwrap(),
            page.find(">ok<").unwrap(),
            page.find(">silent<").unwrap(),
        );
        assert!(
            a < ok && ok < silent,
            "failing, healthy, unreported: {page}"
        );
    }

    /// Text from another process is cut and stripped before it is shown.
    #[test]
    fn hostile_report_text_is_cleaned() {
        let f = build(
            &names(&["n"]),
            &[report(
                "n",
                "2026-01-02T23:59:30Z",
                serde_json::json!([path(
                    "evil\u{1b}[31m.example",
                    "failing",
                    "dns",
                    "<script>",
                    "2026-01-02T23:59:00Z"
                )]),
            )],
            &fresh(),
        );
        assert_eq!(f.problems[0].registry, "evil[31m.example");
        assert_eq!(
            f.problems[0].reason, "Failing",
            "not a reason code: not shown"
        );
    }
}
