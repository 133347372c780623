//! `pullprobe status` (also `kubectl pullprobe status`): the fleet view from the agents'
//! `NodePullStatus` objects, one list call ([`crate::preflight::fleet`]), and the Nodes'
//! names (nodes without a report are shown, never left out); exit 1 when any node fails or
//! its report went past twice its agent's interval unrenewed (a stopped agent).

use std::path::PathBuf;

use clap::Args;

use crate::k8s::{preflights, K8sError};
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
    /// Kubeconfig [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: StatusFormat,
}

/// The agents' interval assumed for a report that states none (their default).
const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Run; exit 0 when no node fails, 1 when some do or are stale; `Err` (exit 2) when the API
/// cannot be read: `list nodepullstatuses` (the `view` role bound cluster-wide has it), and
/// `list nodes` for `-l` (without `-l` it only adds the nodes without a report).
pub async fn run(a: StatusArgs) -> Result<i32, K8sError> {
    let client = crate::k8s::client(a.kubeconfig.as_deref()).await?;
    let statuses = preflights::list_node_statuses(&client).await?;
    // The Nodes' names show the nodes without a report, and `-l` needs their labels;
    // without `list nodes` (not in `view`) the reports alone still stand.
    let nodes = match preflights::list_node_names(&client, a.selector.as_deref()).await {
        Ok(n) => n,
        Err(e) if a.selector.is_none() && e.status() == Some(403) => {
            eprintln!("pullprobe status: nodes without a report not shown: {e}");
            statuses
                .iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect()
        }
        Err(e) => return Err(e),
    };
    let stale = fleet::Staleness {
        now: std::time::SystemTime::now(),
        default_interval: DEFAULT_INTERVAL,
    };
    let f = fleet::build(&nodes, &statuses, &stale);
    let out = match a.output {
        StatusFormat::Table => fleet::text(&f),
        StatusFormat::Json => serde_json::to_string_pretty(&f).unwrap_or_default() + "\n",
        StatusFormat::Html => fleet::html(&f),
    };
    super::emit(&out);
    Ok(f.exit_code())
}
