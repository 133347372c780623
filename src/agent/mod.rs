//! `pullprobe agent`: the per-node DaemonSet agent.
pub mod conditions;
pub mod config;
pub mod events;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod schedule;
pub mod targets;
