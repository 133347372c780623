//! The node's own pull-path configuration, read under an injected host root, and the
//! plan of endpoints the node's runtime would try for an image.
//!
//! Loading never fails as a whole (except for an unusable host root): each file that
//! cannot be read or parsed becomes a [`ConfigProblem`] naming the file and field, and
//! everything else still applies — like the runtimes, which log and fall back.

pub mod containerd;
pub mod crio;
pub mod hosts_toml;
pub mod k3s;
pub mod kubelet;
pub mod plan;
pub mod proxy;
pub mod resolver;
pub mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::hostroot::{self, HostRoot, HostRootError};
pub use crate::problem::{ConfigProblem, ProblemKind};
pub use plan::{render_plan_text, render_plan_text_under, Plan, PullMode};

use crate::credentials::docker_config::DockerConfig;
use crate::credentials::node as kubelet_node;
use crate::credentials::provider::{
    CredentialProviderConfig, PluginRunner, DEFAULT_PLUGIN_TIMEOUT,
};
use crate::reference::ImageRef;
pub use crate::runtime::Runtime;

/// systemd's unit directories in priority order (highest first), where the kubelet's and the
/// runtime's units and their `*.service.d` drop-ins are found (systemd.unit(5)).
pub const SYSTEMD_UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// What to load. Paths other than `host_root` are node paths (as seen on the node).
#[derive(Clone, Debug)]
pub struct NodeConfigOptions {
    pub host_root: PathBuf,
    /// `None` = detect.
    pub runtime: Option<Runtime>,
    /// containerd `--config`; default `/etc/containerd/config.toml`.
    pub containerd_config: Option<PathBuf>,
    /// kubelet `--root-dir`; `None` = as the node's kubelet runs (see [`kubelet`]).
    pub kubelet_root_dir: Option<PathBuf>,
    /// kubelet `--image-credential-provider-config`; `None` = as the node's kubelet runs.
    pub credential_provider_config: Option<PathBuf>,
    /// kubelet `--image-credential-provider-bin-dir`; `None` = as the node's kubelet runs.
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// e.g. `1.6.20` or `containerd://2.1.4`, and where it came from; `None` = the
    /// node's dpkg status, else unknown.
    pub containerd_version: Option<GivenVersion>,
    /// containerd's hosts directory given directly (`ctr --hosts-dir`), used as
    /// `config_path` instead of reading `config.toml`.
    pub hosts_dir: Option<PathBuf>,
}

impl Default for NodeConfigOptions {
    fn default() -> Self {
        NodeConfigOptions {
            host_root: PathBuf::from("/"),
            runtime: None,
            containerd_config: None,
            kubelet_root_dir: None,
            credential_provider_config: None,
            credential_provider_bin_dir: None,
            containerd_version: None,
            hosts_dir: None,
        }
    }
}

/// Where the containerd release that `plan` and the verdicts assume came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// `--containerd-version`.
    Flag,
    /// The Node's `status.nodeInfo.containerRuntimeVersion` (the agent reads it).
    NodeStatus,
    /// The containerd package in the node's dpkg status (`/var/lib/dpkg/status`).
    DpkgStatus,
}

impl VersionSource {
    /// How `plan` names it.
    pub fn describe(self) -> &'static str {
        match self {
            VersionSource::Flag => "--containerd-version",
            VersionSource::NodeStatus => "the Node's containerRuntimeVersion",
            VersionSource::DpkgStatus => "the node's dpkg status",
        }
    }
}

/// A containerd version given from outside, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GivenVersion {
    pub value: String,
    pub source: VersionSource,
}

impl GivenVersion {
    /// `--containerd-version VALUE`.
    pub fn flag(value: &str) -> GivenVersion {
        GivenVersion {
            value: value.to_string(),
            source: VersionSource::Flag,
        }
    }

    /// The Node's `containerRuntimeVersion` (`containerd://1.7.24`).
    pub fn node_status(value: &str) -> GivenVersion {
        GivenVersion {
            value: value.to_string(),
            source: VersionSource::NodeStatus,
        }
    }
}

/// Stable kinds of findings: things the runtime does that operators should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// containerd ≥ 2.1's transfer-service pull ignores a multi-root `config_path`.
    MultiRootConfigPathIgnored,
    /// A hosts.toml the runtime ignores (parse error, or a top-level-only file on 1.x).
    HostsTomlIgnored,
    /// Deprecated `registry.mirrors` / `configs` / `auths` in use.
    LegacyRegistryConfig,
    /// The runtime would fail the pull before contacting any registry.
    RuntimeWouldFail,
    /// A host entry is skipped for this reference (capabilities).
    EndpointSkipped,
    /// CRI-O blocks the registry.
    Blocked,
    /// Something depends on facts we do not know (e.g. the containerd version).
    Assumption,
    /// The node has no resolv.conf or hosts file (the runtime's resolver falls back).
    ResolverFileMissing,
    /// Anything else worth telling.
    Note,
}

/// An observation about how the runtime will behave.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub file: Option<PathBuf>,
    pub message: String,
}

impl Finding {
    pub fn new(kind: FindingKind, file: Option<&Path>, message: impl Into<String>) -> Finding {
        Finding {
            kind,
            file: file.map(Path::to_path_buf),
            message: message.into(),
        }
    }
}

/// containerd-side state loaded once.
#[derive(Clone, Debug)]
pub struct ContainerdState {
    pub config: containerd::ContainerdConfig,
    /// `None` = unknown: the 1.x rules apply, and `plan` says so.
    pub version: Option<containerd::Version>,
    pub version_source: Option<VersionSource>,
}

/// Everything loaded from the node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub host_root: HostRoot,
    pub options: NodeConfigOptions,
    pub runtime: Runtime,
    /// How the runtime was chosen (flag, socket, config file, default).
    pub runtime_reason: String,
    pub containerd: ContainerdState,
    pub crio: crio::CrioConfig,
    pub proxy: proxy::ProxyEnv,
    /// (node path, real path) of the node's system CA bundle.
    pub ca_bundle: Option<(PathBuf, PathBuf)>,
    /// The node docker config the kubelet would use (first valid in its search).
    pub node_docker_config: Option<DockerConfig>,
    /// Credential-provider plugins (shared so the plugin cache lives across calls).
    pub plugins: Option<Arc<PluginRunner>>,
    /// Config-level findings (added to every plan).
    pub findings: Vec<Finding>,
    pub problems: Vec<ConfigProblem>,
    /// k3s/rke2 node: where containerd's registry config came from (see [`k3s`]).
    pub k3s: Option<k3s::K3sState>,
    /// The kubelet settings in effect (given ones override what was discovered).
    pub kubelet: kubelet::KubeletSettings,
}

impl NodeConfig {
    /// Loads everything the options point at. Fails only when the host root is unusable.
    pub fn load(opts: &NodeConfigOptions) -> Result<NodeConfig, HostRootError> {
        let hr = HostRoot::new(&opts.host_root)?;
        let mut problems = Vec::new();
        let mut findings = Vec::new();
        let kubelet = kubelet_settings(&hr, opts, &mut problems);
        let (runtime, runtime_reason) = detect_runtime(&hr, opts, &kubelet);

        let version = containerd_version(&hr, opts, runtime, &mut problems, &mut findings);
        let (version, version_source) = match version {
            Some((v, s)) => (Some(v), Some(s)),
            None => (None, None),
        };
        let (ccfg, crio_cfg, k3s_state) =
            runtime_config(&hr, opts, runtime, &mut problems, &mut findings);
        for n in &ccfg.notes {
            findings.push(Finding::new(
                FindingKind::Note,
                ccfg.registry_file.as_deref().or(ccfg.file.as_deref()),
                n.clone(),
            ));
        }
        let unit = match runtime {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
        };
        let proxy = proxy::load_unit_env(&hr, unit, &mut problems);
        let ca_bundle = trust::find_ca_bundle(&hr);
        if ca_bundle.is_none() {
            findings.push(Finding::new(
                FindingKind::Note,
                None,
                format!(
                    "no system CA bundle found under the host root (looked for {})",
                    trust::CA_BUNDLE_CANDIDATES.join(", ")
                ),
            ));
        }
        findings.extend(resolver::missing_files(&hr));
        let (node_docker_config, p) =
            kubelet_node::load_node_docker_config(&hr, &kubelet.root_dir.value);
        problems.extend(p);
        let plugins = load_plugins(&hr, &kubelet, &mut problems);
        Ok(NodeConfig {
            node_docker_config,
            plugins,
            host_root: hr,
            options: opts.clone(),
            runtime,
            runtime_reason,
            containerd: ContainerdState {
                config: ccfg,
                version,
                version_source,
            },
            crio: crio_cfg,
            proxy,
            ca_bundle,
            findings,
            problems,
            k3s: k3s_state,
            kubelet,
        })
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// `None` when a runtime configuration was read; else what was looked for (so a
    /// host root without one can say so: every endpoint is then the runtime's default).
    pub fn missing_runtime_config(&self) -> Option<String> {
        let found = match self.runtime {
            Runtime::Containerd => {
                self.containerd.config.file.is_some()
                    || self.containerd.config.config_path.is_some()
                    || self.k3s.is_some()
                    || self.host_root.is_dir(Path::new("/etc/containerd/certs.d"))
            }
            Runtime::Crio => !self.crio.files.is_empty(),
        };
        (!found).then(|| match self.runtime {
            Runtime::Containerd => format!(
                "no containerd configuration under {} (looked for {}, /etc/containerd/certs.d, and k3s/rke2's): every endpoint is containerd's default",
                self.host_root.root().display(),
                self.options
                    .containerd_config
                    .as_deref()
                    .unwrap_or(Path::new(containerd::DEFAULT_CONFIG))
                    .display()
            ),
            Runtime::Crio => format!(
                "no CRI-O registries configuration under {} (looked for /etc/containers/registries.conf and registries.conf.d): every endpoint is the registry itself",
                self.host_root.root().display()
            ),
        })
    }

    /// Real path (under the host root) of the node's resolv.conf.
    pub fn resolv_conf(&self) -> PathBuf {
        resolver::resolv_conf(&self.host_root)
    }

    pub fn hosts_file(&self) -> PathBuf {
        resolver::hosts_file(&self.host_root)
    }

    /// Real path of the node's system CA bundle, if one was found.
    pub fn ca_bundle(&self) -> Option<PathBuf> {
        self.ca_bundle.as_ref().map(|(_, real)| real.clone())
    }

    /// The endpoints the runtime would try for `image`, in order. No network.
    pub fn plan(&self, image: &ImageRef) -> Plan {
        plan::build(self, image)
    }

    /// CRI-O's short-name handling for an image *as written* (before normalisation):
    /// `None` on containerd, which normalises `nginx` to `docker.io/library/nginx`.
    /// CRI-O's own `short_name_mode` defaults to `enforcing` (cri-o docs/crio.conf.5.md).
    pub fn crio_short_name(&self, raw: &str) -> Option<crio::ShortName> {
        if self.runtime != Runtime::Crio {
            return None;
        }
        let name = raw.split('@').next().unwrap_or(raw);
        // Strip a tag: a ':' after the last '/'.
        let name = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        Some(self.crio.resolve_short_name(name, None))
    }
}

/// The containerd version and where it came from: given, else the node's dpkg status (a
/// finding says so).
fn containerd_version(
    hr: &HostRoot,
    opts: &NodeConfigOptions,
    runtime: Runtime,
    problems: &mut Vec<ConfigProblem>,
    findings: &mut Vec<Finding>,
) -> Option<(containerd::Version, VersionSource)> {
    match &opts.containerd_version {
        Some(given) => {
            let parsed = containerd::Version::parse(&given.value);
            if parsed.is_none() {
                let what = match given.source {
                    VersionSource::NodeStatus => "containerRuntimeVersion",
                    _ => "--containerd-version",
                };
                problems.push(ConfigProblem::new(
                    Path::new(what),
                    None,
                    ProblemKind::Invalid,
                    "not a version (expected e.g. 1.7.12 or containerd://2.1.4)",
                ));
            }
            parsed.map(|v| (v, given.source))
        }
        None if runtime == Runtime::Containerd => {
            let v = dpkg_containerd_version(hr);
            if let Some((pkg, raw, _)) = &v {
                findings.push(Finding::new(
                    FindingKind::Assumption,
                    Some(Path::new(DPKG_STATUS)),
                    format!("containerd version {raw} taken from the installed {pkg} package"),
                ));
            }
            v.map(|(_, _, v)| (v, VersionSource::DpkgStatus))
        }
        None => None,
    }
}

/// The runtime's registry configuration: containerd's (or the k3s/rke2 one, which run
/// their own containerd config unless one is given explicitly), or CRI-O's.
fn runtime_config(
    hr: &HostRoot,
    opts: &NodeConfigOptions,
    runtime: Runtime,
    problems: &mut Vec<ConfigProblem>,
    findings: &mut Vec<Finding>,
) -> (
    containerd::ContainerdConfig,
    crio::CrioConfig,
    Option<k3s::K3sState>,
) {
    if let (Runtime::Containerd, Some(dir)) = (runtime, &opts.hosts_dir) {
        let config = containerd::ContainerdConfig {
            config_path: Some(dir.display().to_string()),
            ..Default::default()
        };
        return (config, crio::CrioConfig::default(), None);
    }
    match runtime {
        Runtime::Containerd => {
            let k3s_node = opts
                .containerd_config
                .is_none()
                .then(|| k3s::detect(hr))
                .flatten();
            match k3s_node {
                Some(node) => {
                    let (c, st) = k3s::load(hr, node, problems, findings);
                    (c, crio::CrioConfig::default(), Some(st))
                }
                None => {
                    let path = opts
                        .containerd_config
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(containerd::DEFAULT_CONFIG));
                    (
                        containerd::load(hr, &path, problems),
                        crio::CrioConfig::default(),
                        None,
                    )
                }
            }
        }
        Runtime::Crio => {
            let cfg = crio::load(hr, problems);
            let file = cfg.daemon.files.last().cloned();
            findings.push(Finding::new(
                FindingKind::Note,
                file.as_deref(),
                cfg.daemon.describe(),
            ));
            (containerd::ContainerdConfig::default(), cfg, None)
        }
    }
}

/// Reads `--image-credential-provider-config` under the host root; the binaries are
/// run from `--image-credential-provider-bin-dir` under the host root.
fn load_plugins(
    hr: &HostRoot,
    kubelet: &kubelet::KubeletSettings,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Arc<PluginRunner>> {
    let file = &kubelet.credential_provider_config.as_ref()?.value;
    let text = hr.read_or_report(file, true, problems)?;
    let (cfg, errs) = match CredentialProviderConfig::parse(file, &text) {
        Ok(x) => x,
        Err(e) => {
            problems.push(ConfigProblem::new(
                file,
                Some(&e.field),
                ProblemKind::Invalid,
                e.message,
            ));
            return None;
        }
    };
    for e in errs {
        problems.push(ConfigProblem::new(
            file,
            Some(&e.field),
            ProblemKind::Invalid,
            e.message,
        ));
    }
    let Some(bin) = kubelet
        .credential_provider_bin_dir
        .as_ref()
        .map(|b| &b.value)
    else {
        problems.push(ConfigProblem::new(
            file,
            None,
            ProblemKind::MissingReference,
            "no --image-credential-provider-bin-dir given: plugins cannot run",
        ));
        return None;
    };
    let real_bin = hr.real_path(bin);
    for p in &cfg.providers {
        if !hr.is_file(&bin.join(&p.name)) {
            let why = match hr.resolve(&bin.join(&p.name)) {
                Err(e @ crate::hostroot::ReadError::NotMounted) => e.to_string(),
                _ => "not found".to_string(),
            };
            problems.push(ConfigProblem::new(
                &bin.join(&p.name),
                None,
                ProblemKind::MissingReference,
                format!("credential provider binary for {:?} {why}", p.name),
            ));
        }
    }
    Some(Arc::new(PluginRunner::new(
        cfg,
        real_bin,
        DEFAULT_PLUGIN_TIMEOUT,
    )))
}

/// dpkg's package database (the containerd package's version when none is given).
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// On Debian/Ubuntu nodes the installed containerd package tells the version when none
/// is given: (package, version string, parsed).
fn dpkg_containerd_version(hr: &HostRoot) -> Option<(String, String, containerd::Version)> {
    let text = hr.read_to_string(Path::new(DPKG_STATUS)).ok()?;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let Some(pkg) = field("Package:") else {
            continue;
        };
        if pkg != "containerd" && pkg != "containerd.io" {
            continue;
        }
        if !field("Status:").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let raw = field("Version:")?;
        // Debian versions may carry an epoch ("1:1.7.12-…").
        let bare = raw.split_once(':').map(|(_, v)| v).unwrap_or(&raw);
        let v = containerd::Version::parse(bare)?;
        return Some((pkg, raw, v));
    }
    None
}

/// The kubelet's settings: what pullprobe was given, else what the node's kubelet runs with.
fn kubelet_settings(
    hr: &HostRoot,
    opts: &NodeConfigOptions,
    problems: &mut Vec<ConfigProblem>,
) -> kubelet::KubeletSettings {
    let mut k = kubelet::discover(hr, problems);
    if let Some(d) = &opts.kubelet_root_dir {
        k.root_dir = kubelet::Setting::given(d.clone());
    }
    if let Some(c) = &opts.credential_provider_config {
        k.credential_provider_config = Some(kubelet::Setting::given(c.clone()));
    }
    if let Some(b) = &opts.credential_provider_bin_dir {
        k.credential_provider_bin_dir = Some(kubelet::Setting::given(b.clone()));
    }
    let root_dir = k.root_dir.value.clone();
    k.cached_images.load_records(hr, &root_dir);
    k
}

/// The runtime behind a kubelet `--container-runtime-endpoint`.
fn runtime_of_endpoint(endpoint: &str) -> Option<Runtime> {
    let e = endpoint.to_ascii_lowercase();
    if e.contains("crio") {
        Some(Runtime::Crio)
    } else if e.contains("containerd") {
        Some(Runtime::Containerd)
    } else {
        None
    }
}

/// Runtime sockets whose existence tells the runtime (`--runtime auto`), in this order.
pub const RUNTIME_SOCKETS: [(&str, Runtime); 4] = [
    ("/run/containerd/containerd.sock", Runtime::Containerd),
    ("/run/crio/crio.sock", Runtime::Crio),
    ("/var/run/crio/crio.sock", Runtime::Crio),
    (k3s::K3S_SOCKET, Runtime::Containerd),
];

/// Runtime configuration files and directories whose existence tells the runtime when no
/// socket does, in this order.
pub const RUNTIME_CONFIGS: [(&str, Runtime); 4] = [
    ("/etc/containerd/config.toml", Runtime::Containerd),
    ("/etc/crio/crio.conf", Runtime::Crio),
    ("/etc/crio/crio.conf.d", Runtime::Crio),
    ("/etc/containerd", Runtime::Containerd),
];

/// `--runtime auto`: the kubelet's runtime endpoint, a runtime socket, then a config
/// directory, then containerd.
fn detect_runtime(
    hr: &HostRoot,
    opts: &NodeConfigOptions,
    kubelet: &kubelet::KubeletSettings,
) -> (Runtime, String) {
    if let Some(r) = opts.runtime {
        return (r, "given".into());
    }
    if let Some(ep) = &kubelet.container_runtime_endpoint {
        if let Some(r) = runtime_of_endpoint(&ep.value) {
            return (
                r,
                format!(
                    "kubelet --container-runtime-endpoint {} ({})",
                    ep.value, ep.source
                ),
            );
        }
    }
    for (p, r) in RUNTIME_SOCKETS {
        if hr.exists(Path::new(p)) {
            return (r, format!("socket {p}"));
        }
    }
    if let Some(c) = &opts.containerd_config {
        if hr.exists(c) {
            return (Runtime::Containerd, format!("config {}", c.display()));
        }
    }
    for (p, r) in RUNTIME_CONFIGS {
        if hr.exists(Path::new(p)) {
            return (r, format!("config {p}"));
        }
    }
    if let Some(n) = k3s::detect(hr) {
        let what = n.rendered_config.or(n.registries).unwrap_or_default();
        return (
            Runtime::Containerd,
            format!("{} config {}", n.distro.name(), what.display()),
        );
    }
    (
        Runtime::Containerd,
        "default (no runtime socket or config found)".into(),
    )
}
