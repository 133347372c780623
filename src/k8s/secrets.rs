//! Pods' pull secrets, fetched only when `pull_secrets: true` (needs `get secrets`, which
//! the default ClusterRole does not grant: manifests/components/pull-secrets/).

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;

use super::K8sError;
use crate::credentials::node::PullSecretData;

/// One Secret as the kubelet's keyring reads it (type and decoded data); `None` when it
/// does not exist (the kubelet then goes on without it). The data never reaches a log:
/// `PullSecretData`'s Debug prints only the keys.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<PullSecretData>, K8sError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let Some(s) = api
        .get_opt(name)
        .await
        .map_err(K8sError::api("get secret"))?
    else {
        return Ok(None);
    };
    Ok(Some(PullSecretData {
        namespace: namespace.to_string(),
        name: name.to_string(),
        secret_type: s.type_.unwrap_or_default(),
        data: s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    }))
}
