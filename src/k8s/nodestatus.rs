//! The agent's side of its node's `NodePullStatus` (`crate::api::nodestatus`): create it
//! when missing (named after the node, empty spec), server-side-apply its `status`
//! (the status subresource, field manager [`FIELD_MANAGER`]) and watch its spec — only
//! this node's object (`fieldSelector metadata.name=<node>`), as the agent's RBAC allows.
//!
//! Writes are sent as raw requests so a refusal keeps its `Retry-After`
//! ([`super::node::refusal`]); the caller owns every retry.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use super::K8sError;
use crate::api::{Assignment, NodePullStatus, NodePullStatusStatus, API_VERSION};

/// The field manager of the agent's status writes.
pub const FIELD_MANAGER: &str = "pullprobe-agent";
/// The longest one write may take before it counts as failed (a hung API server must not
/// hold the writer for kube's 295 s read timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const COLLECTION: &str = "/apis/pullprobe.io/v1alpha1/nodepullstatuses";

/// Create `node`'s object if it does not exist (an empty spec: the controller owns it).
pub async fn ensure(client: &kube::Client, node: &str) -> Result<(), K8sError> {
    const OP: &str = "create nodepullstatuses";
    let api: Api<NodePullStatus> = Api::all(client.clone());
    let got = tokio::time::timeout(WRITE_TIMEOUT, api.get_opt(node))
        .await
        .map_err(|_| K8sError::Timeout("get nodepullstatuses"))?
        .map_err(K8sError::api("get nodepullstatuses"))?;
    if got.is_some() {
        return Ok(());
    }
    let obj = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "NodePullStatus",
        "metadata": { "name": node },
        "spec": {},
    });
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let body = serde_json::to_vec(&obj).map_err(|e| K8sError::Client(e.to_string()))?;
    let req = kube::core::Request::new(COLLECTION)
        .create(&pp, body)
        .map_err(|e| K8sError::Api {
            op: OP,
            source: kube::Error::BuildRequest(e),
        })?;
    let resp = send(client, req, OP).await?;
    // 409: another start of this agent created it meanwhile.
    if resp.status().is_success() || resp.status().as_u16() == 409 {
        return Ok(());
    }
    Err(super::node::refusal(OP, resp).await)
}

/// Server-side apply of `status` on `node`'s object (status subresource, forced: the
/// agent is the only writer of its node's status).
pub async fn apply_status(
    client: &kube::Client,
    node: &str,
    status: &NodePullStatusStatus,
) -> Result<(), K8sError> {
    const OP: &str = "apply nodepullstatuses/status";
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let obj = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "NodePullStatus",
        "metadata": { "name": node },
        "status": status,
    });
    let req = kube::core::Request::new(COLLECTION)
        .patch_subresource("status", node, &pp, &Patch::Apply(obj))
        .map_err(|e| K8sError::Api {
            op: OP,
            source: kube::Error::BuildRequest(e),
        })?;
    let resp = send(client, req, OP).await?;
    if resp.status().is_success() {
        return Ok(());
    }
    Err(super::node::refusal(OP, resp).await)
}

async fn send(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    op: &'static str,
) -> Result<http::Response<kube::client::Body>, K8sError> {
    tokio::time::timeout(
        WRITE_TIMEOUT,
        client.send(req.map(kube::client::Body::from)),
    )
    .await
    .map_err(|_| K8sError::Timeout(op))?
    .map_err(K8sError::api(op))
}

/// Watch `node`'s object and publish its `spec.assignments` on every change (an empty
/// list when the object is gone), forever, re-listing with the pod watch's bounded
/// backoff ([`super::pods::backoff`]).
pub async fn watch_assignments(
    client: kube::Client,
    node: String,
    interval: Duration,
    tx: watch::Sender<Vec<Assignment>>,
) {
    let api: Api<NodePullStatus> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher::watcher(api, cfg)
        .backoff(super::pods::backoff(interval))
        .boxed();
    // A re-list that no longer finds the object (deleted while the watch was down) leaves
    // no assignments.
    let mut listed = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(o)) => {
                let _ = tx.send(o.spec.assignments);
            }
            Ok(Event::InitApply(o)) => {
                listed = true;
                let _ = tx.send(o.spec.assignments);
            }
            Ok(Event::Delete(_)) => {
                let _ = tx.send(Vec::new());
            }
            Ok(Event::Init) => listed = false,
            Ok(Event::InitDone) => {
                if !listed {
                    let _ = tx.send(Vec::new());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "NodePullStatus watch error (retrying with backoff)")
            }
        }
    }
}
