//! Service-account tokens for credential providers with `tokenAttributes` (KEP-4412), for
//! the ServiceAccounts the agent config names only
//! (`node.credential_provider_service_accounts`, one per provider). The kubelet mints a
//! token for the pod's ServiceAccount with the provider's audience, bound to the pod
//! (`serviceAccountProvider.getServiceAccountToken`), and reads the ServiceAccount for its
//! uid and annotations (`getServiceAccountData`). The agent checks for the node, not for a
//! pod, so its tokens are not bound to one; it needs `get` and `create serviceaccounts/token`
//! on exactly those ServiceAccounts (manifests/components/provider-sa-tokens).
//!
//! Tokens are asked for [`TOKEN_SECONDS`] (the API's minimum) and reused for half of it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::credentials::satoken::{ServiceAccountToken, ServiceAccountTokens, TokenError};
use crate::credentials::Secret;

/// Lifetime asked for a token (TokenRequest's minimum).
pub const TOKEN_SECONDS: i64 = 600;
/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A ServiceAccount named in the agent config.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccountRef {
    pub namespace: String,
    pub name: String,
}

/// Mints tokens with TokenRequest for the named ServiceAccounts.
pub struct KubeTokens {
    client: kube::Client,
    /// Provider name → its ServiceAccount.
    accounts: BTreeMap<String, AccountRef>,
    cache: tokio::sync::Mutex<HashMap<TokenKey, (ServiceAccountToken, Instant)>>,
}

/// (namespace, name, audience) of a cached token; the value says when to ask again.
type TokenKey = (String, String, String);

impl std::fmt::Debug for KubeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTokens")
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

impl KubeTokens {
    pub fn new(client: kube::Client, accounts: BTreeMap<String, AccountRef>) -> KubeTokens {
        KubeTokens {
            client,
            accounts,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn mint(
        &self,
        a: &AccountRef,
        audience: &str,
    ) -> Result<ServiceAccountToken, TokenError> {
        let subject = format!("ServiceAccount {}/{}", a.namespace, a.name);
        let fail = |e: String| TokenError(format!("{subject}: {e}"));
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &a.namespace);
        let sa = tokio::time::timeout(CALL_TIMEOUT, api.get(&a.name))
            .await
            .map_err(|_| fail("get: the API server did not answer in time".into()))?
            .map_err(|e| {
                fail(format!(
                    "get: {}",
                    super::K8sError::api("get serviceaccounts")(e)
                ))
            })?;
        let token = tokio::time::timeout(
            CALL_TIMEOUT,
            super::nodes::token_request(
                &self.client,
                &a.namespace,
                &a.name,
                audience,
                TOKEN_SECONDS,
            ),
        )
        .await
        .map_err(|_| fail("TokenRequest: the API server did not answer in time".into()))?
        .map_err(|e| fail(e.to_string()))?;
        if token.is_empty() {
            return Err(fail("TokenRequest answered without a token".into()));
        }
        Ok(ServiceAccountToken {
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            uid: sa.metadata.uid.unwrap_or_default(),
            annotations: sa.metadata.annotations.unwrap_or_default(),
            token: Secret::new(token),
        })
    }
}

impl ServiceAccountTokens for KubeTokens {
    fn token<'a>(
        &'a self,
        provider: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Option<Result<ServiceAccountToken, TokenError>>> {
        Box::pin(async move {
            let a = self.accounts.get(provider)?;
            let key = (a.namespace.clone(), a.name.clone(), audience.to_string());
            // One mint at a time per agent; tokens are reused for half their lifetime.
            let mut cache = self.cache.lock().await;
            if let Some((t, fresh_until)) = cache.get(&key) {
                if Instant::now() < *fresh_until {
                    return Some(Ok(t.clone()));
                }
            }
            let minted = self.mint(a, audience).await;
            if let Ok(t) = &minted {
                let half = Duration::from_secs(TOKEN_SECONDS.unsigned_abs() / 2);
                if let Some(until) = Instant::now().checked_add(half) {
                    cache.insert(key, (t.clone(), until));
                }
            }
            Some(minted)
        })
    }
}
