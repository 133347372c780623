//! `/healthz`, `/readyz`, `/metrics`, `/status` (axum, HTTP/1 only).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;
use super::status::StatusDoc;

/// State shared by the loop and the HTTP server.
#[derive(Debug)]
pub struct AgentState {
    pub node: String,
    pub metrics: Metrics,
    /// The `/status` document as of the last cycle.
    pub status: Mutex<StatusDoc>,
    started: Instant,
    last_cycle: Mutex<Option<Instant>>,
    /// `/healthz` fails when no cycle completed within this long.
    stale_after: Mutex<Duration>,
    ready: AtomicBool,
}

impl AgentState {
    pub fn new(node: String, interval: Duration) -> AgentState {
        AgentState {
            node: node.clone(),
            metrics: Metrics::new(),
            status: Mutex::new(StatusDoc {
                node: node.clone(),
                ..StatusDoc::default()
            }),
            started: Instant::now(),
            last_cycle: Mutex::new(None),
            stale_after: Mutex::new(stale_after(interval)),
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_interval(&self, interval: Duration) {
        if let Ok(mut s) = self.stale_after.lock() {
            *s = stale_after(interval);
        }
    }

    pub fn cycle_done(&self) {
        if let Ok(mut l) = self.last_cycle.lock() {
            *l = Some(Instant::now());
        }
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Alive: a cycle completed recently (or the agent is still within its first one).
    pub fn healthy(&self) -> bool {
        let stale = self
            .stale_after
            .lock()
            .map(|s| *s)
            .unwrap_or(Duration::from_secs(300));
        let last = self.last_cycle.lock().ok().and_then(|l| *l);
        match last {
            Some(t) => t.elapsed() <= stale,
            None => self.started.elapsed() <= stale,
        }
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Three intervals plus the longest probe deadline, so one slow cycle is not a restart.
fn stale_after(interval: Duration) -> Duration {
    interval * 3 + Duration::from_secs(60)
}

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

async fn healthz(State(s): State<Arc<AgentState>>) -> impl IntoResponse {
    if s.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no probe cycle completed recently\n",
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
}

/// Bind now (so a port conflict fails the start), serve in the background.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AgentState>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let (addr, h) = serve("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.cycle_done();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("application/openmetrics-text") && m.contains("# EOF"),
            "{m}"
        );
        let st = get(addr, "/status").await;
        assert!(st.contains("\"node\":\"n1\""), "{st}");
        h.abort();
    }
}
