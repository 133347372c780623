//! `pullprobe agent`: the per-node DaemonSet agent.
pub mod conditions;
pub mod config;
pub mod schedule;
