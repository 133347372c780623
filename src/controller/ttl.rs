//! Finished pre-flights expire `ttlSecondsAfterFinished` after `finishedAt` (default one
//! hour; 0 keeps them), as Jobs do. An object owned by a workload (the rollout guard's)
//! lives as long as its owner: garbage collection removes it with the workload.

use std::time::{Duration, SystemTime};

use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;

use super::fleet;
use crate::api::ImagePreflight;
use crate::k8s::K8sError;

/// `ttlSecondsAfterFinished` when unset.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// When the finished object is to be deleted (`None`: never by the controller).
pub fn expires_at(p: &ImagePreflight) -> Option<SystemTime> {
    if p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty())
    {
        return None;
    }
    let ttl = p
        .spec
        .ttl_seconds_after_finished
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() {
        return None;
    }
    let finished = p.status.as_ref()?.finished_at.as_deref()?;
    fleet::parse_time(finished)?.checked_add(ttl)
}

/// Deletes the object when it is due (only that object: the uid is a precondition), or
/// requeues it for then.
pub async fn expire(
    client: &kube::Client,
    p: &ImagePreflight,
    now: SystemTime,
) -> Result<Action, K8sError> {
    let Some(at) = expires_at(p) else {
        return Ok(Action::await_change());
    };
    if let Ok(left) = at.duration_since(now) {
        if !left.is_zero() {
            return Ok(Action::requeue(left + Duration::from_millis(100)));
        }
    }
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let name = p.metadata.name.as_deref().unwrap_or("");
    let api: Api<ImagePreflight> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {
            tracing::info!(preflight = %fleet::key(p), "expired: deleted");
            Ok(Action::await_change())
        }
        // Gone already, or replaced by a new object of the same name.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(K8sError::Api {
            op: "delete imagepreflight",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImagePreflightSpec, ImagePreflightStatus};

    fn finished(ttl: Option<u32>, owned: bool) -> ImagePreflight {
        let mut p = ImagePreflight::new(
            "p",
            ImagePreflightSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            },
        );
        p.status = Some(ImagePreflightStatus {
            finished_at: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        if owned {
            p.metadata.owner_references = Some(vec![Default::default()]);
        }
        p
    }

    #[test]
    fn ttl_counts_from_finished_at_and_spares_owned_objects() {
        let t0 = fleet::parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(expires_at(&finished(None, false)), Some(t0 + DEFAULT_TTL));
        assert_eq!(
            expires_at(&finished(Some(5), false)),
            Some(t0 + Duration::from_secs(5))
        );
        assert_eq!(expires_at(&finished(Some(0), false)), None);
        assert_eq!(expires_at(&finished(Some(5), true)), None);
    }
}
