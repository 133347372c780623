//! `pullprobe status`: the fleet as the agents reported it — their two Node conditions
//! (`RegistryUnreachable`, `RegistryAuthFailing`; True = problem) and their Events —
//! grouped by condition, registry and reason, with since when. The condition message is
//! the agent's `registry: Reason at endpoint; …` (agent/conditions.rs `summarize`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Event, Node};
use serde::Serialize;

use super::html::{colour, escape};
use super::matrix::CellVerdict;
use super::wire::clean;
use crate::report::records::ConditionKind;

/// Nodes failing for one (condition, registry, reason).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FleetProblem {
    pub condition: String,
    pub registry: String,
    pub reason: String,
    pub nodes: Vec<String>,
    /// The earliest transition to True among those nodes (RFC 3339).
    pub since: String,
}

/// A recent Event of an agent about a Node.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FleetEvent {
    pub node: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last: String,
}

/// The fleet view.
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub nodes: usize,
    pub failing: Vec<String>,
    /// Nodes without either condition: no agent has reported there (yet).
    pub unreported: Vec<String>,
    pub problems: Vec<FleetProblem>,
    pub registries: Vec<String>,
    /// node → failing registries (for the heatmap).
    pub failing_registries: BTreeMap<String, BTreeMap<String, String>>,
    pub events: Vec<FleetEvent>,
    pub summary: String,
}

impl Fleet {
    /// Non-zero when any node is failing (for a cron alert).
    pub fn exit_code(&self) -> i32 {
        if self.failing.is_empty() {
            0
        } else {
            1
        }
    }
}

/// `a: R at e; b: R2 at e2` → [(a, R), (b, R2)].
fn parse_message(m: &str) -> Vec<(String, String)> {
    m.split("; ")
        .filter_map(|part| {
            let (registry, rest) = part.split_once(": ")?;
            let reason = rest.split(" at ").next()?.trim();
            Some((clean(registry, 255), clean(reason, 64)))
        })
        .collect()
}

/// (registry, reason, since) of a True condition, from its message.
fn failing_parts(c: &k8s_openapi::api::core::v1::NodeCondition) -> Vec<(String, String, String)> {
    let since = c
        .last_transition_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let mut parts = parse_message(c.message.as_deref().unwrap_or(""));
    if parts.is_empty() {
        parts.push(("?".into(), clean(c.reason.as_deref().unwrap_or(""), 64)));
    }
    parts
        .into_iter()
        .map(|(r, why)| (r, why, since.clone()))
        .collect()
}

/// Build the view from the Nodes and the core/v1 Events about them.
pub fn build(nodes: &[Node], events: &[Event]) -> Fleet {
    let mut problems: BTreeMap<(String, String, String), FleetProblem> = BTreeMap::new();
    let (mut failing, mut unreported) = (BTreeSet::new(), Vec::new());
    let mut heat: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut registries = BTreeSet::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let conds = n.status.as_ref().and_then(|s| s.conditions.as_ref());
        let ours: Vec<_> = conds
            .into_iter()
            .flatten()
            .filter(|c| ConditionKind::from_type(&c.type_).is_some())
            .collect();
        if ours.is_empty() {
            unreported.push(name.clone());
            continue;
        }
        heat.entry(name.clone()).or_default();
        for c in ours.into_iter().filter(|c| c.status == "True") {
            failing.insert(name.clone());
            let found = failing_parts(c);
            for (registry, reason, since) in found {
                registries.insert(registry.clone());
                heat.entry(name.clone())
                    .or_default()
                    .insert(registry.clone(), reason.clone());
                let p = problems
                    .entry((c.type_.clone(), registry.clone(), reason.clone()))
                    .or_insert_with(|| FleetProblem {
                        condition: c.type_.clone(),
                        registry,
                        reason,
                        nodes: Vec::new(),
                        since: since.clone(),
                    });
                p.nodes.push(name.clone());
                if !since.is_empty() && (p.since.is_empty() || since < p.since) {
                    p.since = since;
                }
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
    let events = recent_events(events);
    let failing: Vec<String> = failing.into_iter().collect();
    let summary = summary_line(failing.len(), nodes.len(), &problems, unreported.len());
    Fleet {
        nodes: nodes.len(),
        failing,
        unreported,
        problems,
        registries: registries.into_iter().collect(),
        failing_registries: heat,
        events,
        summary,
    }
}

/// `2/40 nodes failing; 2 nodes: RegistryUnreachable TLSUnknownAuthority at mirror.internal`.
fn summary_line(
    failing: usize,
    nodes: usize,
    problems: &[FleetProblem],
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
    if unreported > 0 {
        summary.push_str(&format!("; {unreported} without a pullprobe report"));
    }
    summary
}

fn recent_events(events: &[Event]) -> Vec<FleetEvent> {
    let mut out: Vec<FleetEvent> = events
        .iter()
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("pullprobe")
                || e.reporting_component.as_deref() == Some("pullprobe")
        })
        .map(|e| FleetEvent {
            node: clean(e.involved_object.name.as_deref().unwrap_or(""), 253),
            reason: clean(e.reason.as_deref().unwrap_or(""), 64),
            message: clean(e.message.as_deref().unwrap_or(""), 512),
            count: e.count.unwrap_or(1),
            last: e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| b.last.cmp(&a.last));
    out.truncate(20);
    out
}

/// The text view.
pub fn text(f: &Fleet) -> String {
    let mut out = String::new();
    if f.problems.is_empty() {
        out.push_str("No node reports a registry problem.\n");
    } else {
        out.push_str("CONDITION            REGISTRY  REASON  NODES  SINCE\n");
        let rows: Vec<[String; 5]> = f
            .problems
            .iter()
            .map(|p| {
                let nodes = match p.nodes.len() {
                    1 => p.nodes[0].clone(),
                    n => format!("{n} ({} …)", p.nodes[0]),
                };
                [
                    p.condition.clone(),
                    p.registry.clone(),
                    p.reason.clone(),
                    nodes,
                    p.since.clone(),
                ]
            })
            .collect();
        out = String::new();
        let header = ["CONDITION", "REGISTRY", "REASON", "NODES", "SINCE"].map(String::from);
        let mut w = header.clone().map(|h| h.len());
        for r in &rows {
            for (w, c) in w.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        for r in std::iter::once(&header).chain(rows.iter()) {
            let line: Vec<String> = r.iter().zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
    }
    if !f.events.is_empty() {
        out.push_str("\nRECENT EVENTS\n");
        for e in f.events.iter().take(10) {
            out.push_str(&format!(
                "  {} {} {} (x{}): {}\n",
                e.last, e.node, e.reason, e.count, e.message
            ));
        }
    }
    out.push('\n');
    out.push_str(&f.summary);
    out.push('\n');
    out
}

/// The HTML view: a node × registry heatmap (as goldpinger's graph). Nodes that failed alike
/// share a row ("37 nodes", their names on hover), failing groups first, then the healthy ones,
/// then the nodes no agent reported for (grey: unknown, never left out). The last column is
/// every registry no condition names: ok wherever an agent reported.
pub fn html(f: &Fleet) -> String {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pullprobe status</title><style>body{font-family:system-ui,sans-serif;margin:24px}table{border-collapse:separate;border-spacing:3px}td.c{width:90px;height:28px;border-radius:4px;color:#fff;font-size:10px;text-align:center}th{font-size:12px;text-align:left}</style></head><body>\n");
    h.push_str(&format!(
        "<h1>pullprobe status</h1><p id=\"summary\">{}</p>\n<table><tr><th>nodes</th>",
        escape(&f.summary)
    ));
    for r in &f.registries {
        h.push_str(&format!("<th>{}</th>", escape(r)));
    }
    h.push_str("<th>other registries</th></tr>\n");
    for (nodes, failing) in heat_rows(f) {
        h.push_str(&heat_row(&f.registries, &nodes, failing));
    }
    h.push_str("</table></body></html>\n");
    h
}

/// registry → reason, of the registries failing on a node.
type Failing = BTreeMap<String, String>;

/// The heatmap's rows: (nodes, their failing registries; `None` = no agent report).
fn heat_rows(f: &Fleet) -> Vec<(Vec<&str>, Option<&Failing>)> {
    let mut groups: BTreeMap<&Failing, Vec<&str>> = BTreeMap::new();
    for (node, failing) in &f.failing_registries {
        groups.entry(failing).or_default().push(node);
    }
    let mut rows: Vec<_> = groups.into_iter().map(|(m, n)| (n, Some(m))).collect();
    // Failing groups first, the largest first; the healthy group (nothing failing) after.
    rows.sort_by_key(|(n, m)| (m.is_some_and(|m| m.is_empty()), std::cmp::Reverse(n.len())));
    if !f.unreported.is_empty() {
        rows.push((f.unreported.iter().map(String::as_str).collect(), None));
    }
    rows
}

/// One heatmap row: a label (the node, or "N nodes" with up to 20 names on hover) and a cell
/// per registry plus the "other registries" cell.
fn heat_row(registries: &[String], nodes: &[&str], failing: Option<&Failing>) -> String {
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
        let (v, text) = match (failing, r) {
            (None, _) => (CellVerdict::Unknown, "no report"),
            (Some(m), Some(r)) => match m.get(r) {
                Some(reason) => (CellVerdict::NotReady, reason.as_str()),
                None => (CellVerdict::Ready, ""),
            },
            (Some(_), None) => (CellVerdict::Ready, ""),
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

    fn node(name: &str, conds: serde_json::Value) -> Node {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "status": {"conditions": conds}}),
        )
        .unwrap()
    }

    #[test]
    fn problems_group_by_condition_registry_and_reason() {
        let bad = |n: &str, t: &str| {
            node(
                n,
                serde_json::json!([
                {"type": "RegistryUnreachable", "status": "True", "reason": "TLSUnknownAuthority",
                 "message": "mirror.internal: TLSUnknownAuthority at https://mirror.internal/v2; docker.io: DNSFailure at https://registry-1.docker.io/v2",
                 "lastTransitionTime": t},
                {"type": "RegistryAuthFailing", "status": "False", "reason": "RegistryCredentialsAccepted"}]),
            )
        };
        let ok = node(
            "ok",
            serde_json::json!([{"type": "RegistryUnreachable", "status": "False"}]),
        );
        let silent = node(
            "silent",
            serde_json::json!([{"type": "Ready", "status": "True"}]),
        );
        let f = build(
            &[
                bad("a", "2026-01-02T00:00:00Z"),
                bad("b", "2026-01-01T00:00:00Z"),
                ok,
                silent,
            ],
            &[],
        );
        assert_eq!(f.failing, ["a", "b"]);
        assert_eq!(f.unreported, ["silent"]);
        assert_eq!(f.problems.len(), 2);
        let tls = f
            .problems
            .iter()
            .find(|p| p.reason == "TLSUnknownAuthority")
            .unwrap();
        assert_eq!(
            (tls.registry.as_str(), tls.nodes.len(), tls.since.as_str()),
            ("mirror.internal", 2, "2026-01-01T00:00:00Z")
        );
        assert_eq!(f.exit_code(), 1);
        assert!(f.summary.starts_with("2/4 nodes failing"), "{}", f.summary);
        let page = html(&f);
        assert!(page.contains("TLSUnknownAuthority"));
        // a and b failed alike: one row; ok alone; silent as unknown, not left out.
        assert!(page.contains(">2 nodes</td>"), "{page}");
        assert!(page.contains("title=\"a, b\""), "{page}");
        assert!(
            page.contains(">ok</td>") && page.contains(">silent</td>"),
            "{page}"
        );
        assert_eq!(page.matches(">no report</td>").count(), 3, "{page}");
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
}
