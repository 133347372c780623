//! Who may call the agent's main listener (cluster mode): the caller's bearer token is
//! authenticated with a TokenReview for the agent's own audiences only (`auth.audiences`,
//! `pullprobe`: a token the API server itself accepts is refused, so a node never holds
//! a token it could replay against the API server) and the request authorized with a
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
//!
//! `resourceNames` can narrow the last one to some nodes. The token comes in
//! `Authorization: Bearer …` (no other header: no role grants `pods/proxy`, so no caller
//! reaches the agent through the API server's pod proxy).
//!
//! Answers are cached by a SHA-256 of the token (never the token) for `auth.cache_ttl`,
//! bounded to `auth.cache_entries`; reviews are rate limited so a flood of bad tokens
//! costs the API server at most `auth.reviews_per_second`. Both are per caller, so junk
//! tokens cannot evict or starve known ones: once a token is authorized, its cached answers
//! are protected (only another authorized token's answer can push them out) and its
//! re-reviews draw on a budget of their own (`auth.reviews_per_second` again); every other
//! token draws on its client address's budget (a quarter of the rate) and on a shared one.
//! A known caller whose budget is spent is answered from its last grant (up to
//! `auth.stale_ttl`), as while the API server is down.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::agent::config::AuthConfig;
use crate::k8s::review::{self, Access, Identity};

/// A review the API server does not answer in this long counts as the API server being
/// down (a stale grant may then serve): a slow or held API server never stalls `/metrics`.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(2);
/// After a review failed or timed out, callers are answered from the stale cache alone for
/// this long: a hung API server does not hold every request for [`REVIEW_TIMEOUT`], and is
/// not asked again at once (the kubelet's webhook authorizer backs off the same way).
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(10);

/// The API group of the agent's virtual resources.
pub const GROUP: &str = "pullprobe.io";
/// Longest bearer token accepted (ServiceAccount JWTs are ~1 KB; OIDC ones a few KB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no bearer token: send `Authorization: Bearer <token>` (a token for the audience `pullprobe`)")]
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

/// The bearer token of a request's `Authorization` header.
pub fn bearer(authorization: Option<&[u8]>) -> Result<String, Denied> {
    let raw = authorization.ok_or(Denied::NoToken)?;
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

/// An authenticated caller: who, the hash their answers are cached under, and the address
/// they called from (whose review budget they draw on).
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    token_hash: [u8; 32],
    client: IpAddr,
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
        self.try_take_n(1)
    }

    /// Take `n` tokens if there are that many (none otherwise).
    pub fn try_take_n(&mut self, n: u32) -> bool {
        let has = self.available() >= f64::from(n);
        if has {
            self.tokens -= f64::from(n);
        }
        has
    }

    /// The tokens there are now.
    fn available(&mut self) -> f64 {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens
    }
}

/// One cached value: when it was stored, and whether only another protected entry may push
/// it out.
#[derive(Debug)]
struct Entry<V> {
    value: V,
    at: Instant,
    protected: bool,
}

/// A map whose entries expire, bounded. When full, entries older than `keep` go first, then
/// the oldest unprotected one; a protected entry gives way only to another protected one, so
/// a flood of new keys (junk tokens) cannot push out the answers of known callers.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    /// How long an entry is worth keeping for [`TtlCache::get_within`] (≥ `ttl`).
    keep: Duration,
    max: usize,
    map: HashMap<K, Entry<V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            keep: ttl,
            max: max.max(1),
            map: HashMap::new(),
        }
    }

    /// Keep entries up to `keep` when the cache is full (stale answers are read that long).
    pub fn keeping(mut self, keep: Duration) -> Self {
        self.keep = keep.max(self.ttl);
        self
    }

    /// The value if it is younger than the TTL.
    pub fn get(&self, k: &K) -> Option<V> {
        self.get_within(k, self.ttl)
    }

    /// The value if it is younger than `age` (stale answers while the API server is down).
    pub fn get_within(&self, k: &K, age: Duration) -> Option<V> {
        let e = self.map.get(k)?;
        (e.at.elapsed() < age).then(|| e.value.clone())
    }

    /// Is `k` protected and younger than `age`?
    pub fn protected_within(&self, k: &K, age: Duration) -> bool {
        self.map
            .get(k)
            .is_some_and(|e| e.protected && e.at.elapsed() < age)
    }

    /// Insert (or refresh) `k`; it stays protected if it was. Not stored when the cache is
    /// full of protected entries.
    pub fn insert(&mut self, k: K, v: V) {
        self.put(k, v, false);
    }

    /// Insert (or refresh) `k` as protected.
    pub fn insert_protected(&mut self, k: K, v: V) {
        self.put(k, v, true);
    }

    /// Mark `k` protected, if present.
    pub fn protect(&mut self, k: &K) {
        if let Some(e) = self.map.get_mut(k) {
            e.protected = true;
        }
    }

    fn put(&mut self, k: K, value: V, protected: bool) {
        let protected = protected || self.map.get(&k).is_some_and(|e| e.protected);
        if !self.map.contains_key(&k) && self.map.len() >= self.max && !self.make_room(protected) {
            return;
        }
        let at = Instant::now();
        self.map.insert(
            k,
            Entry {
                value,
                at,
                protected,
            },
        );
    }

    /// Free one slot for a new entry (`protected` or not); false when there is none to free.
    fn make_room(&mut self, protected: bool) -> bool {
        let keep = self.keep;
        self.map.retain(|_, e| e.at.elapsed() < keep);
        if self.map.len() < self.max {
            return true;
        }
        let victim = self
            .map
            .iter()
            .filter(|(_, e)| protected || !e.protected)
            .min_by_key(|(_, e)| (e.protected, e.at))
            .map(|(k, _)| k.clone());
        victim.is_some_and(|k| self.map.remove(&k).is_some())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Client addresses with a review budget of their own, at most (the least recently used
/// is forgotten first).
const MAX_CLIENT_BUDGETS: usize = 4096;

/// Review budgets per caller. A caller whose token was authorized before (its cached answers
/// are protected) draws on a budget of its own kind, so unknown tokens cannot starve it;
/// every other caller draws first on the budget of its client address (a quarter of the
/// rate), then on one they all share, so one address cannot take the shared one either.
#[derive(Debug)]
struct Budgets {
    known: RateLimit,
    unknown: RateLimit,
    per_client: HashMap<IpAddr, RateLimit>,
    per_client_rate: u32,
}

impl Budgets {
    fn new(rate: u32) -> Budgets {
        let per_client_rate = (rate / 4).max(1);
        Budgets {
            known: RateLimit::new(rate, rate.saturating_mul(2)),
            unknown: RateLimit::new(rate, rate.saturating_mul(2)),
            per_client: HashMap::new(),
            per_client_rate,
        }
    }

    /// Take `cost` reviews from the caller's budgets, all or none; false when one of them
    /// has fewer left.
    fn spend(&mut self, client: IpAddr, known: bool, cost: u32) -> bool {
        if known {
            return self.known.try_take_n(cost);
        }
        let client = client.to_canonical();
        if !self.per_client.contains_key(&client) && self.per_client.len() >= MAX_CLIENT_BUDGETS {
            let lru = self
                .per_client
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(ip, _)| *ip);
            if let Some(ip) = lru {
                self.per_client.remove(&ip);
            }
        }
        let r = self.per_client_rate;
        let mine = self
            .per_client
            .entry(client)
            .or_insert_with(|| RateLimit::new(r, r.saturating_mul(2)));
        let has =
            mine.available() >= f64::from(cost) && self.unknown.available() >= f64::from(cost);
        has && mine.try_take_n(cost) && self.unknown.try_take_n(cost)
    }
}

/// Authenticates and authorizes callers through the API server.
pub struct Authorizer {
    client: kube::Client,
    audiences: Vec<String>,
    /// How long an answer that let a caller in is reused while the API server cannot be
    /// asked (the kubelet keeps authorized webhook answers 5 minutes), or while the caller's
    /// budget is spent.
    stale: Duration,
    /// Token hash → identity (`None`: not accepted); protected once the token was authorized.
    tokens: Mutex<TtlCache<[u8; 32], Option<Identity>>>,
    /// (token hash, access) → allowed; grants protected, denials not.
    grants: Mutex<TtlCache<([u8; 32], Access), bool>>,
    budgets: Mutex<Budgets>,
    /// When a review last failed to get an answer from the API server.
    unavailable_at: Mutex<Option<Instant>>,
}

impl Authorizer {
    pub fn new(client: kube::Client, cfg: &AuthConfig) -> Authorizer {
        let stale = cfg.stale_ttl.max(cfg.cache_ttl);
        let (ttl, max) = (cfg.cache_ttl, cfg.cache_entries);
        Authorizer {
            client,
            audiences: cfg.audiences.clone(),
            stale,
            tokens: Mutex::new(TtlCache::new(ttl, max).keeping(stale)),
            grants: Mutex::new(TtlCache::new(ttl, max).keeping(stale)),
            budgets: Mutex::new(Budgets::new(cfg.reviews_per_second)),
            unavailable_at: Mutex::new(None),
        }
    }

    /// Was this token authorized for something within the stale window?
    fn known(&self, token_hash: &[u8; 32]) -> bool {
        self.tokens
            .lock()
            .is_ok_and(|c| c.protected_within(token_hash, self.stale))
    }

    /// May `cost` reviews be sent for this caller now? `Unavailable` while backing off after
    /// a failed review, `Throttled` when its budget is spent.
    fn ask(&self, client: IpAddr, known: bool, cost: u32) -> Result<(), Denied> {
        if self.backing_off() {
            return Err(Denied::Unavailable);
        }
        let ok = self
            .budgets
            .lock()
            .map(|mut b| b.spend(client, known, cost))
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

    /// Who holds `token`, calling from `client`: a token for one of the agent's own
    /// audiences (never the API server's: a token valid there is not accepted here).
    pub async fn authenticate(&self, token: &str, client: IpAddr) -> Result<Caller, Denied> {
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.tokens.lock().ok().and_then(|c| c.get(&token_hash));
        let identity = match cached {
            Some(found) => found,
            None => {
                let known = self.known(&token_hash);
                match self.review_token(token, client, known).await {
                    Ok(found) => {
                        if let Ok(mut c) = self.tokens.lock() {
                            c.insert(token_hash, found.clone());
                        }
                        found
                    }
                    // The API server is down, or the budget spent: a token that was
                    // authorized recently still is.
                    Err(e @ (Denied::Unavailable | Denied::Throttled)) => self
                        .tokens
                        .lock()
                        .ok()
                        .filter(|_| known)
                        .and_then(|c| c.get_within(&token_hash, self.stale))
                        .filter(Option::is_some)
                        .ok_or(e)?,
                    Err(e) => return Err(e),
                }
            }
        };
        let identity = identity.ok_or(Denied::Unauthenticated)?;
        Ok(Caller {
            identity,
            token_hash,
            client,
        })
    }

    async fn review_token(
        &self,
        token: &str,
        client: IpAddr,
        known: bool,
    ) -> Result<Option<Identity>, Denied> {
        // No configured audience accepts no token (an empty list would ask for the API
        // server's own audiences: exactly the tokens a node must never be sent).
        if self.audiences.is_empty() {
            return Ok(None);
        }
        self.ask(client, known, 1)?;
        let review = review::token_review(&self.client, token, &self.audiences);
        match tokio::time::timeout(REVIEW_TIMEOUT, review).await {
            // The API server says which audiences the token is valid for: one of ours, or
            // it is not let in (kube-apiserver answers `authenticated` only for a token
            // valid for one of the audiences asked).
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TokenReview failed");
                self.mark_unavailable();
                Err(Denied::Unavailable)
            }
            Err(_) => {
                tracing::warn!("TokenReview timed out");
                self.mark_unavailable();
                Err(Denied::Unavailable)
            }
        }
    }

    /// One SubjectAccessReview, within [`REVIEW_TIMEOUT`]; `Unavailable` when it gets no
    /// answer.
    async fn review_access(&self, caller: &Caller, access: &Access) -> Result<bool, Denied> {
        let review = review::access_review(&self.client, &caller.identity, access);
        let answer = tokio::time::timeout(REVIEW_TIMEOUT, review)
            .await
            .unwrap_or(Err(crate::k8s::K8sError::Timeout("SubjectAccessReview")));
        answer.map(|d| d.allowed).map_err(|e| {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            self.mark_unavailable();
            Denied::Unavailable
        })
    }

    /// May `caller` do `access`? A grant protects the caller's cached answers (and moves
    /// it to the known callers' budget).
    pub async fn authorize(&self, caller: &Caller, access: &Access) -> Result<(), Denied> {
        let key = (caller.token_hash, access.clone());
        let cached = self.grants.lock().ok().and_then(|c| c.get(&key));
        let allowed = match cached {
            Some(a) => a,
            None => {
                let known = self.known(&caller.token_hash);
                let answer = match self.ask(caller.client, known, 1) {
                    Ok(()) => self.review_access(caller, access).await,
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(allowed) => {
                        self.remember_grant(key, allowed);
                        allowed
                    }
                    // Only a grant is reused while the API server is down or the budget
                    // spent; a denial is asked again.
                    Err(e) => {
                        let stale = self
                            .grants
                            .lock()
                            .ok()
                            .and_then(|c| c.get_within(&key, self.stale));
                        if stale != Some(true) {
                            return Err(e);
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

    fn remember_grant(&self, key: ([u8; 32], Access), allowed: bool) {
        let token_hash = key.0;
        if let Ok(mut c) = self.grants.lock() {
            match allowed {
                true => c.insert_protected(key, true),
                false => c.insert(key, false),
            }
        }
        if allowed {
            if let Ok(mut t) = self.tokens.lock() {
                t.protect(&token_hash);
            }
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
            access_for("n1", "GET", "/status").to_string(),
            "get nodes.pullprobe.io/status n1"
        );
        // Anything else is a non-resource URL with the method's verb.
        assert_eq!(access_for("n1", "DELETE", "/x").to_string(), "delete /x");
    }

    #[test]
    fn bearer_tokens_are_checked_not_echoed() {
        assert_eq!(bearer(Some(b"Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer(Some(b"bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(None), Err(Denied::NoToken));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer \xff",
            b"abc",
        ] {
            let e = bearer(Some(bad)).unwrap_err();
            assert_eq!(e, Denied::MalformedToken, "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer(Some(long.as_bytes())), Err(Denied::MalformedToken));
        // No message quotes the token.
        let secret = "Bearer s3cr3t-canary";
        let e = bearer(Some(b"Basic s3cr3t-canary")).unwrap_err();
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
    fn junk_keys_cannot_push_out_protected_entries() {
        let mut c = TtlCache::new(Duration::from_secs(60), 4);
        c.insert(0u32, "prometheus");
        c.protect(&0);
        c.insert_protected(1, "operator");
        for junk in 100..1100 {
            c.insert(junk, "junk");
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.get(&0), Some("prometheus"), "protected entries stay");
        assert_eq!(c.get(&1), Some("operator"));
        assert!(c.protected_within(&0, Duration::from_secs(60)));
        assert!(!c.protected_within(&1099, Duration::from_secs(60)));
        // A refresh keeps the protection.
        c.insert(0, "prometheus again");
        assert!(c.protected_within(&0, Duration::from_secs(60)));
        // Full of protected entries: junk is not stored; another protected entry takes the
        // oldest protected slot.
        c.insert_protected(2, "b");
        c.insert_protected(3, "c");
        c.insert(4000, "junk");
        assert_eq!(c.get(&4000), None);
        c.insert_protected(5, "d");
        assert_eq!(c.len(), 4);
        assert_eq!(c.get(&5), Some("d"));
        assert_eq!(c.get(&1), None, "the oldest protected entry gave way");
    }

    #[test]
    fn review_budgets_are_per_caller() {
        let mut b = Budgets::new(20);
        let junk: IpAddr = "10.0.0.9".parse().unwrap();
        // One address gets its own budget (5/s, burst 10), not the shared one (20/s, burst 40).
        let spent = (0..1000).filter(|_| b.spend(junk, false, 1)).count();
        assert!((10..40).contains(&spent), "{spent}");
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        assert!(b.spend(other, false, 1), "another address is not starved");
        // A cost is taken whole or not at all (a token's two TokenReviews).
        let fresh: IpAddr = "10.0.0.11".parse().unwrap();
        assert!(!b.spend(fresh, false, 11), "more than the burst");
        assert!(
            b.spend(fresh, false, 10),
            "nothing was taken by the refusal"
        );
        // Callers whose token was authorized before have a budget of their own.
        assert!((0..40).all(|_| b.spend(junk, true, 1)));
        // The per-address map is bounded.
        for i in 0..(MAX_CLIENT_BUDGETS as u32 + 100) {
            b.spend(IpAddr::from(i.to_be_bytes()), false, 1);
        }
        assert!(b.per_client.len() <= MAX_CLIENT_BUDGETS);
    }

    #[test]
    fn rate_limit_allows_the_burst_then_refuses() {
        let mut r = RateLimit::new(1, 3);
        assert!((0..3).all(|_| r.try_take()));
        assert!(!r.try_take());
    }
}
