//! `pullprobe status` (also `kubectl pullprobe status`): the fleet view from the agents'
//! Node conditions and Events ([`crate::preflight::fleet`]); exit 1 when any node fails or
//! its conditions went past the agents' heartbeat unrenewed (a stopped agent).

use std::path::PathBuf;

use clap::Args;

use crate::k8s::K8sError;
use crate::preflight::fleet;

/// Output formats of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
    /// A node × registry heatmap.
    Html,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only nodes matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Namespace of the agents' Node Events (the kubelet's convention).
    #[arg(long, default_value = "default")]
    pub events_namespace: String,
    /// Kubeconfig [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The agents' `heartbeat` (their config): a node whose conditions were not renewed
    /// within it (plus a tenth, at least 30 s) is unknown, and counts as failing.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = super::check::parse_duration)]
    pub heartbeat: std::time::Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: StatusFormat,
}

/// Run; exit 0 when no node fails, 1 when some do or are stale; `Err` (exit 2) when the API
/// cannot be read.
pub async fn run(a: StatusArgs) -> Result<i32, K8sError> {
    let client = crate::k8s::client(a.kubeconfig.as_deref()).await?;
    let nodes = crate::k8s::nodes::list_nodes(&client, a.selector.as_deref()).await?;
    // Events are a help, not the verdict: without `list events` the view still stands.
    let events = match crate::k8s::nodes::node_events(&client, &a.events_namespace).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pullprobe status: events not shown: {e}");
            Vec::new()
        }
    };
    let stale = fleet::Staleness {
        now: std::time::SystemTime::now(),
        heartbeat: a.heartbeat,
    };
    let f = fleet::build(&nodes, &events, &stale);
    let out = match a.output {
        StatusFormat::Table => fleet::text(&f),
        StatusFormat::Json => serde_json::to_string_pretty(&f).unwrap_or_default() + "\n",
        StatusFormat::Html => fleet::html(&f),
    };
    super::emit(&out);
    Ok(f.exit_code())
}
