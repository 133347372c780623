//! A Docker registry token issuer (https://distribution.github.io/distribution/spec/auth/token/) that
//! the real registry trusts: ES256 JWTs whose header `x5c` carries the signing leaf, which chains to
//! `Pki::token_ca_cert` (given to the registry as `auth.token.rootcertbundle`).
//!
//! Endpoints on `realm_url()` (`/token`):
//! - `GET ?service=&scope=` anonymous or with Basic credentials (docker / skopeo style);
//! - `POST` form `grant_type=password` (username, password) or `grant_type=refresh_token` (OAuth2, used
//!   by containerd whenever it holds credentials). Replies `token`, `access_token`, `expires_in`,
//!   `issued_at` (+ `refresh_token` for the password grant).
//!
//! Policy: a user may get the requested actions on repositories allowed to it (`allow`, default: all
//! repositories when the user has no `allow` rule); anonymous requests (if `anonymous(true)`) may get
//! `pull` on `anonymous_allow` repositories. Other scopes are granted with empty actions, so the
//! registry answers 401 `insufficient_scope`. Wrong passwords get 401 unless `bad_password_as_anonymous()`.
//! `reject_post(404)` makes POST fail so clients fall back to GET; `get_count()`/`post_count()` count both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::json;

use super::pki::{CertKey, Pki};
use super::{http_response, serve_http, tls_server_config, BgServer, HttpRequest, HttpResponse};

/// One request seen by the issuer (secrets omitted).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub grant_type: Option<String>,
    pub user: Option<String>,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    /// HTTP status answered.
    pub status: u16,
    /// The request's headers other than `Authorization` (names lowercase).
    pub headers: Vec<(String, String)>,
}

impl TokenRequest {
    /// First header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct TokenIssuerBuilder {
    signing: CertKey,
    root_bundle: std::path::PathBuf,
    service: String,
    issuer: String,
    users: HashMap<String, String>,
    allow: HashMap<String, Vec<String>>,
    anonymous: bool,
    anonymous_allow: Vec<String>,
    bad_password_as_anonymous: bool,
    expires_in: u64,
    tls: Option<CertKey>,
    realm_host: String,
    reject_post: Option<u16>,
}

struct State {
    cfg: TokenIssuerBuilder,
    key: jsonwebtoken::EncodingKey,
    x5c: String,
    gets: AtomicUsize,
    posts: AtomicUsize,
    log: Mutex<Vec<TokenRequest>>,
    refresh: Mutex<HashMap<String, String>>,
    counter: AtomicUsize,
}

pub struct TokenIssuer {
    state: Arc<State>,
    server: BgServer,
    tls: bool,
    realm_host: String,
    /// Port advertised in `realm_url()` instead of the listening one (see `set_realm_port`).
    realm_port: Option<u16>,
    service: String,
    issuer: String,
    root_bundle: std::path::PathBuf,
}

impl TokenIssuer {
    pub fn builder(pki: &Pki) -> TokenIssuerBuilder {
        TokenIssuerBuilder {
            signing: pki.token_signing.clone(),
            root_bundle: pki.token_ca_cert.clone(),
            service: "registry.test".into(),
            issuer: "harness-token-issuer".into(),
            users: HashMap::new(),
            allow: HashMap::new(),
            anonymous: false,
            anonymous_allow: Vec::new(),
            bad_password_as_anonymous: false,
            expires_in: 300,
            tls: None,
            realm_host: "127.0.0.1".into(),
            reject_post: None,
        }
    }

    /// `http(s)://127.0.0.1:PORT/token` (host overridable with `realm_host`).
    pub fn realm_url(&self) -> String {
        format!(
            "{}://{}:{}/token",
            if self.tls { "https" } else { "http" },
            self.realm_host,
            self.realm_port.unwrap_or(self.server.addr().port())
        )
    }
    /// Advertise `port` in `realm_url()` (e.g. a `DelayProxy` in front of this issuer, which can
    /// only be started once the issuer listens). Call before handing the issuer to a registry.
    pub fn set_realm_port(&mut self, port: u16) {
        self.realm_port = Some(port);
    }
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }
    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn issuer_name(&self) -> &str {
        &self.issuer
    }
    pub fn root_cert_bundle(&self) -> &std::path::Path {
        &self.root_bundle
    }
    pub fn get_count(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }
    pub fn post_count(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().expect("log lock").clone()
    }
    pub fn reset_counts(&self) {
        self.state.gets.store(0, Ordering::SeqCst);
        self.state.posts.store(0, Ordering::SeqCst);
        self.state.log.lock().expect("log lock").clear();
    }
}

impl TokenIssuerBuilder {
    pub fn service(mut self, s: &str) -> Self {
        self.service = s.into();
        self
    }
    pub fn issuer(mut self, s: &str) -> Self {
        self.issuer = s.into();
        self
    }
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.insert(name.into(), password.into());
        self
    }
    /// Restricts `user` to the listed repositories (call repeatedly). Pattern: exact name, `prefix/*`
    /// or `*`.
    pub fn allow(mut self, user: &str, repo: &str) -> Self {
        self.allow.entry(user.into()).or_default().push(repo.into());
        self
    }
    /// Whether requests without credentials get a token at all (else 401).
    pub fn anonymous(mut self, allowed: bool) -> Self {
        self.anonymous = allowed;
        self
    }
    /// Anonymous `pull` on `repo` (implies `anonymous(true)`).
    pub fn anonymous_allow(mut self, repo: &str) -> Self {
        self.anonymous = true;
        self.anonymous_allow.push(repo.into());
        self
    }
    /// Wrong password → anonymous token instead of 401.
    pub fn bad_password_as_anonymous(mut self) -> Self {
        self.bad_password_as_anonymous = true;
        self
    }
    pub fn expires_in(mut self, secs: u64) -> Self {
        self.expires_in = secs;
        self
    }
    /// Serve the realm over TLS with this leaf.
    pub fn tls(mut self, ck: &CertKey) -> Self {
        self.tls = Some(ck.clone());
        self
    }
    /// Every POST answers `status` (e.g. 404 like GCR, 401 like Artifactory, 400 like ACR): clients
    /// such as containerd then fall back to GET (`core/remotes/docker/authorizer.go`).
    pub fn reject_post(mut self, status: u16) -> Self {
        self.reject_post = Some(status);
        self
    }
    /// Host name used in `realm_url()` (e.g. `auth.test` or `localhost`).
    pub fn realm_host(mut self, host: &str) -> Self {
        self.realm_host = host.into();
        self
    }

    pub fn start(self) -> TokenIssuer {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.signing.key_pem().as_bytes())
            .expect("token signing key");
        let der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(&self.signing.cert)
                .expect("token signing cert")
        };
        let x5c = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let tls_cfg = self
            .tls
            .as_ref()
            .map(|ck| tls_server_config(&ck.cert, &ck.key, None));
        let (tls, realm_host, service, issuer, root_bundle) = (
            self.tls.is_some(),
            self.realm_host.clone(),
            self.service.clone(),
            self.issuer.clone(),
            self.root_bundle.clone(),
        );
        let state = Arc::new(State {
            cfg: self,
            key,
            x5c,
            gets: AtomicUsize::new(0),
            posts: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            refresh: Mutex::new(HashMap::new()),
            counter: AtomicUsize::new(0),
        });
        let st = state.clone();
        let handler: super::HttpHandler = Arc::new(move |req| handle(&st, req));
        let server = BgServer::start("127.0.0.1:0".parse().expect("addr"), move |l| {
            serve_http(l, tls_cfg, handler)
        });
        TokenIssuer {
            state,
            server,
            tls,
            realm_host,
            realm_port: None,
            service,
            issuer,
            root_bundle,
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn repo_matches(pattern: &str, repo: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix("/*") {
        return repo.starts_with(&format!("{prefix}/"));
    }
    pattern == repo
}

enum Who {
    Anonymous,
    User(String),
}

fn unauthorized(msg: &str) -> HttpResponse {
    http_response(
        401,
        &[
            ("Content-Type", "application/json"),
            ("WWW-Authenticate", "Basic realm=\"harness-token\""),
        ],
        json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}]}).to_string(),
    )
}

fn handle(st: &State, req: HttpRequest) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let mut params: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let is_post = req.method() == http::Method::POST;
    if is_post {
        st.posts.fetch_add(1, Ordering::SeqCst);
        params.extend(url::form_urlencoded::parse(req.body()).into_owned());
    } else {
        st.gets.fetch_add(1, Ordering::SeqCst);
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // GET: repeated `scope=`; POST: space-separated `scope=`.
    let scopes: Vec<String> = params
        .iter()
        .filter(|(n, _)| n == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let grant_type = get("grant_type");
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| *k != http::header::AUTHORIZATION)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if let (true, Some(status)) = (is_post, st.cfg.reject_post) {
        st.log.lock().expect("lock").push(TokenRequest {
            method,
            grant_type,
            user: None,
            service: get("service"),
            scopes,
            status,
            headers,
        });
        return http_response(
            status,
            &[("Content-Type", "text/plain")],
            "POST not supported",
        );
    }
    let mut rec = TokenRequest {
        method,
        grant_type: grant_type.clone(),
        user: None,
        service: get("service"),
        scopes: scopes.clone(),
        status: 200,
        headers,
    };

    // Who is asking.
    let basic = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let creds: Option<(String, String)> = if is_post {
        match grant_type.as_deref() {
            Some("password") => match (get("username"), get("password")) {
                (Some(u), Some(p)) => Some((u, p)),
                _ => None,
            },
            Some("refresh_token") => {
                let rt = get("refresh_token").unwrap_or_default();
                let user = st.refresh.lock().expect("lock").get(&rt).cloned();
                match user {
                    Some(u) => {
                        let p = st.cfg.users.get(&u).cloned().unwrap_or_default();
                        Some((u, p))
                    }
                    None => {
                        rec.status = 401;
                        st.log.lock().expect("lock").push(rec);
                        return unauthorized("invalid refresh token");
                    }
                }
            }
            _ => {
                rec.status = 400;
                st.log.lock().expect("lock").push(rec);
                return http_response(
                    400,
                    &[("Content-Type", "application/json")],
                    json!({"error": "unsupported_grant_type"}).to_string(),
                );
            }
        }
    } else {
        basic
    };
    let who = match creds {
        None => Who::Anonymous,
        Some((u, p)) => {
            if st.cfg.users.get(&u) == Some(&p) {
                Who::User(u)
            } else if st.cfg.bad_password_as_anonymous {
                Who::Anonymous
            } else {
                rec.user = Some(u);
                rec.status = 401;
                st.log.lock().expect("lock").push(rec);
                return unauthorized("invalid username or password");
            }
        }
    };
    if matches!(who, Who::Anonymous) && !st.cfg.anonymous {
        rec.status = 401;
        st.log.lock().expect("lock").push(rec);
        return unauthorized("authentication required");
    }

    // Grants: requested actions on allowed repositories, empty actions elsewhere.
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((typ, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let requested: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
        let granted: Vec<&str> = if typ != "repository" {
            Vec::new()
        } else {
            match &who {
                Who::User(u) => {
                    let ok = match st.cfg.allow.get(u) {
                        None => true,
                        Some(pats) => pats.iter().any(|p| repo_matches(p, name)),
                    };
                    if ok {
                        requested.clone()
                    } else {
                        Vec::new()
                    }
                }
                Who::Anonymous => {
                    if st.cfg.anonymous_allow.iter().any(|p| repo_matches(p, name)) {
                        requested.iter().copied().filter(|a| *a == "pull").collect()
                    } else {
                        Vec::new()
                    }
                }
            }
        };
        access.push(json!({"type": typ, "name": name, "actions": granted}));
    }

    let sub = match &who {
        Who::User(u) => u.clone(),
        Who::Anonymous => String::new(),
    };
    rec.user = match &who {
        Who::User(u) => Some(u.clone()),
        Who::Anonymous => None,
    };
    let t = now();
    let n = st.counter.fetch_add(1, Ordering::SeqCst);
    let claims = json!({
        "iss": st.cfg.issuer,
        "sub": sub,
        "aud": get("service").unwrap_or_else(|| st.cfg.service.clone()),
        "exp": t + st.cfg.expires_in,
        "nbf": t.saturating_sub(10),
        "iat": t,
        "jti": format!("harness-{t}-{n}"),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("JWT".into());
    header.x5c = Some(vec![st.x5c.clone()]);
    let token = match jsonwebtoken::encode(&header, &claims, &st.key) {
        Ok(t) => t,
        Err(e) => {
            rec.status = 500;
            st.log.lock().expect("lock").push(rec);
            return http_response(500, &[], format!("sign: {e}"));
        }
    };
    let issued_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": st.cfg.expires_in,
        "issued_at": issued_at,
    });
    if let (true, Some("password"), Who::User(u)) = (is_post, grant_type.as_deref(), &who) {
        let rt = format!("harness-refresh-{t}-{n}");
        st.refresh
            .lock()
            .expect("lock")
            .insert(rt.clone(), u.clone());
        body["refresh_token"] = json!(rt);
    }
    st.log.lock().expect("lock").push(rec);
    http_response(
        200,
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
}
