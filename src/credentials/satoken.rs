//! Service-account tokens for credential providers (KEP-4412: alpha in 1.33, beta in 1.34):
//! a provider with `tokenAttributes` gets, from the kubelet, a token for the pod's
//! ServiceAccount with the configured audience (TokenRequest bound to the pod) and the
//! ServiceAccount's annotations named in the config, in its `CredentialProviderRequest`
//! (`serviceAccountToken`, `serviceAccountAnnotations`).
//!
//! Reproduced from kubernetes pkg/credentialprovider/plugin: `config.go`
//! `validateCredentialProviderConfig` (the `tokenAttributes` rules), `plugin.go`
//! `pluginProvider.provide` (no service account and `requireServiceAccount` → the plugin
//! is not run; a missing required annotation → not run; the token and annotations go to
//! the plugin; the cache key gains the token's hash (`cacheType: Token`) or the
//! ServiceAccount's namespace, name, uid and annotations (`cacheType: ServiceAccount`);
//! a plugin echoing the token as a password is refused unless `cacheType` is `Token`)
//! and `serviceAccountProvider.getServiceAccountToken`.
//!
//! Minting a token for any ServiceAccount is a privilege no DaemonSet should hold by
//! default, so pullprobe reproduces this only for the ServiceAccounts its config names
//! (an opt-in component grants `serviceaccounts/token` for those names only); for any
//! other the state is "needs a service-account token: not reproduced", which is never a
//! node problem. The token is not bound to a pod (the agent checks for the node, not for
//! one pod): a plugin that checks the `kubernetes.io.pod` claim sees none.

use std::collections::BTreeMap;
use std::path::Path;

use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::provider::{ProviderConfigError, PLUGIN_API_V1};
use super::Secret;
use crate::redact;

/// `tokenAttributes.cacheType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCacheType {
    /// Answers cached per token (a new token runs the plugin again).
    Token,
    /// Answers cached per ServiceAccount (namespace, name, uid, annotations).
    ServiceAccount,
}

/// A provider's `tokenAttributes`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAttributes {
    pub audience: String,
    pub cache_type: TokenCacheType,
    pub require_service_account: bool,
    pub required_annotation_keys: Vec<String>,
    pub optional_annotation_keys: Vec<String>,
}

/// A ServiceAccount's token and what the kubelet sends with it.
#[derive(Clone, Debug)]
pub struct ServiceAccountToken {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Every annotation of the ServiceAccount (the provider picks its keys).
    pub annotations: BTreeMap<String, String>,
    pub token: Secret,
}

impl ServiceAccountToken {
    /// `namespace/name`.
    pub fn subject(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why no token could be had for a named ServiceAccount (never holds a token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Where tokens come from: the agent mints them with TokenRequest for the ServiceAccounts
/// its config names (`k8s::satokens`). The core holds no Kubernetes client.
pub trait ServiceAccountTokens: Send + Sync + std::fmt::Debug {
    /// A token with `audience` for the ServiceAccount named for `provider`; `None` when
    /// none is named (the provider's token is not reproduced).
    fn token<'a>(
        &'a self,
        provider: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Option<Result<ServiceAccountToken, TokenError>>>;
}

/// What goes to the plugin with the image, and the cache key part that goes with it.
#[derive(Debug)]
pub struct TokenRequestPart {
    pub subject: String,
    pub token: Secret,
    pub annotations: BTreeMap<String, String>,
    pub cache_key: String,
}

impl TokenAttributes {
    /// The annotations the kubelet passes (`getServiceAccountData`): every required key
    /// (`Err(key)` when one is missing: the kubelet does not run the plugin), and the
    /// optional keys present.
    pub fn annotations_for(
        &self,
        sa: &ServiceAccountToken,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for k in &self.required_annotation_keys {
            let v = sa.annotations.get(k).ok_or_else(|| k.clone())?;
            out.insert(k.clone(), v.clone());
        }
        for k in &self.optional_annotation_keys {
            if let Some(v) = sa.annotations.get(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(out)
    }

    /// The request part for `sa`, or the missing required annotation key.
    pub fn request_part(&self, sa: ServiceAccountToken) -> Result<TokenRequestPart, String> {
        let annotations = self.annotations_for(&sa)?;
        let cache_key = match self.cache_type {
            TokenCacheType::Token => {
                format!("token:{}", hex::encode(Sha256::digest(sa.token.expose())))
            }
            TokenCacheType::ServiceAccount => {
                let mut h = Sha256::new();
                for part in [&sa.namespace, &sa.name, &sa.uid] {
                    h.update(part.as_bytes());
                    h.update([0]);
                }
                for (k, v) in &annotations {
                    h.update(k.as_bytes());
                    h.update([1]);
                    h.update(v.as_bytes());
                    h.update([0]);
                }
                format!("sa:{}", hex::encode(h.finalize()))
            }
        };
        Ok(TokenRequestPart {
            subject: sa.subject(),
            token: sa.token,
            annotations,
            cache_key,
        })
    }
}

type Fields<'a> = &'a dyn Fn(&str) -> String;

fn cfg_err(file: &Path, field: String, message: impl Into<String>) -> ProviderConfigError {
    ProviderConfigError {
        file: file.to_path_buf(),
        field,
        message: message.into(),
    }
}

/// `tokenAttributes` of provider field path `f`, for a provider speaking `api_version`.
pub fn parse_token_attributes(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
    api_version: &str,
) -> Result<Option<TokenAttributes>, ProviderConfigError> {
    let t = match o.get("tokenAttributes") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(t)) => t,
        Some(_) => return Err(cfg_err(file, f("tokenAttributes"), "must be a mapping")),
    };
    let tf = |k: &str| f(&format!("tokenAttributes.{k}"));
    if api_version != PLUGIN_API_V1 {
        return Err(cfg_err(
            file,
            f("tokenAttributes"),
            format!("tokenAttributes is only supported for {PLUGIN_API_V1} API version"),
        ));
    }
    let audience = t
        .get("serviceAccountTokenAudience")
        .and_then(Value::as_str)
        .unwrap_or("");
    if audience.is_empty() {
        return Err(cfg_err(
            file,
            tf("serviceAccountTokenAudience"),
            "is required",
        ));
    }
    let cache_type = match t.get("cacheType").and_then(Value::as_str) {
        Some("Token") => TokenCacheType::Token,
        Some("ServiceAccount") => TokenCacheType::ServiceAccount,
        other => {
            return Err(cfg_err(
                file,
                tf("cacheType"),
                format!(
                    "must be Token or ServiceAccount, found {}",
                    other.map_or("nothing".to_string(), redact::keyword)
                ),
            ))
        }
    };
    let Some(Value::Bool(require_service_account)) = t.get("requireServiceAccount") else {
        return Err(cfg_err(file, tf("requireServiceAccount"), "is required"));
    };
    let keys = |k: &str| annotation_keys(file, &tf(k), t.get(k));
    let required = keys("requiredServiceAccountAnnotationKeys")?;
    let optional = keys("optionalServiceAccountAnnotationKeys")?;
    if !require_service_account && !required.is_empty() {
        return Err(cfg_err(
            file,
            tf("requiredServiceAccountAnnotationKeys"),
            "requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set",
        ));
    }
    if let Some(k) = required.iter().find(|k| optional.contains(k)) {
        return Err(cfg_err(
            file,
            f("tokenAttributes"),
            format!(
                "annotation key {} cannot be both required and optional",
                redact::keyword(k)
            ),
        ));
    }
    Ok(Some(TokenAttributes {
        audience: audience.to_string(),
        cache_type,
        require_service_account: *require_service_account,
        required_annotation_keys: required,
        optional_annotation_keys: optional,
    }))
}

/// Annotation keys: qualified names (case-insensitive), no duplicates
/// (`validateServiceAccountAnnotationKeys`).
fn annotation_keys(
    file: &Path,
    field: &str,
    v: Option<&Value>,
) -> Result<Vec<String>, ProviderConfigError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(cfg_err(file, field.to_string(), "must be a list")),
    };
    let mut out: Vec<String> = Vec::new();
    for k in list {
        let Some(k) = k.as_str() else {
            return Err(cfg_err(file, field.to_string(), "must be strings"));
        };
        if !is_qualified_name(&k.to_ascii_lowercase()) {
            return Err(cfg_err(
                file,
                field.to_string(),
                format!("{} is not a qualified name", redact::keyword(k)),
            ));
        }
        if out.iter().any(|o| o == k) {
            return Err(cfg_err(
                file,
                field.to_string(),
                format!("duplicate key {}", redact::keyword(k)),
            ));
        }
        out.push(k.to_string());
    }
    Ok(out)
}

/// apimachinery `IsQualifiedName`: an optional DNS-1123 subdomain prefix (≤ 253) and `/`,
/// then a name of ≤ 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        for (k, ok) in [
            ("domain.io/identity-id", true),
            ("simple", true),
            ("Now-With-Caps/x", false),
            ("a/b/c", false),
            ("/x", false),
            ("x/", false),
            ("-x", false),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(is_qualified_name(k), ok, "{k}");
        }
    }

    fn sa(uid: &str, token: &str) -> ServiceAccountToken {
        ServiceAccountToken {
            namespace: "ns".into(),
            name: "puller".into(),
            uid: uid.into(),
            annotations: [
                ("domain.io/identity-id".to_string(), "12345".to_string()),
                ("other".to_string(), "x".to_string()),
            ]
            .into(),
            token: Secret::new(token),
        }
    }

    #[test]
    fn annotations_and_cache_keys_as_the_kubelet_builds_them() {
        let mut a = TokenAttributes {
            audience: "aud".into(),
            cache_type: TokenCacheType::ServiceAccount,
            require_service_account: true,
            required_annotation_keys: vec!["domain.io/identity-id".into()],
            optional_annotation_keys: vec!["absent".into()],
        };
        let p = a.request_part(sa("u1", "t1")).unwrap();
        assert_eq!(
            p.annotations,
            BTreeMap::from([("domain.io/identity-id".to_string(), "12345".to_string())])
        );
        // ServiceAccount cache: the same account with a new token keeps the key, a new uid
        // does not.
        assert_eq!(
            p.cache_key,
            a.request_part(sa("u1", "t2")).unwrap().cache_key
        );
        assert_ne!(
            p.cache_key,
            a.request_part(sa("u2", "t1")).unwrap().cache_key
        );
        a.cache_type = TokenCacheType::Token;
        assert_ne!(
            a.request_part(sa("u1", "t1")).unwrap().cache_key,
            a.request_part(sa("u1", "t2")).unwrap().cache_key
        );
        assert!(!p.cache_key.contains("t1"));
        a.required_annotation_keys = vec!["missing/key".into()];
        assert_eq!(a.request_part(sa("u1", "t1")).unwrap_err(), "missing/key");
    }
}
