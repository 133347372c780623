//! `pullprobe agent`: the per-node DaemonSet agent.
//!
//! Data flow, one way: the node's files → [`Pipeline`](crate::pipeline::Pipeline) (the
//! same one `check` and `plan` use) → [`cycle`] (targets from the node's pods and the
//! config, what is due, checks) → [`outcome`] (what the checks proved) → [`conditions`]
//! (hysteresis; the Node condition writer) → [`export`] (metrics, logs, `/status`,
//! Events). [`serve`] answers HTTP callers from the [`state`] the loop keeps;
//! [`nodestatus`] keeps the node's `NodePullStatus` and answers the controller's
//! assignments through [`ondemand`].
//! `--standalone` runs the same loop with no cluster.
//!
//! This file only wires the parts: it builds each once, hands them what they share, and
//! starts the tasks.

pub mod conditions;
pub mod config;
pub mod cycle;
pub mod export;
pub mod metrics;
pub mod nodestatus;
pub mod ondemand;
pub mod outcome;
pub mod path;
pub mod persist;
pub mod schedule;
pub mod scope;
pub mod serve;
pub mod state;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::conditions::{writer, Clock, SystemClock};
use self::config::{AgentConfig, ConfigError, ConfigWatcher, LogFormat};
use self::cycle::{Agent, ClusterCtx, Parts};
use self::export::events::EventDeduper;
use self::export::{Exporter, KubeExporter, LogExporter, MetricsExporter, StatusExporter};
use self::serve::auth;
use self::state::AgentState;
use crate::pipeline::{NodeOverrides, Pipeline, PipelineError, Spec};
use crate::runtime::Runtime;

/// Environment variable with the node name (downward API `spec.nodeName`).
pub const ENV_NODE_NAME: &str = "NODE_NAME";
/// Environment variable with the agent's namespace (downward API `metadata.namespace`).
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";

/// `pullprobe agent` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Config file (.yaml, .yml or .toml). Without it, all defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run with no cluster: targets from the config; report to logs, metrics and /status only.
    #[arg(long)]
    pub standalone: bool,
    /// This node's name (required in a cluster).
    #[arg(long, env = ENV_NODE_NAME)]
    pub node_name: Option<String>,
    /// Where the node's root filesystem is mounted (`/` when run on the node itself,
    /// `/host` in the DaemonSet).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// The node's runtime [default: the config's `runtime`, else detected: the kubelet's
    /// --container-runtime-endpoint, a runtime socket or config].
    #[arg(long, value_enum, help_heading = "Node config")]
    pub runtime: Option<Runtime>,
    /// containerd's config file (node path) [default: the config's, else
    /// /etc/containerd/config.toml or the k3s/rke2 one].
    #[arg(long, value_name = "PATH", help_heading = "Node config")]
    pub containerd_config: Option<PathBuf>,
    /// The kubelet's --root-dir (node path) [default: the config's, else as the node's
    /// kubelet unit runs it, else /var/lib/kubelet].
    #[arg(long, value_name = "PATH", help_heading = "Node config")]
    pub root_dir: Option<PathBuf>,
    /// The kubelet's --image-credential-provider-config (node path) [default: the
    /// config's, else as the node's kubelet unit runs it].
    #[arg(long, value_name = "PATH", help_heading = "Node config")]
    pub image_credential_provider_config: Option<PathBuf>,
    /// The kubelet's --image-credential-provider-bin-dir (node path) [default: the
    /// config's, else as the node's kubelet unit runs it].
    #[arg(long, value_name = "PATH", help_heading = "Node config")]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// Kubeconfig to use instead of the in-cluster config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format (overrides the config's `log_format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address of the main listener: /metrics, /status (overrides the config's `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of /healthz and /readyz alone, unauthenticated (overrides the config's
    /// `health_listen`).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Directory for what must survive a restart: per-registry backoff and the registries
    /// reached before (overrides the config's `state_dir`; the DaemonSet mounts an emptyDir).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run one cycle (and one condition write), then exit.
    #[arg(long)]
    pub once: bool,
    /// The agent's own namespace (downward API `metadata.namespace`): its pods' registries
    /// are always the node's concern.
    #[arg(long, env = ENV_POD_NAMESPACE, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Why the agent could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node name required in a cluster: pass --node-name or set {ENV_NODE_NAME}")]
    NodeNameMissing,
    #[error(transparent)]
    Http(#[from] serve::HttpError),
    #[error(transparent)]
    Kube(#[from] crate::k8s::K8sError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Resolves on SIGTERM or SIGINT. If the SIGTERM handler cannot be installed, only
/// SIGINT stops the agent (and SIGTERM keeps its default action: exit).
async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The pipeline spec: the node under `--host-root`, flags over the config's node keys.
fn pipeline_spec(
    args: &AgentArgs,
    cfg: &AgentConfig,
    runtime_version: Option<String>,
    client: Option<&kube::Client>,
) -> Spec {
    let n = &cfg.node;
    Spec {
        sa_tokens: sa_tokens(cfg, client),
        host_root: Some(args.host_root.clone()),
        runtime: args.runtime.or(cfg.runtime),
        node: NodeOverrides {
            containerd_config: args
                .containerd_config
                .clone()
                .or(n.containerd_config.clone()),
            containerd_version: runtime_version
                .as_deref()
                .filter(|v| v.starts_with("containerd://"))
                .map(crate::nodeconfig::GivenVersion::node_status),
            kubelet_root_dir: args.root_dir.clone().or(n.root_dir.clone()),
            credential_provider_config: args
                .image_credential_provider_config
                .clone()
                .or(n.image_credential_provider_config.clone()),
            credential_provider_bin_dir: args
                .image_credential_provider_bin_dir
                .clone()
                .or(n.image_credential_provider_bin_dir.clone()),
            hosts_dir: None,
        },
        ..Spec::default()
    }
}

/// Tokens for the credential providers the config names a ServiceAccount for (KEP-4412);
/// none standalone or when none is named.
fn sa_tokens(
    cfg: &AgentConfig,
    client: Option<&kube::Client>,
) -> Option<Arc<dyn crate::credentials::satoken::ServiceAccountTokens>> {
    use crate::k8s::satokens::{AccountRef, KubeTokens};
    let named = &cfg.node.credential_provider_service_accounts;
    let client = client.filter(|_| !named.is_empty())?;
    let accounts = named
        .iter()
        .map(|(p, sa)| {
            let a = AccountRef {
                namespace: sa.namespace.clone(),
                name: sa.name.clone(),
            };
            (p.clone(), a)
        })
        .collect();
    Some(Arc::new(KubeTokens::new(client.clone(), accounts)))
}

/// What the agent reads from the cluster at start: its Node (uid, our conditions, the
/// runtime version) and the watch of its pods (bounded wait for the first list).
async fn connect(
    args: &AgentArgs,
    node: &str,
    interval: Duration,
) -> Result<(ClusterCtx, crate::k8s::node::NodeFacts), AgentError> {
    let client = crate::k8s::client(args.kubeconfig.as_deref()).await?;
    // The Node must exist and be readable: fail the start otherwise (RBAC, name).
    let facts = crate::k8s::node::get(&client, node).await?;
    let pods = Arc::new(Mutex::new(Default::default()));
    let synced = Arc::new(tokio::sync::Notify::new());
    let notified = synced.clone().notified_owned();
    tokio::spawn(crate::k8s::pods::watch(
        client.clone(),
        node.to_string(),
        interval,
        pods.clone(),
        synced,
    ));
    let _ = tokio::time::timeout(Duration::from_secs(30), notified).await;
    let ctx = ClusterCtx {
        client,
        node_uid: facts.uid.clone(),
        pods,
    };
    Ok((ctx, facts))
}

fn load_config(args: &AgentArgs) -> Result<(Option<ConfigWatcher>, AgentConfig), AgentError> {
    let (watcher, mut cfg) = match &args.config {
        Some(p) => {
            let (w, c) = ConfigWatcher::open(p)?;
            (Some(w), c)
        }
        None => (None, AgentConfig::default()),
    };
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.health_listen {
        cfg.health_listen = Some(l);
    }
    if let Some(d) = &args.state_dir {
        cfg.state_dir = Some(d.clone());
    }
    Ok((watcher, cfg))
}

/// Run the agent until a signal (or after one cycle with `--once`).
pub async fn run_agent(args: AgentArgs) -> Result<(), AgentError> {
    let (watcher, cfg) = load_config(&args)?;
    export::logs::init(cfg.log_format);
    let node = node_name(&args)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = Arc::new(AgentState::new(node.clone(), cfg.interval));
    let _health = start_health(cfg.health_listen_for(args.standalone), &state, &node).await?;
    if cfg.fleet.node_count.is_none() && !args.standalone {
        tracing::warn!(
            node = %node,
            "fleet.node_count is not set: every node checks every image (set it to the fleet size to share per-image checks)"
        );
    }
    let cluster = match args.standalone {
        true => None,
        false => Some(connect(&args, &node, cfg.interval).await?),
    };
    let (ctx, facts) = cluster.unzip();
    let client = ctx.as_ref().map(|c| c.client.clone());
    let pipeline = load_pipeline(&args, &cfg, facts.as_ref(), client.as_ref(), &node)?;
    let share = Parts::share_for(&cfg, pipeline.clone(), pipeline.platform().to_string());
    let _server = start_main_listener(&args, &cfg, &state, client.as_ref(), &node).await?;
    let nodestatus = client.map(|client| {
        nodestatus::Writer::new(nodestatus::WriterParts {
            ondemand: Arc::new(ondemand::OnDemand::new(
                cfg.preflight.clone(),
                node.clone(),
                share.clone(),
                Some(client.clone()),
                cfg.pull_secrets,
            )),
            client,
            node: node.clone(),
            share: share.clone(),
            state: state.clone(),
            clock: clock.clone(),
            heartbeat: cfg.heartbeat,
        })
    });
    let agent = Agent::from_parts(Parts {
        exporters: exporters(&state, ctx.as_ref(), &node),
        seed: facts.map(|f| f.conditions).unwrap_or_default(),
        watcher,
        namespace: args.namespace.clone(),
        cluster: ctx,
        share,
        path: pipeline,
        node: node.clone(),
        state,
        clock,
        cfg,
    });
    run_loop(agent, nodestatus, args.once).await;
    tracing::info!(node = %node, "agent stopping");
    Ok(())
}

/// The node's pull path, read under --host-root: only an unusable host root stops the
/// start; each unreadable file is a problem logged here, the rest still applies.
fn load_pipeline(
    args: &AgentArgs,
    cfg: &AgentConfig,
    facts: Option<&crate::k8s::node::NodeFacts>,
    client: Option<&kube::Client>,
    node: &str,
) -> Result<Arc<Pipeline>, AgentError> {
    let runtime_version = facts.and_then(|f| f.container_runtime_version.clone());
    let pipeline = Pipeline::load(pipeline_spec(args, cfg, runtime_version, client))?;
    for p in pipeline.problems() {
        tracing::warn!(node = %node, problem = %p, "node config problem");
    }
    Ok(Arc::new(pipeline))
}

/// The main listener: `/metrics`, `/status` (and the health routes). In a cluster every
/// caller is reviewed; standalone, nothing can review one, so the listener is on loopback
/// unless configured otherwise.
async fn start_main_listener(
    args: &AgentArgs,
    cfg: &AgentConfig,
    state: &Arc<AgentState>,
    client: Option<&kube::Client>,
    node: &str,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let authorizer = client.map(|c| Arc::new(auth::Authorizer::new(c.clone(), &cfg.auth)));
    let app = serve::main_router(state.clone(), authorizer.clone());
    let listen = main_listen(cfg.listen, args.standalone);
    let (addr, server) = start_main(listen, app, &cfg.tls, serve::Limits::MAIN, node).await?;
    tracing::info!(node = %node, listen = %addr, standalone = args.standalone, authenticated = authorizer.is_some(), tls = ?cfg.tls.mode, "agent started");
    Ok(server)
}

/// The node this agent reports for: `--node-name` (the downward API), or standalone the host name.
fn node_name(args: &AgentArgs) -> Result<String, AgentError> {
    match (&args.node_name, args.standalone) {
        (Some(n), _) if !n.is_empty() => Ok(n.clone()),
        (_, true) => Ok(std::env::var("HOSTNAME").unwrap_or_else(|_| "standalone".to_string())),
        _ => Err(AgentError::NodeNameMissing),
    }
}

/// The unauthenticated health listener (`/healthz`, `/readyz`), if any
/// ([`AgentConfig::health_listen_for`]).
async fn start_health(
    listen: Option<SocketAddr>,
    state: &Arc<AgentState>,
    node: &str,
) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
    let Some(a) = listen else { return Ok(None) };
    let app = serve::health_router(state.clone());
    let (addr, h) = serve::serve(a, app, None, serve::Limits::HEALTH).await?;
    tracing::info!(node = %node, health_listen = %addr, "health listener started");
    Ok(Some(h))
}

/// The main listener, over TLS when the config asks for it.
async fn start_main(
    listen: SocketAddr,
    app: axum::Router,
    tls_cfg: &config::TlsConfig,
    limits: serve::Limits,
    node: &str,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AgentError> {
    let tls = serve::server_tls(tls_cfg, node)?;
    Ok(serve::serve(listen, app, tls, limits).await?)
}

/// The main listener's address: standalone, an unspecified address (`0.0.0.0`, `::`)
/// becomes loopback, since no caller can be reviewed without a cluster.
fn main_listen(listen: SocketAddr, standalone: bool) -> SocketAddr {
    if !standalone || !listen.ip().is_unspecified() {
        return listen;
    }
    let ip: std::net::IpAddr = match listen {
        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}

fn exporters(
    state: &Arc<AgentState>,
    cluster: Option<&ClusterCtx>,
    node: &str,
) -> Vec<Box<dyn Exporter>> {
    let mut out: Vec<Box<dyn Exporter>> = vec![
        Box::new(MetricsExporter {
            state: state.clone(),
        }),
        Box::new(LogExporter),
        Box::new(StatusExporter {
            state: state.clone(),
            book: Default::default(),
        }),
    ];
    if let Some(c) = cluster {
        out.push(Box::new(KubeExporter {
            client: c.client.clone(),
            node: node.to_string(),
            node_uid: c.node_uid.clone(),
            state: state.clone(),
            events: EventDeduper::new(Duration::from_secs(3600)),
        }));
    }
    out
}

/// Cycles until SIGTERM (the kubelet stopping the pod) or SIGINT, stopping between or
/// during cycles (a cycle may take up to the probe deadline; the pod's grace period may
/// be shorter), then tries once more to write conditions that changed but were not.
async fn run_loop(mut agent: Agent, nodestatus: Option<nodestatus::Writer>, once: bool) {
    let writer = agent.cluster.as_ref().map(|c| c.client.clone());
    let (node, manager, clock, state) = (
        agent.node.clone(),
        agent.manager.clone(),
        agent.clock.clone(),
        agent.state.clone(),
    );
    if once {
        agent.cycle_with(true).await;
        if let Some(client) = &writer {
            writer::sync_once(client, &node, &manager, clock.as_ref(), &state).await;
        }
        if let Some(mut w) = nodestatus {
            w.sync_once().await;
        }
        return;
    }
    let interval = agent.cfg.interval;
    let _nodestatus = nodestatus.map(|w| w.spawn(interval));
    if let Some(client) = &writer {
        tokio::spawn(writer::sync_conditions(
            client.clone(),
            node.clone(),
            manager.clone(),
            clock.clone(),
            state.clone(),
        ));
    }
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            _ = agent.cycle() => {}
            _ = &mut shutdown => break,
        }
        let delay = agent.next_delay(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => break,
        }
    }
    if let Some(client) = &writer {
        let flush = writer::sync_once(client, &node, &manager, clock.as_ref(), &state);
        let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
    }
}
