//! `pullprobe agent`: the per-node DaemonSet agent.
pub mod config;
