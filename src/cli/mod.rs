//! Command-line interface: `pullprobe check`, `pullprobe plan`, `pullprobe agent`,
//! `pullprobe preflight`, `pullprobe status` (the last two also as `kubectl pullprobe`).

pub mod args;
pub mod check;
pub mod plan;
pub mod preflight;
pub mod status;

use clap::{Parser, Subcommand};

/// Exit codes shared by the subcommands.
pub mod exit {
    /// Every image would pull.
    pub const READY: i32 = 0;
    /// At least one image would not pull.
    pub const NOT_READY: i32 = 1;
    /// Usage or configuration error (bad flag, bad reference, unreadable config).
    pub const USAGE: i32 = 2;
}

#[derive(Parser, Debug)]
#[command(
    name = "pullprobe",
    version,
    about = "Walks the node's image pull path (DNS → TCP → TLS → auth → manifest → platform → blob) and reports why a pull would fail"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Probe images now and report per-phase readiness.
    Check(Box<check::CheckArgs>),
    /// Show the endpoints, TLS settings, proxy and credential sources the node's runtime
    /// would use for an image, without contacting any registry.
    Plan(Box<plan::PlanArgs>),
    /// Run the per-node agent (DaemonSet): probe on a schedule, report Node conditions,
    /// Events, metrics and JSON logs.
    Agent(Box<crate::agent::AgentArgs>),
    /// Before a rollout: create an ImagePreflight for these images or manifests, wait for
    /// the controller's answer, and print whether each node can pull them now (a node ×
    /// image matrix).
    Preflight(Box<preflight::PreflightArgs>),
    /// The fleet's registry problems from the agents' NodePullStatus objects.
    Status(Box<status::StatusArgs>),
    /// Run the controller (Deployment): answer ImagePreflight objects from the agents'
    /// NodePullStatus objects, guard rollouts, serve the admission webhook.
    Controller(Box<crate::controller::ControllerArgs>),
}

/// The name to show in help: `kubectl pullprobe` when run as the kubectl plugin
/// (`kubectl-pullprobe` on PATH, a symlink to this binary).
pub fn bin_name(argv0: &str) -> &'static str {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    if base.starts_with("kubectl-pullprobe") {
        "kubectl pullprobe"
    } else {
        "pullprobe"
    }
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}
