//! The rollout guard: in namespaces labelled `pullprobe.io/rollout-guard` (`warn` or
//! `enforce`), a Deployment, StatefulSet, DaemonSet or CronJob whose pod template's images
//! change gets its `ImagePreflight` (`<kind-lowercase>-<name>`, label
//! `pullprobe.io/created-by: rollout-guard`, owned by the workload so garbage collection
//! removes it with it, `workloadRef` to it and the template's images in `images`, so a
//! change of images is a new generation and runs again). When that pre-flight finishes
//! with nodes that cannot pull, a Warning Event on the workload (`ImagesCannotBePulled`)
//! names the images, how many nodes cannot pull, the reason and the fix.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use sha2::{Digest, Sha256};

use super::assign::FIELD_MANAGER;
use super::resolve::{self, Target};
use crate::api::{ImagePreflight, ImagePreflightStatus, WorkloadKind};
use crate::preflight::manifests::{self, Loaded};
use crate::preflight::object;

/// The namespace label that opts in.
pub const LABEL: &str = "pullprobe.io/rollout-guard";
/// The label on the objects the guard creates.
pub const CREATED_BY: &str = "pullprobe.io/created-by";
pub const CREATED_BY_VALUE: &str = "rollout-guard";
/// The Event's reason.
pub const EVENT_REASON: &str = "ImagesCannotBePulled";

/// The kinds the guard watches.
pub const KINDS: [WorkloadKind; 4] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::CronJob,
];

/// The name of a workload's pre-flight.
pub fn preflight_name(kind: WorkloadKind, name: &str) -> String {
    let mut n = format!("{}-{name}", kind.as_str().to_lowercase());
    n.truncate(253);
    n
}

/// The guard's mode in a namespace (`warn`, `enforce`), if it opted in.
pub fn mode(ns: &Namespace) -> Option<&str> {
    ns.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL))
        .map(String::as_str)
        .filter(|m| matches!(*m, "warn" | "enforce"))
}

/// Watches the opted-in namespaces' workloads until the process ends (leader only).
pub async fn run(client: kube::Client) {
    let (namespaces, writer) = reflector::store::<Namespace>();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(LABEL);
    tokio::spawn(
        watcher::watcher(ns_api, cfg)
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    let (owned, owned_writer) = reflector::store::<ImagePreflight>();
    let ipf_api: Api<ImagePreflight> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("{CREATED_BY}={CREATED_BY_VALUE}"));
    tokio::spawn(
        watcher::watcher(ipf_api, cfg)
            .default_backoff()
            .reflect(owned_writer)
            .for_each(|_| futures::future::ready(())),
    );
    if namespaces.wait_until_ready().await.is_err() || owned.wait_until_ready().await.is_err() {
        return;
    }
    let mut tasks = Vec::new();
    for kind in KINDS {
        let ar = workload_resource(&client, kind).await;
        let (c, n, o) = (client.clone(), namespaces.clone(), owned.clone());
        tasks.push(tokio::spawn(watch_kind(c, kind, ar, n, o)));
    }
    futures::future::join_all(tasks).await;
}

/// The served version of a kind (`CronJob`: `batch/v1`, else `batch/v1beta1` before 1.21).
async fn workload_resource(client: &kube::Client, kind: WorkloadKind) -> kube::api::ApiResource {
    let v1 = resolve::resource(kind, true);
    if kind != WorkloadKind::CronJob {
        return v1;
    }
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &v1);
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(s)) if s.code == 404 => resolve::resource(kind, false),
        _ => v1,
    }
}

async fn watch_kind(
    client: kube::Client,
    kind: WorkloadKind,
    ar: kube::api::ApiResource,
    namespaces: Store<Namespace>,
    owned: Store<ImagePreflight>,
) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(item) = stream.next().await {
        let Ok(obj) = item else { continue };
        let Some(ns) = obj.metadata.namespace.clone() else {
            continue;
        };
        let guarded = namespaces
            .get(&ObjectRef::new(&ns))
            .is_some_and(|n| mode(&n).is_some());
        if !guarded {
            continue;
        }
        if let Err(e) = sync(&client, kind, &ar, &obj, &ns, &owned).await {
            tracing::warn!(namespace = ns, kind = kind.as_str(), error = %e, "rollout guard: cannot write the pre-flight");
        }
    }
}

/// The template's images of a workload object.
fn template_images(kind: WorkloadKind, obj: &DynamicObject) -> Vec<String> {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    v["kind"] = serde_json::Value::String(kind.as_str().into());
    let text = serde_json::to_string(&v).unwrap_or_default();
    let mut loaded = Loaded::default();
    let mut count = 0;
    if manifests::parse_text("workload", &text, "default", &mut loaded, &mut count).is_err() {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for c in loaded.workloads.iter().flat_map(|w| &w.images) {
        if !out.contains(&c.image) {
            out.push(c.image.clone());
        }
    }
    out.truncate(crate::api::MAX_IMAGES);
    out
}

/// Creates or updates the workload's pre-flight when its images changed (or it has none).
async fn sync(
    client: &kube::Client,
    kind: WorkloadKind,
    ar: &kube::api::ApiResource,
    obj: &DynamicObject,
    ns: &str,
    owned: &Store<ImagePreflight>,
) -> Result<(), kube::Error> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let images = template_images(kind, obj);
    if images.is_empty() {
        return Ok(());
    }
    let pf_name = preflight_name(kind, &name);
    let current = owned.get(&ObjectRef::new(&pf_name).within(ns));
    let same = current.as_ref().is_some_and(|p| {
        p.spec.images == images
            && p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
    });
    if same {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "ImagePreflight",
        "metadata": {
            "name": pf_name,
            "namespace": ns,
            "labels": {CREATED_BY: CREATED_BY_VALUE},
            "ownerReferences": [{
                "apiVersion": ar.api_version,
                "kind": kind.as_str(),
                "name": name,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": false,
            }],
        },
        "spec": {
            "workloadRef": {"kind": kind.as_str(), "name": name},
            "images": images,
        },
    });
    let api: Api<ImagePreflight> = Api::namespaced(client.clone(), ns);
    api.patch(
        &pf_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    tracing::info!(
        namespace = ns,
        name = pf_name,
        "rollout guard: pre-flight for the new images"
    );
    Ok(())
}

/// After a pre-flight finished: the guard's Warning Event on its workload when nodes
/// cannot pull.
pub async fn after_finish(
    client: &kube::Client,
    p: &ImagePreflight,
    t: &Target,
    st: &ImagePreflightStatus,
) {
    let by_guard = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CREATED_BY))
        .is_some_and(|v| v == CREATED_BY_VALUE);
    let owner = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let (true, Some(owner)) = (by_guard, owner) else {
        return;
    };
    let m = object::to_matrix(st, p.spec.degraded_fails);
    if m.summary.not_ready == 0 {
        return;
    }
    let message = event_message(p, t, &m);
    let ns = t.namespace.clone();
    let involved = ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(ns.clone()),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    };
    let key = format!(
        "{}/{}",
        p.metadata.uid.as_deref().unwrap_or(""),
        p.metadata.generation.unwrap_or(0)
    );
    let hash = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
    let mut ev_name = format!("{}.pullprobe.{hash}", owner.name);
    if ev_name.len() > 253 {
        ev_name = format!("pullprobe.{hash}");
    }
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(ev_name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(EVENT_REASON.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("pullprobe-controller".into()),
            host: None,
        }),
        reporting_component: Some("pullprobe-controller".into()),
        reporting_instance: Some("pullprobe-controller".into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => {}
        // Posted already for this generation (a retried run).
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!(error = %e, "rollout guard: cannot post the Event"),
    }
}

/// `3 of 40 nodes cannot pull registry.example/app:2: ManifestUnknown at registry.example
/// (3 nodes). Fix: … Details: kubectl -n NS get imagepreflight NAME -o yaml`.
fn event_message(p: &ImagePreflight, t: &Target, m: &crate::preflight::matrix::Matrix) -> String {
    let s = &m.summary;
    let failing: Vec<&str> = failing_images(m);
    let mut images = failing
        .iter()
        .take(5)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if failing.len() > 5 {
        images.push_str(&format!(" and {} more", failing.len() - 5));
    }
    let problem = s.problems.iter().find(|p| !p.unknown);
    let why = problem
        .map(|p| match &p.host {
            Some(h) => format!("{} at {h} ({} nodes)", p.reason, p.nodes),
            None => format!("{} ({} nodes)", p.reason, p.nodes),
        })
        .unwrap_or_default();
    let fix = problem
        .and_then(|p| {
            crate::probe::outcome::Reason::ALL
                .iter()
                .find(|r| r.as_str() == p.reason)
        })
        .map(|r| crate::probe::hints::fix(*r))
        .unwrap_or_else(|| "see the cells' messages".into());
    let msg = format!(
        "{} of {} nodes cannot pull {images}: {why}. Fix: {fix}. Details: kubectl -n {} get imagepreflight {} -o yaml",
        s.not_ready,
        s.nodes,
        t.namespace,
        p.metadata.name.as_deref().unwrap_or("")
    );
    object::clean(&msg, crate::api::MAX_MESSAGE_LEN)
}

/// The images some node cannot pull, in column order.
fn failing_images(m: &crate::preflight::matrix::Matrix) -> Vec<&str> {
    let strict = m.summary.strict;
    let mut bad: BTreeMap<usize, ()> = BTreeMap::new();
    for g in &m.groups {
        for (i, c) in g.cells.iter().enumerate() {
            if !c.verdict.pulls(strict)
                && c.verdict != crate::preflight::matrix::CellVerdict::Unknown
            {
                bad.insert(i, ());
            }
        }
    }
    bad.keys()
        .filter_map(|i| m.images.get(*i).map(String::as_str))
        .collect()
}
