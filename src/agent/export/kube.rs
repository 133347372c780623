//! The Kubernetes exporter: Events for condition transitions (on the Node) and for
//! workload problems (on the Pod), deduplicated. The conditions themselves are written by
//! [`crate::agent::conditions::writer`], the NodePullStatus by its own writer.

use std::sync::Arc;
use std::time::SystemTime;

use super::events::{EventDeduper, EventRecord, InvolvedObject};
use super::Exporter;
use crate::agent::outcome::CycleOutcome;
use crate::agent::state::AgentState;

/// Posts Events for one node's outcomes.
pub struct KubeExporter {
    pub client: kube::Client,
    pub node: String,
    pub node_uid: String,
    pub state: Arc<AgentState>,
    pub events: EventDeduper,
}

impl KubeExporter {
    fn node_object(&self) -> InvolvedObject {
        InvolvedObject::Node {
            name: self.node.clone(),
            uid: self.node_uid.clone(),
        }
    }

    fn post(&self, ev: EventRecord) {
        let client = self.client.clone();
        let node = self.node.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let r = crate::k8s::events::post(&client, &node, &ev).await;
            state.metrics.api_write("event", r.is_ok());
            if let Err(e) = r {
                tracing::warn!(error = %e, event = %ev.name, "cannot post event");
            }
        });
    }
}

impl Exporter for KubeExporter {
    fn export(&mut self, o: &CycleOutcome) {
        let mut to_post = Vec::new();
        for ch in o.changes.iter().filter(|c| c.transition) {
            let reason = format!(
                "{}{}",
                ch.kind.as_str(),
                if ch.status { "" } else { "Resolved" }
            );
            let ty = if ch.status { "Warning" } else { "Normal" };
            // A transition is always news: key on its time so it is never deduplicated away.
            let key =
                o.at.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs().to_string())
                    .unwrap_or_default();
            let message = format!("{}: {}", ch.reason, ch.message);
            to_post.extend(
                self.events
                    .emit(self.node_object(), ty, &reason, &message, &key, o.at),
            );
        }
        for w in &o.workload {
            let obj = InvolvedObject::Pod {
                namespace: w.pod.namespace.clone(),
                name: w.pod.name.clone(),
                uid: w.pod.uid.clone(),
            };
            let message = format!("image {}: {}", w.image, w.message);
            let key = format!("{} {}", w.kind.as_str(), w.image);
            to_post.extend(
                self.events
                    .emit(obj, "Warning", w.kind.as_str(), &message, &key, o.at),
            );
        }
        self.events.retain_uids(&o.live_uids);
        for ev in to_post {
            self.post(ev);
        }
    }
}
