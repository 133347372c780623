//! The webhook's own cache: the namespaces labelled `pullprobe.io/rollout-guard` (metadata
//! only, label-selected: unlabelled namespaces are never held). Nodes and NodePullStatus come
//! from the controller's fleet caches ([`crate::controller::fleet`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::review::{Mode, Namespaces, GUARD_LABEL};

/// A reflector's store, filled in the background, and whether it holds a full list yet.
struct Cached<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    ready: Arc<AtomicBool>,
}

impl<K> Cached<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn start<S>(stream: S) -> Cached<K>
    where
        S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    {
        let (store, writer) = reflector::store();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let reader = store.clone();
        tokio::spawn(async move {
            if reader.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        let events = reflector::reflector(writer, stream.default_backoff());
        tokio::spawn(events.for_each(|_| futures::future::ready(())));
        Cached { store, ready }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Namespaces labelled `pullprobe.io/rollout-guard` (metadata only).
pub struct GuardedNamespaces {
    cache: Cached<PartialObjectMeta<Namespace>>,
}

impl GuardedNamespaces {
    /// Starts the watch (inside a tokio runtime).
    pub fn start(client: kube::Client) -> GuardedNamespaces {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let cfg = watcher::Config::default().labels(GUARD_LABEL);
        GuardedNamespaces {
            cache: Cached::start(watcher::watcher(api, cfg)),
        }
    }
}

impl Namespaces for GuardedNamespaces {
    fn mode(&self, namespace: &str) -> Option<Mode> {
        if !self.cache.ready() {
            return None;
        }
        let ns = self.cache.store.get(&ObjectRef::new(namespace));
        let label = ns
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(GUARD_LABEL))
            .map(String::as_str);
        Some(Mode::of_label(label))
    }
}
