//! `pullprobe status`: the fleet as the agents reported it — their two Node conditions
//! (`RegistryUnreachable`, `RegistryAuthFailing`; True = problem) and their Events —
//! grouped by condition, registry and reason, with since when. The condition message is
//! the agent's `registry: Reason at endpoint; …` (agent/conditions.rs `summarize`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, Node, NodeCondition};
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
    /// Nodes whose conditions have not been renewed within the agents' heartbeat (plus
    /// slack): no agent runs there any more, or it cannot write. Their conditions are
    /// unknown, whatever they still say.
    pub stale: Vec<StaleNode>,
    /// Nodes without either condition: no agent has reported there (yet).
    pub unreported: Vec<String>,
    pub problems: Vec<FleetProblem>,
    pub registries: Vec<String>,
    /// node → failing registries (for the heatmap).
    pub failing_registries: BTreeMap<String, BTreeMap<String, String>>,
    pub events: Vec<FleetEvent>,
    pub summary: String,
}

/// A node whose conditions went unrenewed past the heartbeat.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StaleNode {
    pub node: String,
    /// The newest `lastHeartbeatTime` of its conditions (RFC 3339; empty when none).
    pub last_heartbeat: String,
    /// Seconds since then.
    pub age_s: u64,
}

/// When conditions count as stale: the agents' heartbeat plus a slack for a write that is
/// retried (a tenth of the heartbeat, at least 30 s).
#[derive(Clone, Copy, Debug)]
pub struct Staleness {
    pub now: SystemTime,
    pub heartbeat: Duration,
}

impl Staleness {
    pub fn limit(&self) -> Duration {
        self.heartbeat + (self.heartbeat / 10).max(Duration::from_secs(30))
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

/// The newest heartbeat of `conds` and its age, when that age is past the limit (or a
/// condition says `Unknown`).
fn staleness(conds: &[&NodeCondition], s: &Staleness) -> Option<(String, u64)> {
    let newest = conds
        .iter()
        .filter_map(|c| c.last_heartbeat_time.as_ref())
        .map(|t| SystemTime::from(t.0))
        .max();
    let age = newest.map(|t| s.now.duration_since(t).unwrap_or_default());
    let unknown = conds.iter().any(|c| c.status == "Unknown");
    if !unknown && age.is_none_or(|a| a <= s.limit()) {
        return None;
    }
    let shown = newest
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some((shown, age.map(|a| a.as_secs()).unwrap_or(0)))
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
pub fn build(nodes: &[Node], events: &[Event], stale_when: &Staleness) -> Fleet {
    let mut problems: BTreeMap<(String, String, String), FleetProblem> = BTreeMap::new();
    let (mut failing, mut unreported) = (BTreeSet::new(), Vec::new());
    let mut stale = Vec::new();
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
        if let Some((last_heartbeat, age_s)) = staleness(&ours, stale_when) {
            stale.push(StaleNode {
                node: name.clone(),
                last_heartbeat,
                age_s,
            });
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
    let summary = summary_line(
        failing.len(),
        nodes.len(),
        &problems,
        (stale.len(), stale_when.limit()),
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
        events,
        summary,
    }
}

/// `2/40 nodes failing; 2 nodes: RegistryUnreachable TLSUnknownAuthority at mirror.internal`.
fn summary_line(
    failing: usize,
    nodes: usize,
    problems: &[FleetProblem],
    (stale, limit): (usize, Duration),
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
            "; {stale} {noun} unknown: no heartbeat for over {} (is the agent running?)",
            crate::text::human_duration(limit)
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
        let mut rows = vec![["CONDITION", "REGISTRY", "REASON", "NODES", "SINCE"]
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
                p.since.clone(),
            ]
        }));
        out.push_str(&aligned(&rows));
    }
    if !f.stale.is_empty() {
        if !f.problems.is_empty() {
            out.push('\n');
        }
        out.push_str("UNKNOWN: no heartbeat from the agent, its conditions are stale\n");
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

/// What a heatmap row knows of its nodes.
#[derive(Clone, Copy)]
enum Report<'a> {
    /// The failing registries (empty: healthy).
    Fresh(&'a Failing),
    /// Conditions past the heartbeat: unknown.
    Stale,
    /// No condition at all.
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
        "failing: the condition's reason is in the cell, since when below",
    ),
    (
        CellVerdict::Unknown,
        "unknown: no heartbeat from the agent past its period, or no report at all",
    ),
];

/// The HTML view: a node × registry heatmap (as goldpinger's graph), a legend, and the
/// problems with since when. Nodes that failed alike share a row ("37 nodes", their names on
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

/// The problems with their nodes and since when, and the stale nodes with their last
/// heartbeat.
fn problems_table(f: &Fleet) -> String {
    let mut h = String::new();
    if !f.problems.is_empty() {
        h.push_str("<h2>Problems</h2><table class=\"p\" id=\"problems\"><tr><th>condition</th><th>registry</th><th>reason</th><th>nodes</th><th>since</th></tr>\n");
        for p in &f.problems {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td></tr>\n",
                escape(&p.condition),
                escape(&p.registry),
                escape(&p.reason),
                escape(&p.nodes.join(", ")),
                p.nodes.len(),
                escape(&p.since)
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

    fn node(name: &str, conds: serde_json::Value) -> Node {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "status": {"conditions": conds}}),
        )
        .unwrap()
    }

    /// Now is 2026-01-03; heartbeats every 5 minutes.
    fn fresh() -> Staleness {
        Staleness {
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_398_400),
            heartbeat: Duration::from_secs(300),
        }
    }

    fn beating(name: &str, status: &str, heartbeat: &str) -> Node {
        node(
            name,
            serde_json::json!([
            {"type": "RegistryUnreachable", "status": status, "reason": "RegistriesReachable",
             "message": "every registry in use is reachable", "lastHeartbeatTime": heartbeat,
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "RegistryAuthFailing", "status": "False", "reason": "RegistryCredentialsAccepted",
             "lastHeartbeatTime": heartbeat}]),
        )
    }

    /// A dead agent leaves its conditions False with a frozen heartbeat: past the heartbeat
    /// (and its slack) they are unknown, counted in the exit code, never "no problem".
    #[test]
    fn conditions_past_their_heartbeat_are_unknown() {
        let s = fresh();
        assert_eq!(s.limit(), Duration::from_secs(330));
        let f = build(
            &[
                beating("alive", "False", "2026-01-02T23:56:00Z"),
                beating("dead", "False", "2026-01-02T23:54:00Z"),
                beating("odd", "Unknown", "2026-01-02T23:59:00Z"),
            ],
            &[],
            &s,
        );
        assert!(f.failing.is_empty());
        let stale: Vec<(&str, u64)> = f.stale.iter().map(|n| (n.node.as_str(), n.age_s)).collect();
        assert_eq!(stale, [("dead", 360), ("odd", 60)]);
        assert_eq!(f.stale[0].last_heartbeat, "2026-01-02T23:54:00Z");
        assert_eq!(f.exit_code(), 1);
        assert!(
            f.summary
                .contains("2 nodes unknown: no heartbeat for over 5 min 30 s"),
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
            &fresh(),
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
