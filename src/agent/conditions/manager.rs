//! [`ConditionManager`]: hysteresis and write scheduling of our two conditions (the
//! guarantees are listed in the module comment of [`super`]), with an injected clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::summary::{bound_message, registries_in, Failing};
use super::writer::Cadence;
use super::{ConditionKind, ConditionRecord};
use crate::agent::schedule::Jitter;

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
    states: BTreeMap<ConditionKind, State>,
    /// A status or reason changed since the last successful write.
    dirty: bool,
    /// When writes are due (heartbeat) and how failed ones back off.
    cadence: Cadence,
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
            states,
            dirty: true,
            cadence: Cadence::new(heartbeat, jitter),
        }
    }

    /// New thresholds after a config reload; streaks are kept.
    pub fn reconfigure(&mut self, fail_after: u32, recover_after: u32, heartbeat: Duration) {
        self.fail_after = fail_after.max(1);
        self.recover_after = recover_after.max(1);
        self.cadence.set_heartbeat(heartbeat);
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
            self.cadence.heartbeat_from(oldest_heartbeat, now);
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
        self.cadence.due(now, self.dirty).then(|| self.records(now))
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
        self.cadence.succeeded(now);
    }

    /// How long until a retry held back by backoff may go (zero once due); `None` when
    /// no retry is pending.
    pub fn retry_in(&self, now: SystemTime) -> Option<Duration> {
        self.cadence.retry_in(now)
    }

    /// Returns the delay before the next attempt ([`Cadence::failed`]).
    pub fn write_failed(&mut self, now: SystemTime, retry_after: Option<Duration>) -> Duration {
        self.cadence.failed(now, retry_after)
    }
}
