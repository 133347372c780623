//! The node's `NodePullStatus` (`crate::api::nodestatus`): this agent is the only writer
//! of its status and reads only its spec.
//!
//! - The status: each registry's latest path check as the schedule made it ([`build`]),
//!   written by server-side apply at once when a registry's state or fingerprint changes
//!   or an answer is added or expires; when newer path checks are in, at most every half
//!   interval; and at each heartbeat — the Node conditions' cadence ([`Cadence`]: jittered,
//!   never late, backoff honouring `Retry-After`), but never rarer than the interval. The
//!   readers' freshness rule (ISSUE16: a path is fresh while `checkedAt` is within 1.5
//!   intervals, the agent live while `heartbeatTime` is within 2) needs both: so round 1 of
//!   a pre-flight answers from these objects without asking the agent. The object is
//!   created (empty spec) when missing.
//! - The assignments: the controller's `spec.assignments`, watched on this node's object
//!   alone, answered in `status.answers` ([`answers`]).
//!
//! Ownership: the writer task owns everything here; it reads the schedule's
//! [`ProbeShare`] (one short lock per look) and its own watch channel.

pub mod answers;
pub mod build;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use self::answers::{Book, Triage};
use self::build::AgentFacts;
use super::conditions::{Cadence, Clock};
use super::ondemand::{OnDemand, ProbeShare};
use super::schedule::Jitter;
use super::state::AgentState;
use crate::api::{Answer, Assignment};
use crate::k8s::nodestatus as api_calls;

/// How often the writer looks for a due write (changes, heartbeats, answers to expire).
const TICK: Duration = Duration::from_secs(1);
/// The shortest wait between two looks.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// The metrics' `kind` of the writes.
const WRITE_KIND: &str = "node_pull_status";

/// What the writer needs, built once by `mod.rs`.
pub struct WriterParts {
    pub client: kube::Client,
    pub node: String,
    pub share: Arc<ProbeShare>,
    pub ondemand: Arc<OnDemand>,
    pub state: Arc<AgentState>,
    pub clock: Arc<dyn Clock>,
    pub heartbeat: Duration,
}

/// Writes this node's `NodePullStatus` status and answers its assignments.
pub struct Writer {
    p: WriterParts,
    cadence: Cadence,
    book: Book,
    answering: JoinSet<(String, Option<Answer>)>,
    in_progress: HashSet<String>,
    /// What the last successful write said (registries and answers).
    written: Option<Vec<String>>,
    /// The newest path check in the last successful write, and when it was made.
    written_checked: Option<SystemTime>,
    last_write: Option<SystemTime>,
    /// The object is known to exist.
    exists: bool,
}

impl Writer {
    pub fn new(p: WriterParts) -> Writer {
        let jitter = Jitter::from_node(&format!("{}/nodepullstatus", p.node));
        Writer {
            cadence: Cadence::new(p.heartbeat, jitter),
            p,
            book: Book::default(),
            answering: JoinSet::new(),
            in_progress: HashSet::new(),
            written: None,
            written_checked: None,
            last_write: None,
            exists: false,
        }
    }

    /// Answer assignments and write when due, until the task is dropped.
    pub async fn run(mut self, mut assignments: watch::Receiver<Vec<Assignment>>) {
        let mut watching = true;
        loop {
            let list = assignments.borrow_and_update().clone();
            self.take(&list);
            self.sync_once().await;
            // Looks again when the heartbeat or a retry is due, or at the next tick.
            let next = self.cadence.next_in(self.p.clock.now());
            let wait = next.map_or(TICK, |r| r.clamp(MIN_WAIT, TICK));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = assignments.changed(), if watching => watching = changed.is_ok(),
                Some(done) = self.answering.join_next(), if !self.answering.is_empty() => {
                    self.finish(done);
                }
            }
        }
    }

    /// Start answering the assignments not answered yet (or refuse them).
    fn take(&mut self, list: &[Assignment]) {
        let now = self.p.clock.now();
        let ttl = self.p.ondemand.cache_ttl();
        let (max_images, secrets) = (
            self.p.ondemand.max_images(),
            self.p.ondemand.reads_pull_secrets(),
        );
        for a in list.iter().take(answers::MAX_ANSWERS) {
            if self.book.answered(&a.id) || self.in_progress.contains(&a.id) {
                continue;
            }
            match answers::triage(a, now, ttl, max_images, secrets) {
                Triage::Ignore => {}
                Triage::Refuse(why) => {
                    tracing::info!(node = %self.p.node, assignment = %a.id, refused = %why, "assignment refused");
                    self.book.push(answers::refused(a, why, now), now);
                }
                Triage::Check(req) => {
                    self.in_progress.insert(a.id.clone());
                    let (od, clock, a) = (self.p.ondemand.clone(), self.p.clock.clone(), a.clone());
                    self.answering.spawn(async move {
                        let answer = answers::check(&od, &a, &req, clock.as_ref()).await;
                        (a.id, answer)
                    });
                }
            }
        }
    }

    fn finish(&mut self, done: Result<(String, Option<Answer>), tokio::task::JoinError>) {
        match done {
            Ok((id, answer)) => {
                self.in_progress.remove(&id);
                if let Some(a) = answer {
                    tracing::info!(node = %self.p.node, assignment = %id, results = a.results.len(), "assignment answered");
                    self.book.push(a, self.p.clock.now());
                }
            }
            Err(e) => tracing::error!(error = %e, "an assignment's check failed"),
        }
    }

    fn facts(&self) -> AgentFacts {
        let s = &self.p.share;
        AgentFacts {
            runtime: s
                .current()
                .map(|p| p.runtime().as_str().to_string())
                .unwrap_or_default(),
            platform: s.platform.read().map(|p| p.clone()).unwrap_or_default(),
            interval: s.interval.lock().map(|i| *i).unwrap_or_default(),
        }
    }

    /// One write if one is due (creating the object first when needed). True when a
    /// write was made and succeeded.
    pub async fn sync_once(&mut self) -> bool {
        let now = self.p.clock.now();
        self.book.expire(now, self.p.ondemand.cache_ttl());
        let facts = self.facts();
        let interval = facts.interval.max(Duration::from_secs(1));
        self.cadence.set_heartbeat(self.p.heartbeat.min(interval));
        let (registries, newest) = match self.p.share.paths.lock() {
            Ok(paths) => (
                build::registries(&paths, &facts),
                paths.values().map(|p| p.at).max(),
            ),
            Err(_) => return false,
        };
        let answers = self.book.list();
        let digest = build::digest(&registries, &answers);
        if !self
            .cadence
            .due(now, self.dirty(&digest, newest, now, interval))
        {
            return false;
        }
        let status = build::status(registries, answers, &facts, now);
        let r = self.write(&status).await;
        self.p.state.metrics.api_write(WRITE_KIND, r.is_ok());
        match r {
            Ok(()) => {
                self.cadence.succeeded(now);
                self.written = Some(digest);
                self.written_checked = newest;
                self.last_write = Some(now);
                true
            }
            Err(e) => {
                // Deleted meanwhile: create it again before the next write.
                self.exists &= e.status() != Some(404);
                let d = self.cadence.failed(self.p.clock.now(), e.retry_after());
                tracing::warn!(node = %self.p.node, error = %e, retry_in_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "cannot write the NodePullStatus");
                false
            }
        }
    }

    /// Is a write due before the heartbeat ([`changed_or_fresher`])?
    fn dirty(
        &self,
        digest: &[String],
        newest: Option<SystemTime>,
        now: SystemTime,
        interval: Duration,
    ) -> bool {
        let last = Written {
            digest: self.written.as_deref(),
            checked: self.written_checked,
            at: self.last_write,
        };
        changed_or_fresher(&last, digest, newest, now, interval)
    }

    async fn write(
        &mut self,
        status: &crate::api::NodePullStatusStatus,
    ) -> Result<(), crate::k8s::K8sError> {
        if !self.exists {
            api_calls::ensure(&self.p.client, &self.p.node).await?;
            self.exists = true;
        }
        api_calls::apply_status(&self.p.client, &self.p.node, status).await
    }
}

/// What the last successful write carried.
struct Written<'a> {
    digest: Option<&'a [String]>,
    checked: Option<SystemTime>,
    at: Option<SystemTime>,
}

/// A write is due before the heartbeat when what it says changed (at once), or when newer
/// path checks are in and half an interval passed since the last write.
fn changed_or_fresher(
    last: &Written<'_>,
    digest: &[String],
    newest: Option<SystemTime>,
    now: SystemTime,
    interval: Duration,
) -> bool {
    let changed = last.digest != Some(digest);
    let fresher = newest > last.checked
        && last
            .at
            .is_none_or(|w| now.duration_since(w).unwrap_or_default() >= interval / 2);
    changed || fresher
}

impl Writer {
    /// Watch this node's assignments (re-listing within `interval`'s bounded backoff) and
    /// keep its status, forever (cluster mode).
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(api_calls::watch_assignments(
            self.p.client.clone(),
            self.p.node.clone(),
            interval,
            tx,
        ));
        tokio::spawn(self.run(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_follow_changes_at_once_and_fresh_checks_every_half_interval() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = |x: u64| t0 + Duration::from_secs(x);
        let interval = Duration::from_secs(60);
        let digest = vec!["reg.example fp ok".to_string()];
        let last = Written {
            digest: Some(&digest),
            checked: Some(s(0)),
            at: Some(s(1)),
        };
        // Nothing new: no write before the heartbeat.
        assert!(!changed_or_fresher(
            &last,
            &digest,
            Some(s(0)),
            s(50),
            interval
        ));
        // A newer check: written once half an interval passed since the last write.
        assert!(!changed_or_fresher(
            &last,
            &digest,
            Some(s(20)),
            s(30),
            interval
        ));
        assert!(changed_or_fresher(
            &last,
            &digest,
            Some(s(20)),
            s(31),
            interval
        ));
        // A state change: at once.
        let failing = vec!["reg.example fp failing".to_string()];
        assert!(changed_or_fresher(
            &last,
            &failing,
            Some(s(2)),
            s(2),
            interval
        ));
        // Never written: due.
        let never = Written {
            digest: None,
            checked: None,
            at: None,
        };
        assert!(changed_or_fresher(&never, &digest, None, s(0), interval));
    }
}
