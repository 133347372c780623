//! `pullprobe check IMAGE...`: probe images once and print a verdict per image.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::exit;
use crate::credentials::{Credential, CredentialSource, Secret, SourcedCredential};
use crate::endpoint::{ClientCert, Endpoint, SchemePolicy};
use crate::nodeconfig::{NodeConfig, NodeConfigOptions, Runtime};
use crate::probe::engine::default_endpoint;
use crate::probe::{Failure, Reason};
use crate::probe::{Platform, ProbeOptions, ProbeTarget, Prober, Timeouts};
use crate::reference::ImageRef;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Image references (`nginx`, `registry.example:5000/team/app:1.2`, `...@sha256:...`).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,

    /// Whose request sequence to reproduce (`auto`: detected under --host-root, else containerd).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    /// The node's resolv.conf (default: the host root's `etc/resolv.conf`).
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<PathBuf>,
    /// The node's hosts file (default: the host root's `etc/hosts`).
    #[arg(long, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,

    /// The node's CA bundle (default: the usual system locations).
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,
    /// Extra CA file appended to the pool (repeatable).
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM); default: inside the --cert file.
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Do not verify the registry's certificate (containerd `skip_verify`).
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Talk plain HTTP to the registry.
    #[arg(long, conflicts_with = "insecure_skip_verify")]
    pub plain_http: bool,
    /// A mirror API root tried before the registry itself, e.g. `https://mirror:5000`
    /// (repeatable; in order; the upstream is tried last, as containerd does).
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,

    /// Registry user name (the password is read from stdin with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Docker config.json with `auths` (default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json).
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,

    /// Target platform `os/arch[/variant]` (default: this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Skip the blob phase.
    #[arg(long)]
    pub no_blob: bool,

    /// DNS phase timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout_dns: Duration,
    /// TCP connect phase timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout_connect: Duration,
    /// TLS handshake timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout_tls: Duration,
    /// Timeout of one HTTP request/response.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout_http: Duration,
    /// Overall deadline per image.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// One JSON object per image per line.
    #[arg(long)]
    pub json: bool,
    /// Show every phase and endpoint.
    #[arg(short, long)]
    pub verbose: bool,
    /// Count `degraded` (worked only after earlier endpoints failed) as not ready.
    #[arg(long)]
    pub strict: bool,
    /// Images probed at the same time.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeArg {
    Auto,
    Containerd,
    Crio,
}

/// Where the node's own pull-path configuration is read from.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Read the node's runtime config (containerd `config.toml` + `hosts.toml`, or CRI-O
    /// `registries.conf`), CA bundle, resolver, proxy settings and kubelet credentials under
    /// this directory (`/` on a node, `/host` in the DaemonSet) and probe the runtime's own
    /// endpoints with its own credentials.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// containerd's config file (node path).
    #[arg(long, value_name = "PATH")]
    pub containerd_config: Option<PathBuf>,
    /// containerd's version (node `containerRuntimeVersion`), for version-specific behaviour.
    #[arg(long, value_name = "VERSION")]
    pub containerd_version: Option<String>,
    /// The kubelet's `--root-dir` (node path), where its `config.json` is searched
    /// (default: as the node's kubelet runs, else /var/lib/kubelet).
    #[arg(long, value_name = "PATH")]
    pub kubelet_root_dir: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-config` (node path).
    #[arg(long, value_name = "PATH")]
    pub image_credential_provider_config: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-bin-dir` (node path).
    #[arg(long, value_name = "PATH")]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
}

impl NodeArgs {
    /// Load the node's configuration when `--host-root` is given. Problems in single
    /// files are printed and skipped; only an unusable host root is an error.
    pub fn load(&self, runtime: RuntimeArg) -> Result<Option<NodeConfig>, CheckError> {
        let Some(root) = &self.host_root else {
            return Ok(None);
        };
        let opts = NodeConfigOptions {
            host_root: root.clone(),
            runtime: match runtime {
                RuntimeArg::Auto => None,
                RuntimeArg::Containerd => Some(Runtime::Containerd),
                RuntimeArg::Crio => Some(Runtime::Crio),
            },
            containerd_config: self.containerd_config.clone(),
            kubelet_root_dir: self.kubelet_root_dir.clone(),
            credential_provider_config: self.image_credential_provider_config.clone(),
            credential_provider_bin_dir: self.image_credential_provider_bin_dir.clone(),
            containerd_version: self.containerd_version.clone(),
        };
        let nc = NodeConfig::load(&opts).map_err(|e| CheckError::HostRoot(e.to_string()))?;
        for p in &nc.problems {
            tracing::warn!(problem = %p, "node configuration problem (skipped)");
            eprintln!("pullprobe: warning: {p}");
        }
        Ok(Some(nc))
    }
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("invalid image reference {image:?}: {source}")]
    Reference {
        image: String,
        source: crate::reference::ReferenceError,
    },
    #[error("--platform: {0}")]
    Platform(#[from] crate::runtime::PlatformError),
    #[error("--mirror {url:?}: {message}")]
    Mirror { url: String, message: String },
    #[error("reading the password from stdin: {0}")]
    PasswordStdin(std::io::Error),
    #[error("the password on stdin is empty")]
    EmptyPassword,
    #[error("{0}")]
    AuthFile(String),
    #[error("--host-root: {0}")]
    HostRoot(String),
}

/// Run `check`; returns the process exit code.
pub async fn run(args: CheckArgs) -> Result<i32, CheckError> {
    let mut parsed = Vec::new();
    for image in &args.images {
        let r = ImageRef::parse(image).map_err(|source| CheckError::Reference {
            image: image.clone(),
            source,
        })?;
        parsed.push(r);
    }
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(CheckError::Platform)?,
        None => Platform::host(),
    };
    let command_line_cred = if let (Some(user), true) = (&args.username, args.password_stdin) {
        let mut pw = String::new();
        std::io::stdin()
            .read_to_string(&mut pw)
            .map_err(CheckError::PasswordStdin)?;
        let pw = pw.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            return Err(CheckError::EmptyPassword);
        }
        Some(SourcedCredential {
            source: CredentialSource::CommandLine,
            credential: Credential::Basic {
                username: user.clone(),
                password: Secret::new(pw),
            },
        })
    } else {
        None
    };
    let auth_lookup = if command_line_cred.is_none() && args.node.host_root.is_none() {
        credentials_lookup::load(args.auth_file.as_deref()).map_err(CheckError::AuthFile)?
    } else {
        None
    };
    let node = args.node.load(args.runtime)?;
    let runtime = match (args.runtime, &node) {
        (RuntimeArg::Crio, _) => Runtime::Crio,
        (RuntimeArg::Containerd, _) => Runtime::Containerd,
        (RuntimeArg::Auto, Some(nc)) if nc.runtime() == Runtime::Crio => Runtime::Crio,
        (RuntimeArg::Auto, _) => Runtime::Containerd,
    };
    let default_path = |given: &Option<PathBuf>, from_node: Option<PathBuf>, fallback: &str| {
        given
            .clone()
            .or(from_node)
            .unwrap_or_else(|| PathBuf::from(fallback))
    };
    let options = ProbeOptions {
        runtime,
        timeouts: Timeouts {
            dns: args.timeout_dns,
            connect: args.timeout_connect,
            tls: args.timeout_tls,
            http: args.timeout_http,
            overall: args.timeout,
        },
        platform,
        no_blob: args.no_blob,
        depth: crate::probe::Depth::Image,
        resolv_conf: default_path(
            &args.resolv_conf,
            node.as_ref().map(|n| n.resolv_conf()),
            "/etc/resolv.conf",
        ),
        hosts_file: default_path(
            &args.hosts_file,
            node.as_ref().map(|n| n.hosts_file()),
            "/etc/hosts",
        ),
        proxy_env: node.as_ref().map(|n| n.proxy.clone()),
    };
    let mut targets = Vec::new();
    for (given, image) in args.images.iter().zip(&parsed) {
        let mut target = ProbeTarget::new(given.clone());
        match &node {
            Some(nc) => {
                let plan = nc.plan(image);
                target.endpoints = plan.endpoints.clone();
                apply_tls_flags(&args, &mut target.endpoints);
                if plan.blocked {
                    target.refusal = Some(Failure::new(
                        Reason::RegistryBlocked,
                        format!(
                            "{} is blocked by the runtime's registries.conf",
                            image.domain
                        ),
                    ));
                } else if let Some(err) = &plan.runtime_error {
                    target.refusal = Some(Failure::new(Reason::NoUsableEndpoint, err.clone()));
                }
                target.credentials = match &command_line_cred {
                    Some(c) => vec![c.clone()],
                    None => {
                        let (creds, problems) = nc.credentials(image, &[]).await;
                        for p in problems {
                            eprintln!("pullprobe: warning: {p}");
                        }
                        creds
                    }
                };
            }
            None => {
                target.endpoints = endpoints_for(&args, image)?;
                target.credentials = match (&command_line_cred, &auth_lookup) {
                    (Some(c), _) => vec![c.clone()],
                    (None, Some(cfg)) => cfg.lookup(image),
                    (None, None) => Vec::new(),
                };
            }
        }
        targets.push(target);
    }
    let prober = Arc::new(Prober::new(options));
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut handles = Vec::new();
    for t in targets {
        let prober = prober.clone();
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            prober.probe(&t).await
        }));
    }
    let mut reports = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => reports.push(r),
            Err(e) => tracing::error!(error = %e, "probe task failed"),
        }
    }
    let text = if args.json {
        reports
            .iter()
            .map(|r| crate::report::json_line(r) + "\n")
            .collect::<String>()
    } else {
        crate::report::table(&reports, args.verbose)
    };
    super::emit(&text);
    let all_ok = reports.len() == args.images.len()
        && reports.iter().all(|r| {
            r.verdict.pulls() && !(args.strict && r.verdict == crate::probe::Verdict::Degraded)
        });
    Ok(if all_ok { exit::READY } else { exit::NOT_READY })
}

/// Endpoints from flags: mirrors in order, then the upstream, all with the flag TLS settings.
fn endpoints_for(args: &CheckArgs, image: &ImageRef) -> Result<Vec<Endpoint>, CheckError> {
    let mut eps = Vec::new();
    for m in &args.mirrors {
        let with_scheme = if m.contains("://") {
            m.clone()
        } else {
            format!("https://{m}")
        };
        let mut url = url::Url::parse(&with_scheme).map_err(|e| CheckError::Mirror {
            url: m.clone(),
            message: e.to_string(),
        })?;
        let scheme = match url.scheme() {
            "https" => SchemePolicy::Https,
            "http" => SchemePolicy::Http,
            other => {
                return Err(CheckError::Mirror {
                    url: m.clone(),
                    message: format!("scheme {other} is not http or https"),
                })
            }
        };
        let _ = url.set_scheme("https");
        let path = url.path().trim_end_matches('/').to_string();
        if !path.ends_with("/v2") {
            url.set_path(&format!("{path}/v2"));
        }
        let mut ep = Endpoint::upstream("placeholder", scheme).map_err(|e| CheckError::Mirror {
            url: m.clone(),
            message: e.to_string(),
        })?;
        ep.api_root = url;
        ep.is_upstream = false;
        ep.namespace = Some(image.domain.clone());
        ep.origin = "--mirror".to_string();
        eps.push(ep);
    }
    let mut upstream = default_endpoint(image).map_err(|f| CheckError::Mirror {
        url: image.registry_host(),
        message: f.message,
    })?;
    if args.plain_http {
        upstream.scheme = SchemePolicy::Http;
    }
    eps.push(upstream);
    apply_tls_flags(args, &mut eps);
    Ok(eps)
}

/// TLS flags given on the command line apply to every endpoint (CAs are appended).
fn apply_tls_flags(args: &CheckArgs, eps: &mut [Endpoint]) {
    for ep in eps.iter_mut() {
        if args.ca_bundle.is_some() {
            ep.tls.ca_bundle = args.ca_bundle.clone();
        }
        ep.tls.extra_ca_files.extend(args.ca_files.iter().cloned());
        if let Some(cert) = &args.cert {
            ep.tls.client_certs.push(ClientCert {
                cert: cert.clone(),
                key: args.key.clone(),
            });
        }
        if args.insecure_skip_verify {
            ep.tls.skip_verify = true;
        }
    }
}

/// Docker config.json lookup for the CLI (docker / `ctr` semantics: the entry for the
/// registry host). An explicit `--auth-file` must load; a default-location file that
/// does not exist is simply absent.
mod credentials_lookup {
    use std::path::Path;

    use crate::credentials::docker_config::{cli_search_paths, DockerConfig};
    use crate::credentials::SourcedCredential;
    use crate::reference::ImageRef;

    pub struct AuthFile(DockerConfig);

    impl AuthFile {
        pub fn lookup(&self, image: &ImageRef) -> Vec<SourcedCredential> {
            self.0.lookup_exact(image).into_iter().collect()
        }
    }

    pub fn load(explicit: Option<&Path>) -> Result<Option<AuthFile>, String> {
        if let Some(p) = explicit {
            return DockerConfig::load(p)
                .map(|c| Some(AuthFile(c)))
                .map_err(|e| e.to_string());
        }
        let env = |k: &str| std::env::var(k).ok();
        for p in cli_search_paths(&env) {
            if p.exists() {
                let cfg = DockerConfig::load(&p).map_err(|e| e.to_string())?;
                if cfg.has_cred_helpers {
                    tracing::warn!(
                        path = %p.display(),
                        "config.json names credential helpers; pullprobe does not run them (the kubelet does not either)"
                    );
                }
                return Ok(Some(AuthFile(cfg)));
            }
        }
        Ok(None)
    }
}
