//! The probe engine: walks one image's pull path phase by phase.

pub mod auth;
pub mod blob;
pub mod challenge;
pub mod connect;
pub mod dns;
pub mod guard;
pub mod hints;
pub mod http;
pub mod manifest;
pub mod options;
pub mod outcome;
pub mod platform;
pub mod tls;
pub mod verdict;

pub use outcome::{Failure, Phase, PhaseRecord, ProbeReport, Reason, Verdict};
pub mod engine;
mod flow;

pub use engine::{Depth, Platform, ProbeOptions, ProbeTarget, Prober, Runtime, Timeouts};
