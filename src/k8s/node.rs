//! Node conditions: read ours at start, strategic-merge PATCH of `nodes/NAME/status`
//! with only our two conditions (the merge key of `status.conditions` is `type`, so the
//! server keeps every other writer's conditions untouched).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};

use super::K8sError;
use crate::report::records::{ConditionKind, ConditionRecord};

/// The field manager on our writes.
pub const FIELD_MANAGER: &str = "pullprobe";

pub(crate) fn to_time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // Kubernetes Time has second precision on the wire; drop the rest so what we read
    // back compares equal.
    let ts = jiff::Timestamp::from_second(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

fn from_time(t: &Time) -> SystemTime {
    let s = t.0.as_second();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// What the agent reads from its Node at start.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    pub uid: String,
    /// Our conditions as currently on the Node.
    pub conditions: Vec<ConditionRecord>,
    /// `status.nodeInfo.containerRuntimeVersion`, e.g. `containerd://1.6.20`: which
    /// containerd rules apply (the pull path changed in 2.x).
    pub container_runtime_version: Option<String>,
}

/// The node's uid, our conditions and its runtime version.
pub async fn get(client: &kube::Client, node: &str) -> Result<NodeFacts, K8sError> {
    let api: Api<Node> = Api::all(client.clone());
    let n = api.get(node).await.map_err(K8sError::api("get node"))?;
    let uid = n.metadata.uid.clone().unwrap_or_default();
    let container_runtime_version = n
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.container_runtime_version.clone())
        .filter(|v| !v.is_empty());
    let conds = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let kind = ConditionKind::from_type(&c.type_)?;
            let now = SystemTime::now();
            Some(ConditionRecord {
                kind,
                status: c.status == "True",
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                last_transition: c
                    .last_transition_time
                    .as_ref()
                    .map(from_time)
                    .unwrap_or(now),
                last_heartbeat: c.last_heartbeat_time.as_ref().map(from_time).unwrap_or(now),
            })
        })
        .collect();
    Ok(NodeFacts {
        uid,
        conditions: conds,
        container_runtime_version,
    })
}

/// The strategic-merge patch body for our conditions.
pub fn patch_body(records: &[ConditionRecord]) -> serde_json::Value {
    let conditions: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "type": r.kind.as_str(),
                "status": if r.status { "True" } else { "False" },
                "reason": r.reason,
                "message": r.message,
                "lastTransitionTime": to_time(r.last_transition),
                "lastHeartbeatTime": to_time(r.last_heartbeat),
            })
        })
        .collect();
    serde_json::json!({ "status": { "conditions": conditions } })
}

/// The longest error body read from a failed write (a Status is a few hundred bytes).
const ERROR_BODY_MAX: usize = 64 * 1024;

/// PATCH `nodes/NAME/status`. Sent as a raw request so a refusal keeps its `Retry-After`
/// (kube's `Api` drops the response headers); the caller owns the retry (see
/// `agent::conditions`).
pub async fn patch_conditions(
    client: &kube::Client,
    node: &str,
    records: &[ConditionRecord],
) -> Result<(), K8sError> {
    const OP: &str = "patch nodes/status";
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let req = kube::core::Request::new("/api/v1/nodes")
        .patch_subresource("status", node, &pp, &Patch::Strategic(patch_body(records)))
        .map_err(|e| K8sError::Api {
            op: OP,
            source: kube::Error::BuildRequest(e),
        })?;
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .map_err(K8sError::api(OP))?;
    if resp.status().is_success() {
        return Ok(());
    }
    Err(refusal(OP, resp).await)
}

/// The error for a non-2xx answer: its code, the Status `reason` (a short CamelCase
/// word, bounded), and how long the server asked us to wait (`Retry-After` seconds, else
/// the Status' `details.retryAfterSeconds`).
pub(crate) async fn refusal(
    op: &'static str,
    resp: http::Response<kube::client::Body>,
) -> K8sError {
    use http_body_util::BodyExt;
    let code = resp.status().as_u16();
    let header = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = http_body_util::Limited::new(resp.into_body(), ERROR_BODY_MAX)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status: Option<kube::core::Status> = serde_json::from_slice(&body).ok();
    let details = status
        .as_ref()
        .and_then(|s| s.details.as_ref())
        .map(|d| u64::from(d.retry_after_seconds))
        .filter(|s| *s > 0);
    let reason = status
        .map(|s| s.reason)
        .filter(|r| r.len() <= 64 && r.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_default();
    K8sError::Refused {
        op,
        code,
        reason,
        retry_after: header.or(details).map(std::time::Duration::from_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_names_only_our_conditions() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let recs = vec![ConditionRecord {
            kind: ConditionKind::RegistryUnreachable,
            status: true,
            reason: "DNSFailure".into(),
            message: "m".into(),
            last_transition: t,
            last_heartbeat: t,
        }];
        let b = patch_body(&recs);
        let c = &b["status"]["conditions"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["type"], "RegistryUnreachable");
        assert_eq!(c[0]["status"], "True");
        assert_eq!(c[0]["lastTransitionTime"], "2023-11-14T22:13:20Z");
        assert_eq!(b.as_object().unwrap().len(), 1);
    }
}
