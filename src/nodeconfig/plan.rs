//! `plan(image)`: the ordered endpoints the node's runtime would try, with TLS, headers,
//! proxy and credential policy — computed from the loaded config, without any network.
//!
//! containerd: `ConfigureHosts` (core/remotes/docker/config/hosts.go) over the host
//! directory `hostDirFromRoots` picks, or the deprecated CRI `registryEndpoints` /
//! `registryHosts` (internal/cri/server/images/image_pull.go) without `config_path`.
//! Which endpoints serve which request (docker/resolver.go `Resolve`): a tag is
//! resolved through endpoints with `pull` *and* `resolve`; a digest, and every blob,
//! through endpoints with `pull`. The plan keeps every endpoint with `pull` and its
//! capabilities; the engine must skip `resolve = false` ones for tag resolution.
//!
//! CRI-O: `PullSourcesFromReference` (containers/image pkg/sysregistriesv2).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use url::Url;

use super::containerd::{ContainerdConfig, DEFAULT_CONFIG_PATH_2_2};
use super::crio::{self, PullSource};
use super::hosts_toml::{self, HostConfig, HostsTomlQuirks, DEFAULT_CAPABILITIES};
use super::{ConfigProblem, Finding, FindingKind, NodeConfig, ProblemKind, Runtime, VersionSource};
use crate::credentials::{CredentialSource, SourcedCredential};
use crate::endpoint::{Capabilities, ClientCert, Endpoint, SchemePolicy, TlsSettings};
use crate::reference::ImageRef;

/// How containerd's CRI plugin pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullMode {
    /// CRI's own pull (`hostDirFromRoots` walks every `config_path` root).
    LocalPull,
    /// containerd ≥ 2.1 default: the transfer service (`HostDirFromRoot(config_path)`,
    /// the whole string as one root).
    TransferService,
    /// CRI-O (containers/image).
    ContainersImage,
}

/// What the runtime would do for one image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    #[serde(serialize_with = "ser_image")]
    pub image: ImageRef,
    pub runtime: Runtime,
    /// containerd: the release whose rules this plan (and every verdict) assumes, and where
    /// it came from. `None` on CRI-O.
    pub containerd: Option<AssumedVersion>,
    pub mode: PullMode,
    /// In the runtime's order. Each has `pull`; see the module doc for `resolve`.
    pub endpoints: Vec<Endpoint>,
    /// CRI-O `blocked = true` for this reference.
    pub blocked: bool,
    /// Set when the runtime would fail before contacting any registry (unreadable
    /// host dir, missing CA file, no resolve-capable host, blocked registry…).
    pub runtime_error: Option<String>,
    /// The host directory containerd would use (node path).
    pub host_dir: Option<PathBuf>,
    pub findings: Vec<Finding>,
    pub problems: Vec<ConfigProblem>,
}

/// The containerd release a plan assumes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AssumedVersion {
    /// e.g. `2.1.9`; `None` = unknown, and the 1.x rules apply.
    pub version: Option<String>,
    /// `None` = unknown.
    pub source: Option<VersionSource>,
}

impl AssumedVersion {
    /// `containerd 2.1.9 (from --containerd-version)`.
    pub fn describe(&self) -> String {
        match (&self.version, self.source) {
            (Some(v), Some(s)) => format!("containerd {v} (from {})", s.describe()),
            (Some(v), None) => format!("containerd {v}"),
            (None, _) => "containerd, version unknown: assumed 1.x rules (give --containerd-version, or the node's containerRuntimeVersion / dpkg status)".to_string(),
        }
    }
}

fn ser_image<S: serde::Serializer>(i: &ImageRef, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&i.normalized())
}

/// Builds the plan (see [`NodeConfig::plan`]).
pub fn build(nc: &NodeConfig, image: &ImageRef) -> Plan {
    let mut plan = Plan {
        image: image.clone(),
        runtime: nc.runtime,
        containerd: (nc.runtime == Runtime::Containerd).then(|| AssumedVersion {
            version: nc.containerd.version.map(|v| v.to_string()),
            source: nc.containerd.version_source,
        }),
        mode: PullMode::LocalPull,
        endpoints: Vec::new(),
        blocked: false,
        runtime_error: None,
        host_dir: None,
        findings: nc.findings.clone(),
        problems: nc.problems.clone(),
    };
    match nc.runtime {
        Runtime::Containerd => plan_containerd(nc, image, &mut plan),
        Runtime::Crio => plan_crio(nc, image, &mut plan),
    }
    plan
}

/// A registry mirror's (and CRI-O endpoint's) capabilities: pull and resolve, no push.
const PULL_RESOLVE: Capabilities = Capabilities {
    pull: true,
    resolve: true,
    push: false,
    referrers: false,
};

/// One host after `ConfigureHosts`, with its scheme decided.
struct Resolved {
    cfg: HostConfig,
    scheme: SchemePolicy,
    origin: String,
}

/// Go `net.SplitHostPort(host)` port, `""` when there is none.
fn go_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once("]:").map(|(_, p)| p).unwrap_or("");
    }
    match host.split_once(':') {
        Some((_, p)) if !p.contains(':') => p,
        _ => "",
    }
}

fn plan_containerd(nc: &NodeConfig, image: &ImageRef, plan: &mut Plan) {
    let cfg: &ContainerdConfig = &nc.containerd.config;
    let version = nc.containerd.version;
    let cfg_file = cfg.registry_file.clone().or(cfg.file.clone());
    let config_path = effective_config_path(nc, cfg_file.as_deref(), plan);
    plan.mode = containerd_pull_mode(nc);
    let modern = version.is_none_or(|v| v.at_least(1, 7));

    // CRI's local pull without config_path takes the deprecated registryEndpoints
    // path; the transfer service always goes through ConfigureHosts.
    let use_hosts_dir = config_path.is_some() || plan.mode == PullMode::TransferService;
    let resolved: Vec<Resolved> = if use_hosts_dir {
        let cp = config_path.unwrap_or_default();
        let roots = config_path_roots(nc, &cp, cfg_file.as_deref(), plan);
        let hosts = load_host_dir(nc, &roots, image.domain.as_str(), plan);
        let origin = plan
            .host_dir
            .as_ref()
            .map(|d| d.join("hosts.toml").display().to_string())
            .unwrap_or_else(|| "default (no host directory)".to_string());
        configure_hosts(hosts, image, modern, &origin)
    } else {
        if !cfg.mirrors.is_empty() || !cfg.configs.is_empty() {
            plan.findings.push(Finding::new(
                FindingKind::LegacyRegistryConfig,
                cfg_file.as_deref(),
                "deprecated CRI registry.mirrors/configs are in use (removal planned in containerd 2.3); they force the local pull".to_string(),
            ));
        }
        let tls_read = !version.is_some_and(|v| v.at_least(2, 0));
        if !tls_read && cfg.configs.values().any(|c| c.tls.is_some()) {
            plan.findings.push(Finding::new(
                FindingKind::Note,
                cfg_file.as_deref(),
                "registry.configs.*.tls is ignored by containerd 2.x (removed in 2.0): the legacy endpoints use the system CAs only; put `ca`/`client`/`skip_verify` in a hosts.toml under config_path".to_string(),
            ));
        }
        legacy_endpoints(cfg, image, cfg_file.as_deref(), tls_read)
    };
    refuse_mirrors_next_to_config_path(cfg, version, plan);

    let digested = image.digest.is_some();
    let last = resolved.len().saturating_sub(1);
    let mut any_resolve = false;
    for (i, r) in resolved.into_iter().enumerate() {
        if !r.cfg.capabilities.pull {
            plan.findings.push(Finding::new(
                FindingKind::EndpointSkipped,
                None,
                format!("{} is skipped: no pull capability", r.cfg.host),
            ));
            continue;
        }
        if r.cfg.capabilities.resolve || digested {
            any_resolve = true;
        }
        if let Some(e) = containerd_endpoint(nc, image, cfg_file.as_deref(), r, i == last, plan) {
            plan.endpoints.push(e);
        }
    }
    if let Some(k) = &nc.k3s {
        k.apply_rewrites(&nc.host_root, plan, image);
    }
    if !any_resolve && plan.runtime_error.is_none() {
        plan.runtime_error = Some(if digested {
            "no host with the pull capability: containerd fails with \"no resolve hosts\"".into()
        } else {
            "no host with both pull and resolve capabilities: containerd fails a tag pull with \"no resolve hosts\"".into()
        });
    }
}

/// The effective `config_path`: containerd ≥ 2.2 defaults it to
/// `/etc/containerd/certs.d:/etc/docker/certs.d` when neither `config_path` nor the
/// legacy `mirrors` is set (v2.2.0 internal/cri/config/config_unix.go
/// `DefaultImageConfig` `Registry.ConfigPath`, and plugins/cri/images/plugin.go filling an
/// empty migrated `config_path`; commit 5386802f "Default config_path if legacy registry
/// options are not set"); 2.1 and older have no default (v2.1.9 config_unix.go). No 2.2
/// binary runs here: the unit tests pin it. With an unknown version an existing certs.d
/// gets a finding.
fn effective_config_path(
    nc: &NodeConfig,
    cfg_file: Option<&Path>,
    plan: &mut Plan,
) -> Option<String> {
    let cfg = &nc.containerd.config;
    if cfg.config_path.is_some() || !cfg.mirrors.is_empty() {
        return cfg.config_path.clone();
    }
    match nc.containerd.version {
        Some(v) if v.at_least(2, 2) => return Some(DEFAULT_CONFIG_PATH_2_2.to_string()),
        Some(_) => {}
        None => {
            if ["/etc/containerd/certs.d", "/etc/docker/certs.d"]
                .iter()
                .any(|d| nc.host_root.is_dir(Path::new(d)))
            {
                plan.findings.push(Finding::new(
                    FindingKind::Assumption,
                    cfg_file,
                    format!("config_path is not set and the containerd version is unknown: containerd ≥ 2.2 would default it to {DEFAULT_CONFIG_PATH_2_2}; this plan assumes an older version (pass the runtime version)"),
                ));
            }
        }
    }
    None
}

/// containerd ≥ 2.1 pulls through the transfer service unless a setting forces the
/// CRI local pull (v2.1.9 internal/cri/config/config.go `CheckLocalImagePullConfigs`, read
/// in containerd.rs); 2.0 and 1.x always pull locally (no transfer-service CRI pull before
/// v2.1.0). Seen with 2.1.9 in tests/oracle_containerd.rs: a two-root `config_path` is
/// ignored by the transfer service and honoured with `use_local_image_pull = true`.
fn containerd_pull_mode(nc: &NodeConfig) -> PullMode {
    match nc.containerd.version {
        Some(v) if v.at_least(2, 1) && nc.containerd.config.local_pull_reasons.is_empty() => {
            PullMode::TransferService
        }
        _ => PullMode::LocalPull,
    }
}

/// The host-directory roots `config_path` names: `hostDirFromRoots` splits it at `:`,
/// the transfer service (`HostDirFromRoot`) takes the whole string as one root.
fn config_path_roots(
    nc: &NodeConfig,
    cp: &str,
    cfg_file: Option<&Path>,
    plan: &mut Plan,
) -> Vec<PathBuf> {
    let split: Vec<PathBuf> = cp
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if split.is_empty() {
        return Vec::new();
    }
    // A root the agent's container cannot see would read as empty: say so instead.
    for root in &split {
        if let Err(e @ crate::hostroot::ReadError::NotMounted) = nc.host_root.resolve(root) {
            plan.problems.push(ConfigProblem::new(
                root,
                None,
                ProblemKind::Unreadable,
                e.to_string(),
            ));
        }
    }
    if plan.mode == PullMode::TransferService && split.len() > 1 {
        plan.findings.push(Finding::new(
            FindingKind::MultiRootConfigPathIgnored,
            cfg_file,
            format!("config_path {cp:?} has several roots, but containerd ≥ 2.1 pulls through the transfer service, which does not split it (containerd#12808): every hosts.toml under it is ignored. Set use_local_image_pull = true or use a single directory"),
        ));
        return vec![PathBuf::from(cp)];
    }
    if nc.containerd.version.is_none()
        && split.len() > 1
        && nc.containerd.config.local_pull_reasons.is_empty()
    {
        plan.findings.push(Finding::new(
            FindingKind::Assumption,
            cfg_file,
            format!("config_path {cp:?} has several roots; on containerd ≥ 2.1 (transfer-service pull) they would all be ignored. This plan assumes the local pull (pass the runtime version)"),
        ));
    }
    split
}

/// Finds and loads the host directory for `host` under `roots` (or the one k3s would
/// render), recording its problems, findings and path in the plan.
fn load_host_dir(
    nc: &NodeConfig,
    roots: &[PathBuf],
    host: &str,
    plan: &mut Plan,
) -> Option<Vec<HostConfig>> {
    let quirks = HostsTomlQuirks::for_version(nc.containerd.version);
    // k3s node without rendered files: the host dirs k3s would write (k3s.rs).
    let found = match nc
        .k3s
        .as_ref()
        .and_then(|k| k.host_dir(roots, host, quirks))
    {
        Some(virtual_dir) => Ok(virtual_dir),
        None => hosts_toml::host_dir_from_roots(&nc.host_root, roots, host).map(|d| {
            d.map(|dir| {
                let load = hosts_toml::load_host_dir(&nc.host_root, &dir, quirks);
                (dir, load)
            })
        }),
    };
    match found {
        Ok(Some((dir, load))) => {
            plan.problems.extend(load.problems);
            let fatal = load
                .findings
                .iter()
                .find(|f| f.kind == FindingKind::RuntimeWouldFail)
                .map(|f| f.message.clone());
            plan.findings.extend(load.findings);
            if let Some(m) = fatal {
                plan.runtime_error.get_or_insert(m);
            }
            plan.host_dir = Some(dir);
            Some(load.hosts)
        }
        Ok(None) => None,
        Err((p, e)) => {
            plan.problems.push(ConfigProblem::new(
                &p,
                None,
                ProblemKind::Unreadable,
                e.to_string(),
            ));
            plan.runtime_error = Some(format!(
                "containerd cannot look up the host directory {}: {e}",
                p.display()
            ));
            None
        }
    }
}

/// ValidateImageConfig (internal/cri/config/config.go; pkg/cri/config in 1.6/1.7):
/// `mirrors` next to `config_path` is a config error, the CRI plugin does not load and
/// every kubelet pull fails ("unknown service runtime.v1.ImageService"); so is
/// `configs.*.tls` in 1.6 and 1.7 (v1.7.24 pkg/cri/config/config.go), no longer in 2.x,
/// which removed the key (v2.0.0 and v2.1.9 internal/cri/config/config.go check `mirrors`
/// only; see [`legacy_endpoints`]). Verified against
/// containerd 1.6.20, 1.7.24 and 2.1.9 in tests/oracle_containerd.rs.
fn refuse_mirrors_next_to_config_path(
    cfg: &ContainerdConfig,
    version: Option<super::containerd::Version>,
    plan: &mut Plan,
) {
    if cfg.config_path.is_none() {
        return;
    }
    let tls_refused = !version.is_some_and(|v| v.at_least(2, 0));
    let fatal = if !cfg.mirrors.is_empty() {
        Some("`mirrors` cannot be set when `config_path` is provided")
    } else if tls_refused && cfg.configs.values().any(|c| c.tls.is_some()) {
        Some("`configs.tls` cannot be set when `config_path` is provided")
    } else {
        None
    };
    if let Some(why) = fatal {
        plan.runtime_error.get_or_insert(format!(
            "containerd refuses to load its CRI plugin ({why}): every kubelet pull fails"
        ));
    }
}

/// One containerd host as a probe endpoint; `None` (with a problem) when its host is
/// not a URL authority.
fn containerd_endpoint(
    nc: &NodeConfig,
    image: &ImageRef,
    cfg_file: Option<&Path>,
    r: Resolved,
    is_upstream: bool,
    plan: &mut Plan,
) -> Option<Endpoint> {
    let cfg = &nc.containerd.config;
    let host = image.domain.as_str();
    let tls = tls_for(nc, &r.cfg, plan);
    let mut headers: Vec<(String, String)> = Vec::new();
    for (k, vs) in cfg.headers.iter().chain(r.cfg.header.iter().flatten()) {
        for v in vs {
            headers.push((k.clone(), v.clone()));
        }
    }
    let api_scheme = if r.scheme == SchemePolicy::Http {
        "http"
    } else {
        "https"
    };
    let Ok(api_root) = Url::parse(&format!("{api_scheme}://{}{}", r.cfg.host, r.cfg.path)) else {
        plan.problems.push(ConfigProblem::new(
            Path::new(&r.origin),
            None,
            ProblemKind::Invalid,
            format!("host {:?} is not a valid URL authority", r.cfg.host),
        ));
        return None;
    };
    // RegistryHost.isProxy (registry.go): ns= whenever the endpoint is not the
    // reference's own host, except docker.io → registry-1.docker.io.
    let is_proxy =
        r.cfg.host != host && !(host == "docker.io" && r.cfg.host == "registry-1.docker.io");
    Some(Endpoint {
        proxy: nc.proxy.proxy_for(&api_root),
        api_root,
        scheme: r.scheme,
        capabilities: r.cfg.capabilities,
        tls,
        headers,
        namespace: is_proxy.then(|| host.to_string()),
        dial_timeout: r.cfg.dial_timeout,
        send_credentials: true,
        own_credential: cfg.configs.get(&r.cfg.host).and_then(|c| {
            c.auth.clone().map(|credential| SourcedCredential {
                source: CredentialSource::RuntimeConfig {
                    path: cfg_file.map(Path::to_path_buf).unwrap_or_default(),
                    host: r.cfg.host.clone(),
                },
                credential,
            })
        }),
        is_upstream,
        repository: None,
        origin: r.origin,
    })
}

/// `ConfigureHosts`' defaulting of the last (root) entry and the scheme decision.
fn configure_hosts(
    hosts: Option<Vec<HostConfig>>,
    image: &ImageRef,
    modern: bool,
    origin: &str,
) -> Vec<Resolved> {
    let host = image.domain.as_str();
    let mut hosts = hosts.unwrap_or_else(|| vec![HostConfig::default()]);
    let n = hosts.len();
    if let Some(last) = hosts.last_mut().filter(|h| h.host.is_empty()) {
        if host == "docker.io" {
            last.scheme = "https".into();
            last.host = "registry-1.docker.io".into();
        } else if image.is_localhost() {
            last.host = host.to_string();
            if modern {
                let port = go_port(host);
                last.scheme = if port.is_empty() || port == "443" {
                    "https"
                } else {
                    "http"
                }
                .into();
                if port != "80" {
                    last.skip_verify = Some(true);
                }
            } else {
                // containerd ≤ 1.6: localhost is plain http with skip_verify, no fallback.
                last.scheme = "http".into();
                last.skip_verify = Some(true);
            }
        } else {
            last.host = host.to_string();
            last.scheme = "https".into();
        }
        last.path = "/v2".into();
        last.capabilities = DEFAULT_CAPABILITIES;
    }
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, cfg)| {
            let scheme = match cfg.scheme.as_str() {
                "http" if modern && cfg.explicit_tls() && go_port(&cfg.host) != "80" => {
                    SchemePolicy::HttpsThenHttp
                }
                "http" => SchemePolicy::Http,
                _ => SchemePolicy::Https,
            };
            let origin = if i + 1 == n {
                format!("{origin} (server)")
            } else {
                format!("{origin} [host.\"{}\"]", cfg.host)
            };
            Resolved {
                cfg,
                scheme,
                origin,
            }
        })
        .collect()
}

/// Deprecated CRI path without `config_path`: `registryEndpoints` + `registryHosts`.
/// `tls_read`: `configs.*.tls` applies (1.x). containerd 2.0 removed it (commit d2b7a1e2
/// "cleanup DEPRECATED TLS config": v2.0.0 internal/cri/config/config.go `RegistryConfig`
/// has `auth` only, and `registryHosts` builds each endpoint's transport with "no tls
/// config"), so 2.x verifies a legacy https endpoint against the system CAs only. Seen
/// with 2.1.9 in tests/oracle_containerd.rs.
fn legacy_endpoints(
    cfg: &ContainerdConfig,
    image: &ImageRef,
    file: Option<&Path>,
    tls_read: bool,
) -> Vec<Resolved> {
    let host = image.domain.as_str();
    let default_host = image.registry_host();
    let is_local = |h: &str| {
        let probe = format!("{h}/x");
        ImageRef::parse(&probe)
            .map(|r| r.is_localhost())
            .unwrap_or(false)
    };
    let default_scheme = |h: &str| if is_local(h) { "http" } else { "https" };
    let mut eps: Vec<String> = cfg
        .mirrors
        .get(host)
        .or_else(|| cfg.mirrors.get("*"))
        .cloned()
        .unwrap_or_default();
    // registryEndpoints: every endpoint gets a default scheme, then the default host
    // is appended unless some endpoint's host equals the reference host (`u.Host ==
    // host`, so for docker.io an explicit registry-1.docker.io endpoint does not stop
    // the append).
    for e in eps.iter_mut() {
        if !e.contains("://") {
            let h = e.split('/').next().unwrap_or(e).to_string();
            *e = format!("{}://{}", default_scheme(&h), e);
        }
    }
    let has_host = eps
        .iter()
        .any(|e| hosts_toml::split_server(e).is_some_and(|(_, h, _)| h == host));
    if !has_host {
        eps.push(format!(
            "{}://{}",
            default_scheme(&default_host),
            default_host
        ));
    }
    let origin = file
        .map(|f| format!("{} registry.mirrors", f.display()))
        .unwrap_or_else(|| "default".into());
    eps.into_iter()
        .filter_map(|e| {
            let (scheme, h, path) = hosts_toml::split_server(&e)?;
            let mut hc = HostConfig {
                scheme: scheme.clone(),
                host: h.clone(),
                path: if path.is_empty() { "/v2".into() } else { path },
                capabilities: PULL_RESOLVE,
                ..Default::default()
            };
            if let Some(tls) = cfg
                .configs
                .get(&h)
                .and_then(|c| c.tls.as_ref())
                .filter(|_| tls_read)
            {
                hc.ca = tls.ca_file.clone().map(|c| vec![c]);
                hc.client = tls
                    .cert_file
                    .clone()
                    .map(|c| vec![(c, tls.key_file.clone())]);
                if tls.insecure_skip_verify {
                    hc.skip_verify = Some(true);
                }
            }
            Some(Resolved {
                scheme: if scheme == "http" {
                    SchemePolicy::Http
                } else {
                    SchemePolicy::Https
                },
                origin: origin.clone(),
                cfg: hc,
            })
        })
        .collect()
}

/// `tlsConfigFromHost`: resolves CA and client files under the host root. A file that
/// cannot be read makes containerd fail the whole pull ("unable to read CA cert").
fn tls_for(nc: &NodeConfig, h: &HostConfig, plan: &mut Plan) -> TlsSettings {
    let mut tls = node_tls(nc);
    if !h.explicit_tls() {
        return tls;
    }
    tls.skip_verify = h.skip_verify == Some(true);
    for ca in h.ca.iter().flatten() {
        match nc.host_root.read(ca) {
            Ok(bytes) if super::trust::has_pem_certificate(&bytes) => {
                tls.extra_ca_files.push(nc.host_root.real_path(ca));
            }
            Ok(_) => fail_ref(
                plan,
                ca,
                "ca",
                format!(
                    "unable to load CA cert {:?}: no PEM certificate in it",
                    ca.display().to_string()
                ),
            ),
            Err(e) => fail_ref(
                plan,
                ca,
                "ca",
                format!("unable to read CA cert {:?}: {e}", ca.display().to_string()),
            ),
        }
    }
    for (cert, key) in h.client.iter().flatten() {
        let mut ok = true;
        for f in std::iter::once(cert).chain(key.iter()) {
            if let Err(e) = nc.host_root.read(f) {
                fail_ref(
                    plan,
                    f,
                    "client",
                    format!(
                        "unable to read CERT file {:?}: {e}",
                        f.display().to_string()
                    ),
                );
                ok = false;
            }
        }
        if ok {
            tls.client_certs.push(ClientCert {
                cert: nc.host_root.real_path(cert),
                key: key.as_ref().map(|k| nc.host_root.real_path(k)),
            });
        }
    }
    tls
}

fn fail_ref(plan: &mut Plan, file: &Path, field: &str, message: String) {
    let origin = plan
        .host_dir
        .as_ref()
        .map(|d| d.join("hosts.toml"))
        .unwrap_or_else(|| file.to_path_buf());
    plan.problems.push(ConfigProblem::new(
        &origin,
        Some(field),
        ProblemKind::MissingReference,
        message.clone(),
    ));
    plan.runtime_error
        .get_or_insert(format!("containerd fails the pull: {message}"));
}

fn plan_crio(nc: &NodeConfig, image: &ImageRef, plan: &mut Plan) {
    plan.mode = PullMode::ContainersImage;
    let Some((sources, reg_file)) = crio_pull_sources(nc, image, plan) else {
        return;
    };
    let origin = reg_file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "default (no matching [[registry]])".into());
    for s in sources {
        if let Some(e) = crio_endpoint(nc, image, s, &origin, plan) {
            plan.endpoints.push(e);
        }
    }
}

/// The pull sources of the `[[registry]]` matching the image, with its file; the image's
/// own domain without one. `None` when the registry is blocked (recorded in the plan).
fn crio_pull_sources(
    nc: &NodeConfig,
    image: &ImageRef,
    plan: &mut Plan,
) -> Option<(Vec<PullSource>, Option<PathBuf>)> {
    let repo = image.repository();
    match nc.crio.find_registry(&repo) {
        Some(r) if r.blocked => {
            plan.blocked = true;
            plan.runtime_error = Some(format!(
                "registry {} is blocked in {}",
                r.prefix,
                r.file.display()
            ));
            plan.findings.push(Finding::new(
                FindingKind::Blocked,
                Some(&r.file),
                format!("prefix {:?} is blocked", r.prefix),
            ));
            None
        }
        Some(r) => Some((
            r.pull_sources(&repo, image.digest.is_some()),
            Some(r.file.clone()),
        )),
        None => Some((
            vec![PullSource {
                endpoint: crio::CrioEndpoint {
                    location: image.domain.clone(),
                    ..Default::default()
                },
                repository: repo.clone(),
                is_mirror: false,
            }],
            None,
        )),
    }
}

/// One CRI-O pull source as a probe endpoint; `None` (with a problem) when its
/// location is not a valid host.
fn crio_endpoint(
    nc: &NodeConfig,
    image: &ImageRef,
    s: PullSource,
    origin: &str,
    plan: &mut Plan,
) -> Option<Endpoint> {
    let domain = crio::domain_of(&s.repository).to_string();
    let path = s.repository[domain.len()..]
        .trim_start_matches('/')
        .to_string();
    // docker_client.go: docker.io is served by registry-1.docker.io.
    let connect = if domain == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        domain.clone()
    };
    let scheme = if s.endpoint.insecure {
        SchemePolicy::HttpsThenHttp
    } else {
        SchemePolicy::Https
    };
    let Ok(api_root) = Url::parse(&format!("https://{connect}/v2")) else {
        plan.problems.push(ConfigProblem::new(
            Path::new(origin),
            Some("location"),
            ProblemKind::Invalid,
            format!("{connect:?} is not a valid host"),
        ));
        return None;
    };
    let tls = crio_tls(nc, &domain, s.endpoint.insecure, plan);
    Some(Endpoint {
        proxy: nc.proxy.proxy_for(&api_root),
        api_root,
        scheme,
        capabilities: PULL_RESOLVE,
        tls,
        headers: Vec::new(),
        namespace: None,
        dial_timeout: None,
        // docker_image_src.go: kubelet credentials are not sent to a mirror on
        // another domain.
        send_credentials: domain == image.domain,
        own_credential: None,
        is_upstream: !s.is_mirror,
        repository: (path != image.path).then_some(path),
        origin: if s.is_mirror {
            format!("{origin} mirror {}", s.endpoint.location)
        } else {
            origin.to_string()
        },
    })
}

/// CRI-O's TLS for a domain: the node's bundle plus the domain's certs.d files. A
/// broken certs.d makes CRI-O fail the pull.
fn crio_tls(nc: &NodeConfig, domain: &str, insecure: bool, plan: &mut Plan) -> TlsSettings {
    let mut tls = TlsSettings {
        skip_verify: insecure,
        ..node_tls(nc)
    };
    match crio::cert_dir_files(&nc.host_root, domain) {
        Ok((_, cas, pairs)) => {
            tls.extra_ca_files = cas.iter().map(|c| nc.host_root.real_path(c)).collect();
            tls.client_certs = pairs
                .iter()
                .map(|(c, k)| ClientCert {
                    cert: nc.host_root.real_path(c),
                    key: k.as_ref().map(|k| nc.host_root.real_path(k)),
                })
                .collect();
        }
        Err((file, msg)) => {
            plan.problems.push(ConfigProblem::new(
                &file,
                None,
                ProblemKind::MissingReference,
                msg.clone(),
            ));
            plan.runtime_error
                .get_or_insert(format!("CRI-O fails the pull: {msg}"));
        }
    }
    tls
}

/// The node's own trust: its CA bundle, or no system pool when it has none.
fn node_tls(nc: &NodeConfig) -> TlsSettings {
    TlsSettings {
        ca_bundle: nc.ca_bundle(),
        no_system_pool: nc.ca_bundle().is_none(),
        ..Default::default()
    }
}

/// Human-readable plan for `pullprobe plan`, with file paths as the node sees them.
pub fn render_plan_text(plan: &Plan) -> String {
    render_plan_text_under(plan, Path::new("/"))
}

/// A path under the host root `root` as the node sees it (`/etc/containerd/certs.d/…`,
/// like the `from:` lines), not as this machine does.
fn on_node(root: &Path, p: &Path) -> String {
    crate::hostroot::shown_on_node(Some(root), p)
}

/// [`render_plan_text`] for a host root at `root` on this machine.
pub fn render_plan_text_under(plan: &Plan, root: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "image:   {}", plan.image.normalized());
    let mode = match plan.mode {
        PullMode::LocalPull => "CRI local pull",
        PullMode::TransferService => "transfer service",
        PullMode::ContainersImage => "containers/image",
    };
    match &plan.containerd {
        Some(v) => {
            let _ = writeln!(s, "runtime: {} ({mode})", v.describe());
        }
        None => {
            let _ = writeln!(s, "runtime: {} ({mode})", plan.runtime);
        }
    }
    if let Some(d) = &plan.host_dir {
        let _ = writeln!(s, "hosts:   {}", d.display());
    }
    if plan.blocked {
        let _ = writeln!(s, "BLOCKED: the runtime refuses to pull this image");
    }
    if let Some(e) = &plan.runtime_error {
        let _ = writeln!(s, "RUNTIME ERROR: {e}");
    }
    let _ = writeln!(s, "endpoints (in order):");
    for (i, e) in plan.endpoints.iter().enumerate() {
        render_endpoint(&mut s, i + 1, e, root);
    }
    if let Some(ca) = plan
        .endpoints
        .first()
        .and_then(|e| e.tls.ca_bundle.as_ref())
    {
        let _ = writeln!(s, "system CA bundle: {}", on_node(root, ca));
    }
    for f in &plan.findings {
        let _ = writeln!(s, "finding: {}", f.message);
    }
    for p in &plan.problems {
        let _ = writeln!(s, "problem: {p}");
    }
    s
}

/// The plan's `n`th endpoint: one line with its URL, capabilities and scheme, then one
/// indented line per setting (never a header value or a credential's secret).
fn render_endpoint(s: &mut String, n: usize, e: &Endpoint, root: &Path) {
    let scheme = match e.scheme {
        SchemePolicy::Https => "https",
        SchemePolicy::Http => "http",
        SchemePolicy::HttpsThenHttp => "https, then http",
    };
    let mut caps = Vec::new();
    for (on, name) in [
        (e.capabilities.pull, "pull"),
        (e.capabilities.resolve, "resolve"),
        (e.capabilities.push, "push"),
    ] {
        if on {
            caps.push(name);
        }
    }
    let _ = writeln!(
        s,
        "  {n}. {}{}  [{}] ({scheme}){}",
        e.display_url(),
        e.namespace
            .as_deref()
            .map(|n| format!("?ns={n}"))
            .unwrap_or_default(),
        caps.join(","),
        if e.is_upstream {
            " upstream"
        } else {
            " mirror"
        }
    );
    if let Some(r) = &e.repository {
        let _ = writeln!(s, "     repository: {r}");
    }
    for ca in &e.tls.extra_ca_files {
        let _ = writeln!(s, "     ca: {}", on_node(root, ca));
    }
    for c in &e.tls.client_certs {
        let _ = writeln!(s, "     client cert: {}", on_node(root, &c.cert));
    }
    if e.tls.skip_verify {
        let _ = writeln!(s, "     skip_verify: true");
    }
    for (k, _) in &e.headers {
        let _ = writeln!(s, "     header: {k}");
    }
    if let Some(t) = e.dial_timeout {
        let _ = writeln!(s, "     dial_timeout: {}", humantime::format_duration(t));
    }
    if let Some(p) = &e.proxy {
        let _ = writeln!(s, "     proxy: {}", redact_proxy(p));
    }
    if !e.send_credentials {
        let _ = writeln!(
            s,
            "     kubelet credentials: not sent (mirror on another domain)"
        );
    }
    if let Some(c) = &e.own_credential {
        let _ = writeln!(
            s,
            "     runtime credential: {}",
            c.credential.username().unwrap_or("(token)")
        );
    }
    let _ = writeln!(s, "     from: {}", e.origin);
}

/// A proxy URL without its userinfo (the proxy credential).
fn redact_proxy(u: &Url) -> String {
    crate::redact::url(u)
}

#[cfg(test)]
mod tests;
