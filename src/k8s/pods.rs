//! The pods bound to this node: a watcher with a `spec.nodeName=` field selector and a
//! bounded backoff (never `streaming_lists()`: a 1.20 server answers 422 and, without
//! backoff, the watcher retries thousands of times per second).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use crate::report::records::PodInfo;

/// Pods on the node keyed by uid; filled by [`watch`].
pub type PodStore = Arc<Mutex<BTreeMap<String, PodInfo>>>;

/// An image volume (KEP-4639, GA in 1.36) the kubelet pulls for a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageVolume<'a> {
    /// The volume's name.
    pub name: &'a str,
    /// `volumes[].image.reference`, as written.
    pub reference: &'a str,
}

/// The image volumes of a pod spec the kubelet would pull: every `volumes[].image` with a
/// reference, except `pullPolicy: Never` (the kubelet never pulls those; a missing one is
/// `ErrImageNeverPull`, a node-local fact no registry check can change).
///
/// The kubelet pulls them in `SyncPod` before any container starts
/// (pkg/kubelet/kuberuntime/kuberuntime_manager.go: `m.getImageVolumes(ctx, pod,
/// podSandboxConfig, pullSecrets)`), through the same `EnsureImageExists` as container
/// images with `volume.Image.PullPolicy` and the pod's pull secrets (KEP-4639 "Registry
/// authentication": "the same logic will be used as for the container image"). An absent
/// `pullPolicy` is defaulted by the API server (Always for `:latest` or no tag, else
/// IfNotPresent), so only `Never` is skipped here.
pub fn image_volumes(spec: &PodSpec) -> impl Iterator<Item = ImageVolume<'_>> {
    spec.volumes.iter().flatten().filter_map(|v| {
        let image = v.image.as_ref()?;
        let reference = image
            .reference
            .as_deref()
            .filter(|r| !r.trim().is_empty())?;
        if image.pull_policy.as_deref() == Some("Never") {
            return None;
        }
        Some(ImageVolume {
            name: &v.name,
            reference,
        })
    })
}

/// The parts of a Pod the agent uses: every image (containers, init, ephemeral, and the
/// image volumes the kubelet would pull, see [`image_volumes`]) and the pull-secret names.
/// Pods that finished are skipped: the kubelet will not pull for them.
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
    images.extend(image_volumes(spec).map(|v| v.reference.to_string()));
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

/// The longest the pod watch waits between two attempts while the API server is unreachable:
/// half the agent's `interval`, within 1–30 s. kube's default (client-go's reflector: 0.8 s
/// doubling to 30 s, plus up to as much again in jitter) waited up to 12.8 s after a 5 s
/// outage, so a pod created right after the server came back stayed unseen for more than a
/// cycle; with this bound the watch is back within half an interval of the server, and the
/// pod is in the store before the next cycle. 30 s keeps the fleet's relists during a long
/// outage as spread out as client-go's.
pub fn max_backoff(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Retry delays of the pod watch: from 250 ms, doubling, each with jitter (backon: a delay `d`
/// becomes `[d, 2d)`), never above [`max_backoff`]; reset by the watcher's first success.
pub fn backoff(interval: Duration) -> watcher::ExponentialBackoff {
    let half = max_backoff(interval) / 2;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250).min(half))
        .with_max_delay(half)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Watch pods on `node` forever, keeping `store` current. `synced` is notified after
/// each complete (re)list; failed attempts are retried within [`max_backoff`]`(interval)`.
pub async fn watch(
    client: kube::Client,
    node: String,
    interval: Duration,
    store: PodStore,
    synced: Arc<tokio::sync::Notify>,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg)
        .backoff(backoff(interval))
        .boxed();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pod as a 1.36 API server returns it (`kubectl get pod -o json`: defaults filled,
    /// `pullPolicy` defaulted on every image volume, 1.33+ status fields). The 1.20 server of
    /// the tests drops `volumes[].image` (unknown to it), so this path is proven here.
    #[test]
    fn image_volumes_of_a_1_36_pod_are_pulled_images() {
        let pod: Pod = serde_json::from_str(include_str!(
            "../../tests/fixtures/k8s/pod-image-volumes-1.36.json"
        ))
        .unwrap();
        let info = pod_info(&pod).unwrap();
        assert_eq!(
            info.images,
            [
                "registry.example.com/ml/server:2.4.1",
                "registry.example.com/ml/weights:llama-3b",
                "quay.io/ml/plugins",
            ],
            "containers first, then image volumes; pullPolicy Never is never pulled"
        );
        assert_eq!(info.pull_secrets, ["ml-registry"]);
        let vols: Vec<(&str, &str)> = image_volumes(pod.spec.as_ref().unwrap())
            .map(|v| (v.name, v.reference))
            .collect();
        assert_eq!(
            vols,
            [
                ("weights", "registry.example.com/ml/weights:llama-3b"),
                ("plugins", "quay.io/ml/plugins")
            ]
        );
    }

    #[test]
    fn empty_references_and_other_volumes_are_not_images() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "a:1"}],
                "volumes": [{"name": "e", "image": {"reference": " "}},
                            {"name": "n", "image": {}},
                            {"name": "d", "emptyDir": {}}]}
        }))
        .unwrap();
        assert_eq!(pod_info(&pod).unwrap().images, ["a:1"]);
    }

    #[test]
    fn backoff_stays_within_half_an_interval() {
        for (interval, max) in [(1, 1), (5, 2), (10, 5), (60, 30), (600, 30)] {
            let want = Duration::from_millis(if interval == 5 { 2500 } else { max * 1000 });
            assert_eq!(
                max_backoff(Duration::from_secs(interval)),
                want,
                "{interval}s"
            );
            let delays: Vec<Duration> = backoff(Duration::from_secs(interval)).take(40).collect();
            assert_eq!(delays.len(), 40, "never gives up");
            assert!(delays.iter().all(|d| *d <= want), "{interval}s: {delays:?}");
            assert!(delays[0] >= Duration::from_millis(250).min(want / 2));
            assert!(delays[39] >= want / 2, "reaches its cap: {delays:?}");
        }
    }
}
