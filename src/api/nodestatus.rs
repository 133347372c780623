//! `NodePullStatus`: one per node, cluster-scoped, named after the node.
//!
//! - `spec.assignments` is written by the controller only: checks it asks of this node's
//!   agent (a fresh path answer when the status has none or a stale one — round 1; the
//!   image itself once per fingerprint — round 2).
//! - `status` is written by this node's agent only (the `status` subresource): its
//!   registry path states, on change and at each heartbeat, and its answers to the
//!   assignments. Round 1 of a pre-flight and the admission webhook read these instead
//!   of asking any agent.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::preflight::Cell;

/// What the controller asks of this node.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pullprobe.io",
    version = "v1alpha1",
    kind = "NodePullStatus",
    plural = "nodepullstatuses",
    shortname = "nps",
    category = "pullprobe",
    status = "NodePullStatusStatus",
    printcolumn = r#"{"name":"Registries","type":"integer","jsonPath":".status.registriesTotal"}"#,
    printcolumn = r#"{"name":"Failing","type":"integer","jsonPath":".status.registriesFailing"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtime"}"#,
    printcolumn = r#"{"name":"Heartbeat","type":"date","jsonPath":".status.heartbeatTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodePullStatusSpec {
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub assignments: Vec<Assignment>,
}

/// How deep an assignment checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AssignmentDepth {
    /// The node's path to each image's registry (DNS, TCP, TLS, auth, manifest HEAD).
    Path,
    /// The image itself too (tag, platform, config blob).
    #[default]
    Image,
}

/// One check the controller asks of the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Unique among the node's assignments; the answer carries it back.
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    pub depth: AssignmentDepth,
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 512)))]
    pub images: Vec<String>,
    /// The namespace of the pods the images are for (the pre-flight's own).
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// Pull secrets in `namespace` (the agent reads them only when its config allows).
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub pull_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account: Option<String>,
    /// RFC 3339: when the controller asked. An agent skips assignments older than its
    /// pre-flight cache TTL (the controller gave up on them).
    pub issued_at: String,
}

/// What the agent keeps about its node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePullStatusStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// `containerd 1.7.24`, `cri-o`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// `linux/amd64`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// RFC 3339: the agent's last write; an answer older than `2 × intervalSeconds` past
    /// this is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<String>,
    /// The agent's schedule interval.
    #[serde(default)]
    pub interval_seconds: u32,
    #[serde(default)]
    pub registries_total: u32,
    #[serde(default)]
    pub registries_failing: u32,
    /// The path state of each registry the node's checks use (node-scope and workload).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub registries: Vec<RegistryPath>,
    /// Answers to `spec.assignments`, newest last; kept for the agent's pre-flight cache
    /// TTL, so the webhook reuses recent image checks.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub answers: Vec<Answer>,
}

/// One registry's path, as the schedule checked it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPath {
    /// The image's registry host as written in references (`registry.example:5000`).
    #[schemars(length(max = 253))]
    pub registry: String,
    /// Equal on nodes whose image facts must be equal (runtime, platform, endpoint list,
    /// credential sources).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    pub fingerprint: String,
    /// `ok`, `degraded`, `failing` (the probe's path state).
    pub state: String,
    /// The cell this path gives every image of the registry (`ready` when ok).
    pub cell: Cell,
    /// RFC 3339.
    pub checked_at: String,
}

/// The agent's answer to one assignment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    #[schemars(length(max = 128))]
    pub id: String,
    pub depth: AssignmentDepth,
    /// RFC 3339.
    pub answered_at: String,
    /// How the agent treated the assignment's pull secrets (empty: none asked, or all used).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pull_secrets_note: String,
    /// Why nothing was checked (the agent refused the assignment), when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub results: Vec<ImageAnswer>,
}

/// One image of an answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageAnswer {
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// The path state of the image's registry on this node (`ok`, `degraded`, `failing`).
    pub path_state: String,
    pub cell: Cell,
}
