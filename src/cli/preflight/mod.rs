//! `pullprobe preflight [IMAGE…] [-f FILE…]` (also `kubectl pullprobe preflight`): ask
//! every node's agent whether its node can pull the images now ([`crate::preflight`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::check::parse_duration;
use crate::preflight::render::{self, Format};
use crate::preflight::{self, Options, PreflightError, TokenSource};

#[derive(Args, Debug)]
pub struct PreflightArgs {
    /// Image references to check (besides those of the manifests).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Manifests (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List;
    /// multi-document YAML or JSON); `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Namespace of objects that name none, and of the command line's images.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Pull secret of the command line's images (repeatable).
    #[arg(long = "pull-secret", value_name = "NAME")]
    pub pull_secrets: Vec<String>,
    /// Service account of the command line's images (its imagePullSecrets apply when no
    /// --pull-secret is given) [default: default].
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,

    /// Only nodes matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR", help_heading = "Nodes")]
    pub selector: Option<String>,
    /// Every node (matching -l), ignoring nodeSelector, affinity, taints and cordons.
    #[arg(long, help_heading = "Nodes")]
    pub all_nodes: bool,

    /// Namespace of the agents.
    #[arg(long, default_value = preflight::AGENT_NAMESPACE, help_heading = "Agents")]
    pub agent_namespace: String,
    /// Label selector of the agent Pods.
    #[arg(long, default_value = preflight::AGENT_SELECTOR, help_heading = "Agents")]
    pub agent_selector: String,
    /// The agents' port when their Pod names none (`http-metrics`).
    #[arg(long, default_value_t = 9808, help_heading = "Agents")]
    pub agent_port: u16,
    /// Token the agents check (e.g. a projected ServiceAccount token with audience
    /// `pullprobe`) [default: the kubeconfig's bearer token].
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "agent_service_account",
        help_heading = "Agents"
    )]
    pub agent_token_file: Option<PathBuf>,
    /// Request a 10-minute token with audience `pullprobe` for this ServiceAccount
    /// (NAMESPACE/NAME; needs `create serviceaccounts/token` on it) and show it to the agents.
    #[arg(long, value_name = "NS/NAME", help_heading = "Agents")]
    pub agent_service_account: Option<String>,
    /// Kubeconfig [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, value_name = "FILE", help_heading = "Agents")]
    pub kubeconfig: Option<PathBuf>,
    /// Time allowed for each node's answer.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration, help_heading = "Agents")]
    pub timeout: Duration,
    /// Nodes asked at the same time.
    #[arg(long, default_value_t = 64, help_heading = "Agents")]
    pub concurrency: usize,

    /// Output format.
    #[arg(
        short,
        long,
        value_enum,
        default_value = "table",
        help_heading = "Output"
    )]
    pub output: Format,
    /// Count `degraded` (worked only after earlier endpoints failed) as not ready.
    #[arg(long, help_heading = "Output")]
    pub strict: bool,
}

fn options(a: PreflightArgs) -> Result<Options, PreflightError> {
    let token = match (a.agent_token_file, a.agent_service_account) {
        (Some(f), _) => TokenSource::File(f),
        (None, Some(sa)) => {
            let (namespace, name) = sa
                .split_once('/')
                .filter(|(n, s)| !n.is_empty() && !s.is_empty())
                .ok_or_else(|| {
                    PreflightError::Token("--agent-service-account: expected NAMESPACE/NAME".into())
                })?;
            TokenSource::ServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }
        }
        (None, None) => TokenSource::Kubeconfig,
    };
    Ok(Options {
        images: a.images,
        files: a.files,
        namespace: a.namespace,
        pull_secrets: a.pull_secrets,
        service_account: a.service_account,
        selector: a.selector,
        all_nodes: a.all_nodes,
        agent_namespace: a.agent_namespace,
        agent_selector: a.agent_selector,
        agent_port: a.agent_port,
        token,
        kubeconfig: a.kubeconfig,
        timeout: a.timeout,
        concurrency: a.concurrency.clamp(1, 1024),
        strict: a.strict,
    })
}

/// Run; the exit code: 0 every selected node can pull every image, 1 some cannot, 3 no
/// failure but some nodes unknown, 2 (as `Err`) usage or configuration error.
pub async fn run(args: PreflightArgs) -> Result<i32, PreflightError> {
    let format = args.output;
    let o = options(args)?;
    let m = preflight::run(&o).await?;
    super::emit(&render::render(&m, format));
    // The table ends with the summary; for the machine formats it also goes to stderr.
    if matches!(format, Format::Json | Format::Yaml | Format::Html) {
        eprintln!("{}", m.summary.line);
    }
    Ok(m.exit_code())
}
