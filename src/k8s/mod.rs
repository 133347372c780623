//! The only place that talks to the Kubernetes API (kube 5, k8s-openapi v1_33 types,
//! which deserialize fine from servers as old as 1.20).

pub mod events;
pub mod node;
pub mod nodes;
pub mod nodestatus;
pub mod pods;
pub mod preflights;
pub mod review;
pub mod satokens;
pub mod secrets;

use std::path::Path;

/// Why a Kubernetes API call failed. Each variant names the operation.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no cluster config (not in a pod and no kubeconfig): {0}")]
    NoConfig(String),
    #[error("building the API client: {0}")]
    Client(String),
    #[error("{op}: {source}")]
    Api {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The server answered a write with an error status.
    #[error("{op}: the API server answered {code}{}", reason_suffix(.reason))]
    Refused {
        op: &'static str,
        code: u16,
        /// The Status `reason` (`TooManyRequests`, `InternalError`, …), if it sent one.
        reason: String,
        /// How long the server asked the client to wait.
        retry_after: Option<std::time::Duration>,
    },
    /// The API server did not answer in time.
    #[error("{0}: the API server did not answer in time")]
    Timeout(&'static str),
    /// Not asked: a review failed to get an answer moments ago (the agent backs off).
    #[error("the API server failed to answer moments ago; not asked again yet")]
    BackingOff,
}

fn reason_suffix(reason: &str) -> String {
    match reason {
        "" => String::new(),
        r => format!(" {r}"),
    }
}

impl K8sError {
    pub(crate) fn api(op: &'static str) -> impl FnOnce(kube::Error) -> K8sError {
        move |source| K8sError::Api { op, source }
    }

    /// HTTP status of an API error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            K8sError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            K8sError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked us to wait before trying again (`Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            K8sError::Refused { retry_after, .. } => *retry_after,
            K8sError::Api {
                source: kube::Error::Api(s),
                ..
            } => s
                .details
                .as_ref()
                .map(|d| u64::from(d.retry_after_seconds))
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs),
            _ => None,
        }
    }
}

/// A client from an explicit kubeconfig, else in-cluster config, else `$KUBECONFIG` /
/// `~/.kube/config` (`kube::Config::infer`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, K8sError> {
    let config = config(kubeconfig).await?;
    kube::Client::try_from(config).map_err(|e| K8sError::Client(e.to_string()))
}

/// The client config [`client`] builds on (the CLI also reads its bearer token).
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, K8sError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(|e| K8sError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| K8sError::NoConfig(e.to_string()))?,
    };
    // The agent owns every retry (the condition writer's jittered backoff honouring
    // Retry-After, the pod watcher's backoff). kube's built-in policy retries 429/503/504
    // up to 15 times from 5 ms inside one call, which multiplies writes against an API
    // server that is shedding load and hides them from the writer's backoff and metrics.
    let mut config = config;
    config.default_retry = false;
    Ok(config)
}
