//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics
//! (k8s.io/client-go/tools/leaderelection/leaderelection.go, `tryAcquireOrRenew`,
//! `acquire`, `renew`, `release`):
//!
//! - a candidate reads the Lease; when its record (holder, renewTime, …) differs from the
//!   one it saw last, it notes *its own* clock as the observed time — expiry is measured
//!   from that, never from the holder's `renewTime`, so clock skew between nodes does
//!   not matter;
//! - it takes the Lease only when the holder is empty or `leaseDurationSeconds` have passed
//!   since the record last changed, by an update carrying the read `resourceVersion` (two
//!   candidates cannot both win: the second gets 409);
//! - the holder renews every `retry_period`; when no renewal succeeds for `renew_deadline`
//!   it steps down (the caller then stops reconciling, as `OnStoppedLeading`);
//! - on shutdown the holder releases the Lease (empty holder, 1 s duration) so the other
//!   replica takes over at once (`ReleaseOnCancel`).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::k8s::K8sError;

/// Timing of the election (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The record last read and when this process first saw it.
    observed: Option<(LeaseSpec, Instant)>,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leader,
    /// Someone else holds an unexpired Lease (or won the race).
    Follower,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate holds the Lease (`acquire`: every `retry_period`, with
    /// up to 20% jitter, as `wait.JitterUntil`).
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => return,
                Ok(Attempt::Follower) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot read or write the Lease")
                }
            }
            tokio::time::sleep(jitter(self.timing.retry_period)).await;
        }
    }

    /// Renews while leading; returns when no renewal succeeded for `renew_deadline`
    /// (leadership is lost: the caller must stop acting as the leader).
    pub async fn hold(&mut self) {
        loop {
            let deadline = Instant::now() + self.timing.renew_deadline;
            let renewed = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(Ok(Attempt::Leader)) => break true,
                    Ok(Ok(Attempt::Follower)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader election: renewing the Lease failed")
                    }
                    Err(_) => break false,
                }
                if Instant::now() + self.timing.retry_period > deadline {
                    break false;
                }
                tokio::time::sleep(self.timing.retry_period).await;
            };
            if !renewed {
                return;
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Gives the Lease up when this candidate holds it (`release`).
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: releasing the Lease failed");
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, K8sError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(K8sError::api("get lease"))?
        else {
            return self.create().await;
        };
        let old = lease.spec.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(o, _)| *o != old);
        if changed {
            self.observed = Some((old.clone(), Instant::now()));
        }
        let observed_at = self
            .observed
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now);
        let holder = old.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(
            u64::try_from(old.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let mine = holder == self.identity;
        if !holder.is_empty() && !mine && observed_at + duration > Instant::now() {
            return Ok(Attempt::Follower);
        }
        let t = now();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds(self.timing.lease_duration)),
            acquire_time: if mine {
                old.acquire_time.clone()
            } else {
                Some(t.clone())
            },
            renew_time: Some(t),
            lease_transitions: Some(if mine {
                old.lease_transitions.unwrap_or(0)
            } else {
                old.lease_transitions.unwrap_or(0).saturating_add(1)
            }),
            ..old
        };
        lease.spec = Some(spec.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((spec, Instant::now()));
                if !mine {
                    tracing::info!(identity = %self.identity, "leader election: acquired the Lease");
                }
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Follower),
            Err(e) => Err(K8sError::Api {
                op: "update lease",
                source: e,
            }),
        }
    }

    async fn create(&mut self) -> Result<Attempt, K8sError> {
        let t = now();
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds(self.timing.lease_duration)),
            acquire_time: Some(t.clone()),
            renew_time: Some(t),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(spec.clone()),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = Some((spec, Instant::now()));
                tracing::info!(identity = %self.identity, "leader election: created and acquired the Lease");
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Follower),
            Err(e) => Err(K8sError::Api {
                op: "create lease",
                source: e,
            }),
        }
    }
}

/// `d` plus up to 20% (client-go's `JitterFactor` 1.2).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}
