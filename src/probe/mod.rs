//! The probe engine: walks one image's pull path phase by phase.

pub mod outcome;
pub mod challenge;

pub use outcome::{Failure, Phase, PhaseRecord, ProbeReport, Reason, Verdict};
pub mod engine;

pub use engine::{Platform, ProbeOptions, ProbeTarget, Prober, RuntimeProfile, Timeouts};
