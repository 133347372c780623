//! `/healthz`, `/readyz`, `/metrics`, `/status` (axum, HTTP/1 only). Pre-flight is not
//! served here: the controller's assignments reach the agent through its node's
//! `NodePullStatus` ([`super::nodestatus`]), so no caller's token travels to a node.
//!
//! Two listeners: the main one serves everything and, in a cluster, only to callers the
//! API server authenticates and RBAC authorizes ([`super::auth`]); the health listener
//! (`health_listen`) serves `/healthz` and `/readyz` alone, unauthenticated, for the
//! kubelet's probes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub mod auth;
mod listener;

pub use listener::{serve, Limits, HEADER_READ_TIMEOUT, TLS_HANDSHAKE_TIMEOUT};

use self::auth::Authorizer;
use super::state::AgentState;

/// The main listener's routes, unauthenticated (standalone mode; unit tests).
pub fn router(state: Arc<AgentState>) -> Router {
    main_router(state, None)
}

/// The main listener's routes: with an `Authorizer`, every request first passes a
/// TokenReview (the agent's own audience) and a SubjectAccessReview.
pub fn main_router(state: Arc<AgentState>, authorizer: Option<Arc<Authorizer>>) -> Router {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state.clone());
    match authorizer {
        Some(a) => r.layer(axum::middleware::from_fn_with_state(
            (a, state.node.clone()),
            authenticate,
        )),
        None => r,
    }
}

/// The health listener's routes: liveness and readiness only, never authenticated.
pub fn health_router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn refusal(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let body = serde_json::json!({ "error": message, "status": status }).to_string() + "\n";
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"pullprobe\""),
        );
    }
    resp
}

/// TokenReview + SubjectAccessReview before any route. The token is never logged;
/// refusals name the user and the permission, never the token.
async fn authenticate(
    State((authorizer, node)): State<(Arc<Authorizer>, String)>,
    req: Request,
    next: Next,
) -> Response {
    // Liveness and readiness say only "ok" or not, as on the health listener: never
    // reviewed, so they answer through an API server outage (kube-rbac-proxy's
    // `--ignore-paths` for the same paths).
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let token = auth::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let access = auth::access_for(&node, req.method().as_str(), req.uri().path());
    // The client's address: unknown only when the router is served without the listener
    // (unit tests).
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let checked = match token {
        Ok(t) => match authorizer.authenticate(&t, client).await {
            Ok(c) => authorizer.authorize(&c, &access).await.map(|_| c),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match checked {
        Ok(_) => next.run(req).await,
        Err(e) => {
            tracing::info!(target: "pullprobe::http", path = %req.uri().path(), status = e.status(), refused = %e, "request refused");
            refusal(e.status(), &e.to_string())
        }
    }
}

async fn healthz(State(s): State<Arc<AgentState>>) -> impl IntoResponse {
    if s.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the probe loop made no progress recently\n",
        )
    }
}

async fn readyz(State(s): State<Arc<AgentState>>) -> impl IntoResponse {
    if s.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first probe cycle not finished\n",
        )
    }
}

async fn metrics(State(s): State<Arc<AgentState>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = s.metrics.encode_for(accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// `/status`, compact JSON; `?pretty` indents it.
async fn status(State(s): State<Arc<AgentState>>, RawQuery(q): RawQuery) -> impl IntoResponse {
    let mut doc = s.status.lock().map(|d| d.clone()).unwrap_or_default();
    doc.ready = s.ready();
    let pretty = q.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("pretty"))
    });
    let body = if pretty {
        serde_json::to_string_pretty(&doc)
    } else {
        serde_json::to_string(&doc)
    }
    .unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body + "\n")
}

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tls: {file}: {message}")]
    TlsFile { file: String, message: String },
    #[error("tls: {0}")]
    Tls(String),
}

/// The main listener's TLS config, per `tls.mode` (`None` = plain HTTP).
pub fn server_tls(
    cfg: &crate::agent::config::TlsConfig,
    node: &str,
) -> Result<Option<Arc<rustls::ServerConfig>>, HttpError> {
    use crate::agent::config::TlsMode;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match cfg.mode {
        TlsMode::Off => return Ok(None),
        TlsMode::SelfSigned => {
            let names = vec![node.to_string(), "localhost".to_string()];
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
            (vec![ck.cert.der().clone()], key.into())
        }
        TlsMode::Files => {
            let file_err = |f: &std::path::Path, m: String| HttpError::TlsFile {
                file: f.display().to_string(),
                message: m,
            };
            let (Some(cf), Some(kf)) = (&cfg.cert_file, &cfg.key_file) else {
                return Err(HttpError::Tls(
                    "mode `files` needs cert_file and key_file".into(),
                ));
            };
            let certs = CertificateDer::pem_file_iter(cf)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_err(cf, format!("not a PEM certificate chain ({e:?})")))?;
            // The key's content is never in a message: only what kind of error.
            let key = PrivateKeyDer::from_pem_file(kf)
                .map_err(|_| file_err(kf, "not a PEM private key".into()))?;
            (certs, key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpError::Tls(e.to_string()))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(sc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let state = Arc::new(AgentState::new("n1".into(), Duration::from_secs(60)));
        let app = router(state.clone());
        let (addr, h) = serve("127.0.0.1:0".parse().unwrap(), app, None, Limits::HEALTH)
            .await
            .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.cycle_done();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        // No Accept header: the Prometheus text format 0.0.4, as client_golang answers.
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("content-type: text/plain; version=0.0.4") && !m.contains("# EOF"),
            "{m}"
        );
        let st = get(addr, "/status").await;
        assert!(st.contains("\"node\":\"n1\""), "{st}");
        h.abort();
    }
}
