//! pullprobe: walks the node runtime's image pull path and reports, per phase, why a
//! pull would fail.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod credentials;
pub mod endpoint;
pub mod goduration;
pub mod hostroot;
pub mod k8s;
pub mod nodeconfig;
pub mod pipeline;
pub mod preflight;
pub mod probe;
pub mod problem;
pub mod redact;
pub mod reference;
pub mod report;
pub mod runtime;
pub mod text;
