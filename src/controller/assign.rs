//! Writing the controller's assignments into `NodePullStatus.spec.assignments`.
//!
//! Only the leader writes that list, and within the leader every write to one node's
//! list goes through that node's lock, against the leader's own copy of the list (seeded
//! from the cache the first time the node is touched): the watch may lag the leader's own
//! writes, so two pre-flights writing one node back to back never drop each other's
//! assignment. Each write is one merge patch of the whole list, retried on conflicts and
//! on the server shedding load. Assignments left behind by a previous leader are dropped
//! once older than [`ORPHAN_AFTER`]; the list never exceeds the schema's 64 (oldest out).
//!
//! An answered assignment costs no write of its own: [`Assigner::forget`] drops it from
//! the leader's copy, and the next write to that node (the next pre-flight asking it)
//! leaves it out. Left in the object meanwhile, it is harmless: the agent answered it
//! already and ignores it once older than its pre-flight cache TTL. So a pre-flight
//! writes one patch per node it asks, not two (issue 16's goal: writes ≤ fingerprints +
//! nodes needing a fresh path answer + a small constant).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::api::{Api, Patch, PatchParams};

use super::fleet::{self, Fleet};
use crate::api::{Assignment, NodePullStatus};
use crate::k8s::K8sError;

/// The field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "pullprobe-controller";
/// Assignments (of any leader) older than this are dropped at the next write.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(600);
/// The schema's bound on `spec.assignments`.
const MAX_ASSIGNMENTS: usize = 64;

type NodeList = Arc<tokio::sync::Mutex<Option<Vec<Assignment>>>>;

/// The leader's copy of every touched node's assignments.
pub struct Assigner {
    api: Api<NodePullStatus>,
    fleet: Fleet,
    lists: Mutex<HashMap<String, NodeList>>,
}

impl Assigner {
    pub fn new(client: kube::Client, fleet: Fleet) -> Assigner {
        Assigner {
            api: Api::all(client),
            fleet,
            lists: Mutex::new(HashMap::new()),
        }
    }

    fn list(&self, node: &str) -> NodeList {
        let mut m = match self.lists.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(node.to_string()).or_default().clone()
    }

    /// Adds `a` to `node`'s list.
    pub async fn add(&self, node: &str, a: Assignment) -> Result<(), K8sError> {
        self.edit(node, |list| list.push(a)).await
    }

    /// Drops the assignments with these ids from the leader's copy of `node`'s list
    /// without writing: the next write to the node leaves them out.
    pub async fn forget(&self, node: &str, ids: &[String]) {
        let lock = self.list(node);
        let mut guard = lock.lock().await;
        let mut list = self.current(node, guard.as_ref());
        list.retain(|a| !ids.contains(&a.id));
        *guard = Some(list);
    }

    /// The leader's copy, seeded from the cache the first time.
    fn current(&self, node: &str, copy: Option<&Vec<Assignment>>) -> Vec<Assignment> {
        match copy {
            Some(l) => l.clone(),
            None => self
                .fleet
                .status(node)
                .map(|n| n.spec.assignments.clone())
                .unwrap_or_default(),
        }
    }

    async fn edit(&self, node: &str, f: impl FnOnce(&mut Vec<Assignment>)) -> Result<(), K8sError> {
        let lock = self.list(node);
        let mut guard = lock.lock().await;
        let mut list = self.current(node, guard.as_ref());
        // What the object holds (the leader's copy may have forgotten answered ones since).
        let before = self
            .fleet
            .status(node)
            .map(|n| n.spec.assignments.clone())
            .unwrap_or_default();
        f(&mut list);
        let now = SystemTime::now();
        list.retain(|a| {
            fleet::parse_time(&a.issued_at).is_some_and(|t| {
                now.duration_since(t)
                    .map(|d| d < ORPHAN_AFTER)
                    .unwrap_or(true)
            })
        });
        if list.len() > MAX_ASSIGNMENTS {
            let extra = list.len() - MAX_ASSIGNMENTS;
            list.drain(..extra);
        }
        if list != before {
            self.patch(node, &list).await?;
        }
        *guard = Some(list);
        Ok(())
    }

    async fn patch(&self, node: &str, list: &[Assignment]) -> Result<(), K8sError> {
        let body = serde_json::json!({"spec": {"assignments": list}});
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let mut delay = Duration::from_millis(100);
        for attempt in 0..5 {
            match self.api.patch(node, &pp, &Patch::Merge(&body)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s))
                    if attempt < 4 && matches!(s.code, 409 | 429 | 500 | 503 | 504) =>
                {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    return Err(K8sError::Api {
                        op: "patch nodepullstatus assignments",
                        source: e,
                    })
                }
            }
        }
        Err(K8sError::Timeout("patch nodepullstatus assignments"))
    }
}
