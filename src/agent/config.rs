//! The agent's config file (YAML or TOML, chosen by extension): serde defaults, then
//! [`AgentConfig::validate`]. Unknown fields are rejected so a typo never silently falls
//! back to a default (blackbox_exporter decodes with `KnownFields(true)` for the same reason).
//!
//! Reloading ([`ConfigWatcher`]) re-reads the file when its bytes change; a bad new file
//! keeps the old config and is reported, never applied half-way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact::ParseError;
use crate::reference::ImageRef;
use crate::runtime::Runtime;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default in a cluster).
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Everything the agent reads from its config file. Every field has a default, so an
/// empty file is a valid config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Time between cycles (`60s`).
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// Each cycle's start is moved by up to this fraction of `interval` (0.0–0.5), so a
    /// fleet started together does not probe in lockstep.
    pub jitter: f64,
    /// How often the Node conditions are rewritten when nothing changed (`5m`), plus jitter.
    #[serde(with = "duration_serde")]
    pub heartbeat: Duration,
    /// Address of the main listener: `/metrics`, `/status` (and
    /// `/healthz`, `/readyz`). In a cluster every request to it is authenticated
    /// (TokenReview + SubjectAccessReview, `auth`); standalone, nothing can review a
    /// caller, so an unspecified address (`0.0.0.0`, `::`) binds loopback instead.
    pub listen: SocketAddr,
    /// Address of `/healthz` and `/readyz` alone, never authenticated (the kubelet's
    /// probes use it); unset = [`DEFAULT_HEALTH_LISTEN`] in a cluster, none standalone
    /// ([`AgentConfig::health_listen_for`]).
    pub health_listen: Option<SocketAddr>,
    /// Who may call the main listener in a cluster (see `auth.rs`).
    pub auth: AuthConfig,
    /// On-demand checks: the controller's assignments in the node's `NodePullStatus`
    /// (see `ondemand.rs`, `nodestatus/`).
    pub preflight: PreflightConfig,
    /// TLS on the main listener (the health listener stays plain HTTP for the kubelet).
    pub tls: TlsConfig,
    /// Images probed besides those of the node's pods (for example those of DaemonSets
    /// and critical add-ons that any node may need soon). The only targets in standalone mode.
    pub images: Vec<String>,
    /// Probes in flight at once, overall.
    pub concurrency: usize,
    /// Probes in flight at once towards one registry host.
    pub per_host_concurrency: usize,
    /// Consecutive failing cycles before a condition turns True.
    pub fail_after: u32,
    /// Consecutive passing cycles before a condition turns back to False.
    pub recover_after: u32,
    /// How per-image checks are shared over the fleet.
    pub fleet: FleetConfig,
    /// Per-registry budget overrides, keyed by registry domain as written in image
    /// references (`docker.io`, `registry.example:5000`).
    pub registries: BTreeMap<String, RegistryBudget>,
    /// Fetch the Secrets named by pods' `imagePullSecrets` (needs `get secrets`; opt-in).
    pub pull_secrets: bool,
    /// The node's runtime (its config rules and request sequence); unset = detected
    /// under the host root (the kubelet's runtime endpoint, a socket, a config file).
    pub runtime: Option<Runtime>,
    /// Node settings that override what the agent discovers (the `--root-dir` etc. flags
    /// override these).
    pub node: NodeSettings,
    /// Log format; the `--log-format` flag wins.
    pub log_format: LogFormat,
    /// How often the config file is checked for changes.
    #[serde(with = "duration_serde")]
    pub reload_interval: Duration,
    /// Per-registry-host backoff after failed probes.
    pub backoff: BackoffConfig,
    /// Whose problem a registry failure is, and what pods can make the agent probe.
    pub tenancy: TenancyConfig,
    /// How long a cycle waits for its checks (default: half of `interval`). Checks still
    /// running then finish in the background and are reported by a later cycle, so a
    /// registry that never answers cannot hold back the others.
    #[serde(with = "opt_duration_serde")]
    pub cycle_budget: Option<Duration>,
    /// A directory for what must survive a restart of the agent (per-registry backoff,
    /// registries reached before); unset = nothing is kept. The DaemonSet mounts an
    /// `emptyDir` here, which outlives container restarts.
    pub state_dir: Option<PathBuf>,
}

/// Tenancy: anyone who can create a pod picks images this agent probes. A registry's
/// failure moves a Node condition only when the node is expected to reach it (named in
/// this config, used by pods of a trusted namespace, or reached from this node before);
/// any other failure is a workload problem, a Warning Event on the pods that use it
/// (`scope.rs`). The caps bound what one namespace's pods can make the agent probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    /// Namespaces whose pods' registries are the node's concern (`[kube-system]`). The
    /// agent's own namespace is always trusted.
    pub trusted_namespaces: Vec<String>,
    /// A registry first reached from this node at least this long ago (`24h`) keeps
    /// moving node conditions when it fails (drift). `0s` = as soon as it was reached once.
    #[serde(with = "duration_serde")]
    pub drift_min_age: Duration,
    /// Images of one pod checked at most (`32`); the rest get an Event on the pod.
    pub max_images_per_pod: usize,
    /// Image targets from the pods of one untrusted namespace at most (`128`).
    pub max_targets_per_namespace: usize,
    /// Registry endpoint lists never seen before that one cycle starts checking at most
    /// (`16`); the rest wait for later cycles.
    pub max_new_hosts_per_cycle: usize,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            trusted_namespaces: vec!["kube-system".to_string()],
            drift_min_age: Duration::from_secs(24 * 3600),
            max_images_per_pod: 32,
            max_targets_per_namespace: 128,
            max_new_hosts_per_cycle: 16,
        }
    }
}

/// The health listener in a cluster when `health_listen` is unset: the port of the
/// DaemonSet's probes (`manifests/daemonset.yaml`), so a config without the key still passes
/// them.
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9809);

/// Node paths (as on the node) the agent would otherwise discover from the kubelet's
/// systemd unit and the runtime's config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// containerd's config file.
    pub containerd_config: Option<PathBuf>,
    /// The kubelet's `--root-dir`.
    pub root_dir: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-config`.
    pub image_credential_provider_config: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-bin-dir`.
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// Credential providers with `tokenAttributes` (KEP-4412) get, from the kubelet, the
    /// pod's service-account token. For a provider named here the agent mints one with
    /// TokenRequest for this ServiceAccount (RBAC: components/provider-sa-tokens, for
    /// these names only); any other such provider is "not reproduced". Read at start.
    pub credential_provider_service_accounts: BTreeMap<String, ServiceAccountName>,
}

/// A ServiceAccount by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountName {
    pub namespace: String,
    pub name: String,
}

/// Per-host exponential backoff (kubelet's image backoff: 10 s doubling to 300 s). While
/// a host is backed off it keeps its last result, so the backoff also bounds how soon a
/// recovery is seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// First delay after a failure (`10s`).
    #[serde(with = "duration_serde")]
    pub initial: Duration,
    /// Ceiling of the doubling delay (`5m`).
    #[serde(with = "duration_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: super::schedule::BACKOFF_INITIAL,
            max: super::schedule::BACKOFF_MAX,
        }
    }
}

/// The fleet load budget (see `schedule::image_checks_per_period`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The window in which each image should be checked `checks_per_period` times (`10m`).
    #[serde(with = "duration_serde")]
    pub period: Duration,
    /// How many times per period the whole fleet checks each image.
    pub checks_per_period: u32,
    /// Number of nodes in the fleet. Not counted from the API (that would need `list
    /// nodes`); unset = 1: every node checks every image `checks_per_period` times.
    pub node_count: Option<u64>,
}

/// Authentication and authorization of HTTP callers (cluster mode only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token audiences accepted (only these: never the API server's own). A token
    /// bound to one of them (a projected ServiceAccount token with `audience: pullprobe`)
    /// cannot be replayed against the API server by a node that received it.
    pub audiences: Vec<String>,
    /// How long a review's answer is reused for the same token and permission (`10s`).
    #[serde(with = "duration_serde")]
    pub cache_ttl: Duration,
    /// While the API server cannot be asked, an answer that let a caller in is reused up
    /// to this long (`5m`, the kubelet's authorized-answer TTL), so Prometheus keeps
    /// scraping through an API server outage; a denial is never reused stale.
    #[serde(with = "duration_serde")]
    pub stale_ttl: Duration,
    /// Cached answers kept at most (tokens, and grants). Answers of tokens that were
    /// authorized are pushed out only by other authorized ones.
    pub cache_entries: usize,
    /// TokenReview + SubjectAccessReview calls per second at most for tokens not yet
    /// authorized (a quarter of it per client address; a flood of bad tokens is answered
    /// 429, not passed on to the API server), and as many again for re-reviews of tokens
    /// that were.
    pub reviews_per_second: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            audiences: vec!["pullprobe".to_string()],
            cache_ttl: Duration::from_secs(10),
            stale_ttl: Duration::from_secs(300),
            cache_entries: 1024,
            reviews_per_second: 20,
        }
    }
}

/// How the main listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain HTTP.
    #[default]
    Off,
    /// A certificate made at start for the node's name: the API server's pod proxy does not
    /// verify certificates (it proxies by IP), so this only keeps bearer tokens off the wire,
    /// as kube-rbac-proxy's generated certificate does.
    SelfSigned,
    /// `cert_file` and `key_file` (PEM).
    Files,
}

/// TLS of the main listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Bounds of the on-demand probe endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreflightConfig {
    /// Answer the controller's assignments (in the node's `NodePullStatus`) at all.
    pub enabled: bool,
    /// Images in one request at most.
    pub max_images: usize,
    /// Unused since pre-flight left the listener (kept so existing configs still load).
    pub max_body_bytes: usize,
    /// A request's answer is due within this long (`30s`); probes still running then are
    /// answered as timed out.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// A probe's result is reused this long for any caller asking the same (`30s`).
    #[serde(with = "duration_serde")]
    pub cache_ttl: Duration,
    /// Results kept at most.
    pub cache_entries: usize,
    /// Requests per second at most (token bucket), and the burst above it.
    pub requests_per_second: u32,
    pub burst: u32,
    /// Probes in flight at once for pre-flight requests: their own permits, apart from
    /// the schedule's `concurrency`, so requests cannot starve the node's own checks.
    pub concurrency: usize,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            enabled: true,
            max_images: 100,
            max_body_bytes: 64 * 1024,
            timeout: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(30),
            cache_entries: 4096,
            requests_per_second: 5,
            burst: 20,
            concurrency: 4,
        }
    }
}

/// Per-registry overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryBudget {
    /// Fleet-wide image checks per period for this registry (overrides `fleet.checks_per_period`).
    pub checks_per_period: Option<u32>,
    /// Time between this node's path checks of this registry (defaults to `interval`).
    #[serde(with = "opt_duration_serde")]
    pub path_interval: Option<Duration>,
    /// Probes in flight at once towards this registry (overrides `per_host_concurrency`).
    pub concurrency: Option<usize>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            interval: Duration::from_secs(60),
            jitter: 0.1,
            heartbeat: Duration::from_secs(300),
            listen: SocketAddr::from(([0, 0, 0, 0], 9808)),
            health_listen: None,
            auth: AuthConfig::default(),
            preflight: PreflightConfig::default(),
            tls: TlsConfig::default(),
            images: Vec::new(),
            concurrency: 8,
            per_host_concurrency: 2,
            fail_after: 2,
            recover_after: 1,
            fleet: FleetConfig::default(),
            registries: BTreeMap::new(),
            pull_secrets: false,
            runtime: None,
            node: NodeSettings::default(),
            log_format: LogFormat::Json,
            reload_interval: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            tenancy: TenancyConfig::default(),
            cycle_budget: None,
            state_dir: None,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            period: Duration::from_secs(600),
            checks_per_period: 3,
            node_count: None,
        }
    }
}

/// Why a config file was not accepted. Every variant names the file; validation errors
/// also name the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {file}: unknown extension (use .yaml, .yml or .toml)")]
    UnknownFormat { file: PathBuf },
    #[error("config {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("config {file}: field `{field}`: {message}")]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
}

impl ConfigError {
    /// The offending field, when validation (not parsing) failed.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Which syntax a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    Yaml,
    Toml,
}

impl ConfigFormat {
    pub fn from_path(path: &Path) -> Option<ConfigFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Some(ConfigFormat::Yaml),
            Some("toml") => Some(ConfigFormat::Toml),
            _ => None,
        }
    }
}

impl AgentConfig {
    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let format = ConfigFormat::from_path(path).ok_or_else(|| ConfigError::UnknownFormat {
            file: path.to_path_buf(),
        })?;
        AgentConfig::parse(&text, format, path)
    }

    /// Parse and validate text; `file` is only used in errors.
    pub fn parse(
        text: &str,
        format: ConfigFormat,
        file: &Path,
    ) -> Result<AgentConfig, ConfigError> {
        // The parsers' own messages quote the offending line or value: report the
        // position and kind only (crate::redact::ParseError).
        let parse_err = |e: ParseError| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string(),
        };
        let cfg: AgentConfig = match format {
            // An empty YAML document is "null", not an empty map: treat it as all defaults.
            ConfigFormat::Yaml if text.trim().is_empty() => AgentConfig::default(),
            ConfigFormat::Yaml => {
                serde_saphyr::from_str(text).map_err(|e| parse_err(ParseError::yaml(&e, text)))?
            }
            ConfigFormat::Toml => {
                toml::from_str(text).map_err(|e| parse_err(ParseError::toml(&e, text)))?
            }
        };
        cfg.validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: file.to_path_buf(),
                field,
                message,
            })?;
        Ok(cfg)
    }

    /// Check values serde cannot: ranges and relations between fields. Returns the
    /// field path and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        fn bad(field: &str, message: impl Into<String>) -> Result<(), (String, String)> {
            Err((field.to_string(), message.into()))
        }
        if self.interval < Duration::from_secs(1) {
            return bad("interval", "must be at least 1s");
        }
        if !(0.0..=0.5).contains(&self.jitter) || self.jitter.is_nan() {
            return bad(
                "jitter",
                "must be a fraction of interval between 0.0 and 0.5",
            );
        }
        if self.heartbeat < self.interval {
            return bad("heartbeat", "must be at least `interval`");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.per_host_concurrency == 0 {
            return bad("per_host_concurrency", "must be at least 1");
        }
        if self.per_host_concurrency > self.concurrency {
            return bad("per_host_concurrency", "must not exceed `concurrency`");
        }
        if self.fail_after == 0 {
            return bad("fail_after", "must be at least 1");
        }
        if self.recover_after == 0 {
            return bad("recover_after", "must be at least 1");
        }
        if self.reload_interval < Duration::from_secs(1) {
            return bad("reload_interval", "must be at least 1s");
        }
        if self.backoff.initial < Duration::from_secs(1) {
            return bad("backoff.initial", "must be at least 1s");
        }
        if self.backoff.max < self.backoff.initial {
            return bad("backoff.max", "must be at least `backoff.initial`");
        }
        if self.fleet.period < self.interval {
            return bad("fleet.period", "must be at least `interval`");
        }
        if self.fleet.checks_per_period == 0 {
            return bad("fleet.checks_per_period", "must be at least 1");
        }
        if self.fleet.node_count == Some(0) {
            return bad("fleet.node_count", "must be at least 1");
        }
        if let Some(b) = self.cycle_budget {
            if b < Duration::from_secs(1) || b > self.interval {
                return bad("cycle_budget", "must be between 1s and `interval`");
            }
        }
        self.validate_tenancy()?;
        self.validate_http()?;
        for (provider, sa) in &self.node.credential_provider_service_accounts {
            let field = format!("node.credential_provider_service_accounts.{provider}");
            if !dns_label(&sa.namespace) {
                return bad(
                    &format!("{field}.namespace"),
                    "must be a namespace name (DNS-1123 label)",
                );
            }
            if !(sa.name.split('.').all(dns_label) && sa.name.len() <= 253) {
                return bad(
                    &format!("{field}.name"),
                    "must be a ServiceAccount name (DNS-1123 subdomain)",
                );
            }
        }
        for (i, image) in self.images.iter().enumerate() {
            if let Err(e) = ImageRef::parse(image) {
                return bad(&format!("images[{i}]"), format!("`{image}`: {e}"));
            }
        }
        for (host, budget) in &self.registries {
            let field = |f: &str| format!("registries.{host}.{f}");
            if host.is_empty() || host.contains('/') {
                return bad(
                    &format!("registries.{host}"),
                    "key must be a registry domain such as `docker.io` or `host:5000`",
                );
            }
            if budget.checks_per_period == Some(0) {
                return bad(&field("checks_per_period"), "must be at least 1");
            }
            if let Some(d) = budget.path_interval {
                if d < self.interval {
                    return bad(&field("path_interval"), "must be at least `interval`");
                }
            }
            if budget.concurrency == Some(0) {
                return bad(&field("concurrency"), "must be at least 1");
            }
        }
        Ok(())
    }

    fn validate_tenancy(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        let t = &self.tenancy;
        if t.max_images_per_pod == 0 {
            return bad("tenancy.max_images_per_pod", "must be at least 1");
        }
        if t.max_targets_per_namespace == 0 {
            return bad("tenancy.max_targets_per_namespace", "must be at least 1");
        }
        if t.max_new_hosts_per_cycle == 0 {
            return bad("tenancy.max_new_hosts_per_cycle", "must be at least 1");
        }
        for (i, ns) in t.trusted_namespaces.iter().enumerate() {
            let dns1123 = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !dns1123 {
                return bad(
                    &format!("tenancy.trusted_namespaces[{i}]"),
                    "must be a namespace name (lowercase letters, digits, `-`)",
                );
            }
        }
        if self.preflight.concurrency == 0 {
            return bad("preflight.concurrency", "must be at least 1");
        }
        Ok(())
    }

    /// How long a cycle waits for its checks.
    pub fn cycle_budget(&self) -> Duration {
        self.cycle_budget.unwrap_or(self.interval / 2)
    }

    /// Registry domains this config names (`images`, `registries`): their failures are
    /// the node's.
    pub fn named_registries(&self) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = self.registries.keys().cloned().collect();
        out.extend(
            self.images
                .iter()
                .filter_map(|i| ImageRef::parse(i).ok())
                .map(|r| r.domain),
        );
        out
    }

    fn validate_http(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        if self.health_listen == Some(self.listen) && self.listen.port() != 0 {
            return bad("health_listen", "must differ from `listen`");
        }
        let a = &self.auth;
        if a.cache_ttl > Duration::from_secs(300) {
            return bad("auth.cache_ttl", "must be at most 5m");
        }
        if a.stale_ttl > Duration::from_secs(3600) {
            return bad("auth.stale_ttl", "must be at most 1h");
        }
        if !(1..=100_000).contains(&a.cache_entries) {
            return bad("auth.cache_entries", "must be between 1 and 100000");
        }
        if a.reviews_per_second == 0 {
            return bad("auth.reviews_per_second", "must be at least 1");
        }
        if a.audiences.is_empty() {
            return bad(
                "auth.audiences",
                "must name at least one audience (`pullprobe`)",
            );
        }
        if a.audiences.iter().any(|x| x.is_empty() || x.len() > 253) {
            return bad("auth.audiences", "each must be 1 to 253 characters");
        }
        let t = &self.tls;
        if t.mode == TlsMode::Files && (t.cert_file.is_none() || t.key_file.is_none()) {
            return bad("tls.cert_file", "`files` needs cert_file and key_file");
        }
        if t.mode != TlsMode::Files && (t.cert_file.is_some() || t.key_file.is_some()) {
            return bad("tls.mode", "cert_file and key_file need mode `files`");
        }
        let p = &self.preflight;
        if !(1..=1000).contains(&p.max_images) {
            return bad("preflight.max_images", "must be between 1 and 1000");
        }
        if !(1024..=4 * 1024 * 1024).contains(&p.max_body_bytes) {
            return bad(
                "preflight.max_body_bytes",
                "must be between 1024 and 4194304",
            );
        }
        if p.timeout < Duration::from_secs(1) || p.timeout > Duration::from_secs(300) {
            return bad("preflight.timeout", "must be between 1s and 5m");
        }
        if p.cache_ttl > Duration::from_secs(3600) {
            return bad("preflight.cache_ttl", "must be at most 1h");
        }
        if !(1..=100_000).contains(&p.cache_entries) {
            return bad("preflight.cache_entries", "must be between 1 and 100000");
        }
        if p.requests_per_second == 0 || p.burst == 0 {
            return bad(
                "preflight.requests_per_second",
                "rate and burst must be at least 1",
            );
        }
        Ok(())
    }

    /// Where the health listener listens: `health_listen` when set; unset,
    /// [`DEFAULT_HEALTH_LISTEN`] in a cluster and nowhere standalone (no kubelet probes it
    /// there, and two standalone agents on one machine would fight over the port).
    pub fn health_listen_for(&self, standalone: bool) -> Option<SocketAddr> {
        self.health_listen
            .or((!standalone).then_some(DEFAULT_HEALTH_LISTEN))
    }

    /// The budget of one registry domain (all defaults when not configured).
    pub fn budget(&self, domain: &str) -> RegistryBudget {
        self.registries.get(domain).cloned().unwrap_or_default()
    }
}

/// A DNS-1123 label: 1–63 lowercase alphanumerics or `-`, alphanumeric at both ends.
fn dns_label(s: &str) -> bool {
    let an = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(an)
        && s.ends_with(an)
        && s.chars().all(|c| an(c) || c == '-')
}

/// Re-reads the config file when its content changes. ConfigMap volumes swap a
/// symlink rather than rewrite the file, so the content (not the mtime) is compared.
#[derive(Debug)]
pub struct ConfigWatcher {
    path: PathBuf,
    last_bytes: Vec<u8>,
}

/// What a reload check found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Changed(Box<AgentConfig>),
    /// The file changed but is not valid: the caller keeps its current config.
    Rejected(ConfigError),
}

impl ConfigWatcher {
    /// Load the file for the first time; a bad file is an error (the agent does not start).
    pub fn open(path: &Path) -> Result<(ConfigWatcher, AgentConfig), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let cfg = AgentConfig::load(path)?;
        Ok((
            ConfigWatcher {
                path: path.to_path_buf(),
                last_bytes: bytes,
            },
            cfg,
        ))
    }

    pub fn check(&mut self) -> Reload {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(source) => {
                return Reload::Rejected(ConfigError::Read {
                    file: self.path.clone(),
                    source,
                })
            }
        };
        if bytes == self.last_bytes {
            return Reload::Unchanged;
        }
        // Remember the bytes either way: a rejected file is reported once, not every check.
        self.last_bytes = bytes;
        match AgentConfig::load(&self.path) {
            Ok(cfg) => Reload::Changed(Box::new(cfg)),
            Err(e) => Reload::Rejected(e),
        }
    }
}

/// Durations as humantime strings (`"60s"`, `"5m"`) or whole seconds.
mod duration_serde {
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// Longest duration a config key takes: the agent multiplies and adds these to the
    /// clock (`Instant`), and a value of centuries overflowed there (a panic).
    pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

    pub(super) struct DurationVisitor;

    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"60s\" or \"5m\", or whole seconds, at most 366 days")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            // serde's `invalid_value` wording lets the safe parse-error report keep the
            // expectation and drop the value (crate::redact::ParseError).
            humantime::parse_duration(v.trim())
                .ok()
                .filter(|d| *d <= MAX_DURATION)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Some(Duration::from_secs(v))
                .filter(|d| *d <= MAX_DURATION)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                .and_then(|v| self.visit_u64(v))
        }
    }
}

mod opt_duration_serde {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_serde::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-config")
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = AgentConfig::parse("", ConfigFormat::Yaml, Path::new("x.yaml")).unwrap();
        assert_eq!(c, AgentConfig::default());
        let c = AgentConfig::parse("", ConfigFormat::Toml, Path::new("x.toml")).unwrap();
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.heartbeat, Duration::from_secs(300));
        assert_eq!(c.listen.to_string(), "0.0.0.0:9808");
        assert_eq!((c.fail_after, c.recover_after), (2, 1));
        assert_eq!(c.fleet.period, Duration::from_secs(600));
    }

    #[test]
    fn valid_fixtures_load() {
        let dir = fixtures().join("valid");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let cfg = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!cfg.images.is_empty(), "{}", path.display());
            n += 1;
        }
        assert!(n >= 2);
    }

    #[test]
    fn yaml_and_toml_agree() {
        let y = AgentConfig::load(&fixtures().join("valid/full.yaml")).unwrap();
        let t = AgentConfig::load(&fixtures().join("valid/full.toml")).unwrap();
        assert_eq!(y, t);
        assert_eq!(y.interval, Duration::from_secs(30));
        assert_eq!(y.budget("docker.io").checks_per_period, Some(1));
        assert_eq!(
            y.budget("docker.io").path_interval,
            Some(Duration::from_secs(300))
        );
    }

    /// Each `invalid-<field>.yaml` fixture must be rejected, naming the field from its
    /// first line (`# field: <name>`).
    #[test]
    fn every_invalid_fixture_is_rejected_naming_its_field() {
        let dir = fixtures().join("invalid");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# field: "))
                .unwrap_or_else(|| panic!("{}: first line must be `# field: NAME`", path.display()))
                .trim()
                .to_string();
            let err = AgentConfig::load(&path).expect_err(&path.display().to_string());
            let shown = err.to_string();
            assert!(
                shown.contains(&expect),
                "{}: error `{shown}` does not name `{expect}`",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 10, "only {n} invalid fixtures");
    }

    #[test]
    fn shipped_example_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone.yaml");
        let c = AgentConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.images.is_empty());
        assert_eq!(c.log_format, LogFormat::Text);
    }

    /// manifests/configmap.yaml says the values it shows are the defaults: parsed, it is the
    /// default config (`health_listen` as the default resolves in a cluster), and each key it
    /// shows has a comment above it.
    #[test]
    fn shipped_configmap_shows_the_true_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/configmap.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        let cm: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let body = cm["data"]["pullprobe.yaml"]
            .as_str()
            .expect("data.pullprobe.yaml");
        let shown =
            AgentConfig::parse(body, ConfigFormat::Yaml, &p).unwrap_or_else(|e| panic!("{e}"));
        let default = AgentConfig::default();
        assert_eq!(
            shown.health_listen_for(false),
            default.health_listen_for(false)
        );
        assert_eq!(shown.health_listen_for(false), Some(DEFAULT_HEALTH_LISTEN));
        // The one value that is not a default: the DaemonSet's `state` emptyDir.
        assert_eq!(
            shown.state_dir.as_deref(),
            Some(Path::new("/var/lib/pullprobe"))
        );
        let shown = AgentConfig {
            health_listen: None,
            state_dir: None,
            ..shown
        };
        assert_eq!(
            shown, default,
            "a value in the ConfigMap is not the default"
        );
        let lines: Vec<&str> = body.lines().collect();
        let mut keys = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with(|c: char| c.is_ascii_alphabetic()) {
                keys += 1;
                // Keys in a row share the comment above the first of them.
                let above = lines[..i]
                    .iter()
                    .rev()
                    .find(|a| !a.starts_with(|c: char| c.is_ascii_alphabetic()));
                assert!(
                    above.is_some_and(|a| a.trim_start().starts_with('#')),
                    "no comment above `{l}`"
                );
            }
        }
        assert!(keys >= 8, "{keys} keys shown");
    }

    #[test]
    fn unknown_extension_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.json");
        std::fs::write(&p, "{}").unwrap();
        assert!(matches!(
            AgentConfig::load(&p),
            Err(ConfigError::UnknownFormat { .. })
        ));
    }

    #[test]
    fn reload_keeps_old_config_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "interval: 10s\n").unwrap();
        let (mut w, cfg) = ConfigWatcher::open(&p).unwrap();
        assert_eq!(cfg.interval, Duration::from_secs(10));
        assert!(matches!(w.check(), Reload::Unchanged));
        std::fs::write(&p, "interval: 20s\n").unwrap();
        match w.check() {
            Reload::Changed(c) => assert_eq!(c.interval, Duration::from_secs(20)),
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, "interval: 20s\nbogus: 1\n").unwrap();
        match w.check() {
            Reload::Rejected(e) => assert!(e.to_string().contains("bogus"), "{e}"),
            other => panic!("{other:?}"),
        }
        // Reported once, not on every check.
        assert!(matches!(w.check(), Reload::Unchanged));
    }
}
