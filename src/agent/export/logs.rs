//! Logs: one line per probe and one per condition change, as JSON (default) or text.
//! Filtering follows `RUST_LOG` (`info` when unset). A probe's or condition's own text goes
//! in `detail`: a field named `message` would replace the event's message in JSON output.

use tracing_subscriber::EnvFilter;

use crate::probe::ProbeReport;

use super::Exporter;
use crate::agent::conditions::Change;
use crate::agent::config::LogFormat;
use crate::agent::outcome::{CheckRecord, CycleOutcome};

/// Install the global subscriber. Does nothing if one is already installed (the binary
/// or a test may have done so).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// ANSI colour in text logs only on a terminal, never with `NO_COLOR` (a pipe or a log
/// collector gets plain text).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `dns=0.4 connect=0.2 tls=3.1` (milliseconds), in phase order, each phase once (a
/// phase met twice — a token host's dns, a blob host's connect — is summed).
pub fn phase_durations(report: &ProbeReport) -> String {
    let mut seen: Vec<(crate::probe::Phase, f64)> = Vec::new();
    for p in &report.phases {
        match seen.iter_mut().find(|(n, _)| *n == p.name) {
            Some((_, ms)) => *ms += p.duration_ms,
            None => seen.push((p.name, p.duration_ms)),
        }
    }
    seen.iter()
        .map(|(n, ms)| format!("{n}={ms:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per check: `reg.example:5000 not_ready TLSUnknownAuthority`.
pub fn probe(node: &str, c: &CheckRecord) {
    let report = &c.checked.report;
    // A path check says what the node's path is, not the representative image's verdict.
    let (verdict, reason) = c.says();
    let fine = reason.is_none();
    let reason = reason.map(|r| r.as_str()).unwrap_or("");
    let endpoint = report.endpoint.as_deref().unwrap_or("");
    let phases = phase_durations(report);
    let (kind, registry, credential) = (
        c.target.kind.as_str(),
        c.target.registry.as_str(),
        c.target.cred.to_string(),
    );
    let path = c.target.kind == crate::agent::outcome::CheckKind::Path;
    let what = format!(
        "{registry} {}{verdict}{}{reason}",
        if path { "path " } else { "" },
        if reason.is_empty() { "" } else { " " }
    );
    if fine {
        tracing::info!(
            target: "pullprobe::probe",
            node, kind, image = %report.image, registry, endpoint, credential, verdict, reason,
            duration_ms = report.duration_ms, phase_ms = %phases,
            "{what}"
        );
    } else {
        tracing::warn!(
            target: "pullprobe::probe",
            node, kind, image = %report.image, registry, endpoint, credential, verdict, reason,
            duration_ms = report.duration_ms, phase_ms = %phases, detail = %report.message,
            "{what}"
        );
    }
}

/// One line per cycle: what was checked and how it went.
pub fn cycle(o: &CycleOutcome) {
    let failing = o.checks.iter().filter(|c| c.failing()).count();
    let unreachable = o
        .conditions
        .iter()
        .filter(|c| c.record.status)
        .map(|c| c.record.kind.as_str())
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        target: "pullprobe::cycle",
        node = %o.node,
        checks = o.checks.len(),
        failing,
        images = o.counts.images,
        paths = o.counts.paths,
        pods = o.counts.pods,
        deferred = o.counts.deferred,
        in_flight = o.counts.in_flight,
        conditions_true = %unreachable,
        duration_ms = u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
        "cycle: {} checks, {failing} failing",
        o.checks.len()
    );
}

/// One line per condition change: WARN while the condition reports a problem (True), INFO
/// when it clears (False).
pub fn condition_change(node: &str, change: &Change) {
    let (condition, reason, transition) = (change.kind.as_str(), &change.reason, change.transition);
    if change.status {
        tracing::warn!(
            target: "pullprobe::condition",
            node, condition, status = "True", reason = %reason, transition,
            detail = %change.message,
            "condition changed"
        );
    } else {
        tracing::info!(
            target: "pullprobe::condition",
            node, condition, status = "False", reason = %reason, transition,
            detail = %change.message,
            "condition changed"
        );
    }
}

/// JSON (or text) log lines: one per check, one per condition change, one per cycle.
pub struct LogExporter;

impl Exporter for LogExporter {
    fn export(&mut self, o: &CycleOutcome) {
        for c in &o.checks {
            probe(&o.node, c);
        }
        for ch in &o.changes {
            condition_change(&o.node, ch);
        }
        cycle(o);
    }
}
