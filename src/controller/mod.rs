//! `pullprobe controller`: the Deployment that turns `ImagePreflight` objects into answers
//! from the agents' `NodePullStatus` objects, guards rollouts in opted-in namespaces and
//! serves the admission webhook. Wiring only:
//!
//! ```text
//!  fleet (Node + NodePullStatus caches, every replica) ──▶ webhook (every replica)
//!        │
//!  lease (one leader) ──▶ reconcile (ImagePreflight: rounds, status, ttl)
//!                     └─▶ guard (workloads in labelled namespaces → owned ImagePreflight)
//! ```
//!
//! Only the holder of the Lease writes (assignments, statuses, deletions, Events); a
//! replica that loses the Lease exits, as kube-controller-manager does, and its
//! Deployment restarts it as a candidate. Depends on `api`, `preflight` and `k8s`, never on
//! `agent`.

pub mod assign;
pub mod fleet;
pub mod guard;
pub mod lease;
pub mod reconcile;
pub mod resolve;
pub mod rounds;
pub mod ttl;
pub mod webhook;

use std::time::Duration;

use clap::Args;

use self::fleet::{Fleet, FleetError};
use self::lease::{Elector, LeaseTiming};
use crate::k8s::K8sError;

/// `pullprobe controller` flags.
#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Kubeconfig to use [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Namespace of the Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = crate::preflight::AGENT_NAMESPACE)]
    pub namespace: String,
    /// Name of the `coordination.k8s.io/v1` Lease the replicas elect a leader on.
    #[arg(long, default_value = "pullprobe-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease [default: $POD_NAME, else the host name,
    /// with a random suffix].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub retry_period: Duration,
    /// How long a round waits for the agents' answers; a node that has not answered by
    /// then is `unknown` (`AgentTimeout`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub answer_timeout: Duration,
    /// Where the admission webhook listens (every replica; Service `pullprobe-webhook` port
    /// 443 sends here).
    #[arg(long, value_name = "ADDR", default_value = "[::]:8443")]
    pub webhook_listen: std::net::SocketAddr,
    /// More DNS names or IP addresses in the webhook's certificate, besides
    /// `pullprobe-webhook.NAMESPACE.svc` (repeatable; e.g. when the API server calls the
    /// webhook by `clientConfig.url`).
    #[arg(long = "webhook-cert-name", value_name = "NAME")]
    pub webhook_cert_names: Vec<String>,
    /// Logs as JSON lines (the default in a Pod) or text.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Kube(#[from] K8sError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("lost the Lease {0}: another replica leads now")]
    LostLeadership(String),
    #[error("the leader's work stopped: {0}")]
    Stopped(String),
}

/// Logs for the controller (JSON lines by default), filtered by `RUST_LOG` (default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// This replica's identity: `--identity`/`$POD_NAME` or the host name, plus a random
/// suffix (a restarted Pod keeps its name; its old record must not look like its own).
fn identity(args: &ControllerArgs) -> String {
    let base = args
        .identity
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pullprobe-controller".into());
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    let base: String = base.chars().take(100).collect();
    format!("{base}_{}", hex::encode(b))
}

/// Runs the controller until SIGTERM/SIGINT (Ok, after releasing the Lease) or until
/// leadership is lost (Err: the process exits and is restarted as a candidate).
pub async fn run_controller(args: ControllerArgs) -> Result<(), ControllerError> {
    let client = crate::k8s::client(args.kubeconfig.as_deref()).await?;
    let fleet = Fleet::start(client.clone()).await?;
    tracing::info!(
        nodes = fleet.nodes().len(),
        statuses = fleet.statuses().len(),
        "fleet caches synced"
    );
    // Every replica serves the webhook from the fleet caches; only the leader keeps its
    // certificate (`leading` turns true once the Lease is held).
    let (leading, leader) = tokio::sync::watch::channel(false);
    let mut hook_cfg = webhook::WebhookConfig::new(&args.namespace);
    hook_cfg.listen = args.webhook_listen;
    hook_cfg.cert.extra_names = args.webhook_cert_names.clone();
    let _webhook = webhook::start(
        client.clone(),
        std::sync::Arc::new(fleet.clone()),
        hook_cfg,
        leader,
    )
    .await?;
    let timing = LeaseTiming {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    let mut elector = Elector::new(
        client.clone(),
        &args.namespace,
        &args.lease_name,
        &identity(&args),
        timing,
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(identity = elector.identity(), "leading");
    let _ = leading.send(true);
    let work = lead(client, fleet, args.clone());
    tokio::pin!(work);
    let result = tokio::select! {
        () = elector.hold() => Err(ControllerError::LostLeadership(args.lease_name.clone())),
        r = &mut work => r.and(Err(ControllerError::Stopped("ended".into()))),
        () = &mut shutdown => Ok(()),
    };
    if result.is_ok() {
        elector.release().await;
    }
    result
}

/// The leader's work: the pre-flight reconciler and the rollout guard.
async fn lead(
    client: kube::Client,
    fleet: Fleet,
    args: ControllerArgs,
) -> Result<(), ControllerError> {
    use futures::StreamExt;
    use kube::runtime::{watcher, Controller};
    let ctx = std::sync::Arc::new(reconcile::Ctx {
        client: client.clone(),
        assigner: assign::Assigner::new(client.clone(), fleet.clone()),
        fleet,
        answer_timeout: args.answer_timeout,
        done: Default::default(),
    });
    let api: kube::Api<crate::api::ImagePreflight> = kube::Api::all(client.clone());
    let preflights = Controller::new(api, watcher::Config::default())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "pre-flight controller");
            }
            futures::future::ready(())
        });
    tokio::join!(preflights, guard::run(client));
    Ok(())
}

/// SIGTERM (the kubelet stopping the Pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
