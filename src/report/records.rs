//! Plain records the agent's exporters produce and the Kubernetes client writes: Node
//! conditions, Events, the parts of a Pod the agent reads. No Kubernetes types (like
//! node-problem-detector's `types` package), so `agent` and `k8s` both depend on this
//! module and not on each other.

use std::time::SystemTime;

use serde::Serialize;

/// The two conditions pullprobe owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ConditionKind {
    /// The node cannot reach a registry in use over its pull path.
    RegistryUnreachable,
    /// Node-level credentials are rejected, expired, or their provider fails.
    RegistryAuthFailing,
}

impl ConditionKind {
    pub const ALL: [ConditionKind; 2] = [
        ConditionKind::RegistryUnreachable,
        ConditionKind::RegistryAuthFailing,
    ];

    /// The condition `type` on the Node.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::RegistryUnreachable => "RegistryUnreachable",
            ConditionKind::RegistryAuthFailing => "RegistryAuthFailing",
        }
    }

    /// Reason while the condition is False.
    pub fn ok_reason(self) -> &'static str {
        match self {
            ConditionKind::RegistryUnreachable => "RegistriesReachable",
            ConditionKind::RegistryAuthFailing => "RegistryCredentialsAccepted",
        }
    }

    pub fn ok_message(self) -> &'static str {
        match self {
            ConditionKind::RegistryUnreachable => {
                "every registry in use is reachable over the node's pull path"
            }
            ConditionKind::RegistryAuthFailing => "the node's registry credentials are accepted",
        }
    }

    pub fn from_type(t: &str) -> Option<ConditionKind> {
        ConditionKind::ALL.into_iter().find(|k| k.as_str() == t)
    }
}

/// A condition as written to (or read from) the Node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionRecord {
    pub kind: ConditionKind,
    /// True = problem.
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub last_transition: SystemTime,
    pub last_heartbeat: SystemTime,
}

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InvolvedObject {
    Node {
        name: String,
        uid: String,
    },
    Pod {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// An Event to post.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Stable object name: `<object>.pullprobe.<hash of key>`.
    pub name: String,
    pub object: InvolvedObject,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
    /// How many times this Event has been emitted (1 = create; more = patch).
    pub count: i32,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// The parts of a Pod the agent needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Images of containers, init containers and ephemeral containers, in spec order.
    pub images: Vec<String>,
    /// `imagePullSecrets` names (in the pod's namespace).
    pub pull_secrets: Vec<String>,
}

/// A pod that uses a target, for Pod Events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's `imagePullSecrets` names: a secret the agent could not read is named in
    /// the pod's Event instead of blaming a missing credential.
    #[serde(skip)]
    pub pull_secrets: Vec<String>,
}
