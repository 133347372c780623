//! Reads of Nodes and ServiceAccounts (the controller's candidate nodes, a ServiceAccount's
//! imagePullSecrets, `pullprobe status`) and a TokenRequest for an audience-bound token
//! (components/provider-sa-tokens). Nothing here talks to an agent.

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
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
