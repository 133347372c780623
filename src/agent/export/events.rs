//! Event deduplication (pure). `k8s::events` posts core/v1 Events; this decides when.
//!
//! Node Events are emitted for every condition transition (each one is news). Pod
//! Events for workload problems are keyed by (pod uid, reason, image) and emitted once
//! per `window`; a repeat inside the window is dropped, a repeat after it bumps the
//! same Event's count (the Event name is derived from the key, so the API server keeps
//! one object per problem).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

pub use crate::report::records::{EventRecord, InvolvedObject};

#[derive(Debug)]
struct Seen {
    first: SystemTime,
    last_emitted: SystemTime,
    count: i32,
}

/// Decides which Events to emit.
#[derive(Debug)]
pub struct EventDeduper {
    window: Duration,
    seen: HashMap<String, Seen>,
}

/// Most problems remembered; the oldest are forgotten beyond this (bounded memory).
const MAX_SEEN: usize = 10_000;

impl EventDeduper {
    pub fn new(window: Duration) -> EventDeduper {
        EventDeduper {
            window,
            seen: HashMap::new(),
        }
    }

    /// The Event to post for this problem now, or `None` if it was posted within the window.
    pub fn emit(
        &mut self,
        object: InvolvedObject,
        type_: &'static str,
        reason: &str,
        message: &str,
        dedup_key: &str,
        now: SystemTime,
    ) -> Option<EventRecord> {
        let obj_name = match &object {
            InvolvedObject::Node { name, .. } => name.clone(),
            InvolvedObject::Pod { name, .. } => name.clone(),
        };
        let uid = match &object {
            InvolvedObject::Node { uid, .. } | InvolvedObject::Pod { uid, .. } => uid.clone(),
        };
        let key = format!("{uid}\0{reason}\0{dedup_key}");
        if let Some(s) = self.seen.get_mut(&key) {
            if now.duration_since(s.last_emitted).unwrap_or_default() < self.window {
                return None;
            }
            s.last_emitted = now;
            s.count = s.count.saturating_add(1);
        } else {
            if self.seen.len() >= MAX_SEEN {
                if let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, s)| s.last_emitted)
                    .map(|(k, _)| k.clone())
                {
                    self.seen.remove(&oldest);
                }
            }
            self.seen.insert(
                key.clone(),
                Seen {
                    first: now,
                    last_emitted: now,
                    count: 1,
                },
            );
        }
        let s = self.seen.get(&key)?;
        let digest = Sha256::digest(key.as_bytes());
        Some(EventRecord {
            name: format!("{obj_name}.pullprobe.{}", hex::encode(&digest[..8])),
            object,
            type_,
            reason: reason.to_string(),
            message: crate::agent::conditions::bound_message(message),
            count: s.count,
            first: s.first,
            last: now,
        })
    }

    /// Forget problems of pods that are gone.
    pub fn retain_uids(&mut self, live: &std::collections::HashSet<String>) {
        self.seen
            .retain(|k, _| k.split('\0').next().is_some_and(|u| live.contains(u)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> InvolvedObject {
        InvolvedObject::Pod {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn repeats_inside_window_are_dropped_then_counted() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = EventDeduper::new(Duration::from_secs(3600));
        let e1 = d
            .emit(pod(), "Warning", "ManifestNotFound", "m", "img:1", t0)
            .unwrap();
        assert_eq!(e1.count, 1);
        assert!(d
            .emit(
                pod(),
                "Warning",
                "ManifestNotFound",
                "m",
                "img:1",
                t0 + Duration::from_secs(60)
            )
            .is_none());
        // Another image or reason is another Event.
        let e2 = d
            .emit(pod(), "Warning", "ManifestNotFound", "m", "img:2", t0)
            .unwrap();
        assert_ne!(e1.name, e2.name);
        let e3 = d
            .emit(
                pod(),
                "Warning",
                "ManifestNotFound",
                "m",
                "img:1",
                t0 + Duration::from_secs(3600),
            )
            .unwrap();
        assert_eq!(e3.count, 2);
        assert_eq!(e3.name, e1.name, "same object, count bumped");
        assert_eq!(e3.first, t0);
    }

    #[test]
    fn forgetting_gone_pods() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut d = EventDeduper::new(Duration::from_secs(3600));
        d.emit(pod(), "Warning", "R", "m", "k", t0).unwrap();
        d.retain_uids(&Default::default());
        assert_eq!(
            d.emit(pod(), "Warning", "R", "m", "k", t0).unwrap().count,
            1
        );
    }
}
