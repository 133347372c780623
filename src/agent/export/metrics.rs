//! The metrics exporter: a cycle's outcome into the agent's Prometheus registry
//! ([`crate::agent::metrics`]).

use std::sync::Arc;
use std::time::SystemTime;

use super::Exporter;
use crate::agent::outcome::CycleOutcome;
use crate::agent::state::AgentState;

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
            let said = crate::agent::metrics::Said {
                kind: c.target.kind.as_str(),
                verdict,
                reason,
            };
            m.record_probe(&c.target.registry, said, &c.checked.report, now_unix);
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
