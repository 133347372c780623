//! The operator side's API calls (`pullprobe preflight`, `pullprobe status`), with the
//! user's kubeconfig: Nodes, the agents' Pods, a ServiceAccount's imagePullSecrets, a
//! TokenRequest for an audience-bound token, Node Events, and one POST to an agent
//! through the API server's pod proxy (`pods/proxy`, the path `kubectl get --raw` uses).

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams};

use super::K8sError;

/// Nodes, optionally filtered by a label selector (`-l`), listed in pages of 500.
pub async fn list_nodes(
    client: &kube::Client,
    selector: Option<&str>,
) -> Result<Vec<Node>, K8sError> {
    let api: Api<Node> = Api::all(client.clone());
    let mut lp = ListParams::default().limit(500);
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await.map_err(K8sError::api("list nodes"))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// The agent Pods (`selector`) in `namespace`.
pub async fn list_pods(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> Result<Vec<Pod>, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(selector);
    Ok(api
        .list(&lp)
        .await
        .map_err(K8sError::api("list pods"))?
        .items)
}

/// A ServiceAccount's `imagePullSecrets` names; `None` when it does not exist.
pub async fn service_account_pull_secrets(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<String>>, K8sError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = api
        .get_opt(name)
        .await
        .map_err(K8sError::api("get serviceaccount"))?;
    Ok(sa.map(|sa| {
        sa.image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .collect()
    }))
}

/// A token for ServiceAccount `namespace/name` bound to `audience`, valid `seconds`
/// (TokenRequest; the API's minimum is 600).
pub async fn token_request(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audience: &str,
    seconds: i64,
) -> Result<String, K8sError> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let out = api
        .create_token_request(name, &Default::default(), &req)
        .await
        .map_err(K8sError::api("create serviceaccounts/token"))?;
    Ok(out.status.map(|s| s.token).unwrap_or_default())
}

/// core/v1 Events about Nodes in `namespace` (the agent posts them to `default`, as the
/// kubelet does), newest pages first is not guaranteed: callers sort.
pub async fn node_events(client: &kube::Client, namespace: &str) -> Result<Vec<Event>, K8sError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default()
        .fields("involvedObject.kind=Node")
        .limit(2000);
    Ok(api
        .list(&lp)
        .await
        .map_err(K8sError::api("list events"))?
        .items)
}

/// Where an agent listens, as the pod proxy addresses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddr {
    pub namespace: String,
    pub pod: String,
    /// `http` or `https`.
    pub scheme: String,
    pub port: u16,
}

impl AgentAddr {
    /// `/api/v1/namespaces/NS/pods/[https:]NAME:PORT/proxy/PATH`.
    pub fn proxy_path(&self, path: &str) -> String {
        let scheme = if self.scheme == "https" { "https:" } else { "" };
        format!(
            "/api/v1/namespaces/{}/pods/{scheme}{}:{}/proxy/{}",
            self.namespace,
            self.pod,
            self.port,
            path.trim_start_matches('/')
        )
    }
}

/// What came back through the proxy.
#[derive(Clone, Debug)]
pub struct ProxyReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a proxied request got no reply to read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the reply is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Transport(String),
}

/// POST `body` to the agent at `addr` through the API server, with the agent's bearer
/// token in `X-Pullprobe-Authorization` (the API server consumes `Authorization`).
/// The reply is read up to `max_bytes`; all of it within `timeout`.
pub async fn proxy_post(
    client: &kube::Client,
    addr: &AgentAddr,
    path: &str,
    body: Vec<u8>,
    agent_token: Option<&str>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<ProxyReply, ProxyError> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(addr.proxy_path(path))
        .header("content-type", "application/json")
        .header("accept", "application/json");
    if let Some(t) = agent_token {
        req = req.header("x-pullprobe-authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(kube::client::Body::from(body))
        .map_err(|e| ProxyError::Transport(e.to_string()))?;
    let fut = async {
        let resp = client
            .send(req)
            .await
            .map_err(|e| ProxyError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), max_bytes);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ProxyError::TooLarge(max_bytes))
            }
            Err(e) => return Err(ProxyError::Transport(e.to_string())),
        };
        Ok(ProxyReply {
            status,
            body: bytes.to_vec(),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ProxyError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths() {
        let a = AgentAddr {
            namespace: "pullprobe".into(),
            pod: "pullprobe-x".into(),
            scheme: "http".into(),
            port: 9808,
        };
        assert_eq!(
            a.proxy_path("/preflight"),
            "/api/v1/namespaces/pullprobe/pods/pullprobe-x:9808/proxy/preflight"
        );
        let s = AgentAddr {
            scheme: "https".into(),
            ..a
        };
        assert_eq!(
            s.proxy_path("status"),
            "/api/v1/namespaces/pullprobe/pods/https:pullprobe-x:9808/proxy/status"
        );
    }
}
