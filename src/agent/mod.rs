//! `pullprobe agent`: the per-node DaemonSet agent (issue 4).
//!
//! Data flow: pods on the node (`k8s::pods`) + config images → [`targets`] (dedup) →
//! [`schedule`] (what is due, backoff, fleet share) → probe engine → [`conditions`]
//! (hysteresis, write scheduling), [`events`], [`metrics`], [`logs`], [`http`] `/status`.
//! [`run`] holds the loop. `--standalone` runs the same loop with no cluster.

pub mod conditions;
pub mod config;
pub mod events;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod run;
pub mod schedule;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use self::conditions::{Clock, SystemClock};
use self::config::{AgentConfig, ConfigError, ConfigWatcher, LogFormat};
use self::http::AgentState;
use self::run::{Agent, ClusterCtx, EngineRunner};
use crate::nodeconfig::{NodeConfig, NodeConfigOptions};

/// Environment variable with the node name (downward API `spec.nodeName`).
pub const ENV_NODE_NAME: &str = "NODE_NAME";

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
    /// Where the node's root filesystem is mounted (resolv.conf, runtime config).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Kubeconfig to use instead of the in-cluster config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format (overrides the config's `log_format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address of /healthz, /readyz, /metrics, /status (overrides the config's `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Run one cycle (and one condition write), then exit.
    #[arg(long)]
    pub once: bool,
}

/// Why the agent could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node name required in a cluster: pass --node-name or set {ENV_NODE_NAME}")]
    NodeNameMissing,
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Kube(#[from] crate::k8s::K8sError),
    #[error("--host-root: {0}")]
    HostRoot(#[from] crate::nodeconfig::HostRootError),
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

/// Run the agent until a signal (or after one cycle with `--once`).
pub async fn run_agent(args: AgentArgs) -> Result<(), AgentError> {
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
    logs::init(cfg.log_format);

    let node = match (&args.node_name, args.standalone) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, true) => std::env::var("HOSTNAME").unwrap_or_else(|_| "standalone".to_string()),
        _ => return Err(AgentError::NodeNameMissing),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = Arc::new(AgentState::new(node.clone(), cfg.interval));
    let (addr, _server) = http::serve(cfg.listen, state.clone()).await?;
    tracing::info!(node = %node, listen = %addr, standalone = args.standalone, "agent started");

    // The fleet size comes from the config, not from the API: counting nodes would need
    // `list nodes` cluster-wide, more than a per-node agent should hold. Unset = 1, the
    // safe-for-correctness choice (every node checks every image), but the fleet's load on
    // registries then grows with the node count: say so once.
    let node_count = cfg.fleet.node_count.unwrap_or(1);
    if cfg.fleet.node_count.is_none() && !args.standalone {
        tracing::warn!(
            node = %node,
            "fleet.node_count is not set: every node checks every image (set it to the fleet size to share per-image checks)"
        );
    }
    let cluster = if args.standalone {
        None
    } else {
        let client = crate::k8s::client(args.kubeconfig.as_deref()).await?;
        // The Node must exist and be readable: fail the start otherwise (RBAC, name).
        let facts = crate::k8s::node::get(&client, &node).await?;
        let pods = Arc::new(Mutex::new(Default::default()));
        let synced = Arc::new(tokio::sync::Notify::new());
        let notified = synced.clone().notified_owned();
        tokio::spawn(crate::k8s::pods::watch(
            client.clone(),
            node.clone(),
            pods.clone(),
            synced,
        ));
        // Wait for the first list (bounded) so the first cycle sees the node's pods.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), notified).await;
        Some((
            ClusterCtx {
                client,
                node_uid: facts.uid,
                pods,
            },
            facts.conditions,
            facts.container_runtime_version,
        ))
    };

    let (ctx, existing, runtime_version) = match cluster {
        Some((c, e, v)) => (Some(c), e, v),
        None => (None, Vec::new(), None),
    };
    // The node's pull path: runtime config, hosts.toml / registries.conf, proxy, trust,
    // kubelet credentials, all read under --host-root. Only an unusable host root stops
    // the start; each unreadable file is a problem logged here, the rest still applies.
    let nc_opts = NodeConfigOptions {
        host_root: args.host_root.clone(),
        runtime: Some(cfg.runtime),
        containerd_version: runtime_version
            .as_deref()
            .and_then(|v| v.strip_prefix("containerd://"))
            .map(str::to_string),
        ..NodeConfigOptions::default()
    };
    let node_config = Arc::new(NodeConfig::load(&nc_opts)?);
    for p in &node_config.problems {
        tracing::warn!(node = %node, problem = %p, "node config problem");
    }
    let runner = Arc::new(EngineRunner::new(
        &cfg,
        &args.host_root,
        Some(node_config.as_ref()),
    ));
    let mut agent = Agent::new(
        cfg,
        watcher,
        node.clone(),
        args.host_root.clone(),
        state.clone(),
        runner,
        ctx.clone(),
        clock.clone(),
        node_count,
    )
    .with_node_config(nc_opts, node_config);
    if let Ok(mut m) = agent.manager.lock() {
        m.seed(&existing, clock.now());
    }

    if args.once {
        agent.cycle().await;
        if let Some(c) = &ctx {
            run::sync_once(&c.client, &node, &agent.manager, clock.as_ref(), &state).await;
        }
        return Ok(());
    }
    if let Some(c) = &ctx {
        tokio::spawn(run::sync_conditions(
            c.client.clone(),
            node.clone(),
            agent.manager.clone(),
            clock.clone(),
            state.clone(),
        ));
    }
    // SIGTERM (the kubelet stopping the pod) or SIGINT: stop between or during cycles
    // (a cycle may take up to the probe deadline; the pod's grace period is shorter than
    // that may be), then try once to write conditions that changed but were not written.
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            _ = agent.cycle() => {}
            _ = &mut shutdown => break,
        }
        let delay = agent.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => break,
        }
    }
    if let Some(c) = &ctx {
        let flush = run::sync_once(&c.client, &node, &agent.manager, clock.as_ref(), &state);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flush).await;
    }
    tracing::info!(node = %node, "agent stopping");
    Ok(())
}
