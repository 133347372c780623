//! The HTTPS listener: the agent's bounded accept loop ([`crate::agent::serve::serve`]:
//! header and idle timeouts, TLS handshake timeout, connection caps), with the certificate
//! of the [`CertSlot`](super::cert::CertSlot) on every handshake, request bodies up to the
//! API server's own 3 MiB, and each review judged off the async threads within a deadline.
//!
//! Anything that reaches the port can send a review, not only the API server: at most
//! [`JUDGING`] bodies are read and judged at once (a review waits [`QUEUE_WAIT`] for its
//! turn, then gets 503 and the API server's failurePolicy Ignore), so many clients sending
//! 3 MiB each cannot make the controller hold more than a few of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;

use super::cert::CertSlot;
use super::review::{answer, Namespaces};
use super::view::FleetView;
use super::WebhookError;
use crate::agent::serve::{serve as serve_bounded, Limits};

/// The API server sends at most 3 MiB (its request size limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// The API server waits `timeoutSeconds: 1`; answer before that or not at all (failurePolicy
/// Ignore lets the write through).
pub const DEADLINE: Duration = Duration::from_millis(900);

/// Reviews read and judged at once.
pub const JUDGING: usize = 4;
/// How long a review waits for its turn.
pub const QUEUE_WAIT: Duration = Duration::from_millis(300);

/// Every caller is an API server (a few addresses): the per-client cap is the global one.
const LIMITS: Limits = Limits {
    max_connections: 256,
    max_per_client: 256,
    max_age: Duration::from_secs(60),
    max_request: Duration::from_secs(5),
};

#[derive(Clone)]
struct Ctx {
    fleet: Arc<dyn FleetView>,
    namespaces: Arc<dyn Namespaces>,
    judging: Arc<Semaphore>,
}

/// Binds `addr` and serves `/validate` in the background.
pub async fn serve(
    addr: SocketAddr,
    slot: Arc<CertSlot>,
    fleet: Arc<dyn FleetView>,
    namespaces: Arc<dyn Namespaces>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(slot);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let app = Router::new()
        .route("/validate", post(validate))
        .with_state(Ctx {
            fleet,
            namespaces,
            judging: Arc::new(Semaphore::new(JUDGING)),
        });
    Ok(serve_bounded(addr, app, Some(Arc::new(tls)), LIMITS).await?)
}

async fn validate(State(ctx): State<Ctx>, body: Body) -> Response {
    let turn = tokio::time::timeout(QUEUE_WAIT, ctx.judging.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = turn else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let judged = async move {
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
        let json = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            answer(&body, &*ctx.fleet, &*ctx.namespaces)
        });
        json.await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    };
    match tokio::time::timeout(DEADLINE, judged).await {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(code)) => code.into_response(),
        Err(_) => {
            tracing::warn!(target: "pullprobe::webhook", "a review was not judged in time");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
