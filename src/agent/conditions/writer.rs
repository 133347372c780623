//! The condition writer: its own task, so an API server outage delays writes (retried
//! with the manager's backoff, `Retry-After` honoured) but never probing or local
//! reporting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Clock, ConditionManager};
use crate::agent::schedule::Jitter;
use crate::agent::state::AgentState;

const WRITE_RETRY_INITIAL: Duration = Duration::from_secs(1);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured: a server asking for more gets this (the value comes
/// from outside, so it is bounded like every other).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// When an agent's API writes are due, for the Node conditions and the NodePullStatus
/// alike: at the first chance, on change, and at each heartbeat (jittered, never late);
/// a failed write is retried with jittered backoff (1 s doubling to 60 s, never longer
/// than the heartbeat; each wait drawn from [½, 1] of that, so a fleet that lost the API
/// server together does not come back in step), a server's `Retry-After` honoured
/// (capped at [`RETRY_AFTER_MAX`], plus up to a quarter of it as jitter) when longer.
#[derive(Debug)]
pub struct Cadence {
    heartbeat: Duration,
    jitter_fraction: f64,
    jitter: Jitter,
    /// When the next heartbeat write is due; `None` = never written (write at first sync).
    next_heartbeat: Option<SystemTime>,
    retry_at: Option<SystemTime>,
    retry_delay: Duration,
}

impl Cadence {
    pub fn new(heartbeat: Duration, jitter: Jitter) -> Cadence {
        Cadence {
            heartbeat,
            jitter_fraction: 0.1,
            jitter,
            next_heartbeat: None,
            retry_at: None,
            retry_delay: WRITE_RETRY_INITIAL,
        }
    }

    pub fn set_heartbeat(&mut self, heartbeat: Duration) {
        self.heartbeat = heartbeat;
    }

    /// The next heartbeat one heartbeat after `last` (the oldest written), never later
    /// than one heartbeat from `now`; at once when nothing was written.
    pub fn heartbeat_from(&mut self, last: Option<SystemTime>, now: SystemTime) {
        let due = last.map(|h| h + self.heartbeat).unwrap_or(now);
        self.next_heartbeat = Some(due.min(now + self.heartbeat));
    }

    /// Is a write due now: `dirty` or a heartbeat, and no retry backoff holding it?
    pub fn due(&self, now: SystemTime, dirty: bool) -> bool {
        if self.retry_at.is_some_and(|r| now < r) {
            return false;
        }
        dirty || self.next_heartbeat.is_none_or(|h| now >= h)
    }

    pub fn succeeded(&mut self, now: SystemTime) {
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

    /// How long until the next write may be due by itself: the pending retry, else the
    /// heartbeat (zero when already due); `None` before the first write.
    pub fn next_in(&self, now: SystemTime) -> Option<Duration> {
        self.retry_at
            .or(self.next_heartbeat)
            .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Returns the delay before the next attempt: the backoff step with jitter, or the
    /// server's `retry_after` (bounded, jittered) when that is longer.
    pub fn failed(&mut self, now: SystemTime, retry_after: Option<Duration>) -> Duration {
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

/// How often the writer looks for a due write (changes, heartbeats).
const SYNC_TICK: Duration = Duration::from_secs(1);
/// The shortest wait between two looks (no busy loop, whatever the clock says).
const SYNC_MIN_WAIT: Duration = Duration::from_millis(50);

/// The longest one condition write may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a condition write failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(crate::k8s::K8sError),
    #[error("no answer from the API server within {}s", WRITE_TIMEOUT.as_secs())]
    Timeout,
}

/// Write conditions when due, forever (cluster mode), looking every [`SYNC_TICK`] or when
/// a retry's backoff ends.
pub async fn sync_conditions(
    client: kube::Client,
    node: String,
    manager: Arc<Mutex<ConditionManager>>,
    clock: Arc<dyn Clock>,
    state: Arc<AgentState>,
) {
    loop {
        sync_once(&client, &node, &manager, clock.as_ref(), &state).await;
        // A retry goes when its jittered backoff says, not on the next whole tick (which
        // would round every node's wait up to the same second and undo the jitter).
        let retry = manager.lock().ok().and_then(|m| m.retry_in(clock.now()));
        let wait = retry.map_or(SYNC_TICK, |r| r.clamp(SYNC_MIN_WAIT, SYNC_TICK));
        tokio::time::sleep(wait).await;
    }
}

/// One write attempt if one is due. Returns true if a write was made and succeeded.
pub async fn sync_once(
    client: &kube::Client,
    node: &str,
    manager: &Mutex<ConditionManager>,
    clock: &dyn Clock,
    state: &AgentState,
) -> bool {
    let now = clock.now();
    let pending = manager.lock().ok().and_then(|m| m.pending_write(now));
    let Some(records) = pending else { return false };
    // Bounded: a hung API server must not hold the writer for kube's 295 s read timeout.
    let r = match tokio::time::timeout(
        WRITE_TIMEOUT,
        crate::k8s::node::patch_conditions(client, node, &records),
    )
    .await
    {
        Ok(r) => r.map_err(WriteError::Api),
        Err(_) => Err(WriteError::Timeout),
    };
    state.metrics.api_write("node_status", r.is_ok());
    let Ok(mut m) = manager.lock() else {
        return false;
    };
    match r {
        Ok(()) => {
            m.write_succeeded(now);
            true
        }
        Err(e) => {
            let retry_after = match &e {
                WriteError::Api(e) => e.retry_after(),
                WriteError::Timeout => None,
            };
            // From when it failed, not when it started: a write that took the whole
            // timeout still waits its backoff before the next one.
            let d = m.write_failed(clock.now(), retry_after);
            tracing::warn!(
                node,
                error = %e,
                retry_in_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                retry_after_s = retry_after.map(|r| r.as_secs()),
                "cannot write node conditions"
            );
            false
        }
    }
}
