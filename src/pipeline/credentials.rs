//! The credentials the kubelet would pass for an image, in its order — a pod's pull
//! secrets, the node's docker config, credential-provider plugins (which this runs) — or,
//! on a workstation, what `--username`/`--auth-file`/`$DOCKER_CONFIG` name.

use std::path::Path;

use crate::credentials::docker_config::{cli_search_paths, DockerConfig, DockerConfigError};
use crate::credentials::node::{self as kubelet, PullSecretData, PullSecretError};
use crate::credentials::provider::ProviderError;
use crate::credentials::satoken::ServiceAccountTokens;
use crate::credentials::SourcedCredential;
use crate::nodeconfig::NodeConfig;
use crate::reference::ImageRef;

/// Whose credentials a check uses.
#[derive(Clone, Copy, Debug, Default)]
pub enum Creds<'a> {
    /// The node's own: config.json, credential providers (and the runtime's config).
    #[default]
    Node,
    /// A pod's pull secrets (fetched by the caller), then the node's, as the kubelet does.
    PullSecrets(&'a [PullSecretData]),
}

/// A credential the kubelet would fail on or go without. Typed so that a pod's problem
/// (an Event on the Pod) and the node's (a Node condition) are told apart by kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialProblem {
    /// A pod's pull secret cannot be used: the kubelet fails the pull.
    #[error("{0}; the kubelet fails the pull")]
    PullSecretInvalid(PullSecretError),
    /// A credential-provider plugin returned nothing: the node's credentials are missing.
    #[error(transparent)]
    PluginFailed(ProviderError),
    /// A provider with `tokenAttributes` (KEP-4412) was not run as the kubelet runs it: no
    /// ServiceAccount named for it ("needs a service-account token: not reproduced"), or
    /// its token could not be minted. The kubelet has the pod's token: not a node problem.
    #[error(transparent)]
    ServiceAccountToken(ProviderError),
}

impl CredentialProblem {
    /// True when the problem is the node's own (a Node condition), not a pod's.
    pub fn is_node(&self) -> bool {
        matches!(self, CredentialProblem::PluginFailed(_))
    }
}

/// The kubelet's credentials for `image` on this node, in its attempt order.
pub async fn kubelet_credentials(
    nc: &NodeConfig,
    image: &ImageRef,
    creds: Creds<'_>,
    tokens: Option<&dyn ServiceAccountTokens>,
) -> (Vec<SourcedCredential>, Vec<CredentialProblem>) {
    let mut problems = Vec::new();
    let secrets = match creds {
        Creds::Node => Vec::new(),
        Creds::PullSecrets(data) => {
            let (found, errs) = kubelet::pull_secret_credentials(data, image);
            problems.extend(errs.into_iter().map(CredentialProblem::PullSecretInvalid));
            found
        }
    };
    let node = nc
        .node_docker_config
        .as_ref()
        .map(|c| c.lookup_kubelet(image))
        .unwrap_or_default();
    let mut plugin_creds = Vec::new();
    if let Some(r) = &nc.plugins {
        let (c, errs) = r.lookup_with(image, tokens).await;
        plugin_creds = c;
        problems.extend(errs.into_iter().map(|e| match e.is_service_account() {
            true => CredentialProblem::ServiceAccountToken(e),
            false => CredentialProblem::PluginFailed(e),
        }));
    }
    (
        kubelet::kubelet_order(secrets, node, plugin_creds),
        problems,
    )
}

/// A workstation's Docker config (docker / `ctr` semantics: the entry for the registry
/// host). An explicit `--auth-file` must load; a default-location file that does not
/// exist is simply absent.
pub fn load_auth_file(explicit: Option<&Path>) -> Result<Option<DockerConfig>, DockerConfigError> {
    if let Some(p) = explicit {
        return DockerConfig::load(p).map(Some);
    }
    let env = |k: &str| std::env::var(k).ok();
    for p in cli_search_paths(&env) {
        if p.exists() {
            let cfg = DockerConfig::load(&p)?;
            if cfg.has_cred_helpers {
                tracing::warn!(
                    path = %p.display(),
                    "config.json names credential helpers; pullprobe does not run them (the kubelet does not either)"
                );
            }
            return Ok(Some(cfg));
        }
    }
    Ok(None)
}
