//! Node conditions, node-problem-detector style: `True` means a problem.
//!
//! [`ConditionManager`] is pure logic (no Kubernetes types, injected clock); `k8s::node`
//! does the PATCH. Guarantees, in the manner of NPD's `condition/manager.go`:
//! 1. Hysteresis: a condition turns True only after `fail_after` consecutive failing
//!    cycles and back after `recover_after` passing ones, so a blip does not flip a fleet.
//! 2. The API server is not flooded: a write is due only when a status or reason changed,
//!    or when the heartbeat (with jitter, never late) comes round. A message change alone
//!    waits for the next write.
//! 3. `lastTransitionTime` moves only when the status changes.
//! 4. A failed write is retried with jittered backoff (1 s doubling to 60 s, never longer
//!    than the heartbeat; each wait drawn from [½, 1] of that, so a fleet that lost the
//!    API server together does not come back in step) and never lost: the state stays
//!    dirty until a write succeeds; probing goes on meanwhile. A `Retry-After` from the
//!    server is honoured (capped at [`RETRY_AFTER_MAX`], plus up to a quarter of it as
//!    jitter) when it asks for longer than the backoff.
//! 5. Only our two condition types are ever written (the PATCH lists only them).
//!
//! The run loop owns the manager behind one mutex; nothing else holds it.
//!
//! Three parts: [`summary`] (failing registries → a condition's reason and bounded
//! message), [`manager`] (hysteresis and write scheduling, pure logic) and [`writer`] (the
//! task that PATCHes the Node when the manager says a write is due).

pub mod manager;
pub mod summary;
pub mod writer;

pub use crate::report::records::{ConditionKind, ConditionRecord};
pub use manager::{Change, Clock, ConditionManager, FakeClock, SystemClock};
pub use summary::{bound_message, condition_reason, summarize, Failing, Problem, MESSAGE_MAX};
pub use writer::{Cadence, RETRY_AFTER_MAX};

#[cfg(test)]
mod tests;
