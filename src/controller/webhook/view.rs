//! What the webhook reads of the fleet: the candidate nodes of a pod template and each one's
//! `NodePullStatus`, from caches the controller keeps anyway (never a request per review).

use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

use crate::api::NodePullStatus;

/// One node the pods may land on, and what its agent last wrote (None: no object yet).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    pub status: Option<Arc<NodePullStatus>>,
}

/// The candidate nodes of one template.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    pub nodes: Vec<Candidate>,
    /// Nodes in the cache (candidates or not).
    pub fleet: usize,
    /// Why the first excluded node was left out (for "lands on no node").
    pub first_excluded: Option<String>,
}

/// The fleet's cached state, as the webhook needs it.
pub trait FleetView: Send + Sync {
    /// True once the caches hold a full list (before that, nothing is known).
    fn synced(&self) -> bool;
    /// The nodes pods with `spec` (of a DaemonSet when `daemonset`) may land on, with
    /// today's rules ([`crate::preflight::select::can_land`]).
    fn candidates(&self, spec: &PodSpec, daemonset: bool) -> Candidates;
}

impl FleetView for crate::controller::fleet::Fleet {
    fn synced(&self) -> bool {
        // `Fleet::start` returns once both caches have listed.
        true
    }

    fn candidates(&self, spec: &PodSpec, daemonset: bool) -> Candidates {
        let all = crate::api::NodeSelection::default();
        let Ok(c) = crate::controller::fleet::Fleet::candidates(self, spec, daemonset, &all) else {
            return Candidates::default();
        };
        Candidates {
            fleet: c.nodes.len() + c.excluded.len(),
            first_excluded: c.nowhere,
            nodes: c
                .nodes
                .into_iter()
                .map(|node| Candidate {
                    status: self.status(&node),
                    node,
                })
                .collect(),
        }
    }
}
