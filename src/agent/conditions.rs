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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::probe::{Phase, Reason};
pub use crate::report::records::{ConditionKind, ConditionRecord};

use super::schedule::Jitter;

/// Longest condition message; the rest is cut (with a count of what was left out).
pub const MESSAGE_MAX: usize = 1024;
const WRITE_RETRY_INITIAL: Duration = Duration::from_secs(1);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured: a server asking for more gets this (the value comes
/// from outside, so it is bounded like every other).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

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
fn registries_in(message: &str) -> BTreeSet<String> {
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

/// The time source; tests inject [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Debug)]
pub struct FakeClock(Arc<Mutex<SystemTime>>);

impl FakeClock {
    pub fn new(start: SystemTime) -> FakeClock {
        FakeClock(Arc::new(Mutex::new(start)))
    }
    pub fn advance(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += d;
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.0.lock().map(|t| *t).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[derive(Clone, Debug)]
struct State {
    status: bool,
    reason: String,
    message: String,
    /// The failing registries while True.
    registries: BTreeSet<String>,
    last_transition: SystemTime,
    fail_streak: u32,
    pass_streak: u32,
}

/// What changed in a condition after an observation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub kind: ConditionKind,
    /// True when the status flipped (an Event-worthy transition); false for a reason change.
    pub transition: bool,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Hysteresis and write scheduling for our two conditions. See the module comment.
#[derive(Debug)]
pub struct ConditionManager {
    fail_after: u32,
    recover_after: u32,
    heartbeat: Duration,
    jitter_fraction: f64,
    jitter: Jitter,
    states: BTreeMap<ConditionKind, State>,
    /// A status or reason changed since the last successful write.
    dirty: bool,
    /// When the next heartbeat write is due; `None` = never written (write at first sync).
    next_heartbeat: Option<SystemTime>,
    retry_at: Option<SystemTime>,
    retry_delay: Duration,
}

impl ConditionManager {
    pub fn new(
        fail_after: u32,
        recover_after: u32,
        heartbeat: Duration,
        jitter: Jitter,
        now: SystemTime,
    ) -> ConditionManager {
        let states = ConditionKind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    State {
                        status: false,
                        reason: k.ok_reason().to_string(),
                        message: k.ok_message().to_string(),
                        registries: BTreeSet::new(),
                        last_transition: now,
                        fail_streak: 0,
                        pass_streak: 0,
                    },
                )
            })
            .collect();
        ConditionManager {
            fail_after: fail_after.max(1),
            recover_after: recover_after.max(1),
            heartbeat,
            jitter_fraction: 0.1,
            jitter,
            states,
            dirty: true,
            next_heartbeat: None,
            retry_at: None,
            retry_delay: WRITE_RETRY_INITIAL,
        }
    }

    /// New thresholds after a config reload; streaks are kept.
    pub fn reconfigure(&mut self, fail_after: u32, recover_after: u32, heartbeat: Duration) {
        self.fail_after = fail_after.max(1);
        self.recover_after = recover_after.max(1);
        self.heartbeat = heartbeat;
    }

    /// Start from the conditions already on the Node (after a restart), so a restart
    /// neither flips a True condition nor moves its `lastTransitionTime`. Written
    /// conditions that match are not rewritten before their heartbeat is due.
    pub fn seed(&mut self, existing: &[ConditionRecord], now: SystemTime) {
        let mut found = 0;
        let mut oldest_heartbeat: Option<SystemTime> = None;
        for rec in existing {
            if let Some(s) = self.states.get_mut(&rec.kind) {
                s.status = rec.status;
                s.reason = rec.reason.clone();
                s.message = rec.message.clone();
                s.registries = if rec.status {
                    registries_in(&rec.message)
                } else {
                    BTreeSet::new()
                };
                s.last_transition = rec.last_transition;
                found += 1;
                oldest_heartbeat = Some(match oldest_heartbeat {
                    Some(o) => o.min(rec.last_heartbeat),
                    None => rec.last_heartbeat,
                });
            }
        }
        if found == ConditionKind::ALL.len() {
            self.dirty = false;
            let due = oldest_heartbeat.map(|h| h + self.heartbeat).unwrap_or(now);
            self.next_heartbeat = Some(due.min(now + self.heartbeat));
        }
    }

    /// Record one cycle's verdict for a condition: `failing` when the node has this
    /// problem in this cycle. A write is due on a transition, a reason change, or a
    /// change in the set of failing registries (a second registry breaking while the
    /// first still fails); other message changes wait for the next write.
    pub fn observe(
        &mut self,
        kind: ConditionKind,
        failing: Option<Failing>,
        now: SystemTime,
    ) -> Option<Change> {
        let (fail_after, recover_after) = (self.fail_after, self.recover_after);
        let s = self.states.get_mut(&kind)?;
        let change = match failing {
            Some(f) => {
                s.fail_streak = s.fail_streak.saturating_add(1);
                s.pass_streak = 0;
                let flips = !s.status && s.fail_streak >= fail_after;
                let differs = s.status && (s.reason != f.reason || s.registries != f.registries);
                if flips || s.status {
                    s.reason = f.reason;
                    s.message = bound_message(&f.message);
                    s.registries = f.registries;
                }
                if flips {
                    s.status = true;
                    s.last_transition = now;
                    Some(true)
                } else {
                    differs.then_some(false)
                }
            }
            None => {
                s.pass_streak = s.pass_streak.saturating_add(1);
                s.fail_streak = 0;
                if s.status && s.pass_streak >= recover_after {
                    s.status = false;
                    s.last_transition = now;
                    s.reason = kind.ok_reason().to_string();
                    s.message = kind.ok_message().to_string();
                    s.registries.clear();
                    Some(true)
                } else {
                    None
                }
            }
        };
        change.map(|transition| {
            self.dirty = true;
            Change {
                kind,
                transition,
                status: s.status,
                reason: s.reason.clone(),
                message: s.message.clone(),
            }
        })
    }

    /// Hysteresis progress of a condition: `failing 1/2 cycles` while False, `passing
    /// 0/1 cycles` while True.
    pub fn progress(&self, kind: ConditionKind) -> Option<String> {
        let s = self.states.get(&kind)?;
        Some(if s.status {
            format!("passing {}/{} cycles", s.pass_streak, self.recover_after)
        } else {
            format!("failing {}/{} cycles", s.fail_streak, self.fail_after)
        })
    }

    pub fn status(&self, kind: ConditionKind) -> bool {
        self.states.get(&kind).is_some_and(|s| s.status)
    }

    /// The records to write now, if a write is due (change, first write, heartbeat), and
    /// not held back by a retry backoff.
    pub fn pending_write(&self, now: SystemTime) -> Option<Vec<ConditionRecord>> {
        if self.retry_at.is_some_and(|r| now < r) {
            return None;
        }
        let heartbeat_due = self.next_heartbeat.is_none_or(|h| now >= h);
        if !(self.dirty || heartbeat_due) {
            return None;
        }
        Some(self.records(now))
    }

    /// The current conditions, stamped with `now` as heartbeat.
    pub fn records(&self, now: SystemTime) -> Vec<ConditionRecord> {
        self.states
            .iter()
            .map(|(k, s)| ConditionRecord {
                kind: *k,
                status: s.status,
                reason: s.reason.clone(),
                message: s.message.clone(),
                last_transition: s.last_transition,
                last_heartbeat: now,
            })
            .collect()
    }

    pub fn write_succeeded(&mut self, now: SystemTime) {
        self.dirty = false;
        self.retry_at = None;
        self.retry_delay = WRITE_RETRY_INITIAL;
        self.next_heartbeat = Some(now + self.jitter.below(self.heartbeat, self.jitter_fraction));
    }

    /// How long until a retry held back by backoff may go (zero once due); `None` when
    /// no retry is pending.
    pub fn retry_in(&self, now: SystemTime) -> Option<Duration> {
        self.retry_at
            .map(|r| r.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Returns the delay before the next attempt: the backoff step with jitter, or the
    /// server's `retry_after` (bounded, jittered) when that is longer.
    pub fn write_failed(&mut self, now: SystemTime, retry_after: Option<Duration>) -> Duration {
        let step = self.retry_delay;
        let backoff = self.jitter.below(step, 0.5);
        let server = retry_after.map(|r| {
            let r = r.min(RETRY_AFTER_MAX);
            r.mul_f64(1.0 + 0.25 * self.jitter.next_unit())
        });
        let d = server.map_or(backoff, |s| s.max(backoff));
        self.retry_at = Some(now.checked_add(d).unwrap_or(now));
        // Never wait longer than a heartbeat: the Node's view should not get staler after
        // an outage than the heartbeat lets it get in steady state.
        self.retry_delay = step
            .saturating_mul(2)
            .min(WRITE_RETRY_MAX)
            .min(self.heartbeat.max(WRITE_RETRY_INITIAL));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    struct Sim {
        clock: FakeClock,
        m: ConditionManager,
        writes: Vec<Vec<ConditionRecord>>,
        api_up: bool,
        attempts: u32,
    }

    impl Sim {
        fn new(fail_after: u32, recover_after: u32) -> Sim {
            let clock = FakeClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            let m = ConditionManager::new(
                fail_after,
                recover_after,
                5 * MIN,
                Jitter::new(1),
                clock.now(),
            );
            Sim {
                clock,
                m,
                writes: Vec::new(),
                api_up: true,
                attempts: 0,
            }
        }
        /// One cycle: observe, then sync once per second for a minute (the sync loop's tick).
        fn cycle(&mut self, unreachable: Option<&str>) -> Option<Change> {
            let now = self.clock.now();
            let c = self.m.observe(
                ConditionKind::RegistryUnreachable,
                unreachable.map(|r| Failing {
                    reason: r.to_string(),
                    message: format!("registry.example: {r} at https://registry.example/v2/"),
                    registries: ["registry.example".to_string()].into(),
                }),
                now,
            );
            self.m
                .observe(ConditionKind::RegistryAuthFailing, None, now);
            for _ in 0..60 {
                let now = self.clock.now();
                if let Some(recs) = self.m.pending_write(now) {
                    self.attempts += 1;
                    if self.api_up {
                        self.writes.push(recs);
                        self.m.write_succeeded(now);
                    } else {
                        self.m.write_failed(now, None);
                    }
                }
                self.clock.advance(Duration::from_secs(1));
            }
            c
        }
        fn unreachable(&self) -> bool {
            self.m.status(ConditionKind::RegistryUnreachable)
        }
    }

    #[test]
    fn first_sync_writes_once_then_nothing_until_heartbeat() {
        let mut s = Sim::new(2, 1);
        s.cycle(None);
        assert_eq!(s.writes.len(), 1, "initial write");
        // Three more healthy minutes: nothing changed, heartbeat not due (≥ 4.5 min).
        for _ in 0..3 {
            s.cycle(None);
        }
        assert_eq!(s.writes.len(), 1, "no write when nothing changed");
        // Over an hour of healthy cycles: one heartbeat per 4.5–5 minutes.
        for _ in 0..61 {
            s.cycle(None);
        }
        let n = s.writes.len();
        assert!((13..=15).contains(&n), "{n} writes in 65 minutes");
        // Heartbeats never late.
        for w in s.writes.windows(2) {
            let gap = w[1][0]
                .last_heartbeat
                .duration_since(w[0][0].last_heartbeat)
                .unwrap();
            assert!(gap <= 5 * MIN && gap >= Duration::from_secs(270), "{gap:?}");
        }
    }

    #[test]
    fn hysteresis_one_write_per_transition() {
        let mut s = Sim::new(2, 1);
        s.cycle(None);
        let base = s.writes.len();
        // A blip: one failing cycle does not flip and does not write.
        assert_eq!(s.cycle(Some("ConnectTimeout")), None);
        assert!(!s.unreachable());
        s.cycle(None);
        assert_eq!(s.writes.len(), base);
        // Two consecutive failures flip it: exactly one write.
        assert_eq!(s.cycle(Some("ConnectTimeout")), None);
        let c = s.cycle(Some("ConnectTimeout")).expect("transition");
        assert!(c.transition && c.status);
        assert!(s.unreachable());
        assert_eq!(s.writes.len(), base + 1);
        let w = s.writes.last().unwrap();
        let rec = w
            .iter()
            .find(|r| r.kind == ConditionKind::RegistryUnreachable)
            .unwrap();
        assert!(rec.status);
        assert_eq!(rec.reason, "ConnectTimeout");
        let flipped_at = rec.last_transition;
        // Still failing, same reason: no write.
        s.cycle(Some("ConnectTimeout"));
        assert_eq!(s.writes.len(), base + 1);
        // Reason changes: one write, lastTransitionTime unchanged.
        let c = s.cycle(Some("TLSUnknownAuthority")).expect("reason change");
        assert!(!c.transition);
        assert_eq!(s.writes.len(), base + 2);
        let rec = s
            .writes
            .last()
            .unwrap()
            .iter()
            .find(|r| r.kind == ConditionKind::RegistryUnreachable)
            .unwrap()
            .clone();
        assert_eq!(rec.reason, "TLSUnknownAuthority");
        assert_eq!(rec.last_transition, flipped_at);
        // One pass recovers (recover_after = 1): one write.
        let c = s.cycle(None).expect("recovery");
        assert!(c.transition && !c.status);
        assert_eq!(s.writes.len(), base + 3);
        let rec = s
            .writes
            .last()
            .unwrap()
            .iter()
            .find(|r| r.kind == ConditionKind::RegistryUnreachable)
            .unwrap()
            .clone();
        assert!(!rec.status);
        assert_eq!(rec.reason, "RegistriesReachable");
        assert!(rec.last_transition > flipped_at);
        // The other condition never moved.
        let auth = s
            .writes
            .last()
            .unwrap()
            .iter()
            .find(|r| r.kind == ConditionKind::RegistryAuthFailing)
            .unwrap()
            .clone();
        assert!(!auth.status);
        assert_eq!(auth.last_transition, s.writes[0][0].last_transition);
    }

    #[test]
    fn recover_after_needs_consecutive_passes() {
        let mut s = Sim::new(1, 3);
        s.cycle(Some("DNSFailure"));
        assert!(s.unreachable());
        s.cycle(None);
        s.cycle(None);
        s.cycle(Some("DNSFailure"));
        s.cycle(None);
        s.cycle(None);
        assert!(s.unreachable());
        s.cycle(None);
        assert!(!s.unreachable());
    }

    #[test]
    fn failed_writes_retry_with_backoff_and_are_not_lost() {
        let mut s = Sim::new(1, 1);
        s.cycle(None);
        assert_eq!(s.writes.len(), 1);
        s.api_up = false;
        s.attempts = 0;
        s.cycle(Some("ConnectRefused"));
        s.cycle(Some("ConnectRefused"));
        // Backoff 1,2,4,8,16,32,60… (each wait ½–1× of that) over two minutes: a handful
        // of attempts, not 120.
        assert!(
            s.attempts >= 5 && s.attempts <= 10,
            "{} attempts",
            s.attempts
        );
        assert_eq!(s.writes.len(), 1);
        s.api_up = true;
        for _ in 0..2 {
            s.cycle(Some("ConnectRefused"));
        }
        assert_eq!(s.writes.len(), 2, "exactly one write once the API is back");
        assert!(s.writes[1]
            .iter()
            .any(|r| r.kind == ConditionKind::RegistryUnreachable && r.status));
    }

    #[test]
    fn seeded_state_survives_restart_without_write() {
        let mut s = Sim::new(2, 1);
        let now = s.clock.now();
        let t0 = now - Duration::from_secs(3600);
        let existing = vec![
            ConditionRecord {
                kind: ConditionKind::RegistryUnreachable,
                status: true,
                reason: "DNSFailure".into(),
                message: "registry.example: DNSFailure at https://registry.example/v2/".into(),
                last_transition: t0,
                last_heartbeat: now - MIN,
            },
            ConditionRecord {
                kind: ConditionKind::RegistryAuthFailing,
                status: false,
                reason: "RegistryCredentialsAccepted".into(),
                message: "y".into(),
                last_transition: t0,
                last_heartbeat: now - MIN,
            },
        ];
        s.m.seed(&existing, now);
        assert!(s.unreachable());
        s.cycle(Some("DNSFailure"));
        s.cycle(Some("DNSFailure"));
        assert!(
            s.writes.is_empty(),
            "nothing changed: no write before the heartbeat"
        );
        s.cycle(Some("DNSFailure"));
        s.cycle(Some("DNSFailure"));
        s.cycle(Some("DNSFailure"));
        assert_eq!(s.writes.len(), 1, "heartbeat at seeded lastHeartbeat + 5m");
        let rec = &s.writes[0][0];
        assert_eq!(rec.last_transition, t0);
    }

    #[test]
    fn message_is_bounded_on_char_boundary() {
        let long = "é".repeat(2000);
        let m = bound_message(&long);
        assert!(m.len() <= MESSAGE_MAX);
        assert!(m.ends_with("more bytes)"));
    }

    #[test]
    fn summarize_is_stable_and_bounded() {
        let p = |r: &str, reason: &'static str| Problem {
            registry: r.into(),
            endpoint: format!("https://{r}/v2/"),
            reason,
            credential: None,
        };
        let f = summarize(vec![
            p("b.example", "ConnectTimeout"),
            p("a.example", "DNSFailure"),
            p("a.example", "DNSFailure"),
        ])
        .unwrap();
        assert_eq!(f.reason, "DNSFailure");
        assert_eq!(
            f.message,
            "a.example: DNSFailure at https://a.example/v2/; b.example: ConnectTimeout at https://b.example/v2/"
        );
        assert_eq!(f.registries.len(), 2);
        let many: Vec<Problem> = (0..500)
            .map(|i| p(&format!("r{i:03}.example"), "ConnectRefused"))
            .collect();
        let f = summarize(many).unwrap();
        assert!(f.message.len() <= MESSAGE_MAX);
        assert!(summarize(vec![]).is_none());
    }

    #[test]
    fn a_second_failing_registry_is_written_at_once() {
        let mut s = Sim::new(1, 1);
        s.cycle(None);
        let failing = |regs: &[&str]| {
            summarize(
                regs.iter()
                    .map(|r| Problem {
                        registry: r.to_string(),
                        endpoint: format!("https://{r}/v2"),
                        reason: "ConnectRefused",
                        credential: None,
                    })
                    .collect(),
            )
        };
        let now = s.clock.now();
        let c = s.m.observe(
            ConditionKind::RegistryUnreachable,
            failing(&["a.example"]),
            now,
        );
        assert!(c.is_some_and(|c| c.transition));
        assert!(s.m.pending_write(now).is_some());
        s.m.write_succeeded(now);
        // Same reason, same registry, new text: waits for the heartbeat.
        let mut again = failing(&["a.example"]).unwrap();
        again.message.push_str(" (2 ms later)");
        assert!(s
            .m
            .observe(ConditionKind::RegistryUnreachable, Some(again), now)
            .is_none());
        assert!(s.m.pending_write(now).is_none());
        // A second registry breaks with the same reason: one write now.
        let c = s.m.observe(
            ConditionKind::RegistryUnreachable,
            failing(&["a.example", "b.example"]),
            now,
        );
        assert!(c.is_some_and(|c| !c.transition && c.message.contains("b.example")));
        let recs = s.m.pending_write(now).expect("a write is due");
        assert!(recs
            .iter()
            .any(|r| r.message.contains("b.example: ConnectRefused")));
        assert_eq!(
            s.m.progress(ConditionKind::RegistryUnreachable).as_deref(),
            Some("passing 0/1 cycles")
        );
    }

    /// The waits of `n` consecutive failed writes of a manager seeded with `seed`.
    fn retry_waits(seed: u64, n: usize, retry_after: Option<Duration>) -> Vec<Duration> {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut m = ConditionManager::new(1, 1, 5 * MIN, Jitter::new(seed), t);
        (0..n).map(|_| m.write_failed(t, retry_after)).collect()
    }

    #[test]
    fn write_retries_are_jittered_within_half_to_full_backoff() {
        let steps = [1u64, 2, 4, 8, 16, 32, 60, 60];
        let a = retry_waits(1, steps.len(), None);
        let b = retry_waits(2, steps.len(), None);
        for (i, step) in steps.iter().enumerate() {
            let step = Duration::from_secs(*step);
            for w in [a[i], b[i]] {
                assert!(
                    w >= step / 2 && w <= step,
                    "wait {i}: {w:?} for a {step:?} step"
                );
            }
        }
        // Two nodes that failed together retry at different times.
        assert_ne!(a, b, "jitter must spread retries");
    }

    #[test]
    fn retry_after_is_honoured_bounded_and_jittered() {
        // The server asks for 7 s: every wait is 7 s plus at most a quarter, until the
        // backoff itself grows past it.
        let w = retry_waits(3, 3, Some(Duration::from_secs(7)));
        for d in &w {
            assert!(
                *d >= Duration::from_secs(7) && d.as_secs_f64() <= 8.75,
                "{d:?}"
            );
        }
        // A shorter Retry-After than the backoff step does not shorten the backoff.
        let w = retry_waits(3, 8, Some(Duration::from_millis(10)));
        assert!(w[7] >= Duration::from_secs(30), "{w:?}");
        // A huge one is capped (and nothing overflows).
        let w = retry_waits(4, 2, Some(Duration::MAX));
        for d in &w {
            assert!(
                *d >= RETRY_AFTER_MAX && d.as_secs_f64() <= RETRY_AFTER_MAX.as_secs_f64() * 1.25
            );
        }
    }

    /// Issue 17: the condition names the node credential a registry rejected, as `/status`
    /// does (its source, never its value).
    #[test]
    fn summarize_names_the_rejected_credential() {
        let f = summarize(vec![Problem {
            registry: "reg.example".into(),
            endpoint: "https://reg.example/v2".into(),
            reason: "AuthCredentialsRejected",
            credential: Some("auth-file:/var/lib/kubelet/config.json#reg.example".into()),
        }])
        .unwrap();
        assert_eq!(
            f.message,
            "reg.example: AuthCredentialsRejected at https://reg.example/v2 with auth-file:/var/lib/kubelet/config.json#reg.example"
        );
        assert_eq!(
            registries_in(&f.message),
            ["reg.example".to_string()].into()
        );
    }

    #[test]
    fn condition_reason_collapses_dns() {
        assert_eq!(condition_reason(Reason::DNSTimeout), "DNSFailure");
        assert_eq!(condition_reason(Reason::DNSNameNotFound), "DNSFailure");
        assert_eq!(condition_reason(Reason::ConnectTimeout), "ConnectTimeout");
        assert_eq!(
            condition_reason(Reason::TLSUnknownAuthority),
            "TLSUnknownAuthority"
        );
    }
}
