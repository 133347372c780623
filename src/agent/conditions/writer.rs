//! The condition writer: its own task, so an API server outage delays writes (retried
//! with the manager's backoff, `Retry-After` honoured) but never probing or local
//! reporting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Clock, ConditionManager};
use crate::agent::state::AgentState;

/// How often the writer looks for a due write (changes, heartbeats).
const SYNC_TICK: Duration = Duration::from_secs(1);
/// The shortest wait between two looks (no busy loop, whatever the clock says).
const SYNC_MIN_WAIT: Duration = Duration::from_millis(50);

/// The longest one condition write may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a condition write failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Api(crate::k8s::K8sError),
    #[error("no answer from the API server within {}s", WRITE_TIMEOUT.as_secs())]
    Timeout,
}

/// Write conditions when due, forever (cluster mode), looking every [`SYNC_TICK`] or when
/// a retry's backoff ends.
pub async fn sync_conditions(
    client: kube::Client,
    node: String,
    manager: Arc<Mutex<ConditionManager>>,
    clock: Arc<dyn Clock>,
    state: Arc<AgentState>,
) {
    loop {
        sync_once(&client, &node, &manager, clock.as_ref(), &state).await;
        // A retry goes when its jittered backoff says, not on the next whole tick (which
        // would round every node's wait up to the same second and undo the jitter).
        let retry = manager.lock().ok().and_then(|m| m.retry_in(clock.now()));
        let wait = retry.map_or(SYNC_TICK, |r| r.clamp(SYNC_MIN_WAIT, SYNC_TICK));
        tokio::time::sleep(wait).await;
    }
}

/// One write attempt if one is due. Returns true if a write was made and succeeded.
pub async fn sync_once(
    client: &kube::Client,
    node: &str,
    manager: &Mutex<ConditionManager>,
    clock: &dyn Clock,
    state: &AgentState,
) -> bool {
    let now = clock.now();
    let pending = manager.lock().ok().and_then(|m| m.pending_write(now));
    let Some(records) = pending else { return false };
    // Bounded: a hung API server must not hold the writer for kube's 295 s read timeout.
    let r = match tokio::time::timeout(
        WRITE_TIMEOUT,
        crate::k8s::node::patch_conditions(client, node, &records),
    )
    .await
    {
        Ok(r) => r.map_err(WriteError::Api),
        Err(_) => Err(WriteError::Timeout),
    };
    state.metrics.api_write("node_status", r.is_ok());
    let Ok(mut m) = manager.lock() else {
        return false;
    };
    match r {
        Ok(()) => {
            m.write_succeeded(now);
            true
        }
        Err(e) => {
            let retry_after = match &e {
                WriteError::Api(e) => e.retry_after(),
                WriteError::Timeout => None,
            };
            // From when it failed, not when it started: a write that took the whole
            // timeout still waits its backoff before the next one.
            let d = m.write_failed(clock.now(), retry_after);
            tracing::warn!(
                node,
                error = %e,
                retry_in_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                retry_after_s = retry_after.map(|r| r.as_secs()),
                "cannot write node conditions"
            );
            false
        }
    }
}
