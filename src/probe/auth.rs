//! auth phase: turn a registry's 401 challenge into an `Authorization` header the way
//! the node's runtime does, fetching (and caching) bearer tokens.
//!
//! containerd (core/remotes/docker/authorizer.go, auth/fetch.go): with a secret it POSTs
//! the OAuth2 form (`client_id=containerd-client`) and falls back to GET with Basic auth
//! on 400/401/404 (or 405 with a username); without one it GETs anonymously.
//! CRI-O (containers/image docker_client.go): GET with Basic auth, or the OAuth2
//! refresh-token POST for identity tokens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use url::Url;

use super::challenge::Challenge;
use super::http::{Request, Session};
use super::outcome::{Failure, Phase, Reason};
use super::Runtime;
use crate::cache::{BoundedCache, CacheStats, Limits};
use crate::credentials::{Credential, Secret};
use crate::redact;
use crate::runtime::RuntimeRules;

/// A token response holds a token, often again as `access_token`, maybe a refresh
/// token, each at most [`MAX_TOKEN_BYTES`]: anything bigger is refused before it is read
/// ([`Reason::AuthTokenTooLarge`]).
const MAX_TOKEN_BODY: usize = 4 * MAX_TOKEN_BYTES;
/// The spec's default lifetime when `expires_in` is absent.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest a token is cached, whatever `expires_in` says. Registries issue tokens for
/// minutes (Docker Hub 300 s, distribution's default 60 s); the value comes from the
/// token server, so an absurd one (`i64::MAX`) must neither overflow `Instant + lifetime`
/// (a panic, and `panic = "abort"` ends the agent) nor pin a token for years.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What to send in `Authorization` for one host and scope.
#[derive(Clone, Debug)]
pub enum Authorization {
    Basic(Secret),
    Bearer(Secret),
}

impl Authorization {
    pub fn header_value(&self) -> Option<HeaderValue> {
        let text = zeroize::Zeroizing::new(match self {
            Authorization::Basic(s) => format!("Basic {}", s.expose()),
            Authorization::Bearer(s) => format!("Bearer {}", s.expose()),
        });
        let mut v = HeaderValue::from_str(&text).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    /// Which credential the token belongs to (its source name, never its value).
    identity: String,
}

impl TokenKey {
    fn bytes(&self) -> usize {
        self.realm.len() + self.service.len() + self.scope.len() + self.identity.len()
    }
}

/// The largest bearer token used (and cached). Real tokens are a few KiB (JWTs with their
/// access claims, cloud access tokens); a token travels in one `Authorization` header line,
/// which the front ends of most registries cap at 8–16 KiB (nginx's 8 KiB header buffers,
/// 16 KiB on AWS load balancers), so a token over twice that could not be sent to them
/// anyway. A larger one is [`Reason::AuthTokenTooLarge`]: never used, never stored.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// What a remembered challenge may weigh (scheme, realm and service): a realm URL longer
/// than this is used for the probe at hand but not remembered.
const MAX_CHALLENGE_BYTES: usize = 4 * 1024;

/// Longest a challenge is remembered: it only saves the next probe its 401 round trip.
const CHALLENGE_TTL: Duration = Duration::from_secs(3600);

/// Bounds of the token cache: 32 KiB tokens fit 16 to a registry host; a node's own
/// registries (one token per host, scope and credential; 200 images on one host at 2 KiB
/// are 400 KiB) stay within a host's share.
pub const TOKEN_LIMITS: Limits = Limits {
    max_entries: 2048,
    max_bytes: 2 * 1024 * 1024,
    owner_entries: 256,
    owner_bytes: 512 * 1024,
};

/// Bounds of the remembered challenges: one per registry host.
pub const CHALLENGE_LIMITS: Limits = Limits {
    max_entries: 1024,
    max_bytes: 512 * 1024,
    owner_entries: 1,
    owner_bytes: MAX_CHALLENGE_BYTES + 512,
};

/// The token cache's and the challenge memory's bounds and use (`/status` shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenCacheStats {
    pub tokens: CacheStats,
    pub challenges: CacheStats,
}

/// Tokens per (realm, service, scope, credential), kept until `expires_in`, bounded per
/// registry host and in all ([`TOKEN_LIMITS`]); expired ones are swept on every insert.
pub struct TokenCache {
    tokens: Mutex<BoundedCache<TokenKey, Secret>>,
    /// The last challenge seen per registry host, so a later probe can authorise its
    /// first request (as containerd's authorizer keeps handlers per host).
    challenges: Mutex<BoundedCache<String, Challenge>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            tokens: Mutex::new(BoundedCache::new(TOKEN_LIMITS)),
            challenges: Mutex::new(BoundedCache::new(CHALLENGE_LIMITS)),
        }
    }
}

impl TokenCache {
    fn get(&self, key: &TokenKey) -> Option<Secret> {
        let mut map = self.tokens.lock().ok()?;
        map.get(key, Instant::now()).cloned()
    }
    /// Cache `token` for `registry_host` (whose challenge named the realm: the owner whose
    /// share it counts against).
    fn put(&self, registry_host: &str, key: TokenKey, token: Secret, lifetime: Duration) {
        let now = Instant::now();
        // Bounded by parse_token already; checked anyway, as every Instant arithmetic
        // on a value from outside is.
        let Some(expires) = now.checked_add(lifetime.min(MAX_TOKEN_LIFETIME)) else {
            return;
        };
        let bytes = key.bytes() + token.expose().len();
        if let Ok(mut map) = self.tokens.lock() {
            map.insert(key, token, registry_host, bytes, expires, now);
        }
    }
    /// Remember the challenge `host` answered with: its scheme, realm and service only.
    pub fn remember_challenge(&self, host: &str, c: &Challenge) {
        let kept = Challenge {
            scheme: c.scheme.clone(),
            params: ["realm", "service"]
                .into_iter()
                .filter_map(|k| Some((k.to_string(), c.param(k)?.to_string())))
                .collect(),
        };
        let bytes = host.len()
            + kept.scheme.len()
            + kept
                .params
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let now = Instant::now();
        let Some(expires) = now.checked_add(CHALLENGE_TTL) else {
            return;
        };
        if let Ok(mut map) = self.challenges.lock() {
            map.insert(host.to_string(), kept, host, bytes, expires, now);
        }
    }
    pub fn known_challenge(&self, host: &str) -> Option<Challenge> {
        let mut map = self.challenges.lock().ok()?;
        map.get(&host.to_string(), Instant::now()).cloned()
    }
    /// A cached, unexpired authorisation for `host` and `scope`, without any request.
    pub fn cached_authorization(
        &self,
        host: &str,
        scope: &str,
        cred: Option<&CredentialRef<'_>>,
    ) -> Option<Authorization> {
        let c = self.known_challenge(host)?;
        if c.is_basic() {
            return cred
                .and_then(|c| basic_of(c.credential))
                .map(Authorization::Basic);
        }
        let key = TokenKey {
            realm: c.realm()?.to_string(),
            service: c.service().unwrap_or_default().to_string(),
            scope: scope.to_string(),
            identity: cred.map(|c| c.identity.to_string()).unwrap_or_default(),
        };
        self.get(&key).map(Authorization::Bearer)
    }
    /// What both maps hold, after sweeping expired entries.
    pub fn stats(&self) -> TokenCacheStats {
        let now = Instant::now();
        TokenCacheStats {
            tokens: swept_stats(&self.tokens, now),
            challenges: swept_stats(&self.challenges, now),
        }
    }
    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.tokens.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn swept_stats<K: Eq + std::hash::Hash + Clone, V>(
    m: &Mutex<BoundedCache<K, V>>,
    now: Instant,
) -> CacheStats {
    m.lock()
        .map(|mut m| {
            m.sweep(now);
            m.stats()
        })
        .unwrap_or_default()
}

/// A credential and a stable, printable identity for cache keys.
pub struct CredentialRef<'a> {
    pub credential: &'a Credential,
    pub identity: &'a str,
}

fn basic_of(c: &Credential) -> Option<Secret> {
    match c {
        Credential::Basic { username, password }
            if !username.is_empty() && !password.is_empty() =>
        {
            let plain = zeroize::Zeroizing::new(format!("{username}:{}", password.expose()));
            Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(plain.as_bytes()),
            ))
        }
        _ => None,
    }
}

/// What the auth step did, for the phase record.
pub struct AuthOutcome {
    pub authorization: Authorization,
    pub detail: String,
    /// The host of the token endpoint (for the phase record), or the registry host.
    pub host: String,
}

/// Pick the challenge the runtime would act on: the first Bearer, or the first Basic
/// when a credential exists (containerd authorizer.go `AddResponses`).
pub fn pick_challenge(
    challenges: &[Challenge],
    has_credential: bool,
) -> Result<&Challenge, Failure> {
    for c in challenges {
        if c.is_bearer() || (c.is_basic() && has_credential) {
            return Ok(c);
        }
    }
    if challenges.iter().any(|c| c.is_basic()) {
        return Err(Failure::new(
            Reason::AuthCredentialsRequired,
            "the registry requires Basic authentication and no credential is configured for it",
        ));
    }
    let schemes = redact::list(
        challenges.iter().map(|c| c.scheme.as_str()),
        redact::LIST_FIRST,
        ", ",
    );
    Err(Failure::new(
        Reason::AuthUnsupportedScheme,
        format!("no supported auth scheme in challenge (got {schemes})"),
    ))
}

/// Authorise for `scope` against `challenge`, fetching a token if needed.
pub async fn authorize(
    session: &mut Session<'_>,
    cache: &TokenCache,
    rules: RuntimeRules,
    registry_host: &str,
    challenge: &Challenge,
    scope: &str,
    cred: Option<&CredentialRef<'_>>,
) -> Result<AuthOutcome, Failure> {
    if challenge.is_basic() {
        return authorize_basic(cache, registry_host, challenge, cred);
    }
    if let Some(Credential::RegistryToken(t)) = cred.map(|c| c.credential) {
        return Ok(AuthOutcome {
            authorization: Authorization::Bearer(t.clone()),
            detail: "bearer (registry token from config)".to_string(),
            host: registry_host.to_string(),
        });
    }
    let realm = bearer_realm(challenge)?;
    let service = challenge.service().unwrap_or_default().to_string();
    let key = TokenKey {
        realm: realm.to_string(),
        service: service.clone(),
        scope: scope.to_string(),
        identity: cred.map(|c| c.identity.to_string()).unwrap_or_default(),
    };
    let realm_host = host_port(&realm);
    cache.remember_challenge(registry_host, challenge);
    if let Some(tok) = cache.get(&key) {
        return Ok(AuthOutcome {
            authorization: Authorization::Bearer(tok),
            detail: format!("bearer token from cache (realm {})", redact::url(&realm)),
            host: realm_host,
        });
    }
    let (token, lifetime, how) = fetch_token(session, rules, &realm, &service, scope, cred).await?;
    cache.put(registry_host, key, token.clone(), lifetime);
    Ok(AuthOutcome {
        authorization: Authorization::Bearer(token),
        detail: format!(
            "bearer token via {how} (realm {}, expires_in {}s)",
            redact::url(&realm),
            lifetime.as_secs()
        ),
        host: realm_host,
    })
}

/// Basic authentication: the credential's username and password, never a token.
fn authorize_basic(
    cache: &TokenCache,
    registry_host: &str,
    challenge: &Challenge,
    cred: Option<&CredentialRef<'_>>,
) -> Result<AuthOutcome, Failure> {
    let Some(cr) = cred else {
        return Err(Failure::new(
            Reason::AuthCredentialsRequired,
            "the registry requires Basic authentication and no credential is configured",
        ));
    };
    let Some(b) = basic_of(cr.credential) else {
        return Err(Failure::new(
            Reason::AuthCredentialsRequired,
            "the registry requires Basic authentication (username and password); the configured credential is a token",
        ));
    };
    cache.remember_challenge(registry_host, challenge);
    Ok(AuthOutcome {
        authorization: Authorization::Basic(b),
        detail: "basic".to_string(),
        host: registry_host.to_string(),
    })
}

/// A Bearer challenge's realm: an absolute http(s) URL, else the challenge is malformed
/// (the message shows the realm redacted).
fn bearer_realm(challenge: &Challenge) -> Result<Url, Failure> {
    let realm_text = challenge.realm().ok_or_else(|| {
        Failure::new(
            Reason::AuthChallengeMalformed,
            "Bearer challenge has no realm",
        )
    })?;
    Url::parse(realm_text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            Failure::new(
                Reason::AuthChallengeMalformed,
                format!(
                    "Bearer realm {} is not an absolute http(s) URL",
                    match Url::parse(realm_text) {
                        Ok(u) => redact::url(&u),
                        Err(_) => format!("\"{}\"", redact::text_max(realm_text, 80)),
                    }
                ),
            )
        })
}

fn host_port(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or_default()
    )
}

/// Do hosts.toml `[header]` values go with token requests? containerd ≥ 2.1 passes them
/// to the host's authorizer (core/remotes/docker/config/hosts.go `ConfigureHosts`,
/// `docker.WithAuthHeader(host.header)`, commit 10b4eb4a "Add hosts.toml headers to auth
/// requests", first in v2.1.0); 1.6, 1.7 and 2.0 build the authorizer without them, so they
/// reach only the registry's own requests. Seen with 1.6.20, 1.7.24 and 2.1.9 in
/// tests/oracle_containerd.rs. An unknown release gets the 1.x behaviour.
fn endpoint_headers_on_token_requests(rules: RuntimeRules) -> bool {
    rules.containerd_at_least(2, 1)
}

async fn fetch_token(
    session: &mut Session<'_>,
    rules: RuntimeRules,
    realm: &Url,
    service: &str,
    scope: &str,
    cred: Option<&CredentialRef<'_>>,
) -> Result<(Secret, Duration, &'static str), Failure> {
    let credential = cred.map(|c| c.credential);
    let oauth_secret: Option<(Option<&str>, &Secret, bool)> = match credential {
        Some(Credential::Basic { username, password }) => Some((Some(username), password, false)),
        Some(Credential::IdentityToken(t)) => Some((None, t, true)),
        _ => None,
    };
    let with_headers = endpoint_headers_on_token_requests(rules);
    let try_post = match rules.runtime {
        Runtime::Containerd => oauth_secret.is_some(),
        // containers/image uses the OAuth2 POST only for identity (refresh) tokens.
        Runtime::Crio => matches!(credential, Some(Credential::IdentityToken(_))),
    };
    if try_post {
        if let Some((username, secret, refresh)) = oauth_secret {
            let form_body = oauth_form(scope, service, username, secret, refresh);
            let mut req = Request::new(Method::POST, realm.clone());
            req.endpoint_headers = with_headers;
            req.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
            );
            req.body = Some(Bytes::from(form_body));
            let resp = send_token_request(session, &req).await?;
            let status = resp.status;
            let fallback = status == StatusCode::NOT_FOUND
                || status == StatusCode::UNAUTHORIZED
                || status == StatusCode::BAD_REQUEST
                || (status == StatusCode::METHOD_NOT_ALLOWED && username.is_some());
            if status.is_success() {
                let (t, l) = parse_token(&resp.body)?;
                return Ok((t, l, "OAuth2 POST"));
            }
            if !fallback {
                return Err(token_status_failure(status, true));
            }
        }
    }
    let mut url = realm.clone();
    {
        let mut q = url.query_pairs_mut();
        if !service.is_empty() {
            q.append_pair("service", service);
        }
        q.append_pair("scope", scope);
    }
    let mut req = Request::new(Method::GET, url);
    req.endpoint_headers = with_headers;
    let mut with_basic = false;
    if let Some(b) = credential.and_then(basic_of) {
        if let Some(v) = Authorization::Basic(b).header_value() {
            req.headers.insert(http::header::AUTHORIZATION, v);
            with_basic = true;
        }
    }
    let resp = send_token_request(session, &req).await?;
    if resp.status.is_success() {
        let (t, l) = parse_token(&resp.body)?;
        return Ok((
            t,
            l,
            if with_basic {
                "GET with Basic"
            } else {
                "anonymous GET"
            },
        ));
    }
    Err(token_status_failure(resp.status, credential.is_some()))
}

/// containerd's OAuth2 form (auth/fetch.go `FetchTokenWithOAuth`): the password grant
/// with a username, the refresh-token grant for an identity token. Built outside any
/// `.await` (the serializer is not `Send`).
fn oauth_form(
    scope: &str,
    service: &str,
    username: Option<&str>,
    secret: &Secret,
    refresh: bool,
) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("scope", scope);
    form.append_pair("service", service);
    form.append_pair("client_id", "containerd-client");
    form.append_pair("access_type", "offline");
    if refresh {
        form.append_pair("grant_type", "refresh_token");
        form.append_pair("refresh_token", secret.expose());
    } else {
        form.append_pair("grant_type", "password");
        form.append_pair("username", username.unwrap_or_default());
        form.append_pair("password", secret.expose());
    }
    form.finish()
}

async fn send_token_request(
    session: &mut Session<'_>,
    req: &Request,
) -> Result<super::http::Response, Failure> {
    session.send(req, MAX_TOKEN_BODY).await.map_err(|f| {
        if f.reason == Reason::ManifestTooLarge {
            // The body is over MAX_TOKEN_BODY (refused on its Content-Length, or cut off).
            return too_large_token(MAX_TOKEN_BODY + 1);
        }
        if f.reason == Reason::RedirectRefused {
            return Failure::new(
                Reason::AuthRealmRefused,
                format!("token realm refused: {}", f.message),
            );
        }
        // A realm that accepts the connection but never answers, or drops it mid-answer,
        // is as unreachable as one that refuses it: not an "error answer", which with
        // credentials would read as a rejected credential (RegistryAuthFailing).
        let transport = matches!(f.phase, Phase::Dns | Phase::Connect | Phase::Tls);
        let lost = matches!(f.reason, Reason::ResponseTimeout | Reason::ConnectionLost);
        let reason = match transport || lost {
            true => Reason::AuthTokenEndpointUnreachable,
            false => Reason::AuthTokenEndpointError,
        };
        // The hop's own phase for dns/connect/tls; "request" for what failed after them.
        let step = match transport {
            true => f.phase.to_string(),
            false => "request".to_string(),
        };
        Failure::new(
            reason,
            format!(
                "token endpoint {}: {step} failed: {} ({})",
                req.url.host_str().unwrap_or_default(),
                f.reason,
                f.message
            ),
        )
    })
}

/// A token (or a token response) over [`MAX_TOKEN_BYTES`]: refused, never stored.
fn too_large_token(bytes: usize) -> Failure {
    Failure::new(
        Reason::AuthTokenTooLarge,
        format!(
            "the token server's answer ({} bytes or more) is over pullprobe's {} KiB token limit: not used, not cached",
            crate::text::thousands(bytes as u64),
            MAX_TOKEN_BYTES / 1024
        ),
    )
}

fn token_status_failure(status: StatusCode, with_credential: bool) -> Failure {
    match status {
        StatusCode::UNAUTHORIZED if with_credential => Failure::new(
            Reason::AuthCredentialsRejected,
            "the token endpoint rejected the credentials (401)",
        ),
        StatusCode::UNAUTHORIZED => Failure::new(
            Reason::AuthCredentialsRequired,
            "the token endpoint refuses anonymous tokens (401)",
        ),
        StatusCode::FORBIDDEN => {
            Failure::new(Reason::AuthDenied, "the token endpoint denied access (403)")
        }
        other => Failure::new(
            Reason::AuthTokenEndpointError,
            format!("the token endpoint answered {other}"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Parse a token response. Errors never include the body (it may hold a token).
pub fn parse_token(body: &[u8]) -> Result<(Secret, Duration), Failure> {
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            Reason::AuthTokenMalformed,
            format!(
                "token response is not valid JSON (line {}, column {}, {} bytes)",
                e.line(),
                e.column(),
                body.len()
            ),
        )
    })?;
    // distribution auth/token.md: `token`, with `access_token` as the OAuth2 alias.
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| {
            Failure::new(
                Reason::AuthTokenMalformed,
                "token response has neither `token` nor `access_token`",
            )
        })?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(too_large_token(token.len()));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Failure::new(
            Reason::AuthTokenMalformed,
            "token contains characters not allowed in an HTTP header",
        ));
    }
    // `issued_at` is not used: containerd's authorizer ignores it, and containers/image's
    // `IssuedAt + ExpiresIn` would only add the node's clock skew. `expires_in` ≤ 0 or
    // absent is the spec's 60 s; anything above MAX_TOKEN_LIFETIME is capped.
    let lifetime = match parsed.expires_in {
        Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()).min(MAX_TOKEN_LIFETIME),
        _ => DEFAULT_TOKEN_LIFETIME,
    };
    Ok((Secret::new(token), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::challenge::parse_challenges;

    #[test]
    fn token_json_variants() {
        let (t, l) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.expose(), "abc");
        assert_eq!(l, Duration::from_secs(300));
        let (t, l) = parse_token(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.expose(), "xyz");
        assert_eq!(l, DEFAULT_TOKEN_LIFETIME);
        let e = parse_token(b"<html>canary-token-123</html>").unwrap_err();
        assert_eq!(e.reason, Reason::AuthTokenMalformed);
        assert!(!e.message.contains("canary"));
        let e = parse_token(br#"{"token":""}"#).unwrap_err();
        assert_eq!(e.reason, Reason::AuthTokenMalformed);
        let e = parse_token(br#"{"token":"a\nb"}"#).unwrap_err();
        assert_eq!(e.reason, Reason::AuthTokenMalformed);
    }

    /// A hostile `expires_in` used to overflow `Instant::now() + lifetime` (a panic =
    /// agent abort): it is capped at MAX_TOKEN_LIFETIME and the cache add is checked.
    #[test]
    fn huge_expires_in_is_capped_and_cached_without_overflow() {
        for body in [
            br#"{"token":"t","expires_in":9223372036854775807}"#.as_slice(),
            br#"{"token":"t","expires_in":31536000000}"#,
        ] {
            let (t, l) = parse_token(body).unwrap();
            assert_eq!(l, MAX_TOKEN_LIFETIME);
            let cache = TokenCache::default();
            let key = TokenKey {
                realm: "r".into(),
                service: "s".into(),
                scope: "x".into(),
                identity: String::new(),
            };
            cache.put("r:443", key.clone(), t, l);
            assert_eq!(
                cache.get(&key).map(|s| s.expose().to_string()).as_deref(),
                Some("t")
            );
            // Even an unbounded lifetime handed to the cache directly cannot overflow.
            cache.put("r:443", key.clone(), Secret::new("u"), Duration::MAX);
            assert_eq!(cache.len(), 1);
        }
        // Out of i64 range or not an integer: a malformed response, not a panic.
        for body in [
            br#"{"token":"t","expires_in":18446744073709551616}"#.as_slice(),
            br#"{"token":"t","expires_in":1e300}"#,
            br#"{"token":"t","expires_in":"300"}"#,
        ] {
            assert_eq!(
                parse_token(body).unwrap_err().reason,
                Reason::AuthTokenMalformed
            );
        }
        let (_, l) = parse_token(br#"{"token":"t","expires_in":-5}"#).unwrap();
        assert_eq!(l, DEFAULT_TOKEN_LIFETIME);
    }

    /// The flood of issue 14: every challenge with a fresh `service=`, on many host names,
    /// with tokens at the size limit. The cache stays within its bounds, and a quiet
    /// registry's token survives it.
    #[test]
    fn fresh_services_on_many_hosts_stay_within_the_bounds() {
        let cache = TokenCache::default();
        let token = |n: usize| Secret::new("t".repeat(n));
        let key = |host: &str, service: String| TokenKey {
            realm: format!("https://{host}/token"),
            service,
            scope: "repository:team/app:pull".into(),
            identity: String::new(),
        };
        let quiet = key("quiet.example:443", "quiet".into());
        cache.put(
            "quiet.example:443",
            quiet.clone(),
            token(2000),
            Duration::from_secs(300),
        );
        for host in 0..50 {
            let h = format!("h{host}.evil.example:443");
            let c = parse_challenges(&[&format!(
                "Bearer realm=\"https://{h}/token\",service=\"s\",scope=\"{}\"",
                "x".repeat(3000)
            )])
            .unwrap();
            cache.remember_challenge(&h, &c[0]);
            for n in 0..40 {
                let k = key(&h, format!("svc-{host}-{n}"));
                cache.put(&h, k, token(MAX_TOKEN_BYTES), Duration::from_secs(300));
            }
            let st = cache.stats();
            for (what, s) in [("tokens", st.tokens), ("challenges", st.challenges)] {
                assert!(
                    s.entries <= s.max_entries && s.bytes <= s.max_bytes,
                    "{what}: {s:?}"
                );
            }
        }
        let st = cache.stats();
        assert!(st.tokens.bytes > TOKEN_LIMITS.max_bytes / 2, "{st:?}");
        assert!(
            st.tokens.evicted > 0 && st.challenges.entries == 50,
            "{st:?}"
        );
        assert!(
            cache.get(&quiet).is_some(),
            "the quiet registry keeps its token"
        );
        // Only realm and service are remembered, not the 3,000-byte scope.
        let c = cache.known_challenge("h7.evil.example:443").unwrap();
        assert_eq!(c.params.len(), 2);
        // Expired tokens are swept without being looked up.
        let short = key("short.example:443", "s".into());
        cache.put("short.example:443", short, token(10), Duration::ZERO);
        assert_eq!(
            cache.stats().tokens.owners,
            st.tokens.owners,
            "swept on stats"
        );
    }

    #[test]
    fn a_token_over_the_limit_is_a_typed_failure() {
        let body = format!(
            r#"{{"token":"{}","expires_in":300}}"#,
            "t".repeat(MAX_TOKEN_BYTES + 1)
        );
        let e = parse_token(body.as_bytes()).unwrap_err();
        assert_eq!(e.reason, Reason::AuthTokenTooLarge);
        assert_eq!(e.phase, Phase::Auth);
        assert!(!e.message.contains("ttttt"), "{}", e.message);
        let body = format!(r#"{{"token":"{}"}}"#, "t".repeat(MAX_TOKEN_BYTES));
        assert!(parse_token(body.as_bytes()).is_ok());
    }
}
