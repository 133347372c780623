//! Who may call the agent's main listener (cluster mode): the caller's bearer token is
//! authenticated with a TokenReview and the request authorized with a
//! SubjectAccessReview, as kube-rbac-proxy and the kubelet's webhook authorizer do
//! (`k8s.io/apiserver/pkg/authorization/authorizerfactory` `webhook`: non-resource URLs by
//! path and verb, resources by attributes). The agent decides nothing itself:
//!
//! `/healthz` and `/readyz` are not reviewed (they say only "ok" or not). Otherwise:
//!
//! | request | RBAC rule the caller needs |
//! |---|---|
//! | `GET /metrics` (and any other path) | `nonResourceURLs: ["/metrics"]`, `verbs: ["get"]` |
//! | `GET /status` | `apiGroups: ["pullprobe.io"]`, `resources: ["nodes/status"]`, `verbs: ["get"]` |
//! | `POST /preflight` | `apiGroups: ["pullprobe.io"]`, `resources: ["nodes/preflight"]`, `verbs: ["create"]` |
//!
//! `resourceNames` can narrow the last two to some nodes. The token comes in
//! `Authorization: Bearer …`, or — through the API server's pod proxy, whose
//! authentication filter deletes `Authorization` once it has authenticated the caller
//! (k8s.io/apiserver `pkg/endpoints/filters/authentication.go`: `req.Header.Del("Authorization")`)
//! — in `X-Pullprobe-Authorization: Bearer …`.
//!
//! Answers are cached by a SHA-256 of the token (never the token) for `auth.cache_ttl`,
//! bounded to `auth.cache_entries`; reviews are rate limited so a flood of bad tokens
//! costs the API server at most `auth.reviews_per_second`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::config::AuthConfig;
use crate::k8s::review::{self, Access, Identity};

/// A review the API server does not answer in this long counts as the API server being
/// down (a stale grant may then serve): a slow or held API server never stalls `/metrics`.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(2);
/// After a review failed or timed out, callers are answered from the stale cache alone for
/// this long: a hung API server does not hold every request for [`REVIEW_TIMEOUT`], and is
/// not asked again at once (the kubelet's webhook authorizer backs off the same way).
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(10);

/// The header a caller uses through the API server's pod proxy.
pub const PROXIED_AUTHORIZATION: &str = "x-pullprobe-authorization";
/// The API group of the agent's virtual resources.
pub const GROUP: &str = "pullprobe.io";
/// Longest bearer token accepted (ServiceAccount JWTs are ~1 KB; OIDC ones a few KB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no bearer token: send `Authorization: Bearer <token>` (through the API server's pod proxy: `X-Pullprobe-Authorization: Bearer <token>`)")]
    NoToken,
    #[error(
        "the bearer token is malformed (not `Bearer <token>`, too long, or not printable ASCII)"
    )]
    MalformedToken,
    #[error("the API server did not accept the token (TokenReview)")]
    Unauthenticated,
    #[error("{user} may not {access} (SubjectAccessReview)")]
    Forbidden { user: String, access: String },
    #[error("too many unreviewed callers; retry later")]
    Throttled,
    #[error("cannot review the caller now (API server unavailable)")]
    Unavailable,
}

impl Denied {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            Denied::NoToken | Denied::MalformedToken | Denied::Unauthenticated => 401,
            Denied::Forbidden { .. } => 403,
            Denied::Throttled => 429,
            Denied::Unavailable => 503,
        }
    }
}

/// What a request needs, from its method and path.
pub fn access_for(node: &str, method: &str, path: &str) -> Access {
    let virtual_node = |subresource: &str, verb: &str| Access::Resource {
        group: GROUP.to_string(),
        resource: "nodes".to_string(),
        subresource: subresource.to_string(),
        namespace: String::new(),
        name: node.to_string(),
        verb: verb.to_string(),
    };
    match (method, path) {
        ("GET" | "HEAD", "/status") => virtual_node("status", "get"),
        (_, "/preflight") => virtual_node("preflight", "create"),
        _ => Access::NonResource {
            path: path.to_string(),
            verb: http_verb(method).to_string(),
        },
    }
}

/// Kubernetes' verb for a non-resource request (`apiserver/pkg/endpoints/request`
/// `RequestInfoFactory`: the lowercased HTTP method; HEAD is `get`).
fn http_verb(method: &str) -> &'static str {
    match method {
        "GET" | "HEAD" => "get",
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "options",
    }
}

/// The bearer token of a request: `Authorization`, else the proxied header.
pub fn bearer(authorization: Option<&[u8]>, proxied: Option<&[u8]>) -> Result<String, Denied> {
    let raw = authorization.or(proxied).ok_or(Denied::NoToken)?;
    let text = std::str::from_utf8(raw).map_err(|_| Denied::MalformedToken)?;
    let (scheme, token) = text.split_once(' ').ok_or(Denied::MalformedToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Denied::MalformedToken);
    }
    Ok(token.to_string())
}

/// An authenticated caller: who, and the hash their answers are cached under.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    token_hash: [u8; 32],
}

/// A token bucket: `rate` per second, up to `burst` at once.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A map whose entries expire, bounded: when full, expired entries go first, then the
/// oldest.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    /// Value and when it was inserted.
    map: HashMap<K, (V, Instant)>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max: max.max(1),
            map: HashMap::new(),
        }
    }

    /// The value if it is younger than the TTL.
    pub fn get(&self, k: &K) -> Option<V> {
        self.get_within(k, self.ttl)
    }

    /// The value if it is younger than `age` (stale answers while the API server is down).
    pub fn get_within(&self, k: &K, age: Duration) -> Option<V> {
        let (v, at) = self.map.get(k)?;
        (at.elapsed() < age).then(|| v.clone())
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= self.max && !self.map.contains_key(&k) {
            let ttl = self.ttl;
            self.map.retain(|_, (_, at)| at.elapsed() < ttl);
            if self.map.len() >= self.max {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(old) = oldest {
                    self.map.remove(&old);
                }
            }
        }
        self.map.insert(k, (v, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Authenticates and authorizes callers through the API server.
pub struct Authorizer {
    client: kube::Client,
    audiences: Vec<String>,
    /// How long an answer that let a caller in is reused while the API server cannot be
    /// asked (the kubelet keeps authorized webhook answers 5 minutes).
    stale: Duration,
    tokens: Mutex<TtlCache<[u8; 32], Option<Identity>>>,
    grants: Mutex<TtlCache<([u8; 32], Access), bool>>,
    budget: Mutex<RateLimit>,
    /// When a review last failed to get an answer from the API server.
    unavailable_at: Mutex<Option<Instant>>,
}

impl Authorizer {
    pub fn new(client: kube::Client, cfg: &AuthConfig) -> Authorizer {
        Authorizer {
            client,
            audiences: cfg.audiences.clone(),
            stale: cfg.stale_ttl.max(cfg.cache_ttl),
            tokens: Mutex::new(TtlCache::new(cfg.cache_ttl, cfg.cache_entries)),
            grants: Mutex::new(TtlCache::new(cfg.cache_ttl, cfg.cache_entries)),
            budget: Mutex::new(RateLimit::new(
                cfg.reviews_per_second,
                cfg.reviews_per_second.saturating_mul(2),
            )),
            unavailable_at: Mutex::new(None),
        }
    }

    fn spend(&self) -> Result<(), Denied> {
        let ok = self
            .budget
            .lock()
            .map(|mut b| b.try_take())
            .unwrap_or(false);
        ok.then_some(()).ok_or(Denied::Throttled)
    }

    /// Did a review fail within the last [`UNAVAILABLE_BACKOFF`]?
    fn backing_off(&self) -> bool {
        self.unavailable_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < UNAVAILABLE_BACKOFF)
    }

    fn mark_unavailable(&self) {
        if let Ok(mut at) = self.unavailable_at.lock() {
            *at = Some(Instant::now());
        }
    }

    /// Who holds `token`: the API server's own audiences first, then the configured ones
    /// (a token bound to `pullprobe` is not valid for the API server's).
    pub async fn authenticate(&self, token: &str) -> Result<Caller, Denied> {
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.tokens.lock().ok().and_then(|c| c.get(&token_hash));
        let identity = match cached {
            Some(found) => found,
            None => match self.review_token(token).await {
                Ok(found) => {
                    if let Ok(mut c) = self.tokens.lock() {
                        c.insert(token_hash, found.clone());
                    }
                    found
                }
                // The API server is down: a token it accepted recently still is.
                Err(Denied::Unavailable) => self
                    .tokens
                    .lock()
                    .ok()
                    .and_then(|c| c.get_within(&token_hash, self.stale))
                    .filter(Option::is_some)
                    .ok_or(Denied::Unavailable)?,
                Err(e) => return Err(e),
            },
        };
        let identity = identity.ok_or(Denied::Unauthenticated)?;
        Ok(Caller {
            identity,
            token_hash,
        })
    }

    async fn review_token(&self, token: &str) -> Result<Option<Identity>, Denied> {
        if self.backing_off() {
            return Err(Denied::Unavailable);
        }
        let mut tries: Vec<Vec<String>> = vec![Vec::new()];
        if !self.audiences.is_empty() {
            tries.push(self.audiences.clone());
        }
        for audiences in tries {
            self.spend()?;
            let review = review::token_review(&self.client, token, &audiences);
            match tokio::time::timeout(REVIEW_TIMEOUT, review).await {
                Ok(Ok(Some(id))) => return Ok(Some(id)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    self.mark_unavailable();
                    return Err(Denied::Unavailable);
                }
                Err(_) => {
                    tracing::warn!("TokenReview timed out");
                    self.mark_unavailable();
                    return Err(Denied::Unavailable);
                }
            }
        }
        Ok(None)
    }

    /// One SubjectAccessReview, within [`REVIEW_TIMEOUT`].
    async fn review_access(
        &self,
        caller: &Caller,
        access: &Access,
    ) -> Result<review::Decision, crate::k8s::K8sError> {
        let review = review::access_review(&self.client, &caller.identity, access);
        tokio::time::timeout(REVIEW_TIMEOUT, review)
            .await
            .unwrap_or(Err(crate::k8s::K8sError::Timeout("SubjectAccessReview")))
    }

    /// May `caller` do `access`?
    pub async fn authorize(&self, caller: &Caller, access: &Access) -> Result<(), Denied> {
        let key = (caller.token_hash, access.clone());
        let cached = self.grants.lock().ok().and_then(|c| c.get(&key));
        let allowed = match cached {
            Some(a) => a,
            None => {
                let answer = if self.backing_off() {
                    Err(crate::k8s::K8sError::BackingOff)
                } else {
                    self.spend()?;
                    self.review_access(caller, access).await
                };
                match answer {
                    Ok(d) => {
                        if let Ok(mut c) = self.grants.lock() {
                            c.insert(key, d.allowed);
                        }
                        d.allowed
                    }
                    Err(e) => {
                        if !matches!(e, crate::k8s::K8sError::BackingOff) {
                            tracing::warn!(error = %e, "SubjectAccessReview failed");
                            self.mark_unavailable();
                        }
                        // Only a grant is reused while the API server is down; a denial
                        // is asked again.
                        let stale = self
                            .grants
                            .lock()
                            .ok()
                            .and_then(|c| c.get_within(&key, self.stale));
                        if stale != Some(true) {
                            return Err(Denied::Unavailable);
                        }
                        true
                    }
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                user: caller.identity.username.clone(),
                access: access.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_rbac_attributes() {
        assert_eq!(
            access_for("n1", "GET", "/metrics"),
            Access::NonResource {
                path: "/metrics".into(),
                verb: "get".into()
            }
        );
        assert_eq!(
            access_for("n1", "POST", "/preflight").to_string(),
            "create nodes.pullprobe.io/preflight n1"
        );
        assert_eq!(
            access_for("n1", "GET", "/status").to_string(),
            "get nodes.pullprobe.io/status n1"
        );
        // Anything else is a non-resource URL with the method's verb.
        assert_eq!(access_for("n1", "DELETE", "/x").to_string(), "delete /x");
    }

    #[test]
    fn bearer_tokens_are_checked_not_echoed() {
        assert_eq!(bearer(Some(b"Bearer abc.def"), None).unwrap(), "abc.def");
        assert_eq!(bearer(None, Some(b"bearer abc")).unwrap(), "abc");
        // Authorization wins over the proxied header.
        assert_eq!(bearer(Some(b"Bearer a"), Some(b"Bearer b")).unwrap(), "a");
        assert_eq!(bearer(None, None), Err(Denied::NoToken));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer \xff",
            b"abc",
        ] {
            let e = bearer(Some(bad), None).unwrap_err();
            assert_eq!(e, Denied::MalformedToken, "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            bearer(Some(long.as_bytes()), None),
            Err(Denied::MalformedToken)
        );
        // No message quotes the token.
        let secret = "Bearer s3cr3t-canary";
        let e = bearer(Some(b"Basic s3cr3t-canary"), None).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e} / {secret}");
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut c = TtlCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            c.insert(i, i * 10);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&9), Some(90));
        let mut short = TtlCache::new(Duration::ZERO, 3);
        short.insert(1, 1);
        assert_eq!(short.get(&1), None);
        assert_eq!(
            short.get_within(&1, Duration::from_secs(60)),
            Some(1),
            "stale while the API server is down"
        );
    }

    #[test]
    fn rate_limit_allows_the_burst_then_refuses() {
        let mut r = RateLimit::new(1, 3);
        assert!((0..3).all(|_| r.try_take()));
        assert!(!r.try_take());
    }
}
