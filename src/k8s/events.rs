//! core/v1 Events (not events.k8s.io: on a 1.20 server the Node authorizer grants only
//! core events, and events.k8s.io rejects a Node's Event with a namespace mismatch).
//! Node Events go to the `default` namespace, as the kubelet's do.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::node::{to_time, FIELD_MANAGER};
use super::K8sError;
use crate::report::records::{EventRecord, InvolvedObject};

/// The Event's namespace and its involved object (a Node's Events go to `default`).
fn involved(object: &InvolvedObject) -> (String, ObjectReference) {
    match object {
        InvolvedObject::Node { name, uid } => (
            "default".to_string(),
            ObjectReference {
                kind: Some("Node".into()),
                api_version: Some("v1".into()),
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
        ),
        InvolvedObject::Pod {
            namespace,
            name,
            uid,
        } => (
            namespace.clone(),
            ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            },
        ),
    }
}

/// Create the Event (count 1) or bump the existing one's count.
pub async fn post(client: &kube::Client, node: &str, rec: &EventRecord) -> Result<(), K8sError> {
    let (namespace, involved) = involved(&rec.object);
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if rec.count > 1 {
        let body = serde_json::json!({
            "count": rec.count,
            "message": rec.message,
            "lastTimestamp": to_time(rec.last),
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match api.patch(&rec.name, &pp, &Patch::Merge(body)).await {
            Ok(_) => return Ok(()),
            // Expired (events have a TTL): create it again below.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(K8sError::Api {
                    op: "patch event",
                    source: e,
                })
            }
        }
    }
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(rec.name.clone()),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(rec.reason.clone()),
        message: Some(rec.message.clone()),
        type_: Some(rec.type_.to_string()),
        count: Some(rec.count),
        first_timestamp: Some(to_time(rec.first)),
        last_timestamp: Some(to_time(rec.last)),
        source: Some(EventSource {
            component: Some("pullprobe".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("pullprobe".into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => Ok(()),
        // Already there (a restart lost our counts): treat as posted.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(K8sError::Api {
            op: "create event",
            source: e,
        }),
    }
}
