//! [`ConditionManager`]: hysteresis and write scheduling of our two conditions (the
//! guarantees are listed in the module comment of [`super`]), with an injected clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::summary::{bound_message, registries_in, Failing};
use super::{ConditionKind, ConditionRecord};
use crate::agent::schedule::Jitter;

const WRITE_RETRY_INITIAL: Duration = Duration::from_secs(1);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured: a server asking for more gets this (the value comes
/// from outside, so it is bounded like every other).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

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
