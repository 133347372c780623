//! Exporters of a cycle's outcome, node-problem-detector style: every reporter reads the
//! same [`CycleOutcome`] behind one small trait, and none of them decides anything the
//! others would have to agree with. Conditions and Events are in [`super::kube_export`]
//! (the only exporter that talks to the API server); metrics, logs and `/status` here.

use std::sync::Arc;
use std::time::SystemTime;

use super::http::AgentState;
use super::logs;
use super::outcome::CycleOutcome;
use super::status::StatusBook;

/// Something that reports a cycle's outcome.
pub trait Exporter: Send {
    fn export(&mut self, outcome: &CycleOutcome);
}

/// Prometheus metrics.
pub struct MetricsExporter {
    pub state: Arc<AgentState>,
}

impl Exporter for MetricsExporter {
    fn export(&mut self, o: &CycleOutcome) {
        let m = &self.state.metrics;
        let now_unix =
            o.at.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
        // Paths first: the label book then knows which registries are the node's before
        // this cycle's probes claim label slots.
        m.set_scoped_registry_paths(o.paths.iter().map(|p| {
            (
                p.registry.as_str(),
                p.state.reason().map(|r| r.as_str()),
                p.scope.is_node(),
            )
        }));
        for c in &o.checks {
            let (verdict, reason) = c.says();
            let said = super::metrics::Said {
                kind: c.kind.as_str(),
                verdict,
                reason,
            };
            m.record_probe(&c.registry, said, &c.checked.report, now_unix);
        }
        for c in &o.conditions {
            m.set_condition(c.record.kind, c.record.status);
        }
        m.set_targets("image", o.counts.images);
        m.set_targets("path", o.counts.paths);
        m.set_targets("pod", o.counts.pods);
        m.set_targets("deferred", o.counts.deferred);
        m.set_targets("in_flight", o.counts.in_flight);
        m.cycles.inc();
        m.cycle_duration.observe(o.duration.as_secs_f64());
    }
}

/// JSON (or text) log lines: one per check, one per condition change, one per cycle.
pub struct LogExporter;

impl Exporter for LogExporter {
    fn export(&mut self, o: &CycleOutcome) {
        for c in &o.checks {
            logs::probe(&o.node, c);
        }
        for ch in &o.changes {
            logs::condition_change(&o.node, ch);
        }
        logs::cycle(o);
    }
}

/// The `/status` document.
pub struct StatusExporter {
    pub state: Arc<AgentState>,
    pub book: StatusBook,
}

impl Exporter for StatusExporter {
    fn export(&mut self, o: &CycleOutcome) {
        let doc = self.book.update(o);
        if let Ok(mut s) = self.state.status.lock() {
            *s = doc;
        }
        self.state.cycle_done();
    }
}
