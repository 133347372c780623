//! Exporters of a cycle's outcome, node-problem-detector style: every reporter reads the
//! same [`CycleOutcome`] behind one small trait, and none of them decides anything the
//! others would have to agree with: [`metrics`], [`logs`], [`status`] (`/status`) and
//! [`kube`] (Events; with [`events`] deciding when). The Node conditions have their own
//! writer ([`crate::agent::conditions::writer`]).

pub mod events;
pub mod kube;
pub mod logs;
pub mod metrics;
pub mod status;

pub use kube::KubeExporter;
pub use logs::LogExporter;
pub use metrics::MetricsExporter;
pub use status::StatusExporter;

use crate::agent::outcome::CycleOutcome;

/// Something that reports a cycle's outcome.
pub trait Exporter: Send {
    fn export(&mut self, outcome: &CycleOutcome);
}
