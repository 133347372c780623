//! The CLI's calls on the `pullprobe.io` objects, with the user's kubeconfig: create an
//! `ImagePreflight`, wait for it as `kubectl wait` does (a watch on that one object), delete
//! it; list the `NodePullStatus` objects (`pullprobe status`) and the Nodes' names.

use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;

use super::K8sError;
use crate::api::{condition, ConditionStatus, ImagePreflight, NodePullStatus};

/// Creates `obj` (with `generateName`) in `namespace`; the object as stored.
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    obj: &ImagePreflight,
) -> Result<ImagePreflight, K8sError> {
    let api: Api<ImagePreflight> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), obj)
        .await
        .map_err(K8sError::api("create imagepreflights"))
}

/// The controller has answered this generation: `status.observedGeneration` equals
/// `metadata.generation` and `Reconciling` is False (kstatus "Current" or "Failed").
pub fn finished(obj: &ImagePreflight) -> bool {
    let Some(status) = &obj.status else {
        return false;
    };
    let current =
        obj.metadata.generation.is_some() && status.observed_generation == obj.metadata.generation;
    current
        && condition::find(&status.conditions, "Reconciling")
            .is_some_and(|c| c.status == ConditionStatus::False)
}

/// Waits until `name` is [`finished`] (a watch on that one object), at most `timeout`:
/// `Ok(None)` when time ran out. A broken watch is started again until then; a refused
/// one (401/403) is an error at once.
pub async fn wait_finished(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<ImagePreflight>, K8sError> {
    let api: Api<ImagePreflight> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let cond = |o: Option<&ImagePreflight>| o.is_some_and(finished);
        let attempt = tokio::time::timeout_at(deadline, await_condition(api.clone(), name, cond));
        let err = match attempt.await {
            Err(_) => return Ok(None),
            Ok(Ok(Some(obj))) => return Ok(Some(obj)),
            // (The condition never holds for a missing object.)
            Ok(Ok(None)) => None,
            Ok(Err(kube::runtime::wait::Error::ProbeFailed(e))) => refused(e),
        };
        if let Some(source) = err {
            return Err(K8sError::Api {
                op: "watch imagepreflights",
                source,
            });
        }
        // A dropped connection: watch again shortly (bounded by the deadline).
        let _ =
            tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(500))).await;
    }
}

/// The API error of a watch the server refused (401/403/404), if that is what broke it.
fn refused(e: kube::runtime::watcher::Error) -> Option<kube::Error> {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(kube::Error::Api(s)) | W::WatchStartFailed(kube::Error::Api(s))
            if matches!(s.code, 401 | 403 | 404) =>
        {
            Some(kube::Error::Api(s))
        }
        _ => None,
    }
}

/// Deletes `name` (background propagation); a missing object is fine.
pub async fn delete(client: &kube::Client, namespace: &str, name: &str) -> Result<(), K8sError> {
    let api: Api<ImagePreflight> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(K8sError::api("delete imagepreflights")(e)),
    }
}

/// Every `NodePullStatus`, in pages of 500.
pub async fn list_node_statuses(client: &kube::Client) -> Result<Vec<NodePullStatus>, K8sError> {
    let api: Api<NodePullStatus> = Api::all(client.clone());
    let mut lp = ListParams::default().limit(500);
    let mut out = Vec::new();
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(K8sError::api("list nodepullstatuses"))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// The names of the Nodes (matching `selector`), metadata only, in pages of 500.
pub async fn list_node_names(
    client: &kube::Client,
    selector: Option<&str>,
) -> Result<Vec<String>, K8sError> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut lp = ListParams::default().limit(500);
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut out = Vec::new();
    loop {
        let page = api
            .list_metadata(&lp)
            .await
            .map_err(K8sError::api("list nodes"))?;
        out.extend(page.items.into_iter().filter_map(|m| m.metadata.name));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ImagePreflightSpec, ImagePreflightStatus};

    fn obj(
        generation: i64,
        observed: Option<i64>,
        reconciling: Option<ConditionStatus>,
    ) -> ImagePreflight {
        let mut o = ImagePreflight::new("p", ImagePreflightSpec::default());
        o.metadata.generation = Some(generation);
        o.status = Some(ImagePreflightStatus {
            observed_generation: observed,
            conditions: reconciling
                .map(|s| Condition {
                    type_: "Reconciling".into(),
                    status: s,
                    reason: "R".into(),
                    message: String::new(),
                    last_transition_time: "2026-01-01T00:00:00Z".into(),
                    observed_generation: observed,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        o
    }

    /// As kstatus reads it: the current generation observed and no longer reconciling.
    #[test]
    fn finished_needs_the_current_generation_and_reconciling_false() {
        assert!(finished(&obj(2, Some(2), Some(ConditionStatus::False))));
        assert!(!finished(&obj(2, Some(1), Some(ConditionStatus::False))));
        assert!(!finished(&obj(2, Some(2), Some(ConditionStatus::True))));
        assert!(!finished(&obj(2, Some(2), None)));
        let mut none = obj(1, None, None);
        none.status = None;
        assert!(!finished(&none));
    }
}
