//! `ImagePreflight`: can the nodes a workload could land on pull its images, now?
//!
//! Created by a person (`pullprobe preflight`, `kubectl apply`), a GitOps tool, or the
//! rollout guard (owned by the workload, so garbage-collected with it). Pull secrets are
//! read only from the object's own namespace. The controller writes `status`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// What to check and where.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pullprobe.io",
    version = "v1alpha1",
    kind = "ImagePreflight",
    plural = "imagepreflights",
    shortname = "ipf",
    category = "pullprobe",
    namespaced,
    status = "ImagePreflightStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.summary.nodes"}"#,
    printcolumn = r#"{"name":"Cannot-Pull","type":"integer","jsonPath":".status.summary.notReady"}"#,
    printcolumn = r#"{"name":"Unknown","type":"integer","jsonPath":".status.summary.unknown"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePreflightSpec {
    /// Images to check (with no `workloadRef`, on every Ready node unless `nodes` narrows it).
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 512)))]
    pub images: Vec<String>,
    /// A workload in this namespace: its pod template gives the images, pull secrets,
    /// service account and scheduling constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// Scheduling constraints of the pods the images are for (as in a pod spec), when
    /// there is no `workloadRef` (the CLI copies them from `-f` manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Narrows the candidate nodes.
    #[serde(default)]
    pub nodes: NodeSelection,
    /// Pull secrets in this namespace (added to the service account's, as admission does).
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub image_pull_secrets: Vec<String>,
    /// The pods' service account in this namespace (`default` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// True: a node that pulls only after earlier endpoints failed (`degraded`) counts as
    /// failing (`--strict`).
    #[serde(default)]
    pub degraded_fails: bool,
    /// Seconds after finishing that the controller deletes the object (default 3600; 0
    /// keeps it). Objects owned by a workload live as long as it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2592000))]
    pub ttl_seconds_after_finished: Option<u32>,
}

/// The kinds whose pod template a pre-flight reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Pod => "Pod",
        }
    }
}

/// A workload in the pre-flight's own namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The scheduling part of a pod spec; `tolerations` and `affinity` keep the pod spec's
/// own shape (the controller parses them as `core/v1` types and reports a bad one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Untyped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Untyped>,
}

/// A JSON object kept as is (`x-kubernetes-preserve-unknown-fields`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Untyped(pub serde_json::Value);

impl JsonSchema for Untyped {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Untyped".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Which nodes are candidates (besides the workload's own constraints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelection {
    /// A label selector on Nodes (`pool=gpu,zone in (a,b)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub selector: Option<String>,
    /// True: every node, ignoring the workload's scheduling constraints.
    #[serde(default)]
    pub all: bool,
}

/// What the controller found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePreflightStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The images checked, in the order of every row's `cells`.
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Nodes that answered the same for every image, largest group first.
    #[serde(default)]
    pub rows: Vec<Row>,
    /// Nodes no workload can land on, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Excluded>,
    /// Workloads whose pods can land on no node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<Unplaced>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// RFC 3339: when the answer was complete (the TTL counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// Counts of the matrix.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub nodes: u32,
    pub ready: u32,
    pub degraded: u32,
    pub not_ready: u32,
    pub unknown: u32,
    #[serde(default)]
    pub unplaced: u32,
    #[serde(default)]
    pub strict: bool,
    /// One line: `38/40 nodes can pull; 2 cannot: ManifestUnknown at registry.example`.
    #[serde(default)]
    pub line: String,
}

/// Nodes with identical cells.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The group's node names (all of them: the matrix is per node).
    pub nodes: Vec<String>,
    /// One cell per image of `status.images`.
    pub cells: Vec<Cell>,
}

/// One (node group, image) answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cell {
    /// `ready`, `degraded`, `not_ready`, `blocked`, `unknown` or `-` (not scheduled).
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The host whose failure decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    // Left out when empty: kube-apiserver 1.20's server-side apply reads `""` as null,
    // which the schema refuses (422); the same for the other optional strings written by
    // server-side apply.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The node whose image check was shared into this cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_on: Option<String>,
    /// `schedule`, `cache` or `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A node left out, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Excluded {
    pub node: String,
    pub why: String,
}

/// A workload that lands on no node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Unplaced {
    pub workload: String,
    pub images: Vec<String>,
    pub why: String,
}
