//! A condition's failing state from the registries that fail: the reason of the first in
//! name order (stable from cycle to cycle) and a bounded message naming each once.

use std::collections::BTreeSet;

use crate::probe::{Phase, Reason};

/// Longest condition message; the rest is cut (with a count of what was left out).
pub const MESSAGE_MAX: usize = 1024;

/// The condition reason for a failing probe reason: DNS problems share one reason
/// (`DNSFailure`) so a resolver switching between SERVFAIL and timeouts does not cause a
/// write per cycle; the others keep the probe's stable reason (`ConnectTimeout`, …).
pub fn condition_reason(reason: Reason) -> &'static str {
    if reason.phase() == Phase::Dns {
        "DNSFailure"
    } else {
        reason.as_str()
    }
}

/// One failing registry seen in a cycle, for the condition message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The registry as written in image references (`docker.io`, `reg.example:5000`).
    pub registry: String,
    /// The endpoint whose failure the runtime reports (URL without userinfo or query).
    pub endpoint: String,
    pub reason: &'static str,
    /// The node credential the registry rejected (its source's name, never its value), for
    /// `RegistryAuthFailing`: the operator must know which file or plugin to fix.
    pub credential: Option<String>,
}

/// A condition's failing state in one cycle: its reason, message and which registries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    pub reason: String,
    pub message: String,
    /// The failing registries: a change in this set is worth a write.
    pub registries: BTreeSet<String>,
}

/// The condition reason and bounded message for a set of problems: the reason of the
/// first registry in name order (stable from cycle to cycle), each registry once in the
/// message (`reg.example: TLSUnknownAuthority at https://reg.example/v2`, and the credential
/// when one was rejected: `… at https://reg.example/v2 with auth-file:/var/lib/kubelet/config.json#reg.example`).
pub fn summarize(mut problems: Vec<Problem>) -> Option<Failing> {
    problems.sort();
    problems.dedup_by(|a, b| {
        a.registry == b.registry && a.reason == b.reason && a.endpoint == b.endpoint
    });
    let first = problems.first()?.reason.to_string();
    let parts: Vec<String> = problems
        .iter()
        .map(|p| match &p.credential {
            Some(c) => format!("{}: {} at {} with {c}", p.registry, p.reason, p.endpoint),
            None => format!("{}: {} at {}", p.registry, p.reason, p.endpoint),
        })
        .collect();
    Some(Failing {
        reason: first,
        message: bound_message(&parts.join("; ")),
        registries: problems.into_iter().map(|p| p.registry).collect(),
    })
}

/// The registries named in a message [`summarize`] wrote (`a: R at e; b: R at e`), so a
/// restarted agent knows which registries its seeded condition is about.
pub(super) fn registries_in(message: &str) -> BTreeSet<String> {
    message
        .split("; ")
        .filter_map(|part| part.split_once(": ").map(|(r, _)| r.to_string()))
        .collect()
}

/// Cut a message to [`MESSAGE_MAX`] bytes on a character boundary.
pub fn bound_message(m: &str) -> String {
    if m.len() <= MESSAGE_MAX {
        return m.to_string();
    }
    let suffix = format!(" … ({} more bytes)", m.len() - MESSAGE_MAX);
    let mut cut = MESSAGE_MAX - suffix.len();
    while !m.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &m[..cut], suffix)
}
