//! The pods bound to this node: a watcher with a `spec.nodeName=` field selector and
//! default backoff (never `streaming_lists()`: a 1.20 server answers 422 and, without
//! backoff, the watcher retries thousands of times per second).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use crate::report::records::PodInfo;

/// Pods on the node keyed by uid; filled by [`watch`].
pub type PodStore = Arc<Mutex<BTreeMap<String, PodInfo>>>;

/// The parts of a Pod the agent uses: every image (containers, init, ephemeral) and the
/// pull-secret names. Pods that finished are skipped: the kubelet will not pull for them.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let mut images = Vec::new();
    images.extend(
        spec.init_containers
            .iter()
            .flatten()
            .filter_map(|c| c.image.clone()),
    );
    images.extend(spec.containers.iter().filter_map(|c| c.image.clone()));
    images.extend(
        spec.ephemeral_containers
            .iter()
            .flatten()
            .filter_map(|c| c.image.clone()),
    );
    images.retain(|i| !i.is_empty());
    Some(PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        images,
        pull_secrets: spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .collect(),
    })
}

/// Watch pods on `node` forever, keeping `store` current. `synced` is notified after
/// each complete (re)list.
pub async fn watch(
    client: kube::Client,
    node: String,
    store: PodStore,
    synced: Arc<tokio::sync::Notify>,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut relist: BTreeMap<String, PodInfo> = BTreeMap::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Apply(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if let Ok(mut s) = store.lock() {
                    match pod_info(&p) {
                        Some(info) => s.insert(uid, info),
                        None => s.remove(&uid),
                    };
                }
            }
            Ok(Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if let Ok(mut s) = store.lock() {
                    s.remove(&uid);
                }
            }
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(p)) => {
                if let Some(info) = pod_info(&p) {
                    relist.insert(info.uid.clone(), info);
                }
            }
            Ok(Event::InitDone) => {
                if let Ok(mut s) = store.lock() {
                    *s = std::mem::take(&mut relist);
                }
                synced.notify_waiters();
            }
            Err(e) => tracing::warn!(error = %e, "pod watch error (retrying with backoff)"),
        }
    }
}
