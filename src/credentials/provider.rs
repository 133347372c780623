//! kubelet credential-provider plugins: the `CredentialProviderConfig` file and the exec
//! protocol, reproduced from kubernetes pkg/credentialprovider/plugin (`config.go`
//! `validateCredentialProviderConfig`, `plugin.go` `pluginProvider.provide`,
//! `execPlugin.ExecPlugin`, `isImageAllowed`, the cache keyed by `cacheKeyType`) and
//! pkg/credentialprovider/keyring.go (results of all providers go into one keyring, so
//! overlapping keys keep provider order).
//!
//! A plugin that hangs is killed at the timeout; garbage output, a non-zero exit, or a
//! bad response is a [`ProviderError`] naming the plugin — never a hang or a panic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::keyring::{url_matches_key, Keyring};
use super::satoken::{
    self, ServiceAccountTokens, TokenAttributes, TokenCacheType, TokenRequestPart,
};
use super::{Credential, CredentialSource, Secret, SourcedCredential};
use crate::cache::{BoundedCache, CacheStats, Limits};
use crate::redact::{self, ParseError};
use crate::reference::ImageRef;

/// Config API versions the kubelet accepts.
const CONFIG_API_VERSIONS: &[&str] = &[
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];
/// The exec protocol version that carries service-account tokens.
pub const PLUGIN_API_V1: &str = "credentialprovider.kubelet.k8s.io/v1";
/// Exec protocol versions.
const PLUGIN_API_VERSIONS: &[&str] = &[
    PLUGIN_API_V1,
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];
/// How long one plugin run may take (the kubelet bounds the exec with a context
/// deadline; one minute keeps a stuck plugin from stalling a probe run).
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Most a plugin may write to stdout (a response is a few KiB); more and it is killed.
pub const MAX_PLUGIN_STDOUT: usize = 1 << 20;
/// Most a plugin may write to stderr before it is killed. stderr is only counted, never
/// kept or shown (plugins print tokens there when they fail verbosely), so this bounds
/// the time spent draining it, not memory.
pub const MAX_PLUGIN_STDERR: u64 = 1 << 20;
/// Longest a plugin answer is cached, whatever `cacheDuration` /
/// `defaultCacheDuration` say (the kubelet has no cap; ECR's plugin asks for 12 h). A
/// longer cache would only hide a rotated credential from the probe.
pub const MAX_PLUGIN_CACHE: Duration = Duration::from_secs(24 * 3600);

/// Bounds of the plugin answers kept (the kubelet's cache has none, and never prunes):
/// per registry an image-keyed answer for each of 256 repositories; expired answers are
/// swept on every insert. An answer over a registry's share is used, not kept.
pub const PLUGIN_CACHE_LIMITS: Limits = Limits {
    max_entries: 1024,
    max_bytes: 1024 * 1024,
    owner_entries: 256,
    owner_bytes: 256 * 1024,
};

/// A problem with the config file, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {message}", file.display())]
pub struct ProviderConfigError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

/// A plugin run that produced no credentials. Never carries a secret: neither stdout
/// nor stderr is ever quoted (either may hold one), only their sizes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("credential provider {plugin}: binary {} cannot be run: {why}", path.display())]
    Spawn {
        plugin: String,
        path: PathBuf,
        why: String,
    },
    #[error("credential provider {plugin}: no response within {after:?}; killed")]
    Timeout { plugin: String, after: Duration },
    #[error("credential provider {plugin}: exited with {status} (it wrote {stderr_bytes} bytes to stderr; not shown, plugins may print credentials there)")]
    Exit {
        plugin: String,
        status: String,
        stderr_bytes: u64,
    },
    #[error("credential provider {plugin}: wrote more than {limit} bytes to {stream}; killed")]
    OutputTooLarge {
        plugin: String,
        stream: &'static str,
        limit: u64,
    },
    #[error("credential provider {plugin}: invalid response: {why}")]
    BadResponse { plugin: String, why: String },
    /// A `tokenAttributes` provider and no ServiceAccount named for it: the kubelet would
    /// send the pod's token, which pullprobe does not mint (KEP-4412). Not a node problem.
    #[error("credential provider {plugin} needs a service-account token (audience {audience:?}): not reproduced")]
    NeedsServiceAccountToken { plugin: String, audience: String },
    /// The ServiceAccount named for a `tokenAttributes` provider gave no usable token.
    #[error("credential provider {plugin}: no service-account token: {why}")]
    ServiceAccountToken { plugin: String, why: String },
}

impl ProviderError {
    pub fn plugin(&self) -> &str {
        match self {
            ProviderError::Spawn { plugin, .. }
            | ProviderError::Timeout { plugin, .. }
            | ProviderError::Exit { plugin, .. }
            | ProviderError::BadResponse { plugin, .. }
            | ProviderError::OutputTooLarge { plugin, .. }
            | ProviderError::NeedsServiceAccountToken { plugin, .. }
            | ProviderError::ServiceAccountToken { plugin, .. } => plugin,
        }
    }

    /// Stable label for reports.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::Spawn { .. } => "plugin_spawn",
            ProviderError::Timeout { .. } => "plugin_timeout",
            ProviderError::Exit { .. } => "plugin_exit",
            ProviderError::BadResponse { .. } => "plugin_bad_response",
            ProviderError::OutputTooLarge { .. } => "plugin_output_too_large",
            ProviderError::NeedsServiceAccountToken { .. } => "plugin_needs_service_account_token",
            ProviderError::ServiceAccountToken { .. } => "plugin_service_account_token",
        }
    }

    /// About pullprobe's service-account tokens, not about the node: such a provider works
    /// on the node with the pod's token, which pullprobe does not have or could not mint.
    pub fn is_service_account(&self) -> bool {
        matches!(
            self,
            ProviderError::NeedsServiceAccountToken { .. }
                | ProviderError::ServiceAccountToken { .. }
        )
    }
}

/// One `providers[]` entry after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub match_images: Vec<String>,
    pub default_cache_duration: Duration,
    pub api_version: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `tokenAttributes` (KEP-4412): the kubelet sends the pod's ServiceAccount token.
    pub token: Option<TokenAttributes>,
}

/// A validated `CredentialProviderConfig`. Invalid providers are left out and reported.
#[derive(Clone, Debug, Default)]
pub struct CredentialProviderConfig {
    pub file: PathBuf,
    pub providers: Vec<ProviderSpec>,
}

fn cfg_err(
    file: &Path,
    field: impl Into<String>,
    message: impl Into<String>,
) -> ProviderConfigError {
    ProviderConfigError {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

impl CredentialProviderConfig {
    /// Parses YAML or JSON. Returns what is usable plus every problem found; `Err` only
    /// when nothing in the file is usable (syntax, wrong kind/apiVersion).
    pub fn parse(
        file: &Path,
        text: &str,
    ) -> Result<(CredentialProviderConfig, Vec<ProviderConfigError>), ProviderConfigError> {
        let doc: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| cfg_err(file, "(syntax)", ParseError::json(&e).to_string()))?
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| cfg_err(file, "(syntax)", ParseError::yaml(&e, text).to_string()))?
        };
        let Value::Object(top) = doc else {
            return Err(cfg_err(file, "(top level)", "must be a mapping"));
        };
        let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "CredentialProviderConfig" {
            return Err(cfg_err(
                file,
                "kind",
                format!(
                    "must be CredentialProviderConfig, found {}",
                    redact::keyword(kind)
                ),
            ));
        }
        let api = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if !CONFIG_API_VERSIONS.contains(&api) {
            return Err(cfg_err(
                file,
                "apiVersion",
                format!("unsupported {}", redact::keyword(api)),
            ));
        }
        let Some(Value::Array(providers)) = top.get("providers") else {
            return Err(cfg_err(
                file,
                "providers",
                "at least 1 item in plugins is required",
            ));
        };
        let mut out = CredentialProviderConfig {
            file: file.to_path_buf(),
            providers: Vec::new(),
        };
        let mut problems = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            match parse_provider(file, i, p, &names) {
                Ok(spec) => {
                    names.push(spec.name.clone());
                    out.providers.push(spec);
                }
                Err(e) => problems.push(e),
            }
        }
        Ok((out, problems))
    }
}

fn parse_provider(
    file: &Path,
    i: usize,
    p: &Value,
    names: &[String],
) -> Result<ProviderSpec, ProviderConfigError> {
    let f = |k: &str| format!("providers[{i}].{k}");
    let Value::Object(o) = p else {
        return Err(cfg_err(
            file,
            format!("providers[{i}]"),
            "must be a mapping",
        ));
    };
    let name = parse_name(file, &f, o, names)?;
    let match_images = parse_match_images(file, &f, o)?;
    let default_cache_duration = parse_cache_duration(file, &f, o)?;
    let api_version = parse_api_version(file, &f, o)?;
    let (args, env) = parse_args_env(file, &f, o)?;
    let token = satoken::parse_token_attributes(file, &f, o, &api_version)?;
    Ok(ProviderSpec {
        name,
        match_images,
        default_cache_duration,
        api_version,
        args,
        env,
        token,
    })
}

/// `name`: required, a plain binary name, unique in the file.
fn parse_name(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
    names: &[String],
) -> Result<String, ProviderConfigError> {
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(cfg_err(file, f("name"), "name is required"));
    }
    if name.contains('/') || name == "." || name == ".." || name.contains(' ') {
        return Err(cfg_err(
            file,
            f("name"),
            format!("{} must be a plain binary name", redact::keyword(&name)),
        ));
    }
    if names.contains(&name) {
        return Err(cfg_err(
            file,
            f("name"),
            format!("duplicate provider name {}", redact::keyword(&name)),
        ));
    }
    Ok(name)
}

/// `defaultCacheDuration`: required, a Go duration (or the number 0).
fn parse_cache_duration(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
) -> Result<Duration, ProviderConfigError> {
    match o.get("defaultCacheDuration") {
        Some(Value::String(s)) => crate::goduration::parse(s).ok_or_else(|| {
            cfg_err(
                file,
                f("defaultCacheDuration"),
                format!("{} is not a duration", redact::keyword(s)),
            )
        }),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
        _ => Err(cfg_err(
            file,
            f("defaultCacheDuration"),
            "defaultCacheDuration is required",
        )),
    }
}

/// `apiVersion`: required, one of the plugin API versions the kubelet speaks.
fn parse_api_version(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
) -> Result<String, ProviderConfigError> {
    let api_version = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api_version.is_empty() {
        return Err(cfg_err(file, f("apiVersion"), "apiVersion is required"));
    }
    if !PLUGIN_API_VERSIONS.contains(&api_version.as_str()) {
        return Err(cfg_err(
            file,
            f("apiVersion"),
            format!("unsupported apiVersion {}", redact::keyword(&api_version)),
        ));
    }
    Ok(api_version)
}

/// Builds `providers[i].<key>` field names.
type Fields<'a> = &'a dyn Fn(&str) -> String;
/// A provider's `env`, `(name, value)` in order.
type EnvVars = Vec<(String, String)>;

/// `matchImages`: at least one, strings, no scheme.
fn parse_match_images(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
) -> Result<Vec<String>, ProviderConfigError> {
    let match_images: Vec<String> = match o.get("matchImages") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| cfg_err(file, f("matchImages"), "must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(cfg_err(
                file,
                f("matchImages"),
                "at least 1 item in matchImages is required",
            ))
        }
    };
    for m in &match_images {
        if m.contains("://") {
            return Err(cfg_err(
                file,
                f("matchImages"),
                format!("match image {} must not have a scheme", redact::url_text(m)),
            ));
        }
    }
    Ok(match_images)
}

/// `args` and `env` of one provider.
fn parse_args_env(
    file: &Path,
    f: Fields<'_>,
    o: &serde_json::Map<String, Value>,
) -> Result<(Vec<String>, EnvVars), ProviderConfigError> {
    let args = match o.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(cfg_err(file, f("args"), "must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(cfg_err(file, f("args"), "must be a list")),
    };
    let mut env = Vec::new();
    match o.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (j, e) in a.iter().enumerate() {
                let n = e.get("name").and_then(Value::as_str).unwrap_or("");
                if n.is_empty() {
                    return Err(cfg_err(
                        file,
                        f(&format!("env[{j}].name")),
                        "name is required",
                    ));
                }
                let v = match e.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                env.push((n.to_string(), v));
            }
        }
        Some(_) => return Err(cfg_err(file, f("env"), "must be a list")),
    }
    Ok((args, env))
}

/// A cached plugin answer: `(auth key, username, password)`.
type CachedAuth = Vec<(String, String, Secret)>;

/// Runs plugins for images, with the kubelet's per-provider cache.
#[derive(Debug)]
pub struct PluginRunner {
    config: CredentialProviderConfig,
    /// Real directory holding the binaries.
    bin_dir: PathBuf,
    timeout: Duration,
    /// (provider, cache key) → answer, bounded per registry ([`PLUGIN_CACHE_LIMITS`]).
    cache: Mutex<BoundedCache<(String, String), CachedAuth>>,
}

impl std::fmt::Debug for BoundedCache<(String, String), CachedAuth> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.stats())
    }
}

impl PluginRunner {
    pub fn new(
        config: CredentialProviderConfig,
        bin_dir: PathBuf,
        timeout: Duration,
    ) -> PluginRunner {
        PluginRunner {
            config,
            bin_dir,
            timeout,
            cache: Mutex::new(BoundedCache::new(PLUGIN_CACHE_LIMITS)),
        }
    }

    pub fn config(&self) -> &CredentialProviderConfig {
        &self.config
    }

    /// All plugin credentials for `image`, in keyring order, plus per-plugin errors.
    pub async fn lookup(&self, image: &ImageRef) -> (Vec<SourcedCredential>, Vec<ProviderError>) {
        self.lookup_with(image, None).await
    }

    /// [`lookup`](Self::lookup), with `tokens` for the providers with `tokenAttributes`
    /// (without: each such provider is [`ProviderError::NeedsServiceAccountToken`]).
    pub async fn lookup_with(
        &self,
        image: &ImageRef,
        tokens: Option<&dyn ServiceAccountTokens>,
    ) -> (Vec<SourcedCredential>, Vec<ProviderError>) {
        let repo = image.repository();
        let mut keyring = Keyring::new();
        let mut errors = Vec::new();
        for p in &self.config.providers {
            // isImageAllowed: any matchImages entry matches the repository.
            if !p.match_images.iter().any(|m| url_matches_key(m, image)) {
                continue;
            }
            let part = match token_part(p, tokens).await {
                Ok(part) => part,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let sa_key = part.as_ref().map_or("", |t| t.cache_key.as_str());
            let auth = match self.cached(p, &repo, image, sa_key) {
                Some(a) => a,
                None => match self.exec(p, &repo, image, part.as_ref()).await {
                    Ok(a) => a,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            for (key, user, pass) in auth {
                keyring.add(
                    &key,
                    SourcedCredential {
                        source: CredentialSource::Plugin {
                            name: p.name.clone(),
                            key: redact::credential_key(&key),
                        },
                        credential: Credential::Basic {
                            username: user,
                            password: pass,
                        },
                    },
                );
            }
        }
        (keyring.lookup(image), errors)
    }

    /// `sa_key`: the service-account part of the key (`generateCacheKey`), empty without.
    fn cached(
        &self,
        p: &ProviderSpec,
        repo: &str,
        image: &ImageRef,
        sa_key: &str,
    ) -> Option<Vec<(String, String, Secret)>> {
        let mut cache = self.cache.lock().ok()?;
        let now = Instant::now();
        // getCachedCredentials: image key, then registry, then global.
        for key in [repo.to_string(), image.domain.clone(), "global".to_string()] {
            if let Some(auth) = cache.get(&(p.name.clone(), format!("{key}{sa_key}")), now) {
                return Some(auth.clone());
            }
        }
        None
    }

    /// What the plugin-answer cache holds, after sweeping expired answers.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .lock()
            .map(|mut c| {
                c.sweep(Instant::now());
                c.stats()
            })
            .unwrap_or_default()
    }

    async fn exec(
        &self,
        p: &ProviderSpec,
        repo: &str,
        image: &ImageRef,
        part: Option<&TokenRequestPart>,
    ) -> Result<Vec<(String, String, Secret)>, ProviderError> {
        let plugin = p.name.clone();
        let path = self.bin_dir.join(&p.name);
        let mut request = serde_json::json!({
            "apiVersion": p.api_version,
            "kind": "CredentialProviderRequest",
            "image": repo,
        });
        if let (Some(t), Some(obj)) = (part, request.as_object_mut()) {
            obj.insert("serviceAccountToken".into(), t.token.expose().into());
            if !t.annotations.is_empty() {
                obj.insert(
                    "serviceAccountAnnotations".into(),
                    serde_json::to_value(&t.annotations).unwrap_or_default(),
                );
            }
        }
        // The request holds the token: wiped once written (the plugin has it).
        let request = zeroize::Zeroizing::new(request.to_string());
        let out = self.run_capped(&plugin, &path, p, &request).await?;
        let PluginReply {
            cache_key,
            duration,
            auth,
        } = parse_reply(p, repo, image, &out)?;
        refuse_echoed_token(p, part, &auth)?;
        // The registry the answer is for owns it; a `Global` answer has its own share.
        let owner = match cache_key.as_str() {
            "global" => "global",
            _ => image.domain.as_str(),
        };
        let cache_key = format!("{cache_key}{}", part.map_or("", |t| t.cache_key.as_str()));
        let now = Instant::now();
        let expires = now.checked_add(duration.min(MAX_PLUGIN_CACHE));
        if let (false, Some(expires), Ok(mut c)) = (duration.is_zero(), expires, self.cache.lock())
        {
            let bytes = p.name.len()
                + cache_key.len()
                + auth
                    .iter()
                    .map(|(k, u, pw)| k.len() + u.len() + pw.expose().len())
                    .sum::<usize>();
            c.insert(
                (p.name.clone(), cache_key),
                auth.clone(),
                owner,
                bytes,
                expires,
                now,
            );
        }
        Ok(auth)
    }

    /// Runs the plugin with `request` on stdin, within the timeout, reading at most
    /// [`MAX_PLUGIN_STDOUT`] of stdout and counting (never keeping) stderr; a plugin
    /// that writes more is killed (`kill_on_drop`).
    async fn run_capped(
        &self,
        plugin: &str,
        path: &Path,
        p: &ProviderSpec,
        request: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut cmd = tokio::process::Command::new(path);
        cmd.args(&p.args)
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |e: std::io::Error| ProviderError::Spawn {
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let too_large = |stream: &'static str, limit: u64| ProviderError::OutputTooLarge {
            plugin: plugin.to_string(),
            stream,
            limit,
        };
        let run = talk(stdin, stdout, stderr, request);
        let (out, err_bytes) = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    plugin: plugin.to_string(),
                    after: self.timeout,
                })
            }
            Ok(Err(e)) => return Err(spawn_err(e)),
            Ok(Ok(r)) => r,
        };
        if out.len() > MAX_PLUGIN_STDOUT {
            return Err(too_large("stdout", MAX_PLUGIN_STDOUT as u64));
        }
        if err_bytes > MAX_PLUGIN_STDERR {
            return Err(too_large("stderr", MAX_PLUGIN_STDERR));
        }
        // Both pipes are at EOF: the plugin is exiting; still bounded by the timeout.
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    plugin: plugin.to_string(),
                    after: self.timeout,
                })
            }
            Ok(r) => r.map_err(spawn_err)?,
        };
        if !status.success() {
            return Err(ProviderError::Exit {
                plugin: plugin.to_string(),
                status: status.to_string(),
                stderr_bytes: err_bytes,
            });
        }
        Ok(out)
    }
}

/// Writes `request` to the plugin's stdin while reading at most [`MAX_PLUGIN_STDOUT`] + 1
/// bytes of stdout and counting at most [`MAX_PLUGIN_STDERR`] + 1 bytes of stderr (never
/// kept), all at once so that no pipe can block the others. Returns (stdout, stderr bytes).
async fn talk(
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    request: &str,
) -> std::io::Result<(Vec<u8>, u64)> {
    let write = async {
        if let Some(mut stdin) = stdin {
            // A plugin that never reads stdin must not block us: errors (EPIPE) are
            // ignored, and the whole exchange is under the caller's timeout.
            let _ = stdin.write_all(request.as_bytes()).await;
        }
    };
    let read_out = async {
        let mut buf = Vec::new();
        if let Some(s) = stdout {
            s.take(MAX_PLUGIN_STDOUT as u64 + 1)
                .read_to_end(&mut buf)
                .await?;
        }
        Ok::<_, std::io::Error>(buf)
    };
    let count_err = async {
        match stderr {
            Some(s) => {
                tokio::io::copy(&mut s.take(MAX_PLUGIN_STDERR + 1), &mut tokio::io::sink()).await
            }
            None => Ok(0),
        }
    };
    let ((), out, err) = tokio::join!(write, read_out, count_err);
    Ok((out?, err?))
}

/// The token part of a `tokenAttributes` provider's request (`pluginProvider.provide`):
/// `Ok(None)` for a provider without `tokenAttributes`.
async fn token_part(
    p: &ProviderSpec,
    tokens: Option<&dyn ServiceAccountTokens>,
) -> Result<Option<TokenRequestPart>, ProviderError> {
    let Some(ta) = &p.token else {
        return Ok(None);
    };
    let needs = || ProviderError::NeedsServiceAccountToken {
        plugin: p.name.clone(),
        audience: redact::text_max(&ta.audience, 128),
    };
    let Some(tokens) = tokens else {
        return Err(needs());
    };
    let sa = match tokens.token(&p.name, &ta.audience).await {
        None => return Err(needs()),
        Some(Err(e)) => {
            return Err(ProviderError::ServiceAccountToken {
                plugin: p.name.clone(),
                why: e.to_string(),
            })
        }
        Some(Ok(sa)) => sa,
    };
    let subject = sa.subject();
    ta.request_part(sa).map(Some).map_err(|key| ProviderError::ServiceAccountToken {
        plugin: p.name.clone(),
        why: format!(
            "ServiceAccount {subject} lacks the required annotation {}: the kubelet does not run the plugin for it",
            redact::keyword(&key)
        ),
    })
}

/// `provide`: a plugin that answers with the token itself as a password is refused unless
/// `cacheType` is `Token` (only then may the token be the registry credential).
fn refuse_echoed_token(
    p: &ProviderSpec,
    part: Option<&TokenRequestPart>,
    auth: &[(String, String, Secret)],
) -> Result<(), ProviderError> {
    let (Some(t), Some(ta)) = (part, &p.token) else {
        return Ok(());
    };
    if ta.cache_type != TokenCacheType::Token
        && auth
            .iter()
            .any(|(_, _, pass)| pass.expose() == t.token.expose())
    {
        return Err(ProviderError::BadResponse {
            plugin: p.name.clone(),
            why: "it returned the service-account token as a password, which the kubelet refuses unless tokenAttributes.cacheType is Token".into(),
        });
    }
    Ok(())
}

/// A plugin's `CredentialProviderResponse`, validated as the kubelet does
/// (plugin.go `provide` / `decodeResponse`).
#[derive(Debug)]
pub struct PluginReply {
    /// The cache key its `cacheKeyType` selects (the image, its registry, or `global`).
    pub cache_key: String,
    /// `cacheDuration`, or the provider's `defaultCacheDuration` (not yet capped).
    pub duration: Duration,
    /// `(auth key, username, password)` entries.
    pub auth: Vec<(String, String, Secret)>,
}

/// Parses plugin stdout for `image` (repository `repo`) from provider `p`. Errors never
/// quote the reply (it holds passwords); plugin-chosen strings are shown sanitized.
pub fn parse_reply(
    p: &ProviderSpec,
    repo: &str,
    image: &ImageRef,
    out: &[u8],
) -> Result<PluginReply, ProviderError> {
    let bad = |why: String| ProviderError::BadResponse {
        plugin: p.name.clone(),
        why,
    };
    // The response may contain secrets: serde_json's message names only a position.
    let resp: Value = serde_json::from_slice(out)
        .map_err(|e| bad(format!("not JSON ({})", ParseError::json(&e))))?;
    // Plugin-chosen strings are shown sanitized and short (redact::text_max).
    let shown = |s: &str| format!("\"{}\"", redact::text_max(s, 64));
    let got_api = resp.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if got_api != p.api_version {
        return Err(bad(format!(
            "apiVersion {} does not match the request's {:?}",
            shown(got_api),
            p.api_version
        )));
    }
    let kind = resp.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "CredentialProviderResponse" {
        return Err(bad(format!(
            "kind {} is not CredentialProviderResponse",
            shown(kind)
        )));
    }
    let cache_key = match resp.get("cacheKeyType").and_then(Value::as_str) {
        Some("Image") => repo.to_string(),
        Some("Registry") => image.domain.clone(),
        Some("Global") => "global".to_string(),
        Some(other) => return Err(bad(format!("invalid cacheKeyType {}", shown(other)))),
        None => return Err(bad("cacheKeyType is required".into())),
    };
    // metav1.Duration: Go's time.ParseDuration, so more than ~292 years is an error
    // there too; what parses is capped at MAX_PLUGIN_CACHE below.
    let duration = match resp.get("cacheDuration") {
        None | Some(Value::Null) => p.default_cache_duration,
        Some(Value::String(s)) => crate::goduration::parse(s)
            .ok_or_else(|| bad(format!("cacheDuration {} is not a duration", shown(s))))?,
        Some(_) => return Err(bad("cacheDuration must be a duration string".into())),
    };
    let mut auth = Vec::new();
    match resp.get("auth") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let user = v
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let pass = v
                    .get("password")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                auth.push((k.clone(), user, Secret::new(pass)));
            }
        }
        Some(_) => return Err(bad("auth must be a map of registry keys".into())),
    }
    Ok(PluginReply {
        cache_key,
        duration,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn spec(name: &str, matches: &[&str]) -> ProviderSpec {
        ProviderSpec {
            name: name.into(),
            match_images: matches.iter().map(|s| s.to_string()).collect(),
            default_cache_duration: Duration::from_secs(600),
            api_version: "credentialprovider.kubelet.k8s.io/v1".into(),
            args: vec!["--flag".into()],
            env: vec![("PLUGIN_USER".into(), "alice".into())],
            token: None,
        }
    }

    fn runner(dir: &Path, specs: Vec<ProviderSpec>, timeout: Duration) -> PluginRunner {
        PluginRunner::new(
            CredentialProviderConfig {
                file: "/cfg.yaml".into(),
                providers: specs,
            },
            dir.to_path_buf(),
            timeout,
        )
    }

    const OK: &str = r#"req=$(cat)
count=$(cat "$0.count" 2>/dev/null || echo 0); echo $((count+1)) > "$0.count"
case "$req" in *'"image":"reg.example.com/team/app"'*) ;; *) echo "bad request $req" >&2; exit 3;; esac
[ "$1" = "--flag" ] || exit 4
printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"10m","auth":{"*.example.com":{"username":"%s","password":"pw-from-plugin"},"other.io":{"username":"x","password":"y"}}}' "$PLUGIN_USER""#;

    #[tokio::test]
    async fn ok_plugin_with_registry_cache() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "okp", OK);
        let r = runner(
            d.path(),
            vec![spec("okp", &["*.example.com"])],
            Duration::from_secs(10),
        );
        let img = ImageRef::parse("reg.example.com/team/app:1").unwrap();
        let (creds, errs) = r.lookup(&img).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].credential.username(), Some("alice"));
        assert_eq!(
            creds[0].source,
            CredentialSource::Plugin {
                name: "okp".into(),
                key: "*.example.com".into()
            }
        );
        // Registry cache: a second image on the same registry does not run the plugin.
        let img2 = ImageRef::parse("reg.example.com/team/app:2").unwrap();
        let (creds2, _) = r.lookup(&img2).await;
        assert_eq!(creds2.len(), 1);
        assert_eq!(
            std::fs::read_to_string(d.path().join("okp.count"))
                .unwrap()
                .trim(),
            "1"
        );
        // Not matched by matchImages: plugin not consulted.
        let (none, errs) = r.lookup(&ImageRef::parse("other.io/x").unwrap()).await;
        assert!(none.is_empty() && errs.is_empty());
    }

    /// Tokens by provider name, as the agent's `KubeTokens` hands them out.
    #[derive(Debug)]
    struct FixedTokens(std::collections::BTreeMap<String, satoken::ServiceAccountToken>);

    impl ServiceAccountTokens for FixedTokens {
        fn token<'a>(
            &'a self,
            provider: &'a str,
            _audience: &'a str,
        ) -> futures::future::BoxFuture<
            'a,
            Option<Result<satoken::ServiceAccountToken, satoken::TokenError>>,
        > {
            Box::pin(async move { self.0.get(provider).cloned().map(Ok) })
        }
    }

    fn account(name: &str, uid: &str, token: &str) -> satoken::ServiceAccountToken {
        satoken::ServiceAccountToken {
            namespace: "pullprobe".into(),
            name: name.into(),
            uid: uid.into(),
            annotations: [("registry.test/id".to_string(), format!("id-{name}"))].into(),
            token: Secret::new(token),
        }
    }

    /// Echoes what it got: the token as the password (`ECHO=1`) or a fixed one, and counts runs.
    const TOKEN_PLUGIN: &str = r#"req=$(cat)
count=$(cat "$0.count" 2>/dev/null || echo 0); echo $((count+1)) > "$0.count"
tok=$(printf '%s' "$req" | sed -n 's/.*"serviceAccountToken":"\([^"]*\)".*/\1/p')
case "$req" in *'"serviceAccountAnnotations":{"registry.test/id":"id-'*) ;; *) echo "no annotations" >&2; exit 5;; esac
[ -n "$tok" ] || exit 6
pw=fixed; [ "$ECHO" = 1 ] && pw=$tok
printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"10m","auth":{"reg.example.com":{"username":"u","password":"%s"}}}' "$pw""#;

    fn token_spec(name: &str, cache_type: TokenCacheType, echo: bool) -> ProviderSpec {
        let mut s = spec(name, &["reg.example.com"]);
        s.args = Vec::new();
        s.env = vec![("ECHO".into(), if echo { "1" } else { "0" }.into())];
        s.token = Some(TokenAttributes {
            audience: "aud".into(),
            cache_type,
            require_service_account: true,
            required_annotation_keys: vec!["registry.test/id".into()],
            optional_annotation_keys: Vec::new(),
        });
        s
    }

    /// KEP-4412 as the kubelet runs it (plugin.go `provide`): no token → not run and a distinct
    /// error; the token and the required annotation go to the plugin; a `ServiceAccount` cache
    /// is per account (another account runs the plugin again); a token echoed as the password
    /// is refused unless `cacheType` is `Token`.
    #[tokio::test]
    async fn service_account_tokens_go_to_the_plugin_and_key_its_cache() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "satok", TOKEN_PLUGIN);
        script(d.path(), "echo-sa", TOKEN_PLUGIN);
        script(d.path(), "echo-token", TOKEN_PLUGIN);
        let specs = vec![token_spec("satok", TokenCacheType::ServiceAccount, false)];
        let r = runner(d.path(), specs, Duration::from_secs(10));
        let img = ImageRef::parse("reg.example.com/team/app:1").unwrap();
        let (creds, errs) = r.lookup(&img).await;
        assert!(creds.is_empty());
        assert!(
            matches!(&errs[..], [e @ ProviderError::NeedsServiceAccountToken { .. }] if e.is_service_account()),
            "{errs:?}"
        );
        assert!(
            !d.path().join("satok.count").exists(),
            "run without a token"
        );
        let count = || {
            std::fs::read_to_string(d.path().join("satok.count"))
                .unwrap()
                .trim()
                .to_string()
        };
        let tokens = |name: &str, uid: &str, tok: &str| {
            FixedTokens([("satok".to_string(), account(name, uid, tok))].into())
        };
        let (creds, errs) = r.lookup_with(&img, Some(&tokens("a", "1", "tok-1"))).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(creds[0].credential.username(), Some("u"));
        // Same account, new token: cached. Another account: the plugin runs again.
        r.lookup_with(&img, Some(&tokens("a", "1", "tok-2"))).await;
        assert_eq!(count(), "1");
        r.lookup_with(&img, Some(&tokens("b", "2", "tok-3"))).await;
        assert_eq!(count(), "2");

        let specs = vec![
            token_spec("echo-sa", TokenCacheType::ServiceAccount, true),
            token_spec("echo-token", TokenCacheType::Token, true),
        ];
        let r = runner(d.path(), specs, Duration::from_secs(10));
        let t = FixedTokens(
            [
                ("echo-sa".to_string(), account("a", "1", "tok-secret")),
                ("echo-token".to_string(), account("a", "1", "tok-secret")),
            ]
            .into(),
        );
        let (creds, errs) = r.lookup_with(&img, Some(&t)).await;
        assert!(
            matches!(&errs[..], [ProviderError::BadResponse { plugin, .. }] if plugin == "echo-sa"),
            "{errs:?}"
        );
        assert!(!errs[0].to_string().contains("tok-secret"), "{}", errs[0]);
        assert_eq!(creds.len(), 1, "the Token-cached provider may echo it");
    }

    #[tokio::test]
    async fn zero_cache_duration_runs_every_time() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "nocache", &OK.replace("\"10m\"", "\"0s\""));
        let r = runner(
            d.path(),
            vec![spec("nocache", &["*.example.com"])],
            Duration::from_secs(10),
        );
        let img = ImageRef::parse("reg.example.com/team/app").unwrap();
        r.lookup(&img).await;
        r.lookup(&img).await;
        assert_eq!(
            std::fs::read_to_string(d.path().join("nocache.count"))
                .unwrap()
                .trim(),
            "2"
        );
    }

    #[tokio::test]
    async fn garbage_nonzero_hang_and_bad_fields_are_typed_errors() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "garbage",
            "cat >/dev/null; echo 'this is not json secret-ish'",
        );
        script(d.path(), "fails", "cat >/dev/null; echo boom >&2; exit 7");
        script(d.path(), "hangs", "sleep 30");
        script(
            d.path(),
            "badkey",
            r#"cat >/dev/null; echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Forever","auth":{}}'"#,
        );
        script(
            d.path(),
            "wrongapi",
            r#"cat >/dev/null; echo '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderResponse","cacheKeyType":"Image"}'"#,
        );
        let names = ["garbage", "fails", "hangs", "badkey", "wrongapi", "missing"];
        let specs = names.iter().map(|n| spec(n, &["*.example.com"])).collect();
        let r = runner(d.path(), specs, Duration::from_millis(700));
        let started = Instant::now();
        let (creds, errs) = r
            .lookup(&ImageRef::parse("reg.example.com/team/app").unwrap())
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a hung plugin must be killed"
        );
        assert!(creds.is_empty());
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.plugin(), e.reason())).collect();
        assert_eq!(
            got,
            vec![
                ("garbage", "plugin_bad_response"),
                ("fails", "plugin_exit"),
                ("hangs", "plugin_timeout"),
                ("badkey", "plugin_bad_response"),
                ("wrongapi", "plugin_bad_response"),
                ("missing", "plugin_spawn"),
            ]
        );
        let exit = errs[1].to_string();
        assert!(!exit.contains("boom"), "stderr is never quoted: {exit}");
        assert!(exit.contains("wrote 5 bytes to stderr"), "{exit}");
        assert!(
            !errs[0].to_string().contains("secret-ish"),
            "stdout is never quoted"
        );
    }

    /// Plugins print tokens: stderr is counted, never shown; flooding stdout or stderr
    /// gets the plugin killed (bounded memory), an absurd cacheDuration is a bad
    /// response (as time.ParseDuration fails in the kubelet), a long one is capped and
    /// added to the clock with checked_add (it used to overflow `Instant + duration`).
    #[tokio::test]
    async fn plugin_output_is_bounded_and_never_quoted() {
        let d = tempfile::tempdir().unwrap();
        let resp = |dur: &str| {
            format!(
                r#"cat >/dev/null; echo '{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","cacheDuration":"{dur}","auth":{{"reg.example.com":{{"username":"u","password":"p"}}}}}}'"#
            )
        };
        script(
            d.path(),
            "leaky",
            "cat >/dev/null; echo 'token=canary-stderr-77' >&2; exit 1",
        );
        script(d.path(), "floodout", "cat >/dev/null; yes 0123456789abcdef");
        script(
            d.path(),
            "flooderr",
            "cat >/dev/null; yes 0123456789abcdef >&2",
        );
        script(d.path(), "overflow", &resp("5000000000000000h"));
        script(d.path(), "centuries", &resp("2000000h"));
        script(
            d.path(),
            "weird",
            r#"cat >/dev/null; printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"Credential[31mProviderResponse%0500d"}' 0"#,
        );
        let names = [
            "leaky",
            "floodout",
            "flooderr",
            "overflow",
            "centuries",
            "weird",
        ];
        let specs = names.iter().map(|n| spec(n, &["*.example.com"])).collect();
        let r = runner(d.path(), specs, Duration::from_secs(20));
        let (creds, errs) = r
            .lookup(&ImageRef::parse("reg.example.com/team/app").unwrap())
            .await;
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.plugin(), e.reason())).collect();
        assert_eq!(
            got,
            vec![
                ("leaky", "plugin_exit"),
                ("floodout", "plugin_output_too_large"),
                ("flooderr", "plugin_output_too_large"),
                ("overflow", "plugin_bad_response"),
                ("weird", "plugin_bad_response"),
            ]
        );
        for e in &errs {
            let m = e.to_string();
            assert!(!m.contains("canary-stderr-77"), "{m}");
            assert!(!m.contains('\u{1b}') && m.len() < 400, "{m}");
        }
        assert_eq!(creds.len(), 1, "the centuries-long cache answer is used");
        let st = r.cache_stats();
        assert_eq!(st.entries, 1, "{st:?}");
        let key = (
            "centuries".to_string(),
            "reg.example.com/team/app".to_string(),
        );
        let expires = r.cache.lock().unwrap().expires(&key).unwrap();
        assert!(expires <= Instant::now() + MAX_PLUGIN_CACHE);
    }

    #[tokio::test]
    async fn overlapping_keys_keep_provider_order() {
        let d = tempfile::tempdir().unwrap();
        for (n, u) in [("first", "one"), ("second", "two")] {
            script(
                d.path(),
                n,
                &format!(
                    r#"cat >/dev/null; echo '{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{{"reg.example.com":{{"username":"{u}","password":"p"}},"reg.example.com/team":{{"username":"{u}-team","password":"p"}}}}}}'"#
                ),
            );
        }
        let r = runner(
            d.path(),
            vec![
                spec("first", &["reg.example.com"]),
                spec("second", &["*.example.com"]),
            ],
            Duration::from_secs(10),
        );
        let (creds, errs) = r
            .lookup(&ImageRef::parse("reg.example.com/team/app").unwrap())
            .await;
        assert!(errs.is_empty(), "{errs:?}");
        let users: Vec<_> = creds
            .iter()
            .map(|c| c.credential.username().unwrap().to_string())
            .collect();
        assert_eq!(users, ["one-team", "two-team", "one", "two"]);
    }

    const TA: &str = "  tokenAttributes:\n    serviceAccountTokenAudience: aud\n    cacheType: ServiceAccount\n    requireServiceAccount: true\n    requiredServiceAccountAnnotationKeys: [\"domain.io/id\"]\n";

    #[test]
    fn config_validation_names_fields() {
        let ok = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: ecr\n  matchImages: [\"*.dkr.ecr.*.amazonaws.com\"]\n  defaultCacheDuration: \"12h\"\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  env:\n  - name: A\n    value: b\n";
        let (c, p) = CredentialProviderConfig::parse(Path::new("/c.yaml"), ok).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            c.providers[0].default_cache_duration,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(c.providers[0].env, vec![("A".to_string(), "b".to_string())]);
        assert!(c.providers[0].token.is_none());
        let (c, p) =
            CredentialProviderConfig::parse(Path::new("/c.yaml"), &format!("{ok}{TA}")).unwrap();
        assert!(p.is_empty(), "{p:?}");
        let t = c.providers[0].token.as_ref().unwrap();
        assert_eq!(
            (
                t.audience.as_str(),
                t.cache_type,
                t.required_annotation_keys.len()
            ),
            ("aud", TokenCacheType::ServiceAccount, 1)
        );
        for (text, field) in [
            (
                ok.replace("  apiVersion: credentialprovider.kubelet.k8s.io/v1\n", ""),
                "providers[0].apiVersion",
            ),
            (
                ok.replace("  defaultCacheDuration: \"12h\"\n", ""),
                "providers[0].defaultCacheDuration",
            ),
            (
                ok.replace("\"12h\"", "\"12 hours\""),
                "providers[0].defaultCacheDuration",
            ),
            (ok.replace("name: ecr", "name: ../ecr"), "providers[0].name"),
            (
                ok.replace("[\"*.dkr.ecr.*.amazonaws.com\"]", "[]"),
                "providers[0].matchImages",
            ),
            // tokenAttributes, as the kubelet validates it (config.go).
            (
                format!("{ok}{TA}").replace(
                    "provider.kubelet.k8s.io/v1\n",
                    "provider.kubelet.k8s.io/v1beta1\n",
                ),
                "providers[0].tokenAttributes",
            ),
            (
                format!("{ok}{TA}").replace("    serviceAccountTokenAudience: aud\n", ""),
                "providers[0].tokenAttributes.serviceAccountTokenAudience",
            ),
            (
                format!("{ok}{TA}").replace("cacheType: ServiceAccount", "cacheType: Pod"),
                "providers[0].tokenAttributes.cacheType",
            ),
            (
                format!("{ok}{TA}").replace(
                    "requireServiceAccount: true",
                    "requireServiceAccount: false",
                ),
                "providers[0].tokenAttributes.requiredServiceAccountAnnotationKeys",
            ),
            (
                format!("{ok}{TA}    optionalServiceAccountAnnotationKeys: [\"domain.io/id\"]\n"),
                "providers[0].tokenAttributes",
            ),
            (
                format!("{ok}{TA}").replace("domain.io/id", "Bad_Prefix/id"),
                "providers[0].tokenAttributes.requiredServiceAccountAnnotationKeys",
            ),
        ] {
            let (c, p) = CredentialProviderConfig::parse(Path::new("/c.yaml"), &text).unwrap();
            assert!(c.providers.is_empty());
            assert_eq!(p[0].field, field, "{text}");
        }
        for (text, field) in [
            ("{not json", "(syntax)"),
            ("kind: Other\n", "kind"),
            (
                "kind: CredentialProviderConfig\napiVersion: v9\n",
                "apiVersion",
            ),
            (": : :\n  - [", "(syntax)"),
        ] {
            let e = CredentialProviderConfig::parse(Path::new("/c.yaml"), text).unwrap_err();
            assert_eq!(e.field, field, "{text}");
        }
    }
}
