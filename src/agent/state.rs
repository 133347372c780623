//! What the loop, the exporters and the listeners share: the node's name, the metrics,
//! the `/status` document, liveness (progress stamps) and readiness. One value, built
//! once by `mod.rs` and handed to each part as an `Arc`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::export::status::StatusDoc;
use super::metrics::Metrics;

/// State shared by the loop and the HTTP server.
#[derive(Debug)]
pub struct AgentState {
    pub node: String,
    pub metrics: Metrics,
    /// The `/status` document as of the last cycle.
    pub status: Mutex<StatusDoc>,
    /// When the loop last made progress ([`AgentState::progress`]); the start until then.
    last_progress: Mutex<Instant>,
    /// `/healthz` fails when the loop made no progress within this long ([`liveness_bound`]).
    stale_after: Mutex<Duration>,
    ready: AtomicBool,
}

impl AgentState {
    pub fn new(node: String, interval: Duration) -> AgentState {
        AgentState {
            node: node.clone(),
            metrics: Metrics::new(),
            status: Mutex::new(StatusDoc {
                node: node.clone(),
                ..StatusDoc::default()
            }),
            last_progress: Mutex::new(Instant::now()),
            stale_after: Mutex::new(liveness_bound(interval, probe_deadline())),
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_interval(&self, interval: Duration) {
        if let Ok(mut s) = self.stale_after.lock() {
            *s = liveness_bound(interval, probe_deadline());
        }
    }

    /// The loop made progress: a check finished, a cycle started or ended. Liveness follows
    /// these stamps, not whole cycles, so a cycle made long by a tarpit is not a restart.
    pub fn progress(&self) {
        self.progress_at(Instant::now());
    }

    fn progress_at(&self, now: Instant) {
        if let Ok(mut l) = self.last_progress.lock() {
            *l = (*l).max(now);
        }
    }

    /// A cycle ended: progress, and the agent is ready from the first one on.
    pub fn cycle_done(&self) {
        self.progress();
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Alive: the loop made progress recently (or started recently).
    pub fn healthy(&self) -> bool {
        self.healthy_at(Instant::now())
    }

    fn healthy_at(&self, now: Instant) -> bool {
        let stale = self
            .stale_after
            .lock()
            .map(|s| *s)
            .unwrap_or(Duration::from_secs(300));
        let last = self.last_progress.lock().map(|l| *l).unwrap_or(now);
        now.saturating_duration_since(last) <= stale
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The longest a check may take: the probe's overall deadline (the agent probes with the
/// default timeouts).
fn probe_deadline() -> Duration {
    crate::probe::Timeouts::default().overall
}

/// How long the loop may go without progress before liveness fails: the longest quiet
/// stretch of a working loop is the wait between cycles (`interval` plus at most half of it
/// in jitter) or one check running to its deadline, and a slow start of a cycle (pod list,
/// credential plugins) fits in the second deadline.
pub fn liveness_bound(interval: Duration, probe_deadline: Duration) -> Duration {
    interval
        .saturating_mul(2)
        .saturating_add(probe_deadline.saturating_mul(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_progress_not_whole_cycles() {
        let interval = Duration::from_secs(10);
        let bound = liveness_bound(interval, probe_deadline());
        assert_eq!(bound, Duration::from_secs(80), "2 × 10 s + 2 × 30 s");
        let t0 = Instant::now();
        let s = AgentState::new("n1".into(), interval);
        assert!(s.healthy_at(t0 + bound), "within the bound of the start");
        assert!(!s.healthy_at(t0 + bound + Duration::from_secs(1)));
        // A tarpit makes one cycle last 5 minutes; checks keep finishing (one every 30 s,
        // the probe deadline): alive throughout, though no cycle completed.
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(30);
            s.progress_at(now);
            assert!(s.healthy_at(now + bound), "{:?}", now - t0);
        }
        assert!(!s.ready());
        // A loop that stops making progress fails liveness once the bound passes.
        assert!(!s.healthy_at(now + bound + Duration::from_secs(1)));
        // A stamp from the past never moves the last progress back.
        s.progress_at(t0);
        assert!(s.healthy_at(now + bound));
        // A longer interval widens the bound.
        s.set_interval(Duration::from_secs(60));
        assert!(s.healthy_at(now + Duration::from_secs(180)));
        assert!(!s.healthy_at(now + Duration::from_secs(181)));
    }
}
