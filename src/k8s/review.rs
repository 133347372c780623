//! TokenReview and SubjectAccessReview: who the caller of an agent endpoint is, and
//! whether RBAC lets them — the pattern of kube-rbac-proxy and of the kubelet's own API
//! (`--authentication-token-webhook`, `--authorization-mode=Webhook`): the agent asks the
//! API server, which keeps every rule; the agent itself grants nothing.
//!
//! The token is sent in the review's body and nowhere else: never logged, never kept
//! (callers cache only a hash of it).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::K8sError;

/// An authenticated caller, as the API server knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a caller asks to do, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A non-resource URL (`get /metrics`: the rule Prometheus already has for the
    /// kubelet's and kube-rbac-proxy's metrics).
    NonResource { path: String, verb: String },
    /// A resource, possibly virtual (`pullprobe.io` `nodes/status`, name = the node):
    /// RBAC matches group, resource, subresource and name as strings, so no API needs to
    /// serve it for an admin to grant or deny it.
    Resource {
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
        verb: String,
    },
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::NonResource { path, verb } => write!(f, "{verb} {path}"),
            Access::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
                verb,
            } => {
                let sub = if subresource.is_empty() {
                    String::new()
                } else {
                    format!("/{subresource}")
                };
                let g = if group.is_empty() {
                    String::new()
                } else {
                    format!(".{group}")
                };
                let ns = if namespace.is_empty() {
                    String::new()
                } else {
                    format!(" in namespace {namespace}")
                };
                let n = if name.is_empty() {
                    String::new()
                } else {
                    format!(" {name}")
                };
                write!(f, "{verb} {resource}{g}{sub}{n}{ns}")
            }
        }
    }
}

/// A SubjectAccessReview's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The authorizer's reason (RBAC's is the binding that allowed it), if any.
    pub reason: String,
}

/// TokenReview: the token's identity, or `None` when the API server does not accept it
/// for any of `audiences` (empty = the API server's own audiences).
pub async fn token_review(
    client: &kube::Client,
    token: &str,
    audiences: &[String],
) -> Result<Option<Identity>, K8sError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let out = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(K8sError::api("create tokenreview"))?;
    let Some(status) = out.status else {
        return Ok(None);
    };
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    let Some(user) = status.user else {
        return Ok(None);
    };
    Ok(Some(Identity {
        username: user.username.unwrap_or_default(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    }))
}

/// SubjectAccessReview: may `who` do `access`?
pub async fn access_review(
    client: &kube::Client,
    who: &Identity,
    access: &Access,
) -> Result<Decision, K8sError> {
    let mut spec = SubjectAccessReviewSpec {
        user: Some(who.username.clone()),
        uid: (!who.uid.is_empty()).then(|| who.uid.clone()),
        groups: Some(who.groups.clone()),
        extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
        ..Default::default()
    };
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match access {
        Access::NonResource { path, verb } => {
            spec.non_resource_attributes = Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some(verb.clone()),
            });
        }
        Access::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            verb,
        } => {
            spec.resource_attributes = Some(ResourceAttributes {
                group: Some(group.clone()),
                resource: Some(resource.clone()),
                subresource: opt(subresource),
                namespace: opt(namespace),
                name: opt(name),
                verb: Some(verb.clone()),
                ..Default::default()
            });
        }
    }
    let review = SubjectAccessReview {
        spec,
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let out = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(K8sError::api("create subjectaccessreview"))?;
    let status = out.status.unwrap_or_default();
    Ok(Decision {
        allowed: status.allowed && status.denied != Some(true),
        reason: status.reason.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reads_like_an_rbac_rule() {
        let a = Access::Resource {
            group: "pullprobe.io".into(),
            resource: "nodes".into(),
            subresource: "preflight".into(),
            namespace: String::new(),
            name: "node-a".into(),
            verb: "create".into(),
        };
        assert_eq!(a.to_string(), "create nodes.pullprobe.io/preflight node-a");
        let m = Access::NonResource {
            path: "/metrics".into(),
            verb: "get".into(),
        };
        assert_eq!(m.to_string(), "get /metrics");
    }
}
