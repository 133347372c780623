//! The `NodePullStatus` status from what the schedule shares (pure): each registry's
//! latest path check as a compact cell, plus the answers kept. Nothing here reads a
//! credential: cells carry verdicts, reason codes, hosts and bounded messages only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::agent::export::status::rfc3339;
use crate::agent::ondemand::{fingerprint, PathResult};
use crate::agent::outcome::degraded;
use crate::api::{self, Answer, NodePullStatusStatus, MAX_MESSAGE_LEN};
use crate::probe::verdict::PathState;
use crate::probe::ProbeReport;

/// Registries in one status at most (the schema's bound); the node's own come first.
pub const MAX_REGISTRIES: usize = 256;

/// What the status says about the agent itself.
#[derive(Clone, Debug, Default)]
pub struct AgentFacts {
    pub runtime: String,
    pub platform: String,
    pub interval: Duration,
}

/// `ok`, `degraded` or `failing`: a path shown to work, one that works only after earlier
/// endpoints failed (or could not be told: rate limited, deadline), one that does not.
pub fn state_word(state: PathState, degraded: bool) -> &'static str {
    match state {
        PathState::Reachable if !degraded => "ok",
        PathState::Reachable | PathState::Inconclusive(_) => "degraded",
        PathState::AuthFailing(_) | PathState::Unreachable(_) => "failing",
    }
}

/// A bounded, printable message (the schema's `MAX_MESSAGE_LEN`, `…` included).
fn clip(s: &str) -> String {
    crate::redact::text_max(s, MAX_MESSAGE_LEN.saturating_sub(1))
}

/// The host whose failure decided a report: the failing phase's, else the endpoint's.
fn failure_host(r: &ProbeReport) -> Option<String> {
    let phase = r
        .phases
        .iter()
        .rev()
        .find(|p| !p.ok && !p.host.is_empty())
        .map(|p| p.host.clone());
    let endpoint = || {
        let u = url::Url::parse(r.endpoint.as_deref()?).ok()?;
        let host = u.host_str()?.to_string();
        Some(match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        })
    };
    phase
        .or_else(endpoint)
        .map(|h| crate::redact::text_max(&h, 253))
}

/// The cell of an image check: its verdict, and where and why it failed.
pub fn image_cell(r: &ProbeReport) -> api::Cell {
    let pulls = r.verdict.pulls();
    api::Cell {
        verdict: r.verdict.as_str().to_string(),
        phase: r.phase.map(|p| p.as_str().to_string()),
        reason: r.reason.map(|x| x.as_str().to_string()),
        host: (!pulls).then(|| failure_host(r)).flatten(),
        message: if pulls {
            String::new()
        } else {
            clip(&r.message)
        },
        ..api::Cell::default()
    }
}

/// The cell a path gives every image of its registry: `ready` (or `degraded`) when it
/// works, `not_ready` with the path's reason when it does not, `unknown` when it could
/// not be told.
pub fn path_cell(state: PathState, report: &ProbeReport) -> api::Cell {
    let verdict = match state {
        PathState::Reachable if degraded(state, &report.attempts) => "degraded",
        PathState::Reachable => "ready",
        PathState::AuthFailing(_) | PathState::Unreachable(_) => "not_ready",
        PathState::Inconclusive(_) => "unknown",
    };
    let reason = state.reason();
    api::Cell {
        verdict: verdict.to_string(),
        phase: reason.map(|x| x.phase().as_str().to_string()),
        reason: reason.map(|x| x.as_str().to_string()),
        host: reason.and_then(|_| failure_host(report)),
        message: reason.map(|_| clip(&report.message)).unwrap_or_default(),
        ..api::Cell::default()
    }
}

/// Each registry's latest path check, the node's own registries first, each registry
/// once, at most [`MAX_REGISTRIES`].
pub fn registries(
    paths: &BTreeMap<String, PathResult>,
    facts: &AgentFacts,
) -> Vec<api::RegistryPath> {
    let mut by_scope: Vec<(&String, &PathResult)> = paths.iter().collect();
    by_scope
        .sort_by(|a, b| (!a.1.node_scope, &a.1.registry).cmp(&(!b.1.node_scope, &b.1.registry)));
    let mut seen = BTreeSet::new();
    by_scope
        .into_iter()
        .filter(|(_, p)| seen.insert(p.registry.clone()))
        .take(MAX_REGISTRIES)
        .map(|(plan, p)| api::RegistryPath {
            registry: crate::redact::text_max(&p.registry, 253),
            // The same fingerprint an assignment's answer for this plan carries (node
            // credentials).
            fingerprint: fingerprint(&facts.runtime, &facts.platform, plan, "node", &p.report),
            state: state_word(p.state, degraded(p.state, &p.report.attempts)).to_string(),
            cell: path_cell(p.state, &p.report),
            checked_at: rfc3339(p.at),
        })
        .collect()
}

/// What makes a write due besides the heartbeat: each registry's fingerprint and state,
/// and the answers' ids.
pub fn digest(registries: &[api::RegistryPath], answers: &[Answer]) -> Vec<String> {
    registries
        .iter()
        .map(|r| format!("{} {} {}", r.registry, r.fingerprint, r.state))
        .chain(answers.iter().map(|a| format!("answer {}", a.id)))
        .collect()
}

/// The whole status, stamped with `now` as heartbeat.
pub fn status(
    registries: Vec<api::RegistryPath>,
    answers: Vec<Answer>,
    facts: &AgentFacts,
    now: SystemTime,
) -> NodePullStatusStatus {
    let failing = registries.iter().filter(|r| r.state == "failing").count();
    NodePullStatusStatus {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime: facts.runtime.clone(),
        platform: facts.platform.clone(),
        heartbeat_time: Some(rfc3339(now)),
        interval_seconds: u32::try_from(facts.interval.as_secs()).unwrap_or(u32::MAX),
        registries_total: u32::try_from(registries.len()).unwrap_or(u32::MAX),
        registries_failing: u32::try_from(failing).unwrap_or(u32::MAX),
        registries,
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Reason, Verdict};

    fn report(verdict: Verdict, reason: Option<Reason>, message: &str) -> ProbeReport {
        let mut r = crate::agent::ondemand::invalid_report(
            "reg.example:5000/app:1",
            &crate::reference::ReferenceError::Empty,
        );
        r.verdict = verdict;
        r.reason = reason;
        r.phase = reason.map(|x| x.phase());
        r.message = message.to_string();
        r.endpoint = Some("https://user:pw@reg.example:5000/v2?token=x".into());
        r
    }

    fn path(registry: &str, state: PathState, node_scope: bool) -> PathResult {
        PathResult {
            registry: registry.into(),
            state,
            report: report(Verdict::Ready, state.reason(), &"m".repeat(5000)),
            at: SystemTime::UNIX_EPOCH,
            node_scope,
        }
    }

    #[test]
    fn node_registries_first_each_once_bounded() {
        let mut paths = BTreeMap::new();
        for i in 0..300 {
            paths.insert(
                format!("t{i:03}"),
                path(
                    &format!("tenant{i:03}.example"),
                    PathState::Reachable,
                    false,
                ),
            );
        }
        paths.insert(
            "z-node".into(),
            path(
                "node.example",
                PathState::Unreachable(Reason::ConnectRefused),
                true,
            ),
        );
        paths.insert(
            "z-node-mirror".into(),
            path("node.example", PathState::Reachable, true),
        );
        let facts = AgentFacts::default();
        let r = registries(&paths, &facts);
        assert_eq!(r.len(), MAX_REGISTRIES);
        assert_eq!(r[0].registry, "node.example");
        assert_eq!(r.iter().filter(|x| x.registry == "node.example").count(), 1);
        assert_eq!(r[0].state, "failing");
        assert_eq!(r[0].cell.verdict, "not_ready");
        assert_eq!(r[0].cell.reason.as_deref(), Some("ConnectRefused"));
        assert_eq!(
            r[0].cell.host.as_deref(),
            Some("reg.example:5000"),
            "no userinfo, no query"
        );
        assert!(r[0].cell.message.chars().count() <= MAX_MESSAGE_LEN);
        assert_eq!(r[1].state, "ok");
        assert_eq!(r[1].cell.verdict, "ready");
        assert!(r[1].cell.message.is_empty() && r[1].cell.host.is_none());
        let s = status(r, Vec::new(), &facts, SystemTime::UNIX_EPOCH);
        assert_eq!((s.registries_total, s.registries_failing), (256, 1));
    }

    #[test]
    fn path_states_map_to_words_and_cells() {
        assert_eq!(state_word(PathState::Reachable, false), "ok");
        assert_eq!(state_word(PathState::Reachable, true), "degraded");
        assert_eq!(
            state_word(PathState::Inconclusive(Reason::RateLimited), false),
            "degraded"
        );
        assert_eq!(
            state_word(
                PathState::AuthFailing(Reason::AuthCredentialsRejected),
                false
            ),
            "failing"
        );
        let r = report(Verdict::NotReady, Some(Reason::RateLimited), "slow down");
        let c = path_cell(PathState::Inconclusive(Reason::RateLimited), &r);
        assert_eq!(
            (c.verdict.as_str(), c.reason.as_deref()),
            ("unknown", Some("RateLimited"))
        );
        // An image check: its own verdict (a 404 for the tag is the image's problem).
        let r = report(
            Verdict::NotReady,
            Some(Reason::ManifestNotFound),
            "no such tag",
        );
        let c = image_cell(&r);
        assert_eq!(c.verdict, "not_ready");
        assert_eq!(c.phase.as_deref(), Some("manifest"));
        assert_eq!(c.reason.as_deref(), Some("ManifestNotFound"));
    }
}
