//! Pods' pull secrets, fetched only when `pull_secrets: true` (needs `get secrets`, which
//! the default ClusterRole does not grant).

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;

use super::K8sError;
use crate::credentials::Secret;

/// One pull secret's docker config JSON (`.dockerconfigjson` or legacy `.dockercfg`).
#[derive(Clone, Debug)]
pub struct PullSecretJson {
    pub namespace: String,
    pub name: String,
    /// `.dockerconfigjson` or `.dockercfg`.
    pub key: &'static str,
    pub json: Secret,
}

pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<PullSecretJson>, K8sError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let Some(s) = api
        .get_opt(name)
        .await
        .map_err(K8sError::api("get secret"))?
    else {
        return Ok(None);
    };
    let data = s.data.unwrap_or_default();
    for key in [".dockerconfigjson", ".dockercfg"] {
        if let Some(bytes) = data.get(key) {
            if let Ok(text) = String::from_utf8(bytes.0.clone()) {
                return Ok(Some(PullSecretJson {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    key,
                    json: Secret::new(text),
                }));
            }
        }
    }
    Ok(None)
}
