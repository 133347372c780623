//! Logs: one line per probe and one per condition change, as JSON (default) or text.
//! Filtering follows `RUST_LOG` (`info` when unset). A probe's or condition's own text goes
//! in `detail`: a field named `message` would replace the event's message in JSON output.

use tracing_subscriber::EnvFilter;

use crate::probe::ProbeReport;

use super::conditions::Change;
use super::config::LogFormat;

/// Install the global subscriber. Does nothing if one is already installed (the binary
/// or a test may have done so).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

/// `dns=0.4 connect=0.2 tls=3.1` (milliseconds), in phase order.
pub fn phase_durations(report: &ProbeReport) -> String {
    report
        .phases
        .iter()
        .map(|p| format!("{}={:.1}", p.name, p.duration_ms))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per probe.
pub fn probe(node: &str, kind: &str, registry: &str, credential: &str, report: &ProbeReport) {
    let verdict = report.verdict.as_str();
    let reason = report.reason.map(|r| r.as_str()).unwrap_or("");
    let endpoint = report.endpoint.as_deref().unwrap_or("");
    let phases = phase_durations(report);
    if report.verdict.pulls() {
        tracing::info!(
            target: "pullprobe::probe",
            node, kind, image = %report.image, registry, endpoint, credential, verdict, reason,
            duration_ms = report.duration_ms, phase_ms = %phases,
            "probe"
        );
    } else {
        tracing::warn!(
            target: "pullprobe::probe",
            node, kind, image = %report.image, registry, endpoint, credential, verdict, reason,
            duration_ms = report.duration_ms, phase_ms = %phases, detail = %report.message,
            "probe"
        );
    }
}

/// One line per condition change.
pub fn condition_change(node: &str, change: &Change) {
    tracing::warn!(
        target: "pullprobe::condition",
        node,
        condition = change.kind.as_str(),
        status = if change.status { "True" } else { "False" },
        reason = %change.reason,
        transition = change.transition,
        detail = %change.message,
        "condition changed"
    );
}
