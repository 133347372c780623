//! The one pull path every subcommand walks — `check`, `plan`, `agent` and pre-flight:
//!
//! ```text
//! host root + overrides ─▶ node config ─▶ plan ─▶ probe inputs ─▶ attempts ─▶ verdict
//!  (Spec)                  (nodeconfig)   (Plan)  (ProbeTarget)   (probe)     (Checked)
//! ```
//!
//! No subcommand builds a resolver, trust, proxy, credentials, runtime profile or
//! platform of its own: they come from here, from the node's files under the host root
//! (the resolver files resolved through the node's own symlinks, its CA bundle, the
//! runtime service's proxy environment, the kubelet's credentials as its unit runs it),
//! with the overrides the command line or the agent config give.

mod annotate;
pub mod credentials;
pub mod endpoints;

use std::path::PathBuf;
use std::sync::Arc;

pub use credentials::{CredentialProblem, Creds};
pub use endpoints::{EndpointOverrides, MirrorError};

use crate::cache::CacheStats;
use crate::credentials::docker_config::{DockerConfig, DockerConfigError};
use crate::credentials::SourcedCredential;
use crate::endpoint::Endpoint;
use crate::nodeconfig::{ConfigProblem, HostRootError, NodeConfig, NodeConfigOptions, Plan};
use crate::probe::auth::TokenCache;
use crate::probe::verdict::{self, PathState};
use crate::probe::{
    Depth, Failure, Platform, ProbeOptions, ProbeReport, ProbeTarget, Prober, Reason, Timeouts,
};
use crate::reference::ImageRef;
use crate::runtime::{Runtime, RuntimeRules};

/// Where the node's files are and what overrides them. `Default` = this workstation,
/// containerd's request sequence, default timeouts.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The node's filesystem (`/` on a node, `/host` in the DaemonSet); `None` = this
    /// workstation: containerd's default endpoints and a Docker config's credentials.
    pub host_root: Option<PathBuf>,
    /// `None` = as detected under the host root (the kubelet's runtime endpoint, a
    /// runtime socket or config), else containerd.
    pub runtime: Option<Runtime>,
    /// Node paths and facts that override discovery (containerd config and version, the
    /// kubelet's root dir and credential-provider flags).
    pub node: NodeOverrides,
    /// The node's resolv.conf / hosts file, as paths on this machine.
    pub resolv_conf: Option<PathBuf>,
    pub hosts_file: Option<PathBuf>,
    pub endpoints: EndpointOverrides,
    /// Credentials instead of the node's (`--username --password-stdin`).
    pub credential: Option<SourcedCredential>,
    /// A Docker config for a workstation check (`--auth-file`; `None` = the default search).
    pub auth_file: Option<PathBuf>,
    /// `None` = this machine's platform.
    pub platform: Option<Platform>,
    pub timeouts: Timeouts,
    /// Skip the blob phase of image checks.
    pub no_blob: bool,
    /// Tokens for credential providers with `tokenAttributes` (the agent mints them for
    /// the ServiceAccounts its config names); `None`: such providers are not reproduced.
    pub sa_tokens: Option<Arc<dyn crate::credentials::satoken::ServiceAccountTokens>>,
}

/// Node settings given instead of discovered (node paths).
#[derive(Clone, Debug, Default)]
pub struct NodeOverrides {
    pub containerd_config: Option<PathBuf>,
    pub containerd_version: Option<crate::nodeconfig::GivenVersion>,
    pub kubelet_root_dir: Option<PathBuf>,
    pub credential_provider_config: Option<PathBuf>,
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// containerd's hosts directory on this machine (`--hosts-dir`, like `ctr`'s): a
    /// `certs.d` tree tried without building a host root.
    pub hosts_dir: Option<PathBuf>,
}

/// Why the pipeline cannot be built: a configuration error (exit 2), never a verdict.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("--host-root: {0}")]
    HostRoot(#[from] HostRootError),
    #[error("{0}")]
    AuthFile(#[from] DockerConfigError),
}

/// The result of one check: the probe's report and the credential problems met on the way.
#[derive(Clone, Debug)]
pub struct Checked {
    pub report: ProbeReport,
    pub problems: Vec<CredentialProblem>,
    pub depth: Depth,
}

impl Checked {
    /// What a path check proved about the node's path to the registry, under the node
    /// runtime's rules ([`Pipeline::rules`]). Credentials rejected while a
    /// service-account-token provider was not reproduced prove nothing about the node:
    /// the kubelet would also have tried that provider's.
    pub fn path_state(&self, rules: RuntimeRules) -> PathState {
        match verdict::path_state(rules, &self.report.attempts) {
            PathState::AuthFailing(_) if self.token_not_reproduced() => {
                PathState::Inconclusive(Reason::ServiceAccountTokenNotReproduced)
            }
            s => s,
        }
    }

    /// A provider with `tokenAttributes` matched the image and was not run as the
    /// kubelet runs it (no token, or none could be minted).
    pub fn token_not_reproduced(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, CredentialProblem::ServiceAccountToken(_)))
    }

    /// An auth failure that the unreproduced provider's credentials could have cured
    /// becomes [`Reason::ServiceAccountTokenNotReproduced`] (KEP-4412).
    fn mark_token_not_reproduced(&mut self) {
        let cured = matches!(
            self.report.reason,
            Some(
                Reason::AuthCredentialsRequired
                    | Reason::AuthCredentialsRejected
                    | Reason::AuthDenied
            )
        );
        if !cured || self.report.verdict.pulls() || !self.token_not_reproduced() {
            return;
        }
        let why: Vec<String> = self
            .problems
            .iter()
            .filter(|p| matches!(p, CredentialProblem::ServiceAccountToken(_)))
            .map(|p| p.to_string())
            .collect();
        let r = &mut self.report;
        r.message = format!("{} ({})", why.join("; "), r.message);
        r.reason = Some(Reason::ServiceAccountTokenNotReproduced);
        r.hint = Some(crate::probe::hints::fix(
            Reason::ServiceAccountTokenNotReproduced,
        ));
    }
}

/// What the caches filled by registries and plugins hold, against their bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheView {
    /// Bearer tokens (per registry host, realm, service, scope and credential).
    pub tokens: CacheStats,
    /// The last challenge of each registry host.
    pub challenges: CacheStats,
    /// Credential-provider answers; `None` without plugins.
    pub plugin_answers: Option<CacheStats>,
}

/// The pull path of one node (or workstation), loaded once and shared by every check.
/// Holds the token caches, so one `Pipeline` should live for a run or be
/// [`reload`](Pipeline::reload)ed, which keeps them.
pub struct Pipeline {
    spec: Spec,
    runtime: Runtime,
    platform: Platform,
    node: Option<Arc<NodeConfig>>,
    auth_file: Option<DockerConfig>,
    image: Prober,
    path: Prober,
    tokens: Arc<TokenCache>,
}

impl Pipeline {
    /// Load the node's files (or the workstation's Docker config). Problems in single
    /// node files do not fail the load: see [`Pipeline::problems`].
    pub fn load(spec: Spec) -> Result<Pipeline, PipelineError> {
        Pipeline::build(spec, Arc::new(TokenCache::default()))
    }

    /// The same spec re-read from the node's files (edits show up without a restart);
    /// token caches are kept.
    pub fn reload(&self) -> Result<Pipeline, PipelineError> {
        Pipeline::build(self.spec.clone(), self.tokens.clone())
    }

    fn build(spec: Spec, tokens: Arc<TokenCache>) -> Result<Pipeline, PipelineError> {
        // `--hosts-dir` alone: this machine's files, that hosts directory.
        let root = spec
            .host_root
            .clone()
            .or_else(|| spec.node.hosts_dir.as_ref().map(|_| PathBuf::from("/")));
        let node = match &root {
            Some(root) => Some(Arc::new(NodeConfig::load(&node_options(&spec, root))?)),
            None => None,
        };
        let auth_file = match (&spec.host_root, &spec.credential) {
            (None, None) => credentials::load_auth_file(spec.auth_file.as_deref())?,
            _ => None,
        };
        let runtime = match (&node, spec.runtime) {
            (_, Some(r)) => r,
            (Some(nc), None) => nc.runtime,
            (None, None) => Runtime::Containerd,
        };
        let platform = spec.platform.clone().unwrap_or_else(Platform::host);
        let options = probe_options(&spec, node.as_deref(), runtime, &platform);
        let path = ProbeOptions {
            depth: Depth::Path,
            no_blob: true,
            ..options.clone()
        };
        Ok(Pipeline {
            image: Prober::with_tokens(options, tokens.clone()),
            path: Prober::with_tokens(path, tokens.clone()),
            spec,
            runtime,
            platform,
            node,
            auth_file,
            tokens,
        })
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The runtime and release whose rules every check reproduces.
    pub fn rules(&self) -> RuntimeRules {
        self.image.options().rules()
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The node's loaded configuration; `None` on a workstation.
    pub fn node(&self) -> Option<&NodeConfig> {
        self.node.as_deref()
    }

    /// Problems met loading the node's files (each names its file; the rest applies).
    pub fn problems(&self) -> &[ConfigProblem] {
        self.node
            .as_ref()
            .map(|n| n.problems.as_slice())
            .unwrap_or(&[])
    }

    /// The prober's options (timeouts, resolver files, platform) for image checks.
    pub fn options(&self) -> &ProbeOptions {
        self.image.options()
    }

    /// The token cache, shared by the image and path probers (and kept on reload).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// What the pull path's caches hold, after sweeping expired entries (`/status`).
    pub fn caches(&self) -> CacheView {
        let t = self.tokens.stats();
        CacheView {
            tokens: t.tokens,
            challenges: t.challenges,
            plugin_answers: self
                .node
                .as_ref()
                .and_then(|n| n.plugins.as_ref())
                .map(|p| p.cache_stats()),
        }
    }

    /// What the node's runtime would do for `image` (no network). `None` on a workstation.
    pub fn plan(&self, image: &ImageRef) -> Option<Plan> {
        let nc = self.node.as_ref()?;
        let mut plan = nc.plan(image);
        self.apply_overrides(image, &mut plan.endpoints);
        Some(plan)
    }

    /// The endpoints a pull of `image` walks, in the runtime's order, with refusals.
    fn endpoints(&self, image: &ImageRef) -> (Vec<Endpoint>, Option<Failure>) {
        match self.plan(image) {
            Some(plan) => {
                let refusal = if plan.blocked {
                    Some(Failure::new(
                        Reason::RegistryBlocked,
                        format!(
                            "{} is blocked by the runtime's registries.conf",
                            image.domain
                        ),
                    ))
                } else {
                    plan.runtime_error
                        .map(|e| Failure::new(Reason::NoUsableEndpoint, e))
                };
                (plan.endpoints, refusal)
            }
            None => {
                let mut eps = Vec::new();
                self.apply_overrides(image, &mut eps);
                let mirrors = std::mem::take(&mut eps);
                match endpoints::workstation_endpoints(
                    mirrors,
                    image,
                    self.spec.endpoints.plain_http,
                ) {
                    Ok(mut eps) => {
                        self.spec.endpoints.apply_tls(&mut eps);
                        (eps, None)
                    }
                    Err(f) => (Vec::new(), Some(f)),
                }
            }
        }
    }

    /// CRI-O and a short name as given (`nginx:1.27`): the endpoints of each name
    /// containers/image resolves it to, in order (an alias, or the unqualified-search
    /// registries), or the refusal CRI-O fails it with ([`crate::nodeconfig::crio`]).
    /// `None`: not CRI-O, or the name has a domain.
    fn short_name_endpoints(
        &self,
        image: &ImageRef,
        given: &str,
    ) -> Option<(Vec<Endpoint>, Option<Failure>)> {
        use crate::nodeconfig::crio::ShortName;
        let names = match self.node.as_ref()?.crio_short_name(given)? {
            ShortName::Qualified => return None,
            ShortName::Error(msg) => {
                let f = Failure::new(Reason::ShortNameUnresolved, msg);
                return Some((Vec::new(), Some(f)));
            }
            ShortName::Alias(a) => vec![a],
            ShortName::Candidates(c) => c,
        };
        let suffix = match (&image.digest, &image.tag) {
            (Some(d), _) => format!("@{d}"),
            (None, Some(t)) => format!(":{t}"),
            (None, None) => String::new(),
        };
        let mut eps = Vec::new();
        let mut refusal = None;
        for n in names {
            let Ok(candidate) = ImageRef::parse(&format!("{n}{suffix}")) else {
                continue;
            };
            let (mut e, r) = self.endpoints(&candidate);
            for ep in &mut e {
                if ep.repository.is_none() && candidate.path != image.path {
                    ep.repository = Some(candidate.path.clone());
                }
            }
            if e.is_empty() {
                refusal = refusal.or(r);
            }
            eps.extend(e);
        }
        let refusal = eps.is_empty().then_some(refusal).flatten();
        Some((eps, refusal))
    }

    /// `--mirror` endpoints first, TLS flags on every endpoint.
    fn apply_overrides(&self, image: &ImageRef, eps: &mut Vec<Endpoint>) {
        // Mirror flags were validated by `validate`; an invalid one is skipped here.
        let mut mirrors =
            endpoints::mirror_endpoints(&self.spec.endpoints.mirrors, image).unwrap_or_default();
        if self.node.is_some() {
            self.spec.endpoints.apply_tls(&mut mirrors);
            self.spec.endpoints.apply_tls(eps);
        }
        mirrors.append(eps);
        *eps = mirrors;
    }

    /// A configuration error in the overrides (exit 2 before any probe).
    pub fn validate(&self, image: &ImageRef) -> Result<(), MirrorError> {
        endpoints::mirror_endpoints(&self.spec.endpoints.mirrors, image).map(|_| ())
    }

    /// Identity of the endpoint list the node would use for `image`: the registry host,
    /// plus the mirrors when there are any, so images whose plans differ are checked
    /// apart. Bounded: at most the endpoint URLs of one plan.
    pub fn plan_key(&self, image: &ImageRef) -> String {
        let host = image.registry_host();
        let (eps, _) = self.endpoints(image);
        let mirrors: Vec<String> = eps
            .iter()
            .filter(|e| !e.is_upstream)
            .map(|e| e.display_url())
            .collect();
        if mirrors.is_empty() {
            host
        } else {
            format!("{host} via {}", mirrors.join(" "))
        }
    }

    /// The probe inputs for `image` with `creds`: endpoints, credentials, refusal.
    pub async fn inputs(
        &self,
        image: &ImageRef,
        given: &str,
        creds: Creds<'_>,
    ) -> (ProbeTarget, Vec<CredentialProblem>) {
        let mut target = ProbeTarget::new(given);
        let (eps, refusal) = self
            .short_name_endpoints(image, given)
            .unwrap_or_else(|| self.endpoints(image));
        target.endpoints = eps;
        target.refusal = refusal;
        let node = self.node.as_ref().filter(|_| self.spec.host_root.is_some());
        let (list, problems) = match (&self.spec.credential, node) {
            (Some(c), _) => (vec![c.clone()], Vec::new()),
            (None, Some(nc)) => {
                let tokens = self.spec.sa_tokens.as_deref();
                credentials::kubelet_credentials(nc, image, creds, tokens).await
            }
            (None, None) => (
                self.auth_file
                    .as_ref()
                    .and_then(|c| c.lookup_exact(image))
                    .into_iter()
                    .collect(),
                Vec::new(),
            ),
        };
        target.credentials = list;
        (target, problems)
    }

    /// Check `image` (as `given` by the user) at `depth` with `creds`.
    pub async fn check(
        &self,
        image: &ImageRef,
        given: &str,
        creds: Creds<'_>,
        depth: Depth,
    ) -> Checked {
        let (target, problems) = self.inputs(image, given, creds).await;
        let prober = match depth {
            Depth::Image => &self.image,
            Depth::Path => &self.path,
        };
        let mut report = prober.probe(&target).await;
        self.annotate(image, &target, &mut report);
        let mut checked = Checked {
            report,
            problems,
            depth,
        };
        checked.mark_token_not_reproduced();
        checked
    }
}

fn node_options(spec: &Spec, root: &std::path::Path) -> NodeConfigOptions {
    NodeConfigOptions {
        host_root: root.to_path_buf(),
        runtime: spec.runtime,
        containerd_config: spec.node.containerd_config.clone(),
        containerd_version: spec.node.containerd_version.clone(),
        kubelet_root_dir: spec.node.kubelet_root_dir.clone(),
        credential_provider_config: spec.node.credential_provider_config.clone(),
        credential_provider_bin_dir: spec.node.credential_provider_bin_dir.clone(),
        hosts_dir: spec
            .node
            .hosts_dir
            .as_ref()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone())),
    }
}

/// The probe's settings: the node's resolver files (resolved inside the host root), its
/// runtime's proxy environment, the runtime's request sequence and the platform.
fn probe_options(
    spec: &Spec,
    node: Option<&NodeConfig>,
    runtime: Runtime,
    platform: &Platform,
) -> ProbeOptions {
    let or_node = |given: &Option<PathBuf>, node_path: Option<PathBuf>, fallback: &str| {
        given
            .clone()
            .or(node_path)
            .unwrap_or_else(|| PathBuf::from(fallback))
    };
    ProbeOptions {
        runtime,
        containerd_version: node.and_then(|n| n.containerd.version),
        timeouts: spec.timeouts,
        platform: platform.clone(),
        no_blob: spec.no_blob,
        depth: Depth::Image,
        resolv_conf: or_node(
            &spec.resolv_conf,
            node.map(NodeConfig::resolv_conf),
            "/etc/resolv.conf",
        ),
        hosts_file: or_node(
            &spec.hosts_file,
            node.map(NodeConfig::hosts_file),
            "/etc/hosts",
        ),
        proxy_env: node.map(|n| n.proxy.clone()),
    }
}
